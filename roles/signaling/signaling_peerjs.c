/*
 * signaling_peerjs: the PeerJS dialect (npm "peer" server protocol, as
 * the npm "peerjs" client speaks it). It owns the HTTP API under
 * signaling.peerjs_path (banner, GET {key}/id, GET {key}/peers, CORS),
 * the WebSocket handshake of {path}peerjs?key=&id=&token= (OPEN, ERROR,
 * ID-TAKEN, same-token takeover), the relay of OFFER, ANSWER, CANDIDATE
 * and LEAVE as {type, src, dst, payload} with src forced to the sender,
 * and the liveness of its connections: one list ordered by the last
 * message heard and one timer armed for the oldest, which closes clients
 * silent for signaling.peerjs_alive_timeout. Ids live in one realm (the
 * configured key); routing, the offline queue and EXPIRE are the
 * router's (signaling_relay.c, signaling_offline.c). Loop thread.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/uio.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "pm_conn.h"
#include "pm_http.h"
#include "pm_log.h"
#include "pm_metrics.h"
#include "pm_server.h"
#include "pm_util.h"
#include "signaling.h"

/* A token longer than this could not be told to other instances (the
 * cluster carries tokens in 256-byte fields). */
#define PJS_MAX_TOKEN 255

/* One PeerJS connection (sig_client dd). */
struct pjs_conn {
    struct sig_client *client;
    char *key;  /* from the query until the handshake; NULL: missing */
    char *want; /* the id asked for, likewise */
    TAILQ_ENTRY(pjs_conn) by_seen;
};

TAILQ_HEAD(pjs_list, pjs_conn);

struct sig_peerjs {
    char *path; /* the mount path with a leading and a trailing '/' */
    size_t path_len;
    struct pjs_list by_seen; /* open connections, least recently heard first */
    struct event *alive_timer; /* armed for the first of by_seen */
};

static const char banner[] =
    "{\"name\":\"PeerJS Server\",\"description\":\"A server side element to "
    "broker connections between PeerJS clients.\","
    "\"website\":\"https://peerjs.com/\"}";

static void alive_cb(evutil_socket_t fd, short what, void *arg);

void
sig_peerjs_init(struct sig *s)
{
    struct sig_peerjs *pj = pm_xcalloc(1, sizeof *pj);
    const char *p = s->conf->peerjs_path;
    size_t n = strlen(p);

    /* As the client does: a leading and a trailing '/'. */
    pj->path = pm_xasprintf("%s%s%s", p[0] == '/' ? "" : "/", p,
                            n > 0 && p[n - 1] == '/' ? "" : "/");
    if (strcmp(pj->path, "//") == 0)
        pj->path[1] = '\0';
    pj->path_len = strlen(pj->path);
    TAILQ_INIT(&pj->by_seen);
    pj->alive_timer = evtimer_new(pm_server_base(s->srv), alive_cb, s);
    s->peerjs = pj;
}

void
sig_peerjs_free(struct sig *s)
{
    struct sig_peerjs *pj = s->peerjs;

    if (pj == NULL)
        return;
    /* Connections left through sig_peerjs_departed. */
    PM_ASSERT(TAILQ_EMPTY(&pj->by_seen));
    if (pj->alive_timer != NULL)
        event_free(pj->alive_timer);
    free(pj->path);
    free(pj);
    s->peerjs = NULL;
}

/* ---- liveness ------------------------------------------------------- */

/* Arm the timer for the moment the least recently heard one times out. */
static void
arm_alive(struct sig *s)
{
    struct pjs_conn *pc = TAILQ_FIRST(&s->peerjs->by_seen);
    uint64_t now = pm_now_ms(), due, ms;
    struct timeval tv;

    if (pc == NULL) {
        event_del(s->peerjs->alive_timer);
        return;
    }
    due = pc->client->last_seen_ms + s->conf->peerjs_alive_timeout;
    ms = due > now ? due - now : 0;
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    event_add(s->peerjs->alive_timer, &tv);
}

