/*
 * lambda_store_redis: the lambda role's connection store in Redis
 * (redis.url; ElastiCache over TLS with rediss://). Keys, under
 * redis.key_prefix (default "lambda"):
 *
 *   {prefix}:conn:{cid}     hash realm, peer, sub; expires after
 *                           lambda.connection_ttl, refreshed by traffic
 *   {prefix}:peers:{realm}  hash peer id -> connection id
 *   {prefix}:seen:{realm}   sorted set peer id -> expiry (epoch ms)
 *
 * A peer is live while its expiry is ahead; the realm operations are Lua
 * scripts, so each is one atomic round trip, and listing a realm sweeps
 * the expired peers out. An operation issued while the link is down (the
 * first invocation, or a thaw that found the socket dead) waits for it
 * up to lambda.aws_timeout. Loop thread.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "lambda.h"
#include "pm_log.h"
#include "pm_redis.h"
#include "pm_server.h"
#include "pm_util.h"

#define MAX_ARGS 12

/* peer_get: KEYS peers, seen; ARGV peer, now */
static const char script_get[] =
    "local s = redis.call('ZSCORE', KEYS[2], ARGV[1]) "
    "if s and tonumber(s) >= tonumber(ARGV[2]) then "
    "return redis.call('HGET', KEYS[1], ARGV[1]) end return false";
/* realm_list: KEYS peers, seen; ARGV now. Returns peer, cid, ... */
static const char script_list[] =
    "local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. "
    "ARGV[1]) "
    "for _, p in ipairs(dead) do redis.call('HDEL', KEYS[1], p) end "
    "if #dead > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' "
    ".. ARGV[1]) end "
    "local out = {} "
    "for _, p in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], "
    "'+inf')) do local c = redis.call('HGET', KEYS[1], p) "
    "if c then out[#out + 1] = p; out[#out + 1] = c end end return out";
/* peer_set: KEYS peers, seen, conn; ARGV peer, cid, expiry, ttl, realm */
static const char script_set[] =
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) "
    "redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1]) "
    "redis.call('HSET', KEYS[3], 'peer', ARGV[1], 'realm', ARGV[5]) "
    "for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end return 1";
/* peer_touch: KEYS peers, seen; ARGV peer, cid, expiry, ttl */
static const char script_touch[] =
    "if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end "
    "redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1]) "
    "redis.call('EXPIRE', KEYS[1], ARGV[4]) "
    "redis.call('EXPIRE', KEYS[2], ARGV[4]) return 1";
/* peer_clear: KEYS peers, seen, conn; ARGV peer, cid, keep_conn */
static const char script_clear[] =
    "if ARGV[3] == '1' then redis.call('HDEL', KEYS[3], 'peer') end "
    "if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end "
    "redis.call('HDEL', KEYS[1], ARGV[1]) "
    "redis.call('ZREM', KEYS[2], ARGV[1]) return 1";

struct rstore;

enum rop_kind {
    R_PUT,
    R_TOUCH,
    R_DELETE,
    R_GET,
    R_LIST,
    R_SET,
    R_PTOUCH,
    R_CLEAR
};

/* One operation: its commands (argv owned), and where results go. */
struct rop {
    struct rstore *rs;
    enum rop_kind kind;
    int ncmd; /* commands in the pipeline */
    int argc[2];
    char *argv[2][MAX_ARGS];
    int replies; /* received so far */
    int rv;
    struct lam_conn_info *info;
    char **cid;
    struct lam_peer **list;
    size_t *n;
    lam_store_fn cb;
    void *arg;
    uint64_t queued_ms;
    TAILQ_ENTRY(rop) link;
};
TAILQ_HEAD(rop_list, rop);

struct rstore {
    struct lam *l;
    struct pm_redis *r;
    char *prefix;
    uint64_t ttl_s;
    struct rop_list waiting; /* for the link to come up */
    struct event *sweep;
};

static void
rop_free(struct rop *op)
{
    int i, j;

    for (i = 0; i < op->ncmd; i++)
        for (j = 0; j < op->argc[i]; j++)
            free(op->argv[i][j]);
    free(op);
}

static void
rop_finish(struct rop *op)
{
    op->cb(op->rv, op->arg);
    rop_free(op);
}

