/* The state machine host: open, apply, query, snapshot, restore, hash. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

/* SHA256_Init/Update/Final: deprecated in OpenSSL 3 in favour of EVP, which
 * loads the provider machinery on first use (+2 MiB of RSS in every node);
 * the low-level calls run the same CPU-dispatched code without it. */
#define OPENSSL_API_COMPAT 0x10100000L
#include <openssl/sha.h>

#include <lauxlib.h>

#include "sm/sm_int.h"

struct mr_sm {
    struct mr_sm_vm *vm;
    char *src; /* the script text, kept so that restore reloads the very same code */
    size_t srclen;
    char *name;
    uint64_t budget;
    uint64_t mem_limit;
    struct mr_sm_deadlines deadlines; /* pending ctx.wake_at deadlines (sm_timers.c) */
    /* The running script (deploys, sm_deploy section below): its label, the
     * SHA-256 of src and the log index it took effect at (0: the first). */
    char *label;
    char hash[65];
    mr_index since;
    /* The script given at open (the config's): what snapshots without a
     * script section were taken with. */
    char *init_src;
    size_t init_len;
    char *init_label;
    char init_hash[65];
};

struct mr_sm_deadlines *mr_sm_deadlines_of(struct mr_sm *sm)
{
    return &sm->deadlines;
}

const char *mr_sm_status_name(int status)
{
    switch (status) {
    case MR_SM_OK:
        return "ok";
    case MR_SM_SCRIPT_ERROR:
        return "script_error";
    case MR_SM_INVALID_JSON:
        return "invalid_json";
    case MR_SM_BUDGET_EXCEEDED:
        return "budget_exceeded";
    case MR_SM_MEMORY_EXCEEDED:
        return "memory_exceeded";
    default:
        return "unknown";
    }
}

void mr_sm_result_free(struct mr_sm_result *res)
{
    if (res == NULL) return;
    mr_free(res->json);
    mr_free(res->events);
    mr_free(res->error);
    mr_free(res->traceback);
    memset(res, 0, sizeof *res);
}

static char *dup_mem(const char *p, size_t n)
{
    char *s = mr_malloc(n + 1);
    if (s == NULL) return NULL;
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

static int read_file(const char *path, char **out, size_t *outlen, char *errmsg)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        mr_errmsg_printf(errmsg, "cannot open %s: %s", path, strerror(errno));
        return MR_ESCRIPT;
    }
    struct mr_sm_buf b = {0};
    char tmp[8192];
    size_t n;
    int rv = 0;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) {
        if (mr_sm_buf_append(&b, tmp, n) != 0) {
            rv = MR_ENOMEM;
            mr_errmsg_printf(errmsg, "out of memory reading %s", path);
            break;
        }
    }
    if (rv == 0 && ferror(f)) {
        rv = MR_ESCRIPT;
        mr_errmsg_printf(errmsg, "cannot read %s: %s", path, strerror(errno));
    }
    fclose(f);
    if (rv == 0 && mr_sm_buf_append(&b, "", 1) != 0) {
        rv = MR_ENOMEM;
        mr_errmsg_printf(errmsg, "out of memory reading %s", path);
    }
    if (rv != 0) {
        mr_sm_buf_free(&b);
        return rv;
    }
    *out = b.p;
    *outlen = b.len - 1;
    return 0;
}

static int script_init(struct mr_sm *sm, char *errmsg);

