/* Unit tests for src/sm: the sandboxed Lua state machine host. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "sm/sm.h"
#include "sm_eval.h"

#define FIXTURE(name) MR_SOURCE_DIR "/tests/unit/fixtures/" name
#define KV_LUA MR_SOURCE_DIR "/lua/kv.lua"

static struct mr_sm *open_script(const char *path, uint64_t budget, uint64_t memlimit)
{
    struct mr_sm *sm = NULL;
    char errmsg[MR_ERRMSG_SIZE] = "";
    struct mr_sm_options o = {.script_path = path,
                              .instruction_budget = budget,
                              .memory_limit_bytes = memlimit};
    int rv = mr_sm_open(&sm, &o, errmsg);
    if (rv != 0) fail_msg("open %s: %s", path, errmsg);
    return sm;
}

static int open_source(const char *src, char *errmsg)
{
    struct mr_sm *sm = NULL;
    struct mr_sm_options o = {.script_source = src, .script_name = "/some/dir/x.lua"};
    int rv = mr_sm_open(&sm, &o, errmsg);
    mr_sm_close(sm);
    return rv;
}

/* Applies cmd and checks status OK and the exact result JSON. */
static void expect_apply(struct mr_sm *sm, mr_index index, const char *cmd,
                         const char *want)
{
    struct mr_sm_result res = {0};
    int st = apply_at(sm, index, cmd, &res);
    if (st != MR_SM_OK) fail_msg("%s -> %s: %s", cmd, mr_sm_status_name(st), res.error);
    assert_string_equal(res.json, want);
    assert_int_equal(res.json_len, strlen(want));
    mr_sm_result_free(&res);
}

/* eval at index 1 (the usual case here) */
#define expect_eval(sm, code, want) expect_eval_at(sm, 1, code, want)

/* ---- loading ------------------------------------------------------------------- */

static void test_open_names_the_line_of_a_syntax_error(void **state)
{
    (void)state;
    struct mr_sm *sm = NULL;
    char errmsg[MR_ERRMSG_SIZE] = "";
    struct mr_sm_options o = {.script_path = FIXTURE("sm_syntax.lua")};
    assert_int_equal(mr_sm_open(&sm, &o, errmsg), MR_ESCRIPT);
    assert_null(sm);
    assert_non_null(strstr(errmsg, "sm_syntax.lua:3:"));
}

static void test_open_names_the_missing_function(void **state)
{
    (void)state;
    struct mr_sm *sm = NULL;
    char errmsg[MR_ERRMSG_SIZE] = "";
    struct mr_sm_options o = {.script_path = FIXTURE("sm_missing.lua")};
    assert_int_equal(mr_sm_open(&sm, &o, errmsg), MR_ESCRIPT);
    assert_non_null(strstr(errmsg, "'restore'"));
}

static void test_open_reports_errors_raised_while_loading(void **state)
{
    (void)state;
    char errmsg[MR_ERRMSG_SIZE] = "";
    assert_int_equal(
        open_source("local m = {}\nerror('no config here')\nreturn m", errmsg),
        MR_ESCRIPT);
    assert_non_null(strstr(errmsg, "x.lua:2: no config here"));
    assert_int_equal(open_source("return 42", errmsg), MR_ESCRIPT);
    assert_non_null(strstr(errmsg, "must return a table"));
    assert_int_equal(open_source("while true do end", errmsg), MR_ESCRIPT);
    assert_non_null(strstr(errmsg, "instruction budget"));
    assert_int_equal(open_source("local f = io.open('/etc/passwd')", errmsg), MR_ESCRIPT);
    assert_non_null(strstr(errmsg, "x.lua:1:"));
}

static void test_open_fails_on_a_missing_file(void **state)
{
    (void)state;
    struct mr_sm *sm = NULL;
    char errmsg[MR_ERRMSG_SIZE] = "";
    struct mr_sm_options o = {.script_path = "/nonexistent/kv.lua"};
    assert_int_equal(mr_sm_open(&sm, &o, errmsg), MR_ESCRIPT);
    assert_non_null(strstr(errmsg, "/nonexistent/kv.lua"));
    assert_int_equal(mr_sm_open(&sm, NULL, errmsg), MR_EINVAL);
}

/* ---- sandbox --------------------------------------------------------------------- */

static void test_sandbox_has_no_io_os_package_debug_or_file_loading(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(FIXTURE("sm_probe.lua"), 0, 0);
    expect_eval(
        sm,
        "local present = {}\n"
        "for _, n in ipairs({'io','os','package','debug','require','dofile','loadfile',\n"
        "  'print','collectgarbage','coroutine','warn','module'}) do\n"
        "  if rawget(_G, n) ~= nil then present[#present+1] = n end\n"
        "end\n"
        "if string.dump ~= nil then present[#present+1] = 'string.dump' end\n"
        "return table.concat(present, ',')",
        "\"\"");
    expect_eval(sm, "return type(json) .. type(cjson) .. type(canonical) .. type(utf8)",
                "\"tabletabletabletable\"");
    /* Lua's binary chunks start with ESC "Lua". */
    expect_eval_error(sm, "local f, err = load('\\27LuaT\\0'); error(err)",
                      MR_SM_SCRIPT_ERROR, "binary");
    expect_eval_error(sm, "local f, err = load('\\27LuaT\\0', 'x', 'b'); error(err)",
                      MR_SM_SCRIPT_ERROR, "binary");
    /* text chunks still load, and env works */
    expect_eval(sm, "return load('return 1 + a', 'c', 't', {a = 41})()", "42");
    expect_eval_error(sm, "return io.open('/etc/passwd')", MR_SM_SCRIPT_ERROR,
                      "undefined global 'io'");
    mr_sm_close(sm);
}

static void test_globals_are_locked_after_load(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(FIXTURE("sm_probe.lua"), 0, 0);
    expect_eval_error(sm, "newglobal = 1", MR_SM_SCRIPT_ERROR, "globals are locked");
    expect_eval_error(sm, "return setmetatable(_G, nil)", MR_SM_SCRIPT_ERROR,
                      "protected");
    expect_eval(sm, "local t = {}; t.x = 1; return t", "{\"x\":1}");
    mr_sm_close(sm);
}

static void test_setmetatable_refuses_finalizers_and_weak_tables(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(FIXTURE("sm_probe.lua"), 0, 0);
    expect_eval_error(sm, "setmetatable({}, {__gc = function() end})", MR_SM_SCRIPT_ERROR,
                      "__gc");
    expect_eval_error(sm, "setmetatable({}, {__mode = 'k'})", MR_SM_SCRIPT_ERROR,
                      "__mode");
    expect_eval(sm, "return setmetatable({}, {__index = function() return 7 end}).x",
                "7");
    mr_sm_close(sm);
}

static void test_random_is_seeded_from_the_entry(void **state)
{
    (void)state;
    struct mr_sm *a = open_script(FIXTURE("sm_probe.lua"), 1000000, 32u << 20);
    struct mr_sm *b = open_script(FIXTURE("sm_probe.lua"), 1000000, 32u << 20);
    const char *code = "return {math.random(), ctx.random(1, 1000000), math.random(5), "
                       "ctx.random(math.mininteger, math.maxinteger)}";
    struct mr_sm_result ra = {0}, rb = {0}, rc = {0};
    assert_int_equal(eval_at(a, 7, code, &ra), MR_SM_OK);
    assert_int_equal(eval_at(b, 7, code, &rb), MR_SM_OK);
    assert_int_equal(eval_at(b, 8, code, &rc), MR_SM_OK);
    assert_string_equal(ra.json, rb.json);
    assert_string_not_equal(ra.json, rc.json);
    mr_sm_result_free(&ra);
    mr_sm_result_free(&rb);
    mr_sm_result_free(&rc);
    /* same entry twice (a replay) draws the same numbers */
    assert_int_equal(eval_at(a, 8, code, &ra), MR_SM_OK);
    assert_int_equal(eval_at(b, 8, code, &rb), MR_SM_OK);
    assert_string_equal(ra.json, rb.json);
    mr_sm_result_free(&ra);
    mr_sm_result_free(&rb);
    /* failures are identical too: budget, memory, errors */
    static const char *const failing[] = {
        "local n = 0; while true do n = n + 1 end",
        "local t = {}; for i = 1, 1e9 do t[i] = {i} end",
        "error('x' .. math.random(1000))",
        "table.sort({3, 2, 1}, function(x, y) while true do end end)"};
    for (size_t i = 0; i < sizeof failing / sizeof *failing; i++) {
        assert_int_equal(eval_at(a, 9, failing[i], &ra), eval_at(b, 9, failing[i], &rb));
        assert_true(ra.status != MR_SM_OK);
        assert_string_equal(ra.error, rb.error);
        mr_sm_result_free(&ra);
        mr_sm_result_free(&rb);
    }
    expect_eval(a, "local x = math.random(3, 5); return x >= 3 and x <= 5", "true");
    expect_eval(a, "local x = math.random(); return x >= 0 and x < 1", "true");
    expect_eval_error(a, "math.randomseed(42)", MR_SM_SCRIPT_ERROR, "disabled");
    expect_eval_error(a, "math.random(5, 1)", MR_SM_SCRIPT_ERROR, "interval is empty");
    expect_eval(a, "return ctx.index * 1000 + ctx.term", "1001");
    expect_eval(a, "return ctx.time", "1700000000000");
    mr_sm_close(a);
    mr_sm_close(b);
}

static void test_table_sort_is_stable_and_deterministic(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(FIXTURE("sm_probe.lua"), 0, 0);
    /* 300 records, 3 distinct priorities: equal ones must keep input order */
    expect_eval(
        sm,
        "local t = {}\n"
        "for i = 1, 300 do t[i] = {p = i % 3, i = i} end\n"
        "table.sort(t, function(a, b) return a.p < b.p end)\n"
        "for k = 2, 300 do\n"
        "  local x, y = t[k-1], t[k]\n"
        "  if x.p > y.p or (x.p == y.p and x.i > y.i) then return 'unstable at ' .. k "
        "end\n"
        "end\n"
        "local u = {5, 3, 9, 1, 7}; table.sort(u)\n"
        "local w = {'b', 'c', 'a'}; table.sort(w, function(a, b) return a > b end)\n"
        "return table.concat(u, ' ') .. ' ' .. table.concat(w)",
        "\"1 3 5 7 9 cba\"");
    expect_eval_error(sm, "table.sort({3, 'a', 1})", MR_SM_SCRIPT_ERROR, "compare");
    mr_sm_close(sm);
}

/* ---- string patterns: the budgeted matcher agrees with Lua's own ---------- */

static const char *const pattern_cases[] = {
    "string.find('hello world', 'o w')",
    "string.find('hello world', 'o', 6)",
    "string.find('hello', 'l+')",
    "string.find('hello', '^h')",
    "string.find('hello', '^e')",
    "string.find('hello', 'o$')",
    "string.find('a.b', '.', 1, true)",
    "string.find('abc', 'b', -1)",
    "string.find('abc', '', 10)",
    "string.find('abc', '', 4)",
    "string.find('abc', '', 3)",
    "string.find('a+b', '+', 1, true)",
    "string.find('hello', '(l)(l)')",
    "string.find('hello', '()ll()')",
    "string.find('abc', 'b', -10)",
    "string.find('a\\0b', '\\0')",
    "string.find('ab', 'x*$')",
    "string.match('  trim me  ', '^%s*(.-)%s*$')",
    "string.match('key=value', '(%w+)=(%w+)')",
    "string.match('2024-01-02', '(%d+)-(%d+)-(%d+)')",
    "string.match('THE (quick) fox', '%((%a+)%)')",
    "string.match('f(a(b)c)d', '%b()')",
    "string.match('f(a(b)c d', '%b()')",
    "string.match('THE (quick) fox', '%f[%a]%a+', 5)",
    "string.match('hello', '(h)(e)(l)(l)(o)')",
    "string.match('aaa', 'a-')",
    "string.match('aaa', 'a-$')",
    "string.match('aaa', 'a*')",
    "string.match('aaab', 'a?b')",
    "string.match('ab', 'a?a?b')",
    "string.match('x=1, y=2', '(%a)=(%d)', 5)",
    "string.match('abcabc', '(abc)%1')",
    "string.match('[]x', '[]]')",
    "string.match('a]b', '[]]')",
    "string.match('^x', '[%^x]+')",
    "string.match('a-b', '[a-]+')",
    "string.match('z', '[^a-y]')",
    "string.match('Hello', '%u%l+')",
    "string.match('tab\there', '%c')",
    "string.match('x y', '%S+')",
    "string.match('caf\xc3\xa9!', '[\\128-\\255]+')",
    "string.match('abc', '((a)(b))')",
    "string.match('', '.*')",
    "string.match('abc', '$')",
    "string.match('a$b', '$b')",
    "string.match('a.b', '%.')",
    "string.match('0x1F', '^0[xX](%x+)$')",
    "string.match('THE END', '%f[%w]%w+%f[%W]')",
    "string.match('a,b', '[%w,]+')",
    "string.match('ab12', '%D+')",
    "string.match('  x', '%s-x')",
    "string.match('abc', '.-b')",
    "string.match('hello', '()', 3)",
    "string.match('hello', 'l', -2)",
    "('x'):rep(3):match('^(x+)$')",
    "(function() local t = {} for w in ('one two  three'):gmatch('%a+') do t[#t+1] = w "
    "end"
    " return table.concat(t, '|') end)()",
    "(function() local t = {} for w in ('abc'):gmatch('') do t[#t+1] = '<' .. w .. '>' "
    "end"
    " return table.concat(t) end)()",
    "(function() local t = {} for k, v in ('k1=v1,k2=v2'):gmatch('(%w+)=(%w+)') do"
    " t[#t+1] = k .. ':' .. v end return table.concat(t, ' ') end)()",
    "(function() local t = {} for w in ('aaa b'):gmatch('a*') do t[#t+1] = '<' .. w .. "
    "'>'"
    " end return table.concat(t) end)()",
    "(function() local t = {} for p in ('hello'):gmatch('()l') do t[#t+1] = p end"
    " return table.concat(t, ',') end)()",
    "(function() local t = {} for w in ('abcdef'):gmatch('%a', 3) do t[#t+1] = w end"
    " return table.concat(t) end)()",
    "(function() local t = {} for w in ('abc'):gmatch('.', 10) do t[#t+1] = w end"
    " return #t end)()",
    "(function() local t = {} for w in ('^a^b'):gmatch('^%a') do t[#t+1] = w end"
    " return table.concat(t, ',') end)()",
    "string.gsub('hello world', 'o', '0')",
    "string.gsub('hello world', '(o)', '[%1]')",
    "string.gsub('hello', 'l', 'L', 1)",
    "string.gsub('hello', '', '-')",
    "string.gsub('abc', '%w', '%0%0')",
    "string.gsub('hello world', '%w+', {hello = 'HI'})",
    "string.gsub('hello world', '%w+', function(w) return w:upper() end)",
    "string.gsub('hello world', '%w+', function(w) if w == 'world' then return false end"
    " return 1 end)",
    "string.gsub('abc', '^a', 'X')",
    "string.gsub('aaa', 'a*', '-')",
    "string.gsub('abc', '()', '%1')",
    "string.gsub('abc', 'b', {b = false})",
    "string.gsub('a,b,,c', ',', ';', 2)",
    "string.gsub('x', 'x', '%%')",
    "string.gsub('abc', '', '')",
    "string.gsub('hello', 'l+', 7)",
    "string.gsub('abc', '(a)(b)(c)', '%3%2%1')",
    "string.gsub('  x  ', '^%s+', '')",
    "string.gsub('abc', '.', {a = 1, b = true})",
    /* errors */
    "string.gsub('abc', 'b', '%2')",
    "string.gsub('abc', 'b', '%')",
    "string.gsub('abc', 'b', '%x')",
    "string.gsub('abc', '(b)', function() return {} end)",
    "string.gsub('abc', 'b', true)",
    "string.find('a', '(')",
    "string.find('a', '%')",
    "string.find('a', '[a')",
    "string.find('a', '%b')",
    "string.find('a', '%f')",
    "string.find('a', ')')",
    "string.find('a', '%1')",
    "string.find('a', ('()'):rep(33))",
    "string.find(('a'):rep(300), ('a?'):rep(300))",
    "string.find('abc', '(()')",
    "string.match('abc', '[^')",
    "string.match('a', '%g', 1.5)",
};

static const char *const pattern_harness =
    "local function ser(...)\n"
    "  local t, o = table.pack(...), {}\n"
    "  for i = 1, t.n do\n"
    "    local v = t[i]\n"
    "    o[#o + 1] = type(v) == 'string' and string.format('%q', v) or tostring(v)\n"
    "  end\n"
    "  return table.concat(o, ',')\n"
    "end\n"
    "local f = assert(load('return ' .. CASE, '=case'))\n"
    "local r = table.pack(pcall(f))\n"
    "local out = r[1] and ser(table.unpack(r, 2, r.n)) or ('ERR ' .. tostring(r[2]))\n"
    "local h = {}\n"
    "for i = 1, #out do h[i] = string.format('%02x', out:byte(i)) end\n"
    "return table.concat(h)\n";

static char *pattern_program(const char *c)
{
    /* CASE becomes a long-bracket string literal */
    size_t n = strlen(pattern_harness) + strlen(c) + 64;
    char *prog = malloc(n);
    snprintf(prog, n, "local CASE = [==[%s]==]\n%s", c, pattern_harness);
    return prog;
}

