/* The HTTP API end to end: every endpoint and error code of docs/api.md,
 * against real 3-node clusters on 127.0.0.1. */
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

/* Request, check the status, and return jq(expr) of the body (static buffer). */
static const char *call(int node, const char *method, const char *path, const char *body,
                        const char *headers, int want, const char *expr)
{
    static char out[4096];
    struct mr_it_resp r = mr_it_http(&cluster, node, method, path, body, headers);
    EXPECT_STATUS(r, want);
    snprintf(out, sizeof out, "%s", expr ? mr_it_jq(r.body, expr) : r.body);
    mr_it_resp_free(&r);
    return out;
}

static int start3(const char *extra)
{
    int i;
    mr_it_cluster_init(&cluster, 3);
    for (i = 0; i < 3; i++) mr_it_start_static(&cluster, i, extra);
    i = mr_it_wait_leader(&cluster, 10000, 1);
    assert_true(i >= 0);
    return i;
}

/* Like mr_it_wait_leader, for nodes that want a token on /v1/status. */
static int wait_leader_with(const char *headers)
{
    long long t0 = mr_it_now_ms();
    while (mr_it_now_ms() - t0 < 10000) {
        for (int i = 0; i < cluster.n; i++) {
            struct mr_it_resp r = mr_it_http(&cluster, i, "GET", "/v1/status", NULL, headers);
            int is = r.status == 200 && strcmp(mr_it_jq(r.body, "j.role"), "leader") == 0;
            mr_it_resp_free(&r);
            if (is) return i;
        }
        mr_it_sleep_ms(50);
    }
    return -1;
}

/* 1 if the node's log contains needle. */
static int log_has(int i, const char *needle)
{
    static char buf[1 << 20];
    size_t got;
    FILE *f = fopen(cluster.nodes[i].log_path, "r");
    if (f == NULL) return 0;
    got = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[got] = '\0';
    return strstr(buf, needle) != NULL;
}

static void test_commands_queries_and_kv_work_through_any_node(void **state)
{
    int leader, f1, f2;
    const char *s;
    (void)state;
    leader = start3("--max-body-bytes 4096");
    f1 = (leader + 1) % 3, f2 = (leader + 2) % 3;

    /* a command through a follower is forwarded and carries its index */
    s = call(f1, "POST", "/v1/command", "{\"op\":\"put\",\"key\":\"a\",\"value\":{\"n\":1}}",
             NULL, 200, "j.result.ok and j.index > 0");
    assert_string_equal(s, "true");
    /* queries: every consistency, on every node */
    static const char *const modes[] = {"", "?consistency=linearizable", "?consistency=lease",
                                        "?consistency=stale"};
    for (int m = 0; m < 4; m++) {
        char path[64];
        snprintf(path, sizeof path, "/v1/query%s", modes[m]);
        for (int i = 0; i < 3; i++)
            assert_string_equal(call(i, "POST", path, "{\"op\":\"get\",\"key\":\"a\"}", NULL, 200,
                                     "('%d %s'):format(j.result.value.n, j.index > 0)"),
                                "1 true");
    }
    call(f2, "POST", "/v1/query?consistency=sometimes", "{\"op\":\"get\",\"key\":\"a\"}", NULL,
         400, NULL);

    /* kv sugar */
    call(f2, "PUT", "/v1/kv/dir%2Fx", "[1,2]", NULL, 200, NULL);
    call(leader, "PUT", "/v1/kv/dir%2Fy", "\"y\"", NULL, 200, NULL);
    assert_string_equal(call(f1, "GET", "/v1/kv/dir%2Fx", NULL, NULL, 200, "j.key .. #j.value"),
                        "dir/x2");
    assert_string_equal(call(f1, "GET", "/v1/kv/dir%2Fy?consistency=stale", NULL, NULL, 200,
                             "j.value"),
                        "y");
    assert_string_equal(call(f2, "GET", "/v1/kv/?prefix=dir/", NULL, NULL, 200,
                             "#j.result.items .. j.result.items[2].key"),
                        "2dir/y");
    call(f1, "DELETE", "/v1/kv/dir%2Fx", NULL, NULL, 200, NULL);
    assert_string_equal(call(f2, "GET", "/v1/kv/dir%2Fx", NULL, NULL, 404, "j.error.code"),
                        "not_found");
    call(f1, "PUT", "/v1/kv/bad", "{not json", NULL, 400, NULL);

    /* errors */
    s = call(f1, "POST", "/v1/command", "{\"op\":\"put\",\"key\":", NULL, 400,
             "j.error.code .. ' ' .. tostring(j.error.message:find('%d') ~= nil)");
    assert_string_equal(s, "invalid_json true");
    assert_string_equal(call(f1, "POST", "/v1/command", "{\"op\":\"zap\"}", NULL, 422,
                             "j.error.code .. ': ' .. j.error.message"),
                        "script_error: unknown op: zap");
    assert_string_equal(call(f1, "GET", "/v1/nothing", NULL, NULL, 404, "j.error.code"),
                        "not_found");
    {
        struct mr_it_resp r = mr_it_http(&cluster, f1, "GET", "/v1/command", NULL, NULL);
        EXPECT_STATUS(r, 405);
        assert_string_equal(mr_it_jq(r.body, "j.error.code"), "method_not_allowed");
        mr_it_resp_free(&r);
    }
    {
        char big[6000];
        memset(big, ' ', sizeof big - 1);
        big[0] = '{';
        big[sizeof big - 2] = '}';
        big[sizeof big - 1] = '\0';
        assert_string_equal(call(f1, "POST", "/v1/command", big, NULL, 413, "j.error.code"),
                            "too_large");
    }
    /* the cluster still serves, and the rejected requests applied nothing */
    assert_string_equal(call(leader, "POST", "/v1/query", "{\"op\":\"count\"}", NULL, 200,
                             "j.result.count"),
                        "2");
}

