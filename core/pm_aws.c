/*
 * pm_aws: environment credentials and SigV4-signed requests over
 * pm_httpc (see pm_aws.h).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pm_aws.h"
#include "pm_sigv4.h"
#include "pm_util.h"

#define MAX_HEADERS 16

static char *
env_dup(const char *name)
{
    const char *v = getenv(name);

    return v != NULL && *v != '\0' ? pm_xstrdup(v) : NULL;
}

int
pm_aws_creds_from_env(struct pm_aws_creds *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    c->access_key_id = env_dup("AWS_ACCESS_KEY_ID");
    if (c->access_key_id == NULL)
        c->access_key_id = env_dup("AWS_ACCESS_KEY");
    c->secret_access_key = env_dup("AWS_SECRET_ACCESS_KEY");
    c->session_token = env_dup("AWS_SESSION_TOKEN");
    if (c->access_key_id == NULL || c->secret_access_key == NULL) {
        pm_aws_creds_clear(c);
        return pm_errf(err, errlen, PM_EINVAL,
                       "AWS credentials missing: set AWS_ACCESS_KEY_ID and "
                       "AWS_SECRET_ACCESS_KEY (Lambda sets them)");
    }
    return PM_OK;
}

void
pm_aws_creds_clear(struct pm_aws_creds *c)
{
    free(c->access_key_id);
    free(c->secret_access_key);
    free(c->session_token);
    memset(c, 0, sizeof *c);
}

int
pm_aws_url_authority(const char *url, char *out, size_t outlen,
                     const char **path_out)
{
    const char *p, *end, *dflt;
    size_t n;

    if (strncmp(url, "https://", 8) == 0) {
        p = url + 8;
        dflt = ":443";
    } else if (strncmp(url, "http://", 7) == 0) {
        p = url + 7;
        dflt = ":80";
    } else {
        return PM_EINVAL;
    }
    end = p + strcspn(p, "/?");
    n = (size_t)(end - p);
    /* the scheme's own port is not part of Host (pm_httpc omits it) */
    if (n > strlen(dflt) &&
        strncmp(end - strlen(dflt), dflt, strlen(dflt)) == 0)
        n -= strlen(dflt);
    if (n == 0 || n >= outlen)
        return PM_EINVAL;
    memcpy(out, p, n);
    out[n] = '\0';
    if (path_out != NULL)
        *path_out = end;
    return PM_OK;
}

int
pm_aws_send(struct pm_httpc *h, const struct pm_aws_creds *c,
            const char *region, const char *service,
            const struct pm_httpc_req *req, pm_httpc_fn cb, void *arg,
            char *err, size_t errlen)
{
    struct pm_sigv4_header sh[MAX_HEADERS];
    struct pm_httpc_header hh[MAX_HEADERS];
    struct pm_sigv4_creds sc = {c->access_key_id, c->secret_access_key,
                                c->session_token};
    struct pm_sigv4_request sr;
    struct pm_httpc_req signed_req = *req;
    struct pm_sigv4 sig;
    char host[256], *path, *query;
    const char *wire;
    size_t i, n = 0;
    bool s3 = strcmp(service, "s3") == 0;
    int rv;

    if (req->nheaders + 4 > MAX_HEADERS)
        return pm_errf(err, errlen, PM_EINVAL, "too many headers to sign");
    if (pm_aws_url_authority(req->url, host, sizeof host, &wire) != PM_OK)
        return pm_errf(err, errlen, PM_EINVAL, "not an http(s) URL: %s",
                       req->url);
    path = pm_xstrdup(*wire == '/' ? wire : "/");
    query = strchr(path, '?');
    if (query != NULL)
        *query++ = '\0';
    sh[n++] = (struct pm_sigv4_header){"host", host};
    for (i = 0; i < req->nheaders; i++)
        sh[n++] = (struct pm_sigv4_header){req->headers[i].name,
                                           req->headers[i].value};
    sr = (struct pm_sigv4_request){req->method, path,          query, sh, n,
                                   req->body,   req->body_len, false};
    /* S3 wants the body hash signed and sent, and its own URI rule. */
    rv = pm_sigv4_sign(&sr, &sc, region, service, time(NULL),
                       s3 ? PM_SIGV4_SIGN_BODY | PM_SIGV4_S3 : 0, &sig, err,
                       errlen);
    free(path);
    if (rv != PM_OK)
        return rv;
    for (i = 0; i < req->nheaders; i++)
        hh[i] = req->headers[i];
    n = req->nheaders;
    hh[n++] = (struct pm_httpc_header){"X-Amz-Date", sig.amz_date};
    if (s3)
        hh[n++] =
            (struct pm_httpc_header){"X-Amz-Content-Sha256", sig.payload_hash};
    if (c->session_token != NULL)
        hh[n++] =
            (struct pm_httpc_header){"X-Amz-Security-Token", c->session_token};
    hh[n++] = (struct pm_httpc_header){"Authorization", sig.authorization};
    signed_req.headers = hh;
    signed_req.nheaders = n;
    rv = pm_httpc_send(h, &signed_req, cb, arg, err, errlen);
    pm_sigv4_free(&sig);
    return rv;
}
