/*
 * Role chat: accounts, rooms, persisted history, presence and RTMP live
 * streams (docs/chat.md). This file owns the role's config keys and the
 * FaltuBaat environment names, the lifecycle (database, token secret),
 * request routing, and the health, readiness and metrics hooks.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "chat.h"
#include "chat_web.h"
#include "pm_addr.h"
#include "pm_conn.h"
#include "pm_http.h"
#include "pm_log.h"
#include "pm_metrics.h"
#include "pm_role.h"
#include "pm_server.h"
#include "pm_util.h"

#define OFF(f) offsetof(struct chat_conf, f)
#define CHAT_DEFAULT_DB "sqlite:data/p2pmesh.db"
#define CHAT_SWEEP_MS 60000

static const char *const journals[] = {"wal", "delete", NULL};
static const char *const syncs[] = {"full", "normal", NULL};

static const struct pm_conf_key chat_conf_keys[] = {
    {"chat.token_ttl", PM_CONF_DURATION, OFF(token_ttl), "7d", 60000,
     31536000000LL, NULL, "lifetime of issued tokens"},
    {"chat.sqlite_journal", PM_CONF_ENUM, OFF(sqlite_journal), "wal", 0, 0,
     journals, "wal on local disk; delete on network file systems (EFS)"},
    {"chat.sqlite_sync", PM_CONF_ENUM, OFF(sqlite_sync), "full", 0, 0, syncs,
     "SQLite synchronous: full (fsync every commit) or normal"},
    {"chat.max_message", PM_CONF_INT, OFF(max_message), "4000", 1, 1000000,
     NULL, "characters in a message body"},
    {"chat.max_room_members", PM_CONF_INT, OFF(max_room_members), "5000", 2,
     10000000, NULL, "members of one room"},
    {"chat.max_backlog", PM_CONF_INT, OFF(max_backlog), "20000", 1, 10000000,
     NULL, "database operations queued at most; messages over it: overloaded"},
    {"chat.history_limit", PM_CONF_INT, OFF(history_limit), "50", 1,
     CHAT_HISTORY_MAX, NULL, "default history page size"},
    {"chat.typing_interval", PM_CONF_DURATION, OFF(typing_interval), "2s", 0,
     60000, NULL,
     "typing events are forwarded per user and room at most once per"},
    {"chat.rate_window", PM_CONF_DURATION, OFF(rate_window), "15m", 1000,
     86400000, NULL, "REST rate-limit window"},
    {"chat.rate_max", PM_CONF_INT, OFF(rate_max), "100", 0, 100000000, NULL,
     "/api/* requests per window per client IP and per user (0: no limit)"},
    {"chat.auth_rate_max", PM_CONF_INT, OFF(auth_rate_max), "10", 0, 100000000,
     NULL, "/api/login and /api/register per window per client IP"},
    {"chat.max_streams", PM_CONF_INT, OFF(max_streams), "10", 0, 100000, NULL,
     "live streams at once"},
    {"chat.stream_cooldown", PM_CONF_DURATION, OFF(stream_cooldown), "10s", 0,
     86400000, NULL, "wait after a stream before the same user goes live"},
    {"chat.max_stream_duration", PM_CONF_DURATION, OFF(max_stream_duration),
     "4h", 1000, 604800000, NULL, "on_update drops longer streams"},
    {"chat.hls_base_url", PM_CONF_STRING, OFF(hls_base_url), "/hls", 0, 0, NULL,
     "playback URL = base/PLAYBACK_ID.m3u8"},
    {"chat.rtmp_url", PM_CONF_STRING, OFF(rtmp_url), NULL, 0, 0, NULL,
     "RTMP URL shown with a stream key (default rtmp://HOST:1935/live)"},
    {"chat.rtmp_allow", PM_CONF_STRING, OFF(rtmp_allow),
     "127.0.0.0/8, ::1/128, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16", 0, 0,
     NULL, "CIDRs allowed to call /stream/* (the nginx-rtmp sidecar)"},
    {"chat.s3_sync", PM_CONF_BOOL, OFF(s3_sync), "false", 0, 0, NULL,
     "back the SQLite database up to S3 (restore at start, periodic, at "
     "SIGTERM)"},
    {"chat.s3_bucket", PM_CONF_STRING, OFF(s3_bucket), NULL, 0, 0, NULL,
     "S3 bucket of the backup"},
    {"chat.s3_key", PM_CONF_STRING, OFF(s3_key),
     "faltubaat/database/faltubaat.db", 0, 0, NULL, "S3 object key"},
    {"chat.s3_interval", PM_CONF_DURATION, OFF(s3_interval), "300s", 1000,
     604800000, NULL, "time between backups"},
    {"chat.s3_endpoint", PM_CONF_STRING, OFF(s3_endpoint), NULL, 0, 0, NULL,
     "S3-compatible endpoint, path-style (default: AWS, virtual-hosted)"},
    {"chat.region", PM_CONF_STRING, OFF(region), "us-east-1", 0, 0, NULL,
     "AWS region of the bucket"},
    {NULL, 0, 0, NULL, 0, 0, NULL, NULL},
};

/* FaltuBaat's environment names (reference/chat.md section 9). */
static const struct pm_conf_alias chat_aliases[] = {
    {"PORT", "port", NULL, NULL},
    {"JWT_SECRET", "jwt.secret", NULL, NULL},
    {"JWT_EXPIRES_IN", "chat.token_ttl", NULL, NULL},
    {"NODE_ENV", "env", NULL, NULL},
    {"DB_PATH", "database.url", "sqlite:", NULL},
    {"DATABASE_URL", "database.url", NULL, NULL},
    {"MAX_CONCURRENT_STREAMS", "chat.max_streams", NULL, NULL},
    {"STREAM_COOLDOWN_MS", "chat.stream_cooldown", NULL, "ms"},
    {"MAX_STREAM_DURATION_MS", "chat.max_stream_duration", NULL, "ms"},
    {"RATE_LIMIT_WINDOW_MS", "chat.rate_window", NULL, "ms"},
    {"RATE_LIMIT_MAX_REQUESTS", "chat.rate_max", NULL, NULL},
    {"HLS_SERVER", "chat.hls_base_url", NULL, NULL},
    {"S3_SYNC_ENABLED", "chat.s3_sync", NULL, NULL},
    {"S3_DB_BUCKET", "chat.s3_bucket", NULL, NULL},
    {"S3_DB_KEY", "chat.s3_key", NULL, NULL},
    {"S3_SYNC_INTERVAL", "chat.s3_interval", NULL, NULL},
    {"AWS_REGION", "chat.region", NULL, NULL},
    {NULL, NULL, NULL, NULL},
};