static int member_voter(int node, const char *id)
{
    char expr[256];
    snprintf(expr, sizeof expr,
             "(function() for _, m in ipairs(j.members) do if m.id == '%s' then return "
             "m.voter end end return 'absent' end)()",
             id);
    const char *s = call(node, "GET", "/v1/members", NULL, NULL, 200, expr);
    return strcmp(s, "true") == 0 ? 1 : strcmp(s, "false") == 0 ? 0 : -1;
}

static void test_status_members_transfer_snapshot_and_metrics(void **state)
{
    int leader, target, i;
    char body[256], path[64];
    const char *s;
    long long t0;
    (void)state;
    leader = start3("--snapshot-entries 1000000");
    {
        /* null while the apply thread is busy (the new leader's no-op), by contract */
        char h[65];
        assert_true(mr_it_state_hash(&cluster, leader, 10000, h, NULL));
    }
    s = call(leader, "GET", "/v1/status?hash=true", NULL, NULL, 200,
             "table.concat({j.id, j.role, tostring(j.term > 0), j.leader, #j.members, "
             "tostring(j.commit >= j.applied), tostring(#j.state_hash == 64), "
             "tostring(type(j.disk_error) ~= 'string')}, ' ')");
    snprintf(body, sizeof body, "%s leader true %s 3 true true true", cluster.nodes[leader].name,
             cluster.nodes[leader].name);
    assert_string_equal(s, body);
    assert_string_equal(call((leader + 1) % 3, "GET", "/v1/status", NULL, NULL, 200, "j.role"),
                        "follower");

    /* members: add a learner (nobody runs it), it stays a learner, remove it */
    call((leader + 1) % 3, "POST", "/v1/members",
         "{\"id\":\"n9\",\"raft_addr\":\"127.0.0.1:1\",\"http_addr\":\"127.0.0.1:2\","
         "\"learner\":true}",
         NULL, 200, NULL);
    assert_int_equal(member_voter(leader, "n9"), 0);
    call(leader, "POST", "/v1/members", "{\"id\":\"n9\",\"raft_addr\":\"127.0.0.1:3\"}", NULL,
         409, NULL);
    call(leader, "POST", "/v1/members", "{\"raft_addr\":\"127.0.0.1:3\"}", NULL, 400, NULL);
    call(leader, "POST", "/v1/members", "{\"id\":\"bad id\",\"raft_addr\":\"127.0.0.1:3\"}", NULL,
         400, NULL);
    call(leader, "DELETE", "/v1/members/n9", NULL, NULL, 200, NULL);
    assert_int_equal(member_voter(leader, "n9"), -1);
    call(leader, "DELETE", "/v1/members/n42", NULL, NULL, 404, NULL);

    /* leadership transfer to a named voter, through a follower */
    target = (leader + 2) % 3;
    snprintf(body, sizeof body, "{\"id\":\"%s\"}", cluster.nodes[target].name);
    s = call((leader + 1) % 3, "POST", "/v1/leader/transfer", body, NULL, 200, "j.leader");
    assert_string_equal(s, cluster.nodes[target].name);
    t0 = mr_it_now_ms();
    while ((i = mr_it_wait_leader(&cluster, 5000, 1)) != target && mr_it_now_ms() - t0 < 5000)
        mr_it_sleep_ms(20);
    assert_int_equal(i, target);
    leader = target;
    call(leader, "POST", "/v1/leader/transfer", "{\"id\":\"nope\"}", NULL, 404, NULL);

    /* snapshot on demand, then nothing new: 200 with started false */
    for (i = 0; i < 5; i++) {
        snprintf(path, sizeof path, "/v1/kv/s%d", i);
        call(i % 3, "PUT", path, "1", NULL, 200, NULL);
    }
    {
        struct mr_it_resp r = mr_it_http(&cluster, leader, "POST", "/v1/snapshot", NULL, NULL);
        assert_true(r.status == 202 || r.status == 200);
        mr_it_resp_free(&r);
    }
    t0 = mr_it_now_ms();
    while (strcmp(call(leader, "GET", "/v1/status", NULL, NULL, 200, "j.snapshot_index > 0"),
                  "true") != 0) {
        assert_true(mr_it_now_ms() - t0 < 5000);
        mr_it_sleep_ms(20);
    }
    assert_string_equal(call(leader, "POST", "/v1/snapshot", NULL, NULL, 200, "j.started"),
                        "false");

    /* metrics: Prometheus text with the series operators alert on */
    {
        static const char *const names[] = {
            "moonraft_term ",           "moonraft_role ",
            "moonraft_commit_index ",   "moonraft_applied_index ",
            "moonraft_apply_lag ",      "moonraft_proposals_total ",
            "moonraft_reads_total ",    "moonraft_elections_won_total ",
            "moonraft_leader_changes_total ", "moonraft_snapshots_total",
            "moonraft_wal_sync_seconds_bucket{le=", "moonraft_wal_sync_seconds_count ",
            "moonraft_peers_connected ", "moonraft_http_request_duration_seconds_bucket{le=",
            "moonraft_log_resident_bytes ", "moonraft_log_cache_misses_total ",
            "moonraft_log_cache_evicted_bytes_total ",
            "# TYPE moonraft_http_request_duration_seconds histogram"};
        struct mr_it_resp r = mr_it_http(&cluster, leader, "GET", "/metrics", NULL, NULL);
        EXPECT_STATUS(r, 200);
        for (i = 0; i < (int)(sizeof names / sizeof names[0]); i++) {
            if (strstr(r.body, names[i]) == NULL) fail_msg("metrics lack %s", names[i]);
        }
        assert_non_null(strstr(r.body, "moonraft_role 4"));
        assert_non_null(strstr(r.body, "moonraft_peers_connected 2"));
        mr_it_resp_free(&r);
    }
}

