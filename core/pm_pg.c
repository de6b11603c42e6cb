/*
 * pm_pg: the PostgreSQL backend of pm_db. One libpq connection in
 * non-blocking pipeline mode, driven by libevent on the loop thread.
 * A unit is sent at once as its statements followed by a Sync, so any
 * number of units are in flight and their results come back in
 * submission order. The server runs what lies between two Syncs as one
 * implicit transaction (committed at the Sync; after a failure the rest
 * is skipped and the whole is rolled back), so every unit is atomic
 * without BEGIN/COMMIT, which would instead leave the session in an
 * aborted transaction after a failure and break the units behind it.
 *
 * Before each connect (at open and after every loss) a worker thread
 * applies the migrations over a blocking connection of its own, holding
 * an advisory lock so that instances starting together take turns; the
 * async connection then goes to the server that worker reached, by
 * address, so the loop never waits on a DNS lookup. "Up" is reported
 * once both are done. While down, units fail at once with PM_EUNAVAIL;
 * a lost link fails what was in flight, reports "down" and retries
 * after 100 ms doubling to 5 s, with +-20 % jitter. pm_db_free drains
 * the pipeline for up to 5 s so that submitted writes are kept, then
 * drops the link. The URL is logged with its password masked; server
 * notices go to the debug log.
 *
 * SQLSTATE mapping: 23505 PM_ECONFLICT; other class 23 (integrity), 22
 * (bad data), 42 (bad SQL) and 08P01 (wrong parameter count) PM_EINVAL,
 * as SQLite reports them; 08, 57P and 40 (link, shutdown, serialisation)
 * and errors made by libpq itself PM_EUNAVAIL; the rest PM_EIO.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "pm_db_int.h"
#include "pm_log.h"
#include "pm_loop.h"
#include "pm_util.h"

#define PG_RETRY_MIN_MS 100
#define PG_RETRY_MAX_MS 5000
#define PG_CONNECT_TIMEOUT_S 10
#define PG_CLOSE_DRAIN_MS 5000
/* The advisory lock every migrating instance takes ("pmdb"). */
#define PG_MIGRATE_BEGIN "BEGIN; SELECT pg_advisory_xact_lock(1886217314)"

enum pg_state { PG_DOWN, PG_MIGRATING, PG_CONNECTING, PG_UP };

struct pg_fifo {
    struct pm_db_unit *head, *tail;
};

struct pg {
    struct pm_db *db;
    struct pm_loop *loop;
    struct event_base *base;
    char *url;      /* as configured, password included */
    char *safe_url; /* password masked, for logs and errors */
    /* Copies: the worker may still run them after pm_db_free. */
    struct pm_db_migration *migs;
    size_t nmigs;
    /* The server the last migration reached: where the link goes. */
    char *host, *hostaddr, *port;
    enum pg_state state;
    PGconn *conn;
    struct event *io;  /* connect polling, then reads */
    struct event *wio; /* while PQflush has more to write */
    struct event *retry, *ctimer, *deliver;
    struct pg_fifo inflight; /* sent, or waiting on what was, in order */
    struct pg_fifo ready;    /* finished, callback not run yet */
    int rstmt;               /* results of inflight.head read so far */
    char *broken;            /* why a send failed; acted on next */
    unsigned attempt;
    bool down_logged;
    bool migrating; /* a worker holds this struct */
    bool dead;      /* pm_db_free ran */
    int busy;       /* entry points on the stack */
};

/* One migration pass on a worker thread. */
struct pg_job {
    struct pg *pg;
    int rc;
    char err[PM_ERRMSG_SIZE];
    char *host, *hostaddr, *port;
};

/* ---- helpers ------------------------------------------------------- */

static void
pg_push(struct pg_fifo *f, struct pm_db_unit *u)
{
    u->next = NULL;
    if (f->tail != NULL)
        f->tail->next = u;
    else
        f->head = u;
    f->tail = u;
}

