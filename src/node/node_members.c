/* node_members: membership, cluster formation and joining.
 *
 * Each Raft server carries a context string with the node's name and
 * addresses: "name=n1 raft=127.0.0.1:7001 http=127.0.0.1:8001 [learner=keep]".
 *
 * Formation:
 *   - static peers: every node bootstraps the same configuration (all voters)
 *     at index 1, so their logs start identical;
 *   - bootstrap_expect = N: this node collects join requests until it knows
 *     N members, then bootstraps them all as voters; the joiners receive the
 *     log from the first leader;
 *   - join: a node with an empty data dir asks a member (HTTP POST
 *     /v1/members, over HTTPS with the peer client TLS context when TLS is
 *     on) to add it; a follower forwards that to the leader, which adds it
 *     as a learner and promotes it once it has caught up.
 * The join answer lists every member's addresses, so the new node can answer
 * the leader before the configuration reaches it through the log. */
#include "node/node_int.h"

#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void mr_node_member_parse(struct mr_node_member *m, mr_node_id id, int role,
                          const char *context)
{
    const char *p = context ? context : "";
    memset(m, 0, sizeof *m);
    m->id = id;
    m->role = role;
    while (*p) {
        const char *end = strchr(p, ' ');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char *dst = NULL;
        size_t cap = 0, off = 0;
        if (len > 5 && strncmp(p, "name=", 5) == 0) {
            dst = m->name, cap = sizeof m->name, off = 5;
        } else if (len > 5 && strncmp(p, "raft=", 5) == 0) {
            dst = m->raft_addr, cap = sizeof m->raft_addr, off = 5;
        } else if (len > 5 && strncmp(p, "http=", 5) == 0) {
            dst = m->http_addr, cap = sizeof m->http_addr, off = 5;
        } else if (len == 12 && strncmp(p, "learner=keep", 12) == 0) {
            m->keep_learner = 1;
        }
        if (dst != NULL && len - off < cap) {
            memcpy(dst, p + off, len - off);
            dst[len - off] = '\0';
        }
        p += len;
        while (*p == ' ') p++;
    }
}

void mr_node_member_context(char *buf, size_t n, const char *name, const char *raft_addr,
                            const char *http_addr, int keep_learner)
{
    snprintf(buf, n, "name=%s raft=%s http=%s%s", name, raft_addr,
             http_addr && http_addr[0] ? http_addr : "-", keep_learner ? " learner=keep" : "");
}

/* Makes the transport's peer list match `cfg`. */
static void sync_peers(struct mr_node *n, const struct mr_raft_config *cfg)
{
    unsigned i;
    for (i = 0; i < cfg->n; i++) {
        struct mr_node_member m;
        mr_node_member_parse(&m, cfg->servers[i].id, cfg->servers[i].role, cfg->servers[i].context);
        if (m.id != n->id && m.raft_addr[0]) mr_net_set_peer(&n->net, m.id, m.raft_addr);
    }
}

void mr_node_members_sync(struct mr_node *n)
{
    struct mr_raft_status st;
    mr_node_members_check_removed(n);
    mr_raft_status(&n->raft, &st);
    if (st.config == NULL || st.config_index == n->synced_config_index) return;
    n->synced_config_index = st.config_index;
    sync_peers(n, st.config);
}

