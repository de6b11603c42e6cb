/*
 * signaling_yws: the y-webrtc dialect. Connections subscribe to topics
 * (Yjs room names); a publish goes to every subscriber of its topic,
 * the sender included, with "clients" set to the subscriber count, and
 * ping is answered with pong. Each topic keeps its subscriptions in an
 * array (removal swaps the last one in), each connection its own list,
 * so subscribe, unsubscribe and close cost O(topics of the connection).
 * In cluster mode a publish also goes to the instances watching the
 * topic, and each counts its own subscribers. Loop thread.
 */
#include "config.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>

#include <cjson/cJSON.h>

#include "pm_conn.h"
#include "pm_metrics.h"
#include "pm_util.h"
#include "signaling.h"

struct yws_topic;

/* One connection subscribed to one topic. */
struct yws_sub {
    struct yws_topic *topic;
    struct sig_client *client;
    size_t pos; /* index in topic->subs */
};

struct yws_topic {
    char *name;
    struct yws_sub **subs;
    size_t n, cap;
    UT_hash_handle hh;
};

/* A connection's subscriptions (sig_client dd). */
struct yws_conn {
    struct yws_sub **subs;
    size_t n, cap;
};

struct sig_yws {
    struct yws_topic *topics;
};

void
sig_yws_init(struct sig *s)
{
    s->yws = pm_xcalloc(1, sizeof *s->yws);
}

void
sig_yws_free(struct sig *s)
{
    /* Connections left through sig_yws_departed: no topic remains. */
    if (s->yws != NULL)
        PM_ASSERT(s->yws->topics == NULL);
    free(s->yws);
    s->yws = NULL;
}

static struct yws_topic *
topic_find(struct sig *s, const char *name)
{
    struct yws_topic *t;

    HASH_FIND_STR(s->yws->topics, name, t);
    return t;
}

static void
subscribe(struct sig *s, struct sig_client *c, struct yws_conn *yc,
          const char *name)
{
    struct yws_topic *t = topic_find(s, name);
    struct yws_sub *sub;
    size_t i;

    if (t != NULL)
        for (i = 0; i < yc->n; i++)
            if (yc->subs[i]->topic == t)
                return; /* already */
    if (yc->n >= (size_t)s->conf->max_topics_per_conn ||
        (t != NULL && t->n >= (size_t)s->conf->max_peers_per_realm))
        return; /* over a cap: skipped like a non-string topic */
    if (t == NULL) {
        t = pm_xcalloc(1, sizeof *t);
        t->name = pm_xstrdup(name);
        HASH_ADD_KEYPTR(hh, s->yws->topics, t->name, strlen(t->name), t);
        sig_cluster_watch(s, SIG_CHAN_TOPIC, name);
    }
    sub = pm_xmalloc(sizeof *sub);
    sub->topic = t;
    sub->client = c;
    sub->pos = t->n;
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 4;
        t->subs = pm_xrealloc(t->subs, t->cap * sizeof *t->subs);
    }
    t->subs[t->n++] = sub;
    if (yc->n == yc->cap) {
        yc->cap = yc->cap ? yc->cap * 2 : 4;
        yc->subs = pm_xrealloc(yc->subs, yc->cap * sizeof *yc->subs);
    }
    yc->subs[yc->n++] = sub;
}

/* Drop sub from its topic (freeing an empty topic) and free it. */
static void
sub_free(struct sig *s, struct yws_sub *sub)
{
    struct yws_topic *t = sub->topic;

    t->subs[sub->pos] = t->subs[--t->n];
    t->subs[sub->pos]->pos = sub->pos;
    free(sub);
    if (t->n > 0)
        return;
    sig_cluster_unwatch(s, SIG_CHAN_TOPIC, t->name);
    HASH_DEL(s->yws->topics, t);
    free(t->subs);
    free(t->name);
    free(t);
}

static void
unsubscribe(struct sig *s, struct yws_conn *yc, const char *name)
{
    struct yws_topic *t = topic_find(s, name);
    size_t i;

    if (t == NULL)
        return;
    for (i = 0; i < yc->n; i++) {
        if (yc->subs[i]->topic == t) {
            sub_free(s, yc->subs[i]);
            yc->subs[i] = yc->subs[--yc->n];
            return;
        }
    }
}

/*
 * Send the message data[0..len) (parsed: msg) with "clients" = the
 * topic's local subscriber count to each subscriber. The count is spliced
 * into the original text; objects that cannot be spliced safely are
 * re-serialised.
 */
