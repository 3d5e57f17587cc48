/* node_http: the HTTP API routes (docs/api.md) and /metrics. */
#include "node/node_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- auth -------------------------------------------------------------------- */
static int const_time_eq(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), i;
    unsigned char d = (unsigned char)(la != lb);
    for (i = 0; i < la && i < lb; i++) d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

/* Returns 1 if the request may proceed; otherwise answers it (401/403). */
static int authorize(struct mr_node *n, struct mr_http_request *req, int is_admin)
{
    const char *client = n->o->client_token, *admin = n->o->admin_token;
    const char *h, *tok;
    int has_client = client && client[0], has_admin = admin && admin[0];
    if (!has_client && !has_admin) return 1;
    if (!is_admin && !has_client) return 1;
    if (req->tls_ou != NULL) {
        /* A verified client certificate may stand for a token (tls_*_ou). */
        const char *aou = n->o->tls_admin_ou, *cou = n->o->tls_client_ou;
        if (aou != NULL && aou[0] && strcmp(req->tls_ou, aou) == 0) return 1;
        if (cou != NULL && cou[0] && strcmp(req->tls_ou, cou) == 0 &&
            (!is_admin || !has_admin))
            return 1;
    }
    h = mr_http_request_header(req, "Authorization");
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0) {
        mr_http_respond_error_hdr(req, 401, "unauthorized", "a bearer token is required",
                                  NULL, 0, "WWW-Authenticate: Bearer\r\n");
        return 0;
    }
    tok = h + 7;
    if (has_admin && const_time_eq(tok, admin)) return 1; /* admin may do everything */
    if (!is_admin && has_client && const_time_eq(tok, client)) return 1;
    if (is_admin && !has_admin && has_client && const_time_eq(tok, client)) return 1;
    mr_http_respond_error(req, 403, "forbidden",
                          is_admin ? "this call needs the admin token" : "wrong token", NULL, 0);
    return 0;
}

int mr_node_http_authorize(struct mr_node *n, struct mr_http_request *req, int is_admin)
{
    return authorize(n, req, is_admin);
}

/* ---- helpers ------------------------------------------------------------------- */
static int method_is(const struct mr_http_request *req, enum http_method m)
{
    return req->method == m;
}

static void not_allowed(struct mr_http_request *req, const char *allow)
{
    char hdr[96];
    snprintf(hdr, sizeof hdr, "Allow: %s\r\n", allow);
    mr_http_respond_error_hdr(req, 405, "method_not_allowed", "method not allowed here", NULL,
                              0, hdr);
}

static void abort_cb(void *data, struct mr_http_request *req)
{
    /* The client is gone; the op still completes (a write must) and its
     * answer is discarded by the server. Nothing to do. */
    (void)data;
    (void)req;
}

static struct mr_node_op *new_op(struct mr_node *n, struct mr_http_request *req, int kind)
{
    struct mr_node_op *op = mr_node_op_new(n, kind);
    if (op == NULL) {
        mr_http_respond_error(req, 500, "no_memory", "out of memory", NULL, 0);
        return NULL;
    }
    op->req = req;
    mr_http_request_on_abort(req, abort_cb, op);
    return op;
}

static int set_body(struct mr_node_op *op, const char *s, size_t len)
{
    op->body = mr_malloc(len + 1);
    if (op->body == NULL) return MR_ENOMEM;
    memcpy(op->body, s, len);
    op->body[len] = '\0';
    op->body_len = len;
    return 0;
}

static int check_json(struct mr_node *n, struct mr_http_request *req, const char *s, size_t len)
{
    char err[MR_ERRMSG_SIZE];
    if (len == 0) {
        mr_http_respond_error(req, 400, "invalid_json", "the body is empty; expected JSON", NULL, 0);
        return 0;
    }
    if (mr_node_json_check(n, s, len, err) != 0) {
        mr_http_respond_error(req, 400, "invalid_json", err, NULL, 0);
        return 0;
    }
    return 1;
}

static int parse_consistency(struct mr_http_request *req, int *out)
{
    const char *c = mr_http_request_param(req, "consistency");
    if (c == NULL || strcmp(c, "linearizable") == 0) *out = CONS_LINEARIZABLE;
    else if (strcmp(c, "lease") == 0) *out = CONS_LEASE;
    else if (strcmp(c, "stale") == 0) *out = CONS_STALE;
    else {
        mr_http_respond_error(req, 400, "invalid_request",
                              "consistency must be linearizable, lease or stale", NULL, 0);
        return 0;
    }
    return 1;
}

