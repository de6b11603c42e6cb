/*
 * chat_cluster: fan-out across instances through Redis pub/sub when
 * redis.url is set, and presence as every instance sees it.
 *
 * Every instance publishes JSON events on one channel, {prefix}:events,
 * tagged with its random instance id (its own echoes are ignored):
 *   room    deliver m to the local sessions of room's members (except ex)
 *   all     deliver m to every local session
 *   member  a membership changed: update the cached room
 *   kick    close the local sessions of a user (tokens revoked)
 *   up/down a user's first session opened / last closed on the sender
 *   alive   every CLUSTER_ALIVE_MS: the sender's online users (id, name)
 * A user is online while a session is open here or any live instance
 * says so; an instance silent for CLUSTER_DEAD_MS takes its users with
 * it. Presence events go to local sessions only when that global state
 * changes, so two devices on two instances make one "online".
 * Without redis.url every function here is local only.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "chat.h"
#include "pm_log.h"
#include "pm_metrics.h"
#include "pm_redis.h"
#include "pm_server.h"
#include "pm_util.h"

#define CLUSTER_ALIVE_MS 5000
#define CLUSTER_DEAD_MS 15000
#define INST_LEN 16

struct inst_user {
    int64_t id;
    UT_hash_handle hh;
};

struct inst {
    char id[INST_LEN + 1];
    uint64_t seen_ms;
    struct inst_user *users;
    UT_hash_handle hh;
};

/* A user online on other instances: how many say so. */
struct remote_user {
    int64_t id;
    char name[CHAT_NAME_MAX + 1];
    int ninst;
    UT_hash_handle hh;
};

struct chat_cluster {
    struct chat *chat;
    char inst[INST_LEN + 1];
    char *channel;
    struct pm_redis *cmd, *sub;
    bool cmd_up, subscribed;
    struct inst *insts;
    struct remote_user *remote;
    struct event *tick;
    int64_t *up_gauge;
    uint64_t *published;
};

/* ---- presence ------------------------------------------------------ */

static void
presence_event(struct chat *chat, const char *user, const char *state)
{
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "type", "presence");
    cJSON_AddStringToObject(o, "user", user);
    cJSON_AddStringToObject(o, "state", state);
    chat_broadcast_local(chat, o);
    cJSON_Delete(o);
}

static struct remote_user *
remote_find(const struct chat_cluster *cl, int64_t id)
{
    struct remote_user *r = NULL;

    if (cl != NULL)
        HASH_FIND(hh, cl->remote, &id, sizeof id, r);
    return r;
}

static struct chat_user *
local_find(const struct chat *chat, int64_t id)
{
    struct chat_user *u;

    HASH_FIND(hh, chat->users, &id, sizeof id, u);
    return u;
}

bool
chat_user_online(const struct chat *chat, int64_t id)
{
    return local_find(chat, id) != NULL || remote_find(chat->cluster, id);
}

void
chat_online_list(const struct chat *chat, cJSON *arr)
{
    struct chat_user *u, *ut;
    struct remote_user *r, *rt;

    HASH_ITER(hh, chat->users, u, ut)
    cJSON_AddItemToArray(arr, cJSON_CreateString(u->name));
    if (chat->cluster == NULL)
        return;
    HASH_ITER(hh, chat->cluster->remote, r, rt)
    {
        if (local_find(chat, r->id) == NULL)
            cJSON_AddItemToArray(arr, cJSON_CreateString(r->name));
    }
}

static void publish(struct chat_cluster *cl, cJSON *ev);

void
chat_presence_local(struct chat *chat, int64_t id, const char *name, bool up)
{
    struct chat_cluster *cl = chat->cluster;

    if (remote_find(cl, id) == NULL && !chat->stopping)
        presence_event(chat, name, up ? "online" : "offline");
    if (cl != NULL) {
        cJSON *ev = cJSON_CreateObject();

        cJSON_AddStringToObject(ev, "k", up ? "up" : "down");
        cJSON_AddNumberToObject(ev, "user", (double)id);
        cJSON_AddStringToObject(ev, "name", name);
        publish(cl, ev);
    }
}

static void
remote_add(struct chat_cluster *cl, struct inst *in, int64_t id,
           const char *name)
{
    struct inst_user *iu;
    struct remote_user *r;

    HASH_FIND(hh, in->users, &id, sizeof id, iu);
    if (iu != NULL)
        return;
    iu = pm_xcalloc(1, sizeof *iu);
    iu->id = id;
    HASH_ADD(hh, in->users, id, sizeof iu->id, iu);
    r = remote_find(cl, id);
    if (r == NULL) {
        r = pm_xcalloc(1, sizeof *r);
        r->id = id;
        pm_strlcpy(r->name, name, sizeof r->name);
        HASH_ADD(hh, cl->remote, id, sizeof r->id, r);
        if (local_find(cl->chat, id) == NULL)
            presence_event(cl->chat, r->name, "online");
    }
    r->ninst++;
}

