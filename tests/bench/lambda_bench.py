#!/usr/bin/python3
"""lambda_bench.py: p2pmesh's Lambda custom runtime (--role=lambda) against a
minimal Node.js runtime loop doing the same work (tests/bench/lambda-node/
bootstrap.mjs), side by side in one run against the same local emulator
(tests/integration/lambda_emu.py: Runtime API, execute-api checking every
SigV4 signature with botocore, DynamoDB). Method and results:
docs/benchmarks.md, "Lambda runtime (issue 4)".

    /usr/bin/python3 tests/bench/lambda_bench.py [--bin ./p2pmesh]

Runtimes ("kinds"):
  p2pmesh        --role=lambda with the DynamoDB store (the emulator's)
  node           node bootstrap.mjs, the same DynamoDB and @connections calls
  p2pmesh-redis  --role=lambda with the Redis store (a private redis-server),
                 an extra row; skipped when redis-server is missing

Measured:
  1. init: exec to the emulator receiving the first GET /next (the
     emulator's monotonic stamps: Emulator.popen() records the time just
     before Popen, the Runtime API handler the first /next), --runs runs of
     each kind interleaved, median and p90; also the floor of that path, a
     tiny C program that only connects and sends GET /next (built with cc);
  2. per invocation, after $connect + join and --warmup events of each type
     (measured apart): (a) "loop": --n events with "isBase64Encoded": true,
     answered 200 with no I/O; (b) "ping": --n {"type":"ping"} messages, each
     a TTL refresh in the store + one signed PostToConnection of the pong.
     The runtime process's own CPU (utime+stime of /proc/PID/stat, all
     threads; schedstat as a finer cross-check) over the --n invocations,
     divided by --n; the median wall time of one invocation as the harness
     sees it (queue the event -> answer posted), the runtime's share of it
     (the emulator's stamps: /next answer written -> /response received),
     the emulator's own CPU, and what other processes used meanwhile.
     --rounds rounds, kinds interleaved; per event type the round with the
     least runtime CPU among the undisturbed ones is kept;
  3. idle VmRSS after init and after all invocations (median of the rounds);
  4. binary size: as built, stripped (strip -o), and with the shared
     libraries it needs beyond glibc; node: its binary + bootstrap.mjs.

The runtime runs pinned to --runtime-cpu, the emulator (this process, all
its threads) and redis-server to --harness-cpu, so the emulator's Python never
competes with the measured process. Runtimes are ended with SIGKILL, as
Lambda ends a runtime without extensions. Raw output (runtime logs,
summary.json, summary.md) goes to tests/bench/results/lambda-<stamp>/
(gitignored); the markdown summary and one JSON line are printed at the end.
Exit status 1 when a problem was seen (signature failures, emulator
violations, runtime warnings, missing pongs).

Standard library + python3-botocore (for the emulator) only.
"""

import argparse
import datetime
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from lambda_emu import Emulator, connect_event, message_event  # noqa: E402

TABLE = "p2pmesh-connections"
CLK_TCK = os.sysconf("SC_CLK_TCK")
KINDS = ("p2pmesh", "node", "p2pmesh-redis")
LABELS = {"p2pmesh": "p2pmesh (DynamoDB store)", "node": "Node.js loop (DynamoDB)",
          "p2pmesh-redis": "p2pmesh (Redis store)",
          "floor": "floor: C program that only connects and sends GET /next"}

# The init floor: exec of a tiny dynamically linked C program that only
# connects to the Runtime API and sends GET /next (spawn + exec + connect +
# the emulator's accept and parse), compiled at run time when cc exists.
FLOOR_C = r"""
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
int main(void) {
    const char *api = getenv("AWS_LAMBDA_RUNTIME_API"), *c = api ? strchr(api, ':') : NULL;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(c ? atoi(c + 1) : 0)};
    char req[] = "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n", buf[64];
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (c == NULL || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || write(fd, req, sizeof req - 1) < 0)
        return 1;
    return read(fd, buf, sizeof buf) < 0;
}
"""


def build_floor(outdir):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    src, exe = os.path.join(outdir, "floor.c"), os.path.join(outdir, "floor")
    with open(src, "w") as f:
        f.write(FLOOR_C)
    r = subprocess.run([cc, "-O2", "-o", exe, src], capture_output=True, timeout=60)
    return exe if r.returncode == 0 else None
OTHER_MAX = 10.0  # % of a core used by other processes: a round is disturbed
GLIBC = ("linux-vdso", "libc.so", "ld-linux", "libm.so", "libpthread.so", "libdl.so", "librt.so")


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


# ---------------------------------------------------------------- /proc


