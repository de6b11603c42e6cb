/*
 * Unit tests for pm_jwt (core/pm_jwt.h): HS256 verification and the
 * coturn REST password. Every token below was made outside this code
 * (Python's base64/json for the parts, `openssl dgst -sha256 -hmac` for
 * the MACs, cross-checked with Python's hmac and PyJWT) with KEY, plus
 * the HS256 example of RFC 7515 appendix A.1; pm_jwt_verify takes the
 * time as an argument, so exp and nbf are tested at fixed instants.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "pm_test.h"
#include <stdlib.h>
#include <string.h>

#include "pm_jwt.h"
#include "pm_util.h"

#define KEY "p2pmesh-unit-test-key"

/* {"alg":"HS256","typ":"JWT"} {"sub":"alice","exp":1700000000,
 * "nbf":1699990000} */
#define GOOD                                                                   \
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."                                    \
    "eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAwMCwibmJmIjoxNjk5OTkwMDAwfQ."      \
    "1Ul4HXoVoWUYXMZ45MHzviVHiXlA588X7BvieeEXJss"
#define GOOD_EXP 1700000000
#define GOOD_NBF 1699990000

static int
verify(const char *token, int64_t now, struct pm_jwt_claims *cl, char *err)
{
    return pm_jwt_verify(token, strlen(token), KEY, strlen(KEY), now, cl, err,
                         PM_ERRMSG_SIZE);
}

/* Refused with a reason containing want; no sub handed out. */
static void
assert_refused(const char *token, int64_t now, const char *want)
{
    struct pm_jwt_claims cl;
    char err[PM_ERRMSG_SIZE] = "";

    ck_assert_int_eq(verify(token, now, &cl, err), PM_EINVAL);
    ck_assert_ptr_null(cl.sub);
    ck_assert_msg(strstr(err, want) != NULL, "reason \"%s\", wanted \"%s\"",
                  err, want);
}

START_TEST(valid_token)
{
    struct pm_jwt_claims cl;
    char err[PM_ERRMSG_SIZE];

    ck_assert_int_eq(verify(GOOD, GOOD_EXP - 100, &cl, err), PM_OK);
    ck_assert_str_eq(cl.sub, "alice");
    ck_assert_int_eq(cl.exp, GOOD_EXP);
    free(cl.sub);
}
END_TEST

START_TEST(valid_without_exp_or_typ)
{
    /* {"alg":"HS256"} {"sub":"bob","iat":1}: exp is optional. */
    static const char tok[] =
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IiLCJpYXQiOjF9."
        "hynpKUuKIrwtrZTg0kADdhwn0t6SR5sOuocfoEXgSV4";
    struct pm_jwt_claims cl;
    char err[PM_ERRMSG_SIZE];

    ck_assert_int_eq(verify(tok, 4102444800, &cl, err), PM_OK);
    ck_assert_str_eq(cl.sub, "bob");
    ck_assert_int_eq(cl.exp, 0);
    free(cl.sub);
}
END_TEST

START_TEST(fractional_exp)
{
    /* {"sub":"carol","exp":1700000000.75}: NumericDate may be fractional */
    static const char tok[] = "eyJhbGciOiJIUzI1NiJ9."
                              "eyJzdWIiOiJjYXJvbCIsImV4cCI6MTcwMDAwMDAwMC43NX0."
                              "QbP0gTm7WeoCImrY4CzUEya8_m33fdvzz2Cy6OlispU";
    struct pm_jwt_claims cl;
    char err[PM_ERRMSG_SIZE];

    ck_assert_int_eq(verify(tok, 1700000000, &cl, err), PM_OK);
    ck_assert_int_eq(cl.exp, 1700000000);
    free(cl.sub);
    assert_refused(tok, 1700000000 + PM_JWT_LEEWAY_S + 1, "expired");
}
END_TEST

START_TEST(exp_with_leeway)
{
    struct pm_jwt_claims cl;
    char err[PM_ERRMSG_SIZE];

    ck_assert_int_eq(verify(GOOD, GOOD_EXP + PM_JWT_LEEWAY_S - 1, &cl, err),
                     PM_OK);
    free(cl.sub);
    assert_refused(GOOD, GOOD_EXP + PM_JWT_LEEWAY_S, "expired");
    assert_refused(GOOD, GOOD_EXP + 86400, "expired");
}
END_TEST

