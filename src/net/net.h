/* net: the peer transport (libuv TCP) and its wire codec.
 *
 * Two layers, one header:
 *
 *  1. The wire codec (pure functions, no I/O): frames and the encoding of
 *     `struct mr_raft_msg`, forwarded client requests and snapshot chunks.
 *     Every decoder treats its input as hostile: it checks every length and
 *     count against the bytes actually present and against fixed caps before
 *     it allocates, and answers MR_EMALFORMED with a reason in `errmsg`.
 *
 *  2. The transport: one `struct mr_net` per node, living on the node's uv
 *     loop. It listens on the peer port, dials every peer, runs the
 *     handshake (protocol version, cluster id, node ids and, when a cluster
 *     secret is configured, an HMAC-SHA-256 challenge-response), and moves
 *     frames. It never blocks: each peer has a bounded queue; a full queue or
 *     an unreachable peer drops the message and Raft retries.
 *
 * Connections: each node DIALS every peer for its OWN outgoing traffic and
 * ACCEPTS inbound connections for incoming traffic, so a pair of nodes uses
 * two TCP connections, one per direction. Why: no tie-break race when both
 * sides dial at once, no connection hand-over, each direction has its own
 * queue and backoff, and a reply (APPEND_RESP, FORWARD_REPLY) simply goes
 * out on the replier's own outbound connection. The cost (two sockets per
 * pair) is irrelevant for a handful of nodes. Consequence for the node: to
 * answer node X it must know X's address (mr_net_set_peer) — messages from a
 * node that is not a configured peer can be received (unless
 * is_strict_peers) but not answered.
 *
 * Wire format (all integers little-endian):
 *
 *   frame   = u32 length | u8 version (=MR_NET_WIRE_VERSION) | u8 type | payload
 *             `length` counts payload bytes only (not the 6 header bytes) and
 *             is checked against the maximum frame size before anything is
 *             allocated. Before the handshake completes the limit is
 *             MR_NET_HANDSHAKE_MAX_FRAME (4 KiB), so an unauthenticated
 *             client cannot make us allocate more.
 *
 *   HANDSHAKE       dialer->acceptor: u16 proto version | u8 flags (bit0: has
 *                   secret) | u8 0 | u64 from | u64 to (0 = any) |
 *                   u8 n + cluster id | u8 n + node name | 32-byte nonce
 *   HANDSHAKE_REPLY acceptor->dialer: u8 status (0 ok, 1 refused) | u8 flags
 *                   (bit0: has proof) | u16 proto version | u64 from |
 *                   u8 n + node name | 32-byte nonce | [32-byte proof] |
 *                   u16 n + reason text (refused only)
 *   HANDSHAKE_PROOF dialer->acceptor: u8 status (0 ok, 1 refused) | u8 flags
 *                   (bit0: has proof) | [32-byte proof] |
 *                   u16 n + reason text (refused only)
 *   RAFT            u8 type | u8 reject | u8 snap_last | u8 0 |
 *                   u64 from, to, term, index, log_term, commit, reject_hint,
 *                   hint_term, ctx, snap_index, snap_term, snap_offset |
 *                   snap_config: u8 present | u32 n | n bytes |
 *                   snap_chunk:  u8 present | u32 n | n bytes |
 *                   u32 n_entries | n_entries x (u64 term | u64 index |
 *                   u8 type | u8 has_data | [u32 n | n bytes])
 *   FORWARD         u64 request id | opaque bytes (rest of the frame)
 *   FORWARD_REPLY   u64 request id | opaque bytes
 *   SNAPSHOT_CHUNK  u64 index | u64 term | u64 offset | u8 flags (bit0: last)
 *                   | opaque bytes
 *
 *   proofs: acceptor = HMAC-SHA-256(secret, "moonraft/1 acceptor" | ctx),
 *           dialer   = HMAC-SHA-256(secret, "moonraft/1 dialer" | ctx),
 *           ctx = u8 n + cluster id | u64 dialer id | u64 acceptor id |
 *                 dialer nonce | acceptor nonce.
 *   The dialer checks the acceptor's proof before it proves itself, so a
 *   fake acceptor learns nothing; the secret never travels and never appears
 *   in any message or event text. Nonces come from getrandom().
 *
 * Ordering: frames to one peer leave in send order on one connection and
 * arrive in that order; frames in flight when a connection dies are lost.
 *
 * TLS (optional, mr_net_options.tls_server/tls_client): every connection
 * first runs a TLS handshake (the dialer is the TLS client and presents the
 * client context's certificate; the acceptor requires one when its server
 * context verifies peers), then the moonraft handshake above inside it; the
 * HMAC challenge-response still runs when a secret is set. Peers are
 * authenticated by a certificate from the cluster CA, not by address. It
 * fails closed: a transport with TLS refuses a plaintext dialer (answering it
 * with a plaintext HANDSHAKE_REPLY refusal it can log), and one without TLS
 * refuses a TLS ClientHello, each with a reason that says so.
 *
 * Threading: everything here runs on the loop thread. Nothing logs (STYLE 6):
 * connection events go to the `on_event` callback with a reason text. */
