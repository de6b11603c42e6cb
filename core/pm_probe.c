/*
 * pm_probe: the health probe client (see pm_probe.h), one request on a
 * private event base through pm_httpc.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <event2/event.h>

#include "pm_httpc.h"
#include "pm_probe.h"
#include "pm_util.h"

struct probe {
    struct event_base *base;
    char *msg;
    size_t msglen;
    const char *url;
    int rv;
};

static void
answered(const struct pm_httpc_res *res, void *arg)
{
    struct probe *p = arg;
    int n;

    if (res->status == 0) {
        p->rv = PM_EUNAVAIL;
        snprintf(p->msg, p->msglen, "%s: %s", p->url, res->error);
    } else if (res->status != 200) {
        p->rv = PM_EUNAVAIL;
        n = res->body_len > 200 ? 200 : (int)res->body_len;
        while (n > 0 && (res->body[n - 1] == '\n' || res->body[n - 1] == '\r'))
            n--;
        snprintf(p->msg, p->msglen, "%d from %s: %.*s", res->status, p->url, n,
                 (const char *)res->body);
    } else {
        p->rv = PM_OK;
        snprintf(p->msg, p->msglen, "200 from %s", p->url);
    }
    event_base_loopbreak(p->base);
}

/* The host to reach a listener bound to addr from this machine, as it
 * goes in a URL. */
static void
loopback_host(const char *addr, char *out, size_t len)
{
    if (addr == NULL || *addr == '\0' || strcmp(addr, "0.0.0.0") == 0)
        snprintf(out, len, "127.0.0.1");
    else if (strcmp(addr, "::") == 0 || strcmp(addr, "[::]") == 0)
        snprintf(out, len, "[::1]");
    else if (strchr(addr, ':') != NULL && addr[0] != '[')
        snprintf(out, len, "[%s]", addr);
    else
        snprintf(out, len, "%s", addr);
}

/* The URL to probe, into url; PM_ENOTFOUND when there is no listener. */
static int
probe_url(const struct pm_role *role, const struct pm_config *cfg,
          const struct pm_core_conf *conf, const void *role_conf,
          const char *path, char *url, size_t len, char *msg, size_t msglen)
{
    const char *over = role->probe_addr ? role->probe_addr(role_conf) : NULL;
    char host[PM_ERRMSG_SIZE];
    bool tls;

    if (over != NULL && pm_config_source(cfg, "admin_port") == PM_SRC_DEFAULT) {
        snprintf(url, len, "http://%s%s", over, path);
        return PM_OK;
    }
    loopback_host(conf->addr, host, sizeof host);
    if (conf->admin_port > 0) {
        snprintf(url, len, "http://%s:%lld%s", host,
                 (long long)conf->admin_port, path);
        return PM_OK;
    }
    if (conf->port <= 0)
        return pm_errf(msg, msglen, PM_ENOTFOUND,
                       "role %s has no listener: nothing to probe", role->name);
    if (conf->tls_client_ca != NULL || conf->tls_client_ca_pem != NULL)
        return pm_errf(msg, msglen, PM_EINVAL,
                       "the main port requires client certificates "
                       "(tls.client_ca): set admin_port to probe %s",
                       path);
    tls = conf->tls_cert != NULL || conf->tls_cert_pem != NULL;
    snprintf(url, len, "%s://%s:%lld%s", tls ? "https" : "http", host,
             (long long)conf->port, path);
    return PM_OK;
}

int
pm_probe_run(const struct pm_role *role, const struct pm_config *cfg,
             const struct pm_core_conf *conf, const void *role_conf,
             const char *path, char *msg, size_t msglen)
{
    struct pm_httpc_opts opts = {.max_per_origin = 1,
                                 .connect_timeout_ms = PM_PROBE_TIMEOUT_MS,
                                 .no_verify = true};
    struct pm_httpc_req req = {.method = "GET",
                               .timeout_ms = PM_PROBE_TIMEOUT_MS};
    char url[2 * PM_ERRMSG_SIZE];
    struct probe p = {
        .msg = msg, .msglen = msglen, .url = url, .rv = PM_ETIMEDOUT};
    struct pm_httpc *h;
    int rv;

    if (path == NULL)
        path = "/health";
    if (path[0] != '/')
        return pm_errf(msg, msglen, PM_EINVAL,
                       "--probe=%s: the path must start with /", path);
    rv = probe_url(role, cfg, conf, role_conf, path, url, sizeof url, msg,
                   msglen);
    if (rv != PM_OK)
        return rv;
    req.url = url;
    p.base = event_base_new();
    if (p.base == NULL)
        return pm_errf(msg, msglen, PM_EIO, "cannot make an event base");
    h = pm_httpc_new(p.base, &opts, msg, msglen);
    if (h == NULL) {
        event_base_free(p.base);
        return PM_EIO;
    }
    if (pm_httpc_send(h, &req, answered, &p, msg, msglen) != PM_OK) {
        p.rv = PM_EINVAL;
    } else {
        event_base_dispatch(p.base);
        if (p.rv == PM_ETIMEDOUT)
            snprintf(msg, msglen, "%s: no answer", url);
    }
    pm_httpc_free(h);
    event_base_free(p.base);
    return p.rv;
}
