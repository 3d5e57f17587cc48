/* raft_election.c: timeouts, Pre-Vote, RequestVote, check-quorum and
 * leadership transfer (paper 5.2, thesis 3.4, 3.10, 4.2.3, 6.2, 9.6). */
#include "raft/raft_int.h"

/* A voter of the latest configuration may campaign. So may a server that an
 * uncommitted configuration entry removed: if it holds the longest log (say
 * a leader that appended its own removal and crashed), the others cannot win
 * without its vote, and it cannot be elected by a configuration it is not in
 * unless it campaigns itself, counting votes of that new configuration only.
 * Once elected it commits the entry and steps down (thesis 4.2.2). */
static int promotable(const struct mr_raft *r)
{
    if (is_voter(r, r->id)) return 1;
    return r->config_index > r->commit && mr_raft_config_get(&r->config, r->id) == NULL &&
           mr_raft_config_voters(&r->config) > 0;
}

int election_in_lease(const struct mr_raft *r)
{
    return (r->leader != 0 || r->quiet_start) &&
           r->election_elapsed < r->opts.election_min_ticks;
}

static unsigned count_active_voters(struct mr_raft *r)
{
    unsigned active = 0;
    for (unsigned i = 0; i < r->n_progress; i++) {
        struct mr_raft_progress *p = &r->progress[i];
        if (p->role != MR_RAFT_VOTER) continue;
        if (p->id == r->id || p->recent_active) active++;
    }
    return active;
}

/* Adds k to a tick counter without wrapping. */
static void advance(unsigned *counter, unsigned k)
{
    *counter = *counter > 0xffffffffu - k ? 0xffffffffu : *counter + k;
}

/* Leader: k ticks elapsed. However many, at most one check-quorum and one
 * heartbeat round: a host that reports a stall at once gets no burst. */
static void leader_tick(struct mr_raft *r, unsigned k)
{
    member_departing_tick(r, k);
    advance(&r->heartbeat_elapsed, k);
    advance(&r->election_elapsed, k);
    if (r->transferee != 0) advance(&r->transfer_elapsed, k);
    if (r->transferee != 0 && r->transfer_elapsed >= r->opts.election_min_ticks) {
        /* thesis 3.10: abort if the target did not take over in time */
        TRACE(r, "leadership transfer to %llu timed out -> abort", U(r->transferee));
        r->transferee = 0;
    }
    if (r->election_elapsed >= r->opts.election_min_ticks) {
        r->election_elapsed = 0;
        if (r->opts.check_quorum) {
            /* thesis 6.2: step down without a majority for an election timeout */
            unsigned active = count_active_voters(r);
            if (active < quorum(r)) {
                TRACE(r,
                      "check quorum: only %u of %u voters active (need %u) -> step down",
                      active, mr_raft_config_voters(&r->config), quorum(r));
                become_follower(r, r->term, 0);
                return;
            }
            TRACE(r, "check quorum: %u voters active", active);
        }
        for (unsigned i = 0; i < r->n_progress; i++)
            if (r->progress[i].id != r->id) r->progress[i].recent_active = 0;
    }
    if (r->heartbeat_elapsed >= r->opts.heartbeat_ticks) {
        r->heartbeat_elapsed = 0;
        repl_broadcast_heartbeat(r, 0);
    }
}

void election_tick(struct mr_raft *r, unsigned k)
{
    if (r->state == MR_RAFT_LEADER) {
        leader_tick(r, k);
        return;
    }
    advance(&r->election_elapsed, k);
    if (r->quiet_start && r->election_elapsed >= r->opts.election_min_ticks)
        r->quiet_start = 0;
    if (r->election_elapsed < r->election_timeout) return;
    if (r->install_pending) {
        /* the host is replacing our state machine; it answers within this
         * host step in practice, the leader's snapshot is worth waiting for */
        TRACE(r, "election timeout while installing snapshot %llu -> wait for the host",
              U(r->install_index));
        return;
    }
    if (!promotable(r)) {
        r->election_elapsed = r->election_timeout; /* keep the lease expired */
        return;
    }
    TRACE(r, "election timeout (%u ticks) in term %llu -> %s", r->election_timeout,
          U(r->term), r->opts.pre_vote ? "pre-vote" : "campaign");
    election_start(r, r->opts.pre_vote, 0);
}

static int tally_has(const mr_node_id *ids, unsigned n, mr_node_id id)
{
    for (unsigned i = 0; i < n; i++)
        if (ids[i] == id) return 1;
    return 0;
}

static int tally(struct mr_raft *r, mr_node_id id, int granted)
{
    if (!is_voter(r, id)) return 0;
    if (tally_has(r->granted, r->n_granted, id) ||
        tally_has(r->rejected, r->n_rejected, id))
        return 0;
    if (granted)
        r->granted[r->n_granted++] = id;
    else
        r->rejected[r->n_rejected++] = id;
    return 1;
}

