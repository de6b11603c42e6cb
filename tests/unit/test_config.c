/*
 * Unit tests for pm_config (core/pm_config.h): the value parsers
 * (durations, sizes, booleans, rates) and the layering of a small test
 * table of every key type plus a role table: defaults < config file <
 * environment < flags, provenance per key, errors that name the offending
 * key or line, secrets read from KEY_FILE and redacted when printed,
 * legacy environment aliases, warnings for unknown P2PMESH_* names, and
 * the non-key flags that pm_config_load must skip. Config files are
 * written to mkstemp files under P_tmpdir and removed in teardown.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "pm_test.h"
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pm_config.h"
#include "pm_util.h"

/* ---- value parsers ---------------------------------------------------- */

struct u64_case {
    const char *s;
    uint64_t want;
};

static const struct u64_case dur_ok[] = {
    {"250ms", 250},   {"30s", 30000},    {"5m", 300000}, {"1h", 3600000},
    {"7", 7000},      {"0", 0},          {"0s", 0},      {"1000ms", 1000},
    {"90m", 5400000}, {"24h", 86400000}, {"0ms", 0},
};

static const char *const dur_bad[] = {
    "",
    "abc",
    "5x",
    "ms",
    "s",
    "-1s",
    "-1",
    "5ss",
    "5msx",
    "99999999999999999999",   /* beyond uint64 */
    "18446744073709551615",   /* bare seconds: *1000 overflows */
    "18446744073709551616ms", /* 2^64 */
    "307445734561825861m",    /* *60000 overflows */
    "5124095576030432h",      /* *3600000 overflows */
};

START_TEST(parse_duration_ok)
{
    uint64_t ms = 12345;

    ck_assert_msg(pm_parse_duration(dur_ok[_i].s, &ms) == PM_OK,
                  "\"%s\" rejected", dur_ok[_i].s);
    ck_assert_uint_eq(ms, dur_ok[_i].want);
}
END_TEST

START_TEST(parse_duration_bad)
{
    uint64_t ms = 0;

    ck_assert_msg(pm_parse_duration(dur_bad[_i], &ms) < 0,
                  "\"%s\" accepted as %llu", dur_bad[_i],
                  (unsigned long long)ms);
}
END_TEST

static const struct u64_case size_ok[] = {
    {"64k", 65536}, {"1m", 1048576}, {"1g", 1073741824}, {"512", 512},
    {"0", 0},       {"1k", 1024},    {"3m", 3145728},
};

static const char *const size_bad[] = {
    "",
    "k",
    "12q",
    "-1",
    "-1k",
    "1kk",
    "abc",
    "99999999999999999999", /* beyond uint64 */
    "17179869184g",         /* 2^34 GiB = 2^64 */
    "18014398509481984k",   /* 2^54 KiB = 2^64 */
};

START_TEST(parse_size_ok)
{
    uint64_t b = 12345;

    ck_assert_msg(pm_parse_size(size_ok[_i].s, &b) == PM_OK, "\"%s\" rejected",
                  size_ok[_i].s);
    ck_assert_uint_eq(b, size_ok[_i].want);
}
END_TEST

START_TEST(parse_size_bad)
{
    uint64_t b = 0;

    ck_assert_msg(pm_parse_size(size_bad[_i], &b) < 0, "\"%s\" accepted",
                  size_bad[_i]);
}
END_TEST

START_TEST(parse_bool_values)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    static const char *const bad[] = {"",    "maybe", "2",    "truee",
                                      "tru", "yess",  "10",   "of",
                                      "onn", "-1",    "t rue"};
    bool v;

    for (size_t i = 0; i < 4; i++) {
        v = false;
        ck_assert_msg(pm_parse_bool(yes[i], &v) == PM_OK, "%s", yes[i]);
        ck_assert_msg(v, "%s", yes[i]);
        v = true;
        ck_assert_msg(pm_parse_bool(no[i], &v) == PM_OK, "%s", no[i]);
        ck_assert_msg(!v, "%s", no[i]);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(pm_parse_bool(bad[i], &v) < 0, "\"%s\" accepted", bad[i]);
}
END_TEST

