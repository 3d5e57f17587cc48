/* node_ops: client operations from submission to answer.
 *
 * An op comes from an HTTP request on this node or from a follower's FORWARD
 * frame. Writes (commands, membership, transfer) run on the leader: a
 * follower forwards them over the peer connection and relays the answer (no
 * HTTP redirect). Reads use ReadIndex through the core on whichever node got
 * them. An op waits in exactly one queue of the node; every queue has a
 * deadline, after which the client gets 503 no_leader (nothing was proposed)
 * or 504 timeout (proposed: the outcome is unknown).
 *
 * A 503 always means "certainly not applied". A follower that re-sends a
 * keyed command to a new leader (mr_node_ops_on_leader_change) no longer
 * knows that: the old leader may have committed its copy. Such an op is
 * marked is_maybe_applied, and every 503 it would get, its own or relayed
 * from the leader, becomes a 504 (in mr_node_op_finish).
 *
 * Forwarded request payload: u8 kind | u8 flags | u16 key_len | u32 target_len
 *   | key | target name | body. Reply: u16 status | u64 index | body. */
#include "node/node_int.h"

#include <stdio.h>
#include <string.h>

#define FWD_HDR MR_NODE_FWD_HDR
#define REPLY_HDR 10

static unsigned timeout_ms(struct mr_node *n)
{
    return n->o->request_timeout_ms ? n->o->request_timeout_ms : 5000;
}

struct mr_node_op *mr_node_op_new(struct mr_node *n, int kind)
{
    struct mr_node_op *op = mr_calloc(1, sizeof *op);
    if (op == NULL) return NULL;
    op->node = n;
    op->kind = kind;
    op->id = ++n->next_op_id;
    op->deadline = mr_node_now(n) + timeout_ms(n);
    mr_queue_init(&op->link);
    return op;
}

static void op_free(struct mr_node_op *op)
{
    mr_queue_remove(&op->link);
    mr_free(op->body);
    mr_free(op);
}

static void leader_name(struct mr_node *n, char *buf, size_t len, const char **out)
{
    *out = n->leader ? mr_node_name_of(n, n->leader, buf, len) : NULL;
}

/* Shapes a successful result for the client. */
static void shape_ok(struct mr_node_op *op, struct mr_http_buf *b, unsigned *status,
                     mr_index index, const char *json, size_t len)
{
    struct mr_http_json j;
    mr_http_json_init(&j, b);
    switch (op->shape) {
    case SHAPE_KV_GET:
        /* kv.lua answers {"value":v}; null means absent. */
        if (len >= 14 && strncmp(json, "{\"value\":null}", 14) == 0) {
            char msg[600];
            *status = 404;
            snprintf(msg, sizeof msg, "no such key: %s", op->kv_key);
            mr_http_error_body(b, "not_found", msg, NULL);
            return;
        }
        mr_http_json_obj_begin(&j);
        mr_http_json_key(&j, "key");
        mr_http_json_str(&j, op->kv_key);
        mr_http_json_key(&j, "index");
        mr_http_json_uint(&j, index);
        if (len > 2 && json[0] == '{') {
            /* splice the result object's fields in: exact, no re-encoding */
            mr_http_buf_puts(b, ",");
            mr_http_buf_append(b, json + 1, len - 1);
        } else {
            mr_http_json_key(&j, "result");
            mr_http_json_raw(&j, json, len);
            mr_http_json_obj_end(&j);
        }
        return;
    case SHAPE_KV_WRITE:
        mr_http_json_obj_begin(&j);
        mr_http_json_key(&j, "key");
        mr_http_json_str(&j, op->kv_key);
        mr_http_json_key(&j, "result");
        mr_http_json_raw(&j, json, len);
        mr_http_json_key(&j, "index");
        mr_http_json_uint(&j, index);
        mr_http_json_obj_end(&j);
        return;
    case SHAPE_RAW:
        mr_http_buf_append(b, json, len);
        return;
    default:
        mr_http_json_obj_begin(&j);
        mr_http_json_key(&j, "result");
        mr_http_json_raw(&j, json, len);
        mr_http_json_key(&j, "index");
        mr_http_json_uint(&j, index);
        mr_http_json_obj_end(&j);
        return;
    }
}

