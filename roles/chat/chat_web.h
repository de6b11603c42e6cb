/*
 * chat_web: the web client's files as embedded at build time
 * (roles/embed_web.sh writes chat_web_assets.c), served with
 * pm_asset_route.
 */
#ifndef CHAT_WEB_H
#define CHAT_WEB_H

#include "pm_asset.h"

/* Terminated by an entry whose path is NULL. */
extern const struct pm_asset chat_assets[];

#endif
