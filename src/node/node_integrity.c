/* node_integrity: automatic divergence detection.
 *
 * Replicas apply the same committed commands in the same order, so at the
 * same applied index every member must hold the same state. A script that is
 * not deterministic, a memory-cap hit near the boundary, a bug in the host or
 * a damaged disk can break that silently. This module checks it:
 *
 * Wire types: 1 report, 2 verdict, 3 check request, 4 resync request (index =
 * the member's applied index: the snapshot it gets must cover it).
 *
 *   1. POSITIONS come from the log. The leader appends a CHECK entry (a NORMAL
 *      entry whose payload kind is MR_NODE_ENTRY_CHECK) once
 *      `integrity_check_entries` entries were applied since the last one (or
 *      on request: POST /v1/integrity/check, or a member that is unsure of its
 *      state). Every member applies that entry at the same index, so they all
 *      hash the same logical state, whatever their timing.
 *   2. HASHING never blocks the event loop: applying a CHECK entry forks a
 *      child (mr_sm_hash_fork) that calls snapshot() on its frozen
 *      copy-on-write image and reports the SHA-256 of the payload, the same
 *      value as /v1/status?hash=true would show at that index.
 *   3. REPORTS go to the leader over the peer link (a FORWARD frame of kind
 *      OP_INTEGRITY). The leader collects them per check index; once every
 *      member reported (or the round is CHECK_DECIDE_MS old and a majority of
 *      voters did), the hash held by a majority of voters is the reference.
 *   4. A MISMATCH raises the alarm on the leader (/v1/status "integrity",
 *      moonraft_integrity_alarm, an ERROR log naming the index and the nodes)
 *      and a verdict goes to each member. The odd member marks its state
 *      diverged: it stops answering reads (503 state_diverged) and, with
 *      `integrity_resync` (default), asks the leader for a fresh snapshot and
 *      rebuilds its state machine from it (node_snap.c). A leader that finds
 *      itself odd hands leadership to a member holding the reference state.
 *      The alarm clears when a later check finds every member equal.
 *
 * Wire format of an OP_INTEGRITY payload (after the 8-byte forward header):
 *   u8 type (1 report, 2 verdict, 3 check request), u64 index,
 *   u8 ok (verdicts), 64 bytes hash hex (report: own; verdict: reference).
 */
#include "node/node_int.h"

#include <stdio.h>
#include <string.h>

#define MSG_REPORT 1
#define MSG_VERDICT 2
#define MSG_REQUEST 3
#define MSG_RESYNC 4
#define MSG_LEN (1 + 8 + 1 + 64)
#define CHECK_DECIDE_MS 10000 /* decide with a voter majority after this long */
#define CHECK_REQUEST_GAP_MS 1000
#define RESYNC_RETRY_MS 10000 /* ask again if no snapshot came */

/* ---- sending -------------------------------------------------------------------- */
static void send_msg(struct mr_node *n, mr_node_id to, int type, mr_index index, int ok,
                     const char *hash)
{
    unsigned char buf[MR_NODE_FWD_HDR + MSG_LEN];
    memset(buf, 0, sizeof buf);
    buf[0] = OP_INTEGRITY; /* key length 0, target length 0 */
    unsigned char *p = buf + MR_NODE_FWD_HDR;
    p[0] = (unsigned char)type;
    mr_put_u64(p + 1, index);
    p[9] = (unsigned char)(ok ? 1 : 0);
    if (hash != NULL) memcpy(p + 10, hash, 64);
    if (to == 0 || !n->net_ready) return;
    /* Best effort: a lost report only makes that round decide later (or
     * without this member); the next check repeats the comparison. */
    (void)mr_net_send_forward(&n->net, to, ++n->next_op_id, buf, sizeof buf);
}

static void propose_if_due(struct mr_node *n);

