/* net wire codec: frames, RAFT messages, forwards, snapshot chunks and the
 * handshake payloads. Pure: no I/O. Decoders never trust a length. */
#include <string.h>

#include "net/net_int.h"

/* Payloads at least this big go out by reference, smaller ones are copied
 * next to their headers (one uv_buf_t for a heartbeat). Bytes. */
#define INLINE_MAX 4096
/* Fixed part of an encoded mr_raft_msg: 4 bytes + 12 u64 fields. */
#define MSG_FIXED_SIZE (4 + 12 * 8)
/* Smallest encoded entry: term, index, type, flags. */
#define ENTRY_MIN_SIZE (8 + 8 + 1 + 1)

/* ---- cursor ----------------------------------------------------------------- */
int mr_net_cur_u8(struct mr_net_cur *c, uint8_t *v)
{
    if (c->left < 1) return MR_EMALFORMED;
    *v = c->p[0];
    c->p++;
    c->left--;
    return 0;
}

int mr_net_cur_u16(struct mr_net_cur *c, uint16_t *v)
{
    if (c->left < 2) return MR_EMALFORMED;
    *v = (uint16_t)(c->p[0] | c->p[1] << 8);
    c->p += 2;
    c->left -= 2;
    return 0;
}

int mr_net_cur_u32(struct mr_net_cur *c, uint32_t *v)
{
    if (c->left < 4) return MR_EMALFORMED;
    *v = mr_get_u32(c->p);
    c->p += 4;
    c->left -= 4;
    return 0;
}

int mr_net_cur_u64(struct mr_net_cur *c, uint64_t *v)
{
    if (c->left < 8) return MR_EMALFORMED;
    *v = mr_get_u64(c->p);
    c->p += 8;
    c->left -= 8;
    return 0;
}

int mr_net_cur_bytes(struct mr_net_cur *c, size_t n, const uint8_t **v)
{
    if (c->left < n) return MR_EMALFORMED;
    *v = c->p;
    c->p += n;
    c->left -= n;
    return 0;
}

void mr_net_sanitize(char *dst, size_t cap, const uint8_t *src, size_t n)
{
    size_t i;
    MR_ASSERT(cap > 0);
    if (n > cap - 1) n = cap - 1;
    for (i = 0; i < n; i++) dst[i] = (src[i] >= 0x20 && src[i] < 0x7f) ? (char)src[i] : '?';
    dst[n] = '\0';
}

int mr_net_name_is_valid(const char *s, size_t max, int may_be_empty)
{
    size_t i, n;
    if (s == NULL) return may_be_empty;
    n = strlen(s);
    if (n > max || (n == 0 && !may_be_empty)) return 0;
    for (i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f) return 0;
    }
    return 1;
}

/* ---- wbuf ------------------------------------------------------------------- */
int mr_net_wbuf_alloc(struct mr_net_wbuf *wb, size_t head_len,
                      unsigned max_bufs, unsigned max_refs)
{
    /* One block: bufs, then refs, then the head bytes. */
    size_t bufs_size = sizeof(uv_buf_t) * max_bufs;
    size_t refs_size = sizeof(struct mr_rcbuf *) * max_refs;
    char *block;
    memset(wb, 0, sizeof *wb);
    MR_ASSERT(max_bufs >= 1);
    block = mr_malloc(bufs_size + refs_size + head_len);
    if (block == NULL) return MR_ENOMEM;
    wb->bufs = (uv_buf_t *)(void *)block;
    wb->refs = refs_size ? (struct mr_rcbuf **)(void *)(block + bufs_size) : NULL;
    wb->head = (unsigned char *)block + bufs_size + refs_size;
    return 0;
}

void mr_net_wbuf_release(struct mr_net_wbuf *wb)
{
    unsigned i;
    for (i = 0; i < wb->n_refs; i++) mr_rcbuf_unref(wb->refs[i]);
    mr_free(wb->bufs);
    memset(wb, 0, sizeof *wb);
}

void mr_net_frame_header_put(unsigned char *p, uint32_t payload_len, uint8_t type)
{
    mr_put_u32(p, payload_len);
    p[4] = MR_NET_WIRE_VERSION;
    p[5] = type;
}

/* Writer over a wbuf: bytes go to head; a referenced payload closes the
 * current head segment and becomes its own uv_buf_t. */
struct wr {
    struct mr_net_wbuf *wb;
    unsigned char *p;
    unsigned char *seg;
};

