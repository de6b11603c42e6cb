/*
 * game_match: matchmaking, run by the leader over the replicated queues.
 * solo games start at once, duels take the first two players queued, an
 * ffa game takes game.max_players, or everyone waiting once the second
 * player has waited game.ffa_wait. One create entry is in flight at a
 * time (applying it empties those players from the queues and runs the
 * matcher again), so a player can never be matched twice. The owner of a
 * new game is the node holding its first player's socket when that node
 * is a live member, else the member owning the fewest games.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <utlist.h>

#include "game.h"
#include "game_json.h"
#include "pm_server.h"
#include "pm_util.h"

static bool
node_usable(struct game_node *gn, uint64_t node)
{
    struct fsm_member *m;

    if (!gn->cluster)
        return node == gn->node_id;
    if (node == gn->node_id)
        return !gn->draining;
    m = game_fsm_member(gn, node);
    return m != NULL && !m->draining && game_peer_down_ms(gn, node) == 0;
}

/* Where a new game should run. */
uint64_t
game_match_pick_owner(struct game_node *gn, uint64_t preferred)
{
    struct fsm_member *m, *t;
    uint64_t best = 0;
    int best_n = 0, n;

    if (preferred != 0 && node_usable(gn, preferred))
        return preferred;
    HASH_ITER(hh, gn->fsm.members, m, t)
    {
        if (!node_usable(gn, m->id))
            continue;
        n = game_fsm_games_owned(gn, m->id);
        if (best == 0 || n < best_n) {
            best = m->id;
            best_n = n;
        }
    }
    return best != 0 ? best : gn->node_id;
}

static void
propose_create(struct game_node *gn, enum game_mode mode, int n)
{
    struct fsm_queued *q = gn->fsm.queues[mode];
    struct game_settings set = game_default_settings(gn, mode, n);
    cJSON *e = cJSON_CreateObject(), *users;
    uint64_t seed;
    char num[24];
    int i;

    cJSON_AddStringToObject(e, "t", "create");
    cJSON_AddStringToObject(e, "mode", game_mode_name(mode));
    cJSON_AddItemToObject(e, "settings", game_settings_json(&set));
    pm_random_bytes(&seed, sizeof seed);
    snprintf(num, sizeof num, "%" PRIu64, seed);
    cJSON_AddStringToObject(e, "seed", num);
    snprintf(num, sizeof num, "%" PRIu64, game_match_pick_owner(gn, q->node));
    cJSON_AddStringToObject(e, "owner", num);
    users = cJSON_AddArrayToObject(e, "users");
    for (i = 0; i < n && q != NULL; i++, q = q->next)
        cJSON_AddItemToArray(users, cJSON_CreateString(q->user));
    gn->match_busy = true;
    if (game_ctl_propose(gn, e) != PM_OK)
        gn->match_busy = false;
}

static void
arm(struct game_node *gn, uint64_t in_ms)
{
    struct timeval tv = {(time_t)(in_ms / 1000),
                         (suseconds_t)(in_ms % 1000) * 1000};

    if (!evtimer_pending(gn->match_timer, NULL))
        evtimer_add(gn->match_timer, &tv);
}

static void
run(struct game_node *gn)
{
    int max = (int)gn->conf->max_players, len;
    uint64_t now = pm_wall_ms(), since;

    if (gn->match_busy || !game_ctl_is_leader(gn) || gn->stopped)
        return;
    if (gn->fsm.queue_len[GAME_MODE_SOLO] > 0) {
        propose_create(gn, GAME_MODE_SOLO, 1);
        return;
    }
    if (gn->fsm.queue_len[GAME_MODE_DUEL] >= 2) {
        propose_create(gn, GAME_MODE_DUEL, 2);
        return;
    }
    len = gn->fsm.queue_len[GAME_MODE_FFA];
    if (len >= max) {
        propose_create(gn, GAME_MODE_FFA, max);
        return;
    }
    if (len >= 2) {
        since = gn->fsm.queues[GAME_MODE_FFA]->next->since_ms;
        if (now >= since + gn->conf->ffa_wait) {
            propose_create(gn, GAME_MODE_FFA, len);
            return;
        }
        arm(gn, since + gn->conf->ffa_wait - now);
    }
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    run(arg);
}

static void
deferred_run(void *arg)
{
    struct game_node *gn = arg;

    gn->match_kicked = false;
    run(gn);
}

void
game_match_kick(struct game_node *gn)
{
    if (gn->match_kicked || !game_ctl_is_leader(gn))
        return;
    gn->match_kicked = true;
    pm_server_defer(gn->srv, deferred_run, gn);
}

void
game_match_init(struct game_node *gn)
{
    gn->match_timer = evtimer_new(pm_server_base(gn->srv), timer_cb, gn);
}

void
game_match_free(struct game_node *gn)
{
    if (gn->match_timer != NULL)
        event_free(gn->match_timer);
    gn->match_timer = NULL;
}
