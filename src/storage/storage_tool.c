/* storage: `moonraft data verify|dump DIR`, read-only inspection, and the
 * test-only `moonraft data powercut DIR IMAGE`. */
#include "storage/storage_int.h"

#include <inttypes.h>
#include <string.h>

#define PREVIEW_BYTES 48

static const char *type_name(uint8_t t)
{
    switch (t) {
    case MR_RAFT_ENTRY_NORMAL:
        return "normal";
    case MR_RAFT_ENTRY_NOOP:
        return "noop";
    case MR_RAFT_ENTRY_CONFIG:
        return "config";
    default:
        return "other";
    }
}

static int dump_cb(void *arg, const struct mr_store_rec *r)
{
    FILE *out = arg;
    uint32_t i, n = r->len < PREVIEW_BYTES ? r->len : PREVIEW_BYTES;
    fprintf(out, "%" PRIu64 "\t%" PRIu64 "\t%s\t%u\t", r->index, r->term,
            type_name(r->type), r->len);
    for (i = 0; i < n; i++) {
        unsigned char c = r->data[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            fputc(c, out);
        else
            fprintf(out, "\\x%02x", c);
    }
    if (n < r->len) fputs("...", out);
    fputc('\n', out);
    return 0;
}

static void usage(FILE *err)
{
    fputs("usage: moonraft data verify DIR\n"
          "       moonraft data dump DIR\n"
          "       moonraft data powercut DIR IMAGE   (tests: see docs/chaos.md)\n",
          err);
}

int mr_store_tool_main(int argc, char **argv, FILE *out, FILE *err)
{
    struct mr_store_recovery rs;
    struct mr_store_recovered rec;
    char errmsg[MR_ERRMSG_SIZE] = "";
    int is_dump, rv;
    size_t i;

    if (argc == 3 && argv[0] != NULL && strcmp(argv[0], "powercut") == 0) {
        rv = mr_store_powerloss_cut(argv[1], argv[2], errmsg);
        if (rv != 0) {
            fprintf(err, "error: %s\n", errmsg);
            return 1;
        }
        fprintf(out, "power cut: %s is now its durable image\n", argv[1]);
        return 0;
    }
    if (argc != 2 || argv[0] == NULL || argv[1] == NULL) {
        usage(err);
        return 2;
    }
    if (strcmp(argv[0], "verify") == 0) {
        is_dump = 0;
    } else if (strcmp(argv[0], "dump") == 0) {
        is_dump = 1;
    } else {
        usage(err);
        return 2;
    }
    if (is_dump) fputs("index\tterm\ttype\tsize\tpayload\n", out);
    rv = mr_store__recover(argv[1], mr_store_fs_default(), MR_STORE_SEGMENT_SIZE_DEFAULT,
                           1, NULL, 0, is_dump ? dump_cb : NULL, out, &rs, &rec, errmsg);
    if (rv == MR_ECORRUPT) {
        fprintf(err, "corrupt: %s\n", errmsg);
        return 3;
    }
    if (rv != 0) {
        fprintf(err, "error: %s\n", errmsg[0] ? errmsg : mr_strerror(rv));
        return 1;
    }
    if (!is_dump) {
        fprintf(out, "data dir: %s\n", argv[1]);
        fprintf(out,
                "term: %" PRIu64 "\nvote: %" PRIu64 "\nnode id: %" PRIu64
                "\ncluster id: %" PRIu64 "\nlog start: %" PRIu64 "\n",
                rec.term, rec.vote, rec.node_id, rec.cluster_id, rec.log_start);
        if (rec.has_snapshot) {
            const char *base = strrchr(rec.snap_path, '/');
            fprintf(out,
                    "snapshot: index %" PRIu64 " term %" PRIu64 " payload %" PRIu64
                    " bytes membership %zu bytes (snap/%s)\n",
                    rec.snap_index, rec.snap_term, rec.snap_size,
                    rec.snap_conf ? rec.snap_conf->len : 0,
                    base ? base + 1 : rec.snap_path);
        } else {
            fputs("snapshot: none\n", out);
        }
        if (rs.n_segs > 0)
            fprintf(out, "first index: %" PRIu64 "\n", rs.segs[0].first);
        else
            fprintf(out, "first index: %" PRIu64 "\n", rec.last_index + 1);
        fprintf(out, "last index: %" PRIu64 " (term %" PRIu64 ")\n", rec.last_index,
                rec.last_term);
        fprintf(out, "segments: %zu\n", rs.n_segs);
        for (i = 0; i < rs.n_segs; i++) {
            char name[SEG_NAME_LEN + 1];
            mr_store__seg_name(name, rs.segs[i].first);
            fprintf(out,
                    "  wal/%s first %" PRIu64 " last %" PRIu64 " records %" PRIu64
                    " used %" PRIu64 " of %" PRIu64 " bytes\n",
                    name, rs.segs[i].first, rs.segs[i].last, rs.segs[i].n_records,
                    rs.segs[i].end, rs.segs[i].size);
        }
    }
    if (rec.note[0] != '\0') fprintf(is_dump ? err : out, "warning: %s\n", rec.note);
    if (!is_dump) fputs("ok: every checksum verified\n", out);
    mr_store__recovery_free(&rs);
    mr_store_recovered_release(&rec);
    return 0;
}
