/* node: a full disk (the NOSPACE alarm).
 *
 * When the store's writer hits ENOSPC or EDQUOT (a real full disk, or the
 * max_data_mb quota enforced by the storage limit layer), it does not fail:
 * it stalls and retries (storage.h). This file turns that into the NOSPACE
 * alarm and drives the recovery:
 *   - raised when the store reports `nospace`, cleared when a retry went
 *     through; logged once each way, shown in /v1/status ("disk", "alarms")
 *     and /metrics (moonraft_nospace_alarm);
 *   - writes that reach this node (commands, deploys; also forwarded to it as
 *     leader) are refused with 507 insufficient_storage before anything is
 *     proposed: certainly not applied;
 *   - Raft safety needs nothing new: acknowledgements and votes leave only
 *     through msgs_after, once the store reported them durable (raft.h rule
 *     3), so a node that cannot persist acks nothing and grants no vote (it
 *     cannot start an election either: its vote request implies a durable
 *     self-vote). Heartbeats are answered (they promise nothing), so a
 *     follower stays a member and catches up from its queue when space
 *     returns. Its linearizable reads wait for entries it applies, as ever;
 *   - a leader hands leadership to its most caught-up voter (every second
 *     while the alarm lasts): its followers persist and commit, but it
 *     cannot count its own vote, and clients writing to it would only get
 *     507s. The cluster goes on; clients on this node are told the leader;
 *   - space is freed in the order that needs least of it: first the WAL
 *     below the newest snapshot is compacted away (no trailing entries kept
 *     under pressure; costs a 64-byte meta write), then, if the state
 *     advanced past that snapshot, a new snapshot is taken (at most every
 *     5 s; it needs room for the state, which the older snapshot gives back
 *     right after) and the WAL compacted to it. The store retries at once
 *     after a compaction (it runs ahead of the stalled writes).
 *
 * XXX(#13): while stalled, the acknowledgements held for durability
 * (node.c `held`) and the store's queue grow in memory with what the leader
 * sends (bounded by its in-flight window, plus one held batch per append
 * round); they are released when space returns, or at shutdown. */
#include "node/node_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define DISK_PERIOD_MS 1000u   /* usage measure, hand-over and compaction */
#define DISK_SNAP_GAP_MS 5000u /* between snapshots forced by the alarm */

const struct mr_store_fs *mr_node_disk_fs(struct mr_node *n,
                                          const struct mr_store_fs *inner)
{
    const char *ff = getenv("MOONRAFT_FAULT_DISK_LIMIT_FILE");
    if (ff != NULL && ff[0] == '\0') ff = NULL;
    if (n->o->max_data_bytes == 0 && ff == NULL) return inner;
    if (mr_store_limit_open(n->o->data_dir, inner, n->o->max_data_bytes, ff,
                            &n->disk_limit) != 0) {
        LOGE("out of memory setting up the data directory quota; running without it");
        return inner;
    }
    if (ff != NULL)
        LOGW("MOONRAFT_FAULT_DISK_LIMIT_FILE is set: while %s exists, the data directory "
             "may "
             "hold no more bytes than it says (testing only)",
             ff);
    if (n->o->max_data_bytes)
        LOGI("data directory quota: %llu MiB",
             (unsigned long long)(n->o->max_data_bytes >> 20));
    return mr_store_limit_fs(n->disk_limit);
}

void mr_node_disk_close(struct mr_node *n)
{
    mr_store_limit_close(n->disk_limit);
    n->disk_limit = NULL;
}

void mr_node_disk_metrics(struct mr_node *n, struct mr_http_metrics *m)
{
    n->m_nospace = mr_http_metrics_gauge(m, "moonraft_nospace_alarm", NULL,
                                         "1 while writes are stalled because the data "
                                         "directory is full or past max_data_mb");
    n->m_disk_used =
        mr_http_metrics_gauge(m, "moonraft_data_dir_bytes", NULL,
                              "Bytes allocated to the files of the data directory");
}

static void measure(struct mr_node *n)
{
    n->disk_used = mr_store_dir_usage(n->o->data_dir);
    if (n->m_disk_used) mr_http_metric_set(n->m_disk_used, (double)n->disk_used);
}

void mr_node_disk_on_progress(struct mr_node *n, const struct mr_store_progress *p)
{
    if (p->error != 0) return; /* a real failure: disk_failed */
    if (p->nospace != 0 && n->nospace == 0) {
        n->nospace = p->nospace;
        snprintf(n->nospace_msg, sizeof n->nospace_msg, "%s", p->nospace_msg);
        n->nospace_since_ms = mr_node_wall_ms();
        n->nospace_alarms++;
        n->disk_next_ms = 0; /* act at the next tick */
        if (n->m_nospace) mr_http_metric_set(n->m_nospace, 1);
        measure(n);
        LOGE("NOSPACE alarm raised: %s (%s; data directory holds %llu bytes%s); writes "
             "are "
             "refused (507) and retried until space returns",
             n->nospace == -EDQUOT ? "the data directory passed max_data_mb"
                                   : "the disk is full",
             n->nospace_msg, (unsigned long long)n->disk_used,
             n->role == MR_RAFT_LEADER ? "; handing leadership over" : "");
    } else if (p->nospace == 0 && n->nospace != 0) {
        measure(n);
        LOGW("NOSPACE alarm cleared after %llu ms: writes go through again (data "
             "directory "
             "holds %llu bytes)",
             (unsigned long long)(mr_node_wall_ms() - n->nospace_since_ms),
             (unsigned long long)n->disk_used);
        n->nospace = 0;
        n->nospace_msg[0] = '\0';
        if (n->m_nospace) mr_http_metric_set(n->m_nospace, 0);
    } else if (p->nospace != 0) {
        snprintf(n->nospace_msg, sizeof n->nospace_msg, "%s", p->nospace_msg);
    }
}

