/* Integration: online backups (GET /v1/backup, `moonraft backup`), restoring
 * one into a new cluster (`moonraft data restore`), and recovering from a
 * permanent loss of quorum (`moonraft data recover --force-new-cluster`). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define ADMIN "Authorization: Bearer adm\r\n"
#define MAX_WRITES 20000

static struct mr_it_cluster src, dst;

static int setup_none(void **state)
{
    (void)state;
    memset(&src, 0, sizeof src);
    memset(&dst, 0, sizeof dst);
    return 0;
}

static int teardown_both(void **state)
{
    int bad = 0;
    (void)state;
    if (src.n > 0) bad += mr_it_cluster_destroy(&src);
    if (dst.n > 0) bad += mr_it_cluster_destroy(&dst);
    return bad;
}

/* Runs a shell command line, capturing stdout+stderr into out (cap bytes).
 * Returns the exit code (-1 if it did not exit). */
static int run(char *out, size_t cap, const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    FILE *p;
    size_t n = 0;
    int st;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    strncat(cmd, " 2>&1", sizeof cmd - strlen(cmd) - 1);
    p = popen(cmd, "r");
    assert_non_null(p);
    while (n + 1 < cap) {
        size_t got = fread(out + n, 1, cap - 1 - n, p);
        if (got == 0) break;
        n += got;
    }
    out[n] = '\0';
    st = pclose(p);
    fprintf(stderr, "$ %s\n%s", cmd, out);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The value of "name: value" in tool output, in a static buffer ("" if absent). */
static const char *field(const char *out, const char *name)
{
    static char v[256];
    char key[64];
    const char *p;
    size_t n;
    snprintf(key, sizeof key, "\n%s: ", name);
    v[0] = '\0';
    p = strstr(out, key);
    if (p == NULL) return v;
    p += strlen(key);
    n = strcspn(p, "\n");
    if (n >= sizeof v) n = sizeof v - 1;
    memcpy(v, p, n);
    v[n] = '\0';
    return v;
}

static const char *status_of(struct mr_it_cluster *c, int i, const char *expr)
{
    static char v[256];
    struct mr_it_resp r = mr_it_http(c, i, "GET", "/v1/status?hash=true", NULL, NULL);
    snprintf(v, sizeof v, "%s", r.status == 200 ? mr_it_jq(r.body, expr) : "<down>");
    mr_it_resp_free(&r);
    return v;
}

#define VOTERS_EXPR                                                                      \
    "(function() local c = 0 for _, m in ipairs(j.members) do if m.voter then c = c + "  \
    "1 "                                                                                 \
    "end end return c end)()"

/* Waits until node i's status lists `want` voters. */
static void wait_voters(struct mr_it_cluster *c, int i, int want)
{
    long long t0 = mr_it_now_ms();
    char w[8];
    snprintf(w, sizeof w, "%d", want);
    while (strcmp(status_of(c, i, VOTERS_EXPR), w) != 0) {
        if (mr_it_now_ms() - t0 > 30000) {
            fprintf(stderr, "%s never had %d voters\n", c->nodes[i].name, want);
            mr_it_dump_logs(c);
            fail();
        }
        mr_it_sleep_ms(100);
    }
}

/* ---- the write load ------------------------------------------------------------- */

struct writer {
    pthread_t thread;
    int port;
    int stop; /* atomic */
    int next;
    long long index[MAX_WRITES]; /* log index of an acknowledged write, 0 if not */
    int n_acked, n_failed;       /* atomic */
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
        r = mr_it_http_port(w->port, "PUT", path, body, NULL, 5000);
        if (r.status == 200) {
            w->index[i] = atoll(mr_it_jq(r.body, "j.index"));
            __atomic_add_fetch(&w->n_acked, 1, __ATOMIC_SEQ_CST);
        } else {
            fprintf(stderr, "write w%d failed: %d %s\n", i, r.status,
                    r.body ? r.body : "");
            __atomic_add_fetch(&w->n_failed, 1, __ATOMIC_SEQ_CST);
        }
        mr_it_resp_free(&r);
    }
    return NULL;
}

