/* net transport: listener, outbound connections with backoff, handshake,
 * bounded per-peer queues. See net.h for the protocol and the choice of one
 * TCP connection per direction.
 *
 * Lifetimes: a connection (struct conn) owns a uv_tcp_t and a uv_timer_t and
 * is freed once both are closed and no getaddrinfo request is in flight
 * (libuv runs pending write/connect callbacks with UV_ECANCELED before the
 * tcp close callback). A peer owns its reconnect timer and at most one
 * outbound connection, and is freed once both are gone. net->pending counts
 * every live object so the close callback runs after the last one. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "net/net_int.h"

#define DEFAULT_QUEUE_BYTES (64u * 1024 * 1024) /* bytes per peer */
#define DEFAULT_QUEUE_FRAMES 4096               /* frames per peer */
#define DEFAULT_BACKOFF_MIN 50                  /* ms */
#define DEFAULT_BACKOFF_MAX 5000                /* ms */
#define DEFAULT_CONNECT_TIMEOUT 3000            /* ms */
#define DEFAULT_IO_TIMEOUT 15000                /* ms */
#define KEEPALIVE_DELAY 10                      /* seconds of idleness */
#define ADDR_MAX 300                            /* bytes of "host:port" text */
#define MAX_HANDSHAKING 64 /* inbound connections not yet authenticated */
#define TLS_RBUF_SIZE (64u * 1024) /* bytes of ciphertext per read */

enum conn_state {
    C_RESOLVING = 1, /* outbound: getaddrinfo in flight */
    C_CONNECTING,    /* outbound: TCP connect in flight */
    C_HELLO_SENT,    /* outbound: waiting for HANDSHAKE_REPLY */
    C_WAIT_HELLO,    /* inbound: waiting for HANDSHAKE */
    C_WAIT_PROOF,    /* inbound: waiting for HANDSHAKE_PROOF */
    C_READY,
};

struct conn {
    struct mr_net *net;
    struct mr_net_peer *peer; /* outbound: the owner; inbound: NULL */
    struct mr_queue link;     /* inbound: in net->inbound */
    uv_tcp_t tcp;
    uv_timer_t timer; /* connect + handshake deadline */
    uv_connect_t connect_req;
    uv_getaddrinfo_t gai_req;
    struct mr_net_reader reader;
    struct mr_tls *tls; /* NULL: plaintext */
    int state;
    int is_inbound;
    int is_closing;
    int is_reported;       /* the end of this connection was reported */
    int is_gai_pending;
    int is_close_after_write;
    unsigned open_handles; /* of tcp and timer */
    mr_node_id remote_id;
    char remote_name[MR_NET_NAME_MAX + 1];
    char deferred_reason[96]; /* a failure to report from the timer */
    char addr[ADDR_MAX];
    uint8_t my_nonce[MR_NET_NONCE_SIZE];
    uint8_t their_nonce[MR_NET_NONCE_SIZE];
};

struct mr_net_peer {
    struct mr_net *net;
    struct mr_queue link; /* in net->peers until removed */
    mr_node_id id;
    char addr[ADDR_MAX];
    char host[ADDR_MAX];
    char port[8];
    uv_timer_t timer; /* reconnect */
    int is_timer_open;
    int is_removed;
    struct conn *conn;
    struct mr_queue sendq; /* struct wreq waiting for the connection or the flush */
    struct mr_queue dirty_link; /* in net->dirty while is_dirty */
    int is_dirty;
    size_t q_bytes;        /* queued + in flight */
    unsigned q_frames;
    unsigned fails;        /* consecutive failed attempts since the last UP */
    uint64_t next_delay;   /* ms until the next attempt */
    uint64_t sent, dropped, connects;
};

struct wreq {
    uv_write_t req;
    struct mr_queue link;  /* in sendq; or in the first frame's `batch` */
    struct mr_queue batch; /* frames written with this one's uv_write */
    struct mr_net_peer *peer; /* NULL: a handshake write, not accounted */
    struct conn *conn;
    struct mr_net_wbuf wb;
    char *cipher; /* TLS: the encrypted batch this request writes (owned) */
};

static void conn_close(struct conn *c, int ev_type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void peer_connect(struct mr_net_peer *p);
static void peer_flush(struct mr_net_peer *p);
static void on_conn_timer(uv_timer_t *t);

/* ---- small helpers -------------------------------------------------------- */
static void pending_dec(struct mr_net *net)
{
    MR_ASSERT(net->pending > 0);
    net->pending--;
    if (net->pending == 0 && net->is_closing && net->close_cb != NULL) {
        mr_net_close_cb cb = net->close_cb;
        net->close_cb = NULL;
        cb(net);
    }
}

static void fill_random(struct mr_net *net, uint8_t *buf, size_t n)
{
    /* Nonces come from the kernel: xoshiro's state can be rebuilt from a few
     * outputs, and nonces travel in the clear. */
    ssize_t got = getrandom(buf, n, GRND_NONBLOCK);
    size_t i;
    if (got == (ssize_t)n) return;
    for (i = 0; i < n; i++) buf[i] = (uint8_t)mr_rand_next(&net->rand);
}

static struct mr_net_peer *find_peer(const struct mr_net *net, mr_node_id id)
{
    struct mr_queue *it;
    MR_QUEUE_FOREACH(it, &net->peers)
    {
        struct mr_net_peer *p = MR_CONTAINER_OF(it, struct mr_net_peer, link);
        if (p->id == id) return p;
    }
    return NULL;
}

/* "host:port" or "[v6]:port" into host and port; 0 or MR_EINVAL. */
static int parse_addr(const char *addr, char *host, size_t host_cap, char *port,
                      size_t port_cap, int allow_port_zero)
{
    const char *colon, *h = addr, *hend;
    char *end;
    unsigned long pn;
    size_t hn;
    if (addr == NULL || strlen(addr) >= ADDR_MAX) return MR_EINVAL;
    if (addr[0] == '[') {
        hend = strchr(addr, ']');
        if (hend == NULL || hend[1] != ':') return MR_EINVAL;
        h = addr + 1;
        colon = hend + 1;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL) return MR_EINVAL;
        hend = colon;
        if (memchr(addr, ':', (size_t)(colon - addr)) != NULL) return MR_EINVAL;
    }
    hn = (size_t)(hend - h);
    if (hn == 0 || hn >= host_cap) return MR_EINVAL;
    if (colon[1] < '0' || colon[1] > '9') return MR_EINVAL;
    errno = 0;
    pn = strtoul(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || pn > 65535 || (pn == 0 && !allow_port_zero)) {
        return MR_EINVAL;
    }
    memcpy(host, h, hn);
    host[hn] = '\0';
    snprintf(port, port_cap, "%lu", pn);
    return 0;
}

static int numeric_sockaddr(const char *host, const char *port,
                            struct sockaddr_storage *ss)
{
    int pn = atoi(port);
    if (uv_ip4_addr(host, pn, (struct sockaddr_in *)ss) == 0) return 0;
    if (uv_ip6_addr(host, pn, (struct sockaddr_in6 *)ss) == 0) return 0;
    return MR_EINVAL;
}

static void sockaddr_text(const struct sockaddr_storage *ss, char *out, size_t cap)
{
    char ip[64] = "?";
    int port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        uv_ip4_name(sin, ip, sizeof ip);
        port = ntohs(sin->sin_port);
        snprintf(out, cap, "%s:%d", ip, port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        uv_ip6_name(sin6, ip, sizeof ip);
        port = ntohs(sin6->sin6_port);
        snprintf(out, cap, "[%s]:%d", ip, port);
    } else {
        snprintf(out, cap, "?");
    }
}

/* Random delay for the n-th consecutive failure (n >= 1): exponential from
 * backoff_min, capped at backoff_max, with "equal jitter" (half fixed, half
 * random) so peers that failed together do not retry together. */
