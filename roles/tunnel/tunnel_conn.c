/*
 * tunnel_conn: a client connection of the tunnel role, from accept to
 * close. Server mode: the mTLS handshake (identity checked by pm_tls and
 * tunnel_identity), then proxy request heads; agent mode: the local
 * plain-HTTP proxy port. Owns the connection's state machine, its one
 * timer (handshake/head deadline, keep-alive idle, pipe idle, half-close
 * and lifetime), the answers it gives itself (core endpoints, refusals
 * with Proxy-Status), stream accounting and the access log line.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "pm_addr.h"
#include "pm_http.h"
#include "pm_log.h"
#include "pm_metrics.h"
#include "pm_server.h"
#include "pm_tls.h"
#include "pm_util.h"
#include "tunnel.h"

static char head_buf[TUNNEL_CHUNK];

static void conn_rd(int fd, short what, void *arg);
static void conn_wr(int fd, short what, void *arg);
static void target_rd(int fd, short what, void *arg);
static void target_wr(int fd, short what, void *arg);
static void read_head(struct tunnel_conn *c);

static const struct pm_core_conf *
core(const struct tunnel_conn *c)
{
    return pm_server_conf(c->t->srv);
}

/* ---- timer ----------------------------------------------------------- */

/* The deadline that applies in the current state (0: none). */
static uint64_t
deadline(const struct tunnel_conn *c)
{
    const struct tunnel_conf *tc = &c->t->conf;
    uint64_t d = 0, x;

    switch (c->state) {
    case TS_HANDSHAKE:
        return c->last_ms + core(c)->http_header_timeout;
    case TS_HEAD:
        return c->last_ms +
               ((c->head && evbuffer_get_length(c->head)) || c->requests == 0
                    ? core(c)->http_header_timeout
                    : core(c)->http_keepalive_timeout);
    case TS_DIAL:
    case TS_UPSTREAM:
    case TS_PROBE:
        return c->stream_ms + tc->connect_timeout;
    case TS_CLOSING:
        return c->last_ms + 5000;
    case TS_PIPE:
    case TS_FORWARD:
        d = c->last_ms + tc->idle_timeout;
        if (c->client.eof || c->target.eof) {
            x = c->last_ms + tc->close_timeout;
            d = x < d ? x : d;
        }
        if (tc->max_lifetime > 0) {
            x = c->stream_ms + tc->max_lifetime;
            d = x < d ? x : d;
        }
        return d;
    }
    return d;
}

void
tunnel_conn_arm(struct tunnel_conn *c)
{
    uint64_t d = deadline(c), now = pm_now_ms();
    uint64_t ms = d > now ? d - now : 0;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};

    event_add(c->timer, &tv);
}

static void
timer_cb(int fd, short what, void *arg)
{
    struct tunnel_conn *c = arg;
    const struct tunnel_conf *tc = &c->t->conf;
    uint64_t now = pm_now_ms();

    (void)fd;
    (void)what;
    if (now < deadline(c)) {
        tunnel_conn_arm(c); /* activity moved the deadline */
        return;
    }
    switch (c->state) {
    case TS_HANDSHAKE:
        (*c->t->stats.handshakes_failed)++;
        tunnel_conn_close(c, "handshake_timeout");
        break;
    case TS_HEAD:
        tunnel_conn_close(c, c->head && evbuffer_get_length(c->head)
                                 ? "header_timeout"
                                 : "keepalive_timeout");
        break;
    case TS_DIAL:
    case TS_UPSTREAM:
    case TS_PROBE:
        if (c->t->agent) {
            tunnel_agent_conn_failed(c, "no answer within "
                                        "tunnel.connect_timeout");
        } else {
            tunnel_conn_refuse(c, 504, "connection_timeout",
                               "the target did not answer in time");
        }
        break;
    case TS_PIPE:
    case TS_FORWARD:
        if (tc->max_lifetime > 0 && now >= c->stream_ms + tc->max_lifetime)
            tunnel_conn_close(c, "lifetime");
        else if (now >= c->last_ms + tc->idle_timeout)
            tunnel_conn_close(c, "idle_timeout");
        else
            tunnel_conn_close(c, "close_timeout");
        break;
    case TS_CLOSING:
        tunnel_conn_close(c, NULL);
        break;
    }
}

