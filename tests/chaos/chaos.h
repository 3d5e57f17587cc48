/* Chaos runner: real moonraft processes, concurrent clients, seeded faults,
 * and a linearizability check of the recorded history (lincheck.h). */
#ifndef MR_CHAOS_H
#define MR_CHAOS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum mr_chaos_fault { MR_CF_KILL, MR_CF_KILL_LEADER, MR_CF_PAUSE, MR_CF_PAUSE_LEADER, MR_CF_CRASH_ALL, MR_CF__N };

struct mr_chaos_opts {
    int nodes;       /* 3 or 5 */
    int seconds;     /* length of the faulty phase */
    int clients;     /* concurrent client threads */
    uint64_t seed;   /* fault schedule + client choices */
    int unsafe_reads; /* start nodes with MOONRAFT_UNSAFE_LOCAL_READS=1 */
    int targeted;    /* mutation schedule: pause the leader, read from it on resume */
    FILE *out;       /* report stream (not owned) */
};

struct mr_chaos_result {
    size_t ops, ok, fail, info;
    int faults[MR_CF__N];
    size_t keys, bad_keys;
    int hashes_equal;      /* all nodes equal applied + state_hash after healing */
    double recover_s;      /* heal -> leader + successful write */
    double check_s;        /* lincheck time */
};

/* Runs one round. Always stops every process it started. Returns 0 when the
 * round ran (the verdicts are in *r), negative on a setup failure. */
int mr_chaos_run(const struct mr_chaos_opts *o, struct mr_chaos_result *r);
/* Name of a fault kind. */
const char *mr_chaos_fault_name(int kind);

#endif
