/* Unit tests for src/console: `moonraft console` against a fake HTTP node.
 *
 * The fake node is a thread with a listening socket on 127.0.0.1:0 that
 * answers canned JSON per route and records every request (method, path,
 * Authorization, Idempotency-Key, body). The console runs in a forked child:
 * non-interactive runs with stdout/stderr sent to files, interactive runs on
 * a pseudo-terminal the test types into. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <http_parser.h>

#include "console/console.h"
#include "console/console_int.h"
#include "sm/sm.h"

#ifndef MR_SOURCE_DIR
#error "MR_SOURCE_DIR must be defined by the build"
#endif

#define TOKEN "tok-9f8e7d-user"
#define ADMIN_TOKEN "tok-1a2b3c-admin"

/* ---- fake node ------------------------------------------------------------ */

struct route {
    const char *method;
    const char *path; /* prefix of the request target */
    int status;
    const char *body;
    const char *body2;   /* answer from the second call on, if set */
    int chunked;         /* send the answer with Transfer-Encoding: chunked */
    int drop_after;      /* close the connection silently after answering */
    const char *headers; /* extra header lines, each ending in \r\n */
    int delay_ms;        /* wait this long before answering (a long poll) */
};

struct record {
    char method[16];
    char path[512];
    char auth[256];
    char idem[128];
    char body[4096];
};

#define MAX_RECORDS 64
#define MAX_ROUTES 24

struct fake {
    int lfd;
    int port;
    int stop[2];
    pthread_t thread;
    pthread_mutex_t mu;
    struct route routes[MAX_ROUTES];
    int calls[MAX_ROUTES];
    int n_routes;
    struct record recs[MAX_RECORDS];
    int n_recs;
    int conns;
};

struct req_parse {
    struct fake *f;
    struct record rec;
    char field[64];
    int field_done;
    int done;
};

static void append(char *dst, size_t cap, const char *at, size_t n)
{
    size_t len = strlen(dst);
    if (len + n >= cap) n = cap - 1 - len;
    memcpy(dst + len, at, n);
    dst[len + n] = '\0';
}

static int rq_url(http_parser *p, const char *at, size_t n)
{
    struct req_parse *r = p->data;
    append(r->rec.path, sizeof r->rec.path, at, n);
    return 0;
}

static int rq_field(http_parser *p, const char *at, size_t n)
{
    struct req_parse *r = p->data;
    if (r->field_done) {
        r->field[0] = '\0';
        r->field_done = 0;
    }
    append(r->field, sizeof r->field, at, n);
    return 0;
}

static int rq_value(http_parser *p, const char *at, size_t n)
{
    struct req_parse *r = p->data;
    r->field_done = 1;
    if (strcasecmp(r->field, "authorization") == 0) {
        append(r->rec.auth, sizeof r->rec.auth, at, n);
    } else if (strcasecmp(r->field, "idempotency-key") == 0) {
        append(r->rec.idem, sizeof r->rec.idem, at, n);
    }
    return 0;
}

static int rq_body(http_parser *p, const char *at, size_t n)
{
    struct req_parse *r = p->data;
    append(r->rec.body, sizeof r->rec.body, at, n);
    return 0;
}

static int rq_done(http_parser *p)
{
    struct req_parse *r = p->data;
    snprintf(r->rec.method, sizeof r->rec.method, "%s",
             http_method_str((enum http_method)p->method));
    r->done = 1;
    http_parser_pause(p, 1);
    return 0;
}

static void send_str(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

/* Records the request and answers it on fd. Returns 1 if the connection must
 * be dropped afterwards. */
static int answer(struct fake *f, int fd, const struct record *rec)
{
    const struct route *rt = NULL;
    const char *body = "{\"error\":{\"code\":\"not_found\",\"message\":\"no route\"}}";
    const char *extra = "";
    int status = 404, i;
    char head[1024];

    pthread_mutex_lock(&f->mu);
    if (f->n_recs < MAX_RECORDS) f->recs[f->n_recs++] = *rec;
    for (i = 0; i < f->n_routes; i++) {
        const struct route *r = &f->routes[i];
        if (strcmp(r->method, rec->method) == 0 &&
            strncmp(r->path, rec->path, strlen(r->path)) == 0) {
            rt = r;
            body = (f->calls[i] > 0 && r->body2 != NULL) ? r->body2 : r->body;
            f->calls[i]++;
            break;
        }
    }
    pthread_mutex_unlock(&f->mu);
    if (rt != NULL) {
        status = rt->status;
        if (rt->headers != NULL) extra = rt->headers;
        if (rt->delay_ms > 0) {
            /* Hold the answer, but not past fake_stop(). */
            struct pollfd pf = {f->stop[0], POLLIN, 0};
            if (poll(&pf, 1, rt->delay_ms) > 0) return 1;
        }
    }
    if (rt != NULL && rt->chunked) {
        /* Two chunks, split mid-body, then the last-chunk. */
        size_t half = strlen(body) / 2;
        char part[8192];
        snprintf(head, sizeof head,
                 "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n%s"
                 "Transfer-Encoding: chunked\r\n\r\n",
                 status, extra);
        send_str(fd, head);
        snprintf(part, sizeof part, "%zx\r\n%.*s\r\n%zx\r\n%s\r\n0\r\n\r\n", half,
                 (int)half, body, strlen(body) - half, body + half);
        send_str(fd, part);
    } else {
        snprintf(head, sizeof head,
                 "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n%s"
                 "Content-Length: %zu\r\n\r\n",
                 status, extra, strlen(body));
        send_str(fd, head);
        send_str(fd, body);
    }
    return rt != NULL && rt->drop_after;
}

/* Serves one connection until EOF, a drop, or stop. Returns 1 on stop. */
static int serve(struct fake *f, int fd)
{
    static const http_parser_settings settings = {
        .on_url = rq_url,
        .on_header_field = rq_field,
        .on_header_value = rq_value,
        .on_body = rq_body,
        .on_message_complete = rq_done,
    };
    http_parser parser;
    struct req_parse r;
    char buf[8192];
    size_t have = 0;

    memset(&r, 0, sizeof r);
    http_parser_init(&parser, HTTP_REQUEST);
    parser.data = &r;
    for (;;) {
        struct pollfd p[2] = {{f->stop[0], POLLIN, 0}, {fd, POLLIN, 0}};
        ssize_t n;
        size_t used;
        if (poll(p, 2, -1) < 0) continue;
        if (p[0].revents) {
            close(fd);
            return 1;
        }
        n = recv(fd, buf + have, sizeof buf - have, 0);
        if (n <= 0) break;
        have += (size_t)n;
        used = http_parser_execute(&parser, &settings, buf, have);
        memmove(buf, buf + used, have - used);
        have -= used;
        if (r.done) {
            int drop = answer(f, fd, &r.rec);
            if (drop) break;
            memset(&r, 0, sizeof r);
            http_parser_init(&parser, HTTP_REQUEST);
            parser.data = &r;
            /* Anything left over would be a pipelined request: not used. */
            have = 0;
        } else if (HTTP_PARSER_ERRNO(&parser) != HPE_OK) {
            break;
        }
    }
    close(fd);
    return 0;
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    for (;;) {
        struct pollfd p[2] = {{f->stop[0], POLLIN, 0}, {f->lfd, POLLIN, 0}};
        int fd;
        if (poll(p, 2, -1) < 0) continue;
        if (p[0].revents) break;
        fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) continue;
        pthread_mutex_lock(&f->mu);
        f->conns++;
        pthread_mutex_unlock(&f->mu);
        if (serve(f, fd)) break;
    }
    return NULL;
}