/* ---- lifecycle ---------------------------------------------------------- */

static void
conn_free_cb(void *arg)
{
    struct tunnel_conn *c = arg;

    event_free(c->timer);
    free(c);
}

static const char *
state_kind(const struct tunnel_conn *c)
{
    return c->kind ? c->kind : "none";
}

bool
tunnel_stream_begin(struct tunnel_conn *c, const char *kind)
{
    struct tunnel *t = c->t;

    c->kind = kind;
    c->stream_ms = c->last_ms = pm_now_ms();
    c->up = c->down = 0;
    c->status = 0;
    if (t->conf.max_streams > 0 && t->nstreams >= t->conf.max_streams)
        return false;
    c->stream = true;
    t->nstreams++;
    (*t->stats.streams_open)++;
    if (strcmp(kind, "connect") == 0)
        (*t->stats.streams_connect)++;
    else
        (*t->stats.streams_http)++;
    return true;
}

void
tunnel_stream_end(struct tunnel_conn *c, const char *result)
{
    char st[16], up[24], down[24], ms[24];

    if (c->kind == NULL)
        return;
    if (c->stream) {
        c->stream = false;
        c->t->nstreams--;
        (*c->t->stats.streams_open)--;
    }
    if (c->status > 0)
        snprintf(st, sizeof st, "%d", c->status);
    else
        pm_strlcpy(st, "-", sizeof st); /* the agent relays the answer */
    snprintf(up, sizeof up, "%llu", (unsigned long long)c->up);
    snprintf(down, sizeof down, "%llu", (unsigned long long)c->down);
    snprintf(ms, sizeof ms, "%llu",
             (unsigned long long)(pm_now_ms() - c->stream_ms));
    pm_log_kv(PM_LOG_INFO, "tunnel_stream", "stream ended", "client",
              c->cn[0] ? c->cn : "-", "ip", c->ip, "method", c->method,
              "target", c->target_name, "status", st, "bytes_up", up,
              "bytes_down", down, "ms", ms, "result", result ? result : "ok",
              "kind", state_kind(c), NULL);
    c->kind = NULL;
}

void
tunnel_conn_close(struct tunnel_conn *c, const char *result)
{
    struct tunnel *t = c->t;

    if (c->dead)
        return;
    c->dead = true;
    ERR_clear_error(); /* what a failed TLS read left */
    tunnel_stream_end(c, result);
    tunnel_dial_cancel(c);
    tunnel_forward_free(c);
    tunnel_end_free(&c->client);
    tunnel_end_free(&c->target);
    if (c->head != NULL)
        evbuffer_free(c->head);
    c->head = NULL;
    event_del(c->timer);
    if (c->counted) {
        t->nconns--;
        (*t->stats.conns_open)--;
    }
    TAILQ_REMOVE(&t->conns, c, link);
    pm_server_defer(t->srv, conn_free_cb, c);
}

void
tunnel_conn_activity(struct tunnel_conn *c, uint64_t up, uint64_t down)
{
    struct tunnel *t = c->t;

    c->last_ms = pm_now_ms();
    c->up += up;
    c->down += down;
    *t->stats.bytes_up += up;
    *t->stats.bytes_down += down;
    *t->stats.last_activity = (int64_t)(pm_wall_ms() / 1000);
}

/* ---- answers -------------------------------------------------------- */

