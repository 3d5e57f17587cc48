/* The console's Lua state: standard libraries, cjson, the `mr` C functions
 * (HTTP, address switching) and lua/console.lua on top.
 *
 * This is the operator's own machine, not the node's sandbox (STYLE 13 is
 * about the state machine host), so io, os and package are open here. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua-cjson.h>
#include <lualib.h>
#include <sha2.h>

#include "console/console_int.h"

/* The state the SIGINT handler may interrupt, set only while Lua code runs. */
static lua_State *volatile running_L;

/* ---- locating lua/ ------------------------------------------------------------ */

static int has_console_lua(const char *dir)
{
    char path[4200];
    struct stat st;
    snprintf(path, sizeof path, "%s/console.lua", dir);
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int try_dir(char *dir, size_t size, const char *cand)
{
    if (strlen(cand) >= size || !has_console_lua(cand)) return 0;
    strcpy(dir, cand);
    return 1;
}

int mr_console_find_lua_dir(char *dir, size_t size)
{
    const char *env = getenv("MOONRAFT_LUA_DIR");
    dir[0] = '\0';
    /* An explicit choice is never second-guessed; without one the console
     * runs the console.lua built into the binary. */
    if (env != NULL && env[0] != '\0') return try_dir(dir, size, env) ? 0 : MR_ENOTFOUND;
    return 0;
}

/* ---- the `mr` table ------------------------------------------------------------- */

static struct mr_console *self(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* Pushes status, body, headers of *resp. Runs under lua_pcall so that a
 * memory error cannot leak the C-owned response (STYLE 14). */
static int push_resp(lua_State *L)
{
    const struct mr_console_http_resp *resp = lua_touserdata(L, 1);
    size_t i;
    lua_pushinteger(L, resp->status);
    lua_pushlstring(L, resp->body, resp->body_len);
    lua_createtable(L, 0, (int)resp->n_hdrs);
    for (i = 0; i < resp->n_hdrs; i++) {
        lua_pushstring(L, resp->hdrs[2 * i + 1]);
        lua_setfield(L, -2, resp->hdrs[2 * i]);
    }
    return 3;
}

#define MAX_HEADERS 32

/* mr.http(method, path [, body [, opts]]) -> status, body, headers
 *                                         | nil, message, code
 * opts: admin (use the admin token), timeout (seconds), headers (name->value).
 * The bearer token is added here, so Lua never sees it. */
static int l_http(lua_State *L)
{
    struct mr_console *c = self(L);
    const char *method = luaL_checkstring(L, 1);
    const char *path = luaL_checkstring(L, 2);
    size_t body_len = 0;
    const char *body = luaL_optlstring(L, 3, NULL, &body_len);
    const char *hdrs[MAX_HEADERS + 2];
    const char *token;
    int nh = 0, admin = 0, timeout_ms = MR_CONSOLE_REQUEST_TIMEOUT_MS, rv, top;
    struct mr_console_http_resp resp;

    if (!lua_isnoneornil(L, 4)) {
        luaL_checktype(L, 4, LUA_TTABLE);
        lua_getfield(L, 4, "admin");
        admin = lua_toboolean(L, -1);
        lua_pop(L, 1);
        lua_getfield(L, 4, "timeout");
        if (!lua_isnil(L, -1)) {
            lua_Number t = luaL_checknumber(L, -1);
            if (!(t > 0 && t < 86400)) return luaL_error(L, "bad timeout");
            timeout_ms = (int)(t * 1000);
        }
        lua_pop(L, 1);
        lua_getfield(L, 4, "headers");
        if (lua_istable(L, -1)) {
            int hidx = lua_gettop(L), keep;
            /* The strings stay alive in `keep` (on the stack) until we return. */
            lua_newtable(L);
            keep = lua_gettop(L);
            lua_pushnil(L);
            while (lua_next(L, hidx) != 0) {
                if (nh == MAX_HEADERS) return luaL_error(L, "too many headers");
                if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING) {
                    return luaL_error(L, "headers must map strings to strings");
                }
                hdrs[nh++] = lua_pushfstring(L, "%s: %s", lua_tostring(L, -2),
                                             lua_tostring(L, -1));
                lua_rawseti(L, keep, nh);
                lua_pop(L, 1);
            }
        }
    }
    token = admin && c->admin_token ? c->admin_token : c->token;
    if (token == NULL) token = c->admin_token;
    if (token != NULL) hdrs[nh++] = lua_pushfstring(L, "Authorization: Bearer %s", token);
    hdrs[nh] = NULL;

    rv = mr_console_http_request(&c->http, method, path, hdrs, body, body_len, timeout_ms,
                                 &resp);
    if (rv != 0) {
        if (rv == MR_ECANCELED) {
            /* This Ctrl-C is reported here, as the "interrupted" code; the
             * hook the signal handler armed must not raise it a second time. */
            lua_sethook(L, NULL, 0, 0);
            mr_console_interrupted = 0;
        }
        lua_pushnil(L);
        lua_pushstring(L, c->http.errmsg);
        lua_pushstring(L, rv == MR_ECANCELED  ? "interrupted"
                          : rv == MR_ETIMEOUT ? "timeout"
                          : rv == MR_EPROTO   ? "protocol_error"
                          : rv == MR_ETOOBIG  ? "too_large"
                                              : "unreachable");
        return 3;
    }
    top = lua_gettop(L);
    lua_pushcfunction(L, push_resp);
    lua_pushlightuserdata(L, &resp);
    rv = lua_pcall(L, 1, 3, 0);
    mr_console_http_resp_free(&resp);
    if (rv != LUA_OK) return lua_error(L);
    return lua_gettop(L) - top;
}

/* mr.connect(addr) -> addr: points the client at another node. */
static int l_connect(lua_State *L)
{
    struct mr_console *c = self(L);
    const char *addr = luaL_checkstring(L, 1);
    if (mr_console_http_set_addr(&c->http, addr) != 0) {
        return luaL_error(L, "%s", c->http.errmsg);
    }
    lua_pushfstring(L, "%s:%s", c->http.host, c->http.port);
    return 1;
}

/* mr.addr() -> "host:port" of the current node. */
static int l_addr(lua_State *L)
{
    struct mr_console *c = self(L);
    lua_pushfstring(L, "%s:%s", c->http.host, c->http.port);
    return 1;
}

/* mr.has_token() -> has_token, has_admin_token (never the tokens). */
static int l_has_token(lua_State *L)
{
    struct mr_console *c = self(L);
    lua_pushboolean(L, c->token != NULL);
    lua_pushboolean(L, c->admin_token != NULL);
    return 2;
}

/* mr.interrupted() -> true once after Ctrl-C (clears the flag). */
static int l_interrupted(lua_State *L)
{
    lua_pushboolean(L, mr_console_interrupted != 0);
    mr_console_interrupted = 0;
    return 1;
}

/* mr.sleep(seconds): interruptible by Ctrl-C. */
static int l_sleep(lua_State *L)
{
    lua_Number s = luaL_checknumber(L, 1);
    struct timespec ts;
    if (s <= 0) return 0;
    if (s > 3600) s = 3600;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (lua_Number)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !mr_console_interrupted) {
    }
    return 0;
}

