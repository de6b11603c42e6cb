/*
 * Tests of pm_db end to end on a real pm_loop, against SQLite (a file in
 * a temp dir) always and against PostgreSQL when PM_TEST_PG_URL is set
 * (each case in a schema of its own; without the variable those cases
 * return at once). Every PostgreSQL case that ran to its end prints a
 * line "PM_TEST_PG_CASE <name>" so that a harness can tell they ran.
 * PM_TEST_PG_STOP and PM_TEST_PG_START (shell commands) enable the case
 * that stops the server under load and sees the backend come back.
 *
 * Cases: migrations applied once and recorded (a failing one reported);
 * round trip with NULL parameters and values; $N out of order and
 * repeated; unique violations as PM_ECONFLICT; an all-or-nothing
 * transaction; 5000 units submitted in one loop pass complete in order
 * and persist; a failing unit does not undo its neighbours; flush
 * ordering; SQLite snapshots; pm_db_free keeps queued writes, also when
 * called from a callback; a bad URL, and an unreachable server
 * (PM_EUNAVAIL, never up); the server killed under load and back.
 */
#include "config.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <libpq-fe.h>
#include <sqlite3.h>

#include "pm_db.h"
#include "pm_log.h"
#include "pm_loop.h"
#include "pm_test.h"
#include "pm_util.h"

/* ---- harness ------------------------------------------------------- */

enum { BE_SQLITE, BE_PG, NBACKENDS };

static struct pm_loop *loop;
static char tmpdir[64];
static char url[512];
static char schema[64];
static const char *pg_url; /* PM_TEST_PG_URL, or NULL */

static bool (*stop_when)(void);
static bool timed_out;

static void
maybe_stop(void)
{
    if (stop_when != NULL && stop_when())
        pm_loop_stop(loop);
}

static void
guard_cb(evutil_socket_t fd, short what, void *arg)
{
    timed_out = true;
    pm_loop_stop(loop);
}

/* Run the loop until cond() holds or ms pass; returns cond(). */
static bool
run_until(bool (*cond)(void), int ms)
{
    struct event *guard;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    if (cond())
        return true;
    guard = evtimer_new(pm_loop_base(loop), guard_cb, NULL);
    evtimer_add(guard, &tv);
    stop_when = cond;
    timed_out = false;
    pm_loop_run(loop);
    stop_when = NULL;
    event_free(guard);
    return cond();
}

static bool
never(void)
{
    return false;
}

/* Run the loop for ms whatever happens. */
static void
run_for(int ms)
{
    run_until(never, ms);
}

/* One callback's result, copied. */
struct call {
    bool done;
    int seq, status, nrows, ncols;
    int64_t changes;
    char err[PM_ERRMSG_SIZE];
    char val[4][4][64];
    bool null[4][4];
};

static int nseq, ndone, nwant;

static bool
all_done(void)
{
    return ndone >= nwant;
}

static void
record_cb(void *arg, const struct pm_db_res *res)
{
    struct call *c = arg;
    int r, k;

    ck_assert(!c->done); /* exactly once */
    c->done = true;
    c->seq = ++nseq;
    c->status = res->status;
    c->nrows = res->nrows;
    c->ncols = res->ncols;
    c->changes = res->changes;
    pm_strlcpy(c->err, res->err != NULL ? res->err : "", sizeof c->err);
    for (r = 0; r < 4 && r < res->nrows; r++)
        for (k = 0; k < 4 && k < res->ncols; k++) {
            const char *v = pm_db_val(res, r, k);

            c->null[r][k] = v == NULL;
            pm_strlcpy(c->val[r][k], v != NULL ? v : "", sizeof c->val[r][k]);
        }
    ndone++;
    maybe_stop();
}

static void
expect(int n)
{
    nwant = ndone + n;
}

static bool up_state;
static int nstate_up, nstate_down;

static void
state_cb(bool up, void *arg)
{
    up_state = up;
    if (up)
        nstate_up++;
    else
        nstate_down++;
    maybe_stop();
}

static bool
is_up(void)
{
    return up_state;
}

static bool
is_down(void)
{
    return nstate_down > 0 && !up_state;
}

/* Send the log (stdout) to a file until capture_end, which returns it. */
static int saved_stdout = -1, capture_fd = -1;
static char captured[16384];

