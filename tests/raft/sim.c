/* sim.c: the simulated cluster (see sim.h). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

struct sim_stats sim_stats;

/* ---- pieces ------------------------------------------------------------------ */

struct net_msg {
    struct mr_raft_msg m;
    uint64_t at, seq;
    uint64_t snap_hash; /* SNAPSHOT: the state-machine data "streamed" along */
};

struct write {
    uint64_t done_at;
    int has_hs;
    mr_term term;
    mr_node_id vote;
    int has_snap;
    mr_index snap_index;
    mr_term snap_term;
    struct mr_rcbuf *snap_config;
    uint64_t snap_hash;
    struct mr_raft_entry *entries;
    size_t n_entries;
    struct mr_raft_msg *msgs;
    size_t n_msgs;
};

struct disk {
    mr_term term;
    mr_node_id vote;
    mr_index snap_index;
    mr_term snap_term;
    struct mr_rcbuf *snap_config;
    uint64_t snap_hash;
    /* entries wal_base+1 .., wal_base <= snap_index: like moonraft's WAL it
     * keeps the entries the core keeps behind a snapshot (trailing), which
     * a leader may have to read back (evicted payloads); a restart loads
     * only those after snap_index */
    struct mr_raft_entry *wal;
    size_t n_wal, cap_wal;
    mr_index wal_base;
};

struct sim_node {
    mr_node_id id;
    int alive;
    int bootstrapped;
    struct mr_raft raft;
    struct disk disk;
    struct write *writes; /* FIFO */
    size_t n_writes, cap_writes;
    /* mirror of the core's in-memory log (terms only) for log matching */
    mr_term *terms;
    size_t n_terms, cap_terms;
    mr_index mirror_offset;
    mr_term mirror_offset_term;
    /* state machine */
    mr_index applied;
    mr_term applied_term;
    uint64_t hash;
    struct mr_rcbuf *sm_config; /* configuration at `applied` */
    uint64_t incoming_snap_hash;
    mr_node_id rx_from; /* snapshot stream being received */
    mr_index rx_index;
    uint64_t rx_next;
    mr_index mem_snap_index; /* latest snapshot this host holds (maybe not durable yet) */
    uint64_t mem_snap_hash;
    unsigned group;
    mr_term last_leader_term_checked;
    unsigned tick_units;    /* this node's clock: a TICK every so many units */
    unsigned fail_installs; /* the next n snapshot installs fail */
};

struct entry_key {
    mr_index index;
    mr_term term;
    mr_term prev_term;
    uint64_t data_hash;
    uint8_t type;
    uint8_t used;
};

struct applied_rec {
    mr_term term;
    uint64_t data_hash;
};

struct read_rec {
    mr_node_id node;
    mr_index floor; /* highest applied index anywhere when the read started */
    int status;
    mr_index index;
};

struct sim {
    struct sim_opts o;
    struct mr_rand rand;
    uint64_t now;
    struct sim_node nodes[SIM_MAX_NODES];
    unsigned n;
    struct net_msg *net;
    size_t n_net, cap_net;
    uint64_t net_seq;
    sim_filter_cb filter;
    void *filter_arg;
    /* checks */
    mr_node_id *leaders; /* by term */
    size_t cap_leaders;
    struct entry_key *keys;
    size_t cap_keys, n_keys;
    struct applied_rec *applied;
    size_t cap_applied;
    mr_index max_applied;
    struct read_rec *reads;
    size_t n_reads, cap_reads;
    /* schedule log */
    char *log;
    size_t log_len, log_cap;
    int failed;
    /* traces */
    char **traces;
    mr_node_id *trace_ids;
    size_t n_traces, cap_traces;
    unsigned long sent[SIM_MAX_NODES + 1][MR_RAFT_MSG_TYPE_MAX + 1];
    int in_ready;
};

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (q == NULL) abort();
    return q;
}

#define GROW(arr, n, cap)                                                                \
    do {                                                                                 \
        if ((n) == (cap)) {                                                              \
            (cap) = (cap) ? (cap)*2 : 16;                                                \
            (arr) = xrealloc((arr), (cap) * sizeof(*(arr)));                             \
        }                                                                                \
    } while (0)

static uint64_t hash_bytes(const struct mr_rcbuf *b)
{
    uint64_t h = 1469598103934665603ull;
    if (b == NULL) return h;
    for (size_t i = 0; i < b->len; i++) h = (h ^ b->data[i]) * 1099511628211ull;
    return h;
}

void sim_opts_default(struct sim_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->n_voters = 3;
    o->tick_units = 10;
    o->heartbeat_ticks = 1;
    o->election_min = 10;
    o->election_max = 20;
    o->net_min = 1;
    o->net_max = 8;
    o->disk_min = 1;
    o->disk_max = 6;
    o->max_inflight = 8;
    o->max_append_entries = 8;
    o->pre_vote = o->check_quorum = o->lease_reads = 1;
    o->seed = 1;
}

void sim_log(struct sim *s, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int k = snprintf(line, sizeof(line), "[t=%llu] ", (unsigned long long)s->now);
    vsnprintf(line + k, sizeof(line) - (size_t)k, fmt, ap);
    va_end(ap);
    size_t l = strlen(line);
    while (s->log_len + l + 2 > s->log_cap) {
        s->log_cap = s->log_cap ? s->log_cap * 2 : 4096;
        s->log = xrealloc(s->log, s->log_cap);
    }
    memcpy(s->log + s->log_len, line, l);
    s->log_len += l;
    s->log[s->log_len++] = '\n';
    s->log[s->log_len] = '\0';
    if (s->o.trace) fprintf(stderr, "%s\n", line);
}

int sim_failed(const struct sim *s)
{
    return s->failed;
}

void sim_print_schedule(const struct sim *s)
{
    fprintf(stderr, "\n=== seed %llu (replay with MR_TEST_SEED=%llu) at t=%llu ===\n%s",
            (unsigned long long)s->o.seed, (unsigned long long)s->o.seed,
            (unsigned long long)s->now, s->log ? s->log : "");
}

void sim_fail(struct sim *s, const char *fmt, ...)
{
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    s->failed = 1;
    fprintf(
        stderr,
        "\n=== SIM FAILURE (seed %llu, replay with MR_TEST_SEED=%llu) at t=%llu: %s\n",
        (unsigned long long)s->o.seed, (unsigned long long)s->o.seed,
        (unsigned long long)s->now, why);
    fprintf(stderr, "--- schedule ---\n%s--- end of schedule ---\n",
            s->log ? s->log : "");
    fail_msg("seed %llu: %s", (unsigned long long)s->o.seed, why);
}

static void tracer_cb(void *data, mr_node_id id, const char *line)
{
    struct sim *s = data;
    if (s->o.trace)
        fprintf(stderr, "  [t=%llu] %llu: %s\n", (unsigned long long)s->now,
                (unsigned long long)id, line);
    if (s->o.keep_traces) {
        GROW(s->traces, s->n_traces, s->cap_traces);
        s->trace_ids = xrealloc(s->trace_ids, s->cap_traces * sizeof(*s->trace_ids));
        s->traces[s->n_traces] = strdup(line);
        s->trace_ids[s->n_traces] = id;
        s->n_traces++;
    }
}