static void test_tokens_guard_client_and_admin_calls_and_stay_out_of_logs(void **state)
{
    int leader, i;
    (void)state;
    mr_it_cluster_init(&cluster, 3);
    for (i = 0; i < 3; i++)
        mr_it_start_static(&cluster, i, "--client-token cli-s3cret-token --admin-token adm-s3cret-token");
    leader = wait_leader_with("Authorization: Bearer cli-s3cret-token\r\n");
    assert_true(leader >= 0);
    mr_it_sleep_ms(300); /* let every follower learn the leader */
    const char *cli = "Authorization: Bearer cli-s3cret-token\r\n";
    const char *adm = "Authorization: Bearer adm-s3cret-token\r\n";
    const char *bad = "Authorization: Bearer wrong\r\n";

    assert_string_equal(call(leader, "PUT", "/v1/kv/a", "1", NULL, 401, "j.error.code"),
                        "unauthorized");
    assert_string_equal(call(leader, "PUT", "/v1/kv/a", "1", bad, 403, "j.error.code"),
                        "forbidden");
    call((leader + 1) % 3, "PUT", "/v1/kv/a", "1", cli, 200, NULL);
    call(leader, "GET", "/v1/kv/a", NULL, adm, 200, NULL); /* admin may do client calls */
    call(leader, "GET", "/v1/status", NULL, NULL, 401, NULL);
    call(leader, "GET", "/v1/status", NULL, cli, 200, NULL);
    /* admin calls need the admin token */
    call(leader, "POST", "/v1/snapshot", NULL, cli, 403, NULL);
    call(leader, "GET", "/v1/members", NULL, cli, 200, NULL); /* reading is a client call */
    call(leader, "POST", "/v1/members", "{\"id\":\"n7\",\"raft_addr\":\"127.0.0.1:1\"}",
         cli, 403, NULL);
    call(leader, "POST", "/v1/leader/transfer", "{}", NULL, 401, NULL);
    call(leader, "DELETE", "/v1/members/n3", NULL, bad, 403, NULL);
    call(leader, "GET", "/v1/members", NULL, adm, 200, NULL);
    /* nothing unauthorized was applied */
    assert_string_equal(call(leader, "GET", "/v1/kv/a", NULL, cli, 200, "j.value"), "1");
    assert_string_equal(
        call(leader, "GET", "/v1/members", NULL, adm, 200, "#j.members"), "3");
    for (i = 0; i < 3; i++) {
        assert_false(log_has(i, "s3cret"));
    }
}