static void fake_route(struct fake *f, struct route r)
{
    assert_true(f->n_routes < MAX_ROUTES);
    f->routes[f->n_routes++] = r;
}

static void fake_start(struct fake *f)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(f->lfd >= 0);
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(f->lfd, 16), 0);
    assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&sa, &len), 0);
    f->port = ntohs(sa.sin_port);
    assert_int_equal(pipe2(f->stop, O_CLOEXEC), 0);
    assert_int_equal(pthread_mutex_init(&f->mu, NULL), 0);
    assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

static void fake_stop(struct fake *f)
{
    assert_int_equal(write(f->stop[1], "x", 1), 1);
    pthread_join(f->thread, NULL);
    close(f->stop[0]);
    close(f->stop[1]);
    close(f->lfd);
    pthread_mutex_destroy(&f->mu);
}

/* The i-th recorded request (copy). */
static struct record fake_rec(struct fake *f, int i)
{
    struct record r;
    pthread_mutex_lock(&f->mu);
    assert_true(i < f->n_recs);
    r = f->recs[i];
    pthread_mutex_unlock(&f->mu);
    return r;
}

static int fake_count(struct fake *f)
{
    int n;
    pthread_mutex_lock(&f->mu);
    n = f->n_recs;
    pthread_mutex_unlock(&f->mu);
    return n;
}

/* ---- fixture ------------------------------------------------------------------ */

struct pty;

struct fx {
    struct fake node;
    char dir[64];
    char addr[64];
    char out_path[128];
    char err_path[128];
    char hist_path[128];
    char *out;              /* stdout of the last run (malloc) */
    char *err;              /* stderr of the last run (malloc) */
    const char *stdin_path; /* stdin of the next run_console (default /dev/null) */
    struct pty *pty;        /* the terminal session still running, for teardown */
    struct pty *pty_mem;    /* storage for it (heap: teardown runs after a longjmp) */
};

static const char STATUS_JSON[] =
    "{\"id\":1,\"role\":\"leader\",\"term\":3,\"leader\":1,\"commit\":10,"
    "\"members\":[{\"id\":2,\"http_addr\":\"127.0.0.1:8002\"},{\"id\":1,\"http_addr\":"
    "\"127.0.0.1:8001\",\"learner\":false}],\"state_hash\":\"ab12\"}";

#define DEPLOY_SRC "return {} -- v9\n"
static char deploy_hash[65];
static char deploy_new[256];

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    strcpy(fx->dir, "/tmp/mr_console_XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->out_path, sizeof fx->out_path, "%s/out", fx->dir);
    snprintf(fx->err_path, sizeof fx->err_path, "%s/err", fx->dir);
    snprintf(fx->hist_path, sizeof fx->hist_path, "%s/history", fx->dir);
    fake_route(&fx->node, (struct route){"GET", "/v1/status", 200, STATUS_JSON, NULL, 0,
                                         0, NULL, 0});
    fake_route(&fx->node, (struct route){"POST", "/v1/command", 200,
                                         "{\"result\":{\"ok\":true},\"index\":41}", NULL,
                                         0, 0, NULL, 0});
    fake_route(&fx->node,
               (struct route){"POST", "/v1/query", 200,
                              "{\"result\":[1,2,3],\"index\":40}", NULL, 0, 0, NULL, 0});
    fake_route(&fx->node, (struct route){"PUT", "/v1/kv/", 200,
                                         "{\"key\":\"k\",\"value\":1,\"index\":42}", NULL,
                                         0, 0, NULL, 0});
    fake_route(&fx->node, (struct route){"GET", "/v1/kv/?prefix=", 200,
                                         "{\"value\":{\"a/x\":1,\"a/y\":2},\"index\":43}",
                                         NULL, 0, 0, NULL, 0});
    fake_route(&fx->node, (struct route){"GET", "/v1/kv/missing", 404,
                                         "{\"error\":{\"code\":\"not_found\",\"message\":"
                                         "\"no such key\"}}",
                                         NULL, 0, 0, NULL, 0});
    fake_route(&fx->node, (struct route){"GET", "/v1/kv/secret", 403,
                                         "{\"error\":{\"code\":\"forbidden\",\"message\":"
                                         "\"token lacks access\"}}",
                                         NULL, 0, 0, NULL, 0});
    fake_route(&fx->node,
               (struct route){"GET", "/v1/kv/", 200,
                              "{\"key\":\"k\",\"value\":\"hello\",\"index\":44}", NULL, 0,
                              0, NULL, 0});
    fake_route(&fx->node, (struct route){"DELETE", "/v1/kv/", 200,
                                         "{\"key\":\"k\",\"value\":null,\"index\":45}",
                                         NULL, 0, 0, NULL, 0});
    fake_route(&fx->node, (struct route){"GET", "/v1/members", 200,
                                         "{\"members\":[{\"id\":1,\"voter\":true}]}",
                                         NULL, 0, 0, NULL, 0});
    fake_route(&fx->node, (struct route){"POST", "/v1/members", 200, "{\"index\":46}",
                                         NULL, 0, 0, NULL, 0});
    fake_route(&fx->node, (struct route){"DELETE", "/v1/members/", 200, "{\"index\":47}",
                                         NULL, 0, 0, NULL, 0});
    fake_route(&fx->node, (struct route){"POST", "/v1/leader/transfer", 200, "{}", NULL,
                                         0, 0, NULL, 0});
    fake_route(&fx->node, (struct route){"POST", "/v1/snapshot", 200, "{\"index\":48}",
                                         NULL, 0, 0, NULL, 0});
    fake_route(&fx->node, (struct route){"POST", "/v1/integrity/check", 202,
                                         "{\"check_index\":49}", NULL, 0, 0, NULL, 0});
    /* deploy(): a refused script (label "bad"), then one that takes effect
     * on the second GET /v1/script */
    fake_route(&fx->node, (struct route){"POST", "/v1/script?label=bad", 422,
                                         "{\"error\":{\"code\":\"script_error\",\"message\":"
                                         "\"bad.lua:1: unexpected symbol\"}}",
                                         NULL, 0, 0, NULL, 0});
    mr_sm_sha256_hex(DEPLOY_SRC, strlen(DEPLOY_SRC), deploy_hash);
    snprintf(deploy_new, sizeof deploy_new,
             "{\"hash\":\"%s\",\"label\":\"v9\",\"size\":%zu,\"index\":50}", deploy_hash,
             strlen(DEPLOY_SRC));
    fake_route(&fx->node, (struct route){"POST", "/v1/script", 200, deploy_new, NULL, 0, 0,
                                         NULL, 0});
    fake_route(&fx->node,
               (struct route){"GET", "/v1/script", 200,
                              "{\"hash\":\"0ld\",\"label\":\"kv.lua\",\"size\":1,\"index\":0}",
                              deploy_new, 0, 0, NULL, 0});
    fake_route(&fx->node,
               (struct route){"GET", "/v1/watch", 200, "{\"events\":[],\"index\":9}",
                              NULL, 0, 0, NULL, 10000 /* ms */});
    fake_start(&fx->node);
    snprintf(fx->addr, sizeof fx->addr, "127.0.0.1:%d", fx->node.port);
    *state = fx;
    return 0;
}

