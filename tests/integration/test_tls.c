/* Integration tests: TLS on both ports, and SIGHUP reload.
 *
 * Certificates are made at test time (fixtures/gen-certs.sh, the `openssl`
 * command) in the cluster's temp dir: nothing is checked in. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static struct mr_it_cluster cluster;
static char certs[300];

#define EXPECT_STATUS(resp, want) MR_IT_EXPECT_STATUS(&cluster, resp, want)

static const char *cert(const char *name)
{
    static char buf[4][400];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", certs, name);
    return buf[k];
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return system(cmd);
}

/* Runs a command and returns its first output line (static buffer). */
static const char *sh_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *sh_line(const char *fmt, ...)
{
    static char out[512];
    char cmd[2048];
    FILE *p;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    out[0] = '\0';
    p = popen(cmd, "r");
    if (p == NULL) return out;
    if (fgets(out, sizeof out, p) == NULL) out[0] = '\0';
    pclose(p);
    return out;
}

static int setup(void **state)
{
    (void)state;
    memset(&cluster, 0, sizeof cluster);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    mr_it_set_tls(NULL, NULL, NULL);
    return mr_it_cluster_destroy(&cluster);
}

/* Makes certificates under the cluster's root. */
static void make_certs(void)
{
    snprintf(certs, sizeof certs, "%s/certs", cluster.root);
    assert_int_equal(
        sh("sh %s/tests/integration/fixtures/gen-certs.sh %s", MR_SOURCE_DIR, certs), 0);
}

/* 1 when node i's log contains `needle` within timeout_ms. */
static int log_has(int i, const char *needle, int timeout_ms)
{
    long long end = mr_it_now_ms() + timeout_ms;
    do {
        FILE *f = fopen(cluster.nodes[i].log_path, "r");
        char line[4096];
        int found = 0;
        if (f != NULL) {
            while (!found && fgets(line, sizeof line, f) != NULL)
                found = strstr(line, needle) != NULL;
            fclose(f);
        }
        if (found) return 1;
        mr_it_sleep_ms(50);
    } while (mr_it_now_ms() < end);
    return 0;
}

static void put_key(int node, const char *key, const char *value, const char *hdr)
{
    char path[256];
    struct mr_it_resp r;
    snprintf(path, sizeof path, "/v1/kv/%s", key);
    r = mr_it_http(&cluster, node, "PUT", path, value, hdr);
    EXPECT_STATUS(r, 200);
    mr_it_resp_free(&r);
}

/* Polls GET /v1/kv/key on node i until it shows value (a follower applies a
 * little after the leader answered). */
static int key_shows(int i, const char *key, const char *value)
{
    char path[256];
    long long end = mr_it_now_ms() + 10000;
    snprintf(path, sizeof path, "/v1/kv/%s", key);
    do {
        struct mr_it_resp r = mr_it_http(&cluster, i, "GET", path, NULL, NULL);
        int ok = r.status == 200 && strcmp(mr_it_jq(r.body, "j.value"), value) == 0;
        mr_it_resp_free(&r);
        if (ok) return 1;
        mr_it_sleep_ms(50);
    } while (mr_it_now_ms() < end);
    return 0;
}

/* The subject of the certificate node i serves on its HTTPS port. */
static const char *served_subject(int i)
{
    return sh_line(
        "openssl s_client -connect 127.0.0.1:%d -CAfile %s </dev/null 2>/dev/null "
        "| openssl x509 -noout -subject",
        cluster.nodes[i].http_port, cert("ca.pem"));
}