static void test_string_patterns_behave_like_lua(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(FIXTURE("sm_probe.lua"), 0, 0);
    lua_State *ref = luaL_newstate();
    luaL_openlibs(ref);
    for (size_t i = 0; i < sizeof pattern_cases / sizeof *pattern_cases; i++) {
        char *prog = pattern_program(pattern_cases[i]);
        if (luaL_dostring(ref, prog) != LUA_OK)
            fail_msg("reference: %s: %s", pattern_cases[i], lua_tostring(ref, -1));
        const char *want = lua_tostring(ref, -1);
        struct mr_sm_result res = {0};
        if (eval_at(sm, 1, prog, &res) != MR_SM_OK)
            fail_msg("sandbox: %s: %s", pattern_cases[i], res.error);
        /* res.json is the same hex string in JSON quotes */
        if (strlen(res.json) != strlen(want) + 2 ||
            strncmp(res.json + 1, want, strlen(want)) != 0) {
            fail_msg("%s: sandbox %s vs lua %s", pattern_cases[i], res.json, want);
        }
        lua_pop(ref, 1);
        mr_sm_result_free(&res);
        free(prog);
    }
    lua_close(ref);
    mr_sm_close(sm);
}

static void test_runaway_work_in_c_hits_the_budget(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(FIXTURE("sm_probe.lua"), 1000000, 0);
    /* hours of backtracking with Lua's matcher; here a budget error */
    expect_eval_error(sm, "return string.find(('x'):rep(100000), '.-.-.-y')",
                      MR_SM_BUDGET_EXCEEDED, "instruction budget");
    /* a "trim" pattern is quadratic on inner blanks */
    expect_eval_error(sm,
                      "return ('a' .. (' '):rep(100000) .. 'b'):match('^%s*(.-)%s*$')",
                      MR_SM_BUDGET_EXCEEDED, "instruction budget");
    expect_eval_error(sm,
                      "local s = ('a'):rep(50000)\n"
                      "for i = 1, 100 do pcall(string.find, s, '.-b') end",
                      MR_SM_BUDGET_EXCEEDED, "instruction budget");
    /* JSON, key listing and sorting run in C too, and are charged */
    expect_eval_error(sm,
                      "local t = {}; for i = 1, 100000 do t[i] = i end\n"
                      "for i = 1, 1000 do json.encode(t) end",
                      MR_SM_BUDGET_EXCEEDED, "instruction budget");
    expect_eval_error(sm,
                      "local s = '[' .. ('\"x\",'):rep(100000) .. '1]'\n"
                      "for i = 1, 1000 do json.decode(s) end",
                      MR_SM_BUDGET_EXCEEDED, "instruction budget");
    expect_eval_error(sm,
                      "local s = json.encode(('x'):rep(1 << 20))\n"
                      "for i = 1, 1000 do json.decode(s) end",
                      MR_SM_BUDGET_EXCEEDED, "instruction budget");
    expect_eval_error(sm,
                      "local s = ('x'):rep(1 << 20)\n"
                      "for i = 1, 1000 do s:find('y', 1, true) end",
                      MR_SM_BUDGET_EXCEEDED, "instruction budget");
    expect_eval_error(sm,
                      "local t = {}; for i = 1, 100000 do t['k' .. i] = i end\n"
                      "for i = 1, 1000 do canonical.keys(t, 'x') end",
                      MR_SM_BUDGET_EXCEEDED, "instruction budget");
    expect_eval_error(
        sm,
        "local t = {}; for i = 1, 200000 do t[i] = (i * 7919) % 200000 end\n"
        "table.sort(t)",
        MR_SM_BUDGET_EXCEEDED, "instruction budget");
    /* building long strings costs in proportion to their length */
    expect_eval_error(sm,
                      "local s = ('x'):rep(1 << 24)\n"
                      "for i = 1, 100000 do local t = s .. i end",
                      MR_SM_BUDGET_EXCEEDED, "instruction budget");
    expect_eval_error(sm, "for i = 1, 100000 do local t = ('x'):rep(1 << 24) end",
                      MR_SM_BUDGET_EXCEEDED, "instruction budget");
    expect_eval_error(sm,
                      "local t = {('x'):rep(1 << 20)}\n"
                      "for i = 1, 100000 do local c = table.concat(t) end",
                      MR_SM_BUDGET_EXCEEDED, "instruction budget");
    /* ordinary work on big strings stays well inside */
    expect_eval(sm,
                "local s = ('word '):rep(20000)\n"
                "local n = select(2, s:gsub('%a+', '%0'))\n"
                "return {n, #s:match('^(.-)%s*$'), s:find('word', 99990, true)}",
                "[20000,99999,99991,99994]");
    mr_sm_close(sm);
}

/* ---- determinism by construction ---------------------------------------------- */

/* Runs code (which must return a string) and returns a copy of the string. */
static char *eval_string(struct mr_sm *sm, mr_index index, const char *code)
{
    struct mr_sm_result res = {0};
    int st = eval_at(sm, index, code, &res);
    if (st != MR_SM_OK) fail_msg("%s -> %s: %s", code, mr_sm_status_name(st), res.error);
    char *s = strdup(res.json);
    assert_non_null(s);
    mr_sm_result_free(&res);
    return s;
}

#define PAIRS_ORDER                                                                      \
    "local o = {}\n"                                                                     \
    "for k, v in pairs(probe.state) do o[#o + 1] = k .. '=' .. v end\n"                  \
    "return table.concat(o, ',')"

static void
test_pairs_order_is_the_same_after_a_restore_whatever_the_history(void **state)
{
    (void)state;
    char errmsg[MR_ERRMSG_SIZE] = "";
    struct mr_sm *a = open_script(FIXTURE("sm_probe.lua"), 0, 0);
    struct mr_sm *b = open_script(FIXTURE("sm_probe.lua"), 0, 0);
    /* a: built key by key, with deletions; b: restored from a's snapshot */
    expect_eval(a,
                "local t = {}\n"
                "for i = 300, 1, -1 do t['k' .. (i * 7919 % 1000)] = i end\n"
                "for i = 1, 300, 3 do t['k' .. (i * 7919 % 1000)] = nil end\n"
                "probe.state = t\n"
                "return true",
                "true");
    char *snap;
    size_t len;
    assert_int_equal(mr_sm_snapshot(a, &snap, &len, errmsg), 0);
    assert_int_equal(mr_sm_restore(b, snap, len, errmsg), 0);
    char *oa = eval_string(a, 2, PAIRS_ORDER);
    char *ob = eval_string(b, 2, PAIRS_ORDER);
    assert_string_equal(oa, ob);
    /* and the order is the keys' bytewise order */
    char *want = eval_string(a, 3,
                             "local o = {}\n"
                             "for _, k in ipairs(canonical.keys(probe.state)) do\n"
                             "  o[#o + 1] = k .. '=' .. probe.state[k]\n"
                             "end\n"
                             "return table.concat(o, ',')");
    assert_string_equal(oa, want);
    /* next walks the same order */
    char *on =
        eval_string(b, 3,
                    "local o = {}\n"
                    "for k, v in next, probe.state do o[#o + 1] = k .. '=' .. v end\n"
                    "return table.concat(o, ',')");
    assert_string_equal(on, want);
    free(oa);
    free(ob);
    free(want);
    free(on);
    mr_free(snap);
    mr_sm_close(a);
    mr_sm_close(b);
}

static void test_pairs_orders_numbers_then_strings_then_booleans(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(FIXTURE("sm_probe.lua"), 0, 0);
    expect_eval(
        sm,
        "local t = {b = 1, a = 1, ab = 1, [''] = 1, [10] = 1, [2] = 1, [2.5] = 1,\n"
        "  [-1] = 1, [true] = 1, [false] = 1, [math.maxinteger] = 1, [2^63] = 1,\n"
        "  [-math.huge] = 1, [math.mininteger] = 1, [-0.5] = 1, 'x', 'y'}\n"
        "local o = {}\n"
        "for k in pairs(t) do o[#o + 1] = tostring(k) end\n"
        "return table.concat(o, ' ')",
        "\"-inf -9223372036854775808 -1 -0.5 1 2 2.5 10 9223372036854775807 "
        "9.2233720368548e+18  a ab b false true\"");
    /* thousands of random keys of every orderable kind come out sorted */
    expect_eval(
        sm,
        "local t = {}\n"
        "for i = 1, 5000 do\n"
        "  local r = math.random(1, 5)\n"
        "  if r == 1 then t[math.random(-1e6, 1e6)] = i\n"
        "  elseif r == 2 then t[math.random() * 1e6 - 5e5] = i\n"
        "  elseif r == 3 then t[i] = i\n"
        "  else t[string.format('%x', math.random(0, 1 << 40))] = i end\n"
        "end\n"
        "t[true], t[false] = 1, 1\n"
        "local prev, pk, n, ok = nil, nil, 0, true\n"
        "local rank = {number = 1, string = 2, boolean = 3}\n"
        "for k in pairs(t) do\n"
        "  n = n + 1\n"
        "  if prev ~= nil then\n"
        "    local a, b = rank[type(prev)], rank[type(k)]\n"
        "    if a > b or (a == b and a < 3 and not (prev < k)) then ok = false end\n"
        "  end\n"
        "  prev = k\n"
        "end\n"
        "local m = 0; for _ in next, t do m = m + 1 end\n"
        "return {ok, n > 4000, n == m, prev}",
        "[true,true,true,true]");
    /* removing keys while iterating is allowed; added keys are not visited */
    expect_eval(sm,
                "local t = {a = 1, b = 2, c = 3, d = 4}\n"
                "local o = {}\n"
                "for k, v in pairs(t) do\n"
                "  o[#o + 1] = k; t.c = nil; t[k .. k] = v\n"
                "end\n"
                "return table.concat(o, ' ')",
                "\"a b d\"");
    /* next: the smallest key first, nil at the end and on an empty table */
    expect_eval(sm,
                "local t = {z = 1, [3] = 1, m = 1}\n"
                "return {next(t), next(t, 3), next(t, 'm'), next(t, 'z') == nil,\n"
                "        next({}) == nil}",
                "[3,\"m\",\"z\",true,true]");
    /* a stateless step from any key, as stock next */
    expect_eval(sm,
                "local f, s, c = pairs({a = 1, b = 2, c = 3})\n"
                "return {f(s, 'b'), f(s, nil), f(s, 'a'), f(s, 'c') == nil}",
                "[\"c\",\"a\",\"b\",true]");
    /* __pairs still works */
    expect_eval(
        sm,
        "local t = setmetatable({}, {__pairs = function(t)\n"
        "  return function(_, k) if k == nil then return 1, 'one' end end, t, nil\n"
        "end})\n"
        "local o = {}\n"
        "for k, v in pairs(t) do o[#o + 1] = v end\n"
        "return o",
        "[\"one\"]");
    mr_sm_close(sm);
}

static void test_pairs_and_next_refuse_keys_without_an_order(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(FIXTURE("sm_probe.lua"), 0, 0);
    expect_eval_error(sm,
                      "for k in pairs({[{}] = 1, a = 1, [function() end] = 2}) do end",
                      MR_SM_SCRIPT_ERROR,
                      "pairs: table keys have no deterministic order (keys of type "
                      "table, function)");
    expect_eval_error(sm, "return next({[sortedmap.new()] = 1})", MR_SM_SCRIPT_ERROR,
                      "next: table keys have no deterministic order (keys of type "
                      "userdata)");
    expect_eval_error(sm, "return pairs(nil)", MR_SM_SCRIPT_ERROR, "table expected");
    /* such tables still work as maps */
    expect_eval(sm, "local k = {}; local t = {[k] = 5}; return t[k]", "5");
    mr_sm_close(sm);
}

static void test_tostring_and_format_show_no_addresses(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(FIXTURE("sm_probe.lua"), 0, 0);
    expect_eval(
        sm,
        "local t, f = {}, function() end\n"
        "return {tostring(t), tostring(f), tostring(t), string.format('%s|%5s', t, 1),\n"
        "        tostring(sortedmap.new()), tostring(1.5), tostring(nil),\n"
        "        tostring(setmetatable({}, {__tostring = function() return 'me' end})),\n"
        "        tostring(setmetatable({}, {__name = 'Point'})), tostring(json.null)}",
        "[\"table: #1\",\"function: #2\",\"table: #1\",\"table: #1|    1\","
        "\"moonraft.sortedmap: #3\",\"1.5\",\"nil\",\"me\",\"Point: #4\",\"userdata: "
        "#5\"]");
    /* serials restart with each command */
    expect_eval(sm, "return tostring({})", "\"table: #1\"");
    expect_eval_error(sm, "return string.format('%p', {})", MR_SM_SCRIPT_ERROR,
                      "'%p' is not allowed");
    expect_eval_error(sm, "return string.format('%10p', 1)", MR_SM_SCRIPT_ERROR,
                      "'%p' is not allowed");
    /* errors built from values: no addresses */
    expect_eval_error(sm, "error('bad: ' .. tostring({}), 0)", MR_SM_SCRIPT_ERROR,
                      "bad: table: #1");
    expect_eval(sm, "return string.format('%%p %d %q', 3, 0.5)", "\"%p 3 0x1p-1\"");
    expect_eval_error(sm, "return string.format('%d', 'x')", MR_SM_SCRIPT_ERROR,
                      "bad argument #2 to 'format'");
    mr_sm_close(sm);
}

static void test_a_metatable_cannot_gain_mode_or_gc_later(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(FIXTURE("sm_probe.lua"), 0, 0);
    expect_eval_error(sm, "local mt = {}; setmetatable({}, mt); mt.__mode = 'k'",
                      MR_SM_SCRIPT_ERROR, "__mode is not allowed");
    expect_eval_error(sm,
                      "local mt = {}; setmetatable({}, mt); rawset(mt, '__mode', 'v')",
                      MR_SM_SCRIPT_ERROR, "__mode is not allowed");
    expect_eval_error(sm, "local mt = {}; setmetatable({}, mt); mt.__gc = type",
                      MR_SM_SCRIPT_ERROR, "__gc is not allowed");
    /* the metatable JSON arrays share is reachable, and guarded too */
    expect_eval_error(sm, "getmetatable(json.decode('[]')).__mode = 'v'",
                      MR_SM_SCRIPT_ERROR, "__mode is not allowed");
    /* everything else still goes into the metatable */
    expect_eval(sm,
                "local mt = {}; local t = setmetatable({}, mt)\n"
                "mt.__index = function(_, k) return k .. '!' end\n"
                "rawset(mt, 'x', 1)\n"
                "local plain = {}; rawset(plain, '__mode', 'k')\n"
                "return {t.hi, mt.x, rawget(plain, '__mode')}",
                "[\"hi!\",1,\"k\"]");
    mr_sm_close(sm);
}

static void test_table_functions_take_a_length_that_depends_on_contents_only(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(FIXTURE("sm_probe.lua"), 0, 0);
    /* same contents, different layouts: the # operator (which the host
     * cannot intercept) answers 5 and 3; the library agrees on 3 */
    expect_eval(
        sm,
        "local a = {1, 2, 3, nil, 5}\n"
        "local b = {}; b[1] = 1; b[2] = 2; b[3] = 3; b[5] = 5\n"
        "local r = {#a, #b, rawlen(a), rawlen(b),\n"
        "  select('#', table.unpack(a)), select('#', table.unpack(b)),\n"
        "  table.concat(a, ','), table.concat(b, ',')}\n"
        "table.insert(a, 'x'); table.insert(b, 'x') -- fills the hole: a sequence now\n"
        "table.insert(a, 1, 0); table.insert(b, 1, 0)\n"
        "r[#r + 1] = table.remove(a); r[#r + 1] = table.remove(b)\n"
        "r[#r + 1] = table.concat(a, ',', 1, 4) == table.concat(b, ',', 1, 4)\n"
        "table.sort(a, function(x, y) return tostring(x) < tostring(y) end)\n"
        "table.sort(b, function(x, y) return tostring(x) < tostring(y) end)\n"
        "r[#r + 1] = table.concat(a, ',', 1, 4) .. '|' .. table.concat(b, ',', 1, 4)\n"
        "return r",
        "[5,3,3,3,3,3,\"1,2,3\",\"1,2,3\",5,5,true,\"0,1,2,3|0,1,2,3\"]");
    /* sequences, __len and non-tables as stock */
    expect_eval(sm,
                "local t = {}\n"
                "for i = 1, 1000 do table.insert(t, i) end\n"
                "table.remove(t, 1)\n"
                "local p = setmetatable({}, {__len = function() return 2 end})\n"
                "p[1], p[2], p[3] = 'a', 'b', 'c'\n"
                "return {#t, rawlen(t), t[1], t[999], table.concat(p), rawlen('abc'),\n"
                "        select('#', table.unpack({}))}",
                "[999,999,2,1000,\"ab\",3,0]");
    expect_eval_error(sm, "table.insert({}, 5, 1)", MR_SM_SCRIPT_ERROR,
                      "position out of bounds");
    expect_eval_error(sm, "return rawlen(5)", MR_SM_SCRIPT_ERROR,
                      "table or string expected");
    mr_sm_close(sm);
}

