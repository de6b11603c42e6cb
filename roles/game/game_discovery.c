/*
 * game_discovery: finding the other nodes through PostgreSQL (the seed
 * deployment's servers table). At start a node takes an advisory lock,
 * upserts its row and reads the live peers in one transaction, so two
 * nodes starting together never both believe they are first. Every
 * game.heartbeat (10 s) it refreshes its row (with its raft role) and
 * reads the peers again; peers are rows newer than 3 heartbeats (30 s),
 * rows older than 6 (60 s) are deleted. On SIGTERM the row goes.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "game.h"
#include "pm_db.h"
#include "pm_log.h"
#include "pm_raft.h"
#include "pm_server.h"
#include "pm_util.h"

#define DISCOVERY_LOCK "5052" /* pg_advisory_xact_lock key */

static const struct pm_db_migration game_migrations[] = {
    {100, "game servers table", NULL,
     "CREATE TABLE IF NOT EXISTS servers ("
     " id BIGINT PRIMARY KEY,"
     " ip_address TEXT NOT NULL,"
     " grpc_port INTEGER NOT NULL,"
     " raft_port INTEGER NOT NULL,"
     " last_heartbeat TIMESTAMPTZ NOT NULL DEFAULT now(),"
     " raft_role TEXT NOT NULL DEFAULT 'joining');"
     "CREATE INDEX IF NOT EXISTS servers_heartbeat"
     " ON servers (last_heartbeat);"},
};

static const char upsert_sql[] =
    "INSERT INTO servers (id, ip_address, grpc_port, raft_port, "
    "last_heartbeat, raft_role) VALUES (CAST($1 AS BIGINT), $2, "
    "CAST($3 AS INTEGER), CAST($4 AS INTEGER), now(), $5) "
    "ON CONFLICT (id) DO UPDATE SET ip_address = EXCLUDED.ip_address, "
    "grpc_port = EXCLUDED.grpc_port, raft_port = EXCLUDED.raft_port, "
    "last_heartbeat = now(), raft_role = EXCLUDED.raft_role";

static const char peers_sql[] =
    "SELECT ip_address, grpc_port FROM servers WHERE id <> CAST($1 AS BIGINT)"
    " AND last_heartbeat > now() - CAST($2 AS INTEGER) * interval '1 "
    "millisecond' ORDER BY id";

static const char role_names[][10] = {"joining", "follower", "candidate",
                                      "leader"};

/* The row's parameters (strings live in buf). */
struct row {
    char id[24], ip[GAME_ADDR_MAX], grpc[8], raft[8], role[12], live[24];
    const char *p[5];
};

static void
row_fill(struct game_node *gn, struct row *r)
{
    enum pm_raft_state st =
        gn->raft != NULL ? pm_raft_state(gn->raft) : PM_RAFT_UNAVAILABLE;

    snprintf(r->id, sizeof r->id, "%" PRIu64, gn->node_id);
    pm_strlcpy(r->ip, gn->advertise, sizeof r->ip);
    snprintf(r->grpc, sizeof r->grpc, "%d", (int)gn->conf->peer_port);
    snprintf(r->raft, sizeof r->raft, "%d", (int)gn->conf->raft_port);
    pm_strlcpy(r->role, role_names[st], sizeof r->role);
    snprintf(r->live, sizeof r->live, "%" PRIu64, 3 * gn->conf->heartbeat);
    r->p[0] = r->id;
    r->p[1] = r->ip;
    r->p[2] = r->grpc;
    r->p[3] = r->raft;
    r->p[4] = r->role;
}

