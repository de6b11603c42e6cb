/*
 * signaling_offline: messages for peers that are briefly absent. Each
 * (realm, target id) has a bounded FIFO (signaling.mailbox_max); every held
 * message is also on one list ordered by expiry (a realm kind has one
 * TTL, so a new message almost always goes last) and a single timer,
 * armed for the oldest, expires them and tells each sender. In cluster
 * mode a message is held by its sender's instance and routed when the
 * target registers anywhere. Loop thread.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include <event2/event.h>

#include "pm_conn.h"
#include "pm_metrics.h"
#include "pm_server.h"
#include "pm_util.h"
#include "signaling.h"

static void
arm_expiry(struct sig *s)
{
    struct sig_held *h = TAILQ_FIRST(&s->by_expiry);
    uint64_t now = pm_now_ms(), ms;
    struct timeval tv;

    if (h == NULL) {
        event_del(s->expiry_timer);
        return;
    }
    ms = h->expires_ms > now ? h->expires_ms - now : 0;
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    event_add(s->expiry_timer, &tv);
}

static void
held_free(struct sig *s, struct sig_held *h)
{
    struct sig_box *b = h->box;

    TAILQ_REMOVE(&b->held, h, in_box);
    TAILQ_REMOVE(&s->by_expiry, h, by_expiry);
    b->n--;
    free(h->from);
    free(h->json);
    free(h);
    if (b->n == 0) {
        struct sig_realm *r = b->realm;

        HASH_DEL(r->boxes, b);
        free(b->target);
        free(b);
        sig_realm_release(s, r);
    }
}

int
sig_offline_hold(struct sig *s, struct sig_realm *r, const char *target,
                 const char *from, const char *type, const char *json,
                 size_t len, uint64_t ttl_ms)
{
    struct sig_box *b;
    struct sig_held *h, *after;

    if (s->conf->mailbox_max <= 0)
        return PM_ELIMIT;
    HASH_FIND_STR(r->boxes, target, b);
    if (b == NULL) {
        b = pm_xcalloc(1, sizeof *b);
        b->realm = r;
        b->target = pm_xstrdup(target);
        TAILQ_INIT(&b->held);
        HASH_ADD_KEYPTR(hh, r->boxes, b->target, strlen(b->target), b);
    }
    if (b->n >= (unsigned)s->conf->mailbox_max)
        return PM_ELIMIT;
    h = pm_xcalloc(1, sizeof *h);
    h->box = b;
    h->from = pm_xstrdup(from);
    h->json = pm_xstrndup(json, len);
    h->len = len;
    h->type = type;
    h->expires_ms = pm_now_ms() + ttl_ms;
    TAILQ_INSERT_TAIL(&b->held, h, in_box);
    after = TAILQ_LAST(&s->by_expiry, sig_held_list);
    while (after != NULL && after->expires_ms > h->expires_ms)
        after = TAILQ_PREV(after, sig_held_list, by_expiry);
    if (after == NULL)
        TAILQ_INSERT_HEAD(&s->by_expiry, h, by_expiry);
    else
        TAILQ_INSERT_AFTER(&s->by_expiry, after, h, by_expiry);
    b->n++;
    (*s->stats.queued)++;
    if (h == TAILQ_FIRST(&s->by_expiry))
        arm_expiry(s);
    return PM_OK;
}

void
sig_offline_deliver(struct sig *s, struct sig_realm *r, const char *id)
{
    struct sig_box *b;
    struct sig_held *h;
    struct iovec iov;

    HASH_FIND_STR(r->boxes, id, b);
    if (b == NULL)
        return;
    /* Take the box out first: routing may hold again (a new box). */
    HASH_DEL(r->boxes, b);
    while ((h = TAILQ_FIRST(&b->held)) != NULL) {
        TAILQ_REMOVE(&b->held, h, in_box);
        TAILQ_REMOVE(&s->by_expiry, h, by_expiry);
        iov.iov_base = h->json;
        iov.iov_len = h->len;
        sig_route(s, r, h->from, id, h->type, &iov, 1);
        free(h->from);
        free(h->json);
        free(h);
    }
    free(b->target);
    free(b);
    arm_expiry(s);
    sig_realm_release(s, r);
}

/*
 * PeerJS tells a sender once per absent peer (one EXPIRE for an offer and
 * the candidates that follow it): true if a later message of the same
 * sender in the same box will tell it when it expires.
 */
static bool
told_later(const struct sig_held *h)
{
    const struct sig_held *o;

    if (h->box->realm->kind != SIG_REALM_PEERJS)
        return false;
    for (o = TAILQ_NEXT(h, in_box); o != NULL; o = TAILQ_NEXT(o, in_box))
        if (strcmp(o->from, h->from) == 0)
            return true;
    return false;
}

static void
expiry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sig *s = arg;
    struct sig_held *h;
    uint64_t now = pm_now_ms();

    (void)fd;
    (void)what;
    while ((h = TAILQ_FIRST(&s->by_expiry)) != NULL && h->expires_ms <= now) {
        (*s->stats.expired)++;
        if (!told_later(h))
            sig_undeliverable(s, h->box->realm, h->from, h->box->target,
                              h->type);
        held_free(s, h);
    }
    arm_expiry(s);
}

void
sig_offline_start(struct sig *s)
{
    TAILQ_INIT(&s->by_expiry);
    s->expiry_timer = evtimer_new(pm_server_base(s->srv), expiry_cb, s);
}

void
sig_offline_free_all(struct sig *s)
{
    struct sig_held *h;

    while ((h = TAILQ_FIRST(&s->by_expiry)) != NULL)
        held_free(s, h);
    if (s->expiry_timer != NULL)
        event_free(s->expiry_timer);
    s->expiry_timer = NULL;
}
