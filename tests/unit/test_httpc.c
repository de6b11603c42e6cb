/*
 * Tests of pm_httpc against servers in the test's own event loop on
 * 127.0.0.1: libevent's evhttp (plain, and TLS through
 * bufferevent_openssl with certificates made here by the openssl CLI
 * from a private CA) and a raw listener that answers with canned bytes
 * or closes connections where a test needs it. Covers round trips,
 * keep-alive, concurrency and queueing, chunked and close-delimited
 * bodies, idle and racing closes, timeouts (and no timeout; a connect
 * timeout that covers the TLS handshake), refused connections, unknown
 * hosts, certificate and host name checks, limits, and the
 * callback rules (never inside pm_httpc_send; pm_httpc_free answers
 * every pending request once).
 */
#include "config.h"

#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <openssl/ssl.h>

#include "pm_httpc.h"
#include "pm_test.h"
#include "pm_util.h"

/* ---- harness ------------------------------------------------------- */

static struct event_base *base;
static char certdir[256];

static void
setup(void)
{
    signal(SIGPIPE, SIG_IGN); /* as p2pmesh does: peers close mid-write */
    base = event_base_new();
}

static void
teardown(void)
{
    event_base_free(base);
}

/* Run the loop until *flag or ms pass. */
static void
loop_until(const bool *flag, int ms)
{
    uint64_t end = pm_now_ms() + (uint64_t)ms;

    while (!*flag && pm_now_ms() < end) {
        struct timeval tv = {0, 5000};

        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
}

static void
run_for(int ms)
{
    bool never = false;

    loop_until(&never, ms);
}

static int
bound_port(evutil_socket_t fd)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;

    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    return ntohs(a.sin_port);
}

/* A port nothing listens on. */
static int
closed_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    port = bound_port(fd);
    close(fd);
    return port;
}

/* ---- the evhttp server ---------------------------------------------- */

struct srv {
    struct evhttp *http;
    SSL_CTX *ctx; /* TLS when set */
    int port;
    int conns; /* connections accepted */
};

static struct bufferevent *
srv_bev(struct event_base *b, void *arg)
{
    struct srv *s = arg;

    s->conns++;
    if (s->ctx == NULL)
        return bufferevent_socket_new(b, -1, BEV_OPT_CLOSE_ON_FREE);
    return bufferevent_openssl_socket_new(b, -1, SSL_new(s->ctx),
                                          BUFFEREVENT_SSL_ACCEPTING,
                                          BEV_OPT_CLOSE_ON_FREE);
}

/* /delay requests the server holds now, and the most it held at once. */
static int delayed_now, delayed_max;

static void
reply_late(evutil_socket_t fd, short what, void *arg)
{
    struct evhttp_request *req = arg;
    struct evbuffer *b = evbuffer_new();

    (void)fd;
    (void)what;
    delayed_now--;
    evbuffer_add_printf(b, "late");
    evhttp_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}

/*
 * /echo and /?query: "METHOD URI\n" and the request body, with X-Echo-Method
 * and X-Echo-Host; /delay?ms=N: "late" after N ms; /never: no answer; /chunked:
 * a chunked body of 3 + 100000 + 3 bytes.
 */
static void
srv_handle(struct evhttp_request *req, void *arg)
{
    const char *uri = evhttp_request_get_uri(req);
    struct evbuffer *b = evbuffer_new();
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);

    (void)arg;
    if (strncmp(uri, "/echo", 5) == 0 || strncmp(uri, "/?", 2) == 0) {
        static const char *const names[] = {"GET", "POST", "HEAD", "PUT",
                                            "DELETE"};
        enum evhttp_cmd_type cmds[] = {EVHTTP_REQ_GET, EVHTTP_REQ_POST,
                                       EVHTTP_REQ_HEAD, EVHTTP_REQ_PUT,
                                       EVHTTP_REQ_DELETE};
        const char *host =
            evhttp_find_header(evhttp_request_get_input_headers(req), "Host");
        const char *m = "?";
        size_t i;

        for (i = 0; i < 5; i++)
            if (evhttp_request_get_command(req) == cmds[i])
                m = names[i];
        evbuffer_add_printf(b, "%s %s\n", m, uri);
        evbuffer_add_buffer(b, evhttp_request_get_input_buffer(req));
        evhttp_add_header(out, "X-Echo-Method", m);
        evhttp_add_header(out, "X-Echo-Host", host ? host : "");
        evhttp_send_reply(req, 200, "OK", b);
    } else if (strncmp(uri, "/delay?ms=", 10) == 0) {
        int ms = atoi(uri + 10);
        struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

        if (++delayed_now > delayed_max)
            delayed_max = delayed_now;
        event_base_once(base, -1, EV_TIMEOUT, reply_late, req, &tv);
    } else if (strcmp(uri, "/never") == 0) {
        /* evhttp frees it with its connection */
    } else if (strcmp(uri, "/chunked") == 0) {
        char *big = pm_xmalloc(100000);

        memset(big, 'x', 100000);
        evhttp_send_reply_start(req, 200, "OK");
        evbuffer_add(b, "abc", 3);
        evhttp_send_reply_chunk(req, b);
        evbuffer_add(b, big, 100000);
        evhttp_send_reply_chunk(req, b);
        evbuffer_add(b, "xyz", 3);
        evhttp_send_reply_chunk(req, b);
        evhttp_send_reply_end(req);
        free(big);
    } else {
        evhttp_send_reply(req, 404, "Not Found", b);
    }
    evbuffer_free(b);
}

