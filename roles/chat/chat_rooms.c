/*
 * chat_rooms: rooms and their members as cached from the database (a room
 * is loaded with its member ids on first use; later callers for a room
 * being loaded wait for the same query), membership changes, message
 * history pages, and the REST routes /api/rooms and
 * /api/rooms/:room/messages.
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "chat.h"
#include "pm_conn.h"
#include "pm_http.h"
#include "pm_log.h"
#include "pm_util.h"

#define ROOM_TITLE_MAX 80

struct chat_room_waiter {
    chat_room_fn cb;
    void *arg;
    struct chat_room_waiter *next;
};

bool
chat_room_name_valid(const char *name)
{
    size_t n = strlen(name), i;

    if (n < 1 || n > CHAT_ROOM_NAME_MAX || !isalnum((unsigned char)name[0]))
        return false;
    for (i = 0; i < n; i++)
        if (!(islower((unsigned char)name[i]) ||
              isdigit((unsigned char)name[i]) || name[i] == '_' ||
              name[i] == '-'))
            return false;
    return true;
}

void
chat_dm_name(int64_t a, int64_t b, char *out, size_t outlen)
{
    snprintf(out, outlen, "dm:%lld:%lld", (long long)(a < b ? a : b),
             (long long)(a < b ? b : a));
}

bool
chat_room_has(const struct chat_room *room, int64_t user_id)
{
    struct chat_member *m;

    HASH_FIND(hh, room->members, &user_id, sizeof user_id, m);
    return m != NULL;
}

void
chat_room_add_member(struct chat_room *room, int64_t user_id)
{
    struct chat_member *m;

    if (chat_room_has(room, user_id))
        return;
    m = pm_xcalloc(1, sizeof *m);
    m->user_id = user_id;
    HASH_ADD(hh, room->members, user_id, sizeof m->user_id, m);
    room->nmembers++;
}

void
chat_room_remove_member(struct chat_room *room, int64_t user_id)
{
    struct chat_member *m;

    HASH_FIND(hh, room->members, &user_id, sizeof user_id, m);
    if (m == NULL)
        return;
    HASH_DEL(room->members, m);
    free(m);
    room->nmembers--;
}

static void
room_free(struct chat_room *room)
{
    struct chat_member *m, *tmp;

    HASH_ITER(hh, room->members, m, tmp)
    {
        HASH_DEL(room->members, m);
        free(m);
    }
    free(room->name);
    free(room->title);
    free(room);
}

void
chat_rooms_free(struct chat *chat)
{
    struct chat_room *room, *tmp;

    HASH_ITER(hh, chat->rooms, room, tmp)
    {
        struct chat_room_waiter *w;

        while ((w = room->waiters) != NULL) {
            room->waiters = w->next;
            free(w);
        }
        HASH_DEL(chat->rooms, room);
        room_free(room);
    }
}

struct room_load {
    struct chat *chat;
    char *name;
};

static void
room_loaded(void *arg, const struct pm_db_res *res)
{
    struct room_load *ld = arg;
    struct chat *chat = ld->chat;
    struct chat_room *room;
    struct chat_room_waiter *w;
    int status = PM_OK, i;

    HASH_FIND_STR(chat->rooms, ld->name, room);
    free(ld->name);
    free(ld);
    PM_ASSERT(room != NULL && !room->loaded);
    if (res->status != PM_OK) {
        status = PM_EUNAVAIL;
        if (res->status != PM_EUNAVAIL)
            pm_log(PM_LOG_ERROR, "db_error", "loading room %s: %s", room->name,
                   res->err);
    } else if (res->nrows == 0) {
        status = PM_ENOTFOUND;
    } else {
        room->id = pm_db_int(res, 0, 0, 0);
        room->title =
            pm_xstrdup(pm_db_val(res, 0, 1) ? pm_db_val(res, 0, 1) : "");
        room->dm = pm_db_val(res, 0, 2) != NULL &&
                   strcmp(pm_db_val(res, 0, 2), "dm") == 0;
        for (i = 0; i < res->nrows; i++)
            if (pm_db_val(res, i, 3) != NULL)
                chat_room_add_member(room, pm_db_int(res, i, 3, 0));
        room->loaded = true;
    }
    if (status != PM_OK)
        HASH_DEL(chat->rooms, room);
    /* Waiters in arrival order; the list is detached first. */
    w = room->waiters;
    room->waiters = NULL;
    while (w != NULL) {
        struct chat_room_waiter *next = w->next;

        w->cb(w->arg, status == PM_OK ? room : NULL, status);
        free(w);
        w = next;
    }
    if (status != PM_OK)
        room_free(room);
}

