/*
 * chat_ws: the native WebSocket protocol (docs/chat.md): authentication
 * by ?token= or a first "auth" message, sessions grouped by user for
 * multi-device presence, room membership, messages that are acknowledged
 * only once committed (with client_id making a resend idempotent),
 * DMs, throttled typing, forward-only read markers and history pages.
 *
 * A session is referenced by every operation it has in flight (a
 * database query, a room load) and freed when it is closed and the last
 * of them has returned; callbacks of a closed session send nothing.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "chat.h"
#include "pm_conn.h"
#include "pm_http.h"
#include "pm_jwt.h"
#include "pm_log.h"
#include "pm_metrics.h"
#include "pm_server.h"
#include "pm_util.h"

#define PENDING_MAX 32 /* messages queued while authenticating */
#define CLIENT_ID_MAX 64
#define CLOSE_UNAUTHORIZED 4401

struct chat_typing {
    int64_t room_id;
    uint64_t last_ms;
    UT_hash_handle hh;
};

struct pending_msg {
    char *data;
    size_t len;
    struct pending_msg *next;
};

/* A session plus what a protocol operation needs across a callback. */
struct op {
    struct chat_session *s;
    cJSON *req; /* the client's message (owned) */
    struct chat_room *room;
    char *client_id; /* copy of req's client_id, or NULL */
    char *body;
    char room_name[64];
    int64_t n;
    /* The sender, copied: the session may close (and lose its user)
     * while the op waits for the database. */
    int64_t uid;
    char uname[CHAT_NAME_MAX + 1];
};

static void session_unref(struct chat_session *s);
static void handle(struct chat_session *s, cJSON *msg);

/* ---- sending ------------------------------------------------------- */

static void
send_json(struct chat_session *s, const cJSON *json)
{
    if (!s->closed)
        pm_conn_ws_send_json(s->c, json);
}

cJSON *
chat_ws_error_json(const char *code, const char *message, const char *client_id)
{
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "type", "error");
    cJSON_AddStringToObject(o, "code", code);
    cJSON_AddStringToObject(o, "message", message);
    if (client_id != NULL)
        cJSON_AddStringToObject(o, "client_id", client_id);
    return o;
}

static void
send_error(struct chat_session *s, const char *code, const char *message,
           const char *client_id)
{
    cJSON *o = chat_ws_error_json(code, message, client_id);

    send_json(s, o);
    cJSON_Delete(o);
}

static void
send_user_text(struct chat *chat, struct chat_user *u, const char *text,
               size_t len)
{
    struct chat_session *s;

    for (s = u->sessions; s != NULL; s = s->next) {
        if (s->closed)
            continue;
        pm_conn_ws_send(s->c, PM_WS_TEXT, text, len);
        (*chat->stats.deliveries)++;
    }
}

void
chat_room_broadcast(struct chat *chat, const struct chat_room *room,
                    const cJSON *json, int64_t except_user)
{
    char *text = cJSON_PrintUnformatted(json);
    size_t len = strlen(text);
    struct chat_member *m, *tmp;

    HASH_ITER(hh, room->members, m, tmp)
    {
        struct chat_user *u;

        if (m->user_id == except_user)
            continue;
        HASH_FIND(hh, chat->users, &m->user_id, sizeof m->user_id, u);
        if (u != NULL)
            send_user_text(chat, u, text, len);
    }
    cJSON_free(text);
}

void
chat_broadcast_local(struct chat *chat, const cJSON *json)
{
    char *text = cJSON_PrintUnformatted(json);
    size_t len = strlen(text);
    struct chat_user *u, *tmp;

    HASH_ITER(hh, chat->users, u, tmp)
    send_user_text(chat, u, text, len);
    cJSON_free(text);
}

/* ---- ops ------------------------------------------------------------ */

static struct op *
op_new(struct chat_session *s, cJSON *req)
{
    struct op *op = pm_xcalloc(1, sizeof *op);
    const cJSON *cid = cJSON_GetObjectItemCaseSensitive(req, "client_id");

    op->s = s;
    op->req = req;
    if (s->user != NULL) {
        op->uid = s->user->id;
        pm_strlcpy(op->uname, s->user->name, sizeof op->uname);
    }
    if (cJSON_IsString(cid))
        op->client_id = pm_xstrdup(cid->valuestring);
    s->refs++;
    return op;
}

static void
op_free(struct op *op)
{
    struct chat_session *s = op->s;

    cJSON_Delete(op->req);
    free(op->client_id);
    free(op->body);
    free(op);
    session_unref(s);
}

