/*
 * pm_conn: the per-connection state machine.
 *
 *   HTTP_IDLE --bytes--> HTTP_HEAD --request--> (answer) --> HTTP_IDLE
 *                                   \--upgrade--> WS_OPEN --close--> ...
 *   WS_OPEN --we close--> WS_CLOSING --echo/EOF/linger--> DEAD
 *   any --pm_conn_close--> CLOSING --output flushed, FIN, peer's EOF
 *                                     or linger--> DEAD
 *
 * One timer per connection serves every state: header deadline,
 * keep-alive idle, WebSocket ping interval and idle timeout, and the
 * linger after a close. Freeing is always deferred to a safe point, so a
 * role may close a connection from inside any of its callbacks, and the
 * pointer stays valid until the current callback returns. Loop thread.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "pm_conn_int.h"
#include "pm_log.h"
#include "pm_metrics.h"
#include "pm_server.h"
#include "pm_stream.h"
#include "pm_tls.h"
#include "pm_util.h"

/* How long a closing connection may take to flush or answer our close. */
#define PM_CONN_LINGER_MS 2000
/* Consecutive rate-limited messages after which the peer is closed 1008. */
#define PM_CONN_ABUSE_STREAK 64

static void conn_read_cb(void *arg);
static void conn_drained_cb(void *arg);
static void conn_error_cb(void *arg, bool eof);
static void conn_timer_cb(evutil_socket_t fd, short what, void *arg);
static void http_read(struct pm_conn *c);

static const struct pm_core_conf *
conf_of(const struct pm_conn *c)
{
    return pm_server_conf(c->srv);
}

static void
arm(struct pm_conn *c, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};

    event_add(c->timer, &tv);
}

const char *
pm_conn_ip(const struct pm_conn *c)
{
    return c->ip;
}

void *
pm_conn_data(const struct pm_conn *c)
{
    return c->data;
}

void
pm_conn_set_data(struct pm_conn *c, void *data)
{
    c->data = data;
}

void
pm_conn_set_ws_protocol(struct pm_conn *c, const char *proto, size_t len)
{
    PM_ASSERT(c->state == PM_CONN_HTTP_HEAD);
    free(c->ws_protocol);
    c->ws_protocol = pm_xstrndup(proto, len);
}

struct pm_conn *
pm_conn_new(struct pm_server *srv, struct pm_stream *stream, const char *peer,
            bool admin)
{
    static uint64_t next_id;
    struct pm_conn *c = pm_xcalloc(1, sizeof *c);

    c->id = ++next_id;
    c->srv = srv;
    c->stream = stream;
    c->admin = admin;
    c->state = PM_CONN_HTTP_IDLE;
    pm_strlcpy(c->peer, peer, sizeof c->peer);
    pm_strlcpy(c->ip, peer, sizeof c->ip);
    c->timer = evtimer_new(pm_server_base(srv), conn_timer_cb, c);
    pm_stream_setcb(stream, conn_read_cb, conn_error_cb, conn_drained_cb, c);
    pm_stream_start(stream);
    /* A new connection must start its request within the header time. */
    arm(c, conf_of(c)->http_header_timeout);
    return c;
}

static void
conn_free_cb(void *arg)
{
    struct pm_conn *c = arg;

    pm_server_conn_free(c->srv, c);
    pm_stream_free(c->stream);
    event_free(c->timer);
    pm_ws_parser_close(&c->ws);
    c->freed = true;
    if (c->refs == 0)
        free(c);
}

void
pm_conn_ref(struct pm_conn *c)
{
    c->refs++;
}

void
pm_conn_unref(struct pm_conn *c)
{
    PM_ASSERT(c->refs > 0);
    if (--c->refs == 0 && c->freed)
        free(c);
}

void
pm_conn_http_wait(struct pm_conn *c)
{
    if (c->state != PM_CONN_HTTP_HEAD)
        return; /* answered already */
    c->state = PM_CONN_HTTP_WAIT;
    arm(c, conf_of(c)->http_header_timeout);
}

