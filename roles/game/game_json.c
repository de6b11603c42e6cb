/*
 * game_json: the engine's state, events and settings in the wire JSON,
 * and the checkpoint of a game: written whole, and read back with every
 * field checked (type, range, grid) so that a malformed one is refused
 * with a reason rather than trusted.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "game_json.h"
#include "pm_util.h"

/* 2^53: every integer up to it is exact in a JSON (double) number. */
#define JSON_INT_MAX 9007199254740992.0

static cJSON *
point_json(struct game_point p)
{
    cJSON *a = cJSON_CreateArray();

    cJSON_AddItemToArray(a, cJSON_CreateNumber(p.x));
    cJSON_AddItemToArray(a, cJSON_CreateNumber(p.y));
    return a;
}

static cJSON *
points_json(const struct game_point *p, int n)
{
    cJSON *a = cJSON_CreateArray();
    int i;

    for (i = 0; i < n; i++)
        cJSON_AddItemToArray(a, point_json(p[i]));
    return a;
}

cJSON *
game_state_json(const struct game *g)
{
    cJSON *o = cJSON_CreateObject(), *snakes, *s;
    const struct game_snake *sn;
    int i;

    cJSON_AddNumberToObject(o, "tick", (double)g->tick);
    cJSON_AddStringToObject(o, "status", game_status_name(g->status));
    cJSON_AddNumberToObject(o, "width", g->set.width);
    cJSON_AddNumberToObject(o, "height", g->set.height);
    cJSON_AddNumberToObject(o, "tick_ms", g->set.tick_ms);
    snakes = cJSON_AddArrayToObject(o, "snakes");
    for (i = 0; i < g->nsnakes; i++) {
        sn = &g->snakes[i];
        s = cJSON_CreateObject();
        cJSON_AddNumberToObject(s, "id", sn->id);
        cJSON_AddStringToObject(s, "user_id", sn->user_id);
        cJSON_AddItemToObject(s, "body", points_json(sn->body, sn->len));
        cJSON_AddStringToObject(s, "direction", game_dir_name(sn->dir));
        cJSON_AddBoolToObject(s, "alive", sn->alive);
        cJSON_AddNumberToObject(s, "score", sn->score);
        cJSON_AddNumberToObject(s, "grow", sn->grow);
        cJSON_AddItemToArray(snakes, s);
    }
    cJSON_AddItemToObject(o, "food", points_json(g->food, g->nfood));
    return o;
}

/* obj[name] = n, or null for -1 (no snake). */
static void
add_snake_or_null(cJSON *obj, const char *name, int n)
{
    if (n < 0)
        cJSON_AddNullToObject(obj, name);
    else
        cJSON_AddNumberToObject(obj, name, n);
}

static cJSON *
scores_json(const struct game *g)
{
    cJSON *a = cJSON_CreateArray(), *s;
    int i;

    for (i = 0; i < g->nsnakes; i++) {
        s = cJSON_CreateObject();
        cJSON_AddNumberToObject(s, "snake_id", i);
        cJSON_AddStringToObject(s, "user_id", g->snakes[i].user_id);
        cJSON_AddNumberToObject(s, "score", g->snakes[i].score);
        cJSON_AddItemToArray(a, s);
    }
    return a;
}