unsigned sim_trace_count(struct sim *s, mr_node_id id, const char *needle)
{
    unsigned c = 0;
    for (size_t i = 0; i < s->n_traces; i++)
        if ((id == 0 || s->trace_ids[i] == id) && strstr(s->traces[i], needle) != NULL)
            c++;
    return c;
}

unsigned long sim_sent(struct sim *s, mr_node_id from, int type)
{
    unsigned long c = 0;
    for (unsigned i = 1; i <= s->n; i++)
        if (from == 0 || from == i) c += s->sent[i][type];
    return c;
}

static struct sim_node *node(struct sim *s, mr_node_id id)
{
    MR_ASSERT(id >= 1 && id <= s->n);
    return &s->nodes[id - 1];
}

/* ---- checks -------------------------------------------------------------------- */

static struct entry_key *key_slot(struct sim *s, mr_index index, mr_term term)
{
    if (s->n_keys * 2 >= s->cap_keys) {
        size_t oc = s->cap_keys;
        struct entry_key *old = s->keys;
        s->cap_keys = oc ? oc * 2 : 1024;
        s->keys = calloc(s->cap_keys, sizeof(*s->keys));
        if (s->keys == NULL) abort();
        s->n_keys = 0;
        for (size_t i = 0; i < oc; i++)
            if (old[i].used) {
                struct entry_key *k = key_slot(s, old[i].index, old[i].term);
                *k = old[i];
                s->n_keys++;
            }
        free(old);
    }
    size_t h = (size_t)((index * 0x9E3779B97F4A7C15ull) ^ (term * 0xC2B2AE3D27D4EB4Full));
    for (size_t i = h & (s->cap_keys - 1);; i = (i + 1) & (s->cap_keys - 1)) {
        if (!s->keys[i].used || (s->keys[i].index == index && s->keys[i].term == term))
            return &s->keys[i];
    }
}

static mr_term mirror_term(struct sim_node *n, mr_index index)
{
    if (index == n->mirror_offset) return n->mirror_offset_term;
    if (index < n->mirror_offset || index > n->mirror_offset + n->n_terms) return 0;
    return n->terms[index - n->mirror_offset - 1];
}

/* Log Matching (5.3): an (index, term) pair names exactly one entry, and
 * entries that agree at an index agree on everything before it. Checked by
 * induction: same payload and same previous term at every append. */
static void check_append(struct sim *s, struct sim_node *n, const struct mr_raft_entry *e,
                         mr_term prev)
{
    uint64_t h = hash_bytes(e->data);
    struct entry_key *k = key_slot(s, e->index, e->term);
    if (!k->used) {
        k->used = 1;
        k->index = e->index;
        k->term = e->term;
        k->prev_term = prev;
        k->data_hash = h;
        k->type = e->type;
        s->n_keys++;
        return;
    }
    if (k->data_hash != h || k->type != e->type)
        sim_fail(s, "log matching: node %llu entry %llu/%llu differs from another node's",
                 (unsigned long long)n->id, (unsigned long long)e->index,
                 (unsigned long long)e->term);
    if (k->prev_term != prev && prev != 0 && k->prev_term != 0)
        sim_fail(
            s,
            "log matching: node %llu entry %llu/%llu follows term %llu, elsewhere %llu",
            (unsigned long long)n->id, (unsigned long long)e->index,
            (unsigned long long)e->term, (unsigned long long)prev,
            (unsigned long long)k->prev_term);
}

static void mirror_append(struct sim *s, struct sim_node *n,
                          const struct mr_raft_entry *ents, size_t cnt)
{
    if (cnt == 0) return;
    mr_index first = ents[0].index;
    if (first <= n->mirror_offset)
        sim_fail(s, "node %llu asked to write entry %llu below its snapshot %llu",
                 (unsigned long long)n->id, (unsigned long long)first,
                 (unsigned long long)n->mirror_offset);
    if (first > n->mirror_offset + n->n_terms + 1)
        sim_fail(s, "node %llu: gap in entries (%llu after %llu)",
                 (unsigned long long)n->id, (unsigned long long)first,
                 (unsigned long long)(n->mirror_offset + n->n_terms));
    n->n_terms = (size_t)(first - n->mirror_offset - 1);
    for (size_t i = 0; i < cnt; i++) {
        if (ents[i].index != first + i) sim_fail(s, "entries not contiguous");
        GROW(n->terms, n->n_terms, n->cap_terms);
        n->terms[n->n_terms++] = ents[i].term;
    }
}

static void mirror_reset(struct sim_node *n, mr_index index, mr_term term)
{
    n->mirror_offset = index;
    n->mirror_offset_term = term;
    n->n_terms = 0;
}

/* State Machine Safety (5.4.3) */
static void check_apply(struct sim *s, struct sim_node *n, const struct mr_raft_entry *e)
{
    while (e->index >= s->cap_applied) {
        size_t oc = s->cap_applied;
        s->cap_applied = oc ? oc * 2 : 1024;
        s->applied = xrealloc(s->applied, s->cap_applied * sizeof(*s->applied));
        memset(s->applied + oc, 0, (s->cap_applied - oc) * sizeof(*s->applied));
    }
    struct applied_rec *a = &s->applied[e->index];
    uint64_t h = hash_bytes(e->data);
    if (a->term == 0) {
        a->term = e->term;
        a->data_hash = h;
    } else if (a->term != e->term || a->data_hash != h) {
        sim_fail(s,
                 "state machine safety: node %llu applied %llu/%llu, another applied "
                 "%llu/%llu",
                 (unsigned long long)n->id, (unsigned long long)e->index,
                 (unsigned long long)e->term, (unsigned long long)e->index,
                 (unsigned long long)a->term);
    }
    if (e->index > s->max_applied) s->max_applied = e->index;
}

/* Election Safety (5.2) and Leader Completeness (5.4) */
/* Last (index, term) of a node's durable log. */
static void durable_last(const struct sim_node *n, mr_index *index, mr_term *term)
{
    const struct disk *d = &n->disk;
    if (d->n_wal > 0 && d->wal[d->n_wal - 1].index > d->snap_index) {
        *index = d->wal[d->n_wal - 1].index;
        *term = d->wal[d->n_wal - 1].term;
    } else {
        *index = d->snap_index;
        *term = d->snap_term;
    }
}

/* Does node c hold entry (index, term)? Its in-memory log if it runs. */
static int holds(const struct sim_node *c, mr_index index, mr_term term)
{
    if (c->alive) {
        if (index <= c->raft.log.offset) return 1; /* compacted: was committed there */
        return mr_raft_term_at(&c->raft, index) == term;
    }
    const struct disk *d = &c->disk;
    if (index <= d->snap_index) return 1;
    if (d->n_wal == 0 || index > d->wal[d->n_wal - 1].index) return 0;
    return d->wal[index - d->wal_base - 1].term == term;
}

/* Commit safety, checked the moment a leader commits (index, term): no voter
 * lacking the entry could win an election, even if every voter crashed back
 * to its durable log. This is the inductive reason behind Leader Completeness;
 * it turns a Figure 8 bug into an immediate failure instead of one that needs
 * a further election to show. Checked within the leader's configuration. */