static int take_idem_key(struct mr_http_request *req, struct mr_node_op *op)
{
    const char *k = mr_http_request_header(req, "Idempotency-Key");
    size_t len;
    if (k == NULL) return 1;
    len = strlen(k);
    if (len == 0 || len > MR_NODE_MAX_IDEM_KEY) {
        mr_node_op_fail(op, 400, "invalid_request", "Idempotency-Key must be 1..256 bytes");
        return 0;
    }
    memcpy(op->key, k, len);
    op->key_len = len;
    return 1;
}

/* ---- routes ---------------------------------------------------------------------- */
static void route_command(struct mr_node *n, struct mr_http_request *req)
{
    struct mr_node_op *op;
    if (!method_is(req, HTTP_POST)) { not_allowed(req, "POST"); return; }
    if (!authorize(n, req, 0) || !check_json(n, req, req->body, req->body_len)) return;
    if ((op = new_op(n, req, OP_COMMAND)) == NULL) return;
    if (!take_idem_key(req, op)) return;
    if (set_body(op, req->body, req->body_len) != 0)
        { mr_node_op_fail(op, 500, "no_memory", "out of memory"); return; }
    mr_node_op_submit(n, op);
}

static void route_query(struct mr_node *n, struct mr_http_request *req)
{
    struct mr_node_op *op;
    int cons;
    if (!method_is(req, HTTP_POST) && !method_is(req, HTTP_GET)) { not_allowed(req, "GET, POST"); return; }
    if (!authorize(n, req, 0) || !parse_consistency(req, &cons)) return;
    if (!check_json(n, req, req->body, req->body_len)) return;
    if ((op = new_op(n, req, OP_READ)) == NULL) return;
    op->consistency = cons;
    if (set_body(op, req->body, req->body_len) != 0)
        { mr_node_op_fail(op, 500, "no_memory", "out of memory"); return; }
    mr_node_op_submit(n, op);
}

static void route_kv(struct mr_node *n, struct mr_http_request *req, const char *key)
{
    struct mr_node_op *op;
    struct mr_http_buf b;
    struct mr_http_json j;
    size_t klen = strlen(key);
    int cons = CONS_LINEARIZABLE;

    if (!authorize(n, req, 0)) return;
    if (klen == 0) {
        const char *prefix = mr_http_request_param(req, "prefix");
        if (!method_is(req, HTTP_GET)) { not_allowed(req, "GET"); return; }
        if (!parse_consistency(req, &cons)) return;
        if ((op = new_op(n, req, OP_READ)) == NULL) return;
        op->consistency = cons;
        mr_http_buf_init(&b);
        mr_http_json_init(&j, &b);
        mr_http_json_obj_begin(&j);
        mr_http_json_key(&j, "op");
        mr_http_json_str(&j, "list");
        mr_http_json_key(&j, "prefix");
        mr_http_json_str(&j, prefix ? prefix : "");
        if (mr_http_request_param(req, "limit")) {
            mr_http_json_key(&j, "limit");
            mr_http_json_int(&j, strtoll(mr_http_request_param(req, "limit"), NULL, 10));
        }
        mr_http_json_obj_end(&j);
        if (b.is_oom || set_body(op, b.data, b.len) != 0) {
            mr_http_buf_close(&b);
            { mr_node_op_fail(op, 500, "no_memory", "out of memory"); return; }
        }
        mr_http_buf_close(&b);
        { mr_node_op_submit(n, op); return; }
    }
    if (klen >= sizeof op->kv_key) {
        mr_http_respond_error(req, 400, "invalid_request", "key too long (max 511 bytes)", NULL, 0);
        return;
    }
    if (method_is(req, HTTP_GET)) {
        if (!parse_consistency(req, &cons)) return;
        if ((op = new_op(n, req, OP_READ)) == NULL) return;
        op->consistency = cons;
        op->shape = SHAPE_KV_GET;
    } else if (method_is(req, HTTP_PUT)) {
        if (!check_json(n, req, req->body, req->body_len)) return;
        if ((op = new_op(n, req, OP_COMMAND)) == NULL) return;
        op->shape = SHAPE_KV_WRITE;
        if (!take_idem_key(req, op)) return;
    } else if (method_is(req, HTTP_DELETE)) {
        if ((op = new_op(n, req, OP_COMMAND)) == NULL) return;
        op->shape = SHAPE_KV_WRITE;
        if (!take_idem_key(req, op)) return;
    } else {
        { not_allowed(req, "GET, PUT, DELETE"); return; }
    }
    memcpy(op->kv_key, key, klen + 1);
    mr_http_buf_init(&b);
    mr_http_json_init(&j, &b);
    mr_http_json_obj_begin(&j);
    mr_http_json_key(&j, "op");
    mr_http_json_str(&j, method_is(req, HTTP_GET) ? "get" : method_is(req, HTTP_PUT) ? "put" : "delete");
    mr_http_json_key(&j, "key");
    mr_http_json_strn(&j, key, klen);
    if (method_is(req, HTTP_PUT)) {
        mr_http_json_key(&j, "value");
        mr_http_json_raw(&j, req->body, req->body_len);
    }
    mr_http_json_obj_end(&j);
    if (b.is_oom || set_body(op, b.data, b.len) != 0) {
        mr_http_buf_close(&b);
        { mr_node_op_fail(op, 500, "no_memory", "out of memory"); return; }
    }
    mr_http_buf_close(&b);
    mr_node_op_submit(n, op);
}

