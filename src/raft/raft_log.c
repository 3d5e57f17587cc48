/* raft_log.c: the in-memory log.
 *
 * A ring buffer of entries after an offset (the compaction point). Entries
 * share their payload by reference with the WAL, the network and apply
 * (STYLE 9), so slicing never copies bytes. Every lookup is O(1).
 *
 * Bounded memory: mr_raft_log_evict() drops the payloads of old entries that
 * the host's WAL holds and that were handed out for applying; the leader's
 * host reads them back when an AppendEntries needs them (raft.h). `resident`
 * counts the payload bytes held, `evicted_to` is how far eviction looked, so
 * that each call resumes where the last one stopped. */
#include <stdint.h>
#include <string.h>

#include "raft/raft_int.h"

#define RING(r, k) ((r)->log.ring[((r)->log.start + (k)) % (r)->log.cap])

mr_index log_first_index(const struct mr_raft *r)
{
    return r->log.offset + 1;
}

mr_index log_last_index(const struct mr_raft *r)
{
    return r->log.offset + r->log.n;
}

mr_term log_last_term(const struct mr_raft *r)
{
    return log_term(r, log_last_index(r));
}

mr_term log_term(const struct mr_raft *r, mr_index index)
{
    if (index == r->log.offset) return r->log.offset_term;
    if (index < r->log.offset || index > log_last_index(r)) return 0;
    return RING(r, index - r->log.offset - 1).term;
}

const struct mr_raft_entry *log_get(const struct mr_raft *r, mr_index index)
{
    MR_ASSERT(index > r->log.offset && index <= log_last_index(r));
    return &RING(r, index - r->log.offset - 1);
}

int log_reserve(struct mr_raft *r, size_t more)
{
    size_t need = r->log.n + more;
    if (need <= r->log.cap) return 0;
    size_t cap = r->log.cap ? r->log.cap : 64;
    while (cap < need) cap *= 2;
    struct mr_raft_entry *ring = mr_malloc(cap * sizeof(*ring));
    if (ring == NULL) return MR_ENOMEM;
    for (size_t k = 0; k < r->log.n; k++) ring[k] = RING(r, k);
    mr_free(r->log.ring);
    r->log.ring = ring;
    r->log.cap = cap;
    r->log.start = 0;
    return 0;
}

static size_t payload_len(const struct mr_raft_entry *e)
{
    return e->data != NULL ? e->data->len : 0;
}

/* Drops the entry's payload reference and its share of `resident`. */
static void entry_drop(struct mr_raft *r, struct mr_raft_entry *e)
{
    size_t len = payload_len(e);
    MR_ASSERT(r->log.resident >= len);
    r->log.resident -= len;
    mr_rcbuf_unref(e->data);
    memset(e, 0, sizeof(*e));
}

int log_append(struct mr_raft *r, const struct mr_raft_entry *e)
{
    MR_ASSERT(e->index == log_last_index(r) + 1);
    /* callers pass entries they built, or that validate() / mr_raft_load()
     * checked: an evicted entry never comes in */
    MR_ASSERT(!e->evicted);
    int rv = log_reserve(r, 1);
    if (rv != 0) return rv;
    struct mr_raft_entry *slot = &RING(r, r->log.n);
    *slot = *e;
    slot->evicted_len = 0;
    mr_rcbuf_ref(slot->data);
    r->log.resident += payload_len(slot);
    r->log.n++;
    return 0;
}

void log_truncate(struct mr_raft *r, mr_index from)
{
    MR_ASSERT(from > r->log.offset);
    while (log_last_index(r) >= from) {
        entry_drop(r, &RING(r, r->log.n - 1));
        r->log.n--;
    }
    if (r->log.evicted_to >= from) r->log.evicted_to = from - 1;
    /* the host truncates its WAL at `from` with its next write */
    if (r->wal_persisted >= from) r->wal_persisted = from - 1;
}

void log_compact(struct mr_raft *r, mr_index upto)
{
    if (upto <= r->log.offset) return;
    MR_ASSERT(upto <= log_last_index(r));
    mr_term t = log_term(r, upto);
    while (r->log.offset < upto) {
        entry_drop(r, &RING(r, 0));
        r->log.start = (r->log.start + 1) % r->log.cap;
        r->log.n--;
        r->log.offset++;
    }
    r->log.offset_term = t;
    if (r->log.evicted_to < upto) r->log.evicted_to = upto;
}

