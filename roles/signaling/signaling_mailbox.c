/*
 * signaling_mailbox: the mailbox dialect, the "blind rendezvous" REST API
 * of the Rust signaling server (reference/signaling.md section A), and
 * its /ws/{mailbox_id} push. This file owns the routes, the request
 * flows and the local push hub (mailbox id -> subscribed sockets); the
 * state is in signaling_mbstore: in memory, or in Redis in cluster mode
 * so that any instance serves any call. Loop thread.
 *
 * Keys (Redis: "{prefix}:" first, redis.key_prefix, default sig). The
 * first three are the seed server's, with its JSON values:
 *   mailbox_meta:{id}    {"mailbox_id","peer_mailbox_id","created_at_epoch_ms",
 *                        "expires_at_epoch_ms"}
 *   mailbox_msgs:{id}    list of messages[] items (JSON)
 *   rendezvous:{token}   the initiator's mailbox id
 *   mailbox_seq:{id}     counter (INCR) giving each item of the list its
 *                        sequence: concurrent sends never share one
 *   session:{client_id}  {"client_id","session_token","device_label",
 *                        "registered_at_epoch_ms","last_heartbeat_epoch_ms"},
 *                        living signaling.session_ttl after its last use
 *   sessions:live        sorted set of live client ids ("Client N")
 *   signals:{client_id}  list of legacy /signal envelopes for it
 *
 * Where the seed server is silent or is fixed here:
 *  - Deadline: a pairing's expires_at_epoch_ms is mailbox_ttl after its
 *    last activity (init, join, a send from either side, a recv), not
 *    fixed at init. The three keys of a mailbox live one more mailbox_ttl
 *    past it, so a late send still learns 410 "Session expired"; after
 *    that everything is 404 "Mailbox not found".
 *  - Lists keep their newest signaling.mailbox_list_max items (the oldest
 *    are dropped, never the new one: the sender always gets 202, the
 *    subscriber was pushed every item, and sequences keep growing, so a
 *    client polling recv sees the gap). Legacy /signal lists likewise.
 *  - Rendezvous tokens are taken with GETDEL: one join per link even when
 *    two race. (Between reading a mailbox and linking it at join there
 *    is no lock, but only its one token leads there.)
 *  - Bad bodies are answered as axum's Json extractor does, since that
 *    is what the seed's clients met: 400 when the body is not JSON, 422
 *    when it is but a field is missing or of the wrong type; the body is
 *    {"message": ...} like every error here. Content-Type is not checked.
 *  - /ws/{id} upgrades for any well-formed id (32 lowercase hex digits,
 *    the form this server hands out) whether or not the mailbox exists,
 *    as the seed's HEAD does: clients subscribe right after init, and in
 *    cluster mode an upgrade cannot wait for Redis. Other ids get 404.
 *  - A subscriber more than signaling.push_buffer pushes behind (those
 *    whose bytes are still queued for it) is closed with 1008.
 *  - Sessions are refreshed by each call that proves them (heartbeat,
 *    init, /signal, /signal/fetch).
 *  - Redis down: 503 {"message":"Redis unavailable"}; an error reply: 500
 *    "Redis error: ..." as the seed server.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <cjson/cJSON.h>

#include "pm_conn.h"
#include "pm_http.h"
#include "pm_log.h"
#include "pm_util.h"
#include "signaling.h"
#include "signaling_mbstore.h"

#define MB_ID_LEN 32   /* hex digits of a mailbox id */
#define MB_UUID_LEN 36 /* a client id or session token */

struct mb_topic;

/* One /ws/{id} socket (its sig_client's dd). */
struct mb_sub {
    struct mb_topic *topic;
    struct sig_client *client;
    size_t pos;      /* in topic->subs */
    uint32_t *sizes; /* ring: frame bytes of the latest pushes */
    size_t cap, head, count;
};

/* The local subscribers of one mailbox. */
struct mb_topic {
    char id[MB_ID_LEN + 1];
    struct mb_sub **subs;
    size_t n, cap;
    UT_hash_handle hh;
};

struct mb_req;
TAILQ_HEAD(mb_req_list, mb_req);

struct sig_mbx {
    struct mbs *store;
    struct mb_topic *topics;
    struct mb_req_list reqs; /* waiting for the store */
};

/* One request, answered after one or more store batches. */
struct mb_req {
    struct sig *s;
    struct pm_conn *conn;
    cJSON *body;
    uint64_t now; /* wall clock ms when it came */
    /* auth(): the client, and what to do once its session checks out */
    const char *client_id, *token;
    cJSON *session;
    void (*next)(struct mb_req *q);
    const char *mailbox_id;   /* the caller's own mailbox */
    const char *arg;          /* rendezvous id, ciphertext or /signal target */
    char *peer;               /* the other mailbox of the pair */
    cJSON *meta;              /* a mailbox_meta value as read */
    char id[MB_UUID_LEN + 1]; /* new client id or mailbox id */
    char token_new[MB_UUID_LEN + 1];
    uint64_t expires;
    char *item; /* the message item to push */
    TAILQ_ENTRY(mb_req) link;
};

/* Up to MBS_MAX_BATCH commands, and the strings to free after the run. */
struct mb_batch {
    struct mbs_cmd cmd[MBS_MAX_BATCH];
    char *own[2 * MBS_MAX_BATCH];
    size_t n, nown;
};

