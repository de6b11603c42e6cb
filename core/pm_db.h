/*
 * pm_db: the SQL store of the roles, over SQLite (core/pm_sqlite.c) or
 * PostgreSQL (core/pm_pg.c), so that a role writes its queries once and
 * never includes sqlite3.h or libpq-fe.h.
 *
 * SQL is written with $1..$n placeholders (PostgreSQL's form; the SQLite
 * backend binds them as ?1..?n). Parameters and results are text, NULL
 * for SQL NULL; write CAST($1 AS INTEGER) where an integer is needed
 * outside a column comparison (LIMIT, arithmetic). A unique-constraint
 * violation is reported as PM_ECONFLICT so that callers can map it to
 * "already taken" without parsing error texts.
 *
 * Every call is asynchronous and the loop thread never blocks on the
 * database: SQLite runs on one writer thread that commits what queued up
 * meanwhile in one transaction (group commit, one savepoint per unit so
 * a failing unit does not undo its neighbours); PostgreSQL runs libpq in
 * non-blocking mode on the loop. Units complete in submission order.
 *
 * Ownership: the caller owns every string it passes (they are copied);
 * a result is borrowed for the duration of the callback. Loop thread
 * only.
 */
#ifndef PM_DB_H
#define PM_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pm_db;
struct pm_loop;

#define PM_DB_MAX_PARAMS 16

enum pm_db_kind { PM_DB_SQLITE = 1, PM_DB_POSTGRES = 2 };

struct pm_db_res {
    int status;      /* PM_OK, PM_ECONFLICT, PM_EUNAVAIL, PM_EIO, PM_EINVAL */
    const char *err; /* the reason when status != PM_OK */
    int nrows, ncols;
    int64_t changes; /* rows written by the statement */
    char **vals;     /* row-major; read them with pm_db_val */
};

/* The result of one unit; res is borrowed for the call. */
typedef void (*pm_db_fn)(void *arg, const struct pm_db_res *res);
/* The database became reachable (migrations applied) or unreachable. */
typedef void (*pm_db_state_fn)(bool up, void *arg);

/* One statement; params[0..nparams) borrowed until the submit returns. */
struct pm_db_stmt {
    const char *sql;
    int nparams;
    const char *const *params;
};

/* A schema step: applied once, in version order, in one transaction. */
struct pm_db_migration {
    int version;
    const char *name;
    const char *sqlite; /* script for SQLite (several statements) */
    const char *pg;     /* script for PostgreSQL */
};

struct pm_db_opts {
    const char *url; /* sqlite:PATH | postgres://... | postgresql://... */
    /* SQLite only. */
    const char *journal; /* "wal" (default; local disk) or "delete" (NFS) */
    bool sync_full;      /* synchronous=FULL (else NORMAL) */
    /* Schema to bring the database to before reporting "up". */
    const struct pm_db_migration *migrations;
    size_t nmigrations;
    pm_db_state_fn on_state;
    void *arg;
};

/*
 * Open the database named by opts->url; SQLite opens the file (creating
 * its directory) and migrates before returning, PostgreSQL connects and
 * migrates in the background and reports through on_state. NULL with a
 * one-line reason for a bad URL or a file that cannot be opened.
 */
struct pm_db *pm_db_open(struct pm_loop *loop, const struct pm_db_opts *opts,
                         char *err, size_t errlen);
/*
 * Finish every submitted unit (their writes are kept; callbacks that did
 * not run yet are dropped) and free the handle. NULL-safe.
 */
void pm_db_free(struct pm_db *db);

enum pm_db_kind pm_db_kind(const struct pm_db *db);
/* Connected and migrated (false for NULL: not opened yet). */
bool pm_db_is_up(const struct pm_db *db);
/* Units submitted whose callback has not run yet. */
size_t pm_db_pending(const struct pm_db *db);

/* Run one statement; cb (may be NULL) gets its result. */
void pm_db_query(struct pm_db *db, const char *sql, int nparams,
                 const char *const *params, pm_db_fn cb, void *arg);
/*
 * Run stmts[0..n) in one transaction: all or nothing. cb gets the result
 * of the last statement, or of the first one that failed.
 */
void pm_db_txn(struct pm_db *db, const struct pm_db_stmt *stmts, int n,
               pm_db_fn cb, void *arg);
/* cb runs once every unit submitted before this call has completed. */
void pm_db_flush(struct pm_db *db, pm_db_fn cb, void *arg);
/*
 * SQLite only: write a consistent copy of the database to path with the
 * online backup API (on the writer thread, between transactions). Other
 * backends complete with PM_EINVAL.
 */
void pm_db_snapshot(struct pm_db *db, const char *path, pm_db_fn cb, void *arg);

/* Result accessors: text, or NULL for SQL NULL or out of range. */
const char *pm_db_val(const struct pm_db_res *res, int row, int col);
/* The value as an integer; dflt when NULL or not a number. */
int64_t pm_db_int(const struct pm_db_res *res, int row, int col, int64_t dflt);

#endif
