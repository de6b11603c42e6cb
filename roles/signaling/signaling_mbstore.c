/*
 * signaling_mbstore: the two storage backends of the mailbox dialect
 * (interface and semantics in signaling_mbstore.h).
 *
 * Memory: one hash of keys, each a string, counter, list or set with a
 * deadline on the monotonic clock. A key past its deadline is gone for
 * every command (checked on access); a sweep timer, armed while keys
 * exist, frees them once a second.
 *
 * Redis: a batch is a group of pipelined commands on the cluster's
 * command connection, so its replies come in order and the last one
 * completes it. A command of the interface maps to (the reply that makes
 * its result marked *):
 *   GET *GET   SET *SET PX   SET_XX *SET PX XX   GETDEL *GETDEL   DEL *DEL
 *   EXPIRE *PEXPIRE   INCR *INCR, PEXPIRE   PUSH *RPUSH, LTRIM, PEXPIRE
 *   RANGE *LRANGE 0 -1   TAKE *LPOP key max
 *   LIVE ZREMRANGEBYSCORE -inf now, ZADD now+ttl member, *ZCARD, PEXPIRE
 * (set scores are wall-clock deadlines, shared by every instance). The
 * first error reply or lost link fails the whole batch. Batches still
 * waiting are kept on a list so mbs_free can drop them. Loop thread.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "pm_redis.h"
#include "pm_server.h"
#include "pm_util.h"
#include "signaling.h"
#include "signaling_mbstore.h"

#define SWEEP_MS 1000
#define REDIS_PER_CMD 4 /* Redis commands per interface command, at most */

enum ment_type { MT_STR, MT_INT, MT_LIST, MT_SET };

struct mmember {
    char *name;
    uint64_t until;
    UT_hash_handle hh;
};

/* One key of the memory backend. */
struct ment {
    char *key;
    enum ment_type type;
    uint64_t until; /* pm_now_ms() deadline */
    char *str;      /* MT_STR */
    long long num;  /* MT_INT */
    char **items;   /* MT_LIST, oldest first */
    size_t n, cap;
    struct mmember *members; /* MT_SET */
    UT_hash_handle hh;
};

struct rbatch;

/* One Redis command of a batch. */
struct rslot {
    struct rbatch *b;
    size_t cmd;  /* index of the interface command */
    bool result; /* its reply is that command's result */
};

struct rbatch {
    struct mbs *st;
    mbs_done_fn done;
    void *arg;
    size_t n;
    unsigned pending; /* replies still to come, +1 while sending */
    int err;
    char *errtext;
    struct mbs_res res[MBS_MAX_BATCH];
    struct rslot slots[MBS_MAX_BATCH * REDIS_PER_CMD];
    size_t nslots;
    TAILQ_ENTRY(rbatch) link;
};

TAILQ_HEAD(rbatch_list, rbatch);

struct mbs {
    struct sig *s;
    struct ment *keys;     /* memory backend */
    struct event *sweep;   /* memory backend: armed while keys exist */
    struct rbatch_list rq; /* Redis backend: batches waiting for replies */
};

/* ---- results ------------------------------------------------------ */

static void
res_clear(struct mbs_res *res, size_t n)
{
    size_t i, j;

    for (i = 0; i < n; i++) {
        free(res[i].str);
        for (j = 0; j < res[i].n; j++)
            free(res[i].items[j]);
        free(res[i].items);
        free(res[i].lens);
    }
}

static void
res_add_item(struct mbs_res *r, const char *p, size_t len)
{
    r->items = pm_xrealloc(r->items, (r->n + 1) * sizeof *r->items);
    r->lens = pm_xrealloc(r->lens, (r->n + 1) * sizeof *r->lens);
    r->items[r->n] = pm_xstrndup(p, len);
    r->lens[r->n] = len;
    r->n++;
}

/* ---- memory backend ----------------------------------------------- */

static void
ment_free(struct mbs *st, struct ment *e)
{
    struct mmember *m, *tmp;
    size_t i;

    HASH_DEL(st->keys, e);
    free(e->key);
    free(e->str);
    for (i = 0; i < e->n; i++)
        free(e->items[i]);
    free(e->items);
    HASH_ITER(hh, e->members, m, tmp)
    {
        HASH_DEL(e->members, m);
        free(m->name);
        free(m);
    }
    free(e);
}

/* The live key, or NULL (a key past its deadline is freed here). */
static struct ment *
mem_find(struct mbs *st, const char *key, uint64_t now)
{
    struct ment *e;

    HASH_FIND_STR(st->keys, key, e);
    if (e != NULL && e->until <= now) {
        ment_free(st, e);
        e = NULL;
    }
    return e;
}

