/* node_timers: script timers (ctx.wake_at / tick) driven through the log.
 *
 * The state machine keeps the set of pending deadlines (sm_timers.c) as
 * replicated state. Time only enters the state machine inside log entries,
 * so expiry cannot happen by itself on each replica: the LEADER watches the
 * earliest deadline of its own state machine and, once its clock (the same
 * clock and monotonic clamp as for commands, mr_node_propose) has passed it,
 * appends a TICK entry carrying that time:
 *
 *   u8 version (1) | u8 kind (MR_NODE_ENTRY_TICK) | u64 time_ms
 *
 * Every replica applies it at the same log position with ctx.time =
 * max(last applied ctx.time, time_ms) (the clamp of apply_normal), which
 * removes every deadline <= ctx.time and runs the script's tick(ctx). Its
 * events go to watchers like a command's. A tick is an entry like any
 * other: it replays from the log and its effects travel in snapshots (the
 * pending set itself rides in snapshot section MR_NODE_SECTION_TIMERS), so a
 * replica restored from a snapshot fires exactly as one that replayed.
 *
 * No deadline pending, no entry: an idle cluster stays idle. One TICK entry
 * of this leader is in flight at a time (proposed from on_tick, outside any
 * step, as integrity checks are); if it is lost with a leadership change,
 * the next leader proposes its own once it sees the deadline due. A TICK
 * that finds nothing due (two leaders both proposed one) runs nothing. */
#include "node/node_int.h"

#include <string.h>

#define TICK_LEN 10


void mr_node_timers_tick(struct mr_node *n)
{
    mr_index index = 0;
    struct mr_rcbuf *payload;
    uint64_t now;
    int64_t next;
    int rv;
    if (n->role != MR_RAFT_LEADER || n->disk_error || n->is_stopping || n->is_sm_stale)
        return;
    if (n->timer_proposed > n->applied) return; /* ours is on its way */
    /* as of the last time the apply thread was idle: a TICK proposed a
     * little early finds nothing due and runs nothing */
    next = mr_node_apply_next_deadline(n);
    if (next == INT64_MAX) return;
    /* the clamp of mr_node_propose: ctx.time never runs back */
    now = mr_node_wall_ms();
    uint64_t last = __atomic_load_n(&n->last_time_ms, __ATOMIC_RELAXED);
    if (now < last) now = last;
    if (next > 0 && (uint64_t)next > now) return;
    payload = mr_rcbuf_new(TICK_LEN);
    if (payload == NULL) return; /* next tick retries */
    payload->data[0] = 1;
    payload->data[1] = MR_NODE_ENTRY_TICK;
    mr_put_u64(payload->data + 2, now);
    rv = mr_node_propose_entry(n, payload, &index, NULL);
    mr_rcbuf_unref(payload);
    if (rv == 0) {
        n->timer_proposed = index;
        LOGD("timer tick proposed at index %llu (deadline %lld, time %llu)",
             (unsigned long long)index, (long long)next, (unsigned long long)now);
    }
}

int mr_node_timers_apply_sm(struct mr_node *n, const struct mr_raft_entry *e,
                            struct mr_sm_result *res)
{
    struct mr_sm_ctx ctx;
    uint64_t t, last;
    if (e->data->len != TICK_LEN) return MR_EMALFORMED;
    t = mr_get_u64(e->data->data + 2);
    last = __atomic_load_n(&n->last_time_ms, __ATOMIC_RELAXED);
    if (t > last) {
        __atomic_store_n(&n->last_time_ms, t, __ATOMIC_RELAXED);
        last = t;
    }
    ctx.index = e->index;
    ctx.term = e->term;
    ctx.time_ms = (int64_t)last;
    ctx.fault_salt = n->fault_salt_until == 0 || e->index <= n->fault_salt_until
                         ? n->fault_salt
                         : NULL;
    return mr_sm_tick(n->sm, &ctx, res);
}

void mr_node_timers_applied(struct mr_node *n, const struct mr_raft_entry *e, int rv,
                            struct mr_sm_result *res)
{
    if (rv == MR_EMALFORMED) {
        /* Same bytes on every node, so the same outcome everywhere. */
        LOGW("entry %llu: malformed timer tick entry (%zu bytes)", (unsigned long long)e->index,
             e->data->len);
        mr_node_ops_on_applied(n, e->index, e->term, MR_SM_OK, "null", 4, e->index);
        return;
    }
    if (rv != 0) {
        LOGE("state machine host failed at timer tick %llu: %s; stopping to avoid divergence",
             (unsigned long long)e->index, mr_strerror(rv));
        mr_node_request_stop(n, MR_NODE_EXIT_RUNTIME);
        return;
    }
    n->timer_ticks++;
    if (n->m_timer_ticks) mr_http_metric_add(n->m_timer_ticks, 1);
    if (res->is_uncertain)
        mr_node_integrity_suspect(n, e->index, "a timer tick hit the Lua memory cap");
    if (res->status != MR_SM_OK)
        LOGW("entry %llu: tick(ctx) failed (%s): %s", (unsigned long long)e->index,
             mr_sm_status_name(res->status), res->traceback ? res->traceback : res->error);
    if (res->events != NULL) mr_node_watch_record(n, e->index, res->events, res->events_len);
    mr_node_ops_on_applied(n, e->index, e->term, MR_SM_OK, "null", 4, e->index);
}

void mr_node_timers_json(struct mr_node *n, struct mr_http_json *j)
{
    int64_t next = mr_node_apply_next_deadline(n);
    mr_http_json_obj_begin(j);
    mr_http_json_key(j, "pending");
    mr_http_json_uint(j, mr_node_apply_deadline_count(n));
    mr_http_json_key(j, "next");
    if (next == INT64_MAX)
        mr_http_json_null(j);
    else
        mr_http_json_int(j, next);
    mr_http_json_key(j, "ticks");
    mr_http_json_uint(j, n->timer_ticks);
    mr_http_json_obj_end(j);
}

/* ---- snapshot section MR_NODE_SECTION_TIMERS (node_sections.c) ------------------ */

size_t mr_node_timers_encode(struct mr_node *n, unsigned char *out)
{
    return mr_sm_deadlines_encode(n->sm, out);
}

int mr_node_timers_parse(const unsigned char *p, size_t len, char *errmsg)
{
    int rv = mr_sm_deadlines_check(p, len, errmsg);
    if (rv != 0) {
        mr_errmsg_wrapf(errmsg, "snapshot: timers section");
        return MR_ECORRUPT;
    }
    return 0;
}

int mr_node_timers_commit(struct mr_node *n, const unsigned char *p, size_t len, char *errmsg)
{
    /* Checked by the parse: only the host's memory can fail here, after the
     * state machine was replaced (the caller stops the node). */
    return mr_sm_deadlines_restore(n->sm, p, len, errmsg);
}