/* ---- proposing checks (leader) ---------------------------------------------------- */
int mr_node_integrity_propose(struct mr_node *n)
{
    struct mr_rcbuf *payload;
    mr_index index = 0;
    int rv;
    if (n->role != MR_RAFT_LEADER) return MR_ENOTLEADER;
    if (n->disk_error) return MR_EDISKFAIL;
    if (n->integ_proposed > n->applied) return 0; /* one is on its way */
    payload = mr_rcbuf_new(2);
    if (payload == NULL) return MR_ENOMEM;
    payload->data[0] = 1;
    payload->data[1] = MR_NODE_ENTRY_CHECK;
    rv = mr_node_propose_entry(n, payload, &index, NULL);
    mr_rcbuf_unref(payload);
    if (rv == 0) {
        n->integ_proposed = index;
        LOGD("integrity check proposed at index %llu", (unsigned long long)index);
    }
    return rv;
}

static void hand_over(struct mr_node *n);

void mr_node_integrity_tick(struct mr_node *n)
{
    if (n->integ_check_handover) {
        n->integ_check_handover = 0;
        if (n->role == MR_RAFT_LEADER) hand_over(n);
    }
    propose_if_due(n);
}

static void propose_if_due(struct mr_node *n)
{
    uint64_t every = n->o->integrity_check_entries;
    if (n->role != MR_RAFT_LEADER) return;
    if (n->integ_proposed > n->applied) return;
    if (n->integ_want_check ||
        (every > 0 && n->applied >= n->integ_last_check + every)) {
        n->integ_want_check = 0;
        (void)mr_node_integrity_propose(n);
    }
}

/* ---- the leader's rounds ------------------------------------------------------------ */
static struct mr_node_integ_round *round_get(struct mr_node *n, mr_index index, int create)
{
    struct mr_node_integ_round *oldest = NULL;
    for (unsigned i = 0; i < MR_NODE_INTEG_ROUNDS; i++) {
        struct mr_node_integ_round *r = &n->integ_rounds[i];
        if (r->index == index) return r;
        if (oldest == NULL || r->index < oldest->index) oldest = r;
    }
    if (!create) return NULL;
    /* Reports for a check older than every round kept are not worth a slot. */
    if (oldest->index > index) return NULL;
    memset(oldest, 0, sizeof *oldest);
    oldest->index = index;
    oldest->started_ms = mr_node_now(n);
    return oldest;
}

static void round_add(struct mr_node *n, struct mr_node_integ_round *r, mr_node_id id,
                      const char *hash)
{
    unsigned i;
    for (i = 0; i < r->n; i++) {
        if (r->ids[i] == id) {
            memcpy(r->hashes[i], hash, 64);
            return;
        }
    }
    if (r->n >= MR_NODE_INTEG_MAX_REPORTS) return;
    r->ids[r->n] = id;
    memcpy(r->hashes[r->n], hash, 64);
    r->hashes[r->n][64] = '\0';
    r->n++;
    (void)n;
}

static void names_of(struct mr_node *n, const struct mr_node_integ_round *r, const char *hash,
                     int equal, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    for (unsigned i = 0; i < r->n; i++) {
        char nb[72];
        if ((memcmp(r->hashes[i], hash, 64) == 0) != equal) continue;
        int w = snprintf(out + len, cap - len, "%s%s", len ? ", " : "",
                         mr_node_name_of(n, r->ids[i], nb, sizeof nb));
        if (w < 0 || (size_t)w >= cap - len) break;
        len += (size_t)w;
    }
}

