/* The sandbox: one lua_State per script instance (STYLE 13-15). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "sm/sm_int.h"

/* ---- allocator with a byte budget ------------------------------------------ */

static void budget_hook(lua_State *L, lua_Debug *ar);

static void *sm_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct mr_sm_vm *vm = ud;
    int is_long_string = ptr == NULL && osize == LUA_TSTRING && nsize > 256;
    if (ptr == NULL) osize = 0; /* osize is then a type tag, not a size */
    if (nsize == 0) {
        mr_free(ptr);
        vm->mem_used -= osize;
        return NULL;
    }
    /* Refusing makes Lua run an emergency full collection and retry, so
     * garbage never counts against the cap: only live data does. Whether
     * that happens depends on how much garbage this replica holds, which
     * differs between replicas: the call's outcome is then uncertain. */
    if (nsize > osize && vm->mem_enforce &&
        vm->mem_used + (nsize - osize) > vm->mem_limit) {
        vm->mem_refused = 1;
        return NULL;
    }
    void *p = mr_realloc(ptr, nsize);
    if (p == NULL) return NULL;
    vm->mem_used = vm->mem_used - osize + nsize;
    /* Building a long string costs time in proportion to its length, yet it
     * is one VM instruction (a concatenation) or one C call (string.rep):
     * charge it to the budget. Only long strings: they are never interned,
     * so whether they are allocated does not depend on the collector. Only
     * once allocated: a request refused then retried after an emergency
     * collection (which happens on some replicas and not others) must not
     * be charged twice. */
    if (is_long_string) {
        vm->c_steps += nsize / MR_SM_BYTES_PER_STEP;
        /* Over budget: make the hook run at the very next instruction
         * rather than at the end of its chunk (the allocator itself must
         * not raise). */
        if (vm->in_call && vm->budget > 0 && !vm->budget_tripped &&
            vm->counted + vm->c_steps >= vm->budget) {
            vm->hook_chunk = 1;
            lua_sethook(vm->L, budget_hook, LUA_MASKCOUNT, 1);
        }
    }
    return p;
}

/* ---- instruction budget ------------------------------------------------------ */

/* The hook runs every HOOK_CHUNK instructions (or fewer, near the end of the
 * budget) to add up instructions and the C-side work charged meanwhile. */
#define HOOK_CHUNK 10000

static void budget_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    struct mr_sm_vm *vm = mr_sm_vm_of(L);
    if (!vm->budget_tripped) {
        vm->counted += (uint64_t)vm->hook_chunk;
        if (vm->counted + vm->c_steps < vm->budget) {
            uint64_t left = vm->budget - vm->counted - vm->c_steps;
            int chunk = left < HOOK_CHUNK ? (int)left : HOOK_CHUNK;
            if (chunk != vm->hook_chunk) {
                vm->hook_chunk = chunk;
                lua_sethook(L, budget_hook, LUA_MASKCOUNT, chunk);
            }
            return;
        }
    }
    mr_sm_vm_trip_budget(L);
}

void mr_sm_vm_raise_memory(lua_State *L)
{
    mr_sm_vm_of(L)->mem_error = 1;
    luaL_error(L, "not enough memory (Lua heap limit reached)");
    abort(); /* not reached */
}

void mr_sm_vm_trip_budget(lua_State *L)
{
    struct mr_sm_vm *vm = mr_sm_vm_of(L);
    if (!vm->budget_tripped) {
        vm->budget_tripped = 1;
        /* From now on every instruction raises, so a pcall in the script
         * that catches this error cannot make progress. */
        lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
    }
    char msg[96];
    snprintf(msg, sizeof msg, "instruction budget exceeded (%llu instructions)",
             (unsigned long long)vm->budget);
    luaL_error(L, "%s", msg);
    abort(); /* not reached: luaL_error does not return */
}