void
tunnel_conn_close_after_flush(struct tunnel_conn *c)
{
    int rv;

    c->state = TS_CLOSING;
    tunnel_end_read_off(&c->client);
    rv = tunnel_end_shutdown(&c->client);
    if (rv == PM_EAGAIN) {
        rv = tunnel_end_flush(&c->client);
        if (rv == PM_EAGAIN) {
            c->last_ms = pm_now_ms();
            tunnel_conn_arm(c);
            return;
        }
    }
    tunnel_conn_close(c, NULL);
}

void
tunnel_conn_refuse(struct tunnel_conn *c, int status, const char *error,
                   const char *details)
{
    struct evbuffer *b = evbuffer_new();
    char extra[768], body[600];
    int n;
    char labels[96];

    snprintf(
        extra, sizeof extra,
        "Proxy-Status: p2pmesh; error=%s; details=\"%s\"\r\n%s", error, details,
        status == 407 ? "Proxy-Authenticate: Basic realm=\"p2pmesh\"\r\n" : "");
    n = snprintf(body, sizeof body, "%d %s: %s\n", status,
                 pm_http_reason(status), details);
    pm_http_write_response(
        b, status, "text/plain; charset=utf-8", extra, body,
        (size_t)n < sizeof body ? (size_t)n : sizeof body - 1, false, false);
    snprintf(labels, sizeof labels, "reason=\"%s\"", error);
    (*pm_metrics_counter(pm_server_metrics(c->t->srv),
                         "p2pmesh_tunnel_refused_total", labels,
                         "Proxy requests refused or failed, by reason"))++;
    pm_log_kv(PM_LOG_INFO, "tunnel_refused", details, "client",
              c->cn[0] ? c->cn : "-", "ip", c->ip, "method", c->method,
              "target", c->target_name, "error", error, NULL);
    c->status = status;
    tunnel_stream_end(c, error);
    tunnel_dial_cancel(c);
    tunnel_forward_free(c);
    tunnel_end_free(&c->target);
    tunnel_end_send(&c->client, evbuffer_pullup(b, -1), evbuffer_get_length(b));
    evbuffer_free(b);
    tunnel_conn_close_after_flush(c);
}

/* ---- handshake (server mode) ------------------------------------------- */

static void
handshake(struct tunnel_conn *c)
{
    int rv = tunnel_end_handshake(&c->client);
    X509 *peer;
    char why[256];

    if (rv == PM_EAGAIN)
        return;
    if (rv != PM_OK) {
        char e[256];

        (*c->t->stats.handshakes_failed)++;
        pm_log_kv(PM_LOG_INFO, "tunnel_handshake_failed",
                  pm_tls_error_text(e, sizeof e), "ip", c->ip, NULL);
        tunnel_conn_close(c, NULL);
        return;
    }
    (*c->t->stats.handshakes_ok)++;
    peer = SSL_get0_peer_certificate(c->client.ssl);
    if (peer != NULL)
        tunnel_identity_cn(peer, c->cn, sizeof c->cn);
    if (SSL_session_reused(c->client.ssl)) {
        (*c->t->stats.handshakes_resumed)++;
        /* A resumed session skipped verification: check it again. */
        if (peer == NULL || !tunnel_identity_check(c->t, c->client.ssl, peer,
                                                   why, sizeof why)) {
            pm_log_kv(PM_LOG_INFO, "tunnel_handshake_failed", why, "ip", c->ip,
                      NULL);
            tunnel_conn_close(c, NULL);
            return;
        }
    }
    c->state = TS_HEAD;
    c->last_ms = pm_now_ms();
    tunnel_end_read_on(&c->client);
    if (c->over_limit) {
        tunnel_conn_refuse(c, 503, "connection_limit_reached",
                           "tunnel.max_connections reached");
        return;
    }
    tunnel_conn_arm(c);
    read_head(c); /* the request may have come with the handshake */
}

/* ---- request heads ------------------------------------------------------ */