START_TEST(parse_rate_values)
{
    static const struct {
        const char *s;
        uint32_t count;
        uint64_t per_ms;
    } ok[] = {
        {"100/10s", 100, 10000},
        {"50/1s", 50, 1000},
        {"0/1s", 0, 1000},
        {"5/250ms", 5, 250},
        {"10/1m", 10, 60000},
        {"100/10", 100, 10000},
        {"4294967295/1h", 4294967295u, 3600000},
    };
    static const char *const bad[] = {
        "",      "100",       "/10s", "100/",  "abc/1s",        "100/xs",
        "-1/1s", "100/10s/1", " /1s", "1/-1s", "4294967296/1s", "100//10s",
    };
    struct pm_rate r;

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        memset(&r, 0xAA, sizeof(r));
        ck_assert_msg(pm_parse_rate(ok[i].s, &r) == PM_OK, "\"%s\" rejected",
                      ok[i].s);
        ck_assert_uint_eq(r.count, ok[i].count);
        ck_assert_uint_eq(r.per_ms, ok[i].per_ms);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(pm_parse_rate(bad[i], &r) < 0, "\"%s\" accepted", bad[i]);
}
END_TEST

/* The duration after the slash is checked whole, however long it is. */
START_TEST(parse_rate_long_duration)
{
    char s[128];
    struct pm_rate r;

    /* "1/" + 29 zeros + "1s" + "junk": valid only if cut after "1s" */
    snprintf(s, sizeof(s), "1/%029d1sjunk", 0);
    ck_assert_msg(pm_parse_rate(s, &r) < 0, "\"%s\" accepted", s);
    snprintf(s, sizeof(s), "1/%029d1s", 0);
    ck_assert_int_eq(pm_parse_rate(s, &r), PM_OK);
    ck_assert_uint_eq(r.per_ms, 1000);
}
END_TEST

/* ---- layering fixture ------------------------------------------------- */

struct tconf {
    int64_t num;
    uint64_t dur;
    char *str;
    char *secret;
    bool flag;
    char *mode;
    struct pm_rate rate;
    uint64_t max_size;
};

struct rconf {
    int64_t port;
};

static const char *const modes[] = {"fast", "safe", NULL};

static const struct pm_conf_key tkeys[] = {
    {"t.num", PM_CONF_INT, offsetof(struct tconf, num), "3", 1, 100, NULL,
     "a number"},
    {"t.dur", PM_CONF_DURATION, offsetof(struct tconf, dur), "30s", 0, 0, NULL,
     "a duration"},
    {"t.str", PM_CONF_STRING, offsetof(struct tconf, str), "hello", 0, 0, NULL,
     "a string"},
    {"t.secret", PM_CONF_SECRET, offsetof(struct tconf, secret), NULL, 0, 0,
     NULL, "a secret"},
    {"t.flag", PM_CONF_BOOL, offsetof(struct tconf, flag), "false", 0, 0, NULL,
     "a switch"},
    {"t.mode", PM_CONF_ENUM, offsetof(struct tconf, mode), "fast", 0, 0, modes,
     "fast or safe"},
    {"t.rate", PM_CONF_RATE, offsetof(struct tconf, rate), "100/10s", 0, 0,
     NULL, "a rate"},
    {"t.max_size", PM_CONF_SIZE, offsetof(struct tconf, max_size), "64k", 0, 0,
     NULL, "a size"},
    {0},
};

static const struct pm_conf_key rkeys[] = {
    {"r.port", PM_CONF_INT, offsetof(struct rconf, port), "8080", 1, 65535,
     NULL, "a role port"},
    {0},
};

static const struct pm_conf_alias aliases[] = {
    {"LEGACY_NUM", "t.num", NULL, NULL},
    {NULL, NULL, NULL, NULL},
};

static struct tconf T;
static struct rconf R;
static struct pm_conf_table tabs[] = {{tkeys, &T}, {rkeys, &R}};
static struct pm_config *cfg;
static char err[PM_ERRMSG_SIZE];
static char *tmpfiles[8];
static size_t ntmp;

static void
setup(void)
{
    memset(&T, 0, sizeof(T));
    memset(&R, 0, sizeof(R));
    memset(err, 0, sizeof(err));
    cfg = pm_config_new(tabs, 2, aliases);
    ck_assert_ptr_nonnull(cfg);
}

static void
teardown(void)
{
    pm_config_free(cfg);
    cfg = NULL;
    for (size_t i = 0; i < ntmp; i++) {
        unlink(tmpfiles[i]);
        free(tmpfiles[i]);
    }
    ntmp = 0;
}