int mr_sm_open(struct mr_sm **out, const struct mr_sm_options *opts, char *errmsg)
{
    if (opts == NULL || (opts->script_path == NULL && opts->script_source == NULL)) {
        mr_errmsg_printf(errmsg, "no state machine script given");
        return MR_EINVAL;
    }
    struct mr_sm *sm = mr_calloc(1, sizeof *sm);
    if (sm == NULL) {
        mr_errmsg_printf(errmsg, "out of memory");
        return MR_ENOMEM;
    }
    int rv;
    sm->budget = opts->instruction_budget ? opts->instruction_budget
                                          : MR_SM_DEFAULT_INSTRUCTION_BUDGET;
    sm->mem_limit =
        opts->memory_limit_bytes ? opts->memory_limit_bytes : MR_SM_DEFAULT_MEMORY_LIMIT;
    if (opts->script_source != NULL) {
        sm->srclen = strlen(opts->script_source);
        sm->src = dup_mem(opts->script_source, sm->srclen);
        sm->name = mr_strdup(opts->script_name ? opts->script_name : "script.lua");
        if (sm->src == NULL || sm->name == NULL) {
            rv = MR_ENOMEM;
            mr_errmsg_printf(errmsg, "out of memory");
            goto fail;
        }
    } else {
        if ((rv = read_file(opts->script_path, &sm->src, &sm->srclen, errmsg)) != 0)
            goto fail;
        sm->name = mr_strdup(opts->script_path);
        if (sm->name == NULL) {
            rv = MR_ENOMEM;
            mr_errmsg_printf(errmsg, "out of memory");
            goto fail;
        }
    }
    rv = mr_sm_vm_new(&sm->vm, sm->src, sm->srclen, sm->name, sm->budget, sm->mem_limit,
                      errmsg);
    if (rv != 0) goto fail;
    if ((rv = script_init(sm, errmsg)) != 0) {
        mr_sm_vm_free(sm->vm);
        goto fail;
    }
    *out = sm;
    return 0;
fail:
    mr_free(sm->src);
    mr_free(sm->name);
    mr_free(sm->label);
    mr_free(sm->init_src);
    mr_free(sm->init_label);
    mr_free(sm);
    return rv;
}

void mr_sm_close(struct mr_sm *sm)
{
    if (sm == NULL) return;
    mr_sm_vm_free(sm->vm);
    mr_sm_deadlines_free(&sm->deadlines);
    mr_free(sm->src);
    mr_free(sm->name);
    mr_free(sm->label);
    mr_free(sm->init_src);
    mr_free(sm->init_label);
    mr_free(sm);
}

size_t mr_sm_memory_used(const struct mr_sm *sm)
{
    return sm->vm->mem_used;
}

/* ---- apply / query -------------------------------------------------------------- */

enum { HOST_OK = 0, HOST_BAD_JSON, HOST_NOMEM };

struct call_args {
    struct mr_sm_vm *vm;
    const char *in;
    size_t len;
    const struct mr_sm_ctx *ctx; /* NULL for a query */
    int is_tick;                 /* tick(ctx) rather than apply(cmd, ctx) */
    int host;                    /* HOST_* */
    char errmsg[MR_ERRMSG_SIZE];
};

/* Pushes the ctx table every call that runs at a log position shares
 * (apply, tick, migrate): index, term, time and random(). */
static void push_ctx(lua_State *L, const struct mr_sm_ctx *ctx, int extra)
{
    lua_createtable(L, 0, 4 + extra);
    lua_pushinteger(L, (lua_Integer)ctx->index);
    lua_setfield(L, -2, "index");
    lua_pushinteger(L, (lua_Integer)ctx->term);
    lua_setfield(L, -2, "term");
    lua_pushinteger(L, (lua_Integer)ctx->time_ms);
    lua_setfield(L, -2, "time");
    lua_pushcfunction(L, mr_sm_fn_random());
    lua_setfield(L, -2, "random");
}

