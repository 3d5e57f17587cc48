/* raft_replication.c: log replication (paper 5.3, Figure 2 AppendEntries),
 * the commit rule (5.4.2, Figure 8), flow control (etcd's progress states:
 * probe, pipelined replicate within an inflight window, snapshot), the
 * leader's parallel disk write (thesis 10.2.1) and snapshots (thesis 5). */
#include <string.h>

#include "raft/raft_int.h"

/* ---- inflight window ------------------------------------------------------- */

void inflight_reset(struct mr_raft_progress *p)
{
    p->inflight_start = 0;
    p->inflight_count = 0;
}

static int inflight_full(const struct mr_raft *r, const struct mr_raft_progress *p)
{
    return p->inflight_count >= r->opts.max_inflight;
}

static void inflight_add(const struct mr_raft *r, struct mr_raft_progress *p,
                         mr_index last)
{
    MR_ASSERT(!inflight_full(r, p));
    p->inflight[(p->inflight_start + p->inflight_count) % r->opts.max_inflight] = last;
    p->inflight_count++;
}

static void inflight_free_to(const struct mr_raft *r, struct mr_raft_progress *p,
                             mr_index idx)
{
    while (p->inflight_count > 0 && p->inflight[p->inflight_start] <= idx) {
        p->inflight_start = (p->inflight_start + 1) % r->opts.max_inflight;
        p->inflight_count--;
    }
}

static void inflight_free_first(const struct mr_raft *r, struct mr_raft_progress *p)
{
    if (p->inflight_count == 0) return;
    p->inflight_start = (p->inflight_start + 1) % r->opts.max_inflight;
    p->inflight_count--;
}

static void become_probe(struct mr_raft *r, struct mr_raft_progress *p)
{
    (void)r;
    p->state = MR_RAFT_PROBE;
    p->probe_sent = 0;
    p->next = p->match + 1;
    inflight_reset(p);
}

static void become_replicate(struct mr_raft_progress *p)
{
    p->state = MR_RAFT_REPLICATE;
    p->probe_sent = 0;
    p->next = p->match + 1;
    inflight_reset(p);
}

/* ---- leader side ---------------------------------------------------------------- */

static void send_snapshot(struct mr_raft *r, struct mr_raft_progress *p)
{
    MR_ASSERT(r->snap_index >= r->log.offset && r->snap_index > 0);
    struct mr_raft_msg m = {
        .type = MR_RAFT_MSG_SNAPSHOT,
        .to = p->id,
        .snap_index = r->snap_index,
        .snap_term = r->snap_term,
        .snap_config = mr_rcbuf_ref(r->snap_config),
        .snap_last = 1,
    };
    TRACE(r, "peer %llu needs index %llu, compacted -> send snapshot %llu/%llu", U(p->id),
          U(p->next), U(r->snap_index), U(r->snap_term));
    p->state = MR_RAFT_SNAPSHOT;
    p->pending_snapshot = r->snap_index;
    p->snap_elapsed = 0;
    inflight_reset(p);
    send_msg(r, &m);
}

/* Sends the next batch to `p` if flow control allows. Returns 1 if a
 * message carrying entries left. */
/* The departing server hears nothing until its removal commits: it gets the
 * removing entry and the commit that covers it together, so it never holds
 * an uncommitted removal of itself, which would let it campaign (the
 * deviation in raft_election.c promotable()). */
static int departing_waits(const struct mr_raft *r, const struct mr_raft_progress *p)
{
    return p->role == 0 && p->id == r->departing && r->commit < r->departing_index;
}

