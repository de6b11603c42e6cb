#!/bin/sh
# run.sh: run the browser tests in a network namespace that has only
# loopback, so ICE never tries a real interface: the DataChannel test
# (datachannel.mjs, signaling), the chat web client (chat.mjs), the game
# client's model (game_model.mjs), the game web client (game.mjs) and
# Chromium's WebSocket client against the relay (websocket.mjs). All run;
# the first failure's exit code is kept.
# Needs root (unshare --net). Do apt/npm installs before: there is no network
# inside. Exit: 0 pass, 1 fail, 77 skip (no /usr/bin/chromium).
#
#   PM_BIN   server binary (default: <repo>/p2pmesh)
set -eu

dir=$(cd "$(dirname "$0")" && pwd)

if [ ! -x /usr/bin/chromium ]; then
    echo "SKIP: /usr/bin/chromium is missing (apt-get install chromium)"
    echo "0 passed, 0 failed, 1 skipped"
    exit 77
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "FAIL: run.sh needs root for unshare --net"
    echo "0 passed, 1 failed"
    exit 1
fi

export dir
# shellcheck disable=SC2016 # $dir expands in the inner shell
exec unshare --net sh -c 'ip link set lo up || exit 1; rc=0
node "$dir/datachannel.mjs" || rc=$?
node "$dir/chat.mjs" || { r=$?; [ "$rc" -eq 0 ] && rc=$r; }
node "$dir/game_model.mjs" || { r=$?; [ "$rc" -eq 0 ] && rc=$r; }
node "$dir/game.mjs" || { r=$?; [ "$rc" -eq 0 ] && rc=$r; }
node "$dir/websocket.mjs" || { r=$?; [ "$rc" -eq 0 ] && rc=$r; }
exit "$rc"'
