/* Integration: a full disk (the NOSPACE alarm, node_disk.c). Three real
 * nodes; a node's "disk" is filled and freed at runtime through the storage
 * limit layer (MOONRAFT_FAULT_DISK_LIMIT_FILE: while the file exists, its
 * data dir may not grow past the byte count in it), through the
 * max_data_mb quota, and, when the test runs as root, on a real small tmpfs.
 * Segments are 1 MiB, so that a few hundred 8 KiB writes need a new one
 * (records go into preallocated segments: the disk fills at a segment's
 * creation, as it would on a real file system). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

static struct mr_it_cluster cluster;
/* a tmpfs the test mounted, to unmount at teardown (the size of dir below) */
static char mounted[320];

static int setup_none(void **state)
{
    (void)state;
    memset(&cluster, 0, sizeof cluster);
    mounted[0] = '\0';
    return 0;
}

static int teardown_cluster(void **state)
{
    int i, rv;
    (void)state;
    if (mounted[0]) {
        for (i = 0; i < cluster.n; i++)
            if (cluster.nodes[i].pid > 0) mr_it_stop(&cluster, i);
    }
    rv = mr_it_cluster_destroy(&cluster);
    if (mounted[0]) {
        umount2(mounted, MNT_DETACH);
        rmdir(mounted);
        mounted[0] = '\0';
    }
    return rv;
}

#define EXPECT_STATUS(resp, want) MR_IT_EXPECT_STATUS(&cluster, resp, want)
#define ARGS "--wal-segment-mb 1 --snapshot-trailing 10"

static char value[8200]; /* an 8 KiB JSON string */

static void limit_path(int i, char *buf, size_t n)
{
    snprintf(buf, n, "%s/%s.disk-limit", cluster.root, cluster.nodes[i].name);
}

/* The node's disk holds `bytes` at most from now on (-1: no limit). */
static void set_limit(int i, long long bytes)
{
    char path[400];
    FILE *f;
    limit_path(i, path, sizeof path);
    if (bytes < 0) {
        assert_int_equal(unlink(path), 0);
        return;
    }
    f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "%lld\n", bytes);
    fclose(f);
}

static void start_all(const char *extra_for[3])
{
    int i;
    memset(value, 'v', sizeof value - 1);
    value[0] = '"';
    value[sizeof value - 2] = '"';
    value[sizeof value - 1] = '\0';
    for (i = 0; i < 3; i++) {
        char path[400], args[256];
        limit_path(i, path, sizeof path);
        setenv("MOONRAFT_FAULT_DISK_LIMIT_FILE", path, 1);
        snprintf(args, sizeof args, "%s %s", ARGS,
                 extra_for && extra_for[i] ? extra_for[i] : "");
        mr_it_start_static(&cluster, i, args);
    }
    unsetenv("MOONRAFT_FAULT_DISK_LIMIT_FILE");
}

static int put(int node, const char *key, const char *val, char *leader_out, size_t lo)
{
    char path[256];
    struct mr_it_resp r;
    int st;
    snprintf(path, sizeof path, "/v1/kv/%s", key);
    r = mr_it_http(&cluster, node, "PUT", path, val, NULL);
    st = r.status;
    if (st == 507) {
        /* the error shape of every error, naming the leader when known */
        assert_string_equal(mr_it_jq(r.body, "j.error.code"), "insufficient_storage");
        assert_non_null(strstr(mr_it_jq(r.body, "j.error.message"), "not applied"));
        if (leader_out)
            snprintf(leader_out, lo, "%s", mr_it_jq(r.body, "j.error.leader"));
    }
    mr_it_resp_free(&r);
    return st;
}

static const char *status_of(int node, const char *expr)
{
    static char out[256];
    struct mr_it_resp r = mr_it_http(&cluster, node, "GET", "/v1/status", NULL, NULL);
    snprintf(out, sizeof out, "%s",
             r.status == 200 ? mr_it_jq(r.body, expr) : "no answer");
    mr_it_resp_free(&r);
    return out;
}

static int metric_has(int node, const char *line)
{
    struct mr_it_resp r = mr_it_http(&cluster, node, "GET", "/metrics", NULL, NULL);
    int has = r.status == 200 && r.body != NULL && strstr(r.body, line) != NULL;
    mr_it_resp_free(&r);
    return has;
}

/* Waits until node's NOSPACE alarm is `on`: status (disk and alarms) and
 * metrics agree. */
