/* moonraft: the command-line entry point.
 *
 *   moonraft [--config FILE] [flags]     run a node (SIGHUP reloads FILE)
 *   moonraft console [host:port] ...     interactive Lua console over HTTP
 *   moonraft deploy FILE [host:port]     deploy a new state machine script
 *   moonraft replay DIR --script NEW.lua try a script on a stopped node's log
 *   moonraft data verify|dump DIR        inspect a data directory
 *   moonraft backup [https://]host:port FILE   online backup of a running node
 *   moonraft data restore FILE ...       seed a new cluster from a backup
 *   moonraft data recover DIR --force-new-cluster   after a permanent quorum loss
 *   moonraft data powercut DIR IMAGE     tests: rewrite DIR to its durable image
 *   moonraft --help | --version */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "console/console.h"
#include "node/node.h"
#include "storage/storage.h"

/* jemalloc's build-time options, read at its first allocation (the binary
 * links jemalloc statically unless MR_JEMALLOC=OFF; glibc ignores this). One
 * arena: a node has three busy threads, each with its own thread cache, and
 * every extra arena costs idle memory (docs/performance.md). */
const char *malloc_conf = "narenas:1";

static const char *level_name(int l)
{
    switch (l) {
    case MR_CFG_LOG_DEBUG:
        return "debug";
    case MR_CFG_LOG_WARN:
        return "warn";
    case MR_CFG_LOG_ERROR:
        return "error";
    default:
        return "info";
    }
}

static void usage(FILE *out)
{
    fprintf(out,
            "moonraft %s: a Raft node whose state machine is a Lua script\n\n"
            "usage:\n"
            "  moonraft --config conf/node1.lua [flags]   run a node\n"
            "  moonraft [flags]                           run a node from flags alone\n"
            "  moonraft console [[https://]host:port] [-e CODE | SCRIPT.lua]\n"
            "                                             Lua console over the HTTP API\n"
            "  moonraft deploy FILE [host:port] [--label L] [--token T]\n"
            "                                             run FILE as the cluster's new script\n"
            "  moonraft replay DIR --script NEW.lua [--original OLD.lua]\n"
            "                                             replay a stopped node's log through\n"
            "                                             NEW.lua and compare (0 same, 1 differs)\n"
            "  moonraft data verify DIR                   check every checksum of a data dir\n"
            "  moonraft data dump DIR                     print the log entries\n"
            "  moonraft backup [https://]host:port FILE [--token T] [--max-lag N]\n"
            "                                             save an online backup of a member\n"
            "  moonraft data restore FILE --data-dir DIR --id ID --peers ID=RAFT/HTTP,...\n"
            "                        --cluster-id NAME    seed a new cluster from a backup\n"
            "  moonraft data recover DIR --force-new-cluster\n"
            "                                             UNSAFE: after a permanent loss of\n"
            "                                             quorum, make DIR's node a one-member\n"
            "                                             cluster (docs/operations.md)\n\n"
            "node options (flags override the config file):\n",
            MR_VERSION);
    mr_cfg_usage(out);
}

