/*
 * lambda_signaling: the handler "signaling", the p2pmesh dialect over API
 * Gateway WebSocket. Each event runs the signaling role's own dialect
 * code (signaling_mesh.c) against a registry loaded from the connection
 * store for that event: the sender, and the peers the message needs (the
 * realm's peers for a join or a departure, the target of a relay). The
 * dialect reaches those clients through a port that only records: store
 * writes (a join, a departure) run first and in order, then the messages
 * go out as API Gateway Management API posts, concurrently per
 * connection and in order within one, then closes (DELETE). A 410 means
 * the connection is gone: it is forgotten, and the sender of a relay to
 * it is told the peer was not found. The invocation is answered when
 * everything has finished, or failed when the deadline nears.
 *
 * The offline mailbox of the WebSocket role is off here (a held message
 * would need the store too): a relay to an absent peer is answered with
 * the dialect's "not found" error at once. Loop thread.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/uio.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "lambda.h"
#include "pm_log.h"
#include "pm_metrics.h"
#include "pm_server.h"
#include "pm_sigv4.h"
#include "pm_util.h"

#define POST_RETRIES 2      /* more tries for a 429, a 5xx or no answer */
#define DEADLINE_MARGIN 150 /* ms before the deadline the call gives up */

struct lsig {
    struct lam *l;
    const struct lam_conf *conf;
    struct sig_conf dialect; /* conf->sig with the offline mailbox off */
    struct sig_stats stats;
    const struct lam_store *store;
    void *st;
    uint64_t *posts, *gone, *failed_posts;
    TAILQ_HEAD(, lev) live; /* events not freed yet */
};

/* One message (or the close) waiting for a connection. */
struct lmsg {
    char *data; /* NULL: DELETE the connection */
    size_t len;
    TAILQ_ENTRY(lmsg) link;
};
TAILQ_HEAD(lmsg_list, lmsg);

struct lev;

/* A connection the event reaches (the sender or a loaded peer). */
struct lpeer {
    struct lev *ev;
    struct sig_client *c;
    char *cid;
    struct lmsg_list q;
    bool busy;    /* a request in flight */
    bool closing; /* DELETE once the queue is empty */
    bool gone;    /* 410 */
    unsigned tries;
    struct event *backoff;
    TAILQ_ENTRY(lpeer) link;
};
TAILQ_HEAD(lpeer_list, lpeer);

enum lwrite_op { W_SET, W_CLEAR };

struct lwrite {
    enum lwrite_op op;
    char *realm, *peer, *cid;
    bool conn_gone;
    TAILQ_ENTRY(lwrite) link;
};
TAILQ_HEAD(lwrite_list, lwrite);

/* One invocation of the handler. */
struct lev {
    struct lsig *ls;
    TAILQ_ENTRY(lev) link; /* in ls->live */
    struct lam_call *call; /* NULL once answered: waiting to be freed */
    cJSON *event;
    const char *cid, *route;
    char *base; /* the Management API base URL for this event */
    struct sig sig;
    struct sig_port port;
    struct sig_realm *realm;
    struct lpeer *self;
    struct lpeer_list peers;
    struct lwrite_list writes;
    unsigned pending; /* store calls and posts in flight */
    void (*then)(struct lev *ev);
    bool store_failed;
    bool posting; /* the posts have started: a new message goes at once */
    struct event *deadline;
    /* What the event loaded. */
    struct lam_conn_info info;
    bool found;
    struct lam_peer *list;
    size_t nlist;
    char *holder;       /* cid holding the looked-up id */
    const char *lookup; /* the id looked up (join's peerId, relay's to) */
    cJSON *msg;
    const char *type;
    const char *relay_type; /* static: the relayed type, if a relay */
};

static void post_next(struct lpeer *p);

/* ---- event lifetime ------------------------------------------------------ */

static void
lpeer_free(struct lpeer *p)
{
    struct lmsg *m;

    while ((m = TAILQ_FIRST(&p->q)) != NULL) {
        TAILQ_REMOVE(&p->q, m, link);
        free(m->data);
        free(m);
    }
    if (p->backoff != NULL)
        event_free(p->backoff);
    p->c->port = NULL; /* unregistering now tells nobody */
    sig_realm_remove(&p->ev->sig, p->c);
    free(p->c->sub);
    free(p->c);
    free(p->cid);
    free(p);
}

