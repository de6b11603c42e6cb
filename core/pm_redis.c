/*
 * pm_redis: RESP over a bufferevent (plain, or bufferevent_openssl for
 * rediss:// with certificate, SNI and host name checks), hiredis for
 * encoding (redisFormatCommandArgv) and parsing (redisReader).
 *
 * Pending commands wait in a FIFO of callbacks; replies are matched in
 * order, except pushes on a subscriber connection ("message",
 * "pmessage"), which go to the message callback. After a connect the
 * client sends AUTH and SELECT itself and reports "up" only when both
 * succeeded. A lost link fails every pending callback with NULL, reports
 * "down" and retries after 100 ms doubling to 5 s, with +-20 % jitter so
 * that a fleet does not reconnect in step. Loop thread only; a callback
 * may free the client (the free waits until the callback returns).
 */
#include "config.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "pm_log.h"
#include "pm_redis.h"
#include "pm_util.h"

#define PM_REDIS_RETRY_MIN_MS 100
#define PM_REDIS_RETRY_MAX_MS 5000
#define PM_REDIS_MAX_ARGS 64
#define PM_REDIS_MAX_ELEMENTS (1 << 20) /* in one array reply */

struct pending {
    pm_redis_reply_fn cb;
    void *arg;
    bool internal; /* AUTH/SELECT of the handshake */
    struct pending *next;
};

struct pm_redis {
    struct event_base *base;
    struct evdns_base *dns;
    struct pm_redis_url url;
    SSL_CTX *ssl_ctx;
    struct bufferevent *bev;
    redisReader *reader;
    struct pending *head, *tail;
    int handshake; /* internal replies still expected */
    bool up;
    unsigned attempt;
    struct event *retry;
    pm_redis_state_fn on_state;
    pm_redis_message_fn on_message;
    void *arg;
    int busy;  /* callbacks running */
    bool dead; /* freed during a callback */
};

/* ---- URL ----------------------------------------------------------- */

int
pm_redis_url_parse(const char *url, struct pm_redis_url *out, char *err,
                   size_t errlen)
{
    const char *p, *at, *hostend, *slash;
    char port[8];

    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (strncmp(url, "redis://", 8) == 0) {
        p = url + 8;
    } else if (strncmp(url, "rediss://", 9) == 0) {
        p = url + 9;
        out->tls = true;
    } else {
        return pm_errf(err, errlen, PM_EINVAL,
                       "redis.url must start with redis:// or rediss://");
    }
    slash = strchr(p, '/');
    at = memrchr(p, '@', slash ? (size_t)(slash - p) : strlen(p));
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));

        if (colon != NULL) {
            if (pm_percent_decode(p, (size_t)(colon - p), false, out->user,
                                  sizeof out->user) != PM_OK ||
                pm_percent_decode(colon + 1, (size_t)(at - colon - 1), false,
                                  out->password, sizeof out->password) != PM_OK)
                return pm_errf(err, errlen, PM_EINVAL,
                               "redis.url: bad user or password");
        } else if (pm_percent_decode(p, (size_t)(at - p), false, out->password,
                                     sizeof out->password) != PM_OK) {
            return pm_errf(err, errlen, PM_EINVAL, "redis.url: bad password");
        }
        p = at + 1;
    }
    hostend = slash ? slash : p + strlen(p);
    if (*p == '[') { /* [IPv6]:port */
        const char *rb = memchr(p, ']', (size_t)(hostend - p));

        if (rb == NULL || rb == p + 1 ||
            (size_t)(rb - p - 1) >= sizeof out->host)
            return pm_errf(err, errlen, PM_EINVAL, "redis.url: bad host");
        memcpy(out->host, p + 1, (size_t)(rb - p - 1));
        p = rb + 1;
    } else {
        const char *colon = memchr(p, ':', (size_t)(hostend - p));
        const char *he = colon ? colon : hostend;

        if (he == p || (size_t)(he - p) >= sizeof out->host)
            return pm_errf(err, errlen, PM_EINVAL, "redis.url: bad host");
        memcpy(out->host, p, (size_t)(he - p));
        p = he;
    }
    if (*p == ':') {
        size_t n = (size_t)(hostend - p - 1);
        char *end;
        long v;

        if (n == 0 || n >= sizeof port)
            return pm_errf(err, errlen, PM_EINVAL, "redis.url: bad port");
        memcpy(port, p + 1, n);
        port[n] = '\0';
        v = strtol(port, &end, 10);
        if (*end != '\0' || v < 1 || v > 65535)
            return pm_errf(err, errlen, PM_EINVAL, "redis.url: bad port");
        out->port = (int)v;
    } else if (p != hostend) {
        return pm_errf(err, errlen, PM_EINVAL, "redis.url: bad host");
    }
    if (slash != NULL && slash[1] != '\0') {
        char *end;
        long v = strtol(slash + 1, &end, 10);

        if (*end != '\0' || v < 0 || v > 1000000)
            return pm_errf(err, errlen, PM_EINVAL,
                           "redis.url: bad database number");
        out->db = (int)v;
    }
    return PM_OK;
}