static void pty_kill(struct pty *p);

static int teardown(void **state)
{
    struct fx *fx = *state;
    if (fx->pty != NULL) pty_kill(fx->pty);
    free(fx->pty_mem);
    fake_stop(&fx->node);
    unlink(fx->out_path);
    unlink(fx->err_path);
    unlink(fx->hist_path);
    if (fx->stdin_path != NULL) unlink(fx->stdin_path);
    assert_int_equal(rmdir(fx->dir), 0);
    free(fx->out);
    free(fx->err);
    free(fx);
    return 0;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Waits for pid for at most `ms`; then, unless `keep`, kills it. Returns
 * the wait status, or -1 if it did not finish. */
static int wait_child(pid_t pid, int ms, int keep)
{
    int st, i;
    for (i = 0; i < ms / 5; i++) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return st;
        usleep(5000);
    }
    if (keep) return -1;
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -1;
}

/* In a forked child: runs the console in a fresh image of this binary (see
 * main), so that the sanitizers' leak check at exit sees one thread only. */
static void exec_console(char **argv)
{
    char *args[40];
    int n = 0;
    args[n++] = (char *)"unit_test_console";
    args[n++] = (char *)"--console-child";
    while (*argv != NULL && n < 39) args[n++] = *argv++;
    args[n] = NULL;
    execv("/proc/self/exe", args);
    _exit(97);
}

/* Runs `moonraft console ARGS...` (NULL-terminated) in a child with the given
 * environment additions ("NAME=value" strings, NULL-terminated), captures its
 * output into fx->out / fx->err and returns its exit status. */
