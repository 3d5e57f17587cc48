/* Configuration: defaults, the Lua config file, flags, validation. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "config/config.h"

#define CFG_LUA_HEAP_MAX (64u << 20)   /* bytes a config file may allocate */
/* A config file that runs longer is a bug. Overridable only so the fuzz
 * target (tests/fuzz/fuzz_config.c) can trip it in milliseconds. */
#ifndef CFG_LUA_INSTRUCTIONS
#define CFG_LUA_INSTRUCTIONS 100000000
#endif

enum kind {
    K_STR,
    K_ID,
    K_ADDR,
    K_PATH,
    K_TOKEN,
    K_INT,
    K_U64,
    K_BOOL,
    K_LOGLEVEL,
    K_PEERS,
    K_JOIN,
    K_ETIMEOUT
};

struct keydesc {
    const char *name;
    enum kind kind;
    size_t off;
    int64_t min, max;
    const char *help;
};

#define F(x) offsetof(struct mr_cfg, x)
static const struct keydesc keys[] = {
    {"id", K_ID, F(id), 0, 0, "this node's id, [A-Za-z0-9_.-]{1,64} (required)"},
    {"data_dir", K_PATH, F(data_dir), 0, 0,
     "directory for the log and snapshots (data/<id>)"},
    {"raft_addr", K_ADDR, F(raft_addr), 0, 0,
     "host:port for peer traffic (127.0.0.1:7001)"},
    {"raft_listen", K_ADDR, F(raft_listen), 0, 0,
     "host:port to bind for peer traffic when it differs from raft_addr (NAT, proxies)"},
    {"http_addr", K_ADDR, F(http_addr), 0, 0,
     "host:port for the HTTP API (127.0.0.1:8001)"},
    {"state_machine", K_PATH, F(state_machine), 0, 0,
     "Lua state machine script (default: the built-in kv.lua)"},
    {"peers", K_PEERS, F(peers), 0, 0,
     "static members: n1=host:port,n2=... (raft address, or raft/http: n1=h:7001/h:8001)"},
    {"bootstrap_expect", K_INT, F(bootstrap_expect), 1, 1000,
     "form a new cluster once this many nodes have joined"},
    {"join", K_JOIN, F(join), 0, 0, "HTTP addresses of existing members: a:p,b:p"},
    {"heartbeat_ms", K_INT, F(heartbeat_ms), 1, 60000, "leader heartbeat interval (50)"},
    {"election_timeout_ms", K_ETIMEOUT, 0, 2, 600000,
     "min,max election timeout (300,600)"},
    {"pre_vote", K_BOOL, F(pre_vote), 0, 1, "Pre-Vote before elections (true)"},
    {"check_quorum", K_BOOL, F(check_quorum), 0, 1,
     "leader steps down without a quorum (true)"},
    {"lease_reads", K_BOOL, F(lease_reads), 0, 1,
     "allow consistency=lease reads (false)"},
    {"max_append_entries", K_INT, F(max_append_entries), 1, 100000,
     "entries per AppendEntries message (512)"},
    {"max_inflight", K_INT, F(max_inflight), 1, 4096, "pipelined appends per peer (64)"},
    {"snapshot_entries", K_U64, F(snapshot_entries), 1, INT64_C(1000000000000),
     "snapshot after this many applied entries (10000)"},
    {"snapshot_log_mb", K_U64, F(snapshot_log_mb), 1, 1048576,
     "also snapshot once the log since the last one holds this many MiB (32)"},
    {"snapshot_log_percent", K_U64, F(snapshot_log_percent), 0, 100000,
     "also wait until the log since the last snapshot is this % of its size (25; 0 = off)"},
    {"snapshot_log_percent_small", K_U64, F(snapshot_log_percent_small), 0, 100000,
     "or this % of its size while that stays under snapshot_log_mb (100)"},
    {"integrity_check_entries", K_U64, F(integrity_check_entries), 0, INT64_C(1000000000000),
     "compare every member's state hash every this many log entries (100000; 0 = off)"},
    {"integrity_resync", K_BOOL, F(integrity_resync), 0, 1,
     "a member whose state diverged reinstalls the leader's snapshot (true)"},
    {"log_cache_mb", K_U64, F(log_cache_mb), 0, 1048576,
     "MiB of log entry payloads kept in memory; older ones are read back from the WAL "
     "when a follower needs them (8; 0 = none)"},
    {"snapshot_trailing", K_U64, F(snapshot_trailing), 0, INT64_C(1000000000000),
     "entries kept in the log after a snapshot (1000)"},
    {"wal_segment_mb", K_U64, F(wal_segment_mb), 1, 4096, "WAL segment size in MiB (64)"},
    {"max_data_mb", K_U64, F(max_data_mb), 0, INT64_C(1) << 40,
     "quota on the data directory in MiB: past it writes stop with a NOSPACE alarm (0 = none)"},
    {"fsync", K_BOOL, F(fsync), 0, 1, "fdatasync the WAL (true; false only for tests)"},
    {"max_body_bytes", K_U64, F(max_body_bytes), 64, INT64_C(1) << 30,
     "largest HTTP request body (1048576)"},
    {"max_header_bytes", K_U64, F(max_header_bytes), 1024, INT64_C(1) << 20,
     "largest HTTP request head (16384)"},
    {"http_idle_timeout_ms", K_INT, F(http_idle_timeout_ms), 100, 86400000,
     "close idle keep-alive connections after (60000)"},
    {"request_timeout_ms", K_INT, F(request_timeout_ms), 10, 3600000,
     "answer 504 after (5000)"},
    {"max_connections", K_INT, F(max_connections), 1, 1000000, "HTTP connections (1024)"},
    {"client_token", K_TOKEN, F(client_token), 0, 0, "Bearer token for client requests"},
    {"admin_token", K_TOKEN, F(admin_token), 0, 0, "Bearer token for admin requests"},
    {"cluster_id", K_ID, F(cluster_id), 0, 0,
     "name of the cluster; peers with another one are refused (moonraft)"},
    {"cluster_secret", K_TOKEN, F(cluster_secret), 0, 0, "secret shared by the peers"},
    {"lua_instruction_budget", K_U64, F(lua_instruction_budget), 1000,
     INT64_C(1000000000000), "Lua instructions per apply/query (10000000)"},
    {"lua_memory_mb", K_U64, F(lua_memory_mb), 1, 1 << 20, "Lua heap cap in MiB (1024)"},
    {"log_level", K_LOGLEVEL, F(log_level), 0, 0, "debug, info, warn or error (info)"},
    {"tls_cert", K_PATH, F(tls_cert), 0, 0,
     "PEM certificate (chain) of this node: HTTPS on http_addr and TLS on raft_addr"},
    {"tls_key", K_PATH, F(tls_key), 0, 0, "PEM private key of tls_cert"},
    {"tls_ca", K_PATH, F(tls_ca), 0, 0,
     "PEM CA that signs the peers' (and, with tls_client_verify, clients') certificates"},
    {"tls_peer_verify", K_BOOL, F(tls_peer_verify), 0, 1,
     "peers must present a certificate signed by tls_ca (true when tls_ca is set)"},
    {"tls_client_verify", K_BOOL, F(tls_client_verify), 0, 1,
     "HTTPS clients must present a certificate signed by tls_ca (false)"},
    {"tls_admin_ou", K_STR, F(tls_admin_ou), 0, 0,
     "with tls_client_verify: a client certificate with this OU acts as the admin token"},
    {"tls_client_ou", K_STR, F(tls_client_ou), 0, 0,
     "with tls_client_verify: a client certificate with this OU acts as the client token"},
};
#define N_KEYS (sizeof keys / sizeof *keys)

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void mr_cfg_defaults(struct mr_cfg *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->heartbeat_ms = 50;
    cfg->election_timeout_min_ms = 300;
    cfg->election_timeout_max_ms = 600;
    cfg->pre_vote = 1;
    cfg->check_quorum = 1;
    cfg->lease_reads = 0;
    cfg->max_append_entries = 512;
    cfg->max_inflight = 64;
    cfg->snapshot_entries = 10000;
    cfg->snapshot_trailing = 1000;
    cfg->snapshot_log_percent = 25;
    cfg->snapshot_log_percent_small = 100;
    cfg->snapshot_log_mb = 32;
    cfg->log_cache_mb = 8;
    cfg->integrity_check_entries = 100000;
    cfg->integrity_resync = 1;
    cfg->wal_segment_mb = 64;
    cfg->fsync = 1;
    cfg->max_body_bytes = 1u << 20;
    cfg->max_header_bytes = 16u << 10;
    cfg->http_idle_timeout_ms = 60000;
    cfg->request_timeout_ms = 5000;
    cfg->max_connections = 1024;
    cfg->lua_instruction_budget = 10000000;
    cfg->lua_memory_mb = 1024;
    cfg->log_level = MR_CFG_LOG_INFO;
    cfg->tls_peer_verify = 1;
}

