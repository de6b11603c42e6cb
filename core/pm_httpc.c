/*
 * pm_httpc: the HTTP/1.1 client. Connections are socket bufferevents
 * (with a bufferevent_openssl filter on top for https) and responses are
 * framed by pm_http's response-head parser and chunked-body scanner:
 * libevent 2.1.12's evhttp client reconnects with a shut-down SSL object
 * and has no "no timeout", and the Runtime API needs both done right.
 *
 * Owns the origins (scheme, host, port), each with its connections and a
 * FIFO of requests waiting for one; the connections (resolve, connect to
 * each address in turn, TLS handshake, then one request at a time and
 * keep-alive); the requests (the bytes to send, a timer). A connection is
 * not bound to a request while it opens: whichever is ready first takes
 * the oldest waiting request, and a connection that fails to open fails
 * the oldest one with its reason.
 *
 * Requests are sent from a zero-time event (kick) rather than from
 * pm_httpc_send, so no callback ever runs inside it. Every libevent
 * callback here counts itself in busy; pm_httpc_free inside one of ours
 * answers the requests at once but frees the rest only when the
 * outermost callback returns.
 */
#include "config.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "pm_http.h"
#include "pm_httpc.h"
#include "pm_util.h"

#define HTTPC_MAX_HEAD (64 * 1024)        /* status line and headers */
#define HTTPC_MAX_BODY (16 * 1024 * 1024) /* decoded body */
#define HTTPC_PER_ORIGIN 8
#define HTTPC_CONNECT_MS 5000

/* The bytes of one request (head and body). The request holds one
 * reference and each output buffer still sending from it another, so a
 * request can end before its bytes are written. */
struct wire {
    unsigned refs;
    size_t len;
    char data[];
};

struct origin;
struct conn;

struct req {
    struct pm_httpc *h;
    struct origin *o;
    struct req *prev, *next; /* h's list of unanswered requests */
    struct req *qnext;       /* o's wait queue */
    bool queued;
    struct conn *conn; /* the connection it was written to */
    struct wire *wire;
    char method[17]; /* as check_request allows; it frames the response */
    bool retried;
    uint64_t timeout_ms;
    struct event *timer; /* NULL without a timeout */
    pm_httpc_fn cb;
    void *arg;
};

enum body_kind { BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_CLOSE };

/* A response head, res.priv: the header array, then the names and
 * values NUL-ended. One allocation. */
struct head {
    int status;
    bool keep_alive;
    size_t length; /* P_LENGTH */
    size_t n;
    struct pm_httpc_header hdr[];
};

enum conn_state { C_RESOLVING, C_CONNECTING, C_HANDSHAKE, C_IDLE, C_BUSY };

enum parse_state { P_HEAD, P_LENGTH, P_CLOSE, P_CHUNKED };

/* A name lookup in flight. A connection closed meanwhile only clears c:
 * evdns calls back later in any case and the lookup is freed then. */
struct lookup {
    struct conn *c;
};

struct conn {
    struct origin *o;
    struct conn *next;
    enum conn_state state;
    struct bufferevent *bev;
    struct event *timer; /* connect timeout, until ready */
    struct lookup *lookup;
    struct evutil_addrinfo *addrs, *addr; /* all, and the next to try */
    int last_errno;
    struct req *req;
    unsigned served; /* responses read: the connection was reused */
    /* the response being read */
    enum parse_state ps;
    bool got_bytes;
    struct head *head;
    struct pm_http_chunked chunk; /* P_CHUNKED */
    struct evbuffer *chunks;      /* the decoded chunked body */
};

struct origin {
    struct pm_httpc *h;
    struct origin *next;
    bool tls;
    bool ip; /* host is an IP literal */
    char *host;
    char port[6];
    char *name;      /* host:port, for messages */
    char *authority; /* the Host header */
    struct conn *conns;
    unsigned nconns, nopening;
    struct req *qhead, *qtail;
    unsigned nqueued;
};

struct pm_httpc {
    struct event_base *base;
    struct evdns_base *dns; /* made for the first host name */
    SSL_CTX *ssl_ctx;       /* made by pm_httpc_new with a CA file, else by the
                               first https request */
    unsigned max_per_origin;
    uint64_t connect_ms;
    struct origin *origins;
    struct req *first, *last;
    struct event *kick;
    int busy;
    bool dead;
};

static void conn_close(struct conn *c);

/* ---- entering and leaving our libevent callbacks -------------------- */

static void
enter(struct pm_httpc *h)
{
    h->busy++;
}

static void destroy(struct pm_httpc *h);

static void
leave(struct pm_httpc *h)
{
    if (--h->busy == 0 && h->dead)
        destroy(h);
}