#ifndef MR_NET_H
#define MR_NET_H

#include <uv.h>

#include "raft/raft.h"
#include "tls/tls.h"
#include "util/util.h"

/* ===== wire codec ========================================================= */

#define MR_NET_WIRE_VERSION 1
#define MR_NET_FRAME_HEADER_SIZE 6 /* bytes: u32 length, u8 version, u8 type */
#define MR_NET_DEFAULT_MAX_FRAME (64u * 1024 * 1024) /* bytes of payload */
#define MR_NET_HANDSHAKE_MAX_FRAME 4096 /* bytes, until the handshake is done */
#define MR_NET_MAX_ENTRIES (1u << 20)   /* entries in one RAFT message */
#define MR_NET_NAME_MAX 64              /* bytes in a cluster id or node name */
#define MR_NET_REASON_MAX 200           /* bytes of a refusal reason on the wire */
#define MR_NET_NONCE_SIZE 32
#define MR_NET_MAC_SIZE 32
#define MR_NET_FORWARD_HEADER_SIZE 8
#define MR_NET_SNAPSHOT_HEADER_SIZE 25

enum mr_net_frame_type {
    MR_NET_FRAME_HANDSHAKE = 1,
    MR_NET_FRAME_HANDSHAKE_REPLY = 2,
    MR_NET_FRAME_HANDSHAKE_PROOF = 3,
    MR_NET_FRAME_RAFT = 4,
    MR_NET_FRAME_FORWARD = 5,
    MR_NET_FRAME_FORWARD_REPLY = 6,
    MR_NET_FRAME_SNAPSHOT_CHUNK = 7,
};
#define MR_NET_FRAME_TYPE_MAX 7

/* An encoded frame, ready for uv_write(stream, bufs, n_bufs). Small parts
 * (headers, payloads under 4 KiB) are copied into `head`; larger payloads are
 * referenced in place and kept alive by the references in `refs`, so a 1 MiB
 * entry costs no copy. Every field is owned by the wbuf; drop it all with
 * mr_net_wbuf_release(). */
struct mr_net_wbuf {
    uv_buf_t *bufs;
    unsigned n_bufs;
    unsigned n_refs;
    unsigned char *head;     /* owned */
    struct mr_rcbuf **refs;  /* owned array of owned references */
    size_t total;            /* frame size: header + payload, bytes */
};

/* Releases everything a wbuf owns and zeroes it. Idempotent on a zeroed wbuf. */
void mr_net_wbuf_release(struct mr_net_wbuf *wb);

/* One decoded frame; `payload` points into the caller's buffer. */
struct mr_net_frame {
    uint8_t version;
    uint8_t type; /* enum mr_net_frame_type */
    const uint8_t *payload;
    size_t len;
};

