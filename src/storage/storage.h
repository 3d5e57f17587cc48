/* storage: moonraft's durable log, metadata and snapshots.
 *
 * On disk, under `data_dir`:
 *   meta                      term, vote, node id, cluster id, log start
 *                             (written as meta.tmp, fsync, rename, fsync dir)
 *   wal/<first index>.seg     write-ahead log segments, named by the index of
 *                             their first record (16 hex digits), preallocated
 *   snap/<index>-<term>.snap  snapshot: checksummed header (index, term,
 *                             membership blob), then the state machine payload
 *
 * Segment layout: a 32-byte header (magic "MRWALSEG", version, first index,
 * CRC32C), then records. Each record is a 32-byte header followed by the
 * payload padded to 8 bytes:
 *   u32 crc     CRC32C of bytes 4..31 of the header, the payload and padding
 *   u32 len     payload length
 *   u64 term, u64 index
 *   u8  type, 3 bytes zero
 *   u32 sync_start  offset in the segment where the write group this record
 *                   belongs to started (everything from there was made
 *                   durable by one fdatasync)
 * `sync_start` is what lets recovery tell a torn tail from corruption: when a
 * record at offset X is damaged, X lies in the last (possibly unsynced) write
 * group unless some valid record after X belongs to a group that started after
 * X. In the first case the tail from X is cut (and reported in `note`); in the
 * second the damage sits under acknowledged data and recovery fails with
 * MR_ECORRUPT naming the file and offset. (Damage inside the last write group
 * cannot be told apart from a torn write: it is cut too, and always reported
 * in `note`, never silently.) Only the newest segment can be torn: a full
 * segment is fdatasynced before the next one is created, and a new segment's
 * header and directory entry are durable before records go in.
 *
 * Threads. Appends, truncations, compactions and hard-state writes go into one
 * ordered queue drained by a private writer thread, which writes everything
 * queued with as few writes as possible and one fdatasync per batch (group
 * commit). It then calls `options.notify` (from the writer thread) and the
 * host calls mr_store_poll() to learn what became durable. Storage does not
 * use libuv; the host typically calls uv_async_send() from notify. A host may
 * also run the queued batch on its own thread when the writer is idle
 * (mr_store_sync_inline, with mr_store_set_inline so appends stop waking the
 * writer): the same batch, the same order, one fdatasync, minus two thread
 * hand-offs.
 *
 * Errors: 0 or a negative MR_E* / -errno code; functions taking `errmsg` fill
 * it (MR_ERRMSG_SIZE bytes) on failure. MR_ECORRUPT means damaged data on disk
 * (the node exits with code 3). After a write or sync error the store enters
 * a failed state: it never retries, and every later write returns
 * MR_EDISKFAIL. A full disk (ENOSPC or EDQUOT) is not a failure: the writer
 * stalls, reports it in mr_store_progress.nospace, keeps queueing, retries
 * with backoff (1 s doubling to 8 s; at once after mr_store_retry_now() or a
 * queued compaction) and clears `nospace` once a retry went through. Nothing
 * of the stalled operations is reported durable before that, and a record
 * torn by the failed write is cut before the retry (storage.c). */
#ifndef MR_STORAGE_H
#define MR_STORAGE_H

#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "raft/raft.h"
#include "util/util.h"

#define MR_STORE_SEGMENT_SIZE_DEFAULT (64u * 1024u * 1024u) /* bytes */
#define MR_STORE_SEGMENT_SIZE_MIN (4096u)                   /* bytes */
#define MR_STORE_SEGMENT_SIZE_MAX (1024u * 1024u * 1024u)   /* bytes */
#define MR_STORE_RECORD_HEADER 32u                          /* bytes */
#define MR_STORE_SEGMENT_HEADER 32u                         /* bytes */
#define MR_STORE_SNAP_HEADER 56u /* bytes, before the membership blob */

/* ---- file-operation seam (fault injection) ---------------------------------
 * Every operation that changes the disk goes through this table. Each returns
 * what the system call does, but errors as -errno instead of -1/errno:
 * open -> fd, pwrite -> bytes written (may be short), the rest -> 0.
 * mr_store_fs_default() returns the real calls. Tests wrap it to fail the Nth
 * call. Calls may come from the writer thread and from snapshot callers. */