static int msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int mr_sm_vm_pcall(struct mr_sm_vm *vm, int nargs, int nres, uint64_t budget,
                   int mem_enforce)
{
    lua_State *L = vm->L;
    int base = lua_gettop(L) - nargs; /* the function's slot */
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    vm->budget = budget;
    vm->counted = 0;
    vm->budget_tripped = 0;
    vm->c_steps = 0;
    vm->mem_error = 0;
    vm->mem_refused = 0;
    if (budget > 0) {
        vm->hook_chunk = budget < HOOK_CHUNK ? (int)budget : HOOK_CHUNK;
        lua_sethook(L, budget_hook, LUA_MASKCOUNT, vm->hook_chunk);
    }
    vm->mem_enforce = mem_enforce;
    vm->in_call = 1;
    int st = lua_pcall(L, nargs, nres, base);
    vm->in_call = 0;
    vm->mem_enforce = 0;
    lua_sethook(L, NULL, 0, 0);
    mr_sm_order_reset(L);
    lua_remove(L, base);
    if (st == LUA_OK) return MR_SM_OK;
    if (!lua_isstring(L, -1)) {
        lua_pop(L, 1);
        lua_pushliteral(L, "(error object is not a string)");
    }
    if (vm->budget_tripped) return MR_SM_BUDGET_EXCEEDED;
    /* LUA_ERRERR: the message handler itself failed, which under a heap cap
     * means it could not allocate the traceback. */
    if (st == LUA_ERRMEM || vm->mem_error || (st == LUA_ERRERR && mem_enforce)) {
        lua_pop(L, 1);
        lua_pushliteral(L, "not enough memory (Lua heap limit reached)");
        lua_gc(L, LUA_GCCOLLECT);
        return MR_SM_MEMORY_EXCEEDED;
    }
    return MR_SM_SCRIPT_ERROR;
}

/* ---- deterministic replacements ---------------------------------------------- */

/* math.random / ctx.random: Lua 5.4 semantics on the per-entry PRNG. */
static int l_random(lua_State *L)
{
    struct mr_sm_vm *vm = mr_sm_vm_of(L);
    uint64_t r = mr_rand_next(&vm->rng);
    lua_Integer lo, hi;
    switch (lua_gettop(L)) {
    case 0:
        lua_pushnumber(L, (lua_Number)(r >> 11) * 0x1.0p-53);
        return 1;
    case 1:
        lo = 1;
        hi = luaL_checkinteger(L, 1);
        break;
    case 2:
        lo = luaL_checkinteger(L, 1);
        hi = luaL_checkinteger(L, 2);
        break;
    default:
        return luaL_error(L, "wrong number of arguments");
    }
    luaL_argcheck(L, lo <= hi, lua_gettop(L), "interval is empty");
    uint64_t span = (uint64_t)hi - (uint64_t)lo;
    uint64_t v = span == UINT64_MAX ? r : mr_rand_below(&vm->rng, span + 1);
    lua_pushinteger(L, (lua_Integer)((uint64_t)lo + v));
    return 1;
}

static int l_randomseed(lua_State *L)
{
    return luaL_error(L, "math.randomseed is disabled: the generator is seeded from each "
                         "entry (term, index) so every node draws the same numbers");
}

/* Stable merge sort. Lua's table.sort chooses random pivots for large arrays
 * (l_randomizePivot uses clock() and time()), so elements that compare equal
 * could end up in a different order on each node, and the number of
 * comparator calls (thus the instruction count) would vary too. */
static int sort_less(lua_State *L, int has_cmp, int a, int b)
{
    if (has_cmp) {
        lua_pushvalue(L, 2);
        lua_pushvalue(L, a);
        lua_pushvalue(L, b);
        lua_call(L, 2, 1);
        int r = lua_toboolean(L, -1);
        lua_pop(L, 1);
        return r;
    }
    mr_sm_charge(L, 1);
    return lua_compare(L, a, b, LUA_OPLT);
}

