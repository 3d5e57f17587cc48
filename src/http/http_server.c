/* http: the listener and the libuv TCP transport of connections, with
 * optional TLS (src/tls) between the socket and the connection core: the
 * core sees plaintext only. */
#include "http/http_int.h"

#include <stdlib.h>
#include <string.h>

uint64_t mr_http__now(const struct mr_http_server *srv)
{
    return srv->loop != NULL ? uv_now(srv->loop) : srv->fake_now;
}

/* ---- socket transport ---------------------------------------------------------- */
static void on_conn_close(uv_handle_t *h)
{
    struct mr_http_conn *c = h->data;
    if (--c->nhandles == 0) {
        mr_tls_free(c->tls);
        c->tls = NULL;
        mr_http__conn_closed(c);
    }
}

/* ---- TLS ----------------------------------------------------------------------- */
/* One write of ciphertext. `is_core` when it carries the core's write (whose
 * completion the core waits for); handshake records and alerts are not. */
struct tls_wreq {
    uv_write_t req;
    struct mr_http_conn *c;
    char *buf; /* owned */
    int is_core;
};

static void on_timer(uv_timer_t *t);

static void on_tls_write(uv_write_t *req, int status)
{
    struct tls_wreq *w = MR_CONTAINER_OF(req, struct tls_wreq, req);
    struct mr_http_conn *c = w->c;
    int is_core = w->is_core;
    mr_free(w->buf);
    mr_free(w);
    if (is_core) mr_http__conn_write_done(c, status);
}

/* Writes what the session has pending; when `is_core`, its completion is the
 * core's write_done (reported from the loop even on failure). Returns 0, or
 * -1 when nothing was pending (the caller decides). */
static int tls_flush(struct mr_http_conn *c, int is_core)
{
    struct tls_wreq *w;
    uv_buf_t out;
    size_t len = 0;
    int rc = UV_ENOMEM;
    if (c->tls == NULL || mr_tls_pending(c->tls) == 0) return -1;
    w = mr_calloc(1, sizeof *w);
    if (w != NULL) {
        w->c = c;
        w->is_core = is_core;
        if (mr_tls_take(c->tls, &w->buf, &len) == 0) {
            out = uv_buf_init(w->buf, (unsigned)len);
            rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &out, 1, on_tls_write);
            if (rc == 0) return 0;
        }
        mr_free(w->buf);
        mr_free(w);
    }
    if (is_core) {
        c->write_err = rc;
        uv_timer_start(&c->timer, on_timer, 0, 0);
    }
    return 0;
}

/* After the session consumed input: send its records; a core write that
 * waited for the handshake goes with them. */
static void tls_after_input(struct mr_http_conn *c)
{
    int is_core = c->is_tls_core_waiting && mr_tls_is_ready(c->tls);
    if (tls_flush(c, is_core) == 0 && is_core) c->is_tls_core_waiting = 0;
}

static void tls_on_read(struct mr_http_conn *c, const char *data, size_t len)
{
    struct mr_http_server *srv = c->srv;
    int rc = mr_tls_feed(c->tls, data, len);
    if (rc != 0) {
        if (mr_tls_is_plaintext(c->tls)) {
            /* Fail closed, but say why in the client's own protocol. */
            mr_tls_free(c->tls);
            c->tls = NULL;
            mr_http__conn_fail(c, 400, "invalid_request",
                               "this port speaks HTTPS: the request came in plaintext "
                               "(use https://)");
            return;
        }
        tls_flush(c, 0); /* the alert */
        mr_http__conn_read_end(c, UV_EPROTO);
        return;
    }
    if (!c->has_tls_id && mr_tls_is_ready(c->tls)) {
        char cn[64];
        c->has_tls_id = mr_tls_peer_names(c->tls, cn, sizeof cn, c->tls_ou, sizeof c->tls_ou);
    }
    /* `data` was copied into the session: the shared buffer is free again. */
    while (c->phase != MR_HTTP_CONN_DEAD) {
        size_t got;
        rc = mr_tls_read(c->tls, srv->rbuf, MR_HTTP_RBUF_SIZE, &got);
        if (rc == MR_ESHUTDOWN) {
            mr_http__conn_read_end(c, 0);
            return;
        }
        if (rc != 0) {
            tls_flush(c, 0);
            mr_http__conn_read_end(c, UV_EPROTO);
            return;
        }
        if (got == 0) break;
        mr_http__conn_feed(c, srv->rbuf, got);
    }
    if (c->phase != MR_HTTP_CONN_DEAD) tls_after_input(c);
}