static void
srv_start(struct srv *s, const char *cert, const char *key)
{
    struct evhttp_bound_socket *bs;

    memset(s, 0, sizeof *s);
    if (cert != NULL) {
        s->ctx = SSL_CTX_new(TLS_server_method());
        ck_assert_int_eq(SSL_CTX_use_certificate_chain_file(s->ctx, cert), 1);
        ck_assert_int_eq(
            SSL_CTX_use_PrivateKey_file(s->ctx, key, SSL_FILETYPE_PEM), 1);
    }
    s->http = evhttp_new(base);
    evhttp_set_bevcb(s->http, srv_bev, s);
    evhttp_set_gencb(s->http, srv_handle, s);
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
                                            EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
                                            EVHTTP_REQ_DELETE);
    bs = evhttp_bind_socket_with_handle(s->http, "127.0.0.1", 0);
    ck_assert_ptr_nonnull(bs);
    s->port = bound_port(evhttp_bound_socket_get_fd(bs));
}

static void
srv_stop(struct srv *s)
{
    evhttp_free(s->http);
    if (s->ctx != NULL)
        SSL_CTX_free(s->ctx);
}

/* ---- the raw server -------------------------------------------------- */

enum raw_mode {
    RAW_CANNED,      /* each request: the canned bytes, then close */
    RAW_CLOSE_SECOND /* 200 to the first request, close at the second */
};

#define RAW_MAX 16

struct raw {
    struct evconnlistener *lis;
    enum raw_mode mode;
    const char *canned;
    size_t canned_len;
    int port;
    int conns;
    struct bufferevent *bevs[RAW_MAX];
    int served[RAW_MAX];
};

static void
raw_close(struct raw *r, int i)
{
    bufferevent_free(r->bevs[i]);
    r->bevs[i] = NULL;
}

static int
raw_index(struct raw *r, struct bufferevent *bev)
{
    int i;

    for (i = 0; r->bevs[i] != bev; i++)
        ;
    return i;
}

static void
raw_flushed(struct bufferevent *bev, void *arg)
{
    raw_close(arg, raw_index(arg, bev));
}

static void
raw_read(struct bufferevent *bev, void *arg)
{
    struct raw *r = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    int i = raw_index(r, bev);

    if (end.pos < 0)
        return;
    evbuffer_drain(in, (size_t)end.pos + 4);
    if (r->mode == RAW_CLOSE_SECOND && r->served[i]++ == 0) {
        bufferevent_write(bev, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                          40);
    } else if (r->mode == RAW_CLOSE_SECOND || r->canned_len == 0) {
        raw_close(r, i);
    } else {
        bufferevent_write(bev, r->canned, r->canned_len);
        bufferevent_setcb(bev, NULL, raw_flushed, NULL, r);
    }
}

static void
raw_event(struct bufferevent *bev, short what, void *arg)
{
    (void)what;
    raw_close(arg, raw_index(arg, bev));
}

static void
raw_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
           int len, void *arg)
{
    struct raw *r = arg;
    struct bufferevent *bev =
        bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);

    (void)l;
    (void)sa;
    (void)len;
    ck_assert_int_lt(r->conns, RAW_MAX);
    r->bevs[r->conns++] = bev;
    bufferevent_setcb(bev, raw_read, NULL, raw_event, r);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void
raw_start(struct raw *r, enum raw_mode mode, const char *canned, size_t len)
{
    struct sockaddr_in a = {.sin_family = AF_INET};

    memset(r, 0, sizeof *r);
    r->mode = mode;
    r->canned = canned;
    r->canned_len = len;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    r->lis = evconnlistener_new_bind(base, raw_accept, r,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                                     16, (struct sockaddr *)&a, sizeof a);
    ck_assert_ptr_nonnull(r->lis);
    r->port = bound_port(evconnlistener_get_fd(r->lis));
}

static void
raw_stop(struct raw *r)
{
    int i;

    for (i = 0; i < r->conns; i++)
        if (r->bevs[i] != NULL)
            raw_close(r, i);
    evconnlistener_free(r->lis);
}

/* ---- the client side ------------------------------------------------- */

struct got {
    int calls;
    bool done;
    int status;
    char error[PM_ERRMSG_SIZE];
    char *body;
    size_t len;
    const char *want_header;
    char header[128];
    bool header_found;
    uint64_t at_ms;
    int order;
};

static bool in_send;
static int answered;

static void
on_res(const struct pm_httpc_res *res, void *arg)
{
    struct got *g = arg;

    ck_assert_msg(!in_send, "callback inside pm_httpc_send");
    g->calls++;
    g->done = true;
    g->status = res->status;
    g->at_ms = pm_now_ms();
    g->order = ++answered;
    if (res->status == 0) {
        ck_assert_ptr_nonnull(res->error);
        pm_strlcpy(g->error, res->error, sizeof g->error);
        ck_assert_ptr_null(pm_httpc_res_header(res, "Content-Length"));
    }
    free(g->body);
    g->body = pm_xmalloc(res->body_len + 1);
    if (res->body_len > 0)
        memcpy(g->body, res->body, res->body_len);
    g->body[res->body_len] = '\0';
    g->len = res->body_len;
    if (g->want_header != NULL) {
        const char *v = pm_httpc_res_header(res, g->want_header);

        g->header_found = v != NULL;
        pm_strlcpy(g->header, v ? v : "", sizeof g->header);
    }
}

