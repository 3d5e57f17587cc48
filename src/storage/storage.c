/* storage: opening, the ordered write queue and the writer thread.
 *
 * Group commit: the writer thread takes everything queued at once, encodes
 * the records of consecutive appends into one buffer written with one
 * pwrite, and calls fdatasync once for the whole batch. Whatever arrives
 * while it writes or syncs waits for the next batch. A truncation, compaction
 * or reset in the middle of a batch flushes the buffer first and makes its
 * own change durable before any later record is written, so the on-disk log
 * is always a prefix of the queued history. A hard state queued before an
 * append or truncation in the same batch is written to meta (synced) before
 * that op's records; other meta changes (ids, log start) go after the WAL
 * sync at the end of the batch.
 *
 * A write or sync error fails the store for good: fsync errors are not
 * retried (after a failed fsync the kernel may have dropped the dirty pages,
 * so a second fsync "succeeding" would prove nothing).
 *
 * Except a full disk (ENOSPC, EDQUOT): the batch that hit it goes back to the
 * head of the queue, untouched, and the writer rolls its view back to what
 * the disk holds (reload_wal: the newest segment is re-read and cut right
 * after its last valid record, so a torn record of the failed write never
 * stays behind a later one; segments created by the failed batch that hold
 * no record are removed). It then retries the whole batch after 1 s, 2 s, 4 s,
 * 8 s, 8 s ... (or at once when a compaction is queued: compactions run
 * ahead of the stalled batch, since they only remove entries a durable
 * snapshot covers, and they are what frees space). A retry rewrites every
 * record since the last successful sync, so the "dropped dirty pages" of a
 * failed fsync are written again before the next fsync is trusted. An append
 * whose first index is already in the reloaded log (its records got in before
 * the failure) truncates there first. Nothing of the stalled batch is
 * reported durable until a retry succeeds. */
#include "storage/storage_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

enum { OP_APPEND, OP_TRUNCATE, OP_HARD_STATE, OP_IDS, OP_COMPACT, OP_RESET };

struct op {
    struct mr_queue link;
    int kind;
    uint64_t seq;
    uint64_t a, b;
    size_t n;
    struct mr_raft_entry entries[];
};

#define FLUSH_BYTES (4u * 1024u * 1024u) /* write out the buffer beyond this */

static void op_free(struct op *op)
{
    size_t i;
    for (i = 0; i < op->n; i++) mr_rcbuf_unref(op->entries[i].data);
    mr_free(op);
}

static void ops_free(struct mr_queue *q)
{
    while (!mr_queue_empty(q)) {
        struct mr_queue *it = q->next;
        mr_queue_remove(it);
        op_free(MR_CONTAINER_OF(it, struct op, link));
    }
}

/* ---- writer thread: WAL operations ------------------------------------------ */

static char *seg_path(struct mr_store *st, mr_index first)
{
    char name[SEG_NAME_LEN + 1];
    mr_store__seg_name(name, first);
    return mr_store__join(st->wal_dir, name);
}

static int is_nospace(int rv)
{
    return rv == -ENOSPC || rv == -EDQUOT;
}

#define RETRY_MIN_MS 1000u /* first retry after a full disk */
#define RETRY_MAX_MS 8000u /* backoff cap */

static int fail_io(char *errmsg, const char *what, mr_index first, int rv)
{
    char name[SEG_NAME_LEN + 1];
    mr_store__seg_name(name, first);
    mr_errmsg_printf(errmsg, "wal/%s: %s: %s", name, what, mr_strerror(rv));
    return rv;
}

static struct mr_store_seg *cur_seg(struct mr_store *st)
{
    return st->n_segs > 0 ? &st->segs[st->n_segs - 1] : NULL;
}

static int wal_flush(struct mr_store *st, char *errmsg)
{
    struct mr_store_seg *sg = cur_seg(st);
    int rv;
    if (st->wlen == 0) return 0;
    MR_ASSERT(sg != NULL && st->cur_fd >= 0);
    rv = mr_store__write_all(st->fs, st->cur_fd, st->wbuf, st->wlen, (off_t)sg->end);
    if (rv != 0) return fail_io(errmsg, "write", sg->first, rv);
    sg->end += st->wlen;
    st->wlen = 0;
    return 0;
}

static int wal_sync(struct mr_store *st, char *errmsg)
{
    int rv;
    if (!st->is_group_open) return 0;
    MR_ASSERT(st->cur_fd >= 0);
    rv = st->fs->fdatasync(st->fs->ctx, st->cur_fd);
    if (rv != 0) return fail_io(errmsg, "fdatasync", cur_seg(st)->first, rv);
    st->is_group_open = 0;
    return 0;
}

static void close_cur(struct mr_store *st)
{
    if (st->cur_fd >= 0) st->fs->close(st->fs->ctx, st->cur_fd);
    st->cur_fd = -1;
    st->is_group_open = 0;
}

static int segs_reserve(struct mr_store *st)
{
    if (st->n_segs == st->cap_segs) {
        size_t nc = st->cap_segs ? st->cap_segs * 2 : 8;
        struct mr_store_seg *p = mr_realloc(st->segs, nc * sizeof *p);
        if (p == NULL) return MR_ENOMEM;
        st->segs = p;
        st->cap_segs = nc;
    }
    return 0;
}