static void
kick(struct pm_httpc *h)
{
    event_active(h->kick, 0, 0);
}

/* ---- requests ------------------------------------------------------- */

static void
wire_unref(struct wire *w)
{
    if (--w->refs == 0)
        free(w);
}

static void
wire_sent(const void *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    wire_unref(arg);
}

static void
queue_push(struct origin *o, struct req *r, bool front)
{
    r->queued = true;
    if (front) {
        r->qnext = o->qhead;
        o->qhead = r;
        if (o->qtail == NULL)
            o->qtail = r;
    } else {
        r->qnext = NULL;
        if (o->qtail != NULL)
            o->qtail->qnext = r;
        else
            o->qhead = r;
        o->qtail = r;
    }
    o->nqueued++;
}

static struct req *
queue_pop(struct origin *o)
{
    struct req *r = o->qhead;

    if (r == NULL)
        return NULL;
    o->qhead = r->qnext;
    if (o->qhead == NULL)
        o->qtail = NULL;
    r->queued = false;
    o->nqueued--;
    return r;
}

static void
queue_remove(struct origin *o, struct req *r)
{
    struct req **pp = &o->qhead, *prev = NULL;

    while (*pp != r) {
        prev = *pp;
        pp = &(*pp)->qnext;
    }
    *pp = r->qnext;
    if (o->qtail == r)
        o->qtail = prev;
    r->queued = false;
    o->nqueued--;
}

/* Take r off its connection or out of its queue. */
static void
detach(struct req *r)
{
    if (r->conn != NULL) {
        r->conn->req = NULL;
        r->conn = NULL;
    } else if (r->queued) {
        queue_remove(r->o, r);
    }
}

/* Free a detached request, then give its callback the response. */
static void
finish(struct req *r, const struct pm_httpc_res *res)
{
    struct pm_httpc *h = r->h;
    pm_httpc_fn cb = r->cb;
    void *arg = r->arg;

    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        h->first = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    else
        h->last = r->prev;
    if (r->timer != NULL)
        event_free(r->timer);
    wire_unref(r->wire);
    free(r);
    cb(res, arg);
}

static void fail(struct req *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Answer a detached request with status 0 and a reason. */
static void
fail(struct req *r, const char *fmt, ...)
{
    char why[PM_ERRMSG_SIZE];
    struct pm_httpc_res res = {0};
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    res.error = why;
    finish(r, &res);
}

static void
req_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct req *r = arg;
    struct pm_httpc *h = r->h;
    struct conn *c = r->conn;

    (void)fd;
    (void)what;
    enter(h);
    detach(r);
    if (c != NULL) /* a late response must not meet the next request */
        conn_close(c);
    fail(r, "timed out after %llu ms", (unsigned long long)r->timeout_ms);
    leave(h);
}

/* ---- response parsing ----------------------------------------------- */

/* Copy the parsed head pr for res.priv. */
static struct head *
head_new(const struct pm_http_response *pr)
{
    size_t size = sizeof(struct head), i;
    struct head *hd;
    char *s;

    for (i = 0; i < pr->nheaders; i++)
        size += sizeof hd->hdr[0] + pr->headers[i].name_len +
                pr->headers[i].value_len + 2;
    hd = pm_xcalloc(1, size);
    hd->status = pr->status;
    hd->n = pr->nheaders;
    s = (char *)&hd->hdr[hd->n];
    for (i = 0; i < hd->n; i++) {
        const struct pm_http_header *h = &pr->headers[i];

        hd->hdr[i].name = memcpy(s, h->name, h->name_len);
        s += h->name_len;
        *s++ = '\0';
        hd->hdr[i].value = memcpy(s, h->value, h->value_len);
        s += h->value_len;
        *s++ = '\0';
    }
    return hd;
}

/* ---- connections: reading ------------------------------------------- */

static void
conn_start(struct conn *c, struct req *r)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    int rc;

    c->state = C_BUSY;
    c->req = r;
    r->conn = c;
    c->ps = P_HEAD;
    c->got_bytes = false;
    r->wire->refs++;
    rc = evbuffer_add_reference(out, r->wire->data, r->wire->len, wire_sent,
                                r->wire);
    PM_ASSERT(rc == 0); /* fails only out of memory */
}

/* Give c the oldest waiting request, if any. */
static void
conn_next(struct conn *c)
{
    struct req *r = queue_pop(c->o);

    c->state = C_IDLE;
    if (r != NULL)
        conn_start(c, r);
}

/* The request on c failed (bad response, lost connection). */
static void
conn_fail(struct conn *c, const char *why)
{
    struct req *r = c->req;

    detach(r);
    conn_close(c);
    fail(r, "%s", why);
}

