/* The interactive loop: libedit line editing, history kept across runs, tab
 * completion of Lua names, multi-line statements and value printing, in the
 * manner of lua.c's doREPL. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <editline/readline.h>
#include <lauxlib.h>

#include "console/console_int.h"

/* libedit's completion hook takes no user pointer. */
static struct mr_console *active;

static char **complete_cb(const char *text, int start, int end)
{
    (void)start;
    (void)end;
    /* Never fall back to file names. */
    rl_attempted_completion_over = 1;
    if (active == NULL) return NULL;
    return mr_console_complete(active, text);
}

static void history_path(char *out, size_t size)
{
    const char *env = getenv("MOONRAFT_HISTORY");
    const char *home = getenv("HOME");
    out[0] = '\0';
    if (env != NULL) {
        /* An empty $MOONRAFT_HISTORY turns history files off. */
        snprintf(out, size, "%s", env);
    } else if (home != NULL && home[0] != '\0') {
        snprintf(out, size, "%s/.moonraft_history", home);
    }
}

/* Appends "\n" (if `sep`) and `line` to the heap string *chunk. */
static int chunk_add(char **chunk, const char *line, int sep)
{
    size_t old = *chunk ? strlen(*chunk) : 0, n = strlen(line);
    char *p = mr_realloc(*chunk, old + n + 2);
    if (p == NULL) return MR_ENOMEM;
    if (sep) p[old++] = '\n';
    memcpy(p + old, line, n + 1);
    *chunk = p;
    return 0;
}

/* Is the error on the stack a syntax error at the end of input? Then the
 * statement is incomplete and more lines are wanted (lua.c's incomplete). */
static int is_incomplete(lua_State *L, int status)
{
    size_t len;
    const char *msg;
    if (status != LUA_ERRSYNTAX) return 0;
    msg = lua_tolstring(L, -1, &len);
    return msg != NULL && len >= 5 && strcmp(msg + len - 5, "<eof>") == 0;
}

/* Compiles `chunk`: first as an expression ("return " .. chunk) so values
 * print, then as a statement. Leaves the function (or the error) on the
 * stack and returns the load status. */
static int compile(lua_State *L, const char *chunk)
{
    int status;
    const char *ret;
    if (chunk[0] == '=') chunk++; /* "=expr", the Lua 5.1 habit */
    ret = lua_pushfstring(L, "return %s;", chunk);
    status = luaL_loadbufferx(L, ret, strlen(ret), "=stdin", "t");
    lua_remove(L, -2);
    if (status == LUA_OK) return status;
    lua_pop(L, 1);
    return luaL_loadbufferx(L, chunk, strlen(chunk), "=stdin", "t");
}

static void remember(const char *chunk, const char *hist)
{
    char *flat = strdup(chunk), *p;
    if (flat == NULL) return;
    /* One history entry per statement, on one line. */
    for (p = flat; *p; p++) {
        if (*p == '\n') *p = ' ';
    }
    add_history(flat);
    free(flat);
    if (hist[0] != '\0') write_history(hist);
}

int mr_console_repl(struct mr_console *c)
{
    lua_State *L = c->L;
    char hist[4200], prompt[300];
    char *chunk = NULL;

    active = c;
    rl_readline_name = "moonraft";
    rl_attempted_completion_function = complete_cb;
    /* '.' and ':' stay inside a word so that "kv.p" completes as a path. */
    rl_basic_word_break_characters = " \t\n\"\\'`><=;+-*/%^~#&|{}()[],";
    rl_completion_append_character = '\0';
    using_history();
    stifle_history(1000);
    history_path(hist, sizeof hist);
    if (hist[0] != '\0') read_history(hist);

    printf("moonraft console %s, node %s:%s. help() lists the commands; Ctrl-D quits.\n",
           MR_VERSION, c->http.host, c->http.port);
    fflush(stdout);
    for (;;) {
        char *line;
        int status;
        snprintf(prompt, sizeof prompt, "%s:%s> ", c->http.host, c->http.port);
        mr_console_interrupted = 0;
        line = readline(chunk ? ">> " : prompt);
        if (line == NULL) {
            if (mr_console_interrupted) {
                /* Ctrl-C: drop the line (and any unfinished statement). */
                mr_console_interrupted = 0;
                mr_free(chunk);
                chunk = NULL;
                printf("\n");
                fflush(stdout);
                continue;
            }
            printf("\n");
            break;
        }
        if (chunk == NULL && line[strspn(line, " \t")] == '\0') {
            free(line);
            continue;
        }
        status = chunk_add(&chunk, line, chunk != NULL);
        free(line);
        if (status != 0) {
            fprintf(stderr, "error: out of memory\n");
            break;
        }
        status = compile(L, chunk);
        if (is_incomplete(L, status)) {
            lua_pop(L, 1);
            continue;
        }
        remember(chunk, hist);
        mr_free(chunk);
        chunk = NULL;
        if (status == LUA_OK) {
            int base = lua_gettop(L) - 1;
            status = mr_console_docall(c, 0, LUA_MULTRET);
            if (status == LUA_OK && lua_gettop(L) > base) {
                status = mr_console_display(c, lua_gettop(L) - base);
            }
        }
        if (status != LUA_OK) mr_console_report(c);
        lua_settop(L, 0);
    }
    mr_free(chunk);
    clear_history();
    active = NULL;
    fflush(stdout);
    return 0;
}
