/* Chaos runner: see chaos.h. Reuses the integration harness for processes
 * and HTTP (compiled in here since helpers are per test folder). */
#include "../integration/harness.c"

#include "chaos.h"
#include "lincheck.h"
#include "proxy.h"

#include <pthread.h>
#include <stdarg.h>

#include "util/util.h"

#define NKEYS 3
#define CLIENT_TIMEOUT_MS 2000
#define ELECTION_TIMEOUT_MAX_MS 600 /* the nodes' default election_timeout_ms max */

static const char *fault_names[MR_CF__N] = {"kill9-restart",
                                            "kill9-restart-leader",
                                            "pause",
                                            "pause-leader",
                                            "crash-all",
                                            "partition-halves",
                                            "partition-leader",
                                            "partition-bridge",
                                            "partition-flap",
                                            "partition-oneway",
                                            "leader-transfer",
                                            "member-remove-rejoin",
                                            "powercut",
                                            "powercut-all",
                                            "script-deploy"};

const char *mr_chaos_fault_name(int kind)
{
    return fault_names[kind];
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct shared {
    struct mr_it_cluster *c;
    pthread_mutex_t mu;
    struct mr_lc_history h;
    volatile int stop;
    volatile int read_target; /* -1 or node index clients read from */
    int ports[MR_IT_MAX_NODES];
};

struct client {
    struct shared *sh;
    int id;
    uint64_t rng;
};

/* Extract the JSON value following `"field":` as a token (number or null). */
/* Integrity checks run during the round (every this many entries) and once
 * more after healing: no check may ever find a member that differs. */
#define CHAOS_CHECK_ENTRIES 300

static int json_tok(const char *body, const char *field, char *out, size_t n)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", field);
    const char *p = body ? strstr(body, pat) : NULL;
    if (!p) return -1;
    p += strlen(pat);
    size_t k = 0;
    while (*p && *p != ',' && *p != '}' && k + 1 < n) out[k++] = *p++;
    out[k] = '\0';
    return 0;
}

static void record(struct shared *sh, struct mr_lc_op *op)
{
    pthread_mutex_lock(&sh->mu);
    MR_ASSERT(mr_lc_history_add(&sh->h, op) == 0);
    pthread_mutex_unlock(&sh->mu);
}

static enum mr_lc_outcome classify(int status)
{
    if (status == 200) return MR_LC_OK;
    if (status == 503 || (status >= 400 && status < 500)) return MR_LC_FAIL;
    return MR_LC_INFO; /* 0 (transport), 504, other 5xx */
}

static void *client_main(void *arg)
{
    struct client *cl = arg;
    struct shared *sh = cl->sh;
    int seq = 0;
    while (!sh->stop) {
        char key[8], path[64], body[256], v[32], e[32], tmp[64];
        int k = (int)(splitmix(&cl->rng) % NKEYS);
        int node = (int)(splitmix(&cl->rng) % (uint64_t)sh->c->n);
        int what = (int)(splitmix(&cl->rng) % 10);
        snprintf(key, sizeof key, "k%d", k);
        struct mr_lc_op op = {.proc = cl->id, .key = key};
        struct mr_it_resp r;
        if (what < 4) {
            int rt = sh->read_target;
            if (rt >= 0) node = rt;
            op.type = MR_LC_READ;
            snprintf(path, sizeof path, "/v1/kv/%s", key);
            op.invoke = now_ns();
            r = mr_it_http_port(sh->ports[node], "GET", path, NULL, NULL,
                                CLIENT_TIMEOUT_MS);
            op.complete = now_ns();
            op.outcome = r.status == 404 ? MR_LC_OK : classify(r.status);
            if (r.status == 200) {
                if (json_tok(r.body, "value", tmp, sizeof tmp) == 0 &&
                    strcmp(tmp, "null") != 0)
                    op.value = tmp;
                else
                    op.outcome = MR_LC_INFO;
            }
        } else if (what < 8) {
            op.type = MR_LC_WRITE;
            snprintf(v, sizeof v, "%d", cl->id * 1000000 + ++seq);
            op.arg = v;
            snprintf(path, sizeof path, "/v1/kv/%s", key);
            op.invoke = now_ns();
            r = mr_it_http_port(sh->ports[node], "PUT", path, v, NULL, CLIENT_TIMEOUT_MS);
            op.complete = now_ns();
            op.outcome = classify(r.status);
        } else {
            op.type = MR_LC_CAS;
            int last = seq > 0 ? cl->id * 1000000 + seq : 0;
            /* expect: a value this or another client probably wrote recently */
            int other = (int)(splitmix(&cl->rng) % 8);
            if (splitmix(&cl->rng) % 4 == 0 || last == 0) {
                op.expect = NULL;
            } else {
                snprintf(e, sizeof e, "%d",
                         other * 1000000 +
                             (int)(splitmix(&cl->rng) % (uint64_t)(seq + 1)));
                op.expect = e;
                if (splitmix(&cl->rng) % 2) snprintf(e, sizeof e, "%d", last);
            }
            snprintf(v, sizeof v, "%d", cl->id * 1000000 + ++seq);
            op.arg = v;
            snprintf(body, sizeof body,
                     "{\"op\":\"cas\",\"key\":\"%s\",\"expect\":%s,\"value\":%s}", key,
                     op.expect ? op.expect : "null", v);
            op.invoke = now_ns();
            r = mr_it_http_port(sh->ports[node], "POST", "/v1/command", body, NULL,
                                CLIENT_TIMEOUT_MS);
            op.complete = now_ns();
            op.outcome = classify(r.status);
            if (r.status == 200) {
                op.cas_ok = r.body && strstr(r.body, "\"ok\":true") != NULL;
                if (!op.cas_ok && json_tok(r.body, "value", tmp, sizeof tmp) == 0) {
                    op.has_value = true;
                    op.value = strcmp(tmp, "null") == 0 ? NULL : tmp;
                }
            }
        }
        /* Only a request that never left (the connection was refused)
         * definitely did not apply. A connection reset after sending - say
         * the node was killed right after it proposed or forwarded the
         * command - may have applied, however fast it failed: counting such
         * ops as failed made the checker report false violations. */
        if (r.status == 0 && r.not_sent) op.outcome = MR_LC_FAIL;
        if (op.outcome == MR_LC_INFO) op.complete = MR_LC_INF;
        record(sh, &op);
        mr_it_resp_free(&r);
        mr_it_sleep_ms(10 +
                       (int)(splitmix(&cl->rng) % 40)); /* keep histories checkable */
    }
    return NULL;
}

/* ---- cluster behind the proxy --------------------------------------------- */

/* One round's cluster: node i advertises the harness's raft_port (where the
 * proxy listens) and binds listen_port[i] (--raft-listen). */
