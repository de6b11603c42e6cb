#!/usr/bin/env python3
"""game-report.py: the markdown summary of a game_bench.sh run.

  game-report.py DIR TICK_MS CPU_MAX TARGET   summary of DIR/run-*.json
  game-report.py --first-miss DIR TICK_MS CPU_MAX
                                   the smallest player count that missed the
                                   target (nothing when every run met it)
"""
import glob
import json
import os
import sys


def load(d):
    runs = []
    for f in glob.glob(os.path.join(d, "run-*.json")):
        try:
            lines = [l for l in open(f).read().splitlines() if l.strip()]
            o = json.loads(lines[-1])
        except (OSError, ValueError, IndexError):
            n = os.path.basename(f)[4:-5]
            if n.isdigit():
                runs.append({"players": int(n), "failed_run": True})
            continue
        runs.append(o)
    runs.sort(key=lambda o: o["players"])
    return runs


def verdict(o, tick_ms, cpu_max):
    """(meets target, reasons it does not)"""
    if o.get("failed_run"):
        return False, ["no result"]
    why = []
    if not o.get("ok", False):
        why.append("run not ok")
    if o["lateness_ms"]["n"] == 0 or o["lateness_ms"]["p99"] > tick_ms:
        why.append("p99 > tick")
    if o["server_cpu_util"] > cpu_max:
        why.append("server core saturated")
    if o.get("tick_rate_ratio", 0) < 0.99:
        why.append("tick rate < 99 %")
    return not why, why


def client_suspect(o):
    return o["client_cpu_util"] > 0.85


