/* raft: the pure, deterministic Raft consensus core.
 *
 * OWNERSHIP NOTE FOR NOW: this header is being written by the core's owner.
 * The log-entry type below is already a contract used by src/storage and
 * src/net and must not change shape. */
#ifndef MR_RAFT_H
#define MR_RAFT_H

#include "util/util.h"

/* What a log entry carries. */
enum mr_raft_entry_type {
    MR_RAFT_ENTRY_NORMAL = 1, /* a client command for the state machine */
    MR_RAFT_ENTRY_NOOP = 2,   /* appended by a new leader at the start of its term */
    MR_RAFT_ENTRY_CONFIG = 3, /* an encoded cluster configuration (membership) */
};

/* One log entry. `data` is a refcounted payload shared by the log, the WAL,
 * the network and apply (may be NULL for an empty payload). Whoever stores an
 * entry takes its own reference with mr_rcbuf_ref() and drops it when done. */
struct mr_raft_entry {
    mr_term term;
    mr_index index;
    uint8_t type; /* enum mr_raft_entry_type */
    struct mr_rcbuf *data;
};

#endif /* MR_RAFT_H */
