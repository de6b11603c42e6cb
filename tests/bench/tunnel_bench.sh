#!/usr/bin/env bash
# tunnel_bench.sh: p2pmesh's tunnel role (an mTLS HTTPS CONNECT proxy)
# against stunnel4 + tinyproxy and HAProxy + tinyproxy doing the same job,
# side by side in one run on this machine (method and results:
# docs/benchmarks.md, "Tunnel (issue 6)").
#
#   tests/bench/tunnel_bench.sh
#
# Servers, each stack started fresh for every measurement, every process of
# it pinned to SERVER_CPU; tunnel-loadgen (client and CONNECT target in one
# process) pinned to CLIENT_CPU:
#   p2pmesh   ./p2pmesh --role=tunnel (TLS 1.3, client certificates required)
#   stunnel   stunnel4 (TLS 1.3, verifyChain, requireCert) -> tinyproxy
#   haproxy   haproxy, mode tcp, `ssl ... verify required` -> tinyproxy
# Certificates (ECDSA P-256) from `p2pmesh --role=tunnel --tunnel.gen_certs`,
# or made with the openssl CLI the same way when the binary cannot.
# Phases (every one for every server, ROUNDS times, servers interleaved):
#   handshake  closed loop, HS_CONNS connections: full mTLS handshakes until
#              the server's NewSessionTicket -> handshakes per server CPU-s
#   resume     the same with session resumption (TLS 1.3 tickets)
#   connect    closed loop, CONNECT_CONNS: resumed TLS + CONNECT + 200 + one
#              echo round trip -> CONNECT setups per server CPU-s
#   latency    the same open loop at LAT_FRACTION of the weakest server's
#              capacity in `connect` (or CONNECT_RATE), the same rate for all
#              -> p50/p99 of the time to the 200 (and to the echo)
#   bulk       BULK_TUNNELS tunnels moving bytes, download and upload
#              -> MB per server CPU-s
#   mixed      CONNECT setups one at a time (closed loop, one connection)
#              while MIXED_BULK other tunnels download MIXED_RATE MB/s in
#              total through the same server (the same load for every
#              server: about half of what the peers' stacks can carry)
#              -> p50/p99 of the time to the 200 beside bulk traffic
#   idle       IDLE_TUNNELS idle tunnels (CONNECT + one echo) -> server stack
#              RSS growth per tunnel after IDLE_SETTLE s
# Server CPU = utime+stime of every process of the stack and its
# descendants; "front" = the TLS-terminating process alone (stunnel,
# haproxy; all of p2pmesh). `openssl speed` on SERVER_CPU gives the crypto
# bound of a full mTLS handshake. Where p2pmesh misses a target, a
# `perf record -g` of it under that load is saved (PERF=1: for every phase).
# Raw JSON lines go to tests/bench/results/tunnel-<stamp>/ (gitignored); the
# markdown summary is printed and saved there as summary.md.
#
# Environment (defaults in brackets):
#   PM_BIN [<repo>/p2pmesh]  SERVERS ["p2pmesh stunnel haproxy"]
#   PHASES ["handshake resume connect latency bulk mixed idle"]
#   DURATION [8] WARMUP [2] ROUNDS [1]
#   HS_CONNS [32] CONNECT_CONNS [16] LAT_FRACTION [0.5] CONNECT_RATE [""]
#   BULK_TUNNELS [8] BULK_DIRS ["down up"] MIXED_BULK [2] MIXED_RATE [100]
#   IDLE_TUNNELS [1000] IDLE_SETTLE [2]
#   SERVER_CPU [1] CLIENT_CPU [0] BASE_PORT [19100: BASE_PORT..+9 are used]
#   QUIET_MAX [15: % busy tolerated] QUIET_WAIT [120 s before starting]
#   QUIET_EACH [30 s: the same wait, at most this long, before every run]
#   PERF [auto | 1 | 0] PERF_SECONDS [5]  CERTS [gen: p2pmesh gen_certs,
#   falling back to openssl; openssl: always the CLI]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

