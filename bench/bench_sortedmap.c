/* bench_sortedmap: the cost of sortedmap operations at a given size, as kv.lua
 * sees them (random 16-byte keys, 100-byte values):
 *   set   ns per m:set of a new key, at 10k, 400k and 1M entries;
 *   get   ns per m:get of a present key;
 *   bytes allocated through the Lua allocator per entry (after a full
 *         collection), and the same minus the 116 bytes of key and value.
 * Each operation runs inside one command that does B of them; the same loop
 * with the key made but no map call is subtracted. Best of 5.
 * Usage: bench_sortedmap [max entries, default 1000000]. Pin it:
 *   taskset -c 1 build/bench/bench_sortedmap */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lua.h>

#include "sm/sm.h"
#include "sm/sm_int.h"

static const char script[] =
    "local M = {}\n"
    "local m = sortedmap.new()\n"
    "local pack = string.pack\n"
    "local V = ('v'):rep(100)\n"
    "local function mix(z)\n"
    "  z = z + 0x9E3779B97F4A7C15\n"
    "  z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9\n"
    "  z = (z ~ (z >> 27)) * 0x94D049BB133111EB\n"
    "  return z ~ (z >> 31)\n"
    "end\n"
    "local function key(i) return pack('>i8i8', mix(i), mix(i + 0x5bd1e995)) end\n"
    "function M.apply(c)\n"
    "  local op, a, n = c.op, c.a, c.n\n"
    "  if op == 'set' then for i = a, a + n - 1 do m:set(key(i), V) end\n"
    "  elseif op == 'gen' then local k; for i = a, a + n - 1 do k = key(i) end\n"
    "  elseif op == 'rm' then for i = a, a + n - 1 do m:remove(key(i)) end\n"
    "  elseif op == 'get' then\n"
    "    local cnt = #m\n"
    "    for j = a, a + n - 1 do assert(m:get(key(mix(j) % cnt))) end\n"
    "  elseif op == 'genget' then\n"
    "    local cnt, k = #m\n"
    "    for j = a, a + n - 1 do k = key(mix(j) % cnt) end\n"
    "  end\n"
    "  return #m\n"
    "end\n"
    "function M.query() return #m end\n"
    "function M.snapshot() return '' end\n"
    "function M.restore() end\n"
    "return M\n";

static struct mr_sm *sm;
static mr_index idx;

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static double cmd(const char *op, long a, long n)
{
    char buf[128];
    int len = snprintf(buf, sizeof buf, "{\"op\":\"%s\",\"a\":%ld,\"n\":%ld}", op, a, n);
    struct mr_sm_ctx ctx = {.index = ++idx, .term = 1, .time_ms = 0};
    struct mr_sm_result res = {0};
    double t0 = now_ns();
    if (mr_sm_apply(sm, &ctx, buf, (size_t)len, &res) != 0 || res.status != MR_SM_OK) {
        fprintf(stderr, "bench_sortedmap: %s: %s\n", op, res.error ? res.error : "host error");
        exit(1);
    }
    double t = now_ns() - t0;
    mr_sm_result_free(&res);
    return t;
}

static size_t heap_after_gc(void)
{
    lua_gc(mr_sm_vm_get(sm)->L, LUA_GCCOLLECT);
    return mr_sm_memory_used(sm);
}

int main(int argc, char **argv)
{
    long max = argc > 1 ? atol(argv[1]) : 1000000;
    char errmsg[MR_ERRMSG_SIZE];
    struct mr_sm_options o = {.script_source = script,
                              .script_name = "bench_sortedmap.lua",
                              .instruction_budget = 1000000000000000ULL};
    if (mr_sm_open(&sm, &o, errmsg) != 0) {
        fprintf(stderr, "bench_sortedmap: open: %s\n", errmsg);
        return 1;
    }
    size_t base = heap_after_gc();
    long sizes[] = {10000, 400000, 1000000};
    long have = 0;
    for (int s = 0; s < 3 && sizes[s] <= max; s++) {
        long size = sizes[s];
        for (; have < size; have += 50000) cmd("set", have, size - have < 50000 ? size - have : 50000);
        have = size;
        size_t heap = heap_after_gc();
        double per = (double)(heap - base) / (double)size;
        long b = size / 10 < 10000 ? size / 10 : 10000;
        double set = 1e18, get = 1e18;
        for (int r = 0; r < 5; r++) {
            double t = cmd("set", size, b) - cmd("gen", size, b);
            cmd("rm", size, b);
            if (t < set) set = t;
            t = cmd("get", r * b, b) - cmd("genget", r * b, b);
            if (t < get) get = t;
        }
        printf("%8ld entries: set %6.0f ns, get %6.0f ns, %6.1f bytes/entry (%5.1f beyond key+value)\n",
               size, set / b, get / b, per, per - 116);
        fflush(stdout);
    }
    mr_sm_close(sm);
    return 0;
}
