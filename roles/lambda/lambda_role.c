/*
 * Role lambda: the binary as an AWS Lambda custom runtime (the zip's
 * bootstrap). It opens no listener: it pulls invocations from the Runtime
 * API and hands them to the handler lambda.handler (else $_HANDLER, else
 * signaling) names. This file is the role descriptor, its keys (the
 * signaling.* keys of the dialect come as base keys) and the handler
 * table.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "lambda.h"
#include "pm_log.h"
#include "pm_role.h"
#include "pm_server.h"
#include "pm_util.h"

#define OFF(f) offsetof(struct lam_conf, f)

static const struct pm_conf_key lam_keys[] = {
    {"lambda.handler", PM_CONF_STRING, OFF(handler), NULL, 0, 0, NULL,
     "handler to run (default: $_HANDLER, else signaling)"},
    {"lambda.runtime_api", PM_CONF_STRING, OFF(runtime_api), NULL, 0, 0, NULL,
     "host:port of the Lambda Runtime API (AWS_LAMBDA_RUNTIME_API)"},
    {"lambda.region", PM_CONF_STRING, OFF(region), NULL, 0, 0, NULL,
     "AWS region for signing (AWS_REGION)"},
    {"signaling.apigw_endpoint", PM_CONF_STRING, OFF(apigw_endpoint), NULL, 0,
     0, NULL,
     "API Gateway Management API base URL (default "
     "https://{domainName}/{stage} of each event)"},
    {"lambda.dynamodb_table", PM_CONF_STRING, OFF(dynamodb_table), NULL, 0, 0,
     NULL, "DynamoDB connection table (else redis.url is the store)"},
    {"lambda.dynamodb_index", PM_CONF_STRING, OFF(dynamodb_index),
     "realm-index", 0, 0, NULL,
     "DynamoDB GSI on (realm, peerId) used to list a realm"},
    {"lambda.dynamodb_endpoint", PM_CONF_STRING, OFF(dynamodb_endpoint), NULL,
     0, 0, NULL,
     "DynamoDB endpoint URL (default https://dynamodb.{region}.amazonaws.com)"},
    {"lambda.connection_ttl", PM_CONF_DURATION, OFF(connection_ttl), "660s",
     10000, 86400000, NULL,
     "lifetime of a connection's store entry, refreshed by every message"},
    {"lambda.aws_timeout", PM_CONF_DURATION, OFF(aws_timeout), "5s", 100, 60000,
     NULL, "timeout of one AWS call (the deadline cuts it shorter)"},
    {NULL, 0, 0, NULL, 0, 0, NULL, NULL},
};

/* The Lambda environment and the seed deployment's names. */
static const struct pm_conf_alias lam_aliases[] = {
    {"AWS_LAMBDA_RUNTIME_API", "lambda.runtime_api", NULL, NULL},
    {"REGION", "lambda.region", NULL, NULL},
    {"AWS_REGION", "lambda.region", NULL, NULL},
    {"CONNECTIONS_TABLE", "lambda.dynamodb_table", NULL, NULL},
    {"JWT_SECRET", "jwt.secret", NULL, NULL},
    {NULL, NULL, NULL, NULL},
};

static const struct lam_handler *const handlers[] = {
    &lam_handler_signaling,
    NULL,
};

static const struct lam_handler *
handler_find(const char *name)
{
    const struct lam_handler *const *h;

    for (h = handlers; *h != NULL; h++)
        if (strcmp((*h)->name, name) == 0)
            return *h;
    return NULL;
}

static void lam_destroy(void *state);

static int
lam_init(struct pm_server *srv, const void *conf, void **state, char *err,
         size_t errlen)
{
    struct lam *l = pm_xcalloc(1, sizeof *l);
    const char *h;

    l->srv = srv;
    l->conf = conf;
    h = l->conf->handler;
    if (h == NULL || *h == '\0')
        h = getenv("_HANDLER");
    l->handler_name = h != NULL && *h != '\0' ? h : "signaling";
    l->rt = lam_rt_new(l, err, errlen);
    if (l->rt == NULL) {
        lam_destroy(l);
        return PM_EINVAL;
    }
    *state = l;
    return PM_OK;
}

/* Everything that can fail at init is reported to /runtime/init/error. */
static int
lam_start(void *state, char *err, size_t errlen)
{
    struct lam *l = state;
    char e[PM_ERRMSG_SIZE], list[256] = "";
    const struct lam_handler *const *h;

    (void)err;
    (void)errlen;
    l->handler = handler_find(l->handler_name);
    if (l->handler == NULL) {
        for (h = handlers; *h != NULL; h++) {
            if (list[0] != '\0')
                strncat(list, ", ", sizeof list - strlen(list) - 1);
            strncat(list, (*h)->name, sizeof list - strlen(list) - 1);
        }
        snprintf(e, sizeof e, "no handler '%s' (handlers: %s)", l->handler_name,
                 list);
        lam_rt_init_error(l->rt, "Runtime.NoSuchHandler", e);
        return PM_OK;
    }
    if (l->handler->init(l, &l->hstate, e, sizeof e) != PM_OK) {
        l->handler = NULL;
        lam_rt_init_error(l->rt, "Runtime.ConfigInvalid", e);
        return PM_OK;
    }
    pm_log_kv(PM_LOG_INFO, "runtime_started", "waiting for invocations",
              "handler", l->handler_name, NULL);
    lam_rt_start(l->rt);
    return PM_OK;
}

static void
lam_destroy(void *state)
{
    struct lam *l = state;

    if (l->handler != NULL)
        l->handler->destroy(l->hstate);
    lam_rt_free(l->rt);
    free(l);
}

const struct pm_role pm_role_lambda = {
    .abi = PM_ROLE_ABI,
    .name = "lambda",
    .summary = "signaling over API Gateway WebSocket as an AWS Lambda custom "
               "runtime (the bootstrap)",
    .default_port = 0,
    .conf_keys = lam_keys,
    .base_keys = sig_conf_keys,
    .conf_size = sizeof(struct lam_conf),
    .env_aliases = lam_aliases,
    .init = lam_init,
    .start = lam_start,
    .destroy = lam_destroy,
};
