/*
 * pm_server: one role on one loop. Binds the listeners, creates a pm_conn
 * per accepted socket, routes requests (per-IP rate limit, the core's
 * health and metrics endpoints, WebSocket upgrades with their limits and
 * Origin check, then the role), and runs the lifecycle: SIGTERM/SIGINT
 * drain with close 1001 and a deadline, a second signal exits at once,
 * SIGHUP reloads TLS material and log.level. Loop thread only.
 */
#include "config.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "pm_conn_int.h"
#include "pm_listener.h"
#include "pm_log.h"
#include "pm_loop.h"
#include "pm_metrics.h"
#include "pm_notify.h"
#include "pm_ratelimit.h"
#include "pm_server.h"
#include "pm_stream.h"
#include "pm_tls.h"
#include "pm_util.h"

#define OFF(f) offsetof(struct pm_core_conf, f)

static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const formats[] = {"json", "text", NULL};
static const char *const envs[] = {"development", "production", "test", NULL};
static const char *const tls_versions[] = {"1.2", "1.3", NULL};

/* Not const: the port default is the role's (set in pm_server_conf_table). */
static struct pm_conf_key core_keys[] = {
    {"addr", PM_CONF_STRING, OFF(addr), "0.0.0.0", 0, 0, NULL,
     "listen address"},
    {"port", PM_CONF_INT, OFF(port), NULL, 0, 65535, NULL,
     "main listener port (0: none)"},
    {"admin_port", PM_CONF_INT, OFF(admin_port), "0", 0, 65535, NULL,
     "separate plain-HTTP port for /health /ready /metrics (0: main port)"},
    {"public_url", PM_CONF_STRING, OFF(public_url), NULL, 0, 0, NULL,
     "the URL clients should use (default derived from addr and port)"},
    {"tls.cert", PM_CONF_STRING, OFF(tls_cert), NULL, 0, 0, NULL,
     "PEM certificate chain file: serve TLS on the main port"},
    {"tls.key", PM_CONF_STRING, OFF(tls_key), NULL, 0, 0, NULL,
     "PEM private key file"},
    {"tls.cert_pem", PM_CONF_STRING, OFF(tls_cert_pem), NULL, 0, 0, NULL,
     "PEM certificate chain as text"},
    {"tls.key_pem", PM_CONF_SECRET, OFF(tls_key_pem), NULL, 0, 0, NULL,
     "PEM private key as text"},
    {"tls.client_ca", PM_CONF_STRING, OFF(tls_client_ca), NULL, 0, 0, NULL,
     "CA file: require and verify client certificates (mTLS)"},
    {"tls.client_ca_pem", PM_CONF_STRING, OFF(tls_client_ca_pem), NULL, 0, 0,
     NULL, "CA certificates as PEM text (instead of tls.client_ca)"},
    {"tls.crl", PM_CONF_STRING, OFF(tls_crl), NULL, 0, 0, NULL,
     "PEM CRL file checked against client certificates"},
    {"tls.min_version", PM_CONF_ENUM, OFF(tls_min_version), "1.2", 0, 0,
     tls_versions, "lowest TLS version: 1.2 or 1.3"},
    {"log.level", PM_CONF_ENUM, OFF(log_level), "info", 0, 0, levels,
     "debug, info, warn or error"},
    {"log.format", PM_CONF_ENUM, OFF(log_format), "json", 0, 0, formats,
     "json (one object per line) or text"},
    {"metrics.emf", PM_CONF_BOOL, OFF(metrics_emf), "false", 0, 0, NULL,
     "also print CloudWatch Embedded Metric Format lines"},
    {"metrics.namespace", PM_CONF_STRING, OFF(metrics_namespace), "p2pmesh", 0,
     0, NULL, "EMF namespace"},
    {"metrics.interval", PM_CONF_DURATION, OFF(metrics_interval), "60s", 1000,
     86400000, NULL, "EMF period"},
    {"redis.url", PM_CONF_SECRET, OFF(redis_url), NULL, 0, 0, NULL,
     "redis:// or rediss:// URL (empty: embedded in-memory state)"},
    {"redis.require_tls", PM_CONF_BOOL, OFF(redis_require_tls), "false", 0, 0,
     NULL, "refuse to start unless redis.url is rediss://"},
    {"redis.tls_ca", PM_CONF_STRING, OFF(redis_tls_ca), NULL, 0, 0, NULL,
     "CA file that signs a rediss:// server (default: the system store)"},
    {"redis.key_prefix", PM_CONF_STRING, OFF(redis_key_prefix), NULL, 0, 0,
     NULL,
     "prefix of every Redis key (default: the role name; sig for signaling)"},
    {"database.url", PM_CONF_SECRET, OFF(database_url), NULL, 0, 0, NULL,
     "sqlite:PATH or postgres://... (role default)"},
    {"jwt.secret", PM_CONF_SECRET, OFF(jwt_secret), NULL, 0, 0, NULL,
     "HS256 key for roles that verify tokens"},
    {"env", PM_CONF_ENUM, OFF(env), "development", 0, 0, envs,
     "production turns unsafe defaults into startup errors"},
    {"shutdown.grace", PM_CONF_DURATION, OFF(shutdown_grace), "25s", 0, 3600000,
     NULL, "drain budget after SIGTERM"},
    {"ws.max_message", PM_CONF_SIZE, OFF(ws_max_message), "64k", 125, 1 << 30,
     NULL, "larger WebSocket message: close 1009"},
    {"ws.ping_interval", PM_CONF_DURATION, OFF(ws_ping_interval), "25s", 100,
     3600000, NULL, "server WebSocket pings"},
    {"ws.idle_timeout", PM_CONF_DURATION, OFF(ws_idle_timeout), "75s", 100,
     86400000, NULL, "no traffic and no pong for this long: close"},
    {"ws.send_buffer", PM_CONF_SIZE, OFF(ws_send_buffer), "1m", 4096, 1 << 30,
     NULL, "queued output of a client that stopped reading: drop it"},
    {"http.max_header", PM_CONF_SIZE, OFF(http_max_header), "16k", 1024,
     1 << 20, NULL, "request head limit: 431"},
    {"http.max_body", PM_CONF_SIZE, OFF(http_max_body), "1m", 0, 1 << 30, NULL,
     "request body limit: 413"},
    {"http.header_timeout", PM_CONF_DURATION, OFF(http_header_timeout), "10s",
     100, 3600000, NULL, "deadline for a whole request head (slowloris)"},
    {"http.body_timeout", PM_CONF_DURATION, OFF(http_body_timeout),
     PM_HTTP_BODY_TIMEOUT_DEFAULT, 100, 3600000, NULL,
     "deadline for a request body once its head is in: 408"},
    {"http.keepalive_timeout", PM_CONF_DURATION, OFF(http_keepalive_timeout),
     "75s", 100, 3600000, NULL, "idle keep-alive connections are closed"},
    {"limits.max_connections", PM_CONF_INT, OFF(max_connections), "10000", 0,
     1000000, NULL, "open WebSocket connections; over it: 503 (0: no cap)"},
    {"limits.per_ip_connections", PM_CONF_INT, OFF(per_ip_connections), "256",
     0, 1000000, NULL, "WebSocket connections per client IP; over it: 429"},
    {"limits.per_ip_rate", PM_CONF_RATE, OFF(per_ip_rate), "100/10s", 0, 0,
     NULL, "HTTP requests and upgrades per client IP; over it: 429"},
    {"limits.per_conn_rate", PM_CONF_RATE, OFF(per_conn_rate), "50/1s", 0, 0,
     NULL, "WebSocket messages per connection; over it: refused"},
    {"limits.per_conn_burst", PM_CONF_INT, OFF(per_conn_burst), "200", 1,
     1000000, NULL, "burst allowance of limits.per_conn_rate"},
    {"limits.trusted_proxies", PM_CONF_STRING, OFF(trusted_proxies), NULL, 0, 0,
     NULL, "CIDRs whose X-Forwarded-For is believed (ALB)"},
    {"origin.allow", PM_CONF_STRING, OFF(origin_allow), NULL, 0, 0, NULL,
     "comma list of allowed Origin values (empty: any)"},
    {NULL, 0, 0, NULL, 0, 0, NULL, NULL},
};