static void test_the_uncertain_flag_is_set_when_the_heap_cap_is_hit(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(FIXTURE("sm_probe.lua"), 0, 16u << 20);
    struct mr_sm_result res = {0};
    /* an ordinary command is certain */
    assert_int_equal(eval_at(sm, 1, "return 1", &res), MR_SM_OK);
    assert_int_equal(res.is_uncertain, 0);
    mr_sm_result_free(&res);
    /* the cap ends the command */
    assert_int_equal(eval_at(sm, 2, "return #string.rep('x', 1 << 30)", &res),
                     MR_SM_MEMORY_EXCEEDED);
    assert_int_equal(res.is_uncertain, 1);
    mr_sm_result_free(&res);
    /* the script catches the memory error and goes on: OK, yet uncertain */
    assert_int_equal(eval_at(sm, 3,
                             "local ok = pcall(string.rep, 'x', 1 << 30)\n"
                             "return ok",
                             &res),
                     MR_SM_OK);
    assert_string_equal(res.json, "false");
    assert_int_equal(res.is_uncertain, 1);
    mr_sm_result_free(&res);
    /* in C code (sortedmap) */
    assert_int_equal(eval_at(sm, 4,
                             "local m = sortedmap.new()\n"
                             "for i = 1, 1e9 do m:set('k' .. i, ('v'):rep(1000)) end",
                             &res),
                     MR_SM_MEMORY_EXCEEDED);
    assert_int_equal(res.is_uncertain, 1);
    mr_sm_result_free(&res);
    /* and it does not stick */
    assert_int_equal(eval_at(sm, 5, "return 2", &res), MR_SM_OK);
    assert_int_equal(res.is_uncertain, 0);
    mr_sm_result_free(&res);
    /* queries too */
    char *q = eval_cmd("return pcall(string.rep, 'x', 1 << 30)");
    assert_int_equal(mr_sm_query(sm, q, strlen(q), &res), 0);
    assert_int_equal(res.status, MR_SM_OK);
    assert_int_equal(res.is_uncertain, 1);
    mr_sm_result_free(&res);
    free(q);
    mr_sm_close(sm);
}

static void test_json_key_errors_do_not_depend_on_the_key_order(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(FIXTURE("sm_probe.lua"), 0, 0);
    /* lua_next meets the table key first (slot 0), the boolean second */
    expect_eval_error(sm, "return {[{}] = 1, [true] = 2}", MR_SM_SCRIPT_ERROR,
                      "cannot encode a table key of type boolean");
    expect_eval_error(sm, "return {[true] = 2, [{}] = 1, [1.5] = 0}", MR_SM_SCRIPT_ERROR,
                      "cannot encode a table key of type float");
    mr_sm_close(sm);
}

/* Whether n gets on probe.<m> fit in the instruction budget. */
static int gets_fit(struct mr_sm *sm, const char *m, long n)
{
    char code[256];
    snprintf(code, sizeof code,
             "local m = probe.%s\n"
             "for i = 0, %ld - 1 do m:get('k' .. (i %% 4000)) end\n"
             "return true",
             m, n);
    struct mr_sm_result res = {0};
    int st = eval_at(sm, 1, code, &res);
    mr_sm_result_free(&res);
    assert_true(st == MR_SM_OK || st == MR_SM_BUDGET_EXCEEDED);
    return st == MR_SM_OK;
}

/* The budget must trip at the same point on a replica that built its
 * sortedmap command by command and on one that loaded it from a dump: the
 * trees differ in shape (full leaves after a load). */
static void test_sortedmap_work_is_charged_alike_whatever_its_history(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(FIXTURE("sm_probe.lua"), 300000, 0);
    expect_eval(sm,
                "local m = sortedmap.new()\n"
                "for i = 1, 4000 do m:set('k' .. (i * 7919 % 4000), 'v') end\n"
                "for i = 1, 4000, 2 do m:remove('k' .. i) end\n"
                "probe.m1, probe.m2 = m, sortedmap.load(m:dump())\n"
                "return m:count() == probe.m2:count()",
                "true");
    /* A failed command leaves no trace, so the point where the budget
     * trips is found by bisection: the most gets that fit on m1 ... */
    long lo = 1, hi = 1000000;
    assert_true(gets_fit(sm, "m1", lo));
    assert_false(gets_fit(sm, "m1", hi));
    while (hi - lo > 1) {
        long mid = lo + (hi - lo) / 2;
        if (gets_fit(sm, "m1", mid))
            lo = mid;
        else
            hi = mid;
    }
    /* ... are exactly the most that fit on m2 */
    assert_true(lo > 1000);
    assert_true(gets_fit(sm, "m2", lo));
    assert_false(gets_fit(sm, "m2", lo + 1));
    mr_sm_close(sm);
}

/* ---- budgets -------------------------------------------------------------------------
 */

static void test_an_infinite_loop_hits_the_budget_and_the_next_command_works(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(FIXTURE("sm_probe.lua"), 100000, 0);
    expect_eval_error(sm, "while true do end", MR_SM_BUDGET_EXCEEDED,
                      "instruction budget");
    /* The script's own pcall cannot swallow the budget error. */
    expect_eval_error(sm, "while true do pcall(function() while true do end end) end",
                      MR_SM_BUDGET_EXCEEDED, "instruction budget");
    expect_eval_error(sm,
                      "local ok = pcall(function() while true do end end)\n"
                      "return 'escaped: ' .. tostring(ok)",
                      MR_SM_BUDGET_EXCEEDED, "instruction budget");
    expect_eval(sm, "local s = 0; for i = 1, 1000 do s = s + i end; return s", "500500");
    /* The budget is per call: many calls of 60% of it all pass. */
    for (int i = 0; i < 5; i++) expect_eval(sm, "for i = 1, 20000 do end return 1", "1");
    mr_sm_close(sm);
}

static void test_a_memory_bomb_hits_the_cap_and_the_next_command_works(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(FIXTURE("sm_probe.lua"), 0, 16u << 20);
    size_t before = mr_sm_memory_used(sm);
    expect_eval_error(sm,
                      "local t = {}\n"
                      "for i = 1, 1e9 do t[i] = string.rep('x', 100) .. i end",
                      MR_SM_MEMORY_EXCEEDED, "not enough memory");
    expect_eval_error(sm, "return #string.rep('x', 1 << 30)", MR_SM_MEMORY_EXCEEDED,
                      "not enough memory");
    assert_true(mr_sm_memory_used(sm) < before + (1u << 20));
    expect_eval(sm, "return #string.rep('x', 1000)", "1000");
    /* state kept in the module table survives and still works */
    expect_apply(sm, 2, "{\"op\":\"set\",\"v\":{\"a\":1}}", "true");
    struct mr_sm_result res = {0};
    assert_int_equal(mr_sm_query(sm, "{}", 2, &res), 0);
    assert_string_equal(res.json, "{\"a\":1}");
    mr_sm_result_free(&res);
    mr_sm_close(sm);
}

/* ---- errors
 * ----------------------------------------------------------------------------- */

static void test_a_lua_error_becomes_script_error_with_its_message(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(FIXTURE("sm_probe.lua"), 0, 0);
    struct mr_sm_result res = {0};
    assert_int_equal(apply_at(sm, 1, "{\"op\":\"nope\"}", &res), MR_SM_SCRIPT_ERROR);
    assert_string_equal(res.error, "sm_probe.lua:14: unknown op: nope");
    assert_non_null(res.traceback);
    assert_non_null(strstr(res.traceback, "stack traceback:"));
    assert_string_equal(mr_sm_status_name(res.status), "script_error");
    mr_sm_result_free(&res);
    expect_eval_error(sm, "error({code = 1})", MR_SM_SCRIPT_ERROR, "table value");
    expect_eval_error(sm, "return function() end", MR_SM_SCRIPT_ERROR, "cannot encode");
    expect_eval_error(sm, "return 0/0", MR_SM_SCRIPT_ERROR, "NaN");
    expect_eval_error(sm, "return 1/0", MR_SM_SCRIPT_ERROR, "infinity");
    expect_eval_error(sm, "return {[1.5] = true}", MR_SM_SCRIPT_ERROR, "float");
    expect_eval_error(sm, "return {[1] = 1, ['1'] = 2, x = 3}", MR_SM_SCRIPT_ERROR,
                      "both integer and string key");
    expect_eval_error(sm, "return '\\255'", MR_SM_SCRIPT_ERROR, "UTF-8");
    mr_sm_close(sm);
}

static void test_invalid_json_is_reported_with_its_position(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(FIXTURE("sm_probe.lua"), 0, 0);
    static const char *const bad[] = {
        "{\"op\":", "{bad}", "[1,]",     "01",       "1.", "\"\\x\"",   "\"\\ud800\"",
        "nul",      "[1] 2", "\"a\nb\"", "\"\xff\"", "",   "{\"a\" 1}", "-"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct mr_sm_result res = {0};
        if (apply_at(sm, 1, bad[i], &res) != MR_SM_INVALID_JSON)
            fail_msg("'%s' was accepted", bad[i]);
        assert_non_null(strstr(res.error, "invalid JSON at byte"));
        /* the Lua-free validator agrees, word for word */
        char errmsg[MR_ERRMSG_SIZE] = "";
        assert_int_equal(mr_sm_json_validate(bad[i], strlen(bad[i]), errmsg),
                         MR_EMALFORMED);
        assert_string_equal(errmsg, res.error);
        mr_sm_result_free(&res);
    }
    /* nesting limit */
    char deep[2 * MR_SM_JSON_MAX_DEPTH + 10];
    memset(deep, '[', MR_SM_JSON_MAX_DEPTH + 5);
    memset(deep + MR_SM_JSON_MAX_DEPTH + 5, ']', MR_SM_JSON_MAX_DEPTH + 5);
    deep[2 * MR_SM_JSON_MAX_DEPTH + 10 - 1] = '\0';
    struct mr_sm_result res = {0};
    assert_int_equal(mr_sm_apply(sm, &(struct mr_sm_ctx){.index = 1, .term = 1}, deep,
                                 2 * (MR_SM_JSON_MAX_DEPTH + 5), &res),
                     0);
    assert_int_equal(res.status, MR_SM_INVALID_JSON);
    assert_non_null(strstr(res.error, "too deep"));
    mr_sm_result_free(&res);
    char errmsg[MR_ERRMSG_SIZE] = "";
    assert_int_equal(mr_sm_json_validate(deep, 2 * (MR_SM_JSON_MAX_DEPTH + 5), errmsg),
                     MR_EMALFORMED);
    mr_sm_close(sm);
}

/* ---- JSON
 * -------------------------------------------------------------------------------- */

static void test_json_values_round_trip_exactly(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(FIXTURE("sm_probe.lua"), 0, 0);
    static const char *const same[] = {
        "null",
        "true",
        "false",
        "0",
        "-1",
        "9007199254740993",
        "9223372036854775807",
        "-9223372036854775808",
        "1.5",
        "0.1",
        "-2.5e-05",
        "1e+300",
        "1.0",
        "-0.0",
        "3.141592653589793",
        "\"\"",
        "\"h\\u00e9\"",
        "[]",
        "{}",
        "[null,1,\"a\",[],{}]",
        "{\"a\":[{\"b\":{}}],\"b\":null,\"c\":{\"d\":[1,2,3]}}",
        "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"",
        "\"quote\\\" back\\\\ nl\\n tab\\t "
        "ctl\\u0001\"",
        "[[[[[[[[[[1]]]]]]]]]]",
        "{\"\":1,\"1\":2,\"a\":3}"};
    for (size_t i = 0; i < sizeof same / sizeof *same; i++) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "{\"op\":\"echo\",\"v\":%s}", same[i]);
        /* \u00e9 comes back as raw UTF-8 */
        const char *want =
            strcmp(same[i], "\"h\\u00e9\"") == 0 ? "\"h\xc3\xa9\"" : same[i];
        expect_apply(sm, 1, cmd, want);
        char errmsg[MR_ERRMSG_SIZE] = "";
        if (mr_sm_json_validate(cmd, strlen(cmd), errmsg) != 0)
            fail_msg("%s: %s", cmd, errmsg);
    }
    /* spelling normalised: keys sorted, whitespace gone, exponent forms, surrogates */
    expect_apply(sm, 1, "{\"op\":\"echo\",\"v\": { \"b\" : 1 , \"a\" : [ 2 ] } }",
                 "{\"a\":[2],\"b\":1}");
    expect_apply(sm, 1, "{\"op\":\"echo\",\"v\":1E2}", "100.0");
    expect_apply(sm, 1, "{\"op\":\"echo\",\"v\":18446744073709551616}",
                 "1.8446744073709552e+19");
    expect_apply(sm, 1, "{\"op\":\"echo\",\"v\":\"\\ud83d\\ude00\\/\"}",
                 "\"\xf0\x9f\x98\x80/\"");
    /* subtypes inside Lua */
    expect_eval(
        sm,
        "local v = json.decode('[9007199254740993, 1.0, 2, null]')\n"
        "return {math.type(v[1]), math.type(v[2]), math.type(v[3]), v[4] == json.null,"
        " v[1] == 9007199254740993, #v}",
        "[\"integer\",\"float\",\"integer\",true,true,4]");
    expect_eval(sm, "return canonical.encode({z = 1, a = {y = 2, b = 3}})",
                "\"{\\\"a\\\":{\\\"b\\\":3,\\\"y\\\":2},\\\"z\\\":1}\"");
    expect_eval(sm, "return json.encode(json.array()) .. json.encode({})", "\"[]{}\"");
    /* integer keys are written as "%lld" writes them (fmt_int), and objects
     * of up to 12 keys (insertion sort) and more (qsort) come out in the same
     * bytewise order a Lua sort gives */
    expect_eval(sm,
                "return json.encode({[math.mininteger] = 1, [-3] = 2, [0] = 3, [10] = 4, b = 5})",
                "\"{\\\"-3\\\":2,\\\"-9223372036854775808\\\":1,\\\"0\\\":3,"
                "\\\"10\\\":4,\\\"b\\\":5}\"");
    expect_eval(sm,
                "local out = {}\n"
                "for n = 1, 40 do\n"
                "  local t, keys = {}, {}\n"
                "  for i = n, 1, -1 do\n"
                "    local k = string.format('%x', (i * 2654435761) % 4096)\n"
                "    if t[k] == nil then t[k] = i; keys[#keys + 1] = k end\n"
                "  end\n"
                "  table.sort(keys)\n"
                "  local parts = {}\n"
                "  for _, k in ipairs(keys) do parts[#parts + 1] = '\"' .. k .. '\":' .. t[k] end\n"
                "  out[#out + 1] = json.encode(t) == '{' .. table.concat(parts, ',') .. '}'\n"
                "end\n"
                "for _, ok in ipairs(out) do if not ok then return false end end\n"
                "return #out",
                "40");
    expect_eval(sm, "return cjson.null == json.null and cjson.encode({1, 2})",
                "\"[1,2]\"");
    expect_eval(sm, "return canonical.keys({b = 1, a = 2, ab = 3, [1] = 4}, 'a')",
                "[\"a\",\"ab\"]");
    expect_eval(sm, "return canonical.keys({c = 1, b = 2, a = 3}, '', 2)",
                "[\"a\",\"b\"]");
    expect_eval(sm, "return canonical.keys({c = 1, b = 2, a = 3}, '', 5, 'a')",
                "[\"b\",\"c\"]");
    expect_eval(sm, "return canonical.keys({c = 1}, '', 0)", "[]");
    /* the bounded heap agrees with a full sort on a shuffled table */
    expect_eval(
        sm,
        "local t = {}\n"
        "for i = 1, 5000 do t[string.format('k%05d', (i * 7919) % 5000)] = i end\n"
        "local all = canonical.keys(t)\n"
        "local top = canonical.keys(t, 'k0', 7, 'k00100')\n"
        "local ok = #all == 5000 and all[1] == 'k00000' and all[5000] == 'k04999'\n"
        "for i = 2, #all do ok = ok and all[i-1] < all[i] end\n"
        "return {ok, top}",
        "[true,[\"k00101\",\"k00102\",\"k00103\",\"k00104\",\"k00105\","
        "\"k00106\",\"k00107\"]]");
    expect_eval(sm, "return {[1] = 'a', [3] = 'c'}", "{\"1\":\"a\",\"3\":\"c\"}");
    expect_eval_error(sm, "return json.decode('{')", MR_SM_SCRIPT_ERROR, "json.decode");
    mr_sm_close(sm);
}

/* Random JSON in canonical form (sorted unique keys, integers, strings with
 * escapes and multi-byte UTF-8), from a seeded generator. */
static void gen_string(struct mr_rand *r, char **p)
{
    static const char *const pieces[] = {"a",
                                         "Z",
                                         "0",
                                         " ",
                                         "\\n",
                                         "\\\"",
                                         "\\\\",
                                         "\\u0001",
                                         "\xc3\xa9",
                                         "\xe2\x82\xac",
                                         "\xf0\x9f\x98\x80",
                                         "/",
                                         "\\t"};
    int n = (int)mr_rand_below(r, 6);
    *(*p)++ = '"';
    for (int i = 0; i < n; i++) {
        const char *s = pieces[mr_rand_below(r, sizeof pieces / sizeof *pieces)];
        size_t l = strlen(s);
        memcpy(*p, s, l);
        *p += l;
    }
    *(*p)++ = '"';
}