static struct pm_db_unit *
pg_pop(struct pg_fifo *f)
{
    struct pm_db_unit *u = f->head;

    if (u != NULL) {
        f->head = u->next;
        if (f->head == NULL)
            f->tail = NULL;
        u->next = NULL;
    }
    return u;
}

static char *
pg_dup(const char *s)
{
    return s != NULL ? pm_xstrdup(s) : NULL;
}

/* libpq's multi-line messages as one log-friendly line. */
static void
pg_oneline(char *dst, size_t len, const char *src)
{
    char *p;

    pm_strlcpy(dst, src != NULL ? src : "", len);
    for (p = dst; *p != '\0'; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
    while (p > dst && p[-1] == ' ')
        *--p = '\0';
}

static const char *
pg_res_msg(const PGresult *res)
{
    const char *m = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

    if (m == NULL || *m == '\0')
        m = PQresultErrorMessage(res);
    if (*m == '\0')
        m = PQresStatus(PQresultStatus(res));
    return m;
}

static int
pg_status(const PGresult *res)
{
    const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);

    if (st == NULL)
        return PM_EUNAVAIL; /* made by libpq: the link failed */
    if (strcmp(st, "23505") == 0)
        return PM_ECONFLICT;
    if (strcmp(st, "08P01") == 0 || strncmp(st, "23", 2) == 0 ||
        strncmp(st, "22", 2) == 0 || strncmp(st, "42", 2) == 0)
        return PM_EINVAL;
    if (strncmp(st, "08", 2) == 0 || strncmp(st, "57P", 3) == 0 ||
        strncmp(st, "40", 2) == 0)
        return PM_EUNAVAIL;
    return PM_EIO;
}

/* The URL with the password (user:PASSWORD@ and ?password=) masked. */
static char *
pg_mask(const char *url)
{
    const char *p = strstr(url, "://") + 3, *at, *colon;
    char *out, *q;

    at = memrchr(p, '@', strcspn(p, "?"));
    colon = at != NULL ? memchr(p, ':', (size_t)(at - p)) : NULL;
    if (colon != NULL && colon + 1 < at)
        out = pm_xasprintf("%.*s***%s", (int)(colon + 1 - url), url, at);
    else
        out = pm_xstrdup(url);
    for (q = strchr(out, '?'); q != NULL; q = strchr(q, '&')) {
        size_t off, vlen;
        char *next;

        q++;
        if (strncmp(q, "password=", 9) != 0)
            continue;
        off = (size_t)(q + 9 - out);
        vlen = strcspn(q + 9, "&");
        next = pm_xasprintf("%.*s***%s", (int)off, out, q + 9 + vlen);
        free(out);
        out = next;
        q = out + off + 3;
    }
    return out;
}

static void
pg_notice(void *arg, const char *message)
{
    char line[PM_ERRMSG_SIZE];

    pg_oneline(line, sizeof line, message);
    pm_log(PM_LOG_DEBUG, "db_notice", "%s", line);
}

/*
 * Keywords: defaults the URL may override, the URL itself, then for the
 * async link the server the migration reached (NULL values are skipped).
 */
static PGconn *
pg_start_conn(const struct pg *pg, bool async)
{
    static const char *const keys[] = {"connect_timeout",
                                       "keepalives_idle",
                                       "keepalives_interval",
                                       "keepalives_count",
                                       "fallback_application_name",
                                       "dbname",
                                       "host",
                                       "hostaddr",
                                       "port",
                                       NULL};
    const char *const vals[] = {"10",
                                "30",
                                "10",
                                "3",
                                "p2pmesh",
                                pg->url,
                                async ? pg->host : NULL,
                                async ? pg->hostaddr : NULL,
                                async ? pg->port : NULL,
                                NULL};

    return async ? PQconnectStartParams(keys, vals, 1)
                 : PQconnectdbParams(keys, vals, 1);
}

/* ---- migrations (worker thread, blocking connection) --------------- */

