/* bench_cluster: a real 3-node moonraft cluster on loopback, measured.
 *
 *   failover   kill -9 the leader; time until a write succeeds again (median
 *              and max of MR_BENCH_FAILOVERS rounds, default 10)
 *   memory     RSS per node idle and after MR_BENCH_KEYS keys (default 1,000,000,
 *              100-byte values, loaded with kv's "mput" in batches of 1000)
 *   snapshot   the longest write latency while every node snapshots those keys
 *              (fork-based: the loop only pays for fork itself)
 *   restart    SIGTERM all, start all: time until a write succeeds
 *   disk       data directory size per node
 * Prints a table and writes JSON to bench/results/cluster-<unix time>.json.
 * Not a test: numbers depend on the machine. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static struct mr_it_cluster c;

static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    long kb = -1;
    FILE *f;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    if (f == NULL) return -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) kb = strtol(line + 6, NULL, 10);
    }
    fclose(f);
    return kb;
}

static long long dir_bytes(const char *dir)
{
    char cmd[512], out[64] = "0";
    FILE *p;
    snprintf(cmd, sizeof cmd, "du -sb %s 2>/dev/null | cut -f1", dir);
    p = popen(cmd, "r");
    if (p != NULL) {
        if (fgets(out, sizeof out, p) == NULL) out[0] = '\0';
        pclose(p);
    }
    return atoll(out);
}

static int put_ok(int node, const char *key, const char *val, int timeout_ms)
{
    char path[128];
    struct mr_it_resp r;
    int ok;
    snprintf(path, sizeof path, "/v1/kv/%s", key);
    r = mr_it_http_port(c.nodes[node].http_port, "PUT", path, val, NULL, timeout_ms);
    ok = r.status == 200;
    mr_it_resp_free(&r);
    return ok;
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

static int wait_all_agree(int timeout_ms)
{
    return mr_it_wait_leader(&c, timeout_ms, 1);
}

/* ---- the write-latency probe used during snapshots ---------------------------- */
static volatile int probe_run;
static long long probe_max_us, probe_count, probe_fail;
static int probe_node;

static void *probe_main(void *arg)
{
    long long i = 0;
    (void)arg;
    while (probe_run) {
        char key[32];
        long long t0 = mr_it_now_ms() * 1000, dt;
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        snprintf(key, sizeof key, "probe%lld", i++ % 100);
        if (!put_ok(probe_node, key, "\"x\"", 5000)) {
            if (probe_fail++ == 0) {
                char path[64];
                struct mr_it_resp r;
                snprintf(path, sizeof path, "/v1/kv/%s", key);
                r = mr_it_http_port(c.nodes[probe_node].http_port, "PUT", path, "\"x\"", NULL, 5000);
                fprintf(stderr, "probe: a write failed: node %d, status %d %s\n", probe_node,
                        r.status, r.body);
                mr_it_resp_free(&r);
            }
            mr_it_sleep_ms(10); /* do not spin on a refused connection */
        }
        clock_gettime(CLOCK_MONOTONIC, &b);
        dt = (b.tv_sec - a.tv_sec) * 1000000LL + (b.tv_nsec - a.tv_nsec) / 1000;
        (void)t0;
        if (dt > probe_max_us) probe_max_us = dt;
        probe_count++;
    }
    return NULL;
}

static void probe_start(int node)
{
    probe_node = node;
    probe_max_us = probe_count = probe_fail = 0;
    probe_run = 1;
}