/* mr.sha256(s) -> 64 lowercase hex digits (what GET /v1/script calls "hash"). */
static int l_sha256(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    static const char digits[] = "0123456789abcdef";
    SHA2_CTX ctx;
    uint8_t d[SHA256_DIGEST_LENGTH];
    char hex[2 * SHA256_DIGEST_LENGTH];
    SHA256Init(&ctx);
    SHA256Update(&ctx, (const uint8_t *)s, len);
    SHA256Final(d, &ctx);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        hex[2 * i] = digits[d[i] >> 4];
        hex[2 * i + 1] = digits[d[i] & 15];
    }
    lua_pushlstring(L, hex, sizeof hex);
    return 1;
}

/* ---- open / close ------------------------------------------------------------------ */

static void *l_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    (void)osize;
    if (nsize == 0) {
        mr_free(ptr);
        return NULL;
    }
    return mr_realloc(ptr, nsize);
}

static int msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        /* Error objects with __tostring (server errors raised by
         * console.lua) are expected failures: no traceback. */
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

static void lstop(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    mr_console_interrupted = 0;
    luaL_error(L, "interrupted!");
}

/* Async-signal-safe: lua_sethook is documented to be callable from a signal
 * handler (lua.c does the same). */
void mr_console_on_sigint(void)
{
    lua_State *L = running_L;
    mr_console_interrupted = 1;
    if (L != NULL) lua_sethook(L, lstop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

int mr_console_docall(struct mr_console *c, int narg, int nres)
{
    lua_State *L = c->L;
    int base = lua_gettop(L) - narg, status;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    running_L = L;
    /* A Ctrl-C that came after the line was read but before this point
     * still counts: the REPL clears the flag before it reads a line. */
    if (mr_console_interrupted) {
        lua_sethook(L, lstop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
    }
    status = lua_pcall(L, narg, nres, base);
    running_L = NULL;
    lua_sethook(L, NULL, 0, 0);
    mr_console_interrupted = 0;
    lua_remove(L, base);
    return status;
}

void mr_console_report(struct mr_console *c)
{
    const char *msg = lua_tostring(c->L, -1);
    fflush(stdout);
    fprintf(stderr, "error: %s\n", msg ? msg : "(no message)");
    fflush(stderr);
    lua_pop(c->L, 1);
}

static int setup(lua_State *L)
{
    struct mr_console *c = lua_touserdata(L, 1);
    static const luaL_Reg fns[] = {
        {"http", l_http},
        {"connect", l_connect},
        {"addr", l_addr},
        {"has_token", l_has_token},
        {"interrupted", l_interrupted},
        {"sleep", l_sleep},
        {"sha256", l_sha256},
        {NULL, NULL},
    };
    char path[4200];
    luaL_openlibs(L);
    luaL_requiref(L, "cjson", luaopen_cjson, 1);
    lua_pop(L, 1);

    if (c->lua_dir[0] != '\0') {
        /* package.path: lua/ first, so console_*.lua helpers can be required. */
        lua_getglobal(L, "package");
        lua_pushfstring(L, "%s/?.lua;", c->lua_dir);
        lua_getfield(L, -2, "path");
        lua_concat(L, 2);
        lua_setfield(L, -2, "path");
        lua_pop(L, 1);
        snprintf(path, sizeof path, "%s/console.lua", c->lua_dir);
        if (luaL_loadfilex(L, path, "t") != LUA_OK) return lua_error(L);
    } else {
        size_t len;
        const char *src = mr_util_lua_embedded("console.lua", &len);
        snprintf(path, sizeof path, "console.lua");
        if (luaL_loadbufferx(L, src, len, "@console.lua", "t") != LUA_OK)
            return lua_error(L);
    }
    lua_createtable(L, 0, 8);
    lua_pushlightuserdata(L, c);
    luaL_setfuncs(L, fns, 1);
    lua_call(L, 1, 1);
    if (!lua_istable(L, -1)) return luaL_error(L, "%s did not return a table", path);
    c->module_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

int mr_console_open(struct mr_console *c, const char *addr, const char *token,
                    const char *admin_token)
{
    int rv;
    memset(c, 0, sizeof *c);
    c->module_ref = LUA_NOREF;
    mr_console_http_init(&c->http);
    if (mr_console_http_set_addr(&c->http, addr) != 0) {
        mr_errmsg_printf(c->errmsg, "%s", c->http.errmsg);
        return MR_EINVAL;
    }
    if (mr_console_find_lua_dir(c->lua_dir, sizeof c->lua_dir) != 0) {
        mr_errmsg_printf(c->errmsg, "no console.lua in $MOONRAFT_LUA_DIR (%s)",
                         getenv("MOONRAFT_LUA_DIR"));
        return MR_ENOTFOUND;
    }
    if ((token != NULL && (c->token = mr_strdup(token)) == NULL) ||
        (admin_token != NULL && (c->admin_token = mr_strdup(admin_token)) == NULL)) {
        rv = MR_ENOMEM;
        mr_errmsg_printf(c->errmsg, "out of memory");
        goto fail;
    }
    c->L = lua_newstate(l_alloc, NULL);
    if (c->L == NULL) {
        rv = MR_ENOMEM;
        mr_errmsg_printf(c->errmsg, "out of memory");
        goto fail;
    }
    lua_pushcfunction(c->L, setup);
    lua_pushlightuserdata(c->L, c);
    if (mr_console_docall(c, 1, 0) != LUA_OK) {
        const char *msg = lua_tostring(c->L, -1);
        mr_errmsg_printf(c->errmsg, "load console.lua: %s", msg ? msg : "?");
        rv = MR_ESCRIPT;
        goto fail;
    }
    return 0;
fail:
    mr_console_close(c);
    return rv;
}

void mr_console_close(struct mr_console *c)
{
    if (c->L != NULL) lua_close(c->L);
    c->L = NULL;
    mr_console_http_free(&c->http);
    /* Do not leave tokens lying around in freed memory. */
    if (c->token) {
        memset(c->token, 0, strlen(c->token));
        mr_free(c->token);
    }
    if (c->admin_token) {
        memset(c->admin_token, 0, strlen(c->admin_token));
        mr_free(c->admin_token);
    }
    c->token = c->admin_token = NULL;
}

/* Pushes module[name] (a function). */
static void push_module_fn(struct mr_console *c, const char *name)
{
    lua_rawgeti(c->L, LUA_REGISTRYINDEX, c->module_ref);
    lua_getfield(c->L, -1, name);
    lua_remove(c->L, -2);
}

int mr_console_display(struct mr_console *c, int n)
{
    int status;
    push_module_fn(c, "display");
    lua_insert(c->L, -n - 1);
    status = mr_console_docall(c, n, 0);
    fflush(stdout);
    return status;
}

int mr_console_run_string(struct mr_console *c, const char *code, const char *name)
{
    int status = luaL_loadbufferx(c->L, code, strlen(code), name, "t");
    if (status == LUA_OK) status = mr_console_docall(c, 0, 0);
    fflush(stdout);
    if (status != LUA_OK) mr_console_report(c);
    return status;
}

static int push_args(lua_State *L)
{
    char **args = lua_touserdata(L, 1);
    int n = (int)lua_tointeger(L, 2), i;
    const char *path = lua_tostring(L, 3);
    lua_createtable(L, n, 1);
    lua_pushstring(L, path);
    lua_rawseti(L, -2, 0);
    for (i = 0; i < n; i++) {
        lua_pushstring(L, args[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setglobal(L, "arg");
    return 0;
}

int mr_console_run_file(struct mr_console *c, const char *path, char **args, int n)
{
    lua_State *L = c->L;
    int status, i;
    lua_pushcfunction(L, push_args);
    lua_pushlightuserdata(L, args);
    lua_pushinteger(L, n);
    lua_pushstring(L, path);
    status = lua_pcall(L, 3, 0, 0);
    if (status == LUA_OK) {
        status = luaL_loadfilex(L, strcmp(path, "-") == 0 ? NULL : path, "t");
    }
    if (status == LUA_OK) {
        lua_getglobal(L, "arg");
        for (i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
        lua_remove(L, -n - 1);
        status = mr_console_docall(c, n, 0);
    }
    fflush(stdout);
    if (status != LUA_OK) mr_console_report(c);
    return status;
}

char **mr_console_complete(struct mr_console *c, const char *text)
{
    lua_State *L = c->L;
    char **out = NULL;
    size_t n, i, k, lcp;
    push_module_fn(c, "complete");
    lua_pushstring(L, text);
    if (mr_console_docall(c, 1, 1) != LUA_OK) {
        lua_pop(L, 1);
        return NULL;
    }
    n = lua_istable(L, -1) ? lua_rawlen(L, -1) : 0;
    if (n == 0) goto done;
    /* libedit owns the result and releases it with free(): plain malloc. */
    out = malloc((n + 2) * sizeof *out);
    if (out == NULL) goto done;
    k = 1;
    for (i = 1; i <= n; i++) {
        const char *s;
        /* Only real strings: converting a number could raise (and leak). */
        s = lua_rawgeti(L, -1, (lua_Integer)i) == LUA_TSTRING ? lua_tostring(L, -1)
                                                              : NULL;
        if (s != NULL && (out[k] = strdup(s)) != NULL) k++;
        lua_pop(L, 1);
    }
    if (k == 1) {
        free(out);
        out = NULL;
        goto done;
    }
    /* out[0] is what replaces the word: the longest common prefix. */
    lcp = strlen(out[1]);
    for (i = 2; i < k; i++) {
        size_t j = 0;
        while (j < lcp && out[i][j] == out[1][j]) j++;
        lcp = j;
    }
    out[0] = strndup(out[1], lcp);
    if (out[0] == NULL) {
        for (i = 1; i < k; i++) free(out[i]);
        free(out);
        out = NULL;
        goto done;
    }
    if (k == 2) {
        /* A single match: it is the replacement itself. */
        free(out[0]);
        out[0] = out[1];
        k = 1;
    }
    out[k] = NULL;
done:
    lua_pop(L, 1);
    return out;
}