struct run {
    const struct mr_chaos_opts *o;
    struct mr_chaos_result *res;
    struct mr_it_cluster *c;
    struct mr_chaos_proxy *px;
    int listen_port[MR_IT_MAX_NODES];
    int join_port[MR_IT_MAX_NODES]; /* 0: static peers; else HTTP port to --join through
                                     */
    FILE *out;
    FILE *sched; /* copy of the fault schedule (open_memstream) */
    char *sched_buf;
    size_t sched_len;
    long long start;
    long long last_heal; /* when the last fault was healed, ms */
    uint64_t rng;
};

static void note(struct run *rn, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void note(struct run *rn, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(rn->out, "  t=%lldms %s\n", mr_it_now_ms() - rn->start, line);
    if (rn->sched)
        fprintf(rn->sched, "  t=%lldms %s\n", mr_it_now_ms() - rn->start, line);
}

static int port_in_use(struct mr_it_cluster *c, int port, const int *extra, int n_extra)
{
    for (int j = 0; j < c->n; j++)
        if (c->nodes[j].raft_port == port || c->nodes[j].http_port == port) return 1;
    for (int j = 0; j < n_extra; j++)
        if (extra[j] == port) return 1;
    return 0;
}

static pid_t start_node(struct run *rn, int i)
{
    char args[256];
    const char *cache = rn->o != NULL && rn->o->log_cache_none ? " --log-cache-mb 0" : "";
    if (rn->join_port[i]) {
        snprintf(args, sizeof args,
                 "--raft-listen 127.0.0.1:%d --join 127.0.0.1:%d --integrity-check-entries %d%s",
                 rn->listen_port[i], rn->join_port[i], CHAOS_CHECK_ENTRIES, cache);
        return mr_it_start_args(rn->c, i, args);
    }
    snprintf(args, sizeof args, "--raft-listen 127.0.0.1:%d --integrity-check-entries %d%s",
             rn->listen_port[i], CHAOS_CHECK_ENTRIES, cache);
    return mr_it_start_static(rn->c, i, args);
}

/* Allocates the real listen ports and starts the proxy; nothing started on
 * failure. */
static int run_setup(struct run *rn, struct mr_it_cluster *c, int n)
{
    const char *names[MR_IT_MAX_NODES];
    int ports[MR_IT_MAX_NODES];
    mr_it_cluster_init(c, n);
    rn->c = c;
    for (int i = 0; i < n; i++) {
        int p;
        do {
            p = free_port();
        } while (port_in_use(c, p, rn->listen_port, i));
        rn->listen_port[i] = p;
        rn->join_port[i] = 0;
        mr_it_powerloss_enable(c, i); /* power cuts need each node's durable image */
        /* disks of different speeds (0, 15, 30 ms a sync): a leader's entry may
         * be on its own disk long before a follower's, which is the window in
         * which an acknowledgement sent before the follower's sync would lie */
        c->nodes[i].slow_sync_ms = 15 * (i % 3);
        names[i] = c->nodes[i].name;
        ports[i] = c->nodes[i].raft_port;
    }
    int rv = mr_chaos_proxy_start(&rn->px, n, names, ports, rn->listen_port);
    if (rv != 0) {
        fprintf(rn->out, "chaos: proxy: %s\n", mr_strerror(rv));
        mr_it_cluster_destroy(c);
        return -1;
    }
    return 0;
}

/* JSON "role" of node i, "" if down. Runner thread only (mr_it_jq). */
static int status_of(struct mr_it_cluster *c, int i, char *role, size_t rn,
                     unsigned long long *term)
{
    struct mr_it_resp r;
    role[0] = '\0';
    if (c->nodes[i].pid == 0 || c->nodes[i].paused) return -1;
    r = mr_it_http_port(c->nodes[i].http_port, "GET", "/v1/status", NULL, NULL, 500);
    int ok = r.status == 200;
    if (ok) {
        char t[64] = "0";
        json_tok(r.body, "term", t, sizeof t);
        if (term) *term = strtoull(t, NULL, 10);
        snprintf(role, rn, "%s", mr_it_jq(r.body, "j.role"));
    }
    mr_it_resp_free(&r);
    return ok ? 0 : -1;
}

static int find_leader(struct mr_it_cluster *c)
{
    for (int i = 0; i < c->n; i++) {
        if (c->nodes[i].pid == 0 || c->nodes[i].paused) continue;
        struct mr_it_resp r =
            mr_it_http_port(c->nodes[i].http_port, "GET", "/v1/status", NULL, NULL, 500);
        int lead = r.status == 200 && r.body && strstr(r.body, "\"role\":\"leader\"");
        mr_it_resp_free(&r);
        if (lead) return i;
    }
    return -1;
}

static void sleep_ms_until(int ms, long long deadline)
{
    long long end = mr_it_now_ms() + ms;
    if (end > deadline) end = deadline;
    while (mr_it_now_ms() < end) mr_it_sleep_ms(20);
}

/* Heal: lift every cut, resume paused nodes, restart dead ones. Returns 1 if
 * anything had to be healed. */
static int heal(struct run *rn)
{
    struct mr_it_cluster *c = rn->c;
    int did = 0;
    if (rn->px && mr_chaos_proxy_n_cuts(rn->px) > 0) {
        mr_chaos_proxy_heal(rn->px);
        did = 1;
    }
    for (int i = 0; i < c->n; i++) {
        if (c->nodes[i].pid && c->nodes[i].paused) {
            mr_it_resume(c, i);
            did = 1;
        }
        if (c->nodes[i].pid == 0) {
            start_node(rn, i);
            did = 1;
        }
    }
    return did;
}

static void run_teardown(struct run *rn)
{
    if (rn->px) mr_chaos_proxy_heal(rn->px);
    for (int i = 0; i < rn->c->n; i++)
        if (rn->c->nodes[i].pid && rn->c->nodes[i].paused) mr_it_resume(rn->c, i);
    int bad = mr_it_cluster_destroy(rn->c);
    if (bad != 0) {
        fprintf(rn->out,
                "chaos: teardown reported %d problem(s) (exit status on SIGTERM / "
                "sanitizer)\n",
                bad);
        if (rn->res) rn->res->teardown_problems = bad;
    }
    mr_chaos_proxy_stop(rn->px);
    rn->px = NULL;
}

/* ---- faults ----------------------------------------------------------------- */

static int rnd(struct run *rn, int n)
{
    return (int)(splitmix(&rn->rng) % (uint64_t)n);
}

static void group_str(struct mr_it_cluster *c, unsigned m, char *buf, size_t n)
{
    size_t off = 0;
    buf[0] = '\0';
    off += (size_t)snprintf(buf + off, n - off, "{");
    for (int i = 0; i < c->n && off < n; i++)
        if ((m >> i) & 1)
            off += (size_t)snprintf(buf + off, n - off, "%s%s", off > 1 ? "," : "",
                                    c->nodes[i].name);
    if (off < n) snprintf(buf + off, n - off, "}");
}

/* A random minority (1 .. (n-1)/2 nodes). */
static unsigned random_minority(struct run *rn)
{
    int n = rn->c->n, size = 1 + rnd(rn, (n - 1) / 2);
    unsigned m = 0;
    while (__builtin_popcount(m) < size) m |= 1u << rnd(rn, n);
    return m;
}

static void split(struct run *rn, const char *what, unsigned a, unsigned b)
{
    char ga[64], gb[64];
    group_str(rn->c, a, ga, sizeof ga);
    group_str(rn->c, b, gb, sizeof gb);
    mr_chaos_proxy_split(rn->px, a, b);
    note(rn, "%s %s | %s", what, ga, gb);
}

static int canary_seq;

/* An acknowledged write kept aside: it must still be there at the end. */
static void write_canary(struct run *rn, struct shared *sh)
{
    (void)sh;
    for (int attempt = 0; attempt < 20; attempt++) {
        int l = find_leader(rn->c);
        if (l >= 0) {
            char path[64], val[32];
            snprintf(path, sizeof path, "/v1/kv/canary%d", canary_seq);
            snprintf(val, sizeof val, "%d", 1000 + canary_seq);
            struct mr_it_resp r =
                mr_it_http_port(rn->c->nodes[l].http_port, "PUT", path, val, NULL, 2000);
            int ok = r.status == 200;
            mr_it_resp_free(&r);
            if (ok) {
                canary_seq++;
                rn->res->canaries++;
                return;
            }
        }
        mr_it_sleep_ms(100);
    }
}

/* JSON member list of node i, evaluated with expr over j; "" if down. */
static const char *members_eval(struct mr_it_cluster *c, int i, const char *expr)
{
    static char outb[256];
    struct mr_it_resp r =
        mr_it_http_port(c->nodes[i].http_port, "GET", "/v1/members", NULL, NULL, 1000);
    snprintf(outb, sizeof outb, "%s", r.status == 200 ? mr_it_jq(r.body, expr) : "");
    mr_it_resp_free(&r);
    return outb;
}

/* "true" when node `name` is a voter in j.members, "false" if a learner,
 * "nil" if absent. */
static void member_expr(char *buf, size_t n, const char *name)
{
    snprintf(buf, n,
             "(function() for _, m in ipairs(j.members) do if m.id == '%s' then return "
             "m.voter end end "
             "return nil end)()",
             name);
}

/* The last `lines` lines of node i's log, to rn->out. */
static void log_tail(struct run *rn, int i, int lines)
{
    FILE *f = fopen(rn->c->nodes[i].log_path, "r");
    char buf[64][400];
    int k = 0;
    if (!f) return;
    if (lines > 64) lines = 64;
    while (fgets(buf[k % lines], sizeof buf[0], f)) k++;
    fclose(f);
    fprintf(rn->out, "---- %s log (last %d lines) ----\n", rn->c->nodes[i].name, lines);
    for (int j = k > lines ? k - lines : 0; j < k; j++) fputs(buf[j % lines], rn->out);
}

/* DELETE the victim, let it run removed for a moment, stop it, wipe its data
 * dir, start it with --join through a member, wait until it is a voter. */
static void fault_member(struct run *rn, int victim, long long deadline)
{
    struct mr_it_cluster *c = rn->c;
    char path[64], expr[256];
    int removed = 0, status = 0;
    snprintf(path, sizeof path, "/v1/members/%s", c->nodes[victim].name);
    member_expr(expr, sizeof expr, c->nodes[victim].name);
    for (long long end = mr_it_now_ms() + 5000; mr_it_now_ms() < end && !removed;) {
        int l = find_leader(c);
        int via = l >= 0 ? l : rnd(rn, c->n);
        struct mr_it_resp r =
            mr_it_http_port(c->nodes[via].http_port, "DELETE", path, NULL, NULL, 3000);
        status = r.status;
        mr_it_resp_free(&r);
        if (status == 200 || status == 404) {
            removed = 1;
            break;
        }
        mr_it_sleep_ms(100);
    }
    if (!removed) {
        note(rn, "member-remove %s: DELETE failed (status %d); left as is",
             c->nodes[victim].name, status);
        return;
    }
    /* Removed when a node other than the victim no longer lists it. */
    int other = (victim + 1) % c->n;
    for (long long end = mr_it_now_ms() + 5000; mr_it_now_ms() < end;) {
        if (strcmp(members_eval(c, other, expr), "nil") == 0) break;
        mr_it_sleep_ms(50);
    }
    note(rn, "member-remove %s (status %d)", c->nodes[victim].name, status);
    sleep_ms_until(200 + rnd(rn, 600),
                   deadline); /* a removed node still running must not disrupt */
    mr_it_kill9(c, victim);
    rm_rf(c->nodes[victim].data_dir);
    if (c->nodes[victim].powerloss_dir[0]) rm_rf(c->nodes[victim].powerloss_dir); /* new disk */
    int via = find_leader(c);
    if (via < 0 || via == victim) via = other;
    rn->join_port[victim] = c->nodes[via].http_port;
    start_node(rn, victim);
    long long t0 = mr_it_now_ms();
    note(rn, "member-rejoin %s --join %s (wiped data dir)", c->nodes[victim].name,
         c->nodes[via].name);
    for (long long end = t0 + 20000; mr_it_now_ms() < end;) {
        if (strcmp(members_eval(c, other, expr), "true") == 0) {
            long long took = mr_it_now_ms() - t0;
            rn->res->member_changes++;
            note(rn, "member-rejoin %s: voter again after %lld ms", c->nodes[victim].name,
                 took);
            if (took >
                3000) { /* slow: show why (the joiner's and the join target's logs) */
                log_tail(rn, victim, 25);
                log_tail(rn, via, 25);
            }
            return;
        }
        mr_it_sleep_ms(50);
    }
    note(rn, "member-rejoin %s: NOT a voter after 20 s", c->nodes[victim].name);
}

static void fault_transfer(struct run *rn)
{
    struct mr_it_cluster *c = rn->c;
    int l = find_leader(c);
    if (l < 0) {
        note(rn, "leader-transfer skipped: no leader");
        return;
    }
    int to = (l + 1 + rnd(rn, c->n - 1)) % c->n;
    char body[64];
    snprintf(body, sizeof body, "{\"id\":\"%s\"}", c->nodes[to].name);
    struct mr_it_resp r = mr_it_http_port(c->nodes[l].http_port, "POST",
                                          "/v1/leader/transfer", body, NULL, 7000);
    if (r.status == 200) rn->res->transfers_ok++;
    note(rn, "leader-transfer %s -> %s: status %d", c->nodes[l].name, c->nodes[to].name,
         r.status);
    mr_it_resp_free(&r);
}

/* Deploys a new version of the clients' state machine through the log,
 * through a random node (a follower forwards it): kv.lua with a comment
 * added, so the hash changes and the behaviour does not. Linearizability
 * must hold across the switch, and every node must end up on one script. */
static void fault_deploy(struct run *rn)
{
    struct mr_it_cluster *c = rn->c;
    static int serial;
    char path[600], label[64], qpath[128];
    snprintf(path, sizeof path, "%s/lua/kv.lua", MR_SOURCE_DIR);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        note(rn, "script-deploy: cannot read %s", path);
        return;
    }
    size_t cap = 1 << 20;
    char *src = malloc(cap);
    if (src == NULL) {
        fclose(f);
        return;
    }
    size_t len = fread(src, 1, cap - 128, f);
    fclose(f);
    snprintf(label, sizeof label, "chaos-%d", ++serial);
    len += (size_t)snprintf(src + len, cap - len, "\n-- %s\n", label);
    src[len] = '\0';
    snprintf(qpath, sizeof qpath, "/v1/script?label=%s", label);
    int to = rnd(rn, c->n);
    struct mr_it_resp r =
        mr_it_http_port(c->nodes[to].http_port, "POST", qpath, src, NULL, 10000);
    free(src);
    if (r.status == 200) rn->res->deploys_ok++;
    note(rn, "script-deploy %s through %s: status %d", label, c->nodes[to].name, r.status);
    mr_it_resp_free(&r);
}

