/*
 * fuzz_jwt: drives core/pm_jwt.c's HS256 verification (pm_jwt_verify,
 * pm_jwt_decode: base64url, the header's alg, the signature, exp, nbf,
 * sub) on a token under a fixed key and clock.
 *
 * Input: the token. Valid seeds are signed with FUZZ_JWT_KEY.
 *
 * Asserts: a verified token has a non-empty sub and exp >= 0; verify and
 * decode agree (decode accepts whatever verify accepts); the same token
 * under a different key is refused; a refusal has a reason that does not
 * quote the token; claims that decoded, signed again with pm_jwt_sign,
 * verify to the same sub.
 */
#include "config.h"

#include <string.h>

#include <cjson/cJSON.h>

#include "fuzz.h"
#include "pm_jwt.h"
#include "pm_util.h"

#define FUZZ_JWT_KEY "fuzz-secret"
#define FUZZ_NOW 1700000000

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pm_jwt_claims c = {NULL, 0}, c2 = {NULL, 0};
    char err[PM_ERRMSG_SIZE] = "", *tok, *again;
    cJSON *claims = NULL, *other = NULL;
    int rv, rv2;

    /* An exact-size heap copy: ASan sees any read past the end. */
    tok = pm_xmalloc(size ? size : 1);
    memcpy(tok, data, size);
    rv = pm_jwt_verify(tok, size, FUZZ_JWT_KEY, strlen(FUZZ_JWT_KEY), FUZZ_NOW,
                       &c, err, sizeof err);
    FUZZ_CHECK(rv == PM_OK || rv == PM_EINVAL);
    if (rv == PM_OK) {
        FUZZ_CHECK(c.sub != NULL && c.sub[0] != '\0');
        FUZZ_CHECK(c.exp >= 0);
    } else {
        FUZZ_CHECK(err[0] != '\0');
        if (size >= 24 && memchr(tok, '\0', size) == NULL) {
            char *z = pm_xstrndup(tok, size);

            FUZZ_CHECK(strstr(err, z) == NULL);
            free(z);
        }
    }
    rv2 = pm_jwt_decode(tok, size, FUZZ_JWT_KEY, strlen(FUZZ_JWT_KEY), FUZZ_NOW,
                        &claims, err, sizeof err);
    FUZZ_CHECK(rv2 == PM_OK || rv2 == PM_EINVAL);
    if (rv == PM_OK)
        FUZZ_CHECK(rv2 == PM_OK);
    if (rv2 == PM_OK) {
        FUZZ_CHECK(cJSON_IsObject(claims));
        /* another key never verifies it */
        FUZZ_CHECK(pm_jwt_decode(tok, size, "fuzz-secreT", 11, FUZZ_NOW, &other,
                                 err, sizeof err) == PM_EINVAL);
        FUZZ_CHECK(other == NULL);
        again = pm_jwt_sign(claims, FUZZ_JWT_KEY, strlen(FUZZ_JWT_KEY));
        FUZZ_CHECK(again != NULL);
        rv2 =
            pm_jwt_verify(again, strlen(again), FUZZ_JWT_KEY,
                          strlen(FUZZ_JWT_KEY), FUZZ_NOW, &c2, err, sizeof err);
        FUZZ_CHECK(rv2 == rv);
        if (rv == PM_OK)
            FUZZ_CHECK(strcmp(c.sub, c2.sub) == 0 && c.exp == c2.exp);
        free(c2.sub);
        free(again);
        cJSON_Delete(claims);
    }
    free(c.sub);
    free(tok);
    return 0;
}
