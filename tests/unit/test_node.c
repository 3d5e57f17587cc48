/* Unit tests for the node's pure helpers: entry payloads, idempotency table. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "node/node_int.h"

static void test_entry_round_trips_time_key_and_command(void **state)
{
    struct mr_node_entry e;
    struct mr_rcbuf *b;
    (void)state;
    b = mr_node_entry_encode(1234567890123ULL, "k-1", 3, "{\"op\":\"get\"}", 12);
    assert_non_null(b);
    assert_int_equal(mr_node_entry_decode(b->data, b->len, &e), 0);
    assert_true(e.time_ms == 1234567890123ULL);
    assert_int_equal(e.key_len, 3);
    assert_memory_equal(e.key, "k-1", 3);
    assert_int_equal(e.cmd_len, 12);
    assert_memory_equal(e.cmd, "{\"op\":\"get\"}", 12);
    mr_rcbuf_unref(b);
}

static void test_entry_decode_rejects_every_truncation_and_bad_header(void **state)
{
    struct mr_node_entry e;
    struct mr_rcbuf *b;
    size_t cut;
    (void)state;
    b = mr_node_entry_encode(1, "abcdef", 6, "", 0);
    assert_non_null(b);
    for (cut = 0; cut < b->len; cut++) {
        assert_int_equal(mr_node_entry_decode(b->data, cut, &e), MR_EMALFORMED);
    }
    b->data[0] = 2; /* unknown version */
    assert_int_equal(mr_node_entry_decode(b->data, b->len, &e), MR_EMALFORMED);
    b->data[0] = 1;
    b->data[3] = 0xff; /* key longer than allowed */
    assert_int_equal(mr_node_entry_decode(b->data, b->len, &e), MR_EMALFORMED);
    mr_rcbuf_unref(b);
    assert_null(mr_node_entry_encode(1, "x", MR_NODE_MAX_IDEM_KEY + 1, "", 0));
}

static void test_idem_returns_first_answer_and_expires_by_log_position(void **state)
{
    struct mr_idem t;
    const struct mr_idem_rec *r;
    (void)state;
    assert_int_equal(mr_idem_init(&t, 100 /* window */), 0);
    assert_int_equal(mr_idem_put(&t, "a", 1, 10, 0, "1", 1), 0);
    assert_int_equal(mr_idem_put(&t, "b", 1, 20, MR_ESCRIPT, "boom", 4), 0);
    assert_int_equal(mr_idem_put(&t, "a", 1, 30, 0, "2", 1), MR_EEXISTS);
    r = mr_idem_get(&t, "a", 1);
    assert_non_null(r);
    assert_string_equal(r->result, "1");
    assert_true(r->index == 10);
    mr_idem_expire(&t, 109);
    assert_non_null(mr_idem_get(&t, "a", 1));
    mr_idem_expire(&t, 110);
    assert_null(mr_idem_get(&t, "a", 1));
    assert_non_null(mr_idem_get(&t, "b", 1));
    mr_idem_close(&t);
}

static void test_idem_encoding_round_trips_and_rejects_garbage(void **state)
{
    struct mr_idem t, u;
    unsigned char *buf;
    size_t n, used, cut;
    char key[16];
    int i;
    (void)state;
    assert_int_equal(mr_idem_init(&t, 1000), 0);
    assert_int_equal(mr_idem_init(&u, 1000), 0);
    for (i = 0; i < 3000; i++) { /* forces several table growths */
        snprintf(key, sizeof key, "key-%d", i);
        assert_int_equal(mr_idem_put(&t, key, strlen(key), (mr_index)i + 1, 0, "{}", 2), 0);
    }
    n = mr_idem_encoded_size(&t);
    buf = mr_malloc(n);
    mr_idem_encode(&t, buf);
    assert_int_equal(mr_idem_decode(&u, buf, n, &used), 0);
    assert_int_equal(used, n);
    assert_int_equal(u.count, 3000);
    assert_non_null(mr_idem_get(&u, "key-2999", 8));
    for (cut = 0; cut < n; cut += 997) {
        assert_int_equal(mr_idem_decode(&u, buf, cut, &used), MR_EMALFORMED);
        assert_int_equal(u.count, 0);
    }
    mr_free(buf);
    mr_idem_close(&t);
    mr_idem_close(&u);
}

static void test_node_ids_are_stable_and_nonzero(void **state)
{
    (void)state;
    assert_true(mr_node_id_from_name("n1") == mr_node_id_from_name("n1"));
    assert_true(mr_node_id_from_name("n1") != mr_node_id_from_name("n2"));
    assert_true(mr_node_id_from_name("") != 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entry_round_trips_time_key_and_command),
        cmocka_unit_test(test_entry_decode_rejects_every_truncation_and_bad_header),
        cmocka_unit_test(test_idem_returns_first_answer_and_expires_by_log_position),
        cmocka_unit_test(test_idem_encoding_round_trips_and_rejects_garbage),
        cmocka_unit_test(test_node_ids_are_stable_and_nonzero),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