static void
capture_start(void)
{
    char path[128];

    snprintf(path, sizeof path, "%s/log", tmpdir);
    fflush(stdout);
    saved_stdout = dup(STDOUT_FILENO);
    capture_fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0600);
    ck_assert_int_ge(capture_fd, 0);
    dup2(capture_fd, STDOUT_FILENO);
}

static const char *
capture_end(void)
{
    ssize_t n;

    dup2(saved_stdout, STDOUT_FILENO);
    close(saved_stdout);
    n = pread(capture_fd, captured, sizeof captured - 1, 0);
    close(capture_fd);
    captured[n > 0 ? n : 0] = '\0';
    return captured;
}

static const struct pm_db_migration migs[] = {
    {1, "items",
     "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT UNIQUE, "
     "note TEXT);",
     "CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT UNIQUE, "
     "note TEXT);"},
    {2, "log",
     "CREATE TABLE log (n INTEGER NOT NULL); INSERT INTO log VALUES (0);",
     "CREATE TABLE log (n BIGINT NOT NULL); INSERT INTO log VALUES (0);"},
    {3, "bad", "CREATE TABLE oops (", "CREATE TABLE oops ("},
};
#define NGOOD 2

static void
quiet(void *arg, const char *message)
{
}

static PGconn *
pg_admin(void)
{
    PGconn *c = PQconnectdb(pg_url);

    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "PM_TEST_PG_URL: %s",
                  PQerrorMessage(c));
    PQsetNoticeProcessor(c, quiet, NULL); /* DROP ... CASCADE notices */
    return c;
}

static void
pg_admin_exec(const char *sql)
{
    PGconn *c = pg_admin();
    PGresult *r = PQexec(c, sql);

    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s: %s", sql,
                  PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(c);
}

/*
 * Pick the backend of loop index i: false means "skip" (PostgreSQL
 * without PM_TEST_PG_URL). Sets url to a fresh database.
 */
static bool
backend(int i)
{
    if (i == BE_SQLITE) {
        snprintf(url, sizeof url, "sqlite:%s/t.db", tmpdir);
        return true;
    }
    if (pg_url == NULL)
        return false;
    {
        unsigned char rnd[4];
        char sql[128];

        pm_random_bytes(rnd, sizeof rnd);
        snprintf(schema, sizeof schema, "pm_test_%d_%02x%02x%02x%02x",
                 (int)getpid(), rnd[0], rnd[1], rnd[2], rnd[3]);
        snprintf(sql, sizeof sql, "CREATE SCHEMA %s", schema);
        pg_admin_exec(sql);
        snprintf(url, sizeof url, "%s%soptions=-csearch_path%%3D%s", pg_url,
                 strchr(pg_url, '?') != NULL ? "&" : "?", schema);
    }
    return true;
}

/* The case ran to its end: say so for PostgreSQL, drop its schema. */
static void
backend_done(int i, const char *name)
{
    char sql[128];

    if (i != BE_PG)
        return;
    snprintf(sql, sizeof sql, "DROP SCHEMA %s CASCADE", schema);
    pg_admin_exec(sql);
    printf("PM_TEST_PG_CASE %s\n", name);
    fflush(stdout);
}

static struct pm_db *
open_db(size_t nmigs)
{
    struct pm_db_opts o = {.url = url,
                           .migrations = migs,
                           .nmigrations = nmigs,
                           .on_state = state_cb};
    char err[PM_ERRMSG_SIZE] = "";
    struct pm_db *db;

    up_state = false;
    nstate_up = nstate_down = 0;
    db = pm_db_open(loop, &o, err, sizeof err);
    ck_assert_msg(db != NULL, "pm_db_open: %s", err);
    ck_assert_msg(run_until(is_up, 10000), "database never came up");
    ck_assert(pm_db_is_up(db));
    return db;
}

static void
setup(void)
{
    char err[PM_ERRMSG_SIZE];

    pm_log_setup("test", PM_LOG_WARN, false);
    pg_url = getenv("PM_TEST_PG_URL");
    if (pg_url != NULL && *pg_url == '\0')
        pg_url = NULL;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/pm_test_db.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    loop = pm_loop_new(err, sizeof err);
    ck_assert_ptr_nonnull(loop);
    nseq = ndone = nwant = 0;
}

