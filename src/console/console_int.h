/* console internals shared by console_*.c (and the unit test). */
#ifndef MR_CONSOLE_INT_H
#define MR_CONSOLE_INT_H

#include <signal.h>
#include <stddef.h>

#include <lua.h>

#include "console/console.h"
#include "tls/tls.h"
#include "util/util.h"

/* Timeouts, in milliseconds. Watch long polls pass their own, longer one. */
#define MR_CONSOLE_CONNECT_TIMEOUT_MS 10000
#define MR_CONSOLE_REQUEST_TIMEOUT_MS 10000
/* Largest answer body we accept (bytes). */
#define MR_CONSOLE_MAX_BODY (64u << 20)

/* Set by the SIGINT handler; cleared by whoever reports the interruption. */
extern volatile sig_atomic_t mr_console_interrupted;

/* The body of the SIGINT handler (async-signal-safe): sets
 * mr_console_interrupted and, while Lua code runs, arms a hook that raises
 * "interrupted!" at the next instruction. */
void mr_console_on_sigint(void);

/* ---- HTTP client (console_http.c) ---------------------------------------- */

/* One answer. All memory is owned by the struct: release it with
 * mr_console_http_resp_free. */
struct mr_console_http_resp {
    int status;
    char *body; /* NUL-terminated; body_len excludes the NUL */
    size_t body_len;
    char **hdrs; /* n_hdrs pairs: hdrs[2i] lowercased name, hdrs[2i+1] value */
    size_t n_hdrs;
};

/* A blocking HTTP/1.1 client bound to one "host:port", keeping one
 * connection alive between requests. */
struct mr_console_http {
    char host[256];
    char port[16];
    int fd; /* -1 when not connected */
    int connect_timeout_ms;
    int is_https;            /* the address was given as https://... */
    char *tls_ca;            /* PEM CA file to verify the server; NULL: system CAs */
    char *tls_cert, *tls_key; /* client certificate (mutual TLS); NULL: none */
    struct mr_tls_ctx *tls_ctx; /* built at the first https connect */
    struct mr_tls *tls;         /* the connection's session */
    char errmsg[MR_ERRMSG_SIZE];
};

/* Initialises an unconnected client with no address. Cannot fail. */
void mr_console_http_init(struct mr_console_http *c);

/* Sets the server address: "host:port", "[v6addr]:port" or ":port"/"port"
 * (host 127.0.0.1), optionally prefixed with "http://" or "https://" (a
 * trailing "/" is ignored). https verifies the server's certificate (chain
 * and host name or IP) against the CA set with mr_console_http_set_tls, or
 * the system's CAs. Closes any open connection. Returns 0 or MR_EINVAL (with
 * c->errmsg set; the old address is kept). `addr` is only read. */
int mr_console_http_set_addr(struct mr_console_http *c, const char *addr);

/* Closes the connection, if any. The address is kept. */
void mr_console_http_close(struct mr_console_http *c);

/* TLS files for https addresses (each may be NULL; copied): the CA that signs
 * the server's certificate, and a client certificate and key for servers
 * that require one. Closes any open connection. 0 or MR_ENOMEM. */
int mr_console_http_set_tls(struct mr_console_http *c, const char *ca, const char *cert,
                            const char *key);

/* Frees everything the client holds (connection, TLS files and context). */
void mr_console_http_free(struct mr_console_http *c);

/* Sends one request and waits for its answer.
 * `headers` is NULL or a NULL-terminated list of "Name: value" strings (CR
 * and LF are rejected); Host, Content-Length, Content-Type (when there is a
 * body) and Connection are added. `body` may be NULL when body_len is 0.
 * `timeout_ms` bounds the whole exchange after connecting.
 * A reused keep-alive connection that the server closed before answering is
 * reopened once and the request resent.
 * On success returns 0 and fills *resp (caller frees it). On failure returns
 * a negative code (-errno, MR_ETIMEOUT, MR_EPROTO, MR_ETOOBIG, MR_EINVAL,
 * MR_ENOMEM, MR_ECANCELED after SIGINT), sets c->errmsg, leaves *resp empty
 * and the connection closed. */
