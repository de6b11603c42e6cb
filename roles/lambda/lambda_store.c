/*
 * lambda_store: what both connection stores share: freeing their outputs
 * and answering a callback later, never from inside the call.
 */
#include "config.h"

#include <stdlib.h>

#include <event2/event.h>

#include "lambda.h"
#include "pm_util.h"

void
lam_conn_info_clear(struct lam_conn_info *ci)
{
    free(ci->realm);
    free(ci->peer);
    free(ci->sub);
    ci->realm = ci->peer = ci->sub = NULL;
    ci->peer_stale = false;
}

void
lam_peers_free(struct lam_peer *v, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        free(v[i].peer);
        free(v[i].cid);
    }
    free(v);
}

struct deferred {
    lam_store_fn cb;
    void *arg;
    int rv;
};

static void
deferred_cb(evutil_socket_t fd, short what, void *arg)
{
    struct deferred *d = arg;

    (void)fd;
    (void)what;
    d->cb(d->rv, d->arg);
    free(d);
}

void
lam_store_defer(struct event_base *base, lam_store_fn cb, void *arg, int rv)
{
    struct deferred *d = pm_xmalloc(sizeof *d);
    struct timeval zero = {0, 0};

    d->cb = cb;
    d->arg = arg;
    d->rv = rv;
    event_base_once(base, -1, EV_TIMEOUT, deferred_cb, d, &zero);
}