static void
op_error(struct op *op, const char *code, const char *message)
{
    send_error(op->s, code, message, op->client_id);
    op_free(op);
}

static const char *
req_str(const cJSON *req, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(req, name);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A non-negative integer field; 0 when absent, -1 when malformed. */
static int64_t
req_int(const cJSON *req, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(req, name);

    if (v == NULL || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9e15)
        return -1;
    return (int64_t)v->valuedouble;
}

bool
chat_ws_read_check(const cJSON *req, int64_t *message_id,
                   struct chat_ws_error *err)
{
    *message_id = req_int(req, "message_id");
    if (*message_id <= 0) {
        err->code = "bad_request";
        err->message = "message_id must be a positive integer";
        return false;
    }
    return true;
}

bool
chat_ws_history_check(const cJSON *req, int64_t *before, int64_t *after,
                      int64_t *limit, struct chat_ws_error *err)
{
    *before = req_int(req, "before");
    *after = req_int(req, "after");
    *limit = req_int(req, "limit");
    if (*before < 0 || *after < 0 || *limit < 0) {
        err->code = "bad_request";
        err->message = "before, after and limit must be non-negative integers";
        return false;
    }
    return true;
}

/*
 * Resolve op's "room" field to a loaded room and call then(op, room), or
 * answer the error. need_member: the user must be in the room.
 */
typedef void (*room_then_fn)(struct op *op, struct chat_room *room);

struct room_step {
    struct op *op;
    room_then_fn then;
    bool need_member;
};

static void
room_got(void *arg, struct chat_room *room, int status)
{
    struct room_step *st = arg;
    struct op *op = st->op;
    room_then_fn then = st->then;
    bool need_member = st->need_member;

    free(st);
    if (status == PM_ENOTFOUND) {
        op_error(op, "not_found", "no such room");
        return;
    }
    if (status != PM_OK) {
        op_error(op, "unavailable", "the database is unreachable");
        return;
    }
    if (need_member && !chat_room_has(room, op->uid)) {
        op_error(op, "not_member", "join the room first");
        return;
    }
    if (room->dm && !chat_room_has(room, op->uid)) {
        op_error(op, "forbidden", "a direct-message room of other users");
        return;
    }
    op->room = room;
    then(op, room);
}

static void
with_room(struct op *op, const char *name, bool need_member, room_then_fn then)
{
    struct room_step *st = pm_xmalloc(sizeof *st);

    if (name == NULL) {
        free(st);
        op_error(op, "bad_request", "room is required");
        return;
    }
    pm_strlcpy(op->room_name, name, sizeof op->room_name);
    st->op = op;
    st->then = then;
    st->need_member = need_member;
    chat_room_get(op->s->chat, op->room_name, room_got, st);
}

/* ---- join / leave ------------------------------------------------- */

static void
joined(void *arg, const struct pm_db_res *res)
{
    struct op *op = arg;
    struct chat *chat = op->s->chat;
    cJSON *o, *members, *online;
    int i;

    if (res->status != PM_OK) {
        op_error(op, "unavailable", "the database is unreachable");
        return;
    }
    chat_room_add_member(op->room, op->uid);
    chat_fanout_member(chat, op->room->name, op->uid, true);
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "joined");
    cJSON_AddStringToObject(o, "room", op->room->name);
    members = cJSON_AddArrayToObject(o, "members");
    online = cJSON_AddArrayToObject(o, "online");
    for (i = 0; i < res->nrows; i++) {
        const char *name = pm_db_val(res, i, 1);
        int64_t uid = pm_db_int(res, i, 0, 0);

        if (name == NULL)
            continue;
        cJSON_AddItemToArray(members, cJSON_CreateString(name));
        if (chat_user_online(chat, uid))
            cJSON_AddItemToArray(online, cJSON_CreateString(name));
    }
    send_json(op->s, o);
    cJSON_Delete(o);
    op_free(op);
}

static void
join_room(struct op *op, struct chat_room *room)
{
    struct chat *chat = op->s->chat;
    char rid[24], uid[24], now[24];
    const char *p1[3] = {rid, uid, now}, *p2[1] = {rid};
    struct pm_db_stmt stmts[2];

    if (!chat_room_has(room, op->uid) &&
        room->nmembers >= (unsigned)chat->conf->max_room_members) {
        op_error(op, "room_full", "the room has reached its member limit");
        return;
    }
    chat_id_text(room->id, rid);
    chat_id_text(op->uid, uid);
    chat_id_text((int64_t)pm_wall_ms(), now);
    stmts[0] = (struct pm_db_stmt){
        "INSERT INTO memberships (room_id, user_id, joined_at) VALUES ($1, "
        "$2, $3) ON CONFLICT DO NOTHING",
        3, p1};
    stmts[1] = (struct pm_db_stmt){
        "SELECT u.id, u.username FROM memberships m JOIN users u ON u.id = "
        "m.user_id WHERE m.room_id = $1 ORDER BY u.username",
        1, p2};
    pm_db_txn(chat->db, stmts, 2, joined, op);
}

