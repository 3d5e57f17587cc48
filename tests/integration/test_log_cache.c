/* Integration: the bounded in-memory log (docs/operations.md "Snapshots and
 * the log"). With log_cache_mb = 0 every applied entry's payload leaves
 * memory at once, so every catch-up from the log is read back from the WAL:
 * a follower that was down, a leader elected after the entries were dropped,
 * a restart from snapshots, all end with the same state hash; a damaged
 * record is a disk failure of the node that holds it, and the others go on
 * without losing a write. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

static struct mr_it_cluster cluster;

static int teardown_cluster(void **state)
{
    (void)state;
    return mr_it_cluster_destroy(&cluster);
}

/* No snapshot during the test: every catch-up is from the log. */
#define NO_SNAPSHOTS                                                                     \
    "--log-cache-mb 0 --snapshot-entries 1000000 --snapshot-log-mb 100000 "             \
    "--snapshot-log-percent 0"

static const char *status_field(int node, const char *expr)
{
    return mr_it_status(&cluster, node, expr);
}

static long long status_num(int node, const char *expr)
{
    return atoll(status_field(node, expr));
}

/* PUT /v1/kv/<key> through node i: a JSON string of `len` bytes of `fill`
 * (with `marker` at its start when not NULL). */
static void put(int i, const char *key, size_t len, char fill, const char *marker)
{
    char path[96], *body = malloc(len + 3);
    struct mr_it_resp r;
    assert_non_null(body);
    memset(body + 1, fill, len);
    if (marker != NULL) memcpy(body + 1, marker, strlen(marker));
    body[0] = body[len + 1] = '"';
    body[len + 2] = '\0';
    snprintf(path, sizeof path, "/v1/kv/%s", key);
    r = mr_it_http(&cluster, i, "PUT", path, body, NULL);
    MR_IT_EXPECT_STATUS(&cluster, r, 200);
    mr_it_resp_free(&r);
    free(body);
}

/* Three nodes that keep no applied payload in memory and never snapshot;
 * returns the leader. */
static int start3(void)
{
    int i, l;
    mr_it_cluster_init(&cluster, 3);
    snprintf(cluster.extra_args, sizeof cluster.extra_args, NO_SNAPSHOTS);
    for (i = 0; i < 3; i++) mr_it_start_static(&cluster, i, NULL);
    l = mr_it_wait_leader(&cluster, 10000, 1);
    assert_true(l >= 0);
    return l;
}

static void expect_same_state(void)
{
    if (!mr_it_same_state(&cluster, 30000, NULL, NULL)) {
        mr_it_dump_logs(&cluster);
        fail_msg("the nodes did not converge to one state");
    }
}

static void
test_followers_and_new_leaders_catch_up_from_entries_read_back_from_the_wal(void **state)
{
    int l, f, o, i, l2;
    long long misses, resident;
    char key[32];
    (void)state;

    l = start3();
    f = (l + 1) % 3;
    o = (l + 2) % 3;
    for (i = 0; i < 20; i++) {
        snprintf(key, sizeof key, "a%d", i);
        put(l, key, 10 + (size_t)i * 37, 'a' + i % 26, NULL);
    }
    expect_same_state();
    assert_int_equal(mr_it_stop(&cluster, f), 0);
    /* sizes from 1 byte to ~40 KB: several WAL records of every shape */
    for (i = 0; i < 400; i++) {
        snprintf(key, sizeof key, "b%d", i);
        put(l, key, (size_t)1 + (size_t)(i * 101) % 40000, 'A' + i % 26, NULL);
    }
    /* applied and durable: nothing but the uncommitted tail stays in memory */
    resident = status_num(l, "j.log_cache.resident_bytes");
    fprintf(stderr, "leader's resident log bytes after 400 writes: %lld, evicted %s\n", resident,
            status_field(l, "j.log_cache.evicted_bytes"));
    assert_true(resident < 1000);
    assert_true(status_num(l, "j.log_cache.evicted_bytes") > 400 * 1000);
    assert_int_equal(status_num(l, "j.log_cache.misses"), 0);

    mr_it_start_static(&cluster, f, NULL);
    expect_same_state();
    misses = status_num(l, "j.log_cache.misses");
    fprintf(stderr, "leader read %lld entries back from its WAL\n", misses);
    assert_true(misses >= 400);
    {
        /* the same counts in /metrics */
        char want[96];
        struct mr_it_resp r = mr_it_http(&cluster, l, "GET", "/metrics", NULL, NULL);
        MR_IT_EXPECT_STATUS(&cluster, r, 200);
        snprintf(want, sizeof want, "\nmoonraft_log_cache_misses_total %lld\n", misses);
        if (strstr(r.body, want) == NULL) fail_msg("metrics lack%s", want);
        assert_non_null(strstr(r.body, "\nmoonraft_log_cache_evicted_bytes_total "));
        mr_it_resp_free(&r);
    }

    /* A new leader whose log dropped every payload as a follower catches up
     * the old one, which missed writes while it was down. */
    assert_int_equal(mr_it_stop(&cluster, l), 0);
    l2 = mr_it_wait_leader(&cluster, 10000, 1);
    assert_true(l2 == f || l2 == o);
    for (i = 0; i < 200; i++) {
        snprintf(key, sizeof key, "c%d", i);
        put(l2, key, (size_t)100 + (size_t)i * 13, 'k', NULL);
    }
    misses = status_num(l2, "j.log_cache.misses");
    mr_it_start_static(&cluster, l, NULL);
    expect_same_state();
    fprintf(stderr, "new leader read %lld entries back from its WAL\n",
            status_num(l2, "j.log_cache.misses") - misses);
    assert_true(status_num(l2, "j.log_cache.misses") - misses >= 200);

    /* Determinism: snapshots on every node, a restart from them, one hash. */
    for (i = 0; i < 3; i++) assert_true(mr_it_snapshot(&cluster, i, NULL) > 0);
    for (i = 0; i < 3; i++) assert_int_equal(mr_it_stop(&cluster, i), 0);
    for (i = 0; i < 3; i++) mr_it_start_static(&cluster, i, NULL);
    assert_true(mr_it_wait_leader(&cluster, 10000, 1) >= 0);
    put(0, "after-restart", 5, 'z', NULL);
    expect_same_state();
}

