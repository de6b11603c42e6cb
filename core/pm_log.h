/*
 * pm_log: one line per event on stdout, JSON (for CloudWatch) or text.
 * Every line carries ts, level, role, event (stable snake_case id), msg and
 * pid; callers add context fields. libevent's own log messages are bridged
 * in. The level is checked before anything is formatted.
 */
#ifndef PM_LOG_H
#define PM_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum pm_log_level {
    PM_LOG_DEBUG = 0,
    PM_LOG_INFO,
    PM_LOG_WARN,
    PM_LOG_ERROR,
    PM_LOG_FATAL
};

/* Set the role name (borrowed; must outlive the logger), level and format. */
void pm_log_setup(const char *role, enum pm_log_level level, bool json);
void pm_log_set_level(enum pm_log_level level);
/* Parse "debug|info|warn|error"; returns PM_OK or PM_EINVAL. */
int pm_log_level_parse(const char *s, enum pm_log_level *out);
bool pm_log_enabled(enum pm_log_level level);

/* Log msg (printf format) under a stable event id. */
void pm_log(enum pm_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Log with context fields: after msg come key/value string pairs ending
 * with NULL, e.g. pm_log_kv(PM_LOG_INFO, "peer_joined", "joined",
 * "peer", id, "ip", ip, NULL). NULL values are skipped.
 */
void pm_log_kv(enum pm_log_level level, const char *event, const char *msg, ...)
    __attribute__((sentinel));

/* RFC 3339 UTC timestamp with milliseconds ("2026-11-22T11:21:34.123Z"). */
void pm_log_format_ts(char *out, size_t len);
/* Write one preformatted line (no newline) to stdout in a single write. */
void pm_log_write_line(const char *line);

/* Route libevent's internal warnings into this logger. */
void pm_log_bridge_libevent(void);

#endif
