'use strict';
// node-ws-relay.js: the "minimal Node ws relay" benchmark peer.
//
// Speaks the p2pmesh dialect the way the original P2PMesh signaling server
// (src/servers/websocket-server.js) does, minus its console logging and
// its peer_joined broadcast: JSON.parse every message, a Map of peerId ->
// socket, a bootstrap_peers reply to join, and relayed types forwarded to
// "to" as JSON.stringify({...message, from}). Nothing is tuned.
//
//   node tests/bench/node-ws-relay.js [PORT]    (or env PORT, HOST)
//
// Prints "listening HOST:PORT" on stdout once the port is bound.

const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.argv[2] || process.env.PORT || 8080);
const host = process.env.HOST || '127.0.0.1';
const BOOTSTRAP_COUNT = 5;
const RELAYED = new Set([
  'signal', 'offer', 'answer', 'candidate', 'ack', 'connection_rejected',
  'batched_signals', 'kademlia_rpc_request', 'kademlia_rpc_response',
]);

const peers = new Map(); // peerId -> WebSocket
const wss = new WebSocketServer({ host, port });

function sendError(ws, message) {
  ws.send(JSON.stringify({ type: 'error', message }));
}

wss.on('connection', (ws) => {
  let peerId = null;

  ws.on('message', (data) => {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch (e) {
      sendError(ws, 'Invalid JSON message format.');
      return;
    }
    if (msg === null || typeof msg !== 'object') {
      sendError(ws, 'Invalid JSON message format.');
      return;
    }

    if (msg.type === 'join') {
      if (!msg.peerId) {
        sendError(ws, 'peerId is required for join message.');
        return;
      }
      const old = peers.get(msg.peerId);
      if (old && old !== ws) {
        sendError(old, 'Another client joined with your ID.');
        old.close();
      }
      peerId = msg.peerId;
      peers.set(peerId, ws);
      const list = [];
      for (const id of peers.keys()) {
        if (list.length >= BOOTSTRAP_COUNT) break;
        if (id !== peerId) list.push({ id });
      }
      ws.send(JSON.stringify({ type: 'bootstrap_peers', peers: list }));
      return;
    }

    if (RELAYED.has(msg.type)) {
      if (!msg.to) {
        sendError(ws, `'to' field is required for ${msg.type}.`);
        return;
      }
      const target = peers.get(msg.to);
      if (target && target.readyState === WebSocket.OPEN) {
        target.send(JSON.stringify({ ...msg, from: peerId }));
      } else {
        sendError(ws, `Peer ${msg.to} not found.`);
      }
      return;
    }

    if (msg.type === 'ping') {
      ws.send(JSON.stringify({ type: 'pong', timestamp: msg.timestamp }));
      return;
    }
    sendError(ws, `Unknown message type: ${msg.type}`);
  });

  ws.on('close', () => {
    if (peerId !== null && peers.get(peerId) === ws) peers.delete(peerId);
  });
  ws.on('error', () => {});
});

wss.on('listening', () => {
  process.stdout.write(`listening ${host}:${port}\n`);
});
wss.on('error', (err) => {
  process.stderr.write(`node-ws-relay: ${err.message}\n`);
  process.exit(1);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => process.exit(0));
}
