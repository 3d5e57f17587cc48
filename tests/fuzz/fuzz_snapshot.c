/* libFuzzer target for snapshot files: the storage header decoder (reader
 * open, verify, read), recovery of a data directory holding the snapshot, and
 * the node's payload inside it ("MRNS" header, idempotency table, then the
 * state machine's restore() of lua/kv.lua), through the node's own restore
 * path (mr_node_snap_restore_newest on a node that has only a store, an
 * idempotency table and a state machine).
 *
 * Input: byte 0 holds flags, the rest is the snapshot file.
 *   bit 0  fix the file first: magic, payload length and both checksums, so
 *          mutations reach the payload decoders
 *   bit 1  recover a data directory holding the file (and a valid meta)
 *   bit 2  with bit 1: restore the node payload (runs the Lua restore())
 * Checks: no crash or sanitizer report; the reader's view matches the file;
 * a membership blob or idempotency table that decodes re-encodes to the
 * same bytes. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "node/node_int.h"
#include "storage/storage_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct mr_node node; /* only store, idem and sm are used */

static void write_file(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    FUZZ_CHECK(fd >= 0);
    FUZZ_CHECK(n == 0 || write(fd, p, n) == (ssize_t)n);
    close(fd);
}

static void fix_file(unsigned char *b, size_t size)
{
    uint32_t conf_len, crc;
    if (size < MR_STORE_SNAP_HEADER) return;
    memcpy(b, SNAP_MAGIC, 8);
    conf_len = mr_get_u32(b + 32);
    if (conf_len > size - MR_STORE_SNAP_HEADER) {
        conf_len = (uint32_t)(size - MR_STORE_SNAP_HEADER);
        mr_put_u32(b + 32, conf_len);
    }
    mr_put_u64(b + 24, size - MR_STORE_SNAP_HEADER - conf_len);
    mr_put_u32(b + 36, mr_crc32c(0, b + MR_STORE_SNAP_HEADER + conf_len,
                                 size - MR_STORE_SNAP_HEADER - conf_len));
    crc = mr_crc32c(0, b, 52);
    crc = mr_crc32c(crc, b + MR_STORE_SNAP_HEADER, conf_len);
    mr_put_u32(b + 52, crc);
}

static void check_conf(const struct mr_rcbuf *conf)
{
    struct mr_raft_config c;
    struct mr_rcbuf *b;
    mr_raft_config_init(&c);
    if (mr_raft_config_decode(conf->data, conf->len, &c, NULL) == 0) {
        b = mr_raft_config_encode(&c);
        FUZZ_CHECK(b != NULL);
        FUZZ_CHECK(b->len == conf->len && memcmp(b->data, conf->data, b->len) == 0);
        mr_rcbuf_unref(b);
    }
    mr_raft_config_close(&c);
}

/* The idempotency table inside an MRNS payload, decoded and re-encoded. */
static void check_idem(const unsigned char *p, size_t n)
{
    struct mr_idem t;
    size_t used = 0;
    uint64_t idem_len;
    if (n < 16 || memcmp(p, "MRNS", 4) != 0) return;
    idem_len = mr_get_u64(p + 8);
    if (idem_len > n - 16) return;
    FUZZ_CHECK(mr_idem_init(&t, 100) == 0);
    if (mr_idem_decode(&t, p + 16, (size_t)idem_len, &used) == 0) {
        size_t sz = mr_idem_encoded_size(&t);
        unsigned char *e = malloc(sz);
        FUZZ_CHECK(e != NULL);
        FUZZ_CHECK(used <= idem_len && sz == used);
        mr_idem_encode(&t, e);
        FUZZ_CHECK(memcmp(e, p + 16, sz) == 0);
        free(e);
    }
    mr_idem_close(&t);
}

