/* sortedmap: an ordered map of string -> string for scripts (a B+tree in C).
 *
 * Why: kv.lua used to keep a million decoded values in a Lua table plus a
 * sortedset for order. That is two million GC objects: ~500 MiB, a collector
 * that walks them all (and, after fork(), dirties every page it marks, so the
 * parent stalls on copy-on-write faults), and a snapshot that sorts every key.
 * Here each entry is one C block allocated through the Lua allocator, so it
 * counts against the heap cap, but it is not a Lua object: the collector sees
 * one userdata per map.
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
 * content only (not of insertion order or tree shape), so replicas holding the
 * same map dump the same bytes. load() appends in order in O(n) and rejects
 * anything else: bad magic or version, truncation, keys out of order or
 * repeated, a count that does not match, trailing bytes.
 *
 * Structure: a B+tree.
 *   - An entry is one allocation holding exactly its dump record: varint
 *     klen, varint vlen, key bytes, value bytes (2 bytes of header for short
 *     keys and values). dump() copies entries as they are; load() copies
 *     records into entries; a value update reallocates the one block.
 *   - A leaf holds up to LEAF_MAX (63) entries in key order: per slot a
 *     pointer to the entry and the key's first 8 bytes big-endian (zero
 *     padded), so most comparisons never touch the entry. Leaves are linked
 *     left to right for range, items and dump. A map that is one leaf grows
 *     that leaf from 2 slots up (small maps stay small).
 *   - An inner node holds up to INNER_MAX (64) children and the separators
 *     between them. Separator i is the smallest key of child i+1's subtree,
 *     held as a pointer to that key's entry (plus its prefix), not a copy:
 *     no allocation per separator, and the invariant is kept by the two
 *     operations that could break it: removing a leaf's first entry (the
 *     separator naming it is moved to the successor) and reallocating a
 *     leaf's first entry on a value update (the pointer is updated).
 *   - Splits: a full node splits in two halves, except when a key is
 *     appended past the last key of the map: then the left node stays full
 *     (ascending inserts and load() fill leaves completely).
 *   - Removal rebalances eagerly: a non-root node below half full merges with
 *     a sibling if both fit in one node, otherwise takes entries from it; a
 *     root with one child is replaced by it. Every non-root node is at least
 *     half full, except the nodes on the right edge that appends leave
 *     short, so memory stays bounded by ~2x the full-tree size.
 *   - All or nothing, even out of memory: set() reserves the nodes a split
 *     may need (kept in the map as spares, so a refused allocation leaks
 *     nothing) and allocates the entry before changing anything; remove()
 *     only frees.
 * Bytes per entry beyond key and value: 2 (entry header, short lengths) +
 * 16 per leaf slot (at the ~70% fill of random inserts: ~23; 16 after load
 * or ascending inserts) + ~0.5 for inner nodes; the skip list used 16 +
 * 8 x 1.33 links = ~26.7.
 *
 * Nothing depends on addresses or on the tree's shape: every operation
 * charges the instruction budget from the count (a seek: ~log2(count)
 * steps), entries returned and bytes copied, so a replica that replayed the
 * log and one that loaded a dump charge the same.
 *
 * sortedset is the same tree with empty values and a smaller surface:
 *   local s = sortedset.new()        -- or sortedset.from(t): t's string keys
 *   s:add(k) -> true if k was new     s:remove(k) -> true if k was there
 *   s:has(k)                          s:count() (also #s)
 *   s:range([prefix [, limit [, after]]]) -> array of keys (as above) */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "sm/sm_int.h"

/* 63: a full leaf is then 16 + 63 x 16 = 1024 bytes, a size class of every
 * allocator (64 slots made it 1040, which jemalloc rounds up to 1280). */
#define LEAF_MAX 63
#define LEAF_MIN (LEAF_MAX / 2)
#define LEAF_FIRST 2 /* slots of a new map's (root) leaf; doubles up to LEAF_MAX */
#define INNER_MAX 64 /* children */
#define INNER_MIN (INNER_MAX / 2)
#define MAXH 24 /* inner levels: >= 2 children each, a path never gets near */
#define MAP_MT "moonraft.sortedmap"
#define SET_MT "moonraft.sortedset"
#define DUMP_MAGIC "MRSM"
#define DUMP_VERSION 1
#define DUMP_HEADER 16 /* magic, version, 3 zero bytes, u64 count */

