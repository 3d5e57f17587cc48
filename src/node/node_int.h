/* node_int.h: helpers shared inside src/node. */
#ifndef MR_NODE_INT_H
#define MR_NODE_INT_H

#include "node/node.h"
#include "util/util.h"

/* ---- logging (only src/node logs) ------------------------------------------- */
enum { MR_LOG_DEBUG = 0, MR_LOG_INFO = 1, MR_LOG_WARN = 2, MR_LOG_ERROR = 3 };
void mr_node_log_setup(const char *id, int level);
int mr_node_log_level_parse(const char *s);
void mr_node_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define LOGD(...) mr_node_log(MR_LOG_DEBUG, __VA_ARGS__)
#define LOGI(...) mr_node_log(MR_LOG_INFO, __VA_ARGS__)
#define LOGW(...) mr_node_log(MR_LOG_WARN, __VA_ARGS__)
#define LOGE(...) mr_node_log(MR_LOG_ERROR, __VA_ARGS__)

/* ---- entry payloads ------------------------------------------------------------ */
#define MR_NODE_ENTRY_COMMAND 1
#define MR_NODE_ENTRY_CHECK 2 /* integrity check: u8 version, u8 kind, nothing else */
#define MR_NODE_ENTRY_TICK 3  /* timer tick: u8 version, u8 kind, u64 time_ms (node_timers.c) */
#define MR_NODE_ENTRY_SCRIPT 4 /* a new state machine script (node_deploy.c) */
#define MR_NODE_MAX_IDEM_KEY 256 /* bytes */
struct mr_node_entry {
    uint64_t time_ms;
    const char *key; /* idempotency key, not NUL-terminated; key_len 0 = none */
    size_t key_len;
    const char *cmd; /* command JSON, not NUL-terminated */
    size_t cmd_len;
};
/* New payload (refs = 1) or NULL on OOM / key too long. */
struct mr_rcbuf *mr_node_entry_encode(uint64_t time_ms, const char *key, size_t key_len,
                                      const char *cmd, size_t cmd_len);
/* Parses untrusted bytes; `out` points into `p`. MR_EMALFORMED on bad input. */
int mr_node_entry_decode(const unsigned char *p, size_t len, struct mr_node_entry *out);

/* ---- idempotency table ------------------------------------------------------------- */
struct mr_idem_rec {
    struct mr_queue q;         /* in mr_idem.order, by index */
    struct mr_idem_rec *next;  /* hash chain */
    mr_index index;            /* where the command was applied */
    int status;                /* 0 or the MR_E* outcome (MR_ESCRIPT...) */
    char *result;              /* result JSON (status 0) or error message */
    size_t result_len;
    size_t key_len;
    char key[];
};
struct mr_idem {
    struct mr_idem_rec **buckets;
    size_t nbuckets; /* power of two */
    size_t count;
    struct mr_queue order;
    mr_index window; /* records live for this many log indexes */
};
int mr_idem_init(struct mr_idem *t, mr_index window);
void mr_idem_close(struct mr_idem *t);
void mr_idem_clear(struct mr_idem *t);
/* Borrowed pointer, valid until the next put/expire/clear. */
const struct mr_idem_rec *mr_idem_get(const struct mr_idem *t, const char *key, size_t len);
/* Copies key and result. MR_EEXISTS if the key is present, MR_ENOMEM. */
int mr_idem_put(struct mr_idem *t, const char *key, size_t len, mr_index index, int status,
                const char *result, size_t result_len);
void mr_idem_expire(struct mr_idem *t, mr_index applied);
size_t mr_idem_encoded_size(const struct mr_idem *t);
/* Writes exactly mr_idem_encoded_size() bytes. */
void mr_idem_encode(const struct mr_idem *t, unsigned char *p);
/* Replaces the table's content from untrusted bytes; *used = bytes consumed.
 * On error the table is left empty. */
int mr_idem_decode(struct mr_idem *t, const unsigned char *p, size_t len, size_t *used);

/* Node ids: the Raft core uses 64-bit ids; people use names ("n1"). */
mr_node_id mr_node_id_from_name(const char *name);

/* ---- the node ----------------------------------------------------------------- */
#include <uv.h>

#include "http/http.h"
#include "net/net.h"
#include "raft/raft.h"
#include "sm/sm.h"
#include "storage/storage.h"

#define MR_NODE_TICK_MS 10 /* one Raft tick */

/* A member as the node sees it: parsed from a server's config context
 * "name=n1 raft=127.0.0.1:7001 http=127.0.0.1:8001 [learner=keep]". */
struct mr_node_member {
    mr_node_id id;
    int role; /* MR_RAFT_VOTER / MR_RAFT_LEARNER */
    int keep_learner;
    char name[MR_NODE_NAME_MAX + 1];
    char raft_addr[128];
    char http_addr[128];
};
/* Parses a context string; missing fields stay "". */
void mr_node_member_parse(struct mr_node_member *m, mr_node_id id, int role,
                          const char *context);
/* Builds a context string into buf (size n). */
void mr_node_member_context(char *buf, size_t n, const char *name, const char *raft_addr,
                            const char *http_addr, int keep_learner);

enum op_kind {
    OP_COMMAND = 1,
    OP_MEMBER_ADD = 2,
    OP_MEMBER_REMOVE = 3,
    OP_TRANSFER = 4,
    OP_READ = 5,
    OP_INTEGRITY = 6, /* peer-only: integrity reports and verdicts (node_integrity.c) */
    OP_DEPLOY = 7,    /* a new script: body is the SCRIPT entry payload (node_deploy.c) */
};
#define MR_NODE_FWD_HDR 8 /* u8 kind, u8 0, u16 key length, u32 target length */