/* The response to c's request is complete: body is len bytes at the
 * front of buf (NULL: none). */
static void
complete(struct conn *c, struct evbuffer *buf, size_t len)
{
    struct pm_httpc *h = c->o->h;
    struct req *r = c->req;
    struct pm_httpc_res res = {0};
    bool keep;

    res.status = c->head->status;
    res.body =
        len > 0 ? evbuffer_pullup(buf, (ev_ssize_t)len) : (const uint8_t *)"";
    res.body_len = len;
    res.priv = c->head;
    keep = c->head->keep_alive;
    detach(r);
    c->served++;
    finish(r, &res);
    if (h->dead)
        return;
    if (buf != NULL)
        evbuffer_drain(buf, len);
    free(c->head);
    c->head = NULL;
    if (c->chunks != NULL) {
        evbuffer_free(c->chunks);
        c->chunks = NULL;
    }
    /* reused only when the server keeps it, sent nothing more and read
     * the whole request */
    if (keep && evbuffer_get_length(bufferevent_get_input(c->bev)) == 0 &&
        evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        conn_next(c);
    else
        conn_close(c);
}

/* P_HEAD: parse the head once it is all there. false: wait or stop. */
static bool
read_head(struct conn *c, struct evbuffer *in)
{
    size_t avail = evbuffer_get_length(in);
    size_t n = avail < HTTPC_MAX_HEAD ? avail : HTTPC_MAX_HEAD;
    struct pm_http_response pr;
    enum body_kind body;
    char why[PM_ERRMSG_SIZE];
    int rc;

    if (n == 0)
        return false;
    rc =
        pm_http_parse_response((const char *)evbuffer_pullup(in, (ev_ssize_t)n),
                               n, HTTPC_MAX_HEAD, &pr);
    if (rc == PM_EAGAIN)
        return false;
    if (rc == PM_ELIMIT) {
        conn_fail(c, "response headers over 64 KiB");
        return false;
    }
    if (rc == PM_OK && pr.status > 599) {
        rc = PM_EPROTO;
        pr.error = "bad status line";
    }
    if (rc != PM_OK) {
        snprintf(why, sizeof why, "bad response: %s", pr.error);
        conn_fail(c, why);
        return false;
    }
    if (pr.status < 200) { /* interim (100 Continue): skip */
        evbuffer_drain(in, pr.head_len);
        return true;
    }
    if (!pm_http_response_has_body(&pr, c->req->method, strlen(c->req->method)))
        body = BODY_NONE;
    else if (pr.chunked)
        body = BODY_CHUNKED;
    else if (pr.content_length >= 0)
        body = BODY_LENGTH;
    else
        body = BODY_CLOSE;
    if (body == BODY_LENGTH && pr.content_length > HTTPC_MAX_BODY) {
        conn_fail(c, "response body over 16 MiB");
        return false;
    }
    c->head = head_new(&pr);
    c->head->keep_alive = pr.keep_alive && body != BODY_CLOSE;
    evbuffer_drain(in, pr.head_len);
    switch (body) {
    case BODY_NONE:
        complete(c, NULL, 0);
        return false;
    case BODY_LENGTH:
        c->ps = P_LENGTH;
        c->head->length = (size_t)pr.content_length;
        break;
    case BODY_CHUNKED:
        c->ps = P_CHUNKED;
        pm_http_chunked_init(&c->chunk);
        c->chunks = evbuffer_new();
        break;
    case BODY_CLOSE:
        c->ps = P_CLOSE;
        break;
    }
    return true;
}

/* P_CHUNKED: decode what the input holds; complete at the end. */
static void
read_chunked(struct conn *c, struct evbuffer *in)
{
    size_t avail = evbuffer_get_length(in), used;
    bool done;
    int rc;

    if (avail == 0)
        return;
    /* the input holds only what arrived since the last call */
    rc = pm_http_chunked_feed(&c->chunk, (const char *)evbuffer_pullup(in, -1),
                              avail, c->chunks, &used, &done);
    evbuffer_drain(in, used);
    if (rc != PM_OK)
        conn_fail(c, "bad response: bad chunked encoding");
    else if (evbuffer_get_length(c->chunks) > HTTPC_MAX_BODY)
        conn_fail(c, "response body over 16 MiB");
    else if (done)
        complete(c, c->chunks, evbuffer_get_length(c->chunks));
}

/* Read what the input holds of the response to c's request. */
static void
conn_read(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    bool more = true;

    while (more) {
        size_t avail = evbuffer_get_length(in);

        switch (c->ps) {
        case P_HEAD:
            more = read_head(c, in);
            break;
        case P_LENGTH:
            if (avail >= c->head->length)
                complete(c, in, c->head->length);
            more = false;
            break;
        case P_CLOSE: /* ends with the connection */
            if (avail > HTTPC_MAX_BODY)
                conn_fail(c, "response body over 16 MiB");
            more = false;
            break;
        case P_CHUNKED:
            read_chunked(c, in);
            more = false;
            break;
        }
    }
}

/* The connection ended or broke while c->req was on it. */
static void
conn_lost(struct conn *c, const char *why)
{
    struct origin *o = c->o;
    struct req *r = c->req;
    struct conn *i, *next;

    if (!c->got_bytes && c->served > 0 && !r->retried) {
        /* The server closed a kept-alive connection as the request went
         * out: nothing of it was processed, send it once more, on a new
         * connection (the other idle ones are as old: drop them too). */
        detach(r);
        r->retried = true;
        conn_close(c);
        for (i = o->conns; i != NULL; i = next) {
            next = i->next;
            if (i->state == C_IDLE)
                conn_close(i);
        }
        queue_push(o, r, true);
        kick(o->h);
        return;
    }
    conn_fail(c, why);
}

static void
read_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct pm_httpc *h = c->o->h;

    (void)bev;
    enter(h);
    if (c->state == C_BUSY) {
        c->got_bytes = true;
        conn_read(c);
    } else { /* nothing was asked on an idle connection */
        conn_close(c);
    }
    leave(h);
}

