/* bench_sm_snapshot: kv.lua with N keys (default 1,000,000).
 * Prints apply throughput, Lua heap and process RSS, the parent-side stall
 * of a fork snapshot, the worst apply while its child runs (the parent keeps
 * writing: copy-on-write faults and collector work show up there), the
 * child's time to write it, a synchronous snapshot, the state hash, a restore
 * (total, then split as mr_sm_restore does it: new vm, the script's
 * restore(), the final full collection) and RSS after it.
 * Usage: bench_sm_snapshot [N] [kv.lua] [objects|strings]
 * Values are small objects {"n":i,"name":"user number i"} by default, or
 * the string "user number i". */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "sm/sm_int.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb;
}

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "bench_sm_snapshot: %s: %s\n", what, msg);
    exit(1);
}

static void put(struct mr_sm *sm, mr_index index, long key, long i, int string_values)
{
    char cmd[256];
    struct mr_sm_ctx ctx = {.index = index, .term = 1, .time_ms = 0};
    int len = string_values
                  ? snprintf(cmd, sizeof cmd,
                             "{\"op\":\"put\",\"key\":\"user/%08ld\","
                             "\"value\":\"user number %ld\"}",
                             key, i)
                  : snprintf(cmd, sizeof cmd,
                             "{\"op\":\"put\",\"key\":\"user/%08ld\","
                             "\"value\":{\"n\":%ld,\"name\":\"user number %ld\"}}",
                             key, i, i);
    struct mr_sm_result res = {0};
    if (mr_sm_apply(sm, &ctx, cmd, (size_t)len, &res) != 0 || res.status != MR_SM_OK)
        die("apply", res.error ? res.error : "host error");
    mr_sm_result_free(&res);
}

static int restore_call(lua_State *L)
{
    struct mr_sm_vm *vm = lua_touserdata(L, 1);
    const char *data = lua_touserdata(L, 2);
    size_t len = (size_t)lua_tointeger(L, 3);
    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->ref_restore);
    lua_pushlstring(L, data, len);
    lua_call(L, 1, 0);
    return 0;
}

/* mr_sm_restore's steps, timed one by one (same calls, same order): a new
 * vm, the script's restore(), a full collection, freeing the old state. */
