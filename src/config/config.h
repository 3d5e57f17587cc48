/* config: the node's configuration, from a Lua file and command-line flags.
 *
 * A config file is plain Lua that returns a table (it may compute values;
 * `env("NAME")` returns an environment variable or nil). It runs in its own
 * small sandbox: base, string, table and math only, no file access, a 64 MiB
 * heap cap and an instruction budget. See conf/node1.lua for every key, its
 * type, default and range.
 *
 * Precedence: defaults < config file (--config FILE) < flags. Every key has a
 * flag spelled with dashes (heartbeat_ms -> --heartbeat-ms); see
 * mr_cfg_usage(). An unknown key or flag, a wrong type or an impossible value
 * is an MR_ECONFIG error whose message names the key; the node prints it and
 * exits with status 2.
 *
 * Relative paths (data_dir, state_machine) are relative to the node's current
 * directory, not to the config file. */
#ifndef MR_CONFIG_H
#define MR_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "util/util.h"

#define MR_CFG_ID_MAX 64 /* bytes in a node id, [A-Za-z0-9_.-] */

struct mr_cfg_peer {
    char *id;
    char *raft_addr; /* "host:port" */
    char *http_addr; /* "host:port" or NULL when not given */
};

enum mr_cfg_log_level {
    MR_CFG_LOG_DEBUG,
    MR_CFG_LOG_INFO,
    MR_CFG_LOG_WARN,
    MR_CFG_LOG_ERROR
};

/* Every string is owned by the struct (mr_strdup'd) and freed by mr_cfg_free;
 * a NULL string means "not set". Units are in the names. */
struct mr_cfg {
    char *config_path;   /* the file loaded, or NULL for flags only */
    char *id;            /* required */
    char *data_dir;      /* default "data/<id>" */
    char *raft_addr;     /* default: peers[id] if given, else "127.0.0.1:7001" */
    char *cluster_id;    /* NULL = "moonraft"; checked in handshakes and the data dir */
    char *raft_listen;   /* address to bind for peer traffic; NULL = raft_addr */
    char *http_addr;     /* default: peers[id].http if given, else "127.0.0.1:8001" */
    char *state_machine; /* NULL (default): the built-in kv.lua */

    /* How the cluster forms; at most one of peers and join/bootstrap_expect.
     * None of them is valid only for a node whose data_dir already holds
     * state: the node checks that. */
    struct mr_cfg_peer *peers; /* static membership, includes this node */
    size_t n_peers;
    int bootstrap_expect; /* 0 = not set; else wait for this many voters */
    char **join;          /* HTTP "host:port" addresses of existing members */
    size_t n_join;

    int heartbeat_ms;            /* default 50, 1..60000 */
    int election_timeout_min_ms; /* default 300, > heartbeat_ms */
    int election_timeout_max_ms; /* default 600, > min */
    int pre_vote;                /* bool, default 1 */
    int check_quorum;            /* bool, default 1 */
    int lease_reads;             /* bool, default 0 */
    int max_append_entries;      /* entries per AppendEntries, default 512 */
    int max_inflight;            /* pipelined AppendEntries per peer, default 64 */

    uint64_t
        snapshot_entries; /* snapshot after this many applied entries, default 10000 */
    uint64_t
        snapshot_trailing;   /* entries kept in the log after a snapshot, default 1000 */
    uint64_t snapshot_log_mb;      /* snapshot once the log since the last one holds
                                    * this many MiB, whatever the count; default 32 */
    uint64_t log_cache_mb;         /* MiB of entry payloads kept in memory, default 8;
                                    * 0 = none (older ones are read from the WAL) */
    uint64_t snapshot_log_percent; /* log bytes since the last snapshot, in % of its
                                    * size, before the next one; default 25, 0 = off */
    uint64_t snapshot_log_percent_small; /* or this % (default 100) while that log
                                          * stays under snapshot_log_mb */
    uint64_t integrity_check_entries; /* entries between state hash checks, default
                                       * 100000, 0 = off */
    int integrity_resync;             /* bool, default 1: a diverged member reinstalls
                                       * the leader's snapshot */
    uint64_t wal_segment_mb; /* default 64 */
    uint64_t max_data_mb;    /* quota on data_dir, 0 = none (default) */
    int fsync;               /* bool, default 1; 0 is for tests and benchmarks only */

