/*
 * tunnel_end: one side of a tunnel connection, a non-blocking socket with
 * or without TLS, read and written directly (no bufferevent): reads go
 * into the caller's buffer, writes go straight to the socket and only
 * what the kernel refuses is queued in `out`. TLS uses partial writes and
 * a moving write buffer, so a queued TLS write is retried from `out` with
 * the same bytes. An idle end holds no buffers (SSL_MODE_RELEASE_BUFFERS,
 * `out` empty).
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "pm_util.h"
#include "tunnel.h"

int
tunnel_end_init(struct tunnel_end *e, struct event_base *base, int fd,
                void (*rd)(int, short, void *), void (*wr)(int, short, void *),
                void *arg)
{
    e->fd = fd;
    e->rev = event_new(base, fd, EV_READ | EV_PERSIST, rd, arg);
    e->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, wr, arg);
    if (e->rev == NULL || e->wev == NULL)
        return PM_EIO;
    return PM_OK;
}

void
tunnel_end_tls(struct tunnel_end *e, SSL *ssl)
{
    SSL_set_fd(ssl, e->fd);
    SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
                          SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_set_options(ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* Whole records per read(): one syscall per record instead of two. */
    SSL_set_read_ahead(ssl, 1);
    e->ssl = ssl;
}

void
tunnel_end_read_on(struct tunnel_end *e)
{
    if (!e->reading && !e->eof && e->rev != NULL) {
        event_add(e->rev, NULL);
        e->reading = true;
    }
}

void
tunnel_end_read_off(struct tunnel_end *e)
{
    if (e->reading) {
        event_del(e->rev);
        e->reading = false;
    }
}

size_t
tunnel_end_pending(const struct tunnel_end *e)
{
    return e->out ? evbuffer_get_length(e->out) : 0;
}

void
tunnel_end_sync_write(struct tunnel_end *e)
{
    if (e->wev == NULL)
        return;
    if (tunnel_end_pending(e) > 0 || e->read_wants_write ||
        (e->shut_pending && !e->shut))
        event_add(e->wev, NULL);
    else
        event_del(e->wev);
}

/* The TLS reads: fill buf from as many records as are there. */
static long
tls_read(struct tunnel_end *e, char *buf, size_t cap)
{
    size_t total = 0;

    e->read_wants_write = false;
    while (total < cap) {
        int n = SSL_read(e->ssl, buf + total, (int)(cap - total));

        if (n > 0) {
            total += (size_t)n;
            continue;
        }
        switch (SSL_get_error(e->ssl, n)) {
        case SSL_ERROR_WANT_READ:
            return total > 0 ? (long)total : TUNNEL_AGAIN;
        case SSL_ERROR_WANT_WRITE:
            e->read_wants_write = true;
            tunnel_end_sync_write(e);
            return total > 0 ? (long)total : TUNNEL_AGAIN;
        case SSL_ERROR_ZERO_RETURN:
            break;
        case SSL_ERROR_SYSCALL:
            /* EOF without close_notify; a reset is an error */
            if (errno != 0 && errno != EPIPE && errno != ECONNRESET) {
                ERR_clear_error();
                return total > 0 ? (long)total : TUNNEL_ERR;
            }
            break;
        default: /* the error queue says why (pm_tls_error_text) */
            return total > 0 ? (long)total : TUNNEL_ERR;
        }
        ERR_clear_error();
        if (total > 0) {
            e->eof_next = true;
            return (long)total;
        }
        return 0;
    }
    return (long)total;
}

long
tunnel_end_read(struct tunnel_end *e, char *buf, size_t cap)
{
    ssize_t n;

    if (e->eof_next) {
        e->eof_next = false;
        return 0;
    }
    if (e->ssl != NULL)
        return tls_read(e, buf, cap);
    n = read(e->fd, buf, cap);
    if (n >= 0)
        return (long)n;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return TUNNEL_AGAIN;
    return errno == ECONNRESET ? 0 : TUNNEL_ERR;
}

