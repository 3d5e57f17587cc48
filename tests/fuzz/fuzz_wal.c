/* libFuzzer target for the write-ahead log: the segment scanner (record
 * decoding, torn-tail vs corruption), whole-directory recovery, the data tool,
 * and the payload decoders a recovered record feeds (node entries, membership
 * blobs).
 *
 * Input: byte 0 holds flags, the rest is data.
 *   bit 0  scan with is_last (torn tails allowed)
 *   bit 1  name the segment 1 instead of its header's first index
 *   bit 2  fix checksums first (header and every record whose length fits),
 *          so mutations reach the logic behind the CRC checks
 *   bit 3  also recover a data directory made of the data: pieces separated
 *          by "MRFZSEP!" become wal/<first>.seg files (first from each header)
 *   bit 4  with bit 3: the first piece is the raw meta file (else a valid
 *          meta is written)
 *   bit 5  with bit 3: recover read-write (cuts torn tails), close, then
 *          recover again: the repaired directory must open with the same log
 *   bit 6  with bit 3: run `data dump` on the directory
 * Checks: no crash or sanitizer report; every record the scanner reports lies
 * inside the image and re-encodes to the same fields and payload; indexes are consecutive;
 * a successful scan that saw no damage leaves only zeros after `end`; decoded
 * membership blobs re-encode to the same bytes. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "node/node_int.h"
#include "storage/storage_int.h"

#define SEP "MRFZSEP!"
#define MAX_PIECES 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct scan_ctx {
    const unsigned char *buf;
    uint64_t size;
    mr_index next;
    int has_next;
};

static void check_config_blob(const unsigned char *p, size_t len)
{
    struct mr_raft_config c;
    struct mr_rcbuf *b;
    char errmsg[MR_ERRMSG_SIZE];
    mr_raft_config_init(&c);
    if (mr_raft_config_decode(p, len, &c, errmsg) == 0) {
        b = mr_raft_config_encode(&c);
        FUZZ_CHECK(b != NULL);
        FUZZ_CHECK(b->len == len && memcmp(b->data, p, len) == 0);
        mr_rcbuf_unref(b);
    }
    mr_raft_config_close(&c);
}

/* What the node does with a recovered entry's payload. */
static void check_payload(uint8_t type, const unsigned char *p, size_t len)
{
    struct mr_node_entry e;
    if (type == MR_RAFT_ENTRY_CONFIG) {
        check_config_blob(p, len);
    } else if (mr_node_entry_decode(p, len, &e) == 0) {
        FUZZ_CHECK(e.key + e.key_len == e.cmd);
        FUZZ_CHECK(e.cmd + e.cmd_len == (const char *)p + len);
        fuzz_touch(e.cmd, e.cmd_len);
    }
}

static int on_record(void *arg, const struct mr_store_rec *r)
{
    struct scan_ctx *c = arg;
    unsigned char *copy;
    size_t n = MR_STORE_RECORD_HEADER + (size_t)pad8(r->len);
    FUZZ_CHECK(r->off >= MR_STORE_SEGMENT_HEADER && r->off % 8 == 0);
    FUZZ_CHECK(r->off + n <= c->size);
    FUZZ_CHECK(r->data == c->buf + r->off + MR_STORE_RECORD_HEADER);
    FUZZ_CHECK(!c->has_next || r->index == c->next);
    c->next = r->index + 1;
    c->has_next = 1;
    /* The record re-encodes to the bytes it came from. */
    copy = malloc(n);
    FUZZ_CHECK(copy != NULL);
    mr_store__rec_encode(copy, r->term, r->index, r->type, r->data, r->len,
                         mr_get_u32(c->buf + r->off + 28));
    /* Padding and the 3 reserved bytes after the type are covered by the CRC
     * but the reader does not require them to be zero (the writer always
     * zeroes them), so compare len, term, index, type, sync_start and the
     * payload, not the CRC. */
    FUZZ_CHECK(memcmp(copy + 4, c->buf + r->off + 4, 21) == 0);
    FUZZ_CHECK(memcmp(copy + 28, c->buf + r->off + 28, 4 + r->len) == 0);
    free(copy);
    check_payload(r->type, r->data, r->len);
    return 0;
}

/* Recomputes the segment header CRC and every record CRC whose length fits. */
static void fix_checksums(unsigned char *b, size_t size)
{
    uint64_t o = MR_STORE_SEGMENT_HEADER;
    if (size < MR_STORE_SEGMENT_HEADER) return;
    mr_put_u32(b + 28, mr_crc32c(0, b, 28));
    while (size - o >= MR_STORE_RECORD_HEADER) {
        uint32_t len = mr_get_u32(b + o + 4), crc;
        if (pad8(len) > size - o - MR_STORE_RECORD_HEADER) break;
        crc = mr_crc32c(0, b + o + 4, 28);
        crc = mr_crc32c(crc, b + o + 32, (size_t)pad8(len));
        mr_put_u32(b + o, crc);
        o += MR_STORE_RECORD_HEADER + pad8(len);
    }
}

static int all_zero(const unsigned char *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (p[i] != 0) return 0;
    return 1;
}

