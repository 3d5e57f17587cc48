/* Integration: deploying a new state machine script through the log
 * (POST /v1/script, `moonraft deploy`) on a real 3-node cluster. Every node
 * switches at the SCRIPT entry's index, whether it applied the entry live,
 * replayed it after a restart, or installed a snapshot taken after it; a bad
 * script is refused with 422 and nothing changes. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "sm/sm.h"

static struct mr_it_cluster cluster;
static char extra_args[900];
static char v1_path[400], v2_path[400], other_path[400];

/* v1 stores what it is given; v2 stores it with a "/v2" suffix. Both write
 * the same canonical snapshot, so v2's restore() takes v1's state over. */
#define COMMON_TAIL                                                                      \
    "function M.query(q) return st[q.k] end\n"                                           \
    "function M.snapshot() return json.encode(st) end\n"                                 \
    "function M.restore(s) st = json.decode(s) end\n"                                    \
    "return M\n"
static const char v1_lua[] =
    "local st, M = {}, {}\n"
    "function M.apply(c, ctx) st[c.k] = c.v; return {v = 1, index = ctx.index} end\n"
    COMMON_TAIL;
static const char v2_lua[] =
    "local st, M = {}, {}\n"
    "function M.apply(c, ctx) st[c.k] = c.v .. '/v2'; return {v = 2, index = ctx.index} end\n"
    COMMON_TAIL;
/* a third script, for a node started with the "wrong" file */
static const char other_lua[] =
    "local st, M = {}, {}\n"
    "function M.apply(c, ctx) st[c.k] = 'other'; return {v = 9} end\n" COMMON_TAIL;

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

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

/* Starts 3 nodes running v1 with `flags`; returns the leader. */
static int start_cluster(const char *flags)
{
    mr_it_cluster_init(&cluster, 3);
    snprintf(v1_path, sizeof v1_path, "%s/v1.lua", cluster.root);
    snprintf(v2_path, sizeof v2_path, "%s/v2.lua", cluster.root);
    snprintf(other_path, sizeof other_path, "%s/other.lua", cluster.root);
    write_file(v1_path, v1_lua);
    write_file(v2_path, v2_lua);
    write_file(other_path, other_lua);
    snprintf(extra_args, sizeof extra_args, "--state-machine %s --admin-token adm %s", v1_path,
             flags ? flags : "");
    for (int i = 0; i < 3; i++) mr_it_start_static(&cluster, i, extra_args);
    int leader = mr_it_wait_leader(&cluster, 10000, 1);
    if (leader < 0) mr_it_dump_logs(&cluster);
    assert_true(leader >= 0);
    return leader;
}

static const char admin_hdr[] = "Authorization: Bearer adm\r\n";

static void get(int node, const char *path, char *buf, size_t len)
{
    struct mr_it_resp r = mr_it_http(&cluster, node, "GET", path, NULL, admin_hdr);
    if (r.status != 200) fail_msg("GET %s on n%d -> %d %s", path, node + 1, r.status, r.body);
    snprintf(buf, len, "%s", r.body);
    mr_it_resp_free(&r);
}

/* POST /v1/command; returns the result's "v" (the script version that ran it). */
static int command(int node, const char *k, const char *v)
{
    char body[200];
    snprintf(body, sizeof body, "{\"k\":\"%s\",\"v\":\"%s\"}", k, v);
    struct mr_it_resp r = mr_it_http(&cluster, node, "POST", "/v1/command", body, admin_hdr);
    if (r.status != 200) {
        fprintf(stderr, "POST %s to n%d -> %d: %s\n", body, node + 1, r.status, r.body);
        mr_it_dump_logs(&cluster);
        mr_it_resp_free(&r);
        fail();
    }
    int ver = atoi(mr_it_jq(r.body, "j.result.v"));
    mr_it_resp_free(&r);
    return ver;
}

static void script_hash(int node, char hash[80])
{
    char buf[1024];
    get(node, "/v1/script", buf, sizeof buf);
    snprintf(hash, 80, "%s", mr_it_jq(buf, "j.hash"));
}

static void sha_of(const char *text, char hex[65])
{
    mr_sm_sha256_hex(text, strlen(text), hex);
}

/* Runs `moonraft deploy FILE 127.0.0.1:PORT --token adm [more]`; returns its exit code
 * and its output in out. */
