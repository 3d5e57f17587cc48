/* libFuzzer target: bytes from a client through http-parser, request
 * assembly, limits, pipelining and answer ordering, with no socket, then the
 * node's request-body handling: every request body goes through the node's
 * JSON check (node_json.c, lua-cjson in its capped Lua state, as
 * /v1/command, /v1/query, PUT /v1/kv and POST /v1/members do), the field
 * reader (/v1/members, /v1/leader/transfer) and the state machine's own
 * validator (mr_sm_json_validate, what apply will parse); a PUT /v1/kv/<key>
 * builds the command the node would propose, which must be valid JSON for
 * the state machine whenever the body is.
 *
 * Input: byte 0 picks options (small limits so they trip), byte 1 the feed
 * chunk size, byte 2 how the handler answers; the rest is the client's byte
 * stream. Between chunks, held requests are answered in a data-driven order
 * and pending writes complete. At the end the client disconnects. Checks:
 * no crash or sanitizer report, every request is released, the connection
 * is freed, and what the server wrote parses as a stream of HTTP responses. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http_int.h"
#include "node/node_int.h"
#include "sm/sm.h"

#define CHECK(x)                                                                         \
    do {                                                                                 \
        if (!(x)) __builtin_trap();                                                      \
    } while (0)

struct fz {
    struct mr_http_server srv;
    struct mr_http_conn *c;
    struct mr_http_buf out;
    int is_writing, is_close_pending, is_closed, saw_head;
    unsigned mode;
    struct mr_http_request *held[256];
    unsigned nheld;
    unsigned naborts;
};

static void fio_write(struct mr_http_conn *c, const uv_buf_t *bufs, unsigned n)
{
    struct fz *f = c->io_data;
    unsigned i;
    CHECK(!f->is_writing);
    for (i = 0; i < n; i++) mr_http_buf_append(&f->out, bufs[i].base, bufs[i].len);
    f->is_writing = 1;
}
static void fio_shutdown(struct mr_http_conn *c)
{
    (void)c;
}
static void fio_close(struct mr_http_conn *c)
{
    ((struct fz *)c->io_data)->is_close_pending = 1;
}
static void fio_read(struct mr_http_conn *c, int on)
{
    (void)c;
    (void)on;
}
static void fio_timer(struct mr_http_conn *c, uint64_t d)
{
    (void)c;
    (void)d;
}
static const struct mr_http_io fio = {fio_write, fio_shutdown, fio_close, fio_read,
                                      fio_timer};

static void on_abort(void *data, struct mr_http_request *req)
{
    struct fz *f = data;
    CHECK(mr_http_request_is_aborted(req));
    f->naborts++;
}

static void answer(struct fz *f, struct mr_http_request *req, unsigned how)
{
    const char *ct = mr_http_request_header(req, "content-type");
    switch (how % 4) {
    case 0:
        mr_http_respond(req, 200, "text/plain", NULL, req->body, req->body_len);
        break;
    case 1: /* the path's bytes go through the JSON escaper */
        mr_http_respond_error(req, 404, "not_found", req->path, ct, how % 7);
        break;
    case 2:
        mr_http_respond_error_hdr(req, 405, "method_not_allowed", req->query, NULL, 0,
                                  "Allow: GET, PUT\r\n");
        break;
    default:
        mr_http_respond(req, 204, NULL, NULL, NULL, 0);
        break;
    }
    (void)f;
}

static void route_cb(void *data, struct mr_http_request *req, const char *tail)
{
    CHECK(strlen(tail) <= req->path_len);
    mr_http_respond(req, 200, "text/plain", NULL, tail, strlen(tail));
    (void)data;
}

static const struct mr_http_route routes[] = {
    {MR_HTTP_M(HTTP_GET) | MR_HTTP_M(HTTP_PUT), "/v1/kv/", 1, route_cb},
    {MR_HTTP_M(HTTP_POST), "/v1/command", 0, route_cb},
};

static struct mr_node jnode; /* only json_L is used */

/* What the node does with the body and path before proposing. */
static void node_body_checks(struct mr_http_request *req)
{
    static const char *const names[] = {"id", "raft_addr", "http_addr", "learner"};
    char fields[4][256], err[MR_ERRMSG_SIZE];
    int rv_node, rv_sm;
    unsigned i;
    if (jnode.json_L == NULL) CHECK(mr_node_json_init(&jnode) == 0);
    rv_sm = mr_sm_json_validate(req->body, req->body_len, err);
    CHECK(rv_sm == 0 || rv_sm == MR_EMALFORMED);
    if (req->body_len == 0) return;
    rv_node = mr_node_json_check(&jnode, req->body, req->body_len, err);
    CHECK(rv_node == 0 || rv_node == MR_EMALFORMED);
    /* What passes the node's gate must parse when applied. */
    if (rv_node == 0) CHECK(rv_sm == 0);
    if (mr_node_json_fields(&jnode, req->body, req->body_len, names, fields, 4, err) == 0) {
        for (i = 0; i < 4; i++) CHECK(strlen(fields[i]) < 256);
    }
    if (strncmp(req->path, "/v1/kv/", 7) == 0 && req->path_len - 7 < 512) {
        const char *key = req->path + 7;
        size_t klen = req->path_len - 7;
        struct mr_http_buf b;
        struct mr_http_json j;
        mr_http_buf_init(&b);
        mr_http_json_init(&j, &b);
        mr_http_json_obj_begin(&j);
        mr_http_json_key(&j, "op");
        mr_http_json_str(&j, "put");
        mr_http_json_key(&j, "key");
        mr_http_json_strn(&j, key, klen);
        mr_http_json_key(&j, "value");
        mr_http_json_raw(&j, req->body, req->body_len);
        mr_http_json_obj_end(&j);
        /* The escaper turns any key into valid UTF-8 JSON. */
        if (!b.is_oom && rv_sm == 0) CHECK(mr_sm_json_validate(b.data, b.len, err) == 0);
        mr_http_buf_close(&b);
    }
}

