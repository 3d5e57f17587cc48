/* `moonraft console`: command line, signals, and the choice between -e code,
 * a script, stdin and the interactive loop. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "console/console.h"
#include "console/console_int.h"

static void on_sigint(int sig)
{
    (void)sig;
    mr_console_on_sigint();
}

static void usage(FILE *f)
{
    fputs("usage: moonraft console [options] [host:port] [SCRIPT.lua [args...]]\n"
          "  -e CODE            run CODE (repeatable; before SCRIPT)\n"
          "  -i                 enter the interactive console after -e/SCRIPT\n"
          "  --token T          bearer token (default $MOONRAFT_TOKEN)\n"
          "  --admin-token T    admin bearer token (default $MOONRAFT_ADMIN_TOKEN)\n"
          MR_CONSOLE_TLS_USAGE
          "  -h, --help         this text\n"
          "The address defaults to $MOONRAFT_ADDR, then " MR_CONSOLE_DEFAULT_ADDR ";\n"
          "https://host:port speaks TLS.\n"
          "Exit status: 0 ok, 1 Lua or server error, 2 usage error.\n",
          f);
}

struct opts {
    struct mr_console_tls_files tls;
    const char *addr;
    const char *token;
    const char *admin_token;
    const char **code; /* -e arguments, n_code of them */
    int n_code;
    const char *script;
    char **args;
    int n_args;
    int interactive;
};

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Takes the value of an option given as "--opt V" or "--opt=V". */
static const char *opt_value(int argc, char **argv, int *i, const char *name)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) == 0 && argv[*i][n] == '=') return argv[*i] + n + 1;
    if (*i + 1 >= argc) return NULL;
    return argv[++*i];
}

int mr_console_tls_opt(int argc, char **argv, int *i, struct mr_console_tls_files *t)
{
    static const char *const names[3] = {"--tls-ca", "--tls-cert", "--tls-key"};
    const char **slots[3] = {&t->ca, &t->cert, &t->key};
    int k;
    for (k = 0; k < 3; k++) {
        size_t n = strlen(names[k]);
        if (strncmp(argv[*i], names[k], n) == 0 && (argv[*i][n] == '\0' || argv[*i][n] == '=')) {
            *slots[k] = opt_value(argc, argv, i, names[k]);
            return *slots[k] != NULL ? 1 : -1;
        }
    }
    return 0;
}

/* Returns 0, 1 for --help, or -1 on a usage error (message printed). */
static int parse(int argc, char **argv, struct opts *o)
{
    int i, k;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) return 1;
        if (strcmp(a, "-e") == 0 || (strncmp(a, "-e", 2) == 0 && a[2] != '\0')) {
            const char *code = a[2] ? a + 2 : (i + 1 < argc ? argv[++i] : NULL);
            if (code == NULL) {
                fprintf(stderr, "moonraft console: -e needs an argument\n");
                return -1;
            }
            o->code[o->n_code++] = code;
        } else if (strcmp(a, "-i") == 0) {
            o->interactive = 1;
        } else if (strncmp(a, "--tls-", 6) == 0 && (k = mr_console_tls_opt(argc, argv, &i, &o->tls)) != 0) {
            if (k < 0) goto missing;
        } else if (strcmp(a, "--token") == 0 || strncmp(a, "--token=", 8) == 0) {
            if ((o->token = opt_value(argc, argv, &i, "--token")) == NULL) goto missing;
        } else if (strcmp(a, "--admin-token") == 0 ||
                   strncmp(a, "--admin-token=", 14) == 0) {
            if ((o->admin_token = opt_value(argc, argv, &i, "--admin-token")) == NULL) {
                goto missing;
            }
        } else if (strcmp(a, "--") == 0) {
            i++;
            break;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "moonraft console: unknown option %s\n", a);
            return -1;
        } else if (o->addr == NULL && strcmp(a, "-") != 0 && !ends_with(a, ".lua")) {
            o->addr = a;
        } else {
            break;
        }
    }
    if (i < argc) {
        o->script = argv[i];
        o->args = argv + i + 1;
        o->n_args = argc - i - 1;
    }
    return 0;
missing:
    fprintf(stderr, "moonraft console: %s needs an argument\n", argv[i]);
    return -1;
}

static const char *env_or(const char *value, const char *name)
{
    const char *e;
    if (value != NULL) return value;
    e = getenv(name);
    return e != NULL && e[0] != '\0' ? e : NULL;
}

void mr_console_tls_env(struct mr_console_tls_files *t)
{
    t->ca = env_or(t->ca, "MOONRAFT_TLS_CA");
    t->cert = env_or(t->cert, "MOONRAFT_TLS_CERT");
    t->key = env_or(t->key, "MOONRAFT_TLS_KEY");
}

/* Flags, else the environment, onto the console's HTTP client. */
static int apply_tls(struct mr_console *c, struct mr_console_tls_files *t)
{
    mr_console_tls_env(t);
    return mr_console_http_set_tls(&c->http, t->ca, t->cert, t->key);
}

