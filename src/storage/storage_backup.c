/* storage: backup files (format in storage.h) and seeding a data directory
 * from one (`moonraft data restore`). */
#include "storage/storage_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BACKUP_MAGIC "MRBACKUP"
#define BACKUP_VERSION 1u
#define IO_CHUNK (1024u * 1024u) /* bytes */

void mr_store_backup_info_release(struct mr_store_backup_info *info)
{
    if (info == NULL) return;
    mr_rcbuf_unref(info->conf);
    memset(info, 0, sizeof *info);
}

static int pread_all(int fd, void *buf, size_t n, uint64_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -errno;
        if (r == 0) return MR_ECORRUPT;
        got += (size_t)r;
    }
    return 0;
}

void mr_store_backup_stream_init(struct mr_store_backup_stream *bs,
                                 struct mr_store_snap_reader *r, const char *cluster_name,
                                 const char *node_name, uint64_t cluster_id,
                                 uint64_t created_ms)
{
    const struct mr_store_snap_info *si = mr_store_snap_reader_info(r);
    size_t cl = strlen(cluster_name), nl = strlen(node_name);
    unsigned char *b = bs->head;
    memset(bs, 0, sizeof *bs);
    bs->reader = r;
    (void)mr_store__snap_reader_file(r, &bs->snap_len);
    if (cl > MR_STORE_BACKUP_NAME_MAX) cl = MR_STORE_BACKUP_NAME_MAX;
    if (nl > MR_STORE_BACKUP_NAME_MAX) nl = MR_STORE_BACKUP_NAME_MAX;
    bs->head_len = MR_STORE_BACKUP_HEADER + cl + nl;
    memcpy(b, BACKUP_MAGIC, 8);
    mr_put_u32(b + 8, BACKUP_VERSION);
    mr_put_u32(b + 12, (uint32_t)bs->head_len);
    mr_put_u64(b + 16, si->index);
    mr_put_u64(b + 24, si->term);
    mr_put_u64(b + 32, bs->snap_len);
    mr_put_u64(b + 40, created_ms);
    mr_put_u64(b + 48, cluster_id);
    b[56] = (unsigned char)(cl & 0xff);
    b[57] = (unsigned char)(cl >> 8);
    b[58] = (unsigned char)(nl & 0xff);
    b[59] = (unsigned char)(nl >> 8);
    memcpy(b + MR_STORE_BACKUP_HEADER, cluster_name, cl);
    memcpy(b + MR_STORE_BACKUP_HEADER + cl, node_name, nl);
    bs->size = bs->head_len + bs->snap_len + 4;
}

int mr_store_backup_stream_read(struct mr_store_backup_stream *bs, void *buf, size_t len,
                                char *errmsg)
{
    unsigned char *out = buf;
    uint64_t body_end = bs->head_len + bs->snap_len;
    int fd = mr_store__snap_reader_file(bs->reader, &(uint64_t){0});
    MR_ASSERT(len >= 1 && len <= bs->size - bs->pos);
    while (len > 0) {
        size_t n;
        if (bs->pos < bs->head_len) {
            n = bs->head_len - (size_t)bs->pos;
            if (n > len) n = len;
            memcpy(out, bs->head + bs->pos, n);
        } else if (bs->pos < body_end) {
            uint64_t left = body_end - bs->pos;
            int rv;
            n = left < len ? (size_t)left : len;
            rv = pread_all(fd, out, n, bs->pos - bs->head_len);
            if (rv != 0) {
                mr_errmsg_printf(errmsg,
                                 "backup: read the snapshot at %" PRIu64
                                 " offset %" PRIu64 ": %s",
                                 mr_store_snap_reader_info(bs->reader)->index,
                                 bs->pos - bs->head_len, mr_strerror(rv));
                return rv;
            }
        } else {
            unsigned char trailer[4];
            size_t at = (size_t)(bs->pos - body_end);
            mr_put_u32(trailer, bs->crc);
            n = 4 - at;
            if (n > len) n = len;
            memcpy(out, trailer + at, n);
            bs->pos += n;
            out += n;
            len -= n;
            continue;
        }
        bs->crc = mr_crc32c(bs->crc, out, n);
        bs->pos += n;
        out += n;
        len -= n;
    }
    return 0;
}

