/* Integration: the example state machines in examples/ on real 3-node
 * clusters, driven over the HTTP API. Commands go to followers as well as to
 * the leader (followers forward them). Every test ends by restarting one node
 * from a snapshot (which exercises the script's snapshot() and restore()) and
 * checking that all nodes report the same state_hash at the same applied
 * index. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static struct mr_it_cluster cluster;
static char extra_args[700]; /* the --state-machine flag of the running test */
static char last[1 << 16];   /* body of the last answer of post() */

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

/* Sends the printf-formatted body to node `node` (POST `path`), fails the test
 * unless the status is `want`, keeps the body in `last` and returns it. */
static const char *post(int node, const char *path, int want, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static const char *post(int node, const char *path, int want, const char *fmt, ...)
{
    char body[4096];
    struct mr_it_resp r;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    r = mr_it_http(&cluster, node, "POST", path, body, NULL);
    if (r.status != want) {
        fprintf(stderr, "POST %s to n%d: %s\n  -> status %d (want %d): %s\n", path, node + 1,
                body, r.status, want, r.body);
        mr_it_dump_logs(&cluster);
        mr_it_resp_free(&r);
        fail();
    }
    snprintf(last, sizeof last, "%s", r.body);
    mr_it_resp_free(&r);
    return last;
}

#define CMD(node, ...) post((node), "/v1/command", 200, __VA_ARGS__)
#define QUERY(node, ...) post((node), "/v1/query", 200, __VA_ARGS__)
#define STALE(node, ...) post((node), "/v1/query?consistency=stale", 200, __VA_ARGS__)
#define REFUSED(node, ...) post((node), "/v1/command", 422, __VA_ARGS__)

/* mr_it_jq over the last answer. */
static const char *J(const char *expr) { return mr_it_jq(last, expr); }

/* An integer field of the last answer; fails the test if it is not one. */
static long long N(const char *expr)
{
    const char *s = J(expr);
    char *end;
    long long v;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0') {
        fprintf(stderr, "%s is not an integer in %s: %s\n", expr, last, s);
        fail();
    }
    return v;
}

#define EXPECT(expr, want) assert_string_equal(J(expr), (want))

/* Starts a 3-node cluster running examples/<script> and waits for a leader
 * every node agrees on. Returns the leader's index. */
static int start_example(const char *script)
{
    int i, leader;
    snprintf(extra_args, sizeof extra_args, "--state-machine %s/examples/%s", MR_SOURCE_DIR,
             script);
    mr_it_cluster_init(&cluster, 3);
    for (i = 0; i < 3; i++) mr_it_start_static(&cluster, i, extra_args);
    leader = mr_it_wait_leader(&cluster, 10000, 1);
    if (leader < 0) mr_it_dump_logs(&cluster);
    assert_true(leader >= 0);
    return leader;
}

static void status_of(int node, char *buf, size_t len)
{
    struct mr_it_resp r = mr_it_http(&cluster, node, "GET", "/v1/status?hash=true", NULL, NULL);
    assert_int_equal(r.status, 200);
    snprintf(buf, len, "%s", r.body);
    mr_it_resp_free(&r);
}

/* Waits until every running node reports the same applied index and the same
 * state_hash; fails the test after 10 s. */
static void expect_converged(void)
{
    char st[8192], hash0[80], applied0[32];
    int round, i;
    for (round = 0; round < 200; round++) {
        int same = 1, first = 1;
        for (i = 0; i < cluster.n; i++) {
            if (cluster.nodes[i].pid <= 0) continue;
            status_of(i, st, sizeof st);
            if (first) {
                snprintf(hash0, sizeof hash0, "%s", mr_it_jq(st, "j.state_hash"));
                snprintf(applied0, sizeof applied0, "%s", mr_it_jq(st, "j.applied"));
                first = 0;
            } else if (strcmp(hash0, mr_it_jq(st, "j.state_hash")) != 0 ||
                       strcmp(applied0, mr_it_jq(st, "j.applied")) != 0) {
                same = 0;
            }
        }
        if (same) break;
        mr_it_sleep_ms(50);
    }
    if (round == 200) mr_it_dump_logs(&cluster);
    assert_true(round < 200);
    assert_int_equal((int)strlen(hash0), 64);
}

/* Has node `node` take a snapshot and waits until it is durable; returns its
 * index. */
static long long take_snapshot(int node)
{
    char st[8192];
    long long want;
    int i;
    /* 202: started; 200: nothing applied since the last one; 409: an
     * automatic snapshot is running (try again). */
    for (i = 0; i < 200; i++) {
        struct mr_it_resp r = mr_it_http(&cluster, node, "POST", "/v1/snapshot", NULL, NULL);
        int status = r.status;
        snprintf(last, sizeof last, "%s", r.body);
        mr_it_resp_free(&r);
        if (status == 200 || status == 202) break;
        assert_int_equal(status, 409);
        mr_it_sleep_ms(25);
    }
    assert_true(i < 200);
    want = N("j.snapshot_index");
    assert_true(want > 0);
    for (i = 0; i < 200; i++) {
        status_of(node, st, sizeof st);
        if (atoll(mr_it_jq(st, "j.snapshot_index")) >= want) break;
        mr_it_sleep_ms(25);
    }
    assert_true(i < 200);
    return want;
}

