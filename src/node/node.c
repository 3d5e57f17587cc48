/* node: lifecycle, the ready/step cycle, persistence ordering and apply.
 *
 * One libuv loop runs everything except the WAL writer thread (storage) and
 * the forked snapshot child (sm). Every input (tick, peer message, storage
 * progress, client request) ends in mr_node_step(), which feeds the Raft core
 * and then does what the ready batch asks, in the order raft.h prescribes. */
#include "node/node_int.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/stat.h>

/* ---- small helpers ------------------------------------------------------------ */

uint64_t mr_node_now(struct mr_node *n) { return uv_now(&n->loop); }

uint64_t mr_node_wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

int mr_node_find_member(struct mr_node *n, mr_node_id id, struct mr_node_member *out)
{
    struct mr_raft_status st;
    const struct mr_raft_server *s;
    mr_raft_status(&n->raft, &st);
    s = st.config ? mr_raft_config_get(st.config, id) : NULL;
    if (s == NULL) return MR_ENOTFOUND;
    mr_node_member_parse(out, s->id, s->role, s->context);
    return 0;
}

const char *mr_node_name_of(struct mr_node *n, mr_node_id id, char *buf, size_t len)
{
    struct mr_node_member m;
    if (id == 0) return NULL;
    if (id == n->id) {
        snprintf(buf, len, "%s", n->name);
    } else if (mr_node_find_member(n, id, &m) == 0 && m.name[0]) {
        snprintf(buf, len, "%s", m.name);
    } else {
        snprintf(buf, len, "%016llx", (unsigned long long)id);
    }
    return buf;
}

void mr_node_request_stop(struct mr_node *n, int code)
{
    if (n->is_stopping) return;
    n->exit_code = code;
    n->is_stopping = 1;
    uv_stop(&n->loop);
}

/* ---- tracer: the core's reasons go to the debug log --------------------------- */
static void trace_cb(void *data, mr_node_id id, const char *line)
{
    (void)data;
    (void)id;
    mr_node_log(MR_LOG_DEBUG, "raft: %s", line);
}

/* ---- sending ----------------------------------------------------------------- */
static void disk_failed_msg(struct mr_node *n, int rv, const char *what, const char *detail);

static void send_msg(struct mr_node *n, const struct mr_raft_msg *m)
{
    int rv;
    if (m->type == MR_RAFT_MSG_SNAPSHOT) {
        mr_node_snap_send_start(n, m);
        return;
    }
    if (m->type == MR_RAFT_MSG_APPEND) {
        /* entries whose payloads the log cache dropped: from the WAL (the
         * message is ours to fill: the ready's or a held copy) */
        char err[MR_ERRMSG_SIZE] = "";
        rv = mr_node_log_cache_fill(n, (struct mr_raft_msg *)m, err);
        if (rv == MR_EUNAVAIL) {
            LOGD("append to %llu dropped: %s", (unsigned long long)m->to,
                 err[0] ? err : "an entry was compacted meanwhile");
            return;
        }
        if (rv != 0) {
            /* damaged under acknowledged data (or unreadable): as any disk failure */
            disk_failed_msg(n, rv, "read the log back from the WAL",
                            err[0] ? err : mr_strerror(rv));
            return;
        }
    }
    rv = mr_net_send_raft(&n->net, m->to, m);
    if (rv != 0 && rv != MR_EBUSY && rv != MR_EUNAVAIL) {
        char nb[32];
        LOGD("send %s to %s failed: %s", mr_raft_msg_name(m->type),
             mr_node_name_of(n, m->to, nb, sizeof nb), mr_strerror(rv));
    }
}

static void release_held(struct mr_node *n, int send)
{
    while (!mr_queue_empty(&n->held)) {
        struct mr_node_held *h = MR_CONTAINER_OF(n->held.next, struct mr_node_held, link);
        size_t i;
        if (send && h->seq > n->done_seq) break;
        mr_queue_remove(&h->link);
        for (i = 0; i < h->n; i++) {
            if (send) send_msg(n, &h->msgs[i]);
            mr_raft_msg_release(&h->msgs[i]);
        }
        mr_free(h->msgs);
        mr_free(h);
    }
}

/* ---- disk failure ------------------------------------------------------------ */
static void disk_failed_msg(struct mr_node *n, int rv, const char *what, const char *detail)
{
    if (n->disk_error) return;
    n->disk_error = rv;
    if (detail != NULL && detail[0] != '\0')
        snprintf(n->disk_errmsg, sizeof n->disk_errmsg, "%s: %s", what, detail);
    else if (n->store != NULL)
        mr_store_status(n->store, n->disk_errmsg);
    if (n->disk_errmsg[0] == '\0') snprintf(n->disk_errmsg, sizeof n->disk_errmsg, "%s", mr_strerror(rv));
    /* Fail-stop for consensus: a node that cannot persist must neither lead
     * nor vote. It stops ticking and ignores peer traffic, so a leader stops
     * heartbeating and the others elect a new one within an election timeout;
     * requests here get 503 disk_failed. Status and metrics still answer. */
    LOGE("disk failure (%s): %s; this node leaves the cluster until it is restarted", what,
         n->disk_errmsg);
}

static void disk_failed(struct mr_node *n, int rv, const char *what)
{
    disk_failed_msg(n, rv, what, NULL);
}