enum op_shape {
    SHAPE_RESULT = 0, /* {"result":R,"index":n} */
    SHAPE_KV_GET,     /* {"key":k,"value":v,"index":n}, 404 when null */
    SHAPE_KV_WRITE,   /* {"key":k,"result":R,"index":n} */
    SHAPE_RAW,        /* R as is (members, transfer) */
};

enum { CONS_LINEARIZABLE = 0, CONS_LEASE = 1, CONS_STALE = 2 };

/* One client operation in flight, from an HTTP request on this node or
 * forwarded by a follower. Lives in exactly one of the node's queues. */
struct mr_node_op {
    struct mr_queue link;
    struct mr_node *node;
    int kind;
    int shape;
    int consistency;
    struct mr_http_request *req; /* HTTP origin, or NULL */
    mr_node_id fwd_from;         /* forwarded origin (we answer with FORWARD_REPLY) */
    mr_node_id fwd_leader;       /* the leader we forwarded it to (in n->forwarded) */
    uint64_t fwd_id;
    uint64_t id;                 /* our id for it (forward id, read ctx) */
    char *body;                  /* owned copy of the command/query JSON */
    size_t body_len;
    char key[MR_NODE_MAX_IDEM_KEY + 1]; /* idempotency key */
    size_t key_len;
    char kv_key[512];            /* for SHAPE_KV_* (escaped on output) */
    mr_index index;              /* proposal's index (and term) */
    mr_term term;
    mr_index read_index;
    uint64_t deadline;           /* loop time (ms) */
    uint64_t sent_ms;            /* reads: when the read index was last asked for */
    int attempts;
    int is_maybe_applied;        /* a copy went to a leader that was replaced before it
                                    answered: never answer 503 "not applied" (node_ops.c) */
    mr_node_id target;           /* transfer target, member id */
};

struct mr_node_held {
    struct mr_queue link;
    uint64_t seq;
    struct mr_raft_msg *msgs;
    size_t n;
};

/* A snapshot being streamed to one follower. */
struct mr_node_snap_send {
    struct mr_queue link;
    mr_node_id to;
    struct mr_store_snap_reader *reader;
    mr_index index;
    mr_term term;
    uint64_t offset;
    uint64_t size;
};

/* Recent change events for long-poll watches. */
struct mr_node_event {
    mr_index index;
    char *json; /* one event object */
    size_t len;
    char *key;  /* its "key" field or NULL */
};
#define MR_NODE_EVENT_RING 4096

/* Integrity checks (node_integrity.c). */
#define MR_NODE_INTEG_JOBS 4        /* hash children running at once */
#define MR_NODE_INTEG_ROUNDS 4      /* check rounds a leader keeps */
#define MR_NODE_INTEG_MAX_REPORTS 32 /* members compared per round */
struct mr_node_integ_job {
    mr_index index; /* 0 = slot free */
    struct mr_sm_snapjob job;
};
struct mr_node_integ_round {
    mr_index index; /* 0 = unused */
    uint64_t started_ms;
    int decided;
    unsigned n;
    mr_node_id ids[MR_NODE_INTEG_MAX_REPORTS];
    char hashes[MR_NODE_INTEG_MAX_REPORTS][65];
};

/* Which roles sync their WAL on the loop thread (node.c, "the WAL synced on
 * the loop"). */
enum mr_node_wal_inline {
    MR_NODE_WAL_INLINE_OFF = 0,
    MR_NODE_WAL_INLINE_FOLLOWER,
    MR_NODE_WAL_INLINE_ALL,
};

struct mr_node {
    const struct mr_node_options *o;
    uv_loop_t loop;
    char name[MR_NODE_NAME_MAX + 1];
    mr_node_id id;
    int exit_code;
    int is_stopping;
    int is_closed;

    struct mr_raft raft;
    int raft_ready;
    struct mr_store *store;
    struct mr_sm *sm;
    struct mr_net net;
    int net_ready;
    struct mr_http_server http;
    int http_ready;
    struct mr_http_metrics metrics;

    uv_timer_t tick;
    uv_async_t store_async;
    uv_prepare_t flush; /* steps FLUSH before the loop blocks (batched proposals) */
    uv_idle_t wal_sync; /* syncs the WAL on the loop after this turn's I/O (node.c) */
    int is_wal_sync_pending;
    int is_store_inline; /* mr_store_set_inline as last set */
    size_t wal_turn_entries; /* entries queued since the last wal_sync_now */
    int wal_inline;      /* enum mr_node_wal_inline */
    uv_idle_t apply_more; /* applies the next slice of a long backlog, between I/O */
    int is_flush_pending;
    uint64_t last_tick_ns; /* uv_hrtime() of the previous tick, for the loop lag */
    uint64_t tick_base_ns; /* uv_hrtime() up to which ticks were given to the core */
    uv_signal_t sigint, sigterm;
    unsigned handles_open;

    /* Raft-facing state */
    uint8_t role;
    mr_node_id leader;
    mr_term term;
    mr_index last_queued;   /* last log index handed to storage */
    uint64_t last_seq;      /* last storage op queued */
    uint64_t done_seq;
    mr_index persisted_reported;
    struct mr_queue held;   /* struct mr_node_held, by seq */
    int disk_error;
    char disk_errmsg[MR_ERRMSG_SIZE];