/* Looks for one complete frame at the start of [buf, buf+len).
 * Returns 0 and sets *consumed to the frame's total size (> 0) and fills
 * `out` (payload borrowed from buf) when a whole frame is there; returns 0
 * with *consumed = 0 when more bytes are needed (header or payload
 * incomplete). Returns MR_EMALFORMED (with errmsg) for a wrong version, an
 * unknown type, or a length above `max_frame`, all judged from the 6 header
 * bytes alone, before the payload arrives. */
int mr_net_frame_decode(const uint8_t *buf, size_t len, size_t max_frame,
                        struct mr_net_frame *out, size_t *consumed,
                        char *errmsg);

/* Encodes `m` (borrowed) as a complete RAFT frame into `out` (zeroed by the
 * callee first; owned by the caller on success, untouched-but-zero on
 * failure). Every field of the struct travels; entry payloads and the
 * snapshot buffers are referenced, not copied, when large.
 * Errors: MR_EINVAL (n_entries > 0 with entries == NULL, or a count above
 * MR_NET_MAX_ENTRIES), MR_ETOOBIG (frame payload would exceed `max_frame`),
 * MR_ENOMEM. */
int mr_net_msg_encode(const struct mr_raft_msg *m, size_t max_frame,
                      struct mr_net_wbuf *out, char *errmsg);

/* Decodes the payload of a RAFT frame (the bytes after the 6-byte header)
 * from untrusted input. On success `out` holds a message whose `entries`
 * array (mr_malloc'd) and whose payload rcbufs (one fresh rcbuf per entry
 * with data, and for snap_config/snap_chunk) are owned by the caller: call
 * mr_net_msg_release(). A NULL payload and an empty one are distinguished
 * on the wire and round-trip exactly. On failure `out` is zeroed and owns
 * nothing. Errors: MR_EMALFORMED (truncated, trailing bytes, unknown message
 * or entry type, a flag other than 0/1, counts or lengths that exceed what is
 * present — checked before allocating), MR_ENOMEM. */
int mr_net_msg_decode(const uint8_t *buf, size_t len, struct mr_raft_msg *out,
                      char *errmsg);

/* Drops the references a decoded (or otherwise owned) message holds: every
 * entry's data, snap_config, snap_chunk, and frees `entries`. Leaves the
 * message zeroed. NULL-safe. */
void mr_net_msg_release(struct mr_raft_msg *m);

/* FORWARD / FORWARD_REPLY frame: u64 request id + opaque bytes.
 * encode: copies `data` (may be NULL when len == 0) into `out` (owned by the
 * caller on success). `type` must be MR_NET_FRAME_FORWARD or
 * MR_NET_FRAME_FORWARD_REPLY. Errors: MR_EINVAL, MR_ETOOBIG, MR_ENOMEM.
 * decode: `*data` points into `buf` (borrowed). Errors: MR_EMALFORMED. */
int mr_net_forward_encode(uint8_t type, uint64_t req_id, const void *data,
                          size_t len, size_t max_frame,
                          struct mr_net_wbuf *out, char *errmsg);
int mr_net_forward_decode(const uint8_t *buf, size_t len, uint64_t *req_id,
                          const uint8_t **data, size_t *data_len,
                          char *errmsg);

/* SNAPSHOT_CHUNK frame: the node streams snapshot files with it. */
struct mr_net_snapshot_chunk {
    mr_index index;      /* snapshot's last included index */
    mr_term term;        /* and its term */
    uint64_t offset;     /* byte offset of `data` in the snapshot file */
    uint8_t is_last;     /* 1 = final chunk */
    const uint8_t *data; /* decode: borrowed from the frame buffer */
    size_t len;
};
/* encode: `data` (may be NULL for an empty chunk) is referenced, not copied,
 * when large; `chunk->data`/`len` are ignored. Errors: MR_EINVAL (is_last not
 * 0/1), MR_ETOOBIG, MR_ENOMEM.
 * decode: fills `out` with data borrowed from `buf`. Errors: MR_EMALFORMED. */
