/*
 * pm_ratelimit: token buckets and the per-client-IP table (uthash keyed
 * by the address text). Entries live while the IP holds connections or
 * its bucket is still refilling; pm_iptable_sweep drops the rest.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <uthash.h>

#include "pm_addr.h"
#include "pm_ratelimit.h"
#include "pm_util.h"

void
pm_bucket_init(struct pm_bucket *b, uint32_t burst, uint64_t now_ms)
{
    b->tokens = burst;
    b->last_ms = now_ms;
}

static void
refill(struct pm_bucket *b, const struct pm_rate *r, uint32_t burst,
       uint64_t now_ms)
{
    if (now_ms > b->last_ms) {
        b->tokens += (double)(now_ms - b->last_ms) * r->count / r->per_ms;
        if (b->tokens > burst)
            b->tokens = burst;
        b->last_ms = now_ms;
    }
}

bool
pm_bucket_take(struct pm_bucket *b, const struct pm_rate *r, uint32_t burst,
               uint64_t now_ms)
{
    if (r->count == 0)
        return true;
    refill(b, r, burst, now_ms);
    if (b->tokens < 1.0)
        return false;
    b->tokens -= 1.0;
    return true;
}

struct ipentry {
    char ip[PM_ADDR_STRLEN];
    uint32_t conns;
    struct pm_bucket bucket;
    bool bucket_used;
    UT_hash_handle hh;
};

struct pm_iptable {
    struct ipentry *map;
};

struct pm_iptable *
pm_iptable_new(void)
{
    return pm_xcalloc(1, sizeof(struct pm_iptable));
}

void
pm_iptable_free(struct pm_iptable *t)
{
    struct ipentry *e, *tmp;

    if (t == NULL)
        return;
    HASH_ITER(hh, t->map, e, tmp)
    {
        HASH_DEL(t->map, e);
        free(e);
    }
    free(t);
}

static struct ipentry *
get(struct pm_iptable *t, const char *ip)
{
    struct ipentry *e;

    HASH_FIND_STR(t->map, ip, e);
    if (e == NULL) {
        e = pm_xcalloc(1, sizeof *e);
        pm_strlcpy(e->ip, ip, sizeof e->ip);
        HASH_ADD_STR(t->map, ip, e);
    }
    return e;
}

int
pm_iptable_conn_acquire(struct pm_iptable *t, const char *ip, uint32_t max)
{
    struct ipentry *e = get(t, ip);

    if (max > 0 && e->conns >= max)
        return PM_ELIMIT;
    e->conns++;
    return PM_OK;
}

void
pm_iptable_conn_release(struct pm_iptable *t, const char *ip)
{
    struct ipentry *e;

    HASH_FIND_STR(t->map, ip, e);
    if (e != NULL && e->conns > 0)
        e->conns--;
}

bool
pm_iptable_rate_take(struct pm_iptable *t, const char *ip,
                     const struct pm_rate *r, uint64_t now_ms)
{
    struct ipentry *e;

    if (r->count == 0)
        return true;
    e = get(t, ip);
    if (!e->bucket_used) {
        pm_bucket_init(&e->bucket, r->count, now_ms);
        e->bucket_used = true;
    }
    return pm_bucket_take(&e->bucket, r, r->count, now_ms);
}

void
pm_iptable_sweep(struct pm_iptable *t, const struct pm_rate *r, uint64_t now_ms)
{
    struct ipentry *e, *tmp;

    HASH_ITER(hh, t->map, e, tmp)
    {
        if (e->conns > 0)
            continue;
        if (e->bucket_used && r->count > 0) {
            refill(&e->bucket, r, r->count, now_ms);
            if (e->bucket.tokens < r->count)
                continue;
        }
        HASH_DEL(t->map, e);
        free(e);
    }
}
