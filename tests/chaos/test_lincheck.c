/* Unit tests for the linearizability checker (lincheck.c). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lincheck.h"
#include "util/util.h"

static bool check_text(const char *text)
{
    struct mr_lc_history h;
    char err[MR_ERRMSG_SIZE] = "";
    mr_lc_history_init(&h);
    int rc = mr_lc_history_parse(&h, text, err);
    if (rc) fail_msg("parse: %s", err);
    struct mr_lc_summary s;
    assert_int_equal(mr_lc_check_history(&h, NULL, &s), 0);
    mr_lc_history_free(&h);
    return s.bad_keys == 0;
}

static void sequential_history_is_linearizable(void **state)
{
    (void)state;
    assert_true(check_text("0 read x - - 0 1 ok nil -\n"
                           "0 write x 1 - 2 3 ok - -\n"
                           "0 read x - - 4 5 ok 1 -\n"
                           "0 cas x 1 2 6 7 ok true -\n"
                           "0 cas x 1 3 8 9 ok false 2\n"
                           "0 read x - - 10 11 ok 2 -\n"));
}

static void concurrent_overlapping_ops_may_reorder(void **state)
{
    (void)state;
    /* read of 2 starts before write 2 is invoked but overlaps it */
    assert_true(check_text("0 write x 1 - 0 10 ok - -\n"
                           "1 write x 2 - 5 30 ok - -\n"
                           "2 read x - - 6 20 ok 2 -\n"
                           "3 read x - - 7 25 ok 1 -\n"
                           "4 read x - - 35 40 ok 2 -\n"));
    /* read 1 completes before write 2 begins? no: reads 2 then 1 must be ordered:
     * r(2) finished before r(1) started, so write1 after write2 - fine if overlapping */
    assert_true(check_text("0 write x 1 - 0 100 ok - -\n"
                           "1 write x 2 - 0 100 ok - -\n"
                           "2 read x - - 10 20 ok 2 -\n"
                           "3 read x - - 30 40 ok 1 -\n"));
}

static void info_write_that_happened_is_accepted(void **state)
{
    (void)state;
    assert_true(check_text("0 write x 1 - 0 10 info - -\n"
                           "1 read x - - 50 60 ok 1 -\n"));
}

static void info_write_that_did_not_happen_is_accepted(void **state)
{
    (void)state;
    assert_true(check_text("0 write x 1 - 0 10 ok - -\n"
                           "1 write x 2 - 20 30 info - -\n"
                           "2 read x - - 50 60 ok 1 -\n"
                           "3 cas x 1 3 70 80 info - -\n"
                           "2 read x - - 90 95 ok 1 -\n"));
}

static void info_write_may_take_effect_late(void **state)
{
    (void)state;
    assert_true(check_text("0 write x 1 - 0 10 ok - -\n"
                           "1 write x 2 - 20 30 info - -\n"
                           "2 read x - - 50 60 ok 1 -\n"
                           "2 read x - - 70 80 ok 2 -\n"));
}

static void failed_ops_are_ignored(void **state)
{
    (void)state;
    assert_true(check_text("0 write x 9 - 0 10 fail - -\n"
                           "1 read x - - 20 30 ok nil -\n"));
}

static void stale_read_is_rejected(void **state)
{
    (void)state;
    assert_false(check_text("0 write x 1 - 0 10 ok - -\n"
                            "0 write x 2 - 20 30 ok - -\n"
                            "1 read x - - 40 50 ok 1 -\n"));
}

static void lost_write_is_rejected(void **state)
{
    (void)state;
    assert_false(check_text("0 write x 1 - 0 10 ok - -\n"
                            "1 read x - - 20 30 ok nil -\n"));
}

static void reordered_cas_is_rejected(void **state)
{
    (void)state;
    /* cas 1->2 succeeded and finished before cas 2->3 began, but a later
     * cas from 1 also succeeded */
    assert_false(check_text("0 write x 1 - 0 10 ok - -\n"
                            "1 cas x 1 2 20 30 ok true -\n"
                            "2 cas x 1 3 40 50 ok true -\n"));
    /* cas failure that claims a current value it cannot have */
    assert_false(check_text("0 write x 1 - 0 10 ok - -\n"
                            "1 cas x 5 2 20 30 ok false 7\n"));
    /* a successful cas whose effect is not visible */
    assert_false(check_text("0 write x 1 - 0 10 ok - -\n"
                            "1 cas x 1 2 20 30 ok true -\n"
                            "2 read x - - 40 50 ok 1 -\n"));
}