static void scan_image(const unsigned char *b, size_t size, unsigned flags)
{
    struct mr_store_seg_scan out;
    struct scan_ctx c = {b, size, 0, 0};
    char errmsg[MR_ERRMSG_SIZE];
    mr_index first = 1;
    int rv;
    if (!(flags & 2) && size >= 24 && mr_get_u64(b + 16) != 0) first = mr_get_u64(b + 16);
    rv = mr_store__seg_scan(b, size, "wal/fuzz.seg", first, flags & 1, on_record, &c, &out,
                            errmsg);
    FUZZ_CHECK(rv == 0 || rv == MR_ECORRUPT);
    if (rv != 0) {
        FUZZ_CHECK(errmsg[0] != '\0');
        return;
    }
    FUZZ_CHECK(out.end <= size && out.size == size);
    FUZZ_CHECK(out.last + 1 == out.first + out.n_records);
    if (out.n_records > 0) FUZZ_CHECK(c.next == out.last + 1);
    if (!out.is_torn && !out.is_header_torn) FUZZ_CHECK(all_zero(b + out.end, size - out.end));
    if (!(flags & 1)) FUZZ_CHECK(!out.is_torn && !out.is_header_torn);
}

/* ---- on-disk recovery ------------------------------------------------------------ */

static void write_file(const char *dir, const char *name, const void *p, size_t n)
{
    char path[4096];
    int fd;
    FUZZ_PATH(path, "%s/%s", dir, name);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    FUZZ_CHECK(fd >= 0);
    FUZZ_CHECK(n == 0 || write(fd, p, n) == (ssize_t)n);
    close(fd);
}

static void recover_dir(const unsigned char *b, size_t size, unsigned flags)
{
    const char *root = fuzz_tmpdir();
    char dir[4096], wal[4096];
    const unsigned char *piece[MAX_PIECES];
    size_t plen[MAX_PIECES], np = 0, i;
    /* every slot is read by later pieces, the meta piece's (flags & 16) included */
    mr_index firsts[MAX_PIECES] = {0}, lowest = 0;
    const unsigned char *p = b, *end = b + size;
    struct mr_store_options o;
    struct mr_store_recovered rec;
    struct mr_store *st;
    char errmsg[MR_ERRMSG_SIZE];
    int rv;

    while (np < MAX_PIECES) {
        const unsigned char *s = memmem(p, (size_t)(end - p), SEP, 8);
        piece[np] = p;
        plen[np] = s ? (size_t)(s - p) : (size_t)(end - p);
        np++;
        if (s == NULL) break;
        p = s + 8;
    }
    FUZZ_PATH(dir, "%s/d", root);
    FUZZ_PATH(wal, "%s/wal", dir);
    fuzz_rm_rf(dir);
    FUZZ_CHECK(mkdir(dir, 0755) == 0 && mkdir(wal, 0755) == 0);
    i = 0;
    if (flags & 16) {
        write_file(dir, META_NAME, piece[0], plen[0]);
        i = 1;
    }
    for (; i < np; i++) {
        char name[SEG_NAME_LEN + 1];
        mr_index first = i;
        size_t k;
        if (plen[i] >= 24 && mr_get_u64(piece[i] + 16) != 0)
            first = mr_get_u64(piece[i] + 16);
        for (k = 0; k < i; k++)
            if (firsts[k] == first) first = 0;
        firsts[i] = first;
        if (first == 0) continue;
        if (lowest == 0 || first < lowest) lowest = first;
        mr_store__seg_name(name, first);
        write_file(wal, name, piece[i], plen[i]);
    }
    if (!(flags & 16)) {
        struct mr_store_meta m = {2, 0, 1, 0, lowest ? lowest : 1};
        unsigned char mb[META_SIZE];
        mr_store__meta_encode(&m, mb);
        write_file(dir, META_NAME, mb, sizeof mb);
    }

    memset(&o, 0, sizeof o);
    o.data_dir = dir;
    o.segment_size = MR_STORE_SEGMENT_SIZE_MIN;
    o.is_read_only = !(flags & 32);
    rv = mr_store_open(&st, &o, &rec, errmsg);
    FUZZ_CHECK(rv == 0 || rv == MR_ECORRUPT || rv == MR_ECONFIG);
    if (rv == 0) {
        struct mr_store_recovered again;
        size_t k;
        FUZZ_CHECK(rec.last_index + 1 == rec.first_index + rec.n_entries);
        for (k = 0; k < rec.n_entries; k++) {
            FUZZ_CHECK(rec.entries[k].index == rec.first_index + k);
            if (rec.entries[k].data != NULL)
                check_payload(rec.entries[k].type, rec.entries[k].data->data,
                              rec.entries[k].data->len);
        }
        mr_store_close(st);
        if (flags & 32) {
            /* Whatever recovery repaired must now open cleanly, read-only,
             * with the same log. */
            o.is_read_only = 1;
            rv = mr_store_open(&st, &o, &again, errmsg);
            if (rv != 0) fprintf(stderr, "reopen after repair: %s\n", errmsg);
            FUZZ_CHECK(rv == 0);
            FUZZ_CHECK(again.last_index == rec.last_index);
            FUZZ_CHECK(again.last_term == rec.last_term);
            FUZZ_CHECK(again.n_entries == rec.n_entries);
            mr_store_close(st);
            mr_store_recovered_release(&again);
        }
        mr_store_recovered_release(&rec);
    }
    if (flags & 64) {
        char *argv[] = {(char *)"dump", dir, NULL};
        FILE *null = fuzz_devnull();
        rv = mr_store_tool_main(2, argv, null, null);
        FUZZ_CHECK(rv == 0 || rv == 3 || rv == 1);
    }
    fuzz_rm_rf(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned flags;
    unsigned char *b;
    if (size < 1 || size > (1u << 20)) return 0;
    flags = data[0];
    size--;
    b = malloc(size + 1); /* +1: malloc(0) may return NULL */
    FUZZ_CHECK(b != NULL);
    memcpy(b, data + 1, size);
    if (flags & 4) fix_checksums(b, size);
    scan_image(b, size, flags);
    if (flags & 8) recover_dir(b, size, flags);
    free(b);
    return 0;
}