/* ---- small helpers ------------------------------------------------ */

static char *
print_json(const cJSON *o)
{
    char *t = cJSON_PrintUnformatted(o);

    PM_ASSERT(t != NULL); /* cJSON fails only when memory does */
    return t;
}

static char *
key(struct sig *s, const char *kind, const char *id)
{
    return mbs_key(s->mbx->store, kind, id);
}

/* Keys of a mailbox live one mailbox_ttl past its deadline. */
static uint64_t
box_ttl(const struct sig *s)
{
    return 2 * s->conf->mailbox_ttl;
}

static double
heartbeat_secs(const struct sig *s)
{
    return (double)(s->conf->heartbeat_interval / 1000);
}

static char *
b_keep(struct mb_batch *b, char *p)
{
    b->own[b->nown++] = p;
    return p;
}

/* Add a command; key (malloc'd) is freed after the run, val is not. */
static void
b_add(struct mb_batch *b, enum mbs_op op, char *k, const char *val,
      uint64_t ttl_ms, size_t max)
{
    struct mbs_cmd *c = &b->cmd[b->n++];

    PM_ASSERT(b->n <= MBS_MAX_BATCH);
    c->op = op;
    c->key = b_keep(b, k);
    c->val = val;
    c->ttl_ms = ttl_ms;
    c->max = max;
}

/* Run the batch; done may have run (and freed its request) on return. */
static void
b_run(struct sig *s, struct mb_batch *b, mbs_done_fn done, void *arg)
{
    size_t i;

    mbs_run(s->mbx->store, b->cmd, b->n, done, arg);
    for (i = 0; i < b->nown; i++)
        free(b->own[i]);
}

static void
uuid4(char *out)
{
    uint8_t b[16];

    pm_random_bytes(b, sizeof b);
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, MB_UUID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
             "%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10],
             b[11], b[12], b[13], b[14], b[15]);
}

/* 16 random bytes in lowercase hex, as the seed's gen_mailbox_id. */
static void
mailbox_id_new(char *out)
{
    uint8_t b[MB_ID_LEN / 2];
    size_t i;

    pm_random_bytes(b, sizeof b);
    for (i = 0; i < sizeof b; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static bool
mailbox_id_valid(const char *p, size_t n)
{
    size_t i;

    if (n != MB_ID_LEN)
        return false;
    for (i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return false;
    return true;
}

static bool
path_is(const struct pm_http_request *req, const char *path)
{
    size_t n = strlen(path);

    return req->path_len == n && memcmp(req->path, path, n) == 0;
}

static bool
method_is(const struct pm_http_request *req, const char *m)
{
    size_t n = strlen(m);

    return req->method_len == n && memcmp(req->method, m, n) == 0;
}

static uint64_t
number_of(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

    return cJSON_IsNumber(v) && v->valuedouble > 0 ? (uint64_t)v->valuedouble
                                                   : 0;
}

/* ---- stored values ------------------------------------------------ */

static char *
meta_json(const char *id, const char *peer, uint64_t created, uint64_t expires)
{
    cJSON *o = cJSON_CreateObject();
    char *t;

    cJSON_AddStringToObject(o, "mailbox_id", id);
    if (peer != NULL)
        cJSON_AddStringToObject(o, "peer_mailbox_id", peer);
    else
        cJSON_AddNullToObject(o, "peer_mailbox_id");
    cJSON_AddNumberToObject(o, "created_at_epoch_ms", (double)created);
    cJSON_AddNumberToObject(o, "expires_at_epoch_ms", (double)expires);
    t = print_json(o);
    cJSON_Delete(o);
    return t;
}

/* A mailbox_meta value: *peer NULL when unpaired. */
static bool
meta_parse(const cJSON *o, const char **peer, uint64_t *created,
           uint64_t *expires)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "peer_mailbox_id");

    if (!cJSON_IsObject(o) || !cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(
                                  o, "expires_at_epoch_ms")))
        return false;
    *peer = cJSON_IsString(p) ? p->valuestring : NULL;
    *created = number_of(o, "created_at_epoch_ms");
    *expires = number_of(o, "expires_at_epoch_ms");
    return true;
}

/* The same meta with a new deadline (peer and creation kept). */
static char *
meta_renewed(const cJSON *o, const char *id, uint64_t expires)
{
    const char *peer;
    uint64_t created, old;

    if (!meta_parse(o, &peer, &created, &old))
        return NULL;
    return meta_json(id, peer, created, expires);
}

static char *
item_json(const char *from, const char *ciphertext, long long seq, uint64_t ts)
{
    cJSON *o = cJSON_CreateObject();
    char *t;

    cJSON_AddStringToObject(o, "from_mailbox_id", from);
    cJSON_AddStringToObject(o, "ciphertext_b64", ciphertext);
    cJSON_AddNumberToObject(o, "sequence", (double)seq);
    cJSON_AddNumberToObject(o, "timestamp_epoch_ms", (double)ts);
    t = print_json(o);
    cJSON_Delete(o);
    return t;
}

/* The stored items of r as a JSON array (unreadable ones skipped);
 * *last the sequence of the last one (0 if none). */