static int run_console(struct fx *fx, const char *const *env, ...)
{
    char *argv[32];
    int argc = 0, st;
    va_list ap;
    pid_t pid;

    argv[argc++] = (char *)"console";
    va_start(ap, env);
    for (;;) {
        char *a = va_arg(ap, char *);
        if (a == NULL) break;
        assert_true(argc < 31);
        argv[argc++] = a;
    }
    va_end(ap);
    argv[argc] = NULL;
    free(fx->out);
    free(fx->err);
    fx->out = fx->err = NULL;
    fflush(NULL);

    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int in = open(fx->stdin_path ? fx->stdin_path : "/dev/null", O_RDONLY);
        int out = open(fx->out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int err = open(fx->err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (in < 0 || out < 0 || err < 0) _exit(99);
        dup2(in, 0);
        dup2(out, 1);
        dup2(err, 2);
        close(in);
        close(out);
        close(err);
        unsetenv("MOONRAFT_TOKEN");
        unsetenv("MOONRAFT_ADMIN_TOKEN");
        unsetenv("MOONRAFT_ADDR");
        setenv("MOONRAFT_HISTORY", fx->hist_path, 1);
        setenv("MOONRAFT_LUA_DIR", MR_SOURCE_DIR "/lua", 1);
        for (; env != NULL && *env != NULL; env++) putenv((char *)*env);
        exec_console(argv);
    }
    st = wait_child(pid, 20000, 0);
    assert_true(st != -1);
    assert_true(WIFEXITED(st));
    fx->out = slurp(fx->out_path);
    fx->err = slurp(fx->err_path);
    return WEXITSTATUS(st);
}

static void assert_contains(const char *hay, const char *needle)
{
    if (strstr(hay, needle) == NULL) {
        fail_msg("expected to find [%s] in:\n%s", needle, hay);
    }
}

/* ---- non-interactive --------------------------------------------------------------- */

static void test_e_prints_status_leader_and_exits_zero(void **state)
{
    struct fx *fx = *state;
    assert_int_equal(
        run_console(fx, NULL, fx->addr, "-e", "print(status().leader)", NULL), 0);
    assert_string_equal(fx->out, "1\n");
    assert_string_equal(fx->err, "");
    assert_string_equal(fake_rec(&fx->node, 0).method, "GET");
    assert_string_equal(fake_rec(&fx->node, 0).path, "/v1/status");
    /* The glued forms: -eCODE and --admin-token=T. */
    assert_int_equal(run_console(fx, NULL, "--admin-token=" ADMIN_TOKEN, fx->addr,
                                 "-eprint(status().term)", NULL),
                     0);
    assert_string_equal(fx->out, "3\n");
    assert_string_equal(fake_rec(&fx->node, 1).auth, "Bearer " ADMIN_TOKEN);
}

/* deploy(file, label) posts the source with the admin token and waits until
 * GET /v1/script shows its hash; `moonraft deploy` does the same and exits 0,
 * or 1 with the server's error for a refused script. */
static void test_deploy_posts_the_source_and_waits_for_its_hash(void **state)
{
    struct fx *fx = *state;
    char file[128], bad[128];
    snprintf(file, sizeof file, "%s/v9.lua", fx->dir);
    snprintf(bad, sizeof bad, "%s/bad.lua", fx->dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs(DEPLOY_SRC, f);
    fclose(f);
    f = fopen(bad, "w");
    assert_non_null(f);
    fputs("x x\n", f);
    fclose(f);
    assert_int_equal(run_console(fx, NULL, "--admin-token=" ADMIN_TOKEN, fx->addr, "-e",
                                 "deploy()", NULL) != 0,
                     1); /* no file given: an error, not a crash */
    char code[300];
    snprintf(code, sizeof code, "local r = deploy('%s', 'v9') print(r.hash, r.index)", file);
    assert_int_equal(
        run_console(fx, NULL, "--admin-token=" ADMIN_TOKEN, fx->addr, "-e", code, NULL), 0);
    assert_contains(fx->out, deploy_hash);
    assert_contains(fx->out, "\t50");
    int n = fake_count(&fx->node), i, posts = 0, gets = 0;
    for (i = 0; i < n; i++) {
        struct record r = fake_rec(&fx->node, i);
        if (strcmp(r.method, "POST") == 0 && strncmp(r.path, "/v1/script", 10) == 0) {
            posts++;
            assert_string_equal(r.path, "/v1/script?label=v9");
            assert_string_equal(r.body, DEPLOY_SRC);
            assert_string_equal(r.auth, "Bearer " ADMIN_TOKEN);
        }
        if (strcmp(r.method, "GET") == 0 && strcmp(r.path, "/v1/script") == 0) gets++;
    }
    assert_int_equal(posts, 1);
    assert_int_equal(gets, 2); /* the old hash first, then the new one */

    /* the CLI: label defaults to the file's name */
    assert_int_equal(run_console(fx, NULL, "deploy", file, fx->addr, "--token", ADMIN_TOKEN,
                                 NULL),
                     0);
    assert_contains(fx->out, deploy_hash);
    assert_string_equal(fake_rec(&fx->node, fake_count(&fx->node) - 2).path,
                        "/v1/script?label=v9.lua");
    assert_int_equal(run_console(fx, NULL, "deploy", bad, fx->addr, "--label", "bad", NULL),
                     1);
    assert_contains(fx->err, "script_error: bad.lua:1: unexpected symbol");
    assert_int_equal(run_console(fx, NULL, "deploy", NULL), 2);
    unlink(file);
    unlink(bad);
}

static void test_pretty_printer_indents_and_sorts_keys(void **state)
{
    struct fx *fx = *state;
    assert_int_equal(run_console(fx, NULL, fx->addr, "-e", "pp(status())", NULL), 0);
    assert_string_equal(
        fx->out, "{\n"
                 "  commit = 10,\n"
                 "  id = 1,\n"
                 "  leader = 1,\n"
                 "  members = {\n"
                 "    { http_addr = \"127.0.0.1:8002\", id = 2 },\n"
                 "    { http_addr = \"127.0.0.1:8001\", id = 1, learner = false },\n"
                 "  },\n"
                 "  role = \"leader\",\n"
                 "  state_hash = \"ab12\",\n"
                 "  term = 3,\n"
                 "}\n");
}

static void test_pretty_printer_marks_cycles_and_quotes_odd_keys(void **state)
{
    struct fx *fx = *state;
    assert_int_equal(
        run_console(fx, NULL, fx->addr, "-e",
                    "local t = {name = 'n', [\"two words\"] = 2, [10] = true, "
                    "list = {1, 'x', null}, deep = {a = {b = {}}}} t.self = t "
                    "pp(t, 'str', 7, nil)",
                    NULL),
        0);
    assert_contains(fx->out, "{\n  [10] = true,\n");
    assert_contains(fx->out, "  deep = {\n    a = { b = {} },\n  },\n");
    assert_contains(fx->out, "  list = { 1, \"x\", null },\n");
    assert_contains(fx->out, "  name = \"n\",\n  self = <cycle table: 0x");
    assert_contains(fx->out, ">,\n  [\"two words\"] = 2,\n}\n\"str\"\n7\nnil\n");
}

static void test_requests_carry_paths_bodies_and_tokens(void **state)
{
    struct fx *fx = *state;
    struct record r;
    assert_int_equal(
        run_console(fx, NULL, "--token", TOKEN, "--admin-token", ADMIN_TOKEN, fx->addr,
                    "-e",
                    "assert(kv.put('a b/c', {x = 1}) == 42)\n"
                    "local v, i = kv.get('k') assert(v == 'hello' and i == 44)\n"
                    "assert(kv.get('missing') == nil)\n"
                    "assert(kv.del('k') == 45)\n"
                    "assert(kv.list('a/')['a/y'] == 2)\n"
                    "local r, i2 = command({op = 'put', key = 'a', value = 1},"
                    " {idempotency_key = 'id-7'})\n"
                    "assert(r.ok == true and i2 == 41)\n"
                    "assert(#query({op = 'get', key = 'a'}, 'stale') == 3)\n"
                    "query({op = 'x'})\n"
                    "assert(members()[1].id == 1)\n"
                    "join(4, '127.0.0.1:9004', '127.0.0.1:8004', {learner = true})\n"
                    "leave(4) transfer(2) transfer() snapshot()\n"
                    "assert(check().check_index == 49)\n",
                    NULL),
        0);
    assert_string_equal(fx->err, "");
    assert_int_equal(fake_count(&fx->node), 15);

    r = fake_rec(&fx->node, 0);
    assert_string_equal(r.method, "PUT");
    assert_string_equal(r.path, "/v1/kv/a%20b/c");
    assert_string_equal(r.body, "{\"x\":1}");
    assert_string_equal(r.auth, "Bearer " TOKEN);
    assert_string_equal(fake_rec(&fx->node, 1).path, "/v1/kv/k");
    assert_string_equal(fake_rec(&fx->node, 2).path, "/v1/kv/missing");
    assert_string_equal(fake_rec(&fx->node, 3).method, "DELETE");
    assert_string_equal(fake_rec(&fx->node, 4).path, "/v1/kv/?prefix=a%2F");

    r = fake_rec(&fx->node, 5);
    assert_string_equal(r.method, "POST");
    assert_string_equal(r.path, "/v1/command");
    assert_string_equal(r.idem, "id-7");
    assert_non_null(strstr(r.body, "\"op\":\"put\""));
    assert_non_null(strstr(r.body, "\"value\":1"));
    assert_string_equal(r.auth, "Bearer " TOKEN);

    assert_string_equal(fake_rec(&fx->node, 6).path, "/v1/query?consistency=stale");
    assert_string_equal(fake_rec(&fx->node, 7).path,
                        "/v1/query?consistency=linearizable");

    /* Admin requests carry the admin token. */
    r = fake_rec(&fx->node, 8);
    assert_string_equal(r.path, "/v1/members");
    assert_string_equal(r.auth, "Bearer " ADMIN_TOKEN);
    r = fake_rec(&fx->node, 9);
    assert_string_equal(r.method, "POST");
    assert_string_equal(r.path, "/v1/members");
    assert_non_null(strstr(r.body, "\"id\":4"));
    assert_non_null(strstr(r.body, "\"raft_addr\":\"127.0.0.1:9004\""));
    assert_non_null(strstr(r.body, "\"http_addr\":\"127.0.0.1:8004\""));
    assert_non_null(strstr(r.body, "\"learner\":true"));
    assert_string_equal(r.auth, "Bearer " ADMIN_TOKEN);
    r = fake_rec(&fx->node, 10);
    assert_string_equal(r.method, "DELETE");
    assert_string_equal(r.path, "/v1/members/4");
    r = fake_rec(&fx->node, 11);
    assert_string_equal(r.path, "/v1/leader/transfer");
    assert_string_equal(r.body, "{\"id\":2}");
    assert_string_equal(fake_rec(&fx->node, 12).body, "");
    r = fake_rec(&fx->node, 13);
    assert_string_equal(r.path, "/v1/snapshot");
    assert_string_equal(r.auth, "Bearer " ADMIN_TOKEN);
    r = fake_rec(&fx->node, 14);
    assert_string_equal(r.method, "POST");
    assert_string_equal(r.path, "/v1/integrity/check");
    assert_string_equal(r.auth, "Bearer " ADMIN_TOKEN);
}

static void test_tokens_come_from_the_environment_and_are_never_printed(void **state)
{
    struct fx *fx = *state;
    static const char *const env[] = {"MOONRAFT_TOKEN=" TOKEN,
                                      "MOONRAFT_ADMIN_TOKEN=" ADMIN_TOKEN, NULL};
    /* Dump every global (cycles included) and the help text, then fail on
     * the server: neither token may show up anywhere. */
    assert_int_equal(run_console(fx, env, fx->addr, "-e",
                                 "kv.get('k') status() pp(_G) help()", "-e",
                                 "kv.get('secret')", NULL),
                     1);
    assert_string_equal(fake_rec(&fx->node, 0).auth, "Bearer " TOKEN);
    assert_string_equal(fake_rec(&fx->node, 1).auth, "Bearer " ADMIN_TOKEN);
    assert_contains(fx->out, "kv = {");
    assert_contains(fx->out, "status()");
    assert_string_equal(fx->err, "error: forbidden: token lacks access\n");
    assert_null(strstr(fx->out, TOKEN));
    assert_null(strstr(fx->out, ADMIN_TOKEN));
    assert_null(strstr(fx->err, TOKEN));
    assert_null(strstr(fx->err, ADMIN_TOKEN));
}

static void test_without_tokens_no_authorization_header_is_sent(void **state)
{
    struct fx *fx = *state;
    assert_int_equal(run_console(fx, NULL, fx->addr, "-e", "status()", NULL), 0);
    assert_string_equal(fake_rec(&fx->node, 0).auth, "");
}

static void test_server_error_exits_one_with_code_message_and_leader(void **state)
{
    struct fx *fx = *state;
    struct fake other;
    char addr[64];
    memset(&other, 0, sizeof other);
    fake_route(&other, (struct route){"POST", "/v1/command", 503,
                                      "{\"error\":{\"code\":\"no_leader\",\"message\":"
                                      "\"no leader is known\",\"leader\":\"2\"}}",
                                      NULL, 0, 0, "Retry-After: 1\r\n", 0});
    fake_start(&other);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", other.port);
    assert_int_equal(run_console(fx, NULL, addr, "-e", "command{op = 'x'}", "-e",
                                 "print('not reached')", NULL),
                     1);
    assert_string_equal(fx->out, "");
    assert_string_equal(fx->err, "error: no_leader: no leader is known (leader: 2)\n");

    /* pcall gets the error as a table. */
    assert_int_equal(run_console(fx, NULL, addr, "-e",
                                 "local ok, e = pcall(command, {op = 'x'})\n"
                                 "print(ok, e.code, e.status, e.leader, e.message)",
                                 NULL),
                     0);
    assert_string_equal(fx->out, "false\tno_leader\t503\t2\tno leader is known\n");

    /* A failing script stops at the failure and exits 1. */
    assert_int_equal(run_console(fx, NULL, addr,
                                 MR_SOURCE_DIR "/tests/unit/fixtures/console_failing.lua",
                                 NULL),
                     1);
    assert_null(strstr(fx->out, "not reached"));
    assert_contains(fx->err, "no_leader");
    fake_stop(&other);
}

static void test_lua_errors_exit_one(void **state)
{
    struct fx *fx = *state;
    assert_int_equal(run_console(fx, NULL, fx->addr, "-e", "x = = 1", NULL), 1);
    assert_contains(fx->err, "(command line):1:");
    assert_int_equal(fake_count(&fx->node), 0);
    assert_int_equal(run_console(fx, NULL, fx->addr, "-e", "error('boom')", NULL), 1);
    assert_contains(fx->err, "boom");
    assert_contains(fx->err, "stack traceback");
    assert_int_equal(run_console(fx, NULL, fx->addr, "/nonexistent/x.lua", NULL), 1);
    assert_contains(fx->err, "/nonexistent/x.lua");
}

static void test_usage_errors_exit_two_and_help_exits_zero(void **state)
{
    struct fx *fx = *state;
    assert_int_equal(run_console(fx, NULL, "--bogus", NULL), 2);
    assert_contains(fx->err, "unknown option --bogus");
    assert_contains(fx->err, "usage: moonraft console");
    assert_int_equal(run_console(fx, NULL, fx->addr, "-e", NULL), 2);
    assert_int_equal(run_console(fx, NULL, "--token", NULL), 2);
    assert_int_equal(run_console(fx, NULL, "nocolon:port", "-e", "print(1)", NULL), 2);
    assert_contains(fx->err, "bad address");
    assert_int_equal(run_console(fx, NULL, "--help", NULL), 0);
    assert_contains(fx->out, "usage: moonraft console");
    static const char *const env[] = {"MOONRAFT_LUA_DIR=/nonexistent", NULL};
    assert_int_equal(run_console(fx, env, fx->addr, "-e", "print(1)", NULL), 2);
    assert_contains(fx->err, "console.lua");
}

static void test_script_file_gets_arguments(void **state)
{
    struct fx *fx = *state;
    assert_int_equal(run_console(fx, NULL, fx->addr,
                                 MR_SOURCE_DIR "/tests/unit/fixtures/console_script.lua",
                                 "one", "two", NULL),
                     0);
    assert_string_equal(fx->out, "args\t2\tone,two\t2\nleader\t1\n");
    assert_int_equal(fake_count(&fx->node), 3);
    assert_string_equal(fake_rec(&fx->node, 0).path, "/v1/kv/script/one");
    assert_string_equal(fake_rec(&fx->node, 0).body, "1");
    assert_string_equal(fake_rec(&fx->node, 1).path, "/v1/kv/script/two");
    assert_string_equal(fake_rec(&fx->node, 1).body, "2");
}

static void test_stdin_runs_as_a_script_when_it_is_not_a_terminal(void **state)
{
    struct fx *fx = *state;
    static char path[160];
    FILE *f;
    snprintf(path, sizeof path, "%s/stdin.lua", fx->dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("print(kv.cas('lock', null, 'me'))\nprint(status().term)\n", f);
    fclose(f);
    fx->stdin_path = path;
    assert_int_equal(run_console(fx, NULL, fx->addr, NULL), 0);
    /* The canned /v1/command answer is {"ok": true} with no value. */
    assert_string_equal(fx->out, "true\tnil\n3\n");
    assert_string_equal(fake_rec(&fx->node, 0).path, "/v1/command");
    assert_non_null(strstr(fake_rec(&fx->node, 0).body, "\"op\":\"cas\""));
    assert_non_null(strstr(fake_rec(&fx->node, 0).body, "\"expect\":null"));
    assert_non_null(strstr(fake_rec(&fx->node, 0).body, "\"value\":\"me\""));
    /* "-" names stdin explicitly, after -e code. */
    assert_int_equal(run_console(fx, NULL, fx->addr, "-e", "print('first')", "-", NULL),
                     0);
    assert_string_equal(fx->out, "first\ntrue\tnil\n3\n");
}

static void test_address_comes_from_environment(void **state)
{
    struct fx *fx = *state;
    char var[96];
    const char *env[] = {var, NULL};
    snprintf(var, sizeof var, "MOONRAFT_ADDR=%s", fx->addr);
    assert_int_equal(run_console(fx, env, "-e", "print(status().role)", NULL), 0);
    assert_string_equal(fx->out, "leader\n");
}

static void test_keep_alive_reuses_one_connection(void **state)
{
    struct fx *fx = *state;
    assert_int_equal(
        run_console(fx, NULL, fx->addr, "-e", "for i = 1, 5 do status() end", NULL), 0);
    assert_int_equal(fake_count(&fx->node), 5);
    pthread_mutex_lock(&fx->node.mu);
    assert_int_equal(fx->node.conns, 1);
    pthread_mutex_unlock(&fx->node.mu);
}

static void test_closed_keep_alive_connection_is_reopened(void **state)
{
    struct fx *fx = *state;
    struct fake other;
    char addr[64];
    memset(&other, 0, sizeof other);
    /* The server drops the connection after each answer without saying so,
     * as an idle timeout would: the next request must reconnect. */
    fake_route(&other, (struct route){"GET", "/v1/status", 200, "{\"leader\":3}", NULL, 0,
                                      1, NULL, 0});
    fake_start(&other);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", other.port);
    assert_int_equal(
        run_console(fx, NULL, addr, "-e",
                    "for i = 1, 3 do assert(status().leader == 3) end print('ok')", NULL),
        0);
    assert_string_equal(fx->out, "ok\n");
    assert_int_equal(fake_count(&other), 3);
    pthread_mutex_lock(&other.mu);
    assert_int_equal(other.conns, 3);
    pthread_mutex_unlock(&other.mu);
    fake_stop(&other);
}

static void test_chunked_answer_and_connection_close_are_handled(void **state)
{
    struct fx *fx = *state;
    struct fake other;
    char addr[64];
    memset(&other, 0, sizeof other);
    fake_route(&other,
               (struct route){"GET", "/v1/status", 200,
                              "{\"leader\":5,\"role\":\"follower\",\"pad\":\"xxxxxxxx\"}",
                              NULL, 1, 0, NULL, 0});
    fake_route(&other, (struct route){"GET", "/v1/members", 200, "{\"members\":[7]}",
                                      NULL, 0, 1, "Connection: close\r\n", 0});
    fake_start(&other);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", other.port);
    assert_int_equal(run_console(fx, NULL, addr, "-e",
                                 "local s = status() print(s.leader, s.role, #s.pad)\n"
                                 "print(members()[1]) print(members()[1])\n"
                                 "print(status().leader)",
                                 NULL),
                     0);
    assert_string_equal(fx->out, "5\tfollower\t8\n7\n7\n5\n");
    pthread_mutex_lock(&other.mu);
    /* status+members on the first connection, then one per members() close. */
    assert_int_equal(other.conns, 3);
    pthread_mutex_unlock(&other.mu);
    fake_stop(&other);
}

static void test_unreachable_node_is_an_error(void **state)
{
    struct fx *fx = *state;
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    char addr[64];
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    /* A port that was just free: nobody listens there. */
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(sa.sin_port));
    assert_int_equal(run_console(fx, NULL, addr, "-e", "status()", NULL), 1);
    assert_contains(fx->err, "unreachable: connect ");
    assert_contains(fx->err, addr);
}

static void test_connect_switches_node(void **state)
{
    struct fx *fx = *state;
    struct fake other;
    char code[256];
    memset(&other, 0, sizeof other);
    fake_route(&other, (struct route){"GET", "/v1/status", 200, "{\"id\":2,\"leader\":1}",
                                      NULL, 0, 0, NULL, 0});
    fake_start(&other);
    snprintf(code, sizeof code,
             "print(status().id) print(connect('127.0.0.1:%d')) print(status().id)",
             other.port);
    assert_int_equal(run_console(fx, NULL, fx->addr, "-e", code, NULL), 0);
    {
        char want[128];
        snprintf(want, sizeof want, "1\n127.0.0.1:%d\n2\n", other.port);
        assert_string_equal(fx->out, want);
    }
    assert_int_equal(fake_count(&fx->node), 1);
    assert_int_equal(fake_count(&other), 1);
    assert_int_equal(run_console(fx, NULL, fx->addr, "-e", "connect('nope')", NULL), 1);
    assert_contains(fx->err, "bad address");
    fake_stop(&other);
}

static void test_watch_follows_the_index_until_fn_returns_false(void **state)
{
    struct fx *fx = *state;
    struct fake other;
    char addr[64];
    memset(&other, 0, sizeof other);
    fake_route(&other,
               (struct route){"GET", "/v1/watch", 200,
                              "{\"events\":[{\"key\":\"a/1\",\"value\":1}],\"index\":5}",
                              "{\"events\":[{\"key\":\"a/2\",\"value\":2},"
                              "{\"key\":\"a/3\",\"value\":3}],\"index\":7}",
                              0, 0, NULL, 0});
    fake_start(&other);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", other.port);
    assert_int_equal(
        run_console(fx, NULL, addr, "-e",
                    "local n = watch('a/', function(ev) print(ev.key, ev.value)"
                    " return ev.value < 2 end)\n"
                    "print('stopped at', n)",
                    NULL),
        0);
    assert_string_equal(fx->out, "a/1\t1\na/2\t2\nstopped at\t7\n");
    assert_int_equal(fake_count(&other), 2);
    assert_string_equal(fake_rec(&other, 0).path, "/v1/watch?prefix=a%2F");
    assert_string_equal(fake_rec(&other, 1).path, "/v1/watch?prefix=a%2F&index=5");
    fake_stop(&other);
}

/* ---- the HTTP client on its own -------------------------------------------------------
 */

static void test_http_address_parsing(void **state)
{
    struct mr_console_http c;
    (void)state;
    mr_console_http_init(&c);
    assert_int_equal(mr_console_http_set_addr(&c, "10.0.0.1:8001"), 0);
    assert_string_equal(c.host, "10.0.0.1");
    assert_string_equal(c.port, "8001");
    assert_int_equal(mr_console_http_set_addr(&c, "[::1]:9"), 0);
    assert_string_equal(c.host, "::1");
    assert_string_equal(c.port, "9");
    assert_int_equal(mr_console_http_set_addr(&c, "8005"), 0);
    assert_string_equal(c.host, "127.0.0.1");
    assert_string_equal(c.port, "8005");
    assert_int_equal(mr_console_http_set_addr(&c, "node-1.example:80"), 0);
    assert_string_equal(c.host, "node-1.example");
    assert_int_equal(mr_console_http_set_addr(&c, "host:"), MR_EINVAL);
    assert_int_equal(mr_console_http_set_addr(&c, "host:8x"), MR_EINVAL);
    assert_int_equal(mr_console_http_set_addr(&c, "a:b:1"), MR_EINVAL);
    assert_int_equal(mr_console_http_set_addr(&c, "[::1]9"), MR_EINVAL);
    /* A rejected address keeps the previous one. */
    assert_string_equal(c.host, "node-1.example");
    mr_console_http_close(&c);
}

static void test_http_request_rejects_header_injection(void **state)
{
    struct fx *fx = *state;
    struct mr_console_http c;
    struct mr_console_http_resp resp;
    const char *bad[] = {"X-A: 1\r\nX-B: 2", NULL};
    const char *good[] = {"X-A: 1", NULL};
    long live = mr_alloc_live();
    mr_console_http_init(&c);
    assert_int_equal(mr_console_http_set_addr(&c, fx->addr), 0);
    assert_int_equal(
        mr_console_http_request(&c, "GET", "/v1/status", bad, NULL, 0, 1000, &resp),
        MR_EINVAL);
    assert_int_equal(
        mr_console_http_request(&c, "GET", "/v1/st atus", NULL, NULL, 0, 1000, &resp),
        MR_EINVAL);
    assert_int_equal(fake_count(&fx->node), 0);
    assert_int_equal(
        mr_console_http_request(&c, "GET", "/v1/status", good, NULL, 0, 5000, &resp), 0);
    assert_int_equal(resp.status, 200);
    assert_string_equal(resp.body, STATUS_JSON);
    assert_int_equal(resp.body_len, strlen(STATUS_JSON));
    assert_true(resp.n_hdrs >= 2);
    assert_string_equal(resp.hdrs[0], "content-type");
    assert_string_equal(resp.hdrs[1], "application/json");
    mr_console_http_resp_free(&resp);
    mr_console_http_close(&c);
    assert_int_equal(mr_alloc_live(), live);
}

static void test_http_request_times_out_on_a_silent_server(void **state)
{
    struct mr_console_http c;
    struct mr_console_http_resp resp;
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    char addr[64];
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    (void)state;
    /* Listening but never answering: the kernel completes the handshake. */
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(lfd, 4), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &len), 0);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(sa.sin_port));
    mr_console_http_init(&c);
    assert_int_equal(mr_console_http_set_addr(&c, addr), 0);
    assert_int_equal(mr_console_http_request(&c, "GET", "/v1/status", NULL, NULL, 0,
                                             200 /* ms */, &resp),
                     MR_ETIMEOUT);
    assert_non_null(strstr(c.errmsg, "within 200 ms"));
    assert_int_equal(c.fd, -1);
    close(lfd);
}