static int
pg_sync_exec(void *conn, const char *sql, char *err, size_t errlen)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    int rc = PM_OK;

    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK &&
        st != PGRES_EMPTY_QUERY) {
        pg_oneline(err, errlen,
                   res != NULL ? pg_res_msg(res) : PQerrorMessage(conn));
        rc = PM_EIO;
    }
    PQclear(res);
    return rc;
}

static int
pg_sync_has_version(void *conn, int v, char *err, size_t errlen)
{
    char ver[16];
    const char *params[1] = {ver};
    PGresult *res;
    int rc;

    snprintf(ver, sizeof ver, "%d", v);
    res = PQexecParams(conn, "SELECT 1 FROM pm_migrations WHERE version = $1",
                       1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        rc = PQntuples(res) > 0;
    } else {
        pg_oneline(err, errlen,
                   res != NULL ? pg_res_msg(res) : PQerrorMessage(conn));
        rc = PM_EIO;
    }
    PQclear(res);
    return rc;
}

static void
pg_migrate_work(void *arg)
{
    struct pg_job *job = arg;
    struct pg *pg = job->pg;
    PGconn *conn = pg_start_conn(pg, false);
    struct pm_db_sync sync = {.conn = conn,
                              .sqlite_script = false,
                              .begin = PG_MIGRATE_BEGIN,
                              .exec = pg_sync_exec,
                              .has_version = pg_sync_has_version};

    if (PQstatus(conn) != CONNECTION_OK) {
        job->rc = PM_EUNAVAIL;
        pg_oneline(job->err, sizeof job->err, PQerrorMessage(conn));
    } else {
        PQsetNoticeProcessor(conn, pg_notice, NULL);
        job->rc = pm_db_migrate_sync(&sync, pg->migs, pg->nmigs, job->err,
                                     sizeof job->err);
        if (job->rc != PM_OK && PQstatus(conn) == CONNECTION_BAD)
            job->rc = PM_EUNAVAIL;
        if (job->rc == PM_OK) {
            job->host = pg_dup(PQhost(conn));
            job->hostaddr = pg_dup(PQhostaddr(conn));
            job->port = pg_dup(PQport(conn));
        }
    }
    PQfinish(conn);
}

/* ---- link ---------------------------------------------------------- */

static void pg_migrate_done(void *arg);

static void
pg_free(struct pg *pg)
{
    size_t i;

    event_free(pg->retry);
    event_free(pg->ctimer);
    event_free(pg->deliver);
    for (i = 0; i < pg->nmigs; i++) {
        free((char *)pg->migs[i].name);
        free((char *)pg->migs[i].pg);
    }
    free(pg->migs);
    free(pg->url);
    free(pg->safe_url);
    free(pg->host);
    free(pg->hostaddr);
    free(pg->port);
    free(pg);
}

/* Free once closed and no callback or worker still uses the struct. */
static void
pg_release(struct pg *pg)
{
    if (pg->dead && pg->busy == 0 && !pg->migrating)
        pg_free(pg);
}

static void
pg_enter(struct pg *pg)
{
    pg->busy++;
}

static void
pg_leave(struct pg *pg)
{
    pg->busy--;
    pg_release(pg);
}

/* A send or flush failed: fail the link at the next safe point. */
static void
pg_break(struct pg *pg, const char *why)
{
    char line[PM_ERRMSG_SIZE];

    if (pg->broken != NULL)
        return;
    pg_oneline(line, sizeof line, why);
    pg->broken = pm_xstrdup(line);
    event_active(pg->deliver, 0, 0);
}

static void
pg_flush(struct pg *pg)
{
    int r = PQflush(pg->conn);

    if (r < 0)
        pg_break(pg, PQerrorMessage(pg->conn));
    else if (r > 0)
        event_add(pg->wio, NULL);
    else
        event_del(pg->wio);
}

