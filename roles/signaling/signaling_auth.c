/*
 * signaling_auth: signaling.auth and GET /ice (placeholder while built).
 */
#include "config.h"

#include "pm_conn.h"
#include "pm_http.h"
#include "pm_util.h"
#include "signaling.h"

int
sig_auth_check(struct sig *s, struct pm_conn *conn,
               const struct pm_http_request *req, char **sub, int *status)
{
    (void)s;
    (void)conn;
    (void)req;
    (void)status;
    *sub = NULL;
    return PM_OK;
}
int
sig_ice_http(struct sig *s, struct pm_conn *conn,
             const struct pm_http_request *req)
{
    (void)s;
    (void)conn;
    (void)req;
    return PM_ENOTFOUND;
}
