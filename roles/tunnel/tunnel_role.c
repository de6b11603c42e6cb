/*
 * Role tunnel: an mTLS HTTPS forward proxy (server mode) and the local
 * HTTP proxy that feeds it (agent mode), docs/tunnel.md. This file owns
 * the role's config keys and the Fluidity seed names, the one-shot
 * certificate command, the lifecycle (TLS checks, policy, drain, SIGHUP),
 * and the health, metrics and Fluidity-compatible EMF output.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "pm_addr.h"
#include "pm_log.h"
#include "pm_metrics.h"
#include "pm_role.h"
#include "pm_server.h"
#include "pm_tls.h"
#include "pm_util.h"
#include "tunnel.h"
#include "tunnel_certs.h"

#define OFF(f) offsetof(struct tunnel_conf, f)

static const char *const modes[] = {"server", "agent", NULL};

static const struct pm_conf_key tunnel_conf_keys[] = {
    {"tunnel.mode", PM_CONF_ENUM, OFF(mode), "server", 0, 0, modes,
     "server (mTLS proxy) or agent (local proxy feeding a server)"},
    {"tunnel.allow_cn", PM_CONF_STRING, OFF(allow_cn), NULL, 0, 0, NULL,
     "client certificate CNs allowed (comma list; empty: any the CA signed)"},
    {"tunnel.allow_san", PM_CONF_STRING, OFF(allow_san), NULL, 0, 0, NULL,
     "client certificate DNS/URI/email SANs allowed (comma list)"},
    {"tunnel.allow_pin", PM_CONF_STRING, OFF(allow_pin), NULL, 0, 0, NULL,
     "client key pins sha256//BASE64 (comma list; empty: no pinning)"},
    {"tunnel.connect_ports", PM_CONF_STRING, OFF(connect_ports), "443", 0, 0,
     NULL, "ports CONNECT may reach (443,8443,9000-9100 or *)"},
    {"tunnel.http_ports", PM_CONF_STRING, OFF(http_ports), "80,443,1025-65535",
     0, 0, NULL, "ports absolute-form requests may reach"},
    {"tunnel.allow_hosts", PM_CONF_STRING, OFF(allow_hosts), NULL, 0, 0, NULL,
     "when set, only these hosts, domains, addresses or CIDRs"},
    {"tunnel.deny_hosts", PM_CONF_STRING, OFF(deny_hosts), NULL, 0, 0, NULL,
     "hosts, domains, addresses or CIDRs never reached"},
    {"tunnel.max_connections", PM_CONF_INT, OFF(max_connections), "100", 1,
     1000000, NULL, "client TLS connections; over it: 503"},
    {"tunnel.max_streams", PM_CONF_INT, OFF(max_streams), "1000", 1, 1000000,
     NULL, "streams (pipes and forwarded requests) open at once"},
    {"tunnel.connect_timeout", PM_CONF_DURATION, OFF(connect_timeout), "10s",
     100, 600000, NULL, "DNS plus connect to a target"},
    {"tunnel.idle_timeout", PM_CONF_DURATION, OFF(idle_timeout), "5m", 100,
     604800000, NULL, "a stream with no bytes either way is closed"},
    {"tunnel.close_timeout", PM_CONF_DURATION, OFF(close_timeout), "60s", 100,
     86400000, NULL, "a half-closed stream is closed after this"},
    {"tunnel.max_lifetime", PM_CONF_DURATION, OFF(max_lifetime), "0", 0,
     31536000000LL, NULL, "streams older than this are closed (0: none)"},
    {"tunnel.emf", PM_CONF_BOOL, OFF(emf), "true", 0, 0, NULL,
     "server: print ActiveConnections/LastActivityEpochSeconds EMF lines"},
    {"tunnel.emf_namespace", PM_CONF_STRING, OFF(emf_namespace), "Fluidity", 0,
     0, NULL, "CloudWatch namespace of the EMF lines"},
    {"tunnel.emf_interval", PM_CONF_DURATION, OFF(emf_interval), "60s", 1000,
     86400000, NULL, "period of the EMF lines"},
    {"tunnel.service_name", PM_CONF_STRING, OFF(service_name),
     "fluidity-server", 0, 0, NULL, "EMF dimension ServiceName"},
    {"tunnel.cluster_name", PM_CONF_STRING, OFF(cluster_name), "fluidity", 0, 0,
     NULL, "EMF dimension ClusterName"},
    {"tunnel.server_ip", PM_CONF_STRING, OFF(server_ip), NULL, 0, 0, NULL,
     "agent: the server's address or name (dialed, never verified)"},
    {"tunnel.server_port", PM_CONF_INT, OFF(server_port), "8443", 1, 65535,
     NULL, "agent: the server's port"},
    {"tunnel.server_name", PM_CONF_STRING, OFF(server_name), "p2pmesh-tunnel",
     0, 0, NULL, "agent: the DNS name the server certificate must carry"},
    {"tunnel.server_pin", PM_CONF_STRING, OFF(server_pin), NULL, 0, 0, NULL,
     "agent: server key pins sha256//BASE64 (comma list)"},
    {"tunnel.server_ca", PM_CONF_STRING, OFF(server_ca), NULL, 0, 0, NULL,
     "agent: CA file of the server (default: tls.client_ca / CA_PEM)"},
    {"tunnel.proxy_addr", PM_CONF_STRING, OFF(proxy_addr), "127.0.0.1:8080", 0,
     0, NULL, "agent: the local proxy's address:port"},
    {"tunnel.proxy_auth", PM_CONF_SECRET, OFF(proxy_auth), NULL, 0, 0, NULL,
     "agent: user:password for Basic proxy authentication"},
    {"tunnel.proxy_allow", PM_CONF_STRING, OFF(proxy_allow),
     "127.0.0.0/8, ::1/128", 0, 0, NULL,
     "agent: client CIDRs that may use the local proxy"},
    {"tunnel.retry_initial", PM_CONF_DURATION, OFF(retry_initial), "500ms", 10,
     3600000, NULL, "agent: first wait after a failed probe"},
    {"tunnel.retry_max", PM_CONF_DURATION, OFF(retry_max), "30s", 10, 3600000,
     NULL, "agent: longest wait between probes (exponential, +-20% jitter)"},
    {"tunnel.probe_interval", PM_CONF_DURATION, OFF(probe_interval), "30s", 0,
     86400000, NULL,
     "agent: probe the server this often (0: only at start "
     "and after failures)"},
    {"tunnel.wake_endpoint", PM_CONF_STRING, OFF(wake_endpoint), NULL, 0, 0,
     NULL, "agent: URL POSTed at start (wakes a stopped server)"},
    {"tunnel.kill_endpoint", PM_CONF_STRING, OFF(kill_endpoint), NULL, 0, 0,
     NULL, "agent: URL POSTed at shutdown"},
    {"tunnel.api_key", PM_CONF_SECRET, OFF(api_key), NULL, 0, 0, NULL,
     "agent: x-api-key of the wake and kill calls"},
    {"tunnel.region", PM_CONF_STRING, OFF(region), "us-east-1", 0, 0, NULL,
     "agent: AWS region for SigV4-signed wake and kill calls"},
    {"tunnel.wake_timeout", PM_CONF_DURATION, OFF(wake_timeout), "90s", 1000,
     3600000, NULL, "agent: how long to retry the server after wake"},
    {"tunnel.wake_retry_interval", PM_CONF_DURATION, OFF(wake_retry_interval),
     "5s", 100, 600000, NULL, "agent: probe period while waking"},
    {"tunnel.gen_certs", PM_CONF_STRING, OFF(gen_certs), NULL, 0, 0, NULL,
     "write a CA, a server and client certificates into DIR, then exit"},
    {"tunnel.cert_names", PM_CONF_STRING, OFF(cert_names),
     "p2pmesh-tunnel,localhost", 0, 0, NULL,
     "gen_certs: DNS names of the server certificate"},
    {"tunnel.cert_clients", PM_CONF_STRING, OFF(cert_clients), "agent", 0, 0,
     NULL, "gen_certs: client certificate names (one per agent)"},
    {"tunnel.cert_days", PM_CONF_INT, OFF(cert_days), "825", 1, 3650, NULL,
     "gen_certs: validity of the server and client certificates"},
    {NULL, 0, 0, NULL, 0, 0, NULL, NULL},
};

/* Fluidity's config-file keys, flags and environment names. */
static const struct pm_conf_alias tunnel_aliases[] = {
    {"listen_addr", "addr", NULL, NULL},
    {"listen-addr", "addr", NULL, NULL},
    {"listen_port", "port", NULL, NULL},
    {"listen-port", "port", NULL, NULL},
    {"cert_file", "tls.cert", NULL, NULL},
    {"key_file", "tls.key", NULL, NULL},
    {"ca_cert_file", "tls.client_ca", NULL, NULL},
    {"max_connections", "tunnel.max_connections", NULL, NULL},
    {"max-connections", "tunnel.max_connections", NULL, NULL},
    {"server_ip", "tunnel.server_ip", NULL, NULL},
    {"server-ip", "tunnel.server_ip", NULL, NULL},
    {"server_port", "tunnel.server_port", NULL, NULL},
    {"server-port", "tunnel.server_port", NULL, NULL},
    {"local_proxy_port", "tunnel.proxy_addr", "127.0.0.1:", NULL},
    {"log_level", "log.level", NULL, NULL},
    {"log-level", "log.level", NULL, NULL},
    {"FLUIDITY_LOG_LEVEL", "log.level", NULL, NULL},
    {"CERT_PEM", "tls.cert_pem", NULL, NULL},
    {"KEY_PEM", "tls.key_pem", NULL, NULL},
    {"CA_PEM", "tls.client_ca_pem", NULL, NULL},
    {"METRICS_ENABLED", "tunnel.emf", NULL, NULL},
    {"METRICS_NAMESPACE", "tunnel.emf_namespace", NULL, NULL},
    {"METRICS_EMIT_INTERVAL", "tunnel.emf_interval", NULL, NULL},
    {"ECS_SERVICE_NAME", "tunnel.service_name", NULL, NULL},
    {"ECS_CLUSTER_NAME", "tunnel.cluster_name", NULL, NULL},
    {"AWS_REGION", "tunnel.region", NULL, NULL},
    {NULL, NULL, NULL, NULL},
};

