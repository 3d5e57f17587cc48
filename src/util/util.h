/* util: the small pieces every moonraft module shares.
 *
 * Domain types, error codes (one X-macro), the allocator seam, the always-on
 * assert, error-message buffers, a refcounted byte buffer, an intrusive queue,
 * a seedable PRNG and CRC32C. libc only: the pure Raft core links this. */
#ifndef MR_UTIL_H
#define MR_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* ---- domain types (STYLE 2) ---------------------------------------------- */
typedef uint64_t mr_term;
typedef uint64_t mr_index;
typedef uint64_t mr_node_id;

/* ---- errors (STYLE 5) ------------------------------------------------------
 * Functions return 0 or a negative code: either -errno (system errors) or one
 * of the MR_E* codes below, which live far below any errno value. */
#define MR_ERRNO_MAP(X)                                                    \
    X(NOMEM, "no_memory", "out of memory")                                 \
    X(INVAL, "invalid_argument", "invalid argument")                       \
    X(MALFORMED, "malformed", "malformed input")                           \
    X(NOTLEADER, "not_leader", "this node is not the leader")              \
    X(NOLEADER, "no_leader", "no leader is known")                         \
    X(BUSY, "busy", "another operation of this kind is in progress")       \
    X(CANCELED, "canceled", "operation canceled")                          \
    X(CORRUPT, "corrupt", "data on disk is corrupt")                       \
    X(IOERR, "io_error", "input/output error")                             \
    X(NOSPACE, "no_space", "no space left on device")                      \
    X(TOOBIG, "too_large", "too large")                                    \
    X(TIMEOUT, "timeout", "timed out")                                     \
    X(NOTFOUND, "not_found", "not found")                                  \
    X(EXISTS, "exists", "already exists")                                  \
    X(SHUTDOWN, "shutting_down", "shutting down")                          \
    X(SCRIPT, "script_error", "state machine script error")                \
    X(DISKFAIL, "disk_failed", "a disk error stopped writes on this node") \
    X(STALE, "stale", "stale request")                                     \
    X(UNAVAIL, "unavailable", "service unavailable")                       \
    X(PROTO, "protocol_error", "protocol error")                           \
    X(AUTH, "unauthorized", "unauthorized")                                \
    X(CONFIG, "bad_config", "invalid configuration")

enum {
    MR_OK = 0,
    MR_E__BASE = -20000,
#define MR__ERR_ENUM(name, s, t) MR_E##name,
    MR_ERRNO_MAP(MR__ERR_ENUM)
#undef MR__ERR_ENUM
    MR_E__END
};

/* Machine-readable name of a code ("not_leader"); "errno" style names for
 * system errors ("ENOSPC" becomes "no_space" for the two we map). */
const char *mr_err_name(int code);
/* Human text for a code; for -errno values, strerror(). Never NULL. */
const char *mr_strerror(int code);

/* ---- assert (STYLE 8): always compiled in --------------------------------- */
void mr_assert_fail(const char *expr, const char *file, int line)
    __attribute__((noreturn));
#define MR_ASSERT(expr)                                     \
    do {                                                    \
        if (!(expr)) mr_assert_fail(#expr, __FILE__, __LINE__); \
    } while (0)

/* ---- error messages (STYLE 6) --------------------------------------------- */
#define MR_ERRMSG_SIZE 256
void mr_errmsg_printf(char *errmsg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prefix the existing message: "fmt: <old message>". */
void mr_errmsg_wrapf(char *errmsg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- allocator seam (STYLE 10) ---------------------------------------------
 * Every allocation goes through these. They return NULL on failure and the
 * caller must handle it. Tests can make the Nth call from now fail. */
void *mr_malloc(size_t size);
void *mr_calloc(size_t n, size_t size);
void *mr_realloc(void *ptr, size_t size);
void mr_free(void *ptr);
char *mr_strdup(const char *s);
/* Fail the n-th allocation from now (1 = the next one); 0 disables. If
 * `repeat` is nonzero, every allocation from the n-th on fails. */
void mr_alloc_fail_at(unsigned long n, int repeat);
/* Number of live allocations made through the seam (for leak tests). */
long mr_alloc_live(void);

/* ---- Lua files built into the binary --------------------------------------
 * The default state machine ("kv.lua") and the console's Lua ("console.lua")
 * are compiled in from lua/ (cmake/embed.cmake), byte for byte, so that the
 * binary runs from any directory and the built-in kv script hashes exactly
 * like lua/kv.lua. Returns the NUL-terminated text (static, never freed) and
 * sets *len (if not NULL) to its length, or returns NULL for an unknown name. */
const char *mr_util_lua_embedded(const char *name, size_t *len);

/* ---- refcounted immutable byte buffer (STYLE 9) ----------------------------
 * Log entry payloads are shared between the WAL, the network and apply. */
struct mr_rcbuf {
    uint32_t refs;
    uint32_t pad_;
    size_t len;
    unsigned char data[];
};
/* New buffer with refs = 1 and `len` uninitialised bytes; NULL on OOM. */
struct mr_rcbuf *mr_rcbuf_new(size_t len);
/* New buffer holding a copy of [data, data+len); NULL on OOM. */
struct mr_rcbuf *mr_rcbuf_copy(const void *data, size_t len);
/* Adds a reference; NULL-safe. Returns b. */
struct mr_rcbuf *mr_rcbuf_ref(struct mr_rcbuf *b);
/* Drops a reference, freeing at zero; NULL-safe. */
void mr_rcbuf_unref(struct mr_rcbuf *b);

/* ---- intrusive doubly-linked queue (STYLE 10) ----------------------------- */
struct mr_queue {
    struct mr_queue *next;
    struct mr_queue *prev;
};
#define MR_CONTAINER_OF(ptr, type, field) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, field)))
static inline void mr_queue_init(struct mr_queue *q) { q->next = q->prev = q; }
static inline int mr_queue_empty(const struct mr_queue *q) { return q->next == q; }
static inline void mr_queue_push_tail(struct mr_queue *h, struct mr_queue *e)
{
    e->next = h;
    e->prev = h->prev;
    h->prev->next = e;
    h->prev = e;
}
static inline void mr_queue_remove(struct mr_queue *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->next = e->prev = e;
}
#define MR_QUEUE_FOREACH(it, head) \
    for ((it) = (head)->next; (it) != (head); (it) = (it)->next)

/* ---- PRNG: xoshiro256**, seeded by splitmix64 (deterministic, no libc rand) */
struct mr_rand {
    uint64_t s[4];
};
void mr_rand_seed(struct mr_rand *r, uint64_t seed);
uint64_t mr_rand_next(struct mr_rand *r);
/* Uniform in [0, n); n > 0. */
uint64_t mr_rand_below(struct mr_rand *r, uint64_t n);

/* ---- checksums ------------------------------------------------------------- */
/* CRC32C (Castagnoli). Pass 0 to start; feed the previous result to continue.
 * Uses the SSE4.2 instruction when the CPU has it, a table otherwise. */
uint32_t mr_crc32c(uint32_t crc, const void *buf, size_t len);

/* ---- little-endian fixed-width encoding helpers ---------------------------- */
static inline void mr_put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}
static inline uint32_t mr_get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}
static inline void mr_put_u64(unsigned char *p, uint64_t v)
{
    mr_put_u32(p, (uint32_t)v);
    mr_put_u32(p + 4, (uint32_t)(v >> 32));
}
static inline uint64_t mr_get_u64(const unsigned char *p)
{
    return (uint64_t)mr_get_u32(p) | (uint64_t)mr_get_u32(p + 4) << 32;
}

#endif /* MR_UTIL_H */