static void
remote_remove(struct chat_cluster *cl, struct inst *in, int64_t id)
{
    struct inst_user *iu;
    struct remote_user *r;

    HASH_FIND(hh, in->users, &id, sizeof id, iu);
    if (iu == NULL)
        return;
    HASH_DEL(in->users, iu);
    free(iu);
    r = remote_find(cl, id);
    if (r == NULL || --r->ninst > 0)
        return;
    HASH_DEL(cl->remote, r);
    if (local_find(cl->chat, id) == NULL && !cl->chat->stopping)
        presence_event(cl->chat, r->name, "offline");
    free(r);
}

static struct inst *
inst_get(struct chat_cluster *cl, const char *id)
{
    struct inst *in;

    HASH_FIND_STR(cl->insts, id, in);
    if (in == NULL) {
        in = pm_xcalloc(1, sizeof *in);
        pm_strlcpy(in->id, id, sizeof in->id);
        HASH_ADD_STR(cl->insts, id, in);
    }
    in->seen_ms = pm_now_ms();
    return in;
}

static void
inst_drop(struct chat_cluster *cl, struct inst *in)
{
    struct inst_user *iu, *tmp;

    HASH_ITER(hh, in->users, iu, tmp)
    remote_remove(cl, in, iu->id);
    HASH_DEL(cl->insts, in);
    free(in);
}

/* An alive event: the sender's whole online set replaces what we had. */
static void
alive(struct chat_cluster *cl, struct inst *in, const cJSON *users)
{
    struct inst_user *iu, *tmp, *seen = NULL;
    const cJSON *u;

    cJSON_ArrayForEach(u, users)
    {
        const cJSON *id = cJSON_GetArrayItem(u, 0),
                    *name = cJSON_GetArrayItem(u, 1);
        struct inst_user *s;

        if (!cJSON_IsNumber(id) || !cJSON_IsString(name))
            continue;
        remote_add(cl, in, (int64_t)id->valuedouble, name->valuestring);
        s = pm_xcalloc(1, sizeof *s);
        s->id = (int64_t)id->valuedouble;
        HASH_ADD(hh, seen, id, sizeof s->id, s);
    }
    HASH_ITER(hh, in->users, iu, tmp)
    {
        struct inst_user *s;

        HASH_FIND(hh, seen, &iu->id, sizeof iu->id, s);
        if (s == NULL)
            remote_remove(cl, in, iu->id);
    }
    HASH_ITER(hh, seen, iu, tmp)
    {
        HASH_DEL(seen, iu);
        free(iu);
    }
}

/* ---- publishing ---------------------------------------------------- */

static void
publish(struct chat_cluster *cl, cJSON *ev)
{
    char *text;

    cJSON_AddStringToObject(ev, "o", cl->inst);
    text = cJSON_PrintUnformatted(ev);
    cJSON_Delete(ev);
    if (pm_redis_commandv(cl->cmd, NULL, NULL, "PUBLISH", cl->channel, text,
                          NULL) == PM_OK)
        (*cl->published)++;
    cJSON_free(text);
}

void
chat_fanout_room(struct chat *chat, const struct chat_room *room,
                 const cJSON *json, int64_t except_user)
{
    cJSON *ev;

    chat_room_broadcast(chat, room, json, except_user);
    if (chat->cluster == NULL)
        return;
    ev = cJSON_CreateObject();
    cJSON_AddStringToObject(ev, "k", "room");
    cJSON_AddStringToObject(ev, "room", room->name);
    cJSON_AddNumberToObject(ev, "ex", (double)except_user);
    cJSON_AddItemReferenceToObject(ev, "m", (cJSON *)json);
    publish(chat->cluster, ev);
}

void
chat_fanout_all(struct chat *chat, const cJSON *json)
{
    cJSON *ev;

    chat_broadcast_local(chat, json);
    if (chat->cluster == NULL)
        return;
    ev = cJSON_CreateObject();
    cJSON_AddStringToObject(ev, "k", "all");
    cJSON_AddItemReferenceToObject(ev, "m", (cJSON *)json);
    publish(chat->cluster, ev);
}

