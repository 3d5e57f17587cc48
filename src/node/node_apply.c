/* node_apply: the apply thread.
 *
 * A node runs two threads (plus the storage writer, storage.c):
 *
 *   the LOOP thread (libuv): the Raft core, the peer network, the WAL
 *     submissions, HTTP, timers. It must never wait on Lua, or a script at
 *     its instruction budget delays heartbeats, votes and ReadIndex rounds
 *     and the node loses (or steals) leadership.
 *
 *   the APPLY thread (this file): runs the Lua state machine (n->sm) on
 *     committed entries, in log order, and the queries that wait for them.
 *
 * Ownership is handed over as a baton, not shared: while a job is out
 * (ap->job != NULL) the apply thread owns n->sm, n->idem and n->last_time_ms
 * (the loop only loads the latter atomically, for proposals); everything else
 * stays the loop's. When no job is out the loop owns them all, and the state
 * machine is exactly at n->applied: that is when the loop forks (snapshots,
 * integrity hashes, deploy trials: the only thread in the child is then the
 * loop thread, and the apply thread is parked in pthread_cond_wait holding no
 * lock the child could need), restores a snapshot at start or for an
 * integrity resync, switches scripts (SCRIPT entries) and starts hash
 * children (CHECK entries). Those two entry kinds are rare, so a job stops in
 * front of them and the loop applies them itself between jobs
 * (mr_node_apply_kick). A snapshot sent by the leader is restored on the
 * thread (mr_node_apply_call: a job that runs one function), and the core
 * hears SNAPSHOT_INSTALLED only once it is done (node_snap.c).
 *
 * A job is a slice of the backlog of committed entries (copies of the core's
 * entries, their payloads held by reference) plus the reads whose read index
 * the slice reaches (reads still wait for applied >= read index; they run
 * after the slice, on the state as of its end). The thread publishes each
 * entry's outcome as it goes (job->n_done under ap->mu, then uv_async_send);
 * the loop answers the clients, records watch events, applies configuration
 * entries and advances n->applied in order as outcomes arrive, while the
 * thread works on the next entry. Answers and n->applied are the loop's, so
 * nothing from Lua is published by the apply thread itself.
 *
 * When the loop needs the state machine in the middle of a job (a snapshot
 * install from the leader, an integrity resync, a deploy trial, a forced
 * snapshot), mr_node_apply_sync asks the thread to stop after the entry it is
 * running (at most one command's budget), waits, and takes what was applied;
 * the rest of the slice stays in the backlog. */
#include "node/node_int.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define JOB_MAX_ENTRIES 256
#define JOB_MAX_BYTES (1u << 20)
/* The apply thread wakes the loop with finished entries at most this often
 * within a job (and always at its end). */
#define PUBLISH_NS (500u * 1000u)

enum { AP_NOOP = 0, AP_RESULT, AP_CONFIG, AP_TICK, AP_CHECK, AP_SCRIPT };

/* One entry's outcome: written by whichever thread applied it, read by the
 * loop once published. */
struct applied {
    int kind;
    int status;       /* AP_RESULT: enum mr_sm_status */
    const char *text; /* AP_RESULT: result JSON or error message */
    size_t len;
    mr_index answer_index;
    char *owned;            /* a copy of an idempotency record's result */
    struct mr_sm_result res; /* events, traceback (freed by the loop) */
    int host_rv;            /* the Lua host failed (OOM): stop */
    int is_idem_oom;
    int tick_rv;            /* AP_TICK: mr_node_timers_apply_sm's code */
};

struct read_item {
    struct mr_node_op *op;
    int rv;
    struct mr_sm_result res;
};

struct job {
    /* a call (mr_node_apply_call) instead of entries and reads */
    mr_node_apply_work_cb fn;
    mr_node_apply_done_cb done;
    void *arg;
    int call_rv;
    struct mr_raft_entry *es; /* borrowed from the backlog (it holds the refs) */
    size_t n_es;
    struct applied *out;
    struct read_item *reads;
    size_t n_reads;
    mr_index end; /* the index the reads run at */
    /* under ap->mu */
    size_t n_done;
    int is_finished;
    int has_run_reads;
    /* loop only */
    size_t n_seen;
};

