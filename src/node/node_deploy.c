/* node_deploy: changing the state machine script through the log.
 *
 * POST /v1/script (admin) carries the new source (and a label). The leader
 * validates it before anything is logged:
 *   1. it compiles and loads in a fresh sandbox (mr_sm_validate: quick, under
 *      the instruction budget, in the event loop);
 *   2. it can take over the current state: a forked child migrates its
 *      copy-on-write image of the state (mr_sm_deploy_fork), so a large state
 *      never blocks the loop. A failure answers 422 and nothing changes.
 * Then it proposes a SCRIPT entry (from on_tick, never inside a step):
 *
 *   u8 version (1) | u8 kind (MR_NODE_ENTRY_SCRIPT) | u16 label length (LE) |
 *   label | script source (the rest)
 *
 * Every replica switches at exactly that index (mr_sm_deploy): entries before
 * it ran on the old script, entries after it on the new one, also when the
 * log is replayed after a restart. The migration is deterministic, so if it
 * raises it raises everywhere: the entry is then a no-op on every node and the
 * client gets 422 (the trial in step 2 ran on an earlier state, so this can
 * still happen). Snapshots carry the running script (node_sections.c), so a
 * node that installs one runs the script that goes with it.
 *
 * One deploy is validated at a time per leader (409 busy otherwise). */
#include "node/node_int.h"

#include <stdio.h>
#include <string.h>

#define SCRIPT_HDR 4

struct mr_rcbuf *mr_node_script_entry_encode(const char *label, size_t label_len,
                                             const char *src, size_t len)
{
    struct mr_rcbuf *b;
    if (label_len > MR_NODE_MAX_SCRIPT_LABEL) return NULL;
    b = mr_rcbuf_new(SCRIPT_HDR + label_len + len);
    if (b == NULL) return NULL;
    b->data[0] = 1;
    b->data[1] = MR_NODE_ENTRY_SCRIPT;
    b->data[2] = (unsigned char)(label_len & 0xff);
    b->data[3] = (unsigned char)(label_len >> 8);
    if (label_len) memcpy(b->data + SCRIPT_HDR, label, label_len);
    if (len) memcpy(b->data + SCRIPT_HDR + label_len, src, len);
    return b;
}

int mr_node_script_entry_decode(const unsigned char *p, size_t len,
                                struct mr_node_script_entry *out)
{
    size_t label_len;
    memset(out, 0, sizeof *out);
    if (len < SCRIPT_HDR || p[0] != 1 || p[1] != MR_NODE_ENTRY_SCRIPT) return MR_EMALFORMED;
    label_len = (size_t)p[2] | (size_t)p[3] << 8;
    if (label_len > MR_NODE_MAX_SCRIPT_LABEL || len - SCRIPT_HDR < label_len)
        return MR_EMALFORMED;
    out->label = (const char *)p + SCRIPT_HDR;
    out->label_len = label_len;
    out->src = (const char *)p + SCRIPT_HDR + label_len;
    out->src_len = len - SCRIPT_HDR - label_len;
    return 0;
}

int mr_node_is_script_entry(const struct mr_raft_entry *e)
{
    return e->type == MR_RAFT_ENTRY_NORMAL && e->data != NULL && e->data->len >= 2 &&
           e->data->data[0] == 1 && e->data->data[1] == MR_NODE_ENTRY_SCRIPT;
}

void mr_node_script_json(struct mr_node *n, struct mr_http_json *j)
{
    struct mr_sm_script_info si;
    mr_node_apply_script_info(n, &si); /* a restore may run on the apply thread */
    mr_http_json_obj_begin(j);
    mr_http_json_key(j, "hash");
    mr_http_json_str(j, si.hash);
    mr_http_json_key(j, "label");
    mr_http_json_str(j, si.label);
    mr_http_json_key(j, "size");
    mr_http_json_uint(j, si.size);
    mr_http_json_key(j, "index");
    mr_http_json_uint(j, si.index);
    mr_http_json_obj_end(j);
}