static void test_no_leader_is_503_with_retry_after_and_a_lost_quorum_is_504(void **state)
{
    int leader, f1, f2;
    struct mr_it_resp r;
    (void)state;
    leader = start3("--request-timeout-ms 1500");
    f1 = (leader + 1) % 3, f2 = (leader + 2) % 3;
    call(f1, "PUT", "/v1/kv/a", "1", NULL, 200, NULL);

    /* both followers freeze: the leader's proposal cannot commit; its outcome is unknown */
    mr_it_pause(&cluster, f1);
    mr_it_pause(&cluster, f2);
    r = mr_it_http(&cluster, leader, "PUT", "/v1/kv/b", "2", NULL);
    EXPECT_STATUS(r, 504);
    assert_string_equal(mr_it_jq(r.body, "j.error.code"), "timeout");
    assert_string_equal(mr_it_jq(r.body, "tostring(j.error.message:find('may or may not') ~= nil)"),
                        "true");
    mr_it_resp_free(&r);
    /* by now check-quorum deposed it: no leader, 503 with Retry-After */
    r = mr_it_http(&cluster, leader, "PUT", "/v1/kv/c", "3", NULL);
    EXPECT_STATUS(r, 503);
    assert_string_equal(mr_it_jq(r.body, "j.error.code"), "no_leader");
    assert_true(atoi(r.retry_after) >= 1);
    mr_it_resp_free(&r);
    /* stale reads still work without a leader */
    call(leader, "GET", "/v1/kv/a?consistency=stale", NULL, NULL, 200, NULL);
    mr_it_resume(&cluster, f1);
    mr_it_resume(&cluster, f2);
    assert_true(mr_it_wait_leader(&cluster, 10000, 1) >= 0);
    call(leader, "PUT", "/v1/kv/d", "4", NULL, 200, NULL);
    assert_string_equal(call(f2, "GET", "/v1/kv/c", NULL, NULL, 404, "j.error.code"),
                        "not_found");
}

static void test_idempotent_retries_apply_once_across_nodes_and_leader_changes(void **state)
{
    int leader, f1, f2, nl;
    char first[4096]; /* as large as call()'s buffer: the answer is compared whole */
    const char *cmd = "{\"op\":\"cas\",\"key\":\"once\",\"expect\":null,\"value\":1}";
    const char *key = "Idempotency-Key: retry-7f3a\r\n";
    (void)state;
    leader = start3(NULL);
    f1 = (leader + 1) % 3, f2 = (leader + 2) % 3;

    snprintf(first, sizeof first, "%s", call(f1, "POST", "/v1/command", cmd, key, 200, NULL));
    assert_string_equal(mr_it_jq(first, "j.result.ok"), "true");
    /* retries to another node and to the leader get the first answer, index included */
    assert_string_equal(call(f2, "POST", "/v1/command", cmd, key, 200, NULL), first);
    assert_string_equal(call(leader, "POST", "/v1/command", cmd, key, 200, NULL), first);
    /* without the key the same command is a new one: the cas now fails */
    assert_string_equal(call(f2, "POST", "/v1/command", cmd, NULL, 200, "j.result.ok"), "false");

    /* kill the leader; the retry through the new leader still gets the first answer */
    mr_it_kill9(&cluster, leader);
    nl = mr_it_wait_leader(&cluster, 10000, 1);
    assert_true(nl == f1 || nl == f2);
    assert_string_equal(call(f2, "POST", "/v1/command", cmd, key, 200, NULL), first);
    assert_string_equal(call(f1, "POST", "/v1/command", cmd, key, 200, NULL), first);
    /* and after the old leader comes back and catches up, there too */
    mr_it_start_static(&cluster, leader, NULL);
    assert_true(mr_it_wait_leader(&cluster, 10000, 1) >= 0);
    assert_string_equal(call(leader, "POST", "/v1/command", cmd, key, 200, NULL), first);
    assert_string_equal(call(leader, "GET", "/v1/kv/once", NULL, NULL, 200, "j.value"), "1");
}

