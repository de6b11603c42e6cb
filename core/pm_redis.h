/*
 * pm_redis: an asynchronous Redis client on the core's loop. RESP over a
 * plain or TLS bufferevent (hiredis 0.14 has no TLS, so hiredis is used
 * only to encode commands and parse replies). One pm_redis is one
 * connection: commands are pipelined and their callbacks run in order;
 * a connection put in subscriber mode delivers published messages to a
 * message callback. The URL gives host, port, TLS (rediss://), ACL user,
 * password and database. On loss the connection is re-established with
 * exponential backoff and jitter; callbacks of commands in flight get a
 * NULL reply. Loop thread only.
 */
#ifndef PM_REDIS_H
#define PM_REDIS_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct pm_redis;
struct pm_redis_reply;

enum pm_redis_type {
    PM_REDIS_STRING = 1,
    PM_REDIS_ARRAY = 2,
    PM_REDIS_INTEGER = 3,
    PM_REDIS_NIL = 4,
    PM_REDIS_STATUS = 5,
    PM_REDIS_ERROR = 6
};

struct pm_redis_url {
    char host[256];
    int port;
    bool tls;
    char user[128];
    char password[256];
    int db;
};

/* Parse redis://[user:password@]host[:port][/db] or rediss://... */
int pm_redis_url_parse(const char *url, struct pm_redis_url *out, char *err,
                       size_t errlen);

/* reply is borrowed (valid during the call); NULL: no answer (link lost). */
typedef void (*pm_redis_reply_fn)(const struct pm_redis_reply *reply,
                                  void *arg);
/* A message published on a subscribed channel (both borrowed). */
typedef void (*pm_redis_message_fn)(const char *channel, size_t chlen,
                                    const char *msg, size_t len, void *arg);
/* The link came up (after AUTH/SELECT) or went down. */
typedef void (*pm_redis_state_fn)(bool up, void *arg);

struct pm_redis_opts {
    const char *url;    /* required */
    const char *tls_ca; /* CA file for rediss://; NULL: system store */
    pm_redis_state_fn on_state;
    pm_redis_message_fn on_message; /* set for a subscriber connection */
    void *arg;
};

/* Connects in the background; NULL with a reason for a bad URL/CA. */
struct pm_redis *pm_redis_new(struct event_base *base,
                              const struct pm_redis_opts *opts, char *err,
                              size_t errlen);
void pm_redis_free(struct pm_redis *r);
bool pm_redis_is_up(const struct pm_redis *r);

/*
 * Send one command (argv copied). cb may be NULL. Returns PM_OK, or
 * PM_EUNAVAIL while the link is down (cb is not called then).
 */
int pm_redis_command(struct pm_redis *r, pm_redis_reply_fn cb, void *arg,
                     int argc, const char **argv, const size_t *argvlen);
/* The same for C strings: pm_redis_commandv(r, cb, arg, "SET", k, v, NULL) */
int pm_redis_commandv(struct pm_redis *r, pm_redis_reply_fn cb, void *arg, ...)
    __attribute__((sentinel));

/* Reply accessors. */
enum pm_redis_type pm_redis_reply_type(const struct pm_redis_reply *rep);
long long pm_redis_reply_integer(const struct pm_redis_reply *rep);
/* String, status or error text (not NUL-safe: use len). */
const char *pm_redis_reply_str(const struct pm_redis_reply *rep, size_t *len);
size_t pm_redis_reply_elements(const struct pm_redis_reply *rep);
const struct pm_redis_reply *
pm_redis_reply_element(const struct pm_redis_reply *rep, size_t i);
/*
 * A hiredis reply reader as pm_redis uses it (an array reply of more
 * than 2^20 elements is refused); free with redisReaderFree. Exposed for
 * the fuzzer.
 */
struct redisReader;
struct redisReader *pm_redis_reader_new(void);
/*
 * A pub/sub push ("message" or "pmessage" array) of a subscriber
 * connection: true with its channel and payload (pointing into reply),
 * else false. What the message callback is given; exposed for the fuzzer.
 */
bool pm_redis_reply_push(const struct pm_redis_reply *reply,
                         const char **channel, size_t *chlen, const char **msg,
                         size_t *len);

#endif
