/* storage: `moonraft data recover DIR --force-new-cluster` (storage.h).
 *
 * Why a configuration entry at the end of the log, not a new snapshot: the
 * node keeps every entry it has, committed or not, exactly as they are (a
 * snapshot would need the state machine to apply the uncommitted tail, and
 * storage does not run Lua), and the Raft core already treats the last
 * CONFIG entry of the log as the configuration in force, whether committed
 * or not (thesis 4.1). Writing it in a term above every term the node has
 * seen keeps the log's terms increasing and makes any entry still held by a
 * lost member lose against this log if that member ever came back (it must
 * not: its data has to be wiped, docs/operations.md). */
#include "storage/storage_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

int mr_store_force_new_cluster(const char *dir, struct mr_store_force_report *rep,
                               char *errmsg)
{
    struct mr_store_options so;
    struct mr_store_recovered rec;
    struct mr_store *st = NULL;
    struct mr_raft_config old, neu;
    const struct mr_raft_server *self;
    const struct mr_rcbuf *conf = NULL;
    struct mr_raft_entry e = {.term = 0};
    struct mr_store_progress p;
    struct stat sb;
    uint64_t seq = 0;
    char *meta;
    size_t i;
    int rv;

    memset(rep, 0, sizeof *rep);
    mr_raft_config_init(&old);
    mr_raft_config_init(&neu);
    memset(&rec, 0, sizeof rec);
    memset(&e, 0, sizeof e);
    meta = mr_store__join(dir, META_NAME);
    if (meta == NULL) return MR_ENOMEM;
    rv = stat(meta, &sb) == 0 ? 0 : (errno == ENOENT ? MR_ENOTFOUND : -errno);
    mr_free(meta);
    if (rv != 0) {
        mr_errmsg_printf(errmsg, "%s is not a moonraft data directory (no meta)", dir);
        return rv;
    }
    memset(&so, 0, sizeof so);
    so.data_dir = dir;
    rv = mr_store_open(&st, &so, &rec, errmsg);
    if (rv != 0) return rv;
    rep->node_id = rec.node_id;
    rep->snap_index = rec.has_snapshot ? rec.snap_index : 0;
    rep->last_index = rec.last_index;
    rep->last_term = rec.last_term;
    rep->old_term = rec.term;
    for (i = rec.n_entries; i > 0; i--) {
        if (rec.entries[i - 1].type == MR_RAFT_ENTRY_CONFIG) {
            conf = rec.entries[i - 1].data;
            rep->old_config_index = rec.entries[i - 1].index;
            break;
        }
    }
    if (conf == NULL && rec.has_snapshot) {
        conf = rec.snap_conf;
        rep->old_config_index = rec.snap_index;
    }
    if (conf == NULL) {
        rv = MR_ENOTFOUND;
        mr_errmsg_printf(errmsg, "%s holds no configuration (a node that never joined)",
                         dir);
        goto out;
    }
    rv = mr_raft_config_decode(conf->data, conf->len, &old, errmsg);
    if (rv != 0) {
        mr_errmsg_wrapf(errmsg, "configuration at index %llu",
                        (unsigned long long)rep->old_config_index);
        if (rv == MR_EMALFORMED) rv = MR_ECORRUPT;
        goto out;
    }
    rep->old_servers = old.n;
    rep->old_voters = mr_raft_config_voters(&old);
    self = mr_raft_config_get(&old, rec.node_id);
    if (self == NULL) {
        rv = MR_ENOTFOUND;
        mr_errmsg_printf(
            errmsg,
            "this node (id %016llx) is not in its latest configuration (index "
            "%llu): it was removed, recover another member",
            (unsigned long long)rec.node_id, (unsigned long long)rep->old_config_index);
        goto out;
    }
    snprintf(rep->self_context, sizeof rep->self_context, "%s",
             self->context ? self->context : "");
    rv = mr_raft_config_add(&neu, self->id, MR_RAFT_VOTER, self->context);
    if (rv != 0) goto out;
    rep->new_term = (rec.term > rec.last_term ? rec.term : rec.last_term) + 1;
    rep->config_index = rec.last_index + 1;
    e.term = rep->new_term;
    e.index = rep->config_index;
    e.type = MR_RAFT_ENTRY_CONFIG;
    e.data = mr_raft_config_encode(&neu);
    if (e.data == NULL) {
        rv = MR_ENOMEM;
        goto out;
    }
    /* raft.h rule 1: the term is durable before any entry of that term. */
    rv = mr_store_save_hard_state(st, rep->new_term, 0, NULL);
    if (rv == 0) rv = mr_store_append(st, &e, 1, &seq);
    while (rv == 0) {
        rv = mr_store_poll(st, &p);
        if (rv != 0) {
            mr_errmsg_printf(errmsg, "%s", p.errmsg);
            break;
        }
        if (p.done_seq >= seq) break;
        {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    if (rv != 0 && errmsg[0] == '\0') mr_errmsg_printf(errmsg, "%s", mr_strerror(rv));
out:
    mr_rcbuf_unref(e.data);
    mr_raft_config_close(&old);
    mr_raft_config_close(&neu);
    mr_store_recovered_release(&rec);
    mr_store_close(st);
    return rv;
}
