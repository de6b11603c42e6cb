/*
 * pm_db: the backend-neutral half of the SQL store. Picks the backend
 * from the URL, copies what callers submit into units, counts them while
 * they are in flight, runs their callbacks on the loop thread, and holds
 * the migration runner both backends share.
 */
#include "config.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pm_db_int.h"
#include "pm_log.h"
#include "pm_util.h"

#define PM_DB_MIGRATIONS_TABLE                                                 \
    "CREATE TABLE IF NOT EXISTS pm_migrations (version INTEGER PRIMARY KEY, "  \
    "name TEXT NOT NULL, applied_at BIGINT NOT NULL)"

static bool
has_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

struct pm_db *
pm_db_open(struct pm_loop *loop, const struct pm_db_opts *opts, char *err,
           size_t errlen)
{
    struct pm_db *db;
    const struct pm_db_backend *be;
    enum pm_db_kind kind;

    if (opts->url == NULL || opts->url[0] == '\0') {
        pm_errf(err, errlen, PM_EINVAL, "database.url is empty");
        return NULL;
    }
    if (has_prefix(opts->url, "sqlite:")) {
        be = &pm_sqlite_backend;
        kind = PM_DB_SQLITE;
    } else if (has_prefix(opts->url, "postgres://") ||
               has_prefix(opts->url, "postgresql://")) {
        be = &pm_pg_backend;
        kind = PM_DB_POSTGRES;
    } else {
        pm_errf(err, errlen, PM_EINVAL,
                "database.url must start with sqlite:, postgres:// or "
                "postgresql://");
        return NULL;
    }
    db = pm_xcalloc(1, sizeof *db);
    db->loop = loop;
    db->kind = kind;
    db->be = be;
    db->migrations = opts->migrations;
    db->nmigrations = opts->nmigrations;
    db->on_state = opts->on_state;
    db->arg = opts->arg;
    if (be->open(db, opts, err, errlen) != PM_OK) {
        free(db);
        return NULL;
    }
    return db;
}

void
pm_db_free(struct pm_db *db)
{
    if (db == NULL)
        return;
    db->closing = true;
    db->be->close(db);
    free(db);
}

enum pm_db_kind
pm_db_kind(const struct pm_db *db)
{
    return db->kind;
}

bool
pm_db_is_up(const struct pm_db *db)
{
    return db != NULL && db->up;
}

size_t
pm_db_pending(const struct pm_db *db)
{
    return db->pending;
}

void
pm_db_set_up(struct pm_db *db, bool up)
{
    if (db->up == up)
        return;
    db->up = up;
    if (db->on_state != NULL && !db->closing)
        db->on_state(up, db->arg);
}

static struct pm_db_unit *
unit_new(enum pm_db_unit_kind kind, pm_db_fn cb, void *arg)
{
    struct pm_db_unit *u = pm_xcalloc(1, sizeof *u);

    u->kind = kind;
    u->cb = cb;
    u->arg = arg;
    return u;
}

static void
ustmt_copy(struct pm_db_ustmt *dst, const struct pm_db_stmt *src)
{
    int i;

    PM_ASSERT(src->nparams >= 0 && src->nparams <= PM_DB_MAX_PARAMS);
    dst->sql = pm_xstrdup(src->sql);
    dst->nparams = src->nparams;
    dst->params = pm_xcalloc(src->nparams + 1, sizeof *dst->params);
    for (i = 0; i < src->nparams; i++)
        if (src->params[i] != NULL)
            dst->params[i] = pm_xstrdup(src->params[i]);
}

static void
submit(struct pm_db *db, struct pm_db_unit *u)
{
    db->pending++;
    db->be->submit(db, u);
}

void
pm_db_query(struct pm_db *db, const char *sql, int nparams,
            const char *const *params, pm_db_fn cb, void *arg)
{
    struct pm_db_stmt s = {sql, nparams, params};

    pm_db_txn(db, &s, 1, cb, arg);
}

void
pm_db_txn(struct pm_db *db, const struct pm_db_stmt *stmts, int n, pm_db_fn cb,
          void *arg)
{
    struct pm_db_unit *u = unit_new(PM_DB_UNIT_STMTS, cb, arg);
    int i;

    PM_ASSERT(n > 0);
    u->txn = n > 1;
    u->nstmts = n;
    u->stmts = pm_xcalloc(n, sizeof *u->stmts);
    for (i = 0; i < n; i++)
        ustmt_copy(&u->stmts[i], &stmts[i]);
    submit(db, u);
}

void
pm_db_flush(struct pm_db *db, pm_db_fn cb, void *arg)
{
    submit(db, unit_new(PM_DB_UNIT_FLUSH, cb, arg));
}

void
pm_db_snapshot(struct pm_db *db, const char *path, pm_db_fn cb, void *arg)
{
    struct pm_db_unit *u = unit_new(PM_DB_UNIT_SNAPSHOT, cb, arg);

    u->path = pm_xstrdup(path);
    submit(db, u);
}

static void
unit_free_result(struct pm_db_unit *u)
{
    int i, n = u->res.nrows * u->res.ncols;

    for (i = 0; i < n; i++)
        free(u->res.vals[i]);
    free(u->res.vals);
    free(u->errbuf);
    memset(&u->res, 0, sizeof u->res);
    u->errbuf = NULL;
}

