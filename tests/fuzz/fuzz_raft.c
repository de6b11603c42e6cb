/*
 * fuzz_raft: drives what a game node does with the bytes of committed
 * raft entries and snapshots (roles/game/game_fsm.c behind
 * roles/game/game_cluster.c's raft FSM glue): game_fsm_restore on a
 * snapshot, then game_fsm_apply on each entry (member, leave, drain,
 * queue, unqueue, create, join, start, assign, ckpt, end, and garbage).
 * The node is a follower (no raft handle) whose own id never appears in
 * the input, so no local room is opened; no session is connected.
 *
 * Input: byte 0 bit 0 set: the first line is a snapshot; the remaining
 * lines (split at '\n') are entries, as the game role encodes them (one
 * JSON object each, docs/game.md).
 *
 * Asserts: applying counts every entry; the state is deterministic: its
 * snapshot, restored on a fresh node and snapshotted again, gives the
 * same bytes (what every replica must agree on); every game has at most
 * GAME_MAX_SNAKES users.
 */
#include "config.h"

#include <string.h>

#include "fuzz.h"
#include "game.h"
#include "pm_log.h"
#include "pm_util.h"

/* Not a double, never written by the seeds: unreachable by the input. */
#define NODE_ID 6839219538476343021ull
#define NODE_ID_TEXT "6839219538476343021"

static struct game_conf conf = {
    .width = 40,
    .height = 30,
    .tick = 100,
    .food = 3,
    .food_per_player = 1,
    .max_players = 8,
    .start_delay = 3000,
    .max_games = 100,
};

static void
node_init(struct game_node *gn)
{
    memset(gn, 0, sizeof *gn);
    gn->conf = &conf;
    gn->cluster = true; /* raft NULL: a follower, never the leader */
    gn->node_id = NODE_ID;
    game_fsm_init(&gn->fsm);
}

static char *
snapshot(struct game_node *gn, size_t *len)
{
    char *s = game_fsm_snapshot(gn, len);

    FUZZ_CHECK(s != NULL && *len == strlen(s));
    return s;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct game_node a, b;
    const char *p, *end;
    char *s1, *s2, *copy;
    size_t l1, l2;
    uint64_t n = 0;
    bool first = true;

    if (size < 1)
        return 0;
    pm_log_set_level(PM_LOG_FATAL);
    copy = pm_xstrndup((const char *)data + 1, size - 1);
    if (strstr(copy, NODE_ID_TEXT) != NULL) {
        free(copy);
        return 0;
    }
    free(copy);
    node_init(&a);
    p = (const char *)data + 1;
    end = (const char *)data + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = (size_t)((nl ? nl : end) - p);
        /* an exact-size heap copy: ASan sees reads past its end */
        char *line = pm_xmalloc(len ? len : 1);

        memcpy(line, p, len);
        if (first && (data[0] & 1)) {
            (void)game_fsm_restore(&a, line, len);
        } else {
            game_fsm_apply(&a, line, len);
            n++;
        }
        first = false;
        free(line);
        p += len + 1;
    }
    FUZZ_CHECK(a.fsm.applied == n);
    {
        struct fsm_game *g, *t;

        HASH_ITER(hh, a.fsm.games, g, t)
        FUZZ_CHECK(g->nusers >= 0 && g->nusers <= GAME_MAX_SNAKES);
    }
    /* replicas agree: snapshot -> restore -> snapshot is stable */
    s1 = snapshot(&a, &l1);
    node_init(&b);
    FUZZ_CHECK(game_fsm_restore(&b, s1, l1) == PM_OK);
    s2 = snapshot(&b, &l2);
    if (l1 != l2 || memcmp(s1, s2, l1) != 0) {
        fprintf(stderr, "snapshot 1: %s\nsnapshot 2: %s\n", s1, s2);
        FUZZ_CHECK(!"snapshot -> restore -> snapshot differs");
    }
    free(s1);
    free(s2);
    game_fsm_clear(&a.fsm);
    game_fsm_clear(&b.fsm);
    return 0;
}