static void check_commit_safe(struct sim *s, struct sim_node *l, mr_index index,
                              mr_term term)
{
    const struct mr_raft_config *cfg = &l->raft.config;
    unsigned voters = mr_raft_config_voters(cfg);
    for (unsigned ci = 0; ci < cfg->n; ci++) {
        if (cfg->servers[ci].role != MR_RAFT_VOTER || cfg->servers[ci].id > s->n)
            continue;
        struct sim_node *c = node(s, cfg->servers[ci].id);
        if (holds(c, index, term)) continue;
        mr_index cl;
        mr_term ct;
        if (c->alive) {
            cl = c->raft.log.offset + c->raft.log.n;
            ct = mr_raft_term_at(&c->raft, cl);
        } else {
            durable_last(c, &cl, &ct);
        }
        unsigned willing = 0;
        for (unsigned vi = 0; vi < cfg->n; vi++) {
            if (cfg->servers[vi].role != MR_RAFT_VOTER || cfg->servers[vi].id > s->n)
                continue;
            struct sim_node *v = node(s, cfg->servers[vi].id);
            mr_index vl;
            mr_term vt;
            durable_last(v, &vl, &vt);
            if (v == c || ct > vt || (ct == vt && cl >= vl)) willing++;
        }
        if (willing >= voters / 2 + 1)
            sim_fail(
                s,
                "commit safety: leader %llu committed %llu/%llu but node %llu lacks it "
                "and could win the votes of %u of %u voters",
                (unsigned long long)l->id, (unsigned long long)index,
                (unsigned long long)term, (unsigned long long)c->id, willing, voters);
    }
}

static void check_leader(struct sim *s, struct sim_node *n)
{
    struct mr_raft *r = &n->raft;
    if (r->state != MR_RAFT_LEADER) return;
    /* A leader whose term is not durable yet (a single voter that elected
     * itself) sends nothing and commits nothing until it is; if it crashes
     * first it never led as far as the protocol is concerned. */
    if (n->disk.term < r->term) return;
    while (r->term >= s->cap_leaders) {
        size_t oc = s->cap_leaders;
        s->cap_leaders = oc ? oc * 2 : 64;
        s->leaders = xrealloc(s->leaders, s->cap_leaders * sizeof(*s->leaders));
        memset(s->leaders + oc, 0, (s->cap_leaders - oc) * sizeof(*s->leaders));
    }
    if (s->leaders[r->term] == 0) {
        s->leaders[r->term] = n->id;
        sim_stats.leaders++;
        sim_log(s, "node %llu is leader of term %llu", (unsigned long long)n->id,
                (unsigned long long)r->term);
        if (s->o.isolate_new_leader_permille &&
            mr_rand_below(&s->rand, 1000) < s->o.isolate_new_leader_permille) {
            /* its no-op stays local: the Figure 8 pattern needs such leaders */
            n->group = 100 + (unsigned)n->id; /* alone, others stay as they are */
            sim_log(s, "isolate new leader %llu", (unsigned long long)n->id);
        }
    } else if (s->leaders[r->term] != n->id) {
        sim_fail(s, "election safety: nodes %llu and %llu both leaders of term %llu",
                 (unsigned long long)s->leaders[r->term], (unsigned long long)n->id,
                 (unsigned long long)r->term);
    }
    if (n->last_leader_term_checked == r->term) return;
    n->last_leader_term_checked = r->term;
    for (mr_index i = n->mirror_offset + 1; i <= s->max_applied && i < s->cap_applied;
         i++) {
        if (s->applied[i].term == 0) continue;
        if (mirror_term(n, i) != s->applied[i].term)
            sim_fail(
                s,
                "leader completeness: leader %llu of term %llu lacks committed %llu/%llu",
                (unsigned long long)n->id, (unsigned long long)r->term,
                (unsigned long long)i, (unsigned long long)s->applied[i].term);
    }
}

/* ---- network ---------------------------------------------------------------------- */

static void msg_dup(struct mr_raft_msg *dst, const struct mr_raft_msg *src)
{
    *dst = *src;
    if (src->n_entries > 0) {
        dst->entries = mr_malloc(src->n_entries * sizeof(*dst->entries));
        if (dst->entries == NULL) abort();
        for (uint32_t i = 0; i < src->n_entries; i++) {
            dst->entries[i] = src->entries[i];
            mr_rcbuf_ref(dst->entries[i].data);
        }
    }
    mr_rcbuf_ref(dst->snap_config);
    mr_rcbuf_ref(dst->snap_chunk);
}

static uint64_t rnd(struct sim *s, uint64_t lo, uint64_t hi)
{
    if (hi <= lo) return lo;
    return lo + mr_rand_below(&s->rand, hi - lo + 1);
}

/* Queues copies of *m (0, 1 or 2 of them: loss and duplication) and
 * releases *m. Delivery is not before `not_before`. Returns the delivery time
 * of the last copy queued (or not_before). */
static uint64_t net_queue(struct sim *s, struct sim_node *from, struct mr_raft_msg *m,
                          uint64_t not_before)
{
    uint64_t last = not_before;
    int copies = 1;
    if (s->o.drop_permille && mr_rand_below(&s->rand, 1000) < s->o.drop_permille)
        copies = 0;
    else if (s->o.dup_permille && mr_rand_below(&s->rand, 1000) < s->o.dup_permille)
        copies = 2;
    for (int c = 0; c < copies; c++) {
        GROW(s->net, s->n_net, s->cap_net);
        struct net_msg *nm = &s->net[s->n_net++];
        if (c + 1 == copies) {
            nm->m = *m;
            memset(m, 0, sizeof(*m));
        } else {
            msg_dup(&nm->m, m);
        }
        nm->at = s->now + rnd(s, s->o.net_min, s->o.net_max);
        if (s->o.slow_permille && mr_rand_below(&s->rand, 1000) < s->o.slow_permille)
            nm->at = s->now + rnd(s, s->o.net_max, s->o.slow_max);
        if (nm->at < not_before) nm->at = not_before;
        last = nm->at;
        nm->seq = s->net_seq++;
        nm->snap_hash = nm->m.type == MR_RAFT_MSG_SNAPSHOT ? from->mem_snap_hash : 0;
    }
    mr_raft_msg_release(m);
    return last;
}

/* Takes ownership of *m (zeroes it). A SNAPSHOT is streamed by the host in
 * 1-3 chunks (snap_offset = chunk number, snap_last on the final one); the
 * receiving host steps its core once the whole file is there. */
static void net_send(struct sim *s, struct sim_node *from, struct mr_raft_msg *m)
{
    if (m->type <= MR_RAFT_MSG_TYPE_MAX) s->sent[from->id][m->type]++;
    if (m->to < 1 || m->to > s->n) {
        mr_raft_msg_release(m);
        return;
    }
    if (m->type != MR_RAFT_MSG_SNAPSHOT) {
        net_queue(s, from, m, 0);
        return;
    }
    sim_stats.snapshots_sent++;
    if (from->mem_snap_index != m->snap_index)
        sim_fail(s, "node %llu sends snapshot %llu but holds %llu",
                 (unsigned long long)from->id, (unsigned long long)m->snap_index,
                 (unsigned long long)from->mem_snap_index);
    unsigned chunks = 1 + (unsigned)mr_rand_below(&s->rand, 3);
    uint64_t at = 0;
    for (unsigned k = 0; k < chunks; k++) {
        struct mr_raft_msg c;
        msg_dup(&c, m);
        c.snap_offset = k;
        c.snap_last = k + 1 == chunks;
        c.snap_chunk = mr_rcbuf_copy("chunkdata", 9);
        at = net_queue(s, from, &c, at); /* a stream: in order */
    }
    mr_raft_msg_release(m);
}

