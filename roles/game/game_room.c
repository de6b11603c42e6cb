/*
 * game_room: the games this node owns. A room holds the engine state of
 * one game, ticks it on the loop at its own pace (deadlines from the
 * start time, so timer jitter never changes the game's speed), turns
 * each tick's events into GameEvent messages with the game's stream_seq,
 * and hands them to the local watchers and to the nodes subscribed to
 * the game. In a cluster it proposes a checkpoint every
 * game.checkpoint_interval, fenced by the room's epoch, and the result
 * when the game ends.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "game.h"
#include "game_json.h"
#include "pm_log.h"
#include "pm_server.h"
#include "pm_util.h"

#define ROOM_END_RETRY_MS 2000
#define ROOM_EARLY_SUB_MS 10000

struct game_room *
game_room_find(struct game_node *gn, uint64_t id)
{
    struct game_room *r;

    HASH_FIND(hh, gn->rooms, &id, sizeof id, r);
    return r;
}

/* ---- delivery ------------------------------------------------------------ */

static void
room_deliver(struct game_node *gn, struct game_room *r, const char *msg,
             size_t len)
{
    int i;

    game_watch_deliver(gn, r->id, msg, len);
    for (i = 0; i < r->nsubs; i++)
        game_peer_event(gn, r->subs[i], r->id, 0, msg, len);
}

/* {"GameEvent":{...,"event":EVENT}} with EVENT already serialised. */
static char *
envelope(const struct game_room *r, uint64_t seq, const char *event,
         size_t *len)
{
    char *s =
        pm_xasprintf("{\"GameEvent\":{\"game_id\":%" PRIu64 ",\"tick\":%" PRIu64
                     ",\"stream_seq\":%" PRIu64 ",\"event\":%s}}",
                     r->id, r->g->tick, seq, event);

    *len = strlen(s);
    return s;
}

static void
publish_text(struct game_node *gn, struct game_room *r, const char *event)
{
    size_t len;
    char *msg = envelope(r, ++r->stream_seq, event, &len);

    room_deliver(gn, r, msg, len);
    free(msg);
}

/* Publish what the last engine call left in g->events. */
static void
publish_events(struct game_node *gn, struct game_room *r)
{
    struct game *g = r->g;
    int i;

    for (i = 0; i < g->nevents; i++) {
        const struct game_event *ev = &g->events[i];
        cJSON *j;
        char *txt;

        if (ev->kind == GAME_EV_MOVED) {
            publish_text(gn, r, "\"Moved\"");
            continue;
        }
        j = game_event_json(g, ev);
        txt = cJSON_PrintUnformatted(j);
        cJSON_Delete(j);
        publish_text(gn, r, txt);
        free(txt);
    }
}

char *
game_room_snapshot_msg(struct game_room *r, size_t *len)
{
    cJSON *ev = cJSON_CreateObject(), *s;
    char *txt, *msg;

    s = cJSON_AddObjectToObject(ev, "Snapshot");
    cJSON_AddItemToObject(s, "state", game_state_json(r->g));
    txt = cJSON_PrintUnformatted(ev);
    cJSON_Delete(ev);
    msg = envelope(r, r->stream_seq, txt, len);
    free(txt);
    return msg;
}

static void
broadcast_snapshot(struct game_node *gn, struct game_room *r)
{
    size_t len;
    char *msg = game_room_snapshot_msg(r, &len);

    room_deliver(gn, r, msg, len);
    free(msg);
}

void
game_room_subscribe(struct game_node *gn, struct game_room *r, uint64_t node)
{
    size_t len;
    char *msg;
    int i;

    for (i = 0; i < r->nsubs && r->subs[i] != node; i++)
        ;
    if (i == r->nsubs) {
        if (r->nsubs == (int)(sizeof r->subs / sizeof r->subs[0]))
            return; /* more nodes than a cluster has */
        r->subs[r->nsubs++] = node;
    }
    msg = game_room_snapshot_msg(r, &len);
    game_peer_event(gn, node, r->id, 0, msg, len);
    free(msg);
}

/* ---- the cluster record -------------------------------------------------- */

static cJSON *
checkpoint_state(struct game_room *r)
{
    cJSON *st = game_checkpoint_json(r->g);
    char num[24];

    snprintf(num, sizeof num, "%" PRIu64, r->stream_seq);
    cJSON_AddStringToObject(st, "stream_seq", num);
    return st;
}