/* ---- replies ------------------------------------------------------- */

/*
 * hiredis 0.14 allocates an array reply's element table as soon as it
 * reads the count, so "*99999999\r\n" alone would cost 800 MB: refuse
 * counts over PM_REDIS_MAX_ELEMENTS (the reader then fails, and the link
 * is dropped as for any malformed reply).
 */
static void *(*hiredis_create_array)(const redisReadTask *task, int elements);

static void *
create_array(const redisReadTask *task, int elements)
{
    if (elements > PM_REDIS_MAX_ELEMENTS)
        return NULL;
    return hiredis_create_array(task, elements);
}

redisReader *
pm_redis_reader_new(void)
{
    static redisReplyObjectFunctions fns;
    redisReader *reader = redisReaderCreate();

    PM_ASSERT(reader != NULL);
    if (hiredis_create_array == NULL) {
        fns = *reader->fn;
        hiredis_create_array = fns.createArray;
        fns.createArray = create_array;
    }
    reader->fn = &fns;
    return reader;
}

enum pm_redis_type
pm_redis_reply_type(const struct pm_redis_reply *rep)
{
    return (enum pm_redis_type)((const redisReply *)rep)->type;
}

long long
pm_redis_reply_integer(const struct pm_redis_reply *rep)
{
    return ((const redisReply *)rep)->integer;
}

const char *
pm_redis_reply_str(const struct pm_redis_reply *rep, size_t *len)
{
    const redisReply *r = (const redisReply *)rep;

    if (len != NULL)
        *len = r->str ? (size_t)r->len : 0;
    return r->str;
}

size_t
pm_redis_reply_elements(const struct pm_redis_reply *rep)
{
    const redisReply *r = (const redisReply *)rep;

    return r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
}

const struct pm_redis_reply *
pm_redis_reply_element(const struct pm_redis_reply *rep, size_t i)
{
    const redisReply *r = (const redisReply *)rep;

    if (r->type != REDIS_REPLY_ARRAY || i >= r->elements)
        return NULL;
    return (const struct pm_redis_reply *)r->element[i];
}

/* ---- connection ---------------------------------------------------- */

static void connect_now(struct pm_redis *r);

static void
set_up(struct pm_redis *r, bool up, const char *why)
{
    char port[8];

    if (r->up == up)
        return;
    r->up = up;
    snprintf(port, sizeof port, "%d", r->url.port);
    if (up)
        pm_log_kv(PM_LOG_INFO, "redis_up", "connected to redis", "host",
                  r->url.host, "port", port, NULL);
    else
        pm_log_kv(PM_LOG_WARN, "redis_down", why, "host", r->url.host, "port",
                  port, NULL);
    if (r->on_state != NULL) {
        r->busy++;
        r->on_state(up, r->arg);
        r->busy--;
    }
}

