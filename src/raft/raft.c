/* raft.c: the core's one door (mr_raft_step), ready batches, roles shared by
 * every file, progress bookkeeping and the status getter. */
#include <string.h>

#include "raft/raft_int.h"

/* evicted / evicted_len live in what was padding after `type`: an entry is
 * still four words, and the network codec never sees the new fields */
_Static_assert(sizeof(struct mr_raft_entry) == 32 || sizeof(void *) != 8,
               "struct mr_raft_entry grew");

/* ---- names ------------------------------------------------------------------ */

const char *mr_raft_state_name(int state)
{
    switch (state) {
    case MR_RAFT_FOLLOWER:
        return "follower";
    case MR_RAFT_PRECANDIDATE:
        return "pre-candidate";
    case MR_RAFT_CANDIDATE:
        return "candidate";
    case MR_RAFT_LEADER:
        return "leader";
    default:
        return "unknown";
    }
}

const char *mr_raft_msg_name(int type)
{
    static const char *const names[] = {
        "?",
        "append",
        "append_resp",
        "vote",
        "vote_resp",
        "prevote",
        "prevote_resp",
        "heartbeat",
        "heartbeat_resp",
        "snapshot",
        "snapshot_resp",
        "timeout_now",
        "read_index",
        "read_index_resp",
    };
    if (type < 1 || type > MR_RAFT_MSG_TYPE_MAX) return "unknown";
    return names[type];
}

/* ---- options, init, close ----------------------------------------------------- */

void mr_raft_options_default(struct mr_raft_options *o, mr_node_id id)
{
    memset(o, 0, sizeof(*o));
    o->id = id;
    o->election_min_ticks = 30;
    o->election_max_ticks = 60;
    o->heartbeat_ticks = 5;
    o->max_append_entries = 64;
    o->max_append_bytes = 1u << 20;
    o->max_inflight = 256;
    o->snapshot_trailing = 0;
    o->check_quorum = 1;
    o->pre_vote = 1;
    o->lease_reads = 1;
    o->seed = id;
}

int mr_raft_init(struct mr_raft *r, const struct mr_raft_options *opts)
{
    memset(r, 0, sizeof(*r));
    mr_queue_init(&r->reads);
    if (opts->id == 0 || opts->heartbeat_ticks == 0 ||
        opts->election_min_ticks <= opts->heartbeat_ticks ||
        opts->election_max_ticks <= opts->election_min_ticks ||
        opts->max_append_entries == 0 || opts->max_inflight == 0)
        return MR_EINVAL;
    r->opts = *opts;
    r->id = opts->id;
    mr_rand_seed(&r->rand, opts->seed);
    r->state = MR_RAFT_FOLLOWER;
    r->reported_state = MR_RAFT_FOLLOWER;
    r->unstable = 1;
    /* A leader's lease (lease reads) counts on its followers not voting
     * for anyone within the minimum election timeout of hearing from it; a
     * follower that restarts has forgotten when that was, so it refuses
     * votes for that long. Without lease reads nothing depends on it. */
    r->quiet_start = (uint8_t)(opts->lease_reads && opts->check_quorum);
    mr_raft_config_init(&r->config);
    reset_election_timer(r);
    if (opts->pre_vote && !r->quiet_start) {
        /* The first timeout after a (re)start is shorter, in (heartbeat,
         * election_min]: a cluster restarted as a whole elects sooner, and
         * a node that comes back to a live cluster disturbs nobody (its
         * pre-votes are refused by followers in the leader's lease and do
         * not change terms). etcd fast-forwards its first election ticks
         * for the same reason. */
        r->election_timeout =
            opts->heartbeat_ticks + 1 +
            (unsigned)mr_rand_below(&r->rand,
                                    opts->election_min_ticks - opts->heartbeat_ticks);
    }
    return 0;
}

static void free_output(struct mr_raft *r)
{
    for (unsigned i = 0; i < r->n_msgs; i++) mr_raft_msg_release(&r->msgs[i]);
    for (unsigned i = 0; i < r->n_msgs_after; i++) mr_raft_msg_release(&r->msgs_after[i]);
    mr_free(r->msgs);
    mr_free(r->msgs_after);
    mr_free(r->out_reads);
    r->msgs = r->msgs_after = NULL;
    r->out_reads = NULL;
    r->n_msgs = r->cap_msgs = r->n_msgs_after = r->cap_msgs_after = 0;
    r->n_out_reads = r->cap_out_reads = 0;
}

