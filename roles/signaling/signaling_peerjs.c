/*
 * signaling_peerjs: the PeerJS dialect (placeholder while it is built).
 */
#include "config.h"

#include <string.h>

#include "pm_conn.h"
#include "pm_http.h"
#include "pm_util.h"
#include "signaling.h"

void
sig_peerjs_init(struct sig *s)
{
    (void)s;
}
void
sig_peerjs_free(struct sig *s)
{
    (void)s;
}
int
sig_peerjs_http(struct sig *s, struct pm_conn *conn,
                const struct pm_http_request *req)
{
    (void)s;
    (void)conn;
    (void)req;
    return PM_ENOTFOUND;
}
bool
sig_peerjs_is_ws(const struct sig *s, const struct pm_http_request *req)
{
    (void)s;
    return req->path_len >= 7 &&
           memcmp(req->path + req->path_len - 7, "/peerjs", 7) == 0;
}
void
sig_peerjs_upgrade(struct sig *s, struct sig_client *c,
                   const struct pm_http_request *req)
{
    (void)s;
    (void)c;
    (void)req;
}
void
sig_peerjs_open(struct sig *s, struct sig_client *c)
{
    (void)s;
    pm_conn_ws_close(c->conn, 1011,
                     "the PeerJS dialect is not implemented yet");
}
void
sig_peerjs_message(struct sig *s, struct sig_client *c, const char *data,
                   size_t len)
{
    (void)s;
    (void)c;
    (void)data;
    (void)len;
}
void
sig_peerjs_departed(struct sig *s, struct sig_client *c)
{
    (void)s;
    (void)c;
}
void
sig_peerjs_displaced(struct sig *s, struct sig_client *c)
{
    sig_realm_remove(s, c);
    pm_conn_ws_close(c->conn, 1000, "id taken over");
}