static void
got_free(struct got *g, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        free(g[i].body);
}

static int
send_full(struct pm_httpc *h, const char *method, const char *url,
          const struct pm_httpc_header *hdrs, size_t nhdrs, const void *body,
          size_t len, uint64_t timeout_ms, struct got *g, char *err)
{
    struct pm_httpc_req rq = {method, url, hdrs, nhdrs, body, len, timeout_ms};
    int rc;

    in_send = true;
    rc = pm_httpc_send(h, &rq, on_res, g, err, PM_ERRMSG_SIZE);
    in_send = false;
    return rc;
}

/* Send a request that must be accepted. */
static void
send_req(struct pm_httpc *h, const char *method, const char *url,
         const void *body, size_t len, uint64_t timeout_ms, struct got *g)
{
    char err[PM_ERRMSG_SIZE] = "";

    ck_assert_msg(send_full(h, method, url, NULL, 0, body, len, timeout_ms, g,
                            err) == PM_OK,
                  "%s", err);
    ck_assert(!g->done);
}

static struct pm_httpc *
client(unsigned per_origin, const char *ca)
{
    struct pm_httpc_opts o = {.max_per_origin = per_origin, .ca_file = ca};
    char err[PM_ERRMSG_SIZE];
    struct pm_httpc *h = pm_httpc_new(base, &o, err, sizeof err);

    ck_assert_msg(h != NULL, "%s", err);
    return h;
}

static char *
url(const char *scheme, const char *host, int port, const char *path)
{
    static char buf[4][128];
    static int n;
    char *u = buf[n++ % 4];

    snprintf(u, sizeof buf[0], "%s://%s:%d%s", scheme, host, port, path);
    return u;
}

/* ---- tests: requests that are refused -------------------------------- */

START_TEST(bad_requests_are_refused_without_a_callback)
{
    struct pm_httpc *h = client(0, NULL);
    struct pm_httpc_header inject = {"X-A", "1\r\nX-B: 2"};
    struct pm_httpc_header host = {"host", "elsewhere"};
    struct pm_httpc_header bad_name = {"X A", "1"};
    struct got g = {0};
    char err[PM_ERRMSG_SIZE];
    static const char *const urls[] = {"ftp://127.0.0.1/",
                                       "http://",
                                       "http:///x",
                                       "http://user@127.0.0.1/",
                                       "http://127.0.0.1:0/",
                                       "http://127.0.0.1:99999/",
                                       "http://127.0.0.1:x/",
                                       "http://[::1/",
                                       "http://a b/",
                                       "http://127.0.0.1/a b",
                                       "http://127.0.0.1/\r\n"};
    size_t i;

    for (i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        err[0] = '\0';
        ck_assert_int_eq(
            send_full(h, "GET", urls[i], NULL, 0, NULL, 0, 0, &g, err),
            PM_EINVAL);
        ck_assert_msg(strncmp(err, "bad URL", 7) == 0, "%s: %s", urls[i], err);
    }
    ck_assert_int_eq(
        send_full(h, "get", "http://127.0.0.1/", NULL, 0, NULL, 0, 0, &g, err),
        PM_EINVAL);
    ck_assert_str_eq(err, "bad method get");
    ck_assert_int_eq(send_full(h, "GET", "http://127.0.0.1/", &inject, 1, NULL,
                               0, 0, &g, err),
                     PM_EINVAL);
    ck_assert_int_eq(send_full(h, "GET", "http://127.0.0.1/", &bad_name, 1,
                               NULL, 0, 0, &g, err),
                     PM_EINVAL);
    ck_assert_int_eq(
        send_full(h, "GET", "http://127.0.0.1/", &host, 1, NULL, 0, 0, &g, err),
        PM_EINVAL);
    ck_assert_str_eq(err, "request header host is pm_httpc's to set");
    run_for(50);
    ck_assert_int_eq(g.calls, 0);
    pm_httpc_free(h);
}
END_TEST

START_TEST(bad_ca_file_fails_new)
{
    struct pm_httpc_opts o = {.ca_file = "/nonexistent/ca.pem"};
    char err[PM_ERRMSG_SIZE];

    ck_assert_ptr_null(pm_httpc_new(base, &o, err, sizeof err));
    ck_assert_str_eq(err, "cannot load the CA file /nonexistent/ca.pem");
    pm_httpc_free(NULL);
}
END_TEST

/* ---- tests: plain HTTP ---------------------------------------------- */

