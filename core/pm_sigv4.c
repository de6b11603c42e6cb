/*
 * pm_sigv4: AWS Signature Version 4 (see pm_sigv4.h). Canonical request,
 * string to sign, signing key and signature as AWS documents them; the
 * pieces are built in an evbuffer and hashed with OpenSSL.
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "pm_sigv4.h"
#include "pm_util.h"

static bool
unreserved(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~';
}

/* Percent-encode every byte but unreserved ones (and '/' if keep_slash). */
static void
uri_encode(struct evbuffer *b, const char *s, size_t n, bool keep_slash)
{
    size_t i;

    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (unreserved(c) || (keep_slash && c == '/'))
            evbuffer_add(b, &s[i], 1);
        else
            evbuffer_add_printf(b, "%%%02X", c);
    }
}

char *
pm_sigv4_uri_encode(const char *s)
{
    struct evbuffer *b = evbuffer_new();
    size_t n;
    char *out;

    uri_encode(b, s, strlen(s), false);
    n = evbuffer_get_length(b);
    out = pm_xmalloc(n + 1);
    evbuffer_remove(b, out, n);
    out[n] = '\0';
    evbuffer_free(b);
    return out;
}

/* The path without "." and ".." segments and empty ones. */
static char *
normalize_path(const char *path)
{
    size_t n = strlen(path), depth = 0, i = 0;
    char *out = pm_xmalloc(n + 2), **seg = pm_xmalloc((n + 1) * sizeof *seg);
    char *copy = pm_xstrdup(path), *save = NULL, *tok;
    bool trailing = n > 1 && path[n - 1] == '/';

    for (tok = strtok_r(copy, "/", &save); tok != NULL;
         tok = strtok_r(NULL, "/", &save)) {
        if (strcmp(tok, ".") == 0)
            continue;
        if (strcmp(tok, "..") == 0) {
            if (depth > 0)
                depth--;
            continue;
        }
        seg[depth++] = tok;
    }
    out[i++] = '/';
    for (n = 0; n < depth; n++) {
        size_t len = strlen(seg[n]);

        memcpy(out + i, seg[n], len);
        i += len;
        if (n + 1 < depth || trailing)
            out[i++] = '/';
    }
    out[i] = '\0';
    free(seg);
    free(copy);
    return out;
}

struct qparam {
    char *name, *value; /* encoded */
};

static int
qparam_cmp(const void *a, const void *b)
{
    const struct qparam *x = a, *y = b;
    int d = strcmp(x->name, y->name);

    return d != 0 ? d : strcmp(x->value, y->value);
}

/* Decode then encode s[0..n) into a new string. */
static char *
reencode(const char *s, size_t n)
{
    char *dec = pm_xmalloc(n + 1), *out;
    size_t dlen;
    struct evbuffer *b = evbuffer_new();

    if (pm_percent_decode(s, n, false, dec, n + 1) != PM_OK) {
        memcpy(dec, s, n); /* not valid %-encoding: take it as it is */
        dec[n] = '\0';
    }
    dlen = strlen(dec);
    uri_encode(b, dec, dlen, false);
    evbuffer_add(b, "", 1);
    out = pm_xstrdup((const char *)evbuffer_pullup(b, -1));
    evbuffer_free(b);
    free(dec);
    return out;
}

static void
canonical_query(struct evbuffer *b, const char *q)
{
    struct qparam *p = NULL;
    size_t n = 0, i;
    const char *s = q;

    while (q != NULL && *s != '\0') {
        const char *amp = strchr(s, '&'), *end = amp ? amp : s + strlen(s);
        const char *eq = memchr(s, '=', (size_t)(end - s));

        if (end > s) {
            p = pm_xrealloc(p, (n + 1) * sizeof *p);
            p[n].name = reencode(s, (size_t)((eq ? eq : end) - s));
            p[n].value =
                eq ? reencode(eq + 1, (size_t)(end - eq - 1)) : pm_xstrdup("");
            n++;
        }
        s = amp ? amp + 1 : end;
    }
    if (n > 1)
        qsort(p, n, sizeof *p, qparam_cmp);
    for (i = 0; i < n; i++) {
        evbuffer_add_printf(b, "%s%s=%s", i ? "&" : "", p[i].name, p[i].value);
        free(p[i].name);
        free(p[i].value);
    }
    free(p);
}

struct chdr {
    char *name;  /* lower case */
    char *value; /* trimmed, spaces collapsed, repeats joined */
};

static int
chdr_cmp(const void *a, const void *b)
{
    return strcmp(((const struct chdr *)a)->name,
                  ((const struct chdr *)b)->name);
}

/* Trim and collapse runs of whitespace to one space. */
static void
append_value(struct evbuffer *b, const char *v)
{
    bool space = false, started = false;

    for (; *v != '\0'; v++) {
        if (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n') {
            space = started;
            continue;
        }
        if (space)
            evbuffer_add(b, " ", 1);
        evbuffer_add(b, v, 1);
        space = false;
        started = true;
    }
}

/* Add name: value to the set (joining a repeated name with ','). */
static void
add_header(struct chdr **h, size_t *n, const char *name, const char *value)
{
    struct evbuffer *b = evbuffer_new();
    char *lower = pm_xstrdup(name), *p;
    size_t i;

    for (p = lower; *p != '\0'; p++)
        *p = (char)tolower((unsigned char)*p);
    for (i = 0; i < *n; i++)
        if (strcmp((*h)[i].name, lower) == 0)
            break;
    if (i < *n) {
        evbuffer_add_printf(b, "%s,", (*h)[i].value);
        free((*h)[i].value);
        free(lower);
    } else {
        *h = pm_xrealloc(*h, (*n + 1) * sizeof **h);
        (*h)[i].name = lower;
        (*n)++;
    }
    append_value(b, value);
    evbuffer_add(b, "", 1);
    (*h)[i].value = pm_xstrdup((const char *)evbuffer_pullup(b, -1));
    evbuffer_free(b);
}

