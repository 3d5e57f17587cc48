/* Writes whose outcome is in doubt, with real processes: what a client is
 * told when the leader that has its write is replaced or stops. A 503 must
 * mean "not applied"; anything the node cannot be sure of is a 504.
 *
 * The peer network runs through the chaos proxy (tests/chaos/proxy.h), which
 * cuts single directions: a follower can then hear a new leader (which dials
 * it) without being able to reach it, which is the one way a re-sent
 * command can be left waiting for a leader until its deadline. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "proxy.h"

#define N 5

static struct mr_it_cluster cluster;
static struct mr_chaos_proxy *proxy;

static int setup_none(void **state)
{
    (void)state;
    memset(&cluster, 0, sizeof cluster);
    proxy = NULL;
    return 0;
}

static int teardown_cluster(void **state)
{
    int problems;
    (void)state;
    problems = mr_it_cluster_destroy(&cluster);
    mr_chaos_proxy_stop(proxy); /* NULL-safe */
    proxy = NULL;
    return problems;
}

static int free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static int port_taken(int port, const int *listen, int n_listen)
{
    int i;
    for (i = 0; i < cluster.n; i++)
        if (cluster.nodes[i].raft_port == port || cluster.nodes[i].http_port == port)
            return 1;
    for (i = 0; i < n_listen; i++)
        if (listen[i] == port) return 1;
    return 0;
}

/* N nodes behind the proxy: node i advertises its harness raft_port (the
 * proxy's) and binds a port of its own (--raft-listen). Returns the leader. */
static int start_behind_proxy(const char *extra)
{
    const char *names[N];
    int advertised[N], listen[N], i;
    mr_it_cluster_init(&cluster, N);
    for (i = 0; i < N; i++) {
        do {
            listen[i] = free_port();
        } while (port_taken(listen[i], listen, i));
        names[i] = cluster.nodes[i].name;
        advertised[i] = cluster.nodes[i].raft_port;
    }
    assert_int_equal(mr_chaos_proxy_start(&proxy, N, names, advertised, listen), 0);
    for (i = 0; i < N; i++) {
        char args[512];
        snprintf(args, sizeof args, "--raft-listen 127.0.0.1:%d %s", listen[i], extra);
        assert_true(mr_it_start_static(&cluster, i, args) > 0);
    }
    i = mr_it_wait_leader(&cluster, 15000, 1);
    assert_true(i >= 0);
    return i;
}

/* One HTTP request on its own thread, so that the test can act on the
 * cluster while the request waits for its answer. Only mr_it_http_port runs
 * there (mr_it_jq is not thread-safe). */
struct bg_request {
    pthread_t thread;
    int port;
    const char *path, *body, *headers;
    struct mr_it_resp resp;
};

static void *bg_main(void *arg)
{
    struct bg_request *r = arg;
    r->resp = mr_it_http_port(r->port, "POST", r->path, r->body, r->headers, 30000);
    return NULL;
}

/* GET /v1/status of node i, field `field` (a number), or -1. */
static long long status_num(int i, const char *field)
{
    char expr[64];
    long long v = -1;
    struct mr_it_resp r = mr_it_http_port(cluster.nodes[i].http_port, "GET", "/v1/status",
                                          NULL, NULL, 2000);
    if (r.status == 200) {
        snprintf(expr, sizeof expr, "j.%s", field);
        v = strtoll(mr_it_jq(r.body, expr), NULL, 10);
    }
    mr_it_resp_free(&r);
    return v;
}

/* A follower forwards a keyed command to the leader; the leader appends it
 * (it cannot commit: the three other nodes are paused) and is then paused
 * itself. The other three elect a new leader, which the follower hears but
 * cannot reach (its direction of those links is cut), so the re-sent command
 * waits for a leader until its deadline. The old leader's entry reached the
 * other three before they were paused, so the new leader commits it: the
 * command WAS applied, and the answer must be 504 (may or may not have been
 * applied), never 503 (not applied). */
