'use strict';
// report.js: markdown summary of one tests/bench/run.sh result directory.
//
//   node tests/bench/report.js RESULT_DIR
//   node tests/bench/report.js --capacity RESULT_DIR WINDOW SERVER...
//
// Reads the JSON lines pm-loadgen wrote:
//   <server>.tp-w<W>.r<N>.json   (a) closed loop, window W, round N
//   <server>.lat.r<N>.json       (b) open loop at the common rate, round N
//   <server>.xlat.r<N>.json      (b) cluster kinds and their single-instance
//                                twins at the fixed CLUSTER_RATE, round N
//   <server>.idle.json, <server>.idle-bare.json   (c) idle connections
//   skipped.jsonl                servers left out, and why
// and prints the tables, the p2pmesh-vs-peer ratios against the targets
// (each dialect against its reference server; cross-instance p99 at
// CLUSTER_RATE against 2 ms), a bottleneck note per throughput run and
// every problem seen. Of the rounds it keeps the best one (highest msgs
// per CPU-s, lowest p99): other work on the machine only ever makes a
// round worse.
// --capacity prints the weakest server's best msgs per server CPU-second
// (run.sh derives the latency rate from it).

const fs = require('fs');
const path = require('path');

function loadFile(file) {
  try {
    const text = fs.readFileSync(file, 'utf8').trim();
    if (!text) return null;
    return JSON.parse(text.split('\n').pop());
  } catch (e) {
    return null;
  }
}

function rounds(dir, prefix) {
  let names = [];
  try {
    names = fs.readdirSync(dir);
  } catch (e) {
    return [];
  }
  const re = new RegExp(`^${prefix.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.r(\\d+)\\.json$`);
  const out = [];
  for (const n of names) {
    const m = re.exec(n);
    if (!m) continue;
    const o = loadFile(path.join(dir, n));
    if (o) {
      o.round = Number(m[1]);
      out.push(o);
    }
  }
  return out.sort((a, b) => a.round - b.round);
}

// A run is disturbed when other processes used more than 10 % of a core
// during its window; the best round is chosen among undisturbed ones when
// there are any.
const disturbed = (r) => r && r.other_cpu_s > 0.1 * (r.duration_s || 1);
const preferQuiet = (runs) => (runs.some((r) => !disturbed(r)) ? runs.filter((r) => !disturbed(r)) : runs);
const bestTp = (runs) =>
  preferQuiet(runs).reduce(
    (b, r) => (r.msgs_per_server_cpu_s > 0 && (!b || r.msgs_per_server_cpu_s > b.msgs_per_server_cpu_s) ? r : b),
    null,
  );
const bestLat = (runs) =>
  preferQuiet(runs).reduce((b, r) => (r.received > 0 && (!b || r.latency_us.p99 < b.latency_us.p99) ? r : b), null);
const dag = (r) => (disturbed(r) ? ' †' : '');

if (process.argv[2] === '--capacity') {
  const [dir, w, ...servers] = process.argv.slice(3);
  let cap = Infinity;
  for (const s of servers) {
    const b = bestTp(rounds(dir, `${s}.tp-w${w}`));
    if (b && b.msgs_per_server_cpu_s < cap) cap = b.msgs_per_server_cpu_s;
  }
  process.stdout.write(cap === Infinity ? '' : String(Math.round(cap)));
  process.exit(0);
}

const dir = process.argv[2];
if (!dir) {
  process.stderr.write('usage: node report.js RESULT_DIR\n');
  process.exit(2);
}

const TARGET_CPU = 3; // p2pmesh msgs per CPU-s >= 3x the peer's
const TARGET_P99 = 0.5; // p2pmesh p99 <= 0.5x the peer's at equal load
const TARGET_RSS = 6 * 1024; // bytes per idle plaintext connection
const TARGET_XP99_US = 2000; // cross-instance p99 at CLUSTER_RATE, loopback