static void round_decide(struct mr_node *n, struct mr_node_integ_round *r, int force)
{
    struct mr_raft_status st;
    unsigned voters, i, j, best = 0, best_votes = 0, members = 0, voters_reported = 0;
    mr_raft_status(&n->raft, &st);
    if (r->decided || st.config == NULL) return;
    voters = mr_raft_config_voters(st.config);
    for (i = 0; i < st.config->n; i++) {
        const struct mr_raft_server *s = &st.config->servers[i];
        members++;
        for (j = 0; j < r->n; j++) {
            if (r->ids[j] == s->id && s->role == MR_RAFT_VOTER) voters_reported++;
        }
    }
    if (r->n < members && !force) return; /* wait for everyone */
    /* The reference is the hash held by a majority of the voters. */
    for (i = 0; i < r->n; i++) {
        unsigned votes = 0;
        for (j = 0; j < r->n; j++) {
            const struct mr_raft_server *s = mr_raft_config_get(st.config, r->ids[j]);
            if (s != NULL && s->role == MR_RAFT_VOTER && memcmp(r->hashes[i], r->hashes[j], 64) == 0)
                votes++;
        }
        if (votes > best_votes) {
            best_votes = votes;
            best = i;
        }
    }
    if (best_votes * 2 <= voters) {
        if (!force) return;
        if (voters_reported * 2 <= voters) {
            LOGW("integrity check at index %llu: only %u of %u voters reported; not decided",
                 (unsigned long long)r->index, voters_reported, voters);
            r->decided = 1;
            return;
        }
        /* Voters reported but disagree with no majority: every one is suspect. */
        char all[512];
        names_of(n, r, r->hashes[0], 1, all, sizeof all);
        r->decided = 1;
        n->integ_alarm = 1;
        n->integ_alarm_index = r->index;
        n->integ_mismatches++;
        snprintf(n->integ_alarm_msg, sizeof n->integ_alarm_msg,
                 "no majority of voters holds the same state at index %llu",
                 (unsigned long long)r->index);
        LOGE("STATE DIVERGENCE at index %llu: no majority of voters agrees on the state "
             "hash (%u members reported); the cluster needs an operator",
             (unsigned long long)r->index, r->n);
        (void)all;
        return;
    }
    r->decided = 1;
    const char *ref = r->hashes[best];
    char odd[512], good[512];
    names_of(n, r, ref, 0, odd, sizeof odd);
    names_of(n, r, ref, 1, good, sizeof good);
    n->integ_checks++;
    n->integ_checked_index = r->index;
    memcpy(n->integ_ref_hash, ref, 64);
    n->integ_ref_hash[64] = '\0';
    if (odd[0] == '\0') {
        if (n->integ_alarm) {
            LOGI("integrity check at index %llu: all %u members agree again; alarm cleared",
                 (unsigned long long)r->index, r->n);
        }
        n->integ_alarm = 0;
        n->integ_alarm_msg[0] = '\0';
    } else {
        n->integ_alarm = 1;
        n->integ_alarm_index = r->index;
        n->integ_mismatches++;
        snprintf(n->integ_alarm_msg, sizeof n->integ_alarm_msg,
                 "state of %s differs from the majority (%s) at index %llu", odd, good,
                 (unsigned long long)r->index);
        LOGE("STATE DIVERGENCE at index %llu: %s hold(s) a state that differs from the "
             "majority's (%s, hash %.16s...)",
             (unsigned long long)r->index, odd, good, ref);
        if (n->m_integ_mismatches) mr_http_metric_add(n->m_integ_mismatches, 1);
    }
    if (n->m_integ_checks) mr_http_metric_add(n->m_integ_checks, 1);
    if (n->m_integ_alarm) mr_http_metric_set(n->m_integ_alarm, n->integ_alarm ? 1 : 0);
    for (i = 0; i < r->n; i++) {
        int ok = memcmp(r->hashes[i], ref, 64) == 0;
        if (r->ids[i] == n->id) {
            mr_node_integrity_on_verdict(n, r->index, ok, ref);
        } else {
            send_msg(n, r->ids[i], MSG_VERDICT, r->index, ok, ref);
        }
    }
}

static void leader_record(struct mr_node *n, mr_node_id from, mr_index index, const char *hash)
{
    struct mr_node_integ_round *r = round_get(n, index, 0);
    /* A report for an older check that has no round (a member replaying
     * its log after a restart hashes old CHECK entries again) is stale. */
    if (r == NULL && index >= n->integ_last_check) r = round_get(n, index, 1);
    if (r == NULL || r->decided) return;
    round_add(n, r, from, hash);
    round_decide(n, r, 0);
}

