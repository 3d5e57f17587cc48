/* storage: snapshot files.
 *
 * snap/<index>-<term>.snap (16 hex digits each):
 *   0  "MRSNAP01"
 *   8  u64 index     16 u64 term     24 u64 payload length
 *   32 u32 conf length   36 u32 CRC32C of the payload
 *   40 12 reserved zero bytes
 *   52 u32 CRC32C of bytes 0..51 and the membership blob
 *   56 membership blob (opaque, encoded by the Raft core), then the payload.
 * A snapshot is built in a temp file (*.part), fsynced, renamed into place
 * and the directory fsynced; only then are older snapshots deleted, and the
 * directory fsynced again (so a power cut cannot resurrect them). */
#include "storage/storage_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONF_MAX (64u * 1024u * 1024u) /* bytes */
#define IO_CHUNK (1024u * 1024u)       /* bytes */

struct mr_store_snap_writer {
    struct mr_store *st;
    int fd;
    char *tmp_path;
    mr_index index;
    mr_term term;
    unsigned char *conf;
    uint32_t conf_len;
    uint64_t payload_off;
    uint64_t written;
};

struct mr_store_snap_receiver {
    struct mr_store_snap_writer w;
};

struct mr_store_snap_reader {
    int fd;
    uint64_t payload_off;
    char *relname;
    struct mr_store_snap_info info;
    void *map; /* the whole file, read-only, once mapped (mr_store_snap_reader_map) */
    size_t map_len;
};

void mr_store__snap_name(char *buf, mr_index index, mr_term term)
{
    snprintf(buf, SNAP_NAME_LEN + 1, "%016" PRIx64 "-%016" PRIx64 ".snap", index, term);
}

static int parse_hex16(const char *s, uint64_t *v)
{
    int i;
    *v = 0;
    for (i = 0; i < 16; i++) {
        char c = s[i];
        int d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else
            return 0;
        *v = *v << 4 | (uint64_t)d;
    }
    return 1;
}

int mr_store__snap_name_parse(const char *name, mr_index *index, mr_term *term)
{
    if (strlen(name) != SNAP_NAME_LEN || name[16] != '-' ||
        strcmp(name + 33, ".snap") != 0)
        return 0;
    return parse_hex16(name, index) && parse_hex16(name + 17, term) && *index > 0;
}

/* ---- reader ----------------------------------------------------------------------- */

static int read_at(int fd, void *buf, size_t n, uint64_t off)
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

int mr_store__snap_open(const char *path, const char *relname,
                        struct mr_store_snap_reader **out, char *errmsg);
int mr_store__snap_open(const char *path, const char *relname,
                        struct mr_store_snap_reader **out, char *errmsg)
{
    struct mr_store_snap_reader *r;
    unsigned char h[MR_STORE_SNAP_HEADER];
    struct stat sb;
    uint32_t conf_len, crc;
    int rv;

    *out = NULL;
    r = mr_calloc(1, sizeof *r);
    if (r == NULL) return MR_ENOMEM;
    r->fd = -1;
    r->relname = mr_strdup(relname);
    if (r->relname == NULL) {
        rv = MR_ENOMEM;
        goto fail;
    }
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0 || fstat(r->fd, &sb) != 0) {
        rv = -errno;
        mr_errmsg_printf(errmsg, "%s: open: %s", relname, strerror(errno));
        goto fail;
    }
    rv = MR_ECORRUPT;
    if ((uint64_t)sb.st_size < MR_STORE_SNAP_HEADER ||
        read_at(r->fd, h, sizeof h, 0) != 0) {
        mr_errmsg_printf(errmsg, "%s offset 0: truncated header", relname);
        goto fail;
    }
    if (memcmp(h, SNAP_MAGIC, 8) != 0) {
        mr_errmsg_printf(errmsg, "%s offset 0: bad magic", relname);
        goto fail;
    }
    conf_len = mr_get_u32(h + 32);
    if (conf_len > CONF_MAX || conf_len > (uint64_t)sb.st_size - MR_STORE_SNAP_HEADER) {
        mr_errmsg_printf(errmsg, "%s offset 32: bad membership length", relname);
        goto fail;
    }
    r->info.conf = mr_rcbuf_new(conf_len);
    if (r->info.conf == NULL) {
        rv = MR_ENOMEM;
        goto fail;
    }
    if (read_at(r->fd, r->info.conf->data, conf_len, MR_STORE_SNAP_HEADER) != 0) {
        mr_errmsg_printf(errmsg, "%s offset %u: truncated membership", relname,
                         MR_STORE_SNAP_HEADER);
        goto fail;
    }
    crc = mr_crc32c(0, h, 52);
    crc = mr_crc32c(crc, r->info.conf->data, conf_len);
    if (crc != mr_get_u32(h + 52)) {
        mr_errmsg_printf(errmsg, "%s offset 0: header checksum mismatch", relname);
        goto fail;
    }
    r->info.index = mr_get_u64(h + 8);
    r->info.term = mr_get_u64(h + 16);
    r->info.size = mr_get_u64(h + 24);
    r->info.payload_crc = mr_get_u32(h + 36);
    r->payload_off = MR_STORE_SNAP_HEADER + (uint64_t)conf_len;
    if ((uint64_t)sb.st_size - r->payload_off != r->info.size) {
        mr_errmsg_printf(errmsg,
                         "%s offset 24: payload length %" PRIu64
                         " but the file holds %" PRIu64,
                         relname, r->info.size, (uint64_t)sb.st_size - r->payload_off);
        goto fail;
    }
    *out = r;
    return 0;