/* c was heard from now: it goes last. */
static void
touch(struct sig *s, struct sig_client *c)
{
    struct pjs_conn *pc = c->dd;
    bool was_empty;

    c->last_seen_ms = pm_now_ms();
    TAILQ_REMOVE(&s->peerjs->by_seen, pc, by_seen);
    was_empty = TAILQ_EMPTY(&s->peerjs->by_seen);
    TAILQ_INSERT_TAIL(&s->peerjs->by_seen, pc, by_seen);
    if (was_empty)
        arm_alive(s);
}

static void
alive_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sig *s = arg;
    struct pjs_conn *pc;
    uint64_t now = pm_now_ms();

    (void)fd;
    (void)what;
    while ((pc = TAILQ_FIRST(&s->peerjs->by_seen)) != NULL &&
           now - pc->client->last_seen_ms >= s->conf->peerjs_alive_timeout) {
        /* Its close unlinks and frees pc; counting it as heard keeps
         * this loop finite should the close be already under way. */
        touch(s, pc->client);
        pm_log_kv(PM_LOG_DEBUG, "peerjs_alive_timeout",
                  "no heartbeat: client dropped", "peer", pc->client->id, "ip",
                  pm_conn_ip(pc->client->conn), NULL);
        pm_conn_ws_close(pc->client->conn, PM_WS_GOING_AWAY,
                         "no heartbeat"); /* frees pc */
    }
    arm_alive(s);
}

/* ---- HTTP ----------------------------------------------------------- */

/* Reflect the request's Origin, as the reference's cors({origin: true}). */
static char *
cors_headers(const struct pm_http_request *req, bool preflight)
{
    const struct pm_http_header *origin = pm_http_header_get(req, "origin");
    const struct pm_http_header *rh =
        pm_http_header_get(req, "access-control-request-headers");
    char *allow = origin != NULL
                      ? pm_xasprintf("Access-Control-Allow-Origin: %.*s\r\n",
                                     (int)origin->value_len, origin->value)
                      : pm_xstrdup("");
    char *ask = preflight && rh != NULL
                    ? pm_xasprintf("Access-Control-Allow-Headers: %.*s\r\n",
                                   (int)rh->value_len, rh->value)
                    : pm_xstrdup("");
    char *out = pm_xasprintf(
        "%s%s%sVary: Origin%s\r\n", allow,
        preflight ? "Access-Control-Allow-Methods: GET,HEAD,OPTIONS\r\n" : "",
        ask, preflight && rh != NULL ? ", Access-Control-Request-Headers" : "");

    free(allow);
    free(ask);
    return out;
}

/* The PeerJS realm if it exists (HTTP never creates it). */
static struct sig_realm *
peerjs_realm(struct sig *s)
{
    char *hkey = pm_xasprintf("%c%s", SIG_REALM_PEERJS, s->conf->peerjs_key);
    struct sig_realm *r;

    HASH_FIND_STR(s->realms, hkey, r);
    free(hkey);
    return r;
}

static void
uuid_v4(char out[37])
{
    uint8_t b[16];

    pm_random_bytes(b, sizeof b);
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
             "%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10],
             b[11], b[12], b[13], b[14], b[15]);
}

static void
answer_id(struct sig *s, struct pm_conn *conn, const char *hdrs)
{
    struct sig_realm *r = peerjs_realm(s);
    char id[37];

    do
        uuid_v4(id);
    while (r != NULL && sig_realm_find(r, id) != NULL);
    pm_conn_http_respond(conn, 200, "text/html; charset=utf-8", hdrs, id,
                         strlen(id));
}

static void
answer_peers(struct sig *s, struct pm_conn *conn, const char *hdrs)
{
    struct sig_realm *r = peerjs_realm(s);
    struct sig_client *c, *tmp;
    cJSON *a;
    char *body;

    if (!s->conf->peerjs_discovery) {
        pm_conn_http_respond(conn, 401, "text/plain; charset=utf-8", hdrs,
                             "Unauthorized", 12);
        return;
    }
    a = cJSON_CreateArray();
    if (r != NULL) {
        HASH_ITER(hh, r->peers, c, tmp)
        {
            cJSON_AddItemToArray(a, cJSON_CreateString(c->id));
        }
    }
    body = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
    pm_conn_http_respond(conn, 200, "application/json; charset=utf-8", hdrs,
                         body, strlen(body));
    free(body);
}

