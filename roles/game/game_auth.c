/*
 * game_auth: guest identities and the tokens that carry them. A guest
 * token is an HS256 JWT (jwt.secret) with sub "g-" + 16 hex digits, the
 * nickname as username, is_guest true, iat and exp (game.token_ttl).
 * Any HS256 token with a sub signed by the same secret is accepted, so a
 * site that issues its own tokens (SnakeTron's accounts) works as is.
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "game.h"
#include "pm_jwt.h"
#include "pm_util.h"

/* 3-20 of [A-Za-z0-9_-], not starting or ending with '_' or '-'. */
bool
game_nickname_valid(const char *s)
{
    size_t n = strlen(s), i;

    if (n < 3 || n > GAME_NAME_MAX)
        return false;
    for (i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-')
            return false;
    return isalnum((unsigned char)s[0]) && isalnum((unsigned char)s[n - 1]);
}

int
game_auth_guest(struct game_node *gn, const char *nickname, char **token,
                cJSON **user, char *err, size_t errlen)
{
    uint8_t rnd[8];
    char id[2 + 2 * sizeof rnd + 1], name[GAME_NAME_MAX + 1];
    uint64_t now = pm_wall_ms() / 1000;
    cJSON *claims;

    if (nickname != NULL && !game_nickname_valid(nickname))
        return pm_errf(err, errlen, PM_EINVAL,
                       "nickname must be 3-20 letters, digits, '_' or '-', "
                       "not starting or ending with '_' or '-'");
    pm_random_bytes(rnd, sizeof rnd);
    id[0] = 'g';
    id[1] = '-';
    pm_hex_encode(rnd, sizeof rnd, id + 2);
    if (nickname != NULL)
        pm_strlcpy(name, nickname, sizeof name);
    else
        snprintf(name, sizeof name, "guest-%.4s", id + 2);
    claims = cJSON_CreateObject();
    cJSON_AddStringToObject(claims, "sub", id);
    cJSON_AddStringToObject(claims, "username", name);
    cJSON_AddBoolToObject(claims, "is_guest", true);
    cJSON_AddNumberToObject(claims, "iat", (double)now);
    cJSON_AddNumberToObject(claims, "exp",
                            (double)(now + gn->conf->token_ttl / 1000));
    *token = pm_jwt_sign(claims, gn->jwt_secret, gn->jwt_secret_len);
    cJSON_Delete(claims);
    *user = cJSON_CreateObject();
    cJSON_AddStringToObject(*user, "id", id);
    cJSON_AddStringToObject(*user, "username", name);
    cJSON_AddBoolToObject(*user, "is_guest", true);
    return PM_OK;
}

int
game_auth_check(struct game_node *gn, const char *token, char *user,
                size_t userlen, char *name, size_t namelen, char *err,
                size_t errlen)
{
    cJSON *claims = NULL;
    const cJSON *sub, *un;
    int rc;

    rc = pm_jwt_decode(token, strlen(token), gn->jwt_secret, gn->jwt_secret_len,
                       (int64_t)(pm_wall_ms() / 1000), &claims, err, errlen);
    if (rc != PM_OK)
        return rc;
    sub = cJSON_GetObjectItemCaseSensitive(claims, "sub");
    un = cJSON_GetObjectItemCaseSensitive(claims, "username");
    if (!cJSON_IsString(sub) || sub->valuestring[0] == '\0' ||
        strlen(sub->valuestring) > GAME_USER_MAX) {
        cJSON_Delete(claims);
        return pm_errf(err, errlen, PM_EINVAL,
                       "token needs a sub of 1-%d bytes", GAME_USER_MAX);
    }
    pm_strlcpy(user, sub->valuestring, userlen);
    pm_strlcpy(name, cJSON_IsString(un) ? un->valuestring : sub->valuestring,
               namelen);
    cJSON_Delete(claims);
    return PM_OK;
}