static int call_body(lua_State *L)
{
    struct call_args *a = lua_touserdata(L, 1);
    struct mr_sm_vm *vm = a->vm;
    lua_settop(L, 0);
    int rv = a->is_tick ? 0 : mr_sm_json_decode(L, a->in, a->len, a->errmsg);
    if (rv != 0) {
        a->host = rv == MR_EMALFORMED ? HOST_BAD_JSON : HOST_NOMEM;
        return 0;
    }
    mr_sm_txn_begin(L); /* from here, a failure is rolled back (sm_txn.c) */
    lua_rawgeti(L, LUA_REGISTRYINDEX,
                a->is_tick ? vm->ref_tick : a->ctx ? vm->ref_apply : vm->ref_query);
    lua_insert(L, 1);
    if (a->ctx != NULL) {
        push_ctx(L, a->ctx, 3);
        lua_pushcfunction(L, mr_sm_fn_emit());
        lua_setfield(L, -2, "emit");
        lua_pushcfunction(L, mr_sm_fn_wake_at());
        lua_setfield(L, -2, "wake_at");
        if (a->ctx->fault_salt != NULL) {
            lua_pushstring(L, a->ctx->fault_salt);
            lua_setfield(L, -2, "fault_salt");
        }
    }
    lua_call(L, a->is_tick ? 1 : a->ctx ? 2 : 1, 1);
    vm->out.len = 0;
    rv = mr_sm_json_encode(L, -1, &vm->out, a->errmsg);
    if (rv == MR_EMALFORMED)
        return luaL_error(L, "%s returned a value JSON cannot hold: %s",
                          a->is_tick ? "tick" : a->ctx ? "apply" : "query", a->errmsg);
    if (rv != 0) a->host = HOST_NOMEM;
    return 0;
}

/* Splits "msg\nstack traceback:..." into res->error and res->traceback. */
static int fill_error(struct mr_sm_result *res, const char *full)
{
    const char *tb = strstr(full, "\nstack traceback:");
    size_t n = tb ? (size_t)(tb - full) : strlen(full);
    res->error = dup_mem(full, n);
    res->traceback = tb ? mr_strdup(full) : NULL;
    if (res->error == NULL || (tb && res->traceback == NULL)) return MR_ENOMEM;
    return 0;
}

static int run_call(struct mr_sm *sm, const struct mr_sm_ctx *ctx, int is_tick,
                    const char *in, size_t len, struct mr_sm_result *res)
{
    struct mr_sm_vm *vm = sm->vm;
    lua_State *L = vm->L;
    struct call_args a = {vm, in, len, ctx, is_tick, HOST_OK, {0}};
    memset(res, 0, sizeof *res);
    if (ctx != NULL) {
        /* Same (term, index) -> same stream on every node. */
        mr_rand_seed(&vm->rng, ctx->index * 0x9E3779B97F4A7C15ULL ^ ctx->term);
        vm->in_apply = 1;
    } else {
        mr_rand_seed(&vm->rng, 0);
    }
    vm->events.len = 0;
    vm->staged.n = 0;
    vm->timer_nomem = 0;
    vm->committed = ctx != NULL ? &sm->deadlines : NULL;
    lua_pushcfunction(L, call_body);
    lua_pushlightuserdata(L, &a);
    int st = mr_sm_vm_pcall(vm, 1, 0, sm->budget, 1);
    vm->in_apply = 0;
    vm->committed = NULL;
    int rv = 0, undo_rv = 0;
    /* Deadlines asked for by a call that failed are dropped with it. */
    if (vm->timer_nomem)
        rv = MR_ENOMEM;
    else if (st == MR_SM_OK && a.host == HOST_OK &&
             mr_sm_deadlines_merge(&sm->deadlines, &vm->staged) != 0)
        rv = MR_ENOMEM;
    vm->staged.n = 0;
    /* Atomic: a failed apply or tick leaves no trace (its changes are undone,
     * its events dropped); a query never changes anything, whatever it did. */
    if (st != MR_SM_OK || a.host != HOST_OK || ctx == NULL) {
        undo_rv = mr_sm_txn_rollback(vm);
        if (st != MR_SM_OK) vm->events.len = 0;
    } else {
        mr_sm_txn_commit(L);
    }
    if (st != MR_SM_OK) {
        res->status = st;
        if (rv == 0) rv = fill_error(res, lua_tostring(L, -1));
        lua_pop(L, 1);
    } else if (rv != 0) {
        /* the host failed (above): the outcome is unknown */
    } else if (a.host == HOST_NOMEM) {
        rv = MR_ENOMEM;
    } else if (a.host == HOST_BAD_JSON) {
        res->status = MR_SM_INVALID_JSON;
        res->error = mr_strdup(a.errmsg);
        if (res->error == NULL) rv = MR_ENOMEM;
    } else {
        res->status = MR_SM_OK;
        res->json = dup_mem(vm->out.p, vm->out.len);
        res->json_len = vm->out.len;
        if (res->json == NULL) rv = MR_ENOMEM;
    }
    vm->out.len = 0;
    if (rv == 0 && vm->events.len > 0) {
        if (mr_sm_buf_append(&vm->events, "]", 1) != 0) {
            rv = MR_ENOMEM;
        } else {
            res->events = dup_mem(vm->events.p, vm->events.len);
            res->events_len = vm->events.len;
            if (res->events == NULL) rv = MR_ENOMEM;
        }
    }
    vm->events.len = 0;
    mr_sm_vm_trim(vm);
    if (undo_rv != 0) rv = undo_rv;
    if (rv != 0)
        mr_sm_result_free(res);
    else
        res->is_uncertain =
            vm->mem_refused || vm->mem_error || st == MR_SM_MEMORY_EXCEEDED;
    return rv;
}