/* ---- verdicts (every member) -------------------------------------------------------- */
void mr_node_integrity_on_verdict(struct mr_node *n, mr_index index, int ok, const char *ref)
{
    if (index < n->integ_verdict_index) return;
    n->integ_verdict_index = index;
    n->integ_verdict_ok = ok;
    if (ok) {
        if (n->integ_diverged || n->integ_suspect) {
            LOGI("integrity check at index %llu: this node's state matches the majority; "
                 "serving reads again",
                 (unsigned long long)index);
        }
        n->integ_suspect = 0;
        /* A diverged node is cleared only by a check made after its resync. */
        if (n->integ_diverged && index > n->integ_diverged_index && n->integ_resynced)
            n->integ_diverged = 0;
        return;
    }
    if (!n->integ_diverged) {
        LOGE("STATE DIVERGENCE: this node's state at index %llu differs from the majority's "
             "(hash %.16s...); it stops answering reads%s",
             (unsigned long long)index, ref,
             n->o->integrity_resync ? " and rebuilds its state from the leader's snapshot"
                                    : " (integrity_resync is off: resync it by hand)");
    }
    n->integ_diverged = 1;
    n->integ_diverged_index = index;
    n->integ_resynced = 0;
    if (n->role == MR_RAFT_LEADER) {
        /* The leader's answers come from its own state: hand over to a member
         * holding the reference state, then resync as a follower. */
        struct mr_node_integ_round *r = round_get(n, index, 0);
        for (unsigned i = 0; r != NULL && i < r->n; i++) {
            if (r->ids[i] == n->id || memcmp(r->hashes[i], ref, 64) != 0) continue;
            struct mr_raft_event ev;
            memset(&ev, 0, sizeof ev);
            ev.type = MR_RAFT_EVENT_TRANSFER_LEADER;
            ev.node = r->ids[i];
            if (mr_node_step(n, &ev) == 0) {
                char nb[72];
                LOGW("handing leadership to %s, whose state matches the majority",
                     mr_node_name_of(n, ev.node, nb, sizeof nb));
                break;
            }
        }
        return;
    }
    if (n->o->integrity_resync) mr_node_integrity_resync_start(n);
}

/* ---- hashing at a CHECK entry --------------------------------------------------------- */
void mr_node_integrity_apply(struct mr_node *n, mr_index index)
{
    char err[MR_ERRMSG_SIZE] = "";
    n->integ_last_check = index;
    if (n->integ_proposed == index) n->integ_proposed = 0;
    struct mr_node_integ_job *slot = NULL;
    for (unsigned i = 0; i < MR_NODE_INTEG_JOBS; i++) {
        if (n->integ_jobs[i].index == 0) {
            slot = &n->integ_jobs[i];
            break;
        }
    }
    if (slot == NULL) {
        /* A member replaying a long log after a restart meets many old
         * CHECK entries at once: hashing the latest ones is enough. */
        LOGD("integrity check at index %llu skipped on this node: %u hash jobs still running",
             (unsigned long long)index, MR_NODE_INTEG_JOBS);
        return;
    }
    int rv = mr_sm_hash_fork(n->sm, &slot->job, err);
    if (rv != 0) {
        LOGW("integrity check at index %llu: cannot hash the state: %s",
             (unsigned long long)index, err);
        return;
    }
    slot->index = index;
}

static void on_own_hash(struct mr_node *n, mr_index index, const char *hash)
{
    n->integ_own_index = index;
    memcpy(n->integ_own_hash, hash, 64);
    n->integ_own_hash[64] = '\0';
    if (n->role == MR_RAFT_LEADER) {
        leader_record(n, n->id, index, hash);
    } else if (n->leader != 0) {
        send_msg(n, n->leader, MSG_REPORT, index, 0, hash);
    }
}

void mr_node_integrity_poll(struct mr_node *n)
{
    for (unsigned i = 0; i < MR_NODE_INTEG_JOBS; i++) {
        struct mr_node_integ_job *j = &n->integ_jobs[i];
        char err[MR_ERRMSG_SIZE] = "";
        if (j->index == 0) continue;
        int rv = mr_sm_snapshot_poll(&j->job, 0, err);
        if (rv == MR_EBUSY) continue;
        mr_index index = j->index;
        j->index = 0;
        if (rv != 0) {
            LOGW("integrity check at index %llu: hashing failed: %s", (unsigned long long)index,
                 err);
            continue;
        }
        on_own_hash(n, index, j->job.hash);
    }
    if (n->role != MR_RAFT_LEADER) return;
    uint64_t now = mr_node_now(n);
    for (unsigned i = 0; i < MR_NODE_INTEG_ROUNDS; i++) {
        struct mr_node_integ_round *r = &n->integ_rounds[i];
        if (r->index != 0 && !r->decided && now - r->started_ms >= CHECK_DECIDE_MS)
            round_decide(n, r, 1);
    }
}

