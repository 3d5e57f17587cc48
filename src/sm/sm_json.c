/* JSON <-> Lua values for the state machine host.
 *
 * Why not lua-cjson: the Debian build (2.1.0) pushes every number as a float
 * and prints with %.14g, so integers above 2^53 (and 2^63-1) are corrupted,
 * and it writes object keys in `next` order, which differs between replicas.
 * Commands and snapshots need both exact integers and canonical output. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "sm/sm_int.h"

/* ---- buffers --------------------------------------------------------------- */

int mr_sm_buf_reserve(struct mr_sm_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra) return 0;
    size_t need = b->len + extra;
    if (need < b->len) return MR_ENOMEM;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    char *p = mr_realloc(b->p, cap);
    if (p == NULL) return MR_ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

int mr_sm_buf_append(struct mr_sm_buf *b, const void *data, size_t n)
{
    if (n == 0) return 0;
    if (mr_sm_buf_reserve(b, n) != 0) return MR_ENOMEM;
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

static int buf_putc(struct mr_sm_buf *b, char c)
{
    if (b->len == b->cap && mr_sm_buf_reserve(b, 1) != 0) return MR_ENOMEM;
    b->p[b->len++] = c;
    return 0;
}

void mr_sm_buf_free(struct mr_sm_buf *b)
{
    mr_free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

void mr_sm_json_scratch_free(struct mr_sm_json_scratch *s)
{
    mr_free(s->keys);
    s->keys = NULL;
    s->nkeys = s->capkeys = 0;
    mr_sm_buf_free(&s->numbuf);
    mr_sm_buf_free(&s->str);
}

/* ---- UTF-8 ----------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at p (< end), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    if (c < 0x80) return 1;
    size_t n;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        return 0;
    }
    if ((size_t)(end - p) < n) return 0;
    if (p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF) return 0;
    return n;
}

/* ---- encoder --------------------------------------------------------------- */

static int enc_string(struct mr_sm_buf *out, const char *s, size_t len, char *errmsg)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s, *end = p + len, *run = p;
    if (mr_sm_buf_reserve(out, len + 2) != 0) return MR_ENOMEM;
    out->p[out->len++] = '"';
    while (p < end) {
        unsigned c = *p;
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            p++;
            continue;
        }
        if (c >= 0x80) {
            size_t n = utf8_seq(p, end);
            if (n == 0) {
                mr_errmsg_printf(errmsg, "string is not valid UTF-8 (byte %zu)",
                                 (size_t)(p - (const unsigned char *)s));
                return MR_EMALFORMED;
            }
            p += n;
            continue;
        }
        if (mr_sm_buf_append(out, run, (size_t)(p - run)) != 0) return MR_ENOMEM;
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t elen = 2;
        switch (c) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            elen = 6;
        }
        if (mr_sm_buf_append(out, esc, elen) != 0) return MR_ENOMEM;
        p++;
        run = p;
    }
    if (mr_sm_buf_append(out, run, (size_t)(p - run)) != 0) return MR_ENOMEM;
    return buf_putc(out, '"');
}

/* Writes v in decimal as "%lld" does, into tmp (at least 21 bytes, no
 * terminator); returns the length. snprintf was a tenth of an apply that
 * encodes a few integers. */
static size_t fmt_int(char *tmp, lua_Integer v)
{
    char rev[24];
    size_t n = 0, len = 0;
    /* negate in unsigned arithmetic: LUA_MININTEGER has no positive twin */
    lua_Unsigned u = v < 0 ? (lua_Unsigned)0 - (lua_Unsigned)v : (lua_Unsigned)v;
    do {
        rev[n++] = (char)('0' + (int)(u % 10u));
        u /= 10u;
    } while (u != 0);
    if (v < 0) tmp[len++] = '-';
    while (n > 0) tmp[len++] = rev[--n];
    return len;
}

