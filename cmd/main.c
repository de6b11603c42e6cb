/*
 * p2pmesh: parse the command line, build the layered configuration, pick
 * the role from the table and hand over to the core. No logic of its own.
 * Exit status: 0 success, 1 runtime failure, 2 usage or configuration
 * error (always one line on stderr saying why); --probe exits 0 healthy
 * or 1 for anything else, as container health checks read it.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pm_config.h"
#include "pm_log.h"
#include "pm_probe.h"
#include "pm_roles.h"
#include "pm_server.h"
#include "pm_tls.h"
#include "pm_util.h"

extern char **environ;

static void
usage(FILE *out)
{
    const struct pm_role *const *r;

    fprintf(out,
            "usage: p2pmesh --role=ROLE [--config=FILE] [--key=value ...]\n"
            "       p2pmesh --role=ROLE --print-config | --check-config\n"
            "       p2pmesh --role=ROLE --probe[=/PATH]   (GET /health of "
            "the running server)\n"
            "       p2pmesh --help | --version\n\nroles:\n");
    for (r = pm_role_table; *r != NULL; r++)
        fprintf(out, "  %-10s %s\n", (*r)->name, (*r)->summary);
    fprintf(out, "\nThe role may also come from P2PMESH_ROLE. Keys are set by "
                 "--key=value flags,\nP2PMESH_KEY environment variables or "
                 "'key = value' lines in the config file\n(that order of "
                 "precedence); --print-config lists every key with its value\n"
                 "and where it came from. See README.md for the key table.\n");
}

static int __attribute__((format(printf, 1, 2))) fail(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "p2pmesh: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 2;
}

int
main(int argc, char **argv)
{
    const char *role_name = getenv("P2PMESH_ROLE");
    const char *probe = NULL;
    bool print = false, check = false;
    const struct pm_role *role;
    struct pm_core_conf conf;
    struct pm_config *cfg;
    struct pm_server *srv;
    void *role_conf;
    char err[PM_ERRMSG_SIZE];
    enum pm_log_level level;
    int i, rv;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("p2pmesh %s\n", pm_version);
            return 0;
        }
        if (strncmp(argv[i], "--role=", 7) == 0)
            role_name = argv[i] + 7;
        if (strcmp(argv[i], "--probe") == 0)
            probe = "/health";
        else if (strncmp(argv[i], "--probe=", 8) == 0)
            probe = argv[i] + 8;
        print |= strcmp(argv[i], "--print-config") == 0;
        check |= strcmp(argv[i], "--check-config") == 0;
    }
    if (role_name == NULL || *role_name == '\0')
        return fail("no role given: use --role=%s or set P2PMESH_ROLE "
                    "(see --help)",
                    "signaling|chat|tunnel|game|lambda");
    role = pm_roles_find(role_name);
    if (role == NULL)
        return fail("unknown role '%s' (roles: signaling, chat, tunnel, "
                    "game, lambda)",
                    role_name);
    if (role->abi != PM_ROLE_ABI)
        return fail("role %s was built for another role ABI", role->name);

    memset(&conf, 0, sizeof conf);
    role_conf = pm_xcalloc(1, role->conf_size + 1);
    cfg = pm_server_config_new(&conf, role, role_conf);
    if (pm_config_load(cfg, argc, argv, environ, err, sizeof err) != PM_OK ||
        pm_server_conf_check(&conf, err, sizeof err) != PM_OK ||
        (role->validate != NULL &&
         role->validate(role_conf, err, sizeof err) != PM_OK)) {
        rv = fail("%s", err);
        goto out;
    }
    if (probe != NULL) {
        rv = pm_probe_run(role, cfg, &conf, role_conf, probe, err, sizeof err);
        if (rv == PM_OK || rv == PM_ENOTFOUND)
            printf("p2pmesh: %s%s\n", rv == PM_OK ? "healthy: " : "", err);
        else
            fprintf(stderr, "p2pmesh: unhealthy: %s\n", err);
        /* Docker's HEALTHCHECK reads 0 healthy, 1 unhealthy (2 is
         * reserved) */
        rv = rv == PM_OK || rv == PM_ENOTFOUND ? 0 : 1;
        goto out;
    }
    if (!print && !check && role->command != NULL &&
        (rv = role->command(role_conf, stdout, err, sizeof err)) !=
            PM_ENOTFOUND) {
        rv = rv == PM_OK ? 0 : fail("%s", err);
        goto out;
    }
    if (print) {
        pm_config_print(cfg, stdout);
        rv = 0;
        goto out;
    }
    if (check) {
        struct pm_tls_conf tc = pm_server_tls_conf(&conf);
        struct pm_tls *tls = NULL;

        if (pm_tls_wanted(&tc) &&
            (tls = pm_tls_new(&tc, err, sizeof err)) == NULL) {
            rv = fail("%s", err);
            goto out;
        }
        pm_tls_free(tls);
        printf("p2pmesh: configuration for role %s is valid\n", role->name);
        rv = 0;
        goto out;
    }
    pm_log_level_parse(conf.log_level, &level);
    pm_log_setup(role->name, level, strcmp(conf.log_format, "json") == 0);
    pm_log_bridge_libevent();
    if (pm_config_warnings(cfg) != NULL)
        pm_log(PM_LOG_WARN, "config_warning", "%s", pm_config_warnings(cfg));
    srv =
        pm_server_new(role, argc, argv, cfg, &conf, role_conf, err, sizeof err);
    if (srv == NULL) {
        rv = fail("%s", err);
        goto out;
    }
    err[0] = '\0';
    rv = pm_server_run(srv, err, sizeof err);
    if (rv == 2)
        fail("%s", err);
    pm_server_free(srv);
out:
    pm_config_free(cfg);
    free(role_conf);
    return probe != NULL && rv != 0 ? 1 : rv;
}
