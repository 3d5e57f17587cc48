/* http: the HTTP/1.1 server under moonraft's client API, plus the JSON
 * writing helpers and the Prometheus metrics registry the node uses.
 *
 * Parsing is http-parser's (v2.9); this module never parses HTTP by hand. It
 * adds what http-parser leaves to its user: request assembly, URL
 * percent-decoding and query strings, limits and timeouts, keep-alive and
 * pipelining with in-order answers, backpressure, and JSON error answers.
 *
 * Threading: everything runs on the loop thread that owns the server. Handlers
 * are called on it and must answer on it (now or later).
 *
 * Request lifetime (STYLE 7 and 9). The handler receives each complete
 * request exactly once and MUST answer it exactly once with one of the
 * mr_http_respond* functions, now or later. The request object stays valid
 * until that answer, even if the client disconnects or the server closes
 * first: the answer is then discarded (mr_http_respond returns MR_ECANCELED).
 * A handler that keeps requests waiting for a long time (e.g. for a Raft
 * commit) may register an abort hook with mr_http_request_on_abort(): it fires
 * at most once, when the answer can no longer be delivered (client closed,
 * read or write failed, an earlier answer could not be built, or the server
 * is closing), so the node can answer (and so release) the request early.
 * The hook never fires after the answer. Note: while a connection is paused
 * by backpressure it is not read, so a client leaving is noticed only when
 * reading resumes (or when the write of an answer fails).
 *
 * Error answers are JSON:
 *   {"error":{"code":"...","message":"...","leader":"id"|null}}
 * The server itself produces: 400 invalid_request (malformed HTTP, bad URL or
 * percent-encoding, Upgrade/CONNECT), 408 timeout (headers or body not
 * received within the header/body timeout), 413 too_large (body above
 * max_body_bytes, whether announced by Content-Length or counted while
 * decoding chunks), 431 too_large (header section above max_header_bytes or
 * more than MR_HTTP_MAX_HEADERS fields) and 503 unavailable (over
 * max_connections, or out of memory). After each of these the connection is
 * closed once the answers queued before it have been sent: the server sends
 * FIN and drains input for up to 2 s, so clients read the error instead of a
 * reset. Chunked trailers are parsed (and count against max_header_bytes) but
 * not exposed. HTTP versions other than 1.x get 400.
 *
 * Connection end: when the client closes (or half-closes) its side, or a
 * read or write fails, every unanswered request of that connection is
 * aborted at once (hooks fire) and the connection is closed.
 * Expect: 100-continue is answered with "100 Continue" when the request
 * reaches the head of the pipeline and its announced body fits the limit
 * (otherwise 413 without reading the body).
 * Timeouts: header_timeout_ms runs from a request's first byte to the end of
 * its headers, body_timeout_ms from there to the end of its body (both
 * answered 408 then close); idle_timeout_ms closes silently a connection that
 * has no request in progress and no unanswered request, counted from the last
 * read or completed write (this also drops clients that stop reading
 * answers). While a handler holds a request, no timeout runs: the node
 * answers 504 itself. Backpressure: with max_pipelined requests queued
 * (unanswered or unsent), the server stops reading that connection. */
#ifndef MR_HTTP_H
#define MR_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <http_parser.h>
#include <uv.h>

#include "tls/tls.h"
#include "util/util.h"

/* ==== string builder ====================================================== */

/* A growable byte buffer. Errors are sticky: after an allocation failure
 * every later append is a no-op returning MR_ENOMEM and is_oom stays set, so
 * callers may chain appends and check once at the end. `data` is always
 * NUL-terminated when cap > 0 (the NUL is not counted in len). */
struct mr_http_buf {
    char *data; /* owned; NULL until the first append */
    size_t len;
    size_t cap;
    int is_oom;
};

