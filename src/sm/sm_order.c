/* Deterministic replacements for the library functions whose stock
 * behaviour depends on the process (string hash seed), on the heap layout or
 * on addresses: pairs, next, tostring, string.format's %s/%p, and the
 * lengths taken by rawlen and table.insert/remove/unpack/concat/sort.
 *
 * Order. Lua seeds string hashing per process (luai_makeseed) and lays a
 * table out according to its insertion/deletion history, so lua_next visits
 * keys in an order that differs between replicas, and between a replica
 * that replayed the log and one restored from a snapshot. pairs and next
 * here visit keys in one total order instead: numbers (integers and floats
 * together, numerically), then strings (bytewise, shorter first on a common
 * prefix), then false, then true. Any other key type (table, function,
 * userdata, thread) has no order that survives a restart, so a table holding
 * one cannot be traversed: pairs/next raise a fixed message naming the
 * offending types (all of them, in a fixed order, so the message does not
 * depend on which key lua_next met first).
 *
 * pairs(t) sorts t's keys once (O(n log n)) into a snapshot kept in the
 * iterator's upvalues; each step is then O(1). next(t, k) keeps one such
 * snapshot per vm (the last table traversed with next), so `for k, v in
 * next, t` costs the same; next(t) / next(t, nil) scans for the smallest
 * key in O(n) without sorting (the `next(t) == nil` emptiness test). Keys
 * added to t during a traversal are not visited (stock Lua leaves that
 * undefined); keys removed during it are skipped. Both caches are reset at
 * the end of every call into the script (mr_sm_order_reset), so nothing
 * carries over between commands, and a replica that restored a snapshot
 * behaves exactly as one that replayed the log.
 *
 * Budget. The work is charged from the number of keys alone (n to collect,
 * n * bitlen(n) to sort), never from the comparisons qsort happened to make:
 * that count depends on the order lua_next delivered the keys in, which is
 * exactly what differs between replicas. */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "sm/sm_int.h"

/* Registry slots (light userdata keys): the next() snapshot cache and the
 * per-call tostring serials. Each holds a table during a call, false
 * otherwise. */
static const char next_cache_key;
static const char serial_key;
static const char len_anchor_key;

enum { CLS_NUMBER, CLS_STRING, CLS_BOOLEAN };

struct okey {
    union {
        lua_Integer i; /* integer keys; booleans: 0 or 1 */
        lua_Number f;
    } v;
    const char *s; /* string keys: anchored by the snapshot's key table */
    size_t len;
    int32_t slot; /* position of the key in the snapshot's key table */
    uint8_t cls;
    uint8_t is_int;
};

/* Exact comparison of an integer with a float (not NaN: NaN is never a key). */
static int int_float_cmp(lua_Integer i, lua_Number f)
{
    if (f >= 0x1p63) return -1;
    if (f < -0x1p63) return 1;
    lua_Number fl = floor(f);
    lua_Integer fi = (lua_Integer)fl;
    if (i != fi) return i < fi ? -1 : 1;
    return f > fl ? -1 : 0;
}

static int str_cmp(const struct okey *a, const struct okey *b)
{
    /* v.i holds the first 8 bytes, big-endian: most pairs differ there,
     * without a trip to the string bytes */
    uint64_t pa = (uint64_t)a->v.i, pb = (uint64_t)b->v.i;
    if (pa != pb) return pa < pb ? -1 : 1;
    if (a->s == b->s) return 0; /* the same string object */
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->s, b->s, n);
    if (c != 0) return c;
    return (a->len > b->len) - (a->len < b->len);
}

static int okey_cmp(const void *pa, const void *pb)
{
    const struct okey *a = pa, *b = pb;
    if (a->cls != b->cls) return a->cls < b->cls ? -1 : 1;
    switch (a->cls) {
    case CLS_NUMBER:
        if (a->is_int && b->is_int) return (a->v.i > b->v.i) - (a->v.i < b->v.i);
        if (!a->is_int && !b->is_int) return (a->v.f > b->v.f) - (a->v.f < b->v.f);
        if (a->is_int) return int_float_cmp(a->v.i, b->v.f);
        return -int_float_cmp(b->v.i, a->v.f);
    case CLS_STRING:
        return str_cmp(a, b);
    default:
        return (a->v.i > b->v.i) - (a->v.i < b->v.i);
    }
}

