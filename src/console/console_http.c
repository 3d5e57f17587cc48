/* A small blocking HTTP/1.1 client for the console.
 *
 * One connection, kept alive between requests. Every wait is a poll() with a
 * deadline so a dead node cannot hang the console, and SIGINT (poll returns
 * EINTR with mr_console_interrupted set) cancels the wait. Answers are parsed
 * by http-parser, which also undoes chunked transfer coding. An https://
 * address runs the same exchange through a TLS session (src/tls) over the
 * socket. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <http_parser.h>

#include "console/console_int.h"

volatile sig_atomic_t mr_console_interrupted;

void mr_console_http_init(struct mr_console_http *c)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->connect_timeout_ms = MR_CONSOLE_CONNECT_TIMEOUT_MS;
}

void mr_console_http_close(struct mr_console_http *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    mr_tls_free(c->tls);
    c->tls = NULL;
}

int mr_console_http_set_tls(struct mr_console_http *c, const char *ca, const char *cert,
                            const char *key)
{
    char *a = ca ? mr_strdup(ca) : NULL, *b = cert ? mr_strdup(cert) : NULL;
    char *k = key ? mr_strdup(key) : NULL;
    if ((ca && !a) || (cert && !b) || (key && !k)) {
        mr_free(a);
        mr_free(b);
        mr_free(k);
        return MR_ENOMEM;
    }
    mr_console_http_close(c);
    mr_free(c->tls_ca);
    mr_free(c->tls_cert);
    mr_free(c->tls_key);
    mr_tls_ctx_unref(c->tls_ctx);
    c->tls_ctx = NULL;
    c->tls_ca = a;
    c->tls_cert = b;
    c->tls_key = k;
    return 0;
}

void mr_console_http_free(struct mr_console_http *c)
{
    mr_console_http_close(c);
    (void)mr_console_http_set_tls(c, NULL, NULL, NULL);
}

int mr_console_http_set_addr(struct mr_console_http *c, const char *full)
{
    const char *host, *port, *colon, *addr = full;
    char buf[300];
    size_t hlen;
    int is_https = 0;
    if (strncmp(addr, "https://", 8) == 0) {
        is_https = 1;
        addr += 8;
    } else if (strncmp(addr, "http://", 7) == 0) {
        addr += 7;
    }
    if (strlen(addr) >= sizeof buf) goto bad;
    strcpy(buf, addr);
    if (buf[0] != '\0' && buf[strlen(buf) - 1] == '/') buf[strlen(buf) - 1] = '\0';
    addr = buf;
    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (end == NULL || end[1] != ':') goto bad;
        host = addr + 1;
        hlen = (size_t)(end - host);
        port = end + 2;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL) {
            host = "127.0.0.1";
            hlen = strlen(host);
            port = addr;
        } else if (colon == addr) {
            host = "127.0.0.1";
            hlen = strlen(host);
            port = colon + 1;
        } else {
            if (memchr(addr, ':', (size_t)(colon - addr)) != NULL) goto bad;
            host = addr;
            hlen = (size_t)(colon - addr);
            port = colon + 1;
        }
    }
    if (hlen == 0 || hlen >= sizeof c->host || port[0] == '\0' ||
        strlen(port) >= sizeof c->port || strspn(port, "0123456789") != strlen(port)) {
        goto bad;
    }
    mr_console_http_close(c);
    memcpy(c->host, host, hlen);
    c->host[hlen] = '\0';
    strcpy(c->port, port);
    c->is_https = is_https;
    return 0;
bad:
    mr_errmsg_printf(c->errmsg, "bad address \"%s\" (want [https://]host:port)", full);
    return MR_EINVAL;
}

/* ---- time ------------------------------------------------------------------ */

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for `events` on fd until the deadline. Returns 0, MR_ETIMEOUT,
 * MR_ECANCELED (SIGINT) or -errno. */
static int wait_fd(int fd, short events, long long deadline)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events, .revents = 0};
        long long left = deadline - now_ms();
        int rv;
        if (mr_console_interrupted) return MR_ECANCELED;
        if (left <= 0) return MR_ETIMEOUT;
        rv = poll(&p, 1, left > 1000000000 ? 1000000000 : (int)left);
        if (rv > 0) return 0;
        if (rv == 0) return MR_ETIMEOUT;
        if (errno != EINTR) return -errno;
    }
}

/* ---- connect --------------------------------------------------------------- */

