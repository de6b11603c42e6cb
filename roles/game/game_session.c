/*
 * game_session: the WebSocket protocol of one player or spectator
 * (docs/game.md). Authenticate comes first; then queueing, custom games,
 * joining, spectating and commands become entries for the cluster
 * (game_ctl), or go to the game's owner (commands to a local room or over
 * the peer link). Messages use serde's externally tagged form: a bare
 * string, or an object with one key. A session belongs to its user's
 * list (a user may have several tabs) and to at most one game's watchers.
 */
#include "config.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <utlist.h>

#include "game.h"
#include "game_json.h"
#include "pm_conn.h"
#include "pm_log.h"
#include "pm_server.h"
#include "pm_util.h"

void
game_send_json(struct game_session *s, const cJSON *msg)
{
    pm_conn_ws_send_json(s->conn, msg);
}

void
game_send_raw(struct game_session *s, const char *msg, size_t len)
{
    pm_conn_ws_send(s->conn, PM_WS_TEXT, msg, len);
}

void
game_send_user(struct game_node *gn, const char *user, const cJSON *msg)
{
    struct game_user_sessions *us;
    struct game_session *s;

    HASH_FIND_STR(gn->users, user, us);
    if (us == NULL)
        return;
    DL_FOREACH2(us->list, s, unext)
    {
        game_send_json(s, msg);
    }
}

/* {"Tag":{"reason":...}} */
static void
send_reason(struct game_session *s, const char *tag, const char *reason)
{
    cJSON *m = cJSON_CreateObject();

    cJSON_AddStringToObject(cJSON_AddObjectToObject(m, tag), "reason", reason);
    game_send_json(s, m);
    cJSON_Delete(m);
}

void
game_session_error(struct game_session *s, const char *fmt, ...)
{
    char reason[GAME_REASON_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    send_reason(s, "Error", reason);
}

static void
deny(struct game_session *s, const char *reason)
{
    send_reason(s, "AccessDenied", reason);
    pm_conn_ws_close(s->conn, PM_WS_POLICY, reason);
}

struct game_session *
game_session_find(struct game_node *gn, uint64_t id)
{
    struct game_session *s;

    HASH_FIND(hh, gn->sessions, &id, sizeof id, s);
    return s;
}

/* ---- open, close --------------------------------------------------------- */

static void
auth_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct game_session *s = arg;

    (void)fd;
    (void)what;
    deny(s, "Authenticate did not come in time");
}

void
game_session_open(struct game_node *gn, struct pm_conn *c)
{
    struct game_session *s = pm_xcalloc(1, sizeof *s);
    struct timeval tv = {GAME_AUTH_TIMEOUT_MS / 1000, 0};

    s->id = ++gn->next_session;
    s->conn = c;
    s->node = gn;
    s->auth_timer = evtimer_new(pm_server_base(gn->srv), auth_timeout_cb, s);
    evtimer_add(s->auth_timer, &tv);
    HASH_ADD(hh, gn->sessions, id, sizeof s->id, s);
    pm_conn_set_data(c, s);
}

static void
user_unlink(struct game_node *gn, struct game_session *s)
{
    struct game_user_sessions *us;

    HASH_FIND_STR(gn->users, s->user, us);
    if (us == NULL)
        return;
    DL_DELETE2(us->list, s, uprev, unext);
    if (us->list == NULL) {
        HASH_DEL(gn->users, us);
        free(us);
    }
}

void
game_session_close(struct game_node *gn, struct pm_conn *c)
{
    struct game_session *s = pm_conn_data(c);
    struct game_user_sessions *us;

    if (s == NULL)
        return;
    game_watch_remove(s);
    if (s->authed) {
        user_unlink(gn, s);
        gn->players--;
        HASH_FIND_STR(gn->users, s->user, us);
        /* The last tab of a queued user leaves its queue. */
        if (us == NULL && game_fsm_queue_position(gn, s->user) > 0 &&
            !gn->draining) {
            cJSON *e = cJSON_CreateObject();

            cJSON_AddStringToObject(e, "t", "unqueue");
            cJSON_AddStringToObject(e, "user", s->user);
            game_ctl_propose(gn, e);
        }
    }
    HASH_DEL(gn->sessions, s);
    event_free(s->auth_timer);
    pm_conn_set_data(c, NULL);
    free(s);
}