/* Snapshots node `node`, restarts it (so it restores the script's state from
 * that snapshot, then replays the rest of the log) and checks that every node
 * converges to the same state hash. */
static void restart_from_snapshot(int node)
{
    char st[8192];
    long long want = take_snapshot(node);
    assert_int_equal(mr_it_stop(&cluster, node), 0);
    mr_it_start_static(&cluster, node, extra_args);
    assert_true(mr_it_wait_leader(&cluster, 10000, 1) >= 0);
    status_of(node, st, sizeof st);
    assert_true(atoll(mr_it_jq(st, "j.snapshot_index")) >= want); /* it did restore */
    expect_converged();
}

/* Watch events of `prefix` from the beginning, on node `node`, into `last`. */
static void watch(int node, const char *prefix)
{
    char path[256];
    struct mr_it_resp r;
    snprintf(path, sizeof path, "/v1/watch?prefix=%s&index=0&timeout_ms=200", prefix);
    r = mr_it_http(&cluster, node, "GET", path, NULL, NULL);
    assert_int_equal(r.status, 200);
    snprintf(last, sizeof last, "%s", r.body);
    mr_it_resp_free(&r);
}

/* Long-polls node `node` for events of `prefix` applied after `after`, until
 * one comes (or 8 s pass), into `last`; returns the time it took (ms). */
static long long watch_wait(int node, const char *prefix, long long after)
{
    char path[256];
    struct mr_it_resp r;
    long long t0 = mr_it_now_ms();
    snprintf(path, sizeof path, "/v1/watch?prefix=%s&index=%lld&timeout_ms=8000", prefix, after);
    r = mr_it_http(&cluster, node, "GET", path, NULL, NULL);
    assert_int_equal(r.status, 200);
    snprintf(last, sizeof last, "%s", r.body);
    mr_it_resp_free(&r);
    return mr_it_now_ms() - t0;
}

/* A field of node `node`'s /v1/status, as text. */
static const char *status_field(int node, const char *expr)
{
    static char st[8192], out[128];
    status_of(node, st, sizeof st);
    snprintf(out, sizeof out, "%s", mr_it_jq(st, expr));
    return out;
}

static void sleep_until(long long deadline_ms)
{
    long long now = mr_it_now_ms();
    if (deadline_ms > now) mr_it_sleep_ms((int)(deadline_ms - now));
}

/* ---- lock.lua -------------------------------------------------------------------- */