void mr_raft_close(struct mr_raft *r)
{
    while (!mr_queue_empty(&r->reads)) {
        struct mr_queue *q = r->reads.next;
        mr_queue_remove(q);
        mr_free(MR_CONTAINER_OF(q, struct mr_raft_read, link));
    }
    free_output(r);
    log_close(r);
    for (unsigned i = 0; i < r->n_progress; i++) mr_free(r->progress[i].inflight);
    mr_free(r->progress);
    r->progress = NULL;
    r->n_progress = 0;
    mr_free(r->granted);
    mr_free(r->rejected);
    r->granted = r->rejected = NULL;
    mr_raft_config_close(&r->config);
    mr_rcbuf_unref(r->snap_config);
    r->snap_config = NULL;
    mr_rcbuf_unref(r->install_config);
    r->install_config = NULL;
}

void mr_raft_msg_release(struct mr_raft_msg *m)
{
    if (m == NULL) return;
    for (uint32_t i = 0; i < m->n_entries; i++) mr_rcbuf_unref(m->entries[i].data);
    mr_free(m->entries);
    mr_rcbuf_unref(m->snap_config);
    mr_rcbuf_unref(m->snap_chunk);
    memset(m, 0, sizeof(*m));
}

static int has_state(const struct mr_raft *r)
{
    return r->term != 0 || log_last_index(r) != 0 || r->config.n != 0;
}

int mr_raft_load(struct mr_raft *r, const struct mr_raft_persisted *p, char *errmsg)
{
    if (has_state(r)) return MR_EINVAL;
    for (size_t i = 0; i < p->n_entries; i++) {
        if (p->entries[i].index != p->snap_index + 1 + i) {
            if (errmsg)
                mr_errmsg_printf(errmsg, "load: entry %zu has index %llu, want %llu", i,
                                 U(p->entries[i].index), U(p->snap_index + 1 + i));
            return MR_EINVAL;
        }
        if (p->entries[i].evicted) {
            if (errmsg)
                mr_errmsg_printf(errmsg, "load: entry %llu has no payload (evicted)",
                                 U(p->entries[i].index));
            return MR_EINVAL;
        }
    }
    r->term = r->persisted_term = p->term;
    r->vote = r->persisted_vote = p->vote;
    log_reset(r, p->snap_index, p->snap_term);
    int rv = log_reserve(r, p->n_entries);
    if (rv != 0) return rv;
    for (size_t i = 0; i < p->n_entries; i++) log_append(r, &p->entries[i]);
    r->snap_index = p->snap_index;
    r->snap_term = p->snap_term;
    r->commit = r->applied = p->snap_index;
    if (p->commit > r->commit && p->commit <= log_last_index(r)) {
        TRACE(r, "the host knows %llu is committed -> commit %llu", U(p->commit),
              U(p->commit));
        r->commit = p->commit;
    }
    r->persisted = r->wal_persisted = log_last_index(r);
    r->unstable = r->persisted + 1;
    if (p->snap_config != NULL)
        r->snap_config = mr_rcbuf_ref((struct mr_rcbuf *)p->snap_config);
    /* the configuration is the latest one in the log (thesis 4.1), else the
     * snapshot's; scanned once, backwards, at start */
    mr_index at = r->snap_index;
    const struct mr_rcbuf *enc = r->snap_config;
    for (mr_index i = log_last_index(r); i > r->log.offset; i--) {
        if (log_get(r, i)->type == MR_RAFT_ENTRY_CONFIG) {
            MR_ASSERT(!log_get(r, i)->evicted);
            at = i;
            enc = log_get(r, i)->data;
            break;
        }
    }
    if (enc != NULL || at != r->snap_index) {
        struct mr_raft_config c;
        if (enc == NULL) {
            if (errmsg) mr_errmsg_printf(errmsg, "empty configuration entry");
            return MR_EMALFORMED;
        }
        rv = mr_raft_config_decode(enc->data, enc->len, &c, errmsg);
        if (rv != 0) {
            if (errmsg)
                mr_errmsg_wrapf(errmsg, "load: configuration at index %llu", U(at));
            return rv;
        }
        rv = member_set(r, &c, at);
        mr_raft_config_close(&c);
        if (rv != 0) return rv;
    }
    TRACE(r, "loaded term %llu vote %llu snapshot %llu/%llu entries %zu", U(p->term),
          U(p->vote), U(p->snap_index), U(p->snap_term), p->n_entries);
    return 0;
}

