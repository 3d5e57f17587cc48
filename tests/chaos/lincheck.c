/* Linearizability checker: see lincheck.h. */
#include "lincheck.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/util.h"

/* ---- history ------------------------------------------------------------ */

void mr_lc_history_init(struct mr_lc_history *h)
{
    memset(h, 0, sizeof(*h));
}

static void op_free(struct mr_lc_op *op)
{
    mr_free(op->key);
    mr_free(op->arg);
    mr_free(op->expect);
    mr_free(op->value);
}

void mr_lc_history_free(struct mr_lc_history *h)
{
    for (size_t i = 0; i < h->n; i++) op_free(&h->ops[i]);
    mr_free(h->ops);
    memset(h, 0, sizeof(*h));
}

static int dup_opt(char **dst, const char *s)
{
    *dst = NULL;
    if (s == NULL) return 0;
    *dst = mr_strdup(s);
    return *dst ? 0 : MR_ENOMEM;
}

int mr_lc_history_add(struct mr_lc_history *h, const struct mr_lc_op *op)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        struct mr_lc_op *ops = mr_realloc(h->ops, cap * sizeof(*ops));
        if (ops == NULL) return MR_ENOMEM;
        h->ops = ops;
        h->cap = cap;
    }
    struct mr_lc_op c = *op;
    c.key = c.arg = c.expect = c.value = NULL;
    if (dup_opt(&c.key, op->key ? op->key : "") || dup_opt(&c.arg, op->arg) ||
        dup_opt(&c.expect, op->expect) || dup_opt(&c.value, op->value)) {
        op_free(&c);
        return MR_ENOMEM;
    }
    h->ops[h->n++] = c;
    return 0;
}

static const char *nil_or(const char *tok)
{
    return strcmp(tok, "nil") == 0 || strcmp(tok, "-") == 0 ? NULL : tok;
}

int mr_lc_history_parse(struct mr_lc_history *h, const char *text, char *errmsg)
{
    size_t lineno = 0;
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        lineno++;
        char line[1200];
        if (len >= sizeof(line)) {
            mr_errmsg_printf(errmsg, "line %zu: too long", lineno);
            return MR_EINVAL;
        }
        memcpy(line, p, len);
        line[len] = '\0';
        p += len + (nl ? 1 : 0);
        const char *s = line;
        while (*s == ' ' || *s == '\t') s++;
        if (*s == '\0' || *s == '#' || *s == '\r') continue;
        char type[16], key[256], a1[256], a2[256], inv[32], comp[32], out[16], r1[256],
            r2[256];
        int proc;
        if (sscanf(s, "%d %15s %255s %255s %255s %31s %31s %15s %255s %255s", &proc, type,
                   key, a1, a2, inv, comp, out, r1, r2) != 10) {
            mr_errmsg_printf(errmsg, "line %zu: expected 10 fields", lineno);
            return MR_EINVAL;
        }
        struct mr_lc_op op = {.proc = proc, .key = key};
        if (strcmp(type, "read") == 0)
            op.type = MR_LC_READ;
        else if (strcmp(type, "write") == 0)
            op.type = MR_LC_WRITE;
        else if (strcmp(type, "cas") == 0)
            op.type = MR_LC_CAS;
        else {
            mr_errmsg_printf(errmsg, "line %zu: bad op type '%s'", lineno, type);
            return MR_EINVAL;
        }
        if (strcmp(out, "ok") == 0)
            op.outcome = MR_LC_OK;
        else if (strcmp(out, "fail") == 0)
            op.outcome = MR_LC_FAIL;
        else if (strcmp(out, "info") == 0)
            op.outcome = MR_LC_INFO;
        else {
            mr_errmsg_printf(errmsg, "line %zu: bad outcome '%s'", lineno, out);
            return MR_EINVAL;
        }
        char *end;
        errno = 0;
        op.invoke = strtoll(inv, &end, 10);
        if (*end || errno) {
            mr_errmsg_printf(errmsg, "line %zu: bad invoke time", lineno);
            return MR_EINVAL;
        }
        if (strcmp(comp, "inf") == 0)
            op.complete = MR_LC_INF;
        else {
            op.complete = strtoll(comp, &end, 10);
            if (*end || errno || op.complete < op.invoke) {
                mr_errmsg_printf(errmsg, "line %zu: bad complete time", lineno);
                return MR_EINVAL;
            }
        }
        if (op.outcome == MR_LC_INFO) op.complete = MR_LC_INF;
        switch (op.type) {
        case MR_LC_READ:
            op.value = (char *)nil_or(r1);
            break;
        case MR_LC_WRITE:
            op.arg = (char *)nil_or(a1);
            break;
        case MR_LC_CAS:
            op.expect = (char *)nil_or(a1);
            op.arg = (char *)nil_or(a2);
            op.cas_ok = strcmp(r1, "true") == 0;
            if (op.outcome == MR_LC_OK && !op.cas_ok && strcmp(r1, "false") != 0) {
                mr_errmsg_printf(errmsg, "line %zu: cas result must be true|false",
                                 lineno);
                return MR_EINVAL;
            }
            op.has_value = strcmp(r2, "-") != 0;
            op.value = (char *)nil_or(r2);
            break;
        }
        int rc = mr_lc_history_add(h, &op);
        if (rc) return rc;
    }
    return 0;
}