static void gen_value(struct mr_rand *r, char **p, int depth)
{
    int kind = (int)mr_rand_below(r, depth > 4 ? 5 : 7);
    switch (kind) {
    case 0:
        *p += sprintf(*p, "null");
        break;
    case 1:
        *p += sprintf(*p, mr_rand_below(r, 2) ? "true" : "false");
        break;
    case 2:
        *p += sprintf(*p, "%lld", (long long)mr_rand_next(r));
        break;
    case 3:
        *p += sprintf(*p, "%lld", (long long)mr_rand_below(r, 1000) - 500);
        break;
    case 4:
        gen_string(r, p);
        break;
    case 5: {
        int n = (int)mr_rand_below(r, 4);
        *(*p)++ = '[';
        for (int i = 0; i < n; i++) {
            if (i) *(*p)++ = ',';
            gen_value(r, p, depth + 1);
        }
        *(*p)++ = ']';
        break;
    }
    default: {
        /* keys k0 < k1 < ... are sorted and unique by construction */
        int n = (int)mr_rand_below(r, 4), k = 0;
        *(*p)++ = '{';
        for (int i = 0; i < n; i++) {
            k += 1 + (int)mr_rand_below(r, 3);
            *p += sprintf(*p, "%s\"k%d\":", i ? "," : "", k);
            gen_value(r, p, depth + 1);
        }
        *(*p)++ = '}';
    }
    }
    **p = '\0';
}

static void test_random_json_documents_round_trip(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(FIXTURE("sm_probe.lua"), 0, 0);
    struct mr_rand r;
    mr_rand_seed(&r, 20261122);
    static char doc[1 << 16], cmd[(1 << 16) + 64];
    for (int i = 0; i < 300; i++) {
        char *p = doc;
        gen_value(&r, &p, 0);
        char errmsg[MR_ERRMSG_SIZE];
        if (mr_sm_json_validate(doc, strlen(doc), errmsg) != 0)
            fail_msg("%s: %s", doc, errmsg);
        snprintf(cmd, sizeof cmd, "{\"op\":\"echo\",\"v\":%s}", doc);
        expect_apply(sm, (mr_index)i + 1, cmd, doc);
    }
    mr_sm_close(sm);
}

/* ---- json.raw ----------------------------------------------------------- */

static void test_json_raw_is_written_verbatim_and_read_back(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(FIXTURE("sm_probe.lua"), 0, 0);
    /* verbatim: not re-canonicalised (key order, spaces kept) */
    expect_eval(sm,
                "local r = json.raw('{\"z\":1, \"a\":[1.0,null]}')\n"
                "return {r, json.raw(' 7 '), json.raw('\"\\\\u00e9\"'), json.raw(r) == r}",
                "[{\"z\":1, \"a\":[1.0,null]}, 7 ,\"\\u00e9\",true]");
    /* json.decode reads it; == compares the texts; tostring gives the text */
    expect_eval(sm,
                "local r = json.raw('{\"a\":[1,2]}')\n"
                "local d = json.decode(r)\n"
                "return {d.a[2], r == json.raw('{\"a\":[1,2]}'), r == json.raw('{\"a\":[1, 2]}'),"
                " r == '{\"a\":[1,2]}', tostring(r), getmetatable(r), type(r)}",
                "[2,true,false,false,\"{\\\"a\\\":[1,2]}\",\"json.raw\",\"userdata\"]");
    /* events and query results carry it verbatim */
    struct mr_sm_result res = {0};
    assert_int_equal(eval_at(sm, 2, "ctx.emit({v = json.raw('[1, 2]')}); return 1", &res),
                     MR_SM_OK);
    assert_string_equal(res.events, "[{\"v\":[1, 2]}]");
    mr_sm_result_free(&res);
    const char *q = "{\"op\":\"eval\",\"code\":\"return json.raw('{\\\"q\\\": true}')\"}";
    assert_int_equal(mr_sm_query(sm, q, strlen(q), &res), 0);
    assert_string_equal(res.json, "{\"q\": true}");
    mr_sm_result_free(&res);
    mr_sm_close(sm);
}

static void test_json_raw_refuses_text_that_is_not_one_json_value(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(FIXTURE("sm_probe.lua"), 0, 0);
    /* Each would make the encoder write invalid JSON if it were accepted. */
    expect_eval(sm,
                "local bad = {'', ' ', '{', '[1,]', '1 2', 'nul', '\"a', '\"\\255\"',"
                " '\"a\\1\"', '{\"a\"}', '01', '1.', '\"\\\\x\"', '[1]]', 'NaN', '\"\\\\ud800\"'}\n"
                "local out = {}\n"
                "for i = 1, #bad do\n"
                "  local ok, e = pcall(json.raw, bad[i])\n"
                "  out[i] = not ok and e:find('json.raw: invalid JSON at byte', 1, true) ~= nil\n"
                "end\n"
                "out[#out + 1] = pcall(json.raw, {})\n"
                "out[#out + 1] = pcall(json.raw)\n"
                "return out",
                "[true,true,true,true,true,true,true,true,true,true,true,true,true,true,true,"
                "true,false,false]");
    /* nesting counts where the text is embedded: the output stays within
     * what the decoder accepts */
    expect_eval(sm,
                "local deep = ('['):rep(257) .. (']'):rep(257)\n"
                "local ok1 = pcall(json.encode, json.raw(deep))\n"
                "local ok2, e = pcall(json.encode, {json.raw(deep)})\n"
                "local ok3 = pcall(json.raw, '[' .. deep .. ']')\n"
                "return {ok1, ok2, e:find('nesting deeper than 256', 1, true) ~= nil, ok3}",
                "[true,false,true,false]");
    mr_sm_close(sm);
}

/* ---- sortedset ---------------------------------------------------------- */

static void test_sortedset_keeps_strings_in_bytewise_order(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(FIXTURE("sm_probe.lua"), 0, 0);
    expect_eval(sm,
                "local s = sortedset.new()\n"
                "local r = {s:add('b'), s:add('a'), s:add('b'), s:add('\\195\\191'),"
                " s:add('a\\0'), s:add(''), s:count(), #s, s:has('a'), s:has('c')}\n"
                "r[#r + 1] = s:range()\n"
                "r[#r + 1] = s:range('a')\n"
                "r[#r + 1] = s:range('', 2, 'a')\n"
                "r[#r + 1] = s:range('a', 10, '0')\n"
                "r[#r + 1] = s:range('zz')\n"
                "r[#r + 1] = s:range('', 0)\n"
                "r[#r + 1] = s:remove('a')\n"
                "r[#r + 1] = s:remove('a')\n"
                "r[#r + 1] = s:range()\n"
                "r[#r + 1] = getmetatable(s)\n"
                "return r",
                "[true,true,false,true,true,true,5,5,true,false,"
                "[\"\",\"a\",\"a\\u0000\",\"b\",\"\xc3\xbf\"],"
                "[\"a\",\"a\\u0000\"],[\"a\\u0000\",\"b\"],[\"a\",\"a\\u0000\"],[],[],"
                "true,false,[\"\",\"a\\u0000\",\"b\",\"\xc3\xbf\"],\"sortedset\"]");
    mr_sm_close(sm);
}

static void test_sortedset_agrees_with_sorting_after_random_changes(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(FIXTURE("sm_probe.lua"), 0, 0);
    expect_eval(
        sm,
        "local s, mirror = sortedset.new(), {}\n"
        "for i = 1, 20000 do\n"
        "  local k = string.format('k%d/%d', math.random(0, 9), math.random(0, 999))\n"
        "  if math.random() < 0.3 then\n"
        "    assert(s:remove(k) == (mirror[k] ~= nil)); mirror[k] = nil\n"
        "  else\n"
        "    assert(s:add(k) == (mirror[k] == nil)); mirror[k] = true\n"
        "  end\n"
        "end\n"
        "local function same(a, b)\n"
        "  if #a ~= #b then return false end\n"
        "  for i = 1, #a do if a[i] ~= b[i] then return false end end\n"
        "  return true\n"
        "end\n"
        "local ok = same(s:range(), canonical.keys(mirror))\n"
        "for _, q in ipairs({{'k3'}, {'k3/', 7}, {'k', 50, 'k5/5'}, {'k9', 3, 'k95'},"
        "                    {'', 10, 'k9/999'}, {'k2/1', 100, 'k2/0'}}) do\n"
        "  ok = ok and same(s:range(q[1], q[2], q[3]),"
        "                   canonical.keys(mirror, q[1], q[2], q[3]))\n"
        "end\n"
        "local f = sortedset.from(mirror)\n"
        "ok = ok and same(f:range(), s:range()) and f:count() == s:count()\n"
        "f:add('k0/0'); f:remove('k9/999')\n"
        "return {ok, s:count() > 1000}",
        "[true,true]");
    mr_sm_close(sm);

    /* its memory counts against the heap cap */
    sm = open_script(FIXTURE("sm_probe.lua"), 0, 8u << 20);
    /* (the set is local: once it is garbage the next command has room;
     * keeping it would leave the heap within bytes of the cap). Without the
     * cap, the default budget would trip first. The failed command leaves
     * no trace: probe.n is rolled back. */
    expect_eval_error(sm,
                      "local s = sortedset.new()\n"
                      "for i = 1, 1e7 do s:add(('k%099d'):format(i)); probe.n = i end",
                      MR_SM_MEMORY_EXCEEDED, "not enough memory");
    expect_eval(sm, "return probe.n == nil", "true");
    mr_sm_close(sm);
}

/* ---- kv
 * -------------------------------------------------------------------------------- */

static void test_kv_put_get_delete_cas_list(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(KV_LUA, 0, 0);
    mr_index i = 1;
    expect_apply(sm, i++, "{\"op\":\"get\",\"key\":\"a\"}", "{\"value\":null}");
    expect_apply(sm, i++,
                 "{\"op\":\"put\",\"key\":\"a\",\"value\":{\"n\":9223372036854775807}}",
                 "{\"ok\":true}");
    expect_apply(sm, i++, "{\"op\":\"get\",\"key\":\"a\"}",
                 "{\"value\":{\"n\":9223372036854775807}}");
    expect_apply(sm, i++, "{\"op\":\"put\",\"key\":\"ab\",\"value\":[1,\"x\",null]}",
                 "{\"ok\":true}");
    expect_apply(sm, i++, "{\"op\":\"put\",\"key\":\"b\",\"value\":\"\xc3\xa9\"}",
                 "{\"ok\":true}");
    expect_apply(sm, i++, "{\"op\":\"list\",\"prefix\":\"a\"}",
                 "{\"items\":[{\"key\":\"a\",\"value\":{\"n\":9223372036854775807}},"
                 "{\"key\":\"ab\",\"value\":[1,\"x\",null]}],\"truncated\":false}");
    expect_apply(sm, i++, "{\"op\":\"list\",\"limit\":1}",
                 "{\"items\":[{\"key\":\"a\",\"value\":{\"n\":9223372036854775807}}],"
                 "\"truncated\":true}");
    expect_apply(sm, i++, "{\"op\":\"list\",\"limit\":1,\"after\":\"a\"}",
                 "{\"items\":[{\"key\":\"ab\",\"value\":[1,\"x\",null]}],"
                 "\"truncated\":true}");
    expect_apply(sm, i++, "{\"op\":\"list\",\"prefix\":\"zz\"}",
                 "{\"items\":[],\"truncated\":false}");
    /* cas: mismatch, match, create-if-absent, delete-on-null */
    expect_apply(sm, i++,
                 "{\"op\":\"cas\",\"key\":\"b\",\"expect\":\"x\",\"value\":\"y\"}",
                 "{\"ok\":false,\"value\":\"\xc3\xa9\"}");
    expect_apply(sm, i++,
                 "{\"op\":\"cas\",\"key\":\"b\",\"expect\":\"\xc3\xa9\",\"value\":\"y\"}",
                 "{\"ok\":true,\"value\":\"y\"}");
    expect_apply(sm, i++,
                 "{\"op\":\"cas\",\"key\":\"a\",\"expect\":{\"n\":9223372036854775807},"
                 "\"value\":2}",
                 "{\"ok\":true,\"value\":2}");
    expect_apply(sm, i++, "{\"op\":\"cas\",\"key\":\"c\",\"expect\":null,\"value\":1}",
                 "{\"ok\":true,\"value\":1}");
    expect_apply(sm, i++, "{\"op\":\"cas\",\"key\":\"c\",\"value\":5}",
                 "{\"ok\":false,\"value\":1}");
    expect_apply(sm, i++, "{\"op\":\"cas\",\"key\":\"c\",\"expect\":1}",
                 "{\"ok\":true,\"value\":null}");
    expect_apply(sm, i++, "{\"op\":\"delete\",\"key\":\"ab\"}",
                 "{\"deleted\":true,\"ok\":true}");
    expect_apply(sm, i++, "{\"op\":\"delete\",\"key\":\"ab\"}",
                 "{\"deleted\":false,\"ok\":true}");
    expect_apply(sm, i++, "{\"op\":\"count\"}", "{\"count\":2}");
    /* mput: many keys in one command; an existing key is overwritten */
    expect_apply(sm, i++, "{\"op\":\"mput\",\"items\":{\"m2\":[2],\"m1\":1,\"b\":\"z\"}}",
                 "{\"count\":3,\"ok\":true}");
    expect_apply(sm, i++, "{\"op\":\"list\",\"prefix\":\"m\"}",
                 "{\"items\":[{\"key\":\"m1\",\"value\":1},{\"key\":\"m2\",\"value\":[2]}],"
                 "\"truncated\":false}");
    expect_apply(sm, i++, "{\"op\":\"get\",\"key\":\"b\"}", "{\"value\":\"z\"}");
    expect_apply(sm, i++, "{\"op\":\"mput\",\"items\":{}}", "{\"count\":0,\"ok\":true}");
    expect_apply(sm, i++, "{\"op\":\"delete\",\"key\":\"m1\"}",
                 "{\"deleted\":true,\"ok\":true}");
    expect_apply(sm, i++, "{\"op\":\"delete\",\"key\":\"m2\"}",
                 "{\"deleted\":true,\"ok\":true}");
    expect_apply(sm, i++, "{\"op\":\"put\",\"key\":\"b\",\"value\":\"y\"}",
                 "{\"ok\":true}");
    /* bad commands fail as script errors and change nothing */
    static const char *const bad[] = {"{\"op\":\"put\",\"key\":\"\",\"value\":1}",
                                      "{\"op\":\"put\",\"key\":\"k\"}",
                                      "{\"op\":\"put\",\"key\":3,\"value\":1}",
                                      "{\"op\":\"zap\"}",
                                      "[1]",
                                      "{\"op\":\"list\",\"limit\":-1}",
                                      "{\"op\":\"mput\"}",
                                      "{\"op\":\"mput\",\"items\":[1,2]}",
                                      "{\"op\":\"mput\",\"items\":{\"ok\":1,\"\":2}}"};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        struct mr_sm_result res = {0};
        assert_int_equal(apply_at(sm, i++, bad[k], &res), MR_SM_SCRIPT_ERROR);
        assert_null(res.events);
        mr_sm_result_free(&res);
    }
    expect_apply(sm, i++, "{\"op\":\"count\"}", "{\"count\":2}");
    /* queries: reads work, writes are refused */
    struct mr_sm_result res = {0};
    const char *q = "{\"op\":\"get\",\"key\":\"b\"}";
    assert_int_equal(mr_sm_query(sm, q, strlen(q), &res), 0);
    assert_int_equal(res.status, MR_SM_OK);
    assert_string_equal(res.json, "{\"value\":\"y\"}");
    mr_sm_result_free(&res);
    q = "{\"op\":\"put\",\"key\":\"b\",\"value\":1}";
    assert_int_equal(mr_sm_query(sm, q, strlen(q), &res), 0);
    assert_int_equal(res.status, MR_SM_SCRIPT_ERROR);
    assert_non_null(strstr(res.error, "send it as a command"));
    mr_sm_result_free(&res);
    mr_sm_close(sm);
}

static void test_kv_emits_change_events(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(KV_LUA, 0, 0);
    struct mr_sm_result res = {0};
    apply_at(sm, 1, "{\"op\":\"put\",\"key\":\"k\",\"value\":[1]}", &res);
    assert_string_equal(res.events, "[{\"key\":\"k\",\"op\":\"put\",\"value\":[1]}]");
    assert_int_equal(res.events_len, strlen(res.events));
    mr_sm_result_free(&res);
    apply_at(sm, 2, "{\"op\":\"get\",\"key\":\"k\"}", &res);
    assert_null(res.events);
    mr_sm_result_free(&res);
    apply_at(sm, 3, "{\"op\":\"delete\",\"key\":\"k\"}", &res);
    assert_string_equal(res.events, "[{\"key\":\"k\",\"op\":\"delete\"}]");
    mr_sm_result_free(&res);
    mr_sm_close(sm);

    /* several events; those of a command that fails are dropped with it */
    sm = open_script(FIXTURE("sm_probe.lua"), 0, 0);
    assert_int_equal(eval_at(sm, 1, "ctx.emit(1); ctx.emit({a = 'b'}); return 2", &res),
                     MR_SM_OK);
    assert_string_equal(res.events, "[1,{\"a\":\"b\"}]");
    mr_sm_result_free(&res);
    assert_int_equal(
        eval_at(sm, 1, "ctx.emit(1); ctx.emit({a = 'b'}); error('late')", &res),
        MR_SM_SCRIPT_ERROR);
    assert_null(res.events);
    mr_sm_result_free(&res);
    expect_eval_error(sm, "ctx.emit(function() end)", MR_SM_SCRIPT_ERROR, "ctx.emit");
    const char *q = "{\"op\":\"eval\",\"code\":\"local c = ...; return 1\"}";
    assert_int_equal(mr_sm_query(sm, q, strlen(q), &res), 0);
    assert_string_equal(res.json, "1");
    mr_sm_result_free(&res);
    mr_sm_close(sm);
}

