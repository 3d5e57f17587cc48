/* Chaos proxy: a loopback TCP proxy in front of every node's peer port, so
 * the chaos runner can cut the network between any two nodes.
 *
 * Node i binds its real peer listener on 127.0.0.1:<target_port[i]>
 * (`--raft-listen`) and advertises 127.0.0.1:<listen_port[i]> (`--raft-addr`,
 * the peer lists), where this proxy listens. moonraft opens one connection
 * per direction (the dialer carries its own traffic, see src/net/net.h), so a
 * connection accepted on node dst's proxy port carries src -> dst traffic,
 * and `src` is read from the first frame the dialer sends, the HANDSHAKE
 * (u32 len | u8 version | u8 type=1 | u16 proto | u8 flags | u8 0 | u64 from
 * | u64 to | u8 n + cluster id | u8 n + node name | nonce): the proxy peeks
 * it, maps the node name to an index, and forwards the peeked bytes first.
 *
 * A directed cut src -> dst refuses new src -> dst connections (accept, peek,
 * close) and closes live ones at once, both sockets, with RST (SO_LINGER 0),
 * dropping whatever the proxy still buffers: nothing is half-delivered past
 * the cut, and both nodes see the connection die. Healing only lifts the
 * cut; the nodes reconnect with their own backoff.
 *
 * Threading: the proxy runs one poll() thread. Every function below is
 * called from one controlling thread (the runner), never concurrently with
 * mr_chaos_proxy_stop(). Loopback only. */
#ifndef MR_CHAOS_PROXY_H
#define MR_CHAOS_PROXY_H

#include <stddef.h>
#include <stdint.h>

#define MR_CHAOS_PROXY_MAX_NODES 8

struct mr_chaos_proxy;

struct mr_chaos_proxy_stats {
    uint64_t accepted; /* connections accepted on proxy ports */
    uint64_t refused;  /* refused at accept time because of a cut */
    uint64_t cut;      /* live connections closed by a cut */
    uint64_t unknown;  /* connections whose handshake named no known node */
    uint64_t bytes;    /* bytes forwarded, both directions */
};

/* Binds n listening sockets (127.0.0.1:listen_port[i], SO_REUSEADDR) and
 * starts the proxy thread; connections on listen_port[i] go to
 * 127.0.0.1:target_port[i]. names[i] is node i's name as it appears in its
 * handshake (borrowed during the call only; copied). n <= MR_CHAOS_PROXY_MAX_NODES.
 * On success *out owns everything (free with mr_chaos_proxy_stop()).
 * Errors: -errno from socket/bind/listen/pipe/pthread_create, MR_EINVAL for
 * a bad n or name; nothing is left open on failure. */
int mr_chaos_proxy_start(struct mr_chaos_proxy **out, int n, const char *const *names,
                         const int *listen_ports, const int *target_ports);

/* Sets (is_cut = 1) or lifts (0) the directed cut src -> dst (indexes).
 * Takes effect before the call returns: live src -> dst connections are
 * closed by the proxy thread, which the call waits for. */
void mr_chaos_proxy_cut(struct mr_chaos_proxy *p, int src, int dst, int is_cut);

/* Cuts both directions between every node of group a and every node of
 * group b (bitmasks of node indexes); same synchronisation as _cut. */
void mr_chaos_proxy_split(struct mr_chaos_proxy *p, unsigned a, unsigned b);

/* Lifts every cut. */
void mr_chaos_proxy_heal(struct mr_chaos_proxy *p);

/* Number of directed cuts now in force. */
int mr_chaos_proxy_n_cuts(struct mr_chaos_proxy *p);

/* Copies the counters. */
void mr_chaos_proxy_stats(struct mr_chaos_proxy *p, struct mr_chaos_proxy_stats *s);

/* Stops the thread, closes every socket and the listeners, frees p.
 * NULL-safe. */
void mr_chaos_proxy_stop(struct mr_chaos_proxy *p);

#endif