static void
test_a_keyed_write_resent_after_a_leader_change_and_then_stuck_is_answered_504(
    void **state)
{
    int leader, f, i, others[N - 2], n_others = 0, nl = -1;
    long long commit, end;
    struct bg_request req;
    (void)state;
    /* Slow elections: the old leader must not step down (check_quorum)
     * before it has taken the command; the request deadline leaves room for
     * the new election. */
    leader =
        start_behind_proxy("--election-timeout-ms 1000,2000 --request-timeout-ms 9000");
    f = (leader + 1) % N;
    for (i = 0; i < N; i++)
        if (i != leader && i != f) others[n_others++] = i;

    /* The follower reaches only the leader from now on (it still hears everyone). */
    for (i = 0; i < n_others; i++) mr_chaos_proxy_cut(proxy, f, others[i], 1);
    mr_it_sleep_ms(500); /* its redials are refused: sends to them fail fast now */

    for (i = 0; i < n_others; i++) mr_it_pause(&cluster, others[i]);
    commit = status_num(leader, "commit");
    assert_true(commit > 0);

    memset(&req, 0, sizeof req);
    req.port = cluster.nodes[f].http_port;
    req.path = "/v1/command";
    req.body = "{\"op\":\"put\",\"key\":\"fwd\",\"value\":1}";
    req.headers = "Idempotency-Key: fwd-504-1\r\n";
    assert_int_equal(pthread_create(&req.thread, NULL, bg_main, &req), 0);

    /* The leader has the command in its log, uncommitted. */
    end = mr_it_now_ms() + 3000;
    while (status_num(leader, "last_index") <= commit && mr_it_now_ms() < end)
        mr_it_sleep_ms(5);
    assert_true(status_num(leader, "last_index") > commit);
    assert_int_equal(status_num(leader, "commit"), commit);
    mr_it_sleep_ms(100); /* its appends to the paused nodes have left */

    mr_it_pause(&cluster, leader);
    for (i = 0; i < n_others; i++) mr_it_resume(&cluster, others[i]);

    assert_int_equal(pthread_join(req.thread, NULL), 0);
    if (req.resp.status != 504) {
        fprintf(stderr, "status %d (want 504), body: %s\n", req.resp.status,
                req.resp.body ? req.resp.body : "");
        mr_it_dump_logs(&cluster);
    }
    assert_int_equal(req.resp.status, 504);
    assert_string_equal(mr_it_jq(req.resp.body, "j.error.code"), "timeout");
    mr_it_resp_free(&req.resp);

    /* ... and the command was applied indeed: by the new leader, from the
     * old leader's entry. */
    end = mr_it_now_ms() + 10000;
    while (nl < 0 && mr_it_now_ms() < end) {
        for (i = 0; i < n_others; i++) {
            struct mr_it_resp r =
                mr_it_http(&cluster, others[i], "GET", "/v1/status", NULL, NULL);
            if (r.status == 200 && strcmp(mr_it_jq(r.body, "j.role"), "leader") == 0)
                nl = others[i];
            mr_it_resp_free(&r);
        }
        if (nl < 0) mr_it_sleep_ms(20);
    }
    assert_true(nl >= 0);
    {
        struct mr_it_resp r = mr_it_http(&cluster, nl, "GET", "/v1/kv/fwd", NULL, NULL);
        assert_int_equal(r.status, 200);
        assert_string_equal(mr_it_jq(r.body, "j.value"), "1");
        mr_it_resp_free(&r);
    }
    mr_it_resume(&cluster, leader);
}

/* A leader that shuts down while a transfer it started is in flight cannot
 * say the transfer did not happen: TimeoutNow may be on its way, and the
 * target then takes over. Paused, the target still receives it (in its
 * socket); resumed, it becomes the leader. */
static void test_a_transfer_cut_short_by_shutdown_is_answered_504(void **state)
{
    int leader, target, i;
    char body[64];
    struct bg_request req;
    (void)state;
    mr_it_cluster_init(&cluster, 3);
    for (i = 0; i < 3; i++) assert_true(mr_it_start_static(&cluster, i, NULL) > 0);
    leader = mr_it_wait_leader(&cluster, 10000, 1);
    assert_true(leader >= 0);
    target = (leader + 1) % 3;
    mr_it_pause(&cluster, target);

    snprintf(body, sizeof body, "{\"id\":\"%s\"}", cluster.nodes[target].name);
    memset(&req, 0, sizeof req);
    req.port = cluster.nodes[leader].http_port;
    req.path = "/v1/leader/transfer";
    req.body = body;
    assert_int_equal(pthread_create(&req.thread, NULL, bg_main, &req), 0);
    mr_it_sleep_ms(300); /* the transfer started: TimeoutNow went to the target */
    assert_int_equal(mr_it_stop(&cluster, leader), 0);

    assert_int_equal(pthread_join(req.thread, NULL), 0);
    if (req.resp.status != 504)
        fprintf(stderr, "status %d (want 504), body: %s\n", req.resp.status,
                req.resp.body ? req.resp.body : "");
    assert_int_equal(req.resp.status, 504);
    assert_string_equal(mr_it_jq(req.resp.body, "j.error.code"), "timeout");
    mr_it_resp_free(&req.resp);

    /* ... and the cluster goes on. The transfer usually completes (the target
     * acts on the TimeoutNow it got before the pause), which is why 503 "not
     * applied" was wrong; but the resumed target counts the paused time as
     * elapsed (ticks follow the clock) and may first grant the other
     * follower's vote, so either of the two may lead. */
    mr_it_resume(&cluster, target);
    int now_leader = mr_it_wait_leader(&cluster, 10000, 1);
    assert_true(now_leader >= 0 && now_leader != leader);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_a_keyed_write_resent_after_a_leader_change_and_then_stuck_is_answered_504,
            setup_none, teardown_cluster),
        cmocka_unit_test_setup_teardown(
            test_a_transfer_cut_short_by_shutdown_is_answered_504, setup_none,
            teardown_cluster),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