static void free_peers(struct mr_cfg *cfg)
{
    for (size_t i = 0; i < cfg->n_peers; i++) {
        mr_free(cfg->peers[i].id);
        mr_free(cfg->peers[i].raft_addr);
        mr_free(cfg->peers[i].http_addr);
    }
    mr_free(cfg->peers);
    cfg->peers = NULL;
    cfg->n_peers = 0;
}

static void free_join(struct mr_cfg *cfg)
{
    for (size_t i = 0; i < cfg->n_join; i++) mr_free(cfg->join[i]);
    mr_free(cfg->join);
    cfg->join = NULL;
    cfg->n_join = 0;
}

void mr_cfg_free(struct mr_cfg *cfg)
{
    if (cfg == NULL) return;
    free_peers(cfg);
    free_join(cfg);
    for (size_t i = 0; i < N_KEYS; i++) {
        enum kind k = keys[i].kind;
        if (k == K_STR || k == K_ID || k == K_ADDR || k == K_PATH || k == K_TOKEN) {
            char **p = (char **)(void *)((char *)cfg + keys[i].off);
            mr_free(*p);
            *p = NULL;
        }
    }
    mr_free(cfg->config_path);
    cfg->config_path = NULL;
}

/* ---- value checks ----------------------------------------------------------------- */

int mr_cfg_parse_addr(const char *addr, char *host, size_t hostlen, int *port)
{
    const char *colon, *h = addr;
    size_t hl;
    if (addr == NULL || hostlen == 0) return MR_EINVAL;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (close == NULL || close[1] != ':') return MR_EINVAL;
        h = addr + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
        for (size_t i = 0; i < hl; i++)
            if (!isxdigit((unsigned char)h[i]) && h[i] != ':' && h[i] != '.')
                return MR_EINVAL;
    } else {
        colon = strchr(addr, ':');
        if (colon == NULL || strchr(colon + 1, ':') != NULL) return MR_EINVAL;
        hl = (size_t)(colon - addr);
        for (size_t i = 0; i < hl; i++)
            if (!isalnum((unsigned char)h[i]) && h[i] != '.' && h[i] != '-' &&
                h[i] != '_')
                return MR_EINVAL;
    }
    if (hl == 0 || hl >= hostlen) return MR_EINVAL;
    const char *p = colon + 1;
    if (*p == '\0' || strlen(p) > 5) return MR_EINVAL;
    long v = 0;
    for (; *p; p++) {
        if (!isdigit((unsigned char)*p)) return MR_EINVAL;
        v = v * 10 + (*p - '0');
    }
    if (v < 1 || v > 65535) return MR_EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    if (port) *port = (int)v;
    return 0;
}

static int addr_ok(const char *s)
{
    char host[256];
    return mr_cfg_parse_addr(s, host, sizeof host, NULL) == 0;
}

static int id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > MR_CFG_ID_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-')
            return 0;
    return 1;
}

#define ADDR_HINT "expected \"host:port\" with a port in 1..65535"
#define ID_HINT "expected 1-64 characters from [A-Za-z0-9_.-]"