cJSON *
game_event_json(const struct game *g, const struct game_event *ev)
{
    static const char *const tags[] = {
        [GAME_EV_TURNED] = "SnakeTurned",
        [GAME_EV_FOOD_EATEN] = "FoodEaten",
        [GAME_EV_DIED] = "SnakeDied",
        [GAME_EV_FOOD_SPAWNED] = "FoodSpawned",
        [GAME_EV_STATUS] = "StatusUpdated",
        [GAME_EV_ENDED] = "GameEnded",
    };
    cJSON *o, *b;

    if (ev->kind == GAME_EV_MOVED)
        return cJSON_CreateString("Moved");
    o = cJSON_CreateObject();
    b = cJSON_AddObjectToObject(o, tags[ev->kind]);
    switch (ev->kind) {
    case GAME_EV_TURNED:
        cJSON_AddNumberToObject(b, "snake_id", ev->snake);
        cJSON_AddStringToObject(b, "direction", game_dir_name(ev->dir));
        break;
    case GAME_EV_FOOD_EATEN:
        cJSON_AddNumberToObject(b, "snake_id", ev->snake);
        cJSON_AddItemToObject(b, "position", point_json(ev->pos));
        break;
    case GAME_EV_DIED:
        cJSON_AddNumberToObject(b, "snake_id", ev->snake);
        cJSON_AddStringToObject(b, "cause", game_death_name(ev->cause));
        add_snake_or_null(b, "other", ev->other);
        break;
    case GAME_EV_FOOD_SPAWNED:
        cJSON_AddItemToObject(b, "position", point_json(ev->pos));
        break;
    case GAME_EV_STATUS:
        cJSON_AddStringToObject(b, "status", game_status_name(ev->status));
        break;
    default: /* GAME_EV_ENDED */
        add_snake_or_null(b, "winner", ev->winner);
        cJSON_AddItemToObject(b, "scores", scores_json(g));
        break;
    }
    return o;
}

cJSON *
game_settings_json(const struct game_settings *s)
{
    cJSON *o = cJSON_CreateObject();

    cJSON_AddNumberToObject(o, "width", s->width);
    cJSON_AddNumberToObject(o, "height", s->height);
    cJSON_AddNumberToObject(o, "tick_ms", s->tick_ms);
    cJSON_AddNumberToObject(o, "food", s->food);
    cJSON_AddNumberToObject(o, "food_per_player", s->food_per_player);
    cJSON_AddNumberToObject(o, "max_players", s->max_players);
    return o;
}

/* Is v a JSON number holding an integer in min..max? */
static bool
int_in(const cJSON *v, double min, double max)
{
    double d;

    if (!cJSON_IsNumber(v))
        return false;
    d = v->valuedouble;
    return d >= min && d <= max && d == (double)(int64_t)d;
}

/* obj[name] as an integer in min..max; PM_OK or PM_EINVAL (reason). */
static int
get_int(const cJSON *obj, const char *name, double min, double max,
        int64_t *out, char *err, size_t errlen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);

    if (v == NULL)
        return pm_errf(err, errlen, PM_EINVAL, "%s is missing", name);
    if (!int_in(v, min, max))
        return pm_errf(err, errlen, PM_EINVAL,
                       "%s must be an integer in %.0f..%.0f", name, min, max);
    *out = (int64_t)v->valuedouble;
    return PM_OK;
}

static int
get_bool(const cJSON *obj, const char *name, bool *out, char *err,
         size_t errlen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);

    if (!cJSON_IsBool(v))
        return pm_errf(err, errlen, PM_EINVAL, "%s must be true or false",
                       name);
    *out = cJSON_IsTrue(v);
    return PM_OK;
}

/* obj[name] as a string of 1..max bytes; PM_OK or PM_EINVAL (reason). */
static int
get_str(const cJSON *obj, const char *name, size_t max, const char **out,
        char *err, size_t errlen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);

    if (!cJSON_IsString(v) || v->valuestring[0] == '\0' ||
        strlen(v->valuestring) > max)
        return pm_errf(err, errlen, PM_EINVAL,
                       "%s must be a string of 1..%zu bytes", name, max);
    *out = v->valuestring;
    return PM_OK;
}

static int
get_dir(const cJSON *v, const char *name, enum game_dir *out, char *err,
        size_t errlen)
{
    if (!cJSON_IsString(v) || game_dir_parse(v->valuestring, out) != PM_OK)
        return pm_errf(err, errlen, PM_EINVAL,
                       "%s must be \"Up\", \"Down\", \"Left\" or \"Right\"",
                       name);
    return PM_OK;
}

/*
 * The settings fields of obj over *s: each present one must be an integer
 * (a huge one saturates, and the range check then names it); all of them
 * when required. Then game_settings_check.
 */
