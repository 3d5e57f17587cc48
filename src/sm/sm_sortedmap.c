/* sortedmap: an ordered map of string -> string for scripts (a skip list in C).
 *
 * Why: kv.lua used to keep a million decoded values in a Lua table plus a
 * sortedset for order. That is two million GC objects: ~500 MiB, a collector
 * that walks them all (and, after fork(), dirties every page it marks, so the
 * parent stalls on copy-on-write faults), and a snapshot that sorts every key.
 * Here each entry is one C block (skip-list links, key bytes, value bytes)
 * allocated through the Lua allocator, so it counts against the heap cap, but
 * it is not a Lua object: the collector sees one userdata per map.
 *
 *   local m = sortedmap.new()
 *   m:set(k, v) -> true if k was new     (k, v: any strings)
 *   m:get(k) -> v or nil                 m:has(k)
 *   m:remove(k) -> true if k was there   m:count() (also #m)
 *   m:range([prefix [, limit [, after]]]) -> array of keys
 *   m:items([prefix [, limit [, after]]]) -> keys, values (two arrays)
 *        keys in bytewise order that start with prefix and sort after
 *        `after`, at most limit of them (the semantics of sortedset:range)
 *   m:dump([head]) -> string: head (default "") followed by the map's bytes
 *   sortedmap.load(s [, init]) -> a new map from the dump that starts at
 *        byte init of s (default 1; as string.find's init), which must run to
 *        the end of s
 *
 * Dump format (all integers little-endian; lengths as unsigned LEB128 varints
 * in their shortest form):
 *   "MRSM" u8 version(=1) u8[3] zero  u64 count
 *   count x { varint klen, varint vlen, key bytes, value bytes }
 * entries in strictly increasing bytewise key order. It is a function of the
 * content only (not of insertion order or list shape), so replicas holding the
 * same map dump the same bytes. load() appends in order in O(n) and rejects
 * anything else: bad magic or version, truncation, keys out of order or
 * repeated, a count that does not match, trailing bytes.
 *
 * Node heights come from a generator seeded the same way in every map (as in
 * sortedset), never from the keys; the shape never shows in any result.
 * Every operation charges the instruction budget for its work (seek steps,
 * entries returned, bytes copied) so a script cannot loop in C for free.
 *
 * sortedset is the same skip list with empty values and a smaller surface:
 *   local s = sortedset.new()        -- or sortedset.from(t): t's string keys
 *   s:add(k) -> true if k was new     s:remove(k) -> true if k was there
 *   s:has(k)                          s:count() (also #s)
 *   s:range([prefix [, limit [, after]]]) -> array of keys (as above) */
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "sm/sm_int.h"

#define MAXLEVEL 24
#define MAP_MT "moonraft.sortedmap"
#define SET_MT "moonraft.sortedset"
#define DUMP_MAGIC "MRSM"
#define DUMP_VERSION 1
#define DUMP_HEADER 16 /* magic, version, 3 zero bytes, u64 count */

struct node {
    uint32_t klen;
    uint32_t vlen;
    uint8_t level;
    struct node *next[]; /* `level` links, then the key bytes, then the value bytes */
};

struct map {
    struct node *head; /* MAXLEVEL links, no key */
    size_t count;
    size_t dump_size; /* bytes of the entries in a dump (varints + keys + values) */
    int level;        /* highest level in use */
    uint64_t rng;
};

static char *key_of(struct node *n)
{
    return (char *)&n->next[n->level];
}

static char *val_of(struct node *n)
{
    return key_of(n) + n->klen;
}

static size_t node_size(int level, size_t klen, size_t vlen)
{
    return sizeof(struct node) + (size_t)level * sizeof(struct node *) + klen + vlen;
}

static int cmp(const char *a, size_t la, const char *b, size_t lb)
{
    size_t n = la < lb ? la : lb;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0) return c;
    return (la > lb) - (la < lb);
}

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static size_t entry_size(size_t klen, size_t vlen)
{
    return varint_len(klen) + varint_len(vlen) + klen + vlen;
}

/* Allocates through the Lua allocator. On refusal (heap cap) collects the
 * garbage once and retries, as Lua does for its own objects: dead maps hold
 * memory the collector cannot see, so without this a script that drops maps
 * could hit the cap with the heap full of garbage. */
