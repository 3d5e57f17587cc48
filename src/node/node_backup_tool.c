/* node_backup_tool: the operator commands around backups and disasters
 * (docs/operations.md "Backup and restore", "Recovering from quorum loss"):
 *
 *   moonraft backup [https://]host:port FILE [--token T] [--max-lag N]
 *                   [--tls-ca F] [--tls-cert F] [--tls-key F]
 *   moonraft data restore FILE --data-dir DIR --id ID --peers ID=RAFT/HTTP,...
 *                         --cluster-id NAME
 *   moonraft data recover DIR --force-new-cluster
 *
 * `backup` downloads with the console's blocking HTTP client
 * (mr_console_download: http or https, the same --tls-* options and
 * MOONRAFT_TLS_* variables as `moonraft console`), writing the body to
 * FILE.part as it arrives; it then checks the whole file (storage's
 * mr_store_backup_check) and only then renames it to FILE (and fsyncs its
 * directory). Interrupted (SIGINT, SIGTERM, SIGHUP) or failed, it removes
 * FILE.part: a partial download is never left behind to be mistaken for a
 * backup. */
#include "node/node_int.h"

#include "console/console.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- printing a backup ------------------------------------------------------- */

/* The state hash a node reports at the backup's index: SHA-256 of the
 * script's snapshot() output, which the payload carries. */
static int backup_state_hash(const char *path, const struct mr_store_backup_info *info,
                             char hex[65], char *errmsg)
{
    struct mr_node_snap_parts parts;
    unsigned char *buf;
    size_t got = 0;
    int fd, rv = 0;
    if (info->payload_size > SIZE_MAX / 2) return MR_ENOMEM;
    buf = mr_malloc((size_t)info->payload_size + 1);
    if (buf == NULL) return MR_ENOMEM;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) rv = -errno;
    while (rv == 0 && got < info->payload_size) {
        ssize_t r = pread(fd, buf + got, (size_t)info->payload_size - got,
                          (off_t)(info->payload_off + got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0)
            rv = r < 0 ? -errno : MR_ECORRUPT;
        else
            got += (size_t)r;
    }
    if (fd >= 0) close(fd);
    if (rv == 0)
        rv = mr_node_snap_parts_parse(buf, (size_t)info->payload_size, &parts, errmsg);
    if (rv == 0) mr_sm_sha256_hex(parts.payload, parts.payload_len, hex);
    mr_free(buf);
    return rv;
}

static void print_members(FILE *out, const struct mr_rcbuf *conf)
{
    struct mr_raft_config cfg;
    unsigned i;
    mr_raft_config_init(&cfg);
    if (conf == NULL || mr_raft_config_decode(conf->data, conf->len, &cfg, NULL) != 0) {
        fputs("membership: (undecodable)\n", out);
        return;
    }
    fputs("membership:", out);
    for (i = 0; i < cfg.n; i++) {
        struct mr_node_member m;
        mr_node_member_parse(&m, cfg.servers[i].id, cfg.servers[i].role,
                             cfg.servers[i].context);
        fprintf(out, " %s=%s/%s%s", m.name, m.raft_addr, m.http_addr,
                m.role == MR_RAFT_LEARNER ? "(learner)" : "");
    }
    fputc('\n', out);
    mr_raft_config_close(&cfg);
}

static void print_info(FILE *out, const char *path,
                       const struct mr_store_backup_info *info)
{
    char hex[65], err[MR_ERRMSG_SIZE] = "";
    fprintf(out,
            "index: %" PRIu64 "\nterm: %" PRIu64 "\nsize: %" PRIu64 "\nchecksum: %08x\n",
            info->index, info->term, info->file_size, info->checksum);
    fprintf(out, "cluster: %s\nnode: %s\ncreated_ms: %" PRIu64 "\n", info->cluster_name,
            info->node_name, info->created_ms);
    print_members(out, info->conf);
    if (backup_state_hash(path, info, hex, err) == 0)
        fprintf(out, "state_hash: %s\n", hex);
    else
        fprintf(out, "state_hash: unknown (%s)\n",
                err[0] ? err : "cannot read the payload");
}

/* ---- moonraft backup ------------------------------------------------------------- */

/* Waiting for the node's snapshot can take minutes; the node gives up after
 * 10 (504). The same bound applies to each wait for bytes. */
#define BACKUP_IO_TIMEOUT_MS (11 * 60 * 1000)