struct collected {
    char data[256];
    size_t len;
    unsigned calls;
    int fail; /* return this from the sink */
};

static int collect(void *arg, const char *chunk, size_t len)
{
    struct collected *k = arg;
    k->calls++;
    if (k->fail != 0) return k->fail;
    assert_true(k->len + len < sizeof k->data);
    memcpy(k->data + k->len, chunk, len);
    k->len += len;
    return 0;
}

static void test_download_streams_a_2xx_body_to_the_sink_and_keeps_other_bodies(
    void **state)
{
    struct fake srv;
    struct collected k;
    const char *hdrs[] = {"Authorization: Bearer adm", NULL};
    char addr[64], errbody[64], errmsg[MR_ERRMSG_SIZE] = "";
    int status;
    (void)state;
    memset(&srv, 0, sizeof srv);
    fake_route(&srv, (struct route){"GET", "/v1/backup", 200, "MRBACKUP-bytes-of-the-body",
                                    NULL, 1, 0, NULL, 0});
    fake_route(&srv, (struct route){"GET", "/v1/nope", 404,
                                    "{\"error\":{\"code\":\"not_found\"}}", NULL, 0, 0,
                                    NULL, 0});
    fake_start(&srv);
    snprintf(addr, sizeof addr, "http://127.0.0.1:%d", srv.port);

    /* 200 (chunked here): every byte to the sink, in order, nothing kept. */
    memset(&k, 0, sizeof k);
    assert_int_equal(mr_console_download(addr, NULL, "/v1/backup", hdrs, 2000, collect, &k,
                                         &status, errbody, sizeof errbody, errmsg),
                     0);
    assert_int_equal(status, 200);
    assert_int_equal(k.len, strlen("MRBACKUP-bytes-of-the-body"));
    assert_memory_equal(k.data, "MRBACKUP-bytes-of-the-body", k.len);
    assert_string_equal(errbody, "");
    assert_string_equal(fake_rec(&srv, 0).auth, "Bearer adm");

    /* Another status: the body is the error text, the sink sees nothing. */
    memset(&k, 0, sizeof k);
    assert_int_equal(mr_console_download(addr, NULL, "/v1/nope", NULL, 2000, collect, &k,
                                         &status, errbody, sizeof errbody, errmsg),
                     0);
    assert_int_equal(status, 404);
    assert_int_equal(k.calls, 0);
    assert_non_null(strstr(errbody, "not_found"));

    /* A sink error stops the transfer with its code. */
    memset(&k, 0, sizeof k);
    k.fail = -ENOSPC;
    assert_int_equal(mr_console_download(addr, NULL, "/v1/backup", NULL, 2000, collect, &k,
                                         &status, errbody, sizeof errbody, errmsg),
                     -ENOSPC);
    assert_non_null(strstr(errmsg, "/v1/backup"));

    /* A bad address is refused before connecting. */
    assert_int_equal(mr_console_download("https://[::1", NULL, "/v1/backup", NULL, 2000,
                                         collect, &k, &status, errbody, sizeof errbody,
                                         errmsg),
                     MR_EINVAL);
    assert_non_null(strstr(errmsg, "bad address"));
    fake_stop(&srv);
}

