/*
 * tunnel_forward: absolute-form requests in server mode (GET
 * http://host/path). The request line becomes origin-form, Host comes
 * from the URL, hop-by-hop headers (and those Connection names) go both
 * ways, Via is added, and bodies stream in both directions with their
 * framing (Content-Length, chunked, or until close for responses) passed
 * through unchanged and followed only to know where a message ends.
 * Redirects reach the client; nothing is retried. The upstream connection
 * is kept for the next request to the same host when both sides allow it.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "pm_http.h"
#include "pm_server.h"
#include "pm_util.h"
#include "tunnel.h"

#define VIA "1.1 p2pmesh"

struct tunnel_fwd {
    char authority[TUNNEL_NAME_MAX + 8]; /* of the upstream connection */
    char method[16];
    bool head_method;
    bool client_keep; /* the client allows keep-alive */
    /* request body */
    bool req_chunked;
    uint64_t req_left;
    struct pm_http_chunked req_ch;
    bool req_done;
    /* response */
    struct evbuffer *rhead; /* response bytes before the head is complete */
    bool resp_started;      /* a head went to the client */
    bool resp_chunked, resp_close;
    uint64_t resp_left;
    struct pm_http_chunked resp_ch;
    bool resp_done;
    bool keep; /* the answer told the client keep-alive */
    bool origin_keep;
};

static char fwd_buf[TUNNEL_CHUNK];

static const char *const hop_by_hop[] = {"connection",
                                         "keep-alive",
                                         "proxy-connection",
                                         "proxy-authorization",
                                         "proxy-authenticate",
                                         "te",
                                         "trailer",
                                         "upgrade",
                                         NULL};

/* Is header h one a proxy must not pass on? conn: the Connection header. */
static bool
hop(const struct pm_http_header *h, const struct pm_http_header *conn)
{
    int i;
    char name[64];

    for (i = 0; hop_by_hop[i] != NULL; i++)
        if (pm_strcaseeq(h->name, h->name_len, hop_by_hop[i]))
            return true;
    if (conn == NULL || h->name_len >= sizeof name)
        return false;
    memcpy(name, h->name, h->name_len);
    name[h->name_len] = '\0';
    return pm_http_header_has_token(conn, name);
}

static const struct pm_http_header *
find(const struct pm_http_header *hs, size_t n, const char *name)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (pm_strcaseeq(hs[i].name, hs[i].name_len, name))
            return &hs[i];
    return NULL;
}

static void
add_headers(struct evbuffer *b, const struct pm_http_header *hs, size_t n,
            bool skip_host)
{
    const struct pm_http_header *conn = find(hs, n, "connection");
    size_t i;

    for (i = 0; i < n; i++) {
        if (hop(&hs[i], conn) ||
            (skip_host && pm_strcaseeq(hs[i].name, hs[i].name_len, "host")))
            continue;
        evbuffer_add_printf(b, "%.*s: %.*s\r\n", (int)hs[i].name_len,
                            hs[i].name, (int)hs[i].value_len, hs[i].value);
    }
}

void
tunnel_forward_free(struct tunnel_conn *c)
{
    if (c->fwd == NULL)
        return;
    if (c->fwd->rhead != NULL)
        evbuffer_free(c->fwd->rhead);
    free(c->fwd);
    c->fwd = NULL;
}

/* ---- start -------------------------------------------------------------- */

/* "http://host[:port]/path": authority, host, port and the path start. */
static int
parse_url(const char *t, size_t n, char *auth, size_t alen, char *host,
          size_t hlen, int *port, const char **path)
{
    const char *a, *end, *p;
    size_t i, al;
    long v = 80;

    if (n < 7 || !pm_strcaseeq(t, 7, "http://"))
        return PM_EINVAL;
    a = t + 7;
    end = t + n;
    for (p = a; p < end && *p != '/' && *p != '?'; p++)
        if (*p == '@')
            return PM_EPROTO; /* userinfo has no place here */
    al = (size_t)(p - a);
    if (al == 0 || al >= alen)
        return PM_EPROTO;
    memcpy(auth, a, al);
    auth[al] = '\0';
    *path = p;
    if (auth[0] == '[') {
        char *rb = strchr(auth, ']');

        if (rb == NULL || (size_t)(rb - auth - 1) >= hlen)
            return PM_EPROTO;
        memcpy(host, auth + 1, (size_t)(rb - auth - 1));
        host[rb - auth - 1] = '\0';
        p = rb + 1;
    } else {
        const char *colon = strchr(auth, ':');
        size_t hl = colon ? (size_t)(colon - auth) : al;

        if (hl == 0 || hl >= hlen)
            return PM_EPROTO;
        memcpy(host, auth, hl);
        host[hl] = '\0';
        p = auth + hl;
    }
    if (*p == ':') {
        v = 0;
        for (i = 1; p[i] != '\0'; i++) {
            if (p[i] < '0' || p[i] > '9' || v > 65535)
                return PM_EPROTO;
            v = v * 10 + (p[i] - '0');
        }
        if (i == 1)
            v = 80;
    } else if (*p != '\0') {
        return PM_EPROTO;
    }
    if (v < 1 || v > 65535)
        return PM_EPROTO;
    *port = (int)v;
    return PM_OK;
}

