/* node: the moonraft server process. It wires the Raft core, storage, the
 * peer transport, the Lua state machine and the HTTP API onto one libuv
 * loop (DESIGN.md "The picture").
 *
 * Exit codes of mr_node_run: 0 clean shutdown (SIGINT/SIGTERM), 1 runtime
 * failure (cannot listen, disk failure at start...), 2 configuration error
 * (bad script, bad options), 3 corrupt data directory. */
#ifndef MR_NODE_H
#define MR_NODE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "util/util.h"

#define MR_NODE_NAME_MAX 64

enum { MR_NODE_EXIT_OK = 0, MR_NODE_EXIT_RUNTIME = 1, MR_NODE_EXIT_CONFIG = 2,
       MR_NODE_EXIT_CORRUPT = 3 };

/* A member known from the configuration (static peers). */
struct mr_node_peer {
    const char *name;      /* "n2" */
    const char *raft_addr; /* "127.0.0.1:7002" */
    const char *http_addr; /* may be NULL or "" when unknown */
};

/* Everything the node needs; strings are borrowed for the node's lifetime.
 * Zero numeric fields take the defaults given in brackets. */
struct mr_node_options {
    const char *name;          /* required: this node's id ("n1") */
    const char *data_dir;      /* required */
    const char *raft_addr;     /* required: peer port, "127.0.0.1:7001" */
    const char *raft_listen;   /* bind here instead of raft_addr [NULL] */
    const char *http_addr;     /* required: client port, "127.0.0.1:8001" */
    const char *state_machine; /* path of the Lua script [NULL: the built-in kv.lua] */
    /* Cluster formation (exactly one of these, or an existing data dir). */
    const struct mr_node_peer *peers; /* static: every node lists the same set */
    size_t n_peers;
    unsigned bootstrap_expect;        /* wait for this many members, then bootstrap */
    const char *const *join;          /* HTTP addresses of members to join through */
    size_t n_join;
    /* Timing */
    unsigned heartbeat_ms;            /* [50] */
    unsigned election_min_ms;         /* [300] */
    unsigned election_max_ms;         /* [600] */
    unsigned request_timeout_ms;      /* [5000] wait for a commit before 504 */
    /* Snapshots */
    uint64_t snapshot_entries;        /* [10000] applied entries between snapshots */
    uint64_t snapshot_trailing;       /* [1000] entries kept in the log after one */
    uint64_t snapshot_log_mb;         /* [32] or once the log holds this many MiB */
    uint64_t log_cache_bytes;         /* [0 = 8 MiB] payload bytes the in-memory log keeps;
                                       * older entries, durable and applied, are read back
                                       * from the WAL when a follower needs them (1: keep
                                       * none; UINT64_MAX: keep all) */
    uint64_t snapshot_log_percent;    /* [25] and log bytes >= this % of the last one */
    uint64_t snapshot_log_percent_small; /* [100] or this %, while under snapshot_log_mb */
    /* Integrity checks (node_integrity.c) */
    uint64_t integrity_check_entries; /* [100000] entries between checks; 0 = off */
    int integrity_resync;             /* a diverged member reinstalls a snapshot [1] */
    /* Limits */
    size_t max_body_bytes;            /* [1 MiB] */
    size_t max_header_bytes;          /* [16 KiB] */
    uint32_t http_idle_timeout_ms;    /* [60000] */
    uint32_t max_connections;         /* [10000] */
    unsigned max_append_entries;      /* [256] */
    unsigned max_inflight;            /* [256] */
    uint64_t idempotency_window;      /* [100000] log entries a key is remembered */
    /* Lua */
    uint64_t lua_instruction_budget;  /* [sm default] */
    uint64_t lua_memory_bytes;        /* [sm default] */
    /* Storage */
    uint32_t wal_segment_bytes;       /* [64 MiB] */
    uint64_t max_data_bytes;          /* [0 = none] quota on data_dir (node_disk.c) */
    /* Security (NULL or "" = off). Never logged. */
    const char *client_token;
    const char *admin_token;
    const char *cluster_secret;
    const char *cluster_id;           /* ["moonraft"] */
    /* TLS (docs/operations.md "TLS"): with tls_cert and tls_key, HTTPS on
     * http_addr and TLS on raft_addr. NULL = off. */
    const char *tls_cert;
    const char *tls_key;
    const char *tls_ca;               /* verifies peers (and clients) */
    int tls_peer_verify;              /* peers need a tls_ca certificate [1 with tls_ca] */
    int tls_client_verify;            /* HTTPS clients need one too [0] */
    const char *tls_admin_ou;         /* client cert OU that acts as the admin token */
    const char *tls_client_ou;        /* ... as the client token */
    /* SIGHUP (node_reload.c) re-parses this command line (config file and
     * flags, as at startup) and applies what can change while running.
     * reload_argc 0: SIGHUP only logs that there is nothing to reload. The
     * array must outlive mr_node_run. */
    int reload_argc;
    char **reload_argv;
    /* Raft features */
    int pre_vote;                     /* 1/0; -1 = default (on) */
    int check_quorum;                 /* 1/0; -1 = default (on) */
    int lease_reads;                  /* allow consistency=lease [0] */
    const char *log_level;            /* "debug" "info" "warn" "error" ["info"] */
    /* Test hook for the chaos suite: serve linearizable reads from local state
     * without ReadIndex (a deliberate bug the checker must catch). */
    int unsafe_local_reads;
    /* Test hook (MOONRAFT_FAULT_SM_SALT): apply sees ctx.fault_salt = this
     * text, so a test script can diverge on one node on purpose. */
    const char *fault_sm_salt;
    uint64_t fault_sm_salt_until; /* only for entries up to this index (0: all) */
};