/* Validates s for a string-valued key and stores a copy. */
static int set_string(struct mr_cfg *cfg, const struct keydesc *d, const char *s,
                      const char *where, char *errmsg)
{
    const char *problem = NULL;
    if (d->kind == K_ID && !id_ok(s)) problem = ID_HINT;
    if (d->kind == K_ADDR && !addr_ok(s)) problem = ADDR_HINT;
    if ((d->kind == K_PATH || d->kind == K_TOKEN) && s[0] == '\0')
        problem = "must not be empty";
    if (d->kind == K_LOGLEVEL) {
        for (int i = 0; i < 4; i++)
            if (strcmp(s, level_names[i]) == 0) {
                cfg->log_level = i;
                return 0;
            }
        problem = "expected \"debug\", \"info\", \"warn\" or \"error\"";
    }
    if (problem) {
        mr_errmsg_printf(errmsg, "%s: %s: %s (got \"%.64s\")", where, d->name, problem,
                         s);
        return MR_ECONFIG;
    }
    char *copy = mr_strdup(s);
    if (copy == NULL) {
        mr_errmsg_printf(errmsg, "%s: %s: out of memory", where, d->name);
        return MR_ENOMEM;
    }
    char **p = (char **)(void *)((char *)cfg + d->off);
    mr_free(*p);
    *p = copy;
    return 0;
}

static int set_int(struct mr_cfg *cfg, const struct keydesc *d, int64_t v,
                   const char *where, char *errmsg)
{
    if (v < d->min || v > d->max) {
        mr_errmsg_printf(errmsg, "%s: %s: %lld is out of range %lld..%lld", where,
                         d->name, (long long)v, (long long)d->min, (long long)d->max);
        return MR_ECONFIG;
    }
    void *p = (char *)cfg + d->off;
    if (d->kind == K_U64)
        *(uint64_t *)p = (uint64_t)v;
    else
        *(int *)p = (int)v;
    return 0;
}

static int add_peer(struct mr_cfg *cfg, const char *id, const char *raft,
                    const char *http, const char *where, char *errmsg)
{
    if (!id_ok(id)) {
        mr_errmsg_printf(errmsg, "%s: peers: id \"%.64s\": %s", where, id, ID_HINT);
        return MR_ECONFIG;
    }
    if (raft == NULL || !addr_ok(raft)) {
        mr_errmsg_printf(errmsg, "%s: peers.%s: raft address %s", where, id, ADDR_HINT);
        return MR_ECONFIG;
    }
    if (http != NULL && !addr_ok(http)) {
        mr_errmsg_printf(errmsg, "%s: peers.%s: http address %s", where, id, ADDR_HINT);
        return MR_ECONFIG;
    }
    for (size_t i = 0; i < cfg->n_peers; i++)
        if (strcmp(cfg->peers[i].id, id) == 0) {
            mr_errmsg_printf(errmsg, "%s: peers: id %s appears twice", where, id);
            return MR_ECONFIG;
        }
    struct mr_cfg_peer *np = mr_realloc(cfg->peers, (cfg->n_peers + 1) * sizeof *np);
    if (np == NULL) goto nomem;
    cfg->peers = np;
    struct mr_cfg_peer *p = &np[cfg->n_peers];
    memset(p, 0, sizeof *p);
    cfg->n_peers++;
    p->id = mr_strdup(id);
    p->raft_addr = mr_strdup(raft);
    p->http_addr = http ? mr_strdup(http) : NULL;
    if (p->id == NULL || p->raft_addr == NULL || (http && p->http_addr == NULL))
        goto nomem;
    return 0;
nomem:
    mr_errmsg_printf(errmsg, "%s: peers: out of memory", where);
    return MR_ENOMEM;
}

static int add_join(struct mr_cfg *cfg, const char *addr, const char *where, char *errmsg)
{
    if (!addr_ok(addr)) {
        mr_errmsg_printf(errmsg, "%s: join: %s (got \"%.64s\")", where, ADDR_HINT, addr);
        return MR_ECONFIG;
    }
    char **nj = mr_realloc(cfg->join, (cfg->n_join + 1) * sizeof *nj);
    if (nj == NULL) goto nomem;
    cfg->join = nj;
    if ((nj[cfg->n_join] = mr_strdup(addr)) == NULL) goto nomem;
    cfg->n_join++;
    return 0;
nomem:
    mr_errmsg_printf(errmsg, "%s: join: out of memory", where);
    return MR_ENOMEM;
}

static int set_etimeout(struct mr_cfg *cfg, const struct keydesc *d, int64_t lo,
                        int64_t hi, const char *where, char *errmsg)
{
    if (lo < d->min || lo > d->max || hi < d->min || hi > d->max) {
        mr_errmsg_printf(errmsg, "%s: %s: values must be in %lld..%lld ms", where,
                         d->name, (long long)d->min, (long long)d->max);
        return MR_ECONFIG;
    }
    cfg->election_timeout_min_ms = (int)lo;
    cfg->election_timeout_max_ms = (int)hi;
    return 0;
}

/* ---- from Lua values -------------------------------------------------------------- */

static const char *lua_type_of(lua_State *L, int idx)
{
    if (lua_type(L, idx) == LUA_TNUMBER)
        return lua_isinteger(L, idx) ? "integer" : "float";
    return luaL_typename(L, idx);
}

/* Integer from a Lua number (floats with an integral value are accepted:
 * 1e6 is a fine way to write a million). */
static int lua_int(lua_State *L, int idx, int64_t *v)
{
    if (lua_isinteger(L, idx)) {
        *v = lua_tointeger(L, idx);
        return 1;
    }
    if (lua_type(L, idx) == LUA_TNUMBER) {
        double d = lua_tonumber(L, idx);
        if (d >= -9.2e18 && d <= 9.2e18 && (double)(int64_t)d == d) {
            *v = (int64_t)d;
            return 1;
        }
    }
    return 0;
}

static int type_error(const char *where, const char *key, const char *want, lua_State *L,
                      int idx, char *errmsg)
{
    mr_errmsg_printf(errmsg, "%s: %s: expected %s, got %s", where, key, want,
                     lua_type_of(L, idx));
    return MR_ECONFIG;
}

