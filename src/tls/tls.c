/* tls: OpenSSL sessions over two memory BIOs. See tls.h.
 *
 * The read BIO receives the ciphertext the caller feeds; SSL_read and the
 * handshake consume it. The write BIO collects every record OpenSSL produces;
 * the caller drains it with mr_tls_take(). A memory BIO grows as needed, so
 * SSL_write never returns WANT_WRITE: a write either succeeds whole or the
 * session is dead. */
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tls/tls.h"

struct mr_tls_ctx {
    SSL_CTX *ssl_ctx;
    unsigned refs;
    int is_server;
    int is_verify_peer;
};

struct mr_tls {
    struct mr_tls_ctx *ctx; /* referenced */
    SSL *ssl;
    BIO *rbio, *wbio; /* owned by ssl */
    char *pend;       /* plaintext written before the handshake completed */
    size_t pend_len, pend_cap;
    int is_ready;
    int is_dead;
    int is_plaintext;
    int has_input; /* a first byte arrived */
    char errmsg[MR_ERRMSG_SIZE];
};

/* "what: OpenSSL's reason" from the error queue (which it empties). */
static void ssl_errmsg(char *errmsg, const char *what)
{
    unsigned long e = ERR_get_error();
    char reason[200] = "unknown error";
    if (e != 0) ERR_error_string_n(e, reason, sizeof reason);
    ERR_clear_error();
    mr_errmsg_printf(errmsg, "%s: %s", what, reason);
}

int mr_tls_ctx_new(const struct mr_tls_ctx_options *o, struct mr_tls_ctx **out,
                   char *errmsg)
{
    struct mr_tls_ctx *c;
    SSL_CTX *sc;
    char what[MR_ERRMSG_SIZE];
    *out = NULL;
    if (o->is_server && (o->cert_file == NULL || o->key_file == NULL)) {
        mr_errmsg_printf(errmsg, "tls: a server needs a certificate and a key");
        return MR_EINVAL;
    }
    if ((o->cert_file == NULL) != (o->key_file == NULL)) {
        mr_errmsg_printf(errmsg,
                         "tls: a certificate needs its key and a key its certificate");
        return MR_EINVAL;
    }
    if (o->is_server && o->is_verify_peer && o->ca_file == NULL) {
        mr_errmsg_printf(errmsg, "tls: verifying the other side needs a CA file");
        return MR_EINVAL;
    }
    ERR_clear_error();
    sc = SSL_CTX_new(o->is_server ? TLS_server_method() : TLS_client_method());
    if (sc == NULL) {
        ssl_errmsg(errmsg, "tls: SSL_CTX_new");
        return MR_ENOMEM;
    }
    (void)SSL_CTX_set_min_proto_version(sc, TLS1_2_VERSION);
    if (o->cert_file != NULL) {
        if (SSL_CTX_use_certificate_chain_file(sc, o->cert_file) != 1) {
            snprintf(what, sizeof what, "tls: certificate %s", o->cert_file);
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(sc, o->key_file, SSL_FILETYPE_PEM) != 1) {
            snprintf(what, sizeof what, "tls: key %s", o->key_file);
            goto fail;
        }
        if (SSL_CTX_check_private_key(sc) != 1) {
            snprintf(what, sizeof what, "tls: key %s does not match certificate %s",
                     o->key_file, o->cert_file);
            goto fail;
        }
    }
    if (o->ca_file != NULL) {
        if (SSL_CTX_load_verify_locations(sc, o->ca_file, NULL) != 1) {
            snprintf(what, sizeof what, "tls: CA file %s", o->ca_file);
            goto fail;
        }
        if (o->is_server && o->is_verify_peer) {
            STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->ca_file);
            if (names != NULL) SSL_CTX_set_client_CA_list(sc, names);
        }
    }
    if (!o->is_server && o->is_verify_peer && o->ca_file == NULL &&
        SSL_CTX_set_default_verify_paths(sc) != 1) {
        snprintf(what, sizeof what, "tls: the system's CA certificates");
        goto fail;
    }
    if (o->is_verify_peer) {
        SSL_CTX_set_verify(sc,
                           o->is_server
                               ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                               : SSL_VERIFY_PEER,
                           NULL);
    } else {
        SSL_CTX_set_verify(sc, SSL_VERIFY_NONE, NULL);
    }
    c = mr_calloc(1, sizeof *c);
    if (c == NULL) {
        SSL_CTX_free(sc);
        mr_errmsg_printf(errmsg, "tls: out of memory");
        return MR_ENOMEM;
    }
    c->ssl_ctx = sc;
    c->refs = 1;
    c->is_server = o->is_server;
    c->is_verify_peer = o->is_verify_peer;
    *out = c;
    return 0;
fail:
    ssl_errmsg(errmsg, what);
    SSL_CTX_free(sc);
    return MR_ECONFIG;
}