static void on_write(uv_write_t *req, int status)
{
    struct mr_http_conn *c = req->data;
    mr_http__conn_write_done(c, status);
}

static void on_timer(uv_timer_t *t)
{
    struct mr_http_conn *c = t->data;
    if (c->write_err != 0) {
        int err = c->write_err;
        c->write_err = 0;
        mr_http__conn_write_done(c, err);
        return;
    }
    mr_http__conn_timeout(c);
}

static void io_write(struct mr_http_conn *c, const uv_buf_t *bufs, unsigned n)
{
    int rc;
    if (c->tls != NULL) {
        unsigned i;
        for (i = 0; i < n; i++) {
            rc = mr_tls_write(c->tls, bufs[i].base, bufs[i].len);
            if (rc != 0) {
                c->write_err = UV_EPROTO;
                uv_timer_start(&c->timer, on_timer, 0, 0);
                return;
            }
        }
        /* Before the handshake completes (a 503 to a client over the limit)
         * the session keeps the text: the write completes with the
         * handshake's records. */
        if (!mr_tls_is_ready(c->tls) || tls_flush(c, 1) != 0) c->is_tls_core_waiting = 1;
        return;
    }
    c->wreq.data = c;
    rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, bufs, n, on_write);
    if (rc != 0) {
        /* Report it from the loop, as the contract says, via the timer. */
        c->write_err = rc;
        uv_timer_start(&c->timer, on_timer, 0, 0);
    }
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status; /* EOF from the peer or the linger timer closes */
}

static void io_shutdown(struct mr_http_conn *c)
{
    if (c->tls != NULL && mr_tls_is_ready(c->tls)) {
        mr_tls_shutdown(c->tls);
        tls_flush(c, 0);
    }
    c->sreq.data = c;
    (void)uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown);
}

static void io_close(struct mr_http_conn *c)
{
    if (c->write_err != 0) {
        /* The zero timer that would report it is being closed: report now
         * (the connection is already dead, so this only releases). */
        int err = c->write_err;
        c->write_err = 0;
        mr_http__conn_write_done(c, err);
    }
    if (c->is_tls_core_waiting) {
        c->is_tls_core_waiting = 0;
        mr_http__conn_write_done(c, UV_ECANCELED);
    }
    uv_close((uv_handle_t *)&c->tcp, on_conn_close);
    uv_close((uv_handle_t *)&c->timer, on_conn_close);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct mr_http_conn *c = h->data;
    (void)hint;
    /* One loop thread: every read is consumed (or copied) before the next. */
    *buf = uv_buf_init(c->srv->rbuf, MR_HTTP_RBUF_SIZE);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct mr_http_conn *c = s->data;
    if (nread > 0 && c->tls != NULL) {
        tls_on_read(c, buf->base, (size_t)nread);
    } else if (nread > 0) {
        mr_http__conn_feed(c, buf->base, (size_t)nread);
    } else if (nread < 0) {
        mr_http__conn_read_end(c, (int)nread);
    }
}

static void io_read(struct mr_http_conn *c, int on)
{
    if (on) {
        (void)uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    } else {
        (void)uv_read_stop((uv_stream_t *)&c->tcp);
    }
}