static int enc_number(lua_State *L, int idx, struct mr_sm_buf *out, char *errmsg)
{
    char tmp[64];
    int n;
    if (lua_isinteger(L, idx))
        return mr_sm_buf_append(out, tmp, fmt_int(tmp, lua_tointeger(L, idx)));
    double d = lua_tonumber(L, idx);
    if (!isfinite(d)) {
        mr_errmsg_printf(errmsg, "cannot encode %s", isnan(d) ? "NaN" : "infinity");
        return MR_EMALFORMED;
    }
    /* Shortest of %.15g..%.17g that reads back as the same double: the
     * output is a pure function of the value, so every node writes it alike. */
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        if (strtod(tmp, NULL) == d) break;
    }
    /* Keep the float subtype visible: 1.0 must not come back as integer 1. */
    if (strpbrk(tmp, ".e") == NULL) {
        memcpy(tmp + n, ".0", 3);
        n += 2;
    }
    return mr_sm_buf_append(out, tmp, (size_t)n);
}

static int key_cmp(const void *a, const void *b)
{
    const struct mr_sm_key *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->s, y->s, n);
    if (c != 0) return c;
    return (x->len > y->len) - (x->len < y->len);
}

/* Sorts keys by key_cmp: insertion sort for the few keys most objects have
 * (qsort's setup cost more than the sort), qsort beyond. */
static void sort_keys(struct mr_sm_key *k, size_t n)
{
    if (n > 12) {
        qsort(k, n, sizeof *k, key_cmp);
        return;
    }
    for (size_t i = 1; i < n; i++) {
        struct mr_sm_key t = k[i];
        size_t j = i;
        while (j > 0 && key_cmp(&k[j - 1], &t) > 0) {
            k[j] = k[j - 1];
            j--;
        }
        k[j] = t;
    }
}

static int push_key(struct mr_sm_json_scratch *js, struct mr_sm_key **k)
{
    if (js->nkeys == js->capkeys) {
        size_t cap = js->capkeys ? js->capkeys * 2 : 64;
        struct mr_sm_key *nk = mr_realloc(js->keys, cap * sizeof *nk);
        if (nk == NULL) return MR_ENOMEM;
        js->keys = nk;
        js->capkeys = cap;
    }
    *k = &js->keys[js->nkeys++];
    return 0;
}

static int enc_value(lua_State *L, int idx, struct mr_sm_buf *out, int depth,
                     char *errmsg);

/* ---- json.raw: JSON text the encoder writes verbatim --------------------------
 * A full userdata with this metatable; its user value 1 is the text, checked
 * by the decoder's own grammar when the wrapper is made, so the encoder can
 * only ever emit valid JSON (that our decoder reads back: the nesting of the
 * text is kept and counted where it is embedded). The text is not
 * re-canonicalised: it is written as given. */
#define RAW_MT "moonraft.json.raw"

struct raw {
    int depth; /* nesting of the text: 0 for a scalar, 1 for [1], ... */
};

/* Pushes the text of the raw value at idx (which must be one). */
static const char *raw_text(lua_State *L, int idx, size_t *len)
{
    lua_getiuservalue(L, idx, 1);
    return lua_tolstring(L, -1, len);
}

static int enc_raw(lua_State *L, int idx, struct mr_sm_buf *out, int depth, char *errmsg)
{
    const struct raw *r = lua_touserdata(L, idx);
    if (depth + r->depth > MR_SM_JSON_MAX_DEPTH) {
        mr_errmsg_printf(errmsg, "nesting deeper than %d", MR_SM_JSON_MAX_DEPTH);
        return MR_EMALFORMED;
    }
    size_t len;
    const char *s = raw_text(L, idx, &len);
    mr_sm_charge(L, len / MR_SM_BYTES_PER_STEP);
    int rv = mr_sm_buf_append(out, s, len);
    lua_pop(L, 1);
    return rv;
}