int mr_sm_apply(struct mr_sm *sm, const struct mr_sm_ctx *ctx, const char *cmd,
                size_t len, struct mr_sm_result *res)
{
    MR_ASSERT(ctx != NULL);
    return run_call(sm, ctx, 0, cmd, len, res);
}

int mr_sm_tick(struct mr_sm *sm, const struct mr_sm_ctx *ctx, struct mr_sm_result *res)
{
    MR_ASSERT(ctx != NULL);
    /* Due deadlines are consumed whatever tick() does: one that fails must
     * not be woken again (and fail again) at every tick. */
    size_t due = mr_sm_deadlines_pop_due(&sm->deadlines, ctx->time_ms);
    if (due == 0 || sm->vm->ref_tick == LUA_NOREF) {
        memset(res, 0, sizeof *res);
        res->status = MR_SM_OK;
        res->json = mr_strdup("null");
        if (res->json == NULL) return MR_ENOMEM;
        res->json_len = 4;
        return 0;
    }
    return run_call(sm, ctx, 1, NULL, 0, res);
}

int mr_sm_has_tick(struct mr_sm *sm)
{
    return sm->vm->ref_tick != LUA_NOREF;
}

int mr_sm_query(struct mr_sm *sm, const char *q, size_t len, struct mr_sm_result *res)
{
    return run_call(sm, NULL, 0, q, len, res);
}

/* ---- snapshot / restore ------------------------------------------------------------ */

static int snapshot_body(lua_State *L)
{
    struct mr_sm_vm *vm = lua_touserdata(L, 1);
    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->ref_snapshot);
    lua_call(L, 0, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
        return luaL_error(L, "snapshot() must return a string (it returned %s)",
                          luaL_typename(L, -1));
    return 1;
}

static void error_first_line(char *errmsg, const char *prefix, const char *full)
{
    const char *tb = full ? strstr(full, "\nstack traceback:") : NULL;
    int n = tb ? (int)(tb - full) : (int)strlen(full ? full : "");
    mr_errmsg_printf(errmsg, "%s: %.*s", prefix, n, full ? full : "?");
}

int mr_sm_vm_snapshot(struct mr_sm_vm *vm, const char **data, size_t *len, char *errmsg)
{
    lua_State *L = vm->L;
    mr_rand_seed(&vm->rng, 0);
    lua_pushcfunction(L, snapshot_body);
    lua_pushlightuserdata(L, vm);
    int st = mr_sm_vm_pcall(vm, 1, 1, MR_SM_BULK_INSTRUCTION_BUDGET, 0);
    if (st != MR_SM_OK) {
        error_first_line(errmsg, "snapshot", lua_tostring(L, -1));
        lua_pop(L, 1);
        mr_sm_vm_trim(vm);
        return st == MR_SM_MEMORY_EXCEEDED ? MR_ENOMEM : MR_ESCRIPT;
    }
    *data = lua_tolstring(L, -1, len);
    return 0;
}