void sim_flush_network(struct sim *s)
{
    for (size_t i = 0; i < s->n_net; i++) mr_raft_msg_release(&s->net[i].m);
    s->n_net = 0;
}

/* ---- host: ready processing ---------------------------------------------------------
 */

static void step_node(struct sim *s, struct sim_node *n, struct mr_raft_event *ev,
                      int *rv);

static void disk_truncate(struct disk *d, mr_index from)
{
    while (d->n_wal > 0 && d->wal[d->n_wal - 1].index >= from) {
        mr_rcbuf_unref(d->wal[d->n_wal - 1].data);
        d->n_wal--;
    }
}

static void disk_compact(struct disk *d, mr_index upto)
{
    size_t k = 0;
    while (k < d->n_wal && d->wal[k].index <= upto) mr_rcbuf_unref(d->wal[k++].data);
    if (k == 0) return;
    memmove(d->wal, d->wal + k, (d->n_wal - k) * sizeof(*d->wal));
    d->n_wal -= k;
}

/* Compacts the WAL as far as the core compacted its log (no further: the
 * entries the core keeps may be evicted and read back from here). */
static void disk_compact_to(struct disk *d, mr_index upto)
{
    if (upto <= d->wal_base) return;
    disk_compact(d, upto);
    d->wal_base = upto;
}

static void write_release(struct write *w)
{
    for (size_t i = 0; i < w->n_entries; i++) mr_rcbuf_unref(w->entries[i].data);
    mr_free(w->entries);
    for (size_t i = 0; i < w->n_msgs; i++) mr_raft_msg_release(&w->msgs[i]);
    mr_free(w->msgs);
    mr_rcbuf_unref(w->snap_config);
    memset(w, 0, sizeof(*w));
}

static void complete_write(struct sim *s, struct sim_node *n, struct write *w)
{
    struct disk *d = &n->disk;
    if (w->has_snap) {
        for (size_t i = 0; i < d->n_wal; i++) mr_rcbuf_unref(d->wal[i].data);
        d->n_wal = 0;
        d->wal_base = w->snap_index;
        d->snap_index = w->snap_index;
        d->snap_term = w->snap_term;
        mr_rcbuf_unref(d->snap_config);
        d->snap_config = mr_rcbuf_ref(w->snap_config);
        d->snap_hash = w->snap_hash;
    }
    if (w->n_entries > 0) {
        if (d->n_wal > 0 && d->wal[d->n_wal - 1].index >= w->entries[0].index)
            sim_stats.truncations++;
        disk_truncate(d, w->entries[0].index);
        for (size_t i = 0; i < w->n_entries; i++) {
            if (w->entries[i].index <= d->wal_base) continue;
            mr_index want = d->wal_base + d->n_wal + 1;
            if (w->entries[i].index != want)
                sim_fail(s, "node %llu: WAL gap: writing %llu, expected %llu",
                         (unsigned long long)n->id,
                         (unsigned long long)w->entries[i].index,
                         (unsigned long long)want);
            /* Log Matching over durable logs: what a crash can lose never
             * existed as far as the protocol is concerned */
            mr_term prev = d->n_wal > 0                   ? d->wal[d->n_wal - 1].term
                           : d->wal_base == d->snap_index ? d->snap_term
                                                          : 0; /* unknown */
            check_append(s, n, &w->entries[i], prev);
            GROW(d->wal, d->n_wal, d->cap_wal);
            d->wal[d->n_wal] = w->entries[i];
            mr_rcbuf_ref(d->wal[d->n_wal].data);
            d->n_wal++;
        }
    }
    if (w->has_hs) {
        d->term = w->term;
        d->vote = w->vote;
    }
    for (size_t i = 0; i < w->n_msgs; i++) net_send(s, n, &w->msgs[i]);
    int rv;
    if (w->has_snap) {
        /* the state machine is replaced and the snapshot durable with the
         * WAL reset: the core may now drop its log and acknowledge */
        mirror_reset(n, w->snap_index, w->snap_term);
        struct mr_raft_event ev = {.type = MR_RAFT_EVENT_SNAPSHOT_INSTALLED,
                                   .index = w->snap_index,
                                   .term = w->snap_term};
        step_node(s, n, &ev, &rv);
        if (rv != 0)
            sim_fail(s, "node %llu: SNAPSHOT_INSTALLED %llu: %s",
                     (unsigned long long)n->id, (unsigned long long)w->snap_index,
                     mr_err_name(rv));
    }
    if (w->n_entries > 0 && n->alive) {
        struct mr_raft_event ev = {.type = MR_RAFT_EVENT_PERSISTED,
                                   .index = w->entries[w->n_entries - 1].index,
                                   .term = w->entries[w->n_entries - 1].term};
        step_node(s, n, &ev, &rv);
    }
}

static void apply_entry(struct sim *s, struct sim_node *n, const struct mr_raft_entry *e)
{
    if (e->evicted)
        sim_fail(s, "node %llu is handed evicted entry %llu to apply",
                 (unsigned long long)n->id, (unsigned long long)e->index);
    if (e->index != n->applied + 1)
        sim_fail(s, "node %llu applies %llu after %llu", (unsigned long long)n->id,
                 (unsigned long long)e->index, (unsigned long long)n->applied);
    check_apply(s, n, e);
    sim_stats.applied++;
    n->applied = e->index;
    n->applied_term = e->term;
    n->hash = (n->hash ^ hash_bytes(e->data) ^ e->index) * 1099511628211ull;
    if (e->type == MR_RAFT_ENTRY_CONFIG) {
        mr_rcbuf_unref(n->sm_config);
        n->sm_config = mr_rcbuf_ref(e->data);
    }
}

static void maybe_snapshot(struct sim *s, struct sim_node *n)
{
    if (s->o.snap_every == 0 || !n->alive) return;
    if (n->raft.install_pending) return; /* the core has not caught up with us yet */
    if (n->applied < n->disk.snap_index + s->o.snap_every) return;
    /* a snapshot is written durably at once (a simplification of the host) */
    struct disk *d = &n->disk;
    d->snap_index = n->applied;
    d->snap_term = n->applied_term;
    mr_rcbuf_unref(d->snap_config);
    d->snap_config = mr_rcbuf_ref(n->sm_config);
    d->snap_hash = n->hash;
    n->mem_snap_index = d->snap_index;
    n->mem_snap_hash = d->snap_hash;
    struct mr_raft_event ev = {.type = MR_RAFT_EVENT_SNAPSHOT_TAKEN,
                               .index = n->applied,
                               .term = n->applied_term};
    int rv;
    step_node(s, n, &ev, &rv);
    if (rv != 0)
        sim_fail(s, "node %llu: SNAPSHOT_TAKEN %llu failed: %s",
                 (unsigned long long)n->id, (unsigned long long)ev.index,
                 mr_err_name(rv));
    if (n->alive) disk_compact_to(d, n->raft.log.offset);
}

