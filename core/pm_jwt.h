/*
 * pm_jwt: HMAC credentials and digests, so roles never touch OpenSSL for
 * them.
 * Verifying compact JSON Web Tokens signed with HS256 (RFC 7519, RFC
 * 7515): the header's alg must be exactly "HS256" (none, HS512, RS256...
 * are refused, which rules out algorithm-confusion attacks), the
 * signature is compared in constant time, exp and nbf are honoured when
 * present with PM_JWT_LEEWAY_S of clock skew, and sub is required. Also
 * the base64 HMAC-SHA1 that coturn's REST API uses as TURN password.
 * Pure functions: no state, any thread.
 */
#ifndef PM_JWT_H
#define PM_JWT_H

#include <stddef.h>
#include <stdint.h>

/* Longest token read; a longer one is refused before any decoding. */
#define PM_JWT_MAX_LEN 8192
/* Clock skew allowed between the issuer and us, for exp and nbf. */
#define PM_JWT_LEEWAY_S 30

struct pm_jwt_claims {
    char *sub;   /* malloc'd (caller frees), non-empty */
    int64_t exp; /* Unix seconds (rounded down); 0 when the token has none */
};

/*
 * Verify token[0..len) with the HS256 key[0..keylen) at Unix time now.
 * PM_OK with *out filled, or PM_EINVAL with the reason in err (the reason
 * never quotes the token). exp is optional; when present the token is
 * refused from exp + PM_JWT_LEEWAY_S on, and a present nbf refuses it
 * until nbf - PM_JWT_LEEWAY_S.
 */
int pm_jwt_verify(const char *token, size_t len, const void *key, size_t keylen,
                  int64_t now, struct pm_jwt_claims *out, char *err,
                  size_t errlen);

struct cJSON;
/*
 * The same checks without requiring sub: PM_OK with *claims the whole
 * claim set (the caller frees it with cJSON_Delete), or PM_EINVAL.
 */
int pm_jwt_decode(const char *token, size_t len, const void *key, size_t keylen,
                  int64_t now, struct cJSON **claims, char *err, size_t errlen);
/* A compact HS256 token over claims (borrowed); malloc'd, caller frees. */
char *pm_jwt_sign(const struct cJSON *claims, const void *key, size_t keylen);

/* Lower-case hex SHA-256 of data, NUL-ended. */
#define PM_SHA256_HEX_SIZE 65
void pm_sha256_hex(const void *data, size_t len, char out[PM_SHA256_HEX_SIZE]);

/* base64 of HMAC-SHA1 is 28 characters; with the NUL: */
#define PM_HMAC_SHA1_B64_SIZE 29
/*
 * out = base64(HMAC-SHA1(key, data)), NUL-ended: the password of coturn's
 * REST API (use-auth-secret) for the username data.
 */
void pm_hmac_sha1_base64(const void *key, size_t keylen, const void *data,
                         size_t len, char out[PM_HMAC_SHA1_B64_SIZE]);

#endif
