/* Integration: real moonraft processes on loopback, driven over HTTP. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <fcntl.h>
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

#define EXPECT_STATUS(resp, want) MR_IT_EXPECT_STATUS(&cluster, resp, want)

static void put_key(int node, const char *key, const char *value_json)
{
    char path[256];
    struct mr_it_resp r;
    snprintf(path, sizeof path, "/v1/kv/%s", key);
    r = mr_it_http(&cluster, node, "PUT", path, value_json, NULL);
    EXPECT_STATUS(r, 200);
    mr_it_resp_free(&r);
}

static void expect_key(int node, const char *key, const char *value)
{
    char path[256];
    struct mr_it_resp r;
    snprintf(path, sizeof path, "/v1/kv/%s", key);
    r = mr_it_http(&cluster, node, "GET", path, NULL, NULL);
    EXPECT_STATUS(r, 200);
    assert_string_equal(mr_it_jq(r.body, "j.value"), value);
    mr_it_resp_free(&r);
}

static void start_static(int n, const char *extra)
{
    int i;
    mr_it_cluster_init(&cluster, n);
    for (i = 0; i < n; i++) mr_it_start_static(&cluster, i, extra);
}

/* The seed's scenario: 4 nodes, writes through two nodes, read from a third,
 * kill -9 the leader, a new leader within a second, nothing acknowledged lost. */
static void test_four_nodes_survive_leader_kill(void **state)
{
    int leader, next, i, reader;
    long long t0, elapsed;
    char key[32], val[32];
    (void)state;
    start_static(4, NULL);
    leader = mr_it_wait_leader(&cluster, 10000, 1);
    assert_true(leader >= 0);
    for (i = 0; i < 20; i++) {
        snprintf(key, sizeof key, "k%d", i);
        snprintf(val, sizeof val, "%d", i);
        put_key(i % 2, key, val);
    }
    for (i = 0; i < 20; i++) {
        snprintf(key, sizeof key, "k%d", i);
        snprintf(val, sizeof val, "%d", i);
        expect_key(2, key, val);
    }
    t0 = mr_it_now_ms();
    mr_it_kill9(&cluster, leader);
    next = mr_it_wait_leader(&cluster, 5000, 0);
    elapsed = mr_it_now_ms() - t0;
    assert_true(next >= 0 && next != leader);
    fprintf(stderr, "re-election took %lld ms\n", elapsed);
    assert_true(elapsed < 1000);
    reader = (next + 1) % 4 == leader ? (next + 2) % 4 : (next + 1) % 4;
    for (i = 0; i < 20; i++) {
        snprintf(key, sizeof key, "k%d", i);
        snprintf(val, sizeof val, "%d", i);
        expect_key(reader, key, val);
    }
    put_key(reader, "after", "\"kill\"");
    expect_key(next, "after", "kill");
}

/* Restart every node: state and membership intact. */
static void test_full_restart_keeps_state_and_members(void **state)
{
    int i, leader;
    struct mr_it_resp r;
    (void)state;
    start_static(3, NULL);
    assert_true(mr_it_wait_leader(&cluster, 10000, 1) >= 0);
    put_key(0, "durable", "{\"nested\":[1,2,3]}");
    for (i = 0; i < 3; i++) assert_int_equal(mr_it_stop(&cluster, i), 0);
    for (i = 0; i < 3; i++) mr_it_start_static(&cluster, i, NULL);
    leader = mr_it_wait_leader(&cluster, 10000, 1);
    assert_true(leader >= 0);
    expect_key(1, "durable", "{\"nested\":[1,2,3]}");
    r = mr_it_http(&cluster, 2, "GET", "/v1/members", NULL, NULL);
    EXPECT_STATUS(r, 200);
    assert_string_equal(mr_it_jq(r.body, "#j.members"), "3");
    mr_it_resp_free(&r);
}

