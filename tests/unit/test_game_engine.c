/*
 * Tests of the Snake engine and its JSON: settings, names, start slots
 * on every board size, movement, the turn queue, growth, every kind of
 * collision and its precedence, end conditions, food target and refill,
 * determinism with a seed, the state hash, the wire JSON, and checkpoints
 * (exact resume, malformed ones refused). Precise scenes are built from
 * hand-written checkpoints through game_restore.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "game_engine.h"
#include "game_json.h"
#include "pm_test.h"
#include "pm_util.h"

/* ---- helpers ------------------------------------------------------- */

static const struct game_settings defaults = {
    .width = 40,
    .height = 40,
    .tick_ms = 100,
    .food = 5,
    .food_per_player = 2,
    .max_players = 8,
};

/* One live snake of a checkpoint: id (a number), dir and body (JSON). */
#define SNAKE(id, dir, body)                                                   \
    "{\"id\":" #id ",\"user_id\":\"u" #id "\",\"body\":" body                  \
    ",\"dir\":\"" dir "\",\"turns\":[],\"grow\":0,\"alive\":true,"             \
    "\"score\":0,\"last_cmd\":-1}"

static struct game *
restore_text(const char *text)
{
    char err[PM_ERRMSG_SIZE] = "";
    cJSON *ck = cJSON_Parse(text);
    struct game *g;

    ck_assert_msg(ck != NULL, "bad test JSON: %s", text);
    g = game_restore(ck, err, sizeof err);
    cJSON_Delete(ck);
    ck_assert_msg(g != NULL, "restore refused: %s", err);
    return g;
}

/*
 * A running game on a w x h board with the snakes given (checkpoint JSON
 * objects, NULL after the last) and food (a JSON array of cells). The
 * food setting is the number of cells given, so that nothing spawns until
 * some is eaten.
 */
static struct game *__attribute__((sentinel))
scene(int w, int h, const char *food, ...)
{
    char snakes[8192] = "[", text[16384];
    cJSON *f = cJSON_Parse(food);
    int ns = 0, nf = cJSON_GetArraySize(f);
    const char *sn;
    va_list ap;

    cJSON_Delete(f);
    va_start(ap, food);
    while ((sn = va_arg(ap, const char *)) != NULL) {
        if (ns++ > 0)
            strcat(snakes, ",");
        strcat(snakes, sn);
    }
    va_end(ap);
    strcat(snakes, "]");
    snprintf(text, sizeof text,
             "{\"settings\":{\"width\":%d,\"height\":%d,\"tick_ms\":100,"
             "\"food\":%d,\"food_per_player\":0,\"max_players\":8},"
             "\"status\":\"running\",\"tick\":0,\"rng\":\"7\","
             "\"multiplayer\":%s,\"winner\":-1,\"snakes\":%s,\"food\":%s}",
             w, h, nf, ns > 1 ? "true" : "false", snakes, food);
    return restore_text(text);
}

/* A snake of a checkpoint with a straight body of len behind its head. */
static void
straight(char *buf, size_t n, int id, int x, int y, enum game_dir d, int len)
{
    static const int sx[] = {0, 1, 0, -1}, sy[] = {-1, 0, 1, 0};
    size_t o;
    int i;

    o = (size_t)snprintf(buf, n, "{\"id\":%d,\"user_id\":\"u%d\",\"body\":[",
                         id, id);
    for (i = 0; i < len; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s[%d,%d]", i ? "," : "",
                              x - i * sx[d], y - i * sy[d]);
    snprintf(buf + o, n - o,
             "],\"dir\":\"%s\",\"turns\":[],\"grow\":0,\"alive\":true,"
             "\"score\":0,\"last_cmd\":-1}",
             game_dir_name(d));
}

static struct game *
new_game(int players, uint64_t seed)
{
    struct game *g = game_new(&defaults, seed);
    char user[16];
    int i;

    for (i = 0; i < players; i++) {
        snprintf(user, sizeof user, "user%d", i);
        ck_assert_int_eq(game_add_player(g, user), i);
    }
    return g;
}

static int
count_events(const struct game *g, enum game_event_kind kind)
{
    int i, n = 0;

    for (i = 0; i < g->nevents; i++)
        n += g->events[i].kind == kind;
    return n;
}

/* The first event of kind, or NULL. */
static const struct game_event *
find_event(const struct game *g, enum game_event_kind kind)
{
    int i;

    for (i = 0; i < g->nevents; i++)
        if (g->events[i].kind == kind)
            return &g->events[i];
    return NULL;
}

static void
assert_cell(struct game_point p, int x, int y)
{
    ck_assert_msg(p.x == x && p.y == y, "cell (%d,%d), expected (%d,%d)", p.x,
                  p.y, x, y);
}

static char *
json_text(cJSON *j)
{
    char *s = cJSON_PrintUnformatted(j);

    cJSON_Delete(j);
    return s;
}

static void
assert_event_json(const struct game *g, const struct game_event *ev,
                  const char *want)
{
    char *s = json_text(game_event_json(g, ev));

    ck_assert_str_eq(s, want);
    free(s);
}

static bool
on_live_snake(const struct game *g, struct game_point p)
{
    int i, j;

    for (i = 0; i < g->nsnakes; i++)
        for (j = 0; g->snakes[i].alive && j < g->snakes[i].len; j++)
            if (g->snakes[i].body[j].x == p.x && g->snakes[i].body[j].y == p.y)
                return true;
    return false;
}

static uint32_t
xorshift(uint32_t *r)
{
    *r ^= *r << 13;
    *r ^= *r >> 17;
    *r ^= *r << 5;
    return *r;
}

/*
 * Turns of a simple bot, the same calls on every game in gs: each live
 * snake with nothing queued turns at random now and then, and away from
 * a cell that would kill it when another is open.
 */
static void
bot_turns(struct game **gs, int ngames, uint32_t *r, int64_t *seq)
{
    static const int sx[] = {0, 1, 0, -1}, sy[] = {-1, 0, 1, 0};
    const struct game *g = gs[0];
    const struct game_snake *sn;
    struct game_point p;
    int i, k, n, d;

    for (i = 0; i < g->nsnakes; i++) {
        sn = &g->snakes[i];
        if (!sn->alive || sn->nturns > 0)
            continue;
        d = xorshift(r) % 8 == 0 ? (int)(xorshift(r) % 4) : (int)sn->dir;
        for (k = 0; k < 4; k++, d = (d + 1) % 4) {
            p.x = (int16_t)(sn->body[0].x + sx[d]);
            p.y = (int16_t)(sn->body[0].y + sy[d]);
            if (d != (int)(sn->dir + 2) % 4 && p.x >= 0 && p.y >= 0 &&
                p.x < g->set.width && p.y < g->set.height &&
                !on_live_snake(g, p))
                break;
        }
        if (d == (int)sn->dir)
            continue;
        ++*seq;
        for (n = 0; n < ngames; n++)
            game_turn(gs[n], i, (enum game_dir)d, *seq);
    }
}

/* Step every game once; all must give the same events and hash. */
static void
step_same(struct game **gs, int ngames)
{
    char *a, *b;
    int n, i;

    for (n = 0; n < ngames; n++)
        game_step(gs[n]);
    for (n = 1; n < ngames; n++) {
        ck_assert_uint_eq(game_hash(gs[0]), game_hash(gs[n]));
        ck_assert_int_eq(gs[0]->nevents, gs[n]->nevents);
        for (i = 0; i < gs[0]->nevents; i++) {
            a = json_text(game_event_json(gs[0], &gs[0]->events[i]));
            b = json_text(game_event_json(gs[n], &gs[n]->events[i]));
            ck_assert_str_eq(a, b);
            free(a);
            free(b);
        }
    }
}

/* ---- settings and names ---------------------------------------------- */

START_TEST(test_settings_check_ranges)
{
    struct {
        size_t off;
        int bad_low, bad_high;
        const char *reason;
    } f[] = {
        {offsetof(struct game_settings, width), 9, 101,
         "width must be 10..100"},
        {offsetof(struct game_settings, height), 9, 101,
         "height must be 10..100"},
        {offsetof(struct game_settings, tick_ms), 19, 2001,
         "tick_ms must be 20..2000"},
        {offsetof(struct game_settings, food), 0, 33, "food must be 1..32"},
        {offsetof(struct game_settings, food_per_player), -1, 9,
         "food_per_player must be 0..8"},
        {offsetof(struct game_settings, max_players), 0, 9,
         "max_players must be 1..8"},
    };
    char err[PM_ERRMSG_SIZE];
    struct game_settings s;
    size_t i;

    ck_assert_int_eq(game_settings_check(&defaults, err, sizeof err), PM_OK);
    for (i = 0; i < sizeof f / sizeof f[0]; i++) {
        s = defaults;
        *(int *)((char *)&s + f[i].off) = f[i].bad_low;
        ck_assert_int_eq(game_settings_check(&s, err, sizeof err), PM_EINVAL);
        ck_assert_str_eq(err, f[i].reason);
        *(int *)((char *)&s + f[i].off) = f[i].bad_high;
        ck_assert_int_eq(game_settings_check(&s, err, sizeof err), PM_EINVAL);
        ck_assert_str_eq(err, f[i].reason);
    }
}
END_TEST

