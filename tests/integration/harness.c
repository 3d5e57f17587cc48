/* Integration test harness: see harness.h. */
#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <lauxlib.h>
#include <lua-cjson.h>
#include <lua.h>
#include <lualib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "storage/storage.h"

#ifndef MR_BINARY_DIR
#define MR_BINARY_DIR "build"
#endif
#ifndef MR_SOURCE_DIR
#define MR_SOURCE_DIR "."
#endif

long long mr_it_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void mr_it_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        perror("free_port");
        abort();
    }
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

void mr_it_cluster_init(struct mr_it_cluster *c, int n)
{
    int i, j;
    memset(c, 0, sizeof *c);
    if (n > MR_IT_MAX_NODES) abort();
    snprintf(c->root, sizeof c->root, "/tmp/mr-it-XXXXXX");
    if (mkdtemp(c->root) == NULL) {
        perror("mkdtemp");
        abort();
    }
    c->n = n;
    for (i = 0; i < n; i++) {
        struct mr_it_node *nd = &c->nodes[i];
        snprintf(nd->name, sizeof nd->name, "n%d", i + 1);
        /* Keep the two ports of all nodes distinct. */
        for (;;) {
            int clash = 0;
            nd->raft_port = free_port();
            nd->http_port = free_port();
            if (nd->raft_port == nd->http_port) clash = 1;
            for (j = 0; j < i; j++) {
                int a = c->nodes[j].raft_port, b = c->nodes[j].http_port;
                if (a == nd->raft_port || a == nd->http_port || b == nd->raft_port ||
                    b == nd->http_port)
                    clash = 1;
            }
            if (!clash) break;
        }
        {
            /* through a local buffer: gcc's -Wrestrict sees one object */
            char tmp[sizeof nd->log_path];
            snprintf(tmp, sizeof tmp, "%s/%s", c->root, nd->name);
            size_t l = strlen(tmp); /* root is short: never cut in practice */
            if (l >= sizeof nd->data_dir) l = sizeof nd->data_dir - 1;
            memcpy(nd->data_dir, tmp, l);
            nd->data_dir[l] = '\0';
            snprintf(tmp, sizeof tmp, "%s/%s.log", c->root, nd->name);
            snprintf(nd->log_path, sizeof nd->log_path, "%s", tmp);
        }
    }
}

static void rm_rf(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    char sub[1024];
    if (d == NULL) {
        unlink(path);
        return;
    }
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        rm_rf(sub);
    }
    closedir(d);
    rmdir(path);
}

/* Counts sanitizer reports in a node's log (ASan, UBSan, LSan). */
static int sanitizer_findings(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    int found = 0;
    if (f == NULL) return 0;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strstr(line, "Sanitizer") != NULL || strstr(line, "runtime error:") != NULL) {
            if (found == 0) fprintf(stderr, "harness: sanitizer report in %s:\n", path);
            if (found < 30) fputs(line, stderr);
            found++;
        }
    }
    fclose(f);
    return found;
}

int mr_it_cluster_destroy(struct mr_it_cluster *c)
{
    int i, bad = 0;
    /* A graceful stop, so leak checks run in sanitizer builds. */
    for (i = 0; i < MR_IT_MAX_NODES; i++) {
        if (c->nodes[i].pid > 0) {
            int rc = mr_it_stop(c, i);
            if (rc != 0) {
                fprintf(stderr, "harness: %s exited with %d on SIGTERM\n", c->nodes[i].name, rc);
                bad++;
            }
        }
    }
    for (i = 0; i < MR_IT_MAX_NODES; i++) {
        if (c->nodes[i].log_path[0]) bad += sanitizer_findings(c->nodes[i].log_path);
    }
    if (bad) mr_it_dump_logs(c);
    if (getenv("MR_IT_KEEP") == NULL) {
        rm_rf(c->root);
    } else {
        fprintf(stderr, "harness: kept %s\n", c->root);
    }
    return bad;
}