void mr_node_op_finish(struct mr_node_op *op, unsigned status, mr_index index,
                       const char *json, size_t len, unsigned retry_after)
{
    struct mr_node *n = op->node;
    struct mr_http_buf b;
    if (status == 503 && op->is_maybe_applied) {
        /* Every 503 (ours, or relayed from the leader) says "not applied" of
         * the last attempt only; an earlier attempt may have been applied. */
        mr_node_op_fail(op, 504, "timeout",
                        "the command went to a previous leader before it was replaced: it may "
                        "or may not have been applied (retry with the same Idempotency-Key)");
        return;
    }
    mr_queue_remove(&op->link);
    mr_http_buf_init(&b);
    if (op->req != NULL) {
        if (status == 200) {
            shape_ok(op, &b, &status, index, json, len);
        } else {
            mr_http_buf_append(&b, json, len);
        }
        if (b.is_oom) {
            mr_http_respond_error(op->req, 500, "no_memory", "out of memory", NULL, 0);
        } else if (retry_after > 0) {
            char hdr[64];
            snprintf(hdr, sizeof hdr, "Retry-After: %u\r\n", retry_after);
            mr_http_respond(op->req, status, "application/json", hdr, b.data, b.len);
        } else {
            mr_http_respond_json(op->req, status, b.data ? b.data : "", b.len);
        }
    } else if (op->fwd_from != 0) {
        unsigned char hdr[REPLY_HDR];
        hdr[0] = (unsigned char)(status & 0xff);
        hdr[1] = (unsigned char)(status >> 8);
        mr_put_u64(hdr + 2, index);
        mr_http_buf_append(&b, hdr, sizeof hdr);
        mr_http_buf_append(&b, json, len);
        if (!b.is_oom) mr_net_send_forward_reply(&n->net, op->fwd_from, op->fwd_id, b.data, b.len);
    }
    mr_http_buf_close(&b);
    op_free(op);
}

void mr_node_op_fail(struct mr_node_op *op, unsigned status, const char *code,
                     const char *message)
{
    struct mr_node *n = op->node;
    struct mr_http_buf b;
    char lb[72];
    const char *leader;
    leader_name(n, lb, sizeof lb, &leader);
    mr_http_buf_init(&b);
    mr_http_error_body(&b, code, message, leader);
    mr_node_op_finish(op, status, 0, b.data ? b.data : "", b.len, status == 503 ? 1 : 0);
    mr_http_buf_close(&b);
}

/* ---- running an op on the leader ------------------------------------------------ */
static void fail_for_code(struct mr_node_op *op, int rv)
{
    switch (rv) {
    case MR_EBUSY:
        mr_node_op_fail(op, 409, "busy", "another membership change or transfer is in progress");
        break;
    case MR_EDISKFAIL:
        mr_node_op_fail(op, 503, "disk_failed",
                        "a disk error took this node out of the cluster; use another node");
        break;
    case MR_EEXISTS:
        mr_node_op_fail(op, 409, "exists", "that member already exists");
        break;
    case MR_ENOTFOUND:
        mr_node_op_fail(op, 404, "not_found", "no such member");
        break;
    case MR_EINVAL:
        mr_node_op_fail(op, 400, "invalid_request", "invalid request");
        break;
    default:
        mr_node_op_fail(op, 500, mr_err_name(rv), mr_strerror(rv));
        break;
    }
}

