/* Unit tests for src/net: the wire codec, HMAC-SHA-256 and the TCP transport
 * (several transports on 127.0.0.1 in one uv loop). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/net.h"
#include "net/net_int.h"

#define MAX_FRAME (64u * 1024 * 1024)

/* ===== codec helpers ====================================================== */

/* Concatenates a wbuf's bufs into one malloc'd buffer (test-side only). */
static uint8_t *flatten(const struct mr_net_wbuf *wb, size_t *len)
{
    uint8_t *out = malloc(wb->total ? wb->total : 1);
    size_t n = 0;
    unsigned i;
    assert_non_null(out);
    for (i = 0; i < wb->n_bufs; i++) {
        memcpy(out + n, wb->bufs[i].base, wb->bufs[i].len);
        n += wb->bufs[i].len;
    }
    assert_int_equal(n, wb->total);
    *len = n;
    return out;
}

static struct mr_rcbuf *pattern_buf(size_t len, unsigned seed)
{
    struct mr_rcbuf *b = mr_rcbuf_new(len);
    size_t i;
    assert_non_null(b);
    for (i = 0; i < len; i++) b->data[i] = (unsigned char)(i * 31 + seed);
    return b;
}

static void assert_rcbuf_equal(const struct mr_rcbuf *a, const struct mr_rcbuf *b)
{
    if (a == NULL || b == NULL) {
        assert_ptr_equal(a, b);
        return;
    }
    assert_int_equal(a->len, b->len);
    assert_memory_equal(a->data, b->data, a->len);
}

static void assert_msg_equal(const struct mr_raft_msg *a, const struct mr_raft_msg *b)
{
    uint32_t i;
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->reject, b->reject);
    assert_int_equal(a->snap_last, b->snap_last);
    assert_int_equal(a->from, b->from);
    assert_int_equal(a->to, b->to);
    assert_int_equal(a->term, b->term);
    assert_int_equal(a->index, b->index);
    assert_int_equal(a->log_term, b->log_term);
    assert_int_equal(a->commit, b->commit);
    assert_int_equal(a->reject_hint, b->reject_hint);
    assert_int_equal(a->hint_term, b->hint_term);
    assert_int_equal(a->ctx, b->ctx);
    assert_int_equal(a->snap_index, b->snap_index);
    assert_int_equal(a->snap_term, b->snap_term);
    assert_int_equal(a->snap_offset, b->snap_offset);
    assert_rcbuf_equal(a->snap_config, b->snap_config);
    assert_rcbuf_equal(a->snap_chunk, b->snap_chunk);
    assert_int_equal(a->n_entries, b->n_entries);
    for (i = 0; i < a->n_entries; i++) {
        assert_int_equal(a->entries[i].term, b->entries[i].term);
        assert_int_equal(a->entries[i].index, b->entries[i].index);
        assert_int_equal(a->entries[i].type, b->entries[i].type);
        assert_rcbuf_equal(a->entries[i].data, b->entries[i].data);
    }
}

/* A message of `type` with every field set to something distinct. */
static void fill_msg(struct mr_raft_msg *m, uint8_t type, uint32_t n_entries)
{
    uint32_t i;
    memset(m, 0, sizeof *m);
    m->type = type;
    m->reject = type & 1;
    m->snap_last = (type >> 1) & 1;
    m->from = 0x0102030405060708ULL + type;
    m->to = 0x1112131415161718ULL;
    m->term = 0x2122232425262728ULL;
    m->index = 0x3132333435363738ULL;
    m->log_term = 0x4142434445464748ULL;
    m->commit = 0x5152535455565758ULL;
    m->reject_hint = 0x6162636465666768ULL;
    m->hint_term = 0x7172737475767778ULL;
    m->ctx = 0x8182838485868788ULL;
    m->snap_index = 0x9192939495969798ULL;
    m->snap_term = 0xa1a2a3a4a5a6a7a8ULL;
    m->snap_offset = 0xb1b2b3b4b5b6b7b8ULL;
    m->snap_config = pattern_buf(17, type);
    m->snap_chunk = pattern_buf(type * 100u, 3);
    m->n_entries = n_entries;
    if (n_entries > 0) {
        m->entries = mr_calloc(n_entries, sizeof *m->entries);
        assert_non_null(m->entries);
    }
    for (i = 0; i < n_entries; i++) {
        m->entries[i].term = 1000 + i;
        m->entries[i].index = 2000 + i;
        m->entries[i].type = (uint8_t)(1 + i % 3);
        /* NULL, empty, 1 byte, a few bytes, rotating. */
        m->entries[i].data = i % 4 == 0 ? NULL : pattern_buf((i % 4 - 1) * (i % 4 == 3 ? 50 : 1), i);
    }
}

/* Encodes m, decodes the frame, checks equality; returns the frame bytes. */
static uint8_t *round_trip(const struct mr_raft_msg *m, size_t *len)
{
    struct mr_net_wbuf wb;
    struct mr_net_frame f;
    struct mr_raft_msg out;
    char errmsg[MR_ERRMSG_SIZE];
    size_t consumed;
    uint8_t *bytes;
    assert_int_equal(mr_net_msg_encode(m, MAX_FRAME, &wb, errmsg), 0);
    bytes = flatten(&wb, len);
    mr_net_wbuf_release(&wb);
    assert_int_equal(mr_net_frame_decode(bytes, *len, MAX_FRAME, &f, &consumed, errmsg), 0);
    assert_int_equal(consumed, *len);
    assert_int_equal(f.type, MR_NET_FRAME_RAFT);
    assert_int_equal(f.version, MR_NET_WIRE_VERSION);
    assert_int_equal(mr_net_msg_decode(f.payload, f.len, &out, errmsg), 0);
    assert_msg_equal(m, &out);
    mr_net_msg_release(&out);
    return bytes;
}

