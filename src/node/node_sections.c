/* node_sections: node-level replicated state carried in snapshots.
 *
 * A node snapshot (node_snap.c, version 3) holds, besides the idempotency
 * table and the script's own snapshot() payload, a list of sections for
 * other state that every replica must agree on and that must survive a
 * snapshot install exactly as if the entries had been applied one by one:
 *
 *   u32 tag | u32 reserved (0) | u64 len | len bytes        (repeated)
 *
 * Tags are MR_NODE_SECTION_*. Parsing checks every length and refuses an
 * unknown tag (a snapshot written by a newer build: installing it without
 * understanding its state would diverge silently). Parsing happens before
 * the state machine is restored (a section may decide how to restore it),
 * committing only after the restore succeeded, so a failure leaves the old
 * state whole. Each feature adds its tag here: encode (size first, then
 * bytes), parse (validate, point into the buffer) and commit. */
#include "node/node_int.h"

#include <string.h>

#define SECTION_HDR 16

/* Writes one section header + body at out (when not NULL); returns its size. */
static size_t put_section(unsigned char *out, uint32_t tag, const void *body, size_t len)
{
    if (out != NULL) {
        mr_put_u32(out, tag);
        mr_put_u32(out + 4, 0);
        mr_put_u64(out + 8, len);
        if (len && body != NULL) memcpy(out + SECTION_HDR, body, len); /* NULL: caller wrote it */
    }
    return SECTION_HDR + len;
}

size_t mr_node_sections_encode(struct mr_node *n, unsigned char *out)
{
    size_t total = 0;
    /* Features add theirs here, e.g.
     *   total += put_section(out ? out + total : NULL, MR_NODE_SECTION_X, body, len); */
    if (mr_sm_deadline_count(n->sm) > 0) {
        /* written in place: encode the body after its header */
        size_t len = mr_node_timers_encode(n, NULL);
        if (out != NULL) mr_node_timers_encode(n, out + total + SECTION_HDR);
        total += put_section(out ? out + total : NULL, MR_NODE_SECTION_TIMERS, NULL, len);
    }
    return total;
}

int mr_node_sections_parse(const unsigned char *p, size_t len, struct mr_node_sections *out,
                           char *errmsg)
{
    size_t off = 0;
    memset(out, 0, sizeof *out);
    while (off < len) {
        uint32_t tag;
        uint64_t blen;
        if (len - off < SECTION_HDR) {
            mr_errmsg_printf(errmsg, "snapshot: truncated section header at byte %zu", off);
            return MR_ECORRUPT;
        }
        tag = mr_get_u32(p + off);
        blen = mr_get_u64(p + off + 8);
        if (mr_get_u32(p + off + 4) != 0 || blen > len - off - SECTION_HDR) {
            mr_errmsg_printf(errmsg, "snapshot: malformed section %u at byte %zu", tag, off);
            return MR_ECORRUPT;
        }
        switch (tag) {
        case MR_NODE_SECTION_TIMERS:
            if (out->timers != NULL) {
                mr_errmsg_printf(errmsg, "snapshot: duplicate timers section");
                return MR_ECORRUPT;
            }
            if (mr_node_timers_parse(p + off + SECTION_HDR, (size_t)blen, errmsg) != 0)
                return MR_ECORRUPT;
            out->timers = p + off + SECTION_HDR;
            out->timers_len = (size_t)blen;
            break;
        default:
            mr_errmsg_printf(errmsg,
                             "snapshot: unknown section %u (written by a newer moonraft?)", tag);
            return MR_ECORRUPT;
        }
        off += SECTION_HDR + (size_t)blen;
    }
    return 0;
}

void mr_node_sections_commit(struct mr_node *n, const struct mr_node_sections *s)
{
    /* Always: a snapshot without the section had no deadline pending. */
    mr_node_timers_commit(n, s->timers, s->timers_len);
}
