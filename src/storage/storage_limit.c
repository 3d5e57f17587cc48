/* storage: the space limit layer (max_data_mb, and the tests' full disk).
 *
 * Only calls that can make the data directory take more space are checked:
 * pwrite past a file's allocated blocks and fallocate past them. Everything
 * else (and every call that is allowed) goes to the inner seam unchanged.
 * Usage is measured, not tracked: the allocated blocks (st_blocks) of every
 * file under data_dir, summed at each checked call. Checked calls are rare
 * (WAL records go into preallocated segments: a segment's creation, a meta
 * write, a snapshot chunk), so the walk of a few dozen files costs little. */
#include "storage/storage_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct mr_store_limit {
    struct mr_store_fs fs; /* ours; fs.ctx == this */
    const struct mr_store_fs *inner;
    char *dir;
    char *fault_file;   /* NULL: none */
    uint64_t max_bytes; /* 0: none */
};

static uint64_t walk(const char *dir, int depth)
{
    uint64_t total = 0;
    struct dirent *de;
    DIR *d = opendir(dir);
    if (d == NULL) return 0;
    while ((de = readdir(d)) != NULL) {
        struct stat sb;
        char *p;
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        p = mr_store__join(dir, de->d_name);
        if (p == NULL) continue;
        if (lstat(p, &sb) == 0) {
            if (S_ISDIR(sb.st_mode)) {
                if (depth > 0) total += walk(p, depth - 1);
            } else if (S_ISREG(sb.st_mode)) {
                total += (uint64_t)sb.st_blocks * 512u;
            }
        }
        mr_free(p);
    }
    closedir(d);
    return total;
}

uint64_t mr_store_dir_usage(const char *data_dir)
{
    return walk(data_dir, 2);
}

/* The byte count in the fault file, or UINT64_MAX when it does not exist
 * (or holds no number). */
static uint64_t fault_limit(const struct mr_store_limit *l)
{
    char buf[32];
    ssize_t got;
    int fd;
    if (l->fault_file == NULL) return UINT64_MAX;
    fd = open(l->fault_file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return UINT64_MAX;
    got = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (got <= 0) return UINT64_MAX;
    buf[got] = '\0';
    if (buf[0] < '0' || buf[0] > '9') return UINT64_MAX;
    return strtoull(buf, NULL, 10);
}

/* 0 if `growth` more bytes fit, else -ENOSPC (fault file) or -EDQUOT. */
static int check(struct mr_store_limit *l, uint64_t growth)
{
    uint64_t fl = fault_limit(l), used;
    if (growth == 0 || (fl == UINT64_MAX && l->max_bytes == 0)) return 0;
    used = mr_store_dir_usage(l->dir);
    if (fl != UINT64_MAX && used + growth > fl) return -ENOSPC;
    if (l->max_bytes != 0 && used + growth > l->max_bytes) return -EDQUOT;
    return 0;
}

/* Bytes the file behind fd would grow by if [off, end) were written. */
static uint64_t growth_of(int fd, uint64_t end)
{
    struct stat sb;
    uint64_t have;
    if (fstat(fd, &sb) != 0) return 0; /* the real call will tell */
    have = (uint64_t)sb.st_blocks * 512u;
    return end > have ? end - have : 0;
}

static int l_open(void *ctx, const char *path, int flags, int mode)
{
    struct mr_store_limit *l = ctx;
    return l->inner->open(l->inner->ctx, path, flags, mode);
}

static int l_close(void *ctx, int fd)
{
    struct mr_store_limit *l = ctx;
    return l->inner->close(l->inner->ctx, fd);
}

static ssize_t l_pwrite(void *ctx, int fd, const void *buf, size_t n, off_t off)
{
    struct mr_store_limit *l = ctx;
    int rv = check(l, growth_of(fd, (uint64_t)off + n));
    if (rv != 0) return rv;
    return l->inner->pwrite(l->inner->ctx, fd, buf, n, off);
}

static int l_fdatasync(void *ctx, int fd)
{
    struct mr_store_limit *l = ctx;
    return l->inner->fdatasync(l->inner->ctx, fd);
}

static int l_fsync(void *ctx, int fd)
{
    struct mr_store_limit *l = ctx;
    return l->inner->fsync(l->inner->ctx, fd);
}

static int l_rename(void *ctx, const char *from, const char *to)
{
    struct mr_store_limit *l = ctx;
    return l->inner->rename(l->inner->ctx, from, to);
}

static int l_ftruncate(void *ctx, int fd, off_t len)
{
    struct mr_store_limit *l = ctx;
    return l->inner->ftruncate(l->inner->ctx, fd, len);
}

static int l_fallocate(void *ctx, int fd, off_t off, off_t len)
{
    struct mr_store_limit *l = ctx;
    int rv = check(l, growth_of(fd, (uint64_t)off + (uint64_t)len));
    if (rv != 0) return rv;
    return l->inner->fallocate(l->inner->ctx, fd, off, len);
}

static int l_unlink(void *ctx, const char *path)
{
    struct mr_store_limit *l = ctx;
    return l->inner->unlink(l->inner->ctx, path);
}

int mr_store_limit_open(const char *data_dir, const struct mr_store_fs *inner,
                        uint64_t max_bytes, const char *fault_file,
                        struct mr_store_limit **out)
{
    struct mr_store_limit *l = mr_calloc(1, sizeof *l);
    *out = NULL;
    if (l == NULL) return MR_ENOMEM;
    l->inner = inner != NULL ? inner : mr_store_fs_default();
    l->max_bytes = max_bytes;
    l->dir = mr_strdup(data_dir);
    l->fault_file = fault_file != NULL && fault_file[0] ? mr_strdup(fault_file) : NULL;
    if (l->dir == NULL ||
        (fault_file != NULL && fault_file[0] && l->fault_file == NULL)) {
        mr_store_limit_close(l);
        return MR_ENOMEM;
    }
    l->fs.ctx = l;
    l->fs.open = l_open;
    l->fs.close = l_close;
    l->fs.pwrite = l_pwrite;
    l->fs.fdatasync = l_fdatasync;
    l->fs.fsync = l_fsync;
    l->fs.rename = l_rename;
    l->fs.ftruncate = l_ftruncate;
    l->fs.fallocate = l_fallocate;
    l->fs.unlink = l_unlink;
    *out = l;
    return 0;
}

const struct mr_store_fs *mr_store_limit_fs(struct mr_store_limit *l)
{
    return &l->fs;
}

void mr_store_limit_close(struct mr_store_limit *l)
{
    if (l == NULL) return;
    mr_free(l->dir);
    mr_free(l->fault_file);
    mr_free(l);
}
