/*
 * tunnel_agent: the agent side of the tunnel role. Owns the client TLS
 * context (the agent's certificate, the server's CA, the fixed server
 * name and optional pins, TLS 1.3 resumption), the mTLS stream opened for
 * every client connection, the server probe (handshake plus GET /health)
 * with exponential backoff and jitter, the connected state /health and
 * /ready report, and the optional wake/kill lifecycle calls.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include "pm_addr.h"
#include "pm_aws.h"
#include "pm_httpc.h"
#include "pm_log.h"
#include "pm_server.h"
#include "pm_tls.h"
#include "pm_util.h"
#include "tunnel.h"

#define AGENT_CALL_TIMEOUT_MS 10000

struct tunnel_agent {
    bool connected;
    bool ever;    /* a probe or stream has succeeded once */
    bool probing; /* a probe connection is open */
    bool waking;  /* within wake_timeout after the wake call */
    uint64_t wake_until;
    uint64_t backoff;
    struct event *timer;
    struct pm_httpc *httpc;
    int calls; /* wake/kill requests in flight */
    char server_addr[TUNNEL_NAME_MAX + 8];
    char last_error[256];
};

static int
client_tls(struct tunnel *t, const struct tunnel_conf *tc, struct pm_tls **out,
           char *err, size_t errlen)
{
    const struct pm_core_conf *core = pm_server_conf(t->srv);
    struct pm_tls_conf c = pm_server_tls_conf(core);

    if (tc->server_ca != NULL) {
        c.client_ca = tc->server_ca;
        c.client_ca_pem = NULL;
    }
    if (c.client_ca == NULL && c.client_ca_pem == NULL)
        return pm_errf(err, errlen, PM_EINVAL,
                       "agent mode needs the server's CA: tunnel.server_ca, "
                       "tls.client_ca or CA_PEM");
    if (!pm_tls_wanted(&c))
        return pm_errf(err, errlen, PM_EINVAL,
                       "agent mode needs a client certificate: tls.cert and "
                       "tls.key (or CERT_PEM and KEY_PEM)");
    c.crl = NULL;
    *out = pm_tls_client_new(&c, err, errlen);
    if (*out == NULL)
        return PM_EINVAL;
    pm_tls_set_check(*out, tunnel_identity_check, t);
    return PM_OK;
}

static void probe_cb(int fd, short what, void *arg);

int
tunnel_agent_init(struct tunnel *t, char *err, size_t errlen)
{
    struct tunnel_agent *ag = pm_xcalloc(1, sizeof *ag);
    char host[TUNNEL_NAME_MAX];
    const char *colon = strrchr(t->conf.proxy_addr, ':');
    const char *h = t->conf.proxy_addr;
    size_t hl;
    long port;
    char *end;

    t->ag = ag;
    if (colon == NULL)
        return pm_errf(err, errlen, PM_EINVAL,
                       "tunnel.proxy_addr: expected address:port");
    hl = (size_t)(colon - h);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    port = strtol(colon + 1, &end, 10);
    if (hl == 0 || hl >= sizeof host || *end != '\0' || port < 1 ||
        port > 65535)
        return pm_errf(err, errlen, PM_EINVAL,
                       "tunnel.proxy_addr: expected address:port, got '%s'",
                       t->conf.proxy_addr);
    memcpy(host, h, hl);
    host[hl] = '\0';
    if (pm_cidr_list_parse(t->conf.proxy_allow, &t->proxy_allow, err, errlen) !=
        PM_OK)
        return pm_errf(err, errlen, PM_EINVAL, "tunnel.proxy_allow: %s", err);
    if (client_tls(t, &t->conf, &t->tls, err, errlen) != PM_OK)
        return PM_EINVAL;
    pm_server_set_listen(t->srv, host, (int)port);
    snprintf(ag->server_addr, sizeof ag->server_addr, "%s:%lld",
             t->conf.server_ip, (long long)t->conf.server_port);
    ag->backoff = t->conf.retry_initial;
    ag->timer = evtimer_new(pm_server_base(t->srv), probe_cb, t);
    if (t->conf.wake_endpoint != NULL || t->conf.kill_endpoint != NULL) {
        struct pm_httpc_opts o = {0};

        o.connect_timeout_ms = AGENT_CALL_TIMEOUT_MS;
        ag->httpc = pm_httpc_new(pm_server_base(t->srv), &o, err, errlen);
        if (ag->httpc == NULL)
            return PM_EINVAL;
    }
    return PM_OK;
}

/* ---- probes ------------------------------------------------------------- */

static void
schedule(struct tunnel *t, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};

    if (t->draining)
        return;
    event_add(t->ag->timer, &tv); /* re-adding moves a pending one */
}

/* backoff +- 20 % */
static uint64_t
jitter(uint64_t ms)
{
    uint32_t r;

    pm_random_bytes(&r, sizeof r);
    return ms * 8 / 10 + (ms * 4 / 10) * (r % 1001) / 1000;
}

