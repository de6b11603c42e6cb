/*
 * Role game: authoritative multiplayer Snake (docs/game.md). This file
 * owns the role's configuration keys, its lifecycle (a single node, or a
 * raft cluster when peers or a PostgreSQL database are configured), the
 * HTTP routes, the WebSocket hooks and health, readiness and metrics.
 */
#include "config.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "game.h"
#include "game_json.h"
#include "game_web.h"
#include "pm_conn.h"
#include "pm_http.h"
#include "pm_log.h"
#include "pm_metrics.h"
#include "pm_role.h"
#include "pm_server.h"
#include "pm_util.h"

#define OFF(f) offsetof(struct game_conf, f)
#define GUEST_BODY_MAX 1024

static const char *const cluster_modes[] = {"auto", "on", "off", NULL};

static const struct pm_conf_key game_conf_keys[] = {
    {"game.width", PM_CONF_INT, OFF(width), "40", GAME_MIN_SIDE, GAME_MAX_SIDE,
     NULL, "board width of matchmade games"},
    {"game.height", PM_CONF_INT, OFF(height), "40", GAME_MIN_SIDE,
     GAME_MAX_SIDE, NULL, "board height of matchmade games"},
    {"game.tick", PM_CONF_DURATION, OFF(tick), "100ms", 20, 2000, NULL,
     "tick of matchmade games"},
    {"game.food", PM_CONF_INT, OFF(food), "5", 1, 32, NULL,
     "food kept on the board"},
    {"game.food_per_player", PM_CONF_INT, OFF(food_per_player), "2", 0, 8, NULL,
     "more food per player beyond the first"},
    {"game.max_players", PM_CONF_INT, OFF(max_players), "8", 2, GAME_MAX_SNAKES,
     NULL, "players of an ffa game"},
    {"game.start_delay", PM_CONF_DURATION, OFF(start_delay), "1s", 0, 60000,
     NULL, "wait between MatchFound and the first tick"},
    {"game.ffa_wait", PM_CONF_DURATION, OFF(ffa_wait), "5s", 0, 600000, NULL,
     "an ffa queue with two or more players starts after this"},
    {"game.token_ttl", PM_CONF_DURATION, OFF(token_ttl), "24h", 60000,
     31536000000LL, NULL, "lifetime of guest tokens"},
    {"game.max_games", PM_CONF_INT, OFF(max_games), "10000", 1, 1000000, NULL,
     "games at once in the cluster"},
    {"game.cluster", PM_CONF_ENUM, OFF(cluster), "auto", 0, 0, cluster_modes,
     "auto: a cluster when game.peers or a PostgreSQL database.url is set"},
    {"game.raft_port", PM_CONF_INT, OFF(raft_port), "50052", 1, 65535, NULL,
     "raft listener"},
    {"game.peer_port", PM_CONF_INT, OFF(peer_port), "50051", 1, 65535, NULL,
     "peer link listener (players' commands and game events)"},
    {"game.advertise_addr", PM_CONF_STRING, OFF(advertise_addr), NULL, 0, 0,
     NULL,
     "address other nodes reach this one at (default: ECS task "
     "metadata, else the host's primary address)"},
    {"game.peers", PM_CONF_STRING, OFF(peers), NULL, 0, 0, NULL,
     "static cluster without a database: peer-link host:port list"},
    {"game.data_dir", PM_CONF_STRING, OFF(data_dir), "data/game", 0, 0, NULL,
     "raft log, snapshots and the node id"},
    {"game.dead_after", PM_CONF_DURATION, OFF(dead_after), "30s", 1000, 3600000,
     NULL, "a silent node is removed from raft after this"},
    {"game.failover_after", PM_CONF_DURATION, OFF(failover_after), "1s", 100,
     60000, NULL, "games of a node unreachable this long move elsewhere"},
    {"game.checkpoint_interval", PM_CONF_DURATION, OFF(checkpoint_interval),
     "500ms", 100, 60000, NULL, "checkpoint of each running game"},
    {"game.heartbeat", PM_CONF_DURATION, OFF(heartbeat), "10s", 1000, 600000,
     NULL,
     "servers table heartbeat (peers are rows newer than 3 of them, "
     "rows older than 6 are removed)"},
    {"game.election_timeout", PM_CONF_DURATION, OFF(election_timeout), "500ms",
     50, 60000, NULL, "raft election timeout"},
    {"game.voters", PM_CONF_INT, OFF(voters), "5", 1, 9, NULL,
     "raft voters the leader promotes to"},
    {"game.ecs_metadata_uri", PM_CONF_STRING, OFF(ecs_metadata_uri), NULL, 0, 0,
     NULL, "ECS task metadata endpoint v4 (own address on Fargate)"},
    {NULL, 0, 0, NULL, 0, 0, NULL, NULL},
};

