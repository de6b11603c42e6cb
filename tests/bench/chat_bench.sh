#!/usr/bin/env bash
# chat_bench.sh: the chat role against a Socket.IO 4 chat server, side by
# side in one run on this machine (method and results: docs/benchmarks.md,
# "Chat (issue 5)").
#
#   tests/bench/chat_bench.sh
#
# Servers, each a fresh process pinned to SERVER_CPU, chat-loadgen pinned to
# CLIENT_CPU, one after the other with identical load:
#   p2pmesh   ./p2pmesh --role=chat on a fresh copy of a prepared SQLite
#             database (users bu0..buN-1 and the rooms inserted directly;
#             tokens signed by the load generator with the run's jwt.secret)
#   socketio  tests/bench/socketio-chat-server.js (npm socket.io, WebSocket
#             transport only, in-memory ids, no persistence)
# Phases:
#   fanout   closed loop: CONNS connections in rooms of 10, 100 and 1000,
#            SENDERS per room each keeping WINDOW messages unacked
#            -> deliveries per server CPU-second (ROUNDS rounds, servers
#            interleaved, best kept)
#   latency  open loop at LAT_FRACTION of the weaker server's capacity in
#            the fanout phase, the same rate for both -> p50/p99 of every
#            delivery, from the message's intended send time
#   persist  p2pmesh only: PERSIST_CONNS senders, each alone in its room,
#            each keeping PERSIST_WINDOW messages unacked (acks come only
#            after the COMMIT) -> committed messages per second, with
#            chat.sqlite_sync=full and normal; the row count in the database
#            afterwards is checked against the acks
# A `perf record` of p2pmesh is taken for every target that is missed, and
# for every room size where p2pmesh's deliveries per CPU-s at the latency
# phase's equal load are under 1.5x Socket.IO's (PERF=1: also for the
# room-10 fan-out and the persist run in any case).
# Raw JSON lines go to tests/bench/results/chat-<stamp>/ (gitignored); the
# markdown summary is printed and saved there as summary.md.
#
# Environment (defaults in brackets):
#   PM_BIN [<repo>/p2pmesh]  NODE [node]  SERVERS ["p2pmesh socketio"]
#   PHASES ["fanout latency persist"]
#   SIZES ["10 100 1000"]  CONNS [2000: connections in every fan-out run]
#   SENDERS ["10:1 100:2 1000:5": senders per room, by room size]
#   WINDOWS ["10:4 100:4 1000:2": unacked messages per sender, by room size]
#   BODY [100: message body characters]
#   DURATION [8] WARMUP [3] ROUNDS [2]
#   LAT_FRACTION [0.5] LAT_ROUNDS [2] LAT_RATES ["": e.g. "10:4000 100:400
#     1000:40" fixes the open-loop msgs/s]
#   PERSIST_CONNS [200] PERSIST_WINDOW [16] PERSIST_SYNCS ["full normal"]
#   SERVER_CPU [0] CLIENT_CPU [1] BASE_PORT [18800]
#   QUIET_MAX [15: % busy tolerated] QUIET_WAIT [300 s before starting]
#   QUIET_EACH [60 s: the same wait, at most this long, before every run]
#   PERF [auto: profile p2pmesh where a target is missed; 1 always; 0 never]
#   PERF_SECONDS [6]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

PM_BIN=${PM_BIN:-$repo/p2pmesh}
NODE=${NODE:-node}
SERVERS=${SERVERS:-"p2pmesh socketio"}
PHASES=${PHASES:-"fanout latency persist"}
SIZES=${SIZES:-"10 100 1000"}
CONNS=${CONNS:-2000}
SENDERS=${SENDERS:-"10:1 100:2 1000:5"}
WINDOWS=${WINDOWS:-"10:4 100:4 1000:2"}
BODY=${BODY:-100}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-3}
ROUNDS=${ROUNDS:-2}
LAT_FRACTION=${LAT_FRACTION:-0.5}
LAT_ROUNDS=${LAT_ROUNDS:-2}
LAT_RATES=${LAT_RATES:-}
PERSIST_CONNS=${PERSIST_CONNS:-200}
PERSIST_WINDOW=${PERSIST_WINDOW:-16}
PERSIST_SYNCS=${PERSIST_SYNCS:-"full normal"}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BASE_PORT=${BASE_PORT:-18800}
QUIET_MAX=${QUIET_MAX:-15}
QUIET_WAIT=${QUIET_WAIT:-300}
QUIET_EACH=${QUIET_EACH:-60}
PERF=${PERF:-auto}
PERF_SECONDS=${PERF_SECONDS:-6}