struct mr_store_fs {
    void *ctx;
    int (*open)(void *ctx, const char *path, int flags, int mode);
    int (*close)(void *ctx, int fd);
    ssize_t (*pwrite)(void *ctx, int fd, const void *buf, size_t n, off_t off);
    int (*fdatasync)(void *ctx, int fd);
    int (*fsync)(void *ctx, int fd);
    int (*rename)(void *ctx, const char *from, const char *to);
    int (*ftruncate)(void *ctx, int fd, off_t len);
    int (*fallocate)(void *ctx, int fd, off_t off, off_t len);
    int (*unlink)(void *ctx, const char *path);
};
/* The real system calls; a pointer to a static table, never NULL. */
const struct mr_store_fs *mr_store_fs_default(void);

/* ---- the power-loss fault layer (tests only) --------------------------------
 * A seam that passes every call through to the real file system and also
 * keeps, in `image_dir`, what a power cut would leave of `data_dir`: each
 * file's content as of its last fdatasync/fsync and each directory's entries
 * as of its last fsync (storage_powerloss.c describes the model). The image
 * is kept on disk, so it survives a SIGKILL of the process; opening it again
 * (a restart) continues it. The node uses the layer when started with
 * MOONRAFT_FAULT_POWERLOSS=<image dir>. */
struct mr_store_powerloss;
/* Opens (or creates) the image of `data_dir` (both borrowed; created if
 * missing). A new image takes everything in data_dir as durable. */
int mr_store_powerloss_open(const char *data_dir, const char *image_dir,
                            struct mr_store_powerloss **out, char *errmsg);
/* The seam, valid until close; pass it as mr_store_options.fs. */
const struct mr_store_fs *mr_store_powerloss_fs(struct mr_store_powerloss *pl);
/* A slow disk: every later fdatasync/fsync of a file takes `ms` longer
 * (widens the window in which written data is not yet durable). */
void mr_store_powerloss_set_sync_delay(struct mr_store_powerloss *pl, unsigned ms);
/* Frees the layer (after mr_store_close). NULL-safe. */
void mr_store_powerloss_close(struct mr_store_powerloss *pl);
/* The power cut: rewrites `data_dir` (no process may be using it) to exactly
 * its durable image, which then describes it again. MR_ENOTFOUND if
 * `image_dir` holds no image. */
int mr_store_powerloss_cut(const char *data_dir, const char *image_dir, char *errmsg);

/* ---- the space limit layer --------------------------------------------------
 * A seam that passes every call to `inner` and refuses to let `data_dir` grow
 * past a limit. A pwrite or fallocate that would take the space its files
 * hold (allocated blocks of every file under data_dir) over `max_bytes` fails
 * with -EDQUOT (the node's max_data_mb quota; 0: none), and, while the file
 * `fault_file` exists and holds a decimal byte count, over that count with
 * -ENOSPC (tests fill and free the "disk" at runtime by writing or removing
 * it; the node reads MOONRAFT_FAULT_DISK_LIMIT_FILE). Either way the store
 * takes it as a full disk (see Errors above). Thread-safe (no state). */
struct mr_store_limit;
/* data_dir and fault_file (may be NULL) are copied; inner (NULL: the real
 * calls) is borrowed and must outlive the layer. Errors: MR_ENOMEM. */
int mr_store_limit_open(const char *data_dir, const struct mr_store_fs *inner,
                        uint64_t max_bytes, const char *fault_file,
                        struct mr_store_limit **out);
/* The seam, valid until close; pass it as mr_store_options.fs. */
const struct mr_store_fs *mr_store_limit_fs(struct mr_store_limit *l);
/* Frees the layer (after mr_store_close). NULL-safe. */
void mr_store_limit_close(struct mr_store_limit *l);
/* Bytes allocated to the files under data_dir (two levels deep), as the
 * limit layer counts them. */
uint64_t mr_store_dir_usage(const char *data_dir);

/* ---- opening and recovery --------------------------------------------------- */

/* Called by the writer thread, with no storage lock held, after durable
 * progress or an error. Must be cheap and thread-safe (uv_async_send). */
typedef void (*mr_store_notify_cb)(void *arg);