int main(void)
{
    int rounds = getenv("MR_BENCH_FAILOVERS") ? atoi(getenv("MR_BENCH_FAILOVERS")) : 10;
    long keys = getenv("MR_BENCH_KEYS") ? atol(getenv("MR_BENCH_KEYS")) : 1000000;
    long long fo[64], t0, load_ms = 0, restart_ms = -1, base_max_us = 0, snap_max_us = 0;
    long rss_idle[3], rss_full[3];
    long long disk[3];
    int i, leader, r;
    pthread_t th;
    char json[4096], path[256];
    FILE *f;

    if (rounds > 64) rounds = 64;
    mr_it_cluster_init(&c, 3);
    snprintf(c.extra_args, sizeof c.extra_args, "--snapshot-entries 100000000 --log-level warn");
    for (i = 0; i < 3; i++) mr_it_start_static(&c, i, NULL);
    if (wait_all_agree(15000) < 0) {
        fprintf(stderr, "no leader\n");
        mr_it_cluster_destroy(&c);
        return 1;
    }
    mr_it_sleep_ms(1000);
    for (i = 0; i < 3; i++) rss_idle[i] = rss_kb(c.nodes[i].pid);

    /* ---- failover ---- */
    for (r = 0; r < rounds; r++) {
        int other;
        leader = wait_all_agree(15000);
        if (leader < 0) break;
        other = (leader + 1) % 3;
        put_ok(other, "fo", "1", 2000);
        t0 = mr_it_now_ms();
        mr_it_kill9(&c, leader);
        while (!put_ok(other, "fo", "2", 1000)) {
            if (mr_it_now_ms() - t0 > 20000) break;
            mr_it_sleep_ms(5);
        }
        fo[r] = mr_it_now_ms() - t0;
        fprintf(stderr, "failover %d: %lld ms\n", r + 1, fo[r]);
        mr_it_start_static(&c, leader, NULL);
    }
    qsort(fo, (size_t)r, sizeof fo[0], cmp_ll);
    rounds = r;

    /* ---- load ---- */
    leader = wait_all_agree(15000);
    t0 = mr_it_now_ms();
    {
        char *body = malloc(1000 * 160 + 64);
        long k = 0;
        while (k < keys && body != NULL) {
            size_t off = 0;
            int j;
            struct mr_it_resp resp;
            off += (size_t)sprintf(body + off, "{\"op\":\"mput\",\"items\":{");
            for (j = 0; j < 1000 && k < keys; j++, k++) {
                off += (size_t)sprintf(body + off, "%s\"key%08ld\":\"%090ld\"", j ? "," : "", k, k);
            }
            sprintf(body + off, "}}");
            resp = mr_it_http_port(c.nodes[leader].http_port, "POST", "/v1/command", body, NULL, 30000);
            if (resp.status != 200) {
                fprintf(stderr, "load failed at %ld: %d %s\n", k, resp.status, resp.body);
                mr_it_resp_free(&resp);
                leader = wait_all_agree(15000);
                continue;
            }
            mr_it_resp_free(&resp);
        }
        free(body);
    }
    load_ms = mr_it_now_ms() - t0;
    mr_it_sleep_ms(2000);
    for (i = 0; i < 3; i++) rss_full[i] = rss_kb(c.nodes[i].pid);

    /* ---- snapshot stall ---- */
    leader = wait_all_agree(15000);
    probe_start(leader);
    pthread_create(&th, NULL, probe_main, NULL);
    mr_it_sleep_ms(3000);
    base_max_us = probe_max_us;
    probe_max_us = 0;
    for (i = 0; i < 3; i++) {
        struct mr_it_resp resp = mr_it_http(&c, i, "POST", "/v1/snapshot", NULL, NULL);
        mr_it_resp_free(&resp);
    }
    /* wait for every node's snapshot to become durable */
    t0 = mr_it_now_ms();
    for (;;) {
        int done = 0;
        for (i = 0; i < 3; i++) {
            struct mr_it_resp resp = mr_it_http(&c, i, "GET", "/v1/status", NULL, NULL);
            if (resp.status == 200 && strcmp(mr_it_jq(resp.body, "j.snapshots_taken >= 1"), "true") == 0) done++;
            mr_it_resp_free(&resp);
        }
        if (done == 3 || mr_it_now_ms() - t0 > 300000) break;
        mr_it_sleep_ms(200);
    }
    fprintf(stderr, "snapshots took %lld ms\n", mr_it_now_ms() - t0);
    snap_max_us = probe_max_us;
    probe_run = 0;
    pthread_join(th, NULL);

    /* ---- restart ---- */
    for (i = 0; i < 3; i++) mr_it_stop(&c, i);
    for (i = 0; i < 3; i++) disk[i] = dir_bytes(c.nodes[i].data_dir);
    t0 = mr_it_now_ms();
    for (i = 0; i < 3; i++) mr_it_start_static(&c, i, NULL);
    for (;;) {
        if (put_ok(0, "restart", "1", 1000)) {
            restart_ms = mr_it_now_ms() - t0;
            break;
        }
        if (mr_it_now_ms() - t0 > 120000) break;
        mr_it_sleep_ms(10);
    }

    printf("\nmoonraft cluster benchmark (3 nodes on loopback, %ld keys)\n", keys);
    printf("%-44s %s\n", "measure", "value");
    printf("%-44s %lld ms (max %lld, %d rounds)\n", "failover: kill -9 leader -> write ok, median",
           rounds ? fo[rounds / 2] : -1, rounds ? fo[rounds - 1] : -1, rounds);
    printf("%-44s %ld / %ld / %ld KiB\n", "RSS idle (n1/n2/n3)", rss_idle[0], rss_idle[1], rss_idle[2]);
    printf("%-44s %ld / %ld / %ld KiB\n", "RSS with keys (n1/n2/n3)", rss_full[0], rss_full[1], rss_full[2]);
    printf("%-44s %lld ms (%.0f keys/s)\n", "load time", load_ms, load_ms ? keys * 1000.0 / load_ms : 0);
    printf("%-44s %lld ms (baseline max %lld ms, %lld writes, %lld failed)\n",
           "longest write during snapshots of all nodes", snap_max_us / 1000, base_max_us / 1000,
           probe_count, probe_fail);
    printf("%-44s %lld ms\n", "restart all -> first write", restart_ms);
    printf("%-44s %lld / %lld / %lld bytes\n", "data dir size", disk[0], disk[1], disk[2]);

    snprintf(json, sizeof json,
             "{\"keys\":%ld,\"failover_ms_median\":%lld,\"failover_ms_max\":%lld,\"failover_rounds\":%d,"
             "\"rss_idle_kib\":[%ld,%ld,%ld],\"rss_full_kib\":[%ld,%ld,%ld],\"load_ms\":%lld,"
             "\"snapshot_write_stall_ms\":%lld,\"baseline_write_max_ms\":%lld,\"restart_ms\":%lld,"
             "\"data_dir_bytes\":[%lld,%lld,%lld]}\n",
             keys, rounds ? fo[rounds / 2] : -1, rounds ? fo[rounds - 1] : -1, rounds, rss_idle[0],
             rss_idle[1], rss_idle[2], rss_full[0], rss_full[1], rss_full[2], load_ms,
             snap_max_us / 1000, base_max_us / 1000, restart_ms, disk[0], disk[1], disk[2]);
    mkdir(MR_SOURCE_DIR_BENCH "/results", 0755);
    snprintf(path, sizeof path, MR_SOURCE_DIR_BENCH "/results/cluster-%ld.json", (long)time(NULL));
    f = fopen(path, "w");
    if (f != NULL) {
        fputs(json, f);
        fclose(f);
        printf("results: %s\n", path);
    }
    return mr_it_cluster_destroy(&c) ? 1 : 0;
}
