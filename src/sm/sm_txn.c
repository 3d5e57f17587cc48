/* Atomic commands: an apply (or a query) that raises leaves no trace.
 *
 * Stock Lua 5.4 has no hook on table writes, so the script's state tables
 * are made *journaled proxies*: a state table T keeps its identity, but its
 * contents move into a hidden shadow table S and T (now empty) gets a host
 * metatable PM of its own:
 *   PM.__index    = S (a table: the VM follows it without a C call), or, when
 *                   the user's metatable has a function __index, a C closure
 *                   that reads S then calls that function with T;
 *   PM.__newindex = l_px_newindex: records (S, key, old value) in the call's
 *                   undo journal, then rawsets S (a key S lacks goes first to
 *                   the user's __newindex, as it would on a plain table);
 *   PM.__len      = the border of S (content-based: see sm_order.c), unless
 *                   the user's metatable has a __len;
 *   the other metamethods of the user's metatable are copied into PM when it
 *   is set (setmetatable on a proxy, or the conversion). The user's metatable
 *   itself is installed on S, so a table __index chain (classes) works as is.
 * Since T stays empty, every write to it reaches __newindex.
 *
 * Which tables. Everything reachable (through values, metatables and the
 * upvalues of Lua functions) from the roots: the module table, the four
 * captured functions and the script's globals, when the script has loaded.
 * The library tables that exist before the script runs (string, table, json,
 * ...; their metatables) are left alone. A table or function stored into a
 * proxy is converted (recursively) at that moment. Upvalues: every upvalue
 * that some closure assigns (SETUPVAL, found in the bytecode of each Lua
 * function met by a conversion: see "which upvalues can change" below) is
 * tracked (deduplicated by lua_upvalueid); their values are saved before
 * each call and put back if it fails; a table or function found in a
 * tracked upvalue that is not converted yet (assigned directly to the
 * upvalue by the last call, or by restore()) is converted at the start of
 * the next call. A tracked table used as a metatable is
 * installed as its shadow (metamethod lookups are raw), and getmetatable maps
 * it back. C-side stores (sortedmap, sortedset) journal their own changes
 * through mr_sm_txn_journal.
 *
 * Rollback walks the journal backwards, with the heap cap and the budget
 * lifted (it only puts back values that existed before the call, so it can
 * fail only if the process itself is out of memory: MR_ENOMEM, the node
 * stops). Queries are always rolled back: they are read-only by
 * construction. */
#include <string.h>

#include <lauxlib.h>

#include "sm/sm_int.h"

/* Registry slots: integer refs in vm->txn_ref (array slots of the
 * registry: the fastest lookups there). */
enum {
    R_JOURNAL, /* array: target, key, old value, ... (3 slots each); false once dropped */
    R_UPVALS,  /* array: function, upvalue number, ... */
    R_UPIDS,   /* set of tracked upvalue ids (light userdata) */
    R_SAVED,   /* array: values of the tracked upvalues before the call */
    R_SKIP,    /* set of library tables: never converted */
    R_S2P,     /* weak-keyed: shadow -> proxy (for shadows used as metatables) */
    R_FNSEEN,  /* weak-keyed: Lua functions whose upvalues are tracked */
    R_COUNT
};
/* Markers. */
static const char k_shadow; /* PM[1] = S, PM[2] = &k_shadow: the proxy mark
                               * (array slots: the fastest lookups) */
static const char k_nil;    /* a nil old value in the journal */
static const char k_mt;     /* journal key: the user metatable of a proxy changed */

/* Metamethods copied from the user's metatable into PM (__index, __newindex
 * and __len are handled separately). */
static const char *const copied[] = {
    "__add", "__sub", "__mul",    "__div",    "__mod",  "__pow",      "__unm",
    "__idiv", "__band", "__bor",  "__bxor",   "__shl",  "__shr",      "__bnot",
    "__concat", "__eq", "__lt",   "__le",     "__call", "__tostring", "__name",
    "__close", "__pairs", "__jsontype", NULL};

/* ---- proxies --------------------------------------------------------------------- */

int mr_sm_txn_shadow(lua_State *L, int idx)
{
    if (!lua_getmetatable(L, idx)) return 0;
    /* a script cannot make a light userdata: PM[2] cannot be forged */
    if (lua_rawgeti(L, -1, 2) == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == &k_shadow) {
        lua_rawgeti(L, -2, 1);
        lua_copy(L, -1, -3); /* cheaper than a rotation */
        lua_pop(L, 2);
        return 1;
    }
    lua_pop(L, 2);
    return 0;
}