static int run_node(int argc, char **argv)
{
    struct mr_cfg cfg;
    struct mr_node_options o;
    struct mr_node_peer *peers = NULL;
    char err[MR_ERRMSG_SIZE] = "";
    size_t i;
    int rv;

    mr_cfg_defaults(&cfg);
    rv = mr_cfg_parse_args(&cfg, argc, argv, err);
    if (rv == 0 && cfg.is_help) {
        usage(stdout);
        mr_cfg_free(&cfg);
        return 0;
    }
    if (rv == 0 && cfg.is_version) {
        printf("moonraft %s\n", MR_VERSION);
        mr_cfg_free(&cfg);
        return 0;
    }
    if (rv == 0) rv = mr_cfg_validate(&cfg, err);
    if (rv != 0) {
        fprintf(stderr, "moonraft: configuration error: %s\n", err);
        fprintf(stderr, "moonraft: run 'moonraft --help' for the flags\n");
        mr_cfg_free(&cfg);
        return MR_NODE_EXIT_CONFIG;
    }
    if (cfg.is_dump) {
        mr_cfg_dump(stdout, &cfg);
        mr_cfg_free(&cfg);
        return 0;
    }
    memset(&o, 0, sizeof o);
    o.name = cfg.id;
    o.data_dir = cfg.data_dir;
    o.raft_addr = cfg.raft_addr;
    o.raft_listen = cfg.raft_listen;
    o.cluster_id = cfg.cluster_id;
    o.http_addr = cfg.http_addr;
    o.state_machine = cfg.state_machine;
    if (cfg.n_peers > 0) {
        peers = calloc(cfg.n_peers, sizeof *peers);
        if (peers == NULL) {
            mr_cfg_free(&cfg);
            return MR_NODE_EXIT_RUNTIME;
        }
        for (i = 0; i < cfg.n_peers; i++) {
            peers[i].name = cfg.peers[i].id;
            peers[i].raft_addr = cfg.peers[i].raft_addr;
            peers[i].http_addr = cfg.peers[i].http_addr;
        }
    }
    o.peers = peers;
    o.n_peers = cfg.n_peers;
    o.bootstrap_expect = cfg.bootstrap_expect > 0 ? (unsigned)cfg.bootstrap_expect : 0;
    o.join = (const char *const *)cfg.join;
    o.n_join = cfg.n_join;
    o.heartbeat_ms = (unsigned)cfg.heartbeat_ms;
    o.election_min_ms = (unsigned)cfg.election_timeout_min_ms;
    o.election_max_ms = (unsigned)cfg.election_timeout_max_ms;
    o.request_timeout_ms = (unsigned)cfg.request_timeout_ms;
    o.snapshot_entries = cfg.snapshot_entries;
    o.snapshot_trailing = cfg.snapshot_trailing;
    o.snapshot_log_percent = cfg.snapshot_log_percent;
    o.snapshot_log_percent_small = cfg.snapshot_log_percent_small;
    o.snapshot_log_mb = cfg.snapshot_log_mb;
    o.log_cache_bytes = cfg.log_cache_mb > 0 ? cfg.log_cache_mb << 20 : 1; /* 1: none */
    o.integrity_check_entries = cfg.integrity_check_entries;
    o.integrity_resync = cfg.integrity_resync;
    o.fault_sm_salt = getenv("MOONRAFT_FAULT_SM_SALT");
    if (getenv("MOONRAFT_FAULT_SM_SALT_UNTIL") != NULL)
        o.fault_sm_salt_until = strtoull(getenv("MOONRAFT_FAULT_SM_SALT_UNTIL"), NULL, 10);
    o.max_body_bytes = (size_t)cfg.max_body_bytes;
    o.max_header_bytes = (size_t)cfg.max_header_bytes;
    o.http_idle_timeout_ms = (uint32_t)cfg.http_idle_timeout_ms;
    o.max_connections = (uint32_t)cfg.max_connections;
    o.max_append_entries = (unsigned)cfg.max_append_entries;
    o.max_inflight = (unsigned)cfg.max_inflight;
    o.lua_instruction_budget = cfg.lua_instruction_budget;
    o.lua_memory_bytes = cfg.lua_memory_mb << 20;
    o.wal_segment_bytes = (uint32_t)(cfg.wal_segment_mb << 20);
    o.max_data_bytes = cfg.max_data_mb << 20;
    o.client_token = cfg.client_token;
    o.admin_token = cfg.admin_token;
    o.cluster_secret = cfg.cluster_secret;
    o.pre_vote = cfg.pre_vote;
    o.check_quorum = cfg.check_quorum;
    o.lease_reads = cfg.lease_reads;
    o.log_level = level_name(cfg.log_level);
    o.unsafe_local_reads = getenv("MOONRAFT_UNSAFE_LOCAL_READS") != NULL;
    o.tls_cert = cfg.tls_cert;
    o.tls_key = cfg.tls_key;
    o.tls_ca = cfg.tls_ca;
    o.tls_peer_verify = cfg.tls_peer_verify;
    o.tls_client_verify = cfg.tls_client_verify;
    o.tls_admin_ou = cfg.tls_admin_ou;
    o.tls_client_ou = cfg.tls_client_ou;
    o.reload_argc = argc;
    o.reload_argv = argv;
    rv = mr_node_run(&o);
    free(peers);
    mr_cfg_free(&cfg);
    return rv;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "console") == 0) return mr_console_main(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "replay") == 0)
        return mr_node_replay_main(argc - 1, argv + 1, stdout, stderr);
    if (argc >= 2 && strcmp(argv[1], "deploy") == 0)
        return mr_console_deploy_main(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "backup") == 0)
        return mr_node_backup_main(argc - 1, argv + 1, stdout, stderr);
    if (argc >= 2 && strcmp(argv[1], "data") == 0) {
        if (argc < 3) {
            fprintf(stderr, "usage: moonraft data verify|dump DIR\n"
                            "       moonraft data restore FILE --data-dir DIR --id ID --peers "
                            "ID=RAFT/HTTP,... --cluster-id NAME\n"
                            "       moonraft data recover DIR --force-new-cluster\n"
                            "       moonraft data powercut DIR IMAGE   (tests: see docs/chaos.md)\n");
            return 2;
        }
        if (strcmp(argv[2], "restore") == 0)
            return mr_node_restore_main(argc - 2, argv + 2, stdout, stderr);
        if (strcmp(argv[2], "recover") == 0)
            return mr_node_recover_main(argc - 2, argv + 2, stdout, stderr);
        return mr_store_tool_main(argc - 2, argv + 2, stdout, stderr);
    }
    if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0)) {
        usage(stdout);
        return 0;
    }
    return run_node(argc, argv);
}