void
game_sessions_shutdown(struct game_node *gn, unsigned grace_s)
{
    struct game_session *s, *t;
    cJSON *m = cJSON_CreateObject(), *b;

    b = cJSON_AddObjectToObject(m, "ServerShutdown");
    cJSON_AddStringToObject(b, "reason", "the server is stopping");
    cJSON_AddNumberToObject(b, "grace_period_seconds", grace_s);
    HASH_ITER(hh, gn->sessions, s, t)
    {
        game_send_json(s, m);
    }
    cJSON_Delete(m);
}

/* ---- parsing (no session, no cluster state) ------------------------------ */

static int64_t
int_of(const cJSON *v, int64_t dflt)
{
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
        fabs(v->valuedouble) > 9007199254740992.0)
        return dflt;
    return (int64_t)v->valuedouble;
}

static const struct {
    const char *tag;
    enum game_msg_kind kind;
} msg_tags[] = {
    {"Authenticate", GAME_MSG_AUTHENTICATE},
    {"Ping", GAME_MSG_PING},
    {"GameCommand", GAME_MSG_COMMAND},
    {"QueueForMatch", GAME_MSG_QUEUE},
    {"LeaveQueue", GAME_MSG_LEAVE_QUEUE},
    {"CreateCustomGame", GAME_MSG_CREATE_CUSTOM},
    {"JoinCustomGame", GAME_MSG_JOIN_CUSTOM},
    {"StartCustomGame", GAME_MSG_START_CUSTOM},
    {"JoinGame", GAME_MSG_JOIN_GAME},
    {"SpectateGame", GAME_MSG_SPECTATE_GAME},
    {"LeaveGame", GAME_MSG_LEAVE_GAME},
    {"RequestResync", GAME_MSG_RESYNC},
};

static void
parse_body(struct game_msg *m, const char *tag, const cJSON *b)
{
    const cJSON *v, *cid, *cmd, *dir;
    char err[PM_ERRMSG_SIZE];

    switch (m->kind) {
    case GAME_MSG_AUTHENTICATE:
        v = cJSON_GetObjectItemCaseSensitive(b, "token");
        if (int_of(cJSON_GetObjectItemCaseSensitive(b, "protocol_version"),
                   -1) != GAME_PROTOCOL_VERSION)
            pm_strlcpy(m->error, "protocol_version 1 is required",
                       sizeof m->error);
        else if (!cJSON_IsString(v))
            pm_strlcpy(m->error, "token is missing", sizeof m->error);
        else
            m->token = v->valuestring;
        break;
    case GAME_MSG_PING:
        v = cJSON_GetObjectItemCaseSensitive(b, "client_time");
        m->client_time = cJSON_IsNumber(v) ? v : NULL;
        break;
    case GAME_MSG_COMMAND:
        cid = cJSON_GetObjectItemCaseSensitive(b, "command_id");
        cmd = cJSON_GetObjectItemCaseSensitive(b, "command");
        dir = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(cmd, "Turn"), "direction");
        m->game_id =
            int_of(cJSON_GetObjectItemCaseSensitive(cid, "game_id"), -1);
        m->seq = int_of(cJSON_GetObjectItemCaseSensitive(cid, "seq"), -1);
        if (m->game_id <= 0 || m->seq < 0 || !cJSON_IsString(dir) ||
            game_dir_parse(dir->valuestring, &m->dir) != PM_OK)
            pm_strlcpy(m->error,
                       "GameCommand needs command_id {game_id, seq} and "
                       "command {Turn: {direction: Up|Down|Left|Right}}",
                       sizeof m->error);
        break;
    case GAME_MSG_QUEUE:
        v = cJSON_GetObjectItemCaseSensitive(b, "mode");
        if (!cJSON_IsString(v) ||
            game_mode_parse(v->valuestring, &m->mode) != PM_OK ||
            m->mode == GAME_MODE_CUSTOM)
            pm_strlcpy(m->error, "mode must be \"solo\", \"duel\" or \"ffa\"",
                       sizeof m->error);
        break;
    case GAME_MSG_CREATE_CUSTOM:
        if (b != NULL && !cJSON_IsObject(b) && !cJSON_IsNull(b))
            pm_strlcpy(m->error, "CreateCustomGame takes an object of settings",
                       sizeof m->error);
        else if (cJSON_IsObject(b) &&
                 game_settings_parse(b, &m->settings, err, sizeof err) != PM_OK)
            pm_strlcpy(m->error, err, sizeof m->error);
        break;
    case GAME_MSG_JOIN_CUSTOM:
        v = cJSON_GetObjectItemCaseSensitive(b, "code");
        if (!cJSON_IsString(v))
            pm_strlcpy(m->error, "JoinCustomGame needs {\"code\": string}",
                       sizeof m->error);
        else
            m->code = v->valuestring;
        break;
    case GAME_MSG_JOIN_GAME:
    case GAME_MSG_SPECTATE_GAME:
        m->game_id = int_of(b, -1);
        if (m->game_id <= 0 && cJSON_IsObject(b))
            m->game_id =
                int_of(cJSON_GetObjectItemCaseSensitive(b, "game_id"), -1);
        break;
    case GAME_MSG_RESYNC:
        m->game_id = int_of(cJSON_GetObjectItemCaseSensitive(b, "game_id"), -1);
        break;
    case GAME_MSG_UNKNOWN:
        snprintf(m->error, sizeof m->error, "unknown message \"%.40s\"", tag);
        break;
    default: /* no body */
        break;
    }
}