static void test_lock_service_hands_out_leases_with_growing_fencing_tokens(void **state)
{
    int leader = start_example("lock.lua"), f1 = (leader + 1) % 3, f2 = (leader + 2) % 3;
    long long ta, tb, tc, expires_b, t_acquired;
    (void)state;

    CMD(f1, "{\"op\":\"acquire\",\"name\":\"db\",\"owner\":\"a\",\"ttl_ms\":60000}");
    EXPECT("j.result.ok", "true");
    ta = N("j.result.token");
    assert_int_equal(N("j.index"), ta); /* the token is the acquiring entry's index */

    /* A second acquirer is refused while the lease is live, on any node. */
    CMD(f2, "{\"op\":\"acquire\",\"name\":\"db\",\"owner\":\"b\",\"ttl_ms\":60000}");
    EXPECT("j.result.ok", "false");
    EXPECT("j.result.owner", "a");
    QUERY(leader, "{\"op\":\"get\",\"name\":\"db\"}");
    EXPECT("j.result.owner", "a");
    assert_int_equal(N("j.result.token"), ta);
    CMD(f2, "{\"op\":\"check\",\"name\":\"db\",\"token\":%lld}", ta);
    EXPECT("j.result.ok", "true");

    /* Only the holder, with its token, releases. */
    CMD(f2, "{\"op\":\"release\",\"name\":\"db\",\"owner\":\"b\",\"token\":%lld}", ta);
    EXPECT("j.result.ok", "false");
    CMD(f1, "{\"op\":\"release\",\"name\":\"db\",\"owner\":\"a\",\"token\":%lld}", ta);
    EXPECT("j.result.ok", "true");
    QUERY(f2, "{\"op\":\"get\",\"name\":\"db\"}");
    EXPECT("j.result.owner", "null");

    /* b takes it with a short lease and a larger token. */
    CMD(f2, "{\"op\":\"acquire\",\"name\":\"db\",\"owner\":\"b\",\"ttl_ms\":1200}");
    t_acquired = mr_it_now_ms(); /* ctx.time of the acquire is before this */
    EXPECT("j.result.ok", "true");
    tb = N("j.result.token");
    expires_b = N("j.result.expires");
    assert_true(tb > ta);
    CMD(leader, "{\"op\":\"acquire\",\"name\":\"db\",\"owner\":\"c\",\"ttl_ms\":60000}");
    EXPECT("j.result.ok", "false");
    EXPECT("j.result.owner", "b");
    assert_int_equal(N("j.result.expires"), expires_b);

    /* A query has no clock: the client passes "now" to learn liveness. */
    STALE(f1, "{\"op\":\"get\",\"name\":\"db\",\"now\":%lld}", expires_b - 1);
    EXPECT("j.result.live", "true");
    STALE(f1, "{\"op\":\"get\",\"name\":\"db\",\"now\":%lld}", expires_b);
    EXPECT("j.result.live", "false");

    /* The lease expires (judged by ctx.time at apply): c gets the lock with a
     * larger token, and b's token is fenced off. */
    sleep_until(t_acquired + 1200 + 100);
    CMD(leader, "{\"op\":\"acquire\",\"name\":\"db\",\"owner\":\"c\",\"ttl_ms\":60000}");
    EXPECT("j.result.ok", "true");
    tc = N("j.result.token");
    assert_true(tc > tb);
    CMD(f1, "{\"op\":\"check\",\"name\":\"db\",\"token\":%lld}", tb);
    EXPECT("j.result.ok", "false");
    CMD(f1, "{\"op\":\"check\",\"name\":\"db\",\"token\":%lld}", tc);
    EXPECT("j.result.ok", "true");
    CMD(f2, "{\"op\":\"renew\",\"name\":\"db\",\"owner\":\"b\",\"token\":%lld,\"ttl_ms\":1000}", tb);
    EXPECT("j.result.ok", "false");
    CMD(f2, "{\"op\":\"release\",\"name\":\"db\",\"owner\":\"b\",\"token\":%lld}", tb);
    EXPECT("j.result.ok", "false");
    CMD(f2, "{\"op\":\"renew\",\"name\":\"db\",\"owner\":\"c\",\"token\":%lld,\"ttl_ms\":90000}", tc);
    EXPECT("j.result.ok", "true");
    assert_int_equal(N("j.result.token"), tc);

    /* Bad input is a 422 naming the problem, and changes nothing. */
    REFUSED(f1, "{\"op\":\"acquire\",\"name\":\"db\",\"owner\":\"d\",\"ttl_ms\":\"soon\"}");
    EXPECT("j.error.code", "script_error");
    assert_non_null(strstr(J("j.error.message"), "ttl_ms must be an integer"));
    post(f1, "/v1/query", 422, "{\"op\":\"acquire\",\"name\":\"db\",\"owner\":\"d\",\"ttl_ms\":1}");
    assert_non_null(strstr(J("j.error.message"), "send it as a command"));
    QUERY(f1, "{\"op\":\"list\"}");
    EXPECT("#j.result.locks", "1");
    EXPECT("j.result.locks[1].owner", "c");

    /* The history as watchers see it, on a follower. */
    watch(f1, "lock/db");
    EXPECT("#j.events", "5");
    EXPECT("j.events[1].event.op .. j.events[2].event.op .. j.events[3].event.op .. "
           "j.events[4].event.op .. j.events[5].event.op",
           "acquiredreleasedacquiredexpiredacquired");
    EXPECT("j.events[4].event.owner", "b");

    restart_from_snapshot(f2);
    QUERY(f2, "{\"op\":\"get\",\"name\":\"db\"}");
    EXPECT("j.result.owner", "c");
    assert_int_equal(N("j.result.token"), tc);
}

/* ---- ratelimit.lua ------------------------------------------------------------------ */