/* Fault kinds dealt from a shuffled deck (refilled when empty), so even a
 * short round sees most kinds; crash-all comes once, half-way, and
 * powercut-all once, at three quarters. */
static const int deck_cards[] = {MR_CF_KILL,        MR_CF_KILL_LEADER,  MR_CF_KILL_LEADER,
                                 MR_CF_PAUSE,       MR_CF_PAUSE_LEADER, MR_CF_PART_HALVES,
                                 MR_CF_PART_LEADER, MR_CF_PART_LEADER,  MR_CF_PART_BRIDGE,
                                 MR_CF_PART_FLAP,   MR_CF_PART_ONEWAY,  MR_CF_TRANSFER,
                                 MR_CF_MEMBER,      MR_CF_POWERCUT,     MR_CF_POWERCUT,
                                 MR_CF_DEPLOY};
#define DECK_N ((int)(sizeof deck_cards / sizeof deck_cards[0]))

struct deck {
    int cards[DECK_N];
    int left;
};

static int deal(struct run *rn, struct deck *d)
{
    if (d->left == 0) {
        memcpy(d->cards, deck_cards, sizeof d->cards);
        for (int i = DECK_N - 1; i > 0; i--) {
            int j = rnd(rn, i + 1), t = d->cards[i];
            d->cards[i] = d->cards[j];
            d->cards[j] = t;
        }
        d->left = DECK_N;
    }
    return d->cards[--d->left];
}