struct mr_store_options {
    const char *data_dir;      /* borrowed during mr_store_open only */
    uint32_t segment_size;     /* 0: MR_STORE_SEGMENT_SIZE_DEFAULT */
    int is_read_only;          /* recover only: change nothing, no writer
                                * thread (the data tool uses this) */
    mr_node_id node_id;        /* written to a fresh meta; if nonzero it
                                * must match an existing one (MR_ECONFIG) */
    uint64_t cluster_id;       /* likewise (0 = unknown yet) */
    mr_store_notify_cb notify; /* may be NULL */
    void *notify_arg;
    const struct mr_store_fs *fs; /* NULL: mr_store_fs_default(); borrowed,
                                   * must outlive the store */
};

/* What recovery found. Entries are those after the snapshot. */
struct mr_store_recovered {
    mr_term term;    /* current term */
    mr_node_id vote; /* vote in `term`, 0 if none */
    mr_node_id node_id;
    uint64_t cluster_id;
    mr_index log_start; /* compaction boundary: entries before it are gone */
    int has_snapshot;
    mr_index snap_index;
    mr_term snap_term;
    struct mr_rcbuf *snap_conf;    /* membership blob at snap_index (owned ref) */
    uint64_t snap_size;            /* payload bytes */
    char *snap_path;               /* owned (mr_free'd by release) */
    struct mr_raft_entry *entries; /* owned array; each holds a data ref */
    size_t n_entries;
    mr_index first_index; /* index of entries[0]; snap_index+1 if none */
    mr_index last_index;  /* last index in the log (snap_index if none) */
    mr_term last_term;
    int is_fresh;              /* the directory was empty and got initialised */
    char note[MR_ERRMSG_SIZE]; /* non-empty: something was repaired (torn
                                * tail cut, leftovers removed); log it */
};

/* Drops every reference held by `rec` and zeroes it. NULL-safe. */
void mr_store_recovered_release(struct mr_store_recovered *rec);

struct mr_store;

/* Opens (creating data_dir, wal/ and snap/ if missing) and recovers
 * synchronously: reads meta, the newest snapshot and every segment, checking
 * each checksum. A torn record at the very tail of the last segment is cut
 * (unless read-only) and described in rec->note; so is a WAL whose entry at
 * the snapshot's index has another term than the snapshot (it belongs to a
 * replaced history: its entries are not returned, and unless read-only its
 * segments are removed). Any other damage fails with
 * MR_ECORRUPT and errmsg "wal/0000000000000001.seg offset 4096: checksum
 * mismatch" (file relative to data_dir). Unless read-only, starts the writer
 * thread.
 * On success *out is a new store (free with mr_store_close) and `rec` is
 * filled (release with mr_store_recovered_release). On failure nothing is
 * allocated, *out is NULL and rec is zeroed.
 * Errors: MR_ECORRUPT, MR_ECONFIG (ids differ), MR_EINVAL (bad options),
 * MR_ENOMEM, -errno. */
int mr_store_open(struct mr_store **out, const struct mr_store_options *opts,
                  struct mr_store_recovered *rec, char *errmsg);

/* Takes an exclusive flock on DIR/lock (created if missing), as a read-write
 * mr_store_open does for as long as the store is open, so that only one
 * process writes a data directory. *fd holds the lock until
 * mr_store_unlock(*fd). Errors: MR_EBUSY (another process holds it: errmsg
 * "DIR is in use by another process (a running node?)"), -errno (-ENOENT
 * when DIR does not exist), MR_ENOMEM. Read-only opens take no lock. */
int mr_store_lock(const char *dir, int *fd, char *errmsg);
void mr_store_unlock(int fd); /* -1: nothing */

/* Drains the queue (everything queued is written and synced unless the store
 * has failed), stops the writer thread and frees the store. Must not run
 * concurrently with any other call on `st`. NULL-safe. */
void mr_store_close(struct mr_store *st);

