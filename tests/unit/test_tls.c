/* Unit tests for src/tls: sessions over memory BIOs, two in-memory endpoints
 * that the test pumps bytes between. Certificates are made at test time by
 * tests/integration/fixtures/gen-certs.sh (the `openssl` command). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tls/tls.h"

static char dir[256];

static const char *path(const char *name)
{
    static char buf[4][400];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static int group_setup(void **state)
{
    char cmd[1024];
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/mr-tls-unit-XXXXXX");
    if (mkdtemp(dir) == NULL) return -1;
    snprintf(cmd, sizeof cmd, "sh %s/tests/integration/fixtures/gen-certs.sh %s",
             MR_SOURCE_DIR, dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    char cmd[400];
    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static struct mr_tls_ctx *server_ctx(int verify_clients)
{
    struct mr_tls_ctx_options o = {0};
    struct mr_tls_ctx *c;
    char err[MR_ERRMSG_SIZE] = "";
    o.is_server = 1;
    o.cert_file = path("server.pem");
    o.key_file = path("server.key");
    o.ca_file = verify_clients ? path("ca.pem") : NULL;
    o.is_verify_peer = verify_clients;
    assert_int_equal(mr_tls_ctx_new(&o, &c, err), 0);
    return c;
}

static struct mr_tls_ctx *client_ctx(const char *ca, const char *cert, const char *key)
{
    struct mr_tls_ctx_options o = {0};
    struct mr_tls_ctx *c;
    char err[MR_ERRMSG_SIZE] = "";
    o.cert_file = cert ? path(cert) : NULL;
    o.key_file = key ? path(key) : NULL;
    o.ca_file = ca ? path(ca) : NULL;
    o.is_verify_peer = ca != NULL;
    assert_int_equal(mr_tls_ctx_new(&o, &c, err), 0);
    return c;
}

/* Moves what `from` has pending into `to`, `step` bytes per feed (0: all at
 * once). Returns the feed's result (0 when nothing was pending). */
static int move(struct mr_tls *from, struct mr_tls *to, size_t step)
{
    char *buf;
    size_t len, off;
    int rv = 0;
    assert_int_equal(mr_tls_take(from, &buf, &len), 0);
    for (off = 0; off < len && rv == 0;) {
        size_t n = step == 0 || len - off < step ? len - off : step;
        rv = mr_tls_feed(to, buf + off, n);
        off += n;
    }
    mr_free(buf);
    return rv;
}

/* Pumps both ways until nothing is pending or a side fails. Returns 0 or the
 * first error; *who says which side failed (0 client, 1 server). */
static int pump(struct mr_tls *cl, struct mr_tls *sv, size_t step, int *who)
{
    int i, rv;
    for (i = 0; i < 100; i++) {
        if (mr_tls_pending(cl) == 0 && mr_tls_pending(sv) == 0) return 0;
        rv = move(cl, sv, step);
        if (rv != 0) {
            *who = 1;
            return rv;
        }
        rv = move(sv, cl, step);
        if (rv != 0) {
            *who = 0;
            return rv;
        }
    }
    fail_msg("pump did not settle");
    return 0;
}

static void read_exact(struct mr_tls *t, char *out, size_t n, size_t chunk)
{
    size_t have = 0, got;
    while (have < n) {
        size_t cap = chunk < n - have ? chunk : n - have;
        assert_int_equal(mr_tls_read(t, out + have, cap, &got), 0);
        assert_true(got > 0);
        have += got;
    }
    assert_int_equal(mr_tls_read(t, out, 1, &got), 0);
    assert_int_equal(got, 0);
}