static const char *role_name(uint8_t role)
{
    switch (role) {
    case MR_RAFT_LEADER:
        return "leader";
    case MR_RAFT_CANDIDATE:
        return "candidate";
    case MR_RAFT_PRECANDIDATE:
        return "precandidate";
    default:
        return "follower";
    }
}

static void route_status(struct mr_node *n, struct mr_http_request *req)
{
    struct mr_raft_status st;
    struct mr_http_buf b;
    struct mr_http_json j;
    char lb[72], err[MR_ERRMSG_SIZE];
    const char *leader;
    if (!method_is(req, HTTP_GET)) { not_allowed(req, "GET"); return; }
    if (!authorize(n, req, 0)) return;
    mr_raft_status(&n->raft, &st);
    /* The state hash serializes the whole state in the event loop (seconds
     * for millions of keys), so it is computed only when asked for
     * (?hash=true); a hash already computed at the applied index is free. */
    const char *want = mr_http_request_param(req, "hash");
    int want_hash = want != NULL && (strcmp(want, "true") == 0 || strcmp(want, "1") == 0);
    /* Only while the apply thread is idle (the state machine is then at
     * n->applied); otherwise state_hash is null and the caller asks again. */
    if (want_hash && (!n->has_hash || n->hash_index != n->applied) &&
        mr_node_apply_is_idle(n)) {
        if (mr_sm_state_hash(n->sm, n->hash, err) == 0) {
            n->has_hash = 1;
            n->hash_index = n->applied;
        } else {
            n->has_hash = 0;
        }
    }
    leader = n->leader ? mr_node_name_of(n, n->leader, lb, sizeof lb) : NULL;
    mr_http_buf_init(&b);
    mr_http_json_init(&j, &b);
    mr_http_json_obj_begin(&j);
    mr_http_json_key(&j, "id");
    mr_http_json_str(&j, n->name);
    mr_http_json_key(&j, "role");
    mr_http_json_str(&j, n->is_removed ? "removed" : role_name(n->role));
    mr_http_json_key(&j, "term");
    mr_http_json_uint(&j, st.term);
    mr_http_json_key(&j, "leader");
    mr_http_json_str(&j, leader);
    mr_http_json_key(&j, "commit");
    mr_http_json_uint(&j, st.commit);
    mr_http_json_key(&j, "applied");
    mr_http_json_uint(&j, n->applied);
    mr_http_json_key(&j, "last_index");
    mr_http_json_uint(&j, st.last_index);
    mr_http_json_key(&j, "persisted_index");
    mr_http_json_uint(&j, n->persisted_reported);
    mr_http_json_key(&j, "snapshot_index");
    mr_http_json_uint(&j, n->snap_index);
    mr_http_json_key(&j, "first_index");
    mr_http_json_uint(&j, st.first_index);
    mr_http_json_key(&j, "state_hash");
    mr_http_json_str(&j, n->has_hash && n->hash_index == n->applied ? n->hash : NULL);
    mr_http_json_key(&j, "script");
    mr_node_script_json(n, &j);
    mr_http_json_key(&j, "integrity");
    mr_node_integrity_json(n, &j);
    mr_http_json_key(&j, "timers");
    mr_node_timers_json(n, &j);
    mr_http_json_key(&j, "members");
    mr_node_members_json(n, &j);
    mr_http_json_key(&j, "disk_error");
    mr_http_json_str(&j, n->disk_error ? n->disk_errmsg : NULL);
    mr_http_json_key(&j, "disk");
    mr_node_disk_json(n, &j);
    mr_http_json_key(&j, "alarms");
    mr_node_disk_alarms_json(n, &j);
    mr_http_json_key(&j, "snapshots_taken");
    mr_http_json_uint(&j, n->snapshots_taken);
    mr_http_json_key(&j, "snapshots_installed");
    mr_http_json_uint(&j, n->snapshots_installed);
    mr_http_json_key(&j, "snapshots_sent");
    mr_http_json_uint(&j, n->snapshots_sent);
    mr_http_json_key(&j, "log_cache");
    mr_http_json_obj_begin(&j);
    mr_http_json_key(&j, "resident_bytes");
    mr_http_json_uint(&j, mr_raft_log_resident_bytes(&n->raft));
    mr_http_json_key(&j, "limit_bytes");
    mr_http_json_uint(&j, n->o->log_cache_bytes ? n->o->log_cache_bytes : (uint64_t)8 << 20);
    mr_http_json_key(&j, "misses");
    mr_http_json_uint(&j, n->cache_misses);
    mr_http_json_key(&j, "evicted_bytes");
    mr_http_json_uint(&j, n->cache_evicted_bytes);
    mr_http_json_obj_end(&j);
    mr_http_json_key(&j, "bootstrapping");
    mr_http_json_bool(&j, n->is_bootstrapping);
    mr_http_json_key(&j, "version");
    mr_http_json_str(&j, MR_VERSION);
    mr_http_json_obj_end(&j);
    if (b.is_oom) mr_http_respond_error(req, 500, "no_memory", "out of memory", NULL, 0);
    else mr_http_respond_json(req, 200, b.data, b.len);
    mr_http_buf_close(&b);
}