struct pm_server {
    const struct pm_role *role;
    void *role_state;
    void *role_conf;
    struct pm_config *cfg;
    struct pm_core_conf *conf;
    int argc;
    char **argv;
    struct pm_loop *loop;
    struct pm_listener *main_l, *admin_l;
    struct pm_tls *tls;
    struct pm_metrics *metrics;
    struct pm_core_stats stats;
    struct pm_iptable *ips;
    struct pm_cidr_list *trusted;
    struct pm_conn_list conns;
    struct event *tick, *deadline, *emf;
    struct pm_notify *notify; /* the service manager (systemd), if any */
    bool draining;
    char *listen_addr; /* set by the role: instead of addr and port */
    int listen_port;
    bool no_admin; /* the role's listener replaces a default admin port */
    uint64_t start_ms;
    char public_url[512];
    int exit_code;
};

struct pm_config *
pm_server_config_new(struct pm_core_conf *conf, const struct pm_role *role,
                     void *role_conf)
{
    static char port[8], admin[8];
    struct pm_conf_table t[] = {
        {core_keys, conf},
        {role->base_keys, role_conf},
        {role->conf_keys, role_conf},
    };

    snprintf(port, sizeof port, "%u", (unsigned)role->default_port);
    core_keys[1].def = port;
    snprintf(admin, sizeof admin, "%u", (unsigned)role->default_admin_port);
    core_keys[2].def = admin;
    return pm_config_new(t, sizeof t / sizeof t[0], role->env_aliases);
}

