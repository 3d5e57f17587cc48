/* node_snap: taking, sending, receiving and installing snapshots.
 *
 * Node snapshot payload (inside the storage snapshot file, after its header):
 *   "MRNS" | u32 version (3) | u64 idem_len | u64 last_time_ms | u64 sections_len |
 *   idempotency table | sections | state machine payload
 * Sections carry node-level replicated state other than the script's own
 * (node_sections.c): each is u32 tag, u32 reserved (0), u64 len, len bytes.
 * Version 2 (earlier builds) has no sections_len and no sections: 24-byte
 * header; version 1 has no last_time_ms either: 16-byte header.
 * last_time_ms is the ctx.time of the last applied entry, so that ctx.time
 * stays monotonic across a snapshot install exactly as on nodes that applied
 * the entries one by one.
 *
 * Taking: the idempotency table is written by the loop thread, then the state
 * machine forks (sm_fork.c): the child writes the script's snapshot() into the
 * same file while the parent goes on serving; the loop thread only pays for
 * fork() itself. Finishing the file (checksum, fsync, rename) runs on the libuv
 * work queue; then the core is told (SNAPSHOT_TAKEN) and the WAL compacted.
 *
 * Sending: when the core asks for MR_RAFT_MSG_SNAPSHOT to a follower, the
 * message itself goes first (it carries index, term and membership), then the
 * file in chunks, paced by the peer's queue. The receiver writes chunks to a
 * temp file (storage), checks the whole file on the last one, and only then
 * steps its core with the SNAPSHOT message, which answers by asking the host
 * to install it (ready.snapshot). */
#include "node/node_int.h"

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* This node's place among the voters by id (0: the lowest, or not a voter):
 * staggers the members' snapshots (node_snap_policy.c). */
static unsigned voter_rank(struct mr_node *n)
{
    struct mr_raft_status st;
    unsigned i, rank = 0;
    mr_raft_status(&n->raft, &st);
    if (st.config == NULL) return 0;
    for (i = 0; i < st.config->n; i++) {
        const struct mr_raft_server *s = &st.config->servers[i];
        if (s->role == MR_RAFT_VOTER && s->id < n->id) rank++;
    }
    return rank;
}

#define CHUNK_SIZE (256u * 1024u)     /* bytes per SNAPSHOT_CHUNK frame */
#define SEND_WINDOW (4u * 1024u * 1024u) /* bytes queued per peer before pausing */
#define NODE_SNAP_MAGIC "MRNS"
#define NODE_SNAP_HDR 32
#define NODE_SNAP_HDR_V2 24
#define NODE_SNAP_HDR_V1 16

/* ---- taking ------------------------------------------------------------------- */
static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

