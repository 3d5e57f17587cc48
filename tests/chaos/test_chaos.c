/* Short chaos rounds against real moonraft processes (see docs/chaos.md).
 * MR_CHAOS_SECONDS scales the faulty phase (default 40 s per round);
 * MR_CHAOS_SEED replays a fault schedule. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
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
    if (s && *s)
        return strtoull(s, NULL, 10);
    return (uint64_t)time(NULL);
}

static void round_is_clean(int nodes, int secs)
{
    struct mr_chaos_opts o = {.nodes = nodes, .seconds = secs, .clients = 5, .seed = seed(), .out = stderr};
    struct mr_chaos_result r;
    assert_int_equal(mr_chaos_run(&o, &r), 0);
    assert_true(r.ok > 50);
    assert_int_equal(r.bad_keys, 0);
    assert_true(r.hashes_equal);
    /* leader + write within 2 election timeouts (1.2 s) plus restart slack */
    assert_true(r.recover_s >= 0 && r.recover_s < 5.0);
}

static void three_node_cluster_stays_linearizable_under_faults(void **state)
{
    (void)state;
    round_is_clean(3, seconds(20));
}

static void five_node_cluster_stays_linearizable_under_faults(void **state)
{
    (void)state;
    round_is_clean(5, seconds(20));
}

static void unsafe_local_reads_are_caught_by_the_checker(void **state)
{
    (void)state;
    struct mr_chaos_opts o = {.nodes = 3, .seconds = seconds(20), .clients = 6, .seed = seed(),
                              .unsafe_reads = 1, .targeted = 1, .out = stderr};
    struct mr_chaos_result r;
    assert_int_equal(mr_chaos_run(&o, &r), 0);
    assert_true(r.bad_keys > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(three_node_cluster_stays_linearizable_under_faults),
        cmocka_unit_test(five_node_cluster_stays_linearizable_under_faults),
        cmocka_unit_test(unsafe_local_reads_are_caught_by_the_checker),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