static void wr_init(struct wr *w, struct mr_net_wbuf *wb)
{
    w->wb = wb;
    w->p = w->seg = wb->head;
}
static void wr_u8(struct wr *w, uint8_t v) { *w->p++ = v; }
static void wr_u16(struct wr *w, uint16_t v)
{
    w->p[0] = (unsigned char)v;
    w->p[1] = (unsigned char)(v >> 8);
    w->p += 2;
}
static void wr_u32(struct wr *w, uint32_t v)
{
    mr_put_u32(w->p, v);
    w->p += 4;
}
static void wr_u64(struct wr *w, uint64_t v)
{
    mr_put_u64(w->p, v);
    w->p += 8;
}
static void wr_bytes(struct wr *w, const void *b, size_t n)
{
    if (n > 0) memcpy(w->p, b, n);
    w->p += n;
}
static void wr_flush(struct wr *w)
{
    if (w->p > w->seg) {
        w->wb->bufs[w->wb->n_bufs++] = uv_buf_init((char *)w->seg, (unsigned)(w->p - w->seg));
    }
    w->seg = w->p;
}
/* A payload: copied when small, referenced when large. */
static void wr_rcbuf(struct wr *w, struct mr_rcbuf *b)
{
    if (b->len < INLINE_MAX) {
        wr_bytes(w, b->data, b->len);
        return;
    }
    wr_flush(w);
    w->wb->bufs[w->wb->n_bufs++] = uv_buf_init((char *)b->data, (unsigned)b->len);
    w->wb->refs[w->wb->n_refs++] = mr_rcbuf_ref(b);
}

/* Head bytes and reference count needed for a payload rcbuf (may be NULL). */
static void layout_rcbuf(const struct mr_rcbuf *b, size_t *head, size_t *payload,
                         unsigned *refs)
{
    if (b == NULL) return;
    *payload += b->len;
    if (b->len < INLINE_MAX) {
        *head += b->len;
    } else {
        (*refs)++;
    }
}

static int check_size(size_t payload, size_t max_frame, char *errmsg)
{
    if (payload > max_frame || payload > UINT32_MAX) {
        mr_errmsg_printf(errmsg, "frame payload of %zu bytes exceeds the maximum of %zu",
                         payload, max_frame);
        return MR_ETOOBIG;
    }
    return 0;
}

/* uv_buf_t lengths are unsigned int; a referenced payload must fit. */
static int check_rcbuf(const struct mr_rcbuf *b, char *errmsg)
{
    if (b != NULL && b->len > UINT32_MAX) {
        mr_errmsg_printf(errmsg, "payload of %zu bytes is too large", b->len);
        return MR_ETOOBIG;
    }
    return 0;
}

/* ---- frames ----------------------------------------------------------------- */
int mr_net_frame_decode(const uint8_t *buf, size_t len, size_t max_frame,
                        struct mr_net_frame *out, size_t *consumed,
                        char *errmsg)
{
    uint32_t plen;
    *consumed = 0;
    /* Judge each header byte as soon as it is there, so garbage is refused
     * early and an oversized length before any payload is buffered. */
    if (len >= 4) {
        plen = mr_get_u32(buf);
        if (plen > max_frame) {
            mr_errmsg_printf(errmsg, "frame of %u bytes exceeds the maximum of %zu",
                             plen, max_frame);
            return MR_EMALFORMED;
        }
    }
    if (len >= 5 && buf[4] != MR_NET_WIRE_VERSION) {
        mr_errmsg_printf(errmsg, "frame version %u is not supported (this node speaks %u)",
                         buf[4], MR_NET_WIRE_VERSION);
        return MR_EMALFORMED;
    }
    if (len >= 6 && (buf[5] == 0 || buf[5] > MR_NET_FRAME_TYPE_MAX)) {
        mr_errmsg_printf(errmsg, "unknown frame type %u", buf[5]);
        return MR_EMALFORMED;
    }
    if (len < MR_NET_FRAME_HEADER_SIZE) return 0;
    plen = mr_get_u32(buf);
    if (len - MR_NET_FRAME_HEADER_SIZE < plen) return 0;
    out->version = buf[4];
    out->type = buf[5];
    out->payload = buf + MR_NET_FRAME_HEADER_SIZE;
    out->len = plen;
    *consumed = MR_NET_FRAME_HEADER_SIZE + (size_t)plen;
    return 0;
}

/* ---- RAFT messages ---------------------------------------------------------- */
int mr_net_msg_encode(const struct mr_raft_msg *m, size_t max_frame,
                      struct mr_net_wbuf *out, char *errmsg)
{
    size_t head = MR_NET_FRAME_HEADER_SIZE + MSG_FIXED_SIZE + 2 * 5 + 4;
    size_t payload = MSG_FIXED_SIZE + 2 * 5 + 4;
    unsigned refs = 0;
    uint32_t i;
    struct wr w;
    int rv;

