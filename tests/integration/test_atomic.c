/* Integration: atomic commands. A command that changes the state (plain
 * tables, an upvalue, a sortedmap, events) and then raises leaves no trace on
 * any node: the client gets 422 with the message, and every node, including
 * one that restarts from a snapshot taken among failed commands, ends with
 * the same state hash and a state that the failed commands never touched.
 * Before commands were atomic, the failed commands' halves stayed (the same
 * on every node, but visible in the query below). */
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

/* Every command records its name in a table, a log, a counter upvalue and a
 * sortedmap, emits an event, then fails if asked to. */
static const char halfway_lua[] =
    "local names, log, M = {}, {}, {}\n"
    "local count = 0\n"
    "local idx = sortedmap.new()\n"
    "function M.apply(cmd, ctx)\n"
    "  names[cmd.name] = {at = ctx.index, tags = {cmd.name}}\n"
    "  count = count + 1\n"
    "  table.insert(log, cmd.name)\n"
    "  idx:set(cmd.name, tostring(ctx.index))\n"
    "  ctx.emit(cmd.name)\n"
    "  if cmd.fail then error('failed halfway: ' .. cmd.name, 0) end\n"
    "  return count\n"
    "end\n"
    "function M.query(q)\n"
    "  local ks = {}\n"
    "  for k in pairs(names) do ks[#ks + 1] = k end\n"
    "  return {count = count, names = table.concat(ks, ','), log = #log,\n"
    "          idx = idx:count(), bad = idx:range('bad')[1] or false}\n"
    "end\n"
    "function M.snapshot()\n"
    "  local k, v = idx:items()\n"
    "  return canonical.encode({names = names, log = log, count = count, idx = {k, v}})\n"
    "end\n"
    "function M.restore(s)\n"
    "  local t = json.decode(s)\n"
    "  names, log, count, idx = t.names, t.log, t.count, sortedmap.new()\n"
    "  for i, k in ipairs(t.idx[1]) do idx:set(k, t.idx[2][i]) end\n"
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

/* Sends a command; a good one must answer 200, a failing one 422 with its
 * message. */
static void command(int node, int i, int fail)
{
    char body[128];
    snprintf(body, sizeof body, "{\"name\":\"%s%02d\"%s}", fail ? "bad" : "good", i,
             fail ? ",\"fail\":true" : "");
    struct mr_it_resp r = mr_it_http(&cluster, node, "POST", "/v1/command", body, NULL);
    int want = fail ? 422 : 200;
    if (r.status != want || (fail && strstr(r.body, "failed halfway: bad") == NULL)) {
        fprintf(stderr, "POST %s to n%d -> %d: %s\n", body, node + 1, r.status, r.body);
        mr_it_dump_logs(&cluster);
        mr_it_resp_free(&r);
        fail();
    }
    mr_it_resp_free(&r);
}



/* The query, on `node`, shows `good` good commands and no bad one. */
static void expect_no_trace_of_failures(int node, int good)
{
    struct mr_it_resp r = mr_it_http(&cluster, node, "POST", "/v1/query", "{}", NULL);
    if (r.status != 200) {
        fprintf(stderr, "query on n%d -> %d: %s\n", node + 1, r.status, r.body);
        fail();
    }
    char want[64];
    snprintf(want, sizeof want, "%d", good);
    fprintf(stderr, "n%d query: %s\n", node + 1, r.body);
    assert_string_equal(mr_it_jq(r.body, "j.result.count"), want);
    assert_string_equal(mr_it_jq(r.body, "j.result.log"), want);
    assert_string_equal(mr_it_jq(r.body, "j.result.idx"), want);
    assert_string_equal(mr_it_jq(r.body, "j.result.bad"), "false");
    assert_string_equal(mr_it_jq(r.body, "j.result.names:find('bad')"), "nil");
    assert_string_equal(mr_it_jq(r.body, "select(2, j.result.names:gsub('good', ''))"), want);
    mr_it_resp_free(&r);
}

static void test_commands_that_fail_halfway_leave_no_trace_on_any_node(void **state)
{
    (void)state;
    char path[400];
    mr_it_cluster_init(&cluster, 3);
    snprintf(path, sizeof path, "%s/halfway.lua", cluster.root);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(halfway_lua, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    snprintf(extra_args, sizeof extra_args, "--state-machine %s", path);
    for (int i = 0; i < 3; i++) mr_it_start_static(&cluster, i, extra_args);
    int leader = mr_it_wait_leader(&cluster, 10000, 1);
    if (leader < 0) mr_it_dump_logs(&cluster);
    assert_true(leader >= 0);
    int victim = (leader + 1) % 3, good = 0;

    /* 24 commands, every third one failing halfway, sent to every node */
    for (int i = 0; i < 24; i++) {
        int fail = i % 3 == 2;
        command(i % 3, i, fail);
        good += !fail;
    }
    /* the victim snapshots (among failed commands), restarts, restores */
    long long at = mr_it_snapshot(&cluster, victim, NULL);
    assert_true(at > 0);
    assert_int_equal(mr_it_stop(&cluster, victim), 0);
    mr_it_start_static(&cluster, victim, extra_args);
    assert_true(mr_it_wait_leader(&cluster, 10000, 1) >= 0);
    char st[8192];
    status_of(victim, st, sizeof st);
    assert_true(atoll(mr_it_jq(st, "j.snapshot_index")) >= at); /* it did restore */

    /* 12 more, half failing, the restored node included */
    for (int i = 24; i < 36; i++) {
        int fail = i % 2;
        command(i % 3, i, fail);
        good += !fail;
    }
    assert_true(mr_it_same_state(&cluster, 10000, NULL, NULL));
    int now_leader = mr_it_wait_leader(&cluster, 10000, 1);
    assert_true(now_leader >= 0);
    expect_no_trace_of_failures(now_leader, good);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_commands_that_fail_halfway_leave_no_trace_on_any_node, setup_none,
            teardown_cluster),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
