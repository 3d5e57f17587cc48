/* Unit tests for sortedmap (src/sm/sm_sortedmap.c), driven from scripts in
 * the sandbox through the probe fixture. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sm/sm.h"
#include "sm_eval.h"

#define PROBE MR_SOURCE_DIR "/tests/unit/fixtures/sm_probe.lua"

static struct mr_sm *open_probe(uint64_t memlimit)
{
    struct mr_sm *sm = NULL;
    char errmsg[MR_ERRMSG_SIZE] = "";
    struct mr_sm_options o = {.script_path = PROBE, .memory_limit_bytes = memlimit};
    if (mr_sm_open(&sm, &o, errmsg) != 0) fail_msg("open: %s", errmsg);
    return sm;
}


/* Lua helpers defined in every chunk that needs them. */
#define HEX                                                                              \
    "local function hex(s) return (s:gsub('.', function(c)"                              \
    " return ('%02x'):format(c:byte()) end)) end\n"
#define SAME                                                                             \
    "local function same(a, b)\n"                                                        \
    "  if #a ~= #b then return false end\n"                                              \
    "  for i = 1, #a do if a[i] ~= b[i] then return false end end\n"                     \
    "  return true\n"                                                                    \
    "end\n"

static void test_sortedmap_sets_gets_and_lists_in_bytewise_order(void **state)
{
    (void)state;
    struct mr_sm *sm = open_probe(0);
    expect_eval_at(
        sm, 1,
        "local m = sortedmap.new()\n"
        "local r = {m:set('b', '2'), m:set('a', '1'), m:set('b', 'two'),"
        " m:set('\\195\\191', 'y'), m:set('a\\0', 'z'), m:set('', 'e'),"
        " m:count(), #m, m:has('a'), m:has('c'), m:get('b'), m:get('c') == nil,"
        " m:get('a\\0')}\n"
        "r[#r + 1] = m:range()\n"
        "r[#r + 1] = m:range('a')\n"
        "r[#r + 1] = m:range('', 2, 'a')\n"
        "r[#r + 1] = m:range('a', 10, '0')\n"
        "r[#r + 1] = m:range('zz')\n"
        "r[#r + 1] = m:range('', 0)\n"
        "local k, v = m:items('a')\n"
        "r[#r + 1] = k; r[#r + 1] = v\n"
        "k, v = m:items('', 3, 'a')\n"
        "r[#r + 1] = k; r[#r + 1] = v\n"
        "k, v = m:items('q')\n"
        "r[#r + 1] = k; r[#r + 1] = v\n"
        "r[#r + 1] = m:remove('a')\n"
        "r[#r + 1] = m:remove('a')\n"
        "r[#r + 1] = m:range()\n"
        "r[#r + 1] = getmetatable(m)\n"
        "r[#r + 1] = pcall(m.set, m, 'k', {})\n"
        "r[#r + 1] = pcall(m.range, m, '', -1)\n"
        "return r",
        "[true,true,false,true,true,true,5,5,true,false,\"two\",true,\"z\","
        "[\"\",\"a\",\"a\\u0000\",\"b\",\"\xc3\xbf\"],"
        "[\"a\",\"a\\u0000\"],[\"a\\u0000\",\"b\"],[\"a\",\"a\\u0000\"],[],[],"
        "[\"a\",\"a\\u0000\"],[\"1\",\"z\"],"
        "[\"a\\u0000\",\"b\",\"\xc3\xbf\"],[\"z\",\"two\",\"y\"],[],[],"
        "true,false,[\"\",\"a\\u0000\",\"b\",\"\xc3\xbf\"],\"sortedmap\",false,false]");
    mr_sm_close(sm);
}

