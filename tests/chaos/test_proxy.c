/* The chaos proxy on its own: fake dialers and fake acceptors on loopback,
 * no moonraft process. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <dirent.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy.h"

struct fixture {
    int fds_before; /* open descriptors before setup: teardown must get back there */
    struct mr_chaos_proxy *px;
    int node_lfd[2]; /* the fake nodes' real peer listeners */
    int proxy_port[2];
    int node_port[2];
};

static int bound_socket(int *port, int do_listen)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    if (do_listen) assert_int_equal(listen(fd, 16), 0);
    return fd;
}

static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    assert_non_null(d);
    while (readdir(d) != NULL) n++;
    closedir(d);
    return n;
}

static int setup(void **state)
{
    static struct fixture f;
    const char *names[2] = {"n1", "n2"};
    memset(&f, 0, sizeof f);
    f.fds_before = open_fds();
    for (int i = 0; i < 2; i++) {
        f.node_lfd[i] = bound_socket(&f.node_port[i], 1);
        close(bound_socket(&f.proxy_port[i], 0)); /* a free port for the proxy */
    }
    assert_int_equal(mr_chaos_proxy_start(&f.px, 2, names, f.proxy_port, f.node_port), 0);
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    mr_chaos_proxy_stop(f->px);
    for (int i = 0; i < 2; i++) close(f->node_lfd[i]);
    assert_int_equal(open_fds(),
                     f->fds_before); /* every socket and the wake pipe closed */
    return 0;
}

/* A HANDSHAKE frame as a moonraft dialer named `name` sends it. */
static size_t hello(unsigned char *b, const char *name)
{
    size_t cn = strlen("moonraft"), nn = strlen(name),
           len = 2 + 1 + 1 + 8 + 8 + 1 + cn + 1 + nn + 32, at = 6;
    memset(b, 0, 6 + len);
    b[0] = (unsigned char)len;
    b[4] = 1; /* wire version */
    b[5] = 1; /* HANDSHAKE */
    b[at] = 1;
    at += 2 + 1 + 1 + 8 + 8;
    b[at++] = (unsigned char)cn;
    memcpy(b + at, "moonraft", cn);
    at += cn;
    b[at++] = (unsigned char)nn;
    memcpy(b + at, name, nn);
    return 6 + len;
}

static int dial(int port)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

/* Reads exactly n bytes within 2 s; returns n, or what arrived before EOF,
 * an error or the deadline. */
static size_t read_n(int fd, unsigned char *b, size_t n, int timeout_ms)
{
    size_t got = 0;
    while (got < n) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, timeout_ms) <= 0) break;
        ssize_t r = read(fd, b + got, n - got);
        if (r <= 0) break;
        got += (size_t)r;
    }
    return got;
}

/* 1 if the peer closed (EOF or reset) within timeout_ms. */
static int sees_close(int fd, int timeout_ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    unsigned char b[256];
    if (poll(&p, 1, timeout_ms) <= 0) return 0;
    ssize_t r = read(fd, b, sizeof b);
    return r == 0 || (r < 0 && errno == ECONNRESET);
}

/* Accepts one connection on the fake node within timeout_ms, or -1. */
static int accept_within(int lfd, int timeout_ms)
{
    struct pollfd p = {lfd, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) return -1;
    return accept(lfd, NULL, NULL);
}

/* n1 dials n2 through the proxy: the fake n2 must get the handshake then
 * the payload, and its answer must reach n1. */
static int open_link(struct fixture *f, int *dialer)
{
    unsigned char h[128], got[128];
    size_t hn = hello(h, "n1");
    *dialer = dial(f->proxy_port[1]);
    assert_int_equal(write(*dialer, h, hn), (ssize_t)hn);
    assert_int_equal(write(*dialer, "ping", 4), 4);
    int node = accept_within(f->node_lfd[1], 2000);
    assert_true(node >= 0);
    assert_int_equal(read_n(node, got, hn + 4, 2000), hn + 4);
    assert_memory_equal(got, h, hn);
    assert_memory_equal(got + hn, "ping", 4);
    assert_int_equal(write(node, "pong", 4), 4);
    assert_int_equal(read_n(*dialer, got, 4, 2000), 4);
    assert_memory_equal(got, "pong", 4);
    return node;
}