void mr_node_apply_config(struct mr_node *n, const void *data, size_t len, mr_index index)
{
    struct mr_raft_config cfg;
    char err[MR_ERRMSG_SIZE] = "";
    struct mr_rcbuf *copy;
    unsigned i;
    mr_raft_config_init(&cfg);
    if (mr_raft_config_decode(data, len, &cfg, err) != 0) {
        LOGE("entry %llu: undecodable configuration: %s", (unsigned long long)index, err);
        return;
    }
    copy = mr_rcbuf_copy(data, len);
    if (copy != NULL) {
        mr_rcbuf_unref(n->applied_conf);
        n->applied_conf = copy;
    }
    sync_peers(n, &cfg);
    {
        char list[512] = "";
        size_t off = 0;
        for (i = 0; i < cfg.n; i++) {
            struct mr_node_member m;
            mr_node_member_parse(&m, cfg.servers[i].id, cfg.servers[i].role, cfg.servers[i].context);
            if (off < sizeof list)
                off += (size_t)snprintf(list + off, sizeof list - off, "%s%s%s", i ? ", " : "",
                                        m.name, m.role == MR_RAFT_LEARNER ? " (learner)" : "");
        }
        /* whether this node was removed: mr_node_members_check_removed */
        LOGI("membership at index %llu: %s", (unsigned long long)index, list);
    }
    mr_raft_config_close(&cfg);
}

/* ---- removed ----------------------------------------------------------------------- */

static void removed_path(struct mr_node *n, char *buf, size_t size)
{
    snprintf(buf, size, "%s/removed", n->o->data_dir);
}

mr_index mr_node_members_load_removed(struct mr_node *n)
{
    char path[4200], text[64] = "";
    unsigned long long index = 0, leader = 0;
    removed_path(n, path, sizeof path);
    FILE *f = fopen(path, "r");
    if (f == NULL) return 0;
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = '\0';
    if (sscanf(text, "removed at index %llu leader %llu", &index, &leader) < 1 || index == 0) {
        LOGW("%s: unreadable (\"%.40s\"): ignored", path, text);
        return 0;
    }
    n->is_removed = 1;
    n->removed_index = index;
    n->removed_leader = leader;
    LOGW("this node was removed from the cluster (configuration at index %llu, recorded in "
         "%s): it takes no part in elections and refuses requests; stop it",
         index, path);
    return index;
}

/* Writes <data_dir>/removed durably (temporary file, fsync, rename, fsync of
 * the directory): a restart must still know. */
