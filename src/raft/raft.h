/* raft: the pure, deterministic Raft consensus core.
 *
 * The core is a state machine with one door (STYLE 4): the host feeds it
 * events with mr_raft_step() and gets back one batch ("ready") of work: hard
 * state and entries to persist, messages to send, committed entries to apply,
 * a snapshot to install, reads that became safe. No sockets, files, clocks,
 * threads, Lua or libuv in here; randomness comes from a PRNG seeded through
 * the options, so a simulation replays exactly from a seed.
 *
 * TIME. The core counts logical ticks (MR_RAFT_EVENT_TICK). The host decides
 * what a tick is worth; moonraft's node uses 1 tick = 10 ms, heartbeat_ticks
 * = 5 (50 ms) and an election timeout drawn in [30, 60) ticks (300-600 ms).
 * A TICK event carries how many ticks elapsed (n_ticks): a host whose loop
 * stalled reports the time that passed, measured on a monotonic clock, not
 * the number of timer callbacks, and never more ticks than really passed
 * (the lease below is only safe if the core's clock does not run ahead).
 * The clocks advance at once (one heartbeat round, one check-quorum, at
 * most one election), so a stall shortens a lease and never lengthens it.
 *
 * WHAT MUST BE DURABLE BEFORE WHAT (the host's obligations):
 *   1. Process ready batches in the order they come out of mr_raft_step().
 *      Within a batch: install `snapshot` (if any, see SNAPSHOTS), store the
 *      hard state, then truncate the WAL at entries[0].index and append
 *      `entries` (never leave entries of a term durable while that term is
 *      not).
 *   2. `msgs` may be sent at once (these are a leader's AppendEntries,
 *      heartbeats, snapshots, TimeoutNow, ReadIndex traffic and Pre-Vote:
 *      none of them promises anything about local storage; the leader writes
 *      its own log in parallel with replication, thesis 10.2.1). An APPEND
 *      in `msgs` or `msgs_after` may carry evicted entries (data NULL,
 *      evicted = 1, see struct mr_raft_entry): the host fills each from its
 *      WAL before the message leaves, or drops the message.
 *   3. `msgs_after` MUST NOT leave before the hard state, snapshot and entries
 *      of this batch AND of every earlier batch are durable (votes granted,
 *      vote requests -- they imply a persisted self-vote --, append and
 *      snapshot acknowledgements).
 *   4. When the WAL is durable up to (index, term), step PERSISTED(index,
 *      term). Answer every snapshot install the core requests with exactly
 *      one SNAPSHOT_INSTALLED or SNAPSHOT_FAILED (see SNAPSHOTS). The leader
 *      counts its own vote toward a commit only for entries it was told are
 *      persisted.
 *   5. `committed` entries may be applied at once, in order (they are durable
 *      on a majority), but after the batch's snapshot is installed.
 *      `entries` and `committed` always carry their payloads (never evicted).
 *   6. Release the batch with mr_raft_ready_release() when done with it; a
 *      host that needs a payload longer takes its own mr_rcbuf_ref().
 *
 * DEVIATIONS FROM THE PAPER / THESIS (and why):
 *   - Heartbeats are a separate message (MR_RAFT_MSG_HEARTBEAT) carrying only
 *     commit = min(follower match, leader commit) and a read context, as in
 *     etcd, so that ReadIndex rounds are cheap and never carry entries.
 *   - A follower answers an AppendEntries whose prev index is below its
 *     commit index with its commit index instead of checking the log.
 *   - A node that lost a vote as candidate (a majority rejected it) returns to
 *     follower at once instead of waiting for its election timeout (etcd).
 *   - With check_quorum, a node ignores RequestVote/Pre-Vote while it believes
 *     a leader is alive (heard within election_timeout_min ticks), unless the
 *     request comes from a leadership transfer (thesis 4.2.3 / 6.4 lease), and
 *     also during its first election_timeout_min ticks after start, so that a
 *     restarted follower still honours a lease it may have granted.
 *   - Lease reads assume bounded clock-rate differences (thesis 6.4.1): the
 *     lease lasts 2/5 of election_timeout_min ticks (at least 1) from the
 *     tick at which the heartbeat round a majority acknowledged was sent.
 *     A follower refuses votes for election_timeout_min of its own ticks
 *     after hearing from the leader, so the lease holds while the leader's
 *     clock runs at least lease / (election_min - 1) as fast as any
 *     follower's: with the defaults (election_min 30 ticks = 300 ms, lease
 *     12 ticks = 120 ms) down to 12/29 = 0.42 of the followers' rate; a
 *     leader clock at half the followers' speed is safe.
 *   - After a leader sent TimeoutNow in a term it serves no lease reads for
 *     the rest of that term (they fall back to heartbeat rounds), even if
 *     the transfer is aborted: the target's election (flagged as a transfer)
 *     gets votes from followers that are still inside our lease.
 *   - Snapshot installs are two-phase (the thesis leaves a failed install
 *     open): a received snapshot changes nothing until the host reports it
 *     installed; a failed install leaves log, commit and configuration as
 *     they were and sends no answer, so the leader retries after its
 *     snapshot timeout (below).
 *   - A leader whose peer stays in snapshot state for 2 * election_timeout_max
 *     ticks without an answer falls back to probing (lost snapshot messages).
 *   - A configuration change is refused until the leader has committed an
 *     entry of its own term (fixes the single-server change bug found after
 *     the thesis; see Ongaro's raft-dev post of 2015).
 *   - A server removed by a configuration entry that is not committed yet may
 *     still campaign (votes counted in that new configuration): otherwise a
 *     leader that appended its own removal and crashed, holding the longest
 *     log, could block every election. It steps down once the entry commits.
 *   - A leader elected without any remote vote (a single voter) sends every
 *     message through `msgs_after` until an entry of its term is persisted:
 *     otherwise a crash could lose its term and let it lead the same term
 *     again with different entries (found by the randomized test).
 *   - Promoting a learner is refused (MR_EBUSY) while it is more than
 *     max_append_entries entries behind the leader's last index (thesis
 *     4.2.1: catch up before voting; one batch of slack so that promotion
 *     is possible under steady load).
 *   - Commit is not part of the hard state: after a restart commit starts at
 *     the snapshot index (or at a commit index the host recorded, see
 *     mr_raft_load) and is learned again from the leader. (A restarted
 *     server that was removed may therefore campaign once, see above, unless
 *     its host recorded the removal's commit; it steps down as soon as it
 *     commits anything.)
 *   - A removed server is told (thesis 4.2.3 leaves it to stop by itself or
 *     be disruptive): the leader that removes a follower keeps replicating
 *     to it, as a server of no role that never counts, until it holds the
 *     removing CONFIG entry and acknowledged a heartbeat carrying a commit
 *     at or past it. Its core then has a committed configuration without
 *     itself: it never campaigns again, and its host can say it was removed.
 *     Best effort: a removed server that stays unreachable for
 *     MR_RAFT_DEPARTING_TICKS_FACTOR election timeouts, or whose leader
 *     steps down first, is not told (pre-vote and the lease still keep it
 *     from disrupting anyone).
 *
 * READS. READ_INDEX on the leader queues the read; it comes back in `reads`
 * once a heartbeat round sent after it arrived is acknowledged by a majority
 * (and the leader has committed an entry of its term); many reads share one
 * round. On a follower the request goes to the leader (MR_RAFT_MSG_READ_INDEX)
 * and the answer comes back in `reads` when it returns; if the leader changes
 * meanwhile no answer may come (the host times out), and a duplicated message
 * may be answered twice (the host ignores contexts it no longer waits for).
 * The host serves the read once its state machine has applied `index`.
 * Reads pending on a leader that steps down come back with MR_ENOTLEADER.
 *
 * SNAPSHOTS. The host decides when to snapshot (at an applied index), writes
 * it durably with the configuration effective at that index (the data of the
 * last CONFIG entry it applied, or of the snapshot it installed last), then
 * steps SNAPSHOT_TAKEN; the core compacts its log.
 *
 * Installing a snapshot sent by the leader takes two phases:
 *   1. The host receives the whole file and keeps it aside (not yet its
 *      newest snapshot), then steps RECEIVE with the SNAPSHOT message. If
 *      the core wants it, the ready batch carries SNAPSHOT (snap_index,
 *      snap_term, snap_config); otherwise (it caught up meanwhile, or
 *      answered from its own log) there is none and the host discards the
 *      file. Nothing changed in the core yet: not its log, commit,
 *      configuration, nor any answer to the leader.
 *   2. The host installs: makes the file its snapshot, restores its state
 *      machine from it, and queues the WAL reset (discard the log, next
 *      index snap_index + 1) behind everything it queued before. Then it
 *      steps SNAPSHOT_INSTALLED(index, term): the core drops its log, adopts
 *      the snapshot's configuration, sets commit = applied = snap_index and
 *      acknowledges through `msgs_after` (so the ack leaves once the WAL
 *      reset is durable). Or, if the install failed, the host steps
 *      SNAPSHOT_FAILED(index, term): the core keeps everything, traces why
 *      and does not answer; the leader sends a snapshot again after
 *      2 * election_timeout_max ticks. A host whose state machine was
 *      already replaced when the install failed must stop applying entries
 *      and serving reads until a later install succeeds.
 * While an install is pending the core drops AppendEntries and snapshots
 * (traced), answers heartbeats without moving commit, hands out no
 * committed entries and does not campaign. SNAPSHOT_INSTALLED can fail only
 * with MR_ENOMEM (the install stays pending).
 */