static int l_sort(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer n = mr_sm_len(L, 1);
    int has_cmp = !lua_isnoneornil(L, 2);
    if (has_cmp) luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 2);
    if (n < 2) return 0;
    luaL_argcheck(L, n < INT_MAX, 1, "array too big");
    lua_createtable(L, (int)n, 0); /* 3: scratch */
    int src = 1, dst = 3;
    for (lua_Integer width = 1; width < n; width *= 2) {
        for (lua_Integer lo = 1; lo <= n; lo += 2 * width) {
            lua_Integer mid = lo + width, hi = lo + 2 * width;
            if (mid > n + 1) mid = n + 1;
            if (hi > n + 1) hi = n + 1;
            lua_Integer i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                lua_geti(L, src, i);
                lua_geti(L, src, j);
                /* take the right one only if strictly less: keeps it stable */
                if (sort_less(L, has_cmp, lua_gettop(L), lua_gettop(L) - 1)) {
                    lua_seti(L, dst, k++);
                    lua_pop(L, 1);
                    j++;
                } else {
                    lua_pop(L, 1);
                    lua_seti(L, dst, k++);
                    i++;
                }
            }
            for (; i < mid; i++, k++) {
                lua_geti(L, src, i);
                lua_seti(L, dst, k);
            }
            for (; j < hi; j++, k++) {
                lua_geti(L, src, j);
                lua_seti(L, dst, k);
            }
        }
        int t = src;
        src = dst;
        dst = t;
    }
    if (src != 1) {
        for (lua_Integer i = 1; i <= n; i++) {
            lua_geti(L, src, i);
            lua_seti(L, 1, i);
        }
    }
    return 0;
}

/* setmetatable without __gc (finalizers run when the collector decides) and
 * __mode (weak entries vanish when the collector decides). Lua reads __mode
 * again at every collection, so a metatable must not gain one later either:
 * a metatable that has no metatable of its own gets the guard below, whose
 * __newindex refuses to add __mode or __gc (rawset checks too). */
static const char guard_key;

static int refuse_gc_mode(lua_State *L, int key)
{
    if (lua_type(L, key) != LUA_TSTRING) return 0;
    const char *k = lua_tostring(L, key);
    if (strcmp(k, "__mode") == 0)
        return luaL_error(L, "__mode is not allowed in the sandbox (weak tables would "
                             "differ between nodes)");
    if (strcmp(k, "__gc") == 0)
        return luaL_error(L, "__gc is not allowed in the sandbox (finalizers would run "
                             "at different times on each node)");
    return 0;
}

static int l_guard_newindex(lua_State *L)
{
    refuse_gc_mode(L, 2);
    lua_settop(L, 3);
    if (mr_sm_txn_rawset(L)) return 0; /* a state table (sm_txn.c) */
    lua_rawset(L, 1);
    return 0;
}

static int is_guarded(lua_State *L, int idx)
{
    if (!lua_getmetatable(L, idx)) return 0;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &guard_key);
    int r = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return r;
}

static int l_rawset(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checkany(L, 2);
    luaL_checkany(L, 3);
    if (is_guarded(L, 1)) refuse_gc_mode(L, 2);
    lua_settop(L, 3);
    if (mr_sm_txn_rawset(L)) { /* a state table: journaled (sm_txn.c) */
        lua_settop(L, 1);
        return 1;
    }
    lua_rawset(L, 1);
    return 1;
}