def proc_cpu_ticks(pid):
    """utime + stime of pid (all its threads), in clock ticks."""
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])  # fields 14 and 15


def proc_sched_ns(pid):
    """Sum of the on-CPU time of pid's live threads (schedstat, ns): a
    finer cross-check of the tick-based figure."""
    total = 0
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return None
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def machine_busy_ticks():
    """CPU time processes used on the whole machine (all CPUs), in clock
    ticks: user + nice + system + steal. Interrupt and softirq time are left
    out: with IRQ time accounting the loopback traffic of the measured
    processes themselves lands there, charged to no process."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[7]


def proc_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def cpu_busy(seconds=1.0):
    """Share (%) of all CPUs busy over `seconds` (from /proc/stat)."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]
    t0, i0 = snap()
    time.sleep(seconds)
    t1, i1 = snap()
    return 100.0 * (1 - (i1 - i0) / max(1, t1 - t0))


def wait_quiet(limit_pct, max_wait):
    """Wait (1 s samples, at most max_wait s) until the machine is less than
    limit_pct % busy; the last sample."""
    busy = cpu_busy(0.5)
    for _ in range(int(max_wait)):
        if busy < limit_pct:
            break
        busy = cpu_busy()
    return busy


# -------------------------------------------------------------- helpers


def pct(values, p):
    v = sorted(values)
    if not v:
        return None
    k = (len(v) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


class Pinning:
    """Runtime processes on one CPU, this process (the emulator's threads
    inherit the creating thread's affinity) on another."""

    def __init__(self, runtime_cpu, harness_cpu):
        cpus = os.sched_getaffinity(0)
        self.on = runtime_cpu in cpus and harness_cpu in cpus and runtime_cpu != harness_cpu
        self.runtime = {runtime_cpu}
        self.harness = {harness_cpu}
        if self.on:
            os.sched_setaffinity(0, self.harness)

    def spawn(self, fn):
        """Run fn() (a Popen) with the runtime's affinity, inherited by the
        child; this thread goes back to the harness CPU afterwards."""
        if not self.on:
            return fn()
        os.sched_setaffinity(0, self.runtime)
        try:
            return fn()
        finally:
            os.sched_setaffinity(0, self.harness)


class Redis:
    def __init__(self, server):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        self.close()
        raise RuntimeError("redis-server did not start on port %d" % self.port)

    @property
    def url(self):
        return "redis://127.0.0.1:%d" % self.port

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


# ------------------------------------------------------------- runtimes


class Runtime:
    """One runtime process of a kind against emu (and redis for
    p2pmesh-redis)."""

    def __init__(self, kind, args, emu, pin, logf, redis=None):
        self.kind = kind
        # nothing from the caller's environment that configures a runtime
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("P2PMESH_", "AWS_", "_HANDLER", "_X_AMZN", "LAMBDA_", "NODE_OPTIONS",
                                     "APIGW_ENDPOINT", "DDB_ENDPOINT", "CONNECTIONS_", "CONNECTION_TTL"))}
        if kind == "floor":
            argv = [args.floor]
            env = dict(base, **emu.env())
        elif kind == "node":
            argv = [args.node, os.path.join(HERE, "lambda-node", "bootstrap.mjs")]
            env = dict(base, **emu.env(APIGW_ENDPOINT=emu.apigw_url, DDB_ENDPOINT=emu.dynamodb_url,
                                       CONNECTIONS_TABLE=TABLE))
        else:
            argv = [args.bin, "--role=lambda", "--signaling.apigw_endpoint=" + emu.apigw_url,
                    "--log.level=warn"]
            if kind == "p2pmesh-redis":
                argv.append("--redis.url=" + redis.url)
            else:
                argv += ["--lambda.dynamodb_table=" + TABLE, "--lambda.dynamodb_endpoint=" + emu.dynamodb_url]
            env = dict(base, **emu.env())
        self.proc = pin.spawn(lambda: emu.popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=logf,
                                                stderr=subprocess.STDOUT, cwd=REPO))
        self.pid = self.proc.pid

    def kill(self):
        """SIGKILL, as Lambda ends a runtime without extensions."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def log_problems(path):
    """Lines of a runtime log that are warnings or errors (p2pmesh logs JSON
    lines with a level; Node prints nothing unless something is wrong)."""
    out = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    obj = json.loads(line)
                    lvl = obj.get("level") if isinstance(obj, dict) else "error"
                except ValueError:
                    lvl = "error"
                if lvl in ("warn", "error", "fatal"):
                    out.append(line[:300])
    except OSError:
        pass
    return out


# ---------------------------------------------------------------- phases


def phase_init(args, kinds, pin, outdir):
    """Init time of each kind (and of the floor program), --runs runs
    interleaved, one emulator (no invocations are made, so runs cannot
    disturb each other)."""
    if args.floor:
        kinds = kinds + ["floor"]
    res = {k: [] for k in kinds}
    errors = {k: [] for k in kinds}
    emu = Emulator()
    redis = Redis(args.redis_server) if "p2pmesh-redis" in kinds else None
    try:
        for r in range(args.runs):
            for kind in kinds:
                with emu._cv:
                    emu.first_next_ns = None
                    emu.spawned_ns = None
                with open(os.path.join(outdir, "init-%s.log" % kind), "ab") as logf:
                    rt = Runtime(kind, args, emu, pin, logf, redis)
                    ok = emu.wait_ready(10)
                    init_ns = emu.init_ns
                    rt.kill()
                if not ok or init_ns is None:
                    errors[kind].append("run %d: no /next within 10 s (exit %s)" % (r, rt.proc.returncode))
                    continue
                res[kind].append(init_ns / 1e6)
    finally:
        emu.close()
        if redis:
            redis.close()
    out = {}
    for kind in kinds:
        v = res[kind]
        out[kind] = {"runs_ms": [round(x, 3) for x in v], "median_ms": pct(v, 50), "p90_ms": pct(v, 90),
                     "min_ms": min(v) if v else None, "errors": errors[kind],
                     "log_problems": log_problems(os.path.join(outdir, "init-%s.log" % kind))}
    return out


def invoke_ok(emu, body, what, timeout=5.0):
    r = emu.invoke(body, timeout=timeout)
    if r.kind != "response" or r.body != b'{"statusCode":200}':
        raise RuntimeError("%s: %r" % (what, r))
    return r


def measure(emu, rt, events, what, aux_pid=None):
    """Invoke every event (bytes), measuring the runtime's CPU, the
    harness/emulator CPU (and aux_pid's: redis-server) and what the rest
    of the machine did around them, and the wall time of each."""
    if not events:
        return None
    walls, turn = [], []
    m0 = machine_busy_ticks()
    a0 = proc_cpu_ticks(aux_pid) if aux_pid else 0
    h0 = os.times()
    c0, s0 = proc_cpu_ticks(rt.pid), proc_sched_ns(rt.pid)
    t0 = time.monotonic()
    for i, ev in enumerate(events):
        a = time.perf_counter()
        r = invoke_ok(emu, ev, "%s %d" % (what, i))
        walls.append(time.perf_counter() - a)
        inv = emu._invocations.get(r.request_id)
        if inv is not None and inv.t_answered is not None and inv.t_delivered is not None:
            turn.append(inv.t_answered - inv.t_delivered)
    elapsed = time.monotonic() - t0
    c1, s1 = proc_cpu_ticks(rt.pid), proc_sched_ns(rt.pid)
    h1 = os.times()
    a1 = proc_cpu_ticks(aux_pid) if aux_pid else 0
    m1 = machine_busy_ticks()
    n = len(events)
    harness_ticks = ((h1.user - h0.user) + (h1.system - h0.system)) * CLK_TCK
    other = max(0.0, (m1 - m0) - (c1 - c0) - (a1 - a0) - harness_ticks) / CLK_TCK
    cpu_us = (c1 - c0) * 1e6 / CLK_TCK / n
    return {
        "n": n,
        "elapsed_s": round(elapsed, 3),
        "cpu_ticks": c1 - c0,
        "cpu_us_per_inv": round(cpu_us, 2),
        "cpu_resolution_us_per_inv": round(1e6 / CLK_TCK / n, 2),
        "sched_cpu_us_per_inv": round((s1 - s0) / 1e3 / n, 2) if s0 is not None and s1 is not None else None,
        "wall_us_median": round(statistics.median(walls) * 1e6, 1),
        "wall_us_p90": round(pct(walls, 90) * 1e6, 1),
        "wall_us_p99": round(pct(walls, 99) * 1e6, 1),
        "runtime_turnaround_us_median": round(statistics.median(turn) * 1e6, 1) if turn else None,
        "emulator_cpu_us_per_inv": round(((h1.user - h0.user) + (h1.system - h0.system)) * 1e6 / n, 1),
        "redis_cpu_us_per_inv": round((a1 - a0) * 1e6 / CLK_TCK / n, 1) if aux_pid else None,
        "other_work_pct_of_a_core": round(100.0 * other / max(elapsed, 1e-9), 1),
    }


def phase_invocations(args, kind, pin, outdir):
    """RSS after init, loop and ping overhead, RSS after, for one kind on a
    fresh emulator (and a fresh redis-server)."""
    emu = Emulator()
    redis = Redis(args.redis_server) if kind == "p2pmesh-redis" else None
    logpath = os.path.join(outdir, "run-%s.log" % kind)
    out = {"kind": kind}
    rt = None
    try:
        with open(logpath, "ab") as logf:
            rt = Runtime(kind, args, emu, pin, logf, redis)
            if not emu.wait_ready(10):
                raise RuntimeError("no /next within 10 s")
            out["init_ms"] = round(emu.init_ns / 1e6, 3)
            time.sleep(args.settle)
            out["rss_kib_after_init"] = proc_rss_kib(rt.pid)
            cid = "Bench0Conn0001A="
            invoke_ok(emu, connect_event(cid), "$connect")
            invoke_ok(emu, message_event(cid, {"type": "join", "peerId": "aa01"}), "join")
            got = emu.wait_frames(cid, 1, 5.0)
            if got[0].get("type") != "bootstrap_peers":
                raise RuntimeError("join: first frame %r" % got[0])
            frames0 = 1

            def binary(i):
                ev = message_event(cid, "AAECAwQFBgc=")
                ev["isBase64Encoded"] = True
                return json.dumps(ev).encode()

            def ping(i):
                return json.dumps(message_event(cid, {"type": "ping", "timestamp": i})).encode()

            warm = args.warmup
            # warm-up (measured too: the cost before the steady state)
            aux = redis.proc.pid if redis else None
            out["warmup_loop"] = measure(emu, rt, [binary(i) for i in range(warm)], "warm-up loop", aux)
            out["warmup_ping"] = measure(emu, rt, [ping(-1 - i) for i in range(warm)], "warm-up ping", aux)
            events = [binary(i) for i in range(args.n)]
            out["loop"] = measure(emu, rt, events, "loop", aux)
            events = [ping(i) for i in range(args.n)]
            out["ping"] = measure(emu, rt, events, "ping", aux)
            time.sleep(args.settle)
            out["rss_kib_after"] = proc_rss_kib(rt.pid)
            frames = emu.frames_json(cid)[frames0:]
            pongs = [f.get("timestamp") for f in frames if f.get("type") == "pong"]
            want = [-1 - i for i in range(warm)] + list(range(args.n))
            out["pongs_ok"] = pongs == want and len(frames) == len(want)
            out["ddb_ops"] = dict(sorted(_count(op for op, _ in emu.ddb_ops).items()))
            out["apigw_posts"] = emu.posts
            out["connections_accepted"] = emu.connections_accepted
    except Exception as e:  # noqa: BLE001 (reported, the other kinds still run)
        out["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        if rt is not None:
            out["alive_at_end"] = rt.proc.poll() is None
            rt.kill()
        out["sig_failures"] = [list(x)[:2] + [x[2][:200]] for x in emu.sig_failures]
        out["violations"] = list(emu.violations)
        out["ddb_errors"] = [list(x) for x in emu.ddb_errors]
        out["log_problems"] = log_problems(logpath)
        emu.close()
        if redis:
            redis.close()
    return out


def best_of(rounds):
    """Per event type, the round with the least runtime CPU per invocation
    among those during which other processes used less than OTHER_MAX % of
    a core (all rounds if none was that quiet; other work on the machine
    only ever makes a round worse); RSS: the median over the rounds. Every
    round is kept under "rounds"."""
    ok = [r for r in rounds if "error" not in r]
    out = {"rounds": rounds}
    if not ok:
        out["error"] = rounds[0].get("error") if rounds else "no rounds"
        return out
    for ph in ("loop", "ping", "warmup_loop", "warmup_ping"):
        have = [r for r in ok if r.get(ph)]
        quiet = [r for r in have if r[ph]["other_work_pct_of_a_core"] < OTHER_MAX]
        if have:
            b = min(quiet or have, key=lambda r: r[ph]["sched_cpu_us_per_inv"])
            out[ph] = dict(b[ph], round=b["round"],
                           all_rounds_cpu_us=[r[ph]["sched_cpu_us_per_inv"] for r in have],
                           all_rounds_other_pct=[r[ph]["other_work_pct_of_a_core"] for r in have])
    for key in ("rss_kib_after_init", "rss_kib_after"):
        out[key] = int(statistics.median(r[key] for r in ok))
    out["rss_kib_all_rounds"] = [[r["rss_kib_after_init"], r["rss_kib_after"]] for r in ok]
    return out


def _botocore_version():
    try:
        import botocore
        return botocore.__version__
    except (ImportError, AttributeError):
        return "n/a"


def _count(it):
    d = {}
    for x in it:
        d[x] = d.get(x, 0) + 1
    return d


def needed_libs(path):
    """(name, resolved path, size) of the shared libraries path needs beyond
    glibc, from ldd."""
    try:
        out = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    libs = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" not in parts:
            continue
        name, target = parts[0], parts[parts.index("=>") + 1]
        if any(name.startswith(g) for g in GLIBC) or not os.path.exists(target):
            continue
        libs.append((name, os.path.realpath(target), os.path.getsize(os.path.realpath(target))))
    return libs


def phase_sizes(args):
    out = {}
    b = os.path.realpath(args.bin)
    with tempfile.TemporaryDirectory() as d:
        stripped = os.path.join(d, "p2pmesh")
        subprocess.run(["strip", "-o", stripped, b], check=True)
        s = os.path.getsize(stripped)
    libs = needed_libs(b)
    out["p2pmesh"] = {"binary": os.path.getsize(b), "stripped": s,
                      "libs": [[n, sz] for n, _, sz in libs],
                      "stripped_plus_libs": s + sum(sz for _, _, sz in libs)}
    nb = os.path.realpath(shutil.which(args.node) or args.node)
    js = os.path.getsize(os.path.join(HERE, "lambda-node", "bootstrap.mjs"))
    nlibs = needed_libs(nb)
    out["node"] = {"binary": os.path.getsize(nb), "bootstrap_mjs": js,
                   "binary_plus_bootstrap": os.path.getsize(nb) + js,
                   "libs": [[n, sz] for n, _, sz in nlibs],
                   "plus_libs": os.path.getsize(nb) + js + sum(sz for _, _, sz in nlibs)}
    return out


# --------------------------------------------------------------- report


def fmt(v, unit="", digits=1):
    if v is None:
        return "n/a"
    return ("{:,.%df}" % digits).format(v) + unit


def fx(r):
    return "n/a" if r is None else ("%.2fx" % r if r < 10 else "%.0fx" % r)


def mib(n):
    return "%.1f MiB" % (n / 1048576.0)


def report(s):
    kinds = [k for k in KINDS if k in s["init"]]
    inv = s["invocations"]
    m = s["machine"]
    L = []
    L.append("Machine: %s, %s; node %s; %s; %s. Runtime on CPU %s, emulator (Python %s, botocore %s) and "
             "redis-server on CPU %s. Machine busy with other work before/after: %.0f %% / %.0f %%. "
             "%s. Whole run: %.0f s."
             % (m["cpu"], m["kernel"], m["node"], m["redis"], m["p2pmesh"], s["pinning"]["runtime_cpu"],
                m["python"], m.get("botocore", "n/a"), s["pinning"]["harness_cpu"], s["busy_before"], s["busy_after"], m["date"],
                s["elapsed_s"]))
    L.append("")
    L.append("Init: %d runs of each runtime, interleaved. Invocations: $connect and join, %d warm-up "
             "invocations of each type, then %d measured of each type; best of %d rounds (runtimes "
             "interleaved) by runtime CPU, RSS the median of the rounds. CPU = utime+stime of the runtime "
             "process (all threads), %d µs per invocation resolution." %
             (s["runs"], s["warmup"], s["n"], s["rounds"], round(1e6 / CLK_TCK / s["n"])))
    L.append("")
    L.append("| runtime | init median | init p90 | loop: CPU per inv. | ping: CPU per inv. | loop: wall median | "
             "ping: wall median | RSS after init | RSS after the invocations |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k in kinds:
        i = s["init"][k]
        r = inv.get(k, {})
        lo, pi = r.get("loop") or {}, r.get("ping") or {}
        ri, ra = r.get("rss_kib_after_init"), r.get("rss_kib_after")
        L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            LABELS[k], fmt(i["median_ms"], " ms", 2), fmt(i["p90_ms"], " ms", 2),
            fmt(lo.get("cpu_us_per_inv"), " µs", 0), fmt(pi.get("cpu_us_per_inv"), " µs", 0),
            fmt(lo.get("wall_us_median"), " µs", 0), fmt(pi.get("wall_us_median"), " µs", 0),
            fmt(ri / 1024.0 if ri else None, " MiB"), fmt(ra / 1024.0 if ra else None, " MiB")))
    if "floor" in s["init"]:
        i = s["init"]["floor"]
        L.append("| %s | %s | %s | | | | | | |" % (LABELS["floor"], fmt(i["median_ms"], " ms", 2),
                                                  fmt(i["p90_ms"], " ms", 2)))
    L.append("")
    L.append("**Per invocation, in detail** (CPU: utime+stime, and the runtime threads' schedstat on-CPU "
             "time as a finer cross-check; the warm-up column is the first %d invocations of that type; "
             "wall: as the harness sees it; runtime's share: from the emulator writing the /next answer "
             "to receiving /response; emulator CPU: this Python process, all threads)" % s["warmup"])
    L.append("")
    L.append("| runtime | events | CPU (stat) | CPU (schedstat) | CPU, all rounds | CPU during warm-up | "
             "wall median | wall p99 | runtime's share, median | emulator CPU |")
    L.append("|---|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for k in kinds:
        r = inv.get(k, {})
        for ph in ("loop", "ping"):
            x = r.get(ph)
            if not x:
                continue
            w = r.get("warmup_" + ph) or {}
            L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                LABELS[k], ph, fmt(x["cpu_us_per_inv"], " µs", 0), fmt(x["sched_cpu_us_per_inv"], " µs"),
                ", ".join("%.0f%s" % (c, " †" if o >= OTHER_MAX else "")
                          for c, o in zip(x["all_rounds_cpu_us"], x["all_rounds_other_pct"])),
                fmt(w.get("sched_cpu_us_per_inv"), " µs", 0),
                fmt(x["wall_us_median"], " µs", 0), fmt(x["wall_us_p99"], " µs", 0),
                fmt(x["runtime_turnaround_us_median"], " µs", 0), fmt(x["emulator_cpu_us_per_inv"], " µs", 0)))
    if any(o >= OTHER_MAX for k in kinds for ph in ("loop", "ping")
           for o in ((inv.get(k) or {}).get(ph) or {}).get("all_rounds_other_pct", [])):
        L.append("")
        L.append("† other processes used more than %.0f %% of a core during that round (kept only when every "
                 "round was disturbed)." % OTHER_MAX)
    z = s["sizes"]
    L.append("")
    L.append("**Size**")
    L.append("")
    L.append("| | p2pmesh | Node.js loop | Node / p2pmesh |")
    L.append("|---|---:|---:|---:|")
    L.append("| p2pmesh as built; node binary + bootstrap.mjs | %s | %s | %s |" % (
        mib(z["p2pmesh"]["binary"]), mib(z["node"]["binary_plus_bootstrap"]),
        fx(ratio(z["node"]["binary_plus_bootstrap"], z["p2pmesh"]["binary"]))))
    L.append("| p2pmesh stripped (`strip -o`); the same | %s | %s | %s |" % (
        mib(z["p2pmesh"]["stripped"]), mib(z["node"]["binary_plus_bootstrap"]),
        fx(ratio(z["node"]["binary_plus_bootstrap"], z["p2pmesh"]["stripped"]))))
    L.append("| with the shared libraries each needs beyond glibc (p2pmesh: %s; node: %s) | %s | %s | %s |" % (
        ", ".join(n.split(".so")[0] for n, _ in z["p2pmesh"]["libs"]) or "none",
        ", ".join(n.split(".so")[0] for n, _ in z["node"]["libs"]) or "none",
        mib(z["p2pmesh"]["stripped_plus_libs"]), mib(z["node"]["plus_libs"]),
        fx(ratio(z["node"]["plus_libs"], z["p2pmesh"]["stripped_plus_libs"]))))
    L.append("")
    rr = s["ratios"]
    L.append("**Ratios** (Node.js loop / p2pmesh: how many times less p2pmesh takes)")
    L.append("")
    L.append("| | init median | init p90 | loop CPU | ping CPU | loop wall | ping wall | RSS after init | "
             "RSS after | size (stripped) |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k in ("p2pmesh", "p2pmesh-redis"):
        if k not in rr:
            continue
        x = rr[k]
        L.append("| %s vs Node.js loop | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            LABELS[k], fx(x["init_median"]), fx(x["init_p90"]), fx(x["loop_cpu"]), fx(x["ping_cpu"]),
            fx(x["loop_wall"]), fx(x["ping_wall"]), fx(x["rss_init"]), fx(x["rss_after"]),
            fx(x.get("stripped_size"))))
    L.append("")
    L.append("Targets: %s." % "; ".join("%s: %s" % (t, "met" if ok else "**missed**")
                                        for t, ok in s["targets"].items()))
    probs = s["problems"]
    L.append("")
    L.append("Problems seen: " + ("none (no signature failures, emulator violations, DynamoDB errors or "
                                  "runtime warnings; every pong arrived in order)" if not probs
                                  else "; ".join(probs)))
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(REPO, "p2pmesh"), help="the p2pmesh binary [./p2pmesh]")
    ap.add_argument("--node", default="node", help="the node binary [node]")
    ap.add_argument("--redis-server", default="redis-server")
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset of %s" % ",".join(KINDS))
    ap.add_argument("--runs", type=int, default=20, help="init runs per kind [20]")
    ap.add_argument("--n", type=int, default=2000, help="measured invocations per event type [2000]")
    ap.add_argument("--warmup", type=int, default=1000,
                    help="invocations of each event type before the measured ones [1000]")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of the invocation phases, kinds interleaved; best kept [3]")
    ap.add_argument("--settle", type=float, default=0.3, help="seconds before reading RSS [0.3]")
    ap.add_argument("--runtime-cpu", type=int, default=0)
    ap.add_argument("--harness-cpu", type=int, default=1)
    ap.add_argument("--quiet-max", type=float, default=15.0, help="%% busy tolerated before starting [15]")
    ap.add_argument("--quiet-wait", type=float, default=60.0, help="seconds to wait for that at most [60]")
    ap.add_argument("--quiet-each", type=float, default=20.0,
                    help="the same wait, at most this long, before every round of every runtime [20]")
    ap.add_argument("--out", default=None, help="result directory [tests/bench/results/lambda-<stamp>]")
    args = ap.parse_args()

    kinds = [k for k in args.kinds.split(",") if k]
    for k in kinds:
        if k not in KINDS:
            ap.error("unknown kind %r" % k)
    if not os.access(args.bin, os.X_OK):
        ap.error("%s is not an executable (build it, or pass --bin)" % args.bin)
    if "node" in kinds and not shutil.which(args.node):
        ap.error("node not found (--node)")
    skipped = {}
    if "p2pmesh-redis" in kinds and not shutil.which(args.redis_server):
        kinds.remove("p2pmesh-redis")
        skipped["p2pmesh-redis"] = "redis-server not found"
    # bounded loops, and no stray children if interrupted
    t_start = time.monotonic()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    outdir = args.out or os.path.join(HERE, "results", "lambda-" + stamp)
    os.makedirs(outdir, exist_ok=True)
    busy_before = wait_quiet(args.quiet_max, args.quiet_wait)
    pin = Pinning(args.runtime_cpu, args.harness_cpu)
    log("results in %s; machine %.0f %% busy; pinning %s" % (outdir, busy_before, "on" if pin.on else "off"))

    args.floor = build_floor(outdir)
    log("1. init: %d runs of %s" % (args.runs, ", ".join(kinds + (["floor"] if args.floor else []))))
    init = phase_init(args, kinds, pin, outdir)
    for k in init:
        log("   %s: median %s ms, p90 %s ms" % (k, fmt(init[k]["median_ms"], "", 2), fmt(init[k]["p90_ms"], "", 2)))
    rounds = {k: [] for k in kinds}
    for rnd in range(args.rounds):
        for k in kinds:
            busy = wait_quiet(args.quiet_max, args.quiet_each)
            log("2./3. round %d/%d, %s: %d warm-up, then %d measured, loop and ping (machine %.0f %% busy)"
                % (rnd + 1, args.rounds, k, args.warmup, args.n, busy))
            r = phase_invocations(args, k, pin, outdir)
            r["round"] = rnd + 1
            r["busy_before_pct"] = round(busy, 1)
            rounds[k].append(r)
            if "error" in r:
                log("   %s failed: %s" % (k, r["error"]))
            else:
                log("   loop %s µs CPU, %s µs wall; ping %s µs CPU, %s µs wall; RSS %s -> %s KiB" % (
                    r["loop"]["sched_cpu_us_per_inv"], r["loop"]["wall_us_median"],
                    r["ping"]["sched_cpu_us_per_inv"], r["ping"]["wall_us_median"],
                    r["rss_kib_after_init"], r["rss_kib_after"]))
    invocations = {k: best_of(rounds[k]) for k in kinds}
    log("4. sizes")
    sizes = phase_sizes(args)
    busy_after = cpu_busy()

    def ver(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            return "n/a"

    cpu = "n/a"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    binpath = os.path.realpath(args.bin)
    with open(binpath, "rb") as f:
        bin_sha = hashlib.sha256(f.read()).hexdigest()[:12]
    if binpath.startswith(REPO + os.sep):
        git = ver(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
        if ver(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"]) != "n/a":
            git += " with uncommitted changes"
        origin = "built from this tree, git %s" % git
    else:
        origin = "binary %s, not from this tree" % binpath
    machine = {"cpu": "%d x %s" % (os.cpu_count(), cpu), "kernel": "kernel " + os.uname().release,
               "node": ver([args.node, "--version"]) if "node" in kinds else "n/a",
               "redis": ver([args.redis_server, "--version"]).split(" sha=")[0] if shutil.which(args.redis_server)
               else "redis n/a",
               "p2pmesh": "%s (%s; sha256 %s)" % (ver([args.bin, "--version"]), origin, bin_sha),
               "python": sys.version.split()[0], "botocore": _botocore_version(), "clk_tck": CLK_TCK,
               "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}

    def g(kind, *path):
        v = invocations.get(kind) if kind != "init" else init
        for p in path:
            if not isinstance(v, dict):
                return None
            v = v.get(p)
        return v

    ratios = {}
    for k in ("p2pmesh", "p2pmesh-redis"):
        if k not in kinds or "node" not in kinds:
            continue
        ratios[k] = {
            "init_median": ratio(init["node"]["median_ms"], init[k]["median_ms"]),
            "init_p90": ratio(init["node"]["p90_ms"], init[k]["p90_ms"]),
            "loop_cpu": ratio(g("node", "loop", "cpu_us_per_inv"), g(k, "loop", "cpu_us_per_inv")),
            "ping_cpu": ratio(g("node", "ping", "cpu_us_per_inv"), g(k, "ping", "cpu_us_per_inv")),
            "loop_wall": ratio(g("node", "loop", "wall_us_median"), g(k, "loop", "wall_us_median")),
            "ping_wall": ratio(g("node", "ping", "wall_us_median"), g(k, "ping", "wall_us_median")),
            "rss_init": ratio(g("node", "rss_kib_after_init"), g(k, "rss_kib_after_init")),
            "rss_after": ratio(g("node", "rss_kib_after"), g(k, "rss_kib_after")),
        }
        if k == "p2pmesh":
            ratios[k]["stripped_size"] = ratio(sizes["node"]["binary_plus_bootstrap"], sizes["p2pmesh"]["stripped"])
    targets = {}
    if "p2pmesh" in kinds:
        med = init["p2pmesh"]["median_ms"]
        targets["p2pmesh init < 10 ms (median %s ms)" % fmt(med, "", 2)] = med is not None and med < 10
        if "node" in kinds:
            r = ratios["p2pmesh"]["init_median"]
            targets["init >= 10x faster than Node (%s)" % fx(r)] = r is not None and r >= 10
        for ph in ("loop", "ping"):
            c = g("p2pmesh", ph, "cpu_us_per_inv")
            targets["p2pmesh %s < 100 µs CPU per invocation (%s µs)" % (ph, fmt(c, "", 0))] = c is not None and c < 100
    problems = []
    for k in kinds:
        for r in invocations[k]["rounds"]:
            tag = "%s (round %d)" % (k, r["round"])
            if "error" in r:
                problems.append("%s: %s" % (tag, r["error"]))
            if r.get("sig_failures"):
                problems.append("%s: %d signature failures, first: %s"
                                % (tag, len(r["sig_failures"]), r["sig_failures"][0]))
            if r.get("violations"):
                problems.append("%s: emulator violations: %s" % (tag, r["violations"][:3]))
            if r.get("ddb_errors"):
                problems.append("%s: DynamoDB errors: %s" % (tag, r["ddb_errors"][:3]))
            if r.get("log_problems"):
                problems.append("%s: %d warning/error log lines, first: %s"
                                % (tag, len(r["log_problems"]), r["log_problems"][0]))
            if r.get("pongs_ok") is False:
                problems.append("%s: pongs missing or out of order" % tag)
            if r.get("alive_at_end") is False:
                problems.append("%s: runtime exited during the run" % tag)
        if init[k]["errors"]:
            problems.append("%s: init: %s" % (k, init[k]["errors"][:2]))
        if init[k]["log_problems"]:
            problems.append("%s: init runs logged %d warning/error lines, first: %s"
                            % (k, len(init[k]["log_problems"]), init[k]["log_problems"][0]))
    for k, why in skipped.items():
        problems.append("%s not measured: %s" % (k, why))

    summary = {"bench": "lambda", "stamp": stamp, "machine": machine,
               "pinning": {"on": pin.on, "runtime_cpu": args.runtime_cpu, "harness_cpu": args.harness_cpu},
               "busy_before": round(busy_before, 1), "busy_after": round(busy_after, 1),
               "runs": args.runs, "n": args.n, "warmup": args.warmup, "rounds": args.rounds,
               "init": init, "invocations": invocations, "sizes": sizes, "ratios": ratios,
               "targets": targets, "problems": problems,
               "elapsed_s": round(time.monotonic() - t_start, 1)}
    md = report(summary)
    with open(os.path.join(outdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(outdir, "summary.md"), "w") as f:
        f.write(md + "\n")
    print(md)
    print()
    print(json.dumps(summary, separators=(",", ":")))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