static const char *
tunnel_probe_addr(const void *conf)
{
    const struct tunnel_conf *c = conf;

    return strcmp(c->mode, "agent") == 0 ? c->proxy_addr : NULL;
}

static int
tunnel_validate(const void *conf, char *err, size_t errlen)
{
    const struct tunnel_conf *c = conf;
    struct tunnel_policy *p;

    if (tunnel_pins_valid(c->allow_pin, "tunnel.allow_pin", err, errlen) !=
            PM_OK ||
        tunnel_pins_valid(c->server_pin, "tunnel.server_pin", err, errlen) !=
            PM_OK)
        return PM_EINVAL;
    p = tunnel_policy_new(c, err, errlen);
    if (p == NULL)
        return PM_EINVAL;
    tunnel_policy_free(p);
    if (strcmp(c->mode, "agent") == 0 &&
        (c->server_ip == NULL || c->server_ip[0] == '\0') &&
        c->gen_certs == NULL)
        return pm_errf(err, errlen, PM_EINVAL,
                       "agent mode needs tunnel.server_ip (the server's "
                       "address)");
    return PM_OK;
}

static int
tunnel_command(const void *conf, FILE *out, char *err, size_t errlen)
{
    const struct tunnel_conf *c = conf;

    if (c->gen_certs == NULL)
        return PM_ENOTFOUND;
    return tunnel_gen_certs(c->gen_certs, c->cert_names, c->cert_clients,
                            c->cert_days, out, err, errlen);
}