/* key as a new, empty entry of type t (replacing what was there). */
static struct ment *
mem_new(struct mbs *st, const char *key, enum ment_type t)
{
    struct ment *e;
    struct timeval tv = {SWEEP_MS / 1000, (SWEEP_MS % 1000) * 1000};

    HASH_FIND_STR(st->keys, key, e);
    if (e != NULL)
        ment_free(st, e);
    e = pm_xcalloc(1, sizeof *e);
    e->key = pm_xstrdup(key);
    e->type = t;
    HASH_ADD_KEYPTR(hh, st->keys, e->key, strlen(e->key), e);
    if (!event_pending(st->sweep, EV_TIMEOUT, NULL))
        event_add(st->sweep, &tv);
    return e;
}

/* The live key of type t, created empty if absent or of another type. */
static struct ment *
mem_typed(struct mbs *st, const char *key, enum ment_type t, uint64_t now)
{
    struct ment *e = mem_find(st, key, now);

    return e != NULL && e->type == t ? e : mem_new(st, key, t);
}

static void
mem_set_members(struct ment *e, const char *name, uint64_t until, uint64_t now)
{
    struct mmember *m, *tmp;

    HASH_ITER(hh, e->members, m, tmp)
    {
        if (m->until <= now) {
            HASH_DEL(e->members, m);
            free(m->name);
            free(m);
        }
    }
    if (name == NULL)
        return;
    HASH_FIND_STR(e->members, name, m);
    if (m == NULL) {
        m = pm_xcalloc(1, sizeof *m);
        m->name = pm_xstrdup(name);
        HASH_ADD_KEYPTR(hh, e->members, m->name, strlen(m->name), m);
    }
    m->until = until;
}

/* Drop the k oldest items of a list. */
static void
mem_drop_oldest(struct ment *e, size_t k)
{
    size_t i;

    for (i = 0; i < k; i++)
        free(e->items[i]);
    memmove(e->items, e->items + k, (e->n - k) * sizeof *e->items);
    e->n -= k;
}

static void
mem_push(struct ment *e, const char *val, size_t max)
{
    if (e->n == e->cap) {
        e->cap = e->cap ? e->cap * 2 : 8;
        e->items = pm_xrealloc(e->items, e->cap * sizeof *e->items);
    }
    e->items[e->n++] = pm_xstrdup(val);
    if (e->n > max)
        mem_drop_oldest(e, e->n - max);
}

static void
mem_one(struct mbs *st, const struct mbs_cmd *c, struct mbs_res *r,
        uint64_t now)
{
    struct ment *e = mem_find(st, c->key, now);
    size_t i;

    switch (c->op) {
    case MBS_GET:
    case MBS_GETDEL:
        if (e == NULL || e->type != MT_STR) {
            r->nil = true;
            break;
        }
        r->str = pm_xstrdup(e->str);
        if (c->op == MBS_GETDEL)
            ment_free(st, e);
        break;
    case MBS_SET_XX:
        if (e == NULL) {
            r->nil = true;
            break;
        }
        /* fall through */
    case MBS_SET:
        e = mem_new(st, c->key, MT_STR);
        e->str = pm_xstrdup(c->val);
        e->until = now + c->ttl_ms;
        break;
    case MBS_DEL:
        if (e != NULL)
            ment_free(st, e);
        break;
    case MBS_EXPIRE:
        if (e != NULL)
            e->until = now + c->ttl_ms;
        break;
    case MBS_INCR:
        e = mem_typed(st, c->key, MT_INT, now);
        r->num = ++e->num;
        e->until = now + c->ttl_ms;
        break;
    case MBS_PUSH:
        e = mem_typed(st, c->key, MT_LIST, now);
        mem_push(e, c->val, c->max);
        r->num = (long long)e->n;
        e->until = now + c->ttl_ms;
        break;
    case MBS_RANGE:
    case MBS_TAKE:
        if (e == NULL || e->type != MT_LIST)
            break;
        for (i = 0; i < e->n && (c->op == MBS_RANGE || i < c->max); i++)
            res_add_item(r, e->items[i], strlen(e->items[i]));
        if (c->op == MBS_TAKE && i == e->n)
            ment_free(st, e); /* as Redis: an emptied list is gone */
        else if (c->op == MBS_TAKE)
            mem_drop_oldest(e, i);
        break;
    case MBS_LIVE:
        e = mem_typed(st, c->key, MT_SET, now);
        mem_set_members(e, c->val, now + c->ttl_ms, now);
        r->num = (long long)HASH_COUNT(e->members);
        e->until = now + c->ttl_ms;
        break;
    }
}