    /* A full disk: the NOSPACE alarm (node_disk.c) */
    struct mr_store_limit *disk_limit; /* quota / test fault layer, or NULL */
    int nospace;                       /* 0, or -ENOSPC / -EDQUOT while raised */
    char nospace_msg[MR_ERRMSG_SIZE];
    uint64_t nospace_since_ms;         /* wall clock */
    uint64_t nospace_alarms;           /* times raised */
    uint64_t disk_used;                /* bytes, measured every second */
    uint64_t disk_next_ms, disk_next_snap_ms;
    mr_index disk_compacted;           /* compaction asked for by the alarm */
    struct mr_http_metric *m_nospace, *m_disk_used;

    /* State machine. Threading (node_apply.c): `sm`, `idem` and
     * `last_time_ms` belong to the apply thread while it runs a job
     * (mr_node_apply_is_idle() == 0) and to the loop otherwise; the loop
     * then reads last_time_ms only with __atomic_load_n. Every other field
     * of this struct is the loop thread's. `applied` is what the loop has
     * taken from the apply thread (clients answered): the state machine is
     * exactly at `applied` whenever the apply thread is idle. */
    struct mr_node_applier *ap;
    mr_index applied;
    mr_term applied_term;
    uint64_t last_time_ms; /* ctx.time of the last applied command (monotonic) */
    /* The test-only salt (MOONRAFT_FAULT_SM_SALT), copied from the options at
     * start: the apply thread reads these, never n->o (a SIGHUP reload
     * repoints n->o on the loop). */
    const char *fault_salt;
    uint64_t fault_salt_until;
    struct mr_rcbuf *applied_conf; /* encoded config as of `applied` */
    struct mr_idem idem;
    char hash[65];
    mr_index hash_index;
    int has_hash;
    /* The state machine no longer matches the core's log (a snapshot install
     * failed after the old state was replaced): nothing is applied and no
     * read is served until an install succeeds. */
    int is_sm_stale;

    /* Operations */
    uint64_t next_op_id;
    struct mr_queue wait_leader; /* ops waiting for a leader to be known */
    struct mr_queue wait_busy;   /* membership ops waiting for the pending change */
    struct mr_queue proposals;   /* ops proposed here, by index */
    struct mr_queue forwarded;   /* ops sent to the leader, awaiting reply */
    struct mr_queue reads;       /* reads waiting for a read index */
    struct mr_queue read_apply;  /* reads with an index, waiting for apply */
    struct mr_queue read_running; /* reads handed to the apply thread (node_apply.c) */
    struct mr_queue transfers;   /* transfer ops waiting for the new leader */
    struct mr_queue watches;     /* long-poll watches */

    /* Snapshots */
    mr_index snap_index;          /* newest durable snapshot */
    uint64_t snap_size;           /* its payload bytes (0: none yet) */
    uint64_t log_bytes;           /* entry bytes applied since the last snapshot began */
    uint64_t job_trailing;        /* entries the running snapshot keeps behind it */
    int trim_pending;             /* a compaction freed memory not yet trimmed */
    mr_index trim_applied;        /* applied when last seen changing... */
    uint64_t trim_idle_since_ms;  /* ...at this uv_now */
    uint64_t trim_since_ms;       /* uv_now when trim_pending was set */
    struct mr_sm_snapjob job;
    struct mr_store_snap_writer *snap_writer;
    mr_index job_index;
    mr_term job_term;
    int job_running;
    int snap_requested;
    uv_work_t snap_work;
    int snap_work_busy;
    int snap_work_rc;
    char snap_errmsg[MR_ERRMSG_SIZE];
    struct mr_queue snap_sends;   /* struct mr_node_snap_send */
    struct mr_store_snap_receiver *rx;
    mr_index rx_index;
    mr_term rx_term;
    mr_node_id rx_from;
    struct mr_raft_msg rx_msg;    /* the SNAPSHOT message to step once complete */
    int rx_has_msg;
    int rx_complete;              /* every chunk is in; kept aside until the core asks */
    unsigned fault_installs;      /* test hook: the next n installs fail */
    int fault_install_late;       /* test hook: ... after the old state was replaced */
    uint64_t snapshots_taken, snapshots_installed, snapshots_sent;
    /* The log cache (node_log_cache.c): payloads the core dropped
     * (mr_raft_log_evict) are read back from the WAL when an AppendEntries
     * needs them. The reader is opened on the first miss. */
    struct mr_store_wal_reader *wal_reader;
    uint64_t cache_misses;       /* entries read back from the WAL */
    uint64_t cache_evicted_bytes; /* payload bytes the core dropped, in total */
    uint64_t cache_untrimmed;     /* of which not yet handed back (mr_node_trim_soon) */