void
chat_room_get(struct chat *chat, const char *name, chat_room_fn cb, void *arg)
{
    struct chat_room *room;
    struct chat_room_waiter *w, **tail;
    struct room_load *ld;
    const char *params[1] = {name};

    HASH_FIND_STR(chat->rooms, name, room);
    if (room != NULL && room->loaded) {
        cb(arg, room, PM_OK);
        return;
    }
    if (room == NULL) {
        if (!pm_db_is_up(chat->db)) {
            cb(arg, NULL, PM_EUNAVAIL);
            return;
        }
        room = pm_xcalloc(1, sizeof *room);
        room->name = pm_xstrdup(name);
        HASH_ADD_KEYPTR(hh, chat->rooms, room->name, strlen(room->name), room);
        ld = pm_xmalloc(sizeof *ld);
        ld->chat = chat;
        ld->name = pm_xstrdup(name);
        pm_db_query(chat->db,
                    "SELECT r.id, r.title, r.kind, m.user_id FROM rooms r "
                    "LEFT JOIN memberships m ON m.room_id = r.id "
                    "WHERE r.name = $1",
                    1, params, room_loaded, ld);
    }
    w = pm_xcalloc(1, sizeof *w);
    w->cb = cb;
    w->arg = arg;
    for (tail = &room->waiters; *tail != NULL; tail = &(*tail)->next)
        ;
    *tail = w;
}

/* ---- messages and history ------------------------------------------- */

cJSON *
chat_message_json(int64_t id, const char *room, const char *from,
                  const char *body, int64_t ts, const char *client_id)
{
    cJSON *m = cJSON_CreateObject();

    cJSON_AddNumberToObject(m, "id", (double)id);
    cJSON_AddStringToObject(m, "room", room);
    if (from != NULL)
        cJSON_AddStringToObject(m, "from", from);
    else
        cJSON_AddNullToObject(m, "from"); /* the sender deleted the account */
    cJSON_AddStringToObject(m, "body", body);
    cJSON_AddNumberToObject(m, "ts", (double)ts);
    if (client_id != NULL)
        cJSON_AddStringToObject(m, "client_id", client_id);
    else
        cJSON_AddNullToObject(m, "client_id");
    return m;
}

struct history {
    chat_history_fn cb;
    void *arg;
    char *room;
    int64_t limit;
    bool newer; /* an after= page, ascending */
};

static void
history_done(void *arg, const struct pm_db_res *res)
{
    struct history *h = arg;
    cJSON *msgs;
    int n, i;
    bool more;

    if (res->status != PM_OK) {
        if (res->status != PM_EUNAVAIL)
            pm_log(PM_LOG_ERROR, "db_error", "history: %s", res->err);
        h->cb(h->arg, PM_EUNAVAIL, NULL, false);
        goto out;
    }
    more = res->nrows > h->limit;
    n = more ? (int)h->limit : res->nrows;
    msgs = cJSON_CreateArray();
    /* Rows come newest first for a backward page: emit oldest first. */
    for (i = 0; i < n; i++) {
        int row = h->newer ? i : n - 1 - i;

        cJSON_AddItemToArray(
            msgs,
            chat_message_json(
                pm_db_int(res, row, 0, 0), h->room, pm_db_val(res, row, 1),
                pm_db_val(res, row, 2) ? pm_db_val(res, row, 2) : "",
                pm_db_int(res, row, 3, 0), pm_db_val(res, row, 4)));
    }
    h->cb(h->arg, PM_OK, msgs, more);
out:
    free(h->room);
    free(h);
}

void
chat_history(struct chat *chat, const struct chat_room *room, int64_t before,
             int64_t after, int64_t limit, chat_history_fn cb, void *arg)
{
    struct history *h = pm_xcalloc(1, sizeof *h);
    char rid[CHAT_ID_SIZE], lim[24], cur[24];
    const char *params[3] = {rid, lim, cur};
    const char *sql;

    if (limit <= 0)
        limit = chat->conf->history_limit;
    if (limit > CHAT_HISTORY_MAX)
        limit = CHAT_HISTORY_MAX;
    h->cb = cb;
    h->arg = arg;
    h->room = pm_xstrdup(room->name);
    h->limit = limit;
    h->newer = after > 0 && before <= 0;
    chat_id_text(room->id, rid);
    chat_id_text(limit + 1, lim);
    snprintf(cur, sizeof cur, "%lld",
             (long long)(h->newer     ? after
                         : before > 0 ? before
                                      : 0));
#define HISTORY_COLS                                                           \
    "SELECT m.id, u.username, m.body, m.created_at, m.client_id "              \
    "FROM messages m LEFT JOIN users u ON u.id = m.sender_id "                 \
    "WHERE m.room_id = $1 "
    if (h->newer)
        sql = HISTORY_COLS "AND m.id > CAST($3 AS BIGINT) ORDER BY m.id ASC "
                           "LIMIT CAST($2 AS INTEGER)";
    else if (before > 0)
        sql = HISTORY_COLS "AND m.id < CAST($3 AS BIGINT) ORDER BY m.id DESC "
                           "LIMIT CAST($2 AS INTEGER)";
    else
        sql = HISTORY_COLS "ORDER BY m.id DESC LIMIT CAST($2 AS INTEGER)";
#undef HISTORY_COLS
    pm_db_query(chat->db, sql, h->newer || before > 0 ? 3 : 2, params,
                history_done, h);
}

