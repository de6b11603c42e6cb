#!/usr/bin/env node
/*
 * game_model.mjs: unit test of the game role web client's pure model
 * (roles/game/web/app.js, the part before the browser UI) against
 * docs/game.md: Snapshot and GameEvent application, growth, food order,
 * the TickHash fingerprint, and stream_seq gap detection.
 *
 * app.js is a plain browser script; evaluated in Node (no document) it only
 * defines the model and publishes it as globalThis.snakeModel. Messages go
 * through JSON text first, as they arrive from the WebSocket.
 *
 * Needs Node >= 20, no packages. Exit: 0 pass, 1 fail.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import vm from 'node:vm';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const APP = path.resolve(here, '..', '..', 'roles', 'game', 'web', 'app.js');

vm.runInThisContext(fs.readFileSync(APP, 'utf8'), { filename: APP });
const M = globalThis.snakeModel;

let passed = 0;
let failed = 0;
function check(name, fn) {
  try {
    fn();
    passed++;
    process.stdout.write(`ok   ${name}\n`);
  } catch (e) {
    failed++;
    process.stdout.write(`FAIL ${name}\n${e && e.stack ? e.stack : e}\n`);
  }
}

/* ---- an independent TickHash, written from the docs: the u32 words in a
 * little-endian byte buffer (DataView), FNV-1a in BigInt arithmetic. */
function fnv1a(bytes) {
  let h = 2166136261n;
  for (const b of bytes) h = ((h ^ BigInt(b)) * 16777619n) & 0xffffffffn;
  return h.toString(16).padStart(8, '0');
}

function refHash(state) {
  const words = [state.tick % 2 ** 32];
  const live = state.snakes.filter((s) => s.alive).sort((a, b) => a.id - b.id);
  for (const s of live) {
    words.push(s.id, s.body.length);
    for (const [x, y] of s.body) words.push(x, y);
  }
  words.push(state.food.length);
  for (const [x, y] of state.food) words.push(x, y);
  const view = new DataView(new ArrayBuffer(words.length * 4));
  words.forEach((w, i) => view.setUint32(i * 4, w, true));
  return fnv1a(new Uint8Array(view.buffer));
}

/* ---- wire helpers */
const GAME = 7;
const wire = (v) => JSON.parse(JSON.stringify(v));

function gameEvent(seq, tick, event, gameId = GAME) {
  return wire({ GameEvent: { game_id: gameId, tick, stream_seq: seq, event } }).GameEvent;
}

function snake(id, userId, body, direction, extra = {}) {
  return { id, user_id: userId, body, direction, alive: true, score: 0, grow: 0, ...extra };
}

/* A model showing GAME after a Snapshot at stream_seq seq. */
function modelWith(state, seq) {
  const m = M.newModel(GAME);
  const r = M.receive(m, gameEvent(seq, state.tick, { Snapshot: { state } }));
  assert.deepEqual(r, { tag: 'Snapshot', resync: false });
  return m;
}

/* Feed events numbered from the model's seq + 1; returns the results. */
function feed(m, tick, ...events) {
  return events.map((e) => M.receive(m, gameEvent(m.seq + 1, tick, e)));
}

function duelState() {
  return {
    tick: 10, status: 'running', width: 20, height: 20, tick_ms: 100,
    snakes: [
      snake(0, 'g-a', [[5, 5], [4, 5], [3, 5], [2, 5]], 'Right'),
      snake(1, 'g-b', [[10, 10], [10, 11], [10, 12], [10, 13]], 'Up'),
    ],
    food: [[7, 5], [1, 1], [15, 15]],
  };
}

/* ---- the checks */
check('the reference FNV-1a matches the published test vectors', () => {
  assert.equal(fnv1a(new Uint8Array(0)), '811c9dc5');
  assert.equal(fnv1a(new TextEncoder().encode('a')), 'e40c292c');
  assert.equal(fnv1a(new TextEncoder().encode('foobar')), 'bf9cf968');
});