static void test_ratelimit_counts_and_buckets_refuse_when_empty_then_refill(void **state)
{
    int leader = start_example("ratelimit.lua"), f1 = (leader + 1) % 3, f2 = (leader + 2) % 3;
    int i;
    long long at, wait_ms, t_empty;
    (void)state;

    for (i = 0; i < 3; i++) {
        CMD(i, "{\"op\":\"incr\",\"name\":\"hits\"}");
        assert_int_equal(N("j.result.value"), i + 1);
    }
    REFUSED(f1, "{\"op\":\"incr\",\"name\":\"hits\",\"by\":9223372036854775807}");
    assert_non_null(strstr(J("j.error.message"), "overflow"));
    CMD(f1, "{\"op\":\"incr\",\"name\":\"hits\",\"by\":-10}");
    assert_int_equal(N("j.result.value"), -7);
    QUERY(f2, "{\"op\":\"counter\",\"name\":\"hits\"}");
    assert_int_equal(N("j.result.value"), -7);
    CMD(f2, "{\"op\":\"reset\",\"name\":\"hits\"}");
    assert_int_equal(N("j.result.previous"), -7);
    QUERY(leader, "{\"op\":\"counter\",\"name\":\"hits\"}");
    assert_int_equal(N("j.result.value"), 0);

    /* 3 tokens, refilled at 1 per second. */
    CMD(f2, "{\"op\":\"bucket\",\"name\":\"api\",\"capacity\":3,\"rate\":1,\"per_ms\":1000}");
    assert_int_equal(N("j.result.tokens"), 3);
    CMD(f1, "{\"op\":\"take\",\"name\":\"api\",\"n\":3}");
    EXPECT("j.result.ok", "true");
    assert_int_equal(N("j.result.tokens"), 0);
    CMD(leader, "{\"op\":\"take\",\"name\":\"api\"}");
    EXPECT("j.result.ok", "false");
    wait_ms = N("j.result.retry_after_ms");
    t_empty = mr_it_now_ms(); /* the refused take's ctx.time is before this */
    assert_true(wait_ms >= 1 && wait_ms <= 1000);
    REFUSED(f2, "{\"op\":\"take\",\"name\":\"api\",\"n\":4}");
    assert_non_null(strstr(J("j.error.message"), "exceeds the capacity"));
    REFUSED(f2, "{\"op\":\"take\",\"name\":\"nope\"}");
    assert_non_null(strstr(J("j.error.message"), "no bucket named nope"));

    /* The refill is pure arithmetic on times: a query projects it to the
     * "now" the client passes, identically on every node. */
    QUERY(f1, "{\"op\":\"get\",\"name\":\"api\"}");
    at = N("j.result.at");
    assert_int_equal(N("j.result.tokens"), 0);
    for (i = 0; i < 3; i++) {
        STALE(i, "{\"op\":\"get\",\"name\":\"api\",\"now\":%lld}", at + 999);
        assert_int_equal(N("j.result.tokens"), 0);
        STALE(i, "{\"op\":\"get\",\"name\":\"api\",\"now\":%lld}", at + 2000);
        assert_int_equal(N("j.result.tokens"), 2);
        STALE(i, "{\"op\":\"get\",\"name\":\"api\",\"now\":%lld}", at + 3600000);
        assert_int_equal(N("j.result.tokens"), 3); /* capped at the capacity */
    }

    /* After the advertised wait, a token is there again (ctx.time moved on). */
    sleep_until(t_empty + wait_ms + 50);
    CMD(f2, "{\"op\":\"take\",\"name\":\"api\"}");
    EXPECT("j.result.ok", "true");
    CMD(f2, "{\"op\":\"incr\",\"name\":\"after\",\"by\":5}");

    restart_from_snapshot(f1);
    QUERY(f1, "{\"op\":\"list\"}");
    EXPECT("j.result.buckets[1]", "api");
    EXPECT("j.result.counters.after", "5");
}

/* ---- jobqueue.lua -------------------------------------------------------------------- */