int mr_sm_snapshot(struct mr_sm *sm, char **data, size_t *len, char *errmsg)
{
    const char *p;
    size_t n;
    int rv = mr_sm_vm_snapshot(sm->vm, &p, &n, errmsg);
    if (rv != 0) return rv;
    char *copy = dup_mem(p, n);
    lua_pop(sm->vm->L, 1);
    mr_sm_vm_trim(sm->vm);
    if (copy == NULL) {
        mr_errmsg_printf(errmsg, "snapshot: out of memory copying %zu bytes", n);
        return MR_ENOMEM;
    }
    *data = copy;
    *len = n;
    return 0;
}

void mr_sm_sha256_hex(const void *data, size_t len, char hex[65])
{
    static const char digits[] = "0123456789abcdef";
    /* OpenSSL's: it uses the CPU's SHA extensions where there are some,
     * 4-5x libmd's speed; state hashes run over the whole state (integrity
     * checks every integrity_check_entries, backups, deploy trials). */
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, data, len);
    SHA256_Final(d, &c);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        hex[2 * i] = digits[d[i] >> 4];
        hex[2 * i + 1] = digits[d[i] & 15];
    }
    hex[64] = '\0';
}

int mr_sm_state_hash(struct mr_sm *sm, char hex[65], char *errmsg)
{
    const char *p;
    size_t n;
    int rv = mr_sm_vm_snapshot(sm->vm, &p, &n, errmsg);
    if (rv != 0) return rv;
    mr_sm_sha256_hex(p, n, hex);
    lua_pop(sm->vm->L, 1);
    mr_sm_vm_trim(sm->vm);
    return 0;
}

struct restore_args {
    struct mr_sm_vm *vm;
    const char *data;
    size_t len;
};

static int restore_body(lua_State *L)
{
    struct restore_args *a = lua_touserdata(L, 1);
    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->vm->ref_restore);
    lua_pushlstring(L, a->data, a->len);
    lua_call(L, 1, 0);
    return 0;
}

/* Loads src into a fresh sandbox and calls restore(data) there. On success
 * *out owns the new vm; on failure nothing is left behind. */
static int restore_fresh(struct mr_sm *sm, const char *src, size_t srclen, const char *name,
                         const char *data, size_t len, struct mr_sm_vm **out, char *errmsg)
{
    struct mr_sm_vm *fresh;
    int rv = mr_sm_vm_new(&fresh, src, srclen, name, sm->budget, sm->mem_limit, errmsg);
    if (rv != 0) {
        mr_errmsg_wrapf(errmsg, "restore");
        return rv;
    }
    struct restore_args a = {fresh, data, len};
    mr_rand_seed(&fresh->rng, 0);
    lua_pushcfunction(fresh->L, restore_body);
    lua_pushlightuserdata(fresh->L, &a);
    int st = mr_sm_vm_pcall(fresh, 1, 0, MR_SM_BULK_INSTRUCTION_BUDGET, 0);
    if (st != MR_SM_OK) {
        error_first_line(errmsg, "restore", lua_tostring(fresh->L, -1));
        mr_sm_vm_free(fresh);
        return st == MR_SM_MEMORY_EXCEEDED ? MR_ENOMEM : MR_ESCRIPT;
    }
    /* Frees the copy of the snapshot that restore() got as a Lua string (and
     * whatever restore() left behind) now rather than at the collector's
     * pace. With kv.lua's data in a sortedmap there is little left to walk:
     * ~1-2 ms at a million keys (it was 160-440 ms with a table of them). */
    lua_gc(fresh->L, LUA_GCCOLLECT);
    mr_sm_vm_trim(fresh);
    *out = fresh;
    return 0;
}

int mr_sm_restore(struct mr_sm *sm, const char *data, size_t len, char *errmsg)
{
    struct mr_sm_vm *fresh;
    int rv = restore_fresh(sm, sm->src, sm->srclen, sm->name, data, len, &fresh, errmsg);
    if (rv != 0) return rv;
    mr_sm_vm_free(sm->vm);
    sm->vm = fresh;
    /* The payload replaces the whole state: deadlines included. The caller
     * that keeps them beside the payload reinstalls them
     * (mr_sm_deadlines_restore). */
    sm->deadlines.n = 0;
    return 0;
}