static void test_sortedmap_agrees_with_a_table_after_random_changes(void **state)
{
    (void)state;
    struct mr_sm *sm = open_probe(0);
    /* math.random is seeded from the entry: the same operations every run.
     * Keys share prefixes and carry \0 and bytes >= 0x80; values change size
     * (the node is reallocated in place) and may be empty. */
    expect_eval_at(
        sm, 7,
        SAME
        "local m, mirror = sortedmap.new(), {}\n"
        "local bytes = {'a', 'b', '\\0', '\\255', '\\128', 'a\\0'}\n"
        "local function key()\n"
        "  local t = {}\n"
        "  for i = 1, math.random(0, 4) do t[i] = bytes[math.random(#bytes)] end\n"
        "  return table.concat(t)\n"
        "end\n"
        "for i = 1, 30000 do\n"
        "  local k, r = key(), math.random()\n"
        "  if r < 0.3 then\n"
        "    assert(m:remove(k) == (mirror[k] ~= nil)); mirror[k] = nil\n"
        "  elseif r < 0.7 then\n"
        "    local v = ('v'):rep(math.random(0, 40)) .. i\n"
        "    if math.random() < 0.1 then v = '' end\n"
        "    assert(m:set(k, v) == (mirror[k] == nil)); mirror[k] = v\n"
        "  else\n"
        "    assert(m:get(k) == mirror[k]); assert(m:has(k) == (mirror[k] ~= nil))\n"
        "  end\n"
        "  if i % 1000 == 0 then\n"
        "    local n = 0\n"
        "    for _ in pairs(mirror) do n = n + 1 end\n"
        "    assert(m:count() == n and #m == n)\n"
        "    local p, a = key(), key()\n"
        "    local lim = math.random(0, 50)\n"
        "    local want = canonical.keys(mirror, p, lim, a)\n"
        "    local ks, vs = m:items(p, lim, a)\n"
        "    assert(same(ks, want) and same(m:range(p, lim, a), want))\n"
        "    for j = 1, #ks do assert(vs[j] == mirror[ks[j]]) end\n"
        "    assert(same(m:range(p), canonical.keys(mirror, p)))\n"
        "    assert(same(m:range(), canonical.keys(mirror)))\n"
        "    assert(same(m:range('', nil, a), canonical.keys(mirror, '', nil, a)))\n"
        "  end\n"
        "end\n"
        "local back = sortedmap.load(m:dump())\n"
        "local ks, vs = back:items()\n"
        "assert(same(ks, canonical.keys(mirror)))\n"
        "for j = 1, #ks do assert(vs[j] == mirror[ks[j]]) end\n"
        "return {m:count() > 100, back:count() == m:count(), back:dump() == m:dump()}",
        "[true,true,true]");
    mr_sm_close(sm);
}

static void test_sortedmap_dump_has_the_documented_layout(void **state)
{
    (void)state;
    struct mr_sm *sm = open_probe(0);
    expect_eval_at(
        sm, 1,
        HEX "local m = sortedmap.new()\n"
            "m:set('bc', ''); m:set('a', '1'); m:set('z', ('x'):rep(200))\n"
            "local d = m:dump('hd')\n"
            "return {hex(d:sub(1, 31)), #d, hex(d:sub(32, 35)),"
            " hex(sortedmap.new():dump()),"
            " sortedmap.load(d, 3):count(), sortedmap.load(d:sub(3)):dump() == d:sub(3)}",
        "[\"68644d52534d0100000003000000000000000101613102006263"
        "01c8017a78\","
        "230,\"78787878\",\"4d52534d010000000000000000000000\",3,true]");
    mr_sm_close(sm);
}