struct sink {
    int fd; /* FILE.part */
    uint64_t len;
    int write_errno;
};

static int sink_write(void *data, const char *at, size_t len)
{
    struct sink *k = data;
    while (len > 0) {
        ssize_t w = write(k->fd, at, len);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) {
            k->write_errno = errno;
            return -errno;
        }
        at += w;
        len -= (size_t)w;
        k->len += (uint64_t)w;
    }
    return 0;
}

static void backup_usage(FILE *err)
{
    fputs("usage: moonraft backup [https://]host:port FILE [--token T] [--max-lag N]\n"
          "  Saves an online backup of the node at host:port (any member) to FILE and\n"
          "  prints its index, term, size and checksum. The token (admin) defaults to\n"
          "  $MOONRAFT_ADMIN_TOKEN, then $MOONRAFT_TOKEN. --max-lag N reuses the newest\n"
          "  snapshot if it is at most N entries behind (default 0: take one now).\n"
          "  https://host:port speaks TLS:\n" MR_CONSOLE_TLS_USAGE,
          err);
}

static const char *env_or(const char *v, const char *name)
{
    const char *e;
    if (v != NULL) return v;
    e = getenv(name);
    return e != NULL && e[0] ? e : NULL;
}

/* FILE.part while a download runs, for the signal handler (async-signal-safe:
 * unlink, then the default action, so the exit status still says which
 * signal ended the tool). */
static char part_on_signal[4096];
static volatile sig_atomic_t part_armed;
static const int part_signals[] = {SIGINT, SIGTERM, SIGHUP};
#define N_PART_SIGNALS (sizeof part_signals / sizeof part_signals[0])

static void part_signal_handler(int sig)
{
    if (part_armed) unlink(part_on_signal);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void part_guard(const char *part, struct sigaction old[N_PART_SIGNALS])
{
    struct sigaction sa;
    size_t i;
    snprintf(part_on_signal, sizeof part_on_signal, "%s", part);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = part_signal_handler;
    sigemptyset(&sa.sa_mask);
    for (i = 0; i < N_PART_SIGNALS; i++) sigaddset(&sa.sa_mask, part_signals[i]);
    part_armed = 1;
    for (i = 0; i < N_PART_SIGNALS; i++) sigaction(part_signals[i], &sa, &old[i]);
}

static void part_unguard(const struct sigaction old[N_PART_SIGNALS])
{
    size_t i;
    for (i = 0; i < N_PART_SIGNALS; i++) sigaction(part_signals[i], &old[i], NULL);
    part_armed = 0;
}

/* Makes a rename in `file`'s directory durable. */
static int sync_parent_dir(const char *file)
{
    char dir[4096];
    const char *slash = strrchr(file, '/');
    int fd, rv = 0;
    if (slash == NULL)
        snprintf(dir, sizeof dir, ".");
    else if (slash == file)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - file), file);
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    if (fsync(fd) != 0) rv = -1;
    close(fd);
    return rv;
}

