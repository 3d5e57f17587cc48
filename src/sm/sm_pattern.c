/* string.find/match/gmatch/gsub with a step budget.
 *
 * Why: Lua's own pattern matcher runs in C, where the instruction-count hook
 * never fires, and it backtracks: ("x"):rep(1e6):find(".-.-y") runs for
 * hours, and even a "trim" pattern such as "^%s*(.-)%s*$" is quadratic in
 * the subject. A command carrying a long string could then freeze every
 * node at once. This matcher implements the same pattern language (Lua 5.4
 * manual, section 6.4.1) but charges every matching step to the call's
 * instruction budget, so a runaway match fails like a runaway loop, with the
 * same outcome on every node. Semantics, return values and error messages
 * follow Lua 5.4; tests/unit/test_sm.c compares both on a corpus. */
#include <ctype.h>
#include <string.h>

#include <lauxlib.h>

#include "sm/sm_int.h"

#define MAXCAPTURES 32
#define MAXDEPTH 200 /* nested matcher calls, as Lua's MAXCCALLS */
#define CAP_UNFINISHED (-1)
#define CAP_POSITION (-2)
#define L_ESC '%'
#define SPECIALS "^$*+?.([%-"

struct pm {
    const char *src_init, *src_end, *p_end;
    lua_State *L;
    int depth;
    int level;
    struct {
        const char *init;
        ptrdiff_t len;
    } cap[MAXCAPTURES];
};

static void step(struct pm *ms, uint64_t n)
{
    mr_sm_charge(ms->L, n);
}

static const char *match(struct pm *ms, const char *s, const char *p);

static const char *class_end(struct pm *ms, const char *p)
{
    if (*p == L_ESC) {
        if (p + 1 >= ms->p_end) luaL_error(ms->L, "malformed pattern (ends with '%%')");
        return p + 2;
    }
    if (*p++ == '[') {
        if (p < ms->p_end && *p == '^') p++;
        do { /* the first ']' after '[' or '[^' is a plain character */
            if (p >= ms->p_end) luaL_error(ms->L, "malformed pattern (missing ']')");
            if (*(p++) == L_ESC && p < ms->p_end) p++;
        } while (*p != ']');
        return p + 1;
    }
    return p;
}

static int class_match(int c, int cl)
{
    int r;
    switch (tolower(cl)) {
    case 'a':
        r = isalpha(c);
        break;
    case 'c':
        r = iscntrl(c);
        break;
    case 'd':
        r = isdigit(c);
        break;
    case 'g':
        r = isgraph(c);
        break;
    case 'l':
        r = islower(c);
        break;
    case 'p':
        r = ispunct(c);
        break;
    case 's':
        r = isspace(c);
        break;
    case 'u':
        r = isupper(c);
        break;
    case 'w':
        r = isalnum(c);
        break;
    case 'x':
        r = isxdigit(c);
        break;
    default:
        return cl == c;
    }
    r = r != 0;
    return isupper(cl) ? !r : r;
}

/* p at '[', ec at the closing ']'. */
static int set_match(int c, const char *p, const char *ec)
{
    int hit = 1;
    if (*(p + 1) == '^') {
        hit = 0;
        p++;
    }
    while (++p < ec) {
        if (*p == L_ESC) {
            p++;
            if (class_match(c, (unsigned char)*p)) return hit;
        } else if (*(p + 1) == '-' && p + 2 < ec) {
            if ((unsigned char)*p <= c && c <= (unsigned char)*(p + 2)) return hit;
            p += 2;
        } else if ((unsigned char)*p == c) {
            return hit;
        }
    }
    return !hit;
}

static int single_match(struct pm *ms, const char *s, const char *p, const char *ep)
{
    if (s >= ms->src_end) return 0;
    int c = (unsigned char)*s;
    switch (*p) {
    case '.':
        return 1;
    case L_ESC:
        return class_match(c, (unsigned char)*(p + 1));
    case '[':
        return set_match(c, p, ep - 1);
    default:
        return (unsigned char)*p == c;
    }
}

static const char *match_balance(struct pm *ms, const char *s, const char *p)
{
    if (p + 1 >= ms->p_end)
        luaL_error(ms->L, "malformed pattern (missing arguments to '%%b')");
    if (s >= ms->src_end || *s != *p) return NULL;
    int b = *p, e = *(p + 1), cont = 1;
    const char *start = s;
    while (++s < ms->src_end) {
        if (*s == e) {
            if (--cont == 0) {
                step(ms, (uint64_t)(s - start));
                return s + 1;
            }
        } else if (*s == b) {
            cont++;
        }
    }
    step(ms, (uint64_t)(s - start));
    return NULL;
}

