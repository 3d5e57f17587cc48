/* sm: the Lua state machine host.
 *
 * Loads the user's Lua script (DESIGN.md "The Lua state machine contract") in
 * a deterministic sandbox and drives it: apply committed commands, run
 * read-only queries, take and install snapshots, hash the state.
 *
 * The script returns a table with four functions (and an optional fifth):
 *   apply(cmd, ctx)  cmd is the decoded JSON command; ctx.index, ctx.term,
 *                    ctx.time (ms, assigned by the leader), ctx.random(),
 *                    ctx.emit(event), ctx.wake_at(ms). Returns any
 *                    JSON-encodable value.
 *   query(q)         read-only; returns any JSON-encodable value.
 *   snapshot()       returns a string (should be canonical: see below).
 *   restore(data)    replaces the state from a snapshot string.
 *   tick(ctx)        optional: runs when deadlines asked for with
 *                    ctx.wake_at are due (mr_sm_tick); same ctx as apply.
 * and optionally
 *   migrate(old, ctx) takes over the state of the script this one replaces
 *                    (mr_sm_deploy): old is that script's snapshot(); ctx has
 *                    index, term, time and random(). Without it, restore(old).
 * The functions are captured when the script loads; replacing them in the
 * module table later has no effect.
 *
 * Sandbox (STYLE 13-15). Only base, table, string, math and utf8 are opened.
 * Removed: io, os, package, debug, coroutine, require, dofile, loadfile,
 * print, warn, collectgarbage, string.dump, math.randomseed. `load` accepts
 * text chunks only. `math.random` and `ctx.random` draw from one PRNG seeded
 * from the entry's (term, index) before each apply (queries, load, snapshot
 * and restore use seed 0). `table.sort` is replaced by a stable merge sort
 * (Lua's own picks random pivots for big arrays, so ties could land in a
 * different order on each node). `setmetatable` refuses metatables with
 * `__gc` or `__mode`: finalizers and weak tables depend on GC timing, which
 * differs between replicas; a metatable without a metatable of its own gets
 * a guard whose __newindex (and `rawset`) refuses to add either later. After
 * the script has loaded, globals are locked: assigning or reading an
 * undefined global raises an error.
 *
 * Order and addresses (sm_order.c). `pairs` and `next` visit keys in one
 * total order (numbers numerically, then strings bytewise, then false, true)
 * on every replica, however the table was built (replayed or restored);
 * tables with other key types (tables, functions, userdata) cannot be
 * iterated: pairs/next raise "pairs: table keys have no deterministic order
 * (keys of type ...)". `__pairs` still works. pairs sorts a snapshot of the
 * keys once (O(n log n), charged n * (1 + bitlen(n)) units); next keeps the
 * last such snapshot per call, and next(t, nil) is an O(n) scan. `tostring`
 * of a table, function, userdata or thread reads "table: #3", a serial
 * numbered per call into the script (not an address); `string.format` %s
 * does the same and %p raises. `rawlen` and table.insert/remove/unpack/
 * concat/sort use a length that depends on the table's contents only
 * (__len, else the border found by probing 1, 2, 4, ... and bisecting; the
 * last table measured in a call keeps its length while that is still a
 * border, so that table.insert in a loop stays O(1)).
 *
 * JSON. The host has its own codec (sm_json.c) instead of lua-cjson: the
 * Debian lua-cjson 2.1.0 decodes every number as a float and encodes with
 * %.14g, so 2^53+1 or 2^63-1 cannot round-trip. Ours keeps Lua integers
 * (int64) exact, keeps floats exact (shortest round-trip form, 1.0 stays
 * "1.0"), maps JSON null to `json.null` (a NULL light userdata, the same value
 * as lua-cjson's cjson.null), decodes arrays with a marker metatable so that
 * `[]` re-encodes as `[]`, and always writes object keys sorted bytewise, so
 * every encoding is canonical. Scripts see it as `json` (encode, decode,
 * null, array(t) marks a table as an array), `canonical.encode` (the same
 * encoder), `canonical.keys(t [, prefix [, limit [, after]]])` (the string keys of t,
 * sorted, in C: the deterministic way to iterate) and `cjson` (an alias of
 * `json`, for scripts written for lua-cjson). `json.raw(text)` wraps text
 * that is already one JSON value (checked when wrapped) for the encoder to
 * write verbatim. `sortedset.new()` / `sortedset.from(t)` give an ordered set
 * of strings kept in C (add, remove, has, count, range(prefix, limit,
 * after)); `sortedmap.new()` / `sortedmap.load(dump)` an ordered map of
 * strings to strings in C (set, get, has, remove, count, range, items, dump):
 * kv.lua's store (sm_sortedmap.c has the details).
 * Strings must be valid UTF-8; NaN and infinities are refused. Tables whose keys are
 * exactly 1..n encode as arrays, others as objects (integer keys become strings); an
 * empty table is `{}` unless marked with json.array.
 *
 * Budgets. Loading the script and each apply/query call run under the
 * instruction budget. It counts Lua VM instructions (LUA_MASKCOUNT hook) plus
 * the work done in C on the script's behalf, which the hook cannot see: one
 * unit per pattern-matching step (string.find/match/gmatch/gsub are our own
 * re-implementation, sm_pattern.c, because Lua's backtracking matcher is
 * polynomial in the subject: a "trim" pattern is quadratic and would freeze
 * every node on one command), per JSON value encoded or decoded, per key
 * scanned by canonical.keys, per table.sort comparison, and per 64 bytes of
 * long string built (concatenation, string.rep, table.concat, ...) or
 * scanned, per key sorted by pairs/next, and per sortedmap seek (from the
 * map's count, not from the nodes visited: the B+tree's shape depends on
 * its history). Every charge is a function of what the script computes,
 * never of heap layout, hash order or garbage: the budget trips at the same
 * instruction on every replica. Once tripped, the hook fires on every
 * instruction, so the script's own pcall cannot swallow the error.
 *
 * The Lua heap has a byte cap enforced by the allocator during load, apply
 * and query (not during snapshot and restore, which must not fail on a state
 * that once fit). Budget and cap give the same outcome on every node only if
 * THE SAME LIMITS ARE CONFIGURED ON EVERY NODE. The heap cap is a safety net:
 * the heap of a replica restored from a snapshot is laid out slightly
 * differently from one that replayed the log, and holds a different amount
 * of garbage, so a command that lands near the cap may fail on one replica
 * and not on another. Such a result carries is_uncertain = 1 (see struct
 * mr_sm_result): the node must then treat its state as suspect. Keep the cap
 * well above the working set.
 *
 * Timers (sm_timers.c). ctx.wake_at(ms) (apply and tick only; an integer,
 * in ctx.time's unit; raises when the script has no tick function) adds ms to
 * the sm's set of pending deadlines: sorted, equal values merged, at most
 * MR_SM_MAX_DEADLINES. The set is replicated state kept by the host, not by
 * the script: deadlines asked for during a call that ends in an error are
 * dropped with the rest of the call (see below). The node reads the
 * earliest one (mr_sm_next_deadline), has the leader log a tick entry once
 * it is due, and every replica then calls mr_sm_tick at that log position.
 * The set is not part of the script's snapshot() payload: the node carries
 * it beside the payload (mr_sm_deadlines_encode / _restore).
 *
 * Failing applies are atomic (sm_txn.c). A Lua error, a budget trip, the
 * memory cap or an unencodable result ends the call with an error result AND
 * LEAVES NO TRACE: every change the call made is undone and its events are
 * dropped, so the state is exactly the state before the call (on every
 * replica, replayed or restored). Covered: the script's tables reachable
 * from its module table, globals and function upvalues (they are made
 * journaled proxies when the script loads and when a table is stored into
 * one: contents in a hidden shadow table, writes through a C __newindex that
 * records the old value), the upvalues some closure assigns (saved before
 * each call), and sortedmap/sortedset contents (undo entries). The undo runs
 * without heap cap or budget. Queries are always undone the same way, so a
 * query cannot change the state. Not covered: library tables (string, json,
 * ...), tables used only as keys, and what snapshot() changes. Metamethods of
 * a user metatable other than __index/__newindex are read when it is set on
 * a state table. `#t`, rawlen, rawget, rawset, next, pairs, json, canonical
 * and getmetatable see through proxies; `#t` on a state table is the
 * content-based border (as rawlen).
 *
 * Determinism caveats the host cannot remove (docs/state-machines.md has the
 * full table of sources and what the sandbox does about each): the `#`
 * operator on a plain table with holes answers any border, and which one
 * depends on the table's layout, which differs between a replica that
 * replayed the log and one restored from a snapshot (the operator cannot be
 * intercepted without a metatable; the library functions above are
 * deterministic, and so is `#` on a state table, a proxy with a __len); math.sin/exp/log/pow and friends come from the C library,
 * which picks an implementation per CPU, so replicas on different CPU
 * families could differ in the last bit (+ - * / sqrt are exact IEEE 754);
 * NaN's sign as printed ("-nan") is the CPU's; and a metatable that has its
 * own metatable is not guarded against a later __mode. The heap cap is
 * reported through is_uncertain. Divergence detection (state hashes compared
 * between replicas) is the backstop for all of them.
 *
 * Threading: an mr_sm is used by one thread at a time. Nothing here touches
 * libuv. */