/* Waits (up to 10 s) until the nodes in `mask`, just restarted, answer
 * HTTP: a crash counts as healed once the processes are running again. */
static void wait_up(struct run *rn, unsigned mask)
{
    for (long long end = mr_it_now_ms() + 10000; mr_it_now_ms() < end;
         mr_it_sleep_ms(5)) {
        int all = 1;
        for (int i = 0; i < rn->c->n && all; i++) {
            if (!((mask >> i) & 1)) continue;
            struct mr_it_resp r = mr_it_http_port(rn->c->nodes[i].http_port, "GET",
                                                  "/v1/status", NULL, NULL, 500);
            if (r.status != 200) all = 0;
            mr_it_resp_free(&r);
        }
        if (all) return;
    }
}

/* After wait_up: every node in `mask` must still be running (a node whose
 * recovery refused its data dir exits with code 3). */
static void check_restarted(struct run *rn, unsigned mask, const char *what)
{
    for (int i = 0; i < rn->c->n; i++) {
        if (!((mask >> i) & 1)) continue;
        int code = mr_it_wait_exit(rn->c, i, 0);
        if (code >= 0) {
            rn->res->restart_failures++;
            note(rn, "RESTART FAILED: %s exited with %d after %s", rn->c->nodes[i].name,
                 code, what);
            log_tail(rn, i, 20);
        }
    }
}

/* Power cut of the nodes in `mask` (SIGKILL + rewrite to the durable image). */
static void power_cut(struct run *rn, unsigned mask)
{
    char errmsg[MR_ERRMSG_SIZE];
    for (int i = 0; i < rn->c->n; i++) /* the power goes at the same instant */
        if ((mask >> i) & 1) mr_it_kill9(rn->c, i);
    for (int i = 0; i < rn->c->n; i++) {
        if (!((mask >> i) & 1)) continue;
        if (mr_store_powerloss_cut(rn->c->nodes[i].data_dir, rn->c->nodes[i].powerloss_dir,
                                   errmsg) != 0) {
            rn->res->restart_failures++;
            note(rn, "POWER CUT FAILED on %s: %s", rn->c->nodes[i].name, errmsg);
        }
    }
}

/* Leader + a successful write, timed from rn->last_heal. */
static double measure_recovery(struct run *rn)
{
    struct mr_it_cluster *c = rn->c;
    long long t0 = rn->last_heal;
    while (mr_it_now_ms() < t0 + 15000) {
        int l = find_leader(c);
        if (l >= 0) {
            struct mr_it_resp r = mr_it_http_port(c->nodes[l].http_port, "PUT",
                                                  "/v1/kv/probe", "1", NULL, 1000);
            int okw = r.status == 200;
            mr_it_resp_free(&r);
            if (okw) return (double)(mr_it_now_ms() - t0) / 1000.0;
        }
        mr_it_sleep_ms(10);
    }
    return -1;
}