/* Run the callbacks of what is ready now (not of what they submit). */
static void
pg_deliver(struct pg *pg)
{
    struct pm_db_unit *u, *last = pg->ready.tail;
    bool end = false;

    while (!end && !pg->dead && (u = pg_pop(&pg->ready)) != NULL) {
        end = u == last;
        pm_db_complete(pg->db, u);
    }
    if (!pg->dead && pg->ready.head != NULL)
        event_active(pg->deliver, 0, 0);
}

/* Close the connection and its events. */
static void
pg_drop(struct pg *pg)
{
    if (pg->io != NULL)
        event_free(pg->io);
    if (pg->wio != NULL)
        event_free(pg->wio);
    pg->io = pg->wio = NULL;
    event_del(pg->ctimer);
    PQfinish(pg->conn);
    pg->conn = NULL;
    free(pg->broken);
    pg->broken = NULL;
    pg->rstmt = 0;
    pg->state = PG_DOWN;
}

static void
pg_start(struct pg *pg)
{
    struct pg_job *job = pm_xcalloc(1, sizeof *job);

    job->pg = pg;
    pg->state = PG_MIGRATING;
    pg->migrating = true;
    pm_loop_submit(pg->loop, pg_migrate_work, pg_migrate_done, job);
}

static void
pg_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    pg_start(arg);
}

/* The link is unusable: fail what is in flight, report, retry later. */
static void
pg_fail(struct pg *pg, const char *reason)
{
    char why[PM_ERRMSG_SIZE];
    struct pm_db_unit *u;
    struct timeval tv;
    unsigned char j;
    unsigned ms;

    pg_oneline(why, sizeof why, reason);
    pg_drop(pg);
    while ((u = pg_pop(&pg->inflight)) != NULL) {
        if (u->kind == PM_DB_UNIT_STMTS && u->res.status == PM_OK)
            pm_db_unit_fail(u, PM_EUNAVAIL, "database connection lost: %s",
                            why);
        pg_push(&pg->ready, u);
    }
    pg_deliver(pg);
    if (pg->dead)
        return;
    pm_log_kv(pg->down_logged ? PM_LOG_DEBUG : PM_LOG_WARN, "db_down", why,
              "url", pg->safe_url, NULL);
    pg->down_logged = true;
    pm_db_set_up(pg->db, false);
    if (pg->dead)
        return;
    ms = PG_RETRY_MIN_MS << (pg->attempt < 6 ? pg->attempt : 6);
    if (ms > PG_RETRY_MAX_MS)
        ms = PG_RETRY_MAX_MS;
    pm_random_bytes(&j, 1);
    ms = ms * (80 + j % 41) / 100; /* 80 % to 120 % */
    pg->attempt++;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    event_add(pg->retry, &tv);
}

/* After reading or writing: fail the link if it broke, else deliver. */
static void
pg_settle(struct pg *pg)
{
    if (pg->broken == NULL && PQstatus(pg->conn) == CONNECTION_BAD)
        pg_break(pg, PQerrorMessage(pg->conn));
    if (pg->broken != NULL)
        pg_fail(pg, pg->broken);
    else
        pg_deliver(pg);
}

static void
pg_deliver_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pg *pg = arg;

    pg_enter(pg);
    if (pg->broken != NULL)
        pg_fail(pg, pg->broken);
    else
        pg_deliver(pg);
    pg_leave(pg);
}

/* ---- results ------------------------------------------------------- */

