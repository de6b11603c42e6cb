/*
 * pm_sqlite: the SQLite backend of pm_db. One connection, owned by one
 * writer thread; the loop thread only queues units and receives them
 * back through pm_loop_post.
 *
 * Group commit: the writer takes everything queued since its last pass
 * and runs it in one BEGIN IMMEDIATE ... COMMIT, each unit inside its own
 * SAVEPOINT so that a unit that fails (a duplicate key, say) is rolled
 * back alone. A burst of a thousand inserts therefore costs one commit
 * (one fsync with synchronous=FULL) instead of a thousand. Results are
 * handed back only after the COMMIT succeeded: a caller that acknowledges
 * on its callback acknowledges durable data. A snapshot commits what came
 * before it, then copies the database with the online backup API.
 *
 * Prepared statements are cached by their SQL text. journal_mode is WAL
 * on local disk or DELETE for network file systems (EFS), where WAL's
 * shared memory is unsafe; foreign_keys is on; busy_timeout covers a
 * second process holding the lock briefly.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>
#include <uthash.h>

#include "pm_db_int.h"
#include "pm_log.h"
#include "pm_loop.h"
#include "pm_util.h"

#define SQ_BUSY_TIMEOUT_MS 5000
#define SQ_MAX_CACHED 128

struct sq_cached {
    char *sql; /* key: the SQLite form of the SQL */
    sqlite3_stmt *stmt;
    UT_hash_handle hh;
};

struct sq {
    struct pm_db *db; /* NULL once closed */
    struct pm_loop *loop;
    sqlite3 *conn;
    struct sq_cached *cache;
    unsigned ncached;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct pm_db_unit *head, *tail;
    bool quit;
    unsigned batches_out; /* posted to the loop, not delivered yet */
};

/* A finished batch on its way to the loop thread. */
struct sq_batch {
    struct sq *sq;
    struct pm_db_unit *head;
};

static int
sq_status(int rc)
{
    switch (rc) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
        return PM_ECONFLICT;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return PM_EUNAVAIL;
    default:
        return (rc & 0xff) == SQLITE_CONSTRAINT ? PM_EINVAL : PM_EIO;
    }
}

static sqlite3_stmt *
sq_prepare(struct sq *sq, const char *sql, char *err, size_t errlen)
{
    struct sq_cached *c;
    char *lite = pm_db_sqlite_sql(sql);
    sqlite3_stmt *stmt;

    HASH_FIND_STR(sq->cache, lite, c);
    if (c != NULL) {
        free(lite);
        sqlite3_reset(c->stmt);
        sqlite3_clear_bindings(c->stmt);
        return c->stmt;
    }
    if (sqlite3_prepare_v2(sq->conn, lite, -1, &stmt, NULL) != SQLITE_OK) {
        pm_errf(err, errlen, PM_EINVAL, "%s", sqlite3_errmsg(sq->conn));
        free(lite);
        return NULL;
    }
    if (sq->ncached >= SQ_MAX_CACHED) {
        /* Evict the oldest entry: a role has a bounded set of queries. */
        struct sq_cached *old = sq->cache;

        HASH_DEL(sq->cache, old);
        sqlite3_finalize(old->stmt);
        free(old->sql);
        free(old);
        sq->ncached--;
    }
    c = pm_xcalloc(1, sizeof *c);
    c->sql = lite;
    c->stmt = stmt;
    HASH_ADD_KEYPTR(hh, sq->cache, c->sql, strlen(c->sql), c);
    sq->ncached++;
    return stmt;
}