int mr_store_backup_encode(struct mr_store_snap_reader *r, const char *cluster_name,
                           const char *node_name, uint64_t cluster_id,
                           uint64_t created_ms, unsigned char **out, size_t *len,
                           uint32_t *checksum, char *errmsg)
{
    struct mr_store_backup_stream bs;
    unsigned char *b;
    int rv;
    *out = NULL;
    *len = 0;
    mr_store_backup_stream_init(&bs, r, cluster_name, node_name, cluster_id, created_ms);
    if (bs.size > SIZE_MAX) {
        mr_errmsg_printf(errmsg, "backup: snapshot too large for memory");
        return MR_ENOMEM;
    }
    b = mr_malloc((size_t)bs.size);
    if (b == NULL) {
        mr_errmsg_printf(errmsg, "backup: out of memory (%" PRIu64 " bytes)", bs.size);
        return MR_ENOMEM;
    }
    rv = mr_store_backup_stream_read(&bs, b, (size_t)bs.size, errmsg);
    if (rv != 0) {
        mr_free(b);
        return rv;
    }
    *out = b;
    *len = (size_t)bs.size;
    *checksum = bs.crc;
    return 0;
}

static uint16_t get_u16(const unsigned char *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

/* Validates the embedded snapshot header at file offset `at` (L bytes) and
 * fills info->conf, payload_off, payload_size; *payload_crc gets its CRC. */
static int check_snap_header(int fd, const char *path, uint64_t at, uint64_t l,
                             struct mr_store_backup_info *info, uint32_t *payload_crc,
                             char *errmsg)
{
    unsigned char sh[MR_STORE_SNAP_HEADER];
    uint32_t conf_len, crc;
    int rv;
    if (l < MR_STORE_SNAP_HEADER || pread_all(fd, sh, sizeof sh, at) != 0 ||
        memcmp(sh, SNAP_MAGIC, 8) != 0) {
        mr_errmsg_printf(errmsg, "%s offset %" PRIu64 ": not a snapshot", path, at);
        return MR_ECORRUPT;
    }
    conf_len = mr_get_u32(sh + 32);
    if (conf_len > l - MR_STORE_SNAP_HEADER) {
        mr_errmsg_printf(errmsg, "%s offset %" PRIu64 ": bad membership length", path,
                         at + 32);
        return MR_ECORRUPT;
    }
    info->conf = mr_rcbuf_new(conf_len);
    if (info->conf == NULL) return MR_ENOMEM;
    rv = pread_all(fd, info->conf->data, conf_len, at + MR_STORE_SNAP_HEADER);
    if (rv != 0) return rv;
    crc = mr_crc32c(mr_crc32c(0, sh, 52), info->conf->data, conf_len);
    if (crc != mr_get_u32(sh + 52)) {
        mr_errmsg_printf(
            errmsg, "%s offset %" PRIu64 ": snapshot header checksum mismatch", path, at);
        return MR_ECORRUPT;
    }
    if (mr_get_u64(sh + 8) != info->index || mr_get_u64(sh + 16) != info->term ||
        mr_get_u64(sh + 24) != l - MR_STORE_SNAP_HEADER - conf_len) {
        mr_errmsg_printf(errmsg,
                         "%s offset %" PRIu64
                         ": the snapshot does not match the backup header",
                         path, at);
        return MR_ECORRUPT;
    }
    info->payload_off = at + MR_STORE_SNAP_HEADER + conf_len;
    info->payload_size = l - MR_STORE_SNAP_HEADER - conf_len;
    *payload_crc = mr_get_u32(sh + 36);
    return 0;
}

int mr_store_backup_check(const char *path, struct mr_store_backup_info *info,
                          char *errmsg)
{
    unsigned char h[MR_STORE_BACKUP_HEADER], tail[4];
    unsigned char *buf = NULL;
    struct stat sb;
    uint64_t hl, l, off;
    uint32_t crc = 0, pcrc = 0, want_pcrc;
    size_t cl, nl;
    int fd, rv;

    memset(info, 0, sizeof *info);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &sb) != 0) {
        rv = -errno;
        mr_errmsg_printf(errmsg, "%s: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return rv;
    }
    rv = MR_ECORRUPT;
    if ((uint64_t)sb.st_size < MR_STORE_BACKUP_HEADER + 4 ||
        pread_all(fd, h, sizeof h, 0) != 0) {
        mr_errmsg_printf(errmsg, "%s: truncated (%lld bytes): not a complete backup",
                         path, (long long)sb.st_size);
        goto out;
    }
    if (memcmp(h, BACKUP_MAGIC, 8) != 0) {
        mr_errmsg_printf(errmsg, "%s offset 0: not a moonraft backup (bad magic)", path);
        goto out;
    }
    if (mr_get_u32(h + 8) != BACKUP_VERSION) {
        mr_errmsg_printf(errmsg, "%s offset 8: unknown backup version %u", path,
                         mr_get_u32(h + 8));
        goto out;
    }
    hl = mr_get_u32(h + 12);
    l = mr_get_u64(h + 32);
    cl = get_u16(h + 56);
    nl = get_u16(h + 58);
    if (cl > MR_STORE_BACKUP_NAME_MAX || nl > MR_STORE_BACKUP_NAME_MAX ||
        hl != MR_STORE_BACKUP_HEADER + cl + nl || l > (uint64_t)INT64_MAX - hl - 4) {
        mr_errmsg_printf(errmsg, "%s offset 12: bad header lengths", path);
        goto out;
    }
    info->file_size = (uint64_t)sb.st_size;
    if (info->file_size != hl + l + 4) {
        mr_errmsg_printf(errmsg,
                         "%s: truncated or padded: %" PRIu64
                         " bytes, the header says %" PRIu64,
                         path, info->file_size, hl + l + 4);
        goto out;
    }
    /* The whole-file checksum first: nothing else is trusted before it. */
    buf = mr_malloc(IO_CHUNK);
    if (buf == NULL) {
        rv = MR_ENOMEM;
        goto out;
    }
    for (off = 0; off < hl + l;) {
        size_t n = hl + l - off < IO_CHUNK ? (size_t)(hl + l - off) : IO_CHUNK;
        int e = pread_all(fd, buf, n, off);
        if (e != 0) {
            rv = e;
            mr_errmsg_printf(errmsg, "%s offset %" PRIu64 ": read: %s", path, off,
                             mr_strerror(e));
            goto out;
        }
        crc = mr_crc32c(crc, buf, n);
        off += n;
    }
    if (pread_all(fd, tail, 4, hl + l) != 0 || mr_get_u32(tail) != crc) {
        mr_errmsg_printf(errmsg,
                         "%s offset %" PRIu64 ": checksum mismatch (the file is damaged)",
                         path, hl + l);
        goto out;
    }
    info->checksum = crc;
    info->index = mr_get_u64(h + 16);
    info->term = mr_get_u64(h + 24);
    info->created_ms = mr_get_u64(h + 40);
    info->cluster_id = mr_get_u64(h + 48);
    if (pread_all(fd, info->cluster_name, cl, MR_STORE_BACKUP_HEADER) != 0 ||
        pread_all(fd, info->node_name, nl, MR_STORE_BACKUP_HEADER + cl) != 0) {
        mr_errmsg_printf(errmsg, "%s offset 64: truncated names", path);
        goto out;
    }
    if (info->index == 0) {
        mr_errmsg_printf(errmsg, "%s offset 16: index 0", path);
        goto out;
    }
    rv = check_snap_header(fd, path, hl, l, info, &want_pcrc, errmsg);
    if (rv != 0) goto out;
    /* A checksum computed by the writer over the bytes it read: also the
     * payload's own, which the restored snapshot will carry. */
    for (off = 0; off < info->payload_size;) {
        size_t n = info->payload_size - off < IO_CHUNK
                       ? (size_t)(info->payload_size - off)
                       : IO_CHUNK;
        rv = pread_all(fd, buf, n, info->payload_off + off);
        if (rv != 0) goto out;
        pcrc = mr_crc32c(pcrc, buf, n);
        off += n;
    }
    if (pcrc != want_pcrc) {
        rv = MR_ECORRUPT;
        mr_errmsg_printf(errmsg,
                         "%s offset %" PRIu64 ": snapshot payload checksum mismatch",
                         path, info->payload_off);
        goto out;
    }
    rv = 0;
out:
    mr_free(buf);
    close(fd);
    if (rv != 0) mr_store_backup_info_release(info);
    return rv;
}