static uint64_t backoff_delay(struct mr_net *net, unsigned n)
{
    uint64_t d = net->opts.backoff_min_ms;
    unsigned i;
    for (i = 1; i < n && d < net->opts.backoff_max_ms; i++) d *= 2;
    if (d > net->opts.backoff_max_ms) d = net->opts.backoff_max_ms;
    d = d / 2 + mr_rand_below(&net->rand, d / 2 + 1);
    return d > 0 ? d : 1;
}

static void report(struct mr_net *net, const struct mr_net_event *ev)
{
    if (net->is_closing || net->cb.on_event == NULL) return;
    net->cb.on_event(net, ev);
}

static void set_sockopts(struct conn *c)
{
    uv_os_fd_t fd;
    unsigned ms = c->net->opts.io_timeout_ms;
    (void)uv_tcp_nodelay(&c->tcp, 1);
    (void)uv_tcp_keepalive(&c->tcp, 1, KEEPALIVE_DELAY);
    /* A dead peer that never ACKs would otherwise hold the connection for
     * the kernel's ~15 minutes of retransmissions. */
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) {
        (void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms);
    }
}

/* ---- connection teardown -------------------------------------------------- */
static void wreq_free(struct wreq *w)
{
    mr_net_wbuf_release(&w->wb);
    mr_free(w->cipher);
    mr_free(w);
}

/* Takes p off the list of peers to flush. */
static void peer_undirty(struct mr_net_peer *p)
{
    if (!p->is_dirty) return;
    p->is_dirty = 0;
    mr_queue_remove(&p->dirty_link);
}

/* Drops every frame still waiting for a connection. */
static void peer_drop_queue(struct mr_net_peer *p)
{
    peer_undirty(p);
    while (!mr_queue_empty(&p->sendq)) {
        struct wreq *w = MR_CONTAINER_OF(p->sendq.next, struct wreq, link);
        mr_queue_remove(&w->link);
        p->q_bytes -= w->wb.total;
        p->q_frames--;
        p->dropped++;
        wreq_free(w);
    }
}

static void peer_maybe_free(struct mr_net_peer *p)
{
    struct mr_net *net = p->net;
    if (p->is_timer_open || p->conn != NULL) return;
    MR_ASSERT(mr_queue_empty(&p->sendq));
    mr_free(p);
    pending_dec(net);
}

static void on_peer_timer_closed(uv_handle_t *h)
{
    struct mr_net_peer *p = h->data;
    p->is_timer_open = 0;
    peer_maybe_free(p);
}

static void on_reconnect_timer(uv_timer_t *t)
{
    struct mr_net_peer *p = t->data;
    if (p->is_removed || p->net->is_closing || p->conn != NULL) return;
    peer_connect(p);
}

static void conn_maybe_free(struct conn *c)
{
    struct mr_net *net = c->net;
    struct mr_net_peer *p = c->peer;
    if (c->open_handles > 0 || c->is_gai_pending) return;
    if (c->is_inbound) mr_queue_remove(&c->link);
    mr_net_reader_close(&c->reader);
    mr_tls_free(c->tls);
    mr_free(c);
    if (p != NULL) {
        p->conn = NULL;
        if (p->is_removed || net->is_closing) {
            peer_maybe_free(p);
        } else {
            uv_timer_start(&p->timer, on_reconnect_timer, p->next_delay, 0);
        }
    }
    pending_dec(net);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    MR_ASSERT(c->open_handles > 0);
    c->open_handles--;
    conn_maybe_free(c);
}

/* Decides and reports how a connection ended, once; updates the peer. */
static void conn_report_end(struct conn *c, int ev_type, const char *reason)
{
    struct mr_net *net = c->net;
    struct mr_net_peer *p = c->peer;
    struct mr_net_event ev;
    if (c->is_reported) return;
    c->is_reported = 1;
    if (ev_type != MR_NET_EV_REFUSED) {
        ev_type = c->state == C_READY ? MR_NET_EV_DOWN : MR_NET_EV_FAILED;
    }
    memset(&ev, 0, sizeof ev);
    if (p != NULL && !p->is_removed) {
        if (ev_type == MR_NET_EV_DOWN) {
            /* Reconnect soon; frames sent meanwhile wait in the queue. */
            p->next_delay = backoff_delay(net, 1);
        } else {
            p->fails++;
            p->next_delay = backoff_delay(net, p->fails);
            /* Unreachable: drop what waits, Raft will retry (and new sends
             * fail fast with MR_EUNAVAIL until a connection is up). */
            peer_drop_queue(p);
        }
        ev.attempt = p->fails;
        ev.retry_in_ms = p->next_delay;
    }
    ev.type = ev_type;
    ev.is_inbound = c->is_inbound;
    ev.peer_id = c->is_inbound ? c->remote_id : p->id;
    ev.peer_name = c->remote_name;
    ev.addr = c->addr;
    ev.reason = reason;
    report(net, &ev);
}

/* Closes the connection (idempotent) and reports why, unless already
 * reported. ev_type: MR_NET_EV_REFUSED for policy refusals, anything else
 * lets the state decide between DOWN and FAILED. */
static void conn_close(struct conn *c, int ev_type, const char *fmt, ...)
{
    char reason[MR_ERRMSG_SIZE];
    va_list ap;
    if (c->is_closing) return;
    c->is_closing = 1;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    if (c->is_gai_pending) (void)uv_cancel((uv_req_t *)&c->gai_req);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    /* Report last: the callback may re-enter (close the net, remove peers). */
    conn_report_end(c, ev_type, reason);
}

/* ---- writing ---------------------------------------------------------------- */
static void wreq_done(struct wreq *w, int status)
{
    struct mr_net_peer *p = w->peer;
    if (p != NULL) {
        p->q_bytes -= w->wb.total;
        p->q_frames--;
        if (status == 0) {
            p->sent++;
        } else {
            p->dropped++;
        }
    }
    wreq_free(w);
}

/* Accounts for and frees w and every frame written with it. */
static void batch_done(struct wreq *w, int status)
{
    while (!mr_queue_empty(&w->batch)) {
        struct wreq *o = MR_CONTAINER_OF(w->batch.next, struct wreq, link);
        mr_queue_remove(&o->link);
        wreq_done(o, status);
    }
    wreq_done(w, status);
}

static void on_write(uv_write_t *req, int status)
{
    struct wreq *w = MR_CONTAINER_OF(req, struct wreq, req);
    struct conn *c = w->conn;
    batch_done(w, status);
    if (status < 0 && status != UV_ECANCELED) {
        conn_close(c, 0, "write: %s", uv_strerror(status));
    } else if (c->is_close_after_write && !c->is_closing) {
        conn_close(c, 0, "refused"); /* already reported */
    }
}

/* TLS: encrypts the n buffers and writes the ciphertext (with whatever the
 * session had pending) under w's request. Returns 0 or a uv error. */
static int tls_encrypt(struct conn *c, struct wreq *w, const uv_buf_t *bufs, unsigned n)
{
    uv_buf_t out;
    size_t len;
    unsigned i;
    for (i = 0; i < n; i++) {
        if (mr_tls_write(c->tls, bufs[i].base, bufs[i].len) != 0) return UV_EPROTO;
    }
    if (mr_tls_take(c->tls, &w->cipher, &len) != 0) return UV_ENOMEM;
    if (len == 0) {
        /* Still in the TLS handshake: the session keeps the plaintext and
         * sends it once the handshake completes (tls_flush); this request is
         * done as far as the queue is concerned. */
        w->cipher = mr_malloc(1);
        if (w->cipher == NULL) return UV_ENOMEM;
    }
    out = uv_buf_init(w->cipher, (unsigned)len);
    return uv_write(&w->req, (uv_stream_t *)&c->tcp, &out, 1, on_write);
}

/* TLS: writes what the session produced by itself (handshake messages,
 * alerts, tickets, plaintext that waited for the handshake). */
