/* sm internals shared by sm_*.c. Not part of the module contract. */
#ifndef MR_SM_INT_H
#define MR_SM_INT_H

#include <lua.h>

#include "sm/sm.h"

/* Growable byte buffer (mr_realloc'd). Owned by a vm so that a longjmp out
 * of a Lua API call never leaks it (STYLE 14). */
struct mr_sm_buf {
    char *p;
    size_t len;
    size_t cap;
};
int mr_sm_buf_reserve(struct mr_sm_buf *b, size_t extra);
int mr_sm_buf_append(struct mr_sm_buf *b, const void *data, size_t n);
void mr_sm_buf_free(struct mr_sm_buf *b);

/* One object key collected for sorting by the encoder. */
struct mr_sm_key {
    const char *s; /* points into a Lua string or into numbuf */
    size_t len;
    lua_Integer ik;
    int is_int;
    size_t numoff; /* integer keys: offset of the text in numbuf */
};

/* Scratch space the JSON codec needs. */
struct mr_sm_json_scratch {
    struct mr_sm_key *keys; /* used as a stack across nesting levels */
    size_t nkeys;
    size_t capkeys;
    struct mr_sm_buf numbuf; /* decimal text of integer keys */
    struct mr_sm_buf str;    /* decoder: unescaped strings, number text */
};
void mr_sm_json_scratch_free(struct mr_sm_json_scratch *s);

/* A set of deadlines (ms, ctx.time's unit): sorted ascending, no two equal
 * (sm_timers.c). */
struct mr_sm_deadlines {
    int64_t *v;
    size_t n;
    size_t cap;
};
/* 1 when ms is in d; *pos (if not NULL) is its position or where it would go. */
int mr_sm_deadlines_find(const struct mr_sm_deadlines *d, int64_t ms, size_t *pos);
/* Adds ms at pos (from mr_sm_deadlines_find, which said absent): 0 or MR_ENOMEM. */
int mr_sm_deadlines_insert_at(struct mr_sm_deadlines *d, size_t pos, int64_t ms);
/* dst := dst U src. On MR_ENOMEM dst is unchanged. */
int mr_sm_deadlines_merge(struct mr_sm_deadlines *dst, const struct mr_sm_deadlines *src);
/* Removes every deadline <= ms; returns how many. */
size_t mr_sm_deadlines_pop_due(struct mr_sm_deadlines *d, int64_t ms);
void mr_sm_deadlines_free(struct mr_sm_deadlines *d);
/* ctx.wake_at, for sm.c to put in ctx. */
lua_CFunction mr_sm_fn_wake_at(void);
/* The sm's pending deadlines (sm.c owns them). */
struct mr_sm_deadlines *mr_sm_deadlines_of(struct mr_sm *sm);

/* One sandboxed Lua state (a restore builds a second one and swaps). */
struct mr_sm_vm {
    lua_State *L;
    size_t mem_used;
    size_t mem_limit;
    int mem_enforce;  /* allocator refuses growth past mem_limit */
    uint64_t budget;  /* instructions for the current call, 0 = none */
    uint64_t counted; /* instructions counted so far (in hook chunks) */
    int hook_chunk;   /* count given to lua_sethook */
    int budget_tripped;
    int in_call;      /* inside mr_sm_vm_pcall */
    int mem_error;    /* C code (sortedset, sortedmap) hit the heap cap in this call */
    int mem_refused;  /* the allocator refused growth (heap cap) in this call */
    uint64_t c_steps; /* work done in C for this call (patterns, JSON, sort) */
    /* Length cache of sm_order.c (one table per call): the table (anchored
     * in the registry while cached; compared by address only) and the
     * length last computed or set for it. */
    const void *len_table;
    lua_Integer len_value;
    /* Undo journal of the current call (sm_txn.c). */
    int txn_on;              /* journal writes (inside apply/query) */
    lua_Integer txn_n;       /* journal slots used (3 per entry) */
    lua_Integer txn_nup;     /* tracked upvalues */
    lua_Integer txn_nsaved;  /* tracked upvalues saved before this call */
    const void *txn_last_s;  /* the last journal entry, if a table write: its */
    const void *txn_last_k;  /* shadow, key (string or marker) and integer key */
    lua_Integer txn_last_i;
    int txn_ref[8];          /* registry refs of sm_txn.c's tables */
    struct mr_rand rng;
    int ref_apply, ref_query, ref_snapshot, ref_restore, ref_module;
    int ref_array_mt;        /* registry ref of the JSON array marker metatable */
    int in_apply;            /* ctx.emit and ctx.wake_at allowed */
    int ref_tick;            /* the optional tick(ctx), LUA_NOREF when absent */
    /* Timers (sm_timers.c): deadlines asked for by the call in progress,
     * merged into `committed` (the sm's set) only when it succeeds. */
    struct mr_sm_deadlines staged;
    const struct mr_sm_deadlines *committed;
    int timer_nomem; /* the host could not stage a deadline (MR_ENOMEM) */
    struct mr_sm_buf out;    /* encoder output */
    struct mr_sm_buf events; /* "[ev,ev" while applying */
    struct mr_sm_buf dump;   /* sm_txn.c: a function's bytecode, scanned once */
    struct mr_sm_json_scratch js;
};