int mr_node_backup_main(int argc, char **argv, FILE *out, FILE *err)
{
    struct sigaction old_sa[N_PART_SIGNALS];
    const char *addr = NULL, *file = NULL, *token = NULL, *lag = NULL;
    const char *headers[2] = {NULL, NULL};
    char path[128], auth[1024], part[4096], errbody[1024], errmsg[MR_ERRMSG_SIZE] = "";
    struct mr_console_tls_files tls = {NULL, NULL, NULL};
    struct sink k;
    struct mr_store_backup_info info;
    int i, rv, status = 0;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if ((strcmp(a, "--token") == 0 || strcmp(a, "--admin-token") == 0) &&
            i + 1 < argc) {
            token = argv[++i];
        } else if (strcmp(a, "--max-lag") == 0 && i + 1 < argc) {
            lag = argv[++i];
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            backup_usage(out);
            return 0;
        } else if (strncmp(a, "--tls-", 6) == 0 &&
                   (rv = mr_console_tls_opt(argc, argv, &i, &tls)) != 0) {
            if (rv < 0) {
                backup_usage(err);
                return 2;
            }
        } else if (a[0] == '-') {
            backup_usage(err);
            return 2;
        } else if (addr == NULL) {
            addr = a;
        } else if (file == NULL) {
            file = a;
        } else {
            backup_usage(err);
            return 2;
        }
    }
    if (addr == NULL || file == NULL ||
        (lag != NULL && (strlen(lag) > 20 || strspn(lag, "0123456789") != strlen(lag)))) {
        backup_usage(err);
        return 2;
    }
    token = env_or(token, "MOONRAFT_ADMIN_TOKEN");
    token = env_or(token, "MOONRAFT_TOKEN");
    mr_console_tls_env(&tls);
    snprintf(path, sizeof path, "/v1/backup%s%s", lag ? "?max_lag=" : "", lag ? lag : "");
    if (token != NULL) {
        if (strpbrk(token, "\r\n") != NULL || strlen(token) > sizeof auth - 32) {
            fputs("moonraft backup: bad token\n", err);
            return 2;
        }
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        headers[0] = auth;
    }
    snprintf(part, sizeof part, "%s.part", file);
    memset(&k, 0, sizeof k);
    part_guard(part, old_sa);
    k.fd = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (k.fd < 0) {
        part_unguard(old_sa);
        fprintf(err, "moonraft backup: %s: %s\n", part, strerror(errno));
        return 1;
    }
    /* The body goes to FILE.part as it arrives (the console's client, so
     * https and its options work as for `moonraft console`). */
    rv = mr_console_download(addr, &tls, path, headers, BACKUP_IO_TIMEOUT_MS, sink_write,
                             &k, &status, errbody, sizeof errbody, errmsg);
    if (rv != 0) {
        if (k.write_errno != 0)
            fprintf(err, "moonraft backup: %s: write: %s\n", part,
                    strerror(k.write_errno));
        else if (k.len > 0)
            fprintf(err, "moonraft backup: %s (after %" PRIu64 " bytes of the backup)\n",
                    errmsg, k.len);
        else
            fprintf(err, "moonraft backup: %s\n", errmsg);
        goto fail;
    }
    if (status != 200) {
        fprintf(err, "moonraft backup: %s answered %d: %s\n", addr, status, errbody);
        goto fail;
    }
    if (fsync(k.fd) != 0 || close(k.fd) != 0) {
        k.fd = -1;
        fprintf(err, "moonraft backup: %s: %s\n", part, strerror(errno));
        goto fail;
    }
    k.fd = -1;
    rv = mr_store_backup_check(part, &info, errmsg);
    if (rv != 0) {
        fprintf(err, "moonraft backup: the received backup is damaged: %s\n", errmsg);
        goto fail;
    }
    if (rename(part, file) != 0) {
        fprintf(err, "moonraft backup: rename to %s: %s\n", file, strerror(errno));
        mr_store_backup_info_release(&info);
        goto fail;
    }
    part_unguard(old_sa);
    if (sync_parent_dir(file) != 0)
        fprintf(err, "moonraft backup: warning: fsync of %s's directory: %s\n", file,
                strerror(errno));
    fprintf(out, "backup: %s\n", file);
    print_info(out, file, &info);
    mr_store_backup_info_release(&info);
    return 0;
fail:
    if (k.fd >= 0) close(k.fd);
    unlink(part);
    part_unguard(old_sa);
    return 1;
}

/* ---- moonraft data restore ----------------------------------------------------------
 */

static void restore_usage(FILE *err)
{
    fputs(
        "usage: moonraft data restore FILE --data-dir DIR --id ID\n"
        "                             --peers ID=RAFT_ADDR/HTTP_ADDR,... --cluster-id "
        "NAME\n"
        "  Seeds DIR (new or empty) from the backup FILE for node ID of a new cluster\n"
        "  whose members are --peers (all voters; include ID). With ID alone the node\n"
        "  starts as a one-member cluster and the others join it (--join); with more,\n"
        "  restore every listed member from the same FILE. The cluster id must be new.\n",
        err);
}