static int run_deploy(int node, const char *file, const char *more, char *out, size_t len)
{
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "%s/moonraft deploy %s 127.0.0.1:%d --token adm %s 2>&1",
             MR_BINARY_DIR, file, cluster.nodes[node].http_port, more ? more : "");
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, len - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    fprintf(stderr, "deploy %s via n%d -> %d: %s", file, node + 1,
            WIFEXITED(st) ? WEXITSTATUS(st) : -1, out);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A child process that writes to every running node in turn until killed. */
static pid_t start_writer(void)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        for (int i = 0;; i++) {
            char body[100];
            snprintf(body, sizeof body, "{\"k\":\"w%d\",\"v\":\"x%d\"}", i % 200, i);
            struct mr_it_resp r =
                mr_it_http(&cluster, i % 3, "POST", "/v1/command", body, admin_hdr);
            mr_it_resp_free(&r);
            if (r.status == 0) usleep(20000);
        }
    }
    return pid;
}

static void stop_writer(pid_t pid)
{
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0) {
    }
}



/* Every running node at the same applied index with the same state hash
 * (10 s at most); returns that index. */
static long long expect_same_state(void)
{
    long long applied = 0;
    assert_true(mr_it_same_state(&cluster, 10000, NULL, &applied));
    return applied;
}

static int log_contains(int node, const char *needle)
{
    char cmd[800];
    snprintf(cmd, sizeof cmd, "grep -q -F '%s' %s", needle, cluster.nodes[node].log_path);
    return system(cmd) == 0;
}

static void
test_a_deploy_under_write_load_switches_every_node_at_the_same_index(void **state)
{
    (void)state;
    char out[4096], v1_hash[65], v2_hash[65], h[80], st[8192];
    int leader = start_cluster(NULL);
    int victim = (leader + 1) % 3, other = (leader + 2) % 3;
    sha_of(v1_lua, v1_hash);
    sha_of(v2_lua, v2_hash);
    script_hash(victim, h);
    assert_string_equal(h, v1_hash);
    assert_int_equal(command(leader, "a", "1"), 1);

    pid_t writer = start_writer();
    mr_it_sleep_ms(300);
    /* the victim dies in the middle of the load; the deploy goes through a
     * follower (forwarded to the leader) while it is down */
    mr_it_kill9(&cluster, victim);
    mr_it_sleep_ms(200);
    assert_int_equal(run_deploy(other, v2_path, NULL, out, sizeof out), 0);
    assert_non_null(strstr(out, v2_hash));
    mr_it_sleep_ms(300);
    mr_it_start_static(&cluster, victim, extra_args); /* replays its log, then catches up */
    assert_true(mr_it_wait_leader(&cluster, 10000, 1) >= 0);
    mr_it_sleep_ms(500);
    stop_writer(writer);

    /* every node runs v2, since the same index */
    char idx[3][32];
    for (int i = 0; i < 3; i++) {
        char buf[1024];
        for (int k = 0; k < 100; k++) {
            get(i, "/v1/script", buf, sizeof buf);
            if (strcmp(mr_it_jq(buf, "j.hash"), v2_hash) == 0) break;
            mr_it_sleep_ms(50);
        }
        assert_string_equal(mr_it_jq(buf, "j.hash"), v2_hash);
        assert_string_equal(mr_it_jq(buf, "j.label"), "v2.lua");
        snprintf(idx[i], sizeof idx[i], "%s", mr_it_jq(buf, "j.index"));
        assert_true(atoll(idx[i]) > 2);
    }
    assert_string_equal(idx[0], idx[1]);
    assert_string_equal(idx[0], idx[2]);
    get(leader, "/v1/status", st, sizeof st);
    assert_string_equal(mr_it_jq(st, "j.script.hash"), v2_hash);
    {
        struct mr_it_resp r = mr_it_http(&cluster, leader, "GET", "/metrics", NULL, admin_hdr);
        char want[160];
        snprintf(want, sizeof want, "moonraft_script_info{hash=\"%s\",label=\"v2.lua\"} 1",
                 v2_hash);
        assert_non_null(strstr(r.body, want));
        mr_it_resp_free(&r);
    }
    for (int i = 0; i < 3; i++) assert_int_equal(command(i, "b", "2"), 2);
    expect_same_state();

    /* the victim snapshots (the script goes with it) and restarts from the
     * snapshot with a different state_machine file: it runs the cluster's */
    assert_true(mr_it_snapshot(&cluster, victim, admin_hdr) >= 0);
    assert_int_equal(mr_it_stop(&cluster, victim), 0);
    char other_args[1000];
    snprintf(other_args, sizeof other_args, "--state-machine %s --admin-token adm", other_path);
    mr_it_start_static(&cluster, victim, other_args);
    assert_true(mr_it_wait_leader(&cluster, 10000, 1) >= 0);
    script_hash(victim, h);
    assert_string_equal(h, v2_hash);
    assert_true(log_contains(victim, "the cluster runs another state machine script"));
    for (int i = 0; i < 3; i++) assert_int_equal(command(i, "c", "3"), 2);
    expect_same_state();
    {
        char buf[512];
        struct mr_it_resp r = mr_it_http(&cluster, victim, "POST", "/v1/query?consistency=stale",
                                         "{\"k\":\"c\"}", admin_hdr);
        snprintf(buf, sizeof buf, "%s", r.body);
        mr_it_resp_free(&r);
        assert_string_equal(mr_it_jq(buf, "j.result"), "3/v2");
    }
}

