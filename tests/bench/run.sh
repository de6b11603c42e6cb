#!/usr/bin/env bash
# run.sh: benchmark p2pmesh against its signaling peers, side by side, in one
# run on this machine (method and results: docs/benchmarks.md).
#
#   tests/bench/run.sh
#
# For each server (p2pmesh, a minimal Node ws relay, PeerJS server, and
# p2pmesh again speaking the PeerJS dialect) on a fresh process pinned to
# SERVER_CPU, with pm-loadgen pinned to CLIENT_CPU:
#   (a) throughput: closed loop, PAIRS relay pairs, DURATION s
#       -> relayed messages per server CPU-second
#   (b) latency at equal load: open loop at LAT_FRACTION of the weakest
#       server's capacity from (a), the same rate for every server -> p50/p99
#   (c) memory: IDLE_CONNS idle upgraded (and joined) connections
#       -> server RSS growth per connection
# Raw JSON lines go to tests/bench/results/<stamp>/ (gitignored); a markdown
# summary is printed and saved there as summary.md.
#
# Environment (defaults in brackets):
#   PM_BIN [<repo>/p2pmesh]   SERVERS ["p2pmesh node-ws-relay peerjs"; add
#   p2pmesh-peerjs once the PeerJS dialect exists]
#   PAIRS [100] DURATION [10] WARMUP [3] SIZE [200]
#   WINDOWS ["1 4": closed-loop messages in flight per pair; the first is
#            the headline, 4 models bursts such as trickled ICE candidates]
#   ROUNDS [2: (a) and (b) are repeated, servers interleaved; best kept]
#   LAT_FRACTION [0.5] LAT_RATE [from (a)] LAT_SPIN [1: client busy-polls]
#   IDLE_CONNS [10000] SETTLE [10]
#   IDLE_BARE [1: also idle without join for p2pmesh-dialect servers]
#   ROOM_SIZE [100: idle p2pmesh-dialect peers join rooms of this size]
#   SERVER_CPU [0] CLIENT_CPU [1] BASE_PORT [18600]
#   QUIET_MAX [15: % busy tolerated before starting] QUIET_WAIT [300 s]
#   QUIET_EACH [60 s: the same wait, at most this long, before every measurement]
#   PERF [auto: perf record of p2pmesh under closed-loop load if perf works]
#   PHASES ["throughput latency idle joins"; joins: JOIN_CONNS [10000]
#           peers joining one room]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

PM_BIN=${PM_BIN:-$repo/p2pmesh}
SERVERS=${SERVERS:-"p2pmesh node-ws-relay peerjs"}
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
    if [ ! -x "$loadgen" ] || [ "$here/pm-loadgen.c" -nt "$loadgen" ]; then
        log "building pm-loadgen"
        # shellcheck disable=SC2086 # flags is a word list
        "$cc" -O2 -Wall -o "$loadgen" "$here/pm-loadgen.c" $flags
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
    *) die "unknown server $1" ;;
    esac
}

dialect_of() {
    case $1 in
    p2pmesh | node-ws-relay) echo p2pmesh ;;
    peerjs | p2pmesh-peerjs) echo peerjs ;;
    esac
}

server_pid=""

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start_server() {
    local name=$1 port
    port=$(port_of "$name")
    if port_open "$port"; then
        die "port $port is already in use (set BASE_PORT)"
    fi
    local logf=$out/$name.server.log
    case $name in
    p2pmesh | p2pmesh-peerjs)
        taskset -c "$SERVER_CPU" "$PM_BIN" --role=signaling \
            --addr=127.0.0.1 --port="$port" --log.level=warn \
            --limits.per_ip_connections=0 --limits.per_ip_rate=0/1s \
            --limits.per_conn_rate=0/1s --limits.max_connections=20000 \
            >>"$logf" 2>&1 &
        ;;
    node-ws-relay)
        taskset -c "$SERVER_CPU" "$NODE" "$here/node-ws-relay.js" "$port" \
            >>"$logf" 2>&1 &
        ;;
    peerjs)
        taskset -c "$SERVER_CPU" "$NODE" "$here/peerjs-server.js" "$port" \
            >>"$logf" 2>&1 &
        ;;
    esac
    server_pid=$!
    local i
    for i in $(seq 1 100); do
        if port_open "$port"; then
            sleep 0.5 # let it finish starting before it is measured
            return 0
        fi
        if ! kill -0 "$server_pid" 2>/dev/null; then
            break
        fi
        sleep 0.1
        : "$i"
    done
    log "$name did not start; its log:"
    tail -n 20 "$logf" >&2 || true
    stop_server
    return 1
}

stop_server() {
    [ -n "$server_pid" ] || return 0
    if kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        local i
        for i in $(seq 1 50); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
            : "$i"
        done
        if kill -0 "$server_pid" 2>/dev/null; then
            log "server $server_pid ignored SIGTERM; killing it"
            kill -KILL "$server_pid" 2>/dev/null || true
        fi
    fi
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}
trap stop_server EXIT
trap 'stop_server; exit 130' INT TERM

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
for s in $SERVERS; do
    case $s in
    p2pmesh | p2pmesh-peerjs)
        if [ ! -x "$PM_BIN" ]; then
            log "skipping $s: $PM_BIN not found (build it or set PM_BIN)"
            continue
        fi
        ;;
    esac
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
    local ok=0
    if run_loadgen "$out/$s.probe.json" --host 127.0.0.1 \
        --port "$(port_of "$s")" --dialect "$(dialect_of "$s")" --pairs 2 \
        --rate 200 --duration 1 --warmup 0.2 --join-timeout 1 --drain 1 &&
        [ "$(json_num "$out/$s.probe.json" lost)" = 0 ] &&
        [ "$(json_num "$out/$s.probe.json" server_errors)" = 0 ]; then
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
        log "skipping $s: the relay probe failed (see $out/$s.probe.json.err)"
    fi
