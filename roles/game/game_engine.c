/*
 * game_engine: the Snake rules as a deterministic state machine. Owns the
 * start slots, the turn queue, the tick (turn, move, collide, eat,
 * refill, end), the splitmix64 generator, the state hash and the names
 * of the enums. The JSON forms live in game_json.c.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "game_engine.h"
#include "pm_util.h"

#define FOOD_TRIES 32 /* random cells tried before scanning for a free one */

/* Steps of Up, Right, Down, Left (y grows downward). */
static const int step_x[] = {0, 1, 0, -1};
static const int step_y[] = {-1, 0, 1, 0};

/* What a move changed, to roll a dying snake back to its old body. */
struct undo {
    bool grew; /* the tail stayed (and grow was spent) */
    struct game_point tail;
};

static uint64_t
rng_next(struct game *g)
{
    uint64_t z = (g->rng += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static enum game_dir
reverse(enum game_dir d)
{
    return (enum game_dir)((d + 2) % 4);
}

static bool
same_cell(struct game_point a, struct game_point b)
{
    return a.x == b.x && a.y == b.y;
}

static bool
in_grid(const struct game *g, struct game_point p)
{
    return p.x >= 0 && p.y >= 0 && p.x < g->set.width && p.y < g->set.height;
}

static struct game_event *
event_push(struct game *g, enum game_event_kind kind)
{
    struct game_event *ev;

    if (g->nevents == g->events_cap) {
        g->events_cap = g->events_cap > 0 ? g->events_cap * 2 : 16;
        g->events = pm_xrealloc(g->events, g->events_cap * sizeof *g->events);
    }
    ev = &g->events[g->nevents++];
    memset(ev, 0, sizeof *ev);
    ev->kind = kind;
    ev->snake = -1;
    ev->other = -1;
    ev->winner = -1;
    return ev;
}

int
game_settings_check(const struct game_settings *s, char *err, size_t errlen)
{
    if (s->width < GAME_MIN_SIDE || s->width > GAME_MAX_SIDE)
        return pm_errf(err, errlen, PM_EINVAL, "width must be %d..%d",
                       GAME_MIN_SIDE, GAME_MAX_SIDE);
    if (s->height < GAME_MIN_SIDE || s->height > GAME_MAX_SIDE)
        return pm_errf(err, errlen, PM_EINVAL, "height must be %d..%d",
                       GAME_MIN_SIDE, GAME_MAX_SIDE);
    if (s->tick_ms < 20 || s->tick_ms > 2000)
        return pm_errf(err, errlen, PM_EINVAL, "tick_ms must be 20..2000");
    if (s->food < 1 || s->food > 32)
        return pm_errf(err, errlen, PM_EINVAL, "food must be 1..32");
    if (s->food_per_player < 0 || s->food_per_player > 8)
        return pm_errf(err, errlen, PM_EINVAL, "food_per_player must be 0..8");
    if (s->max_players < 1 || s->max_players > GAME_MAX_SNAKES)
        return pm_errf(err, errlen, PM_EINVAL, "max_players must be 1..%d",
                       GAME_MAX_SNAKES);
    return PM_OK;
}

struct game *
game_new(const struct game_settings *s, uint64_t seed)
{
    struct game *g;

    PM_ASSERT(game_settings_check(s, NULL, 0) == PM_OK);
    g = pm_xcalloc(1, sizeof *g);
    g->set = *s;
    g->status = GAME_WAITING;
    g->rng = seed;
    g->winner = -1;
    return g;
}

void
game_free(struct game *g)
{
    int i;

    if (g == NULL)
        return;
    for (i = 0; i < g->nsnakes; i++)
        free(g->snakes[i].body);
    free(g->events);
    free(g);
}

/*
 * Start slot i. Eight rows spread over the height (band k of 0..7 at
 * (2k+1)/16 of it, the lower four mirroring the upper four), one snake
 * per row, so that no two snakes overlap or stand in each other's way:
 * odd bands start in the left third heading Right, even bands in the
 * right third heading Left. Slots come in point-symmetric pairs: the two
 * middle rows facing each other (a duel), then top and bottom, then the
 * rows between.
 */
static const int slot_band[GAME_MAX_SNAKES] = {3, 4, 0, 7, 1, 6, 2, 5};

static void
snake_place(struct game_snake *sn, const struct game_settings *s, int slot)
{
    int band = slot_band[slot], k = band < 4 ? band : 7 - band;
    int x = s->width / 3, y = (2 * k + 1) * s->height / 16, i;

    if (band >= 4)
        y = s->height - 1 - y;
    sn->dir = band % 2 == 1 ? GAME_RIGHT : GAME_LEFT;
    if (sn->dir == GAME_LEFT)
        x = s->width - 1 - x;
    for (i = 0; i < GAME_START_LEN; i++) {
        sn->body[i].x = (int16_t)(x - i * step_x[sn->dir]);
        sn->body[i].y = (int16_t)(y - i * step_y[sn->dir]);
    }
    sn->len = GAME_START_LEN;
}

int
game_add_player(struct game *g, const char *user_id)
{
    struct game_snake *sn;

    if (g->status != GAME_WAITING || user_id == NULL || *user_id == '\0' ||
        strlen(user_id) > GAME_USER_MAX)
        return PM_EINVAL;
    if (game_snake_of(g, user_id) >= 0)
        return PM_ECONFLICT;
    if (g->nsnakes >= g->set.max_players)
        return PM_ELIMIT;
    sn = &g->snakes[g->nsnakes];
    memset(sn, 0, sizeof *sn);
    sn->id = g->nsnakes;
    pm_strlcpy(sn->user_id, user_id, sizeof sn->user_id);
    sn->cap = 2 * GAME_START_LEN;
    sn->body = pm_xcalloc(sn->cap, sizeof *sn->body);
    snake_place(sn, &g->set, sn->id);
    sn->alive = true;
    sn->last_cmd = -1;
    return g->nsnakes++;
}

int
game_snake_of(const struct game *g, const char *user_id)
{
    int i;

    for (i = 0; i < g->nsnakes; i++)
        if (strcmp(g->snakes[i].user_id, user_id) == 0)
            return i;
    return -1;
}

int
game_food_target(const struct game *g)
{
    int extra = g->nsnakes > 1 ? g->nsnakes - 1 : 0;
    int n = g->set.food + g->set.food_per_player * extra;

    return n < GAME_MAX_FOOD ? n : GAME_MAX_FOOD;
}

static void
mark(uint8_t *busy, int width, struct game_point p, int *nfree)
{
    uint8_t *c = &busy[p.y * width + p.x];

    if (!*c) {
        *c = 1;
        (*nfree)--;
    }
}

/*
 * Lay food on free cells (no live snake, no food) up to the target:
 * FOOD_TRIES random cells, then the first free cell from a random start.
 * Stops when the board is full.
 */
static void
refill_food(struct game *g)
{
    uint8_t busy[GAME_MAX_SIDE * GAME_MAX_SIDE];
    int w = g->set.width, n = w * g->set.height, nfree = n, target;
    int i, j, c;
    struct game_event *ev;

    target = game_food_target(g);
    if (g->nfood >= target)
        return;
    memset(busy, 0, (size_t)n);
    for (i = 0; i < g->nsnakes; i++)
        for (j = 0; g->snakes[i].alive && j < g->snakes[i].len; j++)
            mark(busy, w, g->snakes[i].body[j], &nfree);
    for (i = 0; i < g->nfood; i++)
        mark(busy, w, g->food[i], &nfree);
    while (g->nfood < target && nfree > 0) {
        c = -1;
        for (i = 0; i < FOOD_TRIES && c < 0; i++) {
            c = (int)(rng_next(g) % (uint64_t)n);
            if (busy[c])
                c = -1;
        }
        if (c < 0) {
            c = (int)(rng_next(g) % (uint64_t)n);
            while (busy[c])
                c = (c + 1) % n;
        }
        g->food[g->nfood].x = (int16_t)(c % w);
        g->food[g->nfood].y = (int16_t)(c / w);
        mark(busy, w, g->food[g->nfood], &nfree);
        ev = event_push(g, GAME_EV_FOOD_SPAWNED);
        ev->pos = g->food[g->nfood++];
    }
}

int
game_start(struct game *g)
{
    if (g->status != GAME_WAITING || g->nsnakes < 1)
        return PM_EINVAL;
    g->nevents = 0;
    g->multiplayer = g->nsnakes > 1;
    g->winner = -1;
    refill_food(g);
    g->status = GAME_RUNNING;
    event_push(g, GAME_EV_STATUS)->status = GAME_RUNNING;
    return PM_OK;
}

int
game_turn(struct game *g, int snake, enum game_dir dir, int64_t seq)
{
    struct game_snake *sn;
    enum game_dir next;

    if (g->status != GAME_RUNNING || snake < 0 || snake >= g->nsnakes ||
        !g->snakes[snake].alive || (unsigned)dir > GAME_LEFT)
        return PM_EINVAL;
    sn = &g->snakes[snake];
    if (seq <= sn->last_cmd)
        return PM_ECONFLICT;
    next = sn->nturns > 0 ? sn->turns[sn->nturns - 1] : sn->dir;
    if (dir != next && dir != reverse(next)) {
        if (sn->nturns == GAME_TURN_QUEUE)
            return PM_ELIMIT;
        sn->turns[sn->nturns++] = dir;
    }
    sn->last_cmd = seq;
    return PM_OK;
}

static void
apply_turns(struct game *g)
{
    struct game_snake *sn;
    struct game_event *ev;
    int i;

    for (i = 0; i < g->nsnakes; i++) {
        sn = &g->snakes[i];
        if (!sn->alive || sn->nturns == 0)
            continue;
        sn->dir = sn->turns[0];
        memmove(sn->turns, sn->turns + 1, --sn->nturns * sizeof *sn->turns);
        ev = event_push(g, GAME_EV_TURNED);
        ev->snake = i;
        ev->dir = sn->dir;
    }
}

static void
snake_move(struct game_snake *sn, struct undo *u)
{
    struct game_point head = sn->body[0];

    head.x = (int16_t)(head.x + step_x[sn->dir]);
    head.y = (int16_t)(head.y + step_y[sn->dir]);
    u->grew = sn->grow > 0;
    u->tail = sn->body[sn->len - 1];
    if (u->grew) {
        sn->grow--;
        if (sn->len == sn->cap) {
            sn->cap *= 2;
            sn->body = pm_xrealloc(sn->body, sn->cap * sizeof *sn->body);
        }
        sn->len++;
    }
    memmove(sn->body + 1, sn->body, (sn->len - 1) * sizeof *sn->body);
    sn->body[0] = head;
}

static void
snake_unmove(struct game_snake *sn, const struct undo *u)
{
    memmove(sn->body, sn->body + 1, (sn->len - 1) * sizeof *sn->body);
    if (u->grew) {
        sn->len--;
        sn->grow++;
    } else {
        sn->body[sn->len - 1] = u->tail;
    }
}

static bool
on_body(const struct game_snake *sn, struct game_point p)
{
    int i;

    for (i = 1; i < sn->len; i++)
        if (same_cell(sn->body[i], p))
            return true;
    return false;
}

/*
 * Does live snake i die after the move? Judged against every snake still
 * alive (all of them moved), in the order bounds, head-on, body, self;
 * *other is the lowest other snake involved, or -1.
 */
static bool
dies(const struct game *g, int i, enum game_death *cause, int *other)
{
    struct game_point h = g->snakes[i].body[0];
    int j;

    *other = -1;
    *cause = GAME_DEATH_BOUNDS;
    if (!in_grid(g, h))
        return true;
    *cause = GAME_DEATH_HEAD_ON;
    for (j = 0; j < g->nsnakes && *other < 0; j++)
        if (j != i && g->snakes[j].alive && same_cell(g->snakes[j].body[0], h))
            *other = j;
    if (*other >= 0)
        return true;
    *cause = GAME_DEATH_BODY;
    for (j = 0; j < g->nsnakes && *other < 0; j++)
        if (j != i && g->snakes[j].alive && on_body(&g->snakes[j], h))
            *other = j;
    if (*other >= 0)
        return true;
    *cause = GAME_DEATH_SELF;
    return on_body(&g->snakes[i], h);
}

static void
move_and_collide(struct game *g)
{
    struct undo undo[GAME_MAX_SNAKES];
    bool dead[GAME_MAX_SNAKES] = {false};
    enum game_death cause[GAME_MAX_SNAKES];
    int other[GAME_MAX_SNAKES], i;
    struct game_event *ev;

    for (i = 0; i < g->nsnakes; i++)
        if (g->snakes[i].alive)
            snake_move(&g->snakes[i], &undo[i]);
    event_push(g, GAME_EV_MOVED);
    for (i = 0; i < g->nsnakes; i++)
        dead[i] = g->snakes[i].alive && dies(g, i, &cause[i], &other[i]);
    for (i = 0; i < g->nsnakes; i++) {
        if (!dead[i])
            continue;
        g->snakes[i].alive = false;
        g->snakes[i].nturns = 0;
        snake_unmove(&g->snakes[i], &undo[i]);
        ev = event_push(g, GAME_EV_DIED);
        ev->snake = i;
        ev->cause = cause[i];
        ev->other = other[i];
    }
}

static void
eat(struct game *g)
{
    struct game_snake *sn;
    struct game_event *ev;
    int i, f;

    for (i = 0; i < g->nsnakes; i++) {
        sn = &g->snakes[i];
        for (f = 0; sn->alive && f < g->nfood; f++) {
            if (!same_cell(g->food[f], sn->body[0]))
                continue;
            sn->score++;
            sn->grow++;
            ev = event_push(g, GAME_EV_FOOD_EATEN);
            ev->snake = i;
            ev->pos = g->food[f];
            memmove(g->food + f, g->food + f + 1,
                    (g->nfood - f - 1) * sizeof *g->food);
            g->nfood--;
            break;
        }
    }
}

static void
check_end(struct game *g)
{
    int i, alive = 0, last = -1;

    for (i = 0; i < g->nsnakes; i++)
        if (g->snakes[i].alive) {
            alive++;
            last = i;
        }
    if (g->multiplayer ? alive > 1 : alive > 0)
        return;
    g->winner = g->multiplayer && alive == 1 ? last : -1;
    g->status = GAME_ENDED;
    event_push(g, GAME_EV_STATUS)->status = GAME_ENDED;
    event_push(g, GAME_EV_ENDED)->winner = g->winner;
}

void
game_step(struct game *g)
{
    g->nevents = 0;
    if (g->status != GAME_RUNNING)
        return;
    g->tick++;
    apply_turns(g);
    move_and_collide(g);
    eat(g);
    refill_food(g);
    check_end(g);
}

static uint32_t
fnv_u32(uint32_t h, uint32_t v)
{
    int i;

    for (i = 0; i < 4; i++) {
        h ^= (v >> (8 * i)) & 0xffu;
        h *= 16777619u;
    }
    return h;
}

uint32_t
game_hash(const struct game *g)
{
    const struct game_snake *sn;
    uint32_t h = 2166136261u;
    int i, j;

    h = fnv_u32(h, (uint32_t)g->tick);
    for (i = 0; i < g->nsnakes; i++) {
        sn = &g->snakes[i];
        if (!sn->alive)
            continue;
        h = fnv_u32(h, (uint32_t)sn->id);
        h = fnv_u32(h, (uint32_t)sn->len);
        for (j = 0; j < sn->len; j++) {
            h = fnv_u32(h, (uint32_t)sn->body[j].x);
            h = fnv_u32(h, (uint32_t)sn->body[j].y);
        }
    }
    h = fnv_u32(h, (uint32_t)g->nfood);
    for (i = 0; i < g->nfood; i++) {
        h = fnv_u32(h, (uint32_t)g->food[i].x);
        h = fnv_u32(h, (uint32_t)g->food[i].y);
    }
    return h;
}

static const char *const dir_names[] = {"Up", "Right", "Down", "Left"};
static const char *const status_names[] = {"waiting", "running", "ended"};
static const char *const death_names[] = {"OutOfBounds", "SnakeBody",
                                          "SelfCollision", "HeadToHead"};

const char *
game_dir_name(enum game_dir d)
{
    return (unsigned)d <= GAME_LEFT ? dir_names[d] : "?";
}

int
game_dir_parse(const char *s, enum game_dir *out)
{
    int d;

    for (d = GAME_UP; d <= GAME_LEFT; d++)
        if (strcmp(s, dir_names[d]) == 0) {
            *out = (enum game_dir)d;
            return PM_OK;
        }
    return PM_EINVAL;
}

const char *
game_status_name(enum game_status s)
{
    return (unsigned)s <= GAME_ENDED ? status_names[s] : "?";
}

const char *
game_death_name(enum game_death c)
{
    return (unsigned)c <= GAME_DEATH_HEAD_ON ? death_names[c] : "?";
}