/* ---- the ready cycle ---------------------------------------------------------- */
static void on_soft_state(struct mr_node *n, uint8_t state, mr_node_id leader)
{
    char nb[32];
    int leader_changed = leader != n->leader;
    if (state != n->role) {
        if (state == MR_RAFT_LEADER) {
            LOGI("became leader for term %llu", (unsigned long long)n->raft.term);
            if (n->m_elections) mr_http_metric_add(n->m_elections, 1);
            /* a leader whose state cannot be trusted hands over (next tick) */
            n->integ_check_handover = 1;
        } else if (n->role == MR_RAFT_LEADER) {
            LOGI("stepped down from leader (term %llu)", (unsigned long long)n->raft.term);
        } else if (state == MR_RAFT_CANDIDATE) {
            LOGI("starting an election for term %llu", (unsigned long long)n->raft.term);
        }
    }
    if (leader_changed) {
        if (leader != 0) {
            LOGI("leader is now %s (term %llu)", mr_node_name_of(n, leader, nb, sizeof nb),
                 (unsigned long long)n->raft.term);
        } else if (n->leader != 0) {
            LOGI("lost contact with leader %s", mr_node_name_of(n, n->leader, nb, sizeof nb));
        }
        if (n->m_leader_changes) mr_http_metric_add(n->m_leader_changes, 1);
    }
    n->role = state;
    n->leader = leader;
    if (leader_changed || state != MR_RAFT_LEADER) mr_node_ops_on_leader_change(n);
}

static void on_apply_more(uv_idle_t *h)
{
    struct mr_node *n = h->data;
    struct mr_raft_event ev;
    uv_idle_stop(h);
    if (n->is_stopping || n->disk_error) return;
    memset(&ev, 0, sizeof ev);
    ev.type = MR_RAFT_EVENT_NONE; /* hands out the next slice (and restarts us) */
    mr_node_step(n, &ev);
}

static void wal_sync_soon(struct mr_node *n);

static void handle_ready(struct mr_node *n, struct mr_raft_ready *rd,
                         struct mr_raft_event *deferred, int *n_deferred)
{
    size_t i;
    int rv;
    uint64_t seq;

    if (rd->flags & MR_RAFT_READY_SNAPSHOT) {
        /* Two phases: the core changed nothing yet. Installed: it drops its
         * log and acknowledges (msgs_after, after the WAL reset queued here).
         * Failed: it keeps its log and does not answer; the leader retries. */
        int is_async = 0;
        rv = n->disk_error ? MR_EDISKFAIL
                           : mr_node_snap_install(n, rd->snap_index, rd->snap_term,
                                                  rd->snap_config, &is_async);
        if (!is_async) { /* else mr_node_snap_installed, once restored */
            memset(&deferred[*n_deferred], 0, sizeof deferred[0]);
            deferred[*n_deferred].type =
                rv == 0 ? MR_RAFT_EVENT_SNAPSHOT_INSTALLED : MR_RAFT_EVENT_SNAPSHOT_FAILED;
            deferred[*n_deferred].index = rd->snap_index;
            deferred[*n_deferred].term = rd->snap_term;
            (*n_deferred)++;
        }
    }
    /* raft.h rule 1: the hard state, then the entries (the store keeps this
     * order on disk). */
    if ((rd->flags & MR_RAFT_READY_HARD_STATE) && !n->disk_error) {
        rv = mr_store_save_hard_state(n->store, rd->term, rd->vote, &seq);
        if (rv != 0) disk_failed(n, rv, "save term and vote");
        else n->last_seq = seq;
        if (rv == 0) wal_sync_soon(n);
    }
    if ((rd->flags & MR_RAFT_READY_ENTRIES) && rd->n_entries > 0 && !n->disk_error) {
        mr_index first = rd->entries[0].index;
        if (first <= n->last_queued) {
            rv = mr_store_truncate(n->store, first, &seq);
            if (rv != 0) disk_failed(n, rv, "truncate");
            else n->last_seq = seq;
        }
        if (!n->disk_error) {
            rv = mr_store_append(n->store, rd->entries, rd->n_entries, &seq);
            if (rv != 0) {
                disk_failed(n, rv, "append");
            } else {
                n->last_seq = seq;
                n->last_queued = rd->entries[rd->n_entries - 1].index;
                if (n->last_sync_start_ms == 0) n->last_sync_start_ms = mr_node_now(n);
                n->wal_turn_entries += rd->n_entries;
                wal_sync_soon(n);
            }
        }
    }
    for (i = 0; i < rd->n_msgs; i++) send_msg(n, &rd->msgs[i]);
    if (rd->n_msgs_after > 0) {
        if (n->disk_error) {
            /* Nothing of ours is durable any more: promise nothing. */
        } else if (n->last_seq <= n->done_seq && mr_queue_empty(&n->held)) {
            for (i = 0; i < rd->n_msgs_after; i++) send_msg(n, &rd->msgs_after[i]);
        } else {
            struct mr_node_held *h = mr_malloc(sizeof *h);
            if (h != NULL) {
                h->seq = n->last_seq;
                h->msgs = rd->msgs_after;
                h->n = rd->n_msgs_after;
                rd->msgs_after = NULL;
                rd->n_msgs_after = 0;
                mr_queue_push_tail(&n->held, &h->link);
            } /* else: dropped; Raft retries */
        }
    }
    if (rd->flags & MR_RAFT_READY_SOFT_STATE) on_soft_state(n, rd->state, rd->leader);
    if (rd->n_committed > 0) mr_node_apply_entries(n, rd->committed, rd->n_committed);
    if (rd->has_more_committed && !n->is_stopping) uv_idle_start(&n->apply_more, on_apply_more);
    if (rd->n_reads > 0) mr_node_ops_on_read_states(n, rd->reads, rd->n_reads);
}