static void test_sortedmap_same_content_dumps_the_same_bytes_in_every_vm(void **state)
{
    (void)state;
    /* Two vms, the same final content reached by different operations (and
     * so by differently shaped lists): the dumps are identical. */
    struct mr_sm *a = open_probe(0), *b = open_probe(0);
    const char *fill_a =
        HEX "local m = sortedmap.new()\n"
            "for i = 1, 3000 do m:set(('k%05d'):format(i), 'v' .. i) end\n"
            "return hex(m:dump())";
    const char *fill_b =
        HEX "local m = sortedmap.new()\n"
            "for i = 1, 2000 do m:set('junk' .. i, 'x') end\n"
            "for i = 3000, 1, -1 do m:set(('k%05d'):format(i), 'old') end\n"
            "for i = 1, 2000 do m:remove('junk' .. i) end\n"
            "for i = 1, 3000 do m:set(('k%05d'):format(i), 'v' .. i) end\n"
            "return hex(m:dump())";
    struct mr_sm_result ra = {0}, rb = {0};
    assert_int_equal(eval_at(a, 1, fill_a, &ra), MR_SM_OK);
    assert_int_equal(eval_at(b, 99, fill_b, &rb), MR_SM_OK);
    assert_true(ra.json_len > 3000 * 2 * 8);
    assert_int_equal(ra.json_len, rb.json_len);
    assert_memory_equal(ra.json, rb.json, ra.json_len);
    mr_sm_result_free(&ra);
    mr_sm_result_free(&rb);
    mr_sm_close(a);
    mr_sm_close(b);
}

static void test_sortedmap_load_rejects_every_malformed_dump(void **state)
{
    (void)state;
    struct mr_sm *sm = open_probe(0);
    /* d: a valid dump; every proper prefix of it, every change below, must
     * raise (and leave nothing behind: ASan checks the partial maps go). */
    expect_eval_at(
        sm, 1,
        "local m = sortedmap.new()\n"
        "m:set('a', '1'); m:set('ab', ''); m:set('b', ('v'):rep(130)); m:set('c', 'x')\n"
        "local d = m:dump()\n"
        "local function err(s, init)\n"
        "  local ok, e = pcall(sortedmap.load, s, init)\n"
        "  if ok then return 'accepted' end\n"
        "  return (e:gsub('^.-sortedmap.load: ', ''))\n"
        "end\n"
        "for i = 0, #d - 1 do assert(err(d:sub(1, i)) ~= 'accepted', i) end\n"
        "local function entry(k, v) return string.char(#k, #v) .. k .. v end\n"
        "local function dump(n, ...)\n"
        "  return 'MRSM\\1\\0\\0\\0' .. string.pack('<I8', n) .. table.concat({...})\n"
        "end\n"
        "assert(sortedmap.load(dump(2, entry('a', '1'), entry('b', '2'))):count() == 2)\n"
        "return {\n"
        "  err(d .. 'x'),\n"
        "  err(dump(2, entry('b', '1'), entry('a', '2'))),\n"
        "  err(dump(2, entry('a', '1'), entry('a', '2'))),\n"
        "  err(dump(3, entry('a', '1'), entry('b', '2'))),\n"
        "  err(dump(1, entry('a', '1'), entry('b', '2'))),\n"
        "  err(dump(0) .. '\\0'),\n"
        "  err('XRSM' .. d:sub(5)),\n"
        "  err('MRSM\\2' .. d:sub(6)),\n"
        "  err(dump(1, '\\129\\0\\0a')),\n"
        "  err(dump(1, '\\255\\255\\255\\255\\31\\0')),\n"
        "  err(dump(1, '\\1\\5a1')),\n"
        "  err(d:sub(1, 21)),\n"
        "  err(''),\n"
        "  err(d, 0), err(d, #d + 2),\n"
        "  err('hd' .. d, 2), sortedmap.load('hd' .. d, 3):count(),\n"
        "  sortedmap.load(dump(0), 1):count(),\n"
        "}",
        "[\"trailing bytes after the last entry (entry 4)\","
        "\"keys not in strictly increasing order (entry 1)\","
        "\"keys not in strictly increasing order (entry 1)\","
        "\"count mismatch (header says 3, found 2)\","
        "\"trailing bytes after the last entry (entry 1)\","
        "\"trailing bytes after the last entry (entry 0)\","
        "\"not a sortedmap dump (bad magic)\","
        "\"unsupported dump version 2\","
        "\"bad or truncated length (entry 0)\","
        "\"bad or truncated length (entry 0)\","
        "\"truncated (entry 0)\","
        "\"bad or truncated length (entry 1)\","
        "\"not a sortedmap dump (bad magic)\","
        "\"bad argument #2 to '?' (init out of range)\","
        "\"bad argument #2 to '?' (init out of range)\","
        "\"not a sortedmap dump (bad magic)\",4,0]");
    mr_sm_close(sm);
}

