/* Chaos runner: see chaos.h. Reuses the integration harness for processes
 * and HTTP (compiled in here since helpers are per test folder). */
#include "../integration/harness.c"

#include "chaos.h"
#include "lincheck.h"

#include <pthread.h>

#include "util/util.h"

#define NKEYS 3
#define CLIENT_TIMEOUT_MS 2000

static const char *fault_names[MR_CF__N] = {"kill9-restart", "kill9-restart-leader", "pause",
                                            "pause-leader", "crash-all"};

const char *mr_chaos_fault_name(int kind) { return fault_names[kind]; }

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
static int json_tok(const char *body, const char *field, char *out, size_t n)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", field);
    const char *p = body ? strstr(body, pat) : NULL;
    if (!p)
        return -1;
    p += strlen(pat);
    size_t k = 0;
    while (*p && *p != ',' && *p != '}' && k + 1 < n)
        out[k++] = *p++;
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
    if (status == 200)
        return MR_LC_OK;
    if (status == 503 || (status >= 400 && status < 500))
        return MR_LC_FAIL;
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
            if (rt >= 0)
                node = rt;
            op.type = MR_LC_READ;
            snprintf(path, sizeof path, "/v1/kv/%s", key);
            op.invoke = now_ns();
            r = mr_it_http_port(sh->ports[node], "GET", path, NULL, NULL, CLIENT_TIMEOUT_MS);
            op.complete = now_ns();
            op.outcome = r.status == 404 ? MR_LC_OK : classify(r.status);
            if (r.status == 200) {
                if (json_tok(r.body, "value", tmp, sizeof tmp) == 0 && strcmp(tmp, "null") != 0)
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
                snprintf(e, sizeof e, "%d", other * 1000000 + (int)(splitmix(&cl->rng) % (uint64_t)(seq + 1)));
                op.expect = e;
                if (splitmix(&cl->rng) % 2)
                    snprintf(e, sizeof e, "%d", last);
            }
            snprintf(v, sizeof v, "%d", cl->id * 1000000 + ++seq);
            op.arg = v;
            snprintf(body, sizeof body, "{\"op\":\"cas\",\"key\":\"%s\",\"expect\":%s,\"value\":%s}", key,
                     op.expect ? op.expect : "null", v);
            op.invoke = now_ns();
            r = mr_it_http_port(sh->ports[node], "POST", "/v1/command", body, NULL, CLIENT_TIMEOUT_MS);
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
        /* an immediate transport failure is a refused connection: the
         * request was never sent, so it definitely did not apply */
        if (r.status == 0 && op.complete - op.invoke < 50 * 1000000LL)
            op.outcome = MR_LC_FAIL;
        if (op.outcome == MR_LC_INFO)
            op.complete = MR_LC_INF;
        record(sh, &op);
        mr_it_resp_free(&r);
        mr_it_sleep_ms(10 + (int)(splitmix(&cl->rng) % 40)); /* keep histories checkable */
    }
    return NULL;
}

static int find_leader(struct mr_it_cluster *c)
{
    for (int i = 0; i < c->n; i++) {
        if (c->nodes[i].pid == 0 || c->nodes[i].paused)
            continue;
        struct mr_it_resp r = mr_it_http_port(c->nodes[i].http_port, "GET", "/v1/status", NULL, NULL, 500);
        int lead = r.status == 200 && r.body && strstr(r.body, "\"role\":\"leader\"");
        mr_it_resp_free(&r);
        if (lead)
            return i;
    }
    return -1;
}

static void sleep_ms_until(int ms, long long deadline)
{
    long long end = mr_it_now_ms() + ms;
    if (end > deadline)
        end = deadline;
    while (mr_it_now_ms() < end)
        mr_it_sleep_ms(20);
}

/* Heal: resume paused nodes, restart dead ones. */
static void heal(struct mr_it_cluster *c)
{
    for (int i = 0; i < c->n; i++) {
        if (c->nodes[i].pid && c->nodes[i].paused)
            mr_it_resume(c, i);
        if (c->nodes[i].pid == 0)
            mr_it_start_static(c, i, NULL);
    }
}

