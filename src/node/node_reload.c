/* node_reload: the node's TLS contexts, and SIGHUP.
 *
 * On SIGHUP the node parses its command line again (the config file and the
 * flags, exactly as at startup: flags still win), validates the result, and
 * compares it key by key with what runs. Keys that can change while running
 * are applied and logged "applied"; the others are logged "needs a restart"
 * and keep their running value (so a later SIGHUP reports them again). A file
 * that does not parse or validate, or TLS files that do not load, reject the
 * whole reload: nothing changes and the error is logged.
 *
 * Applied at once: client_token, admin_token, tls_admin_ou, tls_client_ou
 * (next request), log_level, request_timeout_ms (next request),
 * http_idle_timeout_ms, max_body_bytes, max_header_bytes, max_connections
 * (next check), and TLS: with TLS on, every SIGHUP re-reads tls_cert, tls_key
 * and tls_ca (rotated files are picked up even when the paths stay) and
 * applies tls_peer_verify and tls_client_verify; connections made afterwards
 * use the new contexts, open ones keep theirs (refcounted, see src/tls).
 * Restart-only: everything else, notably heartbeat_ms and
 * election_timeout_ms (the core fixes its timing at mr_raft_init, and the
 * randomized election timeout is drawn from it), addresses, peers, data_dir,
 * state_machine (deploy scripts through the log instead), cluster_id,
 * cluster_secret (peers must switch together), Lua limits, snapshot and WAL
 * settings, and switching TLS on or off (the listeners' mode is fixed).
 *
 * n->o points at a copy of the startup options (`live`) whose reloadable
 * string fields point into `run`, the configuration the node runs. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "config/config.h"
#include "node/node_int.h"

struct mr_node_reload {
    struct mr_node *n;
    const struct mr_node_options *startup; /* main's, outlives the node */
    struct mr_node_options live;
    struct mr_cfg run; /* what the node runs now */
    uv_signal_t sighup;
    unsigned reloads;
};

static const char *level_name(int l)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    return names[l & 3];
}

/* ---- TLS contexts --------------------------------------------------------------- */
struct tls_set {
    struct mr_tls_ctx *peer_server, *peer_client, *http;
};

static void tls_set_drop(struct tls_set *t)
{
    mr_tls_ctx_unref(t->peer_server);
    mr_tls_ctx_unref(t->peer_client);
    mr_tls_ctx_unref(t->http);
    memset(t, 0, sizeof *t);
}

/* Builds the three contexts. The dialer presents the node certificate as its
 * client certificate and verifies the acceptor against the CA, without a
 * host name: a peer is who the cluster CA says, the handshake then checks
 * its node id (and the HMAC secret when set). */
static int tls_build(const char *cert, const char *key, const char *ca, int peer_verify,
                     int client_verify, struct tls_set *out, char *err)
{
    struct mr_tls_ctx_options o;
    int rv;
    memset(out, 0, sizeof *out);
    memset(&o, 0, sizeof o);
    o.is_server = 1;
    o.cert_file = cert;
    o.key_file = key;
    o.ca_file = ca;
    o.is_verify_peer = ca != NULL && peer_verify;
    rv = mr_tls_ctx_new(&o, &out->peer_server, err);
    if (rv == 0) {
        o.is_verify_peer = client_verify;
        rv = mr_tls_ctx_new(&o, &out->http, err);
    }
    if (rv == 0) {
        o.is_server = 0;
        o.is_verify_peer = ca != NULL;
        rv = mr_tls_ctx_new(&o, &out->peer_client, err);
    }
    if (rv != 0) tls_set_drop(out);
    return rv;
}

int mr_node_tls_start(struct mr_node *n)
{
    const struct mr_node_options *o = n->o;
    struct tls_set t;
    char err[MR_ERRMSG_SIZE] = "";
    if (o->tls_cert == NULL || o->tls_cert[0] == '\0') {
        LOGI("TLS is off: the API and the peer port speak plaintext");
        return 0;
    }
    if (tls_build(o->tls_cert, o->tls_key, o->tls_ca, o->tls_peer_verify,
                  o->tls_client_verify, &t, err) != 0) {
        LOGE("TLS: %s", err);
        n->exit_code = MR_NODE_EXIT_CONFIG;
        return MR_ECONFIG;
    }
    n->tls_peer_server = t.peer_server;
    n->tls_peer_client = t.peer_client;
    n->tls_http = t.http;
    LOGI("TLS on: certificate %s; peers %s; HTTPS clients %s", o->tls_cert,
         o->tls_ca == NULL    ? "not verified (no tls_ca)"
         : o->tls_peer_verify ? "must present a certificate from tls_ca"
                              : "not asked for a certificate",
         o->tls_client_verify ? "must present a certificate from tls_ca"
                              : "not verified");
    if (o->tls_ca == NULL)
        LOGW("TLS without tls_ca: peer traffic is encrypted but peers are not "
             "authenticated "
             "by certificate (set cluster_secret, or tls_ca)");
    return 0;
}

