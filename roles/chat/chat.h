/*
 * chat: the chat role's shared state and the functions its modules call
 * on each other (see docs/chat.md for what users see).
 *
 *   chat_role.c      config keys, lifecycle, health/metrics, routing
 *   chat_schema.c    the SQL schema (SQLite and PostgreSQL migrations)
 *   chat_http.c      REST plumbing: bodies, replies, bearer auth, limits
 *   chat_accounts.c  the FaltuBaat account routes
 *   chat_rooms.c     the room cache, membership, messages, history
 *   chat_ws.c        the native WebSocket protocol, presence, typing
 *   chat_streams.c   stream keys and the nginx-rtmp callbacks
 *   chat_cluster.c   Redis fan-out across instances, presence
 *   chat_backup.c    SQLite snapshots to S3, restore at start
 *   chat_web.h       the embedded web client (served by pm_asset)
 *
 * Everything runs on the loop thread; database work is asynchronous
 * (pm_db) and password hashing runs on the worker pool.
 */
#ifndef CHAT_H
#define CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uthash.h>

#include "pm_config.h"
#include "pm_db.h"
#include "pm_passwd.h"
#include "pm_ratelimit.h"

struct cJSON;
struct event;
struct pm_cidr_list;
struct pm_conn;
struct pm_http_request;
struct pm_server;

#define CHAT_NAME_MAX 20      /* username characters */
#define CHAT_ROOM_NAME_MAX 40 /* room name characters */
#define CHAT_BODY_MAX 10240   /* JSON request bodies */
#define CHAT_HISTORY_MAX 200  /* messages in one history page */
#define CHAT_AUTH_TIMEOUT_MS 10000

struct chat_conf {
    uint64_t token_ttl;
    char *sqlite_journal;
    char *sqlite_sync;
    int64_t max_message;
    int64_t max_room_members;
    int64_t max_backlog;
    int64_t history_limit;
    uint64_t typing_interval;
    uint64_t rate_window;
    int64_t rate_max;
    int64_t auth_rate_max;
    int64_t max_streams;
    uint64_t stream_cooldown;
    uint64_t max_stream_duration;
    char *hls_base_url;
    char *rtmp_url;
    char *rtmp_allow;
    bool s3_sync;
    char *s3_bucket;
    char *s3_key;
    uint64_t s3_interval;
    char *s3_endpoint;
    char *region;
};

/* A user as stored (the columns chat_accounts reads). */
struct chat_account {
    int64_t id;
    char name[CHAT_NAME_MAX + 1];
    int64_t ver; /* token version */
    char *first_name, *last_name, *gender, *about, *created_at, *last_login;
    char *hash; /* password hash */
};

struct chat_session;
struct chat_typing;
struct pending_msg;

/* A user with live sessions on this instance. */
struct chat_user {
    int64_t id;
    char name[CHAT_NAME_MAX + 1];
    struct chat_session *sessions;
    int nsessions;
    UT_hash_handle hh;
};

struct chat_member {
    int64_t user_id;
    UT_hash_handle hh;
};

struct chat_room_waiter;

/* A room as cached from the database. */
struct chat_room {
    int64_t id;
    char *name;
    char *title;
    bool dm;
    bool loaded;
    struct chat_member *members;
    unsigned nmembers;
    struct chat_room_waiter *waiters; /* while loading */
    UT_hash_handle hh;                /* chat->rooms, by name */
};

/* One authenticated (or authenticating) WebSocket connection. */
struct chat_session {
    struct chat *chat;
    struct pm_conn *c;
    struct chat_user *user; /* NULL until authenticated */
    struct event *auth_timer;
    struct chat_typing *typing;
    struct pending_msg *pending;      /* sent before the welcome */
    struct chat_session *prev, *next; /* user->sessions */
    int refs;                         /* operations in flight + 1 */
    bool closed;
    bool authing;
};

/* The lowest token version still valid for a user, as known here. */
struct chat_floor {
    int64_t id;
    int64_t ver;
    UT_hash_handle hh;
};

