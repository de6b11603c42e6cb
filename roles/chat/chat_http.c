/*
 * chat_http: the plumbing every REST route shares. A chat_req holds a
 * reference on the connection from the request until the reply, so a
 * route can wait for the database or the worker pool and answer later
 * (pm_conn_http_respond ignores a client that left). Also the bearer
 * authentication (token, then the account row, then the token version),
 * password hashing on the worker pool, and the REST rate buckets.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "chat.h"
#include "pm_conn.h"
#include "pm_http.h"
#include "pm_log.h"
#include "pm_loop.h"
#include "pm_server.h"
#include "pm_util.h"

struct chat_req *
chat_req_new(struct chat *chat, struct pm_conn *c)
{
    struct chat_req *r = pm_xcalloc(1, sizeof *r);

    r->chat = chat;
    r->c = c;
    pm_conn_ref(c);
    return r;
}

void
chat_req_free(struct chat_req *r)
{
    pm_conn_unref(r->c);
    cJSON_Delete(r->body);
    chat_account_clear(&r->acct);
    free(r->arg);
    free(r->query);
    free(r->s1);
    free(r->s2);
    free(r->s3);
    explicit_bzero(r->hash, sizeof r->hash);
    free(r);
}

static void
respond_json(struct chat_req *r, int status, const char *extra,
             struct cJSON *obj)
{
    char *text = cJSON_PrintUnformatted(obj);

    pm_conn_http_respond(r->c, status, "application/json; charset=utf-8", extra,
                         text, strlen(text));
    cJSON_free(text);
    cJSON_Delete(obj);
    chat_req_free(r);
}

void
chat_reply(struct chat_req *r, int status, struct cJSON *obj)
{
    respond_json(r, status, NULL, obj);
}

void
chat_reply_error(struct chat_req *r, int status, const char *msg)
{
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "error", msg);
    respond_json(r, status, NULL, o);
}

void
chat_reply_bad_token(struct chat_req *r)
{
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "error", "Invalid or expired token");
    respond_json(r, 401, "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n",
                 o);
}

void
chat_reply_db_error(struct chat_req *r, const struct pm_db_res *res)
{
    if (res != NULL && res->status != PM_EUNAVAIL)
        pm_log(PM_LOG_ERROR, "db_error", "%s",
               res->err != NULL ? res->err : "unknown");
    chat_reply_error(r, 503, "Database unavailable, try again");
}

bool
chat_db_ok(struct chat_req *r, const struct pm_db_res *res)
{
    if (res->status == PM_OK)
        return true;
    chat_reply_db_error(r, res);
    return false;
}

void
chat_id_text(int64_t id, char out[CHAT_ID_SIZE])
{
    snprintf(out, CHAT_ID_SIZE, "%lld", (long long)id);
}

int
chat_req_body(struct chat_req *r, const uint8_t *body, size_t len)
{
    if (len > CHAT_BODY_MAX) {
        chat_reply_error(r, 413, "Request body too large");
        return PM_EINVAL;
    }
    r->body = len > 0 ? cJSON_ParseWithLength((const char *)body, len) : NULL;
    if (len > 0 && !cJSON_IsObject(r->body)) {
        chat_reply_error(r, 400, "Request body must be a JSON object");
        return PM_EINVAL;
    }
    if (r->body == NULL)
        r->body = cJSON_CreateObject();
    return PM_OK;
}

const char *
chat_body_str(const struct chat_req *r, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->body, name);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* ---- bearer authentication ------------------------------------------ */

static void
auth_loaded(void *arg, const struct pm_db_res *res)
{
    struct chat_req *r = arg;
    int64_t ver = r->acct.ver;
    char who[CHAT_ID_SIZE];

    if (!chat_db_ok(r, res))
        return;
    if (res->nrows == 0) {
        /* The account was deleted: its tokens died with it. */
        chat_token_floor(r->chat, r->acct.id, INT64_MAX);
        chat_reply_bad_token(r);
        return;
    }
    chat_account_from_row(&r->acct, res, 0);
    chat_token_floor(r->chat, r->acct.id, r->acct.ver);
    if (r->acct.ver != ver) {
        chat_reply_bad_token(r); /* revoked: an older token version */
        return;
    }
    chat_id_text(r->acct.id, who);
    if (!chat_rate_take(r->chat, "user", who, r->chat->conf->rate_max)) {
        chat_reply_error(r, 429, "Too many requests, please try again later");
        return;
    }
    r->authed = true;
    r->next(r);
}

