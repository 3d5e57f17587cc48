/* Integration: power cuts of real moonraft processes. Every node runs with
 * the power-loss layer (MOONRAFT_FAULT_POWERLOSS, see docs/chaos.md); a power
 * cut is SIGKILL plus rewriting the data dir to what was fsynced, so a write
 * acknowledged before the disk had it, or a vote forgotten, shows up as a
 * lost write, a node that cannot restart, or replicas that disagree. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define N 3
#define MAX_WRITES 20000

static struct mr_it_cluster cluster;

static int setup_none(void **state)
{
    (void)state;
    memset(&cluster, 0, sizeof cluster);
    return 0;
}

static int teardown_cluster(void **state)
{
    (void)state;
    return mr_it_cluster_destroy(&cluster);
}

/* The client: PUT w<i> = i through the nodes in turn, remembering which
 * writes were acknowledged (200). */
struct writer {
    pthread_t thread;
    int ports[N];
    int stop; /* atomic */
    int next;
    unsigned char acked[MAX_WRITES];
    int n_acked;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    while (!__atomic_load_n(&w->stop, __ATOMIC_SEQ_CST) && w->next < MAX_WRITES) {
        char path[64], body[32];
        int i = w->next++;
        struct mr_it_resp r;
        snprintf(path, sizeof path, "/v1/kv/w%d", i);
        snprintf(body, sizeof body, "%d", i);
        r = mr_it_http_port(w->ports[i % N], "PUT", path, body, NULL, 2000);
        if (r.status == 200) {
            w->acked[i] = 1;
            __atomic_add_fetch(&w->n_acked, 1, __ATOMIC_SEQ_CST);
        } else if (r.status == 0) {
            mr_it_sleep_ms(5); /* that node is down */
        }
        mr_it_resp_free(&r);
    }
    return NULL;
}

/* Node i is up and answers (its recovery worked). */
static void expect_up(int i)
{
    long long t0 = mr_it_now_ms();
    for (;;) {
        struct mr_it_resp r = mr_it_http_port(cluster.nodes[i].http_port, "GET",
                                              "/v1/status", NULL, NULL, 500);
        int st = r.status;
        mr_it_resp_free(&r);
        if (st == 200) return;
        if (mr_it_wait_exit(&cluster, i, 0) >= 0 || mr_it_now_ms() - t0 > 10000) {
            fprintf(stderr, "%s did not come back after the power cut\n",
                    cluster.nodes[i].name);
            mr_it_dump_logs(&cluster);
            fail();
        }
        mr_it_sleep_ms(50);
    }
}

static int acked_now(struct writer *w)
{
    return __atomic_load_n(&w->n_acked, __ATOMIC_SEQ_CST);
}

/* Lets the load run until `more` further writes are acknowledged. */
static void let_writes_in(struct writer *w, int more)
{
    int base = acked_now(w);
    long long t0 = mr_it_now_ms();
    while (acked_now(w) < base + more) {
        if (mr_it_now_ms() - t0 > 20000) {
            fprintf(stderr, "no progress: %d writes acknowledged in 20 s\n",
                    acked_now(w) - base);
            mr_it_dump_logs(&cluster);
            fail();
        }
        mr_it_sleep_ms(10);
    }
}

static int leader_index(void)
{
    int l = mr_it_wait_leader(&cluster, 10000, 0);
    assert_true(l >= 0);
    return l;
}

/* Power-cuts the nodes in `mask`, restarts them after `down_ms`. */
static void power_cut(struct writer *w, unsigned mask, int down_ms)
{
    int i;
    for (i = 0; i < N; i++) /* the power goes at the same instant for all of them */
        if (mask & (1u << i)) mr_it_kill9(&cluster, i);
    for (i = 0; i < N; i++)
        if (mask & (1u << i)) assert_int_equal(mr_it_powercut(&cluster, i), 0);
    mr_it_sleep_ms(down_ms);
    for (i = 0; i < N; i++)
        if (mask & (1u << i)) mr_it_start_static(&cluster, i, NULL);
    for (i = 0; i < N; i++)
        if (mask & (1u << i)) expect_up(i);
    let_writes_in(w, 20);
}

static void check_writes(struct writer *w);

