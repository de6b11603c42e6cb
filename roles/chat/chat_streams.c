/*
 * chat_streams: RTMP live streams published through an nginx-rtmp
 * sidecar. Users get a stream key from POST /api/get-stream-key (stored
 * as its SHA-256, shown once, replaced on every request); nginx-rtmp's
 * form-encoded on_publish / on_publish_done / on_update callbacks land on
 * /stream/start, /stream/stop and /stream/update. A valid key is answered
 * with a 302 whose Location is a fresh public playback id, so nginx-rtmp
 * renames the stream and HLS never carries the key. One live stream per
 * user (a partial unique index), a global cap, a cooldown per user and a
 * maximum duration are enforced here; starts and stops are announced to
 * every connected user.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "chat.h"
#include "pm_addr.h"
#include "pm_conn.h"
#include "pm_http.h"
#include "pm_jwt.h"
#include "pm_log.h"
#include "pm_util.h"

#define KEY_BYTES 16
#define PLAYBACK_BYTES 12

static void
random_hex(size_t nbytes, char *out)
{
    uint8_t buf[32];

    PM_ASSERT(nbytes <= sizeof buf);
    pm_random_bytes(buf, nbytes);
    pm_hex_encode(buf, nbytes, out);
}

static char *
playback_url(const struct chat *chat, const char *id)
{
    return pm_xasprintf("%s/%s.m3u8", chat->conf->hls_base_url, id);
}

static void
announce(struct chat *chat, const char *type, const char *user,
         const char *playback_id)
{
    cJSON *o = cJSON_CreateObject();
    char *url = playback_url(chat, playback_id);

    cJSON_AddStringToObject(o, "type", type);
    cJSON_AddStringToObject(o, "user", user);
    cJSON_AddStringToObject(o, "playback_id", playback_id);
    cJSON_AddStringToObject(o, "playback_url", url);
    chat_fanout_all(chat, o);
    cJSON_Delete(o);
    free(url);
}

/*
 * The value of field name in an application/x-www-form-urlencoded body,
 * decoded into out; false when absent or too long.
 */
static bool
form_value(const uint8_t *body, size_t len, const char *name, char *out,
           size_t outlen)
{
    const char *p = (const char *)body, *end = p + len;
    size_t n = strlen(name);

    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp != NULL ? amp : end;

        if ((size_t)(stop - p) > n && memcmp(p, name, n) == 0 && p[n] == '=')
            return pm_percent_decode(p + n + 1, (size_t)(stop - p - n - 1),
                                     true, out, outlen) == PM_OK;
        p = stop + 1;
    }
    return false;
}

/* ---- POST /api/get-stream-key ---------------------------------------- */

static void
key_stored(void *arg, const struct pm_db_res *res)
{
    struct chat_req *r = arg;
    cJSON *o;

    if (!chat_db_ok(r, res))
        return;
    pm_log(PM_LOG_INFO, "stream_key_issued", "user %s", r->acct.name);
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "streamKey", r->s1);
    cJSON_AddStringToObject(o, "rtmpUrl", r->s2);
    chat_reply(r, 200, o);
}

static void
get_stream_key(struct chat_req *r)
{
    char key[2 * KEY_BYTES + 1], hash[PM_SHA256_HEX_SIZE], uid[24], now[24];
    const char *params[3] = {uid, hash, now};
    char who[24];

    chat_id_text(r->acct.id, who);
    if (!chat_rate_take(r->chat, "streamkey", who, 10)) {
        chat_reply_error(r, 429, "Too many stream key requests, try later");
        return;
    }
    random_hex(KEY_BYTES, key);
    pm_sha256_hex(key, strlen(key), hash);
    chat_id_text(r->acct.id, uid);
    chat_id_text((int64_t)pm_wall_ms(), now);
    r->s1 = pm_xstrdup(key);
    pm_db_query(r->chat->db,
                "INSERT INTO stream_keys (user_id, key_hash, created_at) "
                "VALUES ($1, $2, $3) ON CONFLICT (user_id) DO UPDATE SET "
                "key_hash = excluded.key_hash, created_at = "
                "excluded.created_at",
                3, params, key_stored, r);
}