static int peers_from_lua(struct mr_cfg *cfg, lua_State *L, int idx, const char *where,
                          char *errmsg)
{
    int rv = 0;
    if (!lua_istable(L, idx))
        return type_error(where, "peers", "a table id -> \"host:port\"", L, idx, errmsg);
    free_peers(cfg);
    lua_pushnil(L);
    while (rv == 0 && lua_next(L, idx) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            mr_errmsg_printf(errmsg, "%s: peers: keys must be node ids (strings), got %s",
                             where, lua_type_of(L, -2));
            rv = MR_ECONFIG;
            break;
        }
        const char *id = lua_tostring(L, -2);
        if (lua_type(L, -1) == LUA_TSTRING) {
            rv = add_peer(cfg, id, lua_tostring(L, -1), NULL, where, errmsg);
        } else if (lua_istable(L, -1)) {
            int t = lua_gettop(L);
            lua_pushnil(L);
            while (lua_next(L, t) != 0) {
                const char *k =
                    lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
                if (k == NULL || (strcmp(k, "raft") != 0 && strcmp(k, "http") != 0)) {
                    mr_errmsg_printf(
                        errmsg, "%s: peers.%s: unknown key '%s' (expected raft, http)",
                        where, id, k ? k : lua_type_of(L, -2));
                    return MR_ECONFIG;
                }
                if (lua_type(L, -1) != LUA_TSTRING) {
                    mr_errmsg_printf(errmsg, "%s: peers.%s.%s: expected a string, got %s",
                                     where, id, k, lua_type_of(L, -1));
                    return MR_ECONFIG;
                }
                lua_pop(L, 1);
            }
            lua_getfield(L, t, "raft");
            lua_getfield(L, t, "http");
            rv = add_peer(cfg, id, lua_tostring(L, -2), lua_tostring(L, -1), where,
                          errmsg);
            lua_pop(L, 2);
        } else {
            mr_errmsg_printf(
                errmsg,
                "%s: peers.%s: expected \"host:port\" or {raft=..., http=...}, got %s",
                where, id, lua_type_of(L, -1));
            rv = MR_ECONFIG;
        }
        lua_pop(L, 1);
    }
    if (rv == 0 && cfg->n_peers == 0) {
        mr_errmsg_printf(errmsg, "%s: peers: must not be empty", where);
        rv = MR_ECONFIG;
    }
    return rv;
}

static int set_from_lua(struct mr_cfg *cfg, const struct keydesc *d, lua_State *L,
                        int idx, const char *where, char *errmsg)
{
    int64_t v, v2;
    switch (d->kind) {
    case K_STR:
    case K_ID:
    case K_ADDR:
    case K_PATH:
    case K_TOKEN:
    case K_LOGLEVEL:
        if (lua_type(L, idx) != LUA_TSTRING)
            return type_error(where, d->name, "a string", L, idx, errmsg);
        return set_string(cfg, d, lua_tostring(L, idx), where, errmsg);
    case K_INT:
    case K_U64:
        if (!lua_int(L, idx, &v))
            return type_error(where, d->name, "an integer", L, idx, errmsg);
        return set_int(cfg, d, v, where, errmsg);
    case K_BOOL:
        if (lua_type(L, idx) != LUA_TBOOLEAN)
            return type_error(where, d->name, "a boolean", L, idx, errmsg);
        *(int *)(void *)((char *)cfg + d->off) = lua_toboolean(L, idx);
        return 0;
    case K_PEERS:
        return peers_from_lua(cfg, L, idx, where, errmsg);
    case K_JOIN:
        free_join(cfg);
        if (lua_type(L, idx) == LUA_TSTRING)
            return add_join(cfg, lua_tostring(L, idx), where, errmsg);
        if (!lua_istable(L, idx))
            return type_error(where, d->name, "an address or a list of addresses", L, idx,
                              errmsg);
        for (lua_Integer i = 1, n = (lua_Integer)lua_rawlen(L, idx); i <= n; i++) {
            lua_rawgeti(L, idx, i);
            int rv = lua_type(L, -1) == LUA_TSTRING
                         ? add_join(cfg, lua_tostring(L, -1), where, errmsg)
                         : type_error(where, "join[i]", "a string", L, -1, errmsg);
            lua_pop(L, 1);
            if (rv != 0) return rv;
        }
        if (cfg->n_join == 0) {
            mr_errmsg_printf(errmsg, "%s: join: must list at least one address", where);
            return MR_ECONFIG;
        }
        return 0;
    case K_ETIMEOUT: {
        if (!lua_istable(L, idx))
            return type_error(where, d->name, "{min, max}", L, idx, errmsg);
        int ok;
        if (lua_getfield(L, idx, "min") != LUA_TNIL) {
            lua_getfield(L, idx, "max");
        } else {
            lua_pop(L, 1);
            lua_rawgeti(L, idx, 1);
            lua_rawgeti(L, idx, 2);
        }
        ok = lua_int(L, -2, &v) && lua_int(L, -1, &v2);
        lua_pop(L, 2);
        if (!ok) {
            mr_errmsg_printf(errmsg, "%s: %s: expected {min, max} in integer ms", where,
                             d->name);
            return MR_ECONFIG;
        }
        return set_etimeout(cfg, d, v, v2, where, errmsg);
    }
    }
    return MR_ECONFIG;
}

static const struct keydesc *find_key(const char *name)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(keys[i].name, name) == 0) return &keys[i];
    return NULL;
}

/* Edit distance, capped: enough to suggest a key for a typo. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[65], i, j;
    if (la > 64 || lb > 64) return SIZE_MAX;
    for (j = 0; j <= lb; j++) row[j] = j;
    for (i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (j = 1; j <= lb; j++) {
            size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            diag = up;
            row[j] = best;
        }
    }
    return row[lb];
}

/* The known key closest to name, if close enough to be a typo; else NULL. */
static const char *suggest_key(const char *name)
{
    const char *best = NULL;
    size_t best_d = 3; /* at most two edits */
    for (size_t i = 0; i < N_KEYS; i++) {
        size_t d = edit_distance(name, keys[i].name);
        if (d < best_d) best_d = d, best = keys[i].name;
    }
    return best;
}

/* ---- the config file
 * ------------------------------------------------------------------- */

struct file_ctx {
    struct mr_cfg *cfg;
    const char *path;
    char *errmsg;
    int rv;
    size_t heap;
};

static void *cfg_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct file_ctx *fc = ud;
    if (ptr == NULL) osize = 0;
    if (nsize == 0) {
        mr_free(ptr);
        fc->heap -= osize;
        return NULL;
    }
    if (nsize > osize && fc->heap + (nsize - osize) > CFG_LUA_HEAP_MAX) return NULL;
    void *p = mr_realloc(ptr, nsize);
    if (p != NULL) fc->heap = fc->heap - osize + nsize;
    return p;
}