void mr_node_snap_maybe_start(struct mr_node *n, int force)
{
    uint64_t log_max = (n->o->snapshot_log_mb ? n->o->snapshot_log_mb : 32) << 20;
    uint64_t trailing = n->o->snapshot_trailing, n_log, avg;
    char err[MR_ERRMSG_SIZE] = "";
    unsigned char hdr[NODE_SNAP_HDR];
    unsigned char *idem = NULL, *sections = NULL;
    size_t idem_len, sections_len;
    int rv, fd;

    if (n->job_running || n->snap_work_busy || n->is_stopping || n->disk_error) return;
    /* The fork below needs the state machine at n->applied, with the apply
     * thread parked: the end of its job calls us again (node_apply.c). */
    if (!mr_node_apply_is_idle(n)) return;
    /* A state found diverged is not worth keeping (nor compacting the log
     * for: a resync re-applies the entries after the leader's snapshot). */
    if (n->integ_diverged && !n->integ_resynced) return;
    if (n->applied <= n->snap_index || n->applied_conf == NULL) return;
    n_log = n->applied - n->snap_index;
    if (!force && !mr_node_snap_due(n->o, n_log, n->log_bytes, n->snap_size, voter_rank(n)))
        return;
    /* The entries kept behind the snapshot for slow followers: at most
     * snapshot_trailing of them and at most a quarter of log_max bytes
     * (estimated from the average entry since the last snapshot). */
    avg = n->log_bytes / n_log;
    if (avg > 0 && trailing > log_max / 4 / avg) trailing = log_max / 4 / avg;
    if (trailing == 0 && n->o->snapshot_trailing > 0) trailing = 1;
    rv = mr_store_snap_writer_begin(n->store, n->applied, n->applied_term, n->applied_conf->data,
                                    n->applied_conf->len, &n->snap_writer, err);
    if (rv != 0) {
        LOGW("cannot start a snapshot: %s", err);
        return;
    }
    fd = mr_store_snap_writer_fd(n->snap_writer);
    idem_len = mr_idem_encoded_size(&n->idem);
    idem = mr_malloc(idem_len);
    if (idem == NULL) {
        mr_store_snap_writer_abort(n->snap_writer);
        n->snap_writer = NULL;
        return;
    }
    mr_idem_encode(&n->idem, idem);
    sections_len = mr_node_sections_encode(n, NULL);
    sections = mr_malloc(sections_len ? sections_len : 1);
    if (sections == NULL) {
        mr_free(idem);
        mr_store_snap_writer_abort(n->snap_writer);
        n->snap_writer = NULL;
        return;
    }
    mr_node_sections_encode(n, sections);
    memcpy(hdr, NODE_SNAP_MAGIC, 4);
    mr_put_u32(hdr + 4, 3);
    mr_put_u64(hdr + 8, idem_len);
    mr_put_u64(hdr + 16, n->last_time_ms);
    mr_put_u64(hdr + 24, sections_len);
    rv = write_all(fd, hdr, sizeof hdr);
    if (rv == 0) rv = write_all(fd, idem, idem_len);
    if (rv == 0) rv = write_all(fd, sections, sections_len);
    mr_free(idem);
    mr_free(sections);
    if (rv == 0) rv = mr_sm_snapshot_fork(n->sm, fd, &n->job, err);
    if (rv != 0) {
        LOGW("cannot start a snapshot: %s", err[0] ? err : mr_strerror(rv));
        mr_store_snap_writer_abort(n->snap_writer);
        n->snap_writer = NULL;
        return;
    }
    n->job_running = 1;
    n->job_trailing = trailing;
    n->log_bytes = 0; /* what is applied from now on counts toward the next one */
    n->job_index = n->applied;
    n->job_term = n->applied_term;
    LOGI("taking a snapshot at index %llu (child pid %d)", (unsigned long long)n->job_index,
         (int)n->job.pid);
}

/* jemalloc's control call, when the binary links jemalloc (CMakeLists.txt,
 * MR_JEMALLOC); NULL with glibc's malloc. */
extern int mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen)
    __attribute__((weak));

/* The compacted log (or the replaced state) went back to malloc, but the
 * allocator keeps freed pages: hand them to the kernel so RSS follows the
 * data (1M keys, glibc: 228 -> 196 MiB per node; jemalloc would return them
 * over ~10 s by itself, this is at once). After a snapshot of our own only
 * once the node is idle (mr_node_snap_poll): it holds the event loop for as
 * long as it walks the heap. */
static void give_back_memory(void)
{
    uint64_t t0 = uv_hrtime();
    if (mallctl != NULL)
        (void)mallctl("arena.4096.purge", NULL, NULL, NULL, 0); /* 4096: MALLCTL_ARENAS_ALL */
    else
        malloc_trim(0);
    LOGD("returned free memory to the system in %.1f ms", (double)(uv_hrtime() - t0) / 1e6);
}

static void finish_work(uv_work_t *w)
{
    struct mr_node *n = w->data;
    n->snap_work_rc = mr_store_snap_writer_finish(n->snap_writer, n->snap_errmsg);
    n->snap_writer = NULL;
}

