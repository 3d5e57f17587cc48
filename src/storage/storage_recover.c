/* storage: recovery at start (meta, newest snapshot, every WAL segment).
 *
 * The only damage repaired is the kind a crash produces: a torn write group
 * at the tail of the last segment, a torn header of a segment created just
 * before the crash, leftover temp files, older snapshots whose deletion
 * was interrupted, and a WAL that contradicts the snapshot (its entry at the
 * snapshot's index has another term: a snapshot installed from a leader and
 * a crash before the log reset; the WAL is dropped and `note` says so).
 * Anything else stops the node with MR_ECORRUPT naming the
 * file and byte offset. */
#include "storage/storage_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int mr_store__snap_open(const char *path, const char *relname,
                        struct mr_store_snap_reader **out, char *errmsg);

struct snap_name {
    mr_index index;
    mr_term term;
};

static int cmp_index(const void *a, const void *b)
{
    mr_index x = *(const mr_index *)a, y = *(const mr_index *)b;
    return x < y ? -1 : x > y;
}

static int cmp_snap(const void *a, const void *b)
{
    const struct snap_name *x = a, *y = b;
    if (x->index != y->index) return x->index < y->index ? -1 : 1;
    return x->term < y->term ? -1 : x->term > y->term;
}

/* Lists wal/ (segments) and snap/ (snapshots), removing temp files. */
static int list_dirs(const char *wal_dir, const char *snap_dir, int read_only,
                     const struct mr_store_fs *fs, mr_index **segs, size_t *n_segs,
                     struct snap_name **snaps, size_t *n_snaps, char *errmsg)
{
    DIR *d;
    struct dirent *de;
    size_t cap = 0;
    *segs = NULL;
    *snaps = NULL;
    *n_segs = *n_snaps = 0;
    d = opendir(wal_dir);
    if (d == NULL && errno != ENOENT) {
        mr_errmsg_printf(errmsg, "wal: %s", strerror(errno));
        return -errno;
    }
    while (d != NULL && (de = readdir(d)) != NULL) {
        mr_index first;
        if (!mr_store__seg_name_parse(de->d_name, &first)) continue;
        if (*n_segs == cap) {
            size_t nc = cap ? cap * 2 : 16;
            mr_index *p = mr_realloc(*segs, nc * sizeof *p);
            if (p == NULL) {
                closedir(d);
                return MR_ENOMEM;
            }
            *segs = p;
            cap = nc;
        }
        (*segs)[(*n_segs)++] = first;
    }
    if (d != NULL) closedir(d);
    if (*n_segs > 1) qsort(*segs, *n_segs, sizeof **segs, cmp_index);

    cap = 0;
    d = opendir(snap_dir);
    if (d == NULL && errno != ENOENT) {
        mr_errmsg_printf(errmsg, "snap: %s", strerror(errno));
        return -errno;
    }
    while (d != NULL && (de = readdir(d)) != NULL) {
        struct snap_name sn;
        size_t l = strlen(de->d_name);
        if (l > 5 && strcmp(de->d_name + l - 5, ".part") == 0) {
            if (!read_only) {
                char *p = mr_store__join(snap_dir, de->d_name);
                if (p == NULL) {
                    closedir(d);
                    return MR_ENOMEM;
                }
                fs->unlink(fs->ctx, p);
                mr_free(p);
            }
            continue;
        }
        if (!mr_store__snap_name_parse(de->d_name, &sn.index, &sn.term)) continue;
        if (*n_snaps == cap) {
            size_t nc = cap ? cap * 2 : 4;
            struct snap_name *p = mr_realloc(*snaps, nc * sizeof *p);
            if (p == NULL) {
                closedir(d);
                return MR_ENOMEM;
            }
            *snaps = p;
            cap = nc;
        }
        (*snaps)[(*n_snaps)++] = sn;
    }
    if (d != NULL) closedir(d);
    if (*n_snaps > 1) qsort(*snaps, *n_snaps, sizeof **snaps, cmp_snap);
    return 0;
}

struct collect {
    struct mr_store_recovered *rec;
    size_t cap;
    mr_index after; /* keep entries with index > after */
    mr_term term_at_after; /* term of the WAL record at `after` (0: none) */
    int is_collect;
    mr_store_rec_cb cb;
    void *cb_arg;
};

