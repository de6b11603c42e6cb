/*
 * game: the game role's shared state and the functions its modules call
 * on each other (docs/game.md is what users see).
 *
 *   game_role.c     config keys, lifecycle, health/metrics, HTTP routes
 *   game_engine.c   the rules (deterministic, no I/O)
 *   game_json.c     state, events and checkpoints as JSON
 *   game_auth.c     guest tokens and token checks
 *   game_session.c  the WebSocket protocol of one player or spectator
 *   game_fsm.c      the replicated cluster state (members, games, owners,
 *                   epochs, queues, checkpoints) and what applying an
 *                   entry means on this node
 *   game_ctl.c      proposing entries: applied at once on a single node,
 *                   through raft (forwarded to the leader) in a cluster
 *   game_match.c    matchmaking (run by the leader)
 *   game_room.c     games this node owns: ticking, fan-out, checkpoints
 *   game_watch.c    which local sessions watch which game; delivery
 *   game_peer.c     the peer link between nodes (commands and events)
 *   game_cluster.c  raft membership, failover, hand-off on SIGTERM
 *   game_discovery.c  the PostgreSQL servers table
 *   web/            the web client, embedded by roles/embed_web.sh
 *
 * Everything runs on the loop thread.
 */
#ifndef GAME_H
#define GAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uthash.h>

#include "game_engine.h"

struct cJSON;
struct event;
struct pm_conn;
struct pm_db;
struct pm_histogram;
struct pm_raft;
struct pm_http_request;
struct pm_server;
struct game_peer;

#define GAME_PROTOCOL_VERSION 1
#define GAME_NAME_MAX 20
#define GAME_CODE_LEN 6
#define GAME_AUTH_TIMEOUT_MS 10000
#define GAME_ADDR_MAX 80
#define GAME_RESULTS_KEPT 100

enum game_mode {
    GAME_MODE_SOLO = 0,
    GAME_MODE_DUEL,
    GAME_MODE_FFA,
    GAME_MODE_CUSTOM,
    GAME_MODES
};

struct game_conf {
    int64_t width, height;
    uint64_t tick;
    int64_t food, food_per_player;
    int64_t max_players;
    uint64_t start_delay;
    uint64_t ffa_wait;
    uint64_t token_ttl;
    int64_t max_games;
    char *cluster; /* auto | on | off */
    int64_t raft_port;
    int64_t peer_port;
    char *advertise_addr;
    char *peers;
    char *data_dir;
    uint64_t dead_after;
    uint64_t failover_after;
    uint64_t checkpoint_interval;
    uint64_t heartbeat;
    uint64_t election_timeout;
    int64_t voters;
    char *ecs_metadata_uri;
};

/* ---- replicated state (game_fsm.c) -------------------------------------- */

struct fsm_member {
    uint64_t id;
    char raft_addr[GAME_ADDR_MAX];
    char peer_addr[GAME_ADDR_MAX];
    bool draining;
    UT_hash_handle hh;
};

enum fsm_game_status { FSM_WAITING = 0, FSM_RUNNING, FSM_ENDED };

struct fsm_game {
    uint64_t id;
    enum game_mode mode;
    struct game_settings set;
    uint64_t seed;
    char code[GAME_CODE_LEN + 1]; /* custom games */
    char users[GAME_MAX_SNAKES][GAME_USER_MAX + 1];
    int nusers;
    uint64_t owner;
    uint64_t epoch;
    enum fsm_game_status status;
    char *checkpoint; /* JSON text of the last checkpoint (owned) */
    uint64_t ckpt_tick;
    int winner;           /* when ended */
    uint64_t reassign_ms; /* local: the leader's last failover attempt */
    UT_hash_handle hh;
};

struct fsm_queued {
    char user[GAME_USER_MAX + 1];
    uint64_t node;
    uint64_t since_ms;
    struct fsm_queued *prev, *next; /* utlist in the mode's queue */
};

struct fsm_user { /* who is queued where (for O(1) moves) */
    char user[GAME_USER_MAX + 1];
    enum game_mode mode;
    struct fsm_queued *q;
    UT_hash_handle hh;
};

struct game_fsm {
    struct fsm_member *members;
    struct fsm_game *games;
    struct fsm_queued *queues[GAME_MODES];
    int queue_len[GAME_MODES];
    struct fsm_user *queued;
    uint64_t next_game_id;
    uint64_t applied;
};