const env = loadFile(path.join(dir, 'env.json')) || {};
const envAfter = loadFile(path.join(dir, 'env-after.json')) || {};
const latRate = loadFile(path.join(dir, 'latency-rate.json')) || {};
const windows = String(env.windows || '1').split(/\s+/).filter(Boolean);
const order = [
  'p2pmesh',
  'node-ws-relay',
  'peerjs',
  'p2pmesh-peerjs',
  'ywebrtc-server',
  'p2pmesh-ywebrtc',
  'p2pmesh-cluster',
  'p2pmesh-cluster-ywebrtc',
];
const label = {
  p2pmesh: 'p2pmesh',
  'node-ws-relay': 'Node ws relay',
  peerjs: 'PeerJS server',
  'p2pmesh-peerjs': 'p2pmesh (PeerJS dialect)',
  'ywebrtc-server': 'y-webrtc server',
  'p2pmesh-ywebrtc': 'p2pmesh (y-webrtc dialect)',
  'p2pmesh-cluster': 'p2pmesh cluster (2 instances + Redis)',
  'p2pmesh-cluster-ywebrtc': 'p2pmesh cluster, y-webrtc dialect',
};
const dialect = {
  p2pmesh: 'p2pmesh',
  'node-ws-relay': 'p2pmesh',
  peerjs: 'peerjs',
  'p2pmesh-peerjs': 'peerjs',
  'ywebrtc-server': 'y-webrtc',
  'p2pmesh-ywebrtc': 'y-webrtc',
  'p2pmesh-cluster': 'p2pmesh',
  'p2pmesh-cluster-ywebrtc': 'y-webrtc',
};
const isCluster = (s) => s.startsWith('p2pmesh-cluster');
// each cluster kind is compared with the same relay inside one instance
const twin = { 'p2pmesh-cluster': 'p2pmesh', 'p2pmesh-cluster-ywebrtc': 'p2pmesh-ywebrtc' };
const skipped = (() => {
  try {
    return fs
      .readFileSync(path.join(dir, 'skipped.jsonl'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));
  } catch (e) {
    return [];
  }
})();

const R = {};
for (const s of order) {
  const r = { tp: {}, tpBest: {}, lat: rounds(dir, `${s}.lat`), xlat: rounds(dir, `${s}.xlat`) };
  for (const w of windows) {
    r.tp[w] = rounds(dir, `${s}.tp-w${w}`);
    r.tpBest[w] = bestTp(r.tp[w]);
  }
  r.latBest = bestLat(r.lat);
  r.xlatBest = bestLat(r.xlat);
  r.idle = loadFile(path.join(dir, `${s}.idle.json`));
  r.bare = loadFile(path.join(dir, `${s}.idle-bare.json`));
  if (r.lat.length || r.xlat.length || r.idle || windows.some((w) => r.tp[w].length)) R[s] = r;
}
const present = order.filter((s) => R[s]);
const single = present.filter((s) => !isCluster(s));
const clusters = present.filter(isCluster);

const num = (v) => typeof v === 'number' && v >= 0;
const f0 = (v) => (num(v) ? Math.round(v).toLocaleString('en-US') : 'n/a');
const f1 = (v) => (num(v) ? v.toFixed(1) : 'n/a');
const pct = (v) => (num(v) ? `${Math.round(v * 100)} %` : 'n/a');
const kib = (v) => (num(v) ? `${(v / 1024).toFixed(2)} KiB` : 'n/a');
const ratio = (a, b) => (num(a) && num(b) && a > 0 && b > 0 ? a / b : null);
const fr = (v) => (v === null ? 'n/a' : `${v.toFixed(2)}x`);
const verdict = (v, good) => (v === null ? '' : good ? ' (met)' : ' (**missed**)');