static void finish_done(uv_work_t *w, int status)
{
    struct mr_node *n = w->data;
    struct mr_raft_event ev;
    uint64_t trailing = n->job_trailing;
    (void)status;
    n->snap_work_busy = 0;
    if (n->snap_work_rc != 0) {
        LOGW("snapshot at index %llu failed: %s", (unsigned long long)n->job_index, n->snap_errmsg);
        return;
    }
    n->snap_index = n->job_index;
    n->snap_size = n->job.size;
    n->snapshots_taken++;
    if (n->m_snapshots) mr_http_metric_add(n->m_snapshots, 1);
    LOGI("snapshot at index %llu is durable", (unsigned long long)n->job_index);
    if (n->is_stopping) return;
    memset(&ev, 0, sizeof ev);
    ev.type = MR_RAFT_EVENT_SNAPSHOT_TAKEN;
    ev.index = n->job_index;
    ev.term = n->job_term;
    ev.max_trailing = trailing; /* the same cut as the store's below (0: the option, 0) */
    mr_node_step(n, &ev);
    if (n->job_index > trailing + 1 && !n->disk_error) {
        int rv = mr_store_compact(n->store, n->job_index - trailing, NULL);
        if (rv != 0 && rv != MR_EINVAL) LOGW("compaction failed: %s", mr_strerror(rv));
    }
    /* not now: once the node is idle (mr_node_snap_trim_due) */
    n->trim_pending = 1;
    n->trim_applied = n->applied;
    n->trim_since_ms = n->trim_idle_since_ms = uv_now(&n->loop);
}

void mr_node_trim_soon(struct mr_node *n)
{
    if (n->trim_pending) return; /* the one pending keeps its deadline */
    n->trim_pending = 1;
    n->trim_applied = n->applied;
    n->trim_since_ms = n->trim_idle_since_ms = uv_now(&n->loop);
}

void mr_node_snap_poll(struct mr_node *n)
{
    char err[MR_ERRMSG_SIZE] = "";
    int rv;
    if (n->trim_pending) {
        uint64_t now = uv_now(&n->loop);
        if (n->applied != n->trim_applied) {
            n->trim_applied = n->applied;
            n->trim_idle_since_ms = now;
        }
        if (mr_node_snap_trim_due(now, n->trim_idle_since_ms, n->trim_since_ms)) {
            n->trim_pending = 0;
            give_back_memory();
        }
    }
    if (!n->job_running) return;
    rv = mr_sm_snapshot_poll(&n->job, 0, err);
    if (rv == MR_EBUSY) return;
    n->job_running = 0;
    if (rv != 0) {
        LOGW("snapshot at index %llu failed: %s", (unsigned long long)n->job_index, err);
        mr_store_snap_writer_abort(n->snap_writer);
        n->snap_writer = NULL;
        return;
    }
    n->snap_work.data = n;
    n->snap_work_busy = 1;
    if (uv_queue_work(&n->loop, &n->snap_work, finish_work, finish_done) != 0) {
        n->snap_work_busy = 0;
        mr_store_snap_writer_abort(n->snap_writer);
        n->snap_writer = NULL;
    }
}

/* ---- installing ---------------------------------------------------------------- */
/* What restore_sm leaves for the loop's part (restore_loop). */
struct restored {
    uint64_t snap_size;
    int timers_rv; /* the state was replaced but its timers could not be */
    char timers_err[MR_ERRMSG_SIZE];
};

/* Drops restore_sm's view of the payload: the copy, or the mapping. */
static void release_payload(struct mr_store_snap_reader *r, unsigned char *copy)
{
    if (copy != NULL)
        mr_free(copy);
    else
        mr_store_snap_reader_unmap(r);
}

/* The state machine's part of a restore: touches n->sm, n->idem and
 * n->last_time_ms only, so it runs on the apply thread (install) or on the
 * loop while the apply thread is idle (start, resync). */