int mr_net_snapshot_chunk_encode(const struct mr_net_snapshot_chunk *chunk,
                                 struct mr_rcbuf *data, size_t max_frame,
                                 struct mr_net_wbuf *out, char *errmsg);
int mr_net_snapshot_chunk_decode(const uint8_t *buf, size_t len,
                                 struct mr_net_snapshot_chunk *out,
                                 char *errmsg);

/* HMAC-SHA-256 (RFC 2104 over libmd's SHA-256). Any key length. */
void mr_net_hmac_sha256(const void *key, size_t key_len, const void *msg,
                        size_t msg_len, uint8_t out[MR_NET_MAC_SIZE]);

/* ===== transport ========================================================== */

struct mr_net;

enum mr_net_event_type {
    MR_NET_EV_UP = 1,  /* handshake completed; traffic flows */
    MR_NET_EV_DOWN,    /* an established connection closed (reason says why) */
    MR_NET_EV_FAILED,  /* a connection attempt failed before the handshake
                          completed: connect error, timeout, garbage, closed */
    MR_NET_EV_REFUSED, /* the handshake was refused by policy, by either side:
                          version, cluster id, secret, unknown/unexpected node */
};

/* What the transport reports; every pointer is borrowed for the duration of
 * the callback. */
struct mr_net_event {
    int type;             /* enum mr_net_event_type */
    int is_inbound;       /* 1: a connection the peer dialed to us */
    mr_node_id peer_id;   /* 0 when not known yet */
    const char *peer_name; /* "" when not known yet; printable ASCII */
    const char *addr;     /* remote address, "host:port" text */
    const char *reason;   /* human text; "" for UP. Printable ASCII. */
    unsigned attempt;     /* outbound FAILED/REFUSED: consecutive failures */
    uint64_t retry_in_ms; /* outbound DOWN/FAILED/REFUSED: next attempt in */
};

/* Callbacks, all on the loop thread, and never from inside an mr_net_*()
 * call (they run from loop callbacks). They may call any mr_net function,
 * including mr_net_close() and mr_net_remove_peer(). Pointers passed to them
 * are borrowed for the duration of the call only. Any may be NULL. */
struct mr_net_callbacks {
    /* A RAFT frame from authenticated node `from` (msg->from == from is
     * checked by the transport). `msg` is borrowed: take references
     * (mr_rcbuf_ref) to whatever you keep; the transport releases it. */
    void (*on_raft_msg)(struct mr_net *net, mr_node_id from,
                        const struct mr_raft_msg *msg);
    void (*on_forward)(struct mr_net *net, mr_node_id from, uint64_t req_id,
                       const uint8_t *data, size_t len);
    void (*on_forward_reply)(struct mr_net *net, mr_node_id from,
                             uint64_t req_id, const uint8_t *data, size_t len);
    void (*on_snapshot_chunk)(struct mr_net *net, mr_node_id from,
                              const struct mr_net_snapshot_chunk *chunk);
    void (*on_event)(struct mr_net *net, const struct mr_net_event *ev);
};

/* Options; zero fields take the defaults in brackets. Strings are copied. */
struct mr_net_options {
    mr_node_id self_id;        /* required, nonzero */
    const char *self_name;     /* node name like "n1" [""], <= 64 printable bytes */
    const char *cluster_id;    /* required, 1..64 printable bytes */
    const char *secret;        /* cluster secret; NULL or "" = none */
    const char *listen_addr;   /* "host:port" or "[v6]:port"; port 0 = any.
                                  NULL: mr_net_listen() is not allowed. */
    size_t max_frame;          /* max frame payload, bytes [64 MiB] */
    size_t queue_max_bytes;    /* per peer, queued + in flight [64 MiB] */
    unsigned queue_max_frames; /* per peer, queued + in flight [4096] */
    unsigned backoff_min_ms;   /* first retry delay [50] */
    unsigned backoff_max_ms;   /* retry delay cap [5000] */
    unsigned connect_timeout_ms; /* connect + handshake must finish [3000] */
    unsigned io_timeout_ms;    /* TCP_USER_TIMEOUT: unacked data kills the
                                  connection after this long [15000] */
    int is_strict_peers;       /* 1: refuse inbound nodes not set as peers */
    /* TLS: both or neither (NULL = plaintext). Referenced by the transport
     * (the caller keeps its own references). tls_server accepts, tls_client
     * dials; see mr_net_set_tls for a reload. */
    struct mr_tls_ctx *tls_server;
    struct mr_tls_ctx *tls_client;
};