static void let_writes_in(struct writer *w, int more)
{
    int base = __atomic_load_n(&w->n_acked, __ATOMIC_SEQ_CST);
    long long t0 = mr_it_now_ms();
    while (__atomic_load_n(&w->n_acked, __ATOMIC_SEQ_CST) < base + more) {
        assert_true(mr_it_now_ms() - t0 < 30000);
        mr_it_sleep_ms(10);
    }
}

/* ---- tests ------------------------------------------------------------------------ */

static void
test_a_backup_from_a_follower_under_load_restores_into_a_new_cluster(void **state)
{
    static struct writer w;
    char out[8192], file[400], peers[256], join[64], hash[65], leader_before[64],
        term_before[32];
    long long index;
    int i, l, f, d;
    (void)state;

    mr_it_cluster_init(&src, 3);
    snprintf(src.extra_args, sizeof src.extra_args, "--admin-token adm");
    for (i = 0; i < 3; i++) mr_it_start_static(&src, i, NULL);
    l = mr_it_wait_leader(&src, 10000, 1);
    assert_true(l >= 0);
    f = (l + 1) % 3;
    snprintf(leader_before, sizeof leader_before, "%.63s", status_of(&src, f, "j.leader"));
    snprintf(term_before, sizeof term_before, "%.31s", status_of(&src, l, "j.term"));

    memset(&w, 0, sizeof w);
    w.port = src.nodes[l].http_port;
    assert_int_equal(pthread_create(&w.thread, NULL, writer_main, &w), 0);
    let_writes_in(&w, 300);
    /* an older snapshot exists: the backup must take a newer one */
    assert_true(mr_it_snapshot(&src, f, ADMIN) > 0);
    let_writes_in(&w, 100);

    snprintf(file, sizeof file, "%s/backup.mrb", src.root);
    assert_int_equal(run(out, sizeof out,
                         "%s/moonraft backup 127.0.0.1:%d %s --token adm", MR_BINARY_DIR,
                         src.nodes[f].http_port, file),
                     0);
    index = atoll(field(out, "index"));
    snprintf(hash, sizeof hash, "%s", field(out, "state_hash"));
    assert_true(index > 0);
    assert_int_equal(strlen(hash), 64);
    assert_string_equal(field(out, "node"), src.nodes[f].name);
    assert_true(atoll(field(out, "size")) > 0);
    assert_int_equal(strlen(field(out, "checksum")), 8);

    let_writes_in(&w, 100); /* writes go on after the backup too */
    __atomic_store_n(&w.stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(w.thread, NULL);
    /* The source did not notice: every write succeeded, same leader, same term. */
    assert_int_equal(w.n_failed, 0);
    assert_string_equal(status_of(&src, f, "j.leader"), leader_before);
    assert_string_equal(status_of(&src, l, "j.term"), term_before);
    /* the backup is a prefix, not the end: writes came after it */
    assert_true(w.index[w.next - 1] > index);

    /* A new cluster: its first node restored, the others join it. */
    mr_it_cluster_init(&dst, 3);
    snprintf(dst.extra_args, sizeof dst.extra_args,
             "--cluster-id restored --admin-token adm");
    snprintf(peers, sizeof peers, "n1=127.0.0.1:%d/127.0.0.1:%d", dst.nodes[0].raft_port,
             dst.nodes[0].http_port);
    assert_int_equal(run(out, sizeof out,
                         "%s/moonraft data restore %s --data-dir %s --id n1 --peers %s "
                         "--cluster-id restored",
                         MR_BINARY_DIR, file, dst.nodes[0].data_dir, peers),
                     0);
    assert_int_equal(atoll(field(out, "index")), index);
    mr_it_start_args(&dst, 0, "");
    assert_int_equal(mr_it_wait_leader(&dst, 10000, 1), 0);
    /* Before any write: the restored state is the source's at the backup's
     * index (the new leader's no-op changes nothing). */
    {
        char now[65];
        long long applied = 0;
        assert_true(mr_it_state_hash(&dst, 0, 10000, now, &applied));
        assert_string_equal(now, hash);
        assert_true(applied >= index);
    }
    snprintf(join, sizeof join, "--join 127.0.0.1:%d", dst.nodes[0].http_port);
    mr_it_start_args(&dst, 1, join);
    mr_it_start_args(&dst, 2, join);
    wait_voters(&dst, 0, 3);

    /* Exactly the writes up to the backup's index are there. */
    for (i = 0; i < w.next; i++) {
        char path[64];
        struct mr_it_resp r;
        snprintf(path, sizeof path, "/v1/kv/w%d", i);
        r = mr_it_http(&dst, 0, "GET", path, NULL, NULL);
        if (w.index[i] > 0 && w.index[i] <= index) {
            char want[16];
            snprintf(want, sizeof want, "%d", i);
            MR_IT_EXPECT_STATUS(&dst, r, 200);
            assert_string_equal(mr_it_jq(r.body, "j.value"), want);
        } else {
            MR_IT_EXPECT_STATUS(&dst, r, 404);
        }
        mr_it_resp_free(&r);
    }
    /* It takes writes and its members agree. */
    for (i = 0; i < 20; i++) {
        char path[64];
        struct mr_it_resp r;
        snprintf(path, sizeof path, "/v1/kv/new%d", i);
        d = i % 3;
        r = mr_it_http(&dst, d, "PUT", path, "1", NULL);
        MR_IT_EXPECT_STATUS(&dst, r, 200);
        mr_it_resp_free(&r);
    }
    assert_true(mr_it_same_state(&dst, 20000, NULL, NULL));
    assert_true(mr_it_same_state(&src, 20000, NULL, NULL));
}

/* VmHWM (peak resident set, kB) of a process, -1 if unreadable. */
static long long vm_hwm_kb(pid_t pid)
{
    char path[64], line[256];
    long long v = -1;
    FILE *f;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    if (f == NULL) return -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "VmHWM:", 6) == 0) v = atoll(line + 6);
    fclose(f);
    return v;
}

