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

/* MR_NODE_SECTION_SCRIPT: the running script, so that a node installing the
 * snapshot restores the payload with the script that wrote it and runs it.
 *   u64 index it took effect at | u32 label length | u32 0 | 64 hex SHA-256 of
 *   the source | label | source */
#define SCRIPT_FIXED 80

static size_t put_script(struct mr_node *n, unsigned char *out)
{
    struct mr_sm_script_info si;
    size_t ll, len;
    mr_sm_script_info(n->sm, &si);
    ll = strlen(si.label);
    len = SCRIPT_FIXED + ll + si.size;
    if (out != NULL) {
        unsigned char *b = out + SECTION_HDR;
        put_section(out, MR_NODE_SECTION_SCRIPT, NULL, 0);
        mr_put_u64(out + 8, len);
        mr_put_u64(b, si.index);
        mr_put_u32(b + 8, (uint32_t)ll);
        mr_put_u32(b + 12, 0);
        memcpy(b + 16, si.hash, 64);
        memcpy(b + SCRIPT_FIXED, si.label, ll);
        memcpy(b + SCRIPT_FIXED + ll, si.source, si.size);
    }
    return SECTION_HDR + len;
}

static int parse_script(const unsigned char *b, size_t len, struct mr_node_sections *out,
                        char *errmsg)
{
    char hex[65];
    uint32_t ll;
    if (len < SCRIPT_FIXED || (ll = mr_get_u32(b + 8)) > len - SCRIPT_FIXED ||
        ll > MR_NODE_MAX_SCRIPT_LABEL || mr_get_u32(b + 12) != 0) {
        mr_errmsg_printf(errmsg, "snapshot: malformed script section");
        return MR_ECORRUPT;
    }
    out->has_script = 1;
    out->script_index = mr_get_u64(b);
    out->script_label = (const char *)b + SCRIPT_FIXED;
    out->script_label_len = ll;
    out->script_src = (const char *)b + SCRIPT_FIXED + ll;
    out->script_len = len - SCRIPT_FIXED - ll;
    mr_sm_sha256_hex(out->script_src, out->script_len, hex);
    if (memcmp(hex, b + 16, 64) != 0) {
        mr_errmsg_printf(errmsg, "snapshot: the script section's source does not match its hash");
        return MR_ECORRUPT;
    }
    return 0;
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
    total += put_script(n, out ? out + total : NULL);
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
        case MR_NODE_SECTION_SCRIPT: {
            int rv = parse_script(p + off + SECTION_HDR, (size_t)blen, out, errmsg);
            if (rv != 0) return rv;
            break;
        }
        default:
            mr_errmsg_printf(errmsg,
                             "snapshot: unknown section %u (written by a newer moonraft?)", tag);
            return MR_ECORRUPT;
        }
        off += SECTION_HDR + (size_t)blen;
    }
    return 0;
}

int mr_node_sections_commit(struct mr_node *n, const struct mr_node_sections *s, char *errmsg)
{
    /* Always: a snapshot without the section had no deadline pending. The
     * script itself was installed with the state (mr_sm_restore_script). */
    return mr_node_timers_commit(n, s->timers, s->timers_len, errmsg);
}

void mr_node_sections_committed(struct mr_node *n)
{
    struct mr_sm_script_info si;
    mr_sm_script_info(n->sm, &si);
    n->has_hash = 0;
    if (strcmp(si.hash, si.config_hash) != 0)
        LOGW("the cluster runs another state machine script than this node's state_machine "
             "file (%s): running the cluster's, %s (%s, %zu bytes, since index %llu)",
             n->o->state_machine ? n->o->state_machine : "the built-in kv.lua", si.hash, si.label,
             si.size, (unsigned long long)si.index);
}
