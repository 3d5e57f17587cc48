/* sortedset: an ordered set of strings for scripts (a skip list in C).
 *
 * Why: a Lua table has no order, so listing keys by prefix means scanning
 * and sorting every key (canonical.keys), 0.1-0.3 s per million keys with
 * the event loop stalled. kv.lua keeps its keys in a sortedset as well, and
 * a list becomes a seek plus a walk: O(log n + limit).
 *
 *   local s = sortedset.new()        -- or sortedset.from(t): t's string keys
 *   s:add(k) -> true if k was new     s:remove(k) -> true if k was there
 *   s:has(k)                          s:count() (also #s)
 *   s:range([prefix [, limit [, after]]]) -> array of keys in bytewise
 *        order that start with prefix and sort after `after`
 *
 * Node heights come from the vm's own generator, not from the key, so no
 * choice of keys can degrade the list; the shape of the list never shows in
 * any result, so replicas whose lists differ in shape still agree. Memory
 * comes from the Lua allocator: it counts against the heap cap, and the
 * userdata's __gc (set here, in C) gives it back. */
#include <string.h>

#include <lauxlib.h>

#include "sm/sm_int.h"

#define MAXLEVEL 24
#define SET_MT "moonraft.sortedset"

struct node {
    size_t len;
    int level;
    struct node *next[]; /* `level` pointers, then the key bytes */
};

struct set {
    struct node *head; /* level MAXLEVEL, no key */
    size_t count;
    int level; /* highest level in use */
    uint64_t rng;
};

static char *key_of(struct node *n)
{
    return (char *)&n->next[n->level];
}

static size_t node_size(int level, size_t len)
{
    return sizeof(struct node) + (size_t)level * sizeof(struct node *) + len;
}

static int cmp(const char *a, size_t la, const char *b, size_t lb)
{
    int c = memcmp(a, b, la < lb ? la : lb);
    if (c != 0) return c;
    return (la > lb) - (la < lb);
}

static struct node *new_node(lua_State *L, int level, const char *k, size_t len)
{
    void *ud;
    lua_Alloc f = lua_getallocf(L, &ud);
    struct node *n = f(ud, NULL, 0, node_size(level, len));
    if (n == NULL) mr_sm_vm_raise_memory(L);
    n->len = len;
    n->level = level;
    memcpy(key_of(n), k, len);
    for (int i = 0; i < level; i++) n->next[i] = NULL;
    return n;
}

static void free_node(lua_State *L, struct node *n)
{
    void *ud;
    lua_Alloc f = lua_getallocf(L, &ud);
    f(ud, n, node_size(n->level, n->len), 0);
}

static int random_level(struct set *s)
{
    /* splitmix64 step: p = 1/4 per extra level */
    uint64_t z = (s->rng += 0x9E3779B97F4A7C15ULL);
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

static struct set *check_set(lua_State *L)
{
    return luaL_checkudata(L, 1, SET_MT);
}

static struct set *push_new_set(lua_State *L)
{
    struct set *s = lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s);
    luaL_setmetatable(L, SET_MT); /* before allocating: __gc frees a partial set */
    s->level = 1;
    s->head = new_node(L, MAXLEVEL, "", 0);
    return s;
}

/* Fills update[] with the last node before (k) on every level; returns the
 * first node >= k on level 0 (or NULL). */
static struct node *seek(lua_State *L, struct set *s, const char *k, size_t len,
                         struct node **update)
{
    struct node *x = s->head;
    uint64_t visited = 0;
    for (int i = s->level - 1; i >= 0; i--) {
        while (x->next[i] && cmp(key_of(x->next[i]), x->next[i]->len, k, len) < 0) {
            x = x->next[i];
            visited++;
        }
        if (update) update[i] = x;
    }
    mr_sm_charge(L, visited + 1);
    return x->next[0];
}

static int l_add(lua_State *L)
{
    struct set *s = check_set(L);
    size_t len;
    const char *k = luaL_checklstring(L, 2, &len);
    struct node *update[MAXLEVEL];
    struct node *x = seek(L, s, k, len, update);
    if (x && cmp(key_of(x), x->len, k, len) == 0) {
        lua_pushboolean(L, 0);
        return 1;
    }
    int level = random_level(s);
    for (int i = s->level; i < level; i++) update[i] = s->head;
    struct node *n = new_node(L, level, k, len);
    if (level > s->level) s->level = level;
    for (int i = 0; i < level; i++) {
        n->next[i] = update[i]->next[i];
        update[i]->next[i] = n;
    }
    s->count++;
    lua_pushboolean(L, 1);
    return 1;
}