static void test_sortedmap_memory_counts_against_the_heap_cap(void **state)
{
    (void)state;
    struct mr_sm *sm = open_probe(8u << 20);
    /* ~2 MiB of entries and a 3.5 MiB string (made by a concatenation:
     * string.rep would need twice that for a moment): one more copy of the
     * string does not fit */
    /* (two commands: the undo journal of the 15000 sets, which lives as
     * long as its command, would not leave room for the string) */
    expect_eval_at(
        sm, 1,
        "probe.m = sortedmap.new()\n"
        "for i = 1, 15000 do probe.m:set(('k%06d'):format(i), ('v'):rep(100)) end\n"
        "return #probe.m",
        "15000");
    expect_eval_at(
        sm, 1,
        "local half = ('x'):rep(1750000)\n"
        "probe.v = half .. half\n"
        "return #probe.m",
        "15000");
    /* set of a new key, and growing a value in place: refused, map unchanged */
    expect_eval_error(sm, "probe.m:set('new', probe.v)", MR_SM_MEMORY_EXCEEDED,
                      "not enough memory");
    expect_eval_error(sm, "probe.m:set('k000001', probe.v)", MR_SM_MEMORY_EXCEEDED,
                      "not enough memory");
    expect_eval_at(
        sm, 2,
        "return {#probe.m, probe.m:has('new'), probe.m:get('k000001') == ('v'):rep(100),"
        " probe.m:set('k000001', 'small'), probe.m:get('k000001')}",
        "[15000,false,true,false,\"small\"]");
    /* load: the dump plus a second copy of the map do not fit */
    expect_eval_at(sm, 3, "probe.d = probe.m:dump(); return #probe.d > 1500000", "true");
    expect_eval_error(sm, "probe.copy = sortedmap.load(probe.d)", MR_SM_MEMORY_EXCEEDED,
                      "not enough memory");
    /* the vm goes on; dead maps are collected when the cap is reached (the
     * collector cannot see their size), so loading and dropping copies in a
     * row works */
    /* (the string is dropped by a command of its own: the undo journal
     * keeps what a command replaces until the command ends) */
    expect_eval_at(sm, 4, "probe.v = nil; return true", "true");
    expect_eval_at(sm, 4,
                "local n = 0\n"
                "for i = 1, 6 do n = n + sortedmap.load(probe.d):count() end\n"
                "return {n, probe.copy == nil}",
                "[90000,true]");
    mr_sm_close(sm);
}

static void test_sortedmap_work_is_charged_to_the_budget(void **state)
{
    (void)state;
    struct mr_sm *sm = NULL;
    char errmsg[MR_ERRMSG_SIZE];
    struct mr_sm_options o = {.script_path = PROBE, .instruction_budget = 3000000};
    assert_int_equal(mr_sm_open(&sm, &o, errmsg), 0);
    /* Few instructions, much work in C. Many small entries, so that the work
     * is per entry (charged here) rather than per byte of string built
     * (charged by the allocator anyway). */
    expect_eval_at(sm, 1,
                "probe.m = sortedmap.new()\n"
                "for i = 1, 50000 do probe.m:set(('k%06d'):format(i), '') end\n"
                "return #probe.m",
                "50000");
    expect_eval_error(sm, "for i = 1, 100 do probe.m:dump() end", MR_SM_BUDGET_EXCEEDED,
                      "instruction budget");
    expect_eval_error(sm,
                      "local d = probe.m:dump(); for i = 1, 100 do sortedmap.load(d) end",
                      MR_SM_BUDGET_EXCEEDED, "instruction budget");
    expect_eval_error(sm, "for i = 1, 100 do probe.m:items() end", MR_SM_BUDGET_EXCEEDED,
                      "instruction budget");
    mr_sm_close(sm);
}

