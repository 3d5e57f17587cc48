/* sim.h: a simulated cluster of Raft cores for tests.
 *
 * N cores in one process, virtual time (units; every `tick_units` units each
 * live core gets a TICK), a virtual network (delay, drop, duplicate, reorder
 * through random delays, partitions, a per-message filter), a virtual disk
 * per node (writes complete after a random delay, in order; a crash loses the
 * writes not completed), and a simple state machine (a hash chain of applied
 * payloads) on every node. The harness plays the host: it follows the ready
 * rules of raft.h to the letter, takes snapshots and streams them in 1-3
 * chunks (each chunk can be lost, duplicated or delayed; the receiver steps
 * its core only once the whole stream arrived in order). A requested install
 * restores the state machine at once and is reported SNAPSHOT_INSTALLED when
 * its write (snapshot + WAL reset) completes, or fails (sim_fail_installs,
 * fail_install_permille) and is reported SNAPSHOT_FAILED. Each node may run
 * its own clock rate (sim_set_clock).
 *
 * With `evict` the host bounds its in-memory log: after every ready it steps
 * mr_raft_log_evict(evict_max_bytes), and before an APPEND leaves it fills
 * each evicted entry from its durable WAL (an entry that is not there, or
 * differs, is a failure: the core evicted what the host cannot read back).
 * A receiver that gets an evicted entry fails the run as well.
 *
 * Every step is checked: one leader per term, log matching, leader
 * completeness, state machine safety, linearizable read indexes. A
 * violation calls sim_fail(), which prints the seed and the schedule. */
#ifndef MR_TEST_SIM_H
#define MR_TEST_SIM_H

#include "raft/raft.h"

#define SIM_MAX_NODES 8

struct sim_opts {
    unsigned n_voters;   /* bootstrapped voters 1..n_voters */
    unsigned n_spares;   /* extra empty nodes n_voters+1.. (to be added) */
    unsigned tick_units; /* time units per tick */
    unsigned heartbeat_ticks, election_min, election_max;
    unsigned net_min, net_max;   /* message delay in units */
    unsigned disk_min, disk_max; /* write delay in units */
    unsigned drop_permille, dup_permille;
    unsigned slow_permille, slow_max; /* some messages take up to slow_max units */
    unsigned snap_every; /* take a snapshot every n applied entries (0 = never) */
    unsigned trailing;
    unsigned max_inflight, max_append_entries;
    int pre_vote, check_quorum, lease_reads;
    int defer_proposals;    /* sim_propose holds entries until a FLUSH or TICK */
    size_t max_apply_bytes; /* committed entries handed out per ready (0: all) */
    uint64_t seed;
    int trace; /* print core traces (or set env MR_TRACE=1) */
    int keep_traces;
    unsigned isolate_new_leader_permille;
    unsigned fail_install_permille;      /* a requested snapshot install fails */
    int evict;                           /* bounded in-memory log (see above) */
    size_t evict_max_bytes;              /* resident payload bytes the host allows */
    /* cut off a fresh leader at once */ /* keep trace lines for sim_trace_count() */
};

/* Defaults: 3 voters, tick 10 units, heartbeat 1, election 10..20 ticks,
 * net 1..8, disk 1..6, everything on. */
void sim_opts_default(struct sim_opts *o);

typedef int (*sim_filter_cb)(void *arg, const struct mr_raft_msg *m);

struct sim_node;
struct sim;

