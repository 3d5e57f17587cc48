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

/* Message kinds exchanged between cores (carried by src/net frames). */
enum mr_raft_msg_type {
    MR_RAFT_MSG_APPEND = 1,       /* AppendEntries (also heartbeats: n_entries may be 0) */
    MR_RAFT_MSG_APPEND_RESP = 2,  /* reject + hints, or the matched index */
    MR_RAFT_MSG_VOTE = 3,         /* RequestVote */
    MR_RAFT_MSG_VOTE_RESP = 4,
    MR_RAFT_MSG_PREVOTE = 5,      /* Pre-Vote (thesis 9.6): term is the term it would use */
    MR_RAFT_MSG_PREVOTE_RESP = 6,
    MR_RAFT_MSG_HEARTBEAT = 7,    /* leader liveness + commit, carries ctx for ReadIndex */
    MR_RAFT_MSG_HEARTBEAT_RESP = 8,
    MR_RAFT_MSG_SNAPSHOT = 9,     /* one chunk of an InstallSnapshot transfer */
    MR_RAFT_MSG_SNAPSHOT_RESP = 10,
    MR_RAFT_MSG_TIMEOUT_NOW = 11, /* leadership transfer: start an election now */
    MR_RAFT_MSG_READ_INDEX = 12,  /* follower asks the leader for a read index */
    MR_RAFT_MSG_READ_INDEX_RESP = 13,
};
#define MR_RAFT_MSG_TYPE_MAX 13

/* One message. A flat struct (like etcd's raftpb.Message): each type uses the
 * fields it needs and leaves the rest zero. src/net encodes every field, so a
 * new field here means a new codec version.
 *
 * Ownership: a message handed to the host in a ready batch owns references to
 * its entries' payloads, `snap_config` and `snap_chunk`; the host drops them by
 * calling mr_raft_msg_release() (or lets the ready batch release them). A
 * message passed to the core in a STEP event is borrowed: the core takes its
 * own references to whatever it keeps. */
struct mr_raft_msg {
    uint8_t type; /* enum mr_raft_msg_type */
    uint8_t reject;        /* responses: 1 = rejected / vote not granted */
    uint8_t snap_last;     /* SNAPSHOT: this is the final chunk */
    uint8_t pad_;
    mr_node_id from;
    mr_node_id to;
    mr_term term;          /* sender's term (PREVOTE: the term it would campaign in) */
    mr_index index;        /* APPEND: prev_log_index; *_RESP: match/last index; VOTE: last log index */
    mr_term log_term;      /* APPEND: prev_log_term; VOTE: last log term */
    mr_index commit;       /* leader's commit index (APPEND, HEARTBEAT) */
    mr_index reject_hint;  /* APPEND_RESP reject: follower's conflict index */
    mr_term hint_term;     /* APPEND_RESP reject: term at the conflict index (0 if none) */
    uint64_t ctx;          /* HEARTBEAT / READ_INDEX: read context; VOTE: 1 = transfer (ignore lease) */
    uint32_t n_entries;
    struct mr_raft_entry *entries; /* APPEND: entries after (index, log_term) */
    /* SNAPSHOT: chunk `snap_offset` of the snapshot at (snap_index, snap_term). */
    mr_index snap_index;
    mr_term snap_term;
    uint64_t snap_offset;
    struct mr_rcbuf *snap_config; /* encoded configuration at snap_index (first chunk) */
    struct mr_rcbuf *snap_chunk;  /* bytes of this chunk */
};

#endif /* MR_RAFT_H */
