/*
 * pm_role: the contract between the core and a role. Each role exports one
 * const struct pm_role pm_role_<name> (designated initialisers; unset hooks
 * are NULL) listed in roles/pm_roles.c.
 *
 * Threading: every hook runs on the loop thread. Ownership: hooks borrow
 * every pointer they are given; a role frees what it allocates (its state
 * in destroy, its per-connection data in ws_close).
 */
#ifndef PM_ROLE_H
#define PM_ROLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "pm_config.h"
#include "pm_ws.h"

#define PM_ROLE_ABI 1

struct cJSON;
struct evbuffer;
struct pm_conn;
struct pm_http_request;
struct pm_server;

struct pm_role {
    int abi;                     /* PM_ROLE_ABI */
    const char *name;            /* as typed after --role= */
    const char *summary;         /* one line for --help */
    uint16_t default_port;       /* 0: no inbound listener */
    uint16_t default_admin_port; /* 0: health on the main port */

    /* Role config: keys under "<name>.", bound to a struct of conf_size.
     * base_keys (may be NULL) are another role's keys bound to the start
     * of the same struct (the lambda role runs the signaling dialect). */
    const struct pm_conf_key *conf_keys;
    const struct pm_conf_key *base_keys;
    size_t conf_size;
    /* Legacy environment names of the role's deployments (may be NULL). */
    const struct pm_conf_alias *env_aliases;
    /* Cross-field checks after parsing; PM_OK or PM_EINVAL + reason. */
    int (*validate)(const void *conf, char *err, size_t errlen);
    /* A one-shot command asked for in the config (tunnel.gen_certs):
     * PM_ENOTFOUND when none was (serve as usual), PM_OK when it ran
     * (exit 0), another error with a reason (exit 2). Output to out. */
    int (*command)(const void *conf, FILE *out, char *err, size_t errlen);
    /* Where the role listens instead of addr and port, as "host:port"
     * (the tunnel agent's tunnel.proxy_addr), for --probe; NULL: the
     * core's listeners. */
    const char *(*probe_addr)(const void *conf);

    /* Lifecycle. init allocates state (no network I/O); start runs with
     * listeners bound; stop begins the drain (core has already sent close
     * 1001 to WebSocket clients); destroy frees the state. */
    int (*init)(struct pm_server *srv, const void *conf, void **state,
                char *err, size_t errlen);
    int (*start)(void *state, char *err, size_t errlen);
    void (*stop)(void *state);
    /* Optional, first thing on SIGTERM: while WebSocket clients are
     * still open (the core closes them with 1001 right after), so a
     * role can send them last words. */
    void (*drain)(void *state);
    /* After stop: true while the role still has shutdown work (a final
     * backup); the server waits for it within shutdown.grace. */
    bool (*busy)(void *state);
    void (*destroy)(void *state);
    /* SIGHUP, after the core reloaded TLS and log.level: fresh holds the
     * role's keys reread (borrowed for the call only; copy what is kept). */
    void (*reload)(void *state, const void *fresh);

    /* Raw connections: when set, every connection accepted on the main
     * port is handed over here (fd is the role's to close; peer is the
     * address as text) instead of to the HTTP layer. */
    void (*accept)(void *state, int fd, const char *peer);

    /* A plain HTTP request core did not answer itself. Respond with
     * pm_conn_http_respond and return PM_OK, or PM_ENOTFOUND for a 404.
     * body holds the request body (Content-Length bytes). To answer later
     * (after a Redis reply), take pm_conn_ref(c) and return PM_EAGAIN;
     * then pm_conn_http_respond (ignored if the client left) and
     * pm_conn_unref. Unanswered after http.header_timeout: 504. */
    int (*http)(void *state, struct pm_conn *c,
                const struct pm_http_request *req, const uint8_t *body,
                size_t body_len);
    /* A valid WebSocket upgrade: return PM_OK to accept (pm_conn_set_data
     * may be called here), or an error with *status the HTTP status to
     * refuse with (404 unknown path, 403, ...). */
    int (*ws_upgrade)(void *state, struct pm_conn *c,
                      const struct pm_http_request *req, int *status);
    /* The 101 response is queued: the connection speaks WebSocket. */
    void (*ws_open)(void *state, struct pm_conn *c);
    /* One complete, validated TEXT or BINARY message. */
    void (*ws_message)(void *state, struct pm_conn *c, enum pm_ws_opcode op,
                       const uint8_t *data, size_t len);
    /* A message was refused by limits.per_conn_rate (tell the client). */
    void (*ws_limited)(void *state, struct pm_conn *c);
    /* The connection is closing (code received, sent, or 1006): the last
     * call that names c. Free per-connection data here. */
    void (*ws_close)(void *state, struct pm_conn *c, uint16_t code);

    /* Observability; all optional, none may block. */
    void (*health)(void *state, struct cJSON *obj);     /* add fields */
    void (*ready)(void *state, struct cJSON *failing);  /* add names */
    void (*metrics)(void *state, struct evbuffer *out); /* scrape-time */
};

#endif