/* Run one statement; keep its rows in u when keep. */
static int
sq_run_stmt(struct sq *sq, struct pm_db_unit *u, const struct pm_db_ustmt *s,
            bool keep)
{
    char err[PM_ERRMSG_SIZE];
    sqlite3_stmt *stmt = sq_prepare(sq, s->sql, err, sizeof err);
    const char *row[64];
    int i, rc, ncols, before;

    if (stmt == NULL) {
        pm_db_unit_fail(u, PM_EINVAL, "%s", err);
        return PM_EINVAL;
    }
    for (i = 0; i < s->nparams; i++) {
        rc = s->params[i] != NULL ? sqlite3_bind_text(stmt, i + 1, s->params[i],
                                                      -1, SQLITE_STATIC)
                                  : sqlite3_bind_null(stmt, i + 1);
        if (rc != SQLITE_OK) {
            pm_db_unit_fail(u, PM_EINVAL, "parameter $%d: %s", i + 1,
                            sqlite3_errmsg(sq->conn));
            return PM_EINVAL;
        }
    }
    ncols = sqlite3_column_count(stmt);
    if (ncols > (int)(sizeof row / sizeof row[0]))
        ncols = (int)(sizeof row / sizeof row[0]);
    if (keep)
        pm_db_unit_reset(u, ncols);
    before = sqlite3_total_changes(sq->conn);
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (!keep)
            continue;
        for (i = 0; i < ncols; i++)
            row[i] = (const char *)sqlite3_column_text(stmt, i);
        pm_db_unit_add_row(u, row);
    }
    if (rc != SQLITE_DONE) {
        int ext = sqlite3_extended_errcode(sq->conn);

        pm_db_unit_fail(u, sq_status(ext), "%s", sqlite3_errmsg(sq->conn));
        sqlite3_reset(stmt);
        return u->res.status;
    }
    /* sqlite3_changes() keeps the count of the last write: not ours if
     * this statement wrote nothing (a SELECT, DDL). */
    if (keep && sqlite3_total_changes(sq->conn) != before)
        u->res.changes = sqlite3_changes(sq->conn);
    sqlite3_reset(stmt);
    return PM_OK;
}

static int
sq_exec(void *conn, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;

    if (sqlite3_exec(conn, sql, NULL, NULL, &msg) != SQLITE_OK) {
        pm_errf(err, errlen, PM_EIO, "%s", msg != NULL ? msg : "error");
        sqlite3_free(msg);
        return PM_EIO;
    }
    return PM_OK;
}

/* Run a unit's statements inside SAVEPOINT u (already in a transaction). */
static void
sq_run_unit(struct sq *sq, struct pm_db_unit *u)
{
    char err[PM_ERRMSG_SIZE];
    int i;

    sq_exec(sq->conn, "SAVEPOINT u", err, sizeof err);
    for (i = 0; i < u->nstmts; i++)
        if (sq_run_stmt(sq, u, &u->stmts[i], i == u->nstmts - 1) != PM_OK)
            break;
    if (i < u->nstmts)
        sq_exec(sq->conn, "ROLLBACK TO u", err, sizeof err);
    sq_exec(sq->conn, "RELEASE u", err, sizeof err);
}

static void
sq_snapshot(struct sq *sq, struct pm_db_unit *u)
{
    char *tmp = pm_xasprintf("%s.tmp", u->path);
    sqlite3 *dst = NULL;
    sqlite3_backup *b;
    int rc;

    unlink(tmp);
    rc = sqlite3_open_v2(tmp, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                         NULL);
    if (rc == SQLITE_OK) {
        b = sqlite3_backup_init(dst, "main", sq->conn, "main");
        if (b != NULL) {
            rc = sqlite3_backup_step(b, -1);
            sqlite3_backup_finish(b);
            rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
        } else {
            rc = sqlite3_errcode(dst);
        }
    }
    if (rc != SQLITE_OK) {
        pm_db_unit_fail(u, PM_EIO, "snapshot to %s: %s", u->path,
                        dst != NULL ? sqlite3_errmsg(dst) : "cannot open");
        sqlite3_close(dst);
        unlink(tmp);
    } else {
        sqlite3_close(dst);
        if (rename(tmp, u->path) != 0)
            pm_db_unit_fail(u, PM_EIO, "snapshot rename to %s: %s", u->path,
                            strerror(errno));
    }
    free(tmp);
}

static void
sq_deliver(void *arg)
{
    struct sq_batch *b = arg;
    struct sq *sq = b->sq;
    struct pm_db_unit *u, *next;
    bool last;

    for (u = b->head; u != NULL; u = next) {
        next = u->next;
        if (sq->db != NULL)
            pm_db_complete(sq->db, u);
        else
            pm_db_unit_free(u); /* closed meanwhile: no callback */
    }
    free(b);
    /* The writer counts batches out under mu. */
    pthread_mutex_lock(&sq->mu);
    last = --sq->batches_out == 0;
    pthread_mutex_unlock(&sq->mu);
    if (last && sq->db == NULL) {
        pthread_mutex_destroy(&sq->mu);
        pthread_cond_destroy(&sq->cv);
        free(sq);
    }
}