/* The same order, for snapshots whose keys are all strings / all integers. */
static int okey_cmp_str(const void *pa, const void *pb)
{
    return str_cmp(pa, pb);
}

static int okey_cmp_int(const void *pa, const void *pb)
{
    const struct okey *a = pa, *b = pb;
    return (a->v.i > b->v.i) - (a->v.i < b->v.i);
}

/* Introsort (quicksort, median of three, heapsort past 2 log n levels,
 * insertion sort below 16): glibc's qsort is a merge sort that mallocs its
 * buffer and moves elements through memcpy, three times slower here. Keys
 * are distinct, so any correct sort gives the same order. */
typedef int (*okey_cmp_fn)(const void *, const void *);

static void okey_swap(struct okey *a, struct okey *b)
{
    struct okey t = *a;
    *a = *b;
    *b = t;
}

static void okey_sift(struct okey *a, size_t i, size_t n, okey_cmp_fn cmp)
{
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l < n && cmp(&a[l], &a[m]) > 0) m = l;
        if (l + 1 < n && cmp(&a[l + 1], &a[m]) > 0) m = l + 1;
        if (m == i) return;
        okey_swap(&a[i], &a[m]);
        i = m;
    }
}

static void okey_sort(struct okey *a, size_t n, int depth, okey_cmp_fn cmp)
{
    while (n > 16) {
        if (depth-- == 0) {
            for (size_t i = n / 2; i-- > 0;) okey_sift(a, i, n, cmp);
            for (size_t e = n; e-- > 1;) {
                okey_swap(&a[0], &a[e]);
                okey_sift(a, 0, e, cmp);
            }
            return;
        }
        size_t mid = n / 2;
        if (cmp(&a[mid], &a[0]) < 0) okey_swap(&a[mid], &a[0]);
        if (cmp(&a[n - 1], &a[0]) < 0) okey_swap(&a[n - 1], &a[0]);
        if (cmp(&a[n - 1], &a[mid]) < 0) okey_swap(&a[n - 1], &a[mid]);
        struct okey p = a[mid];
        /* Hoare partition; a[0] <= p <= a[n - 1] bound both scans */
        size_t i = 0, j = n - 1;
        for (;;) {
            while (cmp(&a[i], &p) < 0) i++;
            while (cmp(&a[j], &p) > 0) j--;
            if (i >= j) break;
            okey_swap(&a[i], &a[j]);
            i++;
            j--;
        }
        /* [0, j] <= p <= [j + 1, n): recurse on the smaller side */
        size_t left = j + 1;
        if (left < n - left) {
            okey_sort(a, left, depth, cmp);
            a += left;
            n -= left;
        } else {
            okey_sort(a + left, n - left, depth, cmp);
            n = left;
        }
    }
    for (size_t i = 1; i < n; i++) {
        struct okey x = a[i];
        size_t j = i;
        while (j > 0 && cmp(&a[j - 1], &x) > 0) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = x;
    }
}

/* Bit of each key type that has no deterministic order. */
static unsigned bad_bit(int type)
{
    switch (type) {
    case LUA_TTABLE:
        return 1u;
    case LUA_TFUNCTION:
        return 2u;
    case LUA_TUSERDATA:
    case LUA_TLIGHTUSERDATA:
        return 4u;
    default: /* LUA_TTHREAD */
        return 8u;
    }
}

/* Fills *k from the key at idx; returns 0, or the bad_bit of its type. */
static unsigned okey_from(lua_State *L, int idx, struct okey *k)
{
    memset(k, 0, sizeof *k);
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER: {
        int is_int;
        k->cls = CLS_NUMBER;
        /* a float with an integral value converts: as a key it is that
         * integer (t[2.0] is t[2]) */
        k->v.i = lua_tointegerx(L, idx, &is_int);
        k->is_int = (uint8_t)is_int;
        if (!is_int) k->v.f = lua_tonumber(L, idx);
        return 0;
    }
    case LUA_TSTRING: {
        k->cls = CLS_STRING;
        k->s = lua_tolstring(L, idx, &k->len);
        uint64_t prefix = 0;
        for (size_t j = 0; j < 8; j++)
            prefix = prefix << 8 | (j < k->len ? (unsigned char)k->s[j] : 0u);
        k->v.i = (lua_Integer)prefix;
        return 0;
    }
    case LUA_TBOOLEAN:
        k->cls = CLS_BOOLEAN;
        k->v.i = lua_toboolean(L, idx);
        return 0;
    default:
        return bad_bit(lua_type(L, idx));
    }
}