#ifndef MR_RAFT_H
#define MR_RAFT_H

#include "util/util.h"

/* What a log entry carries. */
enum mr_raft_entry_type {
    MR_RAFT_ENTRY_NORMAL = 1, /* a client command for the state machine */
    MR_RAFT_ENTRY_NOOP = 2,   /* appended by a new leader at the start of its term */
    MR_RAFT_ENTRY_CONFIG = 3, /* an encoded cluster configuration (membership) */
};

/* One log entry. `data` is a refcounted payload shared by the log, the WAL,
 * the network and apply (may be NULL for an empty payload). Whoever stores an
 * entry takes its own reference with mr_rcbuf_ref() and drops it when done.
 *
 * EVICTED ENTRIES (a bounded in-memory log, mr_raft_log_evict()): the core
 * may drop the payload of an old entry that is durable in the host's WAL and
 * was already handed out for applying; the entry stays in the log with
 * evicted = 1, data = NULL and evicted_len = the dropped payload's length.
 * Where an entry can be evicted:
 *   - ready.entries (to persist) and ready.committed (to apply): NEVER, every
 *     entry there carries its payload;
 *   - APPEND messages (ready.msgs / msgs_after): MAY. Before such a message
 *     leaves, the host MUST fill every evicted entry from its WAL (data = the
 *     payload read back, a reference the message owns; evicted = 0) and drop
 *     the whole message if it cannot (dropping is always safe: the leader
 *     resends). An evicted entry never goes on the wire; the core rejects a
 *     received entry with evicted != 0 as malformed;
 *   - mr_raft_entry_at(): MAY;
 *   - CONFIG entries are never evicted (membership is read from the log).
 * evicted and evicted_len live in the struct's padding: sizeof stays 32. */