static int l_setmetatable(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TTABLE) {
        /* raw lookups: that is how Lua itself finds __gc and __mode (in
         * the shadow of a state table: sm_txn.c) */
        lua_settop(L, 2);
        int mtc = mr_sm_txn_shadow(L, 2) ? 3 : 2;
        lua_pushliteral(L, "__gc");
        if (lua_rawget(L, mtc) != LUA_TNIL)
            return luaL_error(L,
                              "setmetatable: __gc is not allowed in the sandbox "
                              "(finalizers would run at different times on each node)");
        lua_pushliteral(L, "__mode");
        if (lua_rawget(L, mtc) != LUA_TNIL)
            return luaL_error(L, "setmetatable: __mode is not allowed in the sandbox "
                                 "(weak tables would differ between nodes)");
        lua_settop(L, 2);
    }
    int mt = lua_type(L, 2) == LUA_TTABLE;
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_argexpected(L, lua_isnoneornil(L, 2) || mt, 2, "nil or table");
    /* a plain metatable gets the guard before anything uses it */
    if (mt && !lua_getmetatable(L, 2)) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &guard_key);
        lua_setmetatable(L, 2);
    } else if (mt) {
        lua_pop(L, 1);
    }
    lua_settop(L, 2);
    if (mr_sm_txn_setmetatable(L, 1, 2)) { /* t is a state table */
        lua_settop(L, 1);
        return 1;
    }
    if (mt) { /* a state table used as a metatable is installed as its shadow */
        mr_sm_txn_push_installed(L, 2);
        lua_replace(L, 2);
    }
    lua_settop(L, 2);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_call(L, 2, 1);
    lua_settop(L, 3); /* what setmetatable returned */
    return 1;
}

/* load(chunk [, name [, mode [, env]]]) with mode forced to "t". */
static int l_load(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_checkany(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    if (n >= 2)
        lua_pushvalue(L, 2);
    else
        lua_pushnil(L);
    lua_pushliteral(L, "t");
    if (n >= 4) lua_pushvalue(L, 4);
    lua_call(L, n >= 4 ? 4 : 3, LUA_MULTRET);
    return lua_gettop(L) - n;
}

static int l_global_newindex(lua_State *L)
{
    return luaL_error(L,
                      "attempt to set global '%s': globals are locked after the script "
                      "loads (keep state in the module table or in locals)",
                      lua_tostring(L, 2) ? lua_tostring(L, 2) : "?");
}

static int l_global_index(lua_State *L)
{
    return luaL_error(L, "attempt to read undefined global '%s'",
                      lua_tostring(L, 2) ? lua_tostring(L, 2) : "?");
}

static int l_emit(lua_State *L)
{
    struct mr_sm_vm *vm = mr_sm_vm_of(L);
    char errmsg[MR_ERRMSG_SIZE];
    luaL_checkany(L, 1);
    if (!vm->in_apply) return luaL_error(L, "ctx.emit is only available during apply");
    size_t mark = vm->events.len;
    int rv = mr_sm_buf_append(&vm->events, vm->events.len == 0 ? "[" : ",", 1);
    if (rv == 0)
        rv = mr_sm_json_encode(L, 1, &vm->events, errmsg);
    else
        mr_errmsg_printf(errmsg, "out of memory");
    if (rv == 0 && vm->events.len > MR_SM_MAX_EVENT_BYTES) {
        rv = MR_ETOOBIG;
        mr_errmsg_printf(errmsg, "events of one command exceed %u bytes",
                         MR_SM_MAX_EVENT_BYTES);
    }
    if (rv != 0) {
        vm->events.len = mark;
        return luaL_error(L, "ctx.emit: %s", errmsg);
    }
    return 0;
}

/* ---- setup (runs inside lua_pcall: any lua_* call may raise) ------------------ */

struct setup_args {
    struct mr_sm_vm *vm;
    const char *src;
    size_t srclen;
    const char *name;
};

static void open_libs(lua_State *L)
{
    static const luaL_Reg libs[] = {
        {LUA_GNAME, luaopen_base},        {LUA_TABLIBNAME, luaopen_table},
        {LUA_STRLIBNAME, luaopen_string}, {LUA_MATHLIBNAME, luaopen_math},
        {LUA_UTF8LIBNAME, luaopen_utf8},  {NULL, NULL}};
    for (const luaL_Reg *l = libs; l->name; l++) {
        luaL_requiref(L, l->name, l->func, 1);
        lua_pop(L, 1);
    }
    /* The loaded-modules table would let a script reach the originals. */
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);

    static const char *const removed[] = {"dofile", "loadfile",       "print",
                                          "warn",   "collectgarbage", NULL};
    for (const char *const *r = removed; *r; r++) {
        lua_pushnil(L);
        lua_setglobal(L, *r);
    }
    lua_getglobal(L, "string");
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_pop(L, 1);

    mr_sm_pattern_open(L);
    mr_sm_order_open(L);
    mr_sm_sortedset_open(L);
    mr_sm_sortedmap_open(L);

    lua_getglobal(L, "math");
    lua_pushcfunction(L, l_random);
    lua_setfield(L, -2, "random");
    lua_pushcfunction(L, l_randomseed);
    lua_setfield(L, -2, "randomseed");
    lua_pop(L, 1);

    lua_getglobal(L, "table");
    lua_pushcfunction(L, l_sort);
    lua_setfield(L, -2, "sort");
    lua_pop(L, 1);

    lua_createtable(L, 0, 1); /* the guard of metatables */
    lua_pushcfunction(L, l_guard_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &guard_key);
    lua_getglobal(L, "setmetatable");
    lua_pushcclosure(L, l_setmetatable, 1);
    lua_setglobal(L, "setmetatable");
    lua_pushcfunction(L, l_rawset);
    lua_setglobal(L, "rawset");
    lua_getglobal(L, "load");
    lua_pushcclosure(L, l_load, 1);
    lua_setglobal(L, "load");

    lua_newtable(L); /* the JSON array marker metatable */
    lua_pushliteral(L, "array");
    lua_setfield(L, -2, "__jsontype");
    /* reachable with getmetatable(json.array()): guard it as well */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &guard_key);
    lua_setmetatable(L, -2);
    mr_sm_vm_of(L)->ref_array_mt = luaL_ref(L, LUA_REGISTRYINDEX);
    mr_sm_json_open(L);
    /* state tables become journaled proxies (sm_txn.c); what exists now is
     * library */
    mr_sm_txn_open(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &guard_key);
    mr_sm_txn_skip(L, -1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, mr_sm_vm_of(L)->ref_array_mt);
    mr_sm_txn_skip(L, -1);
    lua_pop(L, 2);
    mr_sm_txn_skip_libraries(L);
}