static void tls_flush(struct conn *c)
{
    struct wreq *w;
    char *buf;
    size_t len;
    uv_buf_t out;
    int rv;
    if (c->tls == NULL || c->is_closing || mr_tls_pending(c->tls) == 0) return;
    w = mr_calloc(1, sizeof *w);
    if (w == NULL || mr_tls_take(c->tls, &buf, &len) != 0) {
        mr_free(w);
        conn_close(c, 0, "out of memory");
        return;
    }
    mr_queue_init(&w->batch);
    w->cipher = buf;
    w->conn = c;
    out = uv_buf_init(buf, (unsigned)len);
    rv = uv_write(&w->req, (uv_stream_t *)&c->tcp, &out, 1, on_write);
    if (rv != 0) {
        wreq_free(w);
        conn_close(c, 0, "write: %s", uv_strerror(rv));
    }
}

/* Hands w, and the frames queued on w->batch after it, to libuv in one
 * uv_write (one writev); on failure frees them and closes the connection. */
static void conn_write(struct conn *c, struct wreq *w)
{
    uv_buf_t one[8], *bufs = w->wb.bufs;
    unsigned n = w->wb.n_bufs;
    int rv;
    w->conn = c;
    if (!mr_queue_empty(&w->batch)) {
        struct mr_queue *it;
        unsigned total = n;
        MR_QUEUE_FOREACH(it, &w->batch)
        {
            total += MR_CONTAINER_OF(it, struct wreq, link)->wb.n_bufs;
        }
        /* libuv copies the array into the request: ours may go right after. */
        bufs = total <= sizeof one / sizeof one[0] ? one : mr_malloc(total * sizeof *bufs);
        if (bufs == NULL) {
            rv = UV_ENOMEM;
            goto failed;
        }
        memcpy(bufs, w->wb.bufs, n * sizeof *bufs);
        MR_QUEUE_FOREACH(it, &w->batch)
        {
            struct wreq *o = MR_CONTAINER_OF(it, struct wreq, link);
            memcpy(bufs + n, o->wb.bufs, o->wb.n_bufs * sizeof *bufs);
            n += o->wb.n_bufs;
        }
    }
    if (c->tls != NULL) {
        rv = tls_encrypt(c, w, bufs, n);
    } else {
        rv = uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, n, on_write);
    }
    if (bufs != w->wb.bufs && bufs != one) mr_free(bufs);
failed:
    if (rv != 0) {
        batch_done(w, rv);
        if (c->state == C_READY) {
            /* We may be inside an mr_net_send_*() call: close from the loop,
             * so that no event callback runs inside the caller's call. */
            snprintf(c->deferred_reason, sizeof c->deferred_reason, "write: %s",
                     uv_strerror(rv));
            uv_read_stop((uv_stream_t *)&c->tcp);
            uv_timer_start(&c->timer, on_conn_timer, 0, 0);
        } else {
            conn_close(c, 0, "write: %s", uv_strerror(rv));
        }
    }
}

/* Writes an unaccounted (handshake) frame; consumes wb. */
static int conn_send_wbuf(struct conn *c, struct mr_net_wbuf *wb)
{
    struct wreq *w = mr_calloc(1, sizeof *w);
    if (w == NULL) {
        mr_net_wbuf_release(wb);
        conn_close(c, 0, "out of memory");
        return MR_ENOMEM;
    }
    mr_queue_init(&w->batch);
    w->wb = *wb;
    conn_write(c, w);
    return c->is_closing ? MR_EIOERR : 0;
}

/* ---- handshake ------------------------------------------------------------- */
/* Acceptor refuses: tell the dialer why, report, close once written. */
static void refuse_inbound(struct conn *c, const char *reason)
{
    struct mr_net *net = c->net;
    struct mr_net_hello_reply r;
    struct mr_net_wbuf wb;
    memset(&r, 0, sizeof r);
    r.is_refused = 1;
    r.version = MR_NET_PROTO_VERSION;
    r.from = net->opts.self_id;
    snprintf(r.name, sizeof r.name, "%s", net->self_name);
    /* cut to what the wire carries (MR_NET_REASON_MAX) */
    snprintf(r.reason, sizeof r.reason, "%.*s", MR_NET_REASON_MAX, reason);
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (mr_net_hello_reply_encode(&r, &wb) != 0) {
        conn_close(c, MR_NET_EV_REFUSED, "%s", reason);
        return;
    }
    c->is_close_after_write = 1;
    if (conn_send_wbuf(c, &wb) == 0) conn_report_end(c, MR_NET_EV_REFUSED, reason);
}

/* Dialer refuses the acceptor's reply. */
static void refuse_outbound(struct conn *c, const char *reason)
{
    struct mr_net_proof pr;
    struct mr_net_wbuf wb;
    memset(&pr, 0, sizeof pr);
    pr.is_refused = 1;
    snprintf(pr.reason, sizeof pr.reason, "%.*s", MR_NET_REASON_MAX, reason);
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (mr_net_proof_encode(&pr, &wb) != 0) {
        conn_close(c, MR_NET_EV_REFUSED, "%s", reason);
        return;
    }
    c->is_close_after_write = 1;
    if (conn_send_wbuf(c, &wb) == 0) conn_report_end(c, MR_NET_EV_REFUSED, reason);
}

static void conn_ready(struct conn *c)
{
    struct mr_net *net = c->net;
    struct mr_net_event ev;
    c->state = C_READY;
    uv_timer_stop(&c->timer);
    c->reader.max_frame = net->opts.max_frame;
    memset(&ev, 0, sizeof ev);
    ev.type = MR_NET_EV_UP;
    ev.is_inbound = c->is_inbound;
    ev.peer_id = c->remote_id;
    ev.peer_name = c->remote_name;
    ev.addr = c->addr;
    ev.reason = "";
    if (c->is_inbound) {
        /* A node has one inbound connection: the newest wins (the old one
         * is usually half-dead after the peer restarted). */
        struct mr_queue *it;
        MR_QUEUE_FOREACH(it, &net->inbound)
        {
            struct conn *o = MR_CONTAINER_OF(it, struct conn, link);
            if (o != c && !o->is_closing && o->state == C_READY && o->remote_id == c->remote_id) {
                conn_close(o, 0, "replaced by a newer connection from the same node");
                if (net->is_closing) return;
            }
        }
        if (net->is_paused) uv_read_stop((uv_stream_t *)&c->tcp);
    } else {
        c->peer->fails = 0;
        c->peer->connects++;
    }
    report(net, &ev);
    if (!c->is_inbound && !c->is_closing && !net->is_closing) peer_flush(c->peer);
}