/* ---- the ordered write queue ----------------------------------------------
 * Thread-safety: these functions and mr_store_poll() take the store's mutex;
 * they may be called from any thread, but the queue order is the order of the
 * calls, so the host normally calls them all from its loop thread. None of
 * them does I/O or blocks on the disk. Each returns 0 and, if `seq` is not
 * NULL, the operation's sequence number (increasing from 1): it is durable
 * once mr_store_poll() reports done_seq >= seq. On error nothing is queued.
 * All return MR_EDISKFAIL once the store failed, MR_EINVAL if read-only. */

/* Queues entries for appending. entries[0].index must be the next index (the
 * last queued index + 1; after recovery rec.last_index + 1; after
 * mr_store_reset(st, n) it is n); indexes must be consecutive. Takes its own
 * reference on every payload; `entries` is borrowed. MR_EINVAL otherwise. */
int mr_store_append(struct mr_store *st, const struct mr_raft_entry *entries, size_t n,
                    uint64_t *seq);

/* Queues removal of every entry with index >= from_index (a conflicting
 * suffix). Ordered with appends: the removal is durable before any later
 * append is written. from_index above the last queued index is a no-op.
 * MR_EINVAL if from_index == 0. */
int mr_store_truncate(struct mr_store *st, mr_index from_index, uint64_t *seq);

/* Queues a durable write of term and vote to meta. The host must not send a
 * vote or append response depending on it before done_seq >= *seq. Ordered
 * with appends and truncations: the hard state is durable before any record
 * of an append or truncation queued after it reaches the WAL, so queueing a
 * ready batch's hard state first keeps raft.h rule 1 (never entries of a term
 * durable while that term is not) across a power cut. */
int mr_store_save_hard_state(struct mr_store *st, mr_term term, mr_node_id vote,
                             uint64_t *seq);

/* Queues a durable write of the node and cluster ids to meta. */
int mr_store_save_ids(struct mr_store *st, mr_node_id node_id, uint64_t cluster_id,
                      uint64_t *seq);

/* Queues compaction: deletes whole segments whose entries are all <=
 * up_to_index and records log_start = up_to_index + 1 in meta. Precondition:
 * a snapshot at index >= up_to_index is durable (mr_store_snapshot_* has
 * returned); MR_EINVAL otherwise. */
int mr_store_compact(struct mr_store *st, mr_index up_to_index, uint64_t *seq);

/* Queues discarding the whole log (after installing a snapshot that the log
 * cannot follow); the next append must carry `next_index`, and log_start
 * becomes next_index. Precondition: a durable snapshot at index >=
 * next_index - 1; MR_EINVAL otherwise. */
int mr_store_reset(struct mr_store *st, mr_index next_index, uint64_t *seq);

/* What became durable. All fields describe the state after the operations
 * up to done_seq. */
struct mr_store_progress {
    uint64_t done_seq;        /* every op with seq <= this is durable */
    mr_index persisted_index; /* last durable log index (0 if empty) */
    mr_term persisted_term;   /* its term */
    mr_term term;             /* durable hard state */
    mr_node_id vote;
    int error; /* 0, or the error that failed the store */
    char errmsg[MR_ERRMSG_SIZE];
    int nospace; /* 0, or -ENOSPC / -EDQUOT: writes stalled on a full disk
                  * (the queue waits and is retried; not an error) */
    char nospace_msg[MR_ERRMSG_SIZE]; /* what failed, while nospace */
    uint64_t nospace_retries;         /* full-disk failures so far (total) */
};

/* Copies the current progress into *p. Thread-safe; cheap. Returns p->error. */
int mr_store_poll(struct mr_store *st, struct mr_store_progress *p);

/* Runs everything queued on the calling thread, now, if the writer thread is
 * idle and the store healthy (not failed, not stalled on a full disk): the
 * same batch, writes and fdatasync the writer would have run, without the
 * two thread hand-offs around it. Returns 1 if it ran a batch (its outcome is
 * in mr_store_poll(); `notify` is NOT called for it), 0 if it did nothing
 * (the writer thread runs what is queued, as always). A full disk found here
 * is handed to the writer thread, which retries with its backoff. The caller
 * blocks for the fdatasync: a host calls it where waiting for the disk is
 * what it would do next anyway (a follower about to acknowledge). */
int mr_store_sync_inline(struct mr_store *st);