static int restore_sm(struct mr_node *n, struct mr_store_snap_reader *r, struct restored *out,
                      char *errmsg)
{
    const struct mr_store_snap_info *info = mr_store_snap_reader_info(r);
    const unsigned char *buf;
    unsigned char *copy = NULL;
    uint64_t off = 0, idem_len, sections_len = 0;
    struct mr_node_sections sec;
    size_t used;
    int rv;
    if (info->size < NODE_SNAP_HDR_V1 || info->size > (uint64_t)SIZE_MAX / 2) {
        mr_errmsg_printf(errmsg, "snapshot %llu: payload too small", (unsigned long long)info->index);
        return MR_ECORRUPT;
    }
    /* Parsed in place from a read-only mapping of the file: no copy of the
     * whole payload into anonymous memory (page faults, a memcpy from the
     * page cache) at a restart of a large state. Read into a buffer only
     * when it cannot be mapped. */
    buf = getenv("MR_SNAP_NO_MMAP") == NULL ? mr_store_snap_reader_map(r) : NULL;
    if (buf == NULL) {
        copy = mr_malloc((size_t)info->size + 1);
        if (copy == NULL) return MR_ENOMEM;
        while (off < info->size) {
            ssize_t got =
                mr_store_snap_reader_read(r, off, copy + off, (size_t)(info->size - off));
            if (got <= 0) {
                mr_free(copy);
                mr_errmsg_printf(errmsg, "snapshot %llu: read failed",
                                 (unsigned long long)info->index);
                return got < 0 ? (int)got : MR_ECORRUPT;
            }
            off += (uint64_t)got;
        }
        buf = copy;
    }
    {
        uint32_t ver = mr_get_u32(buf + 4);
        size_t hdr = ver == 1 ? NODE_SNAP_HDR_V1 : ver == 2 ? NODE_SNAP_HDR_V2 : NODE_SNAP_HDR;
        struct mr_idem fresh;
        if (memcmp(buf, NODE_SNAP_MAGIC, 4) != 0 || ver < 1 || ver > 3 || info->size < hdr ||
            mr_get_u64(buf + 8) > info->size - hdr ||
            (ver >= 3 && mr_get_u64(buf + 24) > info->size - hdr - mr_get_u64(buf + 8))) {
            release_payload(r, copy);
            mr_errmsg_printf(errmsg, "snapshot %llu: not a moonraft node snapshot",
                             (unsigned long long)info->index);
            return MR_ECORRUPT;
        }
        idem_len = mr_get_u64(buf + 8);
        if (ver >= 3) sections_len = mr_get_u64(buf + 24);
        rv = mr_node_sections_parse(buf + hdr + idem_len, (size_t)sections_len, &sec, errmsg);
        if (rv != 0) {
            release_payload(r, copy);
            return rv;
        }
        /* Decode into a fresh table and swap only once the state machine has
         * accepted its part: a failure leaves the old state whole. */
        rv = mr_idem_init(&fresh, n->idem.window);
        if (rv == 0) rv = mr_idem_decode(&fresh, buf + hdr, (size_t)idem_len, &used);
        if (rv != 0) {
            mr_idem_close(&fresh);
            release_payload(r, copy);
            mr_errmsg_printf(errmsg, "snapshot %llu: bad idempotency table",
                             (unsigned long long)info->index);
            return rv == MR_ENOMEM ? rv : MR_ECORRUPT;
        }
        /* With the script the payload was written by (older snapshots: the
         * config's script, sec.has_script = 0). */
        rv = mr_sm_restore_script(n->sm, sec.has_script ? sec.script_src : NULL, sec.script_len,
                                  sec.script_label, sec.script_label_len, sec.script_index,
                                  (const char *)buf + hdr + idem_len + sections_len,
                                  (size_t)(info->size - hdr - idem_len - sections_len), errmsg);
        if (rv == 0) {
            struct mr_queue *q;
            mr_idem_close(&n->idem);
            n->idem = fresh;
            /* the list head moved: re-point its neighbours */
            q = &n->idem.order;
            if (mr_queue_empty(&fresh.order)) {
                mr_queue_init(q);
            } else {
                q->next->prev = q;
                q->prev->next = q;
            }
            __atomic_store_n(&n->last_time_ms, ver == 1 ? 0 : mr_get_u64(buf + 16),
                             __ATOMIC_RELAXED);
            out->timers_rv = mr_node_sections_commit(n, &sec, out->timers_err);
            out->snap_size = info->size - hdr - idem_len - sections_len;
        } else {
            mr_idem_close(&fresh);
        }
        release_payload(r, copy);
        return rv;
    }
}

/* The loop's part, once restore_sm succeeded. */
static void restore_loop(struct mr_node *n, const struct restored *o)
{
    if (o->timers_rv != 0) {
        /* Going on without the deadlines would diverge (they would never
         * fire here): stop. */
        LOGE("cannot restore the pending timers from the snapshot: %s; stopping", o->timers_err);
        n->is_sm_stale = 1;
        mr_node_request_stop(n, MR_NODE_EXIT_RUNTIME);
    }
    mr_node_sections_committed(n);
    n->snap_size = o->snap_size;
    n->log_bytes = 0;
}

