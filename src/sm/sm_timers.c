/* Timers: the deadlines scripts ask to be woken at (ctx.wake_at), kept as
 * replicated state of the state machine.
 *
 * The set lives in struct mr_sm (it survives the vm swap of a restore) as a
 * sorted array of distinct int64 ms. ctx.wake_at stages into the vm during a
 * call; sm.c merges the staged values only when the call succeeds, so a
 * command that fails leaves no deadline behind (its other mutations stay, as
 * documented in sm.h: a deadline is host state and costs nothing to drop).
 *
 * Snapshot encoding (mr_sm_deadlines_encode):
 *   u32 count | u32 reserved (0) | count * u64 (int64 two's complement)
 * strictly ascending as signed values, count <= MR_SM_MAX_DEADLINES. */
#include <string.h>

#include <lauxlib.h>

#include "sm/sm_int.h"

#define DEADLINES_HDR 8

int mr_sm_deadlines_find(const struct mr_sm_deadlines *d, int64_t ms, size_t *pos)
{
    size_t lo = 0, hi = d->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (d->v[mid] < ms)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (pos != NULL) *pos = lo;
    return lo < d->n && d->v[lo] == ms;
}

static int reserve(struct mr_sm_deadlines *d, size_t want)
{
    if (want <= d->cap) return 0;
    size_t cap = d->cap ? d->cap * 2 : 8;
    while (cap < want) cap *= 2;
    int64_t *v = mr_realloc(d->v, cap * sizeof *v);
    if (v == NULL) return MR_ENOMEM;
    d->v = v;
    d->cap = cap;
    return 0;
}

int mr_sm_deadlines_insert_at(struct mr_sm_deadlines *d, size_t pos, int64_t ms)
{
    MR_ASSERT(pos <= d->n);
    if (reserve(d, d->n + 1) != 0) return MR_ENOMEM;
    memmove(d->v + pos + 1, d->v + pos, (d->n - pos) * sizeof *d->v);
    d->v[pos] = ms;
    d->n++;
    return 0;
}

int mr_sm_deadlines_merge(struct mr_sm_deadlines *dst, const struct mr_sm_deadlines *src)
{
    if (src->n == 0) return 0;
    size_t cap = dst->n + src->n, i = 0, j = 0, k = 0;
    int64_t *v = mr_malloc(cap * sizeof *v);
    if (v == NULL) return MR_ENOMEM;
    while (i < dst->n || j < src->n) {
        int64_t x;
        if (j >= src->n || (i < dst->n && dst->v[i] < src->v[j]))
            x = dst->v[i++];
        else if (i >= dst->n || src->v[j] < dst->v[i])
            x = src->v[j++];
        else {
            x = dst->v[i++];
            j++;
        }
        v[k++] = x;
    }
    mr_free(dst->v);
    dst->v = v;
    dst->n = k;
    dst->cap = cap;
    return 0;
}

size_t mr_sm_deadlines_pop_due(struct mr_sm_deadlines *d, int64_t ms)
{
    size_t k = 0;
    while (k < d->n && d->v[k] <= ms) k++;
    if (k > 0) {
        memmove(d->v, d->v + k, (d->n - k) * sizeof *d->v);
        d->n -= k;
    }
    return k;
}

void mr_sm_deadlines_free(struct mr_sm_deadlines *d)
{
    mr_free(d->v);
    memset(d, 0, sizeof *d);
}