enum pjs_route { ROUTE_NONE, ROUTE_BANNER, ROUTE_ID, ROUTE_PEERS };

/* {path} (also without its trailing '/'), {path}{key}/id, {path}{key}/peers
 * (the key segment is not checked over HTTP, as the reference). */
static enum pjs_route
route_of(const struct sig_peerjs *pj, const char *p, size_t n)
{
    const char *slash;
    size_t rest;

    if ((n == pj->path_len && memcmp(p, pj->path, n) == 0) ||
        (pj->path_len > 1 && n == pj->path_len - 1 &&
         memcmp(p, pj->path, n) == 0))
        return ROUTE_BANNER;
    if (n <= pj->path_len || memcmp(p, pj->path, pj->path_len) != 0)
        return ROUTE_NONE;
    p += pj->path_len;
    rest = n - pj->path_len;
    slash = memchr(p, '/', rest);
    if (slash == NULL || slash == p)
        return ROUTE_NONE;
    rest -= (size_t)(slash + 1 - p);
    if (rest == 2 && memcmp(slash + 1, "id", 2) == 0)
        return ROUTE_ID;
    if (rest == 5 && memcmp(slash + 1, "peers", 5) == 0)
        return ROUTE_PEERS;
    return ROUTE_NONE;
}

int
sig_peerjs_http(struct sig *s, struct pm_conn *conn,
                const struct pm_http_request *req)
{
    enum pjs_route route = route_of(s->peerjs, req->path, req->path_len);
    bool options = pm_strcaseeq(req->method, req->method_len, "OPTIONS");
    char *hdrs;

    if (route == ROUTE_NONE ||
        (!options && !pm_strcaseeq(req->method, req->method_len, "GET") &&
         !pm_strcaseeq(req->method, req->method_len, "HEAD")))
        return PM_ENOTFOUND;
    hdrs = cors_headers(req, options);
    if (options)
        pm_conn_http_respond(conn, 204, NULL, hdrs, NULL, 0);
    else if (route == ROUTE_BANNER)
        pm_conn_http_respond(conn, 200, "application/json; charset=utf-8", hdrs,
                             banner, sizeof banner - 1);
    else if (route == ROUTE_ID)
        answer_id(s, conn, hdrs);
    else
        answer_peers(s, conn, hdrs);
    free(hdrs);
    return PM_OK;
}

/* ---- WebSocket ------------------------------------------------------ */

bool
sig_peerjs_is_ws(const struct sig *s, const struct pm_http_request *req)
{
    const struct sig_peerjs *pj = s->peerjs;

    /* Proxies mount the server at {path} or at /: take both. */
    return (req->path_len == 7 && memcmp(req->path, "/peerjs", 7) == 0) ||
           (req->path_len == pj->path_len + 6 &&
            memcmp(req->path, pj->path, pj->path_len) == 0 &&
            memcmp(req->path + pj->path_len, "peerjs", 6) == 0);
}

/* The decoded value of query parameter name; NULL if absent or empty
 * (the reference treats an empty value as missing). */
static char *
query_dup(const struct pm_http_request *req, const char *name)
{
    char *buf = pm_xmalloc(req->query_len + 1);

    /* A decoded value is never longer than the query. */
    if (pm_http_query_param(req, name, buf, req->query_len + 1) != PM_OK ||
        buf[0] == '\0') {
        free(buf);
        return NULL;
    }
    return buf;
}