PM_BIN=${PM_BIN:-$repo/p2pmesh}
SERVERS=${SERVERS:-"p2pmesh stunnel haproxy"}
PHASES=${PHASES:-"handshake resume connect latency bulk mixed idle"}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-1}
HS_CONNS=${HS_CONNS:-32}
CONNECT_CONNS=${CONNECT_CONNS:-16}
LAT_FRACTION=${LAT_FRACTION:-0.5}
CONNECT_RATE=${CONNECT_RATE:-}
BULK_TUNNELS=${BULK_TUNNELS:-8}
BULK_DIRS=${BULK_DIRS:-"down up"}
MIXED_BULK=${MIXED_BULK:-2}
MIXED_RATE=${MIXED_RATE:-100}
IDLE_TUNNELS=${IDLE_TUNNELS:-1000}
IDLE_SETTLE=${IDLE_SETTLE:-2}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
BASE_PORT=${BASE_PORT:-19100}
QUIET_MAX=${QUIET_MAX:-15}
QUIET_WAIT=${QUIET_WAIT:-120}
QUIET_EACH=${QUIET_EACH:-30}
PERF=${PERF:-auto}
PERF_SECONDS=${PERF_SECONDS:-5}
CERTS=${CERTS:-gen}

loadgen=$here/tunnel-loadgen
stamp=$(date +%Y%m%d-%H%M%S)
out=$here/results/tunnel-$stamp
mkdir -p "$out"
t_start=$(date +%s)

# ports
P_PM=$BASE_PORT
P_PM_ADMIN=$((BASE_PORT + 1))
P_STUNNEL=$((BASE_PORT + 2))
P_HAPROXY=$((BASE_PORT + 4))
P_TINY=$((BASE_PORT + 5))
P_TARGET=$((BASE_PORT + 9))
P_TARGET2=$((BASE_PORT + 8)) # the background downloads of the mixed phase

