/* Fork-based snapshots: the child serialises a copy-on-write image of the
 * state while the parent keeps serving (as Redis BGSAVE does). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <sys/resource.h>
#include <unistd.h>

#include <lua.h>

#include "sm/sm_int.h"

/* What the child writes to the pipe: one write, well under PIPE_BUF, so it
 * is atomic and never blocks on an empty pipe. */
struct report {
    int32_t code;
    uint32_t crc32c;
    uint64_t size;
    char hash[65]; /* hash jobs: SHA-256 hex of the payload */
    char msg[MR_ERRMSG_SIZE];
};

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n > (1u << 20) ? (1u << 20) : n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Writes in 8 MiB steps and keeps at most two steps dirty in the page
 * cache: each step's writeback starts at once and the one before is waited
 * for. Written in one go, a large snapshot (1M keys: 130 MB) sits dirty
 * until the final fdatasync, which then floods the disk that the WAL must
 * sync through (on a shared disk, every node's WAL): writes stalled ~80 ms
 * while three nodes snapshotted. Paced, the final sync has little left. */
static int write_paced(int fd, const char *p, size_t n)
{
    const size_t step = (size_t)8 << 20;
    off_t off = lseek(fd, 0, SEEK_CUR), prev = -1;
    size_t prev_len = 0;
    while (n > 0) {
        size_t k = n > step ? step : n;
        int rv = write_all(fd, p, k);
        if (rv != 0) return rv;
        if (off >= 0) {
            (void)sync_file_range(fd, off, (off_t)k, SYNC_FILE_RANGE_WRITE);
            if (prev >= 0)
                (void)sync_file_range(fd, prev, (off_t)prev_len,
                                      SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                          SYNC_FILE_RANGE_WAIT_AFTER);
            prev = off;
            prev_len = k;
            off += (off_t)k;
        }
        p += k;
        n -= k;
    }
    return 0;
}

/* Closes every descriptor from 3 up except the two the child needs, so that
 * a long-running child does not keep the node's listening sockets, peer
 * connections or WAL files open after the parent has gone. */
static void close_other_fds(int a, int b)
{
    if (a > b) {
        int t = a;
        a = b;
        b = t;
    }
    unsigned lo = 3;
    int keep[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        if (keep[i] < (int)lo) continue;
        if ((unsigned)keep[i] > lo) close_range(lo, (unsigned)keep[i] - 1, 0);
        lo = (unsigned)keep[i] + 1;
    }
    close_range(lo, ~0u, 0);
}

static void child_main(struct mr_sm *sm, int fd, int is_hash, int pipefd)
{
    struct report r;
    const char *data;
    size_t len;
    memset(&r, 0, sizeof r);
    /* A signal meant for the node (SIGTERM, SIGINT) must just end the child:
     * the parent's handlers would write into the parent's event loop pipe. */
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    close_other_fds(is_hash || fd < 0 ? pipefd : fd, pipefd);
    /* A background job: on a busy machine the event loops (the parent's and
     * the other nodes') come first, so a snapshot costs the clients less
     * latency; it takes longer instead, which only delays compaction. */
    (void)setpriority(PRIO_PROCESS, 0, MR_SM_SNAPSHOT_NICE);
    struct mr_sm_vm *vm = mr_sm_vm_get(sm);
    int rv = mr_sm_vm_snapshot(vm, &data, &len, r.msg);
    if (rv == 0 && is_hash) {
        /* A hash job (integrity check): nothing to write. */
        r.size = len;
        mr_sm_sha256_hex(data, len, r.hash);
    } else if (rv == 0) {
        r.size = len;
        r.crc32c = mr_crc32c(0, data, len);
        int w = write_paced(fd, data, len);
        if (w == 0 && fdatasync(fd) != 0) w = -errno;
        if (w != 0) {
            rv = MR_EIOERR;
            mr_errmsg_printf(r.msg, "writing the snapshot: %s", strerror(-w));
        }
    }
    r.code = rv;
    (void)!write(pipefd, &r, sizeof r);
    _exit(rv == 0 ? 0 : 1);
}

/* What a trial deploy child runs (mr_sm_deploy_fork). */
struct trial {
    const struct mr_sm_ctx *ctx;
    const char *src;
    size_t len;
    const char *label;
    size_t label_len;
};

static void trial_main(struct mr_sm *sm, const struct trial *t, int pipefd)
{
    struct report r;
    memset(&r, 0, sizeof r);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    close_other_fds(pipefd, pipefd);
    (void)setpriority(PRIO_PROCESS, 0, MR_SM_SNAPSHOT_NICE);
    r.code = mr_sm_deploy(sm, t->ctx, t->src, t->len, t->label, t->label_len, r.msg);
    (void)!write(pipefd, &r, sizeof r);
    _exit(r.code == 0 ? 0 : 1);
}

static int start_job(struct mr_sm *sm, int fd, int is_hash, const struct trial *trial,
                     struct mr_sm_snapjob *job, char *errmsg)
{
    int p[2];
    memset(job, 0, sizeof *job);
    job->pipefd = -1;
    if (pipe2(p, O_CLOEXEC) != 0) {
        int e = errno;
        mr_errmsg_printf(errmsg, "snapshot: pipe: %s", strerror(e));
        return -e;
    }
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(p[0]);
        close(p[1]);
        mr_errmsg_printf(errmsg, "snapshot: fork: %s", strerror(e));
        return -e;
    }
    if (pid == 0) {
        close(p[0]);
        if (trial != NULL) trial_main(sm, trial, p[1]);
        child_main(sm, fd, is_hash, p[1]);
    }
    close(p[1]);
    job->pid = pid;
    job->pipefd = p[0];
    return 0;
}