/* Fill the outputs from the last reply. */
static void
take_reply(struct rop *op, const struct pm_redis_reply *rep)
{
    size_t i, n, len;
    const char *s;

    switch (op->kind) {
    case R_TOUCH:
    case R_DELETE:
        n = pm_redis_reply_elements(rep);
        if (n == 0) {
            op->rv = PM_ENOTFOUND;
            break;
        }
        if (op->info == NULL)
            break;
        for (i = 0; i + 1 < n; i += 2) {
            const char *k =
                pm_redis_reply_str(pm_redis_reply_element(rep, i), &len);
            char **dst =
                len == 5 && memcmp(k, "realm", 5) == 0  ? &op->info->realm
                : len == 4 && memcmp(k, "peer", 4) == 0 ? &op->info->peer
                : len == 3 && memcmp(k, "sub", 3) == 0  ? &op->info->sub
                                                        : NULL;

            s = pm_redis_reply_str(pm_redis_reply_element(rep, i + 1), &len);
            if (dst != NULL && *dst == NULL)
                *dst = pm_xstrndup(s, len);
        }
        if (op->info->realm == NULL)
            op->info->realm = pm_xstrdup("");
        op->info->peer_stale = true; /* a ZADD is as cheap as asking */
        break;
    case R_GET:
        if (pm_redis_reply_type(rep) != PM_REDIS_STRING) {
            op->rv = PM_ENOTFOUND;
            break;
        }
        s = pm_redis_reply_str(rep, &len);
        *op->cid = pm_xstrndup(s, len);
        break;
    case R_LIST:
        n = pm_redis_reply_elements(rep) / 2;
        *op->list = pm_xcalloc(n ? n : 1, sizeof **op->list);
        for (i = 0; i < n; i++) {
            s = pm_redis_reply_str(pm_redis_reply_element(rep, 2 * i), &len);
            (*op->list)[i].peer = pm_xstrndup(s, len);
            s = pm_redis_reply_str(pm_redis_reply_element(rep, 2 * i + 1),
                                   &len);
            (*op->list)[i].cid = pm_xstrndup(s, len);
        }
        *op->n = n;
        break;
    case R_PTOUCH:
    case R_CLEAR:
        if (pm_redis_reply_integer(rep) == 0)
            op->rv = PM_ENOTFOUND;
        break;
    default:
        break;
    }
}

/* Every reply counts; the first carries the result (HGETALL, or the
 * script's); the operation ends with the last. */
static void
on_reply(const struct pm_redis_reply *rep, void *arg)
{
    struct rop *op = arg;
    const char *s;
    size_t len;

    op->replies++;
    if (rep == NULL) {
        op->rv = PM_EUNAVAIL;
        pm_log(PM_LOG_ERROR, "store_failed", "redis: link lost");
    } else if (pm_redis_reply_type(rep) == PM_REDIS_ERROR) {
        s = pm_redis_reply_str(rep, &len);
        op->rv = PM_EUNAVAIL;
        pm_log(PM_LOG_ERROR, "store_failed", "redis: %.*s", (int)len, s);
    } else if (op->replies == 1 && op->rv == PM_OK) {
        take_reply(op, rep);
    }
    if (op->replies == op->ncmd)
        rop_finish(op);
}

static void
finish_later(int rv, void *arg)
{
    (void)rv;
    rop_finish(arg);
}

static void
run(struct rop *op)
{
    struct rstore *rs = op->rs;
    int i;

    for (i = 0; i < op->ncmd; i++)
        if (pm_redis_command(rs->r, on_reply, op, op->argc[i],
                             (const char **)op->argv[i], NULL) != PM_OK) {
            /* down between the check and now: fail what was not sent */
            op->rv = PM_EUNAVAIL;
            if (i == 0) {
                lam_store_defer(pm_server_base(rs->l->srv), finish_later, op,
                                0);
                return;
            }
            op->ncmd = i;
            return;
        }
}

static void
submit(struct rop *op)
{
    struct rstore *rs = op->rs;

    if (pm_redis_is_up(rs->r) && TAILQ_EMPTY(&rs->waiting)) {
        run(op);
        return;
    }
    op->queued_ms = pm_now_ms();
    TAILQ_INSERT_TAIL(&rs->waiting, op, link);
}

static void
on_state(bool up, void *arg)
{
    struct rstore *rs = arg;
    struct rop *op;

    pm_log(up ? PM_LOG_INFO : PM_LOG_WARN, up ? "store_up" : "store_down",
           "redis %s", up ? "connected" : "link down");
    while (up && (op = TAILQ_FIRST(&rs->waiting)) != NULL) {
        TAILQ_REMOVE(&rs->waiting, op, link);
        run(op);
    }
}

