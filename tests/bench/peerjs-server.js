'use strict';
// peerjs-server.js: the PeerJS server benchmark peer (npm `peer`, stock).
//
//   node tests/bench/peerjs-server.js [PORT]    (or env PORT, HOST)
//
// WebSocket endpoint: ws://HOST:PORT/peerjs?key=peerjs&id=ID&token=TOKEN.
// Only the limits a benchmark would trip over are raised: the concurrent
// client cap (default 5000) and the heartbeat timeout (so a slow run is
// never cut short). Prints "listening HOST:PORT" once the port is bound.

const { PeerServer } = require('peer');

const port = Number(process.argv[2] || process.env.PORT || 9000);
const host = process.env.HOST || '127.0.0.1';

const server = PeerServer(
  {
    host,
    port,
    path: '/',
    key: 'peerjs',
    concurrent_limit: 100000,
    alive_timeout: 3600 * 1000,
  },
  () => process.stdout.write(`listening ${host}:${port}\n`),
);
server.on('error', (err) => {
  process.stderr.write(`peerjs-server: ${err && err.message}\n`);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => process.exit(0));
}
