/*
 * pm_roles: every role the binary knows, in one explicit table. A role is
 * added with one line here and its sources in Makefile.am; static
 * archives drop self-registering constructors, so there is no other way.
 */
#include "config.h"

#include <string.h>

#include "pm_roles.h"

extern const struct pm_role pm_role_signaling;
extern const struct pm_role pm_role_chat;
extern const struct pm_role pm_role_tunnel;
extern const struct pm_role pm_role_game;
extern const struct pm_role pm_role_lambda;

const struct pm_role *const pm_role_table[] = {
    &pm_role_signaling, &pm_role_chat,   &pm_role_tunnel,
    &pm_role_game,      &pm_role_lambda, NULL,
};

const struct pm_role *
pm_roles_find(const char *name)
{
    const struct pm_role *const *r;

    for (r = pm_role_table; *r != NULL; r++)
        if (strcmp((*r)->name, name) == 0)
            return *r;
    return NULL;
}
