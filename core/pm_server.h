/*
 * pm_server: runs one role. Holds the core configuration, binds the main
 * (and optional admin) listener, owns every connection, routes each HTTP
 * request (limits, core health routes, WebSocket upgrades, role routes),
 * and drives graceful shutdown (SIGTERM/SIGINT) and reload (SIGHUP).
 */
#ifndef PM_SERVER_H
#define PM_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pm_config.h"
#include "pm_role.h"
#include "pm_tls.h"

struct event_base;
struct evbuffer;
struct pm_http_request;
struct pm_metrics;

/* http.body_timeout: a body (Content-Length) must be in this long after
 * its head, like http.header_timeout for the head. */
#define PM_HTTP_BODY_TIMEOUT_DEFAULT "10s"

/* Core keys (platform.md section 3); filled by pm_config. */
struct pm_core_conf {
    char *addr;
    int64_t port;
    int64_t admin_port;
    char *public_url;
    char *tls_cert, *tls_key, *tls_cert_pem, *tls_key_pem, *tls_client_ca;
    char *tls_client_ca_pem, *tls_crl;
    char *tls_min_version;
    char *log_level;
    char *log_format;
    bool metrics_emf;
    char *metrics_namespace;
    uint64_t metrics_interval;
    char *redis_url;
    bool redis_require_tls;
    char *redis_tls_ca;
    char *redis_key_prefix;
    char *database_url;
    char *jwt_secret;
    char *env;
    uint64_t shutdown_grace;
    uint64_t ws_max_message;
    uint64_t ws_ping_interval;
    uint64_t ws_idle_timeout;
    uint64_t ws_send_buffer;
    uint64_t http_max_header;
    uint64_t http_max_body;
    uint64_t http_header_timeout;
    uint64_t http_body_timeout;
    uint64_t http_keepalive_timeout;
    int64_t max_connections;
    int64_t per_ip_connections;
    struct pm_rate per_ip_rate;
    struct pm_rate per_conn_rate;
    int64_t per_conn_burst;
    char *trusted_proxies;
    char *origin_allow;
};

/*
 * The config of role: the core keys bound to conf (port default from the
 * role), the role's base keys and its own keys bound to role_conf (a
 * zeroed block of role->conf_size bytes). Both are borrowed.
 */
struct pm_config *pm_server_config_new(struct pm_core_conf *conf,
                                       const struct pm_role *role,
                                       void *role_conf);

struct pm_server;

/*
 * Build a server for role with parsed core and role configs (borrowed;
 * they must outlive the server). argv is kept to reload on SIGHUP.
 * Checks cross-key rules. NULL with a one-line reason in err on failure.
 */
struct pm_server *pm_server_new(const struct pm_role *role, int argc,
                                char **argv, struct pm_config *cfg,
                                struct pm_core_conf *conf, void *role_conf,
                                char *err, size_t errlen);
/* Bind, start the role, run until drained. Returns the exit status. */
int pm_server_run(struct pm_server *srv, char *err, size_t errlen);
void pm_server_free(struct pm_server *srv);

/* Validate core keys that need more than a type check. */
int pm_server_conf_check(const struct pm_core_conf *conf, char *err,
                         size_t errlen);

/* The TLS settings of the core keys (strings borrowed from c). */
struct pm_tls_conf pm_server_tls_conf(const struct pm_core_conf *c);

/*
 * The HS256 key of jwt.secret for a role that issues tokens, malloc'd in
 * *out. Without one: a random key per start with a warning, or an error
 * when shared (instances must verify each other's tokens) or
 * env=production. env=production also refuses a default or short one.
 */
#define PM_JWT_SECRET_MIN 32
int pm_server_jwt_secret(const struct pm_core_conf *core, bool shared,
                         char **out, char *err, size_t errlen);
/* For roles: stop the loop now; pm_server_run returns code. */
void pm_server_exit(struct pm_server *srv, int code);

/* For roles: the loop, the metrics registry, the core config. */
struct event_base *pm_server_base(struct pm_server *srv);
struct pm_loop *pm_server_loop(struct pm_server *srv);
struct pm_metrics *pm_server_metrics(struct pm_server *srv);
const struct pm_core_conf *pm_server_conf(const struct pm_server *srv);
/* The URL clients should use (public_url, or derived from addr/port). */
const char *pm_server_public_url(const struct pm_server *srv);
bool pm_server_is_draining(const struct pm_server *srv);
/*
 * For a role's init: bind the main listener to addr:port instead of the
 * addr and port keys (the tunnel agent's proxy_addr); a default
 * admin_port is then not bound (an explicit one still is).
 */
void pm_server_set_listen(struct pm_server *srv, const char *addr, int port);
/* The main port's TLS context (reloaded on SIGHUP), or NULL without TLS. */
struct pm_tls *pm_server_tls(struct pm_server *srv);
/*
 * For roles that read requests themselves (the accept hook): when req is
 * for /health, /ready, /metrics or an alias, append the complete answer
 * to out and return true; false for any other path.
 */
bool pm_server_core_response(struct pm_server *srv,
                             const struct pm_http_request *req,
                             struct evbuffer *out, bool keep_alive);
/* Run fn(arg) after the current callback returns (see pm_loop_defer). */
void pm_server_defer(struct pm_server *srv, void (*fn)(void *), void *arg);

#endif