void
tunnel_forward_start(struct tunnel_conn *c, const struct pm_http_request *req)
{
    struct tunnel_fwd *f;
    struct evbuffer *b;
    char auth[TUNNEL_NAME_MAX + 8], host[TUNNEL_NAME_MAX], details[300];
    const char *path, *error;
    int port, status, rv;
    size_t plen;

    rv = parse_url(req->target, req->target_len, auth, sizeof auth, host,
                   sizeof host, &port, &path);
    if (rv != PM_OK) {
        evbuffer_drain(c->head, req->head_len);
        if (rv == PM_EINVAL)
            tunnel_conn_refuse(c, 403, "http_request_denied",
                               "only http:// URLs are forwarded (use CONNECT "
                               "for https)");
        else
            tunnel_conn_refuse(c, 400, "http_request_error", "bad URL");
        return;
    }
    if (c->fwd == NULL)
        c->fwd = pm_xcalloc(1, sizeof *c->fwd);
    f = c->fwd;
    snprintf(f->method, sizeof f->method, "%.*s",
             (int)(req->method_len < 15 ? req->method_len : 15), req->method);
    f->head_method = pm_strcaseeq(req->method, req->method_len, "HEAD");
    f->client_keep = req->keep_alive;
    f->req_chunked = req->chunked;
    f->req_left = req->content_length > 0 ? (uint64_t)req->content_length : 0;
    f->req_done = !f->req_chunked && f->req_left == 0;
    pm_http_chunked_init(&f->req_ch);
    pm_http_chunked_init(&f->resp_ch);
    f->resp_started = f->resp_done = f->resp_chunked = f->resp_close = false;
    if (f->rhead != NULL)
        evbuffer_drain(f->rhead, evbuffer_get_length(f->rhead));

    /* The request as the origin gets it. */
    b = evbuffer_new();
    plen = req->target_len - (size_t)(path - req->target);
    evbuffer_add_printf(b, "%s %s%.*s HTTP/1.1\r\nHost: %s\r\n", f->method,
                        plen == 0 || path[0] == '?' ? "/" : "", (int)plen, path,
                        auth);
    add_headers(b, req->headers, req->nheaders, true);
    evbuffer_add_printf(b, "Via: " VIA "\r\n\r\n");
    evbuffer_drain(c->head, req->head_len); /* req is gone from here on */

    if (tunnel_policy_name(c->t->policy, host, port, false, &status, &error,
                           details, sizeof details) != PM_OK) {
        evbuffer_free(b);
        tunnel_conn_refuse(c, status, error, details);
        return;
    }
    if (c->target.fd >= 0 && strcmp(f->authority, auth) == 0) {
        /* the kept upstream connection: send at once */
        tunnel_end_send(&c->target, evbuffer_pullup(b, -1),
                        evbuffer_get_length(b));
        evbuffer_free(b);
        tunnel_forward_io(c, &c->target, true);
        return;
    }
    tunnel_end_free(&c->target);
    pm_strlcpy(f->authority, auth, sizeof f->authority);
    c->target.out = b; /* written once connected */
    tunnel_dial_start(c, host, port, true);
}

/* ---- the two directions --------------------------------------------- */

/* How much of n bytes belongs to the current body; *done when it ends. */
static int
body_take(bool chunked, uint64_t *left, struct pm_http_chunked *ch,
          const char *p, size_t n, size_t *take, bool *done)
{
    if (chunked)
        return pm_http_chunked_feed(ch, p, n, NULL, take, done);
    *take = n < *left ? n : (size_t)*left;
    *left -= *take;
    *done = *left == 0;
    return PM_OK;
}

static void finish(struct tunnel_conn *c);