START_TEST(get_and_post_round_trip)
{
    struct srv s;
    struct pm_httpc *h;
    struct got get = {.want_header = "x-echo-method"};
    struct got post = {.want_header = "X-ECHO-HOST"};
    struct got head = {.want_header = "x-no-such-header"};
    struct got q = {0};
    size_t n = 200000, i;
    char *body = pm_xmalloc(n), *want;
    struct pm_httpc_header extra = {"X-In", "yes"};
    char err[PM_ERRMSG_SIZE];

    for (i = 0; i < n; i++)
        body[i] = (char)(i * 7);
    srv_start(&s, NULL, NULL);
    h = client(0, NULL);
    send_req(h, "GET", url("http", "127.0.0.1", s.port, "/echo?a=1&b=%20"),
             NULL, 0, 2000, &get);
    send_req(h, "POST", url("http", "127.0.0.1", s.port, "/echo"), body, n,
             2000, &post);
    send_req(h, "HEAD", url("http", "127.0.0.1", s.port, "/echo"), NULL, 0,
             2000, &head);
    /* no path: "/"; a query without a path gets one; fragments stay here */
    ck_assert_int_eq(send_full(h, "PUT",
                               url("http", "127.0.0.1", s.port, "?x=1#frag"),
                               &extra, 1, "", 0, 2000, &q, err),
                     PM_OK);
    loop_until(&get.done, 3000);
    loop_until(&post.done, 3000);
    loop_until(&head.done, 3000);
    loop_until(&q.done, 3000);
    ck_assert_int_eq(get.status, 200);
    ck_assert_str_eq(get.body, "GET /echo?a=1&b=%20\n");
    ck_assert(get.header_found);
    ck_assert_str_eq(get.header, "GET");
    ck_assert_int_eq(post.status, 200);
    want = pm_xasprintf("POST /echo\n");
    ck_assert_uint_eq(post.len, strlen(want) + n);
    ck_assert(memcmp(post.body, want, strlen(want)) == 0);
    ck_assert(memcmp(post.body + strlen(want), body, n) == 0);
    ck_assert(post.header_found);
    ck_assert_str_eq(post.header, url("http", "127.0.0.1", s.port, "") + 7);
    ck_assert_int_eq(head.status, 200);
    ck_assert_uint_eq(head.len, 0);
    ck_assert(!head.header_found);
    ck_assert_int_eq(q.status, 200);
    ck_assert_str_eq(q.body, "PUT /?x=1\n");
    ck_assert_int_eq(get.calls + post.calls + head.calls + q.calls, 4);
    free(want);
    free(body);
    got_free(&get, 1);
    got_free(&post, 1);
    got_free(&head, 1);
    got_free(&q, 1);
    pm_httpc_free(h);
    srv_stop(&s);
}
END_TEST

struct chain {
    struct pm_httpc *h;
    const char *url;
    int left, ok;
    bool done;
};

/* Send the next request from the callback of the one before. */
static void
chain_next(const struct pm_httpc_res *res, void *arg)
{
    struct chain *c = arg;
    struct pm_httpc_req rq = {"GET", c->url, NULL, 0, NULL, 0, 2000};
    char err[PM_ERRMSG_SIZE];

    if (res != NULL && res->status == 200)
        c->ok++;
    if (c->left-- == 0) {
        c->done = true;
        return;
    }
    in_send = true;
    ck_assert_int_eq(pm_httpc_send(c->h, &rq, chain_next, c, err, sizeof err),
                     PM_OK);
    in_send = false;
}

START_TEST(keep_alive_reuses_one_connection)
{
    struct srv s;
    struct chain c = {0};
    struct got g = {0};

    srv_start(&s, NULL, NULL);
    c.h = client(0, NULL);
    c.url = url("http", "127.0.0.1", s.port, "/echo");
    c.left = 10;
    chain_next(NULL, &c);
    loop_until(&c.done, 5000);
    ck_assert_int_eq(c.ok, 10);
    /* and once more after a pause */
    run_for(50);
    send_req(c.h, "GET", c.url, NULL, 0, 2000, &g);
    loop_until(&g.done, 3000);
    ck_assert_int_eq(g.status, 200);
    ck_assert_int_eq(s.conns, 1);
    got_free(&g, 1);
    pm_httpc_free(c.h);
    srv_stop(&s);
}
END_TEST

START_TEST(concurrent_up_to_the_limit_then_queued_in_order)
{
    struct srv s;
    struct got par[4] = {{0}}, ser[4] = {{0}};
    struct pm_httpc *h;
    int i;

    srv_start(&s, NULL, NULL);
    h = client(4, NULL);
    delayed_max = 0;
    for (i = 0; i < 4; i++)
        send_req(h, "GET", url("http", "127.0.0.1", s.port, "/delay?ms=100"),
                 NULL, 0, 3000, &par[i]);
    for (i = 0; i < 4; i++) {
        loop_until(&par[i].done, 3000);
        ck_assert_int_eq(par[i].status, 200);
        ck_assert_str_eq(par[i].body, "late");
    }
    /* all four were at the server at once, on four connections */
    ck_assert_int_eq(delayed_max, 4);
    ck_assert_int_eq(s.conns, 4);
    pm_httpc_free(h);
    srv_stop(&s);

    srv_start(&s, NULL, NULL);
    h = client(1, NULL);
    delayed_max = 0;
    answered = 0;
    for (i = 0; i < 4; i++)
        send_req(h, "GET", url("http", "127.0.0.1", s.port, "/delay?ms=100"),
                 NULL, 0, 3000, &ser[i]);
    loop_until(&ser[3].done, 3000);
    for (i = 0; i < 4; i++) {
        ck_assert_int_eq(ser[i].status, 200);
        ck_assert_int_eq(ser[i].order, i + 1);
    }
    /* one at a time, on one connection */
    ck_assert_int_eq(delayed_max, 1);
    ck_assert_int_eq(s.conns, 1);
    got_free(par, 4);
    got_free(ser, 4);
    pm_httpc_free(h);
    srv_stop(&s);
}
END_TEST