void
sig_peerjs_upgrade(struct sig *s, struct sig_client *c,
                   const struct pm_http_request *req)
{
    struct pjs_conn *pc = pm_xcalloc(1, sizeof *pc);

    pc->client = c;
    if (req->query != NULL) {
        pc->key = query_dup(req, "key");
        pc->want = query_dup(req, "id");
        c->token = query_dup(req, "token");
    }
    c->dd = pc;
    c->realm = sig_realm_get(s, SIG_REALM_PEERJS, s->conf->peerjs_key);
    c->realm->nclients++;
    c->last_seen_ms = pm_now_ms();
    TAILQ_INSERT_TAIL(&s->peerjs->by_seen, pc, by_seen);
    if (TAILQ_FIRST(&s->peerjs->by_seen) == pc)
        arm_alive(s);
}

/* {"type":type,"payload":{"msg":text}}, then close (c is freed). */
static void
refuse(struct sig_client *c, const char *type, const char *text)
{
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "type", type);
    cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "payload"), "msg", text);
    pm_conn_ws_send_json(c->conn, o);
    cJSON_Delete(o);
    pm_log_kv(PM_LOG_DEBUG, "peerjs_refused", "handshake refused", "reason",
              text, "ip", pm_conn_ip(c->conn), NULL);
    pm_conn_ws_close(c->conn, PM_WS_NORMAL, type);
}

static void
register_id(struct sig *s, struct sig_client *c, const char *id)
{
    sig_realm_add(s, c, id); /* c->token is set: the cluster carries it */
    (*s->stats.joins)++;
    pm_log_kv(PM_LOG_DEBUG, "peer_joined", "peer joined", "peer", id, "realm",
              c->realm->name, "ip", pm_conn_ip(c->conn), NULL);
}

/* The handshake rules of the reference, in its order. */
static void
handshake(struct sig *s, struct sig_client *c, const char *key, const char *id)
{
    static const char open_msg[] = "{\"type\":\"OPEN\"}";
    struct sig_client *holder;

    if (key == NULL || id == NULL || c->token == NULL) {
        refuse(c, "ERROR", "No id, token, or key supplied to websocket server");
        return;
    }
    if (strcmp(key, s->conf->peerjs_key) != 0) {
        refuse(c, "ERROR", "Invalid key provided");
        return;
    }
    if (strlen(id) > SIG_MAX_ID) {
        refuse(c, "ERROR", "ID is too long (at most 128 bytes)");
        return;
    }
    if (strlen(c->token) > PJS_MAX_TOKEN) {
        refuse(c, "ERROR", "Token is too long (at most 255 bytes)");
        return;
    }
    if (c->sub != NULL && strcmp(c->sub, id) != 0) {
        refuse(c, "ERROR", "ID does not match the authentication token");
        return;
    }
    holder = sig_realm_find(c->realm, id);
    if (holder != NULL) {
        if (holder->token == NULL || strcmp(holder->token, c->token) != 0) {
            refuse(c, "ID-TAKEN", "ID is taken");
            return;
        }
        /* The same token: this socket takes the id over, without OPEN. */
        if (holder->conn != NULL) {
            sig_realm_remove(s, holder);
            pm_conn_ws_close(holder->conn, PM_WS_NORMAL, "id taken over");
        } else {
            sig_cluster_forget(s, holder);
        }
        register_id(s, c, id);
        sig_offline_deliver(s, c->realm, c->id);
        return;
    }
    if (c->realm->npeers >= (unsigned)s->conf->peerjs_concurrent_limit) {
        refuse(c, "ERROR", "Server has reached its concurrent user limit");
        return;
    }
    register_id(s, c, id);
    pm_conn_ws_send(c->conn, PM_WS_TEXT, open_msg, sizeof open_msg - 1);
    sig_offline_deliver(s, c->realm, c->id);
}

void
sig_peerjs_open(struct sig *s, struct sig_client *c)
{
    struct pjs_conn *pc = c->dd;
    char *key = pc->key, *id = pc->want;

    pc->key = pc->want = NULL;
    handshake(s, c, key, id); /* may free c */
    free(key);
    free(id);
}

