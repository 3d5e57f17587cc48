/* storage: the file-operation seam and small file helpers. */
#include "storage/storage_int.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int real_open(void *ctx, const char *path, int flags, int mode)
{
    int fd;
    (void)ctx;
    do {
        fd = open(path, flags | O_CLOEXEC, (mode_t)mode);
    } while (fd < 0 && errno == EINTR);
    return fd < 0 ? -errno : fd;
}

static int real_close(void *ctx, int fd)
{
    (void)ctx;
    /* EINTR on close must not be retried on Linux: the fd is gone. */
    return close(fd) == 0 || errno == EINTR ? 0 : -errno;
}

static ssize_t real_pwrite(void *ctx, int fd, const void *buf, size_t n, off_t off)
{
    ssize_t w;
    (void)ctx;
    do {
        w = pwrite(fd, buf, n, off);
    } while (w < 0 && errno == EINTR);
    return w < 0 ? -errno : w;
}

static int real_fdatasync(void *ctx, int fd)
{
    (void)ctx;
    /* No retry loop: a failed sync is final (the page state is unknown). */
    return fdatasync(fd) == 0 ? 0 : -errno;
}

static int real_fsync(void *ctx, int fd)
{
    (void)ctx;
    return fsync(fd) == 0 ? 0 : -errno;
}

static int real_rename(void *ctx, const char *from, const char *to)
{
    (void)ctx;
    return rename(from, to) == 0 ? 0 : -errno;
}

static int real_ftruncate(void *ctx, int fd, off_t len)
{
    int rv;
    (void)ctx;
    do {
        rv = ftruncate(fd, len);
    } while (rv < 0 && errno == EINTR);
    return rv == 0 ? 0 : -errno;
}

static int real_fallocate(void *ctx, int fd, off_t off, off_t len)
{
    int rv;
    (void)ctx;
    do {
        rv = posix_fallocate(fd, off, len);
    } while (rv == EINTR);
    return -rv;
}

static int real_unlink(void *ctx, const char *path)
{
    (void)ctx;
    return unlink(path) == 0 ? 0 : -errno;
}

static const struct mr_store_fs real_fs = {
    NULL,          real_open,      real_close,    real_pwrite,     real_fdatasync,
    real_fsync,    real_rename,    real_ftruncate, real_fallocate, real_unlink,
};

const struct mr_store_fs *mr_store_fs_default(void) { return &real_fs; }

int mr_store__write_all(const struct mr_store_fs *fs, int fd, const void *buf, size_t n,
                        off_t off)
{
    const unsigned char *p = buf;
    while (n > 0) {
        ssize_t w = fs->pwrite(fs->ctx, fd, p, n, off);
        if (w < 0) return (int)w;
        if (w == 0) return -EIO;
        p += w;
        n -= (size_t)w;
        off += w;
    }
    return 0;
}

int mr_store__sync_dir(const struct mr_store_fs *fs, const char *dir)
{
    int rv;
    int fd = fs->open(fs->ctx, dir, O_RDONLY | O_DIRECTORY, 0);
    if (fd < 0) return fd;
    rv = fs->fsync(fs->ctx, fd);
    fs->close(fs->ctx, fd);
    return rv;
}

int mr_store__read_file(const char *path, unsigned char **buf, uint64_t *size)
{
    struct stat sb;
    unsigned char *b = NULL;
    uint64_t got = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    *buf = NULL;
    *size = 0;
    if (fd < 0) return -errno;
    if (fstat(fd, &sb) != 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    if (sb.st_size > 0) {
        b = mr_malloc((size_t)sb.st_size);
        if (b == NULL) {
            close(fd);
            return MR_ENOMEM;
        }
        while (got < (uint64_t)sb.st_size) {
            ssize_t r = pread(fd, b + got, (size_t)((uint64_t)sb.st_size - got),
                              (off_t)got);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) {
                int e = -errno;
                mr_free(b);
                close(fd);
                return e;
            }
            if (r == 0) break; /* shrank meanwhile: use what we have */
            got += (uint64_t)r;
        }
    }
    close(fd);
    *buf = b;
    *size = got;
    return 0;
}

char *mr_store__join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *p = mr_malloc(la + lb + 2);
    if (p == NULL) return NULL;
    memcpy(p, a, la);
    p[la] = '/';
    memcpy(p + la + 1, b, lb + 1);
    return p;
}

int mr_store__is_disk_error(int rv) { return rv < 0 && rv > MR_E__BASE; }