static void on_hello(struct conn *c, const uint8_t *buf, size_t len)
{
    struct mr_net *net = c->net;
    struct mr_net_hello h;
    struct mr_net_hello_reply r;
    struct mr_net_wbuf wb;
    char errmsg[MR_ERRMSG_SIZE];
    char reason[MR_ERRMSG_SIZE];
    unsigned long long self = net->opts.self_id;

    if (mr_net_hello_decode(buf, len, &h, errmsg) != 0) {
        conn_close(c, 0, "bad handshake: %s", errmsg);
        return;
    }
    c->remote_id = h.from;
    snprintf(c->remote_name, sizeof c->remote_name, "%s", h.name);
    memcpy(c->their_nonce, h.nonce, MR_NET_NONCE_SIZE);
    reason[0] = '\0';
    if (h.version != MR_NET_PROTO_VERSION) {
        snprintf(reason, sizeof reason, "protocol version %u is not supported (this node speaks %u)",
                 h.version, MR_NET_PROTO_VERSION);
    } else if (strcmp(h.cluster, net->cluster_id) != 0) {
        snprintf(reason, sizeof reason,
                 "cluster id mismatch: this node is in cluster \"%s\", the peer in \"%s\"",
                 net->cluster_id, h.cluster);
    } else if (h.from == 0 || h.from == net->opts.self_id) {
        snprintf(reason, sizeof reason, "the peer claims node id %llu, which is %s",
                 (unsigned long long)h.from, h.from == 0 ? "invalid" : "this node's own id");
    } else if (h.to != 0 && h.to != net->opts.self_id) {
        snprintf(reason, sizeof reason, "the peer dialed node %llu but this is node %llu",
                 (unsigned long long)h.to, self);
    } else if (net->opts.is_strict_peers && find_peer(net, h.from) == NULL) {
        snprintf(reason, sizeof reason, "node %llu is not a configured peer of node %llu",
                 (unsigned long long)h.from, self);
    } else if (net->secret != NULL && !h.has_secret) {
        snprintf(reason, sizeof reason,
                 "node %llu requires the cluster secret but the peer has none configured", self);
    } else if (net->secret == NULL && h.has_secret) {
        snprintf(reason, sizeof reason,
                 "the peer has a cluster secret but node %llu has none configured", self);
    }
    if (reason[0] != '\0') {
        refuse_inbound(c, reason);
        return;
    }
    memset(&r, 0, sizeof r);
    r.version = MR_NET_PROTO_VERSION;
    r.from = net->opts.self_id;
    snprintf(r.name, sizeof r.name, "%s", net->self_name);
    fill_random(net, c->my_nonce, MR_NET_NONCE_SIZE);
    memcpy(r.nonce, c->my_nonce, MR_NET_NONCE_SIZE);
    if (net->secret != NULL) {
        r.has_proof = 1;
        mr_net_handshake_proof(net->secret, net->secret_len, 1, net->cluster_id, h.from,
                               net->opts.self_id, c->their_nonce, c->my_nonce, r.proof);
    }
    if (mr_net_hello_reply_encode(&r, &wb) != 0) {
        conn_close(c, 0, "out of memory");
        return;
    }
    if (conn_send_wbuf(c, &wb) != 0) return;
    c->state = C_WAIT_PROOF;
}

static void on_proof(struct conn *c, const uint8_t *buf, size_t len)
{
    struct mr_net *net = c->net;
    struct mr_net_proof pr;
    char errmsg[MR_ERRMSG_SIZE];
    uint8_t want[MR_NET_MAC_SIZE];
    if (mr_net_proof_decode(buf, len, &pr, errmsg) != 0) {
        conn_close(c, 0, "bad handshake proof: %s", errmsg);
        return;
    }
    if (pr.is_refused) {
        conn_close(c, MR_NET_EV_REFUSED, "refused by the peer: %s", pr.reason);
        return;
    }
    if (net->secret != NULL) {
        mr_net_handshake_proof(net->secret, net->secret_len, 0, net->cluster_id, c->remote_id,
                               net->opts.self_id, c->their_nonce, c->my_nonce, want);
        if (!pr.has_proof || !mr_net_mac_equal(want, pr.proof, MR_NET_MAC_SIZE)) {
            refuse_inbound(c, "the peer failed to prove the cluster secret (wrong secret?)");
            return;
        }
    } else if (pr.has_proof) {
        refuse_inbound(c, "the peer sent a secret proof but this node has no cluster secret");
        return;
    }
    conn_ready(c);
}

static void on_reply(struct conn *c, const uint8_t *buf, size_t len)
{
    struct mr_net *net = c->net;
    struct mr_net_peer *p = c->peer;
    struct mr_net_hello_reply r;
    struct mr_net_proof pr;
    struct mr_net_wbuf wb;
    char errmsg[MR_ERRMSG_SIZE];
    char reason[MR_ERRMSG_SIZE];
    uint8_t want[MR_NET_MAC_SIZE];

    if (mr_net_hello_reply_decode(buf, len, &r, errmsg) != 0) {
        conn_close(c, 0, "bad handshake reply: %s", errmsg);
        return;
    }
    snprintf(c->remote_name, sizeof c->remote_name, "%s", r.name);
    if (r.is_refused) {
        conn_close(c, MR_NET_EV_REFUSED, "refused by the peer: %s", r.reason);
        return;
    }
    reason[0] = '\0';
    if (r.version != MR_NET_PROTO_VERSION) {
        snprintf(reason, sizeof reason, "protocol version %u is not supported (this node speaks %u)",
                 r.version, MR_NET_PROTO_VERSION);
    } else if (r.from != p->id) {
        snprintf(reason, sizeof reason, "expected node %llu at %.120s but found node %llu",
                 (unsigned long long)p->id, p->addr, (unsigned long long)r.from);
    } else if (net->secret != NULL) {
        mr_net_handshake_proof(net->secret, net->secret_len, 1, net->cluster_id,
                               net->opts.self_id, p->id, c->my_nonce, r.nonce, want);
        if (!r.has_proof || !mr_net_mac_equal(want, r.proof, MR_NET_MAC_SIZE)) {
            snprintf(reason, sizeof reason,
                     "the peer failed to prove the cluster secret (wrong secret?)");
        }
    } else if (r.has_proof) {
        snprintf(reason, sizeof reason,
                 "the peer has a cluster secret but this node has none configured");
    }
    if (reason[0] != '\0') {
        refuse_outbound(c, reason);
        return;
    }
    memcpy(c->their_nonce, r.nonce, MR_NET_NONCE_SIZE);
    memset(&pr, 0, sizeof pr);
    if (net->secret != NULL) {
        pr.has_proof = 1;
        mr_net_handshake_proof(net->secret, net->secret_len, 0, net->cluster_id,
                               net->opts.self_id, p->id, c->my_nonce, c->their_nonce, pr.proof);
    }
    if (mr_net_proof_encode(&pr, &wb) != 0) {
        conn_close(c, 0, "out of memory");
        return;
    }
    if (conn_send_wbuf(c, &wb) != 0) return;
    conn_ready(c);
}

/* ---- reading ---------------------------------------------------------------- */
static void deliver(struct conn *c, const struct mr_net_frame *f)
{
    struct mr_net *net = c->net;
    char errmsg[MR_ERRMSG_SIZE];
    int rv;
    switch (f->type) {
    case MR_NET_FRAME_RAFT: {
        struct mr_raft_msg m;
        rv = mr_net_msg_decode(f->payload, f->len, &m, errmsg);
        if (rv != 0) {
            conn_close(c, 0, "bad raft message: %s", errmsg);
            return;
        }
        if (m.from != c->remote_id) {
            conn_close(c, 0, "raft message claims to come from node %llu on node %llu's connection",
                       (unsigned long long)m.from, (unsigned long long)c->remote_id);
        } else if (net->cb.on_raft_msg != NULL) {
            net->cb.on_raft_msg(net, c->remote_id, &m);
        }
        mr_net_msg_release(&m);
        return;
    }
    case MR_NET_FRAME_FORWARD:
    case MR_NET_FRAME_FORWARD_REPLY: {
        uint64_t id;
        const uint8_t *data;
        size_t n;
        if (mr_net_forward_decode(f->payload, f->len, &id, &data, &n, errmsg) != 0) {
            conn_close(c, 0, "bad forward: %s", errmsg);
            return;
        }
        if (f->type == MR_NET_FRAME_FORWARD && net->cb.on_forward != NULL) {
            net->cb.on_forward(net, c->remote_id, id, data, n);
        } else if (f->type == MR_NET_FRAME_FORWARD_REPLY && net->cb.on_forward_reply != NULL) {
            net->cb.on_forward_reply(net, c->remote_id, id, data, n);
        }
        return;
    }
    case MR_NET_FRAME_SNAPSHOT_CHUNK: {
        struct mr_net_snapshot_chunk ch;
        if (mr_net_snapshot_chunk_decode(f->payload, f->len, &ch, errmsg) != 0) {
            conn_close(c, 0, "bad snapshot chunk: %s", errmsg);
            return;
        }
        if (net->cb.on_snapshot_chunk != NULL) net->cb.on_snapshot_chunk(net, c->remote_id, &ch);
        return;
    }
    default:
        conn_close(c, 0, "unexpected frame type %u after the handshake", f->type);
    }
}