static void
ev_free(struct lev *ev)
{
    struct lpeer *p;
    struct lwrite *w;

    TAILQ_REMOVE(&ev->ls->live, ev, link);
    while ((p = TAILQ_FIRST(&ev->peers)) != NULL) {
        TAILQ_REMOVE(&ev->peers, p, link);
        lpeer_free(p);
    }
    while ((w = TAILQ_FIRST(&ev->writes)) != NULL) {
        TAILQ_REMOVE(&ev->writes, w, link);
        free(w->realm);
        free(w->peer);
        free(w->cid);
        free(w);
    }
    if (ev->realm != NULL) {
        ev->realm->nclients = 0;
        sig_realm_release(&ev->sig, ev->realm);
    }
    if (ev->deadline != NULL)
        event_free(ev->deadline);
    lam_conn_info_clear(&ev->info);
    lam_peers_free(ev->list, ev->nlist);
    free(ev->holder);
    free(ev->base);
    cJSON_Delete(ev->msg);
    cJSON_Delete(ev->event);
    free(ev);
}

/* Answer the invocation (once); the event is freed when idle. */
static void
ev_respond(struct lev *ev, const char *body)
{
    if (ev->call == NULL)
        return;
    lam_call_respond(ev->call, body, strlen(body));
    ev->call = NULL;
}

static void
ev_fail(struct lev *ev, const char *type, const char *msg)
{
    if (ev->call == NULL)
        return;
    lam_call_fail(ev->call, type, "%s", msg);
    ev->call = NULL;
}

/*
 * The event moves in steps: a step starts asynchronous operations
 * (pending counts them) and names the next in then; when the last one
 * finishes the next step runs. Every step runs holding one count, so a
 * step that starts nothing moves straight on. No then: everything is
 * done, answer. Once answered (the deadline may answer early) the event
 * only waits for what is in flight, then frees itself.
 */
static void advance(struct lev *ev);

static void
finish(struct lev *ev)
{
    if (ev->store_failed)
        ev_fail(ev, "Function.StoreError",
                "the connection store failed (see the log)");
    else
        ev_respond(ev, "{\"statusCode\":200}");
}

static void
op_done(struct lev *ev)
{
    PM_ASSERT(ev->pending > 0);
    if (--ev->pending == 0)
        advance(ev);
}

static void
advance(struct lev *ev)
{
    void (*then)(struct lev *);

    if (ev->call == NULL) {
        ev_free(ev);
        return;
    }
    then = ev->then;
    if (then == NULL) {
        finish(ev);
        ev_free(ev);
        return;
    }
    ev->then = NULL;
    ev->pending++;
    then(ev);
    op_done(ev);
}

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct lev *ev = arg;
    char msg[128];

    (void)fd;
    (void)what;
    snprintf(msg, sizeof msg,
             "the invocation deadline is near with %u AWS calls pending",
             ev->pending);
    ev_fail(ev, "Function.DeadlineExceeded", msg);
}

/* How long one AWS call may take: lambda.aws_timeout, cut by the
 * deadline. */
static uint64_t
call_timeout(const struct lev *ev)
{
    uint64_t left = ev->call != NULL ? lam_call_remaining_ms(ev->call) : 0;

    left = left > DEADLINE_MARGIN ? left - DEADLINE_MARGIN : 1;
    return left < ev->ls->conf->aws_timeout ? left : ev->ls->conf->aws_timeout;
}

/* ---- the store ----------------------------------------------------------- */

static void
store_done(int rv, void *arg)
{
    struct lev *ev = arg;

    if (rv == PM_EUNAVAIL)
        ev->store_failed = true;
    op_done(ev);
}

/* conn_touch / conn_delete: remember whether the connection was known. */
static void
conn_loaded(int rv, void *arg)
{
    struct lev *ev = arg;

    ev->found = rv == PM_OK;
    store_done(rv, arg);
}