static void test_tls_cluster_forms_replicates_and_fails_closed(void **state)
{
    char tls[1200], peers[300];
    struct mr_it_resp r;
    int leader, i, fd;
    struct sockaddr_in a;
    (void)state;
    mr_it_cluster_init(&cluster, 5);
    make_certs();
    snprintf(tls, sizeof tls, "--tls-cert %s --tls-key %s --tls-ca %s",
             cert("server.pem"), cert("server.key"), cert("ca.pem"));
    cluster.n = 3; /* n1..n3 are the cluster; n4 and n5 are intruders */
    for (i = 0; i < 3; i++) mr_it_start_static(&cluster, i, tls);
    assert_int_equal(mr_it_set_tls(cert("ca.pem"), NULL, NULL), 0);
    leader = mr_it_wait_leader(&cluster, 15000, 1);
    assert_true(leader >= 0);
    assert_true(log_has(leader, "TLS on: certificate", 100));

    /* Writes over HTTPS replicate to every node. */
    put_key(leader, "tls", "\"encrypted\"", NULL);
    put_key((leader + 1) % 3, "via_follower", "42", NULL); /* forwarded over TLS */
    for (i = 0; i < 3; i++) {
        assert_true(key_shows(i, "tls", "encrypted"));
        assert_true(key_shows(i, "via_follower", "42"));
    }
    /* curl agrees that the node is an HTTPS server with a valid certificate. */
    assert_int_equal(
        sh("curl -sSf --max-time 10 --cacert %s https://127.0.0.1:%d/v1/status "
           ">/dev/null",
           cert("ca.pem"), cluster.nodes[leader].http_port),
        0);

    /* The console speaks https, and checks the certificate against its CA. */
    assert_string_equal(sh_line("%s/moonraft console --tls-ca %s https://127.0.0.1:%d "
                                "-e 'print((kv.get(\"tls\")))' 2>&1",
                                MR_BINARY_DIR, cert("ca.pem"),
                                cluster.nodes[leader].http_port),
                        "encrypted\n");
    assert_non_null(strstr(sh_line("%s/moonraft console --tls-ca %s https://127.0.0.1:%d "
                                   "-e 'print((kv.get(\"tls\")))' 2>&1",
                                   MR_BINARY_DIR, cert("rogue-ca.pem"),
                                   cluster.nodes[leader].http_port),
                           "certificate verify failed"));

    /* Plaintext HTTP to the HTTPS port: a 400 that says why; the node is fine. */
    mr_it_set_tls(NULL, NULL, NULL);
    r = mr_it_http(&cluster, leader, "GET", "/v1/status", NULL, NULL);
    EXPECT_STATUS(r, 400);
    assert_non_null(strstr(r.body, "HTTPS"));
    mr_it_resp_free(&r);
    /* Garbage that starts like a TLS record: the connection dies, nothing else. */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)cluster.nodes[leader].http_port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(send(fd, "\x16\x03\x01\x00\x05garbagegarbage", 19, MSG_NOSIGNAL),
                     19);
    {
        char buf[256];
        ssize_t n;
        while ((n = recv(fd, buf, sizeof buf, 0)) > 0) {
        }
    }
    close(fd);
    mr_it_set_tls(cert("ca.pem"), NULL, NULL);
    put_key(leader, "after_garbage", "1", NULL);

    /* A plaintext node dialing a TLS peer port is refused, and both logs say
     * why. n4 believes it forms a cluster with n1. */
    snprintf(peers, sizeof peers, "--peers n1=127.0.0.1:%d,n4=127.0.0.1:%d",
             cluster.nodes[0].raft_port, cluster.nodes[3].raft_port);
    mr_it_start_args(&cluster, 3, peers);
    assert_true(log_has(0, "this node requires TLS on its peer port", 10000));
    assert_true(log_has(3, "refused by the peer: this node requires TLS", 10000));
    /* A TLS node whose certificate the cluster CA did not sign (mutual TLS). */
    snprintf(
        peers, sizeof peers,
        "--peers n1=127.0.0.1:%d,n5=127.0.0.1:%d --tls-cert %s --tls-key %s --tls-ca %s",
        cluster.nodes[0].raft_port, cluster.nodes[4].raft_port, cert("rogue.pem"),
        cert("rogue.key"), cert("ca.pem"));
    mr_it_start_args(&cluster, 4, peers);
    assert_true(log_has(0, "certificate verify failed", 10000));
    /* The cluster did not notice. */
    put_key(leader, "after_intruders", "2", NULL);
    for (i = 0; i < 3; i++) assert_true(key_shows(i, "after_intruders", "2"));
    cluster.n = 5; /* so teardown stops n4 and n5 too */
}