log() { printf '[tunnel_bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# ---------------------------------------------------------------- limits
hard=$(ulimit -Hn)
want=20000
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then want=$hard; fi
ulimit -n "$want" 2>/dev/null || true
[ "$(ulimit -n)" -ge $((IDLE_TUNNELS * 2 + 100)) ] ||
    die "fd limit $(ulimit -n) too low for IDLE_TUNNELS=$IDLE_TUNNELS"
[ "$IDLE_TUNNELS" -le 4000 ] || die "IDLE_TUNNELS above 4000 does not fit the peers' fd budget"

# ---------------------------------------------------------------- build
build_loadgen() {
    local src
    for src in "$here/tunnel-loadgen.c" "$here/lg_common.c" "$here/lg_common.h"; do
        if [ "$src" -nt "$loadgen" ]; then rm -f "$loadgen"; fi
    done
    [ -x "$loadgen" ] && return 0
    log "building tunnel-loadgen"
    if [ -f "$repo/Makefile" ] && make -C "$repo" tests/bench/tunnel-loadgen >"$out/build.log" 2>&1; then
        return 0
    fi
    local flags
    flags=$(pkg-config --cflags --libs libevent openssl) ||
        die "pkg-config cannot find libevent or openssl"
    # shellcheck disable=SC2086 # flags is a word list
    ${CC:-cc} -O2 -Wall -o "$loadgen" "$here/tunnel-loadgen.c" "$here/lg_common.c" \
        $flags || die "cannot build tunnel-loadgen"
}

# ---------------------------------------------------------------- machine
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

wait_quiet() { # [max seconds to wait] -> busy % on stdout
    local waited=0 busy limit=${1:-$QUIET_WAIT}
    busy=$(machine_busy_pct)
    while [ "$busy" -gt "$QUIET_MAX" ] && [ "$waited" -lt "$limit" ]; do
        log "machine ${busy}% busy with other work; waiting for it to calm down"
        sleep 3
        waited=$((waited + 5))
        busy=$(machine_busy_pct)
    done
    if [ "$busy" -gt "$QUIET_MAX" ]; then
        log "warning: still ${busy}% busy after ${limit}s; results will be noisy"
    fi
    echo "$busy"
}

# ---------------------------------------------------------------- certs
certs=$out/certs
cert_source=""
make_certs_openssl() {
    local d=$1
    mkdir -p "$d"
    (
        cd "$d"
        umask 077
        openssl ecparam -name prime256v1 -genkey -noout -out ca.key
        openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=p2pmesh-bench-ca" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt
        leaf() { # name subject-cn ext
            openssl ecparam -name prime256v1 -genkey -noout -out "$1.key"
            openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
            printf '%b' "$3" >"$1.ext"
            openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
                -days 825 -sha256 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
            rm -f "$1.csr" "$1.ext"
        }
        leaf server p2pmesh-tunnel "subjectAltName=DNS:p2pmesh-tunnel,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        leaf agent agent "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
    ) >"$out/certs.log" 2>&1
}
setup_certs() {
    if [ "$CERTS" = gen ] && [ -x "$PM_BIN" ] &&
        "$PM_BIN" --role=tunnel --tunnel.gen_certs="$certs" >"$out/certs.log" 2>&1 &&
        [ -s "$certs/agent.crt" ] && [ -s "$certs/server.key" ]; then
        cert_source="p2pmesh --tunnel.gen_certs"
    else
        rm -rf "$certs"
        make_certs_openssl "$certs" || die "cannot make certificates (see $out/certs.log)"
        cert_source="openssl CLI"
    fi
    openssl verify -CAfile "$certs/ca.crt" "$certs/server.crt" "$certs/agent.crt" \
        >>"$out/certs.log" 2>&1 || die "generated certificates do not verify"
    cat "$certs/server.crt" "$certs/server.key" >"$certs/server.pem"
    chmod 600 "$certs/server.pem"
}

# ---------------------------------------------------------------- servers
stack_pids=()
front_pid=""
cur_server=""
cur_phase="probe"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port pid
    local i
    for i in $(seq 1 100); do
        if port_open "$1"; then
            return 0
        fi
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
        : "$i"
    done
    return 1
}

port_of() {
    case $1 in
    p2pmesh) echo "$P_PM" ;;
    stunnel) echo "$P_STUNNEL" ;;
    haproxy) echo "$P_HAPROXY" ;;
    *) die "unknown server $1" ;;
    esac
}

write_configs() {
    cat >"$out/tinyproxy.conf" <<EOF
# tinyproxy: plain HTTP proxy behind stunnel / haproxy; no ConnectPort line,
# so CONNECT may reach any port
Port $P_TINY
Listen 127.0.0.1
Timeout 600
MaxClients 9000
LogLevel Error
LogFile "$out/tinyproxy.log"
DisableViaHeader Yes
EOF
    cat >"$out/stunnel.conf" <<EOF
foreground = yes
pid =
syslog = no
debug = 3
output = $out/stunnel.log
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
[tunnel]
accept = 127.0.0.1:$P_STUNNEL
connect = 127.0.0.1:$P_TINY
cert = $certs/server.crt
key = $certs/server.key
CAfile = $certs/ca.crt
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.3
EOF
    cat >"$out/haproxy.cfg" <<EOF
global
    maxconn 9000
    nbthread 1
defaults
    mode tcp
    timeout connect 10s
    timeout client 10m
    timeout server 10m
frontend fe
    bind 127.0.0.1:$P_HAPROXY ssl crt $certs/server.pem ca-file $certs/ca.crt verify required ssl-min-ver TLSv1.3
    maxconn 9000
    default_backend be
backend be
    server tinyproxy 127.0.0.1:$P_TINY maxconn 9000
EOF
}