static void test_watch_wakes_on_change_times_out_empty_and_reports_compaction(void **state)
{
    int leader, f1;
    long long t0, took;
    char path[128], idx[32];
    pid_t child;
    struct mr_it_resp r;
    (void)state;
    leader = start3(NULL);
    f1 = (leader + 1) % 3;
    snprintf(idx, sizeof idx, "%s", call(f1, "PUT", "/v1/kv/w%2Fa", "1", NULL, 200, "j.index"));

    /* a watch from that index wakes up ~300 ms later, when w/b is written */
    child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        mr_it_sleep_ms(300);
        struct mr_it_resp cr = mr_it_http(&cluster, leader, "PUT", "/v1/kv/w%2Fb", "2", NULL);
        _exit(cr.status == 200 ? 0 : 1);
    }
    snprintf(path, sizeof path, "/v1/watch?prefix=w/&index=%s&timeout_ms=20000", idx);
    t0 = mr_it_now_ms();
    r = mr_it_http(&cluster, f1, "GET", path, NULL, NULL);
    took = mr_it_now_ms() - t0;
    {
        int st;
        assert_int_equal(waitpid(child, &st, 0), child);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    EXPECT_STATUS(r, 200);
    assert_string_equal(mr_it_jq(r.body, "#j.events .. ' ' .. j.events[1].event.key .. ' ' .. "
                                         "j.events[1].event.op"),
                        "1 w/b put");
    fprintf(stderr, "watch woke %lld ms after it started (write at ~300 ms)\n", took);
    assert_true(took < 3000);
    mr_it_resp_free(&r);

    /* nothing happens under x/: an empty answer after the timeout */
    snprintf(path, sizeof path, "/v1/watch?prefix=x/&index=%s&timeout_ms=300", idx);
    t0 = mr_it_now_ms();
    assert_string_equal(call(f1, "GET", path, NULL, NULL, 200, "#j.events"), "0");
    took = mr_it_now_ms() - t0;
    assert_true(took >= 250 && took < 3000);
    call(f1, "GET", "/v1/watch?prefix=w/&index=x", NULL, NULL, 400, NULL);
    call(f1, "POST", "/v1/watch?prefix=w/&index=1", NULL, NULL, 405, NULL);

    /* more events than the ring keeps: watching from the start is 410 compacted */
    {
        size_t cap = 5000 * 24 + 64, off = 0;
        char *body = malloc(cap);
        assert_non_null(body);
        off += (size_t)snprintf(body + off, cap - off, "{\"op\":\"mput\",\"items\":{");
        for (int i = 0; i < 5000; i++)
            off += (size_t)snprintf(body + off, cap - off, "%s\"m/%05d\":%d", i ? "," : "", i, i);
        snprintf(body + off, cap - off, "}}");
        call(leader, "POST", "/v1/command", body, NULL, 200, NULL);
        free(body);
    }
    assert_string_equal(call(leader, "GET", "/v1/watch?prefix=w/&index=1&timeout_ms=100", NULL,
                             NULL, 410, "j.error.code"),
                        "compacted");
}

static void mput_values(int node, const char *prefix, int n, int value_bytes)
{
    size_t cap = (size_t)n * ((size_t)value_bytes + 48) + 64, off = 0;
    char *body = malloc(cap);
    assert_non_null(body);
    off += (size_t)snprintf(body + off, cap - off, "{\"op\":\"mput\",\"items\":{");
    for (int i = 0; i < n; i++) {
        off += (size_t)snprintf(body + off, cap - off, "%s\"%s%05d\":\"", i ? "," : "", prefix, i);
        memset(body + off, 'v', (size_t)value_bytes);
        off += (size_t)value_bytes;
        off += (size_t)snprintf(body + off, cap - off, "\"");
    }
    snprintf(body + off, cap - off, "}}");
    call(node, "POST", "/v1/command", body, NULL, 200, NULL);
    free(body);
}