    /* Integrity checks */
    struct mr_node_integ_job integ_jobs[MR_NODE_INTEG_JOBS];
    struct mr_node_integ_round integ_rounds[MR_NODE_INTEG_ROUNDS];
    mr_index integ_last_check;     /* index of the last CHECK entry applied */
    mr_index integ_proposed;       /* leader: CHECK proposed here, not applied yet */
    int integ_want_check;          /* leader: propose one as soon as possible */
    int integ_check_handover;      /* became leader: hand over if untrusted */
    mr_index integ_own_index;      /* this node's latest hash and its index */
    char integ_own_hash[65];
    mr_index integ_verdict_index;  /* latest verdict from the leader */
    int integ_verdict_ok;
    mr_index integ_checked_index;  /* leader: latest decided round */
    char integ_ref_hash[65];
    int integ_suspect;             /* an apply may have decided differently here */
    int integ_diverged;            /* a check found our state differs */
    mr_index integ_diverged_index;
    int integ_resyncing;           /* waiting for the leader's resync snapshot */
    int integ_resynced;            /* rebuilt since the divergence was found */
    mr_index integ_resync_from;    /* leader: snapshot must cover this index */
    mr_node_id integ_resync_to;    /* leader: member waiting for a resync snapshot */
    uint64_t integ_resync_asked_ms;
    uint64_t integ_last_request_ms;
    int integ_alarm;               /* leader: CORRUPT alarm raised */
    mr_index integ_alarm_index;
    char integ_alarm_msg[1200];
    uint64_t integ_checks, integ_mismatches, integ_resyncs;

    /* Timers (node_timers.c) */
    mr_index timer_proposed;       /* leader: TICK proposed here, not applied yet */
    uint64_t timer_ticks;          /* TICK entries applied here */
    struct mr_http_metric *m_timer_ticks;

    /* Membership / formation */
    int is_bootstrapping;         /* bootstrap_expect: collecting members */
    struct mr_node_member pending_members[16];
    unsigned n_pending_members;
    struct mr_queue pending_join_ops;
    int needs_join;               /* empty data dir + join addresses */
    uint64_t next_join_at;
    int join_inflight;
    uint64_t last_promote_try;
    mr_index synced_config_index; /* peers match the core's config at this index */
    /* Removed (docs/operations.md "Removed nodes"): a committed configuration
     * excludes this node, which was a member before. Recorded durably in
     * <data_dir>/removed (the configuration's index) so that a restart still
     * knows; cleared if a configuration includes the node again. */
    int is_removed;
    int was_member;         /* some configuration included this node */
    mr_index removed_index; /* the configuration entry that removed it */
    mr_node_id removed_leader; /* the leader then (0: unknown), for clients */

    /* Watch ring */
    struct mr_node_event events[MR_NODE_EVENT_RING];
    uint64_t events_head;         /* number of events ever stored */

    /* Metrics */
    struct mr_http_metric *m_term, *m_role, *m_commit, *m_applied, *m_lag, *m_proposals,
        *m_reads, *m_elections, *m_snapshots, *m_wal_sync, *m_leader_changes, *m_loop_lag,
        *m_peers_up, *m_integ_alarm, *m_integ_checks, *m_integ_mismatches, *m_integ_state,
        *m_log_resident, *m_cache_misses, *m_cache_evicted;
    uint64_t last_sync_start_ms;

    /* Deploys (node_deploy.c): the request whose script a child is trying */
    struct mr_node_op *deploy_op;
    struct mr_sm_snapjob deploy_job;

    /* Helper Lua state with lua-cjson for validating and reading request JSON. */
    void *json_L;

    /* Online backups in progress (node_backup.c) */
    struct mr_queue backups;
    /* TLS contexts (node_reload.c); NULL without TLS. net and http hold their
     * own references. */
    struct mr_tls_ctx *tls_peer_server, *tls_peer_client, *tls_http;
    /* SIGHUP reload state (node_reload.c); n->o points into it while set. */
    struct mr_node_reload *reload;
};

/* node_reload.c: TLS contexts and the SIGHUP reload.
 * mr_node_tls_start builds the contexts from n->o (before start_net/http);
 * 0 or MR_ECONFIG (logged). mr_node_reload_start arms SIGHUP once the node
 * runs; mr_node_reload_close stops it and drops the contexts (shutdown,
 * before the loop is drained). */
int mr_node_tls_start(struct mr_node *n);
void mr_node_reload_start(struct mr_node *n);
void mr_node_reload_close(struct mr_node *n);

/* node.c */
/* The HTTP server's limits and timeouts as the options give them (start
 * and SIGHUP reload). */
void mr_node_http_limits(const struct mr_node *n, struct mr_http_options *ho);
uint64_t mr_node_now(struct mr_node *n);
/* The wall clock in ms since the epoch: what ctx.time is made of. */
uint64_t mr_node_wall_ms(void);
/* Steps the core and does what the ready batch says. Returns the step's code. */
int mr_node_step(struct mr_node *n, struct mr_raft_event *ev);
/* Gives the core the ticks that elapsed (uv_hrtime) since it last got some,
 * in one TICK event; nothing if less than a tick passed. on_tick uses it, and
 * a lease read calls it first so that a stalled loop cannot lengthen the
 * lease. */
void mr_node_catch_up_ticks(struct mr_node *n);
int mr_node_propose(struct mr_node *n, struct mr_node_op *op);
/* Proposes a node-level NORMAL entry (CHECK, TICK, SCRIPT) at once, not
 * deferred; never from inside a step. `payload` is borrowed (the core takes
 * its reference). Returns the step's code; index/term (may be NULL) are
 * filled on success. */
int mr_node_propose_entry(struct mr_node *n, struct mr_rcbuf *payload, mr_index *index,
                          mr_term *term);
const char *mr_node_name_of(struct mr_node *n, mr_node_id id, char *buf, size_t len);
int mr_node_find_member(struct mr_node *n, mr_node_id id, struct mr_node_member *out);
void mr_node_request_stop(struct mr_node *n, int code);

/* node_apply.c: the apply thread (threading model at the top of that file).
 * Every function here is called on the loop thread. */
