/*
 * signaling_cluster: cluster mode (redis.url set). Instances share one
 * Redis and never talk to each other directly.
 *
 *   {prefix}:peer:{realm}:{id}  presence: the instance holding a peer, set
 *                               on join, refreshed every presence_ttl/3
 *                               while its socket lives, expiring after
 *   {prefix}:events             every instance: heartbeats, joins, leaves,
 *                               snapshots and snapshot requests
 *   {prefix}:inst:{instance}    one instance: relays, snapshot replies
 *   {prefix}:topic:{name}       y-webrtc publishes, subscribed on interest
 *   {prefix}:mbpush:{id}        mailbox pushes, subscribed on interest
 *
 * Each instance keeps a replica of the whole registry (remote peers are
 * sig_client entries without a connection), so bootstrap lists, join
 * announcements and routing are local lookups; a relay to a remote peer
 * is one PUBLISH to its instance. After (re)connecting, an instance
 * publishes a snapshot of its own peers and asks the others for theirs;
 * a snapshot replaces what was known of its sender. An instance silent
 * for INSTANCE_TIMEOUT_MS is presumed dead and its peers leave.
 *
 * Messages are a type letter and length-prefixed fields ("5:hello"), so
 * ids, realm names and payloads may hold any byte. Loop thread.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include <event2/event.h>

#include "pm_log.h"
#include "pm_metrics.h"
#include "pm_redis.h"
#include "pm_server.h"
#include "pm_util.h"
#include "signaling.h"

#define HEARTBEAT_MS 1000
#define INSTANCE_TIMEOUT_MS 5000
#define SNAPSHOT_CHUNK 65536
#define INST_LEN SIG_INST_LEN

struct sig_inst {
    char id[INST_LEN + 1];
    uint64_t heard_ms;
    uint32_t gen;
    struct sig_client_list peers;
    UT_hash_handle hh;
};

struct watch {
    char *channel;
    enum sig_chan kind;
    char *name;
    unsigned refs;
    UT_hash_handle hh;
};

struct sig_cluster {
    struct sig *s;
    struct pm_redis *cmd, *sub;
    bool cmd_up, sub_up;
    bool subscribed; /* events and own channel confirmed */
    bool up;         /* cmd_up && subscribed, resynced */
    char inst[INST_LEN + 1];
    char *prefix;
    char *ch_events, *ch_inst;
    struct sig_inst *insts;
    struct watch *watches;
    struct event *tick;
    uint64_t up_since_ms, refreshed_ms;
    int64_t *redis_up, *instances, *remote_peers;
    uint64_t *remote_relays;
    struct pm_histogram *latency;
};

/* Growable message buffer. */
struct wbuf {
    char *p;
    size_t n, cap;
};

static void
wb_put(struct wbuf *b, const void *data, size_t len)
{
    if (b->n + len + 1 > b->cap) {
        b->cap = (b->n + len + 1) * 2;
        b->p = pm_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, data, len);
    b->n += len;
}

static void
wb_field(struct wbuf *b, const void *data, size_t len)
{
    char hdr[24];
    int n = snprintf(hdr, sizeof hdr, "%zu:", len);

    wb_put(b, hdr, (size_t)n);
    wb_put(b, data, len);
}

static void
wb_str(struct wbuf *b, const char *s)
{
    wb_field(b, s, strlen(s));
}

/* Reader over a received message. */
struct rbuf {
    const char *p;
    size_t n;
};

/* Next field; false when malformed or at the end. */
static bool
rb_field(struct rbuf *b, const char **data, size_t *len)
{
    size_t v = 0, i = 0;

    while (i < b->n && i < 12 && b->p[i] >= '0' && b->p[i] <= '9')
        v = v * 10 + (size_t)(b->p[i++] - '0');
    if (i == 0 || i >= b->n || b->p[i] != ':' || v > b->n - i - 1)
        return false;
    *data = b->p + i + 1;
    *len = v;
    b->p += i + 1 + v;
    b->n -= i + 1 + v;
    return true;
}

/* Next field as a NUL-ended copy in out (false if it does not fit). */
static bool
rb_str(struct rbuf *b, char *out, size_t outlen)
{
    const char *d;
    size_t n;

    if (!rb_field(b, &d, &n) || n >= outlen || memchr(d, '\0', n) != NULL)
        return false;
    memcpy(out, d, n);
    out[n] = '\0';
    return true;
}

