/* http: internals shared by the files of the module (and by the unit test
 * and the fuzz target, which drive a connection without a socket). */
#ifndef MR_HTTP_INT_H
#define MR_HTTP_INT_H

#include "http/http.h"

/* Shortest "%.Ng" (N = 15..17) that reads back as the same double. */
int mr_http__fmt_double(char *out, size_t size, double v);

/* Batch size of one uv_write (iovecs). */
#define MR_HTTP_WBUFS 32
/* Shared read buffer size (one per server). */
#define MR_HTTP_RBUF_SIZE (64u * 1024)
/* After the last answer on a connection we send FIN and keep draining input
 * for this long, so the client reads the answer instead of a reset. */
#define MR_HTTP_LINGER_MS 2000u
/* Requests kept for reuse per server, and the largest buffer a pooled request
 * may keep (bytes). */
#define MR_HTTP_POOL_MAX 1024u
#define MR_HTTP_POOL_BUF_MAX (64u * 1024)

enum {
    MR_HTTP_REQ_PARSING,    /* being read (conn->cur) */
    MR_HTTP_REQ_DISPATCHED, /* handed to the handler, unanswered */
    MR_HTTP_REQ_ANSWERED,   /* answer built, waiting for its turn */
    MR_HTTP_REQ_WRITING,    /* answer inside the current uv_write */
    MR_HTTP_REQ_STREAMING   /* headers sent, streamed body in progress (head) */
};

/* A streamed body (mr_http_respond_stream): a ring of MR_HTTP_STREAM_AHEAD
 * chunk buffers. From `head`, `count` slots are in use: the first `nwriting`
 * are inside the current write, then filled ones, and the last one is being
 * filled when is_pulling. */
struct mr_http_stream {
    struct mr_http_req *r;
    mr_http_stream_pull_cb pull;
    mr_http_stream_done_cb done_cb;
    void *data;
    uint64_t length, pulled, sent; /* bytes */
    char *buf[MR_HTTP_STREAM_AHEAD]; /* owned, allocated on first use */
    size_t len[MR_HTTP_STREAM_AHEAD];
    size_t cap; /* of the current pull */
    unsigned head, count, nwriting;
    unsigned is_pulling : 1;
    unsigned is_in_pump : 1;  /* pulls are being issued: defer the end */
    unsigned is_canceled : 1; /* the body will not be delivered */
};

/* Offsets into req->raw of two NUL-terminated strings. */
struct mr_http_field {
    uint32_t name;
    uint32_t value;
};

struct mr_http_req {
    struct mr_http_request pub; /* first: handlers get &pub */
    struct mr_http_conn *conn;
    struct mr_queue link;         /* conn->reqs, a local abort list, or srv->pool */
    struct mr_http_buf raw;       /* url, header fields, decoded path, params */
    struct mr_http_buf body;      /* decoded body */
    struct mr_http_buf out;       /* the answer, ready to write */
    struct mr_http_field *fields; /* headers [0, nhdrs), params after */
    unsigned nhdrs, nparams, cap_fields;
    uint32_t url_off, url_len;
    size_t header_bytes;
    int last_cb; /* 0 none yet, 1 header field, 2 header value */
    int state;
    unsigned is_close : 1;    /* close the connection after this answer */
    unsigned is_aborted : 1;  /* the answer will be discarded */
    unsigned is_continue : 1; /* client sent Expect: 100-continue */
    unsigned is_continue_sent : 1;
    unsigned is_head : 1;
    uint64_t t_start; /* uv_hrtime() at dispatch, ns */
    mr_http_abort_cb abort_cb;
    void *abort_data;
    struct mr_http_stream *stream; /* owned; a streamed answer, else NULL */
};

struct mr_http_conn;

/* What a connection needs from its transport. The socket transport lives in
 * http_server.c; tests and the fuzz target plug in their own. */
struct mr_http_io {
    /* Write n buffers (valid until completion) as one operation, then call
     * mr_http__conn_write_done(c, status) later, from the loop (never from
     * inside this call). Only one write is outstanding at a time. */
    void (*write)(struct mr_http_conn *c, const uv_buf_t *bufs, unsigned n);
    /* Half-close after the queued writes (FIN); reading continues. */
    void (*shutdown)(struct mr_http_conn *c);
    /* Hard close: cancel the outstanding write (its write_done reports an
     * error), stop reading, then call mr_http__conn_closed(c) later. */
    void (*close)(struct mr_http_conn *c);
    /* Start (on = 1) or stop reading. */
    void (*read)(struct mr_http_conn *c, int on);
    /* (Re)arm the connection's timer to call mr_http__conn_timeout(c) after
     * delay_ms; UINT64_MAX stops it. */
    void (*timer)(struct mr_http_conn *c, uint64_t delay_ms);
};