/* A fresh config over zeroed targets; temporary files are kept. */
static void
reset(void)
{
    pm_config_free(cfg);
    memset(&T, 0, sizeof(T));
    memset(&R, 0, sizeof(R));
    memset(err, 0, sizeof(err));
    cfg = pm_config_new(tabs, 2, aliases);
    ck_assert_ptr_nonnull(cfg);
}

/* Write content to a fresh temporary file; removed in teardown. */
static const char *
temp_file(const char *content)
{
    char *path;
    int fd;
    size_t len = strlen(content);

    ck_assert_uint_lt(ntmp, sizeof(tmpfiles) / sizeof(tmpfiles[0]));
    ck_assert_int_gt(asprintf(&path, "%s/pmconfXXXXXX", P_tmpdir), 0);
    fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, content, len), (ssize_t)len);
    close(fd);
    tmpfiles[ntmp++] = path;
    return path;
}

/* "PREFIX<path>" in a string that lives until the test ends. */
static char *
cat(const char *prefix, const char *path)
{
    static char bufs[8][512];
    static size_t next;
    char *b = bufs[next++ % 8];

    snprintf(b, sizeof(bufs[0]), "%s%s", prefix, path);
    return b;
}

/* Load with NULL-terminated argv (argv[0] included) and envp. */
static int
load(const char *const *argv, const char *const *envp)
{
    int argc = 0;

    while (argv[argc])
        argc++;
    return pm_config_load(cfg, argc, (char **)argv, (char **)envp, err,
                          sizeof(err));
}

#define ARGV(...) ((const char *const[]){"p2pmesh", __VA_ARGS__, NULL})
#define NOARGS ((const char *const[]){"p2pmesh", NULL})
#define ENVP(...) ((const char *const[]){__VA_ARGS__, NULL})
#define NOENV ((const char *const[]){NULL})

/* PM_EINVAL with a one-line reason that mentions one of the words. */
static void
expect_einval(int rc, const char *word, const char *alt)
{
    ck_assert_msg(rc == PM_EINVAL, "rc %d, want PM_EINVAL", rc);
    ck_assert_msg(err[0] != '\0', "empty error text");
    ck_assert_msg(strchr(err, '\n') == NULL, "error text not one line: %s",
                  err);
    ck_assert_msg(strstr(err, word) || (alt && strstr(err, alt)),
                  "error \"%s\" does not name %s", err, word);
}

/*
 * True if err mentions the number n as a whole number once the file path
 * (whose mkstemp suffix may hold digits) is removed.
 */
static bool
mentions_number(const char *text, const char *path, long n)
{
    char buf[PM_ERRMSG_SIZE * 2];
    const char *p;
    size_t plen = strlen(path), o = 0;

    for (p = text; *p && o + 1 < sizeof(buf);) {
        if (plen && strncmp(p, path, plen) == 0) {
            p += plen;
            buf[o++] = ' ';
            continue;
        }
        buf[o++] = *p++;
    }
    buf[o] = '\0';
    for (p = buf; *p; p++) {
        char *end;
        long v;
        if (!isdigit((unsigned char)*p))
            continue;
        if (p > buf && isdigit((unsigned char)p[-1]))
            continue;
        v = strtol(p, &end, 10);
        if (v == n)
            return true;
    }
    return false;
}

/* ---- layering --------------------------------------------------------- */

START_TEST(defaults_apply)
{
    ck_assert_int_eq(load(NOARGS, NOENV), PM_OK);
    ck_assert_int_eq(T.num, 3);
    ck_assert_uint_eq(T.dur, 30000);
    ck_assert_ptr_nonnull(T.str);
    ck_assert_str_eq(T.str, "hello");
    ck_assert_ptr_null(T.secret);
    ck_assert(!T.flag);
    ck_assert_ptr_nonnull(T.mode);
    ck_assert_str_eq(T.mode, "fast");
    ck_assert_uint_eq(T.rate.count, 100);
    ck_assert_uint_eq(T.rate.per_ms, 10000);
    ck_assert_uint_eq(T.max_size, 65536);
    ck_assert_int_eq(R.port, 8080);
    ck_assert_int_eq(pm_config_source(cfg, "t.num"), PM_SRC_DEFAULT);
    ck_assert_int_eq(pm_config_source(cfg, "r.port"), PM_SRC_DEFAULT);
}
END_TEST