/* ---- leader: validate, then propose ---------------------------------------- */
void mr_node_deploy_start(struct mr_node *n, struct mr_node_op *op)
{
    struct mr_node_script_entry se;
    struct mr_sm_ctx ctx;
    char err[MR_ERRMSG_SIZE] = "";
    int rv;
    if (mr_node_script_entry_decode((const unsigned char *)op->body, op->body_len, &se) != 0) {
        mr_node_op_fail(op, 400, "invalid_request", "malformed deploy request");
        return;
    }
    if (n->deploy_op != NULL) {
        mr_node_op_fail(op, 409, "busy", "another script is being validated; retry later");
        return;
    }
    /* the validation and the trial fork use the state machine at n->applied */
    mr_node_apply_sync(n);
    rv = mr_sm_validate(n->sm, se.src, se.src_len, se.label, se.label_len, err);
    if (rv == MR_ESCRIPT) {
        mr_node_op_fail(op, 422, "script_error", err);
        return;
    }
    if (rv != 0) {
        mr_node_op_fail(op, 500, mr_err_name(rv), err[0] ? err : mr_strerror(rv));
        return;
    }
    memset(&ctx, 0, sizeof ctx);
    ctx.index = n->applied + 1;
    ctx.term = n->raft.term;
    ctx.time_ms = (int64_t)n->last_time_ms;
    rv = mr_sm_deploy_fork(n->sm, &ctx, se.src, se.src_len, se.label, se.label_len,
                           &n->deploy_job, err);
    if (rv != 0) {
        mr_node_op_fail(op, 500, mr_err_name(rv), err);
        return;
    }
    LOGI("validating a new state machine script (%.*s, %zu bytes): trial migration in child "
         "pid %d",
         (int)se.label_len, se.label, se.src_len, (int)n->deploy_job.pid);
    n->deploy_op = op;
}

static void propose(struct mr_node *n, struct mr_node_op *op)
{
    struct mr_rcbuf *payload;
    int rv;
    if (n->disk_error) {
        mr_node_op_fail(op, 503, "disk_failed",
                        "a disk error took this node out of the cluster; use another node");
        return;
    }
    if (n->role != MR_RAFT_LEADER) {
        mr_node_op_fail(op, 503, "not_leader",
                        "this node stopped being the leader while validating the script; it "
                        "was not deployed, retry");
        return;
    }
    payload = mr_rcbuf_new(op->body_len);
    if (payload == NULL) {
        mr_node_op_fail(op, 500, "no_memory", "out of memory");
        return;
    }
    memcpy(payload->data, op->body, op->body_len);
    rv = mr_node_propose_entry(n, payload, &op->index, &op->term);
    mr_rcbuf_unref(payload);
    if (rv != 0) {
        mr_node_op_fail(op, 503, mr_err_name(rv), "the script could not be proposed; retry");
        return;
    }
    /* The answer comes when the entry is applied (mr_node_deploy_apply), or
     * 504 at the deadline, counted from now: the trial may have been long. */
    op->deadline = mr_node_now(n) + (n->o->request_timeout_ms ? n->o->request_timeout_ms : 5000);
    mr_queue_push_tail(&n->proposals, &op->link);
    LOGI("proposed the new state machine script at index %llu", (unsigned long long)op->index);
}

void mr_node_deploy_tick(struct mr_node *n)
{
    struct mr_node_op *op = n->deploy_op;
    char err[MR_ERRMSG_SIZE] = "";
    int rv;
    if (op == NULL) return;
    rv = mr_sm_snapshot_poll(&n->deploy_job, 0, err);
    if (rv == MR_EBUSY) return;
    n->deploy_op = NULL;
    if (rv == MR_ESCRIPT) {
        char msg[MR_ERRMSG_SIZE + 64];
        LOGW("new state machine script refused (nothing was logged): %s", err);
        snprintf(msg, sizeof msg, "the script cannot take over the current state: %s", err);
        mr_node_op_fail(op, 422, "script_error", msg);
        return;
    }
    if (rv != 0) {
        LOGW("trial migration of the new script failed: %s", err);
        mr_node_op_fail(op, 500, mr_err_name(rv), err[0] ? err : mr_strerror(rv));
        return;
    }
    propose(n, op);
}