long
tunnel_end_write(struct tunnel_end *e, const char *buf, size_t len)
{
    size_t done = 0;

    if (e->ssl == NULL) {
        while (done < len) {
            ssize_t n = send(e->fd, buf + done, len - done, MSG_NOSIGNAL);

            if (n > 0) {
                done += (size_t)n;
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                break;
            return TUNNEL_ERR;
        }
        return (long)done;
    }
    while (done < len) {
        int n = SSL_write(e->ssl, buf + done, (int)(len - done));

        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        switch (SSL_get_error(e->ssl, n)) {
        case SSL_ERROR_WANT_WRITE:
        case SSL_ERROR_WANT_READ:
            return (long)done;
        default:
            ERR_clear_error();
            return TUNNEL_ERR;
        }
    }
    return (long)done;
}

int
tunnel_end_flush(struct tunnel_end *e)
{
    while (tunnel_end_pending(e) > 0) {
        struct evbuffer_iovec v;
        long n;

        /* The first chain as it is: a TLS retry sees the same bytes. */
        if (evbuffer_peek(e->out, -1, NULL, &v, 1) < 1)
            break;
        n = tunnel_end_write(e, v.iov_base, v.iov_len);
        if (n == TUNNEL_ERR)
            return PM_EIO;
        evbuffer_drain(e->out, (size_t)n);
        if ((size_t)n < v.iov_len) {
            tunnel_end_sync_write(e);
            return PM_EAGAIN;
        }
    }
    if (e->shut_pending && !e->shut) {
        int rv = tunnel_end_shutdown(e);

        tunnel_end_sync_write(e);
        return rv;
    }
    tunnel_end_sync_write(e);
    return PM_OK;
}

int
tunnel_end_send(struct tunnel_end *e, const void *buf, size_t len)
{
    if (len == 0)
        return PM_OK;
    if (e->out == NULL)
        e->out = evbuffer_new();
    evbuffer_add(e->out, buf, len);
    return tunnel_end_flush(e);
}

int
tunnel_end_shutdown(struct tunnel_end *e)
{
    if (e->shut)
        return PM_OK;
    e->shut_pending = true;
    if (tunnel_end_pending(e) > 0)
        return PM_EAGAIN;
    if (e->ssl != NULL) {
        int n = SSL_shutdown(e->ssl);

        if (n < 0) {
            int err = SSL_get_error(e->ssl, n);

            ERR_clear_error();
            if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ)
                return PM_EAGAIN;
            /* the peer is gone: nothing more to say */
        }
    } else {
        shutdown(e->fd, SHUT_WR);
    }
    e->shut = true;
    e->shut_pending = false;
    return PM_OK;
}

int
tunnel_end_handshake(struct tunnel_end *e)
{
    int n = SSL_do_handshake(e->ssl);

    if (n == 1) {
        event_del(e->wev);
        return PM_OK;
    }
    switch (SSL_get_error(e->ssl, n)) {
    case SSL_ERROR_WANT_READ:
        event_del(e->wev);
        tunnel_end_read_on(e);
        return PM_EAGAIN;
    case SSL_ERROR_WANT_WRITE:
        event_add(e->wev, NULL);
        return PM_EAGAIN;
    default:
        return PM_EPROTO;
    }
}

void
tunnel_end_free(struct tunnel_end *e)
{
    if (e->rev != NULL)
        event_free(e->rev);
    if (e->wev != NULL)
        event_free(e->wev);
    if (e->out != NULL)
        evbuffer_free(e->out);
    if (e->ssl != NULL) {
        /* Closed without close_notify, OpenSSL would mark the session
         * unusable; the agent resumes it for every stream. */
        SSL_set_shutdown(e->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
        SSL_free(e->ssl);
    }
    if (e->fd >= 0)
        close(e->fd);
    memset(e, 0, sizeof *e);
    e->fd = -1;
}