static void run_on_leader(struct mr_node *n, struct mr_node_op *op)
{
    int rv;
    switch (op->kind) {
    case OP_COMMAND:
        rv = mr_node_propose(n, op);
        break;
    case OP_MEMBER_ADD:
        mr_node_members_on_add(n, op); /* answers or queues itself */
        return;
    case OP_DEPLOY:
        mr_node_deploy_start(n, op); /* answers or holds itself */
        return;
    case OP_MEMBER_REMOVE: {
        struct mr_raft_event ev;
        memset(&ev, 0, sizeof ev);
        ev.type = MR_RAFT_EVENT_CHANGE_MEMBERS;
        ev.change = MR_RAFT_REMOVE;
        ev.node = op->target;
        rv = mr_node_step(n, &ev);
        if (rv == 0) {
            op->index = ev.out_index;
            op->term = ev.out_term;
        }
        break;
    }
    case OP_TRANSFER: {
        struct mr_raft_event ev;
        memset(&ev, 0, sizeof ev);
        ev.type = MR_RAFT_EVENT_TRANSFER_LEADER;
        ev.node = op->target;
        if (op->target == n->id) {
            mr_node_op_finish(op, 200, 0, "{\"leader\":\"self\"}", 17, 0);
            return;
        }
        rv = mr_node_step(n, &ev);
        if (rv == 0) {
            mr_queue_push_tail(&n->transfers, &op->link);
            return;
        }
        break;
    }
    default:
        rv = MR_EINVAL;
        break;
    }
    if (rv == MR_ENOTLEADER || rv == MR_ENOLEADER) {
        /* Lost leadership in between: wait for the next leader. */
        mr_queue_push_tail(&n->wait_leader, &op->link);
        return;
    }
    if (rv == MR_EBUSY && op->kind != OP_COMMAND) {
        /* One membership change at a time: wait for the pending one (it may
         * be an automatic learner promotion the client cannot know about). */
        mr_node_op_wait_busy(n, op);
        return;
    }
    if (rv != 0) {
        fail_for_code(op, rv);
        return;
    }
    mr_queue_push_tail(&n->proposals, &op->link);
}

void mr_node_op_wait_busy(struct mr_node *n, struct mr_node_op *op)
{
    mr_queue_push_tail(&n->wait_busy, &op->link);
}

/* ---- forwarding --------------------------------------------------------------- */
static int forward(struct mr_node *n, struct mr_node_op *op)
{
    struct mr_http_buf b;
    unsigned char hdr[FWD_HDR];
    char target[MR_NODE_NAME_MAX + 1] = "";
    size_t tlen;
    int rv;
    if (op->target) {
        struct mr_node_member m;
        if (mr_node_find_member(n, op->target, &m) == 0) snprintf(target, sizeof target, "%s", m.name);
    }
    tlen = strlen(target);
    hdr[0] = (unsigned char)op->kind;
    hdr[1] = 0;
    hdr[2] = (unsigned char)(op->key_len & 0xff);
    hdr[3] = (unsigned char)(op->key_len >> 8);
    mr_put_u32(hdr + 4, (uint32_t)tlen);
    mr_http_buf_init(&b);
    mr_http_buf_append(&b, hdr, sizeof hdr);
    mr_http_buf_append(&b, op->key, op->key_len);
    mr_http_buf_append(&b, target, tlen);
    mr_http_buf_append(&b, op->body, op->body_len);
    if (b.is_oom) {
        mr_http_buf_close(&b);
        return MR_ENOMEM;
    }
    rv = mr_net_send_forward(&n->net, n->leader, op->id, b.data, b.len);
    mr_http_buf_close(&b);
    return rv;
}

static int is_write(int kind) { return kind != OP_READ; }

static void start_read(struct mr_node *n, struct mr_node_op *op);

/* 503 removed, naming the leader this node knows, else the one it knew when
 * it was removed (recorded across restarts), with its HTTP address. No
 * longer a member, even its stale reads would stay stale forever. */
static void fail_removed(struct mr_node *n, struct mr_node_op *op)
{
    struct mr_node_member m;
    struct mr_http_buf b;
    char msg[400], lb[72];
    mr_node_id leader = n->leader ? n->leader : n->removed_leader;
    const char *name = leader ? mr_node_name_of(n, leader, lb, sizeof lb) : NULL;
    if (leader != 0 && mr_node_find_member(n, leader, &m) == 0 && strcmp(m.http_addr, "-") != 0)
        snprintf(msg, sizeof msg,
                 "this node was removed from the cluster; the leader it knew is %s at %s", m.name,
                 m.http_addr);
    else
        snprintf(msg, sizeof msg, "this node was removed from the cluster; ask a member");
    mr_http_buf_init(&b);
    mr_http_error_body(&b, "removed", msg, name);
    mr_node_op_finish(op, 503, 0, b.data ? b.data : "", b.len, 1);
    mr_http_buf_close(&b);
}