loadgen=$here/chat-loadgen
stamp=$(date +%Y%m%d-%H%M%S)
out=$here/results/chat-$stamp
mkdir -p "$out"
t_start=$(date +%s)

log() { printf '[chat_bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# "10:1 100:2" -> the value for key $2
map_get() { # map key default
    local kv
    for kv in $1; do
        if [ "${kv%%:*}" = "$2" ]; then
            echo "${kv#*:}"
            return
        fi
    done
    echo "$3"
}

# ---------------------------------------------------------------- build
build_loadgen() {
    local cc=${CC:-cc} flags
    flags=$(pkg-config --cflags --libs libevent openssl) ||
        die "pkg-config cannot find libevent or openssl"
    local src
    for src in "$here/chat-loadgen.c" "$here/lg_common.c" "$here/lg_common.h"; do
        if [ "$src" -nt "$loadgen" ]; then rm -f "$loadgen"; fi
    done
    if [ ! -x "$loadgen" ]; then
        log "building chat-loadgen"
        # shellcheck disable=SC2086 # flags is a word list
        "$cc" -O2 -Wall -o "$loadgen" "$here/chat-loadgen.c" "$here/lg_common.c" \
            $flags
    fi
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
        sleep 8
        waited=$((waited + 10))
        busy=$(machine_busy_pct)
    done
    if [ "$busy" -gt "$QUIET_MAX" ]; then
        log "warning: still ${busy}% busy after ${limit}s; results will be noisy"
    fi
    echo "$busy"
}

# ---------------------------------------------------------------- database
SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
tmpl=$out/db/template.db
rundb=$out/db/run.db

sql() { # db sql: sqlite3, or Python's sqlite3 module without it
    if command -v sqlite3 >/dev/null; then
        sqlite3 -batch "$1" "$2"
    else
        python3 -c 'import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
for row in c.execute(sys.argv[2]) if sys.argv[2].count(";") <= 1 else c.executescript(sys.argv[2]):
    print("|".join(map(str, row)))
c.commit()' "$1" "$2"
    fi
}

# ---------------------------------------------------------------- servers
server_pid=""

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port pid
    local i
    for i in $(seq 1 150); do
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
    p2pmesh) echo "$BASE_PORT" ;;
    socketio) echo $((BASE_PORT + 1)) ;;
    *) die "unknown server $1" ;;
    esac
}

p2pmesh_flags() { # port sync
    printf '%s\n' --role=chat --addr=127.0.0.1 --port="$1" --log.level=warn \
        --database.url="sqlite:$rundb" --jwt.secret="$SECRET" \
        --chat.sqlite_sync="$2" --chat.rate_max=0 --chat.auth_rate_max=0 \
        --limits.per_ip_connections=0 --limits.per_ip_rate=0/1s \
        --limits.per_conn_rate=0/1s --limits.max_connections=20000 \
        --shutdown.grace=5s
}

start_server() { # name [sync]
    local name=$1 sync=${2:-full} port logf
    port=$(port_of "$name")
    port_open "$port" && die "port $port is already in use (set BASE_PORT)"
    logf=$out/$name.server.log
    case $name in
    p2pmesh)
        rm -f "$rundb" "$rundb-wal" "$rundb-shm"
        [ "$rundb" = "$tmpl" ] || cp "$tmpl" "$rundb"
        local -a f
        mapfile -t f < <(p2pmesh_flags "$port" "$sync")
        echo "--- start (sync=$sync)" >>"$logf"
        taskset -c "$SERVER_CPU" "$PM_BIN" "${f[@]}" >>"$logf" 2>&1 &
        server_pid=$!
        ;;
    socketio)
        echo "--- start" >>"$logf"
        taskset -c "$SERVER_CPU" "$NODE" "$here/socketio-chat-server.js" \
            "$port" >>"$logf" 2>&1 &
        server_pid=$!
        ;;
    esac
    if wait_port "$port" "$server_pid"; then
        sleep 0.5
        return 0
    fi
    log "$name did not start; its log:"
    tail -n 20 "$logf" >&2 || true
    stop_server
    return 1
}