int mr_lc_history_load(struct mr_lc_history *h, const char *path, char *errmsg)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        mr_errmsg_printf(errmsg, "open %s: %s", path, strerror(errno));
        return MR_EIOERR;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = mr_malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += r;
        if (cap - len - 1 == 0) {
            char *nb = mr_realloc(buf, cap * 2);
            if (nb == NULL) {
                mr_free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf == NULL) return MR_ENOMEM;
    buf[len] = '\0';
    int rc = mr_lc_history_parse(h, buf, errmsg);
    mr_free(buf);
    return rc;
}

static const char *tok(const char *s)
{
    return s ? s : "nil";
}

void mr_lc_op_print(FILE *f, const struct mr_lc_op *op)
{
    static const char *types[] = {"read", "write", "cas"};
    static const char *outs[] = {"ok", "fail", "info"};
    char comp[32];
    if (op->complete == MR_LC_INF)
        snprintf(comp, sizeof(comp), "inf");
    else
        snprintf(comp, sizeof(comp), "%lld", (long long)op->complete);
    const char *a1 = "-", *a2 = "-", *r1 = "-", *r2 = "-";
    switch (op->type) {
    case MR_LC_READ:
        if (op->outcome == MR_LC_OK) r1 = tok(op->value);
        break;
    case MR_LC_WRITE:
        a1 = tok(op->arg);
        break;
    case MR_LC_CAS:
        a1 = tok(op->expect);
        a2 = tok(op->arg);
        if (op->outcome == MR_LC_OK) r1 = op->cas_ok ? "true" : "false";
        if (op->has_value) r2 = tok(op->value);
        break;
    }
    fprintf(f, "%d %s %s %s %s %lld %s %s %s %s\n", op->proc, types[op->type], op->key,
            a1, a2, (long long)op->invoke, comp, outs[op->outcome], r1, r2);
}

/* ---- search ------------------------------------------------------------- */

/* Compiled op: values interned to small ints (0 = absent). */
struct cop {
    int type, outcome;
    int arg, expect, value;
    bool cas_ok, has_value;
};

struct event {
    size_t op;
    bool call;
    int64_t t;
    size_t match; /* index of the paired event */
    size_t prev, next;
};

struct intern {
    const char **s;
    size_t n, cap;
};

