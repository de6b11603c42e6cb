/*
 * pm_loop: the event loop every role runs on. Owns the event_base, signal
 * events, a deferred-call queue (free objects at a safe point after the
 * current callback, the redis freeClientAsync idea) and a small worker pool
 * for blocking work whose results come back on the loop thread.
 * Everything here runs on the loop thread except pm_work_fn bodies.
 */
#ifndef PM_LOOP_H
#define PM_LOOP_H

#include <stddef.h>

struct event_base;
struct pm_loop;

typedef void (*pm_signal_fn)(int signo, void *arg);
typedef void (*pm_defer_fn)(void *arg);
typedef void (*pm_work_fn)(void *arg); /* runs on a worker thread */
typedef void (*pm_done_fn)(void *arg); /* then runs on the loop thread */

/* Returns NULL with a reason in err when libevent cannot start. */
struct pm_loop *pm_loop_new(char *err, size_t errlen);
/* Joins the workers and frees the base; pending deferred calls run first. */
void pm_loop_free(struct pm_loop *loop);
struct event_base *pm_loop_base(struct pm_loop *loop);

/* Call fn(signo, arg) on the loop thread whenever signo arrives. */
int pm_loop_on_signal(struct pm_loop *loop, int signo, pm_signal_fn fn,
                      void *arg);
/* Run fn(arg) once, after the current callback returns. */
void pm_loop_defer(struct pm_loop *loop, pm_defer_fn fn, void *arg);
/* Run every pending deferred call now (at exit, after the loop stopped). */
void pm_loop_run_deferred(struct pm_loop *loop);
/* Hand work to the pool (started on first use, nworkers threads). */
void pm_loop_submit(struct pm_loop *loop, pm_work_fn work, pm_done_fn done,
                    void *arg);

/* Any thread: run fn(arg) on the loop thread soon (in posting order). */
void pm_loop_post(struct pm_loop *loop, pm_done_fn fn, void *arg);

/* Dispatch until pm_loop_stop; returns PM_OK or PM_EIO. */
int pm_loop_run(struct pm_loop *loop);
void pm_loop_stop(struct pm_loop *loop);

#endif
