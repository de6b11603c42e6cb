/*
 * test_sigv4: pm_sigv4 against every case of the AWS SigV4 test suite
 * (official v4/ and the derived execute-api and DynamoDB cases) in
 * ../shared/aws-sigv4-test-suite, or $PM_SIGV4_SUITE. For each case the
 * canonical request, the string to sign, the signature and the
 * Authorization header must match the expected files byte for byte; a
 * wrong secret must change the signature.
 */
#include "config.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "pm_aws.h"
#include "pm_sigv4.h"
#include "pm_test.h"
#include "pm_util.h"

#ifndef PM_SIGV4_SUITE_DEFAULT
#define PM_SIGV4_SUITE_DEFAULT "../shared/aws-sigv4-test-suite"
#endif

static const char *
suite_dir(void)
{
    const char *d = getenv("PM_SIGV4_SUITE");

    return d != NULL && d[0] != '\0' ? d : PM_SIGV4_SUITE_DEFAULT;
}

/* The whole file (NUL-ended), or NULL. */
static char *
slurp(const char *dir, const char *name)
{
    char path[1024];
    FILE *f;
    long n;
    char *buf;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    if ((f = fopen(path, "rb")) == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    buf = pm_xmalloc((size_t)n + 1);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

struct parsed {
    char *method, *path, *query;
    struct pm_sigv4_header h[32];
    char *names[32], *values[32];
    size_t nh;
    const char *body;
    size_t body_len;
};

/* request.txt: request line, Name:value lines (folded lines joined with a
 * space), a blank line, the body. */
static void
parse_request(char *text, struct parsed *p)
{
    char *line = text, *nl, *sp, *end, *q;

    memset(p, 0, sizeof *p);
    nl = strchr(line, '\n');
    ck_assert_ptr_nonnull(nl);
    *nl = '\0';
    sp = strchr(line, ' ');
    end = strrchr(line, ' ');
    ck_assert(sp != NULL && end > sp);
    *sp = *end = '\0';
    p->method = line;
    p->path = sp + 1;
    if ((q = strchr(p->path, '?')) != NULL) {
        *q = '\0';
        p->query = q + 1;
    }
    line = nl + 1;
    while (*line != '\0' && *line != '\n') {
        char *colon, *v;

        nl = strchr(line, '\n');
        if (nl != NULL)
            *nl = '\0';
        if ((*line == ' ' || *line == '\t') && p->nh > 0) {
            char *prev = p->values[p->nh - 1];

            while (*line == ' ' || *line == '\t')
                line++;
            p->values[p->nh - 1] = pm_xasprintf("%s %s", prev, line);
            free(prev);
        } else {
            colon = strchr(line, ':');
            ck_assert_ptr_nonnull(colon);
            *colon = '\0';
            v = colon + 1;
            ck_assert_uint_lt(p->nh, 32);
            p->names[p->nh] = pm_xstrdup(line);
            p->values[p->nh] = pm_xstrdup(v);
            p->nh++;
        }
        if (nl == NULL) {
            line += strlen(line);
            break;
        }
        line = nl + 1;
    }
    if (*line == '\n')
        line++;
    p->body = line;
    p->body_len = strlen(line);
}

static time_t
parse_time(const char *s)
{
    struct tm tm;

    memset(&tm, 0, sizeof tm);
    ck_assert_ptr_nonnull(strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm));
    return timegm(&tm);
}

/* The Authorization value in header-signed-request.txt. */
static char *
expected_authorization(char *signed_req)
{
    char *a = strstr(signed_req, "\nAuthorization:"), *nl;

    ck_assert_ptr_nonnull(a);
    a += strlen("\nAuthorization:");
    if ((nl = strchr(a, '\n')) != NULL)
        *nl = '\0';
    return a;
}

/* Sign one case directory; returns 1 when it matched. */
static int
run_case(const char *dir, const char *secret_override)
{
    char *ctx_text = slurp(dir, "context.json");
    char *req_text = slurp(dir, "request.txt");
    char *creq = slurp(dir, "header-canonical-request.txt");
    char *sts = slurp(dir, "header-string-to-sign.txt");
    char *sig = slurp(dir, "header-signature.txt");
    char *sreq = slurp(dir, "header-signed-request.txt");
    cJSON *ctx, *cr, *tok, *omit, *sb;
    struct pm_sigv4_creds creds;
    struct pm_sigv4_request req;
    struct pm_sigv4 out;
    struct parsed p;
    unsigned flags = 0;
    char err[128];
    size_t i;
    int ok;

    ck_assert_msg(ctx_text && req_text && creq && sts && sig && sreq,
                  "incomplete case %s", dir);
    ctx = cJSON_Parse(ctx_text);
    ck_assert_ptr_nonnull(ctx);
    cr = cJSON_GetObjectItem(ctx, "credentials");
    tok = cJSON_GetObjectItem(cr, "token");
    omit = cJSON_GetObjectItem(ctx, "omit_session_token");
    sb = cJSON_GetObjectItem(ctx, "sign_body");
    creds.access_key_id = cJSON_GetObjectItem(cr, "access_key_id")->valuestring;
    creds.secret_access_key =
        secret_override
            ? secret_override
            : cJSON_GetObjectItem(cr, "secret_access_key")->valuestring;
    creds.session_token = cJSON_IsString(tok) ? tok->valuestring : NULL;
    if (cJSON_IsTrue(omit))
        flags |= PM_SIGV4_TOKEN_AFTER;
    if (cJSON_IsTrue(sb))
        flags |= PM_SIGV4_SIGN_BODY;
    parse_request(req_text, &p);
    for (i = 0; i < p.nh; i++) {
        p.h[i].name = p.names[i];
        p.h[i].value = p.values[i];
    }
    memset(&req, 0, sizeof req);
    req.method = p.method;
    req.path = p.path;
    req.query = p.query;
    req.headers = p.h;
    req.nheaders = p.nh;
    req.body = p.body;
    req.body_len = p.body_len;
    req.normalize = cJSON_IsTrue(cJSON_GetObjectItem(ctx, "normalize"));
    ck_assert_int_eq(
        pm_sigv4_sign(
            &req, &creds, cJSON_GetObjectItem(ctx, "region")->valuestring,
            cJSON_GetObjectItem(ctx, "service")->valuestring,
            parse_time(cJSON_GetObjectItem(ctx, "timestamp")->valuestring),
            flags, &out, err, sizeof err),
        PM_OK);
    if (secret_override == NULL) {
        ck_assert_msg(strcmp(out.canonical, creq) == 0,
                      "%s canonical request:\n%s\n--- expected:\n%s", dir,
                      out.canonical, creq);
        ck_assert_msg(strcmp(out.string_to_sign, sts) == 0,
                      "%s string to sign:\n%s\n--- expected:\n%s", dir,
                      out.string_to_sign, sts);
        ck_assert_str_eq(out.authorization, expected_authorization(sreq));
    }
    ok = strcmp(out.signature, sig) == 0;
    pm_sigv4_free(&out);
    for (i = 0; i < p.nh; i++) {
        free(p.names[i]);
        free(p.values[i]);
    }
    cJSON_Delete(ctx);
    free(ctx_text);
    free(req_text);
    free(creq);
    free(sts);
    free(sig);
    free(sreq);
    return ok;
}

/* Run every case under sub (v4 or derived); returns how many. */
static int
run_all(const char *sub, const char *secret_override, int *matched)
{
    char base[1024], dir[1536];
    struct dirent *de;
    DIR *d;
    int n = 0;

    snprintf(base, sizeof base, "%s/%s", suite_dir(), sub);
    d = opendir(base);
    ck_assert_msg(d != NULL,
                  "SigV4 test suite not found at %s (set PM_SIGV4_SUITE)",
                  base);
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(dir, sizeof dir, "%s/%s", base, de->d_name);
        *matched += run_case(dir, secret_override);
        n++;
    }
    closedir(d);
    return n;
}

