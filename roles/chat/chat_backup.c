/*
 * chat_backup: the SQLite database backed up to S3 (chat.s3_sync, the
 * FaltuBaat S3_* variables), done safely:
 *  - at start, when the database file is missing, the object is
 *    restored first (written beside the file and renamed into place);
 *    a missing object means a fresh start, any other failure is retried
 *    every RESTORE_RETRY_MS while /ready says "database", because
 *    starting empty would later overwrite the good backup;
 *  - every chat.s3_interval, and once more after SIGTERM, a consistent
 *    snapshot is taken with the SQLite online backup API (pm_db_snapshot,
 *    queued after every write acknowledged so far) and uploaded with a
 *    SigV4-signed PUT; a failed upload is logged, counted and retried at
 *    the next interval, never fatal.
 * The URL is virtual-hosted (https://BUCKET.s3.REGION.amazonaws.com/KEY)
 * or path-style under chat.s3_endpoint (S3-compatible stores, tests).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "chat.h"
#include "pm_aws.h"
#include "pm_httpc.h"
#include "pm_log.h"
#include "pm_metrics.h"
#include "pm_server.h"
#include "pm_sigv4.h"
#include "pm_util.h"

#define S3_TIMEOUT_MS 120000
#define RESTORE_RETRY_MS 5000

struct chat_backup {
    struct chat *chat;
    struct pm_httpc *http;
    struct pm_aws_creds creds;
    char *url;  /* the object */
    char *path; /* the database file */
    char *snap; /* snapshot file being uploaded */
    struct event *timer;
    bool running;       /* a snapshot or upload in flight */
    bool final_wanted;  /* SIGTERM: one more after what runs now */
    bool final_started; /* the last one is running */
    bool final_done;
    bool closing; /* chat_backup_free: answers are ignored */
    uint64_t *uploads, *failures;
};

static void backup_run(struct chat_backup *b);

/* https://BUCKET.s3.REGION.amazonaws.com/KEY or ENDPOINT/BUCKET/KEY,
 * each key segment percent-encoded. */
static char *
object_url(const struct chat_conf *cc)
{
    char *key = pm_xstrdup(cc->s3_key), *seg, *save = NULL, *url, *enc;
    size_t cap = strlen(cc->s3_key) * 3 + 2;
    char *path = pm_xcalloc(1, cap);

    for (seg = strtok_r(key, "/", &save); seg != NULL;
         seg = strtok_r(NULL, "/", &save)) {
        enc = pm_sigv4_uri_encode(seg);
        strcat(path, "/");
        strcat(path, enc);
        free(enc);
    }
    free(key);
    if (cc->s3_endpoint != NULL && cc->s3_endpoint[0] != '\0') {
        size_t n = strlen(cc->s3_endpoint);

        while (n > 0 && cc->s3_endpoint[n - 1] == '/')
            n--;
        url = pm_xasprintf("%.*s/%s%s", (int)n, cc->s3_endpoint, cc->s3_bucket,
                           path);
    } else {
        url = pm_xasprintf("https://%s.s3.%s.amazonaws.com%s", cc->s3_bucket,
                           cc->region, path);
    }
    free(path);
    return url;
}

static void
send_req(struct chat_backup *b, const char *method, const void *body,
         size_t len, pm_httpc_fn cb)
{
    struct pm_httpc_req req = {0};
    char err[PM_ERRMSG_SIZE];
    struct pm_httpc_res fail = {0};

    req.method = method;
    req.url = b->url;
    req.body = body;
    req.body_len = len;
    req.timeout_ms = S3_TIMEOUT_MS;
    if (pm_aws_send(b->http, &b->creds, b->chat->conf->region, "s3", &req, cb,
                    b, err, sizeof err) != PM_OK) {
        fail.error = err;
        cb(&fail, b);
    }
}

/* ---- restore ------------------------------------------------------- */

static void restore_start(struct chat_backup *b);

static void
arm(struct chat_backup *b, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};

    evtimer_add(b->timer, &tv);
}

/* Restoring (no database yet): try again; else the periodic backup. */
static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct chat_backup *b = arg;

    (void)fd;
    (void)what;
    if (b->chat->db == NULL) {
        restore_start(b);
        return;
    }
    backup_run(b);
    arm(b, b->chat->conf->s3_interval);
}

