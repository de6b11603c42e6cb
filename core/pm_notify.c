/*
 * pm_notify: sd_notify over a datagram socket (see pm_notify.h). The
 * protocol facts: NOTIFY_SOCKET is an absolute path or "@" + an abstract
 * name; each message is one datagram; the manager accepts it from the
 * main PID (NotifyAccess=main). WATCHDOG_USEC asks for WATCHDOG=1 more
 * often than that interval, and WATCHDOG_PID, when set, names the
 * process it is meant for.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "pm_log.h"
#include "pm_notify.h"
#include "pm_util.h"

struct pm_notify {
    int fd; /* -1: no manager to tell */
    struct sockaddr_un addr;
    socklen_t addrlen;
    struct event *watchdog;
};

static bool
parse_socket(struct pm_notify *n, const char *path)
{
    size_t len = strlen(path);

    if ((path[0] != '/' && path[0] != '@') || len < 2 ||
        len >= sizeof n->addr.sun_path)
        return false;
    memset(&n->addr, 0, sizeof n->addr);
    n->addr.sun_family = AF_UNIX;
    memcpy(n->addr.sun_path, path, len);
    if (path[0] == '@')
        n->addr.sun_path[0] = '\0'; /* abstract: no terminating NUL */
    n->addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
                             (path[0] == '/'));
    return true;
}

/* WATCHDOG_USEC, if meant for this process. */
static uint64_t
watchdog_usec(void)
{
    const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
    char *end;
    unsigned long long v;

    if (usec == NULL)
        return 0;
    if (pid != NULL && strtol(pid, NULL, 10) != (long)getpid())
        return 0;
    errno = 0;
    v = strtoull(usec, &end, 10);
    if (errno != 0 || *end != '\0' || v == 0)
        return 0;
    return v;
}

static void
watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pm_notify_send(arg, "WATCHDOG=1");
}

struct pm_notify *
pm_notify_new(struct event_base *base)
{
    struct pm_notify *n = pm_xcalloc(1, sizeof *n);
    const char *path = getenv("NOTIFY_SOCKET");
    uint64_t usec;

    n->fd = -1;
    if (path == NULL || *path == '\0')
        return n;
    if (!parse_socket(n, path)) {
        pm_log(PM_LOG_WARN, "notify_socket_invalid",
               "NOTIFY_SOCKET '%s' is neither an absolute path nor "
               "@abstract: not telling the service manager",
               path);
        return n;
    }
    n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (n->fd < 0) {
        pm_log(PM_LOG_WARN, "notify_socket_failed", "socket: %s",
               strerror(errno));
        return n;
    }
    usec = watchdog_usec();
    if (usec > 0 && base != NULL) {
        uint64_t half = usec / 2;
        struct timeval iv = {(time_t)(half / 1000000),
                             (suseconds_t)(half % 1000000)};

        n->watchdog = event_new(base, -1, EV_PERSIST, watchdog_cb, n);
        event_add(n->watchdog, &iv);
    }
    return n;
}

void
pm_notify_free(struct pm_notify *n)
{
    if (n == NULL)
        return;
    if (n->watchdog != NULL)
        event_free(n->watchdog);
    if (n->fd >= 0)
        close(n->fd);
    free(n);
}

int
pm_notify_send(struct pm_notify *n, const char *state)
{
    if (n == NULL || n->fd < 0)
        return PM_OK;
    if (sendto(n->fd, state, strlen(state), MSG_NOSIGNAL,
               (const struct sockaddr *)&n->addr, n->addrlen) < 0) {
        pm_log(PM_LOG_DEBUG, "notify_failed", "NOTIFY_SOCKET: %s",
               strerror(errno));
        return PM_EIO;
    }
    return PM_OK;
}