void mr_node_op_submit(struct mr_node *n, struct mr_node_op *op)
{
    int rv;
    if (n->is_stopping) {
        mr_node_op_fail(op, 503, "shutting_down", "this node is shutting down");
        return;
    }
    if (n->disk_error) {
        /* out of the cluster until restarted: clients go to another node */
        fail_for_code(op, MR_EDISKFAIL);
        return;
    }
    if (n->is_removed) {
        fail_removed(n, op);
        return;
    }
    if (op->kind == OP_READ) {
        start_read(n, op);
        return;
    }
    if (!is_write(op->kind)) return;
    if (mr_node_disk_refuse(n, op)) return;
    if (op->kind == OP_MEMBER_ADD && n->is_bootstrapping) {
        mr_node_members_on_add(n, op);
        return;
    }
    if (n->role == MR_RAFT_LEADER) {
        run_on_leader(n, op);
        return;
    }
    if (n->leader == 0) {
        mr_queue_push_tail(&n->wait_leader, &op->link);
        return;
    }
    rv = forward(n, op);
    if (rv == 0) {
        op->fwd_leader = n->leader;
        mr_queue_push_tail(&n->forwarded, &op->link);
        return;
    }
    /* The link to the leader is down or full: wait and retry. */
    op->attempts++;
    mr_queue_push_tail(&n->wait_leader, &op->link);
}

void mr_node_on_forward(struct mr_net *net, mr_node_id from, uint64_t req_id,
                        const uint8_t *data, size_t len)
{
    struct mr_node *n = net->data;
    struct mr_node_op *op;
    size_t key_len, tlen;
    int kind;
    if (len < FWD_HDR) return;
    kind = data[0];
    if (kind == OP_INTEGRITY) {
        mr_node_integrity_on_msg(n, from, data + FWD_HDR, len - FWD_HDR);
        return;
    }
    key_len = (size_t)data[2] | (size_t)data[3] << 8;
    tlen = mr_get_u32(data + 4);
    if (kind < OP_COMMAND || (kind > OP_TRANSFER && kind != OP_DEPLOY) ||
        key_len > MR_NODE_MAX_IDEM_KEY ||
        tlen > MR_NODE_NAME_MAX || len - FWD_HDR < key_len + tlen) {
        LOGW("dropped a malformed forwarded request");
        return;
    }
    op = mr_node_op_new(n, kind);
    if (op == NULL) return;
    op->fwd_from = from;
    op->fwd_id = req_id;
    op->shape = SHAPE_RESULT;
    memcpy(op->key, data + FWD_HDR, key_len);
    op->key_len = key_len;
    if (tlen) {
        char t[MR_NODE_NAME_MAX + 1];
        memcpy(t, data + FWD_HDR + key_len, tlen);
        t[tlen] = '\0';
        op->target = mr_node_id_from_name(t);
    }
    op->body_len = len - FWD_HDR - key_len - tlen;
    op->body = mr_malloc(op->body_len + 1);
    if (op->body == NULL) {
        mr_node_op_fail(op, 500, "no_memory", "out of memory");
        return;
    }
    memcpy(op->body, data + FWD_HDR + key_len + tlen, op->body_len);
    op->body[op->body_len] = '\0';
    if (n->role != MR_RAFT_LEADER && !(kind == OP_MEMBER_ADD && n->is_bootstrapping)) {
        /* Not (or no longer) the leader: tell the follower who is. */
        mr_node_op_fail(op, 503, "not_leader", "this node is not the leader");
        return;
    }
    if (mr_node_disk_refuse(n, op)) return;
    if (kind == OP_MEMBER_ADD) {
        /* The joiner must be reachable to get our answer. */
        mr_node_members_on_add(n, op);
        return;
    }
    run_on_leader(n, op);
}

