/*
 * chat_accounts: FaltuBaat's account routes with their request and
 * response shapes (docs/chat.md), tokens (HS256 with a per-user version
 * so that a password change, a rename, logout or deletion revoke every
 * older token), and the account row.
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "chat.h"
#include "pm_conn.h"
#include "pm_http.h"
#include "pm_jwt.h"
#include "pm_log.h"
#include "pm_util.h"

#define NAME_FIELD_MAX 50
#define ABOUT_MAX 500
#define PW_MIN 6
#define PW_MAX 100

/* A bcrypt hash (cost 10) of a string no password equals: login spends
 * the same time whether or not the user exists. */
static const char dummy_hash[] =
    "$2b$10$oanGxEiYscTPi4fjqkfprOqxWO2MBoSDwKlblz/3MUtV.aF/Ikpke";

bool
chat_username_valid(const char *name)
{
    size_t n = strlen(name), i;

    if (n < 3 || n > CHAT_NAME_MAX)
        return false;
    for (i = 0; i < n; i++)
        if (!isalnum((unsigned char)name[i]) && name[i] != '_')
            return false;
    return true;
}

static void
lower_copy(const char *s, char *out, size_t outlen)
{
    size_t i;

    for (i = 0; s[i] != '\0' && i + 1 < outlen; i++)
        out[i] = (char)tolower((unsigned char)s[i]);
    out[i] = '\0';
}

/* Truncate to max characters (UTF-8 aware) and drop '<' and '>'. */
static char *
sanitize(const char *s, size_t max)
{
    char *out = pm_xmalloc(strlen(s) + 1), *o = out;
    size_t chars = 0;

    for (; *s != '\0'; s++) {
        if ((*s & 0xc0) != 0x80 && chars++ == max)
            break;
        if (*s != '<' && *s != '>')
            *o++ = *s;
    }
    *o = '\0';
    return out;
}

/* Characters (code points) of a UTF-8 string. */
static size_t
utf8_chars(const char *s)
{
    size_t n = 0;

    for (; *s != '\0'; s++)
        if ((*s & 0xc0) != 0x80)
            n++;
    return n;
}

static bool
gender_valid(const char *g)
{
    return strcmp(g, "male") == 0 || strcmp(g, "female") == 0 ||
           strcmp(g, "other") == 0;
}

static void
now_text(char out[20])
{
    time_t t = time(NULL);
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out, 20, "%Y-%m-%d %H:%M:%S", &tm);
}

static char *
dup_or_empty(const char *s)
{
    return pm_xstrdup(s != NULL ? s : "");
}

void
chat_account_from_row(struct chat_account *a, const struct pm_db_res *res,
                      int row)
{
    chat_account_clear(a);
    a->id = pm_db_int(res, row, 0, 0);
    pm_strlcpy(a->name, pm_db_val(res, row, 1) ? pm_db_val(res, row, 1) : "",
               sizeof a->name);
    a->ver = pm_db_int(res, row, 2, 0);
    a->first_name = dup_or_empty(pm_db_val(res, row, 3));
    a->last_name = dup_or_empty(pm_db_val(res, row, 4));
    a->gender = dup_or_empty(pm_db_val(res, row, 5));
    a->about = dup_or_empty(pm_db_val(res, row, 6));
    a->created_at =
        pm_db_val(res, row, 7) ? pm_xstrdup(pm_db_val(res, row, 7)) : NULL;
    a->last_login =
        pm_db_val(res, row, 8) ? pm_xstrdup(pm_db_val(res, row, 8)) : NULL;
    a->hash = dup_or_empty(pm_db_val(res, row, 9));
}

void
chat_account_clear(struct chat_account *a)
{
    free(a->first_name);
    free(a->last_name);
    free(a->gender);
    free(a->about);
    free(a->created_at);
    free(a->last_login);
    if (a->hash != NULL)
        explicit_bzero(a->hash, strlen(a->hash));
    free(a->hash);
    a->first_name = a->last_name = a->gender = a->about = NULL;
    a->created_at = a->last_login = a->hash = NULL;
}