struct mr_raft_entry {
    mr_term term;
    mr_index index;
    uint8_t type;         /* enum mr_raft_entry_type */
    uint8_t evicted;      /* 1: payload dropped from memory (data is NULL) */
    uint32_t evicted_len; /* evicted: the dropped payload's length in bytes */
    struct mr_rcbuf *data;
};

/* Message kinds exchanged between cores (carried by src/net frames). */
enum mr_raft_msg_type {
    MR_RAFT_MSG_APPEND = 1,      /* AppendEntries (n_entries may be 0) */
    MR_RAFT_MSG_APPEND_RESP = 2, /* reject + hints, or the matched index */
    MR_RAFT_MSG_VOTE = 3,        /* RequestVote */
    MR_RAFT_MSG_VOTE_RESP = 4,
    MR_RAFT_MSG_PREVOTE = 5, /* Pre-Vote (thesis 9.6): term is the term it would use */
    MR_RAFT_MSG_PREVOTE_RESP = 6,
    MR_RAFT_MSG_HEARTBEAT = 7, /* leader liveness + commit, carries ctx for ReadIndex */
    MR_RAFT_MSG_HEARTBEAT_RESP = 8,
    MR_RAFT_MSG_SNAPSHOT = 9, /* one chunk of an InstallSnapshot transfer */
    MR_RAFT_MSG_SNAPSHOT_RESP = 10,
    MR_RAFT_MSG_TIMEOUT_NOW = 11, /* leadership transfer: start an election now */
    MR_RAFT_MSG_READ_INDEX = 12,  /* follower asks the leader for a read index */
    MR_RAFT_MSG_READ_INDEX_RESP = 13,
};
#define MR_RAFT_MSG_TYPE_MAX 13

/* One message. A flat struct (like etcd's raftpb.Message): each type uses the
 * fields it needs and leaves the rest zero. src/net encodes every field, so a
 * new field here means a new codec version.
 *
 * Ownership: a message handed to the host in a ready batch owns references to
 * its entries' payloads, `snap_config` and `snap_chunk`; the host drops them by
 * calling mr_raft_msg_release() (or lets the ready batch release them). A
 * message passed to the core in a STEP event is borrowed: the core takes its
 * own references to whatever it keeps. */
struct mr_raft_msg {
    uint8_t type;      /* enum mr_raft_msg_type */
    uint8_t reject;    /* responses: 1 = rejected / vote not granted */
    uint8_t snap_last; /* SNAPSHOT: this is the final chunk */
    uint8_t pad_;
    mr_node_id from;
    mr_node_id to;
    mr_term term;         /* sender's term (PREVOTE: the term it would campaign in) */
    mr_index index;       /* APPEND: prev index; *_RESP: match index; VOTE: last index */
    mr_term log_term;     /* APPEND: prev_log_term; VOTE: last log term */
    mr_index commit;      /* leader's commit index (APPEND, HEARTBEAT) */
    mr_index reject_hint; /* APPEND_RESP reject: follower's conflict index */
    mr_term hint_term;    /* APPEND_RESP reject: term at the conflict index (0 if none) */
    uint64_t ctx;         /* HEARTBEAT: round; READ_INDEX: read ctx; VOTE: 1 = transfer */
    uint32_t n_entries;
    struct mr_raft_entry *entries; /* APPEND: entries after (index, log_term) */
    /* SNAPSHOT: chunk `snap_offset` of the snapshot at (snap_index, snap_term). */
    mr_index snap_index;
    mr_term snap_term;
    uint64_t snap_offset;
    struct mr_rcbuf *snap_config; /* encoded configuration at snap_index (first chunk) */
    struct mr_rcbuf *snap_chunk;  /* bytes of this chunk */
};