static int check_fn(lua_State *L, const char *name, int *ref)
{
    if (lua_getfield(L, -1, name) != LUA_TFUNCTION)
        return luaL_error(
            L,
            "the script's table has no function '%s' (it needs apply, query, "
            "snapshot and restore)",
            name);
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

static int setup(lua_State *L)
{
    struct setup_args *a = lua_touserdata(L, 1);
    struct mr_sm_vm *vm = a->vm;
    lua_settop(L, 0);
    open_libs(L);
    /* Chunk name "@kv.lua" (basename only): error messages and tracebacks
     * must read the same on every node whatever the install path. */
    const char *base = strrchr(a->name, '/');
    base = base ? base + 1 : a->name;
    lua_pushfstring(L, "@%s", base);
    if (luaL_loadbufferx(L, a->src, a->srclen, lua_tostring(L, -1), "t") != LUA_OK)
        return lua_error(L);
    lua_call(L, 0, 1);
    if (!lua_istable(L, -1))
        return luaL_error(L, "%s: the script must return a table (it returned %s)", base,
                          luaL_typename(L, -1));
    check_fn(L, "apply", &vm->ref_apply);
    check_fn(L, "query", &vm->ref_query);
    check_fn(L, "snapshot", &vm->ref_snapshot);
    check_fn(L, "restore", &vm->ref_restore);
    /* tick(ctx) is optional: only scripts that use ctx.wake_at need it. */
    int t = lua_getfield(L, -1, "tick");
    if (t == LUA_TFUNCTION)
        vm->ref_tick = luaL_ref(L, LUA_REGISTRYINDEX);
    else if (t != LUA_TNIL)
        return luaL_error(L, "the script's 'tick' must be a function (it is a %s)",
                          luaL_typename(L, -1));
    else
        lua_pop(L, 1);
    vm->ref_module = luaL_ref(L, LUA_REGISTRYINDEX);
    /* Lock globals. */
    lua_pushglobaltable(L);
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, l_global_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, l_global_index);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    /* the script's state: journaled from now on (sm_txn.c) */
    mr_sm_txn_adopt_roots(L);
    return 0;
}