/* ---- GET /api/rooms --------------------------------------------------- */

static void
rooms_listed(void *arg, const struct pm_db_res *res)
{
    struct chat_req *r = arg;
    cJSON *o, *arr;
    int i;

    if (!chat_db_ok(r, res))
        return;
    o = cJSON_CreateObject();
    arr = cJSON_AddArrayToObject(o, "rooms");
    for (i = 0; i < res->nrows; i++) {
        cJSON *room = cJSON_CreateObject();
        const char *kind = pm_db_val(res, i, 2);
        bool dm = kind != NULL && strcmp(kind, "dm") == 0;

        cJSON_AddStringToObject(room, "id", pm_db_val(res, i, 0));
        if (!dm)
            cJSON_AddStringToObject(room, "title",
                                    pm_db_val(res, i, 1) ? pm_db_val(res, i, 1)
                                                         : "");
        cJSON_AddStringToObject(room, "kind", dm ? "dm" : "room");
        if (dm) {
            if (pm_db_val(res, i, 5) != NULL)
                cJSON_AddStringToObject(room, "with", pm_db_val(res, i, 5));
            else
                cJSON_AddNullToObject(room, "with");
        } else {
            cJSON_AddNumberToObject(room, "members",
                                    (double)pm_db_int(res, i, 3, 0));
        }
        cJSON_AddBoolToObject(room, "joined", pm_db_int(res, i, 4, 0) == 1);
        cJSON_AddItemToArray(arr, room);
    }
    chat_reply(r, 200, o);
}

static void
list_rooms(struct chat_req *r)
{
    char id[CHAT_ID_SIZE];
    const char *params[1] = {id};

    chat_id_text(r->acct.id, id);
    pm_db_query(
        r->chat->db,
        "SELECT r.name, r.title, r.kind, "
        "(SELECT count(*) FROM memberships m WHERE m.room_id = r.id), "
        "CASE WHEN EXISTS (SELECT 1 FROM memberships m WHERE m.room_id = r.id "
        "AND m.user_id = CAST($1 AS BIGINT)) THEN 1 ELSE 0 END, "
        "(SELECT u.username FROM memberships m JOIN users u ON u.id = "
        "m.user_id WHERE m.room_id = r.id AND m.user_id <> CAST($1 AS BIGINT) "
        "LIMIT 1) "
        "FROM rooms r WHERE r.kind = 'room' OR r.id IN (SELECT room_id FROM "
        "memberships WHERE user_id = CAST($1 AS BIGINT)) "
        "ORDER BY r.kind DESC, r.name",
        1, params, rooms_listed, r);
}

/* ---- POST /api/rooms --------------------------------------------------- */

static void
room_created(void *arg, const struct pm_db_res *res)
{
    struct chat_req *r = arg;
    cJSON *o, *room;

    if (res->status == PM_ECONFLICT) {
        chat_reply_error(r, 409, "Room already exists");
        return;
    }
    if (!chat_db_ok(r, res))
        return;
    pm_log(PM_LOG_INFO, "room_created", "room %s by %s", r->s1, r->acct.name);
    o = cJSON_CreateObject();
    room = cJSON_AddObjectToObject(o, "room");
    cJSON_AddStringToObject(room, "id", r->s1);
    cJSON_AddStringToObject(room, "title", r->s2);
    cJSON_AddStringToObject(room, "kind", "room");
    cJSON_AddNumberToObject(room, "members", 1);
    cJSON_AddBoolToObject(room, "joined", true);
    chat_reply(r, 201, o);
}