/* Starts the thread and its uv_async_t (before the first step). */
int mr_node_apply_start(struct mr_node *n);
/* Finishes the entry the thread is running, answers what it applied, joins
 * it and frees the backlog; the async handle closes in the next uv_run. */
void mr_node_apply_stop(struct mr_node *n);
/* Queues committed entries (those above n->applied; their payloads are held
 * by reference) for the apply thread, in order, and starts a job if it is
 * idle. Returns at once: n->applied advances as outcomes come back. */
void mr_node_apply_entries(struct mr_node *n, const struct mr_raft_entry *es, size_t count);
/* Starts the next job if the thread is idle: the loop-only entries at the
 * head of the backlog (CHECK, SCRIPT) are applied here first, then a slice of
 * the backlog and the reads of n->read_apply it satisfies go to the thread. */
void mr_node_apply_kick(struct mr_node *n);
/* 1 when no job is out: the loop may use n->sm (fork, restore, hash), which
 * is then exactly at n->applied. */
int mr_node_apply_is_idle(const struct mr_node *n);
/* Makes the thread idle: it stops after the entry it is running, and what it
 * applied is taken (clients answered, n->applied advanced), as an apply in a
 * ready batch used to be. The rest of the backlog goes on at the next loop
 * turn. Called where the loop needs the state machine now. */
void mr_node_apply_sync(struct mr_node *n);
/* Runs fn(n, arg) on the apply thread (it may use n->sm, n->idem and
 * n->last_time_ms), then done(n, arg, fn's result) on the loop, from the
 * async callback (or from mr_node_apply_sync, which waits for fn to
 * return). Precondition: idle. Used to restore a snapshot off the loop. */
typedef int (*mr_node_apply_work_cb)(struct mr_node *n, void *arg);
typedef void (*mr_node_apply_done_cb)(struct mr_node *n, void *arg, int rv);
void mr_node_apply_call(struct mr_node *n, mr_node_apply_work_cb fn, mr_node_apply_done_cb done,
                        void *arg);
/* Applies es on the loop thread, at once. Precondition: idle (after
 * mr_node_apply_sync). For the integrity resync's re-apply. */
void mr_node_apply_now(struct mr_node *n, const struct mr_raft_entry *es, size_t count);
/* mr_node_snap_maybe_start(force) now if idle, else when the job ends. */
void mr_node_apply_snapshot_soon(struct mr_node *n, int force);
/* The state machine's earliest deadline and number of deadlines, as of the
 * last time the loop held it (live when idle). */
int64_t mr_node_apply_next_deadline(struct mr_node *n);
size_t mr_node_apply_deadline_count(struct mr_node *n);
/* The running script's info as of then (source NULL; label truncated to
 * 1023 bytes); for status and metrics. */
void mr_node_apply_script_info(struct mr_node *n, struct mr_sm_script_info *out);

/* node_ops.c: operations and their answers */
struct mr_node_op *mr_node_op_new(struct mr_node *n, int kind);
void mr_node_op_submit(struct mr_node *n, struct mr_node_op *op);
/* Parks a membership op refused with MR_EBUSY; mr_node_ops_expire retries it
 * until its deadline (then 409 busy). */
void mr_node_op_wait_busy(struct mr_node *n, struct mr_node_op *op);
/* Answers and frees the op. For status 200, `json` is the result and `index`
 * its log index; otherwise `json` is a complete error body. */
void mr_node_op_finish(struct mr_node_op *op, unsigned status, mr_index index,
                       const char *json, size_t len, unsigned retry_after);
void mr_node_op_fail(struct mr_node_op *op, unsigned status, const char *code,
                     const char *message);
void mr_node_ops_on_leader_change(struct mr_node *n);
/* Entry `index` (of `term`) was applied with outcome `sm_status` (enum
 * mr_sm_status); `text` is the result JSON (OK) or the error message, and
 * `answer_index` the index reported to the client (the first application's,
 * for an idempotent retry). */
void mr_node_ops_on_applied(struct mr_node *n, mr_index index, mr_term term, int sm_status,
                            const char *text, size_t len, mr_index answer_index);
/* A membership change (or its failure) reached `index`. */
void mr_node_ops_on_config_applied(struct mr_node *n, mr_index index, mr_term term);
/* A snapshot up to `index` replaced the state: proposals at or below it were
 * never seen applied here, and whether they committed is unknown (504). */
void mr_node_ops_on_snapshot_installed(struct mr_node *n, mr_index index);
void mr_node_ops_on_read_states(struct mr_node *n, const struct mr_raft_read_state *rs,
                                size_t n_rs);
/* Reads whose index is applied go to the apply thread (mr_node_apply_kick). */
void mr_node_ops_check_reads(struct mr_node *n);
/* Fails op (and returns 1) when this node must not serve reads now. */
int mr_node_ops_read_refused(struct mr_node *n, struct mr_node_op *op);
/* The apply thread ran op's query at `index`: rv (host failure) and res. */
void mr_node_ops_read_done(struct mr_node *n, struct mr_node_op *op, int rv,
                           const struct mr_sm_result *res, mr_index index);
void mr_node_ops_expire(struct mr_node *n);
void mr_node_ops_cancel_all(struct mr_node *n);
void mr_node_on_forward(struct mr_net *net, mr_node_id from, uint64_t req_id,
                        const uint8_t *data, size_t len);
void mr_node_on_forward_reply(struct mr_net *net, mr_node_id from, uint64_t req_id,
                              const uint8_t *data, size_t len);