/* Inline mode (off at open): appends and hard-state writes no longer wake the
 * writer thread when queued; the host promises to call mr_store_sync_inline()
 * soon after queueing them, which runs them or, if it cannot, wakes the
 * writer. Other operations wake the writer as always. Turning it off wakes
 * the writer for whatever is queued. Without this, every append woke the
 * writer thread only for mr_store_sync_inline to find it busy. */
void mr_store_set_inline(struct mr_store *st, int on);

/* Wakes the writer thread for what is queued (inline mode: the host decided
 * not to run it itself). */
void mr_store_wake(struct mr_store *st);

/* Makes a writer stalled on a full disk retry now instead of at the end of
 * its backoff (the host calls it when it freed space). Thread-safe. */
void mr_store_retry_now(struct mr_store *st);

/* 0 if healthy, else the (negative) error that put the store into the failed
 * state; errmsg (may be NULL) receives its description. Thread-safe. */
int mr_store_status(struct mr_store *st, char *errmsg);

/* ---- reading entries back (storage_walread.c) -------------------------------
 * Reading entries back from the WAL: a log cache miss (the node's leader sends
 * a follower entries whose payloads its in-memory log dropped). A reader
 * belongs to one thread; it opens the segment files itself (never the writer
 * thread's descriptors) and keeps a cursor, so reading consecutive indexes
 * costs one pread per entry (header + payload), plus one fstat that tells a
 * segment unlinked by compaction or truncation from a live one. Only for
 * entries that are durable (<= the persisted index) and not compacted away:
 * the writer may be appending to the newest segment meanwhile, and a
 * truncation only ever removes entries after the committed ones. A random
 * read scans at most 63 record headers (the reader remembers one offset every
 * 64 records of each segment it has scanned). Blocking file I/O (page-cache
 * reads, usually): fine on a loop thread for an occasional miss.
 * Thread-compatible, not thread-safe; takes no lock and never touches the
 * struct mr_store (it needs only the data directory). */
struct mr_store_wal_reader;
/* A new reader of data_dir/wal (data_dir borrowed, copied). Lists wal/ (a
 * missing wal/ is an empty log). *out: free with mr_store_wal_reader_close.
 * Errors: MR_ENOMEM, -errno (errmsg says what). */
int mr_store_wal_reader_open(const char *data_dir, struct mr_store_wal_reader **out,
                             char *errmsg);
/* The entry at `index`: fills *out (term, index, type; data = a new mr_rcbuf
 * reference, NULL for an empty payload; every other field 0). If `term` != 0 the
 * record's term must equal it. Returns 0; MR_ENOTFOUND when no segment holds
 * `index` (compacted away, or past the last record written); MR_ECORRUPT
 * (errmsg names file and offset, e.g. "wal/0000000000000041.seg offset 4096:
 * checksum mismatch", or "...: entry 70 has term 1, expected 2") on a
 * checksum, length or index/term mismatch; MR_ENOMEM; or -errno. A term
 * mismatch means the caller's log and the WAL disagree about `index`. For an
 * index that is not yet durable the answer is undefined (MR_ENOTFOUND, or
 * MR_ECORRUPT while the writer is in the middle of writing it). On failure
 * *out is zeroed and owns nothing. */
int mr_store_wal_reader_read(struct mr_store_wal_reader *r, mr_index index, mr_term term,
                             struct mr_raft_entry *out, char *errmsg);
/* Counters for metrics: entries read, segment files opened. */
void mr_store_wal_reader_stats(const struct mr_store_wal_reader *r, uint64_t *reads,
                               uint64_t *opens);
void mr_store_wal_reader_close(struct mr_store_wal_reader *r); /* NULL-safe */

/* ---- snapshots ---------------------------------------------------------------
 * Snapshot calls do synchronous I/O (including fsync): call them off the event
 * loop (a work thread). They are serialised by a snapshot lock and do not
 * interact with the writer thread, except that compaction/reset check the
 * newest durable snapshot index. */

struct mr_store_snap_writer;

/* Starts a snapshot at (index, term) with membership blob `conf` (borrowed,
 * copied; may be NULL if conf_len == 0). Creates a temp file in snap/ and
 * reserves room for the header. The payload goes in either through
 * mr_store_snap_writer_append() or by writing the file descriptor returned by
 * mr_store_snap_writer_fd(): it is positioned at the payload start, so a
 * forked child can simply write() the payload to it and exit, holding no lock.
 * *out owns the temp file until finish/abort. Errors: -errno, MR_ENOMEM,
 * MR_EINVAL (index 0). */