    memset(out, 0, sizeof *out);
    if (m->n_entries > 0 && m->entries == NULL) {
        mr_errmsg_printf(errmsg, "message has %u entries but no array", m->n_entries);
        return MR_EINVAL;
    }
    if (m->n_entries > MR_NET_MAX_ENTRIES) {
        mr_errmsg_printf(errmsg, "message has %u entries, more than %u", m->n_entries,
                         MR_NET_MAX_ENTRIES);
        return MR_EINVAL;
    }
    layout_rcbuf(m->snap_config, &head, &payload, &refs);
    layout_rcbuf(m->snap_chunk, &head, &payload, &refs);
    if ((rv = check_rcbuf(m->snap_config, errmsg)) != 0) return rv;
    if ((rv = check_rcbuf(m->snap_chunk, errmsg)) != 0) return rv;
    for (i = 0; i < m->n_entries; i++) {
        const struct mr_raft_entry *e = &m->entries[i];
        if (e->evicted) {
            /* its payload was dropped from memory and not read back: sent
             * as is, the follower would apply an empty command */
            mr_errmsg_printf(errmsg, "entry %llu has no payload in memory (evicted)",
                             (unsigned long long)e->index);
            return MR_EINVAL;
        }
        head += ENTRY_MIN_SIZE;
        payload += ENTRY_MIN_SIZE;
        if (e->data != NULL) {
            head += 4;
            payload += 4;
            layout_rcbuf(e->data, &head, &payload, &refs);
            if ((rv = check_rcbuf(e->data, errmsg)) != 0) return rv;
        }
        /* Stop early on absurd sizes rather than overflow the sums. */
        if (payload > max_frame) break;
    }
    if ((rv = check_size(payload, max_frame, errmsg)) != 0) return rv;

    rv = mr_net_wbuf_alloc(out, head, 2 * refs + 1, refs);
    if (rv != 0) {
        mr_errmsg_printf(errmsg, "out of memory encoding a message");
        return rv;
    }
    wr_init(&w, out);
    mr_net_frame_header_put(w.p, (uint32_t)payload, MR_NET_FRAME_RAFT);
    w.p += MR_NET_FRAME_HEADER_SIZE;
    wr_u8(&w, m->type);
    wr_u8(&w, m->reject);
    wr_u8(&w, m->snap_last);
    wr_u8(&w, m->pad_);
    wr_u64(&w, m->from);
    wr_u64(&w, m->to);
    wr_u64(&w, m->term);
    wr_u64(&w, m->index);
    wr_u64(&w, m->log_term);
    wr_u64(&w, m->commit);
    wr_u64(&w, m->reject_hint);
    wr_u64(&w, m->hint_term);
    wr_u64(&w, m->ctx);
    wr_u64(&w, m->snap_index);
    wr_u64(&w, m->snap_term);
    wr_u64(&w, m->snap_offset);
    wr_u8(&w, m->snap_config != NULL);
    wr_u32(&w, m->snap_config != NULL ? (uint32_t)m->snap_config->len : 0);
    if (m->snap_config != NULL) wr_rcbuf(&w, m->snap_config);
    wr_u8(&w, m->snap_chunk != NULL);
    wr_u32(&w, m->snap_chunk != NULL ? (uint32_t)m->snap_chunk->len : 0);
    if (m->snap_chunk != NULL) wr_rcbuf(&w, m->snap_chunk);
    wr_u32(&w, m->n_entries);
    for (i = 0; i < m->n_entries; i++) {
        const struct mr_raft_entry *e = &m->entries[i];
        wr_u64(&w, e->term);
        wr_u64(&w, e->index);
        wr_u8(&w, e->type);
        wr_u8(&w, e->data != NULL);
        if (e->data != NULL) {
            wr_u32(&w, (uint32_t)e->data->len);
            wr_rcbuf(&w, e->data);
        }
    }
    wr_flush(&w);
    MR_ASSERT(w.p == out->head + head);
    MR_ASSERT(out->n_refs == refs);
    out->total = MR_NET_FRAME_HEADER_SIZE + payload;
    return 0;
}

void mr_net_msg_release(struct mr_raft_msg *m)
{
    uint32_t i;
    if (m == NULL) return;
    if (m->entries != NULL) {
        for (i = 0; i < m->n_entries; i++) mr_rcbuf_unref(m->entries[i].data);
        mr_free(m->entries);
    }
    mr_rcbuf_unref(m->snap_config);
    mr_rcbuf_unref(m->snap_chunk);
    memset(m, 0, sizeof *m);
}

/* An optional payload: u8 present | u32 len | bytes. Copied into a fresh
 * rcbuf only when `build`. */
static int decode_opt_buf(struct mr_net_cur *c, int build, struct mr_rcbuf **out,
                          const char *what, char *errmsg)
{
    uint8_t present;
    uint32_t n;
    const uint8_t *p;
    if (mr_net_cur_u8(c, &present) != 0 || mr_net_cur_u32(c, &n) != 0) {
        mr_errmsg_printf(errmsg, "truncated %s header", what);
        return MR_EMALFORMED;
    }
    if (present > 1) {
        mr_errmsg_printf(errmsg, "bad %s presence flag %u", what, present);
        return MR_EMALFORMED;
    }
    if (!present) {
        if (n != 0) {
            mr_errmsg_printf(errmsg, "absent %s with length %u", what, n);
            return MR_EMALFORMED;
        }
        return 0;
    }
    if (mr_net_cur_bytes(c, n, &p) != 0) {
        mr_errmsg_printf(errmsg, "%s length %u exceeds the %zu bytes left", what, n,
                         c->left);
        return MR_EMALFORMED;
    }
    if (!build) return 0;
    *out = mr_rcbuf_copy(p, n);
    if (*out == NULL) {
        mr_errmsg_printf(errmsg, "out of memory decoding %s", what);
        return MR_ENOMEM;
    }
    return 0;
}