const out = [];
out.push(`### Run ${env.stamp || path.basename(dir)}`);
out.push('');
out.push(
  `Machine: ${env.cpus || '?'} x ${env.cpu || '?'}, kernel ${env.kernel || '?'}; node ${env.node || '?'}, ` +
    `ws ${env.ws || '?'}, peer ${env.peer || '?'}, ` +
    (env.y_webrtc ? `y-webrtc ${env.y_webrtc}, redis ${env.redis || '?'}, ` : '') +
    `libevent ${env.libevent || '?'}; ${env.p2pmesh || 'p2pmesh ?'} ` +
    `(git ${env.git || '?'}). Servers on CPU ${env.server_cpu}, pm-loadgen on CPU ${env.client_cpu}. ` +
    `Machine busy with other work before/after: ${env.busy_before_pct ?? '?'} % / ${envAfter.busy_after_pct ?? '?'} %.`,
);
out.push('');
out.push(
  `(a) closed loop, ${env.pairs} relay pairs, ${env.duration} s measured after ${env.warmup} s warm-up, ` +
    `${env.size} B padding, windows ${windows.join(' and ')}, best of ${env.rounds} rounds. ` +
    `(b) open loop at ${f0(latRate.lat_rate)} msgs/s for every ${clusters.length ? 'single-process ' : ''}server (${Math.round((latRate.lat_fraction || 0) * 100)} % ` +
    `of the weakest capacity in (a))${latRate.spin ? ', load generator busy-polling' : ''}, best of ${env.rounds} rounds by p99. ` +
    `(c) ${env.idle_conns} idle connections held ${env.settle} s` +
    `${env.room_size ? `, p2pmesh-dialect peers joined in rooms of ${env.room_size}` : ''}` +
    `${env.room_size && single.some((s) => dialect[s] === 'y-webrtc') ? ' (y-webrtc peers subscribed to topics of that size)' : ''}.` +
    (clusters.length
      ? ` (d) cluster mode: A side of every pair on instance 1, B side on instance 2, one private redis-server; ` +
        `instances on CPU ${env.server_cpu} and ${env.cluster_b_cpu ?? '?'}, Redis on CPU ${env.redis_cpu ?? '?'}; ` +
        `latency at ${f0(env.cluster_rate)} msgs/s next to the same relay inside one instance.`
      : ''),
);
out.push('');
if (skipped.length) {
  out.push('**Not measured:**');
  out.push('');
  for (const k of skipped) out.push(`- ${label[k.server] || k.server}: ${k.reason}`);
  out.push('');
}

// (a)
out.push('**(a) Throughput** (closed loop; relayed messages per second of server CPU is the comparable figure)');
out.push('');
out.push('| server | dialect | window | msgs/s | server CPU | load generator CPU | other work, CPU-s | msgs per server CPU-s | all rounds |');
out.push('|---|---|---:|---:|---:|---:|---:|---:|---|');
for (const s of single) {
  for (const w of windows) {
    const b = R[s].tpBest[w];
    if (!b) continue;
    out.push(
      `| ${label[s]} | ${dialect[s]} | ${w} | ${f0(b.msgs_per_s)} | ${pct(b.server_cpu_util)} | ${pct(b.client_cpu_util)} ` +
        `| ${f1(b.other_cpu_s)} | **${f0(b.msgs_per_server_cpu_s)}**${dag(b)} ` +
        `| ${R[s].tp[w].map((r) => f0(r.msgs_per_server_cpu_s) + dag(r)).join(', ')} |`,
    );
  }
}
out.push('');

if (single.some((s) => dialect[s] === 'y-webrtc')) {
  // message sizes as sent (the y-webrtc envelope is longer)
  const bytes = (d) => {
    for (const s of single) {
      if (dialect[s] !== d) continue;
      for (const w of windows) if (R[s].tpBest[w] && R[s].tpBest[w].msg_bytes) return R[s].tpBest[w].msg_bytes;
    }
    return null;
  };
  const by = bytes('y-webrtc');
  const bp = bytes('p2pmesh');
  out.push(
    'y-webrtc dialect: a relayed message is one publish reaching the partner; the server also sends every publish back ' +
      'to its sender (the protocol\'s echo), which the load generator reads and checks but does not count, so each ' +
      'relayed message costs a y-webrtc server two frames out' +
      (by ? `; a publish is ${by} B as sent${bp ? ` (a p2pmesh-dialect signal: ${bp} B)` : ''}` : '') +
      '.',
  );
  out.push('');
}

// (b)
out.push(`**(b) Latency at equal load** (${f0(latRate.lat_rate)} msgs/s, from the intended send time, µs)`);
out.push('');
out.push('| server | dialect | p50 | p90 | p99 | p99.9 | max | lost | server CPU | client send lag p99 | p99 all rounds |');
out.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|');
for (const s of single) {
  const b = R[s].latBest;
  if (!b) continue;
  const l = b.latency_us;
  out.push(
    `| ${label[s]} | ${dialect[s]} | ${f1(l.p50)} | ${f1(l.p90)} | **${f1(l.p99)}** | ${f1(l.p999)} | ${f1(l.max)} | ${b.lost} ` +
      `| ${pct(b.server_cpu_util)} | ${f1(b.send_lag_us.p99)} | ${R[s].lat.map((r) => f1(r.latency_us.p99) + dag(r)).join(', ')} |`,
  );
}
out.push('');