static void route_members(struct mr_node *n, struct mr_http_request *req, const char *rest)
{
    struct mr_node_op *op;
    if (rest[0] == '\0') {
        if (method_is(req, HTTP_GET)) {
            struct mr_http_buf b;
            struct mr_http_json j;
            if (!authorize(n, req, 0)) return;
            mr_http_buf_init(&b);
            mr_http_json_init(&j, &b);
            mr_http_json_obj_begin(&j);
            mr_http_json_key(&j, "members");
            mr_node_members_json(n, &j);
            mr_http_json_obj_end(&j);
            mr_http_respond_json(req, 200, b.data, b.len);
            mr_http_buf_close(&b);
            return;
        }
        if (!method_is(req, HTTP_POST)) { not_allowed(req, "GET, POST"); return; }
        if (!authorize(n, req, 1) || !check_json(n, req, req->body, req->body_len)) return;
        if ((op = new_op(n, req, OP_MEMBER_ADD)) == NULL) return;
        op->shape = SHAPE_RAW;
        if (set_body(op, req->body, req->body_len) != 0)
            { mr_node_op_fail(op, 500, "no_memory", "out of memory"); return; }
        { mr_node_op_submit(n, op); return; }
    }
    if (!method_is(req, HTTP_DELETE)) { not_allowed(req, "DELETE"); return; }
    if (!authorize(n, req, 1)) return;
    if ((op = new_op(n, req, OP_MEMBER_REMOVE)) == NULL) return;
    op->shape = SHAPE_RAW;
    op->target = mr_node_id_from_name(rest);
    {
        struct mr_node_member m;
        if (mr_node_find_member(n, op->target, &m) != 0)
            { mr_node_op_fail(op, 404, "not_found", "no such member"); return; }
    }
    mr_node_op_submit(n, op);
}

