/*
 * tunnel: what the tunnel role's files share (docs/tunnel.md). The role
 * state, its config, and one tunnel_conn per client connection: the
 * client end (mTLS in server mode, plain on the agent's local port) and
 * the target end (the origin in server mode, the server over mTLS on the
 * agent), each a tunnel_end over a non-blocking socket.
 *
 * Loop thread only. A tunnel_conn is freed by tunnel_conn_close, never
 * inside a libevent callback of its own (the free is deferred).
 */
#ifndef TUNNEL_H
#define TUNNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "pm_addr.h"
#include "pm_http.h"

struct cJSON;
struct event;
struct event_base;
struct evbuffer;
struct ssl_st;
struct x509_st;
struct pm_server;
struct pm_tls;
struct pm_cidr_list;
struct pm_httpc;
struct tunnel_policy;
struct tunnel_dial;
struct tunnel_fwd;

/* Largest read moved at once; a side is not read while the other side
 * has output queued, so a pipe holds at most this much. */
#define TUNNEL_CHUNK 65536
#define TUNNEL_NAME_MAX 256 /* host names in targets */

struct tunnel_conf {
    char *mode;
    /* server */
    char *allow_cn, *allow_san, *allow_pin;
    char *connect_ports, *http_ports;
    char *allow_hosts, *deny_hosts;
    int64_t max_connections;
    int64_t max_streams;
    uint64_t connect_timeout, idle_timeout, close_timeout, max_lifetime;
    bool emf;
    char *emf_namespace;
    uint64_t emf_interval;
    char *service_name, *cluster_name;
    /* agent */
    char *server_ip;
    int64_t server_port;
    char *server_name, *server_pin, *server_ca;
    char *proxy_addr, *proxy_auth, *proxy_allow;
    uint64_t retry_initial, retry_max, probe_interval;
    char *wake_endpoint, *kill_endpoint, *api_key, *region;
    uint64_t wake_timeout, wake_retry_interval;
    /* certificates */
    char *gen_certs, *cert_names, *cert_clients;
    int64_t cert_days;
};

struct tunnel_stats {
    int64_t *conns_open, *streams_open;
    uint64_t *streams_connect, *streams_http;
    uint64_t *bytes_up, *bytes_down;
    uint64_t *handshakes_ok, *handshakes_failed, *handshakes_resumed;
    int64_t *last_activity;
};

/* One side of a connection: a socket, with TLS when ssl is set. */
struct tunnel_end {
    int fd;
    struct ssl_st *ssl;
    struct event *rev, *wev;
    struct evbuffer *out;  /* queued for this end (NULL while unused) */
    bool reading;          /* rev is armed */
    bool eof;              /* nothing more will be read */
    bool eof_next;         /* EOF seen after the bytes last returned */
    bool shut;             /* our write side is shut down */
    bool shut_pending;     /* shut it down once out drains */
    bool read_wants_write; /* SSL_read needs the socket writable */
};

enum tunnel_state {
    TS_HANDSHAKE, /* server: TLS with the client */
    TS_HEAD,      /* reading a request head */
    TS_DIAL,      /* resolving / connecting the target */
    TS_UPSTREAM,  /* agent: TLS with the server */
    TS_PROBE,     /* agent: reading the answer to a probe */
    TS_PIPE,      /* relaying bytes both ways */
    TS_FORWARD,   /* server: an absolute-form request in flight */
    TS_CLOSING    /* flushing the last answer to the client */
};

struct tunnel;

struct tunnel_conn {
    struct tunnel *t;
    uint64_t id;
    enum tunnel_state state;
    struct tunnel_end client, target;
    struct event *timer;
    struct evbuffer *head; /* client bytes not consumed yet */
    struct tunnel_dial *dial;
    struct tunnel_fwd *fwd;
    bool counted;    /* holds a tunnel.max_connections slot */
    bool over_limit; /* answer 503 once the handshake is done */
    bool stream;     /* holds a tunnel.max_streams slot */
    bool dead;       /* closed; free scheduled */
    bool probe;      /* agent: a probe of the server, no client */
    uint64_t born_ms, stream_ms, last_ms;
    uint64_t up, down; /* bytes of the current stream */
    int status;        /* of the current stream, for the access log */
    uint32_t requests; /* request heads read on this connection */
    const char *kind;  /* "connect" or "http" */
    char method[16];
    char target_name[TUNNEL_NAME_MAX + 8]; /* host:port as asked */
    char cn[128];                          /* client certificate CN */
    char ip[PM_ADDR_STRLEN];
    TAILQ_ENTRY(tunnel_conn) link;
};