static int send_append(struct mr_raft *r, struct mr_raft_progress *p, int allow_empty)
{
    if (p->id == r->id || departing_waits(r, p)) return 0;
    if (p->state == MR_RAFT_SNAPSHOT) return 0;
    if (p->state == MR_RAFT_PROBE && p->probe_sent) return 0;
    if (p->state == MR_RAFT_REPLICATE && inflight_full(r, p)) return 0;
    mr_index prev = p->next - 1;
    if (prev < r->log.offset) {
        send_snapshot(r, p);
        return 0;
    }
    size_t n = 0;
    int err = 0;
    struct mr_raft_entry *ents = NULL;
    if (p->next <= log_last_index(r))
        ents = log_slice(r, p->next, log_last_index(r), r->opts.max_append_entries,
                         r->opts.max_append_bytes, &n, &err);
    if (err != 0) return 0; /* out of memory: the next tick retries */
    if (n == 0 && !allow_empty) return 0;
    struct mr_raft_msg m = {
        .type = MR_RAFT_MSG_APPEND,
        .to = p->id,
        .index = prev,
        .log_term = log_term(r, prev),
        .commit = r->commit,
        .n_entries = (uint32_t)n,
        .entries = ents,
    };
    if (n > 0 && p->state == MR_RAFT_REPLICATE) {
        /* pipelining: optimistically assume it arrives */
        mr_index last = ents[n - 1].index;
        p->next = last + 1;
        inflight_add(r, p, last);
    } else if (p->state == MR_RAFT_PROBE) {
        p->probe_sent = 1;
    }
    send_msg(r, &m);
    return n > 0;
}

void repl_send_append(struct mr_raft *r, struct mr_raft_progress *p, int allow_empty)
{
    send_append(r, p, allow_empty);
}

/* Fill the pipe: keep sending while the window has room. */
static void send_all(struct mr_raft *r, struct mr_raft_progress *p)
{
    while (send_append(r, p, 0) && p->state == MR_RAFT_REPLICATE) {
    }
}

void repl_broadcast_append(struct mr_raft *r)
{
    for (unsigned i = 0; i < r->n_progress; i++) {
        struct mr_raft_progress *p = &r->progress[i];
        if (p->id == r->id) continue;
        if (!send_append(r, p, 1)) continue;
        send_all(r, p);
    }
}

void repl_broadcast_heartbeat(struct mr_raft *r, uint64_t round)
{
    if (round == 0) round = ++r->read_round;
    r->round_tick[round % 64] = r->ticks;
    member_departing_round(r, round);
    for (unsigned i = 0; i < r->n_progress; i++) {
        struct mr_raft_progress *p = &r->progress[i];
        if (p->id == r->id || departing_waits(r, p)) continue;
        mr_index commit = p->match < r->commit ? p->match : r->commit;
        struct mr_raft_msg m = {
            .type = MR_RAFT_MSG_HEARTBEAT, .to = p->id, .commit = commit, .ctx = round};
        send_msg(r, &m);
    }
    read_ack(r, NULL, round); /* the leader acknowledges its own round */
}

static uint64_t match_of(const struct mr_raft *r, const struct mr_raft_progress *p)
{
    /* thesis 10.2.1: the leader counts itself only once its write is durable */
    return p->id == r->id ? r->persisted : p->match;
}

int repl_maybe_commit(struct mr_raft *r)
{
    if (r->state != MR_RAFT_LEADER) return 0;
    mr_index idx = quorum_value(r, match_of);
    if (idx <= r->commit) return 0;
    /* Figure 8 / 5.4.2: count replicas only for entries of our term */
    if (log_term(r, idx) != r->term) {
        TRACE(r, "index %llu is on a majority but from term %llu, not %llu: wait", U(idx),
              U(log_term(r, idx)), U(r->term));
        return 0;
    }
    TRACE(r, "commit %llu -> %llu (replicated on a majority)", U(r->commit), U(idx));
    r->commit = idx;
    if (r->commit >= r->term_start) read_term_committed(r);
    member_committed(r);
    return 1;
}