static void
left(void *arg, const struct pm_db_res *res)
{
    struct op *op = arg;
    cJSON *o;

    if (res->status != PM_OK) {
        op_error(op, "unavailable", "the database is unreachable");
        return;
    }
    chat_room_remove_member(op->room, op->uid);
    chat_fanout_member(op->s->chat, op->room->name, op->uid, false);
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "left");
    cJSON_AddStringToObject(o, "room", op->room->name);
    send_json(op->s, o);
    cJSON_Delete(o);
    op_free(op);
}

static void
leave_room(struct op *op, struct chat_room *room)
{
    char rid[24], uid[24];
    const char *params[2] = {rid, uid};

    chat_id_text(room->id, rid);
    chat_id_text(op->uid, uid);
    pm_db_query(op->s->chat->db,
                "DELETE FROM memberships WHERE room_id = $1 AND user_id = $2",
                2, params, left, op);
}

/* ---- messages ------------------------------------------------------ */

static void
ack(struct op *op, int64_t id, int64_t ts)
{
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "type", "ack");
    if (op->client_id != NULL)
        cJSON_AddStringToObject(o, "client_id", op->client_id);
    else
        cJSON_AddNullToObject(o, "client_id");
    cJSON_AddNumberToObject(o, "id", (double)id);
    cJSON_AddNumberToObject(o, "ts", (double)ts);
    cJSON_AddStringToObject(o, "room", op->room->name);
    send_json(op->s, o);
    cJSON_Delete(o);
}

static void
dup_found(void *arg, const struct pm_db_res *res)
{
    struct op *op = arg;

    if (res->status != PM_OK || res->nrows != 1) {
        op_error(op, "unavailable", "the database is unreachable");
        return;
    }
    ack(op, pm_db_int(res, 0, 0, 0), pm_db_int(res, 0, 1, 0));
    op_free(op);
}

static void
stored(void *arg, const struct pm_db_res *res)
{
    struct op *op = arg;
    struct chat *chat = op->s->chat;
    int64_t id;
    cJSON *m;

    if (res->status != PM_OK) {
        op_error(op, "unavailable", "the database is unreachable; not stored");
        return;
    }
    if (res->nrows == 0) {
        /* Already stored under this client_id: ack the first copy. */
        char uid[24];
        const char *params[2] = {uid, op->client_id};

        chat_id_text(op->uid, uid);
        pm_db_query(chat->db,
                    "SELECT id, created_at FROM messages WHERE sender_id = $1 "
                    "AND client_id = $2",
                    2, params, dup_found, op);
        return;
    }
    id = pm_db_int(res, 0, 0, 0);
    (*chat->stats.messages)++;
    ack(op, id, op->n);
    m = chat_message_json(id, op->room->name, op->uname, op->body, op->n,
                          op->client_id);
    cJSON_AddStringToObject(m, "type", "message");
    chat_fanout_room(chat, op->room, m, 0);
    cJSON_Delete(m);
    op_free(op);
}

static void
store_message(struct op *op, struct chat_room *room)
{
    char rid[24], uid[24], ts[24];
    const char *params[5] = {rid, uid, op->body, ts, op->client_id};

    op->n = (int64_t)pm_wall_ms();
    chat_id_text(room->id, rid);
    chat_id_text(op->uid, uid);
    chat_id_text(op->n, ts);
    pm_db_query(op->s->chat->db,
                "INSERT INTO messages (room_id, sender_id, body, created_at, "
                "client_id) VALUES ($1, $2, $3, $4, $5) ON CONFLICT "
                "(sender_id, client_id) DO NOTHING RETURNING id",
                5, params, stored, op);
}

static bool
refuse(struct chat_ws_error *err, const char *code, const char *message)
{
    err->code = code;
    err->message = message;
    return false;
}

bool
chat_ws_message_check(const cJSON *req, int64_t max_message,
                      struct chat_ws_error *err)
{
    const char *body = req_str(req, "body");
    const cJSON *cid = cJSON_GetObjectItemCaseSensitive(req, "client_id");
    size_t chars = 0;
    const char *p;