check('hash of a tiny known state', () => {
  /* Live snakes 0 and 2 (listed out of order), snake 1 dead, two food items.
   * Words: 7 | 0 3 1 1 2 1 3 1 | 2 2 10 3 10 4 | 2 5 6 0 2 -> 006ca9c4
   * (also computed with Python's struct.pack('<I') and FNV-1a). */
  const state = {
    tick: 7, status: 'running', width: 20, height: 20, tick_ms: 100,
    snakes: [
      snake(2, 'g-c', [[10, 3], [10, 4]], 'Up'),
      snake(1, 'g-b', [[9, 9], [9, 10]], 'Up', { alive: false }),
      snake(0, 'g-a', [[1, 1], [2, 1], [3, 1]], 'Left'),
    ],
    food: [[5, 6], [0, 2]],
  };
  assert.equal(refHash(state), '006ca9c4');
  assert.equal(M.stateHash(state), '006ca9c4');
  assert.equal(M.stateHash({ ...state, tick: 2 ** 32 + 7 }), '006ca9c4', 'only the low 32 bits of the tick count');
  assert.equal(M.stateHash({ tick: 0, snakes: [], food: [] }), '9be17165');
  const m = modelWith(state, 1);
  assert.equal(M.stateHash(m.state), '006ca9c4', 'a Snapshot keeps what the hash covers');
});

check('snapshot then events give the expected bodies, food, scores and status', () => {
  const m = modelWith(duelState(), 40);
  assert.equal(m.seq, 40);
  feed(m, 11, 'Moved');
  feed(m, 12,
    { SnakeTurned: { snake_id: 1, direction: 'Left' } },
    'Moved',
    { FoodEaten: { snake_id: 0, position: [7, 5] } },
    { FoodSpawned: { position: [0, 19] } });
  const [a, b] = m.state.snakes;
  assert.deepEqual(a.body, [[7, 5], [6, 5], [5, 5], [4, 5]]);
  assert.deepEqual(b.body, [[9, 9], [10, 9], [10, 10], [10, 11]]);
  assert.equal(b.direction, 'Left');
  assert.deepEqual(m.state.food, [[1, 1], [15, 15], [0, 19]]);
  assert.equal(a.score, 1);
  assert.equal(a.grow, 1);
  assert.equal(m.state.tick, 12);

  feed(m, 13, 'Moved');
  feed(m, 14, 'Moved', { SnakeDied: { snake_id: 1, cause: 'OutOfBounds', other: -1 } });
  assert.deepEqual(a.body, [[9, 5], [8, 5], [7, 5], [6, 5], [5, 5]]);
  assert.equal(b.alive, false);
  const deadBody = b.body.map((c) => c.slice());
  feed(m, 15, 'Moved');
  assert.deepEqual(a.body, [[10, 5], [9, 5], [8, 5], [7, 5], [6, 5]]);
  assert.deepEqual(b.body, deadBody, 'a dead snake does not move');

  const h = refHash(m.state);
  const [ok] = feed(m, 15, { TickHash: { hash: h } });
  assert.deepEqual(ok, { tag: 'TickHash', resync: false });
  assert.equal(m.hashOk, 1);

  feed(m, 15,
    { StatusUpdated: { status: 'ended' } },
    { GameEnded: { winner: 0, scores: [{ snake_id: 0, user_id: 'g-a', score: 1 }, { snake_id: 1, user_id: 'g-b', score: 0 }] } });
  assert.equal(m.state.status, 'ended');
  assert.equal(m.state.tick, 15);
  assert.equal(m.result.winner, 0);
  assert.deepEqual(m.result.scores.map((s) => s.score), [1, 0]);
  assert.equal(m.seq, 52);
  assert.equal(m.awaiting, false);
});

check('growth keeps the tail for exactly one Moved per food', () => {
  const m = modelWith({
    tick: 0, status: 'running', width: 10, height: 10, tick_ms: 100,
    snakes: [snake(0, 'g-a', [[2, 0], [1, 0], [0, 0]], 'Down')],
    food: [[2, 1], [2, 2]],
  }, 0);
  const s = m.state.snakes[0];
  feed(m, 1, 'Moved', { FoodEaten: { snake_id: 0, position: [2, 1] } });
  assert.deepEqual(s.body, [[2, 1], [2, 0], [1, 0]]);
  feed(m, 2, 'Moved', { FoodEaten: { snake_id: 0, position: [2, 2] } });
  assert.deepEqual(s.body, [[2, 2], [2, 1], [2, 0], [1, 0]], 'the tail stayed on the first move after eating');
  assert.equal(s.grow, 1);
  feed(m, 3, 'Moved');
  assert.deepEqual(s.body, [[2, 3], [2, 2], [2, 1], [2, 0], [1, 0]], 'the tail stayed after the second food');
  feed(m, 4, 'Moved');
  assert.deepEqual(s.body, [[2, 4], [2, 3], [2, 2], [2, 1], [2, 0]], 'and moves again once grown');
  assert.equal(s.grow, 0);
  assert.equal(s.score, 2);
});