static void
create_room(struct chat_req *r)
{
    const char *name = chat_body_str(r, "name");
    const char *title = chat_body_str(r, "title");
    char id[CHAT_ID_SIZE], now[24];
    const char *p1[4], *p2[3];
    struct pm_db_stmt stmts[2];
    size_t i, n = 0;

    if (name == NULL || !chat_room_name_valid(name)) {
        chat_reply_error(r, 400, "Invalid room name");
        return;
    }
    r->s1 = pm_xstrdup(name);
    r->s2 = pm_xstrdup(title != NULL ? title : name);
    /* Title: at most ROOM_TITLE_MAX characters, no '<' or '>'. */
    for (i = 0; r->s2[i] != '\0'; i++) {
        if ((r->s2[i] & 0xc0) != 0x80 && n++ == ROOM_TITLE_MAX) {
            r->s2[i] = '\0';
            break;
        }
        if (r->s2[i] == '<' || r->s2[i] == '>')
            r->s2[i] = ' ';
    }
    chat_id_text(r->acct.id, id);
    snprintf(now, sizeof now, "%llu", (unsigned long long)pm_wall_ms());
    p1[0] = r->s1;
    p1[1] = r->s2;
    p1[2] = id;
    p1[3] = now;
    p2[0] = r->s1;
    p2[1] = id;
    p2[2] = now;
    stmts[0] = (struct pm_db_stmt){"INSERT INTO rooms (name, title, kind, "
                                   "created_by, created_at) VALUES ($1, $2, "
                                   "'room', $3, $4)",
                                   4, p1};
    stmts[1] = (struct pm_db_stmt){"INSERT INTO memberships (room_id, user_id, "
                                   "joined_at) SELECT id, $2, $3 FROM rooms "
                                   "WHERE name = $1",
                                   3, p2};
    pm_db_txn(r->chat->db, stmts, 2, room_created, r);
}

/* ---- GET /api/rooms/:room/messages ------------------------------------ */

static void
history_replied(void *arg, int status, cJSON *messages, bool more)
{
    struct chat_req *r = arg;
    cJSON *o;

    if (status != PM_OK) {
        chat_reply_db_error(r, NULL);
        return;
    }
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "room", r->arg);
    cJSON_AddItemToObject(o, "messages", messages);
    cJSON_AddBoolToObject(o, "more", more);
    chat_reply(r, 200, o);
}

static void
messages_room(void *arg, struct chat_room *room, int status)
{
    struct chat_req *r = arg;

    if (status == PM_ENOTFOUND) {
        chat_reply_error(r, 404, "Room not found");
        return;
    }
    if (status != PM_OK) {
        chat_reply_db_error(r, NULL);
        return;
    }
    if (room->dm && !chat_room_has(room, r->acct.id)) {
        chat_reply_error(r, 403, "Not a member of this room");
        return;
    }
    chat_history(r->chat, room, r->n1, r->n2, r->n3, history_replied, r);
}

/* A non-negative integer query parameter; -1 when malformed. */
static int64_t
query_int(const struct pm_http_request *req, const char *name)
{
    char buf[CHAT_ID_SIZE], *end;
    long long n;

    if (pm_http_query_param(req, name, buf, sizeof buf) != PM_OK)
        return 0;
    n = strtoll(buf, &end, 10);
    return *end != '\0' || end == buf || n < 0 ? -1 : n;
}

static void
get_messages(struct chat_req *r)
{
    chat_room_get(r->chat, r->arg, messages_room, r);
}

static bool
method_is(const struct pm_http_request *req, const char *m)
{
    return req->method_len == strlen(m) &&
           memcmp(req->method, m, req->method_len) == 0;
}

int
chat_rooms_route(struct chat *chat, struct pm_conn *c,
                 const struct pm_http_request *req, const uint8_t *body,
                 size_t len)
{
    static const char rooms[] = "/api/rooms";
    static const char msgs[] = "/messages";
    struct chat_req *r;
    const char *p = req->path;
    size_t n = req->path_len;

    if (n == sizeof rooms - 1 && memcmp(p, rooms, n) == 0) {
        bool get = method_is(req, "GET");

        if (!get && !method_is(req, "POST"))
            return PM_ENOTFOUND;
        r = chat_req_new(chat, c);
        if (chat_req_body(r, body, len) != PM_OK)
            return PM_OK;
        chat_req_auth(r, req, get ? list_rooms : create_room);
        return PM_OK;
    }
    if (n > sizeof rooms + sizeof msgs - 2 && memcmp(p, rooms, 10) == 0 &&
        p[10] == '/' &&
        memcmp(p + n - (sizeof msgs - 1), msgs, sizeof msgs - 1) == 0 &&
        method_is(req, "GET")) {
        char name[3 * CHAT_ROOM_NAME_MAX];
        int64_t before = query_int(req, "before");
        int64_t after = query_int(req, "after");
        int64_t limit = query_int(req, "limit");

        r = chat_req_new(chat, c);
        if (pm_percent_decode(p + 11, n - 11 - (sizeof msgs - 1), false, name,
                              sizeof name) != PM_OK)
            name[0] = '\0';
        if (before < 0 || after < 0 || limit < 0) {
            chat_reply_error(r, 400,
                             "before, after and limit must be non-negative "
                             "integers");
            return PM_OK;
        }
        r->arg = pm_xstrdup(name);
        r->n1 = before;
        r->n2 = after;
        r->n3 = limit;
        chat_req_auth(r, req, get_messages);
        return PM_OK;
    }
    return PM_ENOTFOUND;
}
