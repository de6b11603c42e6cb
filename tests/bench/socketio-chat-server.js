'use strict';
// socketio-chat-server.js: the Socket.IO 4 peer of the chat benchmark
// (tests/bench/chat_bench.sh, docs/benchmarks.md "Chat (issue 5)").
//
// What a typical Socket.IO chat server does, nothing tuned beyond what a
// fair comparison needs:
//   - the client's name comes from the handshake auth ({"username": ...},
//     sent in the CONNECT packet `40{...}`), falling back to the socket id;
//   - `join` (room, ack?) -> socket.join(room), then ack({room, members})
//     when the client asked for one;
//   - `message` ({room, body, client_id}, ack?) -> io.to(room).emit('message',
//     {id, room, from, body, ts, client_id}) to every member of the room
//     (the sender included, as p2pmesh does), then the sender's ack
//     ({client_id, id, ts, room}) through the Socket.IO acknowledgement, or
//     an `ack` event when the client asked for none. A message to a room the
//     socket has not joined gets an error, as p2pmesh's not_member.
//   - ids come from an in-memory counter: NOTHING IS PERSISTED (p2pmesh
//     commits every message to SQLite before it acks and fans it out).
// WebSocket transport only (no HTTP long-polling, so the comparison with
// p2pmesh's plain WebSocket is transport-fair), per-message deflate off
// (the v4 default, stated explicitly), the client bundle not served.
//
//   node tests/bench/socketio-chat-server.js [PORT]   (or env PORT, HOST)
//
// Prints "listening HOST:PORT" on stdout once the port is bound.

const http = require('http');
const { Server } = require('socket.io');

const port = Number(process.argv[2] || process.env.PORT || 3000);
const host = process.env.HOST || '127.0.0.1';
const MAX_BODY = 4000; // p2pmesh's chat.max_message default

const httpServer = http.createServer((req, res) => {
  res.writeHead(404);
  res.end();
});
const io = new Server(httpServer, {
  transports: ['websocket'],
  perMessageDeflate: false,
  httpCompression: false,
  serveClient: false,
});

let nextId = 1;

io.on('connection', (socket) => {
  const auth = socket.handshake.auth || {};
  const username =
    typeof auth.username === 'string' && auth.username ? auth.username : socket.id;
  socket.data.username = username;

  socket.on('join', (room, ack) => {
    if (typeof room !== 'string' || room === '') {
      if (typeof ack === 'function') ack({ error: 'bad_request' });
      return;
    }
    socket.join(room);
    if (typeof ack === 'function') {
      const members = io.sockets.adapter.rooms.get(room);
      ack({ room, members: members ? members.size : 0 });
    }
  });

  socket.on('leave', (room, ack) => {
    socket.leave(room);
    if (typeof ack === 'function') ack({ room });
  });

  socket.on('message', (msg, ack) => {
    const reply = typeof ack === 'function' ? ack : (o) => socket.emit('ack', o);
    if (msg === null || typeof msg !== 'object' || typeof msg.room !== 'string' ||
        typeof msg.body !== 'string' || msg.body === '') {
      reply({ error: 'bad_request', client_id: msg && msg.client_id });
      return;
    }
    if (!socket.rooms.has(msg.room)) {
      reply({ error: 'not_member', client_id: msg.client_id });
      return;
    }
    if (msg.body.length > MAX_BODY) {
      reply({ error: 'too_long', client_id: msg.client_id });
      return;
    }
    const m = {
      id: nextId++,
      room: msg.room,
      from: username,
      body: msg.body,
      ts: Date.now(),
      client_id: typeof msg.client_id === 'string' ? msg.client_id : null,
    };
    io.to(msg.room).emit('message', m);
    reply({ client_id: m.client_id, id: m.id, ts: m.ts, room: m.room });
  });
});

httpServer.listen(port, host, () => {
  process.stdout.write(`listening ${host}:${port}\n`);
});

function stop() {
  io.close();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