/* Split a command line on spaces (no quoting needed by our tests). */
static pid_t spawn(struct mr_it_node *nd, const char *cmdline)
{
    char *copy = strdup(cmdline), *tok, *save = NULL;
    char *argv[128];
    int argc = 0, fd;
    pid_t pid;
    argv[argc++] = (char *)MR_BINARY_DIR "/moonraft";
    for (tok = strtok_r(copy, " ", &save); tok && argc < 126;
         tok = strtok_r(NULL, " ", &save))
        argv[argc++] = tok;
    argv[argc] = NULL;
    pid = fork();
    if (pid < 0) {
        perror("fork");
        abort();
    }
    if (pid == 0) {
        fd = open(nd->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        if (nd->powerloss_dir[0]) setenv("MOONRAFT_FAULT_POWERLOSS", nd->powerloss_dir, 1);
        if (nd->slow_sync_ms > 0) {
            char ms[16];
            snprintf(ms, sizeof ms, "%d", nd->slow_sync_ms);
            setenv("MOONRAFT_FAULT_SLOW_SYNC_MS", ms, 1);
        }
        if (chdir(MR_SOURCE_DIR) != 0) _exit(126);
        execv(argv[0], argv);
        _exit(127);
    }
    free(copy);
    nd->pid = pid;
    nd->paused = 0;
    return pid;
}

pid_t mr_it_start_args(struct mr_it_cluster *c, int i, const char *args)
{
    struct mr_it_node *nd = &c->nodes[i];
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "--id %s --data-dir %s --raft-addr 127.0.0.1:%d --http-addr 127.0.0.1:%d %s %s",
             nd->name, nd->data_dir, nd->raft_port, nd->http_port, args ? args : "",
             c->extra_args);
    return spawn(nd, cmd);
}

pid_t mr_it_start_static(struct mr_it_cluster *c, int i, const char *extra)
{
    char peers[1024] = "", args[2048];
    size_t off = 0;
    int j;
    for (j = 0; j < c->n; j++) {
        off += (size_t)snprintf(peers + off, sizeof peers - off, "%s%s=127.0.0.1:%d",
                                j ? "," : "", c->nodes[j].name, c->nodes[j].raft_port);
    }
    snprintf(args, sizeof args, "--peers %s %s", peers, extra ? extra : "");
    return mr_it_start_args(c, i, args);
}

static int reap(struct mr_it_node *nd, int timeout_ms)
{
    long long end = mr_it_now_ms() + timeout_ms;
    int st;
    for (;;) {
        pid_t r = waitpid(nd->pid, &st, WNOHANG);
        if (r == nd->pid) {
            nd->pid = 0;
            if (WIFEXITED(st)) return WEXITSTATUS(st);
            return 128 + WTERMSIG(st);
        }
        if (r < 0) {
            nd->pid = 0;
            return -2;
        }
        if (mr_it_now_ms() > end) return -1;
        mr_it_sleep_ms(10);
    }
}

int mr_it_wait_exit(struct mr_it_cluster *c, int i, int timeout_ms)
{
    return reap(&c->nodes[i], timeout_ms);
}

int mr_it_stop(struct mr_it_cluster *c, int i)
{
    struct mr_it_node *nd = &c->nodes[i];
    int rc;
    if (nd->pid <= 0) return -2;
    if (nd->paused) kill(nd->pid, SIGCONT);
    kill(nd->pid, SIGTERM);
    rc = reap(nd, 10000);
    if (rc == -1) {
        kill(nd->pid, SIGKILL);
        rc = reap(nd, 10000);
    }
    return rc;
}

void mr_it_kill9(struct mr_it_cluster *c, int i)
{
    struct mr_it_node *nd = &c->nodes[i];
    if (nd->pid <= 0) return;
    kill(nd->pid, SIGKILL);
    reap(nd, 10000);
}

void mr_it_powerloss_enable(struct mr_it_cluster *c, int i)
{
    struct mr_it_node *nd = &c->nodes[i];
    char tmp[sizeof nd->powerloss_dir]; /* gcc's -Wrestrict sees one object */
    snprintf(tmp, sizeof tmp, "%s/%s.img", c->root, nd->name);
    memcpy(nd->powerloss_dir, tmp, sizeof tmp);
}

int mr_it_powercut(struct mr_it_cluster *c, int i)
{
    struct mr_it_node *nd = &c->nodes[i];
    char errmsg[MR_ERRMSG_SIZE];
    int rv;
    mr_it_kill9(c, i);
    if (!nd->powerloss_dir[0]) {
        fprintf(stderr, "harness: %s runs without the power-loss layer\n", nd->name);
        return MR_EINVAL;
    }
    rv = mr_store_powerloss_cut(nd->data_dir, nd->powerloss_dir, errmsg);
    if (rv != 0) fprintf(stderr, "harness: power cut of %s: %s\n", nd->name, errmsg);
    return rv;
}

void mr_it_pause(struct mr_it_cluster *c, int i)
{
    if (c->nodes[i].pid > 0) {
        kill(c->nodes[i].pid, SIGSTOP);
        c->nodes[i].paused = 1;
    }
}

