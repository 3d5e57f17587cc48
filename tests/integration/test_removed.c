/* Integration: a node removed from the cluster knows it (docs/operations.md
 * "Removed nodes"): its status says role "removed", it logs that once,
 * naming the leader, it never disturbs the remaining members' term, its
 * clients get 503 `removed` naming the leader, and a restart still knows. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static struct mr_it_cluster cluster;

static int teardown_cluster(void **state)
{
    (void)state;
    return mr_it_cluster_destroy(&cluster);
}

#define EXPECT_STATUS(resp, want) MR_IT_EXPECT_STATUS(&cluster, resp, want)

static const char *status_field(int node, const char *expr)
{
    return mr_it_status(&cluster, node, expr);
}

static int wait_status(int node, const char *expr, const char *want, int timeout_ms)
{
    long long end = mr_it_now_ms() + timeout_ms;
    while (mr_it_now_ms() < end) {
        if (strcmp(status_field(node, expr), want) == 0) return 1;
        mr_it_sleep_ms(50);
    }
    fprintf(stderr, "%s on node %d is %s, wanted %s\n", expr, node,
            status_field(node, expr), want);
    mr_it_dump_logs(&cluster);
    return 0;
}

/* Occurrences of `needle` in node i's log. */
static int log_count(int i, const char *needle)
{
    FILE *f = fopen(cluster.nodes[i].log_path, "r");
    char line[2048];
    int n = 0;
    assert_non_null(f);
    while (fgets(line, sizeof line, f) != NULL)
        if (strstr(line, needle) != NULL) n++;
    fclose(f);
    return n;
}

/* The removed node's write is refused, naming the leader and its address. */
static void expect_refused(int victim, int leader)
{
    char want[64];
    struct mr_it_resp r = mr_it_http(&cluster, victim, "PUT", "/v1/kv/after", "1", NULL);
    EXPECT_STATUS(r, 503);
    assert_string_equal(mr_it_jq(r.body, "j.error.code"), "removed");
    assert_string_equal(mr_it_jq(r.body, "j.error.leader"), cluster.nodes[leader].name);
    snprintf(want, sizeof want, "127.0.0.1:%d", cluster.nodes[leader].http_port);
    assert_non_null(strstr(mr_it_jq(r.body, "j.error.message"), want));
    mr_it_resp_free(&r);
    r = mr_it_http(&cluster, victim, "GET", "/v1/kv/before?consistency=stale", NULL,
                   NULL);
    EXPECT_STATUS(r, 503);
    assert_string_equal(mr_it_jq(r.body, "j.error.code"), "removed");
    mr_it_resp_free(&r);
}

/* Static peers with their HTTP addresses, so that members know each other's. */
static void start(int i)
{
    char args[1024];
    size_t off = (size_t)snprintf(args, sizeof args, "--peers ");
    for (int k = 0; k < 3; k++)
        off += (size_t)snprintf(args + off, sizeof args - off,
                                "%s%s=127.0.0.1:%d/127.0.0.1:%d", k ? "," : "",
                                cluster.nodes[k].name, cluster.nodes[k].raft_port,
                                cluster.nodes[k].http_port);
    mr_it_start_args(&cluster, i, args);
}

static void test_removed_node_knows_it_stays_quiet_and_refuses_requests(void **state)
{
    char path[64], term[32], want[96];
    struct mr_it_resp r;
    int leader, victim, other;
    (void)state;
    mr_it_cluster_init(&cluster, 3);
    for (int i = 0; i < 3; i++) start(i);
    leader = mr_it_wait_leader(&cluster, 15000, 1);
    assert_true(leader >= 0);
    victim = (leader + 1) % 3;
    other = (leader + 2) % 3;
    r = mr_it_http(&cluster, leader, "PUT", "/v1/kv/before", "1", NULL);
    EXPECT_STATUS(r, 200);
    mr_it_resp_free(&r);
    assert_true(wait_status(victim, "j.applied >= 2", "true", 5000));

    snprintf(path, sizeof path, "/v1/members/%s", cluster.nodes[victim].name);
    r = mr_it_http(&cluster, leader, "DELETE", path, NULL, NULL);
    EXPECT_STATUS(r, 200);
    mr_it_resp_free(&r);
    assert_true(wait_status(victim, "j.role", "removed", 10000));
    assert_string_equal(status_field(victim, "j.leader"), cluster.nodes[leader].name);
    /* one line, naming the leader */
    assert_int_equal(log_count(victim, "this node was removed from the cluster"), 1);
    snprintf(want, sizeof want, "leader %s at 127.0.0.1:%d", cluster.nodes[leader].name,
             cluster.nodes[leader].http_port);
    assert_int_equal(log_count(victim, want), 1);
    expect_refused(victim, leader);

    /* It does not disturb the others: no election for a while. */
    snprintf(term, sizeof term, "%.31s", status_field(leader, "j.term"));
    mr_it_sleep_ms(3000);
    assert_string_equal(status_field(leader, "j.role"), "leader");
    assert_string_equal(status_field(leader, "j.term"), term);
    assert_string_equal(status_field(other, "j.term"), term);
    assert_string_equal(status_field(victim, "j.role"), "removed");
    assert_int_equal(log_count(victim, "starting an election"), 0);
    r = mr_it_http(&cluster, other, "PUT", "/v1/kv/during", "2", NULL);
    EXPECT_STATUS(r, 200);
    mr_it_resp_free(&r);

    /* A restart still knows, and still stays quiet. */
    assert_int_equal(mr_it_stop(&cluster, victim), 0);
    start(victim);
    assert_true(wait_status(victim, "j.role", "removed", 10000));
    expect_refused(victim, leader);
    mr_it_sleep_ms(2000);
    assert_string_equal(status_field(victim, "j.role"), "removed");
    assert_string_equal(status_field(leader, "j.role"), "leader");
    assert_string_equal(status_field(leader, "j.term"), term);
    assert_int_equal(log_count(victim, "starting an election"), 0);
    assert_int_equal(log_count(victim, "this node was removed from the cluster"), 2);
}


