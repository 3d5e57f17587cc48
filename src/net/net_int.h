/* net internals shared by net_*.c, the unit tests and the fuzz target. */
#ifndef MR_NET_INT_H
#define MR_NET_INT_H

#include "net/net.h"

/* ---- byte cursor for decoders: every read checks what is left ------------ */
struct mr_net_cur {
    const uint8_t *p;
    size_t left;
};
int mr_net_cur_u8(struct mr_net_cur *c, uint8_t *v);
int mr_net_cur_u16(struct mr_net_cur *c, uint16_t *v);
int mr_net_cur_u32(struct mr_net_cur *c, uint32_t *v);
int mr_net_cur_u64(struct mr_net_cur *c, uint64_t *v);
int mr_net_cur_bytes(struct mr_net_cur *c, size_t n, const uint8_t **v);

/* Copies a short string field into `dst` (cap MR_NET_NAME_MAX + 1 or
 * MR_NET_REASON_MAX + 1), replacing anything but printable ASCII with '?'
 * (these texts end up in logs). */
void mr_net_sanitize(char *dst, size_t cap, const uint8_t *src, size_t n);
/* 1 if s is 1..max bytes of printable ASCII (or 0..max when may_be_empty). */
int mr_net_name_is_valid(const char *s, size_t max, int may_be_empty);

/* ---- handshake payloads --------------------------------------------------- */
#define MR_NET_PROTO_VERSION 1

struct mr_net_hello {
    uint16_t version;
    uint8_t has_secret;
    mr_node_id from;
    mr_node_id to; /* 0 = whoever listens there */
    char cluster[MR_NET_NAME_MAX + 1];
    char name[MR_NET_NAME_MAX + 1];
    uint8_t nonce[MR_NET_NONCE_SIZE];
};

struct mr_net_hello_reply {
    uint8_t is_refused;
    uint8_t has_proof;
    uint16_t version;
    mr_node_id from;
    char name[MR_NET_NAME_MAX + 1];
    uint8_t nonce[MR_NET_NONCE_SIZE];
    uint8_t proof[MR_NET_MAC_SIZE];
    char reason[MR_NET_REASON_MAX + 1];
};

struct mr_net_proof {
    uint8_t is_refused;
    uint8_t has_proof;
    uint8_t proof[MR_NET_MAC_SIZE];
    char reason[MR_NET_REASON_MAX + 1];
};

/* Encoders write a whole frame into out (owned by caller on success). The
 * structs' strings must be valid (names <= 64, reason is truncated). */
int mr_net_hello_encode(const struct mr_net_hello *h, struct mr_net_wbuf *out);
int mr_net_hello_reply_encode(const struct mr_net_hello_reply *r,
                              struct mr_net_wbuf *out);
int mr_net_proof_encode(const struct mr_net_proof *p, struct mr_net_wbuf *out);
/* Decoders take a frame payload; MR_EMALFORMED with errmsg on bad input.
 * Names that are not printable ASCII are rejected; reasons are sanitized. */
int mr_net_hello_decode(const uint8_t *buf, size_t len,
                        struct mr_net_hello *out, char *errmsg);
int mr_net_hello_reply_decode(const uint8_t *buf, size_t len,
                              struct mr_net_hello_reply *out, char *errmsg);
int mr_net_proof_decode(const uint8_t *buf, size_t len,
                        struct mr_net_proof *out, char *errmsg);

/* The handshake proof: HMAC(secret, label | ctx), see net.h. `is_acceptor`
 * selects the label, so a proof can never be reflected back. */
void mr_net_handshake_proof(const void *secret, size_t secret_len,
                            int is_acceptor, const char *cluster,
                            mr_node_id dialer, mr_node_id acceptor,
                            const uint8_t dialer_nonce[MR_NET_NONCE_SIZE],
                            const uint8_t acceptor_nonce[MR_NET_NONCE_SIZE],
                            uint8_t out[MR_NET_MAC_SIZE]);
/* Constant-time comparison: 1 when equal. */
int mr_net_mac_equal(const uint8_t *a, const uint8_t *b, size_t n);

/* ---- incremental frame reader -----------------------------------------------
 * Accumulates stream bytes (read straight into its buffer) and yields whole
 * frames. The buffer grows to at most header + max_frame, and only once a
 * header announcing that size has been checked. */
struct mr_net_reader {
    uint8_t *buf; /* owned */
    size_t cap;
    size_t start; /* first unconsumed byte */
    size_t end;   /* one past the last byte read */
    size_t max_frame;
};
void mr_net_reader_init(struct mr_net_reader *r, size_t max_frame);
void mr_net_reader_close(struct mr_net_reader *r);
/* Space to read into: at least 1 byte, usually 64 KiB or what the pending
 * frame needs. Returns MR_ENOMEM. */
int mr_net_reader_reserve(struct mr_net_reader *r, uint8_t **p, size_t *n);
void mr_net_reader_commit(struct mr_net_reader *r, size_t n);
/* Next whole frame: returns 1 (frame in `f`, payload valid until the next
 * reserve), 0 (need more bytes), MR_EMALFORMED (errmsg set). */
int mr_net_reader_next(struct mr_net_reader *r, struct mr_net_frame *f,
                       char *errmsg);

/* ---- frame building (net_codec.c) ---------------------------------------- */
/* Allocates a wbuf holding one head buffer of `head_len` bytes as bufs[0],
 * room for `max_bufs` bufs and `max_refs` references. */
int mr_net_wbuf_alloc(struct mr_net_wbuf *wb, size_t head_len,
                      unsigned max_bufs, unsigned max_refs);
void mr_net_frame_header_put(unsigned char *p, uint32_t payload_len,
                             uint8_t type);

/* ---- test hooks (net_transport.c) ----------------------------------------- */
/* Stops (1) or restarts (0) reading on every inbound connection, to make this
 * node look like a slow peer. */
void mr_net_test_pause_reading(struct mr_net *net, int is_paused);

#endif /* MR_NET_INT_H */