static void route_transfer(struct mr_node *n, struct mr_http_request *req)
{
    struct mr_node_op *op;
    char fields[1][256];
    static const char *const names[] = {"id"};
    char err[MR_ERRMSG_SIZE];
    if (!method_is(req, HTTP_POST)) { not_allowed(req, "POST"); return; }
    if (!authorize(n, req, 1)) return;
    fields[0][0] = '\0';
    if (req->body_len > 0 && mr_node_json_fields(n, req->body, req->body_len, names, fields, 1, err) != 0) {
        mr_http_respond_error(req, 400, "invalid_json", err, NULL, 0);
        return;
    }
    if ((op = new_op(n, req, OP_TRANSFER)) == NULL) return;
    op->shape = SHAPE_RAW;
    if (fields[0][0]) {
        struct mr_node_member m;
        op->target = mr_node_id_from_name(fields[0]);
        if (mr_node_find_member(n, op->target, &m) != 0 || m.role != MR_RAFT_VOTER)
            { mr_node_op_fail(op, 404, "not_found", "no such voting member"); return; }
    } else {
        /* The most caught-up voter other than the leader. */
        struct mr_raft_status st;
        unsigned i;
        mr_index best = 0;
        mr_raft_status(&n->raft, &st);
        for (i = 0; i < st.n_progress; i++) {
            const struct mr_raft_progress *p = &st.progress[i];
            if (p->id == n->id || p->role != MR_RAFT_VOTER) continue;
            if (op->target == 0 || p->match > best) {
                op->target = p->id;
                best = p->match;
            }
        }
        if (op->target == 0 && n->role == MR_RAFT_LEADER)
            { mr_node_op_fail(op, 409, "busy", "no other voter to transfer to"); return; }
    }
    mr_node_op_submit(n, op);
}

static void route_snapshot(struct mr_node *n, struct mr_http_request *req)
{
    if (!method_is(req, HTTP_POST)) { not_allowed(req, "POST"); return; }
    if (!authorize(n, req, 1)) return;
    if (n->job_running || n->snap_work_busy) {
        mr_http_respond_error(req, 409, "busy", "a snapshot is already being taken", NULL, 0);
        return;
    }
    if (n->applied <= n->snap_index) {
        char body[128];
        snprintf(body, sizeof body, "{\"snapshot_index\":%llu,\"started\":false}",
                 (unsigned long long)n->snap_index);
        mr_http_respond_json(req, 200, body, strlen(body));
        return;
    }
    mr_node_apply_sync(n); /* the snapshot forks the state machine at n->applied */
    mr_node_snap_maybe_start(n, 1);
    {
        char body[128];
        snprintf(body, sizeof body, "{\"snapshot_index\":%llu,\"started\":%s}",
                 (unsigned long long)n->job_index, n->job_running ? "true" : "false");
        mr_http_respond_json(req, n->job_running ? 202 : 500, body, strlen(body));
    }
}

/* GET /v1/script: the running script. POST /v1/script?label=L (admin): the
 * body is the new script's source; node_deploy.c validates, logs and answers
 * once the SCRIPT entry is applied. */
static void route_script(struct mr_node *n, struct mr_http_request *req)
{
    struct mr_node_op *op;
    struct mr_rcbuf *payload;
    const char *label;
    if (method_is(req, HTTP_GET)) {
        struct mr_http_buf b;
        struct mr_http_json j;
        if (!authorize(n, req, 0)) return;
        mr_http_buf_init(&b);
        mr_http_json_init(&j, &b);
        mr_node_script_json(n, &j);
        if (b.is_oom) mr_http_respond_error(req, 500, "no_memory", "out of memory", NULL, 0);
        else mr_http_respond_json(req, 200, b.data, b.len);
        mr_http_buf_close(&b);
        return;
    }
    if (!method_is(req, HTTP_POST)) { not_allowed(req, "GET, POST"); return; }
    if (!authorize(n, req, 1)) return;
    label = mr_http_request_param(req, "label");
    if (label == NULL) label = "";
    if (strlen(label) > MR_NODE_MAX_SCRIPT_LABEL || strchr(label, '/') != NULL) {
        mr_http_respond_error(req, 400, "invalid_request",
                              "label must be at most 256 bytes, without '/'", NULL, 0);
        return;
    }
    if (req->body_len == 0) {
        mr_http_respond_error(req, 400, "invalid_request",
                              "the body must be the script's Lua source", NULL, 0);
        return;
    }
    if ((op = new_op(n, req, OP_DEPLOY)) == NULL) return;
    op->shape = SHAPE_RAW;
    payload = mr_node_script_entry_encode(label, strlen(label), req->body, req->body_len);
    if (payload == NULL || set_body(op, (const char *)payload->data, payload->len) != 0) {
        mr_rcbuf_unref(payload);
        mr_node_op_fail(op, 500, "no_memory", "out of memory");
        return;
    }
    mr_rcbuf_unref(payload);
    mr_node_op_submit(n, op);
}

