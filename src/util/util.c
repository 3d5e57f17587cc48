/* util: errors, assert, error messages, allocator seam, rcbuf, PRNG. */
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

/* ---- errors ---------------------------------------------------------------- */
const char *mr_err_name(int code)
{
    switch (code) {
    case 0:
        return "ok";
#define MR__ERR_NAME(name, s, t) \
    case MR_E##name:             \
        return s;
        MR_ERRNO_MAP(MR__ERR_NAME)
#undef MR__ERR_NAME
    case -ENOSPC:
        return "no_space";
    case -EIO:
        return "io_error";
    case -ENOMEM:
        return "no_memory";
    default:
        return "system_error";
    }
}

const char *mr_strerror(int code)
{
    switch (code) {
    case 0:
        return "success";
#define MR__ERR_TEXT(name, s, t) \
    case MR_E##name:             \
        return t;
        MR_ERRNO_MAP(MR__ERR_TEXT)
#undef MR__ERR_TEXT
    default:
        if (code < 0 && code > MR_E__BASE) return strerror(-code);
        return "unknown error";
    }
}

/* ---- assert ---------------------------------------------------------------- */
void mr_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "moonraft: assertion failed: %s (%s:%d)\n", expr, file, line);
    fflush(stderr);
    abort();
}

/* ---- error messages ------------------------------------------------------- */
void mr_errmsg_printf(char *errmsg, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errmsg, MR_ERRMSG_SIZE, fmt, ap);
    va_end(ap);
}

void mr_errmsg_wrapf(char *errmsg, const char *fmt, ...)
{
    char old[MR_ERRMSG_SIZE];
    char prefix[MR_ERRMSG_SIZE];
    va_list ap;
    memcpy(old, errmsg, MR_ERRMSG_SIZE);
    old[MR_ERRMSG_SIZE - 1] = '\0';
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    if (old[0] == '\0') {
        memcpy(errmsg, prefix, MR_ERRMSG_SIZE);
    } else {
        /* Truncation is fine: the message is for people. */
        size_t n = strlen(prefix);
        memcpy(errmsg, prefix, n);
        if (n + 2 < MR_ERRMSG_SIZE) {
            errmsg[n] = ':';
            errmsg[n + 1] = ' ';
            n += 2;
            size_t rest = strlen(old);
            if (rest > MR_ERRMSG_SIZE - 1 - n) rest = MR_ERRMSG_SIZE - 1 - n;
            memcpy(errmsg + n, old, rest);
            n += rest;
        }
        errmsg[n] = '\0';
    }
}

/* ---- allocator seam ------------------------------------------------------- */
/* Only the test hook is global; production never sets it. Not thread-safe by
 * design: tests that use it drive one thread. */
static unsigned long fail_countdown;
static int fail_repeat;
static long live_allocs;

void mr_alloc_fail_at(unsigned long n, int repeat)
{
    fail_countdown = n;
    fail_repeat = repeat;
}

long mr_alloc_live(void) { return __atomic_load_n(&live_allocs, __ATOMIC_RELAXED); }

static int should_fail(void)
{
    if (fail_countdown == 0) return 0;
    if (fail_countdown == 1) {
        if (!fail_repeat) fail_countdown = 0;
        return 1;
    }
    fail_countdown--;
    return 0;
}

void *mr_malloc(size_t size)
{
    void *p;
    if (should_fail()) return NULL;
    p = malloc(size == 0 ? 1 : size);
    if (p != NULL) __atomic_add_fetch(&live_allocs, 1, __ATOMIC_RELAXED);
    return p;
}

void *mr_calloc(size_t n, size_t size)
{
    void *p;
    if (should_fail()) return NULL;
    p = calloc(n == 0 ? 1 : n, size == 0 ? 1 : size);
    if (p != NULL) __atomic_add_fetch(&live_allocs, 1, __ATOMIC_RELAXED);
    return p;
}

void *mr_realloc(void *ptr, size_t size)
{
    void *p;
    if (ptr == NULL) return mr_malloc(size);
    if (should_fail()) return NULL;
    p = realloc(ptr, size == 0 ? 1 : size);
    return p;
}

void mr_free(void *ptr)
{
    if (ptr == NULL) return;
    __atomic_sub_fetch(&live_allocs, 1, __ATOMIC_RELAXED);
    free(ptr);
}

char *mr_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = mr_malloc(n);
    if (p != NULL) memcpy(p, s, n);
    return p;
}

/* ---- rcbuf ------------------------------------------------------------------ */
struct mr_rcbuf *mr_rcbuf_new(size_t len)
{
    struct mr_rcbuf *b;
    if (len > SIZE_MAX - sizeof *b) return NULL;
    b = mr_malloc(sizeof *b + len);
    if (b == NULL) return NULL;
    b->refs = 1;
    b->pad_ = 0;
    b->len = len;
    return b;
}

struct mr_rcbuf *mr_rcbuf_copy(const void *data, size_t len)
{
    struct mr_rcbuf *b = mr_rcbuf_new(len);
    if (b != NULL && len > 0) memcpy(b->data, data, len);
    return b;
}

struct mr_rcbuf *mr_rcbuf_ref(struct mr_rcbuf *b)
{
    if (b != NULL) __atomic_add_fetch(&b->refs, 1, __ATOMIC_RELAXED);
    return b;
}

void mr_rcbuf_unref(struct mr_rcbuf *b)
{
    if (b == NULL) return;
    MR_ASSERT(__atomic_load_n(&b->refs, __ATOMIC_RELAXED) > 0);
    if (__atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0) mr_free(b);
}

/* ---- PRNG ------------------------------------------------------------------- */
static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void mr_rand_seed(struct mr_rand *r, uint64_t seed)
{
    int i;
    for (i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t mr_rand_next(struct mr_rand *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t mr_rand_below(struct mr_rand *r, uint64_t n)
{
    uint64_t x, lim;
    MR_ASSERT(n > 0);
    lim = UINT64_MAX - UINT64_MAX % n;
    do {
        x = mr_rand_next(r);
    } while (x >= lim);
    return x % n;
}
