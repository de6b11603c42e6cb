/*
 * game_cluster: this node's part in the raft cluster. It finds its own
 * address and id, starts the peer link and the raft node (pm_raft, the
 * FSM of game_fsm.c), and then either bootstraps a new cluster (no live
 * peer) or asks a peer to let it in (JOIN). Every 250 ms it reconciles:
 * a node that is not in yet asks again; the leader records members,
 * promotes spares (voters up to game.voters, the rest standbys that still
 * get the log), moves the games of a node whose link has been down for
 * game.failover_after to live nodes (epoch + 1, from their last
 * checkpoint), and removes a node silent for game.dead_after while
 * quorum allows. On SIGTERM it hands its games over with their exact
 * state, transfers leadership if it leads, asks the leader to remove it
 * and closes raft, all within shutdown.grace.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "game.h"
#include "pm_log.h"
#include "pm_raft.h"
#include "pm_server.h"
#include "pm_util.h"

#define CLUSTER_TICK_MS 250
#define JOIN_EVERY_MS 1000
#define REASSIGN_EVERY_MS 1000
#define STATIC_BOOTSTRAP_WAIT_MS 3000
#define MAX_SERVERS 32
#define ECS_TIMEOUT_S 2

/* ---- identity ------------------------------------------------------------ */

static int
mkdir_p(const char *dir)
{
    char buf[512], *p;

    if (strlen(dir) >= sizeof buf)
        return -1;
    strcpy(buf, dir);
    for (p = buf + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0700) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(buf, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

/* The node id kept in data_dir/node_id, made on first start: a wiped
 * disk means a new id, so an old identity never votes twice. */
static int
node_id_load(struct game_node *gn, char *err, size_t errlen)
{
    char path[600], buf[32];
    FILE *f;
    uint64_t id = 0;

    if (mkdir_p(gn->conf->data_dir) != 0)
        return pm_errf(err, errlen, PM_EIO,
                       "cannot create game.data_dir %s: %s", gn->conf->data_dir,
                       strerror(errno));
    snprintf(path, sizeof path, "%s/node_id", gn->conf->data_dir);
    f = fopen(path, "r");
    if (f != NULL) {
        if (fgets(buf, sizeof buf, f) != NULL)
            id = strtoull(buf, NULL, 10);
        fclose(f);
    }
    if (id == 0) {
        pm_random_bytes(&id, sizeof id);
        id = id % 999999999999999ULL + 1; /* exact as a JSON number */
        f = fopen(path, "w");
        if (f == NULL || fprintf(f, "%" PRIu64 "\n", id) < 0 || fclose(f) != 0)
            return pm_errf(err, errlen, PM_EIO, "cannot write %s: %s", path,
                           strerror(errno));
    }
    gn->node_id = id;
    return PM_OK;
}

/* The private IPv4 of the task from ECS task metadata v4 (a link-local
 * HTTP endpoint): a blocking GET with a short timeout, at start only. */
static int
ecs_address(const char *uri, char *out, size_t outlen)
{
    char host[128], path[256], req[512], resp[16384];
    struct sockaddr_in sa;
    struct timeval tv = {ECS_TIMEOUT_S, 0};
    const char *p, *body;
    int port = 80, fd, rc = PM_EIO;
    size_t got = 0;
    ssize_t n;
    cJSON *j;

    if (strncmp(uri, "http://", 7) != 0 ||
        sscanf(uri + 7, "%127[^:/]:%d", host, &port) < 1)
        return PM_EINVAL;
    p = strchr(uri + 7, '/');
    snprintf(path, sizeof path, "%s/task", p != NULL ? p : "");
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return PM_EINVAL;
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return PM_EIO;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    snprintf(req, sizeof req,
             "GET %s HTTP/1.0\r\nHost: %s\r\nAccept: application/json\r\n\r\n",
             path, host);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        write(fd, req, strlen(req)) == (ssize_t)strlen(req)) {
        while (got < sizeof resp - 1 &&
               (n = read(fd, resp + got, sizeof resp - 1 - got)) > 0)
            got += (size_t)n;
    }
    close(fd);
    resp[got] = '\0';
    body = strstr(resp, "\r\n\r\n");
    j = body != NULL ? cJSON_Parse(body + 4) : NULL;
    {
        const cJSON *nets = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetArrayItem(
                cJSON_GetObjectItemCaseSensitive(
                    cJSON_GetArrayItem(
                        cJSON_GetObjectItemCaseSensitive(j, "Containers"), 0),
                    "Networks"),
                0),
            "IPv4Addresses");
        const cJSON *ip = cJSON_GetArrayItem(nets, 0);

        if (cJSON_IsString(ip)) {
            pm_strlcpy(out, ip->valuestring, outlen);
            rc = PM_OK;
        }
    }
    cJSON_Delete(j);
    return rc;
}