static int raise_unordered(lua_State *L, const char *fn, unsigned bad)
{
    static const char *const names[] = {"table", "function", "userdata", "thread"};
    char types[64] = "";
    for (int b = 0; b < 4; b++) {
        if (!(bad & (1u << b))) continue;
        if (types[0]) strcat(types, ", ");
        strcat(types, names[b]);
    }
    return luaL_error(L,
                      "%s: table keys have no deterministic order (keys of type %s); "
                      "only numbers, strings and booleans can be iterated",
                      fn, types);
}

static uint64_t bitlen(uint64_t n)
{
    uint64_t b = 0;
    while (n) {
        b++;
        n >>= 1;
    }
    return b;
}

/* A sorted snapshot of a table's keys: upvalue 2 of the iterator (upvalue
 * 1 is the table of the keys themselves, which anchors the strings). */
struct snap {
    lua_Integer n;
    lua_Integer cursor; /* index into ok of the next key to visit */
    struct okey ok[];
};

static int order_iter(lua_State *L);

/* Pushes an iterator closure holding a sorted snapshot of the keys of the
 * table at `t` (absolute index). Raises if a key cannot be ordered. */
static void push_snapshot(lua_State *L, int t, const char *fn)
{
    lua_Integer n = 0;
    unsigned bad = 0;
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
        lua_pop(L, 1);
        n++;
        int ty = lua_type(L, -1);
        if (ty != LUA_TNUMBER && ty != LUA_TSTRING && ty != LUA_TBOOLEAN)
            bad |= bad_bit(ty);
    }
    if (bad) raise_unordered(L, fn, bad);
    mr_sm_charge(L, (uint64_t)n * (1 + bitlen((uint64_t)n)));
    if (n >= INT32_MAX ||
        (size_t)n > (SIZE_MAX - sizeof(struct snap)) / sizeof(struct okey))
        luaL_error(L, "%s: table too big", fn);
    lua_createtable(L, (int)n, 0); /* keys, in lua_next order */
    int keys = lua_gettop(L);
    struct snap *sn =
        lua_newuserdatauv(L, sizeof(struct snap) + (size_t)n * sizeof(struct okey), 0);
    struct okey *ok = sn->ok;
    sn->n = n;
    sn->cursor = 0;
    lua_Integer i = 0;
    int sorted = 1, all_str = 1, all_int = 1;
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_rawseti(L, keys, i + 1);
        okey_from(L, -1, &ok[i]); /* strings now anchored by `keys` */
        ok[i].slot = (int32_t)(i + 1);
        all_str &= ok[i].cls == CLS_STRING;
        all_int &= ok[i].cls == CLS_NUMBER && ok[i].is_int;
        if (i > 0 && sorted && okey_cmp(&ok[i - 1], &ok[i]) > 0) sorted = 0;
        i++;
    }
    if (!sorted)
        okey_sort(ok, (size_t)n, 2 * (int)bitlen((uint64_t)n),
                  all_str   ? okey_cmp_str
                  : all_int ? okey_cmp_int
                            : okey_cmp);
    lua_pushcclosure(L, order_iter, 2);
}

/* iter(t, k): the key after k in the snapshot (k == nil: the first), with
 * its current value in t; keys whose value is now nil are skipped. Fast
 * path: k is the key returned last. Otherwise k is looked up by bisection,
 * so the iterator is stateless as stock next is. */
