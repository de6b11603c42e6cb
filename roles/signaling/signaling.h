/*
 * signaling: internal interface of the signaling role (not for other
 * roles). One process-wide struct sig holds the realms and the state of
 * each dialect. A realm is a scope of peer ids: one per p2pmesh ?room=,
 * one for the PeerJS key. Each holds its registered peers (hashed by id,
 * hex ids also sorted by value) and the offline mailboxes of absent ids.
 *
 * A sig_client is both the role's data on one WebSocket connection and a
 * registry entry. In cluster mode (redis.url set) the registry of every
 * instance also holds the peers of the other instances (conn NULL, inst
 * set), kept current by the cluster event channel, so bootstrap lists,
 * announcements and routing decisions are local lookups.
 *
 * A client may also be reached through a port instead of a WebSocket
 * here (conn NULL, port set): the lambda role runs this same dialect code
 * for API Gateway connections, with a registry it loads per event.
 */
#ifndef SIGNALING_H
#define SIGNALING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include <uthash.h>

#include "pm_config.h"

struct cJSON;
struct event;
struct iovec;
struct pm_conn;
struct pm_http_request;
struct pm_redis;
struct pm_server;

#define SIG_MAX_ID 128    /* bytes in a peer id */
#define SIG_MAX_REALM 128 /* bytes in a realm name */

struct sig_conf {
    int64_t bootstrap_count;
    int64_t announce_max;
    int64_t mailbox_max;
    uint64_t mailbox_ttl;
    uint64_t heartbeat_interval;
    int64_t max_peers_per_realm;
    uint64_t presence_ttl;
    char *peerjs_path; /* ends with '/' */
    char *peerjs_key;
    bool peerjs_discovery;
    uint64_t peerjs_expire;
    uint64_t peerjs_alive_timeout;
    int64_t peerjs_concurrent_limit;
    int64_t max_topics_per_conn;
    uint64_t session_ttl;
    uint64_t rendezvous_ttl;
    int64_t push_buffer;
    int64_t mailbox_list_max;
    char *auth; /* "none" or "jwt" */
    char *stun_urls;
    char *turn_urls;
    char *turn_secret;
    uint64_t turn_ttl;
};

struct sig;

/* The p2pmesh answer to a frame that is not JSON. */
#define SIG_INVALID_JSON "Invalid JSON message format."

/* signaling_role.c: the signaling.* keys (bound to struct sig_conf) */
extern const struct pm_conf_key sig_conf_keys[];
struct pm_metrics;
/* Register the role's metrics in m and point s->stats at them. */
void sig_stats_init(struct sig *s, struct pm_metrics *m);

/* What a WebSocket connection speaks; PENDING until its first message. */
enum sig_dialect {
    SIG_PENDING = 0,
    SIG_MESH,
    SIG_YWEBRTC,
    SIG_PEERJS,
    SIG_MAILBOX /* push-only /ws/{mailbox_id} */
};
/*
 * One text (or binary) message of client c, as its WebSocket delivered
 * it: to its dialect's handler, or, while PENDING, to the dialect its
 * first message picks. The role's ws_message hook; also the fuzzer's.
 */
struct sig_client;
void sig_client_message(struct sig *s, struct sig_client *c, const char *text,
                        size_t len);

/* Realm kinds; the kind decides how undeliverable messages are told. */
enum sig_realm_kind { SIG_REALM_MESH = 'm', SIG_REALM_PEERJS = 'p' };

struct sig_realm;
struct sig_inst;
struct sig_yws;
struct sig_mbx;
struct sig_client;

/*
 * How the dialect reaches a client that has no WebSocket here (the
 * lambda role's API Gateway connections). Every hook borrows c.
 */
struct sig_port {
    /* One text message (the pieces concatenated, copied). */
    void (*send)(void *arg, struct sig_client *c, const struct iovec *iov,
                 int n);
    /* Close c's connection after what was sent to it. */
    void (*close)(void *arg, struct sig_client *c, const char *reason);
    /* c was registered as c->id / is being unregistered. */
    void (*joined)(void *arg, struct sig_client *c);
    void (*left)(void *arg, struct sig_client *c);
    void *arg;
};