stop_server() {
    local pid=$server_pid i
    server_pid=""
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
            : "$i"
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "process $pid ignored SIGTERM for 10 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}
trap stop_server EXIT
trap 'stop_server; exit 130' INT TERM

# Run chat-loadgen pinned to CLIENT_CPU against the running server $1;
# JSON line to $2, diagnostics to $2.err.
run_loadgen() { # server dest args...
    local s=$1 dest=$2
    shift 2
    [ "${NO_GATE:-0}" = 1 ] || wait_quiet "$QUIET_EACH" >/dev/null
    if taskset -c "$CLIENT_CPU" "$loadgen" --json --server "$s" \
        --port "$(port_of "$s")" --pid "$server_pid" --jwt-secret "$SECRET" \
        --size "$BODY" "$@" >"$dest" 2>"$dest.err"; then
        return 0
    fi
    log "chat-loadgen failed ($s $*); see $dest.err"
    tail -n 5 "$dest.err" >&2 || true
    return 1
}

# perf record of the running p2pmesh while chat-loadgen runs; top symbols
# to $1.txt
perf_ok=0
if [ "$PERF" != 0 ] && command -v perf >/dev/null &&
    perf stat -e cpu-clock true >/dev/null 2>&1; then
    perf_ok=1
fi
profile_run() { # name server-sync loadgen args...
    local name=$1 sync=$2
    shift 2
    [ "$perf_ok" = 1 ] || return 0
    log "profiling p2pmesh: $name"
    start_server p2pmesh "$sync" || return 0
    local pd=$out/perf-$name
    NO_GATE=1 run_loadgen p2pmesh "$pd.run.json" "$@" --duration $((PERF_SECONDS + 2)) \
        --warmup 2 &
    local lg=$!
    # traffic starts after setup (a few seconds) + start delay + warm-up
    sleep 6
    perf record -e cpu-clock -g -p "$server_pid" -o "$pd.data" \
        -- sleep "$PERF_SECONDS" >/dev/null 2>"$pd.err" || true
    wait "$lg" || true
    stop_server
    if [ -s "$pd.data" ]; then
        {
            echo "# perf record -e cpu-clock -g, $PERF_SECONDS s, p2pmesh under: $*"
            echo "## by shared object"
            perf report -i "$pd.data" --no-children --sort dso --stdio -g none \
                2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 12 || true
            echo "## top symbols (self)"
            perf report -i "$pd.data" --no-children --sort dso,symbol --stdio \
                -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | sed 's/ *- *- *$//' | head -n 40 || true
        } >"$pd.txt"
        rm -f "$pd.data.old"
    fi
}

# ---------------------------------------------------------------- setup
build_loadgen
command -v "$NODE" >/dev/null || die "node not found"
[ -d "$repo/tests/node_modules/socket.io" ] ||
    die "tests/node_modules/socket.io missing: cd tests && npm install"
[ -x "$PM_BIN" ] || die "$PM_BIN not found (build it or set PM_BIN)"
command -v sqlite3 >/dev/null || command -v python3 >/dev/null ||
    die "sqlite3 or python3 is needed to prepare the database"

# Freeze the binary for this run; the copy also lets perf resolve symbols.
cp "$PM_BIN" "$out/p2pmesh"
PM_BIN=$out/p2pmesh
p2pmesh_sum=$(sha256sum "$PM_BIN" | cut -c1-12)
p2pmesh_git=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo "?")

log "results in $out"
busy_before=$(wait_quiet)
log "machine ${busy_before}% busy before the run"

# The template database: the schema from p2pmesh itself, then the users and
# rooms inserted directly (bcrypt registration would take minutes; the
# password hash is never checked, tokens are signed with the run's secret).
mkdir -p "$out/db"
users=$CONNS
[ "$PERSIST_CONNS" -gt "$users" ] && users=$PERSIST_CONNS
rundb=$tmpl
start_server p2pmesh full || die "p2pmesh did not start on an empty database"
stop_server
rundb=$out/db/run.db
room_sql=""
for size in $SIZES; do
    [ $((CONNS % size)) = 0 ] || die "CONNS ($CONNS) is not a multiple of $size"
    room_sql="$room_sql
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $((CONNS / size - 1)))
INSERT INTO rooms (name, title, kind, created_at) SELECT 'r$size-' || i, '', 'room', 0 FROM n;"
done
sql "$tmpl" "
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $((users - 1)))
INSERT INTO users (id, username, password, gender)
  SELECT i + 1, 'bu' || i, '\$2b\$10\$notusednotusednotuseduXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX', 'other' FROM n;
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $((PERSIST_CONNS - 1)))
INSERT INTO rooms (name, title, kind, created_at) SELECT 'p1-' || i, '', 'room', 0 FROM n;
$room_sql
PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
log "template database: $(sql "$tmpl" 'SELECT count(*) FROM users') users, $(sql "$tmpl" 'SELECT count(*) FROM rooms') rooms"