void log_reset(struct mr_raft *r, mr_index index, mr_term term)
{
    while (r->log.n > 0) {
        entry_drop(r, &RING(r, r->log.n - 1));
        r->log.n--;
    }
    MR_ASSERT(r->log.resident == 0);
    r->log.start = 0;
    r->log.offset = index;
    r->log.offset_term = term;
    r->log.evicted_to = index;
}

size_t mr_raft_log_evict(struct mr_raft *r, size_t max_bytes, mr_index up_to)
{
    /* only what the WAL holds (the host reads it back from there) and what
     * apply already has: ready.entries and ready.committed always carry
     * their payloads */
    mr_index limit = r->wal_persisted;
    if (r->applied < limit) limit = r->applied;
    if (up_to < limit) limit = up_to;
    if (limit > log_last_index(r)) limit = log_last_index(r);
    size_t dropped = 0;
    mr_index i = r->log.evicted_to + 1;
    MR_ASSERT(i > r->log.offset);
    for (; i <= limit && r->log.resident > max_bytes; i++) {
        struct mr_raft_entry *e = &RING(r, i - r->log.offset - 1);
        r->log.evicted_to = i;
        /* membership is read from CONFIG entries (member_config_at,
         * member_truncated); an empty payload has nothing to drop; a payload
         * of 4 GiB or more does not fit evicted_len */
        if (e->type == MR_RAFT_ENTRY_CONFIG || e->data == NULL ||
            e->data->len > UINT32_MAX)
            continue;
        MR_ASSERT(!e->evicted);
        size_t len = e->data->len;
        mr_rcbuf_unref(e->data);
        e->data = NULL;
        e->evicted = 1;
        e->evicted_len = (uint32_t)len;
        r->log.resident -= len;
        dropped += len;
    }
    if (dropped > 0)
        TRACE(r, "evict payloads up to %llu: %zu bytes dropped, %zu resident",
              U(r->log.evicted_to), dropped, r->log.resident);
    return dropped;
}

size_t mr_raft_log_resident_bytes(const struct mr_raft *r)
{
    return r->log.resident;
}

struct mr_raft_entry *log_slice(const struct mr_raft *r, mr_index lo, mr_index hi,
                                size_t max_n, size_t max_bytes, size_t *n, int *err)
{
    *n = 0;
    *err = 0;
    if (hi > log_last_index(r)) hi = log_last_index(r);
    if (lo > hi || lo <= r->log.offset) return NULL;
    size_t count = (size_t)(hi - lo + 1);
    if (max_n != 0 && count > max_n) count = max_n;
    size_t bytes = 0, k;
    for (k = 0; k < count; k++) {
        const struct mr_raft_entry *e = log_get(r, lo + k);
        /* an evicted entry counts as the payload the host will fill in */
        size_t len = e->evicted ? e->evicted_len : payload_len(e);
        if (k > 0 && max_bytes != 0 && bytes + len > max_bytes) break;
        bytes += len;
    }
    count = k;
    struct mr_raft_entry *out = mr_malloc(count * sizeof(*out));
    if (out == NULL) {
        *err = MR_ENOMEM;
        return NULL;
    }
    for (k = 0; k < count; k++) {
        out[k] = *log_get(r, lo + k);
        mr_rcbuf_ref(out[k].data);
    }
    *n = count;
    return out;
}

void log_close(struct mr_raft *r)
{
    if (r->log.ring != NULL) log_reset(r, 0, 0);
    mr_free(r->log.ring);
    memset(&r->log, 0, sizeof(r->log));
}

mr_index log_find_conflict_by_term(const struct mr_raft *r, mr_index index, mr_term term)
{
    if (index > log_last_index(r)) index = log_last_index(r);
    while (index > r->log.offset) {
        if (log_term(r, index) <= term) break;
        index--;
    }
    return index;
}

int log_is_up_to_date(const struct mr_raft *r, mr_index index, mr_term term)
{
    mr_term last_term = log_last_term(r);
    return term > last_term || (term == last_term && index >= log_last_index(r));
}