static int restore_from_reader(struct mr_node *n, struct mr_store_snap_reader *r, char *errmsg)
{
    struct restored o;
    int rv;
    MR_ASSERT(mr_node_apply_is_idle(n));
    memset(&o, 0, sizeof o);
    rv = restore_sm(n, r, &o, errmsg);
    if (rv == 0) restore_loop(n, &o);
    return rv;
}

int mr_node_snap_restore_newest(struct mr_node *n, char *errmsg)
{
    struct mr_store_snap_reader *r;
    int rv = mr_store_snap_reader_open(n->store, &r, errmsg);
    if (rv != 0) return rv;
    rv = restore_from_reader(n, r, errmsg);
    mr_store_snap_reader_close(r);
    return rv;
}

/* Test-only fault injection (MOONRAFT_FAULT_SNAP_INSTALL=N or N,late): the
 * next N snapshot installs fail, as if the payload could not be allocated or
 * the restore script ran out of budget; with ",late" they fail after the
 * state machine was replaced (as a failed WAL reset would), which leaves it
 * stale. The integration tests use it. */
void mr_node_snap_fault_setup(struct mr_node *n)
{
    const char *v = getenv("MOONRAFT_FAULT_SNAP_INSTALL");
    if (v == NULL || v[0] == '\0') return;
    n->fault_installs = (unsigned)strtoul(v, NULL, 10);
    n->fault_install_late = strstr(v, "late") != NULL;
    LOGW("MOONRAFT_FAULT_SNAP_INSTALL is set: the next %u snapshot installs fail%s (testing "
         "only)",
         n->fault_installs, n->fault_install_late ? " after replacing the state" : "");
}

static int fault_install(struct mr_node *n, int late, char *err)
{
    if (n->fault_installs == 0 || n->fault_install_late != late) return 0;
    n->fault_installs--;
    mr_errmsg_printf(err, "injected fault (MOONRAFT_FAULT_SNAP_INSTALL)");
    return MR_EIOERR;
}

/* An install whose restore runs on the apply thread. */
struct install {
    mr_index index;
    mr_term term;
    struct mr_rcbuf *conf;
    struct mr_store_snap_reader *r;
    struct restored o;
    char err[MR_ERRMSG_SIZE];
};

/* After the state machine restored: reset the log and adopt the snapshot.
 * 0, or an error that leaves the state machine stale. */
static int install_finish(struct mr_node *n, mr_index index, mr_term term,
                          struct mr_rcbuf *conf, char *err)
{
    uint64_t seq = 0;
    /* From here on the state machine is the snapshot's. */
    int rv = fault_install(n, 1, err);
    if (rv == 0) {
        rv = mr_store_reset(n->store, index + 1, &seq);
        if (rv != 0) mr_errmsg_printf(err, "reset the log: %s", mr_strerror(rv));
    }
    if (rv != 0) {
        n->is_sm_stale = 1;
        LOGE("installing the snapshot at index %llu failed after the state machine was "
             "replaced (%s): no reads or applies until a snapshot is installed",
             (unsigned long long)index, err);
        return rv;
    }
    n->last_seq = seq; /* the core's acknowledgement waits for the reset */
    n->last_queued = index;
    mr_node_ops_on_snapshot_installed(n, index);
    n->applied = index;
    n->applied_term = term;
    n->snap_index = index;
    n->has_hash = 0;
    if (n->is_sm_stale) LOGI("the state machine is current again");
    n->is_sm_stale = 0;
    if (conf != NULL) mr_node_apply_config(n, conf->data, conf->len, index);
    n->snapshots_installed++;
    give_back_memory();
    if (n->m_snapshots) mr_http_metric_add(n->m_snapshots, 1);
    LOGI("installed the leader's snapshot at index %llu (term %llu)", (unsigned long long)index,
         (unsigned long long)term);
    return 0;
}

/* Apply thread. */
static int install_work(struct mr_node *n, void *arg)
{
    struct install *in = arg;
    return restore_sm(n, in->r, &in->o, in->err);
}

