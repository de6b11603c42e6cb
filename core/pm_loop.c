/*
 * pm_loop: event_base, signals, deferred calls and the worker pool.
 *
 * Deferred calls: a list drained by one event made active whenever the
 * list goes from empty to non-empty, so a callback can ask for an object
 * to be freed after it returns. Workers: plain pthreads over a job queue;
 * a finished job goes on a done queue and a byte on a pipe wakes the loop,
 * which runs the done callbacks. No libevent locking is needed because
 * only the loop thread touches libevent.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "pm_log.h"
#include "pm_loop.h"
#include "pm_util.h"

#define PM_LOOP_WORKERS 2

struct defer_item {
    pm_defer_fn fn;
    void *arg;
    struct defer_item *next;
};

struct job {
    pm_work_fn work;
    pm_done_fn done;
    void *arg;
    struct job *next;
};

struct sig {
    struct event *ev;
    pm_signal_fn fn;
    void *arg;
    int signo;
    struct sig *next;
};

struct pm_loop {
    struct event_base *base;
    struct event *defer_ev;
    struct defer_item *defer_head, *defer_tail;
    struct sig *sigs;
    /* worker pool */
    pthread_t workers[PM_LOOP_WORKERS];
    int nworkers;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *todo_head, *todo_tail, *done_head, *done_tail;
    bool quit;
    int wake[2];
    struct event *wake_ev;
};

static void
run_deferred(evutil_socket_t fd, short what, void *arg)
{
    struct pm_loop *loop = arg;
    struct defer_item *it;

    (void)fd;
    (void)what;
    /* Calls may defer more; those run in this same pass. */
    while ((it = loop->defer_head) != NULL) {
        loop->defer_head = it->next;
        if (loop->defer_head == NULL)
            loop->defer_tail = NULL;
        it->fn(it->arg);
        free(it);
    }
}

static void wake_cb(evutil_socket_t fd, short what, void *arg);

#define PM_LOOP_MAX_CALLBACKS 64

struct pm_loop *
pm_loop_new(char *err, size_t errlen)
{
    struct pm_loop *loop = pm_xcalloc(1, sizeof *loop);
    struct event_config *ec = event_config_new();

    event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    /* Poll again after this many callbacks, so a callback that keeps
     * re-activating itself (a busy tunnel pipe) cannot starve the sockets
     * waiting in epoll. */
    event_config_set_max_dispatch_interval(ec, NULL, PM_LOOP_MAX_CALLBACKS, 0);
    loop->base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (loop->base == NULL) {
        pm_errf(err, errlen, PM_EIO, "cannot create the event loop");
        free(loop);
        return NULL;
    }
    loop->defer_ev = event_new(loop->base, -1, 0, run_deferred, loop);
    pthread_mutex_init(&loop->mu, NULL);
    pthread_cond_init(&loop->cv, NULL);
    if (pipe2(loop->wake, O_NONBLOCK | O_CLOEXEC) != 0) {
        pm_errf(err, errlen, PM_EIO, "pipe: %s", strerror(errno));
        event_free(loop->defer_ev);
        event_base_free(loop->base);
        free(loop);
        return NULL;
    }
    loop->wake_ev = event_new(loop->base, loop->wake[0], EV_READ | EV_PERSIST,
                              wake_cb, loop);
    event_add(loop->wake_ev, NULL);
    return loop;
}

struct event_base *
pm_loop_base(struct pm_loop *loop)
{
    return loop->base;
}

static void
signal_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sig *s = arg;

    (void)fd;
    (void)what;
    s->fn(s->signo, s->arg);
}

int
pm_loop_on_signal(struct pm_loop *loop, int signo, pm_signal_fn fn, void *arg)
{
    struct sig *s = pm_xcalloc(1, sizeof *s);

    s->fn = fn;
    s->arg = arg;
    s->signo = signo;
    s->ev = evsignal_new(loop->base, signo, signal_cb, s);
    if (s->ev == NULL || evsignal_add(s->ev, NULL) != 0) {
        if (s->ev != NULL)
            event_free(s->ev);
        free(s);
        return PM_EIO;
    }
    s->next = loop->sigs;
    loop->sigs = s;
    return PM_OK;
}

void
pm_loop_defer(struct pm_loop *loop, pm_defer_fn fn, void *arg)
{
    struct defer_item *it = pm_xmalloc(sizeof *it);

    it->fn = fn;
    it->arg = arg;
    it->next = NULL;
    if (loop->defer_tail != NULL) {
        loop->defer_tail->next = it;
    } else {
        loop->defer_head = it;
        event_active(loop->defer_ev, 0, 0);
    }
    loop->defer_tail = it;
}