void mr_it_resume(struct mr_it_cluster *c, int i)
{
    if (c->nodes[i].pid > 0) {
        kill(c->nodes[i].pid, SIGCONT);
        c->nodes[i].paused = 0;
    }
}

/* ---- HTTP client -------------------------------------------------------------- */
struct parse_state {
    struct mr_it_resp *r;
    size_t cap;
    int done;
    int in_retry_after;
};

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct parse_state *s = p->data;
    if (s->r->len + len + 1 > s->cap) {
        s->cap = (s->r->len + len + 1) * 2;
        s->r->body = realloc(s->r->body, s->cap);
    }
    memcpy(s->r->body + s->r->len, at, len);
    s->r->len += len;
    s->r->body[s->r->len] = '\0';
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct parse_state *s = p->data;
    s->in_retry_after = (len == 11 && strncasecmp(at, "Retry-After", 11) == 0);
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct parse_state *s = p->data;
    if (s->in_retry_after && len < sizeof s->r->retry_after) {
        memcpy(s->r->retry_after, at, len);
        s->r->retry_after[len] = '\0';
    }
    return 0;
}

static int on_complete(http_parser *p)
{
    struct parse_state *s = p->data;
    s->done = 1;
    return 0;
}

/* ---- HTTPS (mr_it_set_tls) ------------------------------------------------------ */
static SSL_CTX *tls_ctx;

int mr_it_set_tls(const char *ca, const char *cert, const char *key)
{
    if (tls_ctx != NULL) SSL_CTX_free(tls_ctx);
    tls_ctx = NULL;
    if (ca == NULL) return 0;
    tls_ctx = SSL_CTX_new(TLS_client_method());
    if (tls_ctx == NULL || SSL_CTX_load_verify_locations(tls_ctx, ca, NULL) != 1) return -1;
    if (cert != NULL && (SSL_CTX_use_certificate_chain_file(tls_ctx, cert) != 1 ||
                         SSL_CTX_use_PrivateKey_file(tls_ctx, key, SSL_FILETYPE_PEM) != 1))
        return -1;
    SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_PEER, NULL);
    return 0;
}

static ssize_t io_send(SSL *ssl, int fd, const char *p, size_t n)
{
    if (ssl == NULL) return send(fd, p, n, MSG_NOSIGNAL);
    return SSL_write(ssl, p, (int)n);
}

/* Blocking TLS read with the socket's receive timeout; 0 on EOF or error. */
static ssize_t io_recv(SSL *ssl, int fd, char *buf, size_t n)
{
    int got;
    if (ssl == NULL) return recv(fd, buf, n, 0);
    got = SSL_read(ssl, buf, (int)n);
    return got > 0 ? got : 0;
}

struct mr_it_resp mr_it_http_port(int port, const char *method, const char *path,
                                  const char *body, const char *headers, int timeout_ms)
{
    SSL *ssl = NULL;
    struct mr_it_resp r;
    struct sockaddr_in a;
    struct parse_state ps;
    http_parser parser;
    http_parser_settings settings;
    char *req, buf[65536];
    size_t blen = body ? strlen(body) : 0, reqcap = blen + 2048, off = 0;
    int fd, n, one = 1;
    long long end = mr_it_now_ms() + timeout_ms;

    memset(&r, 0, sizeof r);
    r.body = calloc(1, 1);
    r.not_sent = 1;
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return r;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return r;
    }
    if (tls_ctx != NULL) {
        struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        ssl = SSL_new(tls_ctx);
        SSL_set_fd(ssl, fd);
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), "127.0.0.1");
        if (SSL_connect(ssl) != 1) {
            ERR_clear_error();
            SSL_free(ssl);
            close(fd);
            return r;
        }
    }
    r.not_sent = 0;
    req = malloc(reqcap);
    n = snprintf(req, reqcap,
                 "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n"
                 "Content-Length: %zu\r\n%s\r\n",
                 method, path, port, blen, headers ? headers : "");
    if (blen) memcpy(req + n, body, blen);
    {
        size_t total = (size_t)n + blen;
        while (off < total) {
            ssize_t w = io_send(ssl, fd, req + off, total - off);
            if (w <= 0) break;
            off += (size_t)w;
        }
    }
    free(req);

    memset(&settings, 0, sizeof settings);
    settings.on_body = on_body;
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_message_complete = on_complete;
    http_parser_init(&parser, HTTP_RESPONSE);
    memset(&ps, 0, sizeof ps);
    ps.r = &r;
    ps.cap = 1;
    parser.data = &ps;
    while (!ps.done) {
        struct pollfd pfd = {fd, POLLIN, 0};
        long long left = end - mr_it_now_ms();
        ssize_t got;
        if (left <= 0) break;
        if ((ssl == NULL || SSL_pending(ssl) == 0) && poll(&pfd, 1, (int)left) <= 0) break;
        got = io_recv(ssl, fd, buf, sizeof buf);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
            http_parser_execute(&parser, &settings, buf, 0);
            break;
        }
        if (http_parser_execute(&parser, &settings, buf, (size_t)got) != (size_t)got) break;
    }
    if (ssl != NULL) {
        ERR_clear_error();
        SSL_free(ssl);
    }
    close(fd);
    if (ps.done) r.status = (int)parser.status_code;
    return r;
}

