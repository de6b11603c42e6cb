/*
 * pm_config: typed keys merged from defaults, a file, the environment and
 * flags, each later layer overriding the earlier ones, with the source of
 * every value kept for --print-config. Values are held as text per key
 * (owned here) and parsed into the bound structs at the end of a load;
 * string fields in those structs point at text owned by the config, so
 * the config must outlive whoever reads them. Loop thread only.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pm_config.h"
#include "pm_util.h"

struct entry {
    const struct pm_conf_key *key;
    void *target; /* struct the key's offset applies to */
    char *value;  /* current text, NULL = unset */
    enum pm_conf_source source;
};

struct pm_config {
    struct entry *entries;
    size_t n;
    const struct pm_conf_alias *aliases;
    char *warnings;
};

static const char *const action_flags[] = {
    "--help",         "-h",      "--version", "--print-config",
    "--check-config", "--probe", NULL};

static void
add_table(struct pm_config *cfg, const struct pm_conf_table *t)
{
    const struct pm_conf_key *k;

    if (t == NULL || t->keys == NULL)
        return;
    for (k = t->keys; k->name != NULL; k++) {
        struct entry *e;

        cfg->entries =
            pm_xrealloc(cfg->entries, (cfg->n + 1) * sizeof *cfg->entries);
        e = &cfg->entries[cfg->n++];
        e->key = k;
        e->target = t->target;
        e->value = k->def != NULL ? pm_xstrdup(k->def) : NULL;
        e->source = PM_SRC_DEFAULT;
    }
}

struct pm_config *
pm_config_new(const struct pm_conf_table *tables, size_t n,
              const struct pm_conf_alias *aliases)
{
    struct pm_config *cfg = pm_xcalloc(1, sizeof *cfg);
    size_t i;

    for (i = 0; i < n; i++)
        add_table(cfg, &tables[i]);
    cfg->aliases = aliases;
    return cfg;
}

void
pm_config_free(struct pm_config *cfg)
{
    size_t i;

    if (cfg == NULL)
        return;
    for (i = 0; i < cfg->n; i++)
        free(cfg->entries[i].value);
    free(cfg->entries);
    free(cfg->warnings);
    free(cfg);
}

static struct entry *
find(const struct pm_config *cfg, const char *name, size_t len)
{
    size_t i;

    for (i = 0; i < cfg->n; i++) {
        const char *k = cfg->entries[i].key->name;

        if (strlen(k) == len && memcmp(k, name, len) == 0)
            return &cfg->entries[i];
    }
    return NULL;
}

/* Read a secret from a file: whole content, trailing newlines stripped. */
static int
read_secret_file(const char *path, char **out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    char *buf = NULL;
    size_t len = 0, cap = 0, n;

    if (f == NULL)
        return pm_errf(err, errlen, PM_EINVAL, "cannot read %s: %s", path,
                       strerror(errno));
    do {
        if (cap - len < 4096) {
            cap = cap ? cap * 2 : 4096;
            if (cap > (1 << 20)) {
                fclose(f);
                free(buf);
                return pm_errf(err, errlen, PM_EINVAL,
                               "%s: secret file larger than 1 MiB", path);
            }
            buf = pm_xrealloc(buf, cap);
        }
        n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
    } while (n > 0);
    fclose(f);
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    buf[len] = '\0';
    *out = buf;
    return PM_OK;
}

/*
 * Set key name (which may end in "_file" for secrets) to text from a
 * layer. Returns PM_ENOTFOUND for an unknown key.
 */
static int
set_value(struct pm_config *cfg, const char *name, size_t len, const char *text,
          enum pm_conf_source src, char *err, size_t errlen)
{
    struct entry *e = find(cfg, name, len);
    char *value = NULL;

    if (e == NULL && len > 5 && memcmp(name + len - 5, "_file", 5) == 0) {
        e = find(cfg, name, len - 5);
        if (e == NULL || e->key->type != PM_CONF_SECRET)
            return PM_ENOTFOUND;
        if (read_secret_file(text, &value, err, errlen) != PM_OK)
            return PM_EINVAL;
    } else if (e == NULL) {
        return PM_ENOTFOUND;
    } else {
        value = pm_xstrdup(text);
    }
    free(e->value);
    e->value = value;
    e->source = src;
    return PM_OK;
}