/* node_http.c */
void mr_node_http_handler(void *data, struct mr_http_request *req);
/* Returns 1 if req may proceed (is_admin: needs the admin token when one is
 * set); otherwise answers it (401/403) and returns 0. */
int mr_node_http_authorize(struct mr_node *n, struct mr_http_request *req, int is_admin);
int mr_node_metrics_init(struct mr_node *n);

/* node_json.c: a Lua state with lua-cjson used to validate and read JSON */
int mr_node_json_init(struct mr_node *n);
void mr_node_json_close(struct mr_node *n);
/* 0 if valid JSON; else MR_EMALFORMED and errmsg says where. */
int mr_node_json_check(struct mr_node *n, const char *s, size_t len, char *errmsg);
/* Reads top-level string/boolean fields of a JSON object. Returns 0 or
 * MR_EMALFORMED. Missing fields give "" / -1. */
/* Reads the top-level field `name` of the JSON object s (trusted: written by
 * the state machine host) into out[cap] without building any value: a
 * string (unescaped, UTF-8) or true/false as text. Returns 0 when found, 1
 * when absent or null, -1 when the field is another type, the string does
 * not fit or holds a NUL, or s is not an object. */
int mr_node_json_string_field(const char *s, size_t len, const char *name, char *out,
                              size_t cap);
int mr_node_json_fields(struct mr_node *n, const char *s, size_t len, const char *const *names,
                        char (*out)[256], unsigned nfields, char *errmsg);

/* node_snap_policy.c */
/* 1 when a snapshot is due (besides a forced one): `entries` applied and
 * `log_bytes` of entries since the last snapshot began, whose payload was
 * `snap_size` bytes (0: none yet). The triggers are snapshot_entries or
 * snapshot_log_mb (0: their defaults, 10000 and 32); then the log must also
 * reach snapshot_log_percent of snap_size (0: no such gate) or, if larger,
 * snapshot_log_percent_small of it capped at snapshot_log_mb (for a
 * snap_size of 1 MiB or more); for such a state that size gate is 10% lower
 * per voter whose id is below this node's (`rank`, up to 50%), which staggers
 * the members' snapshots. Pure. */
/* node_log_cache.c: keeps the in-memory log's payloads within
 * o->log_cache_bytes (after every step), and fills the entries an
 * AppendEntries carries whose payloads were dropped, from the WAL. Returns 0;
 * MR_EUNAVAIL when the message must be dropped (Raft sends again: an entry
 * compacted meanwhile, no memory); another error is a damaged WAL (the caller
 * treats it as a disk failure), errmsg says which entry and why. */
void mr_node_log_cache_trim(struct mr_node *n);
int mr_node_log_cache_fill(struct mr_node *n, struct mr_raft_msg *m, char *errmsg);
int mr_node_log_cache_fill_entry(struct mr_node *n, struct mr_raft_entry *e, char *errmsg);
void mr_node_log_cache_close(struct mr_node *n);

int mr_node_snap_due(const struct mr_node_options *o, uint64_t entries, uint64_t log_bytes,
                     uint64_t snap_size, unsigned rank);

/* 1 when the memory freed by a snapshot's compaction should be handed back to
 * the system (malloc_trim) now: the node has applied nothing since
 * `idle_since_ms` for MR_NODE_TRIM_IDLE_MS, or the trim has waited
 * MR_NODE_TRIM_MAX_DELAY_MS since `pending_since_ms` (times in ms, both
 * <= now_ms). Pure. */
#define MR_NODE_TRIM_IDLE_MS 500
#define MR_NODE_TRIM_MAX_DELAY_MS 60000
int mr_node_snap_trim_due(uint64_t now_ms, uint64_t idle_since_ms, uint64_t pending_since_ms);
/* Freed memory worth returning to the system (a compaction, payloads the
 * log cache dropped): returned once the node is idle (mr_node_snap_poll). */
void mr_node_trim_soon(struct mr_node *n);

/* node_snap.c */
/* Starts a snapshot (fork) when one is due; nothing while the apply thread
 * runs a job (the job's end calls it again: mr_node_apply_snapshot_soon
 * keeps a forced request until then). */
void mr_node_snap_maybe_start(struct mr_node *n, int force);
void mr_node_snap_poll(struct mr_node *n);
void mr_node_snap_send_start(struct mr_node *n, const struct mr_raft_msg *m);
void mr_node_snap_send_pump(struct mr_node *n);
void mr_node_snap_on_msg(struct mr_node *n, mr_node_id from, const struct mr_raft_msg *m);
void mr_node_on_snapshot_chunk(struct mr_net *net, mr_node_id from,
                               const struct mr_net_snapshot_chunk *chunk);
/* The core asks to install the snapshot it was sent (ready.snapshot): takes the
 * state machine from the apply thread (mr_node_apply_sync), publishes
 * the received file (kept aside until now), restores the state machine from
 * it and queues the WAL reset (its seq goes to n->last_seq, so that the
 * acknowledgement the core sends next waits for it). With *is_async set, the
 * restore runs on the apply thread and mr_node_snap_installed tells the core
 * once it is done (`conf` is referenced until then); otherwise the result
 * is the return code: 0 when installed (step SNAPSHOT_INSTALLED), else an
 * error (step SNAPSHOT_FAILED). On failure the old state machine stays,
 * unless it was already replaced, then n->is_sm_stale is set. */