static int l_remove(lua_State *L)
{
    struct set *s = check_set(L);
    size_t len;
    const char *k = luaL_checklstring(L, 2, &len);
    struct node *update[MAXLEVEL];
    struct node *x = seek(L, s, k, len, update);
    if (x == NULL || cmp(key_of(x), x->len, k, len) != 0) {
        lua_pushboolean(L, 0);
        return 1;
    }
    for (int i = 0; i < x->level; i++)
        if (update[i]->next[i] == x) update[i]->next[i] = x->next[i];
    while (s->level > 1 && s->head->next[s->level - 1] == NULL) s->level--;
    free_node(L, x);
    s->count--;
    lua_pushboolean(L, 1);
    return 1;
}

static int l_has(lua_State *L)
{
    struct set *s = check_set(L);
    size_t len;
    const char *k = luaL_checklstring(L, 2, &len);
    struct node *x = seek(L, s, k, len, NULL);
    lua_pushboolean(L, x && cmp(key_of(x), x->len, k, len) == 0);
    return 1;
}

static int l_count(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)check_set(L)->count);
    return 1;
}

static int l_range(lua_State *L)
{
    struct set *s = check_set(L);
    size_t plen = 0, alen = 0;
    const char *prefix = luaL_optlstring(L, 2, "", &plen);
    lua_Integer limit = luaL_optinteger(L, 3, LUA_MAXINTEGER);
    const char *after = luaL_optlstring(L, 4, NULL, &alen);
    luaL_argcheck(L, limit >= 0, 3, "limit must be >= 0");
    struct node *x;
    if (after != NULL && cmp(after, alen, prefix, plen) >= 0) {
        x = seek(L, s, after, alen, NULL);
        if (x && cmp(key_of(x), x->len, after, alen) == 0) x = x->next[0];
    } else {
        x = seek(L, s, prefix, plen, NULL);
    }
    lua_newtable(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, mr_sm_vm_of(L)->ref_array_mt);
    lua_setmetatable(L, -2);
    for (lua_Integer n = 0; x && n < limit; x = x->next[0]) {
        if (x->len < plen || memcmp(key_of(x), prefix, plen) != 0) break;
        mr_sm_charge(L, 1);
        lua_pushlstring(L, key_of(x), x->len);
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}

static int l_gc(lua_State *L)
{
    struct set *s = lua_touserdata(L, 1);
    struct node *x = s->head;
    while (x != NULL) {
        struct node *next = x->next[0];
        free_node(L, x);
        x = next;
    }
    s->head = NULL;
    s->count = 0;
    return 0;
}

static int l_new(lua_State *L)
{
    push_new_set(L);
    return 1;
}

/* sortedset.from(t): a set of t's string keys, built in one pass after one
 * sort (O(n log n), versus n seeks for n adds). */
static int l_from(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_pushcfunction(L, mr_sm_fn_keys());
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1); /* 2: sorted keys */
    struct set *s = push_new_set(L);
    struct node *last[MAXLEVEL];
    for (int i = 0; i < MAXLEVEL; i++) last[i] = s->head;
    lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
    for (lua_Integer i = 1; i <= n; i++) {
        size_t len;
        lua_rawgeti(L, 2, i);
        const char *k = lua_tolstring(L, -1, &len);
        int level = random_level(s);
        struct node *x = new_node(L, level, k, len);
        lua_pop(L, 1);
        if (level > s->level) s->level = level;
        for (int j = 0; j < level; j++) {
            last[j]->next[j] = x;
            last[j] = x;
        }
        s->count++;
    }
    return 1;
}

void mr_sm_sortedset_open(lua_State *L)
{
    static const luaL_Reg methods[] = {{"add", l_add},     {"remove", l_remove},
                                       {"has", l_has},     {"count", l_count},
                                       {"range", l_range}, {NULL, NULL}};
    luaL_newmetatable(L, SET_MT);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_count);
    lua_setfield(L, -2, "__len");
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, "sortedset");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, l_new);
    lua_setfield(L, -2, "new");
    lua_pushcfunction(L, l_from);
    lua_setfield(L, -2, "from");
    lua_setglobal(L, "sortedset");
}
