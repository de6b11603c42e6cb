/*
 * game_fsm: the replicated state of a game cluster and what applying an
 * entry means on this node. The state (members, games with their owner
 * and fencing epoch, matchmaking queues, the last checkpoint of each
 * game) is the same on every node because it changes only here, in log
 * order, from the entry's own fields (never a local clock). After the
 * replicated change, each entry has local effects: telling this node's
 * sessions (MatchFound, QueueUpdate), opening or closing the rooms this
 * node owns, following a game's new owner.
 *
 * Entries are JSON objects {"t": kind, ...}: member, leave, drain, queue,
 * unqueue, create, join, start, assign, ckpt, end (docs/game.md).
 * A malformed or stale entry changes nothing (apply must never fail).
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <utlist.h>

#include "game.h"
#include "game_json.h"
#include "pm_log.h"
#include "pm_util.h"

void
game_fsm_init(struct game_fsm *f)
{
    memset(f, 0, sizeof *f);
    f->next_game_id = 1;
}

static void
game_free_fsm(struct fsm_game *g)
{
    free(g->checkpoint);
    free(g);
}

void
game_fsm_clear(struct game_fsm *f)
{
    struct fsm_member *m, *mt;
    struct fsm_game *g, *gt;
    struct fsm_user *u, *ut;
    int i;

    HASH_ITER(hh, f->members, m, mt)
    {
        HASH_DEL(f->members, m);
        free(m);
    }
    HASH_ITER(hh, f->games, g, gt)
    {
        HASH_DEL(f->games, g);
        game_free_fsm(g);
    }
    HASH_ITER(hh, f->queued, u, ut)
    {
        HASH_DEL(f->queued, u);
        free(u->q);
        free(u);
    }
    for (i = 0; i < GAME_MODES; i++)
        f->queues[i] = NULL;
    game_fsm_init(f);
}

/* ---- lookups ------------------------------------------------------------- */

struct fsm_game *
game_fsm_game(struct game_node *gn, uint64_t id)
{
    struct fsm_game *g;

    HASH_FIND(hh, gn->fsm.games, &id, sizeof id, g);
    return g;
}

struct fsm_member *
game_fsm_member(struct game_node *gn, uint64_t id)
{
    struct fsm_member *m;

    HASH_FIND(hh, gn->fsm.members, &id, sizeof id, m);
    return m;
}

static bool
fsm_game_has_user(const struct fsm_game *g, const char *user)
{
    int i;

    for (i = 0; i < g->nusers; i++)
        if (strcmp(g->users[i], user) == 0)
            return true;
    return false;
}

struct fsm_game *
game_fsm_game_of_user(struct game_node *gn, const char *user)
{
    struct fsm_game *g, *t, *best = NULL;

    /* The newest game the user plays in that is not over. */
    HASH_ITER(hh, gn->fsm.games, g, t)
    {
        if (g->status != FSM_ENDED && fsm_game_has_user(g, user) &&
            (best == NULL || g->id > best->id))
            best = g;
    }
    return best;
}

struct fsm_game *
game_fsm_game_by_code(struct game_node *gn, const char *code)
{
    struct fsm_game *g, *t;

    HASH_ITER(hh, gn->fsm.games, g, t)
    {
        if (g->code[0] != '\0' && strcmp(g->code, code) == 0)
            return g;
    }
    return NULL;
}

int
game_fsm_queue_position(struct game_node *gn, const char *user)
{
    struct fsm_user *u;
    struct fsm_queued *q;
    int pos = 1;

    HASH_FIND_STR(gn->fsm.queued, user, u);
    if (u == NULL)
        return 0;
    DL_FOREACH(gn->fsm.queues[u->mode], q)
    {
        if (q == u->q)
            return pos;
        pos++;
    }
    return 0;
}

int
game_fsm_games_owned(struct game_node *gn, uint64_t node)
{
    struct fsm_game *g, *t;
    int n = 0;

    HASH_ITER(hh, gn->fsm.games, g, t)
    {
        if (g->owner == node && g->status != FSM_ENDED)
            n++;
    }
    return n;
}

/* ---- field helpers ------------------------------------------------------- */

static uint64_t
num_u64(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

    if (cJSON_IsString(v))
        return strtoull(v->valuestring, NULL, 10);
    if (cJSON_IsNumber(v) && v->valuedouble >= 0 &&
        v->valuedouble < 18446744073709551616.0) /* 2^64 */
        return (uint64_t)v->valuedouble;
    return 0;
}