static int write_removed(struct mr_node *n, mr_index index, char *err, size_t errlen)
{
    char path[4200], tmp[4300], text[64];
    removed_path(n, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int len = snprintf(text, sizeof text, "removed at index %llu leader %llu\n",
                       (unsigned long long)index, (unsigned long long)n->removed_leader);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) goto fail;
    if (write(fd, text, (size_t)len) != len || fsync(fd) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        goto fail;
    }
    close(fd);
    if (rename(tmp, path) != 0) goto fail;
    fd = open(n->o->data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    return 0;
fail:
    snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
    unlink(tmp);
    return -1;
}

void mr_node_members_check_removed(struct mr_node *n)
{
    struct mr_raft_status st;
    char path[4200], lb[72], err[4400];
    mr_raft_status(&n->raft, &st);
    if (st.config == NULL || st.config->n == 0) return; /* joining: no configuration yet */
    if (mr_raft_config_get(st.config, n->id) != NULL) {
        n->was_member = 1;
        if (n->is_removed) {
            n->is_removed = 0;
            removed_path(n, path, sizeof path);
            unlink(path);
            LOGI("this node is a member of the cluster again (configuration at index %llu)",
                 (unsigned long long)st.config_index);
        }
        return;
    }
    /* A joining node applies configurations without itself while it catches
     * up: only a former member whose removal committed is removed. The
     * record is also the commit hint of the next start (mr_raft_load), so it
     * waits until the WAL holds the removing entry: a follower's commit runs
     * ahead of its disk, and a record written before the entry is durable
     * could, after a crash, mark as committed an older conflicting entry the
     * WAL still has at that index. */
    if (n->is_removed || !n->was_member || st.config_index > st.commit ||
        st.config_index > st.persisted)
        return;
    n->is_removed = 1;
    n->removed_index = st.config_index;
    n->removed_leader = n->leader;
    if (write_removed(n, st.config_index, err, sizeof err) != 0)
        LOGE("cannot record the removal (a restart will not know it): %s", err);
    if (n->leader != 0) {
        struct mr_node_member m;
        const char *http = "";
        if (mr_node_find_member(n, n->leader, &m) == 0 && strcmp(m.http_addr, "-") != 0)
            http = m.http_addr;
        LOGW("this node was removed from the cluster (configuration at index %llu, leader %s%s%s): "
             "it takes no part in elections and refuses requests; stop it",
             (unsigned long long)st.config_index, mr_node_name_of(n, n->leader, lb, sizeof lb),
             http[0] ? " at " : "", http);
    } else {
        LOGW("this node was removed from the cluster (configuration at index %llu, no leader "
             "known): it takes no part in elections and refuses requests; stop it",
             (unsigned long long)st.config_index);
    }
}

void mr_node_members_json(struct mr_node *n, struct mr_http_json *j)
{
    struct mr_raft_status st;
    unsigned i;
    mr_raft_status(&n->raft, &st);
    mr_http_json_arr_begin(j);
    for (i = 0; st.config && i < st.config->n; i++) {
        struct mr_node_member m;
        mr_node_member_parse(&m, st.config->servers[i].id, st.config->servers[i].role,
                             st.config->servers[i].context);
        mr_http_json_obj_begin(j);
        mr_http_json_key(j, "id");
        mr_http_json_str(j, m.name);
        mr_http_json_key(j, "raft_addr");
        mr_http_json_str(j, m.raft_addr);
        mr_http_json_key(j, "http_addr");
        mr_http_json_str(j, strcmp(m.http_addr, "-") == 0 ? NULL : m.http_addr);
        mr_http_json_key(j, "voter");
        mr_http_json_bool(j, m.role == MR_RAFT_VOTER);
        mr_http_json_key(j, "leader");
        mr_http_json_bool(j, m.id == n->leader && n->leader != 0);
        if (n->role == MR_RAFT_LEADER) {
            unsigned k;
            for (k = 0; k < st.n_progress; k++) {
                if (st.progress[k].id != m.id) continue;
                mr_http_json_key(j, "match_index");
                mr_http_json_uint(j, st.progress[k].match);
            }
        }
        mr_http_json_obj_end(j);
    }
    mr_http_json_arr_end(j);
}

/* ---- bootstrap ------------------------------------------------------------------- */
static int bootstrap_with(struct mr_node *n, struct mr_raft_config *cfg)
{
    struct mr_raft_event ev;
    int rv = mr_raft_bootstrap(&n->raft, cfg);
    if (rv != 0) {
        LOGE("cannot bootstrap the cluster: %s", mr_strerror(rv));
        return MR_NODE_EXIT_RUNTIME;
    }
    sync_peers(n, cfg);
    LOGI("bootstrapped a new cluster of %u voters", cfg->n);
    memset(&ev, 0, sizeof ev);
    ev.type = MR_RAFT_EVENT_NONE;
    mr_node_step(n, &ev);
    return 0;
}

static int cmp_peer(const void *a, const void *b)
{
    return strcmp(((const struct mr_node_peer *const *)a)[0]->name,
                  ((const struct mr_node_peer *const *)b)[0]->name);
}

int mr_node_members_bootstrap_static(struct mr_node *n)
{
    struct mr_raft_config cfg;
    const struct mr_node_peer *sorted[64];
    char ctx[512];
    size_t i, np = n->o->n_peers;
    int rv = 0, self_in = 0;
    if (np > sizeof sorted / sizeof sorted[0]) {
        LOGE("too many peers (%zu, at most 64)", np);
        n->exit_code = MR_NODE_EXIT_CONFIG;
        return MR_NODE_EXIT_CONFIG;
    }
    /* Every node must write the very same entry at index 1: sort by name. */
    for (i = 0; i < np; i++) sorted[i] = &n->o->peers[i];
    qsort(sorted, np, sizeof sorted[0], cmp_peer);
    mr_raft_config_init(&cfg);
    for (i = 0; i < np && rv == 0; i++) {
        const struct mr_node_peer *p = sorted[i];
        /* Only what every node's peer list says: the entry must be identical. */
        const char *http = p->http_addr;
        if (strcmp(p->name, n->name) == 0) self_in = 1;
        mr_node_member_context(ctx, sizeof ctx, p->name, p->raft_addr, http, 0);
        rv = mr_raft_config_add(&cfg, mr_node_id_from_name(p->name), MR_RAFT_VOTER, ctx);
    }
    if (n->o->n_peers == 0) { /* bootstrap_expect = 1 */
        mr_node_member_context(ctx, sizeof ctx, n->name, n->o->raft_addr, n->o->http_addr, 0);
        rv = mr_raft_config_add(&cfg, n->id, MR_RAFT_VOTER, ctx);
        self_in = 1;
    }
    if (rv != 0 || !self_in) {
        mr_raft_config_close(&cfg);
        LOGE("%s", rv ? "invalid peer list (duplicate names?)" : "peers must include this node's own id");
        n->exit_code = MR_NODE_EXIT_CONFIG;
        return MR_NODE_EXIT_CONFIG;
    }
    rv = bootstrap_with(n, &cfg);
    mr_raft_config_close(&cfg);
    n->is_bootstrapping = 0;
    if (rv != 0) n->exit_code = rv;
    return rv;
}

static void answer_join(struct mr_node *n, struct mr_node_op *op)
{
    struct mr_http_buf b;
    struct mr_http_json j;
    mr_http_buf_init(&b);
    mr_http_json_init(&j, &b);
    mr_http_json_obj_begin(&j);
    mr_http_json_key(&j, "index");
    mr_http_json_uint(&j, 1);
    mr_http_json_key(&j, "members");
    mr_node_members_json(n, &j);
    mr_http_json_obj_end(&j);
    op->shape = SHAPE_RAW;
    mr_node_op_finish(op, 200, 1, b.data ? b.data : "{}", b.len, 0);
    mr_http_buf_close(&b);
}

static void maybe_bootstrap_expect(struct mr_node *n)
{
    struct mr_raft_config cfg;
    char ctx[512];
    unsigned i;
    int rv;
    if (!n->is_bootstrapping || n->n_pending_members + 1 < n->o->bootstrap_expect) return;
    mr_raft_config_init(&cfg);
    mr_node_member_context(ctx, sizeof ctx, n->name, n->o->raft_addr, n->o->http_addr, 0);
    rv = mr_raft_config_add(&cfg, n->id, MR_RAFT_VOTER, ctx);
    for (i = 0; i < n->n_pending_members && rv == 0; i++) {
        struct mr_node_member *m = &n->pending_members[i];
        mr_node_member_context(ctx, sizeof ctx, m->name, m->raft_addr, m->http_addr, 0);
        rv = mr_raft_config_add(&cfg, m->id, MR_RAFT_VOTER, ctx);
    }
    if (rv == 0) rv = bootstrap_with(n, &cfg);
    mr_raft_config_close(&cfg);
    if (rv != 0) return;
    n->is_bootstrapping = 0;
    while (!mr_queue_empty(&n->pending_join_ops)) {
        struct mr_node_op *op = MR_CONTAINER_OF(n->pending_join_ops.next, struct mr_node_op, link);
        answer_join(n, op);
    }
}

/* POST /v1/members body: {"id","raft_addr","http_addr","learner"}. */
void mr_node_members_on_add(struct mr_node *n, struct mr_node_op *op)
{
    static const char *const names[] = {"id", "raft_addr", "http_addr", "learner"};
    char f[4][256], err[MR_ERRMSG_SIZE], ctx[600];
    struct mr_node_member existing;
    struct mr_raft_event ev;
    mr_node_id id;
    int rv;

    if (mr_node_json_fields(n, op->body, op->body_len, names, f, 4, err) != 0)
        { mr_node_op_fail(op, 400, "invalid_json", err); return; }
    if (f[0][0] == '\0' || f[1][0] == '\0')
        { mr_node_op_fail(op, 400, "invalid_request", "id and raft_addr are required"); return; }
    if (strlen(f[0]) > MR_NODE_NAME_MAX || strlen(f[1]) >= 128 || strlen(f[2]) >= 128 ||
        strspn(f[0], "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") !=
            strlen(f[0]) ||
        strchr(f[1], ' ') || strchr(f[2], ' '))
        { mr_node_op_fail(op, 400, "invalid_request", "bad id (use [A-Za-z0-9_.-]{1,64}) or address"); return; }
    id = mr_node_id_from_name(f[0]);

    if (n->is_bootstrapping) {
        unsigned i;
        if (id != n->id) {
            for (i = 0; i < n->n_pending_members; i++)
                if (n->pending_members[i].id == id) break;
            if (i == n->n_pending_members && i < sizeof n->pending_members / sizeof n->pending_members[0]) {
                struct mr_node_member *m = &n->pending_members[n->n_pending_members++];
                memset(m, 0, sizeof *m);
                m->id = id;
                m->role = MR_RAFT_VOTER;
                memcpy(m->name, f[0], strlen(f[0]) + 1); /* length checked above */
                memcpy(m->raft_addr, f[1], strlen(f[1]) + 1); /* lengths checked above */
                memcpy(m->http_addr, f[2], strlen(f[2]) + 1);
                LOGI("%s asked to join (%u of %u members known)", f[0], n->n_pending_members + 1,
                     n->o->bootstrap_expect);
            }
        }
        mr_net_set_peer(&n->net, id, f[1]);
        mr_queue_push_tail(&n->pending_join_ops, &op->link);
        maybe_bootstrap_expect(n);
        return;
    }
    if (mr_node_find_member(n, id, &existing) == 0) {
        if (strcmp(existing.raft_addr, f[1]) == 0) {
            /* Already a member (a restarted joiner asking again): say so. */
            mr_net_set_peer(&n->net, id, f[1]);
            { answer_join(n, op); return; }
        }
        { mr_node_op_fail(op, 409, "exists", "a member with that id (or a colliding one) exists"); return; }
    }
    mr_net_set_peer(&n->net, id, f[1]);
    mr_node_member_context(ctx, sizeof ctx, f[0], f[1], f[2], strcmp(f[3], "true") == 0);
    memset(&ev, 0, sizeof ev);
    ev.type = MR_RAFT_EVENT_CHANGE_MEMBERS;
    ev.change = MR_RAFT_ADD_LEARNER;
    ev.node = id;
    ev.context = ctx;
    rv = mr_node_step(n, &ev);
    if (rv == MR_ENOTLEADER || rv == MR_ENOLEADER) {
        mr_queue_push_tail(&n->wait_leader, &op->link);
        return;
    }
    if (rv == MR_EBUSY) {
        mr_node_op_wait_busy(n, op); /* retried until its deadline */
        return;
    }
    if (rv != 0) { mr_node_op_fail(op, 500, mr_err_name(rv), mr_strerror(rv)); return; }
    LOGI("adding %s (%s) as a learner", f[0], f[1]);
    op->index = ev.out_index;
    op->term = ev.out_term;
    mr_queue_push_tail(&n->proposals, &op->link);
}

/* ---- the joiner's side: an async HTTP POST to a member ------------------------- */
struct join_req {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    struct mr_node *n;
    char *out;
    struct mr_http_buf in;
    http_parser parser;
    int complete;
    /* With TLS on, the member's HTTP port speaks HTTPS: the request (and the
     * admin token in it) goes through a session on the peer client context
     * (node certificate, tls_ca), never in plaintext. NULL without TLS. */
    struct mr_tls *tls;
};

static void join_closed(uv_handle_t *h)
{
    struct join_req *jr = h->data;
    jr->n->join_inflight = 0;
    mr_free(jr->out);
    mr_http_buf_close(&jr->in);
    mr_tls_free(jr->tls);
    mr_free(jr);
}

static void join_close(struct join_req *jr)
{
    if (!uv_is_closing((uv_handle_t *)&jr->tcp)) uv_close((uv_handle_t *)&jr->tcp, join_closed);
}

/* One write of ciphertext (handshake records, the request, alerts). */
struct join_wreq {
    uv_write_t req;
    struct join_req *jr;
    char *buf;
};

static void join_tls_written(uv_write_t *w, int status)
{
    struct join_wreq *jw = MR_CONTAINER_OF(w, struct join_wreq, req);
    struct join_req *jr = jw->jr;
    mr_free(jw->buf);
    mr_free(jw);
    if (status != 0) join_close(jr);
}

/* Writes what the TLS session has pending. 0, or an error (the caller closes). */
static int join_tls_flush(struct join_req *jr)
{
    struct join_wreq *jw;
    char *buf;
    size_t len;
    uv_buf_t b;
    if (mr_tls_pending(jr->tls) == 0) return 0;
    jw = mr_calloc(1, sizeof *jw);
    if (jw == NULL) return MR_ENOMEM;
    if (mr_tls_take(jr->tls, &buf, &len) != 0) {
        mr_free(jw);
        return MR_ENOMEM;
    }
    jw->jr = jr;
    jw->buf = buf;
    b = uv_buf_init(buf, (unsigned)len);
    if (uv_write(&jw->req, (uv_stream_t *)&jr->tcp, &b, 1, join_tls_written) != 0) {
        mr_free(buf);
        mr_free(jw);
        return MR_EPROTO;
    }
    return 0;
}

static int jp_complete(http_parser *p)
{
    struct join_req *jr = p->data;
    jr->complete = 1;
    return 0;
}

static int jp_body(http_parser *p, const char *at, size_t len)
{
    struct join_req *jr = p->data;
    if (jr->in.len + len > (1u << 20)) return 1;
    mr_http_buf_append(&jr->in, at, len);
    return 0;
}

/* The join answer: {"members":[{"id","raft_addr",...}]}: learn the peers. */
static void join_succeeded(struct mr_node *n, const char *body, size_t len)
{
    const char *p = body, *end = body + len;
    n->needs_join = 0;
    LOGI("joined the cluster; waiting for the leader to send the log");
    /* Scan raft_addr/id pairs; the answer is ours, produced by node_members_json. */
    while (p < end) {
        const char *idk = memmem(p, (size_t)(end - p), "\"id\":\"", 6), *ra;
        char name[MR_NODE_NAME_MAX + 1], addr[128];
        size_t l;
        if (idk == NULL) break;
        idk += 6;
        l = strcspn(idk, "\"");
        if (l > MR_NODE_NAME_MAX) break;
        memcpy(name, idk, l);
        name[l] = '\0';
        ra = memmem(idk, (size_t)(end - idk), "\"raft_addr\":\"", 13);
        if (ra == NULL) break;
        ra += 13;
        l = strcspn(ra, "\"");
        if (l >= sizeof addr) break;
        memcpy(addr, ra, l);
        addr[l] = '\0';
        if (strcmp(name, n->name) != 0) mr_net_set_peer(&n->net, mr_node_id_from_name(name), addr);
        p = ra + l;
    }
}

static void join_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
    (void)h;
    buf->base = mr_malloc(size);
    buf->len = buf->base ? size : 0;
}