/* Exactly what the core puts in each message type (all other fields are 0):
 *   APPEND          index, log_term (the entry before), commit, entries
 *   APPEND_RESP     accept: index = last index now matching the leader's log
 *                   reject: reject=1, index = the rejected prev index,
 *                   reject_hint/hint_term for fast backtracking. A reply to a
 *                   stale leader carries only our (higher) term.
 *   VOTE, PREVOTE   index, log_term = candidate's last entry; ctx = 1 when
 *                   the election comes from a leadership transfer
 *   *VOTE_RESP      reject; term = the campaign term when granted
 *   HEARTBEAT       commit (= min(follower match, leader commit)), ctx = the
 *                   heartbeat round, echoed in HEARTBEAT_RESP.ctx
 *   SNAPSHOT        snap_index, snap_term, snap_config, snap_last = 1. The
 *                   host streams the bytes (snap_chunk, snap_offset,
 *                   snap_last are the host's), and steps the receiver's core
 *                   with the metadata once the whole file is there.
 *   SNAPSHOT_RESP   index = the receiver's matched index (sent once the
 *                   install succeeded), or reject (bad configuration)
 *   TIMEOUT_NOW     nothing but term
 *   READ_INDEX      ctx (the follower's read context)
 *   READ_INDEX_RESP ctx, index = the read index, or reject = 1
 * No field was added to this struct by the core's owner. */

/* Releases the references a message holds (entries' payloads, snap_config,
 * snap_chunk) and frees its `entries` array; leaves the struct zeroed. Only
 * for messages produced by the core (or built by the host with mr_malloc'ed
 * entries holding their own references). NULL-safe. */
void mr_raft_msg_release(struct mr_raft_msg *m);

/* ---- configuration ---------------------------------------------------------- */

enum mr_raft_role_in_config {
    MR_RAFT_VOTER = 1,
    MR_RAFT_LEARNER = 2, /* receives the log, never votes or counts for commit */
};

struct mr_raft_server {
    mr_node_id id; /* never 0 */
    uint8_t role;  /* enum mr_raft_role_in_config */
    char *context; /* opaque NUL-terminated text for the host (addresses) */
};

/* A cluster configuration. Owns `servers` and each server's `context`. */
struct mr_raft_config {
    unsigned n;
    unsigned cap;
    struct mr_raft_server *servers;
};

/* Limits applied when decoding untrusted bytes. */
#define MR_RAFT_CONFIG_MAX_SERVERS 1024
#define MR_RAFT_CONFIG_MAX_CONTEXT 4096 /* bytes per server context */

/* Empty configuration (no allocation). */
void mr_raft_config_init(struct mr_raft_config *c);
/* Frees everything the configuration owns; leaves it empty. */
void mr_raft_config_close(struct mr_raft_config *c);
/* Adds a server; copies `context` (NULL means ""). MR_EINVAL if id is 0 or
 * role invalid, MR_EEXISTS if the id is present, MR_ENOMEM. On error `c` is
 * unchanged. */
int mr_raft_config_add(struct mr_raft_config *c, mr_node_id id, int role,
                       const char *context);
/* Removes server `id`: 0 or MR_ENOTFOUND. */
int mr_raft_config_remove(struct mr_raft_config *c, mr_node_id id);
/* The server with `id`, or NULL. The pointer is borrowed from `c`. */
const struct mr_raft_server *mr_raft_config_get(const struct mr_raft_config *c,
                                                mr_node_id id);
/* Number of voters. */
unsigned mr_raft_config_voters(const struct mr_raft_config *c);
/* Deep copy into `dst` (which must be empty/initialised): 0 or MR_ENOMEM
 * (then `dst` stays empty). */
int mr_raft_config_copy(struct mr_raft_config *dst, const struct mr_raft_config *src);
/* Encodes to a new buffer (refs = 1, caller owns it): format version 1,
 *   u8 version=1, u32 n, then n x (u64 id, u8 role, u32 len, len bytes).
 * NULL on OOM. Little-endian. */
struct mr_rcbuf *mr_raft_config_encode(const struct mr_raft_config *c);
/* Decodes untrusted bytes into `out` (which must be empty/initialised).
 * Validates version, lengths, roles, ids (nonzero, unique), context bytes (no
 * NUL) and the limits above; trailing bytes are an error. Returns 0,
 * MR_EMALFORMED (with the reason in errmsg, which may be NULL) or MR_ENOMEM.
 * On error `out` stays empty. Never asserts on the input. */
int mr_raft_config_decode(const void *buf, size_t len, struct mr_raft_config *out,
                          char *errmsg);

/* ---- options ------------------------------------------------------------------ */

/* STYLE 12: every decision of the core is explained through this callback.
 * `line` is only valid during the call. */
struct mr_tracer {
    void *data;
    void (*emit_cb)(void *data, mr_node_id id, const char *line);
};