START_TEST(file_overrides_defaults)
{
    const char *path = temp_file("t.num = 9\n"
                                 "t.str=from file\n"
                                 "t.flag = on\n"
                                 "t.rate = 5/250ms\n"
                                 "r.port = 9090\n");

    ck_assert_int_eq(load(ARGV(cat("--config=", path)), NOENV), PM_OK);
    ck_assert_int_eq(T.num, 9);
    ck_assert_str_eq(T.str, "from file");
    ck_assert(T.flag);
    ck_assert_uint_eq(T.rate.count, 5);
    ck_assert_uint_eq(T.rate.per_ms, 250);
    ck_assert_int_eq(R.port, 9090);
    ck_assert_uint_eq(T.dur, 30000);
    ck_assert_int_eq(pm_config_source(cfg, "t.num"), PM_SRC_FILE);
    ck_assert_int_eq(pm_config_source(cfg, "r.port"), PM_SRC_FILE);
    ck_assert_int_eq(pm_config_source(cfg, "t.dur"), PM_SRC_DEFAULT);
}
END_TEST

START_TEST(config_file_from_env)
{
    const char *path = temp_file("t.num = 12\n");

    ck_assert_int_eq(load(NOARGS, ENVP(cat("P2PMESH_CONFIG=", path))), PM_OK);
    ck_assert_int_eq(T.num, 12);
    ck_assert_int_eq(pm_config_source(cfg, "t.num"), PM_SRC_FILE);
}
END_TEST

START_TEST(missing_config_file)
{
    char *path;

    ck_assert_int_gt(
        asprintf(&path, "%s/pmconf-no-such-file-%ld", P_tmpdir, (long)getpid()),
        0);
    expect_einval(load(ARGV(cat("--config=", path)), NOENV), "no-such-file",
                  NULL);
    free(path);
}
END_TEST

START_TEST(env_overrides_file)
{
    const char *path = temp_file("t.num = 9\nt.str = file\n");

    ck_assert_int_eq(load(ARGV(cat("--config=", path)),
                          ENVP("P2PMESH_T_NUM=5", "P2PMESH_T_MAX_SIZE=1m",
                               "P2PMESH_R_PORT=9000", "HOME=x", "LANG=C")),
                     PM_OK);
    ck_assert_int_eq(T.num, 5);
    ck_assert_str_eq(T.str, "file");
    ck_assert_uint_eq(T.max_size, 1048576);
    ck_assert_int_eq(R.port, 9000);
    ck_assert_int_eq(pm_config_source(cfg, "t.num"), PM_SRC_ENV);
    ck_assert_int_eq(pm_config_source(cfg, "t.max_size"), PM_SRC_ENV);
    ck_assert_int_eq(pm_config_source(cfg, "r.port"), PM_SRC_ENV);
    ck_assert_int_eq(pm_config_source(cfg, "t.str"), PM_SRC_FILE);
    ck_assert_int_eq(pm_config_source(cfg, "t.dur"), PM_SRC_DEFAULT);
}
END_TEST

START_TEST(flags_override_env)
{
    const char *path = temp_file("t.num = 9\nt.dur = 1m\n");

    ck_assert_int_eq(
        load(ARGV(cat("--config=", path), "--t.num=7", "--r.port=1234"),
             ENVP("P2PMESH_T_NUM=5", "P2PMESH_R_PORT=9000")),
        PM_OK);
    ck_assert_int_eq(T.num, 7);
    ck_assert_int_eq(R.port, 1234);
    ck_assert_uint_eq(T.dur, 60000);
    ck_assert_int_eq(pm_config_source(cfg, "t.num"), PM_SRC_FLAG);
    ck_assert_int_eq(pm_config_source(cfg, "r.port"), PM_SRC_FLAG);
    ck_assert_int_eq(pm_config_source(cfg, "t.dur"), PM_SRC_FILE);
    ck_assert_int_eq(pm_config_source(cfg, "t.str"), PM_SRC_DEFAULT);
    ck_assert_int_eq(pm_config_source(cfg, "no.such.key"), PM_SRC_DEFAULT);
}
END_TEST

START_TEST(every_type_from_flags)
{
    ck_assert_int_eq(load(ARGV("--t.dur=250ms", "--t.flag=yes", "--t.mode=safe",
                               "--t.rate=50/1s", "--t.max_size=1g",
                               "--t.str=x y", "--t.secret=pw"),
                          NOENV),
                     PM_OK);
    ck_assert_uint_eq(T.dur, 250);
    ck_assert(T.flag);
    ck_assert_str_eq(T.mode, "safe");
    ck_assert_uint_eq(T.rate.count, 50);
    ck_assert_uint_eq(T.rate.per_ms, 1000);
    ck_assert_uint_eq(T.max_size, 1073741824);
    ck_assert_str_eq(T.str, "x y");
    ck_assert_str_eq(T.secret, "pw");
    ck_assert_int_eq(pm_config_source(cfg, "t.secret"), PM_SRC_FLAG);
}
END_TEST