void mr_node_on_forward_reply(struct mr_net *net, mr_node_id from, uint64_t req_id,
                              const uint8_t *data, size_t len)
{
    struct mr_node *n = net->data;
    struct mr_queue *it;
    (void)from;
    if (len < REPLY_HDR) return;
    MR_QUEUE_FOREACH(it, &n->forwarded)
    {
        struct mr_node_op *op = MR_CONTAINER_OF(it, struct mr_node_op, link);
        unsigned status;
        if (op->id != req_id) continue;
        status = (unsigned)data[0] | (unsigned)data[1] << 8;
        if (status == 503 && op->attempts < 3 && mr_node_now(n) < op->deadline &&
            len - REPLY_HDR < 300 && memmem(data + REPLY_HDR, len - REPLY_HDR, "not_leader", 10)) {
            /* The node we thought was leader is not: try again with the next. */
            mr_queue_remove(&op->link);
            op->attempts++;
            mr_queue_push_tail(&n->wait_leader, &op->link);
            return;
        }
        mr_node_op_finish(op, status, mr_get_u64(data + 2), (const char *)data + REPLY_HDR,
                          len - REPLY_HDR, status == 503 ? 1 : 0);
        return;
    }
}

/* ---- reads ------------------------------------------------------------------- */
int mr_node_ops_read_refused(struct mr_node *n, struct mr_node_op *op)
{
    if (n->is_sm_stale) {
        /* any consistency: the state does not match any point of the log */
        mr_node_op_fail(op, 503, "state_machine_stale",
                        "this node could not install a snapshot after replacing its state "
                        "machine; it serves no reads until one is installed, ask another node");
        return 1;
    }
    if (mr_node_integrity_blocks_reads(n)) {
        /* Our state may differ from the majority's: answering from it could
         * return what the cluster never decided. Another member can answer. */
        mr_node_op_fail(op, 503, "state_diverged",
                        n->integ_diverged
                            ? "this node's state differs from the majority's (integrity check); "
                              "it does not serve reads until it is rebuilt: ask another node"
                            : "this node's state is being verified (an apply hit a limit whose "
                              "outcome may differ between nodes): ask another node");
        return 1;
    }
    return 0;
}

void mr_node_ops_read_done(struct mr_node *n, struct mr_node_op *op, int rv,
                           const struct mr_sm_result *res, mr_index index)
{
    if (n->m_reads) mr_http_metric_add(n->m_reads, 1);
    if (rv != 0) {
        mr_node_op_fail(op, 500, "no_memory", "out of memory running the query");
    } else if (res->status == MR_SM_OK) {
        mr_node_op_finish(op, 200, index, res->json, res->json_len, 0);
    } else if (res->status == MR_SM_INVALID_JSON) {
        mr_node_op_fail(op, 400, "invalid_json", res->error ? res->error : "invalid JSON");
    } else {
        mr_node_op_fail(op, 422, "script_error",
                        res->error ? res->error : mr_sm_status_name(res->status));
    }
}

static void start_read(struct mr_node *n, struct mr_node_op *op)
{
    struct mr_raft_event ev;
    int rv;
    if (op->consistency == CONS_STALE || n->o->unsafe_local_reads) {
        /* whatever is applied: runs on the apply thread after the entries
         * it is applying now (node_apply.c) */
        op->read_index = 0;
        mr_queue_push_tail(&n->read_apply, &op->link);
        mr_node_apply_kick(n);
        return;
    }
    /* a lease is checked against the core's clock: give it the time that
     * passed since the last tick callback (a stalled loop) first */
    if (op->consistency == CONS_LEASE) mr_node_catch_up_ticks(n);
    memset(&ev, 0, sizeof ev);
    ev.type = MR_RAFT_EVENT_READ_INDEX;
    ev.ctx = op->id;
    ev.is_lease = op->consistency == CONS_LEASE;
    op->sent_ms = mr_node_now(n);
    mr_queue_push_tail(&n->reads, &op->link);
    rv = mr_node_step(n, &ev);
    if (rv == 0) return; /* the read state arrives in a ready batch (maybe already did) */
    mr_queue_remove(&op->link);
    if (rv == MR_ENOLEADER || rv == MR_ENOTLEADER) {
        mr_queue_push_tail(&n->wait_leader, &op->link);
        return;
    }
    fail_for_code(op, rv);
}