static void
test_a_node_that_was_down_catches_up_by_snapshot_and_runs_the_new_script(void **state)
{
    (void)state;
    char out[4096], v2_hash[65], h[80], st[8192];
    int leader = start_cluster("--snapshot-entries 20 --snapshot-trailing 2");
    int victim = (leader + 1) % 3;
    sha_of(v2_lua, v2_hash);
    for (int i = 0; i < 10; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        command(leader, k, "old");
    }
    assert_int_equal(mr_it_stop(&cluster, victim), 0);
    assert_int_equal(run_deploy(leader, v2_path, "--label my-v2", out, sizeof out), 0);
    /* enough entries after the deploy for the log to be compacted past it */
    for (int i = 0; i < 80; i++) {
        char k[16];
        snprintf(k, sizeof k, "n%d", i);
        assert_int_equal(command(leader, k, "new"), 2);
    }
    for (int k = 0; k < 100; k++) { /* snapshots and compaction run in the background */
        get(leader, "/v1/status", st, sizeof st);
        if (atoll(mr_it_jq(st, "j.first_index")) > atoll(mr_it_jq(st, "j.script.index"))) break;
        mr_it_sleep_ms(50);
    }
    assert_true(atoll(mr_it_jq(st, "j.first_index")) > atoll(mr_it_jq(st, "j.script.index")));
    mr_it_start_static(&cluster, victim, extra_args);
    assert_true(mr_it_wait_leader(&cluster, 10000, 1) >= 0);
    for (int k = 0; k < 200; k++) {
        get(victim, "/v1/status", st, sizeof st);
        if (atoll(mr_it_jq(st, "j.snapshots_installed")) >= 1) break;
        mr_it_sleep_ms(50);
    }
    assert_true(atoll(mr_it_jq(st, "j.snapshots_installed")) >= 1);
    script_hash(victim, h);
    assert_string_equal(h, v2_hash);
    assert_string_equal(mr_it_jq(st, "j.script.label"), "my-v2");
    assert_int_equal(command(victim, "z", "1"), 2);
    expect_same_state();
    /* and after every node restarted from its own snapshot */
    for (int i = 0; i < 3; i++) assert_true(mr_it_snapshot(&cluster, i, admin_hdr) >= 0);
    for (int i = 0; i < 3; i++) assert_int_equal(mr_it_stop(&cluster, i), 0);
    for (int i = 0; i < 3; i++) mr_it_start_static(&cluster, i, extra_args);
    leader = mr_it_wait_leader(&cluster, 10000, 1);
    assert_true(leader >= 0);
    for (int i = 0; i < 3; i++) {
        script_hash(i, h);
        assert_string_equal(h, v2_hash);
    }
    assert_int_equal(command(leader, "y", "1"), 2);
    expect_same_state();
}