int
pm_server_conf_check(const struct pm_core_conf *conf, char *err, size_t errlen)
{
    struct pm_cidr_list *l;
    char e[PM_ERRMSG_SIZE];

    if (pm_cidr_list_parse(conf->trusted_proxies, &l, e, sizeof e) != PM_OK)
        return pm_errf(err, errlen, PM_EINVAL,
                       "bad value for limits.trusted_proxies: %s", e);
    pm_cidr_list_free(l);
    if (conf->redis_require_tls &&
        (conf->redis_url == NULL || strncmp(conf->redis_url, "rediss://", 9)))
        return pm_errf(err, errlen, PM_EINVAL,
                       "redis.require_tls is set but redis.url is not a "
                       "rediss:// URL");
    if ((conf->tls_cert == NULL) != (conf->tls_key == NULL))
        return pm_errf(err, errlen, PM_EINVAL,
                       "tls.cert and tls.key must be set together");
    if ((conf->tls_cert_pem == NULL) != (conf->tls_key_pem == NULL))
        return pm_errf(err, errlen, PM_EINVAL,
                       "tls.cert_pem and tls.key_pem must be set together");
    if (conf->admin_port != 0 && conf->admin_port == conf->port)
        return pm_errf(err, errlen, PM_EINVAL,
                       "admin_port must differ from port");
    return PM_OK;
}

struct pm_tls_conf
pm_server_tls_conf(const struct pm_core_conf *c)
{
    struct pm_tls_conf t = {
        .cert = c->tls_cert,
        .key = c->tls_key,
        .cert_pem = c->tls_cert_pem,
        .key_pem = c->tls_key_pem,
        .client_ca = c->tls_client_ca,
        .client_ca_pem = c->tls_client_ca_pem,
        .crl = c->tls_crl,
        .min_version = c->tls_min_version,
    };

    return t;
}

void
pm_server_set_listen(struct pm_server *srv, const char *addr, int port)
{
    free(srv->listen_addr);
    srv->listen_addr = pm_xstrdup(addr);
    srv->listen_port = port;
    if (pm_config_source(srv->cfg, "admin_port") == PM_SRC_DEFAULT)
        srv->no_admin = true;
    snprintf(srv->public_url, sizeof srv->public_url, "http://%s:%d", addr,
             port);
}

struct pm_tls *
pm_server_tls(struct pm_server *srv)
{
    return srv->tls;
}

struct event_base *
pm_server_base(struct pm_server *srv)
{
    return pm_loop_base(srv->loop);
}

struct pm_loop *
pm_server_loop(struct pm_server *srv)
{
    return srv->loop;
}

struct pm_metrics *
pm_server_metrics(struct pm_server *srv)
{
    return srv->metrics;
}

const struct pm_core_conf *
pm_server_conf(const struct pm_server *srv)
{
    return srv->conf;
}

const char *
pm_server_public_url(const struct pm_server *srv)
{
    return srv->public_url;
}

bool
pm_server_is_draining(const struct pm_server *srv)
{
    return srv->draining;
}

void
pm_server_defer(struct pm_server *srv, void (*fn)(void *), void *arg)
{
    pm_loop_defer(srv->loop, fn, arg);
}

struct pm_core_stats *
pm_server_stats(struct pm_server *srv)
{
    return &srv->stats;
}

const struct pm_role *
pm_server_role(struct pm_server *srv, void **state)
{
    *state = srv->role_state;
    return srv->role;
}

static void
count_rejected(struct pm_server *srv, const char *limit)
{
    char labels[64];

    snprintf(labels, sizeof labels, "limit=\"%s\"", limit);
    (*pm_metrics_counter(srv->metrics, "p2pmesh_rejected_total", labels,
                         "Requests, upgrades and messages refused by a "
                         "limit"))++;
}

/* ---- core HTTP endpoints ---------------------------------------------- */

/* A core endpoint's answer, before it is written anywhere. */
struct core_answer {
    int status;
    const char *ctype;
    const char *extra;
    struct evbuffer *body;
};

static void
answer_json(struct core_answer *a, int status, cJSON *o)
{
    char *s = cJSON_PrintUnformatted(o);

    a->status = status;
    a->ctype = "application/json";
    evbuffer_add(a->body, s, strlen(s));
    free(s);
    cJSON_Delete(o);
}

static void
serve_health(struct pm_server *srv, struct core_answer *a)
{
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "status", srv->draining ? "draining" : "ok");
    cJSON_AddStringToObject(o, "role", srv->role->name);
    cJSON_AddStringToObject(o, "version", pm_version);
    cJSON_AddNumberToObject(o, "uptime_s",
                            (double)((pm_now_ms() - srv->start_ms) / 1000));
    cJSON_AddNumberToObject(o, "connections", (double)*srv->stats.ws_open);
    if (srv->role->health != NULL)
        srv->role->health(srv->role_state, o);
    answer_json(a, srv->draining ? 503 : 200, o);
}

static void
serve_ready(struct pm_server *srv, struct core_answer *a)
{
    cJSON *o = cJSON_CreateObject(), *failing = cJSON_CreateArray();

    if (srv->draining)
        cJSON_AddItemToArray(failing, cJSON_CreateString("draining"));
    if (srv->role->ready != NULL)
        srv->role->ready(srv->role_state, failing);
    if (cJSON_GetArraySize(failing) == 0) {
        cJSON_Delete(failing);
        cJSON_AddStringToObject(o, "status", "ready");
        answer_json(a, 200, o);
        return;
    }
    cJSON_AddStringToObject(o, "status", "unready");
    cJSON_AddItemToObject(o, "failing", failing);
    answer_json(a, 503, o);
}