// (c)
out.push('**(c) Memory** (server RSS growth per idle connection, after settling)');
out.push('');
out.push('| server | dialect | open | RSS before | RSS after | per connection, joined | per connection, upgraded only |');
out.push('|---|---|---:|---:|---:|---:|---:|');
for (const s of single) {
  const i = R[s].idle;
  if (!i) continue;
  out.push(
    `| ${label[s]} | ${dialect[s]} | ${i.open}/${i.conns} | ${f0(i.server_rss_kb_before / 1024)} MiB | ${f0(i.server_rss_kb_after / 1024)} MiB ` +
      `| **${kib(i.rss_per_conn_bytes)}** | ${R[s].bare ? kib(R[s].bare.rss_per_conn_bytes) : 'n/a'} |`,
  );
}
out.push('');

// joins into one room (optional phase)
const joinRows = [];
for (const s of present) {
  const j = loadFile(path.join(dir, `${s}.joins.json`));
  if (!j) continue;
  joinRows.push(
    `| ${label[s]} | ${j.open}/${j.conns} | ${f1(j.setup_s)} s | ${f1(j.server_cpu_s)} s ` +
      `| ${num(j.server_cpu_s) && j.open ? f0((j.server_cpu_s * 1e6) / j.open) : 'n/a'} µs | ${j.join_unacked} |`,
  );
}
if (joinRows.length) {
  out.push('**Joins into one room** (connect storm: every peer joins the same realm)');
  out.push('');
  out.push('| server | joined | time | server CPU | server CPU per join | joins without bootstrap_peers in 3 s |');
  out.push('|---|---:|---:|---:|---:|---:|');
  out.push(...joinRows, '');
}

// (d) cluster mode
const xcpu = (r) => (r && num(r.server_cpu_s) && num(r.aux_cpu_s) ? r.server_cpu_s + r.aux_cpu_s : null);
const xtarget = [];
if (clusters.length) {
  out.push(
    '**(d) Cross-instance relay through Redis** (closed loop; server CPU = both p2pmesh instances; Redis shown apart)',
  );
  out.push('');
  out.push(
    '| server | dialect | window | msgs/s | p2pmesh CPU (both) | Redis CPU | load generator CPU | other work, CPU-s | ' +
      'msgs per p2pmesh CPU-s | msgs per CPU-s incl. Redis | vs one instance | all rounds |',
  );
  out.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|');
  for (const c of clusters) {
    for (const s of [c, twin[c]]) {
      if (!R[s]) continue;
      for (const w of windows) {
        const b = R[s].tpBest[w];
        if (!b) continue;
        const all = isCluster(s) ? xcpu(b) : b.server_cpu_s;
        const vs = isCluster(s)
          ? fr(ratio(b.msgs_per_server_cpu_s, R[twin[s]] && R[twin[s]].tpBest[w] && R[twin[s]].tpBest[w].msgs_per_server_cpu_s))
          : '1.00x';
        out.push(
          `| ${label[s]} | ${dialect[s]} | ${w} | ${f0(b.msgs_per_s)} | ${pct(b.server_cpu_util)} ` +
            `| ${isCluster(s) ? pct(b.aux_cpu_util) : 'n/a'} | ${pct(b.client_cpu_util)} | ${f1(b.other_cpu_s)} ` +
            `| **${f0(b.msgs_per_server_cpu_s)}**${dag(b)} | ${num(all) && all > 0 ? f0(b.received / all) : 'n/a'} ` +
            `| ${vs} | ${R[s].tp[w].map((r) => f0(r.msgs_per_server_cpu_s) + dag(r)).join(', ')} |`,
        );
      }
    }
  }
  out.push('');
  out.push(
    `**(d) Cross-instance latency** (open loop at ${f0(env.cluster_rate)} msgs/s, from the intended send time, µs; ` +
      `target: cross-instance p99 under ${TARGET_XP99_US / 1000} ms)`,
  );
  out.push('');
  out.push(
    '| server | dialect | p50 | p90 | p99 | p99.9 | max | lost | p2pmesh CPU | Redis CPU | client send lag p99 | p99 all rounds |',
  );
  out.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|');
  for (const c of clusters) {
    for (const s of [c, twin[c]]) {
      if (!R[s]) continue;
      const b = R[s].xlatBest;
      if (!b) continue;
      const l = b.latency_us;
      const v = isCluster(s) ? verdict(l.p99, l.p99 < TARGET_XP99_US) : '';
      out.push(
        `| ${label[s]} | ${dialect[s]} | ${f1(l.p50)} | ${f1(l.p90)} | **${f1(l.p99)}**${v} | ${f1(l.p999)} | ${f1(l.max)} ` +
          `| ${b.lost} | ${pct(b.server_cpu_util)} | ${isCluster(s) ? pct(b.aux_cpu_util) : 'n/a'} | ${f1(b.send_lag_us.p99)} ` +
          `| ${R[s].xlat.map((r) => f1(r.latency_us.p99) + dag(r)).join(', ')} |`,
      );
    }
    const X = R[c].xlatBest;
    const T = R[twin[c]] && R[twin[c]].xlatBest;
    xtarget.push([c, X, T]);
  }
  out.push('');
}