#ifndef MR_SM_H
#define MR_SM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util/util.h"

/* Defaults for struct mr_sm_options fields left at 0. */
#define MR_SM_DEFAULT_INSTRUCTION_BUDGET                                                 \
    10000000ULL /* Lua VM instructions per apply/query */
#define MR_SM_DEFAULT_MEMORY_LIMIT (1024ULL << 20) /* bytes of Lua heap: 1 GiB */
/* Snapshot and restore run under this budget (instructions): it is only there
 * to stop a snapshot() that loops forever. */
#define MR_SM_BULK_INSTRUCTION_BUDGET 4000000000ULL
/* Nice level of the forked snapshot child (a background job). */
#define MR_SM_SNAPSHOT_NICE 10
/* Events emitted by one apply (encoded JSON bytes) are capped at this. */
#define MR_SM_MAX_EVENT_BYTES (16u << 20)
/* JSON nesting deeper than this is refused (decode and encode). */
#define MR_SM_JSON_MAX_DEPTH 256

struct mr_sm;

struct mr_sm_options {
    /* Path of the script. Relative paths are relative to the current
     * directory. Read once at open: later restores reuse the running
     * script's text (this one until a deploy, mr_sm_deploy). */
    const char *script_path;
    /* Alternative to script_path (tests, embedded scripts): the script text
     * and its name ("kv.lua"). Used when script_source is not NULL. */
    const char *script_source;
    const char *script_name;
    /* 0 selects the default. Must be equal on every node. */
    uint64_t instruction_budget;
    uint64_t memory_limit_bytes;
};

