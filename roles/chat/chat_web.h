/*
 * chat_web: the web client's files as embedded at build time
 * (roles/chat/web/embed.sh writes chat_web_assets.c).
 */
#ifndef CHAT_WEB_H
#define CHAT_WEB_H

#include <stddef.h>

struct chat_asset {
    const char *path;
    const char *ctype;
    const unsigned char *data;
    size_t len;
};

/* Terminated by an entry whose path is NULL. */
extern const struct chat_asset chat_assets[];

#endif