int mr_sm_snapshot_fork(struct mr_sm *sm, int fd, struct mr_sm_snapjob *job, char *errmsg)
{
    return start_job(sm, fd, 0, NULL, job, errmsg);
}

int mr_sm_hash_fork(struct mr_sm *sm, struct mr_sm_snapjob *job, char *errmsg)
{
    return start_job(sm, -1, 1, NULL, job, errmsg);
}

int mr_sm_deploy_fork(struct mr_sm *sm, const struct mr_sm_ctx *ctx, const char *src,
                      size_t len, const char *label, size_t label_len,
                      struct mr_sm_snapjob *job, char *errmsg)
{
    struct trial t = {ctx, src, len, label, label_len};
    return start_job(sm, -1, 0, &t, job, errmsg);
}

static void finish(struct mr_sm_snapjob *job)
{
    if (job->pipefd >= 0) close(job->pipefd);
    job->pipefd = -1;
    job->pid = 0;
}

int mr_sm_snapshot_poll(struct mr_sm_snapjob *job, int wait, char *errmsg)
{
    int status;
    pid_t w;
    if (job->pid <= 0) {
        mr_errmsg_printf(errmsg, "snapshot: no job running");
        return MR_EINVAL;
    }
    do {
        w = waitpid(job->pid, &status, wait ? 0 : WNOHANG);
    } while (w < 0 && errno == EINTR);
    if (w == 0) return MR_EBUSY;
    if (w < 0) {
        int e = errno;
        mr_errmsg_printf(errmsg, "snapshot: waitpid: %s", strerror(e));
        finish(job);
        return -e;
    }
    struct report r;
    ssize_t n;
    do {
        n = read(job->pipefd, &r, sizeof r);
    } while (n < 0 && errno == EINTR);
    finish(job);
    if (WIFSIGNALED(status)) {
        mr_errmsg_printf(errmsg, "snapshot: child killed by signal %d", WTERMSIG(status));
        return MR_ECANCELED;
    }
    if (n != (ssize_t)sizeof r) {
        mr_errmsg_printf(errmsg, "snapshot: child exited with status %d without a report",
                         WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        return MR_EIOERR;
    }
    r.msg[sizeof r.msg - 1] = '\0';
    if (r.code != 0) {
        mr_errmsg_printf(errmsg, "%s", r.msg);
        return r.code;
    }
    job->size = r.size;
    job->crc32c = r.crc32c;
    r.hash[sizeof r.hash - 1] = '\0';
    memcpy(job->hash, r.hash, sizeof job->hash);
    return 0;
}

void mr_sm_snapshot_abort(struct mr_sm_snapjob *job)
{
    if (job == NULL || job->pid <= 0) return;
    kill(job->pid, SIGKILL);
    while (waitpid(job->pid, NULL, 0) < 0 && errno == EINTR) {
    }
    finish(job);
}