static void join_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct join_req *jr = s->data;
    static const http_parser_settings settings = {.on_body = jp_body,
                                                  .on_message_complete = jp_complete};
    if (nread > 0 && jr->tls != NULL) {
        /* The ciphertext goes into the session, the plaintext to the parser. */
        int rv = mr_tls_feed(jr->tls, buf->base, (size_t)nread);
        while (rv == 0 && !jr->complete) {
            size_t got;
            rv = mr_tls_read(jr->tls, buf->base, buf->len, &got);
            if (rv != 0 || got == 0) break;
            http_parser_execute(&jr->parser, &settings, buf->base, got);
        }
        if (rv == 0 || rv == MR_EPROTO) (void)join_tls_flush(jr); /* the request, an alert */
        if (rv != 0 && rv != MR_ESHUTDOWN) {
            LOGW("join: %s", mr_tls_errmsg(jr->tls));
            nread = UV_EPROTO;
        } else if (rv == MR_ESHUTDOWN) {
            nread = UV_EOF;
        }
    } else if (nread > 0) {
        http_parser_execute(&jr->parser, &settings, buf->base, (size_t)nread);
    }
    mr_free(buf->base);
    if (nread < 0 || jr->complete) {
        if (jr->complete) {
            unsigned status = jr->parser.status_code;
            if (status == 200) {
                join_succeeded(jr->n, jr->in.data ? jr->in.data : "", jr->in.len);
            } else {
                LOGW("join request answered %u: %.*s", status, (int)(jr->in.len > 300 ? 300 : jr->in.len),
                     jr->in.data ? jr->in.data : "");
            }
        }
        if (!uv_is_closing((uv_handle_t *)&jr->tcp)) uv_close((uv_handle_t *)&jr->tcp, join_closed);
    }
}

