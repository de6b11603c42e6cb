#!/usr/bin/env bash
# run.sh: benchmark p2pmesh against its signaling peers, side by side, in one
# run on this machine (method and results: docs/benchmarks.md).
#
#   tests/bench/run.sh
#
# For each server on a fresh process pinned to SERVER_CPU, with pm-loadgen
# pinned to CLIENT_CPU:
#   p2pmesh          p2pmesh, its own dialect
#   node-ws-relay    a minimal Node ws relay of the p2pmesh dialect
#   peerjs           PeerJS server (npm peer)
#   p2pmesh-peerjs   p2pmesh speaking the PeerJS dialect
#   ywebrtc-server   the y-webrtc signaling server (npm y-webrtc bin/server.js)
#   p2pmesh-ywebrtc  p2pmesh speaking the y-webrtc dialect
#   p2pmesh-cluster  two p2pmesh instances sharing a private redis-server
#                    (cluster mode), A side of every pair on instance 1, B
#                    side on instance 2: every relay crosses Redis. All
#                    three processes on SERVER_CPU (see docs/benchmarks.md);
#                    server CPU = both p2pmesh processes, Redis apart.
#   p2pmesh-cluster-ywebrtc  the same in the y-webrtc dialect (not default)
# A server that fails a 1-second relay probe is skipped and listed as such
# (e.g. p2pmesh-peerjs while p2pmesh has no PeerJS dialect).
#   (a) throughput: closed loop, PAIRS relay pairs, DURATION s
#       -> relayed messages per server CPU-second
#   (b) latency at equal load: open loop at LAT_FRACTION of the weakest
#       single-process server's capacity from (a), the same rate for every
#       one of them -> p50/p99; then cross-instance vs same-instance: each
#       cluster kind and its single-instance twin at CLUSTER_RATE
#   (c) memory: IDLE_CONNS idle upgraded (and joined) connections
#       -> server RSS growth per connection (not for cluster kinds)
# Raw JSON lines go to tests/bench/results/<stamp>/ (gitignored); a markdown
# summary is printed and saved there as summary.md.
#
# Environment (defaults in brackets):
#   PM_BIN [<repo>/p2pmesh]   SERVERS ["p2pmesh node-ws-relay peerjs
#   p2pmesh-peerjs ywebrtc-server p2pmesh-ywebrtc p2pmesh-cluster"]
#   CLUSTER_RATE [5000: msgs/s of the cross-instance latency comparison]
#   CLUSTER_B_CPU, REDIS_CPU [SERVER_CPU: pinning of instance 2 and Redis]
#   CLUSTER_START_DELAY [0.5 s: traffic held back after setup in cluster
#                        runs while joins and topic interest cross Redis]
#   REDIS_SERVER [redis-server]
#   PAIRS [100] DURATION [10] WARMUP [3] SIZE [200]
#   WINDOWS ["1 4": closed-loop messages in flight per pair; the first is
#            the headline, 4 models bursts such as trickled ICE candidates]
#   ROUNDS [2: (a) and (b) are repeated, servers interleaved; best kept]
#   BASE_PORT..BASE_PORT+8 are used (cluster: +6, +7, Redis +8)
#   LAT_FRACTION [0.5] LAT_RATE [from (a)] LAT_SPIN [1: client busy-polls]
#   IDLE_CONNS [10000] SETTLE [10]
#   IDLE_BARE [1: also idle without join (or subscribe) for p2pmesh- and
#              y-webrtc-dialect servers]
#   ROOM_SIZE [100: idle p2pmesh-dialect peers join rooms of this size,
#              y-webrtc peers subscribe to topics of this size]
#   SERVER_CPU [0] CLIENT_CPU [1] BASE_PORT [18600]
#   QUIET_MAX [15: % busy tolerated before starting] QUIET_WAIT [300 s]
#   QUIET_EACH [60 s: the same wait, at most this long, before every measurement]
#   PERF [auto: perf record of p2pmesh under closed-loop load if perf works]
#   PHASES ["throughput latency idle joins"; joins: JOIN_CONNS [10000]
#           peers joining one room; "latency" includes the cross-instance
#           comparison]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

