/*
 * lambda_store_dynamodb: the lambda role's connection store in DynamoDB
 * (lambda.dynamodb_table, the seed's CONNECTIONS_TABLE), spoken as the
 * low-level JSON API signed with SigV4. One table, hash key connectionId
 * (S), TTL attribute ttl (epoch seconds), and a GSI
 * (lambda.dynamodb_index, default realm-index) with hash key realm and
 * range key peerId. Two kinds of item:
 *
 *   connection  {connectionId: cid, realm: "r:" + the realm (key attributes
 *                may not be empty, the global realm is ""), peerId (after
 *                join), sub, ttl, connectedAt}: in the GSI once joined, so
 *                a Query lists a realm (never a Scan)
 *   peer        {connectionId: "peer#<len(realm)>#<realm>#<peerId>",
 *                target: cid, ttl}: who holds an id, read consistently
 *                (GSIs are only eventually consistent)
 *
 * A message refreshes the connection's ttl (UpdateItem, one round trip
 * that also returns the item), and the peer item's once half its
 * lifetime has passed. Items past their ttl are ignored (DynamoDB deletes
 * them only within days). Throttling and 5xx answers are retried twice.
 * Loop thread.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "lambda.h"
#include "pm_log.h"
#include "pm_server.h"
#include "pm_util.h"

#define DDB_RETRIES 2

struct dstore {
    struct lam *l;
    char *url;
    const char *table, *index;
    uint64_t ttl_s;
    struct pm_httpc *http;
    struct pm_aws_creds creds;
    bool closing;               /* no retries: pm_httpc_free is answering */
    TAILQ_HEAD(, dreq) backoff; /* requests waiting to be retried */
};

enum dop_kind { D_WRITE, D_TOUCH, D_DELETE, D_GET, D_LIST };

/* One operation: one or two requests (their answers counted). */
struct dop {
    struct dstore *ds;
    enum dop_kind kind;
    int outstanding;
    int rv;
    struct lam_conn_info *info;
    char **cid;
    struct lam_peer **list;
    size_t *n, cap;
    char *realm; /* D_LIST: for the next page */
    lam_store_fn cb;
    void *arg;
};

/* One request of an operation, kept for a retry. */
struct dreq {
    struct dop *op;
    struct event *timer;    /* retry */
    TAILQ_ENTRY(dreq) link; /* in ds->backoff while it waits */
    const char *target;     /* static: PutItem, ... */
    char *body;
    unsigned tries;
    bool ok_if_condition; /* a failed condition is PM_ENOTFOUND */
};

static void send_req(struct dreq *rq);

static void
dop_done(struct dop *op)
{
    if (--op->outstanding > 0)
        return;
    op->cb(op->rv, op->arg);
    free(op->realm);
    free(op);
}

static void
retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct dreq *rq = arg;

    (void)fd;
    (void)what;
    TAILQ_REMOVE(&rq->op->ds->backoff, rq, link);
    send_req(rq);
}

static void
dreq_free(struct dreq *rq)
{
    if (rq->timer != NULL)
        event_free(rq->timer);
    free(rq->body);
    free(rq);
}

static const char *
num(char *buf, size_t len, uint64_t v)
{
    snprintf(buf, len, "%llu", (unsigned long long)v);
    return buf;
}

/* The value of a typed attribute {"S":..} / {"N":..} of item, or NULL. */
static const char *
attr(const cJSON *item, const char *name, const char *type)
{
    return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(item, name), type));
}

static bool
expired(const cJSON *item)
{
    const char *t = attr(item, "ttl", "N");

    return t != NULL && strtoull(t, NULL, 10) < pm_wall_ms() / 1000;
}

static char *
dup_or_null(const char *s)
{
    return s != NULL ? pm_xstrdup(s) : NULL;
}

static void list_page(struct dop *op, const cJSON *start);

