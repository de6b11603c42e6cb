/*
 * pm_listener: a bound, listening TCP socket that hands accepted fds to a
 * callback. IPv4 or IPv6 from the address text, SO_REUSEADDR, close-on-
 * exec, backlog 1024. When accept fails for lack of descriptors, the
 * listener pauses for a second instead of spinning.
 */
#ifndef PM_LISTENER_H
#define PM_LISTENER_H

#include <stddef.h>

struct event_base;
struct sockaddr;
struct pm_listener;

/* fd is owned by the callback from then on. */
typedef void (*pm_accept_fn)(int fd, const struct sockaddr *sa, void *arg);

/* Bind addr:port; NULL with a one-line reason in err on failure. */
struct pm_listener *pm_listener_new(struct event_base *base, const char *addr,
                                    int port, pm_accept_fn fn, void *arg,
                                    char *err, size_t errlen);
/* The port actually bound (useful with port 0). */
int pm_listener_port(const struct pm_listener *l);
void pm_listener_free(struct pm_listener *l);

#endif