static void
serve_metrics(struct pm_server *srv, struct core_answer *a)
{
    pm_metrics_render(srv->metrics, a->body);
    if (srv->role->metrics != NULL)
        srv->role->metrics(srv->role_state, a->body);
    a->status = 200;
    a->ctype = "text/plain; version=0.0.4; charset=utf-8";
}

/* Answer /health, /ready, /metrics and aliases into a; false if not ours. */
static bool
core_answer(struct pm_server *srv, const struct pm_http_request *req,
            struct core_answer *a)
{
    const char *p = req->path;
    size_t n = req->path_len;
    enum { HEALTH, READY, METRICS } what;

    if (pm_strcaseeq(p, n, "/health") || pm_strcaseeq(p, n, "/healthz"))
        what = HEALTH;
    else if (pm_strcaseeq(p, n, "/ready") || pm_strcaseeq(p, n, "/readyz"))
        what = READY;
    else if (pm_strcaseeq(p, n, "/metrics"))
        what = METRICS;
    else
        return false;
    if (!pm_strcaseeq(req->method, req->method_len, "GET") &&
        !pm_strcaseeq(req->method, req->method_len, "HEAD")) {
        a->status = 405;
        a->ctype = "text/plain; charset=utf-8";
        a->extra = "Allow: GET, HEAD\r\n";
        evbuffer_add_printf(a->body, "405 %s\n", pm_http_reason(405));
        return true;
    }
    if (what == HEALTH)
        serve_health(srv, a);
    else if (what == READY)
        serve_ready(srv, a);
    else
        serve_metrics(srv, a);
    return true;
}

static bool
serve_core(struct pm_server *srv, struct pm_conn *c,
           const struct pm_http_request *req)
{
    struct core_answer a = {0, NULL, NULL, evbuffer_new()};
    bool ours = core_answer(srv, req, &a);

    if (ours)
        pm_conn_http_respond(c, a.status, a.ctype, a.extra,
                             evbuffer_pullup(a.body, -1),
                             evbuffer_get_length(a.body));
    evbuffer_free(a.body);
    return ours;
}

bool
pm_server_core_response(struct pm_server *srv,
                        const struct pm_http_request *req, struct evbuffer *out,
                        bool keep_alive)
{
    struct core_answer a = {0, NULL, NULL, evbuffer_new()};
    bool ours = core_answer(srv, req, &a);

    if (ours)
        pm_http_write_response(
            out, a.status, a.ctype, a.extra, evbuffer_pullup(a.body, -1),
            evbuffer_get_length(a.body), keep_alive,
            pm_strcaseeq(req->method, req->method_len, "HEAD"));
    evbuffer_free(a.body);
    return ours;
}

/* ---- WebSocket upgrade -------------------------------------------------- */

static void
upgrade(struct pm_server *srv, struct pm_conn *c,
        const struct pm_http_request *req)
{
    const struct pm_core_conf *conf = srv->conf;
    const struct pm_http_header *key, *ver, *origin, *offered;
    char accept[29], *proto, *extra;
    int status = 0, rv;

    key = pm_http_header_get(req, "sec-websocket-key");
    ver = pm_http_header_get(req, "sec-websocket-version");
    if (!pm_strcaseeq(req->method, req->method_len, "GET") || req->minor < 1 ||
        key == NULL || !pm_ws_key_valid(key->value, key->value_len)) {
        pm_conn_http_status(c, 400, NULL);
        return;
    }
    if (ver == NULL || !pm_strcaseeq(ver->value, ver->value_len, "13")) {
        pm_conn_http_status(c, 426, "Sec-WebSocket-Version: 13\r\n");
        return;
    }
    if (srv->draining) {
        pm_conn_http_status(c, 503, NULL);
        return;
    }
    origin = pm_http_header_get(req, "origin");
    if (conf->origin_allow != NULL && origin != NULL &&
        !pm_list_has(conf->origin_allow, origin->value, origin->value_len)) {
        count_rejected(srv, "origin");
        pm_conn_http_status(c, 403, NULL);
        return;
    }
    if (conf->max_connections > 0 &&
        *srv->stats.ws_open >= conf->max_connections) {
        count_rejected(srv, "max_connections");
        pm_conn_http_status(c, 503, NULL);
        return;
    }
    if (pm_iptable_conn_acquire(srv->ips, c->ip,
                                (uint32_t)conf->per_ip_connections) != PM_OK) {
        count_rejected(srv, "per_ip_connections");
        pm_conn_http_status(c, 429, NULL);
        return;
    }
    c->ip_counted = true;
    rv = srv->role->ws_upgrade != NULL
             ? srv->role->ws_upgrade(srv->role_state, c, req, &status)
             : PM_ENOTFOUND;
    proto = c->ws_protocol; /* the subprotocol the role chose, if any */
    c->ws_protocol = NULL;
    if (rv != PM_OK) {
        free(proto);
        /* RFC 9110 15.5.2: a 401 names its scheme; ours is bearer JWTs. */
        pm_conn_http_status(c, status ? status : 404,
                            status == 401 ? "WWW-Authenticate: Bearer\r\n"
                                          : NULL);
        return;
    }
    offered = pm_http_header_get(req, "sec-websocket-protocol");
    PM_ASSERT(proto == NULL ||
              (offered != NULL && pm_http_header_has_token(offered, proto)));
    pm_ws_accept_key(key->value, key->value_len, accept);
    extra = pm_xasprintf("Upgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Accept: %s\r\n%s%s%s",
                         accept, proto ? "Sec-WebSocket-Protocol: " : "",
                         proto ? proto : "", proto ? "\r\n" : "");
    pm_http_write_response(pm_stream_output(c->stream), 101, NULL, extra, NULL,
                           0, true, false);
    free(extra);
    free(proto);
    (*srv->stats.ws_upgrades)++;
    (*srv->stats.ws_open)++;
    pm_conn_ws_start(c);
    if (srv->role->ws_open != NULL)
        srv->role->ws_open(srv->role_state, c);
}

