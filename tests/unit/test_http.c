/* Unit tests for src/http: JSON writer, metrics text, the connection core
 * driven without sockets (a fake transport), and the server on real loopback
 * sockets with a client thread. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include "http/http_int.h"

/* ==== JSON ================================================================= */
static char *escape(const char *s, size_t len)
{
    static char out[1024];
    struct mr_http_buf b;
    mr_http_buf_init(&b);
    assert_int_equal(mr_http_json_escape(&b, s, len), 0);
    assert_true(b.len < sizeof out);
    memcpy(out, b.data, b.len + 1);
    mr_http_buf_close(&b);
    return out;
}

static void test_json_escape_quotes_backslash_and_control_chars(void **state)
{
    (void)state;
    assert_string_equal(escape("plain", 5), "\"plain\"");
    assert_string_equal(escape("a\"b\\c/d", 7), "\"a\\\"b\\\\c/d\"");
    assert_string_equal(escape("\n\r\t\b\f", 5), "\"\\n\\r\\t\\b\\f\"");
    assert_string_equal(escape("\x01\x1f\x7f", 3), "\"\\u0001\\u001f\x7f\"");
    assert_string_equal(escape("a\0b", 3), "\"a\\u0000b\"");
    assert_string_equal(escape("", 0), "\"\"");
}