static int snapshots_taken(int node)
{
    return atoi(call(node, "GET", "/v1/status", NULL, NULL, 200, "j.snapshots_taken"));
}

/* Automatic snapshots wait for snapshot_entries entries AND for a log of
 * snapshot_log_percent of the last snapshot's size. */
static void test_automatic_snapshots_follow_the_log_size_not_only_the_count(void **state)
{
    int leader, i;
    long long t0;
    (void)state;
    leader = start3("--snapshot-entries 5 --snapshot-log-percent 400");
    mput_values(leader, "big/", 50, 1000); /* a ~50 KB state */
    for (i = 0; i < 6; i++) call(leader, "PUT", "/v1/kv/small", "1", NULL, 200, NULL);
    t0 = mr_it_now_ms();
    while (snapshots_taken(leader) < 1 && mr_it_now_ms() - t0 < 10000) mr_it_sleep_ms(20);
    assert_int_equal(snapshots_taken(leader), 1); /* the first one: by count */
    /* 30 more entries (6x the count), but a few KB of log: no snapshot */
    for (i = 0; i < 30; i++) call(leader, "PUT", "/v1/kv/small", "2", NULL, 200, NULL);
    mr_it_sleep_ms(300);
    assert_int_equal(snapshots_taken(leader), 1);
    /* 4x the snapshot's size in log: the next one comes */
    for (i = 0; i < 5; i++) mput_values(leader, "more/", 50, 1000);
    for (i = 0; i < 6; i++) call(leader, "PUT", "/v1/kv/small", "3", NULL, 200, NULL);
    t0 = mr_it_now_ms();
    while (snapshots_taken(leader) < 2 && mr_it_now_ms() - t0 < 10000) mr_it_sleep_ms(20);
    assert_int_equal(snapshots_taken(leader), 2);
}

/* A few large entries: the byte trigger takes a snapshot long before the
 * count, and the log kept behind it is capped in bytes too. */
static void test_large_entries_are_snapshotted_by_size_and_trimmed_by_bytes(void **state)
{
    int leader, i;
    long long t0;
    (void)state;
    /* 1 MiB of log triggers; at most 256 KiB (a quarter) stays behind */
    leader = start3("--snapshot-entries 1000000 --snapshot-log-mb 1 --snapshot-log-percent 0 "
                    "--snapshot-trailing 1000");
    for (i = 0; i < 8; i++) {
        char prefix[16];
        snprintf(prefix, sizeof prefix, "b%d/", i);
        mput_values(leader, prefix, 200, 1000); /* ~200 KB per entry */
    }
    t0 = mr_it_now_ms();
    while (snapshots_taken(leader) < 1 && mr_it_now_ms() - t0 < 10000) mr_it_sleep_ms(20);
    assert_true(snapshots_taken(leader) >= 1);
    /* compaction follows the snapshot: no more than ~2 of the big entries
     * stay behind it (1000 would by count) */
    t0 = mr_it_now_ms();
    for (;;) {
        long long snap = atoll(call(leader, "GET", "/v1/status", NULL, NULL, 200, "j.snapshot_index"));
        long long first = atoll(call(leader, "GET", "/v1/status", NULL, NULL, 200, "j.first_index"));
        if (snap > 0 && first > 1 && snap - first + 1 <= 3) break;
        if (mr_it_now_ms() - t0 > 10000)
            fail_msg("log not trimmed in bytes: first %lld, snapshot %lld", first, snap);
        mr_it_sleep_ms(50);
    }
    call(leader, "GET", "/v1/kv/b7%2F00199", NULL, NULL, 200, NULL);
}

static int role_is_leader(int node)
{
    struct mr_it_resp r = mr_it_http(&cluster, node, "GET", "/v1/status", NULL, NULL);
    int yes = r.status == 200 && strcmp(mr_it_jq(r.body, "j.role"), "leader") == 0;
    mr_it_resp_free(&r);
    return yes;
}