int mr_sm_vm_new(struct mr_sm_vm **out, const char *src, size_t srclen, const char *name,
                 uint64_t budget, uint64_t mem_limit, char *errmsg)
{
    struct mr_sm_vm *vm = mr_calloc(1, sizeof *vm);
    if (vm == NULL) {
        mr_errmsg_printf(errmsg, "out of memory");
        return MR_ENOMEM;
    }
    vm->mem_limit = (size_t)mem_limit;
    vm->ref_apply = vm->ref_query = vm->ref_snapshot = vm->ref_restore = LUA_NOREF;
    vm->ref_module = vm->ref_array_mt = vm->ref_tick = LUA_NOREF;
    vm->mem_enforce = 1;
    vm->L = lua_newstate(sm_alloc, vm);
    if (vm->L == NULL) {
        mr_free(vm);
        mr_errmsg_printf(errmsg, "out of memory creating the Lua state");
        return MR_ENOMEM;
    }
    *(struct mr_sm_vm **)lua_getextraspace(vm->L) = vm;
    mr_rand_seed(&vm->rng, 0);
    struct setup_args a = {vm, src, srclen, name};
    lua_pushcfunction(vm->L, setup);
    lua_pushlightuserdata(vm->L, &a);
    int st = mr_sm_vm_pcall(vm, 1, 0, budget, 1);
    if (st != MR_SM_OK) {
        /* The message without the traceback: "kv.lua:3: '=' expected". */
        const char *msg = lua_tostring(vm->L, -1);
        const char *tb = msg ? strstr(msg, "\nstack traceback:") : NULL;
        int n = tb ? (int)(tb - msg) : (int)strlen(msg ? msg : "");
        mr_errmsg_printf(errmsg, "%.*s", n, msg ? msg : "?");
        mr_sm_vm_free(vm);
        return st == MR_SM_MEMORY_EXCEEDED ? MR_ENOMEM : MR_ESCRIPT;
    }
    lua_gc(vm->L, LUA_GCCOLLECT);
    *out = vm;
    return 0;
}

void mr_sm_vm_trim(struct mr_sm_vm *vm)
{
    /* A snapshot of a big state leaves tens of MiB of scratch behind (the
     * encoded text, the key array): give it back rather than keep it. */
    const size_t keep = 1u << 20;
    if (vm->out.cap > keep) mr_sm_buf_free(&vm->out);
    if (vm->events.cap > keep) mr_sm_buf_free(&vm->events);
    if (vm->dump.cap > keep) mr_sm_buf_free(&vm->dump);
    if (vm->js.numbuf.cap > keep) mr_sm_buf_free(&vm->js.numbuf);
    if (vm->js.str.cap > keep) mr_sm_buf_free(&vm->js.str);
    if (vm->js.capkeys * sizeof *vm->js.keys > keep) {
        mr_free(vm->js.keys);
        vm->js.keys = NULL;
        vm->js.nkeys = vm->js.capkeys = 0;
    }
}

void mr_sm_vm_free(struct mr_sm_vm *vm)
{
    if (vm == NULL) return;
    if (vm->L != NULL) lua_close(vm->L);
    mr_sm_buf_free(&vm->out);
    mr_sm_buf_free(&vm->events);
    mr_sm_deadlines_free(&vm->staged);
    mr_sm_buf_free(&vm->dump);
    mr_sm_json_scratch_free(&vm->js);
    mr_free(vm);
}

lua_CFunction mr_sm_fn_emit(void)
{
    return l_emit;
}
lua_CFunction mr_sm_fn_random(void)
{
    return l_random;
}