/* The host's half of the bounded log (raft.h, struct mr_raft_entry): an
 * APPEND's evicted entries are read back from the durable WAL before it
 * leaves. Eviction covers only entries the WAL holds: anything else fails. */
static void fill_evicted(struct sim *s, struct sim_node *n, struct mr_raft_msg *m)
{
    if (m->type != MR_RAFT_MSG_APPEND) return;
    const struct disk *d = &n->disk;
    for (uint32_t i = 0; i < m->n_entries; i++) {
        struct mr_raft_entry *e = &m->entries[i];
        if (!e->evicted) continue;
        if (!s->o.evict)
            sim_fail(s, "node %llu evicted without being asked",
                     (unsigned long long)n->id);
        const struct mr_raft_entry *w = NULL;
        if (e->index > d->wal_base && e->index <= d->wal_base + d->n_wal)
            w = &d->wal[e->index - d->wal_base - 1];
        if (w == NULL || w->term != e->term || w->type != e->type || e->data != NULL ||
            (w->data ? w->data->len : 0) != e->evicted_len)
            sim_fail(s,
                     "node %llu sends evicted entry %llu/%llu (%u bytes) that its "
                     "durable WAL (%llu..%llu) does not hold",
                     (unsigned long long)n->id, (unsigned long long)e->index,
                     (unsigned long long)e->term, (unsigned)e->evicted_len,
                     (unsigned long long)(d->wal_base + 1),
                     (unsigned long long)(d->wal_base + d->n_wal));
        e->data = mr_rcbuf_ref(w->data);
        e->evicted = 0;
        sim_stats.evicted_filled++;
    }
}

/* After every ready: drop payloads down to the budget, then check the
 * core's books (resident bytes) and that every evicted entry is one the
 * durable WAL holds, so a wrong eviction fails at once, not only when a
 * lagging follower happens to need the entry. */
static void evict(struct sim *s, struct sim_node *n)
{
    if (!s->o.evict || !n->alive) return;
    struct mr_raft *r = &n->raft;
    sim_stats.evicted_bytes += mr_raft_log_evict(r, s->o.evict_max_bytes, (mr_index)-1);
    size_t resident = 0;
    const struct disk *d = &n->disk;
    for (mr_index i = r->log.offset + 1; i <= r->log.offset + r->log.n; i++) {
        const struct mr_raft_entry *e = mr_raft_entry_at(r, i);
        if (!e->evicted) {
            resident += e->data ? e->data->len : 0;
            continue;
        }
        const struct mr_raft_entry *w = i > d->wal_base && i <= d->wal_base + d->n_wal
                                            ? &d->wal[i - d->wal_base - 1]
                                            : NULL;
        if (e->data != NULL || e->type == MR_RAFT_ENTRY_CONFIG || i > n->applied ||
            w == NULL || w->term != e->term)
            sim_fail(s,
                     "node %llu evicted entry %llu/%llu (type %u) but applied %llu and "
                     "its durable WAL holds %llu..%llu",
                     (unsigned long long)n->id, (unsigned long long)i,
                     (unsigned long long)e->term, (unsigned)e->type,
                     (unsigned long long)n->applied,
                     (unsigned long long)(d->wal_base + 1),
                     (unsigned long long)(d->wal_base + d->n_wal));
    }
    if (resident != mr_raft_log_resident_bytes(r))
        sim_fail(s, "node %llu: resident bytes %zu, the log holds %zu",
                 (unsigned long long)n->id, mr_raft_log_resident_bytes(r), resident);
}

static void handle_ready(struct sim *s, struct sim_node *n, struct mr_raft_ready *rd)
{
    check_leader(s, n);
    if (rd->flags & MR_RAFT_READY_SOFT_STATE)
        sim_log(s, "node %llu: %s, leader %llu, term %llu", (unsigned long long)n->id,
                mr_raft_state_name(rd->state), (unsigned long long)rd->leader,
                (unsigned long long)n->raft.term);
    struct write w;
    memset(&w, 0, sizeof(w));
    int need_write = 0;
    mr_index failed_index = 0;
    mr_term failed_term = 0;
    int fail_install = 0;
    if ((rd->flags & MR_RAFT_READY_SNAPSHOT) &&
        (n->fail_installs > 0 ||
         (s->o.fail_install_permille &&
          mr_rand_below(&s->rand, 1000) < s->o.fail_install_permille))) {
        /* the host cannot install it (no memory, a read error, the restore
         * script failed): its state machine stays as it was */
        if (n->fail_installs > 0) n->fail_installs--;
        fail_install = 1;
        failed_index = rd->snap_index;
        failed_term = rd->snap_term;
        sim_stats.snapshots_failed++;
        sim_log(s, "node %llu fails to install snapshot %llu/%llu",
                (unsigned long long)n->id, (unsigned long long)failed_index,
                (unsigned long long)failed_term);
    } else if (rd->flags & MR_RAFT_READY_SNAPSHOT) {
        /* the state machine restores at once from the bytes that arrived;
         * the core learns it is installed once the write is durable */
        n->applied = rd->snap_index;
        n->applied_term = rd->snap_term;
        n->hash = n->incoming_snap_hash;
        mr_rcbuf_unref(n->sm_config);
        n->sm_config = mr_rcbuf_ref(rd->snap_config);
        if (s->applied != NULL && rd->snap_index < s->cap_applied &&
            s->applied[rd->snap_index].term != 0 &&
            s->applied[rd->snap_index].term != rd->snap_term)
            sim_fail(s, "node %llu installs snapshot %llu/%llu but %llu/%llu was applied",
                     (unsigned long long)n->id, (unsigned long long)rd->snap_index,
                     (unsigned long long)rd->snap_term,
                     (unsigned long long)rd->snap_index,
                     (unsigned long long)s->applied[rd->snap_index].term);
        w.has_snap = 1;
        w.snap_index = rd->snap_index;
        w.snap_term = rd->snap_term;
        w.snap_config = mr_rcbuf_ref(rd->snap_config);
        w.snap_hash = n->incoming_snap_hash;
        n->mem_snap_index = rd->snap_index;
        n->mem_snap_hash = n->incoming_snap_hash;
        sim_stats.snapshots_installed++;
        need_write = 1;
    }
    if (rd->flags & MR_RAFT_READY_ENTRIES) {
        for (size_t i = 0; i < rd->n_entries; i++)
            if (rd->entries[i].evicted)
                sim_fail(s, "node %llu is handed evicted entry %llu to write",
                         (unsigned long long)n->id,
                         (unsigned long long)rd->entries[i].index);
        mirror_append(s, n, rd->entries, rd->n_entries);
        w.entries = rd->entries;
        w.n_entries = rd->n_entries;
        rd->entries = NULL;
        rd->n_entries = 0;
        need_write = 1;
    }
    if (rd->flags & MR_RAFT_READY_HARD_STATE) {
        w.has_hs = 1;
        w.term = rd->term;
        w.vote = rd->vote;
        need_write = 1;
    }
    /* evicted entries are on the durable disk now; a message that waits
     * for a write below is filled before a snapshot may compact them */
    for (size_t i = 0; i < rd->n_msgs; i++) fill_evicted(s, n, &rd->msgs[i]);
    for (size_t i = 0; i < rd->n_msgs_after; i++) fill_evicted(s, n, &rd->msgs_after[i]);
    for (size_t i = 0; i < rd->n_msgs; i++) net_send(s, n, &rd->msgs[i]);
    if (rd->n_msgs_after > 0) {
        if (need_write || n->n_writes > 0) {
            w.msgs = rd->msgs_after;
            w.n_msgs = rd->n_msgs_after;
            rd->msgs_after = NULL;
            rd->n_msgs_after = 0;
            need_write = 1;
        } else {
            for (size_t i = 0; i < rd->n_msgs_after; i++)
                net_send(s, n, &rd->msgs_after[i]);
        }
    }
    if (need_write) {
        uint64_t at = s->now + rnd(s, s->o.disk_min, s->o.disk_max);
        if (n->n_writes > 0 && n->writes[n->n_writes - 1].done_at > at)
            at = n->writes[n->n_writes - 1].done_at;
        w.done_at = at;
        GROW(n->writes, n->n_writes, n->cap_writes);
        n->writes[n->n_writes++] = w;
    }
    for (size_t i = 0; i < rd->n_committed; i++) apply_entry(s, n, &rd->committed[i]);
    if (rd->n_committed > 0 && n->raft.state == MR_RAFT_LEADER) {
        const struct mr_raft_entry *e = &rd->committed[rd->n_committed - 1];
        check_commit_safe(s, n, e->index, e->term);
    }
    for (size_t i = 0; i < rd->n_reads; i++) {
        const struct mr_raft_read_state *st = &rd->reads[i];
        if (st->ctx >= s->n_reads)
            sim_fail(s, "unknown read ctx %llu", (unsigned long long)st->ctx);
        struct read_rec *rr = &s->reads[st->ctx];
        if (rr->node != n->id) sim_fail(s, "read ctx answered on the wrong node");
        /* a duplicated READ_INDEX message may be answered twice: a host
         * ignores contexts it no longer waits for (but each answer must
         * still be safe) */
        if (st->status != 0) {
            if (rr->status == 0) sim_stats.reads_failed++;
            if (rr->status == 0) rr->status = -1;
            continue;
        }
        if (rr->status == 0) {
            sim_stats.reads_ok++;
            rr->status = 1;
            rr->index = st->index;
        }
        /* linearizability: every entry applied anywhere before the read began
         * may have been acknowledged to a client; the read must see it */
        if (st->index < rr->floor)
            sim_fail(
                s, "stale read: node %llu read %llu at index %llu < %llu applied before",
                (unsigned long long)n->id, (unsigned long long)st->ctx,
                (unsigned long long)st->index, (unsigned long long)rr->floor);
    }
    mr_raft_ready_release(rd);
    maybe_snapshot(s, n);
    if (fail_install && n->alive) {
        struct mr_raft_event ev = {.type = MR_RAFT_EVENT_SNAPSHOT_FAILED,
                                   .index = failed_index,
                                   .term = failed_term};
        int rv;
        step_node(s, n, &ev, &rv);
    }
    evict(s, n);
}