static int is_proxy(lua_State *L, int idx)
{
    if (lua_type(L, idx) != LUA_TTABLE || !mr_sm_txn_shadow(L, idx)) return 0;
    lua_pop(L, 1);
    return 1;
}

static int push_slot(lua_State *L, int slot)
{
    return lua_rawgeti(L, LUA_REGISTRYINDEX, mr_sm_vm_of(L)->txn_ref[slot]);
}

/* registry[slot] = the value at top (popped); the slot exists: no allocation */
static void set_slot(lua_State *L, int slot)
{
    lua_rawseti(L, LUA_REGISTRYINDEX, mr_sm_vm_of(L)->txn_ref[slot]);
}

/* Appends (target, key, old) to the journal; old == 0 means nil. The entry
 * counts only once complete (an allocation failure leaves it out). */
static void journal(lua_State *L, int target, int key, int old)
{
    struct mr_sm_vm *vm = mr_sm_vm_of(L);
    target = lua_absindex(L, target);
    key = lua_absindex(L, key);
    if (old != 0) old = lua_absindex(L, old);
    if (push_slot(L, R_JOURNAL) != LUA_TTABLE) {
        lua_pop(L, 1); /* dropped after a big call: a new one */
        lua_newtable(L);
        lua_pushvalue(L, -1);
        set_slot(L, R_JOURNAL);
    }
    lua_pushvalue(L, target);
    lua_rawseti(L, -2, vm->txn_n + 1);
    lua_pushvalue(L, key);
    lua_rawseti(L, -2, vm->txn_n + 2);
    if (old != 0)
        lua_pushvalue(L, old);
    else
        lua_pushlightuserdata(L, (void *)&k_nil);
    lua_rawseti(L, -2, vm->txn_n + 3);
    lua_pop(L, 1);
    vm->txn_n += 3;
    vm->txn_last_s = NULL; /* px_store sets it again for its own entries */
}

void mr_sm_txn_journal(lua_State *L, int target, int key, int old)
{
    if (!mr_sm_vm_of(L)->txn_on) return;
    journal(L, target, key, old);
}

static int l_px_len(lua_State *L)
{
    if (!mr_sm_txn_shadow(L, 1)) return luaL_error(L, "not a state table");
    lua_pushinteger(L, mr_sm_len(L, -1));
    return 1;
}

static int l_px_index_fn(lua_State *L)
{
    lua_settop(L, 2);
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_call(L, 2, 1);
    return 1;
}

static void adopt(lua_State *L, int idx);

/* Whether the value at idx may hold state not converted yet: a table that
 * is neither a proxy nor a library table, or a Lua function whose upvalues
 * are not tracked yet. */
static int needs_adopt(lua_State *L, int idx)
{
    int t = lua_type(L, idx);
    if (t == LUA_TTABLE) {
        if (is_proxy(L, idx)) return 0;
        /* a shadow installed as a metatable (met as the metatable of a
         * table set up before it was converted) is state already */
        push_slot(L, R_S2P);
        lua_pushvalue(L, idx < 0 ? idx - 1 : idx);
        int shadow = lua_rawget(L, -2) != LUA_TNIL;
        lua_pop(L, 2);
        if (shadow) return 0;
        push_slot(L, R_SKIP);
    } else if (t == LUA_TFUNCTION && !lua_iscfunction(L, idx)) {
        push_slot(L, R_FNSEEN);
    } else {
        return 0;
    }
    lua_pushvalue(L, idx < 0 ? idx - 1 : idx);
    int known = lua_rawget(L, -2) != LUA_TNIL;
    lua_pop(L, 2);
    return !known;
}

/* The value at top-1 is the key, top the value; S at `s`. Journals and
 * rawsets. Raises (before journaling) on a nil or NaN key. */