int mr_store_snap_writer_begin(struct mr_store *st, mr_index index, mr_term term,
                               const void *conf, size_t conf_len,
                               struct mr_store_snap_writer **out, char *errmsg);
/* The temp file's fd, positioned at the payload start. Owned by the writer:
 * do not close it in the parent (a forked child may). */
int mr_store_snap_writer_fd(const struct mr_store_snap_writer *w);
/* Appends payload bytes (buffered; `data` borrowed). */
int mr_store_snap_writer_append(struct mr_store_snap_writer *w, const void *data,
                                size_t len, char *errmsg);
/* Completes: measures and checksums the payload (everything after the payload
 * start, however written), writes the header, fsyncs, renames into place,
 * fsyncs snap/, then deletes older snapshots. Frees `w` in all cases; on error
 * the temp file is removed and no snapshot is published. */
int mr_store_snap_writer_finish(struct mr_store_snap_writer *w, char *errmsg);
/* Discards the temp file and frees `w`. NULL-safe. */
void mr_store_snap_writer_abort(struct mr_store_snap_writer *w);

/* One-shot: a snapshot whose payload is in memory (borrowed). */
int mr_store_snapshot_write(struct mr_store *st, mr_index index, mr_term term,
                            const void *conf, size_t conf_len, const void *payload,
                            size_t payload_len, char *errmsg);

/* Reading a snapshot (to send it to a peer or to restore it). */
struct mr_store_snap_reader;
struct mr_store_snap_info {
    mr_index index;
    mr_term term;
    uint64_t size;         /* payload bytes */
    uint32_t payload_crc;  /* CRC32C of the payload */
    struct mr_rcbuf *conf; /* membership blob; owned by the reader */
};
/* Opens the newest snapshot of `st` (MR_ENOTFOUND if none) after checking its
 * header. *out must be closed with mr_store_snap_reader_close(). The file
 * stays readable even if a newer snapshot replaces it meanwhile. */
int mr_store_snap_reader_open(struct mr_store *st, struct mr_store_snap_reader **out,
                              char *errmsg);
/* Same for a given snapshot file path (borrowed). MR_ECORRUPT if the header
 * is damaged. */
int mr_store_snap_reader_open_path(const char *path, struct mr_store_snap_reader **out,
                                   char *errmsg);
/* Borrowed view of the header; valid until close. */
const struct mr_store_snap_info *
mr_store_snap_reader_info(const struct mr_store_snap_reader *r);
/* Reads up to `len` payload bytes at payload offset `off` into buf; returns
 * the count (0 at the end) or a negative error. Thread-compatible (pread). */
ssize_t mr_store_snap_reader_read(struct mr_store_snap_reader *r, uint64_t off, void *buf,
                                  size_t len);
/* The whole payload mapped read-only (the pages are the page cache's: no
 * copy, no anonymous memory), valid until mr_store_snap_reader_unmap or
 * close; NULL if it cannot be mapped (the caller then reads). Not
 * thread-safe against another call on the same reader. */
const unsigned char *mr_store_snap_reader_map(struct mr_store_snap_reader *r);
void mr_store_snap_reader_unmap(struct mr_store_snap_reader *r);
/* Reads the whole payload (through a mapping when it can) and checks its
 * checksum: 0 or MR_ECORRUPT. */
int mr_store_snap_reader_verify(struct mr_store_snap_reader *r, char *errmsg);
void mr_store_snap_reader_close(struct mr_store_snap_reader *r); /* NULL-safe */

/* Receiving a snapshot from a leader, chunk by chunk, into a temp file. */
struct mr_store_snap_receiver;
/* Starts receiving the snapshot at (index, term) with membership `conf`
 * (borrowed). A receiver already in progress for another snapshot should be
 * aborted by the caller first. */
int mr_store_snap_receiver_begin(struct mr_store *st, mr_index index, mr_term term,
                                 const void *conf, size_t conf_len,
                                 struct mr_store_snap_receiver **out, char *errmsg);