fail:
    mr_store_snap_reader_close(r);
    return rv;
}

int mr_store_snap_reader_open_path(const char *path, struct mr_store_snap_reader **out,
                                   char *errmsg)
{
    return mr_store__snap_open(path, path, out, errmsg);
}

/* Newest snapshot name in snap/, or "" if none. */
static int newest_snap(const char *snap_dir, char *name)
{
    DIR *d = opendir(snap_dir);
    struct dirent *de;
    mr_index bi = 0, i;
    mr_term bt = 0, t;
    name[0] = '\0';
    if (d == NULL) return -errno;
    while ((de = readdir(d)) != NULL) {
        if (!mr_store__snap_name_parse(de->d_name, &i, &t)) continue;
        if (i > bi || (i == bi && t > bt)) {
            bi = i;
            bt = t;
            memcpy(name, de->d_name, SNAP_NAME_LEN + 1); /* parse checked the length */
        }
    }
    closedir(d);
    return 0;
}

int mr_store_snap_reader_open(struct mr_store *st, struct mr_store_snap_reader **out,
                              char *errmsg)
{
    char name[SNAP_NAME_LEN + 1], rel[SNAP_NAME_LEN + 8];
    char *path;
    int rv;
    *out = NULL;
    pthread_mutex_lock(&st->snap_mu);
    rv = newest_snap(st->snap_dir, name);
    if (rv == 0 && name[0] == '\0') rv = MR_ENOTFOUND;
    if (rv != 0) {
        pthread_mutex_unlock(&st->snap_mu);
        mr_errmsg_printf(errmsg, "snap: %s", mr_strerror(rv));
        return rv;
    }
    snprintf(rel, sizeof rel, "snap/%s", name);
    path = mr_store__join(st->snap_dir, name);
    rv = path == NULL ? MR_ENOMEM : mr_store__snap_open(path, rel, out, errmsg);
    pthread_mutex_unlock(&st->snap_mu);
    mr_free(path);
    return rv;
}

int mr_store__snap_reader_file(const struct mr_store_snap_reader *r, uint64_t *file_size)
{
    *file_size = r->payload_off + r->info.size;
    return r->fd;
}

const struct mr_store_snap_info *
mr_store_snap_reader_info(const struct mr_store_snap_reader *r)
{
    return &r->info;
}