static void test_proxy_forwards_the_peeked_handshake_and_bytes_both_ways(void **state)
{
    struct fixture *f = *state;
    int dialer, node = open_link(f, &dialer);
    struct mr_chaos_proxy_stats st;
    mr_chaos_proxy_stats(f->px, &st);
    assert_int_equal(st.accepted, 1);
    assert_int_equal(st.unknown, 0);
    assert_true(st.bytes >= 8);
    close(dialer);
    assert_true(sees_close(node, 2000));
    close(node);
}

static void
test_proxy_cut_closes_a_live_link_on_both_sides_and_only_that_direction(void **state)
{
    struct fixture *f = *state;
    int dialer, node = open_link(f, &dialer);
    /* the other direction's cut leaves n1 -> n2 alone */
    mr_chaos_proxy_cut(f->px, 1, 0, 1);
    assert_false(sees_close(dialer, 200));
    assert_false(sees_close(node, 0));
    mr_chaos_proxy_cut(f->px, 0, 1, 1);
    assert_int_equal(mr_chaos_proxy_n_cuts(f->px), 2);
    assert_true(sees_close(dialer, 2000));
    assert_true(sees_close(node, 2000));
    struct mr_chaos_proxy_stats st;
    mr_chaos_proxy_stats(f->px, &st);
    assert_int_equal(st.cut, 1);
    close(dialer);
    close(node);
}

static void
test_proxy_refuses_new_links_while_cut_and_forwards_again_after_healing(void **state)
{
    struct fixture *f = *state;
    unsigned char h[128];
    size_t hn = hello(h, "n1");
    mr_chaos_proxy_split(f->px, 1u << 0, 1u << 1);
    int dialer = dial(f->proxy_port[1]);
    assert_int_equal(write(dialer, h, hn), (ssize_t)hn);
    assert_true(sees_close(dialer, 2000));
    assert_int_equal(accept_within(f->node_lfd[1], 200), -1); /* nothing reached n2 */
    close(dialer);
    struct mr_chaos_proxy_stats st;
    mr_chaos_proxy_stats(f->px, &st);
    assert_int_equal(st.refused, 1);
    mr_chaos_proxy_heal(f->px);
    assert_int_equal(mr_chaos_proxy_n_cuts(f->px), 0);
    int node = open_link(f, &dialer);
    close(dialer);
    close(node);
}

static void test_proxy_forwards_a_dialer_it_cannot_name_and_counts_it(void **state)
{
    struct fixture *f = *state;
    unsigned char h[128], got[128];
    size_t hn = hello(h, "stranger");
    mr_chaos_proxy_split(f->px, 1u << 0, 1u << 1); /* cuts apply to named nodes only */
    int dialer = dial(f->proxy_port[1]);
    assert_int_equal(write(dialer, h, hn), (ssize_t)hn);
    int node = accept_within(f->node_lfd[1], 2000);
    assert_true(node >= 0);
    assert_int_equal(read_n(node, got, hn, 2000), hn);
    struct mr_chaos_proxy_stats st;
    mr_chaos_proxy_stats(f->px, &st);
    assert_int_equal(st.unknown, 1);
    close(dialer);
    close(node);
}

static void test_proxy_closes_the_dialer_when_the_node_is_down(void **state)
{
    struct fixture *f = *state;
    unsigned char h[128];
    size_t hn = hello(h, "n2");
    close(f->node_lfd[0]); /* n1 is down */
    f->node_lfd[0] = socket(AF_INET, SOCK_STREAM, 0);
    int dialer = dial(f->proxy_port[0]);
    assert_int_equal(write(dialer, h, hn), (ssize_t)hn);
    assert_true(sees_close(dialer, 2000));
    close(dialer);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_proxy_forwards_the_peeked_handshake_and_bytes_both_ways, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_proxy_cut_closes_a_live_link_on_both_sides_and_only_that_direction,
            setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_proxy_refuses_new_links_while_cut_and_forwards_again_after_healing,
            setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_proxy_forwards_a_dialer_it_cannot_name_and_counts_it, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_proxy_closes_the_dialer_when_the_node_is_down, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
