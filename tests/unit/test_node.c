/* Unit tests for the node's pure helpers: entry payloads, idempotency table. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include <stdlib.h>
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

static void test_script_entry_round_trips_and_rejects_every_truncation(void **state)
{
    struct mr_node_script_entry e;
    struct mr_rcbuf *b;
    size_t cut;
    (void)state;
    b = mr_node_script_entry_encode("v2.lua", 6, "return {}", 9);
    assert_non_null(b);
    assert_int_equal(b->data[1], MR_NODE_ENTRY_SCRIPT);
    assert_int_equal(mr_node_script_entry_decode(b->data, b->len, &e), 0);
    assert_int_equal(e.label_len, 6);
    assert_memory_equal(e.label, "v2.lua", 6);
    assert_int_equal(e.src_len, 9);
    assert_memory_equal(e.src, "return {}", 9);
    for (cut = 0; cut < 4 + 6; cut++)
        assert_int_equal(mr_node_script_entry_decode(b->data, cut, &e), MR_EMALFORMED);
    b->data[1] = MR_NODE_ENTRY_COMMAND;
    assert_int_equal(mr_node_script_entry_decode(b->data, b->len, &e), MR_EMALFORMED);
    mr_rcbuf_unref(b);
    assert_null(mr_node_script_entry_encode("x", MR_NODE_MAX_SCRIPT_LABEL + 1, "", 0));
}

/* The script section carries the running script into snapshots; a damaged
 * one (its source no longer matches its hash, or cut short) is refused. */