struct chat_rate {
    char key[64];
    struct pm_bucket bucket;
    UT_hash_handle hh;
};

struct chat_stats {
    uint64_t *messages;
    uint64_t *deliveries;
    uint64_t *registrations;
    uint64_t *logins;
    uint64_t *login_failures;
    int64_t *online_users;
    int64_t *sessions;
};

struct chat {
    struct pm_server *srv;
    const struct chat_conf *conf;
    struct pm_db *db;
    char *secret;
    size_t secret_len;
    struct chat_user *users;   /* online here, by id */
    struct chat_room *rooms;   /* cache, by name */
    struct chat_rate *rates;   /* REST limits, by "kind:ip" / "kind:user" */
    struct chat_floor *floors; /* token versions seen, by user id */
    struct pm_cidr_list *rtmp_allow;
    struct chat_cluster *cluster; /* NULL without redis.url */
    struct chat_backup *backup;   /* NULL without chat.s3_sync */
    struct event *sweep;
    struct chat_stats stats;
    bool stopping;
};

/* chat_schema.c */
extern const struct pm_db_migration chat_migrations[];
extern const size_t chat_nmigrations;

/* ---- chat_http.c: one REST request in flight ------------------------ */

struct chat_req;
typedef void (*chat_req_fn)(struct chat_req *r);

struct chat_req {
    struct chat *chat;
    struct pm_conn *c;        /* referenced until the reply */
    struct cJSON *body;       /* parsed JSON body (object) or NULL */
    char *arg;                /* the path parameter (:username, :room) */
    char *query;              /* the query string or NULL */
    struct chat_account acct; /* the authenticated user (chat_req_auth) */
    bool authed;
    chat_req_fn next; /* continuation after an async step */
    /* Scratch for the routes. */
    char *s1, *s2, *s3;
    int64_t n1, n2, n3;
    bool flag;
    bool logout; /* the revoking change issues no new token */
    char hash[PM_PASSWD_HASH_SIZE];
};

struct chat_req *chat_req_new(struct chat *chat, struct pm_conn *c);
void chat_req_free(struct chat_req *r);
/* Reply with a JSON object (taken) or {"error": msg}; frees r. */
void chat_reply(struct chat_req *r, int status, struct cJSON *obj);
void chat_reply_error(struct chat_req *r, int status, const char *msg);
/* Reply 401 with WWW-Authenticate for a bad token; frees r. */
void chat_reply_bad_token(struct chat_req *r);
/* Reply 503: the database is unreachable; frees r. */
void chat_reply_db_error(struct chat_req *r, const struct pm_db_res *res);
/* True when res succeeded; else the 503 is sent (r freed): return. */
bool chat_db_ok(struct chat_req *r, const struct pm_db_res *res);
/* An id as the decimal text pm_db parameters take. */
#define CHAT_ID_SIZE 24
void chat_id_text(int64_t id, char out[CHAT_ID_SIZE]);
/*
 * Parse the body as a JSON object into r->body; PM_OK, or a 400/413
 * reply already sent (and r freed) with PM_EINVAL.
 */
int chat_req_body(struct chat_req *r, const uint8_t *body, size_t len);
/*
 * Authenticate the bearer token of req and load the account, then call
 * next(r) with r->acct filled; every failure is answered here.
 */
void chat_req_auth(struct chat_req *r, const struct pm_http_request *req,
                   chat_req_fn next);
/* Hash (or verify against r->acct.hash) the password pw on the worker
 * pool, then next(r) with r->hash set, or r->flag = match. */
void chat_req_hash(struct chat_req *r, const char *pw, chat_req_fn next);
void chat_req_verify(struct chat_req *r, const char *pw, chat_req_fn next);
/* Take one token from the bucket named kind:who; false when over. */
bool chat_rate_take(struct chat *chat, const char *kind, const char *who,
                    int64_t max);
void chat_rate_sweep(struct chat *chat);
void chat_rate_free(struct chat *chat);
/* String member of r->body, or NULL. */
const char *chat_body_str(const struct chat_req *r, const char *name);

/* ---- chat_accounts.c ------------------------------------------------- */