/* host:port of a CONNECT target into host (no brackets) and *port. */
static bool
split_authority(const char *s, size_t n, char *host, size_t hlen, int *port)
{
    const char *colon;
    size_t hl;
    long p = 0;
    size_t i;

    if (n > 0 && s[0] == '[') {
        const char *rb = memchr(s, ']', n);

        if (rb == NULL || rb + 1 >= s + n || rb[1] != ':')
            return false;
        hl = (size_t)(rb - s - 1);
        if (hl == 0 || hl >= hlen)
            return false;
        memcpy(host, s + 1, hl);
        colon = rb + 1;
    } else {
        colon = NULL;
        for (i = n; i > 0; i--)
            if (s[i - 1] == ':') {
                colon = s + i - 1;
                break;
            }
        if (colon == NULL)
            return false;
        hl = (size_t)(colon - s);
        if (hl == 0 || hl >= hlen || memchr(s, ':', hl) != NULL)
            return false;
        memcpy(host, s, hl);
    }
    host[hl] = '\0';
    for (i = (size_t)(colon + 1 - s); i < n; i++) {
        if (s[i] < '0' || s[i] > '9' || p > 65535)
            return false;
        p = p * 10 + (s[i] - '0');
    }
    if (i == (size_t)(colon + 1 - s) || p < 1 || p > 65535)
        return false;
    *port = (int)p;
    return true;
}

static void
start_connect(struct tunnel_conn *c, const struct pm_http_request *req)
{
    char host[TUNNEL_NAME_MAX], details[300];
    const char *error;
    int port, status;
    bool ok =
        split_authority(req->target, req->target_len, host, sizeof host, &port);

    evbuffer_drain(c->head, req->head_len); /* req is gone from here on */
    if (!ok) {
        tunnel_conn_refuse(c, 400, "http_request_error",
                           "CONNECT needs a host:port target");
        return;
    }
    if (tunnel_policy_name(c->t->policy, host, port, true, &status, &error,
                           details, sizeof details) != PM_OK) {
        tunnel_conn_refuse(c, status, error, details);
        return;
    }
    tunnel_dial_start(c, host, port, true);
}

static bool
authorized(const struct tunnel_conn *c, const struct pm_http_request *req)
{
    const char *want = c->t->conf.proxy_auth;
    const struct pm_http_header *h;
    unsigned char dec[512];
    int n;

    if (want == NULL || want[0] == '\0')
        return true;
    h = pm_http_header_get(req, "proxy-authorization");
    if (h == NULL || h->value_len < 7 || h->value_len > 600 ||
        !pm_strcaseeq(h->value, 6, "Basic "))
        return false;
    n = EVP_DecodeBlock(dec, (const unsigned char *)h->value + 6,
                        (int)h->value_len - 6);
    if (n < 0)
        return false;
    /* EVP_DecodeBlock counts the padding as zero bytes */
    while (n > 0 && h->value[h->value_len - 1] == '=' && dec[n - 1] == '\0' &&
           (size_t)n > strlen(want))
        n--;
    return (size_t)n == strlen(want) &&
           CRYPTO_memcmp(dec, want, (size_t)n) == 0;
}

/* The agent forwards the head as it came, less Proxy-Authorization. */
static void
agent_forward_head(struct tunnel_conn *c, const struct pm_http_request *req)
{
    struct evbuffer *b = evbuffer_new();
    size_t i;

    evbuffer_add_printf(b, "%.*s %.*s HTTP/1.%d\r\n", (int)req->method_len,
                        req->method, (int)req->target_len, req->target,
                        req->minor);
    for (i = 0; i < req->nheaders; i++) {
        const struct pm_http_header *h = &req->headers[i];

        if (pm_strcaseeq(h->name, h->name_len, "proxy-authorization"))
            continue;
        evbuffer_add_printf(b, "%.*s: %.*s\r\n", (int)h->name_len, h->name,
                            (int)h->value_len, h->value);
    }
    evbuffer_add(b, "\r\n", 2);
    /* Queued for the server; written once the mTLS stream is up. */
    c->target.out = b;
}