static void
retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pm_redis *r = arg;

    (void)fd;
    (void)what;
    connect_now(r);
    if (r->dead && r->busy == 0)
        pm_redis_free(r);
}

/* Drop the link, fail what is pending, schedule a reconnect. */
static void
disconnect(struct pm_redis *r, const char *why)
{
    struct pending *p;
    unsigned ms;
    struct timeval tv;

    if (r->bev != NULL) {
        bufferevent_free(r->bev);
        r->bev = NULL;
    }
    redisReaderFree(r->reader);
    r->reader = pm_redis_reader_new();
    r->handshake = 0;
    while ((p = r->head) != NULL && !r->dead) {
        r->head = p->next;
        if (p->cb != NULL) {
            r->busy++;
            p->cb(NULL, p->arg);
            r->busy--;
        }
        free(p);
    }
    r->tail = r->head;
    set_up(r, false, why);
    if (r->dead)
        return;
    ms = PM_REDIS_RETRY_MIN_MS << (r->attempt < 6 ? r->attempt : 6);
    if (ms > PM_REDIS_RETRY_MAX_MS)
        ms = PM_REDIS_RETRY_MAX_MS;
    {
        unsigned char j;

        pm_random_bytes(&j, 1);
        ms = ms * (80 + j % 41) / 100; /* 80 % to 120 % */
    }
    r->attempt++;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    event_add(r->retry, &tv);
}

static void
push(struct pm_redis *r, pm_redis_reply_fn cb, void *arg, bool internal)
{
    struct pending *p = pm_xcalloc(1, sizeof *p);

    p->cb = cb;
    p->arg = arg;
    p->internal = internal;
    if (r->tail != NULL)
        r->tail->next = p;
    else
        r->head = p;
    r->tail = p;
}

static void
send_argv(struct pm_redis *r, int argc, const char **argv,
          const size_t *argvlen)
{
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);

    PM_ASSERT(len > 0);
    bufferevent_write(r->bev, cmd, (size_t)len);
    free(cmd);
}

bool
pm_redis_reply_push(const struct pm_redis_reply *reply, const char **channel,
                    size_t *chlen, const char **msg, size_t *len)
{
    const redisReply *rep = (const redisReply *)reply;
    size_t c; /* channel index */

    if (!(rep->type == REDIS_REPLY_ARRAY && rep->elements >= 3 &&
          rep->element[0]->type == REDIS_REPLY_STRING &&
          ((rep->elements == 3 &&
            strcmp(rep->element[0]->str, "message") == 0) ||
           (rep->elements == 4 &&
            strcmp(rep->element[0]->str, "pmessage") == 0))))
        return false;
    c = rep->elements - 2;
    if (rep->element[c]->type != REDIS_REPLY_STRING ||
        rep->element[c + 1]->type != REDIS_REPLY_STRING)
        return false; /* not a message the callbacks could read */
    *channel = rep->element[c]->str;
    *chlen = (size_t)rep->element[c]->len;
    *msg = rep->element[c + 1]->str;
    *len = (size_t)rep->element[c + 1]->len;
    return true;
}

/* Handle one reply; false if the link was dropped. */
static bool
dispatch(struct pm_redis *r, redisReply *rep)
{
    struct pending *p;
    const char *ch, *msg;
    size_t chlen, len;

    if (r->on_message != NULL &&
        pm_redis_reply_push((const struct pm_redis_reply *)rep, &ch, &chlen,
                            &msg, &len)) {
        r->busy++;
        r->on_message(ch, chlen, msg, len, r->arg);
        r->busy--;
        return true;
    }
    p = r->head;
    if (p == NULL) {
        disconnect(r, "redis sent a reply nobody asked for");
        return false;
    }
    r->head = p->next;
    if (r->head == NULL)
        r->tail = NULL;
    if (p->internal) {
        free(p);
        if (rep->type == REDIS_REPLY_ERROR) {
            char why[300];

            snprintf(why, sizeof why, "redis refused the handshake: %.*s",
                     (int)rep->len, rep->str);
            pm_log(PM_LOG_ERROR, "redis_auth_failed", "%s", why);
            disconnect(r, why);
            return false;
        }
        if (--r->handshake == 0) {
            r->attempt = 0;
            set_up(r, true, NULL);
        }
        return true;
    }
    if (p->cb != NULL) {
        r->busy++;
        p->cb((const struct pm_redis_reply *)rep, p->arg);
        r->busy--;
    }
    free(p);
    return true;
}