// ratios
const cmp = [
  ['p2pmesh', 'node-ws-relay'],
  ['p2pmesh', 'peerjs'],
  ['p2pmesh-peerjs', 'peerjs'],
  ['p2pmesh-ywebrtc', 'ywebrtc-server'],
];
const rows = [];
for (const [a, b] of cmp) {
  if (!R[a] || !R[b]) continue;
  const A = R[a];
  const B = R[b];
  const cells = [];
  windows.forEach((w, i) => {
    const v = ratio(A.tpBest[w] && A.tpBest[w].msgs_per_server_cpu_s, B.tpBest[w] && B.tpBest[w].msgs_per_server_cpu_s);
    cells.push(`${fr(v)}${i === 0 ? verdict(v, v >= TARGET_CPU) : ''}`);
  });
  const p99 = ratio(A.latBest && A.latBest.latency_us.p99, B.latBest && B.latBest.latency_us.p99);
  const p50 = ratio(A.latBest && A.latBest.latency_us.p50, B.latBest && B.latBest.latency_us.p50);
  const rA = A.idle && A.idle.rss_per_conn_bytes;
  const rB = B.idle && B.idle.rss_per_conn_bytes;
  rows.push(
    `| ${label[a]} vs ${label[b]} | ${cells.join(' | ')} | ${fr(p99)}${verdict(p99, p99 <= TARGET_P99)} | ${fr(p50)} ` +
      `| ${fr(ratio(rA, rB))} | ${kib(rA)}${num(rA) ? verdict(rA, rA <= TARGET_RSS) : ''} |`,
  );
}
if (rows.length) {
  out.push(
    `**Ratios** (targets: msgs per server CPU-s >= ${TARGET_CPU}x (headline window ${windows[0]}), ` +
      `p99 <= ${TARGET_P99}x at equal load, <= ${TARGET_RSS / 1024} KiB RSS per idle connection at ${env.idle_conns})`,
  );
  out.push('');
  out.push(
    `| comparison | ${windows.map((w) => `msgs per CPU-s, window ${w}`).join(' | ')} | p99 | p50 | RSS per idle conn | p2pmesh RSS per idle conn |`,
  );
  out.push(`|---|${windows.map(() => '---:').join('|')}|---:|---:|---:|---:|`);
  out.push(...rows);
  out.push('');
}

// the issue's targets in one place
const targetRows = [];
const skipReason = (k) => {
  const x = skipped.find((e) => e.server === k);
  if (x) return `not measured: ${x.reason}`;
  return ` ${env.servers || ''} `.includes(` ${k} `) ? `no result from ${label[k]}` : `${k} not in SERVERS`;
};
for (const [a, b] of [
  ['p2pmesh-ywebrtc', 'ywebrtc-server'],
  ['p2pmesh-peerjs', 'peerjs'],
]) {
  const w = windows[0];
  const A = R[a] && R[a].tpBest[w];
  const B = R[b] && R[b].tpBest[w];
  const v = ratio(A && A.msgs_per_server_cpu_s, B && B.msgs_per_server_cpu_s);
  const what = `${label[a]} >= ${TARGET_CPU}x ${label[b]}, relayed msgs per server CPU-s (window ${w})`;
  if (v === null) targetRows.push(`| ${what} | ${!R[a] ? skipReason(a) : skipReason(b)} | n/a |`);
  else
    targetRows.push(
      `| ${what} | ${f0(A.msgs_per_server_cpu_s)} vs ${f0(B.msgs_per_server_cpu_s)}: ${fr(v)} | ${v >= TARGET_CPU ? 'met' : '**missed**'} |`,
    );
}
for (const [c, X, T] of xtarget) {
  const what = `${label[c]}: cross-instance p99 < ${TARGET_XP99_US / 1000} ms at ${f0(env.cluster_rate)} msgs/s`;
  if (!X) targetRows.push(`| ${what} | no result | n/a |`);
  else
    targetRows.push(
      `| ${what} | p99 ${f1(X.latency_us.p99)} µs (one instance: ${T ? f1(T.latency_us.p99) + ' µs, ' + fr(ratio(X.latency_us.p99, T.latency_us.p99)) : 'n/a'}) ` +
        `| ${X.latency_us.p99 < TARGET_XP99_US && X.lost === 0 ? 'met' : '**missed**'}${X.lost ? ` (${X.lost} lost)` : ''} |`,
    );
}
if (!clusters.length)
  targetRows.push(
    `| cross-instance p99 < ${TARGET_XP99_US / 1000} ms at ${f0(env.cluster_rate || 5000)} msgs/s | ${skipReason('p2pmesh-cluster')} | n/a |`,
  );