static int connect_one(const struct addrinfo *ai, long long deadline)
{
    int fd, rv, err = 0, one = 1;
    socklen_t len = sizeof err;
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                ai->ai_protocol);
    if (fd < 0) return -errno;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        if (errno != EINPROGRESS) {
            rv = -errno;
            close(fd);
            return rv;
        }
        rv = wait_fd(fd, POLLOUT, deadline);
        if (rv == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) rv = -errno;
        if (rv == 0 && err != 0) rv = -err;
        if (rv != 0) {
            close(fd);
            return rv;
        }
    }
    /* Requests are written in one piece; do not let Nagle hold the tail. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int do_connect(struct mr_console_http *c)
{
    struct addrinfo hints, *res = NULL, *ai;
    long long deadline = now_ms() + c->connect_timeout_ms;
    int rv;
    if (c->host[0] == '\0') {
        mr_errmsg_printf(c->errmsg, "no server address set");
        return MR_EINVAL;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    rv = getaddrinfo(c->host, c->port, &hints, &res);
    if (rv != 0) {
        mr_errmsg_printf(c->errmsg, "resolve %s: %s", c->host, gai_strerror(rv));
        return MR_ENOTFOUND;
    }
    rv = MR_ENOTFOUND;
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        rv = connect_one(ai, deadline);
        if (rv >= 0 || rv == MR_ECANCELED) break;
    }
    freeaddrinfo(res);
    if (rv < 0) {
        mr_errmsg_printf(c->errmsg, "connect %s:%s: %s", c->host, c->port,
                         rv == MR_ECANCELED ? "interrupted" : mr_strerror(rv));
        return rv;
    }
    c->fd = rv;
    if (c->is_https) {
        char err[MR_ERRMSG_SIZE] = "";
        if (c->tls_ctx == NULL) {
            struct mr_tls_ctx_options o;
            memset(&o, 0, sizeof o);
            o.ca_file = c->tls_ca;
            o.cert_file = c->tls_cert;
            o.key_file = c->tls_key;
            o.is_verify_peer = 1;
            rv = mr_tls_ctx_new(&o, &c->tls_ctx, err);
            if (rv != 0) {
                mr_console_http_close(c);
                mr_errmsg_printf(c->errmsg, "%s", err);
                return rv;
            }
        }
        rv = mr_tls_new(c->tls_ctx, c->host, &c->tls);
        if (rv == 0) rv = mr_tls_start(c->tls);
        if (rv != 0) {
            mr_console_http_close(c);
            mr_errmsg_printf(c->errmsg, "tls with %s:%s: cannot start a session", c->host,
                             c->port);
            return rv;
        }
    }
    return 0;
}

/* ---- request text ---------------------------------------------------------- */

struct buf {
    char *p;
    size_t len, cap;
};