/* Result idx of unit u (idx >= nstmts: an error at the Sync, a commit). */
static void
pg_result(struct pm_db_unit *u, PGresult *res, int idx)
{
    const char **row;
    int r, c, ncols;

    switch (PQresultStatus(res)) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
    case PGRES_EMPTY_QUERY:
        if (idx != u->nstmts - 1 || u->res.status != PM_OK)
            return;
        ncols = PQnfields(res);
        pm_db_unit_reset(u, ncols);
        row = pm_xcalloc((size_t)ncols + 1, sizeof *row);
        for (r = 0; r < PQntuples(res); r++) {
            for (c = 0; c < ncols; c++)
                row[c] = PQgetisnull(res, r, c) ? NULL : PQgetvalue(res, r, c);
            pm_db_unit_add_row(u, row);
        }
        free(row);
        /* Rows written: a SELECT's count is of rows read. */
        if (strncmp(PQcmdStatus(res), "SELECT", 6) != 0)
            u->res.changes = strtoll(PQcmdTuples(res), NULL, 10);
        return;
    case PGRES_PIPELINE_ABORTED:
        if (u->res.status == PM_OK)
            pm_db_unit_fail(u, PM_EIO, "skipped after an earlier error");
        return;
    default:
        if (u->res.status == PM_OK) {
            char msg[PM_ERRMSG_SIZE];

            pg_oneline(msg, sizeof msg, pg_res_msg(res));
            pm_db_unit_fail(u, pg_status(res), "%s", msg);
        }
        return;
    }
}

/* Move what the server answered (and markers behind it) to ready. */
static void
pg_process(struct pg *pg)
{
    struct pm_db_unit *u;
    PGresult *res;
    int nulls = 0;

    while ((u = pg->inflight.head) != NULL) {
        if (u->kind != PM_DB_UNIT_STMTS) {
            pg_push(&pg->ready, pg_pop(&pg->inflight));
            continue;
        }
        if (PQisBusy(pg->conn))
            break;
        res = PQgetResult(pg->conn);
        if (res == NULL) {
            /* One NULL ends each statement's results; two: idle. */
            if (++nulls > 1)
                break;
            continue;
        }
        nulls = 0;
        if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
            pg->rstmt = 0;
            pg_push(&pg->ready, pg_pop(&pg->inflight));
        } else {
            pg_result(u, res, pg->rstmt++);
        }
        PQclear(res);
    }
}

static void
pg_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pg *pg = arg;

    pg_enter(pg);
    if (PQconsumeInput(pg->conn) == 0) {
        pg_break(pg, PQerrorMessage(pg->conn));
    } else {
        pg_process(pg);
        pg_flush(pg); /* the server may have waited for us to read */
    }
    pg_settle(pg);
    pg_leave(pg);
}

static void
pg_write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pg *pg = arg;

    pg_enter(pg);
    pg_flush(pg);
    pg_settle(pg);
    pg_leave(pg);
}

/* ---- connecting ---------------------------------------------------- */

static void pg_connect_cb(evutil_socket_t fd, short what, void *arg);

static void
pg_watch(struct pg *pg, short what, event_callback_fn cb)
{
    if (pg->io != NULL)
        event_free(pg->io);
    pg->io = event_new(pg->base, PQsocket(pg->conn), what, cb, pg);
    event_add(pg->io, NULL);
}

static void
pg_connected(struct pg *pg)
{
    event_del(pg->ctimer);
    if (PQsetnonblocking(pg->conn, 1) != 0 ||
        PQenterPipelineMode(pg->conn) != 1) {
        pg_fail(pg, PQerrorMessage(pg->conn));
        return;
    }
    pg_watch(pg, EV_READ | EV_PERSIST, pg_read_cb);
    pg->wio = event_new(pg->base, PQsocket(pg->conn), EV_WRITE | EV_PERSIST,
                        pg_write_cb, pg);
    pg->state = PG_UP;
    pg->attempt = 0;
    pg->down_logged = false;
    pm_log_kv(PM_LOG_INFO, "db_up", "connected to postgresql", "url",
              pg->safe_url, NULL);
    pm_db_set_up(pg->db, true);
}

