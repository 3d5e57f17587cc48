/* Unit tests of one core driven by hand: the test plays both the host and
 * the other servers, message by message, so each rule is pinned exactly. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "raft/raft.h"

#define MAXM 512

struct h {
    struct mr_raft r;
    struct mr_raft_msg msgs[MAXM];
    int after[MAXM]; /* 1 = came out in msgs_after */
    unsigned n;
    int auto_persist;
    mr_index last_written;
    mr_term last_written_term;
    mr_index applied;
    struct mr_raft_read_state reads[64];
    unsigned n_reads;
    unsigned flags; /* union of ready flags since h_clear */
    mr_term hs_term;
    mr_node_id hs_vote;
    int has_snapshot;
    mr_index snap_index;
};

static int h_step(struct h *h, struct mr_raft_event *ev)
{
    struct mr_raft_ready rd;
    int rv = mr_raft_step(&h->r, ev, &rd);
    h->flags |= rd.flags;
    if (rd.flags & MR_RAFT_READY_HARD_STATE) {
        h->hs_term = rd.term;
        h->hs_vote = rd.vote;
    }
    if (rd.flags & MR_RAFT_READY_SNAPSHOT) {
        h->has_snapshot = 1;
        h->snap_index = rd.snap_index;
    }
    for (size_t i = 0; i < rd.n_msgs && h->n < MAXM; i++) {
        h->after[h->n] = 0;
        h->msgs[h->n++] = rd.msgs[i];
        memset(&rd.msgs[i], 0, sizeof(rd.msgs[i]));
    }
    for (size_t i = 0; i < rd.n_msgs_after && h->n < MAXM; i++) {
        h->after[h->n] = 1;
        h->msgs[h->n++] = rd.msgs_after[i];
        memset(&rd.msgs_after[i], 0, sizeof(rd.msgs_after[i]));
    }
    /* entries to write and to apply always carry their payloads */
    for (size_t i = 0; i < rd.n_entries; i++) assert_false(rd.entries[i].evicted);
    for (size_t i = 0; i < rd.n_committed; i++) assert_false(rd.committed[i].evicted);
    if (rd.n_entries > 0) {
        h->last_written = rd.entries[rd.n_entries - 1].index;
        h->last_written_term = rd.entries[rd.n_entries - 1].term;
    }
    for (size_t i = 0; i < rd.n_committed; i++) {
        assert_int_equal(rd.committed[i].index, h->applied + 1);
        h->applied = rd.committed[i].index;
    }
    for (size_t i = 0; i < rd.n_reads && h->n_reads < 64; i++)
        h->reads[h->n_reads++] = rd.reads[i];
    int persist = h->auto_persist && rd.n_entries > 0;
    mr_raft_ready_release(&rd);
    if (persist) {
        struct mr_raft_event p = {.type = MR_RAFT_EVENT_PERSISTED,
                                  .index = h->last_written,
                                  .term = h->last_written_term};
        h_step(h, &p);
    }
    return rv;
}

static void h_clear(struct h *h)
{
    for (unsigned i = 0; i < h->n; i++) mr_raft_msg_release(&h->msgs[i]);
    h->n = 0;
    h->n_reads = 0;
    h->flags = 0;
    h->has_snapshot = 0;
}

static int h_recv(struct h *h, struct mr_raft_msg m)
{
    m.to = h->r.id;
    struct mr_raft_event ev = {.type = MR_RAFT_EVENT_RECEIVE, .msg = &m};
    return h_step(h, &ev);
}

static void h_tick(struct h *h, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        struct mr_raft_event ev = {.type = MR_RAFT_EVENT_TICK};
        h_step(h, &ev);
    }
}

static int h_propose(struct h *h, const char *data, mr_index *idx)
{
    struct mr_rcbuf *b = mr_rcbuf_copy(data, strlen(data));
    struct mr_raft_event ev = {.type = MR_RAFT_EVENT_PROPOSE, .data = b};
    int rv = h_step(h, &ev);
    mr_rcbuf_unref(b);
    if (idx) *idx = ev.out_index;
    return rv;
}

static void h_persist(struct h *h)
{
    struct mr_raft_event p = {.type = MR_RAFT_EVENT_PERSISTED,
                              .index = h->last_written,
                              .term = h->last_written_term};
    h_step(h, &p);
}

static struct mr_raft_msg *h_find(struct h *h, int type, mr_node_id to)
{
    for (unsigned i = 0; i < h->n; i++)
        if (h->msgs[i].type == type && (to == 0 || h->msgs[i].to == to))
            return &h->msgs[i];
    return NULL;
}

static unsigned h_count(struct h *h, int type, mr_node_id to)
{
    unsigned c = 0;
    for (unsigned i = 0; i < h->n; i++)
        c += h->msgs[i].type == type && (to == 0 || h->msgs[i].to == to);
    return c;
}

static int h_after(struct h *h, const struct mr_raft_msg *m)
{
    return h->after[m - h->msgs];
}

static void h_init_opts(struct mr_raft_options *o, mr_node_id id)
{
    mr_raft_options_default(o, id);
    o->election_min_ticks = 10;
    o->election_max_ticks = 20;
    o->heartbeat_ticks = 1;
    o->max_inflight = 4;
    o->max_append_entries = 2;
}

/* Node 1 of a bootstrapped cluster {1..voters}. */
static struct h *h_new_opts(unsigned voters, const struct mr_raft_options *o)
{
    struct h *h = test_calloc(1, sizeof(*h));
    assert_int_equal(mr_raft_init(&h->r, o), 0);
    struct mr_raft_config c;
    mr_raft_config_init(&c);
    for (unsigned i = 1; i <= voters; i++)
        assert_int_equal(mr_raft_config_add(&c, i, MR_RAFT_VOTER, "addr"), 0);
    assert_int_equal(mr_raft_bootstrap(&h->r, &c), 0);
    mr_raft_config_close(&c);
    h->auto_persist = 1;
    struct mr_raft_event ev = {.type = MR_RAFT_EVENT_NONE};
    h_step(h, &ev);
    return h;
}

static struct h *h_new(unsigned voters)
{
    struct mr_raft_options o;
    h_init_opts(&o, 1);
    return h_new_opts(voters, &o);
}

static void h_free(struct h *h)
{
    h_clear(h);
    mr_raft_close(&h->r);
    test_free(h);
}

/* Drives node 1 to leadership with grants from node 2. */
static void h_make_leader(struct h *h)
{
    for (int i = 0; i < 40 && h->r.state == MR_RAFT_FOLLOWER; i++) h_tick(h, 1);
    assert_int_equal(h->r.state, MR_RAFT_PRECANDIDATE);
    assert_non_null(h_find(h, MR_RAFT_MSG_PREVOTE, 2));
    h_recv(h, (struct mr_raft_msg){
                  .type = MR_RAFT_MSG_PREVOTE_RESP, .from = 2, .term = h->r.term + 1});
    assert_int_equal(h->r.state, MR_RAFT_CANDIDATE);
    struct mr_raft_msg *v = h_find(h, MR_RAFT_MSG_VOTE, 2);
    assert_non_null(v);
    assert_true(h_after(h, v)); /* a vote request implies our durable self-vote */
    h_recv(h, (struct mr_raft_msg){
                  .type = MR_RAFT_MSG_VOTE_RESP, .from = 2, .term = h->r.term});
    assert_int_equal(h->r.state, MR_RAFT_LEADER);
}

/* Follower `from` acknowledges everything up to idx. */
static void h_ack(struct h *h, mr_node_id from, mr_index idx)
{
    h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_APPEND_RESP,
                                   .from = from,
                                   .term = h->r.term,
                                   .index = idx});
}

static mr_index last_index(struct h *h)
{
    struct mr_raft_status st;
    mr_raft_status(&h->r, &st);
    return st.last_index;
}

/* ---- lifecycle -------------------------------------------------------------- */

static void test_core_init_rejects_bad_options(void **state)
{
    (void)state;
    struct mr_raft r;
    struct mr_raft_options o;
    h_init_opts(&o, 0);
    assert_int_equal(mr_raft_init(&r, &o), MR_EINVAL);
    mr_raft_close(&r);
    h_init_opts(&o, 1);
    o.election_max_ticks = o.election_min_ticks;
    assert_int_equal(mr_raft_init(&r, &o), MR_EINVAL);
    mr_raft_close(&r);
    h_init_opts(&o, 1);
    o.heartbeat_ticks = o.election_min_ticks;
    assert_int_equal(mr_raft_init(&r, &o), MR_EINVAL);
    mr_raft_close(&r);
}

static void test_core_bootstrap_writes_the_configuration_at_index_1(void **state)
{
    (void)state;
    struct mr_raft_options o;
    h_init_opts(&o, 1);
    struct mr_raft r;
    assert_int_equal(mr_raft_init(&r, &o), 0);
    struct mr_raft_config c;
    mr_raft_config_init(&c);
    assert_int_equal(mr_raft_bootstrap(&r, &c), MR_EINVAL); /* no voter */
    mr_raft_config_add(&c, 1, MR_RAFT_VOTER, "raft=127.0.0.1:7001");
    mr_raft_config_add(&c, 2, MR_RAFT_LEARNER, "raft=127.0.0.1:7002");
    assert_int_equal(mr_raft_bootstrap(&r, &c), 0);
    assert_int_equal(mr_raft_bootstrap(&r, &c), MR_EINVAL); /* already has state */
    struct mr_raft_ready rd;
    struct mr_raft_event ev = {.type = MR_RAFT_EVENT_NONE};
    assert_int_equal(mr_raft_step(&r, &ev, &rd), 0);
    assert_true(rd.flags & MR_RAFT_READY_HARD_STATE);
    assert_int_equal(rd.term, 1);
    assert_int_equal(rd.n_entries, 1);
    assert_int_equal(rd.entries[0].index, 1);
    assert_int_equal(rd.entries[0].type, MR_RAFT_ENTRY_CONFIG);
    assert_int_equal(rd.n_committed, 1);
    struct mr_raft_config back;
    assert_int_equal(mr_raft_config_decode(rd.entries[0].data->data,
                                           rd.entries[0].data->len, &back, NULL),
                     0);
    assert_int_equal(back.n, 2);
    assert_string_equal(mr_raft_config_get(&back, 2)->context, "raft=127.0.0.1:7002");
    assert_int_equal(mr_raft_config_get(&back, 2)->role, MR_RAFT_LEARNER);
    mr_raft_config_close(&back);
    mr_raft_ready_release(&rd);
    mr_raft_config_close(&c);
    mr_raft_close(&r);
}

static void test_core_load_restores_state_and_rejects_gaps(void **state)
{
    (void)state;
    struct mr_raft_options o;
    h_init_opts(&o, 1);
    struct mr_raft_config c;
    mr_raft_config_init(&c);
    mr_raft_config_add(&c, 1, MR_RAFT_VOTER, "a");
    mr_raft_config_add(&c, 2, MR_RAFT_VOTER, "b");
    struct mr_rcbuf *cfg = mr_raft_config_encode(&c);
    struct mr_raft_entry e[3] = {
        {.term = 3, .index = 11, .type = MR_RAFT_ENTRY_NOOP},
        {.term = 3, .index = 12, .type = MR_RAFT_ENTRY_NORMAL},
        {.term = 4, .index = 14, .type = MR_RAFT_ENTRY_NORMAL},
    };
    struct mr_raft_persisted p = {.term = 4,
                                  .vote = 2,
                                  .snap_index = 10,
                                  .snap_term = 3,
                                  .snap_config = cfg,
                                  .entries = e,
                                  .n_entries = 3};
    struct mr_raft r;
    char err[MR_ERRMSG_SIZE];
    assert_int_equal(mr_raft_init(&r, &o), 0);
    assert_int_equal(mr_raft_load(&r, &p, err), MR_EINVAL);
    mr_raft_close(&r);
    e[2].index = 13;
    assert_int_equal(mr_raft_init(&r, &o), 0);
    assert_int_equal(mr_raft_load(&r, &p, err), 0);
    struct mr_raft_status st;
    mr_raft_status(&r, &st);
    assert_int_equal(st.term, 4);
    assert_int_equal(st.vote, 2);
    assert_int_equal(st.last_index, 13);
    assert_int_equal(st.last_term, 4);
    assert_int_equal(st.commit, 10);
    assert_int_equal(st.snap_index, 10);
    assert_int_equal(st.persisted, 13);
    assert_int_equal(st.config->n, 2);
    assert_int_equal(mr_raft_term_at(&r, 10), 3);
    mr_raft_close(&r);
    /* a corrupt configuration is reported, not asserted on */
    struct mr_rcbuf *bad = mr_rcbuf_copy("\x01\xff", 2);
    p.snap_config = bad;
    assert_int_equal(mr_raft_init(&r, &o), 0);
    assert_int_equal(mr_raft_load(&r, &p, err), MR_EMALFORMED);
    assert_non_null(strstr(err, "configuration"));
    mr_raft_close(&r);
    mr_rcbuf_unref(bad);
    mr_rcbuf_unref(cfg);
    mr_raft_config_close(&c);
}