int mr_raft_bootstrap(struct mr_raft *r, const struct mr_raft_config *cfg)
{
    if (has_state(r) || mr_raft_config_voters(cfg) == 0) return MR_EINVAL;
    struct mr_raft_entry e = {.term = 1, .index = 1, .type = MR_RAFT_ENTRY_CONFIG};
    e.data = mr_raft_config_encode(cfg);
    if (e.data == NULL) return MR_ENOMEM;
    int rv = log_append(r, &e);
    mr_rcbuf_unref(e.data);
    if (rv != 0) return rv;
    rv = member_apply_entry(r, log_get(r, 1));
    if (rv != 0) {
        log_truncate(r, 1);
        return rv;
    }
    r->term = 1;
    r->commit = 1;
    TRACE(r, "bootstrap with %u servers", cfg->n);
    return 0;
}

/* ---- shared helpers ------------------------------------------------------------- */

void reset_election_timer(struct mr_raft *r)
{
    unsigned span = r->opts.election_max_ticks - r->opts.election_min_ticks;
    r->election_timeout =
        r->opts.election_min_ticks + (unsigned)mr_rand_below(&r->rand, span);
    r->election_elapsed = 0;
}

struct mr_raft_progress *progress_get(struct mr_raft *r, mr_node_id id)
{
    for (unsigned i = 0; i < r->n_progress; i++)
        if (r->progress[i].id == id) return &r->progress[i];
    return NULL;
}

int is_voter(const struct mr_raft *r, mr_node_id id)
{
    const struct mr_raft_server *s = mr_raft_config_get(&r->config, id);
    return s != NULL && s->role == MR_RAFT_VOTER;
}

unsigned quorum(const struct mr_raft *r)
{
    return mr_raft_config_voters(&r->config) / 2 + 1;
}

uint64_t quorum_value(const struct mr_raft *r,
                      uint64_t (*value)(const struct mr_raft *r,
                                        const struct mr_raft_progress *p))
{
    unsigned q = quorum(r);
    uint64_t best = 0;
    for (unsigned i = 0; i < r->n_progress; i++) {
        if (r->progress[i].role != MR_RAFT_VOTER) continue;
        uint64_t v = value(r, &r->progress[i]);
        if (v <= best) continue;
        unsigned have = 0;
        for (unsigned k = 0; k < r->n_progress; k++)
            if (r->progress[k].role == MR_RAFT_VOTER && value(r, &r->progress[k]) >= v)
                have++;
        if (have >= q) best = v;
    }
    return best;
}

void progress_reset(struct mr_raft *r, struct mr_raft_progress *p)
{
    p->match = 0;
    p->next = log_last_index(r) + 1;
    p->state = MR_RAFT_PROBE;
    p->probe_sent = 0;
    p->recent_active = 1;
    p->pending_snapshot = 0;
    p->snap_elapsed = 0;
    p->read_ack = 0;
    p->ack_tick = 0;
    inflight_reset(p);
}

/* The id of progress slot i: the configuration's servers, then the
 * departing server (slot n). */
static mr_node_id slot_id(const struct mr_raft *r, unsigned i)
{
    return i < r->config.n ? r->config.servers[i].id : r->departing;
}