struct mr_raft_options {
    mr_node_id id;               /* this node, nonzero */
    unsigned election_min_ticks; /* election timeout drawn in [min, max) */
    unsigned election_max_ticks; /* > min */
    unsigned heartbeat_ticks;    /* >= 1, < election_min_ticks */
    unsigned max_append_entries; /* entries per AppendEntries, >= 1 */
    size_t max_append_bytes;     /* payload bytes per AppendEntries (>= 1 entry always) */
    size_t max_apply_bytes;      /* payload bytes of committed entries per ready (>= 1
                                  * entry always; 0 = all): the host applies a long
                                  * backlog in slices and keeps serving between them */
    unsigned max_inflight;       /* AppendEntries in flight per follower, >= 1 */
    unsigned snapshot_trailing;  /* entries kept behind a snapshot on compaction */
    uint8_t check_quorum;        /* leader steps down without a majority */
    uint8_t pre_vote;            /* thesis 9.6 */
    uint8_t lease_reads;         /* allow READ_INDEX with is_lease (needs check_quorum) */
    uint64_t seed;               /* PRNG seed for election timeouts */
    struct mr_tracer tracer;     /* emit_cb may be NULL */
};

/* A leader stops informing a removed server after this many times
 * election_timeout_max ticks without success (struct mr_raft.departing). */
#define MR_RAFT_DEPARTING_TICKS_FACTOR 10

/* Fills `o` with the defaults for `id` (election 30..60, heartbeat 5, 64
 * entries / 1 MiB per append, 256 inflight, 0 trailing, check_quorum,
 * pre_vote and lease reads on, seed = id). */
void mr_raft_options_default(struct mr_raft_options *o, mr_node_id id);

/* ---- the core ------------------------------------------------------------------ */

enum mr_raft_state {
    MR_RAFT_FOLLOWER = 1,
    MR_RAFT_PRECANDIDATE = 2,
    MR_RAFT_CANDIDATE = 3,
    MR_RAFT_LEADER = 4,
};

/* Peer replication state (etcd's progress states). */
enum mr_raft_progress_state {
    MR_RAFT_PROBE = 1,     /* one AppendEntries at a time, backing off on reject */
    MR_RAFT_REPLICATE = 2, /* pipelined within the inflight window */
    MR_RAFT_SNAPSHOT = 3,  /* waiting for a snapshot transfer */
};

struct mr_raft_progress {
    mr_node_id id;
    uint8_t role;          /* MR_RAFT_VOTER / MR_RAFT_LEARNER, or 0 for the
                              departing server (struct mr_raft.departing) */
    uint8_t state;         /* enum mr_raft_progress_state */
    uint8_t probe_sent;    /* PROBE: one message outstanding */
    uint8_t recent_active; /* heard from it in the current check-quorum window */
    mr_index match;
    mr_index next;
    mr_index pending_snapshot;
    unsigned snap_elapsed;    /* ticks in SNAPSHOT state */
    uint64_t read_ack;        /* highest heartbeat round acknowledged this term */
    uint64_t ack_tick;        /* send tick of that round (lease) */
    uint64_t last_heard_tick; /* core tick when it last answered */
    /* inflight window: ring of last indexes of AppendEntries in flight */
    mr_index *inflight;
    unsigned inflight_start, inflight_count;
};

struct mr_raft_read {
    struct mr_queue link;
    uint64_t ctx;
    mr_node_id from; /* 0 = local request */
    mr_index index;
    uint64_t round; /* heartbeat round that must be acknowledged */
};

struct mr_raft_read_state {
    uint64_t ctx;
    mr_index index; /* safe to read once applied >= index */
    int status;     /* 0, or MR_ENOTLEADER if the read was abandoned */
};

