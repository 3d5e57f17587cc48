/* bench_floor: the physical floor of one replicated write on this machine.
 *
 *   build/bench/bench_floor DIR [SECONDS]
 *
 * Measures, each for SECONDS (default 2):
 *   fdatasync   pwrite of one 4 KiB block + fdatasync, in a loop, on a file in
 *               DIR (put DIR on the disk the nodes use): rate and p50/p99
 *   loopback    a 1-byte TCP ping-pong over 127.0.0.1 (TCP_NODELAY) between
 *               two threads: round trips per second and p50/p99
 *   shared3     three threads, each with its own file in DIR, each round all
 *               three pwrite + fdatasync at once (what the three nodes of a
 *               cluster on one disk do for one write): the time until the
 *               second of them is durable (a majority), p50/p99
 * and prints one JSON object on stdout:
 *   {"fdatasync_per_s":..,"fdatasync_p50_us":..,"fdatasync_p99_us":..,
 *    "loopback_rtt_p50_us":..,"loopback_rtt_p99_us":..,"loopback_rtt_per_s":..,
 *    "shared3_majority_p50_us":..,"shared3_majority_p99_us":..}
 * The floor for one write acknowledged by a majority is one fdatasync plus one
 * round trip (the leader's own sync runs in parallel with the follower's)
 * when each node has its own disk; with all nodes on one disk the syncs queue
 * behind each other, and shared3 shows what a majority of them then takes.
 * Not a test: numbers depend on the machine. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES 2000000

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

static long long pct(long long *s, size_t n, double p)
{
    size_t i;
    if (n == 0) return -1;
    i = (size_t)(p * (double)(n - 1));
    return s[i];
}

static long long *samples;

static void measure_fsync(const char *dir, double secs, double *rate, long long *p50,
                          long long *p99)
{
    char path[512];
    unsigned char block[4096];
    size_t n = 0;
    long long t0, t, a;
    int fd;
    snprintf(path, sizeof path, "%s/floor-fsync.bin", dir);
    memset(block, 0x5a, sizeof block);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || posix_fallocate(fd, 0, 1 << 20) != 0 || fdatasync(fd) != 0) {
        perror("bench_floor: fsync file");
        exit(1);
    }
    t0 = now_ns();
    do {
        a = now_ns();
        if (pwrite(fd, block, sizeof block, 0) != (ssize_t)sizeof block || fdatasync(fd) != 0) {
            perror("bench_floor: write");
            exit(1);
        }
        t = now_ns();
        if (n < MAX_SAMPLES) samples[n++] = t - a;
    } while ((double)(t - t0) < secs * 1e9);
    close(fd);
    unlink(path);
    *rate = (double)n / ((double)(t - t0) / 1e9);
    qsort(samples, n, sizeof samples[0], cmp_ll);
    *p50 = pct(samples, n, 0.50) / 1000;
    *p99 = pct(samples, n, 0.99) / 1000;
}

/* ---- shared3: three concurrent syncs on one disk ---------------------------- */
struct shared3 {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int round, done, stop;
    long long start, second; /* ns: this round's start, its 2nd completion */
};

struct syncer {
    struct shared3 *s;
    int fd;
};