/* Empty buffer; allocates nothing. */
void mr_http_buf_init(struct mr_http_buf *b);
/* Frees the memory; the buffer is empty (and usable) again afterwards. */
void mr_http_buf_close(struct mr_http_buf *b);
/* len = 0 and clears is_oom; keeps the memory for reuse. */
void mr_http_buf_reset(struct mr_http_buf *b);
/* Makes room for `extra` more bytes. 0 or MR_ENOMEM. */
int mr_http_buf_reserve(struct mr_http_buf *b, size_t extra);
/* Appends bytes / a C string / formatted text. 0 or MR_ENOMEM. */
int mr_http_buf_append(struct mr_http_buf *b, const void *data, size_t len);
int mr_http_buf_puts(struct mr_http_buf *b, const char *s);
int mr_http_buf_printf(struct mr_http_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ==== JSON writing ========================================================= */

/* Appends `s` (len bytes, may contain NUL) as a quoted JSON string. Escapes
 * '"', '\\', every control character below 0x20 (\b \f \n \r \t, otherwise
 * \u00XX) and U+2028/U+2029 (as \u2028/\u2029, for JavaScript consumers).
 * Bytes that are not valid UTF-8 (stray continuation bytes, overlong forms,
 * surrogates, code points above U+10FFFF, truncated sequences) are replaced
 * by U+FFFD, one per maximal invalid subpart (as WHATWG/Unicode recommend),
 * so the output is always valid UTF-8 JSON. 0 or MR_ENOMEM. */
int mr_http_json_escape(struct mr_http_buf *b, const char *s, size_t len);

/* A tiny streaming JSON writer over a buffer that places commas and colons.
 * Nesting depth is limited to MR_HTTP_JSON_MAX_DEPTH (an invariant: deeper
 * nesting asserts). Misuse (a value where a key is due) is the caller's bug
 * and is not detected. Errors: see mr_http_buf (sticky is_oom). */
#define MR_HTTP_JSON_MAX_DEPTH 64
struct mr_http_json {
    struct mr_http_buf *b; /* not owned */
    unsigned depth;
    int is_after_key;
    uint64_t has_items; /* bit d: level d already holds an item */
};
void mr_http_json_init(struct mr_http_json *j, struct mr_http_buf *b);
void mr_http_json_obj_begin(struct mr_http_json *j);
void mr_http_json_obj_end(struct mr_http_json *j);
void mr_http_json_arr_begin(struct mr_http_json *j);
void mr_http_json_arr_end(struct mr_http_json *j);
/* Object key (a NUL-terminated string, escaped like values). */
void mr_http_json_key(struct mr_http_json *j, const char *key);
void mr_http_json_str(struct mr_http_json *j, const char *s); /* NULL -> null */
void mr_http_json_strn(struct mr_http_json *j, const char *s, size_t len);
void mr_http_json_int(struct mr_http_json *j, int64_t v);
void mr_http_json_uint(struct mr_http_json *j, uint64_t v);
/* Shortest round-trip form ("%.17g" at most); NaN and infinities -> null. */
void mr_http_json_double(struct mr_http_json *j, double v);
void mr_http_json_bool(struct mr_http_json *j, int v);
void mr_http_json_null(struct mr_http_json *j);
/* Pre-encoded JSON value, copied verbatim (e.g. a Lua result from cjson). */
void mr_http_json_raw(struct mr_http_json *j, const char *json, size_t len);

/* Appends the standard error object
 *   {"error":{"code":CODE,"message":MESSAGE,"leader":LEADER|null}}
 * code and message must be non-NULL; leader may be NULL. 0 or MR_ENOMEM. */
int mr_http_error_body(struct mr_http_buf *b, const char *code, const char *message,
                       const char *leader);

/* ==== metrics (Prometheus text exposition format 0.0.4) ==================== */

enum mr_http_metric_type { MR_HTTP_COUNTER, MR_HTTP_GAUGE, MR_HTTP_HISTOGRAM };

/* One time series. Handles are owned by the registry and valid until
 * mr_http_metrics_close(). Values are doubles (integers exact up to 2^53). */
struct mr_http_metric {
    struct mr_http_metric *next;        /* next series, registry order */
    struct mr_http_metric *family_next; /* next series with the same name */
    enum mr_http_metric_type type;
    char *name;   /* owned */
    char *labels; /* owned; "" or pre-rendered `a="x",b="y"` */
    char *help;   /* owned; first series of a name only, else NULL */
    double value; /* counter / gauge */
    double sum;   /* histogram */
    uint64_t count;
    unsigned nbounds;
    double *bounds;    /* owned, ascending upper bounds (no +Inf) */
    uint64_t *buckets; /* owned, nbounds entries, NOT cumulative */
};

struct mr_http_metrics {
    struct mr_http_metric *head; /* owned list, registration order */
    struct mr_http_metric *tail;
};

void mr_http_metrics_init(struct mr_http_metrics *m);
/* Frees every series; handles become invalid. */
void mr_http_metrics_close(struct mr_http_metrics *m);

/* Register a series. `name` must match [a-zA-Z_:][a-zA-Z0-9_:]*; `labels` is
 * NULL or a pre-rendered label list without braces (`code="2xx"`), the caller
 * escapes label values. Series sharing a name form one family: they must have
 * the same type (and, for histograms, the same bounds) and are rendered
 * together under the first series' HELP. `help` is copied; newlines and
 * backslashes are escaped on output. Histogram `bounds` (nbounds >= 1,
 * strictly ascending, finite) are copied; +Inf is implicit.
 * Returns the handle, or NULL on a bad name, type or bound mismatch, a
 * duplicate (name, labels) or out of memory. */
struct mr_http_metric *mr_http_metrics_counter(struct mr_http_metrics *m,
                                               const char *name, const char *labels,
                                               const char *help);
struct mr_http_metric *mr_http_metrics_gauge(struct mr_http_metrics *m, const char *name,
                                             const char *labels, const char *help);
struct mr_http_metric *mr_http_metrics_histogram(struct mr_http_metrics *m,
                                                 const char *name, const char *labels,
                                                 const char *help, const double *bounds,
                                                 unsigned nbounds);
/* Counter: adds v (v >= 0, asserted). Gauge: adds v (may be negative). */
void mr_http_metric_add(struct mr_http_metric *x, double v);
/* Gauge only: sets the value. */
void mr_http_metric_set(struct mr_http_metric *x, double v);
/* Histogram only: counts one observation (into the first bucket whose upper
 * bound is >= v, as Prometheus' `le` says). */
void mr_http_metric_observe(struct mr_http_metric *x, double v);
/* Appends the whole registry in text format: per family `# HELP`, `# TYPE`,
 * then samples; histograms as cumulative `_bucket{...,le="b"}` lines ending
 * with le="+Inf", then `_sum` and `_count`. Numbers use the shortest form
 * that reads back exactly ("1", "0.25", "1e+20"), +Inf/-Inf/NaN as
 * Prometheus spells them. 0 or MR_ENOMEM. */
int mr_http_metrics_render(const struct mr_http_metrics *m, struct mr_http_buf *out);
/* Content-Type for the rendered text. */
#define MR_HTTP_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* ==== server =============================================================== */

/* Limits. A zero field means "use the default". */
struct mr_http_options {
    size_t max_header_bytes;    /* request line + header fields; default 16 KiB */
    size_t max_body_bytes;      /* decoded body; default 1 MiB */
    uint32_t idle_timeout_ms;   /* keep-alive idle / stalled write; default 60 s */
    uint32_t header_timeout_ms; /* first byte -> end of headers; default 10 s */
    uint32_t body_timeout_ms;   /* end of headers -> end of body; default 30 s */
    uint32_t max_connections;   /* beyond: accept, answer 503, close; default 10000 */
    uint32_t max_pipelined;     /* unanswered requests per connection before
                                 * the server stops reading from it; default 64 */
    /* Optional registry (not owned, must outlive the server) where the
     * server registers and updates its metrics:
     *   moonraft_http_requests_total{code="1xx".."5xx"}   counter
     *   moonraft_http_request_duration_seconds             histogram
     *       (complete request -> answer given)
     *   moonraft_http_connections                          gauge (open)
     *   moonraft_http_connections_rejected_total           counter */
    struct mr_http_metrics *metrics;
    /* HTTPS: a server context (referenced by the server; NULL = plaintext).
     * Plaintext HTTP on an HTTPS server is answered 400 invalid_request in
     * plaintext, and the connection closed. See mr_http_server_set_tls. */
    struct mr_tls_ctx *tls;
};

#define MR_HTTP_DEFAULT_MAX_HEADER_BYTES (16u * 1024)
#define MR_HTTP_DEFAULT_MAX_BODY_BYTES (1024u * 1024)
#define MR_HTTP_DEFAULT_IDLE_TIMEOUT_MS 60000u
#define MR_HTTP_DEFAULT_HEADER_TIMEOUT_MS 10000u
#define MR_HTTP_DEFAULT_BODY_TIMEOUT_MS 30000u
#define MR_HTTP_DEFAULT_MAX_CONNECTIONS 10000u
#define MR_HTTP_DEFAULT_MAX_PIPELINED 64u
/* Header fields per request; more is answered 431. */
#define MR_HTTP_MAX_HEADERS 100u
/* Query parameters per request; more is answered 400. */
#define MR_HTTP_MAX_PARAMS 64u

/* What a handler sees. All fields are read-only for the handler except
 * `data`; every pointer stays valid until the request is answered. */
struct mr_http_request {
    enum http_method method; /* HTTP_GET, HTTP_POST, ... */
    const char *method_name; /* "GET" */
    /* Path, percent-decoded, NUL-terminated. Requests whose path decodes to a
     * NUL byte or holds a bad escape are answered 400 by the server. */
    const char *path;
    size_t path_len;
    /* The path as sent (not decoded), to tell "%2F" from "/". */
    const char *raw_path;
    /* Query string as sent, without '?', "" when absent; NUL-terminated. */
    const char *query;
    size_t query_len;
    /* Body after chunked decoding; len 0 when absent. body[body_len] is a NUL
     * (not part of the body), so text parsers may rely on it. */
    const char *body;
    size_t body_len;
    unsigned short http_major, http_minor;
    int is_keep_alive; /* the connection stays open after this answer */
    /* The client's address (sockaddr_in or sockaddr_in6); family AF_UNSPEC when
     * not on a socket (tests, fuzzing). */
    const struct sockaddr *peer;
    /* HTTPS with client verification: the OU of the client certificate that
     * verified against the server's CA; NULL when there is none. */
    const char *tls_ou;
    void *data; /* free for the handler; NULL initially */
};

struct mr_http_server;

/* Called once per complete request; `data` is the one given at init. */
typedef void (*mr_http_handler_cb)(void *data, struct mr_http_request *req);
/* See mr_http_request_on_abort. */
typedef void (*mr_http_abort_cb)(void *data, struct mr_http_request *req);
typedef void (*mr_http_server_close_cb)(struct mr_http_server *srv);

/* First header field with this name (case-insensitive), NUL-terminated, or
 * NULL. Duplicates: the first one wins (use _header_at to see all). */
const char *mr_http_request_header(const struct mr_http_request *req, const char *name);
/* Number of header fields, and the i-th (0-based, i < count) name/value. */
unsigned mr_http_request_header_count(const struct mr_http_request *req);
void mr_http_request_header_at(const struct mr_http_request *req, unsigned i,
                               const char **name, const char **value);
/* Value of the first query parameter with this name (exact match), decoded
 * ('+' -> space, %XX), NUL-terminated; "" for `?flag` or `?flag=`; NULL if
 * absent. Parameters whose name or value decodes to NUL are refused with 400
 * before the handler runs. */
const char *mr_http_request_param(const struct mr_http_request *req, const char *name);
/* Nonzero once the answer can no longer be delivered. */
int mr_http_request_is_aborted(const struct mr_http_request *req);
/* Registers (replaces) the abort hook: called at most once, on the loop
 * thread, when the answer can no longer be delivered, and never after the
 * answer. Inside the hook the handler may answer (the answer is discarded);
 * in any case it still must answer exactly once. If the request is already
 * aborted when this is called, the hook is NOT called: check
 * mr_http_request_is_aborted(). */
void mr_http_request_on_abort(struct mr_http_request *req, mr_http_abort_cb cb,
                              void *data);

/* Answers `req` (exactly once; `req` is invalid after the call whatever it
 * returns). status: 200..599 (asserted; 1xx are the server's business).
 * content_type may be NULL (no
 * Content-Type). extra_headers is NULL or complete header lines, each ending
 * in "\r\n" (e.g. "Allow: GET, PUT\r\n"), copied. body (len bytes) is copied
 * and may point into the request (e.g. an echo). The server adds Date,
 * Content-Length and Connection; it sends no body for HEAD, 204 and 304.
 * Responses leave in request order, each batch with one write.
 * Returns 0, MR_ECANCELED if the client is gone (answer discarded) or
 * MR_ENOMEM (the answer could not be built: the connection is closed after
 * the earlier answers have been sent). */
int mr_http_respond(struct mr_http_request *req, unsigned status,
                    const char *content_type, const char *extra_headers, const void *body,
                    size_t len);
/* mr_http_respond with Content-Type application/json. */
int mr_http_respond_json(struct mr_http_request *req, unsigned status, const char *json,
                         size_t len);
/* JSON error answer (see mr_http_error_body). leader may be NULL (-> null).
 * retry_after_s > 0 adds "Retry-After: N". */
int mr_http_respond_error(struct mr_http_request *req, unsigned status, const char *code,
                          const char *message, const char *leader,
                          unsigned retry_after_s);
/* The same with extra header lines (e.g. "Allow: GET\r\n" for a 405). */
int mr_http_respond_error_hdr(struct mr_http_request *req, unsigned status,
                              const char *code, const char *message, const char *leader,
                              unsigned retry_after_s, const char *extra_headers);

/* ---- streamed answers --------------------------------------------------------
 * For bodies too large to build in memory (a backup): the server sends the
 * status line and headers with Content-Length = `length`, then asks the
 * producer for the body one chunk at a time and writes each chunk (through
 * TLS on an HTTPS connection) as it arrives. Backpressure: at most
 * MR_HTTP_STREAM_AHEAD chunks of MR_HTTP_STREAM_CHUNK bytes are filled or
 * being written at once, so a slow client holds the producer back instead
 * of costing memory. Answers pipelined after a streamed one wait for its end.
 * A stream that makes no progress (no chunk filled or written) for
 * idle_timeout_ms closes the connection. */
#define MR_HTTP_STREAM_CHUNK (256u * 1024) /* bytes per pull */
#define MR_HTTP_STREAM_AHEAD 4u            /* chunks filled ahead of the client */

struct mr_http_stream; /* private; valid from the answer until done_cb */

/* Asks for the next body bytes: the producer writes up to `cap` bytes (cap
 * >= 1, never more than what remains of `length`) into `buf`, now or later
 * (e.g. from a uv_fs_read into buf: buf stays valid until the answer), then
 * calls mr_http_stream_ready() or mr_http_stream_fail() exactly once. The
 * server does not pull again before that. Called on the loop thread, maybe
 * from inside mr_http_respond_stream() or mr_http_stream_ready(). */
typedef void (*mr_http_stream_pull_cb)(void *data, struct mr_http_stream *s, char *buf,
                                       size_t cap);
/* Fires exactly once, on the loop thread: status 0 once the whole body has
 * been handed to the socket, MR_ECANCELED when it will not be (client gone,
 * write failed, stalled, server closing, mr_http_stream_fail). No pull is
 * outstanding then, and the stream handle is invalid afterwards; the
 * producer frees its resources. It may fire from inside
 * mr_http_stream_ready()/_fail() (as their last action) but never from
 * inside mr_http_respond_stream(). */
typedef void (*mr_http_stream_done_cb)(void *data, int status);

/* Answers `req` (exactly once, like mr_http_respond) with a streamed body of
 * `length` bytes produced by `pull` (see above); HEAD answers send no body
 * and pull nothing. content_type and extra_headers as for mr_http_respond.
 * Returns 0: done_cb will fire exactly once. Otherwise done_cb never fires
 * and nothing was pulled: MR_ECANCELED when the client is gone (answer
 * discarded), MR_ENOMEM when the answer could not be set up (the connection
 * is closed after the earlier answers). `data` is passed to both callbacks. */
int mr_http_respond_stream(struct mr_http_request *req, unsigned status,
                           const char *content_type, const char *extra_headers,
                           uint64_t length, mr_http_stream_pull_cb pull,
                           mr_http_stream_done_cb done_cb, void *data);
/* The producer put n bytes (1 <= n <= cap) into the buffer of the current
 * pull. After a cancel the bytes are dropped (done_cb follows). */
void mr_http_stream_ready(struct mr_http_stream *s, size_t n);
/* The producer cannot go on: the connection is closed (the client sees a
 * short body) and done_cb fires with MR_ECANCELED. Ends the current pull. */
void mr_http_stream_fail(struct mr_http_stream *s);

/* ==== routing ============================================================== */

/* Method bit for route masks: MR_HTTP_M(HTTP_GET) | MR_HTTP_M(HTTP_PUT). */
#define MR_HTTP_M(method) ((uint64_t)1 << (method))

/* A route handler. `tail` is the decoded path after the route's prefix
 * ("" for exact routes), pointing into req (valid until the answer). The
 * handler owns the duty to answer req exactly once. */
typedef void (*mr_http_route_cb)(void *data, struct mr_http_request *req,
                                 const char *tail);

struct mr_http_route {
    uint64_t methods; /* MR_HTTP_M(...) bits */
    const char *path; /* exact path, or prefix when is_prefix ("/v1/kv/") */
    int is_prefix;
    mr_http_route_cb cb;
};

/* Dispatches req over routes[0..n) (not owned; typically a static table):
 * the first route whose path matches and whose methods include req->method
 * gets it, with `data`. When paths match but no method does, answers 405
 * method_not_allowed with an Allow header listing the matching routes'
 * methods; when no path matches, 404 not_found. */
void mr_http_route(const struct mr_http_route *routes, unsigned n, void *data,
                   struct mr_http_request *req);

struct mr_http_server_stats {
    uint64_t accepted;    /* connections accepted */
    uint64_t rejected;    /* of those, answered 503 (over max_connections) */
    uint64_t requests;    /* requests handed to the handler */
    uint64_t errors;      /* error answers the server made itself */
    uint32_t connections; /* connection objects alive now */
    uint32_t outstanding; /* requests handed out and not yet answered */
};

/* Everything below is private; the caller only provides the storage. */
struct mr_http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    struct mr_http_options opt;
    mr_http_handler_cb handler;
    void *data;
    mr_http_server_close_cb close_cb;
    int is_listening;
    int is_closing;
    int is_listener_closed;
    int port;
    struct mr_queue conns; /* struct mr_http_conn, open or closing */
    struct mr_queue pool;  /* reusable requests */
    unsigned pool_len;
    struct mr_http_server_stats stats;
    uint64_t fake_now; /* clock when loop == NULL (tests, fuzzing) */
    struct mr_http_metric *m_class[5];
    struct mr_http_metric *m_latency;
    struct mr_http_metric *m_conns;
    struct mr_http_metric *m_rejected;
    long date_sec;
    char date[40];              /* "Date: ...\r\n" */
    char *rbuf;                 /* shared read buffer (one loop thread) */
    struct mr_tls_ctx *tls;     /* referenced; NULL: plaintext */
    struct mr_http_buf scratch; /* error bodies (one loop thread) */
    char errmsg[MR_ERRMSG_SIZE];
};