static void test_a_bad_script_is_refused_with_422_and_nothing_changes(void **state)
{
    (void)state;
    char out[4096], v1_hash[65], h[80], path[400];
    int leader = start_cluster(NULL);
    int follower = (leader + 1) % 3;
    sha_of(v1_lua, v1_hash);
    command(leader, "a", "1");
    long long before = expect_same_state();

    /* a syntax error: refused by the leader (through a follower), 422 */
    struct mr_it_resp r = mr_it_http(&cluster, follower, "POST", "/v1/script?label=bad.lua",
                                     "local M = {}\nfunction M.apply(\n", admin_hdr);
    assert_int_equal(r.status, 422);
    assert_string_equal(mr_it_jq(r.body, "j.error.code"), "script_error");
    assert_non_null(strstr(mr_it_jq(r.body, "j.error.message"), "bad.lua:"));
    mr_it_resp_free(&r);
    /* without the admin token: 401, nothing proposed */
    r = mr_it_http(&cluster, leader, "POST", "/v1/script", v1_lua, NULL);
    assert_int_equal(r.status, 401);
    mr_it_resp_free(&r);

    /* a migration that raises: refused by the trial, 422 from the CLI too */
    snprintf(path, sizeof path, "%s/bad_migrate.lua", cluster.root);
    write_file(path, "local M = {}\n"
                     "function M.apply() return 0 end\n"
                     "function M.query() return 0 end\n"
                     "function M.snapshot() return '' end\n"
                     "function M.restore(s) end\n"
                     "function M.migrate(old, ctx) error('no way: ' .. old) end\n"
                     "return M\n");
    assert_int_equal(run_deploy(leader, path, NULL, out, sizeof out), 1);
    assert_non_null(strstr(out, "script_error"));
    assert_non_null(strstr(out, "no way: {\"a\":\"1\"}"));

    for (int i = 0; i < 3; i++) {
        script_hash(i, h);
        assert_string_equal(h, v1_hash);
    }
    /* nothing was logged: the applied index did not move */
    assert_int_equal(expect_same_state(), before);
    assert_int_equal(command(follower, "b", "2"), 1);
}

/* Runs `moonraft replay DIR --script FILE [more]`; returns its exit code, output in out. */
static int run_replay(const char *dir, const char *file, const char *more, char *out,
                      size_t len)
{
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "%s/moonraft replay %s --script %s %s 2>&1", MR_BINARY_DIR, dir,
             file, more ? more : "");
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, len - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    fprintf(stderr, "replay %s --script %s %s -> %d:\n%s", dir, file, more ? more : "",
            WIFEXITED(st) ? WEXITSTATUS(st) : -1, out);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static long long after(const char *out, const char *needle)
{
    const char *p = strstr(out, needle);
    if (p == NULL) fail_msg("no [%s] in the output", needle);
    return atoll(p + strlen(needle));
}

static void test_replay_compares_a_candidate_with_the_script_the_log_ran(void **state)
{
    (void)state;
    static char out[65536];
    char v1copy[400], v2copy[400];
    int leader = start_cluster("--snapshot-entries 20");
    int victim = (leader + 1) % 3, live = (leader + 2) % 3;
    snprintf(v1copy, sizeof v1copy, "%s/v1-copy.lua", cluster.root);
    snprintf(v2copy, sizeof v2copy, "%s/v2-copy.lua", cluster.root);
    write_file(v1copy, v1_lua);
    write_file(v2copy, v2_lua);
    for (int i = 0; i < 30; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i % 7);
        command(i % 3, k, "v");
    }
    expect_same_state();
    /* a running node's directory is refused */
    assert_int_equal(run_replay(cluster.nodes[live].data_dir, v1copy, NULL, out, sizeof out), 2);
    assert_non_null(strstr(out, "in use"));

    /* a snapshot of its own (taken in the background every 20 entries) must be
     * durable before the stop, or replay has none to start from */
    {
        char st[8192];
        int i;
        for (i = 0; i < 400; i++) {
            get(victim, "/v1/status", st, sizeof st);
            if (atoll(mr_it_jq(st, "j.snapshot_index")) >= 20) break;
            mr_it_sleep_ms(25);
        }
        assert_true(i < 400);
    }
    assert_int_equal(mr_it_stop(&cluster, victim), 0);
    /* the same script: everything agrees */
    assert_int_equal(run_replay(cluster.nodes[victim].data_dir, v1copy, NULL, out, sizeof out),
                     0);
    long long snap = after(out, "snapshot at index ");
    assert_true(snap >= 20);
    assert_non_null(strstr(out, "differing commands: 0"));
    assert_non_null(strstr(out, "agree"));
    /* a script whose results differ: exit 1, the first differing index named
     * (the first command after the snapshot), with both results */
    assert_int_equal(run_replay(cluster.nodes[victim].data_dir, v2copy, NULL, out, sizeof out),
                     1);
    assert_int_equal(after(out, "first difference at index "), snap + 1);
    assert_non_null(strstr(out, "log:       ok {\"index\":"));
    assert_non_null(strstr(out, "\"v\":1}"));
    assert_non_null(strstr(out, "\"v\":2}"));
    assert_non_null(strstr(out, "DIFFERENT"));
    /* a candidate that raises is counted */
    char boom[400];
    snprintf(boom, sizeof boom, "%s/boom.lua", cluster.root);
    write_file(boom, "local st, M = {}, {}\n"
                     "function M.apply(c, ctx) if c.k == 'k3' then error('boom') end "
                     "st[c.k] = c.v; return {v = 1, index = ctx.index} end\n" COMMON_TAIL);
    assert_int_equal(run_replay(cluster.nodes[victim].data_dir, boom, NULL, out, sizeof out), 1);
    assert_non_null(strstr(out, "errors raised: log 0, candidate "));
    assert_non_null(strstr(out, "boom.lua:2: boom"));

    /* after a deploy: the snapshot records v2, so v2 agrees and v1 does not */
    mr_it_start_static(&cluster, victim, extra_args);
    assert_true(mr_it_wait_leader(&cluster, 10000, 1) >= 0);
    assert_int_equal(run_deploy(victim, v2_path, NULL, out, sizeof out), 0);
    expect_same_state();
    assert_true(mr_it_snapshot(&cluster, victim, admin_hdr) >= 0);
    for (int i = 0; i < 5; i++) command(victim, "late", "x");
    expect_same_state();
    assert_int_equal(mr_it_stop(&cluster, victim), 0);
    assert_int_equal(run_replay(cluster.nodes[victim].data_dir, v2copy, NULL, out, sizeof out),
                     0);
    assert_int_equal(run_replay(cluster.nodes[victim].data_dir, v1copy, NULL, out, sizeof out),
                     1);
    mr_it_start_static(&cluster, victim, extra_args);
    assert_true(mr_it_wait_leader(&cluster, 10000, 1) >= 0);
}