int mr_chaos_run(const struct mr_chaos_opts *o, struct mr_chaos_result *res)
{
    FILE *out = o->out ? o->out : stderr;
    memset(res, 0, sizeof(*res));
    struct mr_it_cluster c;
    mr_it_cluster_init(&c, o->nodes);
    if (o->unsafe_reads)
        setenv("MOONRAFT_UNSAFE_LOCAL_READS", "1", 1);
    else
        unsetenv("MOONRAFT_UNSAFE_LOCAL_READS");
    struct shared sh = {.c = &c, .read_target = -1};
    pthread_mutex_init(&sh.mu, NULL);
    mr_lc_history_init(&sh.h);
    for (int i = 0; i < c.n; i++) {
        sh.ports[i] = c.nodes[i].http_port;
        mr_it_start_static(&c, i, NULL);
    }
    fprintf(out, "chaos: seed=%llu nodes=%d seconds=%d clients=%d unsafe_reads=%d targeted=%d\n",
            (unsigned long long)o->seed, o->nodes, o->seconds, o->clients, o->unsafe_reads, o->targeted);
    int rc = 0;
    if (mr_it_wait_leader(&c, 15000, 0) < 0) {
        fprintf(out, "chaos: no initial leader\n");
        rc = -1;
        goto done;
    }
    uint64_t rng = o->seed;
    struct client cls[16];
    pthread_t th[16];
    int ncl = o->clients > 16 ? 16 : o->clients;
    for (int i = 0; i < ncl; i++) {
        cls[i] = (struct client){.sh = &sh, .id = i + 1, .rng = o->seed * 31 + (uint64_t)i + 1};
        pthread_create(&th[i], NULL, client_main, &cls[i]);
    }
    long long start = mr_it_now_ms(), deadline = start + (long long)o->seconds * 1000;
    int crashed_all = 0;
    fprintf(out, "fault schedule (seed %llu; timings are OS-dependent):\n", (unsigned long long)o->seed);
    while (mr_it_now_ms() < deadline) {
        sleep_ms_until(500 + (int)(splitmix(&rng) % 1500), deadline);
        if (mr_it_now_ms() >= deadline)
            break;
        int kind;
        uint64_t d = splitmix(&rng) % 100;
        if (o->targeted)
            kind = MR_CF_PAUSE_LEADER;
        else if (!crashed_all && mr_it_now_ms() > start + (deadline - start) / 2)
            kind = MR_CF_CRASH_ALL;
        else
            kind = d < 20 ? MR_CF_KILL : d < 50 ? MR_CF_KILL_LEADER : d < 70 ? MR_CF_PAUSE : MR_CF_PAUSE_LEADER;
        int victim = (int)(splitmix(&rng) % (uint64_t)c.n);
        int dur = 700 + (int)(splitmix(&rng) % 1300); /* > election timeout (600 ms max) */
        if (kind == MR_CF_KILL_LEADER || kind == MR_CF_PAUSE_LEADER) {
            int l = find_leader(&c);
            if (l >= 0)
                victim = l;
        }
        long long t = mr_it_now_ms() - start;
        res->faults[kind]++;
        switch (kind) {
        case MR_CF_KILL:
        case MR_CF_KILL_LEADER:
            fprintf(out, "  t=%lldms %s n%d for %dms\n", t, fault_names[kind], victim + 1, dur);
            mr_it_kill9(&c, victim);
            sleep_ms_until(dur, deadline + 5000);
            mr_it_start_static(&c, victim, NULL);
            break;
        case MR_CF_PAUSE:
        case MR_CF_PAUSE_LEADER:
            fprintf(out, "  t=%lldms %s n%d for %dms\n", t, fault_names[kind], victim + 1, dur);
            mr_it_pause(&c, victim);
            if (o->targeted) /* read from the old leader when it wakes up */
                sh.read_target = victim;
            sleep_ms_until(dur, deadline + 5000);
            mr_it_resume(&c, victim);
            if (o->targeted) {
                mr_it_sleep_ms(300);
                sh.read_target = -1;
            }
            break;
        case MR_CF_CRASH_ALL:
            crashed_all = 1;
            fprintf(out, "  t=%lldms crash-all for %dms\n", t, dur);
            for (int i = 0; i < c.n; i++)
                mr_it_kill9(&c, i);
            sleep_ms_until(dur, deadline + 5000);
            for (int i = 0; i < c.n; i++)
                mr_it_start_static(&c, i, NULL);
            break;
        }
    }
    /* heal and measure recovery: leader + a successful write */
    heal(&c);
    long long healed = mr_it_now_ms();
    res->recover_s = -1;
    while (mr_it_now_ms() < healed + 15000) {
        int l = find_leader(&c);
        if (l >= 0) {
            struct mr_it_resp r = mr_it_http_port(c.nodes[l].http_port, "PUT", "/v1/kv/probe", "1", NULL, 1000);
            int okw = r.status == 200;
            mr_it_resp_free(&r);
            if (okw) {
                res->recover_s = (double)(mr_it_now_ms() - healed) / 1000.0;
                break;
            }
        }
        mr_it_sleep_ms(20);
    }
    sh.stop = 1;
    for (int i = 0; i < ncl; i++)
        pthread_join(th[i], NULL);
    /* final linearizable read of every key (through any node) */
    for (int k = 0; k < NKEYS; k++) {
        char key[8], path[32], tmp[64];
        snprintf(key, sizeof key, "k%d", k);
        snprintf(path, sizeof path, "/v1/kv/%s", key);
        for (int attempt = 0; attempt < 50; attempt++) {
            struct mr_lc_op op = {.proc = 99, .type = MR_LC_READ, .key = key};
            op.invoke = now_ns();
            struct mr_it_resp r = mr_it_http_port(c.nodes[attempt % c.n].http_port, "GET", path, NULL, NULL, 2000);
            op.complete = now_ns();
            int done = 0;
            if (r.status == 404 || (r.status == 200 && json_tok(r.body, "value", tmp, sizeof tmp) == 0)) {
                op.outcome = MR_LC_OK;
                op.value = r.status == 200 && strcmp(tmp, "null") ? tmp : NULL;
                record(&sh, &op);
                done = 1;
            }
            mr_it_resp_free(&r);
            if (done)
                break;
            mr_it_sleep_ms(100);
        }
    }
    /* state hashes converge */
    res->hashes_equal = 0;
    for (int attempt = 0; attempt < 100 && !res->hashes_equal; attempt++) {
        char first[256] = "", cur[256];
        int same = 1;
        for (int i = 0; i < c.n && same; i++) {
            struct mr_it_resp r = mr_it_http_port(c.nodes[i].http_port, "GET", "/v1/status", NULL, NULL, 1000);
            char a[64] = "", hsh[160] = "";
            if (r.status != 200 || json_tok(r.body, "applied", a, sizeof a) ||
                json_tok(r.body, "state_hash", hsh, sizeof hsh))
                same = 0;
            snprintf(cur, sizeof cur, "%s/%s", a, hsh);
            if (i == 0)
                snprintf(first, sizeof first, "%s", cur);
            else if (strcmp(first, cur) != 0)
                same = 0;
            mr_it_resp_free(&r);
        }
        if (same) {
            res->hashes_equal = 1;
            fprintf(out, "state: all %d nodes applied/state_hash = %s\n", c.n, first);
        } else {
            mr_it_sleep_ms(100);
        }
    }
    if (!res->hashes_equal)
        fprintf(out, "state: nodes did NOT converge (applied/state_hash differ)\n");
    struct mr_lc_summary s;
    if (mr_lc_check_history(&sh.h, out, &s) != 0) {
        rc = -1;
        goto done;
    }
    res->ops = s.ops;
    res->ok = s.ops_ok;
    res->fail = s.ops_fail;
    res->info = s.ops_info;
    res->keys = s.keys;
    res->bad_keys = s.bad_keys;
    res->check_s = s.seconds;
    fprintf(out, "ops=%zu ok=%zu fail=%zu info=%zu; keys=%zu bad=%zu; check %.3f s; recover %.2f s\n", s.ops,
            s.ops_ok, s.ops_fail, s.ops_info, s.keys, s.bad_keys, s.seconds, res->recover_s);
    fprintf(out, "faults:");
    for (int k = 0; k < MR_CF__N; k++)
        fprintf(out, " %s=%d", fault_names[k], res->faults[k]);
    fprintf(out, "\n");
    if (s.bad_keys)
        fprintf(out, "VIOLATION: replay with MR_CHAOS_SEED=%llu\n", (unsigned long long)o->seed);
    const char *hp = getenv("MR_CHAOS_HISTORY");
    if (hp) {
        FILE *f = fopen(hp, "w");
        if (f) {
            for (size_t i = 0; i < sh.h.n; i++)
                mr_lc_op_print(f, &sh.h.ops[i]);
            fclose(f);
        }
    }
    if (s.bad_keys || !res->hashes_equal)
        mr_it_dump_logs(&c);
done:
    sh.stop = 1;
    heal(&c);
    if (mr_it_cluster_destroy(&c) != 0)
        fprintf(out, "chaos: teardown reported problems (exit status / sanitizer)\n");
    mr_lc_history_free(&sh.h);
    pthread_mutex_destroy(&sh.mu);
    unsetenv("MOONRAFT_UNSAFE_LOCAL_READS");
    return rc;
}
