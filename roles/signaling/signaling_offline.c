/*
 * signaling_offline: messages for peers that are briefly absent. Each
 * (realm, target id) has a bounded FIFO (signaling.mailbox_max); every held
 * message is also on one list ordered by expiry (the TTL is the same for
 * all, so arrival order is expiry order) and a single timer, armed for the
 * oldest, expires them and tells each sender that is still connected.
 * Loop thread.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

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
                 const char *from, const char *type, bool batched,
                 const char *json, size_t len)
{
    struct sig_box *b;
    struct sig_held *h;

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
    h->batched = batched;
    h->type = type;
    h->expires_ms = pm_now_ms() + s->conf->mailbox_ttl;
    TAILQ_INSERT_TAIL(&b->held, h, in_box);
    TAILQ_INSERT_TAIL(&s->by_expiry, h, by_expiry);
    b->n++;
    (*s->stats.queued)++;
    if (h == TAILQ_FIRST(&s->by_expiry))
        arm_expiry(s);
    return PM_OK;
}

void
sig_offline_deliver(struct sig *s, struct sig_client *c)
{
    struct sig_box *b;
    struct sig_held *h;

    HASH_FIND_STR(c->realm->boxes, c->id, b);
    if (b == NULL)
        return;
    /* held_free frees the box with its last message. */
    while (b != NULL && (h = TAILQ_FIRST(&b->held)) != NULL) {
        bool last = b->n == 1;

        pm_conn_ws_send(c->conn, PM_WS_TEXT, h->json, h->len);
        (*s->stats.relayed)++;
        held_free(s, h);
        if (last)
            b = NULL;
    }
    arm_expiry(s);
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
        struct sig_client *sender = sig_realm_find(h->box->realm, h->from);

        (*s->stats.expired)++;
        (*s->stats.undeliverable)++;
        if (sender != NULL) {
            char text[SIG_MAX_ID + 64];

            sig_not_found_text(text, sizeof text, h->box->target,
                               h->batched ? "batched_signals" : h->type);
            sig_send_error(sender, text);
        }
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