START_TEST(chunked_and_close_delimited_bodies)
{
    static const char chunked[] =
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
    static const char http10[] =
        "HTTP/1.0 200 OK\r\nX-A: 1\r\n\r\nuntil the end";
    static const char interim[] =
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n"
        "Content-Length: 3\r\nConnection: close\r\n\r\nnew";
    struct srv s;
    struct raw r1, r2, r3;
    struct got g[4] = {{0}};
    struct pm_httpc *h;
    size_t i;

    srv_start(&s, NULL, NULL);
    raw_start(&r1, RAW_CANNED, chunked, sizeof chunked - 1);
    raw_start(&r2, RAW_CANNED, http10, sizeof http10 - 1);
    raw_start(&r3, RAW_CANNED, interim, sizeof interim - 1);
    h = client(0, NULL);
    send_req(h, "GET", url("http", "127.0.0.1", s.port, "/chunked"), NULL, 0,
             3000, &g[0]);
    send_req(h, "GET", url("http", "127.0.0.1", r1.port, "/"), NULL, 0, 3000,
             &g[1]);
    send_req(h, "GET", url("http", "127.0.0.1", r2.port, "/"), NULL, 0, 3000,
             &g[2]);
    send_req(h, "GET", url("http", "127.0.0.1", r3.port, "/"), NULL, 0, 3000,
             &g[3]);
    for (i = 0; i < 4; i++)
        loop_until(&g[i].done, 3000);
    ck_assert_int_eq(g[0].status, 200);
    ck_assert_uint_eq(g[0].len, 100006);
    ck_assert(memcmp(g[0].body, "abcxx", 5) == 0);
    ck_assert_str_eq(g[0].body + 100003, "xyz");
    ck_assert_int_eq(g[1].status, 200);
    ck_assert_str_eq(g[1].body, "hello world");
    ck_assert_int_eq(g[2].status, 200);
    ck_assert_str_eq(g[2].body, "until the end");
    ck_assert_int_eq(g[3].status, 201);
    ck_assert_str_eq(g[3].body, "new");
    got_free(g, 4);
    pm_httpc_free(h);
    raw_stop(&r1);
    raw_stop(&r2);
    raw_stop(&r3);
    srv_stop(&s);
}
END_TEST

START_TEST(limits_and_bad_responses)
{
    static const char huge_body[] =
        "HTTP/1.1 200 OK\r\nContent-Length: 17000000\r\n\r\n";
    static const char bad_status[] = "HTTP/2 200 OK\r\n\r\n";
    static const char bad_chunk[] =
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
    static const char truncated[] =
        "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort";
    static const char cl_and_te[] =
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
        "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    static const char status_600[] =
        "HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n";
    size_t hn = 70 * 1024;
    char *huge_head = pm_xmalloc(hn);
    struct raw r[7];
    struct got g[7] = {{0}};
    struct pm_httpc *h = client(0, NULL);
    static const char *const want[] = {
        "response headers over 64 KiB",
        "response body over 16 MiB",
        "bad response: bad status line",
        "bad response: bad chunked encoding",
        "connection closed in the middle of the response",
        "bad response: Content-Length with Transfer-Encoding",
        "bad response: bad status line"};
    int i;

    memcpy(huge_head, "HTTP/1.1 200 OK\r\nX-Big: ", 24);
    memset(huge_head + 24, 'a', hn - 24);
    raw_start(&r[0], RAW_CANNED, huge_head, hn);
    raw_start(&r[1], RAW_CANNED, huge_body, sizeof huge_body - 1);
    raw_start(&r[2], RAW_CANNED, bad_status, sizeof bad_status - 1);
    raw_start(&r[3], RAW_CANNED, bad_chunk, sizeof bad_chunk - 1);
    raw_start(&r[4], RAW_CANNED, truncated, sizeof truncated - 1);
    raw_start(&r[5], RAW_CANNED, cl_and_te, sizeof cl_and_te - 1);
    raw_start(&r[6], RAW_CANNED, status_600, sizeof status_600 - 1);
    for (i = 0; i < 7; i++)
        send_req(h, "GET", url("http", "127.0.0.1", r[i].port, "/"), NULL, 0,
                 3000, &g[i]);
    for (i = 0; i < 7; i++) {
        loop_until(&g[i].done, 3000);
        ck_assert_int_eq(g[i].status, 0);
        ck_assert_str_eq(g[i].error, want[i]);
    }
    got_free(g, 7);
    pm_httpc_free(h);
    for (i = 0; i < 7; i++)
        raw_stop(&r[i]);
    free(huge_head);
}
END_TEST

/* ---- tests: closes, timeouts, refusals ------------------------------- */