START_TEST(nbf_with_leeway)
{
    struct pm_jwt_claims cl;
    char err[PM_ERRMSG_SIZE];

    ck_assert_int_eq(verify(GOOD, GOOD_NBF - PM_JWT_LEEWAY_S, &cl, err), PM_OK);
    free(cl.sub);
    assert_refused(GOOD, GOOD_NBF - PM_JWT_LEEWAY_S - 1, "not valid yet");
    assert_refused(GOOD, 1000, "not valid yet");
}
END_TEST

START_TEST(bad_signature)
{
    char tok[] = GOOD;

    /* The same claims signed with another key. */
    assert_refused(
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
        "eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAwMCwibmJmIjoxNjk5OTkwMDAwfQ."
        "7VDW5q008hFv-llwjUtPAAHzfnw4v1feihFhJ_YzKCo",
        GOOD_EXP - 100, "signature is wrong");
    /* One bit of the MAC flipped ('1' -> '0' in its first character). */
    tok[strlen(tok) - 43] = '0';
    assert_refused(tok, GOOD_EXP - 100, "signature is wrong");
    /* The payload changed under the old MAC (its first character). */
    memcpy(tok, GOOD, sizeof tok);
    strstr(tok, ".eyJzdWIi")[1] = 'f';
    assert_refused(tok, GOOD_EXP - 100, "signature is wrong");
}
END_TEST

START_TEST(signature_not_canonical)
{
    char tok[] = GOOD;

    /* The last character of a 32-byte MAC carries 2 unused bits: 's'
     * (44) has them zero; 't' decodes to the same MAC, yet is refused. */
    ck_assert_int_eq(tok[strlen(tok) - 1], 's');
    tok[strlen(tok) - 1] = 't';
    assert_refused(tok, GOOD_EXP - 100, "signature is not a base64url");
    /* Padding, a short MAC, characters outside base64url. */
    assert_refused(GOOD "=", GOOD_EXP - 100, "signature is not a base64url");
    memcpy(tok, GOOD, sizeof tok);
    tok[strlen(tok) - 4] = '\0';
    assert_refused(tok, GOOD_EXP - 100, "signature is not a base64url");
    memcpy(tok, GOOD, sizeof tok);
    tok[strlen(tok) - 5] = '+';
    assert_refused(tok, GOOD_EXP - 100, "signature is not a base64url");
}
END_TEST

/* Signed with KEY (each under its own alg, or HS256 for confusion). */
static const char *const wrong_alg[] = {
    /* {"alg":"none"}, no signature */
    "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.",
    /* {"alg":"none"} with a valid HS256 MAC */
    "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9."
    "0c2lBZ1Ug_meF_LT1l_SwkOoGnRWugsds9OE9O8C2YE",
    /* {"alg":"HS512"} with its HMAC-SHA512 */
    "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJhbGljZSJ9."
    "rznRFfvlr9bh-nxsOjCfDh5r9I56TlqNo6iRLjysNR7xMLLxg17eaPNzhLhq6SGfVh4e1tbt"
    "WSTe6IAw3Cn-Pw",
    /* {"alg":"RS256"} with an HS256 MAC (algorithm confusion) */
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9."
    "KA6JPUFrDnuYSeuN4JipicQvV8bPFVna4vQU-9f7nZo",
    /* {"alg":"hs256"}: exactly HS256 */
    "eyJhbGciOiJoczI1NiJ9.eyJzdWIiOiJhbGljZSJ9."
    "E0qE0Et-rfjqyXczdpbj0VZYMALvS7g6vShL7-D-ALQ",
    /* {"typ":"JWT"}: no alg */
    "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJhbGljZSJ9."
    "T4uCLyX84yQdBcmoS_s8T5iFq1ReUfdZNkfWPc2y9Ng",
};

START_TEST(alg_refused)
{
    assert_refused(wrong_alg[_i], 1700000000, "alg is not HS256");
}
END_TEST