/* ---- GET /api/streams, GET /api/broadcast-status ---------------------- */

static void
streams_listed(void *arg, const struct pm_db_res *res)
{
    struct chat_req *r = arg;
    cJSON *o, *arr;
    int i;

    if (!chat_db_ok(r, res))
        return;
    o = cJSON_CreateObject();
    arr = cJSON_AddArrayToObject(o, "streams");
    for (i = 0; i < res->nrows; i++) {
        cJSON *s = cJSON_CreateObject();
        const char *pid = pm_db_val(res, i, 1);
        char *url = playback_url(r->chat, pid);

        cJSON_AddStringToObject(s, "user", pm_db_val(res, i, 0));
        cJSON_AddStringToObject(s, "playbackId", pid);
        cJSON_AddStringToObject(s, "playbackUrl", url);
        cJSON_AddNumberToObject(s, "startedAt",
                                (double)pm_db_int(res, i, 2, 0));
        cJSON_AddItemToArray(arr, s);
        free(url);
    }
    chat_reply(r, 200, o);
}

static void
list_streams(struct chat_req *r)
{
    pm_db_query(r->chat->db,
                "SELECT u.username, s.playback_id, s.started_at FROM streams s "
                "JOIN users u ON u.id = s.user_id WHERE s.ended_at IS NULL "
                "ORDER BY s.started_at",
                0, NULL, streams_listed, r);
}

static void
status_counted(void *arg, const struct pm_db_res *res)
{
    struct chat_req *r = arg;
    int64_t live = pm_db_int(res, 0, 0, 0), max = r->chat->conf->max_streams;
    cJSON *o;

    if (!chat_db_ok(r, res))
        return;
    o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "activeStreams", (double)live);
    cJSON_AddNumberToObject(o, "maxStreams", (double)max);
    cJSON_AddBoolToObject(o, "available", live < max);
    chat_reply(r, 200, o);
}

/* ---- nginx-rtmp callbacks -------------------------------------------- */

static void
respond_text(struct chat_req *r, int status, const char *extra,
             const char *text)
{
    pm_conn_http_respond(r->c, status, "text/plain; charset=utf-8", extra, text,
                         strlen(text));
    chat_req_free(r);
}

static void
stream_started(void *arg, const struct pm_db_res *res)
{
    struct chat_req *r = arg;
    char *loc;

    if (res->status == PM_ECONFLICT) {
        respond_text(r, 409, NULL, "You already have an active stream");
        return;
    }
    if (res->status != PM_OK) {
        pm_log(PM_LOG_ERROR, "db_error", "stream start: %s", res->err);
        respond_text(r, 503, NULL, "Database unavailable");
        return;
    }
    pm_log(PM_LOG_INFO, "stream_started", "user %s playback %s (from %s)",
           r->acct.name, r->s2, r->s3 ? r->s3 : "?");
    announce(r->chat, "stream_started", r->acct.name, r->s2);
    /* nginx-rtmp renames the stream to the Location of a 3xx. */
    loc = pm_xasprintf("Location: %s\r\n", r->s2);
    respond_text(r, 302, loc, "");
    free(loc);
}

static void
key_checked(void *arg, const struct pm_db_res *res)
{
    struct chat_req *r = arg;
    struct chat *chat = r->chat;
    int64_t ended, now = (int64_t)pm_wall_ms();
    char pid[2 * PLAYBACK_BYTES + 1], uid[24], ts[24];
    const char *params[4] = {uid, pid, ts, r->s1};

    if (res->status != PM_OK) {
        pm_log(PM_LOG_ERROR, "db_error", "stream start: %s", res->err);
        respond_text(r, 503, NULL, "Database unavailable");
        return;
    }
    if (res->nrows == 0) {
        pm_log(PM_LOG_WARN, "stream_refused", "invalid stream key from %s",
               r->s3 ? r->s3 : "?");
        respond_text(r, 403, NULL, "Invalid stream key");
        return;
    }
    r->acct.id = pm_db_int(res, 0, 0, 0);
    pm_strlcpy(r->acct.name, pm_db_val(res, 0, 1), sizeof r->acct.name);
    ended = pm_db_int(res, 0, 2, 0);
    if (pm_db_int(res, 0, 4, 0) > 0) {
        respond_text(r, 409, NULL, "You already have an active stream");
        return;
    }
    if (pm_db_int(res, 0, 3, 0) >= chat->conf->max_streams) {
        respond_text(r, 503, NULL, "Streaming is at capacity");
        return;
    }
    if (ended > 0 && now - ended < (int64_t)chat->conf->stream_cooldown) {
        respond_text(r, 429, NULL, "Stream cooldown, try again shortly");
        return;
    }
    random_hex(PLAYBACK_BYTES, pid);
    r->s2 = pm_xstrdup(pid);
    chat_id_text(r->acct.id, uid);
    chat_id_text(now, ts);
    pm_db_query(chat->db,
                "INSERT INTO streams (user_id, playback_id, started_at, "
                "key_hash) VALUES ($1, $2, $3, $4)",
                4, params, stream_started, r);
}

