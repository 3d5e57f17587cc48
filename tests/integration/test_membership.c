/* Integration: cluster formation with bootstrap_expect + join, a node that
 * joins later and catches up by snapshot, leaving, removing the leader. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* Waits until `expr` over node's status equals want. */
static int wait_status(int node, const char *expr, const char *want, int timeout_ms)
{
    long long end = mr_it_now_ms() + timeout_ms;
    while (mr_it_now_ms() < end) {
        if (strcmp(status_field(node, expr), want) == 0) return 1;
        mr_it_sleep_ms(50);
    }
    fprintf(stderr, "%s on node %d is %s, wanted %s\n", expr, node, status_field(node, expr), want);
    mr_it_dump_logs(&cluster);
    return 0;
}

static void put(int node, int i)
{
    char path[64], val[64];
    struct mr_it_resp r;
    snprintf(path, sizeof path, "/v1/kv/key%03d", i);
    snprintf(val, sizeof val, "{\"n\":%d}", i);
    r = mr_it_http(&cluster, node, "PUT", path, val, NULL);
    EXPECT_STATUS(r, 200);
    mr_it_resp_free(&r);
}

static void test_bootstrap_expect_join_snapshot_catchup_leave_and_remove_leader(void **state)
{
    char args[512], sel[128];
    int i, leader, other;
    struct mr_it_resp r;
    (void)state;
    mr_it_cluster_init(&cluster, 4);
    snprintf(cluster.extra_args, sizeof cluster.extra_args,
             "--snapshot-entries 20 --snapshot-trailing 5");

    /* n1 waits for three members; n2 and n3 join through it. */
    mr_it_start_args(&cluster, 0, "--bootstrap-expect 3");
    snprintf(args, sizeof args, "--join 127.0.0.1:%d", cluster.nodes[0].http_port);
    mr_it_start_args(&cluster, 1, args);
    mr_it_start_args(&cluster, 2, args);
    cluster.nodes[3].pid = 0; /* n4 later */
    cluster.n = 3;
    leader = mr_it_wait_leader(&cluster, 15000, 1);
    assert_true(leader >= 0);
    assert_true(wait_status(leader, "#j.members", "3", 5000));

    /* Enough writes for several snapshots and a compacted log. */
    for (i = 0; i < 60; i++) put(i % 3, i);
    assert_true(wait_status(leader, "j.snapshot_index > 0", "true", 10000));
    assert_true(wait_status(leader, "j.first_index > 2", "true", 10000));

    /* n4 joins through a follower, catches up by snapshot, becomes a voter. */
    cluster.n = 4;
    other = (leader + 1) % 3;
    snprintf(args, sizeof args, "--join 127.0.0.1:%d", cluster.nodes[other].http_port);
    mr_it_start_args(&cluster, 3, args);
    assert_true(wait_status(3, "j.snapshots_installed >= 1", "true", 15000));
    assert_true(wait_status(leader,
                            "(function() for _, m in ipairs(j.members) do if m.id == 'n4' then "
                            "return m.voter end end end)()",
                            "true", 15000));
    r = mr_it_http(&cluster, 3, "GET", "/v1/kv/key007?consistency=stale", NULL, NULL);
    EXPECT_STATUS(r, 200);
    assert_string_equal(mr_it_jq(r.body, "j.value.n"), "7");
    mr_it_resp_free(&r);

    /* A follower leaves. */
    other = (leader + 1) % 3;
    snprintf(sel, sizeof sel, "/v1/members/%s", cluster.nodes[other].name);
    r = mr_it_http(&cluster, leader, "DELETE", sel, NULL, NULL);
    EXPECT_STATUS(r, 200);
    mr_it_resp_free(&r);
    assert_true(wait_status(leader, "#j.members", "3", 5000));
    mr_it_stop(&cluster, other);

    /* The leader is removed: it steps down, the others elect a new one. */
    snprintf(sel, sizeof sel, "/v1/members/%s", cluster.nodes[leader].name);
    r = mr_it_http(&cluster, leader, "DELETE", sel, NULL, NULL);
    EXPECT_STATUS(r, 200);
    mr_it_resp_free(&r);
    mr_it_stop(&cluster, leader);
    i = mr_it_wait_leader(&cluster, 10000, 0);
    assert_true(i >= 0 && i != leader && i != other);
    assert_true(wait_status(i, "#j.members", "2", 5000));
    put(3, 100);
    r = mr_it_http(&cluster, i, "GET", "/v1/kv/key100", NULL, NULL);
    EXPECT_STATUS(r, 200);
    mr_it_resp_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_bootstrap_expect_join_snapshot_catchup_leave_and_remove_leader,
                                  teardown_cluster),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