/* ---- config copy -------------------------------------------------------- */

static char *const *
conf_strings(struct tunnel_conf *c, size_t *n)
{
    static char **v[32];
    size_t i = 0;

    v[i++] = &c->mode;
    v[i++] = &c->allow_cn;
    v[i++] = &c->allow_san;
    v[i++] = &c->allow_pin;
    v[i++] = &c->connect_ports;
    v[i++] = &c->http_ports;
    v[i++] = &c->allow_hosts;
    v[i++] = &c->deny_hosts;
    v[i++] = &c->emf_namespace;
    v[i++] = &c->service_name;
    v[i++] = &c->cluster_name;
    v[i++] = &c->server_ip;
    v[i++] = &c->server_name;
    v[i++] = &c->server_pin;
    v[i++] = &c->server_ca;
    v[i++] = &c->proxy_addr;
    v[i++] = &c->proxy_auth;
    v[i++] = &c->proxy_allow;
    v[i++] = &c->wake_endpoint;
    v[i++] = &c->kill_endpoint;
    v[i++] = &c->api_key;
    v[i++] = &c->region;
    v[i++] = &c->gen_certs;
    v[i++] = &c->cert_names;
    v[i++] = &c->cert_clients;
    *n = i;
    return (char *const *)v;
}

/* dst = src with every string duplicated (dst's old strings freed). */
static void
conf_copy(struct tunnel_conf *dst, const struct tunnel_conf *src)
{
    struct tunnel_conf old = *dst;
    char **const *pv;
    size_t n, i;

    *dst = *src;
    pv = (char **const *)conf_strings(dst, &n);
    for (i = 0; i < n; i++)
        *pv[i] = *pv[i] ? pm_xstrdup(*pv[i]) : NULL;
    pv = (char **const *)conf_strings(&old, &n);
    for (i = 0; i < n; i++)
        free(*pv[i]);
}