static void join_written(uv_write_t *w, int status)
{
    struct join_req *jr = w->data;
    if (status != 0 && !uv_is_closing((uv_handle_t *)&jr->tcp))
        uv_close((uv_handle_t *)&jr->tcp, join_closed);
}

static void join_connected(uv_connect_t *c, int status)
{
    struct join_req *jr = c->data;
    uv_buf_t b;
    if (status != 0) {
        LOGD("join: cannot connect: %s", uv_strerror(status));
        uv_close((uv_handle_t *)&jr->tcp, join_closed);
        return;
    }
    if (jr->n->tls_peer_client != NULL) {
        /* Queued in the session, sent once the handshake completes. */
        int rv = mr_tls_new(jr->n->tls_peer_client, NULL, &jr->tls);
        if (rv == 0) rv = mr_tls_start(jr->tls);
        if (rv == 0) rv = mr_tls_write(jr->tls, jr->out, strlen(jr->out));
        if (rv == 0) rv = join_tls_flush(jr);
        if (rv != 0) {
            LOGW("join: cannot start TLS: %s", jr->tls ? mr_tls_errmsg(jr->tls) : mr_strerror(rv));
            join_close(jr);
            return;
        }
    } else {
        b = uv_buf_init(jr->out, (unsigned)strlen(jr->out));
        jr->write.data = jr;
        uv_write(&jr->write, (uv_stream_t *)&jr->tcp, &b, 1, join_written);
    }
    uv_read_start((uv_stream_t *)&jr->tcp, join_alloc, join_read);
}