/* ---- reload ----------------------------------------------------------------------- */
struct changes {
    const char *keys[64];
    unsigned n;
};

static void on_changed(void *data, const char *key)
{
    struct changes *ch = data;
    if (ch->n < sizeof ch->keys / sizeof ch->keys[0]) ch->keys[ch->n++] = key;
}

static int has(const struct changes *ch, const char *key)
{
    unsigned i;
    for (i = 0; i < ch->n; i++)
        if (strcmp(ch->keys[i], key) == 0) return 1;
    return 0;
}

static void swap_str(char **a, char **b)
{
    char *t = *a;
    *a = *b;
    *b = t;
}

/* Points the reloadable fields of `live` at `run`. */
static void live_from_run(struct mr_node_reload *st)
{
    struct mr_node_options *l = &st->live;
    const struct mr_cfg *r = &st->run;
    l->client_token = r->client_token;
    l->admin_token = r->admin_token;
    l->log_level = level_name(r->log_level);
    l->request_timeout_ms = (unsigned)r->request_timeout_ms;
    l->http_idle_timeout_ms = (uint32_t)r->http_idle_timeout_ms;
    l->max_body_bytes = (size_t)r->max_body_bytes;
    l->max_header_bytes = (size_t)r->max_header_bytes;
    l->max_connections = (uint32_t)r->max_connections;
    l->tls_cert = r->tls_cert;
    l->tls_key = r->tls_key;
    l->tls_ca = r->tls_ca;
    l->tls_peer_verify = r->tls_peer_verify;
    l->tls_client_verify = r->tls_client_verify;
    l->tls_admin_ou = r->tls_admin_ou;
    l->tls_client_ou = r->tls_client_ou;
}

/* The HTTP limits as start_http derives them from the options. */
static void apply_http_limits(struct mr_node *n)
{
    struct mr_http_options ho;
    mr_node_http_limits(n, &ho);
    mr_http_server_update(&n->http, &ho);
}

/* Keys applied while running. A str key swaps the string, an int key copies. */
enum { STR, INT };
static const struct {
    const char *key;
    int kind;
    size_t off;
} reloadable[] = {
    {"client_token", STR, offsetof(struct mr_cfg, client_token)},
    {"admin_token", STR, offsetof(struct mr_cfg, admin_token)},
    {"tls_admin_ou", STR, offsetof(struct mr_cfg, tls_admin_ou)},
    {"tls_client_ou", STR, offsetof(struct mr_cfg, tls_client_ou)},
    {"log_level", INT, offsetof(struct mr_cfg, log_level)},
    {"request_timeout_ms", INT, offsetof(struct mr_cfg, request_timeout_ms)},
    {"http_idle_timeout_ms", INT, offsetof(struct mr_cfg, http_idle_timeout_ms)},
    {"max_connections", INT, offsetof(struct mr_cfg, max_connections)},
    {"max_body_bytes", INT, offsetof(struct mr_cfg, max_body_bytes)},
    {"max_header_bytes", INT, offsetof(struct mr_cfg, max_header_bytes)},
    {"tls_cert", STR, offsetof(struct mr_cfg, tls_cert)},
    {"tls_key", STR, offsetof(struct mr_cfg, tls_key)},
    {"tls_ca", STR, offsetof(struct mr_cfg, tls_ca)},
    {"tls_peer_verify", INT, offsetof(struct mr_cfg, tls_peer_verify)},
    {"tls_client_verify", INT, offsetof(struct mr_cfg, tls_client_verify)},
};
#define N_RELOADABLE (sizeof reloadable / sizeof reloadable[0])

static int find_reloadable(const char *key)
{
    size_t i;
    for (i = 0; i < N_RELOADABLE; i++)
        if (strcmp(reloadable[i].key, key) == 0) return (int)i;
    return -1;
}

static int is_tls_key(const char *key)
{
    return strncmp(key, "tls_", 4) == 0;
}

