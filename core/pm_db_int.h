/*
 * pm_db_int: what pm_db.c shares with its backends (pm_sqlite.c, pm_pg.c)
 * and nothing else includes. A unit is one submitted piece of work (a
 * statement, a transaction, a flush marker or a snapshot) with the copy
 * of its SQL and parameters and, once run, its result.
 */
#ifndef PM_DB_INT_H
#define PM_DB_INT_H

#include "pm_db.h"

enum pm_db_unit_kind {
    PM_DB_UNIT_STMTS,   /* one statement, or a transaction of several */
    PM_DB_UNIT_FLUSH,   /* no work: completes after what came before */
    PM_DB_UNIT_SNAPSHOT /* SQLite online backup to path */
};

struct pm_db_ustmt {
    char *sql;
    int nparams;
    char **params; /* NULL entries are SQL NULL */
};

struct pm_db_unit {
    enum pm_db_unit_kind kind;
    bool txn; /* wrap the statements in a transaction */
    int nstmts;
    struct pm_db_ustmt *stmts;
    char *path; /* snapshot */
    pm_db_fn cb;
    void *arg;
    struct pm_db_res res; /* filled by the backend */
    char *errbuf;
    struct pm_db_unit *next;
};

struct pm_db_backend {
    /* Open and migrate (SQLite) or start connecting (PostgreSQL). */
    int (*open)(struct pm_db *db, const struct pm_db_opts *opts, char *err,
                size_t errlen);
    /* Take the unit; complete it later with pm_db_complete. */
    void (*submit)(struct pm_db *db, struct pm_db_unit *u);
    /* Finish submitted units, free the backend state. */
    void (*close)(struct pm_db *db);
};

struct pm_db {
    struct pm_loop *loop;
    enum pm_db_kind kind;
    const struct pm_db_backend *be;
    void *impl;
    bool up;
    bool closing; /* pm_db_free: drop callbacks */
    size_t pending;
    const struct pm_db_migration *migrations;
    size_t nmigrations;
    pm_db_state_fn on_state;
    void *arg;
};

extern const struct pm_db_backend pm_sqlite_backend;
extern const struct pm_db_backend pm_pg_backend;

/* Loop thread: run the unit's callback (unless closing) and free it. */
void pm_db_complete(struct pm_db *db, struct pm_db_unit *u);
/* Free a unit without calling back (its pm_db is gone). */
void pm_db_unit_free(struct pm_db_unit *u);
/* Backend: report the link state (calls opts->on_state on changes). */
void pm_db_set_up(struct pm_db *db, bool up);

/* Result building, on any thread that owns the unit. */
void pm_db_unit_fail(struct pm_db_unit *u, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Reset the result to an empty table of ncols columns. */
void pm_db_unit_reset(struct pm_db_unit *u, int ncols);
/* Append a row; vals[0..ncols) copied (NULL stays NULL). */
void pm_db_unit_add_row(struct pm_db_unit *u, const char *const *vals);

/*
 * Migrations over blocking primitives of a backend (used by SQLite at
 * open and by PostgreSQL on a worker thread before each connect).
 * exec runs a script; begin is the statement that opens the migration
 * transaction and serialises migrating instances.
 */
struct pm_db_sync {
    void *conn;
    bool sqlite_script; /* run m->sqlite, else m->pg */
    const char *begin;
    int (*exec)(void *conn, const char *sql, char *err, size_t errlen);
    /* Is version v recorded in pm_migrations? 1 yes, 0 no, <0 error. */
    int (*has_version)(void *conn, int v, char *err, size_t errlen);
};
int pm_db_migrate_sync(const struct pm_db_sync *s,
                       const struct pm_db_migration *m, size_t n, char *err,
                       size_t errlen);

/* Translate $N placeholders into SQLite's ?N (outside quotes). */
char *pm_db_sqlite_sql(const char *sql);

#endif
