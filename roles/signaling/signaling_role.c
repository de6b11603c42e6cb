/*
 * Role signaling: WebRTC signaling. This file is the role descriptor, its
 * configuration keys and the seed deployments' environment names, and
 * the glue from core hooks to the dialect handlers: which dialect a
 * connection speaks (by path, else by its first message) and where each
 * HTTP route goes.
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

static void sig_destroy(void *state);

#define OFF(f) offsetof(struct sig_conf, f)

static const char *const auth_modes[] = {"none", "jwt", NULL};

const struct pm_conf_key sig_conf_keys[] = {
    {"signaling.bootstrap_count", PM_CONF_INT, OFF(bootstrap_count), "5", 0,
     1000, NULL, "peers in a bootstrap_peers list (nearest by XOR distance)"},
    {"signaling.announce_max", PM_CONF_INT, OFF(announce_max), "64", 0, 1000000,
     NULL, "peers told of a join or departure (the nearest)"},
    {"signaling.mailbox_max", PM_CONF_INT, OFF(mailbox_max), "64", 0, 100000,
     NULL, "messages held per absent peer (0: offline mailbox off)"},
    {"signaling.mailbox_ttl", PM_CONF_DURATION, OFF(mailbox_ttl), "30s", 100,
     86400000, NULL,
     "how long a held message waits for its peer; mailbox dialect session "
     "lifetime"},
    {"signaling.heartbeat_interval", PM_CONF_DURATION, OFF(heartbeat_interval),
     "30s", 1000, 86400000, NULL,
     "heartbeat period told to clients (heartbeat_interval_secs)"},
    {"signaling.max_peers_per_realm", PM_CONF_INT, OFF(max_peers_per_realm),
     "10000", 1, 10000000, NULL,
     "joined peers per realm; subscribers per y-webrtc topic"},
    {"signaling.presence_ttl", PM_CONF_DURATION, OFF(presence_ttl), "30s", 3000,
     86400000, NULL,
     "cluster mode: lifetime of a peer's presence key, refreshed at a third"},
    {"signaling.peerjs_path", PM_CONF_STRING, OFF(peerjs_path), "/", 0, 0, NULL,
     "PeerJS mount path: HTTP API at {path}, WebSocket {path}peerjs"},
    {"signaling.peerjs_key", PM_CONF_STRING, OFF(peerjs_key), "peerjs", 0, 0,
     NULL, "PeerJS API key clients must send"},
    {"signaling.peerjs_discovery", PM_CONF_BOOL, OFF(peerjs_discovery), "false",
     0, 0, NULL, "PeerJS: GET {path}{key}/peers lists ids (else 401)"},
    {"signaling.peerjs_expire", PM_CONF_DURATION, OFF(peerjs_expire), "5s", 100,
     86400000, NULL, "PeerJS: how long a message waits for an absent id"},
    {"signaling.peerjs_alive_timeout", PM_CONF_DURATION,
     OFF(peerjs_alive_timeout), "60s", 1000, 86400000, NULL,
     "PeerJS: drop a client silent (no HEARTBEAT) this long"},
    {"signaling.peerjs_concurrent_limit", PM_CONF_INT,
     OFF(peerjs_concurrent_limit), "5000", 1, 10000000, NULL,
     "PeerJS: registered clients at most"},
    {"signaling.max_topics_per_conn", PM_CONF_INT, OFF(max_topics_per_conn),
     "64", 1, 100000, NULL, "y-webrtc: topics one connection may subscribe"},
    {"signaling.session_ttl", PM_CONF_DURATION, OFF(session_ttl), "90s", 1000,
     86400000, NULL,
     "mailbox dialect: a registered client lives this long after its last "
     "heartbeat"},
    {"signaling.rendezvous_ttl", PM_CONF_DURATION, OFF(rendezvous_ttl), "30s",
     1000, 86400000, NULL, "mailbox dialect: lifetime of a join link token"},
    {"signaling.push_buffer", PM_CONF_INT, OFF(push_buffer), "100", 1, 100000,
     NULL,
     "mailbox dialect: pushes queued to a slow /ws reader before it is "
     "dropped"},
    {"signaling.mailbox_list_max", PM_CONF_INT, OFF(mailbox_list_max), "256", 1,
     1000000, NULL, "mailbox dialect: messages kept per mailbox"},
    {"signaling.auth", PM_CONF_ENUM, OFF(auth), "none", 0, 0, auth_modes,
     "none, or jwt: HS256 token with jwt.secret; sub is the only id allowed"},
    {"signaling.stun_urls", PM_CONF_STRING, OFF(stun_urls), "", 0, 0, NULL,
     "GET /ice: STUN URLs, comma-separated"},
    {"signaling.turn_urls", PM_CONF_STRING, OFF(turn_urls), "", 0, 0, NULL,
     "GET /ice: TURN URLs, comma-separated (with turn_secret)"},
    {"signaling.turn_secret", PM_CONF_SECRET, OFF(turn_secret), NULL, 0, 0,
     NULL, "GET /ice: coturn static-auth-secret for REST credentials"},
    {"signaling.turn_ttl", PM_CONF_DURATION, OFF(turn_ttl), "24h", 60000,
     604800000, NULL, "GET /ice: lifetime of TURN credentials"},
    {NULL, 0, 0, NULL, 0, 0, NULL, NULL},
};

/* Environment names of the seed deployments (later entries win). */
static const struct pm_conf_alias sig_aliases[] = {
    {"PORT", "port", NULL, NULL},
    {"JWT_SECRET", "jwt.secret", NULL, NULL},
    {"SIGNALING_ADDR", "addr", NULL, NULL},
    {"SIGNALING_PORT", "port", NULL, NULL},
    {"SIGNALING_PUBLIC_URL", "public_url", NULL, NULL},
    {"SIGNALING_REDIS_URL", "redis.url", NULL, NULL},
    {"SIGNALING_REDIS_REQUIRE_TLS", "redis.require_tls", NULL, NULL},
    {"SIGNALING_REDIS_KEY_PREFIX", "redis.key_prefix", NULL, NULL},
    {"SIGNALING_HEARTBEAT_SECS", "signaling.heartbeat_interval", NULL, NULL},
    {"SIGNALING_ROOM_TTL_SECS", "signaling.mailbox_ttl", NULL, NULL},
    {"SIGNALING_MAILBOX_TTL_SECS", "signaling.mailbox_ttl", NULL, NULL},
    {"SIGNALING_SESSION_TTL_SECS", "signaling.session_ttl", NULL, NULL},
    {"SIGNALING_RENDEZVOUS_TTL_SECS", "signaling.rendezvous_ttl", NULL, NULL},
    {"SIGNALING_WS_PUSH_BUFFER_CAPACITY", "signaling.push_buffer", NULL, NULL},
    {NULL, NULL, NULL, NULL},
};