static void
teardown(void)
{
    char cmd[128];

    pm_loop_free(loop);
    loop = NULL;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}

/* ---- one statement at a time --------------------------------------- */

static struct pm_db *db;

static void
run1(const char *sql, int nparams, const char *const *params, struct call *c)
{
    memset(c, 0, sizeof *c);
    expect(1);
    pm_db_query(db, sql, nparams, params, record_cb, c);
    ck_assert_msg(run_until(all_done, 10000), "no result for %s", sql);
}

static int64_t
count(const char *sql)
{
    struct call c;

    run1(sql, 0, NULL, &c);
    ck_assert_msg(c.status == PM_OK, "%s: %s", sql, c.err);
    return strtoll(c.val[0][0], NULL, 10);
}

/* ---- cases --------------------------------------------------------- */

START_TEST(migrations_apply_once)
{
    struct pm_db_opts o = {0};
    char err[PM_ERRMSG_SIZE] = "";
    const char *log;
    struct call c;

    if (!backend(_i))
        return;
    db = open_db(NGOOD);
    run1("SELECT version, name FROM pm_migrations ORDER BY version", 0, NULL,
         &c);
    ck_assert_int_eq(c.status, PM_OK);
    ck_assert_int_eq(c.nrows, 2);
    ck_assert_str_eq(c.val[0][0], "1");
    ck_assert_str_eq(c.val[0][1], "items");
    ck_assert_str_eq(c.val[1][1], "log");
    ck_assert_int_eq(count("SELECT count(*) FROM log"), 1);
    pm_db_free(db);

    /* Again: nothing re-applied (migration 2 would add a row to log). */
    db = open_db(NGOOD);
    ck_assert_int_eq(count("SELECT count(*) FROM log"), 1);
    ck_assert_int_eq(count("SELECT count(*) FROM pm_migrations"), 2);
    pm_db_free(db);

    /* A broken migration is reported and leaves the schema as it was. */
    o.url = url;
    o.migrations = migs;
    o.nmigrations = NGOOD + 1;
    o.on_state = state_cb;
    up_state = false;
    nstate_up = 0;
    if (_i == BE_SQLITE) {
        ck_assert_ptr_null(pm_db_open(loop, &o, err, sizeof err));
        ck_assert_msg(strstr(err, "migration 3 (bad)") != NULL, "%s", err);
    } else {
        capture_start();
        db = pm_db_open(loop, &o, err, sizeof err);
        ck_assert_ptr_nonnull(db);
        run_for(1000);
        log = capture_end();
        ck_assert(!pm_db_is_up(db));
        ck_assert_int_eq(nstate_up, 0);
        pm_db_free(db);
        ck_assert_msg(strstr(log, "db_migrate_failed") != NULL &&
                          strstr(log, "migration 3 (bad)") != NULL,
                      "log: %s", log);
    }
    db = open_db(NGOOD);
    ck_assert_int_eq(count("SELECT count(*) FROM pm_migrations"), 2);
    pm_db_free(db);
    backend_done(_i, "migrations_apply_once");
}
END_TEST

START_TEST(round_trip_with_nulls)
{
    const char *ins[] = {"1", "alpha", NULL};
    const char *one[] = {"1"};
    const char *nul[] = {NULL};
    struct call c;

    if (!backend(_i))
        return;
    db = open_db(NGOOD);
    run1("INSERT INTO items (id, name, note) VALUES ($1, $2, $3)", 3, ins, &c);
    ck_assert_msg(c.status == PM_OK, "%s", c.err);
    ck_assert_int_eq(c.changes, 1);
    ck_assert_int_eq(c.nrows, 0);
    run1("SELECT id, name, note FROM items WHERE id = $1", 1, one, &c);
    ck_assert_int_eq(c.status, PM_OK);
    ck_assert_int_eq(c.nrows, 1);
    ck_assert_int_eq(c.ncols, 3);
    ck_assert_int_eq(c.changes, 0); /* a SELECT writes nothing */
    ck_assert_str_eq(c.val[0][0], "1");
    ck_assert_str_eq(c.val[0][1], "alpha");
    ck_assert(!c.null[0][1]);
    ck_assert(c.null[0][2]);
    /* A NULL parameter compares as SQL NULL. */
    run1("SELECT count(*) FROM items WHERE note IS NOT DISTINCT FROM $1", 1,
         nul, &c);
    ck_assert_int_eq(c.status, PM_OK);
    ck_assert_str_eq(c.val[0][0], "1");
    run1("UPDATE items SET note = $1 WHERE id = 42", 1, one, &c);
    ck_assert_int_eq(c.status, PM_OK);
    ck_assert_int_eq(c.changes, 0);
    run1("SELECT no_such_column FROM items", 0, NULL, &c);
    ck_assert_int_eq(c.status, PM_EINVAL);
    ck_assert_str_ne(c.err, "");
    pm_db_free(db);
    backend_done(_i, "round_trip_with_nulls");
}
END_TEST

