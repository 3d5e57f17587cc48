/* bench_wal: append throughput with fdatasync, and recovery time.
 *
 *   build/bench/bench_wal [DIR] [SECONDS_PER_ROW]
 *
 * DIR defaults to a fresh temp dir under /tmp (removed at the end); each row
 * runs for SECONDS_PER_ROW (default 2). Rows:
 *   raw       write + fdatasync of one 4 KiB block (the same block, over and
 *             over) in a loop: the machine's limit for one sync per write
 *   single    one entry per append, waiting until it is durable before the
 *             next (one sync per entry)
 *   batched   many appends in flight (up to WINDOW entries), group commit
 * then the time to recover a log of 1,000,000 100-byte entries. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "storage/storage.h"

#define WINDOW 4096 /* entries in flight in the batched rows */
#define RECOVERY_ENTRIES 1000000

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_rf(const char *dir)
{
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- counting fs seam: how many fdatasyncs the store issued ------------------ */
static unsigned long n_syncs;
static int count_fdatasync(void *ctx, int fd)
{
    (void)ctx;
    __atomic_add_fetch(&n_syncs, 1, __ATOMIC_RELAXED);
    return mr_store_fs_default()->fdatasync(NULL, fd);
}

/* ---- notify -> condition variable ------------------------------------------------ */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static unsigned long notifications;

static void on_notify(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    notifications++;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&mu);
}

static void wait_progress(struct mr_store *st, uint64_t seq, struct mr_store_progress *p)
{
    for (;;) {
        unsigned long seen;
        pthread_mutex_lock(&mu);
        seen = notifications;
        pthread_mutex_unlock(&mu);
        if (mr_store_poll(st, p) != 0) {
            fprintf(stderr, "bench_wal: store failed: %s\n", p->errmsg);
            exit(1);
        }
        if (p->done_seq >= seq) return;
        pthread_mutex_lock(&mu);
        while (notifications == seen) pthread_cond_wait(&cond, &mu);
        pthread_mutex_unlock(&mu);
    }
}

static struct mr_store *open_store(const char *dir, const struct mr_store_fs *fs,
                                   struct mr_store_recovered *rec)
{
    struct mr_store_options o;
    struct mr_store *st;
    char errmsg[MR_ERRMSG_SIZE];
    int rv;
    memset(&o, 0, sizeof o);
    o.data_dir = dir;
    o.fs = fs;
    o.notify = on_notify;
    rv = mr_store_open(&st, &o, rec, errmsg);
    if (rv != 0) {
        fprintf(stderr, "bench_wal: open %s: %s (%s)\n", dir, errmsg, mr_strerror(rv));
        exit(1);
    }
    return st;
}

static void print_row(const char *name, size_t size, double secs, unsigned long entries,
                      unsigned long syncs)
{
    double eps = (double)entries / secs;
    printf("%-22s %6zu B %12.0f %10.2f %12.1f\n", name, size, eps,
           eps * (double)size / (1024.0 * 1024.0),
           syncs ? (double)entries / (double)syncs : 0.0);
    fflush(stdout);
}

static void bench_raw(const char *dir, double secs)
{
    char path[512];
    unsigned char block[4096];
    unsigned long n = 0;
    double t0, t;
    int fd;
    snprintf(path, sizeof path, "%s/raw.bin", dir);
    memset(block, 0xa5, sizeof block);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || posix_fallocate(fd, 0, 64 << 20) != 0) {
        perror("bench_wal: raw");
        exit(1);
    }
    fdatasync(fd);
    t0 = now_s();
    do {
        if (pwrite(fd, block, sizeof block, 0) != (ssize_t)sizeof block ||
            fdatasync(fd) != 0) {
            perror("bench_wal: raw write");
            exit(1);
        }
        n++;
        t = now_s();
    } while (t - t0 < secs);
    close(fd);
    unlink(path);
    print_row("raw write+fdatasync", sizeof block, t - t0, n, n);
}