static void test_acknowledged_writes_survive_power_cuts_of_any_nodes(void **state)
{
    struct writer *w = calloc(1, sizeof *w);
    int i, round, cuts = 0;
    (void)state;
    assert_non_null(w);
    mr_it_cluster_init(&cluster, N);
    for (i = 0; i < N; i++) {
        mr_it_powerloss_enable(&cluster, i);
        mr_it_start_static(&cluster, i, NULL);
        w->ports[i] = cluster.nodes[i].http_port;
    }
    assert_true(mr_it_wait_leader(&cluster, 10000, 1) >= 0);
    assert_int_equal(pthread_create(&w->thread, NULL, writer_main, w), 0);
    let_writes_in(w, 30);

    for (round = 0; round < 2; round++) {
        int l = leader_index();
        power_cut(w, 1u << ((l + 1) % N), 200); /* a follower */
        l = leader_index();
        power_cut(w, 1u << l, 300); /* the leader */
        l = leader_index();
        power_cut(w, (1u << l) | (1u << ((l + 1) % N)), 300); /* a majority */
        power_cut(w, (1u << N) - 1, 200);                     /* everyone */
        power_cut(w, (1u << N) - 1, 0);                       /* everyone, at once back */
        cuts += 5;
    }
    __atomic_store_n(&w->stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(w->thread, NULL);
    fprintf(stderr, "%d writes attempted, %d acknowledged, %d power cuts\n", w->next,
            w->n_acked, cuts);

    check_writes(w);
    free(w);
}

/* Every acknowledged write is there, and the replicas agree. */
static void check_writes(struct writer *w)
{
    int i, round;
    char hash0[128] = "", applied0[64] = "";
    assert_true(mr_it_wait_leader(&cluster, 10000, 1) >= 0);
    for (i = 0; i < w->next; i++) {
        char path[64], want[32];
        struct mr_it_resp r;
        if (!w->acked[i]) continue;
        snprintf(path, sizeof path, "/v1/kv/w%d", i);
        snprintf(want, sizeof want, "%d", i);
        r = mr_it_http(&cluster, i % N, "GET", path, NULL, NULL);
        if (r.status != 200 || strcmp(mr_it_jq(r.body, "j.value"), want) != 0) {
            fprintf(stderr, "LOST WRITE: w%d was acknowledged, GET gives %d %s\n", i,
                    r.status, r.body ? r.body : "");
            mr_it_dump_logs(&cluster);
            fail();
        }
        mr_it_resp_free(&r);
    }
    /* ...and the replicas agree */
    for (round = 0; round < 200; round++) {
        int same = 1;
        for (i = 0; i < N; i++) {
            struct mr_it_resp r =
                mr_it_http(&cluster, i, "GET", "/v1/status?hash=true", NULL, NULL);
            assert_int_equal(r.status, 200);
            if (i == 0) {
                snprintf(hash0, sizeof hash0, "%s", mr_it_jq(r.body, "j.state_hash"));
                snprintf(applied0, sizeof applied0, "%s", mr_it_jq(r.body, "j.applied"));
            } else if (strcmp(hash0, mr_it_jq(r.body, "j.state_hash")) != 0 ||
                       strcmp(applied0, mr_it_jq(r.body, "j.applied")) != 0) {
                same = 0;
            }
            mr_it_resp_free(&r);
        }
        if (same) break;
        mr_it_sleep_ms(50);
    }
    if (round == 200) mr_it_dump_logs(&cluster);
    assert_true(round < 200);
    assert_int_equal((int)strlen(hash0), 64);
}

/* Makes node `to` the leader (leadership transfer). */
static void lead_with(int to)
{
    char body[64];
    long long t0 = mr_it_now_ms();
    int l;
    snprintf(body, sizeof body, "{\"id\":\"%s\"}", cluster.nodes[to].name);
    while ((l = leader_index()) != to) {
        struct mr_it_resp r =
            mr_it_http(&cluster, l, "POST", "/v1/leader/transfer", body, NULL);
        mr_it_resp_free(&r);
        assert_true(mr_it_now_ms() - t0 < 10000);
        mr_it_sleep_ms(100);
    }
}

/* n1 leads with a fast disk, n2 and n3 have slow ones (40 ms a sync): a
 * write the leader acknowledges is on n1's disk at once but on a follower's
 * only 40 ms later, so it may only be acknowledged once a follower says it
 * has it durably. Then everyone loses power and n1 comes back last: n2 and
 * n3 elect a leader from what their disks hold, and every acknowledged
 * write must be in it. (A build that sends append acknowledgements before
 * the WAL sync loses writes here every time.) */
static void test_a_write_is_acknowledged_only_once_a_majority_has_it_on_disk(void **state)
{
    struct writer *w = calloc(1, sizeof *w);
    int i, round;
    (void)state;
    assert_non_null(w);
    mr_it_cluster_init(&cluster, N);
    for (i = 0; i < N; i++) {
        mr_it_powerloss_enable(&cluster, i);
        cluster.nodes[i].slow_sync_ms = i == 0 ? 0 : 40;
        mr_it_start_static(&cluster, i, NULL);
        w->ports[i] = cluster.nodes[i].http_port;
    }
    assert_true(mr_it_wait_leader(&cluster, 10000, 1) >= 0);
    lead_with(0);
    assert_int_equal(pthread_create(&w->thread, NULL, writer_main, w), 0);
    for (round = 0; round < 3; round++) {
        lead_with(0);
        let_writes_in(w, 20);
        for (i = 0; i < N; i++) mr_it_kill9(&cluster, i); /* all at the same instant */
        for (i = 0; i < N; i++) assert_int_equal(mr_it_powercut(&cluster, i), 0);
        mr_it_start_static(&cluster, 1, NULL);
        mr_it_start_static(&cluster, 2, NULL);
        expect_up(1);
        expect_up(2);
        let_writes_in(w, 10); /* n2 or n3 leads */
        mr_it_start_static(&cluster, 0, NULL);
        expect_up(0);
    }
    __atomic_store_n(&w->stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(w->thread, NULL);
    fprintf(stderr, "%d writes attempted, %d acknowledged\n", w->next, w->n_acked);
    check_writes(w);
    free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_acknowledged_writes_survive_power_cuts_of_any_nodes, setup_none,
            teardown_cluster),
        cmocka_unit_test_setup_teardown(
            test_a_write_is_acknowledged_only_once_a_majority_has_it_on_disk, setup_none,
            teardown_cluster),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
