/* Unit tests for src/config: Lua config files, flags, validation. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"

#define SRC(p) MR_SOURCE_DIR "/" p

/* Parses a NULL-terminated flag list (argv[0] is added). */
static int parse(struct mr_cfg *cfg, char *errmsg, ...)
{
    char *argv[64];
    int argc = 0;
    va_list ap;
    argv[argc++] = (char *)"moonraft";
    va_start(ap, errmsg);
    for (char *a; (a = va_arg(ap, char *)) != NULL;) argv[argc++] = a;
    va_end(ap);
    mr_cfg_defaults(cfg);
    return mr_cfg_parse_args(cfg, argc, argv, errmsg);
}

/* Writes `text` to a temp file; returns its malloc'd path. */
static char *write_temp(const char *text)
{
    char *path = strdup("/tmp/mr_cfg_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_flags_alone_are_enough_and_fill_defaults(void **state)
{
    (void)state;
    struct mr_cfg cfg;
    char errmsg[MR_ERRMSG_SIZE] = "";
    assert_int_equal(parse(&cfg, errmsg, "--id", "n7", NULL), 0);
    assert_null(cfg.config_path);
    assert_string_equal(cfg.id, "n7");
    assert_string_equal(cfg.data_dir, "data/n7");
    assert_string_equal(cfg.raft_addr, "127.0.0.1:7001");
    assert_string_equal(cfg.http_addr, "127.0.0.1:8001");
    assert_null(cfg.state_machine); /* the built-in kv.lua */
    assert_int_equal(cfg.heartbeat_ms, 50);
    assert_int_equal(cfg.election_timeout_min_ms, 300);
    assert_int_equal(cfg.election_timeout_max_ms, 600);
    assert_int_equal(cfg.snapshot_entries, 10000);
    assert_int_equal(cfg.snapshot_log_percent, 25);
    assert_int_equal(cfg.snapshot_log_percent_small, 100);
    assert_int_equal(cfg.snapshot_log_mb, 32);
    assert_int_equal(cfg.integrity_check_entries, 100000);
    assert_int_equal(cfg.integrity_resync, 1);
    assert_int_equal(cfg.max_body_bytes, 1 << 20);
    assert_int_equal(cfg.max_header_bytes, 16 << 10);
    assert_int_equal(cfg.request_timeout_ms, 5000);
    assert_int_equal(cfg.wal_segment_mb, 64);
    assert_true(cfg.fsync && cfg.pre_vote && cfg.check_quorum && !cfg.lease_reads);
    assert_int_equal(cfg.log_level, MR_CFG_LOG_INFO);
    assert_int_equal(cfg.n_peers, 0);
    assert_int_equal(cfg.bootstrap_expect, 0);
    assert_null(cfg.client_token);
    mr_cfg_free(&cfg);

    assert_int_equal(parse(&cfg, errmsg, "--id=n1", "--bootstrap-expect", "3", "--join",
                           "127.0.0.1:7002,[::1]:7003", "--state-machine", "x.lua",
                           "--raft-addr", "10.0.0.1:7100", "--http-addr", "0.0.0.0:8100",
                           "--data-dir", "/var/lib/mr", "--lease-reads", "yes", NULL),
                     0);
    assert_int_equal(cfg.bootstrap_expect, 3);
    assert_int_equal(cfg.n_join, 2);
    assert_string_equal(cfg.join[1], "[::1]:7003");
    assert_string_equal(cfg.state_machine, "x.lua");
    assert_string_equal(cfg.raft_addr, "10.0.0.1:7100");
    assert_string_equal(cfg.http_addr, "0.0.0.0:8100");
    assert_string_equal(cfg.data_dir, "/var/lib/mr");
    assert_true(cfg.lease_reads);
    mr_cfg_free(&cfg);

    assert_int_equal(parse(&cfg, errmsg, "--id", "n2", "--peers",
                           "n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003", NULL),
                     0);
    assert_int_equal(cfg.n_peers, 3);
    assert_string_equal(cfg.raft_addr, "127.0.0.1:7002"); /* taken from peers */
    assert_null(cfg.peers[0].http_addr);
    mr_cfg_free(&cfg);

    /* raft/http pairs */
    assert_int_equal(parse(&cfg, errmsg, "--id", "n2", "--peers",
                           "n1=127.0.0.1:7001/127.0.0.1:8001,n2=127.0.0.1:7002/127.0.0.1:8002",
                           NULL),
                     0);
    assert_string_equal(cfg.peers[0].raft_addr, "127.0.0.1:7001");
    assert_string_equal(cfg.peers[0].http_addr, "127.0.0.1:8001");
    assert_string_equal(cfg.http_addr, "127.0.0.1:8002"); /* taken from peers */
    mr_cfg_free(&cfg);
}

static void test_the_three_conf_files_load_and_validate(void **state)
{
    (void)state;
    static const char *const files[] = {SRC("conf/node1.lua"), SRC("conf/node2.lua"),
                                        SRC("conf/node3.lua")};
    for (int i = 0; i < 3; i++) {
        struct mr_cfg cfg;
        char errmsg[MR_ERRMSG_SIZE] = "", want[64];
        if (parse(&cfg, errmsg, "--config", files[i], NULL) != 0) fail_msg("%s", errmsg);
        snprintf(want, sizeof want, "n%d", i + 1);
        assert_string_equal(cfg.id, want);
        snprintf(want, sizeof want, "data/n%d", i + 1);
        assert_string_equal(cfg.data_dir, want);
        snprintf(want, sizeof want, "127.0.0.1:700%d", i + 1);
        assert_string_equal(cfg.raft_addr, want);
        snprintf(want, sizeof want, "127.0.0.1:800%d", i + 1);
        assert_string_equal(cfg.http_addr, want);
        assert_null(cfg.state_machine); /* the built-in kv.lua */
        assert_int_equal(cfg.n_peers, 3);
        for (size_t p = 0; p < cfg.n_peers; p++) assert_non_null(cfg.peers[p].http_addr);
        assert_string_equal(cfg.config_path, files[i]);
        mr_cfg_free(&cfg);
    }
}

static void test_a_config_file_may_compute_its_values(void **state)
{
    (void)state;
    struct mr_cfg cfg;
    char errmsg[MR_ERRMSG_SIZE] = "";
    setenv("MR_TEST_CFG_TOKEN", "s3cret", 1);
    int rv = parse(&cfg, errmsg, "--config", SRC("tests/unit/fixtures/cfg_computed.lua"),
                   NULL);
    unsetenv("MR_TEST_CFG_TOKEN");
    if (rv != 0) fail_msg("%s", errmsg);
    assert_string_equal(cfg.id, "c2");
    assert_string_equal(cfg.raft_addr, "127.0.0.1:9102");
    assert_int_equal(cfg.n_peers, 3);
    assert_int_equal(cfg.heartbeat_ms, 40);
    assert_int_equal(cfg.election_timeout_min_ms, 400);
    assert_int_equal(cfg.election_timeout_max_ms, 800);
    assert_int_equal(cfg.max_body_bytes, 1 << 20);
    assert_string_equal(cfg.client_token, "s3cret");
    assert_int_equal(cfg.log_level, MR_CFG_LOG_DEBUG);
    mr_cfg_free(&cfg);
}

static void test_flags_override_the_file_whatever_their_order(void **state)
{
    (void)state;
    struct mr_cfg cfg;
    char errmsg[MR_ERRMSG_SIZE] = "";
    int rv =
        parse(&cfg, errmsg, "--heartbeat-ms", "20", "--config", SRC("conf/node1.lua"),
              "--election-timeout-ms", "100,200", "--data-dir", "/tmp/elsewhere",
              "--fsync=false", "--log-level", "warn", "--client-token", "t0k", NULL);
    if (rv != 0) fail_msg("%s", errmsg);
    assert_int_equal(cfg.heartbeat_ms, 20);
    assert_int_equal(cfg.election_timeout_min_ms, 100);
    assert_int_equal(cfg.election_timeout_max_ms, 200);
    assert_string_equal(cfg.data_dir, "/tmp/elsewhere");
    assert_false(cfg.fsync);
    assert_int_equal(cfg.log_level, MR_CFG_LOG_WARN);
    assert_string_equal(cfg.client_token, "t0k");
    assert_string_equal(cfg.id, "n1"); /* untouched keys keep the file's value */
    mr_cfg_free(&cfg);

    /* the file's peers replaced by a flag; the new peers must still include id */
    rv = parse(&cfg, errmsg, "--config", SRC("conf/node1.lua"), "--peers",
               "n1=127.0.0.1:7001,n4=127.0.0.1:7004", NULL);
    if (rv != 0) fail_msg("%s", errmsg);
    assert_int_equal(cfg.n_peers, 2);
    mr_cfg_free(&cfg);
    assert_int_equal(
        parse(&cfg, errmsg, "--config", SRC("conf/node1.lua"), "--id", "n2", NULL),
        MR_ECONFIG);
    assert_non_null(strstr(errmsg, "raft_addr"));
    mr_cfg_free(&cfg);
}

struct bad_case {
    const char *text;
    const char *needle;
};

static void test_bad_keys_types_and_values_name_the_key(void **state)
{
    (void)state;
    static const struct bad_case cases[] = {
        {"return {id='n1', heartbeet_ms=50}", "unknown key 'heartbeet_ms' (did you mean heartbeat_ms?)"},
        {"return {id=1}", "id: expected a string, got integer"},
        {"return {id='bad id!'}", "id: expected 1-64 characters"},
        {"return {id=string.rep('a', 65)}", "id: expected 1-64"},
        {"return {id='n1', heartbeat_ms='50'}",
         "heartbeat_ms: expected an integer, got string"},
        {"return {id='n1', heartbeat_ms=1.5}",
         "heartbeat_ms: expected an integer, got float"},
        {"return {id='n1', heartbeat_ms=0}", "heartbeat_ms: 0 is out of range 1..60000"},
        {"return {id='n1', snapshot_log_mb=0}", "snapshot_log_mb: 0 is out of range 1..1048576"},
        {"return {id='n1', snapshot_log_percent=-1}", "snapshot_log_percent: -1 is out of range"},
        {"return {id='n1', integrity_check_entries=-5}",
         "integrity_check_entries: -5 is out of range"},
        {"return {id='n1', integrity_resync='yes please'}", "integrity_resync: expected"},
        {"return {id='n1', snapshot_log_percent='25%'}",
         "snapshot_log_percent: expected an integer, got string"},
        {"return {id='n1', heartbeat_ms=500}",
         "election_timeout_ms: min (300) must be above "
         "heartbeat_ms (500)"},
        {"return {id='n1', election_timeout_ms={600, 300}}",
         "election_timeout_ms: max (300)"},
        {"return {id='n1', election_timeout_ms='300'}",
         "election_timeout_ms: expected {min, max}"},
        {"return {id='n1', election_timeout_ms={300}}",
         "election_timeout_ms: expected {min, max}"},
        {"return {id='n1', raft_addr='localhost'}", "raft_addr: expected \"host:port\""},
        {"return {id='n1', raft_addr='127.0.0.1:70000'}", "raft_addr: expected"},
        {"return {id='n1', http_addr='127.0.0.1:0'}", "http_addr: expected"},
        {"return {id='n1', http_addr='127.0.0.1:7001'}",
         "http_addr: must differ from raft_addr"},
        {"return {id='n1', fsync='yes'}", "fsync: expected a boolean, got string"},
        {"return {id='n1', log_level='loud'}", "log_level: expected \"debug\""},
        {"return {id='n1', peers={n2='127.0.0.1:7002'}}",
         "peers: must include this node's id"},
        {"return {id='n1', peers={}}", "peers: must not be empty"},
        {"return {id='n1', peers={n1='127.0.0.1:7001'}, bootstrap_expect=3}",
         "bootstrap_expect: cannot be combined with peers"},
        {"return {id='n1', peers={n1='127.0.0.1:7001'}, join='127.0.0.1:7002'}",
         "join: cannot be combined with peers"},
        {"return {id='n1', peers={n1={raft='127.0.0.1:7001', htp='x'}}}",
         "peers.n1: unknown key 'htp'"},
        {"return {id='n1', peers={n1=7001}}", "peers.n1: expected \"host:port\""},
        {"return {id='n1', peers={n1={http='127.0.0.1:8001'}}}",
         "peers.n1: raft address"},
        {"return {id='n1', peers={'127.0.0.1:7001'}}", "peers: keys must be node ids"},
        {"return {id='n1', peers={n1='127.0.0.1:7001', n2='127.0.0.1:7001'}}",
         "share the raft address 127.0.0.1:7001"},
        {"return {id='n1', peers={n1='127.0.0.1:7001'}, raft_addr='127.0.0.1:7009'}",
         "raft_addr: 127.0.0.1:7009 differs from peers.n1"},
        {"return {id='n1', join={}}", "join: must list at least one address"},
        {"return {id='n1', join={'nope'}}", "join: expected \"host:port\""},
        {"return {id='n1', join=7002}", "join: expected an address or a list"},
        {"return {id='n1', bootstrap_expect=0}", "bootstrap_expect: 0 is out of range"},
        {"return {id='n1', max_body_bytes=-1}", "max_body_bytes: -1 is out of range"},
        {"return {id='n1', lua_memory_mb=0}", "lua_memory_mb: 0 is out of range"},
        {"return {id='n1', client_token=''}", "client_token: must not be empty"},
        {"return {id='n1', state_machine=true}",
         "state_machine: expected a string, got boolean"},
        {"return {heartbeat_ms=50}", "id: required"},
        {"return {[1]='x', id='n1'}", "keys must be names (got a key of type integer)"},
        {"return 5", "the file must return a table (it returned integer)"},
        {"error('nope')", ":1: nope"},
        {"local x = 1\nlocal y = x + {}", ":2: attempt to perform arithmetic"},
        {"while true do end", "runs for too long"},
        {"while true do pcall(function() while true do end end) end",
         "runs for too long"},
        {"local s = string.rep('x', 1 << 30)", "not enough memory"},
        {"return {id = io.open('x')}", "global 'io'"},
        {"return {id = os.getenv('HOME')}", "global 'os'"},
        {"return {id = dofile('/etc/passwd')}", "global 'dofile'"},
        {"return {id = require('x')}", "global 'require'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct mr_cfg cfg;
        char errmsg[MR_ERRMSG_SIZE] = "";
        char *path = write_temp(cases[i].text);
        mr_cfg_defaults(&cfg);
        int rv = mr_cfg_load_file(&cfg, path, errmsg);
        if (rv == 0) rv = mr_cfg_validate(&cfg, errmsg);
        if (rv != MR_ECONFIG) fail_msg("case %zu (%s) gave %d", i, cases[i].text, rv);
        if (strstr(errmsg, cases[i].needle) == NULL)
            fail_msg("case %zu (%s): '%s' lacks '%s'", i, cases[i].text, errmsg,
                     cases[i].needle);
        mr_cfg_free(&cfg);
        unlink(path);
        free(path);
    }
    /* a syntax error names the file and the line */
    struct mr_cfg cfg;
    char errmsg[MR_ERRMSG_SIZE] = "";
    mr_cfg_defaults(&cfg);
    assert_int_equal(
        mr_cfg_load_file(&cfg, SRC("tests/unit/fixtures/cfg_syntax.lua"), errmsg),
        MR_ECONFIG);
    assert_non_null(strstr(errmsg, "cfg_syntax.lua:4:"));
    assert_int_equal(mr_cfg_load_file(&cfg, "/nonexistent/cfg.lua", errmsg), MR_ECONFIG);
    assert_non_null(strstr(errmsg, "/nonexistent/cfg.lua"));
    mr_cfg_free(&cfg);
}

static void test_bad_flags_name_the_flag(void **state)
{
    (void)state;
    static const struct {
        const char *a, *b, *needle;
    } cases[] = {
        {"--heartbeat-ms", "abc",
         "flag --heartbeat-ms: heartbeat_ms: expected an integer"},
        {"--heartbeat-ms", "0", "heartbeat_ms: 0 is out of range"},
        {"--nope", "1", "unknown flag --nope (see --help)"},
        {"--data-dri", "x", "unknown flag --data-dri (did you mean --data-dir?)"},
        {"--peers", "n1", "peers: expected id=host:port"},
        {"--peers", "n1=127.0.0.1:99999", "peers.n1: raft address"},
        {"--peers", "n1=127.0.0.1:7001/nope", "peers.n1: http address"},
        {"--peers", ",", "peers: empty list"},
        {"--join", "x", "join: expected \"host:port\""},
        {"--election-timeout-ms", "300", "expected MIN,MAX"},
        {"--election-timeout-ms", "1,2", "election_timeout_ms: values must be in"},
        {"--fsync", "maybe", "fsync: expected true or false"},
        {"--config", "/nonexistent.lua", "cannot open config file /nonexistent.lua"},
        {"positional", "x", "unexpected argument \"positional\""},
        {"--id", "n 1", "id: expected 1-64"},
        {"--bootstrap-expect", "-2", "bootstrap_expect: -2 is out of range"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct mr_cfg cfg;
        char errmsg[MR_ERRMSG_SIZE] = "";
        int rv = parse(&cfg, errmsg, "--id", "n1", cases[i].a, cases[i].b, NULL);
        if (rv != MR_ECONFIG) fail_msg("case %zu gave %d", i, rv);
        if (strstr(errmsg, cases[i].needle) == NULL)
            fail_msg("case %zu: '%s' lacks '%s'", i, errmsg, cases[i].needle);
        mr_cfg_free(&cfg);
    }
    struct mr_cfg cfg;
    char errmsg[MR_ERRMSG_SIZE] = "";
    assert_int_equal(parse(&cfg, errmsg, "--id", NULL), MR_ECONFIG);
    assert_non_null(strstr(errmsg, "--id: missing value"));
    mr_cfg_free(&cfg);
    assert_int_equal(parse(&cfg, errmsg, NULL), MR_ECONFIG);
    assert_non_null(strstr(errmsg, "id: required"));
    mr_cfg_free(&cfg);
}

static void test_help_usage_and_dump(void **state)
{
    (void)state;
    struct mr_cfg cfg, again;
    char errmsg[MR_ERRMSG_SIZE] = "";
    assert_int_equal(parse(&cfg, errmsg, "--help", NULL), 0);
    assert_true(cfg.is_help);
    mr_cfg_free(&cfg);

    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    mr_cfg_usage(f);
    fclose(f);
    assert_non_null(strstr(buf, "--heartbeat-ms"));
    assert_non_null(strstr(buf, "--bootstrap-expect"));
    free(buf);

    /* the dump is itself a valid config that loads back to the same values */
    setenv("MOONRAFT_CLIENT_TOKEN", "tok", 1);
    assert_int_equal(parse(&cfg, errmsg, "--config", SRC("conf/node2.lua"),
                           "--print-config", "--heartbeat-ms", "25", NULL),
                     0);
    unsetenv("MOONRAFT_CLIENT_TOKEN");
    assert_true(cfg.is_dump);
    char *path = strdup("/tmp/mr_cfg_dump_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    mr_cfg_dump(f, &cfg);
    fclose(f);
    mr_cfg_defaults(&again);
    if (mr_cfg_load_file(&again, path, errmsg) != 0 ||
        mr_cfg_validate(&again, errmsg) != 0)
        fail_msg("dump does not load back: %s", errmsg);
    assert_string_equal(again.id, "n2");
    assert_int_equal(again.heartbeat_ms, 25);
    assert_int_equal(again.n_peers, 3);
    assert_string_equal(again.client_token, "<set>"); /* secrets are not printed */
    assert_string_equal(again.http_addr, cfg.http_addr);
    mr_cfg_free(&again);
    mr_cfg_free(&cfg);
    unlink(path);
    free(path);
}

static void test_addresses_parse(void **state)
{
    (void)state;
    char host[64];
    int port = 0;
    assert_int_equal(mr_cfg_parse_addr("127.0.0.1:7001", host, sizeof host, &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 7001);
    assert_int_equal(mr_cfg_parse_addr("[::1]:65535", host, sizeof host, &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 65535);
    assert_int_equal(mr_cfg_parse_addr("node-1.example:1", host, sizeof host, &port), 0);
    static const char *const bad[] = {"",        ":7001",   "h:",       "h:0",
                                      "h:65536", "h:12a",   "::1:7001", "[::1]7001",
                                      "h h:1",   "h:123456"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (mr_cfg_parse_addr(bad[i], host, sizeof host, &port) != MR_EINVAL)
            fail_msg("'%s' was accepted", bad[i]);
}

static void test_tls_keys_must_come_together(void **state)
{
    struct mr_cfg cfg;
    char err[MR_ERRMSG_SIZE] = "";
    (void)state;
    assert_int_equal(parse(&cfg, err, "--id", "n1", "--tls-cert", "c.pem", NULL), MR_ECONFIG);
    assert_non_null(strstr(err, "tls_key"));
    mr_cfg_free(&cfg);
    assert_int_equal(parse(&cfg, err, "--id", "n1", "--tls-ca", "ca.pem", NULL), MR_ECONFIG);
    assert_non_null(strstr(err, "tls_ca"));
    mr_cfg_free(&cfg);
    assert_int_equal(parse(&cfg, err, "--id", "n1", "--tls-cert", "c.pem", "--tls-key", "k.pem",
                           "--tls-client-verify", "true", NULL),
                     MR_ECONFIG);
    assert_non_null(strstr(err, "tls_client_verify"));
    mr_cfg_free(&cfg);
    assert_int_equal(parse(&cfg, err, "--id", "n1", "--tls-cert", "c.pem", "--tls-key", "k.pem",
                           "--tls-ca", "ca.pem", "--tls-admin-ou", "ops", NULL),
                     MR_ECONFIG);
    assert_non_null(strstr(err, "tls_admin_ou"));
    mr_cfg_free(&cfg);
    /* client certificates share tls_ca with the peers: the secret must tell them apart */
    assert_int_equal(parse(&cfg, err, "--id", "n1", "--tls-cert", "c.pem", "--tls-key", "k.pem",
                           "--tls-ca", "ca.pem", "--tls-client-verify", "true", NULL),
                     MR_ECONFIG);
    assert_non_null(strstr(err, "cluster_secret"));
    mr_cfg_free(&cfg);
    assert_int_equal(parse(&cfg, err, "--id", "n1", "--tls-cert", "c.pem", "--tls-key", "k.pem",
                           "--tls-ca", "ca.pem", "--tls-client-verify", "true", "--tls-admin-ou",
                           "ops", "--cluster-secret", "s3cret-s3cret", NULL),
                     0);
    assert_string_equal(cfg.tls_cert, "c.pem");
    assert_int_equal(cfg.tls_peer_verify, 1); /* the default */
    assert_int_equal(cfg.tls_client_verify, 1);
    assert_string_equal(cfg.tls_admin_ou, "ops");
    mr_cfg_free(&cfg);
}

struct seen {
    char keys[512];
};

static void collect(void *data, const char *key)
{
    struct seen *s = data;
    strcat(s->keys, key);
    strcat(s->keys, " ");
}

static void test_diff_names_exactly_the_keys_that_changed(void **state)
{
    struct mr_cfg a, b;
    struct seen s = {""};
    char err[MR_ERRMSG_SIZE] = "";
    (void)state;
    assert_int_equal(parse(&a, err, "--id", "n1", "--client-token", "x", "--peers",
                           "n1=127.0.0.1:7001,n2=127.0.0.1:7002", NULL),
                     0);
    assert_int_equal(parse(&b, err, "--id", "n1", "--client-token", "x", "--peers",
                           "n1=127.0.0.1:7001,n2=127.0.0.1:7002", NULL),
                     0);
    mr_cfg_diff(&a, &b, collect, &s);
    assert_string_equal(s.keys, "");
    mr_cfg_free(&b);
    assert_int_equal(parse(&b, err, "--id", "n1", "--client-token", "y", "--peers",
                           "n1=127.0.0.1:7001,n2=127.0.0.1:7003", "--log-level", "debug",
                           "--election-timeout-ms", "300,700", "--max-body-bytes", "2048", NULL),
                     0);
    mr_cfg_diff(&a, &b, collect, &s);
    assert_string_equal(s.keys,
                        "peers election_timeout_ms max_body_bytes client_token log_level ");
    mr_cfg_free(&a);
    mr_cfg_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flags_alone_are_enough_and_fill_defaults),
        cmocka_unit_test(test_the_three_conf_files_load_and_validate),
        cmocka_unit_test(test_a_config_file_may_compute_its_values),
        cmocka_unit_test(test_flags_override_the_file_whatever_their_order),
        cmocka_unit_test(test_bad_keys_types_and_values_name_the_key),
        cmocka_unit_test(test_bad_flags_name_the_flag),
        cmocka_unit_test(test_help_usage_and_dump),
        cmocka_unit_test(test_addresses_parse),
        cmocka_unit_test(test_tls_keys_must_come_together),
        cmocka_unit_test(test_diff_names_exactly_the_keys_that_changed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
