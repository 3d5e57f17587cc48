/* Unit tests for src/storage: WAL, group commit, recovery (torn tails vs
 * corruption), truncation, compaction, metadata, snapshots, disk faults and
 * the data tool. Every test works in its own temp dir under /tmp and removes
 * it. MR_SCHEDULES scales the randomized model test (default 2000 runs);
 * MR_TEST_SEED replays one run. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "storage/storage.h"
#include "storage/storage_int.h"

/* ---- fixture ------------------------------------------------------------------ */

struct fx {
    char dir[64];
};

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    if (f == NULL) return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/mr-store-XXXXXX");
    if (mkdtemp(f->dir) == NULL) return -1;
    *state = f;
    return 0;
}

/* The seed of the randomized run in progress, printed if it fails. */
static uint64_t g_seed;
static int g_seed_active;

static int teardown(void **state)
{
    struct fx *f = *state;
    if (g_seed_active) {
        fprintf(stderr,
                "random workload failed with seed 0x%" PRIx64
                " (replay: MR_TEST_SEED=0x%" PRIx64 ")\n",
                g_seed, g_seed);
        g_seed_active = 0;
    }
    nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void wipe_dir(const char *dir)
{
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    mkdir(dir, 0755);
}

/* ---- fault-injecting file operations ---------------------------------------- */

enum {
    F_ANY,
    F_OPEN,
    F_PWRITE,
    F_FDATASYNC,
    F_FSYNC,
    F_RENAME,
    F_FTRUNCATE,
    F_FALLOCATE,
    F_UNLINK,
    F_NKINDS
};

struct faults {
    struct mr_store_fs fs;
    const struct mr_store_fs *real;
    pthread_mutex_t mu;
    unsigned long count[F_NKINDS];
    int kind;              /* which kind of call to fail */
    unsigned long fail_at; /* fail the Nth such call (1-based); 0 = never */
    int err;               /* -errno to return */
    int is_sticky;         /* keep failing after the first failure */
    int is_short;          /* a failing pwrite first writes half of its bytes */
    int is_nosync;         /* make fdatasync/fsync free (logic-only tests) */
    int failed;            /* how many calls were failed */
};

static int should_fail(struct faults *f, int kind)
{
    int rv = 0;
    pthread_mutex_lock(&f->mu);
    f->count[kind]++;
    f->count[F_ANY]++;
    if (f->fail_at != 0 && (f->kind == kind || f->kind == F_ANY)) {
        unsigned long n = f->count[f->kind];
        if (n == f->fail_at || (f->is_sticky && n > f->fail_at)) {
            rv = f->err;
            f->failed++;
        }
    }
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static int ff_open(void *ctx, const char *p, int fl, int m)
{
    struct faults *f = ctx;
    int rv = should_fail(f, F_OPEN);
    return rv ? rv : f->real->open(NULL, p, fl, m);
}
static int ff_close(void *ctx, int fd)
{
    struct faults *f = ctx;
    return f->real->close(NULL, fd);
}
static ssize_t ff_pwrite(void *ctx, int fd, const void *b, size_t n, off_t o)
{
    struct faults *f = ctx;
    int rv = should_fail(f, F_PWRITE);
    if (rv && f->is_short && n > 1) {
        f->real->pwrite(NULL, fd, b, n / 2, o);
    }
    return rv ? rv : f->real->pwrite(NULL, fd, b, n, o);
}
static int ff_fdatasync(void *ctx, int fd)
{
    struct faults *f = ctx;
    int rv = should_fail(f, F_FDATASYNC);
    if (rv) return rv;
    return f->is_nosync ? 0 : f->real->fdatasync(NULL, fd);
}
static int ff_fsync(void *ctx, int fd)
{
    struct faults *f = ctx;
    int rv = should_fail(f, F_FSYNC);
    if (rv) return rv;
    return f->is_nosync ? 0 : f->real->fsync(NULL, fd);
}
static int ff_rename(void *ctx, const char *a, const char *b)
{
    struct faults *f = ctx;
    int rv = should_fail(f, F_RENAME);
    return rv ? rv : f->real->rename(NULL, a, b);
}
static int ff_ftruncate(void *ctx, int fd, off_t l)
{
    struct faults *f = ctx;
    int rv = should_fail(f, F_FTRUNCATE);
    return rv ? rv : f->real->ftruncate(NULL, fd, l);
}
static int ff_fallocate(void *ctx, int fd, off_t o, off_t l)
{
    struct faults *f = ctx;
    int rv = should_fail(f, F_FALLOCATE);
    return rv ? rv : f->real->fallocate(NULL, fd, o, l);
}
static int ff_unlink(void *ctx, const char *p)
{
    struct faults *f = ctx;
    int rv = should_fail(f, F_UNLINK);
    return rv ? rv : f->real->unlink(NULL, p);
}

static void faults_init(struct faults *f)
{
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    f->real = mr_store_fs_default();
    f->fs.ctx = f;
    f->fs.open = ff_open;
    f->fs.close = ff_close;
    f->fs.pwrite = ff_pwrite;
    f->fs.fdatasync = ff_fdatasync;
    f->fs.fsync = ff_fsync;
    f->fs.rename = ff_rename;
    f->fs.ftruncate = ff_ftruncate;
    f->fs.fallocate = ff_fallocate;
    f->fs.unlink = ff_unlink;
}

static void faults_arm(struct faults *f, int kind, unsigned long nth_from_now, int err)
{
    pthread_mutex_lock(&f->mu);
    f->kind = kind;
    f->fail_at = f->count[kind] + nth_from_now;
    f->err = err;
    pthread_mutex_unlock(&f->mu);
}

static unsigned long faults_count(struct faults *f, int kind)
{
    unsigned long n;
    pthread_mutex_lock(&f->mu);
    n = f->count[kind];
    pthread_mutex_unlock(&f->mu);
    return n;
}

/* ---- helpers ---------------------------------------------------------------------- */

static int open_store(const char *dir, uint32_t seg_size, const struct mr_store_fs *fs,
                      struct mr_store **st, struct mr_store_recovered *rec, char *errmsg)
{
    struct mr_store_options o;
    memset(&o, 0, sizeof o);
    o.data_dir = dir;
    o.segment_size = seg_size;
    o.fs = fs;
    errmsg[0] = '\0';
    return mr_store_open(st, &o, rec, errmsg);
}

static int open_ro(const char *dir, struct mr_store **st, struct mr_store_recovered *rec,
                   char *errmsg)
{
    struct mr_store_options o;
    memset(&o, 0, sizeof o);
    o.data_dir = dir;
    o.is_read_only = 1;
    errmsg[0] = '\0';
    return mr_store_open(st, &o, rec, errmsg);
}

/* Deterministic payload for (index, term): its length depends on both. */
static size_t payload_len(mr_index i, mr_term t, size_t max)
{
    return max == 0 ? 0 : (size_t)((i * 7919u + t * 31u) % (max + 1));
}

static struct mr_rcbuf *payload(mr_index i, mr_term t, size_t max)
{
    size_t n = payload_len(i, t, max), k;
    struct mr_rcbuf *b;
    if (n == 0) return NULL;
    b = mr_rcbuf_new(n);
    assert_non_null(b);
    for (k = 0; k < n; k++) b->data[k] = (unsigned char)(i * 13 + t * 5 + k);
    return b;
}

static void check_entry(const struct mr_raft_entry *e, mr_index i, mr_term t, size_t max)
{
    size_t n = payload_len(i, t, max), k;
    assert_int_equal(e->index, i);
    assert_int_equal(e->term, t);
    if (n == 0) {
        assert_true(e->data == NULL || e->data->len == 0);
        return;
    }
    assert_non_null(e->data);
    assert_int_equal(e->data->len, n);
    for (k = 0; k < n; k++)
        assert_int_equal(e->data->data[k], (unsigned char)(i * 13 + t * 5 + k));
}

/* Appends [from, to] with `term`, `per` entries per call, then waits until
 * durable. Returns the last seq. */
static uint64_t wait_seq(struct mr_store *st, uint64_t seq)
{
    struct mr_store_progress p;
    int spins = 0;
    for (;;) {
        mr_store_poll(st, &p);
        if (p.done_seq >= seq || p.error != 0) return p.done_seq;
        assert_true(++spins < 200000); /* 20 s */
        usleep(100);
    }
}

static uint64_t append_range(struct mr_store *st, mr_index from, mr_index to,
                             mr_term term, size_t max, size_t per, int wait_each)
{
    uint64_t seq = 0;
    mr_index i = from;
    while (i <= to) {
        struct mr_raft_entry e[64];
        size_t n = 0, k;
        while (n < per && n < 64 && i <= to) {
            e[n].index = i;
            e[n].term = term;
            e[n].type = MR_RAFT_ENTRY_NORMAL;
            e[n].data = payload(i, term, max);
            n++;
            i++;
        }
        assert_int_equal(mr_store_append(st, e, n, &seq), 0);
        for (k = 0; k < n; k++) mr_rcbuf_unref(e[k].data);
        if (wait_each) assert_true(wait_seq(st, seq) >= seq);
    }
    return seq;
}

static void seg_rel(char *buf, size_t n, mr_index first)
{
    char name[SEG_NAME_LEN + 1];
    mr_store__seg_name(name, first);
    snprintf(buf, n, "wal/%s", name);
}

static void seg_abs(char *buf, size_t n, const char *dir, mr_index first)
{
    char name[SEG_NAME_LEN + 1];
    mr_store__seg_name(name, first);
    snprintf(buf, n, "%s/wal/%s", dir, name);
}

static unsigned char *slurp(const char *path, uint64_t *size)
{
    unsigned char *b;
    assert_int_equal(mr_store__read_file(path, &b, size), 0);
    return b;
}

static void spit(const char *path, const unsigned char *b, uint64_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, b, size, 0), (ssize_t)size);
    close(fd);
}

struct recs {
    uint64_t off[4096];
    uint32_t len[4096];
    size_t n;
};

static int recs_cb(void *arg, const struct mr_store_rec *r)
{
    struct recs *rs = arg;
    if (rs->n < 4096) {
        rs->off[rs->n] = r->off;
        rs->len[rs->n] = r->len;
        rs->n++;
    }
    return 0;
}

/* Record offsets of one segment file. */
static void scan_file(const char *dir, mr_index first, struct recs *rs)
{
    char path[256], rel[64];
    struct mr_store_seg_scan sc;
    uint64_t size;
    unsigned char *b;
    char errmsg[MR_ERRMSG_SIZE];
    seg_abs(path, sizeof path, dir, first);
    seg_rel(rel, sizeof rel, first);
    b = slurp(path, &size);
    rs->n = 0;
    assert_int_equal(mr_store__seg_scan(b, size, rel, first, 1, recs_cb, rs, &sc, errmsg),
                     0);
    mr_free(b);
}

/* ---- basics --------------------------------------------------------------------- */

static void test_store_fresh_dir_is_initialised_and_reopens_empty(void **state)
{
    struct fx *f = *state;
    struct mr_store *st;
    struct mr_store_recovered rec;
    struct mr_store_options o;
    char errmsg[MR_ERRMSG_SIZE], path[256];
    struct stat sb;

    memset(&o, 0, sizeof o);
    o.data_dir = f->dir;
    o.node_id = 7;
    o.cluster_id = 99;
    assert_int_equal(mr_store_open(&st, &o, &rec, errmsg), 0);
    assert_true(rec.is_fresh);
    assert_int_equal(rec.node_id, 7);
    assert_int_equal(rec.n_entries, 0);
    assert_int_equal(rec.last_index, 0);
    assert_int_equal(rec.first_index, 1);
    mr_store_recovered_release(&rec);
    mr_store_close(st);
    snprintf(path, sizeof path, "%s/meta", f->dir);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_size, META_SIZE);

    assert_int_equal(mr_store_open(&st, &o, &rec, errmsg), 0);
    assert_false(rec.is_fresh);
    assert_int_equal(rec.node_id, 7);
    assert_int_equal(rec.cluster_id, 99);
    mr_store_recovered_release(&rec);
    mr_store_close(st);

    /* another node's directory is refused */
    o.node_id = 8;
    assert_int_equal(mr_store_open(&st, &o, &rec, errmsg), MR_ECONFIG);
    assert_null(st);
    assert_non_null(strstr(errmsg, "node id"));

    /* missing parents are created (mkdir -p) */
    char nested[300];
    snprintf(nested, sizeof nested, "%s/x/y//z", f->dir);
    o.data_dir = nested;
    o.node_id = 9;
    assert_int_equal(mr_store_open(&st, &o, &rec, errmsg), 0);
    assert_true(rec.is_fresh);
    mr_store_recovered_release(&rec);
    mr_store_close(st);
    snprintf(path, sizeof path, "%s/x/y/z/meta", f->dir);
    assert_int_equal(stat(path, &sb), 0);
}

static void test_store_a_directory_in_use_is_refused_to_a_second_writer(void **state)
{
    struct fx *f = *state;
    struct mr_store *st, *st2;
    struct mr_store_recovered rec, rec2;
    char errmsg[MR_ERRMSG_SIZE];
    int fd;
    assert_int_equal(open_store(f->dir, 0, NULL, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    assert_int_equal(open_store(f->dir, 0, NULL, &st2, &rec2, errmsg), MR_EBUSY);
    assert_null(st2);
    assert_non_null(strstr(errmsg, "in use"));
    assert_int_equal(mr_store_lock(f->dir, &fd, errmsg), MR_EBUSY);
    assert_int_equal(fd, -1);
    /* read-only opens (moonraft data verify) still work */
    assert_int_equal(open_ro(f->dir, &st2, &rec2, errmsg), 0);
    mr_store_recovered_release(&rec2);
    mr_store_close(st2);
    mr_store_close(st);
    /* closed: free again, and the lock excludes a writer while held */
    assert_int_equal(mr_store_lock(f->dir, &fd, errmsg), 0);
    assert_int_equal(open_store(f->dir, 0, NULL, &st2, &rec2, errmsg), MR_EBUSY);
    mr_store_unlock(fd);
    assert_int_equal(open_store(f->dir, 0, NULL, &st2, &rec2, errmsg), 0);
    mr_store_recovered_release(&rec2);
    mr_store_close(st2);
}

static void test_store_appends_survive_reopen_across_segments(void **state)
{
    struct fx *f = *state;
    struct mr_store *st;
    struct mr_store_recovered rec;
    char errmsg[MR_ERRMSG_SIZE];
    struct mr_store_progress p;
    struct mr_raft_entry big;
    uint64_t seq;
    size_t i;

    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    append_range(st, 1, 300, 1, 200, 7, 0);
    seq = append_range(st, 301, 400, 2, 200, 1, 0);
    /* one entry bigger than a whole segment */
    big.index = 401;
    big.term = 2;
    big.type = MR_RAFT_ENTRY_CONFIG;
    big.data = mr_rcbuf_new(10000);
    memset(big.data->data, 'x', 10000);
    assert_int_equal(mr_store_append(st, &big, 1, &seq), 0);
    mr_rcbuf_unref(big.data);
    wait_seq(st, seq);
    assert_int_equal(mr_store_poll(st, &p), 0);
    assert_int_equal(p.done_seq, seq);
    assert_int_equal(p.persisted_index, 401);
    assert_int_equal(p.persisted_term, 2);
    /* a gap or a non-consecutive batch is refused */
    big.index = 403;
    big.data = NULL;
    assert_int_equal(mr_store_append(st, &big, 1, NULL), MR_EINVAL);
    mr_store_close(st);

    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), 0);
    assert_string_equal(rec.note, "");
    assert_int_equal(rec.n_entries, 401);
    assert_int_equal(rec.last_index, 401);
    assert_int_equal(rec.last_term, 2);
    for (i = 0; i < 300; i++) check_entry(&rec.entries[i], i + 1, 1, 200);
    for (i = 300; i < 400; i++) check_entry(&rec.entries[i], i + 1, 2, 200);
    assert_int_equal(rec.entries[400].type, MR_RAFT_ENTRY_CONFIG);
    assert_int_equal(rec.entries[400].data->len, 10000);
    mr_store_recovered_release(&rec);
    /* and appending continues where it stopped */
    seq = append_range(st, 402, 410, 3, 50, 3, 0);
    wait_seq(st, seq);
    mr_store_close(st);
    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), 0);
    assert_int_equal(rec.n_entries, 410);
    check_entry(&rec.entries[409], 410, 3, 50);
    mr_store_recovered_release(&rec);
    mr_store_close(st);
}

static int slow_fdatasync(void *ctx, int fd)
{
    struct faults *f = ctx;
    should_fail(f, F_FDATASYNC);
    usleep(2000);
    return f->real->fdatasync(NULL, fd);
}

struct notify_count {
    pthread_mutex_t mu;
    int n;
};

static void count_notify(void *arg)
{
    struct notify_count *c = arg;
    pthread_mutex_lock(&c->mu);
    c->n++;
    pthread_mutex_unlock(&c->mu);
}