struct mr_sm_vm *mr_sm_vm_get(struct mr_sm *sm)
{
    return sm->vm;
}

/* ---- deploying a new script (docs/state-machines.md "Deploying a new version") --- */

/* The chunk name a script runs under: its label ("kv.lua"), so that error
 * messages read the same on every replica whichever way it got the script
 * (applied the SCRIPT entry, installed a snapshot, opened the config file). */
static const char *chunk_name(const char *label)
{
    return label[0] ? label : "script.lua";
}

static char *label_dup(const char *label, size_t len)
{
    return dup_mem(label ? label : "", label ? len : 0);
}

static int script_init(struct mr_sm *sm, char *errmsg)
{
    const char *base = strrchr(sm->name, '/');
    base = base ? base + 1 : sm->name;
    mr_sm_sha256_hex(sm->src, sm->srclen, sm->hash);
    memcpy(sm->init_hash, sm->hash, sizeof sm->hash);
    sm->since = 0;
    sm->label = mr_strdup(base);
    sm->init_label = mr_strdup(base);
    sm->init_src = dup_mem(sm->src, sm->srclen);
    sm->init_len = sm->srclen;
    if (sm->label == NULL || sm->init_label == NULL || sm->init_src == NULL) {
        mr_errmsg_printf(errmsg, "out of memory");
        return MR_ENOMEM;
    }
    return 0;
}

void mr_sm_script_info(const struct mr_sm *sm, struct mr_sm_script_info *out)
{
    memcpy(out->hash, sm->hash, sizeof out->hash);
    memcpy(out->config_hash, sm->init_hash, sizeof out->config_hash);
    out->label = sm->label;
    out->source = sm->src;
    out->size = sm->srclen;
    out->index = sm->since;
}

int mr_sm_validate(struct mr_sm *sm, const char *src, size_t len, const char *label,
                   size_t label_len, char *errmsg)
{
    struct mr_sm_vm *vm;
    char *lb = label_dup(label, label_len);
    int rv;
    if (lb == NULL) {
        mr_errmsg_printf(errmsg, "out of memory");
        return MR_ENOMEM;
    }
    rv = mr_sm_vm_new(&vm, src, len, chunk_name(lb), sm->budget, sm->mem_limit, errmsg);
    mr_free(lb);
    if (rv != 0) return rv;
    mr_sm_vm_free(vm);
    return 0;
}

/* Makes `fresh` (running src) the state machine. The old vm is freed; on
 * MR_ENOMEM nothing changed and fresh is freed. */
static int script_swap(struct mr_sm *sm, struct mr_sm_vm *fresh, const char *src, size_t len,
                       const char *label, size_t label_len, mr_index since, char *errmsg)
{
    char *s = dup_mem(src, len), *lb = label_dup(label, label_len);
    char *name = lb ? mr_strdup(chunk_name(lb)) : NULL;
    if (s == NULL || lb == NULL || name == NULL) {
        mr_free(s);
        mr_free(lb);
        mr_free(name);
        mr_sm_vm_free(fresh);
        mr_errmsg_printf(errmsg, "out of memory");
        return MR_ENOMEM;
    }
    mr_sm_vm_free(sm->vm);
    sm->vm = fresh;
    mr_free(sm->src);
    mr_free(sm->name);
    mr_free(sm->label);
    sm->src = s;
    sm->srclen = len;
    sm->name = name;
    sm->label = lb;
    sm->since = since;
    mr_sm_sha256_hex(s, len, sm->hash);
    return 0;
}

struct migrate_args {
    struct mr_sm_vm *vm;
    const char *old;
    size_t oldlen;
    const struct mr_sm_ctx *ctx;
    int used_migrate;
};