static int order_iter(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TTABLE) luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 2);
    if (mr_sm_txn_shadow(L, 1)) lua_replace(L, 1); /* a state table: read its shadow */
    struct snap *sn = lua_touserdata(L, lua_upvalueindex(2));
    const struct okey *ok = sn->ok;
    lua_Integer c = sn->cursor, n = sn->n;
    if (lua_type(L, 2) <= LUA_TNIL) { /* nil or none */
        c = 0;
    } else {
        struct okey k;
        if (okey_from(L, 2, &k) != 0) return luaL_error(L, "invalid key to 'next'");
        if (c == 0 || okey_cmp(&ok[c - 1], &k) != 0) {
            lua_Integer lo = 0, hi = n; /* first entry > k */
            while (lo < hi) {
                lua_Integer mid = lo + (hi - lo) / 2;
                if (okey_cmp(&ok[mid], &k) <= 0)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            c = lo;
        }
    }
    for (; c < n; c++) {
        int present;
        if (ok[c].cls == CLS_NUMBER && ok[c].is_int) {
            lua_pushinteger(L, ok[c].v.i);
            present = lua_rawgeti(L, 1, ok[c].v.i) != LUA_TNIL;
        } else {
            lua_rawgeti(L, lua_upvalueindex(1), ok[c].slot);
            lua_pushvalue(L, -1);
            present = lua_rawget(L, 1) != LUA_TNIL;
        }
        if (present) {
            sn->cursor = c + 1;
            return 2;
        }
        lua_pop(L, 2);
    }
    sn->cursor = n;
    lua_pushnil(L);
    return 1;
}

/* pairs(t): __pairs if t's metatable has one (as stock Lua), else the
 * ordered iterator. */
static int l_pairs(lua_State *L)
{
    if (luaL_getmetafield(L, 1, "__pairs") != LUA_TNIL) {
        lua_pushvalue(L, 1);
        lua_call(L, 1, 3);
        return 3;
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    /* a state table (sm_txn.c): the keys of its shadow; the iterator gets
     * the table itself, never the shadow */
    int src = mr_sm_txn_shadow(L, 1) ? 2 : 1;
    push_snapshot(L, src, "pairs");
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

static void reset_slot(lua_State *L, const void *key)
{
    /* Only overwrite an existing entry: that never allocates, so this is
     * safe outside a protected call. */
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TTABLE) {
        lua_pushboolean(L, 0);
        lua_rawsetp(L, LUA_REGISTRYINDEX, key);
    }
    lua_pop(L, 1);
}

/* next(t [, k]). */
static int l_next(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 2);
    if (mr_sm_txn_shadow(L, 1)) { /* a state table: read its shadow */
        lua_replace(L, 1);
        lua_settop(L, 2);
    }
    if (lua_isnil(L, 2)) {
        /* The smallest key, in one pass without sorting. A new traversal
         * also starts from a fresh snapshot (keys may have been added). */
        reset_slot(L, &next_cache_key);
        struct okey best, k;
        int have = 0;
        unsigned bad = 0;
        uint64_t n = 0;
        lua_pushnil(L); /* 3: best key */
        lua_pushnil(L);
        while (lua_next(L, 1) != 0) {
            lua_pop(L, 1);
            n++;
            unsigned b = okey_from(L, -1, &k);
            bad |= b;
            if (b == 0 && (!have || okey_cmp(&k, &best) < 0)) {
                best = k; /* a string stays anchored by t */
                have = 1;
                lua_pushvalue(L, -1);
                lua_replace(L, 3);
            }
        }
        if (bad) return raise_unordered(L, "next", bad);
        mr_sm_charge(L, n);
        if (!have) {
            lua_pushnil(L);
            return 1;
        }
        lua_pushvalue(L, 3);
        lua_rawget(L, 1);
        return 2;
    }
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &next_cache_key) == LUA_TTABLE) {
        lua_rawgeti(L, -1, 1);
        int hit = lua_rawequal(L, -1, 1);
        lua_pop(L, 1);
        if (hit) {
            lua_rawgeti(L, -1, 2);
            lua_insert(L, 1);
            lua_settop(L, 3);
            lua_call(L, 2, LUA_MULTRET);
            return lua_gettop(L);
        }
    }
    lua_pop(L, 1);
    push_snapshot(L, 1, "next"); /* 3 */
    lua_createtable(L, 2, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    lua_pushvalue(L, 3);
    lua_rawseti(L, -2, 2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &next_cache_key);
    lua_insert(L, 1);
    lua_call(L, 2, LUA_MULTRET);
    return lua_gettop(L);
}