struct sim *sim_new(const struct sim_opts *o);
void sim_free(struct sim *s);
/* Record a schedule line (printed on failure). */
void sim_log(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Print the seed, the reason and the schedule, then fail the cmocka test. */
void sim_fail(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int sim_failed(const struct sim *s);
/* Print the seed and the schedule so far (used when the core aborts). */
void sim_print_schedule(const struct sim *s);

uint64_t sim_now(const struct sim *s);
void sim_run(struct sim *s, uint64_t units);
/* Runs until cond(s, arg) holds (checked every unit) or max units pass. */
int sim_run_until(struct sim *s, int (*cond)(struct sim *, void *), void *arg,
                  uint64_t max);

unsigned sim_n(const struct sim *s);
struct mr_raft *sim_raft(struct sim *s, mr_node_id id); /* NULL if crashed */
int sim_alive(const struct sim *s, mr_node_id id);
int sim_state(struct sim *s, mr_node_id id);
mr_term sim_term(struct sim *s, mr_node_id id);
mr_index sim_applied(struct sim *s, mr_node_id id);
mr_index sim_commit(struct sim *s, mr_node_id id);
uint64_t sim_hash(struct sim *s, mr_node_id id);
/* The live leader with the highest term, or 0. */
mr_node_id sim_leader(struct sim *s);
/* Waits up to max units for a leader; returns it or 0. */
mr_node_id sim_wait_leader(struct sim *s, uint64_t max);
/* Highest term any node ever had. */
mr_term sim_max_term(struct sim *s);

/* faults */
void sim_crash(struct sim *s, mr_node_id id);
void sim_restart(struct sim *s, mr_node_id id);
/* group[i] is the group of node i+1; nodes in different groups can't talk. */
void sim_partition(struct sim *s, const unsigned *group);
void sim_isolate(struct sim *s, mr_node_id id);
void sim_heal(struct sim *s);
void sim_set_loss(struct sim *s, unsigned drop_permille, unsigned dup_permille);
void sim_set_slow(struct sim *s, unsigned permille);
/* Write delay range for writes issued from now on. */
void sim_set_disk(struct sim *s, unsigned min, unsigned max);
void sim_set_isolate_new_leader(struct sim *s, unsigned permille);
void sim_set_filter(struct sim *s, sim_filter_cb cb, void *arg);
/* Node id's clock: it gets a TICK every tick_units units (0 = the sim's
 * tick_units), e.g. twice the default for a clock running at half speed. */
void sim_set_clock(struct sim *s, mr_node_id id, unsigned tick_units);
/* The next `count` snapshot installs requested from node id's host fail
 * (the host steps SNAPSHOT_FAILED; its state machine stays as it was). */
void sim_fail_installs(struct sim *s, mr_node_id id, unsigned count);
/* Drop every message in flight. */
void sim_flush_network(struct sim *s);

/* host actions: return the core's return code */
/* Steps a FLUSH event on node id (sends what deferred proposals held). */
int sim_flush(struct sim *s, mr_node_id id);
int sim_propose(struct sim *s, mr_node_id id, const char *data, mr_index *index,
                mr_term *term);
int sim_read(struct sim *s, mr_node_id id, int lease, uint64_t *ctx);
int sim_change(struct sim *s, mr_node_id at, int change, mr_node_id node);
int sim_transfer(struct sim *s, mr_node_id at, mr_node_id to);
int sim_step(struct sim *s, mr_node_id id, struct mr_raft_event *ev);

/* results of reads: status of ctx: 1 answered ok (index set), -1 failed, 0 pending */
int sim_read_result(struct sim *s, uint64_t ctx, mr_index *index);
/* Is (index, term) applied on node id? */
int sim_has_applied(struct sim *s, mr_node_id id, mr_index index, mr_term term);
/* Number of trace lines matching substring `needle` emitted by node id (0 = any). */
unsigned sim_trace_count(struct sim *s, mr_node_id id, const char *needle);
/* Number of messages of `type` sent by `from` (0 = any) so far. */
unsigned long sim_sent(struct sim *s, mr_node_id from, int type);

/* Totals over every sim since the program started (to show a randomized
 * run really exercises each mechanism). */
struct sim_stats {
    unsigned long leaders, applied, snapshots_sent, snapshots_installed, changes_ok,
        reads_ok, reads_failed, crashes, truncations, transfers_ok, lease_reads,
        snapshots_failed, evicted_bytes, evicted_filled;
};
extern struct sim_stats sim_stats;

#endif
