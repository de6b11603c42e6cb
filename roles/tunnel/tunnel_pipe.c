/*
 * tunnel_pipe: the byte pipe of a CONNECT tunnel (and of every agent
 * stream). Each direction reads its source into one shared buffer and
 * writes it to the other end at once; only what the kernel refuses is
 * queued, and while anything is queued for an end the other end is not
 * read (backpressure: at most TUNNEL_CHUNK bytes held per direction).
 * End of stream on one side becomes a write shutdown of the other after
 * its queue drains (half-close); the pipe ends when both directions have
 * ended, or tunnel.close_timeout after the first did.
 */
#include "config.h"

#include <stdio.h>

#include <event2/event.h>
#include <openssl/err.h>

#include "pm_tls.h"

#include "pm_util.h"
#include "tunnel.h"

/* Passes per callback before yielding to other connections. */
#define PIPE_PASSES 4

static char pipe_buf[TUNNEL_CHUNK];

static void
pipe_check_done(struct tunnel_conn *c)
{
    if (c->client.eof && c->target.eof && c->client.shut && c->target.shut)
        tunnel_conn_close(c, "ok");
}

void
tunnel_pipe_failed(struct tunnel_conn *c, long n)
{
    char e[256], why[320];

    if (!c->t->agent || c->down > 0) {
        ERR_clear_error();
        tunnel_conn_close(c, "reset");
        return;
    }
    /* The server ended the stream before answering: in TLS 1.3 that is
     * how it refuses the agent's certificate. */
    snprintf(why, sizeof why, "the server closed the stream: %s",
             n == 0 ? "no answer" : pm_tls_error_text(e, sizeof e));
    tunnel_agent_conn_failed(c, why);
}

static void
count(struct tunnel_conn *c, struct tunnel_end *src, long n)
{
    if (src == &c->client)
        tunnel_conn_activity(c, (uint64_t)n, 0);
    else
        tunnel_conn_activity(c, 0, (uint64_t)n);
}

void
tunnel_pipe_pump(struct tunnel_conn *c, struct tunnel_end *src,
                 struct tunnel_end *dst)
{
    int pass;

    if (tunnel_end_pending(dst) > 0) {
        tunnel_end_read_off(src);
        return;
    }
    for (pass = 0; pass < PIPE_PASSES; pass++) {
        long n = tunnel_end_read(src, pipe_buf, sizeof pipe_buf), w;

        if (n == TUNNEL_AGAIN)
            return;
        if (n == TUNNEL_ERR ||
            (n == 0 && c->t->agent && src == &c->target && c->down == 0)) {
            tunnel_pipe_failed(c, n);
            return;
        }
        if (n == 0) {
            src->eof = true;
            tunnel_end_read_off(src);
            if (tunnel_end_shutdown(dst) == PM_OK)
                pipe_check_done(c);
            else
                tunnel_end_sync_write(dst);
            return;
        }
        count(c, src, n);
        w = tunnel_end_write(dst, pipe_buf, (size_t)n);
        if (w == TUNNEL_ERR) {
            tunnel_pipe_failed(c, w);
            return;
        }
        if (w < n) {
            if (tunnel_end_send(dst, pipe_buf + w, (size_t)(n - w)) == PM_EIO) {
                tunnel_pipe_failed(c, TUNNEL_ERR);
                return;
            }
            if (tunnel_end_pending(dst) > 0) {
                /* dst's write event resumes us once it drains */
                tunnel_end_read_off(src);
                return;
            }
        }
        if ((size_t)n < sizeof pipe_buf && !src->eof_next)
            return; /* the source is drained: no empty read to prove it */
    }
    /* More may be waiting (TLS keeps decrypted records): come back on the
     * next loop pass rather than starve other connections. */
    event_active(src->rev, EV_READ, 1);
}

void
tunnel_pipe_writable(struct tunnel_conn *c, struct tunnel_end *dst)
{
    struct tunnel_end *src = dst == &c->client ? &c->target : &c->client;
    int rv = tunnel_end_flush(dst);

    if (rv == PM_EIO) {
        tunnel_pipe_failed(c, TUNNEL_ERR);
        return;
    }
    if (rv == PM_EAGAIN)
        return;
    if (dst->shut) {
        pipe_check_done(c);
        return;
    }
    if (!src->eof) {
        tunnel_end_read_on(src);
        tunnel_pipe_pump(c, src, dst); /* TLS may hold data already */
    }
}