/* Finds `marker` in the files under dir/wal and flips the byte after it in
 * place (the running node's page cache sees it). Returns 1 if found. */
static int damage_wal(const char *data_dir, const char *marker)
{
    char dir[400], path[700];
    DIR *d;
    struct dirent *de;
    int found = 0;
    snprintf(dir, sizeof dir, "%s/wal", data_dir);
    d = opendir(dir);
    assert_non_null(d);
    while (!found && (de = readdir(d)) != NULL) {
        struct stat sb;
        unsigned char *buf;
        size_t k, mlen = strlen(marker);
        int fd;
        if (strstr(de->d_name, ".seg") == NULL) continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        fd = open(path, O_RDWR);
        assert_true(fd >= 0);
        assert_int_equal(fstat(fd, &sb), 0);
        buf = malloc((size_t)sb.st_size);
        assert_non_null(buf);
        assert_int_equal(pread(fd, buf, (size_t)sb.st_size, 0), (ssize_t)sb.st_size);
        for (k = 0; k + mlen < (size_t)sb.st_size; k++) {
            if (memcmp(buf + k, marker, mlen) == 0) {
                unsigned char c = buf[k + mlen] ^ 0x01;
                assert_int_equal(pwrite(fd, &c, 1, (off_t)(k + mlen)), 1);
                found = 1;
                break;
            }
        }
        free(buf);
        close(fd);
    }
    closedir(d);
    return found;
}

static void test_a_damaged_record_read_back_is_a_disk_failure_and_loses_no_write(void **state)
{
    int l, f, i;
    char key[32];
    (void)state;

    l = start3();
    f = (l + 1) % 3;
    put(l, "first", 10, 'x', NULL);
    expect_same_state();
    assert_int_equal(mr_it_stop(&cluster, f), 0);
    for (i = 0; i < 30; i++) {
        snprintf(key, sizeof key, "k%d", i);
        put(l, key, 200, 'v', i == 10 ? "MARKER-damage-me" : NULL);
    }
    /* durable on the leader and applied, so dropped from its memory */
    assert_true(status_num(l, "j.log_cache.resident_bytes") < 1000);
    assert_true(damage_wal(cluster.nodes[l].data_dir, "MARKER-damage-me"));

    /* The follower needs the damaged entry: the leader cannot read it back. */
    mr_it_start_static(&cluster, f, NULL);
    {
        long long t0 = mr_it_now_ms();
        while (strcmp(status_field(l, "type(j.disk_error)"), "string") != 0) {
            if (mr_it_now_ms() - t0 > 20000) {
                mr_it_dump_logs(&cluster);
                fail_msg("the leader did not report the damaged WAL");
            }
            mr_it_sleep_ms(50);
        }
    }
    fprintf(stderr, "leader's disk_error: %s\n", status_field(l, "j.disk_error"));
    assert_non_null(strstr(status_field(l, "j.disk_error"), "checksum"));
    /* The third node has every write and leads now; the follower catches up
     * from it, and nothing written before is lost. */
    assert_int_equal(mr_it_stop(&cluster, l), 0);
    {
        int l2 = mr_it_wait_leader(&cluster, 15000, 1);
        assert_true(l2 >= 0 && l2 != l);
        put(l2, "after", 3, 'y', NULL);
    }
    expect_same_state();
    for (i = 0; i < 30; i++) {
        struct mr_it_resp r;
        char path[40];
        snprintf(path, sizeof path, "/v1/kv/k%d", i);
        r = mr_it_http(&cluster, f, "GET", path, NULL, NULL);
        MR_IT_EXPECT_STATUS(&cluster, r, 200);
        if (i == 10) assert_non_null(strstr(r.body, "MARKER-damage-me"));
        mr_it_resp_free(&r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(
            test_followers_and_new_leaders_catch_up_from_entries_read_back_from_the_wal,
            teardown_cluster),
        cmocka_unit_test_teardown(
            test_a_damaged_record_read_back_is_a_disk_failure_and_loses_no_write,
            teardown_cluster),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