out.push('**Against the new targets** (dialects against their reference servers; cluster mode)');
out.push('');
out.push('| target | measured | result |');
out.push('|---|---|---|');
out.push(...targetRows);
out.push('');

// bottleneck
out.push('† other processes used more than 10 % of a core during that run (it is kept only when every round was disturbed).');
out.push('');
out.push('**Bottleneck check** (best round of each throughput run):');
out.push('');
// cluster kinds: server CPU is both instances; when they and Redis share
// one core, that core's load is the sum of the three
const oneCore = env.cluster_b_cpu === env.server_cpu && env.redis_cpu === env.server_cpu;
for (const s of present) {
  for (const w of windows) {
    const t = R[s].tpBest[w];
    if (!t) continue;
    if (isCluster(s)) {
      const core = t.server_cpu_util + (num(t.aux_cpu_util) ? t.aux_cpu_util : 0);
      const cu = t.client_cpu_util;
      let v;
      if (!oneCore) v = 'servers on several cores: see the CPU figures';
      else if (core >= 0.9 && cu < 0.9) v = 'server core-bound';
      else if (cu >= 0.9 && core < 0.9) v = '**load generator-bound**: msgs/s understates the servers';
      else if (core >= 0.9 && cu >= 0.9) v = 'both cores saturated';
      else v = 'neither core saturated';
      out.push(
        `- ${label[s]}, window ${w}: p2pmesh instances ${pct(t.server_a_cpu_s / t.duration_s)} + ` +
          `${pct(t.server_b_cpu_s / t.duration_s)}, Redis ${pct(t.aux_cpu_util)}, load generator ${pct(cu)}, ` +
          `other work ${f1(t.other_cpu_s)} CPU-s: ${v}.`,
      );
      continue;
    }
    const su = t.server_cpu_util;
    const cu = t.client_cpu_util;
    let v;
    if (su >= 0.9 && cu < 0.9) v = 'server-bound';
    else if (cu >= 0.9 && su < 0.9) v = '**load generator-bound**: msgs/s understates the server';
    else if (su >= 0.9 && cu >= 0.9) v = 'both cores saturated';
    else v = 'neither core saturated';
    out.push(`- ${label[s]}, window ${w}: server ${pct(su)}, load generator ${pct(cu)}, other work ${f1(t.other_cpu_s)} CPU-s: ${v}.`);
  }
}
out.push('');

// problems
const probs = [];
const keys = ['lost', 'send_dropped', 'seq_gaps', 'seq_old', 'bad_from', 'bad_payload', 'server_errors', 'server_closes',
  'unexpected_eof', 'proto_errors', 'masked_frames', 'failed', 'join_unacked', 'echo_lost', 'echo_seq_bad',
  'missing_clients'];
function check(s, what, r) {
  if (!r) return;
  const bad = keys.filter((k) => r[k]).map((k) => `${k} ${r[k]}`);
  if (r.ok === false) bad.push('run incomplete');
  if (bad.length) probs.push(`- ${label[s]} ${what}: ${bad.join(', ')}`);
}
for (const s of present) {
  for (const w of windows) R[s].tp[w].forEach((r) => check(s, `throughput w${w} r${r.round}`, r));
  R[s].lat.forEach((r) => check(s, `latency r${r.round}`, r));
  R[s].xlat.forEach((r) => check(s, `latency at ${f0(env.cluster_rate)} msgs/s r${r.round}`, r));
  check(s, 'idle', R[s].idle);
  check(s, 'idle (upgraded only)', R[s].bare);
}
out.push(probs.length ? '**Problems seen:**' : '**Problems seen:** none (no loss, no server errors, no unexpected closes).');
if (probs.length) out.push('', ...probs);
out.push('');
process.stdout.write(out.join('\n') + '\n');