/* Counts (pre)vote requests server 3 sends over `ticks` ticks. */
static unsigned campaign_messages(struct mr_raft *r, unsigned ticks)
{
    unsigned n = 0;
    for (unsigned t = 0; t < ticks; t++) {
        struct mr_raft_event ev = {.type = MR_RAFT_EVENT_TICK};
        struct mr_raft_ready rd;
        mr_raft_step(r, &ev, &rd);
        for (size_t i = 0; i < rd.n_msgs; i++)
            if (rd.msgs[i].type == MR_RAFT_MSG_PREVOTE ||
                rd.msgs[i].type == MR_RAFT_MSG_VOTE)
                n++;
        for (size_t i = 0; i < rd.n_msgs_after; i++)
            if (rd.msgs_after[i].type == MR_RAFT_MSG_PREVOTE ||
                rd.msgs_after[i].type == MR_RAFT_MSG_VOTE)
                n++;
        mr_raft_ready_release(&rd);
    }
    return n;
}

/* A restarted server whose last configuration removed it: without the
 * host's commit hint it may campaign (the removal looks uncommitted); with
 * it (the node records its removal) it knows and stays quiet. */
static void test_core_load_with_a_commit_hint_keeps_a_removed_server_quiet(void **state)
{
    (void)state;
    struct mr_raft_options o;
    h_init_opts(&o, 3);
    struct mr_raft_config c;
    mr_raft_config_init(&c);
    mr_raft_config_add(&c, 1, MR_RAFT_VOTER, "a");
    mr_raft_config_add(&c, 2, MR_RAFT_VOTER, "b");
    mr_raft_config_add(&c, 3, MR_RAFT_VOTER, "c");
    struct mr_rcbuf *all = mr_raft_config_encode(&c);
    mr_raft_config_remove(&c, 3);
    struct mr_rcbuf *without = mr_raft_config_encode(&c);
    struct mr_raft_entry e[2] = {
        {.term = 3, .index = 11, .type = MR_RAFT_ENTRY_CONFIG, .data = without},
        {.term = 3, .index = 12, .type = MR_RAFT_ENTRY_NORMAL},
    };
    struct mr_raft_persisted p = {.term = 3,
                                  .snap_index = 10,
                                  .snap_term = 3,
                                  .snap_config = all,
                                  .entries = e,
                                  .n_entries = 2};
    struct mr_raft r;
    char err[MR_ERRMSG_SIZE];
    assert_int_equal(mr_raft_init(&r, &o), 0);
    assert_int_equal(mr_raft_load(&r, &p, err), 0);
    assert_int_equal(r.commit, 10);
    assert_true(campaign_messages(&r, 100) > 0);
    mr_raft_close(&r);

    p.commit = 11; /* recorded by the host when it learned its removal */
    assert_int_equal(mr_raft_init(&r, &o), 0);
    assert_int_equal(mr_raft_load(&r, &p, err), 0);
    assert_int_equal(r.commit, 11);
    assert_int_equal(campaign_messages(&r, 100), 0);
    assert_int_equal(r.state, MR_RAFT_FOLLOWER);
    mr_raft_close(&r);

    p.commit = 99; /* beyond the log: ignored */
    assert_int_equal(mr_raft_init(&r, &o), 0);
    assert_int_equal(mr_raft_load(&r, &p, err), 0);
    assert_int_equal(r.commit, 10);
    mr_raft_close(&r);
    mr_rcbuf_unref(all);
    mr_rcbuf_unref(without);
    mr_raft_config_close(&c);
}

/* ---- configuration codec ------------------------------------------------------- */

static void test_config_roundtrips_and_rejects_every_malformed_input(void **state)
{
    (void)state;
    struct mr_raft_config c, d;
    mr_raft_config_init(&c);
    assert_int_equal(
        mr_raft_config_add(&c, 7, MR_RAFT_VOTER, "raft=127.0.0.1:7001 http=x"), 0);
    assert_int_equal(mr_raft_config_add(&c, 9, MR_RAFT_LEARNER, NULL), 0);
    assert_int_equal(mr_raft_config_add(&c, 9, MR_RAFT_VOTER, "dup"), MR_EEXISTS);
    assert_int_equal(mr_raft_config_add(&c, 0, MR_RAFT_VOTER, "zero"), MR_EINVAL);
    assert_int_equal(mr_raft_config_add(&c, 5, 9, "role"), MR_EINVAL);
    struct mr_rcbuf *b = mr_raft_config_encode(&c);
    assert_int_equal(mr_raft_config_decode(b->data, b->len, &d, NULL), 0);
    assert_int_equal(d.n, 2);
    assert_int_equal(d.servers[0].id, 7);
    assert_string_equal(d.servers[0].context, "raft=127.0.0.1:7001 http=x");
    assert_string_equal(d.servers[1].context, "");
    assert_int_equal(mr_raft_config_voters(&d), 1);
    mr_raft_config_close(&d);
    /* every strict prefix is truncated, one extra byte is trailing garbage */
    char err[MR_ERRMSG_SIZE];
    for (size_t len = 0; len < b->len; len++)
        assert_int_equal(mr_raft_config_decode(b->data, len, &d, err), MR_EMALFORMED);
    unsigned char buf[256];
    memcpy(buf, b->data, b->len);
    buf[b->len] = 0;
    assert_int_equal(mr_raft_config_decode(buf, b->len + 1, &d, err), MR_EMALFORMED);
    /* version, role, id 0, duplicate id, NUL in context, huge counts */
    memcpy(buf, b->data, b->len);
    buf[0] = 2;
    assert_int_equal(mr_raft_config_decode(buf, b->len, &d, err), MR_EMALFORMED);
    memcpy(buf, b->data, b->len);
    buf[5 + 8] = 3;
    assert_int_equal(mr_raft_config_decode(buf, b->len, &d, err), MR_EMALFORMED);
    assert_non_null(strstr(err, "role"));
    memcpy(buf, b->data, b->len);
    memset(buf + 5, 0, 8);
    assert_int_equal(mr_raft_config_decode(buf, b->len, &d, err), MR_EMALFORMED);
    memcpy(buf, b->data, b->len);
    size_t second = 5 + 13 + strlen("raft=127.0.0.1:7001 http=x");
    mr_put_u64(buf + second, 7);
    assert_int_equal(mr_raft_config_decode(buf, b->len, &d, err), MR_EMALFORMED);
    assert_non_null(strstr(err, "duplicate"));
    memcpy(buf, b->data, b->len);
    buf[5 + 13 + 3] = 0;
    assert_int_equal(mr_raft_config_decode(buf, b->len, &d, err), MR_EMALFORMED);
    memcpy(buf, b->data, b->len);
    mr_put_u32(buf + 1, 0xffffffffu);
    assert_int_equal(mr_raft_config_decode(buf, b->len, &d, err), MR_EMALFORMED);
    memcpy(buf, b->data, b->len);
    mr_put_u32(buf + 5 + 9, 0x7fffffffu);
    assert_int_equal(mr_raft_config_decode(buf, b->len, &d, err), MR_EMALFORMED);
    /* random bytes never crash: either valid or MR_EMALFORMED */
    struct mr_rand rnd;
    mr_rand_seed(&rnd, 42);
    for (int i = 0; i < 20000; i++) {
        size_t len = (size_t)mr_rand_below(&rnd, sizeof(buf));
        for (size_t k = 0; k < len; k++) buf[k] = (unsigned char)mr_rand_next(&rnd);
        if (i % 2 == 0 && len > 5) { /* plausible headers reach deeper */
            buf[0] = 1;
            mr_put_u32(buf + 1, (uint32_t)mr_rand_below(&rnd, 4));
        }
        int rv = mr_raft_config_decode(buf, len, &d, NULL);
        assert_true(rv == 0 || rv == MR_EMALFORMED);
        if (rv == 0) mr_raft_config_close(&d);
        assert_int_equal(d.n, 0);
    }
    mr_rcbuf_unref(b);
    mr_raft_config_close(&c);
}

/* ---- elections ------------------------------------------------------------------ */

static struct h *h_new_no_cq(unsigned voters)
{
    struct mr_raft_options o;
    h_init_opts(&o, 1);
    o.check_quorum = 0; /* votes are considered at once (no lease) */
    return h_new_opts(voters, &o);
}

struct trace_log {
    char lines[32][MR_ERRMSG_SIZE];
    unsigned n;
};

static void record_trace(void *data, mr_node_id id, const char *line)
{
    struct trace_log *t = data;
    (void)id;
    if (t->n < 32) snprintf(t->lines[t->n++], MR_ERRMSG_SIZE, "%s", line);
}

/* STYLE 12/17: each decision of the core is explained, and a scenario can
 * pin the exact sequence. */
static void test_election_traces_explain_each_decision(void **state)
{
    (void)state;
    struct trace_log t = {.n = 0};
    struct mr_raft_options o;
    h_init_opts(&o, 1);
    o.tracer.data = &t;
    o.tracer.emit_cb = record_trace;
    struct h *h = h_new_opts(3, &o);
    unsigned timeout = h->r.election_timeout;
    h_tick(h, timeout);
    h_recv(h,
           (struct mr_raft_msg){.type = MR_RAFT_MSG_PREVOTE_RESP, .from = 2, .term = 2});
    h_recv(h, (struct mr_raft_msg){
                  .type = MR_RAFT_MSG_VOTE_RESP, .from = 3, .term = 2, .reject = 1});
    h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_VOTE_RESP, .from = 2, .term = 2});
    char first[MR_ERRMSG_SIZE];
    snprintf(first, sizeof(first), "election timeout (%u ticks) in term 1 -> pre-vote",
             timeout);
    const char *want[] = {
        "configuration at 1 takes effect: 3 servers, 3 voters",
        "bootstrap with 3 servers",
        first,
        "pre-campaign for term 2 (last 1/1, 3 voters, config 1)",
        "pre-vote from 2: granted (2 granted, 0 rejected, quorum 2)",
        "campaign for term 2 (last 1/1, 3 voters, config 1)",
        "vote from 3: rejected (1 granted, 1 rejected, quorum 2)",
        "vote from 2: granted (2 granted, 1 rejected, quorum 2)",
        "won the election: leader of term 2",
    };
    assert_int_equal(t.n, sizeof(want) / sizeof(want[0]));
    for (unsigned i = 0; i < t.n; i++) assert_string_equal(t.lines[i], want[i]);
    h_free(h);
}

/* After a start, the first election comes sooner (within election_min) when
 * Pre-Vote is on and lease reads are off; with lease reads the restarted
 * node keeps its quiet start and waits at least election_min. */
static void test_election_first_timeout_after_a_start(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 20; seed++) {
        for (int lease = 0; lease <= 1; lease++) {
            struct mr_raft_options o;
            h_init_opts(&o, 1);
            o.seed = seed;
            o.lease_reads = (uint8_t)lease;
            struct h *h = h_new_opts(3, &o);
            unsigned ticks = 0;
            while (h->r.state == MR_RAFT_FOLLOWER && ticks < 100) {
                h_tick(h, 1);
                ticks++;
            }
            assert_int_equal(h->r.state, MR_RAFT_PRECANDIDATE);
            if (lease) {
                assert_true(ticks >= o.election_min_ticks);
            } else {
                assert_true(ticks > o.heartbeat_ticks);
                assert_true(ticks <= o.election_min_ticks);
            }
            h_free(h);
        }
    }
}