static void test_store_group_commit_syncs_once_per_batch(void **state)
{
    struct fx *f = *state;
    struct mr_store *st;
    struct mr_store_recovered rec;
    struct mr_store_options o;
    struct notify_count nc;
    struct faults fl;
    char errmsg[MR_ERRMSG_SIZE];
    uint64_t seq = 0;
    unsigned long syncs;
    mr_index i;

    faults_init(&fl);
    fl.fs.fdatasync = slow_fdatasync; /* 2 ms: entries pile up meanwhile */
    pthread_mutex_init(&nc.mu, NULL);
    nc.n = 0;
    memset(&o, 0, sizeof o);
    o.data_dir = f->dir;
    o.fs = &fl.fs;
    o.notify = count_notify;
    o.notify_arg = &nc;
    assert_int_equal(mr_store_open(&st, &o, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    for (i = 1; i <= 2000; i++) {
        struct mr_raft_entry e = {.term = 1,
                                  .index = i,
                                  .type = MR_RAFT_ENTRY_NORMAL,
                                  .data = payload(i, 1, 100)};
        assert_int_equal(mr_store_append(st, &e, 1, &seq), 0);
        mr_rcbuf_unref(e.data);
        if (i % 100 == 0) usleep(500);
    }
    wait_seq(st, seq);
    syncs = faults_count(&fl, F_FDATASYNC);
    /* 2000 appends, but one fdatasync per batch */
    assert_true(syncs >= 1);
    assert_true(syncs < 200);
    pthread_mutex_lock(&nc.mu);
    assert_true(nc.n >= 1);
    pthread_mutex_unlock(&nc.mu);
    mr_store_close(st);
    assert_int_equal(open_store(f->dir, 0, NULL, &st, &rec, errmsg), 0);
    assert_int_equal(rec.n_entries, 2000);
    check_entry(&rec.entries[1999], 2000, 1, 100);
    mr_store_recovered_release(&rec);
    mr_store_close(st);
    pthread_mutex_destroy(&nc.mu);
    pthread_mutex_destroy(&fl.mu);
}

/* ---- torn tails and corruption --------------------------------------------------- */

/* Layout used by the crash tests: records 1..5 one per batch, then 6..8 as
 * one batch (a multi-record write group). */
static void build_crash_log(const char *dir)
{
    struct mr_store *st;
    struct mr_store_recovered rec;
    char errmsg[MR_ERRMSG_SIZE];
    uint64_t seq;
    assert_int_equal(open_store(dir, 8192, NULL, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    append_range(st, 1, 5, 1, 40, 1, 1);
    seq = append_range(st, 6, 8, 2, 40, 3, 0);
    wait_seq(st, seq);
    mr_store_close(st);
}

static void
test_store_crash_at_every_byte_of_the_tail_keeps_complete_records(void **state)
{
    struct fx *f = *state;
    struct recs rs;
    char path[256];
    unsigned char *orig, *b;
    uint64_t size, cut, tail_start, end;
    int mode;

    build_crash_log(f->dir);
    scan_file(f->dir, 1, &rs);
    assert_int_equal(rs.n, 8);
    seg_abs(path, sizeof path, f->dir, 1);
    orig = slurp(path, &size);
    tail_start = rs.off[4]; /* record 5 (its own batch) and batch 6..8 */
    end = rs.off[7] + 32 + pad8(rs.len[7]);
    b = mr_malloc(size);
    for (mode = 0; mode < 2; mode++) {
        for (cut = tail_start; cut <= end; cut++) {
            struct mr_store *st;
            struct mr_store_recovered rec;
            char errmsg[MR_ERRMSG_SIZE];
            size_t complete = 0, k;
            int rw = (cut % 5 == 0) || cut == end;
            memcpy(b, orig, size);
            if (mode == 0) {
                spit(path, b, cut); /* the file ends mid-record */
            } else {
                memset(b + cut, 0, size - cut); /* preallocated zeros after */
                spit(path, b, size);
            }
            for (k = 0; k < rs.n; k++) {
                uint64_t rend = rs.off[k] + 32 + pad8(rs.len[k]), z;
                int intact = rend <= cut;
                if (!intact && mode == 1 && cut >= rs.off[k]) {
                    /* zeroing bytes that were zero (padding) leaves it intact */
                    intact = 1;
                    for (z = cut; z < rend; z++)
                        if (orig[z] != 0) intact = 0;
                }
                if (intact) complete = k + 1;
            }
            {
                int rv = rw ? open_store(f->dir, 8192, NULL, &st, &rec, errmsg)
                            : open_ro(f->dir, &st, &rec, errmsg);
                if (rv != 0) fail_msg("mode %d cut %" PRIu64 ": %s", mode, cut, errmsg);
            }
            assert_int_equal(rec.n_entries, complete);
            for (k = 0; k < complete; k++)
                check_entry(&rec.entries[k], k + 1, k < 5 ? 1 : 2, 40);
            {
                int at_boundary = cut == tail_start;
                for (k = 0; k < rs.n; k++)
                    if (rs.off[k] + 32 + pad8(rs.len[k]) == cut) at_boundary = 1;
                if (!at_boundary && mode == 0) assert_non_null(strstr(rec.note, "torn"));
                if (at_boundary) assert_string_equal(rec.note, "");
            }
            mr_store_recovered_release(&rec);
            if (rw) {
                /* later appends work and survive */
                uint64_t seq = append_range(st, complete + 1, complete + 2, 3, 40, 2, 0);
                wait_seq(st, seq);
                mr_store_close(st);
                assert_int_equal(open_ro(f->dir, &st, &rec, errmsg), 0);
                assert_string_equal(rec.note, "");
                assert_int_equal(rec.n_entries, complete + 2);
                check_entry(&rec.entries[complete + 1], complete + 2, 3, 40);
                mr_store_recovered_release(&rec);
            }
            mr_store_close(st);
            for (k = 2; k <= 12; k++) { /* appends may have rolled into a new file */
                char other[256];
                seg_abs(other, sizeof other, f->dir, k);
                unlink(other);
            }
        }
    }
    spit(path, orig, size);
    mr_free(b);
    mr_free(orig);
}

static void test_store_bit_flip_in_any_record_names_file_and_offset(void **state)
{
    struct fx *f = *state;
    struct mr_store *st;
    struct mr_store_recovered rec;
    char errmsg[MR_ERRMSG_SIZE], path[256], want[128], rel[64];
    mr_index firsts[64];
    size_t n_segs = 0, s, k;
    uint64_t seq;

    /* Small segments: 60 records, one per batch, over several files. */
    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    seq = append_range(st, 1, 100, 1, 100, 1, 1);
    wait_seq(st, seq);
    mr_store_close(st);
    {
        struct mr_store_recovery r;
        assert_int_equal(mr_store__recover(f->dir, mr_store_fs_default(), 4096, 1, NULL,
                                           0, NULL, NULL, &r, &rec, errmsg),
                         0);
        assert_true(r.n_segs >= 2);
        for (s = 0; s < r.n_segs; s++) firsts[n_segs++] = r.segs[s].first;
        mr_store__recovery_free(&r);
        mr_store_recovered_release(&rec);
    }
    for (s = 0; s < n_segs; s++) {
        struct recs rs;
        uint64_t size;
        unsigned char *orig;
        int is_last_seg = s + 1 == n_segs;
        scan_file(f->dir, firsts[s], &rs);
        seg_abs(path, sizeof path, f->dir, firsts[s]);
        seg_rel(rel, sizeof rel, firsts[s]);
        orig = slurp(path, &size);
        for (k = 0; k < rs.n; k++) {
            uint64_t rlen = 32 + pad8(rs.len[k]), byte;
            int is_tail = is_last_seg && k + 1 == rs.n;
            for (byte = 0; byte < rlen; byte++) {
                uint64_t at = rs.off[k] + byte;
                orig[at] ^= (unsigned char)(1u << (at % 8));
                spit(path, orig, size);
                orig[at] ^= (unsigned char)(1u << (at % 8));
                if (is_tail) {
                    assert_int_equal(open_ro(f->dir, &st, &rec, errmsg), 0);
                    assert_int_equal(rec.last_index, 99);
                    assert_non_null(strstr(rec.note, "torn"));
                    mr_store_recovered_release(&rec);
                    mr_store_close(st);
                } else {
                    assert_int_equal(open_ro(f->dir, &st, &rec, errmsg), MR_ECORRUPT);
                    assert_null(st);
                    snprintf(want, sizeof want, "%s offset %" PRIu64 ": ", rel,
                             rs.off[k]);
                    if (strncmp(errmsg, want, strlen(want)) != 0)
                        fail_msg("byte %" PRIu64 ": got \"%s\", want \"%s...\"", at,
                                 errmsg, want);
                }
            }
        }
        /* a damaged segment header */
        orig[3] ^= 1;
        spit(path, orig, size);
        orig[3] ^= 1;
        if (!is_last_seg) {
            assert_int_equal(open_ro(f->dir, &st, &rec, errmsg), MR_ECORRUPT);
            snprintf(want, sizeof want, "%s offset 0: bad segment header", rel);
            assert_string_equal(errmsg, want);
        } else {
            /* records written after the header: not a torn creation */
            assert_int_equal(open_ro(f->dir, &st, &rec, errmsg), MR_ECORRUPT);
        }
        spit(path, orig, size);
        mr_free(orig);
    }
    assert_int_equal(open_ro(f->dir, &st, &rec, errmsg), 0);
    assert_int_equal(rec.n_entries, 100);
    mr_store_recovered_release(&rec);
    mr_store_close(st);
}

static void test_store_corruption_in_a_synced_group_before_the_tail_is_fatal(void **state)
{
    struct fx *f = *state;
    struct mr_store *st;
    struct mr_store_recovered rec;
    struct recs rs;
    char errmsg[MR_ERRMSG_SIZE], path[256];
    unsigned char *b;
    uint64_t size;

    build_crash_log(f->dir);
    scan_file(f->dir, 1, &rs);
    seg_abs(path, sizeof path, f->dir, 1);
    b = slurp(path, &size);
    /* zeroing record 4 (a whole synced group) with record 5 after it is
     * corruption, not a torn tail */
    memset(b + rs.off[3], 0, 32 + pad8(rs.len[3]));
    spit(path, b, size);
    assert_int_equal(open_store(f->dir, 8192, NULL, &st, &rec, errmsg), MR_ECORRUPT);
    snprintf((char *)b, 128,
             "wal/0000000000000001.seg offset %" PRIu64 ": checksum mismatch", rs.off[3]);
    assert_string_equal(errmsg, (char *)b);
    mr_free(b);
}

static void test_store_bit_flip_in_the_last_write_group_is_a_torn_tail(void **state)
{
    struct fx *f = *state;
    struct mr_store *st;
    struct mr_store_recovered rec;
    struct recs rs;
    char errmsg[MR_ERRMSG_SIZE], path[256], want[96];
    unsigned char *b;
    uint64_t size;
    size_t k;

    build_crash_log(f->dir); /* 1..5 one per group, then 6..8 as one group */
    scan_file(f->dir, 1, &rs);
    seg_abs(path, sizeof path, f->dir, 1);
    b = slurp(path, &size);
    for (k = 4; k < 8; k++) {
        uint64_t at = rs.off[k] + 20 + k; /* inside the header's index field */
        b[at] ^= 0x04;
        spit(path, b, size);
        b[at] ^= 0x04;
        if (k == 4) {
            assert_int_equal(open_ro(f->dir, &st, &rec, errmsg), MR_ECORRUPT);
            snprintf(want, sizeof want,
                     "wal/0000000000000001.seg offset %" PRIu64 ": checksum mismatch",
                     rs.off[4]);
            assert_string_equal(errmsg, want);
        } else {
            /* 6..8 were never acknowledged as a group: cut from the damage */
            assert_int_equal(open_ro(f->dir, &st, &rec, errmsg), 0);
            assert_int_equal(rec.n_entries, k);
            assert_non_null(strstr(rec.note, "torn"));
            mr_store_recovered_release(&rec);
            /* read-only: refuses writes and leaves the file alone */
            assert_int_equal(mr_store_truncate(st, 2, NULL), MR_EINVAL);
            mr_store_close(st);
        }
    }
    spit(path, b, size);
    mr_free(b);
}

static void test_store_gap_between_segments_and_missing_meta_are_fatal(void **state)
{
    struct fx *f = *state;
    struct mr_store *st;
    struct mr_store_recovered rec;
    struct mr_store_recovery r;
    char errmsg[MR_ERRMSG_SIZE], path[256], want[128];
    unsigned char *b;
    uint64_t size;
    mr_index second;

    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    wait_seq(st, append_range(st, 1, 100, 1, 150, 4, 0));
    mr_store_close(st);
    assert_int_equal(mr_store__recover(f->dir, mr_store_fs_default(), 4096, 1, NULL, 0,
                                       NULL, NULL, &r, &rec, errmsg),
                     0);
    assert_true(r.n_segs >= 3);
    second = r.segs[1].first;
    seg_abs(path, sizeof path, f->dir, second);
    b = slurp(path, &size);
    unlink(path);
    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), MR_ECORRUPT);
    seg_rel(want, sizeof want, r.segs[2].first);
    strcat(want, " offset 0: first index");
    assert_memory_equal(errmsg, want, strlen(want));
    assert_non_null(strstr(errmsg, "gap"));
    spit(path, b, size);
    mr_free(b);
    mr_store__recovery_free(&r);
    mr_store_recovered_release(&rec);

    /* meta missing while the log has data */
    snprintf(path, sizeof path, "%s/meta", f->dir);
    b = slurp(path, &size);
    unlink(path);
    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), MR_ECORRUPT);
    assert_non_null(strstr(errmsg, "meta"));
    /* meta damaged */
    b[9] ^= 0x40;
    spit(path, b, size);
    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), MR_ECORRUPT);
    assert_string_equal(errmsg, "meta offset 60: checksum mismatch");
    b[9] ^= 0x40;
    spit(path, b, size);
    mr_free(b);
    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), 0);
    assert_int_equal(rec.n_entries, 100);
    mr_store_recovered_release(&rec);
    mr_store_close(st);
}

static void test_store_torn_header_of_a_new_last_segment_is_removed(void **state)
{
    struct fx *f = *state;
    struct mr_store *st;
    struct mr_store_recovered rec;
    char errmsg[MR_ERRMSG_SIZE], path[256];
    unsigned char junk[4096];

    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    wait_seq(st, append_range(st, 1, 10, 1, 20, 10, 0));
    mr_store_close(st);
    /* a crash while creating segment 11: half a header, zeros after */
    memset(junk, 0, sizeof junk);
    memcpy(junk, "MRWAL", 5);
    seg_abs(path, sizeof path, f->dir, 11);
    spit(path, junk, sizeof junk);
    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), 0);
    assert_non_null(strstr(rec.note, "torn segment header"));
    assert_int_equal(rec.n_entries, 10);
    mr_store_recovered_release(&rec);
    wait_seq(st, append_range(st, 11, 12, 1, 20, 2, 0));
    mr_store_close(st);
    assert_int_equal(open_ro(f->dir, &st, &rec, errmsg), 0);
    assert_int_equal(rec.n_entries, 12);
    assert_string_equal(rec.note, "");
    mr_store_recovered_release(&rec);
    mr_store_close(st);
}

static void test_store_open_survives_allocation_failure_at_every_step(void **state)
{
    struct fx *f = *state;
    struct mr_store *st;
    struct mr_store_recovered rec;
    char errmsg[MR_ERRMSG_SIZE];
    unsigned long n;
    long live;
    int is_rw;

    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    wait_seq(st, append_range(st, 1, 120, 1, 100, 10, 0));
    assert_int_equal(mr_store_snapshot_write(st, 50, 1, "conf", 4, "payload", 7, errmsg),
                     0);
    mr_store_close(st);
    for (is_rw = 0; is_rw < 2; is_rw++) {
        int failures = 0, successes = 0;
        for (n = 1; n <= 300; n++) {
            int rv;
            live = mr_alloc_live();
            mr_alloc_fail_at(n, 0);
            rv = is_rw ? open_store(f->dir, 4096, NULL, &st, &rec, errmsg)
                       : open_ro(f->dir, &st, &rec, errmsg);
            mr_alloc_fail_at(0, 0);
            if (rv == 0) {
                assert_int_equal(rec.n_entries, 70);
                check_entry(&rec.entries[69], 120, 1, 100);
                mr_store_recovered_release(&rec);
                mr_store_close(st);
                successes++;
            } else {
                assert_int_equal(rv, MR_ENOMEM);
                assert_null(st);
                failures++;
            }
            assert_int_equal(mr_alloc_live(), live); /* nothing leaked */
        }
        /* ~90 allocations in an open: the first ones all fail it */
        assert_true(failures >= 70);
        assert_true(successes >= 100);
    }
}

/* ---- truncation, compaction, reset ----------------------------------------------- */

static void test_store_truncate_replaces_a_conflicting_suffix(void **state)
{
    struct fx *f = *state;
    struct mr_store *st;
    struct mr_store_recovered rec;
    struct mr_store_progress p;
    char errmsg[MR_ERRMSG_SIZE];
    uint64_t seq;
    size_t i;

    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    append_range(st, 1, 100, 1, 120, 5, 0);
    /* a new leader overwrites from 40 on, in the same batch stream */
    assert_int_equal(mr_store_truncate(st, 40, NULL), 0);
    seq = append_range(st, 40, 60, 2, 120, 5, 0);
    wait_seq(st, seq);
    mr_store_poll(st, &p);
    assert_int_equal(p.persisted_index, 60);
    assert_int_equal(p.persisted_term, 2);
    /* truncation at a segment boundary and to an empty log */
    assert_int_equal(mr_store_truncate(st, 55, &seq), 0);
    wait_seq(st, seq);
    mr_store_poll(st, &p);
    assert_int_equal(p.persisted_index, 54);
    assert_int_equal(p.persisted_term, 2);
    mr_store_close(st);

    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), 0);
    assert_int_equal(rec.n_entries, 54);
    for (i = 0; i < 39; i++) check_entry(&rec.entries[i], i + 1, 1, 120);
    for (i = 39; i < 54; i++) check_entry(&rec.entries[i], i + 1, 2, 120);
    mr_store_recovered_release(&rec);
    assert_int_equal(mr_store_truncate(st, 1, NULL), 0);
    seq = append_range(st, 1, 3, 5, 120, 3, 0);
    wait_seq(st, seq);
    mr_store_close(st);
    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), 0);
    assert_int_equal(rec.n_entries, 3);
    check_entry(&rec.entries[2], 3, 5, 120);
    mr_store_recovered_release(&rec);
    mr_store_close(st);
}

static size_t count_files(const char *dir, const char *suffix)
{
    char cmd[512];
    FILE *p;
    size_t n = 0;
    int c;
    snprintf(cmd, sizeof cmd, "ls %s | grep -c '%s$'", dir, suffix);
    p = popen(cmd, "r");
    assert_non_null(p);
    while ((c = fgetc(p)) != EOF)
        if (c >= '0' && c <= '9') n = n * 10 + (size_t)(c - '0');
    pclose(p);
    return n;
}

static void
test_store_compaction_deletes_whole_segments_and_records_boundary(void **state)
{
    struct fx *f = *state;
    struct mr_store *st;
    struct mr_store_recovered rec;
    char errmsg[MR_ERRMSG_SIZE], wal[256];
    uint64_t seq;
    size_t before, after;

    snprintf(wal, sizeof wal, "%s/wal", f->dir);
    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    wait_seq(st, append_range(st, 1, 200, 1, 100, 10, 0));
    before = count_files(wal, ".seg");
    assert_true(before >= 4);
    /* compaction needs a snapshot covering it */
    assert_int_equal(mr_store_compact(st, 150, NULL), MR_EINVAL);
    assert_int_equal(mr_store_snapshot_write(st, 150, 1, "conf", 4, "state", 5, errmsg),
                     0);
    assert_int_equal(mr_store_compact(st, 150, &seq), 0);
    wait_seq(st, seq);
    after = count_files(wal, ".seg");
    assert_true(after < before);
    assert_true(after >= 1);
    mr_store_close(st);

    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), 0);
    assert_int_equal(rec.log_start, 151);
    assert_true(rec.has_snapshot);
    assert_int_equal(rec.snap_index, 150);
    assert_int_equal(rec.n_entries, 50);
    assert_int_equal(rec.first_index, 151);
    check_entry(&rec.entries[0], 151, 1, 100);
    assert_int_equal(rec.snap_conf->len, 4);
    assert_memory_equal(rec.snap_conf->data, "conf", 4);
    mr_store_recovered_release(&rec);
    mr_store_close(st);

    /* the snapshot that covered the compacted prefix disappears: fatal */
    {
        char name[SNAP_NAME_LEN + 1], path[256];
        mr_store__snap_name(name, 150, 1);
        snprintf(path, sizeof path, "%s/snap/%s", f->dir, name);
        assert_int_equal(unlink(path), 0);
    }
    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), MR_ECORRUPT);
    assert_non_null(strstr(errmsg, "meta offset 40"));
}

