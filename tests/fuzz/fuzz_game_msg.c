/*
 * fuzz_game_msg: drives game_msg_parse (roles/game/game_session.c), the
 * part of the game's WebSocket protocol that reads one client message
 * (docs/game.md) before any session or cluster state is involved: the
 * shape (a bare string or a one-key object), the tag, and each body
 * (Authenticate, Ping, GameCommand, QueueForMatch, CreateCustomGame with
 * game_settings_parse, JoinCustomGame, JoinGame/SpectateGame, ...).
 *
 * Input: the text of one WebSocket message (seeds: what the web client
 * and tests/integration's Bot send, and near misses).
 *
 * Asserts: PM_OK exactly when the error is "", and only kinds that can be
 * refused have one; MALFORMED always has one; a message that passes has
 * the fields its kind promises (a token, game_id > 0 and seq >= 0 and a
 * direction, a matchmaking mode, settings passing game_settings_check,
 * a code, a number or NULL for client_time). Written again in its
 * canonical form and parsed (over other defaults), it gives the same
 * command.
 */
#include "config.h"

#include <math.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "fuzz.h"
#include "game.h"
#include "game_json.h"
#include "pm_util.h"

static const char *const tags[] = {
    NULL,
    NULL,
    "Authenticate",
    "Ping",
    "GameCommand",
    "QueueForMatch",
    "LeaveQueue",
    "CreateCustomGame",
    "JoinCustomGame",
    "StartCustomGame",
    "JoinGame",
    "SpectateGame",
    "LeaveGame",
    "RequestResync",
};
static const char *const dirs[] = {"Up", "Right", "Down", "Left"};

/* The message as a client would write it for the command in m. */
static cJSON *
canonical(const struct game_msg *m)
{
    cJSON *o = cJSON_CreateObject(), *b, *c;
    const char *tag = tags[m->kind];

    switch (m->kind) {
    case GAME_MSG_AUTHENTICATE:
        b = cJSON_AddObjectToObject(o, tag);
        cJSON_AddStringToObject(b, "token", m->token);
        cJSON_AddNumberToObject(b, "protocol_version", GAME_PROTOCOL_VERSION);
        break;
    case GAME_MSG_PING:
        b = cJSON_AddObjectToObject(o, tag);
        if (m->client_time != NULL)
            cJSON_AddItemToObject(b, "client_time",
                                  cJSON_Duplicate(m->client_time, true));
        break;
    case GAME_MSG_COMMAND:
        b = cJSON_AddObjectToObject(o, tag);
        c = cJSON_AddObjectToObject(b, "command_id");
        cJSON_AddNumberToObject(c, "game_id", (double)m->game_id);
        cJSON_AddNumberToObject(c, "seq", (double)m->seq);
        c = cJSON_AddObjectToObject(cJSON_AddObjectToObject(b, "command"),
                                    "Turn");
        cJSON_AddStringToObject(c, "direction", dirs[m->dir]);
        break;
    case GAME_MSG_QUEUE:
        cJSON_AddStringToObject(cJSON_AddObjectToObject(o, tag), "mode",
                                game_mode_name(m->mode));
        break;
    case GAME_MSG_CREATE_CUSTOM:
        cJSON_AddItemToObject(o, tag, game_settings_json(&m->settings));
        break;
    case GAME_MSG_JOIN_CUSTOM:
        cJSON_AddStringToObject(cJSON_AddObjectToObject(o, tag), "code",
                                m->code);
        break;
    case GAME_MSG_JOIN_GAME:
    case GAME_MSG_SPECTATE_GAME:
        cJSON_AddNumberToObject(o, tag, (double)m->game_id);
        break;
    case GAME_MSG_RESYNC:
        cJSON_AddNumberToObject(cJSON_AddObjectToObject(o, tag), "game_id",
                                (double)m->game_id);
        break;
    default:
        cJSON_Delete(o);
        return cJSON_CreateString(tag);
    }
    return o;
}