struct mr_node_applier {
    struct mr_node *n;
    pthread_t thread;
    int has_thread;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a job posted or stop (to the thread), a job finished (to sync) */
    int is_posted;     /* mu: the thread has not taken ap->job yet */
    int stop;          /* mu */
    int yield;         /* mu: stop after the current entry */
    uv_async_t async;
    int has_async;
    /* loop only */
    struct job *job; /* the job out, or NULL (the loop owns the state machine) */
    struct job call; /* the job of mr_node_apply_call */
    struct mr_raft_entry *backlog;
    size_t head, count, cap; /* entries backlog[head .. head+count) */
    int in_sync;             /* no new job: the caller holds the state machine */
    int snap_force;          /* a forced snapshot waits for the thread to be idle */
    int64_t next_deadline;   /* the state machine's, as of the last time the loop held it */
    size_t deadline_count;
    struct mr_sm_script_info script; /* idem; label points to script_label, no source */
    char script_label[1024];
};

/* ---- applying one entry (on either thread: touches n->sm, n->idem,
 * n->last_time_ms, n->fault_salt only) --------------------------------------------- */
static uint64_t clamp_time(struct mr_node *n, uint64_t t)
{
    uint64_t last = __atomic_load_n(&n->last_time_ms, __ATOMIC_RELAXED);
    /* ctx.time never goes backwards, even when a new leader's clock is
     * behind the old one's: the same clamp runs on every replica, and the
     * last value travels in snapshots. */
    if (t > last) {
        __atomic_store_n(&n->last_time_ms, t, __ATOMIC_RELAXED);
        last = t;
    }
    return last;
}

static void sm_normal(struct mr_node *n, const struct mr_raft_entry *e, struct applied *a)
{
    struct mr_node_entry ne;
    struct mr_sm_ctx ctx;
    const struct mr_idem_rec *rec;
    int rv;

    a->kind = AP_RESULT;
    a->answer_index = e->index;
    if (e->data == NULL || mr_node_entry_decode(e->data->data, e->data->len, &ne) != 0) {
        /* Same bytes on every node, so the same outcome everywhere. */
        static const char msg[] = "malformed log entry payload";
        LOGW("entry %llu: %s", (unsigned long long)e->index, msg);
        a->status = MR_SM_SCRIPT_ERROR;
        a->text = msg;
        a->len = sizeof msg - 1;
        return;
    }
    if (ne.key_len > 0 && (rec = mr_idem_get(&n->idem, ne.key, ne.key_len)) != NULL) {
        /* A retry of a command already applied: answer what the first one
         * got (a copy: the record may expire before the loop answers). */
        a->owned = mr_malloc(rec->result_len + 1);
        if (a->owned == NULL) {
            a->host_rv = MR_ENOMEM;
            return;
        }
        memcpy(a->owned, rec->result, rec->result_len);
        a->status = rec->status;
        a->text = a->owned;
        a->len = rec->result_len;
        a->answer_index = rec->index;
        return;
    }
    ctx.index = e->index;
    ctx.term = e->term;
    ctx.time_ms = (int64_t)clamp_time(n, ne.time_ms);
    ctx.fault_salt = n->fault_salt_until == 0 || e->index <= n->fault_salt_until
                         ? n->fault_salt
                         : NULL;
    rv = mr_sm_apply(n->sm, &ctx, ne.cmd, ne.cmd_len, &a->res);
    if (rv != 0) {
        a->host_rv = rv;
        return;
    }
    a->status = a->res.status;
    a->text = a->res.status == MR_SM_OK ? a->res.json : a->res.error;
    a->len = a->res.status == MR_SM_OK ? a->res.json_len : (a->res.error ? strlen(a->res.error) : 0);
    if (a->text == NULL) {
        a->text = "";
        a->len = 0;
    }
    if (a->res.status != MR_SM_OK && a->res.traceback != NULL) {
        LOGD("entry %llu: script %s: %s", (unsigned long long)e->index,
             mr_sm_status_name(a->res.status), a->res.traceback);
    }
    if (ne.key_len > 0 &&
        mr_idem_put(&n->idem, ne.key, ne.key_len, e->index, a->status, a->text, a->len) ==
            MR_ENOMEM)
        a->is_idem_oom = 1;
}