static const char *max_expand(struct pm *ms, const char *s, const char *p, const char *ep)
{
    ptrdiff_t i = 0;
    while (single_match(ms, s + i, p, ep)) i++;
    step(ms, (uint64_t)i);
    for (; i >= 0; i--) { /* longest first, then give back one at a time */
        const char *r = match(ms, s + i, ep + 1);
        if (r) return r;
    }
    return NULL;
}

static const char *min_expand(struct pm *ms, const char *s, const char *p, const char *ep)
{
    for (;;) {
        const char *r = match(ms, s, ep + 1);
        if (r != NULL) return r;
        if (!single_match(ms, s, p, ep)) return NULL;
        s++;
    }
}

static const char *start_capture(struct pm *ms, const char *s, const char *p,
                                 ptrdiff_t what)
{
    if (ms->level >= MAXCAPTURES) luaL_error(ms->L, "too many captures");
    ms->cap[ms->level].init = s;
    ms->cap[ms->level].len = what;
    ms->level++;
    const char *r = match(ms, s, p);
    if (r == NULL) ms->level--; /* undo */
    return r;
}

static int open_capture(struct pm *ms)
{
    for (int l = ms->level - 1; l >= 0; l--)
        if (ms->cap[l].len == CAP_UNFINISHED) return l;
    return luaL_error(ms->L, "invalid pattern capture");
}

static const char *end_capture(struct pm *ms, const char *s, const char *p)
{
    int l = open_capture(ms);
    ms->cap[l].len = s - ms->cap[l].init;
    const char *r = match(ms, s, p);
    if (r == NULL) ms->cap[l].len = CAP_UNFINISHED;
    return r;
}

static int check_capture(struct pm *ms, int l)
{
    l -= '1';
    if (l < 0 || l >= ms->level || ms->cap[l].len == CAP_UNFINISHED)
        return luaL_error(ms->L, "invalid capture index %%%d", l + 1);
    return l;
}

static const char *match_backref(struct pm *ms, const char *s, int l)
{
    l = check_capture(ms, l);
    size_t len = (size_t)ms->cap[l].len;
    step(ms, len);
    if ((size_t)(ms->src_end - s) >= len && memcmp(ms->cap[l].init, s, len) == 0)
        return s + len;
    return NULL;
}

static const char *match(struct pm *ms, const char *s, const char *p)
{
    if (ms->depth-- == 0) luaL_error(ms->L, "pattern too complex");
    step(ms, 1);
    while (p != ms->p_end) {
        const char *ep;
        switch (*p) {
        case '(':
            if (p + 1 < ms->p_end && *(p + 1) == ')')
                s = start_capture(ms, s, p + 2, CAP_POSITION);
            else
                s = start_capture(ms, s, p + 1, CAP_UNFINISHED);
            goto out;
        case ')':
            s = end_capture(ms, s, p + 1);
            goto out;
        case '$':
            if (p + 1 != ms->p_end) goto plain;
            s = s == ms->src_end ? s : NULL;
            goto out;
        case L_ESC:
            if (p + 1 < ms->p_end && *(p + 1) == 'b') {
                s = match_balance(ms, s, p + 2);
                if (s == NULL) goto out;
                p += 4;
                continue;
            }
            if (p + 1 < ms->p_end && *(p + 1) == 'f') {
                p += 2;
                if (p >= ms->p_end || *p != '[')
                    luaL_error(ms->L, "missing '[' after '%%f' in pattern");
                ep = class_end(ms, p);
                int prev = s == ms->src_init ? 0 : (unsigned char)*(s - 1);
                int cur = s < ms->src_end ? (unsigned char)*s : 0;
                if (!set_match(prev, p, ep - 1) && set_match(cur, p, ep - 1)) {
                    p = ep;
                    continue;
                }
                s = NULL;
                goto out;
            }
            if (p + 1 < ms->p_end && isdigit((unsigned char)*(p + 1))) {
                s = match_backref(ms, s, (unsigned char)*(p + 1));
                if (s == NULL) goto out;
                p += 2;
                continue;
            }
            goto plain;
        default:
        plain:
            ep = class_end(ms, p);
            if (!single_match(ms, s, p, ep)) {
                if (*ep == '*' || *ep == '?' || *ep == '-') { /* may match empty */
                    p = ep + 1;
                    continue;
                }
                s = NULL;
                goto out;
            }
            switch (*ep) {
            case '?': {
                const char *r = match(ms, s + 1, ep + 1);
                if (r != NULL) {
                    s = r;
                    goto out;
                }
                p = ep + 1;
                continue;
            }
            case '+':
                s = max_expand(ms, s + 1, p, ep);
                goto out;
            case '*':
                s = max_expand(ms, s, p, ep);
                goto out;
            case '-':
                s = min_expand(ms, s, p, ep);
                goto out;
            default:
                s++;
                p = ep;
                continue;
            }
        }
    }
out:
    ms->depth++;
    return s;
}