    if (cid != NULL && !cJSON_IsNull(cid) &&
        (!cJSON_IsString(cid) || strlen(cid->valuestring) == 0 ||
         strlen(cid->valuestring) > CLIENT_ID_MAX))
        return refuse(err, "bad_request",
                      "client_id must be a string of 1-64 bytes");
    if (body == NULL || body[0] == '\0')
        return refuse(err, "bad_request", "body is required");
    for (p = body; *p != '\0'; p++)
        if ((*p & 0xc0) != 0x80)
            chars++;
    if (chars > (size_t)max_message)
        return refuse(err, "too_long",
                      "the message is longer than chat.max_message");
    return true;
}

bool
chat_ws_dm_check(const cJSON *req, int64_t max_message,
                 struct chat_ws_error *err)
{
    const char *to = req_str(req, "to");

    if (to == NULL || !chat_username_valid(to))
        return refuse(err, "bad_request", "to must be a username");
    return chat_ws_message_check(req, max_message, err);
}

/* Body and client_id of a message, checked; false: answered. */
static bool
message_fields(struct op *op)
{
    struct chat_ws_error err;

    if (!chat_ws_message_check(op->req, op->s->chat->conf->max_message, &err)) {
        op_error(op, err.code, err.message);
        return false;
    }
    op->body = pm_xstrdup(req_str(op->req, "body"));
    return true;
}

/* ---- direct messages ------------------------------------------------ */

static void
dm_room_ready(void *arg, struct chat_room *room, int status)
{
    struct op *op = arg;

    if (status != PM_OK) {
        op_error(op, "unavailable", "the database is unreachable");
        return;
    }
    /* The room may have been cached before the memberships existed. */
    if (!chat_room_has(room, op->uid) || !chat_room_has(room, op->n)) {
        chat_room_add_member(room, op->uid);
        chat_room_add_member(room, op->n);
        chat_fanout_member(op->s->chat, room->name, op->uid, true);
        chat_fanout_member(op->s->chat, room->name, op->n, true);
    }
    op->room = room;
    store_message(op, room);
}

static void
dm_created(void *arg, const struct pm_db_res *res)
{
    struct op *op = arg;

    if (res->status != PM_OK) {
        op_error(op, "unavailable", "the database is unreachable");
        return;
    }
    chat_room_get(op->s->chat, op->room_name, dm_room_ready, op);
}

static void
dm_target(void *arg, const struct pm_db_res *res)
{
    struct op *op = arg;
    char a[24], b[24], now[24];
    const char *p1[2] = {op->room_name, now}, *p2[3] = {op->room_name, a, now},
               *p3[3] = {op->room_name, b, now};
    struct pm_db_stmt stmts[3];

    if (res->status != PM_OK) {
        op_error(op, "unavailable", "the database is unreachable");
        return;
    }
    if (res->nrows == 0) {
        op_error(op, "not_found", "no such user");
        return;
    }
    op->n = pm_db_int(res, 0, 0, 0);
    chat_dm_name(op->uid, op->n, op->room_name, sizeof op->room_name);
    chat_id_text(op->uid, a);
    chat_id_text(op->n, b);
    chat_id_text((int64_t)pm_wall_ms(), now);
    stmts[0] = (struct pm_db_stmt){
        "INSERT INTO rooms (name, title, kind, created_at) VALUES ($1, '', "
        "'dm', $2) ON CONFLICT DO NOTHING",
        2, p1};
    stmts[1] = (struct pm_db_stmt){
        "INSERT INTO memberships (room_id, user_id, joined_at) SELECT id, $2, "
        "$3 FROM rooms WHERE name = $1 ON CONFLICT DO NOTHING",
        3, p2};
    stmts[2] = (struct pm_db_stmt){stmts[1].sql, 3, p3};
    pm_db_txn(op->s->chat->db, stmts, 3, dm_created, op);
}

static void
send_dm(struct op *op)
{
    const char *to = req_str(op->req, "to");
    char name[CHAT_NAME_MAX + 1];
    const char *params[1] = {name};
    size_t i;

    struct chat_ws_error err;

    if (!chat_ws_dm_check(op->req, op->s->chat->conf->max_message, &err)) {
        op_error(op, err.code, err.message);
        return;
    }
    op->body = pm_xstrdup(req_str(op->req, "body"));
    for (i = 0; to[i] != '\0' && i < CHAT_NAME_MAX; i++)
        name[i] = (char)(to[i] >= 'A' && to[i] <= 'Z' ? to[i] + 32 : to[i]);
    name[i] = '\0';
    pm_db_query(op->s->chat->db,
                "SELECT id FROM users WHERE username = $1 AND is_active = 1", 1,
                params, dm_target, op);
}

