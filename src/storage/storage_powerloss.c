/* storage: the power-loss fault layer (tests only).
 *
 * A kill -9 keeps the page cache, so it cannot tell whether a write was made
 * durable before something depending on it left the process. This layer can:
 * it passes every call of the mr_store_fs seam through to the real file
 * system and keeps, in a side directory (the "image"), what a power cut
 * would leave behind:
 *   image/files/<id>   the content of file <id> (an inode) as of its last
 *                      fdatasync/fsync
 *   image/dirs/<rel>   the entries of directory <rel> (relative to the data
 *                      dir, '/' written as '+', the data dir itself "@") as
 *                      of its last fsync: "f <id> <name>" / "d 0 <name>"
 *   image/map          "next <id>", then "<st_ino> <id>": which live inode
 *                      is which file id
 * Every image file is replaced by rename, so the image survives a SIGKILL of
 * the process at any point. mr_store_powerloss_cut() then rewrites the data
 * dir to exactly the image: the power cut.
 *
 * What is modeled:
 *   - file data and size: only what an fdatasync/fsync of that inode saw
 *     (through any fd and under any name: a file fsynced after a rename is
 *     the same inode);
 *   - directory entries (create, rename, unlink, mkdir of a subdirectory):
 *     only as of the last fsync of that directory; a file whose entry never
 *     became durable is gone, an unlinked one whose directory was not synced
 *     comes back with its durable content;
 *   - ftruncate (a shrink is durable only at the next sync; the bytes cut
 *     read back as zeros if the file grows again), fallocate (zeros), O_TRUNC.
 * Simplifications: the data dir itself always survives; a file whose data was
 * never synced comes back empty; writes that bypass the seam (a forked
 * snapshot child writing the fd it was given) are seen at the next sync only
 * as growth past the size the layer knows, which is the only way storage
 * writes that fd. After a restart (the image already exists) every known file
 * is compared in full at its first sync, because the previous process may have
 * left unsynced data in the page cache.
 *
 * All calls are serialised by one mutex (the layer is for tests). */
#include "storage/storage_int.h"

#include <dirent.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK (64u * 1024u) /* bytes per copy step */

struct range {
    uint64_t start, end;
};

struct pl_file {
    uint64_t ino;
    uint64_t id;
    int is_whole;      /* compare everything at the next sync */
    uint64_t min_size; /* smallest size since the last sync */
    uint64_t known;    /* size implied by the calls seen */
    struct range *ranges;
    size_t n_ranges, cap_ranges;
};

struct pl_fd {
    int kind; /* 0 unused, 1 file, 2 directory */
    uint64_t ino;
    char *rel; /* directories: relative path */
};

struct mr_store_powerloss {
    struct mr_store_fs fs;
    pthread_mutex_t mu;
    unsigned sync_delay_ms; /* a slow disk: added to every file sync */
    char *root;             /* data dir, no trailing slash */
    char *image;
    uint64_t next_id;
    struct pl_file *files;
    size_t n_files, cap_files;
    struct pl_fd *fds;
    size_t n_fds;
};

/* ---- small helpers ---------------------------------------------------------- */

static char *path2(const char *a, const char *b)
{
    return mr_store__join(a, b);
}