/* One pass over an encoded message. With build == 0 it only validates and
 * allocates nothing; with build == 1 (on input already validated) it fills
 * `out`, and can only fail with MR_ENOMEM. Two passes mean garbage never
 * costs an allocation, whatever its counts claim. */
static int msg_parse(const uint8_t *buf, size_t len, int build, struct mr_raft_msg *out,
                     char *errmsg)
{
    struct mr_net_cur c = {buf, len};
    uint32_t n, i;
    int rv;

    if (len < MSG_FIXED_SIZE) {
        mr_errmsg_printf(errmsg, "message of %zu bytes is shorter than its %d-byte header",
                         len, MSG_FIXED_SIZE);
        return MR_EMALFORMED;
    }
    /* The fixed part cannot fail now that its size is checked. */
    (void)mr_net_cur_u8(&c, &out->type);
    (void)mr_net_cur_u8(&c, &out->reject);
    (void)mr_net_cur_u8(&c, &out->snap_last);
    (void)mr_net_cur_u8(&c, &out->pad_);
    (void)mr_net_cur_u64(&c, &out->from);
    (void)mr_net_cur_u64(&c, &out->to);
    (void)mr_net_cur_u64(&c, &out->term);
    (void)mr_net_cur_u64(&c, &out->index);
    (void)mr_net_cur_u64(&c, &out->log_term);
    (void)mr_net_cur_u64(&c, &out->commit);
    (void)mr_net_cur_u64(&c, &out->reject_hint);
    (void)mr_net_cur_u64(&c, &out->hint_term);
    (void)mr_net_cur_u64(&c, &out->ctx);
    (void)mr_net_cur_u64(&c, &out->snap_index);
    (void)mr_net_cur_u64(&c, &out->snap_term);
    (void)mr_net_cur_u64(&c, &out->snap_offset);
    if (out->type == 0 || out->type > MR_RAFT_MSG_TYPE_MAX) {
        mr_errmsg_printf(errmsg, "unknown message type %u", out->type);
        return MR_EMALFORMED;
    }
    if (out->reject > 1 || out->snap_last > 1 || out->pad_ != 0) {
        mr_errmsg_printf(errmsg, "bad message flags (reject %u, last %u, pad %u)",
                         out->reject, out->snap_last, out->pad_);
        return MR_EMALFORMED;
    }
    rv = decode_opt_buf(&c, build, &out->snap_config, "snapshot config", errmsg);
    if (rv != 0) return rv;
    rv = decode_opt_buf(&c, build, &out->snap_chunk, "snapshot chunk", errmsg);
    if (rv != 0) return rv;
    if (mr_net_cur_u32(&c, &n) != 0) {
        mr_errmsg_printf(errmsg, "truncated entry count");
        return MR_EMALFORMED;
    }
    if (n > MR_NET_MAX_ENTRIES || (uint64_t)n * ENTRY_MIN_SIZE > c.left) {
        mr_errmsg_printf(errmsg, "entry count %u does not fit in the %zu bytes left", n,
                         c.left);
        return MR_EMALFORMED;
    }
    if (build && n > 0) {
        out->entries = mr_calloc(n, sizeof *out->entries);
        if (out->entries == NULL) {
            mr_errmsg_printf(errmsg, "out of memory for %u entries", n);
            return MR_ENOMEM;
        }
        /* calloc'd: entries not reached yet hold no payload to release. */
        out->n_entries = n;
    }
    for (i = 0; i < n; i++) {
        struct mr_raft_entry scratch, *e = build ? &out->entries[i] : &scratch;
        uint8_t flags;
        uint32_t dlen;
        const uint8_t *p;
        if (mr_net_cur_u64(&c, &e->term) != 0 || mr_net_cur_u64(&c, &e->index) != 0 ||
            mr_net_cur_u8(&c, &e->type) != 0 || mr_net_cur_u8(&c, &flags) != 0) {
            mr_errmsg_printf(errmsg, "truncated entry %u", i);
            return MR_EMALFORMED;
        }
        if (e->type < MR_RAFT_ENTRY_NORMAL || e->type > MR_RAFT_ENTRY_CONFIG) {
            mr_errmsg_printf(errmsg, "entry %u has unknown type %u", i, e->type);
            return MR_EMALFORMED;
        }
        if (flags > 1) {
            mr_errmsg_printf(errmsg, "entry %u has bad flags %u", i, flags);
            return MR_EMALFORMED;
        }
        if (!flags) continue;
        if (mr_net_cur_u32(&c, &dlen) != 0 || mr_net_cur_bytes(&c, dlen, &p) != 0) {
            mr_errmsg_printf(errmsg, "entry %u payload exceeds the %zu bytes left", i, c.left);
            return MR_EMALFORMED;
        }
        if (!build) continue;
        e->data = mr_rcbuf_copy(p, dlen);
        if (e->data == NULL) {
            mr_errmsg_printf(errmsg, "out of memory for entry %u", i);
            return MR_ENOMEM;
        }
    }
    if (c.left != 0) {
        mr_errmsg_printf(errmsg, "%zu trailing bytes after the message", c.left);
        return MR_EMALFORMED;
    }
    return 0;
}