/* Parses "n1=127.0.0.1:7001/127.0.0.1:8001,n2=..." into cfg. */
static int parse_peers(const char *s, struct mr_raft_config *cfg, FILE *err)
{
    char *copy = mr_strdup(s), *save = NULL, *tok;
    int rv = 0;
    if (copy == NULL) return MR_ENOMEM;
    for (tok = strtok_r(copy, ",", &save); tok != NULL && rv == 0;
         tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '='), *slash, ctx[512];
        if (eq == NULL || eq == tok || strlen(tok) > 400) {
            fprintf(err,
                    "moonraft data restore: --peers: bad member \"%s\" (ID=RAFT/HTTP)\n",
                    tok);
            rv = MR_EINVAL;
            break;
        }
        *eq = '\0';
        slash = strchr(eq + 1, '/');
        if (slash != NULL) *slash = '\0';
        if (eq[1] == '\0' || strlen(tok) > MR_NODE_NAME_MAX) {
            fprintf(err,
                    "moonraft data restore: --peers: member %s needs a raft address\n",
                    tok);
            rv = MR_EINVAL;
            break;
        }
        mr_node_member_context(ctx, sizeof ctx, tok, eq + 1, slash ? slash + 1 : NULL, 0);
        rv = mr_raft_config_add(cfg, mr_node_id_from_name(tok), MR_RAFT_VOTER, ctx);
        if (rv == MR_EEXISTS)
            fprintf(err, "moonraft data restore: --peers: %s twice\n", tok);
    }
    mr_free(copy);
    if (rv == 0 && cfg->n == 0) rv = MR_EINVAL;
    return rv;
}

int mr_node_restore_main(int argc, char **argv, FILE *out, FILE *err)
{
    const char *file = NULL, *dir = NULL, *id = NULL, *peers = NULL, *cluster = NULL;
    char errmsg[MR_ERRMSG_SIZE] = "";
    struct mr_raft_config cfg;
    struct mr_store_backup_info info;
    struct mr_rcbuf *conf;
    int i, rv;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--data-dir") == 0 && i + 1 < argc)
            dir = argv[++i];
        else if (strcmp(a, "--id") == 0 && i + 1 < argc)
            id = argv[++i];
        else if (strcmp(a, "--peers") == 0 && i + 1 < argc)
            peers = argv[++i];
        else if (strcmp(a, "--cluster-id") == 0 && i + 1 < argc)
            cluster = argv[++i];
        else if (a[0] != '-' && file == NULL)
            file = a;
        else {
            restore_usage(err);
            return 2;
        }
    }
    if (file == NULL || dir == NULL || id == NULL || peers == NULL || cluster == NULL ||
        cluster[0] == '\0') {
        restore_usage(err);
        return 2;
    }
    mr_raft_config_init(&cfg);
    rv = parse_peers(peers, &cfg, err);
    if (rv == 0 && mr_raft_config_get(&cfg, mr_node_id_from_name(id)) == NULL) {
        fprintf(err, "moonraft data restore: --peers must include this node (%s)\n", id);
        rv = MR_EINVAL;
    }
    if (rv != 0) {
        mr_raft_config_close(&cfg);
        if (rv != MR_ENOMEM) restore_usage(err);
        return 2;
    }
    conf = mr_raft_config_encode(&cfg);
    mr_raft_config_close(&cfg);
    if (conf == NULL) return 1;
    /* Check first (the cluster id test needs the header), restore after. */
    rv = mr_store_backup_check(file, &info, errmsg);
    if (rv == 0 && strcmp(info.cluster_name, cluster) == 0) {
        fprintf(
            err,
            "moonraft data restore: the backup comes from cluster \"%s\": give the new "
            "cluster another --cluster-id, so that its members never talk to the old "
            "one's\n",
            cluster);
        mr_store_backup_info_release(&info);
        mr_rcbuf_unref(conf);
        return 2;
    }
    mr_store_backup_info_release(&info);
    if (rv == 0)
        rv = mr_store_backup_restore(file, dir, mr_node_id_from_name(id),
                                     mr_node_id_from_name(cluster), conf->data, conf->len,
                                     &info, errmsg);
    mr_rcbuf_unref(conf);
    if (rv != 0) {
        fprintf(err, "moonraft data restore: %s\n", errmsg[0] ? errmsg : mr_strerror(rv));
        return rv == MR_ECORRUPT ? 3 : rv == MR_EEXISTS ? 2 : 1;
    }
    fprintf(out, "restored %s into %s for node %s of cluster \"%s\"\n", file, dir, id,
            cluster);
    fprintf(out, "index: %" PRIu64 "\nterm: %" PRIu64 "\nchecksum: %08x\n", info.index,
            info.term, info.checksum);
    fprintf(out, "source: cluster \"%s\", node %s\n", info.cluster_name, info.node_name);
    {
        struct mr_rcbuf *c2 = NULL;
        struct mr_raft_config tmp;
        mr_raft_config_init(&tmp);
        if (parse_peers(peers, &tmp, err) == 0) c2 = mr_raft_config_encode(&tmp);
        mr_raft_config_close(&tmp);
        if (c2 != NULL) print_members(out, c2);
        mr_rcbuf_unref(c2);
    }
    fprintf(out,
            "next: start %s with --data-dir %s --cluster-id %s; start the other members "
            "with empty data dirs and --join (or restore each listed member the same "
            "way)\n",
            id, dir, cluster);
    mr_store_backup_info_release(&info);
    return 0;
}

