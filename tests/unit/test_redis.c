/*
 * Tests of pm_redis against a real redis-server started here on a free
 * loopback port: URL parsing; pipelined replies in order; NIL and error
 * replies; AUTH with an ACL user and password (and a wrong one); SELECT;
 * pub/sub on a subscriber connection; losing the server (pending
 * callbacks get NULL, "down") and reconnecting by itself when it returns;
 * rediss:// with a private CA (and refusing a certificate it cannot
 * verify). Needs redis-server (Debian redis-server) and the openssl CLI.
 */
#include "config.h"

#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "pm_redis.h"
#include "pm_test.h"
#include "pm_util.h"

/* ---- harness ------------------------------------------------------- */

static int
free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static bool
port_open(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    bool ok;

    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* Start redis-server with extra args (NULL-ended); wait until it listens. */
static pid_t
redis_start(int port, const char *const *extra)
{
    const char *argv[64];
    char portstr[16];
    int n = 0, i;
    pid_t pid;

    snprintf(portstr, sizeof portstr, "%d", port);
    argv[n++] = "redis-server";
    argv[n++] = "--bind";
    argv[n++] = "127.0.0.1";
    argv[n++] = "--save";
    argv[n++] = "";
    argv[n++] = "--appendonly";
    argv[n++] = "no";
    argv[n++] = "--port";
    argv[n++] = portstr;
    for (i = 0; extra != NULL && extra[i] != NULL; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        freopen("/dev/null", "w", stdout);
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static void
wait_listening(int port)
{
    int i;

    for (i = 0; i < 500 && !port_open(port); i++)
        usleep(10000);
    ck_assert_msg(port_open(port), "redis-server did not start on %d", port);
}

static void
redis_stop(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* Run the loop until *flag or 5 s pass. */
static struct event_base *base;

static void
loop_until(const bool *flag, int ms)
{
    int waited = 0;

    while (!*flag && waited < ms) {
        struct timeval tv = {0, 10000};

        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
        waited += 10;
    }
}

struct state {
    int ups, downs;
    bool up_now, down_now;
};

static void
on_state(bool up, void *arg)
{
    struct state *s = arg;

    if (up) {
        s->ups++;
        s->up_now = true;
        s->down_now = false;
    } else {
        s->downs++;
        s->down_now = true;
        s->up_now = false;
    }
}

static struct pm_redis *
client(const char *url, const char *ca, struct state *st,
       pm_redis_message_fn on_msg)
{
    struct pm_redis_opts o = {url, ca, on_state, on_msg, st};
    char err[PM_ERRMSG_SIZE];
    struct pm_redis *r;

    r = pm_redis_new(base, &o, err, sizeof err);
    ck_assert_msg(r != NULL, "%s", err);
    return r;
}

/* ---- replies collected by tests ---------------------------------------- */

struct got {
    int n;
    bool done;
    int want;
    long long ints[256];
    int types[256];
    char strs[8][64];
    bool nulls;
};

static void
collect(const struct pm_redis_reply *rep, void *arg)
{
    struct got *g = arg;

    if (rep == NULL) {
        g->nulls = true;
    } else {
        g->types[g->n] = pm_redis_reply_type(rep);
        g->ints[g->n] = pm_redis_reply_integer(rep);
        if (g->n < 8 && pm_redis_reply_str(rep, NULL) != NULL) {
            size_t len;
            const char *s = pm_redis_reply_str(rep, &len);

            snprintf(g->strs[g->n], sizeof g->strs[0], "%.*s", (int)len, s);
        }
    }
    g->n++;
    if (g->n >= g->want)
        g->done = true;
}

/* LRANGE of ["a", "bc"]: the array accessors. */
static void
check_array(const struct pm_redis_reply *rep, void *arg)
{
    bool *done = arg;
    size_t len;

    ck_assert_ptr_nonnull(rep);
    ck_assert_int_eq(pm_redis_reply_type(rep), PM_REDIS_ARRAY);
    ck_assert_uint_eq(pm_redis_reply_elements(rep), 2);
    ck_assert_str_eq(pm_redis_reply_str(pm_redis_reply_element(rep, 0), &len),
                     "a");
    ck_assert_uint_eq(len, 1);
    pm_redis_reply_str(pm_redis_reply_element(rep, 1), &len);
    ck_assert_uint_eq(len, 2);
    ck_assert_ptr_null(pm_redis_reply_element(rep, 2));
    /* not an array: no elements */
    ck_assert_uint_eq(pm_redis_reply_elements(pm_redis_reply_element(rep, 0)),
                      0);
    *done = true;
}

static void
setup(void)
{
    base = event_base_new();
}

static void
teardown(void)
{
    event_base_free(base);
}

/* ---- tests ------------------------------------------------------------ */

START_TEST(url_forms)
{
    struct pm_redis_url u;
    char err[PM_ERRMSG_SIZE];

    ck_assert_int_eq(
        pm_redis_url_parse("redis://cache.local", &u, err, sizeof err), PM_OK);
    ck_assert_str_eq(u.host, "cache.local");
    ck_assert_int_eq(u.port, 6379);
    ck_assert(!u.tls);
    ck_assert_int_eq(
        pm_redis_url_parse("rediss://alice:p%40ss@example.com:6380/2", &u, err,
                           sizeof err),
        PM_OK);
    ck_assert(u.tls);
    ck_assert_str_eq(u.user, "alice");
    ck_assert_str_eq(u.password, "p@ss");
    ck_assert_str_eq(u.host, "example.com");
    ck_assert_int_eq(u.port, 6380);
    ck_assert_int_eq(u.db, 2);
    ck_assert_int_eq(
        pm_redis_url_parse("redis://:onlypw@[::1]:7000/", &u, err, sizeof err),
        PM_OK);
    ck_assert_str_eq(u.user, "");
    ck_assert_str_eq(u.password, "onlypw");
    ck_assert_str_eq(u.host, "::1");
    ck_assert_int_eq(u.port, 7000);
    ck_assert_int_eq(u.db, 0);
    ck_assert_int_eq(pm_redis_url_parse("http://x", &u, err, sizeof err),
                     PM_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "redis://"));
    ck_assert_int_eq(pm_redis_url_parse("redis://h:99999", &u, err, sizeof err),
                     PM_EINVAL);
    ck_assert_int_eq(pm_redis_url_parse("redis://h/x", &u, err, sizeof err),
                     PM_EINVAL);
    ck_assert_int_eq(pm_redis_url_parse("redis://", &u, err, sizeof err),
                     PM_EINVAL);
}
END_TEST

START_TEST(pipelined_replies_in_order)
{
    int port = free_port();
    pid_t pid = redis_start(port, NULL);
    struct state st = {0};
    struct got g = {.want = 103};
    char url[64];
    struct pm_redis *r;
    int i;

    wait_listening(port);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    r = client(url, NULL, &st, NULL);
    ck_assert_int_eq(pm_redis_commandv(r, collect, &g, "PING", NULL),
                     PM_EUNAVAIL); /* not connected yet */
    loop_until(&st.up_now, 5000);
    ck_assert(st.up_now);
    for (i = 0; i < 100; i++)
        ck_assert_int_eq(
            pm_redis_commandv(r, collect, &g, "INCR", "counter", NULL), PM_OK);
    pm_redis_commandv(r, collect, &g, "GET", "missing", NULL);
    pm_redis_commandv(r, collect, &g, "NOSUCHCOMMAND", NULL);
    {
        const char *av[3] = {"SET", "bin", "a\0b"};
        size_t lens[3] = {3, 3, 3};

        pm_redis_command(r, collect, &g, 3, av, lens);
    }
    loop_until(&g.done, 5000);
    {
        bool arr = false;

        pm_redis_commandv(r, NULL, NULL, "RPUSH", "list", "a", "bc", NULL);
        pm_redis_commandv(r, check_array, &arr, "LRANGE", "list", "0", "-1",
                          NULL);
        loop_until(&arr, 5000);
        ck_assert(arr);
    }
    ck_assert_int_eq(g.n, 103);
    for (i = 0; i < 100; i++) {
        ck_assert_int_eq(g.types[i], PM_REDIS_INTEGER);
        ck_assert_int_eq(g.ints[i], i + 1);
    }
    ck_assert_int_eq(g.types[100], PM_REDIS_NIL);
    ck_assert_int_eq(g.types[101], PM_REDIS_ERROR);
    ck_assert_int_eq(g.types[102], PM_REDIS_STATUS);
    pm_redis_free(r);
    redis_stop(pid);
}
END_TEST

START_TEST(auth_user_and_select)
{
    static const char *const extra[] = {
        "--requirepass", "defpw", "--user", "alice", "on",
        ">s3cret",       "~*",    "&*",     "+@all", NULL};
    int port = free_port();
    pid_t pid = redis_start(port, extra);
    struct state st = {0}, bad = {0}, st0 = {0};
    struct got g = {.want = 1}, g2 = {.want = 2};
    char url[128];
    struct pm_redis *r, *wrong, *r0;

    wait_listening(port);
    snprintf(url, sizeof url, "redis://alice:s3cret@127.0.0.1:%d/3", port);
    r = client(url, NULL, &st, NULL);
    snprintf(url, sizeof url, "redis://alice:nope@127.0.0.1:%d", port);
    wrong = client(url, NULL, &bad, NULL);
    snprintf(url, sizeof url, "redis://:defpw@127.0.0.1:%d", port);
    r0 = client(url, NULL, &st0, NULL);
    loop_until(&st.up_now, 5000);
    loop_until(&st0.up_now, 5000);
    ck_assert(st.up_now && st0.up_now);
    pm_redis_commandv(r, collect, &g, "SET", "k", "in-db-3", NULL);
    loop_until(&g.done, 5000);
    /* db 0 does not see db 3's key; db 3 does */
    pm_redis_commandv(r0, collect, &g2, "GET", "k", NULL);
    pm_redis_commandv(r0, collect, &g2, "SELECT", "3", NULL);
    loop_until(&g2.done, 5000);
    ck_assert_int_eq(g2.types[0], PM_REDIS_NIL);
    /* the wrong password never comes up */
    {
        bool never = false;

        loop_until(&never, 700);
    }
    ck_assert(!bad.up_now);
    ck_assert(!pm_redis_is_up(wrong));
    pm_redis_free(wrong);
    pm_redis_free(r);
    pm_redis_free(r0);
    redis_stop(pid);
}
END_TEST

struct msgs {
    int n;
    bool done;
    char channel[32];
    char payload[32];
    size_t payload_len;
};

/* A subscriber's state first, so on_state can take it as a struct state. */
struct sub {
    struct state st;
    struct msgs m;
};

static void
on_message(const char *ch, size_t chlen, const char *msg, size_t len, void *arg)
{
    struct msgs *m = &((struct sub *)arg)->m;

    snprintf(m->channel, sizeof m->channel, "%.*s", (int)chlen, ch);
    memcpy(m->payload, msg, len < sizeof m->payload ? len : 0);
    m->payload_len = len;
    m->n++;
    m->done = true;
}

START_TEST(publish_reaches_subscriber)
{
    int port = free_port();
    pid_t pid = redis_start(port, NULL);
    struct sub sub = {{0}, {0}};
    struct state pst = {0};
    struct got g = {.want = 1}, pub = {.want = 1};
    char url[64];
    struct pm_redis *s, *p;

    wait_listening(port);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    s = client(url, NULL, &sub.st, on_message);
    p = client(url, NULL, &pst, NULL);
    loop_until(&sub.st.up_now, 5000);
    loop_until(&pst.up_now, 5000);
    pm_redis_commandv(s, collect, &g, "SUBSCRIBE", "inst:1", NULL);
    loop_until(&g.done, 5000);
    {
        const char *av[3] = {"PUBLISH", "inst:1", "x\0y"};
        size_t lens[3] = {7, 6, 3};

        pm_redis_command(p, collect, &pub, 3, av, lens);
    }
    loop_until(&sub.m.done, 5000);
    loop_until(&pub.done, 5000);
    ck_assert_int_eq(sub.m.n, 1);
    ck_assert_str_eq(sub.m.channel, "inst:1");
    ck_assert_uint_eq(sub.m.payload_len, 3);
    ck_assert(memcmp(sub.m.payload, "x\0y", 3) == 0);
    ck_assert_int_eq(pub.ints[0], 1); /* one subscriber received it */
    pm_redis_free(s);
    pm_redis_free(p);
    redis_stop(pid);
}
END_TEST

START_TEST(reconnects_after_the_server_returns)
{
    int port = free_port();
    pid_t pid = redis_start(port, NULL);
    struct state st = {0};
    struct got pending = {.want = 1}, after = {.want = 1};
    char url[64];
    struct pm_redis *r;

    wait_listening(port);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    r = client(url, NULL, &st, NULL);
    loop_until(&st.up_now, 5000);
    ck_assert(st.up_now);
    /* a command in flight when the server dies gets a NULL reply */
    pm_redis_commandv(r, collect, &pending, "BLPOP", "never", "0", NULL);
    redis_stop(pid);
    loop_until(&st.down_now, 5000);
    ck_assert(st.down_now);
    ck_assert(pending.nulls);
    ck_assert_int_eq(pm_redis_commandv(r, collect, &after, "PING", NULL),
                     PM_EUNAVAIL);
    pid = redis_start(port, NULL);
    wait_listening(port);
    loop_until(&st.up_now, 8000);
    ck_assert_msg(st.up_now, "did not reconnect");
    ck_assert_int_eq(st.ups, 2);
    pm_redis_commandv(r, collect, &after, "PING", NULL);
    loop_until(&after.done, 5000);
    ck_assert_str_eq(after.strs[0], "PONG");
    pm_redis_free(r);
    redis_stop(pid);
}
END_TEST

START_TEST(tls_with_private_ca)
{
    char dir[256], cmd[2048], ca[300], crt[300], key[300], url[96];
    int port = free_port(), tport = free_port();
    struct state st = {0}, st2 = {0};
    struct got g = {.want = 1};
    struct pm_redis *r, *untrusted;
    pid_t pid;

    snprintf(dir, sizeof dir, "%s/pmredistlsXXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : P_tmpdir);
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(cmd, sizeof cmd,
             "cd %s && openssl req -x509 -newkey ec -pkeyopt "
             "ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem "
             "-days 2 -subj /CN=test-ca 2>/dev/null && openssl req -newkey "
             "ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout srv.key "
             "-out srv.csr -subj /CN=localhost 2>/dev/null && printf "
             "'subjectAltName=IP:127.0.0.1,DNS:localhost' > ext && openssl "
             "x509 -req -in srv.csr -CA ca.pem -CAkey ca.key "
             "-CAcreateserial -out srv.pem -days 2 -extfile ext "
             "2>/dev/null",
             dir);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    snprintf(crt, sizeof crt, "%s/srv.pem", dir);
    snprintf(key, sizeof key, "%s/srv.key", dir);
    {
        char tp[16];
        const char *extra[] = {"--tls-port",
                               tp,
                               "--tls-cert-file",
                               crt,
                               "--tls-key-file",
                               key,
                               "--tls-ca-cert-file",
                               ca,
                               "--tls-auth-clients",
                               "no",
                               NULL};

        snprintf(tp, sizeof tp, "%d", tport);
        pid = redis_start(port, extra);
    }
    wait_listening(tport);
    snprintf(url, sizeof url, "rediss://127.0.0.1:%d", tport);
    r = client(url, ca, &st, NULL);
    untrusted = client(url, NULL, &st2, NULL); /* system CAs only */
    loop_until(&st.up_now, 5000);
    ck_assert(st.up_now);
    pm_redis_commandv(r, collect, &g, "PING", NULL);
    loop_until(&g.done, 5000);
    ck_assert_str_eq(g.strs[0], "PONG");
    {
        bool never = false;

        loop_until(&never, 500);
    }
    ck_assert(!pm_redis_is_up(untrusted));
    pm_redis_free(untrusted);
    pm_redis_free(r);
    redis_stop(pid);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

static Suite *
redis_suite(void)
{
    Suite *su = suite_create("pm_redis");
    TCase *tc = tcase_create("real redis-server");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, url_forms);
    tcase_add_test(tc, pipelined_replies_in_order);
    tcase_add_test(tc, auth_user_and_select);
    tcase_add_test(tc, publish_reaches_subscriber);
    tcase_add_test(tc, reconnects_after_the_server_returns);
    tcase_add_test(tc, tls_with_private_ca);
    suite_add_tcase(su, tc);
    return su;
}

PM_TEST_MAIN(redis_suite)