static void
sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mbs *st = arg;
    struct ment *e, *tmp;
    struct timeval tv = {SWEEP_MS / 1000, (SWEEP_MS % 1000) * 1000};
    uint64_t now = pm_now_ms();

    (void)fd;
    (void)what;
    HASH_ITER(hh, st->keys, e, tmp)
    {
        if (e->until <= now)
            ment_free(st, e);
        else if (e->type == MT_SET)
            mem_set_members(e, NULL, 0, now);
    }
    if (st->keys != NULL)
        event_add(st->sweep, &tv);
}

static void
mem_run(struct mbs *st, const struct mbs_cmd *cmds, size_t n, mbs_done_fn done,
        void *arg)
{
    struct mbs_res res[MBS_MAX_BATCH];
    uint64_t now = pm_now_ms();
    size_t i;

    memset(res, 0, sizeof res);
    for (i = 0; i < n; i++)
        mem_one(st, &cmds[i], &res[i], now);
    if (done != NULL)
        done(arg, PM_OK, NULL, res);
    res_clear(res, n);
}

/* ---- Redis backend ------------------------------------------------ */

static void
rbatch_release(struct rbatch *b)
{
    if (--b->pending > 0)
        return;
    TAILQ_REMOVE(&b->st->rq, b, link);
    if (b->done != NULL)
        b->done(b->arg, b->err, b->errtext, b->err == PM_OK ? b->res : NULL);
    res_clear(b->res, b->n);
    free(b->errtext);
    free(b);
}

static void
reply_cb(const struct pm_redis_reply *rep, void *arg)
{
    struct rslot *sl = arg;
    struct rbatch *b = sl->b;
    struct mbs_res *r = &b->res[sl->cmd];
    const struct pm_redis_reply *el;
    const char *p;
    size_t len, i;

    if (rep == NULL) {
        if (b->err == PM_OK)
            b->err = PM_EUNAVAIL;
    } else if (pm_redis_reply_type(rep) == PM_REDIS_ERROR) {
        if (b->err == PM_OK) {
            p = pm_redis_reply_str(rep, &len);
            b->err = PM_EIO;
            b->errtext = pm_xstrndup(p, len);
        }
    } else if (sl->result) {
        switch (pm_redis_reply_type(rep)) {
        case PM_REDIS_NIL:
            r->nil = true;
            break;
        case PM_REDIS_STRING:
            p = pm_redis_reply_str(rep, &len);
            r->str = pm_xstrndup(p, len);
            break;
        case PM_REDIS_INTEGER:
            r->num = pm_redis_reply_integer(rep);
            break;
        case PM_REDIS_ARRAY:
            for (i = 0; i < pm_redis_reply_elements(rep); i++) {
                el = pm_redis_reply_element(rep, i);
                if (pm_redis_reply_type(el) != PM_REDIS_STRING)
                    continue;
                p = pm_redis_reply_str(el, &len);
                res_add_item(r, p, len);
            }
            break;
        default:
            break;
        }
    }
    rbatch_release(b);
}