int progress_sync(struct mr_raft *r)
{
    unsigned n = r->config.n;
    if (r->departing != 0 && mr_raft_config_get(&r->config, r->departing) != NULL) {
        TRACE(r, "departing server %llu is a member again", U(r->departing));
        r->departing = 0;
    }
    unsigned total = n + (r->departing != 0 ? 1 : 0);
    struct mr_raft_progress *np = mr_calloc(total ? total : 1, sizeof(*np));
    if (np == NULL) return MR_ENOMEM;
    /* allocate first so that a failure leaves the old progress intact */
    for (unsigned i = 0; i < total; i++) {
        if (progress_get(r, slot_id(r, i)) != NULL) continue;
        np[i].inflight = mr_calloc(r->opts.max_inflight, sizeof(mr_index));
        if (np[i].inflight == NULL) {
            for (unsigned k = 0; k < i; k++) mr_free(np[k].inflight);
            mr_free(np);
            return MR_ENOMEM;
        }
    }
    for (unsigned i = 0; i < total; i++) {
        mr_node_id id = slot_id(r, i);
        struct mr_raft_progress *old = progress_get(r, id);
        if (old != NULL) {
            np[i] = *old;
            old->inflight = NULL; /* moved */
        } else {
            np[i].id = id;
            progress_reset(r, &np[i]);
        }
        np[i].role = i < n ? r->config.servers[i].role : 0; /* departing: no role */
    }
    for (unsigned i = 0; i < r->n_progress; i++) mr_free(r->progress[i].inflight);
    mr_free(r->progress);
    r->progress = np;
    r->n_progress = total;
    /* vote tallies are sized by the configuration */
    mr_free(r->granted);
    mr_free(r->rejected);
    r->granted = mr_calloc(n + 1, sizeof(mr_node_id));
    r->rejected = mr_calloc(n + 1, sizeof(mr_node_id));
    r->n_granted = r->n_rejected = 0;
    if (r->granted == NULL || r->rejected == NULL) return MR_ENOMEM;
    return 0;
}

static int needs_persist(uint8_t type)
{
    /* These promise something about local storage: a vote (and a candidate's
     * own vote), or entries / a snapshot the receiver now holds. */
    return type == MR_RAFT_MSG_VOTE || type == MR_RAFT_MSG_VOTE_RESP ||
           type == MR_RAFT_MSG_APPEND_RESP || type == MR_RAFT_MSG_SNAPSHOT_RESP;
}

int send_msg(struct mr_raft *r, struct mr_raft_msg *m)
{
    if (m->from == 0) m->from = r->id;
    if (m->term == 0) m->term = r->term;
    int after = needs_persist(m->type) || r->term_unsafe;
    struct mr_raft_msg **arr = after ? &r->msgs_after : &r->msgs;
    unsigned *n = after ? &r->n_msgs_after : &r->n_msgs;
    unsigned *cap = after ? &r->cap_msgs_after : &r->cap_msgs;
    if (*n == *cap) {
        unsigned nc = *cap ? *cap * 2 : 16;
        struct mr_raft_msg *na = mr_realloc(*arr, nc * sizeof(*na));
        if (na == NULL) {
            TRACE(r, "out of memory: dropping %s to %llu", mr_raft_msg_name(m->type),
                  U(m->to));
            mr_raft_msg_release(m);
            return MR_ENOMEM;
        }
        *arr = na;
        *cap = nc;
    }
    (*arr)[(*n)++] = *m;
    memset(m, 0, sizeof(*m));
    return 0;
}

int emit_read(struct mr_raft *r, uint64_t ctx, mr_index index, int status)
{
    if (r->n_out_reads == r->cap_out_reads) {
        unsigned nc = r->cap_out_reads ? r->cap_out_reads * 2 : 8;
        struct mr_raft_read_state *na = mr_realloc(r->out_reads, nc * sizeof(*na));
        if (na == NULL) return MR_ENOMEM;
        r->out_reads = na;
        r->cap_out_reads = nc;
    }
    r->out_reads[r->n_out_reads].ctx = ctx;
    r->out_reads[r->n_out_reads].index = index;
    r->out_reads[r->n_out_reads].status = status;
    r->n_out_reads++;
    return 0;
}