/* Runs a node until SIGINT/SIGTERM. Returns an exit code (see above). */
int mr_node_run(const struct mr_node_options *opts);

/* `moonraft replay DATA_DIR --script NEW.lua [--original OLD.lua]
 *  [--instruction-budget N] [--memory-mb N]` (node_replay.c): replays a
 * stopped node's newest snapshot and log (or a copy of them: a backup)
 * offline through a candidate script, next to the script the log ran, and
 * reports per command whether results and emitted events agree, the first
 * index where they differ (with both results), the errors each raised and
 * both final state hashes. argv[0] is "replay". Refuses a directory a running
 * node holds (its lock). Returns 0 when every result, event and the final
 * state agree, 1 when something differs, 2 for usage or data errors. */
int mr_node_replay_main(int argc, char **argv, FILE *out, FILE *err);

/* Backups and disasters (node_backup_tool.c, docs/operations.md). Each
 * takes its subcommand's arguments (argv[0] is the subcommand name), prints
 * results to `out` and errors to `err`, and returns the exit code: 0 ok,
 * 1 error, 2 usage (or a refusal by design), 3 corrupt input.
 *   `moonraft backup host:port FILE [--token T] [--max-lag N]` saves GET
 *   /v1/backup to FILE (through FILE.part, checked before the rename) and
 *   prints index, term, size, checksum, membership and state hash. */
int mr_node_backup_main(int argc, char **argv, FILE *out, FILE *err);
/*   `moonraft data restore FILE --data-dir DIR --id ID --peers ID=R/H,...
 *   --cluster-id NAME`: seeds an empty DIR from a backup for a new cluster
 *   (mr_store_backup_restore); NAME must differ from the source's. */
int mr_node_restore_main(int argc, char **argv, FILE *out, FILE *err);
/*   `moonraft data recover DIR --force-new-cluster`: makes a stopped node a
 *   one-member cluster (mr_store_force_new_cluster); refuses without the
 *   flag and while a node runs on DIR. */
int mr_node_recover_main(int argc, char **argv, FILE *out, FILE *err);

#endif