/* ---- connections: opening ------------------------------------------- */

static void conn_fail_open(struct conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* c could not be opened: close it and fail the oldest waiting request. */
static void
conn_fail_open(struct conn *c, const char *fmt, ...)
{
    char why[PM_ERRMSG_SIZE];
    struct req *r = queue_pop(c->o);
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    conn_close(c);
    if (r != NULL)
        fail(r, "%s", why);
}

/* Connected (and TLS done): ready for requests. */
static void
conn_ready(struct conn *c)
{
    event_free(c->timer);
    c->timer = NULL;
    evutil_freeaddrinfo(c->addrs);
    c->addrs = c->addr = NULL;
    c->o->nopening--;
    conn_next(c);
}

static void event_cb(struct bufferevent *bev, short what, void *arg);

/* Start connecting to the next address; out of addresses: fail. */
static void
connect_next(struct conn *c)
{
    struct pm_httpc *h = c->o->h;

    c->state = C_CONNECTING;
    while (c->addr != NULL) {
        struct evutil_addrinfo *ai = c->addr;

        c->addr = ai->ai_next;
        c->bev = bufferevent_socket_new(h->base, -1, BEV_OPT_CLOSE_ON_FREE);
        PM_ASSERT(c->bev != NULL);
        bufferevent_setcb(c->bev, read_cb, NULL, event_cb, c);
        bufferevent_enable(c->bev, EV_READ | EV_WRITE);
        if (bufferevent_socket_connect(c->bev, ai->ai_addr,
                                       (int)ai->ai_addrlen) == 0)
            return;
        c->last_errno = EVUTIL_SOCKET_ERROR();
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    conn_fail_open(c, "connect to %s failed: %s", c->o->name,
                   evutil_socket_error_to_string(c->last_errno));
}

static SSL_CTX *
tls_ctx_new(const char *ca_file, bool verify)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    /* a close without close_notify is an EOF; bodies are framed */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    if ((ca_file != NULL ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                         : SSL_CTX_set_default_verify_paths(ctx)) != 1) {
        SSL_CTX_free(ctx);
        ctx = NULL;
    }
    ERR_clear_error();
    return ctx;
}

/* TCP is up: set TCP_NODELAY; for https, start the handshake. */
static void
tcp_connected(struct conn *c)
{
    struct origin *o = c->o;
    struct pm_httpc *h = o->h;
    int one = 1;
    SSL *ssl;

    setsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_NODELAY, &one,
               sizeof one);
    if (!o->tls) {
        conn_ready(c);
        return;
    }
    if (h->ssl_ctx == NULL && (h->ssl_ctx = tls_ctx_new(NULL, true)) == NULL) {
        conn_fail_open(c, "TLS: cannot load the system CA store");
        return;
    }
    ssl = SSL_new(h->ssl_ctx);
    PM_ASSERT(ssl != NULL);
    if (o->ip) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), o->host);
    } else {
        SSL_set_tlsext_host_name(ssl, o->host);
        SSL_set1_host(ssl, o->host);
    }
    c->bev = bufferevent_openssl_filter_new(h->base, c->bev, ssl,
                                            BUFFEREVENT_SSL_CONNECTING,
                                            BEV_OPT_CLOSE_ON_FREE);
    PM_ASSERT(c->bev != NULL);
    bufferevent_setcb(c->bev, read_cb, NULL, event_cb, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->state = C_HANDSHAKE;
}