static const struct pm_conf_alias game_aliases[] = {
    {"WS_PORT", "port", NULL, NULL},
    {"BIND_ADDR", "addr", NULL, NULL},
    {"GRPC_PORT", "game.peer_port", NULL, NULL},
    {"RAFT_PORT", "game.raft_port", NULL, NULL},
    {"DATABASE_URL", "database.url", NULL, NULL},
    {"JWT_SECRET", "jwt.secret", NULL, NULL},
    {"ECS_CONTAINER_METADATA_URI_V4", "game.ecs_metadata_uri", NULL, NULL},
    {NULL, NULL, NULL, NULL},
};

static const char *const mode_names[GAME_MODES] = {"solo", "duel", "ffa",
                                                   "custom"};

const char *
game_mode_name(enum game_mode m)
{
    return (unsigned)m < GAME_MODES ? mode_names[m] : "unknown";
}

int
game_mode_parse(const char *s, enum game_mode *out)
{
    int i;

    for (i = 0; i < GAME_MODES; i++)
        if (strcmp(s, mode_names[i]) == 0) {
            *out = (enum game_mode)i;
            return PM_OK;
        }
    return PM_EINVAL;
}

struct game_settings
game_default_settings(const struct game_node *gn, enum game_mode m, int players)
{
    struct game_settings s;

    s.width = (int)gn->conf->width;
    s.height = (int)gn->conf->height;
    s.tick_ms = (int)gn->conf->tick;
    s.food = (int)gn->conf->food;
    s.food_per_player = (int)gn->conf->food_per_player;
    switch (m) {
    case GAME_MODE_SOLO:
        s.max_players = 1;
        break;
    case GAME_MODE_DUEL:
        s.max_players = 2;
        break;
    case GAME_MODE_FFA:
        s.max_players = players > 1 ? players : 2;
        break;
    default:
        s.max_players = (int)gn->conf->max_players;
    }
    return s;
}

static bool
db_is_postgres(const char *url)
{
    return url != NULL && (strncmp(url, "postgres://", 11) == 0 ||
                           strncmp(url, "postgresql://", 13) == 0);
}

static int
role_validate(const void *conf, char *err, size_t errlen)
{
    const struct game_conf *c = conf;

    if (c->data_dir == NULL || c->data_dir[0] == '\0')
        return pm_errf(err, errlen, PM_EINVAL, "game.data_dir is empty");
    if (c->raft_port == c->peer_port)
        return pm_errf(err, errlen, PM_EINVAL,
                       "game.raft_port and game.peer_port must differ");
    return PM_OK;
}

/* ---- lifecycle ----------------------------------------------------------- */

static void
role_destroy(void *state)
{
    struct game_node *gn = state;
    struct game_session *s, *t;
    struct game_user_sessions *u, *ut;
    struct game_watch *w, *wt;

    gn->stopped = true;
    game_cluster_free(gn);
    game_match_free(gn);
    game_rooms_free(gn);
    /* The core closed every connection (ws_close) before this; what is
     * left belongs to no connection any more. */
    HASH_ITER(hh, gn->sessions, s, t)
    {
        HASH_DEL(gn->sessions, s);
        event_free(s->auth_timer);
        free(s);
    }
    HASH_ITER(hh, gn->users, u, ut)
    {
        HASH_DEL(gn->users, u);
        free(u);
    }
    HASH_ITER(hh, gn->watches, w, wt)
    {
        HASH_DEL(gn->watches, w);
        free(w);
    }
    game_fsm_clear(&gn->fsm);
    if (gn->jwt_secret != NULL)
        explicit_bzero(gn->jwt_secret, gn->jwt_secret_len);
    free(gn->jwt_secret);
    free(gn);
}