/* ---- typing, read, history ------------------------------------------ */

static void
typing(struct op *op, struct chat_room *room)
{
    struct chat_session *s = op->s;
    struct chat_typing *t;
    uint64_t now = pm_now_ms();
    cJSON *o;

    HASH_FIND(hh, s->typing, &room->id, sizeof room->id, t);
    if (t == NULL) {
        t = pm_xcalloc(1, sizeof *t);
        t->room_id = room->id;
        HASH_ADD(hh, s->typing, room_id, sizeof t->room_id, t);
    } else if (now - t->last_ms < s->chat->conf->typing_interval) {
        op_free(op); /* throttled: dropped silently */
        return;
    }
    t->last_ms = now;
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "typing");
    cJSON_AddStringToObject(o, "room", room->name);
    cJSON_AddStringToObject(o, "user", op->uname);
    chat_fanout_room(s->chat, room, o, op->uid);
    cJSON_Delete(o);
    op_free(op);
}

static void
read_stored(void *arg, const struct pm_db_res *res)
{
    struct op *op = arg;
    cJSON *o;

    if (res->status != PM_OK) {
        op_error(op, "unavailable", "the database is unreachable");
        return;
    }
    if (res->changes > 0) {
        o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "read");
        cJSON_AddStringToObject(o, "room", op->room->name);
        cJSON_AddStringToObject(o, "user", op->uname);
        cJSON_AddNumberToObject(o, "message_id", (double)op->n);
        chat_fanout_room(op->s->chat, op->room, o, 0);
        cJSON_Delete(o);
    }
    op_free(op);
}

static void
mark_read(struct op *op, struct chat_room *room)
{
    char rid[24], uid[24], mid[24];
    const char *params[3] = {rid, uid, mid};
    struct chat_ws_error err;

    if (!chat_ws_read_check(op->req, &op->n, &err)) {
        op_error(op, err.code, err.message);
        return;
    }
    chat_id_text(room->id, rid);
    chat_id_text(op->uid, uid);
    chat_id_text(op->n, mid);
    pm_db_query(op->s->chat->db,
                "INSERT INTO reads (room_id, user_id, message_id) SELECT $1, "
                "$2, $3 WHERE EXISTS (SELECT 1 FROM messages WHERE id = "
                "CAST($3 AS BIGINT) AND room_id = CAST($1 AS BIGINT)) "
                "ON CONFLICT (room_id, user_id) DO UPDATE SET message_id = "
                "excluded.message_id WHERE excluded.message_id > "
                "reads.message_id",
                3, params, read_stored, op);
}

static void
history_sent(void *arg, int status, cJSON *messages, bool more)
{
    struct op *op = arg;
    cJSON *o;

    if (status != PM_OK) {
        op_error(op, "unavailable", "the database is unreachable");
        return;
    }
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "history");
    cJSON_AddStringToObject(o, "room", op->room->name);
    cJSON_AddItemToObject(o, "messages", messages);
    cJSON_AddBoolToObject(o, "more", more);
    send_json(op->s, o);
    cJSON_Delete(o);
    op_free(op);
}

static void
history(struct op *op, struct chat_room *room)
{
    int64_t before, after, limit;
    struct chat_ws_error err;

    if (!chat_ws_history_check(op->req, &before, &after, &limit, &err)) {
        op_error(op, err.code, err.message);
        return;
    }
    chat_history(op->s->chat, room, before, after, limit, history_sent, op);
}

static void
message_room(struct op *op, struct chat_room *room)
{
    store_message(op, room);
}

/* ---- dispatch -------------------------------------------------------- */

static const struct {
    const char *name;
    enum chat_ws_type type;
} ws_types[] = {
    {"message", CHAT_WS_MESSAGE}, {"join", CHAT_WS_JOIN},
    {"leave", CHAT_WS_LEAVE},     {"dm", CHAT_WS_DM},
    {"typing", CHAT_WS_TYPING},   {"read", CHAT_WS_READ},
    {"history", CHAT_WS_HISTORY}, {"ping", CHAT_WS_PING},
    {"auth", CHAT_WS_AUTH},
};

enum chat_ws_type
chat_ws_type_of(const cJSON *msg)
{
    const char *type = req_str(msg, "type");
    size_t i;

    if (type == NULL)
        return CHAT_WS_NO_TYPE;
    for (i = 0; i < sizeof ws_types / sizeof ws_types[0]; i++)
        if (strcmp(type, ws_types[i].name) == 0)
            return ws_types[i].type;
    return CHAT_WS_UNKNOWN;
}

