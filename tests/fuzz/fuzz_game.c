/*
 * fuzz_game: drives roles/game/game_json.c's readers of untrusted JSON:
 * game_settings_parse (the settings of a custom game, from a client
 * message or a raft entry) and game_restore (a checkpoint handed from
 * node to node), then runs the restored game with game_step.
 *
 * Input: one JSON value (seeds: settings objects and checkpoints).
 *
 * Asserts: settings that parse pass game_settings_check and survive
 * game_settings_json -> game_settings_parse unchanged; a restored game
 * writes a checkpoint that restores to a game with the same checkpoint
 * and the same game_hash, and the two copies stay identical (same hash)
 * over a few ticks: a checkpoint is everything the engine needs.
 */
#include "config.h"

#include <string.h>

#include <cjson/cJSON.h>

#include "fuzz.h"
#include "game_engine.h"
#include "game_json.h"
#include "pm_util.h"

static void
fuzz_settings(const cJSON *o)
{
    struct game_settings s = {40, 30, 100, 3, 1, 8}, t;
    char err[PM_ERRMSG_SIZE];
    cJSON *j;

    if (game_settings_parse(o, &s, err, sizeof err) != PM_OK)
        return;
    FUZZ_CHECK(game_settings_check(&s, err, sizeof err) == PM_OK);
    j = game_settings_json(&s);
    memset(&t, 0, sizeof t);
    FUZZ_CHECK(game_settings_parse(j, &t, err, sizeof err) == PM_OK);
    FUZZ_CHECK(memcmp(&s, &t, sizeof s) == 0);
    cJSON_Delete(j);
}

static void
fuzz_restore(const cJSON *o)
{
    char err[PM_ERRMSG_SIZE];
    struct game *g = game_restore(o, err, sizeof err), *h;
    cJSON *c1, *c2, *st;
    int i;

    if (g == NULL)
        return;
    c1 = game_checkpoint_json(g);
    h = game_restore(c1, err, sizeof err);
    if (h == NULL) {
        char *t = cJSON_PrintUnformatted(c1);

        fprintf(stderr, "own checkpoint refused (%s): %s\n", err, t);
        FUZZ_CHECK(!"a checkpoint of a restored game is refused");
    }
    c2 = game_checkpoint_json(h);
    FUZZ_CHECK(cJSON_Compare(c1, c2, true));
    FUZZ_CHECK(game_hash(g) == game_hash(h));
    st = game_state_json(g);
    FUZZ_CHECK(st != NULL);
    cJSON_Delete(st);
    for (i = 0; i < 8; i++) {
        game_step(g);
        game_step(h);
        FUZZ_CHECK(game_hash(g) == game_hash(h));
    }
    cJSON_Delete(c1);
    cJSON_Delete(c2);
    game_free(g);
    game_free(h);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cJSON *o = cJSON_ParseWithLength((const char *)data, size);

    if (o == NULL)
        return 0;
    fuzz_settings(o);
    fuzz_restore(o);
    cJSON_Delete(o);
    return 0;
}