/* ---- tokens ---------------------------------------------------------- */

char *
chat_token_issue(struct chat *chat, int64_t id, const char *name, int64_t ver)
{
    cJSON *c = cJSON_CreateObject();
    char sub[CHAT_ID_SIZE];
    int64_t now = (int64_t)(pm_wall_ms() / 1000);
    char *tok;

    chat_id_text(id, sub);
    cJSON_AddStringToObject(c, "sub", sub);
    cJSON_AddNumberToObject(c, "userId", (double)id);
    cJSON_AddStringToObject(c, "username", name);
    cJSON_AddNumberToObject(c, "ver", (double)ver);
    cJSON_AddNumberToObject(c, "iat", (double)now);
    cJSON_AddNumberToObject(
        c, "exp", (double)(now + (int64_t)(chat->conf->token_ttl / 1000)));
    tok = pm_jwt_sign(c, chat->secret, chat->secret_len);
    cJSON_Delete(c);
    return tok;
}

int
chat_token_check(struct chat *chat, const char *tok, size_t len, int64_t *id,
                 int64_t *ver, char *err, size_t errlen)
{
    cJSON *c;
    const cJSON *sub, *uid, *v;
    struct chat_floor *f;
    char *end;
    int rv;

    rv = pm_jwt_decode(tok, len, chat->secret, chat->secret_len,
                       (int64_t)(pm_wall_ms() / 1000), &c, err, errlen);
    if (rv != PM_OK)
        return rv;
    sub = cJSON_GetObjectItemCaseSensitive(c, "sub");
    uid = cJSON_GetObjectItemCaseSensitive(c, "userId");
    v = cJSON_GetObjectItemCaseSensitive(c, "ver");
    *id = 0;
    if (cJSON_IsString(sub)) {
        long long n = strtoll(sub->valuestring, &end, 10);

        *id = *end == '\0' ? n : 0;
    } else if (sub == NULL && cJSON_IsNumber(uid)) {
        /* A FaltuBaat token: userId only. */
        *id = (int64_t)uid->valuedouble;
    }
    *ver = cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
    cJSON_Delete(c);
    if (*id <= 0)
        return pm_errf(err, errlen, PM_EINVAL, "token names no user id");
    HASH_FIND(hh, chat->floors, id, sizeof *id, f);
    if (f != NULL && *ver < f->ver)
        return pm_errf(err, errlen, PM_EINVAL, "token revoked");
    return PM_OK;
}

void
chat_token_floor(struct chat *chat, int64_t id, int64_t ver)
{
    struct chat_floor *f;

    HASH_FIND(hh, chat->floors, &id, sizeof id, f);
    if (f == NULL) {
        f = pm_xcalloc(1, sizeof *f);
        f->id = id;
        f->ver = ver;
        HASH_ADD(hh, chat->floors, id, sizeof f->id, f);
    } else if (ver > f->ver) {
        f->ver = ver;
    }
}

void
chat_floors_free(struct chat *chat)
{
    struct chat_floor *f, *tmp;

    HASH_ITER(hh, chat->floors, f, tmp)
    {
        HASH_DEL(chat->floors, f);
        free(f);
    }
}

static cJSON *
user_json(const struct chat_account *a, bool with_dates)
{
    cJSON *u = cJSON_CreateObject();

    cJSON_AddStringToObject(u, "username", a->name);
    cJSON_AddStringToObject(u, "firstName", a->first_name ? a->first_name : "");
    cJSON_AddStringToObject(u, "lastName", a->last_name ? a->last_name : "");
    cJSON_AddStringToObject(u, "gender", a->gender ? a->gender : "");
    cJSON_AddStringToObject(u, "about", a->about ? a->about : "");
    if (with_dates) {
        if (a->created_at != NULL)
            cJSON_AddStringToObject(u, "createdAt", a->created_at);
        else
            cJSON_AddNullToObject(u, "createdAt");
        if (a->last_login != NULL)
            cJSON_AddStringToObject(u, "lastLogin", a->last_login);
        else
            cJSON_AddNullToObject(u, "lastLogin");
    }
    return u;
}