/* The reference: check(m, mirror) compares everything a map shows with a
 * sorted array of the mirror's keys: count, range and items from the start
 * and from keys on and next to leaf boundaries (positions near multiples of
 * 32 and 64, the B+tree's half and full node), prefixes, limits, and the
 * dump byte for byte against one built here from the array. The helpers
 * are kept in probe, so that the work is spread over commands (each has its
 * instruction budget). */
static const char check_lua[] =
    SAME
    "local function varint(n)\n"
    "  local t = {}\n"
    "  repeat local b = n % 128; n = n // 128\n"
    "    t[#t + 1] = string.char(n > 0 and b + 128 or b) until n == 0\n"
    "  return table.concat(t)\n"
    "end\n"
    "local function want(keys, prefix, lim, after)\n"
    "  local lo, hi = 1, #keys + 1\n"
    "  local from = (after and after >= prefix) and after or prefix\n"
    "  while lo < hi do\n"
    "    local mid = (lo + hi) // 2\n"
    "    if keys[mid] < from or (after and keys[mid] == after) then lo = mid + 1 else hi = mid end\n"
    "  end\n"
    "  local r = {}\n"
    "  for i = lo, #keys do\n"
    "    if #r >= lim or keys[i]:sub(1, #prefix) ~= prefix then break end\n"
    "    r[#r + 1] = keys[i]\n"
    "  end\n"
    "  return r\n"
    "end\n"
    "local function check(m, mirror)\n"
    "  local keys = canonical.keys(mirror)\n"
    "  assert(m:count() == #keys and #m == #keys)\n"
    "  assert(same(m:range(), keys))\n"
    "  local d = {'MRSM\\1\\0\\0\\0', string.pack('<I8', #keys)}\n"
    "  for i, k in ipairs(keys) do\n"
    "    d[#d + 1] = varint(#k) .. varint(#mirror[k]) .. k .. mirror[k]\n"
    "  end\n"
    "  local dump = m:dump()\n"
    "  assert(dump == table.concat(d), 'dump bytes')\n"
    "  assert(sortedmap.load(dump):dump() == dump)\n"
    "  for _, j in ipairs({1, 31, 32, 33, 63, 64, 65, 129, #keys - 1, #keys, #keys // 2}) do\n"
    "    local a = keys[j]\n"
    "    if a then\n"
    "      for _, lim in ipairs({0, 1, 32, 33, 65, 1000}) do\n"
    "        local w = want(keys, '', lim, a)\n"
    "        local ks, vs = m:items('', lim, a)\n"
    "        assert(same(ks, w) and same(m:range('', lim, a), w), 'range after')\n"
    "        for i = 1, #ks do assert(vs[i] == mirror[ks[i]]) end\n"
    "        assert(same(m:range(a:sub(1, 3), lim, a), want(keys, a:sub(1, 3), lim, a)))\n"
    "        assert(same(m:range(a:sub(1, 4), lim), want(keys, a:sub(1, 4), lim)))\n"
    "      end\n"
    "      assert(m:get(a) == mirror[a] and m:has(a))\n"
    "      assert(m:has(a .. '\\0') == (mirror[a .. '\\0'] ~= nil))\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local function kasc(i) return ('%06d'):format(i) end\n"
    "local function klong(i) return 'longkey:' .. ('%05d'):format(i * 7 % 10007) end\n"
    "local function shuffle(t)\n"
    "  for i = #t, 2, -1 do local j = math.random(i); t[i], t[j] = t[j], t[i] end\n"
    "end\n"
    "-- fills a map with n keys in an order; keeps it in probe\n"
    "function probe.fill(kf, order, n, every)\n"
    "  local keyf = kf == 'long' and klong or kasc\n"
    "  local m, mirror, idx = sortedmap.new(), {}, {}\n"
    "  for i = 1, n do idx[i] = order == 'desc' and n + 1 - i or i end\n"
    "  if order == 'rand' then shuffle(idx) end\n"
    "  for s = 1, n do\n"
    "    local k, v = keyf(idx[s]), ('v'):rep(s % 7) .. s\n"
    "    assert(m:set(k, v) == true); mirror[k] = v\n"
    "    if s % every == 0 then check(m, mirror) end\n"
    "  end\n"
    "  check(m, mirror)\n"
    "  for s = 1, n, 3 do\n"
    "    local k, v = keyf(idx[s]), ('w'):rep(s % 150)\n"
    "    assert(m:set(k, v) == false); mirror[k] = v\n"
    "  end\n"
    "  check(m, mirror)\n"
    "  probe.m, probe.mirror = m, mirror\n"
    "  return #m\n"
    "end\n"
    "-- removes everything from a copy of probe.m (loaded from its dump, so\n"
    "-- from full leaves), in an order\n"
    "function probe.drain(order, every)\n"
    "  local m, mirror = sortedmap.load(probe.m:dump()), {}\n"
    "  for k, v in pairs(probe.mirror) do mirror[k] = v end\n"
    "  local ks = canonical.keys(mirror)\n"
    "  if order == 'desc' then\n"
    "    for i = 1, #ks // 2 do ks[i], ks[#ks + 1 - i] = ks[#ks + 1 - i], ks[i] end\n"
    "  end\n"
    "  if order == 'rand' then shuffle(ks) end\n"
    "  for i, k in ipairs(ks) do\n"
    "    assert(m:remove(k) == true); assert(m:remove(k) == false); mirror[k] = nil\n"
    "    if i % every == 0 then check(m, mirror) end\n"
    "  end\n"
    "  check(m, mirror)\n"
    "  assert(m:set('again', 'x') and m:get('again') == 'x' and #m == 1)\n"
    "  -- and half of probe.m itself (built by sets)\n"
    "  ks = canonical.keys(probe.mirror)\n"
    "  shuffle(ks)\n"
    "  for i = 1, #ks // 2 do\n"
    "    assert(probe.m:remove(ks[i])); probe.mirror[ks[i]] = nil\n"
    "    if i % every == 0 then check(probe.m, probe.mirror) end\n"
    "  end\n"
    "  check(probe.m, probe.mirror)\n"
    "  return true\n"
    "end\n"
    "-- n random sets and removes over a small key space, phases of more\n"
    "-- sets and of more removes: nodes split and merge over and over\n"
    "function probe.mixed(n, every)\n"
    "  local m, mirror = sortedmap.new(), {}\n"
    "  for i = 1, n do\n"
    "    local k = ('%04d'):format(math.random(0, 1500))\n"
    "    if math.random() < (i % 4000 < 2000 and 0.3 or 0.7) then\n"
    "      assert(m:remove(k) == (mirror[k] ~= nil)); mirror[k] = nil\n"
    "    else\n"
    "      local v = ('x'):rep(math.random(0, 200))\n"
    "      assert(m:set(k, v) == (mirror[k] == nil)); mirror[k] = v\n"
    "    end\n"
    "    if i % every == 0 then check(m, mirror) end\n"
    "  end\n"
    "  check(m, mirror)\n"
    "  return n\n"
    "end\n"
    "return true";