static cJSON *
entry(const char *kind, struct game_room *r)
{
    cJSON *e = cJSON_CreateObject();
    char num[24];

    cJSON_AddStringToObject(e, "t", kind);
    snprintf(num, sizeof num, "%" PRIu64, r->id);
    cJSON_AddStringToObject(e, "id", num);
    snprintf(num, sizeof num, "%" PRIu64, r->epoch);
    cJSON_AddStringToObject(e, "epoch", num);
    return e;
}

static void
propose_checkpoint(struct game_node *gn, struct game_room *r)
{
    cJSON *e = entry("ckpt", r);

    cJSON_AddItemToObject(e, "state", checkpoint_state(r));
    game_ctl_propose(gn, e);
    r->last_ckpt_ms = pm_now_ms();
}

static void
propose_end(struct game_node *gn, struct game_room *r)
{
    cJSON *e = entry("end", r);

    cJSON_AddNumberToObject(e, "winner", r->g->winner);
    game_ctl_propose(gn, e);
}

cJSON *
game_room_handoff(struct game_node *gn, struct game_room *r, uint64_t owner)
{
    cJSON *e = game_fsm_assign_entry(r->id, owner, r->epoch + 1);

    (void)gn;
    cJSON_AddItemToObject(e, "state", checkpoint_state(r));
    return e;
}

/* ---- ticking ------------------------------------------------------------- */

static void
arm(struct game_room *r, uint64_t at_ms)
{
    uint64_t now = pm_now_ms(), d = at_ms > now ? at_ms - now : 0;
    struct timeval tv = {(time_t)(d / 1000), (suseconds_t)(d % 1000) * 1000};

    evtimer_add(r->timer, &tv);
}

static void
room_tick(struct game_node *gn, struct game_room *r)
{
    struct game *g = r->g;
    uint64_t now = pm_now_ms(), tick_ms = (uint64_t)g->set.tick_ms, every;

    game_step(g);
    publish_events(gn, r);
    every = 1000 / tick_ms > 0 ? 1000 / tick_ms : 1;
    if (g->status != GAME_ENDED && g->tick % every == 0) {
        char ev[48];

        snprintf(ev, sizeof ev, "{\"TickHash\":{\"hash\":\"%08x\"}}",
                 game_hash(g));
        publish_text(gn, r, ev);
    }
    if (g->status == GAME_ENDED) {
        r->ended = true;
        propose_end(gn, r);
        arm(r, now + ROOM_END_RETRY_MS);
        return;
    }
    if (gn->cluster && now - r->last_ckpt_ms >= gn->conf->checkpoint_interval)
        propose_checkpoint(gn, r);
    r->ticks_done++;
    /* Deadline of the next tick; more than one tick behind drops time
     * rather than replaying ticks in a burst. */
    if (r->started_ms + (r->ticks_done + 1) * tick_ms + tick_ms < now) {
        gn->ticks_late++;
        r->started_ms = now - r->ticks_done * tick_ms;
    }
    arm(r, r->started_ms + (r->ticks_done + 1) * tick_ms);
}

static void
room_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct game_room *r = arg;
    struct game_node *gn = r->node;

    (void)fd;
    (void)what;
    if (r->ended) { /* the end entry did not apply yet: say it again */
        propose_end(gn, r);
        arm(r, pm_now_ms() + ROOM_END_RETRY_MS);
        return;
    }
    if (r->g->status == GAME_WAITING) {
        struct fsm_game *fg = game_fsm_game(gn, r->id);

        if (fg == NULL || fg->status != FSM_RUNNING)
            return;
        if (game_start(r->g) != PM_OK)
            return;
        publish_events(gn, r);
        r->started_ms = pm_now_ms();
        r->ticks_done = 0;
        r->last_ckpt_ms = r->started_ms;
        arm(r, r->started_ms + (uint64_t)r->g->set.tick_ms);
        return;
    }
    room_tick(gn, r);
}

/* ---- open, close --------------------------------------------------------- */

static struct game *
room_game(struct game_node *gn, struct fsm_game *fg, uint64_t *seq)
{
    struct game *g;
    int i;

    *seq = 0;
    if (fg->checkpoint != NULL) {
        cJSON *st = cJSON_Parse(fg->checkpoint);
        char err[PM_ERRMSG_SIZE];
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(st, "stream_seq");

        g = game_restore(st, err, sizeof err);
        if (cJSON_IsString(s))
            *seq = strtoull(s->valuestring, NULL, 10);
        cJSON_Delete(st);
        if (g != NULL)
            return g;
        pm_log_kv(PM_LOG_ERROR, "checkpoint_refused",
                  "restarting the game from its seed", "reason", err, NULL);
    }
    (void)gn;
    g = game_new(&fg->set, fg->seed);
    for (i = 0; i < fg->nusers; i++)
        game_add_player(g, fg->users[i]);
    return g;
}

