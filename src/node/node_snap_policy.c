/* node_snap_policy: when a node takes its next snapshot (pure: no I/O).
 *
 * A snapshot rewrites the whole state, so what it costs is the state's size,
 * paid once per snapshot; the log it lets the node drop is what the writes
 * since the last one added. Triggering by entry count alone makes a state
 * that grows under sustained writes (new keys) be rewritten every 10,000
 * entries; gating on a share of the last snapshot (snapshot_log_percent,
 * 25%) bounds that, but a 25% share still rewrites four bytes of state per
 * byte of log: a 20 s run of 64 writers took 12 snapshots per node, each
 * rewriting up to 20 MB on every node at once (issue 14).
 *
 * The log a node keeps between snapshots costs memory and replay time, not
 * only the rewrite: so the larger share (snapshot_log_percent_small, 100%:
 * one byte rewritten per byte of log) applies only while that log stays
 * under snapshot_log_mb, and only for a state of 1 MiB or more. A large
 * state keeps the 25% share, which bounds the log kept as before: at most
 * max(snapshot_log_mb, 25% of the state). */
#include "node/node_int.h"

/* Below this a rewrite costs about what the fork and fsyncs around it do, so
 * the count trigger alone decides (and tests that count on a snapshot every
 * few entries of a tiny state keep it). */
#define SMALL_MIN_BYTES (1u << 20)

/* The members' snapshots, staggered: every node of a cluster applies the same
 * entries, so with one threshold all of them fork, serialize and write their
 * whole state at the same moment. On a machine (or disk) they share, that is
 * three times the CPU and I/O burst at once, and the leader's loop and WAL
 * syncs starve behind it (1M keys, 256 writers: p99 2x that of the same run
 * without snapshots). For a state of 1 MiB or more, each member takes its
 * snapshot at a log STAGGER_PCT% shorter per member ranked before it (by id),
 * so at most one of them usually snapshots at a time and a quorum stays fast.
 * Shorter, not longer: no member keeps more log (memory, replay time at a
 * restart) than before; the lower-ranked ones snapshot a little more often.
 * rank is the node's place among the voters by id (0 for the lowest; capped
 * at STAGGER_MAX_RANK). */
#define STAGGER_PCT 10u
#define STAGGER_MAX_RANK 5u

int mr_node_snap_due(const struct mr_node_options *o, uint64_t entries, uint64_t log_bytes,
                     uint64_t snap_size, unsigned rank)
{
    uint64_t every = o->snapshot_entries ? o->snapshot_entries : 10000;
    uint64_t log_max = (o->snapshot_log_mb ? o->snapshot_log_mb : 32) << 20;
    uint64_t need, small;
    uint64_t share = 100u - STAGGER_PCT * (rank > STAGGER_MAX_RANK ? STAGGER_MAX_RANK : rank);

    /* The triggers: by count, or by bytes (a few large entries, a bulk
     * load, would otherwise sit in memory and in the WAL until the count). */
    if (entries < every && log_bytes < log_max) return 0;
    if (o->snapshot_log_percent == 0 || snap_size == 0) return 1;
    need = snap_size / 100 * o->snapshot_log_percent;
    small = snap_size < SMALL_MIN_BYTES ? 0 : snap_size / 100 * o->snapshot_log_percent_small;
    if (small > log_max) small = log_max;
    if (small > need) need = small;
    /* only where a rewrite costs: a state of 1 MiB or more */
    if (snap_size >= SMALL_MIN_BYTES && rank > 0)
        need = need < UINT64_MAX / 100 ? need * share / 100 : need / 100 * share;
    return log_bytes >= need;
}

int mr_node_snap_trim_due(uint64_t now_ms, uint64_t idle_since_ms, uint64_t pending_since_ms)
{
    /* The log a snapshot let go is refilled by the writes that follow: under
     * sustained writes malloc_trim gives back pages that page faults take
     * again at once, and holds the event loop meanwhile (up to 17 ms with
     * 45,000 entries freed under 64 writers, at every snapshot). Idle, it
     * is free: that is when the memory is worth returning. Idle means for
     * a while: a busy node on a loaded machine has 50 ms gaps too. */
    if (now_ms - idle_since_ms >= MR_NODE_TRIM_IDLE_MS) return 1;
    return now_ms - pending_since_ms >= MR_NODE_TRIM_MAX_DELAY_MS;
}