/* The peers' peer-link addresses from a result of peers_sql. */
static void
peers_cb(void *arg, const struct pm_db_res *res)
{
    struct game_node *gn = arg;
    char **addrs;
    int i, n;

    if (res->status != PM_OK) {
        pm_log_kv(PM_LOG_WARN, "discovery_failed",
                  "could not read the servers table", "reason", res->err, NULL);
        if (!gn->discovered)
            game_cluster_peers(gn, NULL, -1);
        return;
    }
    n = res->nrows;
    addrs = pm_xcalloc((size_t)n + 1, sizeof *addrs);
    for (i = 0; i < n; i++)
        addrs[i] =
            pm_xasprintf("%s:%s", pm_db_val(res, i, 0), pm_db_val(res, i, 1));
    game_cluster_peers(gn, addrs, n);
    for (i = 0; i < n; i++)
        free(addrs[i]);
    free(addrs);
}

static void
register_node(struct game_node *gn)
{
    struct row r;
    const char *live[2];
    struct pm_db_stmt st[3];

    row_fill(gn, &r);
    live[0] = r.id;
    live[1] = r.live;
    st[0].sql = "SELECT pg_advisory_xact_lock(" DISCOVERY_LOCK ")";
    st[0].nparams = 0;
    st[0].params = NULL;
    st[1].sql = upsert_sql;
    st[1].nparams = 5;
    st[1].params = r.p;
    st[2].sql = peers_sql;
    st[2].nparams = 2;
    st[2].params = live;
    pm_db_txn(gn->db, st, 3, peers_cb, gn);
}

static void
heartbeat_cb(evutil_socket_t fd, short what, void *arg)
{
    struct game_node *gn = arg;
    struct timeval tv = {(time_t)(gn->conf->heartbeat / 1000),
                         (suseconds_t)(gn->conf->heartbeat % 1000) * 1000};
    char old[24];
    const char *p[1] = {old};

    (void)fd;
    (void)what;
    if (pm_db_is_up(gn->db)) {
        register_node(gn);
        snprintf(old, sizeof old, "%" PRIu64, 6 * gn->conf->heartbeat);
        pm_db_query(gn->db,
                    "DELETE FROM servers WHERE last_heartbeat < now() - "
                    "CAST($1 AS INTEGER) * interval '1 millisecond'",
                    1, p, NULL, NULL);
    }
    evtimer_add(gn->db_timer, &tv);
}

static void
db_state(bool up, void *arg)
{
    struct game_node *gn = arg;

    if (up && !gn->discovered)
        register_node(gn);
    if (!up)
        pm_log(PM_LOG_WARN, "discovery_down",
               "PostgreSQL is unreachable; the cluster keeps running on raft");
}

int
game_discovery_open(struct game_node *gn, char *err, size_t errlen)
{
    struct pm_db_opts o;
    struct timeval tv = {(time_t)(gn->conf->heartbeat / 1000),
                         (suseconds_t)(gn->conf->heartbeat % 1000) * 1000};

    memset(&o, 0, sizeof o);
    o.url = pm_server_conf(gn->srv)->database_url;
    o.migrations = game_migrations;
    o.nmigrations = sizeof game_migrations / sizeof game_migrations[0];
    o.on_state = db_state;
    o.arg = gn;
    gn->db = pm_db_open(pm_server_loop(gn->srv), &o, err, errlen);
    if (gn->db == NULL)
        return PM_EINVAL;
    gn->db_timer = evtimer_new(pm_server_base(gn->srv), heartbeat_cb, gn);
    evtimer_add(gn->db_timer, &tv);
    return PM_OK;
}

void
game_discovery_stop(struct game_node *gn)
{
    char id[24];
    const char *p[1] = {id};

    if (gn->db == NULL)
        return;
    if (gn->db_timer != NULL)
        evtimer_del(gn->db_timer);
    snprintf(id, sizeof id, "%" PRIu64, gn->node_id);
    pm_db_query(gn->db, "DELETE FROM servers WHERE id = CAST($1 AS BIGINT)", 1,
                p, NULL, NULL);
}

void
game_discovery_free(struct game_node *gn)
{
    if (gn->db_timer != NULL)
        event_free(gn->db_timer);
    gn->db_timer = NULL;
    pm_db_free(gn->db);
    gn->db = NULL;
}