int repl_become_leader(struct mr_raft *r)
{
    MR_ASSERT(r->state == MR_RAFT_CANDIDATE || r->state == MR_RAFT_PRECANDIDATE);
    r->state = MR_RAFT_LEADER;
    r->leader = r->id;
    r->transferee = 0;
    r->is_holding = 0;
    r->heartbeat_elapsed = 0;
    r->election_elapsed = 0;
    r->quiet_start = 0;
    /* the slot of a server we were informing of its removal when we last led */
    if (r->n_progress != r->config.n) (void)progress_sync(r);
    for (unsigned i = 0; i < r->n_progress; i++) progress_reset(r, &r->progress[i]);
    struct mr_raft_progress *self = progress_get(r, r->id);
    if (self != NULL) {
        self->match = r->persisted;
        self->next = log_last_index(r) + 1;
    }
    TRACE(r, "won the election: leader of term %llu", U(r->term));
    if (r->persisted_term != r->term) {
        /* won in the very step that raised the term: no vote request left,
         * so nothing proves the term durable yet */
        TRACE(r, "term %llu not durable yet -> hold messages until persisted",
              U(r->term));
        r->term_unsafe = 1;
    }
    /* thesis 6.4: a no-op so that entries of earlier terms can commit */
    struct mr_raft_entry e = {
        .term = r->term, .index = log_last_index(r) + 1, .type = MR_RAFT_ENTRY_NOOP};
    int rv = log_append(r, &e);
    r->term_start = e.index;
    r->pending_conf = e.index;
    if (rv != 0) return rv;
    repl_broadcast_append(r);
    repl_maybe_commit(r);
    return 0;
}

/* Sends what deferred proposals held back. Called on FLUSH and TICK. */
void repl_flush(struct mr_raft *r)
{
    if (!r->is_holding) return;
    r->is_holding = 0;
    if (r->state != MR_RAFT_LEADER) return;
    TRACE(r, "flush: entries up to %llu go out", U(log_last_index(r)));
    for (unsigned i = 0; i < r->n_progress; i++) send_all(r, &r->progress[i]);
}

int repl_propose(struct mr_raft *r, uint8_t type, struct mr_rcbuf *data, int is_deferred,
                 mr_index *index, mr_term *term)
{
    if (r->state != MR_RAFT_LEADER) return MR_ENOTLEADER;
    if (r->transferee != 0) return MR_EBUSY; /* thesis 3.10 */
    struct mr_raft_entry e = {
        .term = r->term, .index = log_last_index(r) + 1, .type = type, .data = data};
    int rv = log_append(r, &e);
    if (rv != 0) return rv;
    *index = e.index;
    *term = e.term;
    if (is_deferred) {
        r->is_holding = 1; /* the host sends a FLUSH before it waits for I/O */
        return 0;
    }
    for (unsigned i = 0; i < r->n_progress; i++) send_all(r, &r->progress[i]);
    repl_maybe_commit(r);
    return 0;
}