int mr_console_main(int argc, char **argv)
{
    struct opts o;
    struct mr_console c;
    struct sigaction sa, old_sa;
    int rv, status = MR_CONSOLE_EXIT_OK, i;

    memset(&o, 0, sizeof o);
    o.code = mr_calloc((size_t)(argc > 0 ? argc : 1), sizeof *o.code);
    if (o.code == NULL) {
        fprintf(stderr, "moonraft console: out of memory\n");
        return MR_CONSOLE_EXIT_ERROR;
    }
    rv = parse(argc, argv, &o);
    if (rv != 0) {
        mr_free(o.code);
        usage(rv > 0 ? stdout : stderr);
        return rv > 0 ? MR_CONSOLE_EXIT_OK : MR_CONSOLE_EXIT_USAGE;
    }
    o.addr = env_or(o.addr, "MOONRAFT_ADDR");
    if (o.addr == NULL) o.addr = MR_CONSOLE_DEFAULT_ADDR;
    o.token = env_or(o.token, "MOONRAFT_TOKEN");
    o.admin_token = env_or(o.admin_token, "MOONRAFT_ADMIN_TOKEN");

    rv = mr_console_open(&c, o.addr, o.token, o.admin_token);
    if (rv == 0) rv = apply_tls(&c, &o.tls);
    if (rv != 0) {
        fprintf(stderr, "moonraft console: %s\n", c.errmsg);
        mr_free(o.code);
        return rv == MR_EINVAL || rv == MR_ENOTFOUND ? MR_CONSOLE_EXIT_USAGE
                                                     : MR_CONSOLE_EXIT_ERROR;
    }

    /* No SA_RESTART: Ctrl-C must break out of poll() and read(). */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_sa);

    for (i = 0; i < o.n_code && status == MR_CONSOLE_EXIT_OK; i++) {
        if (mr_console_run_string(&c, o.code[i], "=(command line)") != 0) {
            status = MR_CONSOLE_EXIT_ERROR;
        }
    }
    if (status == MR_CONSOLE_EXIT_OK && o.script != NULL) {
        if (mr_console_run_file(&c, o.script, o.args, o.n_args) != 0) {
            status = MR_CONSOLE_EXIT_ERROR;
        }
    }
    if (status == MR_CONSOLE_EXIT_OK &&
        (o.interactive || (o.n_code == 0 && o.script == NULL))) {
        if (isatty(STDIN_FILENO)) {
            mr_console_repl(&c);
        } else if (mr_console_run_file(&c, "-", NULL, 0) != 0) {
            status = MR_CONSOLE_EXIT_ERROR;
        }
    }

    sigaction(SIGINT, &old_sa, NULL);
    mr_console_close(&c);
    mr_free(o.code);
    fflush(stdout);
    return status;
}

/* ---- moonraft deploy ---------------------------------------------------------------- */
static void deploy_usage(FILE *out)
{
    fputs("usage: moonraft deploy FILE [[https://]host:port] [--label L] [--token T]\n"
          "  Runs FILE as the cluster's new state machine script (through the log) and\n"
          "  exits 0 once the node at host:port runs it. --label defaults to FILE's name;\n"
          "  --token to $MOONRAFT_ADMIN_TOKEN, then $MOONRAFT_TOKEN.\n" MR_CONSOLE_TLS_USAGE,
          out);
}

int mr_console_deploy_main(int argc, char **argv)
{
    const char *file = NULL, *addr = NULL, *label = NULL, *token = NULL;
    struct mr_console_tls_files tls = {NULL, NULL, NULL};
    struct mr_console c;
    struct sigaction sa, old_sa;
    int i, rv, status = MR_CONSOLE_EXIT_OK;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            deploy_usage(stdout);
            return MR_CONSOLE_EXIT_OK;
        } else if (strcmp(a, "--label") == 0 || strncmp(a, "--label=", 8) == 0) {
            if ((label = opt_value(argc, argv, &i, "--label")) == NULL) goto usage;
        } else if (strcmp(a, "--token") == 0 || strncmp(a, "--token=", 8) == 0) {
            if ((token = opt_value(argc, argv, &i, "--token")) == NULL) goto usage;
        } else if (strncmp(a, "--tls-", 6) == 0 && (rv = mr_console_tls_opt(argc, argv, &i, &tls)) != 0) {
            if (rv < 0) goto usage;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "moonraft deploy: unknown option %s\n", a);
            goto usage;
        } else if (file == NULL) {
            file = a;
        } else if (addr == NULL) {
            addr = a;
        } else {
            goto usage;
        }
    }
    if (file == NULL) goto usage;
    addr = env_or(addr, "MOONRAFT_ADDR");
    if (addr == NULL) addr = MR_CONSOLE_DEFAULT_ADDR;
    token = env_or(token, "MOONRAFT_ADMIN_TOKEN");
    token = env_or(token, "MOONRAFT_TOKEN");
    rv = mr_console_open(&c, addr, token, token);
    if (rv == 0) rv = apply_tls(&c, &tls);
    if (rv != 0) {
        fprintf(stderr, "moonraft deploy: %s\n", c.errmsg);
        return rv == MR_EINVAL || rv == MR_ENOTFOUND ? MR_CONSOLE_EXIT_USAGE
                                                     : MR_CONSOLE_EXIT_ERROR;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_sa);
    lua_getglobal(c.L, "deploy");
    lua_pushstring(c.L, file);
    if (label != NULL) lua_pushstring(c.L, label);
    else lua_pushnil(c.L);
    if (mr_console_docall(&c, 2, 1) != LUA_OK) {
        fputs("moonraft deploy: ", stderr);
        mr_console_report(&c);
        status = MR_CONSOLE_EXIT_ERROR;
    } else {
        lua_getfield(c.L, -1, "hash");
        lua_getfield(c.L, -2, "label");
        lua_getfield(c.L, -3, "index");
        printf("deployed %s: script %s in effect since index %s on %s\n",
               lua_tostring(c.L, -2) ? lua_tostring(c.L, -2) : "?",
               lua_tostring(c.L, -3) ? lua_tostring(c.L, -3) : "?",
               lua_tostring(c.L, -1) ? lua_tostring(c.L, -1) : "?", addr);
        lua_pop(c.L, 4);
    }
    sigaction(SIGINT, &old_sa, NULL);
    mr_console_close(&c);
    fflush(stdout);
    return status;
usage:
    deploy_usage(stderr);
    return MR_CONSOLE_EXIT_USAGE;
}