/* A new segment, preallocated, its header and directory entry durable before
 * any record goes in, so only the newest segment can ever be torn. */
static int wal_create_segment(struct mr_store *st, mr_index first, uint64_t need,
                              char *errmsg)
{
    unsigned char hdr[MR_STORE_SEGMENT_HEADER];
    uint64_t alloc = st->seg_size;
    struct mr_store_seg *sg;
    char *path;
    int fd, rv;
    if (alloc < MR_STORE_SEGMENT_HEADER + need)
        alloc = (MR_STORE_SEGMENT_HEADER + need + 4095) & ~(uint64_t)4095;
    rv = segs_reserve(st);
    if (rv != 0) return fail_io(errmsg, "create", first, rv);
    path = seg_path(st, first);
    if (path == NULL) return fail_io(errmsg, "create", first, MR_ENOMEM);
    fd = st->fs->open(st->fs->ctx, path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    mr_free(path);
    if (fd < 0) return fail_io(errmsg, "create", first, fd);
    rv = st->fs->fallocate(st->fs->ctx, fd, 0, (off_t)alloc);
    if (rv != 0) {
        fail_io(errmsg, "preallocate", first, rv);
        goto err;
    }
    mr_store__seg_header_encode(hdr, first);
    rv = mr_store__write_all(st->fs, fd, hdr, sizeof hdr, 0);
    if (rv != 0) {
        fail_io(errmsg, "write header", first, rv);
        goto err;
    }
    rv = st->fs->fsync(st->fs->ctx, fd);
    if (rv != 0) {
        fail_io(errmsg, "fsync", first, rv);
        goto err;
    }
    rv = mr_store__sync_dir(st->fs, st->wal_dir);
    if (rv != 0) {
        mr_errmsg_printf(errmsg, "wal: fsync dir: %s", mr_strerror(rv));
        goto err;
    }
    sg = &st->segs[st->n_segs++];
    sg->first = first;
    sg->last = first - 1;
    sg->last_term = 0;
    sg->end = MR_STORE_SEGMENT_HEADER;
    sg->size = alloc;
    sg->n_records = 0;
    st->cur_fd = fd;
    st->is_group_open = 0;
    return 0;
err:
    st->fs->close(st->fs->ctx, fd);
    /* never listed in segs: a leftover would hold space (and a header
     * recovery would have to skip) */
    path = seg_path(st, first);
    if (path != NULL) st->fs->unlink(st->fs->ctx, path);
    mr_free(path);
    return rv;
}

static int wal_add(struct mr_store *st, const struct mr_raft_entry *e, char *errmsg)
{
    uint32_t len = e->data != NULL ? (uint32_t)e->data->len : 0;
    uint64_t need = MR_STORE_RECORD_HEADER + pad8(len);
    struct mr_store_seg *sg;
    int rv;
    if (st->cur_fd < 0) {
        rv = wal_create_segment(st, e->index, need, errmsg);
        if (rv != 0) return rv;
    } else {
        sg = cur_seg(st);
        if (sg->end + st->wlen + need > sg->size) {
            if (sg->n_records == 0 && st->wlen == 0) {
                uint64_t alloc = (sg->end + need + 4095) & ~(uint64_t)4095;
                rv = st->fs->fallocate(st->fs->ctx, st->cur_fd, 0, (off_t)alloc);
                if (rv != 0) return fail_io(errmsg, "preallocate", sg->first, rv);
                sg->size = alloc;
            } else {
                /* Roll over: the full segment is made durable first. */
                rv = wal_flush(st, errmsg);
                if (rv == 0) rv = wal_sync(st, errmsg);
                if (rv != 0) return rv;
                close_cur(st);
                rv = wal_create_segment(st, e->index, need, errmsg);
                if (rv != 0) return rv;
            }
        }
    }
    sg = cur_seg(st);
    if (!st->is_group_open) {
        st->sync_start = (uint32_t)(sg->end + st->wlen);
        st->is_group_open = 1;
    }
    if (st->wlen + need > st->wcap) {
        size_t nc = st->wcap ? st->wcap : 64 * 1024;
        unsigned char *p;
        while (nc < st->wlen + need) nc *= 2;
        p = mr_realloc(st->wbuf, nc);
        if (p == NULL) return fail_io(errmsg, "buffer", sg->first, MR_ENOMEM);
        st->wbuf = p;
        st->wcap = nc;
    }
    mr_store__rec_encode(st->wbuf + st->wlen, e->term, e->index, e->type,
                         len ? e->data->data : NULL, len, st->sync_start);
    st->wlen += (size_t)need;
    sg->last = e->index;
    sg->last_term = e->term;
    sg->n_records++;
    st->last_index = e->index;
    st->last_term = e->term;
    if (st->wlen >= FLUSH_BYTES) return wal_flush(st, errmsg);
    return 0;
}

static mr_term term_at_boundary(struct mr_store *st, mr_index idx)
{
    mr_term t = 0;
    pthread_mutex_lock(&st->mu);
    if (idx == st->snap_index) t = st->snap_term;
    pthread_mutex_unlock(&st->mu);
    return t;
}

static int unlink_seg(struct mr_store *st, mr_index first, char *errmsg)
{
    char *path = seg_path(st, first);
    int rv;
    if (path == NULL) return fail_io(errmsg, "unlink", first, MR_ENOMEM);
    rv = st->fs->unlink(st->fs->ctx, path);
    mr_free(path);
    if (rv != 0 && rv != -ENOENT) return fail_io(errmsg, "unlink", first, rv);
    return 0;
}

struct find_ctx {
    mr_index target;
    uint64_t off;
    mr_term prev_term;
};

static int find_cb(void *arg, const struct mr_store_rec *r)
{
    struct find_ctx *f = arg;
    if (r->index == f->target) {
        f->off = r->off;
        return 1;
    }
    f->prev_term = r->term;
    return 0;
}

static int wal_truncate(struct mr_store *st, mr_index from, char *errmsg)
{
    int rv, removed = 0;
    struct mr_store_seg *sg;
    rv = wal_flush(st, errmsg);
    if (rv != 0) return rv;
    if (from > st->last_index) return 0;
    close_cur(st);
    /* Newest first, so a crash in between leaves a log without holes. */
    while (st->n_segs > 0 && st->segs[st->n_segs - 1].first >= from) {
        rv = unlink_seg(st, st->segs[st->n_segs - 1].first, errmsg);
        if (rv != 0) return rv;
        st->n_segs--;
        removed = 1;
    }
    if (removed) {
        rv = mr_store__sync_dir(st->fs, st->wal_dir);
        if (rv != 0) {
            mr_errmsg_printf(errmsg, "wal: fsync dir: %s", mr_strerror(rv));
            return rv;
        }
    }
    sg = cur_seg(st);
    if (sg != NULL && sg->last >= from) {
        struct find_ctx f = {from, 0, 0};
        struct mr_store_seg_scan sc;
        unsigned char *buf;
        uint64_t size;
        char *path = seg_path(st, sg->first);
        char rel[SEG_NAME_LEN + 8];
        int fd;
        if (path == NULL) return fail_io(errmsg, "truncate", sg->first, MR_ENOMEM);
        snprintf(rel, sizeof rel, "wal/");
        mr_store__seg_name(rel + 4, sg->first);
        rv = mr_store__read_file(path, &buf, &size);
        if (rv == 0) {
            rv = mr_store__seg_scan(buf, size, rel, sg->first, 1, find_cb, &f, &sc,
                                    errmsg);
            mr_free(buf);
            if (rv == 1)
                rv = 0;
            else if (rv == 0)
                rv = MR_ECORRUPT; /* the record must be there */
        }
        if (rv != 0) {
            mr_free(path);
            if (rv != MR_ECORRUPT) fail_io(errmsg, "truncate: read", sg->first, rv);
            return rv;
        }
        fd = st->fs->open(st->fs->ctx, path, O_RDWR, 0);
        mr_free(path);
        if (fd < 0) return fail_io(errmsg, "truncate: open", sg->first, fd);
        st->cur_fd = fd;
        rv = st->fs->ftruncate(st->fs->ctx, fd, (off_t)f.off);
        if (rv != 0) return fail_io(errmsg, "ftruncate", sg->first, rv);
        rv = st->fs->fallocate(st->fs->ctx, fd, 0, (off_t)sg->size);
        if (rv != 0) return fail_io(errmsg, "preallocate", sg->first, rv);
        rv = st->fs->fsync(st->fs->ctx, fd);
        if (rv != 0) return fail_io(errmsg, "fsync", sg->first, rv);
        sg->end = f.off;
        sg->n_records = from - sg->first;
        sg->last = from - 1;
        sg->last_term = from > sg->first ? f.prev_term : 0;
    }
    st->last_index = from - 1;
    sg = cur_seg(st);
    st->last_term = sg != NULL && sg->last == from - 1 && sg->n_records > 0
                        ? sg->last_term
                        : term_at_boundary(st, from - 1);
    return 0;
}

static int wal_compact(struct mr_store *st, mr_index up_to, char *errmsg)
{
    size_t k = 0, j;
    int rv;
    while (k + 1 < st->n_segs && st->segs[k + 1].first <= up_to + 1) {
        rv = unlink_seg(st, st->segs[k].first, errmsg);
        if (rv != 0) return rv;
        k++;
    }
    if (k > 0) {
        for (j = k; j < st->n_segs; j++) st->segs[j - k] = st->segs[j];
        st->n_segs -= k;
        /* make the unlinks durable: after a power cut the removed segments
         * would come back (recovery would skip them by log_start, but a
         * disk that never shrinks is a surprise of its own) */
        rv = mr_store__sync_dir(st->fs, st->wal_dir);
        if (rv != 0) {
            mr_errmsg_printf(errmsg, "wal: fsync dir: %s", mr_strerror(rv));
            return rv;
        }
    }
    if (st->meta.log_start < up_to + 1) st->meta.log_start = up_to + 1;
    return 0;
}

static int wal_reset(struct mr_store *st, mr_index next, char *errmsg)
{
    int rv;
    st->wlen = 0;
    close_cur(st);
    while (st->n_segs > 0) {
        rv = unlink_seg(st, st->segs[st->n_segs - 1].first, errmsg);
        if (rv != 0) return rv;
        st->n_segs--;
    }
    rv = mr_store__sync_dir(st->fs, st->wal_dir);
    if (rv != 0) {
        mr_errmsg_printf(errmsg, "wal: fsync dir: %s", mr_strerror(rv));
        return rv;
    }
    st->last_index = next - 1;
    st->last_term = term_at_boundary(st, next - 1);
    st->meta.log_start = next;
    return 0;
}

/* After a batch failed on a full disk: make the writer's view what the disk
 * holds (see the top of the file). Re-reads meta, drops the buffered records,
 * re-scans the newest segment and cuts it right after its last valid record;
 * removes newest segments without a record (created by the failed batch;
 * that also gives their preallocated space back) unless it is the only one. */
/* XXX(#13): it reads the whole newest segment at each failed retry (up to
 * wal_segment_mb per second while stalled); reading from the last durable
 * offset would do. */
static int reload_wal(struct mr_store *st, char *errmsg)
{
    struct mr_store_meta m;
    int rv, removed = 0;
    st->wlen = 0;
    close_cur(st);
    rv = mr_store__meta_read(st->dir, &m, errmsg);
    if (rv != 0) return rv;
    st->meta = m;
    for (;;) {
        struct mr_store_seg *sg = cur_seg(st);
        struct mr_store_seg_scan sc;
        unsigned char *buf;
        uint64_t size;
        char rel[SEG_NAME_LEN + 8];
        char *path;
        int fd;
        if (sg == NULL) {
            st->last_index = st->meta.log_start > 0 ? st->meta.log_start - 1 : 0;
            st->last_term = term_at_boundary(st, st->last_index);
            break;
        }
        path = seg_path(st, sg->first);
        if (path == NULL) return fail_io(errmsg, "reload", sg->first, MR_ENOMEM);
        snprintf(rel, sizeof rel, "wal/");
        mr_store__seg_name(rel + 4, sg->first);
        rv = mr_store__read_file(path, &buf, &size);
        if (rv == 0) {
            rv =
                mr_store__seg_scan(buf, size, rel, sg->first, 1, NULL, NULL, &sc, errmsg);
            mr_free(buf);
        } else {
            fail_io(errmsg, "reload: read", sg->first, rv);
        }
        if (rv != 0) {
            mr_free(path);
            return rv;
        }
        if (sc.is_header_torn || (sc.n_records == 0 && st->n_segs > 1)) {
            rv = st->fs->unlink(st->fs->ctx, path);
            mr_free(path);
            if (rv != 0 && rv != -ENOENT) return fail_io(errmsg, "unlink", sg->first, rv);
            st->n_segs--;
            removed = 1;
            continue;
        }
        fd = st->fs->open(st->fs->ctx, path, O_RDWR, 0);
        mr_free(path);
        if (fd < 0) return fail_io(errmsg, "reload: open", sg->first, fd);
        st->cur_fd = fd;
        if (sc.is_torn) {
            /* The failed write's partial record: cut it (shrinking needs no
             * space), and make the cut durable, so that a shorter record
             * written later can never be followed by a stale tail. */
            rv = st->fs->ftruncate(st->fs->ctx, fd, (off_t)sc.end);
            if (rv != 0) return fail_io(errmsg, "ftruncate", sg->first, rv);
            rv = st->fs->fsync(st->fs->ctx, fd);
            if (rv != 0) return fail_io(errmsg, "fsync", sg->first, rv);
            /* Preallocate again if there is room; else the next append rolls
             * over to a new segment (and waits for room there). */
            if (st->fs->fallocate(st->fs->ctx, fd, 0, (off_t)sg->size) != 0)
                sg->size = sc.end;
        }
        sg->end = sc.end;
        sg->last = sc.last;
        sg->last_term = sc.last_term;
        sg->n_records = sc.n_records;
        st->last_index = sc.last;
        if (sc.n_records > 0)
            st->last_term = sc.last_term;
        else if (st->n_segs > 1)
            st->last_term = st->segs[st->n_segs - 2].last_term;
        else
            st->last_term = term_at_boundary(st, sc.last);
        break;
    }
    if (removed) {
        rv = mr_store__sync_dir(st->fs, st->wal_dir);
        if (rv != 0) {
            mr_errmsg_printf(errmsg, "wal: fsync dir: %s", mr_strerror(rv));
            return rv;
        }
    }
    return 0;
}

static int process_batch(struct mr_store *st, struct mr_queue *ops, uint64_t *done,
                         char *errmsg)
{
    struct mr_queue *it;
    int rv = 0, meta_dirty = 0, hs_dirty = 0;
    size_t i;
    MR_QUEUE_FOREACH(it, ops)
    {
        struct op *op = MR_CONTAINER_OF(it, struct op, link);
        if (hs_dirty && (op->kind == OP_APPEND || op->kind == OP_TRUNCATE)) {
            /* raft.h rule 1: the hard state before the entries that follow
             * it (a term's entries are never durable while the term is not). */
            rv = mr_store__meta_write(st->fs, st->dir, &st->meta, errmsg);
            if (rv != 0) return rv;
            hs_dirty = meta_dirty = 0;
        }
        switch (op->kind) {
        case OP_APPEND:
            /* Only after a full disk: the reloaded log already holds records
             * of this (retried) batch. Queue order guarantees that this
             * append continues the log right after entries[0].index - 1. */
            if (op->entries[0].index <= st->last_index)
                rv = wal_truncate(st, op->entries[0].index, errmsg);
            for (i = 0; i < op->n && rv == 0; i++)
                rv = wal_add(st, &op->entries[i], errmsg);
            break;
        case OP_TRUNCATE:
            rv = wal_truncate(st, op->a, errmsg);
            break;
        case OP_HARD_STATE:
            st->meta.term = op->a;
            st->meta.vote = op->b;
            meta_dirty = hs_dirty = 1;
            break;
        case OP_IDS:
            st->meta.node_id = op->a;
            st->meta.cluster_id = op->b;
            meta_dirty = 1;
            break;
        case OP_COMPACT:
            rv = wal_flush(st, errmsg);
            if (rv == 0) rv = wal_compact(st, op->a, errmsg);
            meta_dirty = 1;
            break;
        case OP_RESET:
            rv = wal_reset(st, op->a, errmsg);
            meta_dirty = 1;
            break;
        default:
            MR_ASSERT(0);
        }
        if (rv != 0) return rv;
        *done = op->seq;
    }
    rv = wal_flush(st, errmsg);
    if (rv == 0) rv = wal_sync(st, errmsg);
    if (rv == 0 && meta_dirty)
        rv = mr_store__meta_write(st->fs, st->dir, &st->meta, errmsg);
    return rv;
}

/* Moves every op of `from` to the head of `to`, in order. */
static void queue_prepend(struct mr_queue *to, struct mr_queue *from)
{
    while (!mr_queue_empty(from)) {
        struct mr_queue *it = from->prev;
        mr_queue_remove(it);
        it->next = to->next;
        it->prev = to;
        to->next->prev = it;
        to->next = it;
    }
}

/* Called with st->mu held while stalled on a full disk: takes the queued
 * compactions out of the queue into `out` (they run ahead, see the top). */
static void take_compactions(struct mr_store *st, struct mr_queue *out)
{
    struct mr_queue *it, *next;
    mr_queue_init(out);
    for (it = st->queue.next; it != &st->queue; it = next) {
        next = it->next;
        if (MR_CONTAINER_OF(it, struct op, link)->kind == OP_COMPACT) {
            mr_queue_remove(it);
            mr_queue_push_tail(out, it);
        }
    }
}

static void wait_retry_locked(struct mr_store *st, unsigned ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000u;
    ts.tv_nsec += (long)(ms % 1000u) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    while (!st->is_stopping && !st->is_kicked)
        if (pthread_cond_timedwait(&st->cond, &st->mu, &ts) == ETIMEDOUT) break;
    st->is_kicked = 0;
}

/* Runs `batch` (taken from the queue under st->mu, which is not held here).
 * Returns 0, or the error; on a full disk the batch is back at the head of
 * the queue and the writer's view was reloaded from the disk. */
static int run_batch(struct mr_store *st, struct mr_queue *batch, uint64_t *done,
                     char *errmsg)
{
    int rv = process_batch(st, batch, done, errmsg);
    if (is_nospace(rv)) {
        char rmsg[MR_ERRMSG_SIZE] = "";
        int rrv = reload_wal(st, rmsg);
        if (rrv != 0 && !is_nospace(rrv)) {
            snprintf(errmsg, MR_ERRMSG_SIZE, "%s", rmsg);
            rv = rrv; /* cannot tell what the disk holds: fail for good */
        } else {
            pthread_mutex_lock(&st->mu);
            queue_prepend(&st->queue, batch);
            pthread_mutex_unlock(&st->mu);
        }
    }
    ops_free(batch);
    return rv;
}

/* Called with st->mu held after a batch ran: publishes its outcome. Returns
 * the writer's next backoff (0: none). */
static unsigned finish_batch_locked(struct mr_store *st, int rv, uint64_t done,
                                    const char *errmsg, unsigned backoff_ms)
{
    if (is_nospace(rv)) {
        st->prog.nospace = rv;
        snprintf(st->prog.nospace_msg, sizeof st->prog.nospace_msg, "%s", errmsg);
        st->prog.nospace_retries++;
        return backoff_ms == 0                 ? RETRY_MIN_MS
               : backoff_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS
                                               : backoff_ms * 2;
    }
    if (rv != 0) {
        st->prog.error = rv;
        snprintf(st->prog.errmsg, sizeof st->prog.errmsg, "%s", errmsg);
        ops_free(&st->queue); /* never written: their seqs never complete */
        return 0;
    }
    st->prog.done_seq = done;
    st->prog.persisted_index = st->last_index;
    st->prog.persisted_term = st->last_term;
    st->prog.term = st->meta.term;
    st->prog.vote = st->meta.vote;
    st->prog.nospace = 0;
    st->prog.nospace_msg[0] = '\0';
    return 0;
}

/* Called with st->mu held and the queue not empty: moves all of it to
 * `batch` (the group commit). */
static void take_all_locked(struct mr_store *st, struct mr_queue *batch)
{
    batch->next = st->queue.next;
    batch->prev = st->queue.prev;
    batch->next->prev = batch;
    batch->prev->next = batch;
    mr_queue_init(&st->queue);
}

static void *writer_main(void *arg)
{
    struct mr_store *st = arg;
    struct mr_queue batch;
    char errmsg[MR_ERRMSG_SIZE];
    unsigned backoff_ms = 0; /* nonzero: stalled on a full disk */
    pthread_mutex_lock(&st->mu);
    for (;;) {
        uint64_t done = 0;
        int rv;
        if (backoff_ms > 0) {
            wait_retry_locked(st, backoff_ms);
            if (st->is_stopping) break; /* the stalled ops are never written */
            take_compactions(st, &batch);
            if (mr_queue_empty(&st->queue)) {
                queue_prepend(&st->queue, &batch); /* nothing to run ahead of */
            } else if (!mr_queue_empty(&batch)) {
                pthread_mutex_unlock(&st->mu);
                errmsg[0] = '\0';
                rv = run_batch(st, &batch, &done, errmsg);
                pthread_mutex_lock(&st->mu);
                if (rv != 0 && !is_nospace(rv)) goto failed;
            }
        } else {
            /* is_busy: mr_store_sync_inline is running a batch */
            while ((mr_queue_empty(&st->queue) || st->is_busy) && !st->is_stopping) {
                st->is_parked = 1;
                pthread_cond_wait(&st->cond, &st->mu);
                st->is_parked = 0;
            }
        }
        if (mr_queue_empty(&st->queue)) break;
        take_all_locked(st, &batch);
        st->is_busy = 1;
        pthread_mutex_unlock(&st->mu);

        errmsg[0] = '\0';
        done = 0;
        rv = run_batch(st, &batch, &done, errmsg);

        pthread_mutex_lock(&st->mu);
        st->is_busy = 0;
    failed:
        backoff_ms = finish_batch_locked(st, rv, done, errmsg, backoff_ms);
        st->is_stalled = backoff_ms > 0;
        pthread_mutex_unlock(&st->mu);
        if (st->notify != NULL) st->notify(st->notify_arg);
        pthread_mutex_lock(&st->mu);
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

void mr_store_wake(struct mr_store *st)
{
    pthread_mutex_lock(&st->mu);
    if (!mr_queue_empty(&st->queue)) pthread_cond_signal(&st->cond);
    pthread_mutex_unlock(&st->mu);
}

void mr_store_set_inline(struct mr_store *st, int on)
{
    pthread_mutex_lock(&st->mu);
    st->is_inline = on != 0;
    if (!on && !mr_queue_empty(&st->queue)) pthread_cond_signal(&st->cond);
    pthread_mutex_unlock(&st->mu);
}

int mr_store__writer_is_parked(struct mr_store *st)
{
    int v;
    pthread_mutex_lock(&st->mu);
    v = st->is_parked;
    pthread_mutex_unlock(&st->mu);
    return v;
}

int mr_store_sync_inline(struct mr_store *st)
{
    struct mr_queue batch;
    char errmsg[MR_ERRMSG_SIZE];
    uint64_t done = 0;
    int rv;
    pthread_mutex_lock(&st->mu);
    if (st->is_busy || st->is_stalled || st->is_stopping || st->prog.error != 0 ||
        st->prog.nospace != 0 || mr_queue_empty(&st->queue)) {
        if (!mr_queue_empty(&st->queue)) pthread_cond_signal(&st->cond); /* the writer runs them */
        pthread_mutex_unlock(&st->mu);
        return 0;
    }
    take_all_locked(st, &batch);
    st->is_busy = 1;
    pthread_mutex_unlock(&st->mu);

    errmsg[0] = '\0';
    rv = run_batch(st, &batch, &done, errmsg);

    pthread_mutex_lock(&st->mu);
    st->is_busy = 0;
    /* A full disk: the batch is back at the head of the queue, and the
     * writer thread takes over the retries (with its backoff). */
    (void)finish_batch_locked(st, rv, done, errmsg, 0);
    /* What others queued meanwhile, or the retry (the batch is back in the
     * queue): only then is the writer woken; a wake-up for nothing costs
     * a context switch per inline sync, and the writer could then take the
     * next lone entry that this loop would have synced itself. */
    if (!mr_queue_empty(&st->queue)) pthread_cond_signal(&st->cond);
    pthread_mutex_unlock(&st->mu);
    return 1;
}

/* ---- the queue (any thread) ---------------------------------------------------- */

static struct op *op_new(int kind, size_t n)
{
    struct op *op = mr_malloc(sizeof *op + n * sizeof(struct mr_raft_entry));
    if (op == NULL) return NULL;
    memset(op, 0, sizeof *op);
    op->kind = kind;
    return op;
}

/* Called with st->mu held: checks, takes the seq, queues and wakes. */
static int enqueue_locked(struct mr_store *st, struct op *op, uint64_t *seq)
{
    op->seq = ++st->next_seq;
    if (seq != NULL) *seq = op->seq;
    mr_queue_push_tail(&st->queue, &op->link);
    /* In inline mode appends and hard states wait for the host's
     * mr_store_sync_inline (which wakes the writer if it cannot run them);
     * anything else wakes the writer at once. */
    if (!st->is_inline || (op->kind != OP_APPEND && op->kind != OP_HARD_STATE))
        pthread_cond_signal(&st->cond);
    return 0;
}

static int refuse_locked(struct mr_store *st)
{
    if (st->is_read_only) return MR_EINVAL;
    if (st->prog.error != 0) return MR_EDISKFAIL;
    return 0;
}

int mr_store_append(struct mr_store *st, const struct mr_raft_entry *entries, size_t n,
                    uint64_t *seq)
{
    struct op *op;
    size_t i;
    int rv;
    if (n == 0) return MR_EINVAL;
    for (i = 0; i < n; i++) {
        if (entries[i].index != entries[0].index + i) return MR_EINVAL;
        if (i > 0 && entries[i].term < entries[i - 1].term) return MR_EINVAL;
        if (entries[i].data != NULL && entries[i].data->len > MR_STORE_SEGMENT_SIZE_MAX)
            return MR_ETOOBIG;
    }
    op = op_new(OP_APPEND, n);
    if (op == NULL) return MR_ENOMEM;
    pthread_mutex_lock(&st->mu);
    rv = refuse_locked(st);
    if (rv == 0 && entries[0].index != st->enq_last + 1) rv = MR_EINVAL;
    if (rv != 0) {
        pthread_mutex_unlock(&st->mu);
        mr_free(op);
        return rv;
    }
    for (i = 0; i < n; i++) {
        op->entries[i] = entries[i];
        mr_rcbuf_ref(entries[i].data);
    }
    op->n = n;
    st->enq_last = entries[n - 1].index;
    enqueue_locked(st, op, seq);
    pthread_mutex_unlock(&st->mu);
    return 0;
}

static int queue_simple(struct mr_store *st, int kind, uint64_t a, uint64_t b,
                        uint64_t *seq)
{
    struct op *op = op_new(kind, 0);
    int rv;
    if (op == NULL) return MR_ENOMEM;
    op->a = a;
    op->b = b;
    pthread_mutex_lock(&st->mu);
    rv = refuse_locked(st);
    if (rv == 0) {
        switch (kind) {
        case OP_TRUNCATE:
            if (a == 0)
                rv = MR_EINVAL;
            else if (a <= st->enq_last)
                st->enq_last = a - 1;
            break;
        case OP_COMPACT:
            if (a > st->snap_index)
                rv = MR_EINVAL;
            else
                st->is_kicked = 1; /* a stalled writer runs it at once */
            break;
        case OP_RESET:
            if (a == 0 || a - 1 > st->snap_index)
                rv = MR_EINVAL;
            else
                st->enq_last = a - 1;
            break;
        default:
            break;
        }
    }
    if (rv != 0) {
        pthread_mutex_unlock(&st->mu);
        mr_free(op);
        return rv;
    }
    enqueue_locked(st, op, seq);
    pthread_mutex_unlock(&st->mu);
    return 0;
}

int mr_store_truncate(struct mr_store *st, mr_index from_index, uint64_t *seq)
{
    return queue_simple(st, OP_TRUNCATE, from_index, 0, seq);
}

int mr_store_save_hard_state(struct mr_store *st, mr_term term, mr_node_id vote,
                             uint64_t *seq)
{
    return queue_simple(st, OP_HARD_STATE, term, vote, seq);
}

int mr_store_save_ids(struct mr_store *st, mr_node_id node_id, uint64_t cluster_id,
                      uint64_t *seq)
{
    return queue_simple(st, OP_IDS, node_id, cluster_id, seq);
}

int mr_store_compact(struct mr_store *st, mr_index up_to_index, uint64_t *seq)
{
    return queue_simple(st, OP_COMPACT, up_to_index, 0, seq);
}

int mr_store_reset(struct mr_store *st, mr_index next_index, uint64_t *seq)
{
    return queue_simple(st, OP_RESET, next_index, 0, seq);
}

int mr_store_poll(struct mr_store *st, struct mr_store_progress *p)
{
    pthread_mutex_lock(&st->mu);
    *p = st->prog;
    pthread_mutex_unlock(&st->mu);
    return p->error;
}

void mr_store_retry_now(struct mr_store *st)
{
    pthread_mutex_lock(&st->mu);
    st->is_kicked = 1;
    pthread_cond_signal(&st->cond);
    pthread_mutex_unlock(&st->mu);
}

int mr_store_status(struct mr_store *st, char *errmsg)
{
    int rv;
    pthread_mutex_lock(&st->mu);
    rv = st->prog.error;
    if (errmsg != NULL) snprintf(errmsg, MR_ERRMSG_SIZE, "%s", rv ? st->prog.errmsg : "");
    pthread_mutex_unlock(&st->mu);
    return rv;
}

mr_index mr_store_snapshot_index(struct mr_store *st)
{
    mr_index i;
    pthread_mutex_lock(&st->mu);
    i = st->snap_index;
    pthread_mutex_unlock(&st->mu);
    return i;
}

/* ---- open / close ----------------------------------------------------------------- */

int mr_store_lock(const char *dir, int *fd, char *errmsg)
{
    char *path = mr_store__join(dir, "lock");
    int lfd, e;
    *fd = -1;
    if (path == NULL) {
        mr_errmsg_printf(errmsg, "storage: out of memory");
        return MR_ENOMEM;
    }
    lfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lfd < 0) {
        e = errno;
        mr_errmsg_printf(errmsg, "%s: %s", path, strerror(e));
        mr_free(path);
        return -e;
    }
    if (flock(lfd, LOCK_EX | LOCK_NB) != 0) {
        e = errno;
        close(lfd);
        if (e == EWOULDBLOCK) {
            mr_errmsg_printf(errmsg, "%s is in use by another process (a running node?)",
                             dir);
            mr_free(path);
            return MR_EBUSY;
        }
        mr_errmsg_printf(errmsg, "%s: flock: %s", path, strerror(e));
        mr_free(path);
        return -e;
    }
    mr_free(path);
    *fd = lfd;
    return 0;
}

void mr_store_unlock(int fd)
{
    if (fd >= 0) close(fd); /* releases the flock */
}

static void store_free(struct mr_store *st)
{
    mr_store_unlock(st->lock_fd);
    if (st->cur_fd >= 0) st->fs->close(st->fs->ctx, st->cur_fd);
    ops_free(&st->queue);
    mr_free(st->segs);
    mr_free(st->wbuf);
    mr_free(st->dir);
    mr_free(st->wal_dir);
    mr_free(st->snap_dir);
    pthread_mutex_destroy(&st->mu);
    pthread_mutex_destroy(&st->snap_mu);
    pthread_cond_destroy(&st->cond);
    mr_free(st);
}

int mr_store_open(struct mr_store **out, const struct mr_store_options *opts,
                  struct mr_store_recovered *rec, char *errmsg)
{
    struct mr_store *st;
    struct mr_store_recovery rs;
    int rv;

    *out = NULL;
    memset(rec, 0, sizeof *rec);
    if (opts == NULL || opts->data_dir == NULL || opts->data_dir[0] == '\0' ||
        (opts->segment_size != 0 && (opts->segment_size < MR_STORE_SEGMENT_SIZE_MIN ||
                                     opts->segment_size > MR_STORE_SEGMENT_SIZE_MAX))) {
        mr_errmsg_printf(errmsg, "storage: invalid options");
        return MR_EINVAL;
    }
    st = mr_calloc(1, sizeof *st);
    if (st == NULL) return MR_ENOMEM;
    st->cur_fd = -1;
    st->lock_fd = -1;
    mr_queue_init(&st->queue);
    pthread_mutex_init(&st->mu, NULL);
    pthread_mutex_init(&st->snap_mu, NULL);
    pthread_cond_init(&st->cond, NULL);
    st->fs = opts->fs != NULL ? opts->fs : mr_store_fs_default();
    st->seg_size =
        opts->segment_size ? opts->segment_size : MR_STORE_SEGMENT_SIZE_DEFAULT;
    st->is_read_only = opts->is_read_only;
    st->notify = opts->notify;
    st->notify_arg = opts->notify_arg;
    st->dir = mr_strdup(opts->data_dir);
    st->wal_dir = mr_store__join(opts->data_dir, "wal");
    st->snap_dir = mr_store__join(opts->data_dir, "snap");
    if (st->dir == NULL || st->wal_dir == NULL || st->snap_dir == NULL) {
        store_free(st);
        mr_errmsg_printf(errmsg, "storage: out of memory");
        return MR_ENOMEM;
    }
    /* One writer per directory: a second node (or `moonraft replay`) on the
     * same directory is refused before anything is read or repaired. A
     * directory that does not exist yet is locked once recovery created it. */
    if (!st->is_read_only) {
        rv = mr_store_lock(st->dir, &st->lock_fd, errmsg);
        if (rv != 0 && rv != -ENOENT) {
            store_free(st);
            return rv;
        }
    }
    rv = mr_store__recover(st->dir, st->fs, st->seg_size, st->is_read_only, opts, 1, NULL,
                           NULL, &rs, rec, errmsg);
    if (rv != 0) {
        store_free(st);
        return rv;
    }
    if (!st->is_read_only && st->lock_fd < 0 &&
        (rv = mr_store_lock(st->dir, &st->lock_fd, errmsg)) != 0) {
        mr_store__recovery_free(&rs);
        mr_store_recovered_release(rec);
        store_free(st);
        return rv;
    }
    st->segs = rs.segs;
    st->n_segs = st->cap_segs = rs.n_segs;
    rs.segs = NULL;
    st->meta = rs.meta;
    st->last_index = rs.last_index;
    st->last_term = rs.last_term;
    st->enq_last = rs.last_index;
    st->snap_index = rec->snap_index;
    st->snap_term = rec->snap_term;
    st->prog.persisted_index = st->last_index;
    st->prog.persisted_term = st->last_term;
    st->prog.term = st->meta.term;
    st->prog.vote = st->meta.vote;
    mr_store__recovery_free(&rs);
    if (!st->is_read_only && st->n_segs > 0) {
        char *path = seg_path(st, st->segs[st->n_segs - 1].first);
        if (path == NULL) {
            rv = MR_ENOMEM;
        } else {
            rv = st->fs->open(st->fs->ctx, path, O_RDWR, 0);
            mr_free(path);
        }
        if (rv < 0) {
            fail_io(errmsg, "open", st->segs[st->n_segs - 1].first, rv);
            goto fail;
        }
        st->cur_fd = rv;
    }
    if (!st->is_read_only) {
        rv = pthread_create(&st->thread, NULL, writer_main, st);
        if (rv != 0) {
            rv = -rv;
            mr_errmsg_printf(errmsg, "storage: writer thread: %s", strerror(-rv));
            goto fail;
        }
        st->has_thread = 1;
    }
    *out = st;
    return 0;
fail:
    mr_store_recovered_release(rec);
    store_free(st);
    return rv;
}

void mr_store_close(struct mr_store *st)
{
    if (st == NULL) return;
    if (st->has_thread) {
        pthread_mutex_lock(&st->mu);
        st->is_stopping = 1;
        pthread_cond_signal(&st->cond);
        pthread_mutex_unlock(&st->mu);
        pthread_join(st->thread, NULL);
    }
    store_free(st);
}