/* POST /v1/integrity/check (admin): the leader appends a CHECK entry now;
 * the verdict shows in /v1/status "integrity" once every member reported. */
static void route_integrity(struct mr_node *n, struct mr_http_request *req)
{
    char body[160];
    if (!method_is(req, HTTP_POST)) { not_allowed(req, "POST"); return; }
    if (!authorize(n, req, 1)) return;
    if (n->role != MR_RAFT_LEADER) {
        char lb[72];
        const char *leader = n->leader ? mr_node_name_of(n, n->leader, lb, sizeof lb) : NULL;
        snprintf(body, sizeof body, "this node is not the leader%s%s: ask the leader",
                 leader ? "; the leader is " : "", leader ? leader : "");
        mr_http_respond_error(req, 503, "not_leader", body, NULL, 0);
        return;
    }
    int rv = mr_node_integrity_propose(n);
    if (rv != 0) {
        mr_http_respond_error(req, 503, mr_err_name(rv), mr_strerror(rv), NULL, 0);
        return;
    }
    snprintf(body, sizeof body, "{\"check_index\":%llu}",
             (unsigned long long)n->integ_proposed);
    mr_http_respond_json(req, 202, body, strlen(body));
}

static void update_gauges(struct mr_node *n)
{
    struct mr_raft_status st;
    mr_raft_status(&n->raft, &st);
    mr_http_metric_set(n->m_term, (double)st.term);
    mr_http_metric_set(n->m_role, n->is_removed ? 5.0 : (double)n->role);
    mr_http_metric_set(n->m_commit, (double)st.commit);
    mr_http_metric_set(n->m_applied, (double)n->applied);
    mr_http_metric_set(n->m_lag, (double)(st.commit > n->applied ? st.commit - n->applied : 0));
    {
        unsigned i, up = 0;
        for (i = 0; st.config && i < st.config->n; i++) {
            if (st.config->servers[i].id != n->id && mr_net_peer_is_up(&n->net, st.config->servers[i].id)) up++;
        }
        mr_http_metric_set(n->m_peers_up, up);
    }
    mr_http_metric_set(n->m_integ_alarm, n->integ_alarm ? 1 : 0);
    mr_http_metric_set(n->m_log_resident, (double)mr_raft_log_resident_bytes(&n->raft));
    mr_http_metric_set(n->m_integ_state, n->integ_resyncing  ? 3
                                         : n->integ_diverged ? 2
                                         : n->integ_suspect  ? 1
                                                             : 0);
}

static void route_metrics(struct mr_node *n, struct mr_http_request *req)
{
    struct mr_http_buf b;
    if (!method_is(req, HTTP_GET)) { not_allowed(req, "GET"); return; }
    if (!authorize(n, req, 0)) return;
    update_gauges(n);
    mr_http_buf_init(&b);
    mr_http_metrics_render(&n->metrics, &b);
    mr_node_script_metrics(n, &b);
    if (b.is_oom) mr_http_respond_error(req, 500, "no_memory", "out of memory", NULL, 0);
    else mr_http_respond(req, 200, MR_HTTP_METRICS_CONTENT_TYPE, NULL, b.data, b.len);
    mr_http_buf_close(&b);
}

