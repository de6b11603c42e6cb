/*
 * pm_config: typed configuration keys in tables (nginx ngx_command_t style,
 * offsetof into a struct), merged from four layers with provenance:
 * built-in defaults < config file < environment < flags.
 *
 * Keys are dotted lowercase (ws.max_message); the environment form is
 * P2PMESH_WS_MAX_MESSAGE, the flag form --ws.max_message=65536. Keys of
 * type secret also accept KEY_FILE (env), key_file (file, flag) naming a
 * file to read the value from, and are never printed. Roles add their own
 * table under "<role>." and may map legacy environment names onto keys.
 */
#ifndef PM_CONFIG_H
#define PM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum pm_conf_type {
    PM_CONF_BOOL,     /* bool: true/false/yes/no/on/off/1/0 */
    PM_CONF_INT,      /* int64_t within [min, max] */
    PM_CONF_DURATION, /* uint64_t milliseconds: 250ms 30s 5m 1h, bare = s */
    PM_CONF_SIZE,     /* uint64_t bytes: 64k 1m 1g, bare = bytes */
    PM_CONF_STRING,   /* char * (owned by the config) */
    PM_CONF_SECRET,   /* char *, never printed or logged */
    PM_CONF_ENUM,     /* char *, one of enum_values */
    PM_CONF_RATE      /* struct pm_rate: "COUNT/DURATION", e.g. 100/10s */
};

/* A token-bucket rate: count events per per_ms milliseconds. */
struct pm_rate {
    uint32_t count;
    uint64_t per_ms;
};

enum pm_conf_source {
    PM_SRC_DEFAULT = 0,
    PM_SRC_FILE,
    PM_SRC_ENV,
    PM_SRC_FLAG
};

struct pm_conf_key {
    const char *name; /* dotted key */
    enum pm_conf_type type;
    size_t offset;   /* offsetof into the owning struct */
    const char *def; /* default as text; NULL = unset (strings: NULL) */
    int64_t min;     /* INT/DURATION/SIZE bounds; 0,0 = unbounded */
    int64_t max;
    const char *const *enum_values; /* NULL-terminated, for ENUM */
    const char *help;               /* one line for --help and docs */
};

/*
 * A legacy name that sets a key: an environment name (SIGNALING_PORT
 * sets port), also accepted as a config-file key or --flag (the seed
 * config files' listen_port, the seed CLI's --server-ip). prefix (may be NULL)
 * is put before the value (DB_PATH=x sets database.url=sqlite:x); unit (may be
 * NULL) is appended to a bare number (STREAM_COOLDOWN_MS=10000 is "10000ms").
 */
struct pm_conf_alias {
    const char *env;
    const char *key;
    const char *prefix;
    const char *unit;
};

/* One table of keys bound to one struct the values are written into. */
struct pm_conf_table {
    const struct pm_conf_key *keys; /* terminated by a zero entry */
    void *target;                   /* struct filled by pm_config_apply */
};

struct pm_config;

/*
 * Create a config over n tables (core first, then the role's; a table
 * may have NULL keys) and the role's env aliases (may be NULL). Tables
 * and aliases are borrowed and must outlive the config.
 */
struct pm_config *pm_config_new(const struct pm_conf_table *tables, size_t n,
                                const struct pm_conf_alias *aliases);
void pm_config_free(struct pm_config *cfg);

/*
 * Layer the sources: the file named by --config=FILE (or P2PMESH_CONFIG),
 * then envp, then flags from argv (--key=value; --role, --config and the
 * action flags are skipped). Then parse every value into the tables'
 * targets. On failure returns PM_EINVAL and a one-line reason in err.
 */
int pm_config_load(struct pm_config *cfg, int argc, char **argv, char **envp,
                   char *err, size_t errlen);

/* Print every key as "key = value  # source" (secrets redacted). */
void pm_config_print(const struct pm_config *cfg, FILE *out);
/* Where a key's value came from; PM_SRC_DEFAULT for unknown keys. */
enum pm_conf_source pm_config_source(const struct pm_config *cfg,
                                     const char *key);
/* Warnings gathered while loading (unknown P2PMESH_* env names), or NULL. */
const char *pm_config_warnings(const struct pm_config *cfg);

/* Value parsers, exposed for reuse and tests. */
int pm_parse_duration(const char *s, uint64_t *ms);
int pm_parse_size(const char *s, uint64_t *bytes);
int pm_parse_bool(const char *s, bool *out);
int pm_parse_rate(const char *s, struct pm_rate *out);

#endif