/* A successful answer: fill the outputs. */
static void
take(struct dop *op, const cJSON *res)
{
    const cJSON *a, *items, *it, *lek;
    const char *p, *c, *t;

    switch (op->kind) {
    case D_TOUCH:
    case D_DELETE:
        a = cJSON_GetObjectItemCaseSensitive(res, "Attributes");
        if (a == NULL) {
            op->rv = PM_ENOTFOUND;
            break;
        }
        if (op->info == NULL)
            break;
        p = attr(a, "realm", "S");
        op->info->realm =
            pm_xstrdup(p != NULL && strncmp(p, "r:", 2) == 0 ? p + 2 : "");
        op->info->peer = dup_or_null(attr(a, "peerId", "S"));
        op->info->sub = dup_or_null(attr(a, "sub", "S"));
        t = attr(a, "ttl", "N");
        /* the peer item was refreshed with the connection: stale once
         * half its lifetime is gone */
        op->info->peer_stale =
            t == NULL ||
            strtoull(t, NULL, 10) < pm_wall_ms() / 1000 + op->ds->ttl_s / 2;
        break;
    case D_GET:
        it = cJSON_GetObjectItemCaseSensitive(res, "Item");
        c = attr(it, "target", "S");
        if (c == NULL || expired(it))
            op->rv = PM_ENOTFOUND;
        else
            *op->cid = pm_xstrdup(c);
        break;
    case D_LIST:
        items = cJSON_GetObjectItemCaseSensitive(res, "Items");
        cJSON_ArrayForEach(it, items)
        {
            p = attr(it, "peerId", "S");
            c = attr(it, "connectionId", "S");
            if (p == NULL || c == NULL || expired(it))
                continue;
            if (*op->n == op->cap) {
                op->cap = op->cap ? 2 * op->cap : 16;
                *op->list = pm_xrealloc(*op->list, op->cap * sizeof **op->list);
            }
            (*op->list)[*op->n].peer = pm_xstrdup(p);
            (*op->list)[*op->n].cid = pm_xstrdup(c);
            (*op->n)++;
        }
        lek = cJSON_GetObjectItemCaseSensitive(res, "LastEvaluatedKey");
        if (lek != NULL) {
            op->outstanding++;
            list_page(op, lek);
        }
        break;
    default:
        break;
    }
}

static void
answered(const struct pm_httpc_res *res, void *arg)
{
    struct dreq *rq = arg;
    struct dop *op = rq->op;
    cJSON *body = res->status ? cJSON_ParseWithLength((const char *)res->body,
                                                      res->body_len)
                              : NULL;
    const char *type =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(body, "__type"));
    const char *why =
        type != NULL && strchr(type, '#') ? strchr(type, '#') + 1 : type;

    if (res->status == 200) {
        take(op, body);
    } else if (res->status == 400 && why != NULL &&
               strcmp(why, "ConditionalCheckFailedException") == 0 &&
               rq->ok_if_condition) {
        if (op->rv == PM_OK)
            op->rv = PM_ENOTFOUND;
    } else if ((res->status == 0 || res->status >= 500 ||
                (why != NULL &&
                 (strcmp(why, "ProvisionedThroughputExceededException") == 0 ||
                  strcmp(why, "ThrottlingException") == 0 ||
                  strcmp(why, "RequestLimitExceeded") == 0))) &&
               rq->tries < DDB_RETRIES) {
        struct timeval tv = {0, 25000 << (2 * rq->tries)};

        rq->tries++;
        cJSON_Delete(body);
        if (rq->timer == NULL)
            rq->timer =
                evtimer_new(pm_server_base(op->ds->l->srv), retry_cb, rq);
        evtimer_add(rq->timer, &tv);
        TAILQ_INSERT_TAIL(&op->ds->backoff, rq, link);
        return;
    } else {
        op->rv = PM_EUNAVAIL;
        const char *msg = cJSON_GetStringValue(
            cJSON_GetObjectItemCaseSensitive(body, "message"));
        const char *token = op->ds->l->creds.session_token;

        /* a signature error quotes the canonical request: the token */
        if (msg == NULL || (token != NULL && strstr(msg, token) != NULL))
            msg = "";
        pm_log(PM_LOG_ERROR, "store_failed", "dynamodb %s: %d %s %.200s",
               rq->target, res->status,
               res->status ? (why ? why : "(no error type)") : res->error, msg);
    }
    cJSON_Delete(body);
    dreq_free(rq);
    dop_done(op);
}