static void px_store(lua_State *L, int s)
{
    int k = lua_gettop(L) - 1, v = k + 1;
    int kt = lua_type(L, k), vt = lua_type(L, v);
    size_t klen = 0;
    const char *kstr = kt == LUA_TSTRING ? lua_tolstring(L, k, &klen) : NULL;
    if (kt == LUA_TNIL) luaL_error(L, "index is nil");
    if (kt == LUA_TNUMBER && lua_tonumber(L, k) != lua_tonumber(L, k))
        luaL_error(L, "index is NaN");
    if ((vt == LUA_TTABLE || vt == LUA_TFUNCTION) && needs_adopt(L, v)) adopt(L, v);
    if (kstr != NULL && kstr[0] == '_' && kstr[1] == '_') {
        /* a shadow installed as a metatable must not gain __gc or __mode
         * (sm_sandbox.c guards plain metatables the same way) */
        push_slot(L, R_S2P);
        lua_pushvalue(L, s);
        int is_mt = lua_rawget(L, -2) != LUA_TNIL;
        lua_pop(L, 2);
        const char *ks = lua_tostring(L, k);
        if (is_mt && (strcmp(ks, "__gc") == 0 || strcmp(ks, "__mode") == 0))
            luaL_error(L, "%s is not allowed in the sandbox (it would act differently "
                          "on each node)", ks);
    }
    struct mr_sm_vm *vm = mr_sm_vm_of(L);
    if (vm->txn_on) {
        /* The same key of the same table written again right after (a
         * counter in a loop): its value before the command is journaled
         * already. Keys compared by identity: an integer, or a short
         * string (interned: equal strings are one object), anchored by the
         * journal entry. */
        const void *kid = NULL;
        lua_Integer ki = 0;
        if (kt == LUA_TSTRING) {
            if (klen <= 40) kid = kstr;
        } else if (kt == LUA_TNUMBER && lua_isinteger(L, k)) {
            kid = &k_nil; /* any non-NULL marker: the integer is in ki */
            ki = lua_tointeger(L, k);
        }
        const void *sid = lua_topointer(L, s);
        if (kid == NULL || vm->txn_last_s != sid || vm->txn_last_k != kid ||
            vm->txn_last_i != ki) {
            lua_pushvalue(L, k);
            int present = lua_rawget(L, s) != LUA_TNIL;
            journal(L, s, k, present ? -1 : 0);
            lua_pop(L, 1);
            vm->txn_last_s = sid;
            vm->txn_last_k = kid;
            vm->txn_last_i = ki;
        }
    }
    lua_rawset(L, s);
}

/* __newindex(T, k, v). */
static int l_px_newindex(lua_State *L)
{
    lua_settop(L, 3);
    if (!mr_sm_txn_shadow(L, 1)) return luaL_error(L, "not a state table");
    int s = 4;
    lua_pushvalue(L, 2);
    int absent = lua_rawget(L, s) == LUA_TNIL;
    lua_pop(L, 1);
    if (absent && luaL_getmetafield(L, s, "__newindex") != LUA_TNIL) {
        /* the user's __newindex, as for a plain table (5) */
        if (lua_type(L, 5) == LUA_TFUNCTION) {
            lua_pushvalue(L, 1);
            lua_pushvalue(L, 2);
            lua_pushvalue(L, 3);
            lua_call(L, 3, 0);
        } else {
            lua_pushvalue(L, 2);
            lua_pushvalue(L, 3);
            lua_settable(L, 5);
        }
        return 0;
    }
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    px_store(L, s);
    return 0;
}

int mr_sm_txn_rawset(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TTABLE || !mr_sm_txn_shadow(L, 1)) return 0;
    int s = lua_gettop(L);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    px_store(L, s);
    lua_pop(L, 1);
    return 1;
}

/* (Re)builds the metamethods of the proxy mt at `pm` from the installed
 * user metatable at `um` (0: none). */
static void build_pm(lua_State *L, int pm, int s, int um)
{
    for (const char *const *e = copied; *e; e++) {
        lua_pushstring(L, *e);
        if (um != 0)
            lua_rawget(L, um); /* raw, as Lua looks metamethods up */
        else
            lua_pop(L, 1), lua_pushnil(L);
        lua_setfield(L, pm, *e);
    }
    int ix = LUA_TNIL;
    if (um != 0) {
        lua_pushliteral(L, "__index");
        ix = lua_rawget(L, um);
    } else {
        lua_pushnil(L);
    }
    if (ix == LUA_TFUNCTION) {
        lua_pushvalue(L, s);
        lua_insert(L, -2);
        lua_pushcclosure(L, l_px_index_fn, 2);
    } else {
        lua_pop(L, 1);
        lua_pushvalue(L, s);
    }
    lua_setfield(L, pm, "__index");
    int has_len = 0;
    if (um != 0) {
        lua_pushliteral(L, "__len");
        has_len = lua_rawget(L, um) != LUA_TNIL;
        if (!has_len) lua_pop(L, 1);
    }
    if (!has_len) lua_pushcfunction(L, l_px_len);
    lua_setfield(L, pm, "__len");
}