int mr_net_msg_decode(const uint8_t *buf, size_t len, struct mr_raft_msg *out,
                      char *errmsg)
{
    int rv;
    memset(out, 0, sizeof *out);
    rv = msg_parse(buf, len, 0, out, errmsg);
    if (rv == 0) {
        memset(out, 0, sizeof *out);
        rv = msg_parse(buf, len, 1, out, errmsg);
        MR_ASSERT(rv == 0 || rv == MR_ENOMEM);
    }
    if (rv != 0) mr_net_msg_release(out);
    return rv;
}

/* ---- forward ---------------------------------------------------------------- */
int mr_net_forward_encode(uint8_t type, uint64_t req_id, const void *data,
                          size_t len, size_t max_frame,
                          struct mr_net_wbuf *out, char *errmsg)
{
    size_t payload;
    struct wr w;
    int rv;
    memset(out, 0, sizeof *out);
    if (type != MR_NET_FRAME_FORWARD && type != MR_NET_FRAME_FORWARD_REPLY) {
        mr_errmsg_printf(errmsg, "frame type %u is not a forward", type);
        return MR_EINVAL;
    }
    if (len > max_frame) return check_size(len, max_frame, errmsg);
    payload = MR_NET_FORWARD_HEADER_SIZE + len;
    if ((rv = check_size(payload, max_frame, errmsg)) != 0) return rv;
    rv = mr_net_wbuf_alloc(out, MR_NET_FRAME_HEADER_SIZE + payload, 1, 0);
    if (rv != 0) {
        mr_errmsg_printf(errmsg, "out of memory encoding a forward");
        return rv;
    }
    wr_init(&w, out);
    mr_net_frame_header_put(w.p, (uint32_t)payload, type);
    w.p += MR_NET_FRAME_HEADER_SIZE;
    wr_u64(&w, req_id);
    wr_bytes(&w, data, len);
    wr_flush(&w);
    out->total = MR_NET_FRAME_HEADER_SIZE + payload;
    return 0;
}

int mr_net_forward_decode(const uint8_t *buf, size_t len, uint64_t *req_id,
                          const uint8_t **data, size_t *data_len, char *errmsg)
{
    if (len < MR_NET_FORWARD_HEADER_SIZE) {
        mr_errmsg_printf(errmsg, "forward of %zu bytes has no request id", len);
        return MR_EMALFORMED;
    }
    *req_id = mr_get_u64(buf);
    *data = buf + MR_NET_FORWARD_HEADER_SIZE;
    *data_len = len - MR_NET_FORWARD_HEADER_SIZE;
    return 0;
}

/* ---- snapshot chunks ---------------------------------------------------------- */
int mr_net_snapshot_chunk_encode(const struct mr_net_snapshot_chunk *chunk,
                                 struct mr_rcbuf *data, size_t max_frame,
                                 struct mr_net_wbuf *out, char *errmsg)
{
    size_t head = MR_NET_FRAME_HEADER_SIZE + MR_NET_SNAPSHOT_HEADER_SIZE;
    size_t payload = MR_NET_SNAPSHOT_HEADER_SIZE;
    unsigned refs = 0;
    struct wr w;
    int rv;
    memset(out, 0, sizeof *out);
    if (chunk->is_last > 1) {
        mr_errmsg_printf(errmsg, "is_last must be 0 or 1, not %u", chunk->is_last);
        return MR_EINVAL;
    }
    if ((rv = check_rcbuf(data, errmsg)) != 0) return rv;
    layout_rcbuf(data, &head, &payload, &refs);
    if ((rv = check_size(payload, max_frame, errmsg)) != 0) return rv;
    rv = mr_net_wbuf_alloc(out, head, 2 * refs + 1, refs);
    if (rv != 0) {
        mr_errmsg_printf(errmsg, "out of memory encoding a snapshot chunk");
        return rv;
    }
    wr_init(&w, out);
    mr_net_frame_header_put(w.p, (uint32_t)payload, MR_NET_FRAME_SNAPSHOT_CHUNK);
    w.p += MR_NET_FRAME_HEADER_SIZE;
    wr_u64(&w, chunk->index);
    wr_u64(&w, chunk->term);
    wr_u64(&w, chunk->offset);
    wr_u8(&w, chunk->is_last);
    if (data != NULL) wr_rcbuf(&w, data);
    wr_flush(&w);
    out->total = MR_NET_FRAME_HEADER_SIZE + payload;
    return 0;
}