static void
add_write(struct lev *ev, enum lwrite_op op, const char *realm,
          const char *peer, const char *cid, bool conn_gone)
{
    struct lwrite *w = pm_xcalloc(1, sizeof *w);

    w->op = op;
    w->realm = pm_xstrdup(realm);
    w->peer = peer != NULL ? pm_xstrdup(peer) : NULL;
    w->cid = pm_xstrdup(cid);
    w->conn_gone = conn_gone;
    TAILQ_INSERT_TAIL(&ev->writes, w, link);
}

/* The recorded writes, one after the other (they may touch one item);
 * then the posts. A failed write stops both. */
static void start_posts(struct lev *ev);

static void
do_writes(struct lev *ev)
{
    const struct lam_store *s = ev->ls->store;
    void *st = ev->ls->st;
    struct lwrite *w = TAILQ_FIRST(&ev->writes);

    if (ev->store_failed)
        return; /* no then: answer (an error) */
    if (w == NULL) {
        ev->then = start_posts;
        return;
    }
    TAILQ_REMOVE(&ev->writes, w, link);
    ev->then = do_writes;
    ev->pending++;
    switch (w->op) {
    case W_SET:
        s->peer_set(st, w->realm, w->peer, w->cid, store_done, ev);
        break;
    case W_CLEAR:
        s->peer_clear(st, w->realm, w->peer, w->cid, w->conn_gone, store_done,
                      ev);
        break;
    }
    free(w->realm);
    free(w->peer);
    free(w->cid);
    free(w);
}

/* ---- the port: what the dialect does to a client ------------------------ */

static void
port_send(void *arg, struct sig_client *c, const struct iovec *iov, int n)
{
    struct lpeer *p = c->ext;
    struct lmsg *m;
    size_t off = 0;
    int i;

    (void)arg;
    if (p->closing || p->gone)
        return;
    m = pm_xcalloc(1, sizeof *m);
    for (i = 0; i < n; i++)
        m->len += iov[i].iov_len;
    m->data = pm_xmalloc(m->len + 1);
    for (i = 0; i < n; i++) {
        memcpy(m->data + off, iov[i].iov_base, iov[i].iov_len);
        off += iov[i].iov_len;
    }
    TAILQ_INSERT_TAIL(&p->q, m, link);
    if (p->ev->posting)
        post_next(p);
}

static void
port_close(void *arg, struct sig_client *c, const char *reason)
{
    struct lpeer *p = c->ext;
    struct lmsg *m;

    (void)arg;
    (void)reason;
    if (p->closing || p->gone)
        return;
    p->closing = true;
    m = pm_xcalloc(1, sizeof *m);
    TAILQ_INSERT_TAIL(&p->q, m, link);
}

static void
port_joined(void *arg, struct sig_client *c)
{
    struct lev *ev = arg;
    struct lpeer *p = c->ext;

    add_write(ev, W_SET, c->realm->name, c->id, p->cid, false);
}

static void
port_left(void *arg, struct sig_client *c)
{
    struct lev *ev = arg;
    struct lpeer *p = c->ext;
    bool gone = p == ev->self && strcmp(ev->route, "$disconnect") == 0;

    add_write(ev, W_CLEAR, c->realm->name, c->id, p->cid, gone);
}

/* ---- posting to connections ---------------------------------------------- */

/* "/@connections/" + the id percent-encoded (its '=' as %3D). */
static char *
conn_url(const struct lev *ev, const char *cid)
{
    char *enc = pm_sigv4_uri_encode(cid),
         *url = pm_xasprintf("%s/@connections/%s", ev->base, enc);

    free(enc);
    return url;
}

/* The peer's connection is gone (410): forget it in the store, and tell
 * the sender of a relay to it. */
static void
peer_gone(struct lpeer *p)
{
    struct lev *ev = p->ev;
    struct lmsg *m;

    p->gone = true;
    (*ev->ls->gone)++;
    while ((m = TAILQ_FIRST(&p->q)) != NULL) {
        TAILQ_REMOVE(&p->q, m, link);
        free(m->data);
        free(m);
    }
    if (p == ev->self)
        return;
    pm_log_kv(PM_LOG_DEBUG, "connection_gone", "410: forgetting connection",
              "connection", p->cid, "peer", p->c->id, NULL);
    ev->pending++;
    ev->ls->store->conn_delete(ev->ls->st, p->cid, NULL, store_done, ev);
    if (p->c->id != NULL) {
        ev->pending++;
        ev->ls->store->peer_clear(ev->ls->st, ev->realm->name, p->c->id, p->cid,
                                  true, store_done, ev);
        if (ev->relay_type != NULL && ev->lookup != NULL &&
            strcmp(p->c->id, ev->lookup) == 0 && ev->self->c->id != NULL)
            sig_undeliverable(&ev->sig, ev->realm, ev->self->c->id, ev->lookup,
                              ev->relay_type);
    }
}

