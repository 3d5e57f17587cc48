/* node_log_cache: a bounded in-memory log.
 *
 * The core keeps every entry since the last snapshot (and the trailing ones
 * behind it) so that a leader can send them to a follower that lags. With a
 * large state that log is tens of MiB per node (up to snapshot_log_mb or a
 * quarter of the state, plus the trailing entries), held only for a follower
 * that may never need it: every entry is in the WAL anyway. So after every
 * step the node asks the core to drop the payloads of the oldest entries
 * beyond o->log_cache_bytes (mr_raft_log_evict: only entries durable here and
 * already applied, never configuration entries), and when an AppendEntries
 * carries such an entry, reads it back from the WAL just before the message
 * leaves (a private reader on the loop thread, its own descriptors, a cursor:
 * one pread per entry for a follower catching up in order).
 *
 * What cannot be read back: an entry compacted away between the core's
 * building the message and its sending (a snapshot finished meanwhile): the
 * message is dropped and Raft sends again (a snapshot, now). A record that
 * fails its checksum, or whose index, term, type or length differ from what
 * the core remembers, is a damaged WAL under acknowledged data: a disk
 * failure, handled as one (the node leaves the cluster until restarted). */
#include "node/node_int.h"

#include "storage/storage.h"

#include <string.h>

#define DEFAULT_CACHE_BYTES ((uint64_t)8 << 20)
#define UNTRIMMED_MAX ((uint64_t)4 << 20)

void mr_node_log_cache_trim(struct mr_node *n)
{
    uint64_t budget;
    size_t max, dropped;
    if (!n->raft_ready || n->o == NULL) return; /* not started (unit tests step bare nodes) */
    budget = n->o->log_cache_bytes ? n->o->log_cache_bytes : DEFAULT_CACHE_BYTES;
    max = budget > (uint64_t)SIZE_MAX ? SIZE_MAX : (size_t)budget;
    if (mr_raft_log_resident_bytes(&n->raft) <= max) return;
    dropped = mr_raft_log_evict(&n->raft, max, n->applied);
    n->cache_evicted_bytes += dropped;
    /* the allocator keeps what was freed: returned to the system once the
     * node is idle, as after a compaction */
    n->cache_untrimmed += dropped;
    if (n->cache_untrimmed >= UNTRIMMED_MAX) {
        n->cache_untrimmed = 0;
        mr_node_trim_soon(n);
    }
    if (dropped > 0 && n->m_cache_evicted != NULL)
        mr_http_metric_add(n->m_cache_evicted, (double)dropped);
}

int mr_node_log_cache_fill_entry(struct mr_node *n, struct mr_raft_entry *e, char *errmsg)
{
    struct mr_raft_entry got;
    size_t len;
    int rv;
    if (!e->evicted) return 0;
    if (n->wal_reader == NULL) {
        rv = mr_store_wal_reader_open(n->o->data_dir, &n->wal_reader, errmsg);
        if (rv != 0) return rv == MR_ENOMEM ? MR_EUNAVAIL : rv;
    }
    memset(&got, 0, sizeof got);
    rv = mr_store_wal_reader_read(n->wal_reader, e->index, e->term, &got, errmsg);
    if (rv == MR_ENOTFOUND) {
        struct mr_raft_status st;
        mr_raft_status(&n->raft, &st);
        if (e->index < st.first_index) return MR_EUNAVAIL; /* compacted since the message was built */
    }
    if (rv == MR_ENOMEM) return MR_EUNAVAIL;
    if (rv != 0) return rv;
    len = got.data != NULL ? got.data->len : 0;
    if (got.type != e->type || len != e->evicted_len) {
        mr_errmsg_printf(errmsg,
                         "entry %llu in the WAL has type %u and %zu bytes, the log had type "
                         "%u and %u bytes",
                         (unsigned long long)e->index, (unsigned)got.type, len,
                         (unsigned)e->type, (unsigned)e->evicted_len);
        mr_rcbuf_unref(got.data);
        return MR_ECORRUPT;
    }
    e->data = got.data;
    e->evicted = 0;
    e->evicted_len = 0;
    n->cache_misses++;
    if (n->m_cache_misses != NULL) mr_http_metric_add(n->m_cache_misses, 1);
    return 0;
}

int mr_node_log_cache_fill(struct mr_node *n, struct mr_raft_msg *m, char *errmsg)
{
    uint32_t i;
    for (i = 0; i < m->n_entries; i++) {
        int rv = mr_node_log_cache_fill_entry(n, &m->entries[i], errmsg);
        if (rv != 0) return rv;
    }
    return 0;
}

void mr_node_log_cache_close(struct mr_node *n)
{
    mr_store_wal_reader_close(n->wal_reader);
    n->wal_reader = NULL;
}