static void keys_are_checked_independently(void **state)
{
    (void)state;
    struct mr_lc_history h;
    char err[MR_ERRMSG_SIZE];
    mr_lc_history_init(&h);
    assert_int_equal(mr_lc_history_parse(&h,
                                         "0 write a 1 - 0 10 ok - -\n"
                                         "0 write b 1 - 0 10 ok - -\n"
                                         "1 read a - - 20 30 ok 1 -\n"
                                         "1 read b - - 20 30 ok nil -\n",
                                         err),
                     0);
    struct mr_lc_summary s;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(mr_lc_check_history(&h, f, &s), 0);
    fclose(f);
    assert_int_equal(s.keys, 2);
    assert_int_equal(s.bad_keys, 1);
    assert_non_null(strstr(buf, "key b: 2 ops: NOT LINEARIZABLE"));
    assert_non_null(strstr(buf, "key a: 2 ops: linearizable"));
    free(buf);
    mr_lc_history_free(&h);
}

static void violation_window_is_minimised(void **state)
{
    (void)state;
    /* lots of noise, then a stale read; the window must keep the stale read
     * and the writes it depends on, and drop the unrelated noise */
    struct mr_lc_history h;
    mr_lc_history_init(&h);
    char val[32], val2[32];
    int64_t t = 0;
    for (int i = 0; i < 200; i++) {
        snprintf(val, sizeof(val), "%d", i);
        struct mr_lc_op w = {.proc = 0,
                             .type = MR_LC_WRITE,
                             .key = (char *)"k",
                             .arg = val,
                             .invoke = t,
                             .complete = t + 5};
        assert_int_equal(mr_lc_history_add(&h, &w), 0);
        struct mr_lc_op r = {.proc = 1,
                             .type = MR_LC_READ,
                             .key = (char *)"k",
                             .value = val,
                             .invoke = t + 6,
                             .complete = t + 9};
        assert_int_equal(mr_lc_history_add(&h, &r), 0);
        t += 10;
    }
    snprintf(val2, sizeof(val2), "%d", 150);
    struct mr_lc_op bad = {.proc = 2,
                           .type = MR_LC_READ,
                           .key = (char *)"k",
                           .value = val2,
                           .invoke = t + 1,
                           .complete = t + 2};
    assert_int_equal(mr_lc_history_add(&h, &bad), 0);
    bool lin = true;
    assert_int_equal(mr_lc_check_ops(h.ops, h.n, &lin), 0);
    assert_false(lin);
    size_t *w, nw;
    assert_int_equal(mr_lc_minimise(h.ops, h.n, &w, &nw), 0);
    assert_true(nw <= 3);
    bool has_bad = false;
    for (size_t i = 0; i < nw; i++)
        if (w[i] == h.n - 1) has_bad = true;
    assert_true(has_bad);
    /* the window itself must still fail */
    struct mr_lc_op sub[3];
    for (size_t i = 0; i < nw; i++) sub[i] = h.ops[w[i]];
    assert_int_equal(mr_lc_check_ops(sub, nw, &lin), 0);
    assert_false(lin);
    mr_free(w);
    mr_lc_history_free(&h);
}

static void parse_rejects_garbage(void **state)
{
    (void)state;
    struct mr_lc_history h;
    char err[MR_ERRMSG_SIZE] = "";
    mr_lc_history_init(&h);
    assert_int_equal(mr_lc_history_parse(&h, "0 frob x - - 0 1 ok - -\n", err),
                     MR_EINVAL);
    assert_non_null(strstr(err, "line 1"));
    assert_int_equal(mr_lc_history_parse(&h, "# c\n\n0 read x - - 5 1 ok - -\n", err),
                     MR_EINVAL);
    assert_non_null(strstr(err, "line 3"));
    mr_lc_history_free(&h);
}