static void
test_tls_handshake_between_two_memory_endpoints_carries_data_both_ways(void **state)
{
    struct mr_tls_ctx *sc = server_ctx(0), *cc = client_ctx("ca.pem", NULL, NULL);
    struct mr_tls *sv, *cl;
    char buf[64];
    int who = -1;
    (void)state;
    assert_int_equal(mr_tls_new(sc, NULL, &sv), 0);
    assert_int_equal(mr_tls_new(cc, "127.0.0.1", &cl), 0);
    assert_int_equal(mr_tls_start(cl), 0);
    assert_true(mr_tls_pending(cl) > 0); /* the ClientHello */
    /* Written before the handshake: kept, then sent once it completes. */
    assert_int_equal(mr_tls_write(cl, "ping", 4), 0);
    assert_int_equal(pump(cl, sv, 0, &who), 0);
    assert_true(mr_tls_is_ready(cl));
    assert_true(mr_tls_is_ready(sv));
    read_exact(sv, buf, 4, sizeof buf);
    assert_memory_equal(buf, "ping", 4);
    assert_int_equal(mr_tls_write(sv, "pong!", 5), 0);
    assert_int_equal(pump(cl, sv, 0, &who), 0);
    read_exact(cl, buf, 5, sizeof buf);
    assert_memory_equal(buf, "pong!", 5);
    /* close_notify reads as the end of the stream. */
    mr_tls_shutdown(cl);
    assert_int_equal(pump(cl, sv, 0, &who), 0);
    {
        size_t got;
        assert_int_equal(mr_tls_read(sv, buf, sizeof buf, &got), MR_ESHUTDOWN);
    }
    mr_tls_free(cl);
    mr_tls_free(sv);
    mr_tls_ctx_unref(cc);
    mr_tls_ctx_unref(sc);
}

static void
test_tls_byte_by_byte_input_and_small_reads_reassemble_everything(void **state)
{
    struct mr_tls_ctx *sc = server_ctx(0), *cc = client_ctx("ca.pem", NULL, NULL);
    struct mr_tls *sv, *cl;
    static char big[100000], back[100000];
    size_t i;
    int who = -1;
    (void)state;
    for (i = 0; i < sizeof big; i++) big[i] = (char)(i * 7 + 3);
    assert_int_equal(mr_tls_new(sc, NULL, &sv), 0);
    assert_int_equal(mr_tls_new(cc, "127.0.0.1", &cl), 0);
    assert_int_equal(mr_tls_start(cl), 0);
    assert_int_equal(pump(cl, sv, 1, &who), 0); /* handshake one byte at a time */
    assert_true(mr_tls_is_ready(sv));
    assert_int_equal(mr_tls_write(cl, big, sizeof big), 0); /* several records */
    assert_int_equal(pump(cl, sv, 7, &who), 0);
    read_exact(sv, back, sizeof back, 1000); /* reads smaller than a record */
    assert_memory_equal(big, back, sizeof big);
    mr_tls_free(cl);
    mr_tls_free(sv);
    mr_tls_ctx_unref(cc);
    mr_tls_ctx_unref(sc);
}

static void test_tls_plaintext_to_a_server_is_refused_as_plaintext(void **state)
{
    struct mr_tls_ctx *sc = server_ctx(0);
    struct mr_tls *sv;
    size_t got;
    char buf[16];
    (void)state;
    assert_int_equal(mr_tls_new(sc, NULL, &sv), 0);
    assert_int_equal(mr_tls_feed(sv, "GET / HTTP/1.1\r\n", 16), MR_EPROTO);
    assert_true(mr_tls_is_plaintext(sv));
    assert_non_null(strstr(mr_tls_errmsg(sv), "plaintext"));
    /* Dead for good: more input and reads fail too. */
    assert_int_equal(mr_tls_feed(sv, "x", 1), MR_EPROTO);
    assert_int_equal(mr_tls_read(sv, buf, sizeof buf, &got), MR_EPROTO);
    assert_int_equal(mr_tls_write(sv, "x", 1), MR_EPROTO);
    mr_tls_free(sv);
    mr_tls_ctx_unref(sc);
}