/* The relayed types, as the literals the router keeps by pointer. */
static const char *
relay_type(const char *type)
{
    static const char *const types[] = {"OFFER", "ANSWER", "CANDIDATE", "LEAVE",
                                        NULL};
    const char *const *t;

    for (t = types; *t != NULL; t++)
        if (strcmp(*t, type) == 0)
            return *t;
    return NULL;
}

/*
 * Forward exactly {"type":T,"src":<sender>,"dst":D,"payload":P}: the dst
 * and payload values are copied from the sender's text as written (the
 * parser accepted them); a text that cannot be split safely is rebuilt.
 */
static void
relay(struct sig *s, struct sig_client *c, const cJSON *msg, const char *type,
      const char *dst, const char *data, size_t len)
{
    static const char *const keys[] = {"dst", "payload", NULL};
    struct sig_span span[2];
    struct iovec iov[7];
    size_t close;
    char *head, *out;
    int n = 0;

    if (sig_json_scan(data, len, keys, span, &close) && span[0].end > 0) {
        head = pm_xasprintf("{\"type\":\"%s\",\"src\":%s,\"dst\":", type,
                            c->id_json);
        iov[n].iov_base = head;
        iov[n++].iov_len = strlen(head);
        iov[n].iov_base = (void *)(data + span[0].start);
        iov[n++].iov_len = span[0].end - span[0].start;
        if (span[1].end > 0) {
            iov[n].iov_base = (void *)",\"payload\":";
            iov[n++].iov_len = 11;
            iov[n].iov_base = (void *)(data + span[1].start);
            iov[n++].iov_len = span[1].end - span[1].start;
        }
        iov[n].iov_base = (void *)"}";
        iov[n++].iov_len = 1;
        sig_route(s, c->realm, c->id, dst, type, iov, n);
        free(head);
        return;
    }
    {
        cJSON *payload = cJSON_GetObjectItemCaseSensitive(msg, "payload");
        cJSON *o = cJSON_CreateObject();

        cJSON_AddStringToObject(o, "type", type);
        cJSON_AddStringToObject(o, "src", c->id);
        cJSON_AddStringToObject(o, "dst", dst);
        if (payload != NULL)
            cJSON_AddItemReferenceToObject(o, "payload", payload);
        out = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
    }
    iov[0].iov_base = out;
    iov[0].iov_len = strlen(out);
    sig_route(s, c->realm, c->id, dst, type, iov, 1);
    free(out);
}

void
sig_peerjs_message(struct sig *s, struct sig_client *c, const char *data,
                   size_t len)
{
    cJSON *msg = cJSON_ParseWithLength(data, len);
    const cJSON *type, *dst;
    const char *rt;

    touch(s, c); /* any message shows the client is alive */
    if (msg == NULL)
        return; /* the reference ignores what it cannot parse */
    type = cJSON_GetObjectItemCaseSensitive(msg, "type");
    dst = cJSON_GetObjectItemCaseSensitive(msg, "dst");
    /* HEARTBEAT needs nothing more; unknown types are ignored. */
    if (c->id != NULL && cJSON_IsString(type) &&
        (rt = relay_type(type->valuestring)) != NULL) {
        if (cJSON_IsString(dst))
            relay(s, c, msg, rt, dst->valuestring, data, len);
        else if (strcmp(rt, "LEAVE") == 0) /* no dst: the sender leaves */
            sig_realm_remove(s, c);
    }
    cJSON_Delete(msg);
}

void
sig_peerjs_departed(struct sig *s, struct sig_client *c)
{
    struct pjs_conn *pc = c->dd;

    /* An id taken over by another socket is no longer c's (id NULL). */
    sig_realm_remove(s, c);
    TAILQ_REMOVE(&s->peerjs->by_seen, pc, by_seen);
    free(pc->key);
    free(pc->want);
    free(pc);
    c->dd = NULL;
}

void
sig_peerjs_displaced(struct sig *s, struct sig_client *c)
{
    sig_realm_remove(s, c);
    pm_conn_ws_close(c->conn, PM_WS_NORMAL, "id taken over");
}
