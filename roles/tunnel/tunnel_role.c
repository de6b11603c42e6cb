/*
 * Role tunnel: registered so that --help lists it and --role=tunnel answers
 * clearly, but not built yet (init is NULL): the binary says "role tunnel is
 * not implemented yet" and exits 2 rather than run a fake server.
 */
#include "config.h"

#include "pm_role.h"

const struct pm_role pm_role_tunnel = {
    .abi = PM_ROLE_ABI,
    .name = "tunnel",
    .summary = "mTLS HTTPS proxy and local agent for HTTP, HTTPS and WebSocket "
               "(not implemented yet)",
    .default_port = 8443,
};
