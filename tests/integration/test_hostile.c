/* Hostile HTTP against a real node: garbage, oversized and truncated requests,
 * slowloris, 10,000 connections opened and dropped, pipelining. The node must
 * answer each with a JSON error or a close, keep serving legal requests all
 * along, and (under ASan) report nothing at teardown. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

static struct mr_it_cluster cluster;

static int setup_none(void **state)
{
    (void)state;
    memset(&cluster, 0, sizeof cluster);
    return 0;
}

static int teardown_cluster(void **state)
{
    (void)state;
    return mr_it_cluster_destroy(&cluster);
}

static int dial(int port)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    assert_true(fd >= 0);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) return; /* the server may have closed already */
        p += w, n -= (size_t)w;
    }
}

/* Reads until the peer closes or timeout_ms passes; returns bytes read. */
static size_t read_until_close(int fd, char *buf, size_t cap, int timeout_ms)
{
    size_t got = 0;
    long long end = mr_it_now_ms() + timeout_ms;
    while (got + 1 < cap) {
        struct pollfd p = {fd, POLLIN, 0};
        long long left = end - mr_it_now_ms();
        ssize_t r;
        if (left <= 0 || poll(&p, 1, (int)left) <= 0) break;
        r = recv(fd, buf + got, cap - 1 - got, 0);
        if (r <= 0) break;
        got += (size_t)r;
    }
    buf[got] = '\0';
    return got;
}

/* Reads one answer (until its JSON error body is complete), a close, or the
 * timeout. The client never half-closes: the server takes EOF as "gone". */
static void read_answer(int fd, char *buf, size_t cap, int timeout_ms)
{
    size_t got = 0;
    long long end = mr_it_now_ms() + timeout_ms;
    buf[0] = '\0';
    while (got + 1 < cap && strstr(buf, "}}") == NULL) {
        struct pollfd p = {fd, POLLIN, 0};
        long long left = end - mr_it_now_ms();
        ssize_t r;
        if (left <= 0 || poll(&p, 1, (int)left) <= 0) break;
        r = recv(fd, buf + got, cap - 1 - got, 0);
        if (r <= 0) break;
        got += (size_t)r;
        buf[got] = '\0';
    }
}

/* The status code of the first response in buf, or 0. */
static int first_status(const char *buf)
{
    int st = 0;
    if (sscanf(buf, "HTTP/1.1 %d", &st) != 1) return 0;
    return st;
}

static void expect_serving(int node)
{
    struct mr_it_resp r = mr_it_http(&cluster, node, "GET", "/v1/status", NULL, NULL);
    int st = r.status;
    if (st != 200) fprintf(stderr, "legal request: %d %s\n", st, r.body);
    mr_it_resp_free(&r);
    assert_int_equal(st, 200);
}

static int start_cluster(const char *extra)
{
    int i;
    mr_it_cluster_init(&cluster, 3);
    for (i = 0; i < 3; i++) mr_it_start_static(&cluster, i, extra);
    i = mr_it_wait_leader(&cluster, 10000, 1);
    assert_true(i >= 0);
    return i;
}

