/*
 * pm_aws: calling AWS APIs. Credentials and region from the environment
 * (as every AWS SDK reads them), and signed requests: the request is
 * signed with SigV4 (pm_sigv4) for its service and sent through a
 * pm_httpc client. Shared by the lambda role (API Gateway Management
 * API, DynamoDB) and any later AWS call. Loop thread only.
 */
#ifndef PM_AWS_H
#define PM_AWS_H

#include <stddef.h>
#include <time.h>

#include "pm_httpc.h"

struct pm_aws_creds {
    char *access_key_id;
    char *secret_access_key;
    char *session_token; /* NULL for long-term keys */
};

/*
 * Read AWS_ACCESS_KEY_ID (or the legacy AWS_ACCESS_KEY),
 * AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN into c (owned by c). PM_OK,
 * or PM_EINVAL naming what is missing.
 */
int pm_aws_creds_from_env(struct pm_aws_creds *c, char *err, size_t errlen);
void pm_aws_creds_clear(struct pm_aws_creds *c);

/*
 * Sign req for region/service with c at the current time and send it
 * through h: X-Amz-Date, X-Amz-Security-Token and Authorization are
 * added, and every header of req is signed with the host (the URL's
 * authority as written). As pm_httpc_send otherwise.
 */
int pm_aws_send(struct pm_httpc *h, const struct pm_aws_creds *c,
                const char *region, const char *service,
                const struct pm_httpc_req *req, pm_httpc_fn cb, void *arg,
                char *err, size_t errlen);

/* The Host of url ("host[:port]", without the scheme's default port) in
 * out; PM_EINVAL if url is not http(s)://. path_out (may be NULL) points
 * at the path in url. */
int pm_aws_url_authority(const char *url, char *out, size_t outlen,
                         const char **path_out);

#endif
