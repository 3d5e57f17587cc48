/* Integration: a state machine written without reading the determinism rules
 * still keeps the replicas identical. The script below records the order in
 * which `pairs` visits a table of names, into its state: with stock Lua that
 * order depends on each process's string hash seed and on the table's
 * history (a node restored from a snapshot built the table differently), so
 * the three nodes used to end with three different state hashes at the same
 * applied index. */
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
static char extra_args[700];

/* The naive script: ten lines that store names and record pairs order. */
static const char pairs_order_lua[] =
    "local names, orders, M = {}, {}, {}\n"
    "function M.apply(cmd, ctx)\n"
    "  if cmd.del then names[cmd.name] = nil else names[cmd.name] = ctx.index end\n"
    "  local o = {}\n"
    "  for k, v in pairs(names) do o[#o + 1] = k .. '@' .. v end\n"
    "  orders[#orders + 1] = table.concat(o, ',')\n"
    "  return #orders\n"
    "end\n"
    "function M.query(q) return orders[#orders] end\n"
    "function M.snapshot() return json.encode({names = names, orders = orders}) end\n"
    "function M.restore(s) local t = json.decode(s); names, orders = t.names, t.orders "
    "end\n"
    "return M\n";

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

static void status_of(int node, char *buf, size_t len)
{
    struct mr_it_resp r =
        mr_it_http(&cluster, node, "GET", "/v1/status?hash=true", NULL, NULL);
    assert_int_equal(r.status, 200);
    snprintf(buf, len, "%s", r.body);
    mr_it_resp_free(&r);
}

static void command(int node, const char *body)
{
    struct mr_it_resp r = mr_it_http(&cluster, node, "POST", "/v1/command", body, NULL);
    if (r.status != 200) {
        fprintf(stderr, "POST %s to n%d -> %d: %s\n", body, node + 1, r.status, r.body);
        mr_it_dump_logs(&cluster);
        mr_it_resp_free(&r);
        fail();
    }
    mr_it_resp_free(&r);
}



static void
test_a_naive_pairs_script_keeps_replicas_identical_across_a_restore(void **state)
{
    (void)state;
    char path[400], body[128];
    mr_it_cluster_init(&cluster, 3);
    snprintf(path, sizeof path, "%s/pairs_order.lua", cluster.root);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(pairs_order_lua, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    snprintf(extra_args, sizeof extra_args, "--state-machine %s", path);
    for (int i = 0; i < 3; i++) mr_it_start_static(&cluster, i, extra_args);
    int leader = mr_it_wait_leader(&cluster, 10000, 1);
    if (leader < 0) mr_it_dump_logs(&cluster);
    assert_true(leader >= 0);
    int victim = (leader + 1) % 3;

    /* 30 commands (names added, some removed), sent to every node in turn */
    for (int i = 0; i < 30; i++) {
        if (i % 7 == 6)
            snprintf(body, sizeof body, "{\"name\":\"user%d\",\"del\":true}", i - 4);
        else
            snprintf(body, sizeof body, "{\"name\":\"user%d\"}", (i * 13) % 31);
        command(i % 3, body);
    }
    /* the victim snapshots, restarts and restores from that snapshot */
    long long at = mr_it_snapshot(&cluster, victim, NULL);
    assert_true(at > 0);
    assert_int_equal(mr_it_stop(&cluster, victim), 0);
    mr_it_start_static(&cluster, victim, extra_args);
    assert_true(mr_it_wait_leader(&cluster, 10000, 1) >= 0);
    char st[8192];
    status_of(victim, st, sizeof st);
    assert_true(atoll(mr_it_jq(st, "j.snapshot_index")) >= at); /* it did restore */

    /* 10 more, the restored node included */
    for (int i = 30; i < 40; i++) {
        snprintf(body, sizeof body, "{\"name\":\"late%d\"}", i);
        command(i % 3, body);
    }
    assert_true(mr_it_same_state(&cluster, 10000, NULL, NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_a_naive_pairs_script_keeps_replicas_identical_across_a_restore,
            setup_none, teardown_cluster),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
