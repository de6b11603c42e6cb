'use strict';
// report.js: markdown summary of one tests/bench/run.sh result directory.
//
//   node tests/bench/report.js tests/bench/results/<stamp>
//
// Reads the JSON lines pm-loadgen wrote (<server>.<phase>.json) and prints
// the per-server table, the p2pmesh-vs-peer ratios against the targets,
// and a bottleneck note for every throughput run.

const fs = require('fs');
const path = require('path');

const dir = process.argv[2];
if (!dir) {
  process.stderr.write('usage: node report.js RESULT_DIR\n');
  process.exit(2);
}

function load(name) {
  try {
    const text = fs.readFileSync(path.join(dir, name), 'utf8').trim();
    if (!text) return null;
    return JSON.parse(text.split('\n').pop());
  } catch (e) {
    return null;
  }
}

const TARGET_CPU = 3; // p2pmesh msgs per CPU-s >= 3x the peer's
const TARGET_P99 = 0.5; // p2pmesh p99 <= 0.5x the peer's
const TARGET_RSS = 6 * 1024; // bytes per idle plaintext connection

const env = load('env.json') || {};
const envAfter = load('env-after.json') || {};
const latRate = load('latency-rate.json') || {};
const order = ['p2pmesh', 'node-ws-relay', 'peerjs', 'p2pmesh-peerjs'];
const label = {
  p2pmesh: 'p2pmesh',
  'node-ws-relay': 'Node ws relay',
  peerjs: 'PeerJS server',
  'p2pmesh-peerjs': 'p2pmesh (PeerJS dialect)',
};
const dialect = {
  p2pmesh: 'p2pmesh',
  'node-ws-relay': 'p2pmesh',
  peerjs: 'peerjs',
  'p2pmesh-peerjs': 'peerjs',
};

const R = {};
for (const s of order) {
  const r = {
    tp: load(`${s}.throughput.json`),
    lat: load(`${s}.latency.json`),
    idle: load(`${s}.idle.json`),
    bare: load(`${s}.idle-bare.json`),
  };
  if (r.tp || r.lat || r.idle) R[s] = r;
}

const f0 = (v) => (v === undefined || v === null || v < 0 ? 'n/a' : Math.round(v).toLocaleString('en-US'));
const f1 = (v) => (v === undefined || v === null || v < 0 ? 'n/a' : v.toFixed(1));
const pct = (v) => (v === undefined || v === null || v < 0 ? 'n/a' : `${Math.round(v * 100)} %`);
const kb = (v) => (v === undefined || v === null || v < 0 ? 'n/a' : `${(v / 1024).toFixed(2)} KiB`);
const ratio = (a, b) => (a > 0 && b > 0 ? a / b : null);
const fr = (v, d = 2) => (v === null ? 'n/a' : `${v.toFixed(d)}x`);

const out = [];
out.push(`## Results (${env.stamp || path.basename(dir)})`);
out.push('');
out.push(
  `Machine: ${env.cpus || '?'} x ${env.cpu || '?'}, kernel ${env.kernel || '?'}; ` +
    `node ${env.node || '?'}, ws ${env.ws || '?'}, peer ${env.peer || '?'}, libevent ${env.libevent || '?'}; ` +
    `p2pmesh ${env.p2pmesh || '?'} (git ${env.git || '?'}). ` +
    `Machine busy before/after the run (other work): ${env.busy_before_pct ?? '?'} % / ${envAfter.busy_after_pct ?? '?'} %.`,
);
out.push('');
out.push(
  `(a) closed loop, ${env.pairs} pairs, window ${env.window}, ${env.duration} s after ${env.warmup} s warm-up, ` +
    `${env.size} B padding; (b) open loop at ${latRate.lat_rate ?? '?'} msgs/s for every server ` +
    `(${Math.round((latRate.lat_fraction || 0) * 100)} % of the weakest capacity in (a)); ` +
    `(c) ${env.idle_conns} idle connections held ${env.settle} s.`,
);
out.push('');
out.push(
  '| server | dialect | (a) msgs/s | (a) server CPU | (a) client CPU | (a) msgs per server CPU-s ' +
    '| (b) p50 µs | (b) p90 µs | (b) p99 µs | (b) p99.9 µs | (b) lost | (c) RSS/conn joined | (c) RSS/conn upgraded only |',
);
out.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const s of order) {
  const r = R[s];
  if (!r) continue;
  const tp = r.tp || {};
  const lat = r.lat || {};
  const l = lat.latency_us || {};
  out.push(
    `| ${label[s]} | ${dialect[s]} | ${f0(tp.msgs_per_s)} | ${pct(tp.server_cpu_util)} | ${pct(tp.client_cpu_util)} ` +
      `| ${f0(tp.msgs_per_server_cpu_s)} | ${f1(l.p50)} | ${f1(l.p90)} | ${f1(l.p99)} | ${f1(l.p999)} ` +
      `| ${r.lat ? lat.lost : 'n/a'} | ${r.idle ? kb(r.idle.rss_per_conn_bytes) : 'n/a'} ` +
      `| ${r.bare ? kb(r.bare.rss_per_conn_bytes) : 'n/a'} |`,
  );
}
out.push('');