static int collect_cb(void *arg, const struct mr_store_rec *r)
{
    struct collect *c = arg;
    struct mr_store_recovered *rec = c->rec;
    struct mr_raft_entry *e;
    if (c->cb != NULL) {
        int rv = c->cb(c->cb_arg, r);
        if (rv != 0) return rv;
    }
    if (r->index == c->after) c->term_at_after = r->term;
    if (!c->is_collect || r->index <= c->after) return 0;
    if (rec->n_entries == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 1024;
        struct mr_raft_entry *p = mr_realloc(rec->entries, nc * sizeof *p);
        if (p == NULL) return MR_ENOMEM;
        rec->entries = p;
        c->cap = nc;
    }
    e = &rec->entries[rec->n_entries];
    memset(e, 0, sizeof *e); /* realloc'd: no field left to chance (evicted) */
    e->term = r->term;
    e->index = r->index;
    e->type = r->type;
    e->data = NULL;
    if (r->len > 0) {
        e->data = mr_rcbuf_copy(r->data, r->len);
        if (e->data == NULL) return MR_ENOMEM;
    }
    rec->n_entries++;
    return 0;
}

void mr_store_recovered_release(struct mr_store_recovered *rec)
{
    size_t i;
    if (rec == NULL) return;
    for (i = 0; i < rec->n_entries; i++) mr_rcbuf_unref(rec->entries[i].data);
    mr_free(rec->entries);
    mr_rcbuf_unref(rec->snap_conf);
    mr_free(rec->snap_path);
    memset(rec, 0, sizeof *rec);
}

void mr_store__recovery_free(struct mr_store_recovery *rs)
{
    mr_free(rs->segs);
    memset(rs, 0, sizeof *rs);
}

static void note_add(struct mr_store_recovered *rec, const char *msg)
{
    size_t l = strlen(rec->note);
    if (l > 0 && l + 2 < sizeof rec->note) {
        rec->note[l++] = ';';
        rec->note[l++] = ' ';
    }
    snprintf(rec->note + l, sizeof rec->note - l, "%s", msg);
}

/* Cuts a torn tail at `end` and restores the preallocation. */
static int cut_tail(const struct mr_store_fs *fs, const char *path, uint64_t end,
                    uint64_t alloc)
{
    int rv, fd = fs->open(fs->ctx, path, O_RDWR, 0);
    if (fd < 0) return fd;
    rv = fs->ftruncate(fs->ctx, fd, (off_t)end);
    if (rv == 0 && alloc > end) rv = fs->fallocate(fs->ctx, fd, 0, (off_t)alloc);
    if (rv == 0) rv = fs->fsync(fs->ctx, fd);
    fs->close(fs->ctx, fd);
    return rv;
}


/* mkdir + fsync of the parent, so the new entry survives a power cut (the
 * node's vote will live below it). 0, 1 if it existed, or -1 with errno. */
static int mkdir_durable(char *path)
{
    char *slash;
    int fd, rc;
    if (mkdir(path, 0755) != 0) return errno == EEXIST ? 1 : -1;
    slash = strrchr(path, '/');
    if (slash == path) {
        fd = open("/", O_RDONLY | O_DIRECTORY);
    } else if (slash == NULL) {
        fd = open(".", O_RDONLY | O_DIRECTORY);
    } else {
        *slash = '\0';
        fd = open(path, O_RDONLY | O_DIRECTORY);
        *slash = '/';
    }
    if (fd < 0) return -1;
    rc = fsync(fd);
    close(fd);
    return rc == 0 ? 0 : -1;
}

/* mkdir -p: creates dir and any missing parents (0755), each made durable.
 * 0 or -1 with errno. */
static int mkdir_parents(const char *dir)
{
    char path[4096];
    size_t len = strlen(dir);
    if (len == 0 || len >= sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(path, dir, len + 1);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/' || p[-1] == '/') continue;
        *p = '\0';
        if (mkdir_durable(path) < 0) return -1;
        *p = '/';
    }
    return mkdir_durable(path) < 0 ? -1 : 0;
}

int mr_store__recover(const char *dir, const struct mr_store_fs *fs, uint32_t seg_size,
                      int read_only, const struct mr_store_options *opts, int collect,
                      mr_store_rec_cb cb, void *cb_arg, struct mr_store_recovery *rs,
                      struct mr_store_recovered *rec, char *errmsg)
{
    char *wal_dir = NULL, *snap_dir = NULL, *path = NULL;
    mr_index *seg_names = NULL;
    struct snap_name *snaps = NULL;
    size_t n_seg_names = 0, n_snaps = 0, i;
    unsigned char *buf = NULL;
    struct collect c;
    mr_index S = 0;
    mr_term S_term = 0;
    int rv, contradicts;
    struct stat sb;