static void send_head(struct lpeer *p);

static void
backoff_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    send_head(arg);
}

static void
drop_head(struct lpeer *p)
{
    struct lmsg *m = TAILQ_FIRST(&p->q);

    TAILQ_REMOVE(&p->q, m, link);
    free(m->data);
    free(m);
    p->tries = 0;
}

/* The head of p's queue was answered (or not): next, or try again. */
static void
posted(const struct pm_httpc_res *res, void *arg)
{
    struct lpeer *p = arg;
    struct lev *ev = p->ev;
    struct lmsg *m = TAILQ_FIRST(&p->q);
    bool again = res->status == 0 || res->status == 429 || res->status >= 500;
    char status[8];

    if (res->status == 200 || res->status == 204) {
        drop_head(p);
    } else if (res->status == 410) {
        peer_gone(p);
    } else if (again && p->tries < POST_RETRIES && ev->call != NULL) {
        struct timeval tv = {0, 25000 << (2 * p->tries)};

        p->tries++;
        if (p->backoff == NULL)
            p->backoff =
                evtimer_new(pm_server_base(ev->ls->l->srv), backoff_cb, p);
        evtimer_add(p->backoff, &tv);
        return; /* still in flight */
    } else {
        (*ev->ls->failed_posts)++;
        snprintf(status, sizeof status, "%d", res->status);
        pm_log_kv(PM_LOG_WARN, "post_failed",
                  m->data ? "PostToConnection failed" : "close failed",
                  "connection", p->cid, "status", res->status ? status : NULL,
                  "error", res->status ? NULL : res->error, NULL);
        drop_head(p);
    }
    p->busy = false;
    post_next(p);
    op_done(ev);
}

/* Send the head of p's queue (p is busy: one count is held for it). */
static void
send_head(struct lpeer *p)
{
    struct lev *ev = p->ev;
    struct lmsg *m = TAILQ_FIRST(&p->q);
    struct pm_httpc_req req;
    char err[PM_ERRMSG_SIZE], *url = conn_url(ev, p->cid);
    int rv;

    req = (struct pm_httpc_req){m->data ? "POST" : "DELETE",
                                url,
                                NULL,
                                0,
                                m->data,
                                m->len,
                                call_timeout(ev)};
    rv = pm_aws_send(ev->ls->l->aws, &ev->ls->l->creds, ev->ls->conf->region,
                     "execute-api", &req, posted, p, err, sizeof err);
    free(url);
    if (rv == PM_OK) {
        if (m->data != NULL)
            (*ev->ls->posts)++;
        return;
    }
    pm_log(PM_LOG_WARN, "post_failed", "%s", err);
    drop_head(p);
    p->busy = false;
    post_next(p);
    op_done(ev);
}

/* Start on p's queue unless p is busy or done. */
static void
post_next(struct lpeer *p)
{
    if (p->busy || TAILQ_EMPTY(&p->q) || p->gone || p->ev->call == NULL)
        return;
    p->busy = true;
    p->ev->pending++;
    send_head(p);
}

/* ---- building the registry ------------------------------------------------
 */

static struct lpeer *
peer_new(struct lev *ev, const char *cid)
{
    struct lpeer *p = pm_xcalloc(1, sizeof *p);

    p->ev = ev;
    p->cid = pm_xstrdup(cid);
    TAILQ_INIT(&p->q);
    p->c = pm_xcalloc(1, sizeof *p->c);
    p->c->dialect = SIG_MESH;
    p->c->realm = ev->realm;
    p->c->ext = p;
    TAILQ_INSERT_TAIL(&ev->peers, p, link);
    return p;
}