int mr_node_step(struct mr_node *n, struct mr_raft_event *ev)
{
    struct mr_raft_event deferred[4];
    int n_deferred = 0, i, rv;
    struct mr_raft_ready rd;

    memset(&rd, 0, sizeof rd);
    rv = mr_raft_step(&n->raft, ev, &rd);
    handle_ready(n, &rd, deferred, &n_deferred);
    mr_raft_ready_release(&rd);
    for (i = 0; i < n_deferred; i++) {
        int drv;
        memset(&rd, 0, sizeof rd);
        drv = mr_raft_step(&n->raft, &deferred[i], &rd);
        handle_ready(n, &rd, deferred, &n_deferred); /* installs never chain */
        mr_raft_ready_release(&rd);
        if (drv != 0 && deferred[i].type == MR_RAFT_EVENT_SNAPSHOT_INSTALLED) {
            /* only MR_ENOMEM: the state machine holds the snapshot, the core
             * its old log; going on would apply entries twice */
            LOGE("the Raft core could not take the installed snapshot at index %llu: %s; "
                 "stopping", (unsigned long long)deferred[i].index, mr_strerror(drv));
            n->is_sm_stale = 1;
            mr_node_request_stop(n, MR_NODE_EXIT_RUNTIME);
        }
    }
    if (n->net_ready) mr_node_members_sync(n);
    mr_node_log_cache_trim(n);
    return rv;
}

void mr_node_snap_installed(struct mr_node *n, mr_index index, mr_term term, int rv)
{
    struct mr_raft_event ev;
    int drv;
    memset(&ev, 0, sizeof ev);
    ev.type = rv == 0 ? MR_RAFT_EVENT_SNAPSHOT_INSTALLED : MR_RAFT_EVENT_SNAPSHOT_FAILED;
    ev.index = index;
    ev.term = term;
    drv = mr_node_step(n, &ev);
    if (drv != 0 && rv == 0) {
        /* only MR_ENOMEM: the state machine holds the snapshot, the core
         * its old log; going on would apply entries twice */
        LOGE("the Raft core could not take the installed snapshot at index %llu: %s; stopping",
             (unsigned long long)index, mr_strerror(drv));
        n->is_sm_stale = 1;
        mr_node_request_stop(n, MR_NODE_EXIT_RUNTIME);
    }
}

/* Runs before the loop waits for I/O: sends what proposals held back. */
static void on_flush(uv_prepare_t *h)
{
    struct mr_node *n = h->data;
    struct mr_raft_event ev;
    uv_prepare_stop(h);
    n->is_flush_pending = 0;
    if (n->disk_error) return;
    memset(&ev, 0, sizeof ev);
    ev.type = MR_RAFT_EVENT_FLUSH;
    mr_node_step(n, &ev);
    if (n->net_ready) mr_net_flush(&n->net);
}

int mr_node_propose_entry(struct mr_node *n, struct mr_rcbuf *payload, mr_index *index,
                          mr_term *term)
{
    struct mr_raft_event ev;
    int rv;
    memset(&ev, 0, sizeof ev);
    ev.type = MR_RAFT_EVENT_PROPOSE;
    ev.entry_type = MR_RAFT_ENTRY_NORMAL;
    ev.data = payload;
    rv = mr_node_step(n, &ev);
    if (rv == 0) {
        if (index) *index = ev.out_index;
        if (term) *term = ev.out_term;
    }
    return rv;
}

/* Proposes op->body as a command. Fills op->index/term. */
int mr_node_propose(struct mr_node *n, struct mr_node_op *op)
{
    struct mr_raft_event ev;
    struct mr_rcbuf *payload;
    int rv;
    if (n->disk_error) return MR_EDISKFAIL;
    {
        /* the apply thread may be moving it (node_apply.c) */
        uint64_t last = __atomic_load_n(&n->last_time_ms, __ATOMIC_RELAXED);
        uint64_t now = mr_node_wall_ms();
        payload = mr_node_entry_encode(now > last ? now : last, op->key, op->key_len, op->body,
                                       op->body_len);
    }
    if (payload == NULL) return MR_ENOMEM;
    memset(&ev, 0, sizeof ev);
    ev.type = MR_RAFT_EVENT_PROPOSE;
    ev.entry_type = MR_RAFT_ENTRY_NORMAL;
    ev.data = payload;
    /* Held until on_flush: the requests read in one loop iteration go to
     * the log in one write and to each follower in one AppendEntries. */
    ev.is_deferred = 1;
    rv = mr_node_step(n, &ev);
    if (rv == 0 && !n->is_flush_pending) {
        n->is_flush_pending = 1;
        uv_prepare_start(&n->flush, on_flush);
    }
    mr_rcbuf_unref(payload);
    if (rv == 0) {
        op->index = ev.out_index;
        op->term = ev.out_term;
        if (n->m_proposals) mr_http_metric_add(n->m_proposals, 1);
    }
    return rv;
}

/* ---- callbacks ---------------------------------------------------------------- */
void mr_node_catch_up_ticks(struct mr_node *n)
{
    const uint64_t period = MR_NODE_TICK_MS * UINT64_C(1000000);
    uint64_t now_ns = uv_hrtime(), k;
    struct mr_raft_event ev;
    if (n->disk_error || !n->raft_ready) return;
    if (n->tick_base_ns == 0 || now_ns < n->tick_base_ns) {
        n->tick_base_ns = now_ns;
        return;
    }
    /* Whole ticks only, the remainder carries over: the core's clock never
     * runs ahead of real time, nor behind it by a tick or more. */
    k = (now_ns - n->tick_base_ns) / period;
    if (k == 0) return;
    n->tick_base_ns += k * period;
    /* 2 is timer jitter (a callback a little early, the next one late) */
    if (k > 2) LOGD("%llu ticks elapsed at once (the loop was busy)", (unsigned long long)k);
    memset(&ev, 0, sizeof ev);
    ev.type = MR_RAFT_EVENT_TICK;
    ev.n_ticks = k;
    mr_node_step(n, &ev);
}

