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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