static void test_sortedmap_agrees_with_a_sorted_array_through_splits_and_merges(void **state)
{
    (void)state;
    struct mr_sm *sm = open_probe(0);
    expect_eval_at(sm, 3, check_lua, "true");
    /* Orders that stress node splits and merges: ascending (appends: left
     * nodes stay full), descending, random; short keys and keys longer than
     * the 8-byte prefix kept in the leaves and equal in it; then removal of
     * everything in ascending, descending and random order, with checks
     * all along. Tiny maps (one leaf, growing) are checked after every
     * operation. */
    const char *kinds[] = {"asc", "long"}, *orders[] = {"asc", "desc", "rand"};
    char code[160];
    mr_index at = 10;
    for (int k = 0; k < 2; k++) {
        for (int o = 0; o < 3; o++) {
            for (int small = 0; small < 2; small++) {
                int n = small ? 150 : 2500, every = small ? 7 : 833;
                snprintf(code, sizeof code, "return probe.fill('%s', '%s', %d, %d)", kinds[k],
                         orders[o], n, every);
                char want[16];
                snprintf(want, sizeof want, "%d", n);
                expect_eval_at(sm, at++, code, want);
                for (int r = 0; r < 3; r++) {
                    snprintf(code, sizeof code, "return probe.drain('%s', %d)", orders[r],
                             every);
                    expect_eval_at(sm, at++, code, "true");
                }
            }
        }
    }
    for (int i = 0; i < 4; i++) expect_eval_at(sm, at++, "return probe.mixed(8000, 997)", "8000");
    mr_sm_close(sm);
}