static void cfg_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, cfg_hook, LUA_MASKCOUNT,
                1); /* keep raising: pcall cannot swallow it */
    luaL_error(L, "the config file runs for too long (more than %d instructions)",
               CFG_LUA_INSTRUCTIONS);
}

static int l_env(lua_State *L)
{
    const char *v = getenv(luaL_checkstring(L, 1));
    if (v == NULL)
        lua_pushnil(L);
    else
        lua_pushstring(L, v);
    return 1;
}

/* setmetatable, refusing a metatable with a __gc field: Lua runs finalizers
 * with hooks off (lgc.c GCTM), so a looping __gc would escape the budget.
 * Any non-nil __gc counts, since the object is marked for finalization when
 * setmetatable runs and the field could be swapped for a function later. */
static int l_setmetatable(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        if (lua_rawget(L, 2) != LUA_TNIL)
            return luaL_error(L, "setmetatable: __gc is not allowed in a config file");
        lua_pop(L, 1);
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

/* Runs inside lua_pcall: opens the libraries (STYLE 14). */
static int open_sandbox(lua_State *L)
{
    static const luaL_Reg libs[] = {{LUA_GNAME, luaopen_base},
                                    {LUA_TABLIBNAME, luaopen_table},
                                    {LUA_STRLIBNAME, luaopen_string},
                                    {LUA_MATHLIBNAME, luaopen_math},
                                    {NULL, NULL}};
    for (const luaL_Reg *l = libs; l->name; l++) {
        luaL_requiref(L, l->name, l->func, 1);
        lua_pop(L, 1);
    }
    static const char *const removed[] = {"dofile", "loadfile",       "load", "require",
                                          "print",  "collectgarbage", "warn", NULL};
    for (const char *const *r = removed; *r; r++) {
        lua_pushnil(L);
        lua_setglobal(L, *r);
    }
    lua_getglobal(L, "setmetatable");
    lua_pushcclosure(L, l_setmetatable, 1);
    lua_setglobal(L, "setmetatable");
    lua_pushcfunction(L, l_env);
    lua_setglobal(L, "env");
    return 0;
}

/* Runs inside lua_pcall: the returned table is at index 1. */
static int apply_table(lua_State *L)
{
    struct file_ctx *fc = lua_touserdata(L, 2);
    lua_settop(L, 1);
    lua_pushnil(L);
    while (lua_next(L, 1) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            mr_errmsg_printf(fc->errmsg, "%s: keys must be names (got a key of type %s)",
                             fc->path, lua_type_of(L, -2));
            fc->rv = MR_ECONFIG;
            return 0;
        }
        const char *name = lua_tostring(L, -2);
        const struct keydesc *d = find_key(name);
        if (d == NULL) {
            const char *hint = suggest_key(name);
            if (hint != NULL)
                mr_errmsg_printf(fc->errmsg, "%s: unknown key '%s' (did you mean %s?)", fc->path,
                                 name, hint);
            else
                mr_errmsg_printf(fc->errmsg, "%s: unknown key '%s'", fc->path, name);
            fc->rv = MR_ECONFIG;
            return 0;
        }
        fc->rv = set_from_lua(fc->cfg, d, L, lua_gettop(L), fc->path, fc->errmsg);
        if (fc->rv != 0) return 0;
        lua_pop(L, 1);
    }
    return 0;
}

static int read_all(const char *path, char **out, size_t *len, char *errmsg)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        mr_errmsg_printf(errmsg, "cannot open config file %s: %s", path, strerror(errno));
        return MR_ECONFIG;
    }
    size_t cap = 4096, n = 0, r;
    char *buf = mr_malloc(cap);
    while (buf != NULL && (r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            char *nb = cap > (16u << 20) ? NULL : mr_realloc(buf, cap * 2);
            if (nb == NULL) {
                mr_free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf == NULL) {
        mr_errmsg_printf(errmsg, "config file %s: too large or out of memory", path);
        return MR_ECONFIG;
    }
    *out = buf;
    *len = n;
    return 0;
}

int mr_cfg_load_file(struct mr_cfg *cfg, const char *path, char *errmsg)
{
    char *src;
    size_t len;
    int rv = read_all(path, &src, &len, errmsg);
    if (rv != 0) return rv;
    struct file_ctx fc = {cfg, path, errmsg, 0, 0};
    lua_State *L = lua_newstate(cfg_alloc, &fc);
    if (L == NULL) {
        mr_free(src);
        mr_errmsg_printf(errmsg, "config file %s: out of memory", path);
        return MR_ENOMEM;
    }
    lua_pushcfunction(L, open_sandbox);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
        mr_errmsg_printf(errmsg, "config file %s: %s", path, lua_tostring(L, -1));
        rv = MR_ECONFIG;
        goto out;
    }
    lua_pushfstring(L, "@%s", path);
    if (luaL_loadbufferx(L, src, len, lua_tostring(L, -1), "t") != LUA_OK) {
        /* the message already reads "path:line: ..." */
        mr_errmsg_printf(errmsg, "%s", lua_tostring(L, -1));
        rv = MR_ECONFIG;
        goto out;
    }
    lua_remove(L, -2);
    lua_sethook(L, cfg_hook, LUA_MASKCOUNT, CFG_LUA_INSTRUCTIONS);
    if (lua_pcall(L, 0, 1, 0) != LUA_OK) {
        mr_errmsg_printf(errmsg, "%s",
                         lua_isstring(L, -1) ? lua_tostring(L, -1)
                                             : "error object is not a string");
        rv = MR_ECONFIG;
        goto out;
    }
    /* A fresh budget, not none: reading the table can run the file's own
     * metamethods (__index on a missing field). (__gc finalizers, which run
     * with hooks off, are refused by l_setmetatable.) */
    lua_sethook(L, cfg_hook, LUA_MASKCOUNT, CFG_LUA_INSTRUCTIONS);
    if (!lua_istable(L, -1)) {
        mr_errmsg_printf(errmsg, "%s: the file must return a table (it returned %s)",
                         path, lua_type_of(L, -1));
        rv = MR_ECONFIG;
        goto out;
    }
    char *cp = mr_strdup(path);
    if (cp == NULL) {
        rv = MR_ENOMEM;
        mr_errmsg_printf(errmsg, "out of memory");
        goto out;
    }
    mr_free(cfg->config_path);
    cfg->config_path = cp;
    lua_pushcfunction(L, apply_table);
    lua_insert(L, -2);
    lua_pushlightuserdata(L, &fc);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
        mr_errmsg_printf(errmsg, "%s: %s", path, lua_tostring(L, -1));
        rv = MR_ECONFIG;
        goto out;
    }
    rv = fc.rv;
