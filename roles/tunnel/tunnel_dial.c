/*
 * tunnel_dial: reach a target for a connection. A name is resolved with
 * getaddrinfo on the loop's worker pool (an IP literal at once), every
 * address is checked against the egress policy (so a name that resolves
 * to a denied address is refused), then the allowed addresses are tried
 * in order with a non-blocking connect. The connection's timer bounds the
 * whole dial (tunnel.connect_timeout). A dial whose connection closed is
 * cancelled: a resolution still running on a worker is freed when it
 * comes back.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "pm_loop.h"
#include "pm_server.h"
#include "pm_util.h"
#include "tunnel.h"

struct tunnel_dial {
    struct tunnel_conn *c; /* NULL once cancelled */
    char host[TUNNEL_NAME_MAX];
    char port[8];
    bool check;     /* apply the egress policy to addresses */
    bool resolving; /* on a worker: it frees a cancelled dial */
    int gai_err;
    struct addrinfo *res, *next;
    bool tried;
    int last_errno;
    char denied[300];
};

static void
dial_free(struct tunnel_dial *d)
{
    if (d->res != NULL)
        freeaddrinfo(d->res);
    free(d);
}

void
tunnel_dial_cancel(struct tunnel_conn *c)
{
    struct tunnel_dial *d = c->dial;

    if (d == NULL)
        return;
    c->dial = NULL;
    d->c = NULL;
    if (!d->resolving)
        dial_free(d);
}

static void
dial_fail(struct tunnel_conn *c, int status, const char *error,
          const char *details)
{
    char why[400];

    pm_strlcpy(why, details, sizeof why); /* details may live in c->dial */
    details = why;
    tunnel_dial_cancel(c);
    if (c->t->agent)
        tunnel_agent_conn_failed(c, details);
    else
        tunnel_conn_refuse(c, status, error, details);
}

/* Out of addresses: say why with the most telling reason. */
static void
dial_exhausted(struct tunnel_dial *d)
{
    struct tunnel_conn *c = d->c;
    char details[400];

    if (!d->tried && d->denied[0] != '\0') {
        dial_fail(c, 403, "destination_ip_prohibited", d->denied);
        return;
    }
    snprintf(details, sizeof details, "%s:%s: %s", d->host, d->port,
             strerror(d->last_errno ? d->last_errno : EHOSTUNREACH));
    if (d->last_errno == ECONNREFUSED)
        dial_fail(c, 502, "connection_refused", details);
    else if (d->last_errno == ETIMEDOUT)
        dial_fail(c, 504, "connection_timeout", details);
    else
        dial_fail(c, 502, "destination_unavailable", details);
}

static void
try_next(struct tunnel_dial *d)
{
    struct tunnel_conn *c = d->c;

    for (; d->next != NULL; d->next = d->next->ai_next) {
        struct addrinfo *ai = d->next;
        int fd, one = 1;

        if (d->check && !tunnel_policy_addr(c->t->policy, d->host, ai->ai_addr,
                                            d->denied, sizeof d->denied))
            continue;
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    0);
        if (fd < 0) {
            d->last_errno = errno;
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        d->tried = true;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 &&
            errno != EINPROGRESS) {
            d->last_errno = errno;
            close(fd);
            continue;
        }
        d->next = ai->ai_next;
        if (tunnel_conn_target_init(c, fd) != PM_OK) {
            close(fd);
            d->last_errno = ENOMEM;
            continue;
        }
        event_add(c->target.wev, NULL);
        return;
    }
    dial_exhausted(d);
}

void
tunnel_dial_connected(struct tunnel_conn *c)
{
    struct tunnel_dial *d = c->dial;
    int err = 0;
    socklen_t len = sizeof err;

    if (d == NULL)
        return;
    if (getsockopt(c->target.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err != 0) {
        struct evbuffer *queued = c->target.out; /* the request waits */

        d->last_errno = err;
        c->target.out = NULL;
        tunnel_end_free(&c->target);
        c->target.out = queued;
        try_next(d);
        return;
    }
    event_del(c->target.wev);
    tunnel_dial_cancel(c);
    tunnel_conn_target_ready(c);
}

static void
resolved(struct tunnel_dial *d)
{
    char details[400];

    if (d->gai_err != 0) {
        snprintf(details, sizeof details, "%s: %s", d->host,
                 gai_strerror(d->gai_err));
        dial_fail(d->c, 502, "dns_error", details);
        return;
    }
    d->next = d->res;
    try_next(d);
}

static void
resolve_work(void *arg)
{
    struct tunnel_dial *d = arg;
    struct addrinfo hints;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    d->gai_err = getaddrinfo(d->host, d->port, &hints, &d->res);
}

static void
resolve_done(void *arg)
{
    struct tunnel_dial *d = arg;

    d->resolving = false;
    if (d->c == NULL) {
        dial_free(d);
        return;
    }
    resolved(d);
}

void
tunnel_dial_start(struct tunnel_conn *c, const char *host, int port, bool check)
{
    struct tunnel_dial *d = pm_xcalloc(1, sizeof *d);
    struct addrinfo hints;

    d->c = c;
    d->check = check;
    pm_strlcpy(d->host, host, sizeof d->host);
    snprintf(d->port, sizeof d->port, "%d", port);
    c->dial = d;
    c->state = TS_DIAL;
    tunnel_conn_arm(c);
    /* An address literal needs no resolver round trip. */
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    if (getaddrinfo(d->host, d->port, &hints, &d->res) == 0) {
        resolved(d);
        return;
    }
    d->res = NULL;
    d->resolving = true;
    pm_loop_submit(pm_server_loop(c->t->srv), resolve_work, resolve_done, d);
}