static void test_election_grants_one_vote_per_term(void **state)
{
    (void)state;
    struct h *h = h_new_no_cq(3);
    h_recv(
        h,
        (struct mr_raft_msg){
            .type = MR_RAFT_MSG_VOTE, .from = 2, .term = 5, .index = 1, .log_term = 1});
    struct mr_raft_msg *m = h_find(h, MR_RAFT_MSG_VOTE_RESP, 2);
    assert_non_null(m);
    assert_int_equal(m->reject, 0);
    assert_true(h_after(h, m)); /* only once the vote is durable */
    assert_true(h->flags & MR_RAFT_READY_HARD_STATE);
    assert_int_equal(h->hs_term, 5);
    assert_int_equal(h->hs_vote, 2);
    h_clear(h);
    h_recv(
        h,
        (struct mr_raft_msg){
            .type = MR_RAFT_MSG_VOTE, .from = 3, .term = 5, .index = 9, .log_term = 1});
    m = h_find(h, MR_RAFT_MSG_VOTE_RESP, 3);
    assert_non_null(m);
    assert_int_equal(m->reject, 1);
    h_clear(h);
    /* a retransmitted request from the same candidate is granted again */
    h_recv(
        h,
        (struct mr_raft_msg){
            .type = MR_RAFT_MSG_VOTE, .from = 2, .term = 5, .index = 1, .log_term = 1});
    assert_int_equal(h_find(h, MR_RAFT_MSG_VOTE_RESP, 2)->reject, 0);
    h_free(h);
}

static void test_election_rejects_a_candidate_with_an_older_log(void **state)
{
    (void)state;
    struct h *h = h_new_no_cq(3);
    h_make_leader(h);
    mr_term t = h->r.term;
    h_clear(h);
    /* last entry is (2, t): a candidate with (5, t-1) is behind */
    h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_VOTE,
                                   .from = 3,
                                   .term = t + 1,
                                   .index = 5,
                                   .log_term = t - 1});
    assert_int_equal(h->r.state, MR_RAFT_FOLLOWER); /* higher term: step down anyway */
    assert_int_equal(h_find(h, MR_RAFT_MSG_VOTE_RESP, 3)->reject, 1);
    assert_int_equal(h->r.vote, 0);
    h_free(h);
}

static void test_election_prevote_does_not_change_terms(void **state)
{
    (void)state;
    struct h *h = h_new(3);
    mr_term t = h->r.term;
    h_tick(h, 12); /* past the quiet start */
    h_clear(h);
    for (int i = 0; i < 100; i++) h_tick(h, 1); /* nobody answers */
    assert_int_equal(h->r.term, t);
    assert_true(h_count(h, MR_RAFT_MSG_PREVOTE, 0) >= 4);
    assert_int_equal(h_count(h, MR_RAFT_MSG_VOTE, 0), 0);
    /* granting a pre-vote changes nothing on the voter either */
    h_clear(h);
    h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_PREVOTE,
                                   .from = 2,
                                   .term = t + 1,
                                   .index = 1,
                                   .log_term = 1});
    struct mr_raft_msg *m = h_find(h, MR_RAFT_MSG_PREVOTE_RESP, 2);
    assert_non_null(m);
    assert_int_equal(m->reject, 0);
    assert_false(h_after(h, m));
    assert_int_equal(h->r.term, t);
    assert_int_equal(h->r.vote, 0);
    h_free(h);
}

static void
test_election_check_quorum_leader_ignores_votes_and_steps_down_alone(void **state)
{
    (void)state;
    struct h *h = h_new(3);
    h_make_leader(h);
    mr_term t = h->r.term;
    h_clear(h);
    /* a disruptive node: ignored while the leader holds its lease */
    h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_VOTE,
                                   .from = 3,
                                   .term = t + 5,
                                   .index = 100,
                                   .log_term = t});
    assert_int_equal(h->r.state, MR_RAFT_LEADER);
    assert_int_equal(h->r.term, t);
    assert_int_equal(h->n, 0);
    /* nobody answers for two election timeouts -> step down */
    h_tick(h, 25);
    assert_int_equal(h->r.state, MR_RAFT_FOLLOWER);
    assert_int_equal(h->r.term, t);
    h_free(h);
}

static void test_election_stale_leader_learns_the_new_term(void **state)
{
    (void)state;
    struct h *h = h_new_no_cq(3);
    h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_HEARTBEAT, .from = 2, .term = 7});
    h_clear(h);
    h_recv(
        h,
        (struct mr_raft_msg){
            .type = MR_RAFT_MSG_APPEND, .from = 3, .term = 4, .index = 1, .log_term = 1});
    struct mr_raft_msg *m = h_find(h, MR_RAFT_MSG_APPEND_RESP, 3);
    assert_non_null(m);
    assert_int_equal(m->term, 7);
    assert_int_equal(h->r.leader, 2);
    h_free(h);
}

/* ---- replication ------------------------------------------------------------------ */

/* thesis 10.2.1 */
static void
test_replication_leader_sends_before_its_write_and_counts_itself_after(void **state)
{
    (void)state;
    struct h *h = h_new(3);
    h_make_leader(h);
    h_ack(h, 2, last_index(h)); /* the no-op commits */
    h->auto_persist = 0;
    h_clear(h);
    mr_index x;
    assert_int_equal(h_propose(h, "x", &x), 0);
    struct mr_raft_msg *a = h_find(h, MR_RAFT_MSG_APPEND, 2);
    assert_non_null(a);
    assert_false(h_after(h, a)); /* leaves before our own write is durable */
    assert_int_equal(a->entries[a->n_entries - 1].index, x);
    assert_true(h->flags & MR_RAFT_READY_ENTRIES);
    /* follower 2 has it; we do not (yet): 1 of 3 */
    h_ack(h, 2, x);
    assert_true(h->r.commit < x);
    h_persist(h);
    assert_int_equal(h->r.commit, x);
    assert_int_equal(h->applied, x);
    /* and with both followers but no local write, it commits without us */
    mr_index y;
    h_propose(h, "y", &y);
    h_ack(h, 2, y);
    h_ack(h, 3, y);
    assert_int_equal(h->r.commit, y);
    h_free(h);
}

static void test_replication_follower_acks_only_after_persisting(void **state)
{
    (void)state;
    struct h *h = h_new_no_cq(3);
    struct mr_rcbuf *d = mr_rcbuf_copy("v", 1);
    struct mr_raft_entry e[2] = {
        {.term = 2, .index = 2, .type = MR_RAFT_ENTRY_NOOP},
        {.term = 2, .index = 3, .type = MR_RAFT_ENTRY_NORMAL, .data = d}};
    h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_APPEND,
                                   .from = 2,
                                   .term = 2,
                                   .index = 1,
                                   .log_term = 1,
                                   .commit = 2,
                                   .n_entries = 2,
                                   .entries = e});
    mr_rcbuf_unref(d);
    struct mr_raft_msg *m = h_find(h, MR_RAFT_MSG_APPEND_RESP, 2);
    assert_non_null(m);
    assert_int_equal(m->index, 3);
    assert_true(h_after(h, m));
    assert_int_equal(h->r.commit, 2);
    assert_int_equal(h->applied, 2);
    h_free(h);
}

static void test_replication_pipelines_within_the_inflight_window(void **state)
{
    (void)state;
    struct mr_raft_options o;
    h_init_opts(&o, 1);
    o.max_inflight = 3;
    o.max_append_entries = 1;
    struct h *h = h_new_opts(3, &o);
    h_make_leader(h);
    mr_index noop = last_index(h);
    h_ack(h, 2, noop); /* 2 -> replicate; 3 stays probing */
    h_clear(h);
    for (int i = 0; i < 6; i++) h_propose(h, "p", NULL);
    /* 3 messages in flight to the replicating follower, 1 probe to the other */
    assert_int_equal(h_count(h, MR_RAFT_MSG_APPEND, 2), 3);
    assert_int_equal(h_count(h, MR_RAFT_MSG_APPEND, 3), 0); /* its probe is outstanding */
    h_clear(h);
    h_ack(h, 2, noop + 1); /* one slot frees */
    assert_int_equal(h_count(h, MR_RAFT_MSG_APPEND, 2), 1);
    assert_int_equal(h_find(h, MR_RAFT_MSG_APPEND, 2)->entries[0].index, noop + 4);
    h_free(h);
}

/* Deferred proposals: nothing is written or sent until FLUSH; then one write
 * and one AppendEntries per follower carry them all. A TICK flushes too. */
static void test_replication_deferred_proposals_go_out_together_on_flush(void **state)
{
    (void)state;
    struct mr_raft_options o;
    h_init_opts(&o, 1);
    o.max_append_entries = 64;
    struct h *h = h_new_opts(3, &o);
    h_make_leader(h);
    mr_index noop = last_index(h);
    h_persist(h);
    h_ack(h, 2, noop);
    h_ack(h, 3, noop);
    assert_int_equal(h->r.commit, noop);
    h_clear(h);
    mr_index written = h->last_written;
    for (int i = 0; i < 5; i++) {
        struct mr_rcbuf *b = mr_rcbuf_copy("d", 1);
        struct mr_raft_event ev = {
            .type = MR_RAFT_EVENT_PROPOSE, .data = b, .is_deferred = 1};
        assert_int_equal(h_step(h, &ev), 0);
        assert_int_equal(ev.out_index, noop + 1 + (mr_index)i); /* indexes at once */
        mr_rcbuf_unref(b);
    }
    assert_int_equal(h->n, 0);                  /* nothing sent */
    assert_int_equal(h->last_written, written); /* nothing handed out for writing */
    assert_false(h->flags & MR_RAFT_READY_ENTRIES);
    struct mr_raft_event f = {.type = MR_RAFT_EVENT_FLUSH};
    assert_int_equal(h_step(h, &f), 0);
    assert_int_equal(h->last_written, noop + 5); /* all five in one ready */
    for (mr_node_id id = 2; id <= 3; id++) {
        assert_int_equal(h_count(h, MR_RAFT_MSG_APPEND, id), 1);
        assert_int_equal(h_find(h, MR_RAFT_MSG_APPEND, id)->n_entries, 5);
    }
    /* they commit as usual */
    h_persist(h);
    h_ack(h, 2, noop + 5);
    assert_int_equal(h->r.commit, noop + 5);
    /* a flush with nothing held sends nothing */
    h_clear(h);
    assert_int_equal(h_step(h, &f), 0);
    assert_int_equal(h->n, 0);
    /* a tick flushes what a host forgot */
    struct mr_rcbuf *b = mr_rcbuf_copy("t", 1);
    struct mr_raft_event ev = {
        .type = MR_RAFT_EVENT_PROPOSE, .data = b, .is_deferred = 1};
    assert_int_equal(h_step(h, &ev), 0);
    mr_rcbuf_unref(b);
    assert_int_equal(h->n, 0);
    h_tick(h, 1);
    assert_int_equal(h->last_written, noop + 6);
    assert_int_equal(h_find(h, MR_RAFT_MSG_APPEND, 3)->entries[0].index, noop + 6);
    h_free(h);
}

/* max_apply_bytes: committed entries come out in slices, the ready says
 * more are waiting, and an empty step hands out the next slice. */
static void test_replication_committed_entries_come_out_in_slices(void **state)
{
    (void)state;
    struct mr_raft_options o;
    h_init_opts(&o, 1);
    o.max_append_entries = 64;
    o.max_apply_bytes = 2; /* 1-byte payloads: two per ready */
    struct h *h = h_new_opts(3, &o);
    h_make_leader(h);
    mr_index noop = last_index(h);
    h_ack(h, 2, noop);
    mr_index before = h->applied;
    for (int i = 0; i < 5; i++) h_propose(h, "p", NULL);
    struct mr_raft_ready rd;
    struct mr_raft_msg m = {.type = MR_RAFT_MSG_APPEND_RESP,
                            .from = 2,
                            .to = 1,
                            .term = h->r.term,
                            .index = noop + 5};
    struct mr_raft_event ev = {.type = MR_RAFT_EVENT_RECEIVE, .msg = &m};
    assert_int_equal(mr_raft_step(&h->r, &ev, &rd), 0);
    assert_int_equal(h->r.commit, noop + 5);
    assert_int_equal(rd.n_committed, 2);
    assert_int_equal(rd.committed[0].index, before + 1);
    assert_true(rd.has_more_committed);
    mr_raft_ready_release(&rd);
    unsigned slices = 1;
    mr_index last = before + 2;
    for (;;) {
        struct mr_raft_event none = {.type = MR_RAFT_EVENT_NONE};
        assert_int_equal(mr_raft_step(&h->r, &none, &rd), 0);
        assert_true(rd.n_committed >= 1 && rd.n_committed <= 2);
        assert_int_equal(rd.committed[0].index, last + 1);
        last = rd.committed[rd.n_committed - 1].index;
        slices++;
        int more = rd.has_more_committed;
        mr_raft_ready_release(&rd);
        if (!more) break;
    }
    assert_int_equal(last, noop + 5);
    assert_true(slices >= 3);
    h->applied = last;
    h_free(h);
}