int election_start(struct mr_raft *r, int pre_vote, int transfer)
{
    if (!promotable(r)) return 0;
    if (r->install_pending) {
        TRACE(r, "no campaign while installing snapshot %llu", U(r->install_index));
        return 0;
    }
    mr_term campaign_term = r->term + 1;
    if (pre_vote) {
        /* thesis 9.6: ask first, without touching our term */
        r->state = MR_RAFT_PRECANDIDATE;
    } else {
        r->term = campaign_term;
        r->vote = r->id;
        r->state = MR_RAFT_CANDIDATE;
    }
    r->leader = 0;
    r->n_granted = r->n_rejected = 0;
    reset_election_timer(r);
    tally(r, r->id, 1);
    TRACE(r, "%s for term %llu (last %llu/%llu, %u voters, config %llu)",
          pre_vote ? "pre-campaign" : "campaign", U(campaign_term), U(log_last_index(r)),
          U(log_last_term(r)), mr_raft_config_voters(&r->config), U(r->config_index));
    if (r->n_granted >= quorum(r)) {
        if (pre_vote) return election_start(r, 0, transfer);
        return repl_become_leader(r);
    }
    int rv = 0;
    for (unsigned i = 0; i < r->config.n; i++) {
        const struct mr_raft_server *s = &r->config.servers[i];
        if (s->id == r->id || s->role != MR_RAFT_VOTER) continue;
        struct mr_raft_msg m = {
            .type = pre_vote ? MR_RAFT_MSG_PREVOTE : MR_RAFT_MSG_VOTE,
            .to = s->id,
            .term = campaign_term,
            .index = log_last_index(r),
            .log_term = log_last_term(r),
            .ctx = transfer ? 1 : 0,
        };
        int err = send_msg(r, &m);
        if (err != 0) rv = err;
    }
    return rv;
}

int election_recv_vote(struct mr_raft *r, const struct mr_raft_msg *m)
{
    int pre = m->type == MR_RAFT_MSG_PREVOTE;
    /* Figure 2 RequestVote: one vote per term, first come first served; a
     * pre-vote for a later term is granted to anyone with a good log. */
    int can_vote = r->vote == m->from || (r->vote == 0 && r->leader == 0) ||
                   (pre && m->term > r->term);
    int up_to_date = log_is_up_to_date(r, m->index, m->log_term);
    struct mr_raft_msg resp = {
        .type = pre ? MR_RAFT_MSG_PREVOTE_RESP : MR_RAFT_MSG_VOTE_RESP, .to = m->from};
    if (can_vote && up_to_date) {
        TRACE(r, "grant %s to %llu for term %llu (its log %llu/%llu, ours %llu/%llu)",
              pre ? "pre-vote" : "vote", U(m->from), U(m->term), U(m->index),
              U(m->log_term), U(log_last_index(r)), U(log_last_term(r)));
        resp.term = m->term;
        if (!pre) {
            r->vote = m->from;
            r->election_elapsed = 0;
        }
    } else {
        TRACE(r, "reject %s from %llu for term %llu: %s", pre ? "pre-vote" : "vote",
              U(m->from), U(m->term),
              !can_vote ? "already voted or leader known" : "its log is behind ours");
        resp.reject = 1;
        resp.term = r->term;
    }
    return send_msg(r, &resp);
}

int election_recv_vote_resp(struct mr_raft *r, const struct mr_raft_msg *m)
{
    int pre = m->type == MR_RAFT_MSG_PREVOTE_RESP;
    if (pre ? r->state != MR_RAFT_PRECANDIDATE : r->state != MR_RAFT_CANDIDATE) return 0;
    if (!pre && m->term != r->term) return 0;
    if (pre && !m->reject && m->term != r->term + 1) return 0;
    if (!tally(r, m->from, !m->reject)) return 0;
    TRACE(r, "%s from %llu: %s (%u granted, %u rejected, quorum %u)",
          pre ? "pre-vote" : "vote", U(m->from), m->reject ? "rejected" : "granted",
          r->n_granted, r->n_rejected, quorum(r));
    if (r->n_granted >= quorum(r)) {
        if (pre) return election_start(r, 0, 0);
        return repl_become_leader(r);
    }
    if (r->n_rejected >= quorum(r)) {
        TRACE(r, "lost the %s -> follower", pre ? "pre-vote" : "election");
        become_follower(r, r->term, 0);
    }
    return 0;
}

int election_transfer(struct mr_raft *r, mr_node_id to)
{
    if (r->state != MR_RAFT_LEADER) return MR_ENOTLEADER;
    if (to == r->id) return 0;
    if (!is_voter(r, to)) return MR_EINVAL;
    if (r->transferee == to) return 0;
    if (r->transferee != 0) return MR_EBUSY;
    r->transferee = to;
    r->transfer_elapsed = 0;
    struct mr_raft_progress *p = progress_get(r, to);
    if (p->match == log_last_index(r)) {
        TRACE(r, "transfer leadership to %llu: up to date -> timeout now", U(to));
        return election_send_timeout_now(r, to);
    }
    /* thesis 3.10: first bring the target's log up to date */
    TRACE(r, "transfer leadership to %llu: catching it up (match %llu, last %llu)", U(to),
          U(p->match), U(log_last_index(r)));
    repl_send_append(r, p, 1);
    return 0;
}

int election_send_timeout_now(struct mr_raft *r, mr_node_id to)
{
    /* Once the target may campaign, followers grant it their vote although
     * our lease told them to refuse (the transfer flag bypasses it): our
     * lease no longer holds for the rest of this term, even if the transfer
     * is aborted later (reads fall back to heartbeat rounds). */
    if (r->timeout_now_term != r->term)
        TRACE(r, "timeout now sent in term %llu -> no lease reads for the rest of it",
              U(r->term));
    r->timeout_now_term = r->term;
    struct mr_raft_msg m = {.type = MR_RAFT_MSG_TIMEOUT_NOW, .to = to};
    return send_msg(r, &m);
}

int election_recv_timeout_now(struct mr_raft *r, const struct mr_raft_msg *m)
{
    if (r->state == MR_RAFT_LEADER || m->from != r->leader) return 0;
    if (!promotable(r)) {
        TRACE(r, "ignore timeout_now from %llu: not a voter", U(m->from));
        return 0;
    }
    TRACE(r, "timeout_now from %llu -> campaign at once (leadership transfer)",
          U(m->from));
    return election_start(r, 0, 1);
}