static void test_malformed_requests_get_json_errors_and_the_node_keeps_serving(void **state)
{
    static char big[40000], buf[65536];
    struct {
        const char *name;
        const char *raw; /* NULL: built below */
        int want;        /* first status; 0 = the server just closes */
    } cases[] = {
        {"garbage request line", "GARBAGE\r\n\r\n", 400},
        {"binary junk", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400},
        {"bad version", "GET /v1/status HTTP/7.3\r\n\r\n", 400},
        {"space in the target", "GET /v1/st atus HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"bad content length", "POST /v1/command HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400},
        {"two content lengths",
         "POST /v1/command HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400},
        {"bad chunk size",
         "POST /v1/command HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
         400},
        {"invalid JSON", "POST /v1/command HTTP/1.1\r\nContent-Length: 9\r\n\r\n{\"op\":pu}", 400},
        {"invalid UTF-8 in a JSON string",
         "POST /v1/command HTTP/1.1\r\nContent-Length: 33\r\n\r\n"
         "{\"op\":\"put\",\"key\":\"\xff\xfe\",\"value\":1}",
         400},
        {"NUL inside JSON",
         "POST /v1/command HTTP/1.1\r\nContent-Length: 12\r\n\r\n{\"op\":\"\0a\"}x", 400},
        {"JSON nested too deep", NULL, 400},
        {"huge header", NULL, 431},
    };
    int leader, port, n;
    (void)state;
    leader = start_cluster(NULL);
    port = cluster.nodes[(leader + 1) % 3].http_port;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int fd = dial(port);
        size_t len;
        if (strcmp(cases[i].name, "huge header") == 0) {
            n = snprintf(big, sizeof big, "GET /v1/status HTTP/1.1\r\nX-Big: ");
            memset(big + n, 'a', 30000);
            memcpy(big + n + 30000, "\r\n\r\n", 5);
            send_all(fd, big, strlen(big));
        } else if (strcmp(cases[i].name, "JSON nested too deep") == 0) {
            char body[20001];
            memset(body, '[', 20000);
            body[20000] = '\0';
            n = snprintf(big, sizeof big,
                         "POST /v1/command HTTP/1.1\r\nContent-Length: 20000\r\n\r\n%s", body);
            send_all(fd, big, (size_t)n);
        } else {
            /* lengths are in the literals; send everything, NULs included */
            const char *raw = cases[i].raw;
            len = strlen(raw);
            if (strcmp(cases[i].name, "NUL inside JSON") == 0) len += 1 + strlen(raw + len + 1);
            send_all(fd, raw, len);
        }
        read_answer(fd, buf, sizeof buf, 5000);
        close(fd);
        if (first_status(buf) != cases[i].want)
            fail_msg("%s: got \"%.200s\", want status %d", cases[i].name, buf, cases[i].want);
        if (cases[i].want >= 400 && strstr(buf, "{\"error\":{\"code\":") == NULL)
            fail_msg("%s: no JSON error body: %.300s", cases[i].name, buf);
        expect_serving((leader + 1) % 3);
    }
    /* a body cut short by a closing client: nothing is applied */
    {
        int fd = dial(port);
        const char *part = "PUT /v1/kv/cut HTTP/1.1\r\nContent-Length: 100\r\n\r\n\"abc";
        send_all(fd, part, strlen(part));
        close(fd);
        mr_it_sleep_ms(100);
        struct mr_it_resp r = mr_it_http(&cluster, leader, "GET", "/v1/kv/cut", NULL, NULL);
        assert_int_equal(r.status, 404);
        mr_it_resp_free(&r);
    }
}

static void test_slowloris_is_cut_off_while_others_are_served(void **state)
{
    enum { SLOW = 20 };
    int fds[SLOW], leader, port, closed = 0, i;
    const char *head = "GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    long long t0, worst = 0;
    (void)state;
    leader = start_cluster("--http-idle-timeout-ms 600");
    port = cluster.nodes[leader].http_port;
    for (i = 0; i < SLOW; i++) fds[i] = dial(port);
    t0 = mr_it_now_ms();
    /* one byte per connection every 100 ms for 2 s; never a full head */
    for (int step = 0; step < 20; step++) {
        for (i = 0; i < SLOW; i++) {
            if (fds[i] >= 0) send_all(fds[i], head + (step % (int)strlen(head)), 1);
        }
        long long a = mr_it_now_ms();
        expect_serving(leader);
        if (mr_it_now_ms() - a > worst) worst = mr_it_now_ms() - a;
        mr_it_sleep_ms(100);
    }
    /* every slow connection was answered (408) or closed by the server */
    for (i = 0; i < SLOW; i++) {
        char buf[4096];
        read_until_close(fds[i], buf, sizeof buf, 1000);
        struct pollfd p = {fds[i], POLLIN, 0};
        if (poll(&p, 1, 0) == 1 && recv(fds[i], buf, sizeof buf, MSG_DONTWAIT) == 0) closed++;
        else if (strstr(buf, "HTTP/1.1 408") != NULL) closed++;
        close(fds[i]);
    }
    fprintf(stderr, "slowloris: %d of %d slow connections cut after %lld ms; worst legal request %lld ms\n",
            closed, SLOW, mr_it_now_ms() - t0, worst);
    assert_int_equal(closed, SLOW);
    assert_true(worst < 1000);
}