void mr_node_deploy_close(struct mr_node *n)
{
    if (n->deploy_op == NULL) return;
    mr_sm_snapshot_abort(&n->deploy_job);
    mr_node_op_fail(n->deploy_op, 503, "shutting_down",
                    "this node is shutting down; the script was not deployed");
    n->deploy_op = NULL;
}

/* ---- every replica: the switch -------------------------------------------------- */
void mr_node_deploy_apply(struct mr_node *n, const struct mr_raft_entry *e)
{
    struct mr_node_script_entry se;
    struct mr_sm_ctx ctx;
    char err[MR_ERRMSG_SIZE] = "";
    int rv;
    if (mr_node_script_entry_decode(e->data->data, e->data->len, &se) != 0) {
        static const char msg[] = "malformed script entry";
        LOGW("entry %llu: %s", (unsigned long long)e->index, msg);
        mr_node_ops_on_applied(n, e->index, e->term, MR_SM_SCRIPT_ERROR, msg, sizeof msg - 1,
                               e->index);
        return;
    }
    memset(&ctx, 0, sizeof ctx);
    ctx.index = e->index;
    ctx.term = e->term;
    ctx.time_ms = (int64_t)n->last_time_ms;
    rv = mr_sm_deploy(n->sm, &ctx, se.src, se.src_len, se.label, se.label_len, err);
    if (rv == MR_ENOMEM) {
        /* The host, not the script, failed: another replica may have switched. */
        LOGE("entry %llu: out of memory switching the state machine script (%s); stopping to "
             "avoid divergence",
             (unsigned long long)e->index, err);
        mr_node_request_stop(n, MR_NODE_EXIT_RUNTIME);
        return;
    }
    if (rv != 0) {
        char msg[MR_ERRMSG_SIZE + 64];
        LOGW("entry %llu: the new state machine script (%.*s) was refused, the running script "
             "stays: %s",
             (unsigned long long)e->index, (int)se.label_len, se.label, err);
        snprintf(msg, sizeof msg, "the script cannot take over the current state: %s", err);
        mr_node_ops_on_applied(n, e->index, e->term, MR_SM_SCRIPT_ERROR, msg, strlen(msg),
                               e->index);
        return;
    }
    n->has_hash = 0;
    {
        struct mr_http_buf b;
        struct mr_http_json j;
        struct mr_sm_script_info si;
        mr_sm_script_info(n->sm, &si);
        LOGI("entry %llu: the state machine script is now %s (%s, %zu bytes)",
             (unsigned long long)e->index, si.hash, si.label, si.size);
        mr_http_buf_init(&b);
        mr_http_json_init(&j, &b);
        mr_node_script_json(n, &j);
        if (b.is_oom)
            mr_node_ops_on_applied(n, e->index, e->term, MR_SM_OK, "null", 4, e->index);
        else
            mr_node_ops_on_applied(n, e->index, e->term, MR_SM_OK, b.data, b.len, e->index);
        mr_http_buf_close(&b);
    }
}

/* ---- /metrics ------------------------------------------------------------------------ */
void mr_node_script_metrics(struct mr_node *n, struct mr_http_buf *b)
{
    struct mr_sm_script_info si;
    const char *p;
    mr_node_apply_script_info(n, &si); /* a restore may run on the apply thread */
    mr_http_buf_puts(b, "# HELP moonraft_script_info The running state machine script: hash "
                        "(SHA-256 of its source) and label\n"
                        "# TYPE moonraft_script_info gauge\n"
                        "moonraft_script_info{hash=\"");
    mr_http_buf_puts(b, si.hash);
    mr_http_buf_puts(b, "\",label=\"");
    for (p = si.label; *p; p++) {
        /* Prometheus label value escapes */
        if (*p == '\\') mr_http_buf_puts(b, "\\\\");
        else if (*p == '"') mr_http_buf_puts(b, "\\\"");
        else if (*p == '\n') mr_http_buf_puts(b, "\\n");
        else mr_http_buf_append(b, p, 1);
    }
    mr_http_buf_printf(b,
                       "\"} 1\n"
                       "# HELP moonraft_script_index Log index the running script took effect "
                       "at (0: the config's script)\n"
                       "# TYPE moonraft_script_index gauge\n"
                       "moonraft_script_index %llu\n",
                       (unsigned long long)si.index);
}
