/* node_idem: the table of recent idempotency keys (client sessions, Raft
 * thesis 6.3). It is part of the replicated state: every node inserts on
 * apply and expires by log position, so every replica holds the same table at
 * the same applied index, and it travels inside snapshots.
 *
 * Expiry rule: a record written at index i is dropped once the applied index
 * reaches i + window. A retry after that is applied again; the window (in log
 * entries) is therefore the retry horizon, documented in docs/api.md. */
#include "node/node_int.h"

#include <string.h>

static uint64_t hash_key(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    size_t i;
    for (i = 0; i < n; i++) {
        h ^= (unsigned char)k[i];
        h *= 1099511628211ULL;
    }
    return h;
}

int mr_idem_init(struct mr_idem *t, mr_index window)
{
    memset(t, 0, sizeof *t);
    t->nbuckets = 1024;
    t->buckets = mr_calloc(t->nbuckets, sizeof *t->buckets);
    if (t->buckets == NULL) return MR_ENOMEM;
    t->window = window;
    mr_queue_init(&t->order);
    return 0;
}

static void rec_free(struct mr_idem_rec *r)
{
    mr_free(r->result);
    mr_free(r);
}

void mr_idem_clear(struct mr_idem *t)
{
    while (!mr_queue_empty(&t->order)) {
        struct mr_idem_rec *r = MR_CONTAINER_OF(t->order.next, struct mr_idem_rec, q);
        mr_queue_remove(&r->q);
        rec_free(r);
    }
    memset(t->buckets, 0, t->nbuckets * sizeof *t->buckets);
    t->count = 0;
}

void mr_idem_close(struct mr_idem *t)
{
    if (t->buckets == NULL) return;
    mr_idem_clear(t);
    mr_free(t->buckets);
    t->buckets = NULL;
}

const struct mr_idem_rec *mr_idem_get(const struct mr_idem *t, const char *key, size_t len)
{
    struct mr_idem_rec *r = t->buckets[hash_key(key, len) & (t->nbuckets - 1)];
    for (; r != NULL; r = r->next) {
        if (r->key_len == len && memcmp(r->key, key, len) == 0) return r;
    }
    return NULL;
}

static int grow(struct mr_idem *t)
{
    size_t n = t->nbuckets * 2, i;
    struct mr_idem_rec **b = mr_calloc(n, sizeof *b);
    if (b == NULL) return MR_ENOMEM;
    for (i = 0; i < t->nbuckets; i++) {
        struct mr_idem_rec *r = t->buckets[i], *next;
        for (; r != NULL; r = next) {
            size_t h = hash_key(r->key, r->key_len) & (n - 1);
            next = r->next;
            r->next = b[h];
            b[h] = r;
        }
    }
    mr_free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
    return 0;
}

int mr_idem_put(struct mr_idem *t, const char *key, size_t len, mr_index index, int status,
                const char *result, size_t result_len)
{
    struct mr_idem_rec *r;
    size_t h;
    if (mr_idem_get(t, key, len) != NULL) return MR_EEXISTS;
    if (t->count + 1 > t->nbuckets && grow(t) != 0) return MR_ENOMEM;
    r = mr_malloc(sizeof *r + len + 1);
    if (r == NULL) return MR_ENOMEM;
    r->result = mr_malloc(result_len + 1);
    if (r->result == NULL) {
        mr_free(r);
        return MR_ENOMEM;
    }
    memcpy(r->result, result, result_len);
    r->result[result_len] = '\0';
    r->result_len = result_len;
    memcpy(r->key, key, len);
    r->key[len] = '\0';
    r->key_len = len;
    r->index = index;
    r->status = status;
    h = hash_key(key, len) & (t->nbuckets - 1);
    r->next = t->buckets[h];
    t->buckets[h] = r;
    /* Records are inserted in apply order, so `order` stays sorted by index. */
    mr_queue_push_tail(&t->order, &r->q);
    t->count++;
    return 0;
}

static void unlink_rec(struct mr_idem *t, struct mr_idem_rec *r)
{
    struct mr_idem_rec **pp = &t->buckets[hash_key(r->key, r->key_len) & (t->nbuckets - 1)];
    while (*pp != r) pp = &(*pp)->next;
    *pp = r->next;
    mr_queue_remove(&r->q);
    t->count--;
}

void mr_idem_expire(struct mr_idem *t, mr_index applied)
{
    while (!mr_queue_empty(&t->order)) {
        struct mr_idem_rec *r = MR_CONTAINER_OF(t->order.next, struct mr_idem_rec, q);
        if (r->index + t->window > applied) break;
        unlink_rec(t, r);
        rec_free(r);
    }
}

/* Encoding (inside node snapshots):
 *   u64 count, then per record: u64 index, i32 status, u32 key_len, u32 result_len, key, result */
size_t mr_idem_encoded_size(const struct mr_idem *t)
{
    size_t n = 8;
    struct mr_queue *it;
    MR_QUEUE_FOREACH(it, &t->order)
    {
        struct mr_idem_rec *r = MR_CONTAINER_OF(it, struct mr_idem_rec, q);
        n += 20 + r->key_len + r->result_len;
    }
    return n;
}

void mr_idem_encode(const struct mr_idem *t, unsigned char *p)
{
    struct mr_queue *it;
    mr_put_u64(p, t->count);
    p += 8;
    MR_QUEUE_FOREACH(it, &t->order)
    {
        struct mr_idem_rec *r = MR_CONTAINER_OF(it, struct mr_idem_rec, q);
        mr_put_u64(p, r->index);
        mr_put_u32(p + 8, (uint32_t)r->status);
        mr_put_u32(p + 12, (uint32_t)r->key_len);
        mr_put_u32(p + 16, (uint32_t)r->result_len);
        memcpy(p + 20, r->key, r->key_len);
        memcpy(p + 20 + r->key_len, r->result, r->result_len);
        p += 20 + r->key_len + r->result_len;
    }
}

int mr_idem_decode(struct mr_idem *t, const unsigned char *p, size_t len, size_t *used)
{
    uint64_t count, i;
    size_t off = 8;
    mr_idem_clear(t);
    if (len < 8) return MR_EMALFORMED;
    count = mr_get_u64(p);
    for (i = 0; i < count; i++) {
        uint32_t kl, rl;
        int rv;
        if (len - off < 20) goto bad;
        kl = mr_get_u32(p + off + 12);
        rl = mr_get_u32(p + off + 16);
        if (kl > MR_NODE_MAX_IDEM_KEY || len - off - 20 < (size_t)kl + rl) goto bad;
        rv = mr_idem_put(t, (const char *)p + off + 20, kl, mr_get_u64(p + off),
                         (int)mr_get_u32(p + off + 8), (const char *)p + off + 20 + kl, rl);
        if (rv == MR_ENOMEM) {
            mr_idem_clear(t);
            return rv;
        }
        if (rv != 0) goto bad;
        off += 20 + kl + rl;
    }
    *used = off;
    return 0;
bad:
    mr_idem_clear(t);
    return MR_EMALFORMED;
}