/* Runs a command line (stderr joined) into out; returns its exit code. */
static int sh_all(char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int sh_all(char *out, size_t cap, const char *fmt, ...)
{
    char cmd[2048];
    size_t n = 0;
    FILE *p;
    int st;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    strncat(cmd, " 2>&1", sizeof cmd - strlen(cmd) - 1);
    out[0] = '\0';
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

static void test_backup_over_https_is_verified_and_a_wrong_ca_leaves_no_file(void **state)
{
    char args[1024], out[8192], file[400], part[410], size[64], *big;
    struct stat sb;
    int i;
    (void)state;
    mr_it_cluster_init(&cluster, 1);
    make_certs();
    snprintf(args, sizeof args, "--tls-cert %s --tls-key %s --tls-ca %s",
             cert("server.pem"), cert("server.key"), cert("ca.pem"));
    mr_it_start_static(&cluster, 0, args);
    assert_int_equal(mr_it_set_tls(cert("ca.pem"), NULL, NULL), 0);
    assert_int_equal(mr_it_wait_leader(&cluster, 15000, 1), 0);
    /* About 2.4 MB of state: the backup spans many chunks of the stream. */
    big = malloc(100003);
    assert_non_null(big);
    for (i = 0; i < 24; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        memset(big, 'a' + i, 100002);
        big[0] = big[100001] = '"';
        big[100002] = '\0';
        put_key(0, key, big, NULL);
    }
    free(big);
    snprintf(file, sizeof file, "%s/tls.mrb", cluster.root);
    snprintf(part, sizeof part, "%s.part", file);

    /* A CA that did not sign the node's certificate: refused, nothing left. */
    assert_int_equal(sh_all(out, sizeof out,
                            "%s/moonraft backup https://127.0.0.1:%d %s "
                            "--tls-ca %s",
                            MR_BINARY_DIR, cluster.nodes[0].http_port, file,
                            cert("rogue-ca.pem")),
                     1);
    assert_non_null(strstr(out, "certificate verify failed"));
    assert_non_null(strstr(out, "TLS with 127.0.0.1"));
    assert_int_not_equal(stat(file, &sb), 0);
    assert_int_not_equal(stat(part, &sb), 0);
    /* Plain http to the https port: the node's 400 is shown, nothing left. */
    assert_int_equal(sh_all(out, sizeof out, "%s/moonraft backup 127.0.0.1:%d %s",
                            MR_BINARY_DIR, cluster.nodes[0].http_port, file),
                     1);
    assert_non_null(strstr(out, "400"));
    assert_int_not_equal(stat(file, &sb), 0);
    assert_int_not_equal(stat(part, &sb), 0);

    /* The right CA from the environment, as for `moonraft console`: the
     * backup arrives, the tool verified it, and it restores. */
    assert_int_equal(
        sh_all(out, sizeof out,
               "MOONRAFT_TLS_CA=%s %s/moonraft backup https://127.0.0.1:%d %s",
               cert("ca.pem"), MR_BINARY_DIR, cluster.nodes[0].http_port, file),
        0);
    assert_non_null(strstr(out, "\nindex: "));
    assert_non_null(strstr(out, "\nstate_hash: "));
    assert_null(strstr(out, "state_hash: unknown"));
    assert_int_equal(stat(file, &sb), 0);
    assert_int_not_equal(stat(part, &sb), 0);
    assert_true(sb.st_size > 2400000);
    snprintf(size, sizeof size, "\nsize: %lld\n", (long long)sb.st_size);
    assert_non_null(strstr(out, size));
    /* --tls-ca on the command line works the same, and the file checks out. */
    assert_int_equal(sh_all(out, sizeof out,
                            "%s/moonraft backup https://127.0.0.1:%d %s.2 --tls-ca %s "
                            "--max-lag 1000",
                            MR_BINARY_DIR, cluster.nodes[0].http_port, file,
                            cert("ca.pem")),
                     0);
    assert_int_equal(
        sh_all(out, sizeof out,
               "%s/moonraft data restore %s.2 --data-dir %s/restored --id n1 "
               "--peers n1=127.0.0.1:1/127.0.0.1:2 --cluster-id other",
               MR_BINARY_DIR, file, cluster.root),
        0);
}

static void test_tls_sighup_swaps_the_served_certificate(void **state)
{
    char tls[1200];
    int leader, i;
    (void)state;
    mr_it_cluster_init(&cluster, 3);
    make_certs();
    /* Each node reads its own copy, which the test replaces. */
    for (i = 0; i < 3; i++) {
        assert_int_equal(sh("cp %s %s/n%d.pem && cp %s %s/n%d.key", cert("server.pem"),
                            certs, i + 1, cert("server.key"), certs, i + 1),
                         0);
    }
    for (i = 0; i < 3; i++) {
        snprintf(tls, sizeof tls,
                 "--tls-cert %s/n%d.pem --tls-key %s/n%d.key --tls-ca %s", certs, i + 1,
                 certs, i + 1, cert("ca.pem"));
        mr_it_start_static(&cluster, i, tls);
    }
    assert_int_equal(mr_it_set_tls(cert("ca.pem"), NULL, NULL), 0);
    leader = mr_it_wait_leader(&cluster, 15000, 1);
    assert_true(leader >= 0);
    assert_non_null(strstr(served_subject(leader), "CN = moonraft-node\n"));

    assert_int_equal(sh("cp %s %s/n%d.pem && cp %s %s/n%d.key", cert("server2.pem"),
                        certs, leader + 1, cert("server2.key"), certs, leader + 1),
                     0);
    kill(cluster.nodes[leader].pid, SIGHUP);
    assert_true(log_has(leader, "reload: TLS certificate", 10000));
    assert_non_null(strstr(served_subject(leader), "CN = moonraft-node-2"));
    /* The cluster keeps working: old peer connections, new ones, writes. */
    put_key(leader, "after_reload", "1", NULL);
    for (i = 0; i < 3; i++) assert_true(key_shows(i, "after_reload", "1"));
    /* A broken key file is refused and the running certificate stays. */
    assert_int_equal(sh("echo broken > %s/n%d.key", certs, leader + 1), 0);
    kill(cluster.nodes[leader].pid, SIGHUP);
    assert_true(log_has(leader, "reload rejected", 10000));
    assert_non_null(strstr(served_subject(leader), "CN = moonraft-node-2"));
}

static void write_config(const char *path, const char *token, const char *level,
                         int heartbeat_ms)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "return {\n  client_token = \"%s\",\n  log_level = \"%s\",\n  heartbeat_ms = "
            "%d,\n}\n",
            token, level, heartbeat_ms);
    fclose(f);
}