static void wait_alarm(int node, int on, int timeout_ms)
{
    long long t0 = mr_it_now_ms();
    for (;;) {
        int st = strcmp(status_of(node, "j.disk.nospace"), on ? "true" : "false") == 0 &&
                 strcmp(status_of(node, "j.alarms[1]"), on ? "NOSPACE" : "nil") == 0;
        if (st && metric_has(node, on ? "moonraft_nospace_alarm 1"
                                      : "moonraft_nospace_alarm 0"))
            return;
        if (mr_it_now_ms() - t0 > timeout_ms) {
            fprintf(stderr, "%s: NOSPACE alarm not %s after %d ms\n",
                    cluster.nodes[node].name, on ? "raised" : "cleared", timeout_ms);
            mr_it_dump_logs(&cluster);
            fail();
        }
        mr_it_sleep_ms(50);
    }
}

static int log_has(int node, const char *text)
{
    FILE *f = fopen(cluster.nodes[node].log_path, "r");
    char line[2048];
    int has = 0;
    if (f == NULL) return 0;
    while (!has && fgets(line, sizeof line, f) != NULL) has = strstr(line, text) != NULL;
    fclose(f);
    return has;
}

/* Writes through `via` until `node` raises its alarm; every write must
 * succeed (the cluster keeps committing). Keys cycle through `distinct`
 * names (0: all new). Returns the number written. */
static int write_until_alarm(int via, int node, const char *prefix, int distinct)
{
    int k;
    for (k = 0; k < 2000; k++) {
        char key[64];
        snprintf(key, sizeof key, "%s%d", prefix, distinct ? k % distinct : k);
        if (put(via, key, value, NULL, 0) != 200) {
            fprintf(stderr, "write %s through %s failed\n", key, cluster.nodes[via].name);
            mr_it_dump_logs(&cluster);
            fail();
        }
        if (k % 20 == 19 && strcmp(status_of(node, "j.disk.nospace"), "true") == 0)
            return k + 1;
    }
    fail_msg("%s never ran out of space", cluster.nodes[node].name);
    return 0;
}

static void expect_read(int node, const char *key, const char *consistency)
{
    char path[256];
    struct mr_it_resp r;
    snprintf(path, sizeof path, "/v1/kv/%s?consistency=%s", key, consistency);
    r = mr_it_http(&cluster, node, "GET", path, NULL, NULL);
    EXPECT_STATUS(r, 200);
    assert_non_null(strstr(r.body, "vvvv"));
    mr_it_resp_free(&r);
}

static void test_a_follower_with_a_full_disk_stays_a_member_and_catches_up(void **state)
{
    int leader, f, n, k;
    long long t0;
    struct mr_it_resp r;
    (void)state;
    mr_it_cluster_init(&cluster, 3);
    start_all(NULL);
    leader = mr_it_wait_leader(&cluster, 10000, 1);
    assert_true(leader >= 0);
    f = (leader + 1) % 3;
    assert_int_equal(put(leader, "before", value, NULL, 0), 200);

    set_limit(f, 0); /* f's disk is full */
    n = write_until_alarm(leader, f, "a", 0);
    fprintf(stderr, "%s ran out of space after %d writes\n", cluster.nodes[f].name, n);
    wait_alarm(f, 1, 5000);
    assert_true(log_has(f, "NOSPACE alarm raised"));
    assert_string_equal(status_of(f, "j.disk.reason"), "disk_full");
    /* still a member, still following the same leader, which goes on */
    for (k = 0; k < 30; k++) {
        char key[32];
        snprintf(key, sizeof key, "b%d", k);
        assert_int_equal(put(leader, key, value, NULL, 0), 200);
    }
    assert_string_equal(status_of(f, "j.role"), "follower");
    assert_string_equal(status_of(f, "j.leader"), cluster.nodes[leader].name);
    assert_string_equal(status_of(leader, "j.leader"), cluster.nodes[leader].name);
    assert_string_equal(status_of(leader, "#j.members"), "3");
    /* writes to f: 507, certainly not applied */
    assert_int_equal(put(f, "refused", "1", NULL, 0), 507);
    /* reads go on: the leader's are linearizable, f answers from what it has */
    expect_read(leader, "b29", "linearizable");
    expect_read(f, "before", "stale");

    set_limit(f, -1);        /* space returns */
    wait_alarm(f, 0, 20000); /* retried every second (kicked by the node) */
    assert_true(log_has(f, "NOSPACE alarm cleared"));
    assert_int_equal(put(f, "after", value, NULL, 0), 200);
    assert_true(mr_it_same_state(&cluster, 20000, NULL, NULL));
    r = mr_it_http(&cluster, leader, "GET", "/v1/kv/refused", NULL, NULL);
    EXPECT_STATUS(r, 404); /* the 507 was not applied */
    mr_it_resp_free(&r);

    /* and its log is fine after a restart */
    assert_int_equal(mr_it_stop(&cluster, f), 0);
    mr_it_start_static(&cluster, f, ARGS);
    t0 = mr_it_now_ms();
    while (strcmp(status_of(f, "j.leader"), "nil") == 0 ||
           strcmp(status_of(f, "j.leader"), "no answer") == 0) {
        assert_true(mr_it_now_ms() - t0 < 10000);
        mr_it_sleep_ms(50);
    }
    assert_true(mr_it_same_state(&cluster, 20000, NULL, NULL));
}