static void
check(const struct game_msg *m, int rc)
{
    FUZZ_CHECK(m->kind >= GAME_MSG_MALFORMED && m->kind <= GAME_MSG_RESYNC);
    FUZZ_CHECK(memchr(m->error, '\0', sizeof m->error) != NULL);
    FUZZ_CHECK((rc == PM_OK) == (m->error[0] == '\0'));
    if (m->error[0] != '\0') {
        FUZZ_CHECK(
            m->kind == GAME_MSG_MALFORMED || m->kind == GAME_MSG_UNKNOWN ||
            m->kind == GAME_MSG_AUTHENTICATE || m->kind == GAME_MSG_COMMAND ||
            m->kind == GAME_MSG_QUEUE || m->kind == GAME_MSG_CREATE_CUSTOM ||
            m->kind == GAME_MSG_JOIN_CUSTOM);
        return;
    }
    FUZZ_CHECK(m->kind != GAME_MSG_MALFORMED && m->kind != GAME_MSG_UNKNOWN);
    switch (m->kind) {
    case GAME_MSG_AUTHENTICATE:
        FUZZ_CHECK(m->token != NULL);
        break;
    case GAME_MSG_PING:
        FUZZ_CHECK(m->client_time == NULL || cJSON_IsNumber(m->client_time));
        break;
    case GAME_MSG_COMMAND:
        FUZZ_CHECK(m->game_id > 0 && m->seq >= 0);
        FUZZ_CHECK(m->dir >= GAME_UP && m->dir <= GAME_LEFT);
        break;
    case GAME_MSG_QUEUE:
        FUZZ_CHECK(m->mode == GAME_MODE_SOLO || m->mode == GAME_MODE_DUEL ||
                   m->mode == GAME_MODE_FFA);
        break;
    case GAME_MSG_CREATE_CUSTOM: {
        char err[PM_ERRMSG_SIZE];

        FUZZ_CHECK(game_settings_check(&m->settings, err, sizeof err) == PM_OK);
        break;
    }
    case GAME_MSG_JOIN_CUSTOM:
        FUZZ_CHECK(m->code != NULL);
        break;
    default:
        break;
    }
}

static void
same(const struct game_msg *a, const struct game_msg *b)
{
    FUZZ_CHECK(a->kind == b->kind);
    FUZZ_CHECK(b->error[0] == '\0');
    switch (a->kind) {
    case GAME_MSG_AUTHENTICATE:
        FUZZ_CHECK(strcmp(a->token, b->token) == 0);
        break;
    case GAME_MSG_PING:
        /* cJSON writes an infinity (1e999 parses to one) as null */
        if (a->client_time != NULL && !isfinite(a->client_time->valuedouble))
            break;
        FUZZ_CHECK((a->client_time == NULL) == (b->client_time == NULL));
        /* cJSON prints 15 significant digits when they do not round
         * trip (0888888888888888888888 comes back 8.88888888888889e+20):
         * the echo is equal to within that. */
        if (a->client_time != NULL)
            FUZZ_CHECK(fabs(a->client_time->valuedouble -
                            b->client_time->valuedouble) <=
                       1e-14 * fabs(a->client_time->valuedouble));
        break;
    case GAME_MSG_COMMAND:
        FUZZ_CHECK(a->game_id == b->game_id && a->seq == b->seq &&
                   a->dir == b->dir);
        break;
    case GAME_MSG_QUEUE:
        FUZZ_CHECK(a->mode == b->mode);
        break;
    case GAME_MSG_CREATE_CUSTOM:
        FUZZ_CHECK(memcmp(&a->settings, &b->settings, sizeof a->settings) == 0);
        break;
    case GAME_MSG_JOIN_CUSTOM:
        FUZZ_CHECK(strcmp(a->code, b->code) == 0);
        break;
    case GAME_MSG_JOIN_GAME:
    case GAME_MSG_SPECTATE_GAME:
    case GAME_MSG_RESYNC:
        FUZZ_CHECK(a->game_id == b->game_id);
        break;
    default:
        break;
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* game.* defaults, and different ones for the second parse */
    struct game_settings defaults = {40, 30, 100, 3, 1, 8};
    struct game_settings other = {20, 20, 50, 1, 0, 2};
    struct game_msg m, n;
    cJSON *c;
    char *text;
    int rc;

    rc = game_msg_parse(data, size, &defaults, &m);
    check(&m, rc);
    if (rc == PM_OK) {
        c = canonical(&m);
        text = cJSON_PrintUnformatted(c);
        FUZZ_CHECK(text != NULL);
        rc = game_msg_parse((const uint8_t *)text, strlen(text), &other, &n);
        if (rc != PM_OK)
            fprintf(stderr, "canonical form refused (%s): %s\n", n.error, text);
        check(&n, rc);
        same(&m, &n);
        game_msg_free(&n);
        cJSON_free(text);
        cJSON_Delete(c);
    }
    game_msg_free(&m);
    return 0;
}