static void test_replication_batches_are_capped_by_count_and_bytes(void **state)
{
    (void)state;
    struct mr_raft_options o;
    h_init_opts(&o, 1);
    o.max_append_entries = 3;
    o.max_append_bytes = 10;
    o.max_inflight = 100;
    struct h *h = h_new_opts(3, &o);
    h_make_leader(h);
    h_ack(h, 2, last_index(h));
    h->auto_persist = 0;
    h_clear(h);
    /* 5-byte payloads: two fit in 10 bytes */
    for (int i = 0; i < 6; i++) h_propose(h, "12345", NULL);
    h_clear(h);
    h_ack(h, 3, 2); /* 3 matches the no-op: it gets everything in one go */
    assert_int_equal(h_count(h, MR_RAFT_MSG_APPEND, 3), 3);
    for (unsigned i = 0; i < h->n; i++)
        if (h->msgs[i].type == MR_RAFT_MSG_APPEND)
            assert_int_equal(h->msgs[i].n_entries, 2);
    /* an entry larger than the cap still goes, alone */
    h_clear(h);
    h_propose(h, "a payload longer than ten bytes", NULL);
    h_propose(h, "x", NULL);
    struct mr_raft_msg *m = h_find(h, MR_RAFT_MSG_APPEND, 2);
    assert_non_null(m);
    assert_int_equal(m->n_entries, 1);
    /* the count cap */
    h_clear(h);
    o.max_append_bytes = 0;
    h->r.opts.max_append_bytes = 0; /* 0 = no byte cap */
    for (int i = 0; i < 7; i++) h_propose(h, "y", NULL);
    h_clear(h);
    h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_APPEND_RESP,
                                   .from = 3,
                                   .term = h->r.term,
                                   .reject = 1,
                                   .index = h->r.progress[2].next - 1,
                                   .reject_hint = 2,
                                   .hint_term = h->r.term});
    m = h_find(h, MR_RAFT_MSG_APPEND, 3);
    assert_non_null(m);
    assert_int_equal(m->n_entries, 3);
    h_free(h);
}

static void test_replication_backtracks_fast_with_the_conflict_hint(void **state)
{
    (void)state;
    /* node 1 restarts with 50 entries of term 1 and becomes leader of term 2 */
    struct mr_raft_options o;
    h_init_opts(&o, 1);
    o.max_append_entries = 100;
    struct mr_raft_config c;
    mr_raft_config_init(&c);
    for (mr_node_id i = 1; i <= 3; i++) mr_raft_config_add(&c, i, MR_RAFT_VOTER, "x");
    struct mr_raft_entry e[50];
    for (int i = 0; i < 50; i++)
        e[i] = (struct mr_raft_entry){
            .term = 1, .index = (mr_index)i + 1, .type = MR_RAFT_ENTRY_NOOP};
    e[0].type = MR_RAFT_ENTRY_CONFIG;
    e[0].data = mr_raft_config_encode(&c);
    struct mr_raft_persisted p = {.term = 1, .entries = e, .n_entries = 50};
    struct h *h = test_calloc(1, sizeof(*h));
    h->auto_persist = 1;
    assert_int_equal(mr_raft_init(&h->r, &o), 0);
    assert_int_equal(mr_raft_load(&h->r, &p, NULL), 0);
    mr_rcbuf_unref(e[0].data);
    mr_raft_config_close(&c);
    h_make_leader(h);
    assert_int_equal(h->r.progress[2].next, 51);
    h_clear(h);
    /* follower 3 rejects the probe at 50: it only has index 1 (term 1) */
    h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_APPEND_RESP,
                                   .from = 3,
                                   .term = h->r.term,
                                   .reject = 1,
                                   .index = 50,
                                   .reject_hint = 1,
                                   .hint_term = 1});
    struct mr_raft_msg *a = h_find(h, MR_RAFT_MSG_APPEND, 3);
    assert_non_null(a);
    assert_int_equal(a->index, 1); /* straight to the hint, not one step back */
    assert_int_equal(a->log_term, 1);
    assert_int_equal(a->n_entries, 50);
    /* a stale duplicate of that reject is ignored */
    h_clear(h);
    h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_APPEND_RESP,
                                   .from = 3,
                                   .term = h->r.term,
                                   .reject = 1,
                                   .index = 50,
                                   .reject_hint = 1,
                                   .hint_term = 1});
    assert_null(h_find(h, MR_RAFT_MSG_APPEND, 3));
    h_free(h);
}

static void test_replication_follower_truncates_a_conflicting_suffix(void **state)
{
    (void)state;
    struct h *h = h_new_no_cq(3);
    struct mr_raft_entry e[3] = {{.term = 2, .index = 2, .type = MR_RAFT_ENTRY_NOOP},
                                 {.term = 2, .index = 3, .type = MR_RAFT_ENTRY_NOOP},
                                 {.term = 2, .index = 4, .type = MR_RAFT_ENTRY_NOOP}};
    h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_APPEND,
                                   .from = 2,
                                   .term = 2,
                                   .index = 1,
                                   .log_term = 1,
                                   .commit = 1,
                                   .n_entries = 3,
                                   .entries = e});
    h_clear(h);
    /* leader of term 3 has (3,3) at index 3: reject with a hint first */
    h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_APPEND,
                                   .from = 3,
                                   .term = 3,
                                   .index = 3,
                                   .log_term = 3,
                                   .commit = 1});
    struct mr_raft_msg *m = h_find(h, MR_RAFT_MSG_APPEND_RESP, 3);
    assert_int_equal(m->reject, 1);
    assert_int_equal(m->reject_hint, 3);
    assert_int_equal(m->hint_term, 2);
    h_clear(h);
    struct mr_raft_entry f[1] = {{.term = 3, .index = 3, .type = MR_RAFT_ENTRY_NOOP}};
    h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_APPEND,
                                   .from = 3,
                                   .term = 3,
                                   .index = 2,
                                   .log_term = 2,
                                   .commit = 1,
                                   .n_entries = 1,
                                   .entries = f});
    assert_int_equal(last_index(h), 3);
    assert_int_equal(mr_raft_term_at(&h->r, 3), 3);
    assert_true(h->flags & MR_RAFT_READY_ENTRIES);
    assert_int_equal(h->last_written, 3); /* the WAL truncates at 3 and rewrites */
    /* a stale duplicate of the old append changes nothing */
    h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_APPEND,
                                   .from = 3,
                                   .term = 3,
                                   .index = 2,
                                   .log_term = 2,
                                   .commit = 1,
                                   .n_entries = 1,
                                   .entries = f});
    assert_int_equal(last_index(h), 3);
    h_free(h);
}

static void test_replication_rejects_malformed_messages(void **state)
{
    (void)state;
    struct h *h = h_new_no_cq(3);
    struct mr_raft_entry gap[2] = {{.term = 2, .index = 2, .type = MR_RAFT_ENTRY_NOOP},
                                   {.term = 2, .index = 4, .type = MR_RAFT_ENTRY_NOOP}};
    struct mr_raft_entry future[1] = {
        {.term = 9, .index = 2, .type = MR_RAFT_ENTRY_NOOP}};
    struct mr_raft_entry badtype[1] = {{.term = 2, .index = 2, .type = 77}};
    struct mr_raft_msg bad[] = {
        {.type = 0, .from = 2, .term = 2},
        {.type = 99, .from = 2, .term = 2},
        {.type = MR_RAFT_MSG_APPEND, .from = 0, .term = 2},
        {.type = MR_RAFT_MSG_APPEND, .from = 1, .term = 2},
        {.type = MR_RAFT_MSG_APPEND,
         .from = 2,
         .term = 2,
         .index = 1,
         .n_entries = 2,
         .entries = gap},
        {.type = MR_RAFT_MSG_APPEND,
         .from = 2,
         .term = 2,
         .index = 1,
         .n_entries = 1,
         .entries = future},
        {.type = MR_RAFT_MSG_APPEND,
         .from = 2,
         .term = 2,
         .index = 1,
         .n_entries = 1,
         .entries = badtype},
        {.type = MR_RAFT_MSG_APPEND,
         .from = 2,
         .term = 2,
         .index = 1,
         .n_entries = 1,
         .entries = NULL},
        {.type = MR_RAFT_MSG_VOTE,
         .from = 2,
         .term = 2,
         .n_entries = 1,
         .entries = future},
    };
    mr_term t = h->r.term;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(h_recv(h, bad[i]), MR_EMALFORMED);
        assert_int_equal(h->r.term, t);
        assert_int_equal(last_index(h), 1);
    }
    struct mr_raft_msg wrong_to = {
        .type = MR_RAFT_MSG_HEARTBEAT, .from = 2, .to = 3, .term = 2};
    struct mr_raft_event ev = {.type = MR_RAFT_EVENT_RECEIVE, .msg = &wrong_to};
    assert_int_equal(h_step(h, &ev), MR_EMALFORMED);
    struct mr_raft_event bad_ev = {.type = 1234};
    assert_int_equal(h_step(h, &bad_ev), MR_EINVAL);
    h_free(h);
}

/* ---- snapshots ------------------------------------------------------------------- */

static void test_snapshot_compacts_and_is_sent_to_a_follower_that_needs_it(void **state)
{
    (void)state;
    struct mr_raft_options o;
    h_init_opts(&o, 1);
    o.snapshot_trailing = 2;
    struct h *h = h_new_opts(3, &o);
    h_make_leader(h);
    h_ack(h, 2, last_index(h));
    for (int i = 0; i < 20; i++) h_propose(h, "s", NULL);
    h_ack(h, 2, last_index(h));
    mr_index applied = h->applied;
    assert_int_equal(applied, last_index(h));
    struct mr_raft_event ev = {
        .type = MR_RAFT_EVENT_SNAPSHOT_TAKEN, .index = applied, .term = h->r.term};
    assert_int_equal(h_step(h, &ev), 0);
    struct mr_raft_status st;
    mr_raft_status(&h->r, &st);
    assert_int_equal(st.snap_index, applied);
    assert_int_equal(st.first_index, applied - 2 + 1); /* two trailing entries kept */
    /* a snapshot beyond what was applied is refused */
    struct mr_raft_event bad = {
        .type = MR_RAFT_EVENT_SNAPSHOT_TAKEN, .index = applied + 5, .term = h->r.term};
    assert_int_equal(h_step(h, &bad), MR_EINVAL);
    h_clear(h);
    /* follower 3 says it has nothing beyond index 1 */
    h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_APPEND_RESP,
                                   .from = 3,
                                   .term = h->r.term,
                                   .reject = 1,
                                   .index = h->r.progress[2].next - 1,
                                   .reject_hint = 1,
                                   .hint_term = 1});
    struct mr_raft_msg *m = h_find(h, MR_RAFT_MSG_SNAPSHOT, 3);
    assert_non_null(m);
    assert_int_equal(m->snap_index, applied);
    assert_int_equal(m->snap_term, h->r.term);
    struct mr_raft_config c;
    assert_int_equal(
        mr_raft_config_decode(m->snap_config->data, m->snap_config->len, &c, NULL), 0);
    assert_int_equal(c.n, 3);
    mr_raft_config_close(&c);
    assert_int_equal(h->r.progress[2].state, MR_RAFT_SNAPSHOT);
    /* no appends while the transfer runs; then the follower confirms */
    h_clear(h);
    h_propose(h, "more", NULL);
    assert_null(h_find(h, MR_RAFT_MSG_APPEND, 3));
    h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_SNAPSHOT_RESP,
                                   .from = 3,
                                   .term = h->r.term,
                                   .index = applied});
    assert_int_equal(h->r.progress[2].match, applied);
    assert_non_null(h_find(h, MR_RAFT_MSG_APPEND, 3));
    h_free(h);
}

/* Follower 1 of {1,2,3} holding entries 1..3 (2 and 3 from leader 2 in term
 * 2), all committed and applied. */