/* The address the host would use to leave (no packet is sent). */
static int
primary_address(char *out, size_t outlen)
{
    struct sockaddr_in sa, me;
    socklen_t len = sizeof me;
    int fd = socket(AF_INET, SOCK_DGRAM, 0), rc = PM_EIO;

    if (fd < 0)
        return PM_EIO;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons(9);
    inet_pton(AF_INET, "192.0.2.1", &sa.sin_addr); /* TEST-NET-1 */
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&me, &len) == 0 &&
        inet_ntop(AF_INET, &me.sin_addr, out, (socklen_t)outlen) != NULL)
        rc = PM_OK;
    close(fd);
    return rc;
}

static int
find_address(struct game_node *gn, char *err, size_t errlen)
{
    const char *uri = gn->conf->ecs_metadata_uri;

    if (gn->conf->advertise_addr != NULL && gn->conf->advertise_addr[0]) {
        pm_strlcpy(gn->advertise, gn->conf->advertise_addr,
                   sizeof gn->advertise);
        return PM_OK;
    }
    if (uri != NULL && uri[0] != '\0') {
        if (ecs_address(uri, gn->advertise, sizeof gn->advertise) == PM_OK)
            return PM_OK;
        pm_log_kv(PM_LOG_WARN, "ecs_metadata_failed",
                  "no address from ECS task metadata; using the host's", "uri",
                  uri, NULL);
    }
    if (primary_address(gn->advertise, sizeof gn->advertise) == PM_OK)
        return PM_OK;
    return pm_errf(err, errlen, PM_EIO,
                   "cannot tell this node's address: set game.advertise_addr");
}

/* ---- raft glue ----------------------------------------------------------- */

static void
fsm_apply(void *arg, const void *data, size_t len)
{
    game_fsm_apply(arg, data, len);
}

static void *
fsm_snapshot(void *arg, size_t *len)
{
    return game_fsm_snapshot(arg, len);
}

static int
fsm_restore(void *arg, const void *data, size_t len)
{
    return game_fsm_restore(arg, data, len);
}

static void
propose_member(struct game_node *gn, uint64_t id, const char *raft,
               const char *peer)
{
    cJSON *e = cJSON_CreateObject();
    char num[24];

    cJSON_AddStringToObject(e, "t", "member");
    snprintf(num, sizeof num, "%" PRIu64, id);
    cJSON_AddStringToObject(e, "id", num);
    cJSON_AddStringToObject(e, "raft", raft);
    cJSON_AddStringToObject(e, "peer", peer);
    game_ctl_propose(gn, e);
}

static void
on_change(void *arg, enum pm_raft_state state, uint64_t leader)
{
    struct game_node *gn = arg;
    struct fsm_member *me;

    pm_log(PM_LOG_INFO, "raft_changed", "raft state %s, leader %" PRIu64,
           pm_raft_state_name(state), leader);
    if (state != PM_RAFT_LEADER)
        return;
    gn->match_busy = false;
    gn->change_busy = false;
    me = game_fsm_member(gn, gn->node_id);
    if (me == NULL || strcmp(me->peer_addr, gn->peer_addr) != 0 || me->draining)
        propose_member(gn, gn->node_id, gn->raft_addr, gn->peer_addr);
    game_match_kick(gn);
}

/* ---- joining ------------------------------------------------------------- */

static bool
joined(struct game_node *gn)
{
    return pm_raft_leader(gn->raft, NULL) != 0 &&
           game_fsm_member(gn, gn->node_id) != NULL;
}

static void
ask_to_join(struct game_node *gn)
{
    int i;

    for (i = 0; i < gn->npeers; i++)
        if (strcmp(gn->peers[i], gn->peer_addr) != 0)
            game_peer_join(gn, gn->peers[i]);
}