static void *map_alloc(lua_State *L, void *old, size_t osize, size_t nsize)
{
    void *ud;
    lua_Alloc f = lua_getallocf(L, &ud);
    void *p = f(ud, old, old ? osize : 0, nsize);
    if (p == NULL) {
        lua_gc(L, LUA_GCCOLLECT);
        p = f(ud, old, old ? osize : 0, nsize);
        if (p == NULL) mr_sm_vm_raise_memory(L);
    }
    return p;
}

static void free_node(lua_State *L, struct node *n)
{
    void *ud;
    lua_Alloc f = lua_getallocf(L, &ud);
    f(ud, n, node_size(n->level, n->klen, n->vlen), 0);
}

static struct node *new_node(lua_State *L, int level, const char *k, size_t klen,
                             const char *v, size_t vlen)
{
    struct node *n = map_alloc(L, NULL, 0, node_size(level, klen, vlen));
    n->klen = (uint32_t)klen;
    n->vlen = (uint32_t)vlen;
    n->level = (uint8_t)level;
    for (int i = 0; i < level; i++) n->next[i] = NULL;
    if (klen) memcpy(key_of(n), k, klen);
    if (vlen) memcpy(val_of(n), v, vlen);
    return n;
}

static int random_level(struct map *m)
{
    /* splitmix64 step: p = 1/4 per extra level */
    uint64_t z = (m->rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    int level = 1;
    while ((z & 3) == 0 && level < MAXLEVEL) {
        level++;
        z >>= 2;
    }
    return level;
}

/* The map at argument 1: a sortedmap, or a sortedset (the methods a set
 * exposes work on either). */
static struct map *check_map(lua_State *L)
{
    struct map *m = luaL_testudata(L, 1, MAP_MT);
    if (m == NULL) m = luaL_testudata(L, 1, SET_MT);
    if (m == NULL) luaL_typeerror(L, 1, "sortedmap or sortedset");
    return m;
}

static const char *check_str(lua_State *L, int arg, size_t *len, const char *what)
{
    const char *s = luaL_checklstring(L, arg, len);
    if (*len > UINT32_MAX) luaL_argerror(L, arg, lua_pushfstring(L, "%s too long", what));
    return s;
}

static struct map *push_new_map(lua_State *L, const char *mt)
{
    struct map *m = lua_newuserdatauv(L, sizeof *m, 0);
    memset(m, 0, sizeof *m);
    luaL_setmetatable(L, mt); /* before allocating: __gc frees a partial map */
    m->level = 1;
    m->head = new_node(L, MAXLEVEL, "", 0, "", 0);
    return m;
}

/* Fills update[] (if given) with the last node before k on every level;
 * returns the first node >= k on level 0, or NULL. */
static struct node *seek(lua_State *L, struct map *m, const char *k, size_t len,
                         struct node **update)
{
    struct node *x = m->head;
    for (int i = m->level - 1; i >= 0; i--) {
        while (x->next[i] && cmp(key_of(x->next[i]), x->next[i]->klen, k, len) < 0)
            x = x->next[i];
        if (update) update[i] = x;
    }
    /* Charged from the count alone: the links walked depend on the levels
     * the nodes drew, hence on the insertion history, which differs between
     * a replica that replayed the log and one that loaded a dump: charging
     * them would let the budget trip on one replica and not the other. */
    uint64_t steps = 1;
    for (size_t n = m->count; n > 0; n >>= 1) steps++;
    mr_sm_charge(L, steps);
    return x->next[0];
}

static int is_key(struct node *x, const char *k, size_t len)
{
    return x && cmp(key_of(x), x->klen, k, len) == 0;
}

static int l_set(lua_State *L)
{
    struct map *m = check_map(L);
    size_t klen, vlen;
    const char *k = check_str(L, 2, &klen, "key");
    const char *v = check_str(L, 3, &vlen, "value");
    struct node *update[MAXLEVEL];
    mr_sm_charge(L, (klen + vlen) / MR_SM_BYTES_PER_STEP);
    struct node *x = seek(L, m, k, klen, update);
    if (mr_sm_vm_of(L)->txn_on) { /* undo entry first: it may raise */
        if (is_key(x, k, klen)) {
            lua_pushlstring(L, val_of(x), x->vlen);
            mr_sm_txn_journal(L, 1, 2, -1);
            lua_pop(L, 1);
        } else {
            mr_sm_txn_journal(L, 1, 2, 0);
        }
    }
    if (is_key(x, k, klen)) {
        size_t old = x->vlen;
        if (vlen != old) {
            /* The allocator leaves x as it was if it refuses. */
            struct node *n = map_alloc(L, x, node_size(x->level, klen, old),
                                       node_size(x->level, klen, vlen));
            for (int i = 0; i < n->level; i++) update[i]->next[i] = n;
            n->vlen = (uint32_t)vlen;
            x = n;
        }
        if (vlen) memcpy(val_of(x), v, vlen);
        m->dump_size = m->dump_size - entry_size(klen, old) + entry_size(klen, vlen);
        lua_pushboolean(L, 0);
        return 1;
    }
    int level = random_level(m);
    struct node *n = new_node(L, level, k, klen, v, vlen);
    for (int i = m->level; i < level; i++) update[i] = m->head;
    if (level > m->level) m->level = level;
    for (int i = 0; i < level; i++) {
        n->next[i] = update[i]->next[i];
        update[i]->next[i] = n;
    }
    m->count++;
    m->dump_size += entry_size(klen, vlen);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_get(lua_State *L)
{
    struct map *m = check_map(L);
    size_t len;
    const char *k = luaL_checklstring(L, 2, &len);
    struct node *x = seek(L, m, k, len, NULL);
    if (!is_key(x, k, len)) {
        lua_pushnil(L);
        return 1;
    }
    mr_sm_charge(L, x->vlen / MR_SM_BYTES_PER_STEP);
    lua_pushlstring(L, val_of(x), x->vlen);
    return 1;
}

static int l_has(lua_State *L)
{
    struct map *m = check_map(L);
    size_t len;
    const char *k = luaL_checklstring(L, 2, &len);
    lua_pushboolean(L, is_key(seek(L, m, k, len, NULL), k, len));
    return 1;
}

static int l_remove(lua_State *L)
{
    struct map *m = check_map(L);
    size_t len;
    const char *k = luaL_checklstring(L, 2, &len);
    struct node *update[MAXLEVEL];
    struct node *x = seek(L, m, k, len, update);
    if (!is_key(x, k, len)) {
        lua_pushboolean(L, 0);
        return 1;
    }
    if (mr_sm_vm_of(L)->txn_on) { /* undo entry first: it may raise */
        lua_pushlstring(L, val_of(x), x->vlen);
        mr_sm_txn_journal(L, 1, 2, -1);
        lua_pop(L, 1);
    }
    for (int i = 0; i < x->level; i++)
        if (update[i]->next[i] == x) update[i]->next[i] = x->next[i];
    while (m->level > 1 && m->head->next[m->level - 1] == NULL) m->level--;
    m->count--;
    m->dump_size -= entry_size(x->klen, x->vlen);
    free_node(L, x);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_count(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)check_map(L)->count);
    return 1;
}

static void push_array(lua_State *L)
{
    lua_newtable(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, mr_sm_vm_of(L)->ref_array_mt);
    lua_setmetatable(L, -2);
}

/* range and items: the first node of the answer, then a walk on level 0. */
static int walk(lua_State *L, int with_values)
{
    struct map *m = check_map(L);
    size_t plen = 0, alen = 0;
    const char *prefix = luaL_optlstring(L, 2, "", &plen);
    lua_Integer limit = luaL_optinteger(L, 3, LUA_MAXINTEGER);
    const char *after = luaL_optlstring(L, 4, NULL, &alen);
    luaL_argcheck(L, limit >= 0, 3, "limit must be >= 0");
    struct node *x;
    if (after != NULL && cmp(after, alen, prefix, plen) >= 0) {
        x = seek(L, m, after, alen, NULL);
        if (is_key(x, after, alen)) x = x->next[0];
    } else {
        x = seek(L, m, prefix, plen, NULL);
    }
    push_array(L);
    if (with_values) push_array(L);
    int keys = with_values ? -2 : -1;
    for (lua_Integer n = 0; x && n < limit; x = x->next[0]) {
        if (x->klen < plen || (plen && memcmp(key_of(x), prefix, plen) != 0)) break;
        n++;
        mr_sm_charge(L, 1);
        lua_pushlstring(L, key_of(x), x->klen);
        lua_rawseti(L, keys - 1, n);
        if (with_values) {
            mr_sm_charge(L, x->vlen / MR_SM_BYTES_PER_STEP);
            lua_pushlstring(L, val_of(x), x->vlen);
            lua_rawseti(L, -2, n);
        }
    }
    return with_values ? 2 : 1;
}

static int l_range(lua_State *L)
{
    return walk(L, 0);
}

static int l_items(lua_State *L)
{
    return walk(L, 1);
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static unsigned char *put_varint(unsigned char *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    *p++ = (unsigned char)v;
    return p;
}

/* The bytes are written into the vm's output buffer (grown once, to the exact
 * size kept up to date by set and remove), then copied into one Lua string:
 * one walk of the list, no sorting, no per-entry Lua values. */
static int l_dump(lua_State *L)
{
    struct map *m = check_map(L);
    size_t hlen = 0;
    const char *head = luaL_optlstring(L, 2, "", &hlen);
    struct mr_sm_vm *vm = mr_sm_vm_of(L);
    size_t total = hlen + DUMP_HEADER + m->dump_size;
    mr_sm_charge(L, m->count + total / MR_SM_BYTES_PER_STEP);
    vm->out.len = 0;
    if (mr_sm_buf_reserve(&vm->out, total) != 0)
        return luaL_error(L, "sortedmap.dump: out of memory (%zu bytes)", total);
    unsigned char *p = (unsigned char *)vm->out.p;
    if (hlen) memcpy(p, head, hlen);
    p += hlen;
    memcpy(p, DUMP_MAGIC, 4);
    p[4] = DUMP_VERSION;
    p[5] = p[6] = p[7] = 0;
    put_u64(p + 8, m->count);
    p += DUMP_HEADER;
    for (struct node *x = m->head->next[0]; x != NULL; x = x->next[0]) {
        p = put_varint(p, x->klen);
        p = put_varint(p, x->vlen);
        memcpy(p, key_of(x), x->klen + (size_t)x->vlen); /* key and value are adjacent */
        p += x->klen + (size_t)x->vlen;
    }
    MR_ASSERT((size_t)(p - (unsigned char *)vm->out.p) == total);
    lua_pushlstring(L, vm->out.p, total);
    vm->out.len = 0;
    return 1;
}

/* Reads a shortest-form varint below 2^32 at *p (< end). Returns 0 or -1. */
static int get_len(const unsigned char **p, const unsigned char *end, uint32_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 35; shift += 7) {
        if (*p >= end) return -1;
        unsigned b = *(*p)++;
        v |= (uint64_t)(b & 0x7F) << shift;
        if ((b & 0x80) == 0) {
            if (b == 0 && shift > 0) return -1; /* not the shortest form */
            if (v > UINT32_MAX) return -1;
            *out = (uint32_t)v;
            return 0;
        }
    }
    return -1;
}

static int load_fail(lua_State *L, const char *what, uint64_t entry)
{
    return luaL_error(L, "sortedmap.load: %s (entry %I)", what, (lua_Integer)entry);
}

static int l_load(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_Integer init = luaL_optinteger(L, 2, 1);
    luaL_argcheck(L, init >= 1 && (lua_Unsigned)init - 1 <= len, 2, "init out of range");
    const unsigned char *p = (const unsigned char *)s + (init - 1);
    const unsigned char *end = (const unsigned char *)s + len;
    if ((size_t)(end - p) < DUMP_HEADER || memcmp(p, DUMP_MAGIC, 4) != 0)
        return luaL_error(L, "sortedmap.load: not a sortedmap dump (bad magic)");
    if (p[4] != DUMP_VERSION || p[5] || p[6] || p[7])
        return luaL_error(L, "sortedmap.load: unsupported dump version %d", p[4]);
    uint64_t count = get_u64(p + 8);
    p += DUMP_HEADER;
    lua_settop(L, 1); /* keeps s alive under the map */
    mr_sm_charge(L, (size_t)(end - p) / MR_SM_BYTES_PER_STEP);
    struct map *m = push_new_map(L, MAP_MT);
    struct node *last[MAXLEVEL];
    for (int i = 0; i < MAXLEVEL; i++) last[i] = m->head;
    uint64_t n = 0;
    while (p < end) {
        uint32_t klen, vlen;
        if (n == count) return load_fail(L, "trailing bytes after the last entry", n);
        if (get_len(&p, end, &klen) != 0 || get_len(&p, end, &vlen) != 0)
            return load_fail(L, "bad or truncated length", n);
        if ((size_t)(end - p) < (size_t)klen + vlen) return load_fail(L, "truncated", n);
        const char *k = (const char *)p;
        if (n > 0 && cmp(key_of(last[0]), last[0]->klen, k, klen) >= 0)
            return load_fail(L, "keys not in strictly increasing order", n);
        mr_sm_charge(L, 1);
        int level = random_level(m);
        struct node *x = new_node(L, level, k, klen, k + klen, vlen);
        p += (size_t)klen + vlen;
        if (level > m->level) m->level = level;
        for (int j = 0; j < level; j++) {
            last[j]->next[j] = x;
            last[j] = x;
        }
        m->count++;
        m->dump_size += entry_size(klen, vlen);
        n++;
    }
    if (n != count) {
        char msg[96];
        snprintf(msg, sizeof msg, "count mismatch (header says %llu, found %llu)",
                 (unsigned long long)count, (unsigned long long)n);
        return luaL_error(L, "sortedmap.load: %s", msg);
    }
    return 1;
}

static int l_gc(lua_State *L)
{
    struct map *m = lua_touserdata(L, 1);
    struct node *x = m->head;
    while (x != NULL) {
        struct node *next = x->next[0];
        free_node(L, x);
        x = next;
    }
    m->head = NULL;
    m->count = 0;
    return 0;
}

static int l_new(lua_State *L)
{
    push_new_map(L, MAP_MT);
    return 1;
}

/* ---- sortedset: the same list, values empty ------------------------------- */
static int l_add(lua_State *L)
{
    lua_settop(L, 2);
    lua_pushliteral(L, "");
    return l_set(L);
}

static int l_set_new(lua_State *L)
{
    push_new_map(L, SET_MT);
    return 1;
}

/* sortedset.from(t): a set of t's string keys, built in one pass after one
 * sort (O(n log n), versus n seeks for n adds). */
static int l_set_from(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_pushcfunction(L, mr_sm_fn_keys());
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1); /* 2: sorted keys */
    struct map *m = push_new_map(L, SET_MT);
    struct node *last[MAXLEVEL];
    for (int i = 0; i < MAXLEVEL; i++) last[i] = m->head;
    lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
    for (lua_Integer i = 1; i <= n; i++) {
        size_t len;
        lua_rawgeti(L, 2, i);
        const char *k = lua_tolstring(L, -1, &len);
        if (len > UINT32_MAX) return luaL_error(L, "sortedset.from: key too long");
        int level = random_level(m);
        struct node *x = new_node(L, level, k, len, "", 0);
        lua_pop(L, 1);
        if (level > m->level) m->level = level;
        for (int j = 0; j < level; j++) {
            last[j]->next[j] = x;
            last[j] = x;
        }
        m->count++;
        m->dump_size += entry_size(len, 0);
    }
    return 1;
}