static void
failed_later(int rv, void *arg)
{
    struct dreq *rq = arg;
    struct dop *op = rq->op;

    (void)rv;
    dreq_free(rq);
    dop_done(op);
}

static void
send_req(struct dreq *rq)
{
    struct dstore *ds = rq->op->ds;
    char target[64], err[PM_ERRMSG_SIZE];
    struct pm_httpc_header h[2] = {
        {"Content-Type", "application/x-amz-json-1.0"},
        {"X-Amz-Target", target},
    };
    struct pm_httpc_req req = {"POST",
                               ds->url,
                               h,
                               2,
                               rq->body,
                               strlen(rq->body),
                               ds->l->conf->aws_timeout};

    snprintf(target, sizeof target, "DynamoDB_20120810.%s", rq->target);
    if (pm_aws_send(ds->l->aws, &ds->l->creds, ds->l->conf->region, "dynamodb",
                    &req, answered, rq, err, sizeof err) != PM_OK) {
        pm_log(PM_LOG_ERROR, "store_failed", "dynamodb: %s", err);
        rq->op->rv = PM_EUNAVAIL;
        lam_store_defer(pm_server_base(ds->l->srv), failed_later, rq, 0);
    }
}

/* Send body (a request of op; the object is consumed). */
static void
request(struct dop *op, const char *target, cJSON *body, bool ok_if_condition)
{
    struct dreq *rq = pm_xcalloc(1, sizeof *rq);

    cJSON_AddStringToObject(body, "TableName", op->ds->table);
    rq->op = op;
    rq->target = target;
    rq->body = cJSON_PrintUnformatted(body);
    rq->ok_if_condition = ok_if_condition;
    cJSON_Delete(body);
    send_req(rq);
}

static struct dop *
dop_new(struct dstore *ds, enum dop_kind kind, int nreq, lam_store_fn cb,
        void *arg)
{
    struct dop *op = pm_xcalloc(1, sizeof *op);

    op->ds = ds;
    op->kind = kind;
    op->outstanding = nreq;
    op->cb = cb;
    op->arg = arg;
    return op;
}

/* {"<name>":{"<type>":value}} added to o. */
static void
put_attr(cJSON *o, const char *name, const char *type, const char *value)
{
    cJSON *v = cJSON_AddObjectToObject(o, name);

    cJSON_AddStringToObject(v, type, value);
}

/* A realm as stored: "r:" + name (never empty). */
static void
put_realm(cJSON *o, const char *name, const char *realm)
{
    char *v = pm_xasprintf("r:%s", realm);

    put_attr(o, name, "S", v);
    free(v);
}

static cJSON *
key_of(const char *id)
{
    cJSON *o = cJSON_CreateObject();

    put_attr(cJSON_AddObjectToObject(o, "Key"), "connectionId", "S", id);
    return o;
}

static char *
peer_key(const char *realm, const char *peer)
{
    return pm_xasprintf("peer#%zu#%s#%s", strlen(realm), realm, peer);
}

/* ExpressionAttributeNames / Values from NULL-ended name pairs. */
static void
names(cJSON *o, ...)
{
    cJSON *n = cJSON_AddObjectToObject(o, "ExpressionAttributeNames");
    const char *k, *v;
    va_list ap;

    va_start(ap, o);
    while ((k = va_arg(ap, const char *)) != NULL) {
        v = va_arg(ap, const char *);
        cJSON_AddStringToObject(n, k, v);
    }
    va_end(ap);
}

static cJSON *
values(cJSON *o)
{
    return cJSON_AddObjectToObject(o, "ExpressionAttributeValues");
}

static int
ds_open(struct lam *l, void **st, char *err, size_t errlen)
{
    struct dstore *ds = pm_xcalloc(1, sizeof *ds);

    ds->l = l;
    ds->table = l->conf->dynamodb_table;
    ds->index = l->conf->dynamodb_index;
    ds->ttl_s = l->conf->connection_ttl / 1000;
    TAILQ_INIT(&ds->backoff);
    ds->url = l->conf->dynamodb_endpoint
                  ? pm_xstrdup(l->conf->dynamodb_endpoint)
                  : pm_xasprintf("https://dynamodb.%s.amazonaws.com/",
                                 l->conf->region);
    *st = ds;
    return PM_OK;
}