static int
write_file(const char *path, const uint8_t *data, size_t len, char *err,
           size_t errlen)
{
    char *tmp = pm_xasprintf("%s.restore", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    size_t off = 0;
    int rv = PM_OK;

    if (fd < 0) {
        rv = pm_errf(err, errlen, PM_EIO, "%s: %s", tmp, strerror(errno));
        free(tmp);
        return rv;
    }
    while (off < len) {
        ssize_t n = write(fd, data + off, len - off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rv = pm_errf(err, errlen, PM_EIO, "%s: %s", tmp, strerror(errno));
            break;
        }
        off += (size_t)n;
    }
    if (rv == PM_OK && fsync(fd) != 0)
        rv = pm_errf(err, errlen, PM_EIO, "%s: %s", tmp, strerror(errno));
    close(fd);
    if (rv == PM_OK && rename(tmp, path) != 0)
        rv = pm_errf(err, errlen, PM_EIO, "%s: %s", path, strerror(errno));
    if (rv != PM_OK)
        unlink(tmp);
    free(tmp);
    return rv;
}

static void
restore_retry(struct chat_backup *b)
{
    (*b->failures)++;
    arm(b, RESTORE_RETRY_MS);
}

static void
restored(const struct pm_httpc_res *res, void *arg)
{
    struct chat_backup *b = arg;
    char err[PM_ERRMSG_SIZE];

    if (b->closing)
        return;
    if (res->status == 404 &&
        memmem(res->body, res->body_len, "NoSuchKey", 9) != NULL) {
        pm_log(PM_LOG_INFO, "s3_restore_none",
               "no backup at %s: starting with a new database", b->url);
    } else if (res->status == 200) {
        if (write_file(b->path, res->body, res->body_len, err, sizeof err) !=
            PM_OK) {
            pm_log(PM_LOG_ERROR, "s3_restore_failed", "%s; retrying", err);
            restore_retry(b);
            return;
        }
        pm_log(PM_LOG_INFO, "s3_restored", "%zu bytes from %s to %s",
               res->body_len, b->url, b->path);
    } else {
        pm_log(PM_LOG_ERROR, "s3_restore_failed",
               "GET %s: %d %s; retrying in %d ms (not starting empty)", b->url,
               res->status, res->status ? "" : res->error, RESTORE_RETRY_MS);
        restore_retry(b);
        return;
    }
    if (chat_db_open(b->chat, err, sizeof err) != PM_OK) {
        pm_log(PM_LOG_FATAL, "db_open_failed", "%s", err);
        pm_server_exit(b->chat->srv, 2);
        return;
    }
    chat_backup_schedule(b->chat);
}

static void
restore_start(struct chat_backup *b)
{
    send_req(b, "GET", NULL, 0, restored);
}

/* ---- snapshot and upload -------------------------------------------- */

static void
run_done(struct chat_backup *b)
{
    unlink(b->snap);
    b->running = false;
    if (b->final_started) {
        b->final_done = true;
        return;
    }
    if (b->final_wanted && !b->closing)
        backup_run(b);
}

static void
uploaded(const struct pm_httpc_res *res, void *arg)
{
    struct chat_backup *b = arg;

    if (b->closing)
        return;
    if (res->status == 200) {
        (*b->uploads)++;
        pm_log(PM_LOG_INFO, "s3_backup_uploaded", "snapshot of %s to %s%s",
               b->path, b->url, b->final_started ? " (at shutdown)" : "");
    } else {
        (*b->failures)++;
        pm_log(PM_LOG_ERROR, "s3_backup_failed",
               "PUT %s: %d %.*s%s; next try in chat.s3_interval", b->url,
               res->status,
               res->status ? (int)(res->body_len > 200 ? 200 : res->body_len)
                           : 0,
               res->status ? (const char *)res->body : "",
               res->status ? "" : res->error);
    }
    run_done(b);
}

static void
snapshotted(void *arg, const struct pm_db_res *res)
{
    struct chat_backup *b = arg;
    FILE *f;
    uint8_t *data = NULL;
    long size = -1;

    if (res->status == PM_OK && (f = fopen(b->snap, "rb")) != NULL) {
        if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0 &&
            fseek(f, 0, SEEK_SET) == 0) {
            data = pm_xmalloc((size_t)size + 1);
            if (fread(data, 1, (size_t)size, f) != (size_t)size)
                size = -1;
        }
        fclose(f);
    }
    if (res->status != PM_OK || size < 0) {
        (*b->failures)++;
        pm_log(PM_LOG_ERROR, "s3_backup_failed", "snapshot: %s",
               res->status != PM_OK ? res->err : strerror(errno));
        free(data);
        run_done(b);
        return;
    }
    send_req(b, "PUT", data, (size_t)size, uploaded);
    free(data); /* pm_httpc copied the body */
}