/* ---- lifecycle ---------------------------------------------------------- */

static void
stats_init(struct tunnel *t)
{
    struct pm_metrics *m = pm_server_metrics(t->srv);
    struct tunnel_stats *st = &t->stats;
    const char *bytes_help = "Bytes relayed, up (client to target) and down";
    const char *hs_help = "mTLS handshakes with clients, by result";

    st->conns_open = pm_metrics_gauge(m, "p2pmesh_tunnel_connections_open",
                                      NULL, "Client connections open");
    st->streams_open = pm_metrics_gauge(m, "p2pmesh_tunnel_streams_open", NULL,
                                        "Streams (pipes, requests) open");
    st->streams_connect =
        pm_metrics_counter(m, "p2pmesh_tunnel_streams_total",
                           "kind=\"connect\"", "Streams started, by kind");
    st->streams_http =
        pm_metrics_counter(m, "p2pmesh_tunnel_streams_total", "kind=\"http\"",
                           "Streams started, by kind");
    st->bytes_up = pm_metrics_counter(m, "p2pmesh_tunnel_bytes_total",
                                      "direction=\"up\"", bytes_help);
    st->bytes_down = pm_metrics_counter(m, "p2pmesh_tunnel_bytes_total",
                                        "direction=\"down\"", bytes_help);
    st->handshakes_ok = pm_metrics_counter(m, "p2pmesh_tunnel_handshakes_total",
                                           "result=\"ok\"", hs_help);
    st->handshakes_failed = pm_metrics_counter(
        m, "p2pmesh_tunnel_handshakes_total", "result=\"failed\"", hs_help);
    st->handshakes_resumed =
        pm_metrics_counter(m, "p2pmesh_tunnel_handshakes_resumed_total", NULL,
                           "mTLS handshakes that resumed a session");
    st->last_activity = pm_metrics_gauge(
        m, "p2pmesh_tunnel_last_activity_seconds", NULL,
        "Unix time bytes last moved on any stream (start time before)");
    *st->last_activity = (int64_t)(pm_wall_ms() / 1000);
}

static void
emf_cb(int fd, short what, void *arg)
{
    struct tunnel *t = arg;
    const char *dims[] = {"ServiceName", t->conf.service_name, "ClusterName",
                          t->conf.cluster_name, NULL};
    struct pm_emf_value v[] = {
        {"ActiveConnections", "Count", (double)t->nconns},
        {"LastActivityEpochSeconds", "Seconds",
         (double)*t->stats.last_activity},
    };

    (void)fd;
    (void)what;
    pm_metrics_emit_emf_values(t->conf.emf_namespace, "tunnel", dims, v, 2);
}

static void tunnel_destroy(void *state);

static int
server_init(struct tunnel *t, char *err, size_t errlen)
{
    const struct pm_core_conf *core = pm_server_conf(t->srv);

    t->tls = pm_server_tls(t->srv);
    if (t->tls == NULL)
        return pm_errf(err, errlen, PM_EINVAL,
                       "tunnel server mode needs a certificate: tls.cert and "
                       "tls.key (or CERT_PEM and KEY_PEM)");
    if (core->tls_client_ca == NULL && core->tls_client_ca_pem == NULL)
        return pm_errf(err, errlen, PM_EINVAL,
                       "tunnel server mode needs tls.client_ca (or CA_PEM): "
                       "clients must present certificates");
    pm_tls_set_check(t->tls, tunnel_identity_check, t);
    t->policy = tunnel_policy_new(&t->conf, err, errlen);
    return t->policy ? PM_OK : PM_EINVAL;
}

static int
tunnel_init(struct pm_server *srv, const void *conf, void **state, char *err,
            size_t errlen)
{
    struct tunnel *t = pm_xcalloc(1, sizeof *t);
    int rv;

    t->srv = srv;
    conf_copy(&t->conf, conf);
    t->agent = strcmp(t->conf.mode, "agent") == 0;
    t->start_ms = pm_now_ms();
    TAILQ_INIT(&t->conns);
    stats_init(t);
    rv = t->agent ? tunnel_agent_init(t, err, errlen)
                  : server_init(t, err, errlen);
    if (rv != PM_OK) {
        tunnel_destroy(t);
        return rv;
    }
    *state = t;
    return PM_OK;
}

