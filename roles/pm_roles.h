/*
 * pm_roles: the one registration table of roles (tmux cmd_table style).
 */
#ifndef PM_ROLES_H
#define PM_ROLES_H

#include "pm_role.h"

/* NULL-terminated, in --help order. */
extern const struct pm_role *const pm_role_table[];

/* The role called name, or NULL. */
const struct pm_role *pm_roles_find(const char *name);

#endif