static void test_jobqueue_redelivers_jobs_whose_lease_expired(void **state)
{
    int leader = start_example("jobqueue.lua"), f1 = (leader + 1) % 3, f2 = (leader + 2) % 3;
    int i;
    long long l1, l2, l3, l4, t_claim;
    (void)state;

    for (i = 0; i < 3; i++) {
        CMD(i, "{\"op\":\"enqueue\",\"queue\":\"mail\",\"payload\":{\"n\":%d}}", i + 1);
        assert_int_equal(N("j.result.id"), i + 1);
    }

    /* w1 claims two jobs, w2 gets the third; then nothing is visible. */
    CMD(f1, "{\"op\":\"claim\",\"queue\":\"mail\",\"consumer\":\"w1\",\"visibility_ms\":1000,"
            "\"max\":2}");
    t_claim = mr_it_now_ms(); /* the claim's ctx.time is before this */
    EXPECT("#j.result.jobs", "2");
    EXPECT("j.result.jobs[1].id", "1");
    EXPECT("j.result.jobs[2].id", "2");
    EXPECT("j.result.jobs[2].payload.n", "2");
    EXPECT("j.result.jobs[2].attempts", "1");
    l1 = N("j.result.jobs[1].lease");
    CMD(f2, "{\"op\":\"claim\",\"queue\":\"mail\",\"consumer\":\"w2\",\"visibility_ms\":1000,"
            "\"max\":5}");
    EXPECT("#j.result.jobs", "1");
    EXPECT("j.result.jobs[1].id", "3");
    l2 = N("j.result.jobs[1].lease");
    CMD(leader, "{\"op\":\"claim\",\"queue\":\"mail\",\"consumer\":\"w2\",\"visibility_ms\":1000}");
    EXPECT("#j.result.jobs", "0");
    QUERY(f2, "{\"op\":\"stats\",\"queue\":\"mail\"}");
    assert_int_equal(N("j.result.jobs"), 3);
    assert_int_equal(N("j.result.leased"), 3);

    /* ack removes a job, once. */
    CMD(f2, "{\"op\":\"ack\",\"queue\":\"mail\",\"id\":1,\"lease\":%lld}", l1);
    EXPECT("j.result.ok", "true");
    CMD(f1, "{\"op\":\"ack\",\"queue\":\"mail\",\"id\":1,\"lease\":%lld}", l1);
    EXPECT("j.result.ok", "false");
    CMD(leader, "{\"op\":\"ack\",\"queue\":\"mail\",\"id\":3,\"lease\":%lld}", l2);
    EXPECT("j.result.ok", "true");

    /* w1 "crashes" holding job 2: after the visibility timeout it is
     * delivered again, with a new lease; w1's old lease is dead. */
    sleep_until(t_claim + 1000 + 100);
    CMD(f2, "{\"op\":\"claim\",\"queue\":\"mail\",\"consumer\":\"w3\",\"visibility_ms\":30000,"
            "\"max\":5}");
    EXPECT("#j.result.jobs", "1");
    EXPECT("j.result.jobs[1].id", "2");
    EXPECT("j.result.jobs[1].payload.n", "2");
    EXPECT("j.result.jobs[1].attempts", "2");
    l3 = N("j.result.jobs[1].lease");
    assert_true(l3 > l1);
    CMD(f1, "{\"op\":\"ack\",\"queue\":\"mail\",\"id\":2,\"lease\":%lld}", l1);
    EXPECT("j.result.ok", "false");
    assert_non_null(strstr(J("j.result.reason"), "superseded"));
    CMD(f1, "{\"op\":\"extend\",\"queue\":\"mail\",\"id\":2,\"lease\":%lld,\"visibility_ms\":60000}",
        l3);
    EXPECT("j.result.ok", "true");

    /* nack gives it back at once; the next claim gets it again. */
    CMD(f1, "{\"op\":\"nack\",\"queue\":\"mail\",\"id\":2,\"lease\":%lld}", l3);
    EXPECT("j.result.ok", "true");
    CMD(leader, "{\"op\":\"claim\",\"queue\":\"mail\",\"consumer\":\"w4\",\"visibility_ms\":30000}");
    EXPECT("j.result.jobs[1].id", "2");
    EXPECT("j.result.jobs[1].attempts", "3");
    l4 = N("j.result.jobs[1].lease");
    CMD(f2, "{\"op\":\"ack\",\"queue\":\"mail\",\"id\":2,\"lease\":%lld}", l4);
    EXPECT("j.result.ok", "true");
    QUERY(f1, "{\"op\":\"stats\",\"queue\":\"mail\"}");
    assert_int_equal(N("j.result.jobs"), 0);

    /* A job with max_attempts = 1 that times out becomes dead instead. */
    CMD(f1, "{\"op\":\"enqueue\",\"queue\":\"mail\",\"payload\":\"poison\",\"max_attempts\":1}");
    assert_int_equal(N("j.result.id"), 4);
    CMD(f2, "{\"op\":\"claim\",\"queue\":\"mail\",\"consumer\":\"w1\",\"visibility_ms\":200}");
    t_claim = mr_it_now_ms();
    EXPECT("j.result.jobs[1].payload", "poison");
    CMD(leader, "{\"op\":\"enqueue\",\"queue\":\"mail\",\"payload\":[1,[],{}],\"delay_ms\":600000}");
    assert_int_equal(N("j.result.id"), 5);
    sleep_until(t_claim + 200 + 100);
    CMD(f1, "{\"op\":\"claim\",\"queue\":\"mail\",\"consumer\":\"w2\",\"visibility_ms\":200}");
    EXPECT("#j.result.jobs", "0"); /* 4 is dead, 5 is delayed */
    QUERY(f2, "{\"op\":\"get\",\"queue\":\"mail\",\"id\":4}");
    EXPECT("j.result.job.state", "dead");
    QUERY(leader, "{\"op\":\"stats\",\"queue\":\"mail\"}");
    assert_int_equal(N("j.result.jobs"), 2);
    assert_int_equal(N("j.result.dead"), 1);
    REFUSED(f1, "{\"op\":\"claim\",\"queue\":\"mail\",\"consumer\":\"w2\",\"visibility_ms\":0}");
    assert_non_null(strstr(J("j.error.message"), "visibility_ms"));

    watch(f2, "job/mail/2");
    /* enqueued claimed expired (the timer, not the next claim) claimed nacked claimed acked */
    EXPECT("#j.events", "7");
    EXPECT("j.events[3].event.op", "expired");
    EXPECT("j.events[7].event.op", "acked");
    EXPECT("j.events[6].event.attempts", "3");

    restart_from_snapshot(leader);
    QUERY(f1, "{\"op\":\"list\",\"queue\":\"mail\"}");
    EXPECT("#j.result.jobs", "2");
    assert_non_null(strstr(last, "\"payload\":[1,[],{}]")); /* JSON round-trips exactly */
    CMD(f2, "{\"op\":\"delete\",\"queue\":\"mail\",\"id\":4}");
    EXPECT("j.result.deleted", "true");
    CMD(f1, "{\"op\":\"enqueue\",\"queue\":\"mail\",\"payload\":null}");
    assert_int_equal(N("j.result.id"), 6); /* ids are never reused */
    expect_converged();
}