p2pmesh_flags() {
    printf '%s\n' --role=tunnel --addr=127.0.0.1 --port="$P_PM" --admin_port="$P_PM_ADMIN" \
        --tls.cert="$certs/server.crt" --tls.key="$certs/server.key" \
        --tls.client_ca="$certs/ca.crt" --tls.min_version=1.3 \
        --tunnel.allow_hosts=127.0.0.1 --tunnel.connect_ports='*' \
        --tunnel.max_connections=20000 --tunnel.max_streams=20000 \
        --tunnel.emf=false --log.level=warn
}

start_bg() { # logfile cmd...: pinned, in the background; pid in $bg_pid
    local logf=$1
    shift
    taskset -c "$SERVER_CPU" "$@" >>"$logf" 2>&1 &
    bg_pid=$!
}

start_tinyproxy() {
    echo "--- start" >>"$out/tinyproxy.out"
    start_bg "$out/tinyproxy.out" tinyproxy -d -c "$out/tinyproxy.conf"
    stack_pids+=("$bg_pid")
    wait_port "$P_TINY" "$bg_pid"
}

start_stack() { # name
    local name=$1 port
    cur_server=$name
    port=$(port_of "$name")
    local p
    for p in "$port" "$P_TINY" "$P_PM_ADMIN"; do
        port_open "$p" && die "port $p is already in use (set BASE_PORT)"
    done
    stack_pids=()
    front_pid=""
    case $name in
    p2pmesh)
        local -a f
        mapfile -t f < <(p2pmesh_flags)
        echo "--- start" >>"$out/p2pmesh.server.log"
        start_bg "$out/p2pmesh.server.log" "$PM_BIN" "${f[@]}"
        front_pid=$bg_pid
        stack_pids=("$bg_pid")
        ;;
    stunnel)
        start_tinyproxy || {
            stop_stack
            return 1
        }
        echo "--- start" >>"$out/stunnel.out"
        start_bg "$out/stunnel.out" stunnel4 "$out/stunnel.conf"
        front_pid=$bg_pid
        stack_pids=("$bg_pid" "${stack_pids[@]}")
        ;;
    haproxy)
        start_tinyproxy || {
            stop_stack
            return 1
        }
        echo "--- start" >>"$out/haproxy.out"
        start_bg "$out/haproxy.out" haproxy -db -f "$out/haproxy.cfg"
        front_pid=$bg_pid
        stack_pids=("$bg_pid" "${stack_pids[@]}")
        ;;
    esac
    if wait_port "$port" "$front_pid"; then
        sleep 0.3
        return 0
    fi
    log "$name did not start; its log:"
    case $name in
    p2pmesh) tail -n 20 "$out/p2pmesh.server.log" >&2 || true ;;
    *) tail -n 20 "$out/$name.out" >&2 || true ;;
    esac
    stop_stack
    return 1
}