static int
raft_go(struct game_node *gn, bool bootstrap)
{
    char err[PM_ERRMSG_SIZE];
    int rc;

    if (bootstrap) {
        struct pm_raft_server me;

        memset(&me, 0, sizeof me);
        me.id = gn->node_id;
        pm_strlcpy(me.address, gn->raft_addr, sizeof me.address);
        me.role = PM_RAFT_VOTER;
        rc = pm_raft_bootstrap(gn->raft, &me, 1, err, sizeof err);
        if (rc == PM_OK)
            pm_log(PM_LOG_INFO, "cluster_bootstrap",
                   "no live peer: this node starts a new cluster");
        else if (rc != PM_ECONFLICT)
            pm_log_kv(PM_LOG_ERROR, "bootstrap_failed", "could not bootstrap",
                      "reason", err, NULL);
    }
    if (pm_raft_start(gn->raft, err, sizeof err) != PM_OK) {
        pm_log_kv(PM_LOG_ERROR, "raft_start_failed", "raft did not start",
                  "reason", err, NULL);
        pm_server_exit(gn->srv, 1);
        return PM_EIO;
    }
    gn->raft_started = true;
    return PM_OK;
}

void
game_cluster_peers(struct game_node *gn, char **addrs, int n)
{
    int i;

    for (i = 0; i < gn->npeers; i++)
        free(gn->peers[i]);
    free(gn->peers);
    gn->peers = NULL;
    gn->npeers = 0;
    if (n > 0) {
        gn->peers = pm_xcalloc((size_t)n, sizeof *gn->peers);
        for (i = 0; i < n; i++)
            if (strcmp(addrs[i], gn->peer_addr) != 0)
                gn->peers[gn->npeers++] = pm_xstrdup(addrs[i]);
    }
    if (gn->discovered)
        return;
    if (n < 0) /* the database failed: try again at the next heartbeat */
        return;
    gn->discovered = true;
    /* First in: bootstrap (a restarted node's data dir refuses it and
     * the node simply rejoins with its log). Otherwise ask to join. */
    raft_go(gn, gn->npeers == 0);
}

/* Static peers: the first of the list bootstraps when no other answers
 * within STATIC_BOOTSTRAP_WAIT_MS; every other node joins. */
static void
static_peers(struct game_node *gn)
{
    char *list = pm_xstrdup(gn->conf->peers), *save = NULL, *tok;
    char *addrs[MAX_SERVERS];
    int n = 0;

    for (tok = strtok_r(list, ", ", &save); tok != NULL && n < MAX_SERVERS;
         tok = strtok_r(NULL, ", ", &save))
        addrs[n++] = tok;
    gn->discovered = true;
    game_cluster_peers(gn, addrs, n);
    gn->static_first = n > 0 && strcmp(addrs[0], gn->peer_addr) == 0;
    free(list);
    raft_go(gn, false);
}

/* ---- the leader's duties ------------------------------------------------- */

static void
change_done(void *arg, int status)
{
    struct game_node *gn = arg;

    gn->change_busy = false;
    if (status != PM_OK)
        pm_log(PM_LOG_WARN, "membership_change_failed",
               "a membership change did not commit (status %d)", status);
}

void
game_cluster_join_request(struct game_node *gn, uint64_t id,
                          const char *raft_addr, const char *peer_addr)
{
    struct pm_raft_server sv[MAX_SERVERS];
    struct fsm_member *m = game_fsm_member(gn, id);
    size_t n, i;

    if (gn->raft == NULL || id == 0)
        return;
    if (m == NULL || strcmp(m->peer_addr, peer_addr) != 0 ||
        strcmp(m->raft_addr, raft_addr) != 0)
        propose_member(gn, id, raft_addr, peer_addr);
    n = pm_raft_servers(gn->raft, sv, MAX_SERVERS);
    for (i = 0; i < n && i < MAX_SERVERS; i++)
        if (sv[i].id == id)
            return; /* in already: promotion follows in reconcile */
    if (gn->change_busy)
        return; /* it asks again */
    gn->change_busy = true;
    pm_log(PM_LOG_INFO, "node_joining", "adding node %" PRIu64 " (%s)", id,
           raft_addr);
    pm_raft_add(gn->raft, id, raft_addr, change_done, gn);
}

/* Would the live voters still be a majority once id is gone? */
static bool
quorum_without(struct game_node *gn, uint64_t id)
{
    struct pm_raft_server sv[MAX_SERVERS];
    size_t n = pm_raft_servers(gn->raft, sv, MAX_SERVERS), i;
    int voters = 0, live = 0;

    for (i = 0; i < n && i < MAX_SERVERS; i++) {
        if (sv[i].id == id || sv[i].role != PM_RAFT_VOTER)
            continue;
        voters++;
        if (game_peer_down_ms(gn, sv[i].id) == 0)
            live++;
    }
    return 2 * live > voters;
}