struct sig_client {
    struct pm_conn *conn;        /* NULL: reached through port, or remote */
    const struct sig_port *port; /* a port client (conn NULL) */
    struct sig_inst *inst;       /* remote: the instance holding the peer */
    enum sig_dialect dialect;
    struct sig_realm *realm; /* NULL until the dialect picks one */
    char *id;                /* registered peer id, NULL before join */
    char *id_json;           /* the id as a JSON string, quotes included */
    char *from_member;       /* ,"from":<id_json> for appending */
    char *token;             /* PeerJS: the token that owns id */
    char *sub;               /* signaling.auth=jwt: the only id allowed */
    uint64_t last_seen_ms;   /* PeerJS: last HEARTBEAT (or any message) */
    uint32_t gen;            /* remote: snapshot generation last seen */
    void *dd;                /* dialect data (y-webrtc topics, mailbox id) */
    void *ext;               /* port clients: the embedding role's data */
    bool hex;                /* the id is hex: key holds its value */
    uint8_t key[64];         /* big-endian, right-aligned, for XOR distance */
    UT_hash_handle hh;       /* in realm->peers while id is set */
    TAILQ_ENTRY(sig_client) by_inst; /* remote: in inst->peers */
};

TAILQ_HEAD(sig_client_list, sig_client);

/* A message waiting for an absent peer. */
struct sig_held {
    struct sig_box *box;
    char *from; /* sender id, told if the message expires */
    char *json; /* the message as it will be delivered */
    size_t len;
    const char *type; /* static string: the relay type */
    uint64_t expires_ms;
    TAILQ_ENTRY(sig_held) in_box;
    TAILQ_ENTRY(sig_held) by_expiry;
};

TAILQ_HEAD(sig_held_list, sig_held);

/* The mailbox of one absent id in one realm. */
struct sig_box {
    struct sig_realm *realm;
    char *target;
    unsigned n;
    struct sig_held_list held;
    UT_hash_handle hh;
};

struct sig_realm {
    enum sig_realm_kind kind;
    char *name;                 /* room name, or the PeerJS key */
    char *hkey;                 /* kind char + name: the s->realms key */
    struct sig_client *peers;   /* registered, by id (local and remote) */
    struct sig_box *boxes;      /* offline mailboxes, by target id */
    struct sig_client **sorted; /* registered peers with hex ids, by value */
    size_t nsorted, cap;
    unsigned npeers;
    unsigned nclients; /* local connections in the realm, joined or not */
    UT_hash_handle hh;
};

struct sig_stats {
    int64_t *peers;
    uint64_t *joins;
    uint64_t *relayed_mesh, *relayed_peerjs, *relayed_yws, *relayed_mailbox;
    uint64_t *queued;
    uint64_t *expired;
    uint64_t *undeliverable;
};

struct sig_cluster;

struct sig {
    struct pm_server *srv;
    bool stopping; /* draining: departures are not announced */
    const struct sig_conf *conf;
    struct sig_realm *realms;       /* by hkey */
    struct sig_held_list by_expiry; /* every held message, by expiry */
    struct event *expiry_timer;
    struct sig_stats stats;
    struct sig_cluster *cluster; /* NULL: embedded mode */
    struct sig_yws *yws;         /* signaling_yws.c */
    struct sig_peerjs *peerjs;   /* signaling_peerjs.c */
    struct sig_mbx *mbx;         /* signaling_mailbox.c */
};

/* Here (a WebSocket or a port), not a peer of another instance. */
static inline bool
sig_client_local(const struct sig_client *c)
{
    return c->inst == NULL;
}

/* signaling_realm.c: realms, the peer registry, nearest-peer selection */
struct sig_realm *sig_realm_get(struct sig *s, enum sig_realm_kind kind,
                                const char *name);
/* Free the realm if nothing refers to it any more. */
void sig_realm_release(struct sig *s, struct sig_realm *r);
/* The peer registered as id (local or remote), or NULL. */
struct sig_client *sig_realm_find(struct sig_realm *r, const char *id);
/*
 * Register c as id in c->realm (id copied). For a local c in cluster mode
 * the other instances are told (and a holder of id there is displaced);
 * a port client is reported to its port (so a loader registers known
 * peers before it sets their port).
 */
void sig_realm_add(struct sig *s, struct sig_client *c, const char *id);
/* Unregister c (no-op before add); tells the cluster for a local c, the
 * port for a port client. */