static cJSON *
items_array(const struct mbs_res *r, uint64_t *last)
{
    cJSON *a = cJSON_CreateArray(), *it;
    size_t i;

    *last = 0;
    for (i = 0; i < r->n; i++) {
        it = cJSON_ParseWithLength(r->items[i], r->lens[i]);
        if (!cJSON_IsObject(it)) {
            cJSON_Delete(it);
            continue;
        }
        *last = number_of(it, "sequence");
        cJSON_AddItemToArray(a, it);
    }
    return a;
}

/* ---- answers ------------------------------------------------------ */

static void
req_release(struct mb_req *q)
{
    TAILQ_REMOVE(&q->s->mbx->reqs, q, link);
    cJSON_Delete(q->body);
    cJSON_Delete(q->session);
    cJSON_Delete(q->meta);
    free(q->peer);
    free(q->item);
    free(q);
}

/* Answer with o (consumed; NULL: no body) and free q. */
static void
reply(struct mb_req *q, int status, cJSON *o)
{
    char *text = NULL;

    if (o != NULL) {
        text = print_json(o);
        cJSON_Delete(o);
    }
    pm_conn_http_respond(q->conn, status, text ? "application/json" : NULL,
                         NULL, text, text ? strlen(text) : 0);
    free(text);
    pm_conn_unref(q->conn);
    req_release(q);
}

static void
reply_error(struct mb_req *q, int status, const char *message)
{
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "message", message);
    reply(q, status, o);
}

/* True (and q answered) when a store batch failed. */
static bool
store_failed(struct mb_req *q, int err, const char *errtext)
{
    char *m;

    if (err == PM_OK)
        return false;
    if (err == PM_EUNAVAIL) {
        reply_error(q, 503, "Redis unavailable");
        return true;
    }
    m = pm_xasprintf("Redis error: %s", errtext);
    reply_error(q, 500, m);
    free(m);
    return true;
}

static void
reply_bad_state(struct mb_req *q)
{
    reply_error(q, 500, "Redis error: unreadable mailbox state");
}

/* The string member name of o; NULL once q is answered 422. */
static const char *
field(struct mb_req *q, const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    char *m;

    if (cJSON_IsString(v))
        return v->valuestring;
    m = pm_xasprintf("Failed to deserialize the JSON body into the target "
                     "type: %s `%s`",
                     v == NULL ? "missing field" : "invalid type for field",
                     name);
    reply_error(q, 422, m);
    free(m);
    return NULL;
}

/* ---- sessions ----------------------------------------------------- */

static char *
session_json(const char *id, const char *token, const char *label, uint64_t now)
{
    cJSON *o = cJSON_CreateObject();
    char *t;

    cJSON_AddStringToObject(o, "client_id", id);
    cJSON_AddStringToObject(o, "session_token", token);
    cJSON_AddStringToObject(o, "device_label", label);
    cJSON_AddNumberToObject(o, "registered_at_epoch_ms", (double)now);
    cJSON_AddNumberToObject(o, "last_heartbeat_epoch_ms", (double)now);
    t = print_json(o);
    cJSON_Delete(o);
    return t;
}

static void
auth_done(void *arg, int err, const char *errtext, const struct mbs_res *res)
{
    struct mb_req *q = arg;
    const cJSON *tok;

    if (store_failed(q, err, errtext))
        return;
    if (res[0].nil || (q->session = cJSON_Parse(res[0].str)) == NULL) {
        reply_error(q, 404, "client not found");
        return;
    }
    tok = cJSON_GetObjectItemCaseSensitive(q->session, "session_token");
    if (!cJSON_IsString(tok) || strcmp(tok->valuestring, q->token) != 0) {
        reply_error(q, 401, "session token rejected");
        return;
    }
    q->next(q);
}

/* Check client_id's session_token (404, 401), then next(q). */
static void
auth(struct mb_req *q, const char *client_id, const char *token,
     void (*next)(struct mb_req *q))
{
    struct mb_batch b = {0};

    q->client_id = client_id;
    q->token = token;
    q->next = next;
    b_add(&b, MBS_GET, key(q->s, "session", client_id), NULL, 0, 0);
    b_run(q->s, &b, auth_done, q);
}

/* Add the two commands that keep q's checked session alive (a session
 * that expired meanwhile stays gone: SET XX). */
static void
b_refresh(struct mb_batch *b, struct mb_req *q)
{
    struct sig *s = q->s;

    cJSON_DeleteItemFromObjectCaseSensitive(q->session,
                                            "last_heartbeat_epoch_ms");
    cJSON_AddNumberToObject(q->session, "last_heartbeat_epoch_ms",
                            (double)q->now);
    b_add(b, MBS_SET_XX, key(s, "session", q->client_id),
          b_keep(b, print_json(q->session)), s->conf->session_ttl, 0);
    b_add(b, MBS_LIVE, key(s, "sessions", "live"), q->client_id,
          s->conf->session_ttl, 0);
}

/* POST /register {device_label} */
static void
register_done(void *arg, int err, const char *errtext,
              const struct mbs_res *res)
{
    struct mb_req *q = arg;
    char name[32];
    cJSON *o;

    if (store_failed(q, err, errtext))
        return;
    snprintf(name, sizeof name, "Client %lld", res[1].num);
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "client_id", q->id);
    cJSON_AddStringToObject(o, "session_token", q->token_new);
    cJSON_AddNumberToObject(o, "heartbeat_interval_secs", heartbeat_secs(q->s));
    cJSON_AddStringToObject(o, "display_name", name);
    reply(q, 200, o);
}