static int
settings_read(const cJSON *obj, bool required, struct game_settings *s,
              char *err, size_t errlen)
{
    static const char *const names[] = {
        "width", "height", "tick_ms", "food", "food_per_player", "max_players"};
    struct game_settings t = *s;
    int *fields[] = {&t.width, &t.height,          &t.tick_ms,
                     &t.food,  &t.food_per_player, &t.max_players};
    const cJSON *v;
    double d;
    size_t i;
    int rc;

    if (!cJSON_IsObject(obj))
        return pm_errf(err, errlen, PM_EINVAL, "settings must be an object");
    for (i = 0; i < sizeof names / sizeof names[0]; i++) {
        v = cJSON_GetObjectItemCaseSensitive(obj, names[i]);
        if (v == NULL && !required)
            continue;
        if (v == NULL)
            return pm_errf(err, errlen, PM_EINVAL, "%s is missing", names[i]);
        if (!int_in(v, -JSON_INT_MAX, JSON_INT_MAX))
            return pm_errf(err, errlen, PM_EINVAL, "%s must be an integer",
                           names[i]);
        d = v->valuedouble;
        *fields[i] = d < INT_MIN ? INT_MIN : d > INT_MAX ? INT_MAX : (int)d;
    }
    rc = game_settings_check(&t, err, errlen);
    if (rc == PM_OK)
        *s = t;
    return rc;
}

int
game_settings_parse(const cJSON *obj, struct game_settings *s, char *err,
                    size_t errlen)
{
    return settings_read(obj, false, s, err, errlen);
}

cJSON *
game_checkpoint_json(const struct game *g)
{
    cJSON *o = cJSON_CreateObject(), *snakes, *s, *turns;
    const struct game_snake *sn;
    char rng[24];
    int i, j;

    cJSON_AddItemToObject(o, "settings", game_settings_json(&g->set));
    cJSON_AddStringToObject(o, "status", game_status_name(g->status));
    cJSON_AddNumberToObject(o, "tick", (double)g->tick);
    snprintf(rng, sizeof rng, "%" PRIu64, g->rng);
    cJSON_AddStringToObject(o, "rng", rng);
    cJSON_AddBoolToObject(o, "multiplayer", g->multiplayer);
    cJSON_AddNumberToObject(o, "winner", g->winner);
    snakes = cJSON_AddArrayToObject(o, "snakes");
    for (i = 0; i < g->nsnakes; i++) {
        sn = &g->snakes[i];
        s = cJSON_CreateObject();
        cJSON_AddNumberToObject(s, "id", sn->id);
        cJSON_AddStringToObject(s, "user_id", sn->user_id);
        cJSON_AddItemToObject(s, "body", points_json(sn->body, sn->len));
        cJSON_AddStringToObject(s, "dir", game_dir_name(sn->dir));
        turns = cJSON_AddArrayToObject(s, "turns");
        for (j = 0; j < sn->nturns; j++)
            cJSON_AddItemToArray(
                turns, cJSON_CreateString(game_dir_name(sn->turns[j])));
        cJSON_AddNumberToObject(s, "grow", sn->grow);
        cJSON_AddBoolToObject(s, "alive", sn->alive);
        cJSON_AddNumberToObject(s, "score", sn->score);
        cJSON_AddNumberToObject(s, "last_cmd", (double)sn->last_cmd);
        cJSON_AddItemToArray(snakes, s);
    }
    cJSON_AddItemToObject(o, "food", points_json(g->food, g->nfood));
    return o;
}

/* A cell [x,y] inside the grid of s. */
static bool
point_read(const cJSON *v, const struct game_settings *s, struct game_point *p)
{
    const cJSON *x, *y;

    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2)
        return false;
    x = v->child;
    y = x->next;
    if (!int_in(x, 0, s->width - 1) || !int_in(y, 0, s->height - 1))
        return false;
    p->x = (int16_t)x->valuedouble;
    p->y = (int16_t)y->valuedouble;
    return true;
}