    memset(rs, 0, sizeof *rs);
    memset(rec, 0, sizeof *rec);
    wal_dir = mr_store__join(dir, "wal");
    snap_dir = mr_store__join(dir, "snap");
    if (wal_dir == NULL || snap_dir == NULL) {
        rv = MR_ENOMEM;
        goto fail;
    }
    if (stat(dir, &sb) != 0) {
        if (read_only || errno != ENOENT || mkdir_parents(dir) != 0) {
            rv = -errno;
            mr_errmsg_printf(errmsg, "%s: %s", dir, strerror(errno));
            goto fail;
        }
    }
    if (!read_only) {
        if ((mkdir(wal_dir, 0755) != 0 && errno != EEXIST) ||
            (mkdir(snap_dir, 0755) != 0 && errno != EEXIST)) {
            rv = -errno;
            mr_errmsg_printf(errmsg, "%s: mkdir: %s", dir, strerror(errno));
            goto fail;
        }
        rv = mr_store__sync_dir(fs, dir); /* the new wal/ and snap/ entries */
        if (rv != 0) {
            mr_errmsg_printf(errmsg, "%s: fsync: %s", dir, mr_strerror(rv));
            goto fail;
        }
    }
    rv = list_dirs(wal_dir, snap_dir, read_only, fs, &seg_names, &n_seg_names, &snaps,
                   &n_snaps, errmsg);
    if (rv != 0) goto fail;

    /* meta */
    rv = mr_store__meta_read(dir, &rs->meta, errmsg);
    if (rv == MR_ENOTFOUND) {
        if (n_seg_names > 0 || n_snaps > 0) {
            mr_errmsg_printf(errmsg,
                             "meta offset 0: missing, but wal/ or snap/ has data");
            rv = MR_ECORRUPT;
            goto fail;
        }
        memset(&rs->meta, 0, sizeof rs->meta);
        rs->meta.node_id = opts ? opts->node_id : 0;
        rs->meta.cluster_id = opts ? opts->cluster_id : 0;
        rs->meta.log_start = 1;
        rec->is_fresh = 1;
        if (!read_only) {
            rv = mr_store__meta_write(fs, dir, &rs->meta, errmsg);
            if (rv != 0) goto fail;
        }
    } else if (rv != 0) {
        goto fail;
    } else if (!read_only) {
        path = mr_store__join(dir, META_TMP_NAME);
        if (path == NULL) {
            rv = MR_ENOMEM;
            goto fail;
        }
        fs->unlink(fs->ctx, path); /* a write interrupted before rename */
        mr_free(path);
        path = NULL;
    }
    if (opts != NULL && ((opts->node_id != 0 && rs->meta.node_id != 0 &&
                          opts->node_id != rs->meta.node_id) ||
                         (opts->cluster_id != 0 && rs->meta.cluster_id != 0 &&
                          opts->cluster_id != rs->meta.cluster_id))) {
        mr_errmsg_printf(errmsg,
                         "meta: node id %" PRIu64 " / cluster id %" PRIu64
                         " differ from the configured %" PRIu64 " / %" PRIu64,
                         rs->meta.node_id, rs->meta.cluster_id, opts->node_id,
                         opts->cluster_id);
        rv = MR_ECONFIG;
        goto fail;
    }
    rec->term = rs->meta.term;
    rec->vote = rs->meta.vote;
    rec->node_id = rs->meta.node_id;
    rec->cluster_id = rs->meta.cluster_id;
    rec->log_start = rs->meta.log_start;

