/* http: request objects (pool, accessors) and answer formatting. */
#include "http/http_int.h"

#include <string.h>
#include <strings.h>
#include <time.h>

/* ---- pool -------------------------------------------------------------------- */
static void req_free(struct mr_http_req *r)
{
    mr_http_buf_close(&r->raw);
    mr_http_buf_close(&r->body);
    mr_http_buf_close(&r->out);
    mr_free(r->fields);
    mr_free(r);
}

struct mr_http_req *mr_http__req_get(struct mr_http_server *srv)
{
    struct mr_http_req *r;
    if (!mr_queue_empty(&srv->pool)) {
        struct mr_queue *q = srv->pool.next;
        mr_queue_remove(q);
        srv->pool_len--;
        r = MR_CONTAINER_OF(q, struct mr_http_req, link);
    } else {
        r = mr_calloc(1, sizeof *r);
        if (r == NULL) return NULL;
        mr_http_buf_init(&r->raw);
        mr_http_buf_init(&r->body);
        mr_http_buf_init(&r->out);
        mr_queue_init(&r->link);
    }
    memset(&r->pub, 0, sizeof r->pub);
    mr_http_buf_reset(&r->raw);
    mr_http_buf_reset(&r->body);
    mr_http_buf_reset(&r->out);
    r->conn = NULL;
    r->nhdrs = 0;
    r->nparams = 0;
    r->url_off = 0;
    r->url_len = 0;
    r->header_bytes = 0;
    r->last_cb = 0;
    r->state = MR_HTTP_REQ_PARSING;
    r->is_close = 0;
    r->is_aborted = 0;
    r->is_continue = 0;
    r->is_continue_sent = 0;
    r->is_head = 0;
    r->t_start = 0;
    r->abort_cb = NULL;
    r->abort_data = NULL;
    r->stream = NULL;
    return r;
}

void mr_http__req_put(struct mr_http_server *srv, struct mr_http_req *r)
{
    if (srv->pool_len >= MR_HTTP_POOL_MAX) {
        req_free(r);
        return;
    }
    /* Keep the common small buffers, drop the rare huge ones. */
    if (r->raw.cap > MR_HTTP_POOL_BUF_MAX) mr_http_buf_close(&r->raw);
    if (r->body.cap > MR_HTTP_POOL_BUF_MAX) mr_http_buf_close(&r->body);
    if (r->out.cap > MR_HTTP_POOL_BUF_MAX) mr_http_buf_close(&r->out);
    mr_queue_push_tail(&srv->pool, &r->link);
    srv->pool_len++;
}

void mr_http__pool_drain(struct mr_http_server *srv)
{
    while (!mr_queue_empty(&srv->pool)) {
        struct mr_queue *q = srv->pool.next;
        mr_queue_remove(q);
        req_free(MR_CONTAINER_OF(q, struct mr_http_req, link));
    }
    srv->pool_len = 0;
}

/* ---- accessors ----------------------------------------------------------------- */
static const struct mr_http_req *cpriv(const struct mr_http_request *req)
{
    return (const struct mr_http_req *)(const void *)req;
}

const char *mr_http_request_header(const struct mr_http_request *req, const char *name)
{
    const struct mr_http_req *r = cpriv(req);
    unsigned i;
    for (i = 0; i < r->nhdrs; i++) {
        if (strcasecmp(r->raw.data + r->fields[i].name, name) == 0) {
            return r->raw.data + r->fields[i].value;
        }
    }
    return NULL;
}

unsigned mr_http_request_header_count(const struct mr_http_request *req)
{
    return cpriv(req)->nhdrs;
}

void mr_http_request_header_at(const struct mr_http_request *req, unsigned i,
                               const char **name, const char **value)
{
    const struct mr_http_req *r = cpriv(req);
    MR_ASSERT(i < r->nhdrs);
    *name = r->raw.data + r->fields[i].name;
    *value = r->raw.data + r->fields[i].value;
}

const char *mr_http_request_param(const struct mr_http_request *req, const char *name)
{
    const struct mr_http_req *r = cpriv(req);
    unsigned i;
    for (i = r->nhdrs; i < r->nhdrs + r->nparams; i++) {
        if (strcmp(r->raw.data + r->fields[i].name, name) == 0) {
            return r->raw.data + r->fields[i].value;
        }
    }
    return NULL;
}

int mr_http_request_is_aborted(const struct mr_http_request *req)
{
    return cpriv(req)->is_aborted;
}

void mr_http_request_on_abort(struct mr_http_request *req, mr_http_abort_cb cb,
                              void *data)
{
    struct mr_http_req *r = (struct mr_http_req *)(void *)req;
    MR_ASSERT(r->state == MR_HTTP_REQ_DISPATCHED);
    r->abort_cb = cb;
    r->abort_data = data;
}