static void chat_destroy(void *state);

static void
stats_init(struct chat *chat, struct pm_metrics *m)
{
    struct chat_stats *st = &chat->stats;

    st->messages = pm_metrics_counter(m, "p2pmesh_chat_messages_total", NULL,
                                      "Messages stored");
    st->deliveries =
        pm_metrics_counter(m, "p2pmesh_chat_deliveries_total", NULL,
                           "Events sent to WebSocket sessions");
    st->registrations = pm_metrics_counter(
        m, "p2pmesh_chat_registrations_total", NULL, "Accounts created");
    st->logins = pm_metrics_counter(m, "p2pmesh_chat_logins_total", NULL,
                                    "Successful logins");
    st->login_failures = pm_metrics_counter(
        m, "p2pmesh_chat_login_failures_total", NULL, "Refused logins");
    st->online_users = pm_metrics_gauge(m, "p2pmesh_chat_online_users", NULL,
                                        "Users with a session here");
    st->sessions = pm_metrics_gauge(m, "p2pmesh_chat_sessions", NULL,
                                    "WebSocket sessions here");
}

static void
sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    chat_rate_sweep(arg);
}

static const char *
db_url(const struct chat *chat)
{
    const struct pm_core_conf *core = pm_server_conf(chat->srv);

    return core->database_url != NULL ? core->database_url : CHAT_DEFAULT_DB;
}

