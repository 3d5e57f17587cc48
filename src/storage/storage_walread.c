/* storage: reading entries back from the WAL (mr_store_wal_reader_*, see
 * storage.h), for a log cache miss.
 *
 * The reader shares nothing with the writer thread: it lists wal/ itself,
 * opens segment files read-only and learns offsets by scanning record
 * headers. What it may meet while the writer works:
 *   - appends to the newest segment, and new segments: records up to the
 *     persisted index are complete and never change, so a scan that stops at
 *     the zero-filled preallocated tail (or at the end of the file) before
 *     the wanted index re-lists wal/ once and looks again;
 *   - compaction unlinks old segments: an open descriptor would still read
 *     them, so each read checks st_nlink (one fstat) and drops a descriptor
 *     whose file is gone; the index is then no longer listed: MR_ENOTFOUND;
 *   - truncation unlinks newer segments (a new file may later take the same
 *     name: the st_nlink check again) and cuts the newest one in place
 *     (ftruncate, fallocate, then new records after the cut). Offsets learned
 *     before the cut (the cursor, the sparse marks) may then point at other
 *     records or into the middle of one. They are only hints: a record found
 *     through one counts only if its header carries the expected index (and
 *     its checksum holds); any other outcome drops the hints of that segment
 *     and scans it again from its first record before answering.
 * Cost: a read at the cursor is one fstat and one pread (header and payload
 * together when the payload is no larger than the previous one or 1 KiB;
 * a second read otherwise). A read elsewhere starts at the nearest mark: one
 * remembered offset every MARK_EVERY records of a segment, learned while
 * scanning, so it reads at most MARK_EVERY - 1 headers before the target,
 * through a WIN_SIZE window (a few preads for small records). Marks cost 16
 * bytes per MARK_EVERY records (a 64 MiB segment of 100-byte entries: ~128
 * KiB), kept for every listed segment: a leader serving followers at
 * different places in the log reads at random, and without marks each such
 * read would scan a whole segment (up to 64 MiB). */
#include "storage/storage_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define MARK_EVERY 64u         /* records between two remembered offsets */
#define WIN_SIZE (16u * 1024u) /* bytes read at once while scanning */
#define TARGET_READ_MIN 1024u  /* bytes read at once at the cursor */
#define MAX_RELISTS 3          /* a file replaced again and again: give up */

/* Outcomes inside a read (never returned to the caller). */
enum {
    R_END = 1,   /* the segment holds no record at that index (yet) */
    R_STALE = 2, /* the file was unlinked or replaced: list wal/ again */
};

struct mark {
    mr_index index;
    uint64_t off;
};

struct rseg {
    mr_index first;
    struct mark *marks; /* increasing index; owned */
    size_t n_marks, cap_marks;
};

struct mr_store_wal_reader {
    char *wal_dir;
    struct rseg *segs; /* sorted by first index */
    size_t n_segs;
    int fd;             /* the current segment, -1: none */
    mr_index fd_first;  /* its first index */
    uint64_t fd_size;   /* its size at the last fstat */
    mr_index cur_index; /* cursor: the next record in fd's segment (0: none) */
    uint64_t cur_off;   /*   and its offset */
    uint32_t last_len;  /* payload length of the last entry read */
    unsigned char *win; /* WIN_SIZE bytes; valid within one read only */
    uint64_t win_off;
    size_t win_len;
    uint64_t reads, opens;
};

static void rel_name(char *buf, mr_index first)
{
    memcpy(buf, "wal/", 4);
    mr_store__seg_name(buf + 4, first);
}

static void segs_free(struct rseg *segs, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) mr_free(segs[i].marks);
    mr_free(segs);
}

static void close_fd(struct mr_store_wal_reader *r)
{
    if (r->fd >= 0) close(r->fd);
    r->fd = -1;
    r->cur_index = 0;
    r->win_len = 0; /* the window holds bytes of that file */
}

static int cmp_index(const void *a, const void *b)
{
    mr_index x = *(const mr_index *)a, y = *(const mr_index *)b;
    return x < y ? -1 : x > y;
}

/* Lists wal/ again, keeping the marks of the segments still listed (a file
 * that took an old name gets checked through them like any hint). */