/* ---- interactive, through a pseudo-terminal
 * ---------------------------------------------- */

struct pty {
    pid_t pid;
    int master;
    char out[65536];
    size_t len;
    size_t mark; /* expect() searches from here */
    struct fx *fx;
};

/* After a failed test: stop the child and release the terminal. */
static void pty_kill(struct pty *p)
{
    int st;
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, &st, 0);
    }
    close(p->master);
    p->fx->pty = NULL;
}

static struct pty *pty_start(struct fx *fx, const char *addr)
{
    char name[128];
    struct pty *p;
    int slave;
    if (fx->pty_mem == NULL) fx->pty_mem = malloc(sizeof *fx->pty_mem);
    assert_non_null(fx->pty_mem);
    p = fx->pty_mem;
    struct winsize ws = {.ws_row = 24, .ws_col = 120, .ws_xpixel = 0, .ws_ypixel = 0};
    memset(p, 0, sizeof *p);
    fx->pty = p;
    p->fx = fx;
    p->master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    assert_true(p->master >= 0);
    assert_int_equal(grantpt(p->master), 0);
    assert_int_equal(unlockpt(p->master), 0);
    assert_int_equal(ptsname_r(p->master, name, sizeof name), 0);
    assert_int_equal(ioctl(p->master, TIOCSWINSZ, &ws), 0);
    /* Open the slave here, as openpty() does, so the terminal has both ends
     * from the start; the child makes it its controlling terminal. */
    slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    assert_true(slave >= 0);
    fflush(NULL);
    p->pid = fork();
    assert_true(p->pid >= 0);
    if (p->pid == 0) {
        char *argv[] = {(char *)"console", (char *)addr, NULL};
        if (setsid() < 0 || ioctl(slave, TIOCSCTTY, 0) != 0) _exit(98);
        dup2(slave, 0);
        dup2(slave, 1);
        dup2(slave, 2);
        setenv("TERM", "dumb", 1);
        setenv("MOONRAFT_HISTORY", fx->hist_path, 1);
        setenv("MOONRAFT_LUA_DIR", MR_SOURCE_DIR "/lua", 1);
        unsetenv("MOONRAFT_TOKEN");
        unsetenv("MOONRAFT_ADMIN_TOKEN");
        exec_console(argv);
    }
    close(slave);
    return p;
}