static int status_with(const char *token)
{
    char hdr[200];
    struct mr_it_resp r;
    int st;
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", token);
    r = mr_it_http(&cluster, 0, "GET", "/v1/kv/k", NULL, hdr);
    st = r.status;
    mr_it_resp_free(&r);
    return st;
}

static void
test_sighup_reloads_tokens_and_log_level_and_keeps_a_bad_file_out(void **state)
{
    char conf[400], args[600];
    long long end;
    (void)state;
    mr_it_cluster_init(&cluster, 1);
    snprintf(conf, sizeof conf, "%s/n1.lua", cluster.root);
    write_config(conf, "old-token", "info", 50);
    snprintf(args, sizeof args, "--config %s", conf);
    mr_it_start_static(&cluster, 0, args);
    end = mr_it_now_ms() + 15000;
    while (status_with("old-token") != 404 && mr_it_now_ms() < end) mr_it_sleep_ms(50);
    put_key(0, "k", "1", "Authorization: Bearer old-token\r\n");
    assert_int_equal(status_with("new-token"), 403);
    assert_false(log_has(0, "DEBUG", 10));

    write_config(conf, "new-token", "debug", 70);
    kill(cluster.nodes[0].pid, SIGHUP);
    assert_true(log_has(0, "reload: client_token changed: applied", 10000));
    assert_true(log_has(0, "reload: log_level changed: applied", 100));
    assert_true(log_has(0, "reload: heartbeat_ms changed: needs a restart", 100));
    assert_int_equal(status_with("new-token"), 200);
    assert_int_equal(status_with("old-token"), 403);
    assert_true(log_has(0, "DEBUG", 5000));    /* the new level is in effect */
    assert_false(log_has(0, "new-token", 10)); /* tokens never reach the log */

    /* A file that does not parse: rejected, the running configuration stays. */
    {
        FILE *f = fopen(conf, "w");
        assert_non_null(f);
        fputs("return { client_token = \n", f);
        fclose(f);
    }
    kill(cluster.nodes[0].pid, SIGHUP);
    assert_true(log_has(0, "reload rejected, the running configuration stays", 10000));
    assert_int_equal(status_with("new-token"), 200);
    assert_int_equal(status_with("old-token"), 403);
}