static int buf_add(struct buf *b, const void *data, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *p;
        while (cap < b->len + n + 1) cap *= 2;
        p = mr_realloc(b->p, cap);
        if (p == NULL) return MR_ENOMEM;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static int buf_str(struct buf *b, const char *s)
{
    return buf_add(b, s, strlen(s));
}

static int has_crlf(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

static int build_request(struct mr_console_http *c, struct buf *b, const char *method,
                         const char *path, const char *const *headers, const char *body,
                         size_t body_len)
{
    char line[64];
    int rv = 0;
    size_t i;
    if (has_crlf(method) || has_crlf(path) || strchr(method, ' ') || strchr(path, ' ') ||
        path[0] != '/') {
        mr_errmsg_printf(c->errmsg, "bad request line");
        return MR_EINVAL;
    }
    for (i = 0; headers != NULL && headers[i] != NULL; i++) {
        if (has_crlf(headers[i]) || strchr(headers[i], ':') == NULL) {
            mr_errmsg_printf(c->errmsg, "bad request header");
            return MR_EINVAL;
        }
    }
    rv |= buf_str(b, method);
    rv |= buf_str(b, " ");
    rv |= buf_str(b, path);
    rv |= buf_str(b, " HTTP/1.1\r\nHost: ");
    if (strchr(c->host, ':') != NULL) {
        rv |= buf_str(b, "[");
        rv |= buf_str(b, c->host);
        rv |= buf_str(b, "]");
    } else {
        rv |= buf_str(b, c->host);
    }
    rv |= buf_str(b, ":");
    rv |= buf_str(b, c->port);
    rv |= buf_str(b, "\r\nUser-Agent: moonraft-console/" MR_VERSION
                     "\r\nAccept: application/json\r\n");
    for (i = 0; headers != NULL && headers[i] != NULL; i++) {
        rv |= buf_str(b, headers[i]);
        rv |= buf_str(b, "\r\n");
    }
    if (body_len > 0) rv |= buf_str(b, "Content-Type: application/json\r\n");
    snprintf(line, sizeof line, "Content-Length: %zu\r\n\r\n", body_len);
    rv |= buf_str(b, line);
    if (body_len > 0) rv |= buf_add(b, body, body_len);
    if (rv != 0) {
        mr_errmsg_printf(c->errmsg, "out of memory");
        return MR_ENOMEM;
    }
    return 0;
}

/* ---- answer parsing ---------------------------------------------------------- */

struct reader {
    struct mr_console_http_resp *resp;
    struct buf body;
    struct buf field, value; /* the header being assembled */
    int in_value;            /* last callback was a header value */
    int complete;
    int too_big;
    int oom;
    mr_console_sink_cb sink; /* 2xx bodies go here, when set */
    void *sink_data;
    int sink_rv; /* the sink's error */
};

static int flush_header(struct reader *r)
{
    char **h;
    char *name, *value;
    size_t i;
    if (r->field.len == 0) return 0;
    name = mr_strdup(r->field.p);
    value = mr_strdup(r->value.p ? r->value.p : "");
    h = mr_realloc(r->resp->hdrs, (r->resp->n_hdrs + 1) * 2 * sizeof *h);
    if (name == NULL || value == NULL || h == NULL) {
        mr_free(name);
        mr_free(value);
        if (h != NULL) r->resp->hdrs = h;
        return -1;
    }
    for (i = 0; name[i]; i++) {
        if (name[i] >= 'A' && name[i] <= 'Z') name[i] = (char)(name[i] - 'A' + 'a');
    }
    r->resp->hdrs = h;
    h[r->resp->n_hdrs * 2] = name;
    h[r->resp->n_hdrs * 2 + 1] = value;
    r->resp->n_hdrs++;
    r->field.len = r->value.len = 0;
    if (r->field.p) r->field.p[0] = '\0';
    if (r->value.p) r->value.p[0] = '\0';
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct reader *r = p->data;
    if (r->in_value && flush_header(r) != 0) goto oom;
    r->in_value = 0;
    if (buf_add(&r->field, at, n) != 0) goto oom;
    return 0;
oom:
    r->oom = 1;
    return -1;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct reader *r = p->data;
    r->in_value = 1;
    if (buf_add(&r->value, at, n) != 0) {
        r->oom = 1;
        return -1;
    }
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct reader *r = p->data;
    if (r->in_value && flush_header(r) != 0) {
        r->oom = 1;
        return -1;
    }
    r->in_value = 0;
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct reader *r = p->data;
    if (r->sink != NULL && p->status_code / 100 == 2) {
        r->sink_rv = r->sink(r->sink_data, at, n);
        return r->sink_rv != 0 ? -1 : 0;
    }
    if (r->body.len + n > MR_CONSOLE_MAX_BODY) {
        r->too_big = 1;
        return -1;
    }
    if (buf_add(&r->body, at, n) != 0) {
        r->oom = 1;
        return -1;
    }
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct reader *r = p->data;
    r->complete = 1;
    /* Stop here: anything after this answer is not ours. */
    http_parser_pause(p, 1);
    return 0;
}

void mr_console_http_resp_free(struct mr_console_http_resp *resp)
{
    size_t i;
    for (i = 0; i < resp->n_hdrs * 2; i++) mr_free(resp->hdrs[i]);
    mr_free(resp->hdrs);
    mr_free(resp->body);
    memset(resp, 0, sizeof *resp);
}

static int send_raw(struct mr_console_http *c, const char *p, size_t n,
                    long long deadline)
{
    while (n > 0) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rv = wait_fd(c->fd, POLLOUT, deadline);
            if (rv != 0) return rv;
            continue;
        }
        return -errno;
    }
    return 0;
}

/* TLS: writes every ciphertext byte the session has pending. */
static int tls_push(struct mr_console_http *c, long long deadline)
{
    char *buf;
    size_t len;
    int rv;
    if (mr_tls_pending(c->tls) == 0) return 0;
    if (mr_tls_take(c->tls, &buf, &len) != 0) return MR_ENOMEM;
    rv = send_raw(c, buf, len, deadline);
    mr_free(buf);
    return rv;
}

static int send_all(struct mr_console_http *c, const char *p, size_t n, long long deadline)
{
    int rv;
    if (c->tls == NULL) return send_raw(c, p, n, deadline);
    rv = mr_tls_write(c->tls, p, n);
    if (rv != 0) return rv;
    return tls_push(c, deadline);
}