static struct h *h_follower_with_log(void)
{
    struct h *h = h_new_no_cq(3);
    struct mr_raft_entry ents[2] = {
        {.term = 2, .index = 2, .type = MR_RAFT_ENTRY_NORMAL},
        {.term = 2, .index = 3, .type = MR_RAFT_ENTRY_NORMAL},
    };
    h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_APPEND,
                                   .from = 2,
                                   .term = 2,
                                   .index = 1,
                                   .log_term = 1,
                                   .commit = 3,
                                   .n_entries = 2,
                                   .entries = ents});
    assert_int_equal(last_index(h), 3);
    assert_int_equal(h->r.commit, 3);
    assert_int_equal(h->applied, 3);
    h_clear(h);
    return h;
}

static struct mr_rcbuf *config_of_voters(unsigned voters)
{
    struct mr_raft_config c;
    mr_raft_config_init(&c);
    for (mr_node_id i = 1; i <= voters; i++)
        mr_raft_config_add(&c, i, MR_RAFT_VOTER, "x");
    struct mr_rcbuf *cfg = mr_raft_config_encode(&c);
    mr_raft_config_close(&c);
    return cfg;
}

static int h_recv_snapshot(struct h *h, mr_index index, mr_term term,
                           struct mr_rcbuf *cfg)
{
    return h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_SNAPSHOT,
                                          .from = 2,
                                          .term = 3,
                                          .snap_index = index,
                                          .snap_term = term,
                                          .snap_config = cfg,
                                          .snap_last = 1});
}

static int h_install_answer(struct h *h, int type, mr_index index, mr_term term)
{
    struct mr_raft_event ev = {.type = type, .index = index, .term = term};
    int rv = h_step(h, &ev);
    /* the host's state machine now stands at the snapshot */
    if (type == MR_RAFT_EVENT_SNAPSHOT_INSTALLED && h->r.snap_index == index)
        h->applied = index;
    return rv;
}

static void assert_log_kept(struct h *h)
{
    struct mr_raft_status st;
    mr_raft_status(&h->r, &st);
    assert_int_equal(st.commit, 3);
    assert_int_equal(st.applied, 3);
    assert_int_equal(st.first_index, 1);
    assert_int_equal(st.last_index, 3);
    assert_int_equal(st.snap_index, 0);
    assert_int_equal(st.config->n, 3);
}

static void
test_snapshot_install_is_acknowledged_only_once_the_host_installed_it(void **state)
{
    (void)state;
    struct h *h = h_follower_with_log();
    struct mr_rcbuf *cfg = config_of_voters(4);
    assert_int_equal(h_recv_snapshot(h, 50, 3, cfg), 0);
    /* phase 1: the host is asked to install; nothing changed, nothing acked */
    assert_true(h->has_snapshot);
    assert_int_equal(h->snap_index, 50);
    assert_null(h_find(h, MR_RAFT_MSG_SNAPSHOT_RESP, 2));
    assert_log_kept(h);
    /* while the host installs, appends and other snapshots are dropped,
     * heartbeats answered without moving commit, and no campaign starts */
    h_clear(h);
    struct mr_raft_entry e = {.term = 3, .index = 51, .type = MR_RAFT_ENTRY_NORMAL};
    h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_APPEND,
                                   .from = 2,
                                   .term = 3,
                                   .index = 50,
                                   .log_term = 3,
                                   .commit = 51,
                                   .n_entries = 1,
                                   .entries = &e});
    assert_null(h_find(h, MR_RAFT_MSG_APPEND_RESP, 2));
    assert_int_equal(h_recv_snapshot(h, 60, 3, cfg), 0);
    assert_false(h->has_snapshot);
    assert_null(h_find(h, MR_RAFT_MSG_SNAPSHOT_RESP, 2));
    h_tick(h, 40);
    assert_int_equal(h->r.state, MR_RAFT_FOLLOWER);
    assert_null(h_find(h, MR_RAFT_MSG_PREVOTE, 0));
    assert_log_kept(h);
    /* phase 2: installed -> log reset, configuration adopted, ack after */
    h_clear(h);
    assert_int_equal(h_install_answer(h, MR_RAFT_EVENT_SNAPSHOT_INSTALLED, 50, 3), 0);
    struct mr_raft_msg *m = h_find(h, MR_RAFT_MSG_SNAPSHOT_RESP, 2);
    assert_non_null(m);
    assert_int_equal(m->reject, 0);
    assert_int_equal(m->index, 50);
    assert_true(h_after(h, m)); /* only once the WAL reset is durable */
    struct mr_raft_status st;
    mr_raft_status(&h->r, &st);
    assert_int_equal(st.commit, 50);
    assert_int_equal(st.applied, 50);
    assert_int_equal(st.last_index, 50);
    assert_int_equal(st.snap_index, 50);
    assert_int_equal(st.persisted, 50);
    assert_int_equal(st.config->n, 4);
    /* an answer for an install nobody asked for changes nothing */
    h_clear(h);
    assert_int_equal(h_install_answer(h, MR_RAFT_EVENT_SNAPSHOT_INSTALLED, 70, 3), 0);
    assert_int_equal(h_install_answer(h, MR_RAFT_EVENT_SNAPSHOT_FAILED, 50, 3), 0);
    assert_int_equal(h->n, 0);
    assert_int_equal(last_index(h), 50);
    /* a malformed configuration is rejected, not asserted on */
    struct mr_rcbuf *bad = mr_rcbuf_copy("garbage", 7);
    assert_int_equal(h_recv_snapshot(h, 90, 3, bad), MR_EMALFORMED);
    assert_int_equal(h_find(h, MR_RAFT_MSG_SNAPSHOT_RESP, 2)->reject, 1);
    assert_false(h->has_snapshot);
    mr_rcbuf_unref(bad);
    mr_rcbuf_unref(cfg);
    h_free(h);
}

/* ---- bounded in-memory log --------------------------------------------------- */

#define NO_LIMIT ((mr_index)-1)

static size_t payload_at(struct h *h, mr_index i)
{
    const struct mr_raft_entry *e = mr_raft_entry_at(&h->r, i);
    assert_non_null(e);
    return e->data != NULL ? e->data->len : 0;
}

static void assert_evicted(struct h *h, mr_index i, size_t len)
{
    const struct mr_raft_entry *e = mr_raft_entry_at(&h->r, i);
    assert_non_null(e);
    assert_int_equal(e->evicted, 1);
    assert_null(e->data);
    assert_int_equal(e->evicted_len, len);
}

static void assert_resident(struct h *h, mr_index i)
{
    const struct mr_raft_entry *e = mr_raft_entry_at(&h->r, i);
    assert_non_null(e);
    assert_int_equal(e->evicted, 0);
    assert_non_null(e->data);
}

/* Sum of the payloads the log holds, counted the slow way. */
static size_t resident_by_scan(struct h *h)
{
    struct mr_raft_status st;
    mr_raft_status(&h->r, &st);
    size_t sum = 0;
    for (mr_index i = st.first_index; i <= st.last_index; i++) sum += payload_at(h, i);
    return sum;
}

static void h_persist_to(struct h *h, mr_index index)
{
    struct mr_raft_event p = {
        .type = MR_RAFT_EVENT_PERSISTED, .index = index, .term = h->r.term};
    h_step(h, &p);
}

static void
test_evict_drops_only_durable_applied_entries_up_to_the_bound_and_budget(void **state)
{
    (void)state;
    struct mr_raft_options o;
    h_init_opts(&o, 1);
    o.max_append_entries = 100;
    struct h *h = h_new_opts(3, &o);
    h_make_leader(h); /* 1: CONFIG, 2: the no-op, persisted */
    size_t cfg = payload_at(h, 1);
    h->auto_persist = 0;
    for (int i = 0; i < 6; i++) h_propose(h, "12345", NULL); /* 3..8 */
    assert_int_equal(mr_raft_log_resident_bytes(&h->r), cfg + 30);
    /* both followers hold 3..8: committed and applied, but not durable here */
    h_ack(h, 2, 8);
    h_ack(h, 3, 8);
    assert_int_equal(h->applied, 8);
    assert_int_equal(mr_raft_log_evict(&h->r, 0, NO_LIMIT), 0);
    for (mr_index i = 3; i <= 8; i++) assert_resident(h, i);
    /* durable up to 5: 3..5 go */
    h_persist_to(h, 5);
    assert_int_equal(mr_raft_log_evict(&h->r, 0, NO_LIMIT), 15);
    for (mr_index i = 3; i <= 5; i++) assert_evicted(h, i, 5);
    assert_resident(h, 6);
    /* the budget: down to cfg + 10 bytes is one entry (6); then up_to */
    h_persist_to(h, 8);
    assert_int_equal(mr_raft_log_evict(&h->r, cfg + 10, NO_LIMIT), 5);
    assert_evicted(h, 6, 5);
    assert_resident(h, 7);
    assert_int_equal(mr_raft_log_evict(&h->r, cfg + 10, NO_LIMIT), 0);
    assert_int_equal(mr_raft_log_evict(&h->r, 0, 7), 5);
    assert_evicted(h, 7, 5);
    assert_resident(h, 8);
    /* applied: 9 and 10 are durable but not committed */
    h_propose(h, "abc", NULL);
    h_propose(h, "defg", NULL);
    h_persist_to(h, 10);
    assert_int_equal(h->applied, 8);
    assert_int_equal(mr_raft_log_evict(&h->r, 0, NO_LIMIT), 5);
    assert_evicted(h, 8, 5);
    assert_resident(h, 9);
    assert_resident(h, 10);
    /* a CONFIG entry (11) stays, so does the bootstrap one (1) */
    struct mr_raft_event ch = {
        .type = MR_RAFT_EVENT_CHANGE_MEMBERS, .change = MR_RAFT_ADD_LEARNER, .node = 4};
    assert_int_equal(h_step(h, &ch), 0);
    assert_int_equal(ch.out_index, 11);
    h_persist_to(h, 11);
    h_ack(h, 2, 11);
    assert_int_equal(h->applied, 11);
    size_t cfg11 = payload_at(h, 11);
    assert_int_equal(mr_raft_log_evict(&h->r, 0, NO_LIMIT), 7);
    assert_evicted(h, 9, 3);
    assert_evicted(h, 10, 4);
    assert_resident(h, 1);
    assert_resident(h, 11);
    assert_int_equal(mr_raft_log_resident_bytes(&h->r), cfg + cfg11);
    assert_int_equal(mr_raft_log_resident_bytes(&h->r), resident_by_scan(h));
    h_free(h);
}

static void
test_evict_resident_bytes_follow_append_truncate_compact_and_install(void **state)
{
    (void)state;
    struct h *h = h_new_no_cq(3); /* follower; the harness persists every write */
    size_t cfg = payload_at(h, 1);
    assert_int_equal(mr_raft_log_resident_bytes(&h->r), cfg);
    struct mr_rcbuf *b[4] = {mr_rcbuf_copy("aa", 2), mr_rcbuf_copy("bbbb", 4),
                             mr_rcbuf_copy("cccccc", 6), mr_rcbuf_copy("dddddddd", 8)};
    struct mr_raft_entry e[4];
    for (int i = 0; i < 4; i++)
        e[i] = (struct mr_raft_entry){.term = 2,
                                      .index = (mr_index)i + 2,
                                      .type = MR_RAFT_ENTRY_NORMAL,
                                      .data = b[i]};
    h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_APPEND,
                                   .from = 2,
                                   .term = 2,
                                   .index = 1,
                                   .log_term = 1,
                                   .commit = 3,
                                   .n_entries = 4,
                                   .entries = e});
    assert_int_equal(last_index(h), 5);
    assert_int_equal(h->applied, 3);
    assert_int_equal(mr_raft_log_resident_bytes(&h->r), cfg + 20);
    /* 2 and 3 are durable and applied; 4 and 5 are not applied */
    assert_int_equal(mr_raft_log_evict(&h->r, 0, NO_LIMIT), 6);
    assert_int_equal(mr_raft_log_resident_bytes(&h->r), cfg + 14);
    /* a leader of term 3 replaces 5 with a 1-byte entry */
    struct mr_rcbuf *x = mr_rcbuf_copy("x", 1);
    struct mr_raft_entry f = {
        .term = 3, .index = 5, .type = MR_RAFT_ENTRY_NORMAL, .data = x};
    h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_APPEND,
                                   .from = 3,
                                   .term = 3,
                                   .index = 4,
                                   .log_term = 2,
                                   .commit = 5,
                                   .n_entries = 1,
                                   .entries = &f});
    assert_int_equal(mr_raft_term_at(&h->r, 5), 3);
    assert_int_equal(h->applied, 5);
    assert_int_equal(mr_raft_log_resident_bytes(&h->r), cfg + 6 + 1);
    assert_int_equal(mr_raft_log_resident_bytes(&h->r), resident_by_scan(h));
    /* the cursor resumes after 3: 4 and 5 go now */
    assert_int_equal(mr_raft_log_evict(&h->r, cfg, NO_LIMIT), 7);
    assert_evicted(h, 5, 1);
    /* compaction drops evicted and resident entries alike (1 is CONFIG) */
    struct mr_raft_event snap = {
        .type = MR_RAFT_EVENT_SNAPSHOT_TAKEN, .index = 4, .term = 2};
    assert_int_equal(h_step(h, &snap), 0);
    assert_int_equal(mr_raft_log_resident_bytes(&h->r), 0);
    assert_int_equal(resident_by_scan(h), 0);
    /* a new entry after the compaction point counts again; an install drops
     * everything */
    struct mr_rcbuf *y = mr_rcbuf_copy("yyy", 3);
    struct mr_raft_entry g = {
        .term = 3, .index = 6, .type = MR_RAFT_ENTRY_NORMAL, .data = y};
    h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_APPEND,
                                   .from = 3,
                                   .term = 3,
                                   .index = 5,
                                   .log_term = 3,
                                   .commit = 5,
                                   .n_entries = 1,
                                   .entries = &g});
    assert_int_equal(mr_raft_log_resident_bytes(&h->r), 3);
    struct mr_rcbuf *c3 = config_of_voters(3);
    h_clear(h);
    h->r.term = 3; /* the snapshot comes from leader 2 of term 3 */
    assert_int_equal(h_recv_snapshot(h, 20, 3, c3), 0);
    assert_int_equal(h_install_answer(h, MR_RAFT_EVENT_SNAPSHOT_INSTALLED, 20, 3), 0);
    assert_int_equal(mr_raft_log_resident_bytes(&h->r), 0);
    assert_int_equal(mr_raft_log_evict(&h->r, 0, NO_LIMIT), 0);
    mr_rcbuf_unref(c3);
    mr_rcbuf_unref(x);
    mr_rcbuf_unref(y);
    for (int i = 0; i < 4; i++) mr_rcbuf_unref(b[i]);
    h_free(h);
}

