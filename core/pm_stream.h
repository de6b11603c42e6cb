/*
 * pm_stream: the byte stream under a connection. Two kinds behind one
 * interface:
 *  - plain: the socket itself. Reads go straight into the input evbuffer
 *    (no FIONREAD probe); output queued during a loop pass is written once
 *    at the end of the pass with one writev, and EV_WRITE is armed only
 *    when the kernel would block. That is 2 to 3 syscalls per relayed
 *    message where a bufferevent spends 6.
 *  - tls: a bufferevent_openssl, which writes on its own.
 * Loop thread only. The stream owns its fd (or bufferevent) and closes it
 * in pm_stream_free.
 */
#ifndef PM_STREAM_H
#define PM_STREAM_H

#include <stdbool.h>

struct bufferevent;
struct event_base;
struct pm_loop;
struct evbuffer;
struct pm_stream;

/* New bytes are in the input. */
typedef void (*pm_stream_read_fn)(void *arg);
/* The peer closed or the stream failed: no more I/O will happen. */
typedef void (*pm_stream_error_fn)(void *arg, bool eof);
/* Everything queued has been written (after pm_stream_notify_drained). */
typedef void (*pm_stream_drained_fn)(void *arg);

/*
 * Takes ownership of fd (non-blocking). Writes are scheduled on loop.
 * NULL if libevent refuses the fd.
 */
struct pm_stream *pm_stream_plain(struct pm_loop *loop, int fd);
/* Takes ownership of a TLS bufferevent. */
struct pm_stream *pm_stream_tls(struct bufferevent *bev);
void pm_stream_setcb(struct pm_stream *s, pm_stream_read_fn rd,
                     pm_stream_error_fn err, pm_stream_drained_fn drained,
                     void *arg);
/* Start delivering reads (after setcb). */
void pm_stream_start(struct pm_stream *s);

struct evbuffer *pm_stream_input(struct pm_stream *s);
/*
 * The output buffer, for appending. Calling this marks the stream for a
 * write at the end of the current loop pass, so always fetch it right
 * before appending.
 */
struct evbuffer *pm_stream_output(struct pm_stream *s);
/* Bytes queued and not yet written. */
size_t pm_stream_pending(struct pm_stream *s);
/* Stop reading; writes continue. */
void pm_stream_stop_reading(struct pm_stream *s);
/* Call the drained callback once the output is empty (maybe at once). */
void pm_stream_notify_drained(struct pm_stream *s);
/*
 * Lingering close, once the output is flushed: send FIN (shutdown of the
 * write side), drop unread input and read again, so that the read
 * callback can discard whatever else comes until the peer closes. Closing
 * with unread input would make the kernel reset the connection, and the
 * peer could lose our last bytes (a close frame, an error answer).
 */
void pm_stream_linger(struct pm_stream *s);
/* Close and free now; queued output is dropped. */
void pm_stream_free(struct pm_stream *s);

#endif