START_TEST(test_settings_parse_over_defaults)
{
    char err[PM_ERRMSG_SIZE];
    struct game_settings s = defaults;
    cJSON *o = cJSON_Parse("{\"width\":20,\"food\":3,\"colour\":\"red\"}");

    ck_assert_int_eq(game_settings_parse(o, &s, err, sizeof err), PM_OK);
    ck_assert_int_eq(s.width, 20);
    ck_assert_int_eq(s.food, 3);
    ck_assert_int_eq(s.height, 40);
    ck_assert_int_eq(s.max_players, 8);
    cJSON_Delete(o);
}
END_TEST

START_TEST(test_settings_parse_refuses_bad_values)
{
    const char *bad[][2] = {
        {"{\"width\":\"20\"}", "width must be an integer"},
        {"{\"height\":20.5}", "height must be an integer"},
        {"{\"tick_ms\":null}", "tick_ms must be an integer"},
        {"{\"food\":0}", "food must be 1..32"},
        {"{\"max_players\":1e12}", "max_players must be 1..8"},
        {"{\"width\":-1e300}", "width must be an integer"},
        {"[]", "settings must be an object"},
    };
    char err[PM_ERRMSG_SIZE];
    struct game_settings s;
    cJSON *o;
    size_t i;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s = defaults;
        o = cJSON_Parse(bad[i][0]);
        ck_assert_int_eq(game_settings_parse(o, &s, err, sizeof err),
                         PM_EINVAL);
        ck_assert_str_eq(err, bad[i][1]);
        ck_assert_int_eq(memcmp(&s, &defaults, sizeof s), 0);
        cJSON_Delete(o);
    }
}
END_TEST

START_TEST(test_settings_json_round_trip)
{
    struct game_settings s = {12, 34, 250, 7, 3, 5}, t = defaults;
    cJSON *o = game_settings_json(&s);
    char *text = cJSON_PrintUnformatted(o);

    ck_assert_str_eq(text, "{\"width\":12,\"height\":34,\"tick_ms\":250,"
                           "\"food\":7,\"food_per_player\":3,"
                           "\"max_players\":5}");
    ck_assert_int_eq(game_settings_parse(o, &t, NULL, 0), PM_OK);
    ck_assert_int_eq(memcmp(&s, &t, sizeof s), 0);
    free(text);
    cJSON_Delete(o);
}
END_TEST

START_TEST(test_names)
{
    const char *bad[] = {"up", "UP", "", "Upx", " Up", "North"};
    enum game_dir d;
    size_t i;

    ck_assert_str_eq(game_dir_name(GAME_UP), "Up");
    ck_assert_str_eq(game_dir_name(GAME_RIGHT), "Right");
    ck_assert_str_eq(game_dir_name(GAME_DOWN), "Down");
    ck_assert_str_eq(game_dir_name(GAME_LEFT), "Left");
    ck_assert_str_eq(game_status_name(GAME_WAITING), "waiting");
    ck_assert_str_eq(game_status_name(GAME_RUNNING), "running");
    ck_assert_str_eq(game_status_name(GAME_ENDED), "ended");
    ck_assert_str_eq(game_death_name(GAME_DEATH_BOUNDS), "OutOfBounds");
    ck_assert_str_eq(game_death_name(GAME_DEATH_BODY), "SnakeBody");
    ck_assert_str_eq(game_death_name(GAME_DEATH_SELF), "SelfCollision");
    ck_assert_str_eq(game_death_name(GAME_DEATH_HEAD_ON), "HeadToHead");
    for (d = GAME_UP; d <= GAME_LEFT; d++) {
        enum game_dir back;

        ck_assert_int_eq(game_dir_parse(game_dir_name(d), &back), PM_OK);
        ck_assert_int_eq(back, d);
    }
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_int_eq(game_dir_parse(bad[i], &d), PM_EINVAL);
}
END_TEST

/* ---- players, start ---------------------------------------------------- */