static int intern_get(struct intern *in, const char *s, int *id)
{
    if (s == NULL) {
        *id = 0;
        return 0;
    }
    for (size_t i = 0; i < in->n; i++)
        if (strcmp(in->s[i], s) == 0) {
            *id = (int)i + 1;
            return 0;
        }
    if (in->n == in->cap) {
        size_t cap = in->cap ? in->cap * 2 : 32;
        const char **ns = mr_realloc(in->s, cap * sizeof(*ns));
        if (ns == NULL) return MR_ENOMEM;
        in->s = ns;
        in->cap = cap;
    }
    in->s[in->n++] = s;
    *id = (int)in->n;
    return 0;
}

/* Applies op to state; returns whether the op's observed result is possible,
 * and sets *next. */
static bool step(const struct cop *op, int state, int *next)
{
    *next = state;
    switch (op->type) {
    case MR_LC_READ:
        return op->outcome == MR_LC_INFO || op->value == state;
    case MR_LC_WRITE:
        *next = op->arg;
        return true;
    default:
        if (op->outcome == MR_LC_INFO) {
            if (state == op->expect) *next = op->arg;
            return true;
        }
        if (op->cas_ok) {
            if (state != op->expect) return false;
            *next = op->arg;
            return true;
        }
        if (state == op->expect) return false;
        return !op->has_value || op->value == state;
    }
}

/* Memo cache: open addressing over (bitset, state). */
struct cache {
    uint64_t *slots; /* cap * (words + 1) ; word 0 of each slot: state+1 (0 = empty) */
    uint64_t *hashes;
    size_t cap, used, words;
};

static uint64_t hash_set(const uint64_t *bits, size_t words, int state)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)(state + 1) * 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < words; i++) {
        h ^= bits[i];
        h *= 1099511628211ull;
        h ^= h >> 29;
    }
    return h;
}

static int cache_grow(struct cache *c)
{
    size_t ncap = c->cap ? c->cap * 2 : 1024;
    size_t sw = c->words + 1;
    uint64_t *ns = mr_calloc(ncap, sw * sizeof(uint64_t));
    uint64_t *nh = mr_calloc(ncap, sizeof(uint64_t));
    if (ns == NULL || nh == NULL) {
        mr_free(ns);
        mr_free(nh);
        return MR_ENOMEM;
    }
    for (size_t i = 0; i < c->cap; i++) {
        uint64_t *slot = c->slots + i * sw;
        if (slot[0] == 0) continue;
        size_t j = c->hashes[i] & (ncap - 1);
        while (ns[j * sw] != 0) j = (j + 1) & (ncap - 1);
        memcpy(ns + j * sw, slot, sw * sizeof(uint64_t));
        nh[j] = c->hashes[i];
    }
    mr_free(c->slots);
    mr_free(c->hashes);
    c->slots = ns;
    c->hashes = nh;
    c->cap = ncap;
    return 0;
}

/* Inserts; *added false if already present. */
static int cache_add(struct cache *c, const uint64_t *bits, int state, bool *added)
{
    if ((c->used + 1) * 2 > c->cap) {
        int rc = cache_grow(c);
        if (rc) return rc;
    }
    size_t sw = c->words + 1;
    uint64_t h = hash_set(bits, c->words, state);
    size_t j = h & (c->cap - 1);
    for (;;) {
        uint64_t *slot = c->slots + j * sw;
        if (slot[0] == 0) break;
        if (c->hashes[j] == h && slot[0] == (uint64_t)state + 1 &&
            memcmp(slot + 1, bits, c->words * sizeof(uint64_t)) == 0) {
            *added = false;
            return 0;
        }
        j = (j + 1) & (c->cap - 1);
    }
    uint64_t *slot = c->slots + j * sw;
    slot[0] = (uint64_t)state + 1;
    memcpy(slot + 1, bits, c->words * sizeof(uint64_t));
    c->hashes[j] = h;
    c->used++;
    *added = true;
    return 0;
}

