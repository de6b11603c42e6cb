'use strict';
// report.js: markdown summary of one tests/bench/run.sh result directory.
//
//   node tests/bench/report.js RESULT_DIR
//   node tests/bench/report.js --capacity RESULT_DIR WINDOW SERVER...
//
// Reads the JSON lines pm-loadgen wrote:
//   <server>.tp-w<W>.r<N>.json   (a) closed loop, window W, round N
//   <server>.lat.r<N>.json       (b) open loop at the common rate, round N
//   <server>.idle.json, <server>.idle-bare.json   (c) idle connections
// and prints the tables, the p2pmesh-vs-peer ratios against the targets,
// a bottleneck note per throughput run and every problem seen. Of the
// rounds it keeps the best one (highest msgs per CPU-s, lowest p99): other
// work on the machine only ever makes a round worse.
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

const env = loadFile(path.join(dir, 'env.json')) || {};
const envAfter = loadFile(path.join(dir, 'env-after.json')) || {};
const latRate = loadFile(path.join(dir, 'latency-rate.json')) || {};
const windows = String(env.windows || '1').split(/\s+/).filter(Boolean);
const order = ['p2pmesh', 'node-ws-relay', 'peerjs', 'p2pmesh-peerjs'];
const label = {
  p2pmesh: 'p2pmesh',
  'node-ws-relay': 'Node ws relay',
  peerjs: 'PeerJS server',
  'p2pmesh-peerjs': 'p2pmesh (PeerJS dialect)',
};
const dialect = { p2pmesh: 'p2pmesh', 'node-ws-relay': 'p2pmesh', peerjs: 'peerjs', 'p2pmesh-peerjs': 'peerjs' };

const R = {};
for (const s of order) {
  const r = { tp: {}, tpBest: {}, lat: rounds(dir, `${s}.lat`) };
  for (const w of windows) {
    r.tp[w] = rounds(dir, `${s}.tp-w${w}`);
    r.tpBest[w] = bestTp(r.tp[w]);
  }
  r.latBest = bestLat(r.lat);
  r.idle = loadFile(path.join(dir, `${s}.idle.json`));
  r.bare = loadFile(path.join(dir, `${s}.idle-bare.json`));
  if (r.lat.length || r.idle || windows.some((w) => r.tp[w].length)) R[s] = r;
}
const present = order.filter((s) => R[s]);

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
    `ws ${env.ws || '?'}, peer ${env.peer || '?'}, libevent ${env.libevent || '?'}; ${env.p2pmesh || 'p2pmesh ?'} ` +
    `(git ${env.git || '?'}). Servers on CPU ${env.server_cpu}, pm-loadgen on CPU ${env.client_cpu}. ` +
    `Machine busy with other work before/after: ${env.busy_before_pct ?? '?'} % / ${envAfter.busy_after_pct ?? '?'} %.`,
);
out.push('');
out.push(
  `(a) closed loop, ${env.pairs} relay pairs, ${env.duration} s measured after ${env.warmup} s warm-up, ` +
    `${env.size} B padding, windows ${windows.join(' and ')}, best of ${env.rounds} rounds. ` +
    `(b) open loop at ${f0(latRate.lat_rate)} msgs/s for every server (${Math.round((latRate.lat_fraction || 0) * 100)} % ` +
    `of the weakest capacity in (a))${latRate.spin ? ', load generator busy-polling' : ''}, best of ${env.rounds} rounds by p99. ` +
    `(c) ${env.idle_conns} idle connections held ${env.settle} s` +
    `${env.room_size ? `, p2pmesh-dialect peers joined in rooms of ${env.room_size}` : ''}.`,
);
out.push('');

// (a)
out.push('**(a) Throughput** (closed loop; relayed messages per second of server CPU is the comparable figure)');
out.push('');
out.push('| server | dialect | window | msgs/s | server CPU | load generator CPU | other work, CPU-s | msgs per server CPU-s | all rounds |');
out.push('|---|---|---:|---:|---:|---:|---:|---:|---|');
for (const s of present) {
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

// (b)
out.push(`**(b) Latency at equal load** (${f0(latRate.lat_rate)} msgs/s, from the intended send time, µs)`);
out.push('');
out.push('| server | dialect | p50 | p90 | p99 | p99.9 | max | lost | server CPU | client send lag p99 | p99 all rounds |');
out.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|');
for (const s of present) {
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
for (const s of present) {
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

// ratios
const cmp = [
  ['p2pmesh', 'node-ws-relay'],
  ['p2pmesh', 'peerjs'],
  ['p2pmesh-peerjs', 'peerjs'],
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

// bottleneck
out.push('† other processes used more than 10 % of a core during that run (it is kept only when every round was disturbed).');
out.push('');
out.push('**Bottleneck check** (best round of each throughput run):');
out.push('');
for (const s of present) {
  for (const w of windows) {
    const t = R[s].tpBest[w];
    if (!t) continue;
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
  'unexpected_eof', 'proto_errors', 'masked_frames', 'failed', 'join_unacked'];
function check(s, what, r) {
  if (!r) return;
  const bad = keys.filter((k) => r[k]).map((k) => `${k} ${r[k]}`);
  if (r.ok === false) bad.push('run incomplete');
  if (bad.length) probs.push(`- ${label[s]} ${what}: ${bad.join(', ')}`);
}
for (const s of present) {
  for (const w of windows) R[s].tp[w].forEach((r) => check(s, `throughput w${w} r${r.round}`, r));
  R[s].lat.forEach((r) => check(s, `latency r${r.round}`, r));
  check(s, 'idle', R[s].idle);
  check(s, 'idle (upgraded only)', R[s].bare);
}
out.push(probs.length ? '**Problems seen:**' : '**Problems seen:** none (no loss, no server errors, no unexpected closes).');
if (probs.length) out.push('', ...probs);
out.push('');
process.stdout.write(out.join('\n') + '\n');