void mr_node_ops_on_read_states(struct mr_node *n, const struct mr_raft_read_state *rs,
                                size_t n_rs)
{
    size_t i;
    for (i = 0; i < n_rs; i++) {
        struct mr_queue *it;
        MR_QUEUE_FOREACH(it, &n->reads)
        {
            struct mr_node_op *op = MR_CONTAINER_OF(it, struct mr_node_op, link);
            if (op->id != rs[i].ctx) continue;
            mr_queue_remove(&op->link);
            if (rs[i].status != 0) {
                /* Abandoned (leadership changed): try again under the next leader. */
                mr_queue_push_tail(&n->wait_leader, &op->link);
            } else {
                op->read_index = rs[i].index;
                mr_queue_push_tail(&n->read_apply, &op->link);
            }
            break;
        }
    }
    mr_node_ops_check_reads(n);
}

void mr_node_ops_check_reads(struct mr_node *n)
{
    /* the reads whose index is applied go to the apply thread */
    mr_node_apply_kick(n);
}

/* ---- outcomes ------------------------------------------------------------------ */
void mr_node_ops_on_applied(struct mr_node *n, mr_index index, mr_term term, int sm_status,
                            const char *text, size_t len, mr_index answer_index)
{
    while (!mr_queue_empty(&n->proposals)) {
        struct mr_node_op *op = MR_CONTAINER_OF(n->proposals.next, struct mr_node_op, link);
        if (op->index > index) break;
        if (op->index < index || op->term != term) {
            /* Another leader's entry took this slot: ours never committed. */
            mr_node_op_fail(op, 503, "no_leader",
                            "leadership changed before the command committed; it was not "
                            "applied, retry");
            continue;
        }
        /* a config op waits for its CONFIG entry */
        if (op->kind != OP_COMMAND && op->kind != OP_DEPLOY) break;
        if (sm_status == MR_SM_OK) {
            mr_node_op_finish(op, 200, answer_index, text, len, 0);
        } else if (sm_status == MR_SM_INVALID_JSON) {
            char msg[MR_ERRMSG_SIZE];
            snprintf(msg, sizeof msg, "%.*s", (int)len, text);
            mr_node_op_fail(op, 400, "invalid_json", msg);
        } else {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s%.*s",
                     sm_status == MR_SM_BUDGET_EXCEEDED   ? "instruction budget exceeded: "
                     : sm_status == MR_SM_MEMORY_EXCEEDED ? "memory limit exceeded: "
                                                          : "",
                     (int)(len > 900 ? 900 : len), text);
            mr_node_op_fail(op, 422, "script_error", msg);
        }
    }
}

void mr_node_ops_on_snapshot_installed(struct mr_node *n, mr_index index)
{
    while (!mr_queue_empty(&n->proposals)) {
        struct mr_node_op *op = MR_CONTAINER_OF(n->proposals.next, struct mr_node_op, link);
        if (op->index > index) break;
        /* Our entry may be inside the snapshot or may have been replaced by
         * another leader's: this node cannot tell any more. */
        mr_node_op_fail(op, 504, "timeout",
                        "a snapshot from the new leader replaced this node's log: the command "
                        "may or may not have been applied");
    }
}

void mr_node_ops_on_config_applied(struct mr_node *n, mr_index index, mr_term term)
{
    while (!mr_queue_empty(&n->proposals)) {
        struct mr_node_op *op = MR_CONTAINER_OF(n->proposals.next, struct mr_node_op, link);
        if (op->index > index) break;
        if (op->index < index || op->term != term) {
            mr_node_op_fail(op, 503, "no_leader",
                            "leadership changed before the change committed; retry");
            continue;
        }
        {
            struct mr_http_buf b;
            struct mr_http_json j;
            mr_http_buf_init(&b);
            mr_http_json_init(&j, &b);
            mr_http_json_obj_begin(&j);
            mr_http_json_key(&j, "index");
            mr_http_json_uint(&j, index);
            mr_http_json_key(&j, "members");
            mr_node_members_json(n, &j);
            mr_http_json_obj_end(&j);
            op->shape = op->req ? SHAPE_RAW : op->shape;
            mr_node_op_finish(op, 200, index, b.data ? b.data : "{}", b.len, 0);
            mr_http_buf_close(&b);
        }
    }
}