done
servers=$checked
[ -n "$servers" ] || die "no server passed the relay probe"

log "results in $out"
busy=$(wait_quiet)
{
    printf '{"stamp":"%s","kernel":"%s","cpu":"%s","cpus":%s,' \
        "$stamp" "$(uname -r)" \
        "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" \
        "$(nproc)"
    printf '"node":"%s","ws":"%s","peer":"%s","libevent":"%s",' \
        "$("$NODE" --version)" \
        "$("$NODE" -p 'require(process.argv[1]+"/tests/node_modules/ws/package.json").version' "$repo")" \
        "$("$NODE" -p 'require(process.argv[1]+"/tests/node_modules/peer/package.json").version' "$repo")" \
        "$(pkg-config --modversion libevent)"
    printf '"p2pmesh_sha256":"%s",' "$p2pmesh_sum"
    printf '"p2pmesh":"%s","git":"%s","busy_before_pct":%s,' \
        "$( ([ -x "$PM_BIN" ] && "$PM_BIN" --version 2>&1 | head -n1) || echo none)" \
        "$(git -C "$repo" describe --always --dirty 2>/dev/null || echo none)" "$busy"
    printf '"pairs":%s,"duration":%s,"warmup":%s,"size":%s,"windows":"%s","rounds":%s,' \
        "$PAIRS" "$DURATION" "$WARMUP" "$SIZE" "$WINDOWS" "$ROUNDS"
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
            for w in $WINDOWS; do
                log "(a) throughput, round $r, window $w: $s"
                run_loadgen "$out/$s.tp-w$w.r$r.json" "${common[@]}" \
                    --port "$(port_of "$s")" --dialect "$(dialect_of "$s")" \
                    --rate 0 --window "$w" --pid "$server_pid" || true
            done
            if [ "$s" = p2pmesh ] && [ "$r" = 1 ] && [ "$perf_ok" = 1 ]; then
                log "(a) perf profile of p2pmesh, window $primary_window"
                wait_quiet "$QUIET_EACH" >/dev/null
                perf record -e cpu-clock -F 1999 -g -p "$server_pid" \
                    -o "$out/p2pmesh.perf.data" -- sleep "$DURATION" \
                    >/dev/null 2>"$out/p2pmesh.perf.err" &
                perf_pid=$!
                NO_GATE=1 run_loadgen "$out/p2pmesh.perf-run.json" "${common[@]}" \
                    --port "$(port_of "$s")" --dialect p2pmesh --rate 0 \
                    --window "$primary_window" --pid "$server_pid" || true
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
if [[ " $PHASES " == *" latency "* ]]; then
    if [ -z "$LAT_RATE" ]; then
        # a server's capacity = relayed msgs per server CPU-second (one core
        # fully busy), best round; the latency rate is a fraction of the
        # weakest server's capacity
        read -r -a server_list <<<"$servers"
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
        for s in $servers; do
            log "(b) latency at $LAT_RATE msgs/s, round $r: $s"
            start_server "$s" || continue
            run_loadgen "$out/$s.lat.r$r.json" "${common[@]}" \
                --port "$(port_of "$s")" --dialect "$(dialect_of "$s")" \
                --rate "$LAT_RATE" --pid "$server_pid" "${spin[@]}" || true
            stop_server
        done
    done
fi

# ---------------------------------------------------------------- (c)
if [[ " $PHASES " == *" idle "* ]]; then
    for s in $servers; do
        log "(c) $IDLE_CONNS idle connections: $s"
        start_server "$s" || continue
        sleep 2
        run_loadgen "$out/$s.idle.json" --host 127.0.0.1 --room-size "$ROOM_SIZE" \
            --port "$(port_of "$s")" --dialect "$(dialect_of "$s")" \
            --idle "$IDLE_CONNS" --settle "$SETTLE" --pid "$server_pid" || true
        stop_server
        if [ "$IDLE_BARE" = 1 ] && [ "$(dialect_of "$s")" = p2pmesh ]; then
            log "(c) $IDLE_CONNS idle connections, upgraded only (no join): $s"
            start_server "$s" || continue
            sleep 2
            run_loadgen "$out/$s.idle-bare.json" --host 127.0.0.1 \
                --port "$(port_of "$s")" --dialect p2pmesh --no-join \
                --idle "$IDLE_CONNS" --settle "$SETTLE" --pid "$server_pid" || true
            stop_server
        fi
    done
fi

# ---------------------------------------------------------------- joins
# Optional (PHASES="... joins"): JOIN_CONNS peers joining ONE room, the
# connect-storm cost of bootstrap lists and announcements in a big realm.
if [[ " $PHASES " == *" joins "* ]]; then
    for s in $servers; do
        [ "$(dialect_of "$s")" = p2pmesh ] || continue
        log "(joins) $JOIN_CONNS peers joining one room: $s"
        start_server "$s" || continue
        sleep 1
        run_loadgen "$out/$s.joins.json" --host 127.0.0.1 \
            --port "$(port_of "$s")" --dialect p2pmesh --room-size 0 \
            --idle "$JOIN_CONNS" --settle 1 --setup-timeout 120 \
            --pid "$server_pid" || true
        stop_server
    done
fi

echo "{\"busy_after_pct\":$(machine_busy_pct)}" >"$out/env-after.json"
"$NODE" "$here/report.js" "$out" | tee "$out/summary.md"
log "done: $out"