int mr_node_snap_install(struct mr_node *n, mr_index index, mr_term term,
                         struct mr_rcbuf *conf, int *is_async);
/* node.c: steps SNAPSHOT_INSTALLED (rv 0) or SNAPSHOT_FAILED for an install
 * that completed asynchronously (not from inside a step). */
void mr_node_snap_installed(struct mr_node *n, mr_index index, mr_term term, int rv);
/* Reads the MOONRAFT_FAULT_SNAP_INSTALL test hook. */
void mr_node_snap_fault_setup(struct mr_node *n);
/* Restores the state machine from a node snapshot payload file at path. */
int mr_node_snap_restore_newest(struct mr_node *n, char *errmsg);
void mr_node_snap_close(struct mr_node *n);
/* The parts of a node snapshot payload (pointers into buf), for offline tools. */
struct mr_node_snap_parts {
    uint32_t version;
    uint64_t last_time_ms;
    const unsigned char *idem, *sections;
    size_t idem_len, sections_len;
    const char *payload; /* the script's snapshot() */
    size_t payload_len;
};
int mr_node_snap_parts_parse(const unsigned char *buf, size_t size, struct mr_node_snap_parts *out,
                             char *errmsg);

/* node_integrity.c: divergence detection (see the top of that file) */
/* Leader: proposes a CHECK entry now (0, or the step's error). */
int mr_node_integrity_propose(struct mr_node *n);
/* Every tick, outside any step: proposes a CHECK entry when one is due and
 * hands leadership over when this leader's state cannot be trusted. */
void mr_node_integrity_tick(struct mr_node *n);
/* A CHECK entry was applied at `index`: hash the state in a child. Loop
 * thread, apply thread idle (node_apply.c applies CHECK entries there). */
void mr_node_integrity_apply(struct mr_node *n, mr_index index);
/* Reaps hash children, reports, decides late rounds (every 50 ms). */
void mr_node_integrity_poll(struct mr_node *n);
/* An apply at `index` may have decided differently on another replica. */
void mr_node_integrity_suspect(struct mr_node *n, mr_index index, const char *why);
void mr_node_integrity_on_msg(struct mr_node *n, mr_node_id from, const uint8_t *p, size_t len);
void mr_node_integrity_on_verdict(struct mr_node *n, mr_index index, int ok, const char *ref);
/* Asks the leader for a snapshot to rebuild the state machine from. */
void mr_node_integrity_resync_start(struct mr_node *n);
/* A resync snapshot at (s, term) arrived and is the newest file: rebuild
 * (after mr_node_apply_sync; the re-apply runs on the loop, mr_node_apply_now). */
void mr_node_integrity_resync_install(struct mr_node *n, mr_index s, mr_term term);
/* SNAPSHOT messages with this ctx carry a resync snapshot, not a Raft install. */
#define MR_NODE_SNAP_RESYNC_CTX UINT64_C(0x7265737963) /* "resyc" */
/* Leader: streams the resync snapshot once one covers the request. */
void mr_node_integrity_resync_pump(struct mr_node *n);
/* 1 while this node must not serve reads from its state. */
int mr_node_integrity_blocks_reads(const struct mr_node *n);
void mr_node_integrity_json(struct mr_node *n, struct mr_http_json *j);
void mr_node_integrity_close(struct mr_node *n);

/* node_timers.c: ctx.wake_at / tick through TICK entries (see there) */
/* Every tick, outside any step: the leader proposes a TICK entry once the
 * state machine's earliest deadline has passed. */
void mr_node_timers_tick(struct mr_node *n);
/* A committed TICK entry (payload kind MR_NODE_ENTRY_TICK), in two parts:
 * the state machine's (the apply thread, or the loop when idle; touches
 * n->sm and n->last_time_ms only) runs tick(ctx) into res and returns 0,
 * MR_EMALFORMED (a bad payload: nothing ran) or the host's failure; the
 * loop's then records the outcome (counters, events, the answer). */
int mr_node_timers_apply_sm(struct mr_node *n, const struct mr_raft_entry *e,
                            struct mr_sm_result *res);
void mr_node_timers_applied(struct mr_node *n, const struct mr_raft_entry *e, int rv,
                            struct mr_sm_result *res);
void mr_node_timers_json(struct mr_node *n, struct mr_http_json *j);
/* Section MR_NODE_SECTION_TIMERS: body size (out NULL) or bytes; validation
 * (MR_ECORRUPT); installing the parsed body after the restore. */
size_t mr_node_timers_encode(struct mr_node *n, unsigned char *out);
int mr_node_timers_parse(const unsigned char *p, size_t len, char *errmsg);
int mr_node_timers_commit(struct mr_node *n, const unsigned char *p, size_t len, char *errmsg);

/* node_sections.c: node-level replicated state in snapshots (see there) */
#define MR_NODE_SECTION_TIMERS 2 /* pending deadlines (mr_sm_deadlines_encode) */
struct mr_node_sections {
    int reserved_; /* parsed sections point into the snapshot buffer */
    const unsigned char *timers; /* NULL: no timers section (no deadline pending) */
    size_t timers_len;
    /* parsed sections point into the snapshot buffer */
    int has_script; /* MR_NODE_SECTION_SCRIPT: the script the payload was taken with */
    const char *script_src;
    size_t script_len;
    const char *script_label;
    size_t script_label_len;
    mr_index script_index;
};
#define MR_NODE_SECTION_SCRIPT 1
/* Encodes every section into out (NULL: only computes the size); returns the size. */
size_t mr_node_sections_encode(struct mr_node *n, unsigned char *out);
/* Validates untrusted bytes: 0 or MR_ECORRUPT (errmsg says why). */
int mr_node_sections_parse(const unsigned char *p, size_t len, struct mr_node_sections *out,
                           char *errmsg);