/* Counters for /metrics and status. */
struct mr_net_peer_stats {
    int is_up;
    size_t queued_bytes;       /* queued + in flight */
    unsigned queued_frames;
    uint64_t sent_frames;      /* handed to the socket */
    uint64_t dropped_frames;   /* refused by send (full/unreachable) or lost
                                  when a connection failed */
    uint64_t connects;         /* successful handshakes */
};

typedef void (*mr_net_close_cb)(struct mr_net *net);

struct mr_net_peer; /* private */

/* The transport. Allocated by the caller; all fields are private except
 * `data`. Must stay at a fixed address from mr_net_init() until the close
 * callback has run. */
struct mr_net {
    void *data; /* for the caller */
    /* private: */
    uv_loop_t *loop;
    struct mr_net_callbacks cb;
    struct mr_net_options opts; /* strings below are owned copies */
    char *self_name;
    char *cluster_id;
    char *secret;
    size_t secret_len;
    char *listen_addr;
    uv_tcp_t listener;
    uv_timer_t sentinel; /* always open: makes the close callback async */
    uv_prepare_t flusher; /* writes every peer's queued frames before the loop blocks */
    struct mr_queue dirty; /* peers with frames queued since the last flush */
    int is_listening;
    int is_closing;
    int is_paused; /* test hook: inbound reading stopped */
    unsigned pending; /* open handles + in-flight requests before close cb */
    mr_net_close_cb close_cb;
    struct mr_queue peers;   /* struct mr_net_peer */
    struct mr_queue inbound; /* accepted connections */
    struct mr_rand rand;     /* backoff jitter */
    struct mr_tls_ctx *tls_server; /* referenced; NULL: plaintext */
    struct mr_tls_ctx *tls_client; /* referenced */
    char *tls_rbuf;                /* ciphertext read buffer (one loop thread) */
    char errmsg[MR_ERRMSG_SIZE];
};

/* Validates and copies `opts`, seeds the jitter PRNG from getrandom().
 * `loop`, `cbs` (copied) borrowed; `data` stored in net->data.
 * Nothing runs until mr_net_listen()/mr_net_set_peer(). On error nothing is
 * left to close. Errors: MR_EINVAL (errmsg in net->errmsg: missing self_id,
 * bad cluster id or name, bad limits), MR_ENOMEM. */
int mr_net_init(struct mr_net *net, uv_loop_t *loop,
                const struct mr_net_options *opts,
                const struct mr_net_callbacks *cbs, void *data);

/* Binds opts.listen_addr (resolved synchronously: numeric or a host name)
 * and starts accepting. Call it at most once per transport (even after a
 * failure; then close the transport). Errors: MR_EINVAL (no/unparsable
 * address), MR_EBUSY (called before), MR_ESHUTDOWN, -errno from bind/listen
 * (e.g. -EADDRINUSE); reason in net->errmsg. */
int mr_net_listen(struct mr_net *net);

/* Port actually bound (useful with port 0), or 0 when not listening. */
int mr_net_bound_port(const struct mr_net *net);

/* Adds peer `id` at "host:port" and starts dialing it now; if the peer
 * exists with another address, switches to the new one (the current
 * connection is closed, queued frames are kept). Same address: no-op.
 * `addr` is copied. Dialing starts from the loop, not inside this call. Host
 * names are resolved asynchronously on each attempt (IPv4 preferred).
 * Errors: MR_EINVAL (id 0, own id, unparsable address), MR_ESHUTDOWN,
 * MR_ENOMEM. */