static void hand_over(struct mr_node *n)
{
    struct mr_raft_status st;
    struct mr_raft_event ev;
    mr_node_id best = 0;
    mr_index best_match = 0;
    char nb[72];
    unsigned i;
    mr_raft_status(&n->raft, &st);
    for (i = 0; i < st.n_progress; i++) {
        const struct mr_raft_progress *pr = &st.progress[i];
        if (pr->id == n->id || pr->role != MR_RAFT_VOTER) continue;
        if (best == 0 || pr->match > best_match) {
            best = pr->id;
            best_match = pr->match;
        }
    }
    if (best == 0) return; /* a single voter: writes wait for space */
    memset(&ev, 0, sizeof ev);
    ev.type = MR_RAFT_EVENT_TRANSFER_LEADER;
    ev.node = best;
    if (mr_node_step(n, &ev) == 0)
        LOGW("NOSPACE: this node cannot persist its log: handing leadership to %s",
             mr_node_name_of(n, best, nb, sizeof nb));
}

void mr_node_disk_tick(struct mr_node *n)
{
    uint64_t now = mr_node_now(n);
    if (n->store == NULL || n->disk_error || n->is_stopping) return;
    if (now < n->disk_next_ms) return;
    n->disk_next_ms = now + DISK_PERIOD_MS;
    measure(n);
    if (n->nospace == 0) return;
    if (n->role == MR_RAFT_LEADER) hand_over(n);
    /* 1. the WAL under the newest snapshot: costs (almost) nothing */
    if (n->snap_index > n->disk_compacted) {
        int rv = mr_store_compact(n->store, n->snap_index, NULL);
        if (rv == 0) {
            n->disk_compacted = n->snap_index;
            LOGI("NOSPACE: compacting the log up to the snapshot at %llu",
                 (unsigned long long)n->snap_index);
        }
    }
    /* 2. a newer snapshot, so that more of the WAL can go */
    if (n->applied > n->snap_index && !n->job_running && now >= n->disk_next_snap_ms) {
        n->disk_next_snap_ms = now + DISK_SNAP_GAP_MS;
        mr_node_apply_snapshot_soon(n, 1);
    }
    mr_store_retry_now(n->store);
}

int mr_node_disk_refuse(struct mr_node *n, struct mr_node_op *op)
{
    char msg[MR_ERRMSG_SIZE + 128];
    if (n->nospace == 0 || (op->kind != OP_COMMAND && op->kind != OP_DEPLOY)) return 0;
    snprintf(msg, sizeof msg,
             "%s on this node (%s): the write was not applied; send it to another node",
             n->nospace == -EDQUOT ? "the data directory is past max_data_mb"
                                   : "no space left on the disk",
             n->nospace_msg);
    mr_node_op_fail(op, 507, "insufficient_storage", msg);
    return 1;
}

void mr_node_disk_json(struct mr_node *n, struct mr_http_json *j)
{
    mr_http_json_obj_begin(j);
    mr_http_json_key(j, "nospace");
    mr_http_json_bool(j, n->nospace != 0);
    mr_http_json_key(j, "reason");
    mr_http_json_str(j, n->nospace == 0         ? NULL
                        : n->nospace == -EDQUOT ? "max_data_mb"
                                                : "disk_full");
    mr_http_json_key(j, "message");
    mr_http_json_str(j, n->nospace ? n->nospace_msg : NULL);
    mr_http_json_key(j, "since_ms");
    mr_http_json_uint(j, n->nospace ? n->nospace_since_ms : 0);
    mr_http_json_key(j, "alarms_raised");
    mr_http_json_uint(j, n->nospace_alarms);
    mr_http_json_key(j, "used_bytes");
    mr_http_json_uint(j, n->disk_used);
    mr_http_json_key(j, "max_bytes");
    mr_http_json_uint(j, n->o->max_data_bytes);
    mr_http_json_obj_end(j);
}

void mr_node_disk_alarms_json(struct mr_node *n, struct mr_http_json *j)
{
    mr_http_json_arr_begin(j);
    if (n->nospace) mr_http_json_str(j, "NOSPACE");
    if (n->disk_error) mr_http_json_str(j, "DISK_FAILED");
    mr_http_json_arr_end(j);
}