/* ---- captures ---------------------------------------------------------------- */

static size_t get_capture(struct pm *ms, int i, const char *s, const char *e,
                          const char **cap)
{
    if (i >= ms->level) {
        if (i != 0) luaL_error(ms->L, "invalid capture index %%%d", i + 1);
        *cap = s;
        return (size_t)(e - s);
    }
    ptrdiff_t l = ms->cap[i].len;
    *cap = ms->cap[i].init;
    if (l == CAP_UNFINISHED) luaL_error(ms->L, "unfinished capture");
    if (l == CAP_POSITION) lua_pushinteger(ms->L, (ms->cap[i].init - ms->src_init) + 1);
    return (size_t)l;
}

static void push_capture(struct pm *ms, int i, const char *s, const char *e)
{
    const char *cap;
    ptrdiff_t l = i < ms->level ? ms->cap[i].len : 0;
    size_t len = get_capture(ms, i, s, e, &cap);
    if (l != CAP_POSITION) lua_pushlstring(ms->L, cap, len);
}

static int push_captures(struct pm *ms, const char *s, const char *e, int whole_if_none)
{
    int n = ms->level == 0 && whole_if_none ? 1 : ms->level;
    luaL_checkstack(ms->L, n, "too many captures");
    for (int i = 0; i < n; i++) push_capture(ms, i, s, e);
    return n;
}

static void prepare(struct pm *ms, lua_State *L, const char *s, size_t ls, const char *p,
                    size_t lp)
{
    ms->L = L;
    ms->src_init = s;
    ms->src_end = s + ls;
    ms->p_end = p + lp;
    ms->depth = MAXDEPTH;
    ms->level = 0;
}

static void reprepare(struct pm *ms)
{
    ms->level = 0;
    ms->depth = MAXDEPTH;
}

/* Lua's relative string position: negative counts from the end. */
static size_t start_pos(lua_Integer pos, size_t len)
{
    if (pos > 0) return (size_t)pos;
    if (pos == 0) return 1;
    if (pos < -(lua_Integer)len) return 1;
    return len + (size_t)pos + 1;
}

static int no_specials(const char *p, size_t l)
{
    size_t upto = 0;
    do {
        if (strpbrk(p + upto, SPECIALS)) return 0;
        upto += strlen(p + upto) + 1; /* patterns may contain '\0' */
    } while (upto <= l);
    return 1;
}

static const char *mem_find(const char *s, size_t ls, const char *p, size_t lp)
{
    if (lp == 0) return s;
    if (lp > ls) return NULL;
    return memmem(s, ls, p, lp);
}

static int find_aux(lua_State *L, int find)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = start_pos(luaL_optinteger(L, 3, 1), ls) - 1;
    if (init > ls) {
        luaL_pushfail(L);
        return 1;
    }
    if (find && (lua_toboolean(L, 4) || no_specials(p, lp))) {
        /* plain search: linear, charged by the byte scanned */
        mr_sm_charge(L, (ls - init) / MR_SM_BYTES_PER_STEP);
        const char *hit = mem_find(s + init, ls - init, p, lp);
        if (hit) {
            lua_pushinteger(L, (hit - s) + 1);
            lua_pushinteger(L, (lua_Integer)((hit - s) + (ptrdiff_t)lp));
            return 2;
        }
    } else {
        struct pm ms;
        const char *s1 = s + init;
        int anchor = lp > 0 && *p == '^';
        if (anchor) {
            p++;
            lp--;
        }
        prepare(&ms, L, s, ls, p, lp);
        do {
            reprepare(&ms);
            const char *e = match(&ms, s1, p);
            if (e != NULL) {
                if (find) {
                    lua_pushinteger(L, (s1 - s) + 1);
                    lua_pushinteger(L, e - s);
                    return push_captures(&ms, NULL, NULL, 0) + 2;
                }
                return push_captures(&ms, s1, e, 1);
            }
        } while (s1++ < ms.src_end && !anchor);
    }
    luaL_pushfail(L);
    return 1;
}

static int l_find(lua_State *L)
{
    return find_aux(L, 1);
}
static int l_match(lua_State *L)
{
    return find_aux(L, 0);
}

/* gmatch state lives in a userdata (upvalue 3) so the iterator can resume. */
struct gm {
    const char *src; /* where the next search starts; NULL once exhausted */
    const char *lastmatch;
};

