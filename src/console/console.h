/* console: `moonraft console`, the operator's interactive Lua 5.4 console.
 *
 * The console runs on the operator's machine and talks to a node only over
 * the HTTP API (DESIGN.md "HTTP API (v1)"); it never sends code to the
 * server. The admin functions (status(), members(), join(), kv.put(), watch(),
 * ...) and the pretty printer are Lua, in lua/console.lua; this module is the
 * C host around them: a Lua state with the standard libraries and cjson, a
 * blocking HTTP/1.1 client (keep-alive, Content-Length and chunked answers,
 * http-parser), and a libedit REPL with history and tab completion.
 *
 * console.lua is built into the binary (mr_util_lua_embedded); a directory
 * in $MOONRAFT_LUA_DIR overrides it (its console.lua, and console_*.lua
 * helpers on package.path). See docs/console.md. */
#ifndef MR_CONSOLE_H
#define MR_CONSOLE_H

/* Default node address when neither an argument nor $MOONRAFT_ADDR is given. */
#define MR_CONSOLE_DEFAULT_ADDR "127.0.0.1:8001"

/* Exit statuses of mr_console_main. */
enum {
    MR_CONSOLE_EXIT_OK = 0,    /* everything ran */
    MR_CONSOLE_EXIT_ERROR = 1, /* a Lua error, a server error or a transport error */
    MR_CONSOLE_EXIT_USAGE = 2  /* bad command line, or no console.lua in $MOONRAFT_LUA_DIR */
};

/* Runs `moonraft console`. argv[0] is "console" (the subcommand name), then:
 *
 *   moonraft console [options] [host:port] [SCRIPT.lua [args...]]
 *     -e CODE           run CODE (repeatable, in order, before SCRIPT)
 *     --token T         bearer token for data requests  (env MOONRAFT_TOKEN)
 *     --admin-token T   bearer token for admin requests (env MOONRAFT_ADMIN_TOKEN)
 *     -i                enter the REPL after -e / SCRIPT
 *     -h, --help        usage on stdout, exit 0
 *
 * The address defaults to $MOONRAFT_ADDR, then MR_CONSOLE_DEFAULT_ADDR. A
 * first positional argument ending in ".lua" (or "-" for stdin) is the
 * script; otherwise it is the address. With neither -e nor a script the REPL
 * runs when stdin is a terminal, else stdin is run as a script.
 *
 * Writes results to stdout and errors to stderr; tokens are never printed.
 * Returns an MR_CONSOLE_EXIT_* status. argv is only read. Not reentrant:
 * it installs a SIGINT handler (restored on return) and uses libedit's
 * global state. */
int mr_console_main(int argc, char **argv);

/* Runs `moonraft deploy`. argv[0] is "deploy", then:
 *
 *   moonraft deploy FILE [host:port] [--label L] [--token T]
 *
 * Sends FILE as the new state machine script (POST /v1/script, through the
 * console's deploy() in lua/console.lua) and waits until the node at
 * host:port runs it (GET /v1/script shows its hash). The label defaults to
 * FILE's base name; the token to $MOONRAFT_ADMIN_TOKEN, then $MOONRAFT_TOKEN;
 * the address to $MOONRAFT_ADDR, then MR_CONSOLE_DEFAULT_ADDR.
 * Returns MR_CONSOLE_EXIT_OK once the script is in effect there,
 * MR_CONSOLE_EXIT_ERROR with the error on stderr (a refused script: the
 * server's 422 message), MR_CONSOLE_EXIT_USAGE for a bad command line. */
int mr_console_deploy_main(int argc, char **argv);

/* ---- talking to a node from other commands (moonraft backup) -------------- */

/* The TLS options every command that talks to a node takes, for usage texts. */
#define MR_CONSOLE_TLS_USAGE                                                             \
    "  --tls-ca FILE      CA that signs the node's certificate, for https://\n"          \
    "                     addresses (default $MOONRAFT_TLS_CA; else the system's)\n"     \
    "  --tls-cert FILE    client certificate, when the node requires one\n"              \
    "  --tls-key FILE     its key ($MOONRAFT_TLS_CERT, $MOONRAFT_TLS_KEY)\n"

/* TLS files (borrowed strings; NULL: none). */
struct mr_console_tls_files {
    const char *ca, *cert, *key;
};

/* Takes --tls-ca/--tls-cert/--tls-key (as "--opt V" or "--opt=V") at
 * argv[*i], advancing *i past a separate value. Returns 1 taken, 0 not one
 * of them, -1 value missing. */
int mr_console_tls_opt(int argc, char **argv, int *i, struct mr_console_tls_files *t);
/* Fills the unset ones from $MOONRAFT_TLS_CA, $MOONRAFT_TLS_CERT and
 * $MOONRAFT_TLS_KEY (empty values count as unset). */
void mr_console_tls_env(struct mr_console_tls_files *t);

/* Receives the body of a large answer, piece by piece and in order. Returns
 * 0, or a negative code that stops the transfer (and is returned). */
typedef int (*mr_console_sink_cb)(void *data, const char *chunk, size_t len);

/* One GET of `path` from the node at `addr` ([http://|https://]host:port, as
 * the console takes it) with the console's client: https verifies the node
 * against tls->ca (or the system's CAs) and presents tls->cert/key when set
 * (tls may be NULL). `headers`: NULL or a NULL-terminated list of
 * "Name: value". A 2xx body goes to `sink` as it arrives; any other answer's
 * body (its first errbody_size - 1 bytes) is copied NUL-terminated into
 * errbody. `timeout_ms` bounds each wait for answer bytes, not the whole
 * transfer (connecting: 10 s). Returns 0 with *status set once the whole answer arrived
 * (the body announced by Content-Length, chunked or up to the close), or a negative code
 * with errmsg (MR_ERRMSG_SIZE) saying what failed: MR_EINVAL (bad address), MR_EAUTH
 * (TLS: certificate refused...), MR_ETIMEOUT, MR_EPROTO (malformed or cut answer),
 * -errno, or the sink's code. */
int mr_console_download(const char *addr, const struct mr_console_tls_files *tls,
                        const char *path, const char *const *headers, int timeout_ms,
                        mr_console_sink_cb sink, void *data, int *status, char *errbody,
                        size_t errbody_size, char *errmsg);

#endif /* MR_CONSOLE_H */