/* Set a's key from value v, with a's prefix and unit. */
static int
set_alias(struct pm_config *cfg, const struct pm_conf_alias *a, const char *v,
          enum pm_conf_source src, char *err, size_t errlen)
{
    bool bare = *v != '\0' && strspn(v, "0123456789") == strlen(v);
    char *full = pm_xasprintf("%s%s%s", a->prefix ? a->prefix : "", v,
                              bare && a->unit ? a->unit : "");
    int rv = set_value(cfg, a->key, strlen(a->key), full, src, err, errlen);

    free(full);
    return rv;
}

/*
 * A key of a file line or flag: a known key, or a legacy name of the
 * role's (seed config-file keys such as listen_port). PM_ENOTFOUND when
 * neither.
 */
static int
set_key(struct pm_config *cfg, const char *key, size_t klen, const char *v,
        enum pm_conf_source src, char *err, size_t errlen)
{
    const struct pm_conf_alias *a;
    int rv = set_value(cfg, key, klen, v, src, err, errlen);

    if (rv != PM_ENOTFOUND)
        return rv;
    for (a = cfg->aliases; a != NULL && a->env != NULL; a++)
        if (strlen(a->env) == klen && memcmp(a->env, key, klen) == 0)
            return set_alias(cfg, a, v, src, err, errlen);
    return PM_ENOTFOUND;
}