static void on_tick(uv_timer_t *t)
{
    struct mr_node *n = t->data;
    static unsigned count;
    uint64_t now_ns = uv_hrtime();
    if (n->last_tick_ns != 0 && n->m_loop_lag != NULL) {
        uint64_t gap = now_ns - n->last_tick_ns, period = MR_NODE_TICK_MS * UINT64_C(1000000);
        mr_http_metric_observe(n->m_loop_lag, gap > period ? (double)(gap - period) / 1e9 : 0.0);
    }
    n->last_tick_ns = now_ns;
    /* The timer fires once however long the loop stalled: the core gets the
     * time that passed, not the number of callbacks (a 700 ms stall used to
     * count as one tick on a leader while its followers counted 70). */
    if (!n->disk_error) {
        mr_node_catch_up_ticks(n);
        mr_node_snap_send_pump(n);
        /* outside any step: these propose or transfer through the core */
        mr_node_integrity_tick(n);
        mr_node_timers_tick(n);
    }
    /* reaps a script's trial; answers it (503) after a disk failure */
    mr_node_deploy_tick(n);
    if ((++count % 5) == 0) {
        mr_node_ops_expire(n);
        mr_node_watch_expire(n, 0);
        mr_node_snap_poll(n);
        mr_node_backup_tick(n);
        mr_node_integrity_poll(n);
        mr_node_integrity_resync_pump(n);
        mr_node_members_tick(n);
        mr_node_disk_tick(n);
    }
}

static void store_progress(struct mr_node *n)
{
    struct mr_store_progress p;
    int rv = mr_store_poll(n->store, &p);
    if (rv != 0 && !n->disk_error) disk_failed(n, rv, "write-ahead log");
    mr_node_disk_on_progress(n, &p);
    if (p.done_seq > n->done_seq) {
        n->done_seq = p.done_seq;
        if (n->m_wal_sync && n->last_sync_start_ms) {
            mr_http_metric_observe(n->m_wal_sync,
                                   (double)(mr_node_now(n) - n->last_sync_start_ms) / 1000.0);
            n->last_sync_start_ms = n->done_seq < n->last_seq ? mr_node_now(n) : 0;
        }
    }
    if (!n->disk_error) release_held(n, 1);
    if (p.persisted_index > n->persisted_reported ||
        (p.persisted_index < n->persisted_reported && p.persisted_index > 0)) {
        struct mr_raft_event ev;
        n->persisted_reported = p.persisted_index;
        memset(&ev, 0, sizeof ev);
        ev.type = MR_RAFT_EVENT_PERSISTED;
        ev.index = p.persisted_index;
        ev.term = p.persisted_term;
        mr_node_step(n, &ev);
    }
}

static void on_store_async(uv_async_t *a)
{
    store_progress(a->data);
}

/* ---- the WAL synced on the loop ------------------------------------------------
 * The writer thread costs two thread hand-offs per write group (the loop wakes
 * the writer, the writer wakes the loop): on this class of machine 20-30 us
 * each when the other thread's CPU is idle, and the context switches are the
 * largest single item of a replica's CPU under load. A follower has nothing
 * to do while its WAL syncs but wait for it (its acknowledgement is held
 * until then), so it syncs on the loop itself, once per loop turn, after
 * every AppendEntries that turn read (the group commit), then sends the
 * acknowledgements. It falls back to the writer thread whenever that is busy
 * or the store is stalled on a full disk (mr_store_sync_inline). A leader
 * keeps the writer thread by default: its loop parses requests and replies
 * while its WAL syncs in parallel with the followers'. */
static int wal_inline_ok(const struct mr_node *n)
{
    switch (n->wal_inline) {
    case MR_NODE_WAL_INLINE_ALL:
        return 1;
    case MR_NODE_WAL_INLINE_FOLLOWER:
        return n->role == MR_RAFT_FOLLOWER;
    default:
        return 0;
    }
}

static void wal_sync_now(struct mr_node *n)
{
    size_t entries = n->wal_turn_entries;
    n->wal_turn_entries = 0;
    if (entries > 1) {
        /* Under load: the writer thread syncs while the loop reads the
         * next AppendEntries (measured: 3-6% more writes/s at 16 and 64
         * clients than syncing each batch on the loop). */
        mr_store_wake(n->store);
        return;
    }
    if (n->disk_error || !mr_store_sync_inline(n->store)) return;
    store_progress(n);
    if (n->net_ready) mr_net_flush(&n->net);
}

static void on_wal_sync(uv_idle_t *h)
{
    struct mr_node *n = h->data;
    uv_idle_stop(h);
    n->is_wal_sync_pending = 0;
    wal_sync_now(n);
}

static void wal_sync_soon(struct mr_node *n)
{
    int on = wal_inline_ok(n);
    if (on != n->is_store_inline) { /* the role changed since the last write */
        mr_store_set_inline(n->store, on);
        n->is_store_inline = on;
    }
    if (n->is_wal_sync_pending || !on) return;
    n->is_wal_sync_pending = 1;
    /* an idle handle: runs at the start of the next loop turn, after
     * everything this turn read, and keeps the loop from blocking first */
    uv_idle_start(&n->wal_sync, on_wal_sync);
}

static void store_notify(void *arg)
{
    struct mr_node *n = arg;
    uv_async_send(&n->store_async);
}

static void on_raft_msg(struct mr_net *net, mr_node_id from, const struct mr_raft_msg *msg)
{
    struct mr_node *n = net->data;
    struct mr_raft_event ev;
    if (n->is_stopping || n->disk_error) return;
    if (msg->type == MR_RAFT_MSG_SNAPSHOT) {
        mr_node_snap_on_msg(n, from, msg);
        return;
    }
    memset(&ev, 0, sizeof ev);
    ev.type = MR_RAFT_EVENT_RECEIVE;
    ev.msg = msg;
    mr_node_step(n, &ev);
}