/* Why the TLS handshake on c failed, into why. */
static void
tls_error(struct conn *c, short what, char *why, size_t len)
{
    long v = SSL_get_verify_result(bufferevent_openssl_get_ssl(c->bev));
    unsigned long e = bufferevent_get_openssl_error(c->bev);

    if (v == X509_V_ERR_HOSTNAME_MISMATCH ||
        v == X509_V_ERR_IP_ADDRESS_MISMATCH)
        snprintf(why, len,
                 "TLS: host name mismatch (the certificate is not "
                 "for %s)",
                 c->o->host);
    else if (v != X509_V_OK)
        snprintf(why, len, "TLS: certificate verify failed (%s)",
                 X509_verify_cert_error_string(v));
    else if (e != 0)
        snprintf(why, len, "TLS: %s",
                 ERR_reason_error_string(e) ? ERR_reason_error_string(e)
                                            : "handshake failed");
    else if (what & BEV_EVENT_EOF)
        snprintf(why, len, "TLS: connection closed during the handshake");
    else
        snprintf(why, len, "TLS: %s",
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    while (bufferevent_get_openssl_error(c->bev) != 0)
        ;
    ERR_clear_error();
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    struct pm_httpc *h = c->o->h;
    char why[PM_ERRMSG_SIZE];
    int err = EVUTIL_SOCKET_ERROR();

    enter(h);
    if (what & BEV_EVENT_CONNECTED) {
        if (c->state == C_CONNECTING)
            tcp_connected(c);
        else
            conn_ready(c);
    } else if (c->state == C_CONNECTING) {
        c->last_errno = err;
        bufferevent_free(c->bev);
        c->bev = NULL;
        connect_next(c);
    } else if (c->state == C_HANDSHAKE) {
        tls_error(c, what, why, sizeof why);
        conn_fail_open(c, "%s", why);
    } else if (c->state == C_IDLE) { /* the server closed it: forget it */
        conn_close(c);
    } else if ((what & BEV_EVENT_EOF) && c->ps == P_CLOSE) {
        complete(c, bufferevent_get_input(c->bev),
                 evbuffer_get_length(bufferevent_get_input(c->bev)));
    } else {
        unsigned long e = bufferevent_get_openssl_error(bev);

        if (what & BEV_EVENT_EOF)
            snprintf(why, sizeof why, "connection closed %s",
                     c->got_bytes ? "in the middle of the response"
                                  : "before the response");
        else if (e != 0)
            snprintf(why, sizeof why, "connection lost: TLS: %s",
                     ERR_reason_error_string(e) ? ERR_reason_error_string(e)
                                                : "error");
        else
            snprintf(why, sizeof why, "connection lost: %s",
                     evutil_socket_error_to_string(err));
        ERR_clear_error();
        conn_lost(c, why);
    }
    leave(h);
}

static void
connect_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    struct pm_httpc *h = c->o->h;

    (void)fd;
    (void)what;
    enter(h);
    conn_fail_open(c, "connect to %s timed out after %llu ms", c->o->name,
                   (unsigned long long)h->connect_ms);
    leave(h);
}

static void
resolved_cb(int result, struct evutil_addrinfo *ai, void *arg)
{
    struct lookup *l = arg;
    struct conn *c = l->c;
    struct pm_httpc *h;

    free(l);
    if (c == NULL) { /* closed meanwhile */
        if (ai != NULL)
            evutil_freeaddrinfo(ai);
        return;
    }
    h = c->o->h;
    enter(h);
    c->lookup = NULL;
    if (result != 0) {
        conn_fail_open(c, "DNS: cannot resolve %s: %s", c->o->host,
                       evutil_gai_strerror(result));
    } else {
        c->addrs = c->addr = ai;
        connect_next(c);
    }
    leave(h);
}

/* Open a connection for o: IP literals directly, names through evdns
 * (made now if this is the first name). May fail at once. */