static int cmp_event(const void *a, const void *b)
{
    const struct event *x = a, *y = b;
    if (x->t != y->t) return x->t < y->t ? -1 : 1;
    /* at equal times calls come first (lenient: the ops are concurrent) */
    if (x->call != y->call) return x->call ? -1 : 1;
    return x->op < y->op ? -1 : x->op > y->op;
}

static int check_subset(const struct mr_lc_op *ops, const size_t *idx, size_t n,
                        bool *lin)
{
    int rc = MR_ENOMEM;
    struct intern in = {0};
    struct cop *cops = mr_calloc(n ? n : 1, sizeof(*cops));
    struct event *ev = mr_calloc(2 * n + 1, sizeof(*ev));
    size_t *pos = mr_calloc(2 * n + 1, sizeof(*pos));
    size_t words = (n + 63) / 64 + 1;
    uint64_t *bits = mr_calloc(words, sizeof(uint64_t));
    struct cache cache = {.words = words};
    struct {
        size_t e;
        int state;
    } *stack = mr_calloc(n + 1, sizeof(*stack));
    if (!cops || !ev || !pos || !bits || !stack) goto out;
    size_t m = 0, ne = 0;
    for (size_t k = 0; k < n; k++) {
        const struct mr_lc_op *o = &ops[idx ? idx[k] : k];
        if (o->outcome == MR_LC_FAIL) continue;
        if (o->type == MR_LC_READ && o->outcome == MR_LC_INFO) continue;
        struct cop *c = &cops[m];
        c->type = (int)o->type;
        c->outcome = (int)o->outcome;
        c->cas_ok = o->cas_ok;
        c->has_value = o->has_value;
        if (intern_get(&in, o->arg, &c->arg) || intern_get(&in, o->expect, &c->expect) ||
            intern_get(&in, o->value, &c->value))
            goto out;
        ev[ne++] = (struct event){.op = m, .call = true, .t = o->invoke};
        ev[ne++] = (struct event){.op = m, .call = false, .t = o->complete};
        m++;
    }
    qsort(ev, ne, sizeof(*ev), cmp_event);
    /* pair calls and returns: pos[2*op + call?0:1] */
    for (size_t i = 0; i < ne; i++) pos[2 * ev[i].op + (ev[i].call ? 0 : 1)] = i + 1;
    /* doubly linked list with head sentinel at index ne (use 1-based: 0 = head) */
    struct event *L = mr_calloc(ne + 1, sizeof(*L));
    if (L == NULL) goto out;
    for (size_t i = 0; i < ne; i++) {
        L[i + 1] = ev[i];
        L[i + 1].match = ev[i].call ? pos[2 * ev[i].op + 1] : pos[2 * ev[i].op];
    }
    for (size_t i = 0; i <= ne; i++) {
        L[i].prev = i == 0 ? ne : i - 1;
        L[i].next = i == ne ? 0 : i + 1;
    }
    /* NIL is 0 (head). */
    int state = 0;
    size_t sp = 0;
    size_t e = L[0].next;
    bool result = true;
    while (L[0].next != 0) {
        if (e == 0) { /* ran off the end: only possible with no return left */
            if (sp == 0) {
                result = false;
                break;
            }
            sp--;
            e = stack[sp].e;
            state = stack[sp].state;
            size_t op = L[e].op;
            bits[op / 64] &= ~(1ull << (op % 64));
            size_t r = L[e].match;
            L[L[r].prev].next = r;
            L[L[r].next].prev = r;
            L[L[e].prev].next = e;
            L[L[e].next].prev = e;
            e = L[e].next;
            continue;
        }
        if (L[e].call) {
            size_t op = L[e].op;
            int next;
            if (step(&cops[op], state, &next)) {
                bits[op / 64] |= 1ull << (op % 64);
                bool added;
                if (cache_add(&cache, bits, next, &added)) {
                    mr_free(L);
                    goto out;
                }
                if (added) {
                    stack[sp].e = e;
                    stack[sp].state = state;
                    sp++;
                    state = next;
                    /* lift e and its return */
                    size_t r = L[e].match;
                    L[L[e].prev].next = L[e].next;
                    L[L[e].next].prev = L[e].prev;
                    L[L[r].prev].next = L[r].next;
                    L[L[r].next].prev = L[r].prev;
                    e = L[0].next;
                    continue;
                }
                bits[op / 64] &= ~(1ull << (op % 64));
            }
            e = L[e].next;
        } else {
            if (sp == 0) {
                result = false;
                break;
            }
            sp--;
            e = stack[sp].e;
            state = stack[sp].state;
            size_t op = L[e].op;
            bits[op / 64] &= ~(1ull << (op % 64));
            size_t r = L[e].match;
            L[L[r].prev].next = r;
            L[L[r].next].prev = r;
            L[L[e].prev].next = e;
            L[L[e].next].prev = e;
            e = L[e].next;
        }
    }
    mr_free(L);
    *lin = result;
    rc = 0;
out:
    mr_free(in.s);
    mr_free(cops);
    mr_free(ev);
    mr_free(pos);
    mr_free(bits);
    mr_free(stack);
    mr_free(cache.slots);
    mr_free(cache.hashes);
    return rc;
}