static void
serve_origin_form(struct tunnel_conn *c, const struct pm_http_request *req)
{
    struct evbuffer *b;
    bool keep = req->keep_alive;

    /* Our own endpoints read no body: refuse one, or its bytes would be
     * taken for the next request (request smuggling). */
    if (req->content_length > 0 || req->chunked) {
        tunnel_conn_refuse(c, 400, "http_request_error",
                           "a request body is not accepted here");
        return;
    }
    b = evbuffer_new();
    if (pm_server_core_response(c->t->srv, req, b, keep)) {
        evbuffer_drain(c->head, req->head_len);
        if (tunnel_end_send(&c->client, evbuffer_pullup(b, -1),
                            evbuffer_get_length(b)) == PM_EIO)
            keep = false;
        evbuffer_free(b);
        if (keep)
            tunnel_conn_next_request(c);
        else
            tunnel_conn_close_after_flush(c);
        return;
    }
    evbuffer_free(b);
    tunnel_conn_refuse(c, c->t->agent ? 404 : 400, "http_request_error",
                       "not a proxy request (use CONNECT or an absolute URL)");
}

/* One complete head is at the front of c->head: act on it. */
static void
dispatch(struct tunnel_conn *c, const struct pm_http_request *req)
{
    bool connect = pm_strcaseeq(req->method, req->method_len, "CONNECT");

    snprintf(c->method, sizeof c->method, "%.*s",
             (int)(req->method_len < 15 ? req->method_len : 15), req->method);
    snprintf(c->target_name, sizeof c->target_name, "%.*s",
             (int)(req->target_len < TUNNEL_NAME_MAX ? req->target_len
                                                     : TUNNEL_NAME_MAX),
             req->target);
    c->requests++;
    if (!connect && req->target_len > 0 && req->target[0] == '/') {
        serve_origin_form(c, req);
        return;
    }
    if (c->t->draining) {
        tunnel_conn_refuse(c, 503, "connection_limit_reached",
                           "the proxy is shutting down");
        return;
    }
    if (c->t->agent && !authorized(c, req)) {
        tunnel_conn_refuse(c, 407, "http_request_denied",
                           "proxy authentication required");
        return;
    }
    if (!tunnel_stream_begin(c, connect ? "connect" : "http")) {
        tunnel_conn_refuse(c, 503, "connection_limit_reached",
                           "tunnel.max_streams reached");
        return;
    }
    if (c->t->agent) {
        agent_forward_head(c, req);
        evbuffer_drain(c->head, req->head_len);
        tunnel_agent_dial(c);
        return;
    }
    if (connect) {
        start_connect(c, req);
        return;
    }
    tunnel_forward_start(c, req);
}

static void
read_head(struct tunnel_conn *c)
{
    static struct pm_http_request req; /* 3 KB: not per connection */
    size_t max = core(c)->http_max_header;

    for (;;) {
        long n = tunnel_end_read(&c->client, head_buf, sizeof head_buf);
        size_t len;
        const char *p;
        int rv, status;

        if (n == TUNNEL_ERR || n == 0) {
            tunnel_conn_close(c, NULL);
            return;
        }
        if (n > 0) {
            if (c->head == NULL)
                c->head = evbuffer_new();
            if (evbuffer_get_length(c->head) == 0)
                c->last_ms = pm_now_ms(); /* a new head: its deadline */
            evbuffer_add(c->head, head_buf, (size_t)n);
        }
        len = c->head ? evbuffer_get_length(c->head) : 0;
        if (len == 0)
            return;
        p = (const char *)evbuffer_pullup(c->head,
                                          (ssize_t)(len < max ? len : max));
        rv = pm_http_parse(p, len < max ? len : max, max, &req, &status);
        if (rv == PM_EAGAIN) {
            if (n == TUNNEL_AGAIN) {
                tunnel_conn_arm(c);
                return;
            }
            continue;
        }
        if (rv != PM_OK) {
            tunnel_conn_refuse(c, status, "http_request_error",
                               "malformed request");
            return;
        }
        tunnel_end_read_off(&c->client);
        event_del(c->timer);
        dispatch(c, &req);
        return;
    }
}

