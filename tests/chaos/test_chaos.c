/* Chaos rounds against real moonraft processes behind the loopback proxy
 * (see docs/chaos.md). MR_CHAOS_SECONDS sets the faulty phase of each round
 * (default 35 s for the 3- and 5-node rounds, 20 s for the mutation round);
 * MR_CHAOS_SEED replays a fault schedule. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chaos.h"

static int seconds(int dflt)
{
    const char *s = getenv("MR_CHAOS_SECONDS");
    return s && atoi(s) > 0 ? atoi(s) : dflt;
}

static uint64_t seed(void)
{
    const char *s = getenv("MR_CHAOS_SEED");
    if (s && *s) return strtoull(s, NULL, 10);
    return (uint64_t)time(NULL);
}

/* 2 election timeouts of the nodes' default election_timeout_ms max (600). */
#define RECOVERY_LIMIT_S 1.2

static void round_is_clean(int nodes, int secs, int log_cache_none)
{
    struct mr_chaos_opts o = {.nodes = nodes,
                              .seconds = secs,
                              .clients = 5,
                              .seed = seed(),
                              .log_cache_none = log_cache_none,
                              .out = stderr};
    struct mr_chaos_result r;
    assert_int_equal(mr_chaos_run(&o, &r), 0);
    fprintf(stderr,
            "round: %d nodes, recovery %.3f s after the last fault (limit %.1f s), worst "
            "%.3f s\n",
            nodes, r.recover_s, RECOVERY_LIMIT_S, r.recover_max_s);
    assert_true(r.ok > 50);
    assert_int_equal(r.bad_keys, 0);
    assert_true(r.hashes_equal);
    /* --log-cache-mb 0: every applied payload left memory (read back when a
     * follower needed it: the count is printed above) */
    if (log_cache_none) assert_true(r.cache_evicted > 0);
    assert_true(r.integrity_ok);
    /* a script deployed mid-round: every node ends on one script */
    assert_true(r.faults[MR_CF_DEPLOY] >= 1);
    assert_true(r.scripts_equal);
    assert_true(r.integrity_checks >= 1);
    assert_true(r.members_ok);
    assert_true(r.canaries > 0);
    assert_int_equal(r.lost_canaries, 0);
    assert_int_equal(r.faults[MR_CF_CRASH_ALL], 1);
    /* a power cut of every node, and every node came back from each cut */
    assert_int_equal(r.faults[MR_CF_POWERCUT_ALL], 1);
    assert_int_equal(r.restart_failures, 0);
    /* the proxy really cut links during the round */
    assert_true(r.faults[MR_CF_PART_HALVES] + r.faults[MR_CF_PART_LEADER] +
                    r.faults[MR_CF_PART_BRIDGE] + r.faults[MR_CF_PART_FLAP] +
                    r.faults[MR_CF_PART_ONEWAY] >
                0);
    assert_true(r.proxy_cut + r.proxy_refused > 0);
    assert_int_equal(r.unrecovered, 0);
    assert_int_equal(r.teardown_problems, 0);
    assert_true(r.recover_s >= 0);
    assert_true(r.recover_s <= RECOVERY_LIMIT_S);
    /* ...and after every other fault of the round too */
    assert_true(r.recover_max_s <= RECOVERY_LIMIT_S);
}

static void
isolating_the_leader_through_the_proxy_makes_the_rest_elect_a_new_one(void **state)
{
    (void)state;
    assert_int_equal(mr_chaos_partition_selfcheck(stderr), 0);
}

static void three_node_cluster_stays_linearizable_under_faults(void **state)
{
    (void)state;
    round_is_clean(3, seconds(35), 1); /* every catch-up from the WAL */
}

static void five_node_cluster_stays_linearizable_under_faults(void **state)
{
    (void)state;
    round_is_clean(5, seconds(35), 0);
}

static void unsafe_local_reads_are_caught_by_the_checker(void **state)
{
    (void)state;
    struct mr_chaos_opts o = {.nodes = 3,
                              .seconds = seconds(20),
                              .clients = 6,
                              .seed = seed(),
                              .unsafe_reads = 1,
                              .targeted = 1,
                              .out = stderr};
    struct mr_chaos_result r;
    assert_int_equal(mr_chaos_run(&o, &r), 0);
    assert_true(r.bad_keys > 0);
    assert_int_equal(r.teardown_problems, 0);
}

/* With arguments, runs only the tests named (used by scripts/chaos.sh). */
int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            isolating_the_leader_through_the_proxy_makes_the_rest_elect_a_new_one),
        cmocka_unit_test(three_node_cluster_stays_linearizable_under_faults),
        cmocka_unit_test(five_node_cluster_stays_linearizable_under_faults),
        cmocka_unit_test(unsafe_local_reads_are_caught_by_the_checker),
    };
    struct CMUnitTest chosen[sizeof tests / sizeof tests[0]];
    size_t n = 0;
    if (argc < 2) return cmocka_run_group_tests(tests, NULL, NULL);
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
        for (int a = 1; a < argc; a++)
            if (strcmp(argv[a], tests[i].name) == 0) {
                chosen[n++] = tests[i];
                break;
            }
    if (n == 0) {
        fprintf(stderr, "no test named like that\n");
        return 2;
    }
    return _cmocka_run_group_tests("chaos", chosen, n, NULL, NULL);
}