static void
reply_token(struct chat_req *r, int status, cJSON *o, int64_t ver)
{
    char *tok = chat_token_issue(r->chat, r->acct.id, r->acct.name, ver);

    cJSON_AddStringToObject(o, "token", tok);
    free(tok);
    chat_reply(r, status, o);
}

/* ---- GET /api/check-username/:username ------------------------------ */

static void
check_done(void *arg, const struct pm_db_res *res)
{
    struct chat_req *r = arg;
    cJSON *o;

    if (!chat_db_ok(r, res))
        return;
    o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "available", res->nrows == 0);
    chat_reply(r, 200, o);
}

static void
check_username(struct chat_req *r)
{
    char name[CHAT_NAME_MAX + 1];
    const char *params[1] = {name};

    if (!chat_username_valid(r->arg)) {
        cJSON *o = cJSON_CreateObject();

        cJSON_AddBoolToObject(o, "available", false);
        cJSON_AddStringToObject(o, "error", "Invalid username format");
        chat_reply(r, 200, o);
        return;
    }
    lower_copy(r->arg, name, sizeof name);
    pm_db_query(r->chat->db, "SELECT 1 FROM users WHERE username = $1", 1,
                params, check_done, r);
}

/* ---- POST /api/register --------------------------------------------- */

static void
register_done(void *arg, const struct pm_db_res *res)
{
    struct chat_req *r = arg;
    cJSON *o;

    if (res->status == PM_ECONFLICT) {
        chat_reply_error(r, 400, "Username already taken");
        return;
    }
    if (res->status != PM_OK || res->nrows != 1) {
        chat_reply_db_error(r, res);
        return;
    }
    r->acct.id = pm_db_int(res, 0, 0, 0);
    (*r->chat->stats.registrations)++;
    pm_log(PM_LOG_INFO, "user_registered", "user %s (id %lld)", r->acct.name,
           (long long)r->acct.id);
    o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "success", true);
    cJSON_AddItemToObject(o, "user", user_json(&r->acct, false));
    reply_token(r, 201, o, 0);
}

static void
register_hashed(struct chat_req *r)
{
    char now[20];
    const char *params[7];

    if (r->hash[0] == '\0') {
        chat_reply_error(r, 500, "Could not hash the password");
        return;
    }
    now_text(now);
    params[0] = r->acct.name;
    params[1] = r->hash;
    params[2] = r->acct.first_name;
    params[3] = r->acct.last_name;
    params[4] = r->acct.gender;
    params[5] = r->acct.about;
    params[6] = now;
    pm_db_query(r->chat->db,
                "INSERT INTO users (username, password, first_name, last_name, "
                "gender, about, created_at) VALUES ($1, $2, $3, $4, $5, $6, "
                "$7) RETURNING id",
                7, params, register_done, r);
}

static void
register_user(struct chat_req *r)
{
    const char *user = chat_body_str(r, "username");
    const char *pw = chat_body_str(r, "password");
    const char *gender = chat_body_str(r, "gender");
    const char *about = chat_body_str(r, "about");
    const char *first = chat_body_str(r, "firstName");
    const char *last = chat_body_str(r, "lastName");
    size_t pwlen;

    if (user == NULL || pw == NULL || gender == NULL || !*user || !*pw ||
        !*gender) {
        chat_reply_error(r, 400, "Username, password, and gender are required");
        return;
    }
    if (!chat_username_valid(user)) {
        chat_reply_error(r, 400, "Invalid username format");
        return;
    }
    pwlen = utf8_chars(pw);
    if (pwlen < PW_MIN || pwlen > PW_MAX) {
        chat_reply_error(r, 400, "Password must be 6-100 characters");
        return;
    }
    if (!gender_valid(gender)) {
        chat_reply_error(r, 400, "Invalid gender");
        return;
    }
    lower_copy(user, r->acct.name, sizeof r->acct.name);
    r->acct.gender = pm_xstrdup(gender);
    r->acct.about = sanitize(about ? about : "", ABOUT_MAX);
    r->acct.first_name = sanitize(first ? first : "", NAME_FIELD_MAX);
    r->acct.last_name = sanitize(last ? last : "", NAME_FIELD_MAX);
    chat_req_hash(r, pw, register_hashed);
}