/* The core. Opaque to the host: touch only through the functions below. */
struct mr_raft {
    struct mr_raft_options opts;
    struct mr_rand rand;
    mr_node_id id;
    /* volatile and persisted hard state are kept apart (STYLE 4) */
    mr_term term;
    mr_node_id vote;
    mr_term persisted_term;
    mr_node_id persisted_vote;
    uint8_t state;
    mr_node_id leader;
    uint8_t reported_state;
    mr_node_id reported_leader;
    /* log (raft_log.c) */
    struct {
        struct mr_raft_entry *ring;
        size_t cap, start, n; /* entries at ring[(start + k) % cap] */
        mr_index offset;      /* index of the entry before ring[start] */
        mr_term offset_term;  /* its term (the snapshot's or compaction point) */
        size_t resident;      /* payload bytes held (evicted entries not counted) */
        mr_index evicted_to;  /* eviction cursor: every entry up to here was
                               * looked at by mr_raft_log_evict (>= offset) */
    } log;
    mr_index commit;
    mr_index applied;   /* last index handed out in `committed` */
    mr_index persisted; /* WAL durable up to here (or covered by a snapshot) */
    mr_index wal_persisted; /* highest index reported PERSISTED (or loaded): the
                             * WAL holds every entry up to here; never raised by
                             * SNAPSHOT_TAKEN (the eviction bound) */
    mr_index unstable;  /* first index not yet handed to the host */
    int is_holding;     /* deferred proposals wait for FLUSH (leader only) */
    /* latest snapshot (taken locally or installed) */
    mr_index snap_index;
    mr_term snap_term;
    struct mr_rcbuf *snap_config;
    uint8_t snap_to_install; /* ready.snapshot must carry the install request */
    /* two-phase install: a received snapshot the host was asked to install
     * and has not answered yet (SNAPSHOT_INSTALLED / SNAPSHOT_FAILED); the
     * log, commit and configuration stay as they were until it answers */
    uint8_t install_pending;
    mr_index install_index;
    mr_term install_term;
    struct mr_rcbuf *install_config;
    mr_node_id install_from; /* the leader to acknowledge once installed */
    /* configuration: the latest one appended (thesis 4.1) */
    struct mr_raft_config config;
    mr_index config_index;             /* index of that entry (or snapshot index) */
    mr_index pending_conf;             /* no change until commit reaches this */
    struct mr_raft_progress *progress; /* one per config server (self included), then
                                        * the departing server's, if any */
    unsigned n_progress;
    /* leader: the server its latest configuration removed, still replicated
     * to (never counted) until it holds the removing entry and acknowledged a
     * heartbeat that told it the entry is committed, so that it knows it was
     * removed; given up after MR_RAFT_DEPARTING_TICKS_FACTOR election
     * timeouts or when this server stops leading (raft_membership.c) */
    mr_node_id departing;       /* 0: none */
    mr_index departing_index;   /* the configuration entry that removed it */
    uint64_t departing_round;   /* heartbeat round that told it (0: none yet) */
    unsigned departing_elapsed; /* ticks since the removal */
    /* timers */
    uint64_t ticks;
    unsigned election_elapsed;
    unsigned heartbeat_elapsed;
    unsigned election_timeout; /* randomized, in [min, max) */
    unsigned transfer_elapsed;
    uint8_t quiet_start; /* refuse votes during the first min ticks */
    uint8_t term_unsafe; /* our term may not be durable and nobody else
                            knows it: every message waits (msgs_after) */
    /* elections */
    mr_node_id *granted; /* voters that granted us (pre)votes */
    mr_node_id *rejected;
    unsigned n_granted, n_rejected;
    mr_node_id transferee;    /* leadership transfer target */
    mr_term timeout_now_term; /* a TimeoutNow left in this term: no lease reads */
    mr_index term_start;      /* index of this leader's no-op */
    /* reads (raft_read.c) */
    struct mr_queue reads;
    uint64_t read_round;     /* last heartbeat round sent */
    uint64_t round_tick[64]; /* send tick of rounds, by round % 64 */
    /* output being collected */
    struct mr_raft_msg *msgs, *msgs_after;
    unsigned n_msgs, cap_msgs, n_msgs_after, cap_msgs_after;
    struct mr_raft_read_state *out_reads;
    unsigned n_out_reads, cap_out_reads;
};

/* Initialises an empty core (no log, no configuration, term 0). Then call
 * either mr_raft_load() (restart) or mr_raft_bootstrap() (new cluster), or
 * neither (a node that will join an existing cluster: it waits for a leader).
 * Errors: MR_EINVAL for bad options. `opts` is copied. */
int mr_raft_init(struct mr_raft *r, const struct mr_raft_options *opts);

/* Frees everything the core holds. Safe after a failed init. */
void mr_raft_close(struct mr_raft *r);

/* What the host recovered from disk at start. All pointers are borrowed;
 * the core takes its own references. */
struct mr_raft_persisted {
    mr_term term;
    mr_node_id vote;
    mr_index snap_index; /* 0 if none */
    mr_term snap_term;
    const struct mr_rcbuf *snap_config;  /* encoded config at snap_index (NULL if none) */
    const struct mr_raft_entry *entries; /* contiguous, from snap_index + 1 (the WAL's
                                            older entries are left out) */
    size_t n_entries;
    /* 0, or an index the host durably recorded as committed in an earlier run
     * (moonraft's node records the configuration that removed it): commit
     * starts there instead of at snap_index, if the log reaches it. Then a
     * removed server knows its removal committed and does not campaign.
     * The core trusts the entries up to it: the host MUST record it only
     * once its log holds them durably (status.persisted >= the index), since
     * a follower's commit may run ahead of its disk and, after a crash, the
     * log could still hold an older, uncommitted entry at that index. */
    mr_index commit;
};

/* Loads persisted state into a freshly initialised core. The effective
 * configuration is the last CONFIG entry, else the snapshot's. commit and
 * applied start at snap_index (commit at p->commit if set, see above: the
 * entries up to it come out as committed). Errors: MR_EINVAL (non-contiguous entries,
 * already loaded), MR_EMALFORMED (undecodable configuration, errmsg says
 * which), MR_ENOMEM. `errmsg` may be NULL. */
int mr_raft_load(struct mr_raft *r, const struct mr_raft_persisted *p, char *errmsg);

/* Bootstraps a brand-new cluster member: appends a CONFIG entry for `cfg` at
 * index 1, term 1, commits it, and sets term 1. Every initial member calls it
 * with the same configuration. The entry and hard state come out in the next
 * ready. MR_EINVAL if the core already has state or `cfg` has no voter,
 * MR_ENOMEM. `cfg` is borrowed. */
int mr_raft_bootstrap(struct mr_raft *r, const struct mr_raft_config *cfg);