static void
backup_run(struct chat_backup *b)
{
    if (b->running || b->chat->db == NULL)
        return;
    b->running = true;
    if (b->final_wanted)
        b->final_started = true;
    pm_db_snapshot(b->chat->db, b->snap, snapshotted, b);
}

/* ---- the role's calls ------------------------------------------------ */

int
chat_backup_init(struct chat *chat, const char *db_url, bool *restore,
                 char *err, size_t errlen)
{
    const struct chat_conf *cc = chat->conf;
    struct chat_backup *b;
    struct stat st;
    char why[PM_ERRMSG_SIZE];

    *restore = false;
    if (!cc->s3_sync)
        return PM_OK;
    if (strncmp(db_url, "sqlite:", 7) != 0)
        return pm_errf(err, errlen, PM_EINVAL,
                       "chat.s3_sync backs up SQLite; database.url is not "
                       "sqlite:");
    if (cc->s3_bucket == NULL || cc->s3_bucket[0] == '\0')
        return pm_errf(err, errlen, PM_EINVAL,
                       "chat.s3_sync needs chat.s3_bucket (S3_DB_BUCKET)");
    b = pm_xcalloc(1, sizeof *b);
    b->chat = chat;
    chat->backup = b;
    if (pm_aws_creds_from_env(&b->creds, why, sizeof why) != PM_OK)
        return pm_errf(err, errlen, PM_EINVAL, "chat.s3_sync: %s", why);
    b->http = pm_httpc_new(pm_server_base(chat->srv), NULL, err, errlen);
    if (b->http == NULL)
        return PM_EINVAL;
    b->url = object_url(cc);
    b->path = pm_xstrdup(db_url + 7);
    b->snap = pm_xasprintf("%s.s3snap", b->path);
    b->timer = evtimer_new(pm_server_base(chat->srv), tick_cb, b);
    b->uploads = pm_metrics_counter(pm_server_metrics(chat->srv),
                                    "p2pmesh_chat_s3_uploads_total", NULL,
                                    "Database snapshots uploaded to S3");
    b->failures = pm_metrics_counter(pm_server_metrics(chat->srv),
                                     "p2pmesh_chat_s3_failures_total", NULL,
                                     "Failed S3 restores, snapshots, uploads");
    *restore = stat(b->path, &st) != 0 && errno == ENOENT;
    pm_log(PM_LOG_INFO, "s3_sync", "backups of %s to %s every %llus%s", b->path,
           b->url, (unsigned long long)(cc->s3_interval / 1000),
           *restore ? "; restoring first" : "");
    return PM_OK;
}

void
chat_backup_restore(struct chat *chat)
{
    restore_start(chat->backup);
}

void
chat_backup_schedule(struct chat *chat)
{
    if (chat->backup != NULL)
        arm(chat->backup, chat->conf->s3_interval);
}

void
chat_backup_final(struct chat *chat)
{
    struct chat_backup *b = chat->backup;

    if (b == NULL || chat->db == NULL)
        return;
    b->final_wanted = true;
    event_del(b->timer);
    backup_run(b); /* or after the one running now */
}

bool
chat_backup_busy(const struct chat *chat)
{
    const struct chat_backup *b = chat->backup;

    return b != NULL && b->final_wanted && !b->final_done && chat->db != NULL;
}

void
chat_backup_free(struct chat *chat)
{
    struct chat_backup *b = chat->backup;

    if (b == NULL)
        return;
    b->closing = true;
    if (b->timer != NULL)
        event_free(b->timer);
    pm_httpc_free(b->http);
    pm_aws_creds_clear(&b->creds);
    if (b->snap != NULL)
        unlink(b->snap);
    free(b->url);
    free(b->path);
    free(b->snap);
    free(b);
    chat->backup = NULL;
}