/* A kind field: one letter, or none ('\0'). */
static bool
rb_kind(struct rbuf *b, char *kind)
{
    char k[2];

    if (!rb_str(b, k, sizeof k))
        return false;
    *kind = k[0];
    return true;
}

bool
sig_cluster_decode(const char *msg, size_t len, struct sig_cluster_msg *m)
{
    struct rbuf rb = {msg + 1, len ? len - 1 : 0};
    char mark[8];

    memset(m, 0, sizeof *m);
    if (len == 0)
        return false;
    m->type = msg[0];
    if (!rb_str(&rb, m->inst, sizeof m->inst))
        return false;
    switch (m->type) {
    case 'J':
        m->ok = rb_kind(&rb, &m->kind) &&
                rb_str(&rb, m->realm, sizeof m->realm) &&
                rb_str(&rb, m->id, sizeof m->id) &&
                rb_str(&rb, m->token, sizeof m->token);
        break;
    case 'L':
        m->ok = rb_kind(&rb, &m->kind) &&
                rb_str(&rb, m->realm, sizeof m->realm) &&
                rb_str(&rb, m->id, sizeof m->id);
        break;
    case 'R':
        m->ok = rb_kind(&rb, &m->kind) &&
                rb_str(&rb, m->realm, sizeof m->realm) &&
                rb_str(&rb, m->id, sizeof m->id) &&
                rb_str(&rb, m->from, sizeof m->from) &&
                rb_str(&rb, m->rtype, sizeof m->rtype) &&
                rb_str(&rb, m->hop, sizeof m->hop) &&
                rb_str(&rb, m->sent, sizeof m->sent) &&
                rb_field(&rb, &m->payload, &m->len) &&
                (m->kind == SIG_REALM_MESH || m->kind == SIG_REALM_PEERJS);
        break;
    case 'Y':
        if (rb_str(&rb, mark, sizeof mark)) {
            m->ok = true;
            m->first = strcmp(mark, "first") == 0;
            m->rest = rb.p;
            m->nrest = rb.n;
        }
        break;
    default:
        break;
    }
    return true;
}

int
sig_cluster_snapshot_next(struct sig_cluster_msg *m)
{
    struct rbuf rb = {m->rest, m->nrest};
    char kind[8];
    int rc = -1;

    if (m->rest == NULL || !rb_str(&rb, kind, sizeof kind))
        return -1;
    if (strcmp(kind, "end") == 0)
        rc = 0;
    else if (strlen(kind) <= 1 && rb_str(&rb, m->realm, sizeof m->realm) &&
             rb_str(&rb, m->id, sizeof m->id) &&
             rb_str(&rb, m->token, sizeof m->token)) {
        m->kind = kind[0];
        rc = 1;
    }
    m->rest = rc < 0 ? NULL : rb.p;
    m->nrest = rc < 0 ? 0 : rb.n;
    return rc;
}

bool
sig_cluster_enabled(const struct sig *s)
{
    return s->cluster != NULL;
}

bool
sig_cluster_up(const struct sig *s)
{
    return s->cluster != NULL && s->cluster->up;
}

struct pm_redis *
sig_cluster_redis(struct sig *s)
{
    return s->cluster != NULL ? s->cluster->cmd : NULL;
}

char *
sig_cluster_key(const struct sig *s, const char *a, const char *b)
{
    return pm_xasprintf("%s:%s:%s", s->cluster->prefix, a, b);
}

/* Realm names in keys: '%', ':' and '/' escaped, so no two collide. */
static char *
presence_key(struct sig_cluster *cl, const struct sig_client *c)
{
    const char *name = c->realm->name;
    char *out = pm_xmalloc(strlen(name) * 3 + 1), *o = out, *key;

    for (; *name != '\0'; name++) {
        if (*name == '%' || *name == ':' || *name == '/')
            o += sprintf(o, "%%%02X", (unsigned char)*name);
        else
            *o++ = *name;
    }
    *o = '\0';
    key = pm_xasprintf("%s:peer:%s%s:%s", cl->prefix,
                       c->realm->kind == SIG_REALM_PEERJS ? "peerjs/" : "", out,
                       c->id);
    free(out);
    return key;
}

static void
publish(struct sig_cluster *cl, const char *channel, const struct wbuf *b,
        pm_redis_reply_fn cb, void *arg)
{
    const char *argv[3] = {"PUBLISH", channel, b->p};
    size_t lens[3] = {7, strlen(channel), b->n};

    if (pm_redis_command(cl->cmd, cb, arg, 3, argv, lens) != PM_OK && cb)
        cb(NULL, arg);
}