static const char *
str_of(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* ---- queues -------------------------------------------------------------- */

/* Tell local sessions queued in mode behind position from their place. */
static void
queue_notify(struct game_node *gn, enum game_mode mode, int from)
{
    struct fsm_queued *q;
    int pos = 1;

    DL_FOREACH(gn->fsm.queues[mode], q)
    {
        if (pos >= from) {
            cJSON *m = cJSON_CreateObject();
            cJSON *b = cJSON_AddObjectToObject(m, "QueueUpdate");

            cJSON_AddNumberToObject(b, "position", pos);
            game_send_user(gn, q->user, m);
            cJSON_Delete(m);
        }
        pos++;
    }
}

/* Remove user from its queue; returns the mode it was in, or -1. */
static int
unqueue(struct game_node *gn, const char *user, bool notify)
{
    struct fsm_user *u;
    struct fsm_queued *q;
    int mode, pos = 1;

    HASH_FIND_STR(gn->fsm.queued, user, u);
    if (u == NULL)
        return -1;
    mode = (int)u->mode;
    DL_FOREACH(gn->fsm.queues[mode], q)
    {
        if (q == u->q)
            break;
        pos++;
    }
    DL_DELETE(gn->fsm.queues[mode], u->q);
    gn->fsm.queue_len[mode]--;
    free(u->q);
    HASH_DEL(gn->fsm.queued, u);
    free(u);
    if (notify)
        queue_notify(gn, (enum game_mode)mode, pos);
    return mode;
}

static void
apply_queue(struct game_node *gn, const cJSON *e)
{
    const char *user = str_of(e, "user"), *mode_s = str_of(e, "mode");
    enum game_mode mode;
    struct fsm_user *u;
    struct fsm_queued *q;

    if (user == NULL || strlen(user) > GAME_USER_MAX || mode_s == NULL ||
        game_mode_parse(mode_s, &mode) != PM_OK || mode == GAME_MODE_CUSTOM)
        return;
    unqueue(gn, user, true);
    q = pm_xcalloc(1, sizeof *q);
    pm_strlcpy(q->user, user, sizeof q->user);
    q->node = num_u64(e, "node");
    q->since_ms = num_u64(e, "ts");
    DL_APPEND(gn->fsm.queues[mode], q);
    gn->fsm.queue_len[mode]++;
    u = pm_xcalloc(1, sizeof *u);
    pm_strlcpy(u->user, user, sizeof u->user);
    u->mode = mode;
    u->q = q;
    HASH_ADD_STR(gn->fsm.queued, user, u);
    queue_notify(gn, mode, gn->fsm.queue_len[mode]);
    game_match_kick(gn);
}

static void
apply_unqueue(struct game_node *gn, const cJSON *e)
{
    const char *user = str_of(e, "user");

    if (user == NULL)
        return;
    unqueue(gn, user, true); /* not queued: still answered */
    {
        cJSON *m = cJSON_CreateString("QueueLeft");

        game_send_user(gn, user, m);
        cJSON_Delete(m);
    }
}

/* ---- games --------------------------------------------------------------- */

/* Local effects of a user entering game g (MatchFound, watching). */
static void
user_entered(struct game_node *gn, struct fsm_game *g, const char *user,
             const char *tag)
{
    struct game_user_sessions *us;
    struct game_session *s;
    cJSON *m = cJSON_CreateObject(), *b;

    b = cJSON_AddObjectToObject(m, tag);
    cJSON_AddNumberToObject(b, "game_id", (double)g->id);
    if (g->code[0] != '\0' && strcmp(tag, "CustomGameCreated") == 0)
        cJSON_AddStringToObject(b, "game_code", g->code);
    HASH_FIND_STR(gn->users, user, us);
    if (us != NULL) {
        DL_FOREACH2(us->list, s, unext)
        {
            game_send_json(s, m);
            game_watch_add(gn, s, g->id, true);
        }
    }
    cJSON_Delete(m);
}

static void
apply_create(struct game_node *gn, const cJSON *e)
{
    uint64_t id = gn->fsm.next_game_id;
    const cJSON *users = cJSON_GetObjectItemCaseSensitive(e, "users"), *u;
    const char *mode_s = str_of(e, "mode"), *code = str_of(e, "code");
    struct fsm_game *g;
    enum game_mode mode;
    char err[PM_ERRMSG_SIZE];
    int i, m, touched = 0;

    if (game_fsm_game(gn, id) != NULL || !cJSON_IsArray(users) ||
        mode_s == NULL || game_mode_parse(mode_s, &mode) != PM_OK) {
        gn->match_busy = false;
        return;
    }
    g = pm_xcalloc(1, sizeof *g);
    g->id = id;
    g->mode = mode;
    g->set = game_default_settings(gn, mode, cJSON_GetArraySize(users));
    if (game_settings_parse(cJSON_GetObjectItemCaseSensitive(e, "settings"),
                            &g->set, err, sizeof err) != PM_OK) {
        free(g);
        gn->match_busy = false;
        return;
    }
    g->seed = num_u64(e, "seed");
    g->owner = num_u64(e, "owner");
    g->epoch = 1;
    g->winner = -1;
    g->status = mode == GAME_MODE_CUSTOM ? FSM_WAITING : FSM_RUNNING;
    if (code != NULL && strlen(code) == GAME_CODE_LEN &&
        game_fsm_game_by_code(gn, code) == NULL)
        pm_strlcpy(g->code, code, sizeof g->code);
    else if (mode == GAME_MODE_CUSTOM)
        snprintf(g->code, sizeof g->code, "%06" PRIu64, id % 1000000);
    cJSON_ArrayForEach(u, users)
    {
        if (!cJSON_IsString(u) || g->nusers == g->set.max_players ||
            strlen(u->valuestring) > GAME_USER_MAX ||
            fsm_game_has_user(g, u->valuestring))
            continue;
        pm_strlcpy(g->users[g->nusers++], u->valuestring, GAME_USER_MAX + 1);
    }
    HASH_ADD(hh, gn->fsm.games, id, sizeof g->id, g);
    if (id >= gn->fsm.next_game_id)
        gn->fsm.next_game_id = id + 1;
    /* The players leave their queues quietly; who stays behind hears of
     * its new place. */
    for (i = 0; i < g->nusers; i++)
        if ((m = unqueue(gn, g->users[i], false)) >= 0)
            touched |= 1 << m;
    for (m = 0; m < GAME_MODES; m++)
        if (touched & (1 << m))
            queue_notify(gn, (enum game_mode)m, 1);
    gn->games_started++;
    if (g->owner == gn->node_id)
        game_room_open(gn, g);
    for (i = 0; i < g->nusers; i++)
        user_entered(gn, g, g->users[i],
                     mode == GAME_MODE_CUSTOM ? "CustomGameCreated"
                                              : "MatchFound");
    gn->match_busy = false;
    game_match_kick(gn);
}

static void
deny_user(struct game_node *gn, const char *user, const char *reason)
{
    cJSON *m = cJSON_CreateObject();

    cJSON_AddStringToObject(cJSON_AddObjectToObject(m, "Error"), "reason",
                            reason);
    game_send_user(gn, user, m);
    cJSON_Delete(m);
}

static void
apply_start(struct game_node *gn, struct fsm_game *g)
{
    struct game_room *r;

    g->status = FSM_RUNNING;
    r = game_room_find(gn, g->id);
    if (r != NULL && g->owner == gn->node_id)
        game_room_open(gn, g); /* an open room learns it may start */
}

static void
apply_join(struct game_node *gn, const cJSON *e)
{
    struct fsm_game *g = game_fsm_game(gn, num_u64(e, "id"));
    const char *user = str_of(e, "user");
    struct game_room *r;

    if (user == NULL || strlen(user) > GAME_USER_MAX)
        return;
    if (g == NULL || g->mode != GAME_MODE_CUSTOM) {
        deny_user(gn, user, "no such custom game");
        return;
    }
    if (fsm_game_has_user(g, user)) {
        user_entered(gn, g, user, "CustomGameJoined");
        return;
    }
    if (g->status != FSM_WAITING) {
        deny_user(gn, user, "the game has started");
        return;
    }
    if (g->nusers >= g->set.max_players) {
        deny_user(gn, user, "the game is full");
        return;
    }
    unqueue(gn, user, true);
    pm_strlcpy(g->users[g->nusers++], user, GAME_USER_MAX + 1);
    r = game_room_find(gn, g->id);
    if (r != NULL && g->owner == gn->node_id)
        game_room_open(gn, g); /* adds the new player */
    user_entered(gn, g, user, "CustomGameJoined");
    if (g->nusers == g->set.max_players)
        apply_start(gn, g);
}

static void
apply_start_entry(struct game_node *gn, const cJSON *e)
{
    struct fsm_game *g = game_fsm_game(gn, num_u64(e, "id"));
    const char *user = str_of(e, "user");

    if (g == NULL || g->status != FSM_WAITING || user == NULL)
        return;
    if (g->nusers == 0 || strcmp(g->users[0], user) != 0) {
        deny_user(gn, user, "only the creator starts a custom game");
        return;
    }
    apply_start(gn, g);
}

static void
store_checkpoint(struct fsm_game *g, const cJSON *state)
{
    free(g->checkpoint);
    g->checkpoint = cJSON_PrintUnformatted(state);
    g->ckpt_tick = num_u64(state, "tick");
}

static void
apply_assign(struct game_node *gn, const cJSON *e)
{
    struct fsm_game *g = game_fsm_game(gn, num_u64(e, "id"));
    uint64_t owner = num_u64(e, "owner"), epoch = num_u64(e, "epoch");
    const cJSON *state = cJSON_GetObjectItemCaseSensitive(e, "state");
    struct game_room *r;

    if (g == NULL || epoch <= g->epoch || owner == 0)
        return; /* stale: a newer assignment won */
    if (cJSON_IsObject(state))
        store_checkpoint(g, state);
    {
        char a[24], b[24];

        snprintf(a, sizeof a, "%" PRIu64, g->id);
        snprintf(b, sizeof b, "%" PRIu64, owner);
        pm_log_kv(PM_LOG_INFO, "game_assigned", "game has a new owner", "game",
                  a, "owner", b, NULL);
    }
    g->owner = owner;
    g->epoch = epoch;
    r = game_room_find(gn, g->id);
    if (r != NULL && owner != gn->node_id)
        game_room_close(gn, r);
    if (owner == gn->node_id)
        game_room_open(gn, g);
    game_watch_resubscribe(gn, g->id);
}

static void
apply_ckpt(struct game_node *gn, const cJSON *e)
{
    struct fsm_game *g = game_fsm_game(gn, num_u64(e, "id"));
    const cJSON *state = cJSON_GetObjectItemCaseSensitive(e, "state");

    /* Fencing: only the current owner's epoch may write. */
    if (g == NULL || num_u64(e, "epoch") != g->epoch || !cJSON_IsObject(state))
        return;
    store_checkpoint(g, state);
}

static void
apply_end(struct game_node *gn, const cJSON *e)
{
    struct fsm_game *g = game_fsm_game(gn, num_u64(e, "id"));
    struct game_room *r;

    if (g == NULL || num_u64(e, "epoch") != g->epoch)
        return;
    gn->games_ended++;
    r = game_room_find(gn, g->id);
    if (r != NULL)
        game_room_close(gn, r);
    game_watch_drop(gn, g->id);
    HASH_DEL(gn->fsm.games, g);
    game_free_fsm(g);
}

cJSON *
game_fsm_assign_entry(uint64_t id, uint64_t owner, uint64_t epoch)
{
    cJSON *e = cJSON_CreateObject();
    char num[24];

    cJSON_AddStringToObject(e, "t", "assign");
    snprintf(num, sizeof num, "%" PRIu64, id);
    cJSON_AddStringToObject(e, "id", num);
    snprintf(num, sizeof num, "%" PRIu64, owner);
    cJSON_AddStringToObject(e, "owner", num);
    snprintf(num, sizeof num, "%" PRIu64, epoch);
    cJSON_AddStringToObject(e, "epoch", num);
    return e;
}

/* ---- members ------------------------------------------------------------- */

static void
apply_member(struct game_node *gn, const cJSON *e)
{
    uint64_t id = num_u64(e, "id");
    const char *raft = str_of(e, "raft"), *peer = str_of(e, "peer");
    struct fsm_member *m;

    if (id == 0 || raft == NULL || peer == NULL)
        return;
    m = game_fsm_member(gn, id);
    if (m == NULL) {
        m = pm_xcalloc(1, sizeof *m);
        m->id = id;
        HASH_ADD(hh, gn->fsm.members, id, sizeof m->id, m);
    }
    pm_strlcpy(m->raft_addr, raft, sizeof m->raft_addr);
    pm_strlcpy(m->peer_addr, peer, sizeof m->peer_addr);
    m->draining = false;
    game_peer_sync(gn);
}

static void
apply_leave(struct game_node *gn, const cJSON *e, bool drain_only)
{
    struct fsm_member *m = game_fsm_member(gn, num_u64(e, "id"));

    if (m == NULL)
        return;
    if (drain_only) {
        m->draining = true;
        return;
    }
    HASH_DEL(gn->fsm.members, m);
    free(m);
    game_peer_sync(gn);
}

/* ---- entry point --------------------------------------------------------- */

void
game_fsm_apply(struct game_node *gn, const void *data, size_t len)
{
    cJSON *e = cJSON_ParseWithLength(data, len);
    const char *t = e != NULL ? str_of(e, "t") : NULL;

    gn->fsm.applied++;
    if (t == NULL) {
        pm_log(PM_LOG_WARN, "fsm_bad_entry", "ignored a malformed entry");
    } else if (strcmp(t, "ckpt") == 0) {
        apply_ckpt(gn, e);
    } else if (strcmp(t, "queue") == 0) {
        apply_queue(gn, e);
    } else if (strcmp(t, "unqueue") == 0) {
        apply_unqueue(gn, e);
    } else if (strcmp(t, "create") == 0) {
        apply_create(gn, e);
    } else if (strcmp(t, "join") == 0) {
        apply_join(gn, e);
    } else if (strcmp(t, "start") == 0) {
        apply_start_entry(gn, e);
    } else if (strcmp(t, "assign") == 0) {
        apply_assign(gn, e);
    } else if (strcmp(t, "end") == 0) {
        apply_end(gn, e);
    } else if (strcmp(t, "member") == 0) {
        apply_member(gn, e);
    } else if (strcmp(t, "leave") == 0) {
        apply_leave(gn, e, false);
    } else if (strcmp(t, "drain") == 0) {
        apply_leave(gn, e, true);
    } else {
        pm_log_kv(PM_LOG_WARN, "fsm_bad_entry", "ignored an unknown entry",
                  "kind", t, NULL);
    }
    cJSON_Delete(e);
}

/* ---- snapshots ----------------------------------------------------------- */

void *
game_fsm_snapshot(struct game_node *gn, size_t *len)
{
    cJSON *o = cJSON_CreateObject(), *arr, *x;
    struct fsm_member *m, *mt;
    struct fsm_game *g, *gt;
    struct fsm_queued *q;
    char num[24];
    char *txt;
    int i, mode;

    snprintf(num, sizeof num, "%" PRIu64, gn->fsm.next_game_id);
    cJSON_AddStringToObject(o, "next_game_id", num);
    arr = cJSON_AddArrayToObject(o, "members");
    HASH_ITER(hh, gn->fsm.members, m, mt)
    {
        x = cJSON_CreateObject();
        snprintf(num, sizeof num, "%" PRIu64, m->id);
        cJSON_AddStringToObject(x, "id", num);
        cJSON_AddStringToObject(x, "raft", m->raft_addr);
        cJSON_AddStringToObject(x, "peer", m->peer_addr);
        cJSON_AddBoolToObject(x, "draining", m->draining);
        cJSON_AddItemToArray(arr, x);
    }
    arr = cJSON_AddArrayToObject(o, "games");
    HASH_ITER(hh, gn->fsm.games, g, gt)
    {
        cJSON *users;

        x = cJSON_CreateObject();
        snprintf(num, sizeof num, "%" PRIu64, g->id);
        cJSON_AddStringToObject(x, "id", num);
        cJSON_AddStringToObject(x, "mode", game_mode_name(g->mode));
        cJSON_AddItemToObject(x, "settings", game_settings_json(&g->set));
        snprintf(num, sizeof num, "%" PRIu64, g->seed);
        cJSON_AddStringToObject(x, "seed", num);
        if (g->code[0] != '\0')
            cJSON_AddStringToObject(x, "code", g->code);
        users = cJSON_AddArrayToObject(x, "users");
        for (i = 0; i < g->nusers; i++)
            cJSON_AddItemToArray(users, cJSON_CreateString(g->users[i]));
        snprintf(num, sizeof num, "%" PRIu64, g->owner);
        cJSON_AddStringToObject(x, "owner", num);
        snprintf(num, sizeof num, "%" PRIu64, g->epoch);
        cJSON_AddStringToObject(x, "epoch", num);
        cJSON_AddNumberToObject(x, "status", g->status);
        if (g->checkpoint != NULL)
            cJSON_AddItemToObject(x, "state", cJSON_Parse(g->checkpoint));
        cJSON_AddItemToArray(arr, x);
    }
    x = cJSON_AddObjectToObject(o, "queues");
    for (mode = 0; mode < GAME_MODES; mode++) {
        arr = cJSON_AddArrayToObject(x, game_mode_name(mode));
        DL_FOREACH(gn->fsm.queues[mode], q)
        {
            cJSON *qe = cJSON_CreateObject();

            cJSON_AddStringToObject(qe, "user", q->user);
            snprintf(num, sizeof num, "%" PRIu64, q->node);
            cJSON_AddStringToObject(qe, "node", num);
            snprintf(num, sizeof num, "%" PRIu64, q->since_ms);
            cJSON_AddStringToObject(qe, "ts", num);
            cJSON_AddItemToArray(arr, qe);
        }
    }
    txt = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    *len = txt != NULL ? strlen(txt) : 0;
    return txt;
}

int
game_fsm_restore(struct game_node *gn, const void *data, size_t len)
{
    cJSON *o = cJSON_ParseWithLength(data, len), *x, *arr, *e;
    struct game_room *r, *rt;
    struct fsm_game *g, *gt;
    int mode;

    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        pm_log(PM_LOG_ERROR, "fsm_bad_snapshot", "snapshot is not JSON");
        return PM_EINVAL;
    }
    game_fsm_clear(&gn->fsm);
    gn->fsm.next_game_id = num_u64(o, "next_game_id");
    cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(o, "members"))
    {
        apply_member(gn, x);
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(x, "draining")))
            apply_leave(gn, x, true);
    }
    cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(o, "games"))
    {
        const cJSON *state = cJSON_GetObjectItemCaseSensitive(x, "state");
        enum game_mode m;
        char err[PM_ERRMSG_SIZE];

        if (str_of(x, "mode") == NULL ||
            game_mode_parse(str_of(x, "mode"), &m) != PM_OK)
            continue;
        g = pm_xcalloc(1, sizeof *g);
        g->id = num_u64(x, "id");
        g->mode = m;
        g->set = game_default_settings(gn, m, 2);
        game_settings_parse(cJSON_GetObjectItemCaseSensitive(x, "settings"),
                            &g->set, err, sizeof err);
        g->seed = num_u64(x, "seed");
        if (str_of(x, "code") != NULL)
            pm_strlcpy(g->code, str_of(x, "code"), sizeof g->code);
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(x, "users"))
        {
            if (cJSON_IsString(e) && g->nusers < GAME_MAX_SNAKES)
                pm_strlcpy(g->users[g->nusers++], e->valuestring,
                           GAME_USER_MAX + 1);
        }
        g->owner = num_u64(x, "owner");
        g->epoch = num_u64(x, "epoch");
        g->status = (enum fsm_game_status)num_u64(x, "status");
        g->winner = -1;
        if (cJSON_IsObject(state))
            store_checkpoint(g, state);
        HASH_ADD(hh, gn->fsm.games, id, sizeof g->id, g);
    }
    arr = cJSON_GetObjectItemCaseSensitive(o, "queues");
    for (mode = 0; mode < GAME_MODES; mode++) {
        cJSON_ArrayForEach(
            e, cJSON_GetObjectItemCaseSensitive(arr, game_mode_name(mode)))
        {
            cJSON_AddStringToObject(e, "mode", game_mode_name(mode));
            apply_queue(gn, e);
        }
    }
    cJSON_Delete(o);
    /* This node's rooms follow the restored ownership. */
    HASH_ITER(hh, gn->rooms, r, rt)
    {
        g = game_fsm_game(gn, r->id);
        if (g == NULL || g->owner != gn->node_id || g->epoch != r->epoch)
            game_room_close(gn, r);
    }
    HASH_ITER(hh, gn->fsm.games, g, gt)
    {
        if (g->owner == gn->node_id && game_room_find(gn, g->id) == NULL)
            game_room_open(gn, g);
        game_watch_resubscribe(gn, g->id);
    }
    return PM_OK;
}