/* The metatable to install for a user metatable at idx: its shadow if it is
 * a proxy (remembering shadow -> proxy), else itself. Pushes it. */
static void push_installed(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    if (mr_sm_txn_shadow(L, idx)) {
        push_slot(L, R_S2P);
        lua_pushvalue(L, -2);
        lua_pushvalue(L, idx);
        lua_rawset(L, -3);
        lua_pop(L, 1);
        return;
    }
    lua_pushvalue(L, idx);
}

/* Installs the metatable at top (already the installed form, or nil) as
 * the user metatable of proxy T at t. Pops it. */
static void set_installed(lua_State *L, int t)
{
    t = lua_absindex(L, t);
    int um = lua_gettop(L);
    lua_getmetatable(L, t); /* PM */
    int pm = um + 1;
    lua_rawgeti(L, pm, 1);
    int s = pm + 1;
    lua_pushvalue(L, um);
    lua_setmetatable(L, s);
    build_pm(L, pm, s, lua_istable(L, um) ? um : 0);
    lua_settop(L, um - 1);
}

/* Converts the (plain, not library) table at idx in place. Its original
 * metatable is left on the stack for the caller (or nil). */
static void convert(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    if (!lua_getmetatable(L, idx)) lua_pushnil(L); /* the original mt */
    lua_newtable(L);                               /* S */
    int s = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, s);
    }
    /* empty T: setting existing fields to nil during lua_next is allowed */
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_pushnil(L);
        lua_rawset(L, idx);
    }
    lua_createtable(L, 2, 4); /* PM */
    int pm = lua_gettop(L);
    lua_pushvalue(L, s);
    lua_rawseti(L, pm, 1);
    lua_pushlightuserdata(L, (void *)&k_shadow);
    lua_rawseti(L, pm, 2);
    lua_pushcfunction(L, l_px_newindex);
    lua_setfield(L, pm, "__newindex");
    build_pm(L, pm, s, 0);
    lua_setmetatable(L, idx);
    lua_pop(L, 1); /* S; the original mt stays */
}

/* ---- which upvalues can change -------------------------------------------------
 * Saving every upvalue of the script before each call would cost ~50 ns per
 * upvalue per command (kv.lua has 18). Only an upvalue that some closure
 * assigns (SETUPVAL) can change once the script has loaded: the chunk that
 * declared it has returned. So each Lua function met is dumped once
 * (lua_dump, stripped) and its bytecode scanned for SETUPVAL, in it and in
 * the functions nested in it (a nested function's write to its upvalue that
 * is its parent's upvalue, instack == 0, counts as the parent's). Only those
 * upvalues are tracked (kv.lua: 1, `store`). */

struct bc {
    const unsigned char *p, *end;
    int bad;
};

static uint64_t bc_size(struct bc *b)
{
    uint64_t x = 0;
    for (int i = 0; i < 10; i++) {
        if (b->p >= b->end) break;
        unsigned c = *b->p++;
        x = x << 7 | (c & 0x7f);
        if (c & 0x80) return x;
    }
    b->bad = 1;
    return 0;
}

static void bc_skip(struct bc *b, uint64_t n)
{
    if (b->bad || n > (uint64_t)(b->end - b->p)) {
        b->bad = 1;
        b->p = b->end;
        return;
    }
    b->p += n;
}

static void bc_string(struct bc *b)
{
    uint64_t n = bc_size(b);
    if (n > 0) bc_skip(b, n - 1);
}

/* Scans one function of a stripped 5.4 dump (ldump.c dumpFunction); sets
 * written[i] for each of its upvalues i assigned in it or in a function
 * nested in it. *ups / *nup: its upvalue descriptors (instack, idx, kind). */