/* Resets the peak to the current resident set (Linux >= 4.0). */
static void reset_hwm(pid_t pid)
{
    char path[64];
    FILE *f;
    snprintf(path, sizeof path, "/proc/%d/clear_refs", (int)pid);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs("5", f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static void test_a_large_backup_is_streamed_without_holding_it_in_memory(void **state)
{
    char out[8192], file[400], *big;
    const int n_values = 56, value_len = 900 * 1000; /* about 50 MB of state */
    long long before, after, size;
    int i;
    (void)state;

    mr_it_cluster_init(&src, 1);
    snprintf(src.extra_args, sizeof src.extra_args, "--admin-token adm");
    mr_it_start_static(&src, 0, NULL);
    assert_int_equal(mr_it_wait_leader(&src, 10000, 1), 0);
    big = malloc((size_t)value_len + 3);
    assert_non_null(big);
    for (i = 0; i < n_values; i++) {
        char path[32];
        struct mr_it_resp r;
        memset(big, 'a' + i % 26, (size_t)value_len + 2);
        big[0] = big[value_len + 1] = '"';
        big[value_len + 2] = '\0';
        snprintf(path, sizeof path, "/v1/kv/big%d", i);
        r = mr_it_http(&src, 0, "PUT", path, big, NULL);
        MR_IT_EXPECT_STATUS(&src, r, 200);
        mr_it_resp_free(&r);
    }
    free(big);
    /* The snapshot the backup will reuse (--max-lag): no fork during it. */
    assert_true(mr_it_snapshot(&src, 0, ADMIN) > 0);

    reset_hwm(src.nodes[0].pid);
    before = vm_hwm_kb(src.nodes[0].pid);
    assert_true(before > 0);
    snprintf(file, sizeof file, "%s/big.mrb", src.root);
    assert_int_equal(
        run(out, sizeof out,
            "%s/moonraft backup 127.0.0.1:%d %s --token adm --max-lag 1000000",
            MR_BINARY_DIR, src.nodes[0].http_port, file),
        0);
    after = vm_hwm_kb(src.nodes[0].pid);
    size = atoll(field(out, "size"));
    fprintf(stderr, "backup of %lld bytes: node peak RSS %lld kB -> %lld kB\n", size,
            before, after);
    assert_true(size > (long long)n_values * value_len);
    /* Building the answer in memory would add at least the backup's size;
     * streaming costs a few chunks (MR_HTTP_STREAM_AHEAD x 256 KiB). */
    assert_true(after - before < size / 1024 / 4);
}

/* A one-node source cluster (admin token "adm") holding keys k0..k<n-1>. */
static void start_source(int n)
{
    int i;
    mr_it_cluster_init(&src, 1);
    snprintf(src.extra_args, sizeof src.extra_args, "--admin-token adm");
    mr_it_start_static(&src, 0, NULL);
    assert_int_equal(mr_it_wait_leader(&src, 10000, 1), 0);
    for (i = 0; i < n; i++) {
        char path[32];
        struct mr_it_resp r;
        snprintf(path, sizeof path, "/v1/kv/k%d", i);
        r = mr_it_http(&src, 0, "PUT", path, "1", NULL);
        MR_IT_EXPECT_STATUS(&src, r, 200);
        mr_it_resp_free(&r);
    }
}

/* Interrupted while the node has not answered yet (paused), the tool removes
 * FILE.part and dies of the signal; a backup taken afterwards is whole. */
static void test_an_interrupted_backup_leaves_no_partial_file(void **state)
{
    static const int sigs[] = {SIGINT, SIGTERM};
    char out[8192], file[400], part[420], port[16];
    struct stat sb;
    size_t k;
    (void)state;

    start_source(20);
    snprintf(file, sizeof file, "%s/cut.mrb", src.root);
    snprintf(part, sizeof part, "%s.part", file);
    snprintf(port, sizeof port, "127.0.0.1:%d", src.nodes[0].http_port);
    for (k = 0; k < sizeof sigs / sizeof sigs[0]; k++) {
        char bin[300];
        int st;
        long long t0;
        pid_t pid;
        mr_it_pause(&src, 0); /* the request is accepted by the kernel, never answered */
        snprintf(bin, sizeof bin, "%s/moonraft", MR_BINARY_DIR);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            int null = open("/dev/null", O_WRONLY);
            if (null >= 0) {
                dup2(null, 1);
                dup2(null, 2);
            }
            execl(bin, bin, "backup", port, file, "--token", "adm", (char *)NULL);
            _exit(127);
        }
        t0 = mr_it_now_ms();
        while (stat(part, &sb) != 0) {
            assert_true(mr_it_now_ms() - t0 < 10000);
            mr_it_sleep_ms(10);
        }
        mr_it_sleep_ms(200); /* into the download's wait */
        assert_int_equal(kill(pid, sigs[k]), 0);
        assert_int_equal(waitpid(pid, &st, 0), pid);
        mr_it_resume(&src, 0);
        fprintf(stderr, "backup tool after signal %d: %s %d\n", sigs[k],
                WIFSIGNALED(st) ? "killed by" : "exit", WIFSIGNALED(st) ? WTERMSIG(st)
                                                                       : WEXITSTATUS(st));
        assert_true(WIFSIGNALED(st));
        assert_int_equal(WTERMSIG(st), sigs[k]);
        assert_int_not_equal(stat(part, &sb), 0);
        assert_int_not_equal(stat(file, &sb), 0);
    }
    /* the node is fine and a backup now completes */
    assert_int_equal(run(out, sizeof out, "%s/moonraft backup %s %s --token adm",
                         MR_BINARY_DIR, port, file),
                     0);
    assert_int_equal(stat(file, &sb), 0);
    assert_int_not_equal(stat(part, &sb), 0);
}

static void test_backup_and_restore_refuse_what_they_must(void **state)
{
    char out[8192], file[400], bad[400], dir[400], peers[256];
    struct mr_it_resp r;
    FILE *fp;
    struct stat sb;
    int i;
    (void)state;

    start_source(10);
    /* Not an admin: refused, and the CLI leaves no file behind. */
    r = mr_it_http(&src, 0, "GET", "/v1/backup", NULL, NULL);
    MR_IT_EXPECT_STATUS(&src, r, 401);
    mr_it_resp_free(&r);
    r = mr_it_http(&src, 0, "GET", "/v1/backup", NULL, "Authorization: Bearer nope\r\n");
    MR_IT_EXPECT_STATUS(&src, r, 403);
    mr_it_resp_free(&r);
    snprintf(file, sizeof file, "%s/b.mrb", src.root);
    assert_int_equal(run(out, sizeof out,
                         "%s/moonraft backup 127.0.0.1:%d %s --token nope", MR_BINARY_DIR,
                         src.nodes[0].http_port, file),
                     1);
    assert_non_null(strstr(out, "403"));
    assert_int_not_equal(stat(file, &sb), 0);
    assert_int_equal(run(out, sizeof out,
                         "%s/moonraft backup 127.0.0.1:%d %s --token adm", MR_BINARY_DIR,
                         src.nodes[0].http_port, file),
                     0);

    snprintf(peers, sizeof peers, "r1=127.0.0.1:1/127.0.0.1:2");
    snprintf(dir, sizeof dir, "%s/restored", src.root);
    /* Truncated. */
    snprintf(bad, sizeof bad, "%s/truncated.mrb", src.root);
    assert_int_equal(run(out, sizeof out, "head -c %lld %s > %s",
                         (long long)atoll(field(out, "size")) - 1, file, bad),
                     0);
    assert_int_equal(run(out, sizeof out,
                         "%s/moonraft data restore %s --data-dir %s --id r1 --peers %s "
                         "--cluster-id new",
                         MR_BINARY_DIR, bad, dir, peers),
                     3);
    assert_non_null(strstr(out, "truncated"));
    assert_int_not_equal(stat(dir, &sb), 0); /* nothing created */
    /* One flipped byte in the middle. */
    snprintf(bad, sizeof bad, "%s/flipped.mrb", src.root);
    assert_int_equal(run(out, sizeof out, "cp %s %s", file, bad), 0);
    fp = fopen(bad, "r+b");
    assert_non_null(fp);
    fseek(fp, 200, SEEK_SET);
    i = fgetc(fp);
    fseek(fp, 200, SEEK_SET);
    fputc(i ^ 0x40, fp);
    fclose(fp);
    assert_int_equal(run(out, sizeof out,
                         "%s/moonraft data restore %s --data-dir %s --id r1 --peers %s "
                         "--cluster-id new",
                         MR_BINARY_DIR, bad, dir, peers),
                     3);
    assert_non_null(strstr(out, "checksum mismatch"));
    assert_int_not_equal(stat(dir, &sb), 0);
    /* A data dir in use: refused, and left alone. */
    assert_int_equal(run(out, sizeof out,
                         "%s/moonraft data restore %s --data-dir %s --id r1 --peers %s "
                         "--cluster-id new",
                         MR_BINARY_DIR, file, src.nodes[0].data_dir, peers),
                     2);
    assert_non_null(strstr(out, "not empty"));
    /* The source's own cluster id: refused. */
    assert_int_equal(run(out, sizeof out,
                         "%s/moonraft data restore %s --data-dir %s --id r1 --peers %s "
                         "--cluster-id moonraft",
                         MR_BINARY_DIR, file, dir, peers),
                     2);
    /* The intact file restores. */
    assert_int_equal(run(out, sizeof out,
                         "%s/moonraft data restore %s --data-dir %s --id r1 --peers %s "
                         "--cluster-id new && %s/moonraft data verify %s",
                         MR_BINARY_DIR, file, dir, peers, MR_BINARY_DIR, dir),
                     0);
    assert_non_null(strstr(out, "ok: every checksum verified"));
}

static void test_force_new_cluster_recovers_the_survivor_of_a_quorum_loss(void **state)
{
    char out[8192], cmd[600], join[64], hash[65];
    struct mr_it_resp r;
    int i, k, l, s;
    (void)state;

    mr_it_cluster_init(&src, 3);
    snprintf(src.extra_args, sizeof src.extra_args, "--admin-token adm");
    for (i = 0; i < 3; i++) mr_it_start_static(&src, i, NULL);
    l = mr_it_wait_leader(&src, 10000, 1);
    assert_true(l >= 0);
    for (k = 0; k < 100; k++) {
        char path[32], body[16];
        snprintf(path, sizeof path, "/v1/kv/k%d", k);
        snprintf(body, sizeof body, "%d", k);
        r = mr_it_http(&src, l, "PUT", path, body, NULL);
        MR_IT_EXPECT_STATUS(&src, r, 200);
        mr_it_resp_free(&r);
    }
    assert_true(
        mr_it_same_state(&src, 20000, NULL, NULL)); /* the survivor has them all */

    /* Two members are lost for good. */
    s = (l + 1) % 3;
    for (i = 0; i < 3; i++) {
        if (i == s) continue;
        mr_it_kill9(&src, i);
        assert_int_equal(run(out, sizeof out, "rm -rf %s", src.nodes[i].data_dir), 0);
    }
    snprintf(cmd, sizeof cmd, "%s/moonraft data recover %s", MR_BINARY_DIR,
             src.nodes[s].data_dir);
    /* Refused while the node runs, and without the flag. */
    assert_int_equal(run(out, sizeof out, "%s --force-new-cluster", cmd), 1);
    assert_non_null(strstr(out, "in use"));
    mr_it_kill9(&src, s);
    assert_int_equal(run(out, sizeof out, "%s", cmd), 2);
    assert_int_equal(run(out, sizeof out, "%s --force-new-cluster", cmd), 0);
    assert_non_null(strstr(out, "WARNING"));

    mr_it_start_args(&src, s, "");
    assert_int_equal(mr_it_wait_leader(&src, 10000, 1), s);
    snprintf(join, sizeof join, "--join 127.0.0.1:%d", src.nodes[s].http_port);
    for (i = 0; i < 3; i++)
        if (i != s) mr_it_start_args(&src, i, join);
    wait_voters(&src, s, 3);
    assert_true(mr_it_same_state(&src, 20000, NULL, NULL));
    /* Every write is on every node. */
    for (i = 0; i < 3; i++) {
        for (k = 0; k < 100; k++) {
            char path[64], want[16];
            snprintf(path, sizeof path, "/v1/kv/k%d?consistency=stale", k);
            snprintf(want, sizeof want, "%d", k);
            r = mr_it_http(&src, i, "GET", path, NULL, NULL);
            MR_IT_EXPECT_STATUS(&src, r, 200);
            assert_string_equal(mr_it_jq(r.body, "j.value"), want);
            mr_it_resp_free(&r);
        }
    }
    /* New writes work, through any member. */
    for (k = 0; k < 30; k++) {
        char path[32];
        snprintf(path, sizeof path, "/v1/kv/after%d", k);
        r = mr_it_http(&src, k % 3, "PUT", path, "1", NULL);
        MR_IT_EXPECT_STATUS(&src, r, 200);
        mr_it_resp_free(&r);
    }
    /* And after a restart from snapshots, the states still agree. */
    assert_true(mr_it_same_state(&src, 20000, hash, NULL));
    for (i = 0; i < 3; i++) assert_true(mr_it_snapshot(&src, i, ADMIN) > 0);
    for (i = 0; i < 3; i++) assert_int_equal(mr_it_stop(&src, i), 0);
    for (i = 0; i < 3; i++) mr_it_start_args(&src, i, i == s ? "" : join);
    assert_true(mr_it_wait_leader(&src, 10000, 1) >= 0);
    assert_true(mr_it_same_state(&src, 20000, NULL, NULL));
    {
        char now[65];
        assert_true(mr_it_state_hash(&src, s, 10000, now, NULL));
        assert_string_equal(now, hash);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_a_backup_from_a_follower_under_load_restores_into_a_new_cluster,
            setup_none, teardown_both),
        cmocka_unit_test_setup_teardown(
            test_a_large_backup_is_streamed_without_holding_it_in_memory, setup_none,
            teardown_both),
        cmocka_unit_test_setup_teardown(test_an_interrupted_backup_leaves_no_partial_file,
                                        setup_none, teardown_both),
        cmocka_unit_test_setup_teardown(test_backup_and_restore_refuse_what_they_must,
                                        setup_none, teardown_both),
        cmocka_unit_test_setup_teardown(
            test_force_new_cluster_recovers_the_survivor_of_a_quorum_loss, setup_none,
            teardown_both),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