/* Reads from the terminal until `needle` shows up after the mark, then moves
 * the mark past it. Fails the test after 5 s. */
static void pty_expect(struct pty *p, const char *needle)
{
    int waited = 0;
    for (;;) {
        struct pollfd pf = {p->master, POLLIN, 0};
        char *hit;
        ssize_t n;
        p->out[p->len] = '\0';
        hit = strstr(p->out + p->mark, needle);
        if (hit != NULL) {
            p->mark = (size_t)(hit - p->out) + strlen(needle);
            return;
        }
        if (waited >= 5000 || p->len + 1 >= sizeof p->out) break;
        if (poll(&pf, 1, 50) <= 0) {
            waited += 50;
            continue;
        }
        n = read(p->master, p->out + p->len, sizeof p->out - 1 - p->len);
        if (n <= 0) {
            waited += 50;
            usleep(50000);
            continue;
        }
        p->len += (size_t)n;
    }
    p->out[p->len] = '\0';
    {
        int st = 0;
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid) p->pid = -1; /* already reaped: nothing to kill */
        fail_msg(
            "terminal never showed [%s] (child %s, status 0x%x); after the last match it "
            "showed:\n%s\nbefore:\n%.*s",
            needle, r == 0 ? "running" : "exited", st, p->out + p->mark, (int)p->mark,
            p->out);
    }
}

static void pty_send(struct pty *p, const char *keys)
{
    assert_int_equal(write(p->master, keys, strlen(keys)), (ssize_t)strlen(keys));
}

/* Types keys at the prompt. libedit prints the prompt a moment before it
 * switches the terminal to raw mode; a key typed in that window goes
 * through the cooked line discipline (a Ctrl-D there is lost), so wait until
 * the terminal is raw (the master reports the slave's modes). */
static void pty_wait_mode(struct pty *p, int raw)
{
    int i;
    for (i = 0; i < 1000; i++) {
        struct termios t;
        assert_int_equal(tcgetattr(p->master, &t), 0);
        if ((!(t.c_lflag & ICANON)) == raw) return;
        usleep(5000);
    }
    fail_msg("the terminal never became %s", raw ? "raw" : "cooked");
}

