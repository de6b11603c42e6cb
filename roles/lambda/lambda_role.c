/*
 * Role lambda: registered so that --help lists it and --role=lambda answers
 * clearly, but not built yet (init is NULL): the binary says "role lambda is
 * not implemented yet" and exits 2 rather than run a fake server.
 */
#include "config.h"

#include "pm_role.h"

const struct pm_role pm_role_lambda = {
    .abi = PM_ROLE_ABI,
    .name = "lambda",
    .summary = "signaling over API Gateway WebSocket as a Lambda custom "
               "runtime (not implemented yet)",
    .default_port = 0,
};