static void
pg_connect_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pg *pg = arg;

    pg_enter(pg);
    switch (PQconnectPoll(pg->conn)) {
    case PGRES_POLLING_READING:
        pg_watch(pg, EV_READ, pg_connect_cb);
        break;
    case PGRES_POLLING_WRITING:
        pg_watch(pg, EV_WRITE, pg_connect_cb);
        break;
    case PGRES_POLLING_OK:
        pg_connected(pg);
        break;
    default:
        pg_fail(pg, PQerrorMessage(pg->conn));
        break;
    }
    pg_leave(pg);
}

static void
pg_ctimer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pg *pg = arg;

    pg_enter(pg);
    pg_fail(pg, "timed out connecting");
    pg_leave(pg);
}

static void
pg_connect(struct pg *pg)
{
    struct timeval tv = {PG_CONNECT_TIMEOUT_S, 0};

    pg->state = PG_CONNECTING;
    pg->conn = pg_start_conn(pg, true);
    if (PQstatus(pg->conn) == CONNECTION_BAD) {
        pg_fail(pg, PQerrorMessage(pg->conn));
        return;
    }
    PQsetNoticeProcessor(pg->conn, pg_notice, NULL);
    pg_watch(pg, EV_WRITE, pg_connect_cb);
    event_add(pg->ctimer, &tv);
}

static void
pg_migrate_done(void *arg)
{
    struct pg_job *job = arg;
    struct pg *pg = job->pg;

    pg->migrating = false;
    if (!pg->dead) {
        pg_enter(pg);
        if (job->rc == PM_OK) {
            free(pg->host);
            free(pg->hostaddr);
            free(pg->port);
            pg->host = job->host;
            pg->hostaddr = job->hostaddr;
            pg->port = job->port;
            job->host = job->hostaddr = job->port = NULL;
            pg_connect(pg);
        } else {
            if (job->rc != PM_EUNAVAIL)
                pm_log_kv(PM_LOG_ERROR, "db_migrate_failed", job->err, "url",
                          pg->safe_url, NULL);
            pg_fail(pg, job->err);
        }
        pg_leave(pg);
    } else {
        pg_release(pg);
    }
    free(job->host);
    free(job->hostaddr);
    free(job->port);
    free(job);
}

/* ---- backend ------------------------------------------------------- */

static int
pg_bad_url(const char *safe, char *err, size_t errlen)
{
    char *msg = NULL, line[PM_ERRMSG_SIZE];
    PQconninfoOption *info;
    int rc;

    /* libpq quotes the faulty part: ask again about the masked URL. */
    info = PQconninfoParse(safe, &msg);
    if (info != NULL) {
        rc = pm_errf(err, errlen, PM_EINVAL,
                     "database.url %s: the password is not valid "
                     "percent-encoding",
                     safe);
        PQconninfoFree(info);
    } else {
        pg_oneline(line, sizeof line, msg != NULL ? msg : "out of memory");
        rc = pm_errf(err, errlen, PM_EINVAL, "database.url %s: %s", safe, line);
    }
    PQfreemem(msg);
    return rc;
}

static int
pg_open(struct pm_db *db, const struct pm_db_opts *opts, char *err,
        size_t errlen)
{
    char *safe = pg_mask(opts->url), *msg = NULL;
    PQconninfoOption *info = PQconninfoParse(opts->url, &msg);
    struct pg *pg;
    size_t i;

    PQfreemem(msg);
    if (info == NULL) {
        pg_bad_url(safe, err, errlen);
        free(safe);
        return PM_EINVAL;
    }
    PQconninfoFree(info);
    pg = pm_xcalloc(1, sizeof *pg);
    pg->db = db;
    pg->loop = db->loop;
    pg->base = pm_loop_base(db->loop);
    pg->url = pm_xstrdup(opts->url);
    pg->safe_url = safe;
    pg->nmigs = opts->nmigrations;
    pg->migs = pm_xcalloc(pg->nmigs + 1, sizeof *pg->migs);
    for (i = 0; i < pg->nmigs; i++) {
        pg->migs[i].version = opts->migrations[i].version;
        pg->migs[i].name = pg_dup(opts->migrations[i].name);
        pg->migs[i].pg = pg_dup(opts->migrations[i].pg);
    }
    pg->retry = evtimer_new(pg->base, pg_retry_cb, pg);
    pg->ctimer = evtimer_new(pg->base, pg_ctimer_cb, pg);
    pg->deliver = event_new(pg->base, -1, 0, pg_deliver_cb, pg);
    db->impl = pg;
    pm_log_kv(PM_LOG_INFO, "db_open", "postgresql: migrating, then connecting",
              "url", safe, NULL);
    pg_start(pg);
    return PM_OK;
}