/* Tell the role (once) that a WebSocket connection is going away. */
static void
notify_closing(struct pm_conn *c, uint16_t code)
{
    if (c->ws_notified)
        return;
    c->ws_notified = true;
    pm_server_conn_closing(c->srv, c, code);
}

/* Drop the connection now, whatever is queued. */
static void
conn_kill(struct pm_conn *c, uint16_t code)
{
    if (c->state == PM_CONN_DEAD)
        return;
    if (c->state == PM_CONN_WS_OPEN || c->state == PM_CONN_WS_CLOSING)
        notify_closing(c, code);
    c->state = PM_CONN_DEAD;
    pm_stream_stop_reading(c->stream);
    event_del(c->timer);
    pm_server_defer(c->srv, conn_free_cb, c);
}

void
pm_conn_close(struct pm_conn *c)
{
    if (c->state == PM_CONN_DEAD || c->state == PM_CONN_CLOSING)
        return;
    if (c->state == PM_CONN_WS_OPEN || c->state == PM_CONN_WS_CLOSING)
        notify_closing(c, PM_WS_ABNORMAL);
    c->state = PM_CONN_CLOSING;
    pm_stream_stop_reading(c->stream);
    arm(c, PM_CONN_LINGER_MS);
    pm_stream_notify_drained(c->stream); /* may kill c at once */
}

/* Output flushed: linger, discarding input, until the peer's EOF (the
 * error callback) or the timer. */
static void
conn_drained_cb(void *arg)
{
    struct pm_conn *c = arg;

    if (c->state != PM_CONN_CLOSING || c->lingering)
        return;
    c->lingering = true;
    arm(c, PM_CONN_LINGER_MS);
    pm_stream_linger(c->stream);
}

void
pm_conn_http_respond(struct pm_conn *c, int status, const char *ctype,
                     const char *extra_headers, const void *body, size_t len)
{
    bool keep =
        c->req_keep_alive && status < 400 && !pm_server_is_draining(c->srv);
    bool late = c->state == PM_CONN_HTTP_WAIT;

    if (c->state != PM_CONN_HTTP_HEAD && !late)
        return;
    pm_http_write_response(pm_stream_output(c->stream), status, ctype,
                           extra_headers, body, len, keep, c->req_head);
    if (!keep) {
        pm_conn_close(c);
        return;
    }
    c->state = PM_CONN_HTTP_IDLE; /* answered: ready for the next one */
    if (late) { /* requests pipelined behind this one, or the idle timer */
        event_del(c->timer);
        arm(c, conf_of(c)->http_keepalive_timeout);
        http_read(c);
    }
}

void
pm_conn_http_status(struct pm_conn *c, int status, const char *extra_headers)
{
    char body[128];
    int n =
        snprintf(body, sizeof body, "%d %s\n", status, pm_http_reason(status));

    pm_conn_http_respond(c, status, "text/plain; charset=utf-8", extra_headers,
                         body, (size_t)n);
}

/* Answer a request we refuse before any handler saw it, then close. */
static void
http_refuse(struct pm_conn *c, int status)
{
    c->req_keep_alive = false;
    c->state = PM_CONN_HTTP_HEAD;
    pm_conn_http_status(c, status, NULL);
}

/*
 * Refuse a request the parser or a size limit rejected: counted as
 * p2pmesh_rejected_total{limit=...} and logged at debug, then answered
 * with status and closed.
 */
static void
http_reject(struct pm_conn *c, int status)
{
    const char *limit = status == 431 || status == 414 ? "max_header"
                        : status == 413                ? "max_body"
                        : status == 411                ? "chunked_body"
                                                       : "http_parse";
    char labels[48], st[8];

    snprintf(labels, sizeof labels, "limit=\"%s\"", limit);
    (*pm_metrics_counter(pm_server_metrics(c->srv), "p2pmesh_rejected_total",
                         labels,
                         "Requests, upgrades and messages refused by a "
                         "limit"))++;
    snprintf(st, sizeof st, "%d", status);
    pm_log_kv(PM_LOG_DEBUG, "http_request_refused",
              "malformed or oversized request", "ip", c->ip, "status", st,
              "limit", limit, NULL);
    http_refuse(c, status);
}