static void handle_frame(struct conn *c, const struct mr_net_frame *f)
{
    switch (c->state) {
    case C_WAIT_HELLO:
        if (f->type == MR_NET_FRAME_HANDSHAKE) {
            on_hello(c, f->payload, f->len);
            return;
        }
        break;
    case C_WAIT_PROOF:
        if (f->type == MR_NET_FRAME_HANDSHAKE_PROOF) {
            on_proof(c, f->payload, f->len);
            return;
        }
        break;
    case C_HELLO_SENT:
        if (f->type == MR_NET_FRAME_HANDSHAKE_REPLY) {
            on_reply(c, f->payload, f->len);
            return;
        }
        break;
    case C_READY:
        if (c->is_inbound) {
            deliver(c, f);
            return;
        }
        if (f->type == MR_NET_FRAME_HANDSHAKE_REPLY) {
            /* Only a late refusal of our proof can come this way. */
            struct mr_net_hello_reply r;
            char errmsg[MR_ERRMSG_SIZE];
            if (mr_net_hello_reply_decode(f->payload, f->len, &r, errmsg) == 0 && r.is_refused) {
                conn_close(c, MR_NET_EV_REFUSED, "refused by the peer: %s", r.reason);
                return;
            }
        }
        break;
    default:
        break;
    }
    conn_close(c, 0, "unexpected frame type %u during %s", f->type,
               c->state == C_READY ? "traffic" : "the handshake");
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    uint8_t *p;
    size_t n;
    (void)suggested;
    if (c->tls != NULL) {
        /* One loop thread: each read is fed to the session before the next. */
        *buf = uv_buf_init(c->net->tls_rbuf, TLS_RBUF_SIZE);
        return;
    }
    if (mr_net_reader_reserve(&c->reader, &p, &n) != 0) {
        *buf = uv_buf_init(NULL, 0); /* read_cb gets UV_ENOBUFS */
        return;
    }
    if (n > UINT32_MAX) n = UINT32_MAX;
    *buf = uv_buf_init((char *)p, (unsigned)n);
}

/* Handles every whole frame the reader holds. */
static void process_frames(struct conn *c)
{
    struct mr_net_frame f;
    char errmsg[MR_ERRMSG_SIZE];
    int rv;
    while (!c->is_closing && !c->is_close_after_write) {
        rv = mr_net_reader_next(&c->reader, &f, errmsg);
        if (rv == 0) break;
        if (rv < 0) {
            conn_close(c, 0, "bad frame: %s", errmsg);
            return;
        }
        handle_frame(c, &f);
    }
}

/* TLS: feeds ciphertext, moves the plaintext into the frame reader and
 * handles the frames, then writes what the session has to say. */
static void tls_on_read(struct conn *c, const char *data, size_t len)
{
    int rv = mr_tls_feed(c->tls, data, len);
    if (rv != 0) {
        if (mr_tls_is_plaintext(c->tls) && c->is_inbound && c->state == C_WAIT_HELLO) {
            /* Fail closed, but tell a plaintext moonraft dialer why in its
             * own protocol so its log says so. */
            mr_tls_free(c->tls);
            c->tls = NULL;
            refuse_inbound(c, "this node requires TLS on its peer port and the peer spoke "
                              "plaintext (configure tls_cert/tls_key/tls_ca on every node)");
            return;
        }
        /* A failed handshake is a policy refusal (certificate, protocol). */
        int ev = mr_tls_is_ready(c->tls) || c->state == C_READY ? 0 : MR_NET_EV_REFUSED;
        tls_flush(c); /* the alert, if any */
        conn_close(c, ev, "%s", mr_tls_errmsg(c->tls));
        return;
    }
    while (!c->is_closing && !c->is_close_after_write) {
        uint8_t *p;
        size_t n, got;
        if (mr_net_reader_reserve(&c->reader, &p, &n) != 0) {
            conn_close(c, 0, "out of memory");
            return;
        }
        rv = mr_tls_read(c->tls, p, n, &got);
        if (rv == MR_ESHUTDOWN) {
            conn_close(c, 0, "connection closed by the peer (TLS close_notify)");
            return;
        }
        if (rv != 0) {
            tls_flush(c);
            conn_close(c, 0, "%s", mr_tls_errmsg(c->tls));
            return;
        }
        if (got == 0) break;
        mr_net_reader_commit(&c->reader, got);
        process_frames(c);
    }
    tls_flush(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (c->is_closing) return;
    if (nread < 0) {
        if (nread == UV_EOF) {
            conn_close(c, 0, "connection closed by the peer%s",
                       c->tls != NULL && !mr_tls_is_ready(c->tls)
                           ? " during the TLS handshake (is it configured for TLS with the "
                             "same CA, and does it accept our certificate? see its log)"
                           : "");
        } else {
            conn_close(c, 0, "read: %s", uv_strerror((int)nread));
        }
        return;
    }
    if (c->tls != NULL) {
        if (nread > 0) tls_on_read(c, buf->base, (size_t)nread);
        return;
    }
    mr_net_reader_commit(&c->reader, (size_t)nread);
    if (c->is_inbound && c->state == C_WAIT_HELLO && c->reader.end - c->reader.start >= 2 &&
        c->reader.buf[c->reader.start] == 0x16 && c->reader.buf[c->reader.start + 1] == 0x03) {
        /* A TLS ClientHello; a moonraft HANDSHAKE frame is far shorter than
         * the 0x..0316 bytes these two would announce. */
        conn_close(c, MR_NET_EV_REFUSED,
                   "the peer speaks TLS but this node has no TLS configured on its peer port");
        return;
    }
    process_frames(c);
}

static void on_conn_timer(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->deferred_reason[0] != '\0') {
        conn_close(c, 0, "%s", c->deferred_reason);
        return;
    }
    conn_close(c, 0, "%s timed out after %u ms",
               c->state == C_CONNECTING || c->state == C_RESOLVING ? "connect" : "handshake",
               c->net->opts.connect_timeout_ms);
}

/* ---- outbound --------------------------------------------------------------- */
static struct conn *conn_new(struct mr_net *net)
{
    struct conn *c = mr_calloc(1, sizeof *c);
    if (c == NULL) return NULL;
    c->net = net;
    mr_queue_init(&c->link);
    mr_net_reader_init(&c->reader, MR_NET_HANDSHAKE_MAX_FRAME);
    /* Both inits cannot fail on Unix for a valid loop. */
    MR_ASSERT(uv_tcp_init(net->loop, &c->tcp) == 0);
    MR_ASSERT(uv_timer_init(net->loop, &c->timer) == 0);
    c->tcp.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    net->pending++;
    return c;
}

static void on_connect(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    struct mr_net *net = c->net;
    struct mr_net_peer *p = c->peer;
    struct mr_net_hello h;
    struct mr_net_wbuf wb;
    int rv;
    if (c->is_closing || status == UV_ECANCELED) return;
    if (status < 0) {
        conn_close(c, 0, "connect to %s: %s", p->addr, uv_strerror(status));
        return;
    }
    set_sockopts(c);
    if (net->tls_client != NULL) {
        /* Peers are checked against the CA, not an address (see net.h). */
        if (mr_tls_new(net->tls_client, NULL, &c->tls) != 0) {
            conn_close(c, 0, "out of memory");
            return;
        }
        if (mr_tls_start(c->tls) != 0) {
            conn_close(c, 0, "%s", mr_tls_errmsg(c->tls));
            return;
        }
    }
    rv = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rv != 0) {
        conn_close(c, 0, "read: %s", uv_strerror(rv));
        return;
    }
    memset(&h, 0, sizeof h);
    h.version = MR_NET_PROTO_VERSION;
    h.has_secret = net->secret != NULL;
    h.from = net->opts.self_id;
    h.to = p->id;
    snprintf(h.cluster, sizeof h.cluster, "%s", net->cluster_id);
    snprintf(h.name, sizeof h.name, "%s", net->self_name);
    fill_random(net, c->my_nonce, MR_NET_NONCE_SIZE);
    memcpy(h.nonce, c->my_nonce, MR_NET_NONCE_SIZE);
    if (mr_net_hello_encode(&h, &wb) != 0) {
        conn_close(c, 0, "out of memory");
        return;
    }
    if (conn_send_wbuf(c, &wb) != 0) return;
    c->state = C_HELLO_SENT;
}