int repl_recv_append_resp(struct mr_raft *r, const struct mr_raft_msg *m)
{
    struct mr_raft_progress *p = progress_get(r, m->from);
    if (p == NULL) return 0;
    p->recent_active = 1;
    p->last_heard_tick = r->ticks;
    if (m->reject) {
        mr_index rejected = m->index;
        if (p->state == MR_RAFT_REPLICATE) {
            if (rejected <= p->match) return 0; /* stale */
            TRACE(r, "peer %llu rejected %llu while pipelining -> probe from %llu",
                  U(p->id), U(rejected), U(p->match + 1));
            become_probe(r, p);
        } else if (p->state == MR_RAFT_PROBE) {
            if (p->next - 1 != rejected) return 0; /* stale */
            /* fast backtracking with the follower's hint (5.3, etcd) */
            mr_index hint = m->reject_hint;
            if (m->hint_term > 0) hint = log_find_conflict_by_term(r, hint, m->hint_term);
            mr_index next = rejected < hint + 1 ? rejected : hint + 1;
            if (next < p->match + 1) next = p->match + 1;
            if (next < 1) next = 1;
            TRACE(r, "peer %llu rejected %llu (hint %llu/%llu) -> probe from %llu",
                  U(p->id), U(rejected), U(m->reject_hint), U(m->hint_term), U(next));
            p->next = next;
            p->probe_sent = 0;
        } else {
            return 0;
        }
        send_append(r, p, 1);
        return 0;
    }
    mr_index idx = m->index;
    if (idx > log_last_index(r)) return MR_EPROTO;
    int updated = 0;
    if (idx > p->match) {
        p->match = idx;
        updated = 1;
    }
    if (p->next < idx + 1) p->next = idx + 1;
    p->probe_sent = 0;
    inflight_free_to(r, p, idx);
    if (p->state == MR_RAFT_PROBE && updated) {
        TRACE(r, "peer %llu matched at %llu -> replicate", U(p->id), U(p->match));
        become_replicate(p);
    } else if (p->state == MR_RAFT_SNAPSHOT && p->match >= p->pending_snapshot) {
        TRACE(r, "peer %llu caught up past snapshot %llu -> replicate", U(p->id),
              U(p->pending_snapshot));
        become_replicate(p);
    }
    if (updated && repl_maybe_commit(r)) {
        if (r->state != MR_RAFT_LEADER) return 0; /* removed itself */
        repl_broadcast_append(r);
    } else {
        send_all(r, p);
    }
    if (r->transferee == p->id && p->match == log_last_index(r)) {
        TRACE(r, "transfer target %llu caught up at %llu -> timeout now", U(p->id),
              U(p->match));
        election_send_timeout_now(r, p->id);
    }
    return 0;
}

int repl_recv_heartbeat_resp(struct mr_raft *r, const struct mr_raft_msg *m)
{
    struct mr_raft_progress *p = progress_get(r, m->from);
    if (p == NULL) return 0;
    p->recent_active = 1;
    p->last_heard_tick = r->ticks;
    p->probe_sent = 0;
    if (p->state == MR_RAFT_REPLICATE && inflight_full(r, p)) inflight_free_first(r, p);
    if (p->match < log_last_index(r)) send_append(r, p, 1);
    read_ack(r, p, m->ctx);
    if (p->id == r->departing) member_departing_ack(r, m->ctx); /* last: may free p */
    return 0;
}

int repl_recv_snapshot_resp(struct mr_raft *r, const struct mr_raft_msg *m)
{
    struct mr_raft_progress *p = progress_get(r, m->from);
    if (p == NULL) return 0;
    p->recent_active = 1;
    p->last_heard_tick = r->ticks;
    if (m->reject) {
        TRACE(r, "peer %llu rejected snapshot -> probe", U(p->id));
        become_probe(r, p);
        send_append(r, p, 1);
        return 0;
    }
    if (m->index > log_last_index(r) && m->index > r->snap_index) return MR_EPROTO;
    if (m->index > p->match) p->match = m->index;
    TRACE(r, "peer %llu installed snapshot, match %llu -> probe", U(p->id), U(p->match));
    become_probe(r, p);
    if (repl_maybe_commit(r) && r->state == MR_RAFT_LEADER)
        repl_broadcast_append(r);
    else
        send_append(r, p, 1);
    return 0;
}

void repl_snapshot_done(struct mr_raft *r, mr_node_id id, int ok)
{
    if (r->state != MR_RAFT_LEADER) return;
    struct mr_raft_progress *p = progress_get(r, id);
    if (p == NULL || p->state != MR_RAFT_SNAPSHOT) return;
    if (!ok) {
        TRACE(r, "snapshot transfer to %llu failed -> probe", U(id));
        become_probe(r, p);
    }
}

void repl_unreachable(struct mr_raft *r, mr_node_id id)
{
    if (r->state != MR_RAFT_LEADER) return;
    struct mr_raft_progress *p = progress_get(r, id);
    if (p != NULL && p->state == MR_RAFT_REPLICATE) {
        TRACE(r, "peer %llu unreachable -> probe", U(id));
        become_probe(r, p);
    }
}