/* ---- POST /api/login ------------------------------------------------- */

static void
login_stamped(void *arg, const struct pm_db_res *res)
{
    struct chat_req *r = arg;
    cJSON *o;

    if (!chat_db_ok(r, res))
        return;
    (*r->chat->stats.logins)++;
    o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "success", true);
    cJSON_AddItemToObject(o, "user", user_json(&r->acct, false));
    reply_token(r, 200, o, r->acct.ver);
}

static void
login_verified(struct chat_req *r)
{
    char now[20], id[24];
    const char *params[2] = {now, id};

    if (!r->flag || r->acct.id == 0) {
        (*r->chat->stats.login_failures)++;
        chat_reply_error(r, 401, "Invalid username or password");
        return;
    }
    now_text(now);
    chat_id_text(r->acct.id, id);
    pm_db_query(r->chat->db, "UPDATE users SET last_login = $1 WHERE id = $2",
                2, params, login_stamped, r);
}

static void
login_loaded(void *arg, const struct pm_db_res *res)
{
    struct chat_req *r = arg;

    if (!chat_db_ok(r, res))
        return;
    if (res->nrows == 1) {
        chat_account_from_row(&r->acct, res, 0);
    } else {
        r->acct.id = 0;
        r->acct.hash = pm_xstrdup(dummy_hash);
    }
    chat_req_verify(r, r->s1, login_verified);
}

static void
login(struct chat_req *r)
{
    const char *user = chat_body_str(r, "username");
    const char *pw = chat_body_str(r, "password");
    char name[64];
    const char *params[1] = {name};

    if (user == NULL || pw == NULL || !*user || !*pw) {
        chat_reply_error(r, 400, "Username and password are required");
        return;
    }
    if (strlen(user) > CHAT_NAME_MAX || utf8_chars(pw) > PW_MAX) {
        chat_reply_error(r, 401, "Invalid username or password");
        return;
    }
    lower_copy(user, name, sizeof name);
    r->s1 = pm_xstrdup(pw);
    pm_db_query(r->chat->db,
                "SELECT " CHAT_ACCOUNT_COLS
                " FROM users WHERE username = $1 AND is_active = 1",
                1, params, login_loaded, r);
}

/* ---- profile ----------------------------------------------------------- */

static void
verify_token(struct chat_req *r)
{
    cJSON *o = cJSON_CreateObject();

    cJSON_AddBoolToObject(o, "valid", true);
    cJSON_AddItemToObject(o, "user", user_json(&r->acct, false));
    chat_reply(r, 200, o);
}

static void
get_profile(struct chat_req *r)
{
    chat_reply(r, 200, user_json(&r->acct, true));
}

static void
profile_done(void *arg, const struct pm_db_res *res)
{
    struct chat_req *r = arg;
    cJSON *o;

    if (!chat_db_ok(r, res))
        return;
    o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "success", true);
    cJSON_AddStringToObject(o, "message", "Profile updated");
    chat_reply(r, 200, o);
}

static void
put_profile(struct chat_req *r)
{
    static const char *const fields[] = {"about", "gender", "firstName",
                                         "lastName"};
    static const size_t caps[] = {ABOUT_MAX, 0, NAME_FIELD_MAX, NAME_FIELD_MAX};
    char *vals[4] = {NULL, NULL, NULL, NULL}, id[24];
    const char *params[5];
    int i, n = 0;

    for (i = 0; i < 4; i++) {
        const char *v = chat_body_str(r, fields[i]);

        if (v == NULL)
            continue;
        if (i == 1 && !gender_valid(v)) {
            for (i = 0; i < 4; i++)
                free(vals[i]);
            chat_reply_error(r, 400, "Invalid gender");
            return;
        }
        vals[i] = i == 1 ? pm_xstrdup(v) : sanitize(v, caps[i]);
        n++;
    }
    if (n == 0) {
        chat_reply_error(r, 400, "No valid fields to update");
        return;
    }
    chat_id_text(r->acct.id, id);
    params[0] = id;
    for (i = 0; i < 4; i++)
        params[i + 1] = vals[i];
    pm_db_query(r->chat->db,
                "UPDATE users SET about = COALESCE($2, about), "
                "gender = COALESCE($3, gender), "
                "first_name = COALESCE($4, first_name), "
                "last_name = COALESCE($5, last_name) WHERE id = $1",
                5, params, profile_done, r);
    for (i = 0; i < 4; i++)
        free(vals[i]);
}