static void
register_start(struct mb_req *q)
{
    struct sig *s = q->s;
    struct mb_batch b = {0};
    const char *label = field(q, q->body, "device_label");

    if (label == NULL)
        return;
    uuid4(q->id);
    uuid4(q->token_new);
    b_add(&b, MBS_SET, key(s, "session", q->id),
          b_keep(&b, session_json(q->id, q->token_new, label, q->now)),
          s->conf->session_ttl, 0);
    b_add(&b, MBS_LIVE, key(s, "sessions", "live"), q->id, s->conf->session_ttl,
          0);
    b_run(s, &b, register_done, q);
}

/* POST /heartbeat {client_id, session_token} */
static void
heartbeat_done(void *arg, int err, const char *errtext,
               const struct mbs_res *res)
{
    struct mb_req *q = arg;
    cJSON *o;

    if (store_failed(q, err, errtext))
        return;
    if (res[0].nil) {
        reply_error(q, 404, "client not found");
        return;
    }
    o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "next_heartbeat_secs", heartbeat_secs(q->s));
    reply(q, 200, o);
}

static void
heartbeat_next(struct mb_req *q)
{
    struct mb_batch b = {0};

    b_refresh(&b, q);
    b_run(q->s, &b, heartbeat_done, q);
}

/* Check the body's client_id and session_token, then run next. */
static void
auth_body(struct mb_req *q, void (*next)(struct mb_req *))
{
    const char *id, *token;

    if ((id = field(q, q->body, "client_id")) == NULL ||
        (token = field(q, q->body, "session_token")) == NULL)
        return;
    auth(q, id, token, next);
}

static void
heartbeat_start(struct mb_req *q)
{
    auth_body(q, heartbeat_next);
}

/* ---- legacy /signal and /signal/fetch ----------------------------- */

static void
accepted(void *arg, int err, const char *errtext, const struct mbs_res *res)
{
    struct mb_req *q = arg;

    (void)res;
    if (!store_failed(q, err, errtext))
        reply(q, 202, NULL);
}

static void
signal_next(struct mb_req *q)
{
    struct sig *s = q->s;
    const cJSON *env = cJSON_GetObjectItemCaseSensitive(q->body, "envelope");
    cJSON *o = cJSON_CreateObject();
    struct mb_batch b = {0};

    /* The server's clock, not the sender's, dates the envelope. */
    cJSON_AddStringToObject(o, "from", q->client_id);
    cJSON_AddStringToObject(o, "to", q->arg);
    cJSON_AddItemToObject(
        o, "payload",
        cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(env, "payload"), 1));
    cJSON_AddNumberToObject(o, "created_at_epoch_ms", (double)q->now);
    b_add(&b, MBS_PUSH, key(s, "signals", q->arg), b_keep(&b, print_json(o)),
          s->conf->session_ttl, (size_t)s->conf->mailbox_list_max);
    cJSON_Delete(o);
    b_refresh(&b, q);
    b_run(s, &b, accepted, q);
}

/* POST /signal {session_token, envelope: {from, to, payload,
 * created_at_epoch_ms}}: verifies from's token, queues for to. */
static void
signal_start(struct mb_req *q)
{
    const cJSON *env = cJSON_GetObjectItemCaseSensitive(q->body, "envelope");
    const char *token, *from, *to;

    if ((token = field(q, q->body, "session_token")) == NULL)
        return;
    if (!cJSON_IsObject(env)) {
        reply_error(q, 422,
                    "Failed to deserialize the JSON body into the target "
                    "type: missing field `envelope`");
        return;
    }
    if ((from = field(q, env, "from")) == NULL ||
        (to = field(q, env, "to")) == NULL || field(q, env, "payload") == NULL)
        return;
    if (!cJSON_IsNumber(
            cJSON_GetObjectItemCaseSensitive(env, "created_at_epoch_ms"))) {
        reply_error(q, 422,
                    "Failed to deserialize the JSON body into the target "
                    "type: missing field `created_at_epoch_ms`");
        return;
    }
    q->arg = to;
    auth(q, from, token, signal_next);
}

static void
fetch_done(void *arg, int err, const char *errtext, const struct mbs_res *res)
{
    struct mb_req *q = arg;
    uint64_t last;
    cJSON *o;

    if (store_failed(q, err, errtext))
        return;
    o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "messages", items_array(&res[0], &last));
    reply(q, 200, o);
}

static void
fetch_next(struct mb_req *q)
{
    struct sig *s = q->s;
    struct mb_batch b = {0};

    b_add(&b, MBS_TAKE, key(s, "signals", q->client_id), NULL, 0,
          (size_t)s->conf->mailbox_list_max);
    b_refresh(&b, q);
    b_run(s, &b, fetch_done, q);
}

/* POST /signal/fetch {client_id, session_token}: takes what waits. */
static void
fetch_start(struct mb_req *q)
{
    auth_body(q, fetch_next);
}

/* ---- push hub ----------------------------------------------------- */

static size_t
frame_len(size_t len)
{
    return len + (len < 126 ? 2 : len < 65536 ? 4 : 10);
}