START_TEST(non_key_flags_skipped)
{
    const char *path = temp_file("t.num = 9\n");

    ck_assert_int_eq(
        load(ARGV("--role=chat", cat("--config=", path), "--print-config",
                  "--check-config", "--help", "--version", "--t.num=7"),
             NOENV),
        PM_OK);
    ck_assert_int_eq(T.num, 7);
}
END_TEST

/* ---- errors ----------------------------------------------------------- */

START_TEST(unknown_key_in_file)
{
    const char *path = temp_file("t.num = 9\nt.bogus = 1\n");

    expect_einval(load(ARGV(cat("--config=", path)), NOENV), "t.bogus", NULL);
}
END_TEST

START_TEST(unknown_flag_key)
{
    expect_einval(load(ARGV("--t.nope=1"), NOENV), "t.nope", NULL);
}
END_TEST

START_TEST(bad_values_name_the_key)
{
    expect_einval(load(ARGV("--t.num=abc"), NOENV), "t.num", NULL);
}
END_TEST

START_TEST(bad_duration_flag)
{
    expect_einval(load(ARGV("--t.dur=forever"), NOENV), "t.dur", NULL);
}
END_TEST

START_TEST(bad_bool_env)
{
    expect_einval(load(NOARGS, ENVP("P2PMESH_T_FLAG=maybe")), "t.flag",
                  "P2PMESH_T_FLAG");
}
END_TEST

START_TEST(bad_enum_flag)
{
    expect_einval(load(ARGV("--t.mode=warp"), NOENV), "t.mode", NULL);
}
END_TEST

/* An explicit empty value is not one of the enum's values. */
START_TEST(empty_enum_flag)
{
    expect_einval(load(ARGV("--t.mode="), NOENV), "t.mode", NULL);
}
END_TEST

START_TEST(bad_rate_file)
{
    const char *path = temp_file("t.rate = lots\n");

    expect_einval(load(ARGV(cat("--config=", path)), NOENV), "t.rate", NULL);
}
END_TEST

START_TEST(bad_size_file)
{
    const char *path = temp_file("t.max_size = 12q\n");

    expect_einval(load(ARGV(cat("--config=", path)), NOENV), "t.max_size",
                  NULL);
}
END_TEST

START_TEST(int_out_of_range)
{
    static const char *const vals[] = {"--t.num=101", "--t.num=0", "--t.num=-5",
                                       "--t.num=99999999999999999999"};

    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        reset();
        expect_einval(load(ARGV(vals[i]), NOENV), "t.num", NULL);
    }
    /* the bounds themselves are fine */
    reset();
    ck_assert_int_eq(load(ARGV("--t.num=100"), NOENV), PM_OK);
    ck_assert_int_eq(T.num, 100);
    reset();
    ck_assert_int_eq(load(ARGV("--t.num=1"), NOENV), PM_OK);
    ck_assert_int_eq(T.num, 1);
}
END_TEST

START_TEST(default_out_of_range_file_value)
{
    const char *path = temp_file("r.port = 70000\n");

    expect_einval(load(ARGV(cat("--config=", path)), NOENV), "r.port", NULL);
}
END_TEST

/* ---- file syntax ------------------------------------------------------ */

START_TEST(file_comments_and_blanks)
{
    const char *path = temp_file("# a comment\n"
                                 "\n"
                                 "   \n"
                                 "  # an indented comment\n"
                                 "t.num = 11\n"
                                 "\t\n"
                                 "t.str =   spaced out   \n"
                                 "t.mode=safe\n"
                                 "\n");

    ck_assert_int_eq(load(ARGV(cat("--config=", path)), NOENV), PM_OK);
    ck_assert_int_eq(T.num, 11);
    ck_assert_str_eq(T.str, "spaced out");
    ck_assert_str_eq(T.mode, "safe");
}
END_TEST

START_TEST(file_value_with_equals)
{
    const char *path = temp_file("t.str = a=b\n");

    ck_assert_int_eq(load(ARGV(cat("--config=", path)), NOENV), PM_OK);
    ck_assert_str_eq(T.str, "a=b");
}
END_TEST