void mr_node_ops_on_leader_change(struct mr_node *n)
{
    struct mr_queue moved, *it, *next;
    /* Transfers finish when leadership moves away from us. */
    if (n->role != MR_RAFT_LEADER) {
        while (!mr_queue_empty(&n->transfers)) {
            struct mr_node_op *op = MR_CONTAINER_OF(n->transfers.next, struct mr_node_op, link);
            char lb[72], body[160];
            const char *l;
            leader_name(n, lb, sizeof lb, &l);
            snprintf(body, sizeof body, "{\"leader\":\"%s\"}", l ? l : "");
            if (l == NULL) {
                /* No leader yet: keep waiting until the deadline. */
                break;
            }
            mr_node_op_finish(op, 200, 0, body, strlen(body), 0);
        }
    }
    if (n->leader == 0 && n->role != MR_RAFT_LEADER) return;
    /* Ops forwarded to a previous leader will most likely never be answered
     * (it crashed or was deposed). Reads and commands with an Idempotency-Key
     * are safe to send again, to the new leader; other commands may or may not
     * have been applied, so say so now instead of at their deadline. */
    mr_queue_init(&moved);
    for (it = n->forwarded.next; it != &n->forwarded; it = next) {
        struct mr_node_op *op = MR_CONTAINER_OF(it, struct mr_node_op, link);
        next = it->next;
        /* Transfers and membership changes answer from the old leader (a
         * transfer completes exactly when leadership moves): let them be. */
        if (op->fwd_leader == n->leader || (op->kind != OP_COMMAND && op->kind != OP_READ))
            continue;
        mr_queue_remove(it);
        if (op->kind == OP_READ || (op->kind == OP_COMMAND && op->key_len > 0)) {
            /* The old leader may have committed its copy of a command. */
            if (op->kind == OP_COMMAND) op->is_maybe_applied = 1;
            mr_queue_push_tail(&moved, it);
        } else {
            mr_node_op_fail(op, 504, "timeout",
                            "the leader changed while the request was in flight: it may or may "
                            "not have been applied (retry with an Idempotency-Key to be safe)");
        }
    }
    while (!mr_queue_empty(&moved)) {
        struct mr_node_op *op = MR_CONTAINER_OF(moved.next, struct mr_node_op, link);
        mr_queue_remove(&op->link);
        mr_node_op_submit(n, op);
    }
    /* Resubmit everything that was waiting for a leader. */
    mr_queue_init(&moved);
    for (it = n->wait_leader.next; it != &n->wait_leader; it = next) {
        next = it->next;
        mr_queue_remove(it);
        mr_queue_push_tail(&moved, it);
    }
    while (!mr_queue_empty(&moved)) {
        struct mr_node_op *op = MR_CONTAINER_OF(moved.next, struct mr_node_op, link);
        mr_queue_remove(&op->link);
        mr_node_op_submit(n, op);
    }
}

static void expire_queue(struct mr_node *n, struct mr_queue *q, unsigned status,
                         const char *code, const char *msg, uint64_t now)
{
    struct mr_queue *it, *next;
    for (it = q->next; it != q; it = next) {
        struct mr_node_op *op = MR_CONTAINER_OF(it, struct mr_node_op, link);
        next = it->next;
        if (op->deadline <= now) mr_node_op_fail(op, status, code, msg);
    }
    (void)n;
}

/* A follower's READ_INDEX (or the leader's answer) can be lost: sent while
 * the link to the leader was not up yet (right after a restart), or dropped
 * by a full queue. Nothing in Raft resends it, so ask again after a while;
 * a duplicate answer finds no read waiting for its context and is ignored. */
#define READ_RESEND_MS 250
static void resend_reads(struct mr_node *n, uint64_t now)
{
    uint64_t ids[64];
    unsigned k = 0;
    struct mr_queue *it;
    if (n->role == MR_RAFT_LEADER || n->leader == 0) return;
    MR_QUEUE_FOREACH(it, &n->reads)
    {
        struct mr_node_op *op = MR_CONTAINER_OF(it, struct mr_node_op, link);
        if (now - op->sent_ms < READ_RESEND_MS || k == sizeof ids / sizeof ids[0]) continue;
        op->sent_ms = now;
        ids[k++] = op->id;
    }
    /* stepped after the walk: an answer may move reads off the queue */
    for (unsigned i = 0; i < k; i++) {
        struct mr_raft_event ev;
        memset(&ev, 0, sizeof ev);
        ev.type = MR_RAFT_EVENT_READ_INDEX;
        ev.ctx = ids[i];
        (void)mr_node_step(n, &ev);
    }
}