static int enc_table(lua_State *L, int idx, struct mr_sm_buf *out, int depth,
                     char *errmsg)
{
    struct mr_sm_vm *vm = mr_sm_vm_of(L);
    struct mr_sm_json_scratch *js = &vm->js;
    size_t base = js->nkeys, numbase = js->numbuf.len, count = 0;
    lua_Integer maxi = 0;
    int all_int = 1, rv, bad_rank = 7;

    if (depth > MR_SM_JSON_MAX_DEPTH) {
        mr_errmsg_printf(errmsg, "nesting deeper than %d", MR_SM_JSON_MAX_DEPTH);
        return MR_EMALFORMED;
    }
    if (!lua_checkstack(L, 4)) return MR_ENOMEM;

    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        struct mr_sm_key *k;
        count++;
        if ((rv = push_key(js, &k)) != 0) return rv;
        if (lua_type(L, -2) == LUA_TSTRING) {
            k->s = lua_tolstring(L, -2, &k->len);
            k->is_int = 0;
            all_int = 0;
        } else if (lua_isinteger(L, -2)) {
            char tmp[32];
            k->ik = lua_tointeger(L, -2);
            k->is_int = 1;
            k->numoff = js->numbuf.len;
            k->len = fmt_int(tmp, k->ik);
            if (mr_sm_buf_append(&js->numbuf, tmp, k->len) != 0) return MR_ENOMEM;
            if (k->ik < 1)
                all_int = 0;
            else if (k->ik > maxi)
                maxi = k->ik;
        } else {
            /* Keep going: which bad key lua_next meets first differs between
             * replicas, so the message names the first bad type in a fixed
             * order instead. */
            int t = lua_type(L, -2);
            int rank = t == LUA_TNUMBER          ? 0
                       : t == LUA_TBOOLEAN       ? 1
                       : t == LUA_TTABLE         ? 2
                       : t == LUA_TFUNCTION      ? 3
                       : t == LUA_TUSERDATA      ? 4
                       : t == LUA_TLIGHTUSERDATA ? 5
                                                 : 6;
            if (rank < bad_rank) bad_rank = rank;
            js->nkeys--;
        }
        lua_pop(L, 1);
    }
    if (bad_rank < 7) {
        static const char *const names[] = {"float",    "boolean",  "table", "function",
                                            "userdata", "userdata", "thread"};
        js->nkeys = base;
        js->numbuf.len = numbase;
        mr_errmsg_printf(errmsg, "cannot encode a table key of type %s", names[bad_rank]);
        return MR_EMALFORMED;
    }

    int is_array;
    if (count == 0) {
        is_array = 0;
        if (lua_getmetatable(L, idx)) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, vm->ref_array_mt);
            is_array = lua_rawequal(L, -1, -2);
            lua_pop(L, 2);
        }
    } else {
        is_array = all_int && (lua_Unsigned)maxi == count;
    }

    if (is_array) {
        js->nkeys = base;
        js->numbuf.len = numbase;
        if ((rv = buf_putc(out, '[')) != 0) return rv;
        for (lua_Integer i = 1; i <= maxi; i++) {
            if (i > 1 && (rv = buf_putc(out, ',')) != 0) return rv;
            lua_rawgeti(L, idx, i);
            rv = enc_value(L, lua_gettop(L), out, depth + 1, errmsg);
            lua_pop(L, 1);
            if (rv != 0) return rv;
        }
        return buf_putc(out, ']');
    }

    for (size_t i = 0; i < count; i++) {
        struct mr_sm_key *k = &js->keys[base + i];
        if (k->is_int) k->s = js->numbuf.p + k->numoff;
    }
    if (count > 1) sort_keys(js->keys + base, count);
    if ((rv = buf_putc(out, '{')) != 0) return rv;
    for (size_t i = 0; i < count; i++) {
        /* Re-read through the array each time: nested levels may move it. */
        struct mr_sm_key *k = &js->keys[base + i];
        if (i > 0) {
            struct mr_sm_key *prev = &js->keys[base + i - 1];
            if (prev->len == k->len && key_cmp(prev, k) == 0) {
                mr_errmsg_printf(errmsg, "table has both integer and string key \"%.*s\"",
                                 (int)(k->len > 64 ? 64 : k->len),
                                 k->is_int ? js->numbuf.p + k->numoff : k->s);
                return MR_EMALFORMED;
            }
            if ((rv = buf_putc(out, ',')) != 0) return rv;
        }
        const char *ks = k->is_int ? js->numbuf.p + k->numoff : k->s;
        if ((rv = enc_string(out, ks, k->len, errmsg)) != 0) return rv;
        if ((rv = buf_putc(out, ':')) != 0) return rv;
        k = &js->keys[base + i];
        if (k->is_int) {
            lua_rawgeti(L, idx, k->ik);
        } else {
            lua_pushlstring(L, k->s, k->len);
            lua_rawget(L, idx);
        }
        rv = enc_value(L, lua_gettop(L), out, depth + 1, errmsg);
        lua_pop(L, 1);
        if (rv != 0) return rv;
    }
    js->nkeys = base;
    js->numbuf.len = numbase;
    return buf_putc(out, '}');
}

