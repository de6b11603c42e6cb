/*
 * game_watch: which of this node's sessions watch which game, and the
 * delivery of that game's messages to them. A session watches at most
 * one game (as a player or a spectator). When the game's owner is
 * another node, this node subscribes to it once over the peer link and
 * fans the owner's events out locally; when ownership moves (failover,
 * hand-off) the subscription follows the new owner, whose first message
 * is a Snapshot.
 */
#include "config.h"

#include <stdlib.h>

#include <utlist.h>

#include "game.h"
#include "pm_conn.h"
#include "pm_util.h"

struct game_watch *
game_watch_find(struct game_node *gn, uint64_t gid)
{
    struct game_watch *w;

    HASH_FIND(hh, gn->watches, &gid, sizeof gid, w);
    return w;
}

static void
send_snapshot(struct game_room *r, struct game_session *s)
{
    size_t len;
    char *msg = game_room_snapshot_msg(r, &len);

    pm_conn_ws_send(s->conn, PM_WS_TEXT, msg, len);
    free(msg);
}

void
game_watch_snapshot(struct game_node *gn, uint64_t gid, struct game_session *s)
{
    struct fsm_game *fg = game_fsm_game(gn, gid);
    struct game_room *r;
    struct game_watch *w;

    if (fg == NULL)
        return;
    if (fg->owner == gn->node_id) {
        r = game_room_find(gn, gid);
        if (r == NULL)
            return; /* opening: its first message is a Snapshot */
        if (s != NULL) {
            send_snapshot(r, s);
        } else if ((w = game_watch_find(gn, gid)) != NULL) {
            DL_FOREACH2(w->list, s, wnext)
            {
                send_snapshot(r, s);
            }
        }
        return;
    }
    game_peer_snapshot_req(gn, fg->owner, gid, s != NULL ? s->id : 0);
}

void
game_watch_resubscribe(struct game_node *gn, uint64_t gid)
{
    struct game_watch *w = game_watch_find(gn, gid);
    struct fsm_game *fg = game_fsm_game(gn, gid);

    if (w == NULL)
        return;
    if (fg == NULL) {
        game_watch_drop(gn, gid);
        return;
    }
    if (fg->owner == gn->node_id) {
        w->subscribed_to = 0;
        return; /* the local room delivers directly */
    }
    if (w->subscribed_to == fg->owner)
        return;
    w->subscribed_to = fg->owner;
    game_peer_subscribe(gn, fg->owner, gid); /* answered with a Snapshot */
}

void
game_watch_add(struct game_node *gn, struct game_session *s, uint64_t gid,
               bool player)
{
    struct game_watch *w;
    struct fsm_game *fg;

    if (s->watching == gid) {
        s->player = s->player || player;
        game_watch_snapshot(gn, gid, s);
        return;
    }
    game_watch_remove(s);
    w = game_watch_find(gn, gid);
    if (w == NULL) {
        w = pm_xcalloc(1, sizeof *w);
        w->game_id = gid;
        HASH_ADD(hh, gn->watches, game_id, sizeof w->game_id, w);
    }
    DL_APPEND2(w->list, s, wprev, wnext);
    w->n++;
    s->watching = gid;
    s->player = player;
    fg = game_fsm_game(gn, gid);
    if (fg != NULL && fg->owner != gn->node_id &&
        w->subscribed_to != fg->owner) {
        game_watch_resubscribe(gn, gid); /* the answer covers s too */
        return;
    }
    game_watch_snapshot(gn, gid, s);
}

void
game_watch_remove(struct game_session *s)
{
    struct game_node *gn = s->node;
    struct game_watch *w;

    if (s->watching == 0)
        return;
    w = game_watch_find(gn, s->watching);
    s->watching = 0;
    s->player = false;
    if (w == NULL)
        return;
    DL_DELETE2(w->list, s, wprev, wnext);
    s->wprev = s->wnext = NULL;
    if (--w->n == 0) {
        HASH_DEL(gn->watches, w);
        free(w);
    }
}

void
game_watch_deliver(struct game_node *gn, uint64_t gid, const char *msg,
                   size_t len)
{
    struct game_watch *w = game_watch_find(gn, gid);
    struct game_session *s, *t;

    if (w == NULL)
        return;
    DL_FOREACH_SAFE2(w->list, s, t, wnext)
    {
        pm_conn_ws_send(s->conn, PM_WS_TEXT, msg, len);
    }
}

void
game_watch_drop(struct game_node *gn, uint64_t gid)
{
    struct game_watch *w = game_watch_find(gn, gid);
    struct game_session *s, *t;

    if (w == NULL)
        return;
    DL_FOREACH_SAFE2(w->list, s, t, wnext)
    {
        s->watching = 0;
        s->player = false;
        s->wprev = s->wnext = NULL;
    }
    HASH_DEL(gn->watches, w);
    free(w);
}

/* The link to node came (back) up: renew the subscriptions it serves. */
void
game_watch_link_up(struct game_node *gn, uint64_t node)
{
    struct game_watch *w, *t;

    HASH_ITER(hh, gn->watches, w, t)
    {
        if (w->subscribed_to == node)
            game_peer_subscribe(gn, node, w->game_id);
    }
}