/* After a write load every node reports the same applied index and state hash. */
static void test_replicas_converge_to_identical_state(void **state)
{
    int i, round;
    char key[32], val[32], hash0[128], applied0[64];
    (void)state;
    start_static(3, NULL);
    assert_true(mr_it_wait_leader(&cluster, 10000, 1) >= 0);
    for (i = 0; i < 200; i++) {
        snprintf(key, sizeof key, "load%d", i % 37);
        snprintf(val, sizeof val, "%d", i);
        put_key(i % 3, key, val);
    }
    for (round = 0; round < 100; round++) {
        int same = 1;
        for (i = 0; i < 3; i++) {
            struct mr_it_resp r = mr_it_http(&cluster, i, "GET", "/v1/status?hash=true", NULL, NULL);
            EXPECT_STATUS(r, 200);
            if (i == 0) {
                snprintf(hash0, sizeof hash0, "%s", mr_it_jq(r.body, "j.state_hash"));
                snprintf(applied0, sizeof applied0, "%s", mr_it_jq(r.body, "j.applied"));
            } else if (strcmp(hash0, mr_it_jq(r.body, "j.state_hash")) != 0 ||
                       strcmp(applied0, mr_it_jq(r.body, "j.applied")) != 0) {
                same = 0;
            }
            mr_it_resp_free(&r);
        }
        if (same) break;
        mr_it_sleep_ms(50);
    }
    assert_true(round < 100);
    assert_int_equal((int)strlen(hash0), 64);
}

/* A script error, an infinite loop and a memory bomb each answer an error to
 * the client, and the cluster keeps serving. */
static void test_runaway_scripts_fail_alone(void **state)
{
    struct mr_it_resp r;
    const char *bad[] = {
        "{\"op\":\"error\",\"message\":\"boom\"}",
        "{\"op\":\"loop\"}",
        "{\"op\":\"bomb\"}",
    };
    int i;
    char extra[512];
    (void)state;
    snprintf(extra, sizeof extra, "--state-machine %s/tests/integration/fixtures/hostile.lua --lua-memory-mb 64",
             MR_SOURCE_DIR);
    start_static(3, extra);
    assert_true(mr_it_wait_leader(&cluster, 10000, 1) >= 0);
    for (i = 0; i < 3; i++) {
        r = mr_it_http(&cluster, i, "POST", "/v1/command", bad[i], NULL);
        EXPECT_STATUS(r, 422);
        assert_string_equal(mr_it_jq(r.body, "j.error.code"), "script_error");
        mr_it_resp_free(&r);
    }
    r = mr_it_http(&cluster, 1, "POST", "/v1/command", "{\"op\":\"incr\"}", NULL);
    EXPECT_STATUS(r, 200);
    assert_string_equal(mr_it_jq(r.body, "j.result"), "1");
    mr_it_resp_free(&r);
}

/* Bad config and a missing script stop the node with exit code 2 and a
 * message naming the problem; garbage on the peer port is refused while the
 * cluster keeps serving. */
/* 1 if the node's log file contains needle. */
static int log_has(int i, const char *needle)
{
    char buf[65536];
    size_t got;
    FILE *f = fopen(cluster.nodes[i].log_path, "r");
    if (f == NULL) return 0;
    got = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[got] = '\0';
    if (strstr(buf, needle) == NULL) {
        fprintf(stderr, "log of %s lacks \"%s\":\n%s\n", cluster.nodes[i].name, needle, buf);
        return 0;
    }
    return 1;
}

static void test_bad_inputs_give_clear_errors(void **state)
{
    struct sockaddr_in a;
    int fd, rc;
    const char junk[] = "GET / HTTP/1.1\r\n\r\n\x00\xff\xfe garbage garbage";
    (void)state;
    mr_it_cluster_init(&cluster, 3);
    mr_it_start_args(&cluster, 0, "--election-timeout-ms 10");
    rc = mr_it_wait_exit(&cluster, 0, 5000);
    assert_int_equal(rc, 2);
    mr_it_start_static(&cluster, 0, "--state-machine /nonexistent.lua");
    rc = mr_it_wait_exit(&cluster, 0, 5000);
    assert_int_equal(rc, 2);
    assert_true(log_has(0, "nonexistent.lua"));
    mr_it_start_static(&cluster, 0, "--heartbeat-milliseconds 5");
    rc = mr_it_wait_exit(&cluster, 0, 5000);
    assert_int_equal(rc, 2);
    assert_true(log_has(0, "heartbeat-milliseconds"));
    for (rc = 0; rc < 3; rc++) mr_it_start_static(&cluster, rc, NULL);
    assert_true(mr_it_wait_leader(&cluster, 10000, 1) >= 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)cluster.nodes[1].raft_port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_true(write(fd, junk, sizeof junk) > 0);
    close(fd);
    put_key(1, "still", "\"serving\"");
    expect_key(2, "still", "serving");

    /* a data directory of another cluster is refused, and left as it was */
    assert_int_equal(mr_it_stop(&cluster, 2), 0);
    mr_it_start_static(&cluster, 2, "--cluster-id elsewhere");
    rc = mr_it_wait_exit(&cluster, 2, 5000);
    assert_int_equal(rc, 2);
    assert_true(log_has(2, "belongs to another node or cluster"));
    mr_it_start_static(&cluster, 2, NULL);
    assert_true(mr_it_wait_leader(&cluster, 10000, 1) >= 0);
    expect_key(2, "still", "serving");
}