/* ---- answers ---------------------------------------------------------------------- */
static void update_date(struct mr_http_server *srv)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t t = time(NULL);
    struct tm tm;
    if ((long)t == srv->date_sec && srv->date[0] != '\0') return;
    srv->date_sec = (long)t;
    gmtime_r(&t, &tm);
    /* Not strftime: the day and month names must not follow the locale. */
    snprintf(srv->date, sizeof srv->date, "Date: %s, %02d %s %04d %02d:%02d:%02d GMT\r\n",
             days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900,
             tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static const char *reason(unsigned status)
{
    const char *s = http_status_str((enum http_status)status);
    if (s == NULL || s[0] == '<') return "Unknown";
    return s;
}

int mr_http__build_head(struct mr_http_req *r, unsigned status, const char *ct,
                        const char *extra, uint64_t len)
{
    struct mr_http_buf *b = &r->out;
    struct mr_http_server *srv = r->conn->srv;
    update_date(srv);
    mr_http_buf_reset(b);
    mr_http_buf_printf(b, "HTTP/1.1 %u %s\r\n", status, reason(status));
    mr_http_buf_puts(b, srv->date);
    if (ct != NULL) {
        mr_http_buf_puts(b, "Content-Type: ");
        mr_http_buf_puts(b, ct);
        mr_http_buf_puts(b, "\r\n");
    }
    if (status != 204)
        mr_http_buf_printf(b, "Content-Length: %llu\r\n", (unsigned long long)len);
    if (r->is_close || !r->pub.is_keep_alive) {
        r->is_close = 1;
        mr_http_buf_puts(b, "Connection: close\r\n");
    } else if (r->pub.http_major == 1 && r->pub.http_minor == 0) {
        mr_http_buf_puts(b, "Connection: keep-alive\r\n");
    }
    if (extra != NULL) mr_http_buf_puts(b, extra);
    mr_http_buf_puts(b, "\r\n");
    return b->is_oom ? MR_ENOMEM : 0;
}

int mr_http__build_response(struct mr_http_req *r, unsigned status, const char *ct,
                            const char *extra, const void *body, size_t len)
{
    struct mr_http_buf *b = &r->out;
    int has_body = !r->is_head && status != 204 && status != 304;
    mr_http_buf_reset(b);
    mr_http_buf_reserve(b,
                        160 + (extra != NULL ? strlen(extra) : 0) + (has_body ? len : 0));
    mr_http__build_head(r, status, ct, extra, len);
    if (has_body) mr_http_buf_append(b, body, len);
    return b->is_oom ? MR_ENOMEM : 0;
}

void mr_http__record(struct mr_http_server *srv, unsigned status, uint64_t t_start)
{
    unsigned cls = status / 100;
    if (srv->m_latency == NULL) return;
    if (cls < 1) cls = 1;
    if (cls > 5) cls = 5;
    mr_http_metric_add(srv->m_class[cls - 1], 1);
    if (t_start != 0) {
        mr_http_metric_observe(srv->m_latency, (double)(uv_hrtime() - t_start) / 1e9);
    }
}

int mr_http_respond_json(struct mr_http_request *req, unsigned status, const char *json,
                         size_t len)
{
    return mr_http_respond(req, status, "application/json", NULL, json, len);
}

int mr_http_respond_error(struct mr_http_request *req, unsigned status, const char *code,
                          const char *message, const char *leader, unsigned retry_after_s)
{
    return mr_http_respond_error_hdr(req, status, code, message, leader, retry_after_s,
                                     NULL);
}

int mr_http_respond_error_hdr(struct mr_http_request *req, unsigned status,
                              const char *code, const char *message, const char *leader,
                              unsigned retry_after_s, const char *extra_headers)
{
    struct mr_http_req *r = (struct mr_http_req *)(void *)req;
    struct mr_http_buf *b = &r->conn->srv->scratch; /* one loop thread: reusable */
    char hdr[256];
    const char *extra = extra_headers;
    if (retry_after_s > 0 &&
        (extra_headers == NULL || strlen(extra_headers) + 40 < sizeof hdr)) {
        snprintf(hdr, sizeof hdr, "Retry-After: %u\r\n%s", retry_after_s,
                 extra_headers != NULL ? extra_headers : "");
        extra = hdr;
    }
    mr_http_buf_reset(b);
    if (mr_http_error_body(b, code, message, leader) != 0) mr_http_buf_reset(b);
    return mr_http_respond(req, status, "application/json", extra, b->data, b->len);
}
