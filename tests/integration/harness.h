/* Integration test harness: real `moonraft` processes on loopback.
 *
 * Starts nodes on free 127.0.0.1 ports with temp data dirs, talks HTTP to
 * them, and always stops what it started (by PID) in teardown. Responses are
 * JSON; mr_it_jq() evaluates a Lua expression over the decoded body (its answer
 * lives in a per-thread buffer until the next call). */
#ifndef MR_IT_HARNESS_H
#define MR_IT_HARNESS_H

#include <stddef.h>
#include <sys/types.h>

#define MR_IT_MAX_NODES 7

struct mr_it_node {
    char name[16];
    int raft_port;
    int http_port;
    char data_dir[300];
    char log_path[320];
    pid_t pid; /* 0 when not running */
    int paused;
    char powerloss_dir[320]; /* non-empty: started with MOONRAFT_FAULT_POWERLOSS */
    int slow_sync_ms;        /* with it: MOONRAFT_FAULT_SLOW_SYNC_MS (a slow disk) */
};

struct mr_it_cluster {
    char root[256]; /* temp dir holding every node's data dir */
    int n;
    struct mr_it_node nodes[MR_IT_MAX_NODES];
    char extra_args[512]; /* appended to every node's command line */
};

struct mr_it_resp {
    int status; /* 0 if the request failed at the transport level */
    int not_sent; /* 1 if it failed before a byte could be sent (no connection) */
    char *body; /* NUL-terminated, owned; free with mr_it_resp_free */
    size_t len;
    char retry_after[32];
};

/* Create a cluster description of n nodes (n1..nN) with free ports and a temp
 * root dir; nothing is started. */
void mr_it_cluster_init(struct mr_it_cluster *c, int n);
/* Stops every node still running (SIGTERM, SIGKILL after 10 s), checks every
 * node's log for sanitizer reports, removes the temp dir unless MR_IT_KEEP is
 * set. Returns the number of problems (nonzero exit on SIGTERM, sanitizer
 * reports): teardowns return it so cmocka fails the test. */
int mr_it_cluster_destroy(struct mr_it_cluster *c);

/* Start node i with a static peer list of all n nodes. `extra` is appended
 * (may be NULL). Returns the pid. */
pid_t mr_it_start_static(struct mr_it_cluster *c, int i, const char *extra);
/* Start node i with arbitrary flags after --id/--data-dir/--raft-addr/--http-addr. */
pid_t mr_it_start_args(struct mr_it_cluster *c, int i, const char *args);
/* SIGTERM then wait (up to 10 s, then SIGKILL). Returns the exit status. */
int mr_it_stop(struct mr_it_cluster *c, int i);
/* SIGKILL and reap. */
void mr_it_kill9(struct mr_it_cluster *c, int i);
/* From the next start on, node i runs with the power-loss layer
 * (MOONRAFT_FAULT_POWERLOSS=<root>/<name>.img): its durable image is kept
 * beside its data dir. Call before its first start. */
void mr_it_powerloss_enable(struct mr_it_cluster *c, int i);
/* A power cut of node i: SIGKILL (if running), reap, then rewrite its data
 * dir to its durable image (mr_store_powerloss_cut). Returns 0, or the
 * error (printed) if the node had no image or the rewrite failed. */
int mr_it_powercut(struct mr_it_cluster *c, int i);
void mr_it_pause(struct mr_it_cluster *c, int i);
void mr_it_resume(struct mr_it_cluster *c, int i);
/* Wait for a node process to exit on its own; returns its exit code, or -1
 * on timeout (the process is left running). */
int mr_it_wait_exit(struct mr_it_cluster *c, int i, int timeout_ms);

/* HTTP to node i. body may be NULL. headers: extra header lines, each ending
 * with \r\n, or NULL. */
struct mr_it_resp mr_it_http(struct mr_it_cluster *c, int i, const char *method,
                             const char *path, const char *body, const char *headers);
/* HTTP to an arbitrary 127.0.0.1 port. */
struct mr_it_resp mr_it_http_port(int port, const char *method, const char *path,
                                  const char *body, const char *headers, int timeout_ms);
void mr_it_resp_free(struct mr_it_resp *r);
/* From now on every mr_it_http* request speaks HTTPS, verifying the node's
 * certificate against `ca` (and IP 127.0.0.1), presenting cert/key when
 * given (both may be NULL). ca NULL: plaintext again. 0, or -1 when a file
 * does not load. */
int mr_it_set_tls(const char *ca, const char *cert, const char *key);

/* Evaluate `expr` (Lua, with the decoded JSON body bound to `j`) and return
 * the result converted with tostring(), in a static buffer. NULL-safe fields:
 * missing paths give "nil". Returns "<invalid json>" on decode failure. */
const char *mr_it_jq(const char *json, const char *expr);

/* Poll /v1/status on the running nodes until one says it is leader (and all
 * running nodes agree, if `all_agree`). Returns its index, or -1. */
int mr_it_wait_leader(struct mr_it_cluster *c, int timeout_ms, int all_agree);
/* Monotonic milliseconds. */
long long mr_it_now_ms(void);
void mr_it_sleep_ms(int ms);
/* Polls /v1/status?hash=true on every running node until they all report the
 * same applied index with a state hash (at most timeout_ms), prints each
 * node's applied index and hash to stderr, and returns 1 if the hashes are
 * equal too, else 0. hash_out (65 bytes) and applied_out may be NULL. */
int mr_it_same_state(struct mr_it_cluster *c, int timeout_ms, char hash_out[65],
                     long long *applied_out);
/* `expr` (as mr_it_jq) over node i's GET /v1/status, or "<down>" if it did
 * not answer 200; a static buffer (per thread), valid until the next call. */
const char *mr_it_status(struct mr_it_cluster *c, int i, const char *expr);
/* Polls /v1/status?hash=true on node i until it reports a state hash (null
 * while its apply thread is busy, by contract) and copies it to hash_out (65
 * bytes); applied_out (may be NULL) gets the applied index the hash is at.
 * Returns 1, or 0 after timeout_ms (hash_out is then ""). */
int mr_it_state_hash(struct mr_it_cluster *c, int i, int timeout_ms, char hash_out[65],
                     long long *applied_out);
/* POST /v1/snapshot on node i (waiting while an automatic one runs), then
 * waits until its snapshot_index reaches the applied index it reported.
 * Returns that index, or -1. `headers` as for mr_it_http (an admin token). */
long long mr_it_snapshot(struct mr_it_cluster *c, int i, const char *headers);
/* Fails the cmocka test (dumping the logs) unless resp has status want. */
#define MR_IT_EXPECT_STATUS(c, resp, want)                                         \
    do {                                                                           \
        if ((resp).status != (want)) {                                             \
            fprintf(stderr, "line %d: status %d (want %d), body: %s\n", __LINE__, \
                    (resp).status, (want), (resp).body);                           \
            mr_it_dump_logs(c);                                                    \
            fail();                                                                \
        }                                                                          \
    } while (0)
/* Dump the tail of each node's log to stderr (called on failure). */
void mr_it_dump_logs(struct mr_it_cluster *c);

#endif