static void test_a_leader_with_a_full_disk_hands_over_and_recovers(void **state)
{
    int leader, next, k, st = 0;
    char named[64] = "";
    long long t0;
    (void)state;
    mr_it_cluster_init(&cluster, 3);
    start_all(NULL);
    leader = mr_it_wait_leader(&cluster, 10000, 1);
    assert_true(leader >= 0);
    assert_int_equal(put(leader, "before", value, NULL, 0), 200);

    set_limit(leader, 0);
    /* writes through the leader until it notices (200s: its followers
     * persist and commit), then 507s: certainly not applied */
    t0 = mr_it_now_ms();
    for (k = 0;; k++) {
        char key[32];
        snprintf(key, sizeof key, "a%d", k);
        st = put(leader, key, value, named, sizeof named);
        if (st == 507) break;
        assert_true(st == 200 || st == 503 || st == 504);
        assert_true(mr_it_now_ms() - t0 < 60000);
    }
    fprintf(stderr, "the leader refused writes after %d\n", k);
    /* leadership moves to a node that can persist */
    t0 = mr_it_now_ms();
    while ((next = mr_it_wait_leader(&cluster, 5000, 0)) == leader || next < 0) {
        assert_true(mr_it_now_ms() - t0 < 10000);
        mr_it_sleep_ms(50);
    }
    fprintf(stderr, "leadership moved from %s to %s in %lld ms\n",
            cluster.nodes[leader].name, cluster.nodes[next].name, mr_it_now_ms() - t0);
    assert_true(log_has(leader, "handing leadership to"));
    wait_alarm(leader, 1, 5000);
    for (k = 0; k < 20; k++) {
        char key[32];
        snprintf(key, sizeof key, "b%d", k);
        assert_int_equal(put(next, key, value, NULL, 0), 200);
    }
    /* the old leader refuses, naming the new one */
    t0 = mr_it_now_ms();
    while (put(leader, "refused", "1", named, sizeof named) != 507 ||
           strcmp(named, cluster.nodes[next].name) != 0) {
        assert_true(mr_it_now_ms() - t0 < 5000);
        mr_it_sleep_ms(50);
    }
    expect_read(next, "b19", "linearizable");
    expect_read(leader, "before", "stale");

    set_limit(leader, -1);
    wait_alarm(leader, 0, 20000);
    assert_int_equal(put(leader, "after", value, NULL, 0), 200); /* forwarded */
    assert_true(mr_it_same_state(&cluster, 20000, NULL, NULL));
}