/* Client to origin: the request body. */
static void
up(struct tunnel_conn *c)
{
    struct tunnel_fwd *f = c->fwd;
    int pass;

    for (pass = 0; pass < 4 && !f->req_done; pass++) {
        size_t n, take;
        long w;
        bool done;
        const char *p;

        if (tunnel_end_pending(&c->target) > 0) {
            tunnel_end_read_off(&c->client);
            return;
        }
        if (c->head != NULL && evbuffer_get_length(c->head) > 0) {
            n = evbuffer_get_length(c->head);
            n = n < sizeof fwd_buf ? n : sizeof fwd_buf;
            evbuffer_remove(c->head, fwd_buf, n);
        } else {
            long r = tunnel_end_read(&c->client, fwd_buf, sizeof fwd_buf);

            if (r == TUNNEL_AGAIN) {
                tunnel_end_read_on(&c->client);
                return;
            }
            if (r <= 0) {
                tunnel_conn_close(c, "reset");
                return;
            }
            n = (size_t)r;
        }
        p = fwd_buf;
        if (body_take(f->req_chunked, &f->req_left, &f->req_ch, p, n, &take,
                      &done) != PM_OK) {
            tunnel_conn_close(c, "http_request_error");
            return;
        }
        if (take < n) { /* the next request, pipelined: keep it */
            if (c->head == NULL)
                c->head = evbuffer_new();
            evbuffer_prepend(c->head, p + take, n - take);
        }
        tunnel_conn_activity(c, take, 0);
        f->req_done = done;
        w = tunnel_end_write(&c->target, p, take);
        if (w == TUNNEL_ERR) {
            tunnel_conn_close(c, "reset");
            return;
        }
        if ((size_t)w < take)
            tunnel_end_send(&c->target, p + w, take - (size_t)w);
    }
    if (f->req_done) {
        tunnel_end_read_off(&c->client);
        if (f->resp_done)
            finish(c);
    } else if (!c->dead) {
        tunnel_end_read_on(&c->client);
    }
}

/* The response head is complete at the front of f->rhead. */
static int
answer_head(struct tunnel_conn *c, const struct pm_http_response *res)
{
    struct tunnel_fwd *f = c->fwd;
    struct evbuffer *b = evbuffer_new();
    bool body = pm_http_response_has_body(res, f->method, strlen(f->method));

    c->status = res->status;
    if (res->status >= 200) { /* 1xx: the framing comes with the final */
        f->resp_chunked = body && res->chunked;
        f->resp_left =
            body && res->content_length > 0 ? (uint64_t)res->content_length : 0;
        f->resp_close = body && !res->chunked && res->content_length < 0;
        f->resp_done =
            !body || (!f->resp_chunked && !f->resp_close && f->resp_left == 0);
        f->origin_keep = res->keep_alive && !f->resp_close;
        f->keep = f->client_keep && !f->resp_close &&
                  !pm_server_is_draining(c->t->srv);
    }
    evbuffer_add_printf(b, "HTTP/1.1 %d %.*s\r\n", res->status,
                        (int)res->reason_len, res->reason);
    add_headers(b, res->headers, res->nheaders, false);
    evbuffer_add_printf(b, "Via: " VIA "\r\n");
    if (res->status >= 200)
        evbuffer_add_printf(b, "Connection: %s\r\n",
                            f->keep ? "keep-alive" : "close");
    evbuffer_add(b, "\r\n", 2);
    f->resp_started = true;
    tunnel_conn_activity(c, 0, res->head_len);
    if (tunnel_end_send(&c->client, evbuffer_pullup(b, -1),
                        evbuffer_get_length(b)) == PM_EIO) {
        evbuffer_free(b);
        return PM_EIO;
    }
    evbuffer_free(b);
    return PM_OK;
}

/* Read the response head(s) into f->rhead; PM_OK once the final head is
 * answered and any body bytes after it are left in rhead. */
static int
read_head(struct tunnel_conn *c)
{
    struct tunnel_fwd *f = c->fwd;
    static struct pm_http_response res;
    size_t max = pm_server_conf(c->t->srv)->http_max_header;

    if (f->rhead == NULL)
        f->rhead = evbuffer_new();
    for (;;) {
        size_t len = evbuffer_get_length(f->rhead);
        const char *p;
        int rv = PM_EAGAIN;

        if (len > 0) {
            p = (const char *)evbuffer_pullup(f->rhead, -1);
            rv = pm_http_parse_response(p, len, max, &res);
        }
        if (rv == PM_OK) {
            if (res.status == 101) {
                tunnel_conn_refuse(c, 502, "http_response_incomplete",
                                   "the origin switched protocols");
                return PM_EPROTO;
            }
            if (answer_head(c, &res) != PM_OK) {
                tunnel_conn_close(c, "reset");
                return PM_EIO;
            }
            evbuffer_drain(f->rhead, res.head_len);
            if (res.status >= 200)
                return PM_OK;
            f->resp_started = false; /* 1xx: the final head follows */
            continue;
        }
        if (rv != PM_EAGAIN) {
            tunnel_conn_refuse(c, 502, "http_response_incomplete",
                               rv == PM_ELIMIT ? "the origin's response head "
                                                 "is too large"
                                               : "malformed response head");
            return PM_EPROTO;
        }
        {
            long n = tunnel_end_read(&c->target, fwd_buf, sizeof fwd_buf);

            if (n == TUNNEL_AGAIN)
                return PM_EAGAIN;
            if (n <= 0) {
                tunnel_conn_refuse(c, 502, "http_response_incomplete",
                                   "the origin closed without a response");
                return PM_EIO;
            }
            evbuffer_add(f->rhead, fwd_buf, (size_t)n);
        }
    }
}