START_TEST(test_add_player_rules)
{
    struct game_settings s = defaults;
    char long_id[GAME_USER_MAX + 2];
    struct game *g;

    s.max_players = 2;
    g = game_new(&s, 1);
    memset(long_id, 'x', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    ck_assert_int_eq(game_add_player(g, long_id), PM_EINVAL);
    ck_assert_int_eq(game_add_player(g, ""), PM_EINVAL);
    long_id[GAME_USER_MAX] = '\0'; /* exactly GAME_USER_MAX bytes: fine */
    ck_assert_int_eq(game_add_player(g, long_id), 0);
    ck_assert_int_eq(game_add_player(g, long_id), PM_ECONFLICT);
    ck_assert_int_eq(game_add_player(g, "bob"), 1);
    ck_assert_int_eq(game_add_player(g, "carol"), PM_ELIMIT);
    ck_assert_int_eq(game_snake_of(g, "bob"), 1);
    ck_assert_int_eq(game_snake_of(g, long_id), 0);
    ck_assert_int_eq(game_snake_of(g, "carol"), -1);
    ck_assert_str_eq(g->snakes[0].user_id, long_id);
    ck_assert_int_eq(game_start(g), PM_OK);
    ck_assert_int_eq(game_add_player(g, "dave"), PM_EINVAL);
    game_free(g);
}
END_TEST

START_TEST(test_start_lays_food_then_runs)
{
    struct game *g = game_new(&defaults, 3);
    int i;

    ck_assert_int_eq(game_start(g), PM_EINVAL); /* no snake yet */
    game_add_player(g, "a");
    game_add_player(g, "b");
    game_add_player(g, "c");
    ck_assert_int_eq(game_start(g), PM_OK);
    ck_assert_int_eq(g->status, GAME_RUNNING);
    ck_assert(g->multiplayer);
    ck_assert_int_eq(g->nfood, 9);
    ck_assert_int_eq(g->nevents, 10);
    for (i = 0; i < 9; i++) {
        ck_assert_int_eq(g->events[i].kind, GAME_EV_FOOD_SPAWNED);
        assert_cell(g->events[i].pos, g->food[i].x, g->food[i].y);
        ck_assert(!on_live_snake(g, g->food[i]));
    }
    ck_assert_int_eq(g->events[9].kind, GAME_EV_STATUS);
    ck_assert_int_eq(g->events[9].status, GAME_RUNNING);
    ck_assert_uint_eq(g->tick, 0);
    ck_assert_int_eq(game_start(g), PM_EINVAL);
    game_free(g);
}
END_TEST

START_TEST(test_step_needs_a_running_game)
{
    struct game *g = new_game(1, 1);

    game_step(g);
    ck_assert_uint_eq(g->tick, 0);
    ck_assert_int_eq(g->nevents, 0);
    assert_cell(g->snakes[0].body[0], 13, 17);
    ck_assert_int_eq(game_turn(g, 0, GAME_UP, 1), PM_EINVAL);
    game_free(g);
}
END_TEST

/* Every slot of every board: inside, straight, apart, room ahead. */
START_TEST(test_start_slots_every_size)
{
    static const int sx[] = {0, 1, 0, -1}, sy[] = {-1, 0, 1, 0};
    static uint8_t busy[GAME_MAX_SIDE][GAME_MAX_SIDE];
    struct game_settings s = defaults;
    const struct game_snake *sn;
    struct game *g;
    int w, h, i, j, x, y;

    for (w = GAME_MIN_SIDE; w <= GAME_MAX_SIDE; w++) {
        for (h = GAME_MIN_SIDE; h <= GAME_MAX_SIDE; h++) {
            s.width = w;
            s.height = h;
            g = game_new(&s, 1);
            memset(busy, 0, sizeof busy);
            for (i = 0; i < GAME_MAX_SNAKES; i++) {
                ck_assert_int_eq(game_add_player(g, (char[]){'a' + i, 0}), i);
                sn = &g->snakes[i];
                ck_assert_int_eq(sn->len, GAME_START_LEN);
                for (j = 0; j < sn->len; j++) {
                    x = sn->body[0].x - j * sx[sn->dir];
                    y = sn->body[0].y - j * sy[sn->dir];
                    assert_cell(sn->body[j], x, y);
                    ck_assert(x >= 0 && y >= 0 && x < w && y < h);
                    ck_assert_msg(!busy[x][y], "%dx%d slot %d overlaps", w, h,
                                  i);
                    busy[x][y] = 1;
                }
            }
            for (i = 0; i < GAME_MAX_SNAKES; i++) {
                sn = &g->snakes[i];
                for (j = 1; j <= 3; j++) {
                    x = sn->body[0].x + j * sx[sn->dir];
                    y = sn->body[0].y + j * sy[sn->dir];
                    ck_assert_msg(x >= 0 && y >= 0 && x < w && y < h &&
                                      !busy[x][y],
                                  "%dx%d slot %d: no room ahead", w, h, i);
                }
                for (j = 0; j < i; j++)
                    ck_assert_int_ne(sn->body[0].y, g->snakes[j].body[0].y);
            }
            /* the duel: facing each other, point-symmetric */
            ck_assert_int_eq(g->snakes[0].dir, GAME_RIGHT);
            ck_assert_int_eq(g->snakes[1].dir, GAME_LEFT);
            ck_assert_int_eq(g->snakes[0].body[0].x,
                             w - 1 - g->snakes[1].body[0].x);
            ck_assert_int_eq(g->snakes[0].body[0].y,
                             h - 1 - g->snakes[1].body[0].y);
            ck_assert_int_le(g->snakes[0].body[0].x, w / 3);
            game_free(g);
        }
    }
}
END_TEST

START_TEST(test_start_slots_spread_on_default_board)
{
    struct game *g = new_game(4, 1);

    /* middle rows facing each other from the thirds, then top, bottom */
    assert_cell(g->snakes[0].body[0], 13, 17);
    assert_cell(g->snakes[1].body[0], 26, 22);
    assert_cell(g->snakes[2].body[0], 26, 2);
    assert_cell(g->snakes[3].body[0], 13, 37);
    assert_cell(g->snakes[0].body[3], 10, 17);
    ck_assert_int_eq(g->snakes[2].dir, GAME_LEFT);
    ck_assert_int_eq(g->snakes[3].dir, GAME_RIGHT);
    game_free(g);
}
END_TEST

/* ---- movement and turns ------------------------------------------------ */

START_TEST(test_moves_one_cell_each_direction)
{
    static const int sx[] = {0, 1, 0, -1}, sy[] = {-1, 0, 1, 0};
    enum game_dir d = (enum game_dir)_i;
    char snakes[1024];
    struct game *g;
    int j;

    straight(snakes, sizeof snakes, 0, 5, 5, d, 4);
    g = scene(11, 11, "[[0,0]]", snakes, NULL);
    game_step(g);
    ck_assert_uint_eq(g->tick, 1);
    ck_assert_int_eq(g->nevents, 1);
    ck_assert_int_eq(g->events[0].kind, GAME_EV_MOVED);
    ck_assert_int_eq(g->snakes[0].len, 4);
    for (j = 0; j < 4; j++)
        assert_cell(g->snakes[0].body[j], 5 + (1 - j) * sx[d],
                    5 + (1 - j) * sy[d]);
    game_free(g);
}
END_TEST

START_TEST(test_turns_apply_one_per_tick)
{
    struct game *g =
        scene(10, 10, "[[9,0]]", SNAKE(0, "Right", "[[3,5],[2,5],[1,5],[0,5]]"),
              NULL);

    ck_assert_int_eq(game_turn(g, 0, GAME_UP, 1), PM_OK);
    ck_assert_int_eq(game_turn(g, 0, GAME_LEFT, 2), PM_OK);
    ck_assert_int_eq(g->snakes[0].nturns, 2);
    game_step(g);
    ck_assert_int_eq(g->nevents, 2);
    ck_assert_int_eq(g->events[0].kind, GAME_EV_TURNED);
    ck_assert_int_eq(g->events[0].snake, 0);
    ck_assert_int_eq(g->events[0].dir, GAME_UP);
    ck_assert_int_eq(g->events[1].kind, GAME_EV_MOVED);
    assert_cell(g->snakes[0].body[0], 3, 4);
    game_step(g);
    ck_assert_int_eq(g->events[0].dir, GAME_LEFT);
    assert_cell(g->snakes[0].body[0], 2, 4);
    game_step(g);
    ck_assert_int_eq(count_events(g, GAME_EV_TURNED), 0);
    assert_cell(g->snakes[0].body[0], 1, 4);
    game_free(g);
}
END_TEST

START_TEST(test_turn_reversal_ignored)
{
    struct game *g =
        scene(10, 10, "[[9,0]]", SNAKE(0, "Right", "[[3,5],[2,5],[1,5],[0,5]]"),
              NULL);

    ck_assert_int_eq(game_turn(g, 0, GAME_LEFT, 1), PM_OK);
    ck_assert_int_eq(g->snakes[0].nturns, 0);
    ck_assert_int_eq(g->snakes[0].last_cmd, 1);
    game_step(g);
    ck_assert_int_eq(count_events(g, GAME_EV_TURNED), 0);
    assert_cell(g->snakes[0].body[0], 4, 5);
    ck_assert(g->snakes[0].alive);
    game_free(g);
}
END_TEST

START_TEST(test_turn_same_direction_ignored)
{
    struct game *g =
        scene(10, 10, "[[9,0]]", SNAKE(0, "Right", "[[3,5],[2,5],[1,5],[0,5]]"),
              NULL);

    ck_assert_int_eq(game_turn(g, 0, GAME_RIGHT, 1), PM_OK);
    ck_assert_int_eq(g->snakes[0].nturns, 0);
    /* judged against the direction after the queued turns */
    ck_assert_int_eq(game_turn(g, 0, GAME_UP, 2), PM_OK);
    ck_assert_int_eq(game_turn(g, 0, GAME_UP, 3), PM_OK);
    ck_assert_int_eq(game_turn(g, 0, GAME_DOWN, 4), PM_OK);
    ck_assert_int_eq(g->snakes[0].nturns, 1);
    ck_assert_int_eq(g->snakes[0].last_cmd, 4);
    game_free(g);
}
END_TEST

START_TEST(test_turn_queue_full)
{
    struct game *g =
        scene(10, 10, "[[9,0]]", SNAKE(0, "Right", "[[3,5],[2,5],[1,5],[0,5]]"),
              NULL);

    ck_assert_int_eq(game_turn(g, 0, GAME_UP, 1), PM_OK);
    ck_assert_int_eq(game_turn(g, 0, GAME_LEFT, 2), PM_OK);
    ck_assert_int_eq(game_turn(g, 0, GAME_DOWN, 3), PM_OK);
    ck_assert_int_eq(game_turn(g, 0, GAME_RIGHT, 4), PM_ELIMIT);
    ck_assert_int_eq(g->snakes[0].last_cmd, 3);
    ck_assert_int_eq(g->snakes[0].nturns, GAME_TURN_QUEUE);
    /* a repeat queues nothing, so a full queue does not refuse it */
    ck_assert_int_eq(game_turn(g, 0, GAME_DOWN, 4), PM_OK);
    game_step(g);
    ck_assert_int_eq(game_turn(g, 0, GAME_RIGHT, 5), PM_OK);
    ck_assert_int_eq(g->snakes[0].nturns, GAME_TURN_QUEUE);
    game_free(g);
}
END_TEST

START_TEST(test_turn_resend_is_conflict)
{
    struct game *g =
        scene(10, 10, "[[9,0]]", SNAKE(0, "Right", "[[3,5],[2,5],[1,5],[0,5]]"),
              NULL);

    ck_assert_int_eq(game_turn(g, 0, GAME_UP, 0), PM_OK);
    ck_assert_int_eq(game_turn(g, 0, GAME_UP, 0), PM_ECONFLICT);
    ck_assert_int_eq(game_turn(g, 0, GAME_LEFT, 5), PM_OK);
    ck_assert_int_eq(game_turn(g, 0, GAME_DOWN, 5), PM_ECONFLICT);
    ck_assert_int_eq(game_turn(g, 0, GAME_DOWN, 4), PM_ECONFLICT);
    ck_assert_int_eq(g->snakes[0].nturns, 2);
    ck_assert_int_eq(g->snakes[0].last_cmd, 5);
    game_free(g);
}
END_TEST

START_TEST(test_turn_refused_for_bad_snake)
{
    struct game *g =
        scene(10, 10, "[[9,9]]", SNAKE(0, "Left", "[[0,5],[1,5],[2,5],[3,5]]"),
              SNAKE(1, "Right", "[[3,1],[2,1],[1,1],[0,1]]"),
              SNAKE(2, "Right", "[[3,8],[2,8],[1,8],[0,8]]"), NULL);

    ck_assert_int_eq(game_turn(g, 3, GAME_UP, 1), PM_EINVAL);
    ck_assert_int_eq(game_turn(g, -1, GAME_UP, 1), PM_EINVAL);
    ck_assert_int_eq(game_turn(g, 1, (enum game_dir)4, 1), PM_EINVAL);
    game_step(g); /* snake 0 leaves the grid */
    ck_assert(!g->snakes[0].alive);
    ck_assert_int_eq(game_turn(g, 0, GAME_UP, 1), PM_EINVAL);
    game_free(g);
}
END_TEST

/* ---- growth -------------------------------------------------------------- */

START_TEST(test_growth_tail_stays_one_step)
{
    struct game *g =
        scene(10, 10, "[[4,5],[9,0]]",
              SNAKE(0, "Right", "[[3,5],[2,5],[1,5],[0,5]]"), NULL);
    const struct game_event *ev;

    game_step(g);
    ev = find_event(g, GAME_EV_FOOD_EATEN);
    ck_assert_ptr_nonnull(ev);
    ck_assert_int_eq(ev->snake, 0);
    assert_cell(ev->pos, 4, 5);
    ck_assert_int_eq(g->snakes[0].score, 1);
    ck_assert_int_eq(g->snakes[0].grow, 1);
    ck_assert_int_eq(g->snakes[0].len, 4);
    ck_assert_int_eq(g->nfood, 2); /* eaten, then refilled */
    ck_assert_int_eq(count_events(g, GAME_EV_FOOD_SPAWNED), 1);
    game_step(g);
    ck_assert_int_eq(g->snakes[0].len, 5);
    ck_assert_int_eq(g->snakes[0].grow, 0);
    assert_cell(g->snakes[0].body[4], 1, 5);
    game_step(g);
    ck_assert_int_eq(g->snakes[0].len, 5);
    assert_cell(g->snakes[0].body[4], 2, 5);
    game_free(g);
}
END_TEST

START_TEST(test_growth_two_foods_two_steps)
{
    struct game *g =
        scene(10, 10, "[[4,5],[5,5],[9,0]]",
              SNAKE(0, "Right", "[[3,5],[2,5],[1,5],[0,5]]"), NULL);
    int want[] = {4, 5, 6, 6}, i;

    for (i = 0; i < 4; i++) {
        game_step(g);
        ck_assert_int_eq(g->snakes[0].len, want[i]);
    }
    ck_assert_int_eq(g->snakes[0].score, 2);
    assert_cell(g->snakes[0].body[5], 2, 5);
    game_free(g);
}
END_TEST

/* ---- collisions ---------------------------------------------------------- */

START_TEST(test_death_bounds_each_wall)
{
    static const int hx[] = {5, 9, 5, 0}, hy[] = {0, 5, 9, 5};
    enum game_dir d = (enum game_dir)_i;
    struct game_point before[4];
    const struct game_event *ev;
    char snakes[1024];
    struct game *g;
    int j;

    straight(snakes, sizeof snakes, 0, hx[d], hy[d], d, 4);
    g = scene(10, 10, "[[3,3]]", snakes, NULL);
    memcpy(before, g->snakes[0].body, sizeof before);
    game_step(g);
    ev = find_event(g, GAME_EV_DIED);
    ck_assert_ptr_nonnull(ev);
    ck_assert_int_eq(ev->snake, 0);
    ck_assert_int_eq(ev->cause, GAME_DEATH_BOUNDS);
    ck_assert_int_eq(ev->other, -1);
    ck_assert(!g->snakes[0].alive);
    /* rolled back: the dead snake never shows outside the grid */
    ck_assert_int_eq(g->snakes[0].len, 4);
    for (j = 0; j < 4; j++)
        assert_cell(g->snakes[0].body[j], before[j].x, before[j].y);
    game_free(g);
}
END_TEST

START_TEST(test_death_other_body)
{
    struct game *g =
        scene(10, 10, "[[9,9]]", SNAKE(0, "Down", "[[3,3],[3,2],[3,1],[3,0]]"),
              SNAKE(1, "Left", "[[2,4],[3,4],[4,4],[5,4]]"), NULL);
    const struct game_event *ev;

    game_step(g);
    ck_assert_int_eq(count_events(g, GAME_EV_DIED), 1);
    ev = find_event(g, GAME_EV_DIED);
    ck_assert_int_eq(ev->snake, 0);
    ck_assert_int_eq(ev->cause, GAME_DEATH_BODY);
    ck_assert_int_eq(ev->other, 1);
    ck_assert(g->snakes[1].alive);
    ck_assert_int_eq(g->winner, 1);
    game_free(g);
}
END_TEST

START_TEST(test_death_self_needs_length_five)
{
    struct game *g =
        scene(10, 10, "[[9,9]]",
              SNAKE(0, "Up", "[[4,4],[4,5],[5,5],[5,4],[5,3],[4,3]]"), NULL);
    const struct game_event *ev;

    ck_assert_int_eq(game_turn(g, 0, GAME_RIGHT, 1), PM_OK);
    game_step(g);
    ev = find_event(g, GAME_EV_DIED);
    ck_assert_ptr_nonnull(ev);
    ck_assert_int_eq(ev->cause, GAME_DEATH_SELF);
    ck_assert_int_eq(ev->other, -1);
    assert_cell(g->snakes[0].body[0], 4, 4);
    assert_cell(g->snakes[0].body[5], 4, 3);
    game_free(g);
}
END_TEST

START_TEST(test_own_tail_chase_survives)
{
    struct game *g = scene(10, 10, "[[9,9]]",
                           SNAKE(0, "Up", "[[4,4],[4,5],[5,5],[5,4]]"), NULL);
    int i;
    enum game_dir loop[] = {GAME_RIGHT, GAME_DOWN, GAME_LEFT, GAME_UP};

    for (i = 0; i < 8; i++) {
        ck_assert_int_eq(game_turn(g, 0, loop[i % 4], i + 1), PM_OK);
        game_step(g);
        ck_assert_msg(g->snakes[0].alive, "died at tick %d", i + 1);
    }
    game_free(g);
}
END_TEST

START_TEST(test_head_on_both_die_duel_draw)
{
    struct game *g =
        scene(10, 10, "[[9,9]]", SNAKE(0, "Right", "[[3,5],[2,5],[1,5],[0,5]]"),
              SNAKE(1, "Left", "[[5,5],[6,5],[7,5],[8,5]]"), NULL);
    int n;

    game_step(g);
    n = g->nevents;
    ck_assert_int_eq(n, 5);
    ck_assert_int_eq(g->events[1].kind, GAME_EV_DIED);
    ck_assert_int_eq(g->events[1].snake, 0);
    ck_assert_int_eq(g->events[1].cause, GAME_DEATH_HEAD_ON);
    ck_assert_int_eq(g->events[1].other, 1);
    ck_assert_int_eq(g->events[2].snake, 1);
    ck_assert_int_eq(g->events[2].cause, GAME_DEATH_HEAD_ON);
    ck_assert_int_eq(g->events[2].other, 0);
    ck_assert_int_eq(g->events[3].kind, GAME_EV_STATUS);
    ck_assert_int_eq(g->events[3].status, GAME_ENDED);
    ck_assert_int_eq(g->events[4].kind, GAME_EV_ENDED);
    ck_assert_int_eq(g->events[4].winner, -1);
    ck_assert_int_eq(g->status, GAME_ENDED);
    ck_assert_int_eq(g->winner, -1);
    game_free(g);
}
END_TEST

START_TEST(test_head_on_three_snakes)
{
    struct game *g =
        scene(10, 10, "[[9,0]]", SNAKE(0, "Right", "[[3,5],[2,5],[1,5],[0,5]]"),
              SNAKE(1, "Left", "[[5,5],[6,5],[7,5],[8,5]]"),
              SNAKE(2, "Down", "[[4,4],[4,3],[4,2],[4,1]]"),
              SNAKE(3, "Left", "[[6,8],[7,8],[8,8],[9,8]]"), NULL);
    int want_other[] = {1, 0, 0}, i;

    game_step(g);
    ck_assert_int_eq(count_events(g, GAME_EV_DIED), 3);
    for (i = 0; i < 3; i++) {
        ck_assert_int_eq(g->events[1 + i].kind, GAME_EV_DIED);
        ck_assert_int_eq(g->events[1 + i].snake, i);
        ck_assert_int_eq(g->events[1 + i].cause, GAME_DEATH_HEAD_ON);
        ck_assert_int_eq(g->events[1 + i].other, want_other[i]);
    }
    ck_assert_int_eq(g->winner, 3);
    ck_assert_int_eq(g->status, GAME_ENDED);
    game_free(g);
}
END_TEST

START_TEST(test_head_swap_is_body_death)
{
    struct game *g =
        scene(10, 10, "[[9,9]]", SNAKE(0, "Right", "[[3,5],[2,5],[1,5],[0,5]]"),
              SNAKE(1, "Left", "[[4,5],[5,5],[6,5],[7,5]]"), NULL);
    const struct game_event *ev;

    game_step(g);
    ck_assert_int_eq(count_events(g, GAME_EV_DIED), 2);
    ev = find_event(g, GAME_EV_DIED);
    ck_assert_int_eq(ev[0].cause, GAME_DEATH_BODY);
    ck_assert_int_eq(ev[0].other, 1);
    ck_assert_int_eq(ev[1].cause, GAME_DEATH_BODY);
    ck_assert_int_eq(ev[1].other, 0);
    ck_assert_int_eq(g->winner, -1);
    game_free(g);
}
END_TEST

START_TEST(test_head_on_beats_body)
{
    /* two heads meet on a cell that is also snake 2's body */
    struct game *g =
        scene(10, 10, "[[9,0]]", SNAKE(0, "Right", "[[3,5],[2,5],[1,5],[0,5]]"),
              SNAKE(1, "Left", "[[5,5],[6,5],[7,5],[8,5]]"),
              SNAKE(2, "Down", "[[4,6],[4,5],[4,4],[4,3]]"), NULL);

    game_step(g);
    ck_assert_int_eq(count_events(g, GAME_EV_DIED), 2);
    ck_assert_int_eq(g->events[1].cause, GAME_DEATH_HEAD_ON);
    ck_assert_int_eq(g->events[2].cause, GAME_DEATH_HEAD_ON);
    ck_assert(g->snakes[2].alive);
    ck_assert_int_eq(g->winner, 2);
    game_free(g);
}
END_TEST

START_TEST(test_bounds_beats_head_on)
{
    /* overlapping bodies (only a checkpoint can say so): both heads leave
     * the grid on the same cell */
    struct game *g =
        scene(10, 10, "[[9,9]]", SNAKE(0, "Left", "[[0,5],[1,5],[2,5],[3,5]]"),
              SNAKE(1, "Up", "[[0,5],[0,6],[0,7],[0,8]]"),
              SNAKE(2, "Right", "[[3,1],[2,1],[1,1],[0,1]]"), NULL);

    ck_assert_int_eq(game_turn(g, 1, GAME_LEFT, 1), PM_OK);
    game_step(g);
    ck_assert_int_eq(count_events(g, GAME_EV_DIED), 2);
    ck_assert_int_eq(g->events[2].cause, GAME_DEATH_BOUNDS);
    ck_assert_int_eq(g->events[3].cause, GAME_DEATH_BOUNDS);
    game_free(g);
}
END_TEST

START_TEST(test_body_beats_self)
{
    /* snake 0 turns into its own body where snake 1's body also lies */
    struct game *g =
        scene(10, 10, "[[9,9]]",
              SNAKE(0, "Up", "[[4,4],[4,5],[5,5],[5,4],[5,3],[4,3]]"),
              SNAKE(1, "Up", "[[5,3],[5,4],[5,5],[5,6]]"), NULL);
    const struct game_event *ev;

    ck_assert_int_eq(game_turn(g, 0, GAME_RIGHT, 1), PM_OK);
    game_step(g);
    ev = find_event(g, GAME_EV_DIED);
    ck_assert_ptr_nonnull(ev);
    ck_assert_int_eq(ev->snake, 0);
    ck_assert_int_eq(ev->cause, GAME_DEATH_BODY);
    ck_assert_int_eq(ev->other, 1);
    game_free(g);
}
END_TEST

START_TEST(test_tail_chasing_other_snake_survives)
{
    struct game *g =
        scene(10, 10, "[[9,0]]", SNAKE(0, "Right", "[[4,7],[3,7],[2,7],[1,7]]"),
              SNAKE(1, "Up", "[[5,4],[5,5],[5,6],[5,7]]"), NULL);

    game_step(g);
    ck_assert_int_eq(count_events(g, GAME_EV_DIED), 0);
    assert_cell(g->snakes[0].body[0], 5, 7);
    ck_assert(g->snakes[0].alive && g->snakes[1].alive);
    game_free(g);
}
END_TEST

START_TEST(test_tail_that_stays_kills)
{
    struct game *g =
        scene(10, 10, "[[9,0]]", SNAKE(0, "Right", "[[4,7],[3,7],[2,7],[1,7]]"),
              "{\"id\":1,\"user_id\":\"u1\",\"body\":[[5,4],[5,5],[5,6],[5,7]],"
              "\"dir\":\"Up\",\"turns\":[],\"grow\":1,\"alive\":true,\"score\":"
              "1,\"last_cmd\":-1}",
              NULL);
    const struct game_event *ev;

    game_step(g);
    ev = find_event(g, GAME_EV_DIED);
    ck_assert_ptr_nonnull(ev);
    ck_assert_int_eq(ev->snake, 0);
    ck_assert_int_eq(ev->cause, GAME_DEATH_BODY);
    ck_assert_int_eq(ev->other, 1);
    game_free(g);
}
END_TEST

START_TEST(test_dead_snake_is_no_obstacle)
{
    /* 0 dies at the wall; 2 then runs over 0's body */
    struct game *g =
        scene(10, 10, "[[9,9]]", SNAKE(0, "Left", "[[0,5],[1,5],[2,5],[3,5]]"),
              SNAKE(1, "Right", "[[3,1],[2,1],[1,1],[0,1]]"),
              SNAKE(2, "Up", "[[2,7],[2,8],[2,9],[1,9]]"), NULL);
    int i;

    game_step(g);
    ck_assert(!g->snakes[0].alive);
    assert_cell(g->snakes[0].body[2], 2, 5);
    for (i = 0; i < 3; i++) {
        game_step(g);
        ck_assert_int_eq(count_events(g, GAME_EV_DIED), 0);
    }
    assert_cell(g->snakes[2].body[0], 2, 3);
    ck_assert_int_eq(g->status, GAME_RUNNING);
    game_free(g);
}
END_TEST

/* ---- end conditions -------------------------------------------------- */

START_TEST(test_duel_winner_then_no_more_ticks)
{
    struct game *g =
        scene(10, 10, "[[9,9]]", SNAKE(0, "Down", "[[3,3],[3,2],[3,1],[3,0]]"),
              SNAKE(1, "Left", "[[2,4],[3,4],[4,4],[5,4]]"), NULL);
    const struct game_event *ev;

    game_step(g);
    ck_assert_int_eq(g->status, GAME_ENDED);
    ev = &g->events[g->nevents - 2];
    ck_assert_int_eq(ev[0].kind, GAME_EV_STATUS);
    ck_assert_int_eq(ev[0].status, GAME_ENDED);
    ck_assert_int_eq(ev[1].kind, GAME_EV_ENDED);
    ck_assert_int_eq(ev[1].winner, 1);
    game_step(g);
    ck_assert_int_eq(g->nevents, 0);
    ck_assert_uint_eq(g->tick, 1);
    game_free(g);
}
END_TEST

START_TEST(test_ffa_goes_on_while_two_live)
{
    struct game *g =
        scene(10, 10, "[[9,9]]", SNAKE(0, "Left", "[[0,5],[1,5],[2,5],[3,5]]"),
              SNAKE(1, "Right", "[[3,1],[2,1],[1,1],[0,1]]"),
              SNAKE(2, "Right", "[[3,8],[2,8],[1,8],[0,8]]"), NULL);

    game_step(g);
    ck_assert_int_eq(count_events(g, GAME_EV_DIED), 1);
    ck_assert_int_eq(g->status, GAME_RUNNING);
    ck_assert_int_eq(count_events(g, GAME_EV_ENDED), 0);
    game_free(g);
}
END_TEST

START_TEST(test_solo_ends_on_death_with_score)
{
    struct game *g =
        scene(10, 10, "[[6,5],[7,5]]",
              SNAKE(0, "Right", "[[5,5],[4,5],[3,5],[2,5]]"), NULL);
    const struct game_event *ev;
    int eaten = 0;
    char *text, want[160];

    while (g->status == GAME_RUNNING) {
        game_step(g);
        eaten += count_events(g, GAME_EV_FOOD_EATEN);
    }
    ck_assert_int_ge(eaten, 2);
    ck_assert_int_eq(g->snakes[0].score, eaten);
    ck_assert_int_eq(g->snakes[0].len + g->snakes[0].grow, 4 + eaten);
    ev = find_event(g, GAME_EV_DIED);
    ck_assert_int_eq(ev->cause, GAME_DEATH_BOUNDS);
    ev = find_event(g, GAME_EV_ENDED);
    ck_assert_int_eq(ev->winner, -1);
    text = json_text(game_event_json(g, ev));
    snprintf(want, sizeof want,
             "{\"GameEnded\":{\"winner\":null,\"scores\":[{\"snake_id\":0,"
             "\"user_id\":\"u0\",\"score\":%d}]}}",
             eaten);
    ck_assert_str_eq(text, want);
    free(text);
    game_free(g);
}
END_TEST

/* ---- food -------------------------------------------------------------- */

START_TEST(test_food_target_per_players)
{
    struct game_settings s = defaults;
    struct game *g = new_game(1, 1);

    ck_assert_int_eq(game_food_target(g), 5);
    game_add_player(g, "x");
    game_add_player(g, "y");
    ck_assert_int_eq(game_food_target(g), 9);
    game_free(g);
    s.food = 32;
    s.food_per_player = 8;
    g = game_new(&s, 1);
    ck_assert_int_eq(game_food_target(g), 32);
    game_add_player(g, "a");
    game_add_player(g, "b");
    game_add_player(g, "c");
    game_add_player(g, "d");
    ck_assert_int_eq(game_food_target(g), 56);
    game_add_player(g, "e");
    game_add_player(g, "f");
    ck_assert_int_eq(game_food_target(g), GAME_MAX_FOOD); /* 72 capped */
    game_free(g);
}
END_TEST

/* Crowded boards, random play: food is never on a live snake nor twice. */
START_TEST(test_food_refill_never_on_snake)
{
    struct game_settings s = {10, 10, 100, 32, 8, 8};
    struct game *g;
    uint32_t r = 99;
    int64_t seq = 0;
    int seed, t, i, j, cells;

    for (seed = 1; seed <= 20; seed++) {
        g = game_new(&s, (uint64_t)seed);
        for (i = 0; i < 8; i++)
            game_add_player(g, (char[]){'a' + i, 0});
        game_start(g);
        for (t = 0; t < 300 && g->status == GAME_RUNNING; t++) {
            bot_turns(&g, 1, &r, &seq);
            game_step(g);
            cells = 0;
            for (i = 0; i < g->nsnakes; i++)
                cells += g->snakes[i].alive ? g->snakes[i].len : 0;
            ck_assert_int_eq(g->nfood, 100 - cells < GAME_MAX_FOOD
                                           ? 100 - cells
                                           : GAME_MAX_FOOD);
            for (i = 0; i < g->nfood; i++) {
                ck_assert(!on_live_snake(g, g->food[i]));
                for (j = 0; j < i; j++)
                    ck_assert(g->food[i].x != g->food[j].x ||
                              g->food[i].y != g->food[j].y);
            }
        }
        game_free(g);
    }
}
END_TEST

START_TEST(test_food_stops_when_board_full)
{
    char text[4096];
    size_t o;
    struct game *g;
    int i, x, y;

    /* a waiting game whose snake covers all but two cells, row by row */
    o = (size_t)snprintf(
        text, sizeof text,
        "{\"settings\":{\"width\":10,\"height\":10,\"tick_ms\":100,"
        "\"food\":5,\"food_per_player\":0,\"max_players\":1},"
        "\"status\":\"waiting\",\"tick\":0,\"rng\":\"5\","
        "\"multiplayer\":false,\"winner\":-1,\"snakes\":[{\"id\":0,"
        "\"user_id\":\"u0\",\"body\":[");
    for (i = 0; i < 98; i++) {
        y = i / 10;
        x = y % 2 == 0 ? i % 10 : 9 - i % 10;
        o += (size_t)snprintf(text + o, sizeof text - o, "%s[%d,%d]",
                              i ? "," : "", x, y);
    }
    snprintf(text + o, sizeof text - o,
             "],\"dir\":\"Left\",\"turns\":[],\"grow\":0,\"alive\":true,"
             "\"score\":0,\"last_cmd\":-1}],\"food\":[]}");
    g = restore_text(text);
    ck_assert_int_eq(game_start(g), PM_OK);
    ck_assert_int_eq(g->nfood, 2);
    ck_assert_int_eq(count_events(g, GAME_EV_FOOD_SPAWNED), 2);
    for (i = 0; i < 2; i++)
        ck_assert_int_eq(g->food[i].y, 9);
    game_free(g);
}
END_TEST

/* ---- determinism, hash --------------------------------------------------- */

/* Two games, one seed, the same calls: 2000 identical ticks. */
START_TEST(test_same_seed_same_game)
{
    struct game_settings s = {100, 100, 100, 5, 2, 8};
    struct game *gs[2];
    uint32_t r = 7;
    int64_t seq = 0;
    int t, n, eaten = 0, died = 0;

    for (n = 0; n < 2; n++) {
        gs[n] = game_new(&s, 42);
        for (t = 0; t < 8; t++)
            game_add_player(gs[n], (char[]){'a' + t, 0});
        game_start(gs[n]);
    }
    for (t = 0; t < 2000; t++) {
        bot_turns(gs, 2, &r, &seq);
        step_same(gs, 2);
        eaten += count_events(gs[0], GAME_EV_FOOD_EATEN);
        died += count_events(gs[0], GAME_EV_DIED);
    }
    ck_assert_uint_eq(gs[0]->tick, 2000); /* still running */
    ck_assert_int_gt(eaten, 0);
    ck_assert_int_gt(died, 0);
    game_free(gs[0]);
    game_free(gs[1]);
}
END_TEST

START_TEST(test_other_seed_other_food)
{
    struct game *a = new_game(2, 1), *b = new_game(2, 2);

    game_start(a);
    game_start(b);
    ck_assert_int_eq(a->nfood, b->nfood);
    ck_assert_int_ne(memcmp(a->food, b->food, a->nfood * sizeof a->food[0]), 0);
    ck_assert_uint_ne(game_hash(a), game_hash(b));
    game_free(a);
    game_free(b);
}
END_TEST

START_TEST(test_hash_hand_computed)
{
    /* FNV-1a of the u32s 3, 0,2, 1,2, 2,2, 1, 5,6 (snake 1 is dead) */
    struct game *g = restore_text(
        "{\"settings\":{\"width\":10,\"height\":10,\"tick_ms\":100,"
        "\"food\":1,\"food_per_player\":0,\"max_players\":2},"
        "\"status\":\"running\",\"tick\":3,\"rng\":\"1\","
        "\"multiplayer\":true,\"winner\":-1,\"snakes\":["
        "{\"id\":0,\"user_id\":\"a\",\"body\":[[1,2],[2,2]],\"dir\":\"Left\","
        "\"turns\":[],\"grow\":0,\"alive\":true,\"score\":0,\"last_cmd\":-1},"
        "{\"id\":1,\"user_id\":\"b\",\"body\":[[7,7]],\"dir\":\"Up\","
        "\"turns\":[],\"grow\":0,\"alive\":false,\"score\":0,"
        "\"last_cmd\":-1}],\"food\":[[5,6]]}");

    ck_assert_uint_eq(game_hash(g), 3527097893u);
    game_free(g);
}
END_TEST

START_TEST(test_hash_follows_state)
{
    struct game *g = new_game(2, 5);
    uint32_t h0, h1;
    struct game_point p;

    game_start(g);
    h0 = game_hash(g);
    ck_assert_uint_eq(game_hash(g), h0);
    game_step(g);
    h1 = game_hash(g);
    ck_assert_uint_ne(h1, h0);
    p = g->food[0];
    g->food[0] = g->food[1];
    g->food[1] = p;
    ck_assert_uint_ne(game_hash(g), h1); /* food order counts */
    g->food[1] = g->food[0];
    g->food[0] = p;
    ck_assert_uint_eq(game_hash(g), h1);
    g->snakes[1].alive = false; /* dead snakes are left out */
    ck_assert_uint_ne(game_hash(g), h1);
    game_free(g);
}
END_TEST

/* ---- JSON -------------------------------------------------------------- */

START_TEST(test_state_json_shape)
{
    struct game *g =
        scene(10, 10, "[[9,9]]", SNAKE(0, "Left", "[[0,5],[1,5],[2,5],[3,5]]"),
              SNAKE(1, "Right", "[[3,1],[2,1],[1,1],[0,1]]"),
              SNAKE(2, "Right", "[[3,8],[2,8],[1,8],[0,8]]"), NULL);
    char *text;

    game_step(g);
    text = json_text(game_state_json(g));
    ck_assert_str_eq(
        text, "{\"tick\":1,\"status\":\"running\",\"width\":10,\"height\":10,"
              "\"tick_ms\":100,\"snakes\":["
              "{\"id\":0,\"user_id\":\"u0\",\"body\":[[0,5],[1,5],[2,5],[3,5]],"
              "\"direction\":\"Left\",\"alive\":false,\"score\":0,\"grow\":0},"
              "{\"id\":1,\"user_id\":\"u1\",\"body\":[[4,1],[3,1],[2,1],[1,1]],"
              "\"direction\":\"Right\",\"alive\":true,\"score\":0,\"grow\":0},"
              "{\"id\":2,\"user_id\":\"u2\",\"body\":[[4,8],[3,8],[2,8],[1,8]],"
              "\"direction\":\"Right\",\"alive\":true,\"score\":0,\"grow\":0}],"
              "\"food\":[[9,9]]}");
    free(text);
    game_free(g);
}
END_TEST

START_TEST(test_event_json_shapes)
{
    struct game *g = new_game(2, 1);
    struct game_event ev = {.snake = 1,
                            .dir = GAME_UP,
                            .pos = {3, 4},
                            .cause = GAME_DEATH_BODY,
                            .other = 0,
                            .status = GAME_RUNNING,
                            .winner = 0};

    ev.kind = GAME_EV_MOVED;
    assert_event_json(g, &ev, "\"Moved\"");
    ev.kind = GAME_EV_TURNED;
    assert_event_json(
        g, &ev, "{\"SnakeTurned\":{\"snake_id\":1,\"direction\":\"Up\"}}");
    ev.kind = GAME_EV_FOOD_EATEN;
    assert_event_json(g, &ev,
                      "{\"FoodEaten\":{\"snake_id\":1,\"position\":[3,4]}}");
    ev.kind = GAME_EV_DIED;
    assert_event_json(g, &ev,
                      "{\"SnakeDied\":{\"snake_id\":1,\"cause\":\"SnakeBody\","
                      "\"other\":0}}");
    ev.cause = GAME_DEATH_SELF;
    ev.other = -1;
    assert_event_json(g, &ev,
                      "{\"SnakeDied\":{\"snake_id\":1,\"cause\":"
                      "\"SelfCollision\",\"other\":null}}");
    ev.kind = GAME_EV_FOOD_SPAWNED;
    assert_event_json(g, &ev, "{\"FoodSpawned\":{\"position\":[3,4]}}");
    ev.kind = GAME_EV_STATUS;
    assert_event_json(g, &ev, "{\"StatusUpdated\":{\"status\":\"running\"}}");
    ev.kind = GAME_EV_ENDED;
    assert_event_json(g, &ev,
                      "{\"GameEnded\":{\"winner\":0,\"scores\":["
                      "{\"snake_id\":0,\"user_id\":\"user0\",\"score\":0},"
                      "{\"snake_id\":1,\"user_id\":\"user1\",\"score\":0}]}}");
    game_free(g);
}
END_TEST

START_TEST(test_step_event_order)
{
    /* one tick with a turn, a death, a meal and a spawn */
    struct game *g = scene(10, 10, "[[5,3],[0,0]]",
                           SNAKE(0, "Left", "[[0,5],[1,5],[2,5],[3,5]]"),
                           SNAKE(1, "Right", "[[5,2],[4,2],[3,2],[2,2]]"),
                           SNAKE(2, "Up", "[[8,6],[8,7],[8,8],[8,9]]"), NULL);
    enum game_event_kind want[] = {GAME_EV_TURNED, GAME_EV_MOVED, GAME_EV_DIED,
                                   GAME_EV_FOOD_EATEN, GAME_EV_FOOD_SPAWNED};
    int i;

    ck_assert_int_eq(game_turn(g, 1, GAME_DOWN, 1), PM_OK);
    game_step(g);
    ck_assert_int_eq(g->nevents, 5);
    for (i = 0; i < 5; i++)
        ck_assert_int_eq(g->events[i].kind, want[i]);
    ck_assert_int_eq(g->events[0].snake, 1);
    ck_assert_int_eq(g->events[2].snake, 0);
    ck_assert_int_eq(g->events[3].snake, 1);
    game_free(g);
}
END_TEST

/* ---- checkpoints ------------------------------------------------------- */

static char *
checkpoint_text(const struct game *g)
{
    return json_text(game_checkpoint_json(g));
}

START_TEST(test_checkpoint_resumes_exactly)
{
    struct game *gs[2];
    cJSON *ck;
    char err[PM_ERRMSG_SIZE], *a, *b;
    uint32_t r = 11;
    int64_t seq = 0;
    int t, i;

    gs[0] = new_game(4, 9);
    game_start(gs[0]);
    for (t = 0; t < 60; t++) {
        bot_turns(gs, 1, &r, &seq);
        game_step(gs[0]);
    }
    ck_assert_int_eq(gs[0]->status, GAME_RUNNING);
    for (i = 0; i < gs[0]->nsnakes; i++) /* queued turns travel too */
        if (gs[0]->snakes[i].alive)
            ck_assert_int_eq(
                game_turn(gs[0], i, (gs[0]->snakes[i].dir + 1) % 4, ++seq),
                PM_OK);
    ck = game_checkpoint_json(gs[0]);
    gs[1] = game_restore(ck, err, sizeof err);
    cJSON_Delete(ck);
    ck_assert_msg(gs[1] != NULL, "%s", err);
    ck_assert_int_eq(gs[1]->nevents, 0);
    a = checkpoint_text(gs[0]);
    b = checkpoint_text(gs[1]);
    ck_assert_str_eq(a, b);
    free(a);
    free(b);
    ck_assert_uint_eq(game_hash(gs[0]), game_hash(gs[1]));
    for (t = 0; t < 500; t++) {
        bot_turns(gs, 2, &r, &seq);
        step_same(gs, 2);
    }
    game_free(gs[0]);
    game_free(gs[1]);
}
END_TEST

START_TEST(test_checkpoint_keeps_everything)
{
    struct game *g = new_game(2, 77), *back;
    cJSON *ck;
    char *text;

    game_start(g);
    g->rng = 18446744073709551615ULL;
    g->snakes[1].grow = 2;
    g->snakes[1].score = 3;
    g->snakes[0].last_cmd = 9007199254740991LL;
    ck_assert_int_eq(game_turn(g, 1, GAME_UP, 1), PM_OK);
    ck_assert_int_eq(game_turn(g, 1, GAME_RIGHT, 2), PM_OK);
    ck = game_checkpoint_json(g);
    text = cJSON_PrintUnformatted(ck);
    ck_assert_ptr_nonnull(strstr(text, "\"rng\":\"18446744073709551615\""));
    back = game_restore(ck, NULL, 0);
    ck_assert_ptr_nonnull(back);
    ck_assert_uint_eq(back->rng, g->rng);
    ck_assert_int_eq(back->snakes[1].grow, 2);
    ck_assert_int_eq(back->snakes[1].score, 3);
    ck_assert_int_eq(back->snakes[1].nturns, 2);
    ck_assert_int_eq(back->snakes[1].turns[1], GAME_RIGHT);
    ck_assert(back->snakes[1].last_cmd == 2);
    ck_assert(back->snakes[0].last_cmd == 9007199254740991LL);
    ck_assert(back->multiplayer);
    ck_assert_int_eq(back->nfood, g->nfood);
    free(text);
    cJSON_Delete(ck);
    game_free(back);
    game_free(g);
}
END_TEST

/* Where a mutation applies: the checkpoint, its settings, snake 0. */
enum where { TOP, SETTINGS, SNAKE0 };

static void
refuse(const cJSON *ck)
{
    char err[PM_ERRMSG_SIZE] = "";
    struct game *g = game_restore(ck, err, sizeof err);

    ck_assert_ptr_null(g);
    ck_assert_msg(err[0] != '\0', "refused without a reason");
}

START_TEST(test_restore_refuses_malformed)
{
    static const struct {
        enum where where;
        const char *field, *value; /* value NULL: field removed */
    } cases[] = {
        {TOP, "settings", NULL},
        {TOP, "settings", "[]"},
        {SETTINGS, "width", NULL},
        {SETTINGS, "width", "5"},
        {SETTINGS, "height", "\"40\""},
        {SETTINGS, "max_players", "1"}, /* fewer than the snakes */
        {TOP, "status", NULL},
        {TOP, "status", "\"paused\""},
        {TOP, "tick", NULL},
        {TOP, "tick", "-1"},
        {TOP, "tick", "1.5"},
        {TOP, "rng", NULL},
        {TOP, "rng", "12"},
        {TOP, "rng", "\"-1\""},
        {TOP, "rng", "\"+1\""},
        {TOP, "rng", "\"\""},
        {TOP, "rng", "\"12a\""},
        {TOP, "rng", "\"18446744073709551616\""},
        {TOP, "multiplayer", NULL},
        {TOP, "multiplayer", "1"},
        {TOP, "multiplayer", "false"}, /* two snakes */
        {TOP, "winner", NULL},
        {TOP, "winner", "2"},
        {TOP, "winner", "-2"},
        {TOP, "snakes", NULL},
        {TOP, "snakes", "{}"},
        {TOP, "snakes", "[]"}, /* a running game without snakes */
        {TOP, "food", NULL},
        {TOP, "food", "[[1]]"},
        {TOP, "food", "[[40,0]]"},
        {TOP, "food", "[[0,-1]]"},
        {TOP, "food", "[[\"1\",2]]"},
        {TOP, "food", "[[1,2,3]]"},
        {TOP, "food", "[7]"},
        {SNAKE0, "id", NULL},
        {SNAKE0, "id", "1"},
        {SNAKE0, "user_id", NULL},
        {SNAKE0, "user_id", "\"\""},
        {SNAKE0, "user_id", "\"user1\""}, /* snake 1's */
        {SNAKE0, "user_id", "7"},
        {SNAKE0, "body", NULL},
        {SNAKE0, "body", "[]"},
        {SNAKE0, "body", "[[40,5]]"},
        {SNAKE0, "body", "[[5,40]]"},
        {SNAKE0, "body", "[[-1,5]]"},
        {SNAKE0, "body", "[[1,1],[3,1]]"},
        {SNAKE0, "body", "[[1,1],[2,2]]"},
        {SNAKE0, "body", "[[1,1],[1]]"},
        {SNAKE0, "body", "[[1,1],[1,\"2\"]]"},
        {SNAKE0, "body", "[[1,1],null]"},
        {SNAKE0, "body", "\"[[1,1]]\""},
        {SNAKE0, "dir", NULL},
        {SNAKE0, "dir", "\"up\""},
        {SNAKE0, "turns", NULL},
        {SNAKE0, "turns", "[\"Up\",\"Right\",\"Up\",\"Right\"]"},
        {SNAKE0, "turns", "[\"Left\"]"}, /* a reversal of Right */
        {SNAKE0, "turns", "[\"Right\"]"},
        {SNAKE0, "turns", "[3]"},
        {SNAKE0, "grow", NULL},
        {SNAKE0, "grow", "-1"},
        {SNAKE0, "grow", "1601"},
        {SNAKE0, "alive", NULL},
        {SNAKE0, "alive", "\"yes\""},
        {SNAKE0, "score", "-1"},
        {SNAKE0, "score", "1e300"},
        {SNAKE0, "last_cmd", NULL},
        {SNAKE0, "last_cmd", "-2"},
        {SNAKE0, "last_cmd", "0.5"},
        {SNAKE0, "last_cmd", "1e17"},
    };
    struct game *g = new_game(2, 3);
    cJSON *base, *ck, *target;
    size_t i;

    game_start(g);
    game_step(g);
    base = game_checkpoint_json(g);
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ck = cJSON_Duplicate(base, true);
        target = cases[i].where == TOP ? ck
                 : cases[i].where == SETTINGS
                     ? cJSON_GetObjectItem(ck, "settings")
                     : cJSON_GetArrayItem(cJSON_GetObjectItem(ck, "snakes"), 0);
        if (cases[i].value == NULL)
            cJSON_DeleteItemFromObjectCaseSensitive(target, cases[i].field);
        else
            cJSON_ReplaceItemInObjectCaseSensitive(target, cases[i].field,
                                                   cJSON_Parse(cases[i].value));
        refuse(ck);
        cJSON_Delete(ck);
    }
    refuse(NULL);
    ck = cJSON_CreateArray();
    refuse(ck);
    cJSON_Delete(ck);
    game_free(g);
    cJSON_Delete(base);
}
END_TEST