int mr_console_http_request(struct mr_console_http *c, const char *method,
                            const char *path, const char *const *headers,
                            const char *body, size_t body_len, int timeout_ms,
                            struct mr_console_http_resp *resp);

/* mr_console_http_request for large answers: the body of a 2xx answer goes
 * to `sink` (see mr_console_sink_cb in console.h) as it arrives, not into
 * resp->body (other answers are kept in resp->body as usual), and
 * `timeout_ms` bounds each wait for bytes instead of the whole exchange. A
 * sink error ends the exchange with the sink's code. The connection is
 * never reused for a retry. */
int mr_console_http_request_to(struct mr_console_http *c, const char *method,
                               const char *path, const char *const *headers,
                               int timeout_ms, mr_console_sink_cb sink, void *data,
                               struct mr_console_http_resp *resp);

/* Frees what a response owns and zeroes it; safe on a zeroed struct. */
void mr_console_http_resp_free(struct mr_console_http_resp *resp);

/* ---- Lua host (console_lua.c) --------------------------------------------- */

struct mr_console {
    lua_State *L;
    struct mr_console_http http;
    char *token;       /* owned (mr_strdup), NULL if none */
    char *admin_token; /* owned (mr_strdup), NULL if none */
    int module_ref;    /* registry ref of the table lua/console.lua returned */
    char lua_dir[4096]; /* $MOONRAFT_LUA_DIR, or "" for the built-in console.lua */
    char errmsg[MR_ERRMSG_SIZE];
};

/* Writes into dir (size `size`) the directory in $MOONRAFT_LUA_DIR, or ""
 * when it is unset (the built-in console.lua, see console.h). Returns 0, or
 * MR_ENOTFOUND when that directory holds no console.lua. */
int mr_console_find_lua_dir(char *dir, size_t size);

/* Creates the Lua state, opens the standard libraries and cjson, installs the
 * `mr` C functions and runs lua/console.lua. Tokens are copied (may be NULL).
 * Returns 0, or a negative code with c->errmsg set and nothing to close. */
int mr_console_open(struct mr_console *c, const char *addr, const char *token,
                    const char *admin_token);

/* Closes the Lua state and the connection and frees the tokens. */
void mr_console_close(struct mr_console *c);

/* Calls the function below `narg` arguments on the stack, protected, with a
 * traceback handler and SIGINT turned into a Lua error. Returns a lua_pcall
 * status; on error the message is on the stack. */
int mr_console_docall(struct mr_console *c, int narg, int nres);

/* Prints the error message on top of the stack to stderr and pops it. */
void mr_console_report(struct mr_console *c);

/* Pretty-prints the `n` values on top of the stack (console.display) to
 * stdout and pops them. Returns a lua_pcall status. */
int mr_console_display(struct mr_console *c, int n);

/* Runs a chunk of source. `name` is its chunk name. On error reports it and
 * returns nonzero. */
int mr_console_run_string(struct mr_console *c, const char *code, const char *name);

/* Runs a script file ("-" = stdin) with `args` (n strings) as `...` and in
 * the global `arg` (arg[0] = path). On error reports it, returns nonzero. */
int mr_console_run_file(struct mr_console *c, const char *path, char **args, int n);

/* Completion candidates for `text` (a Lua name path like "kv.p"), as a
 * malloc()ed NULL-terminated array of malloc()ed strings, for libedit to own.
 * NULL when there is none. */
char **mr_console_complete(struct mr_console *c, const char *text);

/* ---- REPL (console_repl.c) ------------------------------------------------- */

/* Reads, evaluates and prints until end of input. Returns 0. */
int mr_console_repl(struct mr_console *c);

#endif /* MR_CONSOLE_INT_H */