void repl_tick_snapshots(struct mr_raft *r, unsigned k)
{
    if (r->state != MR_RAFT_LEADER) return;
    for (unsigned i = 0; i < r->n_progress; i++) {
        struct mr_raft_progress *p = &r->progress[i];
        if (p->state != MR_RAFT_SNAPSHOT) continue;
        p->snap_elapsed =
            p->snap_elapsed > 0xffffffffu - k ? 0xffffffffu : p->snap_elapsed + k;
        if (p->snap_elapsed >= 2 * r->opts.election_max_ticks) {
            TRACE(r, "no answer to snapshot from %llu -> probe again", U(p->id));
            become_probe(r, p);
        }
    }
}

/* ---- follower side --------------------------------------------------------------- */

static void commit_to(struct mr_raft *r, mr_index idx)
{
    if (r->install_pending) return; /* the log may be replaced: wait */
    if (idx > log_last_index(r)) idx = log_last_index(r);
    if (idx > r->commit) {
        TRACE(r, "leader says commit %llu (was %llu)", U(idx), U(r->commit));
        r->commit = idx;
    }
}

int repl_recv_append(struct mr_raft *r, const struct mr_raft_msg *m)
{
    struct mr_raft_msg resp = {.type = MR_RAFT_MSG_APPEND_RESP, .to = m->from};
    if (r->install_pending) {
        /* our log is about to be replaced by the snapshot: an answer now
         * could promise entries the install discards; the leader resends */
        TRACE(r, "append at %llu from %llu while installing snapshot %llu -> drop",
              U(m->index), U(m->from), U(r->install_index));
        return 0;
    }
    if (m->index < r->commit) {
        resp.index = r->commit;
        TRACE(r, "append at %llu is below our commit %llu -> answer commit", U(m->index),
              U(r->commit));
        return send_msg(r, &resp);
    }
    if (m->index > log_last_index(r) || log_term(r, m->index) != m->log_term) {
        /* Figure 2 step 2, with a hint for fast backtracking */
        mr_index hint = m->index < log_last_index(r) ? m->index : log_last_index(r);
        hint = log_find_conflict_by_term(r, hint, m->log_term);
        resp.reject = 1;
        resp.index = m->index;
        resp.reject_hint = hint;
        resp.hint_term = log_term(r, hint);
        TRACE(r, "reject append: no entry %llu/%llu (last %llu) -> hint %llu/%llu",
              U(m->index), U(m->log_term), U(log_last_index(r)), U(hint),
              U(resp.hint_term));
        return send_msg(r, &resp);
    }
    /* Figure 2 steps 3-4: skip what we have, truncate at the first conflict */
    mr_index last_new = m->index + m->n_entries;
    uint32_t k = 0;
    for (; k < m->n_entries; k++) {
        const struct mr_raft_entry *e = &m->entries[k];
        if (e->index > log_last_index(r) || log_term(r, e->index) != e->term) break;
    }
    if (k < m->n_entries) {
        mr_index conflict = m->entries[k].index;
        if (conflict <= r->commit) {
            TRACE(r, "append would overwrite committed entry %llu -> drop", U(conflict));
            return MR_EPROTO;
        }
        int rv = log_reserve(r, m->n_entries - k);
        if (rv != 0) return rv;
        if (conflict <= log_last_index(r)) {
            TRACE(r, "conflict at %llu (term %llu vs %llu) -> truncate", U(conflict),
                  U(log_term(r, conflict)), U(m->entries[k].term));
            log_truncate(r, conflict);
            if (r->unstable > conflict) r->unstable = conflict;
            if (r->persisted >= conflict) r->persisted = conflict - 1;
            /* XXX(#raft-oom): if reverting the configuration runs out of
             * memory, the truncated entry's configuration stays in effect
             * until the next configuration entry arrives */
            member_truncated(r, conflict);
        }
        for (; k < m->n_entries; k++) {
            const struct mr_raft_entry *e = &m->entries[k];
            log_append(r, e);
            if (e->type != MR_RAFT_ENTRY_CONFIG) continue;
            rv = member_apply_entry(r, log_get(r, e->index));
            if (rv == MR_ENOMEM) {
                /* keep log and configuration in step: take the entry back
                 * and acknowledge what comes before it; the leader resends */
                log_truncate(r, e->index);
                last_new = e->index - 1;
                break;
            }
        }
    }
    commit_to(r, m->commit < last_new ? m->commit : last_new);
    resp.index = last_new;
    return send_msg(r, &resp);
}