static void
read_cb(struct bufferevent *bev, void *arg)
{
    struct pm_redis *r = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len = evbuffer_get_length(in);
    void *reply;

    if (redisReaderFeed(r->reader, (const char *)evbuffer_pullup(in, -1),
                        len) != REDIS_OK) {
        disconnect(r, "cannot read redis reply");
        return;
    }
    evbuffer_drain(in, len);
    for (;;) {
        if (redisReaderGetReply(r->reader, &reply) != REDIS_OK) {
            disconnect(r, "malformed redis reply");
            return;
        }
        if (reply == NULL)
            break;
        if (!dispatch(r, reply)) {
            freeReplyObject(reply);
            break;
        }
        freeReplyObject(reply);
        if (r->dead)
            break;
    }
    if (r->dead && r->busy == 0)
        pm_redis_free(r);
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct pm_redis *r = arg;
    char why[512];

    if (what & BEV_EVENT_CONNECTED) {
        int one = 1, fd = bufferevent_getfd(bev);
        const char *argv[3];
        size_t argvlen[3];
        char db[16];

        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (r->url.password[0] != '\0') {
            int n = 0;

            argv[n] = "AUTH";
            argvlen[n++] = 4;
            if (r->url.user[0] != '\0') {
                argv[n] = r->url.user;
                argvlen[n] = strlen(r->url.user);
                n++;
            }
            argv[n] = r->url.password;
            argvlen[n] = strlen(r->url.password);
            n++;
            send_argv(r, n, argv, argvlen);
            push(r, NULL, NULL, true);
            r->handshake++;
        }
        if (r->url.db != 0) {
            snprintf(db, sizeof db, "%d", r->url.db);
            argv[0] = "SELECT";
            argvlen[0] = 6;
            argv[1] = db;
            argvlen[1] = strlen(db);
            send_argv(r, 2, argv, argvlen);
            push(r, NULL, NULL, true);
            r->handshake++;
        }
        if (r->handshake == 0) {
            r->attempt = 0;
            set_up(r, true, NULL);
        }
        return;
    }
    if (what & BEV_EVENT_EOF) {
        snprintf(why, sizeof why, "redis closed the connection");
    } else {
        unsigned long e = bufferevent_get_openssl_error(bev);
        int dns = bufferevent_socket_get_dns_error(bev);

        if (e != 0)
            ERR_error_string_n(e, why, sizeof why);
        else if (dns != 0)
            snprintf(why, sizeof why, "cannot resolve %s: %s", r->url.host,
                     evutil_gai_strerror(dns));
        else
            snprintf(why, sizeof why, "%s",
                     evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        ERR_clear_error();
    }
    disconnect(r, why);
    if (r->dead && r->busy == 0)
        pm_redis_free(r);
}

static void
connect_now(struct pm_redis *r)
{
    if (r->dead)
        return;
    if (r->url.tls) {
        SSL *ssl = SSL_new(r->ssl_ctx);

        if (ssl == NULL) {
            disconnect(r, "cannot create a TLS session");
            return;
        }
        SSL_set_tlsext_host_name(ssl, r->url.host);
        /* Check the certificate names this host (DNS name or IP). */
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), r->url.host) !=
            1)
            SSL_set1_host(ssl, r->url.host);
        ERR_clear_error();
        r->bev = bufferevent_openssl_socket_new(r->base, -1, ssl,
                                                BUFFEREVENT_SSL_CONNECTING,
                                                BEV_OPT_CLOSE_ON_FREE);
    } else {
        r->bev = bufferevent_socket_new(r->base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (r->bev == NULL) {
        disconnect(r, "cannot create a socket");
        return;
    }
    bufferevent_setcb(r->bev, read_cb, NULL, event_cb, r);
    bufferevent_enable(r->bev, EV_READ | EV_WRITE);
    if (bufferevent_socket_connect_hostname(r->bev, r->dns, AF_UNSPEC,
                                            r->url.host, r->url.port) != 0)
        disconnect(r, "cannot start connecting");
}

struct pm_redis *
pm_redis_new(struct event_base *base, const struct pm_redis_opts *opts,
             char *err, size_t errlen)
{
    struct pm_redis *r = pm_xcalloc(1, sizeof *r);

    if (pm_redis_url_parse(opts->url, &r->url, err, errlen) != PM_OK)
        goto fail;
    r->base = base;
    r->on_state = opts->on_state;
    r->on_message = opts->on_message;
    r->arg = opts->arg;
    if (r->url.tls) {
        r->ssl_ctx = SSL_CTX_new(TLS_client_method());
        SSL_CTX_set_min_proto_version(r->ssl_ctx, TLS1_2_VERSION);
        SSL_CTX_set_verify(r->ssl_ctx, SSL_VERIFY_PEER, NULL);
        if ((opts->tls_ca != NULL
                 ? SSL_CTX_load_verify_locations(r->ssl_ctx, opts->tls_ca, NULL)
                 : SSL_CTX_set_default_verify_paths(r->ssl_ctx)) != 1) {
            pm_errf(err, errlen, PM_EINVAL, "cannot load the redis CA %s",
                    opts->tls_ca ? opts->tls_ca : "store");
            goto fail;
        }
    }
    r->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                      EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (r->dns == NULL)
        r->dns = evdns_base_new(base, 0); /* no resolv.conf: IPs only */
    r->reader = pm_redis_reader_new();
    r->retry = evtimer_new(base, retry_cb, r);
    connect_now(r);
    return r;
fail:
    if (r->ssl_ctx != NULL)
        SSL_CTX_free(r->ssl_ctx);
    free(r);
    return NULL;
}

void
pm_redis_free(struct pm_redis *r)
{
    struct pending *p;

    if (r == NULL)
        return;
    if (r->busy > 0) { /* inside one of our callbacks: finish later */
        r->dead = true;
        return;
    }
    if (r->bev != NULL)
        bufferevent_free(r->bev);
    while ((p = r->head) != NULL) {
        r->head = p->next;
        free(p);
    }
    event_free(r->retry);
    redisReaderFree(r->reader);
    if (r->dns != NULL)
        evdns_base_free(r->dns, 0);
    if (r->ssl_ctx != NULL)
        SSL_CTX_free(r->ssl_ctx);
    free(r);
}

bool
pm_redis_is_up(const struct pm_redis *r)
{
    return r->up;
}

int
pm_redis_command(struct pm_redis *r, pm_redis_reply_fn cb, void *arg, int argc,
                 const char **argv, const size_t *argvlen)
{
    if (!r->up || r->dead)
        return PM_EUNAVAIL;
    send_argv(r, argc, argv, argvlen);
    push(r, cb, arg, false);
    return PM_OK;
}

int
pm_redis_commandv(struct pm_redis *r, pm_redis_reply_fn cb, void *arg, ...)
{
    const char *argv[PM_REDIS_MAX_ARGS];
    size_t argvlen[PM_REDIS_MAX_ARGS];
    int argc = 0;
    va_list ap;
    const char *s;

    va_start(ap, arg);
    while ((s = va_arg(ap, const char *)) != NULL) {
        PM_ASSERT(argc < PM_REDIS_MAX_ARGS);
        argv[argc] = s;
        argvlen[argc++] = strlen(s);
    }
    va_end(ap);
    return pm_redis_command(r, cb, arg, argc, argv, argvlen);
}