static void test_store_reset_after_installing_a_snapshot_starts_a_new_log(void **state)
{
    struct fx *f = *state;
    struct mr_store *st;
    struct mr_store_recovered rec;
    char errmsg[MR_ERRMSG_SIZE];
    uint64_t seq;

    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    wait_seq(st, append_range(st, 1, 30, 1, 100, 10, 0));
    assert_int_equal(mr_store_reset(st, 501, NULL), MR_EINVAL); /* no snapshot yet */
    assert_int_equal(mr_store_snapshot_write(st, 500, 4, "m", 1, "p", 1, errmsg), 0);
    assert_int_equal(mr_store_reset(st, 501, NULL), 0);
    seq = append_range(st, 501, 510, 4, 100, 5, 0);
    wait_seq(st, seq);
    mr_store_close(st);
    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), 0);
    assert_int_equal(rec.snap_index, 500);
    assert_int_equal(rec.n_entries, 10);
    assert_int_equal(rec.first_index, 501);
    assert_int_equal(rec.last_index, 510);
    assert_int_equal(rec.log_start, 501);
    mr_store_recovered_release(&rec);
    mr_store_close(st);

    /* a snapshot installed beyond the log, crash before the reset: the stale
     * log is dropped at the next start and the log continues after it */
    wipe_dir(f->dir);
    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    wait_seq(st, append_range(st, 1, 30, 1, 100, 10, 0));
    assert_int_equal(mr_store_snapshot_write(st, 80, 3, "m", 1, "p", 1, errmsg), 0);
    mr_store_close(st);
    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), 0);
    assert_int_equal(rec.n_entries, 0);
    assert_int_equal(rec.last_index, 80);
    assert_int_equal(rec.last_term, 3);
    mr_store_recovered_release(&rec);
    wait_seq(st, append_range(st, 81, 85, 3, 100, 5, 0));
    mr_store_close(st);
    assert_int_equal(open_ro(f->dir, &st, &rec, errmsg), 0);
    assert_int_equal(rec.n_entries, 5);
    assert_int_equal(rec.first_index, 81);
    mr_store_recovered_release(&rec);
    mr_store_close(st);
}

/* ---- randomized model check ---------------------------------------------------------
 */

struct model {
    mr_term term[2048]; /* term of index i (1-based), 0 = absent */
    mr_index last;
    mr_index snap;
    mr_term snap_term;
    mr_term hs_term;
    mr_node_id hs_vote;
};

static unsigned long env_ul(const char *name, unsigned long def)
{
    const char *v = getenv(name);
    return v != NULL && *v != '\0' ? strtoul(v, NULL, 0) : def;
}

static void check_model(const struct model *m, const struct mr_store_recovered *rec)
{
    size_t k;
    assert_int_equal(rec->snap_index, m->snap);
    assert_int_equal(rec->term, m->hs_term);
    assert_int_equal(rec->vote, m->hs_vote);
    if (m->last > m->snap) {
        assert_int_equal(rec->n_entries, m->last - m->snap);
        assert_int_equal(rec->last_index, m->last);
        for (k = 0; k < rec->n_entries; k++)
            check_entry(&rec->entries[k], m->snap + 1 + k, m->term[m->snap + 1 + k], 64);
    } else {
        assert_int_equal(rec->n_entries, 0);
        assert_int_equal(rec->last_index, m->snap);
    }
}

/* A write or sync fails at a random point while appends are in flight; the
 * store must fail cleanly, and after a restart hold a prefix of what was
 * queued that includes everything it had reported durable. */
static void crash_step(const char *dir, struct mr_rand *r, struct model *m,
                       struct faults *fl, struct mr_store **stp, mr_term *cur_term,
                       uint64_t pending)
{
    static const int kinds[] = {F_PWRITE, F_FDATASYNC, F_FSYNC, F_FALLOCATE, F_RENAME};
    static const int errs[] = {-EIO, -ENOSPC};
    struct mr_store *st = *stp;
    struct mr_store_recovered rec;
    struct mr_store_progress p;
    char errmsg[MR_ERRMSG_SIZE];
    mr_index queued = m->last, i;
    mr_term hs[10];
    mr_node_id votes[10];
    int n_hs = 1, ok_hs = 0;
    uint64_t seq = 0;
    int n = 1 + (int)mr_rand_below(r, 8), rv = 0, k;

    hs[0] = m->hs_term;
    votes[0] = m->hs_vote;

    wait_seq(st, pending); /* what came before is durable */
    pthread_mutex_lock(&fl->mu);
    fl->is_sticky = 1;
    fl->is_short = (int)mr_rand_below(r, 2);
    pthread_mutex_unlock(&fl->mu);
    faults_arm(fl, kinds[mr_rand_below(r, 5)], 1 + mr_rand_below(r, 4),
               errs[mr_rand_below(r, 2)]);
    for (k = 0; k < n && rv == 0; k++) {
        struct mr_raft_entry e[8];
        size_t cnt = 1 + (size_t)mr_rand_below(r, 8), j;
        if (queued + cnt >= 2000) break;
        if (mr_rand_below(r, 4) == 0) {
            hs[n_hs] = *cur_term + (mr_term)k;
            votes[n_hs] = 1 + mr_rand_below(r, 3);
            rv = mr_store_save_hard_state(st, hs[n_hs], votes[n_hs], &seq);
            if (rv == 0) n_hs++;
            continue;
        }
        for (j = 0; j < cnt; j++) {
            e[j].index = queued + 1 + j;
            e[j].term = *cur_term;
            e[j].type = MR_RAFT_ENTRY_NORMAL;
            e[j].data = payload(e[j].index, *cur_term, 64);
        }
        rv = mr_store_append(st, e, cnt, &seq);
        for (j = 0; j < cnt; j++) mr_rcbuf_unref(e[j].data);
        if (rv == 0) {
            for (j = 0; j < cnt; j++) m->term[queued + 1 + j] = *cur_term;
            queued += cnt;
        }
    }
    assert_true(rv == 0 || rv == MR_EDISKFAIL);
    /* ENOSPC is not a failure: the store stalls (and retries) instead */
    for (k = 0; seq != 0; k++) {
        mr_store_poll(st, &p);
        if (p.done_seq >= seq || p.error != 0 || p.nospace != 0) break;
        assert_true(k < 200000); /* 20 s */
        usleep(100);
    }
    mr_store_poll(st, &p);
    if (p.nospace != 0 && mr_rand_below(r, 2) == 0) {
        /* room again: every queued write goes through */
        pthread_mutex_lock(&fl->mu);
        fl->fail_at = 0;
        pthread_mutex_unlock(&fl->mu);
        mr_store_retry_now(st);
        wait_seq(st, seq);
        mr_store_poll(st, &p);
        assert_int_equal(p.error, 0);
        assert_int_equal(p.nospace, 0);
        assert_int_equal(p.persisted_index, queued);
    }
    mr_store_close(st);
    pthread_mutex_lock(&fl->mu);
    fl->fail_at = 0;
    fl->is_sticky = 0;
    fl->is_short = 0;
    pthread_mutex_unlock(&fl->mu);

    assert_int_equal(open_store(dir, 4096, &fl->fs, stp, &rec, errmsg), 0);
    if (p.error == 0 && p.nospace == 0) assert_int_equal(rec.last_index, queued);
    /* a write torn by a full disk was cut before the retry (or the crash) */
    if (p.nospace != 0) assert_string_equal(rec.note, "");
    assert_true(rec.last_index >= p.persisted_index);
    assert_true(rec.last_index >= m->last);
    assert_true(rec.last_index <= queued);
    for (i = 0; i < rec.n_entries; i++) {
        mr_index idx = rec.entries[i].index;
        check_entry(&rec.entries[i], idx, m->term[idx], 64);
    }
    for (k = 0; k < n_hs; k++) /* the old value or one of the queued ones */
        if (rec.term == hs[k] && rec.vote == votes[k]) ok_hs = 1;
    assert_true(ok_hs);
    m->last = rec.last_index; /* the rest was never acknowledged */
    m->hs_term = rec.term;
    m->hs_vote = rec.vote;
    (*cur_term)++;
    mr_store_recovered_release(&rec);
}