static void test_client_certificates_are_required_and_their_ou_stands_for_the_admin_token(
    void **state)
{
    char args[1200];
    struct mr_it_resp r;
    long long end;
    (void)state;
    mr_it_cluster_init(&cluster, 1);
    make_certs();
    snprintf(args, sizeof args,
             "--tls-cert %s --tls-key %s --tls-ca %s --tls-client-verify true "
             "--tls-admin-ou admin --client-token cli --admin-token adm "
             "--cluster-secret tls-test-cluster-secret",
             cert("server.pem"), cert("server.key"), cert("ca.pem"));
    mr_it_start_static(&cluster, 0, args);
    /* client.pem has OU=admin: no Authorization header needed, even for admin calls. */
    assert_int_equal(
        mr_it_set_tls(cert("ca.pem"), cert("client.pem"), cert("client.key")), 0);
    end = mr_it_now_ms() + 15000;
    do {
        r = mr_it_http(&cluster, 0, "PUT", "/v1/kv/a", "1", NULL);
        if (r.status == 200 || mr_it_now_ms() >= end) break;
        mr_it_resp_free(&r);
        mr_it_sleep_ms(100);
    } while (1);
    EXPECT_STATUS(r, 200);
    mr_it_resp_free(&r);
    r = mr_it_http(&cluster, 0, "POST", "/v1/leader/transfer", "{}", NULL);
    assert_true(r.status != 401 && r.status != 403);
    mr_it_resp_free(&r);
    /* No client certificate, or one from another CA: no TLS session at all. */
    assert_int_equal(mr_it_set_tls(cert("ca.pem"), NULL, NULL), 0);
    r = mr_it_http(&cluster, 0, "GET", "/v1/kv/a", NULL, "Authorization: Bearer cli\r\n");
    assert_int_equal(r.status, 0);
    mr_it_resp_free(&r);
    assert_int_equal(mr_it_set_tls(cert("ca.pem"), cert("rogue.pem"), cert("rogue.key")),
                     0);
    r = mr_it_http(&cluster, 0, "GET", "/v1/kv/a", NULL, "Authorization: Bearer cli\r\n");
    assert_int_equal(r.status, 0);
    mr_it_resp_free(&r);
    /* curl with the certificate, and the tokens still work alongside. */
    assert_int_equal(
        sh("curl -sSf --max-time 10 --cacert %s --cert %s --key %s "
           "-H 'Authorization: Bearer cli' https://127.0.0.1:%d/v1/kv/a >/dev/null",
           cert("ca.pem"), cert("client.pem"), cert("client.key"),
           cluster.nodes[0].http_port),
        0);
}


/* A node joins a TLS cluster (--join): its POST /v1/members goes over HTTPS
 * with the node certificate (the member wants client certificates here), so
 * the admin token it carries never crosses the network in plaintext. Before
 * the fix the joiner spoke plaintext HTTP to the HTTPS port, got 400 forever
 * and sent the token in the clear each time. */
static void test_a_node_joins_a_tls_cluster_over_https_with_its_certificate(void **state)
{
    char tls[1200], args[1500];
    long long end;
    int joined = 0;
    (void)state;
    mr_it_cluster_init(&cluster, 2);
    make_certs();
    snprintf(tls, sizeof tls,
             "--tls-cert %s --tls-key %s --tls-ca %s --tls-client-verify true "
             "--tls-admin-ou admin --admin-token adm --cluster-secret tls-test-cluster-secret",
             cert("server.pem"), cert("server.key"), cert("ca.pem"));
    cluster.n = 1; /* n1 alone; n2 joins it */
    mr_it_start_static(&cluster, 0, tls);
    cluster.nodes[1].pid = 0;
    assert_int_equal(
        mr_it_set_tls(cert("ca.pem"), cert("client.pem"), cert("client.key")), 0);
    assert_int_equal(mr_it_wait_leader(&cluster, 15000, 1), 0);
    cluster.n = 2;
    snprintf(args, sizeof args, "--join 127.0.0.1:%d %s", cluster.nodes[0].http_port, tls);
    mr_it_start_args(&cluster, 1, args);
    end = mr_it_now_ms() + 15000;
    while (!joined && mr_it_now_ms() < end) {
        struct mr_it_resp r = mr_it_http(&cluster, 0, "GET", "/v1/status", NULL, NULL);
        joined = r.status == 200 && strcmp(mr_it_jq(r.body, "#j.members"), "2") == 0;
        mr_it_resp_free(&r);
        if (!joined) mr_it_sleep_ms(100);
    }
    if (!joined) mr_it_dump_logs(&cluster);
    assert_true(joined);
    assert_false(log_has(1, "join request answered", 0));
    /* The joiner gets the log over the peer port, and writes reach it. */
    put_key(0, "joined", "\"yes\"", NULL);
    assert_true(key_shows(1, "joined", "yes"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_tls_cluster_forms_replicates_and_fails_closed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_sighup_swaps_the_served_certificate,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_backup_over_https_is_verified_and_a_wrong_ca_leaves_no_file, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_sighup_reloads_tokens_and_log_level_and_keeps_a_bad_file_out, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_client_certificates_are_required_and_their_ou_stands_for_the_admin_token,
            setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_node_joins_a_tls_cluster_over_https_with_its_certificate, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