stop_stack() {
    local pid i alive
    for pid in "${stack_pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for i in $(seq 1 50); do
        alive=0
        for pid in "${stack_pids[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        [ "$alive" = 0 ] && break
        sleep 0.1
        : "$i"
    done
    local rc name
    for pid in "${stack_pids[@]}"; do
        name=$cur_server
        [ "$pid" = "$front_pid" ] || name=tinyproxy
        if kill -0 "$pid" 2>/dev/null; then
            log "process $pid ($name) ignored SIGTERM for 5 s; killing it"
            echo "$cur_phase $name: ignored SIGTERM for 5 s, killed" >>"$out/server-exits.txt"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rc=0
        wait "$pid" 2>/dev/null || rc=$?
        # 0 and 143 (SIGTERM) are clean, 137 is the kill logged above;
        # anything else (a crash) is worth a line
        case $rc in
        0 | 143 | 137) ;;
        *) echo "$cur_phase $name: exit status $rc$([ "$rc" -gt 128 ] && echo " (signal $((rc - 128)))")" >>"$out/server-exits.txt" ;;
        esac
    done
    stack_pids=()
    front_pid=""
    # the next stack may reuse the ports at once
    for i in $(seq 1 30); do
        port_open "$P_TINY" || port_open "$P_PM_ADMIN" || break
        sleep 0.1
    done
}
lg_pid=""
bg_lg_pid=""
cleanup() {
    if [ -n "$lg_pid" ]; then kill -TERM "$lg_pid" 2>/dev/null || true; fi
    if [ -n "$bg_lg_pid" ]; then kill -TERM "$bg_lg_pid" 2>/dev/null || true; fi
    stop_stack
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

# Run tunnel-loadgen pinned to CLIENT_CPU against the running stack; JSON
# line to $1, diagnostics to $1.err.
run_loadgen() { # dest args...
    local dest=$1
    shift
    [ "${NO_GATE:-0}" = 1 ] || wait_quiet "$QUIET_EACH" >/dev/null
    local -a pids=()
    local p
    for p in "${stack_pids[@]}"; do pids+=(--pid "$p"); done
    taskset -c "$CLIENT_CPU" "$loadgen" --json --label "$cur_server" \
        --port "$(port_of "$cur_server")" --cert "$certs/agent.crt" \
        --key "$certs/agent.key" --ca "$certs/ca.crt" \
        --target-port "${TARGET_PORT:-$P_TARGET}" \
        "${pids[@]}" "$@" >"$dest" 2>"$dest.err" &
    lg_pid=$!
    if wait "$lg_pid"; then
        lg_pid=""
        return 0
    fi
    lg_pid=""
    log "tunnel-loadgen failed ($cur_server $*); see $dest.err"
    tail -n 5 "$dest.err" >&2 || true
    return 1
}

# ---------------------------------------------------------------- phases
phase_args() { # phase [rate] -> loadgen arguments
    case $1 in
    handshake) echo --mode handshake --conns "$HS_CONNS" --duration "$DURATION" --warmup "$WARMUP" ;;
    resume) echo --mode handshake --resume --conns "$HS_CONNS" --duration "$DURATION" --warmup "$WARMUP" ;;
    connect) echo --mode connect --conns "$CONNECT_CONNS" --duration "$DURATION" --warmup "$WARMUP" ;;
    latency) echo --mode connect --conns 1000 --rate "$2" --duration "$DURATION" --warmup "$WARMUP" ;;
    bulk-down) echo --mode bulk --dir down --conns "$BULK_TUNNELS" --duration "$DURATION" --warmup "$WARMUP" ;;
    bulk-up) echo --mode bulk --dir up --conns "$BULK_TUNNELS" --duration "$DURATION" --warmup "$WARMUP" ;;
    idle) echo --mode idle --conns "$IDLE_TUNNELS" --settle "$IDLE_SETTLE" ;;
    esac
}

has_phase() { [[ " $PHASES " == *" $1 "* ]]; }

measure() { # phase server round [rate]
    local ph=$1 s=$2 r=$3 rate=${4:-}
    cur_phase="$ph-r$r"
    log "$ph: $s, round $r${rate:+, $rate/s}"
    start_stack "$s" || return 0
    # shellcheck disable=SC2046 # word list
    run_loadgen "$out/$ph-$s-r$r.json" $(phase_args "$ph" "$rate") || true
    stop_stack
}

# mixed: one CONNECT at a time while MIXED_BULK tunnels download; both
# generators on CLIENT_CPU, the downloads to their own target port
measure_mixed() { # server round
    local s=$1 r=$2
    cur_phase="mixed-r$r"
    log "mixed: $s, round $r ($MIXED_BULK downloads, $MIXED_RATE MB/s, + CONNECT setups)"
    start_stack "$s" || return 0
    wait_quiet "$QUIET_EACH" >/dev/null
    local span
    span=$(awk -v d="$DURATION" -v w="$WARMUP" 'BEGIN{print d + w + 4}')
    NO_GATE=1 TARGET_PORT=$P_TARGET2 run_loadgen "$out/mixed-bulk-$s-r$r.json" \
        --mode bulk --dir down --conns "$MIXED_BULK" --rate "$MIXED_RATE" \
        --duration "$span" --warmup 0 &
    bg_lg_pid=$!
    sleep 2
    NO_GATE=1 run_loadgen "$out/mixed-$s-r$r.json" --mode connect --conns 1 \
        --duration "$DURATION" --warmup "$WARMUP" --op-timeout 10 || true
    wait "$bg_lg_pid" || true
    bg_lg_pid=""
    stop_stack
}