static void
fan_out(struct sig *s, struct yws_topic *t, cJSON *msg, const char *data,
        size_t len)
{
    static const char *const clients_key[] = {"clients", NULL};
    struct sig_span span;
    struct pm_conn **conns;
    struct iovec iov[3];
    char num[32], *out = NULL;
    size_t close, i, n;
    int niov = 3;

    if (sig_json_scan(data, len, clients_key, &span, &close) && close > 1) {
        iov[0].iov_base = (void *)data;
        iov[1].iov_base = num;
        if (span.end > 0) { /* replace its value */
            iov[0].iov_len = span.start;
            iov[1].iov_len = (size_t)snprintf(num, sizeof num, "%zu", t->n);
            iov[2].iov_base = (void *)(data + span.end);
            iov[2].iov_len = len - span.end;
        } else { /* add it last */
            iov[0].iov_len = close;
            iov[1].iov_len =
                (size_t)snprintf(num, sizeof num, ",\"clients\":%zu", t->n);
            iov[2].iov_base = (void *)(data + close);
            iov[2].iov_len = len - close;
        }
    } else {
        while (cJSON_GetObjectItemCaseSensitive(msg, "clients") != NULL)
            cJSON_DeleteItemFromObjectCaseSensitive(msg, "clients");
        cJSON_AddNumberToObject(msg, "clients", (double)t->n);
        out = cJSON_PrintUnformatted(msg);
        iov[0].iov_base = out;
        iov[0].iov_len = strlen(out);
        niov = 1;
    }
    /* A send can drop a slow reader, whose close edits t: copy first
     * (connections are freed only after this callback). */
    n = t->n;
    conns = pm_xmalloc(n * sizeof *conns);
    for (i = 0; i < n; i++)
        conns[i] = t->subs[i]->client->conn;
    for (i = 0; i < n; i++)
        if (pm_conn_ws_sendv(conns[i], PM_WS_TEXT, iov, niov) == PM_OK)
            (*s->stats.relayed_yws)++;
    free(conns);
    free(out);
}

static void
publish(struct sig *s, cJSON *msg, const char *data, size_t len)
{
    const cJSON *topic = cJSON_GetObjectItemCaseSensitive(msg, "topic");
    struct yws_topic *t;

    if (!cJSON_IsString(topic))
        return;
    sig_cluster_broadcast(s, SIG_CHAN_TOPIC, topic->valuestring, data, len);
    t = topic_find(s, topic->valuestring);
    if (t != NULL)
        fan_out(s, t, msg, data, len);
}

void
sig_yws_remote(struct sig *s, const char *topic, const char *msg, size_t len)
{
    struct yws_topic *t = topic_find(s, topic);
    cJSON *o;

    if (t == NULL)
        return;
    o = cJSON_ParseWithLength(msg, len);
    if (cJSON_IsObject(o))
        fan_out(s, t, o, msg, len);
    cJSON_Delete(o);
}

/* For each string in msg's "topics" array call fn. */
static void
each_topic(struct sig *s, struct sig_client *c, struct yws_conn *yc,
           const cJSON *msg, bool sub)
{
    const cJSON *topics = cJSON_GetObjectItemCaseSensitive(msg, "topics");
    const cJSON *t;

    if (!cJSON_IsArray(topics))
        return;
    cJSON_ArrayForEach(t, topics)
    {
        if (!cJSON_IsString(t))
            continue; /* non-string topics are skipped */
        if (sub)
            subscribe(s, c, yc, t->valuestring);
        else
            unsubscribe(s, yc, t->valuestring);
    }
}

void
sig_yws_message(struct sig *s, struct sig_client *c, cJSON *msg,
                const char *type, const char *data, size_t len)
{
    struct yws_conn *yc = c->dd;

    if (type == NULL || !cJSON_IsObject(msg))
        return; /* the reference server ignores these too */
    if (yc == NULL)
        yc = c->dd = pm_xcalloc(1, sizeof *yc);
    if (strcmp(type, "subscribe") == 0)
        each_topic(s, c, yc, msg, true);
    else if (strcmp(type, "unsubscribe") == 0)
        each_topic(s, c, yc, msg, false);
    else if (strcmp(type, "publish") == 0)
        publish(s, msg, data, len);
    else if (strcmp(type, "ping") == 0)
        pm_conn_ws_send(c->conn, PM_WS_TEXT, "{\"type\":\"pong\"}", 15);
}

void
sig_yws_departed(struct sig *s, struct sig_client *c)
{
    struct yws_conn *yc = c->dd;
    size_t i;

    if (yc == NULL)
        return;
    for (i = 0; i < yc->n; i++)
        sub_free(s, yc->subs[i]);
    free(yc->subs);
    free(yc);
    c->dd = NULL;
}
