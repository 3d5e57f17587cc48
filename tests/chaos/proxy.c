/* Chaos proxy: see proxy.h. One poll() thread moves bytes between accepted
 * connections and the nodes' real peer ports; the runner changes the cut
 * matrix under a mutex and waits until the thread has enforced it. */
#include "proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "util/util.h"

#define PBUF_SIZE (64 * 1024) /* bytes buffered per direction */
#define MAX_CONNS 128
#define PEEK_TIMEOUT_MS 3000 /* a dialer that never sends its handshake */
#define HELLO_MAX 4096       /* MR_NET_HANDSHAKE_MAX_FRAME */
#define FRAME_HANDSHAKE 1

enum { S_PEEK, S_CONNECTING, S_OPEN };

struct pbuf {
    unsigned char data[PBUF_SIZE];
    size_t off, len; /* pending bytes are data[off, len) */
};

struct pconn {
    int src, dst; /* node indexes; src -1 until known / if unknown */
    int fd_in;    /* accepted from the dialer */
    int fd_out;   /* to the acceptor's real port; -1 before connect */
    int state;
    long long born_ms;
    struct pbuf up;   /* dialer -> acceptor */
    struct pbuf down; /* acceptor -> dialer */
};

struct mr_chaos_proxy {
    int n;
    char names[MR_CHAOS_PROXY_MAX_NODES][64];
    int target_port[MR_CHAOS_PROXY_MAX_NODES];
    int lfd[MR_CHAOS_PROXY_MAX_NODES];
    int wake[2];
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* under mu */
    unsigned char cut[MR_CHAOS_PROXY_MAX_NODES][MR_CHAOS_PROXY_MAX_NODES];
    uint64_t gen, applied_gen;
    int stop;
    struct mr_chaos_proxy_stats st;
    /* proxy thread only */
    struct pconn *conns[MAX_CONNS];
};

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int listen_on(int port)
{
    struct sockaddr_in a;
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 64) != 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

/* Closes a socket; with RST (SO_LINGER 0) when `abort`, so the peer sees the
 * connection die at once instead of a graceful end. */