void
tunnel_conn_next_request(struct tunnel_conn *c)
{
    c->state = TS_HEAD;
    c->last_ms = pm_now_ms();
    tunnel_end_read_on(&c->client);
    tunnel_conn_arm(c);
    if (c->head != NULL && evbuffer_get_length(c->head) > 0) {
        read_head(c);
    }
}

/* ---- the target is there ---------------------------------------------- */

void
tunnel_pipe_start(struct tunnel_conn *c)
{
    c->state = TS_PIPE;
    c->last_ms = pm_now_ms();
    /* Bytes the client sent after the head go first (after the head the
     * agent queued for the server). */
    if (c->head != NULL && evbuffer_get_length(c->head) > 0) {
        tunnel_conn_activity(c, evbuffer_get_length(c->head), 0);
        if (c->target.out == NULL)
            c->target.out = evbuffer_new();
        evbuffer_add_buffer(c->target.out, c->head);
    }
    if (tunnel_end_flush(&c->target) == PM_EIO) {
        tunnel_pipe_failed(c, TUNNEL_ERR);
        return;
    }
    tunnel_conn_arm(c);
    tunnel_end_read_on(&c->target);
    if (tunnel_end_pending(&c->target) == 0) {
        tunnel_end_read_on(&c->client);
        tunnel_pipe_pump(c, &c->client, &c->target);
    }
}

void
tunnel_conn_target_ready(struct tunnel_conn *c)
{
    static const char ok[] = "HTTP/1.1 200 Connection Established\r\n\r\n";

    if (c->t->agent) {
        tunnel_agent_connected_tcp(c);
        return;
    }
    if (c->fwd != NULL) {
        tunnel_forward_io(c, &c->target, true);
        return;
    }
    c->status = 200;
    if (tunnel_end_send(&c->client, ok, sizeof ok - 1) == PM_EIO) {
        tunnel_conn_close(c, "reset");
        return;
    }
    tunnel_pipe_start(c);
}

/* ---- events ------------------------------------------------------------- */

static void
conn_rd(int fd, short what, void *arg)
{
    struct tunnel_conn *c = arg;

    (void)fd;
    (void)what;
    switch (c->state) {
    case TS_HANDSHAKE:
        handshake(c);
        break;
    case TS_HEAD:
        read_head(c);
        break;
    case TS_PIPE:
        tunnel_pipe_pump(c, &c->client, &c->target);
        break;
    case TS_FORWARD:
        tunnel_forward_io(c, &c->client, false);
        break;
    default:
        tunnel_end_read_off(&c->client);
        break;
    }
}

static void
conn_wr(int fd, short what, void *arg)
{
    struct tunnel_conn *c = arg;

    (void)fd;
    (void)what;
    switch (c->state) {
    case TS_HANDSHAKE:
        handshake(c);
        return;
    case TS_PIPE:
        if (c->client.read_wants_write)
            tunnel_pipe_pump(c, &c->client, &c->target);
        if (!c->dead)
            tunnel_pipe_writable(c, &c->client);
        return;
    case TS_FORWARD:
        tunnel_forward_io(c, &c->client, true);
        return;
    case TS_CLOSING: {
        int rv = tunnel_end_flush(&c->client);

        if (rv != PM_EAGAIN)
            tunnel_conn_close(c, NULL);
        return;
    }
    default:
        if (tunnel_end_flush(&c->client) == PM_EIO)
            tunnel_conn_close(c, "reset");
        return;
    }
}