void mr_node_ops_expire(struct mr_node *n)
{
    uint64_t now = mr_node_now(n);
    struct mr_queue *it, *next;
    /* Retry ops whose forward could not be sent, while a leader is known. */
    if (n->leader != 0 || n->role == MR_RAFT_LEADER) {
        struct mr_queue retry;
        mr_queue_init(&retry);
        for (it = n->wait_leader.next; it != &n->wait_leader; it = next) {
            next = it->next;
            mr_queue_remove(it);
            mr_queue_push_tail(&retry, it);
        }
        while (!mr_queue_empty(&retry)) {
            struct mr_node_op *op = MR_CONTAINER_OF(retry.next, struct mr_node_op, link);
            mr_queue_remove(&op->link);
            if (op->deadline <= now) {
                mr_node_op_fail(op, 503, "no_leader", "no leader could take the request in time");
            } else {
                mr_node_op_submit(n, op);
            }
        }
    }
    expire_queue(n, &n->wait_leader, 503, "no_leader",
                 "no leader is known; the request was not applied", now);
    /* Retry membership changes that waited for the pending one. */
    if (!mr_queue_empty(&n->wait_busy)) {
        struct mr_queue retry;
        mr_queue_init(&retry);
        for (it = n->wait_busy.next; it != &n->wait_busy; it = next) {
            next = it->next;
            mr_queue_remove(it);
            mr_queue_push_tail(&retry, it);
        }
        while (!mr_queue_empty(&retry)) {
            struct mr_node_op *op = MR_CONTAINER_OF(retry.next, struct mr_node_op, link);
            mr_queue_remove(&op->link);
            if (op->deadline <= now)
                mr_node_op_fail(op, 409, "busy",
                                "another membership change or transfer stayed in progress; "
                                "not applied, retry later");
            else
                mr_node_op_submit(n, op);
        }
    }
    expire_queue(n, &n->proposals, 504, "timeout",
                 "the command was proposed but did not commit in time: it may or may not "
                 "have been applied",
                 now);
    expire_queue(n, &n->forwarded, 504, "timeout",
                 "the leader did not answer in time: the command may or may not have been "
                 "applied",
                 now);
    expire_queue(n, &n->reads, 503, "no_leader", "the read could not be confirmed by a leader", now);
    resend_reads(n, now);
    expire_queue(n, &n->read_apply, 504, "timeout", "this node did not catch up in time", now);
    expire_queue(n, &n->transfers, 504, "timeout", "leadership did not move in time", now);
    expire_queue(n, &n->pending_join_ops, 503, "no_leader", "the cluster has not formed yet", now);
}

void mr_node_ops_cancel_all(struct mr_node *n)
{
    /* Nothing in these was started (proposed, or a transfer begun). */
    struct mr_queue *qs[] = {&n->wait_leader, &n->wait_busy, &n->reads, &n->read_apply,
                             &n->pending_join_ops};
    unsigned i;
    for (i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        while (!mr_queue_empty(qs[i])) {
            struct mr_node_op *op = MR_CONTAINER_OF(qs[i]->next, struct mr_node_op, link);
            mr_node_op_fail(op, 503, "shutting_down", "this node is shutting down; not applied");
        }
    }
    while (!mr_queue_empty(&n->proposals)) {
        struct mr_node_op *op = MR_CONTAINER_OF(n->proposals.next, struct mr_node_op, link);
        mr_node_op_fail(op, 504, "timeout",
                        "this node is shutting down: the command may or may not be applied");
    }
    while (!mr_queue_empty(&n->forwarded)) {
        struct mr_node_op *op = MR_CONTAINER_OF(n->forwarded.next, struct mr_node_op, link);
        mr_node_op_fail(op, 504, "timeout",
                        "this node is shutting down: the command may or may not be applied");
    }
    while (!mr_queue_empty(&n->transfers)) {
        /* TimeoutNow may be on its way: the target can still take over. */
        struct mr_node_op *op = MR_CONTAINER_OF(n->transfers.next, struct mr_node_op, link);
        mr_node_op_fail(op, 504, "timeout",
                        "this node is shutting down: leadership may or may not move to the target");
    }
}