static int is_check(const struct mr_raft_entry *e)
{
    return e->type == MR_RAFT_ENTRY_NORMAL && e->data != NULL && e->data->len == 2 &&
           e->data->data[0] == 1 && e->data->data[1] == MR_NODE_ENTRY_CHECK;
}

static int is_tick(const struct mr_raft_entry *e)
{
    return e->type == MR_RAFT_ENTRY_NORMAL && e->data != NULL && e->data->len >= 2 &&
           e->data->data[0] == 1 && e->data->data[1] == MR_NODE_ENTRY_TICK;
}

/* The loop applies these itself, between jobs (see the top). */
static int is_loop_only(const struct mr_raft_entry *e)
{
    return is_check(e) || (e->type == MR_RAFT_ENTRY_NORMAL && mr_node_is_script_entry(e));
}

/* The state machine's part of applying e: on the apply thread, or on the
 * loop while no job is out. */
static void apply_sm(struct mr_node *n, const struct mr_raft_entry *e, struct applied *a)
{
    memset(a, 0, sizeof *a);
    switch (e->type) {
    case MR_RAFT_ENTRY_NORMAL:
        if (is_check(e)) {
            a->kind = AP_CHECK;
        } else if (is_tick(e)) {
            a->kind = AP_TICK;
            a->tick_rv = mr_node_timers_apply_sm(n, e, &a->res);
        } else if (mr_node_is_script_entry(e)) {
            a->kind = AP_SCRIPT;
        } else {
            sm_normal(n, e, a);
        }
        break;
    case MR_RAFT_ENTRY_CONFIG:
        a->kind = AP_CONFIG;
        break;
    default: /* NOOP */
        break;
    }
    if (a->host_rv == 0) mr_idem_expire(&n->idem, e->index);
}

/* The loop's part, in log order. */
static void apply_loop(struct mr_node *n, const struct mr_raft_entry *e, struct applied *a)
{
    if (a->host_rv != 0) {
        LOGE("state machine host failed at entry %llu: %s; stopping to avoid divergence",
             (unsigned long long)e->index, mr_strerror(a->host_rv));
        mr_node_request_stop(n, MR_NODE_EXIT_RUNTIME);
        return;
    }
    switch (a->kind) {
    case AP_RESULT:
        if (a->res.is_uncertain) {
            /* The heap of a replica restored from a snapshot is laid out
             * differently from one that replayed the log: near the cap, one
             * may fail where another succeeds (or recover differently). Have
             * the state checked before serving reads from it. */
            mr_node_integrity_suspect(n, e->index, "the command hit the Lua memory cap");
        }
        if (a->is_idem_oom) {
            LOGE("out of memory recording an idempotency key; stopping");
            mr_node_request_stop(n, MR_NODE_EXIT_RUNTIME);
        }
        if (a->res.events != NULL)
            mr_node_watch_record(n, e->index, a->res.events, a->res.events_len);
        mr_node_ops_on_applied(n, e->index, e->term, a->status, a->text, a->len,
                               a->answer_index);
        break;
    case AP_TICK:
        mr_node_timers_applied(n, e, a->tick_rv, &a->res);
        break;
    case AP_CHECK:
        mr_node_integrity_apply(n, e->index);
        mr_node_ops_on_applied(n, e->index, e->term, MR_SM_OK, "null", 4, e->index);
        break;
    case AP_SCRIPT:
        mr_node_deploy_apply(n, e);
        break;
    case AP_CONFIG:
        if (e->data != NULL) mr_node_apply_config(n, e->data->data, e->data->len, e->index);
        mr_node_ops_on_config_applied(n, e->index, e->term);
        break;
    default:
        break;
    }
    n->applied = e->index;
    n->applied_term = e->term;
    if (e->data != NULL) n->log_bytes += e->data->len;
}

static void applied_free(struct applied *a)
{
    mr_free(a->owned);
    mr_sm_result_free(&a->res);
}