static uint64_t *
relayed_counter(struct pm_metrics *m, const char *labels)
{
    return pm_metrics_counter(m, "p2pmesh_signaling_relayed_total", labels,
                              "Messages relayed to a peer");
}

void
sig_stats_init(struct sig *s, struct pm_metrics *m)
{
    s->stats.peers = pm_metrics_gauge(m, "p2pmesh_signaling_peers", NULL,
                                      "Peer ids currently joined here");
    s->stats.joins = pm_metrics_counter(m, "p2pmesh_signaling_joins_total",
                                        NULL, "Successful joins");
    s->stats.relayed_mesh = relayed_counter(m, "dialect=\"p2pmesh\"");
    s->stats.relayed_peerjs = relayed_counter(m, "dialect=\"peerjs\"");
    s->stats.relayed_yws = relayed_counter(m, "dialect=\"y-webrtc\"");
    s->stats.relayed_mailbox = relayed_counter(m, "dialect=\"mailbox\"");
    s->stats.queued =
        pm_metrics_counter(m, "p2pmesh_signaling_mailbox_queued_total", NULL,
                           "Messages held for an absent peer");
    s->stats.expired =
        pm_metrics_counter(m, "p2pmesh_signaling_mailbox_expired_total", NULL,
                           "Held messages that expired before their peer came");
    s->stats.undeliverable = pm_metrics_counter(
        m, "p2pmesh_signaling_undeliverable_total", NULL,
        "Messages the sender was told could not be delivered");
}

