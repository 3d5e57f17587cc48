/* raft_membership.c: one-server-at-a-time membership changes (thesis 4.1,
 * 4.2), learners (thesis 4.2.1, non-voting catch-up), removing the leader
 * (thesis 4.2.2). A configuration takes effect as soon as its entry is in the
 * log, committed or not, and reverts if that entry is truncated.
 *
 * Deviation: a removed follower is told (raft.h). Thesis 4.2.3 only keeps a
 * removed server from disrupting the others; here the leader goes on
 * replicating to it ("departing", a progress of no role that never counts)
 * until it holds the removing entry and acknowledged a heartbeat that
 * carried a commit at or past it. Then that server's own core holds a
 * committed configuration without itself, so it never campaigns again
 * (raft_election.c promotable()) and its host can report it removed. */
#include <string.h>

#include "raft/raft_int.h"

int member_set(struct mr_raft *r, const struct mr_raft_config *c, mr_index index)
{
    struct mr_raft_config copy;
    int rv = mr_raft_config_copy(&copy, c);
    if (rv != 0) return rv;
    struct mr_raft_config old = r->config;
    r->config = copy;
    rv = progress_sync(r);
    if (rv != 0) {
        r->config = old;
        mr_raft_config_close(&copy);
        return rv;
    }
    mr_raft_config_close(&old);
    r->config_index = index;
    return 0;
}

int member_apply_entry(struct mr_raft *r, const struct mr_raft_entry *e)
{
    MR_ASSERT(!e->evicted); /* CONFIG entries are never evicted */
    struct mr_raft_config c;
    char err[MR_ERRMSG_SIZE];
    int rv = e->data == NULL
                 ? MR_EMALFORMED
                 : mr_raft_config_decode(e->data->data, e->data->len, &c, err);
    if (rv != 0) {
        TRACE(r, "configuration entry %llu is undecodable -> keep the old one",
              U(e->index));
        return rv;
    }
    rv = member_set(r, &c, e->index);
    mr_raft_config_close(&c);
    if (rv == 0)
        TRACE(r, "configuration at %llu takes effect: %u servers, %u voters", U(e->index),
              r->config.n, mr_raft_config_voters(&r->config));
    return rv;
}

struct mr_rcbuf *member_config_at(struct mr_raft *r, mr_index index)
{
    if (index > log_last_index(r)) index = log_last_index(r);
    for (mr_index i = index; i > r->log.offset; i--) {
        const struct mr_raft_entry *e = log_get(r, i);
        if (e->type == MR_RAFT_ENTRY_CONFIG) {
            MR_ASSERT(!e->evicted); /* never evicted: see mr_raft_log_evict */
            return mr_rcbuf_ref(e->data);
        }
    }
    if (r->snap_config != NULL) return mr_rcbuf_ref(r->snap_config);
    return mr_raft_config_encode(&r->config); /* bootstrap/joining: the current one */
}

int member_truncated(struct mr_raft *r, mr_index from)
{
    if (r->config_index < from) return 0;
    /* the entry that set our configuration is gone: go back to the previous */
    for (mr_index i = from - 1; i > r->log.offset; i--) {
        const struct mr_raft_entry *e = log_get(r, i);
        if (e->type == MR_RAFT_ENTRY_CONFIG) {
            TRACE(r, "configuration entry %llu truncated -> back to %llu",
                  U(r->config_index), U(i));
            return member_apply_entry(r, e);
        }
    }
    struct mr_raft_config c;
    mr_raft_config_init(&c);
    if (r->snap_config != NULL) {
        int rv =
            mr_raft_config_decode(r->snap_config->data, r->snap_config->len, &c, NULL);
        if (rv != 0) return rv;
    }
    TRACE(r, "configuration entry %llu truncated -> back to the snapshot's",
          U(r->config_index));
    int rv = member_set(r, &c, r->snap_index);
    mr_raft_config_close(&c);
    return rv;
}

void member_committed(struct mr_raft *r)
{
    if (r->state != MR_RAFT_LEADER || r->config_index > r->commit) return;
    if (!is_voter(r, r->id)) {
        /* thesis 4.2.2: a leader that is not part of the committed
         * configuration steps down */
        TRACE(r, "configuration %llu without us as voter is committed -> step down",
              U(r->config_index));
        become_follower(r, r->term, 0);
    }
}

void member_departed(struct mr_raft *r, const char *why)
{
    if (r->departing == 0) return;
    TRACE(r, "stop replicating to removed server %llu: %s", U(r->departing), why);
    r->departing = 0;
    /* on MR_ENOMEM its progress stays, of no role: it still never counts and
     * the next configuration change drops it */
    (void)progress_sync(r);
}