/* Outcome of one apply or query, as seen by the client. The same command on
 * the same state gives the same status, json and events on every node. */
enum mr_sm_status {
    MR_SM_OK = 0,
    MR_SM_SCRIPT_ERROR, /* the script raised an error, or returned something JSON cannot
                           hold */
    MR_SM_INVALID_JSON, /* the command/query text is not valid JSON */
    MR_SM_BUDGET_EXCEEDED, /* the instruction budget tripped */
    MR_SM_MEMORY_EXCEEDED, /* the Lua heap cap was hit */
};
/* Stable machine name: "ok", "script_error", "invalid_json",
 * "budget_exceeded", "memory_exceeded". Never NULL. */
const char *mr_sm_status_name(int status);

struct mr_sm_ctx {
    mr_index index;
    mr_term term;
    int64_t time_ms; /* the leader's wall clock when it proposed, ms since epoch */
    /* TEST-ONLY fault hook (MOONRAFT_FAULT_SM_SALT): when not NULL, apply
     * sees it as ctx.fault_salt, so a test script can behave differently on
     * one node and the integrity checks must catch it. NULL in production. */
    const char *fault_salt;
};

/* Filled by mr_sm_apply/mr_sm_query. All pointers are owned by the result and
 * freed by mr_sm_result_free (which also resets it); a result may be reused
 * after that. Strings are NUL-terminated; lengths exclude the NUL. */
struct mr_sm_result {
    int status; /* enum mr_sm_status */
    char *json; /* MR_SM_OK: the encoded return value ("null" for nil); else NULL */
    size_t json_len;
    char *events; /* JSON array of events emitted by ctx.emit, or NULL if none */
    size_t events_len;
    char *error; /* not OK: the error message ("kv.lua:12: boom"); else NULL */
    char
        *traceback; /* not OK, if available: error + Lua traceback, for logs; else NULL */
    /* 1 when this outcome might differ on another replica applying the same
     * command to the same state: the Lua heap cap refused an allocation
     * during the call (even one the script then survived: a retry after an
     * emergency collection, or a memory error caught by its own pcall).
     * Whether the cap is reached depends on the heap layout and on how much
     * garbage the replica holds, which differ between replicas. The node
     * must then treat its state as suspect (stop serving reads, check or
     * resync it). Always set with MR_SM_MEMORY_EXCEEDED; may be set with any
     * status. Conservative: it may be set on a replica whose outcome in
     * fact matches the others. */
    int is_uncertain;
};
void mr_sm_result_free(struct mr_sm_result *res);