static void handler(void *data, struct mr_http_request *req)
{
    struct fz *f = data;
    const char *p = mr_http_request_param(req, "x");
    unsigned i;
    /* Touch everything the node would read. */
    CHECK(req->path != NULL && req->path[req->path_len] == '\0');
    CHECK(strlen(req->path) == req->path_len);
    CHECK(req->body[req->body_len] == '\0');
    for (i = 0; i < mr_http_request_header_count(req); i++) {
        const char *n, *v;
        mr_http_request_header_at(req, i, &n, &v);
        CHECK(mr_http_request_header(req, n) != NULL);
        (void)v;
    }
    (void)p;
    if (req->method == HTTP_HEAD) f->saw_head = 1;
    node_body_checks(req);
    if ((f->mode & 0x41) == 0x40) {
        mr_http_route(routes, 2, f, req);
        return;
    }
    if ((f->mode & 1) && f->nheld < 256) {
        f->held[f->nheld++] = req;
        mr_http_request_on_abort(req, on_abort, f);
        return;
    }
    answer(f, req, f->mode >> 1);
}

static void pump(struct fz *f)
{
    for (;;) {
        if (f->is_writing) {
            f->is_writing = 0;
            mr_http__conn_write_done(f->c, f->is_close_pending ? UV_ECANCELED : 0);
            continue;
        }
        if (f->is_close_pending && !f->is_closed) {
            f->is_closed = 1;
            mr_http__conn_closed(f->c);
            continue;
        }
        break;
    }
}

/* Answers up to k held requests, newest first or oldest first. */
static void answer_some(struct fz *f, unsigned k, int newest_first)
{
    unsigned i;
    for (i = 0; i < f->nheld && k > 0; i++) {
        unsigned j = newest_first ? f->nheld - 1 - i : i;
        if (f->held[j] != NULL) {
            answer(f, f->held[j], j);
            f->held[j] = NULL;
            k--;
        }
    }
}

static int resp_noop(http_parser *p)
{
    (void)p;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct fz f;
    struct mr_http_options o;
    size_t off, chunk;
    unsigned round = 0, i;
    if (size < 3) return 0;
    memset(&f, 0, sizeof f);
    memset(&o, 0, sizeof o);
    o.max_header_bytes = 64 + (size_t)(data[0] & 0x0f) * 64;
    o.max_body_bytes = 1 + (size_t)(data[0] >> 4) * 16;
    o.max_pipelined = 1 + (data[0] & 3);
    chunk = 1 + data[1] % 64;
    f.mode = data[2];
    mr_http_buf_init(&f.out);
    CHECK(mr_http__server_init_detached(&f.srv, &o, handler, &f) == 0);
    f.c = mr_http__conn_new(&f.srv, &fio);
    CHECK(f.c != NULL);
    f.c->io_data = &f;
    mr_http__conn_start(f.c, 0);
    for (off = 3; off < size && !f.is_closed; off += chunk, round++) {
        size_t n = size - off < chunk ? size - off : chunk;
        mr_http__conn_feed(f.c, (const char *)data + off, n);
        if (round % 3 == 2) answer_some(&f, 1 + round % 3, (f.mode >> 3) & 1);
        if (!f.is_closed) f.srv.fake_now += 1 + (f.mode >> 5);
        if (!f.is_closed && (round & 7) == 7) mr_http__conn_timeout(f.c);
        pump(&f);
    }
    if (!f.is_closed && (f.mode & 2)) {
        answer_some(&f, f.nheld, 0);
        pump(&f);
    }
    if (!f.is_closed) mr_http__conn_read_end(f.c, UV_EOF);
    pump(&f);
    for (i = 0; i < f.nheld; i++) {
        if (f.held[i] != NULL) {
            CHECK(mr_http_request_is_aborted(f.held[i]));
            CHECK(mr_http_respond(f.held[i], 200, NULL, NULL, "", 0) == MR_ECANCELED);
        }
    }
    CHECK(f.srv.stats.connections == 0);
    CHECK(f.srv.stats.outstanding == 0);
    mr_http__server_close_detached(&f.srv);
    /* What went out must be a well-formed response stream (HEAD answers
     * carry a length without a body, so skip those runs). */
    if (!f.saw_head && f.out.len > 0) {
        http_parser rp;
        http_parser_settings s;
        http_parser_settings_init(&s);
        s.on_message_complete = resp_noop;
        http_parser_init(&rp, HTTP_RESPONSE);
        http_parser_execute(&rp, &s, f.out.data, f.out.len);
        CHECK(HTTP_PARSER_ERRNO(&rp) == HPE_OK);
    }
    mr_http_buf_close(&f.out);
    return 0;
}