void
pm_server_request(struct pm_server *srv, struct pm_conn *c,
                  const struct pm_http_request *req, const uint8_t *body,
                  size_t body_len)
{
    const struct pm_http_header *xff =
        pm_http_header_get(req, "x-forwarded-for");
    int rv;

    pm_addr_client(srv->trusted, c->peer, xff ? xff->value : NULL,
                   xff ? xff->value_len : 0, c->ip);
    if (serve_core(srv, c, req))
        return;
    if (c->admin) {
        pm_conn_http_status(c, 404, NULL);
        return;
    }
    if (!pm_iptable_rate_take(srv->ips, c->ip, &srv->conf->per_ip_rate,
                              pm_now_ms())) {
        count_rejected(srv, "per_ip_rate");
        pm_conn_http_status(c, 429, "Retry-After: 1\r\n");
        return;
    }
    if (req->upgrade_websocket ||
        pm_http_header_get(req, "sec-websocket-key") != NULL) {
        upgrade(srv, c, req);
        return;
    }
    rv = srv->role->http
             ? srv->role->http(srv->role_state, c, req, body, body_len)
             : PM_ENOTFOUND;
    if (rv == PM_EAGAIN)
        pm_conn_http_wait(c);
    else if (rv != PM_OK)
        pm_conn_http_status(c, 404, NULL);
}

void
pm_server_conn_closing(struct pm_server *srv, struct pm_conn *c, uint16_t code)
{
    char labels[32];

    snprintf(labels, sizeof labels, "code=\"%u\"", (unsigned)code);
    (*pm_metrics_counter(srv->metrics, "p2pmesh_ws_closes_total", labels,
                         "WebSocket connections closed, by close code"))++;
    if (srv->role->ws_close != NULL)
        srv->role->ws_close(srv->role_state, c, code);
}

void
pm_server_conn_free(struct pm_server *srv, struct pm_conn *c)
{
    if (c->ws_notified || c->state == PM_CONN_WS_OPEN)
        (*srv->stats.ws_open)--;
    if (c->ip_counted)
        pm_iptable_conn_release(srv->ips, c->ip);
    (*srv->stats.conns_open)--;
    TAILQ_REMOVE(&srv->conns, c, link);
}

/* ---- accept --------------------------------------------------------- */

static void
accept_conn(struct pm_server *srv, int fd, const struct sockaddr *sa,
            bool admin)
{
    struct bufferevent *bev;
    struct pm_stream *stream = NULL;
    struct pm_conn *c;
    char peer[PM_ADDR_STRLEN];
    int one = 1;

    pm_addr_format(sa, peer);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    evutil_make_socket_nonblocking(fd);
    if (srv->tls != NULL && !admin) {
        bev = pm_tls_wrap(srv->tls, pm_server_base(srv), fd);
        if (bev != NULL)
            stream = pm_stream_tls(bev);
    } else {
        stream = pm_stream_plain(srv->loop, fd);
    }
    if (stream == NULL) {
        pm_log_kv(PM_LOG_WARN, "accept_failed", "cannot set up a connection",
                  "ip", peer, NULL);
        return;
    }
    c = pm_conn_new(srv, stream, peer, admin);
    TAILQ_INSERT_TAIL(&srv->conns, c, link);
    (*srv->stats.conns_total)++;
    (*srv->stats.conns_open)++;
}

static void
accept_main(int fd, const struct sockaddr *sa, void *arg)
{
    struct pm_server *srv = arg;
    char peer[PM_ADDR_STRLEN];

    if (srv->role->accept != NULL) {
        int one = 1;

        pm_addr_format(sa, peer);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        evutil_make_socket_nonblocking(fd);
        srv->role->accept(srv->role_state, fd, peer);
        return;
    }
    accept_conn(srv, fd, sa, false);
}