/* Prepares `srv` on `loop`. opt may be NULL (defaults); it is copied. handler
 * must be non-NULL; data is passed to it. Registers the server's metrics when
 * opt->metrics is set. Allocates the read buffer. Returns 0 or MR_ENOMEM /
 * MR_EINVAL (metric registration failed, e.g. registered twice); on error
 * nothing needs closing. After success, mr_http_server_close() must be called
 * (listening or not) and the loop run until its callback. */
int mr_http_server_init(struct mr_http_server *srv, uv_loop_t *loop,
                        const struct mr_http_options *opt, mr_http_handler_cb handler,
                        void *data);
/* Binds and listens on "host:port": "127.0.0.1:8001", "0.0.0.0:80",
 * "[::1]:8001" (numeric addresses only, no DNS); port 0 picks a free port (see
 * mr_http_server_port). Returns 0, MR_EINVAL (bad address; errmsg says why) or a -errno
 * from libuv (e.g. -EADDRINUSE; errmsg names the address). errmsg: MR_ERRMSG_SIZE bytes
 * or NULL. At most once per server. */
int mr_http_server_listen(struct mr_http_server *srv, const char *addr, char *errmsg);
/* The bound port, or -1 when not listening. */
int mr_http_server_port(const struct mr_http_server *srv);
void mr_http_server_stats(const struct mr_http_server *srv,
                          struct mr_http_server_stats *out);
