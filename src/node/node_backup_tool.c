/* node_backup_tool: the operator commands around backups and disasters
 * (docs/operations.md "Backup and restore", "Recovering from quorum loss"):
 *
 *   moonraft backup host:port FILE [--token T] [--max-lag N]
 *   moonraft data restore FILE --data-dir DIR --id ID --peers ID=RAFT/HTTP,...
 *                         --cluster-id NAME
 *   moonraft data recover DIR --force-new-cluster
 *
 * `backup` is a small blocking HTTP client (http-parser parses the answer)
 * that writes the body to FILE.part, checks the whole file (storage's
 * mr_store_backup_check) and only then renames it to FILE. */
#include "node/node_int.h"

#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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

struct client {
    int fd_out; /* FILE.part */
    int status;
    int is_done;
    int write_error;
    uint64_t body_len;
    char errbody[1024]; /* the start of a non-200 body */
    size_t errlen;
};

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct client *c = p->data;
    c->status = (int)p->status_code;
    if (c->status != 200) {
        size_t n = sizeof c->errbody - 1 - c->errlen;
        if (n > len) n = len;
        memcpy(c->errbody + c->errlen, at, n);
        c->errlen += n;
        c->errbody[c->errlen] = '\0';
        return 0;
    }
    while (len > 0) {
        ssize_t w = write(c->fd_out, at, len);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) {
            c->write_error = errno;
            return -1;
        }
        at += w;
        len -= (size_t)w;
        c->body_len += (uint64_t)w;
    }
    return 0;
}

static int on_complete(http_parser *p)
{
    struct client *c = p->data;
    c->status = (int)p->status_code;
    c->is_done = 1;
    return 0;
}

static int dial(const char *addr, FILE *err)
{
    char host[256], *colon;
    struct addrinfo hints, *res = NULL, *ai;
    int fd = -1, rv;
    snprintf(host, sizeof host, "%s", addr);
    colon = strrchr(host, ':');
    if (colon == NULL) {
        fprintf(err, "moonraft backup: %s: expected host:port\n", addr);
        return -1;
    }
    *colon = '\0';
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    rv = getaddrinfo(host[0] == '[' ? host + 1 : host, colon + 1, &hints, &res);
    if (rv != 0) {
        fprintf(err, "moonraft backup: %s: %s\n", addr, gai_strerror(rv));
        return -1;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        fprintf(err, "moonraft backup: cannot connect to %s: %s\n", addr,
                strerror(errno));
    return fd;
}

static int send_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static void backup_usage(FILE *err)
{
    fputs("usage: moonraft backup host:port FILE [--token T] [--max-lag N]\n"
          "  Saves an online backup of the node at host:port (any member) to FILE and\n"
          "  prints its index, term, size and checksum. The token (admin) defaults to\n"
          "  $MOONRAFT_ADMIN_TOKEN, then $MOONRAFT_TOKEN. --max-lag N reuses the newest\n"
          "  snapshot if it is at most N entries behind (default 0: take one now).\n",
          err);
}

static const char *env_or(const char *v, const char *name)
{
    const char *e;
    if (v != NULL) return v;
    e = getenv(name);
    return e != NULL && e[0] ? e : NULL;
}

int mr_node_backup_main(int argc, char **argv, FILE *out, FILE *err)
{
    const char *addr = NULL, *file = NULL, *token = NULL, *lag = NULL;
    char req[1024], part[4096], buf[65536], errmsg[MR_ERRMSG_SIZE] = "";
    http_parser p;
    http_parser_settings ps;
    struct client c;
    struct mr_store_backup_info info;
    int i, fd, rv;

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
        (lag != NULL && strspn(lag, "0123456789") != strlen(lag))) {
        backup_usage(err);
        return 2;
    }
    token = env_or(token, "MOONRAFT_ADMIN_TOKEN");
    token = env_or(token, "MOONRAFT_TOKEN");
    snprintf(req, sizeof req,
             "GET /v1/backup%s%s HTTP/1.1\r\nHost: %s\r\n%s%s%sConnection: close\r\n\r\n",
             lag ? "?max_lag=" : "", lag ? lag : "", addr,
             token ? "Authorization: Bearer " : "", token ? token : "",
             token ? "\r\n" : "");
    snprintf(part, sizeof part, "%s.part", file);
    memset(&c, 0, sizeof c);
    c.fd_out = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (c.fd_out < 0) {
        fprintf(err, "moonraft backup: %s: %s\n", part, strerror(errno));
        return 1;
    }
    fd = dial(addr, err);
    if (fd < 0 || send_all(fd, req, strlen(req)) != 0) {
        if (fd >= 0) fprintf(err, "moonraft backup: send: %s\n", strerror(errno));
        goto fail;
    }
    http_parser_init(&p, HTTP_RESPONSE);
    p.data = &c;
    http_parser_settings_init(&ps);
    ps.on_body = on_body;
    ps.on_message_complete = on_complete;
    while (!c.is_done) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        size_t used;
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            fprintf(err, "moonraft backup: receive: %s\n", strerror(errno));
            goto fail;
        }
        used = http_parser_execute(&p, &ps, buf, (size_t)n);
        if (c.write_error) {
            fprintf(err, "moonraft backup: %s: write: %s\n", part,
                    strerror(c.write_error));
            goto fail;
        }
        if (HTTP_PARSER_ERRNO(&p) != HPE_OK || used != (size_t)n) {
            fprintf(err, "moonraft backup: bad answer from %s: %s\n", addr,
                    http_errno_description(HTTP_PARSER_ERRNO(&p)));
            goto fail;
        }
        if (n == 0 && !c.is_done) {
            fprintf(err,
                    "moonraft backup: %s closed the connection after %" PRIu64 " bytes\n",
                    addr, c.body_len);
            goto fail;
        }
    }
    close(fd);
    fd = -1;
    if (c.status != 200) {
        fprintf(err, "moonraft backup: %s answered %d: %s\n", addr, c.status, c.errbody);
        goto fail;
    }
    if (fsync(c.fd_out) != 0 || close(c.fd_out) != 0) {
        c.fd_out = -1;
        fprintf(err, "moonraft backup: %s: %s\n", part, strerror(errno));
        goto fail;
    }
    c.fd_out = -1;
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
    fprintf(out, "backup: %s\n", file);
    print_info(out, file, &info);
    mr_store_backup_info_release(&info);
    return 0;
fail:
    if (fd >= 0) close(fd);
    if (c.fd_out >= 0) close(c.fd_out);
    unlink(part);
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