int mr_net_snapshot_chunk_decode(const uint8_t *buf, size_t len,
                                 struct mr_net_snapshot_chunk *out, char *errmsg)
{
    memset(out, 0, sizeof *out);
    if (len < MR_NET_SNAPSHOT_HEADER_SIZE) {
        mr_errmsg_printf(errmsg, "snapshot chunk of %zu bytes is shorter than its header", len);
        return MR_EMALFORMED;
    }
    out->index = mr_get_u64(buf);
    out->term = mr_get_u64(buf + 8);
    out->offset = mr_get_u64(buf + 16);
    out->is_last = buf[24];
    if (out->is_last > 1) {
        mr_errmsg_printf(errmsg, "snapshot chunk has bad flags %u", out->is_last);
        memset(out, 0, sizeof *out);
        return MR_EMALFORMED;
    }
    out->data = buf + MR_NET_SNAPSHOT_HEADER_SIZE;
    out->len = len - MR_NET_SNAPSHOT_HEADER_SIZE;
    return 0;
}

/* ---- handshake ---------------------------------------------------------------- */
static int simple_frame(struct mr_net_wbuf *out, size_t payload, uint8_t type,
                        struct wr *w)
{
    int rv = mr_net_wbuf_alloc(out, MR_NET_FRAME_HEADER_SIZE + payload, 1, 0);
    if (rv != 0) return rv;
    wr_init(w, out);
    mr_net_frame_header_put(w->p, (uint32_t)payload, type);
    w->p += MR_NET_FRAME_HEADER_SIZE;
    out->total = MR_NET_FRAME_HEADER_SIZE + payload;
    return 0;
}

int mr_net_hello_encode(const struct mr_net_hello *h, struct mr_net_wbuf *out)
{
    size_t cn = strlen(h->cluster), nn = strlen(h->name);
    struct wr w;
    int rv;
    MR_ASSERT(cn <= MR_NET_NAME_MAX && nn <= MR_NET_NAME_MAX);
    rv = simple_frame(out, 2 + 1 + 1 + 8 + 8 + 1 + cn + 1 + nn + MR_NET_NONCE_SIZE,
                      MR_NET_FRAME_HANDSHAKE, &w);
    if (rv != 0) return rv;
    wr_u16(&w, h->version);
    wr_u8(&w, h->has_secret ? 1 : 0);
    wr_u8(&w, 0);
    wr_u64(&w, h->from);
    wr_u64(&w, h->to);
    wr_u8(&w, (uint8_t)cn);
    wr_bytes(&w, h->cluster, cn);
    wr_u8(&w, (uint8_t)nn);
    wr_bytes(&w, h->name, nn);
    wr_bytes(&w, h->nonce, MR_NET_NONCE_SIZE);
    wr_flush(&w);
    return 0;
}

/* u8 n + printable name of at most MR_NET_NAME_MAX bytes. */
static int decode_name(struct mr_net_cur *c, char *dst, int may_be_empty,
                       const char *what, char *errmsg)
{
    uint8_t n;
    const uint8_t *p;
    size_t i;
    if (mr_net_cur_u8(c, &n) != 0 || mr_net_cur_bytes(c, n, &p) != 0) {
        mr_errmsg_printf(errmsg, "truncated %s", what);
        return MR_EMALFORMED;
    }
    if (n > MR_NET_NAME_MAX || (n == 0 && !may_be_empty)) {
        mr_errmsg_printf(errmsg, "%s of %u bytes (want %s..%d)", what, n,
                         may_be_empty ? "0" : "1", MR_NET_NAME_MAX);
        return MR_EMALFORMED;
    }
    for (i = 0; i < n; i++) {
        if (p[i] < 0x20 || p[i] >= 0x7f) {
            mr_errmsg_printf(errmsg, "%s is not printable ASCII", what);
            return MR_EMALFORMED;
        }
    }
    memcpy(dst, p, n);
    dst[n] = '\0';
    return 0;
}

static int decode_reason(struct mr_net_cur *c, char *dst, char *errmsg)
{
    uint16_t n;
    const uint8_t *p;
    if (mr_net_cur_u16(c, &n) != 0 || mr_net_cur_bytes(c, n, &p) != 0) {
        mr_errmsg_printf(errmsg, "truncated refusal reason");
        return MR_EMALFORMED;
    }
    mr_net_sanitize(dst, MR_NET_REASON_MAX + 1, p, n);
    return 0;
}

static int no_trailing(const struct mr_net_cur *c, const char *what, char *errmsg)
{
    if (c->left != 0) {
        mr_errmsg_printf(errmsg, "%zu trailing bytes after the %s", c->left, what);
        return MR_EMALFORMED;
    }
    return 0;
}