static void *syncer_main(void *arg)
{
    struct syncer *y = arg;
    struct shared3 *s = y->s;
    unsigned char block[4096];
    int seen = 0;
    memset(block, 0x3c, sizeof block);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->stop && s->round == seen) pthread_cond_wait(&s->cv, &s->mu);
        if (s->stop) break;
        seen = s->round;
        pthread_mutex_unlock(&s->mu);
        if (pwrite(y->fd, block, sizeof block, 0) != (ssize_t)sizeof block || fdatasync(y->fd) != 0) {
            perror("bench_floor: shared3 write");
            exit(1);
        }
        long long t = now_ns();
        pthread_mutex_lock(&s->mu);
        if (++s->done == 2) s->second = t;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void measure_shared3(const char *dir, double secs, long long *p50, long long *p99)
{
    struct shared3 s;
    struct syncer y[3];
    pthread_t th[3];
    char path[512];
    size_t n = 0;
    long long t0, t = 0;
    int i;
    memset(&s, 0, sizeof s);
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    for (i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/floor-shared3-%d.bin", dir, i);
        y[i].s = &s;
        y[i].fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
        if (y[i].fd < 0 || posix_fallocate(y[i].fd, 0, 1 << 20) != 0 || fdatasync(y[i].fd) != 0) {
            perror("bench_floor: shared3 file");
            exit(1);
        }
        unlink(path);
        pthread_create(&th[i], NULL, syncer_main, &y[i]);
    }
    t0 = now_ns();
    pthread_mutex_lock(&s.mu);
    do {
        s.done = 0;
        s.start = now_ns();
        s.round++;
        pthread_cond_broadcast(&s.cv);
        while (s.done < 3) pthread_cond_wait(&s.cv, &s.mu);
        t = now_ns();
        if (n < MAX_SAMPLES) samples[n++] = s.second - s.start;
    } while ((double)(t - t0) < secs * 1e9);
    s.stop = 1;
    pthread_cond_broadcast(&s.cv);
    pthread_mutex_unlock(&s.mu);
    for (i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        close(y[i].fd);
    }
    pthread_cond_destroy(&s.cv);
    pthread_mutex_destroy(&s.mu);
    qsort(samples, n, sizeof samples[0], cmp_ll);
    *p50 = pct(samples, n, 0.50) / 1000;
    *p99 = pct(samples, n, 0.99) / 1000;
}

static void *echo_main(void *arg)
{
    int fd = *(int *)arg;
    char b;
    while (read(fd, &b, 1) == 1) {
        if (write(fd, &b, 1) != 1) break;
    }
    return NULL;
}

static void measure_loopback(double secs, double *rate, long long *p50, long long *p99)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    int one = 1, lfd, cfd, sfd;
    pthread_t th;
    size_t n = 0;
    long long t0, t, a;
    char b = 'x';

    lfd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, 1) != 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &len) != 0) {
        perror("bench_floor: listen");
        exit(1);
    }
    cfd = socket(AF_INET, SOCK_STREAM, 0);
    if (cfd < 0 || connect(cfd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("bench_floor: connect");
        exit(1);
    }
    sfd = accept(lfd, NULL, NULL);
    if (sfd < 0) {
        perror("bench_floor: accept");
        exit(1);
    }
    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(sfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    pthread_create(&th, NULL, echo_main, &sfd);
    t0 = now_ns();
    do {
        a = now_ns();
        if (write(cfd, &b, 1) != 1 || read(cfd, &b, 1) != 1) {
            perror("bench_floor: ping");
            exit(1);
        }
        t = now_ns();
        if (n < MAX_SAMPLES) samples[n++] = t - a;
    } while ((double)(t - t0) < secs * 1e9);
    shutdown(cfd, SHUT_RDWR);
    pthread_join(th, NULL);
    close(cfd);
    close(sfd);
    close(lfd);
    *rate = (double)n / ((double)(t - t0) / 1e9);
    qsort(samples, n, sizeof samples[0], cmp_ll);
    *p50 = pct(samples, n, 0.50) / 1000;
    *p99 = pct(samples, n, 0.99) / 1000;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "/tmp";
    double secs = argc > 2 ? atof(argv[2]) : 2.0;
    double frate, lrate;
    long long f50, f99, l50, l99, s50, s99;
    if (secs <= 0) secs = 2.0;
    samples = malloc(MAX_SAMPLES * sizeof *samples);
    if (samples == NULL) return 1;
    measure_fsync(dir, secs, &frate, &f50, &f99);
    measure_loopback(secs, &lrate, &l50, &l99);
    measure_shared3(dir, secs, &s50, &s99);
    printf("{\"fdatasync_per_s\":%.0f,\"fdatasync_p50_us\":%lld,\"fdatasync_p99_us\":%lld,"
           "\"loopback_rtt_per_s\":%.0f,\"loopback_rtt_p50_us\":%lld,\"loopback_rtt_p99_us\":%lld,"
           "\"shared3_majority_p50_us\":%lld,\"shared3_majority_p99_us\":%lld}\n",
           frate, f50, f99, lrate, l50, l99, s50, s99);
    free(samples);
    return 0;
}
