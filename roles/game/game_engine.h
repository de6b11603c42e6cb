/*
 * game_engine: the rules of Snake as a deterministic state machine (see
 * docs/game.md "Rules"). No sockets, no clocks, no global state: a game
 * is advanced one tick at a time by game_step, every random choice comes
 * from the game's own seeded generator, and the same seed with the same
 * calls gives the same games on every machine. What happened during a
 * call is left in g->events for the caller to publish.
 *
 * Ownership: game_new/game_restore return a game the caller frees with
 * game_free; strings passed in are copied.
 */
#ifndef GAME_ENGINE_H
#define GAME_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GAME_MAX_SNAKES 8
#define GAME_MIN_SIDE 10
#define GAME_MAX_SIDE 100
#define GAME_START_LEN 4
#define GAME_TURN_QUEUE 3 /* turns queued per snake; one applied per tick */
#define GAME_USER_MAX 64  /* bytes of a user id */
#define GAME_MAX_FOOD 64

enum game_dir { GAME_UP = 0, GAME_RIGHT, GAME_DOWN, GAME_LEFT };
enum game_status { GAME_WAITING = 0, GAME_RUNNING, GAME_ENDED };
enum game_death {
    GAME_DEATH_BOUNDS = 0, /* head left the grid */
    GAME_DEATH_BODY,       /* head on another snake's body */
    GAME_DEATH_SELF,       /* head on its own body */
    GAME_DEATH_HEAD_ON     /* two heads on one cell: both die */
};

struct game_settings {
    int width, height;   /* GAME_MIN_SIDE..GAME_MAX_SIDE */
    int tick_ms;         /* informational (the caller's clock), 20..2000 */
    int food;            /* food kept on the board with one player */
    int food_per_player; /* added per player beyond the first */
    int max_players;     /* 1..GAME_MAX_SNAKES */
};

struct game_point {
    int16_t x, y;
};

struct game_snake {
    int id; /* index in g->snakes, 0-based */
    char user_id[GAME_USER_MAX + 1];
    struct game_point *body; /* head first, len cells (owned) */
    int len, cap;
    enum game_dir dir; /* direction of the last move */
    enum game_dir turns[GAME_TURN_QUEUE];
    int nturns;
    int grow; /* cells still to grow (tail stays) */
    bool alive;
    int score;        /* food eaten (= length - start length) */
    int64_t last_cmd; /* highest command seq accepted, or -1 */
};

enum game_event_kind {
    GAME_EV_TURNED = 0,   /* snake, dir: the turn used for this tick's move */
    GAME_EV_MOVED,        /* every live snake moved one cell */
    GAME_EV_FOOD_EATEN,   /* snake, pos */
    GAME_EV_DIED,         /* snake, cause, other (killer/other head or -1) */
    GAME_EV_FOOD_SPAWNED, /* pos */
    GAME_EV_STATUS,       /* status */
    GAME_EV_ENDED         /* winner (snake id or -1) */
};

struct game_event {
    enum game_event_kind kind;
    int snake;
    enum game_dir dir;
    struct game_point pos;
    enum game_death cause;
    int other;
    enum game_status status;
    int winner;
};

struct game {
    struct game_settings set;
    enum game_status status;
    uint64_t tick;    /* ticks stepped since the start */
    uint64_t rng;     /* generator state (splitmix64) */
    bool multiplayer; /* more than one snake when it started */
    int winner;       /* snake id, or -1 (none yet, draw, solo) */
    struct game_snake snakes[GAME_MAX_SNAKES];
    int nsnakes;
    struct game_point food[GAME_MAX_FOOD];
    int nfood;
    /* What the last game_start/game_step did, in order (owned). */
    struct game_event *events;
    int nevents, events_cap;
};

/*
 * Check settings: PM_OK, or PM_EINVAL with the reason (which field, what
 * range) in err.
 */
int game_settings_check(const struct game_settings *s, char *err,
                        size_t errlen);
/* A waiting game with no snakes; s must pass game_settings_check. */
struct game *game_new(const struct game_settings *s, uint64_t seed);
void game_free(struct game *g);
/*
 * Add a player's snake at the next spread-out start slot (waiting games
 * only). Returns the snake id, PM_ECONFLICT if user_id already has one,
 * PM_ELIMIT when the game is full (set.max_players), PM_EINVAL when not
 * waiting or when user_id is empty or longer than GAME_USER_MAX bytes.
 * Slot i lies in a row of its own (eight rows spread over the height):
 * slots 0 and 1 in the middle facing each other from the left and right
 * thirds, then top and bottom, then between; the body extends straight
 * behind the head, with at least 3 free cells ahead of it.
 */
int game_add_player(struct game *g, const char *user_id);
/* The snake id of user_id, or -1. */
int game_snake_of(const struct game *g, const char *user_id);
/*
 * Start a waiting game with at least one snake: food is laid out and the
 * status becomes running (events: FOOD_SPAWNED..., STATUS).
 */
int game_start(struct game *g);
/*
 * Queue a turn for a live snake of a running game. seq is the client's
 * command number (any seq above -1 is new to a fresh snake): a seq at or
 * below the snake's last accepted one is a resend and returns
 * PM_ECONFLICT without effect. A reversal or a repeat of the direction
 * the snake will already have (after its queued turns) is accepted (seq
 * recorded) but queues nothing. PM_ELIMIT when the queue is full (seq
 * not recorded, so the client may resend it), PM_EINVAL for a dead
 * snake, a bad id or direction, or a game that is not running.
 */
int game_turn(struct game *g, int snake, enum game_dir dir, int64_t seq);
/*
 * Advance one tick (running games only; otherwise g->events is just
 * emptied): tick + 1; apply at most one queued turn per live snake
 * (TURNED, in snake id order); move every live snake (MOVED); judge
 * collisions against the moved bodies of the snakes alive at the start
 * of the tick, in the order bounds, head-on, other body, own body (DIED
 * in id order; a dead snake is rolled back to its body before the move,
 * keeps the direction it turned to, loses its queued turns and stops
 * being an obstacle); survivors eat (FOOD_EATEN); food is refilled on
 * random free cells (FOOD_SPAWNED); the game ends when at most one
 * snake of a multiplayer game, or the snake of a solo game, is left
 * alive (STATUS, ENDED). Events of the tick replace g->events.
 */
void game_step(struct game *g);
/* Food the board keeps for the game's player count. */
int game_food_target(const struct game *g);
/*
 * The state fingerprint sent as TickHash, which the web client
 * reproduces: 32-bit FNV-1a (offset basis 2166136261, prime 16777619)
 * over a sequence of unsigned 32-bit integers, each fed as its 4 bytes
 * little-endian (low byte first). The sequence: tick (low 32 bits); then
 * for each live snake in id order: id, length, and x, y of each body
 * cell from the head; then the food count and x, y of each food in
 * board order (a spawn appends, eating removes keeping the others'
 * order).
 */
uint32_t game_hash(const struct game *g);

const char *game_dir_name(enum game_dir d);
/* Parse "Up" "Down" "Left" "Right": PM_OK or PM_EINVAL. */
int game_dir_parse(const char *s, enum game_dir *out);
const char *game_status_name(enum game_status s);
const char *game_death_name(enum game_death c);

#endif