static void
test_evict_spares_entries_a_snapshot_covers_before_the_wal_holds_them(void **state)
{
    (void)state;
    struct mr_raft_options o;
    h_init_opts(&o, 1);
    o.check_quorum = 0;
    o.snapshot_trailing = 3;
    struct h *h = h_new_opts(3, &o);
    h->auto_persist = 0;
    struct mr_rcbuf *d = mr_rcbuf_copy("pp", 2);
    struct mr_raft_entry e[5];
    for (int i = 0; i < 5; i++)
        e[i] = (struct mr_raft_entry){
            .term = 2, .index = (mr_index)i + 2, .type = MR_RAFT_ENTRY_NORMAL, .data = d};
    h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_APPEND,
                                   .from = 2,
                                   .term = 2,
                                   .index = 1,
                                   .log_term = 1,
                                   .commit = 6,
                                   .n_entries = 5,
                                   .entries = e});
    /* a follower applies what is committed before its own write is durable */
    assert_int_equal(h->applied, 6);
    h_persist_to(h, 3);
    /* the snapshot at 6 raises status.persisted to 6, the WAL holds 1..3 */
    struct mr_raft_event snap = {
        .type = MR_RAFT_EVENT_SNAPSHOT_TAKEN, .index = 6, .term = 2};
    assert_int_equal(h_step(h, &snap), 0);
    struct mr_raft_status st;
    mr_raft_status(&h->r, &st);
    assert_int_equal(st.persisted, 6);
    assert_int_equal(st.first_index, 4);
    assert_int_equal(mr_raft_log_evict(&h->r, 0, NO_LIMIT), 0);
    /* the write lands: now they can go */
    h_persist_to(h, 6);
    assert_int_equal(mr_raft_log_evict(&h->r, 0, NO_LIMIT), 6);
    for (mr_index i = 4; i <= 6; i++) assert_evicted(h, i, 2);
    mr_rcbuf_unref(d);
    h_free(h);
}

static void
test_evict_load_counts_resident_bytes_and_refuses_evicted_entries(void **state)
{
    (void)state;
    struct mr_raft_options o;
    h_init_opts(&o, 1);
    struct mr_rcbuf *cfg = config_of_voters(3);
    struct mr_rcbuf *d = mr_rcbuf_copy("payload", 7);
    struct mr_raft_entry e[3] = {
        {.term = 1, .index = 1, .type = MR_RAFT_ENTRY_CONFIG, .data = cfg},
        {.term = 1, .index = 2, .type = MR_RAFT_ENTRY_NORMAL, .data = d},
        {.term = 1, .index = 3, .type = MR_RAFT_ENTRY_NORMAL, .data = d},
    };
    struct mr_raft_persisted p = {.term = 1, .entries = e, .n_entries = 3, .commit = 3};
    struct mr_raft r;
    assert_int_equal(mr_raft_init(&r, &o), 0);
    assert_int_equal(mr_raft_load(&r, &p, NULL), 0);
    assert_int_equal(mr_raft_log_resident_bytes(&r), cfg->len + 14);
    mr_raft_close(&r);
    e[2].data = NULL;
    e[2].evicted = 1;
    e[2].evicted_len = 7;
    char err[MR_ERRMSG_SIZE];
    assert_int_equal(mr_raft_init(&r, &o), 0);
    assert_int_equal(mr_raft_load(&r, &p, err), MR_EINVAL);
    assert_non_null(strstr(err, "evicted"));
    mr_raft_close(&r);
    mr_rcbuf_unref(cfg);
    mr_rcbuf_unref(d);
}

static void test_evict_append_to_a_lagging_follower_carries_evicted_entries(void **state)
{
    (void)state;
    struct mr_raft_options o;
    h_init_opts(&o, 1);
    o.max_append_entries = 100;
    o.max_append_bytes = 10;
    o.max_inflight = 100;
    struct h *h = h_new_opts(3, &o);
    h_make_leader(h);
    for (int i = 0; i < 6; i++) h_propose(h, "12345", NULL); /* 3..8, persisted */
    h_ack(h, 2, 8);
    assert_int_equal(h->applied, 8);
    assert_int_equal(mr_raft_log_evict(&h->r, 0, NO_LIMIT), 30);
    h_clear(h);
    /* follower 3 matches only 1..2: it gets 3..8 in batches of two entries
     * (10 bytes as evicted_len counts), none with a payload in memory */
    h_ack(h, 3, 2);
    assert_int_equal(h_count(h, MR_RAFT_MSG_APPEND, 3), 3);
    for (unsigned k = 0; k < h->n; k++) {
        const struct mr_raft_msg *a = &h->msgs[k];
        if (a->type != MR_RAFT_MSG_APPEND) continue;
        assert_int_equal(a->n_entries, 2);
        for (uint32_t i = 0; i < a->n_entries; i++) {
            assert_int_equal(a->entries[i].index, a->index + 1 + i);
            assert_int_equal(a->entries[i].evicted, 1);
            assert_null(a->entries[i].data);
            assert_int_equal(a->entries[i].evicted_len, 5);
        }
    }
    struct mr_raft_msg *m = h_find(h, MR_RAFT_MSG_APPEND, 3);
    assert_int_equal(m->index, 2);
    /* what the host must do before it sends: fill from its WAL */
    struct mr_raft_msg filled = *m;
    struct mr_raft_entry ents[2];
    memcpy(ents, m->entries, sizeof(ents));
    filled.entries = ents;
    /* a receiver refuses an entry that was not filled */
    struct h *f = h_new_no_cq(3);
    h_clear(f);
    f->r.id = 3; /* the message is addressed to node 3 */
    struct mr_raft_entry noop = {
        .term = h->r.term, .index = 2, .type = MR_RAFT_ENTRY_NOOP};
    h_recv(f, (struct mr_raft_msg){.type = MR_RAFT_MSG_APPEND,
                                   .from = 1,
                                   .term = h->r.term,
                                   .index = 1,
                                   .log_term = 1,
                                   .n_entries = 1,
                                   .entries = &noop});
    assert_int_equal(last_index(f), 2);
    filled.from = 1;
    assert_int_equal(h_recv(f, filled), MR_EMALFORMED);
    assert_int_equal(last_index(f), 2);
    for (int i = 0; i < 2; i++) {
        ents[i].data = mr_rcbuf_copy("12345", 5);
        ents[i].evicted = 0;
    }
    assert_int_equal(h_recv(f, filled), 0);
    assert_int_equal(last_index(f), 4);
    for (int i = 0; i < 2; i++) mr_rcbuf_unref(ents[i].data);
    h_free(f);
    h_free(h);
}

static void test_evict_ready_never_hands_out_evicted_entries(void **state)
{
    (void)state;
    /* follower: entries arrive ahead of the commit; everything allowed is
     * evicted after every step; the entries that commit later still come
     * out whole (h_step asserts that no ready entry is evicted) */
    struct h *h = h_new_no_cq(3);
    struct mr_rcbuf *d = mr_rcbuf_copy("zz", 2);
    mr_index prev = 1;
    for (mr_index i = 2; i <= 20; i++) {
        struct mr_raft_entry e = {
            .term = 2, .index = i, .type = MR_RAFT_ENTRY_NORMAL, .data = d};
        h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_APPEND,
                                       .from = 2,
                                       .term = 2,
                                       .index = prev,
                                       .log_term = prev == 1 ? 1 : 2,
                                       .commit = i > 5 ? i - 5 : 1,
                                       .n_entries = 1,
                                       .entries = &e});
        prev = i;
        mr_raft_log_evict(&h->r, 0, NO_LIMIT);
        assert_int_equal(mr_raft_log_resident_bytes(&h->r), resident_by_scan(h));
        for (mr_index k = 2; k <= i; k++) {
            const struct mr_raft_entry *x = mr_raft_entry_at(&h->r, k);
            assert_int_equal(x->evicted, k <= h->applied);
        }
    }
    assert_int_equal(h->applied, 15);
    /* commit jumps: 16..20 come out with their payloads */
    h_recv(h, (struct mr_raft_msg){
                  .type = MR_RAFT_MSG_HEARTBEAT, .from = 2, .term = 2, .commit = 20});
    assert_int_equal(h->applied, 20);
    mr_rcbuf_unref(d);
    h_free(h);
}

static void test_snapshot_failed_install_keeps_the_log_and_sends_no_ack(void **state)
{
    (void)state;
    struct h *h = h_follower_with_log();
    struct mr_rcbuf *cfg = config_of_voters(4);
    h_recv_snapshot(h, 50, 3, cfg);
    assert_true(h->has_snapshot);
    h_clear(h);
    assert_int_equal(h_install_answer(h, MR_RAFT_EVENT_SNAPSHOT_FAILED, 50, 3), 0);
    /* no acknowledgement: the leader must not believe we hold index 50 */
    assert_null(h_find(h, MR_RAFT_MSG_SNAPSHOT_RESP, 2));
    assert_int_equal(h->n, 0);
    assert_log_kept(h);
    /* the follower goes on with its own log: appends after it are accepted */
    struct mr_raft_entry e = {.term = 3, .index = 4, .type = MR_RAFT_ENTRY_NORMAL};
    h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_APPEND,
                                   .from = 2,
                                   .term = 3,
                                   .index = 3,
                                   .log_term = 2,
                                   .commit = 4,
                                   .n_entries = 1,
                                   .entries = &e});
    struct mr_raft_msg *m = h_find(h, MR_RAFT_MSG_APPEND_RESP, 2);
    assert_non_null(m);
    assert_int_equal(m->reject, 0);
    assert_int_equal(m->index, 4);
    assert_int_equal(h->applied, 4);
    /* the leader's retry is a new request, and this time it works */
    h_clear(h);
    h_recv_snapshot(h, 50, 3, cfg);
    assert_true(h->has_snapshot);
    assert_null(h_find(h, MR_RAFT_MSG_SNAPSHOT_RESP, 2));
    assert_int_equal(h_install_answer(h, MR_RAFT_EVENT_SNAPSHOT_INSTALLED, 50, 3), 0);
    m = h_find(h, MR_RAFT_MSG_SNAPSHOT_RESP, 2);
    assert_non_null(m);
    assert_int_equal(m->index, 50);
    assert_int_equal(h->r.commit, 50);
    mr_rcbuf_unref(cfg);
    h_free(h);
}

/* ---- ticks --------------------------------------------------------------------------
 */