int
chat_db_open(struct chat *chat, char *err, size_t errlen)
{
    const struct chat_conf *cc = chat->conf;
    struct pm_db_opts opts = {0};

    opts.url = db_url(chat);
    opts.journal = cc->sqlite_journal;
    opts.sync_full = strcmp(cc->sqlite_sync, "full") == 0;
    opts.migrations = chat_migrations;
    opts.nmigrations = chat_nmigrations;
    chat->db = pm_db_open(pm_server_loop(chat->srv), &opts, err, errlen);
    return chat->db != NULL ? PM_OK : PM_EINVAL;
}

static int
chat_init(struct pm_server *srv, const void *conf, void **state, char *err,
          size_t errlen)
{
    const struct pm_core_conf *core = pm_server_conf(srv);
    const struct chat_conf *cc = conf;
    struct chat *chat = pm_xcalloc(1, sizeof *chat);
    bool restore = false;

    chat->srv = srv;
    chat->conf = cc;
    stats_init(chat, pm_server_metrics(srv));
    if (pm_server_jwt_secret(core, false, &chat->secret, err, errlen) !=
            PM_OK ||
        pm_cidr_list_parse(cc->rtmp_allow, &chat->rtmp_allow, err, errlen) !=
            PM_OK ||
        chat_backup_init(chat, db_url(chat), &restore, err, errlen) != PM_OK ||
        (!restore && chat_db_open(chat, err, errlen) != PM_OK) ||
        chat_cluster_init(chat, err, errlen) != PM_OK) {
        chat_destroy(chat);
        return PM_EINVAL;
    }
    chat->secret_len = strlen(chat->secret);
    *state = chat;
    return PM_OK;
}

static int
chat_start(void *state, char *err, size_t errlen)
{
    struct chat *chat = state;
    struct timeval tv = {CHAT_SWEEP_MS / 1000, 0};

    (void)err;
    (void)errlen;
    chat->sweep =
        event_new(pm_server_base(chat->srv), -1, EV_PERSIST, sweep_cb, chat);
    event_add(chat->sweep, &tv);
    if (chat->backup != NULL && chat->db == NULL)
        chat_backup_restore(chat); /* opens the database when done */
    else
        chat_backup_schedule(chat);
    return PM_OK;
}

static void
chat_stop(void *state)
{
    struct chat *chat = state;

    chat->stopping = true;
    chat_backup_final(chat);
}

static bool
chat_busy(void *state)
{
    return chat_backup_busy(state);
}

static void
chat_destroy(void *state)
{
    struct chat *chat = state;

    if (chat->sweep != NULL)
        event_free(chat->sweep);
    chat_cluster_free(chat);
    chat_backup_free(chat);
    /* Finishes every queued write before returning. */
    pm_db_free(chat->db);
    chat_users_free(chat);
    chat_rooms_free(chat);
    chat_rate_free(chat);
    chat_floors_free(chat);
    pm_cidr_list_free(chat->rtmp_allow);
    if (chat->secret != NULL)
        explicit_bzero(chat->secret, chat->secret_len);
    free(chat->secret);
    free(chat);
}

static bool
has_prefix(const struct pm_http_request *req, const char *p)
{
    size_t n = strlen(p);

    return req->path_len >= n && memcmp(req->path, p, n) == 0;
}