static void bench_store(const char *base, size_t size, int batched, double secs)
{
    char dir[512];
    struct mr_store_fs fs = *mr_store_fs_default();
    struct mr_store_recovered rec;
    struct mr_store_progress p;
    struct mr_store *st;
    struct mr_rcbuf *data = mr_rcbuf_new(size);
    mr_index next = 1;
    uint64_t seq = 0;
    unsigned long syncs0;
    double t0, t;

    snprintf(dir, sizeof dir, "%s/%s-%zu", base, batched ? "batched" : "single", size);
    memset(data->data, 'x', size);
    fs.fdatasync = count_fdatasync;
    st = open_store(dir, &fs, &rec);
    mr_store_recovered_release(&rec);
    syncs0 = __atomic_load_n(&n_syncs, __ATOMIC_RELAXED);
    t0 = now_s();
    do {
        struct mr_raft_entry e = {
            .term = 1, .index = next, .type = MR_RAFT_ENTRY_NORMAL, .data = data};
        if (!batched) {
            mr_store_append(st, &e, 1, &seq);
            next++;
            wait_progress(st, seq, &p);
        } else {
            /* Proposals arrive one at a time, as from many clients; group
             * commit gathers whatever queued while the last sync ran. */
            mr_store_poll(st, &p);
            if (next - 1 - p.persisted_index < WINDOW) {
                mr_store_append(st, &e, 1, &seq);
                next++;
            } else {
                wait_progress(st, p.done_seq + 1, &p);
            }
        }
        t = now_s();
    } while (t - t0 < secs);
    wait_progress(st, seq, &p);
    t = now_s();
    print_row(batched ? "store, batched" : "store, 1 entry/sync", size, t - t0, next - 1,
              __atomic_load_n(&n_syncs, __ATOMIC_RELAXED) - syncs0);
    mr_store_close(st);
    mr_rcbuf_unref(data);
    rm_rf(dir);
}

static void bench_recovery(const char *base)
{
    char dir[512];
    struct mr_store_recovered rec;
    struct mr_store_progress p;
    struct mr_store *st;
    struct mr_raft_entry *es = calloc(1000, sizeof *es);
    struct mr_rcbuf *data = mr_rcbuf_new(100);
    mr_index i = 1;
    uint64_t seq = 0;
    double t0, t1;
    size_t k;

    snprintf(dir, sizeof dir, "%s/recovery", base);
    memset(data->data, 'r', 100);
    st = open_store(dir, NULL, &rec);
    mr_store_recovered_release(&rec);
    t0 = now_s();
    while (i <= RECOVERY_ENTRIES) {
        for (k = 0; k < 1000; k++) {
            es[k].term = 1;
            es[k].index = i + k;
            es[k].type = MR_RAFT_ENTRY_NORMAL;
            es[k].data = data;
        }
        mr_store_append(st, es, 1000, &seq);
        i += 1000;
        if (i % 100000 == 1) wait_progress(st, seq, &p); /* bound the queue */
    }
    wait_progress(st, seq, &p);
    t1 = now_s();
    mr_store_close(st);
    printf("wrote %d x 100 B entries in %.2f s (batches of 1000)\n", RECOVERY_ENTRIES,
           t1 - t0);
    t0 = now_s();
    st = open_store(dir, NULL, &rec);
    t1 = now_s();
    if (rec.n_entries != RECOVERY_ENTRIES || rec.last_index != RECOVERY_ENTRIES) {
        fprintf(stderr, "bench_wal: recovered %zu entries\n", rec.n_entries);
        exit(1);
    }
    printf("recovery of %zu entries (warm page cache): %.3f s %s\n", rec.n_entries,
           t1 - t0, t1 - t0 < 1.0 ? "(target < 1 s: met)" : "(target < 1 s: MISSED)");
    mr_store_recovered_release(&rec);
    mr_store_close(st);
    mr_rcbuf_unref(data);
    free(es);
    rm_rf(dir);
}

int main(int argc, char **argv)
{
    char tmp[] = "/tmp/mr-bench-wal-XXXXXX";
    const char *base;
    double secs = 2.0;
    int own = 0;
    if (argc > 1 && argv[1][0] != '\0') {
        base = argv[1];
        mkdir(base, 0755);
    } else {
        base = mkdtemp(tmp);
        if (base == NULL) {
            perror("bench_wal: mkdtemp");
            return 1;
        }
        own = 1;
    }
    if (argc > 2) secs = atof(argv[2]);
    if (secs <= 0) secs = 2.0;
    printf("bench_wal: dir %s, %.1f s per row\n", base, secs);
    printf("%-22s %8s %12s %10s %12s\n", "row", "entry", "entries/s", "MB/s",
           "entries/sync");
    bench_raw(base, secs);
    bench_store(base, 100, 0, secs);
    bench_store(base, 4096, 0, secs);
    bench_store(base, 100, 1, secs);
    bench_store(base, 4096, 1, secs);
    bench_raw(base, secs); /* again: the disk is shared, its speed drifts */
    bench_recovery(base);
    if (own) rm_rf(base);
    return 0;
}