static void read_file(const char *path, const unsigned char *b, size_t size)
{
    struct mr_store_snap_reader *r;
    const struct mr_store_snap_info *info;
    char errmsg[MR_ERRMSG_SIZE];
    unsigned char *payload;
    uint64_t off = 0;
    int rv = mr_store_snap_reader_open_path(path, &r, errmsg);
    FUZZ_CHECK(rv == 0 || rv == MR_ECORRUPT);
    if (rv != 0) return;
    info = mr_store_snap_reader_info(r);
    FUZZ_CHECK(info->conf != NULL);
    FUZZ_CHECK(MR_STORE_SNAP_HEADER + info->conf->len + info->size == size);
    FUZZ_CHECK(memcmp(info->conf->data, b + MR_STORE_SNAP_HEADER, info->conf->len) == 0);
    check_conf(info->conf);
    rv = mr_store_snap_reader_verify(r, errmsg);
    FUZZ_CHECK(rv == 0 || rv == MR_ECORRUPT);
    payload = malloc((size_t)info->size + 1);
    FUZZ_CHECK(payload != NULL);
    while (off < info->size) {
        /* odd chunk sizes, as the sender uses its own */
        ssize_t n = mr_store_snap_reader_read(r, off, payload + off, 1 + (size_t)(off % 97));
        FUZZ_CHECK(n > 0);
        off += (uint64_t)n;
    }
    FUZZ_CHECK(mr_store_snap_reader_read(r, off, payload, 1) == 0);
    FUZZ_CHECK(memcmp(payload, b + size - info->size, (size_t)info->size) == 0);
    if (rv == 0) check_idem(payload, (size_t)info->size);
    free(payload);
    mr_store_snap_reader_close(r);
}

static void ensure_node(void)
{
    char errmsg[MR_ERRMSG_SIZE];
    struct mr_sm_options so;
    if (node.sm != NULL) return;
    FUZZ_CHECK(mr_idem_init(&node.idem, 100) == 0);
    memset(&so, 0, sizeof so);
    so.script_path = MR_SOURCE_DIR "/lua/kv.lua";
    so.memory_limit_bytes = 256u << 20;
    if (mr_sm_open(&node.sm, &so, errmsg) != 0) {
        fprintf(stderr, "fuzz_snapshot: %s\n", errmsg);
        abort();
    }
}

static void recover_dir(const unsigned char *b, size_t size, unsigned flags)
{
    const char *root = fuzz_tmpdir();
    char dir[4096], path[4096], name[SNAP_NAME_LEN + 1];
    struct mr_store_meta m = {2, 0, 1, 0, 1};
    unsigned char mb[META_SIZE];
    mr_index index = size >= 24 ? mr_get_u64(b + 8) : 1;
    mr_term term = size >= 24 ? mr_get_u64(b + 16) : 1;
    struct mr_store_options o;
    struct mr_store_recovered rec;
    struct mr_store *st;
    char errmsg[MR_ERRMSG_SIZE];
    int rv;

    if (index == 0) index = 1;
    FUZZ_PATH(dir, "%s/d", root);
    fuzz_rm_rf(dir);
    FUZZ_CHECK(mkdir(dir, 0755) == 0);
    FUZZ_PATH(path, "%s/snap", dir);
    FUZZ_CHECK(mkdir(path, 0755) == 0);
    mr_store__snap_name(name, index, term);
    FUZZ_PATH(path, "%s/snap/%s", dir, name);
    write_file(path, b, size);
    m.log_start = index + 1;
    mr_store__meta_encode(&m, mb);
    FUZZ_PATH(path, "%s/%s", dir, META_NAME);
    write_file(path, mb, sizeof mb);

    memset(&o, 0, sizeof o);
    o.data_dir = dir;
    o.is_read_only = 1;
    rv = mr_store_open(&st, &o, &rec, errmsg);
    FUZZ_CHECK(rv == 0 || rv == MR_ECORRUPT);
    if (rv == 0) {
        FUZZ_CHECK(rec.has_snapshot);
        FUZZ_CHECK(rec.snap_index == mr_get_u64(b + 8) && rec.snap_term == mr_get_u64(b + 16));
        if (flags & 4) {
            ensure_node();
            node.store = st;
            rv = mr_node_snap_restore_newest(&node, errmsg);
            node.store = NULL;
            FUZZ_CHECK(rv == 0 || rv == MR_ECORRUPT || rv == MR_ESCRIPT);
        }
        mr_store_close(st);
        mr_store_recovered_release(&rec);
    }
    fuzz_rm_rf(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *root = fuzz_tmpdir();
    char path[4096];
    unsigned flags;
    unsigned char *b;
    if (size < 1 || size > (1u << 20)) return 0;
    flags = data[0];
    size--;
    b = malloc(size + 1);
    FUZZ_CHECK(b != NULL);
    memcpy(b, data + 1, size);
    if (flags & 1) fix_file(b, size);
    FUZZ_PATH(path, "%s/file.snap", root);
    write_file(path, b, size);
    read_file(path, b, size);
    unlink(path);
    if (flags & 2) recover_dir(b, size, flags);
    free(b);
    return 0;
}