int mr_net_hello_decode(const uint8_t *buf, size_t len, struct mr_net_hello *out,
                        char *errmsg)
{
    struct mr_net_cur c = {buf, len};
    uint8_t flags, pad;
    const uint8_t *p;
    int rv;
    memset(out, 0, sizeof *out);
    if (mr_net_cur_u16(&c, &out->version) != 0 || mr_net_cur_u8(&c, &flags) != 0 ||
        mr_net_cur_u8(&c, &pad) != 0 || mr_net_cur_u64(&c, &out->from) != 0 ||
        mr_net_cur_u64(&c, &out->to) != 0) {
        mr_errmsg_printf(errmsg, "truncated handshake");
        return MR_EMALFORMED;
    }
    if (flags > 1 || pad != 0) {
        mr_errmsg_printf(errmsg, "bad handshake flags %u/%u", flags, pad);
        return MR_EMALFORMED;
    }
    out->has_secret = flags;
    if ((rv = decode_name(&c, out->cluster, 0, "cluster id", errmsg)) != 0) return rv;
    if ((rv = decode_name(&c, out->name, 1, "node name", errmsg)) != 0) return rv;
    if (mr_net_cur_bytes(&c, MR_NET_NONCE_SIZE, &p) != 0) {
        mr_errmsg_printf(errmsg, "truncated handshake nonce");
        return MR_EMALFORMED;
    }
    memcpy(out->nonce, p, MR_NET_NONCE_SIZE);
    return no_trailing(&c, "handshake", errmsg);
}

int mr_net_hello_reply_encode(const struct mr_net_hello_reply *r,
                              struct mr_net_wbuf *out)
{
    size_t nn = strlen(r->name);
    size_t rn = r->is_refused ? strnlen(r->reason, MR_NET_REASON_MAX) : 0;
    struct wr w;
    int rv;
    MR_ASSERT(nn <= MR_NET_NAME_MAX);
    rv = simple_frame(out,
                      1 + 1 + 2 + 8 + 1 + nn + MR_NET_NONCE_SIZE +
                          (r->has_proof ? MR_NET_MAC_SIZE : 0) + (r->is_refused ? 2 + rn : 0),
                      MR_NET_FRAME_HANDSHAKE_REPLY, &w);
    if (rv != 0) return rv;
    wr_u8(&w, r->is_refused ? 1 : 0);
    wr_u8(&w, r->has_proof ? 1 : 0);
    wr_u16(&w, r->version);
    wr_u64(&w, r->from);
    wr_u8(&w, (uint8_t)nn);
    wr_bytes(&w, r->name, nn);
    wr_bytes(&w, r->nonce, MR_NET_NONCE_SIZE);
    if (r->has_proof) wr_bytes(&w, r->proof, MR_NET_MAC_SIZE);
    if (r->is_refused) {
        wr_u16(&w, (uint16_t)rn);
        wr_bytes(&w, r->reason, rn);
    }
    wr_flush(&w);
    return 0;
}

int mr_net_hello_reply_decode(const uint8_t *buf, size_t len,
                              struct mr_net_hello_reply *out, char *errmsg)
{
    struct mr_net_cur c = {buf, len};
    const uint8_t *p;
    int rv;
    memset(out, 0, sizeof *out);
    if (mr_net_cur_u8(&c, &out->is_refused) != 0 || mr_net_cur_u8(&c, &out->has_proof) != 0 ||
        mr_net_cur_u16(&c, &out->version) != 0 || mr_net_cur_u64(&c, &out->from) != 0) {
        mr_errmsg_printf(errmsg, "truncated handshake reply");
        return MR_EMALFORMED;
    }
    if (out->is_refused > 1 || out->has_proof > 1) {
        mr_errmsg_printf(errmsg, "bad handshake reply flags %u/%u", out->is_refused,
                         out->has_proof);
        return MR_EMALFORMED;
    }
    if ((rv = decode_name(&c, out->name, 1, "node name", errmsg)) != 0) return rv;
    if (mr_net_cur_bytes(&c, MR_NET_NONCE_SIZE, &p) != 0) {
        mr_errmsg_printf(errmsg, "truncated handshake reply nonce");
        return MR_EMALFORMED;
    }
    memcpy(out->nonce, p, MR_NET_NONCE_SIZE);
    if (out->has_proof) {
        if (mr_net_cur_bytes(&c, MR_NET_MAC_SIZE, &p) != 0) {
            mr_errmsg_printf(errmsg, "truncated handshake reply proof");
            return MR_EMALFORMED;
        }
        memcpy(out->proof, p, MR_NET_MAC_SIZE);
    }
    if (out->is_refused && (rv = decode_reason(&c, out->reason, errmsg)) != 0) return rv;
    return no_trailing(&c, "handshake reply", errmsg);
}