static char *printf_alloc(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *printf_alloc(const char *fmt, ...)
{
    va_list ap;
    int n;
    char *p;
    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    p = mr_malloc((size_t)n + 1);
    if (p == NULL) return NULL;
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

/* The relative path of `path` under root ("" for root), or NULL if outside. */
static const char *rel_of(const char *root, const char *path)
{
    size_t l = strlen(root);
    if (strncmp(path, root, l) != 0) return NULL;
    if (path[l] == '\0') return path + l;
    if (path[l] != '/') return NULL;
    return path + l + 1;
}

static char *dir_image_path(const char *image, const char *rel)
{
    char *p = printf_alloc("%s/dirs/%s", image, rel[0] ? rel : "@");
    char *q;
    if (p == NULL) return NULL;
    for (q = p + strlen(image) + 6; *q; q++)
        if (*q == '/') *q = '+';
    return p;
}

static char *file_image_path(const char *image, uint64_t id)
{
    return printf_alloc("%s/files/%" PRIu64, image, id);
}

/* Writes buf to path through a temp file and rename (atomic under SIGKILL). */
static int put_file(const char *path, const void *buf, size_t n)
{
    char *tmp = printf_alloc("%s.tmp", path);
    int fd, rv = 0;
    if (tmp == NULL) return MR_ENOMEM;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rv = -errno;
    } else {
        rv = mr_store__write_all(mr_store_fs_default(), fd, buf, n, 0);
        close(fd);
        if (rv == 0 && rename(tmp, path) != 0) rv = -errno;
    }
    if (rv != 0) unlink(tmp);
    mr_free(tmp);
    return rv;
}

static ssize_t pread_full(int fd, unsigned char *buf, size_t n, uint64_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, buf + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -errno;
        if (r == 0) break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

static int is_zero(const unsigned char *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* Copies [start, end) of src into dst. compare 1: only chunks that differ
 * from dst are written; compare 2: dst reads as zeros, chunks of zeros are
 * skipped (both keep the copy sparse). */
static int copy_range(int src, int dst, uint64_t start, uint64_t end, int compare)
{
    unsigned char a[CHUNK], b[CHUNK];
    while (start < end) {
        size_t n = end - start < CHUNK ? (size_t)(end - start) : CHUNK;
        ssize_t r = pread_full(src, a, n, start);
        int rv;
        if (r < 0) return (int)r;
        if (r == 0) break;
        n = (size_t)r;
        if (compare == 2 && is_zero(a, n)) {
            start += n;
            continue;
        }
        if (compare == 1) {
            ssize_t r2 = pread_full(dst, b, n, start);
            if (r2 < 0) return (int)r2;
            if ((size_t)r2 == n && memcmp(a, b, n) == 0) {
                start += n;
                continue;
            }
        }
        rv = mr_store__write_all(mr_store_fs_default(), dst, a, n, (off_t)start);
        if (rv != 0) return rv;
        start += n;
    }
    return 0;
}

/* ---- the in-memory tables ------------------------------------------------- */

static struct pl_file *file_by_ino(struct mr_store_powerloss *pl, uint64_t ino)
{
    size_t i;
    for (i = 0; i < pl->n_files; i++)
        if (pl->files[i].ino == ino) return &pl->files[i];
    return NULL;
}

static void file_drop(struct mr_store_powerloss *pl, struct pl_file *f)
{
    mr_free(f->ranges);
    *f = pl->files[--pl->n_files];
}

/* A new file id for inode `ino` (an older file that had that inode number is
 * dead: its id lives on only in directory images). */
static struct pl_file *file_add(struct mr_store_powerloss *pl, uint64_t ino,
                                uint64_t size)
{
    struct pl_file *f = file_by_ino(pl, ino);
    if (f != NULL) file_drop(pl, f);
    if (pl->n_files == pl->cap_files) {
        size_t nc = pl->cap_files ? pl->cap_files * 2 : 16;
        struct pl_file *p = mr_realloc(pl->files, nc * sizeof *p);
        if (p == NULL) return NULL;
        pl->files = p;
        pl->cap_files = nc;
    }
    f = &pl->files[pl->n_files++];
    memset(f, 0, sizeof *f);
    f->ino = ino;
    f->id = pl->next_id++;
    f->min_size = size;
    f->known = size;
    f->is_whole = 1; /* unknown content: compare all at the first sync */
    return f;
}

static int range_add(struct pl_file *f, uint64_t start, uint64_t end)
{
    size_t i;
    if (start >= end) return 0;
    for (i = 0; i < f->n_ranges; i++) {
        struct range *r = &f->ranges[i];
        if (start <= r->end && end >= r->start) { /* overlaps or touches */
            if (start < r->start) r->start = start;
            if (end > r->end) r->end = end;
            return 0;
        }
    }
    if (f->n_ranges == f->cap_ranges) {
        size_t nc = f->cap_ranges ? f->cap_ranges * 2 : 4;
        struct range *p = mr_realloc(f->ranges, nc * sizeof *p);
        if (p == NULL) return MR_ENOMEM;
        f->ranges = p;
        f->cap_ranges = nc;
    }
    f->ranges[f->n_ranges].start = start;
    f->ranges[f->n_ranges].end = end;
    f->n_ranges++;
    return 0;
}

static int map_save(struct mr_store_powerloss *pl)
{
    size_t i, cap = 64 + pl->n_files * 48, len = 0;
    char *buf = mr_malloc(cap), *path;
    int rv;
    if (buf == NULL) return MR_ENOMEM;
    len += (size_t)snprintf(buf + len, cap - len, "next %" PRIu64 "\n", pl->next_id);
    for (i = 0; i < pl->n_files; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%" PRIu64 " %" PRIu64 "\n",
                                pl->files[i].ino, pl->files[i].id);
    path = path2(pl->image, "map");
    rv = path == NULL ? MR_ENOMEM : put_file(path, buf, len);
    mr_free(path);
    mr_free(buf);
    return rv;
}

static int map_load(struct mr_store_powerloss *pl)
{
    char *path = path2(pl->image, "map");
    unsigned char *buf;
    uint64_t size;
    char *line, *save = NULL;
    int rv;
    if (path == NULL) return MR_ENOMEM;
    rv = mr_store__read_file(path, &buf, &size);
    mr_free(path);
    if (rv != 0) return rv;
    buf = mr_realloc(buf, (size_t)size + 1);
    if (buf == NULL) return MR_ENOMEM;
    buf[size] = '\0';
    for (line = strtok_r((char *)buf, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        unsigned long long a, b;
        struct pl_file *f;
        if (sscanf(line, "next %llu", &a) == 1) {
            pl->next_id = a;
        } else if (sscanf(line, "%llu %llu", &a, &b) == 2) {
            f = file_add(pl, a, 0);
            if (f == NULL) {
                mr_free(buf);
                return MR_ENOMEM;
            }
            pl->next_id--; /* file_add took one */
            f->id = b;
            f->min_size = f->known = UINT64_MAX; /* is_whole: compare it all */
        }
    }
    mr_free(buf);
    return 0;
}

static struct pl_fd *fd_slot(struct mr_store_powerloss *pl, int fd)
{
    if ((size_t)fd >= pl->n_fds) {
        size_t nc = (size_t)fd + 64;
        struct pl_fd *p = mr_realloc(pl->fds, nc * sizeof *p);
        if (p == NULL) return NULL;
        memset(p + pl->n_fds, 0, (nc - pl->n_fds) * sizeof *p);
        pl->fds = p;
        pl->n_fds = nc;
    }
    return &pl->fds[fd];
}

static struct pl_fd *fd_get(struct mr_store_powerloss *pl, int fd)
{
    if (fd < 0 || (size_t)fd >= pl->n_fds || pl->fds[fd].kind == 0) return NULL;
    return &pl->fds[fd];
}

/* ---- durable steps ----------------------------------------------------------- */

static int sync_file_from(struct mr_store_powerloss *pl, int fd, struct pl_file *f);

/* fdatasync/fsync of a file: its image becomes what the real file holds. */
static int sync_file(struct mr_store_powerloss *pl, int fd, struct pl_file *f)
{
    int rv;
    char self[64];
    int rfd;
    /* the fd may be write-only: read the inode through /proc */
    snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
    rfd = open(self, O_RDONLY | O_CLOEXEC);
    if (rfd < 0) return -errno;
    rv = sync_file_from(pl, rfd, f);
    close(rfd);
    return rv;
}

static int sync_file_from(struct mr_store_powerloss *pl, int fd, struct pl_file *f)
{
    struct stat sb;
    char *path;
    uint64_t size;
    size_t i;
    int img, rv = 0;
    if (fstat(fd, &sb) != 0) return -errno;
    size = (uint64_t)sb.st_size;
    if (size > f->known) rv = range_add(f, f->known, size); /* writes past the seam */
    if (rv != 0) return rv;
    path = file_image_path(pl->image, f->id);
    if (path == NULL) return MR_ENOMEM;
    img = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    mr_free(path);
    if (img < 0) return -errno;
    if (ftruncate(img, (off_t)(f->min_size < size ? f->min_size : size)) != 0 ||
        ftruncate(img, (off_t)size) != 0)
        rv = -errno;
    if (rv == 0 && f->is_whole) {
        rv = copy_range(fd, img, 0, size, 1);
    } else {
        for (i = 0; i < f->n_ranges && rv == 0; i++)
            rv = copy_range(fd, img, f->ranges[i].start,
                            f->ranges[i].end < size ? f->ranges[i].end : size, 0);
    }
    close(img);
    if (rv != 0) return rv;
    f->is_whole = 0;
    f->n_ranges = 0;
    f->min_size = f->known = size;
    return 0;
}

/* Lists the real directory `rel` as image lines (assigning ids to files the
 * layer has not seen). */
static int list_dir(struct mr_store_powerloss *pl, const char *rel, char **out,
                    size_t *len, int *map_dirty)
{
    char *dpath = rel[0] ? path2(pl->root, rel) : mr_strdup(pl->root);
    size_t cap = 256, l = 0;
    char *buf = mr_malloc(cap);
    struct dirent *de;
    DIR *d;
    int rv = 0;
    *out = NULL;
    if (dpath == NULL || buf == NULL) {
        mr_free(dpath);
        mr_free(buf);
        return MR_ENOMEM;
    }
    d = opendir(dpath);
    if (d == NULL) rv = -errno;
    while (rv == 0 && (de = readdir(d)) != NULL) {
        struct stat sb;
        char *p;
        char line[600];
        int n;
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        p = path2(dpath, de->d_name);
        if (p == NULL) {
            rv = MR_ENOMEM;
            break;
        }
        if (lstat(p, &sb) != 0) {
            mr_free(p);
            continue; /* vanished meanwhile */
        }
        mr_free(p);
        if (S_ISDIR(sb.st_mode)) {
            n = snprintf(line, sizeof line, "d 0 %s\n", de->d_name);
        } else if (S_ISREG(sb.st_mode)) {
            struct pl_file *f = file_by_ino(pl, (uint64_t)sb.st_ino);
            if (f == NULL) {
                f = file_add(pl, (uint64_t)sb.st_ino, (uint64_t)sb.st_size);
                if (f == NULL) {
                    rv = MR_ENOMEM;
                    break;
                }
                *map_dirty = 1;
            }
            n = snprintf(line, sizeof line, "f %" PRIu64 " %s\n", f->id, de->d_name);
        } else {
            continue;
        }
        if (l + (size_t)n + 1 > cap) {
            char *q;
            while (l + (size_t)n + 1 > cap) cap *= 2;
            q = mr_realloc(buf, cap);
            if (q == NULL) {
                rv = MR_ENOMEM;
                break;
            }
            buf = q;
        }
        memcpy(buf + l, line, (size_t)n);
        l += (size_t)n;
    }
    if (d != NULL) closedir(d);
    mr_free(dpath);
    if (rv != 0) {
        mr_free(buf);
        return rv;
    }
    *out = buf;
    *len = l;
    return 0;
}

/* fsync of a directory: its image becomes its current entries. */
static int sync_dir(struct mr_store_powerloss *pl, const char *rel)
{
    char *buf, *path;
    size_t len;
    int map_dirty = 0;
    int rv = list_dir(pl, rel, &buf, &len, &map_dirty);
    if (rv != 0) return rv;
    if (map_dirty) rv = map_save(pl);
    path = dir_image_path(pl->image, rel);
    if (rv == 0) rv = path == NULL ? MR_ENOMEM : put_file(path, buf, len);
    mr_free(path);
    mr_free(buf);
    return rv;
}

/* First use of an image dir: everything in the data dir counts as durable. */
static int capture_all(struct mr_store_powerloss *pl, const char *rel)
{
    char *buf, *line, *save = NULL;
    size_t len;
    int map_dirty = 0, rv;
    rv = sync_dir(pl, rel);
    if (rv != 0) return rv;
    rv = list_dir(pl, rel, &buf, &len, &map_dirty);
    if (rv != 0) return rv;
    buf[len] = '\0';
    for (line = strtok_r(buf, "\n", &save); line != NULL && rv == 0;
         line = strtok_r(NULL, "\n", &save)) {
        char *name = strchr(strchr(line, ' ') + 1, ' ') + 1;
        char *sub = rel[0] ? printf_alloc("%s/%s", rel, name) : mr_strdup(name);
        char *p = sub != NULL ? path2(pl->root, sub) : NULL;
        if (p == NULL) {
            rv = MR_ENOMEM;
        } else if (line[0] == 'd') {
            rv = capture_all(pl, sub);
        } else {
            struct stat sb;
            int fd = open(p, O_RDONLY | O_CLOEXEC);
            if (fd < 0 || fstat(fd, &sb) != 0) {
                rv = -errno;
            } else {
                struct pl_file *f = file_by_ino(pl, (uint64_t)sb.st_ino);
                rv = sync_file(pl, fd, f);
            }
            if (fd >= 0) close(fd);
        }
        mr_free(p);
        mr_free(sub);
    }
    mr_free(buf);
    return rv;
}

/* ---- the seam ------------------------------------------------------------------- */

static int pl_open(void *ctx, const char *path, int flags, int mode)
{
    struct mr_store_powerloss *pl = ctx;
    const struct mr_store_fs *real = mr_store_fs_default();
    const char *rel = rel_of(pl->root, path);
    struct stat sb;
    struct pl_fd *slot;
    struct pl_file *f;
    int existed, fd;
    if (rel == NULL) return real->open(real->ctx, path, flags, mode);
    pthread_mutex_lock(&pl->mu);
    existed = lstat(path, &sb) == 0;
    fd = real->open(real->ctx, path, flags, mode);
    if (fd < 0) goto out;
    if (fstat(fd, &sb) != 0 || (slot = fd_slot(pl, fd)) == NULL) {
        real->close(real->ctx, fd);
        fd = MR_ENOMEM;
        goto out;
    }
    mr_free(slot->rel);
    slot->rel = NULL;
    slot->ino = (uint64_t)sb.st_ino;
    if (S_ISDIR(sb.st_mode)) {
        slot->kind = 2;
        slot->rel = mr_strdup(rel);
        if (slot->rel == NULL) {
            slot->kind = 0;
            real->close(real->ctx, fd);
            fd = MR_ENOMEM;
        }
        goto out;
    }
    slot->kind = 1;
    f = existed ? file_by_ino(pl, slot->ino) : NULL;
    if (f == NULL) {
        /* Created now (no durable content yet), or never seen before. */
        f = file_add(pl, slot->ino, 0);
        if (f == NULL || map_save(pl) != 0) {
            slot->kind = 0;
            real->close(real->ctx, fd);
            fd = MR_ENOMEM;
            goto out;
        }
        f->is_whole = existed;
        f->known = (uint64_t)sb.st_size;
    } else if ((flags & O_TRUNC) && (flags & O_ACCMODE) != O_RDONLY) {
        f->min_size = 0;
        f->known = 0;
        f->n_ranges = 0;
    }
out:
    pthread_mutex_unlock(&pl->mu);
    return fd;
}

static int pl_close(void *ctx, int fd)
{
    struct mr_store_powerloss *pl = ctx;
    const struct mr_store_fs *real = mr_store_fs_default();
    struct pl_fd *s;
    pthread_mutex_lock(&pl->mu);
    s = fd_get(pl, fd);
    if (s != NULL) {
        mr_free(s->rel);
        memset(s, 0, sizeof *s);
    }
    pthread_mutex_unlock(&pl->mu);
    return real->close(real->ctx, fd);
}

static ssize_t pl_pwrite(void *ctx, int fd, const void *buf, size_t n, off_t off)
{
    struct mr_store_powerloss *pl = ctx;
    const struct mr_store_fs *real = mr_store_fs_default();
    struct pl_fd *s;
    ssize_t w;
    pthread_mutex_lock(&pl->mu);
    w = real->pwrite(real->ctx, fd, buf, n, off);
    s = fd_get(pl, fd);
    if (w > 0 && s != NULL && s->kind == 1) {
        struct pl_file *f = file_by_ino(pl, s->ino);
        uint64_t end = (uint64_t)off + (uint64_t)w;
        if (f != NULL) {
            if (range_add(f, (uint64_t)off, end) != 0) f->is_whole = 1;
            if (end > f->known) f->known = end;
        }
    }
    pthread_mutex_unlock(&pl->mu);
    return w;
}

static int pl_sync(struct mr_store_powerloss *pl, int fd, int is_data)
{
    const struct mr_store_fs *real = mr_store_fs_default();
    struct pl_fd *s;
    int rv;
    pthread_mutex_lock(&pl->mu);
    s = fd_get(pl, fd);
    if (pl->sync_delay_ms > 0 && s != NULL && s->kind == 1) /* one disk queue */
        usleep(pl->sync_delay_ms * 1000u);
    rv = is_data ? real->fdatasync(real->ctx, fd) : real->fsync(real->ctx, fd);
    if (rv == 0 && s != NULL) {
        if (s->kind == 2) {
            rv = sync_dir(pl, s->rel);
        } else {
            struct pl_file *f = file_by_ino(pl, s->ino);
            if (f != NULL) rv = sync_file(pl, fd, f);
        }
    }
    pthread_mutex_unlock(&pl->mu);
    return rv;
}

static int pl_fdatasync(void *ctx, int fd)
{
    return pl_sync(ctx, fd, 1);
}

static int pl_fsync(void *ctx, int fd)
{
    return pl_sync(ctx, fd, 0);
}

static int pl_rename(void *ctx, const char *from, const char *to)
{
    const struct mr_store_fs *real = mr_store_fs_default();
    (void)ctx; /* entries change durably only at the directory's fsync */
    return real->rename(real->ctx, from, to);
}

static int pl_unlink(void *ctx, const char *path)
{
    const struct mr_store_fs *real = mr_store_fs_default();
    (void)ctx;
    return real->unlink(real->ctx, path);
}

static int pl_ftruncate(void *ctx, int fd, off_t len)
{
    struct mr_store_powerloss *pl = ctx;
    const struct mr_store_fs *real = mr_store_fs_default();
    struct pl_fd *s;
    int rv;
    pthread_mutex_lock(&pl->mu);
    rv = real->ftruncate(real->ctx, fd, len);
    s = fd_get(pl, fd);
    if (rv == 0 && s != NULL && s->kind == 1) {
        struct pl_file *f = file_by_ino(pl, s->ino);
        uint64_t l = (uint64_t)len;
        size_t i;
        if (f != NULL) {
            if (l < f->min_size) f->min_size = l;
            f->known = l;
            for (i = 0; i < f->n_ranges; i++) {
                if (f->ranges[i].end > l) f->ranges[i].end = l;
                if (f->ranges[i].start > l) f->ranges[i].start = l;
            }
        }
    }
    pthread_mutex_unlock(&pl->mu);
    return rv;
}

static int pl_fallocate(void *ctx, int fd, off_t off, off_t len)
{
    struct mr_store_powerloss *pl = ctx;
    const struct mr_store_fs *real = mr_store_fs_default();
    struct pl_fd *s;
    int rv;
    pthread_mutex_lock(&pl->mu);
    rv = real->fallocate(real->ctx, fd, off, len);
    s = fd_get(pl, fd);
    if (rv == 0 && s != NULL && s->kind == 1) {
        struct pl_file *f = file_by_ino(pl, s->ino);
        uint64_t end = (uint64_t)off + (uint64_t)len;
        if (f != NULL && end > f->known) f->known = end; /* zeros: the size says it */
    }
    pthread_mutex_unlock(&pl->mu);
    return rv;
}

/* ---- open / close ----------------------------------------------------------------- */

static int mkdir_p(const char *dir)
{
    char path[4096];
    size_t len = strlen(dir);
    char *p;
    if (len == 0 || len >= sizeof path) return -ENAMETOOLONG;
    memcpy(path, dir, len + 1);
    for (p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST) return -errno;
        *p = '/';
    }
    if (mkdir(path, 0755) != 0 && errno != EEXIST) return -errno;
    return 0;
}

static char *strip_slash(const char *s)
{
    char *p = mr_strdup(s);
    size_t l;
    if (p == NULL) return NULL;
    l = strlen(p);
    while (l > 1 && p[l - 1] == '/') p[--l] = '\0';
    return p;
}

void mr_store_powerloss_close(struct mr_store_powerloss *pl)
{
    size_t i;
    if (pl == NULL) return;
    for (i = 0; i < pl->n_files; i++) mr_free(pl->files[i].ranges);
    for (i = 0; i < pl->n_fds; i++) mr_free(pl->fds[i].rel);
    mr_free(pl->files);
    mr_free(pl->fds);
    mr_free(pl->root);
    mr_free(pl->image);
    pthread_mutex_destroy(&pl->mu);
    mr_free(pl);
}

int mr_store_powerloss_open(const char *data_dir, const char *image_dir,
                            struct mr_store_powerloss **out, char *errmsg)
{
    struct mr_store_powerloss *pl;
    struct stat sb;
    char *p;
    int rv, is_new;
    *out = NULL;
    pl = mr_calloc(1, sizeof *pl);
    if (pl == NULL) return MR_ENOMEM;
    pthread_mutex_init(&pl->mu, NULL);
    pl->root = strip_slash(data_dir);
    pl->image = strip_slash(image_dir);
    pl->next_id = 1;
    pl->fs.ctx = pl;
    pl->fs.open = pl_open;
    pl->fs.close = pl_close;
    pl->fs.pwrite = pl_pwrite;
    pl->fs.fdatasync = pl_fdatasync;
    pl->fs.fsync = pl_fsync;
    pl->fs.rename = pl_rename;
    pl->fs.ftruncate = pl_ftruncate;
    pl->fs.fallocate = pl_fallocate;
    pl->fs.unlink = pl_unlink;
    if (pl->root == NULL || pl->image == NULL) {
        rv = MR_ENOMEM;
        goto fail;
    }
    rv = mkdir_p(pl->root);
    if (rv == 0) rv = mkdir_p(pl->image);
    p = path2(pl->image, "files");
    if (rv == 0) rv = p == NULL ? MR_ENOMEM : mkdir_p(p);
    mr_free(p);
    p = path2(pl->image, "dirs");
    if (rv == 0) rv = p == NULL ? MR_ENOMEM : mkdir_p(p);
    mr_free(p);
    if (rv != 0) {
        mr_errmsg_printf(errmsg, "powerloss: %s: %s", pl->image, mr_strerror(rv));
        goto fail;
    }
    p = path2(pl->image, "map");
    is_new = p != NULL && stat(p, &sb) != 0;
    mr_free(p);
    rv = is_new ? capture_all(pl, "") : map_load(pl);
    if (rv == 0 && is_new) rv = map_save(pl);
    if (rv != 0) {
        mr_errmsg_printf(errmsg, "powerloss: %s: %s", is_new ? "capture" : "load map",
                         mr_strerror(rv));
        goto fail;
    }
    *out = pl;
    return 0;
fail:
    mr_store_powerloss_close(pl);
    return rv;
}

const struct mr_store_fs *mr_store_powerloss_fs(struct mr_store_powerloss *pl)
{
    return &pl->fs;
}

void mr_store_powerloss_set_sync_delay(struct mr_store_powerloss *pl, unsigned ms)
{
    pthread_mutex_lock(&pl->mu);
    pl->sync_delay_ms = ms;
    pthread_mutex_unlock(&pl->mu);
}

/* ---- the power cut ------------------------------------------------------------------
 */

static int remove_tree(const char *dir, int keep_top)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int rv = 0;
    if (d == NULL) return errno == ENOENT ? 0 : -errno;
    while (rv == 0 && (de = readdir(d)) != NULL) {
        struct stat sb;
        char *p;
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        p = path2(dir, de->d_name);
        if (p == NULL) {
            rv = MR_ENOMEM;
            break;
        }
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
            rv = remove_tree(p, 0);
        else if (unlink(p) != 0)
            rv = -errno;
        mr_free(p);
    }
    closedir(d);
    if (rv == 0 && !keep_top && rmdir(dir) != 0) rv = -errno;
    return rv;
}

/* Rebuilds directory `rel` from its image (none: it never had a durable
 * entry, so it is empty). Records every new inode in pl->files. */
static int rebuild(struct mr_store_powerloss *pl, const char *rel)
{
    char *ipath = dir_image_path(pl->image, rel);
    unsigned char *buf = NULL;
    uint64_t size = 0;
    char *line, *save = NULL;
    int rv;
    if (ipath == NULL) return MR_ENOMEM;
    rv = mr_store__read_file(ipath, &buf, &size);
    mr_free(ipath);
    if (rv == -ENOENT) return 0;
    if (rv != 0) return rv;
    if (buf == NULL) return 0;
    buf = mr_realloc(buf, (size_t)size + 1);
    if (buf == NULL) return MR_ENOMEM;
    buf[size] = '\0';
    for (line = strtok_r((char *)buf, "\n", &save); line != NULL && rv == 0;
         line = strtok_r(NULL, "\n", &save)) {
        unsigned long long id;
        char kind;
        int off = 0;
        char *sub, *p;
        if (sscanf(line, "%c %llu %n", &kind, &id, &off) < 2 || off == 0) {
            rv = MR_ECORRUPT;
            break;
        }
        sub = rel[0] ? printf_alloc("%s/%s", rel, line + off) : mr_strdup(line + off);
        p = sub != NULL ? path2(pl->root, sub) : NULL;
        if (p == NULL) {
            rv = MR_ENOMEM;
        } else if (kind == 'd') {
            rv = mkdir(p, 0755) == 0 ? rebuild(pl, sub) : -errno;
        } else {
            /* (a second name of the same file becomes a copy: storage never
             * makes hard links) */
            {
                char *fp = file_image_path(pl->image, id);
                struct stat sb;
                int src, dst = open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
                if (dst < 0 || fp == NULL) {
                    rv = dst < 0 ? -errno : MR_ENOMEM;
                } else {
                    src = open(fp, O_RDONLY | O_CLOEXEC);
                    if (src >= 0) {
                        if (fstat(src, &sb) == 0 && ftruncate(dst, sb.st_size) == 0)
                            rv = copy_range(src, dst, 0, (uint64_t)sb.st_size, 2);
                        else
                            rv = -errno;
                        close(src);
                    } else if (errno != ENOENT) {
                        rv = -errno;
                    }
                    if (rv == 0 && fstat(dst, &sb) == 0) {
                        struct pl_file *nf = file_add(pl, (uint64_t)sb.st_ino, 0);
                        if (nf == NULL) {
                            rv = MR_ENOMEM;
                        } else {
                            pl->next_id--;
                            nf->id = id;
                        }
                    }
                }
                if (dst >= 0) close(dst);
                mr_free(fp);
            }
        }
        mr_free(p);
        mr_free(sub);
    }
    mr_free(buf);
    return rv;
}

/* Deletes file images no directory image names any more. */
static void collect_garbage(struct mr_store_powerloss *pl)
{
    char *dir = path2(pl->image, "files");
    DIR *d = dir != NULL ? opendir(dir) : NULL;
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL) {
        char *end;
        unsigned long long id = strtoull(de->d_name, &end, 10);
        size_t i;
        int used = 0;
        if (de->d_name[0] == '.' || *end != '\0') continue;
        for (i = 0; i < pl->n_files && !used; i++) used = pl->files[i].id == id;
        if (!used) {
            char *p = path2(dir, de->d_name);
            if (p != NULL) unlink(p);
            mr_free(p);
        }
    }
    if (d != NULL) closedir(d);
    mr_free(dir);
}

int mr_store_powerloss_cut(const char *data_dir, const char *image_dir, char *errmsg)
{
    struct mr_store_powerloss *pl;
    struct stat sb;
    char *p;
    int rv;
    pl = mr_calloc(1, sizeof *pl);
    if (pl == NULL) return MR_ENOMEM;
    pthread_mutex_init(&pl->mu, NULL);
    pl->root = strip_slash(data_dir);
    pl->image = strip_slash(image_dir);
    if (pl->root == NULL || pl->image == NULL) {
        mr_store_powerloss_close(pl);
        return MR_ENOMEM;
    }
    p = path2(pl->image, "map");
    rv = p == NULL ? MR_ENOMEM : stat(p, &sb) == 0 ? 0 : -errno;
    mr_free(p);
    if (rv != 0) {
        mr_errmsg_printf(errmsg, "powercut: %s: no power-loss image (%s)", pl->image,
                         mr_strerror(rv));
        mr_store_powerloss_close(pl);
        return rv == -ENOENT ? MR_ENOTFOUND : rv;
    }
    rv = map_load(pl); /* for next_id only: the inodes are all replaced */
    for (size_t i = 0; i < pl->n_files; i++) mr_free(pl->files[i].ranges);
    pl->n_files = 0;
    if (rv == 0) rv = remove_tree(pl->root, 1);
    if (rv == 0) rv = rebuild(pl, "");
    if (rv == 0) rv = map_save(pl);
    if (rv == 0) collect_garbage(pl);
    if (rv != 0) mr_errmsg_printf(errmsg, "powercut: %s: %s", pl->root, mr_strerror(rv));
    mr_store_powerloss_close(pl);
    return rv;
}
