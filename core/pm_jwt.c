/*
 * pm_jwt: HS256 JSON Web Token verification and signing, SHA-256 digests
 * and the coturn REST API password (see pm_jwt.h). The token is checked in the
 * order that keeps untrusted input away from the parser: size and shape, then
 * the header (alg), then the signature over the bytes as sent, and only then
 * the claims. Decoding is strict: unpadded base64url with zero unused bits,
 * exactly one JSON object per part. Pure functions; any thread.
 */
#include "config.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "pm_jwt.h"
#include "pm_util.h"

#define SHA256_LEN 32
/* Latest NumericDate accepted (9999-12-31T23:59:59Z): keeps int64 safe. */
#define JWT_MAX_DATE 253402300799.0

static int
b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/*
 * Decode unpadded base64url s[0..n) into out (room for n * 3 / 4 bytes);
 * *outlen is the byte count. False if s is not the canonical encoding of
 * some bytes (a bad character, padding, an impossible length, or unused
 * bits that are not zero).
 */
static bool
b64url_decode(const char *s, size_t n, uint8_t *out, size_t *outlen)
{
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t i, o = 0;

    if (n % 4 == 1)
        return false;
    for (i = 0; i < n; i++) {
        int v = b64url_value((unsigned char)s[i]);

        if (v < 0)
            return false;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0)
        return false;
    *outlen = o;
    return true;
}