/* ctx.wake_at(ms): asks for a tick at ctx.time >= ms. */
static int l_wake_at(lua_State *L)
{
    struct mr_sm_vm *vm = mr_sm_vm_of(L);
    int isint = 0;
    lua_Integer ms;
    if (!vm->in_apply || vm->committed == NULL)
        return luaL_error(L, "ctx.wake_at is only available during apply and tick");
    if (vm->ref_tick == LUA_NOREF)
        return luaL_error(L, "ctx.wake_at: the script defines no tick(ctx) function to wake");
    ms = lua_type(L, 1) == LUA_TNUMBER ? lua_tointegerx(L, 1, &isint) : 0;
    if (!isint)
        return luaL_error(L, "ctx.wake_at: ms must be an integer (milliseconds, as ctx.time), "
                             "got %s",
                          lua_type(L, 1) == LUA_TNUMBER ? "a float" : luaL_typename(L, 1));
    size_t pos;
    if (mr_sm_deadlines_find(vm->committed, (int64_t)ms, NULL) ||
        mr_sm_deadlines_find(&vm->staged, (int64_t)ms, &pos)) {
        mr_sm_charge(L, 1);
        return 0;
    }
    if (vm->committed->n + vm->staged.n >= MR_SM_MAX_DEADLINES)
        return luaL_error(L, "ctx.wake_at: too many pending deadlines (at most %d)",
                          MR_SM_MAX_DEADLINES);
    /* The memmove is work the count hook cannot see: charge it (one unit
     * per 8 values moved, i.e. per 64 bytes, as for strings). */
    mr_sm_charge(L, 1 + (uint64_t)(vm->staged.n - pos) / 8);
    if (mr_sm_deadlines_insert_at(&vm->staged, pos, (int64_t)ms) != 0) {
        vm->timer_nomem = 1;
        return luaL_error(L, "ctx.wake_at: out of memory");
    }
    return 0;
}

lua_CFunction mr_sm_fn_wake_at(void)
{
    return l_wake_at;
}

/* ---- the sm-level API (sm.h) ----------------------------------------------------- */

int64_t mr_sm_next_deadline(struct mr_sm *sm)
{
    const struct mr_sm_deadlines *d = mr_sm_deadlines_of(sm);
    return d->n > 0 ? d->v[0] : INT64_MAX;
}

size_t mr_sm_deadline_count(struct mr_sm *sm)
{
    return mr_sm_deadlines_of(sm)->n;
}

size_t mr_sm_deadlines_encode(struct mr_sm *sm, unsigned char *out)
{
    const struct mr_sm_deadlines *d = mr_sm_deadlines_of(sm);
    if (out != NULL) {
        mr_put_u32(out, (uint32_t)d->n);
        mr_put_u32(out + 4, 0);
        for (size_t i = 0; i < d->n; i++)
            mr_put_u64(out + DEADLINES_HDR + 8 * i, (uint64_t)d->v[i]);
    }
    return DEADLINES_HDR + 8 * d->n;
}

int mr_sm_deadlines_check(const unsigned char *p, size_t len, char *errmsg)
{
    uint32_t count;
    if (len < DEADLINES_HDR || mr_get_u32(p + 4) != 0) {
        mr_errmsg_printf(errmsg, "deadlines: malformed header");
        return MR_EMALFORMED;
    }
    count = mr_get_u32(p);
    if (count > MR_SM_MAX_DEADLINES || len != DEADLINES_HDR + 8 * (size_t)count) {
        mr_errmsg_printf(errmsg, "deadlines: bad count %u for %zu bytes", count, len);
        return MR_EMALFORMED;
    }
    for (uint32_t i = 1; i < count; i++) {
        int64_t a = (int64_t)mr_get_u64(p + DEADLINES_HDR + 8 * (size_t)(i - 1));
        int64_t b = (int64_t)mr_get_u64(p + DEADLINES_HDR + 8 * (size_t)i);
        if (a >= b) {
            mr_errmsg_printf(errmsg, "deadlines: not strictly ascending at %u", i);
            return MR_EMALFORMED;
        }
    }
    return 0;
}

int mr_sm_deadlines_restore(struct mr_sm *sm, const unsigned char *p, size_t len,
                            char *errmsg)
{
    struct mr_sm_deadlines *d = mr_sm_deadlines_of(sm), fresh = {0};
    if (p == NULL || len == 0) {
        d->n = 0;
        return 0;
    }
    int rv = mr_sm_deadlines_check(p, len, errmsg);
    if (rv != 0) return rv;
    uint32_t count = mr_get_u32(p);
    if (count > 0 && reserve(&fresh, count) != 0) {
        mr_errmsg_printf(errmsg, "deadlines: out of memory");
        return MR_ENOMEM;
    }
    for (uint32_t i = 0; i < count; i++)
        fresh.v[i] = (int64_t)mr_get_u64(p + DEADLINES_HDR + 8 * (size_t)i);
    fresh.n = count;
    mr_sm_deadlines_free(d);
    *d = fresh;
    return 0;
}