static void test_replay_switches_the_log_side_at_a_script_entry(void **state)
{
    (void)state;
    static char out[65536];
    int leader = start_cluster(NULL); /* no snapshot: the whole log is replayed */
    int victim = (leader + 1) % 3;
    for (int i = 0; i < 5; i++) command(leader, "a", "1");
    assert_int_equal(run_deploy(leader, v2_path, NULL, out, sizeof out), 0);
    for (int i = 0; i < 5; i++) assert_int_equal(command(leader, "b", "2"), 2);
    expect_same_state();
    char want[200], hash[65];
    assert_true(mr_it_state_hash(&cluster, victim, 10000, hash, NULL));
    snprintf(want, sizeof want, "final state hash: log %s,", hash);
    assert_int_equal(mr_it_stop(&cluster, victim), 0);
    /* no snapshot and no --original: the default lua/kv.lua is not the log's */
    char more[500];
    snprintf(more, sizeof more, "--original %s", v1_path);
    /* v2 as the candidate: the log ran v1 until the switch, so the commands
     * before it differ and the ones after it agree */
    assert_int_equal(run_replay(cluster.nodes[victim].data_dir, v2_path, more, out, sizeof out),
                     1);
    assert_non_null(strstr(out, "no snapshot"));
    assert_non_null(strstr(out, "the log switches to script v2.lua"));
    assert_non_null(strstr(out, "differing commands: 5 "));
    assert_non_null(strstr(out, want)); /* the log side ends where the node did */
    /* v1 as the candidate: the commands after the switch differ */
    assert_int_equal(run_replay(cluster.nodes[victim].data_dir, v1_path, more, out, sizeof out),
                     1);
    assert_non_null(strstr(out, "differing commands: 5 "));
    /* usage and data errors: 2 */
    assert_int_equal(run_replay(cluster.nodes[victim].data_dir, "/nonexistent.lua", more, out,
                                sizeof out),
                     2);
    assert_int_equal(run_replay("/nonexistent-dir", v1_path, more, out, sizeof out), 2);
    mr_it_start_static(&cluster, victim, extra_args);
    assert_true(mr_it_wait_leader(&cluster, 10000, 1) >= 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_a_deploy_under_write_load_switches_every_node_at_the_same_index, setup_none,
            teardown_cluster),
        cmocka_unit_test_setup_teardown(
            test_a_node_that_was_down_catches_up_by_snapshot_and_runs_the_new_script,
            setup_none, teardown_cluster),
        cmocka_unit_test_setup_teardown(test_a_bad_script_is_refused_with_422_and_nothing_changes,
                                        setup_none, teardown_cluster),
        cmocka_unit_test_setup_teardown(
            test_replay_compares_a_candidate_with_the_script_the_log_ran, setup_none,
            teardown_cluster),
        cmocka_unit_test_setup_teardown(test_replay_switches_the_log_side_at_a_script_entry,
                                        setup_none, teardown_cluster),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