static void
take_early_subs(struct game_node *gn, struct game_room *r)
{
    uint64_t now = pm_now_ms();
    int i, j = 0;

    for (i = 0; i < gn->nearly_subs; i++) {
        if (gn->early_subs[i].until_ms < now)
            continue;
        if (gn->early_subs[i].gid == r->id) {
            game_room_subscribe(gn, r, gn->early_subs[i].node);
            continue;
        }
        gn->early_subs[j++] = gn->early_subs[i];
    }
    gn->nearly_subs = j;
}

/* A subscription for a game this node does not (yet) run. */
void
game_room_early_subscribe(struct game_node *gn, uint64_t node, uint64_t gid)
{
    int i;

    for (i = 0; i < gn->nearly_subs; i++)
        if (gn->early_subs[i].until_ms < pm_now_ms())
            break;
    if (i == (int)(sizeof gn->early_subs / sizeof gn->early_subs[0]))
        i = 0; /* full: the oldest slot goes */
    if (i == gn->nearly_subs)
        gn->nearly_subs++;
    gn->early_subs[i].node = node;
    gn->early_subs[i].gid = gid;
    gn->early_subs[i].until_ms = pm_now_ms() + ROOM_EARLY_SUB_MS;
}

void
game_room_open(struct game_node *gn, struct fsm_game *fg)
{
    struct game_room *r = game_room_find(gn, fg->id);
    int i;

    if (r != NULL) {
        /* Known room: new players of a custom lobby, or it may start. */
        for (i = 0; i < fg->nusers; i++)
            if (game_add_player(r->g, fg->users[i]) >= 0) {
                broadcast_snapshot(gn, r);
            }
        if (r->g->status == GAME_WAITING && fg->status == FSM_RUNNING &&
            !evtimer_pending(r->timer, NULL))
            arm(r, pm_now_ms() + gn->conf->start_delay);
        r->epoch = fg->epoch;
        return;
    }
    r = pm_xcalloc(1, sizeof *r);
    r->id = fg->id;
    r->epoch = fg->epoch;
    r->node = gn;
    r->g = room_game(gn, fg, &r->stream_seq);
    r->timer = evtimer_new(pm_server_base(gn->srv), room_timer_cb, r);
    HASH_ADD(hh, gn->rooms, id, sizeof r->id, r);
    take_early_subs(gn, r);
    if (r->g->status == GAME_RUNNING) {
        /* Resumed elsewhere's game: tick on from the checkpoint. */
        r->started_ms = pm_now_ms();
        r->last_ckpt_ms = r->started_ms;
        arm(r, r->started_ms + (uint64_t)r->g->set.tick_ms);
        if (fg->checkpoint != NULL)
            gn->failovers++;
        pm_log(PM_LOG_INFO, "game_resumed",
               "resumed game %" PRIu64 " at tick %" PRIu64 " (epoch %" PRIu64
               ")",
               r->id, r->g->tick, r->epoch);
    } else if (r->g->status == GAME_ENDED) {
        r->ended = true;
        propose_end(gn, r);
        arm(r, pm_now_ms() + ROOM_END_RETRY_MS);
    } else if (fg->status == FSM_RUNNING) {
        arm(r, pm_now_ms() + gn->conf->start_delay);
    }
    broadcast_snapshot(gn, r);
}

void
game_room_close(struct game_node *gn, struct game_room *r)
{
    HASH_DEL(gn->rooms, r);
    event_free(r->timer);
    game_free(r->g);
    free(r);
}

void
game_rooms_free(struct game_node *gn)
{
    struct game_room *r, *t;

    HASH_ITER(hh, gn->rooms, r, t)
    {
        game_room_close(gn, r);
    }
}

void
game_room_command(struct game_node *gn, struct game_room *r, const char *user,
                  int64_t seq, enum game_dir dir)
{
    int snake = game_snake_of(r->g, user);

    if (snake < 0 || r->ended)
        return;
    if (game_turn(r->g, snake, dir, seq) == PM_OK)
        gn->commands++;
}
