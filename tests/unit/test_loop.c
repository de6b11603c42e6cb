/*
 * Unit tests of pm_loop: deferred calls run after the current callback
 * and in order (also ones deferred from a deferred call); worker-pool
 * jobs run off the loop thread and their done callbacks back on it;
 * signal events reach their handler on the loop thread.
 */
#include "config.h"

#include <pthread.h>
#include <stdbool.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "pm_loop.h"
#include "pm_test.h"

static struct pm_loop *loop;
static char trace[64];
static size_t ntrace;

static void
mark(void *arg)
{
    trace[ntrace++] = *(const char *)arg;
}

static void
mark_and_defer(void *arg)
{
    static const char d = 'd';

    mark(arg);
    pm_loop_defer(loop, mark, (void *)&d);
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    static const char a = 'a', b = 'b', c = 'c';

    (void)fd;
    (void)what;
    (void)arg;
    pm_loop_defer(loop, mark, (void *)&a);
    pm_loop_defer(loop, mark_and_defer, (void *)&b);
    pm_loop_defer(loop, mark, (void *)&c);
    trace[ntrace++] = 'T'; /* the callback itself finishes first */
}

START_TEST(deferred_calls_run_after_the_callback_in_order)
{
    struct event *ev;
    struct timeval now = {0, 0};

    loop = pm_loop_new(NULL, 0);
    ntrace = 0;
    ev = evtimer_new(pm_loop_base(loop), timer_cb, NULL);
    event_add(ev, &now);
    event_base_loop(pm_loop_base(loop), EVLOOP_ONCE);
    trace[ntrace] = '\0';
    ck_assert_str_eq(trace, "Tabcd");
    event_free(ev);
    pm_loop_free(loop);
}
END_TEST

#define NJOBS 64

struct job {
    pthread_t loop_thread, work_thread, done_thread;
    int value, result;
    bool done;
};

static int jobs_done;

static void
work(void *arg)
{
    struct job *j = arg;

    j->work_thread = pthread_self();
    j->result = j->value * j->value;
    usleep(1000);
}

static void
done(void *arg)
{
    struct job *j = arg;

    j->done_thread = pthread_self();
    j->done = true;
    if (++jobs_done == NJOBS)
        pm_loop_stop(loop);
}

static void
guard_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    pm_loop_stop(loop);
}

START_TEST(worker_pool_hands_results_back_to_the_loop)
{
    static struct job jobs[NJOBS];
    struct event *guard;
    struct timeval five = {5, 0};
    int i;

    loop = pm_loop_new(NULL, 0);
    jobs_done = 0;
    for (i = 0; i < NJOBS; i++) {
        jobs[i].value = i;
        jobs[i].loop_thread = pthread_self();
        pm_loop_submit(loop, work, done, &jobs[i]);
    }
    /* Bounded: a stuck pool fails the test instead of hanging it. */
    guard = evtimer_new(pm_loop_base(loop), guard_cb, NULL);
    event_add(guard, &five);
    ck_assert_int_eq(pm_loop_run(loop), 0);
    ck_assert_int_eq(jobs_done, NJOBS);
    for (i = 0; i < NJOBS; i++) {
        ck_assert(jobs[i].done);
        ck_assert_int_eq(jobs[i].result, i * i);
        ck_assert(!pthread_equal(jobs[i].work_thread, jobs[i].loop_thread));
        ck_assert(pthread_equal(jobs[i].done_thread, jobs[i].loop_thread));
    }
    event_free(guard);
    pm_loop_free(loop);
}
END_TEST

static int got_signo;

static void
on_signal(int signo, void *arg)
{
    got_signo = signo;
    pm_loop_stop(arg);
}

START_TEST(signals_reach_the_loop)
{
    loop = pm_loop_new(NULL, 0);
    got_signo = 0;
    ck_assert_int_eq(pm_loop_on_signal(loop, SIGUSR1, on_signal, loop), 0);
    kill(getpid(), SIGUSR1);
    ck_assert_int_eq(pm_loop_run(loop), 0);
    ck_assert_int_eq(got_signo, SIGUSR1);
    pm_loop_free(loop);
}
END_TEST

static Suite *
loop_suite(void)
{
    Suite *su = suite_create("pm_loop");
    TCase *tc = tcase_create("loop");

    tcase_add_test(tc, deferred_calls_run_after_the_callback_in_order);
    tcase_add_test(tc, worker_pool_hands_results_back_to_the_loop);
    tcase_add_test(tc, signals_reach_the_loop);
    suite_add_tcase(su, tc);
    return su;
}

PM_TEST_MAIN(loop_suite)
