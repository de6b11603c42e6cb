/*
 * Role game: registered so that --help lists it and --role=game answers
 * clearly, but not built yet (init is NULL): the binary says "role game is
 * not implemented yet" and exits 2 rather than run a fake server.
 */
#include "config.h"

#include "pm_role.h"

const struct pm_role pm_role_game = {
    .abi = PM_ROLE_ABI,
    .name = "game",
    .summary = "authoritative multiplayer Snake on a raft cluster (not "
               "implemented yet)",
    .default_port = 8080,
};