static void test_max_data_mb_raises_the_alarm_and_compaction_brings_it_under(void **state)
{
    const char *extra[3] = {NULL, NULL, NULL};
    int leader, f, k;
    long long used, t0;
    (void)state;
    mr_it_cluster_init(&cluster, 3);
    /* n3 gets a 3 MiB quota: three 1 MiB segments and a bit */
    extra[2] = "--max-data-mb 3";
    start_all(extra);
    f = 2;
    leader = mr_it_wait_leader(&cluster, 10000, 1);
    assert_true(leader >= 0);
    if (leader == f) {
        struct mr_it_resp r = mr_it_http(&cluster, f, "POST", "/v1/leader/transfer",
                                         "{\"id\":\"n1\"}", NULL);
        EXPECT_STATUS(r, 200);
        mr_it_resp_free(&r);
        leader = mr_it_wait_leader(&cluster, 10000, 1);
        assert_true(leader >= 0 && leader != f);
    }
    assert_string_equal(status_of(f, "j.disk.max_bytes"), "3145728");
    /* the state stays small (8 keys rewritten), the log grows */
    write_until_alarm(leader, f, "q", 8);
    assert_true(log_has(f, "NOSPACE alarm raised"));
    assert_true(log_has(f, "max_data_mb"));
    /* the node compacts by itself (snapshot, then the log below it) and the
     * alarm clears while writes go on */
    t0 = mr_it_now_ms();
    for (k = 0; strcmp(status_of(f, "j.disk.nospace"), "false") != 0; k++) {
        char key[32];
        snprintf(key, sizeof key, "q%d", k % 8);
        assert_int_equal(put(leader, key, value, NULL, 0), 200);
        if (mr_it_now_ms() - t0 > 20000) {
            mr_it_dump_logs(&cluster);
            fail_msg("the quota alarm did not clear");
        }
        mr_it_sleep_ms(20);
    }
    wait_alarm(f, 0, 1000);
    /* the snapshot came from the alarm (10000 entries are far away), and the
     * first segments are gone */
    assert_true(log_has(f, "taking a snapshot"));
    {
        char seg[6000];
        struct stat sb;
        snprintf(seg, sizeof seg, "%s/wal/0000000000000001.seg",
                 cluster.nodes[f].data_dir);
        assert_int_not_equal(stat(seg, &sb), 0);
    }
    used = atoll(status_of(f, "j.disk.used_bytes"));
    assert_true(used > 0 && used <= 3LL << 20);
    assert_true(mr_it_same_state(&cluster, 20000, NULL, NULL));
}

static void test_a_real_full_tmpfs_raises_the_alarm_and_recovers(void **state)
{
    char dir[320], ballast[400], buf[65536];
    int leader, f, fd;
    (void)state;
    if (geteuid() != 0) {
        skip(); /* needs root to mount a tmpfs; the limit-layer tests above cover the
                   logic */
        return;
    }
    mr_it_cluster_init(&cluster, 3);
    f = 2;
    memcpy(dir, cluster.nodes[f].data_dir, sizeof cluster.nodes[f].data_dir);
    dir[sizeof cluster.nodes[f].data_dir - 1] = '\0';
    mkdir(dir, 0755);
    if (mount("tmpfs", dir, "tmpfs", 0, "size=6m") != 0) {
        fprintf(stderr,
                "SKIP: mount -t tmpfs failed (%s): the real tmpfs test needs it\n",
                strerror(errno));
        skip();
        return;
    }
    memcpy(mounted, dir, sizeof mounted);
    start_all(NULL);
    leader = mr_it_wait_leader(&cluster, 10000, 1);
    assert_true(leader >= 0);
    if (leader == f) {
        struct mr_it_resp r = mr_it_http(&cluster, f, "POST", "/v1/leader/transfer",
                                         "{\"id\":\"n1\"}", NULL);
        EXPECT_STATUS(r, 200);
        mr_it_resp_free(&r);
        leader = mr_it_wait_leader(&cluster, 10000, 1);
        assert_true(leader >= 0 && leader != f);
    }
    assert_int_equal(put(leader, "before", value, NULL, 0), 200);
    /* fill the tmpfs to the last byte */
    snprintf(ballast, sizeof ballast, "%s/ballast", dir);
    fd = open(ballast, O_CREAT | O_WRONLY, 0644);
    assert_true(fd >= 0);
    memset(buf, 'b', sizeof buf);
    while (write(fd, buf, sizeof buf) > 0) {
    }
    while (write(fd, buf, 512) > 0) {
    }
    close(fd);
    write_until_alarm(leader, f, "a", 0);
    wait_alarm(f, 1, 5000);
    assert_string_equal(status_of(f, "j.role"), "follower");
    assert_int_equal(put(f, "refused", "1", NULL, 0), 507);
    assert_int_equal(unlink(ballast), 0); /* space returns */
    wait_alarm(f, 0, 20000);
    assert_true(mr_it_same_state(&cluster, 20000, NULL, NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_a_follower_with_a_full_disk_stays_a_member_and_catches_up, setup_none,
            teardown_cluster),
        cmocka_unit_test_setup_teardown(
            test_a_leader_with_a_full_disk_hands_over_and_recovers, setup_none,
            teardown_cluster),
        cmocka_unit_test_setup_teardown(
            test_max_data_mb_raises_the_alarm_and_compaction_brings_it_under, setup_none,
            teardown_cluster),
        cmocka_unit_test_setup_teardown(
            test_a_real_full_tmpfs_raises_the_alarm_and_recovers, setup_none,
            teardown_cluster),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