static char *
trim(char *s)
{
    char *end;

    while (isspace((unsigned char)*s))
        s++;
    end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

static int
load_file(struct pm_config *cfg, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    int lineno = 0;

    if (f == NULL)
        return pm_errf(err, errlen, PM_EINVAL, "cannot open config file %s: %s",
                       path, strerror(errno));
    while (fgets(line, sizeof line, f) != NULL) {
        char *s, *eq, *key, *val;
        size_t vlen;
        int rv;

        lineno++;
        if (strchr(line, '\n') == NULL && !feof(f)) {
            fclose(f);
            return pm_errf(err, errlen, PM_EINVAL, "%s:%d: line too long", path,
                           lineno);
        }
        s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        eq = strchr(s, '=');
        if (eq == NULL) {
            fclose(f);
            return pm_errf(err, errlen, PM_EINVAL,
                           "%s:%d: expected 'key = value'", path, lineno);
        }
        *eq = '\0';
        key = trim(s);
        val = trim(eq + 1);
        vlen = strlen(val);
        if (vlen >= 2 && ((val[0] == '"' && val[vlen - 1] == '"') ||
                          (val[0] == '\'' && val[vlen - 1] == '\''))) {
            val[vlen - 1] = '\0';
            val++;
        } else {
            /* "value  # comment": what --print-config writes reads back */
            char *hash = strstr(val, " #"), *tab = strstr(val, "\t#");

            if (tab != NULL && (hash == NULL || tab < hash))
                hash = tab;
            if (*val == '#') /* "key =  # comment": an empty value */
                hash = val;
            if (hash != NULL) {
                *hash = '\0';
                val = trim(val);
            }
        }
        rv = set_key(cfg, key, strlen(key), val, PM_SRC_FILE, err, errlen);
        if (rv == PM_ENOTFOUND) {
            fclose(f);
            return pm_errf(err, errlen, PM_EINVAL, "%s:%d: unknown key '%s'",
                           path, lineno, key);
        }
        if (rv != PM_OK) {
            fclose(f);
            return rv;
        }
    }
    fclose(f);
    return PM_OK;
}

/* "ws.max_message" -> "P2PMESH_WS_MAX_MESSAGE" */
static void
env_name(const char *key, char *out, size_t outlen)
{
    size_t i = (size_t)snprintf(out, outlen, "P2PMESH_");

    for (; *key != '\0' && i + 1 < outlen; key++)
        out[i++] = *key == '.' ? '_' : (char)toupper((unsigned char)*key);
    out[i] = '\0';
}

static const char *
env_get(char **envp, const char *name)
{
    size_t len = strlen(name);

    for (; envp != NULL && *envp != NULL; envp++)
        if (strncmp(*envp, name, len) == 0 && (*envp)[len] == '=')
            return *envp + len + 1;
    return NULL;
}

/* Apply one environment name (plain, or NAME_FILE for secrets) to e. */
static int
apply_env(struct pm_config *cfg, struct entry *e, char **envp, const char *name,
          char *err, size_t errlen)
{
    const char *v = env_get(envp, name);
    char fname[256];
    const char *key = e->key->name;

    if (v != NULL)
        return set_value(cfg, key, strlen(key), v, PM_SRC_ENV, err, errlen);
    if (e->key->type != PM_CONF_SECRET)
        return PM_OK;
    snprintf(fname, sizeof fname, "%s_FILE", name);
    v = env_get(envp, fname);
    if (v != NULL) {
        char kf[256];

        snprintf(kf, sizeof kf, "%s_file", key);
        return set_value(cfg, kf, strlen(kf), v, PM_SRC_ENV, err, errlen);
    }
    return PM_OK;
}

static bool
env_known(const struct pm_config *cfg, const char *name, size_t len)
{
    char buf[256];
    size_t i;

    if (pm_strcaseeq(name, len, "P2PMESH_ROLE") ||
        pm_strcaseeq(name, len, "P2PMESH_CONFIG"))
        return true;
    for (i = 0; i < cfg->n; i++) {
        env_name(cfg->entries[i].key->name, buf, sizeof buf);
        if (strlen(buf) == len && memcmp(buf, name, len) == 0)
            return true;
        if (cfg->entries[i].key->type == PM_CONF_SECRET &&
            strlen(buf) + 5 == len && memcmp(buf, name, strlen(buf)) == 0 &&
            memcmp(name + strlen(buf), "_FILE", 5) == 0)
            return true;
    }
    return false;
}

static int
load_env(struct pm_config *cfg, char **envp, char *err, size_t errlen)
{
    const struct pm_conf_alias *a;
    char name[256];
    size_t i;
    int rv;

    /* Legacy aliases first, so the P2PMESH_ form wins over them. */
    for (a = cfg->aliases; a != NULL && a->env != NULL; a++) {
        struct entry *e = find(cfg, a->key, strlen(a->key));
        const char *v = env_get(envp, a->env);

        PM_ASSERT(e != NULL);
        if (v != NULL && (a->prefix != NULL || a->unit != NULL)) {
            rv = set_alias(cfg, a, v, PM_SRC_ENV, err, errlen);
        } else {
            rv = apply_env(cfg, e, envp, a->env, err, errlen);
        }
        if (rv != PM_OK)
            return rv;
    }
    for (i = 0; i < cfg->n; i++) {
        env_name(cfg->entries[i].key->name, name, sizeof name);
        rv = apply_env(cfg, &cfg->entries[i], envp, name, err, errlen);
        if (rv != PM_OK)
            return rv;
    }
    for (; envp != NULL && *envp != NULL; envp++) {
        const char *eq = strchr(*envp, '=');
        size_t len = eq ? (size_t)(eq - *envp) : strlen(*envp);

        if (strncmp(*envp, "P2PMESH_", 8) != 0 || env_known(cfg, *envp, len))
            continue;
        {
            char *w = pm_xasprintf("%s%sunknown environment variable %.*s "
                                   "ignored",
                                   cfg->warnings ? cfg->warnings : "",
                                   cfg->warnings ? "; " : "", (int)len, *envp);
            free(cfg->warnings);
            cfg->warnings = w;
        }
    }
    return PM_OK;
}

static bool
is_action_flag(const char *arg)
{
    int i;

    if (strncmp(arg, "--role=", 7) == 0 || strncmp(arg, "--config=", 9) == 0 ||
        strncmp(arg, "--probe=", 8) == 0)
        return true;
    for (i = 0; action_flags[i] != NULL; i++)
        if (strcmp(arg, action_flags[i]) == 0)
            return true;
    return false;
}

static int
load_flags(struct pm_config *cfg, int argc, char **argv, char *err,
           size_t errlen)
{
    int i, rv;

    for (i = 1; i < argc; i++) {
        const char *arg = argv[i], *eq, *val;
        size_t klen;

        if (is_action_flag(arg))
            continue;
        if (strncmp(arg, "--", 2) != 0)
            return pm_errf(err, errlen, PM_EINVAL,
                           "unexpected argument '%s' (options are --key=value)",
                           arg);
        arg += 2;
        eq = strchr(arg, '=');
        klen = eq ? (size_t)(eq - arg) : strlen(arg);
        val = eq ? eq + 1 : NULL;
        if (val == NULL) {
            struct entry *e = find(cfg, arg, klen);

            if (e == NULL || e->key->type != PM_CONF_BOOL)
                return pm_errf(err, errlen, PM_EINVAL,
                               e ? "option --%s needs a value (--%s=VALUE)"
                                 : "unknown option --%s",
                               arg, arg);
            val = "true";
        }
        rv = set_key(cfg, arg, klen, val, PM_SRC_FLAG, err, errlen);
        if (rv == PM_ENOTFOUND)
            return pm_errf(err, errlen, PM_EINVAL, "unknown option --%.*s",
                           (int)klen, arg);
        if (rv != PM_OK)
            return rv;
    }
    return PM_OK;
}

/* A number followed by one of the suffixes (case-insensitive). */
struct unit {
    const char *suffix;
    uint64_t mult;
};

static int
parse_scaled(const char *s, const struct unit *units, uint64_t limit,
             uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (s == NULL || !isdigit((unsigned char)*s))
        return PM_EINVAL;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0)
        return PM_EINVAL;
    for (; units->suffix != NULL; units++) {
        if (strcasecmp(end, units->suffix) != 0)
            continue;
        if (v > limit / units->mult)
            return PM_EINVAL;
        *out = v * units->mult;
        return PM_OK;
    }
    return PM_EINVAL;
}