static void step_node(struct sim *s, struct sim_node *n, struct mr_raft_event *ev,
                      int *rv)
{
    struct mr_raft_ready rd;
    *rv = 0;
    if (!n->alive) {
        *rv = MR_EUNAVAIL;
        return;
    }
    *rv = mr_raft_step(&n->raft, ev, &rd);
    handle_ready(s, n, &rd);
}

int sim_step(struct sim *s, mr_node_id id, struct mr_raft_event *ev)
{
    int rv;
    step_node(s, node(s, id), ev, &rv);
    return rv;
}

/* ---- lifecycle -----------------------------------------------------------------------
 */

static void node_start(struct sim *s, struct sim_node *n)
{
    struct mr_raft_options o;
    mr_raft_options_default(&o, n->id);
    o.election_min_ticks = s->o.election_min;
    o.election_max_ticks = s->o.election_max;
    o.heartbeat_ticks = s->o.heartbeat_ticks;
    o.max_inflight = s->o.max_inflight;
    o.max_append_entries = s->o.max_append_entries;
    o.max_apply_bytes = s->o.max_apply_bytes;
    o.snapshot_trailing = s->o.trailing;
    o.pre_vote = (uint8_t)s->o.pre_vote;
    o.check_quorum = (uint8_t)s->o.check_quorum;
    o.lease_reads = (uint8_t)s->o.lease_reads;
    o.seed = mr_rand_next(&s->rand);
    if (s->o.trace || s->o.keep_traces) {
        o.tracer.data = s;
        o.tracer.emit_cb = tracer_cb;
    }
    int rv = mr_raft_init(&n->raft, &o);
    if (rv != 0) sim_fail(s, "init: %s", mr_err_name(rv));
    struct disk *d = &n->disk;
    if (d->wal_base + d->n_wal < d->snap_index) {
        /* a crash lost writes the snapshot covers: the WAL has a hole before
         * the snapshot, so it starts over after it */
        for (size_t i = 0; i < d->n_wal; i++) mr_rcbuf_unref(d->wal[i].data);
        d->n_wal = 0;
        d->wal_base = d->snap_index;
    }
    struct mr_raft_persisted p = {
        .term = d->term,
        .vote = d->vote,
        .snap_index = d->snap_index,
        .snap_term = d->snap_term,
        .snap_config = d->snap_config,
    };
    /* the WAL's entries behind the snapshot are left out */
    size_t skip = 0;
    while (skip < d->n_wal && d->wal[skip].index <= d->snap_index) skip++;
    p.entries = d->wal + skip;
    p.n_entries = d->n_wal - skip;
    char err[MR_ERRMSG_SIZE];
    rv = mr_raft_load(&n->raft, &p, err);
    if (rv != 0) sim_fail(s, "load node %llu: %s", (unsigned long long)n->id, err);
    n->alive = 1;
    /* the state machine restarts from the snapshot */
    n->applied = d->snap_index;
    n->applied_term = d->snap_term;
    n->hash = d->snap_hash;
    n->mem_snap_index = d->snap_index;
    n->mem_snap_hash = d->snap_hash;
    mr_rcbuf_unref(n->sm_config);
    n->sm_config = mr_rcbuf_ref(d->snap_config);
    mirror_reset(n, d->snap_index, d->snap_term);
    n->last_leader_term_checked = 0;
    for (size_t i = skip; i < d->n_wal; i++) {
        GROW(n->terms, n->n_terms, n->cap_terms);
        n->terms[n->n_terms++] = d->wal[i].term;
    }
}

