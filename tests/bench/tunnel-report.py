#!/usr/bin/env python3
"""tunnel-report.py: the markdown summary of a tunnel_bench.sh run.

    tunnel-report.py DIR                 the summary (markdown) on stdout
    tunnel-report.py --lat-rate F DIR    F x the weakest server's CONNECT
                                         setups per server CPU-s (the
                                         open-loop rate of the latency phase)
    tunnel-report.py --missed DIR        phases where p2pmesh misses a target

DIR holds the tunnel-loadgen JSON lines <phase>-<server>-r<N>.json, env.json,
skipped.jsonl, openssl-speed.txt and perf-<phase>.txt (tunnel_bench.sh).
Python 3 standard library only.
"""
import glob
import json
import math
import os
import re
import sys

SERVERS = ["p2pmesh", "stunnel", "haproxy"]
NAMES = {
    "p2pmesh": "p2pmesh",
    "stunnel": "stunnel4 + tinyproxy",
    "haproxy": "HAProxy + tinyproxy",
}
FRONT = {"p2pmesh": "p2pmesh", "stunnel": "stunnel4", "haproxy": "HAProxy"}
THROUGHPUT = ["handshake", "resume", "connect", "bulk-down", "bulk-up"]
PHASE_TITLE = {
    "handshake": "full mTLS handshakes",
    "resume": "resumed handshakes",
    "connect": "CONNECT setups (closed loop)",
    "latency": "CONNECT setups (open loop)",
    "mixed": "CONNECT setups during bulk downloads",
    "mixed-bulk": "bulk downloads beside CONNECT setups",
    "bulk-down": "bulk download",
    "bulk-up": "bulk upload",
    "idle": "idle tunnels",
}
# targets (p2pmesh against a peer, judged on the peer's front process alone,
# the stricter reading; the whole-stack ratio is shown next to it)
T_HS = 1.10  # full handshakes per CPU-s >= 1.1x HAProxy
T_BULK = 1.05  # bulk MB per CPU-s >= 1.05x HAProxy
T_IDLE = 0.5  # idle KiB per tunnel <= 0.5x stunnel
T_IDLE_KB = 25.0  # goal: <= 25 KB per tunnel
QUIET = 0.1  # a round is disturbed when other work used > 10 % of a core


def load(d):
    runs = {}
    for f in sorted(glob.glob(os.path.join(d, "*-r*.json"))):
        m = re.match(r"(.+)-(p2pmesh|stunnel|haproxy)-r(\d+)\.json$",
                     os.path.basename(f))
        if not m:
            continue
        try:
            with open(f) as fh:
                o = json.loads(fh.read().strip().splitlines()[-1])
        except (OSError, ValueError, IndexError):
            continue
        o["_round"] = int(m.group(3))
        runs.setdefault((m.group(1), m.group(2)), []).append(o)
    return runs


def quiet(o):
    return o.get("other_cpu_s", 0) <= QUIET * max(o.get("duration_s", 1), 1e-9)


def usable(o, ph):
    if ph == "idle":
        return o.get("idle", {}).get("kb_per_tunnel", -1) >= 0
    if ph in ("latency", "mixed"):
        return o.get("to_200_us", {}).get("n", 0) > 0
    return o.get("per_server_cpu_s", -1) > 0