static void
accept_admin(int fd, const struct sockaddr *sa, void *arg)
{
    accept_conn(arg, fd, sa, true);
}

/* ---- lifecycle ---------------------------------------------------------- */

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pm_server *srv = arg;

    (void)fd;
    (void)what;
    if (srv->draining && *srv->stats.ws_open == 0 &&
        (srv->role->busy == NULL || !srv->role->busy(srv->role_state))) {
        pm_log(PM_LOG_INFO, "drained", "all WebSocket clients closed");
        pm_loop_stop(srv->loop);
        return;
    }
    pm_iptable_sweep(srv->ips, &srv->conf->per_ip_rate, pm_now_ms());
}

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pm_server *srv = arg;

    (void)fd;
    (void)what;
    pm_log(PM_LOG_WARN, "drain_deadline",
           "shutdown.grace passed with %lld WebSocket clients left",
           (long long)*srv->stats.ws_open);
    pm_loop_stop(srv->loop);
}

static void
emf_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pm_server *srv = arg;

    (void)fd;
    (void)what;
    pm_metrics_emit_emf(srv->metrics, srv->conf->metrics_namespace,
                        srv->role->name);
}

int
pm_server_jwt_secret(const struct pm_core_conf *core, bool shared, char **out,
                     char *err, size_t errlen)
{
    const char *s = core->jwt_secret;
    bool prod = strcmp(core->env, "production") == 0;

    if (s == NULL || s[0] == '\0') {
        uint8_t raw[32];

        if (prod || shared)
            return pm_errf(err, errlen, PM_EINVAL,
                           "%s needs jwt.secret (JWT_SECRET)",
                           prod ? "env=production" : "a cluster");
        pm_random_bytes(raw, sizeof raw);
        *out = pm_xmalloc(2 * sizeof raw + 1);
        pm_hex_encode(raw, sizeof raw, *out);
        pm_log(PM_LOG_WARN, "jwt_secret_random",
               "no jwt.secret: a random one is used, so tokens do not "
               "survive a restart or work across instances");
        return PM_OK;
    }
    if (prod && (strcmp(s, "CHANGE_THIS_IN_PRODUCTION") == 0 ||
                 strlen(s) < PM_JWT_SECRET_MIN))
        return pm_errf(err, errlen, PM_EINVAL,
                       "env=production refuses a default jwt.secret or one "
                       "shorter than %d bytes",
                       PM_JWT_SECRET_MIN);
    if (strlen(s) < PM_JWT_SECRET_MIN)
        pm_log(PM_LOG_WARN, "jwt_secret_weak",
               "jwt.secret is shorter than %d bytes", PM_JWT_SECRET_MIN);
    *out = pm_xstrdup(s);
    return PM_OK;
}

void
pm_server_exit(struct pm_server *srv, int code)
{
    srv->exit_code = code;
    pm_loop_stop(srv->loop);
}

static void
on_terminate(int signo, void *arg)
{
    struct pm_server *srv = arg;
    struct pm_conn *c, *next;
    struct timeval grace = {(time_t)(srv->conf->shutdown_grace / 1000),
                            (suseconds_t)(srv->conf->shutdown_grace % 1000) *
                                1000};
    struct timeval fast = {0, 20000};

    if (srv->draining) {
        pm_log(PM_LOG_WARN, "shutdown_forced",
               "second %s: exiting without draining", strsignal(signo));
        _exit(1);
    }
    srv->draining = true;
    {
        char *st = pm_xasprintf("STOPPING=1\nSTATUS=draining %lld "
                                "WebSocket clients",
                                (long long)*srv->stats.ws_open);

        pm_notify_send(srv->notify, st);
        free(st);
    }
    pm_log(PM_LOG_INFO, "shutdown_started",
           "%s: draining %lld WebSocket clients (grace %llums)",
           strsignal(signo), (long long)*srv->stats.ws_open,
           (unsigned long long)srv->conf->shutdown_grace);
    if (srv->role->drain != NULL)
        srv->role->drain(srv->role_state);
    for (c = TAILQ_FIRST(&srv->conns); c != NULL; c = next) {
        next = TAILQ_NEXT(c, link);
        pm_conn_drain(c);
    }
    if (srv->role->stop != NULL)
        srv->role->stop(srv->role_state);
    event_del(srv->tick);
    event_add(srv->tick, &fast);
    event_add(srv->deadline, &grace);
}

