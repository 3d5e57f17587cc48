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
    rv = mr_sm_json_validate(s, len, errmsg);
    if (rv != 0) return rv;
    rv = decode(n, s, len, errmsg);
    lua_settop(n->json_L, 0);
    if (len > 65536) lua_gc(n->json_L, LUA_GCCOLLECT);
    return rv;
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