static void fill_kv(struct mr_sm *sm, int n, int reverse, int churn)
{
    char cmd[256];
    mr_index idx = 1;
    for (int k = 0; k < n; k++) {
        int i = reverse ? n - 1 - k : k;
        snprintf(cmd, sizeof cmd,
                 "{\"op\":\"put\",\"key\":\"key/%05d\",\"value\":{\"i\":%d,\"s\":\"v%d\","
                 "\"l\":[%d,null]}}",
                 i, i, i, i);
        struct mr_sm_result res = {0};
        assert_int_equal(apply_at(sm, idx++, cmd, &res), MR_SM_OK);
        mr_sm_result_free(&res);
        if (churn && i % 7 == 0) {
            snprintf(cmd, sizeof cmd, "{\"op\":\"put\",\"key\":\"tmp/%d\",\"value\":1}",
                     i);
            assert_int_equal(apply_at(sm, idx++, cmd, &res), MR_SM_OK);
            mr_sm_result_free(&res);
            snprintf(cmd, sizeof cmd, "{\"op\":\"delete\",\"key\":\"tmp/%d\"}", i);
            assert_int_equal(apply_at(sm, idx++, cmd, &res), MR_SM_OK);
            mr_sm_result_free(&res);
        }
    }
}

static void
test_kv_snapshots_are_byte_identical_whatever_the_insertion_order(void **state)
{
    (void)state;
    char errmsg[MR_ERRMSG_SIZE];
    struct mr_sm *a = open_script(KV_LUA, 0, 0);
    struct mr_sm *b = open_script(KV_LUA, 0, 0);
    char ha[65], hb[65], h0[65];
    assert_int_equal(mr_sm_state_hash(a, h0, errmsg), 0);
    fill_kv(a, 2000, 0, 0);
    fill_kv(b, 2000, 1, 1);
    char *sa, *sb;
    size_t la, lb;
    assert_int_equal(mr_sm_snapshot(a, &sa, &la, errmsg), 0);
    assert_int_equal(mr_sm_snapshot(b, &sb, &lb, errmsg), 0);
    assert_int_equal(la, lb);
    assert_memory_equal(sa, sb, la);
    /* header line, dump magic, count 2000, then key/00000 and its JSON text */
    assert_memory_equal(sa, "moonraft-kv/2\nMRSM\1\0\0\0\xd0\x07\0\0\0\0\0\0\x09\x1d"
                            "key/00000{\"i\":0,\"l\":[0,null],\"s\":\"v0\"}",
                        14 + 16 + 2 + 9 + 29);
    assert_int_equal(mr_sm_state_hash(a, ha, errmsg), 0);
    assert_int_equal(mr_sm_state_hash(b, hb, errmsg), 0);
    assert_string_equal(ha, hb);
    assert_string_not_equal(ha, h0);
    assert_int_equal(strlen(ha), 64);
    char hx[65];
    mr_sm_sha256_hex(sa, la, hx);
    assert_string_equal(hx, ha);
    mr_sm_sha256_hex("abc", 3, hx);
    assert_string_equal(
        hx, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

    /* a third instance restored from a's snapshot has the same hash */
    struct mr_sm *c = open_script(KV_LUA, 0, 0);
    assert_int_equal(mr_sm_restore(c, sa, la, errmsg), 0);
    char hc[65];
    assert_int_equal(mr_sm_state_hash(c, hc, errmsg), 0);
    assert_string_equal(hc, ha);
    expect_apply(c, 1, "{\"op\":\"count\"}", "{\"count\":2000}");
    expect_apply(c, 1, "{\"op\":\"get\",\"key\":\"key/01999\"}",
                 "{\"value\":{\"i\":1999,\"l\":[1999,null],\"s\":\"v1999\"}}");
    mr_free(sa);
    mr_free(sb);
    mr_sm_close(a);
    mr_sm_close(b);
    mr_sm_close(c);
}

static void test_kv_cas_compares_values_as_kv1_did(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(KV_LUA, 0, 0);
    mr_index i = 1;
    /* numbers: 1 == 1.0 at the top level (as in Lua), -0.0 == 0 */
    expect_apply(sm, i++, "{\"op\":\"put\",\"key\":\"n\",\"value\":1}", "{\"ok\":true}");
    expect_apply(sm, i++, "{\"op\":\"cas\",\"key\":\"n\",\"expect\":1.0,\"value\":-0.0}",
                 "{\"ok\":true,\"value\":-0.0}");
    expect_apply(sm, i++, "{\"op\":\"cas\",\"key\":\"n\",\"expect\":0,\"value\":\"1\"}",
                 "{\"ok\":true,\"value\":\"1\"}");
    /* a string is not a number */
    expect_apply(sm, i++, "{\"op\":\"cas\",\"key\":\"n\",\"expect\":1,\"value\":2}",
                 "{\"ok\":false,\"value\":\"1\"}");
    expect_apply(sm, i++, "{\"op\":\"cas\",\"key\":\"n\",\"expect\":\"1\",\"value\":true}",
                 "{\"ok\":true,\"value\":true}");
    expect_apply(sm, i++, "{\"op\":\"cas\",\"key\":\"n\",\"expect\":1,\"value\":2}",
                 "{\"ok\":false,\"value\":true}");
    expect_apply(sm, i++, "{\"op\":\"cas\",\"key\":\"n\",\"expect\":true,\"value\":9007199254740993}",
                 "{\"ok\":true,\"value\":9007199254740993}");
    /* integers are exact: 2^53+1 is not the float 2^53 */
    expect_apply(sm, i++,
                 "{\"op\":\"cas\",\"key\":\"n\",\"expect\":9007199254740992.0,\"value\":0}",
                 "{\"ok\":false,\"value\":9007199254740993}");
    /* objects and arrays: deep equality whatever the key order; numbers
     * inside compare by their encoding (1 is not 1.0), as kv/1 did */
    expect_apply(sm, i++,
                 "{\"op\":\"put\",\"key\":\"o\",\"value\":{\"b\":[1,{\"y\":null,\"x\":\"s\"}],\"a\":1}}",
                 "{\"ok\":true}");
    expect_apply(sm, i++,
                 "{\"op\":\"cas\",\"key\":\"o\",\"expect\":{\"a\":1.0,\"b\":[1,{\"x\":\"s\",\"y\":null}]},"
                 "\"value\":1}",
                 "{\"ok\":false,\"value\":{\"a\":1,\"b\":[1,{\"x\":\"s\",\"y\":null}]}}");
    expect_apply(sm, i++,
                 "{\"op\":\"cas\",\"key\":\"o\",\"expect\":{\"a\":1,\"b\":[1,{\"x\":\"s\",\"y\":null}]},"
                 "\"value\":[]}",
                 "{\"ok\":true,\"value\":[]}");
    expect_apply(sm, i++, "{\"op\":\"cas\",\"key\":\"o\",\"expect\":{},\"value\":1}",
                 "{\"ok\":false,\"value\":[]}");
    expect_apply(sm, i++, "{\"op\":\"cas\",\"key\":\"o\",\"expect\":[],\"value\":{}}",
                 "{\"ok\":true,\"value\":{}}");
    /* a stored null is a value: the key exists */
    expect_apply(sm, i++, "{\"op\":\"put\",\"key\":\"z\",\"value\":null}", "{\"ok\":true}");
    expect_apply(sm, i++, "{\"op\":\"cas\",\"key\":\"z\",\"expect\":null,\"value\":1}",
                 "{\"ok\":false,\"value\":null}");
    expect_apply(sm, i++, "{\"op\":\"count\"}", "{\"count\":3}");
    expect_apply(sm, i++, "{\"op\":\"list\",\"prefix\":\"z\"}",
                 "{\"items\":[{\"key\":\"z\",\"value\":null}],\"truncated\":false}");
    mr_sm_close(sm);
}

static void test_kv_restores_a_v1_snapshot_and_writes_v2(void **state)
{
    (void)state;
    char errmsg[MR_ERRMSG_SIZE] = "";
    struct mr_sm *sm = open_script(KV_LUA, 0, 0);
    /* as kv/1 wrote it: canonical JSON, keys sorted */
    const char *v1 = "{\"data\":{\"a\":{\"n\":9223372036854775807,\"x\":[1.0,null,\"\xc3\xa9\"]},"
                     "\"b\":\"s\",\"c\":null,\"d\":[],\"e\":{},\"f\":-2.5e-07},"
                     "\"format\":\"moonraft-kv/1\"}";
    assert_int_equal(mr_sm_restore(sm, v1, strlen(v1), errmsg), 0);
    expect_apply(sm, 1, "{\"op\":\"count\"}", "{\"count\":6}");
    expect_apply(sm, 2, "{\"op\":\"list\"}",
                 "{\"items\":[{\"key\":\"a\",\"value\":{\"n\":9223372036854775807,"
                 "\"x\":[1.0,null,\"\xc3\xa9\"]}},{\"key\":\"b\",\"value\":\"s\"},"
                 "{\"key\":\"c\",\"value\":null},{\"key\":\"d\",\"value\":[]},"
                 "{\"key\":\"e\",\"value\":{}},{\"key\":\"f\",\"value\":-2.5e-07}],"
                 "\"truncated\":false}");
    char *snap, *again;
    size_t len, alen;
    assert_int_equal(mr_sm_snapshot(sm, &snap, &len, errmsg), 0);
    assert_true(len > 14);
    assert_memory_equal(snap, "moonraft-kv/2\nMRSM", 18);
    /* the v2 snapshot restores to the same store and the same bytes */
    struct mr_sm *b = open_script(KV_LUA, 0, 0);
    assert_int_equal(mr_sm_restore(b, snap, len, errmsg), 0);
    assert_int_equal(mr_sm_snapshot(b, &again, &alen, errmsg), 0);
    assert_int_equal(alen, len);
    assert_memory_equal(again, snap, len);
    expect_apply(b, 3, "{\"op\":\"get\",\"key\":\"a\"}",
                 "{\"value\":{\"n\":9223372036854775807,\"x\":[1.0,null,\"\xc3\xa9\"]}}");
    /* a bad v1 or v2 snapshot is refused and the store stays */
    static const char *const bad[] = {
        "{\"data\":{\"k\":1},\"format\":\"moonraft-kv/3\"}",
        "moonraft-kv/2\n",
        "moonraft-kv/2\nMRSM\1\0\0\0\1\0\0\0\0\0\0\0",
        "moonraft-kv/2\nMRSM\1\0\0\0\0\0\0\0\0\0\0\0x",
    };
    static const size_t badlen[] = {0, 14, 30, 31};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        size_t n = badlen[k] ? badlen[k] : strlen(bad[k]);
        assert_int_equal(mr_sm_restore(b, bad[k], n, errmsg), MR_ESCRIPT);
        assert_non_null(strstr(errmsg, "restore"));
    }
    assert_non_null(strstr(errmsg, "trailing bytes"));
    expect_apply(b, 4, "{\"op\":\"count\"}", "{\"count\":6}");
    mr_free(snap);
    mr_free(again);
    mr_sm_close(b);
    mr_sm_close(sm);
}

static void test_kv_snapshot_restore_snapshot_is_byte_identical(void **state)
{
    (void)state;
    char errmsg[MR_ERRMSG_SIZE] = "";
    struct mr_sm *a = open_script(KV_LUA, 0, 0), *b = open_script(KV_LUA, 0, 0);
    fill_kv(a, 3000, 1, 1);
    char *sa, *sb;
    size_t la, lb;
    assert_int_equal(mr_sm_snapshot(a, &sa, &la, errmsg), 0);
    assert_int_equal(mr_sm_restore(b, sa, la, errmsg), 0);
    assert_int_equal(mr_sm_snapshot(b, &sb, &lb, errmsg), 0);
    assert_int_equal(la, lb);
    assert_memory_equal(sa, sb, la);
    /* and both go on alike */
    expect_apply(a, 9000, "{\"op\":\"put\",\"key\":\"key/00007\",\"value\":[7]}", "{\"ok\":true}");
    expect_apply(b, 9000, "{\"op\":\"put\",\"key\":\"key/00007\",\"value\":[7]}", "{\"ok\":true}");
    char ha[65], hb[65];
    assert_int_equal(mr_sm_state_hash(a, ha, errmsg), 0);
    assert_int_equal(mr_sm_state_hash(b, hb, errmsg), 0);
    assert_string_equal(ha, hb);
    mr_free(sa);
    mr_free(sb);
    mr_sm_close(a);
    mr_sm_close(b);
}

static void test_a_failed_restore_leaves_the_old_state(void **state)
{
    (void)state;
    char errmsg[MR_ERRMSG_SIZE] = "";
    struct mr_sm *sm = open_script(KV_LUA, 0, 0);
    expect_apply(sm, 1, "{\"op\":\"put\",\"key\":\"keep\",\"value\":1}", "{\"ok\":true}");
    char before[65], after[65];
    assert_int_equal(mr_sm_state_hash(sm, before, errmsg), 0);
    static const char *const bad[] = {"garbage", "{\"format\":\"other\",\"data\":{}}", "",
                                      "{\"format\":\"moonraft-kv/1\",\"data\":5}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(mr_sm_restore(sm, bad[i], strlen(bad[i]), errmsg), MR_ESCRIPT);
        assert_non_null(strstr(errmsg, "restore"));
    }
    assert_int_equal(mr_sm_state_hash(sm, after, errmsg), 0);
    assert_string_equal(before, after);
    expect_apply(sm, 2, "{\"op\":\"get\",\"key\":\"keep\"}", "{\"value\":1}");
    /* an empty snapshot restores to an empty store */
    const char *empty = "{\"data\":{},\"format\":\"moonraft-kv/1\"}";
    assert_int_equal(mr_sm_restore(sm, empty, strlen(empty), errmsg), 0);
    expect_apply(sm, 3, "{\"op\":\"count\"}", "{\"count\":0}");
    mr_sm_close(sm);

    /* a restore() that raises, and a snapshot() result that is not a string */
    sm = open_script(FIXTURE("sm_probe.lua"), 0, 0);
    expect_apply(sm, 1, "{\"op\":\"set\",\"v\":[1,2]}", "true");
    const char *poison = "{\"poison\":true}";
    assert_int_equal(mr_sm_restore(sm, poison, strlen(poison), errmsg), MR_ESCRIPT);
    assert_non_null(strstr(errmsg, "poisoned snapshot"));
    char *snap;
    size_t len;
    assert_int_equal(mr_sm_snapshot(sm, &snap, &len, errmsg), 0);
    assert_string_equal(snap, "[1,2]");
    mr_free(snap);
    /* a snapshot() that fails: synchronously, and in a forked child */
    struct mr_sm_result res = {0};
    assert_int_equal(eval_at(sm, 2, "probe.state = {f = function() end}", &res),
                     MR_SM_OK);
    mr_sm_result_free(&res);
    assert_int_equal(mr_sm_snapshot(sm, &snap, &len, errmsg), MR_ESCRIPT);
    assert_non_null(strstr(errmsg, "cannot encode a value of type function"));
    char hex[65];
    assert_int_equal(mr_sm_state_hash(sm, hex, errmsg), MR_ESCRIPT);
    struct mr_sm_snapjob job;
    int fd = open("/dev/null", O_WRONLY);
    assert_int_equal(mr_sm_snapshot_fork(sm, fd, &job, errmsg), 0);
    close(fd);
    errmsg[0] = '\0';
    assert_int_equal(mr_sm_snapshot_poll(&job, 1, errmsg), MR_ESCRIPT);
    assert_non_null(strstr(errmsg, "cannot encode a value of type function"));
    mr_sm_close(sm);
}

/* The integrity checks hash the state in a forked child: the hash is the
 * state_hash at the moment of fork, whatever the parent does meanwhile. */
static void test_hash_fork_reports_the_state_hash_at_fork_time(void **state)
{
    (void)state;
    char errmsg[MR_ERRMSG_SIZE] = "";
    char before[65], after[65];
    struct mr_sm *sm = open_script(KV_LUA, 0, 0);
    fill_kv(sm, 300, 0, 0);
    assert_int_equal(mr_sm_state_hash(sm, before, errmsg), 0);
    struct mr_sm_snapjob job;
    assert_int_equal(mr_sm_hash_fork(sm, &job, errmsg), 0);
    assert_true(job.pid > 0);
    expect_apply(sm, 1000, "{\"op\":\"put\",\"key\":\"after\",\"value\":1}",
                 "{\"ok\":true}");
    assert_int_equal(mr_sm_state_hash(sm, after, errmsg), 0);
    assert_string_not_equal(before, after);
    int rv;
    while ((rv = mr_sm_snapshot_poll(&job, 0, errmsg)) == MR_EBUSY) usleep(1000);
    assert_int_equal(rv, 0);
    assert_string_equal(job.hash, before);
    assert_true(job.size > 0);
    /* a second job sees the new state */
    assert_int_equal(mr_sm_hash_fork(sm, &job, errmsg), 0);
    assert_int_equal(mr_sm_snapshot_poll(&job, 1, errmsg), 0);
    assert_string_equal(job.hash, after);
    mr_sm_close(sm);
}