# perf record of p2pmesh under the load of a phase; summary to perf-<phase>.txt
perf_ok=0
if [ "$PERF" != 0 ] && command -v perf >/dev/null &&
    perf stat -e cpu-clock true >/dev/null 2>&1; then
    perf_ok=1
fi
profile_run() { # phase [rate]
    local ph=$1 rate=${2:-}
    [ "$perf_ok" = 1 ] || return 0
    cur_phase="perf-$ph"
    log "profiling p2pmesh: $ph"
    start_stack p2pmesh || return 0
    local pd=$out/perf-$ph
    local -a a
    # shellcheck disable=SC2207
    a=($(phase_args "$ph" "$rate"))
    if [ "$ph" = idle ]; then
        a+=(--settle "$((PERF_SECONDS + 2))")
    else
        a+=(--duration "$((PERF_SECONDS + 2))" --warmup 1)
    fi
    NO_GATE=1 run_loadgen "$pd.run.json" "${a[@]}" &
    local lg=$!
    sleep 2
    perf record -e cpu-clock -g -p "$front_pid" -o "$pd.data" \
        -- sleep "$PERF_SECONDS" >/dev/null 2>"$pd.err" || true
    wait "$lg" || true
    stop_stack
    if [ -s "$pd.data" ]; then
        {
            echo "# perf record -e cpu-clock -g, $PERF_SECONDS s, p2pmesh under: $ph ${a[*]}"
            echo "## by shared object"
            perf report -i "$pd.data" --no-children --sort dso --stdio -g none \
                2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 12 || true
            echo "## top symbols (self)"
            perf report -i "$pd.data" --no-children --sort dso,symbol --stdio \
                -g none 2>/dev/null | grep -v '^#' | grep -v '^$' |
                sed 's/ *- *- *$//' | head -n 40 || true
            echo "## inclusive (children): where the time goes, callers included"
            perf report -i "$pd.data" --children --sort dso,symbol --stdio -g none \
                2>/dev/null | grep -v '^#' | grep -v '^$' |
                sed 's/ *- *- *$//' | head -n 50 || true
        } >"$pd.txt"
        rm -f "$pd.data.old"
    fi
}

# ---------------------------------------------------------------- setup
build_loadgen
for tool in stunnel4 haproxy tinyproxy openssl taskset; do
    command -v "$tool" >/dev/null || log "warning: $tool not found"
done
setup_certs
write_configs

# Which servers can run: p2pmesh must exist and pass a 1-second CONNECT
# probe; the peers need their binaries.
skipped=()
skip() { # server reason
    log "skipping $1: $2"
    skipped+=("$(python3 -c 'import json,sys; print(json.dumps({"server":sys.argv[1],"reason":sys.argv[2]}))' "$1" "$2")")
}
run_servers=""
for s in $SERVERS; do
    case $s in
    p2pmesh)
        if [ ! -x "$PM_BIN" ]; then
            skip p2pmesh "$PM_BIN not found (build it or set PM_BIN)"
            continue
        fi
        # Freeze the binary for this run; the copy also lets perf resolve symbols.
        cp "$PM_BIN" "$out/p2pmesh"
        PM_BIN=$out/p2pmesh
        ;;
    stunnel) if ! command -v stunnel4 >/dev/null || ! command -v tinyproxy >/dev/null; then
        skip stunnel "stunnel4 or tinyproxy not installed"
        continue
    fi ;;
    haproxy) if ! command -v haproxy >/dev/null || ! command -v tinyproxy >/dev/null; then
        skip haproxy "haproxy or tinyproxy not installed"
        continue
    fi ;;
    *) die "unknown server $s" ;;
    esac
    if ! start_stack "$s"; then
        why=$(tail -n 1 "$out/$s.server.log" "$out/$s.out" 2>/dev/null | grep -v '^==>' | grep -v '^$' | tail -n 1 || true)
        skip "$s" "did not start${why:+: $why}"
        continue
    fi
    if ! NO_GATE=1 run_loadgen "$out/$s.probe.json" --mode connect --conns 1 \
        --duration 1 --warmup 0 --drain 1 ||
        ! python3 -c 'import json,sys; o=json.load(open(sys.argv[1])); sys.exit(0 if o["done"]>0 and o["failed"]==0 else 1)' \
            "$out/$s.probe.json" 2>/dev/null; then
        stop_stack
        skip "$s" "the CONNECT probe failed (see $s.probe.json.err)"
        continue
    fi
    stop_stack
    run_servers="$run_servers $s"