cJSON *
chat_ws_parse(const uint8_t *data, size_t len)
{
    cJSON *msg = cJSON_ParseWithLength((const char *)data, len);

    if (!cJSON_IsObject(msg)) {
        cJSON_Delete(msg);
        return NULL;
    }
    return msg;
}

const char *
chat_ws_auth_token(const cJSON *msg)
{
    if (chat_ws_type_of(msg) != CHAT_WS_AUTH)
        return NULL;
    return req_str(msg, "token");
}

static void
handle(struct chat_session *s, cJSON *msg)
{
    enum chat_ws_type type = chat_ws_type_of(msg);
    struct op *op = op_new(s, msg);
    const char *room = req_str(msg, "room");

    if (type == CHAT_WS_NO_TYPE) {
        op_error(op, "bad_request", "every message needs a string type");
    } else if ((type == CHAT_WS_MESSAGE || type == CHAT_WS_DM) &&
               pm_db_pending(s->chat->db) >=
                   (size_t)s->chat->conf->max_backlog) {
        /* Backpressure: the writer is this far behind; nothing stored. */
        op_error(op, "overloaded", "the server is busy; send again later");
    } else if (type == CHAT_WS_MESSAGE) {
        if (message_fields(op))
            with_room(op, room, true, message_room);
    } else if (type == CHAT_WS_JOIN) {
        with_room(op, room, false, join_room);
    } else if (type == CHAT_WS_LEAVE) {
        with_room(op, room, true, leave_room);
    } else if (type == CHAT_WS_DM) {
        send_dm(op);
    } else if (type == CHAT_WS_TYPING) {
        with_room(op, room, true, typing);
    } else if (type == CHAT_WS_READ) {
        with_room(op, room, true, mark_read);
    } else if (type == CHAT_WS_HISTORY) {
        with_room(op, room, false, history);
    } else if (type == CHAT_WS_PING) {
        cJSON *o = cJSON_CreateObject();

        cJSON_AddStringToObject(o, "type", "pong");
        send_json(s, o);
        cJSON_Delete(o);
        op_free(op);
    } else if (type == CHAT_WS_AUTH) {
        op_error(op, "bad_request", "already authenticated");
    } else {
        op_error(op, "bad_request", "unknown message type");
    }
}

/* ---- sessions and authentication ------------------------------------- */

static void
session_unref(struct chat_session *s)
{
    struct pending_msg *p;

    if (--s->refs > 0)
        return;
    while ((p = s->pending) != NULL) {
        s->pending = p->next;
        free(p->data);
        free(p);
    }
    free(s);
}

static void
user_attach(struct chat *chat, struct chat_session *s, int64_t id,
            const char *name)
{
    struct chat_user *u;

    HASH_FIND(hh, chat->users, &id, sizeof id, u);
    if (u == NULL) {
        u = pm_xcalloc(1, sizeof *u);
        u->id = id;
        pm_strlcpy(u->name, name, sizeof u->name);
        HASH_ADD(hh, chat->users, id, sizeof u->id, u);
        (*chat->stats.online_users)++;
        chat_presence_local(chat, u->id, u->name, true);
    }
    s->user = u;
    s->next = u->sessions;
    if (u->sessions != NULL)
        u->sessions->prev = s;
    u->sessions = s;
    u->nsessions++;
}

static void
user_detach(struct chat *chat, struct chat_session *s)
{
    struct chat_user *u = s->user;

    if (u == NULL)
        return;
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        u->sessions = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    s->user = NULL;
    if (--u->nsessions > 0)
        return;
    HASH_DEL(chat->users, u);
    (*chat->stats.online_users)--;
    chat_presence_local(chat, u->id, u->name, false);
    free(u);
}

struct welcome {
    struct chat_session *s;
    int64_t id, ver;
};

