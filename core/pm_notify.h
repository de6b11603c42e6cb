/*
 * pm_notify: the service manager's readiness protocol (sd_notify) spoken
 * without libsystemd: one datagram of "KEY=VALUE\n" lines to the
 * AF_UNIX socket named by NOTIFY_SOCKET (a path, or "@name" for the
 * abstract namespace). READY=1 once the listeners are bound and the role
 * has started, RELOADING=1/READY=1 around SIGHUP, STOPPING=1 on SIGTERM,
 * STATUS= lines for `systemctl status`, and WATCHDOG=1 at half of
 * WATCHDOG_USEC when the unit asks for a watchdog. Without NOTIFY_SOCKET
 * every call is a no-op, so the same binary runs under systemd, in a
 * container or in a terminal.
 */
#ifndef PM_NOTIFY_H
#define PM_NOTIFY_H

struct event_base;
struct pm_notify;

/* The notifier for this process (reads NOTIFY_SOCKET, WATCHDOG_USEC and
 * WATCHDOG_PID now); never NULL. A malformed NOTIFY_SOCKET is logged
 * once and turns the notifier off. The watchdog timer, when asked for,
 * runs on base until pm_notify_free. */
struct pm_notify *pm_notify_new(struct event_base *base);
void pm_notify_free(struct pm_notify *n);

/* Send state (newline-separated assignments, e.g. "READY=1\nSTATUS=up").
 * PM_OK, or PM_EIO when the socket refused it (logged at debug: the
 * manager may be gone, and the service runs on regardless). No-op
 * PM_OK without a socket. */
int pm_notify_send(struct pm_notify *n, const char *state);

#endif