int mr_net_proof_encode(const struct mr_net_proof *pr, struct mr_net_wbuf *out)
{
    size_t rn = pr->is_refused ? strnlen(pr->reason, MR_NET_REASON_MAX) : 0;
    struct wr w;
    int rv = simple_frame(out,
                          2 + (pr->has_proof ? MR_NET_MAC_SIZE : 0) +
                              (pr->is_refused ? 2 + rn : 0),
                          MR_NET_FRAME_HANDSHAKE_PROOF, &w);
    if (rv != 0) return rv;
    wr_u8(&w, pr->is_refused ? 1 : 0);
    wr_u8(&w, pr->has_proof ? 1 : 0);
    if (pr->has_proof) wr_bytes(&w, pr->proof, MR_NET_MAC_SIZE);
    if (pr->is_refused) {
        wr_u16(&w, (uint16_t)rn);
        wr_bytes(&w, pr->reason, rn);
    }
    wr_flush(&w);
    return 0;
}

int mr_net_proof_decode(const uint8_t *buf, size_t len, struct mr_net_proof *out,
                        char *errmsg)
{
    struct mr_net_cur c = {buf, len};
    const uint8_t *p;
    int rv;
    memset(out, 0, sizeof *out);
    if (mr_net_cur_u8(&c, &out->is_refused) != 0 || mr_net_cur_u8(&c, &out->has_proof) != 0) {
        mr_errmsg_printf(errmsg, "truncated handshake proof");
        return MR_EMALFORMED;
    }
    if (out->is_refused > 1 || out->has_proof > 1) {
        mr_errmsg_printf(errmsg, "bad handshake proof flags %u/%u", out->is_refused,
                         out->has_proof);
        return MR_EMALFORMED;
    }
    if (out->has_proof) {
        if (mr_net_cur_bytes(&c, MR_NET_MAC_SIZE, &p) != 0) {
            mr_errmsg_printf(errmsg, "truncated handshake proof");
            return MR_EMALFORMED;
        }
        memcpy(out->proof, p, MR_NET_MAC_SIZE);
    }
    if (out->is_refused && (rv = decode_reason(&c, out->reason, errmsg)) != 0) return rv;
    return no_trailing(&c, "handshake proof", errmsg);
}

/* ---- reader ------------------------------------------------------------------ */
#define READ_CHUNK (64 * 1024) /* bytes: the usual read buffer */

void mr_net_reader_init(struct mr_net_reader *r, size_t max_frame)
{
    memset(r, 0, sizeof *r);
    r->max_frame = max_frame;
}

void mr_net_reader_close(struct mr_net_reader *r)
{
    mr_free(r->buf);
    memset(r, 0, sizeof *r);
}

int mr_net_reader_reserve(struct mr_net_reader *r, uint8_t **p, size_t *n)
{
    size_t have = r->end - r->start;
    /* Bytes wanted from `start` on. A connection still in its handshake
     * (max_frame 4 KiB) gets no more than that: unauthenticated clients are
     * cheap to hold. */
    size_t need = r->max_frame + MR_NET_FRAME_HEADER_SIZE < READ_CHUNK
                      ? r->max_frame + MR_NET_FRAME_HEADER_SIZE
                      : READ_CHUNK;
    if (have >= 4) {
        /* A length above max_frame never gets here: next() refused it. */
        size_t plen = mr_get_u32(r->buf + r->start);
        if (plen <= r->max_frame && MR_NET_FRAME_HEADER_SIZE + plen > need) {
            need = MR_NET_FRAME_HEADER_SIZE + plen;
        }
    }
    if (need <= have) need = have + need; /* caller did not drain */
    if (have == 0 && r->cap > 4 * READ_CHUNK) {
        /* Do not keep a huge buffer after a big frame. */
        mr_free(r->buf);
        r->buf = NULL;
        r->cap = r->start = r->end = 0;
    }
    if (r->start > 0 && r->cap - r->start < need) {
        memmove(r->buf, r->buf + r->start, have);
        r->start = 0;
        r->end = have;
    }
    if (r->cap - r->start < need) {
        uint8_t *b;
        MR_ASSERT(r->start == 0);
        b = mr_realloc(r->buf, need);
        if (b == NULL) return MR_ENOMEM;
        r->buf = b;
        r->cap = need;
    }
    MR_ASSERT(r->end < r->cap);
    *p = r->buf + r->end;
    *n = r->cap - r->end;
    return 0;
}

void mr_net_reader_commit(struct mr_net_reader *r, size_t n)
{
    MR_ASSERT(n <= r->cap - r->end);
    r->end += n;
}

int mr_net_reader_next(struct mr_net_reader *r, struct mr_net_frame *f, char *errmsg)
{
    size_t consumed;
    int rv;
    if (r->end == r->start) return 0;
    rv = mr_net_frame_decode(r->buf + r->start, r->end - r->start, r->max_frame, f,
                             &consumed, errmsg);
    if (rv != 0) return rv;
    if (consumed == 0) return 0;
    r->start += consumed;
    if (r->start == r->end) r->start = r->end = 0;
    return 1;
}