/* ---- bank.lua ------------------------------------------------------------------------ */

#define ACCOUNTS 5
#define CLIENTS 3
#define INITIAL 1000

struct client_tally {
    int ok, refused, unknown;
};

/* A child process: sends random transfers for `ms` milliseconds, each with an
 * Idempotency-Key; when a node is down, has no leader or times out, retries
 * the same key on the next node. Writes its tally to `fd` and exits. */
static void client_run(int id, int fd, int ms)
{
    struct client_tally t = {0, 0, 0};
    unsigned seed = 2654435761u * (unsigned)(id + 1);
    long long end = mr_it_now_ms() + ms;
    int seq = 0, node = id % 3;
    while (mr_it_now_ms() < end) {
        char body[256], hdr[96];
        int from, to, amount, done = 0;
        long long give_up = mr_it_now_ms() + 8000;
        seed = seed * 1103515245u + 12345u;
        from = (int)((seed >> 16) % ACCOUNTS);
        to = (from + 1 + (int)((seed >> 8) % (ACCOUNTS - 1))) % ACCOUNTS;
        amount = 1 + (int)((seed >> 4) % 400);
        snprintf(body, sizeof body,
                 "{\"op\":\"transfer\",\"from\":\"acct%d\",\"to\":\"acct%d\",\"amount\":%d}", from,
                 to, amount);
        snprintf(hdr, sizeof hdr, "Idempotency-Key: client%d-%d\r\n", id, seq++);
        while (!done && mr_it_now_ms() < give_up) {
            struct mr_it_resp r = mr_it_http_port(cluster.nodes[node].http_port, "POST",
                                                  "/v1/command", body, hdr, 3000);
            if (r.status == 200) {
                t.ok++;
                done = 1;
            } else if (r.status == 422) {
                t.refused++; /* overdraft: refused by the script, nothing changed */
                done = 1;
            } else {
                node = (node + 1) % 3; /* down, no leader, timeout: same key elsewhere */
                mr_it_sleep_ms(50);
            }
            mr_it_resp_free(&r);
        }
        if (!done) t.unknown++;
    }
    if (write(fd, &t, sizeof t) != (ssize_t)sizeof t) _exit(1);
    _exit(0);
}

static void expect_total(int node, const char *path)
{
    long long sum = 0;
    int i;
    post(node, path, 200, "{\"op\":\"total\"}");
    assert_int_equal(N("j.result.total"), ACCOUNTS * INITIAL);
    assert_int_equal(N("j.result.deposited") - N("j.result.withdrawn"), ACCOUNTS * INITIAL);
    EXPECT("j.result.consistent", "true");
    post(node, path, 200, "{\"op\":\"accounts\"}");
    EXPECT("#j.result.accounts", "5");
    for (i = 1; i <= ACCOUNTS; i++) {
        char expr[64];
        long long b;
        snprintf(expr, sizeof expr, "j.result.accounts[%d].balance", i);
        b = N(expr);
        assert_true(b >= 0);
        sum += b;
    }
    assert_int_equal(sum, ACCOUNTS * INITIAL);
}