out:
    lua_close(L);
    mr_free(src);
    return rv;
}

/* ---- flags
 * ------------------------------------------------------------------------------ */

static int parse_i64(const char *s, int64_t *v)
{
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0') return 0;
    *v = x;
    return 1;
}

static int set_from_flag(struct mr_cfg *cfg, const struct keydesc *d, const char *val,
                         const char *flag, char *errmsg)
{
    char where[96];
    int64_t v, v2;
    snprintf(where, sizeof where, "flag %s", flag);
    switch (d->kind) {
    case K_STR:
    case K_ID:
    case K_ADDR:
    case K_PATH:
    case K_TOKEN:
    case K_LOGLEVEL:
        return set_string(cfg, d, val, where, errmsg);
    case K_INT:
    case K_U64:
        if (!parse_i64(val, &v)) {
            mr_errmsg_printf(errmsg, "%s: %s: expected an integer, got \"%.64s\"", where,
                             d->name, val);
            return MR_ECONFIG;
        }
        return set_int(cfg, d, v, where, errmsg);
    case K_BOOL: {
        static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {
                                                                         "false", "no",
                                                                         "off", "0"};
        for (int i = 0; i < 4; i++) {
            if (strcmp(val, yes[i]) == 0 || strcmp(val, no[i]) == 0) {
                *(int *)(void *)((char *)cfg + d->off) = strcmp(val, yes[i]) == 0;
                return 0;
            }
        }
        mr_errmsg_printf(errmsg, "%s: %s: expected true or false, got \"%.64s\"", where,
                         d->name, val);
        return MR_ECONFIG;
    }
    case K_PEERS:
    case K_JOIN: {
        /* n1=host:port,n2=host:port (optionally n1=raft/http)  or  host:port,host:port */
        char *copy = mr_strdup(val), *save = NULL;
        int rv = 0;
        if (copy == NULL) return MR_ENOMEM;
        if (d->kind == K_PEERS)
            free_peers(cfg);
        else
            free_join(cfg);
        for (char *item = strtok_r(copy, ",", &save); item && rv == 0;
             item = strtok_r(NULL, ",", &save)) {
            if (d->kind == K_JOIN) {
                rv = add_join(cfg, item, where, errmsg);
                continue;
            }
            char *eq = strchr(item, '=');
            if (eq == NULL) {
                mr_errmsg_printf(errmsg,
                                 "%s: peers: expected id=host:port, got \"%.64s\"", where,
                                 item);
                rv = MR_ECONFIG;
                break;
            }
            *eq = '\0';
            char *slash = strchr(eq + 1, '/'); /* n1=raft_addr/http_addr */
            if (slash != NULL) *slash = '\0';
            rv = add_peer(cfg, item, eq + 1, slash ? slash + 1 : NULL, where, errmsg);
        }
        mr_free(copy);
        if (rv == 0 && (d->kind == K_PEERS ? cfg->n_peers : cfg->n_join) == 0) {
            mr_errmsg_printf(errmsg, "%s: %s: empty list", where, d->name);
            rv = MR_ECONFIG;
        }
        return rv;
    }
    case K_ETIMEOUT: {
        char a[32];
        const char *comma = strchr(val, ',');
        size_t n = comma ? (size_t)(comma - val) : 0;
        if (comma == NULL || n >= sizeof a) goto bad_et;
        memcpy(a, val, n);
        a[n] = '\0';
        if (!parse_i64(a, &v) || !parse_i64(comma + 1, &v2)) goto bad_et;
        return set_etimeout(cfg, d, v, v2, where, errmsg);
    bad_et:
        mr_errmsg_printf(errmsg, "%s: %s: expected MIN,MAX in ms, got \"%.64s\"", where,
                         d->name, val);
        return MR_ECONFIG;
    }
    }
    return MR_ECONFIG;
}

/* "--data-dir" -> "data_dir" in buf; NULL if not a --flag. */
static const char *flag_to_key(const char *arg, char *buf, size_t buflen)
{
    if (strncmp(arg, "--", 2) != 0) return NULL;
    size_t i = 0;
    for (const char *p = arg + 2; *p && *p != '=' && i + 1 < buflen; p++)
        buf[i++] = *p == '-' ? '_' : *p;
    buf[i] = '\0';
    return buf;
}

int mr_cfg_parse_args(struct mr_cfg *cfg, int argc, char **argv, char *errmsg)
{
    char name[64];
    int rv;
    /* --config first, so that flags override the file whatever their order. */
    for (int i = 1; i < argc; i++) {
        const char *val = NULL;
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                mr_errmsg_printf(errmsg, "flag --config: missing value");
                return MR_ECONFIG;
            }
            val = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            val = argv[i] + 9;
        }
        if (val != NULL && (rv = mr_cfg_load_file(cfg, val, errmsg)) != 0) return rv;
    }
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            cfg->is_help = 1;
            return 0;
        }
        if (strcmp(arg, "--version") == 0) {
            cfg->is_version = 1;
            return 0;
        }
        if (strcmp(arg, "--print-config") == 0) {
            cfg->is_dump = 1;
            continue;
        }
        if (flag_to_key(arg, name, sizeof name) == NULL) {
            mr_errmsg_printf(
                errmsg, "unexpected argument \"%.64s\" (flags look like --id n1)", arg);
            return MR_ECONFIG;
        }
        const char *eq = strchr(arg, '=');
        const char *val;
        if (eq != NULL) {
            val = eq + 1;
        } else {
            if (i + 1 >= argc) {
                mr_errmsg_printf(errmsg, "flag %s: missing value", arg);
                return MR_ECONFIG;
            }
            val = argv[++i];
        }
        if (strcmp(name, "config") == 0) continue;
        const struct keydesc *d = find_key(name);
        if (d == NULL) {
            const char *hint = suggest_key(name);
            if (hint != NULL) {
                char flag[64];
                size_t k = 0;
                for (; hint[k] && k + 1 < sizeof flag; k++) flag[k] = hint[k] == '_' ? '-' : hint[k];
                flag[k] = '\0';
                mr_errmsg_printf(errmsg, "unknown flag --%.48s (did you mean --%s?)", arg + 2, flag);
            } else {
                mr_errmsg_printf(errmsg, "unknown flag --%.48s (see --help)", arg + 2);
            }
            return MR_ECONFIG;
        }
        if ((rv = set_from_flag(cfg, d, val, arg, errmsg)) != 0) return rv;
    }
    return mr_cfg_validate(cfg, errmsg);
}