/* Register a peer the store knows (before ports are set: not a join). */
static void
load_peer(struct lev *ev, const char *peer, const char *cid)
{
    if (strcmp(cid, ev->self->cid) == 0 || sig_realm_find(ev->realm, peer))
        return;
    sig_realm_add(&ev->sig, peer_new(ev, cid)->c, peer);
}

/* The registry of this event: the sender, the looked-up holder first
 * (a consistent read), then the listed peers. */
static void
build_registry(struct lev *ev)
{
    struct lpeer *p;
    size_t i;

    ev->realm = sig_realm_get(&ev->sig, SIG_REALM_MESH,
                              ev->info.realm ? ev->info.realm : "");
    ev->realm->nclients = 1;
    ev->self = peer_new(ev, ev->cid);
    ev->self->c->sub = ev->info.sub ? pm_xstrdup(ev->info.sub) : NULL;
    if (ev->info.peer != NULL)
        sig_realm_add(&ev->sig, ev->self->c, ev->info.peer);
    if (ev->holder != NULL && ev->lookup != NULL)
        load_peer(ev, ev->lookup, ev->holder);
    for (i = 0; i < ev->nlist; i++)
        load_peer(ev, ev->list[i].peer, ev->list[i].cid);
    TAILQ_FOREACH(p, &ev->peers, link)
    p->c->port = &ev->port;
}

/* Posting is done when no peer has anything in flight or queued; then
 * (no then) the invocation is answered. */
static void
start_posts(struct lev *ev)
{
    struct lpeer *p;

    ev->posting = true;
    TAILQ_FOREACH(p, &ev->peers, link)
    post_next(p);
}

/* ---- the routes ------------------------------------------------------------
 */

/* The event's registry is loaded: run the dialect. */
static void
run_message(struct lev *ev)
{
    const char *body;
    size_t len;
    cJSON *b;

    if (ev->store_failed)
        return;
    build_registry(ev);
    b = cJSON_GetObjectItemCaseSensitive(ev->event, "body");
    body = cJSON_IsString(b) ? b->valuestring : "";
    len = strlen(body);
    if (ev->msg == NULL)
        sig_send_error(ev->self->c, SIG_INVALID_JSON);
    else
        sig_mesh_message(&ev->sig, ev->self->c, ev->msg, ev->type, body, len);
    ev->then = do_writes;
}

/* The sender is known: load what its message needs. */
static void
load_for_message(struct lev *ev)
{
    const struct lam_store *s = ev->ls->store;
    void *st = ev->ls->st;
    const char *realm, *body;
    const cJSON *b, *t, *v;

    if (ev->store_failed)
        return;
    if (!ev->found) { /* expired or never stored: a fresh connection */
        lam_conn_info_clear(&ev->info);
        ev->info.realm = pm_xstrdup("");
    }
    realm = ev->info.realm;
    b = cJSON_GetObjectItemCaseSensitive(ev->event, "body");
    body = cJSON_IsString(b) ? b->valuestring : "";
    ev->msg = cJSON_Parse(body);
    t = cJSON_IsObject(ev->msg)
            ? cJSON_GetObjectItemCaseSensitive(ev->msg, "type")
            : NULL;
    ev->type = cJSON_IsString(t) ? t->valuestring : NULL;
    ev->then = run_message;
    if (ev->info.peer != NULL && ev->info.peer_stale) {
        ev->pending++;
        s->peer_touch(st, realm, ev->info.peer, ev->cid, store_done, ev);
    }
    if (ev->type != NULL && strcmp(ev->type, "join") == 0) {
        v = cJSON_GetObjectItemCaseSensitive(ev->msg, "peerId");
        if (cJSON_IsString(v) && v->valuestring[0] != '\0' &&
            strlen(v->valuestring) <= SIG_MAX_ID) {
            ev->lookup = v->valuestring;
            ev->pending += 2;
            s->peer_get(st, realm, ev->lookup, &ev->holder, store_done, ev);
            s->realm_list(st, realm, &ev->list, &ev->nlist, store_done, ev);
        }
    } else if (ev->type != NULL && strcmp(ev->type, "leave") == 0 &&
               ev->info.peer != NULL) {
        ev->pending++;
        s->realm_list(st, realm, &ev->list, &ev->nlist, store_done, ev);
    } else if (ev->type != NULL &&
               (ev->relay_type = sig_mesh_relay_type(ev->type)) != NULL &&
               ev->info.peer != NULL) {
        v = cJSON_GetObjectItemCaseSensitive(ev->msg, "to");
        if (cJSON_IsString(v) && v->valuestring[0] != '\0' &&
            strlen(v->valuestring) <= SIG_MAX_ID) {
            ev->lookup = v->valuestring;
            ev->pending++;
            s->peer_get(st, realm, ev->lookup, &ev->holder, store_done, ev);
        }
    }
}