static void on_net_event(struct mr_net *net, const struct mr_net_event *e)
{
    struct mr_node *n = net->data;
    const char *who = e->peer_name[0] ? e->peer_name : e->addr;
    switch (e->type) {
    case MR_NET_EV_UP:
        LOGI("peer %s connected (%s, %s)", who, e->addr, e->is_inbound ? "inbound" : "outbound");
        break;
    case MR_NET_EV_DOWN:
        LOGI("peer %s disconnected: %s", who, e->reason);
        if (!e->is_inbound && e->peer_id) {
            struct mr_raft_event ev;
            memset(&ev, 0, sizeof ev);
            ev.type = MR_RAFT_EVENT_REPORT_UNREACHABLE;
            ev.node = e->peer_id;
            mr_node_step(n, &ev);
        }
        break;
    case MR_NET_EV_FAILED:
        /* Repeated connection failures are normal while a peer is down: log
         * the first and then every 20th. */
        if (e->attempt <= 1 || e->attempt % 20 == 0)
            LOGI("cannot reach peer %s (%s): %s; retrying in %llu ms", who, e->addr, e->reason,
                 (unsigned long long)e->retry_in_ms);
        break;
    case MR_NET_EV_REFUSED:
        LOGW("peer connection %s refused: %s", who, e->reason);
        break;
    default:
        break;
    }
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct mr_node *n = s->data;
    LOGI("received %s, shutting down", signum == SIGINT ? "SIGINT" : "SIGTERM");
    mr_node_request_stop(n, MR_NODE_EXIT_OK);
}

/* ---- start and stop ----------------------------------------------------------- */
static void on_handle_closed(uv_handle_t *h)
{
    struct mr_node *n = h->data;
    n->handles_open--;
}

static void on_http_closed(struct mr_http_server *srv)
{
    (void)srv;
}

static void on_net_closed(struct mr_net *net)
{
    (void)net;
}

/* Logs "what: detail" and records the exit code. */
static int fail(struct mr_node *n, int code, const char *what, const char *detail)
{
    LOGE("%s: %s", what, detail);
    n->exit_code = code;
    return code;
}

/* Test-only fault injection (MOONRAFT_FAULT_DISK_FILE=path): while that file
 * exists, every fdatasync/fsync of the storage layer fails with EIO, as a dying
 * disk would. The integration tests use it to check fail-stop behaviour. */
static const char *fault_disk_file;
static struct mr_store_fs fault_fs;

static int fault_now(void)
{
    struct stat sb;
    return fault_disk_file != NULL && stat(fault_disk_file, &sb) == 0;
}

static int fault_fdatasync(void *ctx, int fd)
{
    const struct mr_store_fs *real = mr_store_fs_default();
    (void)ctx;
    return fault_now() ? -EIO : real->fdatasync(real->ctx, fd);
}

static int fault_fsync(void *ctx, int fd)
{
    const struct mr_store_fs *real = mr_store_fs_default();
    (void)ctx;
    return fault_now() ? -EIO : real->fsync(real->ctx, fd);
}

/* Test-only power-loss layer (MOONRAFT_FAULT_POWERLOSS=image dir): the store
 * keeps, in that dir, what a power cut would leave of the data dir, and
 * `moonraft data powercut DIR IMAGE` applies it to a killed node (see
 * docs/chaos.md). MOONRAFT_FAULT_SLOW_SYNC_MS=N with it: a slow disk. */
static struct mr_store_powerloss *powerloss;

static int start_storage(struct mr_node *n, struct mr_store_recovered *rec)
{
    const char *pl_dir;
    struct mr_store_options so;
    char err[MR_ERRMSG_SIZE] = "";
    int rv;
    memset(&so, 0, sizeof so);
    so.data_dir = n->o->data_dir;
    so.segment_size = n->o->wal_segment_bytes;
    so.node_id = n->id;
    so.cluster_id = mr_node_id_from_name(n->o->cluster_id && n->o->cluster_id[0] ? n->o->cluster_id
                                                                                   : "moonraft");
    so.notify = store_notify;
    so.notify_arg = n;
    fault_disk_file = getenv("MOONRAFT_FAULT_DISK_FILE");
    if (fault_disk_file != NULL && fault_disk_file[0]) {
        fault_fs = *mr_store_fs_default();
        fault_fs.fdatasync = fault_fdatasync;
        fault_fs.fsync = fault_fsync;
        so.fs = &fault_fs;
        LOGW("MOONRAFT_FAULT_DISK_FILE is set: disk faults will be injected (testing only)");
    }
    n->fault_salt = n->o->fault_sm_salt;
    n->fault_salt_until = n->o->fault_sm_salt_until;
    if (n->o->fault_sm_salt != NULL)
        LOGW("MOONRAFT_FAULT_SM_SALT is set: this node's script sees ctx.fault_salt and may "
             "diverge on purpose (testing only)");
    pl_dir = getenv("MOONRAFT_FAULT_POWERLOSS");
    if (pl_dir != NULL && pl_dir[0] && so.fs == NULL) {
        rv = mr_store_powerloss_open(n->o->data_dir, pl_dir, &powerloss, err);
        if (rv != 0) return fail(n, MR_NODE_EXIT_RUNTIME, "power-loss layer", err);
        so.fs = mr_store_powerloss_fs(powerloss);
        if (getenv("MOONRAFT_FAULT_SLOW_SYNC_MS") != NULL)
            mr_store_powerloss_set_sync_delay(
                powerloss, (unsigned)atoi(getenv("MOONRAFT_FAULT_SLOW_SYNC_MS")));
        LOGW("MOONRAFT_FAULT_POWERLOSS is set: durable image kept in %s (testing only)", pl_dir);
    }
    so.fs = mr_node_disk_fs(n, so.fs);
    rv = mr_store_open(&n->store, &so, rec, err);
    if (rv == MR_ECORRUPT) return fail(n, MR_NODE_EXIT_CORRUPT, "data directory is damaged", err);
    if (rv == MR_ECONFIG)
        return fail(n, MR_NODE_EXIT_CONFIG, "data directory belongs to another node or cluster", err);
    if (rv != 0) return fail(n, MR_NODE_EXIT_RUNTIME, "cannot open the data directory", err);
    if (rec->note[0]) LOGW("storage recovery: %s", rec->note);
    LOGI("recovered: term %llu, log %llu..%llu, snapshot at %llu",
         (unsigned long long)rec->term, (unsigned long long)rec->first_index,
         (unsigned long long)rec->last_index, (unsigned long long)rec->snap_index);
    return 0;
}