void
game_cluster_leave_request(struct game_node *gn, uint64_t id)
{
    cJSON *e;
    char num[24];

    if (!game_ctl_is_leader(gn) || id == gn->node_id)
        return;
    e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "t", "leave");
    snprintf(num, sizeof num, "%" PRIu64, id);
    cJSON_AddStringToObject(e, "id", num);
    game_ctl_propose(gn, e);
    if (gn->change_busy)
        return; /* dead_after removes it later */
    if (!quorum_without(gn, id)) {
        pm_log(PM_LOG_WARN, "node_leaving_kept",
               "node %" PRIu64 " left but stays a voter: without it the live "
               "voters would not be a majority (game.dead_after removes it)",
               id);
        return;
    }
    gn->change_busy = true;
    pm_log(PM_LOG_INFO, "node_leaving", "removing node %" PRIu64, id);
    pm_raft_remove(gn->raft, id, change_done, gn);
}

/* Games of unreachable owners move to live nodes. */
static void
failover(struct game_node *gn)
{
    struct fsm_game *g, *t;
    uint64_t now = pm_now_ms(), to;

    HASH_ITER(hh, gn->fsm.games, g, t)
    {
        if (g->owner == gn->node_id ||
            game_peer_down_ms(gn, g->owner) < gn->conf->failover_after ||
            now - g->reassign_ms < REASSIGN_EVERY_MS)
            continue;
        to = game_match_pick_owner(gn, 0);
        if (to == g->owner)
            continue;
        g->reassign_ms = now;
        pm_log(PM_LOG_WARN, "game_failover",
               "node %" PRIu64 " unreachable: game %" PRIu64
               " moves to node %" PRIu64,
               g->owner, g->id, to);
        game_ctl_propose(gn, game_fsm_assign_entry(g->id, to, g->epoch + 1));
    }
}

/* One membership change at a time: promote, then remove the dead. */
static void
membership(struct game_node *gn)
{
    struct pm_raft_server sv[MAX_SERVERS];
    size_t n = pm_raft_servers(gn->raft, sv, MAX_SERVERS), i;
    int voters = 0;

    if (gn->change_busy || n > MAX_SERVERS)
        return;
    for (i = 0; i < n; i++)
        if (sv[i].role == PM_RAFT_VOTER)
            voters++;
    for (i = 0; i < n; i++) {
        if (sv[i].id == gn->node_id || sv[i].role == PM_RAFT_VOTER ||
            game_peer_down_ms(gn, sv[i].id) != 0)
            continue;
        if (voters < gn->conf->voters) {
            gn->change_busy = true;
            pm_log(PM_LOG_INFO, "node_promoted",
                   "node %" PRIu64 " becomes a voter", sv[i].id);
            pm_raft_assign(gn->raft, sv[i].id, PM_RAFT_VOTER, change_done, gn);
            return;
        }
        if (sv[i].role == PM_RAFT_SPARE) {
            gn->change_busy = true;
            pm_raft_assign(gn->raft, sv[i].id, PM_RAFT_STANDBY, change_done,
                           gn);
            return;
        }
    }
    for (i = 0; i < n; i++) {
        if (sv[i].id == gn->node_id ||
            game_peer_down_ms(gn, sv[i].id) < gn->conf->dead_after)
            continue;
        pm_log(PM_LOG_WARN, "node_dead",
               "node %" PRIu64 " silent past game.dead_after: removing it",
               sv[i].id);
        game_cluster_leave_request(gn, sv[i].id);
        return;
    }
}

static void
reconcile(struct game_node *gn)
{
    uint64_t now = pm_now_ms();

    if (!gn->raft_started || gn->draining)
        return;
    if (!joined(gn)) {
        if (now - gn->join_asked_ms >= JOIN_EVERY_MS) {
            gn->join_asked_ms = now;
            ask_to_join(gn);
        }
        if (gn->static_first && pm_raft_leader(gn->raft, NULL) == 0 &&
            now - gn->started_ms >= STATIC_BOOTSTRAP_WAIT_MS &&
            !gn->static_tried) {
            /* Nobody answered: the first of the static list starts the
             * cluster (with its log, if it has one, this is refused). */
            gn->static_tried = true;
            pm_raft_close(gn->raft, NULL, NULL);
            gn->raft = NULL;
            gn->raft_started = false;
            gn->restart_bootstrap = true;
        }
        return;
    }
    if (!game_ctl_is_leader(gn))
        return;
    failover(gn);
    membership(gn);
}