static void test_sortedset_from_builds_the_same_set_as_adds(void **state)
{
    (void)state;
    struct mr_sm *sm = open_probe(0);
    expect_eval_at(sm, 5,
                   SAME "for _, n in ipairs({0, 1, 2, 63, 64, 65, 4095, 4096, 4097}) do\n"
                        "  local t = {}\n"
                        "  for i = 1, n do t[('k%05d'):format(math.random(0, 99999))] = true end\n"
                        "  local f, s = sortedset.from(t), sortedset.new()\n"
                        "  for k in pairs(t) do s:add(k) end\n"
                        "  assert(same(f:range(), s:range()) and same(f:range(), canonical.keys(t)))\n"
                        "  for k in pairs(t) do assert(f:remove(k)) end\n"
                        "  assert(f:count() == 0 and #f:range() == 0)\n"
                        "end\n"
                        "return true",
                   "true");
    mr_sm_close(sm);
}

/* Applies code; returns its status (the result is dropped). */
static int try_eval(struct mr_sm *sm, const char *code)
{
    struct mr_sm_result res = {0};
    int st = eval_at(sm, 1, code, &res);
    mr_sm_result_free(&res);
    return st;
}

static void test_sortedmap_set_refused_during_a_split_leaves_the_map_as_it_was(void **state)
{
    (void)state;
    struct mr_sm *sm = open_probe(4u << 20);
    /* Ascending keys: every leaf is full, so a key in the middle splits a
     * leaf (and its parents when they are full). The heap is filled with
     * padding a few bytes shorter each round: at some point the set
     * is refused at the largest allocation it makes (the node reserved for
     * the split), then a few rounds later it fits. Every refused set must leave
     * the map exactly as it was. */
    expect_eval_at(sm, 1,
                   "probe.m = sortedmap.new()\n"
                   "for i = 1, 20000 do probe.m:set(('k%06d'):format(i * 2), 'v') end\n"
                   "probe.d = probe.m:dump()\n"
                   "return #probe.m",
                   "20000");
    int refused = 0, fits = 0;
    char code[256];
    /* the padding: a second map of n small entries (no allocation in it is
     * larger than a leaf, so it fills the heap to within a few hundred
     * bytes); the largest n that fits, found by bisection */
    long lo = 0, hi = 1000000;
    while (hi - lo > 1) {
        long mid = lo + (hi - lo) / 2;
        assert_int_equal(try_eval(sm, "probe.pad = nil"), MR_SM_OK);
        snprintf(code, sizeof code,
                 "probe.pad = sortedmap.new(); for i = 1, %ld do"
                 " probe.pad:set(('%%09d'):format(i), 'padding padding') end",
                 mid);
        if (try_eval(sm, code) == MR_SM_OK)
            lo = mid;
        else
            hi = mid;
    }
    /* then the padding and the set in one command, with less padding each
     * round (the collection a refusal runs finds the same garbage as the
     * padding alone did) */
    for (long n = lo; n > 0 && fits == 0; n--) {
        assert_int_equal(try_eval(sm, "probe.pad = nil"), MR_SM_OK);
        snprintf(code, sizeof code,
                 "probe.pad = sortedmap.new(); for i = 1, %ld do"
                 " probe.pad:set(('%%09d'):format(i), 'padding padding') end\n"
                 "probe.m:set('k020001', 'new')",
                 n);
        int st = try_eval(sm, code);
        if (st == MR_SM_MEMORY_EXCEEDED) {
            refused++;
            expect_eval_at(sm, 1,
                           "return {#probe.m, probe.m:has('k020001'),"
                           " probe.m:dump() == probe.d}",
                           "[20000,false,true]");
        } else {
            assert_int_equal(st, MR_SM_OK);
            fits++;
        }
    }
    assert_true(refused > 0);
    assert_int_equal(fits, 1);
    expect_eval_at(sm, 1,
                   "probe.pad = nil\n"
                   "local r = {#probe.m, probe.m:get('k020001'), probe.m:remove('k020001'),"
                   " probe.m:dump() == probe.d}\n"
                   "return r",
                   "[20001,\"new\",true,true]");
    mr_sm_close(sm);
}

