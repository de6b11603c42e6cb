/*
 * signaling: internal interface of the signaling role (not for other
 * roles). One process-wide struct sig holds the realms; each realm holds
 * its joined peers (hashed by id) and the offline mailboxes of ids not
 * connected. A sig_client is the role's data on one WebSocket connection.
 */
#ifndef SIGNALING_H
#define SIGNALING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include <uthash.h>

struct cJSON;
struct event;
struct pm_conn;
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
};

struct sig_realm;

struct sig_client {
    struct pm_conn *conn;
    struct sig_realm *realm;
    char *id;          /* registered peer id, NULL before join */
    char *id_json;     /* the id as a JSON string, quotes included */
    char *from_member; /* ,"from":<id_json> for appending */
    bool hex;          /* the id is hex: key holds its value */
    uint8_t key[64];   /* big-endian, right-aligned, for XOR distance */
    UT_hash_handle hh; /* in realm->peers while id is set */
};

/* A message waiting for an absent peer. */
struct sig_held {
    struct sig_box *box;
    char *from; /* sender id, told if the message expires */
    char *json; /* the message as it will be delivered */
    size_t len;
    bool batched; /* wording of the undeliverable error */
    const char *type;
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
    char *name;
    struct sig_client *peers;   /* joined, by id */
    struct sig_box *boxes;      /* offline mailboxes, by target id */
    struct sig_client **sorted; /* joined peers with hex ids, by value */
    size_t nsorted, cap;
    unsigned npeers;
    unsigned nclients; /* connections in the realm, joined or not */
    UT_hash_handle hh;
};

struct sig_stats {
    int64_t *peers;
    uint64_t *joins;
    uint64_t *relayed;
    uint64_t *queued;
    uint64_t *expired;
    uint64_t *undeliverable;
};

struct sig {
    struct pm_server *srv;
    bool stopping; /* draining: departures are not announced */
    const struct sig_conf *conf;
    struct sig_realm *realms;
    struct sig_held_list by_expiry; /* every held message, oldest first */
    struct event *expiry_timer;
    struct sig_stats stats;
};

/* signaling_realm.c: realms, the peer registry, nearest-peer selection */
struct sig_realm *sig_realm_get(struct sig *s, const char *name);
/* Free the realm if no client and no mailbox refers to it. */
void sig_realm_release(struct sig *s, struct sig_realm *r);
struct sig_client *sig_realm_find(struct sig_realm *r, const char *id);
void sig_realm_add(struct sig *s, struct sig_client *c, const char *id);
void sig_realm_remove(struct sig *s, struct sig_client *c);
/*
 * Up to k joined peers of the realm nearest to id (XOR distance of hex
 * ids, nearest first; ids that are not hex come after, in string order),
 * excluding self. out has room for k; returns how many were written.
 */
size_t sig_realm_nearest(struct sig_realm *r, const char *id,
                         const struct sig_client *self, size_t k,
                         struct sig_client **out);

/* signaling_offline.c: the bounded, expiring offline mailbox */
/*
 * Hold json (copied) for target. Returns PM_OK, or PM_ELIMIT when the
 * mailbox is off or full (the caller tells the sender).
 */
int sig_offline_hold(struct sig *s, struct sig_realm *r, const char *target,
                     const char *from, const char *type, bool batched,
                     const char *json, size_t len);
/* Deliver and drop everything held for c's id, in order. */
void sig_offline_deliver(struct sig *s, struct sig_client *c);
void sig_offline_start(struct sig *s);
void sig_offline_free_all(struct sig *s);

/* signaling_mesh.c: the p2pmesh dialect */
void sig_mesh_message(struct sig *s, struct sig_client *c, const char *data,
                      size_t len);
void sig_mesh_departed(struct sig *s, struct sig_client *c);
/*
 * signaling_relay.c: forward msg (parsed from data[0..len), which the
 * caller still owns) to peer to, with "from" set to c's id; hold it if to
 * is absent, or tell c it cannot be delivered.
 */
void sig_relay(struct sig *s, struct sig_client *c, struct cJSON *msg,
               const char *data, size_t len, const char *type, const char *to);
/* Send {"type":"error","message":text} to c. */
void sig_send_error(struct sig_client *c, const char *text);
/* The undeliverable text for a relay type to target. */
void sig_not_found_text(char *out, size_t len, const char *target,
                        const char *type);

#endif