int
game_msg_parse(const uint8_t *data, size_t len,
               const struct game_settings *custom, struct game_msg *m)
{
    const char *tag;
    const cJSON *body;
    size_t i;

    memset(m, 0, sizeof *m);
    m->kind = GAME_MSG_MALFORMED;
    m->game_id = -1;
    m->seq = -1;
    m->settings = *custom;
    m->root = cJSON_ParseWithLength((const char *)data, len);
    if (cJSON_IsString(m->root)) {
        tag = m->root->valuestring;
        body = NULL;
    } else if (cJSON_IsObject(m->root) && m->root->child != NULL &&
               m->root->child->next == NULL) {
        tag = m->root->child->string;
        body = m->root->child;
    } else {
        pm_strlcpy(m->error,
                   "a message is a string or an object with one key "
                   "(docs/game.md)",
                   sizeof m->error);
        return PM_EINVAL;
    }
    m->kind = GAME_MSG_UNKNOWN;
    for (i = 0; i < sizeof msg_tags / sizeof msg_tags[0]; i++)
        if (strcmp(tag, msg_tags[i].tag) == 0) {
            m->kind = msg_tags[i].kind;
            break;
        }
    parse_body(m, tag, body);
    return m->error[0] == '\0' ? PM_OK : PM_EINVAL;
}

void
game_msg_free(struct game_msg *m)
{
    cJSON_Delete(m->root);
    m->root = NULL;
}

/* ---- messages ------------------------------------------------------------ */

static void
on_authenticate(struct game_node *gn, struct game_session *s,
                const struct game_msg *msg)
{
    struct game_user_sessions *us;
    char err[PM_ERRMSG_SIZE];
    cJSON *m, *a;
    int pos;

    if (s->authed) {
        game_session_error(s, "already authenticated");
        return;
    }
    if (msg->error[0] != '\0') {
        deny(s, msg->error);
        return;
    }
    if (game_auth_check(gn, msg->token, s->user, sizeof s->user, s->name,
                        sizeof s->name, err, sizeof err) != PM_OK) {
        deny(s, err);
        return;
    }
    s->authed = true;
    evtimer_del(s->auth_timer);
    gn->players++;
    HASH_FIND_STR(gn->users, s->user, us);
    if (us == NULL) {
        us = pm_xcalloc(1, sizeof *us);
        pm_strlcpy(us->user, s->user, sizeof us->user);
        HASH_ADD_STR(gn->users, user, us);
    }
    DL_APPEND2(us->list, s, uprev, unext);
    m = cJSON_CreateObject();
    a = cJSON_AddObjectToObject(m, "Authenticated");
    cJSON_AddStringToObject(a, "user_id", s->user);
    cJSON_AddStringToObject(a, "username", s->name);
    cJSON_AddNumberToObject(a, "protocol_version", GAME_PROTOCOL_VERSION);
    cJSON_AddNumberToObject(a, "node_id", (double)gn->node_id);
    game_send_json(s, m);
    cJSON_Delete(m);
    if ((pos = game_fsm_queue_position(gn, s->user)) > 0) {
        m = cJSON_CreateObject();
        cJSON_AddNumberToObject(cJSON_AddObjectToObject(m, "QueueUpdate"),
                                "position", pos);
        game_send_json(s, m);
        cJSON_Delete(m);
    }
}