/* Fail what waited for the link longer than lambda.aws_timeout. */
static void
sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    struct rstore *rs = arg;
    uint64_t now = pm_now_ms();
    struct rop *op;

    (void)fd;
    (void)what;
    while ((op = TAILQ_FIRST(&rs->waiting)) != NULL &&
           now - op->queued_ms >= rs->l->conf->aws_timeout) {
        TAILQ_REMOVE(&rs->waiting, op, link);
        pm_log(PM_LOG_ERROR, "store_failed",
               "redis: not connected after %llu ms",
               (unsigned long long)(now - op->queued_ms));
        op->rv = PM_EUNAVAIL;
        rop_finish(op);
    }
}

static struct rop *
rop_new(struct rstore *rs, enum rop_kind kind, lam_store_fn cb, void *arg)
{
    struct rop *op = pm_xcalloc(1, sizeof *op);

    op->rs = rs;
    op->kind = kind;
    op->cb = cb;
    op->arg = arg;
    return op;
}

/* Append a command of NULL-terminated C strings (copied). */
static void
cmd(struct rop *op, ...)
{
    va_list ap;
    const char *a;
    int c = op->ncmd++;

    va_start(ap, op);
    while ((a = va_arg(ap, const char *)) != NULL) {
        PM_ASSERT(op->argc[c] < MAX_ARGS);
        op->argv[c][op->argc[c]++] = pm_xstrdup(a);
    }
    va_end(ap);
}

static char *
key(const struct rstore *rs, const char *kind, const char *name)
{
    return pm_xasprintf("%s:%s:%s", rs->prefix, kind, name);
}

static int
rs_open(struct lam *l, void **st, char *err, size_t errlen)
{
    const struct pm_core_conf *core = pm_server_conf(l->srv);
    struct rstore *rs = pm_xcalloc(1, sizeof *rs);
    struct pm_redis_opts o = {0};
    struct timeval tv = {0, 100000};

    rs->l = l;
    rs->prefix =
        pm_xstrdup(core->redis_key_prefix ? core->redis_key_prefix : "lambda");
    rs->ttl_s = l->conf->connection_ttl / 1000;
    TAILQ_INIT(&rs->waiting);
    o.url = core->redis_url;
    o.tls_ca = core->redis_tls_ca;
    o.on_state = on_state;
    o.arg = rs;
    rs->r = pm_redis_new(pm_server_base(l->srv), &o, err, errlen);
    if (rs->r == NULL) {
        free(rs->prefix);
        free(rs);
        return PM_EINVAL;
    }
    rs->sweep = event_new(pm_server_base(l->srv), -1, EV_PERSIST, sweep_cb, rs);
    event_add(rs->sweep, &tv);
    *st = rs;
    return PM_OK;
}

static void
rs_close(void *st)
{
    struct rstore *rs = st;
    struct rop *op;

    while ((op = TAILQ_FIRST(&rs->waiting)) != NULL) {
        TAILQ_REMOVE(&rs->waiting, op, link);
        op->rv = PM_EUNAVAIL;
        rop_finish(op);
    }
    event_free(rs->sweep);
    pm_redis_free(rs->r);
    free(rs->prefix);
    free(rs);
}

static void
rs_conn_put(void *st, const char *cid, const char *realm, const char *sub,
            lam_store_fn cb, void *arg)
{
    struct rstore *rs = st;
    struct rop *op = rop_new(rs, R_PUT, cb, arg);
    char *k = key(rs, "conn", cid), ttl[24];

    snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)rs->ttl_s);
    if (sub != NULL)
        cmd(op, "HSET", k, "realm", realm, "sub", sub, NULL);
    else
        cmd(op, "HSET", k, "realm", realm, NULL);
    cmd(op, "EXPIRE", k, ttl, NULL);
    free(k);
    submit(op);
}

static void
conn_read(struct rstore *rs, enum rop_kind kind, const char *cid,
          struct lam_conn_info *out, lam_store_fn cb, void *arg)
{
    struct rop *op = rop_new(rs, kind, cb, arg);
    char *k = key(rs, "conn", cid), ttl[24];

    snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)rs->ttl_s);
    op->info = out;
    cmd(op, "HGETALL", k, NULL);
    if (kind == R_TOUCH)
        cmd(op, "EXPIRE", k, ttl, NULL);
    else
        cmd(op, "DEL", k, NULL);
    free(k);
    submit(op);
}

static void
rs_conn_touch(void *st, const char *cid, struct lam_conn_info *out,
              lam_store_fn cb, void *arg)
{
    conn_read(st, R_TOUCH, cid, out, cb, arg);
}

static void
rs_conn_delete(void *st, const char *cid, struct lam_conn_info *out,
               lam_store_fn cb, void *arg)
{
    conn_read(st, R_DELETE, cid, out, cb, arg);
}

/* EVAL script over the realm's two keys (and conn's, when cid given). */
static struct rop *
realm_script(struct rstore *rs, enum rop_kind kind, const char *script,
             const char *realm, const char *conn_cid, lam_store_fn cb,
             void *arg)
{
    struct rop *op = rop_new(rs, kind, cb, arg);
    char *peers = key(rs, "peers", realm), *seen = key(rs, "seen", realm);
    char *conn = conn_cid ? key(rs, "conn", conn_cid) : NULL;

    cmd(op, "EVAL", script, conn ? "3" : "2", peers, seen, conn, NULL);
    free(peers);
    free(seen);
    free(conn);
    return op;
}

/* Add an argument to the last command. */
static void
arg_add(struct rop *op, const char *a)
{
    int c = op->ncmd - 1;

    PM_ASSERT(op->argc[c] < MAX_ARGS);
    op->argv[c][op->argc[c]++] = pm_xstrdup(a);
}

static void
arg_u64(struct rop *op, uint64_t v)
{
    char s[24];

    snprintf(s, sizeof s, "%llu", (unsigned long long)v);
    arg_add(op, s);
}

static void
rs_peer_get(void *st, const char *realm, const char *peer, char **cid,
            lam_store_fn cb, void *arg)
{
    struct rop *op = realm_script(st, R_GET, script_get, realm, NULL, cb, arg);

    op->cid = cid;
    arg_add(op, peer);
    arg_u64(op, pm_wall_ms());
    submit(op);
}

static void
rs_realm_list(void *st, const char *realm, struct lam_peer **out, size_t *n,
              lam_store_fn cb, void *arg)
{
    struct rop *op =
        realm_script(st, R_LIST, script_list, realm, NULL, cb, arg);

    op->list = out;
    op->n = n;
    arg_u64(op, pm_wall_ms());
    submit(op);
}

static void
rs_peer_set(void *st, const char *realm, const char *peer, const char *cid,
            lam_store_fn cb, void *arg)
{
    struct rstore *rs = st;
    struct rop *op = realm_script(rs, R_SET, script_set, realm, cid, cb, arg);

    arg_add(op, peer);
    arg_add(op, cid);
    arg_u64(op, pm_wall_ms() + rs->ttl_s * 1000);
    arg_u64(op, rs->ttl_s);
    arg_add(op, realm);
    submit(op);
}

static void
rs_peer_touch(void *st, const char *realm, const char *peer, const char *cid,
              lam_store_fn cb, void *arg)
{
    struct rstore *rs = st;
    struct rop *op =
        realm_script(rs, R_PTOUCH, script_touch, realm, NULL, cb, arg);

    arg_add(op, peer);
    arg_add(op, cid);
    arg_u64(op, pm_wall_ms() + rs->ttl_s * 1000);
    arg_u64(op, rs->ttl_s);
    submit(op);
}

static void
rs_peer_clear(void *st, const char *realm, const char *peer, const char *cid,
              bool conn_gone, lam_store_fn cb, void *arg)
{
    struct rop *op =
        realm_script(st, R_CLEAR, script_clear, realm, cid, cb, arg);

    arg_add(op, peer);
    arg_add(op, cid);
    arg_add(op, conn_gone ? "0" : "1");
    submit(op);
}

const struct lam_store lam_store_redis = {
    .name = "redis",
    .open = rs_open,
    .close = rs_close,
    .conn_put = rs_conn_put,
    .conn_touch = rs_conn_touch,
    .conn_delete = rs_conn_delete,
    .peer_get = rs_peer_get,
    .realm_list = rs_realm_list,
    .peer_set = rs_peer_set,
    .peer_touch = rs_peer_touch,
    .peer_clear = rs_peer_clear,
};