/* ---- shutdown ------------------------------------------------------------ */

static void
leave_now(struct game_node *gn)
{
    game_peer_leave(gn, gn->node_id);
    gn->leave_sent_ms = pm_now_ms();
}

static void
transfer_done(void *arg, int status)
{
    struct game_node *gn = arg;

    pm_log(PM_LOG_INFO, "leadership_transferred",
           "leadership transfer %s; new leader %" PRIu64,
           status == PM_OK ? "done" : "failed", pm_raft_leader(gn->raft, NULL));
    gn->transfer_busy = false;
    leave_now(gn);
}

static void
handoff_done(void *arg, int status)
{
    struct game_node *gn = arg;

    (void)status;
    if (--gn->handoffs_pending > 0 || gn->raft == NULL)
        return;
    if (pm_raft_state(gn->raft) == PM_RAFT_LEADER) {
        gn->transfer_busy = true;
        pm_raft_transfer(gn->raft, 0, transfer_done, gn);
        return;
    }
    leave_now(gn);
}

void
game_cluster_stop(struct game_node *gn)
{
    struct game_room *r, *t;
    cJSON *e;
    char num[24];
    uint64_t to;
    bool leader = gn->raft != NULL && game_ctl_is_leader(gn);

    gn->stop_ms = pm_now_ms();
    game_discovery_stop(gn);
    if (gn->raft == NULL || !gn->raft_started)
        return;
    e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "t", "drain");
    snprintf(num, sizeof num, "%" PRIu64, gn->node_id);
    cJSON_AddStringToObject(e, "id", num);
    game_ctl_propose(gn, e);
    gn->handoffs_pending = 1; /* released below, after the loop */
    HASH_ITER(hh, gn->rooms, r, t)
    {
        to = game_match_pick_owner(gn, 0);
        if (to == gn->node_id || r->ended)
            continue; /* nowhere to go */
        e = game_room_handoff(gn, r, to);
        pm_log(PM_LOG_INFO, "game_handoff",
               "handing game %" PRIu64 " to node %" PRIu64, r->id, to);
        if (leader) {
            char *txt = cJSON_PrintUnformatted(e);

            gn->handoffs_pending++;
            pm_raft_apply(gn->raft, txt, strlen(txt), handoff_done, gn);
            free(txt);
            cJSON_Delete(e);
        } else {
            game_ctl_propose(gn, e);
        }
        game_room_close(gn, r);
    }
    handoff_done(gn, PM_OK);
}

static void
raft_closed(void *arg)
{
    struct game_node *gn = arg;

    gn->raft_closed = true;
}

bool
game_cluster_busy(struct game_node *gn)
{
    uint64_t now = pm_now_ms();

    if (gn->raft == NULL)
        return false;
    if (gn->raft_closing)
        return !gn->raft_closed;
    /* Wait for the hand-off and the transfer, then give the LEAVE a
     * moment to be applied before raft goes away. */
    if (gn->handoffs_pending > 0 || gn->transfer_busy ||
        gn->leave_sent_ms == 0 || now - gn->leave_sent_ms < 300)
        return true;
    gn->raft_closing = true;
    pm_raft_close(gn->raft, raft_closed, gn);
    return true;
}

/* ---- start, free, health ------------------------------------------------- */

static int
raft_new(struct game_node *gn, char *err, size_t errlen)
{
    const struct pm_core_conf *core = pm_server_conf(gn->srv);
    struct pm_raft_opts o;
    char dir[600], bind[GAME_ADDR_MAX + 8];

    snprintf(dir, sizeof dir, "%s/raft", gn->conf->data_dir);
    snprintf(bind, sizeof bind, "%s:%d", core->addr, (int)gn->conf->raft_port);
    memset(&o, 0, sizeof o);
    o.id = gn->node_id;
    o.address = gn->raft_addr;
    o.bind = bind;
    o.dir = dir;
    o.election_ms = (unsigned)gn->conf->election_timeout;
    o.heartbeat_ms = (unsigned)(gn->conf->election_timeout / 10);
    o.snapshot_threshold = 1024;
    o.snapshot_trailing = 4096;
    o.fsm.apply = fsm_apply;
    o.fsm.snapshot = fsm_snapshot;
    o.fsm.restore = fsm_restore;
    o.fsm.arg = gn;
    o.on_change = on_change;
    o.arg = gn;
    gn->raft = pm_raft_new(pm_server_base(gn->srv), &o, err, errlen);
    return gn->raft != NULL ? PM_OK : PM_EIO;
}

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct game_node *gn = arg;
    struct timeval tv = {0, CLUSTER_TICK_MS * 1000};
    char err[PM_ERRMSG_SIZE];

    (void)fd;
    (void)what;
    if (gn->restart_bootstrap) {
        gn->restart_bootstrap = false;
        if (raft_new(gn, err, sizeof err) != PM_OK) {
            pm_log_kv(PM_LOG_ERROR, "raft_start_failed", "raft did not start",
                      "reason", err, NULL);
            pm_server_exit(gn->srv, 1);
            return;
        }
        raft_go(gn, true);
    }
    reconcile(gn);
    evtimer_add(gn->cluster_timer, &tv);
}