static int
sig_init(struct pm_server *srv, const void *conf, void **state, char *err,
         size_t errlen)
{
    struct pm_metrics *m = pm_server_metrics(srv);
    const struct sig_conf *sc = conf;
    struct sig *s;

    if (strcmp(sc->auth, "jwt") == 0 && pm_server_conf(srv)->jwt_secret == NULL)
        return pm_errf(err, errlen, PM_EINVAL,
                       "signaling.auth=jwt needs jwt.secret (the HS256 key)");
    s = pm_xcalloc(1, sizeof *s);
    s->srv = srv;
    s->conf = conf;
    sig_stats_init(s, m);
    sig_offline_start(s);
    sig_yws_init(s);
    sig_peerjs_init(s);
    sig_mailbox_init(s);
    if (sig_cluster_new(s, err, errlen) != PM_OK) {
        sig_destroy(s);
        return PM_EINVAL;
    }
    *state = s;
    return PM_OK;
}

static void
sig_stop(void *state)
{
    ((struct sig *)state)->stopping = true;
}

/*
 * With signaling.auth=jwt the mailbox API (every route is a POST) needs a
 * token too; false when the request was refused here (401 sent).
 */
static bool
mailbox_authorized(struct sig *s, struct pm_conn *conn,
                   const struct pm_http_request *req)
{
    static const char body[] = "{\"message\":\"Unauthorized\"}";
    char *sub = NULL;
    int status = 401;

    if (strcmp(s->conf->auth, "jwt") != 0 ||
        !pm_strcaseeq(req->method, req->method_len, "POST"))
        return true;
    if (sig_auth_check(s, conn, req, &sub, &status) == PM_OK) {
        free(sub);
        return true;
    }
    pm_conn_http_respond(conn, status, "application/json",
                         "WWW-Authenticate: Bearer\r\n", body, sizeof body - 1);
    return false;
}

static int
sig_http(void *state, struct pm_conn *conn, const struct pm_http_request *req,
         const uint8_t *body, size_t body_len)
{
    struct sig *s = state;
    int rv = sig_ice_http(s, conn, req);

    if (rv == PM_ENOTFOUND)
        rv = sig_peerjs_http(s, conn, req);
    if (rv == PM_ENOTFOUND && !mailbox_authorized(s, conn, req))
        return PM_OK; /* answered 401 */
    if (rv == PM_ENOTFOUND)
        rv = sig_mailbox_http(s, conn, req, body, body_len);
    return rv;
}

static void
sig_destroy(void *state)
{
    struct sig *s = state;
    struct sig_realm *r, *tmp;

    sig_cluster_free(s); /* drops the remote entries of the registry */
    sig_mailbox_free(s);
    sig_peerjs_free(s);
    sig_yws_free(s);
    sig_offline_free_all(s);
    /* Clients were freed by ws_close; what is left are empty realms. */
    HASH_ITER(hh, s->realms, r, tmp)
    {
        HASH_DEL(s->realms, r);
        free(r->name);
        free(r->hkey);
        free(r->sorted);
        free(r);
    }
    free(s);
}

static void
client_free(struct sig *s, struct sig_client *c)
{
    struct sig_realm *r = c->realm;

    free(c->token);
    free(c->sub);
    free(c);
    if (r != NULL) {
        r->nclients--;
        sig_realm_release(s, r);
    }
}