START_TEST(official_suite)
{
    int matched = 0, n = run_all("v4", NULL, &matched);

    ck_assert_int_ge(n, 38);
    ck_assert_int_eq(matched, n);
}
END_TEST

START_TEST(derived_execute_api_and_dynamodb)
{
    int matched = 0, n = run_all("derived", NULL, &matched);

    ck_assert_int_ge(n, 2);
    ck_assert_int_eq(matched, n);
}
END_TEST

START_TEST(wrong_secret_changes_every_signature)
{
    int matched = 0;

    run_all("v4", "not-the-secret", &matched);
    run_all("derived", "not-the-secret", &matched);
    ck_assert_int_eq(matched, 0);
}
END_TEST

START_TEST(host_is_required)
{
    struct pm_sigv4_header h = {"Content-Type", "text/plain"};
    struct pm_sigv4_request req = {"GET", "/", NULL, &h, 1, NULL, 0, false};
    struct pm_sigv4_creds creds = {"AKID", "secret", NULL};
    struct pm_sigv4 out;
    char err[128];

    ck_assert_int_eq(pm_sigv4_sign(&req, &creds, "us-east-1", "service", 0, 0,
                                   &out, err, sizeof err),
                     PM_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "Host"));
}
END_TEST

/* An API Gateway connection id as a path segment: '=' and '@' encoded. */
START_TEST(uri_encode_connection_id)
{
    char *e = pm_sigv4_uri_encode("R0oX-d_f.~0kw=/@+");

    ck_assert_str_eq(e, "R0oX-d_f.~0kw%3D%2F%40%2B");
    free(e);
}
END_TEST