/* Applies new limits and timeouts (a reload) from `opt`: max_header_bytes,
 * max_body_bytes, the three timeouts, max_connections and max_pipelined
 * (zero fields take the defaults); `metrics` and `tls` are ignored. Requests
 * and connections check them from then on (a timer already armed keeps its
 * deadline until it is next re-armed). */
void mr_http_server_update(struct mr_http_server *srv, const struct mr_http_options *opt);

/* Replaces the HTTPS context (certificate reload): connections accepted from
 * now on use `ctx`; open ones keep the context they started with. Takes a
 * reference, drops the old one. Errors: MR_EINVAL when it would switch
 * HTTPS on or off (that needs a restart). */
int mr_http_server_set_tls(struct mr_http_server *srv, struct mr_tls_ctx *ctx);

/* Closes the listener and every connection. Requests not yet answered are
 * aborted (their abort hooks fire now) and their answers will be discarded.
 * cb (may be NULL) runs once, from the loop, after every handle is closed,
 * every outstanding request has been answered and all memory is freed; the
 * storage of srv may be reused then. So the node must answer every request it
 * still holds (answering from the abort hook is simplest), or cb never runs.
 * Call once; may be called from inside a handler or hook. */
void mr_http_server_close(struct mr_http_server *srv, mr_http_server_close_cb cb);

#endif /* MR_HTTP_H */