/* A member that cannot be sure its state matches (the memory cap tripped in
 * an apply, whose outcome may differ between replicas) stops serving reads
 * and asks for a check now; the verdict clears it or starts a resync. */
void mr_node_integrity_suspect(struct mr_node *n, mr_index index, const char *why)
{
    uint64_t now = mr_node_now(n);
    if (!n->integ_suspect) {
        LOGW("entry %llu: %s; this node's state may differ from the others: reads are refused "
             "until an integrity check confirms it",
             (unsigned long long)index, why);
    }
    n->integ_suspect = 1;
    if (n->integ_last_request_ms != 0 && now - n->integ_last_request_ms < CHECK_REQUEST_GAP_MS)
        return;
    n->integ_last_request_ms = now;
    if (n->role == MR_RAFT_LEADER) {
        n->integ_want_check = 1;
    } else if (n->leader != 0) {
        send_msg(n, n->leader, MSG_REQUEST, index, 0, NULL);
    }
}

/* ---- peer messages -------------------------------------------------------------------- */
static int is_hex64(const unsigned char *p)
{
    for (int i = 0; i < 64; i++) {
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f'))) return 0;
    }
    return 1;
}

void mr_node_integrity_on_msg(struct mr_node *n, mr_node_id from, const uint8_t *p, size_t len)
{
    char hash[65];
    if (len != MSG_LEN || ((p[0] == MSG_REPORT || p[0] == MSG_VERDICT) && !is_hex64(p + 10))) {
        LOGW("dropped a malformed integrity message");
        return;
    }
    mr_index index = mr_get_u64(p + 1);
    memcpy(hash, p + 10, 64);
    hash[64] = '\0';
    switch (p[0]) {
    case MSG_REPORT:
        if (n->role == MR_RAFT_LEADER) leader_record(n, from, index, hash);
        break;
    case MSG_VERDICT:
        if (from == n->leader) mr_node_integrity_on_verdict(n, index, p[9] != 0, hash);
        break;
    case MSG_RESYNC:
        if (n->role == MR_RAFT_LEADER) {
            char nb[72];
            LOGW("%s asks for a snapshot to rebuild its diverged state (its applied index %llu)",
                 mr_node_name_of(n, from, nb, sizeof nb), (unsigned long long)index);
            n->integ_resync_to = from;
            n->integ_resync_from = index;
            mr_node_integrity_resync_pump(n);
        }
        break;
    case MSG_REQUEST:
        if (n->role == MR_RAFT_LEADER) {
            n->integ_want_check = 1; /* proposed at the next tick */
        }
        break;
    default:
        LOGW("dropped an integrity message of unknown type %u", p[0]);
    }
}

/* ---- resync ------------------------------------------------------------------------------
 * A diverged member rebuilds its STATE MACHINE, never its log: its log holds
 * committed entries that count toward the majority, so dropping them (as a
 * normal snapshot install below the commit index would) could lose a
 * committed entry if the others then failed. It loads the leader's snapshot
 * at index s (taken after the member's request, so s covers what the member
 * had applied or more) and re-applies its own log entries after s. */
int mr_node_integrity_blocks_reads(const struct mr_node *n)
{
    return n->integ_diverged || n->integ_suspect || n->integ_resyncing;
}

void mr_node_integrity_resync_start(struct mr_node *n)
{
    if (n->role == MR_RAFT_LEADER || n->leader == 0) return; /* poll retries */
    n->integ_resyncing = 1;
    n->integ_resync_asked_ms = mr_node_now(n);
    send_msg(n, n->leader, MSG_RESYNC, n->applied, 0, NULL);
}