static void do_reload(struct mr_node_reload *st)
{
    struct mr_node *n = st->n;
    struct mr_cfg nw;
    struct changes ch;
    struct tls_set t;
    char err[MR_ERRMSG_SIZE] = "";
    int tls_was = st->run.tls_cert != NULL, tls_now, tls_switch, rv;
    unsigned i, applied = 0, restart = 0;

    memset(&ch, 0, sizeof ch);
    memset(&t, 0, sizeof t);
    st->reloads++;
    LOGI("SIGHUP: reloading the configuration%s%s", st->run.config_path ? " from " : "",
         st->run.config_path ? st->run.config_path : " (flags only)");
    mr_cfg_defaults(&nw);
    rv = mr_cfg_parse_args(&nw, st->startup->reload_argc, st->startup->reload_argv, err);
    if (rv == 0) rv = mr_cfg_validate(&nw, err);
    if (rv != 0) {
        LOGE("reload rejected, the running configuration stays: %s", err);
        mr_cfg_free(&nw);
        return;
    }
    tls_now = nw.tls_cert != NULL;
    tls_switch = tls_was != tls_now;
    if (tls_was && tls_now) {
        /* Re-read even unchanged paths: certificates are rotated in place. */
        if (tls_build(nw.tls_cert, nw.tls_key, nw.tls_ca, nw.tls_peer_verify,
                      nw.tls_client_verify, &t, err) != 0) {
            LOGE("reload rejected, the running configuration stays: %s", err);
            mr_cfg_free(&nw);
            return;
        }
    }
    mr_cfg_diff(&st->run, &nw, on_changed, &ch);
    for (i = 0; i < ch.n; i++) {
        const char *key = ch.keys[i];
        int k = find_reloadable(key);
        if (k < 0 || (tls_switch && is_tls_key(key))) {
            LOGW("reload: %s changed: needs a restart (the running value stays)%s", key,
                 tls_switch && is_tls_key(key) ? "; TLS cannot be switched on or off live"
                                               : "");
            restart++;
            continue;
        }
        if (reloadable[k].kind == STR) {
            swap_str((char **)(void *)((char *)&st->run + reloadable[k].off),
                     (char **)(void *)((char *)&nw + reloadable[k].off));
        } else if (strcmp(key, "max_body_bytes") == 0 ||
                   strcmp(key, "max_header_bytes") == 0) {
            memcpy((char *)&st->run + reloadable[k].off, (char *)&nw + reloadable[k].off,
                   sizeof(uint64_t));
        } else {
            memcpy((char *)&st->run + reloadable[k].off, (char *)&nw + reloadable[k].off,
                   sizeof(int));
        }
        /* Secrets are never logged, only that they changed. */
        LOGI("reload: %s changed: applied", key);
        applied++;
    }
    live_from_run(st);
    if (has(&ch, "log_level"))
        mr_node_log_setup(n->name, mr_node_log_level_parse(st->live.log_level));
    apply_http_limits(n);
    if (t.http != NULL) {
        /* Both refuse only an on/off switch, excluded above. */
        MR_ASSERT(mr_http_server_set_tls(&n->http, t.http) == 0);
        MR_ASSERT(mr_net_set_tls(&n->net, t.peer_server, t.peer_client) == 0);
        tls_set_drop(
            &(struct tls_set){n->tls_peer_server, n->tls_peer_client, n->tls_http});
        n->tls_peer_server = t.peer_server;
        n->tls_peer_client = t.peer_client;
        n->tls_http = t.http;
        LOGI("reload: TLS certificate %s, key and CA re-read: new connections use them",
             st->run.tls_cert);
    }
    mr_cfg_free(&nw);
    LOGI("reload done: %u key%s applied, %u need%s a restart", applied,
         applied == 1 ? "" : "s", restart, restart == 1 ? "s" : "");
}

static void on_sighup(uv_signal_t *s, int signum)
{
    struct mr_node_reload *st = s->data;
    (void)signum;
    if (st->startup->reload_argc == 0) {
        LOGW("SIGHUP: this node was not started from a command line: nothing to reload");
        return;
    }
    do_reload(st);
}

void mr_node_reload_start(struct mr_node *n)
{
    struct mr_node_reload *st;
    char err[MR_ERRMSG_SIZE] = "";
    int rv;
    st = mr_calloc(1, sizeof *st);
    if (st == NULL) {
        LOGW("SIGHUP reload unavailable: out of memory");
        return;
    }
    st->n = n;
    st->startup = n->o;
    st->live = *n->o;
    mr_cfg_defaults(&st->run);
    if (n->o->reload_argc > 0) {
        /* The baseline: the same parse main did at startup. */
        rv = mr_cfg_parse_args(&st->run, n->o->reload_argc, n->o->reload_argv, err);
        if (rv == 0) rv = mr_cfg_validate(&st->run, err);
        if (rv != 0) {
            LOGW("SIGHUP reload unavailable: the configuration no longer parses: %s",
                 err);
            mr_cfg_free(&st->run);
            mr_free(st);
            return;
        }
        live_from_run(st);
    }
    MR_ASSERT(uv_signal_init(&n->loop, &st->sighup) == 0);
    st->sighup.data = st;
    uv_signal_start(&st->sighup, on_sighup, SIGHUP);
    n->reload = st;
    n->o = &st->live;
}

static void on_sighup_closed(uv_handle_t *h)
{
    struct mr_node_reload *st = h->data;
    mr_cfg_free(&st->run);
    mr_free(st);
}

void mr_node_reload_close(struct mr_node *n)
{
    struct mr_node_reload *st = n->reload;
    if (st != NULL) {
        /* The rest of the shutdown reads main's options again. */
        n->o = st->startup;
        n->reload = NULL;
        uv_close((uv_handle_t *)&st->sighup, on_sighup_closed);
    }
    mr_tls_ctx_unref(n->tls_peer_server);
    mr_tls_ctx_unref(n->tls_peer_client);
    mr_tls_ctx_unref(n->tls_http);
    n->tls_peer_server = n->tls_peer_client = n->tls_http = NULL;
}