static void
set_presence(struct sig_cluster *cl, const struct sig_client *c)
{
    char *key = presence_key(cl, c), ttl[24];

    snprintf(ttl, sizeof ttl, "%llu",
             (unsigned long long)cl->s->conf->presence_ttl);
    pm_redis_commandv(cl->cmd, NULL, NULL, "SET", key, cl->inst, "PX", ttl,
                      NULL);
    free(key);
}

/* The events message announcing c (J), or the entry of a snapshot. */
static void
put_peer(struct wbuf *b, const struct sig_client *c)
{
    char kind = (char)c->realm->kind;

    wb_field(b, &kind, 1);
    wb_str(b, c->realm->name);
    wb_str(b, c->id);
    wb_str(b, c->token ? c->token : "");
}

void
sig_cluster_joined(struct sig *s, struct sig_client *c)
{
    struct sig_cluster *cl = s->cluster;
    struct wbuf b = {0};

    if (cl == NULL || !cl->up)
        return; /* the snapshot after reconnecting will tell */
    set_presence(cl, c);
    wb_put(&b, "J", 1);
    wb_str(&b, cl->inst);
    put_peer(&b, c);
    publish(cl, cl->ch_events, &b, NULL, NULL);
    free(b.p);
}

void
sig_cluster_left(struct sig *s, struct sig_client *c)
{
    static const char cad[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then "
                              "return redis.call('DEL', KEYS[1]) end return 0";
    struct sig_cluster *cl = s->cluster;
    struct wbuf b = {0};
    char kind, *key;

    if (cl == NULL || !cl->up)
        return;
    /* Delete the presence key only if it is still ours (a takeover on
     * another instance has already replaced it). */
    key = presence_key(cl, c);
    pm_redis_commandv(cl->cmd, NULL, NULL, "EVAL", cad, "1", key, cl->inst,
                      NULL);
    free(key);
    kind = (char)c->realm->kind;
    wb_put(&b, "L", 1);
    wb_str(&b, cl->inst);
    wb_field(&b, &kind, 1);
    wb_str(&b, c->realm->name);
    wb_str(&b, c->id);
    publish(cl, cl->ch_events, &b, NULL, NULL);
    free(b.p);
}

static struct sig_inst *
inst_get(struct sig_cluster *cl, const char *id)
{
    struct sig_inst *in;

    HASH_FIND_STR(cl->insts, id, in);
    if (in == NULL) {
        in = pm_xcalloc(1, sizeof *in);
        pm_strlcpy(in->id, id, sizeof in->id);
        TAILQ_INIT(&in->peers);
        HASH_ADD_STR(cl->insts, id, in);
        (*cl->instances)++;
        pm_log_kv(PM_LOG_INFO, "cluster_instance", "instance seen", "instance",
                  id, NULL);
    }
    in->heard_ms = pm_now_ms();
    return in;
}

void
sig_cluster_forget(struct sig *s, struct sig_client *c)
{
    struct sig_realm *r = c->realm;

    PM_ASSERT(c->conn == NULL && c->inst != NULL);
    TAILQ_REMOVE(&c->inst->peers, c, by_inst);
    (*s->cluster->remote_peers)--;
    sig_realm_remove(s, c);
    free(c->token);
    free(c);
    sig_realm_release(s, r);
}

/* A remote peer left (or its instance died): forget it, tell locals. */
static void
remote_gone(struct sig *s, struct sig_client *c)
{
    struct sig_realm *r = c->realm;
    bool mesh = r->kind == SIG_REALM_MESH;
    char *id = pm_xstrdup(c->id);

    r->nclients++; /* keep r while announcing */
    sig_cluster_forget(s, c);
    if (mesh)
        sig_mesh_remote_left(s, r, id);
    r->nclients--;
    sig_realm_release(s, r);
    free(id);
}

/* Instance in holds (kind, realm, id): record it, displacing others. */
static void
remote_join(struct sig *s, struct sig_inst *in, char kind, const char *realm,
            const char *id, const char *token)
{
    struct sig_realm *r;
    struct sig_client *old, *c;

    if (kind != SIG_REALM_MESH && kind != SIG_REALM_PEERJS)
        return;
    r = sig_realm_get(s, (enum sig_realm_kind)kind, realm);
    old = sig_realm_find(r, id);
    if (old != NULL && old->conn == NULL && old->inst == in) {
        old->gen = in->gen; /* known already (a snapshot repeats it) */
        free(old->token);
        old->token = token[0] ? pm_xstrdup(token) : NULL;
        /* held while its instance was unreachable: route it now */
        sig_offline_deliver(s, r, id);
        return;
    }
    r->nclients++; /* keep r while displacing */
    if (old != NULL && old->conn != NULL) {
        if (kind == SIG_REALM_MESH)
            sig_mesh_displaced(s, old);
        else
            sig_peerjs_displaced(s, old);
    } else if (old != NULL) {
        sig_cluster_forget(s, old);
    }
    c = pm_xcalloc(1, sizeof *c);
    c->inst = in;
    c->dialect = kind == SIG_REALM_MESH ? SIG_MESH : SIG_PEERJS;
    c->realm = r;
    c->token = token[0] ? pm_xstrdup(token) : NULL;
    c->gen = in->gen;
    sig_realm_add(s, c, id);
    TAILQ_INSERT_TAIL(&in->peers, c, by_inst);
    (*s->cluster->remote_peers)++;
    if (kind == SIG_REALM_MESH)
        sig_mesh_remote_joined(s, c);
    sig_offline_deliver(s, r, id); /* what waited for it goes there now */
    r->nclients--;
    sig_realm_release(s, r);
}

static void
remote_leave(struct sig *s, struct sig_inst *in, char kind, const char *realm,
             const char *id)
{
    char *hkey = pm_xasprintf("%c%s", kind, realm);
    struct sig_realm *r;
    struct sig_client *c;

    HASH_FIND_STR(s->realms, hkey, r);
    free(hkey);
    if (r == NULL || (c = sig_realm_find(r, id)) == NULL || c->conn != NULL ||
        c->inst != in)
        return; /* not (or no longer) that instance's */
    remote_gone(s, c);
}

/* Publish our own peers on channel, in chunks. */
static void
send_snapshot(struct sig_cluster *cl, const char *channel)
{
    struct sig *s = cl->s;
    struct sig_realm *r, *rt;
    struct sig_client *c, *ct;
    struct wbuf b = {0};
    bool first = true;

    HASH_ITER(hh, s->realms, r, rt)
    {
        HASH_ITER(hh, r->peers, c, ct)
        {
            if (c->conn == NULL)
                continue;
            if (b.n == 0) {
                wb_put(&b, "Y", 1);
                wb_str(&b, cl->inst);
                wb_str(&b, first ? "first" : "more");
                first = false;
            }
            put_peer(&b, c);
            if (b.n >= SNAPSHOT_CHUNK) {
                publish(cl, channel, &b, NULL, NULL);
                b.n = 0;
            }
        }
    }
    if (b.n == 0) {
        wb_put(&b, "Y", 1);
        wb_str(&b, cl->inst);
        wb_str(&b, first ? "first" : "more");
    }
    wb_str(&b, "end");
    publish(cl, channel, &b, NULL, NULL);
    free(b.p);
}

/* A snapshot chunk of instance in: entries, then "end" on the last. */
static void
recv_snapshot(struct sig *s, struct sig_inst *in, struct sig_cluster_msg *m)
{
    struct sig_client *c, *next;
    int rc;

    if (!m->ok)
        return;
    if (m->first)
        in->gen++;
    while ((rc = sig_cluster_snapshot_next(m)) > 0)
        remote_join(s, in, m->kind, m->realm, m->id, m->token);
    if (rc < 0)
        return;
    /* The snapshot is complete: whatever it did not name has left. */
    for (c = TAILQ_FIRST(&in->peers); c != NULL; c = next) {
        next = TAILQ_NEXT(c, by_inst);
        if (c->gen != in->gen)
            remote_gone(s, c); /* only c leaves the list */
    }
}

/* Resolve a received type to a static string (held messages keep it). */
static const char *
intern_type(const char *t)
{
    static const char *const other[] = {
        "OFFER", "ANSWER", "CANDIDATE", "LEAVE", "EXPIRE", "error", NULL};
    const char *const *k;
    const char *m = sig_mesh_relay_type(t);

    if (m != NULL)
        return m;
    for (k = other; *k != NULL; k++)
        if (strcmp(*k, t) == 0)
            return *k;
    return "signal";
}

struct relay_ctx {
    struct sig *s;
    char kind;
    char *realm, *from, *to;
    const char *type;
};

static void
relay_ctx_free(struct relay_ctx *x)
{
    free(x->realm);
    free(x->from);
    free(x->to);
    free(x);
}

/* PUBLISH answered: 0 receivers (instance gone) or no answer means the
 * message went nowhere; tell its sender. */
static void
relay_done(const struct pm_redis_reply *rep, void *arg)
{
    struct relay_ctx *x = arg;
    struct sig *s = x->s;
    struct sig_realm *r;
    char *hkey;

    if (rep != NULL && pm_redis_reply_type(rep) == PM_REDIS_INTEGER &&
        pm_redis_reply_integer(rep) > 0) {
        relay_ctx_free(x);
        return;
    }
    if (strcmp(x->type, "error") != 0 && strcmp(x->type, "EXPIRE") != 0) {
        hkey = pm_xasprintf("%c%s", x->kind, x->realm);
        HASH_FIND_STR(s->realms, hkey, r);
        free(hkey);
        if (r != NULL)
            sig_undeliverable(s, r, x->from, x->to, x->type);
    }
    relay_ctx_free(x);
}

static int
relay_publish(struct sig *s, struct sig_client *target, const char *from,
              const char *type, const struct iovec *iov, int n, int hop)
{
    struct sig_cluster *cl = s->cluster;
    struct relay_ctx *x;
    struct wbuf b = {0};
    char kind = (char)target->realm->kind, num[24], *ch;
    size_t len = 0;
    int i;

    if (cl == NULL || !cl->up)
        return PM_EUNAVAIL;
    for (i = 0; i < n; i++)
        len += iov[i].iov_len;
    wb_put(&b, "R", 1);
    wb_str(&b, cl->inst);
    wb_field(&b, &kind, 1);
    wb_str(&b, target->realm->name);
    wb_str(&b, target->id);
    wb_str(&b, from);
    wb_str(&b, type);
    snprintf(num, sizeof num, "%d", hop);
    wb_str(&b, num);
    snprintf(num, sizeof num, "%llu", (unsigned long long)pm_wall_us());
    wb_str(&b, num);
    snprintf(num, sizeof num, "%zu:", len);
    wb_put(&b, num, strlen(num));
    for (i = 0; i < n; i++)
        wb_put(&b, iov[i].iov_base, iov[i].iov_len);
    x = pm_xcalloc(1, sizeof *x);
    x->s = s;
    x->kind = kind;
    x->realm = pm_xstrdup(target->realm->name);
    x->from = pm_xstrdup(from);
    x->to = pm_xstrdup(target->id);
    x->type = intern_type(type);
    ch = pm_xasprintf("%s:inst:%s", cl->prefix, target->inst->id);
    publish(cl, ch, &b, relay_done, x);
    free(ch);
    free(b.p);
    (*cl->remote_relays)++;
    return PM_OK;
}

int
sig_cluster_relay(struct sig *s, struct sig_client *target, const char *from,
                  const char *type, const struct iovec *iov, int n)
{
    return relay_publish(s, target, from, type, iov, n, 0);
}

/* A relay from another instance for a peer we (should) hold. */
static void
recv_relay(struct sig *s, const struct sig_cluster_msg *m)
{
    struct sig_cluster *cl = s->cluster;
    const char *to = m->id, *from = m->from, *type = m->rtype;
    const char *hop = m->hop, *sent = m->sent, *payload = m->payload;
    size_t len = m->len;
    struct sig_realm *r;
    struct sig_client *target;
    struct iovec iov;

    if (!m->ok)
        return;
    iov.iov_base = (void *)payload;
    iov.iov_len = len;
    r = sig_realm_get(s, (enum sig_realm_kind)m->kind, m->realm);
    r->nclients++;
    target = sig_realm_find(r, to);
    if (target != NULL && target->conn != NULL) {
        uint64_t now = pm_wall_us(), t0 = strtoull(sent, NULL, 10);

        sig_send_local(s, target, &iov, 1);
        if (now >= t0)
            pm_histogram_observe(cl->latency, (double)(now - t0) / 1e6);
    } else if (strcmp(type, "error") == 0 || strcmp(type, "EXPIRE") == 0) {
        /* a notice for a sender that has gone: nothing to do */
    } else if (target != NULL && hop[0] == '0') {
        /* it moved: one more hop, then it is held here */
        if (relay_publish(s, target, from, intern_type(type), &iov, 1, 1) !=
            PM_OK)
            sig_undeliverable(s, r, from, to, intern_type(type));
    } else if (sig_offline_hold(s, r, to, from, intern_type(type), payload, len,
                                r->kind == SIG_REALM_PEERJS
                                    ? s->conf->peerjs_expire
                                    : s->conf->mailbox_ttl) != PM_OK) {
        sig_undeliverable(s, r, from, to, intern_type(type));
    }
    r->nclients--;
    sig_realm_release(s, r);
}

static void
on_events(struct sig_cluster *cl, const char *msg, size_t len)
{
    struct sig *s = cl->s;
    struct sig_cluster_msg m;
    struct sig_inst *in;
    char *ch;

    if (!sig_cluster_decode(msg, len, &m) || strcmp(m.inst, cl->inst) == 0)
        return;
    in = inst_get(cl, m.inst);
    switch (m.type) {
    case 'H':
        break;
    case 'J':
        if (m.ok)
            remote_join(s, in, m.kind, m.realm, m.id, m.token);
        break;
    case 'L':
        if (m.ok)
            remote_leave(s, in, m.kind, m.realm, m.id);
        break;
    case 'S':
        ch = pm_xasprintf("%s:inst:%s", cl->prefix, m.inst);
        send_snapshot(cl, ch);
        free(ch);
        break;
    case 'Y':
        recv_snapshot(s, in, &m);
        break;
    case 'R':
        recv_relay(s, &m);
        break;
    default:
        break;
    }
}

static void
on_message(const char *channel, size_t chlen, const char *msg, size_t len,
           void *arg)
{
    struct sig_cluster *cl = arg;
    struct rbuf rb = {msg + 1, len ? len - 1 : 0};
    struct watch *w;
    char inst[INST_LEN + 1];
    const char *data;
    size_t dlen;

    if (len == 0)
        return;
    if ((chlen == strlen(cl->ch_events) &&
         memcmp(channel, cl->ch_events, chlen) == 0) ||
        (chlen == strlen(cl->ch_inst) &&
         memcmp(channel, cl->ch_inst, chlen) == 0)) {
        on_events(cl, msg, len);
        return;
    }
    HASH_FIND(hh, cl->watches, channel, chlen, w);
    if (w == NULL || msg[0] != 'B' || !rb_str(&rb, inst, sizeof inst) ||
        strcmp(inst, cl->inst) == 0 || !rb_field(&rb, &data, &dlen))
        return;
    if (w->kind == SIG_CHAN_TOPIC)
        sig_yws_remote(cl->s, w->name, data, dlen);
    else
        sig_mailbox_remote(cl->s, w->name, data, dlen);
}

static void
set_up(struct sig_cluster *cl, bool up)
{
    struct sig *s = cl->s;
    struct sig_realm *r, *rt;
    struct sig_client *c, *ct;
    struct wbuf b = {0};

    if (cl->up == up)
        return;
    cl->up = up;
    *cl->redis_up = up;
    if (!up) {
        pm_log_kv(PM_LOG_WARN, "cluster_down",
                  "cluster link lost; serving local peers only", NULL);
        return;
    }
    cl->up_since_ms = cl->refreshed_ms = pm_now_ms();
    /* Re-register our peers, tell everyone who we hold, ask for theirs. */
    HASH_ITER(hh, s->realms, r, rt)
    {
        HASH_ITER(hh, r->peers, c, ct)
        {
            if (c->conn != NULL)
                set_presence(cl, c);
        }
    }
    send_snapshot(cl, cl->ch_events);
    wb_put(&b, "S", 1);
    wb_str(&b, cl->inst);
    publish(cl, cl->ch_events, &b, NULL, NULL);
    free(b.p);
    pm_log_kv(PM_LOG_INFO, "cluster_up", "cluster link up", "instance",
              cl->inst, NULL);
}

static void
subscribe(struct sig_cluster *cl, const char *cmd, const char *channel,
          pm_redis_reply_fn cb)
{
    pm_redis_commandv(cl->sub, cb, cl, cmd, channel, NULL);
}

/* The last SUBSCRIBE of a (re)connect answered: we hear everything. */
static void
subscribed_cb(const struct pm_redis_reply *rep, void *arg)
{
    struct sig_cluster *cl = arg;

    if (rep == NULL || pm_redis_reply_type(rep) == PM_REDIS_ERROR)
        return;
    cl->subscribed = true;
    set_up(cl, cl->cmd_up);
}

static void
on_sub_state(bool up, void *arg)
{
    struct sig_cluster *cl = arg;
    struct watch *w, *tmp;

    cl->sub_up = up;
    cl->subscribed = false;
    if (!up) {
        set_up(cl, false);
        return;
    }
    HASH_ITER(hh, cl->watches, w, tmp)
    subscribe(cl, "SUBSCRIBE", w->channel, NULL);
    subscribe(cl, "SUBSCRIBE", cl->ch_events, NULL);
    subscribe(cl, "SUBSCRIBE", cl->ch_inst, subscribed_cb);
}

static void
on_cmd_state(bool up, void *arg)
{
    struct sig_cluster *cl = arg;

    cl->cmd_up = up;
    set_up(cl, up && cl->subscribed);
}

static char *
chan_name(const struct sig_cluster *cl, enum sig_chan kind, const char *name)
{
    return pm_xasprintf("%s:%s:%s", cl->prefix,
                        kind == SIG_CHAN_TOPIC ? "topic" : "mbpush", name);
}

/* The watch of (kind, name), or NULL; *chp gets its channel name
 * (malloc'd) when chp is not NULL. */
static struct watch *
watch_find(struct sig_cluster *cl, enum sig_chan kind, const char *name,
           char **chp)
{
    char *ch = chan_name(cl, kind, name);
    struct watch *w;

    HASH_FIND_STR(cl->watches, ch, w);
    if (chp != NULL)
        *chp = ch;
    else
        free(ch);
    return w;
}

void
sig_cluster_watch(struct sig *s, enum sig_chan kind, const char *name)
{
    struct sig_cluster *cl = s->cluster;
    struct watch *w;
    char *ch;

    if (cl == NULL)
        return;
    w = watch_find(cl, kind, name, &ch);
    if (w != NULL) {
        w->refs++;
        free(ch);
        return;
    }
    w = pm_xcalloc(1, sizeof *w);
    w->channel = ch;
    w->kind = kind;
    w->name = pm_xstrdup(name);
    w->refs = 1;
    HASH_ADD_KEYPTR(hh, cl->watches, w->channel, strlen(w->channel), w);
    if (cl->sub_up)
        subscribe(cl, "SUBSCRIBE", ch, NULL);
}

void
sig_cluster_unwatch(struct sig *s, enum sig_chan kind, const char *name)
{
    struct sig_cluster *cl = s->cluster;
    struct watch *w;

    if (cl == NULL)
        return;
    w = watch_find(cl, kind, name, NULL);
    if (w == NULL || --w->refs > 0)
        return;
    if (cl->sub_up)
        subscribe(cl, "UNSUBSCRIBE", w->channel, NULL);
    HASH_DEL(cl->watches, w);
    free(w->channel);
    free(w->name);
    free(w);
}

int
sig_cluster_broadcast(struct sig *s, enum sig_chan kind, const char *name,
                      const char *msg, size_t len)
{
    struct sig_cluster *cl = s->cluster;
    struct wbuf b = {0};
    char *ch;

    if (cl == NULL || !cl->up)
        return PM_EUNAVAIL;
    ch = chan_name(cl, kind, name);
    wb_put(&b, "B", 1);
    wb_str(&b, cl->inst);
    wb_field(&b, msg, len);
    publish(cl, ch, &b, NULL, NULL);
    free(b.p);
    free(ch);
    return PM_OK;
}

/* Heartbeat, presence refresh, and eviction of silent instances. */
static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sig_cluster *cl = arg;
    struct sig *s = cl->s;
    struct sig_inst *in, *tmp;
    struct sig_realm *r, *rt;
    struct sig_client *c, *ct;
    struct wbuf b = {0};
    uint64_t now = pm_now_ms();

    (void)fd;
    (void)what;
    if (!cl->up)
        return; /* frozen: nothing is evicted while we cannot hear */
    wb_put(&b, "H", 1);
    wb_str(&b, cl->inst);
    publish(cl, cl->ch_events, &b, NULL, NULL);
    free(b.p);
    if (now - cl->refreshed_ms >= s->conf->presence_ttl / 3) {
        cl->refreshed_ms = now;
        HASH_ITER(hh, s->realms, r, rt)
        {
            HASH_ITER(hh, r->peers, c, ct)
            {
                if (c->conn != NULL)
                    set_presence(cl, c);
            }
        }
    }
    if (now - cl->up_since_ms < INSTANCE_TIMEOUT_MS)
        return;
    HASH_ITER(hh, cl->insts, in, tmp)
    {
        if (now - in->heard_ms < INSTANCE_TIMEOUT_MS)
            continue;
        pm_log_kv(PM_LOG_WARN, "cluster_instance_lost",
                  "instance silent; its peers are gone", "instance", in->id,
                  NULL);
        while ((c = TAILQ_FIRST(&in->peers)) != NULL)
            remote_gone(s, c);
        HASH_DEL(cl->insts, in);
        free(in);
        (*cl->instances)--;
    }
}