/* After the client was freed (it answered every request in flight):
 * what waits for a retry fails now. */
static void
ds_close(void *st)
{
    struct dstore *ds = st;
    struct dreq *rq;
    struct dop *op;

    while ((rq = TAILQ_FIRST(&ds->backoff)) != NULL) {
        TAILQ_REMOVE(&ds->backoff, rq, link);
        op = rq->op;
        op->rv = PM_EUNAVAIL;
        dreq_free(rq);
        dop_done(op);
    }
    free(ds->url);
    free(ds);
}

static void
ds_conn_put(void *st, const char *cid, const char *realm, const char *sub,
            lam_store_fn cb, void *arg)
{
    struct dstore *ds = st;
    cJSON *o = cJSON_CreateObject(), *item = cJSON_AddObjectToObject(o, "Item");
    char n1[24], n2[24];

    put_attr(item, "connectionId", "S", cid);
    put_realm(item, "realm", realm);
    if (sub != NULL)
        put_attr(item, "sub", "S", sub);
    put_attr(item, "ttl", "N",
             num(n1, sizeof n1, pm_wall_ms() / 1000 + ds->ttl_s));
    put_attr(item, "connectedAt", "N", num(n2, sizeof n2, pm_wall_ms()));
    request(dop_new(ds, D_WRITE, 1, cb, arg), "PutItem", o, false);
}

static void
ds_conn_touch(void *st, const char *cid, struct lam_conn_info *out,
              lam_store_fn cb, void *arg)
{
    struct dstore *ds = st;
    struct dop *op = dop_new(ds, D_TOUCH, 1, cb, arg);
    cJSON *o = key_of(cid);
    char n[24];

    op->info = out;
    cJSON_AddStringToObject(o, "UpdateExpression", "SET #t = :t");
    cJSON_AddStringToObject(o, "ConditionExpression",
                            "attribute_exists(connectionId)");
    names(o, "#t", "ttl", NULL);
    put_attr(values(o), ":t", "N",
             num(n, sizeof n, pm_wall_ms() / 1000 + ds->ttl_s));
    cJSON_AddStringToObject(o, "ReturnValues", "ALL_OLD");
    request(op, "UpdateItem", o, true);
}

static void
ds_conn_delete(void *st, const char *cid, struct lam_conn_info *out,
               lam_store_fn cb, void *arg)
{
    struct dop *op = dop_new(st, D_DELETE, 1, cb, arg);
    cJSON *o = key_of(cid);

    op->info = out;
    cJSON_AddStringToObject(o, "ReturnValues", "ALL_OLD");
    request(op, "DeleteItem", o, false);
}

static void
ds_peer_get(void *st, const char *realm, const char *peer, char **cid,
            lam_store_fn cb, void *arg)
{
    struct dop *op = dop_new(st, D_GET, 1, cb, arg);
    char *k = peer_key(realm, peer);
    cJSON *o = key_of(k);

    free(k);
    op->cid = cid;
    cJSON_AddBoolToObject(o, "ConsistentRead", true);
    request(op, "GetItem", o, false);
}

static void
list_page(struct dop *op, const cJSON *start)
{
    struct dstore *ds = op->ds;
    cJSON *o = cJSON_CreateObject(), *v;
    char n[24];

    cJSON_AddStringToObject(o, "IndexName", ds->index);
    cJSON_AddStringToObject(o, "KeyConditionExpression", "#r = :r");
    cJSON_AddStringToObject(o, "FilterExpression", "#t > :now");
    cJSON_AddStringToObject(o, "ProjectionExpression",
                            "connectionId, peerId, #t");
    names(o, "#r", "realm", "#t", "ttl", NULL);
    v = values(o);
    put_realm(v, ":r", op->realm);
    put_attr(v, ":now", "N", num(n, sizeof n, pm_wall_ms() / 1000));
    if (start != NULL)
        cJSON_AddItemToObject(o, "ExclusiveStartKey",
                              cJSON_Duplicate(start, true));
    request(op, "Query", o, false);
}