static int migrate_body(lua_State *L)
{
    struct migrate_args *a = lua_touserdata(L, 1);
    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->vm->ref_module);
    /* not rawget: the module table is a journaled proxy (sm_txn.c), its
     * fields live in its shadow */
    lua_getfield(L, -1, "migrate");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_rawgeti(L, LUA_REGISTRYINDEX, a->vm->ref_restore);
        lua_pushlstring(L, a->old, a->oldlen);
        lua_call(L, 1, 0);
        return 0;
    }
    if (!lua_isfunction(L, -1))
        return luaL_error(L, "migrate must be a function (it is %s)", luaL_typename(L, -1));
    a->used_migrate = 1;
    lua_pushlstring(L, a->old, a->oldlen);
    push_ctx(L, a->ctx, 0);
    lua_call(L, 2, 0);
    return 0;
}

int mr_sm_deploy(struct mr_sm *sm, const struct mr_sm_ctx *ctx, const char *src, size_t len,
                 const char *label, size_t label_len, char *errmsg)
{
    struct mr_sm_vm *fresh;
    const char *old;
    size_t oldlen;
    char *lb = label_dup(label, label_len);
    int rv, st;
    MR_ASSERT(ctx != NULL);
    if (lb == NULL) {
        mr_errmsg_printf(errmsg, "out of memory");
        return MR_ENOMEM;
    }
    rv = mr_sm_vm_new(&fresh, src, len, chunk_name(lb), sm->budget, sm->mem_limit, errmsg);
    mr_free(lb);
    if (rv != 0) return rv;
    /* The old script's state, as its snapshot() gives it (on every replica
     * the same bytes, if snapshot() is canonical: the determinism rules). */
    rv = mr_sm_vm_snapshot(sm->vm, &old, &oldlen, errmsg);
    if (rv != 0) {
        mr_sm_vm_free(fresh);
        mr_errmsg_wrapf(errmsg, "the running script");
        return rv;
    }
    struct migrate_args a = {fresh, old, oldlen, ctx, 0};
    /* Same (term, index) -> same stream on every node, as for apply. */
    mr_rand_seed(&fresh->rng, ctx->index * 0x9E3779B97F4A7C15ULL ^ ctx->term);
    lua_pushcfunction(fresh->L, migrate_body);
    lua_pushlightuserdata(fresh->L, &a);
    /* Under the bulk budget and without the heap cap, as a restore: a state
     * that fits must be able to move to the new script. */
    st = mr_sm_vm_pcall(fresh, 1, 0, MR_SM_BULK_INSTRUCTION_BUDGET, 0);
    lua_pop(sm->vm->L, 1);
    mr_sm_vm_trim(sm->vm);
    if (st != MR_SM_OK) {
        error_first_line(errmsg, a.used_migrate ? "migrate" : "restore",
                         lua_tostring(fresh->L, -1));
        mr_sm_vm_free(fresh);
        return st == MR_SM_MEMORY_EXCEEDED ? MR_ENOMEM : MR_ESCRIPT;
    }
    lua_gc(fresh->L, LUA_GCCOLLECT);
    mr_sm_vm_trim(fresh);
    return script_swap(sm, fresh, src, len, label, label_len, ctx->index, errmsg);
}

int mr_sm_restore_script(struct mr_sm *sm, const char *src, size_t srclen, const char *label,
                         size_t label_len, mr_index since, const char *data, size_t len,
                         char *errmsg)
{
    struct mr_sm_vm *fresh;
    char *lb;
    int rv;
    if (src == NULL) {
        src = sm->init_src;
        srclen = sm->init_len;
        label = sm->init_label;
        label_len = strlen(sm->init_label);
        since = 0;
    }
    if ((lb = label_dup(label, label_len)) == NULL) {
        mr_errmsg_printf(errmsg, "out of memory");
        return MR_ENOMEM;
    }
    rv = restore_fresh(sm, src, srclen, chunk_name(lb), data, len, &fresh, errmsg);
    mr_free(lb);
    if (rv != 0) return rv;
    return script_swap(sm, fresh, src, srclen, label, label_len, since, errmsg);
}