has_server() { [[ " $SERVERS " == *" $1 "* ]]; }
has_phase() { [[ " $PHASES " == *" $1 "* ]]; }

# ---------------------------------------------------------------- fan-out
fanout_args() { # size
    local size=$1
    echo --conns "$CONNS" --room-size "$size" --room-prefix "r$size" \
        --senders "$(map_get "$SENDERS" "$size" 1)"
}

if has_phase fanout; then
    for r in $(seq 1 "$ROUNDS"); do
        for size in $SIZES; do
            for s in $SERVERS; do
                log "fan-out: rooms of $size, $s, round $r"
                start_server "$s" || continue
                # shellcheck disable=SC2046 # word list
                run_loadgen "$s" "$out/fanout-s$size-$s-r$r.json" \
                    $(fanout_args "$size") --window "$(map_get "$WINDOWS" "$size" 4)" \
                    --duration "$DURATION" --warmup "$WARMUP" || true
                stop_server
            done
        done
    done
fi

# best deliveries per server CPU-s of server $1 at size $2 (undisturbed
# rounds preferred)
best_capacity() {
    # shellcheck disable=SC2016 # JavaScript, not shell
    "$NODE" -e '
const fs=require("fs"),path=require("path");
const [dir,s,size]=process.argv.slice(1);
let best=null,bestq=null;
for(const f of fs.readdirSync(dir)){
  if(!f.startsWith(`fanout-s${size}-${s}-r`)||!f.endsWith(".json"))continue;
  let o;try{o=JSON.parse(fs.readFileSync(path.join(dir,f),"utf8"));}catch(e){continue;}
  const v=o.deliveries_per_server_cpu_s;if(!(v>0))continue;
  const quiet=o.other_cpu_s<=0.1*o.duration_s;
  if(best===null||v>best)best=v;
  if(quiet&&(bestq===null||v>bestq))bestq=v;
}
process.stdout.write(String(bestq!==null?bestq:best!==null?best:""));' "$out" "$1" "$2"
}

# ---------------------------------------------------------------- latency
if has_phase latency; then
    for size in $SIZES; do
        rate=$(map_get "$LAT_RATES" "$size" "")
        if [ -z "$rate" ]; then
            weakest=""
            for s in $SERVERS; do
                c=$(best_capacity "$s" "$size")
                [ -n "$c" ] || continue
                if [ -z "$weakest" ] || awk -v a="$c" -v b="$weakest" 'BEGIN{exit !(a<b)}'; then
                    weakest=$c
                fi
            done
            if [ -z "$weakest" ]; then
                log "latency: no capacity measured for rooms of $size; skipped (set LAT_RATES)"
                continue
            fi
            rate=$(awk -v c="$weakest" -v f="$LAT_FRACTION" -v n="$size" \
                'BEGIN{r=c*f/n; if(r>=100) r=int(r/10)*10; else r=int(r); if(r<1) r=1; print r}')
        fi
        for r in $(seq 1 "$LAT_ROUNDS"); do
            for s in $SERVERS; do
                log "latency: rooms of $size, $s, $rate msgs/s, round $r"
                start_server "$s" || continue
                # shellcheck disable=SC2046
                run_loadgen "$s" "$out/lat-s$size-$s-r$r.json" $(fanout_args "$size") \
                    --rate "$rate" --duration "$DURATION" --warmup "$WARMUP" || true
                stop_server
            done
        done
    done
fi

# ---------------------------------------------------------------- persist
if has_phase persist && has_server p2pmesh; then
    for sync in $PERSIST_SYNCS; do
        for r in $(seq 1 "$ROUNDS"); do
            log "persist: sync=$sync, $PERSIST_CONNS senders, window $PERSIST_WINDOW, round $r"
            start_server p2pmesh "$sync" || continue
            pf=$out/persist-$sync-r$r.json
            run_loadgen p2pmesh "$pf" --conns "$PERSIST_CONNS" --room-size 1 \
                --room-prefix p1 --senders 1 --window "$PERSIST_WINDOW" \
                --duration "$DURATION" --warmup "$WARMUP" || true
            stop_server
            # every acked message must be in the database
            rows=$(sql "$rundb" 'SELECT count(*) FROM messages' 2>/dev/null || echo -1)
            echo "{\"rows\":$rows}" >"$pf.rows"
        done
    done
