/*
 * pm_conn: one client connection on the main or admin port. Owns the
 * bufferevent (plain or TLS), the request-head parser state, the
 * WebSocket parser, the per-connection rate bucket and the one timer
 * that serves as header deadline, keep-alive idle timer, ping interval
 * and close-handshake linger. The only place that frees bufferevents.
 *
 * Lifecycle: created on accept, handed to pm_server for each request;
 * after a WebSocket upgrade the role's hooks see it. Roles never free a
 * connection: they call pm_conn_ws_close or pm_conn_close, and the free
 * happens later at a safe point (never inside the caller's callback).
 */
#ifndef PM_CONN_H
#define PM_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pm_addr.h"
#include "pm_ws.h"

struct bufferevent;
struct iovec;
struct evbuffer;
struct cJSON;
struct pm_server;
struct pm_conn;

/* Client address (after X-Forwarded-For from a trusted proxy). */
const char *pm_conn_ip(const struct pm_conn *c);
/* The role's per-connection pointer (borrowed; the role frees it). */
void *pm_conn_data(const struct pm_conn *c);
void pm_conn_set_data(struct pm_conn *c, void *data);

/*
 * From the role's ws_upgrade hook only: name proto[0..len) (copied) in
 * the 101's Sec-WebSocket-Protocol. It must be one of the values the
 * client offered in that header (RFC 6455 4.2.2; a browser that offered
 * subprotocols fails a handshake that echoes none).
 */
void pm_conn_set_ws_protocol(struct pm_conn *c, const char *proto, size_t len);

/*
 * Send one WebSocket message (TEXT or BINARY). Data is copied. Returns
 * PM_OK, PM_ECLOSED if the connection is closing, or PM_ELIMIT when the
 * peer stopped reading and its send buffer passed ws.send_buffer (the
 * connection is then dropped).
 */
int pm_conn_ws_send(struct pm_conn *c, enum pm_ws_opcode op, const void *data,
                    size_t len);
/*
 * Bytes queued for c and not yet written to the socket (0 once c is
 * gone): how far behind a reader is.
 */
size_t pm_conn_pending(const struct pm_conn *c);
/* Send one message gathered from n pieces (copied), as pm_conn_ws_send. */
int pm_conn_ws_sendv(struct pm_conn *c, enum pm_ws_opcode op,
                     const struct iovec *iov, int n);
/* Serialise json (borrowed) and send it as a TEXT message. */
int pm_conn_ws_send_json(struct pm_conn *c, const struct cJSON *json);
/*
 * Start the closing handshake: send a close frame with code and reason,
 * stop delivering messages, and drop the TCP connection once the peer
 * answers or after a short linger. The role's ws_close hook runs once.
 */
void pm_conn_ws_close(struct pm_conn *c, uint16_t code, const char *reason);
/* Flush what is queued, then close (HTTP or WebSocket, no close frame). */
void pm_conn_close(struct pm_conn *c);

/*
 * Keep c's memory valid past its close (for an answer given later): every
 * pm_conn_ref needs one pm_conn_unref. A closed c ignores every call.
 */
void pm_conn_ref(struct pm_conn *c);
void pm_conn_unref(struct pm_conn *c);

/*
 * Answer the HTTP request being handled on c (role http hooks, or later
 * for a hook that returned PM_EAGAIN): status,
 * content type, extra header lines ("Name: value\r\n", may be NULL) and
 * body (copied). Keep-alive follows the request.
 */
void pm_conn_http_respond(struct pm_conn *c, int status, const char *ctype,
                          const char *extra_headers, const void *body,
                          size_t len);

#endif