done
printf '%s\n' "${skipped[@]+"${skipped[@]}"}" >"$out/skipped.jsonl"
[ -n "$run_servers" ] || die "no server to measure"
log "servers: $run_servers; results in $out"

p2pmesh_sum=""
p2pmesh_git=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo "?")
[ -f "$out/p2pmesh" ] && p2pmesh_sum=$(sha256sum "$out/p2pmesh" | cut -c1-12)

busy_before=$(wait_quiet)
log "machine ${busy_before}% busy before the run"

# the crypto bound, on the server's core
log "openssl speed on CPU $SERVER_CPU"
{
    taskset -c "$SERVER_CPU" openssl speed -seconds 2 ecdsap256 ecdhx25519 2>/dev/null
    taskset -c "$SERVER_CPU" openssl speed -seconds 1 -bytes 16384 -evp aes-256-gcm 2>/dev/null
} >"$out/openssl-speed.txt" || true

# ---------------------------------------------------------------- runs
for ph in handshake resume connect; do
    has_phase "$ph" || continue
    for r in $(seq 1 "$ROUNDS"); do
        for s in $run_servers; do measure "$ph" "$s" "$r"; done
    done
done

lat_rate=""
if has_phase latency; then
    lat_rate=$CONNECT_RATE
    if [ -z "$lat_rate" ]; then
        lat_rate=$(python3 "$here/tunnel-report.py" --lat-rate "$LAT_FRACTION" "$out" 2>/dev/null || true)
    fi
    if [ -z "$lat_rate" ]; then
        log "latency: no connect capacity measured; skipped (set CONNECT_RATE)"
    else
        for r in $(seq 1 "$ROUNDS"); do
            for s in $run_servers; do measure latency "$s" "$r" "$lat_rate"; done
        done
    fi
fi

if has_phase bulk; then
    for d in $BULK_DIRS; do
        for r in $(seq 1 "$ROUNDS"); do
            for s in $run_servers; do measure "bulk-$d" "$s" "$r"; done
        done
    done
fi

if has_phase mixed; then
    for r in $(seq 1 "$ROUNDS"); do
        for s in $run_servers; do measure_mixed "$s" "$r"; done
    done
fi

if has_phase idle; then
    for r in $(seq 1 "$ROUNDS"); do
        for s in $run_servers; do
            measure idle "$s" "$r"
        done
    done
fi

# ---------------------------------------------------------------- profiles
if [ "$perf_ok" = 1 ] && [[ " $run_servers " == *" p2pmesh "* ]]; then
    if [ "$PERF" = 1 ]; then
        to_profile=""
        for ph in handshake resume connect bulk-down bulk-up; do
            case $ph in bulk-*) has_phase bulk ;; *) has_phase "$ph" ;; esac && to_profile="$to_profile $ph"
        done
    else
        to_profile=$(python3 "$here/tunnel-report.py" --missed "$out" 2>/dev/null || true)
    fi
    for ph in $to_profile; do
        case $ph in
        latency) profile_run connect ;;
        idle) ;; # memory: nothing for a CPU profile to show
        *) profile_run "$ph" ;;
        esac
    done
fi