static int
role_init(struct pm_server *srv, const void *conf, void **state, char *err,
          size_t errlen)
{
    const struct pm_core_conf *core = pm_server_conf(srv);
    const struct game_conf *gc = conf;
    struct game_node *gn = pm_xcalloc(1, sizeof *gn);

    gn->srv = srv;
    gn->conf = gc;
    game_fsm_init(&gn->fsm);
    if (strcmp(gc->cluster, "on") == 0)
        gn->cluster = true;
    else if (strcmp(gc->cluster, "auto") == 0)
        gn->cluster = (gc->peers != NULL && gc->peers[0] != '\0') ||
                      db_is_postgres(core->database_url);
    if (pm_server_jwt_secret(core, gn->cluster, &gn->jwt_secret, err, errlen) !=
        PM_OK) {
        free(gn);
        return PM_EINVAL;
    }
    gn->jwt_secret_len = strlen(gn->jwt_secret);
    if (gn->cluster && !db_is_postgres(core->database_url) &&
        (gc->peers == NULL || gc->peers[0] == '\0')) {
        role_destroy(gn);
        return pm_errf(err, errlen, PM_EINVAL,
                       "game.cluster=on needs game.peers or a PostgreSQL "
                       "database.url to find the other nodes");
    }
    if (gn->cluster) {
        static const double bounds[] = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02,
                                        0.05,   0.1,   0.25,  0.5,   1.0};

        gn->commit = pm_metrics_histogram(
            pm_server_metrics(srv), "p2pmesh_game_raft_commit_seconds", NULL,
            "Entries this node appended as leader, until committed and "
            "applied here (checkpoints, most of them)",
            bounds, sizeof bounds / sizeof bounds[0]);
    }
    game_match_init(gn);
    *state = gn;
    return PM_OK;
}

static int
role_start(void *state, char *err, size_t errlen)
{
    struct game_node *gn = state;

    if (!gn->cluster) {
        gn->node_id = 1;
        pm_log(PM_LOG_INFO, "game_single",
               "single node: no database, no peers; games live here");
        return PM_OK;
    }
    return game_cluster_start(gn, err, errlen);
}

/* SIGTERM: tell every client before the core closes them with 1001. */
static void
role_drain(void *state)
{
    struct game_node *gn = state;
    uint64_t grace = pm_server_conf(gn->srv)->shutdown_grace;

    gn->draining = true;
    game_sessions_shutdown(gn, (unsigned)((grace + 999) / 1000));
}

static void
role_stop(void *state)
{
    struct game_node *gn = state;

    gn->draining = true;
    if (gn->cluster)
        game_cluster_stop(gn);
}

static bool
role_busy(void *state)
{
    struct game_node *gn = state;

    return gn->cluster && game_cluster_busy(gn);
}

/* ---- HTTP ---------------------------------------------------------------- */

static void
reply_json(struct pm_conn *c, int status, cJSON *o)
{
    char *txt = cJSON_PrintUnformatted(o);

    pm_conn_http_respond(c, status, "application/json", NULL, txt, strlen(txt));
    free(txt);
    cJSON_Delete(o);
}

static void
reply_message(struct pm_conn *c, int status, const char *msg)
{
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "message", msg);
    reply_json(c, status, o);
}

static bool
path_is(const struct pm_http_request *req, const char *method, const char *path)
{
    return req->method_len == strlen(method) &&
           memcmp(req->method, method, req->method_len) == 0 &&
           req->path_len == strlen(path) &&
           memcmp(req->path, path, req->path_len) == 0;
}