struct mr_tls_ctx *mr_tls_ctx_ref(struct mr_tls_ctx *ctx)
{
    if (ctx != NULL) ctx->refs++;
    return ctx;
}

void mr_tls_ctx_unref(struct mr_tls_ctx *ctx)
{
    if (ctx == NULL) return;
    MR_ASSERT(ctx->refs > 0);
    if (--ctx->refs > 0) return;
    SSL_CTX_free(ctx->ssl_ctx);
    mr_free(ctx);
}

int mr_tls_ctx_is_server(const struct mr_tls_ctx *ctx)
{
    return ctx->is_server;
}

int mr_tls_new(struct mr_tls_ctx *ctx, const char *verify_host, struct mr_tls **out)
{
    struct mr_tls *t;
    *out = NULL;
    t = mr_calloc(1, sizeof *t);
    if (t == NULL) return MR_ENOMEM;
    ERR_clear_error();
    t->ssl = SSL_new(ctx->ssl_ctx);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (t->ssl == NULL || t->rbio == NULL || t->wbio == NULL) {
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        SSL_free(t->ssl);
        mr_free(t);
        ERR_clear_error();
        return MR_ENOMEM;
    }
    /* An empty read BIO means "wait for more", not EOF. */
    BIO_set_mem_eof_return(t->rbio, -1);
    BIO_set_mem_eof_return(t->wbio, -1);
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    if (ctx->is_server) {
        SSL_set_accept_state(t->ssl);
    } else {
        SSL_set_connect_state(t->ssl);
        if (verify_host != NULL && verify_host[0] != '\0') {
            int is_ip = 0;
            ASN1_OCTET_STRING *ip = a2i_IPADDRESS(verify_host);
            if (ip != NULL) {
                is_ip = 1;
                ASN1_OCTET_STRING_free(ip);
            }
            if (ctx->is_verify_peer) {
                X509_VERIFY_PARAM *param = SSL_get0_param(t->ssl);
                int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, verify_host)
                               : X509_VERIFY_PARAM_set1_host(param, verify_host, 0);
                if (ok != 1) {
                    SSL_free(t->ssl);
                    mr_free(t);
                    ERR_clear_error();
                    return MR_EINVAL;
                }
            }
            if (!is_ip) (void)SSL_set_tlsext_host_name(t->ssl, verify_host);
        }
    }
    t->ctx = mr_tls_ctx_ref(ctx);
    *out = t;
    return 0;
}

void mr_tls_free(struct mr_tls *t)
{
    if (t == NULL) return;
    SSL_free(t->ssl); /* frees both BIOs */
    mr_tls_ctx_unref(t->ctx);
    mr_free(t->pend);
    mr_free(t);
}

/* Why a handshake or record call failed, into t->errmsg. */
static int fail_ssl(struct mr_tls *t, int rv, const char *what)
{
    int err = SSL_get_error(t->ssl, rv);
    long vr = SSL_get_verify_result(t->ssl);
    t->is_dead = 1;
    if (vr != X509_V_OK && ERR_peek_error() != 0 &&
        ERR_GET_REASON(ERR_peek_error()) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
        ERR_clear_error();
        mr_errmsg_printf(t->errmsg, "%s: certificate verify failed: %s", what,
                         X509_verify_cert_error_string(vr));
    } else if (err == SSL_ERROR_SSL) {
        ssl_errmsg(t->errmsg, what);
    } else {
        ERR_clear_error();
        mr_errmsg_printf(t->errmsg, "%s: SSL error %d", what, err);
    }
    return MR_EPROTO;
}

/* Encrypts what was written before the handshake completed. */
static int flush_pending(struct mr_tls *t)
{
    int rv;
    if (t->pend_len == 0) return 0;
    rv = SSL_write(t->ssl, t->pend, (int)t->pend_len);
    if (rv <= 0) return fail_ssl(t, rv, "tls write");
    t->pend_len = 0;
    return 0;
}

static int drive(struct mr_tls *t)
{
    int rv;
    if (t->is_dead) return MR_EPROTO;
    if (t->is_ready) return 0;
    ERR_clear_error();
    rv = SSL_do_handshake(t->ssl);
    if (rv == 1) {
        t->is_ready = 1;
        return flush_pending(t);
    }
    switch (SSL_get_error(t->ssl, rv)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return 0;
    default:
        return fail_ssl(t, rv, "tls handshake");
    }
}

int mr_tls_start(struct mr_tls *t)
{
    if (t->ctx->is_server) return 0;
    return drive(t);
}