START_TEST(placeholders_out_of_order)
{
    const char *p[] = {"beta", "2"};
    const char *n[] = {"20", "22"};
    struct call c;

    if (!backend(_i))
        return;
    db = open_db(NGOOD);
    run1("INSERT INTO items (id, name, note) VALUES ($2, $1, $1)", 2, p, &c);
    ck_assert_msg(c.status == PM_OK, "%s", c.err);
    run1("SELECT name, note FROM items WHERE id = $2 AND name = $1 AND "
         "note = $1",
         2, p, &c);
    ck_assert_msg(c.status == PM_OK, "%s", c.err);
    ck_assert_int_eq(c.nrows, 1);
    ck_assert_str_eq(c.val[0][0], "beta");
    ck_assert_str_eq(c.val[0][1], "beta");
    run1("SELECT CAST($2 AS INTEGER) - CAST($1 AS INTEGER), '$1'", 2, n, &c);
    ck_assert_msg(c.status == PM_OK, "%s", c.err);
    ck_assert_str_eq(c.val[0][0], "2");
    ck_assert_str_eq(c.val[0][1], "$1"); /* not a placeholder in quotes */
    pm_db_free(db);
    backend_done(_i, "placeholders_out_of_order");
}
END_TEST

START_TEST(unique_violation_is_conflict)
{
    const char *a[] = {"1", "x"}, *b[] = {"2", "x"}, *d[] = {"1", "y"};
    struct call c;

    if (!backend(_i))
        return;
    db = open_db(NGOOD);
    run1("INSERT INTO items (id, name) VALUES ($1, $2)", 2, a, &c);
    ck_assert_int_eq(c.status, PM_OK);
    run1("INSERT INTO items (id, name) VALUES ($1, $2)", 2, b, &c);
    ck_assert_int_eq(c.status, PM_ECONFLICT);
    ck_assert_str_ne(c.err, "");
    run1("INSERT INTO items (id, name) VALUES ($1, $2)", 2, d, &c);
    ck_assert_int_eq(c.status, PM_ECONFLICT); /* primary key */
    run1("INSERT INTO log (n) VALUES (NULL)", 0, NULL, &c);
    ck_assert_int_eq(c.status, PM_EINVAL); /* NOT NULL: other integrity */
    ck_assert_int_eq(count("SELECT count(*) FROM items"), 1);
    pm_db_free(db);
    backend_done(_i, "unique_violation_is_conflict");
}
END_TEST

START_TEST(txn_all_or_nothing)
{
    const char *a[] = {"10", "ten"}, *b[] = {"11", "eleven"},
               *dup[] = {"12", "ten"}, *ok[] = {"12", "twelve"};
    struct pm_db_stmt bad[] = {
        {"INSERT INTO items (id, name) VALUES ($1, $2)", 2, a},
        {"INSERT INTO items (id, name) VALUES ($1, $2)", 2, b},
        {"INSERT INTO items (id, name) VALUES ($1, $2)", 2, dup}};
    struct pm_db_stmt good[] = {
        {"INSERT INTO items (id, name) VALUES ($1, $2)", 2, ok},
        {"UPDATE log SET n = n + 1", 0, NULL},
        {"SELECT n FROM log", 0, NULL}};
    struct call c;

    if (!backend(_i))
        return;
    db = open_db(NGOOD);
    memset(&c, 0, sizeof c);
    expect(1);
    pm_db_txn(db, bad, 3, record_cb, &c);
    ck_assert(run_until(all_done, 10000));
    ck_assert_int_eq(c.status, PM_ECONFLICT);
    ck_assert_int_eq(count("SELECT count(*) FROM items"), 0);
    /* The session is usable after the failed transaction. */
    memset(&c, 0, sizeof c);
    expect(1);
    pm_db_txn(db, good, 3, record_cb, &c);
    ck_assert(run_until(all_done, 10000));
    ck_assert_msg(c.status == PM_OK, "%s", c.err);
    ck_assert_int_eq(c.nrows, 1); /* the last statement's result */
    ck_assert_str_eq(c.val[0][0], "1");
    ck_assert_int_eq(count("SELECT count(*) FROM items"), 1);
    pm_db_free(db);
    backend_done(_i, "txn_all_or_nothing");
}
END_TEST