ssize_t mr_store_snap_reader_read(struct mr_store_snap_reader *r, uint64_t off, void *buf,
                                  size_t len)
{
    ssize_t n;
    if (off >= r->info.size) return 0;
    if (len > r->info.size - off) len = (size_t)(r->info.size - off);
    do {
        n = pread(r->fd, buf, len, (off_t)(r->payload_off + off));
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

const unsigned char *mr_store_snap_reader_map(struct mr_store_snap_reader *r)
{
    uint64_t len = r->payload_off + r->info.size;
    void *p;
    if (r->map != NULL) return (const unsigned char *)r->map + r->payload_off;
    if (r->info.size == 0 || len > (uint64_t)SIZE_MAX) return NULL;
    /* Private and read-only: a snapshot file is never written once it has
     * its name, and an unlink (a newer snapshot) leaves the mapping whole.
     * MAP_POPULATE reads it in once, ahead, instead of a fault per page. */
    p = mmap(NULL, (size_t)len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, r->fd, 0);
    if (p == MAP_FAILED) return NULL;
    r->map = p;
    r->map_len = (size_t)len;
    return (const unsigned char *)p + r->payload_off;
}

void mr_store_snap_reader_unmap(struct mr_store_snap_reader *r)
{
    if (r->map != NULL) munmap(r->map, r->map_len);
    r->map = NULL;
    r->map_len = 0;
}

int mr_store_snap_reader_verify(struct mr_store_snap_reader *r, char *errmsg)
{
    unsigned char *buf;
    uint64_t off = 0;
    uint32_t crc = 0;
    int was_mapped = r->map != NULL;
    const unsigned char *m = mr_store_snap_reader_map(r);
    if (m != NULL) {
        /* no copy through a buffer: the checksum reads the page cache */
        crc = mr_crc32c(0, m, (size_t)r->info.size);
        if (!was_mapped) mr_store_snap_reader_unmap(r);
        if (crc != r->info.payload_crc) {
            mr_errmsg_printf(errmsg, "%s offset %" PRIu64 ": payload checksum mismatch",
                             r->relname, r->payload_off);
            return MR_ECORRUPT;
        }
        return 0;
    }
    buf = mr_malloc(IO_CHUNK);
    if (buf == NULL) return MR_ENOMEM;
    while (off < r->info.size) {
        ssize_t n = mr_store_snap_reader_read(r, off, buf, IO_CHUNK);
        if (n <= 0) {
            mr_free(buf);
            mr_errmsg_printf(errmsg, "%s offset %" PRIu64 ": read: %s", r->relname,
                             r->payload_off + off,
                             n == 0 ? "short file" : strerror((int)-n));
            return n == 0 ? MR_ECORRUPT : (int)n;
        }
        crc = mr_crc32c(crc, buf, (size_t)n);
        off += (uint64_t)n;
    }
    mr_free(buf);
    if (crc != r->info.payload_crc) {
        mr_errmsg_printf(errmsg, "%s offset %" PRIu64 ": payload checksum mismatch",
                         r->relname, r->payload_off);
        return MR_ECORRUPT;
    }
    return 0;
}

void mr_store_snap_reader_close(struct mr_store_snap_reader *r)
{
    if (r == NULL) return;
    mr_store_snap_reader_unmap(r);
    if (r->fd >= 0) close(r->fd);
    mr_rcbuf_unref(r->info.conf);
    mr_free(r->relname);
    mr_free(r);
}

/* ---- writer ------------------------------------------------------------------------ */

static void writer_free(struct mr_store_snap_writer *w, int remove_tmp)
{
    const struct mr_store_fs *fs = w->st->fs;
    if (w->fd >= 0) fs->close(fs->ctx, w->fd);
    if (remove_tmp && w->tmp_path != NULL) fs->unlink(fs->ctx, w->tmp_path);
    mr_free(w->tmp_path);
    mr_free(w->conf);
    mr_free(w);
}

int mr_store_snap_writer_begin(struct mr_store *st, mr_index index, mr_term term,
                               const void *conf, size_t conf_len,
                               struct mr_store_snap_writer **out, char *errmsg)
{
    struct mr_store_snap_writer *w;
    unsigned char zero[MR_STORE_SNAP_HEADER];
    char name[96];
    uint64_t counter;
    int rv;

    *out = NULL;
    if (index == 0 || conf_len > CONF_MAX || (conf == NULL && conf_len > 0)) {
        mr_errmsg_printf(errmsg, "snapshot: invalid arguments");
        return MR_EINVAL;
    }
    w = mr_calloc(1, sizeof *w);
    if (w == NULL) return MR_ENOMEM;
    w->st = st;
    w->fd = -1;
    w->index = index;
    w->term = term;
    w->conf_len = (uint32_t)conf_len;
    w->payload_off = MR_STORE_SNAP_HEADER + conf_len;
    w->conf = mr_malloc(conf_len);
    pthread_mutex_lock(&st->snap_mu);
    counter = ++st->snap_counter;
    pthread_mutex_unlock(&st->snap_mu);
    snprintf(name, sizeof name, "tmp-%016" PRIx64 "-%016" PRIx64 "-%ld-%" PRIu64 ".part",
             index, term, (long)getpid(), counter);
    w->tmp_path = mr_store__join(st->snap_dir, name);
    if (w->conf == NULL || w->tmp_path == NULL) {
        writer_free(w, 0);
        return MR_ENOMEM;
    }
    if (conf_len > 0) memcpy(w->conf, conf, conf_len);
    rv = st->fs->open(st->fs->ctx, w->tmp_path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (rv < 0) {
        mr_errmsg_printf(errmsg, "snap/%s: create: %s", name, mr_strerror(rv));
        writer_free(w, 0);
        return rv;
    }
    w->fd = rv;
    memset(zero, 0, sizeof zero);
    rv = mr_store__write_all(st->fs, w->fd, zero, sizeof zero, 0);
    if (rv == 0 && conf_len > 0)
        rv = mr_store__write_all(st->fs, w->fd, conf, conf_len, MR_STORE_SNAP_HEADER);
    if (rv == 0 && lseek(w->fd, (off_t)w->payload_off, SEEK_SET) < 0) rv = -errno;
    if (rv != 0) {
        mr_errmsg_printf(errmsg, "snap/%s: write: %s", name, mr_strerror(rv));
        writer_free(w, 1);
        return rv;
    }
    *out = w;
    return 0;
}

int mr_store_snap_writer_fd(const struct mr_store_snap_writer *w)
{
    return w->fd;
}

int mr_store_snap_writer_append(struct mr_store_snap_writer *w, const void *data,
                                size_t len, char *errmsg)
{
    int rv = mr_store__write_all(w->st->fs, w->fd, data, len,
                                 (off_t)(w->payload_off + w->written));
    if (rv != 0) {
        mr_errmsg_printf(errmsg, "snapshot: write: %s", mr_strerror(rv));
        return rv;
    }
    w->written += len;
    return 0;
}

/* Deletes every snapshot in snap/ other than `keep`, then fsyncs snap/ so
 * that a power cut cannot bring them back. Best effort: a leftover is
 * removed again at the next start (recovery uses the newest one). */
static void remove_others(struct mr_store *st, const char *keep)
{
    DIR *d = opendir(st->snap_dir);
    struct dirent *de;
    mr_index i;
    mr_term t;
    int removed = 0;
    if (d == NULL) return;
    while ((de = readdir(d)) != NULL) {
        char *p;
        if (!mr_store__snap_name_parse(de->d_name, &i, &t) ||
            strcmp(de->d_name, keep) == 0)
            continue;
        p = mr_store__join(st->snap_dir, de->d_name);
        if (p != NULL && st->fs->unlink(st->fs->ctx, p) == 0) removed = 1;
        mr_free(p);
    }
    closedir(d);
    if (removed) mr_store__sync_dir(st->fs, st->snap_dir);
}

static int writer_complete(struct mr_store_snap_writer *w, int is_rx, int has_crc,
                           uint32_t expected_crc, char *errmsg)
{
    struct mr_store *st = w->st;
    const struct mr_store_fs *fs = st->fs;
    unsigned char h[MR_STORE_SNAP_HEADER];
    unsigned char *buf = NULL;
    char name[SNAP_NAME_LEN + 1];
    char *path = NULL;
    struct stat sb;
    uint64_t size, off;
    uint32_t crc = 0;
    int rv;

    mr_store__snap_name(name, w->index, w->term);
    if (fstat(w->fd, &sb) != 0) {
        rv = -errno;
        goto fail;
    }
    if ((uint64_t)sb.st_size < w->payload_off) {
        rv = MR_EINVAL;
        goto fail;
    }
    size = (uint64_t)sb.st_size - w->payload_off;
    buf = mr_malloc(IO_CHUNK);
    if (buf == NULL) {
        rv = MR_ENOMEM;
        goto fail;
    }
    for (off = 0; off < size;) {
        size_t n = size - off < IO_CHUNK ? (size_t)(size - off) : IO_CHUNK;
        rv = read_at(w->fd, buf, n, w->payload_off + off);
        if (rv != 0) goto fail;
        crc = mr_crc32c(crc, buf, n);
        off += n;
    }
    if (has_crc && crc != expected_crc) {
        rv = MR_ECORRUPT;
        mr_errmsg_printf(errmsg, "snap/%s: received payload checksum mismatch", name);
        goto fail_msg;
    }
    memset(h, 0, sizeof h);
    memcpy(h, SNAP_MAGIC, 8);
    mr_put_u64(h + 8, w->index);
    mr_put_u64(h + 16, w->term);
    mr_put_u64(h + 24, size);
    mr_put_u32(h + 32, w->conf_len);
    mr_put_u32(h + 36, crc);
    mr_put_u32(h + 52, mr_crc32c(mr_crc32c(0, h, 52), w->conf, w->conf_len));
    rv = mr_store__write_all(fs, w->fd, h, sizeof h, 0);
    if (rv == 0) rv = fs->fsync(fs->ctx, w->fd);
    if (rv != 0) goto fail;
    if (is_rx) {
        /* Read back what landed on disk before trusting it. */
        struct mr_store_snap_reader *r;
        char rel[SNAP_NAME_LEN + 16];
        snprintf(rel, sizeof rel, "snap/%s.part", name);
        rv = mr_store__snap_open(w->tmp_path, rel, &r, errmsg);
        if (rv == 0) {
            rv = mr_store_snap_reader_verify(r, errmsg);
            mr_store_snap_reader_close(r);
        }
        if (rv != 0) goto fail_msg;
    }
    path = mr_store__join(st->snap_dir, name);
    if (path == NULL) {
        rv = MR_ENOMEM;
        goto fail;
    }
    pthread_mutex_lock(&st->snap_mu);
    pthread_mutex_lock(&st->mu);
    rv = st->snap_index > w->index ? MR_ESTALE : 0;
    pthread_mutex_unlock(&st->mu);
    if (rv == 0) rv = fs->rename(fs->ctx, w->tmp_path, path);
    if (rv == 0) rv = mr_store__sync_dir(fs, st->snap_dir);
    if (rv == 0) {
        pthread_mutex_lock(&st->mu);
        st->snap_index = w->index;
        st->snap_term = w->term;
        pthread_mutex_unlock(&st->mu);
        remove_others(st, name);
    }
    pthread_mutex_unlock(&st->snap_mu);
    if (rv != 0) goto fail;
    mr_free(buf);
    mr_free(path);
    writer_free(w, 0);
    return 0;
fail:
    mr_errmsg_printf(errmsg, "snap/%s: %s", name, mr_strerror(rv));
fail_msg:
    mr_free(buf);
    mr_free(path);
    writer_free(w, 1);
    return rv;
}

int mr_store_snap_writer_finish(struct mr_store_snap_writer *w, char *errmsg)
{
    return writer_complete(w, 0, 0, 0, errmsg);
}

void mr_store_snap_writer_abort(struct mr_store_snap_writer *w)
{
    if (w != NULL) writer_free(w, 1);
}

int mr_store_snapshot_write(struct mr_store *st, mr_index index, mr_term term,
                            const void *conf, size_t conf_len, const void *payload,
                            size_t payload_len, char *errmsg)
{
    struct mr_store_snap_writer *w;
    int rv = mr_store_snap_writer_begin(st, index, term, conf, conf_len, &w, errmsg);
    if (rv != 0) return rv;
    if (payload_len > 0) {
        rv = mr_store_snap_writer_append(w, payload, payload_len, errmsg);
        if (rv != 0) {
            mr_store_snap_writer_abort(w);
            return rv;
        }
    }
    return mr_store_snap_writer_finish(w, errmsg);
}

/* ---- receiver ------------------------------------------------------------------------
 */

int mr_store_snap_receiver_begin(struct mr_store *st, mr_index index, mr_term term,
                                 const void *conf, size_t conf_len,
                                 struct mr_store_snap_receiver **out, char *errmsg)
{
    struct mr_store_snap_writer *w;
    int rv;
    MR_ASSERT(offsetof(struct mr_store_snap_receiver, w) == 0);
    rv = mr_store_snap_writer_begin(st, index, term, conf, conf_len, &w, errmsg);
    *out = (struct mr_store_snap_receiver *)(void *)w;
    return rv;
}

int mr_store_snap_receiver_write(struct mr_store_snap_receiver *rx, uint64_t off,
                                 const void *data, size_t len, char *errmsg)
{
    struct mr_store_snap_writer *w = &rx->w;
    uint64_t skip;
    if (off > w->written) {
        mr_errmsg_printf(errmsg,
                         "snapshot: chunk at offset %" PRIu64 ", expected %" PRIu64, off,
                         w->written);
        return MR_EINVAL;
    }
    if (off + len <= w->written) return 0; /* a resent chunk we already have */
    skip = w->written - off;
    return mr_store_snap_writer_append(w, (const unsigned char *)data + skip,
                                       len - (size_t)skip, errmsg);
}

uint64_t mr_store_snap_receiver_offset(const struct mr_store_snap_receiver *rx)
{
    return rx->w.written;
}

int mr_store_snap_receiver_finish(struct mr_store_snap_receiver *rx, int has_crc,
                                  uint32_t expected_crc, char *errmsg)
{
    return writer_complete(&rx->w, 1, has_crc, expected_crc, errmsg);
}

void mr_store_snap_receiver_abort(struct mr_store_snap_receiver *rx)
{
    if (rx != NULL) writer_free(&rx->w, 1);
}