enum {
    MR_HTTP_CONN_OPEN,   /* reading requests, writing answers */
    MR_HTTP_CONN_LINGER, /* FIN sent, draining input until EOF or timeout */
    MR_HTTP_CONN_DEAD    /* close requested or done */
};

struct mr_http_conn {
    struct mr_http_server *srv;
    const struct mr_http_io *io;
    void *io_data;        /* for test transports */
    struct mr_queue link; /* srv->conns */
    http_parser parser;
    struct mr_http_req *cur; /* being parsed; also the tail of reqs */
    struct mr_queue reqs;    /* in request order */
    unsigned nqueue;         /* entries in reqs */
    unsigned nrefs;          /* dispatched and not yet answered */
    int phase;
    unsigned is_read_done : 1; /* parse no more requests */
    unsigned is_paused : 1;    /* backpressure: parser paused, reads stopped */
    unsigned is_writing : 1;
    unsigned is_closed : 1; /* transport closed; free at nrefs == 0 */
    unsigned is_in_headers : 1;
    unsigned is_in_body : 1;
    unsigned is_rejected : 1; /* over max_connections */
    /* Set by parser callbacks that refuse a request. */
    unsigned reject_status;
    const char *reject_code;
    const char *reject_msg;
    char *stash; /* unparsed input kept while paused */
    size_t stash_len, stash_off, stash_cap;
    uint64_t t_activity, t_header_start, t_body_start, t_linger; /* ms */
    struct sockaddr_storage peer;
    uv_buf_t wbufs[MR_HTTP_WBUFS];
    /* Socket transport (http_server.c). */
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    int nhandles;  /* handles not yet closed */
    int write_err; /* uv_write failed at once: reported from the timer */
    struct mr_tls *tls;       /* HTTPS session; NULL: plaintext */
    int is_tls_core_waiting;  /* a core write waits for the TLS handshake */
    int has_tls_id;           /* a verified client certificate: tls_ou valid */
    char tls_ou[64];
};

/* Server internals. */
uint64_t mr_http__now(const struct mr_http_server *srv);
/* Prepares a server without a loop (tests, fuzzing): no listener, time from
 * srv->fake_now. Close with mr_http__server_close_detached() once every
 * connection has been closed and freed. */
int mr_http__server_init_detached(struct mr_http_server *srv,
                                  const struct mr_http_options *opt,
                                  mr_http_handler_cb handler, void *data);
void mr_http__server_close_detached(struct mr_http_server *srv);
/* Called when a connection has been freed (server close bookkeeping). */
void mr_http__server_conn_freed(struct mr_http_server *srv);
/* Frees the request pool. */
void mr_http__pool_drain(struct mr_http_server *srv);

/* Requests (http_request.c). */
/* A clean request from the pool (or new); NULL on OOM. */
struct mr_http_req *mr_http__req_get(struct mr_http_server *srv);
/* Back to the pool (or freed). r must be unlinked from any list. */
void mr_http__req_put(struct mr_http_server *srv, struct mr_http_req *r);
/* Builds the full answer into r->out; sets r->is_close when the connection
 * must close after it. 0 or MR_ENOMEM. */
int mr_http__build_response(struct mr_http_req *r, unsigned status, const char *ct,
                            const char *extra, const void *body, size_t len);
/* The status line and headers only, announcing a body of `len` bytes. */
int mr_http__build_head(struct mr_http_req *r, unsigned status, const char *ct,
                        const char *extra, uint64_t len);
/* Counts an answer in the metrics; t_start 0 = no latency sample. */
void mr_http__record(struct mr_http_server *srv, unsigned status, uint64_t t_start);

/* Connection core (http_conn.c): byte handling without sockets. */
/* New connection object registered with srv; NULL on OOM. */
struct mr_http_conn *mr_http__conn_new(struct mr_http_server *srv,
                                       const struct mr_http_io *io);
/* Starts the connection (reading, timers); rejected = over the limit. */
void mr_http__conn_start(struct mr_http_conn *c, int rejected);
/* Bytes arrived (copied as needed; data may be reused after return). */
void mr_http__conn_feed(struct mr_http_conn *c, const char *data, size_t len);
/* The peer closed (status 0) or the read failed (status < 0). */
void mr_http__conn_read_end(struct mr_http_conn *c, int status);
void mr_http__conn_write_done(struct mr_http_conn *c, int status);
void mr_http__conn_timeout(struct mr_http_conn *c);
/* The transport finished closing. */
void mr_http__conn_closed(struct mr_http_conn *c);
/* Hard close now (server close). */
void mr_http__conn_kill(struct mr_http_conn *c);
/* Answers a server-made error (e.g. 400 for plaintext on the HTTPS port) and
 * closes after it; reads no more requests. */
void mr_http__conn_fail(struct mr_http_conn *c, unsigned status, const char *code,
                        const char *msg);

#endif /* MR_HTTP_INT_H */