void sig_realm_remove(struct sig *s, struct sig_client *c);
/*
 * Up to k registered peers of the realm nearest to id (XOR distance of hex
 * ids, nearest first; ids that are not hex come after, in string order),
 * excluding self. out has room for k; returns how many were written.
 */
size_t sig_realm_nearest(struct sig_realm *r, const char *id,
                         const struct sig_client *self, size_t k,
                         struct sig_client **out);

/* signaling_offline.c: the bounded, expiring offline mailbox */
/*
 * Hold json (copied) for target in r, for ttl_ms; type must be a string
 * literal (it is kept by pointer). Returns PM_OK, or
 * PM_ELIMIT when the mailbox is off or full (the caller tells the sender).
 */
int sig_offline_hold(struct sig *s, struct sig_realm *r, const char *target,
                     const char *from, const char *type, const char *json,
                     size_t len, uint64_t ttl_ms);
/* Route and drop everything held for id in r, in order (id just came). */
void sig_offline_deliver(struct sig *s, struct sig_realm *r, const char *id);
void sig_offline_start(struct sig *s);
void sig_offline_free_all(struct sig *s);

/*
 * signaling_relay.c: routing an addressed message. sig_route sends the
 * pieces (one message) to the peer registered as to in r: to its socket,
 * or through the cluster to the instance that holds it. If to is absent
 * it is held in the offline mailbox (LEAVE and EXPIRE of PeerJS are not)
 * and the sender is told when that fails: p2pmesh "error", PeerJS
 * "EXPIRE". Returns PM_OK when sent or held.
 */
int sig_route(struct sig *s, struct sig_realm *r, const char *from,
              const char *to, const char *type, const struct iovec *iov, int n);
/* Tell sender from (here or on another instance) that its type message
 * to to was not delivered: p2pmesh error text, or PeerJS EXPIRE. */
void sig_undeliverable(struct sig *s, struct sig_realm *r, const char *from,
                       const char *to, const char *type);
/* Send one message to a local client (its socket or port); counted as
 * relayed. */
void sig_send_local(struct sig *s, struct sig_client *c,
                    const struct iovec *iov, int n);
/* Send to a local client: pieces, one JSON value, or close it. */
int sig_client_send(struct sig_client *c, const struct iovec *iov, int n);
void sig_client_send_json(struct sig_client *c, const struct cJSON *o);
void sig_client_close(struct sig_client *c, const char *reason);
/* p2pmesh relay: forward msg (parsed from data[0..len), still owned by
 * the caller) to peer to with "from" set to c's id. */
void sig_relay(struct sig *s, struct sig_client *c, struct cJSON *msg,
               const char *data, size_t len, const char *type, const char *to);
/* Where a member's value lies in a JSON text: [start, end), end 0 if
 * absent. */
struct sig_span {
    size_t start, end;
};
/*
 * Scan the top level of a JSON object (already accepted by cJSON) for the
 * members named in keys (NULL-terminated), filling spans (one per key)
 * and *close (the index of the final '}'). False when splicing into the
 * raw text would be unsafe: an escaped key, or a listed key twice (a
 * parser and a splice could disagree on which one counts).
 */
bool sig_json_scan(const char *data, size_t len, const char *const *keys,
                   struct sig_span *spans, size_t *close);
/* Send {"type":"error","message":text} to c. */
void sig_send_error(struct sig_client *c, const char *text);
/* The undeliverable text for a relay type to target. */
void sig_not_found_text(char *out, size_t len, const char *target,
                        const char *type);

/* signaling_mesh.c: the p2pmesh dialect */
/* A message of a p2pmesh connection; type already extracted. */
void sig_mesh_message(struct sig *s, struct sig_client *c, struct cJSON *msg,
                      const char *type, const char *data, size_t len);
void sig_mesh_departed(struct sig *s, struct sig_client *c);
/* The static copy of type if it is a relayed p2pmesh type, else NULL. */
const char *sig_mesh_relay_type(const char *type);
/* A peer registered on another instance: tell the nearest local peers. */
void sig_mesh_remote_joined(struct sig *s, struct sig_client *c);
void sig_mesh_remote_left(struct sig *s, struct sig_realm *r, const char *id);
/* A local holder of an id another instance took: error, close. */
void sig_mesh_displaced(struct sig *s, struct sig_client *c);

