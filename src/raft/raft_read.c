/* raft_read.c: linearizable reads without writing to the log (thesis 6.4):
 * ReadIndex confirmed by one heartbeat round shared by every read waiting,
 * on behalf of followers too (6.4.1 "followers"), and lease reads (6.4.1)
 * that skip the round while check-quorum guarantees no other leader. */
#include "raft/raft_int.h"

static int committed_in_term(const struct mr_raft *r)
{
    /* thesis 6.4 step 1: the leader must know the latest commit index, which
     * it does once an entry of its own term has committed. term_start is the
     * no-op this leader appended; a leader never truncates its own log, so it
     * is still ours even after a snapshot compacted it away (its term can no
     * longer be looked up then: checking it stalled every read). */
    if (r->state != MR_RAFT_LEADER || r->term_start == 0 || r->commit < r->term_start)
        return 0;
    return r->term_start <= r->log.offset || log_term(r, r->term_start) == r->term;
}

static int deliver(struct mr_raft *r, uint64_t ctx, mr_node_id from, mr_index index,
                   int status)
{
    if (from == 0) return emit_read(r, ctx, index, status);
    struct mr_raft_msg m = {.type = MR_RAFT_MSG_READ_INDEX_RESP,
                            .to = from,
                            .ctx = ctx,
                            .index = index,
                            .reject = status != 0};
    return send_msg(r, &m);
}

static uint64_t round_of(const struct mr_raft *r, const struct mr_raft_progress *p)
{
    return p->id == r->id ? r->read_round : p->read_ack;
}

static uint64_t tick_of(const struct mr_raft *r, const struct mr_raft_progress *p)
{
    return p->id == r->id ? r->ticks + 1 : p->ack_tick;
}

/* The latest heartbeat round a majority of voters has acknowledged, and the
 * latest (send tick + 1) of rounds that a majority acknowledged; 0 if none. */
static void quorum_acked(const struct mr_raft *r, uint64_t *round, uint64_t *tick)
{
    *round = quorum_value(r, round_of);
    *tick = quorum_value(r, tick_of);
}

/* Lease length in ticks: 2/5 of the minimum election timeout (at least 1).
 * A follower that acknowledged a heartbeat refuses votes for election_min of
 * its own ticks after receiving it (election_in_lease), so it may vote once
 * election_min - 1 of its tick periods have passed since receipt. The lease
 * counts from the tick at which the heartbeat left (receipt is later) and
 * ends before lease_ticks of the leader's tick periods have passed. Safe
 * while lease_ticks / rate <= election_min - 1, where rate is the leader's
 * clock rate relative to the fastest follower's: with the defaults
 * (election_min 30, lease 12 ticks = 120 ms) any rate >= 12/29 = 0.42, i.e.
 * the followers' clocks may run up to 2.4 times as fast as the leader's.
 * The old lease (election_min - 2 ticks) needed rate >= 0.97. */
static uint64_t lease_ticks(const struct mr_raft *r)
{
    uint64_t l = (uint64_t)r->opts.election_min_ticks * 2 / 5;
    return l > 0 ? l : 1;
}

static int lease_valid(const struct mr_raft *r)
{
    uint64_t round, tick;
    quorum_acked(r, &round, &tick);
    if (tick == 0) return 0;
    /* tick is (send tick + 1) of a round a majority acknowledged: valid
     * while fewer than lease_ticks ticks have passed since that send tick */
    return r->ticks + 1 < tick + lease_ticks(r);
}

/* Answer every read whose round a majority has acknowledged; start the next
 * round if reads are waiting for one. */