START_TEST(file_line_without_equals)
{
    const char *path = temp_file("# c\n"
                                 "\n"
                                 "t.num = 4\n"
                                 "\n"
                                 "this line has no equals\n"
                                 "t.str = x\n");
    int rc = load(ARGV(cat("--config=", path)), NOENV);

    ck_assert_int_eq(rc, PM_EINVAL);
    ck_assert_msg(mentions_number(err, path, 5),
                  "error \"%s\" does not name line 5", err);
}
END_TEST

/* ---- secrets ---------------------------------------------------------- */

START_TEST(secret_file_from_env)
{
    const char *sec = temp_file("s3cr3t\n");

    ck_assert_int_eq(load(NOARGS, ENVP(cat("P2PMESH_T_SECRET_FILE=", sec))),
                     PM_OK);
    ck_assert_ptr_nonnull(T.secret);
    ck_assert_str_eq(T.secret, "s3cr3t");
    ck_assert_int_eq(pm_config_source(cfg, "t.secret"), PM_SRC_ENV);
}
END_TEST

START_TEST(secret_file_from_flag_and_file)
{
    const char *sec1 = temp_file("from-flag\n");
    const char *sec2 = temp_file("from-file");
    char line[512];
    const char *conf;

    snprintf(line, sizeof(line), "t.secret_file = %s\n", sec2);
    conf = temp_file(line);
    ck_assert_int_eq(load(ARGV(cat("--config=", conf)), NOENV), PM_OK);
    ck_assert_str_eq(T.secret, "from-file");
    ck_assert_int_eq(pm_config_source(cfg, "t.secret"), PM_SRC_FILE);

    reset();
    ck_assert_int_eq(
        load(ARGV(cat("--config=", conf), cat("--t.secret_file=", sec1)),
             NOENV),
        PM_OK);
    ck_assert_str_eq(T.secret, "from-flag");
    ck_assert_int_eq(pm_config_source(cfg, "t.secret"), PM_SRC_FLAG);
}
END_TEST

START_TEST(secret_direct_env)
{
    ck_assert_int_eq(load(NOARGS, ENVP("P2PMESH_T_SECRET=abc")), PM_OK);
    ck_assert_str_eq(T.secret, "abc");
}
END_TEST

START_TEST(secret_file_missing)
{
    char *path;
    int rc;

    ck_assert_int_gt(
        asprintf(&path, "%s/pmconf-no-secret-%ld", P_tmpdir, (long)getpid()),
        0);
    rc = load(NOARGS, ENVP(cat("P2PMESH_T_SECRET_FILE=", path)));
    /* naming the unreadable file is as useful as naming the key */
    expect_einval(rc, "t.secret", path);
    free(path);
}
END_TEST

/* Find the printed line for key ("key = ..."), or NULL. */
static char *
find_line(char *text, const char *key, char *line, size_t cap)
{
    size_t klen = strlen(key);

    for (char *p = text; p && *p;) {
        char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (strncmp(p, key, klen) == 0 && (p[klen] == ' ' || p[klen] == '=')) {
            if (n >= cap)
                n = cap - 1;
            memcpy(line, p, n);
            line[n] = '\0';
            return line;
        }
        p = nl ? nl + 1 : NULL;
    }
    return NULL;
}

START_TEST(print_redacts_secret)
{
    const char *sec = temp_file("s3cr3t\n");
    const char *conf = temp_file("t.str = from-file\n");
    char *text = NULL;
    size_t size = 0;
    FILE *f;
    char line[512];

    ck_assert_int_eq(
        load(ARGV(cat("--config=", conf), "--t.num=7"),
             ENVP(cat("P2PMESH_T_SECRET_FILE=", sec), "P2PMESH_T_MODE=safe")),
        PM_OK);
    ck_assert_str_eq(T.secret, "s3cr3t");
    f = open_memstream(&text, &size);
    ck_assert_ptr_nonnull(f);
    pm_config_print(cfg, f);
    fclose(f);
    ck_assert_ptr_nonnull(text);

    ck_assert_msg(strstr(text, "s3cr3t") == NULL, "secret printed:\n%s", text);
    ck_assert_msg(find_line(text, "t.secret", line, sizeof(line)),
                  "no t.secret line:\n%s", text);
    ck_assert_msg(strcasestr(line, "redact"), "not marked redacted: %s", line);

    ck_assert_msg(find_line(text, "t.num", line, sizeof(line)),
                  "no t.num line:\n%s", text);
    ck_assert_msg(strncmp(line, "t.num = 7", 9) == 0, "%s", line);
    ck_assert_msg(strcasestr(line, "flag"), "source missing: %s", line);
    ck_assert_msg(find_line(text, "t.str", line, sizeof(line)), "%s", text);
    ck_assert_msg(strstr(line, "from-file"), "%s", line);
    ck_assert_msg(strcasestr(line, "file"), "%s", line);
    ck_assert_msg(find_line(text, "t.mode", line, sizeof(line)), "%s", text);
    ck_assert_msg(strcasestr(line, "env"), "source missing: %s", line);
    ck_assert_msg(find_line(text, "t.dur", line, sizeof(line)), "%s", text);
    ck_assert_msg(strcasestr(line, "default"), "source missing: %s", line);
    for (size_t i = 0; tkeys[i].name; i++)
        ck_assert_msg(find_line(text, tkeys[i].name, line, sizeof(line)),
                      "%s not printed", tkeys[i].name);
    ck_assert_msg(find_line(text, "r.port", line, sizeof(line)),
                  "r.port not printed");
    free(text);
}
END_TEST