static int parse_hostport(const char *addr, struct sockaddr_storage *ss)
{
    char host[128];
    const char *colon = strrchr(addr, ':');
    size_t hl;
    int port;
    if (colon == NULL) return MR_EINVAL;
    hl = (size_t)(colon - addr);
    if (hl == 0 || hl >= sizeof host) return MR_EINVAL;
    memcpy(host, addr, hl);
    host[hl] = '\0';
    port = atoi(colon + 1);
    if (port <= 0 || port > 65535) return MR_EINVAL;
    if (host[0] == '[') {
        host[hl - 1] = '\0';
        return uv_ip6_addr(host + 1, port, (struct sockaddr_in6 *)ss) ? MR_EINVAL : 0;
    }
    if (strcmp(host, "localhost") == 0) snprintf(host, sizeof host, "127.0.0.1");
    return uv_ip4_addr(host, port, (struct sockaddr_in *)ss) ? MR_EINVAL : 0;
}

static void send_join(struct mr_node *n, const char *target)
{
    struct join_req *jr;
    struct sockaddr_storage ss;
    struct mr_http_buf body;
    struct mr_http_json j;
    size_t cap;
    if (parse_hostport(target, &ss) != 0) {
        LOGW("join address %s is not host:port", target);
        return;
    }
    jr = mr_calloc(1, sizeof *jr);
    if (jr == NULL) return;
    jr->n = n;
    mr_http_buf_init(&jr->in);
    mr_http_buf_init(&body);
    mr_http_json_init(&j, &body);
    mr_http_json_obj_begin(&j);
    mr_http_json_key(&j, "id");
    mr_http_json_str(&j, n->name);
    mr_http_json_key(&j, "raft_addr");
    mr_http_json_str(&j, n->o->raft_addr);
    mr_http_json_key(&j, "http_addr");
    mr_http_json_str(&j, n->o->http_addr);
    mr_http_json_obj_end(&j);
    cap = body.len + 512 + (n->o->admin_token ? strlen(n->o->admin_token) : 0);
    jr->out = mr_malloc(cap);
    if (jr->out == NULL || body.is_oom) {
        mr_http_buf_close(&body);
        mr_http_buf_close(&jr->in);
        mr_free(jr->out);
        mr_free(jr);
        return;
    }
    snprintf(jr->out, cap,
             "POST /v1/members HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n"
             "Content-Type: application/json\r\nContent-Length: %zu\r\n%s%s%s\r\n%s",
             target, body.len, n->o->admin_token && n->o->admin_token[0] ? "Authorization: Bearer " : "",
             n->o->admin_token && n->o->admin_token[0] ? n->o->admin_token : "",
             n->o->admin_token && n->o->admin_token[0] ? "\r\n" : "", body.data);
    mr_http_buf_close(&body);
    http_parser_init(&jr->parser, HTTP_RESPONSE);
    jr->parser.data = jr;
    uv_tcp_init(&n->loop, &jr->tcp);
    jr->tcp.data = jr;
    jr->connect.data = jr;
    n->join_inflight = 1;
    if (uv_tcp_connect(&jr->connect, &jr->tcp, (struct sockaddr *)&ss, join_connected) != 0)
        uv_close((uv_handle_t *)&jr->tcp, join_closed);
}

