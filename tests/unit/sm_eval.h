/* sm_eval.h: run Lua in a state machine from a unit test.
 *
 * The scripts under test (tests/unit/fixtures/sm_probe.lua and friends) take
 * {"op":"eval","code":CODE}. Include after <cmocka.h> and "sm/sm.h"; the
 * functions are static, one copy per test binary. */
#ifndef MR_TEST_SM_EVAL_H
#define MR_TEST_SM_EVAL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Applies cmd at (term 1, index) and returns the status; *res is filled. */
static int apply_at(struct mr_sm *sm, mr_index index, const char *cmd,
                    struct mr_sm_result *res)
{
    struct mr_sm_ctx ctx = {.index = index, .term = 1, .time_ms = 1700000000000};
    int rv = mr_sm_apply(sm, &ctx, cmd, strlen(cmd), res);
    assert_int_equal(rv, 0);
    return res->status;
}

/* {"op":"eval","code":CODE} with CODE escaped as a JSON string. */
static char *eval_cmd(const char *code)
{
    size_t n = strlen(code);
    char *s = malloc(n * 6 + 64), *p = s;
    assert_non_null(s);
    p += sprintf(p, "{\"op\":\"eval\",\"code\":\"");
    for (const char *c = code; *c; c++) {
        if (*c == '"' || *c == '\\') *p++ = '\\';
        if (*c == '\n') {
            *p++ = '\\';
            *p++ = 'n';
            continue;
        }
        if ((unsigned char)*c < 0x20) {
            p += sprintf(p, "\\u%04x", (unsigned char)*c);
            continue;
        }
        *p++ = *c;
    }
    strcpy(p, "\"}");
    return s;
}

static int eval_at(struct mr_sm *sm, mr_index index, const char *code,
                   struct mr_sm_result *res)
{
    char *cmd = eval_cmd(code);
    int st = apply_at(sm, index, cmd, res);
    free(cmd);
    return st;
}

/* Runs code at index; it must succeed with exactly `want`. */
static void expect_eval_at(struct mr_sm *sm, mr_index index, const char *code,
                           const char *want)
{
    struct mr_sm_result res = {0};
    int st = eval_at(sm, index, code, &res);
    if (st != MR_SM_OK) fail_msg("%s -> %s: %s", code, mr_sm_status_name(st), res.error);
    assert_string_equal(res.json, want);
    mr_sm_result_free(&res);
}

/* Runs code; it must fail with `status` and an error containing needle. */
static void expect_eval_error(struct mr_sm *sm, const char *code, int status,
                              const char *needle)
{
    struct mr_sm_result res = {0};
    int st = eval_at(sm, 1, code, &res);
    if (st != status)
        fail_msg("%s -> %s (%s), wanted %s", code, mr_sm_status_name(st),
                 res.error ? res.error : res.json, mr_sm_status_name(status));
    assert_non_null(res.error);
    if (strstr(res.error, needle) == NULL)
        fail_msg("error '%s' lacks '%s'", res.error, needle);
    assert_null(res.json);
    mr_sm_result_free(&res);
}

#endif