static void
stream_start(struct chat_req *r, const uint8_t *body, size_t len)
{
    char key[256], addr[64], hash[PM_SHA256_HEX_SIZE];
    const char *params[1] = {hash};

    if (!form_value(body, len, "name", key, sizeof key) || key[0] == '\0') {
        respond_text(r, 403, NULL, "Invalid stream key");
        return;
    }
    if (form_value(body, len, "addr", addr, sizeof addr))
        r->s3 = pm_xstrdup(addr);
    pm_sha256_hex(key, strlen(key), hash);
    r->s1 = pm_xstrdup(hash);
    pm_db_query(r->chat->db,
                "SELECT k.user_id, u.username, (SELECT max(s.ended_at) FROM "
                "streams s WHERE s.user_id = k.user_id), (SELECT count(*) "
                "FROM streams s WHERE s.ended_at IS NULL), (SELECT count(*) "
                "FROM streams s WHERE s.user_id = k.user_id AND s.ended_at IS "
                "NULL) FROM stream_keys k JOIN users u ON u.id = k.user_id "
                "WHERE k.key_hash = $1",
                1, params, key_checked, r);
}

static void
stream_stopped(void *arg, const struct pm_db_res *res)
{
    struct chat_req *r = arg;
    int i;

    if (res->status != PM_OK) {
        pm_log(PM_LOG_ERROR, "db_error", "stream stop: %s", res->err);
        respond_text(r, 503, NULL, "Database unavailable");
        return;
    }
    for (i = 0; i < res->nrows; i++) {
        const char *pid = pm_db_val(res, i, 0), *user = pm_db_val(res, i, 1);

        pm_log(PM_LOG_INFO, "stream_stopped", "user %s playback %s",
               user ? user : "?", pid);
        announce(r->chat, "stream_stopped", user ? user : "", pid);
    }
    respond_text(r, 200, NULL, "OK");
}

static void
stream_stop(struct chat_req *r, const uint8_t *body, size_t len)
{
    char name[256], hash[PM_SHA256_HEX_SIZE], now[24];
    const char *params[3] = {name, hash, now};

    if (!form_value(body, len, "name", name, sizeof name) || name[0] == '\0') {
        respond_text(r, 200, NULL, "OK"); /* nginx ignores the answer */
        return;
    }
    /* nginx-rtmp names the stream by the key it was published with (a
     * relay may name the playback id): match the stream's own key. */
    pm_sha256_hex(name, strlen(name), hash);
    chat_id_text((int64_t)pm_wall_ms(), now);
    pm_db_query(r->chat->db,
                "UPDATE streams SET ended_at = CAST($3 AS BIGINT) WHERE "
                "ended_at IS NULL AND (playback_id = $1 OR key_hash = $2) "
                "RETURNING playback_id, (SELECT username FROM users WHERE id "
                "= streams.user_id)",
                3, params, stream_stopped, r);
}