check('a snapshot carries pending growth', () => {
  const m = modelWith({
    tick: 3, status: 'running', width: 10, height: 10, tick_ms: 100,
    snakes: [snake(0, 'g-a', [[2, 2], [2, 1]], 'Down', { grow: 1, score: 4 })],
    food: [],
  }, 9);
  feed(m, 4, 'Moved');
  assert.deepEqual(m.state.snakes[0].body, [[2, 3], [2, 2], [2, 1]]);
});

check('FoodEaten removes that item and keeps the order of the rest', () => {
  const m = modelWith({
    tick: 0, status: 'running', width: 10, height: 10, tick_ms: 100,
    snakes: [snake(0, 'g-a', [[5, 5]], 'Up')],
    food: [[1, 1], [2, 2], [3, 3], [4, 4], [2, 2]],
  }, 0);
  feed(m, 0, { FoodEaten: { snake_id: 0, position: [2, 2] } });
  assert.deepEqual(m.state.food, [[1, 1], [3, 3], [4, 4], [2, 2]]);
  feed(m, 0, { FoodEaten: { snake_id: 0, position: [4, 4] } }, { FoodSpawned: { position: [9, 0] } });
  assert.deepEqual(m.state.food, [[1, 1], [3, 3], [2, 2], [9, 0]]);
  assert.equal(m.state.snakes[0].score, 2);
});

check('a stream_seq gap asks for a resync and events wait for the Snapshot', () => {
  const m = modelWith(duelState(), 10);
  const before = wire(m.state);
  const gap = M.receive(m, gameEvent(12, 11, 'Moved'));
  assert.deepEqual(gap, { tag: 'Moved', resync: true });
  assert.equal(m.awaiting, true);
  assert.equal(M.receive(m, gameEvent(13, 12, 'Moved')), null, 'ignored until the Snapshot');
  assert.deepEqual(wire(m.state), before, 'nothing applied');

  const fresh = duelState();
  fresh.tick = 12;
  fresh.food = [[0, 0]];
  assert.deepEqual(M.receive(m, gameEvent(13, 12, { Snapshot: { state: fresh } })), { tag: 'Snapshot', resync: false });
  assert.equal(m.awaiting, false);
  assert.equal(m.seq, 13);
  assert.deepEqual(m.state.food, [[0, 0]], 'the Snapshot replaced the state');
  assert.deepEqual(M.receive(m, gameEvent(14, 13, 'Moved')), { tag: 'Moved', resync: false });
  assert.equal(m.state.tick, 13);
  assert.equal(M.receive(m, gameEvent(14, 13, 'Moved')), null, 'a duplicate is dropped, not a gap');
  assert.deepEqual(m.state.snakes[0].body[0], [6, 5], 'and not applied twice');
});

check('a TickHash mismatch asks for a resync', () => {
  const m = modelWith(duelState(), 0);
  const bad = refHash(m.state) === '00000000' ? '00000001' : '00000000';
  assert.deepEqual(M.receive(m, gameEvent(1, 10, { TickHash: { hash: bad } })), { tag: 'TickHash', resync: true });
  assert.equal(m.hashOk, 0);
  assert.equal(m.hashBad, 1);
  assert.equal(m.awaiting, true);
  assert.equal(M.receive(m, gameEvent(2, 11, 'Moved')), null);
});

check('events of another game, or before any Snapshot, are ignored', () => {
  const m = M.newModel(GAME);
  assert.equal(M.receive(m, gameEvent(1, 1, 'Moved')), null, 'no state yet');
  M.receive(m, gameEvent(5, 10, { Snapshot: { state: duelState() } }));
  assert.equal(M.receive(m, gameEvent(6, 11, 'Moved', GAME + 1)), null, 'another game');
  assert.equal(M.receive(m, gameEvent(1, 1, { Snapshot: { state: { ...duelState(), food: [] } } }, GAME + 1)), null);
  assert.equal(m.seq, 5);
  assert.equal(m.state.food.length, 3);
  assert.deepEqual(M.receive(m, gameEvent(6, 11, 'Moved')), { tag: 'Moved', resync: false });
});

check('expectSnapshot (a reconnect) holds events until the next Snapshot', () => {
  const m = modelWith(duelState(), 3);
  M.expectSnapshot(m);
  assert.equal(M.receive(m, gameEvent(9, 11, 'Moved')), null, 'no resync asked for a gap while rejoining');
  M.receive(m, gameEvent(9, 11, { Snapshot: { state: duelState() } }));
  assert.deepEqual(M.receive(m, gameEvent(10, 11, 'Moved')), { tag: 'Moved', resync: false });
});

process.stdout.write(`${passed} passed, ${failed} failed\n`);
process.exit(failed ? 1 : 0);