int
game_cluster_start(struct game_node *gn, char *err, size_t errlen)
{
    struct timeval tv = {0, CLUSTER_TICK_MS * 1000};

    if (node_id_load(gn, err, errlen) != PM_OK ||
        find_address(gn, err, errlen) != PM_OK)
        return PM_EINVAL;
    snprintf(gn->raft_addr, sizeof gn->raft_addr, "%s:%d", gn->advertise,
             (int)gn->conf->raft_port);
    snprintf(gn->peer_addr, sizeof gn->peer_addr, "%s:%d", gn->advertise,
             (int)gn->conf->peer_port);
    gn->peer = game_peer_new(gn, err, errlen);
    if (gn->peer == NULL || raft_new(gn, err, errlen) != PM_OK)
        return PM_EINVAL;
    gn->started_ms = pm_now_ms();
    gn->cluster_timer = evtimer_new(pm_server_base(gn->srv), tick_cb, gn);
    evtimer_add(gn->cluster_timer, &tv);
    pm_log(PM_LOG_INFO, "cluster_node",
           "node %" PRIu64 ": raft %s, peer link %s", gn->node_id,
           gn->raft_addr, gn->peer_addr);
    if (gn->conf->peers != NULL && gn->conf->peers[0] != '\0') {
        static_peers(gn);
        return PM_OK;
    }
    return game_discovery_open(gn, err, errlen);
}

void
game_cluster_free(struct game_node *gn)
{
    int i;

    if (gn->cluster_timer != NULL)
        event_free(gn->cluster_timer);
    gn->cluster_timer = NULL;
    if (gn->raft != NULL && !gn->raft_closing) {
        struct event_base *base = pm_server_base(gn->srv);
        uint64_t until = pm_now_ms() + 2000;

        /* Shutdown was cut short: close raft here, driving the loop for
         * its last callbacks (bounded). */
        gn->raft_closing = true;
        pm_raft_close(gn->raft, raft_closed, gn);
        while (!gn->raft_closed && pm_now_ms() < until)
            event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    }
    gn->raft = NULL;
    game_peer_free(gn->peer);
    gn->peer = NULL;
    game_discovery_free(gn);
    for (i = 0; i < gn->npeers; i++)
        free(gn->peers[i]);
    free(gn->peers);
    gn->peers = NULL;
}

void
game_cluster_health(struct game_node *gn, cJSON *obj)
{
    struct pm_raft_server sv[MAX_SERVERS];
    size_t n, i;
    int voters = 0;

    if (gn->raft == NULL) {
        cJSON_AddStringToObject(obj, "raft_state", "starting");
        cJSON_AddNumberToObject(obj, "leader", 0);
        cJSON_AddNumberToObject(obj, "voters", 0);
        return;
    }
    n = pm_raft_servers(gn->raft, sv, MAX_SERVERS);
    for (i = 0; i < n && i < MAX_SERVERS; i++)
        if (sv[i].role == PM_RAFT_VOTER)
            voters++;
    cJSON_AddStringToObject(obj, "raft_state",
                            pm_raft_state_name(pm_raft_state(gn->raft)));
    cJSON_AddNumberToObject(obj, "leader",
                            (double)pm_raft_leader(gn->raft, NULL));
    cJSON_AddNumberToObject(obj, "voters", voters);
    cJSON_AddNumberToObject(obj, "members", HASH_COUNT(gn->fsm.members));
}

bool
game_cluster_ready(struct game_node *gn)
{
    return gn->raft != NULL && gn->raft_started && joined(gn);
}
