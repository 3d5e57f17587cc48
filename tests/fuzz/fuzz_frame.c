/* libFuzzer target for the peer wire codec: the stream reader, the frame
 * header and every payload decoder (RAFT messages, handshake, forward,
 * snapshot chunks). A RAFT message that decodes must re-encode to the same
 * bytes. Build: CC=clang cmake -S . -B build-fuzz -DMR_FUZZ=ON -DMR_ASAN=ON
 * -DMR_UBSAN=ON && cmake --build build-fuzz --target fuzz_frame. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/net.h"
#include "net/net_int.h"

/* The codec is compiled into this file so libFuzzer's coverage
 * instrumentation (-fsanitize=fuzzer, applied by CMake to fuzz_*.c only)
 * sees its branches; the copy in libmr_net.a is then never pulled in. */
#include "../../src/net/net_codec.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_reencodes(const struct mr_raft_msg *m, const uint8_t *payload, size_t len)
{
    struct mr_net_wbuf wb;
    char errmsg[MR_ERRMSG_SIZE];
    size_t off = 0;
    unsigned i;
    if (mr_net_msg_encode(m, UINT32_MAX, &wb, errmsg) != 0) abort();
    if (wb.total != MR_NET_FRAME_HEADER_SIZE + len) abort();
    for (i = 0; i < wb.n_bufs; i++) {
        const uint8_t *b = (const uint8_t *)wb.bufs[i].base;
        size_t n = wb.bufs[i].len;
        if (i == 0) {
            /* Skip the frame header in the first buf. */
            if (n < MR_NET_FRAME_HEADER_SIZE) abort();
            b += MR_NET_FRAME_HEADER_SIZE;
            n -= MR_NET_FRAME_HEADER_SIZE;
        }
        if (off + n > len || memcmp(payload + off, b, n) != 0) abort();
        off += n;
    }
    if (off != len) abort();
    mr_net_wbuf_release(&wb);
}

static void decode_payload(uint8_t type, const uint8_t *p, size_t n)
{
    char errmsg[MR_ERRMSG_SIZE];
    struct mr_raft_msg m;
    struct mr_net_hello h;
    struct mr_net_hello_reply r;
    struct mr_net_proof pr;
    struct mr_net_snapshot_chunk ch;
    uint64_t id;
    const uint8_t *d;
    size_t dn;
    switch (type) {
    case MR_NET_FRAME_RAFT:
        if (mr_net_msg_decode(p, n, &m, errmsg) == 0) {
            check_reencodes(&m, p, n);
            mr_net_msg_release(&m);
        }
        break;
    case MR_NET_FRAME_HANDSHAKE:
        (void)mr_net_hello_decode(p, n, &h, errmsg);
        break;
    case MR_NET_FRAME_HANDSHAKE_REPLY:
        (void)mr_net_hello_reply_decode(p, n, &r, errmsg);
        break;
    case MR_NET_FRAME_HANDSHAKE_PROOF:
        (void)mr_net_proof_decode(p, n, &pr, errmsg);
        break;
    case MR_NET_FRAME_FORWARD:
    case MR_NET_FRAME_FORWARD_REPLY:
        if (mr_net_forward_decode(p, n, &id, &d, &dn, errmsg) == 0 && dn > 0) {
            /* Touch the bytes so ASan checks the bounds. */
            volatile uint8_t x = d[0] ^ d[dn - 1];
            (void)x;
        }
        break;
    case MR_NET_FRAME_SNAPSHOT_CHUNK:
        if (mr_net_snapshot_chunk_decode(p, n, &ch, errmsg) == 0 && ch.len > 0) {
            volatile uint8_t x = ch.data[0] ^ ch.data[ch.len - 1];
            (void)x;
        }
        break;
    default:
        abort(); /* the frame decoder let an unknown type through */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mr_net_reader rd;
    struct mr_net_frame f;
    char errmsg[MR_ERRMSG_SIZE];
    size_t pos = 0, step;
    uint8_t split;
    int rv = 0;

    if (size == 0) return 0;
    /* Every decoder also sees the raw input as a payload. */
    decode_payload(MR_NET_FRAME_RAFT, data, size);
    decode_payload(MR_NET_FRAME_HANDSHAKE, data, size);

    /* The stream: the first byte picks how the rest is split into reads. */
    split = data[0];
    data++;
    size--;
    mr_net_reader_init(&rd, 1u << 20);
    while (pos < size && rv >= 0) {
        uint8_t *p;
        size_t room;
        if (mr_net_reader_reserve(&rd, &p, &room) != 0) break;
        step = split == 0 ? size - pos : 1 + (pos * 7 + split) % split;
        if (step > size - pos) step = size - pos;
        if (step > room) step = room;
        memcpy(p, data + pos, step);
        mr_net_reader_commit(&rd, step);
        pos += step;
        while ((rv = mr_net_reader_next(&rd, &f, errmsg)) == 1) {
            if (f.version != MR_NET_WIRE_VERSION) abort();
            decode_payload(f.type, f.payload, f.len);
        }
    }
    mr_net_reader_close(&rd);
    return 0;
}