static int relist(struct mr_store_wal_reader *r, char *errmsg)
{
    DIR *d = opendir(r->wal_dir);
    struct dirent *de;
    mr_index *firsts = NULL;
    size_t n = 0, cap = 0, i, j = 0;
    struct rseg *segs;
    if (d == NULL) {
        int rv = -errno;
        if (rv != -ENOENT) {
            mr_errmsg_printf(errmsg, "wal: list: %s", mr_strerror(rv));
            return rv;
        }
    } else {
        while ((de = readdir(d)) != NULL) {
            mr_index first;
            if (!mr_store__seg_name_parse(de->d_name, &first)) continue;
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 16;
                mr_index *p = mr_realloc(firsts, nc * sizeof *p);
                if (p == NULL) {
                    closedir(d);
                    mr_free(firsts);
                    return MR_ENOMEM;
                }
                firsts = p;
                cap = nc;
            }
            firsts[n++] = first;
        }
        closedir(d);
    }
    segs = n > 0 ? mr_calloc(n, sizeof *segs) : NULL;
    if (n > 0 && segs == NULL) {
        mr_free(firsts);
        return MR_ENOMEM;
    }
    if (n > 0) qsort(firsts, n, sizeof *firsts, cmp_index);
    for (i = 0; i < n; i++) {
        segs[i].first = firsts[i];
        while (j < r->n_segs && r->segs[j].first < firsts[i]) j++;
        if (j < r->n_segs && r->segs[j].first == firsts[i]) {
            segs[i].marks = r->segs[j].marks;
            segs[i].n_marks = r->segs[j].n_marks;
            segs[i].cap_marks = r->segs[j].cap_marks;
            r->segs[j].marks = NULL;
        }
    }
    mr_free(firsts);
    segs_free(r->segs, r->n_segs);
    r->segs = segs;
    r->n_segs = n;
    return 0;
}

/* The newest listed segment whose first index is <= index, or NULL. */
static struct rseg *find_seg(struct mr_store_wal_reader *r, mr_index index)
{
    size_t lo = 0, hi = r->n_segs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->segs[mid].first <= index)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo > 0 ? &r->segs[lo - 1] : NULL;
}

static void mark_learn(struct rseg *sg, mr_index index, uint64_t off)
{
    if ((index - sg->first) % MARK_EVERY != 0) return;
    if (sg->n_marks > 0 && sg->marks[sg->n_marks - 1].index >= index) return;
    if (sg->n_marks == sg->cap_marks) {
        size_t nc = sg->cap_marks ? sg->cap_marks * 2 : 16;
        struct mark *p = mr_realloc(sg->marks, nc * sizeof *p);
        if (p == NULL) return; /* only a hint */
        sg->marks = p;
        sg->cap_marks = nc;
    }
    sg->marks[sg->n_marks].index = index;
    sg->marks[sg->n_marks].off = off;
    sg->n_marks++;
}

static const struct mark *mark_find(const struct rseg *sg, mr_index index)
{
    size_t lo = 0, hi = sg->n_marks;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sg->marks[mid].index <= index)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo > 0 ? &sg->marks[lo - 1] : NULL;
}

static int read_fail(char *errmsg, mr_index first, uint64_t off, int rv)
{
    char rel[SEG_NAME_LEN + 5];
    rel_name(rel, first);
    mr_errmsg_printf(errmsg, "%s offset %" PRIu64 ": read: %s", rel, off,
                     mr_strerror(rv));
    return rv;
}

static int corrupt(char *errmsg, mr_index first, uint64_t off, const char *why)
{
    char rel[SEG_NAME_LEN + 5];
    rel_name(rel, first);
    mr_errmsg_printf(errmsg, "%s offset %" PRIu64 ": %s", rel, off, why);
    return MR_ECORRUPT;
}

static ssize_t pread_full(int fd, void *buf, size_t n, uint64_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = pread(fd, (unsigned char *)buf + got, n - got, (off_t)(off + got));
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return -errno;
        if (k == 0) break;
        got += (size_t)k;
    }
    return (ssize_t)got;
}

/* Makes [off, off + n) (n <= WIN_SIZE) available in the window, reading up to
 * `want` bytes from off if it is not. *p points at it; NULL if the file ends
 * first. 0 or -errno. */