/* Queue one Redis command; false (batch failed) if Redis is down. */
static bool
rsend(struct rbatch *b, struct pm_redis *rd, size_t cmd, bool result, int argc,
      const char **argv)
{
    struct rslot *sl = &b->slots[b->nslots++];
    size_t lens[8];
    int i;

    for (i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    sl->b = b;
    sl->cmd = cmd;
    sl->result = result;
    if (pm_redis_command(rd, reply_cb, sl, argc, argv, lens) != PM_OK) {
        b->err = PM_EUNAVAIL;
        return false;
    }
    b->pending++;
    return true;
}

static bool
redis_one(struct rbatch *b, struct pm_redis *rd, size_t i,
          const struct mbs_cmd *c)
{
    char ttl[24], max[24], keep[24], now[24], until[24];
    const char *k = c->key;

    snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)c->ttl_ms);
    snprintf(max, sizeof max, "%zu", c->max);
    snprintf(keep, sizeof keep, "-%zu", c->max); /* LTRIM: the newest max */
    switch (c->op) {
    case MBS_GET: {
        const char *a[] = {"GET", k};
        return rsend(b, rd, i, true, 2, a);
    }
    case MBS_SET: {
        const char *a[] = {"SET", k, c->val, "PX", ttl};
        return rsend(b, rd, i, true, 5, a);
    }
    case MBS_SET_XX: {
        const char *a[] = {"SET", k, c->val, "PX", ttl, "XX"};
        return rsend(b, rd, i, true, 6, a);
    }
    case MBS_GETDEL: {
        const char *a[] = {"GETDEL", k};
        return rsend(b, rd, i, true, 2, a);
    }
    case MBS_DEL: {
        const char *a[] = {"DEL", k};
        return rsend(b, rd, i, true, 2, a);
    }
    case MBS_EXPIRE: {
        const char *a[] = {"PEXPIRE", k, ttl};
        return rsend(b, rd, i, true, 3, a);
    }
    case MBS_INCR: {
        const char *a[] = {"INCR", k}, *e[] = {"PEXPIRE", k, ttl};
        return rsend(b, rd, i, true, 2, a) && rsend(b, rd, i, false, 3, e);
    }
    case MBS_PUSH: {
        const char *a[] = {"RPUSH", k, c->val}, *t[] = {"LTRIM", k, keep, "-1"},
                   *e[] = {"PEXPIRE", k, ttl};
        return rsend(b, rd, i, true, 3, a) && rsend(b, rd, i, false, 4, t) &&
               rsend(b, rd, i, false, 3, e);
    }
    case MBS_RANGE: {
        const char *a[] = {"LRANGE", k, "0", "-1"};
        return rsend(b, rd, i, true, 4, a);
    }
    case MBS_TAKE: {
        const char *a[] = {"LPOP", k, max};
        return rsend(b, rd, i, true, 3, a);
    }
    case MBS_LIVE: {
        uint64_t wall = pm_wall_ms();
        const char *z[] = {"ZREMRANGEBYSCORE", k, "-inf", now},
                   *a[] = {"ZADD", k, until, c->val}, *n[] = {"ZCARD", k},
                   *e[] = {"PEXPIRE", k, ttl};

        snprintf(now, sizeof now, "%llu", (unsigned long long)wall);
        snprintf(until, sizeof until, "%llu",
                 (unsigned long long)(wall + c->ttl_ms));
        return rsend(b, rd, i, false, 4, z) && rsend(b, rd, i, false, 4, a) &&
               rsend(b, rd, i, true, 2, n) && rsend(b, rd, i, false, 3, e);
    }
    }
    return false;
}

static void
redis_run(struct mbs *st, struct pm_redis *rd, const struct mbs_cmd *cmds,
          size_t n, mbs_done_fn done, void *arg)
{
    struct rbatch *b = pm_xcalloc(1, sizeof *b);
    size_t i;

    b->st = st;
    b->done = done;
    b->arg = arg;
    b->n = n;
    b->pending = 1; /* held while sending: no reply completes it early */
    TAILQ_INSERT_TAIL(&st->rq, b, link);
    for (i = 0; i < n; i++)
        if (!redis_one(b, rd, i, &cmds[i]))
            break;
    rbatch_release(b);
}

/* ---- interface ---------------------------------------------------- */

struct mbs *
mbs_new(struct sig *s)
{
    struct mbs *st = pm_xcalloc(1, sizeof *st);

    st->s = s;
    st->sweep = event_new(pm_server_base(s->srv), -1, 0, sweep_cb, st);
    TAILQ_INIT(&st->rq);
    return st;
}

void
mbs_free(struct mbs *st)
{
    struct rbatch *b;

    if (st == NULL)
        return;
    while (st->keys != NULL)
        ment_free(st, st->keys);
    while ((b = TAILQ_FIRST(&st->rq)) != NULL) {
        TAILQ_REMOVE(&st->rq, b, link);
        res_clear(b->res, b->n);
        free(b->errtext);
        free(b);
    }
    event_free(st->sweep);
    free(st);
}

char *
mbs_key(struct mbs *st, const char *kind, const char *id)
{
    if (sig_cluster_redis(st->s) != NULL)
        return sig_cluster_key(st->s, kind, id);
    return pm_xasprintf("%s:%s", kind, id);
}

void
mbs_run(struct mbs *st, const struct mbs_cmd *cmds, size_t n, mbs_done_fn done,
        void *arg)
{
    struct pm_redis *rd = sig_cluster_redis(st->s);

    PM_ASSERT(n <= MBS_MAX_BATCH);
    if (rd != NULL)
        redis_run(st, rd, cmds, n, done, arg);
    else
        mem_run(st, cmds, n, done, arg);
}