typedef unsigned char ent; /* varint klen, varint vlen, key, value */

struct leaf {
    uint32_t n, cap;
    struct leaf *next;
    uint64_t pfx[]; /* cap prefixes, then cap entry pointers */
};

struct inner {
    uint32_t n; /* children */
    uint64_t pfx[INNER_MAX - 1];
    ent *sep[INNER_MAX - 1];
    void *kid[INNER_MAX];
};

struct map {
    void *root;   /* a leaf when height is 0 */
    int height;   /* inner levels above the leaves */
    size_t count;
    size_t dump_size; /* bytes of the entries in a dump (varints + keys + values) */
    struct leaf *spare_leaf;     /* reserved by set for a split, LEAF_MAX slots */
    struct inner *spare[MAXH + 1];
    int nspare;
};

/* A path from the root: in[i] is the inner node at depth i, at[i] the child
 * taken there. */
struct path {
    struct inner *in[MAXH];
    uint32_t at[MAXH];
};

static ent **ents(struct leaf *l)
{
    return (ent **)(l->pfx + l->cap);
}

static size_t leaf_size(uint32_t cap)
{
    return offsetof(struct leaf, pfx) + (size_t)cap * (sizeof(uint64_t) + sizeof(ent *));
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

/* Decodes an entry's lengths (written by put_varint: well formed); returns
 * the key. */
static const char *ent_dec(const ent *e, uint32_t *klen, uint32_t *vlen)
{
    if (e[0] < 0x80 && e[1] < 0x80) { /* short key and value */
        *klen = e[0];
        *vlen = e[1];
        return (const char *)e + 2;
    }
    uint32_t v[2];
    for (int i = 0; i < 2; i++) {
        uint32_t x = 0;
        for (int shift = 0;; shift += 7) {
            unsigned b = *e++;
            x |= (uint32_t)(b & 0x7F) << shift;
            if ((b & 0x80) == 0) break;
        }
        v[i] = x;
    }
    *klen = v[0];
    *vlen = v[1];
    return (const char *)e;
}

static size_t ent_size(const ent *e)
{
    uint32_t kl, vl;
    const char *k = ent_dec(e, &kl, &vl);
    return (size_t)(k - (const char *)e) + kl + vl;
}

/* The key's first 8 bytes, big-endian, zero padded: prefixes that differ
 * order their keys bytewise; equal prefixes need the full comparison. */
static uint64_t prefix_of(const char *k, size_t len)
{
    uint64_t p = 0;
    size_t n = len < 8 ? len : 8;
    for (size_t i = 0; i < n; i++) p |= (uint64_t)(unsigned char)k[i] << (56 - 8 * i);
    return p;
}

/* Compares key k (prefix kp) with entry e (prefix ep). */
static int cmp_ent(uint64_t kp, const char *k, size_t len, uint64_t ep, const ent *e)
{
    if (kp != ep) return kp < ep ? -1 : 1;
    uint32_t kl, vl;
    const char *ek = ent_dec(e, &kl, &vl);
    return cmp(k, len, ek, kl);
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

static void map_free(lua_State *L, void *p, size_t size)
{
    void *ud;
    lua_Alloc f = lua_getallocf(L, &ud);
    f(ud, p, size, 0);
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

static ent *new_ent(lua_State *L, const char *k, size_t klen, const char *v, size_t vlen)
{
    ent *e = map_alloc(L, NULL, 0, entry_size(klen, vlen));
    unsigned char *p = put_varint(put_varint(e, klen), vlen);
    if (klen) memcpy(p, k, klen);
    if (vlen) memcpy(p + klen, v, vlen);
    return e;
}

static struct leaf *new_leaf(lua_State *L, uint32_t cap)
{
    struct leaf *l = map_alloc(L, NULL, 0, leaf_size(cap));
    l->n = 0;
    l->cap = cap;
    l->next = NULL;
    return l;
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
    m->root = new_leaf(L, LEAF_FIRST);
    return m;
}

/* Charged from the count alone: the nodes visited depend on the tree's
 * shape, hence on the insertion history, which differs between a replica
 * that replayed the log and one that loaded a dump: charging them would let
 * the budget trip on one replica and not the other. */
static void charge_seek(lua_State *L, const struct map *m)
{
    uint64_t steps = 1;
    for (size_t n = m->count; n > 0; n >>= 1) steps++;
    mr_sm_charge(L, steps);
}

/* The leaf where k belongs; fills p (if given) with the inner nodes on the
 * way. In an inner node, child i holds the keys in [sep[i-1], sep[i]). */
static struct leaf *descend(const struct map *m, uint64_t kp, const char *k, size_t len,
                            struct path *p)
{
    void *x = m->root;
    for (int d = 0; d < m->height; d++) {
        struct inner *in = x;
        uint32_t lo = 0, hi = in->n - 1; /* the first separator > k, or n - 1 */
        while (lo < hi) {
            uint32_t mid = (lo + hi) / 2;
            if (cmp_ent(kp, k, len, in->pfx[mid], in->sep[mid]) < 0)
                hi = mid;
            else
                lo = mid + 1;
        }
        if (p) {
            p->in[d] = in;
            p->at[d] = lo;
        }
        x = in->kid[lo];
    }
    return x;
}

/* The first slot of l whose key is >= k; *found: it is k. */
static uint32_t leaf_seek(struct leaf *l, uint64_t kp, const char *k, size_t len, int *found)
{
    ent **e = ents(l);
    uint32_t lo = 0, hi = l->n;
    int c = 1;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        int cm = cmp_ent(kp, k, len, l->pfx[mid], e[mid]);
        if (cm > 0) {
            lo = mid + 1;
        } else {
            hi = mid;
            c = cm;
        }
    }
    *found = lo < l->n && c == 0;
    return lo;
}

struct pos {
    struct leaf *l;
    uint32_t i;
    int found;
};

static struct pos seek(lua_State *L, const struct map *m, const char *k, size_t len,
                       struct path *p)
{
    struct pos r;
    uint64_t kp = prefix_of(k, len);
    r.l = descend(m, kp, k, len, p);
    r.i = leaf_seek(r.l, kp, k, len, &r.found);
    charge_seek(L, m);
    return r;
}

/* The first entry of a leaf changed (removed, or moved by a realloc): the
 * separator that named it, in the lowest inner node on the path where the
 * leaf is not the leftmost descendant, now names e. */
static void fix_sep(struct map *m, const struct path *p, ent *e, uint64_t pf)
{
    for (int d = m->height - 1; d >= 0; d--) {
        if (p->at[d] > 0) {
            p->in[d]->sep[p->at[d] - 1] = e;
            p->in[d]->pfx[p->at[d] - 1] = pf;
            return;
        }
    }
}

/* Makes room for one more entry in leaf l (at the end of path p) without
 * changing the map: grows a root leaf that is not at full size yet, or
 * reserves the nodes a split will take (kept in the map, so a refusal
 * half-way leaks nothing). Returns l (moved if it grew). May raise. */
static struct leaf *reserve(lua_State *L, struct map *m, struct leaf *l, const struct path *p)
{
    if (l->n < l->cap) return l;
    if (l->cap < LEAF_MAX) { /* only the root leaf is short */
        MR_ASSERT(m->height == 0 && l == m->root);
        uint32_t cap = l->cap * 2 > LEAF_MAX ? LEAF_MAX : l->cap * 2;
        struct leaf *g = map_alloc(L, l, leaf_size(l->cap), leaf_size(cap));
        memmove(g->pfx + cap, g->pfx + g->cap, g->n * sizeof(ent *));
        g->cap = cap;
        m->root = g;
        return g;
    }
    int need = 1; /* inner nodes: one per full level on the path, plus a new root */
    for (int d = m->height - 1; d >= 0 && p->in[d]->n == INNER_MAX; d--) need++;
    MR_ASSERT(m->height < MAXH || need <= m->height);
    if (m->spare_leaf == NULL) m->spare_leaf = new_leaf(L, LEAF_MAX);
    while (m->nspare < need) {
        struct inner *in = map_alloc(L, NULL, 0, sizeof *in);
        m->spare[m->nspare++] = in;
    }
    return l;
}

/* Inserts entry e (prefix ep) at slot i of leaf l, splitting up the path as
 * needed with the nodes reserve() set aside. Never fails. */
static void insert(struct map *m, struct leaf *l, uint32_t i, const struct path *p, ent *e,
                   uint64_t ep)
{
    ent **le = ents(l);
    if (l->n < l->cap) {
        memmove(l->pfx + i + 1, l->pfx + i, (l->n - i) * sizeof(uint64_t));
        memmove(le + i + 1, le + i, (l->n - i) * sizeof(ent *));
        l->pfx[i] = ep;
        le[i] = e;
        l->n++;
        return;
    }
    /* Appending past the last key: the left nodes stay full. */
    int append = l->next == NULL && i == l->n;
    uint64_t tp[LEAF_MAX + 1];
    ent *te[LEAF_MAX + 1];
    memcpy(tp, l->pfx, i * sizeof(uint64_t));
    memcpy(te, le, i * sizeof(ent *));
    tp[i] = ep;
    te[i] = e;
    memcpy(tp + i + 1, l->pfx + i, (l->n - i) * sizeof(uint64_t));
    memcpy(te + i + 1, le + i, (l->n - i) * sizeof(ent *));
    uint32_t total = l->n + 1, left = append ? LEAF_MAX : total / 2;
    struct leaf *r = m->spare_leaf;
    m->spare_leaf = NULL;
    MR_ASSERT(r != NULL && r->cap == LEAF_MAX);
    memcpy(l->pfx, tp, left * sizeof(uint64_t));
    memcpy(le, te, left * sizeof(ent *));
    r->n = total - left;
    memcpy(r->pfx, tp + left, r->n * sizeof(uint64_t));
    memcpy(ents(r), te + left, r->n * sizeof(ent *));
    l->n = left;
    r->next = l->next;
    l->next = r;
    /* push (separator, right node) up */
    uint64_t sp = r->pfx[0];
    ent *se = ents(r)[0];
    void *kid = r;
    for (int d = m->height - 1; d >= 0; d--) {
        struct inner *in = p->in[d];
        uint32_t at = p->at[d] + 1; /* the new child's place; its separator at at - 1 */
        if (in->n < INNER_MAX) {
            memmove(in->kid + at + 1, in->kid + at, (in->n - at) * sizeof(void *));
            memmove(in->sep + at, in->sep + at - 1, (in->n - at) * sizeof(ent *));
            memmove(in->pfx + at, in->pfx + at - 1, (in->n - at) * sizeof(uint64_t));
            in->kid[at] = kid;
            in->sep[at - 1] = se;
            in->pfx[at - 1] = sp;
            in->n++;
            return;
        }
        void *tk[INNER_MAX + 1];
        ent *ts[INNER_MAX];
        uint64_t tf[INNER_MAX];
        memcpy(tk, in->kid, at * sizeof(void *));
        tk[at] = kid;
        memcpy(tk + at + 1, in->kid + at, (INNER_MAX - at) * sizeof(void *));
        memcpy(ts, in->sep, (at - 1) * sizeof(ent *));
        memcpy(tf, in->pfx, (at - 1) * sizeof(uint64_t));
        ts[at - 1] = se;
        tf[at - 1] = sp;
        memcpy(ts + at, in->sep + at - 1, (INNER_MAX - at) * sizeof(ent *));
        memcpy(tf + at, in->pfx + at - 1, (INNER_MAX - at) * sizeof(uint64_t));
        /* kids [0, lk) stay, separator lk - 1 goes up, the rest go right
         * (two children at least: no inner node has only one) */
        uint32_t lk = append ? INNER_MAX - 1 : (INNER_MAX + 1) / 2;
        MR_ASSERT(m->nspare > 0);
        struct inner *nr = m->spare[--m->nspare];
        memcpy(in->kid, tk, lk * sizeof(void *));
        memcpy(in->sep, ts, (lk - 1) * sizeof(ent *));
        memcpy(in->pfx, tf, (lk - 1) * sizeof(uint64_t));
        in->n = lk;
        nr->n = INNER_MAX + 1 - lk;
        memcpy(nr->kid, tk + lk, nr->n * sizeof(void *));
        memcpy(nr->sep, ts + lk, (nr->n - 1) * sizeof(ent *));
        memcpy(nr->pfx, tf + lk, (nr->n - 1) * sizeof(uint64_t));
        se = ts[lk - 1];
        sp = tf[lk - 1];
        kid = nr;
    }
    MR_ASSERT(m->nspare > 0);
    struct inner *root = m->spare[--m->nspare];
    root->n = 2;
    root->kid[0] = m->root;
    root->kid[1] = kid;
    root->sep[0] = se;
    root->pfx[0] = sp;
    m->root = root;
    m->height++;
}

/* Removes child li + 1 and separator li from par. */
static void drop_kid(struct inner *par, uint32_t li)
{
    uint32_t rest = par->n - (li + 2);
    memmove(par->kid + li + 1, par->kid + li + 2, rest * sizeof(void *));
    memmove(par->sep + li, par->sep + li + 1, rest * sizeof(ent *));
    memmove(par->pfx + li, par->pfx + li + 1, rest * sizeof(uint64_t));
    par->n--;
}

/* Leaves a and b, children li and li + 1 of par: merged into a if they fit
 * (b freed; returns 1), else their entries evened out (returns 0). */
static int fix_leaves(lua_State *L, struct leaf *a, struct leaf *b, struct inner *par, uint32_t li)
{
    uint32_t total = a->n + b->n;
    MR_ASSERT(a->cap == LEAF_MAX && b->cap == LEAF_MAX);
    uint32_t wa = total <= LEAF_MAX ? total : total / 2;
    if (wa > a->n) { /* b's first entries to a's end */
        uint32_t k = wa - a->n;
        memcpy(a->pfx + a->n, b->pfx, k * sizeof(uint64_t));
        memcpy(ents(a) + a->n, ents(b), k * sizeof(ent *));
        memmove(b->pfx, b->pfx + k, (b->n - k) * sizeof(uint64_t));
        memmove(ents(b), ents(b) + k, (b->n - k) * sizeof(ent *));
        a->n += k;
        b->n -= k;
    } else if (wa < a->n) { /* a's last entries to b's front */
        uint32_t k = a->n - wa;
        memmove(b->pfx + k, b->pfx, b->n * sizeof(uint64_t));
        memmove(ents(b) + k, ents(b), b->n * sizeof(ent *));
        memcpy(b->pfx, a->pfx + wa, k * sizeof(uint64_t));
        memcpy(ents(b), ents(a) + wa, k * sizeof(ent *));
        a->n -= k;
        b->n += k;
    }
    if (b->n == 0) {
        a->next = b->next;
        drop_kid(par, li);
        map_free(L, b, leaf_size(b->cap));
        return 1;
    }
    par->sep[li] = ents(b)[0];
    par->pfx[li] = b->pfx[0];
    return 0;
}

/* The same for inner nodes: the separator between them comes down from
 * par, and one goes back up unless they merged. */
static int fix_inners(lua_State *L, struct inner *a, struct inner *b, struct inner *par,
                      uint32_t li)
{
    void *tk[2 * INNER_MAX];
    ent *ts[2 * INNER_MAX];
    uint64_t tf[2 * INNER_MAX];
    uint32_t total = a->n + b->n;
    memcpy(tk, a->kid, a->n * sizeof(void *));
    memcpy(tk + a->n, b->kid, b->n * sizeof(void *));
    memcpy(ts, a->sep, (a->n - 1) * sizeof(ent *));
    memcpy(tf, a->pfx, (a->n - 1) * sizeof(uint64_t));
    ts[a->n - 1] = par->sep[li];
    tf[a->n - 1] = par->pfx[li];
    memcpy(ts + a->n, b->sep, (b->n - 1) * sizeof(ent *));
    memcpy(tf + a->n, b->pfx, (b->n - 1) * sizeof(uint64_t));
    uint32_t wa = total <= INNER_MAX ? total : total / 2;
    memcpy(a->kid, tk, wa * sizeof(void *));
    memcpy(a->sep, ts, (wa - 1) * sizeof(ent *));
    memcpy(a->pfx, tf, (wa - 1) * sizeof(uint64_t));
    a->n = wa;
    if (wa == total) {
        drop_kid(par, li);
        map_free(L, b, sizeof *b);
        return 1;
    }
    b->n = total - wa;
    memcpy(b->kid, tk + wa, b->n * sizeof(void *));
    memcpy(b->sep, ts + wa, (b->n - 1) * sizeof(ent *));
    memcpy(b->pfx, tf + wa, (b->n - 1) * sizeof(uint64_t));
    par->sep[li] = ts[wa - 1];
    par->pfx[li] = tf[wa - 1];
    return 0;
}

/* After a removal from leaf l (at the end of path p): every non-root node
 * below half full merges with a sibling or takes from it, up the path; a
 * root left with one child gives way to it. Never fails. */
static void rebalance(lua_State *L, struct map *m, const struct path *p, struct leaf *l)
{
    void *node = l;
    for (int d = m->height - 1; d >= 0; d--) {
        struct inner *par = p->in[d];
        uint32_t at = p->at[d], li = at > 0 ? at - 1 : 0;
        int merged;
        if (d == m->height - 1) {
            if (((struct leaf *)node)->n >= LEAF_MIN) return;
            merged = fix_leaves(L, par->kid[li], par->kid[li + 1], par, li);
        } else {
            if (((struct inner *)node)->n >= INNER_MIN) return;
            merged = fix_inners(L, par->kid[li], par->kid[li + 1], par, li);
        }
        if (!merged) return;
        node = par;
    }
    struct inner *root = m->root;
    if (m->height > 0 && root->n == 1) {
        m->root = root->kid[0];
        m->height--;
        map_free(L, root, sizeof *root);
    }
}

static int l_set(lua_State *L)
{
    struct map *m = check_map(L);
    size_t klen, vlen;
    const char *k = check_str(L, 2, &klen, "key");
    const char *v = check_str(L, 3, &vlen, "value");
    struct path p;
    mr_sm_charge(L, (klen + vlen) / MR_SM_BYTES_PER_STEP);
    struct pos x = seek(L, m, k, klen, &p);
    ent **le = ents(x.l);
    if (mr_sm_vm_of(L)->txn_on) { /* undo entry first: it may raise */
        if (x.found) {
            uint32_t kl, vl;
            const char *ek = ent_dec(le[x.i], &kl, &vl);
            lua_pushlstring(L, ek + kl, vl);
            mr_sm_txn_journal(L, 1, 2, -1);
            lua_pop(L, 1);
        } else {
            mr_sm_txn_journal(L, 1, 2, 0);
        }
    }
    if (x.found) {
        ent *e = le[x.i];
        uint32_t kl, old;
        const char *ek = ent_dec(e, &kl, &old);
        size_t hdr = (size_t)(ek - (const char *)e), osize = hdr + kl + old;
        size_t nsize = entry_size(klen, vlen);
        if (nsize != osize) {
            ent *n;
            if (varint_len(klen) + varint_len(vlen) == hdr) {
                /* The allocator leaves e as it was if it refuses. */
                n = map_alloc(L, e, osize, nsize);
                put_varint(put_varint(n, klen), vlen);
            } else { /* the header changes size: a fresh block */
                n = new_ent(L, k, klen, v, vlen);
                map_free(L, e, osize);
            }
            le[x.i] = n;
            if (x.i == 0) fix_sep(m, &p, n, x.l->pfx[0]);
            e = n;
        }
        if (vlen) memcpy(e + nsize - vlen, v, vlen);
        m->dump_size = m->dump_size - osize + nsize;
        lua_pushboolean(L, 0);
        return 1;
    }
    struct leaf *l = reserve(L, m, x.l, &p);
    ent *e = new_ent(L, k, klen, v, vlen);
    insert(m, l, x.i, &p, e, prefix_of(k, klen));
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
    struct pos x = seek(L, m, k, len, NULL);
    if (!x.found) {
        lua_pushnil(L);
        return 1;
    }
    uint32_t kl, vl;
    const char *ek = ent_dec(ents(x.l)[x.i], &kl, &vl);
    mr_sm_charge(L, vl / MR_SM_BYTES_PER_STEP);
    lua_pushlstring(L, ek + kl, vl);
    return 1;
}

static int l_has(lua_State *L)
{
    struct map *m = check_map(L);
    size_t len;
    const char *k = luaL_checklstring(L, 2, &len);
    lua_pushboolean(L, seek(L, m, k, len, NULL).found);
    return 1;
}

static int l_remove(lua_State *L)
{
    struct map *m = check_map(L);
    size_t len;
    const char *k = luaL_checklstring(L, 2, &len);
    struct path p;
    struct pos x = seek(L, m, k, len, &p);
    if (!x.found) {
        lua_pushboolean(L, 0);
        return 1;
    }
    struct leaf *l = x.l;
    ent **le = ents(l);
    ent *e = le[x.i];
    if (mr_sm_vm_of(L)->txn_on) { /* undo entry first: it may raise */
        uint32_t kl, vl;
        const char *ek = ent_dec(e, &kl, &vl);
        lua_pushlstring(L, ek + kl, vl);
        mr_sm_txn_journal(L, 1, 2, -1);
        lua_pop(L, 1);
    }
    memmove(l->pfx + x.i, l->pfx + x.i + 1, (l->n - x.i - 1) * sizeof(uint64_t));
    memmove(le + x.i, le + x.i + 1, (l->n - x.i - 1) * sizeof(ent *));
    l->n--;
    if (x.i == 0 && m->height > 0) {
        /* the separator naming e names its successor (if l is now empty and
         * last, rebalance drops that separator) */
        if (l->n > 0)
            fix_sep(m, &p, le[0], l->pfx[0]);
        else if (l->next != NULL)
            fix_sep(m, &p, ents(l->next)[0], l->next->pfx[0]);
        else
            fix_sep(m, &p, NULL, 0);
    }
    size_t size = ent_size(e);
    m->count--;
    m->dump_size -= size;
    map_free(L, e, size);
    if (m->height > 0) rebalance(L, m, &p, l);
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

/* range and items: the first entry of the answer, then along the leaves. */
static int walk(lua_State *L, int with_values)
{
    struct map *m = check_map(L);
    size_t plen = 0, alen = 0;
    const char *prefix = luaL_optlstring(L, 2, "", &plen);
    lua_Integer limit = luaL_optinteger(L, 3, LUA_MAXINTEGER);
    const char *after = luaL_optlstring(L, 4, NULL, &alen);
    luaL_argcheck(L, limit >= 0, 3, "limit must be >= 0");
    struct pos x;
    if (after != NULL && cmp(after, alen, prefix, plen) >= 0) {
        x = seek(L, m, after, alen, NULL);
        if (x.found) x.i++;
    } else {
        x = seek(L, m, prefix, plen, NULL);
    }
    push_array(L);
    if (with_values) push_array(L);
    int keys = with_values ? -2 : -1;
    struct leaf *l = x.l;
    uint32_t i = x.i;
    for (lua_Integer n = 0; n < limit; i++) {
        if (i == l->n) {
            l = l->next;
            i = 0;
            if (l == NULL) break;
        }
        uint32_t kl, vl;
        const char *ek = ent_dec(ents(l)[i], &kl, &vl);
        if (kl < plen || (plen && memcmp(ek, prefix, plen) != 0)) break;
        n++;
        mr_sm_charge(L, 1);
        lua_pushlstring(L, ek, kl);
        lua_rawseti(L, keys - 1, n);
        if (with_values) {
            mr_sm_charge(L, vl / MR_SM_BYTES_PER_STEP);
            lua_pushlstring(L, ek + kl, vl);
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

static struct leaf *first_leaf(const struct map *m)
{
    void *x = m->root;
    for (int d = 0; d < m->height; d++) x = ((struct inner *)x)->kid[0];
    return x;
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

/* The bytes are written into the vm's output buffer (grown once, to the exact
 * size kept up to date by set and remove), then copied into one Lua string:
 * one walk of the leaves (an entry is its dump record), no sorting, no
 * per-entry Lua values. */
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
    for (struct leaf *l = first_leaf(m); l != NULL; l = l->next) {
        ent **le = ents(l);
        for (uint32_t i = 0; i < l->n; i++) {
            size_t size = ent_size(le[i]);
            memcpy(p, le[i], size);
            p += size;
        }
    }
    MR_ASSERT((size_t)(p - (unsigned char *)vm->out.p) == total);
    lua_pushlstring(L, vm->out.p, total);
    vm->out.len = 0;
    return 1;
}

/* Bulk building (load, from): entries come in strictly increasing order and
 * go to the end of the last leaf; only when it is full does the path to it
 * get walked (once per LEAF_MAX entries), so n entries cost O(n). The leaf
 * to append to is *last (NULL: find it). */
static void append(lua_State *L, struct map *m, struct leaf **last, const char *k, size_t klen,
                   const char *v, size_t vlen)
{
    struct leaf *l = *last;
    struct path p;
    if (l == NULL || l->n == l->cap) {
        void *x = m->root;
        for (int d = 0; d < m->height; d++) {
            struct inner *in = x;
            p.in[d] = in;
            p.at[d] = in->n - 1;
            x = in->kid[in->n - 1];
        }
        l = reserve(L, m, x, &p);
        *last = l;
    }
    ent *e = new_ent(L, k, klen, v, vlen);
    uint64_t ep = prefix_of(k, klen);
    if (l->n < l->cap) {
        insert(m, l, l->n, NULL, e, ep); /* no split: the path is not used */
    } else {
        insert(m, l, l->n, &p, e, ep);
        *last = l->next;
    }
    m->count++;
    m->dump_size += entry_size(klen, vlen);
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
    struct leaf *last = NULL;
    const char *pk = NULL; /* the previous key */
    uint32_t pklen = 0;
    uint64_t n = 0;
    while (p < end) {
        uint32_t klen, vlen;
        if (n == count) return load_fail(L, "trailing bytes after the last entry", n);
        if (get_len(&p, end, &klen) != 0 || get_len(&p, end, &vlen) != 0)
            return load_fail(L, "bad or truncated length", n);
        if ((size_t)(end - p) < (size_t)klen + vlen) return load_fail(L, "truncated", n);
        const char *k = (const char *)p;
        if (n > 0 && cmp(pk, pklen, k, klen) >= 0)
            return load_fail(L, "keys not in strictly increasing order", n);
        mr_sm_charge(L, 1);
        append(L, m, &last, k, klen, k + klen, vlen);
        pk = k;
        pklen = klen;
        p += (size_t)klen + vlen;
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

static void free_tree(lua_State *L, void *x, int h)
{
    if (h == 0) {
        struct leaf *l = x;
        for (uint32_t i = 0; i < l->n; i++) map_free(L, ents(l)[i], ent_size(ents(l)[i]));
        map_free(L, l, leaf_size(l->cap));
        return;
    }
    struct inner *in = x;
    for (uint32_t i = 0; i < in->n; i++) free_tree(L, in->kid[i], h - 1);
    map_free(L, in, sizeof *in);
}

static int l_gc(lua_State *L)
{
    struct map *m = lua_touserdata(L, 1);
    if (m->root != NULL) free_tree(L, m->root, m->height);
    if (m->spare_leaf != NULL) map_free(L, m->spare_leaf, leaf_size(m->spare_leaf->cap));
    for (int i = 0; i < m->nspare; i++) map_free(L, m->spare[i], sizeof *m->spare[i]);
    memset(m, 0, sizeof *m);
    return 0;
}

static int l_new(lua_State *L)
{
    push_new_map(L, MAP_MT);
    return 1;
}

/* ---- sortedset: the same tree, values empty ------------------------------- */
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
    struct leaf *last = NULL;
    lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
    for (lua_Integer i = 1; i <= n; i++) {
        size_t len;
        lua_rawgeti(L, 2, i);
        const char *k = lua_tolstring(L, -1, &len);
        if (len > UINT32_MAX) return luaL_error(L, "sortedset.from: key too long");
        append(L, m, &last, k, len, "", 0);
        lua_pop(L, 1);
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