/* One base64url part holding exactly one JSON object, or NULL. */
static cJSON *
decode_object(const char *s, size_t n)
{
    uint8_t buf[PM_JWT_MAX_LEN / 4 * 3];
    const char *end;
    size_t len;
    cJSON *o;

    if (!b64url_decode(s, n, buf, &len))
        return NULL;
    o = cJSON_ParseWithLengthOpts((const char *)buf, len, &end, 0);
    if (o == NULL)
        return NULL;
    while (end < (const char *)buf + len &&
           (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n'))
        end++;
    if (!cJSON_IsObject(o) || end != (const char *)buf + len) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static int
check_header(const char *s, size_t n, char *err, size_t errlen)
{
    cJSON *h = decode_object(s, n);
    const cJSON *alg;
    int rv = PM_OK;

    if (h == NULL)
        return pm_errf(err, errlen, PM_EINVAL,
                       "token header is not a base64url JSON object");
    alg = cJSON_GetObjectItemCaseSensitive(h, "alg");
    if (!cJSON_IsString(alg) || strcmp(alg->valuestring, "HS256") != 0)
        rv = pm_errf(err, errlen, PM_EINVAL, "token alg is not HS256");
    else if (cJSON_GetObjectItemCaseSensitive(h, "crit") != NULL)
        /* RFC 7515 4.1.11: extensions we do not know must be refused. */
        rv =
            pm_errf(err, errlen, PM_EINVAL, "token header has crit extensions");
    cJSON_Delete(h);
    return rv;
}

/* mac = HMAC-md(key, data); returns its length. */
static unsigned int
hmac(const EVP_MD *md, const void *key, size_t keylen, const void *data,
     size_t len, uint8_t mac[EVP_MAX_MD_SIZE])
{
    unsigned int maclen = 0;
    const uint8_t *done = HMAC(md, key, (int)keylen, data, len, mac, &maclen);

    /* Only an OpenSSL without the digest, or out of memory, fails here. */
    PM_ASSERT(done != NULL);
    return maclen;
}

static int
check_signature(const char *token, size_t signed_len, const char *sig,
                size_t siglen, const void *key, size_t keylen, char *err,
                size_t errlen)
{
    uint8_t want[EVP_MAX_MD_SIZE], got[PM_JWT_MAX_LEN / 4 * 3];
    size_t gotlen;

    if (!b64url_decode(sig, siglen, got, &gotlen) || gotlen != SHA256_LEN)
        return pm_errf(err, errlen, PM_EINVAL,
                       "token signature is not a base64url HS256 MAC");
    hmac(EVP_sha256(), key, keylen, token, signed_len, want);
    if (CRYPTO_memcmp(want, got, SHA256_LEN) != 0)
        return pm_errf(err, errlen, PM_EINVAL, "token signature is wrong");
    return PM_OK;
}

/* A NumericDate claim: absent (PM_ENOTFOUND), or its value in *t. */
static int
date_claim(const cJSON *claims, const char *name, double *t, char *err,
           size_t errlen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(claims, name);

    if (v == NULL)
        return PM_ENOTFOUND;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0 ||
        v->valuedouble > JWT_MAX_DATE)
        return pm_errf(err, errlen, PM_EINVAL, "token %s is not a NumericDate",
                       name);
    *t = v->valuedouble;
    return PM_OK;
}

static int
check_dates(const cJSON *claims, int64_t now, char *err, size_t errlen)
{
    double exp = 0, nbf;
    int rv;

    rv = date_claim(claims, "exp", &exp, err, errlen);
    if (rv == PM_EINVAL)
        return rv;
    if (rv == PM_OK && (double)now >= exp + PM_JWT_LEEWAY_S)
        return pm_errf(err, errlen, PM_EINVAL, "token expired");
    rv = date_claim(claims, "nbf", &nbf, err, errlen);
    if (rv == PM_EINVAL)
        return rv;
    if (rv == PM_OK && (double)now + PM_JWT_LEEWAY_S < nbf)
        return pm_errf(err, errlen, PM_EINVAL, "token not valid yet (nbf)");
    return PM_OK;
}

int
pm_jwt_decode(const char *token, size_t len, const void *key, size_t keylen,
              int64_t now, struct cJSON **claims, char *err, size_t errlen)
{
    const char *dot1, *dot2, *end = token + len;
    cJSON *c;
    int rv;

    *claims = NULL;
    if (len > PM_JWT_MAX_LEN)
        return pm_errf(err, errlen, PM_EINVAL, "token is longer than %d bytes",
                       PM_JWT_MAX_LEN);
    dot1 = memchr(token, '.', len);
    dot2 = dot1 ? memchr(dot1 + 1, '.', (size_t)(end - dot1 - 1)) : NULL;
    if (dot2 == NULL || memchr(dot2 + 1, '.', (size_t)(end - dot2 - 1)))
        return pm_errf(err, errlen, PM_EINVAL,
                       "token is not three dot-separated parts");
    rv = check_header(token, (size_t)(dot1 - token), err, errlen);
    if (rv != PM_OK)
        return rv;
    rv = check_signature(token, (size_t)(dot2 - token), dot2 + 1,
                         (size_t)(end - dot2 - 1), key, keylen, err, errlen);
    if (rv != PM_OK)
        return rv;
    c = decode_object(dot1 + 1, (size_t)(dot2 - dot1 - 1));
    if (c == NULL)
        return pm_errf(err, errlen, PM_EINVAL,
                       "token payload is not a base64url JSON object");
    rv = check_dates(c, now, err, errlen);
    if (rv != PM_OK) {
        cJSON_Delete(c);
        return rv;
    }
    *claims = c;
    return PM_OK;
}

static int
check_sub(const cJSON *claims, struct pm_jwt_claims *out, char *err,
          size_t errlen)
{
    const cJSON *sub = cJSON_GetObjectItemCaseSensitive(claims, "sub");
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(claims, "exp");

    if (sub == NULL)
        return pm_errf(err, errlen, PM_EINVAL, "token has no sub");
    if (!cJSON_IsString(sub) || sub->valuestring[0] == '\0')
        return pm_errf(err, errlen, PM_EINVAL,
                       "token sub is not a non-empty string");
    out->sub = pm_xstrdup(sub->valuestring);
    /* Checked by check_dates: non-negative, so the cast rounds down. */
    out->exp = cJSON_IsNumber(exp) ? (int64_t)exp->valuedouble : 0;
    return PM_OK;
}

int
pm_jwt_verify(const char *token, size_t len, const void *key, size_t keylen,
              int64_t now, struct pm_jwt_claims *out, char *err, size_t errlen)
{
    cJSON *claims;
    int rv;

    out->sub = NULL;
    out->exp = 0;
    rv = pm_jwt_decode(token, len, key, keylen, now, &claims, err, errlen);
    if (rv != PM_OK)
        return rv;
    rv = check_sub(claims, out, err, errlen);
    cJSON_Delete(claims);
    return rv;
}

/* Unpadded base64url of in[0..n) appended at out; returns the length. */
static size_t
b64url_encode(const uint8_t *in, size_t n, char *out)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
        "0123456789-_";
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t i, o = 0;

    for (i = 0; i < n; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = tab[(acc >> bits) & 63];
        }
    }
    if (bits > 0)
        out[o++] = tab[(acc << (6 - bits)) & 63];
    out[o] = '\0';
    return o;
}

char *
pm_jwt_sign(const struct cJSON *claims, const void *key, size_t keylen)
{
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    char *payload = cJSON_PrintUnformatted(claims);
    size_t plen = strlen(payload), n;
    char *tok = pm_xmalloc((sizeof header + plen) * 4 / 3 + 64);
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned int maclen;

    n = b64url_encode((const uint8_t *)header, sizeof header - 1, tok);
    tok[n++] = '.';
    n += b64url_encode((const uint8_t *)payload, plen, tok + n);
    maclen = hmac(EVP_sha256(), key, keylen, tok, n, mac);
    tok[n++] = '.';
    b64url_encode(mac, maclen, tok + n);
    cJSON_free(payload);
    return tok;
}

void
pm_sha256_hex(const void *data, size_t len, char out[PM_SHA256_HEX_SIZE])
{
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    PM_ASSERT(EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) == 1);
    pm_hex_encode(md, mdlen, out);
}

void
pm_hmac_sha1_base64(const void *key, size_t keylen, const void *data,
                    size_t len, char out[PM_HMAC_SHA1_B64_SIZE])
{
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = hmac(EVP_sha1(), key, keylen, data, len, mac);

    EVP_EncodeBlock((unsigned char *)out, mac, (int)maclen);
}