    /* newest snapshot; older ones are leftovers of an interrupted cleanup */
    if (n_snaps > 0) {
        struct mr_store_snap_reader *r;
        const struct mr_store_snap_info *info;
        char name[SNAP_NAME_LEN + 1], rel[SNAP_NAME_LEN + 8];
        struct snap_name *sn = &snaps[n_snaps - 1];
        mr_store__snap_name(name, sn->index, sn->term);
        snprintf(rel, sizeof rel, "snap/%s", name);
        path = mr_store__join(snap_dir, name);
        if (path == NULL) {
            rv = MR_ENOMEM;
            goto fail;
        }
        rv = mr_store__snap_open(path, rel, &r, errmsg);
        if (rv != 0) goto fail;
        rv = mr_store_snap_reader_verify(r, errmsg);
        info = mr_store_snap_reader_info(r);
        if (rv == 0 && (info->index != sn->index || info->term != sn->term)) {
            mr_errmsg_printf(errmsg,
                             "%s offset 8: header (%" PRIu64 ", %" PRIu64
                             ") does not match the file name",
                             rel, info->index, info->term);
            rv = MR_ECORRUPT;
        }
        if (rv != 0) {
            mr_store_snap_reader_close(r);
            goto fail;
        }
        rec->has_snapshot = 1;
        rec->snap_index = S = info->index;
        rec->snap_term = S_term = info->term;
        rec->snap_size = info->size;
        rec->snap_conf = mr_rcbuf_ref(info->conf);
        rec->snap_path = path;
        path = NULL;
        mr_store_snap_reader_close(r);
        for (i = 0; i + 1 < n_snaps && !read_only; i++) {
            mr_store__snap_name(name, snaps[i].index, snaps[i].term);
            path = mr_store__join(snap_dir, name);
            if (path == NULL) {
                rv = MR_ENOMEM;
                goto fail;
            }
            fs->unlink(fs->ctx, path);
            mr_free(path);
            path = NULL;
        }
        if (n_snaps > 1 && !read_only) mr_store__sync_dir(fs, snap_dir); /* best effort */
    }
    if (rs->meta.log_start > S + 1) {
        mr_errmsg_printf(errmsg,
                         "meta offset 40: log was compacted up to %" PRIu64
                         " but the newest snapshot ends at %" PRIu64,
                         rs->meta.log_start - 1, S);
        rv = MR_ECORRUPT;
        goto fail;
    }

    /* segments */
    rs->segs = mr_calloc(n_seg_names ? n_seg_names : 1, sizeof *rs->segs);
    if (rs->segs == NULL) {
        rv = MR_ENOMEM;
        goto fail;
    }
    memset(&c, 0, sizeof c);
    c.rec = rec;
    c.after = S;
    c.is_collect = collect;
    c.cb = cb;
    c.cb_arg = cb_arg;
    for (i = 0; i < n_seg_names; i++) {
        char name[SEG_NAME_LEN + 1], rel[SEG_NAME_LEN + 8];
        struct mr_store_seg_scan sc;
        uint64_t size;
        int is_last = i + 1 == n_seg_names;
        mr_store__seg_name(name, seg_names[i]);
        snprintf(rel, sizeof rel, "wal/%s", name);
        path = mr_store__join(wal_dir, name);
        if (path == NULL) {
            rv = MR_ENOMEM;
            goto fail;
        }
        if (rs->n_segs > 0 && seg_names[i] != rs->segs[rs->n_segs - 1].last + 1) {
            mr_errmsg_printf(errmsg,
                             "%s offset 0: first index %" PRIu64 ", expected %" PRIu64
                             " (gap between segments)",
                             rel, seg_names[i], rs->segs[rs->n_segs - 1].last + 1);
            rv = MR_ECORRUPT;
            goto fail;
        }
        rv = mr_store__read_file(path, &buf, &size);
        if (rv != 0) {
            mr_errmsg_printf(errmsg, "%s: read: %s", rel, mr_strerror(rv));
            goto fail;
        }
        rv = mr_store__seg_scan(buf, size, rel, seg_names[i], is_last, collect_cb, &c,
                                &sc, errmsg);
        mr_free(buf);
        buf = NULL;
        if (rv != 0) {
            if (rv == MR_ENOMEM) mr_errmsg_printf(errmsg, "%s: out of memory", rel);
            goto fail;
        }
        if (sc.is_header_torn) {
            /* Created just before a crash: holds nothing acknowledged. */
            if (!read_only) {
                rv = fs->unlink(fs->ctx, path);
                if (rv == 0) rv = mr_store__sync_dir(fs, wal_dir);
                if (rv != 0) {
                    mr_errmsg_printf(errmsg, "%s: unlink: %s", rel, mr_strerror(rv));
                    goto fail;
                }
            }
            char msg[MR_ERRMSG_SIZE];
            snprintf(msg, sizeof msg,
                     "%s: torn segment header (%" PRIu64 " bytes), segment removed", rel,
                     size);
            note_add(rec, msg);
        } else {
            struct mr_store_seg *sg = &rs->segs[rs->n_segs++];
            sg->first = sc.first;
            sg->last = sc.last;
            sg->last_term = sc.last_term;
            sg->end = sc.end;
            sg->size = size;
            sg->n_records = sc.n_records;
            if (sc.is_torn) {
                uint64_t alloc = size > seg_size ? size : seg_size;
                if (!read_only) {
                    rv = cut_tail(fs, path, sc.end, alloc);
                    if (rv != 0) {
                        mr_errmsg_printf(errmsg, "%s: cutting torn tail: %s", rel,
                                         mr_strerror(rv));
                        goto fail;
                    }
                    sg->size = alloc;
                }
                char msg[MR_ERRMSG_SIZE];
                snprintf(msg, sizeof msg,
                         "%s offset %" PRIu64 ": torn write at the tail (%" PRIu64
                         " bytes) %s",
                         rel, sc.end, size - sc.end,
                         read_only ? "found (read-only: left in place)" : "cut");
                note_add(rec, msg);
            }
        }
        mr_free(path);
        path = NULL;
    }

