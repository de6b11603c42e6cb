/*
 * pm_asset: serves embedded files (see pm_asset.h).
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "pm_asset.h"
#include "pm_conn.h"
#include "pm_http.h"
#include "pm_util.h"

#define WEB_HEADERS                                                            \
    "Cache-Control: no-cache\r\n"                                              \
    "X-Content-Type-Options: nosniff\r\n"                                      \
    "X-Frame-Options: DENY\r\n"                                                \
    "Referrer-Policy: no-referrer\r\n"                                         \
    "Content-Security-Policy: default-src 'self'; connect-src 'self' ws: "     \
    "wss:; img-src 'self' data:; media-src *; frame-ancestors 'none'\r\n"

/* FNV-1a of the file: a strong validator for an immutable embedded file. */
static unsigned long long
fnv1a(const unsigned char *p, size_t n)
{
    unsigned long long h = 14695981039346656037ULL;
    size_t i;

    for (i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

int
pm_asset_route(struct pm_conn *c, const struct pm_http_request *req,
               const struct pm_asset *table)
{
    const struct pm_asset *a;
    const struct pm_http_header *inm;
    char etag[32], headers[sizeof WEB_HEADERS + 64];

    if (!(req->method_len == 3 && memcmp(req->method, "GET", 3) == 0))
        return PM_ENOTFOUND;
    for (a = table; a->path != NULL; a++)
        if (req->path_len == strlen(a->path) &&
            memcmp(req->path, a->path, req->path_len) == 0)
            break;
    if (a->path == NULL &&
        !(req->path_len == 11 && memcmp(req->path, "/index.html", 11) == 0))
        return PM_ENOTFOUND;
    if (a->path == NULL)
        a = table; /* /index.html is / */
    snprintf(etag, sizeof etag, "\"%016llx\"", fnv1a(a->data, a->len));
    snprintf(headers, sizeof headers, "%sETag: %s\r\n", WEB_HEADERS, etag);
    inm = pm_http_header_get(req, "If-None-Match");
    if (inm != NULL && inm->value_len == strlen(etag) &&
        memcmp(inm->value, etag, inm->value_len) == 0) {
        pm_conn_http_respond(c, 304, NULL, headers, NULL, 0);
        return PM_OK;
    }
    pm_conn_http_respond(c, 200, a->ctype, headers, a->data, a->len);
    return PM_OK;
}