/* With loop->mu held: queue j for the loop thread and wake it. */
static void
push_done(struct pm_loop *loop, struct job *j)
{
    char b = 1;
    ssize_t n;

    j->next = NULL;
    if (loop->done_tail != NULL)
        loop->done_tail->next = j;
    else
        loop->done_head = j;
    loop->done_tail = j;
    n = write(loop->wake[1], &b, 1);
    (void)n; /* a full pipe already means "wake up" */
}

static void *
worker_main(void *arg)
{
    struct pm_loop *loop = arg;
    sigset_t all;

    /* Signals are for the loop thread only. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    pthread_mutex_lock(&loop->mu);
    for (;;) {
        struct job *j;

        while (loop->todo_head == NULL && !loop->quit)
            pthread_cond_wait(&loop->cv, &loop->mu);
        if (loop->todo_head == NULL)
            break;
        j = loop->todo_head;
        loop->todo_head = j->next;
        if (loop->todo_head == NULL)
            loop->todo_tail = NULL;
        pthread_mutex_unlock(&loop->mu);
        j->work(j->arg);
        pthread_mutex_lock(&loop->mu);
        push_done(loop, j);
    }
    pthread_mutex_unlock(&loop->mu);
    return NULL;
}

static void
wake_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pm_loop *loop = arg;
    struct job *j;
    char buf[64];

    (void)what;
    while (read(fd, buf, sizeof buf) > 0)
        ;
    pthread_mutex_lock(&loop->mu);
    j = loop->done_head;
    loop->done_head = loop->done_tail = NULL;
    pthread_mutex_unlock(&loop->mu);
    while (j != NULL) {
        struct job *next = j->next;

        if (j->done != NULL)
            j->done(j->arg);
        free(j);
        j = next;
    }
}

static void
start_workers(struct pm_loop *loop)
{
    int i;

    for (i = 0; i < PM_LOOP_WORKERS; i++) {
        if (pthread_create(&loop->workers[i], NULL, worker_main, loop) != 0)
            break;
        loop->nworkers++;
    }
    PM_ASSERT(loop->nworkers > 0);
}

void
pm_loop_submit(struct pm_loop *loop, pm_work_fn work, pm_done_fn done,
               void *arg)
{
    struct job *j = pm_xcalloc(1, sizeof *j);

    j->work = work;
    j->done = done;
    j->arg = arg;
    if (loop->nworkers == 0)
        start_workers(loop);
    pthread_mutex_lock(&loop->mu);
    if (loop->todo_tail != NULL)
        loop->todo_tail->next = j;
    else
        loop->todo_head = j;
    loop->todo_tail = j;
    pthread_cond_signal(&loop->cv);
    pthread_mutex_unlock(&loop->mu);
}

void
pm_loop_post(struct pm_loop *loop, pm_done_fn fn, void *arg)
{
    struct job *j = pm_xcalloc(1, sizeof *j);

    j->done = fn;
    j->arg = arg;
    pthread_mutex_lock(&loop->mu);
    push_done(loop, j);
    pthread_mutex_unlock(&loop->mu);
}

void
pm_loop_run_deferred(struct pm_loop *loop)
{
    run_deferred(-1, 0, loop);
}

int
pm_loop_run(struct pm_loop *loop)
{
    return event_base_dispatch(loop->base) < 0 ? PM_EIO : PM_OK;
}

void
pm_loop_stop(struct pm_loop *loop)
{
    event_base_loopbreak(loop->base);
}

void
pm_loop_free(struct pm_loop *loop)
{
    struct sig *s;
    int i;

    if (loop == NULL)
        return;
    run_deferred(-1, 0, loop);
    if (loop->nworkers > 0) {
        pthread_mutex_lock(&loop->mu);
        loop->quit = true;
        pthread_cond_broadcast(&loop->cv);
        pthread_mutex_unlock(&loop->mu);
        for (i = 0; i < loop->nworkers; i++)
            pthread_join(loop->workers[i], NULL);
    }
    wake_cb(loop->wake[0], 0, loop);
    event_free(loop->wake_ev);
    close(loop->wake[0]);
    close(loop->wake[1]);
    while ((s = loop->sigs) != NULL) {
        loop->sigs = s->next;
        event_free(s->ev);
        free(s);
    }
    event_free(loop->defer_ev);
    event_base_free(loop->base);
    pthread_mutex_destroy(&loop->mu);
    pthread_cond_destroy(&loop->cv);
    free(loop);
}