int
pm_parse_duration(const char *s, uint64_t *ms)
{
    static const struct unit units[] = {
        {"ms", 1},      {"", 1000},      {"s", 1000}, {"m", 60000},
        {"h", 3600000}, {"d", 86400000}, {NULL, 0}};

    /* Leave room for conversions to nanoseconds. */
    return parse_scaled(s, units, UINT64_MAX / 1000000, ms);
}

int
pm_parse_size(const char *s, uint64_t *bytes)
{
    static const struct unit units[] = {
        {"", 1},         {"k", 1 << 10}, {"kb", 1 << 10}, {"m", 1 << 20},
        {"mb", 1 << 20}, {"g", 1 << 30}, {"gb", 1 << 30}, {NULL, 0}};

    return parse_scaled(s, units, UINT64_MAX, bytes);
}

int
pm_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1", NULL};
    static const char *const no[] = {"false", "no", "off", "0", NULL};
    int i;

    for (i = 0; yes[i] != NULL; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return PM_OK;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return PM_OK;
        }
    }
    return PM_EINVAL;
}

int
pm_parse_rate(const char *s, struct pm_rate *out)
{
    const char *slash = strchr(s, '/');
    char *end;
    unsigned long v;
    uint64_t per = 0;

    if (slash == NULL || !isdigit((unsigned char)*s) || slash[1] == '\0')
        return PM_EINVAL;
    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno != 0 || end != slash || v > UINT32_MAX)
        return PM_EINVAL;
    /* "100/s" means per one second; "100/10s" per ten. */
    if (isdigit((unsigned char)slash[1])) {
        if (pm_parse_duration(slash + 1, &per) != PM_OK)
            return PM_EINVAL;
    } else if (strcmp(slash + 1, "ms") == 0) {
        per = 1;
    } else if (strcmp(slash + 1, "s") == 0) {
        per = 1000;
    } else if (strcmp(slash + 1, "m") == 0) {
        per = 60000;
    } else if (strcmp(slash + 1, "h") == 0) {
        per = 3600000;
    }
    if (per == 0)
        return PM_EINVAL;
    out->count = (uint32_t)v;
    out->per_ms = per;
    return PM_OK;
}

static int
parse_int(const char *s, int64_t *out)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return PM_EINVAL;
    *out = v;
    return PM_OK;
}