static void io_timer(struct mr_http_conn *c, uint64_t delay_ms)
{
    if (c->write_err != 0) return; /* a zero timer is reporting it */
    if (delay_ms == UINT64_MAX) {
        uv_timer_stop(&c->timer);
    } else {
        uv_timer_start(&c->timer, on_timer, delay_ms, 0);
    }
}

static const struct mr_http_io uv_io = {
    .write = io_write,
    .shutdown = io_shutdown,
    .close = io_close,
    .read = io_read,
    .timer = io_timer,
};

/* ---- server ---------------------------------------------------------------------- */
static int setup(struct mr_http_server *srv, uv_loop_t *loop,
                 const struct mr_http_options *opt, mr_http_handler_cb handler,
                 void *data)
{
    static const double bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                    0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                    1,      2.5,     5,      10};
    static const char *const cls[] = {"code=\"1xx\"", "code=\"2xx\"", "code=\"3xx\"",
                                      "code=\"4xx\"", "code=\"5xx\""};
    struct mr_http_options *o = &srv->opt;
    unsigned i;
    MR_ASSERT(handler != NULL);
    memset(srv, 0, sizeof *srv);
    srv->loop = loop;
    if (opt != NULL) *o = *opt;
    if (o->max_header_bytes == 0) o->max_header_bytes = MR_HTTP_DEFAULT_MAX_HEADER_BYTES;
    if (o->max_body_bytes == 0) o->max_body_bytes = MR_HTTP_DEFAULT_MAX_BODY_BYTES;
    if (o->idle_timeout_ms == 0) o->idle_timeout_ms = MR_HTTP_DEFAULT_IDLE_TIMEOUT_MS;
    if (o->header_timeout_ms == 0)
        o->header_timeout_ms = MR_HTTP_DEFAULT_HEADER_TIMEOUT_MS;
    if (o->body_timeout_ms == 0) o->body_timeout_ms = MR_HTTP_DEFAULT_BODY_TIMEOUT_MS;
    if (o->max_connections == 0) o->max_connections = MR_HTTP_DEFAULT_MAX_CONNECTIONS;
    if (o->max_pipelined == 0) o->max_pipelined = MR_HTTP_DEFAULT_MAX_PIPELINED;
    srv->handler = handler;
    srv->data = data;
    srv->tls = mr_tls_ctx_ref(o->tls);
    o->tls = NULL;
    srv->port = -1;
    mr_queue_init(&srv->conns);
    mr_queue_init(&srv->pool);
    if (loop != NULL) {
        srv->rbuf = mr_malloc(MR_HTTP_RBUF_SIZE);
        if (srv->rbuf == NULL) return MR_ENOMEM;
    }
    if (o->metrics != NULL) {
        struct mr_http_metrics *m = o->metrics;
        for (i = 0; i < 5; i++) {
            srv->m_class[i] =
                mr_http_metrics_counter(m, "moonraft_http_requests_total", cls[i],
                                        "HTTP answers by status class.");
        }
        srv->m_latency =
            mr_http_metrics_histogram(m, "moonraft_http_request_duration_seconds", NULL,
                                      "Time from a complete request to its answer.",
                                      bounds, sizeof bounds / sizeof bounds[0]);
        srv->m_conns = mr_http_metrics_gauge(m, "moonraft_http_connections", NULL,
                                             "Open connections.");
        srv->m_rejected =
            mr_http_metrics_counter(m, "moonraft_http_connections_rejected_total", NULL,
                                    "Connections refused over max_connections.");
        for (i = 0; i < 5; i++) {
            if (srv->m_class[i] == NULL) goto fail;
        }
        if (srv->m_latency == NULL || srv->m_conns == NULL || srv->m_rejected == NULL) {
            goto fail;
        }
    }
    return 0;
fail:
    mr_free(srv->rbuf);
    srv->rbuf = NULL;
    mr_tls_ctx_unref(srv->tls);
    srv->tls = NULL;
    return MR_EINVAL;
}