static void close_fd(int fd, int abort)
{
    if (fd < 0) return;
    if (abort) {
        struct linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(fd);
}

static void conn_close(struct mr_chaos_proxy *p, int k, int abort)
{
    struct pconn *c = p->conns[k];
    close_fd(c->fd_in, abort);
    close_fd(c->fd_out, abort);
    mr_free(c);
    p->conns[k] = NULL;
}

static void do_accept(struct mr_chaos_proxy *p, int dst)
{
    for (;;) {
        int one = 1, k;
        int fd = accept4(p->lfd[dst], NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return; /* EAGAIN or a transient error: poll again */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        for (k = 0; k < MAX_CONNS && p->conns[k]; k++) {
        }
        if (k == MAX_CONNS) {
            close_fd(fd, 1);
            continue;
        }
        struct pconn *c = mr_malloc(sizeof *c);
        if (c == NULL) {
            close_fd(fd, 1); /* the dialer retries */
            continue;
        }
        c->src = -1;
        c->dst = dst;
        c->fd_in = fd;
        c->fd_out = -1;
        c->state = S_PEEK;
        c->born_ms = mono_ms();
        c->up.off = c->up.len = 0;
        c->down.off = c->down.len = 0;
        p->conns[k] = c;
        pthread_mutex_lock(&p->mu);
        p->st.accepted++;
        pthread_mutex_unlock(&p->mu);
    }
}

/* Reads the dialer's node name out of a complete HANDSHAKE frame; returns
 * the node index, -1 if it names no known node, -2 if more bytes are
 * needed. Bytes come from a node under test: every length is checked. */
static int peek_src(struct mr_chaos_proxy *p, const struct pbuf *b)
{
    const unsigned char *d = b->data + b->off;
    size_t have = b->len - b->off, len, at;
    char name[256];
    if (have < 6) return -2;
    len = (size_t)d[0] | (size_t)d[1] << 8 | (size_t)d[2] << 16 | (size_t)d[3] << 24;
    if (d[5] != FRAME_HANDSHAKE || len > HELLO_MAX) return -1;
    if (have < 6 + len) return -2;
    at = 6 + 2 + 1 + 1 + 8 + 8; /* proto, flags, pad, from, to */
    if (at + 1 > 6 + len) return -1;
    at += 1 + d[at]; /* cluster id */
    if (at + 1 > 6 + len || at + 1 + d[at] > 6 + len) return -1;
    memcpy(name, d + at + 1, d[at]);
    name[d[at]] = '\0';
    for (int i = 0; i < p->n; i++)
        if (strcmp(name, p->names[i]) == 0) return i;
    return -1;
}

static int is_cut(struct mr_chaos_proxy *p, int src, int dst)
{
    int r;
    if (src < 0) return 0;
    pthread_mutex_lock(&p->mu);
    r = p->cut[src][dst];
    pthread_mutex_unlock(&p->mu);
    return r;
}

static void count(struct mr_chaos_proxy *p, uint64_t *field, uint64_t by)
{
    pthread_mutex_lock(&p->mu);
    *field += by;
    pthread_mutex_unlock(&p->mu);
}

/* PEEK -> CONNECTING, or closed. */
static void on_peeked(struct mr_chaos_proxy *p, int k, int src)
{
    struct pconn *c = p->conns[k];
    struct sockaddr_in a;
    int one = 1;
    if (src < 0) count(p, &p->st.unknown, 1);
    c->src = src;
    if (is_cut(p, src, c->dst)) {
        count(p, &p->st.refused, 1);
        conn_close(p, k, 1);
        return;
    }
    c->fd_out = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd_out < 0) {
        conn_close(p, k, 1);
        return;
    }
    setsockopt(c->fd_out, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)p->target_port[c->dst]);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd_out, (struct sockaddr *)&a, sizeof a) != 0 &&
        errno != EINPROGRESS) {
        conn_close(p, k, 1); /* node down: the dialer sees the close and backs off */
        return;
    }
    c->state = S_CONNECTING;
}

/* Moves bytes from fd into b; returns -1 on EOF or error. */
static int fill(int fd, struct pbuf *b)
{
    ssize_t r;
    if (b->off > 0 && b->len == PBUF_SIZE) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->len == PBUF_SIZE) return 0;
    r = read(fd, b->data + b->len, PBUF_SIZE - b->len);
    if (r == 0) return -1;
    if (r < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
    b->len += (size_t)r;
    return 0;
}