static void pty_type(struct pty *p, const char *keys)
{
    pty_wait_mode(p, 1);
    pty_send(p, keys);
}

/* Ctrl-D, then the exit status. */
static int pty_finish(struct pty *p)
{
    int st;
    pty_type(p, "\004");
    st = wait_child(p->pid, 10000, 0);
    close(p->master);
    p->fx->pty = NULL;
    assert_true(st != -1);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void test_repl_prints_expressions_and_nested_tables(void **state)
{
    struct fx *fx = *state;
    struct pty *p;
    char prompt[80];
    snprintf(prompt, sizeof prompt, "%s> ", fx->addr);
    p = pty_start(fx, fx->addr);
    pty_expect(p, prompt);
    pty_type(p, "6*7\r");
    pty_expect(p, "\n42\r\n");
    pty_expect(p, prompt);
    pty_type(p, "{b = {c = {1, 2}, d = 'x'}, a = 1}\r");
    pty_expect(p, "{\r\n  a = 1,\r\n  b = {\r\n    c = { 1, 2 },\r\n    d = \"x\",\r\n  "
                  "},\r\n}\r\n");
    pty_expect(p, prompt);
    /* A statement over two lines, then its value. */
    pty_type(p, "t = {\r");
    pty_expect(p, ">> ");
    pty_type(p, "n = 5 }\r");
    pty_expect(p, prompt);
    pty_type(p, "=t.n + 1\r");
    pty_expect(p, "\n6\r\n");
    pty_expect(p, prompt);
    /* A server error prints and the loop goes on. */
    pty_type(p, "kv.get('secret')\r");
    pty_expect(p, "error: forbidden: token lacks access");
    pty_expect(p, prompt);
    pty_type(p, "status().role\r");
    pty_expect(p, "\"leader\"");
    pty_expect(p, prompt);
    assert_int_equal(pty_finish(p), 0);
}

static void test_repl_ctrl_c_cancels_the_line(void **state)
{
    struct fx *fx = *state;
    struct pty *p;
    char prompt[80];
    snprintf(prompt, sizeof prompt, "%s> ", fx->addr);
    p = pty_start(fx, fx->addr);
    pty_expect(p, prompt);
    pty_type(p, "kv.put('x', 1)");
    pty_expect(p, "1)");
    pty_type(p, "\003");
    pty_expect(p, prompt);
    pty_type(p, "print('after')\r");
    pty_expect(p, "\nafter\r\n");
    pty_expect(p, prompt);
    /* Ctrl-C also stops running Lua code. */
    pty_type(p, "print('spinning') while true do end\r");
    pty_expect(p, "\nspinning\r\n"); /* the loop runs now */
    pty_send(p, "\003");
    pty_expect(p, "interrupted!");
    pty_expect(p, prompt);
    /* Ctrl-C ends a watch that waits on a long poll; watch returns. */
    pty_type(p, "watch('w/')\r");
    {
        int i;
        for (i = 0; i < 500 && fake_count(&fx->node) == 0; i++) usleep(10000);
    }
    assert_int_equal(fake_count(&fx->node), 1);
    assert_string_equal(fake_rec(&fx->node, 0).path, "/v1/watch?prefix=w%2F");
    pty_send(p, "\003");
    pty_expect(p, "^Cnil\r\n"); /* the terminal echoes ^C, then watch's result */
    pty_expect(p, prompt);
    pty_type(p, "print('still here')\r");
    pty_expect(p, "\nstill here\r\n");
    pty_expect(p, prompt);
    assert_int_equal(pty_finish(p), 0);
    /* The cancelled kv.put never reached the node; only the watch did. */
    assert_int_equal(fake_count(&fx->node), 1);
}

static void test_repl_history_survives_a_restart(void **state)
{
    struct fx *fx = *state;
    struct pty *p;
    char prompt[80], *hist;
    snprintf(prompt, sizeof prompt, "%s> ", fx->addr);
    p = pty_start(fx, fx->addr);
    pty_expect(p, prompt);
    pty_type(p, "1000+337\r");
    pty_expect(p, "1337");
    pty_expect(p, prompt);
    assert_int_equal(pty_finish(p), 0);
    hist = slurp(fx->hist_path);
    assert_contains(hist, "1000+337");
    free(hist);

    /* Second run: Ctrl-P recalls the first run's line. */
    p = pty_start(fx, fx->addr);
    pty_expect(p, prompt);
    pty_type(p, "\020");
    pty_expect(p, "1000+337");
    pty_type(p, "\r");
    pty_expect(p, "\n1337\r\n");
    pty_expect(p, prompt);
    assert_int_equal(pty_finish(p), 0);
}

static void test_repl_tab_completes_table_fields(void **state)
{
    struct fx *fx = *state;
    struct pty *p;
    char prompt[80];
    struct record r;
    snprintf(prompt, sizeof prompt, "%s> ", fx->addr);
    p = pty_start(fx, fx->addr);
    pty_expect(p, prompt);
    pty_type(p, "kv.p\t");
    pty_expect(p, "kv.put(");
    pty_type(p, "'done', 7)\r");
    pty_expect(p, "\n42\r\n");
    pty_expect(p, prompt);
    pty_type(p, "snaps\t");
    pty_expect(p, "snapshot(");
    pty_type(p, "\003");
    pty_expect(p, prompt);
    assert_int_equal(pty_finish(p), 0);
    assert_int_equal(fake_count(&fx->node), 1);
    r = fake_rec(&fx->node, 0);
    assert_string_equal(r.method, "PUT");
    assert_string_equal(r.path, "/v1/kv/done");
    assert_string_equal(r.body, "7");
}

int main(int argc, char **argv)
{
    /* Child mode: `unit_test_console --console-child console ARGS...`. */
    if (argc >= 3 && strcmp(argv[1], "--console-child") == 0) {
        if (argc >= 4 && strcmp(argv[3], "deploy") == 0)
            return mr_console_deploy_main(argc - 3, argv + 3);
        return mr_console_main(argc - 2, argv + 2);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_e_prints_status_leader_and_exits_zero, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pretty_printer_indents_and_sorts_keys, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_deploy_posts_the_source_and_waits_for_its_hash,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_pretty_printer_marks_cycles_and_quotes_odd_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_requests_carry_paths_bodies_and_tokens,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_tokens_come_from_the_environment_and_are_never_printed, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_without_tokens_no_authorization_header_is_sent, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_server_error_exits_one_with_code_message_and_leader, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lua_errors_exit_one, setup, teardown),
        cmocka_unit_test_setup_teardown(test_usage_errors_exit_two_and_help_exits_zero,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_script_file_gets_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_stdin_runs_as_a_script_when_it_is_not_a_terminal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_address_comes_from_environment, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_keep_alive_reuses_one_connection, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_closed_keep_alive_connection_is_reopened,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_chunked_answer_and_connection_close_are_handled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreachable_node_is_an_error, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_connect_switches_node, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_watch_follows_the_index_until_fn_returns_false, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_address_parsing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_request_rejects_header_injection, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_http_request_times_out_on_a_silent_server,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_download_streams_a_2xx_body_to_the_sink_and_keeps_other_bodies, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_repl_prints_expressions_and_nested_tables,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_repl_ctrl_c_cancels_the_line, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_repl_history_survives_a_restart, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_repl_tab_completes_table_fields, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