/* ---- periodic work ------------------------------------------------------------- */
void mr_node_members_tick(struct mr_node *n)
{
    uint64_t now = mr_node_now(n);
    if (n->needs_join && !n->join_inflight && now >= n->next_join_at) {
        static unsigned attempt;
        const char *target = n->o->join[attempt % n->o->n_join];
        attempt++;
        n->next_join_at = now + 1000;
        send_join(n, target);
    }
    if (n->needs_join) {
        /* Once the leader's log has reached us we are in. */
        struct mr_raft_status st;
        mr_raft_status(&n->raft, &st);
        if (st.config && mr_raft_config_get(st.config, n->id) != NULL) n->needs_join = 0;
    }
    /* Leader: promote caught-up learners (thesis 4.2.1). */
    if (n->role == MR_RAFT_LEADER && now >= n->last_promote_try + 200) {
        struct mr_raft_status st;
        unsigned i;
        mr_raft_status(&n->raft, &st);
        for (i = 0; st.config && i < st.config->n; i++) {
            const struct mr_raft_server *s = &st.config->servers[i];
            struct mr_node_member m;
            unsigned k;
            if (s->role != MR_RAFT_LEARNER) continue;
            mr_node_member_parse(&m, s->id, s->role, s->context);
            if (m.keep_learner) continue;
            for (k = 0; k < st.n_progress; k++) {
                if (st.progress[k].id == s->id && st.progress[k].match >= st.commit) {
                    struct mr_raft_event ev;
                    memset(&ev, 0, sizeof ev);
                    ev.type = MR_RAFT_EVENT_CHANGE_MEMBERS;
                    ev.change = MR_RAFT_PROMOTE;
                    ev.node = s->id;
                    if (mr_node_step(n, &ev) == 0)
                        LOGI("promoting %s to voter: it has caught up", m.name);
                    n->last_promote_try = now;
                    return;
                }
            }
        }
        n->last_promote_try = now;
    }
}