/* Loads the script in a new sandbox and checks its contract.
 * On success *out owns a new state machine (free with mr_sm_close).
 * Errors: MR_ESCRIPT when the file cannot be read, does not compile, raises
 * while loading, does not return a table, or lacks one of apply, query,
 * snapshot, restore; errmsg then names the script and line
 * ("kv.lua:3: '=' expected near 'x'"). MR_EINVAL for bad options, MR_ENOMEM.
 * *out is untouched on failure. errmsg: MR_ERRMSG_SIZE bytes, written on failure. */
int mr_sm_open(struct mr_sm **out, const struct mr_sm_options *opts, char *errmsg);

/* Closes the Lua state and frees everything. NULL-safe. */
void mr_sm_close(struct mr_sm *sm);

/* Applies one committed command (JSON text, not necessarily NUL-terminated).
 * `res` must be zeroed or freed before the call; it is always filled when 0 is
 * returned, whatever the script did. Returns 0, or MR_ENOMEM when the HOST
 * (not the script) could not allocate: the outcome is then unknown and this
 * replica may have diverged, so the node must stop applying. */
int mr_sm_apply(struct mr_sm *sm, const struct mr_sm_ctx *ctx, const char *cmd,
                size_t len, struct mr_sm_result *res);

/* Runs query(q) on the current state. Same conventions as mr_sm_apply;
 * ctx.emit does not exist. Whatever the query changes (in the tracked state,
 * see "Failing applies are atomic" above) is undone when it returns: queries
 * are read-only by construction. */
int mr_sm_query(struct mr_sm *sm, const char *q, size_t len, struct mr_sm_result *res);

/* Calls snapshot() and returns its string in *data (owned by the caller,
 * mr_free; *len excludes the NUL that follows). Blocks for the whole call:
 * for large states use mr_sm_snapshot_fork. Errors: MR_ESCRIPT (errmsg holds
 * the script error; also when snapshot() does not return a string), MR_ENOMEM. */
int mr_sm_snapshot(struct mr_sm *sm, char **data, size_t *len, char *errmsg);

/* Installs a snapshot: loads the script into a FRESH sandbox, calls
 * restore(data) there and, only if that succeeds, swaps it in for the
 * current one and empties the pending deadlines (see
 * mr_sm_deadlines_restore). On any failure the old state stays untouched and usable.
 * `data` is borrowed. Errors: MR_ESCRIPT (errmsg says why), MR_ENOMEM. */
int mr_sm_restore(struct mr_sm *sm, const char *data, size_t len, char *errmsg);

/* SHA-256 of the snapshot() payload, as 64 lowercase hex digits + NUL.
 * It is the same on every replica at the same applied index only if the
 * script's snapshot() is canonical (lua/kv.lua's is: a sortedmap dump, in
 * key order). Costs a full synchronous snapshot: cache it per applied index.
 * Errors as mr_sm_snapshot. */
int mr_sm_state_hash(struct mr_sm *sm, char hex[65], char *errmsg);

/* ---- timers ---------------------------------------------------------------- */
#define MR_SM_MAX_DEADLINES 100000 /* pending ctx.wake_at deadlines per state machine */

/* The earliest pending deadline (ms), or INT64_MAX when none is pending. */
int64_t mr_sm_next_deadline(struct mr_sm *sm);
/* The number of pending deadlines. */
size_t mr_sm_deadline_count(struct mr_sm *sm);
/* 1 when the script defines tick(ctx). */
int mr_sm_has_tick(struct mr_sm *sm);