static void
on_message(struct lev *ev)
{
    ev->then = load_for_message;
    ev->pending++;
    ev->ls->store->conn_touch(ev->ls->st, ev->cid, &ev->info, conn_loaded, ev);
}

/* $disconnect: forget the connection; if it held its id, tell the realm. */
static void
run_disconnect(struct lev *ev)
{
    if (ev->store_failed)
        return;
    if (ev->info.peer != NULL &&
        (ev->holder == NULL || strcmp(ev->holder, ev->cid) != 0)) {
        free(ev->info.peer); /* another connection holds the id now */
        ev->info.peer = NULL;
    }
    build_registry(ev);
    sig_mesh_departed(&ev->sig, ev->self->c);
    ev->then = do_writes;
}

static void
load_for_disconnect(struct lev *ev)
{
    const struct lam_store *s = ev->ls->store;

    if (ev->store_failed || !ev->found || ev->info.peer == NULL)
        return; /* nothing to announce: answer */
    ev->then = run_disconnect;
    ev->lookup = ev->info.peer;
    ev->pending += 2;
    s->peer_get(ev->ls->st, ev->info.realm, ev->info.peer, &ev->holder,
                store_done, ev);
    s->realm_list(ev->ls->st, ev->info.realm, &ev->list, &ev->nlist, store_done,
                  ev);
}

static void
on_disconnect(struct lev *ev)
{
    ev->then = load_for_disconnect;
    ev->pending++;
    ev->ls->store->conn_delete(ev->ls->st, ev->cid, &ev->info, conn_loaded, ev);
}

/* A header of the $connect event, any case. */
static const char *
header(const struct lev *ev, const char *name)
{
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(ev->event, "headers"), *v;

    cJSON_ArrayForEach(v, h) if (v->string != NULL &&
                                 strcasecmp(v->string, name) == 0 &&
                                 cJSON_IsString(v)) return v->valuestring;
    return NULL;
}

static const char *
query(const struct lev *ev, const char *name)
{
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(ev->event,
                                                      "queryStringParameters"),
                *v = cJSON_GetObjectItemCaseSensitive(q, name);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool
origin_allowed(const struct lev *ev)
{
    const char *allow = pm_server_conf(ev->ls->l->srv)->origin_allow;
    const char *origin = header(ev, "Origin");

    return allow == NULL || origin == NULL ||
           pm_list_has(allow, origin, strlen(origin));
}

static void
connected(struct lev *ev)
{
    const char *echo = cJSON_GetStringValue(
        cJSON_GetObjectItemCaseSensitive(ev->msg, "protocol"));
    cJSON *o, *h;
    char *s;

    if (ev->store_failed)
        return;
    o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "statusCode", 200);
    if (echo != NULL) {
        h = cJSON_AddObjectToObject(o, "headers");
        cJSON_AddStringToObject(h, "Sec-WebSocket-Protocol", echo);
    }
    s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    ev_respond(ev, s);
    free(s);
}

/* {"statusCode":status} and a log line saying why. */
static void
refuse(struct lev *ev, int status, const char *why)
{
    char body[32];

    pm_log_kv(PM_LOG_INFO, "connect_refused", why, "connection", ev->cid, NULL);
    snprintf(body, sizeof body, "{\"statusCode\":%d}", status);
    ev_respond(ev, body);
}

/* The first offered subprotocol, without spaces (malloc'd) or NULL. */
static char *
first_protocol(const char *offered)
{
    size_t n;

    if (offered == NULL)
        return NULL;
    offered += strspn(offered, " \t");
    n = strcspn(offered, ", \t");
    return n > 0 ? pm_xstrndup(offered, n) : NULL;
}