static void
set_connected(struct tunnel *t, bool up, const char *why)
{
    struct tunnel_agent *ag = t->ag;

    if (up && !ag->connected)
        pm_log_kv(PM_LOG_INFO, "tunnel_server_up", "the tunnel server answers",
                  "server", ag->server_addr, NULL);
    if (!up && (ag->connected || !ag->ever))
        pm_log_kv(PM_LOG_WARN, "tunnel_server_down", why, "server",
                  ag->server_addr, NULL);
    if (!up)
        pm_strlcpy(ag->last_error, why, sizeof ag->last_error);
    ag->connected = up;
    ag->ever |= up;
}

static void
probe_finished(struct tunnel *t, bool ok, const char *why)
{
    struct tunnel_agent *ag = t->ag;

    ag->probing = false;
    set_connected(t, ok, why);
    if (ok) {
        ag->backoff = t->conf.retry_initial;
        if (ag->waking) {
            ag->waking = false;
            pm_log(PM_LOG_INFO, "tunnel_server_awake", "server is up");
        }
        if (t->conf.probe_interval > 0)
            schedule(t, t->conf.probe_interval);
        return;
    }
    if (ag->waking && pm_now_ms() < ag->wake_until) {
        schedule(t, t->conf.wake_retry_interval);
        return;
    }
    if (ag->waking) {
        ag->waking = false;
        pm_log(PM_LOG_ERROR, "tunnel_wake_timeout",
               "the server did not answer within tunnel.wake_timeout");
    }
    schedule(t, jitter(ag->backoff));
    ag->backoff = ag->backoff * 2 < t->conf.retry_max ? ag->backoff * 2
                                                      : t->conf.retry_max;
}

static void
probe_cb(int fd, short what, void *arg)
{
    struct tunnel *t = arg;
    struct tunnel_conn *c;
    static const char req[] = "GET /health HTTP/1.1\r\nHost: p2pmesh-tunnel\r\n"
                              "Connection: close\r\n\r\n";

    (void)fd;
    (void)what;
    if (t->ag->probing || t->draining)
        return;
    t->ag->probing = true;
    c = tunnel_conn_new(t, -1, "probe");
    c->probe = true;
    c->target.out = evbuffer_new();
    evbuffer_add(c->target.out, req, sizeof req - 1);
    snprintf(c->method, sizeof c->method, "GET");
    tunnel_agent_dial(c);
}

/* ---- streams ------------------------------------------------------------ */

void
tunnel_agent_dial(struct tunnel_conn *c)
{
    struct tunnel *t = c->t;

    c->stream_ms = pm_now_ms();
    tunnel_dial_start(c, t->conf.server_ip, (int)t->conf.server_port, false);
}

static void
agent_failed(struct tunnel *t, const char *why)
{
    struct tunnel_agent *ag = t->ag;

    if (ag->connected) {
        set_connected(t, false, why);
        if (!ag->probing)
            schedule(t, jitter(t->conf.retry_initial));
    }
}

void
tunnel_agent_conn_failed(struct tunnel_conn *c, const char *why)
{
    char details[400];

    if (c->probe) {
        probe_finished(c->t, false, why);
        tunnel_conn_close(c, NULL);
        return;
    }
    agent_failed(c->t, why);
    snprintf(details, sizeof details, "the tunnel server is unreachable: %s",
             why);
    tunnel_conn_refuse(c, 502, "destination_unavailable", details);
}

void
tunnel_agent_connected_tcp(struct tunnel_conn *c)
{
    struct ssl_st *ssl = pm_tls_new_ssl(c->t->tls, c->t->conf.server_name);

    if (ssl == NULL) {
        tunnel_agent_conn_failed(c, "cannot create a TLS session");
        return;
    }
    tunnel_end_tls(&c->target, ssl);
    c->state = TS_UPSTREAM;
    tunnel_agent_upstream_io(c);
}

/* The probe's answer: the status line is enough. */
static void
probe_read(struct tunnel_conn *c)
{
    char buf[512];
    long n = tunnel_end_read(&c->target, buf, sizeof buf - 1);
    int status = 0;

    if (n == TUNNEL_AGAIN)
        return;
    if (n > 0) {
        buf[n] = '\0';
        if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
            status = 0;
    }
    if (status == 200) {
        probe_finished(c->t, true, NULL);
        tunnel_conn_close(c, NULL);
        return;
    }
    tunnel_agent_conn_failed(c, n > 0 ? "the server's /health is not 200"
                                      : "the server closed the connection "
                                        "(certificate refused?)");
}

void
tunnel_agent_upstream_io(struct tunnel_conn *c)
{
    int rv;
    char e[256];

    if (c->state == TS_PROBE) {
        probe_read(c);
        return;
    }
    rv = tunnel_end_handshake(&c->target);
    if (rv == PM_EAGAIN)
        return;
    if (rv != PM_OK) {
        long v = SSL_get_verify_result(c->target.ssl);
        char why[320];

        snprintf(why, sizeof why, "TLS handshake with the server failed: %s",
                 v != X509_V_OK ? X509_verify_cert_error_string(v)
                                : pm_tls_error_text(e, sizeof e));
        tunnel_agent_conn_failed(c, why);
        return;
    }
    if (c->probe) {
        c->state = TS_PROBE;
        if (tunnel_end_flush(&c->target) == PM_EIO) {
            tunnel_agent_conn_failed(c, "the server closed the connection");
            return;
        }
        tunnel_end_read_on(&c->target);
        probe_read(c);
        return;
    }
    set_connected(c->t, true, NULL);
    tunnel_pipe_start(c);
}