PM_BIN=${PM_BIN:-$repo/p2pmesh}
SERVERS=${SERVERS:-"p2pmesh node-ws-relay peerjs p2pmesh-peerjs ywebrtc-server p2pmesh-ywebrtc p2pmesh-cluster"}
PAIRS=${PAIRS:-100}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
SIZE=${SIZE:-200}
WINDOWS=${WINDOWS:-"1 4"}
ROUNDS=${ROUNDS:-2}
LAT_SPIN=${LAT_SPIN:-1}
LAT_FRACTION=${LAT_FRACTION:-0.5}
LAT_RATE=${LAT_RATE:-}
IDLE_CONNS=${IDLE_CONNS:-10000}
SETTLE=${SETTLE:-10}
IDLE_BARE=${IDLE_BARE:-1}
ROOM_SIZE=${ROOM_SIZE:-100}
JOIN_CONNS=${JOIN_CONNS:-10000}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
CLUSTER_RATE=${CLUSTER_RATE:-5000}
CLUSTER_B_CPU=${CLUSTER_B_CPU:-$SERVER_CPU}
REDIS_CPU=${REDIS_CPU:-$SERVER_CPU}
CLUSTER_START_DELAY=${CLUSTER_START_DELAY:-0.5}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
BASE_PORT=${BASE_PORT:-18600}
QUIET_MAX=${QUIET_MAX:-15}
QUIET_WAIT=${QUIET_WAIT:-300}
QUIET_EACH=${QUIET_EACH:-60}
PERF=${PERF:-auto}
PHASES=${PHASES:-"throughput latency idle joins"}
NODE=${NODE:-node}

loadgen=$here/pm-loadgen
stamp=$(date +%Y%m%d-%H%M%S)
out=$here/results/$stamp
mkdir -p "$out"

log() { printf '[run.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# ---------------------------------------------------------------- build
build_loadgen() {
    local cc=${CC:-cc} flags
    flags=$(pkg-config --cflags --libs libevent openssl) ||
        die "pkg-config cannot find libevent or openssl"
    local src
    for src in "$here/pm-loadgen.c" "$here/lg_common.c" "$here/lg_common.h"; do
        if [ "$src" -nt "$loadgen" ]; then rm -f "$loadgen"; fi
    done
    if [ ! -x "$loadgen" ]; then
        log "building pm-loadgen"
        # shellcheck disable=SC2086 # flags is a word list
        "$cc" -O2 -Wall -o "$loadgen" "$here/pm-loadgen.c" "$here/lg_common.c" \
            $flags
    fi
}

# ---------------------------------------------------------------- machine
# Busy percentage of the whole machine over a 2 s sample.
machine_busy_pct() {
    local a b
    read -r -a a < <(head -n1 /proc/stat)
    sleep 2
    read -r -a b < <(head -n1 /proc/stat)
    local i tot=0 idle
    for i in 1 2 3 4 5 6 7 8; do
        tot=$((tot + b[i] - a[i]))
    done
    idle=$((b[4] - a[4] + b[5] - a[5]))
    if [ "$tot" -le 0 ]; then
        echo 0
    else
        echo $((100 * (tot - idle) / tot))
    fi
}

wait_quiet() { # [max seconds to wait]
    local waited=0 busy limit=${1:-$QUIET_WAIT}
    busy=$(machine_busy_pct)
    while [ "$busy" -gt "$QUIET_MAX" ] && [ "$waited" -lt "$limit" ]; do
        log "machine ${busy}% busy with other work; waiting for it to calm down"
        sleep 8
        waited=$((waited + 10))
        busy=$(machine_busy_pct)
    done
    if [ "$busy" -gt "$QUIET_MAX" ]; then
        log "warning: still ${busy}% busy after ${limit}s; results will be noisy"
    fi
    echo "$busy"
}

# ---------------------------------------------------------------- servers
port_of() {
    case $1 in
    p2pmesh) echo "$BASE_PORT" ;;
    node-ws-relay) echo $((BASE_PORT + 1)) ;;
    peerjs) echo $((BASE_PORT + 2)) ;;
    p2pmesh-peerjs) echo $((BASE_PORT + 3)) ;;
    ywebrtc-server) echo $((BASE_PORT + 4)) ;;
    p2pmesh-ywebrtc) echo $((BASE_PORT + 5)) ;;
    # instance 1; instance 2 is +7, redis-server +8
    p2pmesh-cluster | p2pmesh-cluster-ywebrtc) echo $((BASE_PORT + 6)) ;;
    *) die "unknown server $1" ;;
    esac
}
cluster_port_b() { echo $((BASE_PORT + 7)); }
redis_port() { echo $((BASE_PORT + 8)); }