START_TEST(crit_refused)
{
    /* {"alg":"HS256","crit":["exp"]} */
    assert_refused("eyJhbGciOiJIUzI1NiIsImNyaXQiOlsiZXhwIl19."
                   "eyJzdWIiOiJhbGljZSJ9."
                   "uWEC4CPgOfZwtVerp2seB5fjAuXd8K51AUFHFrXzxQo",
                   1700000000, "crit");
}
END_TEST

struct refusal {
    const char *token;
    const char *reason;
};

static const struct refusal malformed[] = {
    {"", "three dot-separated parts"},
    {"abc", "three dot-separated parts"},
    {"a.b", "three dot-separated parts"},
    {GOOD ".x", "three dot-separated parts"},
    {"..", "header is not"},
    {"!!!.eyJzdWIiOiJhbGljZSJ9.x", "header is not"},
    {"eyJhbGciOiJIUzI1NiJ9=.eyJzdWIiOiJhbGljZSJ9.x", "header is not"},
    {"e.eyJzdWIiOiJhbGljZSJ9.x", "header is not"}, /* 1 char: impossible */
    /* "hello", signed */
    {"aGVsbG8.eyJzdWIiOiJhbGljZSJ9."
     "PkOxeRR7gRRqklzprIPed1d5qtIcb3NmFbVhnWhFmjc",
     "header is not"},
    /* {"alg":"HS256"}x: trailing bytes after the object, signed */
    {"eyJhbGciOiJIUzI1NiJ9eA.eyJzdWIiOiJhbGljZSJ9."
     "AZCNkx6tiCvNUe-eAuBVX446-DZ9akEDwbhgnnZx2dU",
     "header is not"},
    /* payload "sub=alice", signed */
    {"eyJhbGciOiJIUzI1NiJ9.c3ViPWFsaWNl."
     "KISH_J9L0TeYjQ5RdpB9kgvxNrEu820UJaj2X5BsA2o",
     "payload is not"},
    /* payload ["sub","alice"], signed */
    {"eyJhbGciOiJIUzI1NiJ9.WyJzdWIiLCJhbGljZSJd."
     "vLObigX45cO10eVWEz1g0q0RR1VkYW84TNY2YDsIgc0",
     "payload is not"},
    /* {"sub":"alice","exp":"soon"}, signed */
    {"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6InNvb24ifQ."
     "VRt_KYVKCCyYEN3BJ0QR18m6RBapAUmt0-8ns_BaxjI",
     "exp is not a NumericDate"},
};

START_TEST(malformed_refused)
{
    assert_refused(malformed[_i].token, 1700000000, malformed[_i].reason);
}
END_TEST

static const struct refusal bad_sub[] = {
    /* {"name":"alice"} */
    {"eyJhbGciOiJIUzI1NiJ9.eyJuYW1lIjoiYWxpY2UifQ."
     "x3HC9nBNOANgpYE5HKoxW-xlpS-_JYPThglabYUq5wI",
     "no sub"},
    /* {"sub":""} */
    {"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIifQ."
     "g10TqjVUddvahCJZhmDTxcQ1mr4AkeaTzS7ZP7W1FgU",
     "sub is not a non-empty string"},
    /* {"sub":42} */
    {"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjQyfQ."
     "BIgvIuQvPWqksD1qKiRw3oQ9rFEauZar3P6rmFej9DI",
     "sub is not a non-empty string"},
};

START_TEST(sub_required)
{
    assert_refused(bad_sub[_i].token, 1700000000, bad_sub[_i].reason);
}
END_TEST