static void
guest_route(struct game_node *gn, struct pm_conn *c, const uint8_t *body,
            size_t len)
{
    const char *nick = NULL;
    char err[PM_ERRMSG_SIZE], *token;
    cJSON *in = NULL, *user, *o;

    if (len > GUEST_BODY_MAX) {
        reply_message(c, 413, "the body is larger than 1 KiB");
        return;
    }
    if (len > 0) {
        const cJSON *n;

        in = cJSON_ParseWithLength((const char *)body, len);
        if (!cJSON_IsObject(in)) {
            cJSON_Delete(in);
            reply_message(c, 400, "the body must be a JSON object");
            return;
        }
        n = cJSON_GetObjectItemCaseSensitive(in, "nickname");
        if (cJSON_IsString(n) && n->valuestring[0] != '\0')
            nick = n->valuestring;
        else if (n != NULL && !cJSON_IsNull(n) && !cJSON_IsString(n)) {
            cJSON_Delete(in);
            reply_message(c, 400, "nickname must be a string");
            return;
        }
    }
    if (game_auth_guest(gn, nick, &token, &user, err, sizeof err) != PM_OK) {
        cJSON_Delete(in);
        reply_message(c, 400, err);
        return;
    }
    cJSON_Delete(in);
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "token", token);
    cJSON_AddItemToObject(o, "user", user);
    free(token);
    reply_json(c, 200, o);
}

static void
games_route(struct game_node *gn, struct pm_conn *c)
{
    cJSON *o = cJSON_CreateObject(), *arr, *x, *users;
    struct fsm_game *g, *t;
    int i;

    arr = cJSON_AddArrayToObject(o, "games");
    HASH_ITER(hh, gn->fsm.games, g, t)
    {
        x = cJSON_CreateObject();
        cJSON_AddNumberToObject(x, "id", (double)g->id);
        cJSON_AddStringToObject(x, "mode", game_mode_name(g->mode));
        cJSON_AddStringToObject(
            x, "status", g->status == FSM_WAITING ? "waiting" : "running");
        users = cJSON_AddArrayToObject(x, "players");
        for (i = 0; i < g->nusers; i++)
            cJSON_AddItemToArray(users, cJSON_CreateString(g->users[i]));
        cJSON_AddNumberToObject(x, "owner", (double)g->owner);
        cJSON_AddItemToArray(arr, x);
    }
    reply_json(c, 200, o);
}

static int
role_http(void *state, struct pm_conn *c, const struct pm_http_request *req,
          const uint8_t *body, size_t body_len)
{
    struct game_node *gn = state;

    if (path_is(req, "POST", "/api/auth/guest")) {
        guest_route(gn, c, body, body_len);
        return PM_OK;
    }
    if (path_is(req, "POST", "/api/auth/register") ||
        path_is(req, "POST", "/api/auth/login")) {
        reply_message(c, 501,
                      "accounts are not implemented yet: use POST "
                      "/api/auth/guest, or tokens signed with jwt.secret");
        return PM_OK;
    }
    if (path_is(req, "GET", "/api/games")) {
        games_route(gn, c);
        return PM_OK;
    }
    return pm_asset_route(c, req, game_assets);
}

/* ---- WebSocket ----------------------------------------------------------- */

static int
role_ws_upgrade(void *state, struct pm_conn *c,
                const struct pm_http_request *req, int *status)
{
    (void)state;
    (void)c;
    if (!(req->path_len == 3 && memcmp(req->path, "/ws", 3) == 0)) {
        *status = 404;
        return PM_ENOTFOUND;
    }
    return PM_OK;
}

static void
role_ws_open(void *state, struct pm_conn *c)
{
    game_session_open(state, c);
}

static void
role_ws_message(void *state, struct pm_conn *c, enum pm_ws_opcode op,
                const uint8_t *data, size_t len)
{
    if (op != PM_WS_TEXT) {
        pm_conn_ws_close(c, PM_WS_UNSUPPORTED, "JSON text messages only");
        return;
    }
    game_session_message(state, c, data, len);
}

static void
role_ws_limited(void *state, struct pm_conn *c)
{
    struct game_session *s = pm_conn_data(c);

    (void)state;
    if (s != NULL)
        game_session_error(s, "too many messages: slow down "
                              "(limits.per_conn_rate)");
}

static void
role_ws_close(void *state, struct pm_conn *c, uint16_t code)
{
    (void)code;
    game_session_close(state, c);
}

