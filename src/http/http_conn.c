/* http: one connection's byte handling, without sockets.
 *
 * http-parser turns bytes into callbacks; this file assembles requests from
 * them, applies the limits, hands complete requests to the handler, queues
 * the answers in request order and decides when to stop reading and when to
 * close. The transport (a libuv TCP stream in http_server.c, or a test
 * double) is reached only through struct mr_http_io.
 *
 * A connection has one queue of requests in arrival order; each request goes
 * PARSING -> DISPATCHED -> ANSWERED -> WRITING and leaves the queue when its
 * write completes. Answers are written from the head while they are ready, so
 * an early answer to a later request waits for the earlier ones. */
#include "http/http_int.h"

#include <limits.h>
#include <string.h>
#include <strings.h>

static void conn_flush(struct mr_http_conn *c);
static void conn_rearm(struct mr_http_conn *c);
static void conn_die(struct mr_http_conn *c);
static void conn_fail(struct mr_http_conn *c, unsigned status, const char *code,
                      const char *msg);
static void maybe_free(struct mr_http_conn *c);
static int stream_pump(struct mr_http_conn *c, struct mr_http_req *r);

static const char continue_100[] = "HTTP/1.1 100 Continue\r\n\r\n";

/* ---- helpers -------------------------------------------------------------------- */
static int reject(struct mr_http_conn *c, unsigned status, const char *code,
                  const char *msg)
{
    c->reject_status = status;
    c->reject_code = code;
    c->reject_msg = msg;
    return -1;
}

static int hexval(unsigned char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Percent-decodes src into dst (room for len bytes); '+' becomes a space when
 * plus_is_space. Returns the decoded length, or -1 for a bad escape or a
 * decoded NUL (which would silently cut C strings). */
static long pct_decode(char *dst, const char *src, size_t len, int plus_is_space)
{
    size_t i, o = 0;
    for (i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)src[i];
        if (ch == '%') {
            int hi, lo;
            if (i + 2 >= len) return -1;
            hi = hexval((unsigned char)src[i + 1]);
            lo = hexval((unsigned char)src[i + 2]);
            if (hi < 0 || lo < 0) return -1;
            ch = (unsigned char)(hi * 16 + lo);
            if (ch == 0) return -1;
            i += 2;
        } else if (ch == '+' && plus_is_space) {
            ch = ' ';
        } else if (ch == 0) {
            return -1;
        }
        dst[o++] = (char)ch;
    }
    return (long)o;
}

static int field_push(struct mr_http_req *r)
{
    unsigned n = r->nhdrs + r->nparams;
    if (n == r->cap_fields) {
        unsigned cap = r->cap_fields == 0 ? 16 : r->cap_fields * 2;
        struct mr_http_field *f = mr_realloc(r->fields, cap * sizeof *f);
        if (f == NULL) return MR_ENOMEM;
        r->fields = f;
        r->cap_fields = cap;
    }
    return 0;
}

/* Ends the string being collected (url, name or value) in raw. */
static void finish_token(struct mr_http_req *r)
{
    if (r->last_cb == 0) {
        r->url_len = (uint32_t)(r->raw.len - r->url_off);
        mr_http_buf_append(&r->raw, "", 1);
    } else if (r->last_cb == 1) {
        /* A name without a value (empty value). */
        mr_http_buf_append(&r->raw, "", 1);
        r->fields[r->nhdrs - 1].value = (uint32_t)r->raw.len;
        mr_http_buf_append(&r->raw, "", 1);
    } else {
        /* Trailing whitespace is not part of a field value (RFC 9110 5.5). */
        uint32_t start = r->fields[r->nhdrs - 1].value;
        while (r->raw.len > start && (r->raw.data[r->raw.len - 1] == ' ' ||
                                      r->raw.data[r->raw.len - 1] == '\t')) {
            r->raw.len--;
        }
        mr_http_buf_append(&r->raw, "", 1);
    }
}

/* http-parser asserts when paused in an error state, so only pause a parser
 * that is fine. */
static void pause_parser(http_parser *p)
{
    if (HTTP_PARSER_ERRNO(p) == HPE_OK) http_parser_pause(p, 1);
}

static int count_header_bytes(struct mr_http_conn *c, struct mr_http_req *r, size_t n)
{
    r->header_bytes += n;
    if (r->header_bytes > c->srv->opt.max_header_bytes) {
        return reject(c, 431, "too_large", "request header section is too large");
    }
    return 0;
}

/* ---- parser callbacks ---------------------------------------------------------------
 */