/* A deposed leader with a proposal in flight that learns what followed only
 * from a snapshot cannot tell whether its entry is in it: the client hears
 * 504 "may or may not have been applied" (it was 503 "not applied", which
 * is wrong whenever another leader had committed the entry). */
static void test_a_proposal_skipped_by_a_snapshot_install_is_answered_504(void **state)
{
    static const char extra[] = "--snapshot-entries 10 --snapshot-trailing 0 "
                                "--snapshot-log-percent 0 --request-timeout-ms 40000";
    int leader, f1, f2, nl = -1, st;
    long long t0, last;
    pid_t child;
    (void)state;
    leader = start3(extra);
    f1 = (leader + 1) % 3;
    f2 = (leader + 2) % 3;
    call(leader, "PUT", "/v1/kv/before", "1", NULL, 200, NULL);
    /* the followers die: the leader takes the command but cannot commit it */
    mr_it_kill9(&cluster, f1);
    mr_it_kill9(&cluster, f2);
    child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        struct mr_it_resp cr = mr_it_http_port(cluster.nodes[leader].http_port, "PUT",
                                               "/v1/kv/skipped", "1", NULL, 45000);
        fprintf(stderr, "the deposed leader answered %d: %s\n", cr.status, cr.body ? cr.body : "");
        _exit(cr.status == 504 ? 4 : cr.status == 503 ? 3 : cr.status == 200 ? 2 : 1);
    }
    mr_it_sleep_ms(300);
    last = atoll(call(leader, "GET", "/v1/status", NULL, NULL, 200, "j.last_index"));
    /* the leader stops; the followers come back and elect one of them */
    mr_it_pause(&cluster, leader);
    mr_it_start_static(&cluster, f1, extra);
    mr_it_start_static(&cluster, f2, extra);
    t0 = mr_it_now_ms();
    while (nl < 0 && mr_it_now_ms() - t0 < 15000) {
        if (role_is_leader(f1)) nl = f1;
        else if (role_is_leader(f2)) nl = f2;
        else mr_it_sleep_ms(50);
    }
    assert_true(nl >= 0);
    /* enough writes for snapshots that compact past the old leader's log */
    for (int i = 0; i < 40; i++) call(nl, "PUT", "/v1/kv/after", "2", NULL, 200, NULL);
    t0 = mr_it_now_ms();
    while (atoll(call(nl, "GET", "/v1/status", NULL, NULL, 200, "j.first_index")) <= last + 1) {
        assert_true(mr_it_now_ms() - t0 < 15000);
        mr_it_sleep_ms(50);
    }
    /* the old leader comes back, can only catch up by snapshot, and answers */
    mr_it_resume(&cluster, leader);
    assert_int_equal(waitpid(child, &st, 0), child);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 4);
    call(nl, "GET", "/v1/kv/skipped", NULL, NULL, 404, NULL); /* it was not, this time */
    call(leader, "GET", "/v1/kv/after?consistency=stale", NULL, NULL, 200, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_commands_queries_and_kv_work_through_any_node,
                                        setup_none, teardown_cluster),
        cmocka_unit_test_setup_teardown(
            test_automatic_snapshots_follow_the_log_size_not_only_the_count, setup_none,
            teardown_cluster),
        cmocka_unit_test_setup_teardown(
            test_large_entries_are_snapshotted_by_size_and_trimmed_by_bytes, setup_none,
            teardown_cluster),
        cmocka_unit_test_setup_teardown(
            test_a_proposal_skipped_by_a_snapshot_install_is_answered_504, setup_none,
            teardown_cluster),
        cmocka_unit_test_setup_teardown(test_status_members_transfer_snapshot_and_metrics,
                                        setup_none, teardown_cluster),
        cmocka_unit_test_setup_teardown(
            test_tokens_guard_client_and_admin_calls_and_stay_out_of_logs, setup_none,
            teardown_cluster),
        cmocka_unit_test_setup_teardown(
            test_no_leader_is_503_with_retry_after_and_a_lost_quorum_is_504, setup_none,
            teardown_cluster),
        cmocka_unit_test_setup_teardown(
            test_idempotent_retries_apply_once_across_nodes_and_leader_changes, setup_none,
            teardown_cluster),
        cmocka_unit_test_setup_teardown(
            test_watch_wakes_on_change_times_out_empty_and_reports_compaction, setup_none,
            teardown_cluster),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