static void bc_function(struct bc *b, unsigned char written[256], int depth,
                        const unsigned char **ups, uint64_t *nup)
{
    *nup = 0;
    if (depth > 250) {
        b->bad = 1;
        return;
    }
    bc_string(b);  /* source */
    bc_size(b);    /* linedefined */
    bc_size(b);    /* lastlinedefined */
    bc_skip(b, 3); /* numparams, is_vararg, maxstacksize */
    uint64_t ncode = bc_size(b);
    if (b->bad || ncode > (uint64_t)(b->end - b->p) / 4) {
        b->bad = 1;
        return;
    }
    for (uint64_t i = 0; i < ncode; i++) {
        uint32_t ins;
        memcpy(&ins, b->p + 4 * i, 4);
        if ((ins & 0x7f) == 10) written[(ins >> 16) & 0xff] = 1; /* OP_SETUPVAL A B */
    }
    bc_skip(b, 4 * ncode);
    uint64_t nk = bc_size(b);
    for (uint64_t i = 0; i < nk && !b->bad; i++) {
        if (b->p >= b->end) {
            b->bad = 1;
            break;
        }
        unsigned tag = *b->p++;
        if (tag == 3 || tag == 19) /* integer, float */
            bc_skip(b, 8);
        else if (tag == 4 || tag == 20) /* short, long string */
            bc_string(b);
        else if (tag != 0 && tag != 1 && tag != 17) /* nil, false, true */
            b->bad = 1;
    }
    uint64_t n = bc_size(b);
    if (b->bad || n > 255 || n * 3 > (uint64_t)(b->end - b->p)) {
        b->bad = 1;
        return;
    }
    *ups = b->p;
    *nup = n;
    bc_skip(b, 3 * n);
    uint64_t np = bc_size(b);
    for (uint64_t i = 0; i < np && !b->bad; i++) {
        unsigned char inner[256] = {0};
        const unsigned char *iups = NULL;
        uint64_t inup = 0;
        bc_function(b, inner, depth + 1, &iups, &inup);
        /* its write to an upvalue that is ours (instack 0) is ours */
        for (uint64_t u = 0; u < inup && !b->bad; u++)
            if (inner[u] && iups[3 * u] == 0) written[iups[3 * u + 1]] = 1;
    }
    /* debug info: empty in a stripped dump */
    bc_skip(b, bc_size(b));
    uint64_t nabs = bc_size(b);
    for (uint64_t i = 0; i < nabs && !b->bad; i++) {
        bc_size(b);
        bc_size(b);
    }
    uint64_t nloc = bc_size(b);
    for (uint64_t i = 0; i < nloc && !b->bad; i++) {
        bc_string(b);
        bc_size(b);
        bc_size(b);
    }
    uint64_t nname = bc_size(b);
    for (uint64_t i = 0; i < nname && !b->bad; i++) bc_string(b);
}

static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud)
{
    (void)L;
    return mr_sm_buf_append(ud, p, sz) != 0;
}

/* Fills written[] for the Lua function at f. If the dump cannot be read,
 * every upvalue counts as written (safe, only slower). */
static void upvalues_written(lua_State *L, int f, unsigned char written[256])
{
    struct mr_sm_vm *vm = mr_sm_vm_of(L);
    memset(written, 0, 256);
    lua_pushvalue(L, f);
    vm->dump.len = 0;
    int rv = lua_dump(L, dump_writer, &vm->dump, 1);
    lua_pop(L, 1);
    /* header: signature 4, version, format, LUAC_DATA 6, three sizes,
     * LUAC_INT 8, LUAC_NUM 8, then the main function's upvalue count */
    static const unsigned char head[] = {0x1b, 'L', 'u', 'a', 0x54, 0,
                                         0x19, 0x93, '\r', '\n', 0x1a, '\n', 4, 8, 8};
    struct bc b = {(const unsigned char *)vm->dump.p,
                   (const unsigned char *)vm->dump.p + vm->dump.len, 0};
    if (rv != 0 || vm->dump.len < sizeof head + 17 ||
        memcmp(vm->dump.p, head, sizeof head) != 0) {
        memset(written, 1, 256);
        return;
    }
    bc_skip(&b, sizeof head + 16 + 1);
    const unsigned char *ups;
    uint64_t nup;
    bc_function(&b, written, 0, &ups, &nup);
    if (b.bad || b.p != b.end) memset(written, 1, 256);
}

static void track_upvalue(lua_State *L, int f, int n)
{
    struct mr_sm_vm *vm = mr_sm_vm_of(L);
    push_slot(L, R_UPIDS);
    lua_pushlightuserdata(L, lua_upvalueid(L, f, n));
    if (lua_rawget(L, -2) == LUA_TNIL) {
        lua_pushlightuserdata(L, lua_upvalueid(L, f, n));
        lua_pushboolean(L, 1);
        lua_rawset(L, -4);
        push_slot(L, R_UPVALS);
        lua_pushvalue(L, f);
        lua_rawseti(L, -2, 2 * vm->txn_nup + 1);
        lua_pushinteger(L, n);
        lua_rawseti(L, -2, 2 * vm->txn_nup + 2);
        lua_pop(L, 1);
        vm->txn_nup++;
    }
    lua_pop(L, 2);
}