int repl_recv_heartbeat(struct mr_raft *r, const struct mr_raft_msg *m)
{
    commit_to(r, m->commit);
    struct mr_raft_msg resp = {
        .type = MR_RAFT_MSG_HEARTBEAT_RESP, .to = m->from, .ctx = m->ctx};
    return send_msg(r, &resp);
}

int repl_recv_snapshot(struct mr_raft *r, const struct mr_raft_msg *m)
{
    struct mr_raft_msg resp = {.type = MR_RAFT_MSG_SNAPSHOT_RESP, .to = m->from};
    if (r->install_pending) {
        TRACE(r, "snapshot %llu/%llu from %llu while installing %llu/%llu -> drop",
              U(m->snap_index), U(m->snap_term), U(m->from), U(r->install_index),
              U(r->install_term));
        return 0;
    }
    if (m->snap_index <= r->commit) {
        TRACE(r, "snapshot %llu is not past our commit %llu -> ignore", U(m->snap_index),
              U(r->commit));
        resp.index = r->commit;
        return send_msg(r, &resp);
    }
    if (log_term(r, m->snap_index) == m->snap_term) {
        /* we have the entry: the log after it may be good, keep it */
        TRACE(r, "snapshot %llu/%llu matches our log -> fast-forward commit",
              U(m->snap_index), U(m->snap_term));
        commit_to(r, m->snap_index);
        resp.index = m->snap_index;
        return send_msg(r, &resp);
    }
    struct mr_raft_config c;
    char err[MR_ERRMSG_SIZE];
    int rv = m->snap_config == NULL ? MR_EMALFORMED
                                    : mr_raft_config_decode(m->snap_config->data,
                                                            m->snap_config->len, &c, err);
    if (rv != 0) {
        TRACE(r, "reject snapshot %llu: bad configuration", U(m->snap_index));
        resp.reject = 1;
        send_msg(r, &resp);
        return rv;
    }
    mr_raft_config_close(&c);
    /* Two phases (thesis 5.3 leaves the failure case open): nothing changes
     * here, so that a host that cannot install the snapshot leaves us with
     * our log and state machine intact. The log is replaced and the leader
     * acknowledged only once the host says SNAPSHOT_INSTALLED. */
    TRACE(r,
          "snapshot %llu/%llu (our last %llu, commit %llu) -> ask the host to install it",
          U(m->snap_index), U(m->snap_term), U(log_last_index(r)), U(r->commit));
    r->install_pending = 1;
    r->install_index = m->snap_index;
    r->install_term = m->snap_term;
    r->install_from = m->from;
    mr_rcbuf_unref(r->install_config);
    r->install_config = mr_rcbuf_ref(m->snap_config);
    r->snap_to_install = 1;
    return 0;
}

/* ---- host acknowledgements ----------------------------------------------------------
 */

void repl_persisted(struct mr_raft *r, mr_index index, mr_term term)
{
    if (index >= r->unstable) return;
    /* wal_persisted may lag persisted: SNAPSHOT_TAKEN raises only persisted
     * (the snapshot covers entries the WAL may not hold yet) */
    if (index <= r->persisted && (index <= r->wal_persisted || index <= r->log.offset))
        return;
    if (log_term(r, index) != term) {
        TRACE(r, "persisted %llu/%llu is stale (log has term %llu)", U(index), U(term),
              U(log_term(r, index)));
        return;
    }
    if (index > r->wal_persisted) r->wal_persisted = index;
    if (index <= r->persisted) return;
    r->persisted = index;
    if (r->term_unsafe && term == r->term) {
        TRACE(r, "term %llu is durable -> messages may leave at once", U(r->term));
        r->term_unsafe = 0;
    }
    if (r->state == MR_RAFT_LEADER) {
        struct mr_raft_progress *self = progress_get(r, r->id);
        if (self != NULL) self->match = index;
        if (repl_maybe_commit(r) && r->state == MR_RAFT_LEADER) repl_broadcast_append(r);
    }
}