static void
on_connect(struct lev *ev)
{
    const char *room = query(ev, "room"), *proto, *echo = NULL;
    char *chosen = NULL, *sub = NULL, err[PM_ERRMSG_SIZE];
    size_t echo_len = 0;
    int64_t exp;

    if (!origin_allowed(ev)) {
        refuse(ev, 403, "origin not allowed");
        return;
    }
    if (room != NULL && strlen(room) > SIG_MAX_REALM) {
        refuse(ev, 400, "room name longer than 128 bytes");
        return;
    }
    proto = header(ev, "Sec-WebSocket-Protocol");
    if (strcmp(ev->ls->dialect.auth, "jwt") == 0) {
        struct sig_auth_src src = {NULL, NULL, 0, proto,
                                   proto ? strlen(proto) : 0};
        const char *a = header(ev, "Authorization");

        src.query = query(ev, "token") ? query(ev, "token") : query(ev, "jwt");
        src.authorization = a;
        src.authorization_len = a ? strlen(a) : 0;
        if (sig_auth_verify(pm_server_conf(ev->ls->l->srv)->jwt_secret, &src,
                            &sub, &exp, &echo, &echo_len, err,
                            sizeof err) != PM_OK) {
            refuse(ev, 401, err);
            return;
        }
    }
    chosen = echo != NULL ? pm_xstrndup(echo, echo_len) : first_protocol(proto);
    /* kept in msg (unused for $connect) until the answer */
    ev->msg = cJSON_CreateObject();
    if (chosen != NULL)
        cJSON_AddStringToObject(ev->msg, "protocol", chosen);
    free(chosen);
    ev->then = connected;
    ev->pending++;
    ev->ls->store->conn_put(ev->ls->st, ev->cid, room ? room : "", sub,
                            store_done, ev);
    free(sub);
}

/* ---- the handler ------------------------------------------------------------
 */

static void
invoke(void *state, struct lam_call *call)
{
    struct lsig *ls = state;
    struct lev *ev = pm_xcalloc(1, sizeof *ev);
    const cJSON *rc, *v;
    const char *domain, *stage;
    uint64_t left = lam_call_remaining_ms(call);
    struct timeval tv;

    ev->ls = ls;
    ev->call = call;
    TAILQ_INSERT_TAIL(&ls->live, ev, link);
    TAILQ_INIT(&ev->peers);
    TAILQ_INIT(&ev->writes);
    ev->sig.conf = &ls->dialect;
    ev->sig.stats = ls->stats;
    TAILQ_INIT(&ev->sig.by_expiry);
    ev->port =
        (struct sig_port){port_send, port_close, port_joined, port_left, ev};
    ev->event = cJSON_ParseWithLength(call->event, call->event_len);
    rc = cJSON_GetObjectItemCaseSensitive(ev->event, "requestContext");
    ev->route =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(rc, "routeKey"));
    ev->cid = cJSON_GetStringValue(
        cJSON_GetObjectItemCaseSensitive(rc, "connectionId"));
    domain = cJSON_GetStringValue(
        cJSON_GetObjectItemCaseSensitive(rc, "domainName"));
    stage = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(rc, "stage"));
    if (ev->route == NULL || ev->cid == NULL || *ev->cid == '\0' ||
        strlen(ev->cid) > 256) {
        ev_fail(ev, "Function.InvalidEvent",
                "not an API Gateway WebSocket event (requestContext.routeKey "
                "and connectionId are required)");
        ev_free(ev);
        return;
    }
    if (ls->conf->apigw_endpoint != NULL)
        ev->base = pm_xstrdup(ls->conf->apigw_endpoint);
    else if (domain != NULL && stage != NULL)
        ev->base = pm_xasprintf("https://%s/%s", domain, stage);
    else {
        ev_fail(ev, "Function.InvalidEvent",
                "requestContext.domainName and stage are required (or set "
                "signaling.apigw_endpoint)");
        ev_free(ev);
        return;
    }
    v = cJSON_GetObjectItemCaseSensitive(ev->event, "isBase64Encoded");
    if (cJSON_IsTrue(v)) { /* binary frames: API Gateway closes with 1003 */
        ev_respond(ev, "{\"statusCode\":200}");
        ev_free(ev);
        return;
    }
    left = left > DEADLINE_MARGIN ? left - DEADLINE_MARGIN : 0;
    tv.tv_sec = (time_t)(left / 1000);
    tv.tv_usec = (suseconds_t)(left % 1000) * 1000;
    ev->deadline = evtimer_new(pm_server_base(ls->l->srv), deadline_cb, ev);
    evtimer_add(ev->deadline, &tv);
    if (strcmp(ev->route, "$connect") == 0)
        ev->then = on_connect;
    else if (strcmp(ev->route, "$disconnect") == 0)
        ev->then = on_disconnect;
    else
        ev->then = on_message;
    advance(ev);
}