/* Writes a chunk at payload offset `off` (borrowed data). Chunks must arrive
 * in order: `off` must equal the bytes received so far (MR_EINVAL otherwise;
 * a resent chunk with an earlier offset whose bytes are already in is
 * accepted and ignored). */
int mr_store_snap_receiver_write(struct mr_store_snap_receiver *rx, uint64_t off,
                                 const void *data, size_t len, char *errmsg);
/* Bytes received so far. */
uint64_t mr_store_snap_receiver_offset(const struct mr_store_snap_receiver *rx);
/* Finishes: writes the header, fsyncs, re-reads and validates the file
 * (header and payload checksums; and if has_crc, that the payload's CRC32C
 * equals expected_crc), renames it into place, fsyncs snap/ and removes
 * older snapshots. Frees rx in all cases. */
int mr_store_snap_receiver_finish(struct mr_store_snap_receiver *rx, int has_crc,
                                  uint32_t expected_crc, char *errmsg);
void mr_store_snap_receiver_abort(struct mr_store_snap_receiver *rx); /* NULL-safe */

/* Index of the newest durable snapshot (0 if none). Thread-safe. */
mr_index mr_store_snapshot_index(struct mr_store *st);

/* ---- backups (storage_backup.c) ----------------------------------------------
 * A backup file is one snapshot file wrapped with what a restore needs to
 * know and a checksum over the whole:
 *   0  "MRBACKUP"   8 u32 version (1)   12 u32 header length H (64 + names)
 *   16 u64 index    24 u64 term         32 u64 snapshot file length L
 *   40 u64 created (ms since the epoch) 48 u64 cluster id (as in meta)
 *   56 u16 cluster name length  58 u16 node name length  60 u32 0
 *   64 cluster name, node name (the source's; informational)
 *   H  the snapshot file, byte for byte as in snap/ (its own header holds the
 *      membership at `index` and the CRC32C of its payload)
 *   H+L u32 CRC32C of bytes 0..H+L-1
 * The trailing checksum lets a writer stream the file without knowing it
 * in advance; a truncated file fails the length check before anything else. */
#define MR_STORE_BACKUP_HEADER 64u /* bytes, before the names */
#define MR_STORE_BACKUP_NAME_MAX 255u
struct mr_store_backup_info {
    mr_index index;
    mr_term term;
    uint64_t created_ms;
    uint64_t cluster_id;
    char cluster_name[MR_STORE_BACKUP_NAME_MAX + 1];
    char node_name[MR_STORE_BACKUP_NAME_MAX + 1];
    uint64_t file_size;    /* the whole backup file */
    uint32_t checksum;     /* the trailing CRC32C */
    uint64_t payload_off;  /* where the snapshot payload starts in the file */
    uint64_t payload_size; /* its bytes */
    struct mr_rcbuf *conf; /* membership at `index` (owned; release below) */
};
void mr_store_backup_info_release(struct mr_store_backup_info *info); /* NULL-safe */

/* A backup produced piece by piece, in order, so a server can send one of any
 * size without holding it in memory: the header (built at init), the
 * snapshot file read from the reader's open file (which stays readable even
 * if a newer snapshot replaces it), then the CRC32C computed on the way. */
struct mr_store_backup_stream {
    struct mr_store_snap_reader *reader; /* borrowed; must outlive the stream */
    unsigned char head[MR_STORE_BACKUP_HEADER + 2 * MR_STORE_BACKUP_NAME_MAX];
    size_t head_len;   /* H */
    uint64_t snap_len; /* L */
    uint64_t size;     /* the whole backup: H + L + 4 */
    uint64_t pos;      /* bytes produced so far */
    uint32_t crc;      /* over bytes [0, min(pos, H + L)) */
};
/* Prepares a stream over reader `r` (borrowed). Names are copied (truncated
 * to MR_STORE_BACKUP_NAME_MAX). Cannot fail. */
void mr_store_backup_stream_init(struct mr_store_backup_stream *bs,
                                 struct mr_store_snap_reader *r, const char *cluster_name,
                                 const char *node_name, uint64_t cluster_id,
                                 uint64_t created_ms);