/* ---- local state --------------------------------------------------------- */

struct game_session {
    uint64_t id;
    struct pm_conn *conn;
    struct game_node *node;
    bool authed;
    char user[GAME_USER_MAX + 1];
    char name[GAME_NAME_MAX + 1];
    uint64_t watching; /* game id, 0 = none */
    bool player;       /* watching as a player (commands allowed) */
    struct event *auth_timer;
    UT_hash_handle hh;                  /* by id */
    struct game_session *unext, *uprev; /* sessions of one user */
    struct game_session *wnext, *wprev; /* watchers of one game */
};

struct game_user_sessions {
    char user[GAME_USER_MAX + 1];
    struct game_session *list;
    UT_hash_handle hh;
};

struct game_watch {
    uint64_t game_id;
    struct game_session *list;
    int n;
    uint64_t subscribed_to; /* owner node we asked for events, 0 = none */
    UT_hash_handle hh;
};

struct game_room {
    uint64_t id;
    uint64_t epoch;
    struct game *g;
    struct game_node *node;
    uint64_t stream_seq;
    uint64_t started_ms; /* monotonic time of tick 0 (for pacing) */
    uint64_t ticks_done;
    struct event *timer;
    uint64_t last_ckpt_ms;
    uint64_t subs[16]; /* remote nodes subscribed to events */
    int nsubs;
    bool ended;
    UT_hash_handle hh;
};

struct game_node {
    struct pm_server *srv;
    const struct game_conf *conf;
    char *jwt_secret;
    size_t jwt_secret_len;
    bool cluster;
    uint64_t node_id;

    struct game_fsm fsm;
    struct game_room *rooms;
    struct game_session *sessions;
    struct game_user_sessions *users;
    struct game_watch *watches;
    uint64_t next_session;
    int64_t players; /* authenticated sessions */

    /* subscriptions that came before the room (node, game, expiry) */
    struct {
        uint64_t node, gid, until_ms;
    } early_subs[64];
    int nearly_subs;

    /* matchmaking (leader) */
    bool match_busy, match_kicked;
    struct event *match_timer;

    /* cluster */
    struct pm_raft *raft;
    struct game_peer *peer;
    struct pm_db *db;
    char advertise[GAME_ADDR_MAX - 8];
    char raft_addr[GAME_ADDR_MAX];
    char peer_addr[GAME_ADDR_MAX];
    bool draining;
    bool stopped;
    struct event *cluster_timer;
    struct event *db_timer;
    char **peers; /* peer-link addresses from discovery or game.peers */
    int npeers;
    bool discovered, static_first, static_tried, restart_bootstrap;
    bool raft_started, raft_closing, raft_closed;
    bool change_busy, transfer_busy;
    int handoffs_pending;
    uint64_t started_ms, join_asked_ms, leave_sent_ms, stop_ms;

    /* metrics */
    struct pm_histogram *commit; /* leader: raft_apply to committed */
    uint64_t games_started, games_ended, commands, resyncs, failovers;
    uint64_t ticks_late;
};

/* game_role.c */
const char *game_mode_name(enum game_mode m);
int game_mode_parse(const char *s, enum game_mode *out);
/* The settings matchmade games of mode m use. */
struct game_settings game_default_settings(const struct game_node *gn,
                                           enum game_mode m, int players);

/* game_auth.c */
int game_auth_guest(struct game_node *gn, const char *nickname, char **token,
                    struct cJSON **user, char *err, size_t errlen);
int game_auth_check(struct game_node *gn, const char *token, char *user,
                    size_t userlen, char *name, size_t namelen, char *err,
                    size_t errlen);
bool game_nickname_valid(const char *s);

/* game_session.c */
/* The size of an Error or AccessDenied reason (longer ones are cut). */
#define GAME_REASON_MAX 256

/* The client messages of docs/game.md. */
enum game_msg_kind {
    GAME_MSG_MALFORMED = 0, /* not JSON, or not a string/one-key object */
    GAME_MSG_UNKNOWN,       /* a tag this server does not know */
    GAME_MSG_AUTHENTICATE,
    GAME_MSG_PING,
    GAME_MSG_COMMAND,
    GAME_MSG_QUEUE,
    GAME_MSG_LEAVE_QUEUE,
    GAME_MSG_CREATE_CUSTOM,
    GAME_MSG_JOIN_CUSTOM,
    GAME_MSG_START_CUSTOM,
    GAME_MSG_JOIN_GAME,
    GAME_MSG_SPECTATE_GAME,
    GAME_MSG_LEAVE_GAME,
    GAME_MSG_RESYNC
};