/* Makes parsed sections the node's state (after the state machine restored),
 * in two parts: the state machine's (the apply thread, or the loop when
 * idle; 0, or the host's failure: the state is then incomplete, stop), then
 * the loop's. */
int mr_node_sections_commit(struct mr_node *n, const struct mr_node_sections *s, char *errmsg);
void mr_node_sections_committed(struct mr_node *n);

/* node_deploy.c: deploying a script through the log (see there) */
#define MR_NODE_MAX_SCRIPT_LABEL 256 /* bytes */
struct mr_node_script_entry {
    const char *label; /* not NUL-terminated */
    size_t label_len;
    const char *src;
    size_t src_len;
};
/* New SCRIPT entry payload (refs = 1) or NULL on OOM / label too long. */
struct mr_rcbuf *mr_node_script_entry_encode(const char *label, size_t label_len,
                                             const char *src, size_t len);
/* Parses untrusted bytes; `out` points into `p`. MR_EMALFORMED on bad input. */
int mr_node_script_entry_decode(const unsigned char *p, size_t len,
                                struct mr_node_script_entry *out);
int mr_node_is_script_entry(const struct mr_raft_entry *e);
/* Leader: validates op (OP_DEPLOY) and starts the trial migration; answers
 * the op itself on failure. Takes the state machine from the apply thread
 * first (mr_node_apply_sync). */
void mr_node_deploy_start(struct mr_node *n, struct mr_node_op *op);
/* Every tick, outside any step: reaps the trial and proposes the entry. */
void mr_node_deploy_tick(struct mr_node *n);
/* A SCRIPT entry was committed: switch (or refuse) and answer the op. Loop
 * thread, apply thread idle (node_apply.c applies SCRIPT entries there). */
void mr_node_deploy_apply(struct mr_node *n, const struct mr_raft_entry *e);
void mr_node_deploy_close(struct mr_node *n);
/* {"hash","label","size","index"} of the running script. */
void mr_node_script_json(struct mr_node *n, struct mr_http_json *j);
void mr_node_script_metrics(struct mr_node *n, struct mr_http_buf *b);

/* node_members.c */
void mr_node_apply_config(struct mr_node *n, const void *data, size_t len, mr_index index);
void mr_node_members_tick(struct mr_node *n);
/* Adds transport peers for every server of the core's newest configuration,
 * and notices when this node was removed (mr_node_members_check_removed). */
void mr_node_members_sync(struct mr_node *n);
/* Reads <data_dir>/removed at start: sets is_removed and returns the index
 * of the configuration that removed this node (a commit index for
 * mr_raft_load), or 0 when the node was not removed. */
mr_index mr_node_members_load_removed(struct mr_node *n);
/* After each step: a committed configuration without this (former) member
 * makes it removed (one log line, the marker file); one with it again
 * clears that. */
void mr_node_members_check_removed(struct mr_node *n);
int mr_node_members_bootstrap_static(struct mr_node *n);
void mr_node_members_on_add(struct mr_node *n, struct mr_node_op *op);
void mr_node_members_json(struct mr_node *n, struct mr_http_json *j);

/* node_backup.c: GET /v1/backup (see there) */
void mr_node_backup_route(struct mr_node *n, struct mr_http_request *req);
/* Every 50 ms: starts the snapshots pending backups wait for, and hands
 * each one whose snapshot is durable to a work thread. */
void mr_node_backup_tick(struct mr_node *n);
/* Shutdown: answers the backups still waiting for a snapshot (503); those
 * on a work thread answer when it completes (during the final uv_run). */
void mr_node_backup_close(struct mr_node *n);

/* node_watch.c */
void mr_node_watch_record(struct mr_node *n, mr_index index, const char *events,
                          size_t len);
void mr_node_watch_add(struct mr_node *n, struct mr_http_request *req);
void mr_node_watch_notify(struct mr_node *n);
void mr_node_watch_expire(struct mr_node *n, int all);
void mr_node_watch_close(struct mr_node *n);

/* ---- a full disk (node_disk.c) ---------------------------------------------------------- */
/* The storage seam to open the store with: `inner` wrapped in the space
 * limit layer when max_data_bytes or MOONRAFT_FAULT_DISK_LIMIT_FILE is set. */
const struct mr_store_fs *mr_node_disk_fs(struct mr_node *n, const struct mr_store_fs *inner);
void mr_node_disk_close(struct mr_node *n); /* after mr_store_close */
void mr_node_disk_metrics(struct mr_node *n, struct mr_http_metrics *m);
/* Raises or clears the NOSPACE alarm from the store's progress. */
void mr_node_disk_on_progress(struct mr_node *n, const struct mr_store_progress *p);
/* Each tick: measures usage; under the alarm hands leadership over and frees space. */
void mr_node_disk_tick(struct mr_node *n);
/* Answers a write 507 insufficient_storage (and returns 1) under the alarm. */
int mr_node_disk_refuse(struct mr_node *n, struct mr_node_op *op);
void mr_node_disk_json(struct mr_node *n, struct mr_http_json *j);
void mr_node_disk_alarms_json(struct mr_node *n, struct mr_http_json *j);

#endif