static void restore_split(struct mr_sm *old, const char *script, const char *data,
                          size_t len)
{
    char errmsg[MR_ERRMSG_SIZE];
    struct mr_sm *sm;
    struct mr_sm_options o = {.script_path = script};
    double t0 = now_ms();
    if (mr_sm_open(&sm, &o, errmsg) != 0) die("open", errmsg);
    double t1 = now_ms();
    struct mr_sm_vm *vm = mr_sm_vm_get(sm);
    lua_pushcfunction(vm->L, restore_call);
    lua_pushlightuserdata(vm->L, vm);
    lua_pushlightuserdata(vm->L, (void *)data);
    lua_pushinteger(vm->L, (lua_Integer)len);
    if (mr_sm_vm_pcall(vm, 3, 0, MR_SM_BULK_INSTRUCTION_BUDGET, 0) != MR_SM_OK)
        die("restore", lua_tostring(vm->L, -1));
    double t2 = now_ms();
    lua_gc(vm->L, LUA_GCCOLLECT);
    double t3 = now_ms();
    mr_sm_close(old);
    double t4 = now_ms();
    printf("restore split        new vm %.1f ms, restore() %.0f ms, full gc %.1f ms, "
           "freeing the old state %.0f ms\n",
           t1 - t0, t2 - t1, t3 - t2, t4 - t3);
    printf("rss after            %.1f MiB\n", rss_kb() / 1024.0);
    mr_sm_close(sm);
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    const char *script = argc > 2 ? argv[2] : "lua/kv.lua";
    int string_values = argc > 3 && strcmp(argv[3], "strings") == 0;
    char errmsg[MR_ERRMSG_SIZE];
    struct mr_sm *sm;
    struct mr_sm_options o = {.script_path = script};
    if (mr_sm_open(&sm, &o, errmsg) != 0) die("open", errmsg);

    long rss0 = rss_kb();
    double t0 = now_ms();
    for (long i = 0; i < n; i++)
        put(sm, (mr_index)i + 1, (i * 7919) % n, i, string_values);
    double t1 = now_ms();
    printf("keys                 %ld\n", n);
    printf("apply                %.0f ms (%.0f commands/s)\n", t1 - t0,
           n / ((t1 - t0) / 1e3));
    printf("lua heap             %.1f MiB\n", mr_sm_memory_used(sm) / 1048576.0);
    printf("rss                  %.1f MiB (%.1f MiB before filling)\n", rss_kb() / 1024.0,
           rss0 / 1024.0);

    {
        const char *q = "{\"op\":\"list\",\"prefix\":\"user/0005\",\"limit\":100}";
        double worst = 0, q0 = now_ms();
        for (int i = 0; i < 100; i++) {
            struct mr_sm_result res = {0};
            double t = now_ms();
            if (mr_sm_query(sm, q, strlen(q), &res) != 0 || res.status != MR_SM_OK)
                die("list", res.error ? res.error : "host error");
            t = now_ms() - t;
            if (t > worst) worst = t;
            mr_sm_result_free(&res);
        }
        printf("list 100 by prefix   %.3f ms average, %.2f ms worst (100 queries)\n",
               (now_ms() - q0) / 100, worst);
    }

    uint32_t precrc;
    {
        char *pre;
        size_t prelen;
        if (mr_sm_snapshot(sm, &pre, &prelen, errmsg) != 0) die("snapshot", errmsg);
        precrc = mr_crc32c(0, pre, prelen);
        mr_free(pre);
    }
    char path[] = "/tmp/bench_sm_snap_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) die("mkstemp", "failed");
    struct mr_sm_snapjob job;
    double f0 = now_ms();
    if (mr_sm_snapshot_fork(sm, fd, &job, errmsg) != 0) die("fork", errmsg);
    double f1 = now_ms();
    close(fd);
    /* The parent goes on writing (overwrites spread over the key space, as
     * the fill did; about 5,000 a second) until the child is done; the worst
     * single apply is the write stall a client would see. */
    int rv;
    long writes = 0;
    double worst = 0;
    mr_index idx = (mr_index)n + 1;
    while ((rv = mr_sm_snapshot_poll(&job, 0, errmsg)) == MR_EBUSY) {
        double t = now_ms();
        put(sm, idx++, (writes * 104729) % n, writes, string_values);
        t = now_ms() - t;
        if (t > worst) worst = t;
        writes++;
        usleep(200);
    }
    double f2 = now_ms();
    if (rv != 0) die("snapshot child", errmsg);
    unlink(path);
    printf(
        "fork snapshot        parent stall %.1f ms, child done after %.0f ms, %.1f MiB\n",
        f1 - f0, f2 - f1, job.size / 1048576.0);
    printf("writes during it     %ld, worst apply %.1f ms; child's snapshot %s\n", writes,
           worst, precrc == job.crc32c ? "is the state's at fork time" : "DIFFERS");

    char *data;
    size_t len;
    double s0 = now_ms();
    if (mr_sm_snapshot(sm, &data, &len, errmsg) != 0) die("snapshot", errmsg);
    double s1 = now_ms();
    printf("sync snapshot        %.0f ms (%.1f MiB), rss after %.1f MiB\n", s1 - s0,
           len / 1048576.0, rss_kb() / 1024.0);
    char hex[65];
    double h0 = now_ms();
    if (mr_sm_state_hash(sm, hex, errmsg) != 0) die("hash", errmsg);
    double h1 = now_ms();
    printf("state hash           %.0f ms (%s)\n", h1 - h0, hex);
    double r0 = now_ms();
    if (mr_sm_restore(sm, data, len, errmsg) != 0) die("restore", errmsg);
    double r1 = now_ms();
    printf("restore              %.0f ms, lua heap after %.1f MiB\n", r1 - r0,
           mr_sm_memory_used(sm) / 1048576.0);
    printf("rss after restore    %.1f MiB\n", rss_kb() / 1024.0);
    restore_split(sm, script, data, len);
    mr_free(data);
    return 0;
}