/* ---- restore ------------------------------------------------------------------ */

static int is_empty_dir(const char *dir, int *exists)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int empty = 1;
    *exists = d != NULL;
    if (d == NULL) return errno == ENOENT ? 1 : -errno;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            empty = 0;
            break;
        }
    }
    closedir(d);
    return empty;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb;
    (void)flag;
    if (f->level == 0) return 0; /* keep the directory itself */
    remove(path);
    return 0;
}

/* Waits until everything queued on `st` is durable (no notify: polls). */
static int wait_durable(struct mr_store *st, uint64_t seq, char *errmsg)
{
    struct mr_store_progress p;
    for (;;) {
        int rv = mr_store_poll(st, &p);
        if (rv != 0) {
            mr_errmsg_printf(errmsg, "%s", p.errmsg);
            return rv;
        }
        if (p.done_seq >= seq) return 0;
        {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
}

static int copy_payload(struct mr_store *st, const char *path,
                        const struct mr_store_backup_info *info, const void *conf,
                        size_t conf_len, char *errmsg)
{
    struct mr_store_snap_writer *w;
    unsigned char *buf;
    uint64_t off;
    int fd, rv;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rv = -errno;
        mr_errmsg_printf(errmsg, "%s: %s", path, strerror(errno));
        return rv;
    }
    buf = mr_malloc(IO_CHUNK);
    if (buf == NULL) {
        close(fd);
        return MR_ENOMEM;
    }
    rv = mr_store_snap_writer_begin(st, info->index, info->term, conf, conf_len, &w,
                                    errmsg);
    for (off = 0; rv == 0 && off < info->payload_size;) {
        size_t n = info->payload_size - off < IO_CHUNK
                       ? (size_t)(info->payload_size - off)
                       : IO_CHUNK;
        rv = pread_all(fd, buf, n, info->payload_off + off);
        if (rv != 0)
            mr_errmsg_printf(errmsg, "%s: read: %s", path, mr_strerror(rv));
        else
            rv = mr_store_snap_writer_append(w, buf, n, errmsg);
        off += n;
        if (rv != 0) mr_store_snap_writer_abort(w);
    }
    if (rv == 0) rv = mr_store_snap_writer_finish(w, errmsg);
    mr_free(buf);
    close(fd);
    return rv;
}

int mr_store_backup_restore(const char *path, const char *data_dir, mr_node_id node_id,
                            uint64_t cluster_id, const void *conf, size_t conf_len,
                            struct mr_store_backup_info *info, char *errmsg)
{
    struct mr_store_options so;
    struct mr_store_recovered rec;
    struct mr_store *st = NULL;
    struct mr_store_snap_reader *r = NULL;
    uint64_t seq = 0;
    int exists, rv;

    memset(info, 0, sizeof *info);
    rv = is_empty_dir(data_dir, &exists);
    if (rv < 0) {
        mr_errmsg_printf(errmsg, "%s: %s", data_dir, mr_strerror(rv));
        return rv;
    }
    if (rv == 0) {
        mr_errmsg_printf(
            errmsg, "%s is not empty: restore only seeds a new data directory", data_dir);
        return MR_EEXISTS;
    }
    rv = mr_store_backup_check(path, info, errmsg);
    if (rv != 0) return rv;
    memset(&so, 0, sizeof so);
    so.data_dir = data_dir;
    so.node_id = node_id;
    so.cluster_id = cluster_id;
    rv = mr_store_open(&st, &so, &rec, errmsg);
    if (rv != 0) goto fail;
    mr_store_recovered_release(&rec);
    rv = copy_payload(st, path, info, conf, conf_len, errmsg);
    if (rv != 0) goto fail;
    /* Read back what landed on disk before trusting it. */
    rv = mr_store_snap_reader_open(st, &r, errmsg);
    if (rv == 0) rv = mr_store_snap_reader_verify(r, errmsg);
    if (rv == 0 && mr_store_snap_reader_info(r)->index != info->index) rv = MR_ECORRUPT;
    mr_store_snap_reader_close(r);
    if (rv != 0) goto fail;
    /* The term of the snapshot's last entry is the newest this node may have
     * seen; the log starts right after the snapshot. */
    rv = mr_store_save_hard_state(st, info->term, 0, NULL);
    if (rv == 0) rv = mr_store_reset(st, info->index + 1, &seq);
    if (rv == 0) rv = wait_durable(st, seq, errmsg);
    if (rv != 0) goto fail;
    mr_store_close(st);
    return 0;
fail:
    mr_store_close(st);
    if (exists || access(data_dir, F_OK) == 0)
        nftw(data_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (!exists) rmdir(data_dir);
    mr_errmsg_wrapf(errmsg, "restore into %s", data_dir);
    mr_store_backup_info_release(info);
    return rv;
}