static int
route(struct chat *chat, struct pm_conn *c, const struct pm_http_request *req,
      const uint8_t *body, size_t len)
{
    if ((has_prefix(req, "/api/") || has_prefix(req, "/stream/")) &&
        chat->db == NULL) {
        static const char wait[] =
            "{\"error\":\"The database is being restored, try again\"}";

        pm_conn_http_respond(c, 503, "application/json; charset=utf-8",
                             "Retry-After: 5\r\n", wait, sizeof wait - 1);
        return PM_OK;
    }
    if (has_prefix(req, "/api/")) {
        static const char nf[] = "{\"error\":\"Not found\"}";

        if (!chat_rate_take(chat, "api", pm_conn_ip(c), chat->conf->rate_max)) {
            static const char lim[] =
                "{\"error\":\"Too many requests, please try again later\"}";

            pm_conn_http_respond(c, 429, "application/json; charset=utf-8",
                                 NULL, lim, sizeof lim - 1);
            return PM_OK;
        }
        if (chat_accounts_route(chat, c, req, body, len) == PM_OK ||
            chat_rooms_route(chat, c, req, body, len) == PM_OK ||
            chat_streams_route(chat, c, req, body, len) == PM_OK)
            return PM_OK;
        pm_conn_http_respond(c, 404, "application/json; charset=utf-8", NULL,
                             nf, sizeof nf - 1);
        return PM_OK;
    }
    if (has_prefix(req, "/stream/"))
        return chat_streams_route(chat, c, req, body, len);
    return pm_asset_route(c, req, chat_assets);
}

static int
chat_http(void *state, struct pm_conn *c, const struct pm_http_request *req,
          const uint8_t *body, size_t len)
{
    /* Routes answer now or from a callback: either way the core waits
     * (an answer already given ends the wait at once). */
    int rv = route(state, c, req, body, len);

    return rv == PM_OK ? PM_EAGAIN : rv;
}

static int
chat_upgrade(void *state, struct pm_conn *c, const struct pm_http_request *req,
             int *status)
{
    return chat_ws_upgrade(state, c, req, status);
}

static void
chat_open(void *state, struct pm_conn *c)
{
    chat_ws_open(state, c);
}

static void
chat_message(void *state, struct pm_conn *c, enum pm_ws_opcode op,
             const uint8_t *data, size_t len)
{
    struct chat *chat = state;

    if (op != PM_WS_TEXT) {
        pm_conn_ws_close(c, PM_WS_UNSUPPORTED, "text frames only");
        return;
    }
    chat_ws_message(chat, c, data, len);
}

static void
chat_limited(void *state, struct pm_conn *c)
{
    chat_ws_limited(state, c);
}

static void
chat_closed(void *state, struct pm_conn *c, uint16_t code)
{
    (void)code;
    chat_ws_close(state, c);
}

static void
chat_health(void *state, cJSON *obj)
{
    struct chat *chat = state;

    cJSON_AddNumberToObject(obj, "online_users",
                            (double)*chat->stats.online_users);
    cJSON_AddStringToObject(
        obj, "database",
        strncmp(db_url(chat), "sqlite:", 7) == 0 ? "sqlite" : "postgres");
}

static void
chat_ready(void *state, cJSON *failing)
{
    struct chat *chat = state;

    if (!pm_db_is_up(chat->db))
        cJSON_AddItemToArray(failing, cJSON_CreateString("database"));
    if (!chat_cluster_up(chat))
        cJSON_AddItemToArray(failing, cJSON_CreateString("redis"));
}

const struct pm_role pm_role_chat = {
    .abi = PM_ROLE_ABI,
    .name = "chat",
    .summary = "accounts, rooms, history, presence and RTMP live streams",
    .default_port = 3000,
    .conf_keys = chat_conf_keys,
    .conf_size = sizeof(struct chat_conf),
    .env_aliases = chat_aliases,
    .init = chat_init,
    .start = chat_start,
    .stop = chat_stop,
    .busy = chat_busy,
    .destroy = chat_destroy,
    .http = chat_http,
    .ws_upgrade = chat_upgrade,
    .ws_open = chat_open,
    .ws_message = chat_message,
    .ws_limited = chat_limited,
    .ws_close = chat_closed,
    .health = chat_health,
    .ready = chat_ready,
};