void mr_node_integrity_resync_pump(struct mr_node *n)
{
    if (n->integ_diverged && !n->integ_resynced && n->o->integrity_resync &&
        n->role != MR_RAFT_LEADER && n->leader != 0 &&
        (!n->integ_resyncing || mr_node_now(n) - n->integ_resync_asked_ms >= RESYNC_RETRY_MS)) {
        mr_node_integrity_resync_start(n);
    }
    if (n->integ_resync_to == 0) return;
    if (n->role != MR_RAFT_LEADER) {
        n->integ_resync_to = 0;
        return;
    }
    if (n->snap_index >= n->integ_resync_from && n->snap_index > 0 && !n->snap_work_busy) {
        struct mr_raft_msg m;
        memset(&m, 0, sizeof m);
        m.type = MR_RAFT_MSG_SNAPSHOT;
        m.from = n->id;
        m.to = n->integ_resync_to;
        m.term = n->raft.term;
        m.ctx = MR_NODE_SNAP_RESYNC_CTX;
        n->integ_resync_to = 0;
        mr_node_snap_send_start(n, &m);
        return;
    }
    if (!n->job_running && !n->snap_work_busy && n->applied >= n->integ_resync_from)
        mr_node_apply_snapshot_soon(n, 1);
}

void mr_node_integrity_resync_install(struct mr_node *n, mr_index s, mr_term term)
{
    char err[MR_ERRMSG_SIZE] = "";
    mr_index upto, i;
    int rv;
    /* the state machine is rebuilt here: take it from the apply thread */
    mr_node_apply_sync(n);
    upto = n->applied;
    if (!n->integ_resyncing) {
        LOGW("ignored a resync snapshot at index %llu: not asked for", (unsigned long long)s);
        return;
    }
    if (s < upto && mr_raft_entry_at(&n->raft, s + 1) == NULL) {
        LOGE("resync: the snapshot at index %llu is older than this node's log start; asking "
             "for a newer one",
             (unsigned long long)s);
        n->integ_resyncing = 0;
        return;
    }
    if (n->job_running || n->snap_work_busy || mr_store_snapshot_index(n->store) > s ||
        n->rx == NULL || !n->rx_complete || n->rx_index != s || n->rx_term != term) {
        /* a local snapshot in flight (or a newer one on disk) would make
         * the received file not the newest: ask again later */
        LOGW("resync: cannot use the snapshot at index %llu now; asking again later",
             (unsigned long long)s);
        n->integ_resyncing = 0;
        return;
    }
    /* The leader's snapshot becomes this node's newest: a restart then
     * starts from it (and the log after it), not from the diverged state. */
    rv = mr_store_snap_receiver_finish(n->rx, 0, 0, err);
    n->rx = NULL;
    n->rx_complete = 0;
    if (rv == 0 && mr_store_snapshot_index(n->store) != s) {
        rv = MR_ENOTFOUND;
        mr_errmsg_printf(err, "the newest snapshot on disk is not the received one");
    }
    if (rv == 0) rv = mr_node_snap_restore_newest(n, err);
    if (rv != 0) {
        LOGE("resync: cannot load the leader's snapshot at index %llu: %s",
             (unsigned long long)s, err);
        n->integ_resyncing = 0;
        return;
    }
    n->applied = s;
    n->applied_term = term;
    n->snap_index = s;
    n->has_hash = 0;
    for (i = s + 1; i <= upto && !n->is_stopping; i++) {
        const struct mr_raft_entry *e = mr_raft_entry_at(&n->raft, i);
        struct mr_raft_entry copy;
        if (e == NULL) {
            /* checked above; the log cannot shrink in between */
            LOGE("resync: entry %llu vanished from the log; stopping", (unsigned long long)i);
            mr_node_request_stop(n, MR_NODE_EXIT_RUNTIME);
            return;
        }
        copy = *e; /* borrowed: the core is not stepped during the loop */
        if (copy.evicted) {
            /* dropped by the log cache: the payload is read back from the WAL */
            char rerr[MR_ERRMSG_SIZE] = "";
            int frv = mr_node_log_cache_fill_entry(n, &copy, rerr);
            if (frv != 0) {
                LOGE("resync: cannot read entry %llu back from the WAL: %s; stopping",
                     (unsigned long long)i, rerr[0] ? rerr : mr_strerror(frv));
                mr_node_request_stop(n, MR_NODE_EXIT_RUNTIME);
                return;
            }
            mr_node_apply_now(n, &copy, 1);
            mr_rcbuf_unref(copy.data);
            continue;
        }
        mr_node_apply_now(n, &copy, 1);
    }
    n->integ_resyncing = 0;
    n->integ_resynced = 1;
    n->integ_resyncs++;
    LOGW("resync: rebuilt the state from the leader's snapshot at index %llu and re-applied "
         "%llu entries of this node's log; an integrity check will confirm it",
         (unsigned long long)s, (unsigned long long)(upto > s ? upto - s : 0));
    n->integ_last_request_ms = 0;
    if (n->leader != 0) send_msg(n, n->leader, MSG_REQUEST, n->applied, 0, NULL);
}