struct sim *sim_new(const struct sim_opts *o)
{
    struct sim *s = calloc(1, sizeof(*s));
    if (s == NULL) abort();
    s->o = *o;
    if (getenv("MR_TRACE") != NULL && atoi(getenv("MR_TRACE")) != 0) s->o.trace = 1;
    s->n = o->n_voters + o->n_spares;
    MR_ASSERT(s->n <= SIM_MAX_NODES);
    mr_rand_seed(&s->rand, o->seed);
    struct mr_raft_config cfg;
    mr_raft_config_init(&cfg);
    for (unsigned i = 1; i <= o->n_voters; i++) {
        char ctx[64];
        snprintf(ctx, sizeof(ctx), "raft=127.0.0.1:%u", 7000 + i);
        mr_raft_config_add(&cfg, i, MR_RAFT_VOTER, ctx);
    }
    for (unsigned i = 0; i < s->n; i++) {
        struct sim_node *n = &s->nodes[i];
        n->id = i + 1;
        node_start(s, n);
        if (n->id <= o->n_voters) {
            int rv = mr_raft_bootstrap(&n->raft, &cfg);
            if (rv != 0) sim_fail(s, "bootstrap: %s", mr_err_name(rv));
            struct mr_raft_event ev = {.type = MR_RAFT_EVENT_NONE};
            step_node(s, n, &ev, &rv);
        }
    }
    mr_raft_config_close(&cfg);
    sim_log(s, "start: %u voters, %u spares, seed %llu", o->n_voters, o->n_spares,
            (unsigned long long)o->seed);
    return s;
}

static void node_stop(struct sim_node *n)
{
    if (!n->alive) return;
    mr_raft_close(&n->raft);
    for (size_t i = 0; i < n->n_writes; i++) write_release(&n->writes[i]);
    n->n_writes = 0;
    n->alive = 0;
}

void sim_free(struct sim *s)
{
    for (unsigned i = 0; i < s->n; i++) {
        struct sim_node *n = &s->nodes[i];
        node_stop(n);
        free(n->writes);
        free(n->terms);
        for (size_t k = 0; k < n->disk.n_wal; k++) mr_rcbuf_unref(n->disk.wal[k].data);
        free(n->disk.wal);
        mr_rcbuf_unref(n->disk.snap_config);
        mr_rcbuf_unref(n->sm_config);
    }
    sim_flush_network(s);
    free(s->net);
    free(s->leaders);
    free(s->keys);
    free(s->applied);
    free(s->reads);
    free(s->log);
    for (size_t i = 0; i < s->n_traces; i++) free(s->traces[i]);
    free(s->traces);
    free(s->trace_ids);
    free(s);
}

void sim_crash(struct sim *s, mr_node_id id)
{
    struct sim_node *n = node(s, id);
    if (!n->alive) return;
    sim_log(s, "crash node %llu (%zu writes lost)", (unsigned long long)id, n->n_writes);
    sim_stats.crashes++;
    node_stop(n);
}

void sim_restart(struct sim *s, mr_node_id id)
{
    struct sim_node *n = node(s, id);
    if (n->alive) return;
    sim_log(s, "restart node %llu (term %llu, snapshot %llu, wal %zu)",
            (unsigned long long)id, (unsigned long long)n->disk.term,
            (unsigned long long)n->disk.snap_index, n->disk.n_wal);
    node_start(s, n);
}

void sim_partition(struct sim *s, const unsigned *group)
{
    char buf[128];
    size_t k = 0;
    for (unsigned i = 0; i < s->n; i++) {
        s->nodes[i].group = group[i];
        k += (size_t)snprintf(buf + k, sizeof(buf) - k, "%u", group[i]);
    }
    sim_log(s, "partition %s", buf);
}

void sim_isolate(struct sim *s, mr_node_id id)
{
    unsigned g[SIM_MAX_NODES] = {0};
    g[id - 1] = 1;
    sim_partition(s, g);
}

void sim_heal(struct sim *s)
{
    for (unsigned i = 0; i < s->n; i++) s->nodes[i].group = 0;
    sim_log(s, "heal partitions");
}

void sim_set_loss(struct sim *s, unsigned drop, unsigned dup)
{
    s->o.drop_permille = drop;
    s->o.dup_permille = dup;

    sim_log(s, "loss drop=%u/1000 dup=%u/1000", drop, dup);
}

void sim_set_slow(struct sim *s, unsigned permille)
{
    s->o.slow_permille = permille;
}

void sim_set_disk(struct sim *s, unsigned min, unsigned max)
{
    s->o.disk_min = min;
    s->o.disk_max = max;
}

void sim_set_isolate_new_leader(struct sim *s, unsigned permille)
{
    s->o.isolate_new_leader_permille = permille;
}

void sim_set_clock(struct sim *s, mr_node_id id, unsigned tick_units)
{
    node(s, id)->tick_units = tick_units;
    sim_log(s, "node %llu ticks every %u units", (unsigned long long)id, tick_units);
}

void sim_fail_installs(struct sim *s, mr_node_id id, unsigned count)
{
    node(s, id)->fail_installs = count;
}

void sim_set_filter(struct sim *s, sim_filter_cb cb, void *arg)
{
    s->filter = cb;
    s->filter_arg = arg;
}

/* ---- time
 * ------------------------------------------------------------------------------ */

static void deliver_due(struct sim *s)
{
    for (;;) {
        size_t best = SIZE_MAX;
        for (size_t i = 0; i < s->n_net; i++) {
            if (s->net[i].at > s->now) continue;
            if (best == SIZE_MAX || s->net[i].at < s->net[best].at ||
                (s->net[i].at == s->net[best].at && s->net[i].seq < s->net[best].seq))
                best = i;
        }
        if (best == SIZE_MAX) return;
        struct net_msg nm = s->net[best];
        s->net[best] = s->net[--s->n_net];
        struct sim_node *from = node(s, nm.m.from), *to = node(s, nm.m.to);
        int drop = !to->alive || from->group != to->group ||
                   (s->filter != NULL && s->filter(s->filter_arg, &nm.m));
        if (!drop && nm.m.type == MR_RAFT_MSG_SNAPSHOT) {
            /* the receiving host reassembles the stream */
            if (nm.m.snap_offset == 0) {
                to->rx_from = nm.m.from;
                to->rx_index = nm.m.snap_index;
                to->rx_next = 1;
            } else if (to->rx_from == nm.m.from && to->rx_index == nm.m.snap_index &&
                       to->rx_next == nm.m.snap_offset) {
                to->rx_next++;
            } else {
                mr_raft_msg_release(&nm.m); /* a duplicate or a broken stream */
                continue;
            }
            if (!nm.m.snap_last) {
                mr_raft_msg_release(&nm.m);
                continue;
            }
            to->rx_from = 0;
            to->incoming_snap_hash = nm.snap_hash;
        }
        for (uint32_t i = 0; !drop && i < nm.m.n_entries; i++)
            if (nm.m.entries[i].evicted)
                sim_fail(s, "node %llu received evicted entry %llu from %llu",
                         (unsigned long long)to->id,
                         (unsigned long long)nm.m.entries[i].index,
                         (unsigned long long)nm.m.from);
        if (!drop) {
            struct mr_raft_event ev = {.type = MR_RAFT_EVENT_RECEIVE, .msg = &nm.m};
            int rv;
            step_node(s, to, &ev, &rv);
            if (rv == MR_EMALFORMED)
                sim_fail(s, "node %llu found a message from %llu malformed",
                         (unsigned long long)to->id, (unsigned long long)nm.m.from);
        } else if (nm.m.type == MR_RAFT_MSG_SNAPSHOT && from->alive) {
            /* the host's stream failed: tell the sender's core */
            struct mr_raft_event ev = {
                .type = MR_RAFT_EVENT_SNAPSHOT_DONE, .node = nm.m.to, .ok = 0};
            int rv;
            step_node(s, from, &ev, &rv);
        }
        mr_raft_msg_release(&nm.m);
    }
}