/* SIGHUP: reread the file and environment; apply TLS and log.level. */
static void
on_reload(int signo, void *arg)
{
    struct pm_server *srv = arg;
    struct pm_core_conf fresh;
    void *role_fresh = pm_xcalloc(1, srv->role->conf_size + 1);
    struct pm_config *cfg;
    char err[PM_ERRMSG_SIZE];
    extern char **environ;

    (void)signo;
    {
        struct timespec ts;
        char st[64];

        clock_gettime(CLOCK_MONOTONIC, &ts);
        snprintf(st, sizeof st, "RELOADING=1\nMONOTONIC_USEC=%llu",
                 (unsigned long long)ts.tv_sec * 1000000ULL +
                     (unsigned long long)ts.tv_nsec / 1000);
        pm_notify_send(srv->notify, st);
    }
    memset(&fresh, 0, sizeof fresh);
    cfg = pm_server_config_new(&fresh, srv->role, role_fresh);
    if (pm_config_load(cfg, srv->argc, srv->argv, environ, err, sizeof err) !=
        PM_OK) {
        pm_log(PM_LOG_ERROR, "reload_failed", "%s; keeping the old settings",
               err);
        goto done;
    }
    {
        enum pm_log_level lv;

        if (pm_log_level_parse(fresh.log_level, &lv) == PM_OK)
            pm_log_set_level(lv);
    }
    if (srv->tls != NULL) {
        struct pm_tls_conf tc = pm_server_tls_conf(&fresh);

        if (pm_tls_reload(srv->tls, &tc, err, sizeof err) != PM_OK)
            pm_log(PM_LOG_ERROR, "tls_reload_failed",
                   "%s; keeping the old certificate", err);
        else
            pm_log(PM_LOG_INFO, "tls_reloaded", "TLS material reloaded");
    }
    if (srv->role->reload != NULL)
        srv->role->reload(srv->role_state, role_fresh);
    pm_log(PM_LOG_INFO, "reloaded", "configuration reloaded (log.level %s)",
           fresh.log_level);
done:
    pm_notify_send(srv->notify, "READY=1");
    pm_config_free(cfg);
    free(role_fresh);
}

static void
init_stats(struct pm_server *srv)
{
    struct pm_metrics *m = srv->metrics;
    struct pm_core_stats *st = &srv->stats;

    st->conns_total = pm_metrics_counter(m, "p2pmesh_connections_total", NULL,
                                         "TCP connections accepted");
    st->conns_open = pm_metrics_gauge(m, "p2pmesh_connections_open", NULL,
                                      "TCP connections open");
    st->ws_open = pm_metrics_gauge(m, "p2pmesh_ws_connections_open", NULL,
                                   "WebSocket connections open");
    st->http_requests = pm_metrics_counter(m, "p2pmesh_http_requests_total",
                                           NULL, "HTTP requests parsed");
    st->ws_upgrades = pm_metrics_counter(m, "p2pmesh_ws_upgrades_total", NULL,
                                         "WebSocket upgrades accepted");
    st->ws_msgs_rx = pm_metrics_counter(m, "p2pmesh_ws_messages_received_total",
                                        NULL, "WebSocket messages received");
    st->ws_msgs_tx = pm_metrics_counter(m, "p2pmesh_ws_messages_sent_total",
                                        NULL, "WebSocket messages sent");
    st->ws_bytes_rx =
        pm_metrics_counter(m, "p2pmesh_ws_received_bytes_total", NULL,
                           "WebSocket payload bytes received");
    st->ws_bytes_tx = pm_metrics_counter(m, "p2pmesh_ws_sent_bytes_total", NULL,
                                         "WebSocket payload bytes sent");
    st->header_timeouts = pm_metrics_counter(
        m, "p2pmesh_rejected_total", "limit=\"header_timeout\"",
        "Requests, upgrades and messages refused by a limit");
    st->body_timeouts = pm_metrics_counter(
        m, "p2pmesh_rejected_total", "limit=\"body_timeout\"",
        "Requests, upgrades and messages refused by a limit");
    st->rate_refused = pm_metrics_counter(
        m, "p2pmesh_rejected_total", "limit=\"per_conn_rate\"",
        "Requests, upgrades and messages refused by a limit");
}

struct pm_server *
pm_server_new(const struct pm_role *role, int argc, char **argv,
              struct pm_config *cfg, struct pm_core_conf *conf, void *role_conf,
              char *err, size_t errlen)
{
    struct pm_server *srv;
    char e[PM_ERRMSG_SIZE];

    if (pm_server_conf_check(conf, err, errlen) != PM_OK)
        return NULL;
    srv = pm_xcalloc(1, sizeof *srv);
    srv->role = role;
    srv->role_conf = role_conf;
    srv->cfg = cfg;
    srv->conf = conf;
    srv->argc = argc;
    srv->argv = argv;
    srv->start_ms = pm_now_ms();
    TAILQ_INIT(&srv->conns);
    srv->loop = pm_loop_new(err, errlen);
    if (srv->loop == NULL)
        goto fail;
    srv->metrics = pm_metrics_new();
    init_stats(srv);
    srv->ips = pm_iptable_new();
    pm_cidr_list_parse(conf->trusted_proxies, &srv->trusted, e, sizeof e);
    if (conf->public_url != NULL)
        pm_strlcpy(srv->public_url, conf->public_url, sizeof srv->public_url);
    else
        snprintf(srv->public_url, sizeof srv->public_url, "%s://%s:%lld",
                 conf->tls_cert || conf->tls_cert_pem ? "https" : "http",
                 conf->addr, (long long)conf->port);
    {
        struct pm_tls_conf tc = pm_server_tls_conf(conf);

        if (pm_tls_wanted(&tc) &&
            (srv->tls = pm_tls_new(&tc, err, errlen)) == NULL)
            goto fail;
    }
    return srv;
fail:
    pm_server_free(srv);
    return NULL;
}