/* ---- the thread ------------------------------------------------------------- */
static void run_job(struct mr_node_applier *ap, struct job *job)
{
    struct mr_node *n = ap->n;
    size_t i;
    int stop = 0;
    if (job->fn != NULL) {
        int rv = job->fn(n, job->arg);
        pthread_mutex_lock(&ap->mu);
        job->call_rv = rv;
        job->is_finished = 1;
        pthread_cond_broadcast(&ap->cv);
        uv_async_send(&ap->async);
        pthread_mutex_unlock(&ap->mu);
        return;
    }
    uint64_t last_publish = uv_hrtime();
    for (i = 0; i < job->n_es && !stop; i++) {
        apply_sm(n, &job->es[i], &job->out[i]);
        pthread_mutex_lock(&ap->mu);
        job->n_done = i + 1;
        stop = ap->yield || job->out[i].host_rv != 0;
        pthread_mutex_unlock(&ap->mu);
        /* Wake the loop for finished entries only when the job has run
         * for a while (a slow command's neighbours need not wait for the
         * whole slice); the end of the job wakes it anyway, and a wake-up
         * per entry costs a loop iteration and a context switch each
         * (a fifth of the CPU of a write at 16 clients). */
        if (i + 1 < job->n_es && !stop) {
            uint64_t now = uv_hrtime();
            if (now - last_publish >= PUBLISH_NS) {
                last_publish = now;
                uv_async_send(&ap->async);
            }
        }
    }
    if (!stop) {
        for (i = 0; i < job->n_reads; i++) {
            struct read_item *r = &job->reads[i];
            r->rv = mr_sm_query(n->sm, r->op->body, r->op->body_len, &r->res);
        }
    }
    pthread_mutex_lock(&ap->mu);
    job->has_run_reads = !stop;
    job->is_finished = 1;
    pthread_cond_broadcast(&ap->cv);
    uv_async_send(&ap->async);
    pthread_mutex_unlock(&ap->mu);
}

static void *thread_main(void *arg)
{
    struct mr_node_applier *ap = arg;
    pthread_mutex_lock(&ap->mu);
    for (;;) {
        while (!ap->stop && !ap->is_posted) pthread_cond_wait(&ap->cv, &ap->mu);
        if (!ap->is_posted) break; /* stop, and nothing to finish */
        ap->is_posted = 0;
        struct job *job = ap->job;
        pthread_mutex_unlock(&ap->mu);
        run_job(ap, job);
        pthread_mutex_lock(&ap->mu);
    }
    pthread_mutex_unlock(&ap->mu);
    return NULL;
}

/* ---- the loop's side ---------------------------------------------------------- */
static void backlog_pop(struct mr_node_applier *ap)
{
    mr_rcbuf_unref(ap->backlog[ap->head].data);
    ap->head++;
    ap->count--;
    if (ap->count == 0) ap->head = 0;
}

static int backlog_push(struct mr_node_applier *ap, const struct mr_raft_entry *e)
{
    if (ap->head + ap->count == ap->cap) {
        if (ap->head > 0) {
            /* a job has its own copies of the entries it runs */
            memmove(ap->backlog, ap->backlog + ap->head, ap->count * sizeof *ap->backlog);
            ap->head = 0;
        } else {
            size_t cap = ap->cap ? ap->cap * 2 : 256;
            struct mr_raft_entry *b = mr_realloc(ap->backlog, cap * sizeof *b);
            if (b == NULL) return MR_ENOMEM;
            ap->backlog = b;
            ap->cap = cap;
        }
    }
    ap->backlog[ap->head + ap->count] = *e;
    ap->backlog[ap->head + ap->count].data = mr_rcbuf_ref(e->data);
    ap->count++;
    return 0;
}

static void job_free(struct job *job)
{
    if (job == NULL) return;
    for (size_t i = 0; i < job->n_es; i++) applied_free(&job->out[i]);
    for (size_t i = 0; i < job->n_reads; i++) mr_sm_result_free(&job->reads[i].res);
    mr_free(job->es);
    mr_free(job->out);
    mr_free(job->reads);
    mr_free(job);
}

/* What the loop shows of the state machine while a job runs (a restore on
 * the thread swaps the script and frees the old one's strings). */
static void refresh_deadlines(struct mr_node *n)
{
    struct mr_node_applier *ap = n->ap;
    ap->next_deadline = mr_sm_next_deadline(n->sm);
    ap->deadline_count = mr_sm_deadline_count(n->sm);
    mr_sm_script_info(n->sm, &ap->script);
    snprintf(ap->script_label, sizeof ap->script_label, "%s", ap->script.label);
    ap->script.label = ap->script_label;
    ap->script.source = NULL;
}