struct mr_it_resp mr_it_http(struct mr_it_cluster *c, int i, const char *method,
                             const char *path, const char *body, const char *headers)
{
    return mr_it_http_port(c->nodes[i].http_port, method, path, body, headers, 10000);
}

void mr_it_resp_free(struct mr_it_resp *r)
{
    free(r->body);
    r->body = NULL;
}

/* ---- JSON queries through Lua + cjson ------------------------------------------ */
const char *mr_it_jq(const char *json, const char *expr)
{
    /* per thread: tests call it from writer threads too (test_backup.c) */
    static _Thread_local char out[4096];
    lua_State *L = luaL_newstate();
    char code[1024];
    luaL_openlibs(L);
    luaL_requiref(L, "cjson", luaopen_cjson, 0);
    lua_pop(L, 1);
    snprintf(code, sizeof code,
             "local cjson = require 'cjson'\n"
             "local ok, j = pcall(cjson.decode, ...)\n"
             "if not ok then return '<invalid json>' end\n"
             "local function safe(f) local ok2, v = pcall(f) if ok2 then return v end end\n"
             "local v = safe(function() return %s end)\n"
             "if v == cjson.null then return 'null' end\n"
             "if type(v) == 'table' then return cjson.encode(v) end\n"
             "if math.type(v) == 'float' and v == math.floor(v) and v < 2^53 then "
             "return string.format('%%d', v) end\n"
             "return tostring(v)",
             expr);
    if (luaL_loadstring(L, code) != LUA_OK) {
        snprintf(out, sizeof out, "<bad expr: %s>", lua_tostring(L, -1));
    } else {
        lua_pushstring(L, json ? json : "");
        if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
            snprintf(out, sizeof out, "<error: %s>", lua_tostring(L, -1));
        } else {
            snprintf(out, sizeof out, "%s", lua_tostring(L, -1));
        }
    }
    lua_close(L);
    return out;
}

int mr_it_wait_leader(struct mr_it_cluster *c, int timeout_ms, int all_agree)
{
    long long end = mr_it_now_ms() + timeout_ms;
    while (mr_it_now_ms() < end) {
        int i, leader = -1, agree = 1;
        char leader_name[64] = "";
        for (i = 0; i < c->n; i++) {
            struct mr_it_resp r;
            if (c->nodes[i].pid <= 0 || c->nodes[i].paused) continue;
            r = mr_it_http_port(c->nodes[i].http_port, "GET", "/v1/status", NULL, NULL, 500);
            if (r.status == 200) {
                const char *role = mr_it_jq(r.body, "j.role");
                if (strcmp(role, "leader") == 0) leader = i;
                const char *l = mr_it_jq(r.body, "j.leader");
                if (leader_name[0] == '\0') {
                    snprintf(leader_name, sizeof leader_name, "%s", l);
                } else if (strcmp(leader_name, l) != 0) {
                    agree = 0;
                }
            } else {
                agree = 0;
            }
            mr_it_resp_free(&r);
        }
        if (leader >= 0 && (!all_agree || agree)) return leader;
        mr_it_sleep_ms(20);
    }
    return -1;
}

void mr_it_dump_logs(struct mr_it_cluster *c)
{
    int i;
    for (i = 0; i < c->n; i++) {
        char cmd[600];
        fprintf(stderr, "---- %s log (tail) ----\n", c->nodes[i].name);
        snprintf(cmd, sizeof cmd, "tail -n 40 %s 1>&2", c->nodes[i].log_path);
        if (system(cmd) != 0) fprintf(stderr, "(no log)\n");
    }
}