void
chat_fanout_member(struct chat *chat, const char *room, int64_t user, bool add)
{
    cJSON *ev;

    if (chat->cluster == NULL)
        return;
    ev = cJSON_CreateObject();
    cJSON_AddStringToObject(ev, "k", "member");
    cJSON_AddStringToObject(ev, "room", room);
    cJSON_AddNumberToObject(ev, "user", (double)user);
    cJSON_AddBoolToObject(ev, "add", add);
    publish(chat->cluster, ev);
}

void
chat_fanout_kick(struct chat *chat, int64_t user, int64_t ver,
                 const char *reason)
{
    cJSON *ev;

    chat_user_kick(chat, user, ver, reason);
    if (chat->cluster == NULL)
        return;
    ev = cJSON_CreateObject();
    cJSON_AddStringToObject(ev, "k", "kick");
    cJSON_AddNumberToObject(ev, "user", (double)user);
    cJSON_AddNumberToObject(ev, "ver", (double)ver);
    cJSON_AddStringToObject(ev, "reason", reason);
    publish(chat->cluster, ev);
}

static void
send_alive(struct chat_cluster *cl)
{
    cJSON *ev = cJSON_CreateObject(), *users;
    struct chat_user *u, *tmp;

    cJSON_AddStringToObject(ev, "k", "alive");
    users = cJSON_AddArrayToObject(ev, "users");
    HASH_ITER(hh, cl->chat->users, u, tmp)
    {
        cJSON *pair = cJSON_CreateArray();

        cJSON_AddItemToArray(pair, cJSON_CreateNumber((double)u->id));
        cJSON_AddItemToArray(pair, cJSON_CreateString(u->name));
        cJSON_AddItemToArray(users, pair);
    }
    publish(cl, ev);
}

/* ---- receiving ----------------------------------------------------- */

struct remote_room {
    struct chat *chat;
    cJSON *m;
    int64_t except;
};

static void
remote_room_got(void *arg, struct chat_room *room, int status)
{
    struct remote_room *rr = arg;

    if (status == PM_OK)
        chat_room_broadcast(rr->chat, room, rr->m, rr->except);
    cJSON_Delete(rr->m);
    free(rr);
}

static int64_t
num(const cJSON *ev, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(ev, name);

    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

static const char *
str(const cJSON *ev, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(ev, name);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void
on_event(struct chat_cluster *cl, cJSON *ev)
{
    struct chat *chat = cl->chat;
    const char *k = str(ev, "k"), *o = str(ev, "o"), *room = str(ev, "room");
    cJSON *m = cJSON_GetObjectItemCaseSensitive(ev, "m");
    struct inst *in;

    if (k == NULL || o == NULL || strcmp(o, cl->inst) == 0)
        return;
    in = inst_get(cl, o);
    if (strcmp(k, "room") == 0 && room != NULL && cJSON_IsObject(m)) {
        struct remote_room *rr = pm_xmalloc(sizeof *rr);

        /* Only rooms with a member online here need loading. */
        rr->chat = chat;
        rr->m = cJSON_DetachItemViaPointer(ev, m);
        rr->except = num(ev, "ex");
        chat_room_get(chat, room, remote_room_got, rr);
    } else if (strcmp(k, "all") == 0 && cJSON_IsObject(m)) {
        chat_broadcast_local(chat, m);
    } else if (strcmp(k, "member") == 0 && room != NULL) {
        struct chat_room *r;

        HASH_FIND_STR(chat->rooms, room, r);
        if (r != NULL && r->loaded) {
            if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ev, "add")))
                chat_room_add_member(r, num(ev, "user"));
            else
                chat_room_remove_member(r, num(ev, "user"));
        }
    } else if (strcmp(k, "kick") == 0) {
        chat_user_kick(chat, num(ev, "user"), num(ev, "ver"),
                       str(ev, "reason") ? str(ev, "reason") : "revoked");
    } else if (strcmp(k, "up") == 0 && str(ev, "name") != NULL) {
        remote_add(cl, in, num(ev, "user"), str(ev, "name"));
    } else if (strcmp(k, "down") == 0) {
        remote_remove(cl, in, num(ev, "user"));
    } else if (strcmp(k, "alive") == 0) {
        alive(cl, in, cJSON_GetObjectItemCaseSensitive(ev, "users"));
    }
}

static void
on_message(const char *channel, size_t chlen, const char *msg, size_t len,
           void *arg)
{
    cJSON *ev = cJSON_ParseWithLength(msg, len);

    (void)channel;
    (void)chlen;
    if (cJSON_IsObject(ev))
        on_event(arg, ev);
    cJSON_Delete(ev);
}

static void
set_gauge(struct chat_cluster *cl)
{
    *cl->up_gauge = cl->cmd_up && cl->subscribed;
}