void
chat_req_auth(struct chat_req *r, const struct pm_http_request *req,
              chat_req_fn next)
{
    const struct pm_http_header *h = pm_http_header_get(req, "Authorization");
    char err[PM_ERRMSG_SIZE], idtext[24];
    const char *params[1] = {idtext};
    int64_t id, ver;

    if (h == NULL || h->value_len < 7 ||
        !pm_strcaseeq(h->value, 7, "Bearer ")) {
        chat_reply_error(r, 401, "Authentication required");
        return;
    }
    if (chat_token_check(r->chat, h->value + 7, h->value_len - 7, &id, &ver,
                         err, sizeof err) != PM_OK) {
        pm_log(PM_LOG_DEBUG, "token_refused", "%s", err);
        chat_reply_bad_token(r);
        return;
    }
    if (!pm_db_is_up(r->chat->db)) {
        chat_reply_db_error(r, NULL);
        return;
    }
    r->acct.id = id;
    r->acct.ver = ver;
    r->next = next;
    chat_id_text(id, idtext);
    pm_db_query(r->chat->db,
                "SELECT " CHAT_ACCOUNT_COLS
                " FROM users WHERE id = $1 AND is_active = 1",
                1, params, auth_loaded, r);
}

/* ---- passwords on the worker pool ----------------------------------- */

static void
hash_work(void *arg)
{
    struct chat_req *r = arg;

    if (pm_passwd_hash(r->s3, r->hash) != PM_OK)
        r->hash[0] = '\0';
}

static void
verify_work(void *arg)
{
    struct chat_req *r = arg;

    r->flag = r->acct.hash != NULL && pm_passwd_verify(r->s3, r->acct.hash);
}

static void
pw_done(void *arg)
{
    struct chat_req *r = arg;

    explicit_bzero(r->s3, strlen(r->s3));
    free(r->s3);
    r->s3 = NULL;
    if (r->next == NULL)
        return;
    r->next(r);
}

/* Run work on a copy of pw (in r->s3, wiped after) on the pool. */
static void
pw_submit(struct chat_req *r, const char *pw, chat_req_fn next, pm_work_fn work)
{
    free(r->s3);
    r->s3 = pm_xstrdup(pw);
    r->next = next;
    pm_loop_submit(pm_server_loop(r->chat->srv), work, pw_done, r);
}

void
chat_req_hash(struct chat_req *r, const char *pw, chat_req_fn next)
{
    pw_submit(r, pw, next, hash_work);
}

void
chat_req_verify(struct chat_req *r, const char *pw, chat_req_fn next)
{
    pw_submit(r, pw, next, verify_work);
}

/* ---- REST rate limits ------------------------------------------------ */

bool
chat_rate_take(struct chat *chat, const char *kind, const char *who,
               int64_t max)
{
    struct pm_rate rate = {(uint32_t)max, chat->conf->rate_window};
    struct chat_rate *b;
    char key[sizeof b->key];
    uint64_t now = pm_now_ms();

    if (max <= 0)
        return true;
    snprintf(key, sizeof key, "%s:%s", kind, who);
    HASH_FIND_STR(chat->rates, key, b);
    if (b == NULL) {
        b = pm_xcalloc(1, sizeof *b);
        pm_strlcpy(b->key, key, sizeof b->key);
        pm_bucket_init(&b->bucket, (uint32_t)max, now);
        HASH_ADD_STR(chat->rates, key, b);
    }
    return pm_bucket_take(&b->bucket, &rate, (uint32_t)max, now);
}

void
chat_rate_sweep(struct chat *chat)
{
    struct chat_rate *b, *tmp;
    uint64_t now = pm_now_ms();

    /* A bucket idle for a whole window is full again: forget it. */
    HASH_ITER(hh, chat->rates, b, tmp)
    {
        if (now - b->bucket.last_ms >= chat->conf->rate_window) {
            HASH_DEL(chat->rates, b);
            free(b);
        }
    }
}

void
chat_rate_free(struct chat *chat)
{
    struct chat_rate *b, *tmp;

    HASH_ITER(hh, chat->rates, b, tmp)
    {
        HASH_DEL(chat->rates, b);
        free(b);
    }
}