static int
tunnel_start(void *state, char *err, size_t errlen)
{
    struct tunnel *t = state;

    (void)err;
    (void)errlen;
    if (t->agent) {
        tunnel_agent_start(t);
    } else if (t->conf.emf) {
        struct timeval iv = {(time_t)(t->conf.emf_interval / 1000),
                             (suseconds_t)(t->conf.emf_interval % 1000) * 1000};

        t->emf_timer =
            event_new(pm_server_base(t->srv), -1, EV_PERSIST, emf_cb, t);
        event_add(t->emf_timer, &iv);
    }
    pm_log(PM_LOG_INFO, "tunnel_started", "tunnel %s ready",
           t->agent ? "agent" : "server");
    return PM_OK;
}

static void
tunnel_stop(void *state)
{
    struct tunnel *t = state;

    t->draining = true;
    tunnel_conns_drain(t);
    if (t->agent)
        tunnel_agent_stop(t);
}

static bool
tunnel_busy(void *state)
{
    struct tunnel *t = state;

    return t->nconns > 0 || (t->agent && tunnel_agent_busy(t));
}

static void
tunnel_destroy(void *state)
{
    struct tunnel *t = state;
    struct tunnel_conn *c;
    size_t n, i;
    char **const *pv;

    while ((c = TAILQ_FIRST(&t->conns)) != NULL)
        tunnel_conn_close(c, "shutdown");
    if (t->emf_timer != NULL)
        event_free(t->emf_timer);
    if (t->agent)
        tunnel_agent_free(t);
    else if (t->tls != NULL)
        pm_tls_set_check(t->tls, NULL, NULL);
    tunnel_policy_free(t->policy);
    pm_cidr_list_free(t->proxy_allow);
    pv = (char **const *)conf_strings(&t->conf, &n);
    for (i = 0; i < n; i++)
        free(*pv[i]);
    free(t);
}

static void
tunnel_reload(void *state, const void *fresh)
{
    struct tunnel *t = state;
    const struct tunnel_conf *f = fresh;
    char err[PM_ERRMSG_SIZE];
    struct tunnel_policy *p;

    if (tunnel_validate(f, err, sizeof err) != PM_OK) {
        pm_log(PM_LOG_ERROR, "tunnel_reload_failed",
               "%s; keeping the old "
               "tunnel settings",
               err);
        return;
    }
    if (t->agent) {
        if (tunnel_agent_reload(t, f) != PM_OK)
            return;
    } else {
        p = tunnel_policy_new(f, err, sizeof err);
        if (p == NULL)
            return;
        tunnel_policy_free(t->policy);
        t->policy = p;
    }
    /* Limits and lists apply to what comes next; open streams go on. The
     * mode stays what the process started with. */
    {
        char *mode = pm_xstrdup(t->conf.mode);

        conf_copy(&t->conf, f);
        free(t->conf.mode);
        t->conf.mode = mode;
    }
    pm_log(PM_LOG_INFO, "tunnel_reloaded",
           "allow-lists, pins and policy "
           "reloaded");
}

static void
tunnel_health(void *state, cJSON *o)
{
    struct tunnel *t = state;

    cJSON_AddStringToObject(o, "mode", t->agent ? "agent" : "server");
    cJSON_AddNumberToObject(o, "active_connections", (double)t->nconns);
    cJSON_AddNumberToObject(o, "streams", (double)t->nstreams);
    if (t->agent)
        tunnel_agent_health(t, o);
    else
        cJSON_AddNumberToObject(o, "max_connections",
                                (double)t->conf.max_connections);
}

static void
tunnel_ready(void *state, cJSON *failing)
{
    struct tunnel *t = state;

    if (t->agent && !tunnel_agent_connected(t))
        cJSON_AddItemToArray(failing, cJSON_CreateString("server"));
}

const struct pm_role pm_role_tunnel = {
    .abi = PM_ROLE_ABI,
    .name = "tunnel",
    .summary = "mTLS HTTPS proxy and local agent for HTTP, HTTPS and "
               "WebSocket",
    .default_port = 8443,
    .default_admin_port = 8080,
    .conf_keys = tunnel_conf_keys,
    .conf_size = sizeof(struct tunnel_conf),
    .env_aliases = tunnel_aliases,
    .validate = tunnel_validate,
    .command = tunnel_command,
    .probe_addr = tunnel_probe_addr,
    .init = tunnel_init,
    .start = tunnel_start,
    .stop = tunnel_stop,
    .busy = tunnel_busy,
    .destroy = tunnel_destroy,
    .reload = tunnel_reload,
    .accept = tunnel_accept,
    .health = tunnel_health,
    .ready = tunnel_ready,
};