static void conn_connect(struct conn *c, const struct sockaddr *sa)
{
    int rv;
    c->state = C_CONNECTING;
    c->connect_req.data = c;
    rv = uv_tcp_connect(&c->connect_req, &c->tcp, sa, on_connect);
    if (rv != 0) conn_close(c, 0, "connect to %s: %s", c->peer->addr, uv_strerror(rv));
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct conn *c = req->data;
    c->is_gai_pending = 0;
    if (c->is_closing) {
        if (res != NULL) uv_freeaddrinfo(res);
        conn_maybe_free(c);
        return;
    }
    if (status < 0 || res == NULL) {
        conn_close(c, 0, "resolve %s: %s", c->peer->addr, uv_strerror(status));
    } else {
        /* One address per attempt: IPv4 first, as "localhost" often lists
         * ::1 first while nodes listen on 127.0.0.1. */
        struct addrinfo *ai, *pick = res;
        for (ai = res; ai != NULL; ai = ai->ai_next) {
            if (ai->ai_family == AF_INET) {
                pick = ai;
                break;
            }
        }
        conn_connect(c, pick->ai_addr);
    }
    if (res != NULL) uv_freeaddrinfo(res);
}

static void peer_connect(struct mr_net_peer *p)
{
    struct mr_net *net = p->net;
    struct sockaddr_storage ss;
    struct addrinfo hints;
    struct conn *c;
    int rv;
    MR_ASSERT(p->conn == NULL);
    c = conn_new(net);
    if (c == NULL) {
        /* Try again later rather than lose the peer. */
        p->fails++;
        uv_timer_start(&p->timer, on_reconnect_timer, backoff_delay(net, p->fails), 0);
        return;
    }
    c->peer = p;
    c->remote_id = p->id;
    snprintf(c->addr, sizeof c->addr, "%s", p->addr);
    p->conn = c;
    uv_timer_start(&c->timer, on_conn_timer, net->opts.connect_timeout_ms, 0);
    if (numeric_sockaddr(p->host, p->port, &ss) == 0) {
        conn_connect(c, (const struct sockaddr *)&ss);
        return;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    c->state = C_RESOLVING;
    c->gai_req.data = c;
    rv = uv_getaddrinfo(net->loop, &c->gai_req, on_resolved, p->host, p->port, &hints);
    if (rv != 0) {
        conn_close(c, 0, "resolve %s: %s", p->addr, uv_strerror(rv));
        return;
    }
    c->is_gai_pending = 1;
}

#define FLUSH_MAX_FRAMES 256 /* frames per writev */

/* Writes what waits in the queue, many frames per uv_write. */
static void peer_flush(struct mr_net_peer *p)
{
    peer_undirty(p);
    while (!mr_queue_empty(&p->sendq) && p->conn != NULL && p->conn->state == C_READY &&
           !p->conn->is_closing) {
        struct wreq *w = MR_CONTAINER_OF(p->sendq.next, struct wreq, link);
        unsigned k = 1;
        mr_queue_remove(&w->link);
        while (!mr_queue_empty(&p->sendq) && k < FLUSH_MAX_FRAMES) {
            struct wreq *o = MR_CONTAINER_OF(p->sendq.next, struct wreq, link);
            mr_queue_remove(&o->link);
            mr_queue_push_tail(&w->batch, &o->link);
            k++;
        }
        conn_write(p->conn, w);
    }
}

/* Runs right before the loop blocks for I/O: everything sent during this
 * loop iteration leaves in one writev per peer instead of one write per
 * frame (a leader under load sends an AppendEntries per proposal). */
static void on_flush(uv_prepare_t *h)
{
    mr_net_flush(h->data);
}

void mr_net_flush(struct mr_net *net)
{
    while (!mr_queue_empty(&net->dirty)) {
        peer_flush(MR_CONTAINER_OF(net->dirty.next, struct mr_net_peer, dirty_link));
    }
    uv_prepare_stop(&net->flusher);
}

/* ---- inbound ---------------------------------------------------------------- */
static void on_connection(uv_stream_t *server, int status)
{
    struct mr_net *net = server->data;
    struct sockaddr_storage ss;
    int len = sizeof ss;
    struct conn *c;
    int rv;
    struct mr_queue *it;
    unsigned handshaking = 0;
    if (status < 0 || net->is_closing) return; /* e.g. EMFILE; the kernel queue retries */
    /* XXX: on OOM the connection stays in the backlog and libuv stops
     * accepting until a later accept; the node is in trouble anyway. */
    c = conn_new(net);
    if (c == NULL) return;
    MR_QUEUE_FOREACH(it, &net->inbound)
    {
        struct conn *o = MR_CONTAINER_OF(it, struct conn, link);
        if (!o->is_closing && o->state != C_READY) handshaking++;
    }
    c->is_inbound = 1;
    c->state = C_WAIT_HELLO;
    mr_queue_push_tail(&net->inbound, &c->link);
    snprintf(c->addr, sizeof c->addr, "?");
    rv = uv_accept(server, (uv_stream_t *)&c->tcp);
    if (rv != 0) {
        conn_close(c, 0, "accept: %s", uv_strerror(rv));
        return;
    }
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        sockaddr_text(&ss, c->addr, sizeof c->addr);
    }
    if (handshaking >= MAX_HANDSHAKING) {
        conn_close(c, 0, "too many connections in the handshake (%u)", handshaking);
        return;
    }
    set_sockopts(c);
    if (net->tls_server != NULL && mr_tls_new(net->tls_server, NULL, &c->tls) != 0) {
        conn_close(c, 0, "out of memory");
        return;
    }
    uv_timer_start(&c->timer, on_conn_timer, net->opts.connect_timeout_ms, 0);
    rv = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rv != 0) conn_close(c, 0, "read: %s", uv_strerror(rv));
}

/* ---- public API --------------------------------------------------------------- */
static void on_sentinel_closed(uv_handle_t *h)
{
    pending_dec(h->data);
}

static void on_listener_closed(uv_handle_t *h)
{
    pending_dec(h->data);
}

static void free_strings(struct mr_net *net)
{
    if (net->secret != NULL) explicit_bzero(net->secret, net->secret_len);
    mr_free(net->secret);
    mr_free(net->self_name);
    mr_free(net->cluster_id);
    mr_free(net->listen_addr);
    net->secret = net->self_name = net->cluster_id = net->listen_addr = NULL;
}

int mr_net_set_tls(struct mr_net *net, struct mr_tls_ctx *server, struct mr_tls_ctx *client)
{
    if ((server == NULL) != (client == NULL) || (server == NULL) != (net->tls_server == NULL)) {
        mr_errmsg_printf(net->errmsg, "net: TLS cannot be switched %s without a restart",
                         net->tls_server == NULL ? "on" : "off");
        return MR_EINVAL;
    }
    if (server == NULL) return 0;
    mr_tls_ctx_ref(server);
    mr_tls_ctx_ref(client);
    mr_tls_ctx_unref(net->tls_server);
    mr_tls_ctx_unref(net->tls_client);
    net->tls_server = server;
    net->tls_client = client;
    return 0;
}