void become_follower(struct mr_raft *r, mr_term term, mr_node_id leader)
{
    MR_ASSERT(term >= r->term);
    if (term > r->term) {
        r->term = term;
        r->vote = 0;
        r->term_unsafe = 0; /* learned from a message: durable elsewhere */
    }
    int was_leader = r->state == MR_RAFT_LEADER;
    if (was_leader) {
        read_abort_all(r);
        r->transferee = 0;
    }
    r->state = MR_RAFT_FOLLOWER;
    if (was_leader && r->departing != 0) {
        /* its progress slot stays (callers may hold progress pointers) and is
         * dropped when this server leads again (repl_become_leader) */
        TRACE(r, "stop replicating to removed server %llu: this server no longer leads",
              U(r->departing));
        r->departing = 0;
    }
    r->leader = leader;
    r->n_granted = r->n_rejected = 0;
    reset_election_timer(r);
}

/* ---- receiving ------------------------------------------------------------------- */

/* STYLE 8: the message came from the network; check it, never assert. */
static int validate(const struct mr_raft *r, const struct mr_raft_msg *m)
{
    if (m->type < 1 || m->type > MR_RAFT_MSG_TYPE_MAX) return 0;
    if (m->from == 0 || m->from == r->id || m->to != r->id) return 0;
    if (m->n_entries > 0) {
        if (m->type != MR_RAFT_MSG_APPEND || m->entries == NULL) return 0;
        for (uint32_t i = 0; i < m->n_entries; i++) {
            const struct mr_raft_entry *e = &m->entries[i];
            if (e->index != m->index + 1 + i || e->term > m->term || e->term == 0)
                return 0;
            if (e->type < MR_RAFT_ENTRY_NORMAL || e->type > MR_RAFT_ENTRY_CONFIG)
                return 0;
            /* the sender's host had to fill it from its WAL (raft.h) */
            if (e->evicted) return 0;
            if (i > 0 && e->term < m->entries[i - 1].term) return 0;
            if (i == 0 && e->term < m->log_term) return 0;
        }
    }
    if (m->type == MR_RAFT_MSG_APPEND && m->index + m->n_entries < m->index) return 0;
    return 1;
}

static mr_node_id leader_of(const struct mr_raft_msg *m)
{
    if (m->type == MR_RAFT_MSG_APPEND || m->type == MR_RAFT_MSG_HEARTBEAT ||
        m->type == MR_RAFT_MSG_SNAPSHOT)
        return m->from;
    return 0;
}