#define NBURST 5000

static int burst_next, burst_bad;

static void
burst_cb(void *arg, const struct pm_db_res *res)
{
    int i = (int)(intptr_t)arg;

    if (i != burst_next++ || res->status != PM_OK || res->changes != 1)
        burst_bad++;
    ndone++;
    maybe_stop();
}

START_TEST(burst_completes_in_order_and_persists)
{
    char id[16], name[32];
    const char *p[] = {id, name};
    int i;

    if (!backend(_i))
        return;
    db = open_db(NGOOD);
    burst_next = burst_bad = 0;
    expect(NBURST);
    for (i = 0; i < NBURST; i++) {
        snprintf(id, sizeof id, "%d", 1000 + i);
        snprintf(name, sizeof name, "n%d", i);
        pm_db_query(db, "INSERT INTO items (id, name) VALUES ($1, $2)", 2, p,
                    burst_cb, (void *)(intptr_t)i);
    }
    ck_assert_uint_eq(pm_db_pending(db), NBURST);
    ck_assert_msg(run_until(all_done, 60000), "%d of %d done", burst_next,
                  NBURST);
    ck_assert_int_eq(burst_bad, 0);
    ck_assert_int_eq(burst_next, NBURST);
    ck_assert_uint_eq(pm_db_pending(db), 0);
    pm_db_free(db);
    db = open_db(NGOOD);
    ck_assert_int_eq(count("SELECT count(*) FROM items"), NBURST);
    pm_db_free(db);
    backend_done(_i, "burst_completes_in_order_and_persists");
}
END_TEST

START_TEST(failing_unit_keeps_neighbours)
{
    const char *a[] = {"20", "a"}, *b[] = {"20", "b"}, *d[] = {"21", "d"};
    const char *sql = "INSERT INTO items (id, name) VALUES ($1, $2)";
    struct call c[4];

    if (!backend(_i))
        return;
    db = open_db(NGOOD);
    memset(c, 0, sizeof c);
    expect(4);
    pm_db_query(db, sql, 2, a, record_cb, &c[0]);
    pm_db_query(db, sql, 2, b, record_cb, &c[1]);
    pm_db_query(db, "SELEKT 1", 0, NULL, record_cb, &c[2]);
    pm_db_query(db, sql, 2, d, record_cb, &c[3]);
    ck_assert(run_until(all_done, 10000));
    ck_assert_int_eq(c[0].status, PM_OK);
    ck_assert_int_eq(c[1].status, PM_ECONFLICT);
    ck_assert_int_eq(c[2].status, PM_EINVAL);
    ck_assert_int_eq(c[3].status, PM_OK);
    ck_assert_int_eq(c[0].seq + 1, c[1].seq);
    ck_assert_int_eq(c[2].seq + 1, c[3].seq);
    ck_assert_int_eq(count("SELECT count(*) FROM items"), 2);
    pm_db_free(db);
    backend_done(_i, "failing_unit_keeps_neighbours");
}
END_TEST