/* The Host that is signed is the one pm_httpc sends: the scheme's own
 * port left out, any other kept. */
START_TEST(url_authority_is_the_host_header)
{
    char host[64];
    const char *path;

    ck_assert_int_eq(pm_aws_url_authority("https://a.example:443/p?q", host,
                                          sizeof host, &path),
                     PM_OK);
    ck_assert_str_eq(host, "a.example");
    ck_assert_str_eq(path, "/p?q");
    ck_assert_int_eq(
        pm_aws_url_authority("http://127.0.0.1:80", host, sizeof host, &path),
        PM_OK);
    ck_assert_str_eq(host, "127.0.0.1");
    ck_assert_str_eq(path, "");
    ck_assert_int_eq(pm_aws_url_authority("http://127.0.0.1:8443/x", host,
                                          sizeof host, NULL),
                     PM_OK);
    ck_assert_str_eq(host, "127.0.0.1:8443");
    ck_assert_int_eq(
        pm_aws_url_authority("https://h:4430/", host, sizeof host, NULL),
        PM_OK);
    ck_assert_str_eq(host, "h:4430");
    ck_assert_int_eq(pm_aws_url_authority("ftp://h/", host, sizeof host, NULL),
                     PM_EINVAL);
    ck_assert_int_eq(
        pm_aws_url_authority("https:///x", host, sizeof host, NULL), PM_EINVAL);
    ck_assert_int_eq(
        pm_aws_url_authority("https://a-very-long-host/", host, 8, NULL),
        PM_EINVAL);
}
END_TEST

static Suite *
sigv4_suite(void)
{
    Suite *s = suite_create("sigv4");
    TCase *tc = tcase_create("suite");

    tcase_add_test(tc, official_suite);
    tcase_add_test(tc, derived_execute_api_and_dynamodb);
    tcase_add_test(tc, wrong_secret_changes_every_signature);
    tcase_add_test(tc, host_is_required);
    tcase_add_test(tc, uri_encode_connection_id);
    tcase_add_test(tc, url_authority_is_the_host_header);
    suite_add_tcase(s, tc);
    return s;
}

PM_TEST_MAIN(sigv4_suite)
