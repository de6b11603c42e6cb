/*
 * pm_stream: plain sockets with per-pass write coalescing, and TLS through
 * bufferevent_openssl. The plain kind keeps every stream with queued
 * output on one list; when the list goes non-empty a deferred call is
 * scheduled on the loop, which runs after the callbacks of the current
 * pass and writes each stream once. Loop thread only (one loop per
 * process, so the list is module state).
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "pm_loop.h"
#include "pm_stream.h"
#include "pm_util.h"

/* Largest single read; bigger messages arrive over several reads. */
#define PM_STREAM_READ_MAX 65536

struct pm_stream {
    struct bufferevent *bev; /* tls kind; NULL for plain */
    int fd;
    struct pm_loop *loop;
    struct event *rev, *wev;
    struct evbuffer *in, *out;
    pm_stream_read_fn rd;
    pm_stream_error_fn err;
    pm_stream_drained_fn drained;
    void *arg;
    bool queued;     /* on the flush list */
    bool want_drain; /* call drained once out is empty */
    bool dead;       /* error reported: no more I/O */
    TAILQ_ENTRY(pm_stream) link;
};

static TAILQ_HEAD(, pm_stream) flush_list = TAILQ_HEAD_INITIALIZER(flush_list);

static void
fail(struct pm_stream *s, bool eof)
{
    if (s->dead)
        return;
    s->dead = true;
    event_del(s->rev);
    event_del(s->wev);
    s->err(s->arg, eof);
}

static void
check_drained(struct pm_stream *s)
{
    if (s->want_drain && evbuffer_get_length(s->out) == 0) {
        s->want_drain = false;
        s->drained(s->arg);
    }
}

/* Write what the kernel takes; arm EV_WRITE for the rest. */
static void
write_out(struct pm_stream *s)
{
    while (evbuffer_get_length(s->out) > 0) {
        int n = evbuffer_write(s->out, s->fd);

        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            event_add(s->wev, NULL);
            return;
        }
        if (n < 0 && errno == EINTR)
            continue;
        fail(s, false);
        return;
    }
    event_del(s->wev);
    check_drained(s);
}

static void
flush_all(void *arg)
{
    struct pm_stream *s;

    (void)arg;
    /* Pop one at a time: a callback may free another queued stream. */
    while ((s = TAILQ_FIRST(&flush_list)) != NULL) {
        TAILQ_REMOVE(&flush_list, s, link);
        s->queued = false;
        if (!s->dead)
            write_out(s);
    }
}

static void
read_cb(evutil_socket_t fd, short what, void *arg)
{
    static char buf[PM_STREAM_READ_MAX];
    struct pm_stream *s = arg;
    ssize_t n;

    (void)what;
    n = read(fd, buf, sizeof buf);
    if (n > 0) {
        evbuffer_add(s->in, buf, (size_t)n);
        s->rd(s->arg);
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    fail(s, n == 0);
}

static void
write_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    write_out(arg);
}

struct pm_stream *
pm_stream_plain(struct pm_loop *loop, int fd)
{
    struct event_base *base = pm_loop_base(loop);
    struct pm_stream *s = pm_xcalloc(1, sizeof *s);

    s->loop = loop;
    s->fd = fd;
    s->rev = event_new(base, fd, EV_READ | EV_PERSIST, read_cb, s);
    s->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, write_cb, s);
    s->in = evbuffer_new();
    s->out = evbuffer_new();
    if (s->rev == NULL || s->wev == NULL || s->in == NULL || s->out == NULL) {
        pm_stream_free(s);
        return NULL;
    }
    return s;
}

/* TLS kind: adapt bufferevent callbacks. */
static void
bev_read_cb(struct bufferevent *bev, void *arg)
{
    struct pm_stream *s = arg;

    (void)bev;
    s->rd(s->arg);
}

static void
bev_write_cb(struct bufferevent *bev, void *arg)
{
    struct pm_stream *s = arg;

    (void)bev;
    check_drained(s);
}

static void
bev_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct pm_stream *s = arg;

    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR) && !s->dead) {
        s->dead = true;
        s->err(s->arg, (what & BEV_EVENT_EOF) != 0);
    }
}

struct pm_stream *
pm_stream_tls(struct bufferevent *bev)
{
    struct pm_stream *s = pm_xcalloc(1, sizeof *s);

    s->bev = bev;
    s->fd = -1;
    s->in = bufferevent_get_input(bev);
    s->out = bufferevent_get_output(bev);
    return s;
}

void
pm_stream_setcb(struct pm_stream *s, pm_stream_read_fn rd,
                pm_stream_error_fn err, pm_stream_drained_fn drained, void *arg)
{
    s->rd = rd;
    s->err = err;
    s->drained = drained;
    s->arg = arg;
    if (s->bev != NULL)
        bufferevent_setcb(s->bev, bev_read_cb, bev_write_cb, bev_event_cb, s);
}

void
pm_stream_start(struct pm_stream *s)
{
    if (s->bev != NULL)
        bufferevent_enable(s->bev, EV_READ | EV_WRITE);
    else
        event_add(s->rev, NULL);
}

struct evbuffer *
pm_stream_input(struct pm_stream *s)
{
    return s->in;
}

struct evbuffer *
pm_stream_output(struct pm_stream *s)
{
    if (s->bev == NULL && !s->queued && !s->dead) {
        if (TAILQ_EMPTY(&flush_list))
            pm_loop_defer(s->loop, flush_all, NULL);
        TAILQ_INSERT_TAIL(&flush_list, s, link);
        s->queued = true;
    }
    return s->out;
}

size_t
pm_stream_pending(struct pm_stream *s)
{
    return evbuffer_get_length(s->out);
}

void
pm_stream_stop_reading(struct pm_stream *s)
{
    if (s->bev != NULL)
        bufferevent_disable(s->bev, EV_READ);
    else
        event_del(s->rev);
}

void
pm_stream_notify_drained(struct pm_stream *s)
{
    s->want_drain = true;
    if (s->bev == NULL && s->queued)
        return; /* the pending flush will tell */
    check_drained(s);
}

void
pm_stream_linger(struct pm_stream *s)
{
    int fd = s->bev != NULL ? bufferevent_getfd(s->bev) : s->fd;

    if (s->dead)
        return;
    evbuffer_drain(s->in, evbuffer_get_length(s->in));
    if (fd >= 0)
        shutdown(fd, SHUT_WR);
    if (s->bev != NULL)
        bufferevent_enable(s->bev, EV_READ);
    else
        event_add(s->rev, NULL);
}

void
pm_stream_free(struct pm_stream *s)
{
    if (s == NULL)
        return;
    if (s->bev != NULL) {
        bufferevent_free(s->bev);
        free(s);
        return;
    }
    if (s->queued)
        TAILQ_REMOVE(&flush_list, s, link);
    if (s->rev != NULL)
        event_free(s->rev);
    if (s->wev != NULL)
        event_free(s->wev);
    if (s->in != NULL)
        evbuffer_free(s->in);
    if (s->out != NULL)
        evbuffer_free(s->out);
    close(s->fd);
    free(s);
}