/*
 * Dialect by path: {peerjs_path}peerjs is PeerJS, /ws/{id} the mailbox
 * push; anything else waits for its first message (p2pmesh or y-webrtc).
 */
static int
sig_ws_upgrade(void *state, struct pm_conn *conn,
               const struct pm_http_request *req, int *status)
{
    struct sig *s = state;
    struct sig_client *c;
    char room[SIG_MAX_REALM + 1];
    char *sub = NULL;
    int rv;

    if (sig_auth_check(s, conn, req, &sub, status) != PM_OK)
        return PM_EINVAL;
    c = pm_xcalloc(1, sizeof *c);
    c->conn = conn;
    c->sub = sub;
    if (sig_peerjs_is_ws(s, req)) {
        c->dialect = SIG_PEERJS;
        sig_peerjs_upgrade(s, c, req);
    } else if (sig_mailbox_is_ws(s, req)) {
        c->dialect = SIG_MAILBOX;
        if (sig_mailbox_upgrade(s, c, req, status) != PM_OK) {
            client_free(s, c);
            return PM_EINVAL;
        }
    } else {
        rv = pm_http_query_param(req, "room", room, sizeof room);
        if (rv == PM_ELIMIT) {
            client_free(s, c);
            *status = 400;
            return PM_EINVAL;
        }
        if (rv != PM_OK)
            room[0] = '\0'; /* the one global realm */
        c->realm = sig_realm_get(s, SIG_REALM_MESH, room);
        c->realm->nclients++;
    }
    pm_conn_set_data(conn, c);
    return PM_OK;
}

static void
sig_ws_open(void *state, struct pm_conn *conn)
{
    struct sig_client *c = pm_conn_data(conn);

    if (c->dialect == SIG_PEERJS)
        sig_peerjs_open(state, c);
}

static bool
in_list(const char *const *list, const char *s)
{
    for (; *list != NULL; list++)
        if (strcmp(*list, s) == 0)
            return true;
    return false;
}

static const char *const yws_types[] = {"subscribe", "unsubscribe", "publish",
                                        NULL};

/* A message on a connection whose dialect its first message decides. */
static void
pending_message(struct sig *s, struct sig_client *c, cJSON *msg,
                const char *type, const char *data, size_t len)
{
    if (strcmp(type, "join") == 0 || strcmp(type, "leave") == 0 ||
        sig_mesh_relay_type(type) != NULL) {
        c->dialect = SIG_MESH;
    } else if (in_list(yws_types, type)) {
        /* y-webrtc has no realm: topics are its scopes. */
        struct sig_realm *r = c->realm;

        c->realm = NULL;
        r->nclients--;
        sig_realm_release(s, r);
        c->dialect = SIG_YWEBRTC;
        sig_yws_message(s, c, msg, type, data, len);
        return;
    }
    /* p2pmesh answers everything else (ping too, which both dialects
     * answer with a pong) without deciding. */
    sig_mesh_message(s, c, msg, type, data, len);
}

void
sig_client_message(struct sig *s, struct sig_client *c, const char *text,
                   size_t len)
{
    const cJSON *type;
    cJSON *msg;

    if (c->dialect == SIG_PEERJS) {
        sig_peerjs_message(s, c, text, len);
        return;
    }
    if (c->dialect == SIG_MAILBOX)
        return; /* push-only: client frames are not read */
    /* Relays splice into the sender's text: it must be JSON that strict
     * peers parse too, not only what cJSON accepts. */
    msg = pm_json_controls_ok(text, len) ? cJSON_ParseWithLength(text, len)
                                         : NULL;
    if (msg == NULL) {
        /* y-webrtc's reference server ignores what it cannot parse. */
        if (c->dialect != SIG_YWEBRTC)
            sig_send_error(c, SIG_INVALID_JSON);
        return;
    }
    type = cJSON_GetObjectItemCaseSensitive(msg, "type");
    if (c->dialect == SIG_YWEBRTC)
        sig_yws_message(s, c, msg,
                        cJSON_IsString(type) ? type->valuestring : NULL, text,
                        len);
    else if (c->dialect == SIG_PENDING && cJSON_IsObject(msg) &&
             cJSON_IsString(type))
        pending_message(s, c, msg, type->valuestring, text, len);
    else
        sig_mesh_message(s, c, msg,
                         cJSON_IsObject(msg) && cJSON_IsString(type)
                             ? type->valuestring
                             : NULL,
                         text, len);
    cJSON_Delete(msg);
}