static int h_tick_many(struct h *h, uint64_t n)
{
    struct mr_raft_event ev = {.type = MR_RAFT_EVENT_TICK, .n_ticks = n};
    return h_step(h, &ev);
}

static void test_tick_reporting_many_ticks_advances_the_clocks_at_once(void **state)
{
    (void)state;
    /* a follower whose host stalled for longer than the election timeout
     * campaigns on the first TICK after the stall */
    struct h *f = h_new(3);
    uint64_t t0 = f->r.ticks;
    h_tick_many(f, 70);
    assert_int_equal(f->r.ticks, t0 + 70);
    assert_int_equal(f->r.state, MR_RAFT_PRECANDIDATE);
    h_free(f);
    /* a leader: one heartbeat round per peer, not one per elapsed tick */
    struct h *h = h_new(3);
    h_make_leader(h);
    h_ack(h, 2, last_index(h));
    h_clear(h);
    t0 = h->r.ticks;
    h_tick_many(h, 70);
    assert_int_equal(h->r.ticks, t0 + 70);
    assert_int_equal(h_count(h, MR_RAFT_MSG_HEARTBEAT, 2), 1);
    assert_int_equal(h_count(h, MR_RAFT_MSG_HEARTBEAT, 3), 1);
    h_free(h);
}

/* ---- reads ------------------------------------------------------------------------- */

static void test_read_index_needs_a_round_sent_after_the_read(void **state)
{
    (void)state;
    struct h *h = h_new(3);
    h_make_leader(h);
    h_ack(h, 2, last_index(h));
    h_clear(h);
    h_tick(h, 1); /* periodic heartbeat: round k */
    struct mr_raft_msg *hb = h_find(h, MR_RAFT_MSG_HEARTBEAT, 2);
    assert_non_null(hb);
    uint64_t k = hb->ctx;
    h_clear(h);
    struct mr_raft_event rd = {.type = MR_RAFT_EVENT_READ_INDEX, .ctx = 77};
    assert_int_equal(h_step(h, &rd), 0);
    /* round k left before the read arrived: its acks prove nothing */
    h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_HEARTBEAT_RESP,
                                   .from = 2,
                                   .term = h->r.term,
                                   .ctx = k});
    assert_int_equal(h->n_reads, 0);
    hb = h_find(h, MR_RAFT_MSG_HEARTBEAT, 3);
    assert_non_null(hb); /* the next round started at once */
    assert_int_equal(hb->ctx, k + 1);
    h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_HEARTBEAT_RESP,
                                   .from = 3,
                                   .term = h->r.term,
                                   .ctx = k + 1});
    assert_int_equal(h->n_reads, 1);
    assert_int_equal(h->reads[0].ctx, 77);
    assert_int_equal(h->reads[0].status, 0);
    assert_int_equal(h->reads[0].index, h->r.commit);
    h_free(h);
}

static void test_read_index_waits_for_the_leader_to_commit_in_its_term(void **state)
{
    (void)state;
    struct h *h = h_new(3);
    h_make_leader(h);
    h_clear(h);
    struct mr_raft_event rd = {.type = MR_RAFT_EVENT_READ_INDEX, .ctx = 5};
    assert_int_equal(h_step(h, &rd), 0);
    h_tick(h, 1);
    for (unsigned i = 0; i < h->n; i++)
        if (h->msgs[i].type == MR_RAFT_MSG_HEARTBEAT)
            h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_HEARTBEAT_RESP,
                                           .from = h->msgs[i].to,
                                           .term = h->r.term,
                                           .ctx = h->msgs[i].ctx});
    assert_int_equal(h->n_reads, 0); /* the no-op has not committed */
    h_ack(h, 2, last_index(h));
    h_tick(h, 1);
    for (unsigned i = 0; i < h->n; i++)
        if (h->msgs[i].type == MR_RAFT_MSG_HEARTBEAT)
            h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_HEARTBEAT_RESP,
                                           .from = h->msgs[i].to,
                                           .term = h->r.term,
                                           .ctx = h->msgs[i].ctx});
    assert_int_equal(h->n_reads, 1);
    assert_int_equal(h->reads[0].index, last_index(h));
    h_free(h);
}

static void test_read_pending_reads_fail_when_the_leader_steps_down(void **state)
{
    (void)state;
    struct h *h = h_new(3);
    h_make_leader(h);
    h_ack(h, 2, last_index(h));
    h_clear(h);
    struct mr_raft_event rd = {.type = MR_RAFT_EVENT_READ_INDEX, .ctx = 9};
    h_step(h, &rd);
    h_tick(h, 25); /* nobody answers: check-quorum */
    assert_int_equal(h->r.state, MR_RAFT_FOLLOWER);
    assert_int_equal(h->n_reads, 1);
    assert_int_equal(h->reads[0].status, MR_ENOTLEADER);
    /* a follower without a leader cannot serve */
    assert_int_equal(h_step(h, &rd), MR_ENOLEADER);
    h_free(h);
}

/* ---- membership -----------------------------------------------------------------------
 */

static void test_membership_changes_wait_for_the_term_and_for_each_other(void **state)
{
    (void)state;
    struct h *h = h_new(3);
    struct mr_raft_event ch = {.type = MR_RAFT_EVENT_CHANGE_MEMBERS,
                               .change = MR_RAFT_ADD_LEARNER,
                               .node = 4,
                               .context = "raft=127.0.0.1:7004"};
    assert_int_equal(h_step(h, &ch), MR_ENOTLEADER);
    h_make_leader(h);
    assert_int_equal(h_step(h, &ch), MR_EBUSY); /* no-op not committed yet */
    h_ack(h, 2, last_index(h));
    assert_int_equal(h_step(h, &ch), 0);
    assert_int_equal(ch.out_index, last_index(h));
    /* in effect as soon as appended */
    assert_non_null(mr_raft_config_get(&h->r.config, 4));
    assert_int_equal(h->r.n_progress, 4);
    struct mr_raft_event ch2 = {
        .type = MR_RAFT_EVENT_CHANGE_MEMBERS, .change = MR_RAFT_REMOVE, .node = 3};
    assert_int_equal(h_step(h, &ch2), MR_EBUSY);
    h_ack(h, 2, last_index(h));
    assert_int_equal(h_step(h, &ch2), 0);
    struct mr_raft_event bad = {
        .type = MR_RAFT_EVENT_CHANGE_MEMBERS, .change = MR_RAFT_PROMOTE, .node = 9};
    h_ack(h, 2, last_index(h));
    assert_int_equal(h_step(h, &bad), MR_ENOTFOUND);
    bad.change = MR_RAFT_PROMOTE;
    bad.node = 2;
    assert_int_equal(h_step(h, &bad), MR_EINVAL); /* already a voter */
    h_free(h);
}

static void test_membership_truncated_configuration_entry_is_reverted(void **state)
{
    (void)state;
    struct h *h = h_new_no_cq(3);
    struct mr_raft_config c;
    mr_raft_config_init(&c);
    for (mr_node_id i = 1; i <= 4; i++) mr_raft_config_add(&c, i, MR_RAFT_VOTER, "x");
    struct mr_rcbuf *cfg = mr_raft_config_encode(&c);
    struct mr_raft_entry e[2] = {
        {.term = 2, .index = 2, .type = MR_RAFT_ENTRY_NOOP},
        {.term = 2, .index = 3, .type = MR_RAFT_ENTRY_CONFIG, .data = cfg}};
    h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_APPEND,
                                   .from = 2,
                                   .term = 2,
                                   .index = 1,
                                   .log_term = 1,
                                   .commit = 1,
                                   .n_entries = 2,
                                   .entries = e});
    assert_int_equal(h->r.config.n, 4);
    assert_int_equal(h->r.config_index, 3);
    struct mr_raft_entry f[1] = {{.term = 3, .index = 3, .type = MR_RAFT_ENTRY_NOOP}};
    h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_APPEND,
                                   .from = 3,
                                   .term = 3,
                                   .index = 2,
                                   .log_term = 2,
                                   .commit = 1,
                                   .n_entries = 1,
                                   .entries = f});
    assert_int_equal(h->r.config.n, 3);
    assert_int_equal(h->r.config_index, 1);
    mr_rcbuf_unref(cfg);
    mr_raft_config_close(&c);
    h_free(h);
}

static void test_transfer_sends_timeout_now_once_the_target_caught_up(void **state)
{
    (void)state;
    struct h *h = h_new(3);
    h_make_leader(h);
    h_ack(h, 2, last_index(h));
    h_clear(h);
    struct mr_raft_event t = {.type = MR_RAFT_EVENT_TRANSFER_LEADER, .node = 3};
    assert_int_equal(h_step(h, &t), 0);
    assert_null(h_find(h, MR_RAFT_MSG_TIMEOUT_NOW, 3)); /* 3 is behind */
    assert_int_equal(h_propose(h, "during", NULL), MR_EBUSY);
    h_ack(h, 3, last_index(h));
    assert_non_null(h_find(h, MR_RAFT_MSG_TIMEOUT_NOW, 3));
    /* it times out if the target never takes over */
    h_tick(h, 11);
    assert_int_equal(h_propose(h, "after", NULL), 0);
    h_free(h);
}

/* Node 2 acknowledges the last heartbeat round the leader sent. */
static void h_ack_heartbeat(struct h *h)
{
    h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_HEARTBEAT_RESP,
                                   .from = 2,
                                   .term = h->r.term,
                                   .ctx = h->r.read_round});
}

/* Steps a lease READ_INDEX; 1 if it was answered at once. */
static int h_lease_read(struct h *h, uint64_t ctx)
{
    struct mr_raft_event rd = {
        .type = MR_RAFT_EVENT_READ_INDEX, .ctx = ctx, .is_lease = 1};
    assert_int_equal(h_step(h, &rd), 0);
    for (unsigned i = 0; i < h->n_reads; i++)
        if (h->reads[i].ctx == ctx) return h->reads[i].status == 0;
    return 0;
}

static void test_read_lease_lasts_two_fifths_of_the_election_timeout(void **state)
{
    (void)state;
    struct h *h = h_new(3); /* election_min 10 ticks: a lease of 4 */
    h_make_leader(h);
    h_ack(h, 2, last_index(h));
    h_clear(h);
    h_tick(h, 1);
    h_ack_heartbeat(h); /* the round sent at this tick */
    for (uint64_t d = 0; d < 4; d++) {
        assert_true(h_lease_read(h, 100 + d));
        h_tick(h, 1); /* more rounds leave, nobody answers */
    }
    /* 4 ticks after the acknowledged round left: a follower clock running
     * twice as fast has counted 8 of its 10 and still refuses votes, but the
     * lease is over (it used to last election_min - 2 = 8 ticks) */
    assert_false(h_lease_read(h, 200));
    h_free(h);
}

static void test_read_no_lease_for_the_rest_of_a_term_once_timeout_now_left(void **state)
{
    (void)state;
    struct h *h = h_new(3);
    h_make_leader(h);
    h_ack(h, 2, last_index(h));
    h_ack(h, 3, last_index(h));
    h_clear(h);
    h_tick(h, 1);
    h_ack_heartbeat(h);
    assert_true(h_lease_read(h, 1)); /* the lease works */
    struct mr_raft_event t = {.type = MR_RAFT_EVENT_TRANSFER_LEADER, .node = 3};
    assert_int_equal(h_step(h, &t), 0);
    assert_non_null(h_find(h, MR_RAFT_MSG_TIMEOUT_NOW, 3));
    /* node 3 may now win votes that our lease would have refused; the
     * transfer is aborted after election_min ticks, 3 may lead by then */
    h_tick(h, 11);
    assert_int_equal(h->r.transferee, 0);
    assert_int_equal(h->r.state, MR_RAFT_LEADER);
    h_clear(h);
    h_ack_heartbeat(h);
    assert_false(h_lease_read(h, 2)); /* falls back to a heartbeat round */
    h_ack_heartbeat(h);
    assert_int_equal(h->n_reads, 1);
    assert_int_equal(h->reads[0].ctx, 2);
    assert_int_equal(h->reads[0].status, 0);
    h_free(h);
}

/* ---- robustness -----------------------------------------------------------------------
 */

/* Fails the n-th allocation for every n until a full run needs no failure:
 * the core returns errors, never crashes, never leaks. */
