/* raft_int.h: helpers shared inside src/raft (not part of the contract). */
#ifndef MR_RAFT_INT_H
#define MR_RAFT_INT_H

#include "raft/raft.h"

/* STYLE 12: every decision is traced; formatting happens only when a tracer
 * is installed. */
#define TRACE(r, ...)                                                                    \
    do {                                                                                 \
        if ((r)->opts.tracer.emit_cb != NULL) {                                          \
            char trace_buf_[MR_ERRMSG_SIZE];                                             \
            mr_errmsg_printf(trace_buf_, __VA_ARGS__);                                   \
            (r)->opts.tracer.emit_cb((r)->opts.tracer.data, (r)->id, trace_buf_);        \
        }                                                                                \
    } while (0)

#define U(x) ((unsigned long long)(x))

/* Ticks one TICK event may report; more are counted as this many (a day at
 * 10 ms per tick: every timer has long expired by then). */
#define MR_RAFT_MAX_TICKS_PER_EVENT (1u << 23)

/* ---- raft_log.c: in-memory log, entries shared by refcount ---------------- */
mr_index log_last_index(const struct mr_raft *r);
mr_term log_last_term(const struct mr_raft *r);
mr_index log_first_index(const struct mr_raft *r); /* offset + 1 */
/* Term at `index`, or 0 if index is compacted (< offset) or beyond the end. */
mr_term log_term(const struct mr_raft *r, mr_index index);
/* Pointer to the entry at index (offset < index <= last). Borrowed. */
const struct mr_raft_entry *log_get(const struct mr_raft *r, mr_index index);
/* Appends a copy of `e` taking a new reference to its data. Index must be
 * last + 1. 0 or MR_ENOMEM (log unchanged). */
int log_append(struct mr_raft *r, const struct mr_raft_entry *e);
/* Makes room for n more entries: 0 or MR_ENOMEM. */
int log_reserve(struct mr_raft *r, size_t n);
/* Drops entries with index >= from (from > offset). */
void log_truncate(struct mr_raft *r, mr_index from);
/* Drops entries with index <= upto (upto <= last); upto becomes the offset. */
void log_compact(struct mr_raft *r, mr_index upto);
/* Drops everything and restarts the log after (index, term). */
void log_reset(struct mr_raft *r, mr_index index, mr_term term);
/* Copies entries [lo, hi] into a new array with their own references, but
 * at most max_n entries and (beyond the first) max_bytes of payload. Sets *n.
 * NULL with *n = 0 when the range is empty or on OOM (*err = MR_ENOMEM). */
struct mr_raft_entry *log_slice(const struct mr_raft *r, mr_index lo, mr_index hi,
                                size_t max_n, size_t max_bytes, size_t *n, int *err);
void log_close(struct mr_raft *r);
/* Largest index <= index whose term <= term (fast backtracking, 5.3 of the
 * paper's "optimisation", etcd's findConflictByTerm). */
mr_index log_find_conflict_by_term(const struct mr_raft *r, mr_index index, mr_term term);
/* Is (last_index, last_term) at least as up to date as our log (5.4.1)? */
int log_is_up_to_date(const struct mr_raft *r, mr_index index, mr_term term);

/* ---- raft.c: output, role changes shared by all files ---------------------- */
/* Queues a message; `m` is moved (its references now belong to the core's
 * output). m->from and m->term are filled here if zero. Returns 0 or
 * MR_ENOMEM (the message is released: losing a message is always safe). */
int send_msg(struct mr_raft *r, struct mr_raft_msg *m);
int emit_read(struct mr_raft *r, uint64_t ctx, mr_index index, int status);
void become_follower(struct mr_raft *r, mr_term term, mr_node_id leader);
void reset_election_timer(struct mr_raft *r);
struct mr_raft_progress *progress_get(struct mr_raft *r, mr_node_id id);
int is_voter(const struct mr_raft *r, mr_node_id id);
unsigned quorum(const struct mr_raft *r);
/* The largest v such that a majority of the voters have value(voter) >= v
 * (0 without voters): the commit index for match values, the acknowledged
 * heartbeat round for read acks. O(voters^2), no allocation. */
uint64_t quorum_value(const struct mr_raft *r,
                      uint64_t (*value)(const struct mr_raft *r,
                                        const struct mr_raft_progress *p));
/* Rebuilds progress after the configuration changed (keeps known peers). */
int progress_sync(struct mr_raft *r);
void progress_reset(struct mr_raft *r, struct mr_raft_progress *p);