START_TEST(idle_connection_closed_by_the_server_is_replaced)
{
    struct srv s;
    struct timeval idle = {0, 100000};
    struct got a = {0}, b = {0};
    struct pm_httpc *h;

    srv_start(&s, NULL, NULL);
    evhttp_set_timeout_tv(s.http, &idle);
    h = client(0, NULL);
    send_req(h, "GET", url("http", "127.0.0.1", s.port, "/echo"), NULL, 0, 2000,
             &a);
    loop_until(&a.done, 3000);
    ck_assert_int_eq(a.status, 200);
    run_for(400); /* the server drops the idle connection */
    send_req(h, "GET", url("http", "127.0.0.1", s.port, "/echo"), NULL, 0, 2000,
             &b);
    loop_until(&b.done, 3000);
    ck_assert_int_eq(b.status, 200);
    ck_assert_int_eq(s.conns, 2);
    got_free(&a, 1);
    got_free(&b, 1);
    pm_httpc_free(h);
    srv_stop(&s);
}
END_TEST

START_TEST(request_on_a_connection_closed_meanwhile_is_retried_once)
{
    struct raw r, fresh;
    struct got a = {0}, b = {0}, c = {0};
    struct pm_httpc *h = client(0, NULL);

    /* The second request meets a close on the reused connection: it goes
     * again on a new one (and gets the first-request answer there). */
    raw_start(&r, RAW_CLOSE_SECOND, NULL, 0);
    send_req(h, "GET", url("http", "127.0.0.1", r.port, "/"), NULL, 0, 2000,
             &a);
    loop_until(&a.done, 3000);
    ck_assert_int_eq(a.status, 200);
    send_req(h, "GET", url("http", "127.0.0.1", r.port, "/"), NULL, 0, 2000,
             &b);
    loop_until(&b.done, 3000);
    ck_assert_int_eq(b.status, 200);
    ck_assert_str_eq(b.body, "ok");
    ck_assert_int_eq(r.conns, 2);
    /* A new connection closed without an answer: no retry. */
    raw_start(&fresh, RAW_CANNED, NULL, 0);
    send_req(h, "POST", url("http", "127.0.0.1", fresh.port, "/"), "x", 1, 2000,
             &c);
    loop_until(&c.done, 3000);
    ck_assert_int_eq(c.status, 0);
    ck_assert_str_eq(c.error, "connection closed before the response");
    ck_assert_int_eq(fresh.conns, 1);
    got_free(&a, 1);
    got_free(&b, 1);
    got_free(&c, 1);
    pm_httpc_free(h);
    raw_stop(&r);
    raw_stop(&fresh);
}
END_TEST

START_TEST(timeout_and_no_timeout)
{
    struct srv s;
    struct got t = {0}, wait = {0}, after = {0};
    struct pm_httpc *h;
    uint64_t t0;

    srv_start(&s, NULL, NULL);
    h = client(0, NULL);
    t0 = pm_now_ms();
    send_req(h, "GET", url("http", "127.0.0.1", s.port, "/never"), NULL, 0, 200,
             &t);
    send_req(h, "GET", url("http", "127.0.0.1", s.port, "/delay?ms=1500"), NULL,
             0, 0, &wait);
    loop_until(&t.done, 3000);
    ck_assert_int_eq(t.status, 0);
    ck_assert_str_eq(t.error, "timed out after 200 ms");
    /* not early (the text says which timer it was) */
    ck_assert_uint_ge(t.at_ms - t0, 195);
    loop_until(&wait.done, 5000);
    ck_assert_int_eq(wait.status, 200);
    ck_assert_uint_ge(wait.at_ms - t0, 1450);
    /* the connection of the timed-out request is not reused */
    send_req(h, "GET", url("http", "127.0.0.1", s.port, "/echo"), NULL, 0, 2000,
             &after);
    loop_until(&after.done, 3000);
    ck_assert_int_eq(after.status, 200);
    ck_assert_str_eq(after.body, "GET /echo\n");
    got_free(&t, 1);
    got_free(&wait, 1);
    got_free(&after, 1);
    pm_httpc_free(h);
    srv_stop(&s);
}
END_TEST

START_TEST(connection_refused_and_unknown_host)
{
    struct pm_httpc *h = client(0, NULL);
    struct got g = {0}, dns = {0};
    int port = closed_port();
    char want[96];

    send_req(h, "GET", url("http", "127.0.0.1", port, "/"), NULL, 0, 2000, &g);
    loop_until(&g.done, 3000);
    ck_assert_int_eq(g.status, 0);
    snprintf(want, sizeof want,
             "connect to 127.0.0.1:%d failed: Connection refused", port);
    ck_assert_str_eq(g.error, want);
    send_req(h, "GET", "http://nonexistent.invalid/", NULL, 0, 4000, &dns);
    loop_until(&dns.done, 5000);
    ck_assert_int_eq(dns.status, 0);
    ck_assert_msg(strncmp(dns.error,
                          "DNS: cannot resolve nonexistent.invalid: ", 41) == 0,
                  "%s", dns.error);
    got_free(&g, 1);
    got_free(&dns, 1);
    pm_httpc_free(h);
}
END_TEST

/* ---- tests: pm_httpc_free --------------------------------------------- */