static void
conn_open(struct origin *o)
{
    struct pm_httpc *h = o->h;
    struct conn *c = pm_xcalloc(1, sizeof *c);
    struct evutil_addrinfo hints = {0};
    struct timeval tv = {(time_t)(h->connect_ms / 1000),
                         (suseconds_t)(h->connect_ms % 1000) * 1000};

    c->o = o;
    c->next = o->conns;
    o->conns = c;
    o->nconns++;
    o->nopening++;
    c->timer = evtimer_new(h->base, connect_timeout_cb, c);
    evtimer_add(c->timer, &tv);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    if (o->ip) {
        hints.ai_flags = EVUTIL_AI_NUMERICHOST;
        if (evutil_getaddrinfo(o->host, o->port, &hints, &c->addrs) != 0) {
            conn_fail_open(c, "connect to %s failed: bad address", o->name);
            return;
        }
        c->addr = c->addrs;
        connect_next(c);
        return;
    }
    if (h->dns == NULL) {
        h->dns = evdns_base_new(h->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                             EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (h->dns == NULL) /* no resolv.conf: fail each lookup */
            h->dns = evdns_base_new(h->base, 0);
        PM_ASSERT(h->dns != NULL);
    }
    hints.ai_flags = EVUTIL_AI_ADDRCONFIG;
    c->state = C_RESOLVING;
    c->lookup = pm_xcalloc(1, sizeof *c->lookup);
    c->lookup->c = c;
    /* may call back (and close c) before it returns */
    evdns_getaddrinfo(h->dns, o->host, o->port, &hints, resolved_cb, c->lookup);
}

/* Free c; requests waiting for the origin get another chance. */
static void
conn_close(struct conn *c)
{
    struct origin *o = c->o;
    struct conn **pp = &o->conns;

    PM_ASSERT(c->req == NULL);
    while (*pp != c)
        pp = &(*pp)->next;
    *pp = c->next;
    o->nconns--;
    if (c->state < C_IDLE)
        o->nopening--;
    if (c->lookup != NULL)
        c->lookup->c = NULL;
    if (c->bev != NULL)
        bufferevent_free(c->bev);
    if (c->timer != NULL)
        event_free(c->timer);
    if (c->addrs != NULL)
        evutil_freeaddrinfo(c->addrs);
    if (c->chunks != NULL)
        evbuffer_free(c->chunks);
    free(c->head);
    free(c);
    if (o->qhead != NULL)
        kick(o->h);
}

/* ---- dispatch ------------------------------------------------------- */

/* Idle connections take waiting requests; open more while requests
 * outnumber the connections opening and the origin has room. */
static void
dispatch(struct origin *o)
{
    struct pm_httpc *h = o->h;
    struct conn *c;

    c = o->conns;
    while (!h->dead && c != NULL && o->qhead != NULL) {
        if (c->state == C_IDLE) {
            conn_start(c, queue_pop(o));
            c = o->conns; /* a write error may have closed some */
        } else {
            c = c->next;
        }
    }
    while (!h->dead && o->nqueued > o->nopening &&
           o->nconns < h->max_per_origin)
        conn_open(o);
}

static void
kick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pm_httpc *h = arg;
    struct origin *o;

    (void)fd;
    (void)what;
    enter(h);
    for (o = h->origins; o != NULL && !h->dead; o = o->next)
        dispatch(o);
    leave(h);
}

/* ---- the API -------------------------------------------------------- */

const char *
pm_httpc_res_header(const struct pm_httpc_res *res, const char *name)
{
    const struct head *hd = res->priv;
    size_t i;

    for (i = 0; hd != NULL && i < hd->n; i++)
        if (strcasecmp(hd->hdr[i].name, name) == 0)
            return hd->hdr[i].value;
    return NULL;
}

struct pm_httpc *
pm_httpc_new(struct event_base *base, const struct pm_httpc_opts *opts,
             char *err, size_t errlen)
{
    struct pm_httpc *h = pm_xcalloc(1, sizeof *h);

    h->base = base;
    h->max_per_origin = HTTPC_PER_ORIGIN;
    h->connect_ms = HTTPC_CONNECT_MS;
    if (opts != NULL) {
        if (opts->max_per_origin > 0)
            h->max_per_origin = opts->max_per_origin;
        if (opts->connect_timeout_ms > 0)
            h->connect_ms = opts->connect_timeout_ms;
        if (opts->no_verify &&
            (h->ssl_ctx = tls_ctx_new(NULL, false)) == NULL) {
            pm_errf(err, errlen, PM_EIO, "cannot make a TLS context");
            free(h);
            return NULL;
        }
        if (!opts->no_verify && opts->ca_file != NULL &&
            (h->ssl_ctx = tls_ctx_new(opts->ca_file, true)) == NULL) {
            pm_errf(err, errlen, PM_EINVAL, "cannot load the CA file %s",
                    opts->ca_file);
            free(h);
            return NULL;
        }
    }
    h->kick = event_new(base, -1, 0, kick_cb, h);
    return h;
}