/* After entries were applied: what used to follow every apply batch. */
static void after_apply(struct mr_node *n)
{
    struct mr_node_applier *ap = n->ap;
    if (ap->job == NULL) {
        /* An idle point: use it before mr_node_ops_check_reads hands the
         * backlog to the thread again. Under writes that keep the thread
         * busy there is always a next job to post, so after it there would
         * be no idle point at all: no snapshot (the log grows; a backup, the
         * NOSPACE alarm or a resync wait for the load to stop) and stale
         * cached deadlines (timers do not fire). */
        int force = ap->snap_force;
        ap->snap_force = 0;
        refresh_deadlines(n);
        mr_node_snap_maybe_start(n, force);
    }
    mr_node_ops_check_reads(n);
    mr_node_watch_notify(n);
}

/* Takes what the thread published; with the job finished, answers its reads
 * and frees it (the loop owns the state machine again). */
static void progress(struct mr_node_applier *ap)
{
    struct mr_node *n = ap->n;
    struct job *job = ap->job;
    size_t done, i;
    int fin, has_reads;
    if (job == NULL) return;
    pthread_mutex_lock(&ap->mu);
    done = job->n_done;
    fin = job->is_finished;
    has_reads = job->has_run_reads;
    pthread_mutex_unlock(&ap->mu);
    if (job->fn != NULL) {
        if (!fin) return;
        ap->job = NULL;
        job->done(n, job->arg, job->call_rv);
        after_apply(n);
        return;
    }
    for (; job->n_seen < done; job->n_seen++) {
        i = job->n_seen;
        MR_ASSERT(ap->count > 0 && ap->backlog[ap->head].index == job->es[i].index);
        apply_loop(n, &job->es[i], &job->out[i]);
        backlog_pop(ap);
    }
    if (!fin) {
        if (done > 0) after_apply(n);
        return;
    }
    ap->job = NULL;
    for (i = 0; i < job->n_reads; i++) {
        struct read_item *r = &job->reads[i];
        if (has_reads) {
            /* refused if an entry of this job left the state suspect */
            if (!mr_node_ops_read_refused(n, r->op))
                mr_node_ops_read_done(n, r->op, r->rv, &r->res, job->end);
        } else {
            /* the thread stopped early: back in line for the next job */
            mr_queue_remove(&r->op->link);
            mr_queue_push_tail(&n->read_apply, &r->op->link);
        }
    }
    job_free(job);
    after_apply(n);
}

static void on_async(uv_async_t *h)
{
    struct mr_node *n = h->data;
    progress(n->ap);
    mr_node_apply_kick(n);
}

static void post(struct mr_node_applier *ap, struct job *job)
{
    ap->job = job;
    pthread_mutex_lock(&ap->mu);
    ap->is_posted = 1;
    pthread_cond_broadcast(&ap->cv);
    pthread_mutex_unlock(&ap->mu);
}

/* Applies e on the loop (no job out): the state machine's part and the
 * loop's, at once. */
static void apply_here(struct mr_node *n, const struct mr_raft_entry *e)
{
    struct applied a;
    apply_sm(n, e, &a);
    apply_loop(n, e, &a);
    applied_free(&a);
}