/* A secret set directly (not from a file) is not printed either. */
START_TEST(print_redacts_direct_secret)
{
    char *text = NULL;
    size_t size = 0;
    FILE *f;

    ck_assert_int_eq(load(ARGV("--t.secret=hunter2-value"), NOENV), PM_OK);
    f = open_memstream(&text, &size);
    pm_config_print(cfg, f);
    fclose(f);
    ck_assert_msg(strstr(text, "hunter2") == NULL, "secret printed:\n%s", text);
    free(text);
}
END_TEST

/* ---- aliases and warnings --------------------------------------------- */

START_TEST(alias_sets_key)
{
    ck_assert_int_eq(load(NOARGS, ENVP("LEGACY_NUM=42")), PM_OK);
    ck_assert_int_eq(T.num, 42);
    ck_assert_int_eq(pm_config_source(cfg, "t.num"), PM_SRC_ENV);
}
END_TEST

START_TEST(p2pmesh_name_beats_alias)
{
    ck_assert_int_eq(load(NOARGS, ENVP("LEGACY_NUM=42", "P2PMESH_T_NUM=5")),
                     PM_OK);
    ck_assert_int_eq(T.num, 5);
    reset();
    ck_assert_int_eq(load(NOARGS, ENVP("P2PMESH_T_NUM=5", "LEGACY_NUM=42")),
                     PM_OK);
    ck_assert_int_eq(T.num, 5);
}
END_TEST

START_TEST(flag_beats_alias)
{
    ck_assert_int_eq(load(ARGV("--t.num=8"), ENVP("LEGACY_NUM=42")), PM_OK);
    ck_assert_int_eq(T.num, 8);
}
END_TEST

START_TEST(unknown_env_warns)
{
    const char *w;

    ck_assert_int_eq(load(NOARGS, ENVP("P2PMESH_T_NOPE=1", "P2PMESH_T_NUM=4")),
                     PM_OK);
    ck_assert_int_eq(T.num, 4);
    w = pm_config_warnings(cfg);
    ck_assert_ptr_nonnull(w);
    ck_assert_msg(strstr(w, "P2PMESH_T_NOPE"), "warnings: %s", w);
    ck_assert_msg(strstr(w, "P2PMESH_T_NUM") == NULL, "warnings: %s", w);
}
END_TEST

START_TEST(known_env_no_warnings)
{
    const char *sec = temp_file("pw\n");
    const char *conf = temp_file("t.num = 2\n");
    const char *w;

    ck_assert_int_eq(
        load(NOARGS, ENVP(cat("P2PMESH_CONFIG=", conf),
                          cat("P2PMESH_T_SECRET_FILE=", sec), "P2PMESH_T_NUM=4",
                          "HOME=x", "LEGACY_NUM=1")),
        PM_OK);
    w = pm_config_warnings(cfg);
    ck_assert_msg(w == NULL || (strstr(w, "P2PMESH_CONFIG") == NULL &&
                                strstr(w, "SECRET_FILE") == NULL &&
                                strstr(w, "P2PMESH_T_NUM") == NULL &&
                                strstr(w, "HOME") == NULL),
                  "warnings: %s", w);
}
END_TEST

/* ---- a table of its own ---------------------------------------------- */

struct econf {
    char *kind;
};