/* A leader whose state machine cannot be trusted (diverged, or stale after a
 * failed install) must not answer from it: hand leadership to the most
 * caught-up voter. Called at the first tick after this node became leader. */
static void hand_over(struct mr_node *n)
{
    struct mr_raft_status st;
    struct mr_raft_event ev;
    mr_node_id best = 0;
    mr_index best_match = 0;
    char nb[72];
    if (!n->integ_diverged && !n->is_sm_stale) return;
    mr_raft_status(&n->raft, &st);
    for (unsigned i = 0; i < st.n_progress; i++) {
        const struct mr_raft_progress *p = &st.progress[i];
        if (p->id == n->id || p->role != MR_RAFT_VOTER) continue;
        if (best == 0 || p->match > best_match) {
            best = p->id;
            best_match = p->match;
        }
    }
    if (best == 0) return; /* a single voter: nobody to hand over to */
    memset(&ev, 0, sizeof ev);
    ev.type = MR_RAFT_EVENT_TRANSFER_LEADER;
    ev.node = best;
    if (mr_node_step(n, &ev) == 0)
        LOGW("this node's state machine is %s: handing leadership to %s",
             n->is_sm_stale ? "stale" : "diverged", mr_node_name_of(n, best, nb, sizeof nb));
}

/* ---- status --------------------------------------------------------------------------- */
void mr_node_integrity_json(struct mr_node *n, struct mr_http_json *j)
{
    mr_http_json_obj_begin(j);
    mr_http_json_key(j, "check_entries");
    mr_http_json_uint(j, n->o->integrity_check_entries);
    mr_http_json_key(j, "last_check_index");
    mr_http_json_uint(j, n->integ_last_check);
    mr_http_json_key(j, "own_hash_index");
    mr_http_json_uint(j, n->integ_own_index);
    mr_http_json_key(j, "own_hash");
    mr_http_json_str(j, n->integ_own_index ? n->integ_own_hash : NULL);
    mr_http_json_key(j, "verdict_index");
    mr_http_json_uint(j, n->integ_verdict_index);
    mr_http_json_key(j, "verdict");
    mr_http_json_str(j, n->integ_verdict_index == 0 ? NULL
                        : n->integ_verdict_ok     ? "ok"
                                                  : "diverged");
    mr_http_json_key(j, "state");
    mr_http_json_str(j, n->is_sm_stale        ? "stale"
                        : n->integ_resyncing  ? "resyncing"
                        : n->integ_diverged ? "diverged"
                        : n->integ_suspect  ? "suspect"
                                            : "ok");
    mr_http_json_key(j, "checks");
    mr_http_json_uint(j, n->integ_checks);
    mr_http_json_key(j, "mismatches");
    mr_http_json_uint(j, n->integ_mismatches);
    mr_http_json_key(j, "resyncs");
    mr_http_json_uint(j, n->integ_resyncs);
    mr_http_json_key(j, "alarm");
    if (n->integ_alarm) {
        mr_http_json_obj_begin(j);
        mr_http_json_key(j, "type");
        mr_http_json_str(j, "CORRUPT");
        mr_http_json_key(j, "index");
        mr_http_json_uint(j, n->integ_alarm_index);
        mr_http_json_key(j, "message");
        mr_http_json_str(j, n->integ_alarm_msg);
        mr_http_json_obj_end(j);
    } else {
        mr_http_json_null(j);
    }
    mr_http_json_obj_end(j);
}

void mr_node_integrity_close(struct mr_node *n)
{
    for (unsigned i = 0; i < MR_NODE_INTEG_JOBS; i++) {
        if (n->integ_jobs[i].index == 0) continue;
        mr_sm_snapshot_abort(&n->integ_jobs[i].job);
        n->integ_jobs[i].index = 0;
    }
}