int mr_node_metrics_init(struct mr_node *n)
{
    static const double lat[] = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1};
    struct mr_http_metrics *m = &n->metrics;
    n->m_term = mr_http_metrics_gauge(m, "moonraft_term", NULL, "Current Raft term");
    n->m_role = mr_http_metrics_gauge(m, "moonraft_role", NULL,
                                      "Raft role: 1 follower, 2 precandidate, 3 candidate, 4 leader, 5 removed");
    n->m_commit = mr_http_metrics_gauge(m, "moonraft_commit_index", NULL, "Commit index");
    n->m_applied = mr_http_metrics_gauge(m, "moonraft_applied_index", NULL, "Applied index");
    n->m_lag = mr_http_metrics_gauge(m, "moonraft_apply_lag", NULL, "Committed entries not yet applied");
    n->m_proposals = mr_http_metrics_counter(m, "moonraft_proposals_total", NULL,
                                             "Commands proposed by this node as leader");
    n->m_reads = mr_http_metrics_counter(m, "moonraft_reads_total", NULL, "Queries answered by this node");
    n->m_elections = mr_http_metrics_counter(m, "moonraft_elections_won_total", NULL,
                                             "Times this node became leader");
    n->m_leader_changes = mr_http_metrics_counter(m, "moonraft_leader_changes_total", NULL,
                                                  "Leader changes seen by this node");
    n->m_snapshots = mr_http_metrics_counter(m, "moonraft_snapshots_total", NULL,
                                             "Snapshots taken or installed");
    n->m_wal_sync = mr_http_metrics_histogram(m, "moonraft_wal_sync_seconds", NULL,
                                              "Time from queueing a WAL write to its fdatasync completing",
                                              lat, sizeof lat / sizeof lat[0]);
    n->m_loop_lag = mr_http_metrics_histogram(
        m, "moonraft_loop_lag_seconds", NULL,
        "How late the 10 ms Raft tick ran: time the event loop was busy and answered nothing",
        lat, sizeof lat / sizeof lat[0]);
    n->m_peers_up = mr_http_metrics_gauge(m, "moonraft_peers_connected", NULL,
                                          "Peers with an open outbound connection");
    mr_node_disk_metrics(n, m);
    n->m_integ_alarm = mr_http_metrics_gauge(
        m, "moonraft_integrity_alarm", NULL,
        "1 while the leader's last integrity check found a member whose state differs (CORRUPT)");
    n->m_integ_state = mr_http_metrics_gauge(
        m, "moonraft_integrity_state", NULL,
        "This node's state: 0 ok, 1 suspect (being verified), 2 diverged, 3 resyncing");
    n->m_integ_checks = mr_http_metrics_counter(m, "moonraft_integrity_checks_total", NULL,
                                                "Integrity checks decided by this node as leader");
    n->m_integ_mismatches = mr_http_metrics_counter(
        m, "moonraft_integrity_mismatches_total", NULL,
        "Integrity checks (as leader) that found a member with a different state");
    n->m_log_resident = mr_http_metrics_gauge(
        m, "moonraft_log_resident_bytes", NULL,
        "Payload bytes of log entries held in memory (at most log_cache_mb of applied ones)");
    n->m_cache_misses = mr_http_metrics_counter(
        m, "moonraft_log_cache_misses_total", NULL,
        "Log entries read back from the WAL to send to a follower (dropped from memory)");
    n->m_cache_evicted = mr_http_metrics_counter(
        m, "moonraft_log_cache_evicted_bytes_total", NULL,
        "Payload bytes of applied log entries dropped from memory (still in the WAL)");
    n->m_timer_ticks = mr_http_metrics_counter(m, "moonraft_timer_ticks_total", NULL,
                                               "Timer tick entries (ctx.wake_at) applied");
    return 0;
}

void mr_node_http_handler(void *data, struct mr_http_request *req)
{
    struct mr_node *n = data;
    const char *p = req->path;
    if (strcmp(p, "/v1/command") == 0) { route_command(n, req); return; }
    if (strcmp(p, "/v1/query") == 0) { route_query(n, req); return; }
    if (strncmp(p, "/v1/kv/", 7) == 0) { route_kv(n, req, p + 7); return; }
    if (strcmp(p, "/v1/kv") == 0) { route_kv(n, req, ""); return; }
    if (strcmp(p, "/v1/status") == 0) { route_status(n, req); return; }
    if (strcmp(p, "/v1/members") == 0) { route_members(n, req, ""); return; }
    if (strncmp(p, "/v1/members/", 12) == 0) { route_members(n, req, p + 12); return; }
    if (strcmp(p, "/v1/leader/transfer") == 0) { route_transfer(n, req); return; }
    if (strcmp(p, "/v1/snapshot") == 0) { route_snapshot(n, req); return; }
    if (strcmp(p, "/v1/backup") == 0) { mr_node_backup_route(n, req); return; }
    if (strcmp(p, "/v1/integrity/check") == 0) { route_integrity(n, req); return; }
    if (strcmp(p, "/v1/script") == 0) { route_script(n, req); return; }
    if (strcmp(p, "/v1/watch") == 0) {
        if (!method_is(req, HTTP_GET)) { not_allowed(req, "GET"); return; }
        if (!authorize(n, req, 0)) return;
        { mr_node_watch_add(n, req); return; }
    }
    if (strcmp(p, "/metrics") == 0) { route_metrics(n, req); return; }
    mr_http_respond_error(req, 404, "not_found", "no such endpoint", NULL, 0);
}