/* ---- raft_election.c ------------------------------------------------------ */
/* `k` ticks elapsed (>= 1). */
void election_tick(struct mr_raft *r, unsigned k);
int election_start(struct mr_raft *r, int pre_vote, int transfer);
int election_recv_vote(struct mr_raft *r, const struct mr_raft_msg *m);
int election_recv_vote_resp(struct mr_raft *r, const struct mr_raft_msg *m);
int election_in_lease(const struct mr_raft *r);
int election_transfer(struct mr_raft *r, mr_node_id to);
int election_recv_timeout_now(struct mr_raft *r, const struct mr_raft_msg *m);
/* Leader: sends TimeoutNow to `to` and gives up the lease for this term. */
int election_send_timeout_now(struct mr_raft *r, mr_node_id to);

/* ---- raft_replication.c ---------------------------------------------------- */
int repl_become_leader(struct mr_raft *r);
void repl_flush(struct mr_raft *r);
int repl_propose(struct mr_raft *r, uint8_t type, struct mr_rcbuf *data, int is_deferred,
                 mr_index *index, mr_term *term);
void repl_send_append(struct mr_raft *r, struct mr_raft_progress *p, int allow_empty);
void repl_broadcast_append(struct mr_raft *r);
void repl_broadcast_heartbeat(struct mr_raft *r, uint64_t round);
int repl_recv_append(struct mr_raft *r, const struct mr_raft_msg *m);
int repl_recv_append_resp(struct mr_raft *r, const struct mr_raft_msg *m);
int repl_recv_heartbeat(struct mr_raft *r, const struct mr_raft_msg *m);
int repl_recv_heartbeat_resp(struct mr_raft *r, const struct mr_raft_msg *m);
int repl_recv_snapshot(struct mr_raft *r, const struct mr_raft_msg *m);
int repl_recv_snapshot_resp(struct mr_raft *r, const struct mr_raft_msg *m);
void repl_persisted(struct mr_raft *r, mr_index index, mr_term term);
int repl_snapshot_taken(struct mr_raft *r, mr_index index, mr_term term,
                        uint64_t max_trailing);
int repl_snapshot_installed(struct mr_raft *r, mr_index index, mr_term term);
void repl_snapshot_failed(struct mr_raft *r, mr_index index, mr_term term);
void repl_snapshot_done(struct mr_raft *r, mr_node_id id, int ok);
void repl_unreachable(struct mr_raft *r, mr_node_id id);
void repl_tick_snapshots(struct mr_raft *r, unsigned k);
/* Leader: recompute commit from the voters' match (Figure 8 rule). */
int repl_maybe_commit(struct mr_raft *r);
void inflight_reset(struct mr_raft_progress *p);

/* ---- raft_membership.c ----------------------------------------------------- */
int member_change(struct mr_raft *r, struct mr_raft_event *ev);
/* A CONFIG entry was appended at `index`: it takes effect now (4.1). */
int member_apply_entry(struct mr_raft *r, const struct mr_raft_entry *e);
/* Entries from `from` on were truncated: revert to the previous config. */
int member_truncated(struct mr_raft *r, mr_index from);
/* Commit advanced: a leader no longer in the configuration steps down. */
void member_committed(struct mr_raft *r);
/* Leader: stop replicating to the departing server (`why` is traced). */
void member_departed(struct mr_raft *r, const char *why);
/* Leader: the departing server acknowledged heartbeat round `round`. */
void member_departing_ack(struct mr_raft *r, uint64_t round);
/* Leader: heartbeat round `round` is going out; it tells the departing
 * server its removal committed if it holds the entry and it did. */
void member_departing_round(struct mr_raft *r, uint64_t round);
/* Leader: k ticks elapsed; gives up on a departing server that took too long. */
void member_departing_tick(struct mr_raft *r, unsigned k);
int member_set(struct mr_raft *r, const struct mr_raft_config *c, mr_index index);
/* Encoded configuration effective at `index` (latest CONFIG entry <= index,
 * else the snapshot's); new reference or NULL. */
struct mr_rcbuf *member_config_at(struct mr_raft *r, mr_index index);

/* ---- raft_read.c ----------------------------------------------------------- */
int read_request(struct mr_raft *r, uint64_t ctx, mr_node_id from, int is_lease);
int read_recv(struct mr_raft *r, const struct mr_raft_msg *m);
int read_recv_resp(struct mr_raft *r, const struct mr_raft_msg *m);
/* Leader: a peer acknowledged heartbeat round `round`. */
void read_ack(struct mr_raft *r, struct mr_raft_progress *p, uint64_t round);
/* Leader committed its first entry of the term: reads waiting can go. */
void read_term_committed(struct mr_raft *r);
/* Abandon all pending reads (stepping down). */
void read_abort_all(struct mr_raft *r);

#endif /* MR_RAFT_INT_H */