int mr_it_same_state(struct mr_it_cluster *c, int timeout_ms, char hash_out[65],
                     long long *applied_out)
{
    char hash[MR_IT_MAX_NODES][80], applied[MR_IT_MAX_NODES][32];
    long long end = mr_it_now_ms() + timeout_ms;
    int agree = 0, first = -1;
    for (;;) {
        int ok = 1;
        first = -1;
        for (int i = 0; i < c->n; i++) {
            hash[i][0] = applied[i][0] = '\0';
            if (c->nodes[i].pid <= 0) continue;
            struct mr_it_resp r = mr_it_http(c, i, "GET", "/v1/status?hash=true", NULL, NULL);
            if (r.status == 200) {
                snprintf(hash[i], sizeof hash[i], "%s", mr_it_jq(r.body, "j.state_hash"));
                snprintf(applied[i], sizeof applied[i], "%s", mr_it_jq(r.body, "j.applied"));
            }
            mr_it_resp_free(&r);
            if (first < 0) first = i;
            if (strlen(hash[i]) != 64 || strcmp(applied[i], applied[first]) != 0) ok = 0;
        }
        if (first >= 0 && ok) {
            agree = 1;
            for (int i = 0; i < c->n; i++)
                if (c->nodes[i].pid > 0 && strcmp(hash[i], hash[first]) != 0) agree = 0;
            if (agree || mr_it_now_ms() > end) break;
        } else if (mr_it_now_ms() > end) {
            break;
        }
        mr_it_sleep_ms(50);
    }
    for (int i = 0; i < c->n; i++)
        if (c->nodes[i].pid > 0)
            fprintf(stderr, "%s applied %s state_hash %s\n", c->nodes[i].name, applied[i],
                    hash[i]);
    if (first >= 0) {
        if (hash_out) snprintf(hash_out, 65, "%s", hash[first]);
        if (applied_out) *applied_out = atoll(applied[first]);
    }
    return agree;
}

const char *mr_it_status(struct mr_it_cluster *c, int i, const char *expr)
{
    static _Thread_local char out[4096];
    struct mr_it_resp r = mr_it_http(c, i, "GET", "/v1/status", NULL, NULL);
    snprintf(out, sizeof out, "%s", r.status == 200 ? mr_it_jq(r.body, expr) : "<down>");
    mr_it_resp_free(&r);
    return out;
}

int mr_it_state_hash(struct mr_it_cluster *c, int i, int timeout_ms, char hash_out[65],
                     long long *applied_out)
{
    long long end = mr_it_now_ms() + timeout_ms;
    hash_out[0] = '\0';
    for (;;) {
        struct mr_it_resp r = mr_it_http(c, i, "GET", "/v1/status?hash=true", NULL, NULL);
        if (r.status == 200) {
            const char *h = mr_it_jq(r.body, "j.state_hash");
            if (strlen(h) == 64) {
                snprintf(hash_out, 65, "%s", h);
                if (applied_out) *applied_out = atoll(mr_it_jq(r.body, "j.applied"));
            }
        }
        mr_it_resp_free(&r);
        if (hash_out[0] != '\0') return 1;
        if (mr_it_now_ms() > end) return 0;
        mr_it_sleep_ms(20);
    }
}

long long mr_it_snapshot(struct mr_it_cluster *c, int i, const char *headers)
{
    long long want = -1, end = mr_it_now_ms() + 20000; /* generous: ASan, a loaded machine */
    while (mr_it_now_ms() < end) {
        struct mr_it_resp r = mr_it_http(c, i, "POST", "/v1/snapshot", NULL, headers);
        int status = r.status;
        char body[256];
        snprintf(body, sizeof body, "%s", r.body ? r.body : "");
        mr_it_resp_free(&r);
        if (status == 200 || status == 202) {
            want = 0;
            break;
        }
        if (status != 409) { /* 409: an automatic one is running */
            fprintf(stderr, "snapshot on %s: status %d, body %s\n", c->nodes[i].name, status,
                    body[0] ? body : "(none)");
            return -1;
        }
        mr_it_sleep_ms(25);
    }
    if (want < 0) return -1;
    struct mr_it_resp r = mr_it_http(c, i, "GET", "/v1/status", NULL, NULL);
    if (r.status == 200) want = atoll(mr_it_jq(r.body, "j.applied"));
    mr_it_resp_free(&r);
    for (end = mr_it_now_ms() + 30000; mr_it_now_ms() < end;) {
        r = mr_it_http(c, i, "GET", "/v1/status", NULL, NULL);
        long long got = r.status == 200 ? atoll(mr_it_jq(r.body, "j.snapshot_index")) : -1;
        mr_it_resp_free(&r);
        if (got >= want) return want;
        mr_it_sleep_ms(25);
    }
    fprintf(stderr, "snapshot on %s: snapshot_index never reached %lld\n", c->nodes[i].name,
            want);
    return -1;
}
