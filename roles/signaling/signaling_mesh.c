/*
 * signaling_mesh: the p2pmesh dialect (the P2PMesh library's protocol).
 * JSON text frames with a "type"; type strings and error texts are kept
 * verbatim from the reference servers. Relayed messages get "from" set to
 * the sender's registered id and everything else forwarded untouched.
 * Loop thread.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include <cjson/cJSON.h>

#include "pm_conn.h"
#include "pm_log.h"
#include "pm_metrics.h"
#include "pm_util.h"
#include "signaling.h"

/* Relayed types, and whether "not found" names batched signals. */
static const char *const relay_types[] = {
    "signal",
    "batched_signals",
    "offer",
    "answer",
    "candidate",
    "ack",
    "connection_rejected",
    "signal_rejected",
    "kademlia_rpc_request",
    "kademlia_rpc_response",
    NULL,
};

static void
send_json(struct sig_client *c, cJSON *o)
{
    sig_client_send_json(c, o);
    cJSON_Delete(o);
}

void
sig_send_error(struct sig_client *c, const char *text)
{
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "type", "error");
    cJSON_AddStringToObject(o, "message", text);
    send_json(c, o);
}

void
sig_not_found_text(char *out, size_t len, const char *target, const char *type)
{
    if (strcmp(type, "batched_signals") == 0)
        snprintf(out, len, "Peer %s not found for batched signals.", target);
    else if (strncmp(type, "kademlia_", 9) == 0)
        snprintf(out, len, "Peer %s not found for %s.", target, type);
    else
        snprintf(out, len, "Peer %s not found.", target);
}

/* Send the same text to many clients (serialised once). */
static void
send_to_all(struct sig_client **to, size_t n, const cJSON *o)
{
    char *s = cJSON_PrintUnformatted(o);
    struct iovec iov = {s, strlen(s)};
    struct pm_conn **conns = pm_xmalloc(n * sizeof *conns);
    size_t i;

    /* A socket send can drop a slow reader, and its departure free other
     * clients: port clients first, then the connections (freed only
     * later) taken beforehand. */
    for (i = 0; i < n; i++) {
        conns[i] = to[i]->conn;
        if (conns[i] == NULL)
            sig_client_send(to[i], &iov, 1);
    }
    for (i = 0; i < n; i++)
        if (conns[i] != NULL)
            pm_conn_ws_send(conns[i], PM_WS_TEXT, s, iov.iov_len);
    free(conns);
    free(s);
}

/* The joined peers of c's realm nearest to id, nearest first (not c). */
struct nearest {
    struct sig_client **v;
    size_t n;
};

static void
nearest(struct sig_client *c, const char *id, size_t k, struct nearest *out)
{
    out->v = pm_xmalloc((k ? k : 1) * sizeof *out->v);
    out->n = k ? sig_realm_nearest(c->realm, id, c, k, out->v) : 0;
}

/*
 * {"type":type,"peerId":id} to the local ones among the first n peers of
 * near (in cluster mode each instance tells its own peers).
 */
static void
announce(const struct nearest *near, size_t n, const char *type, const char *id)
{
    struct sig_client **local;
    size_t i, m = 0;
    cJSON *o;

    if (n > near->n)
        n = near->n;
    local = pm_xmalloc((n ? n : 1) * sizeof *local);
    for (i = 0; i < n; i++)
        if (sig_client_local(near->v[i]) && near->v[i]->dialect == SIG_MESH)
            local[m++] = near->v[i];
    if (m > 0) {
        o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", type);
        cJSON_AddStringToObject(o, "peerId", id);
        send_to_all(local, m, o);
        cJSON_Delete(o);
    }
    free(local);
}

/* Tell the nearest local peers of r that id left (it is unregistered). */
static void
announce_left(struct sig *s, struct sig_realm *r, const char *id)
{
    struct nearest near;

    /* While draining every peer is leaving: no one needs telling. */
    if (s->stopping || s->conf->announce_max <= 0)
        return;
    near.v = pm_xmalloc((size_t)s->conf->announce_max * sizeof *near.v);
    near.n =
        sig_realm_nearest(r, id, NULL, (size_t)s->conf->announce_max, near.v);
    announce(&near, near.n, "peer_left", id);
    free(near.v);
}

/* Unregister c's id and tell the realm (exactly once per departure). */
void
sig_mesh_departed(struct sig *s, struct sig_client *c)
{
    char *id;

    if (c->id == NULL)
        return;
    id = pm_xstrdup(c->id);
    sig_realm_remove(s, c);
    announce_left(s, c->realm, id);
    pm_log_kv(PM_LOG_DEBUG, "peer_left", "peer left", "peer", id, "realm",
              c->realm->name, NULL);
    free(id);
}

void
sig_mesh_remote_left(struct sig *s, struct sig_realm *r, const char *id)
{
    announce_left(s, r, id);
}

void
sig_mesh_remote_joined(struct sig *s, struct sig_client *c)
{
    struct nearest near;

    if (s->conf->announce_max <= 0)
        return;
    nearest(c, c->id, (size_t)s->conf->announce_max, &near);
    announce(&near, near.n, "peer_joined", c->id);
    free(near.v);
}

void
sig_mesh_displaced(struct sig *s, struct sig_client *c)
{
    sig_send_error(c, "Another client joined with your ID.");
    sig_realm_remove(s, c);
    sig_client_close(c, "another client joined with this id");
}