static void inject(struct run *rn, struct shared *sh, int kind, long long deadline)
{
    struct mr_it_cluster *c = rn->c;
    int n = c->n;
    unsigned all = (1u << n) - 1;
    int victim = rnd(rn, n);
    int dur = 700 + rnd(rn, 1300); /* > election timeout (600 ms max) */
    long long cap = deadline + 5000;
    if (kind == MR_CF_KILL_LEADER || kind == MR_CF_PAUSE_LEADER ||
        kind == MR_CF_PART_LEADER || kind == MR_CF_PART_ONEWAY ||
        (kind == MR_CF_MEMBER && rnd(rn, 3) == 0)) {
        int l = find_leader(c);
        if (l >= 0) victim = l;
    }
    rn->res->faults[kind]++;
    switch (kind) {
    case MR_CF_KILL:
    case MR_CF_KILL_LEADER:
        if (kind == MR_CF_KILL_LEADER) write_canary(rn, sh);
        note(rn, "%s %s for %dms", fault_names[kind], c->nodes[victim].name, dur);
        mr_it_kill9(c, victim);
        sleep_ms_until(dur, cap);
        start_node(rn, victim);
        wait_up(rn, 1u << victim);
        check_restarted(rn, 1u << victim, fault_names[kind]);
        break;
    case MR_CF_PAUSE:
    case MR_CF_PAUSE_LEADER:
        note(rn, "%s %s for %dms", fault_names[kind], c->nodes[victim].name, dur);
        mr_it_pause(c, victim);
        if (rn->o->targeted) /* read from the old leader when it wakes up */
            sh->read_target = victim;
        sleep_ms_until(dur, cap);
        mr_it_resume(c, victim);
        if (rn->o->targeted) {
            mr_it_sleep_ms(300);
            sh->read_target = -1;
        }
        break;
    case MR_CF_CRASH_ALL:
        write_canary(rn, sh);
        note(rn, "crash-all for %dms", dur);
        for (int i = 0; i < n; i++) mr_it_kill9(c, i);
        sleep_ms_until(dur, cap);
        for (int i = 0; i < n; i++) start_node(rn, i);
        wait_up(rn, all);
        check_restarted(rn, all, "crash-all");
        break;
    case MR_CF_POWERCUT: {
        unsigned m = random_minority(rn);
        char g[64];
        if (rnd(rn, 2) == 0) { /* half the time, the leader is in it */
            int l = find_leader(c);
            if (l >= 0 && !((m >> l) & 1)) m = (m & (m - 1)) | (1u << l);
        }
        write_canary(rn, sh);
        group_str(c, m, g, sizeof g);
        note(rn, "powercut %s for %dms", g, dur);
        power_cut(rn, m);
        sleep_ms_until(dur, cap);
        for (int i = 0; i < n; i++)
            if ((m >> i) & 1) start_node(rn, i);
        wait_up(rn, m);
        check_restarted(rn, m, "a power cut");
        break;
    }
    case MR_CF_POWERCUT_ALL:
        write_canary(rn, sh);
        note(rn, "powercut-all for %dms", dur);
        power_cut(rn, all);
        sleep_ms_until(dur, cap);
        for (int i = 0; i < n; i++) start_node(rn, i);
        wait_up(rn, all);
        check_restarted(rn, all, "a power cut of every node");
        break;
    case MR_CF_PART_HALVES: {
        unsigned m = random_minority(rn);
        dur += rnd(rn, 800);
        split(rn, "partition-halves (minority | majority)", m, all & ~m);
        sleep_ms_until(dur, cap);
        break;
    }
    case MR_CF_PART_LEADER:
        dur += rnd(rn, 800);
        split(rn, "partition-leader (isolated | rest)", 1u << victim,
              all & ~(1u << victim));
        sleep_ms_until(dur, cap);
        break;
    case MR_CF_PART_BRIDGE: {
        /* bridge b sees everyone; the others split into A | C */
        int b = victim;
        unsigned a = 0, cc = 0;
        int order[MR_IT_MAX_NODES], k = 0;
        for (int i = 0; i < n; i++)
            if (i != b) order[k++] = i;
        for (int i = k - 1; i > 0; i--) {
            int j = rnd(rn, i + 1), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        for (int i = 0; i < k; i++) {
            if (i < k / 2)
                a |= 1u << order[i];
            else
                cc |= 1u << order[i];
        }
        dur += rnd(rn, 800);
        char gb[16];
        snprintf(gb, sizeof gb, "%s", c->nodes[b].name);
        char what[64];
        snprintf(what, sizeof what, "partition-bridge via %s:", gb);
        split(rn, what, a, cc);
        sleep_ms_until(dur, cap);
        break;
    }
    case MR_CF_PART_FLAP: {
        long long end = mr_it_now_ms() + 2000 + rnd(rn, 2000);
        note(rn, "partition-flap start");
        int on = 0;
        while (mr_it_now_ms() < end && mr_it_now_ms() < cap) {
            if (!on) {
                unsigned m = random_minority(rn);
                mr_chaos_proxy_split(rn->px, m, all & ~m);
            } else {
                mr_chaos_proxy_heal(rn->px);
            }
            on = !on;
            rn->res->flaps++;
            mr_it_sleep_ms(150 + rnd(rn, 250));
        }
        note(rn, "partition-flap end");
        break;
    }
    case MR_CF_PART_ONEWAY: {
        int in = rnd(rn, 2);
        for (int i = 0; i < n; i++)
            if (i != victim) {
                if (in)
                    mr_chaos_proxy_cut(rn->px, i, victim, 1);
                else
                    mr_chaos_proxy_cut(rn->px, victim, i, 1);
            }
        dur += rnd(rn, 800);
        note(rn, "partition-oneway: %s's %s links cut for %dms", c->nodes[victim].name,
             in ? "inbound" : "outbound", dur);
        sleep_ms_until(dur, cap);
        break;
    }
    case MR_CF_TRANSFER:
        fault_transfer(rn);
        break;
    case MR_CF_DEPLOY:
        fault_deploy(rn);
        break;
    case MR_CF_MEMBER:
        fault_member(rn, victim, cap);
        break;
    }
    if (mr_chaos_proxy_n_cuts(rn->px) > 0) {
        mr_chaos_proxy_heal(rn->px);
        note(rn, "heal partition");
    }
    rn->last_heal = mr_it_now_ms();
    /* Every fault is followed by a recovery measurement, so the next one
     * starts from a cluster that serves writes. */
    double rs = measure_recovery(rn);
    rn->res->recover_s = rs;
    if (rs > rn->res->recover_max_s) {
        rn->res->recover_max_kind = kind;
        rn->res->recover_max_s = rs;
    }
    if (rs < 0) rn->res->unrecovered++;
    if (rs < 0)
        note(rn, "NO leader serving writes 15 s after %s", fault_names[kind]);
    else if (rs > 2.0 * ELECTION_TIMEOUT_MAX_MS / 1000.0)
        note(rn, "slow recovery after %s: %.3f s", fault_names[kind], rs);
}

/* ---- the round ---------------------------------------------------------------- */

static int check_canaries(struct run *rn)
{
    int lost = 0;
    for (int k = 0; k < canary_seq; k++) {
        char path[64], want[32], got[64] = "";
        snprintf(path, sizeof path, "/v1/kv/canary%d", k);
        snprintf(want, sizeof want, "%d", 1000 + k);
        int status = 0;
        for (int attempt = 0; attempt < 30; attempt++) {
            struct mr_it_resp r =
                mr_it_http_port(rn->c->nodes[attempt % rn->c->n].http_port, "GET", path,
                                NULL, NULL, 2000);
            status = r.status;
            if (r.status == 200) json_tok(r.body, "value", got, sizeof got);
            mr_it_resp_free(&r);
            if (status == 200 || status == 404) break;
            mr_it_sleep_ms(100);
        }
        if (status == 404 || (status == 200 && strcmp(got, want) != 0)) {
            fprintf(rn->out, "LOST WRITE: canary%d = %s acknowledged, now %s\n", k, want,
                    status == 404 ? "absent" : got);
            lost++;
        }
    }
    return lost;
}

static int check_members(struct run *rn)
{
    struct mr_it_cluster *c = rn->c;
    char expr[256];
    for (long long end = mr_it_now_ms() + 20000; mr_it_now_ms() < end;) {
        int all = 1;
        for (int i = 0; i < c->n && all; i++) {
            member_expr(expr, sizeof expr, c->nodes[i].name);
            for (int j = 0; j < c->n && all; j++)
                if (strcmp(members_eval(c, j, expr), "true") != 0) all = 0;
        }
        if (all) return 1;
        mr_it_sleep_ms(100);
    }
    fprintf(rn->out, "members: not every node is a voter on every node after healing\n");
    return 0;
}

static int check_hashes(struct run *rn)
{
    struct mr_it_cluster *c = rn->c;
    for (int attempt = 0; attempt < 100; attempt++) {
        char first[256] = "", cur[256];
        int same = 1;
        for (int i = 0; i < c->n && same; i++) {
            struct mr_it_resp r = mr_it_http_port(c->nodes[i].http_port, "GET",
                                                  "/v1/status?hash=true", NULL, NULL, 1000);
            char a[64] = "", hsh[160] = "";
            if (r.status != 200 || json_tok(r.body, "applied", a, sizeof a) ||
                json_tok(r.body, "state_hash", hsh, sizeof hsh))
                same = 0;
            snprintf(cur, sizeof cur, "%s/%s", a, hsh);
            if (same && rn->res != NULL) {
                char mi[32] = "", ev[32] = "";
                if (json_tok(r.body, "misses", mi, sizeof mi) == 0)
                    rn->res->cache_misses += strtoull(mi, NULL, 10);
                if (json_tok(r.body, "evicted_bytes", ev, sizeof ev) == 0)
                    rn->res->cache_evicted += strtoull(ev, NULL, 10);
            }
            if (i == 0)
                snprintf(first, sizeof first, "%s", cur);
            else if (strcmp(first, cur) != 0)
                same = 0;
            mr_it_resp_free(&r);
        }
        if (same) {
            fprintf(rn->out, "state: all %d nodes applied/state_hash = %s\n", c->n,
                    first);
            if (rn->res != NULL)
                fprintf(rn->out,
                        "log cache: %llu entries read back from the WALs, %llu payload bytes "
                        "dropped from memory (since each node's last start)\n",
                        rn->res->cache_misses, rn->res->cache_evicted);
            return 1;
        }
        if (rn->res != NULL) rn->res->cache_misses = rn->res->cache_evicted = 0;
        mr_it_sleep_ms(100);
    }
    fprintf(rn->out, "state: nodes did NOT converge (applied/state_hash differ)\n");
    return 0;
}

/* After healing every node runs the same script (GET /v1/script), a
 * deployed one ("chaos-N") if any deploy was answered 200. */
static int check_scripts(struct run *rn)
{
    struct mr_it_cluster *c = rn->c;
    for (int attempt = 0; attempt < 100; attempt++) {
        char first[160] = "", cur[160] = "", label[64] = "";
        int same = 1;
        for (int i = 0; i < c->n && same; i++) {
            struct mr_it_resp r =
                mr_it_http_port(c->nodes[i].http_port, "GET", "/v1/script", NULL, NULL, 1000);
            if (r.status != 200 || json_tok(r.body, "hash", cur, sizeof cur) ||
                json_tok(r.body, "label", label, sizeof label))
                same = 0;
            else if (i == 0)
                snprintf(first, sizeof first, "%s", cur);
            else if (strcmp(first, cur) != 0)
                same = 0;
            mr_it_resp_free(&r);
        }
        if (same && (rn->res->deploys_ok == 0 || strncmp(label, "\"chaos-", 7) == 0)) {
            fprintf(rn->out, "script: all %d nodes run %s (%s); %d deploy(s) answered 200\n",
                    c->n, label, first, rn->res->deploys_ok);
            return 1;
        }
        mr_it_sleep_ms(100);
    }
    fprintf(rn->out, "script: nodes do NOT run the same (deployed) script\n");
    return 0;
}

/* After healing: one more integrity check through the leader, decided with
 * every member equal; and no node ever saw a mismatch or left "ok" state
 * (the counters add up over every leader of the round). */
static int check_integrity(struct run *rn, struct mr_chaos_result *res)
{
    struct mr_it_cluster *c = rn->c;
    char v[64];
    for (long long end = mr_it_now_ms() + 20000; mr_it_now_ms() < end;) {
        int leader = -1, decided = 0;
        for (int i = 0; i < c->n && leader < 0; i++) {
            struct mr_it_resp r =
                mr_it_http_port(c->nodes[i].http_port, "GET", "/v1/status", NULL, NULL, 1000);
            if (r.status == 200 && json_tok(r.body, "role", v, sizeof v) == 0 &&
                strcmp(v, "\"leader\"") == 0)
                leader = i;
            mr_it_resp_free(&r);
        }
        if (leader >= 0) {
            struct mr_it_resp r = mr_it_http_port(c->nodes[leader].http_port, "POST",
                                                  "/v1/integrity/check", NULL, NULL, 1000);
            char idx[32] = "";
            if (r.status == 202) json_tok(r.body, "check_index", idx, sizeof idx);
            mr_it_resp_free(&r);
            for (int k = 0; idx[0] && k < 100 && !decided; k++) {
                r = mr_it_http_port(c->nodes[leader].http_port, "GET", "/v1/status", NULL,
                                    NULL, 1000);
                char vi[32] = "";
                if (r.status == 200 && json_tok(r.body, "verdict_index", vi, sizeof vi) == 0 &&
                    strtoull(vi, NULL, 10) >= strtoull(idx, NULL, 10))
                    decided = 1;
                mr_it_resp_free(&r);
                if (!decided) mr_it_sleep_ms(100);
            }
        }
        if (decided) break;
        mr_it_sleep_ms(200);
    }
    int ok = 1;
    res->integrity_checks = 0;
    for (int i = 0; i < c->n; i++) {
        struct mr_it_resp r =
            mr_it_http_port(c->nodes[i].http_port, "GET", "/v1/status", NULL, NULL, 1000);
        char checks[32] = "", mism[32] = "", state[32] = "", alarm[16] = "";
        if (r.status != 200 || json_tok(r.body, "checks", checks, sizeof checks) ||
            json_tok(r.body, "mismatches", mism, sizeof mism) ||
            json_tok(r.body, "state", state, sizeof state) ||
            json_tok(r.body, "alarm", alarm, sizeof alarm)) {
            ok = 0;
        } else {
            res->integrity_checks += atoi(checks);
            if (atoi(mism) != 0 || strcmp(state, "\"ok\"") != 0 || strcmp(alarm, "null") != 0) {
                fprintf(rn->out, "integrity: %s reports mismatches=%s state=%s alarm=%s\n",
                        c->nodes[i].name, mism, state, alarm);
                ok = 0;
            }
        }
        mr_it_resp_free(&r);
    }
    fprintf(rn->out, "integrity: %d checks decided during the round, %s\n",
            res->integrity_checks, ok ? "every member equal each time" : "MISMATCH");
    return ok;
}

int mr_chaos_run(const struct mr_chaos_opts *o, struct mr_chaos_result *res)
{
    FILE *out = o->out ? o->out : stderr;
    memset(res, 0, sizeof(*res));
    struct mr_it_cluster c;
    struct run rn;
    memset(&rn, 0, sizeof rn);
    rn.o = o;
    rn.res = res;
    rn.out = out;
    rn.rng = o->seed;
    canary_seq = 0;
    if (run_setup(&rn, &c, o->nodes) != 0) return -1;
    rn.sched = open_memstream(&rn.sched_buf, &rn.sched_len);
    if (o->unsafe_reads)
        setenv("MOONRAFT_UNSAFE_LOCAL_READS", "1", 1);
    else
        unsetenv("MOONRAFT_UNSAFE_LOCAL_READS");
    struct shared sh = {.c = &c, .read_target = -1};
    pthread_mutex_init(&sh.mu, NULL);
    mr_lc_history_init(&sh.h);
    for (int i = 0; i < c.n; i++) {
        sh.ports[i] = c.nodes[i].http_port;
        start_node(&rn, i);
    }
    fprintf(out,
            "chaos: seed=%llu nodes=%d seconds=%d clients=%d unsafe_reads=%d targeted=%d "
            "(peer links via proxy)\n",
            (unsigned long long)o->seed, o->nodes, o->seconds, o->clients,
            o->unsafe_reads, o->targeted);
    int rc = 0, ncl = 0;
    struct client cls[16];
    pthread_t th[16];
    if (mr_it_wait_leader(&c, 15000, 0) < 0) {
        fprintf(out, "chaos: no initial leader\n");
        rc = -1;
        goto done;
    }
    ncl = o->clients > 16 ? 16 : o->clients;
    for (int i = 0; i < ncl; i++) {
        cls[i] = (struct client){
            .sh = &sh, .id = i + 1, .rng = o->seed * 31 + (uint64_t)i + 1};
        pthread_create(&th[i], NULL, client_main, &cls[i]);
    }
    rn.start = mr_it_now_ms();
    long long deadline = rn.start + (long long)o->seconds * 1000;
    int crashed_all = 0, cut_all = 0, deployed = 0;
    struct deck dk = {.left = 0};
    rn.last_heal = rn.start;
    fprintf(out, "fault schedule (seed %llu; timings are OS-dependent):\n",
            (unsigned long long)o->seed);
    while (mr_it_now_ms() < deadline) {
        sleep_ms_until(300 + rnd(&rn, 900), deadline);
        if (mr_it_now_ms() >= deadline) break;
        int kind;
        if (o->targeted)
            kind = MR_CF_PAUSE_LEADER;
        else if (!crashed_all && mr_it_now_ms() > rn.start + (deadline - rn.start) / 2)
            kind = MR_CF_CRASH_ALL, crashed_all = 1;
        else if (!cut_all && mr_it_now_ms() > rn.start + 3 * (deadline - rn.start) / 4)
            kind = MR_CF_POWERCUT_ALL, cut_all = 1;
        else if (!deployed && mr_it_now_ms() > rn.start + (deadline - rn.start) / 4)
            kind = MR_CF_DEPLOY, deployed = 1; /* every round deploys a script */
        else if (rn.last_heal ==
                 rn.start) /* the first fault of a round is always a partition */
            kind =
                MR_CF_PART_HALVES + rnd(&rn, MR_CF_PART_ONEWAY - MR_CF_PART_HALVES + 1);
        else
            kind = deal(&rn, &dk);
        inject(&rn, &sh, kind, deadline);
    }
    /* Everything is healed by now, and recover_s was measured right after
     * the last fault's heal; heal() only restarts what a failed fault left
     * behind (and the clock then restarts). */
    if (heal(&rn) || rn.last_heal == rn.start) {
        wait_up(&rn, (1u << c.n) - 1);
        rn.last_heal = mr_it_now_ms();
        res->recover_s = measure_recovery(&rn);
    }
    fprintf(out,
            "recovery: leader serving writes %.3f s after the last fault healed (limit "
            "%.1f s); "
            "worst after any fault %.3f s (%s)\n",
            res->recover_s, 2.0 * ELECTION_TIMEOUT_MAX_MS / 1000.0, res->recover_max_s,
            fault_names[res->recover_max_kind]);
    sh.stop = 1;
    for (int i = 0; i < ncl; i++) pthread_join(th[i], NULL);
    ncl = 0;
    /* final linearizable read of every key (through any node): lost
     * acknowledged writes show up as violations */
    for (int k = 0; k < NKEYS; k++) {
        char key[8], path[32], tmp[64];
        snprintf(key, sizeof key, "k%d", k);
        snprintf(path, sizeof path, "/v1/kv/%s", key);
        for (int attempt = 0; attempt < 50; attempt++) {
            struct mr_lc_op op = {.proc = 99, .type = MR_LC_READ, .key = key};
            op.invoke = now_ns();
            struct mr_it_resp r = mr_it_http_port(c.nodes[attempt % c.n].http_port, "GET",
                                                  path, NULL, NULL, 2000);
            op.complete = now_ns();
            int done = 0;
            if (r.status == 404 ||
                (r.status == 200 && json_tok(r.body, "value", tmp, sizeof tmp) == 0)) {
                op.outcome = MR_LC_OK;
                op.value = r.status == 200 && strcmp(tmp, "null") ? tmp : NULL;
                record(&sh, &op);
                done = 1;
            }
            mr_it_resp_free(&r);
            if (done) break;
            mr_it_sleep_ms(100);
        }
    }
    res->lost_canaries = check_canaries(&rn);
    res->members_ok = check_members(&rn);
    res->hashes_equal = check_hashes(&rn);
    res->integrity_ok = check_integrity(&rn, res);
    res->scripts_equal = check_scripts(&rn);
    struct mr_lc_summary s;
    if (mr_lc_check_history(&sh.h, out, &s) != 0) {
        rc = -1;
        goto done;
    }
    struct mr_chaos_proxy_stats ps;
    mr_chaos_proxy_stats(rn.px, &ps);
    res->proxy_refused = ps.refused;
    res->proxy_cut = ps.cut;
    res->proxy_bytes = ps.bytes;
    res->ops = s.ops;
    res->ok = s.ops_ok;
    res->fail = s.ops_fail;
    res->info = s.ops_info;
    res->keys = s.keys;
    res->bad_keys = s.bad_keys;
    res->check_s = s.seconds;
    fprintf(out,
            "ops=%zu ok=%zu fail=%zu info=%zu; keys=%zu bad=%zu; check %.3f s; recover "
            "%.3f s; recover_max %.3f s\n",
            s.ops, s.ops_ok, s.ops_fail, s.ops_info, s.keys, s.bad_keys, s.seconds,
            res->recover_s, res->recover_max_s);
    fprintf(out, "faults:");
    for (int k = 0; k < MR_CF__N; k++)
        fprintf(out, " %s=%d", fault_names[k], res->faults[k]);
    fprintf(out, "\n");
    fprintf(out,
            "extra: member_changes=%d transfers_ok=%d flaps=%d canaries=%d lost=%d "
            "restart_failures=%d members_ok=%d "
            "proxy_refused=%llu proxy_cut=%llu proxy_bytes=%llu\n",
            res->member_changes, res->transfers_ok, res->flaps, res->canaries,
            res->lost_canaries, res->restart_failures, res->members_ok, (unsigned long long)ps.refused,
            (unsigned long long)ps.cut, (unsigned long long)ps.bytes);
    const char *hp = getenv("MR_CHAOS_HISTORY");
    if (hp) {
        FILE *f = fopen(hp, "w");
        if (f) {
            for (size_t i = 0; i < sh.h.n; i++) mr_lc_op_print(f, &sh.h.ops[i]);
            fclose(f);
        }
    }
    int recovered =
        res->recover_s >= 0 && res->recover_s <= 2.0 * ELECTION_TIMEOUT_MAX_MS / 1000.0;
    if (s.bad_keys || !res->hashes_equal || !res->integrity_ok || !res->scripts_equal ||
        res->lost_canaries ||
        !res->members_ok ||
        res->restart_failures || !recovered) {
        fflush(rn.sched);
        fprintf(out, "fault schedule of the failing round (seed %llu):\n%s",
                (unsigned long long)o->seed, rn.sched_buf ? rn.sched_buf : "");
        if (s.bad_keys)
            fprintf(out,
                    "VIOLATION: %zu key(s) not linearizable; replay with "
                    "MR_CHAOS_SEED=%llu\n",
                    s.bad_keys, (unsigned long long)o->seed);
        else
            fprintf(out, "CHECK FAILED: replay with MR_CHAOS_SEED=%llu\n",
                    (unsigned long long)o->seed);
        if (!(o->unsafe_reads && s.bad_keys)) mr_it_dump_logs(&c);
    }
done:
    sh.stop = 1;
    for (int i = 0; i < ncl; i++) pthread_join(th[i], NULL);
    run_teardown(&rn);
    if (rn.sched) fclose(rn.sched);
    free(rn.sched_buf);
    mr_lc_history_free(&sh.h);
    pthread_mutex_destroy(&sh.mu);
    unsetenv("MOONRAFT_UNSAFE_LOCAL_READS");
    return rc;
}

/* ---- partition self-check -------------------------------------------------------- */

int mr_chaos_partition_selfcheck(FILE *out)
{
    struct mr_it_cluster c;
    struct run rn;
    struct mr_chaos_result res;
    int ok = 0;
    memset(&rn, 0, sizeof rn);
    memset(&res, 0, sizeof res);
    rn.res = &res;
    rn.out = out;
    if (run_setup(&rn, &c, 3) != 0) return -1;
    for (int i = 0; i < 3; i++) start_node(&rn, i);
    int l = mr_it_wait_leader(&c, 15000, 1);
    char role[32];
    unsigned long long term0 = 0, term1 = 0;
    if (l < 0 || status_of(&c, l, role, sizeof role, &term0) != 0) {
        fprintf(out, "selfcheck: no initial leader\n");
        goto done;
    }
    mr_chaos_proxy_split(rn.px, 1u << l, 7u & ~(1u << l));
    /* The isolated leader cannot commit... */
    struct mr_it_resp r =
        mr_it_http_port(c.nodes[l].http_port, "PUT", "/v1/kv/isolated", "1", NULL, 1500);
    if (r.status == 200) {
        fprintf(out, "selfcheck: the isolated leader committed a write\n");
        mr_it_resp_free(&r);
        goto done;
    }
    mr_it_resp_free(&r);
    /* ...while the other two elect a new leader in a higher term. */
    int nl = -1;
    for (long long end = mr_it_now_ms() + 5000; mr_it_now_ms() < end && nl < 0;
         mr_it_sleep_ms(50))
        for (int i = 0; i < 3; i++)
            if (i != l && status_of(&c, i, role, sizeof role, &term1) == 0 &&
                strcmp(role, "leader") == 0 && term1 > term0)
                nl = i;
    if (nl < 0) {
        fprintf(out, "selfcheck: the majority did not elect a new leader\n");
        goto done;
    }
    r = mr_it_http_port(c.nodes[nl].http_port, "PUT", "/v1/kv/majority", "2", NULL, 3000);
    int wrote = r.status == 200;
    mr_it_resp_free(&r);
    struct mr_chaos_proxy_stats ps;
    mr_chaos_proxy_stats(rn.px, &ps);
    if (!wrote || ps.cut + ps.refused == 0) {
        fprintf(out, "selfcheck: majority write %s, proxy cut %llu refused %llu\n",
                wrote ? "ok" : "failed", (unsigned long long)ps.cut,
                (unsigned long long)ps.refused);
        goto done;
    }
    mr_chaos_proxy_heal(rn.px);
    /* After healing the old leader learns the new term and follows. */
    for (long long end = mr_it_now_ms() + 5000; mr_it_now_ms() < end;
         mr_it_sleep_ms(50)) {
        if (mr_it_wait_leader(&c, 500, 1) >= 0 &&
            status_of(&c, l, role, sizeof role, &term1) == 0 &&
            strcmp(role, "follower") == 0) {
            ok = 1;
            break;
        }
    }
    if (!ok)
        fprintf(out,
                "selfcheck: the old leader did not rejoin as a follower after healing\n");
    fprintf(out,
            "selfcheck: leader %s isolated (term %llu), %s elected (term %llu); proxy "
            "cut %llu refused %llu\n",
            c.nodes[l].name, term0, c.nodes[nl].name, term1, (unsigned long long)ps.cut,
            (unsigned long long)ps.refused);
done:
    run_teardown(&rn);
    return ok && res.teardown_problems == 0 ? 0 : -1;
}
