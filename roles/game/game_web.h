/*
 * game_web: the web client's files as embedded at build time
 * (roles/embed_web.sh writes game_web_assets.c), served with
 * pm_asset_route.
 */
#ifndef GAME_WEB_H
#define GAME_WEB_H

#include "pm_asset.h"

/* Terminated by an entry whose path is NULL. */
extern const struct pm_asset game_assets[];

#endif