static void test_tls_garbage_that_looks_like_a_record_is_an_error(void **state)
{
    struct mr_tls_ctx *sc = server_ctx(0), *cc = client_ctx("ca.pem", NULL, NULL);
    struct mr_tls *sv, *cl;
    static const unsigned char junk[] = {0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5,
                                         0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5};
    unsigned char noise[64];
    size_t i;
    int who = -1;
    (void)state;
    assert_int_equal(mr_tls_new(sc, NULL, &sv), 0);
    assert_int_equal(mr_tls_feed(sv, junk, sizeof junk), MR_EPROTO);
    assert_false(mr_tls_is_plaintext(sv));
    assert_true(mr_tls_errmsg(sv)[0] != '\0');
    mr_tls_free(sv);
    /* Garbage in the middle of an established session kills it. */
    assert_int_equal(mr_tls_new(sc, NULL, &sv), 0);
    assert_int_equal(mr_tls_new(cc, "127.0.0.1", &cl), 0);
    assert_int_equal(mr_tls_start(cl), 0);
    assert_int_equal(pump(cl, sv, 0, &who), 0);
    for (i = 0; i < sizeof noise; i++) noise[i] = (unsigned char)(i * 37 + 11);
    noise[0] = 0x17; /* application data, bad MAC */
    noise[1] = 0x03;
    noise[2] = 0x03;
    noise[3] = 0x00;
    noise[4] = 59;
    assert_int_equal(mr_tls_feed(sv, noise, sizeof noise), 0);
    {
        char buf[64];
        size_t got;
        assert_int_equal(mr_tls_read(sv, buf, sizeof buf, &got), MR_EPROTO);
    }
    mr_tls_free(cl);
    mr_tls_free(sv);
    mr_tls_ctx_unref(cc);
    mr_tls_ctx_unref(sc);
}

static void
test_tls_client_refuses_a_server_from_another_ca_or_with_another_address(void **state)
{
    struct mr_tls_ctx *sc = server_ctx(0),
                      *rogue = client_ctx("rogue-ca.pem", NULL, NULL);
    struct mr_tls_ctx *cc = client_ctx("ca.pem", NULL, NULL);
    struct mr_tls *sv, *cl;
    int who = -1;
    (void)state;
    assert_int_equal(mr_tls_new(sc, NULL, &sv), 0);
    assert_int_equal(mr_tls_new(rogue, "127.0.0.1", &cl), 0);
    assert_int_equal(mr_tls_start(cl), 0);
    assert_int_equal(pump(cl, sv, 0, &who), MR_EPROTO);
    assert_int_equal(who, 0);
    assert_non_null(strstr(mr_tls_errmsg(cl), "certificate verify failed"));
    mr_tls_free(cl);
    mr_tls_free(sv);
    /* Right CA, but the certificate is not for 127.0.0.2. */
    assert_int_equal(mr_tls_new(sc, NULL, &sv), 0);
    assert_int_equal(mr_tls_new(cc, "127.0.0.2", &cl), 0);
    assert_int_equal(mr_tls_start(cl), 0);
    assert_int_equal(pump(cl, sv, 0, &who), MR_EPROTO);
    assert_int_equal(who, 0);
    assert_non_null(strstr(mr_tls_errmsg(cl), "certificate verify failed"));
    mr_tls_free(cl);
    mr_tls_free(sv);
    mr_tls_ctx_unref(cc);
    mr_tls_ctx_unref(rogue);
    mr_tls_ctx_unref(sc);
}

