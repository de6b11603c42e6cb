/*
 * game_json: the engine's state and events in the wire format of
 * docs/game.md (SnakeTron's externally tagged JSON), and the checkpoint
 * that carries a running game across nodes (everything game_step needs:
 * state, generator, queued turns, command watermarks).
 *
 * Ownership: every cJSON returned is the caller's to cJSON_Delete; inputs
 * are borrowed.
 */
#ifndef GAME_JSON_H
#define GAME_JSON_H

#include <stddef.h>

#include "game_engine.h"

struct cJSON;

/*
 * Snapshot.state: {"tick","status","width","height","tick_ms","snakes":
 * [{"id","user_id","body":[[x,y]..],"direction","alive","score","grow"}],
 * "food":[[x,y]..]}.
 */
struct cJSON *game_state_json(const struct game *g);
/*
 * The "event" value of one engine event: "Moved" (a bare string), or a
 * one-key object such as {"SnakeTurned":{"snake_id":0,"direction":"Up"}},
 * {"SnakeDied":{"snake_id":1,"cause":"SnakeBody","other":0|null}},
 * {"FoodSpawned":{"position":[x,y]}}, {"FoodEaten":{"snake_id":0,
 * "position":[x,y]}}, {"StatusUpdated":{"status":"running"}},
 * {"GameEnded":{"winner":0|null,"scores":[{"snake_id","user_id",
 * "score"}]}} (every snake's score). null stands for -1 (no snake).
 */
struct cJSON *game_event_json(const struct game *g,
                              const struct game_event *ev);
/* The settings as {"width","height","tick_ms","food","food_per_player",
 * "max_players"}. */
struct cJSON *game_settings_json(const struct game_settings *s);
/*
 * Read settings from obj over defaults already in *s (missing fields keep
 * them); PM_OK, or PM_EINVAL with the reason (a wrong type, or the range
 * check of game_settings_check).
 */
int game_settings_parse(const struct cJSON *obj, struct game_settings *s,
                        char *err, size_t errlen);
/*
 * Everything needed to resume g elsewhere: {"settings":{..},"status",
 * "tick","rng":"<decimal uint64>","multiplayer","winner" (-1 for none),
 * "snakes":[{"id","user_id","body":[[x,y]..],"dir","turns":["Up"..],
 * "grow","alive","score","last_cmd"}],"food":[[x,y]..]}.
 */
struct cJSON *game_checkpoint_json(const struct game *g);
/*
 * The game a checkpoint describes (events empty), or NULL with the reason
 * in err when it is malformed or out of range: every field present with
 * its type, settings that pass game_settings_check, at most max_players
 * snakes with ids in order and distinct user ids, bodies of adjacent
 * cells inside the grid, queued turns that each turn by 90 degrees, at
 * most GAME_MAX_FOOD food cells inside the grid, and a started game with
 * snakes. Resuming it and stepping gives exactly what stepping the
 * original would have given.
 */
struct game *game_restore(const struct cJSON *ck, char *err, size_t errlen);

#endif