/* Parse and answer every complete request in the input. */
static void
http_read(struct pm_conn *c)
{
    struct evbuffer *in = pm_stream_input(c->stream);
    const struct pm_core_conf *conf = conf_of(c);
    static struct pm_http_request req; /* 3 KB: not per connection */

    for (;;) {
        size_t len = evbuffer_get_length(in), scan;
        const char *p;
        int rv, status;
        uint64_t need;

        if (len == 0)
            return;
        if (c->state == PM_CONN_HTTP_IDLE) {
            c->state = PM_CONN_HTTP_HEAD;
            arm(c, conf->http_header_timeout);
        }
        scan = len < conf->http_max_header ? len : conf->http_max_header;
        p = (const char *)evbuffer_pullup(in, (ssize_t)scan);
        rv = pm_http_parse(p, scan, conf->http_max_header, &req, &status);
        if (rv == PM_EAGAIN)
            return;
        if (rv != PM_OK) {
            http_reject(c, status);
            return;
        }
        if (req.chunked) {
            http_reject(c, 411);
            return;
        }
        need = req.head_len +
               (req.content_length > 0 ? (uint64_t)req.content_length : 0);
        if (req.content_length > 0 &&
            (uint64_t)req.content_length > conf->http_max_body) {
            http_reject(c, 413);
            return;
        }
        if (len < need) {
            /* The body is still coming: from now on its own deadline. */
            if (!c->in_body) {
                c->in_body = true;
                arm(c, conf->http_body_timeout);
            }
            return;
        }
        c->in_body = false;
        p = (const char *)evbuffer_pullup(in, (ssize_t)need);
        /* Re-parse: pullup may have moved the head. */
        pm_http_parse(p, req.head_len, conf->http_max_header, &req, &status);
        event_del(c->timer);
        c->req_keep_alive = req.keep_alive;
        c->req_head = pm_strcaseeq(req.method, req.method_len, "HEAD");
        (*pm_server_stats(c->srv)->http_requests)++;
        pm_server_request(c->srv, c, &req, (const uint8_t *)p + req.head_len,
                          need - req.head_len);
        evbuffer_drain(in, need);
        if (c->state == PM_CONN_HTTP_HEAD) {
            /* A handler that answered nothing: never leave a client hanging */
            http_refuse(c, 500);
            return;
        }
        if (c->state != PM_CONN_HTTP_IDLE)
            return; /* upgraded, closing or answered later */
        arm(c, conf->http_keepalive_timeout);
    }
}

static void
ws_send_raw(struct pm_conn *c, enum pm_ws_opcode op, const void *data,
            size_t len)
{
    pm_ws_write_frame(pm_stream_output(c->stream), op, data, len, NULL);
}

void
pm_conn_ws_close(struct pm_conn *c, uint16_t code, const char *reason)
{
    if (c->state != PM_CONN_WS_OPEN)
        return;
    pm_ws_write_close(pm_stream_output(c->stream), code, reason, NULL);
    notify_closing(c, code);
    c->state = PM_CONN_WS_CLOSING;
    arm(c, PM_CONN_LINGER_MS);
}

/* Protocol error from the peer: send our close and drop after flushing. */
static void
ws_fail(struct pm_conn *c, uint16_t code)
{
    if (c->state == PM_CONN_WS_OPEN)
        pm_ws_write_close(pm_stream_output(c->stream), code, NULL, NULL);
    notify_closing(c, code);
    pm_conn_close(c);
}

size_t
pm_conn_pending(const struct pm_conn *c)
{
    return c->freed ? 0 : pm_stream_pending(c->stream);
}