void mr_sm_sortedmap_undo(lua_State *L, int map, int key, int old)
{
    map = lua_absindex(L, map);
    key = lua_absindex(L, key);
    old = lua_absindex(L, old);
    int top = lua_gettop(L);
    lua_pushcfunction(L, lua_isnil(L, old) ? l_remove : l_set);
    lua_pushvalue(L, map);
    lua_pushvalue(L, key);
    lua_pushvalue(L, old);
    lua_call(L, 3, 0);
    lua_settop(L, top);
}

/* Registers the metatable `mt` (methods, #, __gc, locked) and the global
 * library `name` with its constructors. */
static void open_lib(lua_State *L, const char *mt, const char *name, const luaL_Reg *methods,
                     const luaL_Reg *constructors)
{
    luaL_newmetatable(L, mt);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_count);
    lua_setfield(L, -2, "__len");
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
    lua_newtable(L);
    luaL_setfuncs(L, constructors, 0);
    lua_setglobal(L, name);
}

void mr_sm_sortedset_open(lua_State *L)
{
    static const luaL_Reg methods[] = {{"add", l_add},     {"remove", l_remove},
                                       {"has", l_has},     {"count", l_count},
                                       {"range", l_range}, {NULL, NULL}};
    static const luaL_Reg constructors[] = {
        {"new", l_set_new}, {"from", l_set_from}, {NULL, NULL}};
    open_lib(L, SET_MT, "sortedset", methods, constructors);
}

void mr_sm_sortedmap_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"set", l_set},       {"get", l_get},     {"has", l_has},
        {"remove", l_remove}, {"count", l_count}, {"range", l_range},
        {"items", l_items},   {"dump", l_dump},   {NULL, NULL}};
    static const luaL_Reg constructors[] = {{"new", l_new}, {"load", l_load}, {NULL, NULL}};
    open_lib(L, MAP_MT, "sortedmap", methods, constructors);
}
