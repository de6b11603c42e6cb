// ywebrtc-server.mjs: the y-webrtc reference signaling server benchmark peer
// (npm `y-webrtc`, its own bin/server.js, run unchanged).
//
//   node tests/bench/ywebrtc-server.mjs [PORT]    (or env PORT, HOST)
//
// The stock server reads PORT from the environment and listens on every
// interface; the only change here is that its listen() is bound to HOST
// (default 127.0.0.1) so benchmark traffic stays on loopback. Everything
// else (JSON.parse per message, JSON.stringify per subscriber, the 30 s
// ping/pong liveness) is the npm code as published. Prints
// "listening HOST:PORT" once the port is bound.

import http from 'http';
import path from 'path';
import { fileURLToPath, pathToFileURL } from 'url';

const here = path.dirname(fileURLToPath(import.meta.url));
const port = Number(process.argv[2] || process.env.PORT || 4444);
const host = process.env.HOST || '127.0.0.1';

const listen = http.Server.prototype.listen;
http.Server.prototype.listen = function (p, ...rest) {
  this.once('listening', () => process.stdout.write(`listening ${host}:${port}\n`));
  return listen.call(this, p, host, ...rest);
};
process.env.PORT = String(port);

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => process.exit(0));
}

// the stock server: tests/node_modules/y-webrtc/bin/server.js
const bin = path.join(here, '..', 'node_modules', 'y-webrtc', 'bin', 'server.js');
await import(pathToFileURL(bin).href);