int mr_net_init(struct mr_net *net, uv_loop_t *loop, const struct mr_net_options *opts,
                const struct mr_net_callbacks *cbs, void *data)
{
    uint64_t seed = 0;
    memset(net, 0, sizeof *net);
    net->data = data;
    net->loop = loop;
    if (cbs != NULL) net->cb = *cbs;
    net->opts = *opts;
    if (opts->self_id == 0) {
        mr_errmsg_printf(net->errmsg, "net: self_id must be nonzero");
        return MR_EINVAL;
    }
    if (!mr_net_name_is_valid(opts->cluster_id, MR_NET_NAME_MAX, 0)) {
        mr_errmsg_printf(net->errmsg, "net: cluster id must be 1..%d printable ASCII bytes",
                         MR_NET_NAME_MAX);
        return MR_EINVAL;
    }
    if (!mr_net_name_is_valid(opts->self_name, MR_NET_NAME_MAX, 1)) {
        mr_errmsg_printf(net->errmsg, "net: node name must be 0..%d printable ASCII bytes",
                         MR_NET_NAME_MAX);
        return MR_EINVAL;
    }
    if (net->opts.max_frame == 0) net->opts.max_frame = MR_NET_DEFAULT_MAX_FRAME;
    if (net->opts.queue_max_bytes == 0) net->opts.queue_max_bytes = DEFAULT_QUEUE_BYTES;
    if (net->opts.queue_max_frames == 0) net->opts.queue_max_frames = DEFAULT_QUEUE_FRAMES;
    if (net->opts.backoff_min_ms == 0) net->opts.backoff_min_ms = DEFAULT_BACKOFF_MIN;
    if (net->opts.backoff_max_ms == 0) net->opts.backoff_max_ms = DEFAULT_BACKOFF_MAX;
    if (net->opts.connect_timeout_ms == 0) net->opts.connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT;
    if (net->opts.io_timeout_ms == 0) net->opts.io_timeout_ms = DEFAULT_IO_TIMEOUT;
    if (net->opts.max_frame > UINT32_MAX || net->opts.max_frame < MR_NET_HANDSHAKE_MAX_FRAME) {
        mr_errmsg_printf(net->errmsg, "net: max_frame must be %d..%u bytes",
                         MR_NET_HANDSHAKE_MAX_FRAME, UINT32_MAX);
        return MR_EINVAL;
    }
    if ((opts->tls_server == NULL) != (opts->tls_client == NULL)) {
        mr_errmsg_printf(net->errmsg, "net: TLS needs both a server and a client context");
        return MR_EINVAL;
    }
    if (net->opts.backoff_max_ms < net->opts.backoff_min_ms) {
        mr_errmsg_printf(net->errmsg, "net: backoff_max_ms (%u) is below backoff_min_ms (%u)",
                         net->opts.backoff_max_ms, net->opts.backoff_min_ms);
        return MR_EINVAL;
    }
    net->self_name = mr_strdup(opts->self_name != NULL ? opts->self_name : "");
    net->cluster_id = mr_strdup(opts->cluster_id);
    if (opts->listen_addr != NULL) net->listen_addr = mr_strdup(opts->listen_addr);
    if (opts->secret != NULL && opts->secret[0] != '\0') {
        net->secret_len = strlen(opts->secret);
        net->secret = mr_strdup(opts->secret);
    }
    if (opts->tls_server != NULL) net->tls_rbuf = mr_malloc(TLS_RBUF_SIZE);
    if (net->self_name == NULL || net->cluster_id == NULL ||
        (opts->tls_server != NULL && net->tls_rbuf == NULL) ||
        (opts->listen_addr != NULL && net->listen_addr == NULL) ||
        (net->secret_len > 0 && net->secret == NULL)) {
        free_strings(net);
        mr_free(net->tls_rbuf);
        mr_errmsg_printf(net->errmsg, "net: out of memory");
        return MR_ENOMEM;
    }
    /* The copies are what the rest of the module reads. */
    net->opts.self_name = net->self_name;
    net->opts.cluster_id = net->cluster_id;
    net->opts.listen_addr = net->listen_addr;
    net->opts.secret = NULL;
    net->tls_server = mr_tls_ctx_ref(opts->tls_server);
    net->tls_client = mr_tls_ctx_ref(opts->tls_client);
    net->opts.tls_server = net->opts.tls_client = NULL;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed) {
        seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)net;
    }
    mr_rand_seed(&net->rand, seed);
    mr_queue_init(&net->peers);
    mr_queue_init(&net->inbound);
    mr_queue_init(&net->dirty);
    MR_ASSERT(uv_timer_init(loop, &net->sentinel) == 0);
    net->sentinel.data = net;
    MR_ASSERT(uv_prepare_init(loop, &net->flusher) == 0);
    net->flusher.data = net;
    net->pending = 2;
    return 0;
}

int mr_net_listen(struct mr_net *net)
{
    char host[ADDR_MAX], port[8];
    struct sockaddr_storage ss;
    int rv;
    if (net->is_closing) return MR_ESHUTDOWN;
    if (net->is_listening || net->listener.type == UV_TCP) {
        /* One attempt per transport: a failed listener may still be closing. */
        mr_errmsg_printf(net->errmsg, "net: listen was already called");
        return MR_EBUSY;
    }
    if (parse_addr(net->listen_addr, host, sizeof host, port, sizeof port, 1) != 0) {
        mr_errmsg_printf(net->errmsg, "net: bad listen address \"%s\" (want host:port)",
                         net->listen_addr != NULL ? net->listen_addr : "");
        return MR_EINVAL;
    }
    if (numeric_sockaddr(host, port, &ss) != 0) {
        /* Startup only: a synchronous lookup is fine here. */
        uv_getaddrinfo_t req;
        struct addrinfo hints;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE;
        rv = uv_getaddrinfo(net->loop, &req, NULL, host, port, &hints);
        if (rv != 0) {
            mr_errmsg_printf(net->errmsg, "net: resolve listen address %s: %s", net->listen_addr,
                             uv_strerror(rv));
            return MR_EINVAL;
        }
        memcpy(&ss, req.addrinfo->ai_addr, req.addrinfo->ai_addrlen);
        uv_freeaddrinfo(req.addrinfo);
    }
    MR_ASSERT(uv_tcp_init(net->loop, &net->listener) == 0);
    net->listener.data = net;
    net->pending++;
    rv = uv_tcp_bind(&net->listener, (const struct sockaddr *)&ss, 0);
    if (rv == 0) rv = uv_listen((uv_stream_t *)&net->listener, 128, on_connection);
    if (rv != 0) {
        mr_errmsg_printf(net->errmsg, "net: listen on %s: %s", net->listen_addr, uv_strerror(rv));
        uv_close((uv_handle_t *)&net->listener, on_listener_closed);
        return rv;
    }
    net->is_listening = 1;
    return 0;
}

int mr_net_bound_port(const struct mr_net *net)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (!net->is_listening) return 0;
    if (uv_tcp_getsockname(&net->listener, (struct sockaddr *)&ss, &len) != 0) return 0;
    if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

/* Forgets a peer: no events, queue dropped, freed once its handles close. */
static void peer_remove(struct mr_net_peer *p)
{
    p->is_removed = 1;
    mr_queue_remove(&p->link);
    peer_drop_queue(p);
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, on_peer_timer_closed);
    if (p->conn != NULL) {
        p->conn->is_reported = 1; /* removal is the caller's own doing */
        conn_close(p->conn, 0, "peer removed");
    }
}

int mr_net_set_peer(struct mr_net *net, mr_node_id id, const char *addr)
{
    struct mr_net_peer *p;
    char host[ADDR_MAX], port[8];
    if (net->is_closing) return MR_ESHUTDOWN;
    if (id == 0 || id == net->opts.self_id) {
        mr_errmsg_printf(net->errmsg, "net: bad peer id %llu", (unsigned long long)id);
        return MR_EINVAL;
    }
    if (parse_addr(addr, host, sizeof host, port, sizeof port, 0) != 0) {
        mr_errmsg_printf(net->errmsg, "net: bad peer address \"%s\" (want host:port)",
                         addr != NULL ? addr : "");
        return MR_EINVAL;
    }
    p = find_peer(net, id);
    if (p != NULL) {
        if (strcmp(p->addr, addr) == 0) return 0;
        snprintf(p->addr, sizeof p->addr, "%s", addr);
        snprintf(p->host, sizeof p->host, "%s", host);
        snprintf(p->port, sizeof p->port, "%s", port);
        p->fails = 0;
        if (p->conn != NULL) {
            /* conn_maybe_free() reconnects to the new address. */
            p->next_delay = 0;
            p->conn->is_reported = 1;
            conn_close(p->conn, 0, "peer address changed");
        } else {
            uv_timer_start(&p->timer, on_reconnect_timer, 0, 0);
        }
        return 0;
    }
    p = mr_calloc(1, sizeof *p);
    if (p == NULL) {
        mr_errmsg_printf(net->errmsg, "net: out of memory");
        return MR_ENOMEM;
    }
    p->net = net;
    p->id = id;
    snprintf(p->addr, sizeof p->addr, "%s", addr);
    snprintf(p->host, sizeof p->host, "%s", host);
    snprintf(p->port, sizeof p->port, "%s", port);
    mr_queue_init(&p->sendq);
    MR_ASSERT(uv_timer_init(net->loop, &p->timer) == 0);
    p->timer.data = p;
    p->is_timer_open = 1;
    mr_queue_push_tail(&net->peers, &p->link);
    net->pending++;
    /* Dial from the loop: no callback runs inside this call. */
    uv_timer_start(&p->timer, on_reconnect_timer, 0, 0);
    return 0;
}