static void
pg_send(struct pg *pg, struct pm_db_unit *u)
{
    int i;

    for (i = 0; i < u->nstmts; i++) {
        const struct pm_db_ustmt *s = &u->stmts[i];

        if (PQsendQueryParams(pg->conn, s->sql, s->nparams, NULL,
                              (const char *const *)s->params, NULL, NULL,
                              0) != 1) {
            pg_break(pg, PQerrorMessage(pg->conn));
            return;
        }
    }
    if (PQpipelineSync(pg->conn) != 1) {
        pg_break(pg, PQerrorMessage(pg->conn));
        return;
    }
    pg_flush(pg);
}

static void
pg_submit(struct pm_db *db, struct pm_db_unit *u)
{
    struct pg *pg = db->impl;

    if (u->kind == PM_DB_UNIT_STMTS && pg->state == PG_UP) {
        if (pg->broken == NULL)
            pg_send(pg, u);
        pg_push(&pg->inflight, u); /* a broken link fails it */
        return;
    }
    if (u->kind == PM_DB_UNIT_SNAPSHOT)
        pm_db_unit_fail(u, PM_EINVAL, "snapshots are for SQLite");
    else if (u->kind == PM_DB_UNIT_STMTS)
        pm_db_unit_fail(u, PM_EUNAVAIL, "database unavailable");
    /* Nothing to run: it completes after what came before it. */
    if (pg->inflight.head != NULL) {
        pg_push(&pg->inflight, u);
    } else {
        pg_push(&pg->ready, u);
        event_active(pg->deliver, 0, 0);
    }
}

/* pm_db_free: let the server answer what is in flight, for 5 s at most. */
static void
pg_drain(struct pg *pg)
{
    uint64_t deadline = pm_now_ms() + PG_CLOSE_DRAIN_MS, now;
    struct pollfd pfd;
    int r;

    for (;;) {
        pg_process(pg);
        if (pg->inflight.head == NULL)
            return;
        r = PQflush(pg->conn);
        now = pm_now_ms();
        if (r < 0 || now >= deadline)
            break;
        pfd.fd = PQsocket(pg->conn);
        pfd.events = (short)(POLLIN | (r > 0 ? POLLOUT : 0));
        if (poll(&pfd, 1, (int)(deadline - now)) < 0 && errno != EINTR)
            break;
        if (PQconsumeInput(pg->conn) == 0)
            break;
    }
    pm_log_kv(PM_LOG_WARN, "db_close_unfinished",
              "closed before postgresql answered every query", "url",
              pg->safe_url, NULL);
}

static void
pg_close(struct pm_db *db)
{
    struct pg *pg = db->impl;
    struct pm_db_unit *u;

    pg->dead = true;
    if (pg->state == PG_UP && pg->broken == NULL)
        pg_drain(pg);
    pg_drop(pg);
    event_del(pg->retry);
    event_del(pg->deliver);
    /* Callbacks are dropped now (db->closing); this frees the units. */
    while ((u = pg_pop(&pg->ready)) != NULL)
        pm_db_complete(db, u);
    while ((u = pg_pop(&pg->inflight)) != NULL)
        pm_db_complete(db, u);
    pg->db = NULL;
    pg_release(pg);
}

const struct pm_db_backend pm_pg_backend = {
    .open = pg_open,
    .submit = pg_submit,
    .close = pg_close,
};