/* Converts everything reachable from the value at idx that is not a proxy,
 * a library table or already seen; tracks the upvalues met. */
static void adopt(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    if (!needs_adopt(L, idx)) return;
    luaL_checkstack(L, 12, "adopt");
    int base = lua_gettop(L);
    lua_newtable(L); /* base+1: work stack */
    lua_newtable(L); /* base+2: seen */
    lua_newtable(L); /* base+3: tables to convert, in order */
    push_slot(L, R_SKIP); /* base+4 */
    int work = base + 1, seen = base + 2, list = base + 3, skip = base + 4;
    lua_Integer nw = 0, nl = 0;
    lua_pushvalue(L, idx);
    lua_rawseti(L, work, ++nw);
    while (nw > 0) {
        lua_rawgeti(L, work, nw); /* v: base+5 */
        lua_pushnil(L);
        lua_rawseti(L, work, nw--);
        int v = base + 5, t = lua_type(L, v);
        if (t != LUA_TTABLE && (t != LUA_TFUNCTION || lua_iscfunction(L, v))) {
            lua_settop(L, skip);
            continue;
        }
        lua_pushvalue(L, v);
        int done = lua_rawget(L, seen) != LUA_TNIL;
        lua_pop(L, 1);
        if (!done) done = !needs_adopt(L, v);
        if (done) {
            lua_settop(L, skip);
            continue;
        }
        lua_pushvalue(L, v);
        lua_pushboolean(L, 1);
        lua_rawset(L, seen);
        if (t == LUA_TTABLE) {
            lua_pushvalue(L, v);
            lua_rawseti(L, list, ++nl);
            if (lua_getmetatable(L, v)) lua_rawseti(L, work, ++nw);
            lua_pushnil(L);
            while (lua_next(L, v) != 0) {
                int vt = lua_type(L, -1);
                if (vt == LUA_TTABLE || vt == LUA_TFUNCTION)
                    lua_rawseti(L, work, ++nw);
                else
                    lua_pop(L, 1);
            }
        } else {
            unsigned char written[256];
            upvalues_written(L, v, written);
            for (int n = 1; lua_getupvalue(L, v, n) != NULL; n++) {
                if (n > 256 || written[n - 1]) track_upvalue(L, v, n);
                int vt = lua_type(L, -1);
                if (vt == LUA_TTABLE || vt == LUA_TFUNCTION)
                    lua_rawseti(L, work, ++nw);
                else
                    lua_pop(L, 1);
            }
            /* marked once all its upvalues are tracked */
            push_slot(L, R_FNSEEN);
            lua_pushvalue(L, v);
            lua_pushboolean(L, 1);
            lua_rawset(L, -3);
            lua_pop(L, 1);
        }
        lua_settop(L, skip);
    }
    /* convert, keeping each original metatable, then install those */
    lua_createtable(L, (int)nl, 0); /* base+5: original metatables */
    int orig = base + 5;
    /* deepest first: if an allocation fails halfway, the tables already
     * converted have their contents converted too */
    for (lua_Integer i = nl; i >= 1; i--) {
        lua_rawgeti(L, list, i);
        convert(L, -1);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushboolean(L, 0);
        }
        lua_rawseti(L, orig, i);
        lua_pop(L, 1);
    }
    for (lua_Integer i = 1; i <= nl; i++) {
        if (lua_rawgeti(L, orig, i) != LUA_TTABLE) {
            lua_pop(L, 1);
            continue;
        }
        push_installed(L, -1);
        lua_remove(L, -2);
        lua_rawgeti(L, list, i);
        lua_insert(L, -2);
        set_installed(L, -2);
        lua_pop(L, 1);
    }
    lua_settop(L, base);
}

/* ---- what the rest of the sandbox calls ------------------------------------------ */

int mr_sm_txn_setmetatable(lua_State *L, int t, int mt)
{
    t = lua_absindex(L, t);
    mt = lua_absindex(L, mt);
    if (!mr_sm_txn_shadow(L, t)) return 0;
    int s = lua_gettop(L);
    if (luaL_getmetafield(L, s, "__metatable") != LUA_TNIL)
        return luaL_error(L, "cannot change a protected metatable");
    if (lua_istable(L, mt)) {
        adopt(L, mt);
        push_installed(L, mt);
    } else {
        lua_pushnil(L);
    }
    int inst = lua_gettop(L);
    if (mr_sm_vm_of(L)->txn_on) {
        lua_pushlightuserdata(L, (void *)&k_mt);
        int had = lua_getmetatable(L, s);
        journal(L, t, inst + 1, had ? -1 : 0);
        lua_settop(L, inst);
    }
    set_installed(L, t);
    lua_settop(L, s - 1);
    return 1;
}

