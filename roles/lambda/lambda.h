/*
 * lambda: internal interface of the lambda role (an AWS Lambda custom
 * runtime). lambda_runtime.c talks to the Runtime API and hands each
 * invocation to the handler _HANDLER names; a handler finishes a call
 * with lam_call_respond or lam_call_fail, once. The signaling handler
 * keeps its connections in a store: Redis or DynamoDB behind one table
 * of operations (lam_store).
 */
#ifndef LAMBDA_H
#define LAMBDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pm_aws.h"
#include "signaling/signaling.h"

struct pm_server;

struct lam_conf {
    struct sig_conf sig; /* signaling.* (base keys): the p2pmesh dialect */
    char *handler;       /* lambda.handler; NULL: $_HANDLER, then signaling */
    char *runtime_api;   /* host:port of the Runtime API */
    char *region;
    char *apigw_endpoint; /* NULL: https://{domainName}/{stage} */
    char *dynamodb_table;
    char *dynamodb_index;
    char *dynamodb_endpoint; /* NULL: https://dynamodb.{region}.amazonaws.com */
    uint64_t connection_ttl;
    uint64_t aws_timeout;
};

struct lam {
    struct pm_server *srv;
    const struct lam_conf *conf;
    const char *handler_name;
    struct lam_rt *rt;
    /* AWS calls: the client (pools per endpoint) and the credentials,
     * set up and freed by a handler that makes them. */
    struct pm_httpc *aws;
    struct pm_aws_creds creds;
    const struct lam_handler *handler;
    void *hstate;
};

/* One invocation. */
struct lam_call {
    struct lam *l;
    char *request_id;
    char *trace_id;       /* NULL when the Runtime API sent none */
    uint64_t deadline_ms; /* wall clock, epoch ms */
    const char *event;    /* the event bytes (NUL-ended copy) */
    size_t event_len;
    bool done;
};

struct lam_handler {
    const char *name;
    /* Called before the first /next; no network I/O unless needed. */
    int (*init)(struct lam *l, void **state, char *err, size_t errlen);
    /* Handle call; finish it (now or later) with respond or fail. */
    void (*invoke)(void *state, struct lam_call *call);
    void (*destroy)(void *state);
};

/* lambda_runtime.c: the Runtime API loop */
struct lam_rt *lam_rt_new(struct lam *l, char *err, size_t errlen);
void lam_rt_free(struct lam_rt *rt);
/* Report an init failure to /runtime/init/error, then exit (status 1). */
void lam_rt_init_error(struct lam_rt *rt, const char *type, const char *msg);
/* Begin the loop: the first GET /next. */
void lam_rt_start(struct lam_rt *rt);
/* Finish call with a response body (copied) or an error. */
void lam_call_respond(struct lam_call *call, const char *body, size_t len);
void lam_call_fail(struct lam_call *call, const char *type, const char *fmt,
                   ...) __attribute__((format(printf, 3, 4)));
/* Milliseconds left before the call's deadline (0 when past). */
uint64_t lam_call_remaining_ms(const struct lam_call *call);

/* lambda_signaling.c: the signaling handler */
extern const struct lam_handler lam_handler_signaling;

/*
 * The connection store. Every operation calls cb once, later (never from
 * inside the call), with PM_OK, PM_ENOTFOUND (no such connection or peer,
 * or a condition did not hold) or PM_EUNAVAIL (the store failed; why is
 * logged). Outputs are owned by the caller after the callback.
 */
typedef void (*lam_store_fn)(int rv, void *arg);

struct lam_conn_info {
    char *realm;     /* "" for the global realm */
    char *peer;      /* NULL before join */
    char *sub;       /* signaling.auth=jwt: the token's sub, the only id */
    bool peer_stale; /* the peer entry's TTL wants refreshing */
};

struct lam_peer {
    char *peer;
    char *cid;
};

struct lam_store {
    const char *name;
    /* AWS stores call through l->aws with l->creds. */
    int (*open)(struct lam *l, void **st, char *err, size_t errlen);
    /* After l->aws was freed: what still waits is answered PM_EUNAVAIL. */
    void (*close)(void *st);
    /* $connect: a connection of realm (sub may be NULL). */
    void (*conn_put)(void *st, const char *cid, const char *realm,
                     const char *sub, lam_store_fn cb, void *arg);
    /* A message: refresh the connection's TTL and read it. */
    void (*conn_touch)(void *st, const char *cid, struct lam_conn_info *out,
                       lam_store_fn cb, void *arg);
    /* $disconnect or 410: forget it, returning what it was. */
    void (*conn_delete)(void *st, const char *cid, struct lam_conn_info *out,
                        lam_store_fn cb, void *arg);
    /* The connection holding peer in realm (consistent read). */
    void (*peer_get)(void *st, const char *realm, const char *peer, char **cid,
                     lam_store_fn cb, void *arg);
    /* Every live peer of realm (*out is an array of *n). */
    void (*realm_list)(void *st, const char *realm, struct lam_peer **out,
                       size_t *n, lam_store_fn cb, void *arg);
    /* cid now holds peer in realm. */
    void (*peer_set)(void *st, const char *realm, const char *peer,
                     const char *cid, lam_store_fn cb, void *arg);
    /* Refresh the TTL of peer's entry if cid holds it. */
    void (*peer_touch)(void *st, const char *realm, const char *peer,
                       const char *cid, lam_store_fn cb, void *arg);
    /* cid gives up peer (only if it still holds it); conn_gone: the
     * connection's own record is already deleted. */
    void (*peer_clear)(void *st, const char *realm, const char *peer,
                       const char *cid, bool conn_gone, lam_store_fn cb,
                       void *arg);
};

extern const struct lam_store lam_store_redis;
extern const struct lam_store lam_store_dynamodb;

struct event_base;
/* lambda_store.c: call cb(rv, arg) from the loop soon. */
void lam_store_defer(struct event_base *base, lam_store_fn cb, void *arg,
                     int rv);
void lam_conn_info_clear(struct lam_conn_info *ci);
void lam_peers_free(struct lam_peer *v, size_t n);

#endif