    uint64_t max_body_bytes;   /* default 1 MiB */
    uint64_t max_header_bytes; /* default 16 KiB */
    int http_idle_timeout_ms;  /* default 60000 */
    int request_timeout_ms;    /* default 5000 */
    int max_connections;       /* default 1024 */

    char *client_token; /* Bearer token for /v1/command, /v1/query, /v1/kv; NULL = open */
    char *admin_token;  /* Bearer token for members, transfer, snapshot; NULL = open */
    char *cluster_secret; /* shared by peers to authenticate frames; NULL = none */

    uint64_t lua_instruction_budget; /* per apply/query, default 10,000,000 */
    uint64_t lua_memory_mb;          /* Lua heap cap, default 1024 */

    int log_level; /* enum mr_cfg_log_level, default info */

    /* TLS (docs/operations.md "TLS"): both ports when tls_cert/tls_key are
     * set. tls_peer_verify (default 1) matters only with tls_ca. */
    char *tls_cert;
    char *tls_key;
    char *tls_ca;
    int tls_peer_verify;   /* bool, default 1 */
    int tls_client_verify; /* bool, default 0; needs tls_ca */
    char *tls_admin_ou;    /* client certificate OU that grants admin; needs client verify */
    char *tls_client_ou;   /* client certificate OU that grants client access */

    int is_help;    /* --help was given: print mr_cfg_usage and exit 0 */
    int is_version; /* --version was given */
    int is_dump;    /* --print-config was given: print mr_cfg_dump and exit 0 */
};

/* Sets every field to its default (strings NULL). Call first. */
void mr_cfg_defaults(struct mr_cfg *cfg);

/* Frees every string and array; the struct may be reused after
 * mr_cfg_defaults. NULL-safe. */
void mr_cfg_free(struct mr_cfg *cfg);

/* Runs the Lua file `path` and applies its table over cfg. Errors:
 * MR_ECONFIG with errmsg naming the file and line (Lua errors) or the key
 * ("conf/node1.lua: heartbeat_ms: expected an integer, got string"). On error
 * cfg may hold some values from the file; free it as usual. */
int mr_cfg_load_file(struct mr_cfg *cfg, const char *path, char *errmsg);

/* Parses argv[1..argc-1]: finds --config FILE first and loads it, then
 * applies every other flag over it ("--key value" or "--key=value"), then
 * calls mr_cfg_validate. --help/--version/--print-config set is_help/
 * is_version/is_dump and skip validation for help and version. cfg must have
 * been through mr_cfg_defaults. Errors: MR_ECONFIG with errmsg naming the
 * flag or key. */
int mr_cfg_parse_args(struct mr_cfg *cfg, int argc, char **argv, char *errmsg);

/* Fills computed defaults (data_dir, raft_addr, http_addr; state_machine
 * stays NULL for the built-in kv.lua)
 * and checks types, ranges and consistency (peers include self, peers vs
 * bootstrap_expect/join are exclusive, addresses parse, election timeout
 * above the heartbeat, ...). Errors: MR_ECONFIG naming the key. */
int mr_cfg_validate(struct mr_cfg *cfg, char *errmsg);

/* Calls cb(data, key) once for every key whose value differs between a and
 * b, in key table order (for a reload: which keys changed). Key names are
 * static strings. Flags such as is_help are not keys. */
void mr_cfg_diff(const struct mr_cfg *a, const struct mr_cfg *b,
                 void (*cb)(void *data, const char *key), void *data);

/* Splits "host:port" ("[::1]:7001" for IPv6). host gets the host without
 * brackets (NUL-terminated, truncated to hostlen). Returns 0 or MR_EINVAL. */
int mr_cfg_parse_addr(const char *addr, char *host, size_t hostlen, int *port);

/* Help text for the flags. */
void mr_cfg_usage(FILE *out);

/* The effective configuration as a Lua table (tokens shown as "<set>"). */
void mr_cfg_dump(FILE *out, const struct mr_cfg *cfg);

#endif /* MR_CONFIG_H */