static int
body_read(const cJSON *v, const struct game_settings *s, struct game_snake *sn,
          char *err, size_t errlen)
{
    int n = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : 0;
    const cJSON *c;
    struct game_point *p;

    if (n < 1 || n > s->width * s->height)
        return pm_errf(err, errlen, PM_EINVAL,
                       "body must be an array of 1..%d cells",
                       s->width * s->height);
    sn->cap = n;
    sn->body = pm_xcalloc((size_t)n, sizeof *sn->body);
    cJSON_ArrayForEach(c, v)
    {
        p = &sn->body[sn->len];
        if (!point_read(c, s, p))
            return pm_errf(err, errlen, PM_EINVAL,
                           "body cell %d must be [x,y] inside the grid",
                           sn->len);
        if (sn->len > 0 && abs(p->x - p[-1].x) + abs(p->y - p[-1].y) != 1)
            return pm_errf(err, errlen, PM_EINVAL,
                           "body cell %d is not next to the one before",
                           sn->len);
        sn->len++;
    }
    return PM_OK;
}

/* Queued turns: each one a real turn from the direction before it. */
static int
turns_read(const cJSON *v, struct game_snake *sn, char *err, size_t errlen)
{
    const cJSON *t;
    enum game_dir d, prev = sn->dir;

    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) > GAME_TURN_QUEUE)
        return pm_errf(err, errlen, PM_EINVAL,
                       "turns must be an array of at most %d directions",
                       GAME_TURN_QUEUE);
    cJSON_ArrayForEach(t, v)
    {
        if (get_dir(t, "turns", &d, err, errlen) != PM_OK)
            return PM_EINVAL;
        if (d % 2 == prev % 2)
            return pm_errf(err, errlen, PM_EINVAL,
                           "turns must each turn by 90 degrees");
        sn->turns[sn->nturns++] = prev = d;
    }
    return PM_OK;
}

static int
snake_read(const cJSON *v, struct game *g, struct game_snake *sn, char *err,
           size_t errlen)
{
    const struct game_settings *s = &g->set;
    double cells = (double)s->width * s->height;
    const char *user_id = NULL;
    int64_t id, grow, score, last_cmd;

    if (!cJSON_IsObject(v))
        return pm_errf(err, errlen, PM_EINVAL, "must be an object");
    if (get_int(v, "id", sn->id, sn->id, &id, err, errlen) != PM_OK ||
        get_str(v, "user_id", GAME_USER_MAX, &user_id, err, errlen) != PM_OK)
        return PM_EINVAL;
    if (game_snake_of(g, user_id) >= 0)
        return pm_errf(err, errlen, PM_EINVAL, "user_id is not unique");
    pm_strlcpy(sn->user_id, user_id, sizeof sn->user_id);
    if (body_read(cJSON_GetObjectItemCaseSensitive(v, "body"), s, sn, err,
                  errlen) != PM_OK ||
        get_dir(cJSON_GetObjectItemCaseSensitive(v, "dir"), "dir", &sn->dir,
                err, errlen) != PM_OK ||
        turns_read(cJSON_GetObjectItemCaseSensitive(v, "turns"), sn, err,
                   errlen) != PM_OK ||
        get_int(v, "grow", 0, cells, &grow, err, errlen) != PM_OK ||
        get_bool(v, "alive", &sn->alive, err, errlen) != PM_OK ||
        get_int(v, "score", 0, INT_MAX, &score, err, errlen) != PM_OK ||
        get_int(v, "last_cmd", -1, JSON_INT_MAX, &last_cmd, err, errlen) !=
            PM_OK)
        return PM_EINVAL;
    sn->grow = (int)grow;
    sn->score = (int)score;
    sn->last_cmd = last_cmd;
    return PM_OK;
}

