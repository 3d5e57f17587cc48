/* node_json: validating and reading request JSON with lua-cjson.
 *
 * Request bodies are validated on the node that receives them, so garbage is
 * refused with its position before anything reaches the log. lua-cjson does
 * the parsing (a well-kept library); the state machine host decodes again
 * with its own exact-integer codec when it applies. This Lua state runs no
 * user code: only cjson.decode on the request body, under a memory cap. */
#include "node/node_int.h"

#include <lauxlib.h>
#include <lua-cjson.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_HEAP_LIMIT (256u << 20) /* bytes: a 1 MiB body decodes well within */

struct json_heap {
    size_t used;
};

static void *json_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct json_heap *h = ud;
    if (ptr == NULL) osize = 0;
    if (nsize == 0) {
        h->used -= osize;
        free(ptr);
        return NULL;
    }
    if (nsize > osize && h->used + (nsize - osize) > JSON_HEAP_LIMIT) return NULL;
    ptr = realloc(ptr, nsize);
    if (ptr != NULL) h->used = h->used - osize + nsize;
    return ptr;
}

static struct json_heap heap_storage;

static int setup(lua_State *L)
{
    luaL_requiref(L, "_G", luaopen_base, 1);
    luaL_requiref(L, "cjson", luaopen_cjson, 1);
    lua_pop(L, 2);
    return 0;
}

int mr_node_json_init(struct mr_node *n)
{
    lua_State *L = lua_newstate(json_alloc, &heap_storage);
    if (L == NULL) return MR_ENOMEM;
    lua_pushcfunction(L, setup);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
        lua_close(L);
        return MR_ENOMEM;
    }
    n->json_L = L;
    return 0;
}

void mr_node_json_close(struct mr_node *n)
{
    if (n->json_L != NULL) lua_close(n->json_L);
    n->json_L = NULL;
}

static int do_decode(lua_State *L)
{
    size_t len;
    const char *s = lua_tolstring(L, 1, &len);
    lua_getglobal(L, "cjson");
    lua_getfield(L, -1, "decode");
    lua_pushlstring(L, s, len);
    lua_call(L, 1, 1);
    return 1;
}

/* Decodes s into the top of the stack; 0 or MR_EMALFORMED with errmsg. */
static int decode(struct mr_node *n, const char *s, size_t len, char *errmsg)
{
    lua_State *L = n->json_L;
    lua_settop(L, 0);
    lua_pushcfunction(L, do_decode);
    lua_pushlstring(L, s, len);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        const char *m = lua_tostring(L, -1);
        /* cjson: "Expected value but found invalid token at character 3" */
        mr_errmsg_printf(errmsg, "invalid JSON: %s", m ? m : "out of memory");
        lua_settop(L, 0);
        lua_gc(L, LUA_GCCOLLECT);
        return MR_EMALFORMED;
    }
    return 0;
}

int mr_node_json_check(struct mr_node *n, const char *s, size_t len, char *errmsg)
{
    int rv;
    /* The state machine's parser first: lua-cjson 2.1 also takes NaN,
     * Infinity, hex and leading-zero numbers, "1." and invalid UTF-8, which
     * apply then refuses, after the command has taken a log slot. */
    (void)n;
    /* The state machine's validator is stricter than lua-cjson and is the
     * parser that apply uses: a body it accepts decodes on every replica.
     * (Decoding it once more with cjson here cost ~3% of a leader's CPU.) */
    rv = mr_sm_json_validate(s, len, errmsg);
    return rv;
}

/* ---- a top-level field of a trusted object, without building Lua values ---- */
static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* p at the opening quote; returns the position after the closing one. */
static const char *skip_string(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\') {
            p++;
        } else if (*p == '"') {
            return p + 1;
        }
    }
    return NULL;
}

static const char *skip_value(const char *p, const char *end)
{
    int depth = 0;
    p = skip_ws(p, end);
    while (p < end) {
        char c = *p;
        if (c == '"') {
            p = skip_string(p, end);
            if (p == NULL) return NULL;
        } else if (c == '{' || c == '[') {
            depth++;
            p++;
        } else if (c == '}' || c == ']') {
            if (depth == 0) return p; /* the end of the enclosing object */
            depth--;
            p++;
        } else if (c == ',' && depth == 0) {
            return p;
        } else {
            p++;
        }
        if (depth == 0 && (c == '"' || c == '}' || c == ']')) return p;
    }
    return depth == 0 ? p : NULL;
}