/* tostring(v): stock for nil, booleans, numbers, strings and values with
 * __tostring; tables, functions, userdata and threads read "table: #3"
 * (the __name of the metatable instead of the type, as stock Lua), where #3
 * is the object's serial: 1 for the first object tostring sees during the
 * current call into the script, 2 for the next, and so on. Two calls on the
 * same object in one call agree; serials restart with each command, so they
 * cannot be used as identities across commands (addresses could not either:
 * they differ between replicas). */
static int l_tostring(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    int t = lua_type(L, 1);
    if (t == LUA_TNIL || t == LUA_TBOOLEAN || t == LUA_TNUMBER || t == LUA_TSTRING ||
        luaL_getmetafield(L, 1, "__tostring") != LUA_TNIL) {
        lua_settop(L, 1);
        luaL_tolstring(L, 1, NULL); /* calls __tostring and checks its result */
        return 1;
    }
    const char *kind = luaL_typename(L, 1);
    if (luaL_getmetafield(L, 1, "__name") == LUA_TSTRING)
        kind = lua_tostring(L, -1); /* 2: anchors kind */
    else if (lua_gettop(L) > 1)
        lua_pop(L, 1);
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &serial_key) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &serial_key);
    }
    int map = lua_gettop(L);
    lua_pushvalue(L, 1);
    lua_Integer serial;
    if (lua_rawget(L, map) == LUA_TNUMBER) {
        serial = lua_tointeger(L, -1);
    } else {
        serial = (lua_Integer)lua_rawlen(L, map) + 1;
        /* map[serial] = true keeps the count in the array part; map[obj] =
         * serial finds it again. */
        lua_pushboolean(L, 1);
        lua_rawseti(L, map, serial);
        lua_pushvalue(L, 1);
        lua_pushinteger(L, serial);
        lua_rawset(L, map);
    }
    lua_pushfstring(L, "%s: #%I", kind, (LUAI_UACINT)serial);
    return 1;
}

/* string.format without addresses: %p is refused, and a %s whose argument
 * is not a string or a number goes through tostring above. */
static int l_format(lua_State *L)
{
    size_t len;
    const char *fmt = luaL_checklstring(L, 1, &len);
    const char *end = fmt + len;
    int arg = 1, top = lua_gettop(L);
    for (const char *p = fmt; p < end; p++) {
        if (*p != '%') continue;
        if (++p >= end) break;
        if (*p == '%') continue;
        while (p < end && strchr("-+ #0123456789.", *p) != NULL && *p != '\0') p++;
        if (p >= end) break;
        arg++;
        if (*p == 'p')
            return luaL_error(L, "string.format: '%%p' is not allowed in the sandbox "
                                 "(addresses differ between nodes)");
        if (*p == 's' && arg <= top && lua_type(L, arg) != LUA_TSTRING &&
            lua_type(L, arg) != LUA_TNUMBER) {
            lua_pushcfunction(L, l_tostring);
            lua_pushvalue(L, arg);
            lua_call(L, 1, 1);
            lua_replace(L, arg);
        }
    }
    /* the stock function uses no upvalues: run it on this frame */
    return lua_tocfunction(L, lua_upvalueindex(1))(L);
}

/* ---- lengths ---------------------------------------------------------------------
 * `#t` on a table with holes answers any border (an n with t[n] ~= nil or
 * n == 0, and t[n + 1] == nil), and which one depends on the sizes of the
 * table's array and hash parts, i.e. on its history: a replica restored from
 * a snapshot can get another answer than one that replayed the log. The `#`
 * operator cannot be intercepted on plain tables, but the library functions
 * that take a length (table.insert/remove/unpack/concat/sort, rawlen) use
 * this one instead: __len if the metatable has one, else the border found by
 * probing t[1], t[2], t[4], ... up to the first nil and bisecting below it.
 * That depends on the contents alone; for a sequence it is #t.
 *
 * Probing costs O(log n) lookups, which made `table.insert(t, v)` in a loop
 * five times slower than stock. So the last table measured in the current
 * call and its length are cached: if that length is still a border of the
 * table (two lookups), it is the answer; table.insert and table.remove update
 * it. The cache starts empty in every call, so the answer depends on the
 * table's contents and on the length calls made earlier in the same call,
 * which are the same on every replica. */