dialect_of() {
    case $1 in
    p2pmesh | node-ws-relay | p2pmesh-cluster) echo p2pmesh ;;
    peerjs | p2pmesh-peerjs) echo peerjs ;;
    ywebrtc-server | p2pmesh-ywebrtc | p2pmesh-cluster-ywebrtc) echo ywebrtc ;;
    esac
}

is_cluster() { [[ $1 == p2pmesh-cluster* ]]; }

# The single-instance server a cluster kind is compared with.
twin_of() {
    case $1 in
    p2pmesh-cluster) echo p2pmesh ;;
    p2pmesh-cluster-ywebrtc) echo p2pmesh-ywebrtc ;;
    esac
}

is_p2pmesh() { [[ $1 == p2pmesh* ]]; }

# Processes of the running server: server_pid (the one measured, instance
# 1 in cluster kinds), server_pid_b (cluster instance 2), aux_pid (Redis).
server_pid=""
server_pid_b=""
aux_pid=""

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# GET a loopback URL path, body on stdout (curl if there, else bash).
http_get() { # port path
    if command -v curl >/dev/null; then
        curl -s -m 2 "http://127.0.0.1:$1$2" || true
    else
        (
            exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 0
            printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
            timeout 2 cat <&3 || true
        ) 2>/dev/null
    fi
}

p2pmesh_flags() { # port
    printf '%s\n' --role=signaling --addr=127.0.0.1 --port="$1" --log.level=warn \
        --limits.per_ip_connections=0 --limits.per_ip_rate=0/1s \
        --limits.per_conn_rate=0/1s --limits.max_connections=20000
}

wait_port() { # port pid -> 0 once the port accepts, 1 if pid died or 10 s
    local i
    for i in $(seq 1 100); do
        if port_open "$1"; then
            return 0
        fi
        if ! kill -0 "$2" 2>/dev/null; then
            return 1
        fi
        sleep 0.1
        : "$i"
    done
    return 1
}

# Both cluster instances have heard each other on the events channel.
wait_cluster() { # port_a port_b
    local i p n ok
    for i in $(seq 1 100); do
        ok=1
        for p in "$1" "$2"; do
            n=$(http_get "$p" /metrics |
                awk '$1 == "p2pmesh_signaling_cluster_instances" {print $2}')
            [ "${n:-0}" -ge 1 ] 2>/dev/null || ok=0
        done
        [ "$ok" = 1 ] && return 0
        sleep 0.1
        : "$i"
    done
    return 1
}

start_cluster() { # name logfile
    local name=$1 logf=$2 pa pb pr
    pa=$(port_of "$name")
    pb=$(cluster_port_b)
    pr=$(redis_port)
    for p in "$pb" "$pr"; do
        if port_open "$p"; then
            die "port $p is already in use (set BASE_PORT)"
        fi
    done
    mkdir -p "$out/redis"
    # private, empty, no persistence, loopback only
    taskset -c "$REDIS_CPU" "$REDIS_SERVER" --port "$pr" --bind 127.0.0.1 \
        --save "" --appendonly no --dir "$out/redis" \
        --logfile "$out/redis/redis.log" >>"$logf" 2>&1 &
    aux_pid=$!
    if ! wait_port "$pr" "$aux_pid"; then
        log "redis-server did not start; see $out/redis/redis.log"
        return 1
    fi
    local -a fa fb
    mapfile -t fa < <(p2pmesh_flags "$pa")
    mapfile -t fb < <(p2pmesh_flags "$pb")
    taskset -c "$SERVER_CPU" "$PM_BIN" "${fa[@]}" \
        --redis.url="redis://127.0.0.1:$pr" >>"$logf" 2>&1 &
    server_pid=$!
    taskset -c "$CLUSTER_B_CPU" "$PM_BIN" "${fb[@]}" \
        --redis.url="redis://127.0.0.1:$pr" >>"$out/$name.b.server.log" 2>&1 &
    server_pid_b=$!
    wait_port "$pa" "$server_pid" && wait_port "$pb" "$server_pid_b" &&
        wait_cluster "$pa" "$pb"
}