/* How many of sub's latest pushes are still (partly) in its queue of
 * pending bytes: the newest ones, as bytes leave in order. */
static size_t
pushes_behind(const struct mb_sub *sub, size_t pending)
{
    size_t k = 0, sum = 0, i = sub->head;

    while (k < sub->count && sum < pending) {
        i = (i + sub->cap - 1) % sub->cap;
        sum += sub->sizes[i];
        k++;
    }
    return k;
}

static void
push_one(struct sig *s, struct mb_sub *sub, const char *msg, size_t len)
{
    struct pm_conn *conn = sub->client->conn;
    size_t fl = frame_len(len);

    if (sub->sizes == NULL) {
        sub->cap = (size_t)s->conf->push_buffer;
        sub->sizes = pm_xcalloc(sub->cap, sizeof *sub->sizes);
    }
    if (pushes_behind(sub, pm_conn_pending(conn)) >= sub->cap) {
        pm_log_kv(PM_LOG_INFO, "mailbox_push_lagging",
                  "push subscriber too far behind; closing it", "mailbox_id",
                  sub->topic->id, NULL);
        pm_conn_ws_close(conn, PM_WS_POLICY, "push buffer full");
        return; /* sub is gone (sig_mailbox_departed) */
    }
    if (pm_conn_ws_send(conn, PM_WS_TEXT, msg, len) != PM_OK)
        return; /* dropped: sub is gone */
    (*s->stats.relayed_mailbox)++;
    sub->sizes[sub->head] = fl > UINT32_MAX ? UINT32_MAX : (uint32_t)fl;
    sub->head = (sub->head + 1) % sub->cap;
    if (sub->count < sub->cap)
        sub->count++;
}

/* Push msg to the local subscribers of mailbox id. */
static void
deliver(struct sig *s, const char *id, const char *msg, size_t len)
{
    struct mb_topic *t;
    struct pm_conn **conns;
    struct sig_client *c;
    size_t i, n;

    HASH_FIND_STR(s->mbx->topics, id, t);
    if (t == NULL)
        return;
    /* A push can close a subscriber, which edits t (or frees it):
     * walk a copy (connections are freed only after this callback). */
    n = t->n;
    conns = pm_xmalloc(n * sizeof *conns);
    for (i = 0; i < n; i++)
        conns[i] = t->subs[i]->client->conn;
    for (i = 0; i < n; i++) {
        c = pm_conn_data(conns[i]);
        if (c != NULL && c->dd != NULL)
            push_one(s, c->dd, msg, len);
    }
    free(conns);
}

/* A new item in mailbox id: to its subscribers here and elsewhere. */
static void
notify(struct sig *s, const char *id, const char *item)
{
    size_t len = strlen(item);

    deliver(s, id, item, len);
    sig_cluster_broadcast(s, SIG_CHAN_MAILBOX, id, item, len);
}

void
sig_mailbox_remote(struct sig *s, const char *id, const char *msg, size_t len)
{
    deliver(s, id, msg, len);
}

bool
sig_mailbox_is_ws(const struct sig *s, const struct pm_http_request *req)
{
    (void)s;
    return req->path_len > 4 && memcmp(req->path, "/ws/", 4) == 0;
}

int
sig_mailbox_upgrade(struct sig *s, struct sig_client *c,
                    const struct pm_http_request *req, int *status)
{
    const char *id = req->path + 4;
    size_t n = req->path_len - 4;
    struct mb_topic *t;
    struct mb_sub *sub;

    if (!mailbox_id_valid(id, n)) {
        *status = 404;
        return PM_ENOTFOUND;
    }
    HASH_FIND(hh, s->mbx->topics, id, n, t);
    if (t == NULL) {
        t = pm_xcalloc(1, sizeof *t);
        memcpy(t->id, id, n);
        HASH_ADD_STR(s->mbx->topics, id, t);
        sig_cluster_watch(s, SIG_CHAN_MAILBOX, t->id);
    }
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 2;
        t->subs = pm_xrealloc(t->subs, t->cap * sizeof *t->subs);
    }
    sub = pm_xcalloc(1, sizeof *sub);
    sub->topic = t;
    sub->client = c;
    sub->pos = t->n;
    t->subs[t->n++] = sub;
    c->dd = sub;
    return PM_OK;
}

void
sig_mailbox_departed(struct sig *s, struct sig_client *c)
{
    struct mb_sub *sub = c->dd;
    struct mb_topic *t;

    if (sub == NULL)
        return;
    t = sub->topic;
    t->subs[sub->pos] = t->subs[--t->n];
    t->subs[sub->pos]->pos = sub->pos;
    free(sub->sizes);
    free(sub);
    c->dd = NULL;
    if (t->n > 0)
        return;
    sig_cluster_unwatch(s, SIG_CHAN_MAILBOX, t->id);
    HASH_DEL(s->mbx->topics, t);
    free(t->subs);
    free(t);
}

/*
 * The first result of a step is the caller's mailbox meta: parse it into
 * q->meta. False when the request was answered instead (store failure,
 * 404 Mailbox not found, unreadable state).
 */