/* Commit the transaction that units first..stop (exclusive) ran in. */
static void
sq_commit(struct sq *sq, struct pm_db_unit *first, struct pm_db_unit *stop)
{
    char err[PM_ERRMSG_SIZE], ignored[PM_ERRMSG_SIZE];
    struct pm_db_unit *u;

    if (sq_exec(sq->conn, "COMMIT", err, sizeof err) == PM_OK)
        return;
    sq_exec(sq->conn, "ROLLBACK", ignored, sizeof ignored);
    for (u = first; u != stop; u = u->next)
        if (u->kind == PM_DB_UNIT_STMTS && u->res.status == PM_OK)
            pm_db_unit_fail(u, PM_EIO, "commit failed: %s", err);
}

/* Run a batch taken off the queue: its statements in one transaction. */
static void
sq_run_batch(struct sq *sq, struct pm_db_unit *head)
{
    char err[PM_ERRMSG_SIZE];
    struct pm_db_unit *u, *first = NULL; /* opened the transaction */

    for (u = head; u != NULL; u = u->next) {
        switch (u->kind) {
        case PM_DB_UNIT_STMTS:
            if (first == NULL) {
                if (sq_exec(sq->conn, "BEGIN IMMEDIATE", err, sizeof err) !=
                    PM_OK) {
                    pm_db_unit_fail(u, PM_EUNAVAIL, "%s", err);
                    break;
                }
                first = u;
            }
            sq_run_unit(sq, u);
            break;
        case PM_DB_UNIT_SNAPSHOT:
            if (first != NULL)
                sq_commit(sq, first, u);
            first = NULL;
            sq_snapshot(sq, u);
            break;
        case PM_DB_UNIT_FLUSH:
            break;
        }
    }
    if (first != NULL)
        sq_commit(sq, first, NULL);
}

static void *
sq_main(void *arg)
{
    struct sq *sq = arg;
    sigset_t all;

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    pthread_mutex_lock(&sq->mu);
    for (;;) {
        struct sq_batch *b;

        while (sq->head == NULL && !sq->quit)
            pthread_cond_wait(&sq->cv, &sq->mu);
        if (sq->head == NULL)
            break;
        b = pm_xcalloc(1, sizeof *b);
        b->sq = sq;
        b->head = sq->head;
        sq->head = sq->tail = NULL;
        pthread_mutex_unlock(&sq->mu);
        sq_run_batch(sq, b->head);
        pthread_mutex_lock(&sq->mu);
        sq->batches_out++;
        pm_loop_post(sq->loop, sq_deliver, b);
    }
    pthread_mutex_unlock(&sq->mu);
    return NULL;
}

static int
sq_has_version(void *conn, int v, char *err, size_t errlen)
{
    sqlite3_stmt *stmt;
    int rc;

    if (sqlite3_prepare_v2(conn, "SELECT 1 FROM pm_migrations WHERE version=?",
                           -1, &stmt, NULL) != SQLITE_OK)
        return pm_errf(err, errlen, PM_EIO, "%s", sqlite3_errmsg(conn));
    sqlite3_bind_int(stmt, 1, v);
    rc = sqlite3_step(stmt);
    sqlite3_finalize(stmt);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return pm_errf(err, errlen, PM_EIO, "%s", sqlite3_errmsg(conn));
    return rc == SQLITE_ROW ? 1 : 0;
}

/* mkdir -p of the directory part of path. */
static int
make_parent(const char *path, char *err, size_t errlen)
{
    char *dir = pm_xstrdup(path), *p;

    for (p = dir + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
            pm_errf(err, errlen, PM_EIO, "cannot create %s: %s", dir,
                    strerror(errno));
            free(dir);
            return PM_EIO;
        }
        *p = '/';
    }
    free(dir);
    return PM_OK;
}

static void
sq_destroy(struct sq *sq)
{
    struct sq_cached *c, *tmp;

    HASH_ITER(hh, sq->cache, c, tmp)
    {
        HASH_DEL(sq->cache, c);
        sqlite3_finalize(c->stmt);
        free(c->sql);
        free(c);
    }
    sqlite3_close(sq->conn);
    sq->conn = NULL;
}