int
sig_cluster_new(struct sig *s, char *err, size_t errlen)
{
    static const double bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.002,
                                    0.005,  0.01,    0.025,  0.1,   1.0};
    const struct pm_core_conf *core = pm_server_conf(s->srv);
    struct pm_metrics *m = pm_server_metrics(s->srv);
    struct pm_redis_opts o = {0};
    struct sig_cluster *cl;
    uint8_t rnd[INST_LEN / 2];
    struct timeval tv = {HEARTBEAT_MS / 1000, (HEARTBEAT_MS % 1000) * 1000};
    size_t i;

    if (core->redis_url == NULL || core->redis_url[0] == '\0')
        return PM_OK;
    cl = pm_xcalloc(1, sizeof *cl);
    cl->s = s;
    s->cluster = cl;
    pm_random_bytes(rnd, sizeof rnd);
    for (i = 0; i < sizeof rnd; i++)
        sprintf(cl->inst + 2 * i, "%02x", rnd[i]);
    cl->prefix =
        pm_xstrdup(core->redis_key_prefix ? core->redis_key_prefix : "sig");
    cl->ch_events = pm_xasprintf("%s:events", cl->prefix);
    cl->ch_inst = pm_xasprintf("%s:inst:%s", cl->prefix, cl->inst);
    cl->redis_up = pm_metrics_gauge(m, "p2pmesh_signaling_redis_up", NULL,
                                    "1 while the cluster link to Redis is up");
    cl->instances =
        pm_metrics_gauge(m, "p2pmesh_signaling_cluster_instances", NULL,
                         "Other instances heard on the cluster channel");
    cl->remote_peers =
        pm_metrics_gauge(m, "p2pmesh_signaling_cluster_remote_peers", NULL,
                         "Peers held by other instances, as known here");
    cl->remote_relays = pm_metrics_counter(
        m, "p2pmesh_signaling_cluster_relays_total", NULL,
        "Messages published to the instance holding their peer");
    cl->latency = pm_metrics_histogram(
        m, "p2pmesh_signaling_cluster_relay_seconds", NULL,
        "From publish on the sender's instance to the receiver's socket",
        bounds, sizeof bounds / sizeof bounds[0]);
    o.url = core->redis_url;
    o.tls_ca = core->redis_tls_ca;
    o.arg = cl;
    o.on_state = on_cmd_state;
    cl->cmd = pm_redis_new(pm_server_base(s->srv), &o, err, errlen);
    if (cl->cmd == NULL)
        return PM_EINVAL;
    o.on_state = on_sub_state;
    o.on_message = on_message;
    cl->sub = pm_redis_new(pm_server_base(s->srv), &o, err, errlen);
    if (cl->sub == NULL)
        return PM_EINVAL;
    cl->tick = event_new(pm_server_base(s->srv), -1, EV_PERSIST, tick_cb, cl);
    event_add(cl->tick, &tv);
    pm_log_kv(PM_LOG_INFO, "cluster_mode", "signaling state shared via Redis",
              "instance", cl->inst, "prefix", cl->prefix, NULL);
    return PM_OK;
}

void
sig_cluster_free(struct sig *s)
{
    struct sig_cluster *cl = s->cluster;
    struct sig_inst *in, *tmp;
    struct watch *w, *wt;
    struct sig_client *c;

    if (cl == NULL)
        return;
    HASH_ITER(hh, cl->insts, in, tmp)
    {
        while ((c = TAILQ_FIRST(&in->peers)) != NULL)
            sig_cluster_forget(s, c);
        HASH_DEL(cl->insts, in);
        free(in);
    }
    HASH_ITER(hh, cl->watches, w, wt)
    {
        HASH_DEL(cl->watches, w);
        free(w->channel);
        free(w->name);
        free(w);
    }
    if (cl->tick != NULL)
        event_free(cl->tick);
    pm_redis_free(cl->cmd);
    pm_redis_free(cl->sub);
    free(cl->prefix);
    free(cl->ch_events);
    free(cl->ch_inst);
    free(cl);
    s->cluster = NULL;
}