/* ---- validation
 * ---------------------------------------------------------------------------- */

static int fill(char **p, const char *s, char *errmsg)
{
    if (*p != NULL) return 0;
    if ((*p = mr_strdup(s)) == NULL) {
        mr_errmsg_printf(errmsg, "out of memory");
        return MR_ENOMEM;
    }
    return 0;
}

int mr_cfg_validate(struct mr_cfg *cfg, char *errmsg)
{
    int rv;
    if (cfg->id == NULL) {
        mr_errmsg_printf(errmsg, "id: required (set id in the config file or pass --id)");
        return MR_ECONFIG;
    }
    if (!id_ok(cfg->id)) {
        mr_errmsg_printf(errmsg, "id: %s", ID_HINT);
        return MR_ECONFIG;
    }
    const struct mr_cfg_peer *self = NULL;
    for (size_t i = 0; i < cfg->n_peers; i++) {
        if (strcmp(cfg->peers[i].id, cfg->id) == 0) self = &cfg->peers[i];
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->peers[i].raft_addr, cfg->peers[j].raft_addr) == 0) {
                mr_errmsg_printf(errmsg, "peers: %s and %s share the raft address %s",
                                 cfg->peers[j].id, cfg->peers[i].id,
                                 cfg->peers[i].raft_addr);
                return MR_ECONFIG;
            }
    }
    if (cfg->n_peers > 0 && self == NULL) {
        mr_errmsg_printf(errmsg, "peers: must include this node's id \"%s\"", cfg->id);
        return MR_ECONFIG;
    }
    if (self != NULL) {
        if (cfg->raft_addr != NULL && strcmp(cfg->raft_addr, self->raft_addr) != 0) {
            mr_errmsg_printf(errmsg, "raft_addr: %s differs from peers.%s (%s)",
                             cfg->raft_addr, cfg->id, self->raft_addr);
            return MR_ECONFIG;
        }
        if ((rv = fill(&cfg->raft_addr, self->raft_addr, errmsg)) != 0) return rv;
        if (self->http_addr && (rv = fill(&cfg->http_addr, self->http_addr, errmsg)) != 0)
            return rv;
    }
    if ((rv = fill(&cfg->raft_addr, "127.0.0.1:7001", errmsg)) != 0) return rv;
    if ((rv = fill(&cfg->http_addr, "127.0.0.1:8001", errmsg)) != 0) return rv;
    if (cfg->data_dir == NULL) {
        char dir[MR_CFG_ID_MAX + 8];
        snprintf(dir, sizeof dir, "data/%s", cfg->id);
        if ((rv = fill(&cfg->data_dir, dir, errmsg)) != 0) return rv;
    }
    if (!addr_ok(cfg->raft_addr)) {
        mr_errmsg_printf(errmsg, "raft_addr: %s", ADDR_HINT);
        return MR_ECONFIG;
    }
    if (!addr_ok(cfg->http_addr)) {
        mr_errmsg_printf(errmsg, "http_addr: %s", ADDR_HINT);
        return MR_ECONFIG;
    }
    if (strcmp(cfg->raft_addr, cfg->http_addr) == 0) {
        mr_errmsg_printf(errmsg, "http_addr: must differ from raft_addr (%s)",
                         cfg->raft_addr);
        return MR_ECONFIG;
    }
    if (cfg->n_peers > 0 && cfg->bootstrap_expect > 0) {
        mr_errmsg_printf(errmsg, "bootstrap_expect: cannot be combined with peers "
                                 "(peers already fixes the membership)");
        return MR_ECONFIG;
    }
    if (cfg->n_peers > 0 && cfg->n_join > 0) {
        mr_errmsg_printf(errmsg, "join: cannot be combined with peers (use one of them)");
        return MR_ECONFIG;
    }
    if (cfg->heartbeat_ms < 1) {
        mr_errmsg_printf(errmsg, "heartbeat_ms: must be >= 1");
        return MR_ECONFIG;
    }
    if (cfg->election_timeout_min_ms <= cfg->heartbeat_ms) {
        mr_errmsg_printf(errmsg,
                         "election_timeout_ms: min (%d) must be above heartbeat_ms (%d); "
                         "ten times the heartbeat is typical",
                         cfg->election_timeout_min_ms, cfg->heartbeat_ms);
        return MR_ECONFIG;
    }
    if (cfg->election_timeout_max_ms <= cfg->election_timeout_min_ms) {
        mr_errmsg_printf(errmsg, "election_timeout_ms: max (%d) must be above min (%d)",
                         cfg->election_timeout_max_ms, cfg->election_timeout_min_ms);
        return MR_ECONFIG;
    }
    if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL)) {
        mr_errmsg_printf(errmsg, "%s: required with %s (TLS needs a certificate and its key)",
                         cfg->tls_cert == NULL ? "tls_cert" : "tls_key",
                         cfg->tls_cert == NULL ? "tls_key" : "tls_cert");
        return MR_ECONFIG;
    }
    if (cfg->tls_ca != NULL && cfg->tls_cert == NULL) {
        mr_errmsg_printf(errmsg, "tls_ca: needs tls_cert and tls_key (this node's own "
                                 "certificate)");
        return MR_ECONFIG;
    }
    if (cfg->tls_client_verify && cfg->tls_ca == NULL) {
        mr_errmsg_printf(errmsg, "tls_client_verify: needs tls_ca (the CA that signs the "
                                 "client certificates)");
        return MR_ECONFIG;
    }
    /* Client certificates come from the same tls_ca as the peers', so on the
     * peer port a client's certificate would pass for a node's: only the
     * cluster secret (net_hmac.c) then tells a member from a client. */
    if (cfg->tls_client_verify && (cfg->cluster_secret == NULL || !cfg->cluster_secret[0])) {
        mr_errmsg_printf(errmsg, "tls_client_verify: needs cluster_secret (clients' "
                                 "certificates come from tls_ca too, and would otherwise be "
                                 "accepted on the peer port)");
        return MR_ECONFIG;
    }
    if ((cfg->tls_admin_ou != NULL || cfg->tls_client_ou != NULL) && !cfg->tls_client_verify) {
        mr_errmsg_printf(errmsg, "%s: needs tls_client_verify = true",
                         cfg->tls_admin_ou != NULL ? "tls_admin_ou" : "tls_client_ou");
        return MR_ECONFIG;
    }
    return 0;
}