/* Routes under /api/ for accounts; PM_ENOTFOUND when not one of them. */
int chat_accounts_route(struct chat *chat, struct pm_conn *c,
                        const struct pm_http_request *req, const uint8_t *body,
                        size_t len);
/* Sign a token for acct (malloc'd). */
char *chat_token_issue(struct chat *chat, int64_t id, const char *name,
                       int64_t ver);
/*
 * Check a token: PM_OK with *id and *ver, or PM_EINVAL with the reason.
 * The account itself is looked up by the caller.
 */
int chat_token_check(struct chat *chat, const char *tok, size_t len,
                     int64_t *id, int64_t *ver, char *err, size_t errlen);
/* Tokens of user id older than ver are revoked (known from the account
 * row or a revocation); INT64_MAX revokes all (account deleted). */
void chat_token_floor(struct chat *chat, int64_t id, int64_t ver);
void chat_floors_free(struct chat *chat);
/* The account columns, in the order chat_account_from_row reads them. */
#define CHAT_ACCOUNT_COLS                                                      \
    "id, username, token_version, first_name, last_name, gender, about, "      \
    "created_at, last_login, password"
void chat_account_from_row(struct chat_account *a, const struct pm_db_res *res,
                           int row);
void chat_account_clear(struct chat_account *a);
/* Is name a valid username (^[a-zA-Z0-9_]{3,20}$)? */
bool chat_username_valid(const char *name);

/* ---- chat_rooms.c ---------------------------------------------------- */

typedef void (*chat_room_fn)(void *arg, struct chat_room *room, int status);
/* Get room name (cached, or loaded with its members): status PM_OK,
 * PM_ENOTFOUND, or PM_EUNAVAIL. May call back before returning. */
void chat_room_get(struct chat *chat, const char *name, chat_room_fn cb,
                   void *arg);
bool chat_room_has(const struct chat_room *room, int64_t user_id);
void chat_room_add_member(struct chat_room *room, int64_t user_id);
void chat_room_remove_member(struct chat_room *room, int64_t user_id);
void chat_rooms_free(struct chat *chat);
/* The DM room name for two user ids: "dm:SMALL:LARGE". */
void chat_dm_name(int64_t a, int64_t b, char *out, size_t outlen);
bool chat_room_name_valid(const char *name);
/* The history query and its JSON; cb gets the messages array (taken). */
typedef void (*chat_history_fn)(void *arg, int status, struct cJSON *messages,
                                bool more);
void chat_history(struct chat *chat, const struct chat_room *room,
                  int64_t before, int64_t after, int64_t limit,
                  chat_history_fn cb, void *arg);
/* A message row (id, room, from, body, ts, client_id) as JSON. */
struct cJSON *chat_message_json(int64_t id, const char *room, const char *from,
                                const char *body, int64_t ts,
                                const char *client_id);
int chat_rooms_route(struct chat *chat, struct pm_conn *c,
                     const struct pm_http_request *req, const uint8_t *body,
                     size_t len);

/* ---- chat_ws.c ------------------------------------------------------- */

int chat_ws_upgrade(struct chat *chat, struct pm_conn *c,
                    const struct pm_http_request *req, int *status);
void chat_ws_open(struct chat *chat, struct pm_conn *c);
void chat_ws_message(struct chat *chat, struct pm_conn *c, const uint8_t *data,
                     size_t len);
void chat_ws_limited(struct chat *chat, struct pm_conn *c);
void chat_ws_close(struct chat *chat, struct pm_conn *c);
/* Send json (borrowed) to every session of every member of room. */
void chat_room_broadcast(struct chat *chat, const struct chat_room *room,
                         const struct cJSON *json, int64_t except_user);
/* Send json to every authenticated session here. */
void chat_broadcast_local(struct chat *chat, const struct cJSON *json);
/* Close every session of user id (tokens revoked). */
void chat_user_kick(struct chat *chat, int64_t id, int64_t ver,
                    const char *reason);