static const struct pm_conf_key ekeys[] = {
    {"e.kind", PM_CONF_ENUM, offsetof(struct econf, kind), NULL, 0, 0, modes,
     "an enum with no default"},
    {0},
};

/* An ENUM (a char * like STRING) with a NULL default is unset: NULL. */
START_TEST(unset_enum_is_null)
{
    struct econf e = {NULL};
    struct pm_conf_table t = {ekeys, &e};
    struct pm_config *c = pm_config_new(&t, 1, NULL);
    const char *argv1[] = {"p2pmesh", NULL};
    const char *argv2[] = {"p2pmesh", "--e.kind=safe", NULL};
    const char *envp[] = {NULL};
    char msg[PM_ERRMSG_SIZE] = "";
    int rc;

    rc = pm_config_load(c, 1, (char **)argv1, (char **)envp, msg, sizeof(msg));
    ck_assert_msg(rc == PM_OK, "rc %d: %s", rc, msg);
    ck_assert_ptr_null(e.kind);
    pm_config_free(c);

    c = pm_config_new(&t, 1, NULL);
    ck_assert_int_eq(
        pm_config_load(c, 2, (char **)argv2, (char **)envp, msg, sizeof(msg)),
        PM_OK);
    ck_assert_str_eq(e.kind, "safe");
    pm_config_free(c);
}
END_TEST

static Suite *
config_suite(void)
{
    Suite *s = suite_create("pm_config");
    TCase *tc;

    tc = tcase_create("parsers");
    tcase_add_loop_test(tc, parse_duration_ok, 0,
                        (int)(sizeof(dur_ok) / sizeof(dur_ok[0])));
    tcase_add_loop_test(tc, parse_duration_bad, 0,
                        (int)(sizeof(dur_bad) / sizeof(dur_bad[0])));
    tcase_add_loop_test(tc, parse_size_ok, 0,
                        (int)(sizeof(size_ok) / sizeof(size_ok[0])));
    tcase_add_loop_test(tc, parse_size_bad, 0,
                        (int)(sizeof(size_bad) / sizeof(size_bad[0])));
    tcase_add_test(tc, parse_bool_values);
    tcase_add_test(tc, parse_rate_values);
    tcase_add_test(tc, parse_rate_long_duration);
    suite_add_tcase(s, tc);

    tc = tcase_create("layers");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, defaults_apply);
    tcase_add_test(tc, file_overrides_defaults);
    tcase_add_test(tc, config_file_from_env);
    tcase_add_test(tc, missing_config_file);
    tcase_add_test(tc, env_overrides_file);
    tcase_add_test(tc, flags_override_env);
    tcase_add_test(tc, every_type_from_flags);
    tcase_add_test(tc, non_key_flags_skipped);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, unknown_key_in_file);
    tcase_add_test(tc, unknown_flag_key);
    tcase_add_test(tc, bad_values_name_the_key);
    tcase_add_test(tc, bad_duration_flag);
    tcase_add_test(tc, bad_bool_env);
    tcase_add_test(tc, bad_enum_flag);
    tcase_add_test(tc, empty_enum_flag);
    tcase_add_test(tc, bad_rate_file);
    tcase_add_test(tc, bad_size_file);
    tcase_add_test(tc, int_out_of_range);
    tcase_add_test(tc, default_out_of_range_file_value);
    suite_add_tcase(s, tc);

    tc = tcase_create("file");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, file_comments_and_blanks);
    tcase_add_test(tc, file_value_with_equals);
    tcase_add_test(tc, file_line_without_equals);
    suite_add_tcase(s, tc);

    tc = tcase_create("secrets");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, secret_file_from_env);
    tcase_add_test(tc, secret_file_from_flag_and_file);
    tcase_add_test(tc, secret_direct_env);
    tcase_add_test(tc, secret_file_missing);
    tcase_add_test(tc, print_redacts_secret);
    tcase_add_test(tc, print_redacts_direct_secret);
    suite_add_tcase(s, tc);

    tc = tcase_create("env");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, alias_sets_key);
    tcase_add_test(tc, p2pmesh_name_beats_alias);
    tcase_add_test(tc, flag_beats_alias);
    tcase_add_test(tc, unknown_env_warns);
    tcase_add_test(tc, known_env_no_warnings);
    suite_add_tcase(s, tc);

    tc = tcase_create("tables");
    tcase_add_test(tc, unset_enum_is_null);
    suite_add_tcase(s, tc);

    return s;
}

PM_TEST_MAIN(config_suite)
