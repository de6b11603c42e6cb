/*
 * pm_listener: evconnlistener with an accept-error back-off. Loop thread.
 */
#include "config.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "pm_listener.h"
#include "pm_log.h"
#include "pm_util.h"

struct pm_listener {
    struct evconnlistener *l;
    struct event *resume;
    pm_accept_fn fn;
    void *arg;
    int port;
};

static void
accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
          int salen, void *arg)
{
    struct pm_listener *pl = arg;

    (void)l;
    (void)salen;
    pl->fn(fd, sa, pl->arg);
}

static void
resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pm_listener *pl = arg;

    (void)fd;
    (void)what;
    evconnlistener_enable(pl->l);
}

static void
error_cb(struct evconnlistener *l, void *arg)
{
    struct pm_listener *pl = arg;
    int e = EVUTIL_SOCKET_ERROR();
    struct timeval one = {1, 0};

    pm_log(PM_LOG_WARN, "accept_failed", "accept: %s; pausing for 1s",
           evutil_socket_error_to_string(e));
    evconnlistener_disable(l);
    event_add(pl->resume, &one);
}

struct pm_listener *
pm_listener_new(struct event_base *base, const char *addr, int port,
                pm_accept_fn fn, void *arg, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    int sslen = sizeof ss;
    struct pm_listener *pl;
    char spec[128];

    if (strchr(addr, ':') != NULL)
        snprintf(spec, sizeof spec, "[%s]:%d", addr, port);
    else
        snprintf(spec, sizeof spec, "%s:%d", addr, port);
    memset(&ss, 0, sizeof ss);
    if (evutil_parse_sockaddr_port(spec, (struct sockaddr *)&ss, &sslen) != 0) {
        pm_errf(err, errlen, PM_EINVAL, "addr: '%s' is not an IP address",
                addr);
        return NULL;
    }
    pl = pm_xcalloc(1, sizeof *pl);
    pl->fn = fn;
    pl->arg = arg;
    pl->l = evconnlistener_new_bind(base, accept_cb, pl,
                                    LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE |
                                        LEV_OPT_CLOSE_ON_EXEC,
                                    1024, (struct sockaddr *)&ss, sslen);
    if (pl->l == NULL) {
        pm_errf(err, errlen, PM_EIO, "cannot listen on %s: %s", spec,
                strerror(errno));
        free(pl);
        return NULL;
    }
    evconnlistener_set_error_cb(pl->l, error_cb);
    pl->resume = event_new(base, -1, 0, resume_cb, pl);
    {
        struct sockaddr_storage bound;
        socklen_t blen = sizeof bound;

        getsockname(evconnlistener_get_fd(pl->l), (struct sockaddr *)&bound,
                    &blen);
        pl->port = bound.ss_family == AF_INET6
                       ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                       : ntohs(((struct sockaddr_in *)&bound)->sin_port);
    }
    return pl;
}

int
pm_listener_port(const struct pm_listener *l)
{
    return l->port;
}

void
pm_listener_free(struct pm_listener *l)
{
    if (l == NULL)
        return;
    evconnlistener_free(l->l);
    event_free(l->resume);
    free(l);
}
