/*
 * pm_asset: static files embedded in the binary at build time (a role's
 * web client), served to GET requests with a strong ETag (so browsers
 * revalidate with a 304) and headers that keep the page to its own
 * origin.
 */
#ifndef PM_ASSET_H
#define PM_ASSET_H

#include <stddef.h>

struct pm_conn;
struct pm_http_request;

struct pm_asset {
    const char *path;  /* "/" for index.html, "/app.js", ... */
    const char *ctype; /* Content-Type */
    const unsigned char *data;
    size_t len;
};

/*
 * Answer req on c from table (ended by an entry whose path is NULL; the
 * first entry also answers /index.html). PM_OK when answered,
 * PM_ENOTFOUND when req is not a GET of one of the files.
 */
int pm_asset_route(struct pm_conn *c, const struct pm_http_request *req,
                   const struct pm_asset *table);

#endif