/* ---- observability ------------------------------------------------------- */

static void
role_health(void *state, cJSON *obj)
{
    struct game_node *gn = state;

    cJSON_AddNumberToObject(obj, "node_id", (double)gn->node_id);
    cJSON_AddNumberToObject(obj, "games_owned", HASH_COUNT(gn->rooms));
    cJSON_AddNumberToObject(obj, "players", (double)gn->players);
    if (gn->cluster) {
        game_cluster_health(gn, obj);
    } else {
        cJSON_AddStringToObject(obj, "raft_state", "single");
        cJSON_AddNumberToObject(obj, "leader", (double)gn->node_id);
        cJSON_AddNumberToObject(obj, "voters", 1);
    }
}

static void
role_ready(void *state, cJSON *failing)
{
    struct game_node *gn = state;

    if (gn->cluster && !game_cluster_ready(gn))
        cJSON_AddItemToArray(failing, cJSON_CreateString("raft"));
}

static void
role_metrics(void *state, struct evbuffer *out)
{
    struct game_node *gn = state;

    evbuffer_add_printf(
        out,
        "# HELP p2pmesh_game_games_owned Games ticking on this node\n"
        "# TYPE p2pmesh_game_games_owned gauge\n"
        "p2pmesh_game_games_owned %u\n"
        "# HELP p2pmesh_game_games Games in the cluster not over\n"
        "# TYPE p2pmesh_game_games gauge\n"
        "p2pmesh_game_games %u\n"
        "# HELP p2pmesh_game_players Authenticated sessions here\n"
        "# TYPE p2pmesh_game_players gauge\n"
        "p2pmesh_game_players %" PRId64 "\n"
        "# HELP p2pmesh_game_started_total Games created (applied here)\n"
        "# TYPE p2pmesh_game_started_total counter\n"
        "p2pmesh_game_started_total %" PRIu64 "\n"
        "# HELP p2pmesh_game_ended_total Games finished (applied here)\n"
        "# TYPE p2pmesh_game_ended_total counter\n"
        "p2pmesh_game_ended_total %" PRIu64 "\n"
        "# HELP p2pmesh_game_commands_total Turns accepted by games here\n"
        "# TYPE p2pmesh_game_commands_total counter\n"
        "p2pmesh_game_commands_total %" PRIu64 "\n"
        "# HELP p2pmesh_game_resyncs_total RequestResync received\n"
        "# TYPE p2pmesh_game_resyncs_total counter\n"
        "p2pmesh_game_resyncs_total %" PRIu64 "\n"
        "# HELP p2pmesh_game_resumed_total Games resumed from a checkpoint "
        "here\n"
        "# TYPE p2pmesh_game_resumed_total counter\n"
        "p2pmesh_game_resumed_total %" PRIu64 "\n"
        "# HELP p2pmesh_game_ticks_late_total Ticks that ran over a tick "
        "late (time dropped)\n"
        "# TYPE p2pmesh_game_ticks_late_total counter\n"
        "p2pmesh_game_ticks_late_total %" PRIu64 "\n",
        HASH_COUNT(gn->rooms), HASH_COUNT(gn->fsm.games), gn->players,
        gn->games_started, gn->games_ended, gn->commands, gn->resyncs,
        gn->failovers, gn->ticks_late);
}

const struct pm_role pm_role_game = {
    .abi = PM_ROLE_ABI,
    .name = "game",
    .summary = "authoritative multiplayer Snake on a raft cluster",
    .default_port = 8080,
    .conf_keys = game_conf_keys,
    .conf_size = sizeof(struct game_conf),
    .env_aliases = game_aliases,
    .validate = role_validate,
    .init = role_init,
    .start = role_start,
    .drain = role_drain,
    .stop = role_stop,
    .busy = role_busy,
    .destroy = role_destroy,
    .http = role_http,
    .ws_upgrade = role_ws_upgrade,
    .ws_open = role_ws_open,
    .ws_message = role_ws_message,
    .ws_limited = role_ws_limited,
    .ws_close = role_ws_close,
    .health = role_health,
    .ready = role_ready,
    .metrics = role_metrics,
};