/* ---- changes that revoke tokens -------------------------------------- */

/* The UPDATE ... RETURNING token_version of a revoking change is done. */
static void
revoked(void *arg, const struct pm_db_res *res)
{
    struct chat_req *r = arg;
    cJSON *o;

    if (res->status == PM_ECONFLICT) {
        chat_reply_error(r, 400, "Username already taken");
        return;
    }
    if (res->status != PM_OK || res->nrows != 1) {
        if (res->status == PM_OK)
            chat_reply_error(r, 404, "User not found");
        else
            chat_reply_db_error(r, res);
        return;
    }
    chat_fanout_kick(r->chat, r->acct.id, pm_db_int(res, 0, 0, 0),
                     "session revoked");
    o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "success", true);
    if (r->s2 != NULL) {
        pm_strlcpy(r->acct.name, r->s2, sizeof r->acct.name);
        cJSON_AddStringToObject(o, "username", r->acct.name);
    }
    if (r->s1 != NULL)
        cJSON_AddStringToObject(o, "message", r->s1);
    if (r->logout)
        chat_reply(r, 200, o);
    else
        reply_token(r, 200, o, pm_db_int(res, 0, 0, 0));
}

static void
change_username(struct chat_req *r)
{
    const char *nu = chat_body_str(r, "newUsername");
    char name[CHAT_NAME_MAX + 1], id[24];
    const char *params[2] = {id, name};

    if (nu == NULL || !chat_username_valid(nu)) {
        chat_reply_error(r, 400, "Invalid username format");
        return;
    }
    lower_copy(nu, name, sizeof name);
    r->s2 = pm_xstrdup(name);
    chat_id_text(r->acct.id, id);
    pm_db_query(r->chat->db,
                "UPDATE users SET username = $2, token_version = "
                "token_version + 1 WHERE id = $1 RETURNING token_version",
                2, params, revoked, r);
}

static void
password_hashed(struct chat_req *r)
{
    char id[CHAT_ID_SIZE];
    const char *params[2] = {id, r->hash};

    if (r->hash[0] == '\0') {
        chat_reply_error(r, 500, "Could not hash the password");
        return;
    }
    chat_id_text(r->acct.id, id);
    r->s1 = pm_xstrdup("Password changed successfully");
    pm_db_query(r->chat->db,
                "UPDATE users SET password = $2, token_version = "
                "token_version + 1 WHERE id = $1 RETURNING token_version",
                2, params, revoked, r);
}

static void
password_verified(struct chat_req *r)
{
    if (!r->flag) {
        chat_reply_error(r, 401, "Current password is incorrect");
        return;
    }
    chat_req_hash(r, r->s2, password_hashed);
    free(r->s2);
    r->s2 = NULL;
}

static void
change_password(struct chat_req *r)
{
    const char *cur = chat_body_str(r, "currentPassword");
    const char *nw = chat_body_str(r, "newPassword");

    if (cur == NULL || nw == NULL || !*cur || !*nw) {
        chat_reply_error(r, 400, "Current and new password are required");
        return;
    }
    if (utf8_chars(nw) < PW_MIN || utf8_chars(nw) > PW_MAX) {
        chat_reply_error(r, 400, "New password must be 6-100 characters");
        return;
    }
    r->s2 = pm_xstrdup(nw);
    chat_req_verify(r, cur, password_verified);
}