static void
stream_checked(void *arg, const struct pm_db_res *res)
{
    struct chat_req *r = arg;
    int64_t started;

    if (res->status != PM_OK) {
        /* Never drop a publisher because the database hiccuped. */
        respond_text(r, 200, NULL, "OK");
        return;
    }
    if (res->nrows == 0) {
        respond_text(r, 403, NULL, "Unknown stream");
        return;
    }
    started = pm_db_int(res, 0, 0, 0);
    if ((int64_t)pm_wall_ms() - started >
        (int64_t)r->chat->conf->max_stream_duration) {
        pm_log(PM_LOG_INFO, "stream_too_long", "playback %s: dropped",
               pm_db_val(res, 0, 1));
        respond_text(r, 403, NULL, "Maximum stream duration reached");
        return;
    }
    respond_text(r, 200, NULL, "OK");
}

static void
stream_update(struct chat_req *r, const uint8_t *body, size_t len)
{
    char name[256], hash[PM_SHA256_HEX_SIZE];
    const char *params[2] = {name, hash};

    if (!form_value(body, len, "name", name, sizeof name) || name[0] == '\0') {
        respond_text(r, 403, NULL, "Unknown stream");
        return;
    }
    pm_sha256_hex(name, strlen(name), hash);
    pm_db_query(r->chat->db,
                "SELECT started_at, playback_id FROM streams WHERE ended_at IS "
                "NULL AND (playback_id = $1 OR key_hash = $2)",
                2, params, stream_checked, r);
}

/* ---- routing ---------------------------------------------------------- */

static bool
is(const struct pm_http_request *req, const char *method, const char *path)
{
    return req->method_len == strlen(method) &&
           memcmp(req->method, method, req->method_len) == 0 &&
           req->path_len == strlen(path) &&
           memcmp(req->path, path, req->path_len) == 0;
}

/* The rtmpUrl shown with a key: chat.rtmp_url, or the Host's name. */
static char *
rtmp_url(const struct chat *chat, const struct pm_http_request *req)
{
    const struct pm_http_header *h = pm_http_header_get(req, "Host");
    size_t n;

    if (chat->conf->rtmp_url != NULL && chat->conf->rtmp_url[0] != '\0')
        return pm_xstrdup(chat->conf->rtmp_url);
    if (h == NULL)
        return pm_xstrdup("rtmp://localhost:1935/live");
    n = h->value_len;
    if (n > 0 && h->value[0] != '[') {
        const char *colon = memchr(h->value, ':', n);

        if (colon != NULL)
            n = (size_t)(colon - h->value);
    }
    return pm_xasprintf("rtmp://%.*s:1935/live", (int)n, h->value);
}

int
chat_streams_route(struct chat *chat, struct pm_conn *c,
                   const struct pm_http_request *req, const uint8_t *body,
                   size_t len)
{
    struct chat_req *r;
    bool start = is(req, "POST", "/stream/start");
    bool stop = is(req, "POST", "/stream/stop");
    bool update = is(req, "POST", "/stream/update");

    if (start || stop || update) {
        r = chat_req_new(chat, c);
        if (!pm_cidr_list_contains(chat->rtmp_allow, pm_conn_ip(c))) {
            respond_text(r, 403, NULL, "Callers not in chat.rtmp_allow");
            return PM_OK;
        }
        if (!pm_db_is_up(chat->db)) {
            respond_text(r, start ? 503 : 200, NULL, "Database unavailable");
            return PM_OK;
        }
        if (start)
            stream_start(r, body, len);
        else if (stop)
            stream_stop(r, body, len);
        else
            stream_update(r, body, len);
        return PM_OK;
    }
    if (is(req, "GET", "/api/broadcast-status")) {
        r = chat_req_new(chat, c);
        pm_db_query(chat->db,
                    "SELECT count(*) FROM streams WHERE ended_at IS NULL", 0,
                    NULL, status_counted, r);
        return PM_OK;
    }
    if (is(req, "GET", "/api/streams")) {
        r = chat_req_new(chat, c);
        chat_req_auth(r, req, list_streams);
        return PM_OK;
    }
    if (is(req, "POST", "/api/get-stream-key")) {
        r = chat_req_new(chat, c);
        if (chat_req_body(r, body, len) != PM_OK)
            return PM_OK;
        r->s2 = rtmp_url(chat, req);
        chat_req_auth(r, req, get_stream_key);
        return PM_OK;
    }
    return PM_ENOTFOUND;
}