/* ---- lifecycle calls ---------------------------------------------------- */

static void
call_done(const struct pm_httpc_res *res, void *arg)
{
    struct tunnel *t = arg;
    char st[8];

    t->ag->calls--;
    snprintf(st, sizeof st, "%d", res->status);
    if (res->status >= 200 && res->status < 300)
        pm_log_kv(PM_LOG_INFO, "tunnel_lifecycle_call", "lifecycle call done",
                  "status", st, NULL);
    else
        pm_log_kv(PM_LOG_WARN, "tunnel_lifecycle_call", "lifecycle call failed",
                  "status", st, "error", res->error ? res->error : "", NULL);
}

/* POST {"action":...} to url, with x-api-key or SigV4 (service lambda). */
static void
call(struct tunnel *t, const char *url, const char *action)
{
    struct pm_httpc_header hs[2] = {{"Content-Type", "application/json"},
                                    {"x-api-key", t->conf.api_key}};
    struct pm_httpc_req req = {0};
    struct pm_aws_creds creds = {0};
    char body[128], err[PM_ERRMSG_SIZE];
    int rv;

    snprintf(body, sizeof body,
             "{\"action\":\"%s\",\"cluster_name\":\"%s\","
             "\"service_name\":\"%s\"}",
             action, t->conf.cluster_name, t->conf.service_name);
    req.method = "POST";
    req.url = url;
    req.headers = hs;
    req.nheaders = t->conf.api_key ? 2 : 1;
    req.body = body;
    req.body_len = strlen(body);
    req.timeout_ms = AGENT_CALL_TIMEOUT_MS;
    if (t->conf.api_key == NULL &&
        pm_aws_creds_from_env(&creds, err, sizeof err) == PM_OK) {
        rv = pm_aws_send(t->ag->httpc, &creds, t->conf.region, "lambda", &req,
                         call_done, t, err, sizeof err);
        pm_aws_creds_clear(&creds);
    } else {
        pm_aws_creds_clear(&creds);
        rv = pm_httpc_send(t->ag->httpc, &req, call_done, t, err, sizeof err);
    }
    if (rv == PM_OK) {
        t->ag->calls++;
        return;
    }
    pm_log_kv(PM_LOG_WARN, "tunnel_lifecycle_call", err, "action", action,
              NULL);
}

void
tunnel_agent_start(struct tunnel *t)
{
    struct tunnel_agent *ag = t->ag;

    if (t->conf.wake_endpoint != NULL) {
        call(t, t->conf.wake_endpoint, "wake");
        ag->waking = true;
        ag->wake_until = pm_now_ms() + t->conf.wake_timeout;
    }
    schedule(t, 0);
}

void
tunnel_agent_stop(struct tunnel *t)
{
    event_del(t->ag->timer);
    if (t->conf.kill_endpoint != NULL)
        call(t, t->conf.kill_endpoint, "kill");
}

bool
tunnel_agent_busy(struct tunnel *t)
{
    return t->ag->calls > 0;
}

void
tunnel_agent_free(struct tunnel *t)
{
    struct tunnel_agent *ag = t->ag;

    if (ag == NULL)
        return;
    if (ag->httpc != NULL)
        pm_httpc_free(ag->httpc);
    if (ag->timer != NULL)
        event_free(ag->timer);
    pm_tls_free(t->tls);
    t->tls = NULL;
    free(ag);
    t->ag = NULL;
}

int
tunnel_agent_reload(struct tunnel *t, const struct tunnel_conf *fresh)
{
    char err[PM_ERRMSG_SIZE];
    struct pm_tls *tls;

    if (client_tls(t, fresh, &tls, err, sizeof err) != PM_OK) {
        pm_log(PM_LOG_ERROR, "tunnel_reload_failed",
               "%s; keeping the old certificate", err);
        return PM_EINVAL;
    }
    pm_tls_free(t->tls); /* open streams keep their SSL_CTX reference */
    t->tls = tls;
    return PM_OK;
}

void
tunnel_agent_health(struct tunnel *t, cJSON *o)
{
    struct tunnel_agent *ag = t->ag;

    cJSON_AddBoolToObject(o, "connected", ag->connected);
    cJSON_AddStringToObject(o, "server_addr", ag->server_addr);
    cJSON_AddStringToObject(o, "server_name", t->conf.server_name);
    if (!ag->connected && ag->last_error[0] != '\0')
        cJSON_AddStringToObject(o, "last_error", ag->last_error);
}

bool
tunnel_agent_connected(const struct tunnel *t)
{
    return t->ag->connected;
}
