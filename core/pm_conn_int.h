/*
 * pm_conn_int: what pm_server and pm_conn share inside the core. Roles
 * never include this header.
 */
#ifndef PM_CONN_INT_H
#define PM_CONN_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "pm_addr.h"
#include "pm_conn.h"
#include "pm_http.h"
#include "pm_ratelimit.h"
#include "pm_ws.h"

struct event;
struct pm_server;
struct pm_stream;

enum pm_conn_state {
    PM_CONN_HTTP_IDLE, /* waiting for a request (keep-alive timer) */
    PM_CONN_HTTP_HEAD, /* reading a request (header, then body deadline) */
    PM_CONN_HTTP_WAIT, /* the role answers later (header deadline) */
    PM_CONN_WS_OPEN,
    PM_CONN_WS_CLOSING, /* close frame sent, waiting for the echo */
    PM_CONN_CLOSING,    /* flushing output, then freed */
    PM_CONN_DEAD        /* free scheduled */
};

struct pm_conn {
    uint64_t id;
    struct pm_server *srv;
    struct pm_stream *stream;
    struct event *timer;
    enum pm_conn_state state;
    bool admin;          /* accepted on the admin port */
    bool ws_notified;    /* role's ws_close has run */
    bool ip_counted;     /* holds a per-IP connection slot */
    bool req_keep_alive; /* of the request being answered */
    bool req_head;       /* HEAD request: no body in the answer */
    bool in_body;        /* head parsed, body still coming (body timer) */
    bool freed;          /* resources released; memory kept for refs */
    bool lingering;      /* CLOSING, output flushed: discarding input */
    uint32_t refused;    /* consecutive rate-limited messages */
    uint32_t refs;       /* pm_conn_ref holds on the struct */
    uint64_t last_rx_ms;
    struct pm_bucket bucket;
    struct pm_ws_parser ws;
    void *data;
    char *ws_protocol; /* set in the ws_upgrade hook, taken by the 101 */
    char peer[PM_ADDR_STRLEN]; /* socket peer */
    char ip[PM_ADDR_STRLEN];   /* client (after trusted proxies) */
    TAILQ_ENTRY(pm_conn) link;
};

TAILQ_HEAD(pm_conn_list, pm_conn);

/* Counters the connection layer updates (owned by the metrics registry). */
struct pm_core_stats {
    uint64_t *conns_total;
    uint64_t *http_requests;
    uint64_t *ws_upgrades;
    uint64_t *ws_msgs_rx, *ws_msgs_tx;
    uint64_t *ws_bytes_rx, *ws_bytes_tx;
    uint64_t *header_timeouts;
    uint64_t *body_timeouts;
    uint64_t *rate_refused;
    int64_t *conns_open;
    int64_t *ws_open;
};

/* pm_conn.c */
/* Takes ownership of stream. */
struct pm_conn *pm_conn_new(struct pm_server *srv, struct pm_stream *stream,
                            const char *peer, bool admin);
/* Switch to WebSocket after the 101 is queued; arms the ping timer. */
void pm_conn_ws_start(struct pm_conn *c);
/* Answer the current request with "<status> <reason>" as plain text. */
void pm_conn_http_status(struct pm_conn *c, int status,
                         const char *extra_headers);
/* The role will answer the current request later (its hook said so). */
void pm_conn_http_wait(struct pm_conn *c);
/* Shutdown: WebSocket clients get close 1001, idle HTTP is closed. */
void pm_conn_drain(struct pm_conn *c);

/* pm_server.c, called by the connection layer */
void pm_server_request(struct pm_server *srv, struct pm_conn *c,
                       const struct pm_http_request *req, const uint8_t *body,
                       size_t body_len);
void pm_server_conn_closing(struct pm_server *srv, struct pm_conn *c,
                            uint16_t code);
void pm_server_conn_free(struct pm_server *srv, struct pm_conn *c);
struct pm_core_stats *pm_server_stats(struct pm_server *srv);
const struct pm_role *pm_server_role(struct pm_server *srv, void **state);

#endif