static void lsig_destroy(void *state);

static int
lsig_init(struct lam *l, void **state, char *err, size_t errlen)
{
    struct lsig *ls = pm_xcalloc(1, sizeof *ls);
    struct pm_metrics *m = pm_server_metrics(l->srv);
    struct sig tmp;

    ls->l = l;
    ls->conf = l->conf;
    TAILQ_INIT(&ls->live);
    ls->dialect = l->conf->sig;
    ls->dialect.mailbox_max = 0;
    *state = ls;
    if (ls->conf->region == NULL || *ls->conf->region == '\0') {
        lsig_destroy(ls);
        return pm_errf(err, errlen, PM_EINVAL,
                       "lambda.region (AWS_REGION) is not set");
    }
    if (ls->conf->dynamodb_table != NULL)
        ls->store = &lam_store_dynamodb;
    else if (pm_server_conf(l->srv)->redis_url != NULL)
        ls->store = &lam_store_redis;
    else {
        lsig_destroy(ls);
        return pm_errf(err, errlen, PM_EINVAL,
                       "no connection store: set lambda.dynamodb_table "
                       "(CONNECTIONS_TABLE) or redis.url");
    }
    if (strcmp(ls->dialect.auth, "jwt") == 0 &&
        pm_server_conf(l->srv)->jwt_secret == NULL) {
        lsig_destroy(ls);
        return pm_errf(err, errlen, PM_EINVAL,
                       "signaling.auth=jwt needs jwt.secret (the HS256 key)");
    }
    if (pm_aws_creds_from_env(&l->creds, err, errlen) != PM_OK) {
        lsig_destroy(ls);
        return PM_EINVAL;
    }
    l->aws = pm_httpc_new(pm_server_base(l->srv), NULL, err, errlen);
    if (l->aws == NULL || ls->store->open(l, &ls->st, err, errlen) != PM_OK) {
        lsig_destroy(ls);
        return PM_EINVAL;
    }
    sig_stats_init(&tmp, m);
    ls->stats = tmp.stats;
    ls->posts = pm_metrics_counter(m, "p2pmesh_lambda_posts_total", NULL,
                                   "PostToConnection calls made");
    ls->gone = pm_metrics_counter(m, "p2pmesh_lambda_gone_total", NULL,
                                  "Connections found gone (410)");
    ls->failed_posts =
        pm_metrics_counter(m, "p2pmesh_lambda_post_failures_total", NULL,
                           "Posts and closes that failed after retries");
    return PM_OK;
}

static void
lsig_destroy(void *state)
{
    struct lsig *ls = state;
    struct lev *ev;

    /* Shutting down mid-invocation: the runtime frees the call. Freeing
     * the client answers every AWS call in flight (the store is still
     * there for its own), closing the store answers what waits on it;
     * what is left waits only on a retry timer that will never fire. */
    TAILQ_FOREACH(ev, &ls->live, link)
    ev->call = NULL;
    pm_httpc_free(ls->l->aws);
    ls->l->aws = NULL;
    if (ls->st != NULL)
        ls->store->close(ls->st);
    while ((ev = TAILQ_FIRST(&ls->live)) != NULL)
        ev_free(ev);
    pm_aws_creds_clear(&ls->l->creds);
    free(ls);
}

const struct lam_handler lam_handler_signaling = {
    .name = "signaling",
    .init = lsig_init,
    .invoke = invoke,
    .destroy = lsig_destroy,
};