void chat_users_free(struct chat *chat);
/*
 * The checks of a client message that need no session, room or
 * database (the seam tests/fuzz/fuzz_chat.c drives). chat_ws_message
 * parses with chat_ws_parse (a JSON object, else NULL: "not a JSON
 * object"); before the welcome only chat_ws_auth_token (the token of an
 * "auth" message, else NULL) is read; after it handle() dispatches on
 * chat_ws_type_of, checks message/dm fields before the room lookup and
 * read/history fields after it. A false check fills err with the
 * error's code and message; chat_ws_error_json is the error reply.
 */
enum chat_ws_type {
    CHAT_WS_NO_TYPE, /* "type" missing or not a string */
    CHAT_WS_UNKNOWN,
    CHAT_WS_AUTH,
    CHAT_WS_MESSAGE,
    CHAT_WS_JOIN,
    CHAT_WS_LEAVE,
    CHAT_WS_DM,
    CHAT_WS_TYPING,
    CHAT_WS_READ,
    CHAT_WS_HISTORY,
    CHAT_WS_PING,
};
struct chat_ws_error {
    const char *code;
    const char *message;
};
struct cJSON *chat_ws_parse(const uint8_t *data, size_t len);
const char *chat_ws_auth_token(const struct cJSON *msg);
enum chat_ws_type chat_ws_type_of(const struct cJSON *msg);
bool chat_ws_message_check(const struct cJSON *req, int64_t max_message,
                           struct chat_ws_error *err);
bool chat_ws_dm_check(const struct cJSON *req, int64_t max_message,
                      struct chat_ws_error *err);
bool chat_ws_read_check(const struct cJSON *req, int64_t *message_id,
                        struct chat_ws_error *err);
bool chat_ws_history_check(const struct cJSON *req, int64_t *before,
                           int64_t *after, int64_t *limit,
                           struct chat_ws_error *err);
struct cJSON *chat_ws_error_json(const char *code, const char *message,
                                 const char *client_id);

/* ---- chat_cluster.c: Redis fan-out and presence ---------------------- */

struct chat_cluster;
/* With redis.url: connect (in the background); PM_OK or a bad URL. */
int chat_cluster_init(struct chat *chat, char *err, size_t errlen);
void chat_cluster_free(struct chat *chat);
/* No cluster, or both Redis links up. */
bool chat_cluster_up(const struct chat *chat);
/* Deliver here and on every other instance. */
void chat_fanout_room(struct chat *chat, const struct chat_room *room,
                      const struct cJSON *json, int64_t except_user);
void chat_fanout_all(struct chat *chat, const struct cJSON *json);
void chat_fanout_member(struct chat *chat, const char *room, int64_t user,
                        bool add);
void chat_fanout_kick(struct chat *chat, int64_t user, int64_t ver,
                      const char *reason);
/* A user's first local session opened (up) or last one closed. */
void chat_presence_local(struct chat *chat, int64_t id, const char *name,
                         bool up);
/* Online here or on another instance. */
bool chat_user_online(const struct chat *chat, int64_t id);
/* Append every online user's name to the array arr. */
void chat_online_list(const struct chat *chat, struct cJSON *arr);

/* ---- chat_backup.c: SQLite snapshots to S3 -------------------------- */

struct chat_backup;
/* With chat.s3_sync: check the keys and credentials; *restore is true
 * when the database file is missing and must be restored first. */
int chat_backup_init(struct chat *chat, const char *db_url, bool *restore,
                     char *err, size_t errlen);
/* Restore, then open the database (chat_db_open) and schedule. */
void chat_backup_restore(struct chat *chat);
void chat_backup_schedule(struct chat *chat);
/* SIGTERM: one last snapshot after every acknowledged write. */
void chat_backup_final(struct chat *chat);
bool chat_backup_busy(const struct chat *chat);
void chat_backup_free(struct chat *chat);

/* chat_role.c: open the database named by the config. */
int chat_db_open(struct chat *chat, char *err, size_t errlen);

/* ---- chat_streams.c -------------------------------------------------- */

int chat_streams_route(struct chat *chat, struct pm_conn *c,
                       const struct pm_http_request *req, const uint8_t *body,
                       size_t len);

#endif