static bool
meta_loaded(struct mb_req *q, int err, const char *errtext,
            const struct mbs_res *res, const char **peer, uint64_t *created,
            uint64_t *expires)
{
    if (store_failed(q, err, errtext))
        return false;
    if (res[0].nil) {
        reply_error(q, 404, "Mailbox not found");
        return false;
    }
    q->meta = cJSON_Parse(res[0].str);
    if (!meta_parse(q->meta, peer, created, expires)) {
        reply_bad_state(q);
        return false;
    }
    return true;
}

/* ---- /connection/init, join, send, recv, close -------------------- */

static void
init_done(void *arg, int err, const char *errtext, const struct mbs_res *res)
{
    struct mb_req *q = arg;
    cJSON *o;

    (void)res;
    if (store_failed(q, err, errtext))
        return;
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "mailbox_id", q->id);
    cJSON_AddNumberToObject(o, "expires_at_epoch_ms", (double)q->expires);
    reply(q, 200, o);
}

static void
init_next(struct mb_req *q)
{
    struct sig *s = q->s;
    struct mb_batch b = {0};

    mailbox_id_new(q->id);
    q->expires = q->now + s->conf->mailbox_ttl;
    b_add(&b, MBS_SET, key(s, "mailbox_meta", q->id),
          b_keep(&b, meta_json(q->id, NULL, q->now, q->expires)), box_ttl(s),
          0);
    b_add(&b, MBS_SET, key(s, "rendezvous", q->arg), q->id,
          s->conf->rendezvous_ttl, 0);
    b_refresh(&b, q);
    b_run(s, &b, init_done, q);
}

/* POST /connection/init {client_id, session_token, rendezvous_id_b64} */
static void
init_start(struct mb_req *q)
{
    const char *id, *token;

    if ((id = field(q, q->body, "client_id")) == NULL ||
        (token = field(q, q->body, "session_token")) == NULL ||
        (q->arg = field(q, q->body, "rendezvous_id_b64")) == NULL)
        return;
    auth(q, id, token, init_next);
}

static void
join_done(void *arg, int err, const char *errtext, const struct mbs_res *res)
{
    struct mb_req *q = arg;
    cJSON *o;

    (void)res;
    if (store_failed(q, err, errtext))
        return;
    notify(q->s, q->peer, q->item);
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "mailbox_id", q->id);
    cJSON_AddNumberToObject(o, "expires_at_epoch_ms", (double)q->expires);
    reply(q, 200, o);
}

/* Both mailboxes written: the join event goes into the initiator's. */
static void
join_linked(void *arg, int err, const char *errtext, const struct mbs_res *res)
{
    struct mb_req *q = arg;
    struct sig *s = q->s;
    struct mb_batch b = {0};

    if (store_failed(q, err, errtext))
        return;
    if (res[0].nil) { /* closed meanwhile; ours expires unused */
        reply_error(q, 404, "Mailbox not found");
        return;
    }
    q->item = item_json(q->id, "", res[2].num - 1, q->now);
    b_add(&b, MBS_PUSH, key(s, "mailbox_msgs", q->peer), q->item, box_ttl(s),
          (size_t)s->conf->mailbox_list_max);
    b_run(s, &b, join_done, q);
}

static void
join_meta(void *arg, int err, const char *errtext, const struct mbs_res *res)
{
    struct mb_req *q = arg;
    struct sig *s = q->s;
    struct mb_batch b = {0};
    const char *peer;
    uint64_t created, expires;

    if (!meta_loaded(q, err, errtext, res, &peer, &created, &expires))
        return;
    if (q->now >= expires) { /* in its grace period: as if gone */
        reply_error(q, 404, "Mailbox not found");
        return;
    }
    if (peer != NULL) {
        reply_error(q, 409, "Session already has a peer");
        return;
    }
    mailbox_id_new(q->id);
    q->expires = q->now + s->conf->mailbox_ttl;
    b_add(&b, MBS_SET_XX, key(s, "mailbox_meta", q->peer),
          b_keep(&b, meta_json(q->peer, q->id, created, q->expires)),
          box_ttl(s), 0);
    b_add(&b, MBS_SET, key(s, "mailbox_meta", q->id),
          b_keep(&b, meta_json(q->id, q->peer, created, q->expires)),
          box_ttl(s), 0);
    b_add(&b, MBS_INCR, key(s, "mailbox_seq", q->peer), NULL, box_ttl(s), 0);
    b_add(&b, MBS_EXPIRE, key(s, "mailbox_msgs", q->peer), NULL, box_ttl(s), 0);
    b_run(s, &b, join_linked, q);
}

static void
join_token(void *arg, int err, const char *errtext, const struct mbs_res *res)
{
    struct mb_req *q = arg;
    struct mb_batch b = {0};

    if (store_failed(q, err, errtext))
        return;
    if (res[0].nil) {
        reply_error(q, 404, "Invalid or expired token");
        return;
    }
    q->peer = pm_xstrdup(res[0].str); /* the initiator's mailbox */
    b_add(&b, MBS_GET, key(q->s, "mailbox_meta", q->peer), NULL, 0, 0);
    b_run(q->s, &b, join_meta, q);
}

/* POST /connection/join {token_b64} */
static void
join_start(struct mb_req *q)
{
    struct mb_batch b = {0};
    const char *token = field(q, q->body, "token_b64");

    if (token == NULL)
        return;
    b_add(&b, MBS_GETDEL, key(q->s, "rendezvous", token), NULL, 0, 0);
    b_run(q->s, &b, join_token, q);
}