void
pm_db_unit_free(struct pm_db_unit *u)
{
    int i, j;

    unit_free_result(u);
    for (i = 0; i < u->nstmts; i++) {
        free(u->stmts[i].sql);
        for (j = 0; j < u->stmts[i].nparams; j++)
            free(u->stmts[i].params[j]);
        free(u->stmts[i].params);
    }
    free(u->stmts);
    free(u->path);
    free(u);
}

void
pm_db_complete(struct pm_db *db, struct pm_db_unit *u)
{
    PM_ASSERT(db->pending > 0);
    db->pending--;
    if (u->cb != NULL && !db->closing)
        u->cb(u->arg, &u->res);
    pm_db_unit_free(u);
}

void
pm_db_unit_fail(struct pm_db_unit *u, int status, const char *fmt, ...)
{
    va_list ap;
    char buf[PM_ERRMSG_SIZE];

    unit_free_result(u);
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    u->errbuf = pm_xstrdup(buf);
    u->res.status = status;
    u->res.err = u->errbuf;
}

void
pm_db_unit_reset(struct pm_db_unit *u, int ncols)
{
    unit_free_result(u);
    u->res.ncols = ncols;
}

void
pm_db_unit_add_row(struct pm_db_unit *u, const char *const *vals)
{
    int i, nc = u->res.ncols, base = u->res.nrows * nc;

    u->res.vals =
        pm_xrealloc(u->res.vals, (size_t)(base + nc + 1) * sizeof *u->res.vals);
    for (i = 0; i < nc; i++)
        u->res.vals[base + i] = vals[i] != NULL ? pm_xstrdup(vals[i]) : NULL;
    u->res.nrows++;
}

const char *
pm_db_val(const struct pm_db_res *res, int row, int col)
{
    if (res == NULL || row < 0 || col < 0 || row >= res->nrows ||
        col >= res->ncols)
        return NULL;
    return res->vals[row * res->ncols + col];
}

int64_t
pm_db_int(const struct pm_db_res *res, int row, int col, int64_t dflt)
{
    const char *v = pm_db_val(res, row, col);
    char *end;
    long long n;

    if (v == NULL || *v == '\0')
        return dflt;
    n = strtoll(v, &end, 10);
    return *end == '\0' ? (int64_t)n : dflt;
}

static int
migrate_one(const struct pm_db_sync *s, const struct pm_db_migration *m,
            char *err, size_t errlen)
{
    char sql[256];
    int rv;

    rv = s->has_version(s->conn, m->version, err, errlen);
    if (rv != 0)
        return rv < 0 ? PM_EIO : PM_OK;
    if (s->exec(s->conn, s->sqlite_script ? m->sqlite : m->pg, err, errlen) !=
        PM_OK)
        return PM_EIO;
    snprintf(sql, sizeof sql,
             "INSERT INTO pm_migrations (version, name, applied_at) "
             "VALUES (%d, '%s', %llu)",
             m->version, m->name, (unsigned long long)pm_wall_ms());
    if (s->exec(s->conn, sql, err, errlen) != PM_OK)
        return PM_EIO;
    pm_log(PM_LOG_INFO, "db_migrated", "schema version %d (%s) applied",
           m->version, m->name);
    return PM_OK;
}

int
pm_db_migrate_sync(const struct pm_db_sync *s, const struct pm_db_migration *m,
                   size_t n, char *err, size_t errlen)
{
    char why[PM_ERRMSG_SIZE];
    size_t i;

    /* Inside the serialising transaction: two instances starting on an
     * empty database do not race on the table itself. */
    if (s->exec(s->conn, s->begin, why, sizeof why) != PM_OK ||
        s->exec(s->conn, PM_DB_MIGRATIONS_TABLE, why, sizeof why) != PM_OK ||
        s->exec(s->conn, "COMMIT", why, sizeof why) != PM_OK) {
        char ignored[PM_ERRMSG_SIZE];

        s->exec(s->conn, "ROLLBACK", ignored, sizeof ignored);
        return pm_errf(err, errlen, PM_EIO, "cannot create pm_migrations: %s",
                       why);
    }
    for (i = 0; i < n; i++) {
        if (s->exec(s->conn, s->begin, why, sizeof why) != PM_OK)
            return pm_errf(err, errlen, PM_EIO, "migration %d: %s",
                           m[i].version, why);
        if (migrate_one(s, &m[i], why, sizeof why) != PM_OK) {
            char ignored[PM_ERRMSG_SIZE];

            s->exec(s->conn, "ROLLBACK", ignored, sizeof ignored);
            return pm_errf(err, errlen, PM_EIO, "migration %d (%s): %s",
                           m[i].version, m[i].name, why);
        }
        if (s->exec(s->conn, "COMMIT", why, sizeof why) != PM_OK)
            return pm_errf(err, errlen, PM_EIO, "migration %d: %s",
                           m[i].version, why);
    }
    return PM_OK;
}

char *
pm_db_sqlite_sql(const char *sql)
{
    char *out = pm_xmalloc(strlen(sql) + 1), *o = out;
    char quote = 0;
    const char *p;

    for (p = sql; *p != '\0'; p++) {
        if (quote != 0) {
            if (*p == quote)
                quote = 0;
        } else if (*p == '\'' || *p == '"') {
            quote = *p;
        } else if (*p == '$' && isdigit((unsigned char)p[1])) {
            *o++ = '?';
            continue;
        }
        *o++ = *p;
    }
    *o = '\0';
    return out;
}