/* Loop, once install_work returned: tells the core. */
static void install_done(struct mr_node *n, void *arg, int rv)
{
    struct install *in = arg;
    mr_store_snap_reader_close(in->r);
    if (rv != 0) {
        /* The old state stays (sm restore is atomic): the core keeps its log
         * and the leader retries later. */
        LOGE("cannot install the snapshot at index %llu: %s", (unsigned long long)in->index,
             in->err);
    } else {
        restore_loop(n, &in->o);
        rv = install_finish(n, in->index, in->term, in->conf, in->err);
    }
    mr_node_snap_installed(n, in->index, in->term, rv);
    mr_rcbuf_unref(in->conf);
    mr_free(in);
}

int mr_node_snap_install(struct mr_node *n, mr_index index, mr_term term, struct mr_rcbuf *conf,
                         int *is_async)
{
    char err[MR_ERRMSG_SIZE] = "";
    struct mr_store_snap_reader *r = NULL;
    struct install *in = NULL;
    int rv;
    *is_async = 0;
    /* The state machine is replaced below: take it from the apply thread
     * (what it applied meanwhile is answered first). */
    mr_node_apply_sync(n);
    rv = fault_install(n, 0, err);
    if (rv == 0 && (n->rx == NULL || !n->rx_complete || n->rx_index != index ||
                    n->rx_term != term)) {
        rv = MR_ENOTFOUND;
        mr_errmsg_printf(err, "no complete received snapshot at %llu/%llu",
                         (unsigned long long)index, (unsigned long long)term);
    }
    if (rv == 0 && (n->job_running || n->snap_work_busy)) {
        /* its finish would publish an older file and delete this one */
        rv = MR_EBUSY;
        mr_errmsg_printf(err, "a local snapshot is being written");
    }
    if (rv == 0 && n->ap != NULL && (in = mr_calloc(1, sizeof *in)) == NULL) {
        rv = MR_ENOMEM;
        mr_errmsg_printf(err, "out of memory");
    }
    if (rv == 0) {
        /* Only now, with the core asking for it, does the received file go
         * into snap/ (replacing the older ones). */
        rv = mr_store_snap_receiver_finish(n->rx, 0, 0, err);
        n->rx = NULL;
        n->rx_complete = 0;
    }
    if (rv == 0) rv = mr_store_snap_reader_open(n->store, &r, err);
    if (rv == 0 && mr_store_snap_reader_info(r)->index != index) {
        rv = MR_ENOTFOUND;
        mr_errmsg_printf(err, "the newest snapshot is not the received one at index %llu",
                         (unsigned long long)index);
    }
    if (rv == 0 && in != NULL) {
        /* The restore (seconds for a large state) runs on the apply thread;
         * the loop goes on answering heartbeats (the core drops appends and
         * does not campaign while the install is pending, raft.h). */
        in->index = index;
        in->term = term;
        in->conf = mr_rcbuf_ref(conf);
        in->r = r;
        *is_async = 1;
        mr_node_apply_call(n, install_work, install_done, in);
        return 0;
    }
    mr_free(in);
    if (rv == 0) rv = restore_from_reader(n, r, err);
    mr_store_snap_reader_close(r);
    if (rv != 0) {
        /* The old state stays (sm restore is atomic): the core keeps its log
         * and the leader retries later. */
        LOGE("cannot install the snapshot at index %llu: %s", (unsigned long long)index, err);
        return rv;
    }
    return install_finish(n, index, term, conf, err);
}

/* ---- sending -------------------------------------------------------------------- */
static void send_free(struct mr_node_snap_send *s)
{
    mr_queue_remove(&s->link);
    mr_store_snap_reader_close(s->reader);
    mr_free(s);
}

static void send_done(struct mr_node *n, mr_node_id to, int ok)
{
    struct mr_raft_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = MR_RAFT_EVENT_SNAPSHOT_DONE;
    ev.node = to;
    ev.ok = (uint8_t)ok;
    mr_node_step(n, &ev);
}