/* Removes every pending deadline <= ctx->time_ms and, if there was one and
 * the script has a tick function, calls tick(ctx) under the instruction
 * budget and heap cap. ctx is as for apply (ctx.emit and ctx.wake_at work);
 * the PRNG is seeded from (term, index). The due deadlines are consumed even
 * when tick() fails (a failing tick is not retried at every tick); deadlines
 * tick() asked for are kept only if it succeeds. `res` is filled as by
 * mr_sm_apply (json = tick's return value, "null" when tick did not run;
 * events; error). Returns 0, or MR_ENOMEM when the host could not allocate
 * (the node must stop applying, as for mr_sm_apply). */
int mr_sm_tick(struct mr_sm *sm, const struct mr_sm_ctx *ctx, struct mr_sm_result *res);

/* Encodes the pending deadlines into out (NULL: only computes the size) and
 * returns the size: u32 count, u32 0, count * i64 ascending (little-endian). */
size_t mr_sm_deadlines_encode(struct mr_sm *sm, unsigned char *out);
/* Validates untrusted bytes from mr_sm_deadlines_encode: 0 or MR_EMALFORMED
 * (errmsg says why). Pure: no state machine needed. */
int mr_sm_deadlines_check(const unsigned char *p, size_t len, char *errmsg);
/* Replaces the pending deadlines with the encoded set (p NULL or len 0: no
 * deadlines). mr_sm_restore empties the set (the payload replaced the whole
 * state): call this after it to put back the set saved beside the payload.
 * `p` is borrowed. Errors: MR_EMALFORMED, MR_ENOMEM (the set is then
 * unchanged). */
int mr_sm_deadlines_restore(struct mr_sm *sm, const unsigned char *p, size_t len,
                            char *errmsg);

/* Checks that [s, s+len) is one JSON value exactly as mr_sm_apply will parse
 * it (RFC 8259, UTF-8 checked, nesting up to MR_SM_JSON_MAX_DEPTH). Pure C, no
 * Lua state: the HTTP layer can reject a bad command before proposing it.
 * Returns 0, or MR_EMALFORMED with errmsg "invalid JSON at byte N: why". */
int mr_sm_json_validate(const char *s, size_t len, char *errmsg);

/* SHA-256 hex of a byte range (helper shared with the fork path). */
void mr_sm_sha256_hex(const void *data, size_t len, char hex[65]);

/* ---- deploying a new script -------------------------------------------------
 * The running script is part of the replicated state: a deploy switches every
 * replica at the same log index (the node's SCRIPT entry), and snapshots
 * carry the script that goes with their payload (the node's script section).
 * The script given at open is only the first one. Its label is the base name
 * of the path ("kv.lua"); a script's label is also its chunk name (error
 * messages read "kv.lua:12: ..."; "script.lua" when the label is empty), so
 * that errors read the same on every replica. */
struct mr_sm_script_info {
    char hash[65];        /* SHA-256 hex of the running script's source */
    char config_hash[65]; /* ... of the script given at open */
    const char *label;    /* borrowed, NUL-terminated ("" when none) */
    const char *source;   /* borrowed, `size` bytes (NUL-terminated) */
    size_t size;
    mr_index index; /* log index it took effect at; 0 for the script given at open */
};
/* Borrowed pointers stay valid until the next deploy or restore. */
void mr_sm_script_info(const struct mr_sm *sm, struct mr_sm_script_info *out);

/* Compiles and loads src (label as its chunk name) in a fresh sandbox and
 * checks the contract, as mr_sm_open would; the running state is not touched.
 * Errors as mr_sm_open (MR_ESCRIPT with errmsg "v2.lua:3: ..."), MR_ENOMEM. */
int mr_sm_validate(struct mr_sm *sm, const char *src, size_t len, const char *label,
                   size_t label_len, char *errmsg);

/* Switches to a new script at log entry ctx->index: loads src in a fresh
 * sandbox, takes the running script's snapshot() and hands it to the new
 * script's migrate(old_snapshot, ctx) when the module defines one (ctx:
 * index, term, time, random; no emit), else to its restore(old_snapshot).
 * Migration runs under MR_SM_BULK_INSTRUCTION_BUDGET and, like restore,
 * without the heap cap. Only when all of that succeeded does the new script
 * replace the old one (and become what restores and mr_sm_script_info use);
 * on any failure the old script and its state stay, untouched. Deterministic:
 * the same entry on the same state succeeds or fails alike everywhere.
 * src and label are borrowed. Errors: MR_ESCRIPT (errmsg: "v2.lua:3: ..."
 * for a load error, "migrate: ..." / "restore: ..." for a migration that
 * raised, "the running script: snapshot: ..."), MR_ENOMEM. */