static int receive(struct mr_raft *r, const struct mr_raft_msg *m)
{
    if (!validate(r, m)) {
        TRACE(r, "drop malformed %s from %llu", mr_raft_msg_name(m->type), U(m->from));
        return MR_EMALFORMED;
    }
    /* 5.1: terms order everything */
    if (m->term > r->term) {
        if (m->type == MR_RAFT_MSG_VOTE || m->type == MR_RAFT_MSG_PREVOTE) {
            int transfer = m->type == MR_RAFT_MSG_VOTE && m->ctx == 1;
            if (r->opts.check_quorum && !transfer && election_in_lease(r)) {
                /* thesis 4.2.3: a leader is alive; don't let a stray node depose it */
                TRACE(r, "ignore %s from %llu at term %llu: leader %llu is alive (lease)",
                      mr_raft_msg_name(m->type), U(m->from), U(m->term), U(r->leader));
                return 0;
            }
        }
        if (m->type == MR_RAFT_MSG_PREVOTE ||
            (m->type == MR_RAFT_MSG_PREVOTE_RESP && !m->reject)) {
            /* thesis 9.6: a pre-vote never changes terms */
        } else {
            TRACE(r, "remote term is higher (%llu vs %llu) -> bump term (%s from %llu)",
                  U(m->term), U(r->term), mr_raft_msg_name(m->type), U(m->from));
            unsigned elapsed = r->election_elapsed;
            int was_follower = r->state == MR_RAFT_FOLLOWER;
            become_follower(r, m->term, leader_of(m));
            /* Figure 2: only a granted vote (election_recv_vote) restarts a
             * follower's election timer. Restarting it for every vote request
             * lets a candidate whose log is behind, on a faster clock, keep
             * the up-to-date server from ever timing out (without pre-vote) */
            if (m->type == MR_RAFT_MSG_VOTE && was_follower)
                r->election_elapsed = elapsed;
        }
    } else if (m->term < r->term) {
        if ((r->opts.check_quorum || r->opts.pre_vote) &&
            (m->type == MR_RAFT_MSG_APPEND || m->type == MR_RAFT_MSG_HEARTBEAT)) {
            /* a stale leader (maybe back from a partition) must learn our term,
             * since with pre-vote nobody else may ever send it a higher one */
            TRACE(r, "stale %s from %llu (term %llu < %llu) -> tell it our term",
                  mr_raft_msg_name(m->type), U(m->from), U(m->term), U(r->term));
            struct mr_raft_msg resp = {.type = MR_RAFT_MSG_APPEND_RESP, .to = m->from};
            return send_msg(r, &resp);
        }
        if (m->type == MR_RAFT_MSG_PREVOTE) {
            struct mr_raft_msg resp = {
                .type = MR_RAFT_MSG_PREVOTE_RESP, .to = m->from, .reject = 1};
            TRACE(r, "reject prevote from %llu: stale term %llu < %llu", U(m->from),
                  U(m->term), U(r->term));
            return send_msg(r, &resp);
        }
        TRACE(r, "ignore %s from %llu: stale term %llu < %llu", mr_raft_msg_name(m->type),
              U(m->from), U(m->term), U(r->term));
        return 0;
    }

    switch (m->type) {
    case MR_RAFT_MSG_APPEND:
    case MR_RAFT_MSG_HEARTBEAT:
    case MR_RAFT_MSG_SNAPSHOT:
        if (r->state == MR_RAFT_LEADER) {
            /* impossible with election safety; keep going as leader */
            TRACE(r, "ignore %s from %llu: two leaders in term %llu?",
                  mr_raft_msg_name(m->type), U(m->from), U(r->term));
            return MR_EPROTO;
        }
        if (r->state != MR_RAFT_FOLLOWER || r->leader != m->from) {
            TRACE(r, "%llu is the leader of term %llu", U(m->from), U(r->term));
            become_follower(r, r->term, m->from);
        }
        r->election_elapsed = 0;
        r->quiet_start = 0;
        if (m->type == MR_RAFT_MSG_APPEND) return repl_recv_append(r, m);
        if (m->type == MR_RAFT_MSG_HEARTBEAT) return repl_recv_heartbeat(r, m);
        return repl_recv_snapshot(r, m);
    case MR_RAFT_MSG_APPEND_RESP:
        return r->state == MR_RAFT_LEADER ? repl_recv_append_resp(r, m) : 0;
    case MR_RAFT_MSG_HEARTBEAT_RESP:
        return r->state == MR_RAFT_LEADER ? repl_recv_heartbeat_resp(r, m) : 0;
    case MR_RAFT_MSG_SNAPSHOT_RESP:
        return r->state == MR_RAFT_LEADER ? repl_recv_snapshot_resp(r, m) : 0;
    case MR_RAFT_MSG_VOTE:
    case MR_RAFT_MSG_PREVOTE:
        return election_recv_vote(r, m);
    case MR_RAFT_MSG_VOTE_RESP:
    case MR_RAFT_MSG_PREVOTE_RESP:
        return election_recv_vote_resp(r, m);
    case MR_RAFT_MSG_TIMEOUT_NOW:
        return election_recv_timeout_now(r, m);
    case MR_RAFT_MSG_READ_INDEX:
        return read_recv(r, m);
    case MR_RAFT_MSG_READ_INDEX_RESP:
        return read_recv_resp(r, m);
    default:
        return MR_EMALFORMED;
    }
}

/* ---- the door ------------------------------------------------------------------- */

