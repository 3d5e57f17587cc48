/* tls: TLS over any byte stream, with OpenSSL and memory BIOs.
 *
 * The module does no I/O. A session (struct mr_tls) sits between a stream
 * and its user: ciphertext read from the stream goes in with mr_tls_feed(),
 * plaintext comes out with mr_tls_read(); plaintext to send goes in with
 * mr_tls_write() and ciphertext to write to the stream comes out with
 * mr_tls_take(). Internally the SSL object reads from one BIO_s_mem and writes
 * to another (SSL_set_bio), so the same code serves the libuv peer transport,
 * the libuv HTTP server and the blocking clients (console, deploy, harness).
 *
 * After every mr_tls_feed/mr_tls_read/mr_tls_write/mr_tls_start the caller
 * must take() and write out what is pending: handshake messages, alerts and
 * session tickets appear there too, not only the encryption of its writes.
 *
 * Plaintext written before the handshake completes is kept and encrypted as
 * soon as it does. A server session whose first byte is not a TLS handshake
 * record (0x16) fails at once with mr_tls_is_plaintext() set, so callers can
 * say "plaintext on a TLS port" instead of an OpenSSL error code.
 *
 * Contexts (struct mr_tls_ctx) hold the certificate, key and CA and are
 * refcounted: every session holds a reference to the context it was created
 * from, so a context replaced on reload (SIGHUP) stays alive until its last
 * session is freed, and new sessions use the new one.
 *
 * Threading: a context may be shared by threads (OpenSSL's SSL_CTX is), but
 * its refcount here is not atomic: use one context per loop thread. A
 * session belongs to one thread. */
#ifndef MR_TLS_H
#define MR_TLS_H

#include <stddef.h>

#include "util/util.h"

struct mr_tls_ctx;
struct mr_tls;

struct mr_tls_ctx_options {
    int is_server;
    /* PEM certificate chain and its private key. A server needs both; a
     * client may present them (mutual TLS) or give neither. */
    const char *cert_file;
    const char *key_file;
    /* PEM CA certificates that sign the other side's certificate. NULL: the
     * other side is not authenticated (encryption only). */
    const char *ca_file;
    /* Server: require a client certificate signed by ca_file (mutual TLS;
     * needs ca_file). Client: verify the server's chain against ca_file
     * (the system's CAs when NULL); the host name or IP address is checked too when a
     * session is given one (mr_tls_new). */
    int is_verify_peer;
};

/* Loads files and builds a context (TLS 1.2 or newer) with one reference.
 * `o` and its strings are only read. Errors: MR_EINVAL (missing cert/key for
 * a server, a server verifying clients without a CA), MR_ECONFIG (a file cannot be read
 * or parsed, the key does not match the certificate), MR_ENOMEM; errmsg names the file
 * and OpenSSL's reason. */
int mr_tls_ctx_new(const struct mr_tls_ctx_options *o, struct mr_tls_ctx **out,
                   char *errmsg);
/* Takes a reference; returns ctx. NULL-safe. */
struct mr_tls_ctx *mr_tls_ctx_ref(struct mr_tls_ctx *ctx);
/* Drops a reference; frees the context with the last one. NULL-safe. */
void mr_tls_ctx_unref(struct mr_tls_ctx *ctx);
/* 1 for a server context. */
int mr_tls_ctx_is_server(const struct mr_tls_ctx *ctx);

/* New session on `ctx` (which it references). `verify_host` (client only,
 * may be NULL) is the name or IP address the server's certificate must match
 * when the context verifies; it is also sent as SNI when it is a name.
 * Errors: MR_ENOMEM, MR_EINVAL (a verify_host OpenSSL refuses). */
int mr_tls_new(struct mr_tls_ctx *ctx, const char *verify_host, struct mr_tls **out);
/* Frees the session (no close_notify: see mr_tls_shutdown). NULL-safe. */
void mr_tls_free(struct mr_tls *t);

/* Client: starts the handshake (the ClientHello is then pending). Server:
 * no-op. 0 or MR_EPROTO. */
int mr_tls_start(struct mr_tls *t);
/* Hands ciphertext read from the stream to the session and advances the
 * handshake. `data` is copied. Returns 0, MR_EPROTO (handshake or record
 * failure, certificate refused, plaintext on a server: errmsg says which)
 * or MR_ENOMEM. After an error the session is dead: take() what is pending
 * (an alert), write it, and close the stream. */
int mr_tls_feed(struct mr_tls *t, const void *data, size_t len);
/* Decrypted bytes, up to `cap`. Returns 0 with *got > 0 (data) or *got == 0
 * (nothing more until more ciphertext is fed), MR_ESHUTDOWN when the
 * other side sent close_notify (end of stream), or MR_EPROTO. */
int mr_tls_read(struct mr_tls *t, void *buf, size_t cap, size_t *got);
/* Queues plaintext (copied): encrypted now when the handshake is done,
 * else as soon as it completes. 0, MR_ENOMEM or MR_EPROTO (dead session). */
int mr_tls_write(struct mr_tls *t, const void *data, size_t len);
/* Queues a close_notify alert. */
void mr_tls_shutdown(struct mr_tls *t);
/* Ciphertext bytes waiting to be written to the stream. */
size_t mr_tls_pending(const struct mr_tls *t);
/* Moves every pending ciphertext byte into a new mr_malloc'd buffer (owned by
 * the caller). Returns 0 with *buf = NULL, *len = 0 when nothing is pending,
 * or MR_ENOMEM (nothing moved). */
int mr_tls_take(struct mr_tls *t, char **buf, size_t *len);

/* 1 once the handshake completed. */
int mr_tls_is_ready(const struct mr_tls *t);
/* 1 when a server session saw a first byte that cannot start TLS. */
int mr_tls_is_plaintext(const struct mr_tls *t);
/* The other side's verified certificate names: its subject CN and OU (""
 * when absent; truncated to the caps). Returns 1 when the peer presented a
 * certificate that verified, else 0 (both set to ""). */
int mr_tls_peer_names(const struct mr_tls *t, char *cn, size_t cn_cap, char *ou,
                      size_t ou_cap);
/* Why the last call failed. */
const char *mr_tls_errmsg(const struct mr_tls *t);

#endif /* MR_TLS_H */