static int
parse_entry(const struct entry *e, char *err, size_t errlen)
{
    const struct pm_conf_key *k = e->key;
    void *field = (char *)e->target + k->offset;
    const char *v = e->value;
    int64_t iv;
    uint64_t uv;
    bool bounded = k->min != 0 || k->max != 0;

    switch (k->type) {
    case PM_CONF_STRING:
    case PM_CONF_SECRET:
        *(char **)field = (v != NULL && *v != '\0') ? e->value : NULL;
        return PM_OK;
    case PM_CONF_ENUM: {
        const char *const *ev;

        /* An optional enum (no default) may be left or set empty. */
        if (v == NULL || (*v == '\0' && k->def == NULL)) {
            *(char **)field = NULL;
            return PM_OK;
        }
        for (ev = k->enum_values; v != NULL && *ev != NULL; ev++) {
            if (strcmp(*ev, v) == 0) {
                *(char **)field = e->value;
                return PM_OK;
            }
        }
        return pm_errf(err, errlen, PM_EINVAL,
                       "bad value for %s: '%s' (expected one of the values "
                       "listed in --help)",
                       k->name, v ? v : "");
    }
    default:
        break;
    }
    if (v == NULL)
        return pm_errf(err, errlen, PM_EINVAL, "missing value for %s", k->name);
    switch (k->type) {
    case PM_CONF_BOOL:
        if (pm_parse_bool(v, (bool *)field) != PM_OK)
            return pm_errf(err, errlen, PM_EINVAL,
                           "bad value for %s: '%s' (expected true or false)",
                           k->name, v);
        return PM_OK;
    case PM_CONF_INT:
        if (parse_int(v, &iv) != PM_OK)
            return pm_errf(err, errlen, PM_EINVAL,
                           "bad value for %s: '%s' (expected an integer)",
                           k->name, v);
        if (bounded && (iv < k->min || iv > k->max))
            return pm_errf(err, errlen, PM_EINVAL,
                           "bad value for %s: %lld (allowed %lld to %lld)",
                           k->name, (long long)iv, (long long)k->min,
                           (long long)k->max);
        *(int64_t *)field = iv;
        return PM_OK;
    case PM_CONF_DURATION:
    case PM_CONF_SIZE:
        if ((k->type == PM_CONF_DURATION ? pm_parse_duration(v, &uv)
                                         : pm_parse_size(v, &uv)) != PM_OK)
            return pm_errf(err, errlen, PM_EINVAL,
                           "bad value for %s: '%s' (expected %s)", k->name, v,
                           k->type == PM_CONF_DURATION
                               ? "a duration like 250ms, 30s, 5m, 1h, 7d"
                               : "a size like 512, 64k, 1m");
        if (bounded && ((int64_t)uv < k->min || (int64_t)uv > k->max))
            return pm_errf(err, errlen, PM_EINVAL,
                           "bad value for %s: '%s' is out of range", k->name,
                           v);
        *(uint64_t *)field = uv;
        return PM_OK;
    case PM_CONF_RATE:
        if (pm_parse_rate(v, (struct pm_rate *)field) != PM_OK)
            return pm_errf(err, errlen, PM_EINVAL,
                           "bad value for %s: '%s' (expected COUNT/DURATION "
                           "like 100/10s)",
                           k->name, v);
        return PM_OK;
    default:
        return pm_errf(err, errlen, PM_EINVAL, "key %s has no type", k->name);
    }
}

int
pm_config_load(struct pm_config *cfg, int argc, char **argv, char **envp,
               char *err, size_t errlen)
{
    const char *file = env_get(envp, "P2PMESH_CONFIG");
    size_t i;
    int rv;

    for (i = 1; i < (size_t)argc; i++)
        if (strncmp(argv[i], "--config=", 9) == 0)
            file = argv[i] + 9;
    if (file != NULL && *file != '\0' &&
        (rv = load_file(cfg, file, err, errlen)) != PM_OK)
        return rv;
    if ((rv = load_env(cfg, envp, err, errlen)) != PM_OK)
        return rv;
    if ((rv = load_flags(cfg, argc, argv, err, errlen)) != PM_OK)
        return rv;
    for (i = 0; i < cfg->n; i++)
        if ((rv = parse_entry(&cfg->entries[i], err, errlen)) != PM_OK)
            return rv;
    return PM_OK;
}

static const char *
source_name(enum pm_conf_source s)
{
    static const char *const names[] = {"default", "file", "env", "flag"};

    return names[s];
}

void
pm_config_print(const struct pm_config *cfg, FILE *out)
{
    size_t i;

    for (i = 0; i < cfg->n; i++) {
        const struct entry *e = &cfg->entries[i];
        const char *v = e->value ? e->value : "";

        if (e->key->type == PM_CONF_SECRET && *v != '\0')
            v = "<redacted>";
        fprintf(out, "%s = %s  # %s\n", e->key->name, v,
                source_name(e->source));
    }
}

enum pm_conf_source
pm_config_source(const struct pm_config *cfg, const char *key)
{
    const struct entry *e = find(cfg, key, strlen(key));

    return e ? e->source : PM_SRC_DEFAULT;
}

const char *
pm_config_warnings(const struct pm_config *cfg)
{
    return cfg->warnings;
}