static void hex(const char *s, uint8_t *out, size_t *n)
{
    size_t i, len = strlen(s);
    for (i = 0; i < len / 2; i++) {
        unsigned v;
        sscanf(s + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
    *n = len / 2;
}

/* ===== codec tests ========================================================= */

static void test_hmac_sha256_matches_rfc4231_vectors(void **state)
{
    static const struct {
        const char *key, *data, *mac;
    } v[] = {
        /* 1 */ {"0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "4869205468657265",
                 "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
        /* 2 */ {"4a656665", "7768617420646f2079612077616e7420666f72206e6f7468696e673f",
                 "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
        /* 3 */ {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                 "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
                 "dddddddddddddddddddddddd",
                 "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
        /* 4 */ {"0102030405060708090a0b0c0d0e0f10111213141516171819",
                 "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"
                 "cdcdcdcdcdcdcdcdcdcdcdcd",
                 "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
        /* 5 (truncated to 128 bits) */
        {"0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c", "546573742057697468205472756e636174696f6e",
         "a3b6167473100ee06e0c796c2955552b"},
        /* 6: key longer than a block */
        {NULL, /* 131 bytes of 0xaa */
         "54657374205573696e67204c6172676572205468616e20426c6f636b2d53697a65204b6579202d2048"
         "617368204b6579204669727374",
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
        /* 7 */
        {NULL, /* 131 bytes of 0xaa */
         "5468697320697320612074657374207573696e672061206c6172676572207468616e20626c6f636b2d"
         "73697a65206b657920616e642061206c6172676572207468616e20626c6f636b2d73697a6520646174"
         "612e20546865206b6579206e6565647320746f20626520686173686564206265666f7265206265696e"
         "6720757365642062792074686520484d414320616c676f726974686d2e",
         "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
    };
    size_t i;
    (void)state;
    for (i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint8_t key[200], data[200], want[32], got[32];
        /* data up to 152 bytes, keys up to 131 */
        size_t kn, dn, wn;
        if (v[i].key == NULL) {
            memset(key, 0xaa, 131);
            kn = 131;
        } else {
            hex(v[i].key, key, &kn);
        }
        hex(v[i].data, data, &dn);
        hex(v[i].mac, want, &wn);
        mr_net_hmac_sha256(key, kn, data, dn, got);
        assert_memory_equal(got, want, wn);
    }
}

static void test_every_message_type_round_trips_with_every_field(void **state)
{
    uint8_t t;
    (void)state;
    for (t = 1; t <= MR_RAFT_MSG_TYPE_MAX; t++) {
        struct mr_raft_msg m;
        size_t len;
        fill_msg(&m, t, t == MR_RAFT_MSG_APPEND ? 9 : (t % 3));
        free(round_trip(&m, &len));
        mr_net_msg_release(&m);
    }
}

static void test_entries_with_empty_one_byte_and_one_mebibyte_payloads_round_trip(void **state)
{
    struct mr_raft_msg m;
    struct mr_net_wbuf wb;
    char errmsg[MR_ERRMSG_SIZE];
    size_t len, sizes[3] = {0, 1, 1024 * 1024};
    unsigned i, found = 0;
    (void)state;
    memset(&m, 0, sizeof m);
    m.type = MR_RAFT_MSG_APPEND;
    m.from = 1;
    m.to = 2;
    m.n_entries = 3;
    m.entries = mr_calloc(3, sizeof *m.entries);
    for (i = 0; i < 3; i++) {
        m.entries[i].term = 7;
        m.entries[i].index = 100 + i;
        m.entries[i].type = MR_RAFT_ENTRY_NORMAL;
        m.entries[i].data = pattern_buf(sizes[i], i);
    }
    free(round_trip(&m, &len));
    assert_true(len > 1024 * 1024);

    /* The big payload is referenced, not copied: one of the bufs is it. */
    assert_int_equal(mr_net_msg_encode(&m, MAX_FRAME, &wb, errmsg), 0);
    assert_true(wb.n_bufs >= 2);
    for (i = 0; i < wb.n_bufs; i++) {
        if (wb.bufs[i].base == (char *)m.entries[2].data->data) found++;
    }
    assert_int_equal(found, 1);
    assert_int_equal(m.entries[2].data->refs, 2);
    mr_net_wbuf_release(&wb);
    assert_int_equal(m.entries[2].data->refs, 1);
    mr_net_msg_release(&m);
}

static void test_every_truncation_of_a_frame_fails_cleanly(void **state)
{
    struct mr_raft_msg m, out;
    char errmsg[MR_ERRMSG_SIZE];
    struct mr_net_frame f;
    size_t len, cut, consumed;
    long live = mr_alloc_live();
    uint8_t *bytes;
    (void)state;
    fill_msg(&m, MR_RAFT_MSG_APPEND, 6);
    bytes = round_trip(&m, &len);
    for (cut = 0; cut < len; cut++) {
        /* A short stream only means "need more bytes"... */
        assert_int_equal(mr_net_frame_decode(bytes, cut, MAX_FRAME, &f, &consumed, errmsg), 0);
        assert_int_equal(consumed, 0);
        /* ...and a short payload is malformed, with nothing allocated. */
        if (cut >= MR_NET_FRAME_HEADER_SIZE) {
            errmsg[0] = '\0';
            assert_int_equal(mr_net_msg_decode(bytes + MR_NET_FRAME_HEADER_SIZE,
                                               cut - MR_NET_FRAME_HEADER_SIZE, &out, errmsg),
                             MR_EMALFORMED);
            assert_true(strlen(errmsg) > 0);
            assert_null(out.entries);
            assert_null(out.snap_chunk);
        }
    }
    /* Trailing garbage is malformed too. */
    {
        uint8_t *longer = malloc(len + 1);
        memcpy(longer, bytes, len);
        longer[len] = 0;
        assert_int_equal(mr_net_msg_decode(longer + MR_NET_FRAME_HEADER_SIZE,
                                           len + 1 - MR_NET_FRAME_HEADER_SIZE, &out, errmsg),
                         MR_EMALFORMED);
        assert_non_null(strstr(errmsg, "trailing"));
        free(longer);
    }
    free(bytes);
    mr_net_msg_release(&m);
    assert_int_equal(mr_alloc_live(), live);
}

/* Feeds `buf` to every decoder; whatever it says, nothing may crash or leak. */
static void feed_all_decoders(const uint8_t *buf, size_t len)
{
    char errmsg[MR_ERRMSG_SIZE];
    struct mr_raft_msg m;
    struct mr_net_frame f;
    struct mr_net_hello h;
    struct mr_net_hello_reply r;
    struct mr_net_proof p;
    struct mr_net_snapshot_chunk ch;
    uint64_t id;
    const uint8_t *data;
    size_t n, consumed;
    if (mr_net_msg_decode(buf, len, &m, errmsg) == 0) mr_net_msg_release(&m);
    (void)mr_net_frame_decode(buf, len, 4096, &f, &consumed, errmsg);
    (void)mr_net_hello_decode(buf, len, &h, errmsg);
    (void)mr_net_hello_reply_decode(buf, len, &r, errmsg);
    (void)mr_net_proof_decode(buf, len, &p, errmsg);
    (void)mr_net_snapshot_chunk_decode(buf, len, &ch, errmsg);
    (void)mr_net_forward_decode(buf, len, &id, &data, &n, errmsg);
}

static void test_random_garbage_never_crashes_the_decoders(void **state)
{
    struct mr_rand r;
    struct mr_raft_msg m;
    uint8_t buf[512];
    uint8_t *valid;
    size_t len, vlen, i;
    int k;
    long live = mr_alloc_live();
    (void)state;
    mr_rand_seed(&r, 42);
    for (k = 0; k < 5000; k++) {
        len = mr_rand_below(&r, sizeof buf);
        for (i = 0; i < len; i++) buf[i] = (uint8_t)mr_rand_next(&r);
        /* Bias some inputs toward plausible headers. */
        if (k % 3 == 0 && len > 0) buf[0] = (uint8_t)(1 + k % MR_RAFT_MSG_TYPE_MAX);
        feed_all_decoders(buf, len);
    }
    /* Mutations of a valid message reach deeper. */
    fill_msg(&m, MR_RAFT_MSG_APPEND, 5);
    valid = round_trip(&m, &vlen);
    for (k = 0; k < 5000; k++) {
        uint8_t *mut = malloc(vlen);
        int flips = 1 + (int)mr_rand_below(&r, 4);
        memcpy(mut, valid, vlen);
        while (flips-- > 0) mut[mr_rand_below(&r, vlen)] = (uint8_t)mr_rand_next(&r);
        feed_all_decoders(mut + MR_NET_FRAME_HEADER_SIZE,
                          mr_rand_below(&r, vlen - MR_NET_FRAME_HEADER_SIZE + 1));
        free(mut);
    }
    free(valid);
    mr_net_msg_release(&m);
    assert_int_equal(mr_alloc_live(), live);
}

static void test_lying_counts_and_lengths_are_rejected_before_allocating(void **state)
{
    struct mr_raft_msg m, out;
    char errmsg[MR_ERRMSG_SIZE];
    uint8_t *bytes, *payload;
    size_t len, plen;
    /* Offsets in the payload: fixed part, then snap_config (1 + 4 + 17),
     * snap_chunk (1 + 4 + 100), then the entry count. */
    size_t cfg_len_at = 100 + 1, count_at = 100 + 22 + 105;
    (void)state;
    fill_msg(&m, MR_RAFT_MSG_APPEND_RESP, 2); /* type 2: chunk of 200 bytes */
    m.snap_chunk->len = 100;
    bytes = round_trip(&m, &len);
    payload = bytes + MR_NET_FRAME_HEADER_SIZE;
    plen = len - MR_NET_FRAME_HEADER_SIZE;
    assert_int_equal(mr_get_u32(payload + count_at), 2);

    /* Every allocation fails from now on: a lie must be caught before any. */
    mr_alloc_fail_at(1, 1);
    mr_put_u32(payload + count_at, 0xffffffffu);
    assert_int_equal(mr_net_msg_decode(payload, plen, &out, errmsg), MR_EMALFORMED);
    mr_put_u32(payload + count_at, MR_NET_MAX_ENTRIES);
    assert_int_equal(mr_net_msg_decode(payload, plen, &out, errmsg), MR_EMALFORMED);
    assert_non_null(strstr(errmsg, "entry count"));
    mr_put_u32(payload + count_at, 2);
    mr_put_u32(payload + cfg_len_at, 0xfffffff0u);
    assert_int_equal(mr_net_msg_decode(payload, plen, &out, errmsg), MR_EMALFORMED);
    assert_non_null(strstr(errmsg, "snapshot config"));
    mr_alloc_fail_at(0, 0);
    mr_put_u32(payload + cfg_len_at, 17);
    assert_int_equal(mr_net_msg_decode(payload, plen, &out, errmsg), 0);
    mr_net_msg_release(&out);

    /* An entry payload length that lies. The last entry
     * (i = 1) is empty: its u32 length is the last 4 bytes. */
    mr_put_u32(payload + plen - 4, 0x7fffffffu);
    assert_int_equal(mr_net_msg_decode(payload, plen, &out, errmsg), MR_EMALFORMED);
    assert_non_null(strstr(errmsg, "entry 1"));
    free(bytes);
    mr_net_msg_release(&m);
}

static void test_unknown_types_and_flags_are_malformed(void **state)
{
    struct mr_raft_msg m, out;
    char errmsg[MR_ERRMSG_SIZE];
    uint8_t *bytes, *payload;
    size_t len, plen;
    (void)state;
    fill_msg(&m, MR_RAFT_MSG_VOTE, 1);
    mr_rcbuf_unref(m.entries[0].data);
    m.entries[0].data = NULL;
    bytes = round_trip(&m, &len);
    payload = bytes + MR_NET_FRAME_HEADER_SIZE;
    plen = len - MR_NET_FRAME_HEADER_SIZE;
    payload[0] = 0;
    assert_int_equal(mr_net_msg_decode(payload, plen, &out, errmsg), MR_EMALFORMED);
    payload[0] = MR_RAFT_MSG_TYPE_MAX + 1;
    assert_int_equal(mr_net_msg_decode(payload, plen, &out, errmsg), MR_EMALFORMED);
    assert_non_null(strstr(errmsg, "unknown message type"));
    payload[0] = MR_RAFT_MSG_VOTE;
    payload[1] = 2; /* reject */
    assert_int_equal(mr_net_msg_decode(payload, plen, &out, errmsg), MR_EMALFORMED);
    payload[1] = 1;
    payload[plen - 2] = 9; /* entry type */
    assert_int_equal(mr_net_msg_decode(payload, plen, &out, errmsg), MR_EMALFORMED);
    assert_non_null(strstr(errmsg, "unknown type"));
    payload[plen - 2] = MR_RAFT_ENTRY_NORMAL;
    payload[plen - 1] = 2; /* entry flags */
    assert_int_equal(mr_net_msg_decode(payload, plen, &out, errmsg), MR_EMALFORMED);
    payload[plen - 1] = 0;
    assert_int_equal(mr_net_msg_decode(payload, plen, &out, errmsg), 0);
    mr_net_msg_release(&out);
    free(bytes);
    mr_net_msg_release(&m);
}

static void test_decode_survives_every_allocation_failure(void **state)
{
    struct mr_raft_msg m, out;
    char errmsg[MR_ERRMSG_SIZE];
    uint8_t *bytes;
    size_t len;
    unsigned long n;
    long live;
    int rv;
    (void)state;
    fill_msg(&m, MR_RAFT_MSG_APPEND, 8);
    bytes = round_trip(&m, &len);
    live = mr_alloc_live();
    for (n = 1;; n++) {
        mr_alloc_fail_at(n, 0);
        rv = mr_net_msg_decode(bytes + 6, len - 6, &out, errmsg);
        mr_alloc_fail_at(0, 0);
        if (rv == 0) {
            mr_net_msg_release(&out);
            break;
        }
        assert_int_equal(rv, MR_ENOMEM);
        assert_int_equal(mr_alloc_live(), live);
    }
    assert_true(n > 5);
    free(bytes);
    mr_net_msg_release(&m);
}

static void test_frame_header_is_judged_before_the_payload_arrives(void **state)
{
    char errmsg[MR_ERRMSG_SIZE];
    struct mr_net_frame f;
    size_t consumed;
    uint8_t h[MR_NET_FRAME_HEADER_SIZE];
    (void)state;
    mr_net_frame_header_put(h, 4097, MR_NET_FRAME_RAFT);
    assert_int_equal(mr_net_frame_decode(h, 4, 4096, &f, &consumed, errmsg), MR_EMALFORMED);
    assert_non_null(strstr(errmsg, "exceeds"));
    mr_net_frame_header_put(h, 10, MR_NET_FRAME_RAFT);
    h[4] = 7;
    assert_int_equal(mr_net_frame_decode(h, 5, 4096, &f, &consumed, errmsg), MR_EMALFORMED);
    assert_non_null(strstr(errmsg, "version 7"));
    h[4] = MR_NET_WIRE_VERSION;
    h[5] = 0;
    assert_int_equal(mr_net_frame_decode(h, 6, 4096, &f, &consumed, errmsg), MR_EMALFORMED);
    h[5] = MR_NET_FRAME_TYPE_MAX + 1;
    assert_int_equal(mr_net_frame_decode(h, 6, 4096, &f, &consumed, errmsg), MR_EMALFORMED);
    h[5] = MR_NET_FRAME_FORWARD;
    assert_int_equal(mr_net_frame_decode(h, 6, 4096, &f, &consumed, errmsg), 0);
    assert_int_equal(consumed, 0);
}

static void test_encode_refuses_frames_above_the_maximum(void **state)
{
    struct mr_raft_msg m;
    struct mr_net_wbuf wb;
    struct mr_raft_entry e = {
        .term = 1, .index = 1, .type = MR_RAFT_ENTRY_NORMAL, .data = NULL};
    char errmsg[MR_ERRMSG_SIZE];
    uint8_t data[5000] = {0};
    (void)state;
    memset(&m, 0, sizeof m);
    m.type = MR_RAFT_MSG_APPEND;
    m.n_entries = 1;
    m.entries = &e;
    e.data = pattern_buf(5000, 1);
    assert_int_equal(mr_net_msg_encode(&m, 4096, &wb, errmsg), MR_ETOOBIG);
    assert_null(wb.bufs);
    assert_int_equal(mr_net_msg_encode(&m, 8192, &wb, errmsg), 0);
    mr_net_wbuf_release(&wb);
    mr_rcbuf_unref(e.data);
    m.entries = NULL;
    assert_int_equal(mr_net_msg_encode(&m, 8192, &wb, errmsg), MR_EINVAL);
    assert_int_equal(mr_net_forward_encode(MR_NET_FRAME_FORWARD, 1, data, sizeof data, 4096,
                                           &wb, errmsg),
                     MR_ETOOBIG);
}

/* An entry whose payload the log cache dropped must be filled by the host
 * before it is sent: encoded as is, the follower would apply an empty
 * command. */
static void test_encode_refuses_an_entry_whose_payload_was_evicted(void **state)
{
    struct mr_raft_msg m;
    struct mr_net_wbuf wb;
    struct mr_raft_entry e[2];
    char errmsg[MR_ERRMSG_SIZE] = "";
    (void)state;
    memset(&m, 0, sizeof m);
    memset(e, 0, sizeof e);
    e[0].term = e[1].term = 1;
    e[0].index = 7;
    e[1].index = 8;
    e[0].type = e[1].type = MR_RAFT_ENTRY_NORMAL;
    e[0].data = pattern_buf(10, 1);
    e[1].evicted = 1;
    e[1].evicted_len = 10;
    m.type = MR_RAFT_MSG_APPEND;
    m.index = 6;
    m.n_entries = 2;
    m.entries = e;
    assert_int_equal(mr_net_msg_encode(&m, 1 << 20, &wb, errmsg), MR_EINVAL);
    assert_non_null(strstr(errmsg, "entry 8"));
    assert_null(wb.bufs);
    e[1].evicted = 0; /* filled */
    e[1].evicted_len = 0;
    e[1].data = pattern_buf(10, 2);
    assert_int_equal(mr_net_msg_encode(&m, 1 << 20, &wb, errmsg), 0);
    mr_net_wbuf_release(&wb);
    mr_rcbuf_unref(e[0].data);
    mr_rcbuf_unref(e[1].data);
}

static void test_forward_and_snapshot_chunk_frames_round_trip(void **state)
{
    char errmsg[MR_ERRMSG_SIZE];
    struct mr_net_wbuf wb;
    struct mr_net_frame f;
    struct mr_net_snapshot_chunk ch = {77, 5, 1u << 20, 1, NULL, 0}, got;
    struct mr_rcbuf *big = pattern_buf(100000, 9);
    uint64_t id;
    const uint8_t *data;
    size_t n, len, consumed;
    uint8_t *bytes;
    (void)state;
    assert_int_equal(mr_net_forward_encode(MR_NET_FRAME_FORWARD_REPLY, 0xfeedULL, "{\"op\":1}", 8,
                                           MAX_FRAME, &wb, errmsg),
                     0);
    bytes = flatten(&wb, &len);
    mr_net_wbuf_release(&wb);
    assert_int_equal(mr_net_frame_decode(bytes, len, MAX_FRAME, &f, &consumed, errmsg), 0);
    assert_int_equal(f.type, MR_NET_FRAME_FORWARD_REPLY);
    assert_int_equal(mr_net_forward_decode(f.payload, f.len, &id, &data, &n, errmsg), 0);
    assert_int_equal(id, 0xfeedULL);
    assert_int_equal(n, 8);
    assert_memory_equal(data, "{\"op\":1}", 8);
    assert_int_equal(mr_net_forward_decode(f.payload, 7, &id, &data, &n, errmsg), MR_EMALFORMED);
    free(bytes);
    assert_int_equal(mr_net_forward_encode(MR_NET_FRAME_RAFT, 1, NULL, 0, MAX_FRAME, &wb, errmsg),
                     MR_EINVAL);

    assert_int_equal(mr_net_snapshot_chunk_encode(&ch, big, MAX_FRAME, &wb, errmsg), 0);
    assert_int_equal(wb.n_bufs, 2); /* header + the referenced chunk */
    bytes = flatten(&wb, &len);
    mr_net_wbuf_release(&wb);
    assert_int_equal(mr_net_frame_decode(bytes, len, MAX_FRAME, &f, &consumed, errmsg), 0);
    assert_int_equal(f.type, MR_NET_FRAME_SNAPSHOT_CHUNK);
    assert_int_equal(mr_net_snapshot_chunk_decode(f.payload, f.len, &got, errmsg), 0);
    assert_int_equal(got.index, 77);
    assert_int_equal(got.term, 5);
    assert_int_equal(got.offset, 1u << 20);
    assert_int_equal(got.is_last, 1);
    assert_int_equal(got.len, 100000);
    assert_memory_equal(got.data, big->data, 100000);
    ((uint8_t *)f.payload)[24] = 2;
    assert_int_equal(mr_net_snapshot_chunk_decode(f.payload, f.len, &got, errmsg), MR_EMALFORMED);
    assert_int_equal(mr_net_snapshot_chunk_decode(f.payload, 24, &got, errmsg), MR_EMALFORMED);
    free(bytes);

    /* An empty chunk. */
    ch.is_last = 0;
    assert_int_equal(mr_net_snapshot_chunk_encode(&ch, NULL, MAX_FRAME, &wb, errmsg), 0);
    bytes = flatten(&wb, &len);
    mr_net_wbuf_release(&wb);
    assert_int_equal(mr_net_snapshot_chunk_decode(bytes + 6, len - 6, &got, errmsg), 0);
    assert_int_equal(got.len, 0);
    assert_int_equal(got.is_last, 0);
    free(bytes);
    mr_rcbuf_unref(big);
}

static void test_handshake_payloads_round_trip_and_reject_bad_names(void **state)
{
    char errmsg[MR_ERRMSG_SIZE];
    struct mr_net_wbuf wb;
    struct mr_net_hello h, h2;
    struct mr_net_hello_reply r, r2;
    struct mr_net_proof p, p2;
    uint8_t *bytes;
    size_t len, cut;
    (void)state;
    memset(&h, 0, sizeof h);
    h.version = 1;
    h.has_secret = 1;
    h.from = 3;
    h.to = 4;
    strcpy(h.cluster, "prod-east");
    strcpy(h.name, "n3");
    memset(h.nonce, 0xab, sizeof h.nonce);
    assert_int_equal(mr_net_hello_encode(&h, &wb), 0);
    bytes = flatten(&wb, &len);
    mr_net_wbuf_release(&wb);
    assert_int_equal(mr_net_hello_decode(bytes + 6, len - 6, &h2, errmsg), 0);
    assert_memory_equal(&h, &h2, sizeof h);
    for (cut = 0; cut < len - 6; cut++) {
        assert_int_equal(mr_net_hello_decode(bytes + 6, cut, &h2, errmsg), MR_EMALFORMED);
    }
    /* A control character in the node name is refused. */
    bytes[6 + 2 + 1 + 1 + 16 + 1 + 9 + 1] = '\n';
    assert_int_equal(mr_net_hello_decode(bytes + 6, len - 6, &h2, errmsg), MR_EMALFORMED);
    assert_non_null(strstr(errmsg, "printable"));
    free(bytes);

    memset(&r, 0, sizeof r);
    r.is_refused = 1;
    r.has_proof = 1;
    r.version = 1;
    r.from = 9;
    strcpy(r.name, "n9");
    memset(r.proof, 0x5a, sizeof r.proof);
    strcpy(r.reason, "cluster id mismatch\x01\x7f");
    assert_int_equal(mr_net_hello_reply_encode(&r, &wb), 0);
    bytes = flatten(&wb, &len);
    mr_net_wbuf_release(&wb);
    assert_int_equal(mr_net_hello_reply_decode(bytes + 6, len - 6, &r2, errmsg), 0);
    assert_int_equal(r2.from, 9);
    assert_memory_equal(r2.proof, r.proof, sizeof r.proof);
    /* Non-printable bytes in a reason (which gets logged) are replaced. */
    assert_string_equal(r2.reason, "cluster id mismatch??");
    for (cut = 0; cut < len - 6; cut++) {
        assert_int_equal(mr_net_hello_reply_decode(bytes + 6, cut, &r2, errmsg), MR_EMALFORMED);
    }
    free(bytes);

    memset(&p, 0, sizeof p);
    p.has_proof = 1;
    memset(p.proof, 0x11, sizeof p.proof);
    assert_int_equal(mr_net_proof_encode(&p, &wb), 0);
    bytes = flatten(&wb, &len);
    mr_net_wbuf_release(&wb);
    assert_int_equal(mr_net_proof_decode(bytes + 6, len - 6, &p2, errmsg), 0);
    assert_memory_equal(&p, &p2, sizeof p);
    assert_int_equal(mr_net_proof_decode(bytes + 6, len - 7, &p2, errmsg), MR_EMALFORMED);
    free(bytes);
}

static void test_handshake_proofs_depend_on_every_input_and_direction(void **state)
{
    uint8_t n1[32], n2[32], a[32], b[32];
    (void)state;
    memset(n1, 1, 32);
    memset(n2, 2, 32);
    mr_net_handshake_proof("s", 1, 1, "c", 1, 2, n1, n2, a);
    mr_net_handshake_proof("s", 1, 0, "c", 1, 2, n1, n2, b);
    assert_false(mr_net_mac_equal(a, b, 32)); /* no reflection */
    mr_net_handshake_proof("t", 1, 1, "c", 1, 2, n1, n2, b);
    assert_false(mr_net_mac_equal(a, b, 32));
    mr_net_handshake_proof("s", 1, 1, "c", 1, 2, n2, n1, b);
    assert_false(mr_net_mac_equal(a, b, 32));
    mr_net_handshake_proof("s", 1, 1, "d", 1, 2, n1, n2, b);
    assert_false(mr_net_mac_equal(a, b, 32));
    mr_net_handshake_proof("s", 1, 1, "c", 1, 3, n1, n2, b);
    assert_false(mr_net_mac_equal(a, b, 32));
    mr_net_handshake_proof("s", 1, 1, "c", 1, 2, n1, n2, b);
    assert_true(mr_net_mac_equal(a, b, 32));
}

/* Builds a stream of several frames of different kinds. */
static uint8_t *sample_stream(size_t *len, unsigned *n_frames)
{
    struct mr_raft_msg m;
    struct mr_net_wbuf wb;
    char errmsg[MR_ERRMSG_SIZE];
    uint8_t *out = NULL, *part;
    size_t plen, total = 0;
    unsigned i;
    for (i = 0; i < 4; i++) {
        if (i % 2 == 0) {
            fill_msg(&m, (uint8_t)(1 + i), i);
            assert_int_equal(mr_net_msg_encode(&m, MAX_FRAME, &wb, errmsg), 0);
            mr_net_msg_release(&m);
        } else {
            assert_int_equal(mr_net_forward_encode(MR_NET_FRAME_FORWARD, i, "abc", i, MAX_FRAME,
                                                   &wb, errmsg),
                             0);
        }
        part = flatten(&wb, &plen);
        mr_net_wbuf_release(&wb);
        out = realloc(out, total + plen);
        memcpy(out + total, part, plen);
        total += plen;
        free(part);
    }
    *len = total;
    *n_frames = 4;
    return out;
}

static void test_reader_reassembles_frames_fed_byte_by_byte(void **state)
{
    struct mr_net_reader r;
    struct mr_net_frame f;
    char errmsg[MR_ERRMSG_SIZE];
    struct mr_rand rnd;
    unsigned n_frames, got, round;
    size_t len, pos;
    uint8_t *stream = sample_stream(&len, &n_frames);
    (void)state;
    mr_rand_seed(&rnd, 7);
    for (round = 0; round < 20; round++) {
        mr_net_reader_init(&r, 4096);
        got = 0;
        pos = 0;
        while (pos < len) {
            uint8_t *p;
            size_t n, take;
            assert_int_equal(mr_net_reader_reserve(&r, &p, &n), 0);
            /* Round 0: one byte at a time; then random chunk sizes. */
            take = round == 0 ? 1 : 1 + mr_rand_below(&rnd, 300);
            if (take > n) take = n;
            if (take > len - pos) take = len - pos;
            memcpy(p, stream + pos, take);
            mr_net_reader_commit(&r, take);
            pos += take;
            while (mr_net_reader_next(&r, &f, errmsg) == 1) {
                if (got % 2 == 0) {
                    struct mr_raft_msg m, want;
                    assert_int_equal(f.type, MR_NET_FRAME_RAFT);
                    assert_int_equal(mr_net_msg_decode(f.payload, f.len, &m, errmsg), 0);
                    fill_msg(&want, (uint8_t)(1 + got), got);
                    assert_msg_equal(&want, &m);
                    mr_net_msg_release(&want);
                    mr_net_msg_release(&m);
                } else {
                    assert_int_equal(f.type, MR_NET_FRAME_FORWARD);
                    assert_int_equal(f.len, 8 + got);
                }
                got++;
            }
        }
        assert_int_equal(got, n_frames);
        mr_net_reader_close(&r);
    }
    free(stream);
}

static void test_reader_rejects_an_oversized_frame_before_buffering_it(void **state)
{
    struct mr_net_reader r;
    struct mr_net_frame f;
    char errmsg[MR_ERRMSG_SIZE];
    uint8_t *p;
    size_t n;
    (void)state;
    mr_net_reader_init(&r, 4096);
    assert_int_equal(mr_net_reader_reserve(&r, &p, &n), 0);
    memcpy(p, "GET / HTTP/1.1\r\n", 16);
    mr_net_reader_commit(&r, 16);
    /* Before the handshake completes a connection buffers at most 4 KiB. */
    assert_true(r.cap <= 4096 + MR_NET_FRAME_HEADER_SIZE);
    assert_int_equal(mr_net_reader_next(&r, &f, errmsg), MR_EMALFORMED);
    mr_net_reader_close(&r);
}

/* ===== transport harness ==================================================== */

#define MAX_NODES 4

struct tnode {
    struct mr_net net;
    int is_open;
    int is_closed;
    unsigned n_raft, n_forward, n_forward_reply, n_chunks;
    uint64_t sum_terms;
    mr_node_id last_from;
    struct mr_raft_msg last; /* a kept copy, with its own references */
    uint64_t last_req_id;
    uint8_t last_data[128];
    size_t last_len;
    size_t chunk_bytes;
    unsigned n_up, n_down, n_failed, n_refused;
    unsigned n_up_inbound;
    char last_reason[256];
    char all_reasons[4096];
    unsigned fail_attempts[32];
    uint64_t fail_retry[32];
    unsigned n_fail_log;
    uint64_t down_retry;
    char up_name[MR_NET_NAME_MAX + 1]; /* peer name of the last outbound UP */
};

struct tctx {
    long live; /* allocations through the seam at setup */
    uv_loop_t loop;
    uv_timer_t ticker;
    struct tnode nodes[MAX_NODES];
};

static struct tnode *tnode_of(struct mr_net *net) { return net->data; }

static void keep_msg(struct tnode *t, const struct mr_raft_msg *m)
{
    uint32_t i;
    mr_net_msg_release(&t->last);
    t->last = *m;
    t->last.entries = NULL;
    if (m->n_entries > 0) {
        t->last.entries = mr_calloc(m->n_entries, sizeof *m->entries);
        assert_non_null(t->last.entries);
        for (i = 0; i < m->n_entries; i++) {
            t->last.entries[i] = m->entries[i];
            mr_rcbuf_ref(m->entries[i].data);
        }
    }
    mr_rcbuf_ref(m->snap_config);
    mr_rcbuf_ref(m->snap_chunk);
}

static void on_raft_msg(struct mr_net *net, mr_node_id from, const struct mr_raft_msg *m)
{
    struct tnode *t = tnode_of(net);
    t->n_raft++;
    t->sum_terms += m->term;
    t->last_from = from;
    keep_msg(t, m);
}

static void on_forward(struct mr_net *net, mr_node_id from, uint64_t id, const uint8_t *d, size_t n)
{
    struct tnode *t = tnode_of(net);
    t->n_forward++;
    t->last_from = from;
    t->last_req_id = id;
    t->last_len = n;
    memcpy(t->last_data, d, n < sizeof t->last_data ? n : sizeof t->last_data);
}

static void on_forward_reply(struct mr_net *net, mr_node_id from, uint64_t id, const uint8_t *d,
                             size_t n)
{
    struct tnode *t = tnode_of(net);
    t->n_forward_reply++;
    t->last_from = from;
    t->last_req_id = id;
    t->last_len = n;
    memcpy(t->last_data, d, n < sizeof t->last_data ? n : sizeof t->last_data);
}

static void on_chunk(struct mr_net *net, mr_node_id from, const struct mr_net_snapshot_chunk *ch)
{
    struct tnode *t = tnode_of(net);
    t->n_chunks++;
    t->last_from = from;
    t->chunk_bytes += ch->len;
}

static void on_event(struct mr_net *net, const struct mr_net_event *ev)
{
    struct tnode *t = tnode_of(net);
    size_t used = strlen(t->all_reasons);
    assert_non_null(ev->reason);
    assert_non_null(ev->addr);
    assert_non_null(ev->peer_name);
    switch (ev->type) {
    case MR_NET_EV_UP:
        t->n_up++;
        if (ev->is_inbound) t->n_up_inbound++;
        if (!ev->is_inbound) snprintf(t->up_name, sizeof t->up_name, "%s", ev->peer_name);
        break;
    case MR_NET_EV_DOWN:
        t->n_down++;
        if (!ev->is_inbound) t->down_retry = ev->retry_in_ms;
        break;
    case MR_NET_EV_FAILED:
        t->n_failed++;
        if (!ev->is_inbound && t->n_fail_log < 32) {
            t->fail_attempts[t->n_fail_log] = ev->attempt;
            t->fail_retry[t->n_fail_log] = ev->retry_in_ms;
            t->n_fail_log++;
        }
        break;
    case MR_NET_EV_REFUSED:
        t->n_refused++;
        break;
    default:
        fail_msg("unknown event type %d", ev->type);
    }
    if (ev->type != MR_NET_EV_UP) {
        snprintf(t->last_reason, sizeof t->last_reason, "%s", ev->reason);
        snprintf(t->all_reasons + used, sizeof t->all_reasons - used, "%s|", ev->reason);
    }
}

static const struct mr_net_callbacks test_cbs = {on_raft_msg, on_forward, on_forward_reply,
                                                 on_chunk, on_event};

static void on_tick(uv_timer_t *t) { (void)t; }

static int setup(void **state)
{
    struct tctx *c = calloc(1, sizeof *c);
    assert_int_equal(uv_loop_init(&c->loop), 0);
    assert_int_equal(uv_timer_init(&c->loop, &c->ticker), 0);
    c->live = mr_alloc_live();
    *state = c;
    return 0;
}

static void on_net_closed(struct mr_net *net) { tnode_of(net)->is_closed = 1; }

static int teardown(void **state)
{
    struct tctx *c = *state;
    int i;
    for (i = 0; i < MAX_NODES; i++) {
        if (c->nodes[i].is_open && !c->nodes[i].is_closed) mr_net_close(&c->nodes[i].net, on_net_closed);
    }
    uv_close((uv_handle_t *)&c->ticker, NULL);
    assert_int_equal(uv_run(&c->loop, UV_RUN_DEFAULT), 0);
    for (i = 0; i < MAX_NODES; i++) {
        if (c->nodes[i].is_open) assert_true(c->nodes[i].is_closed);
        mr_net_msg_release(&c->nodes[i].last);
    }
    assert_int_equal(uv_loop_close(&c->loop), 0);
    assert_int_equal(mr_alloc_live(), c->live);
    free(c);
    return 0;
}

static void default_opts(struct mr_net_options *o, mr_node_id id, const char *cluster,
                         const char *secret)
{
    static char names[MAX_NODES + 10][8];
    memset(o, 0, sizeof *o);
    o->self_id = id;
    snprintf(names[id % (MAX_NODES + 10)], 8, "n%llu", (unsigned long long)id);
    o->self_name = names[id % (MAX_NODES + 10)];
    o->cluster_id = cluster;
    o->secret = secret;
    o->listen_addr = "127.0.0.1:0";
    o->backoff_min_ms = 10;
    o->backoff_max_ms = 80;
    o->connect_timeout_ms = 2000;
}

/* Starts node slot i (id i + 1) listening on an ephemeral port. */
static struct tnode *start(struct tctx *c, int i, const struct mr_net_options *o)
{
    struct tnode *t = &c->nodes[i];
    memset(t, 0, sizeof *t);
    assert_int_equal(mr_net_init(&t->net, &c->loop, o, &test_cbs, t), 0);
    t->is_open = 1;
    if (o->listen_addr != NULL) assert_int_equal(mr_net_listen(&t->net), 0);
    return t;
}

static struct tnode *start_default(struct tctx *c, int i)
{
    struct mr_net_options o;
    default_opts(&o, (mr_node_id)i + 1, "test-cluster", NULL);
    return start(c, i, &o);
}

static void addr_of(struct tnode *t, char *buf, size_t cap)
{
    snprintf(buf, cap, "127.0.0.1:%d", mr_net_bound_port(&t->net));
}

static void connect_to(struct tnode *from, struct tnode *to)
{
    char addr[64];
    addr_of(to, addr, sizeof addr);
    assert_int_equal(mr_net_set_peer(&from->net, to->net.opts.self_id, addr), 0);
}

/* Runs the loop until pred(arg) or `ms` pass; returns pred's last value. */
static int run_until(struct tctx *c, int (*pred)(void *), void *arg, unsigned ms)
{
    uint64_t deadline;
    uv_update_time(&c->loop);
    deadline = uv_now(&c->loop) + ms;
    uv_timer_start(&c->ticker, on_tick, 2, 2);
    while (!pred(arg) && uv_now(&c->loop) < deadline) uv_run(&c->loop, UV_RUN_ONCE);
    uv_timer_stop(&c->ticker);
    return pred(arg);
}

static void run_for(struct tctx *c, unsigned ms);
static int never(void *arg)
{
    (void)arg;
    return 0;
}
static void run_for(struct tctx *c, unsigned ms) { (void)run_until(c, never, NULL, ms); }

struct up_pair {
    struct tnode *a;
    mr_node_id id;
};
static int is_up(void *arg)
{
    struct up_pair *p = arg;
    return mr_net_peer_is_up(&p->a->net, p->id);
}
static int wait_up(struct tctx *c, struct tnode *a, struct tnode *b)
{
    struct up_pair p = {a, b->net.opts.self_id};
    return run_until(c, is_up, &p, 3000);
}

struct count_wait {
    unsigned *counter;
    unsigned want;
};
static int count_reached(void *arg)
{
    struct count_wait *w = arg;
    return *w->counter >= w->want;
}
static int wait_count(struct tctx *c, unsigned *counter, unsigned want)
{
    struct count_wait w = {counter, want};
    return run_until(c, count_reached, &w, 5000);
}

static void simple_msg(struct mr_raft_msg *m, mr_node_id from, mr_node_id to, mr_term term)
{
    memset(m, 0, sizeof *m);
    m->type = MR_RAFT_MSG_HEARTBEAT;
    m->from = from;
    m->to = to;
    m->term = term;
    m->commit = term * 10;
}

/* ===== transport tests ====================================================== */

static void test_two_transports_exchange_messages_both_ways(void **state)
{
    struct tctx *c = *state;
    struct tnode *a = start_default(c, 0), *b = start_default(c, 1);
    struct mr_raft_msg m;
    (void)state;
    connect_to(a, b);
    connect_to(b, a);
    assert_true(wait_up(c, a, b));
    assert_true(wait_up(c, b, a));

    fill_msg(&m, MR_RAFT_MSG_APPEND, 6);
    m.from = 1;
    m.to = 2;
    assert_int_equal(mr_net_send_raft(&a->net, 2, &m), 0);
    assert_true(wait_count(c, &b->n_raft, 1));
    assert_int_equal(b->last_from, 1);
    assert_msg_equal(&m, &b->last);
    mr_net_msg_release(&m);

    simple_msg(&m, 2, 1, 42);
    assert_int_equal(mr_net_send_raft(&b->net, 1, &m), 0);
    assert_true(wait_count(c, &a->n_raft, 1));
    assert_int_equal(a->last.term, 42);
    assert_int_equal(a->last.commit, 420);
    assert_int_equal(a->last_from, 2);

    /* Forwarding round trip: follower b -> leader a -> b. */
    assert_int_equal(mr_net_send_forward(&b->net, 1, 77, "{\"op\":\"put\"}", 12), 0);
    assert_true(wait_count(c, &a->n_forward, 1));
    assert_int_equal(a->last_req_id, 77);
    assert_int_equal(a->last_len, 12);
    assert_memory_equal(a->last_data, "{\"op\":\"put\"}", 12);
    assert_int_equal(mr_net_send_forward_reply(&a->net, 2, 77, "ok", 2), 0);
    assert_true(wait_count(c, &b->n_forward_reply, 1));
    assert_int_equal(b->last_req_id, 77);
    assert_memory_equal(b->last_data, "ok", 2);
    assert_int_equal(a->n_up, 2); /* outbound + inbound */
    assert_int_equal(a->n_failed + a->n_refused + a->n_down, 0);
    assert_string_equal(a->up_name, "n2");
    assert_string_equal(b->up_name, "n1");

    /* Allocation failures while sending drop the message, nothing leaks. */
    {
        struct mr_net_peer_stats st;
        mr_alloc_fail_at(1, 0); /* the frame */
        assert_int_equal(mr_net_send_raft(&a->net, 2, &m), MR_ENOMEM);
        mr_alloc_fail_at(2, 0); /* the write request */
        assert_int_equal(mr_net_send_forward(&a->net, 2, 1, "x", 1), MR_ENOMEM);
        mr_alloc_fail_at(0, 0);
        assert_int_equal(mr_net_peer_stats(&a->net, 2, &st), 0);
        assert_int_equal(st.dropped_frames, 2);
        assert_int_equal(st.queued_frames, 0);
        assert_true(st.is_up);
        assert_int_equal(st.connects, 1);
    }

    /* Unknown peers and self are refused at the API. */
    assert_int_equal(mr_net_send_raft(&a->net, 9, &m), MR_ENOTFOUND);
    assert_int_equal(mr_net_set_peer(&a->net, 1, "127.0.0.1:1"), MR_EINVAL);
    assert_int_equal(mr_net_set_peer(&a->net, 5, "nonsense"), MR_EINVAL);
    assert_int_equal(mr_net_set_peer(&a->net, 5, "1.2.3.4:99999"), MR_EINVAL);
}

static void test_three_transports_exchange_every_frame_kind_between_all_pairs(void **state)
{
    struct tctx *c = *state;
    struct tnode *n[3];
    struct mr_raft_msg m;
    struct mr_net_snapshot_chunk ch = {10, 2, 0, 0, NULL, 0};
    struct mr_rcbuf *chunk = pattern_buf(300000, 4);
    int i, j;
    for (i = 0; i < 3; i++) n[i] = start_default(c, i);
    for (i = 0; i < 3; i++) {
        for (j = 0; j < 3; j++) {
            if (i != j) connect_to(n[i], n[j]);
        }
    }
    for (i = 0; i < 3; i++) {
        for (j = 0; j < 3; j++) {
            if (i != j) assert_true(wait_up(c, n[i], n[j]));
        }
    }
    for (i = 0; i < 3; i++) {
        for (j = 0; j < 3; j++) {
            if (i == j) continue;
            simple_msg(&m, (mr_node_id)i + 1, (mr_node_id)j + 1, (mr_term)(i * 10 + j));
            assert_int_equal(mr_net_send_raft(&n[i]->net, (mr_node_id)j + 1, &m), 0);
            assert_int_equal(mr_net_send_forward(&n[i]->net, (mr_node_id)j + 1, 5, "x", 1), 0);
            ch.is_last = (uint8_t)(j == 2);
            assert_int_equal(mr_net_send_snapshot_chunk(&n[i]->net, (mr_node_id)j + 1, &ch, chunk), 0);
        }
    }
    for (j = 0; j < 3; j++) {
        assert_true(wait_count(c, &n[j]->n_raft, 2));
        assert_true(wait_count(c, &n[j]->n_forward, 2));
        assert_true(wait_count(c, &n[j]->n_chunks, 2));
        /* Sum of the terms node j got: (i*10 + j) over the two senders i. */
        assert_int_equal(n[j]->sum_terms, (uint64_t)(10 * (0 + 1 + 2 - j) + 2 * j));
        assert_int_equal(n[j]->chunk_bytes, 600000);
    }
    mr_rcbuf_unref(chunk);
}

static void test_wrong_cluster_id_is_refused_with_the_reason_on_both_sides(void **state)
{
    struct tctx *c = *state;
    struct mr_net_options o;
    struct tnode *a, *b;
    struct mr_raft_msg m;
    default_opts(&o, 1, "cluster-a", NULL);
    a = start(c, 0, &o);
    default_opts(&o, 2, "cluster-b", NULL);
    b = start(c, 1, &o);
    connect_to(a, b);
    assert_true(wait_count(c, &a->n_refused, 1));
    assert_true(wait_count(c, &b->n_refused, 1));
    assert_non_null(strstr(a->all_reasons, "cluster id mismatch"));
    assert_non_null(strstr(b->all_reasons, "cluster id mismatch"));
    assert_non_null(strstr(b->all_reasons, "cluster-a"));
    assert_false(mr_net_peer_is_up(&a->net, 2));
    assert_int_equal(b->n_raft, 0);
    /* Refusal counts as a failed attempt: sends fail fast meanwhile. */
    simple_msg(&m, 1, 2, 1);
    assert_int_equal(mr_net_send_raft(&a->net, 2, &m), MR_EUNAVAIL);
}

static void test_wrong_or_missing_secret_is_refused_and_never_revealed(void **state)
{
    struct tctx *c = *state;
    struct mr_net_options o;
    struct tnode *a, *b, *d;
    default_opts(&o, 1, "k", "alpha-secret-1");
    a = start(c, 0, &o);
    default_opts(&o, 2, "k", "bravo-secret-2");
    b = start(c, 1, &o);
    default_opts(&o, 3, "k", NULL);
    d = start(c, 2, &o);
    connect_to(a, b);
    assert_true(wait_count(c, &a->n_refused, 1));
    assert_true(wait_count(c, &b->n_refused, 1));
    assert_non_null(strstr(a->all_reasons, "failed to prove the cluster secret"));
    assert_non_null(strstr(b->all_reasons, "failed to prove the cluster secret"));
    assert_false(mr_net_peer_is_up(&a->net, 2));

    /* A node without a secret is refused by one that has one, and back. */
    connect_to(d, a);
    connect_to(a, d);
    assert_true(wait_count(c, &d->n_refused, 2));
    assert_non_null(strstr(d->all_reasons, "requires the cluster secret"));
    assert_non_null(strstr(d->all_reasons, "has a cluster secret"));
    assert_int_equal(a->n_up + b->n_up + d->n_up, 0);

    assert_null(strstr(a->all_reasons, "alpha"));
    assert_null(strstr(a->all_reasons, "bravo"));
    assert_null(strstr(b->all_reasons, "alpha"));
    assert_null(strstr(b->all_reasons, "bravo"));
    assert_null(strstr(d->all_reasons, "alpha"));
}

static void test_matching_secret_connects_and_messages_flow(void **state)
{
    struct tctx *c = *state;
    struct mr_net_options o;
    struct tnode *a, *b;
    struct mr_raft_msg m;
    default_opts(&o, 1, "k", "the same secret");
    a = start(c, 0, &o);
    default_opts(&o, 2, "k", "the same secret");
    b = start(c, 1, &o);
    connect_to(a, b);
    assert_true(wait_up(c, a, b));
    simple_msg(&m, 1, 2, 3);
    assert_int_equal(mr_net_send_raft(&a->net, 2, &m), 0);
    assert_true(wait_count(c, &b->n_raft, 1));
    assert_int_equal(b->n_up_inbound, 1);
    assert_int_equal(a->n_refused + b->n_refused, 0);
}

static void test_unexpected_or_unknown_node_is_refused(void **state)
{
    struct tctx *c = *state;
    struct mr_net_options o;
    struct tnode *a, *b, *d;
    char addr[64];
    a = start_default(c, 0);
    default_opts(&o, 2, "test-cluster", NULL);
    o.is_strict_peers = 1;
    b = start(c, 1, &o);
    d = start_default(c, 2);
    /* a believes node 5 lives at b's address. */
    addr_of(b, addr, sizeof addr);
    assert_int_equal(mr_net_set_peer(&a->net, 5, addr), 0);
    assert_true(wait_count(c, &a->n_refused, 1));
    assert_non_null(strstr(a->all_reasons, "dialed node 5 but this is node 2"));
    /* b is strict and does not know d. */
    connect_to(d, b);
    assert_true(wait_count(c, &d->n_refused, 1));
    assert_non_null(strstr(d->all_reasons, "node 3 is not a configured peer"));
    /* Once b knows d, d gets in (d keeps retrying with backoff). */
    connect_to(b, d);
    assert_true(wait_up(c, d, b));
}

static void test_down_peer_is_retried_with_backoff_and_messages_flow_once_up(void **state)
{
    struct tctx *c = *state;
    struct tnode *a = start_default(c, 0), *b = start_default(c, 1);
    struct mr_net_options o;
    struct mr_raft_msg m;
    char addr[64];
    unsigned i;
    addr_of(b, addr, sizeof addr);
    mr_net_close(&b->net, on_net_closed);
    assert_true(wait_count(c, (unsigned *)&b->is_closed, 1));

    assert_int_equal(mr_net_set_peer(&a->net, 2, addr), 0);
    assert_true(wait_count(c, &a->n_fail_log, 5));
    for (i = 0; i < 5; i++) {
        uint64_t d = 10u << i;
        if (d > 80) d = 80;
        assert_int_equal(a->fail_attempts[i], i + 1);
        assert_true(a->fail_retry[i] >= d / 2 && a->fail_retry[i] <= d);
    }
    assert_non_null(strstr(a->last_reason, "connect"));
    simple_msg(&m, 1, 2, 5);
    assert_int_equal(mr_net_send_raft(&a->net, 2, &m), MR_EUNAVAIL);

    /* The peer comes up on the same port. */
    default_opts(&o, 2, "test-cluster", NULL);
    o.listen_addr = addr;
    b = start(c, 1, &o);
    assert_true(wait_up(c, a, b));
    assert_int_equal(mr_net_send_raft(&a->net, 2, &m), 0);
    assert_true(wait_count(c, &b->n_raft, 1));
    assert_int_equal(b->last.term, 5);

    /* An established connection that drops is reconnected quickly... */
    mr_net_close(&b->net, on_net_closed);
    assert_true(wait_count(c, &a->n_down, 1));
    assert_true(a->down_retry <= 10);
    assert_non_null(strstr(a->last_reason, "closed by the peer"));
    assert_true(wait_count(c, (unsigned *)&b->is_closed, 1));
    /* ...and once the peer is back, traffic resumes. */
    b = start(c, 1, &o);
    assert_true(wait_up(c, a, b));
    m.term = 6;
    assert_int_equal(mr_net_send_raft(&a->net, 2, &m), 0);
    assert_true(wait_count(c, &b->n_raft, 1));
    assert_int_equal(b->last.term, 6);
}

static void test_peer_given_by_host_name_is_resolved_and_reached(void **state)
{
    struct tctx *c = *state;
    struct tnode *a = start_default(c, 0), *b = start_default(c, 1);
    char addr[64];
    snprintf(addr, sizeof addr, "localhost:%d", mr_net_bound_port(&b->net));
    assert_int_equal(mr_net_set_peer(&a->net, 2, addr), 0);
    assert_true(wait_up(c, a, b));
}


static void test_full_queue_drops_instead_of_blocking_and_others_keep_flowing(void **state)
{
    struct tctx *c = *state;
    struct mr_net_options o;
    struct tnode *a, *b, *d;
    struct mr_raft_msg m;
    struct mr_raft_entry e = {
        .term = 1, .index = 1, .type = MR_RAFT_ENTRY_NORMAL, .data = NULL};
    struct mr_net_peer_stats st;
    unsigned accepted = 0, sends = 0;
    int rv = 0;
    default_opts(&o, 1, "test-cluster", NULL);
    o.queue_max_bytes = 4u * 1024 * 1024;
    o.queue_max_frames = 64;
    a = start(c, 0, &o);
    b = start_default(c, 1);
    d = start_default(c, 2);
    connect_to(a, b);
    connect_to(a, d);
    assert_true(wait_up(c, a, b));
    assert_true(wait_up(c, a, d));
    run_for(c, 20); /* let b's inbound side finish its handshake */
    mr_net_test_pause_reading(&b->net, 1);

    memset(&m, 0, sizeof m);
    m.type = MR_RAFT_MSG_APPEND;
    m.from = 1;
    m.n_entries = 1;
    m.entries = &e;
    e.data = pattern_buf(1024 * 1024, 1);
    /* b does not read: kernel buffers fill, then our queue, then drops. */
    while (sends < 400) {
        m.to = 2;
        rv = mr_net_send_raft(&a->net, 2, &m);
        sends++;
        if (rv == MR_EBUSY) break;
        assert_int_equal(rv, 0);
        accepted++;
        run_for(c, 1);
    }
    assert_int_equal(rv, MR_EBUSY);
    assert_int_equal(mr_net_peer_stats(&a->net, 2, &st), 0);
    assert_true(st.queued_bytes <= 4u * 1024 * 1024);
    assert_true(st.dropped_frames >= 1);
    assert_true(st.is_up);

    /* The slow peer does not hold up the others. */
    m.to = 3;
    assert_int_equal(mr_net_send_raft(&a->net, 3, &m), 0);
    assert_true(wait_count(c, &d->n_raft, 1));
    assert_int_equal(d->last.entries[0].data->len, 1024 * 1024);

    /* When b reads again, everything accepted arrives and the queue drains. */
    mr_net_test_pause_reading(&b->net, 0);
    assert_true(wait_count(c, &b->n_raft, accepted));
    assert_int_equal(mr_net_peer_stats(&a->net, 2, &st), 0);
    assert_int_equal(st.queued_bytes, 0);
    assert_int_equal(st.queued_frames, 0);
    assert_int_equal(st.sent_frames, accepted);
    assert_memory_equal(b->last.entries[0].data->data, e.data->data, 1024 * 1024);
    mr_rcbuf_unref(e.data);
}

/* ---- raw TCP clients ---- */
struct raw {
    uv_tcp_t tcp;
    uv_connect_t req;
    uv_timer_t timer;
    uint8_t *bytes;
    size_t len, pos;
    int is_connected, is_eof, n_closed;
};

static void raw_closed(uv_handle_t *h)
{
    struct raw *r = h->data;
    r->n_closed++;
}

static void raw_alloc(uv_handle_t *h, size_t s, uv_buf_t *buf)
{
    static char scratch[65536];
    (void)h;
    (void)s;
    *buf = uv_buf_init(scratch, sizeof scratch);
}

static void raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct raw *r = s->data;
    (void)buf;
    if (n < 0) r->is_eof = 1;
}

static void raw_connected(uv_connect_t *req, int status)
{
    struct raw *r = req->data;
    assert_int_equal(status, 0);
    r->is_connected = 1;
    assert_int_equal(uv_read_start((uv_stream_t *)&r->tcp, raw_alloc, raw_read), 0);
}

static void raw_connect(struct tctx *c, struct raw *r, struct tnode *to)
{
    struct sockaddr_in sin;
    memset(r, 0, sizeof *r);
    assert_int_equal(uv_ip4_addr("127.0.0.1", mr_net_bound_port(&to->net), &sin), 0);
    assert_int_equal(uv_tcp_init(&c->loop, &r->tcp), 0);
    assert_int_equal(uv_timer_init(&c->loop, &r->timer), 0);
    r->tcp.data = r->timer.data = r->req.data = r;
    assert_int_equal(uv_tcp_connect(&r->req, &r->tcp, (struct sockaddr *)&sin, raw_connected), 0);
    assert_true(wait_count(c, (unsigned *)&r->is_connected, 1));
    uv_tcp_nodelay(&r->tcp, 1);
}

static void raw_close(struct tctx *c, struct raw *r)
{
    uv_close((uv_handle_t *)&r->tcp, raw_closed);
    uv_close((uv_handle_t *)&r->timer, raw_closed);
    assert_true(wait_count(c, (unsigned *)&r->n_closed, 2));
}

static void raw_write_cb(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

static void raw_send(struct raw *r, const void *data, size_t len)
{
    uv_write_t *req = malloc(sizeof *req + len);
    uv_buf_t b = uv_buf_init((char *)(req + 1), (unsigned)len);
    memcpy(req + 1, data, len);
    assert_int_equal(uv_write(req, (uv_stream_t *)&r->tcp, &b, 1, raw_write_cb), 0);
}

/* Sends one byte per timer tick, each in its own segment. */
static void raw_drip(uv_timer_t *t)
{
    struct raw *r = t->data;
    if (r->pos >= r->len) {
        uv_timer_stop(t);
        return;
    }
    raw_send(r, r->bytes + r->pos, 1);
    r->pos++;
}

static void test_silent_client_is_timed_out_during_the_handshake(void **state)
{
    struct tctx *c = *state;
    struct mr_net_options o;
    struct tnode *a;
    struct raw r;
    default_opts(&o, 1, "test-cluster", NULL);
    o.connect_timeout_ms = 100;
    a = start(c, 0, &o);
    raw_connect(c, &r, a);
    assert_true(wait_count(c, (unsigned *)&r.is_eof, 1));
    assert_int_equal(a->n_failed, 1);
    assert_non_null(strstr(a->last_reason, "handshake timed out after 100 ms"));
    raw_close(c, &r);
}

/* ---- a hand-made acceptor, to watch what a dialer with a secret says ---- */
struct fake_acceptor {
    uv_tcp_t server;
    uv_tcp_t conn;
    int has_conn, n_closed;
    int is_honest; /* reply with a valid proof? */
    struct mr_net_reader rd;
    uint8_t raw[4096];
    size_t raw_len;
    struct mr_net_hello hello;
    struct mr_net_proof proof;
    int n_hello, n_proof;
    uint8_t nonce[MR_NET_NONCE_SIZE];
};

static const char *fake_secret = "s3cret-value";

static void fake_closed(uv_handle_t *h)
{
    struct fake_acceptor *f = h->data;
    f->n_closed++;
}

static void fake_conn_closed(uv_handle_t *h)
{
    struct fake_acceptor *f = h->data;
    f->has_conn = 0;
}

static void fake_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct fake_acceptor *f = s->data;
    struct mr_net_frame fr;
    char errmsg[MR_ERRMSG_SIZE];
    uint8_t *p;
    size_t room;
    if (n < 0) {
        uv_close((uv_handle_t *)&f->conn, fake_conn_closed);
        return;
    }
    assert_true(f->raw_len + (size_t)n <= sizeof f->raw);
    memcpy(f->raw + f->raw_len, buf->base, (size_t)n);
    f->raw_len += (size_t)n;
    assert_int_equal(mr_net_reader_reserve(&f->rd, &p, &room), 0);
    assert_true(room >= (size_t)n);
    memcpy(p, buf->base, (size_t)n);
    mr_net_reader_commit(&f->rd, (size_t)n);
    while (mr_net_reader_next(&f->rd, &fr, errmsg) == 1) {
        if (fr.type == MR_NET_FRAME_HANDSHAKE) {
            struct mr_net_hello_reply r;
            struct mr_net_wbuf wb;
            uv_write_t *req;
            assert_int_equal(mr_net_hello_decode(fr.payload, fr.len, &f->hello, errmsg), 0);
            f->n_hello++;
            memset(&r, 0, sizeof r);
            r.version = MR_NET_PROTO_VERSION;
            r.from = 2;
            strcpy(r.name, "fake");
            memset(f->nonce, 0x42, sizeof f->nonce);
            memcpy(r.nonce, f->nonce, sizeof r.nonce);
            r.has_proof = 1;
            if (f->is_honest) {
                mr_net_handshake_proof(fake_secret, strlen(fake_secret), 1, "k", 1, 2,
                                       f->hello.nonce, f->nonce, r.proof);
            } else {
                memset(r.proof, 0x99, sizeof r.proof);
            }
            assert_int_equal(mr_net_hello_reply_encode(&r, &wb), 0);
            req = malloc(sizeof *req + wb.total);
            memcpy(req + 1, wb.bufs[0].base, wb.total);
            {
                uv_buf_t b = uv_buf_init((char *)(req + 1), (unsigned)wb.total);
                assert_int_equal(uv_write(req, s, &b, 1, raw_write_cb), 0);
            }
            mr_net_wbuf_release(&wb);
        } else if (fr.type == MR_NET_FRAME_HANDSHAKE_PROOF) {
            assert_int_equal(mr_net_proof_decode(fr.payload, fr.len, &f->proof, errmsg), 0);
            f->n_proof++;
        }
    }
}

static void fake_connection(uv_stream_t *server, int status)
{
    struct fake_acceptor *f = server->data;
    assert_int_equal(status, 0);
    assert_false(f->has_conn);
    assert_int_equal(uv_tcp_init(server->loop, &f->conn), 0);
    f->conn.data = f;
    f->has_conn = 1;
    assert_int_equal(uv_accept(server, (uv_stream_t *)&f->conn), 0);
    mr_net_reader_close(&f->rd);
    mr_net_reader_init(&f->rd, 4096);
    f->raw_len = 0;
    assert_int_equal(uv_read_start((uv_stream_t *)&f->conn, raw_alloc, fake_read), 0);
}

static int has_secret_bytes(const struct fake_acceptor *f)
{
    return memmem(f->raw, f->raw_len, fake_secret, strlen(fake_secret)) != NULL ||
           memmem(f->raw, f->raw_len, "s3cret", 6) != NULL;
}

static void test_dialer_proves_the_secret_only_to_an_acceptor_that_proved_it(void **state)
{
    struct tctx *c = *state;
    struct mr_net_options o;
    struct fake_acceptor f;
    struct sockaddr_in sin;
    struct sockaddr_storage ss;
    int len = sizeof ss;
    struct tnode *a;
    char addr[64];
    uint8_t want[MR_NET_MAC_SIZE];

    memset(&f, 0, sizeof f);
    mr_net_reader_init(&f.rd, 4096);
    assert_int_equal(uv_tcp_init(&c->loop, &f.server), 0);
    f.server.data = &f;
    assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &sin), 0);
    assert_int_equal(uv_tcp_bind(&f.server, (struct sockaddr *)&sin, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&f.server, 8, fake_connection), 0);
    assert_int_equal(uv_tcp_getsockname(&f.server, (struct sockaddr *)&ss, &len), 0);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(((struct sockaddr_in *)&ss)->sin_port));

    default_opts(&o, 1, "k", fake_secret);
    o.backoff_min_ms = 100; /* time for the fake to see the first hang-up */
    o.backoff_max_ms = 200;
    a = start(c, 0, &o);
    assert_int_equal(mr_net_set_peer(&a->net, 2, addr), 0);

    /* A fake acceptor that cannot prove the secret gets a refusal, not a
     * proof it could replay. */
    assert_true(wait_count(c, &a->n_refused, 1));
    assert_true(wait_count(c, (unsigned *)&f.n_proof, 1));
    assert_int_equal(f.hello.from, 1);
    assert_int_equal(f.hello.to, 2);
    assert_int_equal(f.hello.has_secret, 1);
    assert_string_equal(f.hello.cluster, "k");
    assert_int_equal(f.proof.is_refused, 1);
    assert_int_equal(f.proof.has_proof, 0);
    assert_non_null(strstr(f.proof.reason, "failed to prove the cluster secret"));
    assert_false(has_secret_bytes(&f));

    /* An honest acceptor gets the dialer's proof over both nonces. */
    f.is_honest = 1;
    assert_true(wait_count(c, (unsigned *)&f.n_proof, 2));
    assert_int_equal(f.proof.is_refused, 0);
    assert_int_equal(f.proof.has_proof, 1);
    mr_net_handshake_proof(fake_secret, strlen(fake_secret), 0, "k", 1, 2, f.hello.nonce, f.nonce,
                           want);
    assert_memory_equal(f.proof.proof, want, sizeof want);
    assert_false(has_secret_bytes(&f));
    assert_true(mr_net_peer_is_up(&a->net, 2));
    assert_int_equal(f.n_hello, 2);

    mr_net_close(&a->net, on_net_closed);
    assert_true(wait_count(c, (unsigned *)&a->is_closed, 1));
    if (f.has_conn) uv_close((uv_handle_t *)&f.conn, fake_conn_closed);
    uv_close((uv_handle_t *)&f.server, fake_closed);
    assert_true(wait_count(c, (unsigned *)&f.n_closed, 1));
    run_for(c, 5);
    mr_net_reader_close(&f.rd);
}

static void test_unauthenticated_connections_are_capped(void **state)
{
    struct tctx *c = *state;
    struct tnode *a = start_default(c, 0), *b = start_default(c, 1);
    struct raw *r = calloc(65, sizeof *r);
    int i;
    for (i = 0; i < 65; i++) raw_connect(c, &r[i], a);
    assert_true(wait_count(c, &a->n_failed, 1));
    assert_non_null(strstr(a->last_reason, "too many connections in the handshake"));
    run_for(c, 20);
    assert_int_equal(a->n_failed, 1);
    /* A real peer still gets in once the silent ones are gone. */
    for (i = 0; i < 65; i++) raw_close(c, &r[i]);
    connect_to(b, a);
    assert_true(wait_up(c, b, a));
    free(r);
}

static void test_raw_client_sending_garbage_is_disconnected_and_real_peer_still_served(void **state)
{
    struct tctx *c = *state;
    struct tnode *a = start_default(c, 0), *b = start_default(c, 1);
    struct mr_raft_msg m;
    struct raw r;
    const char *http = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    uint8_t bad_version[6] = {3, 0, 0, 0, 9, 1};
    connect_to(b, a);
    assert_true(wait_up(c, b, a));

    raw_connect(c, &r, a);
    raw_send(&r, http, strlen(http));
    assert_true(wait_count(c, (unsigned *)&r.is_eof, 1));
    raw_close(c, &r);
    assert_true(wait_count(c, &a->n_failed, 1));
    assert_non_null(strstr(a->last_reason, "exceeds the maximum"));

    raw_connect(c, &r, a);
    raw_send(&r, bad_version, sizeof bad_version);
    assert_true(wait_count(c, (unsigned *)&r.is_eof, 1));
    raw_close(c, &r);
    assert_true(wait_count(c, &a->n_failed, 2));
    assert_non_null(strstr(a->last_reason, "version 9"));

    /* A client that connects and says nothing is timed out... not waited
     * for here; one that hangs up mid-header is just a failed attempt. */
    raw_connect(c, &r, a);
    raw_send(&r, bad_version, 3);
    run_for(c, 20);
    raw_close(c, &r);
    assert_true(wait_count(c, &a->n_failed, 3));
    assert_non_null(strstr(a->last_reason, "closed by the peer"));

    simple_msg(&m, 2, 1, 9);
    assert_int_equal(mr_net_send_raft(&b->net, 1, &m), 0);
    assert_true(wait_count(c, &a->n_raft, 1));
    assert_int_equal(a->last.term, 9);
    assert_true(mr_net_peer_is_up(&b->net, 1));
}

/* ===== TLS ================================================================= */
/* Certificates made by tests/integration/fixtures/gen-certs.sh for this run. */
static char certs[256];

static int certs_setup(void **state)
{
    char cmd[600];
    (void)state;
    snprintf(certs, sizeof certs, "/tmp/mr-net-tls-XXXXXX");
    if (mkdtemp(certs) == NULL) return -1;
    snprintf(cmd, sizeof cmd, "sh %s/tests/integration/fixtures/gen-certs.sh %s", MR_SOURCE_DIR,
             certs);
    return system(cmd) == 0 ? 0 : -1;
}

static int certs_teardown(void **state)
{
    char cmd[300];
    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf %s", certs);
    return system(cmd) == 0 ? 0 : -1;
}

/* A server or client context from the test certificates; `name` is the
 * certificate's base name ("server", "rogue"), verification with ca.pem. */
static struct mr_tls_ctx *tls_ctx(int is_server, const char *name)
{
    struct mr_tls_ctx_options o;
    struct mr_tls_ctx *ctx;
    char cert[400], key[400], ca[400], err[MR_ERRMSG_SIZE] = "";
    snprintf(cert, sizeof cert, "%s/%s.pem", certs, name);
    snprintf(key, sizeof key, "%s/%s.key", certs, name);
    snprintf(ca, sizeof ca, "%s/ca.pem", certs);
    memset(&o, 0, sizeof o);
    o.is_server = is_server;
    o.cert_file = cert;
    o.key_file = key;
    o.ca_file = ca;
    o.is_verify_peer = 1;
    assert_int_equal(mr_tls_ctx_new(&o, &ctx, err), 0);
    return ctx;
}

/* Starts slot i with TLS using certificate `name` (NULL: plaintext). */
static struct tnode *start_tls(struct tctx *c, int i, const char *name)
{
    struct mr_net_options o;
    struct tnode *t;
    default_opts(&o, (mr_node_id)i + 1, "test-cluster", NULL);
    if (name == NULL) return start(c, i, &o);
    o.tls_server = tls_ctx(1, name);
    o.tls_client = tls_ctx(0, name);
    t = start(c, i, &o);
    /* The transport holds its own references. */
    mr_tls_ctx_unref(o.tls_server);
    mr_tls_ctx_unref(o.tls_client);
    return t;
}

static void test_tls_transports_carry_every_frame_kind_and_survive_a_context_swap(void **state)
{
    struct tctx *c = *state;
    struct tnode *a = start_tls(c, 0, "server"), *b = start_tls(c, 1, "server");
    struct mr_net_snapshot_chunk ch = {10, 2, 0, 1, NULL, 0};
    struct mr_rcbuf *chunk = pattern_buf(300000, 9);
    struct mr_tls_ctx *s2, *c2;
    struct mr_raft_msg m;
    connect_to(a, b);
    connect_to(b, a);
    assert_true(wait_up(c, a, b));
    assert_true(wait_up(c, b, a));
    fill_msg(&m, MR_RAFT_MSG_APPEND, 6);
    m.from = 1;
    m.to = 2;
    assert_int_equal(mr_net_send_raft(&a->net, 2, &m), 0);
    assert_true(wait_count(c, &b->n_raft, 1));
    assert_msg_equal(&m, &b->last);
    mr_net_msg_release(&m);
    assert_int_equal(mr_net_send_forward(&b->net, 1, 7, "fwd", 3), 0);
    assert_true(wait_count(c, &a->n_forward, 1));
    assert_memory_equal(a->last_data, "fwd", 3);
    assert_int_equal(mr_net_send_snapshot_chunk(&a->net, 2, &ch, chunk), 0);
    assert_true(wait_count(c, &b->n_chunks, 1));
    assert_int_equal(b->chunk_bytes, 300000);

    /* A reload: new contexts for new connections; the old ones keep going. */
    s2 = tls_ctx(1, "server2");
    c2 = tls_ctx(0, "server2");
    assert_int_equal(mr_net_set_tls(&b->net, s2, c2), 0);
    mr_tls_ctx_unref(s2);
    mr_tls_ctx_unref(c2);
    assert_int_equal(mr_net_set_tls(&b->net, NULL, NULL), MR_EINVAL); /* TLS off: restart */
    simple_msg(&m, 1, 2, 5);
    assert_int_equal(mr_net_send_raft(&a->net, 2, &m), 0);
    assert_true(wait_count(c, &b->n_raft, 2));
    /* b dials again with the new certificate, and a accepts it. */
    assert_int_equal(mr_net_remove_peer(&b->net, 1), 0);
    connect_to(b, a);
    assert_true(wait_up(c, b, a));
    simple_msg(&m, 2, 1, 8);
    assert_int_equal(mr_net_send_raft(&b->net, 1, &m), 0);
    assert_true(wait_count(c, &a->n_raft, 1));
    assert_int_equal(a->last.term, 8);
    assert_int_equal(a->n_refused + b->n_refused + a->n_failed + b->n_failed, 0);
    mr_rcbuf_unref(chunk);
}

static void test_tls_and_plaintext_transports_refuse_each_other_and_say_why(void **state)
{
    struct tctx *c = *state;
    struct tnode *a = start_tls(c, 0, "server"), *b = start_tls(c, 1, NULL);
    connect_to(b, a); /* plaintext dialer, TLS acceptor */
    assert_true(wait_count(c, &a->n_refused, 1));
    assert_true(wait_count(c, &b->n_refused, 1));
    assert_non_null(strstr(a->all_reasons, "requires TLS on its peer port"));
    assert_non_null(strstr(b->all_reasons, "refused by the peer: this node requires TLS"));
    connect_to(a, b); /* TLS dialer, plaintext acceptor */
    assert_true(wait_count(c, &b->n_refused, 2));
    assert_non_null(strstr(b->all_reasons, "speaks TLS but this node has no TLS"));
    assert_true(wait_count(c, &a->n_failed, 1));
    assert_non_null(strstr(a->all_reasons, "during the TLS handshake"));
    assert_int_equal(a->n_up + b->n_up, 0);
}

static void test_tls_peer_with_a_certificate_from_another_ca_is_refused(void **state)
{
    struct tctx *c = *state;
    struct tnode *a = start_tls(c, 0, "server"), *b = start_tls(c, 1, "rogue");
    struct raw r;
    connect_to(b, a); /* a refuses b's certificate */
    assert_true(wait_count(c, &a->n_refused, 1));
    assert_non_null(strstr(a->all_reasons, "certificate verify failed"));
    connect_to(a, b); /* a refuses to talk to b as a server too */
    assert_true(wait_count(c, &a->n_refused, 2));
    assert_int_equal(a->n_up + b->n_up, 0);
    /* Garbage that looks like TLS costs that connection only. */
    raw_connect(c, &r, a);
    raw_send(&r, "\x16\x03\x01\x00\x03" "abcdefgh", 13);
    assert_true(wait_count(c, (unsigned *)&r.is_eof, 1));
    raw_close(c, &r);
}

static void append_wbuf(uint8_t **buf, size_t *len, struct mr_net_wbuf *wb)
{
    size_t n;
    uint8_t *part = flatten(wb, &n);
    mr_net_wbuf_release(wb);
    *buf = realloc(*buf, *len + n);
    memcpy(*buf + *len, part, n);
    *len += n;
    free(part);
}

static void test_frames_split_byte_by_byte_over_tcp_arrive_intact(void **state)
{
    struct tctx *c = *state;
    struct tnode *a = start_default(c, 0);
    struct mr_net_hello h;
    struct mr_net_proof p;
    struct mr_net_wbuf wb;
    struct mr_raft_msg m;
    char errmsg[MR_ERRMSG_SIZE];
    struct raw r;
    uint8_t *stream = NULL;
    size_t len = 0;

    /* A hand-made dialer with id 9 (a is not strict about peers). */
    memset(&h, 0, sizeof h);
    h.version = MR_NET_PROTO_VERSION;
    h.from = 9;
    h.to = 1;
    strcpy(h.cluster, "test-cluster");
    strcpy(h.name, "n9");
    assert_int_equal(mr_net_hello_encode(&h, &wb), 0);
    append_wbuf(&stream, &len, &wb);
    memset(&p, 0, sizeof p);
    assert_int_equal(mr_net_proof_encode(&p, &wb), 0);
    append_wbuf(&stream, &len, &wb);
    fill_msg(&m, MR_RAFT_MSG_APPEND, 3);
    m.from = 9;
    assert_int_equal(mr_net_msg_encode(&m, MAX_FRAME, &wb, errmsg), 0);
    append_wbuf(&stream, &len, &wb);
    assert_int_equal(mr_net_forward_encode(MR_NET_FRAME_FORWARD, 31, "hello", 5, MAX_FRAME, &wb,
                                           errmsg),
                     0);
    append_wbuf(&stream, &len, &wb);

    raw_connect(c, &r, a);
    r.bytes = stream;
    r.len = len;
    uv_timer_start(&r.timer, raw_drip, 1, 1);
    assert_true(wait_count(c, &a->n_forward, 1));
    assert_int_equal(a->n_raft, 1);
    assert_int_equal(a->last_from, 9);
    assert_msg_equal(&m, &a->last);
    assert_int_equal(a->last_req_id, 31);
    assert_memory_equal(a->last_data, "hello", 5);
    assert_int_equal(a->n_up_inbound, 1);

    /* A RAFT message whose `from` lies about the sender closes the link. */
    m.from = 4;
    assert_int_equal(mr_net_msg_encode(&m, MAX_FRAME, &wb, errmsg), 0);
    {
        size_t n;
        uint8_t *part = flatten(&wb, &n);
        mr_net_wbuf_release(&wb);
        raw_send(&r, part, n);
        free(part);
    }
    assert_true(wait_count(c, (unsigned *)&r.is_eof, 1));
    assert_true(wait_count(c, &a->n_down, 1));
    assert_non_null(strstr(a->last_reason, "claims to come from node 4"));
    raw_close(c, &r);
    free(stream);
    mr_net_msg_release(&m);
}

static void test_removed_peer_changed_address_and_close_leave_nothing_behind(void **state)
{
    struct tctx *c = *state;
    struct tnode *a = start_default(c, 0), *b = start_default(c, 1), *b2;
    struct mr_net_options o;
    struct mr_raft_msg m;
    char addr[64];
    long live = mr_alloc_live();
    (void)live;
    connect_to(a, b);
    assert_true(wait_up(c, a, b));
    assert_int_equal(mr_net_remove_peer(&a->net, 2), 0);
    assert_int_equal(mr_net_remove_peer(&a->net, 2), MR_ENOTFOUND);
    simple_msg(&m, 1, 2, 1);
    assert_int_equal(mr_net_send_raft(&a->net, 2, &m), MR_ENOTFOUND);
    /* b sees its inbound connection go down. */
    assert_true(wait_count(c, &b->n_down, 1));

    /* Same id, new address: a switches over. */
    connect_to(a, b);
    assert_true(wait_up(c, a, b));
    default_opts(&o, 2, "test-cluster", NULL);
    b2 = start(c, 2, &o);
    addr_of(b2, addr, sizeof addr);
    assert_int_equal(mr_net_set_peer(&a->net, 2, addr), 0);
    assert_int_equal(mr_net_set_peer(&a->net, 2, addr), 0); /* same: no-op */
    assert_true(wait_count(c, &b2->n_up_inbound, 1));
    assert_int_equal(mr_net_send_raft(&a->net, 2, &m), 0);
    assert_true(wait_count(c, &b2->n_raft, 1));
    assert_int_equal(b->n_raft, 0);

    /* Closing with a frame in flight and a peer mid-connect. */
    assert_int_equal(mr_net_set_peer(&a->net, 3, "127.0.0.1:1"), 0);
    assert_int_equal(mr_net_send_raft(&a->net, 2, &m), 0);
    mr_net_close(&a->net, on_net_closed);
    assert_int_equal(mr_net_send_raft(&a->net, 2, &m), MR_ESHUTDOWN);
    assert_true(wait_count(c, (unsigned *)&a->is_closed, 1));
}

static void test_init_validates_options(void **state)
{
    struct tctx *c = *state;
    struct mr_net net;
    struct mr_net_options o;
    (void)state;
    default_opts(&o, 0, "x", NULL);
    assert_int_equal(mr_net_init(&net, &c->loop, &o, &test_cbs, NULL), MR_EINVAL);
    default_opts(&o, 1, "", NULL);
    assert_int_equal(mr_net_init(&net, &c->loop, &o, &test_cbs, NULL), MR_EINVAL);
    assert_non_null(strstr(mr_net_errmsg(&net), "cluster id"));
    default_opts(&o, 1, "bad\ncluster", NULL);
    assert_int_equal(mr_net_init(&net, &c->loop, &o, &test_cbs, NULL), MR_EINVAL);
    default_opts(&o, 1, "x", NULL);
    o.backoff_min_ms = 100;
    o.backoff_max_ms = 10;
    assert_int_equal(mr_net_init(&net, &c->loop, &o, &test_cbs, NULL), MR_EINVAL);
    default_opts(&o, 1, "x", NULL);
    o.listen_addr = "127.0.0.1";
    assert_int_equal(mr_net_init(&net, &c->loop, &o, &test_cbs, NULL), 0);
    assert_int_equal(mr_net_listen(&net), MR_EINVAL);
    assert_non_null(strstr(mr_net_errmsg(&net), "listen address"));
    mr_net_close(&net, NULL);
    assert_int_equal(uv_run(&c->loop, UV_RUN_NOWAIT), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hmac_sha256_matches_rfc4231_vectors),
        cmocka_unit_test(test_every_message_type_round_trips_with_every_field),
        cmocka_unit_test(test_entries_with_empty_one_byte_and_one_mebibyte_payloads_round_trip),
        cmocka_unit_test(test_every_truncation_of_a_frame_fails_cleanly),
        cmocka_unit_test(test_random_garbage_never_crashes_the_decoders),
        cmocka_unit_test(test_lying_counts_and_lengths_are_rejected_before_allocating),
        cmocka_unit_test(test_unknown_types_and_flags_are_malformed),
        cmocka_unit_test(test_decode_survives_every_allocation_failure),
        cmocka_unit_test(test_frame_header_is_judged_before_the_payload_arrives),
        cmocka_unit_test(test_encode_refuses_frames_above_the_maximum),
        cmocka_unit_test(test_encode_refuses_an_entry_whose_payload_was_evicted),
        cmocka_unit_test(test_forward_and_snapshot_chunk_frames_round_trip),
        cmocka_unit_test(test_handshake_payloads_round_trip_and_reject_bad_names),
        cmocka_unit_test(test_handshake_proofs_depend_on_every_input_and_direction),
        cmocka_unit_test(test_reader_reassembles_frames_fed_byte_by_byte),
        cmocka_unit_test(test_reader_rejects_an_oversized_frame_before_buffering_it),
        cmocka_unit_test_setup_teardown(test_init_validates_options, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_transports_exchange_messages_both_ways, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_three_transports_exchange_every_frame_kind_between_all_pairs, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_wrong_cluster_id_is_refused_with_the_reason_on_both_sides, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_or_missing_secret_is_refused_and_never_revealed,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_matching_secret_connects_and_messages_flow, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unexpected_or_unknown_node_is_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_down_peer_is_retried_with_backoff_and_messages_flow_once_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peer_given_by_host_name_is_resolved_and_reached,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_silent_client_is_timed_out_during_the_handshake,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_full_queue_drops_instead_of_blocking_and_others_keep_flowing, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_dialer_proves_the_secret_only_to_an_acceptor_that_proved_it, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unauthenticated_connections_are_capped, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_raw_client_sending_garbage_is_disconnected_and_real_peer_still_served, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_frames_split_byte_by_byte_over_tcp_arrive_intact,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_removed_peer_changed_address_and_close_leave_nothing_behind, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_tls_transports_carry_every_frame_kind_and_survive_a_context_swap, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_tls_and_plaintext_transports_refuse_each_other_and_say_why, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_peer_with_a_certificate_from_another_ca_is_refused,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, certs_setup, certs_teardown);
}
