/* node_replay: `moonraft replay`, "will this upgrade change anything?" as a
 * command (docs/operations.md "Upgrading the state machine script").
 *
 * Offline, on a stopped node's data directory (or a backup of one): loads the
 * newest snapshot and the log after it, and applies every entry in the log, in
 * order, to two state machines side by side:
 *   - "log": the script the log ran. It starts with the script recorded in the
 *     snapshot (or --original / the built-in kv.lua for a snapshot without one, or no
 *     snapshot) and switches at SCRIPT entries exactly as a node does;
 *   - "candidate": the new script. It takes the snapshot's state over the way
 *     a deploy would (migrate() or restore() of the log script's snapshot())
 *     and then runs every command.
 * For each command it compares the status, the result (or the error) and the
 * emitted events; at the end, the state hashes. Commands the node would have
 * answered from its idempotency table (a retry with a key already applied) are
 * skipped on both sides, as the node skips them.
 *
 * The log may end in entries that never committed (a leader's last proposals
 * before it crashed); they are replayed too: the replay shows what the
 * candidate does with commands, not the cluster's exact final state. */
#include "node/node_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_DIFF_LINES 20
#define SHOW_BYTES 300

struct side {
    const char *what; /* "log" / "candidate" */
    struct mr_sm *sm;
    uint64_t errors;
    mr_index first_error_index;
    char first_error[400];
};

