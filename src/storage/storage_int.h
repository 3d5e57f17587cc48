/* storage internals shared by the storage_*.c files. */
#ifndef MR_STORAGE_INT_H
#define MR_STORAGE_INT_H

#include <pthread.h>

#include "storage/storage.h"

#define SEG_MAGIC "MRWALSEG"
#define META_MAGIC "MRMETA01"
#define SNAP_MAGIC "MRSNAP01"
#define WAL_VERSION 1u
#define META_SIZE 64u
#define META_NAME "meta"
#define META_TMP_NAME "meta.tmp"
#define SEG_NAME_LEN 20  /* 16 hex digits + ".seg" */
#define SNAP_NAME_LEN 38 /* 16 + '-' + 16 + ".snap" */

static inline uint64_t pad8(uint64_t n)
{
    return (n + 7u) & ~(uint64_t)7u;
}

/* ---- fs helpers (storage_fs.c) ---------------------------------------------- */
/* Writes all of buf at off, looping over short writes. 0 or -errno. */
int mr_store__write_all(const struct mr_store_fs *fs, int fd, const void *buf, size_t n,
                        off_t off);
/* fsync of a directory. 0 or -errno. */
int mr_store__sync_dir(const struct mr_store_fs *fs, const char *dir);
/* 1 while the writer thread waits for work (for tests that need it idle). */
int mr_store__writer_is_parked(struct mr_store *st);
/* Reads a whole regular file into a new mr_malloc'd buffer (*buf NULL when
 * the file is empty). 0 or -errno / MR_ENOMEM. */
int mr_store__read_file(const char *path, unsigned char **buf, uint64_t *size);
/* "a/b" into a new string; NULL on OOM. */
char *mr_store__join(const char *a, const char *b);
/* Maps an errno-style code to a short reason for messages. */
int mr_store__is_disk_error(int rv);

/* ---- meta (storage_meta.c) ---------------------------------------------------- */
struct mr_store_meta {
    mr_term term;
    mr_node_id vote;
    mr_node_id node_id;
    uint64_t cluster_id;
    mr_index log_start;
};
/* MR_ENOTFOUND if missing, MR_ECORRUPT (errmsg "meta offset N: ...") if
 * damaged. */
int mr_store__meta_read(const char *dir, struct mr_store_meta *m, char *errmsg);
/* temp file, fsync, rename, fsync dir. 0 or -errno. */
int mr_store__meta_write(const struct mr_store_fs *fs, const char *dir,
                         const struct mr_store_meta *m, char *errmsg);
void mr_store__meta_encode(const struct mr_store_meta *m, unsigned char *buf);

/* ---- WAL records (storage_wal.c) ---------------------------------------------- */
struct mr_store_rec {
    uint64_t off; /* offset of the record in its segment */
    uint32_t len;
    uint8_t type;
    mr_term term;
    mr_index index;
    const unsigned char *data;
};
/* Called for every valid record in order; nonzero return stops the scan
 * and is returned by the scanner. */
typedef int (*mr_store_rec_cb)(void *arg, const struct mr_store_rec *r);

struct mr_store_seg_scan {
    mr_index first;    /* from the header (or name if header torn) */
    mr_index last;     /* first - 1 if no record */
    mr_term last_term; /* 0 if no record */
    uint64_t n_records;
    uint64_t end;       /* offset just past the last valid record */
    uint64_t size;      /* file size */
    int is_torn;        /* damage at `end` in the last write group */
    int is_header_torn; /* the segment header itself is torn (end == 0) */
};
void mr_store__seg_header_encode(unsigned char *p, mr_index first);
/* Encodes one record header at p (payload and padding must follow already
 * copied to p + 32 when computing the checksum: pass them here). */
void mr_store__rec_encode(unsigned char *p, mr_term term, mr_index index, uint8_t type,
                          const void *data, uint32_t len, uint32_t sync_start);