void mr_node_snap_send_start(struct mr_node *n, const struct mr_raft_msg *m)
{
    struct mr_queue *it;
    struct mr_node_snap_send *s;
    struct mr_raft_msg announce;
    const struct mr_store_snap_info *info;
    char err[MR_ERRMSG_SIZE] = "", nb[72];
    MR_QUEUE_FOREACH(it, &n->snap_sends)
    {
        s = MR_CONTAINER_OF(it, struct mr_node_snap_send, link);
        if (s->to == m->to) return; /* already streaming to it */
    }
    s = mr_calloc(1, sizeof *s);
    if (s == NULL) return;
    mr_queue_init(&s->link);
    if (mr_store_snap_reader_open(n->store, &s->reader, err) != 0) {
        LOGW("cannot send a snapshot: %s", err);
        mr_free(s);
        return;
    }
    info = mr_store_snap_reader_info(s->reader);
    s->to = m->to;
    s->index = info->index;
    s->term = info->term;
    s->size = info->size;
    announce = *m;
    announce.snap_index = info->index;
    announce.snap_term = info->term;
    announce.snap_config = info->conf;
    announce.snap_chunk = NULL;
    announce.entries = NULL;
    announce.n_entries = 0;
    if (mr_net_send_raft(&n->net, m->to, &announce) != 0) {
        send_free(s);
        send_done(n, m->to, 0);
        return;
    }
    mr_queue_push_tail(&n->snap_sends, &s->link);
    LOGI("sending snapshot at index %llu (%llu bytes) to %s", (unsigned long long)s->index,
         (unsigned long long)s->size, mr_node_name_of(n, m->to, nb, sizeof nb));
}

void mr_node_snap_send_pump(struct mr_node *n)
{
    struct mr_queue *it, *next;
    for (it = n->snap_sends.next; it != &n->snap_sends; it = next) {
        struct mr_node_snap_send *s = MR_CONTAINER_OF(it, struct mr_node_snap_send, link);
        next = it->next;
        for (;;) {
            struct mr_net_peer_stats ps;
            struct mr_net_snapshot_chunk c;
            struct mr_rcbuf *buf;
            size_t want;
            ssize_t got;
            int rv;
            if (mr_net_peer_stats(&n->net, s->to, &ps) != 0 || !ps.is_up) {
                mr_node_id to = s->to;
                send_free(s);
                send_done(n, to, 0);
                break;
            }
            if (ps.queued_bytes > SEND_WINDOW) break;
            want = s->size - s->offset > CHUNK_SIZE ? CHUNK_SIZE : (size_t)(s->size - s->offset);
            buf = mr_rcbuf_new(want);
            if (buf == NULL) break;
            got = want ? mr_store_snap_reader_read(s->reader, s->offset, buf->data, want) : 0;
            if (got < 0 || (size_t)got != want) {
                mr_node_id to = s->to;
                mr_rcbuf_unref(buf);
                send_free(s);
                send_done(n, to, 0);
                break;
            }
            memset(&c, 0, sizeof c);
            c.index = s->index;
            c.term = s->term;
            c.offset = s->offset;
            c.is_last = s->offset + want >= s->size;
            rv = mr_net_send_snapshot_chunk(&n->net, s->to, &c, buf);
            mr_rcbuf_unref(buf);
            if (rv == MR_EBUSY) break;
            if (rv != 0) {
                mr_node_id to = s->to;
                send_free(s);
                send_done(n, to, 0);
                break;
            }
            s->offset += want;
            if (c.is_last) {
                mr_node_id to = s->to;
                n->snapshots_sent++;
                send_free(s);
                send_done(n, to, 1);
                break;
            }
        }
    }
}

/* ---- receiving -------------------------------------------------------------------- */
static void rx_reset(struct mr_node *n)
{
    mr_store_snap_receiver_abort(n->rx);
    n->rx = NULL;
    n->rx_complete = 0;
    if (n->rx_has_msg) mr_rcbuf_unref(n->rx_msg.snap_config);
    memset(&n->rx_msg, 0, sizeof n->rx_msg);
    n->rx_has_msg = 0;
}

void mr_node_snap_on_msg(struct mr_node *n, mr_node_id from, const struct mr_raft_msg *m)
{
    char err[MR_ERRMSG_SIZE] = "", nb[72];
    const void *conf = m->snap_config ? m->snap_config->data : NULL;
    size_t conf_len = m->snap_config ? m->snap_config->len : 0;
    int rv;
    rx_reset(n);
    rv = mr_store_snap_receiver_begin(n->store, m->snap_index, m->snap_term, conf, conf_len, &n->rx, err);
    if (rv != 0) {
        LOGW("cannot receive a snapshot: %s", err);
        n->rx = NULL;
        return;
    }
    n->rx_msg = *m;
    n->rx_msg.entries = NULL;
    n->rx_msg.n_entries = 0;
    n->rx_msg.snap_chunk = NULL;
    n->rx_msg.snap_config = mr_rcbuf_ref(m->snap_config);
    n->rx_has_msg = 1;
    n->rx_index = m->snap_index;
    n->rx_term = m->snap_term;
    n->rx_from = from;
    LOGI("receiving a snapshot at index %llu from %s", (unsigned long long)m->snap_index,
         mr_node_name_of(n, from, nb, sizeof nb));
}