START_TEST(test_restore_refuses_too_many)
{
    struct game *g = new_game(8, 3);
    cJSON *ck, *list;
    int i;

    game_start(g);
    ck = game_checkpoint_json(g);
    list = cJSON_GetObjectItem(ck, "snakes");
    cJSON_AddItemToArray(list,
                         cJSON_Duplicate(cJSON_GetArrayItem(list, 7), true));
    refuse(ck); /* nine snakes */
    cJSON_Delete(ck);
    ck = game_checkpoint_json(g);
    list = cJSON_GetObjectItem(ck, "food");
    while (cJSON_GetArraySize(list) <= GAME_MAX_FOOD)
        cJSON_AddItemToArray(list,
                             cJSON_CreateIntArray((const int[]){0, 0}, 2));
    refuse(ck); /* more food than GAME_MAX_FOOD */
    cJSON_Delete(ck);
    ck = game_checkpoint_json(g);
    list = cJSON_GetObjectItem(ck, "food");
    for (i = cJSON_GetArraySize(list); i < GAME_MAX_FOOD; i++)
        cJSON_AddItemToArray(list,
                             cJSON_CreateIntArray((const int[]){0, 0}, 2));
    game_free(g);
    g = game_restore(ck, NULL, 0); /* exactly GAME_MAX_FOOD: fine */
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(g->nfood, GAME_MAX_FOOD);
    cJSON_Delete(ck);
    game_free(g);
}
END_TEST