/* Add the commands giving mailbox id (meta o) the deadline expires. */
static void
b_renew(struct mb_batch *b, struct sig *s, const char *id, const cJSON *o,
        uint64_t expires)
{
    char *meta = meta_renewed(o, id, expires);

    if (meta == NULL)
        return;
    b_add(b, MBS_SET_XX, key(s, "mailbox_meta", id), b_keep(b, meta),
          box_ttl(s), 0);
    b_add(b, MBS_EXPIRE, key(s, "mailbox_msgs", id), NULL, box_ttl(s), 0);
    b_add(b, MBS_EXPIRE, key(s, "mailbox_seq", id), NULL, box_ttl(s), 0);
}

static void
send_done(void *arg, int err, const char *errtext, const struct mbs_res *res)
{
    struct mb_req *q = arg;

    (void)res;
    if (store_failed(q, err, errtext))
        return;
    notify(q->s, q->peer, q->item);
    reply(q, 202, NULL);
}

/* Own mailbox renewed, the peer's sequence taken and its meta read. */
static void
send_seq(void *arg, int err, const char *errtext, const struct mbs_res *res)
{
    struct mb_req *q = arg;
    struct sig *s = q->s;
    struct mb_batch b = {0};
    cJSON *peer_meta;

    if (store_failed(q, err, errtext))
        return;
    if (res[0].nil) { /* closed meanwhile */
        reply_error(q, 404, "Mailbox not found");
        return;
    }
    q->item = item_json(q->mailbox_id, q->arg, res[3].num - 1, q->now);
    b_add(&b, MBS_PUSH, key(s, "mailbox_msgs", q->peer), q->item, box_ttl(s),
          (size_t)s->conf->mailbox_list_max);
    /* The pairing's deadline moves for both sides. */
    if (!res[4].nil) {
        peer_meta = cJSON_Parse(res[4].str);
        b_renew(&b, s, q->peer, peer_meta, q->expires);
        cJSON_Delete(peer_meta);
    }
    b_run(s, &b, send_done, q);
}

static void
send_meta(void *arg, int err, const char *errtext, const struct mbs_res *res)
{
    struct mb_req *q = arg;
    struct sig *s = q->s;
    struct mb_batch b = {0};
    const char *peer;
    uint64_t created, expires;

    if (!meta_loaded(q, err, errtext, res, &peer, &created, &expires))
        return;
    if (peer == NULL) {
        reply_error(q, 409, "No peer connected");
        return;
    }
    if (q->now >= expires) {
        reply_error(q, 410, "Session expired");
        return;
    }
    q->peer = pm_xstrdup(peer);
    q->expires = q->now + s->conf->mailbox_ttl;
    b_renew(&b, s, q->mailbox_id, q->meta, q->expires); /* 0, 1, 2 */
    b_add(&b, MBS_INCR, key(s, "mailbox_seq", q->peer), NULL, box_ttl(s), 0);
    b_add(&b, MBS_GET, key(s, "mailbox_meta", q->peer), NULL, 0, 0);
    b_run(s, &b, send_seq, q);
}

/* POST /connection/send {mailbox_id, ciphertext_b64} */
static void
send_start(struct mb_req *q)
{
    struct mb_batch b = {0};

    if ((q->mailbox_id = field(q, q->body, "mailbox_id")) == NULL ||
        (q->arg = field(q, q->body, "ciphertext_b64")) == NULL)
        return;
    b_add(&b, MBS_GET, key(q->s, "mailbox_meta", q->mailbox_id), NULL, 0, 0);
    b_run(q->s, &b, send_meta, q);
}

static void
recv_done(void *arg, int err, const char *errtext, const struct mbs_res *res)
{
    struct mb_req *q = arg;
    struct sig *s = q->s;
    struct mb_batch b = {0};
    const char *peer;
    uint64_t created, expires, last;
    cJSON *o;

    if (!meta_loaded(q, err, errtext, res, &peer, &created, &expires))
        return;
    if (q->now < expires) { /* activity; an expired session stays so */
        b_renew(&b, s, q->mailbox_id, q->meta, q->now + s->conf->mailbox_ttl);
        b_run(s, &b, NULL, NULL);
    }
    o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "messages", items_array(&res[1], &last));
    cJSON_AddNumberToObject(o, "last_sequence", (double)last);
    reply(q, 200, o);
}

/* POST /connection/recv {mailbox_id, ciphertext_b64}: the whole list,
 * not consumed (the seed reuses send's body, so both are required). */
static void
recv_start(struct mb_req *q)
{
    struct mb_batch b = {0};

    if ((q->mailbox_id = field(q, q->body, "mailbox_id")) == NULL ||
        field(q, q->body, "ciphertext_b64") == NULL)
        return;
    b_add(&b, MBS_GET, key(q->s, "mailbox_meta", q->mailbox_id), NULL, 0, 0);
    b_add(&b, MBS_RANGE, key(q->s, "mailbox_msgs", q->mailbox_id), NULL, 0, 0);
    b_run(q->s, &b, recv_done, q);
}