static int read_whole(const char *path, char **out, size_t *len, FILE *err)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0, cap = 0;
    if (f == NULL) {
        fprintf(err, "moonraft replay: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    for (;;) {
        if (n + 4096 + 1 > cap) {
            char *p;
            cap = cap ? cap * 2 : 65536;
            p = mr_realloc(buf, cap);
            if (p == NULL) {
                mr_free(buf);
                fclose(f);
                fprintf(err, "moonraft replay: out of memory reading %s\n", path);
                return -1;
            }
            buf = p;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        fprintf(err, "moonraft replay: cannot read %s\n", path);
        fclose(f);
        mr_free(buf);
        return -1;
    }
    fclose(f);
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

static const char *base_name(const char *path)
{
    const char *b = strrchr(path, '/');
    return b ? b + 1 : path;
}

/* "ok {...}" / "script_error msg", cut to SHOW_BYTES, into buf. */
static void describe(const struct mr_sm_result *r, char *buf, size_t cap)
{
    const char *text = r->status == MR_SM_OK ? r->json : r->error;
    size_t len = text ? strlen(text) : 0;
    snprintf(buf, cap, "%s %.*s%s", mr_sm_status_name(r->status),
             (int)(len > SHOW_BYTES ? SHOW_BYTES : len), text ? text : "",
             len > SHOW_BYTES ? "..." : "");
}

static int same_text(const char *a, size_t alen, const char *b, size_t blen)
{
    if (a == NULL || b == NULL) return a == b;
    return alen == blen && memcmp(a, b, alen) == 0;
}

static void note_error(struct side *s, mr_index index, const struct mr_sm_result *r)
{
    if (r->status == MR_SM_OK) return;
    if (s->errors++ == 0) {
        s->first_error_index = index;
        snprintf(s->first_error, sizeof s->first_error, "%s: %s", mr_sm_status_name(r->status),
                 r->error ? r->error : "");
    }
}

static void usage(FILE *f)
{
    fputs("usage: moonraft replay DATA_DIR --script NEW.lua [--original OLD.lua]\n"
          "                       [--instruction-budget N] [--memory-mb N]\n"
          "  Replays a stopped node's snapshot and log (or a backup) through NEW.lua next to\n"
          "  the script the log ran, and reports where results, events or the final state\n"
          "  differ. --original: the script of a snapshot that does not record its own (or of\n"
          "  a log without a snapshot; default the built-in kv.lua). Budget and memory cap must be the\n"
          "  cluster's (defaults: the node's defaults).\n"
          "  Exit 0: everything agrees; 1: something differs; 2: usage or data error.\n",
          f);
}

struct replay {
    FILE *out, *err;
    const char *dir, *cand_path, *orig_path;
    struct mr_sm_options smo;
    struct mr_store *store;
    struct mr_store_recovered rec;
    int lock_fd;
    unsigned char *snap;
    size_t snap_len;
    struct mr_node_snap_parts parts;
    struct mr_node_sections sec;
    char *cand_src, *orig_src;
    size_t cand_len, orig_len;
    struct side log, cand;
    struct mr_idem idem;
    int has_idem;
    uint64_t last_time_ms;
    /* results */
    uint64_t commands, skipped, differ, events_differ, unknown, switches;
    mr_index first_diff;
    char first_log[SHOW_BYTES + 64], first_cand[SHOW_BYTES + 64];
    int cand_refused;
};

static int load_snapshot(struct replay *r)
{
    struct mr_store_snap_reader *rd;
    char errmsg[MR_ERRMSG_SIZE] = "";
    uint64_t off = 0;
    int rv = mr_store_snap_reader_open(r->store, &rd, errmsg);
    if (rv != 0) {
        fprintf(r->err, "moonraft replay: snapshot: %s\n", errmsg);
        return -1;
    }
    const struct mr_store_snap_info *info = mr_store_snap_reader_info(rd);
    if (info->size > (uint64_t)SIZE_MAX / 2 || (r->snap = mr_malloc(info->size + 1)) == NULL) {
        mr_store_snap_reader_close(rd);
        fprintf(r->err, "moonraft replay: snapshot too large\n");
        return -1;
    }
    while (off < info->size) {
        ssize_t got = mr_store_snap_reader_read(rd, off, r->snap + off, info->size - off);
        if (got <= 0) {
            mr_store_snap_reader_close(rd);
            fprintf(r->err, "moonraft replay: snapshot: read failed\n");
            return -1;
        }
        off += (uint64_t)got;
    }
    r->snap_len = info->size;
    mr_store_snap_reader_close(rd);
    if (mr_node_snap_parts_parse(r->snap, r->snap_len, &r->parts, errmsg) != 0 ||
        mr_node_sections_parse(r->parts.sections, r->parts.sections_len, &r->sec, errmsg) != 0) {
        fprintf(r->err, "moonraft replay: snapshot %llu: %s\n",
                (unsigned long long)r->rec.snap_index, errmsg);
        return -1;
    }
    r->last_time_ms = r->parts.last_time_ms;
    return 0;
}

/* Opens both state machines at the snapshot's state (or empty). */
static int open_sides(struct replay *r)
{
    char errmsg[MR_ERRMSG_SIZE] = "";
    const char *src = r->orig_src, *label = base_name(r->orig_path);
    size_t len = r->orig_len, label_len = strlen(label);
    mr_index since = 0;
    struct mr_sm_options o = r->smo;
    int rv;
    if (r->sec.has_script) {
        src = r->sec.script_src;
        len = r->sec.script_len;
        label = r->sec.script_label;
        label_len = r->sec.script_label_len;
        since = r->sec.script_index;
    } else if (src == NULL) {
        fprintf(r->err, "moonraft replay: %s: give --original (the script the log started "
                        "with): %s\n",
                r->dir, r->orig_path);
        return -1;
    }
    /* mr_sm_open wants a NUL-terminated source: the snapshot buffer is not */
    char *copy = mr_malloc(len + 1);
    char *lb = mr_malloc(label_len + 1);
    if (copy == NULL || lb == NULL) {
        mr_free(copy);
        mr_free(lb);
        return -1;
    }
    memcpy(copy, src, len);
    copy[len] = '\0';
    memcpy(lb, label, label_len);
    lb[label_len] = '\0';
    o.script_source = copy;
    o.script_name = lb[0] ? lb : "script.lua";
    rv = mr_sm_open(&r->log.sm, &o, errmsg);
    if (rv == 0) rv = mr_sm_open(&r->cand.sm, &o, errmsg);
    if (rv != 0) {
        fprintf(r->err, "moonraft replay: the log's script does not load: %s\n", errmsg);
        goto out;
    }
    if (r->rec.has_snapshot) {
        rv = mr_sm_restore_script(r->log.sm, copy, len, lb, label_len, since,
                                  r->parts.payload, r->parts.payload_len, errmsg);
        if (rv == 0)
            rv = mr_sm_restore_script(r->cand.sm, copy, len, lb, label_len, since,
                                      r->parts.payload, r->parts.payload_len, errmsg);
        if (rv != 0) {
            fprintf(r->err, "moonraft replay: the log's script cannot restore snapshot %llu: %s\n",
                    (unsigned long long)r->rec.snap_index, errmsg);
            goto out;
        }
    }
    /* The candidate takes the state over as a deploy at the snapshot would. */
    {
        struct mr_sm_ctx ctx = {.index = r->rec.snap_index,
                                .term = r->rec.snap_term,
                                .time_ms = (int64_t)r->last_time_ms};
        const char *cl = base_name(r->cand_path);
        rv = mr_sm_deploy(r->cand.sm, &ctx, r->cand_src, r->cand_len, cl, strlen(cl), errmsg);
        if (rv != 0) {
            fprintf(r->out, "the candidate cannot take over the state at index %llu: %s\n",
                    (unsigned long long)r->rec.snap_index, errmsg);
            r->cand_refused = 1;
            rv = 0;
        }
    }
out:
    mr_free(copy);
    mr_free(lb);
    return rv == 0 ? 0 : -1;
}

/* One command entry. Returns 0, or -1 when the host failed (out of memory). */
static int replay_command(struct replay *r, const struct mr_raft_entry *e)
{
    struct mr_node_entry ne;
    struct mr_sm_result a, b;
    struct mr_sm_ctx ctx;
    int rv;
    if (mr_node_entry_decode(e->data->data, e->data->len, &ne) != 0) {
        fprintf(r->out, "index %llu: malformed command entry (both sides skip it)\n",
                (unsigned long long)e->index);
        return 0;
    }
    if (ne.key_len > 0 && mr_idem_get(&r->idem, ne.key, ne.key_len) != NULL) {
        r->skipped++;
        return 0;
    }
    if (ne.time_ms > r->last_time_ms) r->last_time_ms = ne.time_ms;
    memset(&ctx, 0, sizeof ctx);
    ctx.index = e->index;
    ctx.term = e->term;
    ctx.time_ms = (int64_t)r->last_time_ms;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    rv = mr_sm_apply(r->log.sm, &ctx, ne.cmd, ne.cmd_len, &a);
    if (rv == 0) rv = mr_sm_apply(r->cand.sm, &ctx, ne.cmd, ne.cmd_len, &b);
    if (rv != 0) {
        mr_sm_result_free(&a);
        fprintf(r->err, "moonraft replay: out of memory at index %llu\n",
                (unsigned long long)e->index);
        return -1;
    }
    r->commands++;
    note_error(&r->log, e->index, &a);
    note_error(&r->cand, e->index, &b);
    {
        int same_result = a.status == b.status &&
                          (a.status == MR_SM_OK
                               ? same_text(a.json, a.json_len, b.json, b.json_len)
                               : same_text(a.error, a.error ? strlen(a.error) : 0, b.error,
                                           b.error ? strlen(b.error) : 0));
        int same_events = same_text(a.events, a.events_len, b.events, b.events_len);
        if (!same_result || !same_events) {
            char da[SHOW_BYTES + 64], db[SHOW_BYTES + 64];
            describe(&a, da, sizeof da);
            describe(&b, db, sizeof db);
            if (r->differ++ == 0) {
                r->first_diff = e->index;
                memcpy(r->first_log, da, sizeof da);
                memcpy(r->first_cand, db, sizeof db);
            }
            if (!same_events) r->events_differ++;
            if (r->differ <= MAX_DIFF_LINES)
                fprintf(r->out, "index %llu: %s differ: log %s | candidate %s\n",
                        (unsigned long long)e->index,
                        !same_result && !same_events ? "result and events"
                        : !same_result               ? "results"
                                                     : "events",
                        da, db);
            else if (r->differ == MAX_DIFF_LINES + 1)
                fprintf(r->out, "... (further differences are counted, not listed)\n");
        }
    }
    if (ne.key_len > 0) {
        const char *text = a.status == MR_SM_OK ? a.json : a.error;
        size_t len = text ? strlen(text) : 0;
        if (mr_idem_put(&r->idem, ne.key, ne.key_len, e->index, a.status, text ? text : "",
                        len) == MR_ENOMEM)
            rv = -1;
    }
    mr_sm_result_free(&a);
    mr_sm_result_free(&b);
    return rv;
}

static void replay_script(struct replay *r, const struct mr_raft_entry *e)
{
    struct mr_node_script_entry se;
    struct mr_sm_ctx ctx;
    char errmsg[MR_ERRMSG_SIZE] = "";
    if (mr_node_script_entry_decode(e->data->data, e->data->len, &se) != 0) {
        fprintf(r->out, "index %llu: malformed script entry (skipped)\n",
                (unsigned long long)e->index);
        return;
    }
    memset(&ctx, 0, sizeof ctx);
    ctx.index = e->index;
    ctx.term = e->term;
    ctx.time_ms = (int64_t)r->last_time_ms;
    if (mr_sm_deploy(r->log.sm, &ctx, se.src, se.src_len, se.label, se.label_len, errmsg) == 0) {
        struct mr_sm_script_info si;
        mr_sm_script_info(r->log.sm, &si);
        r->switches++;
        fprintf(r->out, "index %llu: the log switches to script %.*s (%s); the candidate keeps "
                        "running\n",
                (unsigned long long)e->index, (int)se.label_len, se.label, si.hash);
    } else {
        fprintf(r->out, "index %llu: the log's deploy of %.*s was refused there (%s)\n",
                (unsigned long long)e->index, (int)se.label_len, se.label, errmsg);
    }
}

static int run(struct replay *r)
{
    char errmsg[MR_ERRMSG_SIZE] = "";
    size_t i;
    int rv;
    if (mr_idem_init(&r->idem, 100000) != 0) return 2;
    r->has_idem = 1;
    if (r->rec.has_snapshot) {
        size_t used;
        if (load_snapshot(r) != 0) return 2;
        if (mr_idem_decode(&r->idem, r->parts.idem, r->parts.idem_len, &used) != 0) {
            fprintf(r->err, "moonraft replay: snapshot: bad idempotency table\n");
            return 2;
        }
    }
    if (open_sides(r) != 0) return 2;
    {
        struct mr_sm_script_info si, ci;
        mr_sm_script_info(r->log.sm, &si);
        mr_sm_script_info(r->cand.sm, &ci);
        if (r->rec.has_snapshot)
            fprintf(r->out, "snapshot at index %llu (script %s, %s%s)\n",
                    (unsigned long long)r->rec.snap_index, si.label, si.hash,
                    r->sec.has_script ? "" : ", from --original");
        else
            fprintf(r->out, "no snapshot: the log starts with %s (%s)\n", r->orig_path, si.hash);
        fprintf(r->out, "log entries %llu..%llu; candidate %s (%s)\n",
                (unsigned long long)r->rec.first_index, (unsigned long long)r->rec.last_index,
                r->cand_path, ci.hash);
    }
    for (i = 0; i < r->rec.n_entries; i++) {
        const struct mr_raft_entry *e = &r->rec.entries[i];
        if (e->type == MR_RAFT_ENTRY_NORMAL && e->data != NULL && e->data->len >= 2 &&
            e->data->data[0] == 1) {
            switch (e->data->data[1]) {
            case MR_NODE_ENTRY_COMMAND:
                if (replay_command(r, e) != 0) return 2;
                break;
            case MR_NODE_ENTRY_SCRIPT:
                replay_script(r, e);
                break;
            case MR_NODE_ENTRY_CHECK:
                break;
            default:
                if (r->unknown++ == 0)
                    fprintf(r->out, "index %llu: entry kind %u is not known to this build "
                                    "(skipped, as are later ones)\n",
                            (unsigned long long)e->index, e->data->data[1]);
                break;
            }
        }
        mr_idem_expire(&r->idem, e->index);
    }
    {
        char hl[65] = "", hc[65] = "";
        int hashes_ok;
        rv = mr_sm_state_hash(r->log.sm, hl, errmsg);
        if (rv != 0) snprintf(hl, sizeof hl, "(error)");
        rv = mr_sm_state_hash(r->cand.sm, hc, errmsg);
        if (rv != 0) snprintf(hc, sizeof hc, "(error)");
        hashes_ok = strcmp(hl, hc) == 0 && strcmp(hl, "(error)") != 0;
        fprintf(r->out, "commands: %llu replayed, %llu retries skipped (idempotency keys)",
                (unsigned long long)r->commands, (unsigned long long)r->skipped);
        if (r->switches) fprintf(r->out, ", %llu script switches", (unsigned long long)r->switches);
        if (r->unknown) fprintf(r->out, ", %llu entries of unknown kinds skipped",
                                (unsigned long long)r->unknown);
        fprintf(r->out, "\ndiffering commands: %llu (%llu with different events)\n",
                (unsigned long long)r->differ, (unsigned long long)r->events_differ);
        if (r->differ > 0)
            fprintf(r->out, "first difference at index %llu:\n  log:       %s\n  candidate: %s\n",
                    (unsigned long long)r->first_diff, r->first_log, r->first_cand);
        fprintf(r->out, "errors raised: log %llu", (unsigned long long)r->log.errors);
        if (r->log.errors)
            fprintf(r->out, " (first at index %llu: %s)",
                    (unsigned long long)r->log.first_error_index, r->log.first_error);
        fprintf(r->out, ", candidate %llu", (unsigned long long)r->cand.errors);
        if (r->cand.errors)
            fprintf(r->out, " (first at index %llu: %s)",
                    (unsigned long long)r->cand.first_error_index, r->cand.first_error);
        fprintf(r->out, "\nfinal state hash: log %s, candidate %s (%s)\n", hl, hc,
                hashes_ok ? "same" : "DIFFERENT");
        if (r->differ == 0 && hashes_ok && !r->cand_refused) {
            fprintf(r->out, "agree: every result, event and the final state are the same\n");
            return 0;
        }
        fprintf(r->out, "differ: the candidate changes what the cluster computes\n");
        return 1;
    }
}

int mr_node_replay_main(int argc, char **argv, FILE *out, FILE *err)
{
    struct replay r;
    struct mr_store_options so;
    struct stat sb;
    char errmsg[MR_ERRMSG_SIZE] = "";
    int i, rv, code;
    memset(&r, 0, sizeof r);
    r.out = out;
    r.err = err;
    r.lock_fd = -1;
    r.log.what = "log";
    r.cand.what = "candidate";
    r.orig_path = NULL; /* the built-in kv.lua */
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(out);
            return 0;
        } else if (strcmp(a, "--script") == 0 && i + 1 < argc) {
            r.cand_path = argv[++i];
        } else if (strcmp(a, "--original") == 0 && i + 1 < argc) {
            r.orig_path = argv[++i];
        } else if (strcmp(a, "--instruction-budget") == 0 && i + 1 < argc) {
            r.smo.instruction_budget = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(a, "--memory-mb") == 0 && i + 1 < argc) {
            r.smo.memory_limit_bytes = strtoull(argv[++i], NULL, 10) << 20;
        } else if (a[0] != '-' && r.dir == NULL) {
            r.dir = a;
        } else {
            usage(err);
            return 2;
        }
    }
    if (r.dir == NULL || r.cand_path == NULL) {
        usage(err);
        return 2;
    }
    if (stat(r.dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        fprintf(err, "moonraft replay: %s is not a data directory\n", r.dir);
        return 2;
    }
    /* A running node appends to (and compacts) what we read: refuse it. */
    rv = mr_store_lock(r.dir, &r.lock_fd, errmsg);
    if (rv != 0) {
        fprintf(err, "moonraft replay: %s%s\n", errmsg,
                rv == MR_EBUSY ? ": stop the node first, or replay a copy of its directory" : "");
        return 2;
    }
    code = 2;
    if (read_whole(r.cand_path, &r.cand_src, &r.cand_len, err) != 0) goto out;
    {
        /* --original is optional when the snapshot records its script */
        FILE *f = r.orig_path != NULL ? fopen(r.orig_path, "rb") : NULL;
        if (r.orig_path == NULL) {
            size_t len;
            const char *src = mr_util_lua_embedded("kv.lua", &len);
            r.orig_path = "kv.lua";
            if ((r.orig_src = mr_malloc(len + 1)) == NULL) {
                fprintf(err, "moonraft replay: out of memory\n");
                goto out;
            }
            memcpy(r.orig_src, src, len + 1);
            r.orig_len = len;
        } else if (f != NULL) {
            fclose(f);
            if (read_whole(r.orig_path, &r.orig_src, &r.orig_len, err) != 0) goto out;
        }
    }
    memset(&so, 0, sizeof so);
    so.data_dir = r.dir;
    so.is_read_only = 1;
    rv = mr_store_open(&r.store, &so, &r.rec, errmsg);
    if (rv != 0) {
        fprintf(err, "moonraft replay: %s: %s\n", r.dir, errmsg[0] ? errmsg : mr_strerror(rv));
        goto out;
    }
    code = run(&r);
out:
    mr_sm_close(r.log.sm);
    mr_sm_close(r.cand.sm);
    if (r.has_idem) mr_idem_close(&r.idem);
    mr_free(r.snap);
    mr_free(r.cand_src);
    mr_free(r.orig_src);
    mr_store_recovered_release(&r.rec);
    mr_store_close(r.store);
    mr_store_unlock(r.lock_fd);
    fflush(out);
    return code;
}