static Suite *
game_engine_suite(void)
{
    Suite *s = suite_create("game_engine");
    TCase *tc;

    tc = tcase_create("settings");
    tcase_add_test(tc, test_settings_check_ranges);
    tcase_add_test(tc, test_settings_parse_over_defaults);
    tcase_add_test(tc, test_settings_parse_refuses_bad_values);
    tcase_add_test(tc, test_settings_json_round_trip);
    tcase_add_test(tc, test_names);
    suite_add_tcase(s, tc);

    tc = tcase_create("start");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_add_player_rules);
    tcase_add_test(tc, test_start_lays_food_then_runs);
    tcase_add_test(tc, test_step_needs_a_running_game);
    tcase_add_test(tc, test_start_slots_every_size);
    tcase_add_test(tc, test_start_slots_spread_on_default_board);
    suite_add_tcase(s, tc);

    tc = tcase_create("moves");
    tcase_add_loop_test(tc, test_moves_one_cell_each_direction, GAME_UP,
                        GAME_LEFT + 1);
    tcase_add_test(tc, test_turns_apply_one_per_tick);
    tcase_add_test(tc, test_turn_reversal_ignored);
    tcase_add_test(tc, test_turn_same_direction_ignored);
    tcase_add_test(tc, test_turn_queue_full);
    tcase_add_test(tc, test_turn_resend_is_conflict);
    tcase_add_test(tc, test_turn_refused_for_bad_snake);
    tcase_add_test(tc, test_growth_tail_stays_one_step);
    tcase_add_test(tc, test_growth_two_foods_two_steps);
    suite_add_tcase(s, tc);

    tc = tcase_create("collisions");
    tcase_add_loop_test(tc, test_death_bounds_each_wall, GAME_UP,
                        GAME_LEFT + 1);
    tcase_add_test(tc, test_death_other_body);
    tcase_add_test(tc, test_death_self_needs_length_five);
    tcase_add_test(tc, test_own_tail_chase_survives);
    tcase_add_test(tc, test_head_on_both_die_duel_draw);
    tcase_add_test(tc, test_head_on_three_snakes);
    tcase_add_test(tc, test_head_swap_is_body_death);
    tcase_add_test(tc, test_head_on_beats_body);
    tcase_add_test(tc, test_bounds_beats_head_on);
    tcase_add_test(tc, test_body_beats_self);
    tcase_add_test(tc, test_tail_chasing_other_snake_survives);
    tcase_add_test(tc, test_tail_that_stays_kills);
    tcase_add_test(tc, test_dead_snake_is_no_obstacle);
    suite_add_tcase(s, tc);

    tc = tcase_create("end");
    tcase_add_test(tc, test_duel_winner_then_no_more_ticks);
    tcase_add_test(tc, test_ffa_goes_on_while_two_live);
    tcase_add_test(tc, test_solo_ends_on_death_with_score);
    suite_add_tcase(s, tc);

    tc = tcase_create("food");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_food_target_per_players);
    tcase_add_test(tc, test_food_refill_never_on_snake);
    tcase_add_test(tc, test_food_stops_when_board_full);
    suite_add_tcase(s, tc);

    tc = tcase_create("determinism");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_same_seed_same_game);
    tcase_add_test(tc, test_other_seed_other_food);
    tcase_add_test(tc, test_hash_hand_computed);
    tcase_add_test(tc, test_hash_follows_state);
    suite_add_tcase(s, tc);

    tc = tcase_create("json");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_state_json_shape);
    tcase_add_test(tc, test_event_json_shapes);
    tcase_add_test(tc, test_step_event_order);
    tcase_add_test(tc, test_checkpoint_resumes_exactly);
    tcase_add_test(tc, test_checkpoint_keeps_everything);
    tcase_add_test(tc, test_restore_refuses_malformed);
    tcase_add_test(tc, test_restore_refuses_too_many);
    suite_add_tcase(s, tc);
    return s;
}

PM_TEST_MAIN(game_engine_suite)