START_TEST(flush_after_everything_before)
{
    char id[16];
    const char *p[] = {id};
    struct call ins[100], fl, fl2;
    int i;

    if (!backend(_i))
        return;
    db = open_db(NGOOD);
    memset(ins, 0, sizeof ins);
    memset(&fl, 0, sizeof fl);
    memset(&fl2, 0, sizeof fl2);
    /* Nothing before it: completes on the next pass, not inside. */
    expect(1);
    pm_db_flush(db, record_cb, &fl2);
    ck_assert(!fl2.done);
    ck_assert(run_until(all_done, 10000));
    ck_assert_int_eq(fl2.status, PM_OK);
    expect(101);
    for (i = 0; i < 100; i++) {
        snprintf(id, sizeof id, "%d", 100 + i);
        pm_db_query(db, "INSERT INTO items (id) VALUES ($1)", 1, p, record_cb,
                    &ins[i]);
    }
    pm_db_flush(db, record_cb, &fl);
    ck_assert(run_until(all_done, 10000));
    ck_assert_int_eq(fl.status, PM_OK);
    for (i = 0; i < 100; i++) {
        ck_assert_int_eq(ins[i].status, PM_OK);
        ck_assert_int_lt(ins[i].seq, fl.seq);
    }
    ck_assert_int_eq(fl.seq, ins[99].seq + 1);
    pm_db_free(db);
    backend_done(_i, "flush_after_everything_before");
}
END_TEST