START_TEST(free_answers_pending_requests_once)
{
    struct srv s;
    struct got g[3] = {{0}};
    struct pm_httpc *h;
    int i;

    srv_start(&s, NULL, NULL);
    h = client(1, NULL); /* one on the connection, two queued */
    for (i = 0; i < 3; i++)
        send_req(h, "GET", url("http", "127.0.0.1", s.port, "/never"), NULL, 0,
                 0, &g[i]);
    run_for(100);
    answered = 0;
    pm_httpc_free(h);
    for (i = 0; i < 3; i++) {
        ck_assert_int_eq(g[i].calls, 1);
        ck_assert_int_eq(g[i].status, 0);
        ck_assert_str_eq(g[i].error, "client closed");
        ck_assert_int_eq(g[i].order, i + 1);
    }
    run_for(50);
    for (i = 0; i < 3; i++)
        ck_assert_int_eq(g[i].calls, 1);
    got_free(g, 3);
    srv_stop(&s);
}
END_TEST

struct freer {
    struct pm_httpc *h;
    struct got *pending;
    bool done;
    int send_rc;
};

/* Free the client from a callback; the pending request is answered
 * before pm_httpc_free returns and sending is refused after it. */
static void
free_in_callback(const struct pm_httpc_res *res, void *arg)
{
    struct freer *f = arg;
    struct pm_httpc_req rq = {"GET", "http://127.0.0.1:1/", NULL, 0, NULL, 0,
                              0};
    char err[PM_ERRMSG_SIZE];

    ck_assert_int_eq(res->status, 200);
    pm_httpc_free(f->h);
    ck_assert_int_eq(f->pending->calls, 1);
    ck_assert_str_eq(f->pending->error, "client closed");
    f->send_rc = pm_httpc_send(f->h, &rq, on_res, f->pending, err, sizeof err);
    f->done = true;
}

START_TEST(free_from_a_callback)
{
    struct srv s;
    struct got never = {0};
    struct freer f = {0};
    struct pm_httpc_req rq = {"GET", NULL, NULL, 0, NULL, 0, 2000};
    char err[PM_ERRMSG_SIZE];

    srv_start(&s, NULL, NULL);
    f.h = client(0, NULL);
    f.pending = &never;
    send_req(f.h, "GET", url("http", "127.0.0.1", s.port, "/never"), NULL, 0, 0,
             &never);
    rq.url = url("http", "127.0.0.1", s.port, "/echo");
    ck_assert_int_eq(
        pm_httpc_send(f.h, &rq, free_in_callback, &f, err, sizeof err), PM_OK);
    loop_until(&f.done, 3000);
    ck_assert(f.done);
    ck_assert_int_eq(f.send_rc, PM_ECLOSED);
    run_for(50);
    ck_assert_int_eq(never.calls, 1);
    got_free(&never, 1);
    srv_stop(&s);
}
END_TEST

/* ---- tests: TLS ------------------------------------------------------ */

static char ca_pem[300], good_crt[300], good_key[300], wrong_crt[300],
    wrong_key[300];

/* Once per run (in the parent): a CA, a certificate for localhost and
 * 127.0.0.1, and one for wrong.example only. */
