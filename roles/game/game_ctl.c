/*
 * game_ctl: how an entry reaches the replicated state. On a single node
 * there is no log: entries are applied in order right after the current
 * callback. In a cluster the leader appends them to the raft log and a
 * follower forwards them to the leader over the peer link; every node
 * applies them when they commit (game_fsm_apply via pm_raft).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "game.h"
#include "pm_log.h"
#include "pm_metrics.h"
#include "pm_raft.h"
#include "pm_server.h"
#include "pm_util.h"

struct local_entry {
    struct game_node *gn;
    char *text;
};

static void
apply_local(void *arg)
{
    struct local_entry *le = arg;

    if (!le->gn->stopped)
        game_fsm_apply(le->gn, le->text, strlen(le->text));
    free(le->text);
    free(le);
}

bool
game_ctl_is_leader(struct game_node *gn)
{
    if (!gn->cluster)
        return true;
    return gn->raft != NULL && pm_raft_state(gn->raft) == PM_RAFT_LEADER;
}

struct append {
    struct game_node *gn;
    uint64_t start_us;
};

static void
applied_cb(void *arg, int status)
{
    struct append *a = arg;

    if (status == PM_OK) {
        pm_histogram_observe(a->gn->commit,
                             (double)(pm_wall_us() - a->start_us) / 1e6);
    } else {
        pm_log(PM_LOG_WARN, "propose_failed",
               "an entry was not committed (status %d)", status);
        a->gn->match_busy = false;
    }
    free(a);
}

void
game_ctl_append(struct game_node *gn, const void *data, size_t len)
{
    struct append *a = pm_xmalloc(sizeof *a);

    a->gn = gn;
    a->start_us = pm_wall_us();
    pm_raft_apply(gn->raft, data, len, applied_cb, a);
}

int
game_ctl_propose(struct game_node *gn, cJSON *msg)
{
    char *text = cJSON_PrintUnformatted(msg);
    uint64_t leader;
    int rc = PM_OK;

    cJSON_Delete(msg);
    if (!gn->cluster) {
        struct local_entry *le = pm_xmalloc(sizeof *le);

        le->gn = gn;
        le->text = text;
        pm_server_defer(gn->srv, apply_local, le);
        return PM_OK;
    }
    if (gn->raft == NULL) {
        rc = PM_EUNAVAIL;
    } else if (pm_raft_state(gn->raft) == PM_RAFT_LEADER) {
        game_ctl_append(gn, text, strlen(text));
    } else if ((leader = pm_raft_leader(gn->raft, NULL)) != 0 &&
               game_peer_down_ms(gn, leader) == 0) {
        game_peer_propose(gn, leader, text, strlen(text));
    } else {
        rc = PM_EUNAVAIL;
    }
    free(text);
    return rc;
}