/* A leader whose disk starts failing takes itself out: the others elect a new
 * leader and keep serving, it answers 503 disk_failed and shows the error on
 * its status, and after a restart on a healthy disk it catches up with
 * nothing acknowledged lost. */
static void test_a_failing_disk_takes_the_node_out_and_the_cluster_goes_on(void **state)
{
    char fault[300], body[64];
    struct mr_it_resp r;
    int leader, i, fd;
    long long t0;
    (void)state;
    mr_it_cluster_init(&cluster, 3);
    snprintf(fault, sizeof fault, "%s/disk-fails", cluster.root);
    setenv("MOONRAFT_FAULT_DISK_FILE", fault, 1);
    mr_it_start_static(&cluster, 0, NULL);
    unsetenv("MOONRAFT_FAULT_DISK_FILE");
    mr_it_start_static(&cluster, 1, NULL);
    mr_it_start_static(&cluster, 2, NULL);
    leader = mr_it_wait_leader(&cluster, 10000, 1);
    assert_true(leader >= 0);
    if (leader != 0) { /* make n1, the node with the bad disk, the leader */
        r = mr_it_http(&cluster, leader, "POST", "/v1/leader/transfer", "{\"id\":\"n1\"}", NULL);
        EXPECT_STATUS(r, 200);
        mr_it_resp_free(&r);
        t0 = mr_it_now_ms();
        while ((leader = mr_it_wait_leader(&cluster, 5000, 1)) != 0 && mr_it_now_ms() - t0 < 5000)
            mr_it_sleep_ms(20);
        assert_int_equal(leader, 0);
    }
    put_key(0, "before", "1");

    fd = open(fault, O_CREAT | O_WRONLY, 0644); /* the disk dies */
    assert_true(fd >= 0);
    close(fd);
    r = mr_it_http(&cluster, 0, "PUT", "/v1/kv/during", "2", NULL);
    assert_true(r.status == 503 || r.status == 504);
    mr_it_resp_free(&r);

    /* n2 or n3 leads within a few election timeouts and takes writes */
    t0 = mr_it_now_ms();
    for (;;) {
        r = mr_it_http(&cluster, 1, "PUT", "/v1/kv/after", "3", NULL);
        if (r.status == 200) break;
        mr_it_resp_free(&r);
        assert_true(mr_it_now_ms() - t0 < 5000);
        mr_it_sleep_ms(50);
    }
    mr_it_resp_free(&r);
    fprintf(stderr, "writes resumed %lld ms after the disk failed\n", mr_it_now_ms() - t0);
    expect_key(2, "after", "3");
    expect_key(1, "before", "1");

    r = mr_it_http(&cluster, 0, "GET", "/v1/status", NULL, NULL);
    EXPECT_STATUS(r, 200);
    assert_string_not_equal(mr_it_jq(r.body, "j.disk_error"), "nil");
    mr_it_resp_free(&r);
    r = mr_it_http(&cluster, 0, "GET", "/v1/kv/after", NULL, NULL);
    EXPECT_STATUS(r, 503);
    assert_string_equal(mr_it_jq(r.body, "j.error.code"), "disk_failed");
    mr_it_resp_free(&r);

    /* a new disk: restart n1, it recovers what it had and catches up */
    assert_int_equal(mr_it_stop(&cluster, 0), 0);
    unlink(fault);
    mr_it_start_static(&cluster, 0, NULL);
    assert_true(mr_it_wait_leader(&cluster, 10000, 1) >= 0);
    for (i = 0; i < 20; i++) {
        snprintf(body, sizeof body, "%d", i);
        put_key(i % 3, "more", body);
    }
    expect_key(0, "after", "3");
    expect_key(0, "before", "1");
}

static long long status_num(int node, const char *expr)
{
    struct mr_it_resp r = mr_it_http(&cluster, node, "GET", "/v1/status", NULL, NULL);
    long long v;
    EXPECT_STATUS(r, 200);
    v = atoll(mr_it_jq(r.body, expr));
    mr_it_resp_free(&r);
    return v;
}

/* Stops follower f, writes `value` to "a" and enough more that the leader
 * compacts its log past everything f has, then restarts f with the install
 * fault hook set to `fault`. */