/* Produces the next `len` bytes (1 <= len <= size - pos) into buf, reading
 * the snapshot with pread (blocking: call it off the loop, e.g. on a work
 * thread; one call at a time). Once pos == size, bs->crc is the checksum.
 * Errors: MR_ECORRUPT (the file is shorter than its header said), -errno;
 * errmsg says where. */
int mr_store_backup_stream_read(struct mr_store_backup_stream *bs, void *buf, size_t len,
                                char *errmsg);

/* The whole backup file in memory (mr_store_backup_stream in one piece; for
 * tools and tests). On success *out is an mr_malloc'd buffer of *len bytes
 * (the caller frees it) and *checksum its trailing CRC32C. Errors: MR_ENOMEM,
 * and those of mr_store_backup_stream_read. */
int mr_store_backup_encode(struct mr_store_snap_reader *r, const char *cluster_name,
                           const char *node_name, uint64_t cluster_id,
                           uint64_t created_ms, unsigned char **out, size_t *len,
                           uint32_t *checksum, char *errmsg);

/* Checks a backup file at `path` (borrowed): its length, the trailing
 * checksum over the whole file, the header, and the embedded snapshot's
 * header and payload checksum. On success fills *info (release it). Errors:
 * MR_ECORRUPT with errmsg "backup.mrb offset N: ..." (truncated, checksum
 * mismatch, not a backup), -errno (cannot read), MR_ENOMEM. */
int mr_store_backup_check(const char *path, struct mr_store_backup_info *info,
                          char *errmsg);

/* Seeds `data_dir` (created if missing; refused with MR_EEXISTS if it holds
 * anything) from the backup at `path`: checks it (as above), then writes the
 * snapshot with membership `conf` (borrowed; replaces the backup's), a meta
 * with `node_id`, `cluster_id`, term = the snapshot's term and log start
 * index + 1, and an empty log, everything fsynced. On failure whatever was
 * created inside data_dir is removed again. *info as for check. */
int mr_store_backup_restore(const char *path, const char *data_dir, mr_node_id node_id,
                            uint64_t cluster_id, const void *conf, size_t conf_len,
                            struct mr_store_backup_info *info, char *errmsg);

/* ---- forcing a new cluster (storage_force.c) -------------------------------
 * `moonraft data recover DIR --force-new-cluster`: after a permanent loss of
 * quorum, rewrites a stopped node's data so that it starts as the only voter
 * of its cluster, keeping its whole log and state. */
struct mr_store_force_report {
    mr_node_id node_id;
    mr_index snap_index;
    mr_index last_index; /* last entry before the new configuration */
    mr_term last_term;
    mr_term old_term;          /* hard state term before */
    mr_index old_config_index; /* where the replaced configuration came from */
    unsigned old_voters, old_servers;
    mr_index config_index; /* the new configuration entry */
    mr_term new_term;
    char self_context[MR_RAFT_CONFIG_MAX_CONTEXT + 1];
};
/* Opens `dir` read-write (its lock: MR_EBUSY while a node runs there;
 * MR_ENOTFOUND when it holds no meta), finds the latest configuration (the
 * last CONFIG entry of the log, else the snapshot's) and this node in it
 * (MR_ENOTFOUND if absent), then durably writes hard state (new_term, no
 * vote) with new_term = max(term, last log term) + 1 and appends at
 * last_index + 1, in new_term, a CONFIG entry holding only this node as a
 * voter (same context). The Raft core takes the last CONFIG entry of the
 * log as the configuration, so on start the node is a one-voter cluster; it
 * elects itself and commits everything in its log. Fills *rep. */
int mr_store_force_new_cluster(const char *dir, struct mr_store_force_report *rep,
                               char *errmsg);

/* ---- the data tool ------------------------------------------------------------
 * `moonraft data verify DIR` / `moonraft data dump DIR`: argv[0] is "verify"
 * or "dump", argv[1] the data dir. Read-only. `moonraft data powercut DIR
 * IMAGE` (tests) applies mr_store_powerloss_cut(). Prints to `out`, diagnostics to
 * `err`. Returns the exit code: 0 ok, 2 usage, 3 corrupt, 1 other errors. */
int mr_store_tool_main(int argc, char **argv, FILE *out, FILE *err);

#endif /* MR_STORAGE_H */