static void test_script_section_round_trips_and_refuses_damage(void **state)
{
    static const char src[] = "local M = {}\n"
                              "function M.apply() return 1 end\n"
                              "function M.query() return 1 end\n"
                              "function M.snapshot() return '' end\n"
                              "function M.restore() end\n"
                              "return M\n";
    struct mr_sm_options o = {.script_source = src, .script_name = "conf/s.lua"};
    struct mr_node *n = calloc(1, sizeof *n);
    struct mr_node_sections sec;
    char errmsg[MR_ERRMSG_SIZE];
    (void)state;
    assert_non_null(n);
    assert_int_equal(mr_sm_open(&n->sm, &o, errmsg), 0);
    size_t len = mr_node_sections_encode(n, NULL);
    unsigned char *buf = malloc(len);
    assert_non_null(buf);
    assert_int_equal(mr_node_sections_encode(n, buf), len);
    assert_int_equal(mr_node_sections_parse(buf, len, &sec, errmsg), 0);
    assert_true(sec.has_script);
    assert_int_equal(sec.script_index, 0);
    assert_int_equal(sec.script_label_len, 5);
    assert_memory_equal(sec.script_label, "s.lua", 5);
    assert_int_equal(sec.script_len, strlen(src));
    assert_memory_equal(sec.script_src, src, strlen(src));
    for (size_t cut = 1; cut < len; cut += 7)
        assert_int_equal(mr_node_sections_parse(buf, cut, &sec, errmsg), MR_ECORRUPT);
    buf[len - 2] ^= 1; /* a bit of the source */
    assert_int_equal(mr_node_sections_parse(buf, len, &sec, errmsg), MR_ECORRUPT);
    assert_non_null(strstr(errmsg, "hash"));
    free(buf);
    mr_sm_close(n->sm);
    free(n);
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

static int field(const char *json, char *out, size_t cap)
{
    return mr_node_json_string_field(json, strlen(json), "key", out, cap);
}

/* The watch ring reads each event's "key" with this scanner (no Lua). */
static void test_json_string_field_reads_the_key_of_an_event(void **state)
{
    char out[256];
    (void)state;
    assert_int_equal(field("{\"key\":\"a\",\"op\":\"put\"}", out, sizeof out), 0);
    assert_string_equal(out, "a");
    /* after values of every kind, nested keys named "key" do not count */
    assert_int_equal(field(" { \"v\" : {\"key\":\"no\",\"x\":[1,{\"key\":2}],\"s\":\"}\\\"{\"} ,"
                           " \"n\": -1.5e3, \"t\": true, \"z\": null, \"key\" : \"yes\" } ",
                           out, sizeof out),
                     0);
    assert_string_equal(out, "yes");
    /* escapes, \u, surrogate pairs */
    assert_int_equal(field("{\"key\":\"a\\\"b\\\\c\\/d\\n\\u00e9\\ud83d\\ude00\"}", out, sizeof out), 0);
    assert_string_equal(out, "a\"b\\c/d\n\xc3\xa9\xf0\x9f\x98\x80");
    /* booleans as text (as the full parser did), null and absent */
    assert_int_equal(field("{\"key\":true}", out, sizeof out), 0);
    assert_string_equal(out, "true");
    assert_int_equal(field("{\"key\":null}", out, sizeof out), 1);
    assert_int_equal(field("{\"op\":\"x\"}", out, sizeof out), 1);
    assert_int_equal(field("{}", out, sizeof out), 1);
    /* not a key: numbers, objects; too long; NUL; lone surrogate; garbage */
    assert_int_equal(field("{\"key\":12}", out, sizeof out), -1);
    assert_int_equal(field("{\"key\":{\"a\":1}}", out, sizeof out), -1);
    assert_int_equal(field("{\"key\":\"abcdef\"}", out, 4), -1);
    assert_int_equal(field("{\"key\":\"a\\u0000b\"}", out, sizeof out), -1);
    assert_int_equal(field("{\"key\":\"\\udc00\"}", out, sizeof out), -1);
    assert_int_equal(field("{\"key\":\"\\ud800x\"}", out, sizeof out), -1);
    assert_int_equal(field("[\"key\",\"a\"]", out, sizeof out), -1);
    assert_int_equal(field("{\"key\":\"unterminated", out, sizeof out), -1);
    assert_int_equal(field("{\"a\":[1,2}", out, sizeof out), -1);
    assert_int_equal(field("", out, sizeof out), -1);
    /* every truncation of a valid event is refused or read, never overrun */
    const char *ev = "{\"op\":\"put\",\"value\":{\"k\":[1,\"x\"]},\"key\":\"k\\u00e9y\"}";
    for (size_t i = 0; i < strlen(ev); i++) {
        char buf[128];
        memcpy(buf, ev, i);
        int rv = mr_node_json_string_field(buf, i, "key", out, sizeof out);
        assert_true(rv == -1 || rv == 1 || rv == 0);
    }
}

/* A loop that stalled 700 ms gives the core 70 ticks in one TICK event
 * (on_tick used to step one tick per timer callback, so the leader counted
 * one tick while its followers counted 70); less than a tick gives nothing
 * and the remainder carries over to the next call. */
static void test_ticks_follow_the_clock_not_the_timer_callbacks(void **state)
{
    struct mr_node *n = mr_calloc(1, sizeof *n);
    struct mr_raft_options o;
    uint64_t now;
    (void)state;
    assert_non_null(n);
    mr_queue_init(&n->held);
    mr_raft_options_default(&o, 1);
    assert_int_equal(mr_raft_init(&n->raft, &o), 0);
    n->raft_ready = 1;
    now = uv_hrtime();
    n->tick_base_ns = now - UINT64_C(705) * 1000000;
    mr_node_catch_up_ticks(n);
    assert_int_equal(n->raft.ticks, 70);
    /* what is left is the 5 ms remainder (plus the time this took) */
    assert_true(uv_hrtime() - n->tick_base_ns < UINT64_C(10) * 1000000);
    assert_true(n->tick_base_ns >= now - UINT64_C(5) * 1000000);
    mr_node_catch_up_ticks(n);
    assert_true(n->raft.ticks == 70 || n->raft.ticks == 71);
    mr_raft_close(&n->raft);
    mr_free(n);
}

/* ---- snapshot policy (node_snap_policy.c) ---------------------------------------- */
#define MIB (UINT64_C(1) << 20)

static struct mr_node_options snap_defaults(void)
{
    struct mr_node_options o;
    memset(&o, 0, sizeof o);
    o.snapshot_entries = 10000;
    o.snapshot_log_mb = 32;
    o.snapshot_log_percent = 25;
    o.snapshot_log_percent_small = 100;
    return o;
}

static void test_snapshot_is_due_by_count_or_bytes_when_there_is_none_yet(void **state)
{
    struct mr_node_options o = snap_defaults();
    (void)state;
    assert_false(mr_node_snap_due(&o, 9999 /* entries */, 1 * MIB /* log */, 0 /* snap */, 0));
    assert_true(mr_node_snap_due(&o, 10000 /* entries */, 1 * MIB /* log */, 0 /* snap */, 0));
    assert_true(mr_node_snap_due(&o, 10 /* entries */, 32 * MIB /* log */, 0 /* snap */, 0));
}

static void test_a_growing_state_is_rewritten_once_per_its_size_of_log_not_per_quarter(void **state)
{
    struct mr_node_options o = snap_defaults();
    (void)state;
    /* 20 MiB of state, 10,000+ entries since: 25% (5 MiB) used to be enough */
    assert_false(mr_node_snap_due(&o, 50000 /* entries */, 5 * MIB /* log */, 20 * MIB, 0));
    assert_false(mr_node_snap_due(&o, 100000 /* entries */, 19 * MIB /* log */, 20 * MIB, 0));
    assert_true(mr_node_snap_due(&o, 100000 /* entries */, 20 * MIB /* log */, 20 * MIB, 0));
    /* off: the 25% share alone */
    o.snapshot_log_percent_small = 0;
    assert_true(mr_node_snap_due(&o, 50000 /* entries */, 5 * MIB /* log */, 20 * MIB, 0));
}

static void test_the_larger_share_stops_at_snapshot_log_mb_so_a_large_state_keeps_25_percent(
    void **state)
{
    struct mr_node_options o = snap_defaults();
    (void)state;
    /* 64 MiB of state: 100% would keep 64 MiB of log; capped at 32 MiB */
    assert_false(mr_node_snap_due(&o, 200000 /* entries */, 32 * MIB - 1 /* log */, 64 * MIB, 0));
    assert_true(mr_node_snap_due(&o, 200000 /* entries */, 32 * MIB /* log */, 64 * MIB, 0));
    /* 400 MiB: 25% (100 MiB) is more than the cap, and decides */
    assert_false(mr_node_snap_due(&o, 900000 /* entries */, 99 * MIB /* log */, 400 * MIB, 0));
    assert_true(mr_node_snap_due(&o, 900000 /* entries */, 100 * MIB /* log */, 400 * MIB, 0));
}

static void test_members_ranked_higher_snapshot_at_a_shorter_log_so_snapshots_do_not_coincide(
    void **state)
{
    struct mr_node_options o = snap_defaults();
    (void)state;
    /* 160 MiB of state: rank 0 at 25% (40 MiB), rank 1 at 36 MiB, rank 2 at 32 MiB
     * (give or take the rounding of the percentages) */
    assert_false(mr_node_snap_due(&o, 300000, 40 * MIB - 64 * 1024, 160 * MIB, 0));
    assert_true(mr_node_snap_due(&o, 300000, 40 * MIB, 160 * MIB, 0));
    assert_false(mr_node_snap_due(&o, 300000, 36 * MIB - 64 * 1024, 160 * MIB, 1));
    assert_true(mr_node_snap_due(&o, 300000, 36 * MIB, 160 * MIB, 1));
    assert_false(mr_node_snap_due(&o, 300000, 32 * MIB - 64 * 1024, 160 * MIB, 2));
    assert_true(mr_node_snap_due(&o, 300000, 32 * MIB, 160 * MIB, 2));
    /* capped: rank 5 and beyond at half the log */
    assert_false(mr_node_snap_due(&o, 300000, 20 * MIB - 64 * 1024, 160 * MIB, 9));
    assert_true(mr_node_snap_due(&o, 300000, 20 * MIB, 160 * MIB, 9));
    /* never below the triggers: 10,000 entries or snapshot_log_mb */
    assert_false(mr_node_snap_due(&o, 9999, 20 * MIB, 160 * MIB, 9));
    /* a small state is not staggered: the count decides for every rank */
    assert_true(mr_node_snap_due(&o, 10000, 200 * 1024, 512 * 1024, 2));
}

static void test_a_small_state_snapshots_on_the_count_as_before(void **state)
{
    struct mr_node_options o = snap_defaults();
    (void)state;
    /* 512 KiB of state: below 1 MiB the count (and the 25% share) decide */
    assert_true(mr_node_snap_due(&o, 10000 /* entries */, 200 * 1024 /* log */, 512 * 1024, 0));
    assert_false(mr_node_snap_due(&o, 10000 /* entries */, 100 * 1024 /* log */, 512 * 1024, 0));
    assert_false(mr_node_snap_due(&o, 9999 /* entries */, 400 * 1024 /* log */, 512 * 1024, 0));
}

static void test_snapshot_log_percent_zero_counts_entries_only(void **state)
{
    struct mr_node_options o = snap_defaults();
    (void)state;
    o.snapshot_log_percent = 0;
    assert_true(mr_node_snap_due(&o, 10000 /* entries */, 1 /* log */, 100 * MIB, 0));
    assert_false(mr_node_snap_due(&o, 9999 /* entries */, 1 /* log */, 100 * MIB, 0));
}

static void test_zero_options_mean_the_default_triggers(void **state)
{
    struct mr_node_options o;
    (void)state;
    memset(&o, 0, sizeof o);
    assert_false(mr_node_snap_due(&o, 9999 /* entries */, 32 * MIB - 1, 0 /* snap */, 0));
    assert_true(mr_node_snap_due(&o, 10000 /* entries */, 0 /* log */, 0 /* snap */, 0));
    assert_true(mr_node_snap_due(&o, 1 /* entries */, 32 * MIB, 0 /* snap */, 0));
}

static void test_freed_memory_goes_back_when_idle_or_after_a_minute_not_under_writes(void **state)
{
    (void)state;
    /* applying until 50 ms ago (a gap under load): not now */
    assert_false(mr_node_snap_trim_due(5050 /* now */, 5000 /* idle since */, 4000 /* pending */));
    assert_false(mr_node_snap_trim_due(5000 + MR_NODE_TRIM_IDLE_MS - 1 /* now */,
                                       5000 /* idle since */, 4000 /* pending */));
    /* nothing applied for MR_NODE_TRIM_IDLE_MS: now */
    assert_true(mr_node_snap_trim_due(5000 + MR_NODE_TRIM_IDLE_MS /* now */, 5000 /* idle since */,
                                      4000 /* pending */));
    /* under writes for a minute: now anyway, so RSS does not stay high forever */
    assert_false(mr_node_snap_trim_due(4000 + MR_NODE_TRIM_MAX_DELAY_MS - 1 /* now */,
                                       4000 + MR_NODE_TRIM_MAX_DELAY_MS - 2 /* idle since */,
                                       4000 /* pending */));
    assert_true(mr_node_snap_trim_due(4000 + MR_NODE_TRIM_MAX_DELAY_MS /* now */,
                                      4000 + MR_NODE_TRIM_MAX_DELAY_MS - 1 /* idle since */,
                                      4000 /* pending */));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entry_round_trips_time_key_and_command),
        cmocka_unit_test(test_entry_decode_rejects_every_truncation_and_bad_header),
        cmocka_unit_test(test_script_entry_round_trips_and_rejects_every_truncation),
        cmocka_unit_test(test_script_section_round_trips_and_refuses_damage),
        cmocka_unit_test(test_idem_returns_first_answer_and_expires_by_log_position),
        cmocka_unit_test(test_idem_encoding_round_trips_and_rejects_garbage),
        cmocka_unit_test(test_node_ids_are_stable_and_nonzero),
        cmocka_unit_test(test_json_string_field_reads_the_key_of_an_event),
        cmocka_unit_test(test_ticks_follow_the_clock_not_the_timer_callbacks),
        cmocka_unit_test(test_snapshot_is_due_by_count_or_bytes_when_there_is_none_yet),
        cmocka_unit_test(test_a_growing_state_is_rewritten_once_per_its_size_of_log_not_per_quarter),
        cmocka_unit_test(test_the_larger_share_stops_at_snapshot_log_mb_so_a_large_state_keeps_25_percent),
        cmocka_unit_test(
            test_members_ranked_higher_snapshot_at_a_shorter_log_so_snapshots_do_not_coincide),
        cmocka_unit_test(test_a_small_state_snapshots_on_the_count_as_before),
        cmocka_unit_test(test_snapshot_log_percent_zero_counts_entries_only),
        cmocka_unit_test(test_zero_options_mean_the_default_triggers),
        cmocka_unit_test(test_freed_memory_goes_back_when_idle_or_after_a_minute_not_under_writes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