static void test_tls_mutual_tls_needs_a_client_certificate_from_the_ca(void **state)
{
    struct mr_tls_ctx *sc = server_ctx(1);
    struct mr_tls_ctx *anon = client_ctx("ca.pem", NULL, NULL);
    struct mr_tls_ctx *bad = client_ctx("ca.pem", "rogue.pem", "rogue.key");
    struct mr_tls_ctx *good = client_ctx("ca.pem", "client.pem", "client.key");
    struct mr_tls_ctx *cases[2] = {anon, bad};
    struct mr_tls *sv, *cl;
    char cn[64], ou[64];
    int who = -1, i;
    (void)state;
    for (i = 0; i < 2; i++) {
        assert_int_equal(mr_tls_new(sc, NULL, &sv), 0);
        assert_int_equal(mr_tls_new(cases[i], "127.0.0.1", &cl), 0);
        assert_int_equal(mr_tls_start(cl), 0);
        assert_int_equal(pump(cl, sv, 0, &who), MR_EPROTO);
        assert_int_equal(who, 1); /* the server refuses */
        assert_false(mr_tls_is_ready(sv));
        mr_tls_free(cl);
        mr_tls_free(sv);
    }
    assert_int_equal(mr_tls_new(sc, NULL, &sv), 0);
    assert_int_equal(mr_tls_new(good, "127.0.0.1", &cl), 0);
    assert_int_equal(mr_tls_start(cl), 0);
    assert_int_equal(pump(cl, sv, 0, &who), 0);
    assert_true(mr_tls_is_ready(sv));
    assert_int_equal(mr_tls_peer_names(sv, cn, sizeof cn, ou, sizeof ou), 1);
    assert_string_equal(cn, "operator");
    assert_string_equal(ou, "admin");
    mr_tls_free(cl);
    mr_tls_free(sv);
    mr_tls_ctx_unref(good);
    mr_tls_ctx_unref(bad);
    mr_tls_ctx_unref(anon);
    mr_tls_ctx_unref(sc);
}

static void test_tls_a_session_keeps_its_context_alive_after_a_reload(void **state)
{
    struct mr_tls_ctx *sc = server_ctx(0), *cc = client_ctx("ca.pem", NULL, NULL);
    struct mr_tls *sv, *cl;
    char buf[8];
    int who = -1;
    (void)state;
    assert_int_equal(mr_tls_new(sc, NULL, &sv), 0);
    /* The owner swaps contexts: the session's reference keeps the old one. */
    mr_tls_ctx_unref(sc);
    assert_int_equal(mr_tls_new(cc, "127.0.0.1", &cl), 0);
    assert_int_equal(mr_tls_start(cl), 0);
    assert_int_equal(mr_tls_write(cl, "ok", 2), 0);
    assert_int_equal(pump(cl, sv, 0, &who), 0);
    read_exact(sv, buf, 2, sizeof buf);
    assert_memory_equal(buf, "ok", 2);
    mr_tls_free(cl);
    mr_tls_free(sv); /* frees the old context (ASan checks) */
    mr_tls_ctx_unref(cc);
}

static void test_tls_context_errors_name_the_file(void **state)
{
    struct mr_tls_ctx_options o = {0};
    struct mr_tls_ctx *c = NULL;
    char err[MR_ERRMSG_SIZE] = "";
    (void)state;
    o.is_server = 1;
    assert_int_equal(mr_tls_ctx_new(&o, &c, err), MR_EINVAL);
    o.cert_file = path("missing.pem");
    o.key_file = path("server.key");
    assert_int_equal(mr_tls_ctx_new(&o, &c, err), MR_ECONFIG);
    assert_non_null(strstr(err, "missing.pem"));
    o.cert_file = path("server.pem");
    o.key_file = path("client.key"); /* not this certificate's key */
    assert_int_equal(mr_tls_ctx_new(&o, &c, err), MR_ECONFIG);
    assert_non_null(strstr(err, "client.key"));
    o.key_file = path("server.key");
    o.is_verify_peer = 1; /* without a CA */
    assert_int_equal(mr_tls_ctx_new(&o, &c, err), MR_EINVAL);
    assert_null(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_tls_handshake_between_two_memory_endpoints_carries_data_both_ways),
        cmocka_unit_test(
            test_tls_byte_by_byte_input_and_small_reads_reassemble_everything),
        cmocka_unit_test(test_tls_plaintext_to_a_server_is_refused_as_plaintext),
        cmocka_unit_test(test_tls_garbage_that_looks_like_a_record_is_an_error),
        cmocka_unit_test(
            test_tls_client_refuses_a_server_from_another_ca_or_with_another_address),
        cmocka_unit_test(test_tls_mutual_tls_needs_a_client_certificate_from_the_ca),
        cmocka_unit_test(test_tls_a_session_keeps_its_context_alive_after_a_reload),
        cmocka_unit_test(test_tls_context_errors_name_the_file),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