/*
 * One client message, parsed and checked as far as that needs no session
 * or cluster state. error is "" when the message is well formed, else
 * the reason the server replies with: an AccessDenied reason for
 * Authenticate, an Error reason for every other kind (sent only once the
 * session is authenticated; MALFORMED's at once). The fields of the kind
 * are set when error is "":
 *   AUTHENTICATE  token (protocol_version was GAME_PROTOCOL_VERSION)
 *   PING          client_time: the number to echo, or NULL
 *   COMMAND       game_id > 0, seq >= 0, dir
 *   QUEUE         mode: solo, duel or ffa
 *   CREATE_CUSTOM settings: the defaults given, overridden by the body's,
 *                 and passing game_settings_check
 *   JOIN_CUSTOM   code (any string; looking it up is the caller's)
 *   JOIN_GAME, SPECTATE_GAME, RESYNC  game_id, -1 when missing or not an
 *                 integer (any value; the caller checks it)
 * token, code and client_time point into root (owned, freed by
 * game_msg_free).
 */
struct game_msg {
    enum game_msg_kind kind;
    char error[GAME_REASON_MAX];
    struct cJSON *root;
    const char *token;
    const char *code;
    const struct cJSON *client_time;
    enum game_mode mode;
    struct game_settings settings;
    int64_t game_id, seq;
    enum game_dir dir;
};

/*
 * Parse one WebSocket text message (len bytes, no NUL needed) into *m,
 * with custom the settings a CreateCustomGame starts from. PM_OK, or
 * PM_EINVAL with m->error set. Call game_msg_free(m) either way.
 */
int game_msg_parse(const uint8_t *data, size_t len,
                   const struct game_settings *custom, struct game_msg *m);
void game_msg_free(struct game_msg *m);
void game_session_open(struct game_node *gn, struct pm_conn *c);
void game_session_message(struct game_node *gn, struct pm_conn *c,
                          const uint8_t *data, size_t len);
void game_session_close(struct game_node *gn, struct pm_conn *c);
/* Send a JSON message (borrowed) to every session of user. */
void game_send_user(struct game_node *gn, const char *user,
                    const struct cJSON *msg);
