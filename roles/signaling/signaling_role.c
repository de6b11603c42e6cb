/*
 * Role signaling: WebRTC signaling. This file is the role descriptor, its
 * configuration keys and the seed deployments' environment names, and
 * the glue from core hooks to the dialect handlers. State is in memory
 * (one process); the Redis-backed cluster mode and the PeerJS, y-webrtc
 * and mailbox dialects are not built yet and say so.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "pm_conn.h"
#include "pm_http.h"
#include "pm_metrics.h"
#include "pm_role.h"
#include "pm_server.h"
#include "pm_util.h"
#include "signaling.h"

#define OFF(f) offsetof(struct sig_conf, f)

static const struct pm_conf_key sig_keys[] = {
    {"signaling.bootstrap_count", PM_CONF_INT, OFF(bootstrap_count), "5", 0,
     1000, NULL, "peers in a bootstrap_peers list (nearest by XOR distance)"},
    {"signaling.announce_max", PM_CONF_INT, OFF(announce_max), "64", 0, 1000000,
     NULL, "peers told of a join or departure (the nearest)"},
    {"signaling.mailbox_max", PM_CONF_INT, OFF(mailbox_max), "64", 0, 100000,
     NULL, "messages held per absent peer (0: offline mailbox off)"},
    {"signaling.mailbox_ttl", PM_CONF_DURATION, OFF(mailbox_ttl), "30s", 100,
     86400000, NULL, "how long a held message waits for its peer"},
    {"signaling.heartbeat_interval", PM_CONF_DURATION, OFF(heartbeat_interval),
     "30s", 1000, 86400000, NULL,
     "heartbeat period told to clients (heartbeat_interval_secs)"},
    {"signaling.max_peers_per_realm", PM_CONF_INT, OFF(max_peers_per_realm),
     "10000", 1, 10000000, NULL, "joined peers per realm"},
    {NULL, 0, 0, NULL, 0, 0, NULL, NULL},
};

/* Environment names of the seed deployments (later entries win). */
static const struct pm_conf_alias sig_aliases[] = {
    {"PORT", "port"},
    {"SIGNALING_ADDR", "addr"},
    {"SIGNALING_PORT", "port"},
    {"SIGNALING_PUBLIC_URL", "public_url"},
    {"SIGNALING_REDIS_URL", "redis.url"},
    {"SIGNALING_REDIS_REQUIRE_TLS", "redis.require_tls"},
    {"SIGNALING_REDIS_KEY_PREFIX", "redis.key_prefix"},
    {"SIGNALING_HEARTBEAT_SECS", "signaling.heartbeat_interval"},
    {"SIGNALING_ROOM_TTL_SECS", "signaling.mailbox_ttl"},
    {"SIGNALING_MAILBOX_TTL_SECS", "signaling.mailbox_ttl"},
    {NULL, NULL},
};

static int
sig_init(struct pm_server *srv, const void *conf, void **state, char *err,
         size_t errlen)
{
    struct pm_metrics *m = pm_server_metrics(srv);
    struct sig *s;

    if (pm_server_conf(srv)->redis_url != NULL)
        return pm_errf(err, errlen, PM_EINVAL,
                       "redis.url: the Redis-backed cluster mode of the "
                       "signaling role is not implemented yet; unset it to "
                       "run on in-memory state");
    s = pm_xcalloc(1, sizeof *s);
    s->srv = srv;
    s->conf = conf;
    s->stats.peers = pm_metrics_gauge(m, "p2pmesh_signaling_peers", NULL,
                                      "Peer ids currently joined");
    s->stats.joins = pm_metrics_counter(m, "p2pmesh_signaling_joins_total",
                                        NULL, "Successful joins");
    s->stats.relayed =
        pm_metrics_counter(m, "p2pmesh_signaling_relayed_total",
                           "dialect=\"p2pmesh\"", "Messages relayed to a peer");
    s->stats.queued =
        pm_metrics_counter(m, "p2pmesh_signaling_mailbox_queued_total", NULL,
                           "Messages held for an absent peer");
    s->stats.expired =
        pm_metrics_counter(m, "p2pmesh_signaling_mailbox_expired_total", NULL,
                           "Held messages that expired before their peer came");
    s->stats.undeliverable = pm_metrics_counter(
        m, "p2pmesh_signaling_undeliverable_total", NULL,
        "Messages the sender was told could not be delivered");
    sig_offline_start(s);
    *state = s;
    return PM_OK;
}

static void
sig_stop(void *state)
{
    ((struct sig *)state)->stopping = true;
}

/*
 * The PeerJS and mailbox dialects will share this port but are not built
 * yet: their paths answer 501 with the reason instead of being mistaken
 * for the p2pmesh dialect.
 */