static void miss_a_snapshot(int leader, int f, const char *value, const char *fault,
                            const char *extra)
{
    long long last, t0;
    char body[32];
    int i;
    assert_int_equal(mr_it_stop(&cluster, f), 0);
    last = status_num(leader, "j.last_index");
    put_key(leader, "a", value);
    for (i = 0; i < 40; i++) {
        snprintf(body, sizeof body, "%d", i);
        put_key(leader, "fill", body);
    }
    t0 = mr_it_now_ms();
    while (status_num(leader, "j.first_index") <= last + 1) {
        assert_true(mr_it_now_ms() - t0 < 15000);
        mr_it_sleep_ms(50);
    }
    setenv("MOONRAFT_FAULT_SNAP_INSTALL", fault, 1);
    mr_it_start_static(&cluster, f, extra);
    unsetenv("MOONRAFT_FAULT_SNAP_INSTALL");
}

/* A follower whose snapshot installs fail must not go on from its old state:
 * it used to acknowledge the snapshot anyway, apply the leader's later
 * entries on top of its old state machine and answer linearizable reads
 * from it. Now it keeps its log and waits for the leader's retry; when an
 * install fails after the old state was already replaced, it refuses reads
 * (503 state_machine_stale) until an install succeeds. */
static void test_a_follower_whose_snapshot_install_fails_serves_no_stale_state(void **state)
{
    static const char extra[] = "--snapshot-entries 10 --snapshot-trailing 0 "
                                "--snapshot-log-percent 0";
    struct mr_it_resp r;
    int leader, f, saw_stale = 0;
    long long t0;
    (void)state;
    start_static(3, extra);
    leader = mr_it_wait_leader(&cluster, 10000, 1);
    assert_true(leader >= 0);
    f = (leader + 1) % 3;
    put_key(leader, "a", "1");
    expect_key(f, "a", "1");

    /* the first two installs fail before the state is touched */
    miss_a_snapshot(leader, f, "2", "2", extra);
    t0 = mr_it_now_ms();
    for (;;) {
        r = mr_it_http(&cluster, f, "GET", "/v1/kv/a", NULL, NULL);
        if (r.status == 200) break;
        mr_it_resp_free(&r);
        assert_true(mr_it_now_ms() - t0 < 20000);
        mr_it_sleep_ms(50);
    }
    assert_string_equal(mr_it_jq(r.body, "j.value"), "2"); /* never the old 1 */
    mr_it_resp_free(&r);
    assert_true(log_has(f, "cannot install the snapshot"));

    /* the next one fails after the state machine was replaced */
    miss_a_snapshot(leader, f, "3", "1,late", extra);
    t0 = mr_it_now_ms();
    for (;;) {
        r = mr_it_http(&cluster, f, "GET", "/v1/kv/a?consistency=stale", NULL, NULL);
        if (r.status == 503 &&
            strcmp(mr_it_jq(r.body, "j.error.code"), "state_machine_stale") == 0)
            saw_stale = 1;
        if (r.status == 200 && strcmp(mr_it_jq(r.body, "j.value"), "3") == 0) {
            mr_it_resp_free(&r);
            break;
        }
        mr_it_resp_free(&r);
        assert_true(mr_it_now_ms() - t0 < 20000);
        mr_it_sleep_ms(10);
    }
    assert_true(saw_stale);
    assert_true(log_has(f, "failed after the state machine was replaced"));
    assert_true(log_has(f, "the state machine is current again"));
    expect_key(f, "a", "3");
    put_key(leader, "a", "4");
    expect_key(f, "a", "4");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_a_follower_whose_snapshot_install_fails_serves_no_stale_state, setup_none,
            teardown_cluster),
        cmocka_unit_test_setup_teardown(test_four_nodes_survive_leader_kill, setup_none,
                                        teardown_cluster),
        cmocka_unit_test_setup_teardown(test_full_restart_keeps_state_and_members,
                                        setup_none, teardown_cluster),
        cmocka_unit_test_setup_teardown(test_replicas_converge_to_identical_state,
                                        setup_none, teardown_cluster),
        cmocka_unit_test_setup_teardown(test_runaway_scripts_fail_alone, setup_none,
                                        teardown_cluster),
        cmocka_unit_test_setup_teardown(test_bad_inputs_give_clear_errors, setup_none,
                                        teardown_cluster),
        cmocka_unit_test_setup_teardown(
            test_a_failing_disk_takes_the_node_out_and_the_cluster_goes_on, setup_none,
            teardown_cluster),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
