/*
 * pm_log: structured log lines on stdout. JSON lines are built with cJSON
 * (which does the escaping) and written with one write(2) each, so lines
 * from concurrent writers never interleave. Loop thread and workers may
 * both log; the only shared state is set once at startup (role, format)
 * or is a single int (level).
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "pm_log.h"
#include "pm_util.h"

static const char *log_role = "p2pmesh";
static volatile int log_level = PM_LOG_INFO;
static bool log_json = true;

static const char *const level_names[] = {"debug", "info", "warn", "error",
                                          "fatal"};

void
pm_log_setup(const char *role, enum pm_log_level level, bool json)
{
    log_role = role;
    log_level = level;
    log_json = json;
}

void
pm_log_set_level(enum pm_log_level level)
{
    log_level = level;
}

int
pm_log_level_parse(const char *s, enum pm_log_level *out)
{
    int i;

    for (i = PM_LOG_DEBUG; i <= PM_LOG_ERROR; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum pm_log_level)i;
            return PM_OK;
        }
    }
    return PM_EINVAL;
}

bool
pm_log_enabled(enum pm_log_level level)
{
    return (int)level >= log_level;
}

void
pm_log_format_ts(char *out, size_t len)
{
    struct timespec ts;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)(ts.tv_nsec / 1000000) % 1000);
}

static void
write_line(const char *line, size_t len)
{
    /* One write per line; retry on short writes so lines stay whole. */
    while (len > 0) {
        ssize_t n = write(STDOUT_FILENO, line, len);

        if (n <= 0)
            return;
        line += n;
        len -= (size_t)n;
    }
}

void
pm_log_write_line(const char *line)
{
    size_t n = strlen(line);
    char *s = pm_xmalloc(n + 1);

    memcpy(s, line, n);
    s[n] = '\n';
    write_line(s, n + 1);
    free(s);
}

static void
emit(enum pm_log_level level, const char *event, const char *msg, va_list kv)
{
    char ts[48];
    const char *k, *v;

    pm_log_format_ts(ts, sizeof ts);
    if (log_json) {
        cJSON *o = cJSON_CreateObject();
        char *s;

        cJSON_AddStringToObject(o, "ts", ts);
        cJSON_AddStringToObject(o, "level", level_names[level]);
        cJSON_AddStringToObject(o, "role", log_role);
        cJSON_AddStringToObject(o, "event", event);
        cJSON_AddStringToObject(o, "msg", msg);
        cJSON_AddNumberToObject(o, "pid", (double)getpid());
        while ((k = va_arg(kv, const char *)) != NULL) {
            v = va_arg(kv, const char *);
            if (v != NULL)
                cJSON_AddStringToObject(o, k, v);
        }
        s = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (s != NULL) {
            pm_log_write_line(s);
            free(s);
        }
    } else {
        char *line =
            pm_xasprintf("%s %-5s %s: %s", ts, level_names[level], event, msg);

        while ((k = va_arg(kv, const char *)) != NULL) {
            char *next;

            v = va_arg(kv, const char *);
            if (v == NULL)
                continue;
            next = pm_xasprintf("%s %s=%s", line, k, v);
            free(line);
            line = next;
        }
        pm_log_write_line(line);
        free(line);
    }
}

static void
emit_kv(enum pm_log_level level, const char *event, const char *msg, ...)
{
    va_list ap;

    va_start(ap, msg);
    emit(level, event, msg, ap);
    va_end(ap);
}

void
pm_log(enum pm_log_level level, const char *event, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    if (!pm_log_enabled(level))
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    emit_kv(level, event, msg, NULL);
}

void
pm_log_kv(enum pm_log_level level, const char *event, const char *msg, ...)
{
    va_list ap;

    if (!pm_log_enabled(level))
        return;
    va_start(ap, msg);
    emit(level, event, msg, ap);
    va_end(ap);
}

static void
libevent_log_cb(int severity, const char *msg)
{
    enum pm_log_level level = severity == EVENT_LOG_DEBUG  ? PM_LOG_DEBUG
                              : severity == EVENT_LOG_MSG  ? PM_LOG_INFO
                              : severity == EVENT_LOG_WARN ? PM_LOG_WARN
                                                           : PM_LOG_ERROR;

    pm_log_kv(level, "libevent", msg, "lib", "libevent", NULL);
}

void
pm_log_bridge_libevent(void)
{
    event_set_log_callback(libevent_log_cb);
}