void game_send_json(struct game_session *s, const struct cJSON *msg);
void game_send_raw(struct game_session *s, const char *msg, size_t len);
void game_session_error(struct game_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
struct game_session *game_session_find(struct game_node *gn, uint64_t id);
/* Every session: ServerShutdown (SIGTERM, before the core closes them). */
void game_sessions_shutdown(struct game_node *gn, unsigned grace_s);

/* game_watch.c */
void game_watch_add(struct game_node *gn, struct game_session *s, uint64_t gid,
                    bool player);
void game_watch_remove(struct game_session *s);
struct game_watch *game_watch_find(struct game_node *gn, uint64_t gid);
/* Deliver one serialised message to every local watcher of gid. */
void game_watch_deliver(struct game_node *gn, uint64_t gid, const char *msg,
                        size_t len);
/* The owner of a watched game changed or became known: (re)subscribe. */
void game_watch_resubscribe(struct game_node *gn, uint64_t gid);
/* Ask the owner for a Snapshot for session s (or all watchers when s is
 * NULL). */
void game_watch_snapshot(struct game_node *gn, uint64_t gid,
                         struct game_session *s);
/* The link to node came (back) up: renew subscriptions it serves. */
void game_watch_link_up(struct game_node *gn, uint64_t node);
/* The game is over: forget its watchers. */
void game_watch_drop(struct game_node *gn, uint64_t gid);

/* game_fsm.c */
void game_fsm_init(struct game_fsm *f);
void game_fsm_clear(struct game_fsm *f);
/* Apply one committed entry (JSON text) on this node. */
void game_fsm_apply(struct game_node *gn, const void *data, size_t len);
void *game_fsm_snapshot(struct game_node *gn, size_t *len);
int game_fsm_restore(struct game_node *gn, const void *data, size_t len);
struct fsm_game *game_fsm_game(struct game_node *gn, uint64_t id);
struct fsm_game *game_fsm_game_of_user(struct game_node *gn, const char *user);
struct fsm_game *game_fsm_game_by_code(struct game_node *gn, const char *code);
struct fsm_member *game_fsm_member(struct game_node *gn, uint64_t id);
int game_fsm_queue_position(struct game_node *gn, const char *user);
/* Running or waiting games owned by node. */
int game_fsm_games_owned(struct game_node *gn, uint64_t node);
/* The entry giving game id to owner with epoch (the caller proposes it). */
struct cJSON *game_fsm_assign_entry(uint64_t id, uint64_t owner,
                                    uint64_t epoch);

/* game_ctl.c: propose an entry (takes msg and frees it). */
int game_ctl_propose(struct game_node *gn, struct cJSON *msg);
bool game_ctl_is_leader(struct game_node *gn);
/* Leader: append an entry (copied) to the log, timing its commit. */
void game_ctl_append(struct game_node *gn, const void *data, size_t len);

/* game_match.c */
void game_match_kick(struct game_node *gn);
uint64_t game_match_pick_owner(struct game_node *gn, uint64_t preferred);
void game_match_init(struct game_node *gn);
void game_match_free(struct game_node *gn);

/* game_room.c */
struct game_room *game_room_find(struct game_node *gn, uint64_t id);
/* Start owning fg on this node (from its checkpoint when it has one). */
void game_room_open(struct game_node *gn, struct fsm_game *fg);
/* Stop owning the game (reassigned elsewhere, or shutting down). */
void game_room_close(struct game_node *gn, struct game_room *r);
void game_room_command(struct game_node *gn, struct game_room *r,
                       const char *user, int64_t seq, enum game_dir dir);
/* A Snapshot message for one client (malloc'd text). */
char *game_room_snapshot_msg(struct game_room *r, size_t *len);
void game_room_subscribe(struct game_node *gn, struct game_room *r,
                         uint64_t node);
/* A subscription for a game this node does not run yet (kept 10 s). */
void game_room_early_subscribe(struct game_node *gn, uint64_t node,
                               uint64_t gid);
/* The current state as a checkpoint entry for a hand-off to owner. */
struct cJSON *game_room_handoff(struct game_node *gn, struct game_room *r,
                                uint64_t owner);
void game_rooms_free(struct game_node *gn);

/* game_peer.c */
struct game_peer *game_peer_new(struct game_node *gn, char *err, size_t errlen);
void game_peer_free(struct game_peer *p);
/* Frames to one node (dropped while the link is down). */
void game_peer_command(struct game_node *gn, uint64_t node, uint64_t gid,
                       const char *user, int64_t seq, enum game_dir dir);
void game_peer_subscribe(struct game_node *gn, uint64_t node, uint64_t gid);
void game_peer_snapshot_req(struct game_node *gn, uint64_t node, uint64_t gid,
                            uint64_t session);
void game_peer_event(struct game_node *gn, uint64_t node, uint64_t gid,
                     uint64_t session, const char *msg, size_t len);
void game_peer_propose(struct game_node *gn, uint64_t node, const char *entry,
                       size_t len);
void game_peer_join(struct game_node *gn, const char *peer_addr);
void game_peer_leave(struct game_node *gn, uint64_t node);
/* Milliseconds the link to node has been down (0: up). */
uint64_t game_peer_down_ms(struct game_node *gn, uint64_t node);
void game_peer_sync(struct game_node *gn); /* members changed: links follow */

/* game_cluster.c */
int game_cluster_start(struct game_node *gn, char *err, size_t errlen);
void game_cluster_stop(struct game_node *gn);
bool game_cluster_busy(struct game_node *gn);
void game_cluster_free(struct game_node *gn);
/* A JOIN from a node that wants in (leader side). */
void game_cluster_join_request(struct game_node *gn, uint64_t id,
                               const char *raft_addr, const char *peer_addr);
void game_cluster_leave_request(struct game_node *gn, uint64_t id);
void game_cluster_health(struct game_node *gn, struct cJSON *obj);
/* Discovery's answer: the live peers' link addresses (n < 0: failed). */
void game_cluster_peers(struct game_node *gn, char **addrs, int n);

/* game_discovery.c */
int game_discovery_open(struct game_node *gn, char *err, size_t errlen);
void game_discovery_stop(struct game_node *gn);
void game_discovery_free(struct game_node *gn);
bool game_cluster_ready(struct game_node *gn);

#endif