static void
destroy(struct pm_httpc *h)
{
    struct origin *o;

    while ((o = h->origins) != NULL) {
        h->origins = o->next;
        while (o->conns != NULL)
            conn_close(o->conns);
        free(o->host);
        free(o->name);
        free(o->authority);
        free(o);
    }
    /* Lookups in flight end with DNS_ERR_SHUTDOWN on a later loop pass
     * (their connections are gone: resolved_cb just frees them). */
    if (h->dns != NULL)
        evdns_base_free(h->dns, 1);
    event_free(h->kick);
    if (h->ssl_ctx != NULL)
        SSL_CTX_free(h->ssl_ctx);
    free(h);
}

void
pm_httpc_free(struct pm_httpc *h)
{
    if (h == NULL || h->dead)
        return;
    h->dead = true;
    enter(h);
    while (h->first != NULL) {
        struct req *r = h->first;

        detach(r);
        fail(r, "client closed");
    }
    leave(h);
}

struct url {
    bool tls;
    const char *host;
    size_t host_len;
    char port[6];
    const char *path; /* up to '#' */
    size_t path_len;
};

static bool
host_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '_';
}

static int
url_parse(const char *s, struct url *u, char *err, size_t errlen)
{
    const char *p, *auth_end, *host_end;
    size_t i;
    unsigned long port;

    memset(u, 0, sizeof *u);
    if (strncasecmp(s, "http://", 7) == 0) {
        p = s + 7;
        strcpy(u->port, "80");
    } else if (strncasecmp(s, "https://", 8) == 0) {
        p = s + 8;
        u->tls = true;
        strcpy(u->port, "443");
    } else {
        return pm_errf(err, errlen, PM_EINVAL,
                       "bad URL: not http:// or https://");
    }
    auth_end = p + strcspn(p, "/?#");
    if (*p == '[') {
        host_end = memchr(p, ']', (size_t)(auth_end - p));
        if (host_end == NULL)
            return pm_errf(err, errlen, PM_EINVAL, "bad URL: bad host");
        u->host = p + 1;
        u->host_len = (size_t)(host_end - p - 1);
        host_end++;
        for (i = 0; i < u->host_len; i++)
            if (strchr("0123456789abcdefABCDEF:.", u->host[i]) == NULL)
                return pm_errf(err, errlen, PM_EINVAL, "bad URL: bad host");
    } else {
        host_end = p;
        while (host_end < auth_end && host_char(*host_end))
            host_end++;
        u->host = p;
        u->host_len = (size_t)(host_end - p);
    }
    if (u->host_len == 0 || u->host_len > 253)
        return pm_errf(err, errlen, PM_EINVAL, "bad URL: bad host");
    if (host_end < auth_end) {
        char *end;

        if (*host_end != ':' || host_end + 1 == auth_end ||
            (size_t)(auth_end - host_end - 1) >= sizeof u->port)
            return pm_errf(err, errlen, PM_EINVAL, "bad URL: bad host or port");
        memcpy(u->port, host_end + 1, (size_t)(auth_end - host_end - 1));
        u->port[auth_end - host_end - 1] = '\0';
        port = strtoul(u->port, &end, 10);
        if (*end != '\0' || u->port[0] < '0' || u->port[0] > '9' || port < 1 ||
            port > 65535)
            return pm_errf(err, errlen, PM_EINVAL, "bad URL: bad port");
    }
    u->path = auth_end;
    u->path_len = strcspn(auth_end, "#");
    for (i = 0; i < u->path_len; i++)
        if ((unsigned char)u->path[i] <= ' ' || u->path[i] == 0x7f)
            return pm_errf(err, errlen, PM_EINVAL,
                           "bad URL: a space or control character in the "
                           "path");
    return PM_OK;
}

static struct origin *
origin_get(struct pm_httpc *h, const struct url *u)
{
    struct origin *o;
    struct in6_addr a6;
    bool v6;

    for (o = h->origins; o != NULL; o = o->next)
        if (o->tls == u->tls && strcmp(o->port, u->port) == 0 &&
            pm_strcaseeq(u->host, u->host_len, o->host))
            return o;
    o = pm_xcalloc(1, sizeof *o);
    o->h = h;
    o->tls = u->tls;
    o->host = pm_xstrndup(u->host, u->host_len);
    pm_strlcpy(o->port, u->port, sizeof o->port);
    v6 = evutil_inet_pton(AF_INET6, o->host, &a6) == 1;
    o->ip = v6 || evutil_inet_pton(AF_INET, o->host, &a6) == 1;
    o->name = pm_xasprintf(v6 ? "[%s]:%s" : "%s:%s", o->host, o->port);
    if (strcmp(o->port, u->tls ? "443" : "80") == 0)
        o->authority = pm_xasprintf(v6 ? "[%s]" : "%s", o->host);
    else
        o->authority = pm_xstrdup(o->name);
    o->next = h->origins;
    h->origins = o;
    return o;
}