static void test_a_failed_command_undoes_sets_and_removes_that_split_and_merge(void **state)
{
    (void)state;
    struct mr_sm *sm = open_probe(0);
    expect_eval_at(sm, 1,
                   "probe.m = sortedmap.new()\n"
                   "for i = 1, 5000 do probe.m:set(('k%06d'):format(i * 3), 'v' .. i) end\n"
                   "probe.d = probe.m:dump()\n"
                   "return #probe.m",
                   "5000");
    /* many new keys (splits), most old ones removed (merges, root
     * shrinking), values resized, then an error: all undone */
    expect_eval_error(sm,
                      "local m = probe.m\n"
                      "for i = 1, 4000 do m:set(('k%06d'):format(i * 3 + 1), ('n'):rep(i % 90)) end\n"
                      "for i = 1, 5000 do if i % 10 ~= 0 then m:remove(('k%06d'):format(i * 3)) end end\n"
                      "for i = 1, 4000, 2 do m:remove(('k%06d'):format(i * 3 + 1)) end\n"
                      "for i = 10, 5000, 10 do m:set(('k%06d'):format(i * 3), ('big'):rep(100)) end\n"
                      "error('boom')",
                      MR_SM_SCRIPT_ERROR, "boom");
    expect_eval_at(sm, 2, "return {#probe.m, probe.m:dump() == probe.d}", "[5000,true]");
    /* everything removed, then refused for memory: undone as well */
    expect_eval_error(sm,
                      "for i = 1, 5000 do probe.m:remove(('k%06d'):format(i * 3)) end\n"
                      "assert(#probe.m == 0)\n"
                      "error('boom')",
                      MR_SM_SCRIPT_ERROR, "boom");
    expect_eval_at(sm, 3,
                   "local m = sortedmap.load(probe.d)\n"
                   "return {#probe.m, probe.m:dump() == probe.d, m:dump() == probe.d}",
                   "[5000,true,true]");
    mr_sm_close(sm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sortedmap_sets_gets_and_lists_in_bytewise_order),
        cmocka_unit_test(test_sortedmap_agrees_with_a_table_after_random_changes),
        cmocka_unit_test(test_sortedmap_dump_has_the_documented_layout),
        cmocka_unit_test(test_sortedmap_same_content_dumps_the_same_bytes_in_every_vm),
        cmocka_unit_test(test_sortedmap_load_rejects_every_malformed_dump),
        cmocka_unit_test(test_sortedmap_memory_counts_against_the_heap_cap),
        cmocka_unit_test(test_sortedmap_work_is_charged_to_the_budget),
        cmocka_unit_test(test_sortedmap_agrees_with_a_sorted_array_through_splits_and_merges),
        cmocka_unit_test(test_sortedset_from_builds_the_same_set_as_adds),
        cmocka_unit_test(test_sortedmap_set_refused_during_a_split_leaves_the_map_as_it_was),
        cmocka_unit_test(test_a_failed_command_undoes_sets_and_removes_that_split_and_merge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