static void test_bank_total_survives_leader_kill_during_transfers(void **state)
{
    int leader = start_example("bank.lua"), f1 = (leader + 1) % 3, next, i;
    int fds[CLIENTS][2];
    pid_t kids[CLIENTS];
    struct client_tally sum = {0, 0, 0};
    (void)state;

    for (i = 0; i < ACCOUNTS; i++) {
        CMD(i % 3, "{\"op\":\"open\",\"account\":\"acct%d\"}", i);
        CMD((i + 1) % 3, "{\"op\":\"deposit\",\"account\":\"acct%d\",\"amount\":%d}", i, INITIAL);
        assert_int_equal(N("j.result.balance"), INITIAL);
    }
    expect_total(f1, "/v1/query");

    /* Refused transfers change nothing. */
    REFUSED(f1, "{\"op\":\"transfer\",\"from\":\"acct0\",\"to\":\"acct1\",\"amount\":1001}");
    assert_non_null(strstr(J("j.error.message"), "insufficient funds: acct0 has 1000"));
    REFUSED(f1, "{\"op\":\"transfer\",\"from\":\"acct0\",\"to\":\"nobody\",\"amount\":1}");
    REFUSED(f1, "{\"op\":\"transfer\",\"from\":\"acct0\",\"to\":\"acct0\",\"amount\":1}");
    REFUSED(f1, "{\"op\":\"transfer\",\"from\":\"acct0\",\"to\":\"acct1\",\"amount\":0}");
    REFUSED(f1, "{\"op\":\"open\",\"account\":\"acct1\"}");
    QUERY(leader, "{\"op\":\"balance\",\"account\":\"acct0\"}");
    assert_int_equal(N("j.result.balance"), INITIAL);
    expect_total(leader, "/v1/query");

    /* Clients hammer the cluster with transfers; the leader dies mid-stream. */
    for (i = 0; i < CLIENTS; i++) {
        assert_int_equal(pipe(fds[i]), 0);
        kids[i] = fork();
        assert_true(kids[i] >= 0);
        if (kids[i] == 0) {
            close(fds[i][0]);
            client_run(i, fds[i][1], 2500);
        }
        close(fds[i][1]);
    }
    mr_it_sleep_ms(800);
    leader = mr_it_wait_leader(&cluster, 5000, 0);
    assert_true(leader >= 0);
    mr_it_kill9(&cluster, leader);
    next = mr_it_wait_leader(&cluster, 5000, 0);
    assert_true(next >= 0 && next != leader);
    for (i = 0; i < CLIENTS; i++) {
        struct client_tally t;
        int st;
        assert_int_equal(read(fds[i][0], &t, sizeof t), (ssize_t)sizeof t);
        close(fds[i][0]);
        assert_int_equal(waitpid(kids[i], &st, 0), kids[i]);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        sum.ok += t.ok;
        sum.refused += t.refused;
        sum.unknown += t.unknown;
    }
    fprintf(stderr, "transfers: %d applied, %d refused (overdraft), %d unknown\n", sum.ok,
            sum.refused, sum.unknown);
    assert_true(sum.ok > 20);
    assert_int_equal(sum.unknown, 0);

    /* The money is all there on the survivors, and the cluster still serves. */
    for (i = 0; i < 3; i++) {
        if (i != leader) expect_total(i, "/v1/query");
    }
    CMD(next, "{\"op\":\"deposit\",\"account\":\"acct0\",\"amount\":1}");
    CMD(next, "{\"op\":\"withdraw\",\"account\":\"acct0\",\"amount\":1}");
    expect_converged();

    /* The killed node comes back, catches up and agrees byte for byte. */
    mr_it_start_static(&cluster, leader, extra_args);
    assert_true(mr_it_wait_leader(&cluster, 10000, 1) >= 0);
    expect_converged();
    expect_total(leader, "/v1/query?consistency=stale");
    post(leader, "/v1/query?consistency=stale", 200, "{\"op\":\"total\"}");
    assert_int_equal(N("j.result.withdrawn"), 1);
    restart_from_snapshot(next);
    expect_total(next, "/v1/query");
}


/* ---- timers: ctx.wake_at / tick ------------------------------------------------------ */

/* lock.lua: a lease expires with no client traffic at all, and a watcher
 * blocked on the lock hears it; an idle cluster appends nothing; deadlines
 * pending in snapshots survive a restart of every node and still fire. */
static void test_lock_lease_expires_on_its_own_and_watchers_hear_it(void **state)
{
    int leader = start_example("lock.lua"), f1 = (leader + 1) % 3, f2 = (leader + 2) % 3;
    long long at, took, commit, expires, i;
    (void)state;

    CMD(f1, "{\"op\":\"acquire\",\"name\":\"db\",\"owner\":\"a\",\"ttl_ms\":700}");
    EXPECT("j.result.ok", "true");
    at = N("j.index");
    expires = N("j.result.expires");
    assert_string_equal(status_field(leader, "j.timers.pending"), "1");
    /* Nobody sends anything: the watcher on a follower is woken by the expiry. */
    took = watch_wait(f2, "lock/", at);
    EXPECT("#j.events", "1");
    EXPECT("j.events[1].event.op", "expired");
    EXPECT("j.events[1].event.owner", "a");
    assert_int_equal(N("j.events[1].event.token"), at);
    assert_true(N("j.events[1].index") > at);
    fprintf(stderr, "expiry heard after %lld ms (ttl 700)\n", took);
    assert_true(took < 3000);
    STALE(f2, "{\"op\":\"get\",\"name\":\"db\"}");
    EXPECT("j.result.owner", "null"); /* gone without anyone acquiring it */

    /* Idle, with no deadline pending: no entry is appended. */
    expect_converged();
    for (i = 0; i < 3; i++) assert_string_equal(status_field((int)i, "j.timers.pending"), "0");
    assert_string_equal(status_field(leader, "j.timers.next"), "null");
    commit = atoll(status_field(leader, "j.commit"));
    mr_it_sleep_ms(1500);
    assert_int_equal(atoll(status_field(leader, "j.commit")), commit);
    assert_true(atoll(status_field(leader, "j.timers.ticks")) >= 1);

    /* A lease pending in every node's snapshot: restart all three from their
     * snapshots; the restored deadline fires and every node agrees. */
    CMD(leader, "{\"op\":\"acquire\",\"name\":\"cache\",\"owner\":\"b\",\"ttl_ms\":6000}");
    EXPECT("j.result.ok", "true");
    at = N("j.index");
    expires = N("j.result.expires");
    CMD(f1, "{\"op\":\"acquire\",\"name\":\"queue\",\"owner\":\"c\",\"ttl_ms\":600000}");
    expect_converged();
    for (i = 0; i < 3; i++) take_snapshot((int)i);
    for (i = 0; i < 3; i++) assert_int_equal(mr_it_stop(&cluster, (int)i), 0);
    for (i = 0; i < 3; i++) mr_it_start_static(&cluster, (int)i, extra_args);
    leader = mr_it_wait_leader(&cluster, 10000, 1);
    assert_true(leader >= 0);
    expect_converged();
    for (i = 0; i < 3; i++) {
        assert_string_equal(status_field((int)i, "j.timers.pending"), "2");
        assert_int_equal(atoll(status_field((int)i, "j.timers.next")), expires);
    }
    took = watch_wait((leader + 1) % 3, "lock/cache", at);
    EXPECT("#j.events", "1");
    EXPECT("j.events[1].event.op", "expired");
    EXPECT("j.events[1].event.owner", "b");
    expect_converged();
    for (i = 0; i < 3; i++) assert_string_equal(status_field((int)i, "j.timers.pending"), "1");
    QUERY(leader, "{\"op\":\"list\"}");
    EXPECT("#j.result.locks", "1");
    EXPECT("j.result.locks[1].name", "queue");
    /* and once more after a restart of one node from a fresh snapshot */
    restart_from_snapshot(f2 == leader ? f1 : f2);
}