int mr_http_server_init(struct mr_http_server *srv, uv_loop_t *loop,
                        const struct mr_http_options *opt, mr_http_handler_cb handler,
                        void *data)
{
    int rc;
    MR_ASSERT(loop != NULL);
    rc = setup(srv, loop, opt, handler, data);
    if (rc != 0) return rc;
    rc = uv_tcp_init(loop, &srv->listener);
    if (rc != 0) {
        mr_free(srv->rbuf);
        mr_tls_ctx_unref(srv->tls);
        return rc;
    }
    srv->listener.data = srv;
    return 0;
}

int mr_http__server_init_detached(struct mr_http_server *srv,
                                  const struct mr_http_options *opt,
                                  mr_http_handler_cb handler, void *data)
{
    return setup(srv, NULL, opt, handler, data);
}

void mr_http__server_close_detached(struct mr_http_server *srv)
{
    MR_ASSERT(srv->loop == NULL && mr_queue_empty(&srv->conns));
    mr_http__pool_drain(srv);
    mr_http_buf_close(&srv->scratch);
    mr_tls_ctx_unref(srv->tls);
    srv->tls = NULL;
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct mr_http_server *srv = listener->data;
    struct mr_http_conn *c;
    int len = (int)sizeof(struct sockaddr_storage), rejected;
    if (status < 0 || srv->is_closing) return;
    c = mr_http__conn_new(srv, &uv_io);
    if (c == NULL) return; /* XXX: under OOM the pending connection stays queued */
    uv_tcp_init(srv->loop, &c->tcp);
    uv_timer_init(srv->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->nhandles = 2;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        mr_http__conn_kill(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (srv->tls != NULL && mr_tls_new(srv->tls, NULL, &c->tls) != 0) {
        mr_http__conn_kill(c);
        return;
    }
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->peer, &len) != 0) {
        c->peer.ss_family = AF_UNSPEC;
    }
    srv->stats.accepted++;
    rejected = srv->stats.connections > srv->opt.max_connections;
    if (rejected) {
        srv->stats.rejected++;
        if (srv->m_rejected != NULL) mr_http_metric_add(srv->m_rejected, 1);
    }
    mr_http__conn_start(c, rejected);
}

/* "host:port", "[v6]:port". */
static int parse_addr(const char *addr, struct sockaddr_storage *ss, char *errmsg)
{
    char host[64];
    const char *colon, *h = addr, *port_s;
    size_t hlen;
    char *end;
    long port;
    int rc;
    if (addr[0] == '[') {
        const char *rb = strchr(addr, ']');
        if (rb == NULL || rb[1] != ':') goto bad;
        h = addr + 1;
        hlen = (size_t)(rb - h);
        port_s = rb + 2;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL) goto bad;
        hlen = (size_t)(colon - addr);
        port_s = colon + 1;
    }
    if (hlen == 0 || hlen >= sizeof host || *port_s == '\0') goto bad;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    port = strtol(port_s, &end, 10);
    if (*end != '\0' || port < 0 || port > 65535) goto bad;
    if (addr[0] == '[') {
        rc = uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss);
    } else {
        rc = uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss);
    }
    if (rc != 0) goto bad;
    return 0;
bad:
    if (errmsg != NULL) {
        mr_errmsg_printf(errmsg,
                         "bad listen address \"%s\" (want host:port or [v6]:port)", addr);
    }
    return MR_EINVAL;
}

