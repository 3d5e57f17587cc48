/* Chaos runner: real moonraft processes behind a loopback proxy (proxy.h),
 * concurrent clients, seeded faults, and a linearizability check of the
 * recorded history (lincheck.h). */
#ifndef MR_CHAOS_H
#define MR_CHAOS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum mr_chaos_fault {
    MR_CF_KILL,         /* kill -9 a random node, restart it later */
    MR_CF_KILL_LEADER,  /* kill -9 the leader, restart it later */
    MR_CF_PAUSE,        /* SIGSTOP/SIGCONT a random node (> election timeout) */
    MR_CF_PAUSE_LEADER, /* SIGSTOP/SIGCONT the leader */
    MR_CF_CRASH_ALL,    /* kill -9 every node, restart them all */
    MR_CF_PART_HALVES,  /* majority | minority */
    MR_CF_PART_LEADER,  /* the leader alone | the rest */
    MR_CF_PART_BRIDGE,  /* A - B - C: B sees both sides, A and C do not see each other */
    MR_CF_PART_FLAP,    /* majority | minority toggled every 150-400 ms */
    MR_CF_PART_ONEWAY,  /* the leader's inbound or outbound links only */
    MR_CF_TRANSFER,     /* POST /v1/leader/transfer to a random voter */
    MR_CF_MEMBER,       /* DELETE /v1/members/{id}, wipe, re-join as learner */
    MR_CF_POWERCUT,     /* power cut of a random minority (maybe the leader): SIGKILL,
                           data dir rewritten to what was fsynced, restart later */
    MR_CF_POWERCUT_ALL, /* power cut of every node, restart them all */
    MR_CF_DEPLOY,       /* POST /v1/script (kv.lua + a comment) to a random node */
    MR_CF__N
};

struct mr_chaos_opts {
    int nodes;        /* 3 or 5 */
    int seconds;      /* length of the faulty phase */
    int clients;      /* concurrent client threads */
    uint64_t seed;    /* fault schedule + client choices */
    int unsafe_reads; /* start nodes with MOONRAFT_UNSAFE_LOCAL_READS=1 */
    int targeted;     /* mutation schedule: pause the leader, read from it on resume */
    int log_cache_none; /* nodes keep no applied payloads in memory (--log-cache-mb 0):
                         * every catch-up from the log reads the WAL back */
    FILE *out;        /* report stream (not owned) */
};

struct mr_chaos_result {
    size_t ops, ok, fail, info;
    int faults[MR_CF__N];
    size_t keys, bad_keys;
    int hashes_equal; /* all nodes equal applied + state_hash after healing */
    int integrity_ok; /* no integrity check of the round found a differing member,
                         and a final check after healing passed */
    int integrity_checks; /* checks decided during the round (all leaders) */
    int deploys_ok;       /* script deploys answered 200 */
    int scripts_equal;    /* after healing every node runs the same script, and it
                             is a deployed one if any deploy was answered 200 */
    int members_ok;   /* every node a voter again after healing */
    unsigned long long cache_misses,  /* entries read back from WALs (since each node's start) */
        cache_evicted;                /* payload bytes dropped from memory, likewise */
    int canaries,
        lost_canaries;  /* acknowledged writes made before crashes, missing at the end */
    int member_changes; /* remove + re-join cycles that completed */
    int transfers_ok;   /* leadership transfers the leader accepted (200) */
    int flaps;          /* partition on/off toggles inside flapping faults */
    uint64_t proxy_refused, proxy_cut, proxy_bytes; /* proxy counters */
    double recover_s; /* last fault healed -> leader + successful write; -1 if never */
    double recover_max_s;  /* worst such time after any fault of the round */
    int unrecovered;       /* faults after which no leader served a write within 15 s */
    int recover_max_kind;  /* the fault kind that gave recover_max_s */
    double check_s;        /* lincheck time for the whole history */
    int teardown_problems; /* nodes that exited non-zero on SIGTERM or logged sanitizer
                              reports */
    int restart_failures;  /* nodes that did not come back after a crash or power cut
                              (recovery refused their data dir), or power cuts that
                              could not be applied */
};

/* Runs one round. Always stops every process and the proxy it started and
 * removes its temp dirs. Returns 0 when the round ran (the verdicts are in
 * *r), negative on a setup failure. On any failed verdict it prints the
 * fault schedule, the seed and the node logs to o->out. */
int mr_chaos_run(const struct mr_chaos_opts *o, struct mr_chaos_result *r);

/* Self-check of the partition machinery on a 3-node cluster: isolates the
 * leader through the proxy, expects the other two to elect a new leader in a
 * higher term while the old one cannot commit a write, then heals and
 * expects one leader again. Returns 0 if all of that happened, -1 (with the
 * reason on out) if not. */
int mr_chaos_partition_selfcheck(FILE *out);

/* Name of a fault kind. */
const char *mr_chaos_fault_name(int kind);

#endif