static int fetch(struct mr_store_wal_reader *r, uint64_t off, size_t n, size_t want,
                 const unsigned char **p)
{
    ssize_t got;
    size_t len;
    *p = NULL;
    if (off >= r->win_off && off + n <= r->win_off + r->win_len) {
        *p = r->win + (off - r->win_off);
        return 0;
    }
    if (off >= r->fd_size) return 0;
    len = want < n ? n : want;
    if (len > WIN_SIZE) len = WIN_SIZE;
    if (len > r->fd_size - off) len = (size_t)(r->fd_size - off);
    r->win_len = 0;
    got = pread_full(r->fd, r->win, len, off);
    if (got < 0) return (int)got;
    r->win_off = off;
    r->win_len = (size_t)got;
    if ((size_t)got >= n) *p = r->win;
    return 0;
}

static int all_zero(const unsigned char *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (p[i] != 0) return 0;
    return 1;
}

/* Makes the segment `first` the current one: its file open (a new one checked
 * for its header) and still linked. 0, R_STALE, R_END (the header is not
 * written yet: the writer is creating it), MR_ECORRUPT or -errno. */
static int use_seg(struct mr_store_wal_reader *r, mr_index first, char *errmsg)
{
    char name[SEG_NAME_LEN + 1];
    unsigned char hdr[MR_STORE_SEGMENT_HEADER];
    struct stat sb;
    char *path;
    ssize_t got;
    int fd;
    if (r->fd >= 0 && r->fd_first == first) {
        if (fstat(r->fd, &sb) != 0) return read_fail(errmsg, first, 0, -errno);
        if (sb.st_nlink == 0) {
            close_fd(r);
            return R_STALE;
        }
        r->fd_size = (uint64_t)sb.st_size;
        return 0;
    }
    close_fd(r); /* frees the space of a compacted segment */
    mr_store__seg_name(name, first);
    path = mr_store__join(r->wal_dir, name);
    if (path == NULL) return MR_ENOMEM;
    do {
        fd = open(path, O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    mr_free(path);
    if (fd < 0) {
        int rv = -errno;
        if (rv == -ENOENT) return R_STALE;
        return read_fail(errmsg, first, 0, rv);
    }
    r->opens++;
    if (fstat(fd, &sb) != 0) {
        int rv = -errno;
        close(fd);
        return read_fail(errmsg, first, 0, rv);
    }
    got = pread_full(fd, hdr, sizeof hdr, 0);
    if (got < 0) {
        close(fd);
        return read_fail(errmsg, first, 0, (int)got);
    }
    if ((size_t)got < sizeof hdr || all_zero(hdr, sizeof hdr)) {
        close(fd);
        return R_END;
    }
    if (memcmp(hdr, SEG_MAGIC, 8) != 0 || mr_get_u32(hdr + 8) != WAL_VERSION ||
        mr_get_u32(hdr + 28) != mr_crc32c(0, hdr, 28) || mr_get_u64(hdr + 16) != first) {
        close(fd);
        return corrupt(errmsg, first, 0, "bad segment header");
    }
    r->fd = fd;
    r->fd_first = first;
    r->fd_size = (uint64_t)sb.st_size;
    r->cur_index = 0;
    return 0;
}

/* Reads the target record at `off` whose header is `h` into *out (see
 * mr_store_wal_reader_read for the checks). */
static int read_target(struct mr_store_wal_reader *r, struct rseg *sg, uint64_t off,
                       const unsigned char *h, mr_term term, struct mr_raft_entry *out,
                       char *errmsg)
{
    unsigned char hdr[MR_STORE_RECORD_HEADER], pad[8];
    uint32_t len = mr_get_u32(h + 4), crc;
    uint64_t padded = pad8(len), total = MR_STORE_RECORD_HEADER + padded;
    struct mr_rcbuf *b = NULL;
    const unsigned char *p;
    mr_term rterm;
    int rv;
    memcpy(hdr, h, sizeof hdr);
    crc = mr_crc32c(0, hdr + 4, 28);
    if (total <= WIN_SIZE) {
        rv = fetch(r, off, (size_t)total, (size_t)total, &p);
        if (rv != 0) return read_fail(errmsg, sg->first, off, rv);
        if (p == NULL) return R_END; /* shrunk since the fstat: cut meanwhile */
        crc = mr_crc32c(crc, p + MR_STORE_RECORD_HEADER, (size_t)padded);
        if (crc == mr_get_u32(hdr) && len > 0) {
            b = mr_rcbuf_new(len);
            if (b == NULL) return MR_ENOMEM;
            memcpy(b->data, p + MR_STORE_RECORD_HEADER, len);
        }
    } else {
        /* Too big for the window: straight into the buffer, in one preadv. */
        struct iovec iov[2];
        ssize_t got;
        b = mr_rcbuf_new(len);
        if (b == NULL) return MR_ENOMEM;
        iov[0].iov_base = b->data;
        iov[0].iov_len = len;
        iov[1].iov_base = pad;
        iov[1].iov_len = (size_t)(padded - len);
        do {
            got = preadv(r->fd, iov, 2, (off_t)(off + MR_STORE_RECORD_HEADER));
        } while (got < 0 && errno == EINTR);
        if (got < 0) {
            rv = -errno;
            mr_rcbuf_unref(b);
            return read_fail(errmsg, sg->first, off, rv);
        }
        if ((uint64_t)got < padded) {
            /* A short read of a regular file: it ends there (cut meanwhile). */
            mr_rcbuf_unref(b);
            return R_END;
        }
        crc = mr_crc32c(crc, b->data, len);
        crc = mr_crc32c(crc, pad, (size_t)(padded - len));
    }
    if (crc != mr_get_u32(hdr)) {
        mr_rcbuf_unref(b);
        return corrupt(errmsg, sg->first, off, "checksum mismatch");
    }
    rterm = mr_get_u64(hdr + 8);
    if (term != 0 && rterm != term) {
        char why[96];
        mr_rcbuf_unref(b);
        snprintf(why, sizeof why,
                 "entry %" PRIu64 " has term %" PRIu64 ", expected %" PRIu64,
                 mr_get_u64(hdr + 16), rterm, term);
        return corrupt(errmsg, sg->first, off, why);
    }
    out->term = rterm;
    out->index = mr_get_u64(hdr + 16);
    out->type = hdr[24];
    out->data = b;
    r->cur_index = out->index + 1;
    r->cur_off = off + total;
    r->last_len = len;
    return 0;
}

/* Scans the current segment (sg) from the record at `off`, which should
 * carry index `k`, up to `index`. 0 (read), R_END, MR_ECORRUPT, -errno or
 * MR_ENOMEM. */
static int scan(struct mr_store_wal_reader *r, struct rseg *sg, uint64_t off, mr_index k,
                mr_index index, mr_term term, struct mr_raft_entry *out, char *errmsg)
{
    for (;;) {
        const unsigned char *h;
        size_t want;
        uint32_t len;
        mr_index got;
        int rv;
        if (k == index) {
            want = MR_STORE_RECORD_HEADER + (size_t)pad8(r->last_len);
            if (want < TARGET_READ_MIN) want = TARGET_READ_MIN;
        } else {
            want = WIN_SIZE;
        }
        rv = fetch(r, off, MR_STORE_RECORD_HEADER, want, &h);
        if (rv != 0) return read_fail(errmsg, sg->first, off, rv);
        if (h == NULL) return R_END; /* the file ends (a full segment) */
        if (mr_get_u32(h) == 0 && mr_get_u32(h + 4) == 0 &&
            all_zero(h, MR_STORE_RECORD_HEADER))
            return R_END; /* the preallocated tail: nothing written here yet */
        len = mr_get_u32(h + 4);
        if (off + MR_STORE_RECORD_HEADER + pad8(len) > r->fd_size)
            return corrupt(errmsg, sg->first, off,
                           "record length runs past the end of the file");
        got = mr_get_u64(h + 16);
        if (got != k) {
            char why[80];
            snprintf(why, sizeof why, "record index %" PRIu64 ", expected %" PRIu64, got,
                     k);
            return corrupt(errmsg, sg->first, off, why);
        }
        mark_learn(sg, k, off);
        if (k == index) return read_target(r, sg, off, h, term, out, errmsg);
        off += MR_STORE_RECORD_HEADER + pad8(len);
        k++;
    }
}

/* Reads `index` from the segment sg (the current one). With `hints`, from
 * the cursor or the nearest mark if one helps, and if that meets a record it
 * did not expect, once more from the segment's first record without them
 * (see the top of the file); R_END found through a hint is left to the
 * caller, which lists wal/ first (usually the index is in a new segment). */
static int read_in_seg(struct mr_store_wal_reader *r, struct rseg *sg, mr_index index,
                       mr_term term, int hints, struct mr_raft_entry *out, char *errmsg)
{
    const struct mark *m = mark_find(sg, index);
    uint64_t off = MR_STORE_SEGMENT_HEADER;
    mr_index k = sg->first;
    int rv;
    if (hints && r->cur_index != 0 && r->cur_index <= index) {
        off = r->cur_off;
        k = r->cur_index;
    }
    if (hints && m != NULL && m->index > k) {
        off = m->off;
        k = m->index;
    }
    if (!hints) {
        sg->n_marks = 0; /* they may be what missed it */
        r->cur_index = 0;
    } else if (k != sg->first) {
        rv = scan(r, sg, off, k, index, term, out, errmsg);
        if (rv != MR_ECORRUPT) return rv;
        sg->n_marks = 0; /* they led astray: the file changed under them */
        r->cur_index = 0;
        r->win_len = 0;
    }
    return scan(r, sg, MR_STORE_SEGMENT_HEADER, sg->first, index, term, out, errmsg);
}

int mr_store_wal_reader_open(const char *data_dir, struct mr_store_wal_reader **out,
                             char *errmsg)
{
    struct mr_store_wal_reader *r;
    int rv;
    *out = NULL;
    r = mr_calloc(1, sizeof *r);
    if (r == NULL) return MR_ENOMEM;
    r->fd = -1;
    r->wal_dir = mr_store__join(data_dir, "wal");
    r->win = mr_malloc(WIN_SIZE);
    if (r->wal_dir == NULL || r->win == NULL) {
        mr_store_wal_reader_close(r);
        return MR_ENOMEM;
    }
    rv = relist(r, errmsg);
    if (rv != 0) {
        mr_store_wal_reader_close(r);
        return rv;
    }
    *out = r;
    return 0;
}

int mr_store_wal_reader_read(struct mr_store_wal_reader *r, mr_index index, mr_term term,
                             struct mr_raft_entry *out, char *errmsg)
{
    int relists = 0, hints = 1, rv;
    memset(out, 0, sizeof *out);
    r->win_len = 0; /* bytes read before this call may have changed */
    for (;;) {
        struct rseg *sg = find_seg(r, index);
        if (sg == NULL) {
            rv = R_END;
        } else {
            rv = use_seg(r, sg->first, errmsg);
            if (rv == 0) rv = read_in_seg(r, sg, index, term, hints, out, errmsg);
            if (rv == MR_ECORRUPT && r->fd >= 0) {
                /* Not damage if the file was unlinked while we read it. */
                struct stat sb;
                if (fstat(r->fd, &sb) == 0 && sb.st_nlink == 0) {
                    close_fd(r);
                    rv = R_STALE;
                }
            }
        }
        if (rv == 0) {
            r->reads++;
            return 0;
        }
        if (rv != R_END && rv != R_STALE) return rv;
        /* Not where the listing says: list wal/ again (a new segment, or one
         * removed or replaced) and look once more, from the first record of
         * the segment this time. Not there by a fresh listing and a full
         * scan: it is not in the WAL. */
        if (relists == MAX_RELISTS || (rv == R_END && relists > 0 && !hints)) break;
        rv = relist(r, errmsg);
        if (rv != 0) return rv;
        relists++;
        hints = 0;
    }
    mr_errmsg_printf(errmsg, "wal: no segment holds entry %" PRIu64, index);
    return MR_ENOTFOUND;
}

void mr_store_wal_reader_stats(const struct mr_store_wal_reader *r, uint64_t *reads,
                               uint64_t *opens)
{
    *reads = r->reads;
    *opens = r->opens;
}

void mr_store_wal_reader_close(struct mr_store_wal_reader *r)
{
    if (r == NULL) return;
    close_fd(r);
    segs_free(r->segs, r->n_segs);
    mr_free(r->win);
    mr_free(r->wal_dir);
    mr_free(r);
}
