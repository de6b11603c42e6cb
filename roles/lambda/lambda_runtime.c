/*
 * lambda_runtime: the AWS Lambda Runtime API loop (version 2018-06-01) on
 * one keep-alive connection: GET /runtime/invocation/next (no timeout:
 * the process is frozen between invocations), hand the event to the
 * handler, POST .../{id}/response or .../{id}/error, and again. Init
 * failures go to /runtime/init/error. A /next that fails is retried
 * three times (100 ms apart), then the process exits; so does a failed
 * answer, which Lambda reports as Runtime.ExitError. Loop thread.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "lambda.h"
#include "pm_log.h"
#include "pm_server.h"
#include "pm_util.h"

#define NEXT_RETRIES 3

struct lam_rt {
    struct lam *l;
    struct pm_httpc *http; /* the Runtime API: one keep-alive connection */
    char *base;            /* http://{AWS_LAMBDA_RUNTIME_API}/2018-06-01 */
    struct lam_call *call; /* the invocation in progress */
    struct event *retry;
    unsigned next_failures;
    bool closing; /* pm_httpc_free answers what is pending: ignore it */
};

static void next(struct lam_rt *rt);

struct lam_rt *
lam_rt_new(struct lam *l, char *err, size_t errlen)
{
    struct pm_httpc_opts o = {.max_per_origin = 1};
    struct lam_rt *rt;

    if (l->conf->runtime_api == NULL || *l->conf->runtime_api == '\0') {
        pm_errf(err, errlen, PM_EINVAL,
                "lambda.runtime_api (AWS_LAMBDA_RUNTIME_API) is not set: "
                "--role=lambda runs inside AWS Lambda or an emulator");
        return NULL;
    }
    rt = pm_xcalloc(1, sizeof *rt);
    rt->l = l;
    rt->base = pm_xasprintf("http://%s/2018-06-01", l->conf->runtime_api);
    rt->http = pm_httpc_new(pm_server_base(l->srv), &o, err, errlen);
    if (rt->http == NULL) {
        lam_rt_free(rt);
        return NULL;
    }
    return rt;
}

static void
call_free(struct lam_call *call)
{
    if (call == NULL)
        return;
    free(call->request_id);
    free(call->trace_id);
    free((char *)call->event);
    free(call);
}

void
lam_rt_free(struct lam_rt *rt)
{
    if (rt == NULL)
        return;
    if (rt->retry != NULL)
        event_free(rt->retry);
    rt->closing = true;
    pm_httpc_free(rt->http);
    call_free(rt->call);
    free(rt->base);
    free(rt);
}

static void
post(struct lam_rt *rt, const char *path, const char *err_type,
     const char *body, pm_httpc_fn cb)
{
    struct pm_httpc_header h[2] = {
        {"Content-Type", "application/json"},
        {"Lambda-Runtime-Function-Error-Type", err_type},
    };
    char *url = pm_xasprintf("%s%s", rt->base, path);
    struct pm_httpc_req req = {"POST", url,          h, err_type ? 2 : 1,
                               body,   strlen(body), 0};
    char err[PM_ERRMSG_SIZE];

    if (pm_httpc_send(rt->http, &req, cb, rt, err, sizeof err) != PM_OK) {
        pm_log(PM_LOG_ERROR, "runtime_api_failed", "%s", err);
        pm_server_exit(rt->l->srv, 1);
    }
    free(url);
}

/* {"errorMessage":..,"errorType":..,"stackTrace":[]} (malloc'd). */
static char *
error_body(const char *type, const char *msg)
{
    cJSON *o = cJSON_CreateObject();
    char *s;

    cJSON_AddStringToObject(o, "errorMessage", msg);
    cJSON_AddStringToObject(o, "errorType", type);
    cJSON_AddArrayToObject(o, "stackTrace");
    s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static void
init_error_done(const struct pm_httpc_res *res, void *arg)
{
    struct lam_rt *rt = arg;

    if (rt->closing)
        return;

    if (res->status != 202)
        pm_log(PM_LOG_ERROR, "runtime_api_failed",
               "POST /runtime/init/error: %d %s", res->status,
               res->status ? "" : res->error);
    pm_server_exit(rt->l->srv, 1);
}

void
lam_rt_init_error(struct lam_rt *rt, const char *type, const char *msg)
{
    char *body = error_body(type, msg);

    pm_log_kv(PM_LOG_ERROR, "init_failed", msg, "error_type", type, NULL);
    post(rt, "/runtime/init/error", type, body, init_error_done);
    free(body);
}

/* The answer to the invocation was taken: free it, next. */
static void
answered(const struct pm_httpc_res *res, void *arg)
{
    struct lam_rt *rt = arg;

    if (rt->closing)
        return;

    if (res->status != 202) {
        pm_log(PM_LOG_ERROR, "runtime_api_failed",
               "answer to invocation %s not accepted: %d %.*s%s",
               rt->call->request_id, res->status, (int)res->body_len,
               (const char *)res->body, res->status ? "" : res->error);
        pm_server_exit(rt->l->srv, 1);
        return;
    }
    call_free(rt->call);
    rt->call = NULL;
    next(rt);
}

void
lam_call_respond(struct lam_call *call, const char *body, size_t len)
{
    struct lam_rt *rt = call->l->rt;
    char *path, *copy = pm_xstrndup(body, len);

    PM_ASSERT(!call->done && rt->call == call);
    call->done = true;
    path = pm_xasprintf("/runtime/invocation/%s/response", call->request_id);
    post(rt, path, NULL, copy, answered);
    free(path);
    free(copy);
}

void
lam_call_fail(struct lam_call *call, const char *type, const char *fmt, ...)
{
    struct lam_rt *rt = call->l->rt;
    char msg[1024], *path, *body;
    va_list ap;

    PM_ASSERT(!call->done && rt->call == call);
    call->done = true;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pm_log_kv(PM_LOG_ERROR, "invocation_failed", msg, "request_id",
              call->request_id, "error_type", type, NULL);
    body = error_body(type, msg);
    path = pm_xasprintf("/runtime/invocation/%s/error", call->request_id);
    post(rt, path, type, body, answered);
    free(path);
    free(body);
}

uint64_t
lam_call_remaining_ms(const struct lam_call *call)
{
    uint64_t now = pm_wall_ms();

    return call->deadline_ms > now ? call->deadline_ms - now : 0;
}

static void
retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    next(arg);
}