void mr_node_apply_kick(struct mr_node *n)
{
    struct mr_node_applier *ap = n->ap;
    struct job *job;
    size_t k = 0, bytes = 0;
    int applied_here = 0;
    struct mr_queue *it, *next;
    if (ap == NULL || ap->job != NULL || ap->in_sync || n->is_stopping) return;
    for (;;) {
        while (ap->count > 0 && ap->backlog[ap->head].index <= n->applied) backlog_pop(ap);
        if (ap->count > 0 && n->is_sm_stale) {
            /* Applying on a state machine that does not match the log would
             * diverge; the entries are covered by the snapshot the leader
             * sends again (it only sends one when they are compacted away). */
            LOGD("state machine is stale: entries %llu..%llu not applied",
                 (unsigned long long)ap->backlog[ap->head].index,
                 (unsigned long long)ap->backlog[ap->head + ap->count - 1].index);
            while (ap->count > 0) backlog_pop(ap);
        }
        if (ap->count == 0 || n->is_stopping || !is_loop_only(&ap->backlog[ap->head])) break;
        apply_here(n, &ap->backlog[ap->head]);
        backlog_pop(ap);
        applied_here = 1;
    }
    if (applied_here) {
        ap->in_sync = 1; /* no job from inside after_apply: this call goes on */
        after_apply(n);
        ap->in_sync = 0;
    }
    if (n->is_stopping) return;
    while (k < ap->count && k < JOB_MAX_ENTRIES && bytes < JOB_MAX_BYTES &&
           !is_loop_only(&ap->backlog[ap->head + k])) {
        const struct mr_raft_entry *e = &ap->backlog[ap->head + k];
        bytes += e->data != NULL ? e->data->len : 0;
        k++;
    }
    job = mr_calloc(1, sizeof *job);
    if (job == NULL) return; /* retried at the next commit or read */
    job->end = k > 0 ? ap->backlog[ap->head + k - 1].index : n->applied;
    for (it = n->read_apply.next; it != &n->read_apply; it = it->next) {
        struct mr_node_op *op = MR_CONTAINER_OF(it, struct mr_node_op, link);
        if (op->read_index <= job->end) job->n_reads++;
    }
    if (k == 0 && job->n_reads == 0) {
        mr_free(job);
        return;
    }
    job->es = mr_malloc((k ? k : 1) * sizeof *job->es);
    job->out = mr_calloc(k ? k : 1, sizeof *job->out);
    job->reads = mr_calloc(job->n_reads ? job->n_reads : 1, sizeof *job->reads);
    if (job->es == NULL || job->out == NULL || job->reads == NULL) {
        job->n_reads = 0;
        job_free(job);
        return;
    }
    if (k > 0) memcpy(job->es, ap->backlog + ap->head, k * sizeof *job->es);
    job->n_es = k;
    job->n_reads = 0;
    for (it = n->read_apply.next; it != &n->read_apply; it = next) {
        struct mr_node_op *op = MR_CONTAINER_OF(it, struct mr_node_op, link);
        next = it->next;
        if (op->read_index > job->end) continue;
        if (mr_node_ops_read_refused(n, op)) continue; /* answered */
        /* out of read_apply: a running read neither expires nor is cancelled */
        mr_queue_remove(&op->link);
        mr_queue_push_tail(&n->read_running, &op->link);
        job->reads[job->n_reads++].op = op;
    }
    if (k == 0 && job->n_reads == 0) {
        job_free(job);
        return;
    }
    post(ap, job);
}

void mr_node_apply_entries(struct mr_node *n, const struct mr_raft_entry *es, size_t count)
{
    struct mr_node_applier *ap = n->ap;
    size_t i;
    if (n->is_sm_stale) {
        LOGD("state machine is stale: entries %llu..%llu not applied",
             count ? (unsigned long long)es[0].index : 0ULL,
             count ? (unsigned long long)es[count - 1].index : 0ULL);
        return;
    }
    for (i = 0; i < count; i++) {
        mr_index last = ap->count > 0 ? ap->backlog[ap->head + ap->count - 1].index : n->applied;
        if (es[i].index <= last) continue;
        if (backlog_push(ap, &es[i]) != 0) {
            LOGE("out of memory queueing committed entries; stopping");
            mr_node_request_stop(n, MR_NODE_EXIT_RUNTIME);
            return;
        }
    }
    mr_node_apply_kick(n);
}

void mr_node_apply_now(struct mr_node *n, const struct mr_raft_entry *es, size_t count)
{
    struct mr_node_applier *ap = n->ap;
    size_t i;
    int any = 0;
    MR_ASSERT(ap->job == NULL);
    if (n->is_sm_stale) return;
    ap->in_sync = 1;
    for (i = 0; i < count && !n->is_stopping; i++) {
        if (es[i].index <= n->applied) continue;
        apply_here(n, &es[i]);
        any = 1;
    }
    if (any) after_apply(n);
    ap->in_sync = 0;
    uv_async_send(&ap->async); /* what the backlog holds after them: next turn */
}