static int enc_value(lua_State *L, int idx, struct mr_sm_buf *out, int depth,
                     char *errmsg)
{
    mr_sm_charge(L, 1);
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        return mr_sm_buf_append(out, "null", 4);
    case LUA_TBOOLEAN:
        return lua_toboolean(L, idx) ? mr_sm_buf_append(out, "true", 4)
                                     : mr_sm_buf_append(out, "false", 5);
    case LUA_TNUMBER:
        return enc_number(L, idx, out, errmsg);
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        mr_sm_charge(L, len / MR_SM_BYTES_PER_STEP);
        return enc_string(out, s, len, errmsg);
    }
    case LUA_TTABLE:
        if (!lua_checkstack(L, 3)) return MR_ENOMEM;
        if (mr_sm_txn_shadow(L, idx)) { /* a state table: encode its shadow */
            int top = lua_gettop(L);
            int rv = enc_table(L, top, out, depth, errmsg);
            lua_settop(L, top - 1);
            return rv;
        }
        return enc_table(L, idx, out, depth, errmsg);
    case LUA_TUSERDATA:
        if (!lua_checkstack(L, 3)) return MR_ENOMEM;
        if (luaL_testudata(L, idx, RAW_MT) != NULL)
            return enc_raw(L, idx, out, depth, errmsg);
        break;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) return mr_sm_buf_append(out, "null", 4);
        break;
    default:
        break;
    }
    mr_errmsg_printf(errmsg, "cannot encode a value of type %s", luaL_typename(L, idx));
    return MR_EMALFORMED;
}

int mr_sm_json_encode(lua_State *L, int idx, struct mr_sm_buf *out, char *errmsg)
{
    struct mr_sm_vm *vm = mr_sm_vm_of(L);
    int top = lua_gettop(L);
    size_t start = out->len;
    /* The encoder never calls back into Lua, so it is never nested: the key
     * stack starts empty (even if a longjmp abandoned the previous run). */
    vm->js.nkeys = 0;
    vm->js.numbuf.len = 0;
    int rv = enc_value(L, lua_absindex(L, idx), out, 0, errmsg);
    lua_settop(L, top);
    if (rv != 0) {
        out->len = start;
        if (rv == MR_ENOMEM) mr_errmsg_printf(errmsg, "out of memory");
    }
    return rv;
}

/* ---- decoder --------------------------------------------------------------- */

struct dec {
    lua_State *L;
    struct mr_sm_vm *vm;
    const char *s, *p, *end;
    char *errmsg;
    int maxdepth; /* deepest value seen (json.raw keeps it for the encoder) */
};

static int dec_fail(struct dec *d, const char *what)
{
    mr_errmsg_printf(d->errmsg, "invalid JSON at byte %zu: %s", (size_t)(d->p - d->s),
                     what);
    return MR_EMALFORMED;
}

static void skip_ws(struct dec *d)
{
    while (d->p < d->end &&
           (*d->p == ' ' || *d->p == '\t' || *d->p == '\n' || *d->p == '\r'))
        d->p++;
}