static void
welcome_rooms(void *arg, const struct pm_db_res *res)
{
    struct welcome *w = arg;
    struct chat_session *s = w->s;
    struct chat *chat = s->chat;
    struct pending_msg *p;
    cJSON *o, *rooms, *online;
    int i;

    free(w);
    if (s->closed) {
        session_unref(s);
        return;
    }
    if (res->status != PM_OK) {
        pm_conn_ws_close(s->c, 1011, "database unavailable");
        session_unref(s);
        return;
    }
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "welcome");
    cJSON_AddStringToObject(o, "user", s->user->name);
    rooms = cJSON_AddArrayToObject(o, "rooms");
    for (i = 0; i < res->nrows; i++) {
        cJSON *r = cJSON_CreateObject();
        bool dm =
            pm_db_val(res, i, 2) && strcmp(pm_db_val(res, i, 2), "dm") == 0;

        cJSON_AddStringToObject(r, "id", pm_db_val(res, i, 0));
        cJSON_AddStringToObject(r, "kind", dm ? "dm" : "room");
        if (dm) {
            if (pm_db_val(res, i, 3) != NULL)
                cJSON_AddStringToObject(r, "with", pm_db_val(res, i, 3));
            else
                cJSON_AddNullToObject(r, "with");
        } else {
            cJSON_AddStringToObject(
                r, "title", pm_db_val(res, i, 1) ? pm_db_val(res, i, 1) : "");
        }
        cJSON_AddBoolToObject(r, "joined", true);
        cJSON_AddItemToArray(rooms, r);
    }
    online = cJSON_AddArrayToObject(o, "online");
    chat_online_list(chat, online);
    send_json(s, o);
    cJSON_Delete(o);
    s->authing = false;
    /* What the client sent before it was welcomed, in order. */
    while ((p = s->pending) != NULL && !s->closed) {
        cJSON *msg = cJSON_ParseWithLength(p->data, p->len);

        s->pending = p->next;
        free(p->data);
        free(p);
        if (cJSON_IsObject(msg)) {
            handle(s, msg);
        } else {
            cJSON_Delete(msg);
            send_error(s, "bad_request", "not a JSON object", NULL);
        }
    }
    session_unref(s);
}

static void
account_loaded(void *arg, const struct pm_db_res *res)
{
    struct welcome *w = arg;
    struct chat_session *s = w->s;
    char uid[24];
    const char *params[1] = {uid};

    if (res->status == PM_OK)
        chat_token_floor(s->chat, w->id,
                         res->nrows == 0 ? INT64_MAX
                                         : pm_db_int(res, 0, 2, INT64_MAX));
    if (s->closed || res->status != PM_OK || res->nrows == 0 ||
        pm_db_int(res, 0, 2, -1) != w->ver) {
        if (!s->closed)
            pm_conn_ws_close(s->c,
                             res->status == PM_OK ? CLOSE_UNAUTHORIZED : 1011,
                             res->status == PM_OK ? "invalid or expired token"
                                                  : "database unavailable");
        free(w);
        session_unref(s);
        return;
    }
    user_attach(s->chat, s, w->id, pm_db_val(res, 0, 1));
    chat_id_text(w->id, uid);
    pm_db_query(s->chat->db,
                "SELECT r.name, r.title, r.kind, (SELECT u.username FROM "
                "memberships m2 JOIN users u ON u.id = m2.user_id WHERE "
                "m2.room_id = r.id AND m2.user_id <> m.user_id LIMIT 1) "
                "FROM memberships m JOIN rooms r ON r.id = m.room_id "
                "WHERE m.user_id = $1 ORDER BY r.kind DESC, r.name",
                1, params, welcome_rooms, w);
}

/* Verify tok and start loading the account; false: refused. */
static bool
authenticate(struct chat_session *s, const char *tok, size_t len)
{
    struct welcome *w;
    char err[PM_ERRMSG_SIZE], uid[24];
    const char *params[1] = {uid};
    int64_t id, ver;

    if (chat_token_check(s->chat, tok, len, &id, &ver, err, sizeof err) !=
        PM_OK) {
        pm_log(PM_LOG_DEBUG, "token_refused", "%s", err);
        return false;
    }
    if (s->auth_timer != NULL)
        event_del(s->auth_timer);
    s->authing = true;
    w = pm_xmalloc(sizeof *w);
    w->s = s;
    w->id = id;
    w->ver = ver;
    s->refs++;
    chat_id_text(id, uid);
    pm_db_query(s->chat->db,
                "SELECT id, username, token_version FROM users WHERE id = $1 "
                "AND is_active = 1",
                1, params, account_loaded, w);
    return true;
}

static void
auth_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct chat_session *s = arg;

    (void)fd;
    (void)what;
    if (!s->closed && s->user == NULL && !s->authing)
        pm_conn_ws_close(s->c, CLOSE_UNAUTHORIZED, "authentication timeout");
}