enum mr_raft_event_type {
    MR_RAFT_EVENT_NONE = 0, /* just collect pending output */
    MR_RAFT_EVENT_TICK = 1,
    MR_RAFT_EVENT_RECEIVE = 2,         /* msg */
    MR_RAFT_EVENT_PROPOSE = 3,         /* entry_type, data -> out_index, out_term */
    MR_RAFT_EVENT_READ_INDEX = 4,      /* ctx, is_lease */
    MR_RAFT_EVENT_CHANGE_MEMBERS = 5,  /* change, node, context -> out_index, out_term */
    MR_RAFT_EVENT_TRANSFER_LEADER = 6, /* node */
    MR_RAFT_EVENT_PERSISTED = 7,       /* index, term */
    MR_RAFT_EVENT_SNAPSHOT_TAKEN = 8,  /* index, term: host has a durable snapshot */
    MR_RAFT_EVENT_SNAPSHOT_INSTALLED = 9, /* index, term: the requested install is done */
    MR_RAFT_EVENT_REPORT_UNREACHABLE = 10, /* node */
    MR_RAFT_EVENT_SNAPSHOT_DONE = 11,      /* node, ok: streaming to node finished */
    MR_RAFT_EVENT_FLUSH = 12, /* hand out and send what deferred proposals held back */
    MR_RAFT_EVENT_SNAPSHOT_FAILED = 13, /* index, term: the requested install failed */
};

enum mr_raft_change {
    MR_RAFT_ADD_VOTER = 1,
    MR_RAFT_ADD_LEARNER = 2,
    MR_RAFT_PROMOTE = 3, /* learner -> voter */
    MR_RAFT_REMOVE = 4,
};

/* One input. Fill `type` and the fields it names; the out_ fields are set on
 * return for PROPOSE and CHANGE_MEMBERS. All pointers are borrowed. */
struct mr_raft_event {
    int type;
    const struct mr_raft_msg *msg; /* RECEIVE */
    uint8_t entry_type;            /* PROPOSE: MR_RAFT_ENTRY_NORMAL (default if 0) */
    struct mr_rcbuf *data;         /* PROPOSE: payload, core takes a reference */
    uint8_t is_deferred;           /* PROPOSE: hold the entry (neither handed out for
                                    * writing nor sent) until a FLUSH or TICK event, so
                                    * that many proposals go out as one write and one
                                    * AppendEntries per follower. Safe: it only delays. */
    uint64_t ctx;                  /* READ_INDEX */
    uint8_t is_lease;              /* READ_INDEX: lease read if allowed */
    uint8_t change;                /* CHANGE_MEMBERS: enum mr_raft_change */
    uint8_t ok;                    /* SNAPSHOT_DONE */
    mr_node_id node;       /* CHANGE_MEMBERS, TRANSFER_LEADER, REPORT_*, SNAPSHOT_DONE */
    const char *context;   /* CHANGE_MEMBERS add: server context text */
    uint64_t n_ticks;      /* TICK: ticks elapsed since the last TICK (0 means 1). The
                            * clocks advance by that much at once: one heartbeat,
                            * one check-quorum, at most one election, no burst */
    mr_index index;        /* PERSISTED, SNAPSHOT_* */
    uint64_t max_trailing; /* SNAPSHOT_TAKEN: if > 0, keep at most this many entries
                            * behind the snapshot (fewer than opts.snapshot_trailing,
                            * e.g. when entries are large) */
    mr_term term;          /* PERSISTED, SNAPSHOT_* */
    mr_index out_index;
    mr_term out_term;
};

/* Flags of a ready batch: which parts are present. */
#define MR_RAFT_READY_HARD_STATE 0x01u
#define MR_RAFT_READY_ENTRIES 0x02u
#define MR_RAFT_READY_MSGS 0x04u
#define MR_RAFT_READY_COMMITTED 0x08u
#define MR_RAFT_READY_SNAPSHOT 0x10u
#define MR_RAFT_READY_READS 0x20u
#define MR_RAFT_READY_SOFT_STATE 0x40u

/* One batch of work for the host (see the top of this header for the
 * ordering rules). The batch owns every array and a reference to every
 * payload in it until mr_raft_ready_release(). */
struct mr_raft_ready {
    unsigned flags;
    /* HARD_STATE: persist (term, vote) */
    mr_term term;
    mr_node_id vote;
    /* ENTRIES: the WAL must first drop every entry at index >= entries[0].index */
    struct mr_raft_entry *entries;
    size_t n_entries;
    /* MSGS */
    struct mr_raft_msg *msgs; /* may leave at once */
    size_t n_msgs;
    struct mr_raft_msg *msgs_after; /* only once everything so far is durable */
    size_t n_msgs_after;
    /* COMMITTED: apply in order */
    struct mr_raft_entry *committed;
    size_t n_committed;
    uint8_t has_more_committed; /* more are committed than handed out (max_apply_bytes):
                                 * step MR_RAFT_EVENT_NONE for the next slice */
    /* SNAPSHOT: install the snapshot (index, term) the host received, reset
     * the WAL to start after it, then step SNAPSHOT_INSTALLED (or
     * SNAPSHOT_FAILED); until then the core keeps its log (see SNAPSHOTS) */
    mr_index snap_index;
    mr_term snap_term;
    struct mr_rcbuf *snap_config;
    /* READS */
    struct mr_raft_read_state *reads;
    size_t n_reads;
    /* SOFT_STATE (always filled; the flag says it changed) */
    uint8_t state; /* enum mr_raft_state */
    mr_node_id leader;
};