static void
sig_ws_message(void *state, struct pm_conn *conn, enum pm_ws_opcode op,
               const uint8_t *data, size_t len)
{
    struct sig_client *c = pm_conn_data(conn);

    /* Binary frames carry the same JSON, and JSON is UTF-8 (RFC 8259):
     * other bytes are not JSON, and would go out in a text frame. */
    if (op == PM_WS_BINARY && !pm_utf8_valid(data, len)) {
        if (c->dialect == SIG_PENDING || c->dialect == SIG_MESH)
            sig_send_error(c, SIG_INVALID_JSON);
        return;
    }
    sig_client_message(state, c, (const char *)data, len);
}

static void
sig_ws_limited(void *state, struct pm_conn *conn)
{
    struct sig_client *c = pm_conn_data(conn);

    (void)state;
    if (c->dialect == SIG_MESH || c->dialect == SIG_PENDING)
        sig_send_error(c, "Rate limit exceeded.");
}

static void
sig_ws_close(void *state, struct pm_conn *conn, uint16_t code)
{
    struct sig *s = state;
    struct sig_client *c = pm_conn_data(conn);

    (void)code;
    if (c == NULL)
        return;
    switch (c->dialect) {
    case SIG_PENDING:
    case SIG_MESH:
        sig_mesh_departed(s, c);
        break;
    case SIG_YWEBRTC:
        sig_yws_departed(s, c);
        break;
    case SIG_PEERJS:
        sig_peerjs_departed(s, c);
        break;
    case SIG_MAILBOX:
        sig_mailbox_departed(s, c);
        break;
    }
    pm_conn_set_data(conn, NULL);
    client_free(s, c);
}

static void
sig_health(void *state, cJSON *o)
{
    struct sig *s = state;

    cJSON_AddStringToObject(o, "public_base_url", pm_server_public_url(s->srv));
    cJSON_AddNumberToObject(o, "heartbeat_interval_secs",
                            (double)(s->conf->heartbeat_interval / 1000));
    if (sig_cluster_enabled(s))
        cJSON_AddStringToObject(o, "redis", sig_cluster_up(s) ? "up" : "down");
}

static void
sig_ready(void *state, cJSON *failing)
{
    struct sig *s = state;

    if (sig_cluster_enabled(s) && !sig_cluster_up(s))
        cJSON_AddItemToArray(failing, cJSON_CreateString("redis"));
}

const struct pm_role pm_role_signaling = {
    .abi = PM_ROLE_ABI,
    .name = "signaling",
    .summary = "WebRTC signaling: P2PMesh, PeerJS, y-webrtc and mailbox "
               "dialects on one port, Redis cluster mode",
    .default_port = 8080,
    .conf_keys = sig_conf_keys,
    .conf_size = sizeof(struct sig_conf),
    .env_aliases = sig_aliases,
    .validate = sig_ice_validate,
    .init = sig_init,
    .stop = sig_stop,
    .destroy = sig_destroy,
    .http = sig_http,
    .ws_upgrade = sig_ws_upgrade,
    .ws_open = sig_ws_open,
    .ws_message = sig_ws_message,
    .ws_limited = sig_ws_limited,
    .ws_close = sig_ws_close,
    .health = sig_health,
    .ready = sig_ready,
};
