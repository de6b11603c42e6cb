/*
 * Unit tests of pm_stream's plain kind over a socketpair: output queued in
 * one loop pass leaves in one write, output the kernel cannot take waits
 * for EV_WRITE and the drained callback fires only when all of it is out,
 * reads arrive in the input buffer, and EOF is reported once.
 */
#include "config.h"

#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "pm_loop.h"
#include "pm_stream.h"
#include "pm_test.h"

struct probe {
    int reads, errors, drained;
    bool eof;
};

static void
on_read(void *arg)
{
    ((struct probe *)arg)->reads++;
}

static void
on_error(void *arg, bool eof)
{
    struct probe *p = arg;

    p->errors++;
    p->eof = eof;
}

static void
on_drained(void *arg)
{
    ((struct probe *)arg)->drained++;
}

static struct pm_stream *
setup(struct pm_loop *loop, int sv[2], struct probe *p)
{
    struct pm_stream *s;

    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    s = pm_stream_plain(loop, sv[0]);
    ck_assert_ptr_nonnull(s);
    memset(p, 0, sizeof *p);
    pm_stream_setcb(s, on_read, on_error, on_drained, p);
    pm_stream_start(s);
    return s;
}

START_TEST(pass_output_leaves_in_one_write)
{
    struct pm_loop *loop = pm_loop_new(NULL, 0);
    struct event_base *base = pm_loop_base(loop);
    struct probe p;
    int sv[2];
    struct pm_stream *s = setup(loop, sv, &p);
    char buf[64];
    ssize_t n;

    evbuffer_add(pm_stream_output(s), "hello ", 6);
    evbuffer_add(pm_stream_output(s), "world", 5);
    /* Nothing is written before the loop runs the flush. */
    ck_assert_int_eq(recv(sv[1], buf, sizeof buf, MSG_DONTWAIT), -1);
    event_base_loop(base, EVLOOP_NONBLOCK);
    n = recv(sv[1], buf, sizeof buf, MSG_DONTWAIT);
    ck_assert_int_eq(n, 11);
    ck_assert(memcmp(buf, "hello world", 11) == 0);
    ck_assert_uint_eq(pm_stream_pending(s), 0);
    pm_stream_free(s);
    close(sv[1]);
    pm_loop_free(loop);
}
END_TEST

START_TEST(backpressure_then_drained)
{
    struct pm_loop *loop = pm_loop_new(NULL, 0);
    struct event_base *base = pm_loop_base(loop);
    struct probe p;
    int sv[2], i;
    struct pm_stream *s = setup(loop, sv, &p);
    static char chunk[65536], sink[65536];
    size_t total = 0, got = 0;

    /* Far more than a socketpair buffers. */
    for (i = 0; i < 64; i++) {
        evbuffer_add(pm_stream_output(s), chunk, sizeof chunk);
        total += sizeof chunk;
    }
    pm_stream_notify_drained(s);
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_uint_gt(pm_stream_pending(s), 0);
    ck_assert_int_eq(p.drained, 0);
    for (i = 0; i < 100000 && got < total; i++) {
        ssize_t n = recv(sv[1], sink, sizeof sink, MSG_DONTWAIT);

        if (n > 0)
            got += (size_t)n;
        event_base_loop(base, EVLOOP_NONBLOCK);
    }
    ck_assert_uint_eq(got, total);
    ck_assert_int_eq(p.drained, 1);
    ck_assert_int_eq(p.errors, 0);
    pm_stream_free(s);
    close(sv[1]);
    pm_loop_free(loop);
}
END_TEST

START_TEST(reads_then_eof_once)
{
    struct pm_loop *loop = pm_loop_new(NULL, 0);
    struct event_base *base = pm_loop_base(loop);
    struct probe p;
    int sv[2];
    struct pm_stream *s = setup(loop, sv, &p);
    char buf[8];

    ck_assert_int_eq(write(sv[1], "abc", 3), 3);
    event_base_loop(base, EVLOOP_ONCE);
    ck_assert_int_eq(p.reads, 1);
    ck_assert_uint_eq(evbuffer_get_length(pm_stream_input(s)), 3);
    evbuffer_remove(pm_stream_input(s), buf, sizeof buf);
    close(sv[1]);
    event_base_loop(base, EVLOOP_ONCE);
    ck_assert_int_eq(p.errors, 1);
    ck_assert(p.eof);
    /* No further callbacks once the stream failed. */
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_int_eq(p.errors, 1);
    pm_stream_free(s);
    pm_loop_free(loop);
}
END_TEST

START_TEST(drained_at_once_when_empty)
{
    struct pm_loop *loop = pm_loop_new(NULL, 0);
    struct probe p;
    int sv[2];
    struct pm_stream *s = setup(loop, sv, &p);

    pm_stream_notify_drained(s);
    ck_assert_int_eq(p.drained, 1);
    pm_stream_free(s);
    close(sv[1]);
    pm_loop_free(loop);
}
END_TEST

static Suite *
stream_suite(void)
{
    Suite *su = suite_create("pm_stream");
    TCase *tc = tcase_create("plain");

    tcase_add_test(tc, pass_output_leaves_in_one_write);
    tcase_add_test(tc, backpressure_then_drained);
    tcase_add_test(tc, reads_then_eof_once);
    tcase_add_test(tc, drained_at_once_when_empty);
    suite_add_tcase(su, tc);
    return su;
}

PM_TEST_MAIN(stream_suite)