static int start_raft(struct mr_node *n, struct mr_store_recovered *rec)
{
    struct mr_raft_options ro;
    char err[MR_ERRMSG_SIZE] = "";
    unsigned hb = n->o->heartbeat_ms, emin = n->o->election_min_ms, emax = n->o->election_max_ms;
    int rv, has_state;

    mr_raft_options_default(&ro, n->id);
    ro.heartbeat_ticks = (hb + MR_NODE_TICK_MS - 1) / MR_NODE_TICK_MS;
    ro.election_min_ticks = emin / MR_NODE_TICK_MS;
    ro.election_max_ticks = emax / MR_NODE_TICK_MS;
    if (ro.heartbeat_ticks < 1) ro.heartbeat_ticks = 1;
    if (ro.election_min_ticks <= ro.heartbeat_ticks) ro.election_min_ticks = ro.heartbeat_ticks + 1;
    if (ro.election_max_ticks <= ro.election_min_ticks) ro.election_max_ticks = ro.election_min_ticks + 1;
    if (n->o->max_append_entries) ro.max_append_entries = n->o->max_append_entries;
    if (n->o->max_inflight) ro.max_inflight = n->o->max_inflight;
    ro.snapshot_trailing = (unsigned)n->o->snapshot_trailing;
    /* A backlog (a restart, a follower catching up) is handed out in slices
     * of this many bytes, with I/O between them. The apply thread runs them
     * (node_apply.c), so the loop only queues them; the slices keep each
     * ready batch small. */
    ro.max_apply_bytes = 256u << 10;
    if (n->o->pre_vote >= 0) ro.pre_vote = (uint8_t)n->o->pre_vote;
    if (n->o->check_quorum >= 0) ro.check_quorum = (uint8_t)n->o->check_quorum;
    ro.lease_reads = (uint8_t)(n->o->lease_reads && ro.check_quorum);
    ro.seed = n->id ^ mr_node_wall_ms();
    ro.tracer.data = n;
    ro.tracer.emit_cb = trace_cb;
    rv = mr_raft_init(&n->raft, &ro);
    if (rv != 0) return fail(n, MR_NODE_EXIT_CONFIG, "invalid Raft options", mr_strerror(rv));
    n->raft_ready = 1;

    has_state = rec->term > 0 || rec->n_entries > 0 || rec->has_snapshot;
    if (has_state) {
        struct mr_raft_persisted p;
        memset(&p, 0, sizeof p);
        p.term = rec->term;
        p.vote = rec->vote;
        if (rec->has_snapshot) {
            p.snap_index = rec->snap_index;
            p.snap_term = rec->snap_term;
            p.snap_config = rec->snap_conf;
        }
        p.entries = rec->entries;
        p.n_entries = rec->n_entries;
        p.commit = mr_node_members_load_removed(n);
        rv = mr_raft_load(&n->raft, &p, err);
        if (rv != 0) return fail(n, MR_NODE_EXIT_CORRUPT, "cannot load the log", err);
        n->last_queued = rec->last_index;
        n->persisted_reported = rec->last_index;
        if (rec->has_snapshot) {
            n->snap_index = rec->snap_index;
            n->applied = rec->snap_index;
            n->applied_term = rec->snap_term;
            n->applied_conf = mr_rcbuf_ref(rec->snap_conf);
            rv = mr_node_snap_restore_newest(n, err);
            if (rv != 0) return fail(n, MR_NODE_EXIT_CORRUPT, "cannot restore the snapshot", err);
            if (rec->snap_conf)
                mr_node_apply_config(n, rec->snap_conf->data, rec->snap_conf->len, rec->snap_index);
        }
        /* Peers from the newest configuration in the log. */
        {
            struct mr_raft_status st;
            unsigned i;
            mr_raft_status(&n->raft, &st);
            for (i = 0; st.config && i < st.config->n; i++) {
                struct mr_node_member m;
                mr_node_member_parse(&m, st.config->servers[i].id, st.config->servers[i].role,
                                     st.config->servers[i].context);
                if (m.id != n->id && m.raft_addr[0]) mr_net_set_peer(&n->net, m.id, m.raft_addr);
            }
        }
        /* The previous run answered PERSISTED for everything recovered. */
        {
            struct mr_raft_event ev;
            memset(&ev, 0, sizeof ev);
            ev.type = MR_RAFT_EVENT_PERSISTED;
            ev.index = rec->last_index;
            ev.term = rec->last_term;
            mr_node_step(n, &ev);
        }
        return 0;
    }
    /* A fresh data directory. */
    if (n->o->n_peers > 0) return mr_node_members_bootstrap_static(n);
    if (n->o->bootstrap_expect > 0) {
        n->is_bootstrapping = 1;
        if (n->o->bootstrap_expect == 1) return mr_node_members_bootstrap_static(n);
        LOGI("waiting for %u members to join before bootstrapping the cluster",
             n->o->bootstrap_expect);
        return 0;
    }
    if (n->o->n_join > 0) {
        n->needs_join = 1;
        LOGI("empty data directory: joining the cluster through %s", n->o->join[0]);
        return 0;
    }
    return fail(n, MR_NODE_EXIT_CONFIG, "empty data directory",
                "no way to form a cluster: give peers, bootstrap_expect or join");
}