    if (rs->n_segs > 0 && rs->segs[0].first > S + 1) {
        char name[SEG_NAME_LEN + 1];
        mr_store__seg_name(name, rs->segs[0].first);
        mr_errmsg_printf(errmsg,
                         "wal/%s offset 0: log starts at %" PRIu64
                         " but the snapshot ends at %" PRIu64 " (gap)",
                         name, rs->segs[0].first, S);
        rv = MR_ECORRUPT;
        goto fail;
    }
    /* A WAL record at the snapshot's index with another term belongs to a
     * history the snapshot replaced (a snapshot installed from a leader, and
     * the crash came before the log reset): what follows it in the WAL must
     * not be kept, or log terms could go backwards after the snapshot. */
    contradicts = S > 0 && c.term_at_after != 0 && c.term_at_after != S_term;
    if (contradicts) {
        char msg[MR_ERRMSG_SIZE];
        mr_index wal_last = rs->n_segs > 0 ? rs->segs[rs->n_segs - 1].last : 0;
        snprintf(msg, sizeof msg,
                 "wal: entry %" PRIu64 " has term %" PRIu64
                 " but the snapshot there has term %" PRIu64
                 ": the log through %" PRIu64 " contradicts the snapshot, %s",
                 S, c.term_at_after, S_term, wal_last,
                 read_only ? "ignored (read-only: left in place)" : "dropped");
        note_add(rec, msg);
        for (i = 0; i < rec->n_entries; i++) mr_rcbuf_unref(rec->entries[i].data);
        rec->n_entries = 0;
    }
    if (!contradicts && rs->n_segs > 0 && rs->segs[rs->n_segs - 1].last >= S) {
        rs->last_index = rs->segs[rs->n_segs - 1].last;
        rs->last_term = rs->segs[rs->n_segs - 1].last_term;
        if (rs->last_index == S && rs->last_term == 0) rs->last_term = S_term;
    } else {
        /* The log ends before the snapshot (a snapshot was installed and the
         * crash came before the log reset) or contradicts it: nothing in it
         * is needed. */
        if (!read_only && rs->n_segs > 0) {
            size_t j;
            for (j = rs->n_segs; j-- > 0;) {
                char name[SEG_NAME_LEN + 1];
                mr_store__seg_name(name, rs->segs[j].first);
                path = mr_store__join(wal_dir, name);
                if (path == NULL) {
                    rv = MR_ENOMEM;
                    goto fail;
                }
                rv = fs->unlink(fs->ctx, path);
                mr_free(path);
                path = NULL;
                if (rv != 0) {
                    mr_errmsg_printf(errmsg, "wal/%s: unlink: %s", name, mr_strerror(rv));
                    goto fail;
                }
            }
            rv = mr_store__sync_dir(fs, wal_dir);
            if (rv != 0) {
                mr_errmsg_printf(errmsg, "wal: fsync: %s", mr_strerror(rv));
                goto fail;
            }
            rs->n_segs = 0;
        }
        rs->last_index = S;
        rs->last_term = S_term;
    }
    rec->first_index = rec->n_entries > 0 ? rec->entries[0].index : S + 1;
    rec->last_index = rs->last_index;
    rec->last_term = rs->last_term;
    rv = 0;
    goto out;
fail:
    mr_store__recovery_free(rs);
    mr_store_recovered_release(rec);
out:
    mr_free(buf);
    mr_free(path);
    mr_free(seg_names);
    mr_free(snaps);
    mr_free(wal_dir);
    mr_free(snap_dir);
    return rv;
}