/* jobqueue.lua: a lease that runs out puts its job back by itself. */
static void test_jobqueue_requeues_expired_leases_without_traffic(void **state)
{
    int leader = start_example("jobqueue.lua"), f1 = (leader + 1) % 3;
    long long at, lease;
    (void)state;
    CMD(leader, "{\"op\":\"enqueue\",\"queue\":\"q\",\"payload\":\"x\"}");
    CMD(f1, "{\"op\":\"claim\",\"queue\":\"q\",\"consumer\":\"w1\",\"visibility_ms\":400}");
    lease = N("j.result.jobs[1].lease");
    at = N("j.index");
    watch_wait(f1, "job/q/", at);
    EXPECT("j.events[1].event.op", "expired");
    QUERY(leader, "{\"op\":\"get\",\"queue\":\"q\",\"id\":1}");
    EXPECT("j.result.job.state", "ready");
    QUERY(leader, "{\"op\":\"stats\",\"queue\":\"q\"}");
    assert_int_equal(N("j.result.leased"), 0);
    /* the expired lease still acks the job as long as nobody claimed it */
    CMD(f1, "{\"op\":\"ack\",\"queue\":\"q\",\"id\":1,\"lease\":%lld}", lease);
    EXPECT("j.result.ok", "true");
    expect_converged();
}

/* ratelimit.lua: a fixed window is reset by the timer, not by the next hit. */
static void test_ratelimit_windows_are_reset_by_the_timer(void **state)
{
    int leader = start_example("ratelimit.lua"), f1 = (leader + 1) % 3;
    long long at;
    (void)state;
    CMD(leader, "{\"op\":\"window\",\"name\":\"login\",\"limit\":2,\"window_ms\":500}");
    CMD(f1, "{\"op\":\"hit\",\"name\":\"login\"}");
    EXPECT("j.result.ok", "true");
    CMD(f1, "{\"op\":\"hit\",\"name\":\"login\"}");
    assert_int_equal(N("j.result.remaining"), 0);
    CMD(leader, "{\"op\":\"hit\",\"name\":\"login\"}");
    EXPECT("j.result.ok", "false");
    at = N("j.index");
    watch_wait(f1, "window/", at);
    EXPECT("j.events[1].event.op", "reset");
    assert_int_equal(N("j.events[1].event.count"), 2);
    STALE(f1, "{\"op\":\"window_get\",\"name\":\"login\"}");
    assert_int_equal(N("j.result.count"), 0);
    EXPECT("j.result.resets_at", "null");
    CMD(f1, "{\"op\":\"hit\",\"name\":\"login\"}");
    EXPECT("j.result.ok", "true");
    assert_int_equal(N("j.result.count"), 1);
    restart_from_snapshot(f1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_lock_service_hands_out_leases_with_growing_fencing_tokens, setup_none,
            teardown_cluster),
        cmocka_unit_test_setup_teardown(
            test_ratelimit_counts_and_buckets_refuse_when_empty_then_refill, setup_none,
            teardown_cluster),
        cmocka_unit_test_setup_teardown(test_jobqueue_redelivers_jobs_whose_lease_expired,
                                        setup_none, teardown_cluster),
        cmocka_unit_test_setup_teardown(test_bank_total_survives_leader_kill_during_transfers,
                                        setup_none, teardown_cluster),
        cmocka_unit_test_setup_teardown(test_lock_lease_expires_on_its_own_and_watchers_hear_it,
                                        setup_none, teardown_cluster),
        cmocka_unit_test_setup_teardown(test_jobqueue_requeues_expired_leases_without_traffic,
                                        setup_none, teardown_cluster),
        cmocka_unit_test_setup_teardown(test_ratelimit_windows_are_reset_by_the_timer,
                                        setup_none, teardown_cluster),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