int
pm_conn_ws_sendv(struct pm_conn *c, enum pm_ws_opcode op,
                 const struct iovec *iov, int n)
{
    struct evbuffer *out;
    struct pm_core_stats *st;
    size_t len = 0;
    int i;

    if (c->state != PM_CONN_WS_OPEN)
        return PM_ECLOSED;
    for (i = 0; i < n; i++)
        len += iov[i].iov_len;
    if (pm_stream_pending(c->stream) + len > conf_of(c)->ws_send_buffer) {
        pm_log_kv(PM_LOG_INFO, "ws_send_buffer_full",
                  "client stopped reading; dropping it", "ip", c->ip, NULL);
        conn_kill(c, PM_WS_POLICY);
        return PM_ELIMIT;
    }
    out = pm_stream_output(c->stream);
    pm_ws_write_header(out, op, len);
    for (i = 0; i < n; i++)
        evbuffer_add(out, iov[i].iov_base, iov[i].iov_len);
    st = pm_server_stats(c->srv);
    (*st->ws_msgs_tx)++;
    *st->ws_bytes_tx += len;
    return PM_OK;
}

int
pm_conn_ws_send(struct pm_conn *c, enum pm_ws_opcode op, const void *data,
                size_t len)
{
    struct iovec v = {(void *)data, len};

    return pm_conn_ws_sendv(c, op, &v, 1);
}

int
pm_conn_ws_send_json(struct pm_conn *c, const cJSON *json)
{
    char buf[1024], *heap = NULL, *s = buf;
    int rv;

    /* Small messages print into the stack buffer without malloc. */
    if (!cJSON_PrintPreallocated((cJSON *)json, buf, sizeof buf, 0)) {
        heap = cJSON_PrintUnformatted(json);
        if (heap == NULL)
            return PM_ENOMEM;
        s = heap;
    }
    rv = pm_conn_ws_send(c, PM_WS_TEXT, s, strlen(s));
    free(heap);
    return rv;
}

void
pm_conn_ws_start(struct pm_conn *c)
{
    const struct pm_core_conf *conf = conf_of(c);

    c->state = PM_CONN_WS_OPEN;
    pm_ws_parser_init(&c->ws, conf->ws_max_message, true);
    pm_bucket_init(&c->bucket, (uint32_t)conf->per_conn_burst, pm_now_ms());
    c->last_rx_ms = pm_now_ms();
    arm(c, conf->ws_ping_interval);
}

static void
ws_message(struct pm_conn *c, const struct pm_ws_event *ev)
{
    const struct pm_core_conf *conf = conf_of(c);
    struct pm_core_stats *st = pm_server_stats(c->srv);
    void *state;
    const struct pm_role *role = pm_server_role(c->srv, &state);

    if (c->state != PM_CONN_WS_OPEN)
        return;
    if (!pm_bucket_take(&c->bucket, &conf->per_conn_rate,
                        (uint32_t)conf->per_conn_burst, c->last_rx_ms)) {
        (*st->rate_refused)++;
        if (++c->refused >= PM_CONN_ABUSE_STREAK) {
            pm_log_kv(PM_LOG_INFO, "ws_rate_abuse",
                      "closing a client that kept exceeding its message rate",
                      "ip", c->ip, NULL);
            pm_conn_ws_close(c, PM_WS_POLICY, "message rate exceeded");
            return;
        }
        if (role->ws_limited != NULL)
            role->ws_limited(state, c);
        return;
    }
    c->refused = 0;
    (*st->ws_msgs_rx)++;
    *st->ws_bytes_rx += ev->len;
    if (role->ws_message != NULL)
        role->ws_message(state, c, ev->opcode, ev->data, ev->len);
}

static void
ws_read(struct pm_conn *c)
{
    struct evbuffer *in = pm_stream_input(c->stream);
    struct pm_ws_event ev;
    uint16_t code;

    while (c->state == PM_CONN_WS_OPEN || c->state == PM_CONN_WS_CLOSING) {
        int rv = pm_ws_parse(&c->ws, in, &ev, &code);

        if (rv == PM_EAGAIN)
            return;
        if (rv != PM_OK) {
            pm_log_kv(PM_LOG_DEBUG, "ws_protocol_error",
                      "closing a client that broke RFC 6455", "ip", c->ip,
                      NULL);
            ws_fail(c, code);
            return;
        }
        c->last_rx_ms = pm_now_ms();
        switch (ev.opcode) {
        case PM_WS_TEXT:
        case PM_WS_BINARY:
            ws_message(c, &ev);
            break;
        case PM_WS_PING:
            if (c->state == PM_CONN_WS_OPEN)
                ws_send_raw(c, PM_WS_PONG, ev.data, ev.len);
            break;
        case PM_WS_PONG:
            break;
        case PM_WS_CLOSE:
            if (c->state == PM_CONN_WS_OPEN) {
                /* Echo the code (none if the peer sent none), then close. */
                if (ev.close_code == PM_WS_NO_STATUS)
                    ws_send_raw(c, PM_WS_CLOSE, NULL, 0);
                else
                    pm_ws_write_close(pm_stream_output(c->stream),
                                      ev.close_code, NULL, NULL);
                notify_closing(c, ev.close_code);
                pm_conn_close(c);
            } else {
                conn_kill(c, ev.close_code);
            }
            return;
        default:
            break;
        }
    }
}