/* Origin to client: the response. */
static void
down(struct tunnel_conn *c)
{
    struct tunnel_fwd *f = c->fwd;
    int pass;

    if (!f->resp_started && read_head(c) != PM_OK)
        return;
    for (pass = 0; pass < 4 && !f->resp_done; pass++) {
        size_t n, take;
        bool done = false;
        long w;

        if (tunnel_end_pending(&c->client) > 0) {
            tunnel_end_read_off(&c->target);
            return;
        }
        if (f->rhead != NULL && evbuffer_get_length(f->rhead) > 0) {
            n = evbuffer_get_length(f->rhead);
            n = n < sizeof fwd_buf ? n : sizeof fwd_buf;
            evbuffer_remove(f->rhead, fwd_buf, n);
        } else {
            long r = tunnel_end_read(&c->target, fwd_buf, sizeof fwd_buf);

            if (r == TUNNEL_AGAIN) {
                tunnel_end_read_on(&c->target);
                return;
            }
            if (r == 0 && f->resp_close) {
                f->resp_done = true;
                f->origin_keep = false;
                break;
            }
            if (r <= 0) {
                tunnel_conn_close(c, "http_response_incomplete");
                return;
            }
            n = (size_t)r;
        }
        if (f->resp_close) {
            take = n;
        } else if (body_take(f->resp_chunked, &f->resp_left, &f->resp_ch,
                             fwd_buf, n, &take, &done) != PM_OK) {
            tunnel_conn_close(c, "http_response_incomplete");
            return;
        }
        if (take < n)
            f->origin_keep = false; /* bytes past the response: not reused */
        f->resp_done = done;
        tunnel_conn_activity(c, 0, take);
        w = tunnel_end_write(&c->client, fwd_buf, take);
        if (w == TUNNEL_ERR) {
            tunnel_conn_close(c, "reset");
            return;
        }
        if ((size_t)w < take)
            tunnel_end_send(&c->client, fwd_buf + w, take - (size_t)w);
    }
    if (!f->resp_done) {
        tunnel_end_read_on(&c->target);
        return;
    }
    if (f->req_done)
        finish(c);
    else
        tunnel_end_read_off(&c->target);
}

/* Both messages are through: next request, or close. */
static void
finish(struct tunnel_conn *c)
{
    struct tunnel_fwd *f = c->fwd;

    if (tunnel_end_pending(&c->client) > 0) {
        /* conn_wr flushes and comes back here through forward_io */
        tunnel_end_read_off(&c->target);
        return;
    }
    tunnel_stream_end(c, "ok");
    if (!f->origin_keep) {
        tunnel_end_free(&c->target);
        f->authority[0] = '\0';
    }
    if (!f->keep) {
        tunnel_conn_close_after_flush(c);
        return;
    }
    if (c->target.fd >= 0)
        tunnel_end_read_on(&c->target); /* notice the origin closing it */
    tunnel_conn_next_request(c);
}

void
tunnel_forward_idle_event(struct tunnel_conn *c)
{
    /* the kept upstream spoke or closed between requests: drop it */
    tunnel_end_free(&c->target);
    if (c->fwd != NULL)
        c->fwd->authority[0] = '\0';
}

void
tunnel_forward_io(struct tunnel_conn *c, struct tunnel_end *e, bool writable)
{
    struct tunnel_fwd *f = c->fwd;

    if (c->state != TS_FORWARD) {
        if (e != &c->target || !writable)
            return;
        /* just connected (or reusing): the queued request goes out */
        c->state = TS_FORWARD;
        c->last_ms = pm_now_ms();
        tunnel_conn_arm(c);
        if (tunnel_end_flush(&c->target) == PM_EIO) {
            tunnel_conn_refuse(c, 502, "connection_refused",
                               "the origin closed the connection");
            return;
        }
        tunnel_end_read_on(&c->target);
        up(c);
        if (!c->dead)
            down(c);
        return;
    }
    if (writable) {
        if (tunnel_end_flush(e) == PM_EIO) {
            tunnel_conn_close(c, "reset");
            return;
        }
        if (tunnel_end_pending(e) > 0)
            return;
        if (e == &c->target && !f->req_done)
            up(c);
        else if (e == &c->client && f->resp_done && f->req_done)
            finish(c);
        else if (e == &c->client)
            down(c);
        return;
    }
    if (e == &c->client)
        up(c);
    else
        down(c);
}