static void
deleted(void *arg, const struct pm_db_res *res)
{
    struct chat_req *r = arg;
    cJSON *o;

    if (!chat_db_ok(r, res))
        return;
    chat_fanout_kick(r->chat, r->acct.id, INT64_MAX, "account deleted");
    pm_log(PM_LOG_INFO, "user_deleted", "user %s (id %lld)", r->acct.name,
           (long long)r->acct.id);
    o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "success", true);
    cJSON_AddStringToObject(o, "message", "Account deleted successfully");
    chat_reply(r, 200, o);
}

static void
delete_verified(struct chat_req *r)
{
    char id[CHAT_ID_SIZE];
    const char *params[1] = {id};

    if (!r->flag) {
        chat_reply_error(r, 401, "Incorrect password");
        return;
    }
    chat_id_text(r->acct.id, id);
    pm_db_query(r->chat->db, "DELETE FROM users WHERE id = $1", 1, params,
                deleted, r);
}

static void
delete_account(struct chat_req *r)
{
    const char *pw = chat_body_str(r, "password");

    if (pw == NULL || !*pw) {
        chat_reply_error(r, 400, "Password is required");
        return;
    }
    chat_req_verify(r, pw, delete_verified);
}

static void
logout(struct chat_req *r)
{
    char id[CHAT_ID_SIZE];
    const char *params[1] = {id};

    chat_id_text(r->acct.id, id);
    r->logout = true;
    pm_db_query(r->chat->db,
                "UPDATE users SET token_version = token_version + 1 "
                "WHERE id = $1 RETURNING token_version",
                1, params, revoked, r);
}

/* ---- routing ------------------------------------------------------------ */

struct route {
    const char *method;
    const char *path;
    bool auth;
    bool strict; /* the stricter login/register limit */
    chat_req_fn fn;
};

static const struct route routes[] = {
    {"POST", "/api/register", false, true, register_user},
    {"POST", "/api/login", false, true, login},
    {"GET", "/api/verify-token", true, false, verify_token},
    {"GET", "/api/profile", true, false, get_profile},
    {"PUT", "/api/profile", true, false, put_profile},
    {"POST", "/api/auth/change-username", true, false, change_username},
    {"POST", "/api/auth/change-password", true, false, change_password},
    {"DELETE", "/api/auth/delete-account", true, false, delete_account},
    {"POST", "/api/logout", true, false, logout},
};

static bool
path_is(const struct pm_http_request *req, const char *p)
{
    return req->path_len == strlen(p) &&
           memcmp(req->path, p, req->path_len) == 0;
}

static bool
method_is(const struct pm_http_request *req, const char *m)
{
    return req->method_len == strlen(m) &&
           memcmp(req->method, m, req->method_len) == 0;
}

int
chat_accounts_route(struct chat *chat, struct pm_conn *c,
                    const struct pm_http_request *req, const uint8_t *body,
                    size_t len)
{
    static const char check[] = "/api/check-username/";
    const struct route *rt = NULL;
    struct chat_req *r;
    size_t i;

    if (req->path_len > sizeof check - 1 &&
        memcmp(req->path, check, sizeof check - 1) == 0) {
        char name[64];

        if (!method_is(req, "GET"))
            return PM_ENOTFOUND;
        if (pm_percent_decode(req->path + sizeof check - 1,
                              req->path_len - (sizeof check - 1), false, name,
                              sizeof name) != PM_OK)
            name[0] = '\0';
        r = chat_req_new(chat, c);
        r->arg = pm_xstrdup(name);
        check_username(r);
        return PM_OK;
    }
    for (i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (path_is(req, routes[i].path) && method_is(req, routes[i].method))
            rt = &routes[i];
    if (rt == NULL)
        return PM_ENOTFOUND;
    r = chat_req_new(chat, c);
    if (rt->strict && !chat_rate_take(chat, "auth", pm_conn_ip(c),
                                      chat->conf->auth_rate_max)) {
        chat_reply_error(r, 429, "Too many attempts, please try again later");
        return PM_OK;
    }
    if (chat_req_body(r, body, len) != PM_OK)
        return PM_OK;
    if (rt->auth)
        chat_req_auth(r, req, rt->fn);
    else
        rt->fn(r);
    return PM_OK;
}