static int
sq_open(struct pm_db *db, const struct pm_db_opts *opts, char *err,
        size_t errlen)
{
    const char *path = opts->url + strlen("sqlite:");
    const char *journal = opts->journal != NULL ? opts->journal : "wal";
    struct pm_db_sync sync = {.sqlite_script = true,
                              .begin = "BEGIN IMMEDIATE",
                              .exec = sq_exec,
                              .has_version = sq_has_version};
    struct sq *sq;
    char why[PM_ERRMSG_SIZE], *pragmas;
    int rc;

    if (*path == '\0')
        return pm_errf(err, errlen, PM_EINVAL,
                       "database.url: no path after "
                       "sqlite:");
    if (strcmp(journal, "wal") != 0 && strcmp(journal, "delete") != 0)
        return pm_errf(err, errlen, PM_EINVAL,
                       "sqlite journal must be wal or delete, not %s", journal);
    if (strcmp(path, ":memory:") != 0 &&
        make_parent(path, err, errlen) != PM_OK)
        return PM_EIO;
    sq = pm_xcalloc(1, sizeof *sq);
    sq->db = db;
    sq->loop = db->loop;
    rc = sqlite3_open_v2(
        path, &sq->conn,
        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        pm_errf(err, errlen, PM_EIO, "cannot open %s: %s", path,
                sq->conn != NULL ? sqlite3_errmsg(sq->conn)
                                 : sqlite3_errstr(rc));
        sq_destroy(sq);
        free(sq);
        return PM_EIO;
    }
    sqlite3_extended_result_codes(sq->conn, 1);
    sqlite3_busy_timeout(sq->conn, SQ_BUSY_TIMEOUT_MS);
    sync.conn = sq->conn;
    pragmas = pm_xasprintf("PRAGMA journal_mode=%s; PRAGMA synchronous=%s; "
                           "PRAGMA foreign_keys=ON;",
                           journal, opts->sync_full ? "FULL" : "NORMAL");
    rc = sq_exec(sq->conn, pragmas, why, sizeof why);
    free(pragmas);
    if (rc != PM_OK ||
        pm_db_migrate_sync(&sync, opts->migrations, opts->nmigrations, why,
                           sizeof why) != PM_OK) {
        pm_errf(err, errlen, PM_EIO, "%s: %s", path, why);
        sq_destroy(sq);
        free(sq);
        return PM_EIO;
    }
    pthread_mutex_init(&sq->mu, NULL);
    pthread_cond_init(&sq->cv, NULL);
    if (pthread_create(&sq->thread, NULL, sq_main, sq) != 0) {
        pm_errf(err, errlen, PM_EIO, "cannot start the SQLite thread");
        pthread_mutex_destroy(&sq->mu);
        pthread_cond_destroy(&sq->cv);
        sq_destroy(sq);
        free(sq);
        return PM_EIO;
    }
    db->impl = sq;
    pm_log(PM_LOG_INFO, "db_open", "sqlite %s (journal %s)", path, journal);
    pm_db_set_up(db, true);
    return PM_OK;
}

static void
sq_submit(struct pm_db *db, struct pm_db_unit *u)
{
    struct sq *sq = db->impl;

    pthread_mutex_lock(&sq->mu);
    if (sq->tail != NULL)
        sq->tail->next = u;
    else
        sq->head = u;
    sq->tail = u;
    pthread_cond_signal(&sq->cv);
    pthread_mutex_unlock(&sq->mu);
}

static void
sq_close(struct pm_db *db)
{
    struct sq *sq = db->impl;

    pthread_mutex_lock(&sq->mu);
    sq->quit = true;
    pthread_cond_signal(&sq->cv);
    pthread_mutex_unlock(&sq->mu);
    pthread_join(sq->thread, NULL);
    /* Checkpoint so that the file alone is complete after exit. */
    sqlite3_wal_checkpoint_v2(sq->conn, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL,
                              NULL);
    sq_destroy(sq);
    sq->db = NULL;
    if (sq->batches_out == 0) {
        pthread_mutex_destroy(&sq->mu);
        pthread_cond_destroy(&sq->cv);
        free(sq);
    }
}

const struct pm_db_backend pm_sqlite_backend = {
    .open = sq_open,
    .submit = sq_submit,
    .close = sq_close,
};