start_server() {
    local name=$1 port
    port=$(port_of "$name")
    if port_open "$port"; then
        die "port $port is already in use (set BASE_PORT)"
    fi
    local logf=$out/$name.server.log
    local -a f
    case $name in
    p2pmesh | p2pmesh-ywebrtc)
        mapfile -t f < <(p2pmesh_flags "$port")
        taskset -c "$SERVER_CPU" "$PM_BIN" "${f[@]}" >>"$logf" 2>&1 &
        server_pid=$!
        ;;
    p2pmesh-peerjs)
        # the limits PeerJS server gets raised in peerjs-server.js, and
        # room for every idle PeerJS client in its one realm
        mapfile -t f < <(p2pmesh_flags "$port")
        taskset -c "$SERVER_CPU" "$PM_BIN" "${f[@]}" \
            --signaling.peerjs_concurrent_limit=100000 \
            --signaling.peerjs_alive_timeout=1h \
            --signaling.max_peers_per_realm=100000 >>"$logf" 2>&1 &
        server_pid=$!
        ;;
    node-ws-relay)
        taskset -c "$SERVER_CPU" "$NODE" "$here/node-ws-relay.js" "$port" \
            >>"$logf" 2>&1 &
        server_pid=$!
        ;;
    peerjs)
        taskset -c "$SERVER_CPU" "$NODE" "$here/peerjs-server.js" "$port" \
            >>"$logf" 2>&1 &
        server_pid=$!
        ;;
    ywebrtc-server)
        taskset -c "$SERVER_CPU" "$NODE" "$here/ywebrtc-server.mjs" "$port" \
            >>"$logf" 2>&1 &
        server_pid=$!
        ;;
    p2pmesh-cluster | p2pmesh-cluster-ywebrtc)
        if start_cluster "$name" "$logf"; then
            sleep 0.5
            return 0
        fi
        log "$name did not start (or its instances never heard each other); its logs:"
        tail -n 20 "$logf" "$out/$name.b.server.log" >&2 || true
        stop_server
        return 1
        ;;
    esac
    if wait_port "$port" "$server_pid"; then
        sleep 0.5 # let it finish starting before it is measured
        return 0
    fi
    log "$name did not start; its log:"
    tail -n 20 "$logf" >&2 || true
    stop_server
    return 1
}

