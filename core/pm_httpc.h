/*
 * pm_httpc: an asynchronous HTTP/1.1 client on the core's loop, for the
 * calls p2pmesh makes out: the Lambda Runtime API (plain HTTP on
 * loopback, one keep-alive connection, no timeout while waiting for an
 * invocation) and AWS endpoints (HTTPS with SNI, certificate and host
 * name verification). Connections are kept alive and pooled per origin
 * (scheme, host, port); requests to one origin run concurrently on up to
 * max_per_origin connections, the rest wait in order. A connection the
 * server closed is replaced, never reused. Loop thread only.
 */
#ifndef PM_HTTPC_H
#define PM_HTTPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct pm_httpc;

struct pm_httpc_opts {
    unsigned max_per_origin;     /* connections per origin; 0: 8 */
    const char *ca_file;         /* PEM CAs for https; NULL: the system store
                                    (OpenSSL defaults, SSL_CERT_FILE honoured) */
    uint64_t connect_timeout_ms; /* DNS, TCP and TLS handshake; 0: 5000 */
    bool no_verify; /* https: accept any certificate (the health probe of
                       a server on this machine; never for the network) */
};

struct pm_httpc_header {
    const char *name;
    const char *value;
};

struct pm_httpc_req {
    const char *method; /* "GET", "POST", "PUT", "DELETE" */
    const char *url;    /* http[s]://host[:port]/path[?query], path
                           already percent-encoded as it goes on the wire */
    const struct pm_httpc_header *headers; /* extra; Host (host[:port],
                                              the port when not the
                                              scheme's default),
                                              Connection: keep-alive and
                                              Content-Length are added,
                                              and refused here */
    size_t nheaders;
    const void *body; /* sent with Content-Length (never chunked); GET
                         and HEAD without a body send none */
    size_t body_len;
    uint64_t timeout_ms; /* whole request, from pm_httpc_send: waiting for
                            a connection, connect, TLS, request and
                            response; 0: none (Runtime API /next) */
};

/* A response, or why there is none (status 0). Borrowed during the
 * callback only. */
struct pm_httpc_res {
    int status;          /* HTTP status; 0: no response */
    const char *error;   /* status 0: one line (connect refused, timeout,
                            certificate verify failed, ...) */
    const uint8_t *body; /* NULL when status is 0 */
    size_t body_len;
    const void *priv; /* the headers, for pm_httpc_res_header */
};

/* A response header (case-insensitive name; the first of that name) or
 * NULL. */
const char *pm_httpc_res_header(const struct pm_httpc_res *res,
                                const char *name);

/* Called exactly once per request: never from inside pm_httpc_send, and
 * with status 0 "client closed" for requests pm_httpc_free abandons. It
 * may call pm_httpc_send and pm_httpc_free. */
typedef void (*pm_httpc_fn)(const struct pm_httpc_res *res, void *arg);

/* NULL with a reason (bad CA file). opts NULL: the defaults. No network
 * and no resolv.conf here: the resolver is made for the first host name
 * (IP literals need none), the system CA store for the first https
 * request. */
struct pm_httpc *pm_httpc_new(struct event_base *base,
                              const struct pm_httpc_opts *opts, char *err,
                              size_t errlen);
/* Answers every pending request, in the order they were sent, with
 * status 0 "client closed" before it returns, then closes the
 * connections (when called from a callback: once that callback returns).
 * NULL is a no-op. */
void pm_httpc_free(struct pm_httpc *h);

/* Queue a request (everything in req is copied). PM_OK, or PM_EINVAL
 * with a reason for a bad URL, method or header, or PM_ECLOSED once
 * pm_httpc_free has begun (cb is not called then). */
int pm_httpc_send(struct pm_httpc *h, const struct pm_httpc_req *req,
                  pm_httpc_fn cb, void *arg, char *err, size_t errlen);

#endif