/* Simulates a linearizable register with 5 concurrent clients on 3 keys. */
static void large_concurrent_history_checks_fast(void **state)
{
    (void)state;
    struct mr_lc_history h;
    mr_lc_history_init(&h);
    struct mr_rand_lite {
        uint64_t s;
    } r = {12345};
#define RND()                                                                            \
    (r.s = r.s * 6364136223846793005ull + 1442695040888963407ull, (uint32_t)(r.s >> 33))
    const char *keys[3] = {"a", "b", "c"};
    char regs[3][32] = {"", "", ""};
    bool present[3] = {false, false, false};
    int64_t busy_until[5] = {0};
    int64_t t = 0;
    int uniq = 0;
    /* each op linearizes at a point t; invoke and complete are spread around
     * it, so concurrent ops overlap */
    for (int i = 0; i < 4000; i++) {
        int p = (int)(RND() % 5);
        int k = (int)(RND() % 3);
        t += 1 + RND() % 10;
        int64_t inv = t - (int64_t)(RND() % 30), comp = t + (int64_t)(RND() % 30);
        if (inv < busy_until[p]) inv = busy_until[p];
        if (inv > t) inv = t;
        busy_until[p] = comp + 1;
        struct mr_lc_op o = {
            .proc = p, .key = (char *)keys[k], .invoke = inv, .complete = comp};
        char v[32], e[32];
        int what = (int)(RND() % 3);
        if (what == 0) {
            o.type = MR_LC_READ;
            o.value = present[k] ? regs[k] : NULL;
        } else if (what == 1) {
            o.type = MR_LC_WRITE;
            snprintf(v, sizeof(v), "%d", ++uniq);
            o.arg = v;
            if (RND() % 20 == 0) o.outcome = MR_LC_INFO;
            snprintf(regs[k], sizeof(regs[k]), "%s", v);
            present[k] = true;
        } else {
            o.type = MR_LC_CAS;
            snprintf(v, sizeof(v), "%d", ++uniq);
            if (present[k] && RND() % 2) {
                snprintf(e, sizeof(e), "%s", regs[k]);
                o.expect = e;
                o.cas_ok = true;
                snprintf(regs[k], sizeof(regs[k]), "%s", v);
            } else {
                snprintf(e, sizeof(e), "%d", 999999);
                o.expect = e;
                o.cas_ok = false;
            }
            o.arg = v;
        }
        assert_int_equal(mr_lc_history_add(&h, &o), 0);
    }
#undef RND
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    struct mr_lc_summary s;
    assert_int_equal(mr_lc_check_history(&h, NULL, &s), 0);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    assert_int_equal(s.keys, 3);
    assert_int_equal(s.bad_keys, 0);
    print_message("checked %zu ops in %.3f s\n", s.ops, secs);
    assert_true(secs < 1.0);
    /* corrupt one late read: must be caught */
    for (size_t i = h.n; i-- > 0;)
        if (h.ops[i].type == MR_LC_READ && h.ops[i].outcome == MR_LC_OK &&
            h.ops[i].value) {
            mr_free(h.ops[i].value);
            h.ops[i].value = mr_strdup("424242");
            break;
        }
    assert_int_equal(mr_lc_check_history(&h, NULL, &s), 0);
    assert_int_equal(s.bad_keys, 1);
    mr_lc_history_free(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sequential_history_is_linearizable),
        cmocka_unit_test(concurrent_overlapping_ops_may_reorder),
        cmocka_unit_test(info_write_that_happened_is_accepted),
        cmocka_unit_test(info_write_that_did_not_happen_is_accepted),
        cmocka_unit_test(info_write_may_take_effect_late),
        cmocka_unit_test(failed_ops_are_ignored),
        cmocka_unit_test(stale_read_is_rejected),
        cmocka_unit_test(lost_write_is_rejected),
        cmocka_unit_test(reordered_cas_is_rejected),
        cmocka_unit_test(keys_are_checked_independently),
        cmocka_unit_test(violation_window_is_minimised),
        cmocka_unit_test(parse_rejects_garbage),
        cmocka_unit_test(large_concurrent_history_checks_fast),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