static void
make_certs(void)
{
    char cmd[2048];

    snprintf(certdir, sizeof certdir, "%s/pmhttpcXXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : P_tmpdir);
    ck_assert_ptr_nonnull(mkdtemp(certdir));
    snprintf(
        cmd, sizeof cmd,
        "cd %s && openssl req -x509 -newkey ec -pkeyopt "
        "ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 "
        "-subj /CN=test-ca 2>/dev/null && "
        "for n in good wrong; do openssl req -newkey ec -pkeyopt "
        "ec_paramgen_curve:P-256 -nodes -keyout $n.key -out $n.csr -subj "
        "/CN=$n 2>/dev/null || exit 1; done && "
        "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost' > good.ext && "
        "printf 'subjectAltName=DNS:wrong.example' > wrong.ext && "
        "for n in good wrong; do openssl x509 -req -in $n.csr -CA ca.pem "
        "-CAkey ca.key -CAcreateserial -out $n.pem -days 2 -extfile $n.ext "
        "2>/dev/null || exit 1; done",
        certdir);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(ca_pem, sizeof ca_pem, "%s/ca.pem", certdir);
    snprintf(good_crt, sizeof good_crt, "%s/good.pem", certdir);
    snprintf(good_key, sizeof good_key, "%s/good.key", certdir);
    snprintf(wrong_crt, sizeof wrong_crt, "%s/wrong.pem", certdir);
    snprintf(wrong_key, sizeof wrong_key, "%s/wrong.key", certdir);
}

static void
remove_certs(void)
{
    char cmd[300];

    snprintf(cmd, sizeof cmd, "rm -rf %s", certdir);
    ck_assert_int_eq(system(cmd), 0);
}

START_TEST(https_with_the_ca)
{
    struct srv s;
    struct got ip = {.want_header = "X-Echo-Host"}, name = {0}, again = {0};
    struct pm_httpc *h;

    srv_start(&s, good_crt, good_key);
    h = client(0, ca_pem);
    send_req(h, "POST", url("https", "127.0.0.1", s.port, "/echo"), "tls", 3,
             3000, &ip);
    send_req(h, "GET", url("https", "localhost", s.port, "/echo"), NULL, 0,
             3000, &name);
    loop_until(&ip.done, 4000);
    loop_until(&name.done, 4000);
    ck_assert_msg(ip.status == 200, "%s", ip.error);
    ck_assert_str_eq(ip.body, "POST /echo\ntls");
    ck_assert_str_eq(ip.header, url("https", "127.0.0.1", s.port, "") + 8);
    ck_assert_msg(name.status == 200, "%s", name.error);
    ck_assert_int_eq(s.conns, 2);
    send_req(h, "GET", url("https", "127.0.0.1", s.port, "/chunked"), NULL, 0,
             3000, &again);
    loop_until(&again.done, 4000);
    ck_assert_int_eq(again.status, 200);
    ck_assert_uint_eq(again.len, 100006);
    ck_assert_int_eq(s.conns, 2); /* kept alive */
    got_free(&ip, 1);
    got_free(&name, 1);
    got_free(&again, 1);
    pm_httpc_free(h);
    srv_stop(&s);
}
END_TEST

START_TEST(https_untrusted_and_wrong_names_fail)
{
    struct srv good, wrong;
    struct got untrusted = {0}, wrong_ip = {0}, wrong_name = {0};
    struct pm_httpc *sys, *h;
    char want[128];

    srv_start(&good, good_crt, good_key);
    srv_start(&wrong, wrong_crt, wrong_key);
    sys = client(0, NULL); /* the system store does not know the test CA */
    h = client(0, ca_pem);
    send_req(sys, "GET", url("https", "127.0.0.1", good.port, "/echo"), NULL, 0,
             3000, &untrusted);
    send_req(h, "GET", url("https", "127.0.0.1", wrong.port, "/echo"), NULL, 0,
             3000, &wrong_ip);
    send_req(h, "GET", url("https", "localhost", wrong.port, "/echo"), NULL, 0,
             3000, &wrong_name);
    loop_until(&untrusted.done, 4000);
    loop_until(&wrong_ip.done, 4000);
    loop_until(&wrong_name.done, 4000);
    ck_assert_int_eq(untrusted.status, 0);
    ck_assert_str_eq(untrusted.error, "TLS: certificate verify failed "
                                      "(unable to get local issuer "
                                      "certificate)");
    ck_assert_int_eq(wrong_ip.status, 0);
    snprintf(want, sizeof want,
             "TLS: host name mismatch (the certificate is not for %s)",
             "127.0.0.1");
    ck_assert_str_eq(wrong_ip.error, want);
    ck_assert_int_eq(wrong_name.status, 0);
    ck_assert_str_eq(wrong_name.error, "TLS: host name mismatch (the "
                                       "certificate is not for localhost)");
    got_free(&untrusted, 1);
    got_free(&wrong_ip, 1);
    got_free(&wrong_name, 1);
    pm_httpc_free(sys);
    pm_httpc_free(h);
    srv_stop(&good);
    srv_stop(&wrong);
}
END_TEST

START_TEST(connect_timeout_covers_the_handshake)
{
    struct raw r; /* accepts, never speaks TLS */
    struct pm_httpc_opts o = {.connect_timeout_ms = 150};
    char err[PM_ERRMSG_SIZE], want[96];
    struct pm_httpc *h = pm_httpc_new(base, &o, err, sizeof err);
    struct got g = {0};

    raw_start(&r, RAW_CANNED, NULL, 0);
    send_req(h, "GET", url("https", "127.0.0.1", r.port, "/"), NULL, 0, 2000,
             &g);
    loop_until(&g.done, 3000);
    ck_assert_int_eq(g.status, 0);
    snprintf(want, sizeof want,
             "connect to 127.0.0.1:%d timed out after 150 ms", r.port);
    ck_assert_str_eq(g.error, want); /* the connect timer, not the 2 s one */
    ck_assert_int_eq(r.conns, 1);
    got_free(&g, 1);
    pm_httpc_free(h);
    raw_stop(&r);
}
END_TEST

static Suite *
httpc_suite(void)
{
    Suite *su = suite_create("pm_httpc");
    TCase *tc = tcase_create("loopback servers");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_unchecked_fixture(tc, make_certs, remove_certs);
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, bad_requests_are_refused_without_a_callback);
    tcase_add_test(tc, bad_ca_file_fails_new);
    tcase_add_test(tc, get_and_post_round_trip);
    tcase_add_test(tc, keep_alive_reuses_one_connection);
    tcase_add_test(tc, concurrent_up_to_the_limit_then_queued_in_order);
    tcase_add_test(tc, chunked_and_close_delimited_bodies);
    tcase_add_test(tc, limits_and_bad_responses);
    tcase_add_test(tc, idle_connection_closed_by_the_server_is_replaced);
    tcase_add_test(tc,
                   request_on_a_connection_closed_meanwhile_is_retried_once);
    tcase_add_test(tc, timeout_and_no_timeout);
    tcase_add_test(tc, connection_refused_and_unknown_host);
    tcase_add_test(tc, free_answers_pending_requests_once);
    tcase_add_test(tc, free_from_a_callback);
    tcase_add_test(tc, https_with_the_ca);
    tcase_add_test(tc, https_untrusted_and_wrong_names_fail);
    tcase_add_test(tc, connect_timeout_covers_the_handshake);
    suite_add_tcase(su, tc);
    return su;
}

PM_TEST_MAIN(httpc_suite)