static void
ds_realm_list(void *st, const char *realm, struct lam_peer **out, size_t *n,
              lam_store_fn cb, void *arg)
{
    struct dop *op = dop_new(st, D_LIST, 1, cb, arg);

    *out = NULL;
    *n = 0;
    op->list = out;
    op->n = n;
    op->realm = pm_xstrdup(realm);
    list_page(op, NULL);
}

static void
ds_peer_set(void *st, const char *realm, const char *peer, const char *cid,
            lam_store_fn cb, void *arg)
{
    struct dstore *ds = st;
    struct dop *op = dop_new(ds, D_WRITE, 2, cb, arg);
    char *k = peer_key(realm, peer), t[24];
    cJSON *o = cJSON_CreateObject(), *item = cJSON_AddObjectToObject(o, "Item"),
          *u = key_of(cid), *v;

    num(t, sizeof t, pm_wall_ms() / 1000 + ds->ttl_s);
    put_attr(item, "connectionId", "S", k);
    put_attr(item, "target", "S", cid);
    put_attr(item, "ttl", "N", t);
    free(k);
    request(op, "PutItem", o, false);
    cJSON_AddStringToObject(u, "UpdateExpression",
                            "SET #p = :p, #r = :r, #t = :t");
    names(u, "#p", "peerId", "#r", "realm", "#t", "ttl", NULL);
    v = values(u);
    put_attr(v, ":p", "S", peer);
    put_realm(v, ":r", realm);
    put_attr(v, ":t", "N", t);
    request(op, "UpdateItem", u, false);
}

static void
ds_peer_touch(void *st, const char *realm, const char *peer, const char *cid,
              lam_store_fn cb, void *arg)
{
    struct dstore *ds = st;
    char *k = peer_key(realm, peer), t[24];
    cJSON *o = key_of(k), *v;

    free(k);
    cJSON_AddStringToObject(o, "UpdateExpression", "SET #t = :t");
    cJSON_AddStringToObject(o, "ConditionExpression", "#g = :c");
    names(o, "#t", "ttl", "#g", "target", NULL);
    v = values(o);
    put_attr(v, ":t", "N", num(t, sizeof t, pm_wall_ms() / 1000 + ds->ttl_s));
    put_attr(v, ":c", "S", cid);
    request(dop_new(ds, D_WRITE, 1, cb, arg), "UpdateItem", o, true);
}

static void
ds_peer_clear(void *st, const char *realm, const char *peer, const char *cid,
              bool conn_gone, lam_store_fn cb, void *arg)
{
    struct dstore *ds = st;
    struct dop *op = dop_new(ds, D_WRITE, conn_gone ? 1 : 2, cb, arg);
    char *k = peer_key(realm, peer);
    cJSON *o = key_of(k), *u;

    free(k);
    cJSON_AddStringToObject(o, "ConditionExpression", "#g = :c");
    names(o, "#g", "target", NULL);
    put_attr(values(o), ":c", "S", cid);
    request(op, "DeleteItem", o, true);
    if (conn_gone)
        return;
    u = key_of(cid);
    cJSON_AddStringToObject(u, "UpdateExpression", "REMOVE #p");
    cJSON_AddStringToObject(u, "ConditionExpression",
                            "attribute_exists(connectionId) AND #p = :p");
    names(u, "#p", "peerId", NULL);
    put_attr(values(u), ":p", "S", peer);
    request(op, "UpdateItem", u, true);
}

const struct lam_store lam_store_dynamodb = {
    .name = "dynamodb",
    .open = ds_open,
    .close = ds_close,
    .conn_put = ds_conn_put,
    .conn_touch = ds_conn_touch,
    .conn_delete = ds_conn_delete,
    .peer_get = ds_peer_get,
    .realm_list = ds_realm_list,
    .peer_set = ds_peer_set,
    .peer_touch = ds_peer_touch,
    .peer_clear = ds_peer_clear,
};
