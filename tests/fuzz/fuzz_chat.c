/*
 * fuzz_chat: drives the chat role's checks of a client's WebSocket
 * message (roles/chat/chat_ws.c, the seam declared in chat.h): the
 * parse (chat_ws_parse), the first message before the welcome
 * (chat_ws_auth_token, then chat_token_check against a fixed secret),
 * the type dispatch (chat_ws_type_of) and the field checks handle()
 * runs for message and dm (chat_ws_message_check, chat_ws_dm_check, at
 * chat.max_message's default and at a small limit) and for read and
 * history (chat_ws_read_check, chat_ws_history_check), plus
 * chat_username_valid on the username of a register/login body. No
 * session, room or database is involved.
 *
 * Input: one text frame (a JSON message, or a REST body).
 *
 * Asserts: chat_ws_parse gives an object or NULL as cJSON does;
 * chat_ws_type_of agrees with the "type" string; a passing check means
 * the fields really are valid (body non-empty and within the limit,
 * client_id 1-64 bytes, "to" a username, ids positive, cursors
 * non-negative); every refusal is a documented error code (docs/chat.md)
 * and its reply (chat_ws_error_json, with the client_id) is a JSON
 * object that reparses to the same code, message and client_id; a
 * token chat_token_issue signs passes chat_token_check with its id and
 * version.
 */
#include "config.h"

#include <string.h>

#include <cjson/cJSON.h>

#include "chat.h"
#include "fuzz.h"
#include "pm_util.h"

#define MAX_MESSAGE 4000 /* chat.max_message's default */
#define SMALL_MAX 8

static const char *const codes[] = {
    "bad_request", "not_found",    "not_member",  "forbidden",  "too_long",
    "room_full",   "rate_limited", "unavailable", "overloaded",
};

static struct chat_conf conf = {.token_ttl = 3600000};
static char secret[] = "fuzz-secret-fuzz-secret-fuzz-secret";
static struct chat chat = {
    .conf = &conf, .secret = secret, .secret_len = sizeof secret - 1};

static const char *
str_of(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool
same(const char *a, const char *b)
{
    return (a == NULL && b == NULL) ||
           (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* A refusal: a documented code and a reply that round-trips. */
static void
check_error(const struct chat_ws_error *err, const char *client_id)
{
    cJSON *o, *back;
    char *text;
    size_t i;
    bool known = false;

    FUZZ_CHECK(err->code != NULL && err->message != NULL);
    for (i = 0; i < sizeof codes / sizeof codes[0]; i++)
        known |= strcmp(err->code, codes[i]) == 0;
    FUZZ_CHECK(known);
    o = chat_ws_error_json(err->code, err->message, client_id);
    text = cJSON_PrintUnformatted(o);
    FUZZ_CHECK(text != NULL);
    back = cJSON_Parse(text);
    FUZZ_CHECK(cJSON_IsObject(back));
    FUZZ_CHECK(same(str_of(back, "type"), "error"));
    FUZZ_CHECK(same(str_of(back, "code"), err->code));
    FUZZ_CHECK(same(str_of(back, "message"), err->message));
    FUZZ_CHECK(same(str_of(back, "client_id"), client_id));
    cJSON_Delete(back);
    cJSON_free(text);
    cJSON_Delete(o);
}

static size_t
utf8_chars(const char *s)
{
    size_t n = 0;

    for (; *s != '\0'; s++)
        n += (*s & 0xc0) != 0x80;
    return n;
}

/* An independent ^[a-zA-Z0-9_]{3,20}$. */
static bool
username_ok(const char *s)
{
    size_t n = strlen(s), i;

    if (n < 3 || n > CHAT_NAME_MAX)
        return false;
    for (i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return false;
    return true;
}

static void
check_message(const cJSON *msg, bool dm, int64_t max, const char *client_id)
{
    struct chat_ws_error err = {NULL, NULL};
    const cJSON *cid = cJSON_GetObjectItemCaseSensitive(msg, "client_id");
    const char *body = str_of(msg, "body");
    bool ok = dm ? chat_ws_dm_check(msg, max, &err)
                 : chat_ws_message_check(msg, max, &err);

    if (!ok) {
        check_error(&err, client_id);
        return;
    }
    FUZZ_CHECK(body != NULL && body[0] != '\0');
    FUZZ_CHECK(utf8_chars(body) <= (size_t)max);
    FUZZ_CHECK(cid == NULL || cJSON_IsNull(cid) ||
               (client_id != NULL && strlen(client_id) >= 1 &&
                strlen(client_id) <= 64));
    if (dm) {
        const char *to = str_of(msg, "to");

        FUZZ_CHECK(to != NULL && username_ok(to));
    }
}

static void
check_auth(const cJSON *msg)
{
    const char *tok = chat_ws_auth_token(msg);
    const char *name = str_of(msg, "username");
    char err[256];
    int64_t id, ver;

    FUZZ_CHECK(tok == NULL || same(str_of(msg, "type"), "auth"));
    if (tok != NULL && chat_token_check(&chat, tok, strlen(tok), &id, &ver, err,
                                        sizeof err) == PM_OK)
        FUZZ_CHECK(id > 0);
    if (name != NULL) {
        bool valid = chat_username_valid(name);

        FUZZ_CHECK(valid == username_ok(name));
        if (valid) {
            char *t = chat_token_issue(&chat, 42, name, 3);

            FUZZ_CHECK(chat_token_check(&chat, t, strlen(t), &id, &ver, err,
                                        sizeof err) == PM_OK);
            FUZZ_CHECK(id == 42 && ver == 3);
            free(t);
        }
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cJSON *msg = chat_ws_parse(data, size), *raw;
    struct chat_ws_error err = {NULL, NULL};
    const char *type, *client_id;
    enum chat_ws_type t;
    int64_t n, before, after, limit;

    raw = cJSON_ParseWithLength((const char *)data, size);
    FUZZ_CHECK((msg != NULL) == cJSON_IsObject(raw));
    cJSON_Delete(raw);
    if (msg == NULL) {
        err.code = "bad_request";
        err.message = "not a JSON object";
        check_error(&err, NULL);
        return 0;
    }
    check_auth(msg);
    type = str_of(msg, "type");
    client_id = str_of(msg, "client_id");
    t = chat_ws_type_of(msg);
    FUZZ_CHECK((t == CHAT_WS_NO_TYPE) == (type == NULL));
    switch (t) {
    case CHAT_WS_MESSAGE:
    case CHAT_WS_DM:
        FUZZ_CHECK(strcmp(type, t == CHAT_WS_DM ? "dm" : "message") == 0);
        check_message(msg, t == CHAT_WS_DM, MAX_MESSAGE, client_id);
        check_message(msg, t == CHAT_WS_DM, SMALL_MAX, client_id);
        break;
    case CHAT_WS_READ:
        if (chat_ws_read_check(msg, &n, &err))
            FUZZ_CHECK(n > 0);
        else
            check_error(&err, client_id);
        break;
    case CHAT_WS_HISTORY:
        if (chat_ws_history_check(msg, &before, &after, &limit, &err))
            FUZZ_CHECK(before >= 0 && after >= 0 && limit >= 0);
        else
            check_error(&err, client_id);
        break;
    case CHAT_WS_UNKNOWN:
        FUZZ_CHECK(strcmp(type, "message") != 0 && strcmp(type, "ping") != 0 &&
                   strcmp(type, "auth") != 0);
        break;
    default:
        break;
    }
    cJSON_Delete(msg);
    return 0;
}