int mr_tls_feed(struct mr_tls *t, const void *data, size_t len)
{
    const unsigned char *p = data;
    if (t->is_dead) return MR_EPROTO;
    if (len == 0) return drive(t);
    if (!t->has_input) {
        t->has_input = 1;
        /* Every TLS connection opens with a handshake record (type 22). */
        if (t->ctx->is_server && p[0] != 0x16) {
            t->is_dead = 1;
            t->is_plaintext = 1;
            mr_errmsg_printf(
                t->errmsg,
                "tls: the other side does not speak TLS (first byte 0x%02x): "
                "plaintext on a TLS port?",
                p[0]);
            return MR_EPROTO;
        }
    }
    if (len > (size_t)INT32_MAX || BIO_write(t->rbio, data, (int)len) != (int)len) {
        t->is_dead = 1;
        mr_errmsg_printf(t->errmsg, "tls: out of memory");
        return MR_ENOMEM;
    }
    return drive(t);
}

int mr_tls_read(struct mr_tls *t, void *buf, size_t cap, size_t *got)
{
    int rv;
    *got = 0;
    if (t->is_dead) return MR_EPROTO;
    if (!t->is_ready || cap == 0) return 0;
    if (cap > (size_t)INT32_MAX) cap = INT32_MAX;
    ERR_clear_error();
    rv = SSL_read(t->ssl, buf, (int)cap);
    if (rv > 0) {
        *got = (size_t)rv;
        return 0;
    }
    switch (SSL_get_error(t->ssl, rv)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return 0;
    case SSL_ERROR_ZERO_RETURN:
        mr_errmsg_printf(t->errmsg, "tls: the other side closed the session");
        return MR_ESHUTDOWN;
    default:
        return fail_ssl(t, rv, "tls read");
    }
}

int mr_tls_write(struct mr_tls *t, const void *data, size_t len)
{
    int rv;
    if (t->is_dead) return MR_EPROTO;
    if (len == 0) return 0;
    if (!t->is_ready) {
        if (t->pend_len + len > t->pend_cap) {
            size_t cap = t->pend_cap ? t->pend_cap : 4096;
            char *p;
            while (cap < t->pend_len + len) cap *= 2;
            p = mr_realloc(t->pend, cap);
            if (p == NULL) return MR_ENOMEM;
            t->pend = p;
            t->pend_cap = cap;
        }
        memcpy(t->pend + t->pend_len, data, len);
        t->pend_len += len;
        return drive(t);
    }
    ERR_clear_error();
    while (len > 0) {
        int n = len > (1u << 30) ? (1 << 30) : (int)len;
        rv = SSL_write(t->ssl, data, n);
        if (rv <= 0) return fail_ssl(t, rv, "tls write");
        data = (const char *)data + rv;
        len -= (size_t)rv;
    }
    return 0;
}

void mr_tls_shutdown(struct mr_tls *t)
{
    if (t->is_dead || !t->is_ready) return;
    ERR_clear_error();
    (void)SSL_shutdown(t->ssl);
    ERR_clear_error();
}

size_t mr_tls_pending(const struct mr_tls *t)
{
    return BIO_ctrl_pending(t->wbio);
}

int mr_tls_take(struct mr_tls *t, char **buf, size_t *len)
{
    size_t n = BIO_ctrl_pending(t->wbio);
    char *p;
    *buf = NULL;
    *len = 0;
    if (n == 0) return 0;
    p = mr_malloc(n);
    if (p == NULL) return MR_ENOMEM;
    if (BIO_read(t->wbio, p, (int)n) != (int)n) {
        /* A memory BIO hands out everything it holds. */
        mr_free(p);
        return MR_ENOMEM;
    }
    *buf = p;
    *len = n;
    return 0;
}

int mr_tls_is_ready(const struct mr_tls *t)
{
    return t->is_ready && !t->is_dead;
}

int mr_tls_is_plaintext(const struct mr_tls *t)
{
    return t->is_plaintext;
}

static void name_entry(X509_NAME *name, int nid, char *out, size_t cap)
{
    int i = X509_NAME_get_index_by_NID(name, nid, -1);
    out[0] = '\0';
    if (i >= 0) {
        ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
        unsigned char *u = NULL;
        int n = ASN1_STRING_to_UTF8(&u, s);
        if (n >= 0) {
            snprintf(out, cap, "%.*s", n, (const char *)u);
            OPENSSL_free(u);
        }
    }
}

int mr_tls_peer_names(const struct mr_tls *t, char *cn, size_t cn_cap, char *ou,
                      size_t ou_cap)
{
    X509 *x;
    cn[0] = '\0';
    ou[0] = '\0';
    if (!t->is_ready || !t->ctx->is_verify_peer) return 0;
    x = SSL_get1_peer_certificate(t->ssl);
    if (x == NULL) return 0;
    if (SSL_get_verify_result(t->ssl) != X509_V_OK) {
        X509_free(x);
        return 0;
    }
    name_entry(X509_get_subject_name(x), NID_commonName, cn, cn_cap);
    name_entry(X509_get_subject_name(x), NID_organizationalUnitName, ou, ou_cap);
    X509_free(x);
    return 1;
}

const char *mr_tls_errmsg(const struct mr_tls *t)
{
    return t->errmsg;
}