static void
target_rd(int fd, short what, void *arg)
{
    struct tunnel_conn *c = arg;

    (void)fd;
    (void)what;
    switch (c->state) {
    case TS_UPSTREAM:
    case TS_PROBE:
        tunnel_agent_upstream_io(c);
        break;
    case TS_PIPE:
        tunnel_pipe_pump(c, &c->target, &c->client);
        break;
    case TS_FORWARD:
        tunnel_forward_io(c, &c->target, false);
        break;
    case TS_HEAD:
        tunnel_forward_idle_event(c);
        break;
    default:
        tunnel_end_read_off(&c->target);
        break;
    }
}

static void
target_wr(int fd, short what, void *arg)
{
    struct tunnel_conn *c = arg;

    (void)fd;
    (void)what;
    switch (c->state) {
    case TS_DIAL:
        tunnel_dial_connected(c);
        break;
    case TS_UPSTREAM:
        tunnel_agent_upstream_io(c);
        break;
    case TS_PIPE:
        if (c->target.read_wants_write)
            tunnel_pipe_pump(c, &c->target, &c->client);
        if (!c->dead)
            tunnel_pipe_writable(c, &c->target);
        break;
    case TS_FORWARD:
        tunnel_forward_io(c, &c->target, true);
        break;
    default:
        event_del(c->target.wev);
        break;
    }
}

int
tunnel_conn_target_init(struct tunnel_conn *c, int fd)
{
    return tunnel_end_init(&c->target, pm_server_base(c->t->srv), fd, target_rd,
                           target_wr, c);
}

/* ---- accept ------------------------------------------------------------- */

struct tunnel_conn *
tunnel_conn_new(struct tunnel *t, int fd, const char *peer)
{
    struct tunnel_conn *c = pm_xcalloc(1, sizeof *c);

    c->t = t;
    c->id = ++t->next_id;
    c->client.fd = c->target.fd = -1;
    c->born_ms = c->last_ms = pm_now_ms();
    pm_strlcpy(c->ip, peer, sizeof c->ip);
    c->timer = evtimer_new(pm_server_base(t->srv), timer_cb, c);
    TAILQ_INSERT_TAIL(&t->conns, c, link);
    if (fd >= 0 && tunnel_end_init(&c->client, pm_server_base(t->srv), fd,
                                   conn_rd, conn_wr, c) != PM_OK)
        c->client.fd = fd; /* closed with c */
    return c;
}

void
tunnel_accept(void *state, int fd, const char *peer)
{
    struct tunnel *t = state;
    struct tunnel_conn *c;

    if (t->draining ||
        (t->agent && !pm_cidr_list_contains(t->proxy_allow, peer))) {
        if (!t->draining)
            pm_log_kv(PM_LOG_WARN, "tunnel_client_refused",
                      "not in tunnel.proxy_allow", "ip", peer, NULL);
        close(fd);
        return;
    }
    c = tunnel_conn_new(t, fd, peer);
    if (c->client.rev == NULL) {
        tunnel_conn_close(c, NULL);
        return;
    }
    c->counted = true;
    t->nconns++;
    (*t->stats.conns_open)++;
    if (!t->agent) {
        if (t->nconns > t->conf.max_connections)
            c->over_limit = true;
        struct ssl_st *ssl = pm_tls_new_ssl(t->tls, NULL);

        if (ssl == NULL) {
            tunnel_conn_close(c, NULL);
            return;
        }
        tunnel_end_tls(&c->client, ssl);
        c->state = TS_HANDSHAKE;
    } else {
        c->state = TS_HEAD;
    }
    tunnel_end_read_on(&c->client);
    tunnel_conn_arm(c);
}

void
tunnel_conns_drain(struct tunnel *t)
{
    struct tunnel_conn *c, *next;

    /* Connections between requests go now; streams finish in the grace. */
    for (c = TAILQ_FIRST(&t->conns); c != NULL; c = next) {
        next = TAILQ_NEXT(c, link);
        if (c->state == TS_HEAD &&
            (c->head == NULL || evbuffer_get_length(c->head) == 0))
            tunnel_conn_close(c, NULL);
        else if (c->state == TS_HANDSHAKE)
            tunnel_conn_close(c, NULL);
    }
}