static int str_differs(const char *a, const char *b)
{
    if (a == NULL || b == NULL) return a != b;
    return strcmp(a, b) != 0;
}

static int peers_differ(const struct mr_cfg *a, const struct mr_cfg *b)
{
    if (a->n_peers != b->n_peers) return 1;
    for (size_t i = 0; i < a->n_peers; i++) {
        if (str_differs(a->peers[i].id, b->peers[i].id) ||
            str_differs(a->peers[i].raft_addr, b->peers[i].raft_addr) ||
            str_differs(a->peers[i].http_addr, b->peers[i].http_addr))
            return 1;
    }
    return 0;
}

static int join_differs(const struct mr_cfg *a, const struct mr_cfg *b)
{
    if (a->n_join != b->n_join) return 1;
    for (size_t i = 0; i < a->n_join; i++)
        if (str_differs(a->join[i], b->join[i])) return 1;
    return 0;
}

void mr_cfg_diff(const struct mr_cfg *a, const struct mr_cfg *b,
                 void (*cb)(void *data, const char *key), void *data)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct keydesc *d = &keys[i];
        const void *pa = (const char *)a + d->off, *pb = (const char *)b + d->off;
        int differs = 0;
        switch (d->kind) {
        case K_STR:
        case K_ID:
        case K_ADDR:
        case K_PATH:
        case K_TOKEN:
            differs = str_differs(*(char *const *)pa, *(char *const *)pb);
            break;
        case K_INT:
        case K_BOOL:
            differs = *(const int *)pa != *(const int *)pb;
            break;
        case K_U64:
            differs = *(const uint64_t *)pa != *(const uint64_t *)pb;
            break;
        case K_LOGLEVEL:
            differs = a->log_level != b->log_level;
            break;
        case K_ETIMEOUT:
            differs = a->election_timeout_min_ms != b->election_timeout_min_ms ||
                      a->election_timeout_max_ms != b->election_timeout_max_ms;
            break;
        case K_PEERS:
            differs = peers_differ(a, b);
            break;
        case K_JOIN:
            differs = join_differs(a, b);
            break;
        }
        if (differs) cb(data, d->name);
    }
}

/* ---- help and dump
 * ------------------------------------------------------------------------- */

void mr_cfg_usage(FILE *out)
{
    fprintf(
        out,
        "usage: moonraft [--config FILE] [--KEY VALUE ...]\n\n"
        "Flags override keys of the config file (a Lua file returning a table;\n"
        "see conf/node1.lua). Every key has a flag: heartbeat_ms is --heartbeat-ms.\n\n"
        "  --config FILE          load this config file first\n"
        "  --print-config         print the effective configuration and exit\n"
        "  --help, --version\n");
    for (size_t i = 0; i < N_KEYS; i++) {
        char flag[64];
        size_t j = 0;
        for (const char *p = keys[i].name; *p && j + 1 < sizeof flag; p++)
            flag[j++] = *p == '_' ? '-' : *p;
        flag[j] = '\0';
        fprintf(out, "  --%-24s %s\n", flag, keys[i].help);
    }
}

static void dump_str(FILE *out, const char *k, const char *v, int secret)
{
    if (v == NULL)
        fprintf(out, "  -- %s = nil,\n", k);
    else if (secret)
        fprintf(out, "  %s = \"<set>\",\n", k);
    else
        fprintf(out, "  %s = \"%s\",\n", k, v);
}

void mr_cfg_dump(FILE *out, const struct mr_cfg *cfg)
{
    fprintf(out, "return {\n");
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct keydesc *d = &keys[i];
        const void *p = (const char *)cfg + d->off;
        switch (d->kind) {
        case K_STR:
        case K_ID:
        case K_ADDR:
        case K_PATH:
        case K_TOKEN:
            dump_str(out, d->name, *(char *const *)p, d->kind == K_TOKEN);
            break;
        case K_INT:
            if (*(const int *)p == 0 && d->min > 0)
                fprintf(out, "  -- %s = nil,\n", d->name);
            else
                fprintf(out, "  %s = %d,\n", d->name, *(const int *)p);
            break;
        case K_U64:
            fprintf(out, "  %s = %llu,\n", d->name,
                    (unsigned long long)*(const uint64_t *)p);
            break;
        case K_BOOL:
            fprintf(out, "  %s = %s,\n", d->name, *(const int *)p ? "true" : "false");
            break;
        case K_LOGLEVEL:
            fprintf(out, "  %s = \"%s\",\n", d->name, level_names[cfg->log_level & 3]);
            break;
        case K_ETIMEOUT:
            fprintf(out, "  %s = {%d, %d},\n", d->name, cfg->election_timeout_min_ms,
                    cfg->election_timeout_max_ms);
            break;
        case K_PEERS:
            if (cfg->n_peers == 0) break;
            fprintf(out, "  peers = {\n");
            for (size_t j = 0; j < cfg->n_peers; j++) {
                const struct mr_cfg_peer *pe = &cfg->peers[j];
                if (pe->http_addr)
                    fprintf(out, "    [\"%s\"] = {raft = \"%s\", http = \"%s\"},\n",
                            pe->id, pe->raft_addr, pe->http_addr);
                else
                    fprintf(out, "    [\"%s\"] = \"%s\",\n", pe->id, pe->raft_addr);
            }
            fprintf(out, "  },\n");
            break;
        case K_JOIN:
            if (cfg->n_join == 0) break;
            fprintf(out, "  join = {");
            for (size_t j = 0; j < cfg->n_join; j++)
                fprintf(out, "%s\"%s\"", j ? ", " : "", cfg->join[j]);
            fprintf(out, "},\n");
            break;
        }
    }
    fprintf(out, "}\n");
}