/* signaling_yws.c: the y-webrtc dialect (topics, publish fan-out) */
void sig_yws_init(struct sig *s);
void sig_yws_free(struct sig *s);
/* One message of a y-webrtc connection (subscribe, unsubscribe, publish,
 * ping); msg is parsed, type its "type". */
void sig_yws_message(struct sig *s, struct sig_client *c, struct cJSON *msg,
                     const char *type, const char *data, size_t len);
void sig_yws_departed(struct sig *s, struct sig_client *c);
/* A publish on topic from another instance (msg is what it received). */
void sig_yws_remote(struct sig *s, const char *topic, const char *msg,
                    size_t len);

/* signaling_peerjs.c: the PeerJS dialect */
void sig_peerjs_init(struct sig *s);
void sig_peerjs_free(struct sig *s);
/* GET {path}, {path}{key}/id, {path}{key}/peers; PM_ENOTFOUND if not. */
int sig_peerjs_http(struct sig *s, struct pm_conn *conn,
                    const struct pm_http_request *req);
/* The WebSocket path {path}peerjs (or /peerjs)? */
bool sig_peerjs_is_ws(const struct sig *s, const struct pm_http_request *req);
/* Take key, id and token from the query (c->dialect is SIG_PEERJS). */
void sig_peerjs_upgrade(struct sig *s, struct sig_client *c,
                        const struct pm_http_request *req);
/* The 101 is queued: run the handshake rules (OPEN, ERROR, ID-TAKEN). */
void sig_peerjs_open(struct sig *s, struct sig_client *c);
void sig_peerjs_message(struct sig *s, struct sig_client *c, const char *data,
                        size_t len);
void sig_peerjs_departed(struct sig *s, struct sig_client *c);
/* A local holder of an id another instance took with the same token. */
void sig_peerjs_displaced(struct sig *s, struct sig_client *c);

/* signaling_mailbox.c: the blind-rendezvous REST API and /ws/{id} push */
void sig_mailbox_init(struct sig *s);
void sig_mailbox_free(struct sig *s);
/* POST /register, /heartbeat, /signal, /signal/fetch, /connection/... and
 * GET / (when not PeerJS's); PM_ENOTFOUND if not a mailbox route. May
 * answer later (PM_EAGAIN, see pm_role.h). */
int sig_mailbox_http(struct sig *s, struct pm_conn *conn,
                     const struct pm_http_request *req, const uint8_t *body,
                     size_t len);
bool sig_mailbox_is_ws(const struct sig *s, const struct pm_http_request *req);
/* Accept or refuse (*status) a /ws/{mailbox_id} upgrade. */
int sig_mailbox_upgrade(struct sig *s, struct sig_client *c,
                        const struct pm_http_request *req, int *status);
void sig_mailbox_departed(struct sig *s, struct sig_client *c);
/* A push for mailbox id from another instance. */
void sig_mailbox_remote(struct sig *s, const char *id, const char *msg,
                        size_t len);

/* signaling_auth.c: signaling.auth=jwt and GET /ice */
/*
 * Check the request's credentials (JWT in ?token=, ?jwt=, Authorization:
 * Bearer or Sec-WebSocket-Protocol). PM_OK with *sub the allowed id
 * (malloc'd; NULL with auth none), or an error with *status (401).
 */
int sig_auth_check(struct sig *s, struct pm_conn *conn,
                   const struct pm_http_request *req, char **sub, int *status);
/* Where a request's token may be (each NULL when absent). */
struct sig_auth_src {
    const char *query;         /* ?token= (or ?jwt=), decoded, NUL-ended */
    const char *authorization; /* Authorization header value */
    size_t authorization_len;
    const char *protocols; /* Sec-WebSocket-Protocol value (upgrades) */
    size_t protocols_len;
};
/*
 * Verify the first token of src with HS256 key secret. PM_OK with *sub
 * (malloc'd), *exp (0: none) and, when the token came as a subprotocol,
 * the offered value to echo in [*echo, +*echo_len) (else *echo NULL); or
 * PM_EINVAL with the reason in err (never quoting the token).
 */
int sig_auth_verify(const char *secret, const struct sig_auth_src *src,
                    char **sub, int64_t *exp, const char **echo,
                    size_t *echo_len, char *err, size_t errlen);