/* Reads some answer bytes: *got > 0, or 0 at the end of the stream. Waits
 * (poll) until the deadline. Returns 0, MR_ETIMEOUT, MR_ECANCELED, -errno,
 * or MR_EAUTH for a TLS failure (c->errmsg says which). */
static int recv_some(struct mr_console_http *c, char *buf, size_t cap, long long deadline,
                     size_t *got)
{
    *got = 0;
    for (;;) {
        ssize_t n;
        int rv;
        if (c->tls != NULL) {
            rv = mr_tls_read(c->tls, buf, cap, got);
            if (rv == MR_ESHUTDOWN) return 0;
            if (rv != 0) goto tls_failed;
            if (*got > 0) return 0;
            n = recv(c->fd, buf, cap, 0);
        } else {
            n = recv(c->fd, buf, cap, 0);
        }
        if (n < 0) {
            if (errno == EINTR) {
                if (mr_console_interrupted) return MR_ECANCELED;
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                rv = wait_fd(c->fd, POLLIN, deadline);
                if (rv != 0) return rv;
                continue;
            }
            return -errno;
        }
        if (c->tls == NULL) {
            *got = (size_t)n;
            return 0;
        }
        if (n == 0) {
            if (!mr_tls_is_ready(c->tls)) {
                mr_errmsg_printf(c->errmsg, "the server closed the connection during the TLS "
                                            "handshake (does it want a client certificate?)");
                return MR_EAUTH;
            }
            return 0;
        }
        rv = mr_tls_feed(c->tls, buf, (size_t)n);
        if (rv == 0) rv = tls_push(c, deadline); /* handshake, request */
        else (void)tls_push(c, deadline);        /* the alert */
        if (rv != 0 && rv != MR_EPROTO) return rv;
        if (rv == MR_EPROTO) goto tls_failed;
    }
tls_failed:
    mr_errmsg_printf(c->errmsg, "%s", mr_tls_errmsg(c->tls));
    return MR_EAUTH;
}

/* One attempt on the current connection. *got_bytes tells the caller whether
 * any answer byte arrived (a retry is only safe when none did). */
static int exchange(struct mr_console_http *c, const struct buf *req, long long deadline,
                    int idle_ms, mr_console_sink_cb sink, void *sink_data,
                    struct mr_console_http_resp *resp, int *got_bytes)
{
    static const http_parser_settings settings = {
        .on_header_field = on_header_field,
        .on_header_value = on_header_value,
        .on_headers_complete = on_headers_complete,
        .on_body = on_body,
        .on_message_complete = on_message_complete,
    };
    http_parser parser;
    struct reader r;
    char chunk[16384];
    int rv;

    *got_bytes = 0;
    memset(&r, 0, sizeof r);
    r.resp = resp;
    r.sink = sink;
    r.sink_data = sink_data;
    http_parser_init(&parser, HTTP_RESPONSE);
    parser.data = &r;

    rv = send_all(c, req->p, req->len, deadline);
    if (rv != 0) goto out;
    while (!r.complete) {
        size_t n, used;
        if (idle_ms > 0) deadline = now_ms() + idle_ms;
        rv = recv_some(c, chunk, sizeof chunk, deadline, &n);
        if (rv != 0) goto out;
        if (n > 0) *got_bytes = 1;
        used = http_parser_execute(&parser, &settings, chunk, (size_t)n);
        if (r.sink_rv != 0) {
            rv = r.sink_rv;
            goto out;
        }
        if (r.oom) {
            rv = MR_ENOMEM;
            goto out;
        }
        if (r.too_big) {
            rv = MR_ETOOBIG;
            goto out;
        }
        if (HTTP_PARSER_ERRNO(&parser) != HPE_OK &&
            HTTP_PARSER_ERRNO(&parser) != HPE_PAUSED) {
            rv = MR_EPROTO;
            goto out;
        }
        if (n == 0) {
            /* EOF: fine only if it ended a body delimited by the close. */
            if (!r.complete) rv = *got_bytes ? MR_EPROTO : -ECONNRESET;
            mr_console_http_close(c);
            goto out;
        }
        if (r.complete && used < n) {
            /* Bytes after the answer: the connection is out of step. */
            mr_console_http_close(c);
        }
    }
    resp->status = parser.status_code;
    if (c->fd >= 0 && !http_should_keep_alive(&parser)) mr_console_http_close(c);
out:
    if (rv == 0 && r.complete) {
        if (r.body.p == NULL && buf_add(&r.body, "", 0) != 0) rv = MR_ENOMEM;
        resp->status = parser.status_code;
        resp->body = r.body.p;
        resp->body_len = r.body.len;
        r.body.p = NULL;
    }
    mr_free(r.body.p);
    mr_free(r.field.p);
    mr_free(r.value.p);
    if (rv != 0) mr_console_http_resp_free(resp);
    return rv;
}