/* Propose e (taken) on behalf of s; tell s when the cluster cannot. */
static void
propose(struct game_node *gn, struct game_session *s, cJSON *e)
{
    if (game_ctl_propose(gn, e) != PM_OK)
        game_session_error(s, "the cluster has no leader right now; retry");
}

static cJSON *
user_entry(struct game_session *s, const char *kind)
{
    cJSON *e = cJSON_CreateObject();

    cJSON_AddStringToObject(e, "t", kind);
    cJSON_AddStringToObject(e, "user", s->user);
    return e;
}

static bool
accepting(struct game_node *gn, struct game_session *s)
{
    if (gn->draining) {
        game_session_error(s, "the server is shutting down");
        return false;
    }
    if (HASH_COUNT(gn->fsm.games) >= (unsigned)gn->conf->max_games) {
        game_session_error(s, "too many games (game.max_games); retry later");
        return false;
    }
    return true;
}

static void
on_queue(struct game_node *gn, struct game_session *s,
         const struct game_msg *msg)
{
    char num[24];
    cJSON *e;

    if (!accepting(gn, s))
        return;
    e = user_entry(s, "queue");
    cJSON_AddStringToObject(e, "mode", game_mode_name(msg->mode));
    snprintf(num, sizeof num, "%" PRIu64, gn->node_id);
    cJSON_AddStringToObject(e, "node", num);
    snprintf(num, sizeof num, "%" PRIu64, pm_wall_ms());
    cJSON_AddStringToObject(e, "ts", num);
    propose(gn, s, e);
}

static void
on_create_custom(struct game_node *gn, struct game_session *s,
                 const struct game_msg *msg)
{
    static const char alphabet[] = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    uint8_t rnd[GAME_CODE_LEN + 8];
    char code[GAME_CODE_LEN + 1], num[24];
    uint64_t seed;
    cJSON *e;
    int i;

    if (!accepting(gn, s))
        return;
    pm_random_bytes(rnd, sizeof rnd);
    for (i = 0; i < GAME_CODE_LEN; i++)
        code[i] = alphabet[rnd[i] % (sizeof alphabet - 1)];
    code[GAME_CODE_LEN] = '\0';
    memcpy(&seed, rnd + GAME_CODE_LEN, sizeof seed);
    e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "t", "create");
    cJSON_AddStringToObject(e, "mode", "custom");
    cJSON_AddItemToObject(e, "settings", game_settings_json(&msg->settings));
    snprintf(num, sizeof num, "%" PRIu64, seed);
    cJSON_AddStringToObject(e, "seed", num);
    cJSON_AddStringToObject(e, "code", code);
    cJSON_AddItemToArray(cJSON_AddArrayToObject(e, "users"),
                         cJSON_CreateString(s->user));
    snprintf(num, sizeof num, "%" PRIu64, gn->node_id);
    cJSON_AddStringToObject(e, "owner", num);
    propose(gn, s, e);
}

static void
on_join_custom(struct game_node *gn, struct game_session *s,
               const struct game_msg *msg)
{
    struct fsm_game *fg;
    char num[24];
    cJSON *e;

    fg = game_fsm_game_by_code(gn, msg->code);
    if (fg == NULL) {
        game_session_error(s, "no custom game has code %.16s", msg->code);
        return;
    }
    e = user_entry(s, "join");
    snprintf(num, sizeof num, "%" PRIu64, fg->id);
    cJSON_AddStringToObject(e, "id", num);
    propose(gn, s, e);
}

static void
on_start_custom(struct game_node *gn, struct game_session *s)
{
    struct fsm_game *fg = game_fsm_game_of_user(gn, s->user);
    char num[24];
    cJSON *e;

    if (fg == NULL || fg->mode != GAME_MODE_CUSTOM ||
        fg->status != FSM_WAITING) {
        game_session_error(s, "you have no custom game waiting to start");
        return;
    }
    e = user_entry(s, "start");
    snprintf(num, sizeof num, "%" PRIu64, fg->id);
    cJSON_AddStringToObject(e, "id", num);
    propose(gn, s, e);
}

static bool
plays_in(const struct fsm_game *fg, const char *user)
{
    int i;

    for (i = 0; i < fg->nusers; i++)
        if (strcmp(fg->users[i], user) == 0)
            return true;
    return false;
}