START_TEST(snapshot)
{
    char path[128];
    struct call c;
    sqlite3 *s;
    sqlite3_stmt *st;

    if (!backend(_i))
        return;
    snprintf(path, sizeof path, "%s/snap.db", tmpdir);
    db = open_db(NGOOD);
    run1("INSERT INTO items (id, name) VALUES (1, 'one'), (2, 'two')", 0, NULL,
         &c);
    ck_assert_int_eq(c.status, PM_OK);
    memset(&c, 0, sizeof c);
    expect(1);
    pm_db_snapshot(db, path, record_cb, &c);
    ck_assert(run_until(all_done, 10000));
    pm_db_free(db);
    if (_i == BE_PG) {
        ck_assert_int_eq(c.status, PM_EINVAL);
        ck_assert_str_eq(c.err, "snapshots are for SQLite");
        ck_assert_int_ne(access(path, F_OK), 0);
        backend_done(_i, "snapshot");
        return;
    }
    ck_assert_msg(c.status == PM_OK, "%s", c.err);
    ck_assert_int_eq(sqlite3_open_v2(path, &s, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    ck_assert_int_eq(
        sqlite3_prepare_v2(s, "SELECT count(*) FROM items", -1, &st, NULL),
        SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_int_eq(sqlite3_column_int(st, 0), 2);
    sqlite3_finalize(st);
    sqlite3_close(s);
}
END_TEST

static int dropped;

static void
must_not_run(void *arg, const struct pm_db_res *res)
{
    dropped++;
}

START_TEST(free_keeps_queued_writes)
{
    char id[16];
    const char *p[] = {id};
    int i;

    if (!backend(_i))
        return;
    db = open_db(NGOOD);
    dropped = 0;
    for (i = 0; i < 1000; i++) {
        snprintf(id, sizeof id, "%d", i + 1);
        pm_db_query(db, "INSERT INTO items (id) VALUES ($1)", 1, p,
                    must_not_run, NULL);
    }
    pm_db_free(db); /* without running the loop */
    run_for(50);
    ck_assert_int_eq(dropped, 0);
    db = open_db(NGOOD);
    ck_assert_int_eq(count("SELECT count(*) FROM items"), 1000);
    pm_db_free(db);
    backend_done(_i, "free_keeps_queued_writes");
}
END_TEST

static void
free_db_cb(void *arg, const struct pm_db_res *res)
{
    record_cb(arg, res);
    pm_db_free(db);
    db = NULL;
}

START_TEST(free_inside_callback)
{
    struct call c[3];

    if (!backend(_i))
        return;
    db = open_db(NGOOD);
    memset(c, 0, sizeof c);
    expect(1);
    pm_db_query(db, "INSERT INTO items (id) VALUES (1)", 0, NULL, free_db_cb,
                &c[0]);
    pm_db_query(db, "INSERT INTO items (id) VALUES (2)", 0, NULL, record_cb,
                &c[1]);
    pm_db_flush(db, record_cb, &c[2]);
    ck_assert(run_until(all_done, 10000));
    run_for(100);
    ck_assert(c[0].done);
    ck_assert(!c[1].done && !c[2].done); /* dropped, but the write kept */
    db = open_db(NGOOD);
    ck_assert_int_eq(count("SELECT count(*) FROM items"), 2);
    pm_db_free(db);
    backend_done(_i, "free_inside_callback");
}
END_TEST

/* ---- PostgreSQL link ----------------------------------------------- */

static int
closed_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

START_TEST(pg_bad_url)
{
    struct pm_db_opts o = {0};
    char err[PM_ERRMSG_SIZE];

    o.url = "postgresql://u:s3cr%zzet@127.0.0.1/x";
    ck_assert_ptr_null(pm_db_open(loop, &o, err, sizeof err));
    ck_assert_msg(strstr(err, "s3cr") == NULL, "password leaked: %s", err);
    ck_assert_msg(strstr(err, "password") != NULL, "%s", err);
    o.url = "postgres://127.0.0.1/x?password=hunter2&bogus=1";
    ck_assert_ptr_null(pm_db_open(loop, &o, err, sizeof err));
    ck_assert_msg(strstr(err, "hunter2") == NULL, "password leaked: %s", err);
    ck_assert_msg(strstr(err, "bogus") != NULL, "%s", err);
    ck_assert_ptr_null(strchr(err, '\n'));
}
END_TEST

START_TEST(pg_unreachable_fails_fast)
{
    struct pm_db_opts o = {.on_state = state_cb};
    char err[PM_ERRMSG_SIZE];
    const char *log;
    struct call c, f;

    snprintf(url, sizeof url,
             "postgresql://postgres:pw0rd@127.0.0.1:%d/x?password=pw1rd",
             closed_port());
    o.url = url;
    up_state = false;
    nstate_up = 0;
    capture_start();
    db = pm_db_open(loop, &o, err, sizeof err);
    ck_assert_msg(db != NULL, "%s", err);
    ck_assert(!pm_db_is_up(db));
    memset(&c, 0, sizeof c);
    memset(&f, 0, sizeof f);
    expect(2);
    pm_db_query(db, "SELECT 1", 0, NULL, record_cb, &c);
    pm_db_flush(db, record_cb, &f);
    ck_assert(!c.done); /* never inside the submit */
    ck_assert(run_until(all_done, 2000));
    ck_assert_int_eq(c.status, PM_EUNAVAIL);
    ck_assert_str_eq(c.err, "database unavailable");
    ck_assert_int_eq(f.status, PM_OK);
    ck_assert_int_lt(c.seq, f.seq);
    run_for(500); /* a few reconnect attempts */
    log = capture_end();
    ck_assert_int_eq(nstate_up, 0);
    pm_db_free(db); /* maybe with a migration attempt in flight */
    ck_assert_msg(strstr(log, "db_down") != NULL, "log: %s", log);
    ck_assert_msg(strstr(log, "postgres:***@") != NULL &&
                      strstr(log, "password=***") != NULL,
                  "log: %s", log);
    ck_assert_msg(strstr(log, "pw0rd") == NULL && strstr(log, "pw1rd") == NULL,
                  "password logged: %s", log);
}
END_TEST

START_TEST(pg_state_reports_up)
{
    if (!backend(BE_PG))
        return;
    db = open_db(NGOOD);
    ck_assert_int_eq(nstate_up, 1);
    ck_assert_int_eq(nstate_down, 0);
    pm_db_free(db);
    ck_assert_int_eq(nstate_down, 0); /* no callbacks from pm_db_free */
    backend_done(BE_PG, "pg_state_reports_up");
}
END_TEST

static void
free_on_up(bool up, void *arg)
{
    if (up) {
        pm_db_free(db);
        db = NULL;
    }
    maybe_stop();
}

static bool
db_gone(void)
{
    return db == NULL;
}

START_TEST(pg_free_inside_state_callback)
{
    struct pm_db_opts o = {
        .migrations = migs, .nmigrations = NGOOD, .on_state = free_on_up};
    char err[PM_ERRMSG_SIZE];

    if (!backend(BE_PG))
        return;
    o.url = url;
    db = pm_db_open(loop, &o, err, sizeof err);
    ck_assert_msg(db != NULL, "%s", err);
    ck_assert(run_until(db_gone, 10000));
    backend_done(BE_PG, "pg_free_inside_state_callback");
}
END_TEST

#define NLOAD 200

static int load_ok, load_unavail, load_other;
static char load_err[PM_ERRMSG_SIZE];

static void
load_cb(void *arg, const struct pm_db_res *res)
{
    if (res->status == PM_OK) {
        load_ok++;
    } else if (res->status == PM_EUNAVAIL) {
        load_unavail++;
        pm_strlcpy(load_err, res->err, sizeof load_err);
    } else {
        load_other++;
    }
    ndone++;
    maybe_stop();
}

START_TEST(pg_server_restart)
{
    const char *stop = getenv("PM_TEST_PG_STOP");
    const char *start = getenv("PM_TEST_PG_START");
    char id[16];
    const char *p[] = {id};
    struct call c;
    int i;

    if (stop == NULL || start == NULL || !backend(BE_PG))
        return;
    db = open_db(NGOOD);
    run1("INSERT INTO items (id) VALUES (1)", 0, NULL, &c);
    ck_assert_int_eq(c.status, PM_OK);
    /* In flight when the server dies: a slow unit, writes behind it. */
    load_ok = load_unavail = load_other = 0;
    expect(NLOAD + 1);
    pm_db_query(db, "SELECT pg_sleep(5)", 0, NULL, load_cb, NULL);
    for (i = 0; i < NLOAD; i++) {
        snprintf(id, sizeof id, "%d", 100 + i);
        pm_db_query(db, "INSERT INTO items (id) VALUES ($1)", 1, p, load_cb,
                    NULL);
    }
    ck_assert_int_eq(system(stop), 0);
    /* Every unit completes once, failed, and at once (not after 5 s). */
    ck_assert(run_until(all_done, 3000));
    ck_assert_int_eq(load_unavail, NLOAD + 1);
    ck_assert_int_eq(load_ok + load_other, 0);
    ck_assert_msg(strstr(load_err, "connection lost") != NULL, "%s", load_err);
    ck_assert(run_until(is_down, 10000));
    ck_assert(!pm_db_is_up(db));
    run1("SELECT 1", 0, NULL, &c);
    ck_assert_int_eq(c.status, PM_EUNAVAIL);
    ck_assert_str_eq(c.err, "database unavailable");
    ck_assert_int_eq(system(start), 0);
    ck_assert_msg(run_until(is_up, 20000), "did not reconnect");
    ck_assert_int_eq(nstate_up, 2);
    ck_assert_int_eq(count("SELECT count(*) FROM items"), 1);
    pm_db_free(db);
    backend_done(BE_PG, "pg_server_restart");
}
END_TEST

static Suite *
db_suite(void)
{
    Suite *s = suite_create("db");
    TCase *tc = tcase_create("both");
    TCase *pg = tcase_create("postgres");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, migrations_apply_once, 0, NBACKENDS);
    tcase_add_loop_test(tc, round_trip_with_nulls, 0, NBACKENDS);
    tcase_add_loop_test(tc, placeholders_out_of_order, 0, NBACKENDS);
    tcase_add_loop_test(tc, unique_violation_is_conflict, 0, NBACKENDS);
    tcase_add_loop_test(tc, txn_all_or_nothing, 0, NBACKENDS);
    tcase_add_loop_test(tc, burst_completes_in_order_and_persists, 0,
                        NBACKENDS);
    tcase_add_loop_test(tc, failing_unit_keeps_neighbours, 0, NBACKENDS);
    tcase_add_loop_test(tc, flush_after_everything_before, 0, NBACKENDS);
    tcase_add_loop_test(tc, snapshot, 0, NBACKENDS);
    tcase_add_loop_test(tc, free_keeps_queued_writes, 0, NBACKENDS);
    tcase_add_loop_test(tc, free_inside_callback, 0, NBACKENDS);
    suite_add_tcase(s, tc);
    tcase_add_checked_fixture(pg, setup, teardown);
    tcase_set_timeout(pg, 120);
    tcase_add_test(pg, pg_bad_url);
    tcase_add_test(pg, pg_unreachable_fails_fast);
    tcase_add_test(pg, pg_state_reports_up);
    tcase_add_test(pg, pg_free_inside_state_callback);
    tcase_add_test(pg, pg_server_restart);
    suite_add_tcase(s, pg);
    return s;
}

PM_TEST_MAIN(db_suite)