static void run_schedule(const char *dir, uint64_t seed)
{
    struct mr_rand r;
    struct model m;
    struct faults fl;
    struct mr_store *st;
    struct mr_store_recovered rec;
    char errmsg[MR_ERRMSG_SIZE];
    mr_term cur_term = 1;
    uint64_t seq = 0;
    int step, steps;

    g_seed = seed;
    g_seed_active = 1;
    mr_rand_seed(&r, seed);
    memset(&m, 0, sizeof m);
    faults_init(&fl);
    fl.is_nosync = 1; /* logic, not durability: keep it fast */
    wipe_dir(dir);
    assert_int_equal(open_store(dir, 4096, &fl.fs, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    steps = 5 + (int)mr_rand_below(&r, 20);
    for (step = 0; step < steps; step++) {
        uint64_t pick = mr_rand_below(&r, 100);
        if (pick < 55) { /* append a batch */
            struct mr_raft_entry e[16];
            size_t n = 1 + (size_t)mr_rand_below(&r, 16), k;
            if (m.last + n >= 2000) continue;
            if (mr_rand_below(&r, 4) == 0) cur_term++;
            for (k = 0; k < n; k++) {
                mr_index i = m.last + 1 + k;
                e[k].index = i;
                e[k].term = cur_term;
                e[k].type = MR_RAFT_ENTRY_NORMAL;
                e[k].data = payload(i, cur_term, 64);
                m.term[i] = cur_term;
            }
            assert_int_equal(mr_store_append(st, e, n, &seq), 0);
            for (k = 0; k < n; k++) mr_rcbuf_unref(e[k].data);
            m.last += n;
        } else if (pick < 70) { /* truncate a suffix (never below the snapshot) */
            mr_index from;
            if (m.last <= m.snap) continue;
            from = m.snap + 1 + mr_rand_below(&r, m.last - m.snap + 1);
            assert_int_equal(mr_store_truncate(st, from, &seq), 0);
            if (from <= m.last) m.last = from - 1;
            cur_term++;
        } else if (pick < 78) { /* snapshot + compaction */
            mr_index at;
            wait_seq(st, seq); /* the snapshot covers applied = durable entries */
            if (m.last <= m.snap) continue;
            at = m.snap + 1 + mr_rand_below(&r, m.last - m.snap);
            assert_int_equal(
                mr_store_snapshot_write(st, at, m.term[at], "c", 1, "s", 1, errmsg), 0);
            m.snap = at;
            m.snap_term = m.term[at];
            assert_int_equal(
                mr_store_compact(st, at - mr_rand_below(&r, at < 3 ? at : 3), &seq), 0);
        } else if (pick < 86) { /* hard state */
            m.hs_term = cur_term;
            m.hs_vote = mr_rand_below(&r, 5);
            assert_int_equal(mr_store_save_hard_state(st, m.hs_term, m.hs_vote, &seq), 0);
        } else if (pick < 94) { /* disk failure mid-write, then restart */
            crash_step(dir, &r, &m, &fl, &st, &cur_term, seq);
            seq = 0;
        } else { /* restart */
            mr_store_close(st);
            assert_int_equal(open_store(dir, 4096, &fl.fs, &st, &rec, errmsg), 0);
            check_model(&m, &rec);
            mr_store_recovered_release(&rec);
            seq = 0; /* a new store numbers its operations from 1 again */
        }
    }
    mr_store_close(st);
    assert_int_equal(open_store(dir, 4096, &fl.fs, &st, &rec, errmsg), 0);
    check_model(&m, &rec);
    mr_store_recovered_release(&rec);
    mr_store_close(st);
    pthread_mutex_destroy(&fl.mu);
    g_seed_active = 0;
}

static void test_store_random_workloads_match_an_in_memory_model(void **state)
{
    struct fx *f = *state;
    unsigned long runs = env_ul("MR_SCHEDULES", 2000), i;
    const char *one = getenv("MR_TEST_SEED");
    char dir[128];
    snprintf(dir, sizeof dir, "%s/run", f->dir);
    if (one != NULL && *one != '\0') {
        run_schedule(dir, strtoull(one, NULL, 0));
        return;
    }
    print_message("random workloads: %lu seeded runs from 0x5eed0000 (MR_SCHEDULES, "
                  "MR_TEST_SEED)\n",
                  runs);
    for (i = 0; i < runs; i++) {
        uint64_t seed = 0x5eed0000u + i;
        run_schedule(dir, seed);
    }
}

/* ---- metadata -----------------------------------------------------------------------
 */

static void test_store_meta_crash_at_any_step_keeps_old_or_new_value(void **state)
{
    struct fx *f = *state;
    struct mr_store_meta old_m = {3, 1, 7, 9, 1}, new_m = {4, 2, 7, 9, 1}, got;
    struct faults fl;
    char errmsg[MR_ERRMSG_SIZE], path[256];
    unsigned long step;
    int saw_old = 0, saw_new = 0;

    snprintf(path, sizeof path, "%s/meta.tmp", f->dir);
    for (step = 1; step <= 8; step++) {
        int kind;
        for (kind = F_OPEN; kind < F_NKINDS; kind++) {
            int rv;
            faults_init(&fl);
            assert_int_equal(mr_store__meta_write(&fl.fs, f->dir, &old_m, errmsg), 0);
            faults_arm(&fl, kind, step, -EIO);
            fl.is_short = 1;
            rv = mr_store__meta_write(&fl.fs, f->dir, &new_m, errmsg);
            assert_true(rv == 0 || fl.failed > 0);
            /* "crash" here, then read back */
            assert_int_equal(mr_store__meta_read(f->dir, &got, errmsg), 0);
            if (got.term == 3) {
                assert_int_equal(got.vote, 1);
                assert_true(rv != 0);
                saw_old = 1;
            } else {
                assert_int_equal(got.term, 4);
                assert_int_equal(got.vote, 2);
                saw_new = 1;
            }
            pthread_mutex_destroy(&fl.mu);
        }
    }
    assert_true(saw_old && saw_new);
    /* garbage left in meta.tmp by a crash is ignored (and removed at open) */
    {
        struct mr_store *st;
        struct mr_store_recovered rec;
        unsigned char junk[30];
        memset(junk, 0xab, sizeof junk);
        spit(path, junk, sizeof junk);
        assert_int_equal(open_store(f->dir, 0, NULL, &st, &rec, errmsg), 0);
        assert_int_equal(rec.term, got.term);
        mr_store_recovered_release(&rec);
        mr_store_close(st);
        assert_int_equal(access(path, F_OK), -1);
    }
}

static void test_store_hard_state_is_durable_when_its_seq_completes(void **state)
{
    struct fx *f = *state;
    struct mr_store *st;
    struct mr_store_recovered rec;
    struct mr_store_progress p;
    char errmsg[MR_ERRMSG_SIZE];
    uint64_t seq;

    assert_int_equal(open_store(f->dir, 0, NULL, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    assert_int_equal(mr_store_save_hard_state(st, 5, 2, &seq), 0);
    assert_int_equal(mr_store_save_ids(st, 11, 12, NULL), 0);
    assert_int_equal(mr_store_save_hard_state(st, 6, 3, &seq), 0);
    wait_seq(st, seq);
    mr_store_poll(st, &p);
    assert_int_equal(p.term, 6);
    assert_int_equal(p.vote, 3);
    mr_store_close(st);
    assert_int_equal(open_store(f->dir, 0, NULL, &st, &rec, errmsg), 0);
    assert_int_equal(rec.term, 6);
    assert_int_equal(rec.vote, 3);
    assert_int_equal(rec.node_id, 11);
    assert_int_equal(rec.cluster_id, 12);
    mr_store_recovered_release(&rec);
    mr_store_close(st);
}

/* ---- disk errors ----------------------------------------------------------------------
 */

static void check_fault(const char *dir, int kind, int err, int is_short)
{
    struct mr_store *st;
    struct mr_store_recovered rec;
    struct mr_store_progress p;
    struct faults fl;
    char errmsg[MR_ERRMSG_SIZE];
    uint64_t seq, good_seq;
    unsigned long syncs_after;
    mr_index durable;
    size_t k;

    wipe_dir(dir);
    faults_init(&fl);
    fl.is_short = is_short;
    assert_int_equal(open_store(dir, 4096, &fl.fs, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    good_seq = append_range(st, 1, 20, 1, 100, 4, 1);
    faults_arm(&fl, kind, 1, err);
    {
        /* the writer may fail while we are still queueing */
        mr_index i;
        int rv = 0;
        seq = good_seq;
        for (i = 21; i <= 60 && rv == 0; i++) {
            struct mr_raft_entry e = {.term = 1,
                                      .index = i,
                                      .type = MR_RAFT_ENTRY_NORMAL,
                                      .data = payload(i, 1, 100)};
            rv = mr_store_append(st, &e, 1, &seq);
            mr_rcbuf_unref(e.data);
            assert_true(rv == 0 || rv == MR_EDISKFAIL);
        }
        if (rv == 0) rv = mr_store_save_hard_state(st, 2, 1, &seq);
        assert_true(rv == 0 || rv == MR_EDISKFAIL);
        seq++; /* wait for the failure: this seq never completes */
        wait_seq(st, seq);
    }
    assert_int_equal(mr_store_poll(st, &p), err);
    assert_true(p.done_seq >= good_seq);
    assert_true(p.done_seq < seq);
    assert_true(strlen(p.errmsg) > 0);
    durable = p.persisted_index;
    assert_true(durable >= 20);
    assert_int_equal(mr_store_status(st, errmsg), err);
    assert_string_equal(errmsg, p.errmsg);
    /* refuses further writes; never retries the failed sync */
    syncs_after = faults_count(&fl, F_FDATASYNC);
    {
        struct mr_raft_entry e = {
            .term = 1, .index = 61, .type = MR_RAFT_ENTRY_NORMAL, .data = NULL};
        assert_int_equal(mr_store_append(st, &e, 1, NULL), MR_EDISKFAIL);
    }
    assert_int_equal(mr_store_truncate(st, 5, NULL), MR_EDISKFAIL);
    assert_int_equal(mr_store_save_hard_state(st, 9, 9, NULL), MR_EDISKFAIL);
    usleep(2000);
    mr_store_close(st);
    assert_int_equal(faults_count(&fl, F_FDATASYNC), syncs_after);
    pthread_mutex_destroy(&fl.mu);

    /* what was acknowledged is intact; the rest is a clean prefix */
    assert_int_equal(open_store(dir, 4096, NULL, &st, &rec, errmsg), 0);
    assert_true(rec.last_index >= durable);
    for (k = 0; k < rec.n_entries; k++) check_entry(&rec.entries[k], k + 1, 1, 100);
    mr_store_recovered_release(&rec);
    mr_store_close(st);
}

static void test_store_disk_errors_fail_the_store_without_damage(void **state)
{
    struct fx *f = *state;
    check_fault(f->dir, F_PWRITE, -EIO, 0);
    check_fault(f->dir, F_PWRITE, -EIO, 1);
    check_fault(f->dir, F_FDATASYNC, -EIO, 0);
    check_fault(f->dir, F_FALLOCATE, -EIO, 0);
    check_fault(f->dir, F_RENAME, -EIO, 0);
}

/* ---- a full disk
 * ------------------------------------------------------------------------ */

static void faults_stop(struct faults *f)
{
    pthread_mutex_lock(&f->mu);
    f->fail_at = 0;
    f->is_sticky = 0;
    pthread_mutex_unlock(&f->mu);
}

/* Waits until the writer reports a full disk (want != 0) or not (want == 0). */
static void wait_nospace(struct mr_store *st, int want)
{
    struct mr_store_progress p;
    int spins = 0;
    for (;;) {
        mr_store_poll(st, &p);
        assert_int_equal(p.error, 0);
        if ((want != 0 && p.nospace == want) || (want == 0 && p.nospace == 0)) return;
        assert_true(++spins < 200000); /* 20 s */
        usleep(100);
    }
}

static void append_one(struct mr_store *st, mr_index i, mr_term t, uint64_t *seq)
{
    struct mr_raft_entry e = {
        .term = t, .index = i, .type = MR_RAFT_ENTRY_NORMAL, .data = payload(i, t, 100)};
    assert_int_equal(mr_store_append(st, &e, 1, seq), 0);
    mr_rcbuf_unref(e.data);
}

static void test_store_enospc_mid_record_stalls_and_leaves_no_torn_record(void **state)
{
    struct fx *f = *state;
    struct mr_store *st;
    struct mr_store_recovered rec;
    struct mr_store_progress p;
    struct faults fl;
    char errmsg[MR_ERRMSG_SIZE];
    uint64_t seq = 0, good;
    mr_index i;
    size_t k;

    faults_init(&fl);
    fl.is_short = 1; /* the failing write puts half of its bytes in */
    fl.is_sticky = 1;
    assert_int_equal(open_store(f->dir, 4096, &fl.fs, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    good = append_range(st, 1, 20, 1, 100, 4, 1);
    faults_arm(&fl, F_PWRITE, 1, -ENOSPC);
    for (i = 21; i <= 40; i++) append_one(st, i, 1, &seq);
    wait_nospace(st, -ENOSPC);
    /* not a failure: still queueing, nothing of the stalled batch durable */
    append_one(st, 41, 1, &seq);
    mr_store_poll(st, &p);
    assert_int_equal(p.error, 0);
    assert_int_equal(p.done_seq, good);
    assert_int_equal(p.persisted_index, 20);
    assert_true(strstr(p.nospace_msg, "No space") != NULL);
    assert_int_equal(mr_store_status(st, NULL), 0);
    /* the process dies while the disk is still full */
    mr_store_close(st);
    pthread_mutex_destroy(&fl.mu);

    /* the torn half record was cut before anything else: recovery has
     * nothing to repair, and the log is a clean prefix */
    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), 0);
    assert_string_equal(rec.note, "");
    assert_true(rec.last_index >= 20 && rec.last_index <= 41);
    for (k = 0; k < rec.n_entries; k++) check_entry(&rec.entries[k], k + 1, 1, 100);
    mr_store_recovered_release(&rec);
    mr_store_close(st);
}

/* mr_store_sync_inline: the caller runs the queued batch itself (one write
 * group, one fdatasync, no notify), appends queued in inline mode do not wake
 * the writer thread, and a full disk met inline is handed to the writer,
 * which retries it in order. */
static void test_store_inline_sync_runs_the_batch_on_the_caller_and_hands_a_full_disk_to_the_writer(
    void **state)
{
    struct fx *f = *state;
    struct mr_store *st;
    struct mr_store_recovered rec;
    struct mr_store_options o;
    struct mr_store_progress p;
    struct notify_count nc;
    struct faults fl;
    char errmsg[MR_ERRMSG_SIZE];
    uint64_t seq = 0;
    unsigned long syncs;
    mr_index i;
    size_t k;

    faults_init(&fl);
    pthread_mutex_init(&nc.mu, NULL);
    nc.n = 0;
    memset(&o, 0, sizeof o);
    o.data_dir = f->dir;
    o.segment_size = 4096;
    o.fs = &fl.fs;
    o.notify = count_notify;
    o.notify_arg = &nc;
    assert_int_equal(mr_store_open(&st, &o, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    assert_int_equal(mr_store_sync_inline(st), 0); /* nothing queued */

    /* a first write through the writer, then time for it to park (a writer
     * that is awake anyway takes whatever is queued, inline mode or not) */
    append_one(st, 1, 1, &seq);
    wait_seq(st, seq);
    while (!mr_store__writer_is_parked(st)) usleep(1000);
    pthread_mutex_lock(&nc.mu);
    nc.n = 0;
    pthread_mutex_unlock(&nc.mu);
    mr_store_set_inline(st, 1);
    for (i = 2; i <= 10; i++) append_one(st, i, 1, &seq);
    usleep(20000);
    mr_store_poll(st, &p);
    assert_int_equal(p.done_seq, 1); /* the writer was not woken */
    syncs = faults_count(&fl, F_FDATASYNC);
    assert_int_equal(mr_store_sync_inline(st), 1);
    /* done when it returns: one group, one fdatasync, no notify */
    mr_store_poll(st, &p);
    assert_int_equal(p.done_seq, seq);
    assert_int_equal(p.persisted_index, 10);
    assert_int_equal(faults_count(&fl, F_FDATASYNC), syncs + 1);
    pthread_mutex_lock(&nc.mu);
    assert_int_equal(nc.n, 0);
    pthread_mutex_unlock(&nc.mu);

    /* a full disk inline: reported, nothing of it durable, and the writer
     * thread retries it once space is back */
    fl.is_sticky = 1; /* the writer's own retry fails too: it backs off */
    faults_arm(&fl, F_PWRITE, 1, -ENOSPC);
    for (i = 11; i <= 14; i++) append_one(st, i, 1, &seq);
    assert_int_equal(mr_store_sync_inline(st), 1);
    mr_store_poll(st, &p);
    assert_int_equal(p.error, 0);
    assert_int_equal(p.nospace, -ENOSPC);
    assert_int_equal(p.persisted_index, 10);
    append_one(st, 15, 1, &seq);
    assert_int_equal(mr_store_sync_inline(st), 0); /* stalled: the writer's */
    pthread_mutex_lock(&fl.mu);
    fl.fail_at = 0; /* space is back */
    fl.is_sticky = 0;
    pthread_mutex_unlock(&fl.mu);
    mr_store_retry_now(st);
    wait_nospace(st, 0);
    wait_seq(st, seq);
    mr_store_poll(st, &p);
    assert_int_equal(p.persisted_index, 15);

    /* leaving inline mode wakes the writer for what is queued */
    append_one(st, 16, 1, &seq);
    mr_store_set_inline(st, 0);
    wait_seq(st, seq);
    mr_store_close(st);

    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), 0);
    assert_string_equal(rec.note, "");
    assert_int_equal(rec.n_entries, 16);
    for (k = 0; k < rec.n_entries; k++) check_entry(&rec.entries[k], k + 1, 1, 100);
    mr_store_recovered_release(&rec);
    mr_store_close(st);
    pthread_mutex_destroy(&nc.mu);
    pthread_mutex_destroy(&fl.mu);
}

static void
test_store_full_disk_retries_until_space_returns_and_keeps_queue_order(void **state)
{
    struct fx *f = *state;
    struct mr_store *st;
    struct mr_store_recovered rec;
    struct mr_store_progress p;
    struct faults fl;
    char errmsg[MR_ERRMSG_SIZE];
    uint64_t seq = 0;
    mr_index i;
    size_t k;

    faults_init(&fl);
    fl.is_short = 1;
    fl.is_sticky = 1;
    assert_int_equal(open_store(f->dir, 4096, &fl.fs, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    append_range(st, 1, 20, 1, 100, 4, 1);
    faults_arm(&fl, F_PWRITE, 1, -ENOSPC);
    for (i = 21; i <= 30; i++) append_one(st, i, 1, &seq);
    wait_nospace(st, -ENOSPC);
    /* while stalled: a new leader's history replaces 25.. (term 2), and a
     * vote is recorded; all of it waits behind the stalled appends */
    assert_int_equal(mr_store_save_hard_state(st, 2, 3, &seq), 0);
    assert_int_equal(mr_store_truncate(st, 25, &seq), 0);
    for (i = 25; i <= 33; i++) append_one(st, i, 2, &seq);
    /* a second failed retry, then room again */
    mr_store_retry_now(st);
    for (k = 0;; k++) {
        mr_store_poll(st, &p);
        if (p.nospace_retries >= 2) break;
        assert_true(k < 200000); /* 20 s */
        usleep(100);
    }
    assert_int_equal(p.persisted_index, 20);
    faults_stop(&fl);
    mr_store_retry_now(st);
    wait_seq(st, seq);
    mr_store_poll(st, &p);
    assert_int_equal(p.error, 0);
    assert_int_equal(p.nospace, 0);
    assert_string_equal(p.nospace_msg, "");
    assert_int_equal(p.persisted_index, 33);
    assert_int_equal(p.persisted_term, 2);
    assert_int_equal(p.term, 2);
    assert_int_equal(p.vote, 3);
    append_one(st, 34, 2, &seq);
    wait_seq(st, seq);
    mr_store_close(st);
    pthread_mutex_destroy(&fl.mu);

    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), 0);
    assert_string_equal(rec.note, "");
    assert_int_equal(rec.term, 2);
    assert_int_equal(rec.vote, 3);
    assert_int_equal(rec.last_index, 34);
    assert_int_equal(rec.n_entries, 34);
    for (k = 0; k < 24; k++) check_entry(&rec.entries[k], k + 1, 1, 100);
    for (k = 24; k < 34; k++) check_entry(&rec.entries[k], k + 1, 2, 100);
    mr_store_recovered_release(&rec);
    mr_store_close(st);
}

static int count_segments(const char *dir)
{
    char wal[512];
    struct dirent *de;
    int n = 0;
    DIR *d;
    snprintf(wal, sizeof wal, "%s/wal", dir);
    d = opendir(wal);
    assert_non_null(d);
    while ((de = readdir(d)) != NULL) n += strstr(de->d_name, ".seg") != NULL;
    closedir(d);
    return n;
}

static void
test_store_compaction_runs_ahead_of_appends_stalled_on_a_full_disk(void **state)
{
    struct fx *f = *state;
    struct mr_store *st;
    struct mr_store_recovered rec;
    struct mr_store_progress p;
    struct faults fl;
    char errmsg[MR_ERRMSG_SIZE];
    uint64_t seq = 0;
    mr_index i;
    int before, spins = 0;

    faults_init(&fl);
    fl.is_sticky = 1;
    assert_int_equal(open_store(f->dir, 4096, &fl.fs, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    append_range(st, 1, 100, 1, 100, 4, 1);
    before = count_segments(f->dir);
    assert_true(before >= 3);
    /* a new segment cannot be preallocated: the disk is full */
    faults_arm(&fl, F_FALLOCATE, 1, -ENOSPC);
    for (i = 101; i <= 160; i++) append_one(st, i, 1, &seq);
    wait_nospace(st, -ENOSPC);
    /* a snapshot (written without fallocate) lets the store free space */
    assert_int_equal(mr_store_snapshot_write(st, 90, 1, "c", 1, "s", 1, errmsg), 0);
    assert_int_equal(mr_store_compact(st, 90, NULL), 0);
    while (count_segments(f->dir) >= before) {
        assert_true(++spins < 20000); /* 2 s, well before the 1 s.. backoff ends */
        usleep(100);
    }
    mr_store_poll(st, &p);
    assert_int_equal(p.nospace, -ENOSPC); /* still full for the test's fault */
    faults_stop(&fl);
    mr_store_retry_now(st);
    wait_seq(st, seq);
    wait_nospace(st, 0);
    mr_store_close(st);
    pthread_mutex_destroy(&fl.mu);

    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), 0);
    assert_int_equal(rec.snap_index, 90);
    assert_int_equal(rec.last_index, 160);
    mr_store_recovered_release(&rec);
    mr_store_close(st);
}

static void test_store_limit_layer_fills_and_frees_the_disk_at_runtime(void **state)
{
    struct fx *f = *state;
    struct mr_store *st;
    struct mr_store_recovered rec;
    struct mr_store_limit *lim;
    char errmsg[MR_ERRMSG_SIZE], ff[512], data[512];
    uint64_t seq = 0, used;
    mr_index i;
    FILE *fp;

    snprintf(data, sizeof data, "%s/data", f->dir);
    snprintf(ff, sizeof ff, "%s/disk-limit", f->dir);
    assert_int_equal(mr_store_limit_open(data, NULL, 0, ff, &lim), 0);
    assert_int_equal(open_store(data, 4096, mr_store_limit_fs(lim), &st, &rec, errmsg),
                     0);
    mr_store_recovered_release(&rec);
    append_range(st, 1, 10, 1, 100, 2, 1);
    used = mr_store_dir_usage(data);
    assert_true(used > 0);
    /* no room for one more segment */
    fp = fopen(ff, "w");
    assert_non_null(fp);
    fprintf(fp, "%llu\n", (unsigned long long)used);
    fclose(fp);
    for (i = 11; i <= 200; i++) append_one(st, i, 1, &seq);
    wait_nospace(st, -ENOSPC);
    assert_true(mr_store_dir_usage(data) <= used);
    unlink(ff);
    mr_store_retry_now(st);
    wait_seq(st, seq);
    wait_nospace(st, 0);
    mr_store_close(st);
    mr_store_limit_close(lim);

    /* the quota: EDQUOT once the directory would pass max_bytes */
    assert_int_equal(
        mr_store_limit_open(data, NULL, mr_store_dir_usage(data), NULL, &lim), 0);
    assert_int_equal(open_store(data, 4096, mr_store_limit_fs(lim), &st, &rec, errmsg),
                     0);
    assert_int_equal(rec.last_index, 200);
    mr_store_recovered_release(&rec);
    for (i = 201; i <= 400; i++) append_one(st, i, 1, &seq);
    wait_nospace(st, -EDQUOT);
    mr_store_close(st);
    mr_store_limit_close(lim);
}

/* ---- snapshots
 * -------------------------------------------------------------------------- */

static void test_store_snapshot_round_trip_in_chunks_and_older_ones_removed(void **state)
{
    struct fx *f = *state;
    struct mr_store *st;
    struct mr_store_recovered rec;
    struct mr_store_snap_reader *r;
    struct mr_store_snap_receiver *rx;
    const struct mr_store_snap_info *info;
    char errmsg[MR_ERRMSG_SIZE], snapdir[256];
    unsigned char *payload_buf, chunk[1000];
    size_t plen = 300000, k;
    uint64_t off;

    snprintf(snapdir, sizeof snapdir, "%s/snap", f->dir);
    payload_buf = mr_malloc(plen);
    for (k = 0; k < plen; k++) payload_buf[k] = (unsigned char)(k * 7 + 3);
    assert_int_equal(open_store(f->dir, 0, NULL, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    assert_int_equal(mr_store_snap_reader_open(st, &r, errmsg), MR_ENOTFOUND);
    assert_int_equal(
        mr_store_snapshot_write(st, 10, 2, "members", 7, payload_buf, 1000, errmsg), 0);
    assert_int_equal(
        mr_store_snapshot_write(st, 20, 3, "members2", 8, payload_buf, plen, errmsg), 0);
    assert_int_equal(count_files(snapdir, ".snap"), 1);
    assert_int_equal(mr_store_snapshot_index(st), 20);

    /* read in chunks (as a leader sending to a peer) */
    assert_int_equal(mr_store_snap_reader_open(st, &r, errmsg), 0);
    info = mr_store_snap_reader_info(r);
    assert_int_equal(info->index, 20);
    assert_int_equal(info->term, 3);
    assert_int_equal(info->size, plen);
    assert_memory_equal(info->conf->data, "members2", 8);
    assert_int_equal(mr_store_snap_reader_verify(r, errmsg), 0);
    /* mapped: the payload's bytes in place, one mapping per reader until
     * unmap; verify neither needs nor drops a mapping the caller holds */
    {
        const unsigned char *m = mr_store_snap_reader_map(r);
        assert_non_null(m);
        assert_memory_equal(m, payload_buf, plen);
        assert_ptr_equal(mr_store_snap_reader_map(r), m);
        assert_int_equal(mr_store_snap_reader_verify(r, errmsg), 0);
        assert_memory_equal(m + plen - 16, payload_buf + plen - 16, 16);
        mr_store_snap_reader_unmap(r);
        mr_store_snap_reader_unmap(r); /* idempotent */
        assert_int_equal(mr_store_snap_reader_verify(r, errmsg), 0);
    }

    /* received chunk by chunk on another store */
    {
        struct {
            char dir[128];
        } f2;
        struct mr_store *st2;
        struct mr_store_snap_reader *r2;
        snprintf(f2.dir, sizeof f2.dir, "%s/peer", f->dir);
        assert_int_equal(open_store(f2.dir, 0, NULL, &st2, &rec, errmsg), 0);
        mr_store_recovered_release(&rec);
        assert_int_equal(mr_store_snap_receiver_begin(st2, info->index, info->term,
                                                      info->conf->data, info->conf->len,
                                                      &rx, errmsg),
                         0);
        for (off = 0;;) {
            ssize_t n = mr_store_snap_reader_read(r, off, chunk, sizeof chunk);
            assert_true(n >= 0);
            if (n == 0) break;
            assert_int_equal(
                mr_store_snap_receiver_write(rx, off, chunk, (size_t)n, errmsg), 0);
            if (off == 5000) /* a duplicate is harmless */
                assert_int_equal(
                    mr_store_snap_receiver_write(rx, off, chunk, (size_t)n, errmsg), 0);
            off += (uint64_t)n;
        }
        assert_int_equal(mr_store_snap_receiver_offset(rx), plen);
        assert_int_equal(mr_store_snap_receiver_write(rx, plen + 10, chunk, 1, errmsg),
                         MR_EINVAL);
        assert_int_equal(mr_store_snap_receiver_finish(rx, 1, info->payload_crc, errmsg),
                         0);
        assert_int_equal(mr_store_snap_reader_open(st2, &r2, errmsg), 0);
        assert_int_equal(mr_store_snap_reader_info(r2)->size, plen);
        assert_int_equal(mr_store_snap_reader_read(r2, 299000, chunk, 5000), 1000);
        assert_memory_equal(chunk, payload_buf + 299000, 1000);
        mr_store_snap_reader_close(r2);

        /* a receive whose bytes do not match the sender's checksum is refused */
        assert_int_equal(mr_store_snap_receiver_begin(st2, 30, 3, "m", 1, &rx, errmsg),
                         0);
        assert_int_equal(mr_store_snap_receiver_write(rx, 0, "abc", 3, errmsg), 0);
        assert_int_equal(mr_store_snap_receiver_finish(rx, 1, 12345, errmsg),
                         MR_ECORRUPT);
        assert_int_equal(mr_store_snapshot_index(st2), 20);
        /* an aborted receive leaves nothing behind */
        assert_int_equal(mr_store_snap_receiver_begin(st2, 40, 3, "m", 1, &rx, errmsg),
                         0);
        mr_store_snap_receiver_abort(rx);
        {
            char d2[256];
            snprintf(d2, sizeof d2, "%s/snap", f2.dir);
            assert_int_equal(count_files(d2, ".part"), 0);
            assert_int_equal(count_files(d2, ".snap"), 1);
        }
        mr_store_close(st2);
    }
    mr_store_snap_reader_close(r);
    mr_store_close(st);
    mr_free(payload_buf);
}

static void test_store_snapshot_payload_can_come_from_a_forked_child(void **state)
{
    struct fx *f = *state;
    struct mr_store *st;
    struct mr_store_recovered rec;
    struct mr_store_snap_writer *w;
    char errmsg[MR_ERRMSG_SIZE];
    pid_t pid;
    int status;

    assert_int_equal(open_store(f->dir, 0, NULL, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    assert_int_equal(mr_store_snap_writer_begin(st, 5, 1, "cfg", 3, &w, errmsg), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = mr_store_snap_writer_fd(w), i;
        for (i = 0; i < 100; i++)
            if (write(fd, "0123456789", 10) != 10) _exit(1);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(mr_store_snap_writer_finish(w, errmsg), 0);
    mr_store_close(st);
    assert_int_equal(open_store(f->dir, 0, NULL, &st, &rec, errmsg), 0);
    assert_true(rec.has_snapshot);
    assert_int_equal(rec.snap_index, 5);
    assert_int_equal(rec.snap_size, 1000);
    mr_store_recovered_release(&rec);
    mr_store_close(st);
}

static void test_store_corrupt_snapshot_header_or_payload_is_detected(void **state)
{
    struct fx *f = *state;
    struct mr_store *st;
    struct mr_store_recovered rec;
    struct mr_store_snap_reader *r;
    char errmsg[MR_ERRMSG_SIZE], path[256], name[SNAP_NAME_LEN + 1];
    unsigned char *b;
    uint64_t size;
    int which;

    assert_int_equal(open_store(f->dir, 0, NULL, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    assert_int_equal(
        mr_store_snapshot_write(st, 9, 2, "conf", 4, "payload-bytes", 13, errmsg), 0);
    mr_store_close(st);
    mr_store__snap_name(name, 9, 2);
    snprintf(path, sizeof path, "%s/snap/%s", f->dir, name);
    b = slurp(path, &size);
    for (which = 0; which < 3; which++) {
        uint64_t at = which == 0 ? 10 : which == 1 ? 58 : size - 1;
        b[at] ^= 0x10;
        spit(path, b, size);
        b[at] ^= 0x10;
        assert_int_equal(open_store(f->dir, 0, NULL, &st, &rec, errmsg), MR_ECORRUPT);
        assert_memory_equal(errmsg, "snap/", 5);
        if (which == 2) {
            assert_non_null(strstr(errmsg, "offset 60: payload checksum mismatch"));
            assert_int_equal(mr_store_snap_reader_open_path(path, &r, errmsg), 0);
            assert_int_equal(mr_store_snap_reader_verify(r, errmsg), MR_ECORRUPT);
            mr_store_snap_reader_close(r);
        } else {
            assert_non_null(strstr(errmsg, "offset 0: header checksum mismatch"));
        }
    }
    /* truncated payload */
    spit(path, b, size - 3);
    assert_int_equal(open_store(f->dir, 0, NULL, &st, &rec, errmsg), MR_ECORRUPT);
    assert_non_null(strstr(errmsg, "payload length"));
    spit(path, b, size);
    mr_free(b);
    assert_int_equal(open_store(f->dir, 0, NULL, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    mr_store_close(st);
}

/* ---- the data tool
 * ------------------------------------------------------------------------ */

static int run_tool(const char *cmd, const char *dir, char **out, char **err)
{
    size_t ol, el;
    FILE *o = open_memstream(out, &ol), *e = open_memstream(err, &el);
    char *argv[3];
    int rv;
    argv[0] = (char *)cmd;
    argv[1] = (char *)dir;
    argv[2] = NULL;
    rv = mr_store_tool_main(dir ? 2 : 1, argv, o, e);
    fclose(o);
    fclose(e);
    return rv;
}

static void test_store_tool_verifies_and_dumps_with_exit_codes(void **state)
{
    struct fx *f = *state;
    struct mr_store *st;
    struct mr_store_recovered rec;
    char errmsg[MR_ERRMSG_SIZE], path[256];
    char *out, *err;
    unsigned char *b;
    uint64_t size, seq;
    struct mr_raft_entry e = {
        .term = 3, .index = 1, .type = MR_RAFT_ENTRY_NORMAL, .data = NULL};

    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    e.data = mr_rcbuf_copy("{\"op\":\"put\",\"key\":\"a\"}\n", 23);
    assert_int_equal(mr_store_append(st, &e, 1, NULL), 0);
    mr_rcbuf_unref(e.data);
    wait_seq(st, append_range(st, 2, 50, 3, 100, 5, 0));
    assert_int_equal(mr_store_save_hard_state(st, 3, 2, &seq), 0);
    wait_seq(st, seq);
    mr_store_close(st);

    assert_int_equal(run_tool("verify", f->dir, &out, &err), 0);
    assert_non_null(strstr(out, "term: 3\n"));
    assert_non_null(strstr(out, "vote: 2\n"));
    assert_non_null(strstr(out, "snapshot: none\n"));
    assert_non_null(strstr(out, "first index: 1\n"));
    assert_non_null(strstr(out, "last index: 50 (term 3)\n"));
    assert_non_null(strstr(out, "  wal/0000000000000001.seg first 1 last"));
    assert_non_null(strstr(out, "ok: every checksum verified"));
    free(out);
    free(err);

    assert_int_equal(run_tool("dump", f->dir, &out, &err), 0);
    assert_non_null(
        strstr(out, "1\t3\tnormal\t23\t{\"op\":\"put\",\"key\":\"a\"}\\x0a\n"));
    assert_non_null(strstr(out, "\n50\t3\tnormal\t"));
    free(out);
    free(err);

    assert_int_equal(run_tool("verify", NULL, &out, &err), 2);
    assert_non_null(strstr(err, "usage"));
    free(out);
    free(err);
    assert_int_equal(run_tool("frobnicate", f->dir, &out, &err), 2);
    free(out);
    free(err);

    /* corrupt the first record */
    seg_abs(path, sizeof path, f->dir, 1);
    b = slurp(path, &size);
    b[40] ^= 1;
    spit(path, b, size);
    assert_int_equal(run_tool("verify", f->dir, &out, &err), 3);
    assert_non_null(strstr(err, "wal/0000000000000001.seg offset 32: checksum mismatch"));
    free(out);
    free(err);
    assert_int_equal(run_tool("dump", f->dir, &out, &err), 3);
    free(out);
    free(err);
    b[40] ^= 1;
    spit(path, b, size);
    mr_free(b);
    /* verify never repairs: a torn tail is reported, the file left alone */
    {
        struct recs rs;
        struct stat sb1, sb2;
        mr_index last_first;
        struct mr_store_recovery r;
        assert_int_equal(mr_store__recover(f->dir, mr_store_fs_default(), 4096, 1, NULL,
                                           0, NULL, NULL, &r, &rec, errmsg),
                         0);
        last_first = r.segs[r.n_segs - 1].first;
        mr_store__recovery_free(&r);
        mr_store_recovered_release(&rec);
        scan_file(f->dir, last_first, &rs);
        seg_abs(path, sizeof path, f->dir, last_first);
        assert_int_equal(truncate(path, (off_t)(rs.off[rs.n - 1] + 5)), 0);
        stat(path, &sb1);
        assert_int_equal(run_tool("verify", f->dir, &out, &err), 0);
        assert_non_null(strstr(out, "warning: "));
        assert_non_null(strstr(out, "torn write"));
        stat(path, &sb2);
        assert_int_equal(sb1.st_size, sb2.st_size);
        free(out);
        free(err);
    }
    assert_int_equal(run_tool("verify", "/nonexistent/mr-dir", &out, &err), 1);
    free(out);
    free(err);
}

/* ---- power loss ---------------------------------------------------------------------
 * The power-loss layer (storage_powerloss.c) keeps what a power cut leaves;
 * mr_store_powerloss_cut() applies it. `struct cutter` sits on top of it: after
 * `cut_after` calls every call fails (the power is off: nothing more reaches
 * the disk), and `gate_at` holds one call until the test opens the gate. */

struct cutter {
    struct mr_store_fs fs;
    const struct mr_store_fs *in;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned long n;         /* calls seen */
    unsigned long cut_after; /* when is_armed: calls after this many fail */
    int is_armed;
    unsigned long gate_at; /* 0: none */
    int gate_open, at_gate;
};

static int cut_step(struct cutter *c)
{
    int rv = 0;
    pthread_mutex_lock(&c->mu);
    c->n++;
    if (c->gate_at != 0 && c->n == c->gate_at) {
        c->at_gate = 1;
        pthread_cond_broadcast(&c->cv);
        while (!c->gate_open) pthread_cond_wait(&c->cv, &c->mu);
    }
    if (c->is_armed && c->n > c->cut_after) rv = -EIO;
    pthread_mutex_unlock(&c->mu);
    return rv;
}

static int cu_open(void *ctx, const char *p, int fl, int m)
{
    struct cutter *c = ctx;
    int rv = cut_step(c);
    return rv ? rv : c->in->open(c->in->ctx, p, fl, m);
}
static int cu_close(void *ctx, int fd)
{
    struct cutter *c = ctx;
    return c->in->close(c->in->ctx, fd);
}
static ssize_t cu_pwrite(void *ctx, int fd, const void *b, size_t n, off_t o)
{
    struct cutter *c = ctx;
    int rv = cut_step(c);
    return rv ? rv : c->in->pwrite(c->in->ctx, fd, b, n, o);
}
static int cu_fdatasync(void *ctx, int fd)
{
    struct cutter *c = ctx;
    int rv = cut_step(c);
    return rv ? rv : c->in->fdatasync(c->in->ctx, fd);
}
static int cu_fsync(void *ctx, int fd)
{
    struct cutter *c = ctx;
    int rv = cut_step(c);
    return rv ? rv : c->in->fsync(c->in->ctx, fd);
}
static int cu_rename(void *ctx, const char *a, const char *b)
{
    struct cutter *c = ctx;
    int rv = cut_step(c);
    return rv ? rv : c->in->rename(c->in->ctx, a, b);
}
static int cu_ftruncate(void *ctx, int fd, off_t l)
{
    struct cutter *c = ctx;
    int rv = cut_step(c);
    return rv ? rv : c->in->ftruncate(c->in->ctx, fd, l);
}
static int cu_fallocate(void *ctx, int fd, off_t o, off_t l)
{
    struct cutter *c = ctx;
    int rv = cut_step(c);
    return rv ? rv : c->in->fallocate(c->in->ctx, fd, o, l);
}
static int cu_unlink(void *ctx, const char *p)
{
    struct cutter *c = ctx;
    int rv = cut_step(c);
    return rv ? rv : c->in->unlink(c->in->ctx, p);
}

static void cutter_init(struct cutter *c, const struct mr_store_fs *in)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->in = in;
    c->fs.ctx = c;
    c->fs.open = cu_open;
    c->fs.close = cu_close;
    c->fs.pwrite = cu_pwrite;
    c->fs.fdatasync = cu_fdatasync;
    c->fs.fsync = cu_fsync;
    c->fs.rename = cu_rename;
    c->fs.ftruncate = cu_ftruncate;
    c->fs.fallocate = cu_fallocate;
    c->fs.unlink = cu_unlink;
}

static void cutter_destroy(struct cutter *c)
{
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
}

static void gate_wait(struct cutter *c)
{
    pthread_mutex_lock(&c->mu);
    while (!c->at_gate) pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
}

static void gate_release(struct cutter *c)
{
    pthread_mutex_lock(&c->mu);
    c->gate_open = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

struct plfx {
    char data[128], img[128];
};

static void plfx_init(struct plfx *p, const char *dir)
{
    snprintf(p->data, sizeof p->data, "%s/data", dir);
    snprintf(p->img, sizeof p->img, "%s/img", dir);
    nftw(p->data, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    nftw(p->img, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void cut(const struct plfx *p)
{
    char errmsg[MR_ERRMSG_SIZE];
    int rv = mr_store_powerloss_cut(p->data, p->img, errmsg);
    if (rv != 0) fprintf(stderr, "cut: %s\n", errmsg);
    assert_int_equal(rv, 0);
}

static char *read_str(const char *dir, const char *name)
{
    char path[256];
    unsigned char *b;
    uint64_t size;
    char *s;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (mr_store__read_file(path, &b, &size) != 0) return NULL;
    s = malloc((size_t)size + 1);
    assert_non_null(s);
    if (size) memcpy(s, b, (size_t)size);
    s[size] = '\0';
    mr_free(b);
    return s;
}

static void assert_file(const char *dir, const char *name, const char *want)
{
    char *s = read_str(dir, name);
    if (want == NULL) {
        if (s != NULL) fprintf(stderr, "%s/%s: unexpected \"%s\"\n", dir, name, s);
        assert_null(s);
        return;
    }
    if (s == NULL) fprintf(stderr, "%s/%s: missing\n", dir, name);
    assert_non_null(s);
    assert_string_equal(s, want);
    free(s);
}

/* The process dies (its fds and the layer go), the power is cut, it starts
 * again with the image continued. */
static const struct mr_store_fs *recut(const struct plfx *p,
                                       struct mr_store_powerloss **pl)
{
    char errmsg[MR_ERRMSG_SIZE];
    mr_store_powerloss_close(*pl);
    cut(p);
    assert_int_equal(mr_store_powerloss_open(p->data, p->img, pl, errmsg), 0);
    return mr_store_powerloss_fs(*pl);
}

static int xopen(const struct mr_store_fs *fs, const char *dir, const char *name,
                 int flags)
{
    char path[256];
    int fd;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    fd = fs->open(fs->ctx, path, flags, 0644);
    assert_true(fd >= 0);
    return fd;
}

static void test_powerloss_keeps_only_synced_data_of_a_file(void **state)
{
    struct fx *f = *state;
    struct plfx p;
    struct mr_store_powerloss *pl;
    const struct mr_store_fs *fs;
    char errmsg[MR_ERRMSG_SIZE];
    int fd;

    plfx_init(&p, f->dir);
    assert_int_equal(mr_store_powerloss_open(p.data, p.img, &pl, errmsg), 0);
    fs = mr_store_powerloss_fs(pl);
    fd = xopen(fs, p.data, "a", O_RDWR | O_CREAT);
    assert_int_equal(mr_store__write_all(fs, fd, "hello", 5, 0), 0);
    assert_int_equal(mr_store__sync_dir(fs, p.data), 0);
    fs->close(fs->ctx, fd);
    /* the entry is durable, the data is not */
    fs = recut(&p, &pl);
    assert_file(p.data, "a", "");
    fd = xopen(fs, p.data, "a", O_RDWR);
    assert_int_equal(mr_store__write_all(fs, fd, "hello", 5, 0), 0);
    assert_int_equal(fs->fdatasync(fs->ctx, fd), 0);
    assert_int_equal(mr_store__write_all(fs, fd, " world", 6, 5), 0);
    fs->close(fs->ctx, fd);
    /* a kill -9 would keep " world" (page cache); a power cut does not */
    assert_file(p.data, "a", "hello world");
    fs = recut(&p, &pl);
    assert_file(p.data, "a", "hello");
    /* unsynced data left by a killed process becomes durable with the next
     * sync of that file, as the page cache would have it */
    fd = xopen(fs, p.data, "a", O_RDWR);
    assert_int_equal(mr_store__write_all(fs, fd, "!!", 2, 5), 0);
    fs->close(fs->ctx, fd);
    mr_store_powerloss_close(pl);
    assert_int_equal(mr_store_powerloss_open(p.data, p.img, &pl, errmsg), 0);
    fs = mr_store_powerloss_fs(pl);
    fd = xopen(fs, p.data, "a", O_RDWR);
    assert_int_equal(fs->fsync(fs->ctx, fd), 0);
    fs->close(fs->ctx, fd);
    fs = recut(&p, &pl);
    assert_file(p.data, "a", "hello!!");
    /* a shrink is durable only once synced, and bytes cut away read back as
     * zeros when the file grows again */
    fd = xopen(fs, p.data, "a", O_RDWR);
    assert_int_equal(fs->ftruncate(fs->ctx, fd, 2), 0);
    fs->close(fs->ctx, fd);
    fs = recut(&p, &pl);
    assert_file(p.data, "a", "hello!!");
    fd = xopen(fs, p.data, "a", O_RDWR);
    assert_int_equal(fs->ftruncate(fs->ctx, fd, 2), 0);
    assert_int_equal(fs->fallocate(fs->ctx, fd, 0, 4), 0);
    assert_int_equal(fs->fsync(fs->ctx, fd), 0);
    fs->close(fs->ctx, fd);
    fs = recut(&p, &pl);
    {
        char *s = read_str(p.data, "a");
        assert_non_null(s);
        assert_memory_equal(s, "he\0\0", 5);
        free(s);
    }
    (void)fs;
    mr_store_powerloss_close(pl);
}

static void test_powerloss_directory_changes_need_a_directory_fsync(void **state)
{
    struct fx *f = *state;
    struct plfx p;
    struct mr_store_powerloss *pl;
    const struct mr_store_fs *fs;
    char errmsg[MR_ERRMSG_SIZE], tmp[256], dst[256], other[256];
    int fd;

    plfx_init(&p, f->dir);
    assert_int_equal(mr_store_powerloss_open(p.data, p.img, &pl, errmsg), 0);
    fs = mr_store_powerloss_fs(pl);
    snprintf(tmp, sizeof tmp, "%s/x.tmp", p.data);
    snprintf(dst, sizeof dst, "%s/x", p.data);
    snprintf(other, sizeof other, "%s/y", p.data);
    /* a synced file whose entry never was: gone */
    fd = xopen(fs, p.data, "x.tmp", O_RDWR | O_CREAT | O_TRUNC);
    assert_int_equal(mr_store__write_all(fs, fd, "v1", 2, 0), 0);
    assert_int_equal(fs->fsync(fs->ctx, fd), 0);
    fs->close(fs->ctx, fd);
    fs = recut(&p, &pl);
    assert_file(p.data, "x.tmp", NULL);
    /* rename without a directory fsync: lost; with it: kept */
    fd = xopen(fs, p.data, "x.tmp", O_RDWR | O_CREAT | O_TRUNC);
    assert_int_equal(mr_store__write_all(fs, fd, "v1", 2, 0), 0);
    assert_int_equal(fs->fsync(fs->ctx, fd), 0);
    fs->close(fs->ctx, fd);
    assert_int_equal(mr_store__sync_dir(fs, p.data), 0);
    assert_int_equal(fs->rename(fs->ctx, tmp, dst), 0);
    fs = recut(&p, &pl);
    assert_file(p.data, "x.tmp", "v1");
    assert_file(p.data, "x", NULL);
    assert_int_equal(fs->rename(fs->ctx, tmp, dst), 0);
    assert_int_equal(mr_store__sync_dir(fs, p.data), 0);
    fs = recut(&p, &pl);
    assert_file(p.data, "x.tmp", NULL);
    assert_file(p.data, "x", "v1");
    /* a file opened, renamed, then fsynced through its old fd: the data
     * belongs to the inode, under its new name */
    fd = xopen(fs, p.data, "x.tmp", O_RDWR | O_CREAT | O_TRUNC);
    assert_int_equal(mr_store__write_all(fs, fd, "v2", 2, 0), 0);
    assert_int_equal(fs->rename(fs->ctx, tmp, other), 0);
    assert_int_equal(mr_store__sync_dir(fs, p.data), 0);
    assert_int_equal(fs->fdatasync(fs->ctx, fd), 0);
    fs->close(fs->ctx, fd);
    fs = recut(&p, &pl);
    assert_file(p.data, "y", "v2");
    assert_file(p.data, "x", "v1");
    /* unlink without a directory fsync: the file comes back */
    assert_int_equal(fs->unlink(fs->ctx, dst), 0);
    fs = recut(&p, &pl);
    assert_file(p.data, "x", "v1");
    assert_int_equal(fs->unlink(fs->ctx, dst), 0);
    assert_int_equal(mr_store__sync_dir(fs, p.data), 0);
    /* a subdirectory exists after a cut only if its parent was synced */
    {
        char sub[300];
        snprintf(sub, sizeof sub, "%s/sub", p.data);
        assert_int_equal(mkdir(sub, 0755), 0);
        fs = recut(&p, &pl);
        assert_int_equal(access(sub, F_OK), -1);
        assert_int_equal(mkdir(sub, 0755), 0);
        assert_int_equal(mr_store__sync_dir(fs, p.data), 0);
        fs = recut(&p, &pl);
        assert_int_equal(access(sub, F_OK), 0);
    }
    assert_file(p.data, "x", NULL);
    mr_store_powerloss_close(pl);
    /* the CLI does the same */
    {
        char a0[] = "powercut", a3[] = "/nonexistent/mr-img";
        char *argv[] = {a0, p.data, p.img, NULL};
        FILE *out = fopen("/dev/null", "w"), *err = fopen("/dev/null", "w");
        assert_int_equal(mr_store_tool_main(3, argv, out, err), 0);
        argv[2] = a3;
        assert_int_equal(mr_store_tool_main(3, argv, out, err), 1);
        fclose(out);
        fclose(err);
    }
    assert_file(p.data, "y", "v2");
}

static int pl_store(const struct plfx *p, uint32_t seg, struct mr_store_powerloss **pl,
                    struct cutter *c, struct mr_store **st,
                    struct mr_store_recovered *rec)
{
    char errmsg[MR_ERRMSG_SIZE];
    assert_int_equal(mr_store_powerloss_open(p->data, p->img, pl, errmsg), 0);
    cutter_init(c, mr_store_powerloss_fs(*pl));
    return open_store(p->data, seg, &c->fs, st, rec, errmsg);
}

static void test_powerloss_store_keeps_acknowledged_records_and_hard_state(void **state)
{
    struct fx *f = *state;
    struct plfx p;
    struct mr_store_powerloss *pl;
    struct mr_store *st;
    struct mr_store_recovered rec;
    struct mr_store_progress pr;
    struct cutter c;
    char errmsg[MR_ERRMSG_SIZE];
    uint64_t seq;
    size_t k;

    plfx_init(&p, f->dir);
    assert_int_equal(pl_store(&p, 4096, &pl, &c, &st, &rec), 0);
    mr_store_recovered_release(&rec);
    assert_int_equal(mr_store_save_hard_state(st, 3, 2, &seq), 0);
    seq = append_range(st, 1, 40, 3, 300, 3, 1); /* several segments */
    /* the next batch is written but its fdatasync never happens */
    pthread_mutex_lock(&c.mu);
    c.cut_after = c.n + 1; /* the pwrite of the batch goes through */
    c.is_armed = 1;
    pthread_mutex_unlock(&c.mu);
    {
        struct mr_raft_entry e[2] = {{.term = 3,
                                      .index = 41,
                                      .type = MR_RAFT_ENTRY_NORMAL,
                                      .data = payload(41, 3, 300)},
                                     {.term = 3,
                                      .index = 42,
                                      .type = MR_RAFT_ENTRY_NORMAL,
                                      .data = payload(42, 3, 300)}};
        assert_int_equal(mr_store_append(st, e, 2, &seq), 0);
        mr_rcbuf_unref(e[0].data);
        mr_rcbuf_unref(e[1].data);
    }
    wait_seq(st, seq);
    assert_int_equal(mr_store_poll(st, &pr), -EIO);
    assert_int_equal(pr.persisted_index, 40);
    mr_store_close(st);
    mr_store_powerloss_close(pl);
    cutter_destroy(&c);
    /* a kill -9 would still find 41 and 42 in the page cache */
    assert_int_equal(open_ro(p.data, &st, &rec, errmsg), 0);
    assert_int_equal(rec.last_index, 42);
    mr_store_recovered_release(&rec);
    mr_store_close(st);
    cut(&p);
    assert_int_equal(open_store(p.data, 4096, NULL, &st, &rec, errmsg), 0);
    assert_int_equal(rec.term, 3);
    assert_int_equal(rec.vote, 2);
    assert_int_equal(rec.last_index, 40);
    assert_int_equal(rec.n_entries, 40);
    for (k = 0; k < rec.n_entries; k++) check_entry(&rec.entries[k], k + 1, 3, 300);
    mr_store_recovered_release(&rec);
    mr_store_close(st);
}

static int count_snaps(const char *data)
{
    char path[256];
    DIR *d;
    struct dirent *de;
    int n = 0;
    snprintf(path, sizeof path, "%s/snap", data);
    d = opendir(path);
    assert_non_null(d);
    while ((de = readdir(d)) != NULL) n += strstr(de->d_name, ".snap") != NULL;
    closedir(d);
    return n;
}

static void test_powerloss_snapshot_is_durable_and_older_ones_stay_deleted(void **state)
{
    struct fx *f = *state;
    struct plfx p;
    struct mr_store_powerloss *pl;
    struct mr_store *st;
    struct mr_store_recovered rec;
    struct mr_store_snap_writer *w;
    struct cutter c;
    char errmsg[MR_ERRMSG_SIZE];
    pid_t pid;
    int status;

    plfx_init(&p, f->dir);
    assert_int_equal(pl_store(&p, 0, &pl, &c, &st, &rec), 0);
    mr_store_recovered_release(&rec);
    assert_int_equal(mr_store_snapshot_write(st, 5, 1, "c1", 2, "five", 4, errmsg), 0);
    /* the payload of the second one comes from a forked child, around the seam */
    assert_int_equal(mr_store_snap_writer_begin(st, 9, 2, "c2", 2, &w, errmsg), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = mr_store_snap_writer_fd(w), i;
        for (i = 0; i < 100; i++)
            if (write(fd, "0123456789", 10) != 10) _exit(1);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(mr_store_snap_writer_finish(w, errmsg), 0);
    assert_int_equal(count_snaps(p.data), 1);
    mr_store_close(st);
    mr_store_powerloss_close(pl);
    cutter_destroy(&c);
    cut(&p);
    /* the deletion of the older snapshot was made durable too */
    assert_int_equal(count_snaps(p.data), 1);
    assert_int_equal(open_store(p.data, 0, NULL, &st, &rec, errmsg), 0);
    assert_true(rec.has_snapshot);
    assert_int_equal(rec.snap_index, 9);
    assert_int_equal(rec.snap_term, 2);
    assert_int_equal(rec.snap_size, 1000);
    mr_store_recovered_release(&rec);
    mr_store_close(st);
}

/* Segments removed by compaction stay removed after a power cut: the
 * unlinks are made durable with an fsync of wal/ (they used to come back). */
static void test_powerloss_compacted_segments_stay_deleted(void **state)
{
    struct fx *f = *state;
    struct plfx p;
    struct mr_store_powerloss *pl;
    struct mr_store *st;
    struct mr_store_recovered rec;
    struct cutter c;
    char errmsg[MR_ERRMSG_SIZE], wal[300];
    uint64_t seq;
    size_t before, after;

    plfx_init(&p, f->dir);
    snprintf(wal, sizeof wal, "%s/wal", p.data);
    assert_int_equal(pl_store(&p, 4096, &pl, &c, &st, &rec), 0);
    mr_store_recovered_release(&rec);
    wait_seq(st, append_range(st, 1, 200, 1, 100, 10, 0));
    before = count_files(wal, ".seg");
    assert_true(before >= 4);
    assert_int_equal(mr_store_snapshot_write(st, 150, 1, "conf", 4, "state", 5, errmsg),
                     0);
    assert_int_equal(mr_store_compact(st, 150, &seq), 0);
    wait_seq(st, seq);
    after = count_files(wal, ".seg");
    assert_true(after < before);
    mr_store_close(st);
    mr_store_powerloss_close(pl);
    cutter_destroy(&c);
    cut(&p);
    assert_int_equal(count_files(wal, ".seg"), after);
    assert_int_equal(open_store(p.data, 4096, NULL, &st, &rec, errmsg), 0);
    assert_int_equal(rec.snap_index, 150);
    assert_int_equal(rec.last_index, 200);
    mr_store_recovered_release(&rec);
    mr_store_close(st);
}

/* What the scenario below got acknowledged. */
struct acked {
    mr_index last;      /* every entry up to here was acknowledged */
    mr_term terms[128]; /* term of each acknowledged entry */
    mr_term term;       /* acknowledged hard state */
    mr_node_id vote;
    mr_index snap_index; /* newest snapshot that was published */
};

static int sc_wait(struct mr_store *st, uint64_t seq, struct acked *a, mr_term term,
                   mr_index from, mr_index to)
{
    struct mr_store_progress pr;
    wait_seq(st, seq);
    if (mr_store_poll(st, &pr) != 0 || pr.done_seq < seq) return -1;
    for (mr_index i = from; i <= to; i++) a->terms[i] = term;
    if (to > a->last && from <= a->last + 1) a->last = to;
    return 0;
}

static int sc_append(struct mr_store *st, mr_index from, mr_index to, mr_term term,
                     uint64_t *seq)
{
    for (mr_index i = from; i <= to; i++) {
        struct mr_raft_entry e = {.term = term,
                                  .index = i,
                                  .type = MR_RAFT_ENTRY_NORMAL,
                                  .data = payload(i, term, 200)};
        int rv = mr_store_append(st, &e, 1, seq);
        mr_rcbuf_unref(e.data);
        if (rv != 0) return rv;
    }
    return 0;
}

/* A store's life: terms and votes, appends over several segments, a
 * conflicting suffix replaced, snapshots and compactions. Stops at the first
 * error (the power went off). */
static void scenario(struct mr_store *st, struct acked *a)
{
    char errmsg[MR_ERRMSG_SIZE];
    uint64_t seq;
    if (mr_store_save_hard_state(st, 1, 1, &seq) != 0 || sc_wait(st, seq, a, 0, 1, 0))
        return;
    a->term = 1;
    a->vote = 1;
    if (sc_append(st, 1, 10, 1, &seq) || sc_wait(st, seq, a, 1, 1, 10)) return;
    /* hard state and the entries of its term in one batch (raft.h rule 1) */
    if (mr_store_save_hard_state(st, 2, 3, &seq) || sc_append(st, 11, 20, 2, &seq) ||
        sc_wait(st, seq, a, 2, 11, 20))
        return;
    a->term = 2;
    a->vote = 3;
    if (mr_store_save_hard_state(st, 3, 0, &seq)) return;
    if (a->last > 14) a->last = 14; /* superseded by the truncation */
    if (mr_store_truncate(st, 15, &seq) || sc_append(st, 15, 25, 3, &seq) ||
        sc_wait(st, seq, a, 3, 15, 25))
        return;
    a->term = 3;
    a->vote = 0;
    if (mr_store_snapshot_write(st, 12, 2, "c", 1, "s12", 3, errmsg)) return;
    a->snap_index = 12;
    if (mr_store_compact(st, 12, &seq) || sc_wait(st, seq, a, 0, 1, 0)) return;
    if (sc_append(st, 26, 60, 3, &seq) || sc_wait(st, seq, a, 3, 26, 60)) return;
    if (mr_store_snapshot_write(st, 40, 3, "c", 1, "s40", 3, errmsg)) return;
    a->snap_index = 40;
    if (mr_store_compact(st, 40, &seq) || sc_wait(st, seq, a, 0, 1, 0)) return;
    if (mr_store_save_hard_state(st, 4, 2, &seq) || sc_append(st, 61, 70, 4, &seq) ||
        sc_wait(st, seq, a, 4, 61, 70))
        return;
    a->term = 4;
    a->vote = 2;
}

/* After a cut: the store opens, and everything acknowledged is there. */
static void check_after_cut(const struct plfx *p, const struct acked *a, unsigned long at)
{
    struct mr_store *st;
    struct mr_store_recovered rec;
    char errmsg[MR_ERRMSG_SIZE];
    size_t k;
    int rv = open_store(p->data, 4096, NULL, &st, &rec, errmsg);
    if (rv != 0) fprintf(stderr, "cut after call %lu: open: %s\n", at, errmsg);
    assert_int_equal(rv, 0);
    if (rec.term < a->term || (rec.term == a->term && rec.vote != a->vote) ||
        rec.last_term > rec.term || rec.last_index < a->last ||
        rec.snap_index < a->snap_index)
        fprintf(stderr,
                "cut after call %lu: term %" PRIu64 " vote %" PRIu64 " last %" PRIu64
                " (term %" PRIu64 ") snap %" PRIu64 "; acknowledged term %" PRIu64
                " vote %" PRIu64 " last %" PRIu64 " snap %" PRIu64 "\n",
                at, rec.term, rec.vote, rec.last_index, rec.last_term, rec.snap_index,
                a->term, a->vote, a->last, a->snap_index);
    assert_true(rec.term >= a->term);
    if (rec.term == a->term) assert_int_equal(rec.vote, a->vote);
    /* never entries of a term that is not durable (raft.h rule 1) */
    assert_true(rec.last_term <= rec.term);
    assert_true(rec.last_index >= a->last);
    assert_true(rec.snap_index >= a->snap_index);
    for (k = 0; k < rec.n_entries; k++) {
        const struct mr_raft_entry *e = &rec.entries[k];
        assert_int_equal(e->index, rec.first_index + k);
        if (e->index <= a->last) check_entry(e, e->index, a->terms[e->index], 200);
    }
    mr_store_recovered_release(&rec);
    mr_store_close(st);
}

static void test_powerloss_cut_after_any_call_keeps_every_acknowledged_write(void **state)
{
    struct fx *f = *state;
    struct plfx p;
    unsigned long total, at;

    /* count the calls of a full run */
    {
        struct mr_store_powerloss *pl;
        struct mr_store *st;
        struct mr_store_recovered rec;
        struct cutter c;
        struct acked a;
        memset(&a, 0, sizeof a);
        plfx_init(&p, f->dir);
        assert_int_equal(pl_store(&p, 4096, &pl, &c, &st, &rec), 0);
        mr_store_recovered_release(&rec);
        scenario(st, &a);
        assert_int_equal(a.last, 70);
        assert_int_equal(a.term, 4);
        mr_store_close(st);
        total = c.n;
        mr_store_powerloss_close(pl);
        cutter_destroy(&c);
        cut(&p);
        check_after_cut(&p, &a, total);
    }
    assert_true(total > 50);
    for (at = 0; at <= total; at++) {
        struct mr_store_powerloss *pl;
        struct mr_store *st = NULL;
        struct mr_store_recovered rec;
        struct cutter c;
        struct acked a;
        char errmsg[MR_ERRMSG_SIZE];
        memset(&a, 0, sizeof a);
        plfx_init(&p, f->dir);
        assert_int_equal(mr_store_powerloss_open(p.data, p.img, &pl, errmsg), 0);
        cutter_init(&c, mr_store_powerloss_fs(pl));
        c.cut_after = at; /* 0: the power is off from the start */
        c.is_armed = 1;
        if (open_store(p.data, 4096, &c.fs, &st, &rec, errmsg) == 0) {
            mr_store_recovered_release(&rec);
            scenario(st, &a);
            mr_store_close(st);
        }
        mr_store_powerloss_close(pl);
        cutter_destroy(&c);
        cut(&p);
        check_after_cut(&p, &a, at);
    }
}

/* A hard state and entries of its term queued together land in one batch
 * (the writer is held on the batch before); a cut at any call of that batch
 * never leaves the entries durable without their term. */
static void test_powerloss_hard_state_is_durable_before_entries_of_its_term(void **state)
{
    struct fx *f = *state;
    struct plfx p;
    unsigned long gate = 0, total = 0, at;

    for (at = 0;; at++) {
        struct mr_store_powerloss *pl;
        struct mr_store *st;
        struct mr_store_recovered rec;
        struct cutter c;
        struct acked a;
        uint64_t seq;
        if (at > 0 && gate + at > total) break;
        memset(&a, 0, sizeof a);
        plfx_init(&p, f->dir);
        assert_int_equal(pl_store(&p, 0, &pl, &c, &st, &rec), 0);
        mr_store_recovered_release(&rec);
        assert_int_equal(mr_store_save_hard_state(st, 1, 1, &seq), 0);
        assert_int_equal(sc_append(st, 1, 3, 1, &seq), 0);
        assert_int_equal(sc_wait(st, seq, &a, 1, 1, 3), 0);
        a.term = 1;
        a.vote = 1;
        pthread_mutex_lock(&c.mu);
        c.gate_at = c.n + 1;
        c.cut_after = gate + at;
        c.is_armed = at > 0;
        pthread_mutex_unlock(&c.mu);
        assert_int_equal(sc_append(st, 4, 4, 1, &seq), 0);
        gate_wait(&c); /* the writer holds entry 4's batch */
        assert_int_equal(mr_store_save_hard_state(st, 2, 2, &seq), 0);
        assert_int_equal(sc_append(st, 5, 6, 2, &seq), 0);
        gate_release(&c);
        if (sc_wait(st, seq, &a, 2, 4, 6) == 0) {
            a.terms[4] = 1;
            a.term = 2;
            a.vote = 2;
        }
        mr_store_close(st);
        if (at == 0) {
            gate = c.gate_at - 1;
            total = c.n;
        }
        mr_store_powerloss_close(pl);
        cutter_destroy(&c);
        cut(&p);
        check_after_cut(&p, &a, at == 0 ? total : gate + at);
    }
    assert_true(total > gate + 3);
}

/* A WAL whose entry at the snapshot's index has another term is a history
 * the snapshot replaced: recovery drops it instead of letting terms go
 * backwards after the snapshot. */
static void
test_store_recovery_drops_a_wal_suffix_that_contradicts_the_snapshot(void **state)
{
    struct fx *f = *state;
    struct mr_store *st;
    struct mr_store_recovered rec;
    char errmsg[MR_ERRMSG_SIZE];

    assert_int_equal(open_store(f->dir, 0, NULL, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    append_range(st, 1, 6, 1, 50, 6, 1);
    /* a snapshot of another history at index 4 (installed from a leader),
     * and the crash came before the log was reset */
    assert_int_equal(mr_store_snapshot_write(st, 4, 2, "c", 1, "s", 1, errmsg), 0);
    mr_store_close(st);
    /* read-only: reported, left in place */
    assert_int_equal(open_ro(f->dir, &st, &rec, errmsg), 0);
    assert_int_equal(rec.last_index, 4);
    assert_int_equal(rec.last_term, 2);
    assert_int_equal(rec.n_entries, 0);
    assert_non_null(strstr(rec.note, "contradicts the snapshot"));
    mr_store_recovered_release(&rec);
    mr_store_close(st);
    assert_int_equal(open_store(f->dir, 0, NULL, &st, &rec, errmsg), 0);
    assert_int_equal(rec.snap_index, 4);
    assert_int_equal(rec.last_index, 4);
    assert_int_equal(rec.last_term, 2);
    assert_int_equal(rec.n_entries, 0);
    assert_non_null(strstr(rec.note, "contradicts the snapshot"));
    mr_store_recovered_release(&rec);
    /* the log goes on after the snapshot */
    append_range(st, 5, 7, 2, 50, 3, 1);
    mr_store_close(st);
    assert_int_equal(open_store(f->dir, 0, NULL, &st, &rec, errmsg), 0);
    assert_int_equal(rec.note[0], '\0');
    assert_int_equal(rec.last_index, 7);
    assert_int_equal(rec.n_entries, 3);
    check_entry(&rec.entries[0], 5, 2, 50);
    mr_store_recovered_release(&rec);
    mr_store_close(st);
    /* a WAL that agrees with the snapshot is kept */
    wipe_dir(f->dir);
    assert_int_equal(open_store(f->dir, 0, NULL, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    append_range(st, 1, 6, 1, 50, 6, 1);
    assert_int_equal(mr_store_snapshot_write(st, 4, 1, "c", 1, "s", 1, errmsg), 0);
    mr_store_close(st);
    assert_int_equal(open_store(f->dir, 0, NULL, &st, &rec, errmsg), 0);
    assert_int_equal(rec.last_index, 6);
    assert_int_equal(rec.n_entries, 2);
    assert_int_equal(rec.note[0], '\0');
    mr_store_recovered_release(&rec);
    mr_store_close(st);
}

/* ---- backups and forced recovery ------------------------------------------------ */

static struct mr_rcbuf *conf_of(mr_node_id a, mr_node_id b)
{
    struct mr_raft_config c;
    struct mr_rcbuf *out;
    mr_raft_config_init(&c);
    assert_int_equal(mr_raft_config_add(&c, a, MR_RAFT_VOTER, "name=a"), 0);
    if (b != 0) assert_int_equal(mr_raft_config_add(&c, b, MR_RAFT_VOTER, "name=b"), 0);
    out = mr_raft_config_encode(&c);
    mr_raft_config_close(&c);
    assert_non_null(out);
    return out;
}

/* A store in dir/src with a snapshot at (40, 3) whose payload is 300 KiB,
 * written to dir/backup.mrb; returns that path in `path`. */
static void make_backup(const char *dir, char *path, size_t cap, uint32_t *crc)
{
    char src[128], errmsg[MR_ERRMSG_SIZE];
    struct mr_store *st;
    struct mr_store_recovered rec;
    struct mr_store_snap_reader *r;
    struct mr_rcbuf *conf = conf_of(1, 2);
    unsigned char *payload_buf = malloc(300 * 1024), *b;
    size_t len, k;
    FILE *fp;
    for (k = 0; k < 300 * 1024; k++) payload_buf[k] = (unsigned char)(k * 7 + 1);
    snprintf(src, sizeof src, "%s/src", dir);
    assert_int_equal(open_store(src, 0, NULL, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    assert_int_equal(mr_store_snapshot_write(st, 40, 3, conf->data, conf->len, payload_buf,
                                             300 * 1024, errmsg),
                     0);
    assert_int_equal(mr_store_snap_reader_open(st, &r, errmsg), 0);
    assert_int_equal(mr_store_backup_encode(r, "prod", "n2", 77, 1234, &b, &len, crc, errmsg),
                     0);
    mr_store_snap_reader_close(r);
    mr_store_close(st);
    snprintf(path, cap, "%s/backup.mrb", dir);
    fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(b, 1, len, fp), len);
    fclose(fp);
    mr_free(b);
    free(payload_buf);
    mr_rcbuf_unref(conf);
}

static void test_store_backup_streamed_in_pieces_equals_the_whole_file(void **state)
{
    struct fx *f = *state;
    static const size_t pieces[] = {1, 3, 63, 4099, 65536, 2, 300 * 1024};
    char path[128], src[160], errmsg[MR_ERRMSG_SIZE] = "";
    struct mr_store *st;
    struct mr_store_recovered rec;
    struct mr_store_snap_reader *r;
    struct mr_store_backup_stream bs;
    unsigned char *whole, *got;
    uint64_t size;
    uint32_t crc;
    unsigned k = 0;
    make_backup(f->dir, path, sizeof path, &crc);
    whole = slurp(path, &size);
    snprintf(src, sizeof src, "%s/src", f->dir);
    assert_int_equal(open_store(src, 0, NULL, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    assert_int_equal(mr_store_snap_reader_open(st, &r, errmsg), 0);
    mr_store_backup_stream_init(&bs, r, "prod", "n2", 77, 1234);
    assert_int_equal(bs.size, size);
    got = malloc((size_t)size);
    while (bs.pos < bs.size) {
        size_t n = pieces[k++ % (sizeof pieces / sizeof pieces[0])];
        uint64_t at = bs.pos;
        if (n > bs.size - bs.pos) n = (size_t)(bs.size - bs.pos);
        assert_int_equal(mr_store_backup_stream_read(&bs, got + at, n, errmsg), 0);
        assert_int_equal(bs.pos, at + n);
    }
    assert_memory_equal(got, whole, (size_t)size);
    assert_int_equal(bs.crc, crc);
    mr_store_snap_reader_close(r);
    mr_store_close(st);
    free(got);
    free(whole);
}

static void test_store_backup_round_trips_and_any_damage_is_refused(void **state)
{
    struct fx *f = *state;
    char path[128], bad[140], errmsg[MR_ERRMSG_SIZE] = "";
    struct mr_store_backup_info info;
    struct mr_rcbuf *conf = conf_of(1, 2);
    unsigned char *b;
    uint64_t size, off;
    uint32_t crc;
    make_backup(f->dir, path, sizeof path, &crc);
    assert_int_equal(mr_store_backup_check(path, &info, errmsg), 0);
    assert_int_equal(info.index, 40);
    assert_int_equal(info.term, 3);
    assert_int_equal(info.cluster_id, 77);
    assert_int_equal(info.created_ms, 1234);
    assert_int_equal(info.checksum, crc);
    assert_string_equal(info.cluster_name, "prod");
    assert_string_equal(info.node_name, "n2");
    assert_int_equal(info.payload_size, 300 * 1024);
    assert_int_equal(info.conf->len, conf->len);
    assert_memory_equal(info.conf->data, conf->data, conf->len);
    mr_store_backup_info_release(&info);
    mr_rcbuf_unref(conf);

    b = slurp(path, &size);
    snprintf(bad, sizeof bad, "%s/bad.mrb", f->dir);
    /* Every truncation, including losing only the checksum's last byte. */
    for (off = 0; off < size; off += (off < 200 || size - off < 200) ? 1 : 4099) {
        spit(bad, b, off);
        errmsg[0] = '\0';
        assert_int_equal(mr_store_backup_check(bad, &info, errmsg), MR_ECORRUPT);
        assert_non_null(strstr(errmsg, "bad.mrb"));
        assert_null(info.conf);
    }
    /* A flipped bit anywhere (header, names, snapshot header, payload, checksum). */
    for (off = 0; off < size; off += (off < 200 || size - off < 200) ? 1 : 4099) {
        b[off] ^= 0x10;
        spit(bad, b, size);
        errmsg[0] = '\0';
        assert_int_equal(mr_store_backup_check(bad, &info, errmsg), MR_ECORRUPT);
        b[off] ^= 0x10;
    }
    /* Trailing garbage. */
    {
        unsigned char *longer = malloc(size + 1);
        memcpy(longer, b, size);
        longer[size] = 0;
        spit(bad, longer, size + 1);
        assert_int_equal(mr_store_backup_check(bad, &info, errmsg), MR_ECORRUPT);
        free(longer);
    }
    mr_free(b);
}

static void test_store_backup_restore_seeds_only_an_empty_dir_with_the_new_membership(
    void **state)
{
    struct fx *f = *state;
    char path[128], dir[128], errmsg[MR_ERRMSG_SIZE] = "";
    struct mr_store_backup_info info;
    struct mr_store_recovered rec;
    struct mr_store_options o;
    struct mr_store *st;
    struct mr_store_snap_reader *r;
    struct mr_rcbuf *neu = conf_of(9, 0);
    uint32_t crc;
    FILE *fp;
    make_backup(f->dir, path, sizeof path, &crc);
    snprintf(dir, sizeof dir, "%s/dst", f->dir);
    assert_int_equal(mr_store_backup_restore(path, dir, 9, 99, neu->data, neu->len, &info,
                                             errmsg),
                     0);
    assert_int_equal(info.index, 40);
    mr_store_backup_info_release(&info);
    /* It opens as node 9 of cluster 99 only, with the snapshot and an empty log. */
    memset(&o, 0, sizeof o);
    o.data_dir = dir;
    o.node_id = 8;
    assert_int_equal(mr_store_open(&st, &o, &rec, errmsg), MR_ECONFIG);
    o.node_id = 9;
    o.cluster_id = 99;
    assert_int_equal(mr_store_open(&st, &o, &rec, errmsg), 0);
    assert_true(rec.has_snapshot);
    assert_int_equal(rec.snap_index, 40);
    assert_int_equal(rec.snap_term, 3);
    assert_int_equal(rec.term, 3);
    assert_int_equal(rec.log_start, 41);
    assert_int_equal(rec.n_entries, 0);
    assert_int_equal(rec.last_index, 40);
    assert_int_equal(rec.snap_conf->len, neu->len);
    assert_memory_equal(rec.snap_conf->data, neu->data, neu->len);
    assert_int_equal(mr_store_snap_reader_open(st, &r, errmsg), 0);
    assert_int_equal(mr_store_snap_reader_verify(r, errmsg), 0);
    assert_int_equal(mr_store_snap_reader_info(r)->size, 300 * 1024);
    mr_store_snap_reader_close(r);
    mr_store_recovered_release(&rec);
    mr_store_close(st);
    /* Never over existing data: not even an unrelated file. */
    assert_int_equal(mr_store_backup_restore(path, dir, 9, 99, neu->data, neu->len, &info,
                                             errmsg),
                     MR_EEXISTS);
    snprintf(dir, sizeof dir, "%s/other", f->dir);
    mkdir(dir, 0755);
    {
        char stray[160];
        snprintf(stray, sizeof stray, "%s/notes.txt", dir);
        fp = fopen(stray, "w");
        assert_non_null(fp);
        fclose(fp);
    }
    assert_int_equal(mr_store_backup_restore(path, dir, 9, 99, neu->data, neu->len, &info,
                                             errmsg),
                     MR_EEXISTS);
    /* A damaged backup leaves no directory behind. */
    {
        uint64_t size;
        unsigned char *b = slurp(path, &size);
        b[size / 2] ^= 1;
        spit(path, b, size);
        mr_free(b);
    }
    snprintf(dir, sizeof dir, "%s/dst2", f->dir);
    assert_int_equal(mr_store_backup_restore(path, dir, 9, 99, neu->data, neu->len, &info,
                                             errmsg),
                     MR_ECORRUPT);
    assert_int_not_equal(access(dir, F_OK), 0);
    mr_rcbuf_unref(neu);
}

static void test_store_force_new_cluster_appends_a_one_voter_config_in_a_new_term(
    void **state)
{
    struct fx *f = *state;
    char errmsg[MR_ERRMSG_SIZE] = "";
    struct mr_store_force_report rep;
    struct mr_store_recovered rec;
    struct mr_store *st;
    struct mr_raft_entry e;
    struct mr_raft_config c;
    struct mr_store_options o;
    struct mr_rcbuf *three;
    {
        struct mr_raft_config c3;
        mr_raft_config_init(&c3);
        assert_int_equal(mr_raft_config_add(&c3, 5, MR_RAFT_VOTER, "name=n5 raft=x:1"), 0);
        assert_int_equal(mr_raft_config_add(&c3, 6, MR_RAFT_VOTER, "name=n6"), 0);
        assert_int_equal(mr_raft_config_add(&c3, 7, MR_RAFT_LEARNER, "name=n7"), 0);
        three = mr_raft_config_encode(&c3);
        mr_raft_config_close(&c3);
    }
    /* No data dir at all: refused, nothing created. */
    assert_int_equal(mr_store_force_new_cluster(f->dir, &rep, errmsg), MR_ENOTFOUND);
    memset(&o, 0, sizeof o);
    o.data_dir = f->dir;
    o.node_id = 5;
    assert_int_equal(mr_store_open(&st, &o, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    /* the config at 1 (term 1), entries up to 30 in term 4, hard state term 6 */
    memset(&e, 0, sizeof e);
    e.index = 1;
    e.term = 1;
    e.type = MR_RAFT_ENTRY_CONFIG;
    e.data = three;
    assert_int_equal(mr_store_append(st, &e, 1, NULL), 0);
    append_range(st, 2, 30, 4, 100, 8, 0);
    wait_seq(st, 0);
    {
        uint64_t seq;
        assert_int_equal(mr_store_save_hard_state(st, 6, 6, &seq), 0);
        wait_seq(st, seq);
    }
    /* In use: refused. */
    assert_int_equal(mr_store_force_new_cluster(f->dir, &rep, errmsg), MR_EBUSY);
    mr_store_close(st);

    assert_int_equal(mr_store_force_new_cluster(f->dir, &rep, errmsg), 0);
    assert_int_equal(rep.node_id, 5);
    assert_int_equal(rep.old_config_index, 1);
    assert_int_equal(rep.old_voters, 2);
    assert_int_equal(rep.old_servers, 3);
    assert_int_equal(rep.last_index, 30);
    assert_int_equal(rep.config_index, 31);
    assert_int_equal(rep.new_term, 7);
    assert_string_equal(rep.self_context, "name=n5 raft=x:1");

    assert_int_equal(open_ro(f->dir, &st, &rec, errmsg), 0);
    assert_int_equal(rec.term, 7);
    assert_int_equal(rec.vote, 0);
    assert_int_equal(rec.last_index, 31);
    assert_int_equal(rec.last_term, 7);
    assert_int_equal(rec.n_entries, 31);
    check_entry(&rec.entries[29], 30, 4, 100); /* the old log is intact */
    assert_int_equal(rec.entries[30].type, MR_RAFT_ENTRY_CONFIG);
    mr_raft_config_init(&c);
    assert_int_equal(mr_raft_config_decode(rec.entries[30].data->data,
                                           rec.entries[30].data->len, &c, errmsg),
                     0);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.servers[0].id, 5);
    assert_int_equal(c.servers[0].role, MR_RAFT_VOTER);
    assert_string_equal(c.servers[0].context, "name=n5 raft=x:1");
    mr_raft_config_close(&c);
    mr_store_recovered_release(&rec);
    mr_store_close(st);

    /* A node missing from its own latest configuration is refused. */
    assert_int_equal(mr_store_force_new_cluster(f->dir, &rep, errmsg), 0); /* again: fine */
    wipe_dir(f->dir);
    o.node_id = 8;
    assert_int_equal(mr_store_open(&st, &o, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    e.index = 1;
    assert_int_equal(mr_store_append(st, &e, 1, NULL), 0);
    mr_store_close(st);
    errmsg[0] = '\0';
    assert_int_equal(mr_store_force_new_cluster(f->dir, &rep, errmsg), MR_ENOTFOUND);
    assert_non_null(strstr(errmsg, "not in its latest configuration"));
    mr_rcbuf_unref(three);
}

/* ---- reading entries back from the WAL ----------------------------------------- */

static uint8_t type_of(mr_index i)
{
    return (uint8_t)(MR_RAFT_ENTRY_NORMAL + i % 3);
}

/* Appends [from, to] with `term`, types by type_of(), a few entries per call;
 * does not wait. Returns the last seq. */
static uint64_t append_typed(struct mr_store *st, mr_index from, mr_index to,
                             mr_term term, size_t max)
{
    uint64_t seq = 0;
    mr_index i = from;
    while (i <= to) {
        struct mr_raft_entry e[5];
        size_t n = 0, k;
        for (; n < 5 && i <= to; n++, i++) {
            e[n].index = i;
            e[n].term = term;
            e[n].type = type_of(i);
            e[n].data = payload(i, term, max);
        }
        assert_int_equal(mr_store_append(st, e, n, &seq), 0);
        for (k = 0; k < n; k++) mr_rcbuf_unref(e[k].data);
    }
    return seq;
}

/* Reads `i` and checks it is the entry append_range/append_typed wrote. */
static void read_check(struct mr_store_wal_reader *r, mr_index i, mr_term term_arg,
                       mr_term t, size_t max, uint8_t type)
{
    struct mr_raft_entry e;
    char errmsg[MR_ERRMSG_SIZE] = "";
    int rv = mr_store_wal_reader_read(r, i, term_arg, &e, errmsg);
    if (rv != 0) fail_msg("read %" PRIu64 ": %s (%s)", i, mr_strerror(rv), errmsg);
    check_entry(&e, i, t, max);
    assert_int_equal(e.type, type);
    if (payload_len(i, t, max) == 0) assert_null(e.data);
    mr_rcbuf_unref(e.data);
}

/* Reads `i` expecting error `want`; errmsg must contain `needle` (if not
 * NULL) and *out must own nothing. */
static void read_fails(struct mr_store_wal_reader *r, mr_index i, mr_term term, int want,
                       const char *needle)
{
    struct mr_raft_entry e;
    char errmsg[MR_ERRMSG_SIZE] = "";
    int rv = mr_store_wal_reader_read(r, i, term, &e, errmsg);
    if (rv != want)
        fail_msg("read %" PRIu64 ": got %d (%s), want %d", i, rv, errmsg, want);
    if (needle != NULL && strstr(errmsg, needle) == NULL)
        fail_msg("read %" PRIu64 ": errmsg \"%s\" lacks \"%s\"", i, errmsg, needle);
    assert_null(e.data);
    assert_int_equal(e.index, 0);
    assert_int_equal(e.term, 0);
}

/* First indexes of the segments in dir/wal, sorted. */
static size_t list_segs(const char *dir, mr_index *firsts, size_t cap)
{
    char wal[256];
    DIR *d;
    struct dirent *de;
    size_t n = 0, i, j;
    snprintf(wal, sizeof wal, "%s/wal", dir);
    d = opendir(wal);
    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        mr_index first;
        if (!mr_store__seg_name_parse(de->d_name, &first)) continue;
        assert_true(n < cap);
        firsts[n++] = first;
    }
    closedir(d);
    for (i = 1; i < n; i++)
        for (j = i; j > 0 && firsts[j - 1] > firsts[j]; j--) {
            mr_index t = firsts[j];
            firsts[j] = firsts[j - 1];
            firsts[j - 1] = t;
        }
    return n;
}

static void
test_wal_reader_reads_back_every_entry_in_any_order_while_the_store_appends(void **state)
{
    struct fx *f = *state;
    struct mr_store *st;
    struct mr_store_recovered rec;
    struct mr_store_wal_reader *r;
    char errmsg[MR_ERRMSG_SIZE];
    mr_index order[300], segs[256], i;
    struct mr_rand rnd;
    uint64_t seq;
    size_t n_segs, k;

    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    /* payloads of 0..300 bytes (some empty), three entry types */
    wait_seq(st, append_typed(st, 1, 300, 1, 300));
    n_segs = list_segs(f->dir, segs, 256);
    assert_true(n_segs >= 8);
    assert_int_equal(mr_store_wal_reader_open(f->dir, &r, errmsg), 0);
    for (i = 1; i <= 300; i++) read_check(r, i, 1, 1, 300, type_of(i));

    /* random order, with and without the term, while the writer appends
     * more (in new segments and at the end of the newest one) */
    seq = append_typed(st, 301, 700, 2, 300);
    mr_rand_seed(&rnd, 42);
    for (k = 0; k < 300; k++) order[k] = k + 1;
    for (k = 299; k > 0; k--) {
        size_t j = (size_t)mr_rand_below(&rnd, k + 1);
        mr_index t = order[k];
        order[k] = order[j];
        order[j] = t;
    }
    for (k = 0; k < 300; k++)
        read_check(r, order[k], k % 2 ? 1 : 0, 1, 300, type_of(order[k]));
    /* every segment boundary, both ways */
    for (k = 1; k < n_segs; k++) {
        read_check(r, segs[k], 1, 1, 300, type_of(segs[k]));
        read_check(r, segs[k] - 1, 1, 1, 300, type_of(segs[k] - 1));
    }
    wait_seq(st, seq);
    for (i = 301; i <= 700; i++) read_check(r, i, 2, 2, 300, type_of(i));
    for (i = 700; i >= 1; i -= 7) read_check(r, i, 0, i > 300 ? 2 : 1, 300, type_of(i));

    /* payloads larger than a segment and than the reader's read window */
    wait_seq(st, append_typed(st, 701, 720, 3, 70000));
    for (i = 720; i >= 701; i--) read_check(r, i, 3, 3, 70000, type_of(i));
    for (i = 701; i <= 720; i++) read_check(r, i, 3, 3, 70000, type_of(i));
    read_check(r, 300, 1, 1, 300, type_of(300));
    mr_store_wal_reader_close(r);
    mr_store_close(st);
}

static void test_wal_reader_returns_the_new_entries_after_a_truncation(void **state)
{
    struct fx *f = *state;
    struct mr_store *st;
    struct mr_store_recovered rec;
    struct mr_store_wal_reader *r;
    char errmsg[MR_ERRMSG_SIZE], want[64];
    mr_index segs[64], i, cut, newest;
    size_t n_segs;

    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    /* empty payloads: 127 records a segment, so the reader keeps a mark in
     * the middle of one (every 64 records) */
    wait_seq(st, append_range(st, 1, 200, 1, 0, 5, 0));
    n_segs = list_segs(f->dir, segs, 64);
    cut = segs[n_segs - 1];
    assert_true(cut + 70 <= 200);
    assert_int_equal(mr_store_wal_reader_open(f->dir, &r, errmsg), 0);
    /* the reader learns offsets; its cursor ends past 200 */
    for (i = 1; i <= 200; i++) read_check(r, i, 1, 1, 0, MR_RAFT_ENTRY_NORMAL);

    /* a cut inside the newest segment, new records of other sizes after it:
     * the cursor's offset is wrong now */
    assert_int_equal(mr_store_truncate(st, cut + 2, NULL), 0);
    wait_seq(st, append_range(st, cut + 2, 280, 2, 40, 5, 0));
    read_check(r, 201, 2, 2, 40, MR_RAFT_ENTRY_NORMAL);
    for (i = cut + 2; i <= 280; i++) read_check(r, i, 2, 2, 40, MR_RAFT_ENTRY_NORMAL);
    for (i = 280; i >= cut - 10; i--)
        read_check(r, i, 0, i >= cut + 2 ? 2 : 1, i >= cut + 2 ? 40 : 0,
                   MR_RAFT_ENTRY_NORMAL);
    /* and again, with the cursor past a mark that turns wrong */
    read_check(r, cut + 66, 2, 2, 40, MR_RAFT_ENTRY_NORMAL);
    assert_int_equal(mr_store_truncate(st, cut + 4, NULL), 0);
    wait_seq(st, append_range(st, cut + 4, 280, 3, 8, 5, 0));
    read_check(r, cut + 65, 3, 3, 8, MR_RAFT_ENTRY_NORMAL);
    read_check(r, cut + 3, 2, 2, 40, MR_RAFT_ENTRY_NORMAL);
    for (i = cut + 4; i <= 280; i++) read_check(r, i, 3, 3, 8, MR_RAFT_ENTRY_NORMAL);
    read_fails(r, 270, 2 /* a replaced term */, MR_ECORRUPT, "has term 3, expected 2");
    read_fails(r, 281, 0, MR_ENOTFOUND, NULL);

    /* a cut at the first index of the newest segment (which the reader has
     * open): the file is unlinked and a new one takes its name */
    n_segs = list_segs(f->dir, segs, 64);
    newest = segs[n_segs - 1];
    assert_true(newest - 5 >= cut + 4);
    read_check(r, newest + 1, 3, 3, 8, MR_RAFT_ENTRY_NORMAL);
    assert_int_equal(mr_store_truncate(st, newest, NULL), 0);
    wait_seq(st, append_range(st, newest, newest + 60, 4, 70, 5, 0));
    read_check(r, newest + 2, 4, 4, 70, MR_RAFT_ENTRY_NORMAL);
    for (i = newest - 5; i <= newest + 60; i++)
        read_check(r, i, 0, i >= newest ? 4 : 3, i >= newest ? 70 : 8,
                   MR_RAFT_ENTRY_NORMAL);
    snprintf(want, sizeof want, "entry %" PRIu64 " has term 4, expected 3", newest);
    read_fails(r, newest, 3, MR_ECORRUPT, want);
    read_fails(r, newest + 61, 0, MR_ENOTFOUND, NULL);
    mr_store_wal_reader_close(r);
    mr_store_close(st);
}

static void
test_wal_reader_reports_compacted_entries_not_found_and_reads_the_rest(void **state)
{
    struct fx *f = *state;
    struct mr_store *st;
    struct mr_store_recovered rec;
    struct mr_store_wal_reader *r;
    char errmsg[MR_ERRMSG_SIZE];
    mr_index segs[64], first, i;
    uint64_t seq;
    size_t n_before, n_after;

    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    wait_seq(st, append_range(st, 1, 300, 1, 100, 10, 0));
    n_before = list_segs(f->dir, segs, 64);
    assert_int_equal(mr_store_wal_reader_open(f->dir, &r, errmsg), 0);
    /* the reader holds the oldest segment open, its cursor at 3 */
    read_check(r, 1, 1, 1, 100, MR_RAFT_ENTRY_NORMAL);
    read_check(r, 2, 1, 1, 100, MR_RAFT_ENTRY_NORMAL);

    assert_int_equal(mr_store_snapshot_write(st, 200, 1, "conf", 4, "state", 5, errmsg),
                     0);
    assert_int_equal(mr_store_compact(st, 200, &seq), 0);
    wait_seq(st, seq);
    n_after = list_segs(f->dir, segs, 64);
    assert_true(n_after < n_before);
    first = segs[0];
    assert_true(first > 3 && first <= 201);

    read_fails(r, 3, 1, MR_ENOTFOUND, "no segment holds entry 3"); /* at the cursor */
    read_fails(r, 1, 0, MR_ENOTFOUND, NULL);
    read_fails(r, first - 1, 0, MR_ENOTFOUND, NULL);
    for (i = first; i <= 300; i++) read_check(r, i, 1, 1, 100, MR_RAFT_ENTRY_NORMAL);
    /* a compaction while the reader holds a kept segment changes nothing */
    read_check(r, 250, 1, 1, 100, MR_RAFT_ENTRY_NORMAL);
    assert_int_equal(mr_store_snapshot_write(st, 240, 1, "conf", 4, "state", 5, errmsg),
                     0);
    assert_int_equal(mr_store_compact(st, 240, &seq), 0);
    wait_seq(st, seq);
    n_after = list_segs(f->dir, segs, 64);
    read_check(r, 251, 1, 1, 100, MR_RAFT_ENTRY_NORMAL);
    read_fails(r, segs[0] - 1, 0, MR_ENOTFOUND, NULL);
    read_check(r, segs[0], 1, 1, 100, MR_RAFT_ENTRY_NORMAL);
    mr_store_wal_reader_close(r);
    mr_store_close(st);
}

static void
test_wal_reader_reports_past_the_end_not_found_and_damage_corrupt(void **state)
{
    struct fx *f = *state;
    struct mr_store *st;
    struct mr_store_recovered rec;
    struct mr_store_wal_reader *r;
    char errmsg[MR_ERRMSG_SIZE], path[256], want[128], rel[64];
    mr_index segs[64], k = 0, j;
    struct recs rs;
    unsigned char b;
    size_t n_segs, x;
    int fd;

    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    wait_seq(st, append_range(st, 1, 100, 1, 100, 10, 0));
    assert_int_equal(mr_store_wal_reader_open(f->dir, &r, errmsg), 0);
    read_fails(r, 101, 0, MR_ENOTFOUND, "no segment holds entry 101");
    read_fails(r, 5000, 1, MR_ENOTFOUND, NULL);
    read_fails(r, 0, 0, MR_ENOTFOUND, NULL);
    read_check(r, 100, 1, 1, 100, MR_RAFT_ENTRY_NORMAL);
    read_fails(r, 101, 1, MR_ENOTFOUND, NULL); /* at the cursor */
    mr_store_close(st);

    /* a flipped payload byte in a record of the second segment */
    n_segs = list_segs(f->dir, segs, 64);
    assert_true(n_segs >= 3);
    scan_file(f->dir, segs[1], &rs);
    for (x = 1; x < rs.n; x++)
        if (rs.len[x] > 0) {
            k = segs[1] + x;
            break;
        }
    assert_true(k != 0);
    seg_abs(path, sizeof path, f->dir, segs[1]);
    seg_rel(rel, sizeof rel, segs[1]);
    fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &b, 1, (off_t)(rs.off[x] + 32 + rs.len[x] - 1)), 1);
    b ^= 0x10;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)(rs.off[x] + 32 + rs.len[x] - 1)), 1);
    snprintf(want, sizeof want, "%s offset %" PRIu64 ": checksum mismatch", rel,
             rs.off[x]);
    read_fails(r, k, 1, MR_ECORRUPT, want); /* found by a scan */
    read_check(r, k - 1, 1, 1, 100, MR_RAFT_ENTRY_NORMAL);
    read_fails(r, k, 0, MR_ECORRUPT, want);                /* at the cursor */
    read_check(r, k + 1, 1, 1, 100, MR_RAFT_ENTRY_NORMAL); /* the rest is fine */

    /* a record header before the target claiming a length past the end of
     * the file, then one with another index */
    j = segs[2] + 1;
    scan_file(f->dir, segs[2], &rs);
    assert_true(rs.n >= 4);
    seg_abs(path, sizeof path, f->dir, segs[2]);
    seg_rel(rel, sizeof rel, segs[2]);
    close(fd);
    fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    b = 0x7f;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)(rs.off[1] + 7)), 1);
    mr_store_wal_reader_close(r);
    assert_int_equal(mr_store_wal_reader_open(f->dir, &r, errmsg), 0);
    snprintf(want, sizeof want, "%s offset %" PRIu64 ": record length runs past", rel,
             rs.off[1]);
    read_fails(r, j + 2, 0, MR_ECORRUPT, want);
    read_check(r, j - 1, 1, 1, 100, MR_RAFT_ENTRY_NORMAL);
    b = 0;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)(rs.off[1] + 7)), 1);
    b = 0x55;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)(rs.off[1] + 16)), 1);
    snprintf(want, sizeof want, "%s offset %" PRIu64 ": record index", rel, rs.off[1]);
    mr_store_wal_reader_close(r);
    assert_int_equal(mr_store_wal_reader_open(f->dir, &r, errmsg), 0);
    read_fails(r, j + 2, 0, MR_ECORRUPT, want);
    close(fd);
    mr_store_wal_reader_close(r);
}

static void
test_wal_reader_counts_reads_and_opens_a_segment_once_while_reading_it_in_order(
    void **state)
{
    struct fx *f = *state;
    struct mr_store *st;
    struct mr_store_recovered rec;
    struct mr_store_wal_reader *r;
    char errmsg[MR_ERRMSG_SIZE];
    mr_index segs[64], i;
    uint64_t reads, opens;
    size_t n_segs;

    assert_int_equal(open_store(f->dir, 4096, NULL, &st, &rec, errmsg), 0);
    mr_store_recovered_release(&rec);
    wait_seq(st, append_range(st, 1, 100, 1, 100, 10, 0));
    n_segs = list_segs(f->dir, segs, 64);
    assert_true(n_segs >= 3);
    assert_int_equal(mr_store_wal_reader_open(f->dir, &r, errmsg), 0);
    mr_store_wal_reader_stats(r, &reads, &opens);
    assert_int_equal(reads, 0);
    assert_int_equal(opens, 0);
    for (i = 1; i < segs[1]; i++) read_check(r, i, 1, 1, 100, MR_RAFT_ENTRY_NORMAL);
    mr_store_wal_reader_stats(r, &reads, &opens);
    assert_int_equal(reads, segs[1] - 1);
    assert_int_equal(opens, 1);
    /* back and forth in one segment: still one open */
    read_check(r, 1, 1, 1, 100, MR_RAFT_ENTRY_NORMAL);
    read_check(r, segs[1] - 1, 1, 1, 100, MR_RAFT_ENTRY_NORMAL);
    mr_store_wal_reader_stats(r, &reads, &opens);
    assert_int_equal(reads, segs[1] + 1);
    assert_int_equal(opens, 1);
    /* the next segment, then back to the first */
    read_check(r, segs[1], 1, 1, 100, MR_RAFT_ENTRY_NORMAL);
    read_check(r, segs[1] + 1, 1, 1, 100, MR_RAFT_ENTRY_NORMAL);
    read_check(r, 2, 1, 1, 100, MR_RAFT_ENTRY_NORMAL);
    /* failures are not reads */
    read_fails(r, 101, 0, MR_ENOTFOUND, NULL);
    mr_store_wal_reader_stats(r, &reads, &opens);
    assert_int_equal(reads, segs[1] + 4);
    assert_int_equal(opens, 3 + 1 /* the newest, scanned for 101 */);
    mr_store_wal_reader_close(r);
    mr_store_close(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_store_fresh_dir_is_initialised_and_reopens_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_appends_survive_reopen_across_segments,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_store_inline_sync_runs_the_batch_on_the_caller_and_hands_a_full_disk_to_the_writer,
            setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_group_commit_syncs_once_per_batch,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_store_crash_at_every_byte_of_the_tail_keeps_complete_records, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_store_bit_flip_in_any_record_names_file_and_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_store_corruption_in_a_synced_group_before_the_tail_is_fatal, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_store_bit_flip_in_the_last_write_group_is_a_torn_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_store_gap_between_segments_and_missing_meta_are_fatal, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_store_torn_header_of_a_new_last_segment_is_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_store_open_survives_allocation_failure_at_every_step, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_truncate_replaces_a_conflicting_suffix,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_store_compaction_deletes_whole_segments_and_records_boundary, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_store_reset_after_installing_a_snapshot_starts_a_new_log, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_store_random_workloads_match_an_in_memory_model, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_store_meta_crash_at_any_step_keeps_old_or_new_value, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_store_hard_state_is_durable_when_its_seq_completes, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_store_disk_errors_fail_the_store_without_damage, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_store_snapshot_round_trip_in_chunks_and_older_ones_removed, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_store_snapshot_payload_can_come_from_a_forked_child, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_store_corrupt_snapshot_header_or_payload_is_detected, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_store_tool_verifies_and_dumps_with_exit_codes, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_store_recovery_drops_a_wal_suffix_that_contradicts_the_snapshot, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_store_enospc_mid_record_stalls_and_leaves_no_torn_record, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_store_full_disk_retries_until_space_returns_and_keeps_queue_order, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_store_compaction_runs_ahead_of_appends_stalled_on_a_full_disk, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_store_limit_layer_fills_and_frees_the_disk_at_runtime, setup, teardown),
        cmocka_unit_test_setup_teardown(test_powerloss_keeps_only_synced_data_of_a_file,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_powerloss_directory_changes_need_a_directory_fsync, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_powerloss_store_keeps_acknowledged_records_and_hard_state, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_powerloss_snapshot_is_durable_and_older_ones_stay_deleted, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_powerloss_compacted_segments_stay_deleted,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_powerloss_cut_after_any_call_keeps_every_acknowledged_write, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_powerloss_hard_state_is_durable_before_entries_of_its_term, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_store_a_directory_in_use_is_refused_to_a_second_writer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_backup_round_trips_and_any_damage_is_refused,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_store_backup_streamed_in_pieces_equals_the_whole_file, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_store_backup_restore_seeds_only_an_empty_dir_with_the_new_membership, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_store_force_new_cluster_appends_a_one_voter_config_in_a_new_term, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_wal_reader_reads_back_every_entry_in_any_order_while_the_store_appends,
            setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_wal_reader_returns_the_new_entries_after_a_truncation, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_wal_reader_reports_compacted_entries_not_found_and_reads_the_rest, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_wal_reader_reports_past_the_end_not_found_and_damage_corrupt, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_wal_reader_counts_reads_and_opens_a_segment_once_while_reading_it_in_order,
            setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