static const char *
unbuilt_dialect(const struct pm_http_request *req)
{
    const char *p = req->path;
    size_t n = req->path_len;
    const char *slash = n > 1 ? memchr(p + 1, '/', n - 1) : NULL;

    if ((n >= 7 && memcmp(p + n - 7, "/peerjs", 7) == 0) ||
        (slash != NULL &&
         (pm_strcaseeq(slash, (size_t)(p + n - slash), "/id") ||
          pm_strcaseeq(slash, (size_t)(p + n - slash), "/peers"))))
        return "the PeerJS dialect is not implemented yet";
    if ((n > 4 && memcmp(p, "/ws/", 4) == 0) ||
        pm_strcaseeq(p, n, "/register") || pm_strcaseeq(p, n, "/heartbeat") ||
        (n >= 7 && memcmp(p, "/signal", 7) == 0) ||
        (n >= 12 && memcmp(p, "/connection/", 12) == 0))
        return "the mailbox dialect is not implemented yet";
    return NULL;
}

static int
sig_http(void *state, struct pm_conn *conn, const struct pm_http_request *req,
         const uint8_t *body, size_t body_len)
{
    const char *why = unbuilt_dialect(req);
    cJSON *o;
    char *s;

    (void)state;
    (void)body;
    (void)body_len;
    if (why == NULL)
        return PM_ENOTFOUND;
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "message", why);
    s = cJSON_PrintUnformatted(o);
    pm_conn_http_respond(conn, 501, "application/json", NULL, s, strlen(s));
    free(s);
    cJSON_Delete(o);
    return PM_OK;
}

static void
sig_destroy(void *state)
{
    struct sig *s = state;
    struct sig_realm *r, *tmp;

    sig_offline_free_all(s);
    /* Clients were freed by ws_close; what is left are empty realms. */
    HASH_ITER(hh, s->realms, r, tmp)
    {
        HASH_DEL(s->realms, r);
        free(r->name);
        free(r);
    }
    free(s);
}

static int
sig_ws_upgrade(void *state, struct pm_conn *conn,
               const struct pm_http_request *req, int *status)
{
    struct sig *s = state;
    struct sig_client *c;
    char room[SIG_MAX_REALM + 1];
    int rv = pm_http_query_param(req, "room", room, sizeof room);

    if (unbuilt_dialect(req) != NULL) {
        *status = 501;
        return PM_EINVAL;
    }

    if (rv == PM_ELIMIT) {
        *status = 400;
        return PM_EINVAL;
    }
    if (rv != PM_OK)
        room[0] = '\0'; /* the one global realm */
    c = pm_xcalloc(1, sizeof *c);
    c->conn = conn;
    c->realm = sig_realm_get(s, room);
    c->realm->nclients++;
    pm_conn_set_data(conn, c);
    return PM_OK;
}

static void
sig_ws_message(void *state, struct pm_conn *conn, enum pm_ws_opcode op,
               const uint8_t *data, size_t len)
{
    (void)op; /* binary frames carry the same JSON */
    sig_mesh_message(state, pm_conn_data(conn), (const char *)data, len);
}

static void
sig_ws_limited(void *state, struct pm_conn *conn)
{
    (void)state;
    sig_send_error(pm_conn_data(conn), "Rate limit exceeded.");
}

static void
sig_ws_close(void *state, struct pm_conn *conn, uint16_t code)
{
    struct sig *s = state;
    struct sig_client *c = pm_conn_data(conn);
    struct sig_realm *r;

    (void)code;
    if (c == NULL)
        return;
    sig_mesh_departed(s, c);
    r = c->realm;
    r->nclients--;
    pm_conn_set_data(conn, NULL);
    free(c);
    sig_realm_release(s, r);
}

static void
sig_health(void *state, cJSON *o)
{
    struct sig *s = state;

    cJSON_AddStringToObject(o, "public_base_url", pm_server_public_url(s->srv));
    cJSON_AddNumberToObject(o, "heartbeat_interval_secs",
                            (double)(s->conf->heartbeat_interval / 1000));
}

const struct pm_role pm_role_signaling = {
    .abi = PM_ROLE_ABI,
    .name = "signaling",
    .summary = "WebRTC signaling: the P2PMesh protocol, bootstrap by XOR "
               "distance, offline mailbox",
    .default_port = 8080,
    .conf_keys = sig_keys,
    .conf_size = sizeof(struct sig_conf),
    .env_aliases = sig_aliases,
    .init = sig_init,
    .stop = sig_stop,
    .destroy = sig_destroy,
    .http = sig_http,
    .ws_upgrade = sig_ws_upgrade,
    .ws_message = sig_ws_message,
    .ws_limited = sig_ws_limited,
    .ws_close = sig_ws_close,
    .health = sig_health,
};