static int on_message_begin(http_parser *p)
{
    struct mr_http_conn *c = p->data;
    struct mr_http_req *r = mr_http__req_get(c->srv);
    if (r == NULL) return reject(c, 503, "unavailable", "out of memory");
    r->conn = c;
    r->pub.peer = (const struct sockaddr *)&c->peer;
    r->pub.tls_ou = c->has_tls_id ? c->tls_ou : NULL;
    r->header_bytes = 16; /* request line: method, spaces, version, CRLF */
    c->cur = r;
    mr_queue_push_tail(&c->reqs, &r->link);
    c->nqueue++;
    c->is_in_headers = 1;
    c->t_header_start = mr_http__now(c->srv);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct mr_http_conn *c = p->data;
    struct mr_http_req *r = c->cur;
    if (count_header_bytes(c, r, len) != 0) return -1;
    if (mr_http_buf_append(&r->raw, at, len) != 0) {
        return reject(c, 503, "unavailable", "out of memory");
    }
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct mr_http_conn *c = p->data;
    struct mr_http_req *r = c->cur;
    if (count_header_bytes(c, r, len) != 0) return -1;
    if (!c->is_in_headers) return 0; /* chunked trailer: counted, not kept */
    if (r->last_cb != 1) {
        finish_token(r);
        if (r->nhdrs >= MR_HTTP_MAX_HEADERS) {
            return reject(c, 431, "too_large", "too many header fields");
        }
        if (field_push(r) != 0) return reject(c, 503, "unavailable", "out of memory");
        r->fields[r->nhdrs].name = (uint32_t)r->raw.len;
        r->fields[r->nhdrs].value = 0;
        r->nhdrs++;
        r->last_cb = 1;
        r->header_bytes += 4; /* ": " and CRLF */
    }
    if (mr_http_buf_append(&r->raw, at, len) != 0) {
        return reject(c, 503, "unavailable", "out of memory");
    }
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct mr_http_conn *c = p->data;
    struct mr_http_req *r = c->cur;
    if (count_header_bytes(c, r, len) != 0) return -1;
    if (!c->is_in_headers) return 0;
    if (r->last_cb == 1) {
        mr_http_buf_append(&r->raw, "", 1);
        r->fields[r->nhdrs - 1].value = (uint32_t)r->raw.len;
        r->last_cb = 2;
    }
    if (mr_http_buf_append(&r->raw, at, len) != 0) {
        return reject(c, 503, "unavailable", "out of memory");
    }
    return 0;
}