int repl_snapshot_taken(struct mr_raft *r, mr_index index, mr_term term,
                        uint64_t max_trailing)
{
    if (index <= r->snap_index) return 0; /* older than what we have */
    if (index > r->applied || log_term(r, index) != term) return MR_EINVAL;
    struct mr_rcbuf *cfg = member_config_at(r, index);
    if (cfg == NULL) return MR_ENOMEM;
    mr_rcbuf_unref(r->snap_config);
    r->snap_config = cfg;
    r->snap_index = index;
    r->snap_term = term;
    if (r->persisted < index) r->persisted = index;
    uint64_t trailing = r->opts.snapshot_trailing;
    if (max_trailing > 0 && max_trailing < trailing) trailing = max_trailing;
    mr_index upto = index > trailing ? index - trailing : 0;
    if (upto > r->log.offset) {
        TRACE(r, "snapshot at %llu/%llu -> compact log up to %llu", U(index), U(term),
              U(upto));
        log_compact(r, upto);
    }
    return 0;
}

static int is_install(const struct mr_raft *r, mr_index index, mr_term term,
                      const char *what)
{
    if (r->install_pending && index == r->install_index && term == r->install_term)
        return 1;
    TRACE(r, "snapshot %llu/%llu %s but no such install is pending -> ignore", U(index),
          U(term), what);
    return 0;
}

int repl_snapshot_installed(struct mr_raft *r, mr_index index, mr_term term)
{
    if (!is_install(r, index, term, "installed")) return 0;
    struct mr_raft_config c;
    int rv =
        mr_raft_config_decode(r->install_config->data, r->install_config->len, &c, NULL);
    if (rv == 0) {
        rv = member_set(r, &c, index);
        mr_raft_config_close(&c);
    }
    if (rv != 0) {
        /* decoded fine on receipt: only MR_ENOMEM gets here */
        TRACE(r, "snapshot %llu/%llu installed but out of memory -> still pending",
              U(index), U(term));
        return rv;
    }
    TRACE(r, "snapshot %llu/%llu installed (our last was %llu, commit %llu) -> reset log",
          U(index), U(term), U(log_last_index(r)), U(r->commit));
    log_reset(r, index, term);
    r->commit = r->applied = index;
    r->unstable = index + 1;
    /* the host queued its WAL reset before stepping this: the entries it
     * writes from now on come after it */
    r->persisted = r->wal_persisted = index;
    r->snap_index = index;
    r->snap_term = term;
    mr_rcbuf_unref(r->snap_config);
    r->snap_config = r->install_config;
    r->install_config = NULL;
    r->install_pending = 0;
    /* an acknowledgement: msgs_after, so it leaves once the reset is durable */
    struct mr_raft_msg resp = {
        .type = MR_RAFT_MSG_SNAPSHOT_RESP, .to = r->install_from, .index = index};
    return send_msg(r, &resp);
}

void repl_snapshot_failed(struct mr_raft *r, mr_index index, mr_term term)
{
    if (!is_install(r, index, term, "failed")) return;
    /* No answer: the leader keeps the peer in snapshot state and sends a new
     * snapshot after its snapshot timeout, instead of at once in a loop. */
    TRACE(r,
          "installing snapshot %llu/%llu failed -> keep our log (last %llu, commit "
          "%llu), no answer: the leader retries later",
          U(index), U(term), U(log_last_index(r)), U(r->commit));
    r->install_pending = 0;
    mr_rcbuf_unref(r->install_config);
    r->install_config = NULL;
}