/* <data_dir>/removed is the commit hint of the next start (mr_raft_load):
 * it must never name an index the node's WAL does not hold durably yet, or a
 * crash could leave it pointing at an older, uncommitted entry at that
 * index. With a slow disk (every sync 1.5 s) on the removed node, the file
 * must not appear before persisted_index reaches the removal. Before the fix
 * it was written as soon as the commit arrived, seconds before the sync. */
static void test_the_removal_is_recorded_only_once_the_wal_holds_it(void **state)
{
    char path[64], file[600];
    struct mr_it_resp r;
    long long end;
    int leader, victim, seen = 0;
    (void)state;
    mr_it_cluster_init(&cluster, 3);
    for (int i = 0; i < 3; i++) {
        mr_it_powerloss_enable(&cluster, i); /* the slow disk needs the layer */
        start(i);
    }
    leader = mr_it_wait_leader(&cluster, 15000, 1);
    assert_true(leader >= 0);
    /* The follower to remove comes back with a slow disk. */
    victim = (leader + 1) % 3;
    assert_int_equal(mr_it_stop(&cluster, victim), 0);
    cluster.nodes[victim].slow_sync_ms = 1500;
    start(victim);
    r = mr_it_http(&cluster, leader, "PUT", "/v1/kv/before", "1", NULL);
    EXPECT_STATUS(r, 200);
    mr_it_resp_free(&r);
    assert_true(wait_status(victim, "j.persisted_index >= j.commit and j.commit >= 2", "true",
                            10000));

    snprintf(file, sizeof file, "%s/removed", cluster.nodes[victim].data_dir);
    snprintf(path, sizeof path, "/v1/members/%s", cluster.nodes[victim].name);
    r = mr_it_http(&cluster, leader, "DELETE", path, NULL, NULL);
    EXPECT_STATUS(r, 200);
    mr_it_resp_free(&r);
    end = mr_it_now_ms() + 15000;
    while (!seen && mr_it_now_ms() < end) {
        if (access(file, F_OK) == 0) {
            unsigned long long at = 0, leader_id = 0;
            FILE *f = fopen(file, "r");
            seen = 1;
            assert_non_null(f);
            assert_int_equal(fscanf(f, "removed at index %llu leader %llu", &at, &leader_id),
                             2);
            fclose(f);
            r = mr_it_http(&cluster, victim, "GET", "/v1/status", NULL, NULL);
            EXPECT_STATUS(r, 200);
            if (strtoull(mr_it_jq(r.body, "j.persisted_index"), NULL, 10) < at) {
                fprintf(stderr, "removed at index %llu recorded with persisted_index %s\n", at,
                        mr_it_jq(r.body, "j.persisted_index"));
                mr_it_dump_logs(&cluster);
                fail();
            }
            mr_it_resp_free(&r);
        } else {
            mr_it_sleep_ms(5);
        }
    }
    assert_true(seen);
    assert_true(wait_status(victim, "j.role", "removed", 10000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(
            test_removed_node_knows_it_stays_quiet_and_refuses_requests,
            teardown_cluster),
        cmocka_unit_test_teardown(test_the_removal_is_recorded_only_once_the_wal_holds_it,
                                  teardown_cluster),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