void member_departing_round(struct mr_raft *r, uint64_t round)
{
    if (r->departing == 0 || r->departing_round != 0) return;
    struct mr_raft_progress *p = progress_get(r, r->departing);
    /* the heartbeat carries min(match, commit): both must have reached the
     * removing entry for it to tell the server its removal committed */
    if (p == NULL || p->match < r->departing_index || r->commit < r->departing_index)
        return;
    TRACE(r, "heartbeat round %llu tells removed server %llu that %llu committed",
          U(round), U(r->departing), U(r->departing_index));
    r->departing_round = round;
}

void member_departing_ack(struct mr_raft *r, uint64_t round)
{
    if (r->departing == 0 || r->departing_round == 0 || round < r->departing_round)
        return;
    member_departed(r, "it knows its removal committed");
}

void member_departing_tick(struct mr_raft *r, unsigned k)
{
    if (r->departing == 0) return;
    unsigned limit = MR_RAFT_DEPARTING_TICKS_FACTOR * r->opts.election_max_ticks;
    /* departing_elapsed < limit here: it is dropped once it gets there */
    r->departing_elapsed =
        k >= limit - r->departing_elapsed ? limit : r->departing_elapsed + k;
    if (r->departing_elapsed >= limit) member_departed(r, "no answer in time, gave up");
}

int member_change(struct mr_raft *r, struct mr_raft_event *ev)
{
    if (r->state != MR_RAFT_LEADER) return MR_ENOTLEADER;
    if (r->transferee != 0) return MR_EBUSY;
    if (r->pending_conf > r->commit) {
        TRACE(r, "refuse membership change: entry %llu not committed yet (commit %llu)",
              U(r->pending_conf), U(r->commit));
        return MR_EBUSY;
    }
    mr_node_id id = ev->node;
    const struct mr_raft_server *s = mr_raft_config_get(&r->config, id);
    if (id == 0) return MR_EINVAL;
    struct mr_raft_config c;
    int rv = mr_raft_config_copy(&c, &r->config);
    if (rv != 0) return rv;
    switch (ev->change) {
    case MR_RAFT_ADD_VOTER:
    case MR_RAFT_ADD_LEARNER:
        rv = mr_raft_config_add(
            &c, id, ev->change == MR_RAFT_ADD_VOTER ? MR_RAFT_VOTER : MR_RAFT_LEARNER,
            ev->context);
        break;
    case MR_RAFT_PROMOTE: {
        if (s == NULL) {
            rv = MR_ENOTFOUND;
            break;
        }
        if (s->role != MR_RAFT_LEARNER) {
            rv = MR_EINVAL;
            break;
        }
        /* thesis 4.2.1: only a caught-up learner may vote */
        struct mr_raft_progress *p = progress_get(r, id);
        if (p->match + r->opts.max_append_entries < log_last_index(r)) {
            TRACE(r, "refuse promotion of %llu: match %llu, last %llu", U(id),
                  U(p->match), U(log_last_index(r)));
            rv = MR_EBUSY;
            break;
        }
        for (unsigned i = 0; i < c.n; i++)
            if (c.servers[i].id == id) c.servers[i].role = MR_RAFT_VOTER;
        break;
    }
    case MR_RAFT_REMOVE:
        if (s != NULL && s->role == MR_RAFT_VOTER &&
            mr_raft_config_voters(&r->config) == 1)
            rv = MR_EINVAL; /* would leave no voter */
        else
            rv = mr_raft_config_remove(&c, id);
        break;
    default:
        rv = MR_EINVAL;
    }
    if (rv != 0) {
        mr_raft_config_close(&c);
        return rv;
    }
    struct mr_raft_entry e = {
        .term = r->term, .index = log_last_index(r) + 1, .type = MR_RAFT_ENTRY_CONFIG};
    e.data = mr_raft_config_encode(&c);
    mr_raft_config_close(&c);
    if (e.data == NULL) return MR_ENOMEM;
    rv = log_append(r, &e);
    mr_rcbuf_unref(e.data);
    if (rv != 0) return rv;
    if (ev->change == MR_RAFT_REMOVE && s != NULL && id != r->id) {
        /* keep its progress (progress_sync) so that it learns its removal */
        if (r->departing != 0 && r->departing != id)
            member_departed(r, "another server is being removed");
        r->departing = id;
        r->departing_index = e.index;
        r->departing_round = 0;
        r->departing_elapsed = 0;
    }
    rv = member_apply_entry(r, log_get(r, e.index));
    if (rv != 0) {
        if (r->departing == id) r->departing = 0;
        log_truncate(r, e.index);
        return rv;
    }
    TRACE(r, "membership change %u of %llu appended at %llu", (unsigned)ev->change, U(id),
          U(e.index));
    r->pending_conf = e.index;
    ev->out_index = e.index;
    ev->out_term = e.term;
    repl_broadcast_append(r);
    repl_maybe_commit(r);
    return 0;
}