/* GET /ice; PM_ENOTFOUND for other paths. */
int sig_ice_http(struct sig *s, struct pm_conn *conn,
                 const struct pm_http_request *req);
/* The role's validate hook: the ICE keys (URL schemes; TURN secret and
 * URLs go together). */
int sig_ice_validate(const void *conf, char *err, size_t errlen);

/*
 * signaling_cluster.c: cluster mode. Every call is a no-op (or returns
 * PM_EUNAVAIL / NULL) in embedded mode.
 */
enum sig_chan {
    SIG_CHAN_TOPIC,  /* y-webrtc topic fan-out */
    SIG_CHAN_MAILBOX /* mailbox dialect push */
};
int sig_cluster_new(struct sig *s, char *err, size_t errlen);
void sig_cluster_free(struct sig *s);
bool sig_cluster_enabled(const struct sig *s);
bool sig_cluster_up(const struct sig *s);
/* The command connection for dialect state kept in Redis, or NULL. */
struct pm_redis *sig_cluster_redis(struct sig *s);
/* "{prefix}:{a}:{b}" (malloc'd). */
char *sig_cluster_key(const struct sig *s, const char *a, const char *b);
/* Interest in (kind, name): while held, broadcasts from other instances
 * arrive (sig_yws_remote, sig_mailbox_remote). Counted. */
void sig_cluster_watch(struct sig *s, enum sig_chan kind, const char *name);
void sig_cluster_unwatch(struct sig *s, enum sig_chan kind, const char *name);
/* Send msg to the other instances watching (kind, name). */
int sig_cluster_broadcast(struct sig *s, enum sig_chan kind, const char *name,
                          const char *msg, size_t len);
/* Registry changes of local peers (called by signaling_realm.c). */
void sig_cluster_joined(struct sig *s, struct sig_client *c);
void sig_cluster_left(struct sig *s, struct sig_client *c);
/* A message for a remote peer; PM_EUNAVAIL if Redis is down. */
int sig_cluster_relay(struct sig *s, struct sig_client *target,
                      const char *from, const char *type,
                      const struct iovec *iov, int n);
/* Unregister and free a remote entry (a local join displaced it). */
void sig_cluster_forget(struct sig *s, struct sig_client *remote);

/*
 * One message of the cluster's events or instance channel as another
 * instance wrote it: a type letter, then fields of "<decimal length>:"
 * and that many bytes. Every message starts with the sender's instance
 * id; then
 *   H  (heartbeat), S  (asks for our snapshot): nothing more
 *   J  kind, realm, id, token      a peer joined there
 *   L  kind, realm, id             a peer left
 *   R  kind, realm, to (in id), from, type, hop, sent (µs), payload
 *   Y  mark ("first" or "more"), then entries of kind, realm, id,
 *      token, ended by the field "end": a snapshot chunk
 * sig_cluster_decode: false when len is 0 or the instance id is not a
 * string of at most SIG_INST_LEN bytes (the message is then ignored);
 * else true with type and inst, and ok when the fields of J, L or R all
 * fit (each a string without NUL that fits its buffer; R: kind m or p;
 * the R payload may hold any byte and points into msg), or the Y mark
 * was read (first: it was "first"; the entries are left for
 * sig_cluster_snapshot_next). kind is '\0' for an empty kind field.
 * sig_cluster_snapshot_next reads the next Y entry into kind, realm, id
 * and token: 1, or 0 at "end", or -1 when the rest is malformed (what
 * was read until then stands, but the chunk is not complete).
 */
#define SIG_INST_LEN 16
struct sig_cluster_msg {
    char type;
    char inst[SIG_INST_LEN + 1];
    bool ok;
    char kind;
    char realm[SIG_MAX_REALM + 1], id[SIG_MAX_ID + 1], token[256];
    char from[SIG_MAX_ID + 1], rtype[64], hop[4], sent[24];
    const char *payload;
    size_t len;
    bool first;
    const char *rest; /* Y: the entries not read yet */
    size_t nrest;
};
bool sig_cluster_decode(const char *msg, size_t len, struct sig_cluster_msg *m);
int sig_cluster_snapshot_next(struct sig_cluster_msg *m);

#endif