/* The vm that owns L (stored in the state's extra space). */
static inline struct mr_sm_vm *mr_sm_vm_of(lua_State *L)
{
    return *(struct mr_sm_vm **)lua_getextraspace(L);
}

/* Creates a sandboxed state (libraries, replacements, json, canonical) and
 * loads the script into it (under `budget` instructions), checking the contract and
 * capturing the four functions (and the optional tick) as registry refs; then locks globals. On failure returns
 * MR_ESCRIPT/MR_ENOMEM with errmsg and frees everything. */
int mr_sm_vm_new(struct mr_sm_vm **out, const char *src, size_t srclen, const char *name,
                 uint64_t budget, uint64_t mem_limit, char *errmsg);
void mr_sm_vm_free(struct mr_sm_vm *vm);
/* Frees scratch buffers that grew large (call between calls, never inside). */
void mr_sm_vm_trim(struct mr_sm_vm *vm);

/* Protected call helper (STYLE 14): the function and its nargs arguments are
 * on the stack. Runs it with a traceback message handler under `budget`
 * instructions (0 = unlimited) and, if mem_enforce, the heap cap. Returns an
 * enum mr_sm_status; on success nres results are on the stack, on failure
 * the error text (message + traceback) is on the stack instead (1 value).
 * For MR_SM_MEMORY_EXCEEDED the message is Lua's "not enough memory". */
int mr_sm_vm_pcall(struct mr_sm_vm *vm, int nargs, int nres, uint64_t budget,
                   int mem_enforce);

/* Marks the instruction budget as exhausted (sticky for the rest of the call)
 * and raises the budget error. Never returns. */
void mr_sm_vm_trip_budget(lua_State *L) __attribute__((noreturn));
/* Bytes of string built per unit of budget (see mr_sm_charge). */
#define MR_SM_BYTES_PER_STEP 64

/* Charges n units of C-side work (a pattern step, a JSON value, a sort
 * comparison) to the current call's instruction budget; raises the budget
 * error when it runs out. C code is invisible to the count hook, so every
 * library function whose work is not linear in memory it allocates charges
 * here: a script cannot spin in C on the budget of one instruction. */
static inline void mr_sm_charge(lua_State *L, uint64_t n)
{
    struct mr_sm_vm *vm = mr_sm_vm_of(L);
    vm->c_steps += n;
    if (vm->budget > 0 && vm->c_steps + vm->counted > vm->budget) mr_sm_vm_trip_budget(L);
}

/* Raises "not enough memory" for C code whose allocation through the Lua
 * allocator failed; the call then reports MR_SM_MEMORY_EXCEEDED. */
void mr_sm_vm_raise_memory(lua_State *L) __attribute__((noreturn));
/* Registers the global `sortedset` (sm_sortedmap.c: the same B+tree). */
void mr_sm_sortedset_open(lua_State *L);
/* Registers the global `sortedmap` (sm_sortedmap.c). */
void mr_sm_sortedmap_open(lua_State *L);
/* canonical.keys as a C function (for sortedset.from). */
lua_CFunction mr_sm_fn_keys(void);
/* Replaces pairs, next, tostring, string.format, rawlen and
 * table.insert/remove/unpack/concat with deterministic versions
 * (sm_order.c). Call after the table and string libraries are open. */
