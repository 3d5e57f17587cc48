/* node_backup: GET /v1/backup, an online backup of a running member (any
 * member: a follower's applied state is a committed prefix like the
 * leader's).
 *
 * A backup is a snapshot file wrapped in a header and a checksum (format in
 * storage.h). Which snapshot: the newest one if it covers what this node had
 * applied when the request arrived, minus ?max_lag=N entries (default 0);
 * otherwise the node takes one now with the ordinary forked snapshot
 * (node_snap.c), so writes stall no more than for any snapshot: the fork.
 * A snapshot already running is waited for first. Once a durable snapshot
 * covers the target, it is opened (the open file stays readable even when a
 * newer snapshot replaces it and compaction deletes the old one) and the
 * answer is streamed (mr_http_respond_stream): headers with the backup's
 * index, term (X-Moonraft-Backup-*) and Content-Length, then the backup
 * produced chunk by chunk by mr_store_backup_stream_read on a work thread
 * (the loop never reads the file), its CRC32C computed on the way and sent
 * last. Memory: a few chunks per backup (MR_HTTP_STREAM_AHEAD x
 * MR_HTTP_STREAM_CHUNK), whatever the snapshot's size. The checksum is not
 * in the headers (it is known only at the end): it is the body's last 4
 * bytes, and `moonraft backup` checks it before keeping the file. */
#include "node/node_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BACKUP_TIMEOUT_MS (10u * 60u * 1000u) /* a snapshot of a large state */

struct backup {
    struct mr_queue link; /* n->backups, until streaming starts */
    struct mr_node *n;
    struct mr_http_request *req; /* until answered */
    mr_index want;               /* the snapshot must cover this index */
    uint64_t deadline;           /* loop ms */
    struct mr_store_snap_reader *reader;
    struct mr_store_backup_stream bs;
    /* The pull being served on the work thread. */
    uv_work_t work;
    struct mr_http_stream *s;
    char *buf;
    size_t cap;
    int rc;
    char errmsg[MR_ERRMSG_SIZE];
};

static void backup_free(struct backup *b)
{
    mr_queue_remove(&b->link);
    mr_store_snap_reader_close(b->reader);
    mr_free(b);
}

static void fail_answer(struct backup *b, unsigned status, const char *code,
                        const char *msg)
{
    mr_http_respond_error(b->req, status, code, msg, NULL, status == 503 ? 1 : 0);
    backup_free(b);
}

static void on_abort(void *data, struct mr_http_request *req)
{
    (void)req;
    fail_answer(data, 503, "canceled", "the client went away");
}

static const char *cluster_name(const struct mr_node *n)
{
    return n->o->cluster_id && n->o->cluster_id[0] ? n->o->cluster_id : "moonraft";
}

static void read_cb(uv_work_t *w)
{
    struct backup *b = w->data;
    b->rc = mr_store_backup_stream_read(&b->bs, b->buf, b->cap, b->errmsg);
}

static void after_read_cb(uv_work_t *w, int status)
{
    struct backup *b = w->data;
    struct mr_http_stream *s = b->s;
    (void)status;
    b->s = NULL;
    if (b->rc != 0) {
        LOGW("backup failed: %s", b->errmsg);
        mr_http_stream_fail(s); /* may free b (done_cb) */
        return;
    }
    mr_http_stream_ready(s, b->cap); /* may free b (done_cb) */
}

/* The http server wants the next `cap` bytes of the backup in buf. */
static void on_pull(void *data, struct mr_http_stream *s, char *buf, size_t cap)
{
    struct backup *b = data;
    b->s = s;
    b->buf = buf;
    b->cap = cap;
    b->work.data = b;
    if (uv_queue_work(&b->n->loop, &b->work, read_cb, after_read_cb) != 0) {
        LOGW("backup failed: cannot queue the work");
        b->s = NULL;
        mr_http_stream_fail(s);
    }
}

static void on_sent(void *data, int status)
{
    struct backup *b = data;
    if (status == 0) {
        LOGI("backup at index %llu (%" PRIu64 " bytes, checksum %08x) sent",
             (unsigned long long)mr_store_snap_reader_info(b->reader)->index, b->bs.size,
             b->bs.crc);
    } else {
        LOGW("backup at index %llu not delivered: sent %" PRIu64 " of %" PRIu64
             " bytes (client gone, or a read failed)",
             (unsigned long long)mr_store_snap_reader_info(b->reader)->index, b->bs.pos,
             b->bs.size);
    }
    backup_free(b);
}

