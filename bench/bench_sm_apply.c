/* bench_sm_apply: the cost of one mr_sm_apply, in ns, for
 *   kv put   lua/kv.lua, {"op":"put"} over 10,000 keys (overwrites after the
 *            first round), values small objects;
 *   kv get   lua/kv.lua, {"op":"get"} as a command;
 *   kv fail  lua/kv.lua, a put with a bad key (raises: the rollback path);
 *   counters a script that keeps its state in plain Lua tables: a map of
 *            10,000 counters, each a table {n=, last=}, plus a history array;
 *   cfail    the same script, a command that changes two counters and raises.
 * Usage: bench_sm_apply [N] [kv.lua] [case]   (N commands per case, default
 * 200,000; case: one of kvput kvget kvfail counters cfail, default all).
 * Best of 3 runs per case. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sm/sm.h"

static const char counters_lua[] =
    "local M = {}\n"
    "local counters = {}\n"
    "local history = {}\n"
    "local total = 0\n"
    "function M.apply(cmd, ctx)\n"
    "  local c = counters[cmd.k]\n"
    "  if c == nil then c = {n = 0, last = 0}; counters[cmd.k] = c end\n"
    "  c.n = c.n + 1\n"
    "  c.last = ctx.index\n"
    "  total = total + 1\n"
    "  history[#history % 64 + 1] = cmd.k\n"
    "  if cmd.fail then counters[cmd.k2].n = -1; error('boom', 0) end\n"
    "  return c.n\n"
    "end\n"
    "function M.query(q) return counters[q.k] and counters[q.k].n end\n"
    "function M.snapshot() return json.encode({counters = counters, total = total}) end\n"
    "function M.restore(s) local t = json.decode(s); counters = t.counters; total = t.total end\n"
    "return M\n";

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "bench_sm_apply: %s: %s\n", what, msg);
    exit(1);
}

enum { KV_PUT, KV_GET, KV_FAIL, CT_OK, CT_FAIL };

static double run(struct mr_sm *sm, int kind, long n, mr_index *index)
{
    char cmd[256];
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        struct mr_sm_ctx ctx = {.index = ++*index, .term = 1, .time_ms = 0};
        long k = (i * 7919) % 10000;
        int len = 0;
        switch (kind) {
        case KV_PUT:
            len = snprintf(cmd, sizeof cmd,
                           "{\"op\":\"put\",\"key\":\"user/%08ld\","
                           "\"value\":{\"n\":%ld,\"name\":\"user number %ld\"}}",
                           k, i, i);
            break;
        case KV_GET:
            len = snprintf(cmd, sizeof cmd, "{\"op\":\"get\",\"key\":\"user/%08ld\"}", k);
            break;
        case KV_FAIL:
            len = snprintf(cmd, sizeof cmd, "{\"op\":\"put\",\"key\":%ld,\"value\":1}", k);
            break;
        case CT_OK:
            len = snprintf(cmd, sizeof cmd, "{\"k\":\"c%ld\"}", k);
            break;
        case CT_FAIL:
            len = snprintf(cmd, sizeof cmd, "{\"k\":\"c%ld\",\"k2\":\"c%ld\",\"fail\":true}",
                           k, (k + 1) % 10000);
            break;
        }
        struct mr_sm_result res = {0};
        if (mr_sm_apply(sm, &ctx, cmd, (size_t)len, &res) != 0) die("apply", "host error");
        int want_ok = kind != KV_FAIL && kind != CT_FAIL;
        if ((res.status == MR_SM_OK) != want_ok)
            die("apply", res.error ? res.error : "unexpected success");
        mr_sm_result_free(&res);
    }
    return (now_ns() - t0) / (double)n;
}

static double best(struct mr_sm *sm, int kind, long n, mr_index *index)
{
    double b = 1e18;
    for (int r = 0; r < 3; r++) {
        double v = run(sm, kind, n, index);
        if (v < b) b = v;
    }
    return b;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 200000;
    const char *script = argc > 2 ? argv[2] : "lua/kv.lua";
    char errmsg[MR_ERRMSG_SIZE];
    struct mr_sm *kv, *ct;
    struct mr_sm_options o = {.script_path = script};
    if (mr_sm_open(&kv, &o, errmsg) != 0) die("open", errmsg);
    struct mr_sm_options oc = {.script_source = counters_lua, .script_name = "counters.lua"};
    if (mr_sm_open(&ct, &oc, errmsg) != 0) die("open counters", errmsg);
    const char *only = argc > 3 ? argv[3] : NULL;
    mr_index index = 0;
    run(kv, KV_PUT, 10000, &index); /* fill */
    if (only == NULL || strncmp(only, "kv", 2) != 0) run(ct, CT_OK, 10000, &index);
    printf("heap       kv %.2f MiB (10,000 keys), counters %.2f MiB (10,000 counters)\n",
           mr_sm_memory_used(kv) / 1048576.0, mr_sm_memory_used(ct) / 1048576.0);
#define CASE(name, label, sm, kind)                                                      \
    if (only == NULL || strcmp(only, name) == 0)                                         \
        printf("%-10s %7.0f ns/apply\n", label, best(sm, kind, n, &index));
    CASE("kvput", "kv put", kv, KV_PUT)
    CASE("kvget", "kv get", kv, KV_GET)
    CASE("kvfail", "kv fail", kv, KV_FAIL)
    CASE("counters", "counters", ct, CT_OK)
    CASE("cfail", "cfail", ct, CT_FAIL)
#undef CASE
    mr_sm_close(kv);
    mr_sm_close(ct);
    return 0;
}