static int hex4(const char *p, const char *end, unsigned *out)
{
    unsigned v = 0;
    if (end - p < 4) return -1;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

/* Decodes the string at p (opening quote) into out[cap]; -1 if it does not
 * fit, holds a NUL or is malformed. */
static int unescape(const char *p, const char *end, char *out, size_t cap)
{
    size_t o = 0;
    for (p++; p < end && *p != '"'; p++) {
        unsigned cp;
        char c = *p;
        if (c != '\\') {
            if (c == '\0' || o + 1 >= cap) return -1;
            out[o++] = c;
            continue;
        }
        if (++p >= end) return -1;
        switch (*p) {
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u':
            if (hex4(p + 1, end, &cp) != 0) return -1;
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00) {
                unsigned lo;
                if (end - p < 7 || p[1] != '\\' || p[2] != 'u' || hex4(p + 3, end, &lo) != 0 ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return -1;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            } else if (cp >= 0xDC00 && cp < 0xE000) {
                return -1;
            }
            break;
        default: cp = (unsigned char)*p; break; /* \" \\ \/ */
        }
        if (cp == 0 || o + 4 >= cap) return -1;
        if (cp < 0x80) {
            out[o++] = (char)cp;
        } else if (cp < 0x800) {
            out[o++] = (char)(0xC0 | (cp >> 6));
            out[o++] = (char)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out[o++] = (char)(0xE0 | (cp >> 12));
            out[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            out[o++] = (char)(0x80 | (cp & 0x3F));
        } else {
            out[o++] = (char)(0xF0 | (cp >> 18));
            out[o++] = (char)(0x80 | ((cp >> 12) & 0x3F));
            out[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            out[o++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    if (p >= end) return -1;
    out[o] = '\0';
    return 0;
}

int mr_node_json_string_field(const char *s, size_t len, const char *name, char *out,
                              size_t cap)
{
    const char *p = s, *end = s + len;
    size_t nlen = strlen(name);
    out[0] = '\0';
    p = skip_ws(p, end);
    if (p >= end || *p != '{') return -1;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}') return 1;
    while (p < end && *p == '"') {
        const char *k = p + 1, *kend = skip_string(p, end);
        int is_name;
        if (kend == NULL) return -1;
        /* an escaped spelling of the name does not count: our encoder
         * writes names plainly */
        is_name = (size_t)(kend - 1 - k) == nlen && memcmp(k, name, nlen) == 0;
        p = skip_ws(kend, end);
        if (p >= end || *p != ':') return -1;
        p = skip_ws(p + 1, end);
        if (p >= end) return -1;
        if (is_name) {
            if (*p == '"') return unescape(p, end, out, cap) == 0 ? 0 : -1;
            if (end - p >= 4 && memcmp(p, "true", 4) == 0) {
                snprintf(out, cap, "true");
                return 0;
            }
            if (end - p >= 5 && memcmp(p, "false", 5) == 0) {
                snprintf(out, cap, "false");
                return 0;
            }
            if (end - p >= 4 && memcmp(p, "null", 4) == 0) return 1;
            return -1; /* a number, object or array: not a key */
        }
        p = skip_value(p, end);
        if (p == NULL) return -1;
        p = skip_ws(p, end);
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
            continue;
        }
        if (p < end && *p == '}') return 1;
        return -1;
    }
    return -1;
}

int mr_node_json_fields(struct mr_node *n, const char *s, size_t len, const char *const *names,
                        char (*out)[256], unsigned nfields, char *errmsg)
{
    lua_State *L = n->json_L;
    unsigned i;
    int rv = decode(n, s, len, errmsg);
    if (rv != 0) return rv;
    if (!lua_istable(L, -1)) {
        mr_errmsg_printf(errmsg, "expected a JSON object");
        lua_settop(L, 0);
        return MR_EMALFORMED;
    }
    for (i = 0; i < nfields; i++) {
        lua_getfield(L, -1, names[i]);
        out[i][0] = '\0';
        if (lua_type(L, -1) == LUA_TSTRING) {
            size_t l;
            const char *v = lua_tolstring(L, -1, &l);
            if (l >= 256 || memchr(v, '\0', l) != NULL) {
                mr_errmsg_printf(errmsg, "field \"%s\" is too long", names[i]);
                lua_settop(L, 0);
                return MR_EMALFORMED;
            }
            memcpy(out[i], v, l + 1);
        } else if (lua_type(L, -1) == LUA_TBOOLEAN) {
            snprintf(out[i], 256, "%s", lua_toboolean(L, -1) ? "true" : "false");
        } else if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TLIGHTUSERDATA) {
            mr_errmsg_printf(errmsg, "field \"%s\" must be a string", names[i]);
            lua_settop(L, 0);
            return MR_EMALFORMED;
        }
        lua_pop(L, 1);
    }
    lua_settop(L, 0);
    return 0;
}