def fit(points):
    """least squares y = a + b x"""
    n = len(points)
    if n < 2:
        return None
    sx = sum(p[0] for p in points)
    sy = sum(p[1] for p in points)
    sxx = sum(p[0] * p[0] for p in points)
    sxy = sum(p[0] * p[1] for p in points)
    den = n * sxx - sx * sx
    if den == 0:
        return None
    b = (n * sxy - sx * sy) / den
    a = (sy - b * sx) / n
    return a, b


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--first-miss":
        d, tick_ms, cpu_max = sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
        for o in load(d):
            if not verdict(o, tick_ms, cpu_max)[0]:
                print(o["players"])
                return
        return
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    d, tick_ms, cpu_max, target = (sys.argv[1], float(sys.argv[2]),
                                   float(sys.argv[3]), int(sys.argv[4]))
    env = {}
    try:
        env = json.load(open(os.path.join(d, "env.json")))
    except (OSError, ValueError):
        pass
    runs = load(d)
    p = print
    p(f"# Game role: players per server core ({os.path.basename(d)})")
    p()
    if env:
        p(f"{env.get('p2pmesh_version') or 'p2pmesh ?'} (git {env.get('p2pmesh_git', '?')}"
          f"{', ' + str(env['p2pmesh_dirty_files']) + ' files modified' if env.get('p2pmesh_dirty_files') else ''}"
          f", sha256 {env.get('p2pmesh_sha256', '?')}), {env.get('cpu_model', '?')}, "
          f"{env.get('cpus', '?')} CPUs, kernel {env.get('kernel', '?')}, libevent "
          f"{env.get('libevent', '?')}. Server pinned to CPU {env.get('server_cpu')}, "
          f"game-loadgen to CPU {env.get('client_cpu')}; machine {env.get('busy_before')} % "
          f"busy before, {env.get('busy_after')} % after.")
        p()
        p(f"Duels, tick {int(tick_ms)} ms, a turn every {env.get('turn_every', 5)} ticks "
          f"(each snake circles a 5x5 square), ramp {env.get('ramp')} players/s, "
          f"warm-up {env.get('warmup')} s after every player saw its game running, "
          f"window {env.get('duration')} s.")
        p()
    p("Lateness of a Moved = its arrival (the kernel's receive timestamp at the player's "
      "socket, so the generator's own delays do not count; 'handled' = when the generator "
      "processed it) - tick x tick_ms, minus the smallest such offset seen in that game by "
      "that player from the warm-up on (the game's fastest delivery): jitter, backlog and "
      "dropped time show, a delay common to every tick of a game does not; it is cumulative "
      "(a game that fell behind in the warm-up or window stays behind). Interval = time between a game's consecutive "
      "Moved at one player (local jitter). Tick rate = Moved received / (time in running "
      "games / tick). Server ticks late = the server's p2pmesh_game_ticks_late_total over "
      "warm-up and window (a room more than a tick behind, dropping time). Other CPU = "
      "machine busy time minus server and generator, in % of one CPU.")
    p()
    hdr = ("| players | games | server CPU | RSS MiB | msgs/s in | lateness p50 / p99 / p99.9 / max ms (handled p99) "
           "| > 1 tick | interval p1 / p99 ms | tick rate | ended | server ticks late (ramp / window) | client CPU | client lag p99 | other CPU | target |")
    p(hdr)
    p("|" + "---|" * (hdr.count("|") - 1))
    ok_runs = []
    for o in runs:
        if o.get("failed_run"):
            cells = [str(o["players"])] + [""] * 4 + [
                f"run failed (see run-{o['players']}.json.err)"] + [""] * 8 + ["no"]
            p("| " + " | ".join(cells) + " |")
            continue
        good, why = verdict(o, tick_ms, cpu_max)
        if good:
            ok_runs.append(o)
        l = o["lateness_ms"]
        iv = o.get("interval_ms", {})
        other = o["other_cpu_s"] / o["window_s"] if o["window_s"] else 0
        flag = " (generator?)" if client_suspect(o) else ""
        p(f"| {o['players']} | {o['games_running']:.0f} | {100 * o['server_cpu_util']:.1f} % "
          f"| {o['server_rss_kb'] / 1024:.0f} | {o['msgs_rx_per_s']:.0f} "
          f"| {l['p50']:.1f} / {l['p99']:.1f} / {l['p999']:.1f} / {l['max']:.1f} "
          f"({o.get('lateness_handled_ms', {}).get('p99', -1):.1f}) "
          f"| {100 * o['frac_late_gt_tick']:.3f} % "
          f"| {iv.get('p1', -1):.1f} / {iv.get('p99', -1):.1f} "
          f"| {o['tick_rate_ratio']:.3f} "
          f"| {o['games_ended']} | {o.get('server_ticks_late_setup', -1):.0f} / "
          f"{o['server_ticks_late']:.0f} "
          f"| {100 * o['client_cpu_util']:.0f} %{flag} | {o['client_loop_lag_ms']['p99']:.1f} ms "
          f"| {100 * other:.0f} % | {'yes' if good else 'no: ' + ', '.join(why)} |")
    p()
    errs = [o for o in runs if not o.get("failed_run") and
            (o["server_errors"] or o["server_closes"] or o["unexpected_eof"] or
             o["proto_errors"] or o["stream_gaps"] or o["failed"] or o["access_denied"])]
    for o in errs:
        p(f"- {o['players']} players: server errors {o['server_errors']}, closes "
          f"{o['server_closes']}, eof {o['unexpected_eof']}, protocol {o['proto_errors']}, "
          f"stream gaps {o['stream_gaps']}, denied {o['access_denied']}, failed {o['failed']}")
    if errs:
        p()

    # players per core
    measured = max((o["players"] for o in ok_runs), default=0)
    def quiet(o):
        return o["window_s"] and o["other_cpu_s"] <= 0.1 * o["window_s"]
    pts = [(o["players"], o["server_cpu_util"]) for o in ok_runs if quiet(o)]
    if len(pts) < 2:
        pts = [(o["players"], o["server_cpu_util"]) for o in ok_runs]
    f = fit(pts)
    extrap = None
    if f and f[1] > 0:
        extrap = (1 - f[0]) / f[1]
    p("## Players per core")
    p()
    if measured:
        p(f"- measured: **{measured}** players ({measured // 2} duels) is the largest count "
          f"run that met p99 <= {tick_ms:.0f} ms with the server core under "
          f"{100 * cpu_max:.0f} % busy")
    else:
        p("- measured: no run met the target")
    if extrap:
        p(f"- extrapolated: **{extrap:.0f}** players at 100 % of the server core "
          f"(server CPU = {100 * f[0]:.2f} % + {100 * f[1] * 1000:.2f} % per 1000 players, "
          f"fitted over the {len(pts)} runs that met the target (undisturbed ones when "
          f"there are two); assumes lateness stays within a tick up to saturation)")
    p()
    t = next((o for o in runs if o["players"] == target and not o.get("failed_run")), None)
    if t is not None:
        good, why = verdict(t, tick_ms, cpu_max)
        p(f"Target {target} players ({target // 2} duels) per core at "
          f"{1000 / tick_ms:.0f} Hz with p99 <= {tick_ms:.0f} ms: "
          f"**{'holds' if good else 'missed'}** (server CPU "
          f"{100 * t['server_cpu_util']:.1f} %, p99 {t['lateness_ms']['p99']:.1f} ms"
          f"{'' if good else ': ' + ', '.join(why)}).")
    else:
        ok = measured >= target
        p(f"Target {target} players per core: not run directly; "
          f"{'met by a larger run' if ok else 'no larger run met it'}.")
    sus = [o["players"] for o in runs if not o.get("failed_run") and client_suspect(o)]
    if sus:
        p()
        p(f"Load generator near its limit (CPU > 85 %) at {', '.join(map(str, sus))} "
          f"players: its turns may come late (lateness itself is taken from kernel "
          f"receive timestamps).")
    noisy = [o["players"] for o in runs if not o.get("failed_run") and
             o["window_s"] and o["other_cpu_s"] > 0.1 * o["window_s"]]
    redo = sorted(glob.glob(os.path.join(d, "noisy-*.json")))
    if redo:
        p()
        p(f"Repeated because other processes were busy in the window: "
          f"{', '.join(os.path.basename(r)[6:-5] for r in redo)} (players-attempt; "
          f"kept as noisy-*.json).")
    if noisy:
        p()
        p(f"Other processes used > 10 % of a CPU during the window at "
          f"{', '.join(map(str, noisy))} players: those runs are disturbed.")
    for pf in sorted(glob.glob(os.path.join(d, "perf-*.txt"))):
        p()
        p(f"## Profile ({os.path.basename(pf)})")
        p()
        p("```")
        p(open(pf).read().rstrip())
        p("```")


if __name__ == "__main__":
    main()