/* ---- moonraft data recover --force-new-cluster ------------------------------------ */

static void recover_usage(FILE *err)
{
    fputs("usage: moonraft data recover DIR --force-new-cluster\n"
          "  UNSAFE, for a permanent loss of quorum only: rewrites the stopped node's "
          "data\n"
          "  in DIR so that it starts as the only member of its cluster, with its whole\n"
          "  log (committed or not) and state; new members then join it. Writes that\n"
          "  the lost members had and this node never received are gone for good, and\n"
          "  entries this node has that were never committed will now be committed.\n"
          "  See docs/operations.md \"Recovering from quorum loss\".\n",
          err);
}

int mr_node_recover_main(int argc, char **argv, FILE *out, FILE *err)
{
    const char *dir = NULL;
    char errmsg[MR_ERRMSG_SIZE] = "";
    struct mr_store_force_report rep;
    struct mr_node_member self;
    int i, force = 0, rv;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--force-new-cluster") == 0)
            force = 1;
        else if (argv[i][0] != '-' && dir == NULL)
            dir = argv[i];
        else {
            recover_usage(err);
            return 2;
        }
    }
    if (dir == NULL) {
        recover_usage(err);
        return 2;
    }
    if (!force) {
        fputs("moonraft data recover: refusing without --force-new-cluster\n", err);
        recover_usage(err);
        return 2;
    }
    {
        /* Not a data dir, or a running node: say so before the warnings (the
         * store checks both again under its lock). */
        char meta[4096];
        struct stat sb;
        int lock_fd;
        snprintf(meta, sizeof meta, "%s/meta", dir);
        if (stat(meta, &sb) != 0) {
            fprintf(
                err,
                "moonraft data recover: %s is not a moonraft data directory (no meta)\n",
                dir);
            return 1;
        }
        rv = mr_store_lock(dir, &lock_fd, errmsg);
        if (rv != 0) {
            fprintf(err, "moonraft data recover: %s\n",
                    errmsg[0] ? errmsg : mr_strerror(rv));
            return 1;
        }
        mr_store_unlock(lock_fd);
    }
    fprintf(
        err,
        "WARNING: forcing %s into a new one-member cluster. This is unsafe by design:\n"
        "WARNING:  - only do this when a majority of the members is lost for good;\n"
        "WARNING:  - writes this node never received are lost;\n"
        "WARNING:  - entries this node has that were never committed WILL be committed;\n"
        "WARNING:  - the old members must never be started again with their data.\n",
        dir);
    rv = mr_store_force_new_cluster(dir, &rep, errmsg);
    if (rv != 0) {
        fprintf(err, "moonraft data recover: %s\n", errmsg[0] ? errmsg : mr_strerror(rv));
        return rv == MR_ECORRUPT ? 3 : 1;
    }
    mr_node_member_parse(&self, rep.node_id, MR_RAFT_VOTER, rep.self_context);
    fprintf(out, "recovered %s: node %s (raft %s, http %s) is now the only member\n", dir,
            self.name, self.raft_addr, self.http_addr);
    fprintf(out,
            "replaced configuration: index %" PRIu64 ", %u servers (%u voters)\n"
            "log kept: snapshot at %" PRIu64 ", entries up to %" PRIu64 " (term %" PRIu64
            ")\n"
            "new configuration: index %" PRIu64 ", term %" PRIu64 "\n",
            rep.old_config_index, rep.old_servers, rep.old_voters, rep.snap_index,
            rep.last_index, rep.last_term, rep.config_index, rep.new_term);
    if (rep.last_index > rep.snap_index)
        fprintf(
            err,
            "WARNING: entries %" PRIu64 "..%" PRIu64
            " may not all have been committed by the old cluster; they will be now.\n",
            rep.snap_index + 1, rep.last_index);
    fprintf(out,
            "next: start the node as before; add members with empty data dirs and --join "
            "%s\n",
            strcmp(self.http_addr, "-") != 0 && self.http_addr[0] ? self.http_addr
                                                                  : "<its HTTP address>");
    return 0;
}