static int
snakes_read(const cJSON *v, struct game *g, char *err, size_t errlen)
{
    char why[PM_ERRMSG_SIZE];
    struct game_snake *sn;
    const cJSON *item;

    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) > g->set.max_players)
        return pm_errf(err, errlen, PM_EINVAL,
                       "snakes must be an array of at most max_players (%d)",
                       g->set.max_players);
    cJSON_ArrayForEach(item, v)
    {
        sn = &g->snakes[g->nsnakes];
        sn->id = g->nsnakes++; /* counted first so game_free frees it */
        if (snake_read(item, g, sn, why, sizeof why) != PM_OK)
            return pm_errf(err, errlen, PM_EINVAL, "snake %d: %s", sn->id, why);
    }
    return PM_OK;
}

static int
food_read(const cJSON *v, struct game *g, char *err, size_t errlen)
{
    const cJSON *c;

    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) > GAME_MAX_FOOD)
        return pm_errf(err, errlen, PM_EINVAL,
                       "food must be an array of at most %d cells",
                       GAME_MAX_FOOD);
    cJSON_ArrayForEach(c, v)
    {
        if (!point_read(c, &g->set, &g->food[g->nfood]))
            return pm_errf(err, errlen, PM_EINVAL,
                           "food %d must be [x,y] inside the grid", g->nfood);
        g->nfood++;
    }
    return PM_OK;
}

/* The generator state: a decimal string of an unsigned 64-bit integer. */
static int
rng_read(const cJSON *ck, uint64_t *out, char *err, size_t errlen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(ck, "rng");
    const char *s = cJSON_IsString(v) ? v->valuestring : "";
    char *end;

    errno = 0;
    *out = strtoull(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || *end != '\0' || errno == ERANGE)
        return pm_errf(err, errlen, PM_EINVAL,
                       "rng must be a decimal string of a 64-bit integer");
    return PM_OK;
}

static int
status_read(const cJSON *ck, enum game_status *out, char *err, size_t errlen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(ck, "status");
    int s;

    for (s = GAME_WAITING; s <= GAME_ENDED && cJSON_IsString(v); s++)
        if (strcmp(v->valuestring, game_status_name(s)) == 0) {
            *out = (enum game_status)s;
            return PM_OK;
        }
    return pm_errf(err, errlen, PM_EINVAL,
                   "status must be \"waiting\", \"running\" or \"ended\"");
}

struct game *
game_restore(const cJSON *ck, char *err, size_t errlen)
{
    struct game_settings set = {0};
    enum game_status status = GAME_WAITING;
    uint64_t rng;
    int64_t tick, winner;
    struct game *g;

    if (!cJSON_IsObject(ck)) {
        pm_errf(err, errlen, PM_EINVAL, "checkpoint must be an object");
        return NULL;
    }
    if (settings_read(cJSON_GetObjectItemCaseSensitive(ck, "settings"), true,
                      &set, err, errlen) != PM_OK ||
        rng_read(ck, &rng, err, errlen) != PM_OK)
        return NULL;
    g = game_new(&set, rng);
    if (status_read(ck, &status, err, errlen) != PM_OK ||
        get_int(ck, "tick", 0, JSON_INT_MAX, &tick, err, errlen) != PM_OK ||
        get_bool(ck, "multiplayer", &g->multiplayer, err, errlen) != PM_OK ||
        snakes_read(cJSON_GetObjectItemCaseSensitive(ck, "snakes"), g, err,
                    errlen) != PM_OK ||
        get_int(ck, "winner", -1, g->nsnakes - 1, &winner, err, errlen) !=
            PM_OK ||
        food_read(cJSON_GetObjectItemCaseSensitive(ck, "food"), g, err,
                  errlen) != PM_OK)
        goto fail;
    if (status != GAME_WAITING &&
        (g->nsnakes < 1 || g->multiplayer != (g->nsnakes > 1))) {
        pm_errf(err, errlen, PM_EINVAL,
                "a started game needs snakes, and multiplayer must say "
                "whether it has more than one");
        goto fail;
    }
    g->status = status;
    g->tick = (uint64_t)tick;
    g->winner = (int)winner;
    return g;
fail:
    game_free(g);
    return NULL;
}