/* The newest snapshot covers b->want: stream it. */
static void start_stream(struct backup *b)
{
    struct mr_node *n = b->n;
    const struct mr_store_snap_info *si;
    struct mr_http_request *req = b->req;
    char err[MR_ERRMSG_SIZE] = "", hdr[256];
    int rv = mr_store_snap_reader_open(n->store, &b->reader, err);
    if (rv != 0) {
        LOGW("backup: %s", err);
        fail_answer(b, 500, "backup_failed", err);
        return;
    }
    si = mr_store_snap_reader_info(b->reader);
    mr_store_backup_stream_init(&b->bs, b->reader, cluster_name(n), n->name,
                                mr_node_id_from_name(cluster_name(n)), mr_node_wall_ms());
    snprintf(hdr, sizeof hdr,
             "X-Moonraft-Backup-Index: %" PRIu64 "\r\nX-Moonraft-Backup-Term: %" PRIu64
             "\r\nContent-Disposition: attachment; filename=\"backup-%" PRIu64
             ".mrb\"\r\n",
             si->index, si->term, si->index);
    /* From here the stream owns b: it leaves the list that ticks and the
     * shutdown walk (the http server's close ends the stream). */
    mr_queue_remove(&b->link);
    mr_queue_init(&b->link);
    b->req = NULL;
    rv = mr_http_respond_stream(req, 200, "application/octet-stream", hdr, b->bs.size,
                                on_pull, on_sent, b);
    if (rv != 0) {
        LOGW("backup at index %llu not sent: %s", (unsigned long long)si->index,
             rv == MR_ECANCELED ? "the client went away" : mr_strerror(rv));
        backup_free(b);
    }
}

/* 0 while the backup may go on, else answers it. */
static int refuse_unhealthy(struct backup *b)
{
    struct mr_node *n = b->n;
    if (n->disk_error) {
        fail_answer(b, 503, "disk_failed", "a disk error stopped this node's writes");
        return 1;
    }
    if (n->is_sm_stale || (n->integ_diverged && !n->integ_resynced)) {
        fail_answer(b, 503, "unavailable",
                    "this node's state cannot be trusted now (see /v1/status integrity); "
                    "back up another member");
        return 1;
    }
    return 0;
}

static void advance(struct backup *b)
{
    struct mr_node *n = b->n;
    if (refuse_unhealthy(b)) return;
    if (mr_node_now(n) > b->deadline) {
        fail_answer(b, 504, "timeout", "no snapshot could be taken in time");
        return;
    }
    /* A running snapshot may publish over the one we would open: wait. */
    if (n->job_running || n->snap_work_busy) return;
    if (n->snap_index >= b->want && n->snap_index > 0) {
        start_stream(b);
        return;
    }
    mr_node_apply_snapshot_soon(n, 1); /* at the apply thread's next idle point */
}

void mr_node_backup_route(struct mr_node *n, struct mr_http_request *req)
{
    struct backup *b;
    const char *lag;
    mr_index max_lag = 0;
    if (req->method != HTTP_GET) {
        mr_http_respond_error_hdr(req, 405, "method_not_allowed", "use GET", NULL, 0,
                                  "Allow: GET\r\n");
        return;
    }
    if (!mr_node_http_authorize(n, req, 1)) return;
    lag = mr_http_request_param(req, "max_lag");
    if (lag != NULL) {
        char *end;
        max_lag = strtoull(lag, &end, 10);
        if (lag[0] == '\0' || *end != '\0' || lag[0] == '-') {
            mr_http_respond_error(req, 400, "invalid_request",
                                  "max_lag must be a number of entries", NULL, 0);
            return;
        }
    }
    if (n->applied == 0 || n->applied_conf == NULL) {
        mr_http_respond_error(req, 503, "unavailable", "nothing applied yet", NULL, 1);
        return;
    }
    b = mr_calloc(1, sizeof *b);
    if (b == NULL) {
        mr_http_respond_error(req, 503, "unavailable", "out of memory", NULL, 1);
        return;
    }
    mr_queue_init(&b->link);
    b->n = n;
    b->req = req;
    b->want = n->applied > max_lag ? n->applied - max_lag : 1;
    b->deadline = mr_node_now(n) + BACKUP_TIMEOUT_MS;
    mr_queue_push_tail(&n->backups, &b->link);
    mr_http_request_on_abort(req, on_abort, b);
    LOGI("backup requested: a snapshot covering index %llu", (unsigned long long)b->want);
    advance(b);
}

void mr_node_backup_tick(struct mr_node *n)
{
    /* One at a time from a private list: an answer may fire the abort hook
     * (and so free) another backup of the same connection. */
    struct mr_queue todo;
    mr_queue_init(&todo);
    while (!mr_queue_empty(&n->backups)) {
        struct mr_queue *q = n->backups.next;
        mr_queue_remove(q);
        mr_queue_push_tail(&todo, q);
    }
    while (!mr_queue_empty(&todo)) {
        struct backup *b = MR_CONTAINER_OF(todo.next, struct backup, link);
        mr_queue_remove(&b->link);
        mr_queue_push_tail(&n->backups, &b->link);
        advance(b);
    }
}

void mr_node_backup_close(struct mr_node *n)
{
    /* Only backups still waiting for a snapshot are listed; streaming ones
     * end when the http server closes their connection. */
    while (!mr_queue_empty(&n->backups)) {
        struct backup *b = MR_CONTAINER_OF(n->backups.next, struct backup, link);
        fail_answer(b, 503, "shutting_down", "the node is stopping");
    }
}
