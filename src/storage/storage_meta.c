/* storage: the metadata file (term, vote, ids, log start).
 *
 * Fixed 64 bytes: magic "MRMETA01", u64 term, vote, node id, cluster id,
 * log start, 12 reserved zero bytes, u32 CRC32C of bytes 0..59. It is replaced
 * atomically (temp file, fsync, rename, fsync of the directory), so a crash
 * at any step leaves either the old or the new file in place. */
#include "storage/storage_int.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>

void mr_store__meta_encode(const struct mr_store_meta *m, unsigned char *p)
{
    memset(p, 0, META_SIZE);
    memcpy(p, META_MAGIC, 8);
    mr_put_u64(p + 8, m->term);
    mr_put_u64(p + 16, m->vote);
    mr_put_u64(p + 24, m->node_id);
    mr_put_u64(p + 32, m->cluster_id);
    mr_put_u64(p + 40, m->log_start);
    mr_put_u32(p + 60, mr_crc32c(0, p, 60));
}

int mr_store__meta_read(const char *dir, struct mr_store_meta *m, char *errmsg)
{
    unsigned char *buf;
    uint64_t size;
    char *path = mr_store__join(dir, META_NAME);
    int rv;
    if (path == NULL) return MR_ENOMEM;
    rv = mr_store__read_file(path, &buf, &size);
    mr_free(path);
    if (rv == -ENOENT) {
        mr_errmsg_printf(errmsg, "meta: missing");
        return MR_ENOTFOUND;
    }
    if (rv != 0) {
        mr_errmsg_printf(errmsg, "meta: read: %s", mr_strerror(rv));
        return rv;
    }
    rv = MR_ECORRUPT;
    if (size != META_SIZE) {
        mr_errmsg_printf(errmsg, "meta offset 0: size %llu, expected %u",
                         (unsigned long long)size, META_SIZE);
    } else if (memcmp(buf, META_MAGIC, 8) != 0) {
        mr_errmsg_printf(errmsg, "meta offset 0: bad magic");
    } else if (mr_get_u32(buf + 60) != mr_crc32c(0, buf, 60)) {
        mr_errmsg_printf(errmsg, "meta offset 60: checksum mismatch");
    } else {
        m->term = mr_get_u64(buf + 8);
        m->vote = mr_get_u64(buf + 16);
        m->node_id = mr_get_u64(buf + 24);
        m->cluster_id = mr_get_u64(buf + 32);
        m->log_start = mr_get_u64(buf + 40);
        rv = 0;
    }
    mr_free(buf);
    return rv;
}

int mr_store__meta_write(const struct mr_store_fs *fs, const char *dir,
                         const struct mr_store_meta *m, char *errmsg)
{
    unsigned char buf[META_SIZE];
    char *tmp = mr_store__join(dir, META_TMP_NAME);
    char *path = mr_store__join(dir, META_NAME);
    const char *step = "open meta.tmp";
    int fd = -1, rv;
    if (tmp == NULL || path == NULL) {
        rv = MR_ENOMEM;
        goto out;
    }
    mr_store__meta_encode(m, buf);
    fd = fs->open(fs->ctx, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        rv = fd;
        goto out;
    }
    step = "write meta.tmp";
    rv = mr_store__write_all(fs, fd, buf, sizeof buf, 0);
    if (rv != 0) goto out;
    step = "fsync meta.tmp";
    rv = fs->fsync(fs->ctx, fd);
    if (rv != 0) goto out;
    fs->close(fs->ctx, fd);
    fd = -1;
    step = "rename meta.tmp";
    rv = fs->rename(fs->ctx, tmp, path);
    if (rv != 0) goto out;
    step = "fsync data dir";
    rv = mr_store__sync_dir(fs, dir);
out:
    if (fd >= 0) fs->close(fs->ctx, fd);
    /* a half-written meta.tmp only holds space (a full disk is retried) */
    if (rv != 0 && tmp != NULL && path != NULL) fs->unlink(fs->ctx, tmp);
    if (rv != 0) mr_errmsg_printf(errmsg, "meta: %s: %s", step, mr_strerror(rv));
    mr_free(tmp);
    mr_free(path);
    return rv;
}