def best(runs, ph, s):
    """The kept round: throughput max per CPU-s, latency min p99, idle the
    median; undisturbed rounds preferred."""
    rs = [o for o in runs.get((ph, s), []) if usable(o, ph)]
    if not rs:
        return None
    # in the mixed phase the other generator is "other work" by design
    q = rs if ph == "mixed" else [o for o in rs if quiet(o)] or rs
    if ph in ("latency", "mixed"):
        return min(q, key=lambda o: o["to_200_us"]["p99"])
    if ph == "idle":
        q = sorted(q, key=lambda o: o["idle"]["kb_per_tunnel"])
        return q[len(q) // 2]
    return max(q, key=lambda o: o["per_server_cpu_s"])


def capacity(runs, ph, s):
    o = best(runs, ph, s)
    return o["per_server_cpu_s"] if o else None


def fmt(v, nd=0):
    if v is None or (isinstance(v, float) and (math.isnan(v) or v < 0)):
        return "n/a"
    if nd == 0:
        return f"{v:,.0f}"
    return f"{v:,.{nd}f}"


def pct(v):
    return "n/a" if v is None or v < 0 else f"{100 * v:.0f} %"


def ratio(a, b):
    if a is None or b is None or a <= 0 or b <= 0:
        return None
    return a / b


def rfmt(r):
    return "n/a" if r is None else f"{r:.2f}x"


def speed(d):
    """openssl speed figures on the server's core."""
    try:
        txt = open(os.path.join(d, "openssl-speed.txt")).read()
    except OSError:
        return {}
    out = {}
    m = re.search(r"ecdsa \(nistp256\)\s+\S+\s+\S+\s+([\d.]+)\s+([\d.]+)", txt)
    if m:
        out["sign"], out["verify"] = float(m.group(1)), float(m.group(2))
    m = re.search(r"ecdh \(X25519\)\s+\S+\s+([\d.]+)", txt)
    if m:
        out["x25519"] = float(m.group(1))
    m = re.search(r"AES-256-GCM\s+([\d.]+)k", txt)
    if m:
        out["aes_mbs"] = float(m.group(1)) * 1000 / 1e6
    if {"sign", "verify", "x25519"} <= out.keys():
        s, v, x = out["sign"], out["verify"], out["x25519"]
        # what the server computes in a full TLS 1.3 mTLS handshake: one
        # ECDSA sign (its CertificateVerify), two verifies (the client's
        # CertificateVerify and the CA's signature on the client
        # certificate), two X25519 scalar multiplications (key pair,
        # shared secret)
        out["bound_full"] = 1 / (1 / s + 2 / v + 2 / x)
        # the formula: one sign + one verify + one X25519
        out["bound_simple"] = 1 / (1 / s + 1 / v + 1 / x)
        out["bound_resume"] = x / 2
    return out


def verdict(o):
    su = o.get("server_cpu_util", -1)
    cu = o.get("client_cpu_util", -1)
    if su >= 0.9:
        return "server-bound"
    if cu >= 0.9:
        return "**load generator-bound**"
    if o.get("other_cpu_s", 0) > QUIET * o.get("duration_s", 1):
        return "neither saturated (other work on the machine)"
    return "neither saturated"


def missed(d):
    runs = load(d)
    out = []
    pm = best(runs, "handshake", "p2pmesh")
    hp = best(runs, "handshake", "haproxy")
    if pm and hp:
        r = ratio(pm["per_server_cpu_s"], hp["per_front_cpu_s"])
        if r is None or r < T_HS:
            out.append("handshake")
    for ph in ("bulk-down", "bulk-up"):
        pm, hp = best(runs, ph, "p2pmesh"), best(runs, ph, "haproxy")
        if pm and hp:
            r = ratio(pm["per_server_cpu_s"], hp["per_front_cpu_s"])
            if r is None or r < T_BULK:
                out.append(ph)
    pm, st = best(runs, "idle", "p2pmesh"), best(runs, "idle", "stunnel")
    if pm:
        kb = pm["idle"]["kb_per_tunnel"]
        stf = st["idle"]["front_kb_per_tunnel"] if st else None
        if kb * 1.024 > T_IDLE_KB or (stf is not None and stf > 0 and kb > T_IDLE * stf):
            out.append("idle")
    return out


def lat_rate(frac, d):
    runs = load(d)
    caps = [capacity(runs, "connect", s) for s in SERVERS]
    caps = [c for c in caps if c]
    if not caps:
        return None
    r = frac * min(caps)
    # two significant digits
    mag = 10 ** max(0, int(math.floor(math.log10(r))) - 1)
    return max(1, int(r // mag * mag))


def summary(d):
    runs = load(d)
    try:
        env = json.load(open(os.path.join(d, "env.json")))
    except (OSError, ValueError):
        env = {}
    skipped = []
    try:
        for line in open(os.path.join(d, "skipped.jsonl")):
            line = line.strip()
            if line:
                skipped.append(json.loads(line))
    except (OSError, ValueError):
        pass
    sp = speed(d)
    servers = [s for s in SERVERS if any(k[1] == s for k in runs)]
    L = []
    w = L.append

    w(f"## Tunnel benchmark `tunnel-{env.get('stamp', '?')}`\n")
    w(f"Machine: {env.get('cpus', '?')} x {env.get('cpu_model', '?')}, kernel "
      f"{env.get('kernel', '?')}; {env.get('openssl', '?')}, libevent "
      f"{env.get('libevent', '?')}; stunnel {env.get('stunnel', '?').replace('stunnel ', '')}, "
      f"HAProxy {env.get('haproxy', '?')}, tinyproxy {env.get('tinyproxy', '?')}; "
      f"p2pmesh git {env.get('p2pmesh_git', '?')} (sha256 {env.get('p2pmesh_sha256') or '?'}). "
      f"Servers on CPU {env.get('server_cpu', '?')}, tunnel-loadgen on CPU "
      f"{env.get('client_cpu', '?')}. Certificates: {env.get('cert_source', '?')} "
      f"(ECDSA P-256). Machine busy with other work before/after: "
      f"{env.get('busy_before', '?')} % / {env.get('busy_after', '?')} %. "
      f"Run time {env.get('seconds', '?')} s.\n")
    w(f"TLS 1.3 everywhere, X25519, TLS_AES_256_GCM_SHA384 (what every server "
      f"negotiates with OpenSSL's default client offer); {env.get('duration', '?')} s "
      f"measured after {env.get('warmup', '?')} s warm-up, best of "
      f"{env.get('rounds', '?')} round(s). Handshakes: {env.get('hs_conns', '?')} "
      f"connections in a closed loop, each waiting for the server's "
      f"NewSessionTicket. CONNECT: {env.get('connect_conns', '?')} in a closed loop "
      f"(capacity), then open loop at {env.get('lat_rate') or '?'} setups/s for "
      f"every server ({env.get('lat_fraction', '?')} of the weakest capacity); each "
      f"setup is TCP + resumed TLS + CONNECT + 200 + one 16-byte echo. Bulk: "
      f"{env.get('bulk_tunnels', '?')} tunnels. Idle: {env.get('idle_tunnels', '?')} "
      f"tunnels held {env.get('idle_settle', '?')} s.\n")
    for sk in skipped:
        w(f"- **{sk.get('server')}** skipped: {sk.get('reason')}")
    if skipped:
        w("")

    # ------------------------------------------------------------ headline
    w("**Per server** (stack = every process of the server; front = the "
      "TLS-terminating process alone: stunnel4, HAProxy; for p2pmesh both "
      "are the one process)\n")
    w("| server | full handshakes per CPU-s, stack / front | resumed per CPU-s, "
      "stack / front | CONNECT setups per CPU-s, stack / front | CONNECT to 200 "
      "p50 / p99 µs | bulk down MB per CPU-s, stack / front | bulk up MB per "
      "CPU-s, stack / front | idle KiB per tunnel, stack / front |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|")
    for s in servers:
        cells = [NAMES[s]]
        for ph in ("handshake", "resume", "connect"):
            o = best(runs, ph, s)
            cells.append(f"**{fmt(o['per_server_cpu_s'])}** / {fmt(o['per_front_cpu_s'])}"
                         if o else "n/a")
        o = best(runs, "latency", s)
        cells.append(f"{fmt(o['to_200_us']['p50'], 0)} / **{fmt(o['to_200_us']['p99'], 0)}**"
                     if o else "n/a")
        for ph in ("bulk-down", "bulk-up"):
            o = best(runs, ph, s)
            cells.append(f"**{fmt(o['per_server_cpu_s'])}** / {fmt(o['per_front_cpu_s'])}"
                         if o else "n/a")
        o = best(runs, "idle", s)
        cells.append(f"**{fmt(o['idle']['kb_per_tunnel'], 1)}** / "
                     f"{fmt(o['idle']['front_kb_per_tunnel'], 1)}" if o else "n/a")
        w("| " + " | ".join(cells) + " |")
    w("")

    if sp.get("bound_full"):
        w(f"Crypto bound on the server's core (`openssl speed`): ECDSA P-256 "
          f"{fmt(sp['sign'])} signs/s and {fmt(sp['verify'])} verifies/s, X25519 "
          f"{fmt(sp['x25519'])} ops/s, AES-256-GCM {fmt(sp.get('aes_mbs'))} MB/s "
          f"(16 KiB blocks). A full mTLS handshake costs the server one sign, two "
          f"verifies (client CertificateVerify, CA signature on the client "
          f"certificate) and two X25519 operations: at most "
          f"**{fmt(sp['bound_full'])} handshakes per CPU-s** "
          f"({fmt(sp['bound_simple'])} counting one sign + one verify + one "
          f"X25519); a resumed one (PSK with ECDHE) two X25519 operations: "
          f"{fmt(sp['bound_resume'])} per CPU-s.\n")
        w("| server | full handshakes per CPU-s (stack) | of the crypto bound "
          "(1 sign + 2 verify + 2 X25519) | of 1 sign + 1 verify + 1 X25519 | "
          "resumed per CPU-s | of the resumed bound |")
        w("|---|---:|---:|---:|---:|---:|")
        for s in servers:
            o, r = best(runs, "handshake", s), best(runs, "resume", s)
            hv = o["per_server_cpu_s"] if o else None
            rv = r["per_server_cpu_s"] if r else None
            w(f"| {NAMES[s]} | {fmt(hv)} | "
              f"{pct(hv / sp['bound_full']) if hv else 'n/a'} | "
              f"{pct(hv / sp['bound_simple']) if hv else 'n/a'} | {fmt(rv)} | "
              f"{pct(rv / sp['bound_resume']) if rv else 'n/a'} |")
        w("")

    # ------------------------------------------------------------ ratios
    if "p2pmesh" in servers:
        w("**Ratios** (p2pmesh / peer; for CPU figures higher is better for "
          "p2pmesh, for p99 and memory lower is better)\n")
        w("| metric | vs HAProxy stack | vs HAProxy front | vs stunnel stack | "
          "vs stunnel front |")
        w("|---|---:|---:|---:|---:|")
        for ph in THROUGHPUT:
            pm = best(runs, ph, "p2pmesh")
            cells = [f"{PHASE_TITLE[ph]} per CPU-s"]
            for peer in ("haproxy", "stunnel"):
                po = best(runs, ph, peer)
                for key in ("per_server_cpu_s", "per_front_cpu_s"):
                    cells.append(rfmt(ratio(pm and pm["per_server_cpu_s"],
                                            po and po[key])))
            w("| " + " | ".join(cells) + " |")
        pm = best(runs, "latency", "p2pmesh")
        cells = ["CONNECT to 200 p99 at equal load"]
        for peer in ("haproxy", "stunnel"):
            po = best(runs, "latency", peer)
            r = rfmt(ratio(pm and pm["to_200_us"]["p99"],
                           po and po["to_200_us"]["p99"]))
            cells += [r, r]
        w("| " + " | ".join(cells) + " |")
        pm = best(runs, "mixed", "p2pmesh")
        cells = ["CONNECT to 200 p99 during bulk downloads"]
        for peer in ("haproxy", "stunnel"):
            po = best(runs, "mixed", peer)
            r = rfmt(ratio(pm and pm["to_200_us"]["p99"],
                           po and po["to_200_us"]["p99"]))
            cells += [r, r]
        w("| " + " | ".join(cells) + " |")
        pm = best(runs, "idle", "p2pmesh")
        cells = ["idle KiB per tunnel"]
        for peer in ("haproxy", "stunnel"):
            po = best(runs, "idle", peer)
            for key in ("kb_per_tunnel", "front_kb_per_tunnel"):
                cells.append(rfmt(ratio(pm and pm["idle"]["kb_per_tunnel"],
                                        po and po["idle"][key])))
        w("| " + " | ".join(cells) + " |")
        w("")

        # -------------------------------------------------------- targets
        w("**Against the targets** (judged against the peer's front process "
          "alone, the stricter reading; the whole-stack ratio in brackets)\n")
        w("| target | measured | result |")
        w("|---|---|---|")

        def judge(ok):
            return "met" if ok else "**missed**"

        pm, hp = best(runs, "handshake", "p2pmesh"), best(runs, "handshake", "haproxy")
        if pm and hp:
            r = ratio(pm["per_server_cpu_s"], hp["per_front_cpu_s"])
            rs = ratio(pm["per_server_cpu_s"], hp["per_server_cpu_s"])
            extra = ""
            if sp.get("bound_full"):
                extra = (f"; {pct(pm['per_server_cpu_s'] / sp['bound_full'])} of "
                         f"the crypto bound {fmt(sp['bound_full'])}")
            w(f"| full mTLS handshakes per server CPU-s >= {T_HS}x HAProxy's | "
              f"{fmt(pm['per_server_cpu_s'])} vs {fmt(hp['per_front_cpu_s'])}: "
              f"{rfmt(r)} ({rfmt(rs)} vs the stack){extra} | {judge(r and r >= T_HS)} |")
        for ph in ("bulk-down", "bulk-up"):
            pm, hp = best(runs, ph, "p2pmesh"), best(runs, ph, "haproxy")
            if pm and hp:
                r = ratio(pm["per_server_cpu_s"], hp["per_front_cpu_s"])
                rs = ratio(pm["per_server_cpu_s"], hp["per_server_cpu_s"])
                w(f"| {PHASE_TITLE[ph]}: MB per server CPU-s >= {T_BULK}x HAProxy's | "
                  f"{fmt(pm['per_server_cpu_s'])} vs {fmt(hp['per_front_cpu_s'])}: "
                  f"{rfmt(r)} ({rfmt(rs)} vs the stack) | {judge(r and r >= T_BULK)} |")
        pm, st = best(runs, "idle", "p2pmesh"), best(runs, "idle", "stunnel")
        if pm:
            kb = pm["idle"]["kb_per_tunnel"]
            if st:
                stf = st["idle"]["front_kb_per_tunnel"]
                sts = st["idle"]["kb_per_tunnel"]
                r = ratio(kb, stf)
                w(f"| idle memory per tunnel <= {T_IDLE}x stunnel's | {fmt(kb, 1)} "
                  f"vs {fmt(stf, 1)} KiB: {rfmt(r)} ({rfmt(ratio(kb, sts))} vs the "
                  f"stack, {fmt(sts, 1)} KiB) | {judge(r is not None and r <= T_IDLE)} |")
            w(f"| goal: idle memory per tunnel <= {T_IDLE_KB:.0f} KB (both legs, TLS "
              f"included; server RSS) | {fmt(kb, 1)} KiB = {fmt(kb * 1.024, 1)} KB | "
              f"{judge(kb * 1.024 <= T_IDLE_KB)} |")
        w("")

    # ------------------------------------------------------------ details
    w("**Throughput runs** († other processes used more than 10 % of a core "
      "during the window)\n")
    w("| phase | server | rate | server CPU | front CPU | loadgen CPU | other "
      "work, CPU-s | per server CPU-s | per front CPU-s | failed / no ticket | "
      "all rounds (per server CPU-s) |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for ph in THROUGHPUT:
        for s in servers:
            o = best(runs, ph, s)
            if not o:
                if runs.get((ph, s)):
                    w(f"| {PHASE_TITLE[ph]} | {NAMES[s]} | failed | | | | | | | | |")
                continue
            unit = "MB/s" if ph.startswith("bulk") else "/s"
            dur = max(o["duration_s"], 1e-9)
            allr = ", ".join(fmt(x["per_server_cpu_s"]) + ("" if quiet(x) else " †")
                             for x in runs[(ph, s)])
            w(f"| {PHASE_TITLE[ph]} | {NAMES[s]} | {fmt(o['rate_per_s'], 1 if unit == 'MB/s' else 0)} {unit} | "
              f"{pct(o['server_cpu_util'])} | {pct(o['front_cpu_s'] / dur)} | "
              f"{pct(o['client_cpu_util'])} | {fmt(o['other_cpu_s'], 1)} | "
              f"**{fmt(o['per_server_cpu_s'])}** | {fmt(o['per_front_cpu_s'])} | "
              f"{o['failed']} / {o['no_ticket']} | {allr} |")
    w("")

    lat = [(s, best(runs, "latency", s)) for s in servers]
    if any(o for _, o in lat):
        w(f"**CONNECT setup latency at equal load** (open loop at "
          f"{env.get('lat_rate', '?')} setups/s; from each setup's intended start "
          f"time: TCP connect, resumed TLS 1.3 handshake, CONNECT, until the 200 "
          f"head; then one 16-byte echo through the tunnel; µs)\n")
        w("| server | setups/s done | to 200 p50 | p90 | p99 | p99.9 | max | "
          "to echo p50 | to echo p99 | handshake p99 | start lag p99 | server CPU "
          "| loadgen CPU | failed | p99 all rounds |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for s, o in lat:
            if not o:
                continue
            h, e = o["to_200_us"], o["to_echo_us"]
            allr = ", ".join(fmt(x["to_200_us"]["p99"], 0) + ("" if quiet(x) else " †")
                             for x in runs[("latency", s)])
            w(f"| {NAMES[s]} | {fmt(o['rate_per_s'])} | {fmt(h['p50'], 0)} | "
              f"{fmt(h['p90'], 0)} | **{fmt(h['p99'], 0)}** | {fmt(h['p999'], 0)} | "
              f"{fmt(h['max'], 0)} | {fmt(e['p50'], 0)} | {fmt(e['p99'], 0)} | "
              f"{fmt(o['handshake_us']['p99'], 0)} | {fmt(o['start_lag_us']['p99'], 0)} | "
              f"{pct(o['server_cpu_util'])} | {pct(o['client_cpu_util'])} | "
              f"{o['failed']} | {allr} |")
        w("")

    mixed = [(s, best(runs, "mixed", s)) for s in servers]
    if any(o for _, o in mixed):
        w(f"**CONNECT setups during bulk downloads** (one setup at a time, closed "
          f"loop, while {env.get('mixed_bulk', '?')} other tunnels through the same "
          f"server download {fmt(env.get('mixed_rate'))} MB/s in total, the same for "
          f"every server; both generators on the client core; µs)\n")
        w("| server | setups/s | to 200 p50 | p90 | p99 | max | to echo p99 | "
          "downloads, MB/s | server CPU | failed | p99 all rounds |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for s, o in mixed:
            if not o:
                continue
            h = o["to_200_us"]
            bg = [x for x in runs.get(("mixed-bulk", s), [])
                  if x.get("_round") == o["_round"]]
            mbs = bg[0]["rate_per_s"] if bg else None
            allr = ", ".join(fmt(x["to_200_us"]["p99"], 0)
                             for x in runs[("mixed", s)] if usable(x, "mixed"))
            w(f"| {NAMES[s]} | {fmt(o['rate_per_s'])} | {fmt(h['p50'], 0)} | "
              f"{fmt(h['p90'], 0)} | **{fmt(h['p99'], 0)}** | {fmt(h['max'], 0)} | "
              f"{fmt(o['to_echo_us']['p99'], 0)} | {fmt(mbs)} | "
              f"{pct(o['server_cpu_util'])} | {o['failed']} | {allr} |")
        w("")

    idle = [(s, best(runs, "idle", s)) for s in servers]
    if any(o for _, o in idle):
        w("**Idle tunnels** (server RSS before the first connection and after "
          "all tunnels were open and had settled; each tunnel did CONNECT and "
          "one 16-byte echo)\n")
        w("| server | tunnels up | stack RSS before | after | KiB per tunnel | "
          "front RSS before | after | front KiB per tunnel | processes | threads "
          "before / after | setup s |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for s, o in idle:
            if not o:
                continue
            i = o["idle"]
            w(f"| {NAMES[s]} | {i['ready'] - i['closed']}/{i['tunnels']} | "
              f"{fmt(i['rss_before_kb'] / 1024, 1)} MiB | {fmt(i['rss_after_kb'] / 1024, 1)} MiB | "
              f"**{fmt(i['kb_per_tunnel'], 1)}** | {fmt(i['front_rss_before_kb'] / 1024, 1)} MiB | "
              f"{fmt(i['front_rss_after_kb'] / 1024, 1)} MiB | {fmt(i['front_kb_per_tunnel'], 1)} | "
              f"{o['server_procs']} | {i['threads_before']} / {i['threads_after']} | "
              f"{fmt(i['setup_s'], 2)} |")
        w("")

    # ------------------------------------------------------------ bottleneck
    w("**Bottleneck check** (kept round of each run: the server stack's share "
      "of its core, the load generator's share of its own, other work)\n")
    for ph in THROUGHPUT + ["latency"]:
        for s in servers:
            o = best(runs, ph, s)
            if not o:
                continue
            v = verdict(o) if ph != "latency" else "open loop (not meant to saturate)"
            w(f"- {PHASE_TITLE[ph]}, {NAMES[s]}: server {pct(o['server_cpu_util'])}, "
              f"load generator {pct(o['client_cpu_util'])}, other work "
              f"{fmt(o['other_cpu_s'], 1)} CPU-s: {v}.")
    w("")

    # ------------------------------------------------------------ problems
    probs = []
    for (ph, s), rs in sorted(runs.items()):
        for o in rs:
            bad = []
            for k in ("failed", "no_ticket", "timeouts", "tcp_fail", "tls_fail",
                      "refused", "bad_echo", "eof_early", "target_errors",
                      "target_bad_hello"):
                if o.get(k):
                    bad.append(f"{k} {o[k]}")
            if o.get("first_refusal"):
                bad.append(f"first refusal `{o['first_refusal']}`")
            if ph == "idle" and o.get("idle", {}).get("closed"):
                bad.append(f"idle tunnels closed {o['idle']['closed']}")
            if not o.get("ok", True):
                bad.append("run not ok")
            if bad:
                probs.append(f"- {PHASE_TITLE.get(ph, ph)}, {NAMES[s]}, round "
                             f"{o['_round']}: " + ", ".join(bad))
    try:
        for line in open(os.path.join(d, "server-exits.txt")):
            if line.strip():
                probs.append(f"- server process at stop ({line.split()[0]}): "
                             + " ".join(line.split()[1:]))
    except OSError:
        pass
    w("**Problems seen:** " + ("none." if not probs else ""))
    for p in probs:
        w(p)
    w("")

    # ------------------------------------------------------------ profiles
    perfs = sorted(glob.glob(os.path.join(d, "perf-*.txt")))
    if perfs:
        w("**Profiles of p2pmesh** (`perf record -e cpu-clock -g`, full output "
          "in the result directory)\n")
        for f in perfs:
            lines = open(f).read().splitlines()
            w(f"`{os.path.basename(f)}`:\n")
            w("```")
            sect = 0
            for ln in lines:
                if ln.startswith("## "):
                    sect += 1
                    n_in = 0
                    if sect > 2:
                        break
                    w(ln)
                    continue
                if ln.startswith("# "):
                    w(ln)
                    continue
                n_in += 1
                if n_in <= (8 if sect == 1 else 20):
                    w(ln.rstrip())
            w("```\n")
    return "\n".join(L)


def main(argv):
    if len(argv) == 3 and argv[0] == "--lat-rate":
        r = lat_rate(float(argv[1]), argv[2])
        if r is None:
            return 1
        print(r)
        return 0
    if len(argv) == 2 and argv[0] == "--missed":
        print(" ".join(missed(argv[1])))
        return 0
    if len(argv) == 1:
        print(summary(argv[0]))
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