fi

# ---------------------------------------------------------------- profiles
missed=$("$NODE" "$here/chat-report.js" --missed "$out" 2>/dev/null || true)
if [ "$perf_ok" = 1 ]; then
    for m in $missed; do
        case $m in
        fanout-s*)
            size=${m#fanout-s}
            # shellcheck disable=SC2046
            profile_run "fanout-s$size" full $(fanout_args "$size") \
                --window "$(map_get "$WINDOWS" "$size" 4)"
            ;;
        lat-s*)
            # not a target: the open-loop run where p2pmesh's CPU per
            # delivery is closest to Socket.IO's
            size=${m#lat-s}
            rate=${size#*:}
            size=${size%%:*}
            # shellcheck disable=SC2046
            profile_run "lat-s$size" full $(fanout_args "$size") --rate "$rate"
            ;;
        persist-*)
            sync=${m#persist-}
            profile_run "persist-$sync" "$sync" --conns "$PERSIST_CONNS" \
                --room-size 1 --room-prefix p1 --senders 1 --window "$PERSIST_WINDOW"
            ;;
        esac
    done
    if [ "$PERF" = 1 ]; then
        [[ " $missed " == *" fanout-s10 "* ]] || {
            # shellcheck disable=SC2046
            profile_run fanout-s10 full $(fanout_args 10) --window "$(map_get "$WINDOWS" 10 4)"
        }
        [[ " $missed " == *" persist-full "* ]] || profile_run persist-full full \
            --conns "$PERSIST_CONNS" --room-size 1 --room-prefix p1 --senders 1 \
            --window "$PERSIST_WINDOW"
    fi
fi

# ---------------------------------------------------------------- summary
busy_after=$(machine_busy_pct)
sio_dir=$repo/tests/node_modules
ver() { "$NODE" -e 'try{const p=require("path").join(process.argv[1],"package.json");process.stdout.write(JSON.parse(require("fs").readFileSync(p,"utf8")).version)}catch(e){process.stdout.write("?")}' "$1"; }
sqlite_ver=$(dpkg-query -W -f='${Version}' libsqlite3-0 2>/dev/null || echo "?")
"$NODE" -e 'const fs=require("fs");fs.writeFileSync(process.argv[1],JSON.stringify(JSON.parse(process.argv[2]),null,1))' \
    "$out/env.json" "$(cat <<EOF
{"stamp":"$stamp","seconds":$(($(date +%s) - t_start)),
 "kernel":"$(uname -r)","cpus":$(nproc),"cpu_model":"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')",
 "node":"$("$NODE" --version)","socketio":"$(ver "$sio_dir/socket.io")","engineio":"$(ver "$sio_dir/engine.io")",
 "ws_engineio":"$(ver "$sio_dir/engine.io/node_modules/ws" 2>/dev/null)","libevent":"$(pkg-config --modversion libevent 2>/dev/null || echo ?)",
 "sqlite":"$sqlite_ver","p2pmesh_git":"$p2pmesh_git","p2pmesh_sha256":"$p2pmesh_sum",
 "p2pmesh_version":"$("$PM_BIN" --version 2>/dev/null | head -n1)",
 "server_cpu":"$SERVER_CPU","client_cpu":"$CLIENT_CPU","busy_before":$busy_before,"busy_after":$busy_after,
 "conns":$CONNS,"sizes":"$SIZES","senders":"$SENDERS","windows":"$WINDOWS","body":$BODY,
 "duration":$DURATION,"warmup":$WARMUP,"rounds":$ROUNDS,"lat_fraction":$LAT_FRACTION,"lat_rounds":$LAT_ROUNDS,
 "persist_conns":$PERSIST_CONNS,"persist_window":$PERSIST_WINDOW,"persist_syncs":"$PERSIST_SYNCS"}
EOF
)"
"$NODE" "$here/chat-report.js" "$out" | tee "$out/summary.md"
log "done in $(($(date +%s) - t_start)) s; results in $out"