int mr_net_remove_peer(struct mr_net *net, mr_node_id id)
{
    struct mr_net_peer *p = find_peer(net, id);
    if (p == NULL) return MR_ENOTFOUND;
    peer_remove(p);
    return 0;
}

int mr_net_peer_is_up(const struct mr_net *net, mr_node_id id)
{
    struct mr_net_peer *p = find_peer(net, id);
    return p != NULL && p->conn != NULL && p->conn->state == C_READY && !p->conn->is_closing;
}

int mr_net_peer_stats(const struct mr_net *net, mr_node_id id, struct mr_net_peer_stats *out)
{
    struct mr_net_peer *p = find_peer(net, id);
    if (p == NULL) return MR_ENOTFOUND;
    memset(out, 0, sizeof *out);
    out->is_up = mr_net_peer_is_up(net, id);
    out->queued_bytes = p->q_bytes;
    out->queued_frames = p->q_frames;
    out->sent_frames = p->sent;
    out->dropped_frames = p->dropped;
    out->connects = p->connects;
    return 0;
}

/* The peer `to` if a frame may be accepted for it now, else NULL and *rv. */
static struct mr_net_peer *send_target(struct mr_net *net, mr_node_id to, int *rv)
{
    struct mr_net_peer *p;
    if (net->is_closing) {
        *rv = MR_ESHUTDOWN;
        return NULL;
    }
    p = find_peer(net, to);
    if (p == NULL) {
        *rv = MR_ENOTFOUND;
        return NULL;
    }
    if (p->fails > 0 && !mr_net_peer_is_up(net, to)) {
        p->dropped++;
        *rv = MR_EUNAVAIL;
        return NULL;
    }
    return p;
}

/* Queues or writes an encoded frame; consumes wb in every case. */
static int peer_send(struct mr_net_peer *p, struct mr_net_wbuf *wb)
{
    struct mr_net *net = p->net;
    struct wreq *w;
    if (p->q_frames > 0 && (p->q_frames >= net->opts.queue_max_frames ||
                            p->q_bytes + wb->total > net->opts.queue_max_bytes)) {
        p->dropped++;
        mr_net_wbuf_release(wb);
        return MR_EBUSY;
    }
    w = mr_calloc(1, sizeof *w);
    if (w == NULL) {
        p->dropped++;
        mr_net_wbuf_release(wb);
        return MR_ENOMEM;
    }
    mr_queue_init(&w->batch);
    w->wb = *wb;
    w->peer = p;
    p->q_bytes += wb->total;
    p->q_frames++;
    mr_queue_push_tail(&p->sendq, &w->link);
    if (mr_net_peer_is_up(net, p->id) && !p->is_dirty) {
        p->is_dirty = 1;
        mr_queue_push_tail(&net->dirty, &p->dirty_link);
        uv_prepare_start(&net->flusher, on_flush);
    }
    return 0;
}

int mr_net_send_raft(struct mr_net *net, mr_node_id to, const struct mr_raft_msg *msg)
{
    struct mr_net_wbuf wb;
    char errmsg[MR_ERRMSG_SIZE];
    int rv = 0;
    struct mr_net_peer *p = send_target(net, to, &rv);
    if (p == NULL) return rv;
    rv = mr_net_msg_encode(msg, net->opts.max_frame, &wb, errmsg);
    if (rv != 0) {
        p->dropped++;
        return rv;
    }
    return peer_send(p, &wb);
}

static int send_forward(struct mr_net *net, uint8_t type, mr_node_id to, uint64_t req_id,
                        const void *data, size_t len)
{
    struct mr_net_wbuf wb;
    char errmsg[MR_ERRMSG_SIZE];
    int rv = 0;
    struct mr_net_peer *p = send_target(net, to, &rv);
    if (p == NULL) return rv;
    rv = mr_net_forward_encode(type, req_id, data, len, net->opts.max_frame, &wb, errmsg);
    if (rv != 0) {
        p->dropped++;
        return rv;
    }
    return peer_send(p, &wb);
}

int mr_net_send_forward(struct mr_net *net, mr_node_id to, uint64_t req_id, const void *data,
                        size_t len)
{
    return send_forward(net, MR_NET_FRAME_FORWARD, to, req_id, data, len);
}

int mr_net_send_forward_reply(struct mr_net *net, mr_node_id to, uint64_t req_id,
                              const void *data, size_t len)
{
    return send_forward(net, MR_NET_FRAME_FORWARD_REPLY, to, req_id, data, len);
}

int mr_net_send_snapshot_chunk(struct mr_net *net, mr_node_id to,
                               const struct mr_net_snapshot_chunk *chunk, struct mr_rcbuf *data)
{
    struct mr_net_wbuf wb;
    char errmsg[MR_ERRMSG_SIZE];
    int rv = 0;
    struct mr_net_peer *p = send_target(net, to, &rv);
    if (p == NULL) return rv;
    rv = mr_net_snapshot_chunk_encode(chunk, data, net->opts.max_frame, &wb, errmsg);
    if (rv != 0) {
        p->dropped++;
        return rv;
    }
    return peer_send(p, &wb);
}

void mr_net_close(struct mr_net *net, mr_net_close_cb cb)
{
    MR_ASSERT(!net->is_closing);
    net->is_closing = 1;
    net->close_cb = cb;
    while (!mr_queue_empty(&net->peers)) {
        peer_remove(MR_CONTAINER_OF(net->peers.next, struct mr_net_peer, link));
    }
    {
        struct mr_queue *it;
        MR_QUEUE_FOREACH(it, &net->inbound)
        {
            struct conn *c = MR_CONTAINER_OF(it, struct conn, link);
            conn_close(c, 0, "shutting down");
        }
    }
    if (net->is_listening) {
        net->is_listening = 0;
        uv_close((uv_handle_t *)&net->listener, on_listener_closed);
    }
    free_strings(net);
    /* Sessions hold their own references; the read buffer is not used once
     * every connection is closing. */
    mr_tls_ctx_unref(net->tls_server);
    mr_tls_ctx_unref(net->tls_client);
    net->tls_server = net->tls_client = NULL;
    mr_free(net->tls_rbuf);
    net->tls_rbuf = NULL;
    uv_close((uv_handle_t *)&net->sentinel, on_sentinel_closed);
    uv_close((uv_handle_t *)&net->flusher, on_sentinel_closed);
}

const char *mr_net_errmsg(const struct mr_net *net) { return net->errmsg; }

void mr_net_test_pause_reading(struct mr_net *net, int is_paused)
{
    struct mr_queue *it;
    net->is_paused = is_paused;
    MR_QUEUE_FOREACH(it, &net->inbound)
    {
        struct conn *c = MR_CONTAINER_OF(it, struct conn, link);
        if (c->is_closing || c->state != C_READY) continue;
        if (is_paused) {
            uv_read_stop((uv_stream_t *)&c->tcp);
        } else {
            (void)uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
        }
    }
}