static void process(struct mr_raft *r)
{
    if (r->state != MR_RAFT_LEADER || !committed_in_term(r)) return;
    uint64_t acked, tick;
    quorum_acked(r, &acked, &tick);
    while (!mr_queue_empty(&r->reads)) {
        struct mr_raft_read *rd =
            MR_CONTAINER_OF(r->reads.next, struct mr_raft_read, link);
        if (rd->index == 0) rd->index = r->commit;
        if (rd->round > acked) break;
        TRACE(r, "read %llu confirmed by heartbeat round %llu -> index %llu", U(rd->ctx),
              U(rd->round), U(rd->index));
        mr_queue_remove(&rd->link);
        deliver(r, rd->ctx, rd->from, rd->index, 0);
        mr_free(rd);
    }
    if (mr_queue_empty(&r->reads)) return;
    struct mr_raft_read *tail = MR_CONTAINER_OF(r->reads.prev, struct mr_raft_read, link);
    /* only one round in flight: the reads behind it share the next one */
    if (tail->round > r->read_round && acked >= r->read_round) {
        TRACE(r, "heartbeat round %llu for pending reads", U(r->read_round + 1));
        repl_broadcast_heartbeat(r, 0);
    }
}

int read_request(struct mr_raft *r, uint64_t ctx, mr_node_id from, int is_lease)
{
    if (r->state != MR_RAFT_LEADER) {
        if (from != 0) return deliver(r, ctx, from, 0, MR_ENOTLEADER);
        if (r->leader == 0) return MR_ENOLEADER;
        /* thesis 6.4.1: a follower asks the leader for the read index */
        struct mr_raft_msg m = {
            .type = MR_RAFT_MSG_READ_INDEX, .to = r->leader, .ctx = ctx};
        TRACE(r, "read %llu: ask leader %llu for a read index", U(ctx), U(r->leader));
        return send_msg(r, &m);
    }
    if (is_lease && r->opts.lease_reads && r->opts.check_quorum && r->transferee == 0 &&
        r->timeout_now_term != r->term && committed_in_term(r) && lease_valid(r)) {
        TRACE(r, "read %llu served under the lease at %llu", U(ctx), U(r->commit));
        return deliver(r, ctx, from, r->commit, 0);
    }
    if (is_lease && r->timeout_now_term == r->term)
        TRACE(r,
              "read %llu: timeout now was sent in term %llu -> no lease, heartbeat round",
              U(ctx), U(r->term));
    struct mr_raft_read *rd = mr_calloc(1, sizeof(*rd));
    if (rd == NULL) return MR_ENOMEM;
    rd->ctx = ctx;
    rd->from = from;
    rd->index = committed_in_term(r) ? r->commit : 0;
    rd->round = r->read_round + 1; /* a round sent after the read arrived */
    mr_queue_push_tail(&r->reads, &rd->link);
    TRACE(r, "read %llu waits for heartbeat round %llu", U(ctx), U(rd->round));
    process(r);
    return 0;
}

int read_recv(struct mr_raft *r, const struct mr_raft_msg *m)
{
    return read_request(r, m->ctx, m->from, 0);
}

int read_recv_resp(struct mr_raft *r, const struct mr_raft_msg *m)
{
    if (m->reject) return emit_read(r, m->ctx, 0, MR_ENOTLEADER);
    return emit_read(r, m->ctx, m->index, 0);
}

void read_ack(struct mr_raft *r, struct mr_raft_progress *p, uint64_t round)
{
    if (p != NULL) {
        if (round <= p->read_ack || round > r->read_round) {
            if (round <= p->read_ack) return;
            return; /* from the future: not ours */
        }
        p->read_ack = round;
        if (r->read_round - round < 64) p->ack_tick = r->round_tick[round % 64] + 1;
    }
    process(r);
}

void read_term_committed(struct mr_raft *r)
{
    process(r);
}

void read_abort_all(struct mr_raft *r)
{
    while (!mr_queue_empty(&r->reads)) {
        struct mr_raft_read *rd =
            MR_CONTAINER_OF(r->reads.next, struct mr_raft_read, link);
        mr_queue_remove(&rd->link);
        TRACE(r, "read %llu abandoned: no longer leader", U(rd->ctx));
        deliver(r, rd->ctx, rd->from, 0, MR_ENOTLEADER);
        mr_free(rd);
    }
}