static void complete_due(struct sim *s)
{
    for (unsigned i = 0; i < s->n; i++) {
        struct sim_node *n = &s->nodes[i];
        while (n->alive && n->n_writes > 0 && n->writes[0].done_at <= s->now) {
            struct write w = n->writes[0];
            memmove(n->writes, n->writes + 1, (n->n_writes - 1) * sizeof(*n->writes));
            n->n_writes--;
            complete_write(s, n, &w);
            write_release(&w);
        }
    }
}

static void one_unit(struct sim *s)
{
    s->now++;
    deliver_due(s);
    complete_due(s);
    for (unsigned i = 0; i < s->n; i++) {
        struct sim_node *n = &s->nodes[i];
        if (!n->alive) continue;
        if (s->now % (n->tick_units ? n->tick_units : s->o.tick_units) != 0) continue;
        struct mr_raft_event ev = {.type = MR_RAFT_EVENT_TICK};
        int rv;
        step_node(s, n, &ev, &rv);
    }
}

uint64_t sim_now(const struct sim *s)
{
    return s->now;
}

void sim_run(struct sim *s, uint64_t units)
{
    for (uint64_t i = 0; i < units && !s->failed; i++) one_unit(s);
}

int sim_run_until(struct sim *s, int (*cond)(struct sim *, void *), void *arg,
                  uint64_t max)
{
    for (uint64_t i = 0; i <= max; i++) {
        if (cond(s, arg)) return 1;
        if (i < max) one_unit(s);
    }
    return 0;
}

/* ---- queries and host actions
 * ------------------------------------------------------------ */

unsigned sim_n(const struct sim *s)
{
    return s->n;
}
int sim_alive(const struct sim *s, mr_node_id id)
{
    return s->nodes[id - 1].alive;
}
struct mr_raft *sim_raft(struct sim *s, mr_node_id id)
{
    struct sim_node *n = node(s, id);
    return n->alive ? &n->raft : NULL;
}
int sim_state(struct sim *s, mr_node_id id)
{
    struct sim_node *n = node(s, id);
    return n->alive ? n->raft.state : 0;
}
mr_term sim_term(struct sim *s, mr_node_id id)
{
    struct sim_node *n = node(s, id);
    return n->alive ? n->raft.term : n->disk.term;
}
mr_index sim_applied(struct sim *s, mr_node_id id)
{
    return node(s, id)->applied;
}
mr_index sim_commit(struct sim *s, mr_node_id id)
{
    struct sim_node *n = node(s, id);
    return n->alive ? n->raft.commit : 0;
}
uint64_t sim_hash(struct sim *s, mr_node_id id)
{
    return node(s, id)->hash;
}

mr_node_id sim_leader(struct sim *s)
{
    mr_node_id best = 0;
    mr_term t = 0;
    for (unsigned i = 0; i < s->n; i++) {
        struct sim_node *n = &s->nodes[i];
        if (n->alive && n->raft.state == MR_RAFT_LEADER && n->raft.term >= t) {
            best = n->id;
            t = n->raft.term;
        }
    }
    return best;
}

static int has_leader(struct sim *s, void *arg)
{
    (void)arg;
    return sim_leader(s) != 0;
}

mr_node_id sim_wait_leader(struct sim *s, uint64_t max)
{
    sim_run_until(s, has_leader, NULL, max);
    return sim_leader(s);
}

mr_term sim_max_term(struct sim *s)
{
    mr_term t = 0;
    for (unsigned i = 0; i < s->n; i++) {
        mr_term x = sim_term(s, i + 1);
        if (x > t) t = x;
    }
    return t;
}

int sim_propose(struct sim *s, mr_node_id id, const char *data, mr_index *index,
                mr_term *term)
{
    struct mr_rcbuf *b = mr_rcbuf_copy(data, strlen(data));
    struct mr_raft_event ev = {.type = MR_RAFT_EVENT_PROPOSE,
                               .data = b,
                               .is_deferred = (uint8_t)(s->o.defer_proposals != 0)};
    int rv = sim_step(s, id, &ev);
    mr_rcbuf_unref(b);
    if (index) *index = ev.out_index;
    if (term) *term = ev.out_term;
    if (rv == 0)
        sim_log(s, "propose '%s' at node %llu -> %llu/%llu", data, (unsigned long long)id,
                (unsigned long long)ev.out_index, (unsigned long long)ev.out_term);
    return rv;
}

int sim_flush(struct sim *s, mr_node_id id)
{
    struct mr_raft_event ev = {.type = MR_RAFT_EVENT_FLUSH};
    sim_log(s, "flush at node %llu", (unsigned long long)id);
    return sim_step(s, id, &ev);
}

int sim_read(struct sim *s, mr_node_id id, int lease, uint64_t *ctx)
{
    GROW(s->reads, s->n_reads, s->cap_reads);
    uint64_t c = s->n_reads++;
    s->reads[c].node = id;
    s->reads[c].floor = s->max_applied;
    s->reads[c].status = 0;
    s->reads[c].index = 0;
    struct mr_raft_event ev = {
        .type = MR_RAFT_EVENT_READ_INDEX, .ctx = c, .is_lease = (uint8_t)lease};
    int rv = sim_step(s, id, &ev);
    if (rv != 0) s->reads[c].status = -1;
    if (ctx) *ctx = c;
    sim_log(s, "read %llu at node %llu%s -> %s", (unsigned long long)c,
            (unsigned long long)id, lease ? " (lease)" : "", mr_err_name(rv));
    return rv;
}

int sim_read_result(struct sim *s, uint64_t ctx, mr_index *index)
{
    if (ctx >= s->n_reads) return -1;
    if (index) *index = s->reads[ctx].index;
    return s->reads[ctx].status;
}

int sim_change(struct sim *s, mr_node_id at, int change, mr_node_id id)
{
    char ctx[64];
    snprintf(ctx, sizeof(ctx), "raft=127.0.0.1:%llu", (unsigned long long)(7000 + id));
    struct mr_raft_event ev = {.type = MR_RAFT_EVENT_CHANGE_MEMBERS,
                               .change = (uint8_t)change,
                               .node = id,
                               .context = ctx};
    int rv = sim_step(s, at, &ev);
    if (rv == 0) sim_stats.changes_ok++;
    sim_log(s, "change %d of node %llu at %llu -> %s (index %llu)", change,
            (unsigned long long)id, (unsigned long long)at, mr_err_name(rv),
            (unsigned long long)ev.out_index);
    return rv;
}

int sim_transfer(struct sim *s, mr_node_id at, mr_node_id to)
{
    struct mr_raft_event ev = {.type = MR_RAFT_EVENT_TRANSFER_LEADER, .node = to};
    int rv = sim_step(s, at, &ev);
    if (rv == 0) sim_stats.transfers_ok++;
    sim_log(s, "transfer leadership %llu -> %llu: %s", (unsigned long long)at,
            (unsigned long long)to, mr_err_name(rv));
    return rv;
}

int sim_has_applied(struct sim *s, mr_node_id id, mr_index index, mr_term term)
{
    struct sim_node *n = node(s, id);
    if (n->applied < index) return 0;
    if (index >= s->cap_applied) return 0;
    return s->applied[index].term == term;
}