/* Whether n is a border of the table at t. */
static int is_border(lua_State *L, int t, lua_Integer n)
{
    int present;
    if (n > 0) {
        present = lua_rawgeti(L, t, n) != LUA_TNIL;
        lua_pop(L, 1);
        if (!present) return 0;
        if (n == LUA_MAXINTEGER) return 1;
    }
    present = lua_rawgeti(L, t, n + 1) != LUA_TNIL;
    lua_pop(L, 1);
    return !present;
}

static void remember_len(lua_State *L, int t, lua_Integer n)
{
    struct mr_sm_vm *vm = mr_sm_vm_of(L);
    const void *p = lua_topointer(L, t);
    if (vm->len_table != p) {
        /* anchored, so that its address cannot be reused by another table
         * while it is cached (the slot exists: no allocation) */
        lua_pushvalue(L, t);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &len_anchor_key);
        vm->len_table = p;
    }
    vm->len_value = n;
}

static lua_Integer border(lua_State *L, int t)
{
    if (lua_rawlen(L, t) == 0) return 0; /* 0 is a border: t[1] is nil */
    lua_Integer i = 0, j = 1;
    for (;;) {
        int present = lua_rawgeti(L, t, j) != LUA_TNIL;
        lua_pop(L, 1);
        if (!present) break;
        i = j;
        if (j > LUA_MAXINTEGER / 2) {
            /* a crafted sparse table: t[maxinteger] is the last candidate */
            j = LUA_MAXINTEGER;
            present = lua_rawgeti(L, t, j) != LUA_TNIL;
            lua_pop(L, 1);
            if (present) return j;
            break;
        }
        j *= 2;
    }
    while (j - i > 1) { /* t[i] present (or i == 0), t[j] absent */
        lua_Integer m = i + (j - i) / 2;
        int present = lua_rawgeti(L, t, m) != LUA_TNIL;
        lua_pop(L, 1);
        if (present)
            i = m;
        else
            j = m;
    }
    return i;
}

lua_Integer mr_sm_len(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) != LUA_TTABLE ||
        luaL_getmetafield(L, idx, "__len") != LUA_TNIL) {
        if (lua_type(L, idx) == LUA_TTABLE) lua_pop(L, 1);
        return luaL_len(L, idx);
    }
    struct mr_sm_vm *vm = mr_sm_vm_of(L);
    if (vm->len_table == lua_topointer(L, idx) && is_border(L, idx, vm->len_value))
        return vm->len_value;
    lua_Integer n = border(L, idx);
    remember_len(L, idx, n);
    return n;
}

/* Is the table at idx one whose length mr_sm_len may cache (no __len)? */
static int plain_len(lua_State *L, int idx)
{
    if (luaL_getmetafield(L, idx, "__len") == LUA_TNIL) return 1;
    lua_pop(L, 1);
    return 0;
}

/* After table.insert/remove set the length of t (at 1) to n: remember it
 * for t, or for its shadow if t is a state table (sm_txn.c: its __len
 * measures the shadow). */
static void set_len(lua_State *L, lua_Integer n)
{
    if (plain_len(L, 1)) {
        remember_len(L, 1, n);
    } else if (mr_sm_txn_shadow(L, 1)) {
        remember_len(L, lua_gettop(L), n);
        lua_pop(L, 1);
    }
}

static int l_rawlen(lua_State *L)
{
    int t = lua_type(L, 1);
    luaL_argexpected(L, t == LUA_TTABLE || t == LUA_TSTRING, 1, "table or string");
    lua_settop(L, 1);
    if (t == LUA_TTABLE && mr_sm_txn_shadow(L, 1)) lua_replace(L, 1);
    lua_pushinteger(L, t == LUA_TTABLE ? border(L, 1) : (lua_Integer)lua_rawlen(L, 1));
    return 1;
}

/* Anything but a plain table (a userdata with __index/__newindex/__len)
 * goes to the stock function, upvalue 1: its length comes from its __len. */
static int call_stock(lua_State *L)
{
    /* ltablib's functions use no upvalues: run it on this frame */
    return lua_tocfunction(L, lua_upvalueindex(1))(L);
}

