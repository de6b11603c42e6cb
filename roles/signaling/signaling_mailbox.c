/*
 * signaling_mailbox: the mailbox dialect (placeholder while it is built).
 */
#include "config.h"

#include <string.h>

#include "pm_conn.h"
#include "pm_http.h"
#include "pm_util.h"
#include "signaling.h"

void
sig_mailbox_init(struct sig *s)
{
    (void)s;
}
void
sig_mailbox_free(struct sig *s)
{
    (void)s;
}
int
sig_mailbox_http(struct sig *s, struct pm_conn *conn,
                 const struct pm_http_request *req, const uint8_t *body,
                 size_t len)
{
    (void)s;
    (void)conn;
    (void)req;
    (void)body;
    (void)len;
    return PM_ENOTFOUND;
}
bool
sig_mailbox_is_ws(const struct sig *s, const struct pm_http_request *req)
{
    (void)s;
    return req->path_len > 4 && memcmp(req->path, "/ws/", 4) == 0;
}
int
sig_mailbox_upgrade(struct sig *s, struct sig_client *c,
                    const struct pm_http_request *req, int *status)
{
    (void)s;
    (void)c;
    (void)req;
    *status = 501;
    return PM_EINVAL;
}
void
sig_mailbox_departed(struct sig *s, struct sig_client *c)
{
    (void)s;
    (void)c;
}
void
sig_mailbox_remote(struct sig *s, const char *id, const char *msg, size_t len)
{
    (void)s;
    (void)id;
    (void)msg;
    (void)len;
}