stop_pid() { # pid: TERM, up to 5 s, then KILL; reaped
    local pid=$1 i
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
            : "$i"
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "process $pid ignored SIGTERM; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

stop_server() {
    # the p2pmesh instances first, then the Redis they use
    stop_pid "$server_pid"
    stop_pid "$server_pid_b"
    stop_pid "$aux_pid"
    server_pid=""
    server_pid_b=""
    aux_pid=""
}
trap stop_server EXIT
trap 'stop_server; exit 130' INT TERM

# pm-loadgen arguments that address the running server $1 and account its
# CPU (cluster kinds: B sides on instance 2, both instances' CPU, Redis's
# CPU apart, traffic held back until remote joins are known).
target_args() {
    local s=$1
    targs=(--port "$(port_of "$s")" --dialect "$(dialect_of "$s")")
    [ -n "$server_pid" ] && targs+=(--pid "$server_pid")
    if is_cluster "$s"; then
        targs+=(--port-b "$(cluster_port_b)" --start-delay "$CLUSTER_START_DELAY")
        [ -n "$server_pid_b" ] && targs+=(--pid-b "$server_pid_b")
        [ -n "$aux_pid" ] && targs+=(--aux-pid "$aux_pid")
    fi
    return 0
}

# Run pm-loadgen pinned to CLIENT_CPU; JSON line to $1, diagnostics to $1.err
run_loadgen() {
    local dest=$1
    shift
    [ "${NO_GATE:-0}" = 1 ] || wait_quiet "$QUIET_EACH" >/dev/null
    if taskset -c "$CLIENT_CPU" "$loadgen" --json "$@" >"$dest" 2>"$dest.err"; then
        return 0
    fi
    log "pm-loadgen failed ($*); see $dest.err"
    tail -n 5 "$dest.err" >&2 || true
    return 1
}

json_num() { # file key -> number (first occurrence, top level keys only)
    "$NODE" -e 'const fs=require("fs");try{const o=JSON.parse(fs.readFileSync(process.argv[1],"utf8"));const v=o[process.argv[2]];process.stdout.write(v===undefined?"":String(v));}catch(e){}' "$1" "$2"
}

# ---------------------------------------------------------------- setup
build_loadgen
command -v "$NODE" >/dev/null || die "node not found"
[ -d "$repo/tests/node_modules/ws" ] || die "tests/node_modules missing: run tests/lib/deps.sh bench"

servers=""
skipped=()
skip() { # server reason
    log "skipping $1: $2"
    skipped+=("$("$NODE" -e 'process.stdout.write(JSON.stringify({server:process.argv[1],reason:process.argv[2]}))' "$1" "$2")")
}
for s in $SERVERS; do
    port_of "$s" >/dev/null
    if is_p2pmesh "$s" && [ ! -x "$PM_BIN" ]; then
        skip "$s" "$PM_BIN not found (build it or set PM_BIN)"
        continue
    fi
    if is_cluster "$s" && ! command -v "$REDIS_SERVER" >/dev/null; then
        skip "$s" "$REDIS_SERVER not found (tests/lib/deps.sh test installs it)"
        continue
    fi
    if [ "$s" = ywebrtc-server ] &&
        [ ! -f "$repo/tests/node_modules/y-webrtc/bin/server.js" ]; then
        skip "$s" "tests/node_modules/y-webrtc missing (tests/lib/deps.sh bench)"
        continue
    fi
    servers="$servers $s"
done
[ -n "$servers" ] || die "no server to benchmark"

# Freeze the p2pmesh binary for this run (a rebuild during the run must not
# mix versions); the copy also lets perf resolve its symbols afterwards.
p2pmesh_sum=none
if [ -x "$PM_BIN" ]; then
    cp "$PM_BIN" "$out/p2pmesh"
    PM_BIN=$out/p2pmesh
    p2pmesh_sum=$(sha256sum "$PM_BIN" | cut -c1-16)
fi

perf_ok=0
if [ "$PERF" != 0 ] && command -v perf >/dev/null &&
    perf stat -e cpu-clock true >/dev/null 2>&1; then
    perf_ok=1
fi

# A short relay probe: does this server speak the dialect at all? (p2pmesh
# gains dialects over time; one that is not there yet is skipped, not
# measured as zero.)
probe_server() {
    local s=$1
    start_server "$s" || return 1
    local ok=0 pf=$out/$s.probe.json
    target_args "$s"
    if NO_GATE=1 run_loadgen "$pf" --host 127.0.0.1 "${targs[@]}" --pairs 2 \
        --rate 200 --duration 1 --warmup 0.2 --join-timeout 1 --drain 1 &&
        [ "$(json_num "$pf" lost)" = 0 ] &&
        [ "$(json_num "$pf" server_errors)" = 0 ] &&
        [ "$(json_num "$pf" missing_clients)" = 0 ] &&
        [ "$(json_num "$pf" echo_lost)" = 0 ]; then
        ok=1
    fi
    stop_server
    [ "$ok" = 1 ]
}

checked=""
for s in $servers; do
    if probe_server "$s"; then
        checked="$checked $s"
    else
        why=$(grep -m1 -E 'server (says|closed)|upgrade refused|setup failed|did not' \
            "$out/$s.probe.json.err" 2>/dev/null | sed 's/^pm-loadgen: //' || true)
        skip "$s" "the relay probe failed${why:+: $why} (see $s.probe.json.err)"
    fi
done
servers=$checked
[ -n "$servers" ] || die "no server passed the relay probe"
printf '%s\n' "${skipped[@]}" >"$out/skipped.jsonl"

# single-process servers, and the cluster kinds
single=""
clusters=""
for s in $servers; do
    if is_cluster "$s"; then
        clusters="$clusters $s"
    else
        single="$single $s"
    fi
done

log "results in $out"
busy=$(wait_quiet)
pkgver() { # npm package -> version
    "$NODE" -p 'require(process.argv[1]+"/tests/node_modules/"+process.argv[2]+"/package.json").version' \
        "$repo" "$1" 2>/dev/null || echo none
}
{
    printf '{"stamp":"%s","kernel":"%s","cpu":"%s","cpus":%s,' \
        "$stamp" "$(uname -r)" \
        "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" \
        "$(nproc)"
    printf '"node":"%s","ws":"%s","peer":"%s","y_webrtc":"%s","libevent":"%s",' \
        "$("$NODE" --version)" "$(pkgver ws)" "$(pkgver peer)" "$(pkgver y-webrtc)" \
        "$(pkg-config --modversion libevent)"
    printf '"redis":"%s",' \
        "$( (command -v "$REDIS_SERVER" >/dev/null && "$REDIS_SERVER" --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') || echo none)"
    printf '"p2pmesh_sha256":"%s",' "$p2pmesh_sum"
    printf '"p2pmesh":"%s","git":"%s","busy_before_pct":%s,' \
        "$( ([ -x "$PM_BIN" ] && "$PM_BIN" --version 2>&1 | head -n1) || echo none)" \
        "$(git -C "$repo" describe --always --dirty 2>/dev/null || echo none)" "$busy"
    printf '"servers":"%s","pairs":%s,"duration":%s,"warmup":%s,"size":%s,"windows":"%s","rounds":%s,' \
        "${servers# }" "$PAIRS" "$DURATION" "$WARMUP" "$SIZE" "$WINDOWS" "$ROUNDS"
    printf '"cluster_rate":%s,"cluster_b_cpu":%s,"redis_cpu":%s,"cluster_start_delay":%s,' \
        "$CLUSTER_RATE" "$CLUSTER_B_CPU" "$REDIS_CPU" "$CLUSTER_START_DELAY"
    printf '"idle_conns":%s,"settle":%s,"room_size":%s,"server_cpu":%s,"client_cpu":%s}\n' \
        "$IDLE_CONNS" "$SETTLE" "$ROOM_SIZE" "$SERVER_CPU" "$CLIENT_CPU"
} >"$out/env.json"

common=(--host 127.0.0.1 --pairs "$PAIRS" --duration "$DURATION"
    --warmup "$WARMUP" --size "$SIZE")

# ---------------------------------------------------------------- (a)
# Each round visits every server in turn, so interference from other work
# on the machine spreads over all of them; report.js keeps the best round.
primary_window=${WINDOWS%% *}
if [[ " $PHASES " == *" throughput "* ]]; then
    for r in $(seq 1 "$ROUNDS"); do
        for s in $servers; do
            start_server "$s" || continue
            target_args "$s"
            for w in $WINDOWS; do
                log "(a) throughput, round $r, window $w: $s"
                run_loadgen "$out/$s.tp-w$w.r$r.json" "${common[@]}" \
                    "${targs[@]}" --rate 0 --window "$w" || true
            done
            if [ "$s" = p2pmesh ] && [ "$r" = 1 ] && [ "$perf_ok" = 1 ]; then
                log "(a) perf profile of p2pmesh, window $primary_window"
                wait_quiet "$QUIET_EACH" >/dev/null
                perf record -e cpu-clock -F 1999 -g -p "$server_pid" \
                    -o "$out/p2pmesh.perf.data" -- sleep "$DURATION" \
                    >/dev/null 2>"$out/p2pmesh.perf.err" &
                perf_pid=$!
                NO_GATE=1 run_loadgen "$out/p2pmesh.perf-run.json" "${common[@]}" \
                    "${targs[@]}" --rate 0 --window "$primary_window" || true
                wait "$perf_pid" || true
                perf report -i "$out/p2pmesh.perf.data" --stdio --no-children \
                    --sort dso,symbol -g none --percent-limit 0.5 \
                    >"$out/p2pmesh.perf.txt" 2>/dev/null || true
                perf report -i "$out/p2pmesh.perf.data" --stdio --children \
                    --sort symbol -g none --percent-limit 2 \
                    >"$out/p2pmesh.perf-children.txt" 2>/dev/null || true
            fi
            stop_server
        done
    done
fi

# ---------------------------------------------------------------- (b)
if [[ " $PHASES " == *" latency "* ]] && [ -n "$single" ]; then
    if [ -z "$LAT_RATE" ]; then
        # a server's capacity = relayed msgs per server CPU-second (one core
        # fully busy), best round; the latency rate is a fraction of the
        # weakest single-process server's capacity
        read -r -a server_list <<<"$single"
        cap=$("$NODE" "$here/report.js" --capacity "$out" "$primary_window" \
            "${server_list[@]}")
        [ -n "$cap" ] || die "no throughput result to derive the latency rate from (set LAT_RATE)"
        LAT_RATE=$("$NODE" -e 'process.stdout.write(String(Math.max(100,Math.round(Number(process.argv[1])*Number(process.argv[2])/100)*100)))' "$cap" "$LAT_FRACTION")
        log "(b) weakest capacity ${cap} msgs/CPU-s -> latency rate ${LAT_RATE} msgs/s"
    fi
    echo "{\"lat_rate\":$LAT_RATE,\"lat_fraction\":$LAT_FRACTION,\"spin\":$LAT_SPIN}" >"$out/latency-rate.json"
    spin=()
    [ "$LAT_SPIN" = 1 ] && spin=(--spin)
    for r in $(seq 1 "$ROUNDS"); do
        for s in $single; do
            log "(b) latency at $LAT_RATE msgs/s, round $r: $s"
            start_server "$s" || continue
            target_args "$s"
            run_loadgen "$out/$s.lat.r$r.json" "${common[@]}" "${targs[@]}" \
                --rate "$LAT_RATE" "${spin[@]}" || true
            stop_server
        done
    done
fi

# Cross-instance relay through Redis vs the same relay inside one
# instance, at the same fixed rate (CLUSTER_RATE, the issue's 5000 msgs/s):
# each cluster kind, then its single-instance twin, in every round.
if [[ " $PHASES " == *" latency "* ]] && [ -n "$clusters" ]; then
    spin=()
    [ "$LAT_SPIN" = 1 ] && spin=(--spin)
    for r in $(seq 1 "$ROUNDS"); do
        for c in $clusters; do
            for s in "$c" "$(twin_of "$c")"; do
                [[ " $servers " == *" $s "* ]] || continue
                log "(b) cross-instance comparison at $CLUSTER_RATE msgs/s, round $r: $s"
                start_server "$s" || continue
                target_args "$s"
                run_loadgen "$out/$s.xlat.r$r.json" "${common[@]}" "${targs[@]}" \
                    --rate "$CLUSTER_RATE" "${spin[@]}" || true
                stop_server
            done
        done
    done
fi

# ---------------------------------------------------------------- (c)
if [[ " $PHASES " == *" idle "* ]]; then
    for s in $single; do
        log "(c) $IDLE_CONNS idle connections: $s"
        start_server "$s" || continue
        sleep 2
        target_args "$s"
        run_loadgen "$out/$s.idle.json" --host 127.0.0.1 --room-size "$ROOM_SIZE" \
            "${targs[@]}" --idle "$IDLE_CONNS" --settle "$SETTLE" || true
        stop_server
        if [ "$IDLE_BARE" = 1 ] && [ "$(dialect_of "$s")" != peerjs ]; then
            log "(c) $IDLE_CONNS idle connections, upgraded only (no join): $s"
            start_server "$s" || continue
            sleep 2
            target_args "$s"
            run_loadgen "$out/$s.idle-bare.json" --host 127.0.0.1 \
                "${targs[@]}" --no-join --idle "$IDLE_CONNS" \
                --settle "$SETTLE" || true
            stop_server
        fi
    done
fi

# ---------------------------------------------------------------- joins
# Optional (PHASES="... joins"): JOIN_CONNS peers joining ONE room, the
# connect-storm cost of bootstrap lists and announcements in a big realm.
if [[ " $PHASES " == *" joins "* ]]; then
    for s in $single; do
        [ "$(dialect_of "$s")" = p2pmesh ] || continue
        log "(joins) $JOIN_CONNS peers joining one room: $s"
        start_server "$s" || continue
        sleep 1
        target_args "$s"
        run_loadgen "$out/$s.joins.json" --host 127.0.0.1 "${targs[@]}" \
            --room-size 0 --idle "$JOIN_CONNS" --settle 1 --setup-timeout 120 ||
            true
        stop_server
    done
fi

echo "{\"busy_after_pct\":$(machine_busy_pct)}" >"$out/env-after.json"
"$NODE" "$here/report.js" "$out" | tee "$out/summary.md"
log "done: $out"