START_TEST(rfc7515_example)
{
    /* RFC 7515 A.1: its signature must verify under its key; the token has
     * no sub, so the refusal comes from the claims, not the MAC. */
    static const char tok[] =
        "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9."
        "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxl"
        "LmNvbS9pc19yb290Ijp0cnVlfQ."
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    static const unsigned char key[] = {
        3,   35,  53,  75,  43,  15,  165, 188, 131, 126, 6,   101, 119,
        123, 166, 143, 90,  179, 40,  230, 240, 84,  201, 40,  169, 15,
        132, 178, 210, 80,  46,  191, 211, 251, 90,  146, 210, 6,   71,
        239, 150, 138, 180, 195, 119, 98,  61,  34,  61,  46,  33,  114,
        5,   46,  79,  8,   192, 205, 154, 245, 103, 208, 128, 163};
    struct pm_jwt_claims cl;
    char err[PM_ERRMSG_SIZE];

    ck_assert_int_eq(pm_jwt_verify(tok, strlen(tok), key, sizeof key,
                                   1300819380 - 60, &cl, err, sizeof err),
                     PM_EINVAL);
    ck_assert_str_eq(err, "token has no sub");
    ck_assert_int_eq(pm_jwt_verify(tok, strlen(tok), key, sizeof key - 1,
                                   1300819380 - 60, &cl, err, sizeof err),
                     PM_EINVAL);
    ck_assert_str_eq(err, "token signature is wrong");
}
END_TEST

START_TEST(oversized_refused)
{
    size_t n = PM_JWT_MAX_LEN + 1;
    char *tok = pm_xmalloc(n + 1);
    struct pm_jwt_claims cl;
    char err[PM_ERRMSG_SIZE];

    /* Three parts, one byte too long: the length alone refuses it. */
    memset(tok, 'A', n);
    tok[10] = tok[20] = '.';
    tok[n] = '\0';
    ck_assert_int_eq(pm_jwt_verify(tok, n, KEY, strlen(KEY), 1700000000, &cl,
                                   err, sizeof err),
                     PM_EINVAL);
    ck_assert_ptr_null(strstr(err, "AAAA"));
    ck_assert_msg(strstr(err, "longer than 8192") != NULL, "%s", err);
    free(tok);
}
END_TEST

START_TEST(reasons_never_quote_the_token)
{
    char err[PM_ERRMSG_SIZE];
    struct pm_jwt_claims cl;
    size_t i;

    for (i = 0; i < sizeof malformed / sizeof *malformed; i++) {
        verify(malformed[i].token, 1700000000, &cl, err);
        ck_assert_msg(strstr(err, "eyJ") == NULL, "%s", err);
    }
    verify(GOOD, GOOD_EXP + 3600, &cl, err);
    ck_assert_ptr_null(strstr(err, "alice"));
}
END_TEST

START_TEST(hmac_sha1_base64)
{
    char out[PM_HMAC_SHA1_B64_SIZE];

    /* RFC 2202 test case 2 (also `openssl dgst -sha1 -hmac Jefe`). */
    pm_hmac_sha1_base64("Jefe", 4, "what do ya want for nothing?", 28, out);
    ck_assert_str_eq(out, "7/zfauXrL6LSdBbV8YTfnCWafHk=");
    /* A coturn REST username (openssl dgst -sha1 -hmac north -binary). */
    pm_hmac_sha1_base64("north", 5, "1700000000:alice", 16, out);
    ck_assert_str_eq(out, "Cd/49soE35ICqcJF/bCTn8Z4OyE=");
}
END_TEST

static Suite *
jwt_suite(void)
{
    Suite *s = suite_create("pm_jwt");
    TCase *tc = tcase_create("verify");

    tcase_add_test(tc, valid_token);
    tcase_add_test(tc, valid_without_exp_or_typ);
    tcase_add_test(tc, fractional_exp);
    tcase_add_test(tc, exp_with_leeway);
    tcase_add_test(tc, nbf_with_leeway);
    tcase_add_test(tc, bad_signature);
    tcase_add_test(tc, signature_not_canonical);
    tcase_add_loop_test(tc, alg_refused, 0,
                        sizeof wrong_alg / sizeof *wrong_alg);
    tcase_add_test(tc, crit_refused);
    tcase_add_loop_test(tc, malformed_refused, 0,
                        sizeof malformed / sizeof *malformed);
    tcase_add_loop_test(tc, sub_required, 0, sizeof bad_sub / sizeof *bad_sub);
    tcase_add_test(tc, rfc7515_example);
    tcase_add_test(tc, oversized_refused);
    tcase_add_test(tc, reasons_never_quote_the_token);
    suite_add_tcase(s, tc);
    tc = tcase_create("hmac");
    tcase_add_test(tc, hmac_sha1_base64);
    suite_add_tcase(s, tc);
    return s;
}

PM_TEST_MAIN(jwt_suite)