static void describe_failure(struct mr_console_http *c, int rv, const char *method,
                             const char *path, int timeout_ms);

int mr_console_http_request(struct mr_console_http *c, const char *method,
                            const char *path, const char *const *headers,
                            const char *body, size_t body_len, int timeout_ms,
                            struct mr_console_http_resp *resp)
{
    struct buf req = {0};
    int rv, attempt, got_bytes = 0, reused;

    memset(resp, 0, sizeof *resp);
    rv = build_request(c, &req, method, path, headers, body, body_len);
    if (rv != 0) goto out;
    for (attempt = 0; attempt < 2; attempt++) {
        reused = c->fd >= 0;
        if (!reused) {
            rv = do_connect(c);
            if (rv != 0) goto out;
        }
        rv = exchange(c, &req, now_ms() + timeout_ms, 0, NULL, NULL, resp, &got_bytes);
        if (rv == 0) goto out;
        mr_console_http_close(c);
        /* A keep-alive connection the server already closed: resend once. */
        if (!(reused && !got_bytes && (rv == -ECONNRESET || rv == -EPIPE))) break;
    }
    describe_failure(c, rv, method, path, timeout_ms);
out:
    mr_free(req.p);
    return rv;
}

int mr_console_http_request_to(struct mr_console_http *c, const char *method,
                               const char *path, const char *const *headers,
                               int timeout_ms, mr_console_sink_cb sink, void *data,
                               struct mr_console_http_resp *resp)
{
    struct buf req = {0};
    int rv, got_bytes = 0;
    memset(resp, 0, sizeof *resp);
    rv = build_request(c, &req, method, path, headers, NULL, 0);
    if (rv == 0 && c->fd < 0) rv = do_connect(c);
    if (rv != 0) goto out;
    rv = exchange(c, &req, now_ms() + timeout_ms, timeout_ms, sink, data, resp, &got_bytes);
    if (rv == 0) goto out;
    mr_console_http_close(c);
    describe_failure(c, rv, method, path, timeout_ms);
out:
    mr_free(req.p);
    return rv;
}

static void describe_failure(struct mr_console_http *c, int rv, const char *method,
                             const char *path, int timeout_ms)
{
    if (rv == MR_EAUTH) {
        mr_errmsg_wrapf(c->errmsg, "%s %s: TLS with %s:%s", method, path, c->host, c->port);
    } else if (rv == MR_ECANCELED) {
        mr_errmsg_printf(c->errmsg, "%s %s: canceled by Ctrl-C", method, path);
    } else if (rv == MR_ETIMEOUT) {
        mr_errmsg_printf(c->errmsg, "%s %s: no answer from %s:%s within %d ms", method,
                         path, c->host, c->port, timeout_ms);
    } else if (rv == MR_EPROTO) {
        mr_errmsg_printf(c->errmsg, "%s %s: malformed HTTP answer from %s:%s", method,
                         path, c->host, c->port);
    } else {
        mr_errmsg_printf(c->errmsg, "%s %s (%s:%s): %s", method, path, c->host, c->port,
                         mr_strerror(rv));
    }
}

int mr_console_download(const char *addr, const struct mr_console_tls_files *tls,
                        const char *path, const char *const *headers, int timeout_ms,
                        mr_console_sink_cb sink, void *data, int *status, char *errbody,
                        size_t errbody_size, char *errmsg)
{
    struct mr_console_http c;
    struct mr_console_http_resp resp;
    int rv;
    *status = 0;
    if (errbody_size > 0) errbody[0] = '\0';
    mr_console_http_init(&c);
    rv = mr_console_http_set_addr(&c, addr);
    if (rv == 0 && tls != NULL) {
        rv = mr_console_http_set_tls(&c, tls->ca, tls->cert, tls->key);
        if (rv != 0) mr_errmsg_printf(c.errmsg, "out of memory");
    }
    if (rv == 0)
        rv = mr_console_http_request_to(&c, "GET", path, headers, timeout_ms, sink, data,
                                        &resp);
    if (rv != 0) {
        mr_errmsg_printf(errmsg, "%s", c.errmsg);
    } else {
        *status = resp.status;
        if (errbody_size > 0 && resp.status / 100 != 2)
            snprintf(errbody, errbody_size, "%s", resp.body);
        mr_console_http_resp_free(&resp);
    }
    mr_console_http_free(&c);
    return rv;
}