/* Moves bytes from b to fd; returns bytes written or -1 on error. */
static ssize_t drain(int fd, struct pbuf *b)
{
    ssize_t w;
    if (b->off == b->len) return 0;
    w = send(fd, b->data + b->off, b->len - b->off, MSG_NOSIGNAL);
    if (w < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
    b->off += (size_t)w;
    if (b->off == b->len) b->off = b->len = 0;
    return w;
}

/* Closes every connection a cut now forbids, then publishes the generation. */
static void enforce(struct mr_chaos_proxy *p)
{
    unsigned char cut[MR_CHAOS_PROXY_MAX_NODES][MR_CHAOS_PROXY_MAX_NODES];
    uint64_t gen;
    pthread_mutex_lock(&p->mu);
    memcpy(cut, p->cut, sizeof cut);
    gen = p->gen;
    pthread_mutex_unlock(&p->mu);
    for (int k = 0; k < MAX_CONNS; k++) {
        struct pconn *c = p->conns[k];
        if (c && c->src >= 0 && cut[c->src][c->dst]) {
            count(p, &p->st.cut, 1);
            conn_close(p, k, 1);
        }
    }
    pthread_mutex_lock(&p->mu);
    p->applied_gen = gen;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static void *proxy_main(void *arg)
{
    struct mr_chaos_proxy *p = arg;
    struct pollfd pfd[1 + MR_CHAOS_PROXY_MAX_NODES + 2 * MAX_CONNS];
    int who[1 + MR_CHAOS_PROXY_MAX_NODES + 2 * MAX_CONNS]; /* conn k, or -1 */
    for (;;) {
        int np = 0, stop;
        pthread_mutex_lock(&p->mu);
        stop = p->stop;
        pthread_mutex_unlock(&p->mu);
        if (stop) break;
        pfd[np] = (struct pollfd){p->wake[0], POLLIN, 0};
        who[np++] = -1;
        for (int i = 0; i < p->n; i++) {
            pfd[np] = (struct pollfd){p->lfd[i], POLLIN, 0};
            who[np++] = -1;
        }
        long long now = mono_ms();
        for (int k = 0; k < MAX_CONNS; k++) {
            struct pconn *c = p->conns[k];
            if (!c) continue;
            if (c->state == S_PEEK && now - c->born_ms > PEEK_TIMEOUT_MS) {
                conn_close(p, k, 1);
                continue;
            }
            short in = 0, out = 0;
            if (c->state == S_PEEK) in = POLLIN;
            if (c->state == S_CONNECTING) out = POLLOUT;
            if (c->state == S_OPEN) {
                if (c->up.len < PBUF_SIZE || c->up.off > 0) in |= POLLIN;
                if (c->down.off < c->down.len) in |= POLLOUT;
                if (c->down.len < PBUF_SIZE || c->down.off > 0) out |= POLLIN;
                if (c->up.off < c->up.len) out |= POLLOUT;
            }
            pfd[np] = (struct pollfd){c->fd_in, in, 0};
            who[np++] = k;
            if (c->fd_out >= 0) {
                pfd[np] = (struct pollfd){c->fd_out, out, 0};
                who[np++] = k;
            }
        }
        if (poll(pfd, (nfds_t)np, 100) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (pfd[0].revents) {
            char drainbuf[64];
            while (read(p->wake[0], drainbuf, sizeof drainbuf) > 0) {
            }
            enforce(p);
        }
        for (int j = 1 + p->n; j < np; j++) {
            int k = who[j];
            struct pconn *c = p->conns[k];
            if (!c || !pfd[j].revents ||
                (pfd[j].fd != c->fd_in && pfd[j].fd != c->fd_out))
                continue;
            int is_in = pfd[j].fd == c->fd_in;
            if (c->state == S_PEEK) {
                if (fill(c->fd_in, &c->up) != 0) {
                    conn_close(p, k, 0);
                    continue;
                }
                int src = peek_src(p, &c->up);
                if (src != -2) on_peeked(p, k, src);
                continue;
            }
            if (c->state == S_CONNECTING) {
                int err = 0;
                socklen_t el = sizeof err;
                if (is_in) continue;
                if (getsockopt(c->fd_out, SOL_SOCKET, SO_ERROR, &err, &el) != 0 ||
                    err != 0) {
                    conn_close(p, k, 1);
                    continue;
                }
                c->state = S_OPEN;
                continue; /* the peeked handshake leaves on the next round */
            }
            /* S_OPEN: a read EOF or error on either side ends both. */
            int bad = 0;
            ssize_t w = 0;
            if (is_in) {
                if (pfd[j].revents & (POLLIN | POLLHUP | POLLERR))
                    bad |= fill(c->fd_in, &c->up);
                if (!bad && (pfd[j].revents & POLLOUT) &&
                    (w = drain(c->fd_in, &c->down)) < 0)
                    bad = 1;
            } else {
                if (pfd[j].revents & (POLLIN | POLLHUP | POLLERR))
                    bad |= fill(c->fd_out, &c->down);
                if (!bad && (pfd[j].revents & POLLOUT) &&
                    (w = drain(c->fd_out, &c->up)) < 0)
                    bad = 1;
            }
            if (w > 0) count(p, &p->st.bytes, (uint64_t)w);
            if (bad || (pfd[j].revents & POLLNVAL)) conn_close(p, k, 0);
        }
        /* Accept last, so no slot freed above is refilled while pfd still
         * describes its old sockets. */
        for (int i = 0; i < p->n; i++)
            if (pfd[1 + i].revents) do_accept(p, i);
    }
    for (int k = 0; k < MAX_CONNS; k++)
        if (p->conns[k]) conn_close(p, k, 1);
    return NULL;
}

int mr_chaos_proxy_start(struct mr_chaos_proxy **out, int n, const char *const *names,
                         const int *listen_ports, const int *target_ports)
{
    struct mr_chaos_proxy *p;
    int rv, i;
    *out = NULL;
    if (n < 1 || n > MR_CHAOS_PROXY_MAX_NODES) return MR_EINVAL;
    p = mr_calloc(1, sizeof *p);
    if (p == NULL) return MR_ENOMEM;
    p->n = n;
    p->wake[0] = p->wake[1] = -1;
    for (i = 0; i < n; i++) p->lfd[i] = -1;
    for (i = 0; i < n; i++) {
        if (strlen(names[i]) >= sizeof p->names[i]) {
            rv = MR_EINVAL;
            goto fail;
        }
        snprintf(p->names[i], sizeof p->names[i], "%s", names[i]);
        p->target_port[i] = target_ports[i];
        if ((rv = listen_on(listen_ports[i])) < 0) goto fail;
        p->lfd[i] = rv;
    }
    if (pipe2(p->wake, O_NONBLOCK | O_CLOEXEC) != 0) {
        rv = -errno;
        goto fail;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if ((rv = pthread_create(&p->thread, NULL, proxy_main, p)) != 0) {
        rv = -rv;
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
        goto fail;
    }
    *out = p;
    return 0;
fail:
    for (i = 0; i < n; i++) close_fd(p->lfd[i], 0);
    close_fd(p->wake[0], 0);
    close_fd(p->wake[1], 0);
    mr_free(p);
    return rv;
}

/* Publishes a new cut matrix generation and waits until the thread has
 * enforced it. Called with p->mu held; returns with it released. */
static void publish_and_wait(struct mr_chaos_proxy *p)
{
    uint64_t gen = ++p->gen;
    pthread_mutex_unlock(&p->mu);
    if (write(p->wake[1], "x", 1) < 0) {
        /* pipe full: the thread has a wake-up pending anyway */
    }
    pthread_mutex_lock(&p->mu);
    while (p->applied_gen < gen && !p->stop) pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

void mr_chaos_proxy_cut(struct mr_chaos_proxy *p, int src, int dst, int is_cut_now)
{
    MR_ASSERT(src >= 0 && src < p->n && dst >= 0 && dst < p->n);
    pthread_mutex_lock(&p->mu);
    p->cut[src][dst] = is_cut_now ? 1 : 0;
    publish_and_wait(p);
}

void mr_chaos_proxy_split(struct mr_chaos_proxy *p, unsigned a, unsigned b)
{
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->n; i++)
        for (int j = 0; j < p->n; j++)
            if (((a >> i) & 1) && ((b >> j) & 1)) p->cut[i][j] = p->cut[j][i] = 1;
    publish_and_wait(p);
}

void mr_chaos_proxy_heal(struct mr_chaos_proxy *p)
{
    pthread_mutex_lock(&p->mu);
    memset(p->cut, 0, sizeof p->cut);
    publish_and_wait(p);
}

int mr_chaos_proxy_n_cuts(struct mr_chaos_proxy *p)
{
    int n = 0;
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->n; i++)
        for (int j = 0; j < p->n; j++) n += p->cut[i][j];
    pthread_mutex_unlock(&p->mu);
    return n;
}

void mr_chaos_proxy_stats(struct mr_chaos_proxy *p, struct mr_chaos_proxy_stats *s)
{
    pthread_mutex_lock(&p->mu);
    *s = p->st;
    pthread_mutex_unlock(&p->mu);
}

void mr_chaos_proxy_stop(struct mr_chaos_proxy *p)
{
    if (p == NULL) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (write(p->wake[1], "x", 1) < 0) {
        /* the thread polls with a 100 ms timeout and sees `stop` anyway */
    }
    pthread_join(p->thread, NULL);
    for (int i = 0; i < p->n; i++) close_fd(p->lfd[i], 0);
    close_fd(p->wake[0], 0);
    close_fd(p->wake[1], 0);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    mr_free(p);
}