static int start_net(struct mr_node *n)
{
    struct mr_net_options no;
    struct mr_net_callbacks cb;
    int rv;
    memset(&no, 0, sizeof no);
    memset(&cb, 0, sizeof cb);
    no.self_id = n->id;
    no.self_name = n->name;
    no.cluster_id = n->o->cluster_id && n->o->cluster_id[0] ? n->o->cluster_id : "moonraft";
    no.secret = n->o->cluster_secret;
    no.listen_addr = n->o->raft_listen ? n->o->raft_listen : n->o->raft_addr;
    no.backoff_min_ms = 20;
    no.backoff_max_ms = 1000;
    no.connect_timeout_ms = 1000;
    no.tls_server = n->tls_peer_server; /* NULL without TLS (node_reload.c) */
    no.tls_client = n->tls_peer_client;
    cb.on_raft_msg = on_raft_msg;
    cb.on_forward = mr_node_on_forward;
    cb.on_forward_reply = mr_node_on_forward_reply;
    cb.on_snapshot_chunk = mr_node_on_snapshot_chunk;
    cb.on_event = on_net_event;
    rv = mr_net_init(&n->net, &n->loop, &no, &cb, n);
    if (rv != 0) return fail(n, MR_NODE_EXIT_CONFIG, "peer transport", mr_net_errmsg(&n->net));
    n->net_ready = 1;
    rv = mr_net_listen(&n->net);
    if (rv != 0) return fail(n, MR_NODE_EXIT_RUNTIME, "cannot listen on the peer port", mr_net_errmsg(&n->net));
    LOGI("peer port listening on %s (advertised as %s)", no.listen_addr, n->o->raft_addr);
    return 0;
}

void mr_node_http_limits(const struct mr_node *n, struct mr_http_options *ho)
{
    memset(ho, 0, sizeof *ho);
    ho->max_body_bytes = n->o->max_body_bytes;
    ho->max_header_bytes = n->o->max_header_bytes;
    ho->idle_timeout_ms = n->o->http_idle_timeout_ms;
    /* A slow client (slowloris) gets no more time for its head or body than
     * an idle one gets between requests. */
    if (ho->idle_timeout_ms != 0) {
        ho->header_timeout_ms = ho->idle_timeout_ms < MR_HTTP_DEFAULT_HEADER_TIMEOUT_MS
                                    ? ho->idle_timeout_ms
                                    : MR_HTTP_DEFAULT_HEADER_TIMEOUT_MS;
        ho->body_timeout_ms = ho->idle_timeout_ms < MR_HTTP_DEFAULT_BODY_TIMEOUT_MS
                                  ? ho->idle_timeout_ms
                                  : MR_HTTP_DEFAULT_BODY_TIMEOUT_MS;
    }
    ho->max_connections = n->o->max_connections;
}

static int start_http(struct mr_node *n)
{
    struct mr_http_options ho;
    char err[MR_ERRMSG_SIZE] = "";
    int rv;
    mr_node_http_limits(n, &ho);
    ho.metrics = &n->metrics;
    ho.tls = n->tls_http; /* NULL without TLS (node_reload.c) */
    rv = mr_http_server_init(&n->http, &n->loop, &ho, mr_node_http_handler, n);
    if (rv != 0) return fail(n, MR_NODE_EXIT_RUNTIME, "http server", mr_strerror(rv));
    n->http_ready = 1;
    rv = mr_http_server_listen(&n->http, n->o->http_addr, err);
    if (rv != 0) return fail(n, MR_NODE_EXIT_RUNTIME, "cannot listen for HTTP", err);
    LOGI("HTTP API listening on %s%s", n->tls_http ? "https://" : "", n->o->http_addr);
    return 0;
}

static void init_handles(struct mr_node *n)
{
    uv_timer_init(&n->loop, &n->tick);
    n->tick.data = n;
    uv_async_init(&n->loop, &n->store_async, on_store_async);
    n->store_async.data = n;
    uv_prepare_init(&n->loop, &n->flush);
    n->flush.data = n;
    uv_idle_init(&n->loop, &n->wal_sync);
    n->wal_sync.data = n;
    {
        const char *w = getenv("MR_WAL_INLINE");
        n->wal_inline = w == NULL ? MR_NODE_WAL_INLINE_FOLLOWER
                        : strcmp(w, "all") == 0 ? MR_NODE_WAL_INLINE_ALL
                        : strcmp(w, "off") == 0 ? MR_NODE_WAL_INLINE_OFF
                                                : MR_NODE_WAL_INLINE_FOLLOWER;
    }
    uv_idle_init(&n->loop, &n->apply_more);
    n->apply_more.data = n;
    uv_signal_init(&n->loop, &n->sigint);
    n->sigint.data = n;
    uv_signal_init(&n->loop, &n->sigterm);
    n->sigterm.data = n;
    n->handles_open = 7;
}

static void close_handles(struct mr_node *n)
{
    uv_close((uv_handle_t *)&n->tick, on_handle_closed);
    uv_close((uv_handle_t *)&n->store_async, on_handle_closed);
    uv_close((uv_handle_t *)&n->flush, on_handle_closed);
    uv_close((uv_handle_t *)&n->wal_sync, on_handle_closed);
    uv_close((uv_handle_t *)&n->apply_more, on_handle_closed);
    uv_close((uv_handle_t *)&n->sigint, on_handle_closed);
    uv_close((uv_handle_t *)&n->sigterm, on_handle_closed);
}