int mr_net_set_peer(struct mr_net *net, mr_node_id id, const char *addr);

/* Forgets peer `id`: closes its outbound connection and drops its queue.
 * Inbound connections from it stay (they close when it stops dialing).
 * Errors: MR_ENOTFOUND. */
int mr_net_remove_peer(struct mr_net *net, mr_node_id id);

/* 1 when our outbound connection to `id` is up, 0 otherwise. */
int mr_net_peer_is_up(const struct mr_net *net, mr_node_id id);

/* Fills `out` for peer `id`. Errors: MR_ENOTFOUND. */
int mr_net_peer_stats(const struct mr_net *net, mr_node_id id,
                      struct mr_net_peer_stats *out);

/* Sending. None of these blocks. `to` must be a configured peer; it picks
 * the connection (a RAFT message's own `to` field travels unchanged and is
 * not checked here; its `from` must be this node, as the receiver checks).
 * Returns 0 when the frame was accepted: it is written when the connection
 * is up, or queued while the first attempt / a reconnect is in progress.
 * "Accepted" is not "delivered": a connection may still die with it.
 * Errors (the message is dropped; Raft retries):
 *   MR_EBUSY      the peer's queue is full (bytes or frames), e.g. slow peer;
 *                 a frame is still accepted into an EMPTY queue whatever its
 *                 size, so one big entry can always go out.
 *   MR_EUNAVAIL   the peer is unreachable (its last connection attempt
 *                 failed; retries continue in the background).
 *   MR_ENOTFOUND  not a configured peer.
 *   MR_ETOOBIG    the frame would exceed max_frame.
 *   MR_ESHUTDOWN  mr_net_close() was called.
 *   MR_ENOMEM, MR_EINVAL.
 * Ownership: everything passed in is borrowed; the transport takes its own
 * references on payload rcbufs and copies the rest. */
/* Writes every queued frame now (one writev per peer) instead of right
 * before the loop next waits for I/O, which the transport does by itself. */
void mr_net_flush(struct mr_net *net);

int mr_net_send_raft(struct mr_net *net, mr_node_id to,
                     const struct mr_raft_msg *msg);
int mr_net_send_forward(struct mr_net *net, mr_node_id to, uint64_t req_id,
                        const void *data, size_t len);
int mr_net_send_forward_reply(struct mr_net *net, mr_node_id to,
                              uint64_t req_id, const void *data, size_t len);
/* `chunk->data`/`len` are ignored; the bytes come from `data` (may be NULL
 * for an empty chunk), which is referenced. */
int mr_net_send_snapshot_chunk(struct mr_net *net, mr_node_id to,
                               const struct mr_net_snapshot_chunk *chunk,
                               struct mr_rcbuf *data);

/* Replaces the TLS contexts (a certificate reload): connections made from
 * now on use the new ones, open connections keep theirs (each session holds
 * a reference to its context). Takes references; drops the old ones.
 * Errors: MR_EINVAL when TLS would be switched on or off (a restart is
 * needed: the listener's mode is fixed) or only one context is given. */
int mr_net_set_tls(struct mr_net *net, struct mr_tls_ctx *server, struct mr_tls_ctx *client);

/* Closes everything: listener, connections, timers, pending resolutions;
 * queued frames are dropped. No callback other than `cb` runs afterwards
 * (no events are reported during close). `cb` (may be NULL) runs once from
 * the loop when every handle is closed; then the loop can be closed
 * (uv_loop_close() == 0) and the memory of `net` reused. The secret is wiped.
 * Calling it twice is a precondition violation. */
void mr_net_close(struct mr_net *net, mr_net_close_cb cb);

/* Text of the last error from init/listen. */
const char *mr_net_errmsg(const struct mr_net *net);

#endif /* MR_NET_H */