int
chat_ws_upgrade(struct chat *chat, struct pm_conn *c,
                const struct pm_http_request *req, int *status)
{
    struct chat_session *s;
    char *tok;

    if (req->path_len != 3 || memcmp(req->path, "/ws", 3) != 0) {
        *status = 404;
        return PM_ENOTFOUND;
    }
    if (!pm_db_is_up(chat->db)) {
        *status = 503;
        return PM_EUNAVAIL;
    }
    s = pm_xcalloc(1, sizeof *s);
    s->chat = chat;
    s->c = c;
    s->refs = 1;
    tok = pm_xmalloc(PM_JWT_MAX_LEN + 1);
    if (pm_http_query_param(req, "token", tok, PM_JWT_MAX_LEN + 1) == PM_OK &&
        tok[0] != '\0') {
        if (!authenticate(s, tok, strlen(tok))) {
            free(tok);
            free(s);
            *status = 401;
            return PM_EINVAL;
        }
    }
    free(tok);
    pm_conn_set_data(c, s);
    (*chat->stats.sessions)++;
    return PM_OK;
}

void
chat_ws_open(struct chat *chat, struct pm_conn *c)
{
    struct chat_session *s = pm_conn_data(c);
    struct timeval tv = {CHAT_AUTH_TIMEOUT_MS / 1000, 0};

    if (s->authing)
        return;
    s->auth_timer = evtimer_new(pm_server_base(chat->srv), auth_timeout, s);
    evtimer_add(s->auth_timer, &tv);
}

static void
queue_pending(struct chat_session *s, const uint8_t *data, size_t len)
{
    struct pending_msg *p, **tail;
    int n = 0;

    for (tail = &s->pending; *tail != NULL; tail = &(*tail)->next)
        n++;
    if (n >= PENDING_MAX) {
        send_error(s, "rate_limited", "too many messages before welcome", NULL);
        return;
    }
    p = pm_xcalloc(1, sizeof *p);
    p->data = pm_xmalloc(len);
    memcpy(p->data, data, len);
    p->len = len;
    *tail = p;
}

void
chat_ws_message(struct chat *chat, struct pm_conn *c, const uint8_t *data,
                size_t len)
{
    struct chat_session *s = pm_conn_data(c);
    cJSON *msg;

    if (s->authing) {
        queue_pending(s, data, len);
        return;
    }
    msg = chat_ws_parse(data, len);
    if (msg == NULL) {
        send_error(s, "bad_request", "not a JSON object", NULL);
        return;
    }
    if (s->user == NULL) {
        const char *tok = chat_ws_auth_token(msg);

        if (tok == NULL) {
            pm_conn_ws_close(c, CLOSE_UNAUTHORIZED, "authenticate first");
        } else if (!authenticate(s, tok, strlen(tok))) {
            pm_conn_ws_close(c, CLOSE_UNAUTHORIZED, "invalid or expired token");
        }
        cJSON_Delete(msg);
        return;
    }
    handle(s, msg);
}

void
chat_ws_limited(struct chat *chat, struct pm_conn *c)
{
    send_error(pm_conn_data(c), "rate_limited", "too many messages; slow down",
               NULL);
}

void
chat_ws_close(struct chat *chat, struct pm_conn *c)
{
    struct chat_session *s = pm_conn_data(c);
    struct chat_typing *t, *tmp;

    if (s == NULL)
        return;
    s->closed = true;
    if (s->auth_timer != NULL)
        event_free(s->auth_timer);
    s->auth_timer = NULL;
    HASH_ITER(hh, s->typing, t, tmp)
    {
        HASH_DEL(s->typing, t);
        free(t);
    }
    user_detach(chat, s);
    (*chat->stats.sessions)--;
    pm_conn_set_data(c, NULL);
    session_unref(s);
}

void
chat_user_kick(struct chat *chat, int64_t id, int64_t ver, const char *reason)
{
    struct chat_user *u;
    struct chat_session *s;
    int n;

    chat_token_floor(chat, id, ver);
    HASH_FIND(hh, chat->users, &id, sizeof id, u);
    if (u == NULL)
        return;
    /* Each close detaches its session (and the last frees u): look the
     * user up again every time. */
    for (n = u->nsessions; n > 0; n--) {
        HASH_FIND(hh, chat->users, &id, sizeof id, u);
        if (u == NULL)
            return;
        for (s = u->sessions; s != NULL && s->closed; s = s->next)
            ;
        if (s == NULL)
            return;
        pm_conn_ws_close(s->c, CLOSE_UNAUTHORIZED, reason);
    }
}

void
chat_users_free(struct chat *chat)
{
    struct chat_user *u, *tmp;

    /* Sessions were closed (ws_close) before the role is destroyed. */
    HASH_ITER(hh, chat->users, u, tmp)
    {
        HASH_DEL(chat->users, u);
        free(u);
    }
}
