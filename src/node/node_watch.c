/* node_watch: long-poll watches over the change events scripts emit.
 *
 * GET /v1/watch?prefix=p|key=k&index=n[&timeout_ms=t] answers the events
 * applied after index n whose "key" starts with p (or equals k), as soon as
 * there is at least one, or an empty list when the timeout passes:
 *   {"events":[{"index":i,"event":{...}},...],"index":applied}
 * Pass the returned "index" back to continue. Events live in a ring of the
 * last MR_NODE_EVENT_RING events; asking for older ones gives 410 compacted.
 * Every node records the same events (they come from apply), so a watch on a
 * follower sees what a watch on the leader sees, once applied there. */
#include "node/node_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WATCH_DEFAULT_TIMEOUT_MS 30000
#define WATCH_MAX_TIMEOUT_MS 300000
#define WATCH_MAX_EVENTS 1000

struct watch {
    struct mr_queue link;
    struct mr_http_request *req;
    char *prefix;
    int exact;
    mr_index after;
    uint64_t deadline;
};

static void event_clear(struct mr_node_event *e)
{
    mr_free(e->json);
    mr_free(e->key);
    memset(e, 0, sizeof *e);
}

/* Splits a JSON array (produced by our own encoder) into its elements. */
static const char *next_element(const char *p, const char *end, const char **start)
{
    int depth = 0, in_str = 0;
    while (p < end && (*p == ' ' || *p == ',' || *p == '[' || *p == '\n')) {
        if (*p == '[' && depth == 0 && p == *start) {
        }
        p++;
    }
    if (p >= end || *p == ']') return NULL;
    *start = p;
    for (; p < end; p++) {
        char c = *p;
        if (in_str) {
            if (c == '\\') p++;
            else if (c == '"') in_str = 0;
            continue;
        }
        if (c == '"') in_str = 1;
        else if (c == '{' || c == '[') depth++;
        else if (c == '}' || c == ']') {
            if (depth == 0) return p; /* end of the outer array */
            depth--;
            if (depth == 0) return p + 1;
        } else if (c == ',' && depth == 0) {
            return p;
        }
    }
    return p;
}

void mr_node_watch_record(struct mr_node *n, mr_index index, const char *events, size_t len)
{
    const char *p = events, *end = events + len, *start = events;
    static const char *const names[] = {"key"};
    if (len < 2 || events[0] != '[') return;
    p = events + 1;
    for (;;) {
        const char *stop = next_element(p, end, &start);
        struct mr_node_event *e;
        char key[1][256], err[MR_ERRMSG_SIZE];
        size_t elen;
        if (stop == NULL || stop <= start) break;
        elen = (size_t)(stop - start);
        e = &n->events[n->events_head % MR_NODE_EVENT_RING];
        event_clear(e);
        e->index = index;
        e->json = mr_malloc(elen + 1);
        if (e->json != NULL) {
            memcpy(e->json, start, elen);
            e->json[elen] = '\0';
            e->len = elen;
            int rv = mr_node_json_string_field(start, elen, "key", key[0], sizeof key[0]);
            if (rv == -1) {
                /* not the shape the scanner knows: ask the full parser */
                key[0][0] = '\0';
                if (mr_node_json_fields(n, start, elen, names, key, 1, err) != 0) key[0][0] = '\0';
            }
            if (key[0][0]) e->key = mr_strdup(key[0]);
        }
        n->events_head++;
        p = stop;
    }
}

static int matches(const struct watch *w, const struct mr_node_event *e)
{
    if (w->prefix[0] == '\0' && !w->exact) return 1;
    if (e->key == NULL) return 0;
    if (w->exact) return strcmp(e->key, w->prefix) == 0;
    return strncmp(e->key, w->prefix, strlen(w->prefix)) == 0;
}

static uint64_t oldest(const struct mr_node *n)
{
    return n->events_head > MR_NODE_EVENT_RING ? n->events_head - MR_NODE_EVENT_RING : 0;
}