static int dispatch(struct mr_raft *r, struct mr_raft_event *ev)
{
    switch (ev->type) {
    case MR_RAFT_EVENT_NONE:
        return 0;
    case MR_RAFT_EVENT_TICK: {
        /* the host may report several ticks at once (its loop stalled): the
         * clocks jump, so a stall shortens a lease and never lengthens it */
        uint64_t k = ev->n_ticks ? ev->n_ticks : 1;
        if (k > MR_RAFT_MAX_TICKS_PER_EVENT) k = MR_RAFT_MAX_TICKS_PER_EVENT;
        if (k > 1) TRACE(r, "%llu ticks elapsed at once", U(k));
        r->ticks += k;
        repl_flush(r);
        election_tick(r, (unsigned)k);
        repl_tick_snapshots(r, (unsigned)k);
        return 0;
    }
    case MR_RAFT_EVENT_RECEIVE:
        if (ev->msg == NULL) return MR_EINVAL;
        return receive(r, ev->msg);
    case MR_RAFT_EVENT_PROPOSE: {
        uint8_t type = ev->entry_type ? ev->entry_type : MR_RAFT_ENTRY_NORMAL;
        if (type == MR_RAFT_ENTRY_CONFIG) return MR_EINVAL; /* use CHANGE_MEMBERS */
        if (type != MR_RAFT_ENTRY_NORMAL && type != MR_RAFT_ENTRY_NOOP) return MR_EINVAL;
        return repl_propose(r, type, ev->data, ev->is_deferred, &ev->out_index,
                            &ev->out_term);
    }
    case MR_RAFT_EVENT_FLUSH:
        repl_flush(r);
        return 0;
    case MR_RAFT_EVENT_READ_INDEX:
        return read_request(r, ev->ctx, 0, ev->is_lease);
    case MR_RAFT_EVENT_CHANGE_MEMBERS:
        return member_change(r, ev);
    case MR_RAFT_EVENT_TRANSFER_LEADER:
        return election_transfer(r, ev->node);
    case MR_RAFT_EVENT_PERSISTED:
        repl_persisted(r, ev->index, ev->term);
        return 0;
    case MR_RAFT_EVENT_SNAPSHOT_TAKEN:
        return repl_snapshot_taken(r, ev->index, ev->term, ev->max_trailing);
    case MR_RAFT_EVENT_SNAPSHOT_INSTALLED:
        return repl_snapshot_installed(r, ev->index, ev->term);
    case MR_RAFT_EVENT_SNAPSHOT_FAILED:
        repl_snapshot_failed(r, ev->index, ev->term);
        return 0;
    case MR_RAFT_EVENT_REPORT_UNREACHABLE:
        repl_unreachable(r, ev->node);
        return 0;
    case MR_RAFT_EVENT_SNAPSHOT_DONE:
        repl_snapshot_done(r, ev->node, ev->ok);
        return 0;
    default:
        return MR_EINVAL;
    }
}

/* Moves everything pending into `rd`. */
static int collect(struct mr_raft *r, struct mr_raft_ready *rd)
{
    int rv = 0;
    memset(rd, 0, sizeof(*rd));
    if (r->term != r->persisted_term || r->vote != r->persisted_vote) {
        MR_ASSERT(r->term >= r->persisted_term);
        rd->flags |= MR_RAFT_READY_HARD_STATE;
        rd->term = r->persisted_term = r->term;
        rd->vote = r->persisted_vote = r->vote;
    }
    if (r->snap_to_install) {
        rd->flags |= MR_RAFT_READY_SNAPSHOT;
        rd->snap_index = r->install_index;
        rd->snap_term = r->install_term;
        rd->snap_config = mr_rcbuf_ref(r->install_config);
        r->snap_to_install = 0;
    }
    if (r->unstable <= log_last_index(r) &&
        !(r->is_holding && r->state == MR_RAFT_LEADER)) {
        size_t n;
        int err;
        rd->entries = log_slice(r, r->unstable, log_last_index(r), 0, 0, &n, &err);
        /* eviction stops at wal_persisted, below unstable */
        for (size_t i = 0; i < n; i++) MR_ASSERT(!rd->entries[i].evicted);
        if (err == 0) {
            rd->n_entries = n;
            rd->flags |= MR_RAFT_READY_ENTRIES;
            r->unstable = log_last_index(r) + 1;
        } else {
            rv = err; /* handed out on a later step */
        }
    }
    /* never hand out for applying what was not handed out for writing (they
     * differ only after an allocation failure above) */
    mr_index apply_to = r->commit < r->unstable ? r->commit : r->unstable - 1;
    /* nothing is applied while the host replaces its state machine */
    if (r->applied < apply_to && !r->install_pending) {
        size_t n;
        int err;
        MR_ASSERT(r->applied >= r->log.offset);
        rd->committed =
            log_slice(r, r->applied + 1, apply_to, 0, r->opts.max_apply_bytes, &n, &err);
        /* eviction stops at applied */
        for (size_t i = 0; i < n; i++) MR_ASSERT(!rd->committed[i].evicted);
        if (err == 0) {
            rd->n_committed = n;
            rd->flags |= MR_RAFT_READY_COMMITTED;
            r->applied = n > 0 ? rd->committed[n - 1].index : apply_to;
            rd->has_more_committed = r->applied < apply_to;
        } else {
            rv = err;
        }
    }
    if (r->n_msgs > 0 || r->n_msgs_after > 0) {
        rd->flags |= MR_RAFT_READY_MSGS;
        rd->msgs = r->msgs;
        rd->n_msgs = r->n_msgs;
        rd->msgs_after = r->msgs_after;
        rd->n_msgs_after = r->n_msgs_after;
        r->msgs = r->msgs_after = NULL;
        r->n_msgs = r->cap_msgs = r->n_msgs_after = r->cap_msgs_after = 0;
    }
    if (r->n_out_reads > 0) {
        rd->flags |= MR_RAFT_READY_READS;
        rd->reads = r->out_reads;
        rd->n_reads = r->n_out_reads;
        r->out_reads = NULL;
        r->n_out_reads = r->cap_out_reads = 0;
    }
    rd->state = r->state;
    rd->leader = r->leader;
    if (r->state != r->reported_state || r->leader != r->reported_leader) {
        rd->flags |= MR_RAFT_READY_SOFT_STATE;
        r->reported_state = r->state;
        r->reported_leader = r->leader;
    }
    return rv;
}