void mr_node_apply_sync(struct mr_node *n)
{
    struct mr_node_applier *ap = n->ap;
    if (ap == NULL || ap->job == NULL) return;
    pthread_mutex_lock(&ap->mu);
    ap->yield = 1;
    while (!ap->job->is_finished) pthread_cond_wait(&ap->cv, &ap->mu);
    ap->yield = 0;
    pthread_mutex_unlock(&ap->mu);
    ap->in_sync = 1;
    progress(ap);
    ap->in_sync = 0;
    MR_ASSERT(ap->job == NULL);
    uv_async_send(&ap->async); /* the rest of the backlog: next turn */
}

void mr_node_apply_call(struct mr_node *n, mr_node_apply_work_cb fn, mr_node_apply_done_cb done,
                        void *arg)
{
    struct mr_node_applier *ap = n->ap;
    MR_ASSERT(ap->job == NULL);
    memset(&ap->call, 0, sizeof ap->call);
    ap->call.fn = fn;
    ap->call.done = done;
    ap->call.arg = arg;
    post(ap, &ap->call);
}

int mr_node_apply_is_idle(const struct mr_node *n)
{
    return n->ap == NULL || n->ap->job == NULL;
}

void mr_node_apply_snapshot_soon(struct mr_node *n, int force)
{
    if (mr_node_apply_is_idle(n)) {
        mr_node_snap_maybe_start(n, force);
    } else if (force) {
        n->ap->snap_force = 1;
    }
}

int64_t mr_node_apply_next_deadline(struct mr_node *n)
{
    if (n->sm == NULL) return INT64_MAX;
    if (mr_node_apply_is_idle(n)) refresh_deadlines(n);
    return n->ap ? n->ap->next_deadline : mr_sm_next_deadline(n->sm);
}

size_t mr_node_apply_deadline_count(struct mr_node *n)
{
    if (n->sm == NULL) return 0;
    if (mr_node_apply_is_idle(n)) refresh_deadlines(n);
    return n->ap ? n->ap->deadline_count : mr_sm_deadline_count(n->sm);
}

void mr_node_apply_script_info(struct mr_node *n, struct mr_sm_script_info *out)
{
    if (n->ap == NULL) {
        mr_sm_script_info(n->sm, out);
        out->source = NULL;
        return;
    }
    if (mr_node_apply_is_idle(n)) refresh_deadlines(n);
    *out = n->ap->script;
}

int mr_node_apply_start(struct mr_node *n)
{
    struct mr_node_applier *ap = mr_calloc(1, sizeof *ap);
    int rv;
    if (ap == NULL) return MR_ENOMEM;
    ap->n = n;
    ap->next_deadline = INT64_MAX;
    pthread_mutex_init(&ap->mu, NULL);
    pthread_cond_init(&ap->cv, NULL);
    rv = uv_async_init(&n->loop, &ap->async, on_async);
    if (rv != 0) {
        pthread_cond_destroy(&ap->cv);
        pthread_mutex_destroy(&ap->mu);
        mr_free(ap);
        return MR_ENOMEM;
    }
    ap->async.data = n;
    ap->has_async = 1;
    n->ap = ap;
    refresh_deadlines(n);
    rv = pthread_create(&ap->thread, NULL, thread_main, ap);
    if (rv != 0) return -rv; /* mr_node_apply_stop closes the handle */
    ap->has_thread = 1;
    return 0;
}

static void on_async_closed(uv_handle_t *h)
{
    struct mr_node *n = h->data;
    struct mr_node_applier *ap = n->ap;
    n->ap = NULL;
    pthread_cond_destroy(&ap->cv);
    pthread_mutex_destroy(&ap->mu);
    mr_free(ap);
}

void mr_node_apply_stop(struct mr_node *n)
{
    struct mr_node_applier *ap = n->ap;
    if (ap == NULL) return;
    /* Take what was applied (its clients get their answers), then stop. */
    mr_node_apply_sync(n);
    if (ap->has_thread) {
        pthread_mutex_lock(&ap->mu);
        ap->stop = 1;
        pthread_cond_broadcast(&ap->cv);
        pthread_mutex_unlock(&ap->mu);
        pthread_join(ap->thread, NULL);
        ap->has_thread = 0;
    }
    while (ap->count > 0) backlog_pop(ap);
    mr_free(ap->backlog);
    ap->backlog = NULL;
    ap->in_sync = 1; /* no more jobs */
    uv_close((uv_handle_t *)&ap->async, on_async_closed);
}
