/*
 * Role chat: registered so that --help lists it and --role=chat answers
 * clearly, but not built yet (init is NULL): the binary says "role chat is
 * not implemented yet" and exits 2 rather than run a fake server.
 */
#include "config.h"

#include "pm_role.h"

const struct pm_role pm_role_chat = {
    .abi = PM_ROLE_ABI,
    .name = "chat",
    .summary = "accounts, rooms, history, presence and RTMP live streams (not "
               "implemented yet)",
    .default_port = 3000,
};