TAILQ_HEAD(tunnel_conn_list, tunnel_conn);

struct tunnel_agent;

struct tunnel {
    struct pm_server *srv;
    struct tunnel_conf conf; /* strings owned here (copied at init) */
    bool agent;
    bool draining;
    struct pm_tls *tls; /* server: the core's; agent: our client context */
    struct tunnel_policy *policy;
    struct tunnel_conn_list conns;
    int64_t nconns, nstreams;
    uint64_t next_id;
    uint64_t start_ms;
    struct event *emf_timer;
    struct tunnel_stats stats;
    struct tunnel_agent *ag;
    struct pm_cidr_list *proxy_allow;
};

/* tunnel_end.c: socket and TLS I/O */
#define TUNNEL_AGAIN (-1)
#define TUNNEL_ERR (-2)
/* Set up e over fd (owned) with events calling rd/wr(arg). */
int tunnel_end_init(struct tunnel_end *e, struct event_base *base, int fd,
                    void (*rd)(int, short, void *),
                    void (*wr)(int, short, void *), void *arg);
/* Speak TLS over e's socket with ssl (owned): partial writes from a
 * moving buffer, read-ahead, EOF without close_notify accepted. */
void tunnel_end_tls(struct tunnel_end *e, struct ssl_st *ssl);
/* Bytes read (> 0), 0 at end of stream, TUNNEL_AGAIN or TUNNEL_ERR. */
long tunnel_end_read(struct tunnel_end *e, char *buf, size_t cap);
/* Bytes written (>= 0), or TUNNEL_ERR. */
long tunnel_end_write(struct tunnel_end *e, const char *buf, size_t len);
/* Write what is queued in e->out: PM_OK (empty), PM_EAGAIN, PM_EIO. */
int tunnel_end_flush(struct tunnel_end *e);
/* Queue len bytes (copied) and try to write them now. */
int tunnel_end_send(struct tunnel_end *e, const void *buf, size_t len);
/* Send FIN (or close_notify) once out is empty. PM_OK, PM_EAGAIN, PM_EIO. */
int tunnel_end_shutdown(struct tunnel_end *e);
/* TLS handshake step: PM_OK, PM_EAGAIN (events armed), PM_EPROTO. */
int tunnel_end_handshake(struct tunnel_end *e);
void tunnel_end_read_on(struct tunnel_end *e);
void tunnel_end_read_off(struct tunnel_end *e);
/* Arm or disarm the write event to match what is pending. */
void tunnel_end_sync_write(struct tunnel_end *e);
size_t tunnel_end_pending(const struct tunnel_end *e);
void tunnel_end_free(struct tunnel_end *e);

/* tunnel_conn.c: client connections */
void tunnel_accept(void *state, int fd, const char *peer);
/* A connection over client socket fd (owned; -1: none, for probes). */
struct tunnel_conn *tunnel_conn_new(struct tunnel *t, int fd, const char *peer);
void tunnel_conn_close(struct tunnel_conn *c, const char *result);
/* (Re)arm c's timer for the deadline of its state. */
void tunnel_conn_arm(struct tunnel_conn *c);
/* Flush what is queued for the client, then close. */
void tunnel_conn_close_after_flush(struct tunnel_conn *c);
/* Answer status with a Proxy-Status error and close after the flush. */
void tunnel_conn_refuse(struct tunnel_conn *c, int status, const char *error,
                        const char *details);
/* Set up c->target over a connecting socket fd (owned). */
int tunnel_conn_target_init(struct tunnel_conn *c, int fd);
/* The target end is connected (server: origin; agent: server TLS done). */
void tunnel_conn_target_ready(struct tunnel_conn *c);
/* Start relaying bytes both ways (CONNECT answered, or agent stream). */
void tunnel_pipe_start(struct tunnel_conn *c);
void tunnel_conn_activity(struct tunnel_conn *c, uint64_t up, uint64_t down);
/* Begin / end a stream (max_streams slot, access log). */
bool tunnel_stream_begin(struct tunnel_conn *c, const char *kind);
void tunnel_stream_end(struct tunnel_conn *c, const char *result);
/* Re-enter the head reader (keep-alive after a forwarded request). */
void tunnel_conn_next_request(struct tunnel_conn *c);
void tunnel_conns_drain(struct tunnel *t);

