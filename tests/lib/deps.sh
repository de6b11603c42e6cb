#!/bin/sh
# deps.sh: install what p2pmesh needs on a Debian bookworm machine (run as root).
#
#   tests/lib/deps.sh build   compiler, autotools and the libraries (platform.md section 2)
#   tests/lib/deps.sh test    build + everything the test suite starts or drives
#   tests/lib/deps.sh bench   test + the peers the benchmarks compare against
#   tests/lib/deps.sh fuzz    test + clang and llvm for make fuzz (tests/fuzz/run.sh)
#
# Debian packages come from apt; JavaScript clients from the npm registry into
# tests/node_modules (tests/package.json pins them). Safe to run again.
set -eu

what=${1:-build}
here=$(cd "$(dirname "$0")/../.." && pwd)

build_pkgs="build-essential autoconf automake pkg-config libevent-dev libssl-dev
  libhiredis-dev libpq-dev libsqlite3-dev libcjson-dev libraft-dev libuv1-dev
  uthash-dev libcrypt-dev check curl ca-certificates"
test_pkgs="python3 python3-pytest python3-websockets python3-botocore python3-jwt
  openssl chromium nodejs npm zip binutils
  redis-server redis-tools postgresql nginx-light libnginx-mod-rtmp ffmpeg
  stunnel4 procps iproute2 util-linux
  podman runc netavark aardvark-dns iptables uidmap mmdebstrap podman-compose
  python3-yaml shellcheck systemd valgrind sslscan testssl.sh nftables"
bench_pkgs="linux-perf haproxy tinyproxy"
fuzz_pkgs="clang llvm"

case $what in
build) pkgs=$build_pkgs ;;
test) pkgs="$build_pkgs $test_pkgs" ;;
bench) pkgs="$build_pkgs $test_pkgs $bench_pkgs" ;;
fuzz) pkgs="$build_pkgs $test_pkgs $fuzz_pkgs" ;;
*)
    echo "usage: $0 build|test|bench|fuzz" >&2
    exit 2
    ;;
esac

missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
        missing="$missing $p"
done
# A machine that already has node and npm from elsewhere keeps them.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    missing=$(echo "$missing" | tr ' ' '\n' | grep -v -x -e nodejs -e npm | tr '\n' ' ')
fi
if [ -n "$(echo "$missing" | tr -d ' ')" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "deps.sh: missing packages:$missing (run as root to install them)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
fi

if [ "$what" != build ]; then
    # playwright-core (the Chromium driver of the e2e test) needs Node 20.
    major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
    if [ "$major" -lt 20 ]; then
        echo "deps.sh: Node.js $major found; the tests need Node.js 20 or newer" >&2
        exit 1
    fi
    cd "$here/tests"
    # Install exactly the locked versions when missing or out of date.
    if [ ! -d node_modules ] ||
        [ -n "$(find package.json package-lock.json -newer node_modules)" ]; then
        npm ci --no-audit --no-fund --loglevel=error
        touch node_modules
    fi
fi