# ---------------------------------------------------------------- summary
busy_after=$(machine_busy_pct)
# versions: whole outputs first (a pipe into grep -m1 would trip pipefail)
v_stunnel=$(stunnel4 -version 2>&1 || true)
v_haproxy=$(haproxy -v 2>&1 || true)
v_tiny=$(tinyproxy -v 2>&1 || true)
v_pm=""
if [ -x "$out/p2pmesh" ]; then v_pm=$("$out/p2pmesh" --version 2>/dev/null || true); fi
B_OPENSSL=$(openssl version 2>/dev/null || true)
B_LIBEVENT=$(pkg-config --modversion libevent 2>/dev/null || true)
export B_STAMP=$stamp B_SECONDS=$(($(date +%s) - t_start)) B_CERTS=$cert_source \
    B_SERVERS=$run_servers B_BUSY0=$busy_before B_BUSY1=$busy_after \
    B_PM_GIT=$p2pmesh_git B_PM_SUM=$p2pmesh_sum B_PM_VER=$v_pm \
    B_STUNNEL=$v_stunnel B_HAPROXY=$v_haproxy B_TINY=$v_tiny \
    B_OPENSSL B_LIBEVENT B_LAT_RATE=$lat_rate SERVER_CPU CLIENT_CPU DURATION \
    WARMUP ROUNDS HS_CONNS CONNECT_CONNS LAT_FRACTION BULK_TUNNELS BULK_DIRS \
    MIXED_BULK MIXED_RATE IDLE_TUNNELS IDLE_SETTLE PHASES
python3 - "$out/env.json" <<'EOF'
import json, os, platform, re, sys
e = os.environ
def first(pat, text):
    m = re.search(pat, text or "")
    return m.group(1) if m else "?"
model = "?"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
except OSError:
    pass
env = {
    "stamp": e["B_STAMP"], "seconds": int(e["B_SECONDS"]),
    "kernel": platform.release(), "cpus": os.cpu_count(), "cpu_model": model,
    "openssl": e.get("B_OPENSSL") or "?", "libevent": e.get("B_LIBEVENT") or "?",
    "stunnel": first(r"stunnel (\S+)", e.get("B_STUNNEL")),
    "haproxy": first(r"version (\S+)", e.get("B_HAPROXY")),
    "tinyproxy": first(r"(\d+\.\d+[.\d]*)", e.get("B_TINY")),
    "p2pmesh_git": e.get("B_PM_GIT", "?"), "p2pmesh_sha256": e.get("B_PM_SUM", ""),
    "p2pmesh_version": (e.get("B_PM_VER") or "").split("\n")[0],
    "cert_source": e.get("B_CERTS", "?"), "servers": e.get("B_SERVERS", "").split(),
    "server_cpu": e["SERVER_CPU"], "client_cpu": e["CLIENT_CPU"],
    "busy_before": int(e["B_BUSY0"]), "busy_after": int(e["B_BUSY1"]),
    "duration": float(e["DURATION"]), "warmup": float(e["WARMUP"]),
    "rounds": int(e["ROUNDS"]), "hs_conns": int(e["HS_CONNS"]),
    "connect_conns": int(e["CONNECT_CONNS"]), "lat_fraction": float(e["LAT_FRACTION"]),
    "lat_rate": e.get("B_LAT_RATE", ""), "bulk_tunnels": int(e["BULK_TUNNELS"]),
    "bulk_dirs": e["BULK_DIRS"], "mixed_bulk": int(e["MIXED_BULK"]),
    "mixed_rate": float(e["MIXED_RATE"]),
    "idle_tunnels": int(e["IDLE_TUNNELS"]),
    "idle_settle": float(e["IDLE_SETTLE"]), "phases": e["PHASES"],
}
json.dump(env, open(sys.argv[1], "w"), indent=1)
EOF
python3 "$here/tunnel-report.py" "$out" | tee "$out/summary.md"
log "done in $(($(date +%s) - t_start)) s; results in $out"