static void
b_delete_box(struct mb_batch *b, struct sig *s, const char *id)
{
    b_add(b, MBS_DEL, key(s, "mailbox_meta", id), NULL, 0, 0);
    b_add(b, MBS_DEL, key(s, "mailbox_msgs", id), NULL, 0, 0);
    b_add(b, MBS_DEL, key(s, "mailbox_seq", id), NULL, 0, 0);
}

static void
close_meta(void *arg, int err, const char *errtext, const struct mbs_res *res)
{
    struct mb_req *q = arg;
    struct mb_batch b = {0};
    const char *peer = NULL;
    uint64_t created, expires;

    if (store_failed(q, err, errtext))
        return;
    if (res[0].nil) {
        reply(q, 202, NULL);
        return;
    }
    q->meta = cJSON_Parse(res[0].str);
    b_delete_box(&b, q->s, q->mailbox_id);
    if (meta_parse(q->meta, &peer, &created, &expires) && peer != NULL)
        b_delete_box(&b, q->s, peer);
    b_run(q->s, &b, accepted, q);
}

/* POST /connection/close {mailbox_id}: both mailboxes go; 202 always. */
static void
close_start(struct mb_req *q)
{
    struct mb_batch b = {0};

    if ((q->mailbox_id = field(q, q->body, "mailbox_id")) == NULL)
        return;
    b_add(&b, MBS_GET, key(q->s, "mailbox_meta", q->mailbox_id), NULL, 0, 0);
    b_run(q->s, &b, close_meta, q);
}

/* ---- routes ------------------------------------------------------- */

static const struct mb_route {
    const char *path;
    void (*start)(struct mb_req *q);
} routes[] = {
    {"/register", register_start},      {"/heartbeat", heartbeat_start},
    {"/signal", signal_start},          {"/signal/fetch", fetch_start},
    {"/connection/init", init_start},   {"/connection/join", join_start},
    {"/connection/send", send_start},   {"/connection/recv", recv_start},
    {"/connection/close", close_start},
};

/* GET / and plain HTTP on /ws/{id} (known paths, so 405 not 404). */
static int
other_route(struct pm_conn *conn, const struct pm_http_request *req)
{
    static const char ok[] = "Server OK!";

    if (path_is(req, "/")) {
        if (method_is(req, "GET") || method_is(req, "HEAD"))
            pm_conn_http_respond(conn, 200, "text/plain; charset=utf-8", NULL,
                                 ok, sizeof ok - 1);
        else
            pm_conn_http_respond(conn, 405, NULL, "Allow: GET, HEAD\r\n", NULL,
                                 0);
        return PM_OK;
    }
    if (req->path_len > 4 && memcmp(req->path, "/ws/", 4) == 0 &&
        mailbox_id_valid(req->path + 4, req->path_len - 4)) {
        if (method_is(req, "GET"))
            pm_conn_http_respond(conn, 426, NULL, "Upgrade: websocket\r\n",
                                 NULL, 0);
        else
            pm_conn_http_respond(conn, 405, NULL, "Allow: GET\r\n", NULL, 0);
        return PM_OK;
    }
    return PM_ENOTFOUND;
}

int
sig_mailbox_http(struct sig *s, struct pm_conn *conn,
                 const struct pm_http_request *req, const uint8_t *body,
                 size_t len)
{
    const struct mb_route *rt = NULL;
    struct mb_req *q;
    size_t i;

    for (i = 0; i < sizeof routes / sizeof routes[0] && rt == NULL; i++)
        if (path_is(req, routes[i].path))
            rt = &routes[i];
    if (rt == NULL)
        return other_route(conn, req);
    if (!method_is(req, "POST")) {
        pm_conn_http_respond(conn, 405, NULL, "Allow: POST\r\n", NULL, 0);
        return PM_OK;
    }
    q = pm_xcalloc(1, sizeof *q);
    q->s = s;
    q->conn = conn;
    q->now = pm_wall_ms();
    pm_conn_ref(conn);
    TAILQ_INSERT_TAIL(&s->mbx->reqs, q, link);
    q->body = cJSON_ParseWithLength((const char *)body, len);
    if (q->body == NULL)
        reply_error(q, 400, "Failed to parse the request body as JSON");
    else if (!cJSON_IsObject(q->body))
        reply_error(q, 422,
                    "Failed to deserialize the JSON body into the target "
                    "type: expected a JSON object");
    else
        rt->start(q);
    /* Answered already, or when the store replies (then q goes). */
    return PM_EAGAIN;
}

void
sig_mailbox_init(struct sig *s)
{
    s->mbx = pm_xcalloc(1, sizeof *s->mbx);
    s->mbx->store = mbs_new(s);
    TAILQ_INIT(&s->mbx->reqs);
}

void
sig_mailbox_free(struct sig *s)
{
    struct mb_req *q;

    if (s->mbx == NULL)
        return;
    /* The cluster (and its Redis link) went first: no reply can come. */
    mbs_free(s->mbx->store);
    /* Their connections are closed; the references kept them. */
    while ((q = TAILQ_FIRST(&s->mbx->reqs)) != NULL) {
        pm_conn_unref(q->conn);
        req_release(q);
    }
    /* Subscribers left through sig_mailbox_departed. */
    PM_ASSERT(s->mbx->topics == NULL);
    free(s->mbx);
    s->mbx = NULL;
}