static int gmatch_next(lua_State *L)
{
    size_t ls, lp;
    const char *s = lua_tolstring(L, lua_upvalueindex(1), &ls);
    const char *p = lua_tolstring(L, lua_upvalueindex(2), &lp);
    struct gm *g = lua_touserdata(L, lua_upvalueindex(3));
    struct pm ms;
    if (g->src == NULL) return 0;
    prepare(&ms, L, s, ls, p, lp);
    for (const char *src = g->src; src <= ms.src_end; src++) {
        reprepare(&ms);
        const char *e = match(&ms, src, p);
        if (e != NULL && e != g->lastmatch) {
            g->src = g->lastmatch = e;
            return push_captures(&ms, src, e, 1);
        }
    }
    g->src = NULL;
    return 0;
}

static int l_gmatch(lua_State *L)
{
    size_t ls;
    const char *s = luaL_checklstring(L, 1, &ls);
    luaL_checkstring(L, 2);
    size_t init = start_pos(luaL_optinteger(L, 3, 1), ls) - 1;
    lua_settop(L, 2);
    struct gm *g = lua_newuserdatauv(L, sizeof *g, 0);
    g->src = init > ls ? NULL : s + init; /* past the end: nothing to find */
    g->lastmatch = NULL;
    lua_pushcclosure(L, gmatch_next, 3);
    return 1;
}

static void add_repl_string(struct pm *ms, luaL_Buffer *b, const char *s, const char *e)
{
    size_t l;
    lua_State *L = ms->L;
    const char *news = lua_tolstring(L, 3, &l);
    const char *end = news + l;
    for (const char *p = news; p < end; p++) {
        if (*p != L_ESC) {
            luaL_addchar(b, *p);
            continue;
        }
        p++;
        if (p < end && *p == L_ESC) {
            luaL_addchar(b, L_ESC);
        } else if (p < end && isdigit((unsigned char)*p)) {
            const char *cap;
            int i = *p - '1';
            if (*p == '0') {
                luaL_addlstring(b, s, (size_t)(e - s));
                continue;
            }
            ptrdiff_t kind = i < ms->level ? ms->cap[i].len : 0;
            size_t len = get_capture(ms, i, s, e, &cap);
            if (kind == CAP_POSITION)
                luaL_addvalue(b); /* the pushed integer */
            else
                luaL_addlstring(b, cap, len);
        } else {
            luaL_error(L, "invalid use of '%c' in replacement string", L_ESC);
        }
    }
}

static void add_value(struct pm *ms, luaL_Buffer *b, const char *s, const char *e, int tr)
{
    lua_State *L = ms->L;
    if (tr == LUA_TSTRING || tr == LUA_TNUMBER) {
        add_repl_string(ms, b, s, e);
        return;
    }
    if (tr == LUA_TFUNCTION) {
        lua_pushvalue(L, 3);
        int n = push_captures(ms, s, e, 1);
        lua_call(L, n, 1);
    } else { /* table */
        push_capture(ms, 0, s, e);
        lua_gettable(L, 3);
    }
    if (!lua_toboolean(L, -1)) { /* nil or false: keep the original text */
        lua_pop(L, 1);
        luaL_addlstring(b, s, (size_t)(e - s));
        return;
    }
    if (!lua_isstring(L, -1))
        luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    luaL_addvalue(b);
}

static int l_gsub(lua_State *L)
{
    size_t srcl, lp;
    const char *src = luaL_checklstring(L, 1, &srcl);
    const char *p = luaL_checklstring(L, 2, &lp);
    const char *lastmatch = NULL;
    int tr = lua_type(L, 3);
    lua_Integer max_s = luaL_optinteger(L, 4, (lua_Integer)srcl + 1), n = 0;
    int anchor = lp > 0 && *p == '^';
    luaL_argexpected(L,
                     tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION ||
                         tr == LUA_TTABLE,
                     3, "string/function/table");
    if (anchor) {
        p++;
        lp--;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    struct pm ms;
    prepare(&ms, L, src, srcl, p, lp);
    while (n < max_s) {
        reprepare(&ms);
        const char *e = match(&ms, src, p);
        if (e != NULL && e != lastmatch) {
            n++;
            add_value(&ms, &b, src, e, tr);
            src = lastmatch = e;
        } else if (src < ms.src_end) {
            luaL_addchar(&b, *src++);
        } else {
            break;
        }
        if (anchor) break;
    }
    luaL_addlstring(&b, src, (size_t)(ms.src_end - src));
    luaL_pushresult(&b);
    lua_pushinteger(L, n);
    return 2;
}

void mr_sm_pattern_open(lua_State *L)
{
    static const luaL_Reg fns[] = {{"find", l_find},
                                   {"match", l_match},
                                   {"gmatch", l_gmatch},
                                   {"gsub", l_gsub},
                                   {NULL, NULL}};
    lua_getglobal(L, "string");
    luaL_setfuncs(L, fns, 0);
    lua_pop(L, 1);
}