int mr_http_server_listen(struct mr_http_server *srv, const char *addr, char *errmsg)
{
    struct sockaddr_storage ss;
    int rc, len = (int)sizeof ss;
    MR_ASSERT(!srv->is_listening && !srv->is_closing);
    memset(&ss, 0, sizeof ss);
    rc = parse_addr(addr, &ss, errmsg);
    if (rc != 0) return rc;
    rc = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&ss, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&srv->listener, 4096, on_connection);
    if (rc != 0) {
        if (errmsg != NULL)
            mr_errmsg_printf(errmsg, "listen on %s: %s", addr, uv_strerror(rc));
        return rc;
    }
    srv->is_listening = 1;
    if (uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &len) == 0) {
        srv->port = ss.ss_family == AF_INET6
                        ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                        : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    return 0;
}

void mr_http_server_update(struct mr_http_server *srv, const struct mr_http_options *opt)
{
    struct mr_http_options *o = &srv->opt;
    o->max_header_bytes = opt->max_header_bytes ? opt->max_header_bytes
                                                : MR_HTTP_DEFAULT_MAX_HEADER_BYTES;
    o->max_body_bytes = opt->max_body_bytes ? opt->max_body_bytes : MR_HTTP_DEFAULT_MAX_BODY_BYTES;
    o->idle_timeout_ms = opt->idle_timeout_ms ? opt->idle_timeout_ms
                                              : MR_HTTP_DEFAULT_IDLE_TIMEOUT_MS;
    o->header_timeout_ms = opt->header_timeout_ms ? opt->header_timeout_ms
                                                  : MR_HTTP_DEFAULT_HEADER_TIMEOUT_MS;
    o->body_timeout_ms = opt->body_timeout_ms ? opt->body_timeout_ms
                                              : MR_HTTP_DEFAULT_BODY_TIMEOUT_MS;
    o->max_connections = opt->max_connections ? opt->max_connections
                                              : MR_HTTP_DEFAULT_MAX_CONNECTIONS;
    o->max_pipelined = opt->max_pipelined ? opt->max_pipelined : MR_HTTP_DEFAULT_MAX_PIPELINED;
}

int mr_http_server_set_tls(struct mr_http_server *srv, struct mr_tls_ctx *ctx)
{
    if ((ctx == NULL) != (srv->tls == NULL)) return MR_EINVAL;
    mr_tls_ctx_ref(ctx);
    mr_tls_ctx_unref(srv->tls);
    srv->tls = ctx;
    return 0;
}

int mr_http_server_port(const struct mr_http_server *srv)
{
    return srv->is_listening ? srv->port : -1;
}

void mr_http_server_stats(const struct mr_http_server *srv,
                          struct mr_http_server_stats *out)
{
    *out = srv->stats;
}

static void maybe_done(struct mr_http_server *srv)
{
    mr_http_server_close_cb cb;
    if (!srv->is_closing || !srv->is_listener_closed || !mr_queue_empty(&srv->conns)) {
        return;
    }
    mr_http__pool_drain(srv);
    mr_http_buf_close(&srv->scratch);
    mr_free(srv->rbuf);
    srv->rbuf = NULL;
    mr_tls_ctx_unref(srv->tls);
    srv->tls = NULL;
    cb = srv->close_cb;
    srv->close_cb = NULL;
    srv->is_listener_closed = 0; /* fire once */
    if (cb != NULL) cb(srv);
}

void mr_http__server_conn_freed(struct mr_http_server *srv)
{
    maybe_done(srv);
}

static void on_listener_close(uv_handle_t *h)
{
    struct mr_http_server *srv = h->data;
    srv->is_listener_closed = 1;
    maybe_done(srv);
}

void mr_http_server_close(struct mr_http_server *srv, mr_http_server_close_cb cb)
{
    struct mr_queue *q, *next;
    MR_ASSERT(!srv->is_closing && srv->loop != NULL);
    srv->is_closing = 1;
    srv->close_cb = cb;
    srv->is_listening = 0;
    uv_close((uv_handle_t *)&srv->listener, on_listener_close);
    for (q = srv->conns.next; q != &srv->conns; q = next) {
        next = q->next;
        mr_http__conn_kill(MR_CONTAINER_OF(q, struct mr_http_conn, link));
    }
}