/* Scans a segment image. `relname` ("wal/....seg") names it in errors.
 * name_first is the index in its name; expect_index, if nonzero, the index
 * its first record must have. is_last enables torn-tail detection.
 * Returns 0, MR_ECORRUPT (errmsg with file and offset), or the callback's
 * nonzero return. */
int mr_store__seg_scan(const unsigned char *buf, uint64_t size, const char *relname,
                       mr_index name_first, int is_last, mr_store_rec_cb cb, void *arg,
                       struct mr_store_seg_scan *out, char *errmsg);
int mr_store__seg_name_parse(const char *name, mr_index *first);
void mr_store__seg_name(char *buf, mr_index first); /* buf >= SEG_NAME_LEN+1 */

/* ---- snapshots (storage_snap.c) ----------------------------------------------- */
int mr_store__snap_name_parse(const char *name, mr_index *index, mr_term *term);
void mr_store__snap_name(char *buf, mr_index index, mr_term term);
/* The reader's open file (header, membership and payload: *file_size bytes)
 * for pread; owned by the reader. The backup code copies it whole. */
int mr_store__snap_reader_file(const struct mr_store_snap_reader *r, uint64_t *file_size);

/* ---- recovery (storage_recover.c) ---------------------------------------------- */
struct mr_store_seg {
    mr_index first;
    mr_index last; /* first - 1 when empty */
    mr_term last_term;
    uint64_t end;  /* write offset */
    uint64_t size; /* file size (preallocated) */
    uint64_t n_records;
};

struct mr_store_recovery {
    struct mr_store_seg *segs; /* owned, sorted by first index */
    size_t n_segs;
    struct mr_store_meta meta;
    mr_index last_index;
    mr_term last_term;
};
/* Full recovery of `dir` (see mr_store_open). If `collect`, entries after
 * the snapshot are gathered into rec. If `cb` is set it sees every record
 * (the dump tool). */
int mr_store__recover(const char *dir, const struct mr_store_fs *fs, uint32_t seg_size,
                      int read_only, const struct mr_store_options *opts, int collect,
                      mr_store_rec_cb cb, void *cb_arg, struct mr_store_recovery *rs,
                      struct mr_store_recovered *rec, char *errmsg);
void mr_store__recovery_free(struct mr_store_recovery *rs);

/* ---- the store (storage.c) -------------------------------------------------------- */
struct mr_store {
    char *dir, *wal_dir, *snap_dir;
    int lock_fd; /* flock on dir/lock while open read-write, else -1 */
    const struct mr_store_fs *fs;
    uint32_t seg_size;
    int is_read_only;
    mr_store_notify_cb notify;
    void *notify_arg;

    pthread_mutex_t mu; /* guards everything down to "writer only" */
    pthread_cond_t cond;
    struct mr_queue queue;
    uint64_t next_seq;
    mr_index enq_last; /* last index queued */
    int is_stopping;
    int is_kicked; /* retry a batch stalled on a full disk now */
    int is_busy;   /* a batch is running (writer thread or mr_store_sync_inline) */
    int is_parked; /* the writer waits for work (tests: mr_store__writer_is_parked) */
    int is_stalled; /* the writer is backing off a full disk */
    int is_inline;  /* mr_store_set_inline: appends wait for mr_store_sync_inline */
    int has_thread;
    pthread_t thread;
    struct mr_store_progress prog; /* prog.error != 0: failed */
    mr_index snap_index;           /* newest durable snapshot */
    mr_term snap_term;

    pthread_mutex_t snap_mu; /* serialises snapshot publication */
    uint64_t snap_counter;

    /* writer only: the writer thread, or the caller of mr_store_sync_inline
     * while is_busy (and open/close) */
    struct mr_store_seg *segs;
    size_t n_segs, cap_segs;
    int cur_fd;          /* fd of segs[n_segs-1] when open for appending */
    int is_group_open;   /* records written since the last fdatasync */
    uint32_t sync_start; /* offset where the open write group began */
    mr_index last_index;
    mr_term last_term;
    struct mr_store_meta meta;
    unsigned char *wbuf;
    size_t wlen, wcap;
};

#endif /* MR_STORAGE_INT_H */