/* Splits the query into decoded name/value pairs appended to raw. */
static int parse_params(struct mr_http_conn *c, struct mr_http_req *r, size_t q_off,
                        size_t q_len)
{
    size_t i = 0;
    while (i < q_len) {
        const char *q = r->raw.data + q_off; /* raw does not move: reserved */
        const char *seg = q + i, *amp, *eq;
        size_t seg_len, name_len;
        long n;
        struct mr_http_field *f;
        amp = memchr(seg, '&', q_len - i);
        seg_len = amp != NULL ? (size_t)(amp - seg) : q_len - i;
        i += seg_len + 1;
        if (seg_len == 0) continue;
        if (r->nparams >= MR_HTTP_MAX_PARAMS) {
            return reject(c, 400, "invalid_request", "too many query parameters");
        }
        if (field_push(r) != 0) return reject(c, 503, "unavailable", "out of memory");
        f = &r->fields[r->nhdrs + r->nparams];
        eq = memchr(seg, '=', seg_len);
        name_len = eq != NULL ? (size_t)(eq - seg) : seg_len;
        f->name = (uint32_t)r->raw.len;
        n = pct_decode(r->raw.data + r->raw.len, seg, name_len, 1);
        if (n < 0) return reject(c, 400, "invalid_request", "bad escape in query string");
        r->raw.len += (size_t)n;
        r->raw.data[r->raw.len++] = '\0';
        f->value = (uint32_t)r->raw.len;
        if (eq != NULL) {
            n = pct_decode(r->raw.data + r->raw.len, eq + 1, seg_len - name_len - 1, 1);
            if (n < 0) {
                return reject(c, 400, "invalid_request", "bad escape in query string");
            }
            r->raw.len += (size_t)n;
        }
        r->raw.data[r->raw.len++] = '\0';
        r->nparams++;
    }
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct mr_http_conn *c = p->data;
    struct mr_http_req *r = c->cur;
    struct mr_http_server *srv = c->srv;
    struct http_parser_url u;
    const char *url, *path = "/", *expect;
    size_t path_len = 1, q_off = 0, q_len = 0, raw_path_off, path_off;
    long n;

    finish_token(r);
    if (r->raw.is_oom) return reject(c, 503, "unavailable", "out of memory");
    c->is_in_headers = 0;
    c->is_in_body = 1;
    c->t_body_start = mr_http__now(srv);
    if (p->http_major != 1) {
        return reject(c, 400, "invalid_request", "unsupported HTTP version");
    }
    if (p->upgrade || p->method == HTTP_CONNECT) {
        return reject(c, 400, "invalid_request", "protocol upgrade is not supported");
    }
    url = r->raw.data + r->url_off;
    http_parser_url_init(&u);
    if (http_parser_parse_url(url, r->url_len, 0, &u) != 0) {
        return reject(c, 400, "invalid_request", "invalid request target");
    }
    if (u.field_set & (1 << UF_PATH)) {
        path = url + u.field_data[UF_PATH].off;
        path_len = u.field_data[UF_PATH].len;
    }
    if (u.field_set & (1 << UF_QUERY)) {
        q_off = (size_t)u.field_data[UF_QUERY].off;
        q_len = u.field_data[UF_QUERY].len;
    }
    /* Everything below appends at most this much, so raw never moves and the
     * pointers into it stay valid: raw path and decoded path (2p + 2), the
     * query copy (q + 1) and, per non-empty segment of length s, its decoded
     * name and value with two NULs (s + 2 at most; with k segments that sums
     * to q - (k - 1) + 2k <= q + (q + 1) / 2 + 1). Total <= 2p + 2.5q + 5. */
    if (mr_http_buf_reserve(&r->raw, 2 * path_len + 3 * q_len + 8) != 0) {
        return reject(c, 503, "unavailable", "out of memory");
    }
    url = r->raw.data + r->url_off;
    if (u.field_set & (1 << UF_PATH)) path = url + u.field_data[UF_PATH].off;
    raw_path_off = r->raw.len;
    mr_http_buf_append(&r->raw, path, path_len);
    mr_http_buf_append(&r->raw, "", 1);
    path_off = r->raw.len;
    n = pct_decode(r->raw.data + path_off, r->raw.data + raw_path_off, path_len, 0);
    if (n < 0) return reject(c, 400, "invalid_request", "bad escape in path");
    r->raw.len += (size_t)n;
    r->raw.data[r->raw.len++] = '\0';
    r->pub.path_len = (size_t)n;
    if (q_len > 0) {
        size_t off = r->raw.len;
        mr_http_buf_append(&r->raw, url + q_off, q_len);
        mr_http_buf_append(&r->raw, "", 1);
        q_off = off;
        if (parse_params(c, r, q_off, q_len) != 0) return -1;
    }
    MR_ASSERT(!r->raw.is_oom); /* reserved above */
    r->pub.raw_path = r->raw.data + raw_path_off;
    r->pub.path = r->raw.data + path_off;
    r->pub.query = q_len > 0 ? r->raw.data + q_off : "";
    r->pub.query_len = q_len;
    r->pub.method = (enum http_method)p->method;
    r->pub.method_name = http_method_str((enum http_method)p->method);
    r->pub.http_major = p->http_major;
    r->pub.http_minor = p->http_minor;
    r->pub.is_keep_alive = http_should_keep_alive(p) ? 1 : 0;
    r->is_head = p->method == HTTP_HEAD;
    if (!(p->flags & F_CHUNKED) && p->content_length != ULLONG_MAX &&
        p->content_length > srv->opt.max_body_bytes) {
        return reject(c, 413, "too_large", "request body is too large");
    }
    expect = mr_http_request_header(&r->pub, "expect");
    if (expect != NULL && strcasecmp(expect, "100-continue") == 0 && p->http_minor >= 1 &&
        ((p->flags & F_CHUNKED) ||
         (p->content_length != ULLONG_MAX && p->content_length > 0))) {
        r->is_continue = 1;
        conn_flush(c);
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct mr_http_conn *c = p->data;
    struct mr_http_req *r = c->cur;
    if (len > c->srv->opt.max_body_bytes - r->body.len) {
        return reject(c, 413, "too_large", "request body is too large");
    }
    if (mr_http_buf_append(&r->body, at, len) != 0) {
        return reject(c, 503, "unavailable", "out of memory");
    }
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct mr_http_conn *c = p->data;
    struct mr_http_req *r = c->cur;
    struct mr_http_server *srv = c->srv;
    c->cur = NULL;
    c->is_in_headers = 0;
    c->is_in_body = 0;
    c->t_activity = mr_http__now(srv);
    r->pub.body = r->body.data != NULL ? r->body.data : "";
    r->pub.body_len = r->body.len;
    r->state = MR_HTTP_REQ_DISPATCHED;
    r->t_start = uv_hrtime();
    if (!r->pub.is_keep_alive) c->is_read_done = 1;
    c->nrefs++;
    srv->stats.requests++;
    srv->stats.outstanding++;
    srv->handler(srv->data, &r->pub);
    /* Stop here when this connection reads no more, or when it has enough
     * unanswered requests (backpressure): the caller keeps the rest. */
    if (c->phase != MR_HTTP_CONN_OPEN || c->is_read_done) {
        pause_parser(p);
    } else if (c->nqueue >= srv->opt.max_pipelined) {
        c->is_paused = 1;
        pause_parser(p);
    }
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- connection state ------------------------------------------------------------ */
struct mr_http_conn *mr_http__conn_new(struct mr_http_server *srv,
                                       const struct mr_http_io *io)
{
    struct mr_http_conn *c = mr_calloc(1, sizeof *c);
    if (c == NULL) return NULL;
    c->srv = srv;
    c->io = io;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    mr_queue_init(&c->reqs);
    c->phase = MR_HTTP_CONN_OPEN;
    c->peer.ss_family = AF_UNSPEC;
    c->t_activity = mr_http__now(srv);
    mr_queue_push_tail(&srv->conns, &c->link);
    srv->stats.connections++;
    if (srv->m_conns != NULL) mr_http_metric_add(srv->m_conns, 1);
    return c;
}

/* ---- streamed bodies ------------------------------------------------------------ */
static int stream_busy(const struct mr_http_stream *s)
{
    return s->is_pulling || s->nwriting > 0 || s->is_in_pump;
}

/* The streamed answer at the head of the connection, headers in flight or
 * body in progress; NULL if none. */
static struct mr_http_req *conn_stream(struct mr_http_conn *c)
{
    struct mr_http_req *r;
    if (mr_queue_empty(&c->reqs)) return NULL;
    r = MR_CONTAINER_OF(c->reqs.next, struct mr_http_req, link);
    if (r->stream == NULL) return NULL;
    return r->state == MR_HTTP_REQ_STREAMING || r->state == MR_HTTP_REQ_WRITING ? r
                                                                                : NULL;
}

/* Frees the stream and its request (already unlinked from c->reqs), then
 * tells the producer. */
static void stream_end(struct mr_http_conn *c, struct mr_http_req *r, int status)
{
    struct mr_http_stream *s = r->stream;
    mr_http_stream_done_cb cb = s->done_cb;
    void *data = s->data;
    unsigned i;
    MR_ASSERT(!stream_busy(s));
    for (i = 0; i < MR_HTTP_STREAM_AHEAD; i++) mr_free(s->buf[i]);
    mr_free(s);
    r->stream = NULL;
    mr_http__req_put(c->srv, r);
    MR_ASSERT(c->nrefs > 0);
    c->nrefs--;
    cb(data, status);
}

static void stream_unlink_end(struct mr_http_conn *c, struct mr_http_req *r, int status)
{
    mr_queue_remove(&r->link);
    c->nqueue--;
    stream_end(c, r, status);
}

/* Issues pulls while there is room ahead of the client. Returns 1 when the
 * stream ended (canceled during a pull: r is gone). */
static int stream_pump(struct mr_http_conn *c, struct mr_http_req *r)
{
    struct mr_http_stream *s = r->stream;
    s->is_in_pump = 1;
    while (!s->is_canceled && !s->is_pulling && s->count < MR_HTTP_STREAM_AHEAD &&
           s->pulled < s->length) {
        unsigned k = (s->head + s->count) % MR_HTTP_STREAM_AHEAD;
        uint64_t left = s->length - s->pulled;
        if (s->buf[k] == NULL) s->buf[k] = mr_malloc(MR_HTTP_STREAM_CHUNK);
        if (s->buf[k] == NULL) {
            s->is_canceled = 1;
            conn_die(c); /* the stream ends below, once out of the pump */
            break;
        }
        s->cap = left < MR_HTTP_STREAM_CHUNK ? (size_t)left : MR_HTTP_STREAM_CHUNK;
        s->len[k] = 0;
        s->count++;
        s->is_pulling = 1;
        s->pull(s->data, s, s->buf[k], s->cap);
    }
    s->is_in_pump = 0;
    if (s->is_canceled && !stream_busy(s)) {
        stream_unlink_end(c, r, MR_ECANCELED);
        return 1;
    }
    return 0;
}

/* The chunks of the finished write are out. */
static void stream_written(struct mr_http_stream *s)
{
    while (s->nwriting > 0) {
        s->sent += s->len[s->head];
        s->head = (s->head + 1) % MR_HTTP_STREAM_AHEAD;
        s->count--;
        s->nwriting--;
    }
}

void mr_http_stream_ready(struct mr_http_stream *s, size_t n)
{
    struct mr_http_req *r = s->r;
    struct mr_http_conn *c = r->conn;
    MR_ASSERT(s->is_pulling);
    s->is_pulling = 0;
    if (s->is_canceled) {
        s->count--; /* the slot being filled: dropped */
    } else {
        MR_ASSERT(n >= 1 && n <= s->cap);
        s->len[(s->head + s->count - 1) % MR_HTTP_STREAM_AHEAD] = n;
        s->pulled += n;
        c->t_activity = mr_http__now(c->srv);
    }
    if (s->is_in_pump) return; /* the pump goes on */
    if (s->is_canceled) {
        if (!stream_busy(s)) {
            stream_unlink_end(c, r, MR_ECANCELED);
            maybe_free(c);
        }
        return;
    }
    if (stream_pump(c, r)) {
        maybe_free(c);
        return;
    }
    if (c->phase != MR_HTTP_CONN_OPEN) return;
    conn_flush(c);
    conn_rearm(c);
}

void mr_http_stream_fail(struct mr_http_stream *s)
{
    struct mr_http_req *r = s->r;
    struct mr_http_conn *c = r->conn;
    MR_ASSERT(s->is_pulling);
    s->is_pulling = 0;
    s->count--;
    if (!s->is_canceled) {
        /* Close: abort_all (or the pump, or the write in flight) ends it. */
        s->is_canceled = 1;
        conn_die(c);
        return;
    }
    if (!stream_busy(s)) {
        stream_unlink_end(c, r, MR_ECANCELED);
        maybe_free(c);
    }
}

static void maybe_free(struct mr_http_conn *c)
{
    struct mr_http_server *srv = c->srv;
    if (!c->is_closed || c->nrefs > 0) return;
    MR_ASSERT(c->phase == MR_HTTP_CONN_DEAD && !c->is_writing && c->cur == NULL);
    MR_ASSERT(mr_queue_empty(&c->reqs));
    mr_queue_remove(&c->link);
    mr_free(c->stash);
    mr_free(c);
    srv->stats.connections--;
    if (srv->m_conns != NULL) mr_http_metric_add(srv->m_conns, -1);
    mr_http__server_conn_freed(srv);
}

/* Drops every queued request: unanswered ones are marked aborted (their
 * hooks fire), answered ones are released. Those inside the current write
 * stay until it completes. */
static void abort_all(struct mr_http_conn *c)
{
    struct mr_http_server *srv = c->srv;
    struct mr_queue aborted, ended, *q, *next;
    mr_queue_init(&aborted);
    mr_queue_init(&ended);
    c->cur = NULL;
    c->is_in_headers = 0;
    c->is_in_body = 0;
    for (q = c->reqs.next; q != &c->reqs; q = next) {
        struct mr_http_req *r = MR_CONTAINER_OF(q, struct mr_http_req, link);
        next = q->next;
        if (r->state == MR_HTTP_REQ_WRITING) continue;
        if (r->stream != NULL) {
            /* A pull or write in progress ends it later. */
            r->stream->is_canceled = 1;
            if (stream_busy(r->stream)) continue;
        }
        mr_queue_remove(q);
        c->nqueue--;
        if (r->state == MR_HTTP_REQ_DISPATCHED) {
            r->is_aborted = 1;
            mr_queue_push_tail(&aborted, q);
        } else if (r->stream != NULL) {
            mr_queue_push_tail(&ended, q);
        } else {
            mr_http__req_put(srv, r);
        }
    }
    while (!mr_queue_empty(&ended)) {
        struct mr_http_req *r = MR_CONTAINER_OF(ended.next, struct mr_http_req, link);
        mr_queue_remove(&r->link);
        stream_end(c, r, MR_ECANCELED);
    }
    /* The hooks may answer any of these (the answer unlinks it), so take
     * them one at a time from the head. */
    while (!mr_queue_empty(&aborted)) {
        struct mr_http_req *r = MR_CONTAINER_OF(aborted.next, struct mr_http_req, link);
        mr_http_abort_cb cb = r->abort_cb;
        mr_queue_remove(&r->link);
        r->abort_cb = NULL;
        if (cb != NULL) cb(r->abort_data, &r->pub);
    }
}

static void conn_die(struct mr_http_conn *c)
{
    if (c->phase == MR_HTTP_CONN_DEAD) return;
    c->phase = MR_HTTP_CONN_DEAD;
    pause_parser(&c->parser);
    c->io->timer(c, UINT64_MAX);
    c->io->close(c);
    abort_all(c);
}

void mr_http__conn_kill(struct mr_http_conn *c)
{
    conn_die(c);
}

void mr_http__conn_fail(struct mr_http_conn *c, unsigned status, const char *code,
                        const char *msg)
{
    conn_fail(c, status, code, msg);
    conn_rearm(c);
}

/* Every answer is out and nothing more will be read: send FIN, drain. */
static void conn_finish(struct mr_http_conn *c)
{
    if (c->phase != MR_HTTP_CONN_OPEN) return;
    abort_all(c);
    c->phase = MR_HTTP_CONN_LINGER;
    c->t_linger = mr_http__now(c->srv) + MR_HTTP_LINGER_MS;
    c->io->shutdown(c);
    if (c->is_paused) {
        c->is_paused = 0;
        c->io->read(c, 1);
    }
    conn_rearm(c);
}

/* Answers with a server-made error and closes after it (and after the
 * answers before it). Stops reading requests. */
static void conn_fail(struct mr_http_conn *c, unsigned status, const char *code,
                      const char *msg)
{
    struct mr_http_server *srv = c->srv;
    struct mr_http_req *r;
    struct mr_http_buf *b = &srv->scratch; /* one loop thread: reusable */
    if (c->phase != MR_HTTP_CONN_OPEN || c->is_read_done) return;
    c->is_read_done = 1;
    c->is_in_headers = 0;
    c->is_in_body = 0;
    srv->stats.errors++;
    mr_http__record(srv, status, 0);
    if (c->cur != NULL) {
        r = c->cur;
        c->cur = NULL;
        mr_queue_remove(&r->link);
        c->nqueue--;
        /* Reuse it for the error: it has the HTTP version we need. */
        mr_http_buf_reset(&r->raw);
        r->nhdrs = 0;
        r->nparams = 0;
        r->is_continue = 0;
    } else {
        r = mr_http__req_get(srv);
        if (r == NULL) {
            conn_flush(c); /* closes once the earlier answers are out */
            return;
        }
        r->conn = c;
    }
    r->pub.is_keep_alive = 0;
    r->is_head = 0;
    r->is_close = 1;
    mr_http_buf_reset(b);
    if (mr_http_error_body(b, code, msg, NULL) != 0 ||
        mr_http__build_response(r, status, "application/json", NULL, b->data, b->len) !=
            0) {
        mr_http_buf_reset(&r->out);
    }
    r->state = MR_HTTP_REQ_ANSWERED;
    mr_queue_push_tail(&c->reqs, &r->link);
    c->nqueue++;
    conn_flush(c);
}

/* Parses; returns how many bytes were consumed (all of them unless the
 * parser paused for backpressure). */
static size_t conn_parse(struct mr_http_conn *c, const char *data, size_t len)
{
    size_t n;
    enum http_errno err;
    c->reject_status = 0;
    n = http_parser_execute(&c->parser, &settings, data, len);
    err = HTTP_PARSER_ERRNO(&c->parser);
    if (c->phase != MR_HTTP_CONN_OPEN || c->is_read_done) return len;
    if (err == HPE_PAUSED) {
        MR_ASSERT(c->is_paused);
        return n;
    }
    if (err != HPE_OK) {
        if (c->reject_status != 0) {
            conn_fail(c, c->reject_status, c->reject_code, c->reject_msg);
        } else if (err == HPE_HEADER_OVERFLOW) {
            conn_fail(c, 431, "too_large", "request header section is too large");
        } else {
            conn_fail(c, 400, "invalid_request", http_errno_description(err));
        }
        return len;
    }
    return n;
}

static int stash_keep(struct mr_http_conn *c, const char *data, size_t len)
{
    size_t live = c->stash_len - c->stash_off;
    if (c->stash_off > 0) {
        memmove(c->stash, c->stash + c->stash_off, live);
        c->stash_off = 0;
        c->stash_len = live;
    }
    if (live + len > c->stash_cap) {
        size_t cap = live + len;
        char *p = mr_realloc(c->stash, cap);
        if (p == NULL) return MR_ENOMEM;
        c->stash = p;
        c->stash_cap = cap;
    }
    memcpy(c->stash + c->stash_len, data, len);
    c->stash_len += len;
    return 0;
}

void mr_http__conn_feed(struct mr_http_conn *c, const char *data, size_t len)
{
    size_t n;
    if (c->phase != MR_HTTP_CONN_OPEN || c->is_read_done || len == 0) return;
    c->t_activity = mr_http__now(c->srv);
    if (c->is_paused) {
        if (stash_keep(c, data, len) != 0) conn_die(c);
        return;
    }
    n = conn_parse(c, data, len);
    if (c->phase != MR_HTTP_CONN_OPEN) return;
    if (n < len && c->is_paused) {
        if (stash_keep(c, data + n, len - n) != 0) {
            conn_die(c);
            return;
        }
        c->io->read(c, 0);
    }
    conn_rearm(c);
}

static void conn_resume(struct mr_http_conn *c)
{
    c->is_paused = 0;
    MR_ASSERT(HTTP_PARSER_ERRNO(&c->parser) == HPE_PAUSED);
    http_parser_pause(&c->parser, 0);
    if (c->stash_len > c->stash_off) {
        size_t n = conn_parse(c, c->stash + c->stash_off, c->stash_len - c->stash_off);
        if (c->phase != MR_HTTP_CONN_OPEN) return;
        c->stash_off += n;
        if (c->stash_off == c->stash_len) c->stash_off = c->stash_len = 0;
    }
    if (!c->is_paused && !c->is_read_done) c->io->read(c, 1);
}

void mr_http__conn_read_end(struct mr_http_conn *c, int status)
{
    (void)status;
    /* A client that goes away (or half-closes) gets nothing more: pending
     * requests are aborted at once so their hooks can release work. */
    conn_die(c);
}

/* Pops the requests of the finished write; moves a streamed body on. */
static void conn_written(struct mr_http_conn *c, int status)
{
    struct mr_http_server *srv = c->srv;
    struct mr_http_req *sr = conn_stream(c);
    int is_close = 0;
    if (sr != NULL && sr->state == MR_HTTP_REQ_STREAMING) {
        stream_written(sr->stream);
    } else {
        sr = NULL;
    }
    while (sr == NULL && !mr_queue_empty(&c->reqs)) {
        struct mr_http_req *r = MR_CONTAINER_OF(c->reqs.next, struct mr_http_req, link);
        if (r->state != MR_HTTP_REQ_WRITING) break;
        if (r->stream != NULL) {
            /* Its headers are out: the body follows. */
            r->state = MR_HTTP_REQ_STREAMING;
            sr = r;
            break;
        }
        mr_queue_remove(&r->link);
        c->nqueue--;
        is_close |= r->is_close;
        mr_http__req_put(srv, r);
    }
    if (sr != NULL) {
        struct mr_http_stream *s = sr->stream;
        if (c->phase != MR_HTTP_CONN_OPEN || status < 0) s->is_canceled = 1;
        if (s->is_canceled) {
            if (!stream_busy(s)) stream_unlink_end(c, sr, MR_ECANCELED);
            sr = NULL;
        } else if (s->sent == s->length) {
            is_close |= sr->is_close;
            stream_unlink_end(c, sr, 0);
            sr = NULL;
        }
    }
    if (c->phase != MR_HTTP_CONN_OPEN) {
        maybe_free(c);
        return;
    }
    if (status < 0) {
        conn_die(c);
        return;
    }
    c->t_activity = mr_http__now(srv);
    if (is_close) {
        conn_finish(c);
        return;
    }
    if (sr != NULL) {
        if (stream_pump(c, sr)) return;
        if (c->phase != MR_HTTP_CONN_OPEN) return;
    }
    if (c->is_paused && c->nqueue < srv->opt.max_pipelined && !c->is_read_done) {
        conn_resume(c);
        if (c->phase != MR_HTTP_CONN_OPEN) return;
    }
    conn_flush(c);
    conn_rearm(c);
}

void mr_http__conn_write_done(struct mr_http_conn *c, int status)
{
    MR_ASSERT(c->is_writing);
    c->is_writing = 0;
    conn_written(c, status);
}

static void conn_flush(struct mr_http_conn *c)
{
    struct mr_queue *q;
    unsigned n = 0, nw = 0;
    if (c->phase != MR_HTTP_CONN_OPEN || c->is_writing) return;
    MR_QUEUE_FOREACH(q, &c->reqs)
    {
        struct mr_http_req *r = MR_CONTAINER_OF(q, struct mr_http_req, link);
        if (r->state == MR_HTTP_REQ_STREAMING) {
            /* The filled chunks, in order (the one being filled is last). */
            struct mr_http_stream *s = r->stream;
            unsigned i, ready = s->count - (s->is_pulling ? 1u : 0u);
            MR_ASSERT(s->nwriting == 0 && n == 0);
            for (i = 0; i < ready; i++) {
                unsigned k = (s->head + i) % MR_HTTP_STREAM_AHEAD;
                c->wbufs[n++] = uv_buf_init(s->buf[k], (unsigned)s->len[k]);
            }
            s->nwriting = ready;
            break;
        }
        if (r->state == MR_HTTP_REQ_ANSWERED) {
            if (r->out.len > 0) {
                if (n == MR_HTTP_WBUFS) break;
                c->wbufs[n++] = uv_buf_init(r->out.data, (unsigned)r->out.len);
            }
            r->state = MR_HTTP_REQ_WRITING;
            nw++;
            if (r->is_close || r->stream != NULL) break;
        } else {
            if (r->is_continue && !r->is_continue_sent &&
                r->state == MR_HTTP_REQ_PARSING && n < MR_HTTP_WBUFS) {
                c->wbufs[n++] =
                    uv_buf_init((char *)continue_100, sizeof continue_100 - 1);
                r->is_continue_sent = 1;
            }
            break;
        }
    }
    if (n > 0) {
        c->is_writing = 1;
        c->io->write(c, c->wbufs, n);
    } else if (nw > 0) {
        /* Only empty answers (out of memory): nothing to send, close. */
        conn_written(c, 0);
    } else if (c->is_read_done && c->nqueue == 0) {
        conn_finish(c);
    }
}

static void conn_rearm(struct mr_http_conn *c)
{
    const struct mr_http_options *o = &c->srv->opt;
    uint64_t now = mr_http__now(c->srv), deadline = UINT64_MAX;
    if (c->phase == MR_HTTP_CONN_DEAD) return;
    if (c->phase == MR_HTTP_CONN_LINGER) {
        deadline = c->t_linger;
    } else if (c->is_in_headers) {
        deadline = c->t_header_start + o->header_timeout_ms;
    } else if (c->is_in_body) {
        deadline = c->t_body_start + o->body_timeout_ms;
    } else if (c->nrefs == 0 || conn_stream(c) != NULL) {
        /* Idle between requests, a client that does not read answers, or a
         * streamed body that does not move. */
        deadline = c->t_activity + o->idle_timeout_ms;
    }
    c->io->timer(c, deadline == UINT64_MAX ? UINT64_MAX
                                           : (deadline > now ? deadline - now : 0));
}

void mr_http__conn_timeout(struct mr_http_conn *c)
{
    const struct mr_http_options *o = &c->srv->opt;
    uint64_t now = mr_http__now(c->srv);
    if (c->phase == MR_HTTP_CONN_DEAD) return;
    if (c->phase == MR_HTTP_CONN_LINGER) {
        if (now >= c->t_linger) {
            conn_die(c);
            return;
        }
    } else if (c->is_in_headers) {
        if (now >= c->t_header_start + o->header_timeout_ms) {
            conn_fail(c, 408, "timeout", "request headers not received in time");
        }
    } else if (c->is_in_body) {
        if (now >= c->t_body_start + o->body_timeout_ms) {
            conn_fail(c, 408, "timeout", "request body not received in time");
        }
    } else if ((c->nrefs == 0 || conn_stream(c) != NULL) &&
               now >= c->t_activity + o->idle_timeout_ms) {
        conn_die(c);
        return;
    }
    conn_rearm(c);
}

void mr_http__conn_start(struct mr_http_conn *c, int rejected)
{
    c->io->read(c, 1);
    if (rejected) {
        c->is_rejected = 1;
        conn_fail(c, 503, "unavailable", "too many connections");
    }
    conn_rearm(c);
}

void mr_http__conn_closed(struct mr_http_conn *c)
{
    MR_ASSERT(c->phase == MR_HTTP_CONN_DEAD);
    c->is_closed = 1;
    maybe_free(c);
}

/* ---- answering ----------------------------------------------------------------------
 */
int mr_http_respond(struct mr_http_request *req, unsigned status,
                    const char *content_type, const char *extra_headers, const void *body,
                    size_t len)
{
    struct mr_http_req *r = (struct mr_http_req *)(void *)req;
    struct mr_http_conn *c = r->conn;
    struct mr_http_server *srv = c->srv;
    size_t elen;
    MR_ASSERT(r->state == MR_HTTP_REQ_DISPATCHED);
    MR_ASSERT(status >= 200 && status <= 599);
    elen = extra_headers != NULL ? strlen(extra_headers) : 0;
    MR_ASSERT(elen == 0 || (elen >= 2 && extra_headers[elen - 2] == '\r' &&
                            extra_headers[elen - 1] == '\n'));
    MR_ASSERT(c->nrefs > 0);
    c->nrefs--;
    srv->stats.outstanding--;
    mr_http__record(srv, status, r->t_start);
    r->abort_cb = NULL;
    if (r->is_aborted) {
        mr_queue_remove(&r->link); /* it may sit in an abort list */
        mr_http__req_put(srv, r);
        maybe_free(c);
        return MR_ECANCELED;
    }
    r->state = MR_HTTP_REQ_ANSWERED;
    if (mr_http__build_response(r, status, content_type, extra_headers, body, len) != 0) {
        mr_http_buf_reset(&r->out);
        r->is_close = 1;
        c->is_read_done = 1;
        conn_flush(c);
        conn_rearm(c);
        return MR_ENOMEM;
    }
    conn_flush(c);
    conn_rearm(c);
    return 0;
}

int mr_http_respond_stream(struct mr_http_request *req, unsigned status,
                           const char *content_type, const char *extra_headers,
                           uint64_t length, mr_http_stream_pull_cb pull,
                           mr_http_stream_done_cb done_cb, void *data)
{
    struct mr_http_req *r = (struct mr_http_req *)(void *)req;
    struct mr_http_conn *c = r->conn;
    struct mr_http_server *srv = c->srv;
    struct mr_http_stream *s;
    size_t elen;
    MR_ASSERT(r->state == MR_HTTP_REQ_DISPATCHED);
    MR_ASSERT(status >= 200 && status <= 599 && status != 204 && status != 304);
    MR_ASSERT(pull != NULL && done_cb != NULL);
    elen = extra_headers != NULL ? strlen(extra_headers) : 0;
    MR_ASSERT(elen == 0 || (elen >= 2 && extra_headers[elen - 2] == '\r' &&
                            extra_headers[elen - 1] == '\n'));
    MR_ASSERT(c->nrefs > 0);
    c->nrefs--;
    srv->stats.outstanding--;
    mr_http__record(srv, status, r->t_start);
    r->abort_cb = NULL;
    if (r->is_aborted) {
        mr_queue_remove(&r->link);
        mr_http__req_put(srv, r);
        maybe_free(c);
        return MR_ECANCELED;
    }
    r->state = MR_HTTP_REQ_ANSWERED;
    s = mr_calloc(1, sizeof *s);
    if (s == NULL ||
        mr_http__build_head(r, status, content_type, extra_headers, length) != 0) {
        mr_free(s);
        mr_http_buf_reset(&r->out);
        r->is_close = 1;
        c->is_read_done = 1;
        conn_flush(c);
        conn_rearm(c);
        return MR_ENOMEM;
    }
    s->r = r;
    s->pull = pull;
    s->done_cb = done_cb;
    s->data = data;
    s->length = r->is_head ? 0 : length;
    r->stream = s;
    c->nrefs++; /* the stream holds the connection until done_cb */
    conn_flush(c);
    conn_rearm(c);
    return 0;
}