static void
on_join_game(struct game_node *gn, struct game_session *s,
             const struct game_msg *msg, bool spectate)
{
    int64_t id = msg->game_id;
    struct fsm_game *fg;

    fg = id > 0 ? game_fsm_game(gn, (uint64_t)id) : NULL;
    if (fg == NULL) {
        game_session_error(s, "game %lld does not exist or is over",
                           (long long)id);
        return;
    }
    if (!spectate && !plays_in(fg, s->user)) {
        game_session_error(s, "you do not play in game %lld; spectate it",
                           (long long)id);
        return;
    }
    game_watch_add(gn, s, fg->id, !spectate);
}

static void
on_command(struct game_node *gn, struct game_session *s,
           const struct game_msg *msg)
{
    int64_t gid = msg->game_id, seq = msg->seq;
    enum game_dir d = msg->dir;
    struct fsm_game *fg;
    struct game_room *r;

    fg = game_fsm_game(gn, (uint64_t)gid);
    if (fg == NULL || !plays_in(fg, s->user))
        return; /* over, or not yours: nothing to do */
    if (fg->owner == gn->node_id) {
        r = game_room_find(gn, fg->id);
        if (r != NULL)
            game_room_command(gn, r, s->user, seq, d);
        return;
    }
    game_peer_command(gn, fg->owner, fg->id, s->user, seq, d);
}

static void
on_ping(struct game_session *s, const struct game_msg *msg)
{
    const cJSON *ct = msg->client_time;
    cJSON *m = cJSON_CreateObject(), *p;

    p = cJSON_AddObjectToObject(m, "Pong");
    cJSON_AddItemToObject(p, "client_time",
                          cJSON_IsNumber(ct) ? cJSON_Duplicate(ct, true)
                                             : cJSON_CreateNull());
    cJSON_AddNumberToObject(p, "server_time", (double)pm_wall_ms());
    game_send_json(s, m);
    cJSON_Delete(m);
}

static void
on_resync(struct game_node *gn, struct game_session *s,
          const struct game_msg *msg)
{
    int64_t gid = msg->game_id;

    gn->resyncs++;
    if (gid <= 0 || (uint64_t)gid != s->watching) {
        game_session_error(s, "you do not watch game %lld", (long long)gid);
        return;
    }
    game_watch_snapshot(gn, (uint64_t)gid, s);
}

static void
dispatch(struct game_node *gn, struct game_session *s, const struct game_msg *m)
{
    if (m->kind == GAME_MSG_MALFORMED) {
        game_session_error(s, "%s", m->error);
        return;
    }
    if (m->kind == GAME_MSG_AUTHENTICATE) {
        on_authenticate(gn, s, m);
        return;
    }
    if (!s->authed) {
        deny(s, "Authenticate first");
        return;
    }
    if (m->error[0] != '\0') {
        game_session_error(s, "%s", m->error);
        return;
    }
    switch (m->kind) {
    case GAME_MSG_PING:
        on_ping(s, m);
        break;
    case GAME_MSG_COMMAND:
        on_command(gn, s, m);
        break;
    case GAME_MSG_QUEUE:
        on_queue(gn, s, m);
        break;
    case GAME_MSG_LEAVE_QUEUE:
        propose(gn, s, user_entry(s, "unqueue"));
        break;
    case GAME_MSG_CREATE_CUSTOM:
        on_create_custom(gn, s, m);
        break;
    case GAME_MSG_JOIN_CUSTOM:
        on_join_custom(gn, s, m);
        break;
    case GAME_MSG_START_CUSTOM:
        on_start_custom(gn, s);
        break;
    case GAME_MSG_JOIN_GAME:
        on_join_game(gn, s, m, false);
        break;
    case GAME_MSG_SPECTATE_GAME:
        on_join_game(gn, s, m, true);
        break;
    case GAME_MSG_LEAVE_GAME:
        game_watch_remove(s);
        break;
    case GAME_MSG_RESYNC:
        on_resync(gn, s, m);
        break;
    default: /* MALFORMED, AUTHENTICATE above; UNKNOWN has an error */
        break;
    }
}

void
game_session_message(struct game_node *gn, struct pm_conn *c,
                     const uint8_t *data, size_t len)
{
    struct game_session *s = pm_conn_data(c);
    struct game_settings custom;
    struct game_msg m;

    if (s == NULL)
        return;
    custom = game_default_settings(gn, GAME_MODE_CUSTOM, 1);
    game_msg_parse(data, len, &custom, &m);
    dispatch(gn, s, &m);
    game_msg_free(&m);
}
