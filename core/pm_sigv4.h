/*
 * pm_sigv4: AWS Signature Version 4 (header form) for the requests p2pmesh
 * makes to AWS (API Gateway Management API, DynamoDB). A pure function of
 * the request, the credentials, the scope and the time: no I/O, so it is
 * tested against the official test suite. The canonical URI encodes the
 * path as it goes on the wire once more (every byte but unreserved ones
 * and '/'), which is what every service except S3 checks: a '%' already
 * on the wire becomes %25 (the execute-api @connections case).
 */
#ifndef PM_SIGV4_H
#define PM_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct pm_sigv4_header {
    const char *name; /* any case; repeated names are joined with ',' */
    const char *value;
};

struct pm_sigv4_request {
    const char *method;
    const char *path;  /* as sent on the wire (already percent-encoded) */
    const char *query; /* after '?', or NULL */
    const struct pm_sigv4_header *headers; /* all signed; host included */
    size_t nheaders;
    const void *body;
    size_t body_len;
    bool normalize; /* remove "." and ".." segments and repeated slashes */
};

struct pm_sigv4_creds {
    const char *access_key_id;
    const char *secret_access_key;
    const char *session_token; /* NULL for long-term keys */
};

enum {
    PM_SIGV4_SIGN_BODY = 1,   /* add and sign x-amz-content-sha256 */
    PM_SIGV4_TOKEN_AFTER = 2, /* send the token unsigned (STS style) */
    PM_SIGV4_S3 = 4,          /* S3: the canonical URI is the path as sent
                                 (encoded once, not twice) */
};

/* Results; strings are NUL-ended and owned by the struct. */
struct pm_sigv4 {
    char amz_date[17];     /* X-Amz-Date value */
    char payload_hash[65]; /* hex SHA-256 of the body */
    char signature[65];    /* hex */
    char *canonical;       /* the canonical request */
    char *string_to_sign;
    char *authorization; /* the Authorization header value */
};

/*
 * Sign req for region/service at time when with flags. The caller sends
 * X-Amz-Date, X-Amz-Security-Token (with a session token),
 * X-Amz-Content-Sha256 (PM_SIGV4_SIGN_BODY) and Authorization. Returns
 * PM_OK, or PM_EINVAL with a reason (no header, bad time).
 */
int pm_sigv4_sign(const struct pm_sigv4_request *req,
                  const struct pm_sigv4_creds *creds, const char *region,
                  const char *service, time_t when, unsigned flags,
                  struct pm_sigv4 *out, char *err, size_t errlen);
void pm_sigv4_free(struct pm_sigv4 *out);

/* AWS's UriEncode of s: every byte but A-Z a-z 0-9 - _ . ~ as %XX ('/'
 * included), for a path segment such as an API Gateway connection id.
 * malloc'd. */
char *pm_sigv4_uri_encode(const char *s);

#endif