static void
subscribed_cb(const struct pm_redis_reply *rep, void *arg)
{
    struct chat_cluster *cl = arg;

    if (rep == NULL || pm_redis_reply_type(rep) == PM_REDIS_ERROR)
        return;
    cl->subscribed = true;
    set_gauge(cl);
    pm_log(PM_LOG_INFO, "cluster_up", "instance %s on %s", cl->inst,
           cl->channel);
    send_alive(cl);
}

static void
on_sub_state(bool up, void *arg)
{
    struct chat_cluster *cl = arg;

    cl->subscribed = false;
    set_gauge(cl);
    if (up)
        pm_redis_commandv(cl->sub, subscribed_cb, cl, "SUBSCRIBE", cl->channel,
                          NULL);
}

static void
on_cmd_state(bool up, void *arg)
{
    struct chat_cluster *cl = arg;

    cl->cmd_up = up;
    set_gauge(cl);
    if (up && cl->subscribed)
        send_alive(cl);
}

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct chat_cluster *cl = arg;
    struct inst *in, *tmp;
    uint64_t now = pm_now_ms();

    (void)fd;
    (void)what;
    send_alive(cl);
    HASH_ITER(hh, cl->insts, in, tmp)
    {
        if (now - in->seen_ms > CLUSTER_DEAD_MS) {
            pm_log(PM_LOG_WARN, "cluster_instance_lost",
                   "instance %s silent for %d ms: its users are offline",
                   in->id, CLUSTER_DEAD_MS);
            inst_drop(cl, in);
        }
    }
}

int
chat_cluster_init(struct chat *chat, char *err, size_t errlen)
{
    const struct pm_core_conf *core = pm_server_conf(chat->srv);
    struct pm_metrics *m = pm_server_metrics(chat->srv);
    struct pm_redis_opts o = {0};
    struct chat_cluster *cl;
    struct timeval tv = {CLUSTER_ALIVE_MS / 1000, 0};
    uint8_t rnd[INST_LEN / 2];
    size_t i;

    if (core->redis_url == NULL || core->redis_url[0] == '\0')
        return PM_OK;
    cl = pm_xcalloc(1, sizeof *cl);
    cl->chat = chat;
    chat->cluster = cl;
    pm_random_bytes(rnd, sizeof rnd);
    for (i = 0; i < sizeof rnd; i++)
        snprintf(cl->inst + 2 * i, 3, "%02x", rnd[i]);
    cl->channel = pm_xasprintf(
        "%s:events", core->redis_key_prefix ? core->redis_key_prefix : "chat");
    cl->up_gauge = pm_metrics_gauge(m, "p2pmesh_chat_redis_up", NULL,
                                    "1 while the Redis fan-out link is up");
    cl->published = pm_metrics_counter(m, "p2pmesh_chat_published_total", NULL,
                                       "Events published to Redis");
    o.url = core->redis_url;
    o.tls_ca = core->redis_tls_ca;
    o.arg = cl;
    o.on_state = on_cmd_state;
    cl->cmd = pm_redis_new(pm_server_base(chat->srv), &o, err, errlen);
    if (cl->cmd == NULL)
        return PM_EINVAL;
    o.on_state = on_sub_state;
    o.on_message = on_message;
    cl->sub = pm_redis_new(pm_server_base(chat->srv), &o, err, errlen);
    if (cl->sub == NULL)
        return PM_EINVAL;
    cl->tick =
        event_new(pm_server_base(chat->srv), -1, EV_PERSIST, tick_cb, cl);
    event_add(cl->tick, &tv);
    return PM_OK;
}

bool
chat_cluster_up(const struct chat *chat)
{
    return chat->cluster == NULL ||
           (chat->cluster->cmd_up && chat->cluster->subscribed);
}

void
chat_cluster_free(struct chat *chat)
{
    struct chat_cluster *cl = chat->cluster;
    struct inst *in, *it;
    struct remote_user *r, *rt;

    if (cl == NULL)
        return;
    if (cl->tick != NULL)
        event_free(cl->tick);
    pm_redis_free(cl->cmd);
    pm_redis_free(cl->sub);
    HASH_ITER(hh, cl->insts, in, it)
    {
        struct inst_user *iu, *ut;

        HASH_ITER(hh, in->users, iu, ut)
        {
            HASH_DEL(in->users, iu);
            free(iu);
        }
        HASH_DEL(cl->insts, in);
        free(in);
    }
    HASH_ITER(hh, cl->remote, r, rt)
    {
        HASH_DEL(cl->remote, r);
        free(r);
    }
    free(cl->channel);
    free(cl);
    chat->cluster = NULL;
}