/* tunnel_pipe.c: move bytes from src to dst with backpressure, pass end
 * of stream on as a write shutdown; the writable side of dst drained. */
void tunnel_pipe_pump(struct tunnel_conn *c, struct tunnel_end *src,
                      struct tunnel_end *dst);
void tunnel_pipe_writable(struct tunnel_conn *c, struct tunnel_end *dst);
/* A pipe read (n: 0 or TUNNEL_ERR) or write failed: close it, or on the
 * agent before the server answered anything, answer the client 502. */
void tunnel_pipe_failed(struct tunnel_conn *c, long n);

/* tunnel_policy.c: egress policy */
struct tunnel_policy *tunnel_policy_new(const struct tunnel_conf *conf,
                                        char *err, size_t errlen);
void tunnel_policy_free(struct tunnel_policy *p);
/* Check a host name and port before resolving: PM_OK, or PM_EINVAL with
 * the status, the Proxy-Status error and details. connect selects
 * tunnel.connect_ports, else tunnel.http_ports. */
int tunnel_policy_name(const struct tunnel_policy *p, const char *host,
                       int port, bool connect, int *status, const char **error,
                       char *details, size_t dlen);
/* Check one resolved address of host. */
bool tunnel_policy_addr(const struct tunnel_policy *p, const char *host,
                        const struct sockaddr *sa, char *details, size_t dlen);

/* tunnel_dial.c: resolve (worker thread), check, connect with timeout */
void tunnel_dial_start(struct tunnel_conn *c, const char *host, int port,
                       bool check);
void tunnel_dial_cancel(struct tunnel_conn *c);
/* The target socket became writable while connecting. */
void tunnel_dial_connected(struct tunnel_conn *c);

/* tunnel_identity.c: certificate identity */
void tunnel_identity_cn(struct x509_st *x, char *out, size_t outlen);
/* SPKI pin "sha256//BASE64" of x into out (>= 60 bytes). */
void tunnel_identity_pin(struct x509_st *x, char *out, size_t outlen);
bool tunnel_identity_check(void *arg, struct ssl_st *ssl, struct x509_st *leaf,
                           char *why, size_t whylen);
int tunnel_pins_valid(const char *list, const char *key, char *err,
                      size_t errlen);

/* tunnel_forward.c: absolute-form requests (server mode) */
void tunnel_forward_start(struct tunnel_conn *c,
                          const struct pm_http_request *req);
void tunnel_forward_io(struct tunnel_conn *c, struct tunnel_end *e,
                       bool writable);
void tunnel_forward_free(struct tunnel_conn *c);
/* The kept upstream became readable between requests (closed): drop it. */
void tunnel_forward_idle_event(struct tunnel_conn *c);

/* tunnel_agent.c: the agent's side */
int tunnel_agent_init(struct tunnel *t, char *err, size_t errlen);
void tunnel_agent_start(struct tunnel *t);
void tunnel_agent_stop(struct tunnel *t);
bool tunnel_agent_busy(struct tunnel *t);
void tunnel_agent_free(struct tunnel *t);
/* Open the mTLS stream for c to the server. */
void tunnel_agent_dial(struct tunnel_conn *c);
/* The TCP connection to the server is up: start TLS. */
void tunnel_agent_connected_tcp(struct tunnel_conn *c);
void tunnel_agent_upstream_io(struct tunnel_conn *c);
/* A probe or stream could not reach the server: tell the client, mark
 * the server down and schedule a probe. */
void tunnel_agent_conn_failed(struct tunnel_conn *c, const char *why);
void tunnel_agent_health(struct tunnel *t, struct cJSON *o);
bool tunnel_agent_connected(const struct tunnel *t);
int tunnel_agent_reload(struct tunnel *t, const struct tunnel_conf *fresh);

#endif