/* Answers the watch if it has events (or if `force`). Returns 1 if answered. */
static int try_answer(struct mr_node *n, struct watch *w, int force)
{
    struct mr_http_buf b;
    struct mr_http_json j;
    uint64_t i;
    unsigned count = 0;
    mr_http_buf_init(&b);
    mr_http_json_init(&j, &b);
    mr_http_json_obj_begin(&j);
    mr_http_json_key(&j, "events");
    mr_http_json_arr_begin(&j);
    for (i = oldest(n); i < n->events_head && count < WATCH_MAX_EVENTS; i++) {
        const struct mr_node_event *e = &n->events[i % MR_NODE_EVENT_RING];
        if (e->index <= w->after || e->json == NULL || !matches(w, e)) continue;
        mr_http_json_obj_begin(&j);
        mr_http_json_key(&j, "index");
        mr_http_json_uint(&j, e->index);
        mr_http_json_key(&j, "event");
        mr_http_json_raw(&j, e->json, e->len);
        mr_http_json_obj_end(&j);
        count++;
    }
    mr_http_json_arr_end(&j);
    mr_http_json_key(&j, "index");
    mr_http_json_uint(&j, n->applied);
    mr_http_json_obj_end(&j);
    if (count == 0 && !force) {
        mr_http_buf_close(&b);
        return 0;
    }
    mr_queue_remove(&w->link);
    mr_http_respond_json(w->req, 200, b.data, b.len);
    mr_http_buf_close(&b);
    mr_free(w->prefix);
    mr_free(w);
    return 1;
}

void mr_node_watch_add(struct mr_node *n, struct mr_http_request *req)
{
    const char *prefix = mr_http_request_param(req, "prefix");
    const char *key = mr_http_request_param(req, "key");
    const char *idx = mr_http_request_param(req, "index");
    const char *tmo = mr_http_request_param(req, "timeout_ms");
    struct watch *w;
    unsigned long long t = WATCH_DEFAULT_TIMEOUT_MS;
    char *end;
    w = mr_calloc(1, sizeof *w);
    if (w == NULL) {
        mr_http_respond_error(req, 500, "no_memory", "out of memory", NULL, 0);
        return;
    }
    mr_queue_init(&w->link);
    w->req = req;
    w->exact = key != NULL;
    w->prefix = mr_strdup(key ? key : prefix ? prefix : "");
    if (idx != NULL) {
        w->after = strtoull(idx, &end, 10);
        if (*end != '\0') goto bad;
    } else {
        w->after = n->applied;
    }
    if (tmo != NULL) {
        t = strtoull(tmo, &end, 10);
        if (*end != '\0' || t > WATCH_MAX_TIMEOUT_MS) goto bad;
    }
    if (w->prefix == NULL) goto bad;
    w->deadline = mr_node_now(n) + t;
    mr_queue_push_tail(&n->watches, &w->link);
    /* Asking for events the ring no longer holds. */
    if (oldest(n) > 0 && n->events[oldest(n) % MR_NODE_EVENT_RING].index > w->after + 1) {
        mr_queue_remove(&w->link);
        mr_http_respond_error(req, 410, "compacted",
                              "events after that index are no longer kept; read the state and "
                              "watch from its index",
                              NULL, 0);
        mr_free(w->prefix);
        mr_free(w);
        return;
    }
    try_answer(n, w, t == 0);
    return;
bad:
    mr_http_respond_error(req, 400, "invalid_request",
                          "index must be an integer; timeout_ms at most 300000", NULL, 0);
    mr_free(w->prefix);
    mr_free(w);
}

void mr_node_watch_notify(struct mr_node *n)
{
    struct mr_queue *it, *next;
    for (it = n->watches.next; it != &n->watches; it = next) {
        next = it->next;
        try_answer(n, MR_CONTAINER_OF(it, struct watch, link), 0);
    }
}

void mr_node_watch_expire(struct mr_node *n, int all)
{
    struct mr_queue *it, *next;
    uint64_t now = mr_node_now(n);
    for (it = n->watches.next; it != &n->watches; it = next) {
        struct watch *w = MR_CONTAINER_OF(it, struct watch, link);
        next = it->next;
        if (all || w->deadline <= now || mr_http_request_is_aborted(w->req)) try_answer(n, w, 1);
    }
}

void mr_node_watch_close(struct mr_node *n)
{
    unsigned i;
    mr_node_watch_expire(n, 1);
    for (i = 0; i < MR_NODE_EVENT_RING; i++) event_clear(&n->events[i]);
}