static void shutdown_node(struct mr_node *n)
{
    /* Answer what is in flight, stop taking traffic, sync the log. */
    mr_node_apply_stop(n);
    mr_node_deploy_close(n);
    mr_node_ops_cancel_all(n);
    mr_node_watch_close(n);
    mr_node_snap_close(n);
    mr_node_backup_close(n);
    mr_node_integrity_close(n);
    if (n->http_ready) mr_http_server_close(&n->http, on_http_closed);
    if (n->net_ready) mr_net_close(&n->net, on_net_closed);
    close_handles(n);
    mr_node_reload_close(n);
    uv_run(&n->loop, UV_RUN_DEFAULT);
    release_held(n, 0);
    if (n->store != NULL) {
        mr_node_log_cache_close(n);
        mr_store_close(n->store); /* drains: everything queued is written and synced */
        n->store = NULL;
    }
    mr_node_disk_close(n);
    mr_store_powerloss_close(powerloss);
    powerloss = NULL;
    if (n->raft_ready) mr_raft_close(&n->raft);
    if (n->sm != NULL) mr_sm_close(n->sm);
    mr_rcbuf_unref(n->applied_conf);
    mr_idem_close(&n->idem);
    mr_node_json_close(n);
    mr_http_metrics_close(&n->metrics);
    if (uv_loop_close(&n->loop) != 0) LOGW("event loop closed with handles still open");
}

int mr_node_run(const struct mr_node_options *o)
{
    struct mr_node *n;
    struct mr_store_recovered rec;
    struct mr_sm_options smo;
    char err[MR_ERRMSG_SIZE] = "";
    int rv, code;

    n = mr_calloc(1, sizeof *n);
    if (n == NULL) return MR_NODE_EXIT_RUNTIME;
    memset(&rec, 0, sizeof rec);
    n->o = o;
    snprintf(n->name, sizeof n->name, "%s", o->name);
    n->id = mr_node_id_from_name(o->name);
    mr_node_log_setup(o->name, mr_node_log_level_parse(o->log_level ? o->log_level : "info"));
    mr_queue_init(&n->held);
    mr_queue_init(&n->wait_leader);
    mr_queue_init(&n->wait_busy);
    mr_queue_init(&n->proposals);
    mr_queue_init(&n->forwarded);
    mr_queue_init(&n->reads);
    mr_queue_init(&n->read_apply);
    mr_queue_init(&n->read_running);
    mr_queue_init(&n->transfers);
    mr_queue_init(&n->watches);
    mr_queue_init(&n->snap_sends);
    mr_queue_init(&n->pending_join_ops);
    mr_queue_init(&n->backups);
    mr_http_metrics_init(&n->metrics);
    signal(SIGPIPE, SIG_IGN);

    if (uv_loop_init(&n->loop) != 0) {
        mr_free(n);
        return MR_NODE_EXIT_RUNTIME;
    }
    init_handles(n);
    LOGI("moonraft %s starting: data %s, peer port %s, HTTP %s", MR_VERSION, o->data_dir,
         o->raft_addr, o->http_addr);

    rv = mr_idem_init(&n->idem, o->idempotency_window ? o->idempotency_window : 100000);
    if (rv == 0) rv = mr_node_json_init(n);
    if (rv != 0) {
        fail(n, MR_NODE_EXIT_RUNTIME, "startup", "out of memory");
        goto out;
    }
    mr_node_metrics_init(n);

    memset(&smo, 0, sizeof smo);
    if (o->state_machine != NULL) {
        smo.script_path = o->state_machine;
    } else { /* the built-in kv script: the same bytes, so the same hash, as lua/kv.lua */
        smo.script_source = mr_util_lua_embedded("kv.lua", NULL);
        smo.script_name = "kv.lua";
    }
    smo.instruction_budget = o->lua_instruction_budget;
    smo.memory_limit_bytes = o->lua_memory_bytes;
    rv = mr_sm_open(&n->sm, &smo, err);
    if (rv != 0) {
        fail(n, MR_NODE_EXIT_CONFIG, "state machine script", err);
        goto out;
    }
    LOGI("state machine %s loaded", smo.script_path ? smo.script_path : "kv.lua (built in)");
    rv = mr_node_apply_start(n);
    if (rv != 0) {
        fail(n, MR_NODE_EXIT_RUNTIME, "cannot start the apply thread", mr_strerror(rv));
        goto out;
    }

    mr_node_snap_fault_setup(n);
    if (start_storage(n, &rec) != 0) goto out;
    if (mr_node_tls_start(n) != 0) goto out;
    if (start_net(n) != 0) goto out;
    if (start_raft(n, &rec) != 0) goto out;
    mr_store_recovered_release(&rec);
    if (start_http(n) != 0) goto out;

    n->tick_base_ns = uv_hrtime();
    uv_timer_start(&n->tick, on_tick, MR_NODE_TICK_MS, MR_NODE_TICK_MS);
    uv_signal_start(&n->sigint, on_signal, SIGINT);
    uv_signal_start(&n->sigterm, on_signal, SIGTERM);
    mr_node_reload_start(n); /* SIGHUP */
    {
        struct mr_raft_event ev;
        memset(&ev, 0, sizeof ev);
        ev.type = MR_RAFT_EVENT_NONE;
        mr_node_step(n, &ev);
    }
    LOGI("node %s ready", n->name);
    uv_run(&n->loop, UV_RUN_DEFAULT);
out:
    mr_store_recovered_release(&rec);
    shutdown_node(n);
    code = n->exit_code;
    LOGI("stopped (exit code %d)", code);
    mr_free(n);
    return code;
}