void mr_sm_txn_push_installed(lua_State *L, int mt)
{
    mt = lua_absindex(L, mt);
    adopt(L, mt);
    push_installed(L, mt);
}

/* getmetatable(v): the user's metatable of a proxy; a shadow installed as a
 * metatable reads as its proxy; then __metatable as stock Lua. */
static int l_getmetatable(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    int from = 1;
    if (lua_type(L, 1) == LUA_TTABLE && mr_sm_txn_shadow(L, 1)) from = 2;
    if (!lua_getmetatable(L, from)) {
        lua_pushnil(L);
        return 1;
    }
    int m = lua_gettop(L);
    lua_pushliteral(L, "__metatable");
    if (lua_rawget(L, m) != LUA_TNIL) return 1;
    lua_pop(L, 1);
    push_slot(L, R_S2P);
    lua_pushvalue(L, m);
    if (lua_rawget(L, -2) != LUA_TNIL) return 1;
    lua_settop(L, m);
    return 1;
}

/* rawget(t, k) through a proxy. */
static int l_rawget(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checkany(L, 2);
    lua_settop(L, 2);
    if (mr_sm_txn_shadow(L, 1)) lua_replace(L, 1);
    lua_rawget(L, 1);
    return 1;
}

void mr_sm_txn_open(lua_State *L)
{
    struct mr_sm_vm *vm = mr_sm_vm_of(L);
    for (int i = 0; i < R_COUNT; i++) {
        lua_newtable(L);
        if (i == R_S2P || i == R_FNSEEN) {
            /* host-internal and looked up only for live objects: weak keys
             * cannot change what a script sees */
            lua_createtable(L, 0, 1);
            lua_pushliteral(L, "k");
            lua_setfield(L, -2, "__mode");
            lua_setmetatable(L, -2);
        }
        vm->txn_ref[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_pushcfunction(L, l_getmetatable);
    lua_setglobal(L, "getmetatable");
    lua_pushcfunction(L, l_rawget);
    lua_setglobal(L, "rawget");
}

void mr_sm_txn_skip(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    push_slot(L, R_SKIP);
    lua_pushvalue(L, idx);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

/* Marks the libraries: the globals table, every table in it and one level
 * below (string.*, ...), and their metatables (the string metatable). */
void mr_sm_txn_skip_libraries(lua_State *L)
{
    lua_pushglobaltable(L);
    int g = lua_gettop(L);
    mr_sm_txn_skip(L, g);
    lua_pushnil(L);
    while (lua_next(L, g) != 0) {
        if (lua_istable(L, -1)) {
            int lib = lua_gettop(L);
            mr_sm_txn_skip(L, lib);
            if (lua_getmetatable(L, lib)) mr_sm_txn_skip(L, -1);
            lua_settop(L, lib);
            lua_pushnil(L);
            while (lua_next(L, lib) != 0) {
                if (lua_istable(L, -1)) mr_sm_txn_skip(L, -1);
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    }
    lua_pushliteral(L, "");
    if (lua_getmetatable(L, -1)) mr_sm_txn_skip(L, -1);
    lua_settop(L, g - 1);
}

void mr_sm_txn_adopt_roots(lua_State *L)
{
    struct mr_sm_vm *vm = mr_sm_vm_of(L);
    int refs[] = {vm->ref_module, vm->ref_apply, vm->ref_query, vm->ref_snapshot,
                  vm->ref_restore};
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, refs[i]);
        adopt(L, -1);
        lua_pop(L, 1);
    }
    lua_pushglobaltable(L);
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        adopt(L, -1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

void mr_sm_txn_begin(lua_State *L)
{
    struct mr_sm_vm *vm = mr_sm_vm_of(L);
    vm->txn_nsaved = 0;
    vm->txn_on = 1;
    push_slot(L, R_UPVALS);
    push_slot(L, R_SAVED);
    int up = lua_gettop(L) - 1, saved = up + 1;
    for (lua_Integer i = 1; i <= vm->txn_nup; i++) {
        lua_rawgeti(L, up, 2 * i - 1);
        lua_rawgeti(L, up, 2 * i);
        int n = (int)lua_tointeger(L, -1);
        lua_getupvalue(L, -2, n);
        int t = lua_type(L, -1);
        if ((t == LUA_TTABLE || t == LUA_TFUNCTION) && needs_adopt(L, -1)) {
            /* assigned directly to the upvalue since the last call (or by
             * restore): its contents were never converted */
            vm->txn_on = 0;
            adopt(L, -1);
            vm->txn_on = 1;
        }
        lua_rawseti(L, saved, i);
        vm->txn_nsaved = i;
        lua_pop(L, 2);
    }
    lua_pop(L, 2);
}

/* Empties the journal (never allocates, never raises): a small one is
 * reused, a big one dropped (the collector takes it and what it held). */
static void clear_journal(lua_State *L)
{
    struct mr_sm_vm *vm = mr_sm_vm_of(L);
    if (vm->txn_n > 3 * 256) {
        lua_pushboolean(L, 0);
        set_slot(L, R_JOURNAL);
    } else if (push_slot(L, R_JOURNAL) == LUA_TTABLE) {
        for (lua_Integer i = vm->txn_n; i >= 1; i--) {
            lua_pushnil(L);
            lua_rawseti(L, -2, i);
        }
        lua_pop(L, 1);
    } else {
        lua_pop(L, 1);
    }
    vm->txn_n = 0;
    vm->txn_last_s = NULL;
}

void mr_sm_txn_commit(lua_State *L)
{
    struct mr_sm_vm *vm = mr_sm_vm_of(L);
    vm->txn_on = 0;
    vm->txn_nsaved = 0;
    if (vm->txn_n > 0) clear_journal(L);
}

/* Puts the saved upvalues back. Reads existing slots and assigns existing
 * upvalues only: never allocates, never raises. */
static void restore_upvalues(lua_State *L)
{
    struct mr_sm_vm *vm = mr_sm_vm_of(L);
    if (vm->txn_nsaved == 0) return;
    push_slot(L, R_UPVALS);
    push_slot(L, R_SAVED);
    int up = lua_gettop(L) - 1, saved = up + 1;
    for (lua_Integer i = 1; i <= vm->txn_nsaved; i++) {
        lua_rawgeti(L, up, 2 * i - 1);
        lua_rawgeti(L, up, 2 * i);
        int n = (int)lua_tointeger(L, -1);
        lua_pop(L, 1);
        lua_rawgeti(L, saved, i);
        lua_setupvalue(L, -2, n);
        lua_pop(L, 1);
    }
    lua_pop(L, 2);
}

static int rollback_body(lua_State *L)
{
    struct mr_sm_vm *vm = mr_sm_vm_of(L);
    push_slot(L, R_JOURNAL); /* a table whenever txn_n > 0 */
    int j = lua_gettop(L);
    for (lua_Integer i = vm->txn_n; i >= 3; i -= 3) {
        lua_rawgeti(L, j, i - 2); /* target */
        lua_rawgeti(L, j, i - 1); /* key */
        lua_rawgeti(L, j, i);     /* old */
        int target = j + 1, key = j + 2, old = j + 3;
        if (lua_touserdata(L, old) == &k_nil) {
            lua_pushnil(L);
            lua_replace(L, old);
        }
        if (lua_type(L, target) == LUA_TUSERDATA) {
            mr_sm_sortedmap_undo(L, target, key, old);
        } else if (lua_touserdata(L, key) == &k_mt) {
            lua_pushvalue(L, old);
            set_installed(L, target);
        } else {
            lua_rawset(L, target); /* target[key] = old */
        }
        lua_settop(L, j);
    }
    restore_upvalues(L);
    return 0;
}

int mr_sm_txn_rollback(struct mr_sm_vm *vm)
{
    lua_State *L = vm->L;
    vm->txn_on = 0;
    if (vm->txn_n == 0) { /* nothing journaled (a query, a failed validation) */
        restore_upvalues(L);
        vm->txn_nsaved = 0;
        return 0;
    }
    /* no budget, no heap cap: only real exhaustion can stop it */
    int enforce = vm->mem_enforce;
    vm->mem_enforce = 0;
    vm->budget = 0;
    lua_pushcfunction(L, rollback_body);
    int st = lua_pcall(L, 0, 0, 0);
    vm->mem_enforce = enforce;
    if (st != LUA_OK) lua_pop(L, 1);
    clear_journal(L);
    vm->txn_nsaved = 0;
    return st == LUA_OK ? 0 : MR_ENOMEM;
}