int mr_sm_deploy(struct mr_sm *sm, const struct mr_sm_ctx *ctx, const char *src, size_t len,
                 const char *label, size_t label_len, char *errmsg);

/* Installs a snapshot taken while `src` was the running script (since log
 * index `since`): loads src in a fresh sandbox, restore(data) there and, on
 * success, makes both the running script and state. src NULL means the script
 * given at open (a snapshot from before scripts were recorded). On failure
 * nothing changed. Errors as mr_sm_restore. */
int mr_sm_restore_script(struct mr_sm *sm, const char *src, size_t srclen, const char *label,
                         size_t label_len, mr_index since, const char *data, size_t len,
                         char *errmsg);

/* Bytes currently allocated by the Lua heap. */
size_t mr_sm_memory_used(const struct mr_sm *sm);

/* ---- fork-based snapshots (Redis BGSAVE style) ----------------------------
 * The parent forks; the child, which sees a copy-on-write image of the state
 * frozen at the moment of fork, calls snapshot(), writes the payload to `fd`
 * (from its current offset), fdatasyncs it and exits. The parent returns at
 * once and may keep applying commands. The only parent-side cost is fork()
 * itself (copying page tables: ~tens of ms per GiB of heap, see
 * bench/bench_sm_snapshot.c).
 *
 * The child must not share any other state with the parent: it uses only
 * the Lua heap, write(2) and _exit(2). The caller keeps ownership of `fd` and
 * may close its own copy right after mr_sm_snapshot_fork returns. */
struct mr_sm_snapjob {
    pid_t pid;  /* child, or 0 when no job is running */
    int pipefd; /* read end of the child's report pipe, -1 when idle */
    /* Filled when mr_sm_snapshot_poll returns 0: */
    uint64_t size; /* payload bytes written */
    uint32_t crc32c; /* of the payload */
    char hash[65];   /* hash jobs (mr_sm_hash_fork): SHA-256 hex of the payload */
};

/* Starts a job. `job` is owned by the caller and must stay valid until
 * mr_sm_snapshot_poll returns something other than MR_EBUSY, or until
 * mr_sm_snapshot_abort. Errors: -errno from pipe/fork (no child exists then). */
int mr_sm_snapshot_fork(struct mr_sm *sm, int fd, struct mr_sm_snapjob *job,
                        char *errmsg);

/* Starts a hash job: the child calls snapshot() on its frozen copy of the
 * state and reports the SHA-256 of the payload (the same value as
 * mr_sm_state_hash at this moment) instead of writing it anywhere. Used by the
 * node's integrity checks, so that hashing a large state never blocks the
 * event loop. Poll and abort it as a snapshot job; `size` and `hash` are
 * filled on success. Errors as mr_sm_snapshot_fork. */
int mr_sm_hash_fork(struct mr_sm *sm, struct mr_sm_snapjob *job, char *errmsg);

/* Starts a trial deploy: the child runs mr_sm_deploy(src) on its frozen copy
 * of the state and reports whether the migration succeeded (errmsg of
 * mr_sm_snapshot_poll holds its error: MR_ESCRIPT). The leader uses it to
 * refuse a script before logging it without blocking its event loop on a
 * large state. src and label are read by the child only (fork copies them).
 * Poll and abort it as a snapshot job. Errors as mr_sm_snapshot_fork. */
int mr_sm_deploy_fork(struct mr_sm *sm, const struct mr_sm_ctx *ctx, const char *src,
                      size_t len, const char *label, size_t label_len,
                      struct mr_sm_snapjob *job, char *errmsg);

/* Reaps the child. If `wait` is 0 and the child is still running, returns
 * MR_EBUSY. Otherwise the job is finished (pid = 0, pipe closed) and the
 * result is 0 (size and crc32c filled), MR_ESCRIPT (snapshot() failed),
 * MR_EIOERR (writing failed: errmsg names the errno) or MR_ECANCELED (the
 * child was killed). */
int mr_sm_snapshot_poll(struct mr_sm_snapjob *job, int wait, char *errmsg);

/* Kills a running child (SIGKILL) and reaps it. NULL-safe / idle-safe. */
void mr_sm_snapshot_abort(struct mr_sm_snapjob *job);

#endif /* MR_SM_H */
