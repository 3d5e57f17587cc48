/* Unit tests for src/util: errors, allocator seam, rcbuf, PRNG, CRC32C. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

uint32_t mr_crc32c_sw(uint32_t crc, const void *buf, size_t len);

static void test_crc32c_matches_known_vectors(void **state)
{
    (void)state;
    /* RFC 3720 B.4 test vectors. */
    unsigned char zeros[32] = {0}, ones[32], inc[32];
    int i;
    for (i = 0; i < 32; i++) {
        ones[i] = 0xff;
        inc[i] = (unsigned char)i;
    }
    assert_int_equal(mr_crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(mr_crc32c(0, zeros, 32), 0x8A9136AAu);
    assert_int_equal(mr_crc32c(0, ones, 32), 0x62A8AB43u);
    assert_int_equal(mr_crc32c(0, inc, 32), 0x46DD794Eu);
}

static void test_crc32c_hardware_and_table_agree_and_chain(void **state)
{
    unsigned char buf[1000];
    size_t i, split;
    (void)state;
    for (i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)(i * 131 + 7);
    for (i = 0; i <= sizeof buf; i += 37) {
        assert_int_equal(mr_crc32c(0, buf, i), mr_crc32c_sw(0, buf, i));
    }
    for (split = 0; split <= sizeof buf; split += 101) {
        uint32_t c = mr_crc32c(0, buf, split);
        c = mr_crc32c(c, buf + split, sizeof buf - split);
        assert_int_equal(c, mr_crc32c(0, buf, sizeof buf));
    }
}

static void test_error_names_and_texts_are_distinct(void **state)
{
    (void)state;
    assert_string_equal(mr_err_name(MR_ENOTLEADER), "not_leader");
    assert_string_equal(mr_err_name(-ENOSPC), "no_space");
    assert_string_equal(mr_strerror(MR_ENOLEADER), "no leader is known");
    assert_string_equal(mr_strerror(-ENOENT), strerror(ENOENT));
    assert_true(MR_E__END < 0);
    assert_true(MR_E__BASE < -4096);
}

static void test_errmsg_wrap_prefixes_context(void **state)
{
    char msg[MR_ERRMSG_SIZE] = "";
    (void)state;
    mr_errmsg_printf(msg, "checksum mismatch at %d", 4096);
    mr_errmsg_wrapf(msg, "segment %d", 17);
    mr_errmsg_wrapf(msg, "load wal");
    assert_string_equal(msg, "load wal: segment 17: checksum mismatch at 4096");
}

static void test_alloc_fail_hook_fails_exactly_the_nth_call(void **state)
{
    void *a, *b, *c;
    (void)state;
    mr_alloc_fail_at(2, 0);
    a = mr_malloc(8);
    b = mr_malloc(8);
    c = mr_malloc(8);
    assert_non_null(a);
    assert_null(b);
    assert_non_null(c);
    mr_free(a);
    mr_free(c);
    mr_alloc_fail_at(0, 0);
}

static void test_rcbuf_is_freed_with_last_reference(void **state)
{
    long before = mr_alloc_live();
    struct mr_rcbuf *b;
    (void)state;
    b = mr_rcbuf_copy("hello", 5);
    assert_non_null(b);
    assert_int_equal(b->len, 5);
    assert_memory_equal(b->data, "hello", 5);
    mr_rcbuf_ref(b);
    mr_rcbuf_unref(b);
    assert_int_equal(mr_alloc_live(), before + 1);
    mr_rcbuf_unref(b);
    assert_int_equal(mr_alloc_live(), before);
}

static void test_rand_is_deterministic_per_seed(void **state)
{
    struct mr_rand a, b, c;
    int i, differ = 0;
    (void)state;
    mr_rand_seed(&a, 42);
    mr_rand_seed(&b, 42);
    mr_rand_seed(&c, 43);
    for (i = 0; i < 100; i++) {
        uint64_t x = mr_rand_next(&a);
        assert_true(x == mr_rand_next(&b));
        if (x != mr_rand_next(&c)) differ = 1;
        assert_true(mr_rand_below(&a, 10) < 10);
        mr_rand_next(&b);
        mr_rand_next(&c);
    }
    assert_true(differ);
}

static void test_queue_push_remove_keeps_order(void **state)
{
    struct item {
        int v;
        struct mr_queue q;
    } items[3];
    struct mr_queue head, *it;
    int i, expect[] = {0, 2};
    (void)state;
    mr_queue_init(&head);
    for (i = 0; i < 3; i++) {
        items[i].v = i;
        mr_queue_push_tail(&head, &items[i].q);
    }
    mr_queue_remove(&items[1].q);
    i = 0;
    MR_QUEUE_FOREACH(it, &head)
    {
        assert_int_equal(MR_CONTAINER_OF(it, struct item, q)->v, expect[i]);
        i++;
    }
    assert_int_equal(i, 2);
}

/* The built-in scripts must be lua/'s files byte for byte: a node running the
 * built-in kv.lua and one given --state-machine lua/kv.lua hash the same
 * script, and a cluster mixing them agrees. */
static void expect_embedded_equals_file(const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/lua/%s", MR_SOURCE_DIR, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long flen = ftell(f);
    assert_true(flen > 0);
    rewind(f);
    char *buf = malloc((size_t)flen);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)flen, f), (size_t)flen);
    fclose(f);
    size_t len = 0;
    const char *src = mr_util_lua_embedded(name, &len);
    assert_non_null(src);
    assert_int_equal(len, (size_t)flen);
    assert_memory_equal(src, buf, len);
    assert_int_equal(src[len], '\0');
    free(buf);
}

static void test_embedded_lua_files_are_lua_dir_byte_for_byte(void **state)
{
    (void)state;
    expect_embedded_equals_file("kv.lua");
    expect_embedded_equals_file("console.lua");
    assert_null(mr_util_lua_embedded("nonexistent.lua", NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_matches_known_vectors),
        cmocka_unit_test(test_crc32c_hardware_and_table_agree_and_chain),
        cmocka_unit_test(test_error_names_and_texts_are_distinct),
        cmocka_unit_test(test_errmsg_wrap_prefixes_context),
        cmocka_unit_test(test_alloc_fail_hook_fails_exactly_the_nth_call),
        cmocka_unit_test(test_rcbuf_is_freed_with_last_reference),
        cmocka_unit_test(test_rand_is_deterministic_per_seed),
        cmocka_unit_test(test_queue_push_remove_keeps_order),
        cmocka_unit_test(test_embedded_lua_files_are_lua_dir_byte_for_byte),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