static void
conn_read_cb(void *arg)
{
    struct pm_conn *c = arg;

    if (c->state == PM_CONN_CLOSING) {
        struct evbuffer *in = pm_stream_input(c->stream);

        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    if (c->state <= PM_CONN_HTTP_HEAD)
        http_read(c);
    if (c->state == PM_CONN_WS_OPEN || c->state == PM_CONN_WS_CLOSING)
        ws_read(c);
}

static void
conn_error_cb(void *arg, bool eof)
{
    struct pm_conn *c = arg;

    if (!eof)
        pm_tls_log_errors("tls_error", (unsigned long long)c->id);
    conn_kill(c, PM_WS_ABNORMAL);
}

static void
conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pm_conn *c = arg;
    const struct pm_core_conf *conf = conf_of(c);
    char id[24];
    uint64_t now;

    (void)fd;
    (void)what;
    switch (c->state) {
    case PM_CONN_HTTP_HEAD:
        snprintf(id, sizeof id, "%llu", (unsigned long long)c->id);
        if (c->in_body) {
            /* The head is known: tell the client, then close. */
            (*pm_server_stats(c->srv)->body_timeouts)++;
            pm_log_kv(PM_LOG_DEBUG, "http_body_timeout",
                      "request body not completed in time", "conn", id, "ip",
                      c->ip, NULL);
            c->in_body = false;
            http_refuse(c, 408);
            break;
        }
        (*pm_server_stats(c->srv)->header_timeouts)++;
        pm_log_kv(PM_LOG_DEBUG, "http_header_timeout",
                  "request head not completed in time", "conn", id, "ip", c->ip,
                  NULL);
        conn_kill(c, PM_WS_ABNORMAL);
        break;
    case PM_CONN_HTTP_IDLE:
        conn_kill(c, PM_WS_ABNORMAL);
        break;
    case PM_CONN_HTTP_WAIT:
        pm_log_kv(PM_LOG_WARN, "http_answer_timeout",
                  "the role did not answer in time", "ip", c->ip, NULL);
        c->req_keep_alive = false;
        pm_conn_http_status(c, 504, NULL);
        break;
    case PM_CONN_WS_OPEN:
        now = pm_now_ms();
        if (now - c->last_rx_ms >= conf->ws_idle_timeout) {
            pm_conn_ws_close(c, PM_WS_GOING_AWAY, "idle timeout");
            break;
        }
        ws_send_raw(c, PM_WS_PING, NULL, 0);
        {
            uint64_t idle_left = conf->ws_idle_timeout - (now - c->last_rx_ms);

            arm(c, idle_left < conf->ws_ping_interval ? idle_left
                                                      : conf->ws_ping_interval);
        }
        break;
    case PM_CONN_WS_CLOSING:
    case PM_CONN_CLOSING:
        conn_kill(c, PM_WS_ABNORMAL);
        break;
    case PM_CONN_DEAD:
        break;
    }
}

void
pm_conn_drain(struct pm_conn *c)
{
    switch (c->state) {
    case PM_CONN_WS_OPEN:
        pm_conn_ws_close(c, PM_WS_GOING_AWAY, "server shutting down");
        break;
    case PM_CONN_HTTP_IDLE:
        conn_kill(c, PM_WS_ABNORMAL);
        break;
    default:
        break;
    }
}