void mr_node_on_snapshot_chunk(struct mr_net *net, mr_node_id from,
                               const struct mr_net_snapshot_chunk *c)
{
    struct mr_node *n = net->data;
    char err[MR_ERRMSG_SIZE] = "";
    struct mr_raft_event ev;
    struct mr_raft_msg msg;
    int rv;
    if (n->rx == NULL || from != n->rx_from || c->index != n->rx_index || c->term != n->rx_term) return;
    rv = mr_store_snap_receiver_write(n->rx, c->offset, c->data, c->len, err);
    if (rv != 0) {
        LOGW("snapshot chunk at offset %llu refused: %s", (unsigned long long)c->offset, err);
        rx_reset(n);
        return;
    }
    if (!c->is_last) return;
    /* Kept aside: the core may not want it (we caught up meanwhile, or an
     * install is pending). If it does, it asks within this step through
     * ready.snapshot and mr_node_snap_install() publishes and restores it;
     * whatever is left is discarded below. */
    n->rx_complete = 1;
    msg = n->rx_msg;
    if (msg.ctx == MR_NODE_SNAP_RESYNC_CTX) {
        /* not a Raft install: the state machine alone is rebuilt */
        mr_node_integrity_resync_install(n, msg.snap_index, msg.snap_term);
        rx_reset(n);
        return;
    }
    memset(&ev, 0, sizeof ev);
    ev.type = MR_RAFT_EVENT_RECEIVE;
    ev.msg = &msg;
    mr_node_step(n, &ev);
    rx_reset(n);
}

void mr_node_snap_close(struct mr_node *n)
{
    while (!mr_queue_empty(&n->snap_sends))
        send_free(MR_CONTAINER_OF(n->snap_sends.next, struct mr_node_snap_send, link));
    rx_reset(n);
    if (n->job_running) {
        mr_sm_snapshot_abort(&n->job);
        n->job_running = 0;
        mr_store_snap_writer_abort(n->snap_writer);
        n->snap_writer = NULL;
    }
    /* A finish on the work queue completes during the final uv_run. */
}

/* ---- reading a payload offline (moonraft replay) ------------------------------ */
int mr_node_snap_parts_parse(const unsigned char *buf, size_t size, struct mr_node_snap_parts *out,
                             char *errmsg)
{
    uint32_t ver;
    size_t hdr;
    uint64_t idem_len, sections_len = 0;
    memset(out, 0, sizeof *out);
    if (size < NODE_SNAP_HDR_V1 || memcmp(buf, NODE_SNAP_MAGIC, 4) != 0) goto bad;
    ver = mr_get_u32(buf + 4);
    if (ver < 1 || ver > 3) goto bad;
    hdr = ver == 1 ? NODE_SNAP_HDR_V1 : ver == 2 ? NODE_SNAP_HDR_V2 : NODE_SNAP_HDR;
    if (size < hdr) goto bad;
    idem_len = mr_get_u64(buf + 8);
    if (idem_len > size - hdr) goto bad;
    if (ver >= 3) sections_len = mr_get_u64(buf + 24);
    if (sections_len > size - hdr - idem_len) goto bad;
    out->version = ver;
    out->last_time_ms = ver == 1 ? 0 : mr_get_u64(buf + 16);
    out->idem = buf + hdr;
    out->idem_len = (size_t)idem_len;
    out->sections = buf + hdr + idem_len;
    out->sections_len = (size_t)sections_len;
    out->payload = (const char *)buf + hdr + idem_len + sections_len;
    out->payload_len = size - hdr - (size_t)idem_len - (size_t)sections_len;
    return 0;
bad:
    mr_errmsg_printf(errmsg, "not a moonraft node snapshot");
    return MR_ECORRUPT;
}