static void test_json_escape_keeps_valid_utf8_and_replaces_invalid(void **state)
{
    (void)state;
    /* Valid 2-, 3- and 4-byte sequences pass through. */
    assert_string_equal(escape("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9),
                        "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");
    /* U+2028 and U+2029 are escaped for JavaScript. */
    assert_string_equal(escape("\xe2\x80\xa8\xe2\x80\xa9", 6), "\"\\u2028\\u2029\"");
    /* Stray continuation byte, invalid lead bytes. */
    assert_string_equal(escape("a\x80z", 3), "\"a\xef\xbf\xbdz\"");
    assert_string_equal(escape("\xff\xc0\xc1", 3),
                        "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
    /* Overlong (E0 80 80), surrogate (ED A0 80), above U+10FFFF (F4 90 ..). */
    assert_string_equal(escape("\xe0\x80\x80", 3),
                        "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
    assert_string_equal(escape("\xed\xa0\x80", 3),
                        "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
    assert_string_equal(escape("\xf4\x90\x80\x80", 4),
                        "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
    /* Truncated sequences: one replacement per maximal subpart. */
    assert_string_equal(escape("\xe2\x82", 2), "\"\xef\xbf\xbd\"");
    assert_string_equal(escape("\xf0\x9f\x98x", 4), "\"\xef\xbf\xbdx\"");
}

static void test_json_writer_places_commas_and_colons(void **state)
{
    struct mr_http_buf b;
    struct mr_http_json j;
    (void)state;
    mr_http_buf_init(&b);
    mr_http_json_init(&j, &b);
    mr_http_json_obj_begin(&j);
    mr_http_json_key(&j, "a");
    mr_http_json_int(&j, -5);
    mr_http_json_key(&j, "b");
    mr_http_json_arr_begin(&j);
    mr_http_json_uint(&j, 18446744073709551615ull);
    mr_http_json_double(&j, 0.1);
    mr_http_json_double(&j, NAN);
    mr_http_json_bool(&j, 1);
    mr_http_json_null(&j);
    mr_http_json_obj_begin(&j);
    mr_http_json_obj_end(&j);
    mr_http_json_arr_begin(&j);
    mr_http_json_arr_end(&j);
    mr_http_json_arr_end(&j);
    mr_http_json_key(&j, "k\"q");
    mr_http_json_str(&j, NULL);
    mr_http_json_key(&j, "r");
    mr_http_json_raw(&j, "{\"x\":1}", 7);
    mr_http_json_key(&j, "s");
    mr_http_json_strn(&j, "x\0y", 3);
    mr_http_json_obj_end(&j);
    assert_false(b.is_oom);
    assert_string_equal(b.data,
                        "{\"a\":-5,\"b\":[18446744073709551615,0.1,null,true,null,{},[]],"
                        "\"k\\\"q\":null,\"r\":{\"x\":1},\"s\":\"x\\u0000y\"}");
    mr_http_buf_close(&b);
}

static void test_error_body_has_code_message_and_leader(void **state)
{
    struct mr_http_buf b;
    (void)state;
    mr_http_buf_init(&b);
    assert_int_equal(mr_http_error_body(&b, "no_leader", "no \"leader\"", NULL), 0);
    assert_string_equal(b.data, "{\"error\":{\"code\":\"no_leader\",\"message\":\"no "
                                "\\\"leader\\\"\",\"leader\":null}}");
    mr_http_buf_reset(&b);
    assert_int_equal(mr_http_error_body(&b, "not_leader", "ask 2", "2"), 0);
    assert_string_equal(b.data, "{\"error\":{\"code\":\"not_leader\",\"message\":\"ask "
                                "2\",\"leader\":\"2\"}}");
    mr_http_buf_close(&b);
}

static void test_buf_reports_out_of_memory_and_stays_failed(void **state)
{
    struct mr_http_buf b;
    (void)state;
    mr_http_buf_init(&b);
    mr_alloc_fail_at(1, 0);
    assert_int_equal(mr_http_buf_puts(&b, "abc"), MR_ENOMEM);
    assert_true(b.is_oom);
    /* Sticky, even though the allocator works again. */
    assert_int_equal(mr_http_buf_puts(&b, "abc"), MR_ENOMEM);
    mr_http_buf_reset(&b);
    assert_int_equal(mr_http_buf_printf(&b, "%d-%s", 42, "x"), 0);
    assert_string_equal(b.data, "42-x");
    mr_http_buf_close(&b);
}

/* ==== metrics ============================================================== */
static void test_metrics_render_exact_prometheus_text(void **state)
{
    struct mr_http_metrics m;
    struct mr_http_metric *c1, *c2, *g, *h;
    struct mr_http_buf b;
    static const double bounds[] = {0.125, 0.5, 1};
    (void)state;
    mr_http_metrics_init(&m);
    c1 = mr_http_metrics_counter(&m, "req_total", "code=\"2xx\"", "Requests.\nAll.");
    g = mr_http_metrics_gauge(&m, "temp", NULL, "Temp \\ C");
    c2 = mr_http_metrics_counter(&m, "req_total", "code=\"5xx\"", NULL);
    h = mr_http_metrics_histogram(&m, "lat_seconds", "op=\"put\"", "Latency.", bounds, 3);
    assert_non_null(c1);
    assert_non_null(c2);
    assert_non_null(g);
    assert_non_null(h);
    /* Bad name, duplicate series, type clash, bad bounds. */
    assert_null(mr_http_metrics_counter(&m, "9bad", NULL, "x"));
    assert_null(mr_http_metrics_counter(&m, "bad-name", NULL, "x"));
    assert_null(mr_http_metrics_counter(&m, "req_total", "code=\"2xx\"", "x"));
    assert_null(mr_http_metrics_gauge(&m, "req_total", "code=\"3xx\"", "x"));
    assert_null(
        mr_http_metrics_histogram(&m, "h2", NULL, "x", (const double[]){1, 1}, 2));
    assert_null(mr_http_metrics_histogram(&m, "lat_seconds", NULL, "x", bounds, 2));
    mr_http_metric_add(c1, 3);
    mr_http_metric_add(c2, 1);
    mr_http_metric_set(g, -1.5);
    mr_http_metric_add(g, 0.25);
    mr_http_metric_observe(h, 0.0625);
    mr_http_metric_observe(h, 0.125); /* le is inclusive */
    mr_http_metric_observe(h, 0.75);
    mr_http_metric_observe(h, 4);
    mr_http_buf_init(&b);
    assert_int_equal(mr_http_metrics_render(&m, &b), 0);
    assert_string_equal(b.data, "# HELP req_total Requests.\\nAll.\n"
                                "# TYPE req_total counter\n"
                                "req_total{code=\"2xx\"} 3\n"
                                "req_total{code=\"5xx\"} 1\n"
                                "# HELP temp Temp \\\\ C\n"
                                "# TYPE temp gauge\n"
                                "temp -1.25\n"
                                "# HELP lat_seconds Latency.\n"
                                "# TYPE lat_seconds histogram\n"
                                "lat_seconds_bucket{op=\"put\",le=\"0.125\"} 2\n"
                                "lat_seconds_bucket{op=\"put\",le=\"0.5\"} 2\n"
                                "lat_seconds_bucket{op=\"put\",le=\"1\"} 3\n"
                                "lat_seconds_bucket{op=\"put\",le=\"+Inf\"} 4\n"
                                "lat_seconds_sum{op=\"put\"} 4.9375\n"
                                "lat_seconds_count{op=\"put\"} 4\n");
    mr_http_buf_close(&b);
    mr_http_metrics_close(&m);
}

/* ==== connection core with a fake transport ================================== */
struct fake {
    struct mr_http_server srv;
    struct mr_http_conn *c;
    struct mr_http_buf out; /* everything written, in order */
    int is_writing, is_shut, is_close_pending, is_closed, is_reading;
    uint64_t timer;
    int hold;     /* keep requests instead of answering */
    int may_fail; /* answers may fail (allocation failure tests) */
    int use_router;
    struct mr_http_request *held[128];
    unsigned nheld;
    unsigned ncalls, naborts;
    char path[256], raw_path[256], query[256], body[8192], method[16];
    char hdr_test[256], param_x[256], param_y[256], param_e[8];
    int has_param_y;
    size_t body_len;
    long live_before;
};

static void fio_write(struct mr_http_conn *c, const uv_buf_t *bufs, unsigned n)
{
    struct fake *f = c->io_data;
    unsigned i;
    assert_false(f->is_writing);
    for (i = 0; i < n; i++) mr_http_buf_append(&f->out, bufs[i].base, bufs[i].len);
    f->is_writing = 1;
}
static void fio_shutdown(struct mr_http_conn *c)
{
    ((struct fake *)c->io_data)->is_shut = 1;
}
static void fio_close(struct mr_http_conn *c)
{
    ((struct fake *)c->io_data)->is_close_pending = 1;
}
static void fio_read(struct mr_http_conn *c, int on)
{
    ((struct fake *)c->io_data)->is_reading = on;
}
static void fio_timer(struct mr_http_conn *c, uint64_t d)
{
    ((struct fake *)c->io_data)->timer = d;
}
static const struct mr_http_io fake_io = {fio_write, fio_shutdown, fio_close, fio_read,
                                          fio_timer};

static void copy_str(char *dst, size_t size, const char *s)
{
    snprintf(dst, size, "%s", s != NULL ? s : "(null)");
}

static void route_echo(void *data, struct mr_http_request *req, const char *tail)
{
    char body[300];
    int n = snprintf(body, sizeof body, "%s tail=[%s]", req->method_name, tail);
    (void)data;
    assert_int_equal(mr_http_respond(req, 200, "text/plain", NULL, body, (size_t)n), 0);
}

static const struct mr_http_route test_routes[] = {
    {MR_HTTP_M(HTTP_GET) | MR_HTTP_M(HTTP_PUT) | MR_HTTP_M(HTTP_DELETE), "/v1/kv/", 1,
     route_echo},
    {MR_HTTP_M(HTTP_GET), "/v1/status", 0, route_echo},
    {MR_HTTP_M(HTTP_POST), "/v1/status", 0, route_echo},
    {MR_HTTP_M(HTTP_POST), "/v1/command", 0, route_echo},
};

static void fake_handler(void *data, struct mr_http_request *req)
{
    struct fake *f = data;
    const char *y;
    int rc;
    f->ncalls++;
    copy_str(f->path, sizeof f->path, req->path);
    copy_str(f->raw_path, sizeof f->raw_path, req->raw_path);
    copy_str(f->query, sizeof f->query, req->query);
    copy_str(f->method, sizeof f->method, req->method_name);
    copy_str(f->hdr_test, sizeof f->hdr_test, mr_http_request_header(req, "x-TEST"));
    copy_str(f->param_x, sizeof f->param_x, mr_http_request_param(req, "x"));
    copy_str(f->param_e, sizeof f->param_e, mr_http_request_param(req, "e"));
    if (f->use_router) {
        mr_http_route(test_routes, sizeof test_routes / sizeof test_routes[0], f, req);
        return;
    }
    y = mr_http_request_param(req, "y");
    f->has_param_y = y != NULL;
    copy_str(f->param_y, sizeof f->param_y, y);
    assert_true(req->body_len < sizeof f->body);
    memcpy(f->body, req->body, req->body_len);
    assert_int_equal(req->body[req->body_len], '\0');
    f->body_len = req->body_len;
    if (f->hold) {
        assert_true(f->nheld < 128);
        f->held[f->nheld++] = req;
        return;
    }
    /* Echo the path so the order of answers is visible. */
    rc = mr_http_respond(req, 200, "text/plain", NULL, req->path, req->path_len);
    if (!f->may_fail) assert_int_equal(rc, 0);
}

/* Completes writes and closes the way libuv would, until nothing moves. */
static void fake_pump(struct fake *f)
{
    for (;;) {
        if (f->is_writing) {
            f->is_writing = 0;
            mr_http__conn_write_done(f->c, f->is_close_pending ? UV_ECANCELED : 0);
            continue;
        }
        if (f->is_close_pending && !f->is_closed) {
            f->is_closed = 1;
            mr_http__conn_closed(f->c); /* may free it */
            continue;
        }
        break;
    }
}

static void fake_setup(struct fake *f, const struct mr_http_options *opt)
{
    memset(f, 0, sizeof *f);
    f->live_before = mr_alloc_live();
    mr_http_buf_init(&f->out);
    assert_int_equal(mr_http__server_init_detached(&f->srv, opt, fake_handler, f), 0);
    f->c = mr_http__conn_new(&f->srv, &fake_io);
    assert_non_null(f->c);
    f->c->io_data = f;
    mr_http__conn_start(f->c, 0);
    assert_true(f->is_reading);
}

static void fake_feed_n(struct fake *f, const char *s, size_t len)
{
    if (f->is_closed) return;
    mr_http__conn_feed(f->c, s, len);
    fake_pump(f);
}

static void fake_feed(struct fake *f, const char *s)
{
    fake_feed_n(f, s, strlen(s));
}

static int fake_answer(struct fake *f, unsigned i, const char *body)
{
    int rc;
    assert_true(i < f->nheld && f->held[i] != NULL);
    rc = mr_http_respond(f->held[i], 200, "text/plain", NULL, body, strlen(body));
    f->held[i] = NULL;
    fake_pump(f);
    return rc;
}

static void fake_teardown(struct fake *f)
{
    unsigned i;
    if (!f->is_closed) {
        mr_http__conn_kill(f->c);
        fake_pump(f);
    }
    for (i = 0; i < f->nheld; i++) {
        if (f->held[i] != NULL) {
            assert_int_equal(mr_http_respond(f->held[i], 200, NULL, NULL, "", 0),
                             MR_ECANCELED);
            f->held[i] = NULL;
        }
    }
    assert_int_equal(f->srv.stats.connections, 0);
    assert_int_equal(f->srv.stats.outstanding, 0);
    mr_http__server_close_detached(&f->srv);
    mr_http_buf_close(&f->out);
    assert_int_equal(mr_alloc_live(), f->live_before);
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    const char *p = hay;
    while ((p = strstr(p, needle)) != NULL) {
        n++;
        p += strlen(needle);
    }
    return n;
}

static void test_get_decodes_path_query_and_headers(void **state)
{
    struct fake f;
    (void)state;
    fake_setup(&f, NULL);
    fake_feed(&f, "GET /v1/kv/a%20b%2Fc+d?x=1+2%3D&flag&e=&y=%C3%A9&x=dup HTTP/1.1\r\n"
                  "Host: h\r\nX-Test:  hello \r\n\r\n");
    assert_int_equal(f.ncalls, 1);
    assert_string_equal(f.method, "GET");
    assert_string_equal(f.path, "/v1/kv/a b/c+d");
    assert_string_equal(f.raw_path, "/v1/kv/a%20b%2Fc+d");
    assert_string_equal(f.query, "x=1+2%3D&flag&e=&y=%C3%A9&x=dup");
    assert_string_equal(f.param_x, "1 2="); /* first one wins */
    assert_string_equal(f.param_e, "");
    assert_string_equal(f.param_y, "\xc3\xa9");
    assert_string_equal(f.hdr_test, "hello"); /* case-insensitive, trimmed */
    assert_non_null(strstr(f.out.data, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(
        strstr(f.out.data, "Content-Type: text/plain\r\nContent-Length: 14\r\n"));
    assert_non_null(strstr(f.out.data, "\r\nDate: "));
    assert_null(strstr(f.out.data, "Connection:"));
    assert_non_null(strstr(f.out.data, "\r\n\r\n/v1/kv/a b/c+d"));
    assert_false(f.is_shut);
    fake_teardown(&f);
}

static void test_absolute_url_and_missing_query(void **state)
{
    struct fake f;
    (void)state;
    fake_setup(&f, NULL);
    fake_feed(&f, "GET http://example.com:80/p/q HTTP/1.1\r\n\r\n");
    assert_int_equal(f.ncalls, 1);
    assert_string_equal(f.path, "/p/q");
    assert_string_equal(f.query, "");
    assert_string_equal(f.param_x, "(null)");
    assert_false(f.has_param_y);
    assert_string_equal(f.hdr_test, "(null)");
    fake_teardown(&f);
}

static void test_post_body_with_content_length_split_byte_by_byte(void **state)
{
    struct fake f;
    const char *req = "POST /echo HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world";
    size_t i;
    (void)state;
    fake_setup(&f, NULL);
    for (i = 0; req[i] != '\0'; i++) fake_feed_n(&f, req + i, 1);
    assert_int_equal(f.ncalls, 1);
    assert_int_equal(f.body_len, 11);
    assert_memory_equal(f.body, "hello world", 11);
    fake_teardown(&f);
}

static void test_chunked_body_is_decoded(void **state)
{
    struct fake f;
    (void)state;
    fake_setup(&f, NULL);
    fake_feed(&f, "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: x\r\n\r\n");
    assert_int_equal(f.ncalls, 1);
    assert_int_equal(f.body_len, 11);
    assert_memory_equal(f.body, "hello world", 11);
    fake_teardown(&f);
}

static void test_pipelined_answers_leave_in_request_order(void **state)
{
    struct fake f;
    (void)state;
    fake_setup(&f, NULL);
    f.hold = 1;
    fake_feed(
        &f,
        "GET /one HTTP/1.1\r\n\r\nGET /two HTTP/1.1\r\n\r\nGET /three HTTP/1.1\r\n\r\n");
    assert_int_equal(f.nheld, 3);
    assert_int_equal(fake_answer(&f, 2, "third"), 0);
    assert_int_equal(fake_answer(&f, 1, "second"), 0);
    assert_int_equal(f.out.len, 0); /* waiting for the first */
    assert_int_equal(fake_answer(&f, 0, "first"), 0);
    {
        const char *a = strstr(f.out.data, "first"), *b = strstr(f.out.data, "second"),
                   *c = strstr(f.out.data, "third");
        assert_non_null(a);
        assert_non_null(b);
        assert_non_null(c);
        assert_true(a < b && b < c);
        assert_int_equal(count(f.out.data, "HTTP/1.1 200 OK"), 3);
    }
    fake_teardown(&f);
}

static void test_backpressure_stops_reading_at_max_pipelined(void **state)
{
    struct fake f;
    struct mr_http_options o = {0};
    char buf[512] = "";
    unsigned i;
    (void)state;
    o.max_pipelined = 2;
    fake_setup(&f, &o);
    f.hold = 1;
    for (i = 0; i < 5; i++) {
        char one[64];
        snprintf(one, sizeof one, "GET /r%u HTTP/1.1\r\n\r\n", i);
        strcat(buf, one);
    }
    fake_feed(&f, buf);
    assert_int_equal(f.nheld, 2);
    assert_false(f.is_reading);
    assert_int_equal(fake_answer(&f, 0, "a0"), 0);
    /* One slot freed: exactly one more request is read from the stash. */
    assert_int_equal(f.nheld, 3);
    assert_string_equal(f.path, "/r2");
    assert_false(f.is_reading);
    assert_int_equal(fake_answer(&f, 1, "a1"), 0);
    assert_int_equal(fake_answer(&f, 2, "a2"), 0);
    assert_int_equal(f.nheld, 5);
    assert_string_equal(f.path, "/r4");
    assert_int_equal(fake_answer(&f, 3, "a3"), 0);
    assert_true(f.is_reading); /* stash drained, reading again */
    assert_int_equal(fake_answer(&f, 4, "a4"), 0);
    assert_int_equal(count(f.out.data, "HTTP/1.1 200 OK"), 5);
    assert_true(strstr(f.out.data, "a3") < strstr(f.out.data, "a4"));
    fake_teardown(&f);
}

static void test_oversized_header_gets_431_json_and_close(void **state)
{
    struct fake f;
    struct mr_http_options o = {0};
    char big[2048];
    (void)state;
    o.max_header_bytes = 1024;
    fake_setup(&f, &o);
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    fake_feed(&f, "GET / HTTP/1.1\r\nX-Big: ");
    fake_feed(&f, big);
    assert_int_equal(f.ncalls, 0);
    assert_non_null(
        strstr(f.out.data, "HTTP/1.1 431 Request Header Fields Too Large\r\n"));
    assert_non_null(strstr(f.out.data, "Connection: close\r\n"));
    assert_non_null(strstr(f.out.data, "{\"error\":{\"code\":\"too_large\""));
    assert_true(f.is_shut);
    /* Input after that is drained and ignored. */
    fake_feed(&f, "GET / HTTP/1.1\r\n\r\n");
    assert_int_equal(f.ncalls, 0);
    assert_int_equal(count(f.out.data, "HTTP/1.1"), 1);
    /* The peer's EOF ends the linger. */
    mr_http__conn_read_end(f.c, UV_EOF);
    fake_pump(&f);
    assert_true(f.is_closed);
    fake_teardown(&f);
}

static void test_too_many_header_fields_gets_431(void **state)
{
    struct fake f;
    struct mr_http_buf req;
    unsigned i;
    (void)state;
    fake_setup(&f, NULL);
    mr_http_buf_init(&req);
    mr_http_buf_puts(&req, "GET / HTTP/1.1\r\n");
    for (i = 0; i <= MR_HTTP_MAX_HEADERS; i++) mr_http_buf_printf(&req, "H%u: v\r\n", i);
    mr_http_buf_puts(&req, "\r\n");
    fake_feed(&f, req.data);
    mr_http_buf_close(&req);
    assert_int_equal(f.ncalls, 0);
    assert_non_null(strstr(f.out.data, "HTTP/1.1 431 "));
    assert_non_null(strstr(f.out.data, "too many header fields"));
    fake_teardown(&f);
}

static void test_oversized_body_by_content_length_gets_413_before_the_body(void **state)
{
    struct fake f;
    struct mr_http_options o = {0};
    (void)state;
    o.max_body_bytes = 10;
    fake_setup(&f, &o);
    fake_feed(&f, "POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n");
    assert_int_equal(f.ncalls, 0);
    assert_non_null(strstr(f.out.data, "HTTP/1.1 413 Payload Too Large\r\n"));
    assert_non_null(strstr(f.out.data, "\"code\":\"too_large\""));
    assert_non_null(strstr(f.out.data, "Content-Type: application/json\r\n"));
    assert_true(f.is_shut);
    fake_teardown(&f);
}

static void test_oversized_chunked_body_gets_413(void **state)
{
    struct fake f;
    struct mr_http_options o = {0};
    (void)state;
    o.max_body_bytes = 10;
    fake_setup(&f, &o);
    /* Exactly the limit passes ... */
    fake_feed(&f, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "5\r\n12345\r\n5\r\n67890\r\n0\r\n\r\n");
    assert_int_equal(f.ncalls, 1);
    assert_int_equal(f.body_len, 10);
    /* ... one byte more does not. */
    fake_feed(&f, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "5\r\n12345\r\n6\r\n678901\r\n0\r\n\r\n");
    assert_int_equal(f.ncalls, 1);
    assert_non_null(strstr(f.out.data, "HTTP/1.1 413 "));
    assert_true(f.is_shut);
    fake_teardown(&f);
}

static void test_truncated_body_then_eof_never_calls_handler(void **state)
{
    struct fake f;
    (void)state;
    fake_setup(&f, NULL);
    fake_feed(&f, "POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\nonly a part");
    mr_http__conn_read_end(f.c, UV_EOF);
    fake_pump(&f);
    assert_int_equal(f.ncalls, 0);
    assert_true(f.is_closed);
    assert_int_equal(f.out.len, 0);
    fake_teardown(&f);
}

static void test_malformed_requests_get_400_json(void **state)
{
    static const char *const bad[] = {
        "GARBAGE\r\n\r\n",
        "FOO / HTTP/1.1\r\n\r\n",      /* unknown method */
        "GET / HTTP/9.9\r\n\r\n",      /* version */
        "GET /a%zz HTTP/1.1\r\n\r\n",  /* bad escape in path */
        "GET /a%00 HTTP/1.1\r\n\r\n",  /* NUL in path */
        "GET /?a=%4 HTTP/1.1\r\n\r\n", /* bad escape in query */
        "GET / HTTP/1.1\r\nBad\x01: x\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        "CONNECT example.com:443 HTTP/1.1\r\n\r\n",
    };
    unsigned i;
    (void)state;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct fake f;
        fake_setup(&f, NULL);
        fake_feed(&f, bad[i]);
        if (f.ncalls != 0) fail_msg("case %u accepted: %s", i, bad[i]);
        if (strstr(f.out.data, "HTTP/1.1 400 Bad Request\r\n") == NULL) {
            fail_msg("case %u: %s", i, f.out.data);
        }
        assert_non_null(strstr(f.out.data, "\"code\":\"invalid_request\""));
        assert_non_null(strstr(f.out.data, "Connection: close\r\n"));
        assert_true(f.is_shut);
        fake_teardown(&f);
    }
}

static void test_bad_request_after_good_ones_keeps_earlier_answers(void **state)
{
    struct fake f;
    (void)state;
    fake_setup(&f, NULL);
    f.hold = 1;
    fake_feed(&f, "GET /ok HTTP/1.1\r\n\r\nBROKEN\r\n\r\n");
    assert_int_equal(f.nheld, 1);
    assert_int_equal(f.out.len, 0); /* the 400 waits for the first answer */
    assert_int_equal(fake_answer(&f, 0, "fine"), 0);
    assert_true(strstr(f.out.data, "200 OK") < strstr(f.out.data, "400 Bad Request"));
    assert_true(f.is_shut);
    fake_teardown(&f);
}

static void test_http10_closes_unless_keep_alive(void **state)
{
    struct fake f;
    (void)state;
    fake_setup(&f, NULL);
    fake_feed(&f, "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_non_null(strstr(f.out.data, "Connection: keep-alive\r\n"));
    assert_false(f.is_shut);
    fake_feed(&f, "GET /b HTTP/1.0\r\n\r\nGET /c HTTP/1.0\r\n\r\n");
    assert_int_equal(f.ncalls, 2); /* /c is never read */
    assert_non_null(strstr(f.out.data, "Connection: close\r\n"));
    assert_true(f.is_shut);
    fake_teardown(&f);
}

static void test_connection_close_ends_after_that_answer(void **state)
{
    struct fake f;
    (void)state;
    fake_setup(&f, NULL);
    fake_feed(&f, "GET /x HTTP/1.1\r\nConnection: close\r\n\r\nGET /y HTTP/1.1\r\n\r\n");
    assert_int_equal(f.ncalls, 1);
    assert_string_equal(f.path, "/x");
    assert_non_null(strstr(f.out.data, "Connection: close\r\n"));
    assert_true(f.is_shut);
    fake_teardown(&f);
}

static void test_expect_100_continue_is_answered_before_the_body(void **state)
{
    struct fake f;
    (void)state;
    fake_setup(&f, NULL);
    fake_feed(&f, "PUT /k HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    assert_string_equal(f.out.data, "HTTP/1.1 100 Continue\r\n\r\n");
    fake_feed(&f, "abc");
    assert_int_equal(f.ncalls, 1);
    assert_int_equal(count(f.out.data, "100 Continue"), 1);
    assert_non_null(strstr(f.out.data, "HTTP/1.1 200 OK"));
    /* Too large with Expect: a 413 instead of the 100. */
    fake_teardown(&f);
    {
        struct mr_http_options o = {0};
        o.max_body_bytes = 2;
        fake_setup(&f, &o);
        fake_feed(&f,
                  "PUT /k HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
        assert_null(strstr(f.out.data, "100 Continue"));
        assert_non_null(strstr(f.out.data, "HTTP/1.1 413 "));
        fake_teardown(&f);
    }
}

static void test_head_answer_has_length_but_no_body(void **state)
{
    struct fake f;
    (void)state;
    fake_setup(&f, NULL);
    fake_feed(&f, "HEAD /abc HTTP/1.1\r\n\r\n");
    assert_int_equal(f.ncalls, 1);
    assert_non_null(strstr(f.out.data, "Content-Length: 4\r\n"));
    assert_int_equal(f.out.len,
                     (size_t)(strstr(f.out.data, "\r\n\r\n") - f.out.data) + 4);
    fake_teardown(&f);
}

static void test_error_helpers_add_retry_after_allow_and_leader(void **state)
{
    struct fake f;
    (void)state;
    fake_setup(&f, NULL);
    f.hold = 1;
    fake_feed(&f, "POST /v1/command HTTP/1.1\r\n\r\nDELETE /v1/status HTTP/1.1\r\n\r\n");
    assert_int_equal(f.nheld, 2);
    assert_int_equal(
        mr_http_respond_error(f.held[0], 503, "no_leader", "election", "n3", 2), 0);
    assert_int_equal(mr_http_respond_error_hdr(f.held[1], 405, "method_not_allowed",
                                               "use GET", NULL, 0, "Allow: GET\r\n"),
                     0);
    f.held[0] = f.held[1] = NULL;
    fake_pump(&f);
    assert_non_null(strstr(f.out.data, "HTTP/1.1 503 Service Unavailable\r\n"));
    assert_non_null(strstr(f.out.data, "Retry-After: 2\r\n"));
    assert_non_null(strstr(f.out.data, "{\"error\":{\"code\":\"no_leader\",\"message\":"
                                       "\"election\",\"leader\":\"n3\"}}"));
    assert_non_null(strstr(f.out.data, "HTTP/1.1 405 Method Not Allowed\r\n"));
    assert_non_null(strstr(f.out.data, "Allow: GET\r\n"));
    assert_non_null(strstr(f.out.data, "\"leader\":null"));
    fake_teardown(&f);
}

static void test_header_timeout_answers_408_and_idle_timeout_closes(void **state)
{
    struct fake f;
    struct mr_http_options o = {0};
    (void)state;
    o.header_timeout_ms = 100;
    o.idle_timeout_ms = 1000;
    fake_setup(&f, &o);
    assert_int_equal(f.timer, 1000); /* idle */
    f.srv.fake_now = 10;
    fake_feed(&f, "GET / HTTP/1.1\r\nX-Slow: ");
    assert_int_equal(f.timer, 100); /* header deadline */
    f.srv.fake_now = 60;
    mr_http__conn_timeout(f.c); /* early: nothing happens, re-armed */
    assert_int_equal(f.timer, 50);
    assert_int_equal(f.out.len, 0);
    f.srv.fake_now = 110;
    mr_http__conn_timeout(f.c);
    fake_pump(&f);
    assert_non_null(strstr(f.out.data, "HTTP/1.1 408 Request Timeout\r\n"));
    assert_non_null(strstr(f.out.data, "\"code\":\"timeout\""));
    assert_true(f.is_shut);
    assert_int_equal(f.timer, MR_HTTP_LINGER_MS);
    f.srv.fake_now = 110 + MR_HTTP_LINGER_MS;
    mr_http__conn_timeout(f.c);
    fake_pump(&f);
    assert_true(f.is_closed);
    fake_teardown(&f);

    fake_setup(&f, &o);
    fake_feed(&f, "GET / HTTP/1.1\r\n\r\n");
    f.srv.fake_now = 999;
    mr_http__conn_timeout(f.c);
    assert_false(f.is_close_pending);
    f.srv.fake_now = 1000;
    mr_http__conn_timeout(f.c);
    fake_pump(&f);
    assert_true(f.is_closed);
    fake_teardown(&f);
}

static void abort_counter(void *data, struct mr_http_request *req)
{
    struct fake *f = data;
    f->naborts++;
    assert_true(mr_http_request_is_aborted(req));
}

static void test_disconnect_aborts_pending_and_discards_later_answer(void **state)
{
    struct fake f;
    (void)state;
    fake_setup(&f, NULL);
    f.hold = 1;
    fake_feed(&f, "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
    assert_int_equal(f.nheld, 2);
    mr_http_request_on_abort(f.held[0], abort_counter, &f);
    mr_http_request_on_abort(f.held[1], abort_counter, &f);
    assert_false(mr_http_request_is_aborted(f.held[0]));
    assert_int_equal(fake_answer(&f, 1, "b"), 0); /* answered, not yet sent */
    mr_http__conn_read_end(f.c, UV_EOF);
    fake_pump(&f);
    assert_int_equal(f.naborts, 1); /* only the unanswered one */
    assert_true(f.is_closed);
    /* The connection object lives on until the last answer. */
    assert_int_equal(f.srv.stats.connections, 1);
    assert_string_equal(f.held[0]->path, "/a");
    assert_int_equal(fake_answer(&f, 0, "late"), MR_ECANCELED);
    assert_int_equal(f.srv.stats.connections, 0);
    assert_int_equal(f.naborts, 1);
    assert_int_equal(f.out.len, 0);
    fake_teardown(&f);
}

static void test_router_dispatches_and_answers_404_and_405(void **state)
{
    struct fake f;
    (void)state;
    fake_setup(&f, NULL);
    f.use_router = 1;
    fake_feed(&f, "PUT /v1/kv/a%2Fb HTTP/1.1\r\nContent-Length: 1\r\n\r\nx"
                  "GET /v1/status HTTP/1.1\r\n\r\n"
                  "POST /v1/status HTTP/1.1\r\n\r\n"
                  "GET /v1/kv/ HTTP/1.1\r\n\r\n"
                  "GET /v1/statusx HTTP/1.1\r\n\r\n"
                  "DELETE /v1/status HTTP/1.1\r\n\r\n"
                  "GET /v1/command HTTP/1.1\r\n\r\n");
    assert_int_equal(f.ncalls, 7);
    {
        const char *want[] = {
            "\r\n\r\nPUT tail=[a/b]",
            "\r\n\r\nGET tail=[]",
            "\r\n\r\nPOST tail=[]",
            "\r\n\r\nGET tail=[]",
            "HTTP/1.1 404 Not Found\r\n",
            "HTTP/1.1 405 Method Not Allowed\r\n",
            "Allow: GET, POST\r\n",
            "\"code\":\"method_not_allowed\",\"message\":\"method DELETE is not allowed "
            "here\"",
            "HTTP/1.1 405 Method Not Allowed\r\n",
            "Allow: POST\r\n",
        };
        const char *p = f.out.data;
        unsigned i;
        for (i = 0; i < sizeof want / sizeof want[0]; i++) {
            const char *q = strstr(p, want[i]);
            if (q == NULL) fail_msg("missing in order: %s", want[i]);
            p = q + strlen(want[i]);
        }
        assert_non_null(strstr(f.out.data, "\"code\":\"not_found\""));
    }
    fake_teardown(&f);
}

static void test_keep_alive_requests_allocate_nothing_in_steady_state(void **state)
{
    struct fake f;
    const char *req = "POST /v1/command?x=1 HTTP/1.1\r\nHost: a\r\nContent-Type: "
                      "application/json\r\nContent-Length: 12\r\n\r\n{\"op\":\"get\"}";
    unsigned i;
    (void)state;
    fake_setup(&f, NULL);
    fake_feed(&f, req); /* warm up: the pool gets its request */
    assert_int_equal(mr_http_buf_reserve(&f.out, 1 << 20), 0);
    mr_alloc_fail_at(1, 1); /* every allocation from now on fails */
    for (i = 0; i < 100; i++) fake_feed(&f, req);
    mr_alloc_fail_at(0, 0);
    assert_int_equal(f.ncalls, 101);
    assert_int_equal(count(f.out.data, "HTTP/1.1 200 OK"), 101);
    assert_false(f.is_shut);
    fake_teardown(&f);
}

static void test_write_error_closes_and_aborts_the_rest(void **state)
{
    struct fake f;
    (void)state;
    fake_setup(&f, NULL);
    f.hold = 1;
    fake_feed(&f, "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
    mr_http_request_on_abort(f.held[1], abort_counter, &f);
    assert_int_equal(mr_http_respond(f.held[0], 200, NULL, NULL, "x", 1), 0);
    f.held[0] = NULL;
    assert_true(f.is_writing);
    f.is_writing = 0;
    mr_http__conn_write_done(f.c, UV_EPIPE);
    assert_true(f.is_close_pending);
    assert_int_equal(f.naborts, 1);
    fake_pump(&f);
    assert_int_equal(fake_answer(&f, 1, "late"), MR_ECANCELED);
    fake_teardown(&f);
}

static void test_body_timeout_answers_408(void **state)
{
    struct fake f;
    struct mr_http_options o = {0};
    (void)state;
    o.body_timeout_ms = 50;
    fake_setup(&f, &o);
    fake_feed(&f, "POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345");
    assert_int_equal(f.timer, 50);
    f.srv.fake_now = 50;
    mr_http__conn_timeout(f.c);
    fake_pump(&f);
    assert_int_equal(f.ncalls, 0);
    assert_non_null(strstr(f.out.data, "HTTP/1.1 408 "));
    assert_non_null(strstr(f.out.data, "request body not received in time"));
    assert_true(f.is_shut);
    fake_teardown(&f);
}

static void test_out_of_memory_while_reading_closes_cleanly(void **state)
{
    /* Fail each allocation in turn while a request is read and answered. */
    const char *req = "POST /p?x=1 HTTP/1.1\r\nA: b\r\nContent-Length: 3\r\n\r\nabc";
    unsigned long n;
    (void)state;
    for (n = 1; n < 40; n++) {
        struct fake f;
        fake_setup(&f, NULL);
        f.may_fail = 1;
        mr_alloc_fail_at(n, 0);
        fake_feed(&f, req);
        mr_alloc_fail_at(0, 0);
        /* Either answered, or an error (503 or nothing) and closing. */
        if (f.ncalls == 0) assert_true(f.is_shut || f.is_close_pending || f.is_closed);
        fake_teardown(&f);
    }
}

/* ---- streamed answers ------------------------------------------------------------ */
/* A producer of `length` bytes where byte i is (i * 7 + 3) & 0xff. Answers
 * each pull at once (is_async 0) or keeps it for the test to answer. */
struct producer {
    uint64_t length, made;
    int is_async, fail_at_pull; /* fail the Nth pull (1-based); 0 never */
    unsigned npulls, ndone;
    int done_status;
    struct mr_http_stream *s; /* a kept pull */
    char *buf;
    size_t cap;
};

static unsigned char pattern(uint64_t i)
{
    return (unsigned char)((i * 7 + 3) & 0xff);
}

static void producer_fill(struct producer *p)
{
    struct mr_http_stream *s = p->s;
    size_t i, n = p->cap > 100000 ? p->cap - 777 : p->cap; /* short pieces too */
    for (i = 0; i < n; i++) p->buf[i] = (char)pattern(p->made + i);
    p->made += n;
    p->s = NULL;
    mr_http_stream_ready(s, n);
}

static void producer_pull(void *data, struct mr_http_stream *s, char *buf, size_t cap)
{
    struct producer *p = data;
    assert_null(p->s);
    assert_true(cap >= 1 && cap <= MR_HTTP_STREAM_CHUNK && cap <= p->length - p->made);
    p->npulls++;
    p->s = s;
    p->buf = buf;
    p->cap = cap;
    if ((int)p->npulls == p->fail_at_pull) {
        p->s = NULL;
        mr_http_stream_fail(s);
        return;
    }
    if (!p->is_async) producer_fill(p);
}

static void producer_done(void *data, int status)
{
    struct producer *p = data;
    assert_null(p->s); /* never with a pull outstanding */
    p->ndone++;
    p->done_status = status;
}

/* The body after the headers of f->out, checked against the pattern. */
static void expect_streamed_body(const struct fake *f, uint64_t length)
{
    const char *sep = strstr(f->out.data, "\r\n\r\n");
    char want[64];
    uint64_t i;
    assert_non_null(sep);
    snprintf(want, sizeof want, "Content-Length: %llu\r\n", (unsigned long long)length);
    assert_non_null(strstr(f->out.data, want));
    sep += 4;
    assert_int_equal((uint64_t)(f->out.data + f->out.len - sep), length);
    for (i = 0; i < length; i++) {
        if ((unsigned char)sep[i] != pattern(i))
            fail_msg("byte %llu differs", (unsigned long long)i);
    }
}

static void
test_streamed_answer_sends_a_large_body_in_order_then_the_next_answer(void **state)
{
    struct fake f;
    struct producer p;
    uint64_t length = 3 * MR_HTTP_STREAM_CHUNK + 12345;
    (void)state;
    memset(&p, 0, sizeof p);
    p.length = length;
    fake_setup(&f, NULL);
    f.hold = 1;
    fake_feed(&f, "GET /big HTTP/1.1\r\n\r\n");
    assert_int_equal(mr_http_respond_stream(f.held[0], 200, "application/octet-stream",
                                            "X-A: 1\r\n", length, producer_pull,
                                            producer_done, &p),
                     0);
    f.held[0] = NULL;
    assert_int_equal(p.ndone, 0); /* never from inside the answer */
    fake_pump(&f);
    assert_int_equal(p.ndone, 1);
    assert_int_equal(p.done_status, 0);
    assert_int_equal(p.made, length);
    assert_non_null(strstr(f.out.data, "X-A: 1\r\n"));
    expect_streamed_body(&f, length);
    /* The connection goes on: the next answer follows the body. */
    f.hold = 0;
    mr_http_buf_reset(&f.out);
    fake_feed(&f, "GET /next HTTP/1.1\r\n\r\n");
    assert_non_null(strstr(f.out.data, "\r\n\r\n/next"));
    /* HEAD: the length, no body, nothing pulled. */
    f.hold = 1;
    mr_http_buf_reset(&f.out);
    memset(&p, 0, sizeof p);
    p.length = length;
    fake_feed(&f, "HEAD /big HTTP/1.1\r\n\r\n");
    assert_int_equal(mr_http_respond_stream(f.held[1], 200, NULL, NULL, length,
                                            producer_pull, producer_done, &p),
                     0);
    f.held[1] = NULL;
    fake_pump(&f);
    assert_int_equal(p.ndone, 1);
    assert_int_equal(p.done_status, 0);
    assert_int_equal(p.npulls, 0);
    assert_non_null(strstr(f.out.data, "Content-Length: "));
    assert_string_equal(strstr(f.out.data, "\r\n\r\n"), "\r\n\r\n");
    fake_teardown(&f);
}

static void
test_streamed_answer_reads_ahead_at_most_a_few_chunks_of_a_slow_reader(void **state)
{
    struct fake f;
    struct producer p;
    uint64_t length = 10 * MR_HTTP_STREAM_CHUNK;
    unsigned rounds = 0;
    (void)state;
    memset(&p, 0, sizeof p);
    p.length = length;
    p.is_async = 1;
    fake_setup(&f, NULL);
    f.hold = 1;
    fake_feed(&f, "GET /big HTTP/1.1\r\n\r\n");
    assert_int_equal(mr_http_respond_stream(f.held[0], 200, NULL, NULL, length,
                                            producer_pull, producer_done, &p),
                     0);
    f.held[0] = NULL;
    /* The headers are in the socket; the client reads nothing yet. */
    assert_true(f.is_writing);
    assert_int_equal(p.npulls, 0);
    f.is_writing = 0;
    mr_http__conn_write_done(f.c, 0);
    /* The producer fills what it is asked, but the client still does not
     * read: the server stops asking after MR_HTTP_STREAM_AHEAD chunks. */
    while (p.s != NULL) producer_fill(&p);
    assert_int_equal(p.npulls, MR_HTTP_STREAM_AHEAD);
    assert_true(f.is_writing);
    assert_true(f.timer != UINT64_MAX); /* a stalled stream times out */
    /* The client reads one write at a time: one more chunk each time. */
    while (p.ndone == 0) {
        unsigned before = p.npulls;
        assert_true(++rounds < 100);
        if (f.is_writing) {
            f.is_writing = 0;
            mr_http__conn_write_done(f.c, 0);
        }
        while (p.s != NULL) producer_fill(&p);
        assert_true(p.npulls - before <= MR_HTTP_STREAM_AHEAD);
        /* filled but not yet handed to the socket: a few chunks at most */
        assert_true((int64_t)p.made - (int64_t)f.out.len <=
                    (int64_t)MR_HTTP_STREAM_AHEAD * MR_HTTP_STREAM_CHUNK);
    }
    assert_int_equal(p.done_status, 0);
    expect_streamed_body(&f, length);
    fake_teardown(&f);
}

static void
test_streamed_answer_ends_canceled_when_the_client_leaves_mid_stream(void **state)
{
    struct fake f;
    struct producer p;
    uint64_t length = 8 * MR_HTTP_STREAM_CHUNK;
    (void)state;

    /* Leaving while a pull is outstanding: done waits for the producer. */
    memset(&p, 0, sizeof p);
    p.length = length;
    p.is_async = 1;
    fake_setup(&f, NULL);
    f.hold = 1;
    fake_feed(&f, "GET /big HTTP/1.1\r\n\r\nGET /after HTTP/1.1\r\n\r\n");
    assert_int_equal(f.nheld, 2);
    assert_int_equal(mr_http_respond_stream(f.held[0], 200, NULL, NULL, length,
                                            producer_pull, producer_done, &p),
                     0);
    f.held[0] = NULL;
    assert_int_equal(fake_answer(&f, 1, "queued behind the stream"), 0);
    producer_fill(&p);
    fake_pump(&f);
    assert_non_null(p.s);
    mr_http__conn_read_end(f.c, UV_EOF);
    fake_pump(&f);
    assert_true(f.is_closed);
    assert_int_equal(p.ndone, 0);
    assert_int_equal(f.srv.stats.connections, 1); /* held by the stream */
    producer_fill(&p);                            /* the read finishes */
    assert_int_equal(p.ndone, 1);
    assert_int_equal(p.done_status, MR_ECANCELED);
    assert_int_equal(f.srv.stats.connections, 0);
    assert_null(strstr(f.out.data, "queued behind"));
    fake_teardown(&f);

    /* Leaving while a chunk is being written: the failed write ends it. */
    memset(&p, 0, sizeof p);
    p.length = length;
    fake_setup(&f, NULL);
    f.hold = 1;
    fake_feed(&f, "GET /big HTTP/1.1\r\n\r\n");
    assert_int_equal(mr_http_respond_stream(f.held[0], 200, NULL, NULL, length,
                                            producer_pull, producer_done, &p),
                     0);
    f.held[0] = NULL;
    f.is_writing = 0;
    mr_http__conn_write_done(f.c, 0); /* headers out, chunks in the socket */
    assert_true(f.is_writing);
    mr_http__conn_read_end(f.c, UV_ECONNRESET);
    assert_int_equal(p.ndone, 0);
    fake_pump(&f); /* the write fails, then the close completes */
    assert_int_equal(p.ndone, 1);
    assert_int_equal(p.done_status, MR_ECANCELED);
    assert_true(f.is_closed);
    fake_teardown(&f);

    /* The producer fails: the connection closes, the body stays short. */
    memset(&p, 0, sizeof p);
    p.length = length;
    p.fail_at_pull = 3;
    fake_setup(&f, NULL);
    f.hold = 1;
    fake_feed(&f, "GET /big HTTP/1.1\r\n\r\n");
    assert_int_equal(mr_http_respond_stream(f.held[0], 200, NULL, NULL, length,
                                            producer_pull, producer_done, &p),
                     0);
    f.held[0] = NULL;
    fake_pump(&f);
    assert_int_equal(p.ndone, 1);
    assert_int_equal(p.done_status, MR_ECANCELED);
    assert_true(f.is_closed);
    assert_true(p.made < length);
    fake_teardown(&f);

    /* Server close while streaming. */
    memset(&p, 0, sizeof p);
    p.length = length;
    p.is_async = 1;
    fake_setup(&f, NULL);
    f.hold = 1;
    fake_feed(&f, "GET /big HTTP/1.1\r\n\r\n");
    assert_int_equal(mr_http_respond_stream(f.held[0], 200, NULL, NULL, length,
                                            producer_pull, producer_done, &p),
                     0);
    f.held[0] = NULL;
    fake_pump(&f);
    assert_non_null(p.s);
    mr_http__conn_kill(f.c);
    fake_pump(&f);
    producer_fill(&p);
    assert_int_equal(p.ndone, 1);
    assert_int_equal(p.done_status, MR_ECANCELED);
    fake_teardown(&f);
}

/* ==== real sockets ========================================================== */
struct sock_test;
typedef void (*client_fn)(struct sock_test *t);

struct pending {
    struct mr_http_request *req;
    uv_timer_t timer;
    struct sock_test *t;
    char body[32];
};

struct sock_test {
    uv_loop_t loop;
    struct mr_http_server srv;
    struct mr_http_options opt;
    uv_async_t done;
    pthread_t th;
    client_fn client;
    int port;
    int closed;
    int is_close_requested;
    int no_done; /* the client does not signal the end (server closes itself) */
    /* handler control */
    int hold; /* hold requests (answer on abort) */
    struct mr_http_request *held[16];
    unsigned nheld, naborts, ncalls;
    int late_rc; /* rc of an answer given after abort */
    int is_late_answered;
    uv_timer_t late;
    /* client results (written by the client thread, read after join) */
    int ok;
    char err[256];
    long n_ok;
    double secs;
    char resp[4096];
};

static void on_srv_closed(struct mr_http_server *srv)
{
    struct sock_test *t = MR_CONTAINER_OF(srv, struct sock_test, srv);
    t->closed = 1;
    uv_close((uv_handle_t *)&t->done, NULL);
}

static void on_done(uv_async_t *a)
{
    struct sock_test *t = a->data;
    if (t->is_close_requested) return;
    t->is_close_requested = 1;
    mr_http_server_close(&t->srv, on_srv_closed);
}

static void on_pending_timer_closed(uv_handle_t *h)
{
    mr_free(h->data);
}

static void on_pending_timer(uv_timer_t *tm)
{
    struct pending *p = tm->data;
    mr_http_respond(p->req, 200, "text/plain", NULL, p->body, strlen(p->body));
    tm->data = p;
    uv_close((uv_handle_t *)tm, on_pending_timer_closed);
}

static void late_answer(uv_timer_t *tm)
{
    struct sock_test *t = tm->data;
    unsigned i;
    for (i = 0; i < t->nheld; i++) {
        if (t->held[i] != NULL) {
            t->late_rc = mr_http_respond(t->held[i], 200, NULL, NULL, "late", 4);
            t->held[i] = NULL;
            t->is_late_answered = 1;
        }
    }
    uv_close((uv_handle_t *)tm, NULL);
}

static void sock_abort(void *data, struct mr_http_request *req)
{
    struct sock_test *t = data;
    (void)req;
    t->naborts++;
    /* Answer a little later, from the loop, as the node would. */
    uv_timer_init(&t->loop, &t->late);
    t->late.data = t;
    uv_timer_start(&t->late, late_answer, 20, 0);
}

static void sock_handler(void *data, struct mr_http_request *req)
{
    struct sock_test *t = data;
    t->ncalls++;
    if (strncmp(req->path, "/slow/", 6) == 0) {
        /* Answer after N ms (the number after /slow/). */
        struct pending *p = mr_calloc(1, sizeof *p);
        assert_non_null(p);
        p->req = req;
        p->t = t;
        snprintf(p->body, sizeof p->body, "%s", req->path);
        uv_timer_init(&t->loop, &p->timer);
        p->timer.data = p;
        uv_timer_start(&p->timer, on_pending_timer, strtoul(req->path + 6, NULL, 10), 0);
        return;
    }
    if (strcmp(req->path, "/shutdown") == 0) {
        /* Closing the server from inside a handler aborts this request too. */
        t->is_close_requested = 1;
        mr_http_server_close(&t->srv, on_srv_closed);
        t->late_rc = mr_http_respond(req, 200, NULL, NULL, "bye", 3);
        return;
    }
    if (strcmp(req->path, "/hold") == 0 || t->hold) {
        t->held[t->nheld++] = req;
        mr_http_request_on_abort(req, sock_abort, t);
        return;
    }
    mr_http_respond(req, 200, "text/plain", NULL, req->path, req->path_len);
}

static void *client_main(void *arg)
{
    struct sock_test *t = arg;
    t->ok = 1;
    t->client(t);
    if (!t->no_done) uv_async_send(&t->done);
    return NULL;
}

static void run_socket_test(struct sock_test *t, client_fn client)
{
    char errmsg[MR_ERRMSG_SIZE];
    long live = mr_alloc_live();
    assert_int_equal(uv_loop_init(&t->loop), 0);
    assert_int_equal(mr_http_server_init(&t->srv, &t->loop, &t->opt, sock_handler, t), 0);
    assert_int_equal(mr_http_server_listen(&t->srv, "127.0.0.1:0", errmsg), 0);
    t->port = mr_http_server_port(&t->srv);
    assert_true(t->port > 0);
    assert_int_equal(uv_async_init(&t->loop, &t->done, on_done), 0);
    t->done.data = t;
    t->client = client;
    assert_int_equal(pthread_create(&t->th, NULL, client_main, t), 0);
    assert_int_equal(uv_run(&t->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(pthread_join(t->th, NULL), 0);
    assert_true(t->closed);
    assert_int_equal(uv_loop_close(&t->loop), 0);
    /* A metrics registry keeps its series until the test closes it. */
    if (t->opt.metrics == NULL) assert_int_equal(mr_alloc_live(), live);
    if (!t->ok) fail_msg("client: %s", t->err);
}

#define CFAIL(t, ...)                                                                    \
    do {                                                                                 \
        (t)->ok = 0;                                                                     \
        snprintf((t)->err, sizeof(t)->err, __VA_ARGS__);                                 \
    } while (0)
#define CFAIL_RET(t, ...)                                                                \
    do {                                                                                 \
        CFAIL(t, __VA_ARGS__);                                                           \
        return;                                                                          \
    } while (0)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cli_connect(struct sock_test *t)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (fd < 0) return -1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)t->port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int cli_send(int fd, const char *s, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, s, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        s += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads until `n` complete responses (by Content-Length) are in buf, EOF or
 * timeout. Returns the number of bytes read, -1 on error/timeout. */
static long cli_read_responses(int fd, char *buf, size_t size, int n, int timeout_ms)
{
    size_t len = 0;
    int got = 0;
    double deadline = now_s() + timeout_ms / 1000.0;
    while (got < n) {
        struct pollfd p = {fd, POLLIN, 0};
        ssize_t r;
        int ms = (int)((deadline - now_s()) * 1000);
        if (ms <= 0 || len + 1 >= size) return -1;
        if (poll(&p, 1, ms) <= 0) continue;
        r = recv(fd, buf + len, size - 1 - len, 0);
        if (r <= 0) break;
        len += (size_t)r;
        buf[len] = '\0';
        /* Count complete responses. */
        {
            const char *p0 = buf;
            got = 0;
            for (;;) {
                const char *end = strstr(p0, "\r\n\r\n"),
                           *cl = strstr(p0, "Content-Length: ");
                size_t body;
                if (end == NULL || cl == NULL || cl > end) break;
                body = strtoul(cl + 16, NULL, 10);
                if ((size_t)(end + 4 - buf) + body > len) break;
                got++;
                p0 = end + 4 + body;
            }
        }
    }
    buf[len] = '\0';
    return got >= n ? (long)len : -1;
}

/* Waits until the server closes the connection (EOF or reset). */
static int cli_wait_closed(int fd, int timeout_ms, char *buf, size_t size)
{
    double deadline = now_s() + timeout_ms / 1000.0;
    size_t len = 0;
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        char tmp[4096];
        ssize_t r;
        int ms = (int)((deadline - now_s()) * 1000);
        if (ms <= 0) return -1;
        if (poll(&p, 1, ms) <= 0) continue;
        r = recv(fd, tmp, sizeof tmp, 0);
        if (r <= 0) break;
        if (buf != NULL && len + (size_t)r < size) {
            memcpy(buf + len, tmp, (size_t)r);
            len += (size_t)r;
            buf[len] = '\0';
        }
    }
    return 0;
}

static void client_keep_alive_and_pipelining(struct sock_test *t)
{
    char buf[4096];
    int fd = cli_connect(t), i;
    const char *a, *b, *c;
    if (fd < 0) CFAIL_RET(t, "connect");
    for (i = 0; i < 300; i++) {
        char req[64];
        int n = snprintf(req, sizeof req, "GET /n/%d HTTP/1.1\r\nHost: x\r\n\r\n", i);
        char want[32];
        if (cli_send(fd, req, (size_t)n) != 0) CFAIL_RET(t, "send %d", i);
        if (cli_read_responses(fd, buf, sizeof buf, 1, 2000) < 0)
            CFAIL_RET(t, "read %d", i);
        snprintf(want, sizeof want, "\r\n\r\n/n/%d", i);
        if (strstr(buf, want) == NULL) CFAIL_RET(t, "answer %d: %.120s", i, buf);
        t->n_ok++;
    }
    /* Pipelined: the first answers after 80 ms, the others at once or
     * sooner; answers must still come in request order. */
    {
        const char *req = "GET /slow/80 HTTP/1.1\r\n\r\nGET /fast HTTP/1.1\r\n\r\n"
                          "GET /slow/10 HTTP/1.1\r\n\r\n";
        if (cli_send(fd, req, strlen(req)) != 0) CFAIL_RET(t, "send pipelined");
        if (cli_read_responses(fd, buf, sizeof buf, 3, 3000) < 0) {
            CFAIL_RET(t, "read pipelined: %.120s", buf);
        }
        a = strstr(buf, "/slow/80");
        b = strstr(buf, "/fast");
        c = strstr(buf, "/slow/10");
        if (!(a && b && c && a < b && b < c)) CFAIL_RET(t, "order: %.120s", buf);
    }
    close(fd);
}

static void test_socket_keep_alive_and_pipelined_async_order(void **state)
{
    struct sock_test t;
    (void)state;
    memset(&t, 0, sizeof t);
    run_socket_test(&t, client_keep_alive_and_pipelining);
    assert_int_equal(t.n_ok, 300);
    assert_int_equal(t.srv.stats.requests, 303);
}

static void client_slowloris(struct sock_test *t)
{
    const char *req = "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "
                      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    int fd = cli_connect(t);
    size_t i;
    double start = now_s();
    int closed = 0;
    if (fd < 0) CFAIL_RET(t, "connect");
    for (i = 0; req[i] != '\0' && now_s() - start < 5; i++) {
        struct pollfd p = {fd, POLLIN, 0};
        if (cli_send(fd, req + i, 1) != 0) {
            closed = 1;
            break;
        }
        if (poll(&p, 1, 100) > 0) {
            char tmp[1024];
            ssize_t r = recv(fd, tmp, sizeof tmp - 1, 0);
            if (r > 0) {
                tmp[r] = '\0';
                snprintf(t->resp, sizeof t->resp, "%s", tmp);
            }
            closed = 1;
            break;
        }
    }
    if (!closed) CFAIL_RET(t, "slow client not dropped after %.2fs", now_s() - start);
    cli_wait_closed(fd, 3000, NULL, 0);
    t->secs = now_s() - start;
    close(fd);
}

static void test_socket_slowloris_is_dropped_after_header_timeout(void **state)
{
    struct sock_test t;
    (void)state;
    memset(&t, 0, sizeof t);
    t.opt.header_timeout_ms = 400;
    run_socket_test(&t, client_slowloris);
    assert_true(t.secs >= 0.35);
    assert_true(t.secs < 2.5);
    assert_non_null(strstr(t.resp, "HTTP/1.1 408 "));
    assert_int_equal(t.srv.stats.requests, 0);
}

static void raise_fd_limit(rlim_t want)
{
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < want) {
        rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
}

static void client_many_connections(struct sock_test *t)
{
    enum { TOTAL = 10000, BATCH = 400 };
    static int fds[BATCH];
    char buf[2048];
    int keep = cli_connect(t), done = 0, b = 0;
    if (keep < 0) CFAIL_RET(t, "connect keep");
    while (done < TOTAL) {
        int n = 0, i;
        for (i = 0; i < BATCH && done + i < TOTAL; i++) {
            fds[i] = cli_connect(t);
            if (fds[i] < 0) CFAIL_RET(t, "connect %d: %s", done + i, strerror(errno));
            n++;
            /* Some leave a partial request behind, some a full one. */
            if (i % 3 == 1) cli_send(fds[i], "GET /par", 8);
            if (i % 7 == 2) cli_send(fds[i], "GET /full HTTP/1.1\r\n\r\n", 22);
        }
        for (i = 0; i < n; i++) {
            if (i % 2 == 0) { /* abortive close (RST) for half of them */
                struct linger l = {1, 0};
                setsockopt(fds[i], SOL_SOCKET, SO_LINGER, &l, sizeof l);
            }
            close(fds[i]);
        }
        done += n;
        /* Meanwhile a legal request still gets its answer. */
        {
            char req[64];
            int len = snprintf(req, sizeof req, "GET /batch/%d HTTP/1.1\r\n\r\n", b);
            char want[32];
            if (cli_send(keep, req, (size_t)len) != 0) CFAIL_RET(t, "send keep");
            if (cli_read_responses(keep, buf, sizeof buf, 1, 5000) < 0) {
                CFAIL_RET(t, "keep answer %d", b);
            }
            snprintf(want, sizeof want, "/batch/%d", b);
            if (strstr(buf, want) == NULL) CFAIL_RET(t, "keep body %d", b);
            t->n_ok++;
        }
        b++;
    }
    close(keep);
}

static void test_socket_ten_thousand_connections_open_and_drop(void **state)
{
    struct sock_test t;
    (void)state;
    raise_fd_limit(4096);
    memset(&t, 0, sizeof t);
    run_socket_test(&t, client_many_connections);
    assert_int_equal(t.n_ok, 25);
    assert_true(t.srv.stats.accepted >= 10001);
    assert_int_equal(t.srv.stats.rejected, 0);
}

static void client_over_limit(struct sock_test *t)
{
    int a = cli_connect(t), b = cli_connect(t), c;
    char buf[2048] = "";
    if (a < 0 || b < 0) CFAIL_RET(t, "connect");
    /* Make sure both are accepted before the third. */
    cli_send(a, "GET /a HTTP/1.1\r\n\r\n", 19);
    cli_send(b, "GET /b HTTP/1.1\r\n\r\n", 19);
    if (cli_read_responses(a, buf, sizeof buf, 1, 2000) < 0) CFAIL_RET(t, "a");
    if (cli_read_responses(b, buf, sizeof buf, 1, 2000) < 0) CFAIL_RET(t, "b");
    c = cli_connect(t);
    if (c < 0) CFAIL_RET(t, "connect c");
    if (cli_wait_closed(c, 3000, buf, sizeof buf) != 0) CFAIL_RET(t, "c not closed");
    snprintf(t->resp, sizeof t->resp, "%s", buf);
    close(a);
    close(b);
    close(c);
}

static void test_socket_over_max_connections_gets_503_json(void **state)
{
    struct sock_test t;
    (void)state;
    memset(&t, 0, sizeof t);
    t.opt.max_connections = 2;
    run_socket_test(&t, client_over_limit);
    assert_non_null(strstr(t.resp, "HTTP/1.1 503 Service Unavailable\r\n"));
    assert_non_null(strstr(t.resp, "\"code\":\"unavailable\""));
    assert_int_equal(t.srv.stats.rejected, 1);
}

static void client_big_body(struct sock_test *t)
{
    static char chunk[65536];
    int fd = cli_connect(t), i;
    const char *hdr = "POST /big HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    char buf[4096] = "";
    if (fd < 0) CFAIL_RET(t, "connect");
    memset(chunk, 'x', sizeof chunk);
    cli_send(fd, hdr, strlen(hdr));
    /* 40 chunks of 64 KiB: the server answers 413 past 1 MiB and closes;
     * sending may fail once it has. */
    for (i = 0; i < 40; i++) {
        if (cli_send(fd, "10000\r\n", 7) != 0) break;
        if (cli_send(fd, chunk, sizeof chunk) != 0) break;
        if (cli_send(fd, "\r\n", 2) != 0) break;
    }
    cli_wait_closed(fd, 5000, buf, sizeof buf);
    snprintf(t->resp, sizeof t->resp, "%s", buf);
    close(fd);
}

static void test_socket_oversized_chunked_body_gets_413_then_close(void **state)
{
    struct sock_test t;
    (void)state;
    memset(&t, 0, sizeof t);
    run_socket_test(&t, client_big_body);
    assert_non_null(strstr(t.resp, "HTTP/1.1 413 Payload Too Large\r\n"));
    assert_non_null(strstr(t.resp, "\"code\":\"too_large\""));
    assert_int_equal(t.ncalls, 0);
}

static void client_disconnect_while_pending(struct sock_test *t)
{
    int fd = cli_connect(t);
    if (fd < 0) CFAIL_RET(t, "connect");
    cli_send(fd, "GET /hold HTTP/1.1\r\n\r\n", 22);
    usleep(100 * 1000);
    close(fd);
    usleep(200 * 1000); /* the late answer happens meanwhile */
}

static void test_socket_client_disconnect_while_handler_pending(void **state)
{
    struct sock_test t;
    (void)state;
    memset(&t, 0, sizeof t);
    run_socket_test(&t, client_disconnect_while_pending);
    assert_int_equal(t.ncalls, 1);
    assert_int_equal(t.naborts, 1);
    assert_true(t.is_late_answered);
    assert_int_equal(t.late_rc, MR_ECANCELED);
}

static void client_pending_at_close(struct sock_test *t)
{
    int fd = cli_connect(t);
    char buf[256];
    if (fd < 0) CFAIL_RET(t, "connect");
    cli_send(fd, "GET /hold HTTP/1.1\r\n\r\n", 22);
    usleep(100 * 1000);
    /* Returning closes the server with the request still pending; keep the
     * socket open until the server has closed it. */
    uv_async_send(&t->done);
    if (cli_wait_closed(fd, 3000, buf, sizeof buf) != 0) CFAIL(t, "not closed by server");
    close(fd);
}

static void *client_main_no_done(void *arg)
{
    struct sock_test *t = arg;
    t->ok = 1;
    t->client(t);
    return NULL;
}

static void test_socket_server_close_aborts_pending_requests(void **state)
{
    struct sock_test t;
    char errmsg[MR_ERRMSG_SIZE];
    long live = mr_alloc_live();
    (void)state;
    memset(&t, 0, sizeof t);
    assert_int_equal(uv_loop_init(&t.loop), 0);
    assert_int_equal(mr_http_server_init(&t.srv, &t.loop, NULL, sock_handler, &t), 0);
    assert_int_equal(mr_http_server_listen(&t.srv, "127.0.0.1:0", errmsg), 0);
    t.port = mr_http_server_port(&t.srv);
    assert_int_equal(uv_async_init(&t.loop, &t.done, on_done), 0);
    t.done.data = &t;
    t.client = client_pending_at_close;
    assert_int_equal(pthread_create(&t.th, NULL, client_main_no_done, &t), 0);
    assert_int_equal(uv_run(&t.loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(pthread_join(t.th, NULL), 0);
    assert_true(t.closed);
    assert_int_equal(t.naborts, 1);
    assert_int_equal(t.late_rc, MR_ECANCELED);
    assert_int_equal(uv_loop_close(&t.loop), 0);
    assert_int_equal(mr_alloc_live(), live);
    if (!t.ok) fail_msg("client: %s", t.err);
}

static void noop_handler(void *data, struct mr_http_request *req)
{
    (void)data;
    mr_http_respond(req, 204, NULL, NULL, NULL, 0);
}

static void client_shutdown(struct sock_test *t)
{
    int fd = cli_connect(t);
    if (fd < 0) CFAIL_RET(t, "connect");
    cli_send(fd, "GET /shutdown HTTP/1.1\r\n\r\n", 26);
    if (cli_wait_closed(fd, 3000, t->resp, sizeof t->resp) != 0) CFAIL(t, "not closed");
    close(fd);
}

static void test_socket_handler_may_close_the_server(void **state)
{
    struct sock_test t;
    (void)state;
    memset(&t, 0, sizeof t);
    t.no_done = 1;
    run_socket_test(&t, client_shutdown);
    assert_int_equal(t.late_rc, MR_ECANCELED);
    assert_string_equal(t.resp, "");
}

static void client_pipeline_flood(struct sock_test *t)
{
    enum { N = 2000 };
    struct mr_http_buf req;
    static char buf[1 << 20];
    int fd = cli_connect(t), i;
    const char *p;
    if (fd < 0) CFAIL_RET(t, "connect");
    mr_http_buf_init(&req);
    for (i = 0; i < N; i++) mr_http_buf_printf(&req, "GET /p/%d HTTP/1.1\r\n\r\n", i);
    if (cli_send(fd, req.data, req.len) != 0) CFAIL(t, "send");
    mr_http_buf_close(&req);
    if (!t->ok) return;
    if (cli_read_responses(fd, buf, sizeof buf, N, 10000) < 0) CFAIL_RET(t, "read");
    p = buf;
    for (i = 0; i < N; i++) {
        char want[32];
        snprintf(want, sizeof want, "\r\n\r\n/p/%d", i);
        p = strstr(p, want);
        if (p == NULL) CFAIL_RET(t, "answer %d missing or out of order", i);
        p += strlen(want);
        t->n_ok++;
    }
    close(fd);
}

static void
test_socket_pipeline_flood_is_answered_in_order_under_backpressure(void **state)
{
    struct sock_test t;
    (void)state;
    memset(&t, 0, sizeof t);
    t.opt.max_pipelined = 8;
    run_socket_test(&t, client_pipeline_flood);
    assert_int_equal(t.n_ok, 2000);
}

static void test_listen_parses_addresses_and_reports_errors(void **state)
{
    uv_loop_t loop;
    struct mr_http_server a, b;
    struct mr_http_metrics m;
    struct mr_http_options o = {0};
    char errmsg[MR_ERRMSG_SIZE] = "", addr[64];
    static const char *const bad[] = {"127.0.0.1",       "127.0.0.1:", "127.0.0.1:x",
                                      "127.0.0.1:70000", "[::1",       "[::1]8000",
                                      "nohost:80",       ":80",        "1.2.3:80"};
    unsigned i;
    int rc;
    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    mr_http_metrics_init(&m);
    o.metrics = &m;
    assert_int_equal(mr_http_server_init(&a, &loop, &o, noop_handler, NULL), 0);
    /* The same registry cannot take a second server's metrics. */
    assert_int_equal(mr_http_server_init(&b, &loop, &o, noop_handler, NULL), MR_EINVAL);
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(mr_http_server_listen(&a, bad[i], errmsg), MR_EINVAL);
        assert_non_null(strstr(errmsg, "bad listen address"));
    }
    assert_int_equal(mr_http_server_port(&a), -1);
    assert_int_equal(mr_http_server_listen(&a, "127.0.0.1:0", errmsg), 0);
    assert_true(mr_http_server_port(&a) > 0);
    /* Port in use. */
    assert_int_equal(mr_http_server_init(&b, &loop, NULL, noop_handler, NULL), 0);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", mr_http_server_port(&a));
    assert_int_equal(mr_http_server_listen(&b, addr, errmsg), UV_EADDRINUSE);
    assert_non_null(strstr(errmsg, addr));
    mr_http_server_close(&b, NULL);
    mr_http_server_close(&a, NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    /* IPv6 loopback, where the kernel has it. */
    assert_int_equal(mr_http_server_init(&a, &loop, NULL, noop_handler, NULL), 0);
    rc = mr_http_server_listen(&a, "[::1]:0", errmsg);
    if (rc == 0) {
        assert_true(mr_http_server_port(&a) > 0);
    } else {
        assert_true(rc == UV_EADDRNOTAVAIL || rc == UV_EAFNOSUPPORT);
    }
    mr_http_server_close(&a, NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    mr_http_metrics_close(&m);
}

static void client_metrics(struct sock_test *t)
{
    char buf[2048];
    int fd = cli_connect(t);
    if (fd < 0) CFAIL_RET(t, "connect");
    cli_send(fd, "GET /m HTTP/1.1\r\n\r\nGET /m2 HTTP/1.1\r\n\r\nBAD\r\n\r\n", 46);
    if (cli_wait_closed(fd, 3000, buf, sizeof buf) != 0) CFAIL(t, "not closed");
    close(fd);
}

static void test_socket_server_records_metrics_by_status_class(void **state)
{
    struct sock_test t;
    struct mr_http_metrics m;
    struct mr_http_buf b;
    long live = mr_alloc_live();
    (void)state;
    memset(&t, 0, sizeof t);
    mr_http_metrics_init(&m);
    t.opt.metrics = &m;
    run_socket_test(&t, client_metrics);
    mr_http_buf_init(&b);
    assert_int_equal(mr_http_metrics_render(&m, &b), 0);
    assert_non_null(strstr(b.data, "moonraft_http_requests_total{code=\"2xx\"} 2\n"));
    assert_non_null(strstr(b.data, "moonraft_http_requests_total{code=\"4xx\"} 1\n"));
    assert_non_null(strstr(b.data, "moonraft_http_request_duration_seconds_count 2\n"));
    assert_non_null(strstr(b.data, "moonraft_http_connections 0\n"));
    assert_non_null(
        strstr(b.data, "# TYPE moonraft_http_request_duration_seconds histogram\n"));
    mr_http_buf_close(&b);
    mr_http_metrics_close(&m);
    assert_int_equal(mr_alloc_live(), live);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_escape_quotes_backslash_and_control_chars),
        cmocka_unit_test(test_json_escape_keeps_valid_utf8_and_replaces_invalid),
        cmocka_unit_test(test_json_writer_places_commas_and_colons),
        cmocka_unit_test(test_error_body_has_code_message_and_leader),
        cmocka_unit_test(test_buf_reports_out_of_memory_and_stays_failed),
        cmocka_unit_test(test_metrics_render_exact_prometheus_text),
        cmocka_unit_test(test_get_decodes_path_query_and_headers),
        cmocka_unit_test(test_absolute_url_and_missing_query),
        cmocka_unit_test(test_post_body_with_content_length_split_byte_by_byte),
        cmocka_unit_test(test_chunked_body_is_decoded),
        cmocka_unit_test(test_pipelined_answers_leave_in_request_order),
        cmocka_unit_test(test_backpressure_stops_reading_at_max_pipelined),
        cmocka_unit_test(test_oversized_header_gets_431_json_and_close),
        cmocka_unit_test(test_too_many_header_fields_gets_431),
        cmocka_unit_test(test_oversized_body_by_content_length_gets_413_before_the_body),
        cmocka_unit_test(test_oversized_chunked_body_gets_413),
        cmocka_unit_test(test_truncated_body_then_eof_never_calls_handler),
        cmocka_unit_test(test_malformed_requests_get_400_json),
        cmocka_unit_test(test_bad_request_after_good_ones_keeps_earlier_answers),
        cmocka_unit_test(test_http10_closes_unless_keep_alive),
        cmocka_unit_test(test_connection_close_ends_after_that_answer),
        cmocka_unit_test(test_expect_100_continue_is_answered_before_the_body),
        cmocka_unit_test(test_head_answer_has_length_but_no_body),
        cmocka_unit_test(test_error_helpers_add_retry_after_allow_and_leader),
        cmocka_unit_test(test_header_timeout_answers_408_and_idle_timeout_closes),
        cmocka_unit_test(test_disconnect_aborts_pending_and_discards_later_answer),
        cmocka_unit_test(test_router_dispatches_and_answers_404_and_405),
        cmocka_unit_test(test_keep_alive_requests_allocate_nothing_in_steady_state),
        cmocka_unit_test(test_write_error_closes_and_aborts_the_rest),
        cmocka_unit_test(test_body_timeout_answers_408),
        cmocka_unit_test(test_out_of_memory_while_reading_closes_cleanly),
        cmocka_unit_test(
            test_streamed_answer_sends_a_large_body_in_order_then_the_next_answer),
        cmocka_unit_test(
            test_streamed_answer_reads_ahead_at_most_a_few_chunks_of_a_slow_reader),
        cmocka_unit_test(
            test_streamed_answer_ends_canceled_when_the_client_leaves_mid_stream),
        cmocka_unit_test(test_socket_keep_alive_and_pipelined_async_order),
        cmocka_unit_test(test_socket_slowloris_is_dropped_after_header_timeout),
        cmocka_unit_test(test_socket_ten_thousand_connections_open_and_drop),
        cmocka_unit_test(test_socket_over_max_connections_gets_503_json),
        cmocka_unit_test(test_socket_oversized_chunked_body_gets_413_then_close),
        cmocka_unit_test(test_socket_client_disconnect_while_handler_pending),
        cmocka_unit_test(test_socket_server_close_aborts_pending_requests),
        cmocka_unit_test(test_socket_handler_may_close_the_server),
        cmocka_unit_test(
            test_socket_pipeline_flood_is_answered_in_order_under_backpressure),
        cmocka_unit_test(test_listen_parses_addresses_and_reports_errors),
        cmocka_unit_test(test_socket_server_records_metrics_by_status_class),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