static void test_fork_snapshot_writes_the_payload_while_the_parent_goes_on(void **state)
{
    (void)state;
    char errmsg[MR_ERRMSG_SIZE] = "";
    char path[] = "/tmp/mr_sm_snap_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    struct mr_sm *sm = open_script(KV_LUA, 0, 0);
    fill_kv(sm, 500, 0, 0);
    char *want;
    size_t wantlen;
    char hash[65];
    assert_int_equal(mr_sm_snapshot(sm, &want, &wantlen, errmsg), 0);
    assert_int_equal(mr_sm_state_hash(sm, hash, errmsg), 0);

    struct mr_sm_snapjob job;
    assert_int_equal(mr_sm_snapshot_fork(sm, fd, &job, errmsg), 0);
    assert_true(job.pid > 0);
    close(fd);
    /* the parent keeps applying: the child's image is frozen at fork time */
    expect_apply(sm, 1000, "{\"op\":\"put\",\"key\":\"after\",\"value\":1}",
                 "{\"ok\":true}");
    int rv;
    while ((rv = mr_sm_snapshot_poll(&job, 0, errmsg)) == MR_EBUSY) usleep(1000);
    assert_int_equal(rv, 0);
    assert_int_equal(job.pid, 0);
    assert_int_equal(job.size, wantlen);
    assert_int_equal(job.crc32c, mr_crc32c(0, want, wantlen));

    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *got = malloc(wantlen + 1);
    assert_int_equal(fread(got, 1, wantlen + 1, f), wantlen);
    fclose(f);
    assert_memory_equal(got, want, wantlen);
    free(got);
    mr_free(want);
    unlink(path);

    /* a bad fd: the child reports the write error */
    assert_int_equal(mr_sm_snapshot_fork(sm, -1, &job, errmsg), 0);
    assert_int_equal(mr_sm_snapshot_poll(&job, 1, errmsg), MR_EIOERR);
    assert_non_null(strstr(errmsg, "writing the snapshot"));
    /* abort kills a running child */
    fd = open("/dev/null", O_WRONLY);
    assert_int_equal(mr_sm_snapshot_fork(sm, fd, &job, errmsg), 0);
    close(fd);
    mr_sm_snapshot_abort(&job);
    assert_int_equal(job.pid, 0);
    assert_int_equal(mr_sm_snapshot_poll(&job, 1, errmsg), MR_EINVAL);
    mr_sm_close(sm);
}

static void test_host_allocation_failures_are_reported_not_crashed(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(KV_LUA, 0, 0);
    const char *cmd = "{\"op\":\"put\",\"key\":\"k\",\"value\":\"v\"}";
    /* Fail each allocation in turn: the call either completes or reports
     * MR_ENOMEM (the host's own allocations) or a memory result (Lua's). */
    for (unsigned long n = 1; n < 40; n++) {
        struct mr_sm_result res = {0};
        struct mr_sm_ctx ctx = {.index = n, .term = 1};
        mr_alloc_fail_at(n, 0);
        int rv = mr_sm_apply(sm, &ctx, cmd, strlen(cmd), &res);
        mr_alloc_fail_at(0, 0);
        assert_true(rv == 0 || rv == MR_ENOMEM);
        if (rv == 0)
            assert_true(res.status == MR_SM_OK || res.status == MR_SM_MEMORY_EXCEEDED);
        mr_sm_result_free(&res);
    }
    expect_apply(sm, 100, "{\"op\":\"get\",\"key\":\"k\"}", "{\"value\":\"v\"}");
    mr_sm_close(sm);
}

/* ---- timers ------------------------------------------------------------------------ */

static const char timer_script[] =
    "local M = {}\n"
    "local fired = json.array()\n"
    "function M.apply(cmd, ctx)\n"
    "  if cmd.op == 'wake' then\n"
    "    for i = 1, #cmd.at do ctx.wake_at(cmd.at[i]) end\n"
    "    if cmd.fail then error('boom', 0) end\n"
    "    return 'ok'\n"
    "  elseif cmd.op == 'many' then\n"
    "    for i = 1, cmd.n do ctx.wake_at(cmd.from + i) end\n"
    "    return 'ok'\n"
    "  elseif cmd.op == 'bad' then\n"
    "    ctx.wake_at(cmd.v)\n"
    "  end\n"
    "  return fired\n"
    "end\n"
    "function M.tick(ctx)\n"
    "  fired[#fired + 1] = ctx.time\n"
    "  ctx.emit({key = 't', time = ctx.time})\n"
    "  if ctx.time == 3000 then ctx.wake_at(4000) end\n"
    "  if ctx.time == 7000 then ctx.wake_at(9000); error('tick failed', 0) end\n"
    "  return #fired\n"
    "end\n"
    "function M.query() return fired end\n"
    "function M.snapshot() return json.encode(fired) end\n"
    "function M.restore(s) fired = json.decode(s) end\n"
    "return M\n";

static struct mr_sm *open_timer_script(const char *src)
{
    struct mr_sm *sm = NULL;
    char errmsg[MR_ERRMSG_SIZE] = "";
    struct mr_sm_options o = {.script_source = src, .script_name = "timers.lua"};
    if (mr_sm_open(&sm, &o, errmsg) != 0) fail_msg("open: %s", errmsg);
    return sm;
}

/* Runs mr_sm_tick at (index, time); returns the result's json (static copy). */
static const char *tick_at(struct mr_sm *sm, mr_index index, int64_t time_ms,
                           char *events, size_t cap)
{
    static char json[256];
    struct mr_sm_result res = {0};
    struct mr_sm_ctx ctx = {.index = index, .term = 1, .time_ms = time_ms};
    assert_int_equal(mr_sm_tick(sm, &ctx, &res), 0);
    if (res.status == MR_SM_OK) {
        snprintf(json, sizeof json, "%s", res.json);
    } else {
        snprintf(json, sizeof json, "error: %s", res.error);
    }
    snprintf(events, cap, "%s", res.events ? res.events : "");
    mr_sm_result_free(&res);
    return json;
}

static void test_tick_runs_once_deadlines_asked_for_in_apply_are_due(void **state)
{
    (void)state;
    struct mr_sm *sm = open_timer_script(timer_script);
    char ev[256];
    assert_int_equal(mr_sm_next_deadline(sm), INT64_MAX);
    assert_int_equal(mr_sm_has_tick(sm), 1);
    expect_apply(sm, 1, "{\"op\":\"wake\",\"at\":[3000,1000,1000,2000]}", "\"ok\"");
    assert_int_equal(mr_sm_deadline_count(sm), 3); /* equal values merged */
    assert_int_equal(mr_sm_next_deadline(sm), 1000);
    /* every deadline <= ctx.time goes at once, with one call of tick */
    assert_string_equal(tick_at(sm, 2, 2000, ev, sizeof ev), "1");
    assert_string_equal(ev, "[{\"key\":\"t\",\"time\":2000}]");
    assert_int_equal(mr_sm_deadline_count(sm), 1);
    assert_int_equal(mr_sm_next_deadline(sm), 3000);
    /* tick may ask for the next wake-up itself */
    assert_string_equal(tick_at(sm, 3, 3000, ev, sizeof ev), "2");
    assert_int_equal(mr_sm_next_deadline(sm), 4000);
    expect_apply(sm, 4, "{\"op\":\"list\"}", "[2000,3000]");
    mr_sm_close(sm);
}

static void test_tick_does_not_run_before_a_deadline_is_due(void **state)
{
    (void)state;
    struct mr_sm *sm = open_timer_script(timer_script);
    char ev[256];
    /* nothing pending: no call */
    assert_string_equal(tick_at(sm, 1, 5000, ev, sizeof ev), "null");
    assert_string_equal(ev, "");
    expect_apply(sm, 2, "{\"op\":\"wake\",\"at\":[6000]}", "\"ok\"");
    assert_string_equal(tick_at(sm, 3, 5999, ev, sizeof ev), "null");
    assert_string_equal(ev, "");
    assert_int_equal(mr_sm_next_deadline(sm), 6000);
    expect_apply(sm, 4, "{\"op\":\"list\"}", "[]");
    mr_sm_close(sm);
}

static void test_deadlines_of_a_call_that_fails_are_discarded(void **state)
{
    (void)state;
    struct mr_sm *sm = open_timer_script(timer_script);
    struct mr_sm_result res = {0};
    char ev[256];
    const char *cmd = "{\"op\":\"wake\",\"at\":[100,200],\"fail\":true}";
    assert_int_equal(apply_at(sm, 1, cmd, &res), MR_SM_SCRIPT_ERROR);
    mr_sm_result_free(&res);
    assert_int_equal(mr_sm_deadline_count(sm), 0);
    assert_int_equal(mr_sm_next_deadline(sm), INT64_MAX);
    /* a failing tick consumes its due deadlines and drops what it asked for */
    expect_apply(sm, 2, "{\"op\":\"wake\",\"at\":[7000,8000]}", "\"ok\"");
    assert_string_equal(tick_at(sm, 3, 7000, ev, sizeof ev), "error: tick failed");
    assert_string_equal(ev, ""); /* a failing tick leaves no trace: its events go too */
    assert_int_equal(mr_sm_deadline_count(sm), 1);
    assert_int_equal(mr_sm_next_deadline(sm), 8000);
    mr_sm_close(sm);
}

static void test_wake_at_refuses_non_integers_and_scripts_without_tick(void **state)
{
    (void)state;
    struct mr_sm *sm = open_timer_script(timer_script);
    char errmsg[MR_ERRMSG_SIZE] = "";
    static const char *const bad[] = {"{\"op\":\"bad\",\"v\":1.5}", "{\"op\":\"bad\",\"v\":\"100\"}",
                                      "{\"op\":\"bad\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct mr_sm_result res = {0};
        assert_int_equal(apply_at(sm, 1, bad[i], &res), MR_SM_SCRIPT_ERROR);
        if (strstr(res.error, "ctx.wake_at: ms must be an integer") == NULL)
            fail_msg("%s: %s", bad[i], res.error);
        mr_sm_result_free(&res);
    }
    expect_apply(sm, 2, "{\"op\":\"bad\",\"v\":1000.0}", "[]"); /* an integral float is fine */
    assert_int_equal(mr_sm_next_deadline(sm), 1000);
    mr_sm_close(sm);

    sm = open_script(FIXTURE("sm_probe.lua"), 0, 0);
    {
        struct mr_sm_result res = {0};
        assert_int_equal(mr_sm_has_tick(sm), 0);
        assert_int_equal(eval_at(sm, 1, "ctx.wake_at(5); return 1", &res), MR_SM_SCRIPT_ERROR);
        if (strstr(res.error, "defines no tick") == NULL) fail_msg("%s", res.error);
        mr_sm_result_free(&res);
        assert_int_equal(mr_sm_deadline_count(sm), 0);
    }
    mr_sm_close(sm);

    assert_int_equal(open_source("return {apply=function() end, query=function() end, "
                                 "snapshot=function() return '' end, restore=function() end, "
                                 "tick=5}",
                                 errmsg),
                     MR_ESCRIPT);
    assert_non_null(strstr(errmsg, "'tick' must be a function"));
}

static void test_pending_deadlines_are_capped(void **state)
{
    (void)state;
    struct mr_sm *sm = open_timer_script(timer_script);
    struct mr_sm_result res = {0};
    char cmd[128];
    snprintf(cmd, sizeof cmd, "{\"op\":\"many\",\"from\":0,\"n\":%d}", MR_SM_MAX_DEADLINES + 1);
    assert_int_equal(apply_at(sm, 1, cmd, &res), MR_SM_SCRIPT_ERROR);
    assert_non_null(strstr(res.error, "too many pending deadlines"));
    mr_sm_result_free(&res);
    assert_int_equal(mr_sm_deadline_count(sm), 0);
    snprintf(cmd, sizeof cmd, "{\"op\":\"many\",\"from\":0,\"n\":%d}", MR_SM_MAX_DEADLINES);
    expect_apply(sm, 2, cmd, "\"ok\"");
    assert_int_equal(mr_sm_deadline_count(sm), MR_SM_MAX_DEADLINES);
    /* one already pending is merged, a new one is refused */
    expect_apply(sm, 3, "{\"op\":\"wake\",\"at\":[5]}", "\"ok\"");
    assert_int_equal(apply_at(sm, 4, "{\"op\":\"wake\",\"at\":[0]}", &res), MR_SM_SCRIPT_ERROR);
    assert_non_null(strstr(res.error, "too many pending deadlines"));
    mr_sm_result_free(&res);
    mr_sm_close(sm);
}

static void test_deadlines_round_trip_through_encode_and_restore(void **state)
{
    (void)state;
    struct mr_sm *a = open_timer_script(timer_script), *b = open_timer_script(timer_script);
    char errmsg[MR_ERRMSG_SIZE] = "", ev[256];
    char *snap;
    size_t len;
    expect_apply(a, 1, "{\"op\":\"wake\",\"at\":[-5,9000,1700000000000,42]}", "\"ok\"");
    expect_apply(b, 1, "{\"op\":\"wake\",\"at\":[77]}", "\"ok\"");
    size_t n = mr_sm_deadlines_encode(a, NULL);
    assert_int_equal(n, 8 + 4 * 8);
    unsigned char *buf = malloc(n);
    assert_non_null(buf);
    assert_int_equal(mr_sm_deadlines_encode(a, buf), n);
    assert_int_equal(mr_sm_deadlines_check(buf, n, errmsg), 0);
    /* a restore replaces the whole state, deadlines included ... */
    assert_int_equal(mr_sm_snapshot(a, &snap, &len, errmsg), 0);
    assert_int_equal(mr_sm_restore(b, snap, len, errmsg), 0);
    mr_free(snap);
    assert_int_equal(mr_sm_deadline_count(b), 0);
    /* ... and the set saved beside the payload is put back */
    assert_int_equal(mr_sm_deadlines_restore(b, buf, n, errmsg), 0);
    assert_int_equal(mr_sm_deadline_count(b), 4);
    assert_int_equal(mr_sm_next_deadline(b), -5);
    unsigned char *again = malloc(n);
    assert_non_null(again);
    assert_int_equal(mr_sm_deadlines_encode(b, again), n);
    assert_memory_equal(buf, again, n);
    /* both fire alike */
    assert_string_equal(tick_at(a, 2, 9000, ev, sizeof ev), "1");
    assert_string_equal(tick_at(b, 2, 9000, ev, sizeof ev), "1");
    assert_int_equal(mr_sm_next_deadline(a), mr_sm_next_deadline(b));
    assert_int_equal(mr_sm_next_deadline(b), 1700000000000);
    /* damaged bytes are refused and leave the set alone */
    memcpy(again, buf, n);
    mr_put_u64(again + 8 + 8, (uint64_t)-10); /* -5, -10: not ascending */
    assert_int_equal(mr_sm_deadlines_check(again, n, errmsg), MR_EMALFORMED);
    assert_int_equal(mr_sm_deadlines_restore(b, again, n, errmsg), MR_EMALFORMED);
    assert_int_equal(mr_sm_deadline_count(b), 1);
    assert_int_equal(mr_sm_deadlines_check(buf, n - 1, errmsg), MR_EMALFORMED);
    mr_put_u32(again, 5); /* count does not match the length */
    assert_int_equal(mr_sm_deadlines_check(again, n, errmsg), MR_EMALFORMED);
    assert_int_equal(mr_sm_deadlines_check(buf, 4, errmsg), MR_EMALFORMED);
    /* none */
    assert_int_equal(mr_sm_deadlines_restore(b, NULL, 0, errmsg), 0);
    assert_int_equal(mr_sm_next_deadline(b), INT64_MAX);
    free(buf);
    free(again);
    mr_sm_close(a);
    mr_sm_close(b);
}

/* ---- deploying a new script ------------------------------------------------------- */

/* v1: a counter; snapshot "n=<count>". */
static const char deploy_v1[] =
    "local n, M = 0, {}\n"
    "function M.apply(cmd, ctx) n = n + (cmd.add or 0); return {n = n, v = 1} end\n"
    "function M.query(q) return n end\n"
    "function M.snapshot() return 'n=' .. n end\n"
    "function M.restore(s) n = tonumber(s:match('^n=(%d+)$')) end\n"
    "return M\n";
/* v2, same snapshot format: restore() takes the state over; adds twice. */
static const char deploy_v2_same[] =
    "local n, M = 0, {}\n"
    "function M.apply(cmd, ctx) n = n + 2 * (cmd.add or 0); return {n = n, v = 2} end\n"
    "function M.query(q) return n end\n"
    "function M.snapshot() return 'n=' .. n end\n"
    "function M.restore(s) n = tonumber(s:match('^n=(%d+)$')) end\n"
    "return M\n";
/* v3, a new format (JSON): migrate() converts v1's, and records ctx.index. */
static const char deploy_v3_migrate[] =
    "local st, M = {n = 0}, {}\n"
    "function M.apply(cmd, ctx) st.n = st.n + (cmd.add or 0); return {n = st.n, v = 3} end\n"
    "function M.query(q) return st end\n"
    "function M.snapshot() return json.encode(st) end\n"
    "function M.restore(s) st = json.decode(s) end\n"
    "function M.migrate(old, ctx)\n"
    "  st = {n = tonumber(old:match('^n=(%d+)$')), since = ctx.index, r = ctx.random(1000)}\n"
    "end\n"
    "return M\n";
/* v4: its migration raises. */
static const char deploy_v4_raises[] =
    "local M = {}\n"
    "function M.apply(cmd, ctx) return 4 end\n"
    "function M.query(q) return 4 end\n"
    "function M.snapshot() return '' end\n"
    "function M.restore(s) end\n"
    "function M.migrate(old, ctx) error('cannot read ' .. old) end\n"
    "return M\n";

static struct mr_sm *open_v1(void)
{
    struct mr_sm *sm = NULL;
    char errmsg[MR_ERRMSG_SIZE] = "";
    struct mr_sm_options o = {.script_source = deploy_v1, .script_name = "/etc/v1.lua"};
    if (mr_sm_open(&sm, &o, errmsg) != 0) fail_msg("open: %s", errmsg);
    return sm;
}