int mr_lc_check_ops(const struct mr_lc_op *ops, size_t n, bool *linearizable)
{
    return check_subset(ops, NULL, n, linearizable);
}

/* ---- minimisation ------------------------------------------------------- */

static bool eq(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

/* Whether op j observed the value written by op w. */
static bool observes(const struct mr_lc_op *j, const struct mr_lc_op *w)
{
    if (w->type == MR_LC_READ || w->arg == NULL) return false;
    if (j->outcome != MR_LC_OK) return j->type == MR_LC_CAS && eq(j->expect, w->arg);
    if (j->type == MR_LC_READ) return eq(j->value, w->arg);
    if (j->type == MR_LC_CAS)
        return eq(j->expect, w->arg) || (j->has_value && eq(j->value, w->arg));
    return false;
}

static int cmp_invoke_idx_ops;
static const struct mr_lc_op *g_sort_ops;
static int cmp_idx(const void *a, const void *b)
{
    const struct mr_lc_op *x = &g_sort_ops[*(const size_t *)a],
                          *y = &g_sort_ops[*(const size_t *)b];
    (void)cmp_invoke_idx_ops;
    if (x->invoke != y->invoke) return x->invoke < y->invoke ? -1 : 1;
    return 0;
}

int mr_lc_minimise(const struct mr_lc_op *ops, size_t n, size_t **out, size_t *nout)
{
    size_t *idx = mr_calloc(n ? n : 1, sizeof(size_t));
    size_t *tmp = mr_calloc(n ? n : 1, sizeof(size_t));
    if (!idx || !tmp) {
        mr_free(idx);
        mr_free(tmp);
        return MR_ENOMEM;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (ops[i].outcome != MR_LC_FAIL) idx[m++] = i;
    g_sort_ops = ops;
    qsort(idx, m, sizeof(size_t), cmp_idx);
    bool lin;
    int rc = check_subset(ops, idx, m, &lin);
    if (rc || lin) {
        mr_free(idx);
        mr_free(tmp);
        return rc ? rc : MR_EINVAL;
    }
    /* 1. shortest failing prefix (by invocation): binary search, then verify. */
    size_t lo = 1, hi = m;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if ((rc = check_subset(ops, idx, mid, &lin))) goto fail;
        if (!lin)
            hi = mid;
        else
            lo = mid + 1;
    }
    if ((rc = check_subset(ops, idx, hi, &lin))) goto fail;
    if (!lin) m = hi;
    /* 2. greedy one-by-one removal (latest first), keeping writes whose
     * values are observed by a kept op. Bounded to keep it fast. */
    size_t budget = m <= 1000 ? 3000 : 0; /* greedy only on small windows */
    bool changed = true;
    while (changed && budget > 0) {
        changed = false;
        for (size_t k = m; k-- > 0 && budget > 0;) {
            bool needed = false;
            for (size_t j = 0; j < m && !needed; j++)
                if (j != k && observes(&ops[idx[j]], &ops[idx[k]])) needed = true;
            if (needed) continue;
            size_t t = 0;
            for (size_t j = 0; j < m; j++)
                if (j != k) tmp[t++] = idx[j];
            budget--;
            if ((rc = check_subset(ops, tmp, t, &lin))) goto fail;
            if (!lin) {
                memcpy(idx, tmp, t * sizeof(size_t));
                m = t;
                changed = true;
            }
        }
    }
    mr_free(tmp);
    *out = idx;
    *nout = m;
    return 0;
fail:
    mr_free(idx);
    mr_free(tmp);
    return rc;
}

/* ---- whole history ------------------------------------------------------ */

static int cmp_key(const void *a, const void *b)
{
    const struct mr_lc_op *x = &g_sort_ops[*(const size_t *)a],
                          *y = &g_sort_ops[*(const size_t *)b];
    int c = strcmp(x->key, y->key);
    if (c) return c;
    return (*(const size_t *)a > *(const size_t *)b) -
           (*(const size_t *)a < *(const size_t *)b);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int mr_lc_check_history(const struct mr_lc_history *h, FILE *out,
                        struct mr_lc_summary *sum)
{
    double t0 = now_s();
    struct mr_lc_summary s = {.ops = h->n};
    for (size_t i = 0; i < h->n; i++) {
        if (h->ops[i].outcome == MR_LC_OK)
            s.ops_ok++;
        else if (h->ops[i].outcome == MR_LC_FAIL)
            s.ops_fail++;
        else
            s.ops_info++;
    }
    size_t *order = mr_calloc(h->n ? h->n : 1, sizeof(size_t));
    struct mr_lc_op *sub = mr_calloc(h->n ? h->n : 1, sizeof(*sub));
    if (!order || !sub) {
        mr_free(order);
        mr_free(sub);
        return MR_ENOMEM;
    }
    for (size_t i = 0; i < h->n; i++) order[i] = i;
    g_sort_ops = h->ops;
    qsort(order, h->n, sizeof(size_t), cmp_key);
    int rc = 0;
    for (size_t i = 0; i < h->n;) {
        size_t j = i;
        while (j < h->n && strcmp(h->ops[order[j]].key, h->ops[order[i]].key) == 0) j++;
        size_t k = j - i;
        for (size_t q = 0; q < k; q++) sub[q] = h->ops[order[i + q]];
        bool lin;
        double k0 = now_s();
        if ((rc = mr_lc_check_ops(sub, k, &lin))) break;
        s.keys++;
        if (out)
            fprintf(out, "key %s: %zu ops: %s (%.3f s)\n", sub[0].key, k,
                    lin ? "linearizable" : "NOT LINEARIZABLE", now_s() - k0);
        if (!lin) {
            s.bad_keys++;
            size_t *w, nw;
            if (out && mr_lc_minimise(sub, k, &w, &nw) == 0) {
                fprintf(out,
                        "  smallest failing window for key %s (%zu ops; times in ns "
                        "relative to first invoke):\n",
                        sub[0].key, nw);
                g_sort_ops = sub;
                qsort(w, nw, sizeof(size_t), cmp_idx);
                int64_t base = nw ? sub[w[0]].invoke : 0;
                for (size_t q = 0; q < nw; q++) {
                    struct mr_lc_op o = sub[w[q]];
                    o.invoke -= base;
                    if (o.complete != MR_LC_INF) o.complete -= base;
                    fprintf(out, "    ");
                    mr_lc_op_print(out, &o);
                }
                mr_free(w);
                g_sort_ops = h->ops;
            }
        }
        i = j;
    }
    mr_free(order);
    mr_free(sub);
    s.seconds = now_s() - t0;
    if (sum) *sum = s;
    return rc;
}