static bool
token_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9') ||
           (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch));
}

static int
check_request(const struct pm_httpc_req *req, char *err, size_t errlen)
{
    static const char *const ours[] = {"Host", "Content-Length", "Connection",
                                       "Transfer-Encoding"};
    size_t i, j;
    const char *m = req->method;

    for (i = 0; m != NULL && m[i] >= 'A' && m[i] <= 'Z'; i++)
        ;
    if (m == NULL || i == 0 || i > 16 || m[i] != '\0')
        return pm_errf(err, errlen, PM_EINVAL, "bad method %s",
                       m != NULL ? m : "(null)");
    for (i = 0; i < req->nheaders; i++) {
        const char *n = req->headers[i].name, *v = req->headers[i].value;

        for (j = 0; token_char(n[j]); j++)
            ;
        if (j == 0 || n[j] != '\0' || strpbrk(v, "\r\n") != NULL)
            return pm_errf(err, errlen, PM_EINVAL, "bad request header %s", n);
        for (j = 0; j < sizeof ours / sizeof ours[0]; j++)
            if (strcasecmp(n, ours[j]) == 0)
                return pm_errf(err, errlen, PM_EINVAL,
                               "request header %s is pm_httpc's to set", n);
    }
    return PM_OK;
}

/* Write the request into dst (NULL: only measure); its length. */
static size_t
wire_write(char *dst, const struct pm_httpc_req *req, const struct url *u,
           const struct origin *o, const char *clen)
{
    size_t n = 0, i;

#define PUT(s, len)                                                            \
    do {                                                                       \
        if (dst != NULL)                                                       \
            memcpy(dst + n, (s), (len));                                       \
        n += (len);                                                            \
    } while (0)
#define PUTS(s) PUT((s), strlen(s))
    PUTS(req->method);
    PUTS(" ");
    if (u->path_len == 0 || u->path[0] != '/')
        PUTS("/");
    PUT(u->path, u->path_len);
    PUTS(" HTTP/1.1\r\nHost: ");
    PUTS(o->authority);
    PUTS("\r\nConnection: keep-alive\r\n");
    if (clen != NULL) {
        PUTS("Content-Length: ");
        PUTS(clen);
        PUTS("\r\n");
    }
    for (i = 0; i < req->nheaders; i++) {
        PUTS(req->headers[i].name);
        PUTS(": ");
        PUTS(req->headers[i].value);
        PUTS("\r\n");
    }
    PUTS("\r\n");
    if (req->body_len > 0)
        PUT(req->body, req->body_len);
#undef PUTS
#undef PUT
    return n;
}

int
pm_httpc_send(struct pm_httpc *h, const struct pm_httpc_req *req,
              pm_httpc_fn cb, void *arg, char *err, size_t errlen)
{
    struct url u;
    struct req *r;
    char clen[24];
    bool bodyless;
    size_t len;

    if (h->dead)
        return pm_errf(err, errlen, PM_ECLOSED, "client closed");
    if (url_parse(req->url, &u, err, errlen) != PM_OK ||
        check_request(req, err, errlen) != PM_OK)
        return PM_EINVAL;
    r = pm_xcalloc(1, sizeof *r);
    r->h = h;
    r->o = origin_get(h, &u);
    r->cb = cb;
    r->arg = arg;
    pm_strlcpy(r->method, req->method, sizeof r->method);
    bodyless =
        strcmp(req->method, "HEAD") == 0 || strcmp(req->method, "GET") == 0;
    snprintf(clen, sizeof clen, "%zu", req->body_len);
    len = wire_write(NULL, req, &u, r->o,
                     bodyless && req->body_len == 0 ? NULL : clen);
    r->wire = pm_xmalloc(sizeof *r->wire + len);
    r->wire->refs = 1;
    r->wire->len = wire_write(r->wire->data, req, &u, r->o,
                              bodyless && req->body_len == 0 ? NULL : clen);
    r->timeout_ms = req->timeout_ms;
    if (req->timeout_ms > 0) {
        struct timeval tv = {(time_t)(req->timeout_ms / 1000),
                             (suseconds_t)(req->timeout_ms % 1000) * 1000};

        r->timer = evtimer_new(h->base, req_timeout_cb, r);
        evtimer_add(r->timer, &tv);
    }
    r->prev = h->last;
    if (h->last != NULL)
        h->last->next = r;
    else
        h->first = r;
    h->last = r;
    queue_push(r->o, r, false);
    kick(h);
    return PM_OK;
}