// ratios against the targets
const pairs = [
  ['p2pmesh', 'node-ws-relay'],
  ['p2pmesh', 'peerjs'],
  ['p2pmesh-peerjs', 'peerjs'],
];
const rows = [];
for (const [a, b] of pairs) {
  if (!R[a] || !R[b]) continue;
  const A = R[a];
  const B = R[b];
  const cpu = ratio(A.tp && A.tp.msgs_per_server_cpu_s, B.tp && B.tp.msgs_per_server_cpu_s);
  const p99 = ratio(A.lat && A.lat.latency_us.p99, B.lat && B.lat.latency_us.p99);
  const p50 = ratio(A.lat && A.lat.latency_us.p50, B.lat && B.lat.latency_us.p50);
  const rssA = A.idle ? A.idle.rss_per_conn_bytes : null;
  const rssB = B.idle ? B.idle.rss_per_conn_bytes : null;
  const rssR = ratio(rssA, rssB);
  const ok = (v, good) => (v === null ? '' : good ? ' (met)' : ' (MISSED)');
  rows.push(
    `| ${label[a]} vs ${label[b]} | ${fr(cpu)}${ok(cpu, cpu >= TARGET_CPU)} | ${fr(p99)}${ok(p99, p99 <= TARGET_P99)} ` +
      `| ${fr(p50)} | ${fr(rssR)} | ${rssA !== null && rssA !== undefined ? kb(rssA) : 'n/a'}` +
      `${rssA !== null && rssA !== undefined ? ok(rssA, rssA <= TARGET_RSS) : ''} |`,
  );
}
if (rows.length) {
  out.push(
    `Ratios (targets: msgs per CPU-s >= ${TARGET_CPU}x, p99 <= ${TARGET_P99}x at equal load, ` +
      `<= ${TARGET_RSS / 1024} KiB RSS per idle connection at ${env.idle_conns}):`,
  );
  out.push('');
  out.push('| comparison | msgs per server CPU-s | p99 latency | p50 latency | RSS per idle conn | p2pmesh RSS per idle conn |');
  out.push('|---|---:|---:|---:|---:|---:|');
  out.push(...rows);
  out.push('');
}

// bottleneck notes
out.push('Bottleneck check for the throughput runs (a):');
out.push('');
for (const s of order) {
  const tp = R[s] && R[s].tp;
  if (!tp) continue;
  const su = tp.server_cpu_util;
  const cu = tp.client_cpu_util;
  let verdict;
  if (su >= 0.9 && cu < 0.9) verdict = 'server-bound (the server core was saturated, the load generator was not)';
  else if (cu >= 0.9 && su < 0.9) verdict = 'CLIENT-BOUND: the load generator saturated its core first; msgs/s understates the server';
  else if (su >= 0.9 && cu >= 0.9) verdict = 'both cores saturated';
  else verdict = 'neither core saturated (latency-bound closed loop or CPU taken by other work)';
  out.push(
    `- ${label[s]}: server ${pct(su)}, load generator ${pct(cu)}, other processes ${f1(tp.other_cpu_s)} CPU-s ` +
      `over ${f1(tp.duration_s)} s: ${verdict}.`,
  );
}
out.push('');

// problems seen
const probs = [];
for (const s of order) {
  if (!R[s]) continue;
  for (const [ph, r] of Object.entries(R[s])) {
    if (!r) continue;
    const bad = [];
    for (const k of ['lost', 'send_dropped', 'seq_gaps', 'seq_old', 'bad_from', 'bad_payload', 'server_errors',
      'server_closes', 'unexpected_eof', 'proto_errors', 'masked_frames', 'failed', 'join_unacked']) {
      if (r[k]) bad.push(`${k} ${r[k]}`);
    }
    if (r.ok === false) bad.push('run not ok');
    if (bad.length) probs.push(`- ${label[s]} ${ph}: ${bad.join(', ')}`);
  }
}
out.push(probs.length ? 'Problems seen:' : 'Problems seen: none (no loss, no errors, no unexpected closes).');
if (probs.length) out.push('', ...probs);
out.push('');
process.stdout.write(out.join('\n') + '\n');