/* {"type":"bootstrap_peers","peers":[{"id":..}]} with the first n. */
static void
send_bootstrap(struct sig_client *c, const struct nearest *near, size_t n)
{
    cJSON *o = cJSON_CreateObject(), *peers;
    size_t i;

    if (n > near->n)
        n = near->n;
    cJSON_AddStringToObject(o, "type", "bootstrap_peers");
    peers = cJSON_AddArrayToObject(o, "peers");
    for (i = 0; i < n; i++) {
        cJSON *p = cJSON_CreateObject();

        cJSON_AddStringToObject(p, "id", near->v[i]->id);
        cJSON_AddItemToArray(peers, p);
    }
    send_json(c, o);
}

static void
on_join(struct sig *s, struct sig_client *c, cJSON *msg)
{
    const cJSON *pid = cJSON_GetObjectItemCaseSensitive(msg, "peerId");
    struct sig_client *holder;
    struct nearest near;
    const char *id;
    size_t k;

    if (!cJSON_IsString(pid) || pid->valuestring[0] == '\0') {
        sig_send_error(c, "peerId is required for join message.");
        return;
    }
    id = pid->valuestring;
    if (strlen(id) > SIG_MAX_ID) {
        sig_send_error(c, "peerId must be at most 128 bytes.");
        return;
    }
    if (c->sub != NULL && strcmp(c->sub, id) != 0) {
        sig_send_error(c, "peerId does not match your token.");
        return;
    }
    if (c->id != NULL && strcmp(c->id, id) == 0) {
        /* a repeated join: answer again */
        nearest(c, id, (size_t)s->conf->bootstrap_count, &near);
        send_bootstrap(c, &near, near.n);
        free(near.v);
        return;
    }
    holder = sig_realm_find(c->realm, id);
    if (holder == NULL &&
        c->realm->npeers >= (unsigned)s->conf->max_peers_per_realm &&
        c->id == NULL) {
        sig_send_error(c, "Realm is full.");
        return;
    }
    if (c->id != NULL) /* a new id on the same socket replaces the old */
        sig_mesh_departed(s, c);
    if (holder != NULL && sig_client_local(holder)) {
        /* The newcomer wins; the old socket's close must not unregister. */
        sig_mesh_displaced(s, holder);
    } else if (holder != NULL) {
        /* Held on another instance: our join displaces it there. */
        sig_cluster_forget(s, holder);
    }
    sig_realm_add(s, c, id);
    (*s->stats.joins)++;
    pm_log_kv(PM_LOG_DEBUG, "peer_joined", "peer joined", "peer", id, "realm",
              c->realm->name, "ip",
              c->conn != NULL ? pm_conn_ip(c->conn) : NULL, NULL);
    /* One pass over the realm serves both lists (same order). */
    k = (size_t)(s->conf->bootstrap_count > s->conf->announce_max
                     ? s->conf->bootstrap_count
                     : s->conf->announce_max);
    nearest(c, id, k, &near);
    send_bootstrap(c, &near, (size_t)s->conf->bootstrap_count);
    announce(&near, (size_t)s->conf->announce_max, "peer_joined", id);
    free(near.v);
    sig_offline_deliver(s, c->realm, c->id);
}

static void
on_leave(struct sig *s, struct sig_client *c)
{
    sig_mesh_departed(s, c);
    sig_client_close(c, "left");
}

static void
on_ping(struct sig_client *c, cJSON *msg)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *ts = cJSON_GetObjectItemCaseSensitive(msg, "timestamp");

    cJSON_AddStringToObject(o, "type", "pong");
    if (ts != NULL)
        cJSON_AddItemToObject(o, "timestamp", cJSON_Duplicate(ts, 1));
    send_json(c, o);
}

static void
on_relay(struct sig *s, struct sig_client *c, cJSON *msg, const char *data,
         size_t len, const char *type)
{
    const cJSON *to = cJSON_GetObjectItemCaseSensitive(msg, "to");
    char text[SIG_MAX_ID + 128];

    if (c->id == NULL) {
        snprintf(text, sizeof text, "You must join before sending %s.", type);
        sig_send_error(c, text);
        return;
    }
    if (!cJSON_IsString(to) || to->valuestring[0] == '\0') {
        snprintf(text, sizeof text, "'to' field is required for %s.", type);
        sig_send_error(c, text);
        return;
    }
    sig_relay(s, c, msg, data, len, type, to->valuestring);
}

const char *
sig_mesh_relay_type(const char *type)
{
    const char *const *t;

    for (t = relay_types; *t != NULL; t++)
        if (strcmp(*t, type) == 0)
            return *t;
    return NULL;
}

void
sig_mesh_message(struct sig *s, struct sig_client *c, cJSON *msg,
                 const char *type, const char *data, size_t len)
{
    const cJSON *t;
    const char *rt;
    char text[256];

    if (type == NULL) {
        char *p;

        t = cJSON_IsObject(msg) ? cJSON_GetObjectItemCaseSensitive(msg, "type")
                                : NULL;
        p = t ? cJSON_PrintUnformatted(t) : NULL;
        snprintf(text, sizeof text, "Unknown message type: %.200s",
                 p ? p : "undefined");
        free(p);
        sig_send_error(c, text);
    } else if (strcmp(type, "join") == 0) {
        on_join(s, c, msg);
    } else if (strcmp(type, "leave") == 0) {
        on_leave(s, c);
    } else if (strcmp(type, "ping") == 0) {
        on_ping(c, msg);
    } else if ((rt = sig_mesh_relay_type(type)) != NULL) {
        on_relay(s, c, msg, data, len, rt);
    } else {
        snprintf(text, sizeof text, "Unknown message type: %.200s", type);
        sig_send_error(c, text);
    }
}