static void
hex(const uint8_t *d, size_t n, char *out)
{
    size_t i;

    for (i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void
sha256_hex(const void *data, size_t len, char out[65])
{
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    PM_ASSERT(EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) == 1);
    hex(md, mdlen, out);
}

static void
hmac256(const void *key, size_t keylen, const char *data, uint8_t out[32])
{
    unsigned int len = 0;

    PM_ASSERT(HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)data,
                   strlen(data), out, &len) != NULL);
}

static char *
take(struct evbuffer *b)
{
    char *s;

    evbuffer_add(b, "", 1);
    s = pm_xstrdup((const char *)evbuffer_pullup(b, -1));
    evbuffer_drain(b, evbuffer_get_length(b));
    return s;
}

int
pm_sigv4_sign(const struct pm_sigv4_request *req,
              const struct pm_sigv4_creds *creds, const char *region,
              const char *service, time_t when, unsigned flags,
              struct pm_sigv4 *out, char *err, size_t errlen)
{
    struct evbuffer *b;
    struct chdr *h = NULL;
    struct tm tm;
    char date[9], hash[65], *path, *secret, *signed_list, *scope;
    uint8_t k1[32], k2[32];
    size_t nh = 0, i;
    bool has_host = false;

    memset(out, 0, sizeof *out);
    if (gmtime_r(&when, &tm) == NULL)
        return pm_errf(err, errlen, PM_EINVAL, "sigv4: bad time");
    strftime(out->amz_date, sizeof out->amz_date, "%Y%m%dT%H%M%SZ", &tm);
    memcpy(date, out->amz_date, 8);
    date[8] = '\0';
    sha256_hex(req->body ? req->body : "", req->body_len, out->payload_hash);

    for (i = 0; i < req->nheaders; i++) {
        add_header(&h, &nh, req->headers[i].name, req->headers[i].value);
        has_host |= strcmp(h[nh - 1].name, "host") == 0;
    }
    if (!has_host) {
        for (i = 0; i < nh; i++) {
            free(h[i].name);
            free(h[i].value);
        }
        free(h);
        return pm_errf(err, errlen, PM_EINVAL,
                       "sigv4: the request has no Host header");
    }
    add_header(&h, &nh, "x-amz-date", out->amz_date);
    if (creds->session_token != NULL && !(flags & PM_SIGV4_TOKEN_AFTER))
        add_header(&h, &nh, "x-amz-security-token", creds->session_token);
    if (flags & PM_SIGV4_SIGN_BODY)
        add_header(&h, &nh, "x-amz-content-sha256", out->payload_hash);
    qsort(h, nh, sizeof *h, chdr_cmp);

    b = evbuffer_new();
    /* the signed header list */
    for (i = 0; i < nh; i++)
        evbuffer_add_printf(b, "%s%s", i ? ";" : "", h[i].name);
    signed_list = take(b);

    /* the canonical request */
    evbuffer_add_printf(b, "%s\n", req->method);
    path = req->normalize ? normalize_path(req->path[0] ? req->path : "/")
                          : pm_xstrdup(req->path[0] ? req->path : "/");
    if (flags & PM_SIGV4_S3)
        evbuffer_add(b, path, strlen(path));
    else
        uri_encode(b, path, strlen(path), true);
    free(path);
    evbuffer_add(b, "\n", 1);
    canonical_query(b, req->query);
    evbuffer_add(b, "\n", 1);
    for (i = 0; i < nh; i++) {
        evbuffer_add_printf(b, "%s:%s\n", h[i].name, h[i].value);
        free(h[i].name);
        free(h[i].value);
    }
    free(h);
    evbuffer_add_printf(b, "\n%s\n%s", signed_list, out->payload_hash);
    out->canonical = take(b);

    /* the string to sign */
    scope = pm_xasprintf("%s/%s/%s/aws4_request", date, region, service);
    sha256_hex(out->canonical, strlen(out->canonical), hash);
    out->string_to_sign = pm_xasprintf("AWS4-HMAC-SHA256\n%s\n%s\n%s",
                                       out->amz_date, scope, hash);

    /* the signing key and the signature */
    secret = pm_xasprintf("AWS4%s", creds->secret_access_key);
    hmac256(secret, strlen(secret), date, k1);
    hmac256(k1, 32, region, k2);
    hmac256(k2, 32, service, k1);
    hmac256(k1, 32, "aws4_request", k2);
    hmac256(k2, 32, out->string_to_sign, k1);
    hex(k1, 32, out->signature);
    OPENSSL_cleanse(secret, strlen(secret));
    OPENSSL_cleanse(k2, sizeof k2);
    free(secret);

    out->authorization = pm_xasprintf(
        "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s",
        creds->access_key_id, scope, signed_list, out->signature);
    free(scope);
    free(signed_list);
    evbuffer_free(b);
    return PM_OK;
}

void
pm_sigv4_free(struct pm_sigv4 *out)
{
    free(out->canonical);
    free(out->string_to_sign);
    free(out->authorization);
    memset(out, 0, sizeof *out);
}