static void test_core_survives_every_allocation_failure(void **state)
{
    (void)state;
    for (unsigned long n = 1; n < 2000; n++) {
        long live = mr_alloc_live();
        struct mr_raft_options o;
        h_init_opts(&o, 1);
        struct mr_raft r;
        mr_alloc_fail_at(n, 0);
        int failed = 0;
        if (mr_raft_init(&r, &o) != 0) failed = 1;
        struct mr_raft_config c;
        mr_raft_config_init(&c);
        for (mr_node_id i = 1; i <= 3; i++)
            if (mr_raft_config_add(&c, i, MR_RAFT_VOTER, "x") != 0) failed = 1;
        if (!failed && mr_raft_bootstrap(&r, &c) != 0) failed = 1;
        for (int i = 0; i < 60 && !failed; i++) {
            struct mr_raft_ready rd;
            struct mr_raft_event ev = {.type = MR_RAFT_EVENT_TICK};
            if (i == 40 && r.state == MR_RAFT_PRECANDIDATE) {
                struct mr_raft_msg m = {.type = MR_RAFT_MSG_PREVOTE_RESP,
                                        .from = 2,
                                        .to = 1,
                                        .term = r.term + 1};
                ev = (struct mr_raft_event){.type = MR_RAFT_EVENT_RECEIVE, .msg = &m};
                mr_raft_step(&r, &ev, &rd);
            } else if (i == 41 && r.state == MR_RAFT_CANDIDATE) {
                struct mr_raft_msg m = {
                    .type = MR_RAFT_MSG_VOTE_RESP, .from = 2, .to = 1, .term = r.term};
                ev = (struct mr_raft_event){.type = MR_RAFT_EVENT_RECEIVE, .msg = &m};
                mr_raft_step(&r, &ev, &rd);
            } else if (i > 41 && r.state == MR_RAFT_LEADER) {
                struct mr_rcbuf *b = mr_rcbuf_copy("abc", 3);
                ev = (struct mr_raft_event){.type = MR_RAFT_EVENT_PROPOSE, .data = b};
                mr_raft_step(&r, &ev, &rd);
                mr_rcbuf_unref(b);
                mr_raft_ready_release(&rd);
                struct mr_raft_msg m = {.type = MR_RAFT_MSG_APPEND_RESP,
                                        .from = 2,
                                        .to = 1,
                                        .term = r.term,
                                        .index = r.log.offset + r.log.n};
                ev = (struct mr_raft_event){.type = MR_RAFT_EVENT_RECEIVE, .msg = &m};
                mr_raft_step(&r, &ev, &rd);
                mr_raft_ready_release(&rd);
                ev = (struct mr_raft_event){.type = MR_RAFT_EVENT_READ_INDEX, .ctx = 1};
                mr_raft_step(&r, &ev, &rd);
            } else {
                mr_raft_step(&r, &ev, &rd);
            }
            mr_raft_ready_release(&rd);
        }
        mr_alloc_fail_at(0, 0);
        mr_raft_config_close(&c);
        mr_raft_close(&r);
        assert_int_equal(mr_alloc_live(), live);
    }
}

/* A follower under allocation failures keeps its log and its configuration
 * in step (the configuration is the latest CONFIG entry in the log). */
static void
test_core_follower_keeps_log_and_configuration_in_step_without_memory(void **state)
{
    (void)state;
    struct mr_raft_config c4;
    mr_raft_config_init(&c4);
    for (mr_node_id i = 1; i <= 4; i++) mr_raft_config_add(&c4, i, MR_RAFT_VOTER, "x");
    struct mr_rcbuf *cfg = mr_raft_config_encode(&c4);
    struct mr_rcbuf *d = mr_rcbuf_copy("data", 4);
    struct mr_raft_entry e[3] = {
        {.term = 2, .index = 2, .type = MR_RAFT_ENTRY_NOOP},
        {.term = 2, .index = 3, .type = MR_RAFT_ENTRY_CONFIG, .data = cfg},
        {.term = 2, .index = 4, .type = MR_RAFT_ENTRY_NORMAL, .data = d},
    };
    for (unsigned long n = 1; n < 200; n++) {
        long live = mr_alloc_live();
        struct h *h = h_new_no_cq(3);
        mr_alloc_fail_at(n, 0);
        for (int round = 0; round < 3; round++) /* retransmissions */
            h_recv(h, (struct mr_raft_msg){.type = MR_RAFT_MSG_APPEND,
                                           .from = 2,
                                           .term = 2,
                                           .index = 1,
                                           .log_term = 1,
                                           .commit = 1,
                                           .n_entries = 3,
                                           .entries = e});
        mr_alloc_fail_at(0, 0);
        mr_index want = last_index(h) >= 3 ? 3 : 1;
        assert_int_equal(h->r.config_index, want);
        assert_int_equal(h->r.config.n, want == 3 ? 4 : 3);
        h_free(h);
        assert_int_equal(mr_alloc_live(), live);
    }
    mr_rcbuf_unref(cfg);
    mr_rcbuf_unref(d);
    mr_raft_config_close(&c4);
}

/* STYLE 8: bytes from the network never trip an assertion. Random (mostly
 * plausible) messages hit a leader and a follower; the core may reject them
 * but keeps its invariants. */
static void test_core_survives_random_messages(void **state)
{
    (void)state;
    struct mr_rand rnd;
    mr_rand_seed(&rnd, 7);
    struct mr_raft_config c;
    mr_raft_config_init(&c);
    for (mr_node_id i = 1; i <= 3; i++) mr_raft_config_add(&c, i, MR_RAFT_VOTER, "x");
    struct mr_rcbuf *good_cfg = mr_raft_config_encode(&c);
    struct mr_rcbuf *bad_cfg = mr_rcbuf_copy("\x01\x02\x00\x00\x00", 5);
    struct mr_rcbuf *payload = mr_rcbuf_copy("p", 1);
    unsigned long accepted = 0;
    for (int round = 0; round < 2; round++) {
        struct h *h = h_new(3);
        if (round == 0) {
            h_make_leader(h);
            h_ack(h, 2, last_index(h));
        }
        for (int i = 0; i < 20000; i++) {
            struct mr_raft_entry ents[4];
            mr_term t = h->r.term + mr_rand_below(&rnd, 3);
            if (t > 0 && mr_rand_below(&rnd, 3) == 0) t -= 1;
            struct mr_raft_msg m = {
                .type = (uint8_t)(1 + mr_rand_below(&rnd, MR_RAFT_MSG_TYPE_MAX + 1)),
                .from = 2 + mr_rand_below(&rnd, 3), /* 4 is not a member */
                .term = t,
                .index = mr_rand_below(&rnd, last_index(h) + 5),
                .log_term = mr_rand_below(&rnd, h->r.term + 2),
                .commit = mr_rand_below(&rnd, last_index(h) + 10),
                .reject = (uint8_t)mr_rand_below(&rnd, 2),
                .reject_hint = mr_rand_below(&rnd, last_index(h) + 3),
                .hint_term = mr_rand_below(&rnd, h->r.term + 2),
                .ctx = mr_rand_below(&rnd, h->r.read_round + 3),
                .snap_index = mr_rand_below(&rnd, last_index(h) + 20),
                .snap_term = mr_rand_below(&rnd, h->r.term + 2),
                .snap_config = mr_rand_below(&rnd, 2) ? good_cfg : bad_cfg,
            };
            if (m.type == MR_RAFT_MSG_APPEND && mr_rand_below(&rnd, 2)) {
                uint32_t n = 1 + (uint32_t)mr_rand_below(&rnd, 4);
                mr_term et = m.log_term;
                for (uint32_t k = 0; k < n; k++) {
                    if (mr_rand_below(&rnd, 3) == 0 && et < m.term) et++;
                    ents[k] = (struct mr_raft_entry){
                        .term = et ? et : 1,
                        .index = m.index + 1 + k,
                        .type = (uint8_t)(1 + mr_rand_below(&rnd, 3)),
                        .data = payload,
                    };
                    if (ents[k].type == MR_RAFT_ENTRY_CONFIG)
                        ents[k].data = mr_rand_below(&rnd, 2) ? good_cfg : bad_cfg;
                }
                m.entries = ents;
                m.n_entries = n;
            }
            mr_term before = h->r.term;
            int rv = h_recv(h, m);
            assert_true(rv == 0 || rv == MR_EMALFORMED || rv == MR_EPROTO);
            if (rv == 0) accepted++;
            assert_true(h->r.term >= before);
            assert_true(h->r.commit <= last_index(h));
            if (i % 16 == 0) h_tick(h, 1);
            if (i % 64 == 0) h_clear(h);
        }
        h_free(h);
    }
    assert_true(accepted > 20000); /* most of them reached the protocol */
    mr_rcbuf_unref(good_cfg);
    mr_rcbuf_unref(bad_cfg);
    mr_rcbuf_unref(payload);
    mr_raft_config_close(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_core_init_rejects_bad_options),
        cmocka_unit_test(test_core_bootstrap_writes_the_configuration_at_index_1),
        cmocka_unit_test(test_core_load_restores_state_and_rejects_gaps),
        cmocka_unit_test(test_core_load_with_a_commit_hint_keeps_a_removed_server_quiet),
        cmocka_unit_test(test_config_roundtrips_and_rejects_every_malformed_input),
        cmocka_unit_test(test_election_traces_explain_each_decision),
        cmocka_unit_test(test_election_first_timeout_after_a_start),
        cmocka_unit_test(test_election_grants_one_vote_per_term),
        cmocka_unit_test(test_election_rejects_a_candidate_with_an_older_log),
        cmocka_unit_test(test_election_prevote_does_not_change_terms),
        cmocka_unit_test(
            test_election_check_quorum_leader_ignores_votes_and_steps_down_alone),
        cmocka_unit_test(test_election_stale_leader_learns_the_new_term),
        cmocka_unit_test(
            test_replication_leader_sends_before_its_write_and_counts_itself_after),
        cmocka_unit_test(test_replication_follower_acks_only_after_persisting),
        cmocka_unit_test(test_replication_pipelines_within_the_inflight_window),
        cmocka_unit_test(test_replication_deferred_proposals_go_out_together_on_flush),
        cmocka_unit_test(test_replication_committed_entries_come_out_in_slices),
        cmocka_unit_test(test_replication_batches_are_capped_by_count_and_bytes),
        cmocka_unit_test(test_replication_backtracks_fast_with_the_conflict_hint),
        cmocka_unit_test(test_replication_follower_truncates_a_conflicting_suffix),
        cmocka_unit_test(test_replication_rejects_malformed_messages),
        cmocka_unit_test(test_snapshot_compacts_and_is_sent_to_a_follower_that_needs_it),
        cmocka_unit_test(
            test_evict_drops_only_durable_applied_entries_up_to_the_bound_and_budget),
        cmocka_unit_test(
            test_evict_resident_bytes_follow_append_truncate_compact_and_install),
        cmocka_unit_test(
            test_evict_load_counts_resident_bytes_and_refuses_evicted_entries),
        cmocka_unit_test(
            test_evict_spares_entries_a_snapshot_covers_before_the_wal_holds_them),
        cmocka_unit_test(test_evict_append_to_a_lagging_follower_carries_evicted_entries),
        cmocka_unit_test(test_evict_ready_never_hands_out_evicted_entries),
        cmocka_unit_test(
            test_snapshot_install_is_acknowledged_only_once_the_host_installed_it),
        cmocka_unit_test(test_snapshot_failed_install_keeps_the_log_and_sends_no_ack),
        cmocka_unit_test(test_tick_reporting_many_ticks_advances_the_clocks_at_once),
        cmocka_unit_test(test_read_index_needs_a_round_sent_after_the_read),
        cmocka_unit_test(test_read_index_waits_for_the_leader_to_commit_in_its_term),
        cmocka_unit_test(test_read_pending_reads_fail_when_the_leader_steps_down),
        cmocka_unit_test(test_membership_changes_wait_for_the_term_and_for_each_other),
        cmocka_unit_test(test_membership_truncated_configuration_entry_is_reverted),
        cmocka_unit_test(test_transfer_sends_timeout_now_once_the_target_caught_up),
        cmocka_unit_test(test_read_lease_lasts_two_fifths_of_the_election_timeout),
        cmocka_unit_test(test_read_no_lease_for_the_rest_of_a_term_once_timeout_now_left),
        cmocka_unit_test(test_core_survives_random_messages),
        cmocka_unit_test(test_core_survives_every_allocation_failure),
        cmocka_unit_test(
            test_core_follower_keeps_log_and_configuration_in_step_without_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