static int deploy_at(struct mr_sm *sm, mr_index index, const char *src, const char *label,
                     char *errmsg)
{
    struct mr_sm_ctx ctx = {.index = index, .term = 2, .time_ms = 1700000000000};
    return mr_sm_deploy(sm, &ctx, src, strlen(src), label, strlen(label), errmsg);
}

static void expect_query(struct mr_sm *sm, const char *want)
{
    struct mr_sm_result res = {0};
    assert_int_equal(mr_sm_query(sm, "{}", 2, &res), 0);
    assert_int_equal(res.status, MR_SM_OK);
    assert_string_equal(res.json, want);
    mr_sm_result_free(&res);
}

static void test_the_first_script_is_labelled_by_its_file_name_at_index_0(void **state)
{
    (void)state;
    struct mr_sm *sm = open_v1();
    struct mr_sm_script_info si;
    char hex[65];
    mr_sm_script_info(sm, &si);
    mr_sm_sha256_hex(deploy_v1, strlen(deploy_v1), hex);
    assert_string_equal(si.hash, hex);
    assert_string_equal(si.config_hash, hex);
    assert_string_equal(si.label, "v1.lua");
    assert_int_equal(si.size, strlen(deploy_v1));
    assert_memory_equal(si.source, deploy_v1, si.size);
    assert_int_equal(si.index, 0);
    mr_sm_close(sm);
}

static void test_deploy_hands_the_old_snapshot_to_the_new_restore(void **state)
{
    (void)state;
    struct mr_sm *sm = open_v1();
    struct mr_sm_script_info si;
    char errmsg[MR_ERRMSG_SIZE] = "", hex[65];
    expect_apply(sm, 1, "{\"add\":5}", "{\"n\":5,\"v\":1}");
    assert_int_equal(deploy_at(sm, 2, deploy_v2_same, "v2.lua", errmsg), 0);
    expect_query(sm, "5");
    expect_apply(sm, 3, "{\"add\":5}", "{\"n\":15,\"v\":2}");
    mr_sm_script_info(sm, &si);
    mr_sm_sha256_hex(deploy_v2_same, strlen(deploy_v2_same), hex);
    assert_string_equal(si.hash, hex);
    assert_string_not_equal(si.config_hash, hex);
    assert_string_equal(si.label, "v2.lua");
    assert_int_equal(si.index, 2);
    /* a restore now reloads the new script, not the one given at open */
    assert_int_equal(mr_sm_restore(sm, "n=1", 3, errmsg), 0);
    expect_apply(sm, 4, "{\"add\":1}", "{\"n\":3,\"v\":2}");
    mr_sm_close(sm);
}

static void test_deploy_calls_migrate_when_the_new_script_defines_it(void **state)
{
    (void)state;
    struct mr_sm *a = open_v1(), *b = open_v1();
    char errmsg[MR_ERRMSG_SIZE] = "";
    char *sa, *sb;
    size_t la, lb;
    expect_apply(a, 1, "{\"add\":7}", "{\"n\":7,\"v\":1}");
    expect_apply(b, 1, "{\"add\":7}", "{\"n\":7,\"v\":1}");
    int drv = deploy_at(a, 9, deploy_v3_migrate, "v3.lua", errmsg);
    if (drv != 0) fail_msg("deploy: %s", errmsg);
    assert_int_equal(deploy_at(b, 9, deploy_v3_migrate, "v3.lua", errmsg), 0);
    expect_apply(a, 10, "{\"add\":1}", "{\"n\":8,\"v\":3}");
    expect_apply(b, 10, "{\"add\":1}", "{\"n\":8,\"v\":3}");
    /* ctx.index is the switch's; ctx.random is seeded alike on both */
    assert_int_equal(mr_sm_snapshot(a, &sa, &la, errmsg), 0);
    assert_int_equal(mr_sm_snapshot(b, &sb, &lb, errmsg), 0);
    assert_non_null(strstr(sa, "\"since\":9"));
    assert_int_equal(la, lb);
    assert_memory_equal(sa, sb, la);
    mr_free(sa);
    mr_free(sb);
    mr_sm_close(a);
    mr_sm_close(b);
}

static void test_a_failing_migration_keeps_the_old_script_and_its_state(void **state)
{
    (void)state;
    struct mr_sm *sm = open_v1();
    struct mr_sm_script_info before, after;
    char errmsg[MR_ERRMSG_SIZE] = "";
    expect_apply(sm, 1, "{\"add\":3}", "{\"n\":3,\"v\":1}");
    mr_sm_script_info(sm, &before);
    char hash_before[65];
    memcpy(hash_before, before.hash, sizeof hash_before);
    assert_int_equal(deploy_at(sm, 2, deploy_v4_raises, "v4.lua", errmsg), MR_ESCRIPT);
    assert_non_null(strstr(errmsg, "migrate: v4.lua:6: cannot read n=3"));
    mr_sm_script_info(sm, &after);
    assert_string_equal(after.hash, hash_before);
    assert_string_equal(after.label, "v1.lua");
    assert_int_equal(after.index, 0);
    expect_apply(sm, 3, "{\"add\":1}", "{\"n\":4,\"v\":1}");
    /* a restore() that raises (no migrate) is refused the same way */
    static const char bad_restore[] =
        "local M = {}\n"
        "function M.apply() return 0 end\n"
        "function M.query() return 0 end\n"
        "function M.snapshot() return '' end\n"
        "function M.restore(s) error('unknown format') end\n"
        "return M\n";
    assert_int_equal(deploy_at(sm, 4, bad_restore, "", errmsg), MR_ESCRIPT);
    assert_non_null(strstr(errmsg, "restore: script.lua:5: unknown format"));
    expect_apply(sm, 5, "{\"add\":1}", "{\"n\":5,\"v\":1}");
    mr_sm_close(sm);
}

static void test_validate_rejects_a_syntax_error_and_changes_nothing(void **state)
{
    (void)state;
    struct mr_sm *sm = open_v1();
    char errmsg[MR_ERRMSG_SIZE] = "";
    static const char broken[] = "local M = {}\nfunction M.apply(\nreturn M\n";
    static const char no_query[] =
        "return {apply = function() end, snapshot = function() return '' end, "
        "restore = function() end}\n";
    expect_apply(sm, 1, "{\"add\":2}", "{\"n\":2,\"v\":1}");
    assert_int_equal(mr_sm_validate(sm, broken, strlen(broken), "bad.lua", 7, errmsg),
                     MR_ESCRIPT);
    assert_non_null(strstr(errmsg, "bad.lua:3:"));
    assert_int_equal(mr_sm_validate(sm, no_query, strlen(no_query), "nq.lua", 6, errmsg),
                     MR_ESCRIPT);
    assert_non_null(strstr(errmsg, "query"));
    assert_int_equal(
        mr_sm_validate(sm, deploy_v2_same, strlen(deploy_v2_same), "v2.lua", 6, errmsg), 0);
    /* a deploy of the broken one is refused too, before any migration */
    assert_int_equal(deploy_at(sm, 2, broken, "bad.lua", errmsg), MR_ESCRIPT);
    expect_apply(sm, 3, "{\"add\":2}", "{\"n\":4,\"v\":1}");
    mr_sm_close(sm);
}

static void test_restore_script_installs_the_script_the_snapshot_was_taken_with(void **state)
{
    (void)state;
    struct mr_sm *sm = open_v1();
    struct mr_sm_script_info si;
    char errmsg[MR_ERRMSG_SIZE] = "";
    assert_int_equal(mr_sm_restore_script(sm, deploy_v2_same, strlen(deploy_v2_same),
                                          "v2.lua", 6, 42, "n=10", 4, errmsg),
                     0);
    mr_sm_script_info(sm, &si);
    assert_string_equal(si.label, "v2.lua");
    assert_int_equal(si.index, 42);
    expect_apply(sm, 43, "{\"add\":1}", "{\"n\":12,\"v\":2}");
    /* a failure keeps both script and state */
    assert_int_equal(mr_sm_restore_script(sm, deploy_v3_migrate, strlen(deploy_v3_migrate),
                                          "v3.lua", 6, 50, "garbage", 7, errmsg),
                     MR_ESCRIPT);
    expect_apply(sm, 44, "{\"add\":1}", "{\"n\":14,\"v\":2}");
    /* NULL: the script given at open (snapshots from before scripts were recorded) */
    assert_int_equal(mr_sm_restore_script(sm, NULL, 0, NULL, 0, 99, "n=1", 3, errmsg), 0);
    mr_sm_script_info(sm, &si);
    assert_string_equal(si.label, "v1.lua");
    assert_int_equal(si.index, 0);
    assert_string_equal(si.hash, si.config_hash);
    expect_apply(sm, 45, "{\"add\":1}", "{\"n\":2,\"v\":1}");
    mr_sm_close(sm);
}

static void test_deploy_fork_tries_the_migration_without_touching_the_parent(void **state)
{
    (void)state;
    struct mr_sm *sm = open_v1();
    struct mr_sm_snapjob job;
    struct mr_sm_script_info si;
    struct mr_sm_ctx ctx = {.index = 2, .term = 1, .time_ms = 0};
    char errmsg[MR_ERRMSG_SIZE] = "";
    expect_apply(sm, 1, "{\"add\":3}", "{\"n\":3,\"v\":1}");
    assert_int_equal(mr_sm_deploy_fork(sm, &ctx, deploy_v4_raises, strlen(deploy_v4_raises),
                                       "v4.lua", 6, &job, errmsg),
                     0);
    assert_int_equal(mr_sm_snapshot_poll(&job, 1, errmsg), MR_ESCRIPT);
    assert_non_null(strstr(errmsg, "cannot read n=3"));
    assert_int_equal(mr_sm_deploy_fork(sm, &ctx, deploy_v3_migrate, strlen(deploy_v3_migrate),
                                       "v3.lua", 6, &job, errmsg),
                     0);
    assert_int_equal(mr_sm_snapshot_poll(&job, 1, errmsg), 0);
    /* the parent still runs v1 */
    mr_sm_script_info(sm, &si);
    assert_string_equal(si.label, "v1.lua");
    expect_apply(sm, 2, "{\"add\":1}", "{\"n\":4,\"v\":1}");
    mr_sm_close(sm);
}

/* ---- atomic commands (sm_txn.c) --------------------------------------------------- */

#define ATOMIC FIXTURE("sm_atomic.lua")

static char *snapshot_text(struct mr_sm *sm)
{
    char errmsg[MR_ERRMSG_SIZE];
    char *data = NULL;
    size_t len;
    if (mr_sm_snapshot(sm, &data, &len, errmsg) != 0) fail_msg("snapshot: %s", errmsg);
    return data;
}

/* Runs code that must fail with `status` (error containing needle) and leave
 * the state exactly as it was: same snapshot, same state hash, no events. */
static void expect_no_trace(struct mr_sm *sm, const char *code, int status,
                            const char *needle)
{
    char errmsg[MR_ERRMSG_SIZE], h0[65], h1[65];
    char *before = snapshot_text(sm);
    assert_int_equal(mr_sm_state_hash(sm, h0, errmsg), 0);
    struct mr_sm_result res = {0};
    int st = eval_at(sm, 7, code, &res);
    if (st != status)
        fail_msg("%s -> %s (%s), wanted %s", code, mr_sm_status_name(st),
                 res.error ? res.error : res.json, mr_sm_status_name(status));
    if (strstr(res.error, needle) == NULL)
        fail_msg("error '%s' lacks '%s'", res.error, needle);
    assert_null(res.json);
    assert_null(res.events);
    mr_sm_result_free(&res);
    char *after = snapshot_text(sm);
    assert_string_equal(after, before);
    assert_int_equal(mr_sm_state_hash(sm, h1, errmsg), 0);
    assert_string_equal(h1, h0);
    free(before);
    free(after);
}

static void expect_eval_query(struct mr_sm *sm, const char *code, const char *want)
{
    char *q = eval_cmd(code);
    struct mr_sm_result res = {0};
    assert_int_equal(mr_sm_query(sm, q, strlen(q), &res), 0);
    if (res.status != MR_SM_OK)
        fail_msg("%s -> %s: %s", code, mr_sm_status_name(res.status), res.error);
    assert_string_equal(res.json, want);
    mr_sm_result_free(&res);
    free(q);
}

static void test_a_failing_apply_rolls_back_its_plain_table_writes(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(ATOMIC, 0, 0);
    /* overwrites, appends, inserts, removals, deletions, nested tables */
    expect_no_trace(sm,
                    "M.data.list[4] = 4; table.insert(M.data.list, 5)\n"
                    "table.insert(M.data.list, 1, 0); table.remove(M.data.list, 2)\n"
                    "M.data.nested.a.b.c = 2; M.data.name = nil; M.gone = nil\n"
                    "ctx.emit('changed'); error('boom')",
                    MR_SM_SCRIPT_ERROR, "boom");
    /* new tables stored, then changed; a sort in place */
    expect_no_trace(sm,
                    "M.data.fresh = {1, {x = {}}}; M.data.fresh[2].x.y = 1\n"
                    "M.extra = M.data.fresh\n"
                    "table.sort(M.data.list, function(a, b) return a > b end)\n"
                    "error('boom')",
                    MR_SM_SCRIPT_ERROR, "boom");
    /* a subtree moved elsewhere and changed there */
    expect_no_trace(sm,
                    "local t = M.data.nested; M.data.nested = nil; t.a.b.c = 5\n"
                    "M.data.moved = t; t.a.b = {c = 6}; error('boom')",
                    MR_SM_SCRIPT_ERROR, "boom");
    /* everything deleted while iterating; rawset */
    expect_no_trace(sm,
                    "for k in pairs(M.data) do M.data[k] = nil end\n"
                    "rawset(M.data, 'r', 1); rawset(M, 'data', {}); error('boom')",
                    MR_SM_SCRIPT_ERROR, "boom");
    /* the same key written again and again, other keys in between */
    expect_no_trace(sm,
                    "for i = 1, 1000 do M.data.name = i; M.data.list[1] = i end\n"
                    "M.data.name = 'x'; up.map:set('k', 'v'); M.data.name = 'y'\n"
                    "M.data.list[1] = {}; error('boom')",
                    MR_SM_SCRIPT_ERROR, "boom");
    expect_eval_query(sm, "return {M.data.list, M.data.nested, M.data.name, M.gone}",
                 "[[1,2,3],{\"a\":{\"b\":{\"c\":1}}},\"n\",\"here\"]");
    /* a later command that succeeds is kept; a table it stored is tracked
     * from then on */
    expect_eval_at(sm, 8, "M.data.list[1] = 'ok'; M.data.fresh = {n = 1}; return M.data.list",
                   "[\"ok\",2,3]");
    expect_no_trace(sm, "M.data.fresh.n = 2; M.data.fresh.m = {}; error('boom')",
                    MR_SM_SCRIPT_ERROR, "boom");
    expect_eval_query(sm, "return {M.data.fresh.n, M.data.fresh.m == nil, M.data.list[1]}",
                 "[1,true,\"ok\"]");
    mr_sm_close(sm);
}

static void test_a_failing_apply_rolls_back_upvalues_and_c_side_stores(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(ATOMIC, 0, 0);
    expect_no_trace(sm, "up.set_count(5); up.bump(); up.set_cache({a = 1}); error('x')",
                    MR_SM_SCRIPT_ERROR, "x");
    /* an upvalue assigned only by a closure made during the command */
    expect_no_trace(sm, "up.bump_deep(); error('x')", MR_SM_SCRIPT_ERROR, "x");
    expect_no_trace(sm,
                    "up.map:set('k', 'v'); up.map:set('old', 'new'); up.map:remove('gone')\n"
                    "up.set:add('x'); up.set:remove('y'); up.map:set('k', 'w'); error('x')",
                    MR_SM_SCRIPT_ERROR, "x");
    expect_eval_query(sm, "return {up.count(), up.cache() == nil, up.map:get('old'), up.map:has('gone'), "
                     "up.map:has('k'), up.set:has('x'), up.set:has('y')}",
                 "[0,true,\"1\",true,false,false,true]");
    /* a table assigned straight to an upvalue by a command that succeeded is
     * tracked by the next one */
    expect_eval_at(sm, 8, "up.set_cache({a = {1}}); up.bump(); up.map:set('k', 'v'); "
                          "return {up.count(), up.map:count()}",
                   "[1,3]");
    expect_no_trace(sm,
                    "up.cache().a[1] = 2; up.cache().b = {}; up.set_cache(nil); up.bump()\n"
                    "up.map:set('k', 'w'); up.map:remove('k'); up.map:remove('old'); error('x')",
                    MR_SM_SCRIPT_ERROR, "x");
    expect_eval_query(sm, "return {up.cache(), up.count(), up.map:get('k')}", "[{\"a\":[1]},1,\"v\"]");
    expect_eval_at(sm, 9, "up.bump_deep(); return {up.deep(), up.count()}", "[10,1]");
    mr_sm_close(sm);
}