static int hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static int put_utf8(struct mr_sm_buf *b, unsigned cp)
{
    char t[4];
    size_t n;
    if (cp < 0x80) {
        t[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        t[0] = (char)(0xC0 | (cp >> 6));
        t[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        t[0] = (char)(0xE0 | (cp >> 12));
        t[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        t[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        t[0] = (char)(0xF0 | (cp >> 18));
        t[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        t[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        t[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    return mr_sm_buf_append(b, t, n);
}

/* d->p is at the opening quote. Pushes the string. */
static int dec_string(struct dec *d)
{
    const char *start = ++d->p;
    struct mr_sm_buf *b = NULL;
    const char *run = start;
    while (1) {
        if (d->p >= d->end) return dec_fail(d, "unterminated string");
        unsigned char c = (unsigned char)*d->p;
        if (c == '"') break;
        if (c < 0x20) return dec_fail(d, "control character in string");
        if (c >= 0x80) {
            size_t n =
                utf8_seq((const unsigned char *)d->p, (const unsigned char *)d->end);
            if (n == 0) return dec_fail(d, "invalid UTF-8 in string");
            d->p += n;
            continue;
        }
        if (c != '\\') {
            d->p++;
            continue;
        }
        if (b == NULL && d->L != NULL) {
            b = &d->vm->js.str;
            b->len = 0;
        }
        if (b != NULL && mr_sm_buf_append(b, run, (size_t)(d->p - run)) != 0)
            return MR_ENOMEM;
        if (d->end - d->p < 2) return dec_fail(d, "unterminated escape");
        char e = d->p[1], ch;
        d->p += 2;
        switch (e) {
        case '"':
            ch = '"';
            break;
        case '\\':
            ch = '\\';
            break;
        case '/':
            ch = '/';
            break;
        case 'b':
            ch = '\b';
            break;
        case 'f':
            ch = '\f';
            break;
        case 'n':
            ch = '\n';
            break;
        case 'r':
            ch = '\r';
            break;
        case 't':
            ch = '\t';
            break;
        case 'u': {
            unsigned cp, lo;
            if (d->end - d->p < 4 || hex4(d->p, &cp) != 0)
                return dec_fail(d, "bad \\u escape");
            d->p += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return dec_fail(d, "lone low surrogate");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (d->end - d->p < 6 || d->p[0] != '\\' || d->p[1] != 'u' ||
                    hex4(d->p + 2, &lo) != 0 || lo < 0xDC00 || lo > 0xDFFF)
                    return dec_fail(d, "unpaired high surrogate");
                d->p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (b != NULL && put_utf8(b, cp) != 0) return MR_ENOMEM;
            run = d->p;
            continue;
        }
        default:
            d->p -= 2;
            return dec_fail(d, "bad escape");
        }
        if (b != NULL && buf_putc(b, ch) != 0) return MR_ENOMEM;
        run = d->p;
    }
    if (d->L == NULL) {
        /* validating only */
    } else if (b == NULL) {
        lua_pushlstring(d->L, start, (size_t)(d->p - start));
    } else {
        if (mr_sm_buf_append(b, run, (size_t)(d->p - run)) != 0) return MR_ENOMEM;
        lua_pushlstring(d->L, b->p, b->len);
    }
    d->p++; /* closing quote */
    return 0;
}

static int dec_number(struct dec *d)
{
    const char *start = d->p, *p = d->p;
    int neg = 0, is_int = 1;
    uint64_t acc = 0;
    int overflow = 0;
    if (*p == '-') {
        neg = 1;
        p++;
    }
    if (p >= d->end || *p < '0' || *p > '9') return dec_fail(d, "bad number");
    if (*p == '0') {
        p++;
    } else {
        while (p < d->end && *p >= '0' && *p <= '9') {
            unsigned dig = (unsigned)(*p - '0');
            if (acc > (UINT64_MAX - dig) / 10)
                overflow = 1;
            else
                acc = acc * 10 + dig;
            p++;
        }
    }
    if (p < d->end && *p == '.') {
        is_int = 0;
        p++;
        if (p >= d->end || *p < '0' || *p > '9') {
            d->p = p;
            return dec_fail(d, "bad number: digit expected after '.'");
        }
        while (p < d->end && *p >= '0' && *p <= '9') p++;
    }
    if (p < d->end && (*p == 'e' || *p == 'E')) {
        is_int = 0;
        p++;
        if (p < d->end && (*p == '+' || *p == '-')) p++;
        if (p >= d->end || *p < '0' || *p > '9') {
            d->p = p;
            return dec_fail(d, "bad number: digit expected in exponent");
        }
        while (p < d->end && *p >= '0' && *p <= '9') p++;
    }
    d->p = p;
    if (d->L == NULL) return 0;
    if (is_int && !overflow) {
        if (!neg && acc <= (uint64_t)INT64_MAX) {
            lua_pushinteger(d->L, (lua_Integer)acc);
            return 0;
        }
        if (neg && acc <= (uint64_t)INT64_MAX + 1) {
            lua_pushinteger(d->L, (lua_Integer)(0 - acc));
            return 0;
        }
    }
    /* Fractions, exponents and integers beyond int64 become floats. */
    struct mr_sm_buf *b = &d->vm->js.str;
    b->len = 0;
    if (mr_sm_buf_append(b, start, (size_t)(p - start)) != 0 || buf_putc(b, '\0') != 0)
        return MR_ENOMEM;
    lua_pushnumber(d->L, strtod(b->p, NULL));
    return 0;
}

static int dec_value(struct dec *d, int depth)
{
    int rv;
    if (d->L != NULL) mr_sm_charge(d->L, 1);
    skip_ws(d);
    if (d->p >= d->end) return dec_fail(d, "unexpected end of input");
    if (depth > MR_SM_JSON_MAX_DEPTH) return dec_fail(d, "nesting too deep");
    if (depth > d->maxdepth) d->maxdepth = depth;
    switch (*d->p) {
    case '{': {
        if (d->L != NULL) {
            if (!lua_checkstack(d->L, 4)) return MR_ENOMEM;
            lua_createtable(d->L, 0, 0);
        }
        d->p++;
        skip_ws(d);
        if (d->p < d->end && *d->p == '}') {
            d->p++;
            return 0;
        }
        while (1) {
            skip_ws(d);
            if (d->p >= d->end || *d->p != '"') return dec_fail(d, "object key expected");
            if ((rv = dec_string(d)) != 0) return rv;
            skip_ws(d);
            if (d->p >= d->end || *d->p != ':') return dec_fail(d, "':' expected");
            d->p++;
            if ((rv = dec_value(d, depth + 1)) != 0) return rv;
            if (d->L != NULL) lua_rawset(d->L, -3);
            skip_ws(d);
            if (d->p < d->end && *d->p == ',') {
                d->p++;
                continue;
            }
            if (d->p < d->end && *d->p == '}') {
                d->p++;
                return 0;
            }
            return dec_fail(d, "',' or '}' expected");
        }
    }
    case '[': {
        lua_Integer i = 0;
        if (d->L != NULL) {
            if (!lua_checkstack(d->L, 4)) return MR_ENOMEM;
            lua_createtable(d->L, 0, 0);
            lua_rawgeti(d->L, LUA_REGISTRYINDEX, d->vm->ref_array_mt);
            lua_setmetatable(d->L, -2);
        }
        d->p++;
        skip_ws(d);
        if (d->p < d->end && *d->p == ']') {
            d->p++;
            return 0;
        }
        while (1) {
            if ((rv = dec_value(d, depth + 1)) != 0) return rv;
            ++i;
            if (d->L != NULL) lua_rawseti(d->L, -2, i);
            skip_ws(d);
            if (d->p < d->end && *d->p == ',') {
                d->p++;
                continue;
            }
            if (d->p < d->end && *d->p == ']') {
                d->p++;
                return 0;
            }
            return dec_fail(d, "',' or ']' expected");
        }
    }
    case '"':
        return dec_string(d);
    case 't':
        if (d->end - d->p >= 4 && memcmp(d->p, "true", 4) == 0) {
            d->p += 4;
            if (d->L != NULL) lua_pushboolean(d->L, 1);
            return 0;
        }
        return dec_fail(d, "unexpected character");
    case 'f':
        if (d->end - d->p >= 5 && memcmp(d->p, "false", 5) == 0) {
            d->p += 5;
            if (d->L != NULL) lua_pushboolean(d->L, 0);
            return 0;
        }
        return dec_fail(d, "unexpected character");
    case 'n':
        if (d->end - d->p >= 4 && memcmp(d->p, "null", 4) == 0) {
            d->p += 4;
            if (d->L != NULL) lua_pushlightuserdata(d->L, NULL);
            return 0;
        }
        return dec_fail(d, "unexpected character");
    default:
        if (*d->p == '-' || (*d->p >= '0' && *d->p <= '9')) return dec_number(d);
        return dec_fail(d, "unexpected character");
    }
}

int mr_sm_json_decode(lua_State *L, const char *s, size_t len, char *errmsg)
{
    struct dec d = {L, mr_sm_vm_of(L), s, s, s + len, errmsg, 0};
    int top = lua_gettop(L);
    mr_sm_charge(L, len / MR_SM_BYTES_PER_STEP); /* scanning long strings is work too */
    int rv = dec_value(&d, 0);
    if (rv == 0) {
        skip_ws(&d);
        if (d.p != d.end) rv = dec_fail(&d, "trailing characters after the value");
    }
    if (rv != 0) {
        lua_settop(L, top);
        if (rv == MR_ENOMEM) mr_errmsg_printf(errmsg, "out of memory");
        return rv;
    }
    return 0;
}

/* Validates [s, s+len) as one JSON value; *maxdepth gets its nesting. */
static int validate(const char *s, size_t len, int *maxdepth, char *errmsg)
{
    struct dec d = {NULL, NULL, s, s, s + len, errmsg, 0};
    int rv = dec_value(&d, 0);
    if (rv == 0) {
        skip_ws(&d);
        if (d.p != d.end) rv = dec_fail(&d, "trailing characters after the value");
    }
    *maxdepth = d.maxdepth;
    return rv;
}

int mr_sm_json_validate(const char *s, size_t len, char *errmsg)
{
    int maxdepth;
    return validate(s, len, &maxdepth, errmsg);
}

/* ---- Lua functions ----------------------------------------------------------- */

static int l_encode(lua_State *L)
{
    struct mr_sm_vm *vm = mr_sm_vm_of(L);
    char errmsg[MR_ERRMSG_SIZE];
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    vm->out.len = 0;
    int rv = mr_sm_json_encode(L, 1, &vm->out, errmsg);
    if (rv != 0) return luaL_error(L, "json.encode: %s", errmsg);
    lua_pushlstring(L, vm->out.p, vm->out.len);
    vm->out.len = 0;
    return 1;
}

static int l_decode(lua_State *L)
{
    char errmsg[MR_ERRMSG_SIZE];
    size_t len;
    const char *s = luaL_testudata(L, 1, RAW_MT) != NULL ? raw_text(L, 1, &len)
                                                         : luaL_checklstring(L, 1, &len);
    int rv = mr_sm_json_decode(L, s, len, errmsg);
    if (rv != 0) return luaL_error(L, "json.decode: %s", errmsg);
    return 1;
}

/* json.raw(text): a value the encoder writes as `text` verbatim. Raises if
 * text is not exactly one valid JSON value. json.raw(r) of a raw r is r. */
static int l_raw(lua_State *L)
{
    char errmsg[MR_ERRMSG_SIZE];
    size_t len;
    int depth;
    if (luaL_testudata(L, 1, RAW_MT) != NULL) {
        lua_settop(L, 1);
        return 1;
    }
    const char *s = luaL_checklstring(L, 1, &len);
    lua_settop(L, 1);
    mr_sm_charge(L, 1 + len / MR_SM_BYTES_PER_STEP);
    if (validate(s, len, &depth, errmsg) != 0)
        return luaL_error(L, "json.raw: %s", errmsg);
    struct raw *r = lua_newuserdatauv(L, sizeof *r, 1);
    r->depth = depth;
    luaL_setmetatable(L, RAW_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    return 1;
}

/* Two raw values are equal when their texts are the same bytes. */
static int l_raw_eq(lua_State *L)
{
    size_t la, lb;
    if (luaL_testudata(L, 1, RAW_MT) == NULL || luaL_testudata(L, 2, RAW_MT) == NULL) {
        lua_pushboolean(L, 0);
        return 1;
    }
    const char *a = raw_text(L, 1, &la);
    const char *b = raw_text(L, 2, &lb);
    mr_sm_charge(L, la / MR_SM_BYTES_PER_STEP);
    lua_pushboolean(L, la == lb && memcmp(a, b, la) == 0);
    return 1;
}

static int l_raw_tostring(lua_State *L)
{
    size_t len;
    luaL_checkudata(L, 1, RAW_MT);
    raw_text(L, 1, &len);
    return 1;
}

static int l_array(lua_State *L)
{
    struct mr_sm_vm *vm = mr_sm_vm_of(L);
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->ref_array_mt);
    if (mr_sm_txn_setmetatable(L, 1, 2)) { /* a state table (sm_txn.c) */
        lua_settop(L, 1);
        return 1;
    }
    lua_setmetatable(L, 1);
    return 1;
}

/* Max-heap on key_cmp over h[0..n): keeps the `limit` smallest keys. */
static void heap_down(struct mr_sm_key *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && key_cmp(&h[l], &h[m]) > 0) m = l;
        if (r < n && key_cmp(&h[r], &h[m]) > 0) m = r;
        if (m == i) return;
        struct mr_sm_key t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static void heap_up(struct mr_sm_key *h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (key_cmp(&h[p], &h[i]) >= 0) return;
        struct mr_sm_key t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

/* canonical.keys(t [, prefix [, limit [, after]]]): the string keys of t
 * that start with prefix and sort after `after`, in bytewise order, at most
 * limit of them, as an array. The deterministic replacement for iterating
 * with pairs; runs in C (one pass, a bounded heap when limit is small), so it
 * does not eat the instruction budget on big tables. */
static int l_keys(lua_State *L)
{
    struct mr_sm_vm *vm = mr_sm_vm_of(L);
    struct mr_sm_json_scratch *js = &vm->js;
    js->nkeys = 0; /* never nested in an encode: start from an empty stack */
    size_t plen = 0, alen = 0, base = 0, count = 0;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 4);
    if (mr_sm_txn_shadow(L, 1)) lua_replace(L, 1); /* a state table: its shadow */
    const char *prefix = luaL_optlstring(L, 2, "", &plen);
    lua_Integer limit = luaL_optinteger(L, 3, LUA_MAXINTEGER);
    const char *after = luaL_optlstring(L, 4, NULL, &alen);
    luaL_argcheck(L, limit >= 0, 3, "limit must be >= 0");
    struct mr_sm_key akey = {after, alen, 0, 0, 0};
    /* A heap pays off only when most keys will be dropped. */
    int use_heap = limit < 65536;
    lua_settop(L, 4);
    lua_pushnil(L);
    while (limit > 0 && lua_next(L, 1) != 0) {
        lua_pop(L, 1);
        mr_sm_charge(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) continue;
        struct mr_sm_key k = {NULL, 0, 0, 0, 0};
        k.s = lua_tolstring(L, -1, &k.len);
        if (k.len < plen || memcmp(k.s, prefix, plen) != 0) continue;
        if (after != NULL && key_cmp(&k, &akey) <= 0) continue;
        if (use_heap && count == (size_t)limit) {
            if (key_cmp(&k, &js->keys[base]) >= 0) continue;
            js->keys[base] = k;
            heap_down(js->keys + base, count, 0);
            continue;
        }
        struct mr_sm_key *e;
        if (push_key(js, &e) != 0) {
            js->nkeys = base;
            return luaL_error(L, "canonical.keys: out of memory");
        }
        *e = k;
        count++;
        if (use_heap) heap_up(js->keys + base, count - 1);
    }
    if (count > 1) qsort(js->keys + base, count, sizeof *js->keys, key_cmp);
    size_t n = (lua_Unsigned)limit < count ? (size_t)limit : count;
    /* Pushing keys cannot move js->keys, but may raise on OOM: reset the
     * stack first so that a longjmp leaves it consistent (the key strings
     * stay alive: t still holds them). */
    js->nkeys = base;
    lua_createtable(L, n > INT32_MAX ? INT32_MAX : (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushlstring(L, js->keys[base + i].s, js->keys[base + i].len);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->ref_array_mt);
    lua_setmetatable(L, -2);
    return 1;
}

lua_CFunction mr_sm_fn_keys(void)
{
    return l_keys;
}

void mr_sm_json_open(lua_State *L)
{
    static const luaL_Reg fns[] = {{"encode", l_encode},
                                   {"decode", l_decode},
                                   {"array", l_array},
                                   {"raw", l_raw},
                                   {NULL, NULL}};
    luaL_newmetatable(L, RAW_MT);
    lua_pushcfunction(L, l_raw_eq);
    lua_setfield(L, -2, "__eq");
    lua_pushcfunction(L, l_raw_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "json.raw");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
    luaL_newlib(L, fns);
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    lua_pushvalue(L, -1);
    lua_setglobal(L, "json");
    lua_setglobal(L, "cjson");
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, l_encode);
    lua_setfield(L, -2, "encode");
    lua_pushcfunction(L, l_keys);
    lua_setfield(L, -2, "keys");
    lua_setglobal(L, "canonical");
}