/* /next failed: try again shortly, or give up. */
static void
next_failed(struct lam_rt *rt, const char *why)
{
    struct timeval tv = {0, 100000};

    if (++rt->next_failures > NEXT_RETRIES) {
        pm_log(PM_LOG_ERROR, "runtime_api_failed",
               "GET /runtime/invocation/next: %s; giving up after %d "
               "retries",
               why, NEXT_RETRIES);
        pm_server_exit(rt->l->srv, 1);
        return;
    }
    pm_log(PM_LOG_WARN, "runtime_api_retry",
           "GET /runtime/invocation/next: %s; retrying", why);
    if (rt->retry == NULL)
        rt->retry = evtimer_new(pm_server_base(rt->l->srv), retry_cb, rt);
    evtimer_add(rt->retry, &tv);
}

static void
got_next(const struct pm_httpc_res *res, void *arg)
{
    struct lam_rt *rt = arg;
    const char *id, *deadline, *trace;
    struct lam_call *call;
    char why[160];

    if (rt->closing)
        return;

    if (res->status != 200) {
        snprintf(why, sizeof why, "%d %.100s", res->status,
                 res->status ? (const char *)res->body : res->error);
        if (res->status == 403 || res->status >= 500) {
            /* The platform says this environment is done. */
            pm_log(PM_LOG_ERROR, "runtime_api_failed",
                   "GET /runtime/invocation/next: %s", why);
            pm_server_exit(rt->l->srv, 1);
            return;
        }
        next_failed(rt, why);
        return;
    }
    id = pm_httpc_res_header(res, "Lambda-Runtime-Aws-Request-Id");
    if (id == NULL || *id == '\0') {
        next_failed(rt, "no Lambda-Runtime-Aws-Request-Id header");
        return;
    }
    rt->next_failures = 0;
    call = pm_xcalloc(1, sizeof *call);
    call->l = rt->l;
    call->request_id = pm_xstrdup(id);
    deadline = pm_httpc_res_header(res, "Lambda-Runtime-Deadline-Ms");
    call->deadline_ms = deadline != NULL ? strtoull(deadline, NULL, 10) : 0;
    if (call->deadline_ms == 0) /* absent: the API Gateway cap, 29 s */
        call->deadline_ms = pm_wall_ms() + 29000;
    trace = pm_httpc_res_header(res, "Lambda-Runtime-Trace-Id");
    if (trace != NULL && *trace != '\0') {
        call->trace_id = pm_xstrdup(trace);
        setenv("_X_AMZN_TRACE_ID", trace, 1);
    } else {
        unsetenv("_X_AMZN_TRACE_ID");
    }
    call->event = pm_xstrndup((const char *)res->body, res->body_len);
    call->event_len = res->body_len;
    rt->call = call;
    pm_log_kv(PM_LOG_DEBUG, "invocation", "invocation received", "request_id",
              call->request_id, "trace_id", call->trace_id, NULL);
    rt->l->handler->invoke(rt->l->hstate, call);
}

static void
next(struct lam_rt *rt)
{
    char *url = pm_xasprintf("%s/runtime/invocation/next", rt->base);
    struct pm_httpc_req req = {"GET", url, NULL, 0, NULL, 0, 0};
    char err[PM_ERRMSG_SIZE];

    if (pm_httpc_send(rt->http, &req, got_next, rt, err, sizeof err) != PM_OK) {
        pm_log(PM_LOG_ERROR, "runtime_api_failed", "%s", err);
        pm_server_exit(rt->l->srv, 1);
    }
    free(url);
}

void
lam_rt_start(struct lam_rt *rt)
{
    next(rt);
}