/* table.insert as in Lua 5.4 (ltablib.c tinsert), with mr_sm_len. */
static int l_insert(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TTABLE) return call_stock(L);
    lua_Integer pos, e = mr_sm_len(L, 1);
    e = (lua_Integer)((lua_Unsigned)e + 1u); /* first empty element */
    switch (lua_gettop(L)) {
    case 2:
        pos = e;
        break;
    case 3: {
        pos = luaL_checkinteger(L, 2);
        luaL_argcheck(L, (lua_Unsigned)pos - 1u < (lua_Unsigned)e, 2,
                      "position out of bounds");
        for (lua_Integer i = e; i > pos; i--) {
            lua_geti(L, 1, i - 1);
            lua_seti(L, 1, i);
        }
        break;
    }
    default:
        return luaL_error(L, "wrong number of arguments to 'insert'");
    }
    lua_seti(L, 1, pos);
    set_len(L, e);
    return 0;
}

/* table.remove as in Lua 5.4 (ltablib.c tremove), with mr_sm_len. */
static int l_remove(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TTABLE) return call_stock(L);
    lua_Integer size = mr_sm_len(L, 1);
    lua_Integer pos = luaL_optinteger(L, 2, size);
    if (pos != size)
        luaL_argcheck(L, (lua_Unsigned)pos - 1u <= (lua_Unsigned)size, 2,
                      "position out of bounds");
    int removed = (lua_Unsigned)pos - 1u < (lua_Unsigned)size; /* 1 <= pos <= size */
    lua_geti(L, 1, pos);
    for (; pos < size; pos++) {
        lua_geti(L, 1, pos + 1);
        lua_seti(L, 1, pos);
    }
    lua_pushnil(L);
    lua_seti(L, 1, pos);
    int top = lua_gettop(L);
    set_len(L, size - removed);
    lua_settop(L, top);
    return 1;
}

/* table.unpack(t [, i [, j]]) and table.concat(t [, sep [, i [, j]]]): the
 * stock functions, with j defaulting to mr_sm_len(t). */
static int with_len_at(lua_State *L, int jarg)
{
    if (lua_type(L, 1) == LUA_TTABLE && lua_isnoneornil(L, jarg)) {
        lua_Integer n = mr_sm_len(L, 1);
        lua_settop(L, jarg);
        lua_pushinteger(L, n);
        lua_replace(L, jarg);
    }
    return call_stock(L);
}

static int l_unpack(lua_State *L)
{
    return with_len_at(L, 3);
}

static int l_concat(lua_State *L)
{
    return with_len_at(L, 4);
}

void mr_sm_order_open(lua_State *L)
{
    lua_pushboolean(L, 0);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &len_anchor_key);
    lua_pushboolean(L, 0);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &next_cache_key);
    lua_pushboolean(L, 0);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &serial_key);
    lua_pushcfunction(L, l_pairs);
    lua_setglobal(L, "pairs");
    lua_pushcfunction(L, l_next);
    lua_setglobal(L, "next");
    lua_pushcfunction(L, l_tostring);
    lua_setglobal(L, "tostring");
    lua_pushcfunction(L, l_rawlen);
    lua_setglobal(L, "rawlen");
    static const struct {
        const char *name;
        lua_CFunction fn;
    } tab[] = {{"insert", l_insert},
               {"remove", l_remove},
               {"unpack", l_unpack},
               {"concat", l_concat}};
    lua_getglobal(L, "table");
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
        lua_getfield(L, -1, tab[i].name);
        lua_pushcclosure(L, tab[i].fn, 1);
        lua_setfield(L, -2, tab[i].name);
    }
    lua_pop(L, 1);
    lua_getglobal(L, "string");
    lua_getfield(L, -1, "format");
    lua_pushcclosure(L, l_format, 1);
    lua_setfield(L, -2, "format");
    lua_pop(L, 1);
}

void mr_sm_order_reset(lua_State *L)
{
    mr_sm_vm_of(L)->len_table = NULL;
    reset_slot(L, &len_anchor_key);
    reset_slot(L, &next_cache_key);
    reset_slot(L, &serial_key);
}