void mr_sm_order_open(lua_State *L);
/* The length table functions use (sm_order.c): __len if any, else a border
 * of the table that depends on its contents only (#t for a sequence). May
 * raise (a __len metamethod, a non-table without one). */
lua_Integer mr_sm_len(lua_State *L, int idx);
/* Drops the per-call caches of sm_order.c (next snapshot, tostring serials).
 * Never raises: safe outside a protected call. */
void mr_sm_order_reset(lua_State *L);
/* Atomic calls (sm_txn.c: state tables become journaled proxies).
 * mr_sm_txn_open registers the registry slots and replaces getmetatable and
 * rawget; call it before the libraries it must skip are marked. */
void mr_sm_txn_open(lua_State *L);
/* Marks the table at idx as a library table: never converted. */
void mr_sm_txn_skip(lua_State *L, int idx);
/* Marks the globals, the library tables in them and their metatables. */
void mr_sm_txn_skip_libraries(lua_State *L);
/* Converts everything reachable from the roots (module table, the captured
 * functions, globals). Inside a protected call. */
void mr_sm_txn_adopt_roots(lua_State *L);
/* If the value at idx is a proxy, pushes its shadow and returns 1; else
 * pushes nothing and returns 0. Never raises. */
int mr_sm_txn_shadow(lua_State *L, int idx);
/* rawset(t, k, v) with t, k, v at 1..3: if t is a proxy, does the journaled
 * write and returns 1 (stack unchanged); else returns 0. */
int mr_sm_txn_rawset(lua_State *L);
/* setmetatable(t, mt) for a proxy t (journaled): returns 1; 0 if t is not a
 * proxy (nothing done). Raises like setmetatable. */
int mr_sm_txn_setmetatable(lua_State *L, int t, int mt);
/* Pushes the metatable to install for the table at mt (its shadow if it is
 * a proxy). */
void mr_sm_txn_push_installed(lua_State *L, int mt);
/* Records (target, key, old) in the current call's journal (old 0: nil);
 * no-op outside apply/query. target is a shadow table, a proxy (metatable
 * change) or a sortedmap/sortedset userdata. May raise a memory error. */
void mr_sm_txn_journal(lua_State *L, int target, int key, int old);
/* Starts a call: saves the tracked upvalues (converting tables newly found
 * in them) and turns the journal on. Inside the call's protected call. */
void mr_sm_txn_begin(lua_State *L);
/* Ends a call that succeeded: forgets the journal. Never raises. */
void mr_sm_txn_commit(lua_State *L);
/* Ends a call that failed: undoes every journaled change and puts the
 * upvalues back, without heap cap or budget. Outside any protected call.
 * Returns 0, or MR_ENOMEM if the process ran out of memory meanwhile. */
int mr_sm_txn_rollback(struct mr_sm_vm *vm);
/* Puts back a sortedmap/sortedset entry (rollback): old nil removes key. */
void mr_sm_sortedmap_undo(lua_State *L, int map, int key, int old);
/* Replaces string.find/match/gmatch/gsub with the budgeted matcher. */
void mr_sm_pattern_open(lua_State *L);

/* ctx.emit and ctx.random (== math.random) for sm.c to put in ctx. */
lua_CFunction mr_sm_fn_emit(void);
lua_CFunction mr_sm_fn_random(void);

/* Calls snapshot() in vm (no heap cap, bulk budget). On success the string
 * stays on the Lua stack, data and len point into it; the caller pops it. */
int mr_sm_vm_snapshot(struct mr_sm_vm *vm, const char **data, size_t *len, char *errmsg);
struct mr_sm_vm *mr_sm_vm_get(struct mr_sm *sm);

/* JSON codec. encode appends the value at `idx` to `out` (keys sorted);
 * returns 0 or MR_EMALFORMED/MR_ENOMEM with errmsg. May raise a Lua memory
 * error (longjmp) while pushing keys: call it only inside a protected call.
 * decode pushes one value; returns 0 or MR_EMALFORMED with errmsg naming the
 * byte offset; may raise a Lua memory error. */
int mr_sm_json_encode(lua_State *L, int idx, struct mr_sm_buf *out, char *errmsg);
int mr_sm_json_decode(lua_State *L, const char *s, size_t len, char *errmsg);
/* Registers json, cjson (alias) and canonical in the globals. */
void mr_sm_json_open(lua_State *L);

#endif /* MR_SM_INT_H */