/* Processes one event and fills `ready` (which the caller provides; its
 * previous content is overwritten, so release it first) with all the output
 * pending in the core, even when the event itself fails.
 * Returns 0 or: MR_ENOTLEADER (propose/change/transfer/read on a non-leader;
 * a follower forwards READ_INDEX to its leader and returns 0, or
 * MR_ENOLEADER if none is known), MR_EBUSY (a configuration change or a
 * leadership transfer is pending, or the leader has not committed an entry
 * of its term yet for a change), MR_EINVAL (bad event), MR_EEXISTS /
 * MR_ENOTFOUND (membership), MR_EMALFORMED (a received message failed
 * validation; it was dropped), MR_EPROTO (a well-formed message that
 * contradicts the protocol, e.g. an append that would overwrite a committed
 * entry; dropped and traced), MR_EINVAL for SNAPSHOT_TAKEN beyond the
 * applied index or with the wrong term, MR_ENOMEM (the core stays consistent
 * but outgoing messages of this step may have been dropped; they are
 * retransmitted by the protocol; for SNAPSHOT_INSTALLED the install stays
 * pending). SNAPSHOT_INSTALLED / SNAPSHOT_FAILED for an install that is not
 * pending are ignored (traced) and return 0. */
int mr_raft_step(struct mr_raft *r, struct mr_raft_event *ev,
                 struct mr_raft_ready *ready);

/* Releases everything a ready batch owns; leaves it zeroed. NULL-safe. */
void mr_raft_ready_release(struct mr_raft_ready *ready);

/* ---- status ------------------------------------------------------------------ */

struct mr_raft_status {
    uint8_t state;
    mr_term term;
    mr_node_id vote;
    mr_node_id leader;
    mr_index commit;
    mr_index applied;
    mr_index last_index;
    mr_term last_term;
    mr_index persisted;
    mr_index snap_index;
    mr_index first_index;                /* first index still in the log */
    const struct mr_raft_config *config; /* borrowed until the next step */
    mr_index config_index;
    const struct mr_raft_progress *progress; /* borrowed; meaningful on a leader */
    unsigned n_progress;
    uint64_t ticks;
};

/* Fills `st`; the pointers in it are borrowed from `r`. */
void mr_raft_status(const struct mr_raft *r, struct mr_raft_status *st);

/* Term of the entry at `index` in the in-memory log (the compaction point's
 * term for index == first_index - 1), or 0 if unknown. */
mr_term mr_raft_term_at(const struct mr_raft *r, mr_index index);

/* The entry at `index` in the in-memory log, or NULL when it is not there
 * (compacted, or beyond the last index). Borrowed until the next step; the
 * host takes its own mr_rcbuf_ref() of `data` to keep it. Read-only: the
 * node uses it to re-apply committed entries after rebuilding its state
 * machine from a snapshot without touching the log (integrity resync). The
 * entry may be evicted (evicted = 1, data NULL): its payload is then in the
 * host's WAL only. */
const struct mr_raft_entry *mr_raft_entry_at(const struct mr_raft *r, mr_index index);

/* ---- bounded in-memory log ------------------------------------------------------ */

/* Drops the in-memory payloads of the oldest entries while the log's resident
 * payload bytes exceed `max_bytes`, among entries that are durable here (at
 * or below the highest index the host reported PERSISTED or loaded, which,
 * unlike status.persisted, a SNAPSHOT_TAKEN never raises: the WAL may not
 * hold entries a snapshot covers yet), already handed out for applying
 * (<= status.applied), <= `up_to`, and not configuration entries (membership
 * is read from the log). Empty payloads are left alone (nothing to drop).
 * Evicted entries stay in the log (evicted = 1, data NULL, evicted_len set;
 * see struct mr_raft_entry); once a payload is dropped the host must be able
 * to read that entry back from its WAL for as long as the core's log holds it
 * (status.first_index on): its WAL compaction must not go past the core's.
 * Returns the bytes dropped. Pure bookkeeping: deterministic, no I/O, no
 * allocation; O(entries looked at), each index being looked at once between
 * truncations. Call it between steps (it invalidates entries borrowed from
 * mr_raft_entry_at()). */
size_t mr_raft_log_evict(struct mr_raft *r, size_t max_bytes, mr_index up_to);

/* Payload bytes the in-memory log holds (evicted entries not counted). */
size_t mr_raft_log_resident_bytes(const struct mr_raft *r);

/* Name of a state ("leader"), message type ("append") or event type. */
const char *mr_raft_state_name(int state);
const char *mr_raft_msg_name(int type);

#endif /* MR_RAFT_H */
