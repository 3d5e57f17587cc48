/* storage: WAL segment and record encoding, and the segment scanner that
 * tells a torn tail from corruption (see the format notes in storage.h). */
#include "storage/storage_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

void mr_store__seg_name(char *buf, mr_index first)
{
    snprintf(buf, SEG_NAME_LEN + 1, "%016" PRIx64 ".seg", first);
}

int mr_store__seg_name_parse(const char *name, mr_index *first)
{
    mr_index v = 0;
    int i;
    if (strlen(name) != SEG_NAME_LEN || strcmp(name + 16, ".seg") != 0) return 0;
    for (i = 0; i < 16; i++) {
        char c = name[i];
        int d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else return 0;
        v = v << 4 | (mr_index)d;
    }
    *first = v;
    return v > 0;
}

void mr_store__seg_header_encode(unsigned char *p, mr_index first)
{
    memset(p, 0, MR_STORE_SEGMENT_HEADER);
    memcpy(p, SEG_MAGIC, 8);
    mr_put_u32(p + 8, WAL_VERSION);
    mr_put_u64(p + 16, first);
    mr_put_u32(p + 28, mr_crc32c(0, p, 28));
}

void mr_store__rec_encode(unsigned char *p, mr_term term, mr_index index, uint8_t type,
                          const void *data, uint32_t len, uint32_t sync_start)
{
    uint32_t crc;
    size_t padded = (size_t)pad8(len);
    mr_put_u32(p + 4, len);
    mr_put_u64(p + 8, term);
    mr_put_u64(p + 16, index);
    p[24] = type;
    p[25] = p[26] = p[27] = 0;
    mr_put_u32(p + 28, sync_start);
    if (len > 0 && p + 32 != (const unsigned char *)data) memcpy(p + 32, data, len);
    if (padded > len) memset(p + 32 + len, 0, padded - len);
    crc = mr_crc32c(0, p + 4, 28);
    crc = mr_crc32c(crc, p + 32, padded);
    mr_put_u32(p, crc);
}

/* Is there a complete, valid record at offset o? On failure *why says what
 * is wrong with it. */
static int rec_check(const unsigned char *buf, uint64_t size, uint64_t o,
                     struct mr_store_rec *r, const char **why)
{
    const unsigned char *p = buf + o;
    uint32_t len, crc;
    uint64_t room;
    if (size - o < MR_STORE_RECORD_HEADER) {
        *why = "truncated record header";
        return 0;
    }
    room = size - o - MR_STORE_RECORD_HEADER;
    len = mr_get_u32(p + 4);
    if (pad8(len) > room) {
        *why = "record length runs past the end of the file";
        return 0;
    }
    crc = mr_crc32c(0, p + 4, 28);
    crc = mr_crc32c(crc, p + 32, (size_t)pad8(len));
    if (crc != mr_get_u32(p)) {
        *why = "checksum mismatch";
        return 0;
    }
    r->off = o;
    r->len = len;
    r->term = mr_get_u64(p + 8);
    r->index = mr_get_u64(p + 16);
    r->type = p[24];
    r->data = p + 32;
    return 1;
}

static int all_zero(const unsigned char *p, uint64_t n)
{
    uint64_t i = 0;
    /* Word-at-a-time: preallocated tails can be tens of MiB. */
    for (; i < n && ((uintptr_t)(p + i) & 7) != 0; i++)
        if (p[i] != 0) return 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        if (w != 0) return 0;
    }
    for (; i < n; i++)
        if (p[i] != 0) return 0;
    return 1;
}

/* Does some valid record after offset x belong to a write group that began
 * after x? If so the damage at x lies under data written (and synced) later,
 * so it is not a torn tail. */
static int later_group_exists(const unsigned char *buf, uint64_t size, uint64_t x)
{
    uint64_t p;
    struct mr_store_rec r;
    const char *why;
    for (p = pad8(x + 1); p + MR_STORE_RECORD_HEADER <= size; p += 8) {
        const unsigned char *h = buf + p;
        uint32_t ss = mr_get_u32(h + 28);
        if (ss <= x || ss > p || (ss & 7) != 0) continue;
        if (h[25] != 0 || h[26] != 0 || h[27] != 0) continue;
        if (rec_check(buf, size, p, &r, &why)) return 1;
    }
    return 0;
}

int mr_store__seg_scan(const unsigned char *buf, uint64_t size, const char *relname,
                       mr_index name_first, int is_last, mr_store_rec_cb cb, void *arg,
                       struct mr_store_seg_scan *out, char *errmsg)
{
    uint64_t o = MR_STORE_SEGMENT_HEADER;
    mr_index expect;
    mr_term prev_term = 0;
    const char *why = NULL;
    int rv;

    memset(out, 0, sizeof *out);
    out->size = size;
    out->first = name_first;
    out->last = name_first - 1;
    if (size < MR_STORE_SEGMENT_HEADER || memcmp(buf, SEG_MAGIC, 8) != 0 ||
        mr_get_u32(buf + 28) != mr_crc32c(0, buf, 28) ||
        mr_get_u32(buf + 8) != WAL_VERSION) {
        /* A crash while creating the newest segment leaves a torn header and
         * nothing after it; anything else is damage. */
        if (is_last && (size == 0 || !later_group_exists(buf, size, 0))) {
            out->is_header_torn = 1;
            out->is_torn = size > 0 && !all_zero(buf, size);
            out->end = 0;
            return 0;
        }
        mr_errmsg_printf(errmsg, "%s offset 0: bad segment header", relname);
        return MR_ECORRUPT;
    }
    if (mr_get_u64(buf + 16) != name_first) {
        mr_errmsg_printf(errmsg, "%s offset 16: header first index %" PRIu64
                         " does not match the file name", relname, mr_get_u64(buf + 16));
        return MR_ECORRUPT;
    }
    expect = name_first;
    while (o < size) {
        struct mr_store_rec r;
        if (rec_check(buf, size, o, &r, &why)) {
            uint32_t ss = mr_get_u32(buf + o + 28);
            if (r.index != expect) {
                mr_errmsg_printf(errmsg, "%s offset %" PRIu64 ": record index %" PRIu64
                                 ", expected %" PRIu64, relname, o, r.index, expect);
                return MR_ECORRUPT;
            }
            if (r.term < prev_term) {
                mr_errmsg_printf(errmsg, "%s offset %" PRIu64 ": term %" PRIu64
                                 " goes back from %" PRIu64, relname, o, r.term, prev_term);
                return MR_ECORRUPT;
            }
            if (ss > o || ss < MR_STORE_SEGMENT_HEADER) {
                mr_errmsg_printf(errmsg, "%s offset %" PRIu64 ": bad write group offset",
                                 relname, o);
                return MR_ECORRUPT;
            }
            if (cb != NULL) {
                rv = cb(arg, &r);
                if (rv != 0) return rv;
            }
            out->n_records++;
            out->last = r.index;
            out->last_term = r.term;
            prev_term = r.term;
            expect++;
            o += MR_STORE_RECORD_HEADER + pad8(r.len);
            continue;
        }
        if (all_zero(buf + o, size - o)) break; /* unused preallocated space */
        if (!is_last || later_group_exists(buf, size, o)) {
            mr_errmsg_printf(errmsg, "%s offset %" PRIu64 ": %s", relname, o, why);
            return MR_ECORRUPT;
        }
        out->is_torn = 1;
        break;
    }
    out->end = o > size ? size : o;
    return 0;
}