int mr_raft_step(struct mr_raft *r, struct mr_raft_event *ev, struct mr_raft_ready *ready)
{
    MR_ASSERT(r != NULL && ev != NULL && ready != NULL);
    ev->out_index = 0;
    ev->out_term = 0;
    int rv = dispatch(r, ev);
    MR_ASSERT(r->commit <= log_last_index(r) || r->commit == r->snap_index);
    int crv = collect(r, ready);
    return rv != 0 ? rv : crv;
}

void mr_raft_ready_release(struct mr_raft_ready *rd)
{
    if (rd == NULL) return;
    for (size_t i = 0; i < rd->n_entries; i++) mr_rcbuf_unref(rd->entries[i].data);
    mr_free(rd->entries);
    for (size_t i = 0; i < rd->n_committed; i++) mr_rcbuf_unref(rd->committed[i].data);
    mr_free(rd->committed);
    for (size_t i = 0; i < rd->n_msgs; i++) mr_raft_msg_release(&rd->msgs[i]);
    mr_free(rd->msgs);
    for (size_t i = 0; i < rd->n_msgs_after; i++) mr_raft_msg_release(&rd->msgs_after[i]);
    mr_free(rd->msgs_after);
    mr_rcbuf_unref(rd->snap_config);
    mr_free(rd->reads);
    memset(rd, 0, sizeof(*rd));
}

/* ---- status ---------------------------------------------------------------------- */

mr_term mr_raft_term_at(const struct mr_raft *r, mr_index index)
{
    return log_term(r, index);
}

const struct mr_raft_entry *mr_raft_entry_at(const struct mr_raft *r, mr_index index)
{
    if (index <= r->log.offset || index > log_last_index(r)) return NULL;
    return log_get(r, index);
}

void mr_raft_status(const struct mr_raft *r, struct mr_raft_status *st)
{
    memset(st, 0, sizeof(*st));
    st->state = r->state;
    st->term = r->term;
    st->vote = r->vote;
    st->leader = r->leader;
    st->commit = r->commit;
    st->applied = r->applied;
    st->last_index = log_last_index(r);
    st->last_term = log_last_term(r);
    st->persisted = r->persisted;
    st->snap_index = r->snap_index;
    st->first_index = log_first_index(r);
    st->config = &r->config;
    st->config_index = r->config_index;
    st->progress = r->progress;
    st->n_progress = r->n_progress;
    st->ticks = r->ticks;
}