int
pm_server_run(struct pm_server *srv, char *err, size_t errlen)
{
    struct event_base *base = pm_server_base(srv);
    const struct pm_core_conf *conf = srv->conf;
    struct timeval sec = {1, 0};
    int rv;

    if (srv->role->init(srv, srv->role_conf, &srv->role_state, err, errlen) !=
        PM_OK)
        return 2;
    if (srv->listen_addr != NULL) {
        srv->main_l = pm_listener_new(base, srv->listen_addr, srv->listen_port,
                                      accept_main, srv, err, errlen);
        if (srv->main_l == NULL)
            return 2;
    } else if (conf->port > 0 || srv->role->default_port > 0) {
        srv->main_l = pm_listener_new(base, conf->addr, (int)conf->port,
                                      accept_main, srv, err, errlen);
        if (srv->main_l == NULL)
            return 2;
    }
    if (conf->admin_port > 0 && !srv->no_admin) {
        srv->admin_l = pm_listener_new(base, conf->addr, (int)conf->admin_port,
                                       accept_admin, srv, err, errlen);
        if (srv->admin_l == NULL)
            return 2;
    }
    if (srv->role->start != NULL &&
        srv->role->start(srv->role_state, err, errlen) != PM_OK)
        return 2;
    pm_loop_on_signal(srv->loop, SIGTERM, on_terminate, srv);
    pm_loop_on_signal(srv->loop, SIGINT, on_terminate, srv);
    pm_loop_on_signal(srv->loop, SIGHUP, on_reload, srv);
    signal(SIGPIPE, SIG_IGN);
    srv->tick = event_new(base, -1, EV_PERSIST, tick_cb, srv);
    event_add(srv->tick, &sec);
    srv->deadline = evtimer_new(base, deadline_cb, srv);
    if (conf->metrics_emf) {
        struct timeval iv = {(time_t)(conf->metrics_interval / 1000), 0};

        srv->emf = event_new(base, -1, EV_PERSIST, emf_cb, srv);
        event_add(srv->emf, &iv);
    }
    if (srv->main_l != NULL || srv->admin_l != NULL)
        pm_log_kv(PM_LOG_INFO, "listening", "serving", "role", NULL, "url",
                  srv->public_url, "addr",
                  srv->listen_addr ? srv->listen_addr : conf->addr, "tls",
                  srv->tls && !srv->listen_addr ? "on" : "off", NULL);
    if (srv->main_l != NULL)
        pm_log(PM_LOG_INFO, "listening_port", "main port %d%s",
               pm_listener_port(srv->main_l),
               srv->admin_l ? ", admin port separate" : "");
    {
        char *st = pm_xasprintf("READY=1\nSTATUS=role %s serving on %s",
                                srv->role->name, srv->public_url);

        srv->notify = pm_notify_new(base);
        pm_notify_send(srv->notify, st);
        free(st);
    }
    rv = pm_loop_run(srv->loop);
    pm_log(PM_LOG_INFO, "shutdown_complete", "exiting");
    return rv == PM_OK ? srv->exit_code : 1;
}

void
pm_server_free(struct pm_server *srv)
{
    struct pm_conn *c;

    if (srv == NULL)
        return;
    /* Frees scheduled before the loop stopped go first, so the loop below
     * never meets a connection that is also queued for freeing. */
    if (srv->loop != NULL)
        pm_loop_run_deferred(srv->loop);
    /* Connections still open at exit: free them directly. */
    while ((c = TAILQ_FIRST(&srv->conns)) != NULL) {
        TAILQ_REMOVE(&srv->conns, c, link);
        if ((c->state == PM_CONN_WS_OPEN || c->state == PM_CONN_WS_CLOSING) &&
            !c->ws_notified && srv->role->ws_close != NULL) {
            c->ws_notified = true;
            srv->role->ws_close(srv->role_state, c, PM_WS_GOING_AWAY);
        }
        pm_stream_free(c->stream);
        event_free(c->timer);
        pm_ws_parser_close(&c->ws);
        c->freed = true;
        if (c->refs == 0) /* else the last pm_conn_unref frees it */
            free(c);
    }
    if (srv->role_state != NULL && srv->role->destroy != NULL)
        srv->role->destroy(srv->role_state);
    pm_listener_free(srv->main_l);
    pm_listener_free(srv->admin_l);
    free(srv->listen_addr);
    if (srv->tick)
        event_free(srv->tick);
    if (srv->deadline)
        event_free(srv->deadline);
    if (srv->emf)
        event_free(srv->emf);
    pm_notify_free(srv->notify);
    pm_loop_free(srv->loop);
    pm_tls_free(srv->tls);
    pm_iptable_free(srv->ips);
    pm_cidr_list_free(srv->trusted);
    pm_metrics_free(srv->metrics);
    free(srv);
}