static int open_fds(pid_t pid)
{
    char path[64];
    int n = 0;
    DIR *d;
    struct dirent *e;
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    d = opendir(path);
    if (d == NULL) return -1;
    while ((e = readdir(d)) != NULL) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void test_ten_thousand_connections_opened_and_dropped(void **state)
{
    enum { TOTAL = 10000, BATCH = 250 };
    int leader, node, port, fds[BATCH], before, after, opened = 0;
    struct rlimit rl;
    long long t0;
    (void)state;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 4096 && rl.rlim_max >= 4096) {
        rl.rlim_cur = 4096;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    /* room for the closes the server has not seen yet: a legal request must
     * never meet the connection limit's 503 */
    leader = start_cluster("--max-connections 4000");
    node = (leader + 1) % 3;
    port = cluster.nodes[node].http_port;
    before = open_fds(cluster.nodes[node].pid);
    t0 = mr_it_now_ms();
    for (int done = 0; done < TOTAL; done += BATCH) {
        for (int i = 0; i < BATCH; i++) {
            fds[i] = dial(port);
            opened++;
            if (i % 3 == 1) send_all(fds[i], "GET /v1/sta", 11);          /* half a request */
            if (i % 3 == 2) send_all(fds[i], "GET /v1/status HTTP/1.1\r\n\r\n", 27); /* whole */
        }
        for (int i = 0; i < BATCH; i++) {
            if (i % 5 == 0) { /* some with a reset instead of a FIN */
                struct linger lg = {1, 0};
                setsockopt(fds[i], SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            }
            close(fds[i]);
        }
        if ((done / BATCH) % 8 == 0) expect_serving(node);
    }
    expect_serving(node);
    mr_it_sleep_ms(500); /* let the server see every close */
    after = open_fds(cluster.nodes[node].pid);
    fprintf(stderr, "%d connections opened and dropped in %lld ms; node fds %d before, %d after\n",
            opened, mr_it_now_ms() - t0, before, after);
    assert_true(after <= before + 5);
    /* writes still replicate */
    struct mr_it_resp r = mr_it_http(&cluster, node, "PUT", "/v1/kv/after", "1", NULL);
    assert_int_equal(r.status, 200);
    mr_it_resp_free(&r);
}

static void test_pipelined_requests_are_answered_in_order(void **state)
{
    enum { N = 40 };
    static char req[N * 128], buf[1 << 17];
    int leader, fd, off = 0, count = 0;
    long long last = 0;
    (void)state;
    leader = start_cluster(NULL);
    for (int i = 0; i < N; i++) {
        char body[32];
        int bl = snprintf(body, sizeof body, "%d", i);
        off += snprintf(req + off, sizeof req - (size_t)off,
                        "PUT /v1/kv/p%02d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s",
                        i, bl, body);
    }
    off += snprintf(req + off, sizeof req - (size_t)off,
                    "GET /v1/kv/p%02d HTTP/1.1\r\nConnection: close\r\n\r\n", N - 1);
    fd = dial(cluster.nodes[(leader + 1) % 3].http_port);
    send_all(fd, req, (size_t)off);
    read_until_close(fd, buf, sizeof buf, 10000);
    close(fd);
    /* N answers with growing indexes, then the read of the last write */
    for (const char *p = buf; (p = strstr(p, "HTTP/1.1 ")) != NULL; p++) {
        const char *ix = strstr(p, "\"index\":");
        /* the GET overlaps the PUTs in time: either answer is linearizable */
        assert_true(first_status(p) == 200 || (count == N && first_status(p) == 404));
        if (count == N) {
            count++;
            break;
        }
        assert_non_null(ix);
        long long v = atoll(ix + 8);
        if (count < N) assert_true(v > last);
        last = v;
        count++;
    }
    assert_int_equal(count, N + 1);
    {
        struct mr_it_resp r = mr_it_http(&cluster, leader, "GET", "/v1/kv/p39", NULL, NULL);
        assert_int_equal(r.status, 200);
        assert_string_equal(mr_it_jq(r.body, "('%d'):format(j.value)"), "39");
        mr_it_resp_free(&r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_malformed_requests_get_json_errors_and_the_node_keeps_serving, setup_none,
            teardown_cluster),
        cmocka_unit_test_setup_teardown(test_slowloris_is_cut_off_while_others_are_served,
                                        setup_none, teardown_cluster),
        cmocka_unit_test_setup_teardown(test_ten_thousand_connections_opened_and_dropped,
                                        setup_none, teardown_cluster),
        cmocka_unit_test_setup_teardown(test_pipelined_requests_are_answered_in_order,
                                        setup_none, teardown_cluster),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