static void test_a_budget_or_heap_cap_trip_rolls_back_too(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(ATOMIC, 200000, 0);
    expect_no_trace(sm,
                    "M.data.nested.a.b.c = 99; up.bump(); up.map:set('z', 'z')\n"
                    "M.data.list[9] = {}; while true do end",
                    MR_SM_BUDGET_EXCEEDED, "instruction budget");
    expect_no_trace(sm,
                    "up.bump(); M.data.x = 1\n"
                    "pcall(function() while true do end end); M.data.y = 1",
                    MR_SM_BUDGET_EXCEEDED, "instruction budget");
    expect_eval_at(sm, 8, "up.bump(); return up.count()", "1");
    mr_sm_close(sm);

    sm = open_script(ATOMIC, 0, 8u << 20);
    expect_no_trace(sm,
                    "M.data.big = {}; up.set_cache(M.data.big); up.map:set('z', 'z')\n"
                    "for i = 1, 1e7 do M.data.big[i] = ('x'):rep(64) .. i end",
                    MR_SM_MEMORY_EXCEEDED, "not enough memory");
    expect_eval_at(sm, 8, "M.data.small = {1}; return {#M.data.small, M.data.big == nil}",
                   "[1,true]");
    mr_sm_close(sm);
}

static void test_an_unencodable_result_rolls_back(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(ATOMIC, 0, 0);
    expect_no_trace(sm, "M.data.list[1] = 'changed'; up.bump(); return function() end",
                    MR_SM_SCRIPT_ERROR, "JSON cannot hold");
    expect_no_trace(sm, "up.map:set('k', 'v'); M.data.list = {}; return {[true] = 1}",
                    MR_SM_SCRIPT_ERROR, "JSON cannot hold");
    mr_sm_close(sm);
}

static void test_user_metatables_on_state_tables_keep_working(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(ATOMIC, 0, 0);
    expect_eval_at(sm, 2,
                   "M.acct:deposit(5)\n"
                   "return {M.acct.balance, getmetatable(M.acct) == up.Account,\n"
                   "  tostring(M.acct), rawget(M.acct, 'deposit') == nil,\n"
                   "  M.acct.deposit == up.Account.deposit, rawget(M.acct, 'balance')}",
                   "[15,true,\"acct 15\",true,true,15]");
    expect_no_trace(sm, "M.acct:deposit(100); setmetatable(M.acct, nil); error('x')",
                    MR_SM_SCRIPT_ERROR, "x");
    expect_eval_query(sm, "return {M.acct.balance, getmetatable(M.acct) == up.Account}",
                 "[15,true]");
    /* an instance made by a command; the class changed by one that fails */
    expect_eval_at(sm, 3,
                   "M.acct2 = up.Account.new(1); M.acct2:deposit(1)\n"
                   "return {M.acct2.balance, tostring(M.acct2), getmetatable(M.acct2) == "
                   "getmetatable(M.acct)}",
                   "[2,\"acct 2\",true]");
    expect_no_trace(sm,
                    "up.Account.fee = 1\n"
                    "function up.Account:charge() self.balance = self.balance - self.fee end\n"
                    "up.Account.__tostring = nil; M.acct:charge(); error('x')",
                    MR_SM_SCRIPT_ERROR, "x");
    expect_eval_query(sm,
                 "return {up.Account.fee == nil, up.Account.charge == nil, tostring(M.acct)}",
                 "[true,true,\"acct 15\"]");
    /* a user __newindex runs for new keys, not for existing ones */
    expect_eval_at(sm, 4, "M.logged.x = 2; return rawget(M.logged, 'x')", "4");
    expect_no_trace(sm, "M.logged.y = 3; M.logged.x = 1; error('x')", MR_SM_SCRIPT_ERROR,
                    "x");
    expect_eval_query(sm, "return {M.logged.x, M.logged.y == nil}", "[4,true]");
    /* a function __index gets the state table itself */
    expect_eval_at(sm, 5,
                   "M.def = setmetatable({a = 1}, {__index = function(t, k)\n"
                   "  return rawget(t, 'a') .. k end})\n"
                   "return {M.def.a, M.def.zz, rawget(M.def, 'zz') == nil}",
                   "[1,\"1zz\",true]");
    /* __gc and __mode stay refused on a state table used as a metatable */
    expect_eval_error(sm, "up.Account.__mode = 'k'", MR_SM_SCRIPT_ERROR,
                      "__mode is not allowed");
    expect_eval_error(sm, "rawset(up.Account, '__gc', tostring)", MR_SM_SCRIPT_ERROR,
                      "__gc is not allowed");
    mr_sm_close(sm);
}

static void test_state_tables_iterate_measure_and_encode_as_plain_ones(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(ATOMIC, 0, 0);
    expect_eval_at(
        sm, 2,
        "local function copy(t)\n"
        "  if type(t) ~= 'table' then return t end\n"
        "  local c = {}; for k, v in pairs(t) do c[k] = copy(v) end; return c\n"
        "end\n"
        "M.data.mixed = {10, 20, x = 1, [5] = 5, [true] = 't', [1.5] = 'f'}\n"
        "local d = M.data\n"
        "local plain = copy(d)\n"
        "local a, b = {}, {}\n"
        "for k in pairs(d.mixed) do a[#a + 1] = tostring(k) end\n"
        "for k in pairs(plain.mixed) do b[#b + 1] = tostring(k) end\n"
        "local s = 0; for _, v in ipairs(d.list) do s = s + v end\n"
        "d.mixed[true], d.mixed[1.5] = nil, nil\n"
        "plain.mixed[true], plain.mixed[1.5] = nil, nil\n"
        "return {json.encode(d) == json.encode(plain), table.concat(a, ','),\n"
        "  table.concat(a, ',') == table.concat(b, ','), next(d) == next(plain),\n"
        "  #d.list, rawlen(d.list), select('#', table.unpack(d.list)),\n"
        "  table.concat(d.list, '-'), canonical.keys(d)[1], sortedset.from(d):count(), s,\n"
        "  type(d), json.encode(d.list), json.encode(d.mixed)}",
        "[true,\"1,1.5,2,5,x,true\",true,true,3,3,3,\"1-2-3\",\"list\",4,6,\"table\","
        "\"[1,2,3]\",\"{\\\"1\\\":10,\\\"2\\\":20,\\\"5\\\":5,\\\"x\\\":1}\"]");
    /* json.array on a state table, and an empty array stored in one */
    expect_eval_at(sm, 3,
                   "M.data.e1 = json.array(); M.data.e2 = {}; json.array(M.data.e2)\n"
                   "return {json.encode(M.data.e1), json.encode(M.data.e2), M.data.e1, "
                   "getmetatable(M.data.e2) == getmetatable(json.array())}",
                   "[\"[]\",\"[]\",[],true]");
    mr_sm_close(sm);
}

static void test_a_query_cannot_change_the_state(void **state)
{
    (void)state;
    struct mr_sm *sm = open_script(ATOMIC, 0, 0);
    char *before = snapshot_text(sm);
    expect_eval_query(sm,
                 "M.data.list[1] = 'q'; up.bump(); up.map:set('q', 'q'); M.data.t = {}\n"
                 "return {M.data.list[1], up.count(), up.map:get('q')}",
                 "[\"q\",1,\"q\"]");
    char *after = snapshot_text(sm);
    assert_string_equal(after, before);
    free(before);
    free(after);
    mr_sm_close(sm);
}

/* The same commands, with failures among them, on a replica that replays
 * them all and on one restored from a snapshot taken halfway. */
static void test_replayed_and_restored_states_agree_after_failed_commands(void **state)
{
    (void)state;
    static const char *const first[] = {
        "M.data.list[4] = 4; up.bump(); return 1",
        "M.data.nested.a.b.c = 2; up.map:set('a', 'b'); error('no')",
        "M.acct:deposit(3); up.set_cache({n = 1}); return 2",
        "up.cache().n = 2; M.acct:deposit(100); while true do end",
        "table.insert(M.data.list, 5); up.set:add('s'); return 3",
    };
    static const char *const second[] = {
        "up.cache().n = up.cache().n + 1; table.remove(M.data.list, 1); return 4",
        "up.map:remove('old'); M.data.gone = true; up.bump(); error('no')",
        "M.acct2 = up.Account.new(7); M.logged.z = 1; return 5",
        "M.acct2:deposit(1); up.set:remove('s'); return {1, function() end}",
        "up.bump(); up.map:set('c', 'd'); return up.count()",
    };
    struct mr_sm *a = open_script(ATOMIC, 100000, 0);
    struct mr_sm *b = open_script(ATOMIC, 100000, 0);
    struct mr_sm_result ra = {0}, rb = {0};
    mr_index idx = 1;
    for (size_t i = 0; i < sizeof first / sizeof first[0]; i++) {
        eval_at(a, idx++, first[i], &ra);
        mr_sm_result_free(&ra);
    }
    char errmsg[MR_ERRMSG_SIZE];
    char *snap = snapshot_text(a);
    assert_int_equal(mr_sm_restore(b, snap, strlen(snap), errmsg), 0);
    free(snap);
    for (size_t i = 0; i < sizeof second / sizeof second[0]; i++, idx++) {
        int sa = eval_at(a, idx, second[i], &ra);
        int sb = eval_at(b, idx, second[i], &rb);
        assert_int_equal(sa, sb);
        if (sa == MR_SM_OK)
            assert_string_equal(ra.json, rb.json);
        else
            assert_string_equal(ra.error, rb.error);
        mr_sm_result_free(&ra);
        mr_sm_result_free(&rb);
    }
    char *sa = snapshot_text(a), *sb = snapshot_text(b);
    assert_string_equal(sa, sb);
    /* and the failed commands left nothing */
    assert_non_null(strstr(sa, "\"count\":2"));
    assert_non_null(strstr(sa, "\"cache\":{\"n\":2}"));
    assert_non_null(strstr(sa, "\"acct\":13"));
    assert_null(strstr(sa, "\"gone\":true"));
    free(sa);
    free(sb);
    mr_sm_close(a);
    mr_sm_close(b);
}


/* Random changes, with random failures: a replica that applied every
 * command ends like one that was only sent the commands that succeeded. */
static void test_random_changes_with_failures_match_the_successes_alone(void **state)
{
    (void)state;
    static const char code[] =
        "local r = ctx.random\n"
        "M.data.rand = M.data.rand or {}\n"
        "local t = M.data.rand\n"
        "local keys = {1, 2, 3, 4, 'a', 'b', 'c'}\n"
        "for i = 1, r(1, 12) do\n"
        "  local op, k = r(1, 9), keys[r(1, #keys)]\n"
        "  if op == 1 then t[k] = r(100)\n"
        "  elseif op == 2 then t[k] = nil\n"
        "  elseif op == 3 then t[k] = {n = r(100), sub = {r(9)}}\n"
        "  elseif op == 4 and type(t[k]) == 'table' then t[k].n = r(100); t[k].sub[2] = k\n"
        "  elseif op == 5 then t.list = t.list or {}; table.insert(t.list, r(100))\n"
        "  elseif op == 6 and t.list then table.remove(t.list, 1)\n"
        "  elseif op == 7 then up.bump(); up.map:set(tostring(k), tostring(r(100)))\n"
        "  elseif op == 8 then up.map:remove(tostring(k)); up.set:add(tostring(r(5)))\n"
        "  elseif op == 9 then local s = t[k]; t[k] = t.list; t.list = type(s) == 'table' and s or nil\n"
        "  end\n"
        "end\n"
        "if r(1, 3) == 1 then error('random failure') end\n"
        "return up.count()";
    struct mr_sm *a = open_script(ATOMIC, 0, 0), *b = open_script(ATOMIC, 0, 0);
    char *cmd = eval_cmd(code);
    int failures = 0;
    for (mr_index idx = 1; idx <= 300; idx++) {
        struct mr_sm_result ra = {0}, rb = {0};
        int sa = apply_at(a, idx, cmd, &ra);
        assert_true(sa == MR_SM_OK || sa == MR_SM_SCRIPT_ERROR);
        if (sa == MR_SM_OK) {
            /* b only sees what succeeded, at the same index (same randoms) */
            assert_int_equal(apply_at(b, idx, cmd, &rb), MR_SM_OK);
            assert_string_equal(ra.json, rb.json);
        } else {
            failures++;
        }
        mr_sm_result_free(&ra);
        mr_sm_result_free(&rb);
    }
    free(cmd);
    assert_true(failures > 50);
    char *sa = snapshot_text(a), *sb = snapshot_text(b);
    assert_string_equal(sa, sb);
    free(sa);
    free(sb);
    mr_sm_close(a);
    mr_sm_close(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_names_the_line_of_a_syntax_error),
        cmocka_unit_test(test_open_names_the_missing_function),
        cmocka_unit_test(test_open_reports_errors_raised_while_loading),
        cmocka_unit_test(test_open_fails_on_a_missing_file),
        cmocka_unit_test(test_sandbox_has_no_io_os_package_debug_or_file_loading),
        cmocka_unit_test(test_globals_are_locked_after_load),
        cmocka_unit_test(test_setmetatable_refuses_finalizers_and_weak_tables),
        cmocka_unit_test(test_random_is_seeded_from_the_entry),
        cmocka_unit_test(test_table_sort_is_stable_and_deterministic),
        cmocka_unit_test(test_string_patterns_behave_like_lua),
        cmocka_unit_test(test_runaway_work_in_c_hits_the_budget),
        cmocka_unit_test(
            test_pairs_order_is_the_same_after_a_restore_whatever_the_history),
        cmocka_unit_test(test_pairs_orders_numbers_then_strings_then_booleans),
        cmocka_unit_test(test_pairs_and_next_refuse_keys_without_an_order),
        cmocka_unit_test(test_tostring_and_format_show_no_addresses),
        cmocka_unit_test(test_a_metatable_cannot_gain_mode_or_gc_later),
        cmocka_unit_test(
            test_table_functions_take_a_length_that_depends_on_contents_only),
        cmocka_unit_test(test_the_uncertain_flag_is_set_when_the_heap_cap_is_hit),
        cmocka_unit_test(test_json_key_errors_do_not_depend_on_the_key_order),
        cmocka_unit_test(test_sortedmap_work_is_charged_alike_whatever_its_history),
        cmocka_unit_test(
            test_an_infinite_loop_hits_the_budget_and_the_next_command_works),
        cmocka_unit_test(test_a_memory_bomb_hits_the_cap_and_the_next_command_works),
        cmocka_unit_test(test_a_lua_error_becomes_script_error_with_its_message),
        cmocka_unit_test(test_invalid_json_is_reported_with_its_position),
        cmocka_unit_test(test_json_values_round_trip_exactly),
        cmocka_unit_test(test_random_json_documents_round_trip),
        cmocka_unit_test(test_json_raw_is_written_verbatim_and_read_back),
        cmocka_unit_test(test_json_raw_refuses_text_that_is_not_one_json_value),
        cmocka_unit_test(test_sortedset_keeps_strings_in_bytewise_order),
        cmocka_unit_test(test_sortedset_agrees_with_sorting_after_random_changes),
        cmocka_unit_test(test_kv_put_get_delete_cas_list),
        cmocka_unit_test(test_kv_emits_change_events),
        cmocka_unit_test(
            test_kv_snapshots_are_byte_identical_whatever_the_insertion_order),
        cmocka_unit_test(test_kv_cas_compares_values_as_kv1_did),
        cmocka_unit_test(test_kv_restores_a_v1_snapshot_and_writes_v2),
        cmocka_unit_test(test_kv_snapshot_restore_snapshot_is_byte_identical),
        cmocka_unit_test(test_a_failed_restore_leaves_the_old_state),
        cmocka_unit_test(test_fork_snapshot_writes_the_payload_while_the_parent_goes_on),
        cmocka_unit_test(test_hash_fork_reports_the_state_hash_at_fork_time),
        cmocka_unit_test(test_host_allocation_failures_are_reported_not_crashed),
        cmocka_unit_test(test_tick_runs_once_deadlines_asked_for_in_apply_are_due),
        cmocka_unit_test(test_tick_does_not_run_before_a_deadline_is_due),
        cmocka_unit_test(test_deadlines_of_a_call_that_fails_are_discarded),
        cmocka_unit_test(test_wake_at_refuses_non_integers_and_scripts_without_tick),
        cmocka_unit_test(test_pending_deadlines_are_capped),
        cmocka_unit_test(test_deadlines_round_trip_through_encode_and_restore),
        cmocka_unit_test(test_the_first_script_is_labelled_by_its_file_name_at_index_0),
        cmocka_unit_test(test_deploy_hands_the_old_snapshot_to_the_new_restore),
        cmocka_unit_test(test_deploy_calls_migrate_when_the_new_script_defines_it),
        cmocka_unit_test(test_a_failing_migration_keeps_the_old_script_and_its_state),
        cmocka_unit_test(test_validate_rejects_a_syntax_error_and_changes_nothing),
        cmocka_unit_test(test_restore_script_installs_the_script_the_snapshot_was_taken_with),
        cmocka_unit_test(test_deploy_fork_tries_the_migration_without_touching_the_parent),
        cmocka_unit_test(test_a_failing_apply_rolls_back_its_plain_table_writes),
        cmocka_unit_test(test_a_failing_apply_rolls_back_upvalues_and_c_side_stores),
        cmocka_unit_test(test_a_budget_or_heap_cap_trip_rolls_back_too),
        cmocka_unit_test(test_an_unencodable_result_rolls_back),
        cmocka_unit_test(test_user_metatables_on_state_tables_keep_working),
        cmocka_unit_test(test_state_tables_iterate_measure_and_encode_as_plain_ones),
        cmocka_unit_test(test_a_query_cannot_change_the_state),
        cmocka_unit_test(test_replayed_and_restored_states_agree_after_failed_commands),
        cmocka_unit_test(test_random_changes_with_failures_match_the_successes_alone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
