/* bench_sm_snapshot: kv.lua with N keys (default 1,000,000).
 * Prints apply throughput, Lua heap and process RSS, the parent-side stall
 * of a fork snapshot, the child's time to write it, a synchronous snapshot,
 * the state hash and a restore. Usage: bench_sm_snapshot [N] [kv.lua] */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sm/sm.h"

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

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    const char *script = argc > 2 ? argv[2] : "lua/kv.lua";
    char errmsg[MR_ERRMSG_SIZE];
    struct mr_sm *sm;
    struct mr_sm_options o = {.script_path = script};
    if (mr_sm_open(&sm, &o, errmsg) != 0) die("open", errmsg);

    long rss0 = rss_kb();
    double t0 = now_ms();
    char cmd[256];
    for (long i = 0; i < n; i++) {
        struct mr_sm_ctx ctx = {.index = (mr_index)i + 1, .term = 1, .time_ms = 0};
        int len = snprintf(cmd, sizeof cmd,
                           "{\"op\":\"put\",\"key\":\"user/%08ld\",\"value\":{\"n\":%ld,"
                           "\"name\":\"user number %ld\"}}",
                           (i * 7919) % n, i, i);
        struct mr_sm_result res = {0};
        if (mr_sm_apply(sm, &ctx, cmd, (size_t)len, &res) != 0 || res.status != MR_SM_OK)
            die("apply", res.error ? res.error : "host error");
        mr_sm_result_free(&res);
    }
    double t1 = now_ms();
    printf("keys                 %ld\n", n);
    printf("apply                %.0f ms (%.0f commands/s)\n", t1 - t0, n / ((t1 - t0) / 1e3));
    printf("lua heap             %.1f MiB\n", mr_sm_memory_used(sm) / 1048576.0);
    printf("rss                  %.1f MiB (%.1f MiB before filling)\n", rss_kb() / 1024.0,
           rss0 / 1024.0);

    char path[] = "/tmp/bench_sm_snap_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) die("mkstemp", "failed");
    struct mr_sm_snapjob job;
    double f0 = now_ms();
    if (mr_sm_snapshot_fork(sm, fd, &job, errmsg) != 0) die("fork", errmsg);
    double f1 = now_ms();
    close(fd);
    int rv = mr_sm_snapshot_poll(&job, 1, errmsg);
    double f2 = now_ms();
    if (rv != 0) die("snapshot child", errmsg);
    unlink(path);
    printf("fork snapshot        parent stall %.1f ms, child done after %.0f ms, %.1f MiB\n",
           f1 - f0, f2 - f1, job.size / 1048576.0);

    char *data;
    size_t len;
    double s0 = now_ms();
    if (mr_sm_snapshot(sm, &data, &len, errmsg) != 0) die("snapshot", errmsg);
    double s1 = now_ms();
    printf("sync snapshot        %.0f ms (%.1f MiB)\n", s1 - s0, len / 1048576.0);
    char hex[65];
    double h0 = now_ms();
    if (mr_sm_state_hash(sm, hex, errmsg) != 0) die("hash", errmsg);
    double h1 = now_ms();
    printf("state hash           %.0f ms (%s, fork child said %s)\n", h1 - h0, hex,
           strcmp(hex, job.hash) == 0 ? "the same" : "SOMETHING ELSE");
    double r0 = now_ms();
    if (mr_sm_restore(sm, data, len, errmsg) != 0) die("restore", errmsg);
    double r1 = now_ms();
    printf("restore              %.0f ms, lua heap after %.1f MiB\n", r1 - r0,
           mr_sm_memory_used(sm) / 1048576.0);
    mr_free(data);
    mr_sm_close(sm);
    return 0;
}
