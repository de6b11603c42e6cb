#!/usr/bin/env node
/*
 * ws_interop.js: npm `ws` 8.x (a strict client: it fails the connection on
 * a masked server frame, RSV bits it did not negotiate, invalid UTF-8 in
 * text, bad close codes or lengths) against the p2pmesh signaling role.
 *
 *   node ws_interop.js --port N --max BYTES [--timeout-ms 20000]
 *
 * Two clients join one fresh realm as "aa" and "bb"; a's messages are
 * relayed to b byte for byte with ',"from":"aa"' spliced in before the
 * closing brace. Checks: the upgrade (permessage-deflate offered, what the
 * server answered), text and binary messages of boundary and large sizes,
 * fragmented sends, pings and pongs, close codes both ways, 1007 for
 * invalid UTF-8 and 1009 over the size limit. Prints one JSON line:
 *   {"ok": bool, "extensions": "...", "checks": [{"name", "ok", "detail"}]}
 * and exits 0 (all passed), 1 (a check failed) or 2 (usage or no `ws`).
 */
'use strict';

const path = require('path');

let WebSocket;
try {
    WebSocket = require(path.join(__dirname, '..', '..', 'node_modules', 'ws'));
} catch (err) {
    process.stdout.write(JSON.stringify({ ok: false, error: 'cannot load ws: ' + err.message }) + '\n');
    process.exit(2);
}

function arg(name, def) {
    const i = process.argv.indexOf('--' + name);
    return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}

const PORT = Number(arg('port', '0'));
const MAX = Number(arg('max', '65536'));
const TIMEOUT_MS = Number(arg('timeout-ms', '20000'));
if (!PORT || !MAX) {
    process.stdout.write(JSON.stringify({ ok: false, error: 'usage: --port N --max BYTES' }) + '\n');
    process.exit(2);
}

const HEAD = '{"type":"signal","to":"bb","d":"';
const TAIL = '"}';
const FROM = ',"from":"aa"}';
const checks = [];
const errors = [];

function check(name, ok, detail) {
    checks.push({ name, ok: !!ok, detail: ok ? undefined : detail });
}

/* A relayable message of exactly n UTF-8 bytes, fill repeated then "x". */
function relayMsg(n, fill = 'x') {
    const pad = n - Buffer.byteLength(HEAD + TAIL);
    const f = Buffer.from(fill);
    const body = Buffer.concat([Buffer.alloc(Math.floor(pad / f.length) * f.length, f), Buffer.alloc(pad % f.length, 'x')]);
    return Buffer.concat([Buffer.from(HEAD), body, Buffer.from(TAIL)]);
}

function withFrom(buf) {
    return Buffer.concat([buf.subarray(0, buf.length - 1), Buffer.from(FROM)]);
}

function bounded(p, ms, why) {
    let t;
    return Promise.race([p, new Promise((_, rej) => {
        t = setTimeout(() => rej(new Error(why + ' (after ' + ms + ' ms)')), ms);
    })]).finally(() => clearTimeout(t));
}

/* A client with a queue of received messages. */
function open(url, name, opts = {}) {
    const ws = new WebSocket(url, { perMessageDeflate: true, maxPayload: 64 * 1024 * 1024, ...opts });
    const c = { ws, name, queue: [], waiters: [], closed: null, headers: null, errors: [] };
    ws.on('upgrade', (res) => {
        c.headers = res.headers;
    });
    ws.on('message', (data, isBinary) => {
        const m = { data: Buffer.isBuffer(data) ? data : Buffer.concat(data), isBinary };
        const w = c.waiters.shift();
        if (w) w(m);
        else c.queue.push(m);
    });
    ws.on('error', (err) => {
        c.errors.push(err.message + (err.code ? ' [' + err.code + ']' : ''));
    });
    c.closedP = new Promise((resolve) => {
        ws.on('close', (code, reason) => {
            c.closed = { code, reason: reason.toString() };
            resolve(c.closed);
        });
    });
    c.opened = new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
    });
    c.next = (ms = 5000) => {
        if (c.queue.length) return Promise.resolve(c.queue.shift());
        return bounded(new Promise((resolve) => c.waiters.push(resolve)), ms, name + ': no message');
    };
    return c;
}

async function joined(url, id) {
    const c = open(url, id);
    await bounded(c.opened, 5000, id + ': open');
    c.ws.send(JSON.stringify({ type: 'join', peerId: id }));
    const boot = JSON.parse((await c.next()).data.toString());
    if (boot.type !== 'bootstrap_peers') throw new Error(id + ': got ' + JSON.stringify(boot));
    return c;
}

async function pair(tag) {
    const url = `ws://127.0.0.1:${PORT}/?room=ws-interop-${tag}-${process.pid}`;
    const a = await joined(url, 'aa');
    const b = await joined(url, 'bb');
    const pj = JSON.parse((await a.next()).data.toString());
    if (pj.type !== 'peer_joined') throw new Error('aa: got ' + JSON.stringify(pj));
    return { a, b, url };
}

function sendP(c, data, opts) {
    return new Promise((resolve, reject) => c.ws.send(data, opts, (err) => (err ? reject(err) : resolve())));
}

async function expectRelay(b, msg, name) {
    const m = await b.next(10000);
    const want = withFrom(msg);
    check(name, !m.isBinary && m.data.equals(want),
        `got ${m.isBinary ? 'binary' : 'text'} ${m.data.length} bytes ${m.data.subarray(0, 60)}..., want text ${want.length} bytes`);
}

async function closeBoth(p) {
    for (const c of [p.a, p.b]) {
        if (c.ws.readyState === WebSocket.OPEN) c.ws.close(1000);
    }
    await bounded(Promise.all([p.a.closedP, p.b.closedP]), 5000, 'closing pair').catch(() => {});
}

async function main() {
    /* 1. upgrade: permessage-deflate offered, answer recorded */
    const p = await pair('main');
    const ext = p.a.headers['sec-websocket-extensions'];
    check('upgrade-101-accept', p.a.headers['sec-websocket-accept'] !== undefined, JSON.stringify(p.a.headers));
    check('permessage-deflate-declined', ext === undefined && p.a.ws.extensions === '',
        `server answered extensions ${JSON.stringify(ext)}, negotiated ${JSON.stringify(p.a.ws.extensions)}`);

    /* 2. text and binary messages of boundary and large sizes */
    const sizes = [34, 125, 126, 127, 65535, 65536, 100000, MAX];
    for (const n of sizes) {
        const msg = relayMsg(n, n % 2 ? '\u00e9' : '\u4e2d');
        await sendP(p.a, msg.toString(), {});
        await expectRelay(p.b, msg, `text-${n}`);
        await sendP(p.a, msg, { binary: true });
        await expectRelay(p.b, msg, `binary-${n}`);
    }

    /* 3. fragmented sends (ws: send(..., {fin: false})) */
    for (const [n, k] of [[200, 2], [MAX, 4], [MAX, 64], [4096, 4096 / 16]]) {
        const msg = relayMsg(n, '\u{1f600}');
        const step = Math.ceil(msg.length / k);
        /* cut on byte offsets: inside 4-byte characters too */
        for (let i = 0; i < msg.length; i += step) {
            const last = i + step >= msg.length;
            await sendP(p.a, msg.subarray(i, i + step), { binary: false, fin: last });
        }
        await expectRelay(p.b, msg, `fragmented-text-${n}-in-${k}`);
    }

    /* 4. pings and pongs */
    for (const payload of [Buffer.alloc(0), Buffer.from('hello'), Buffer.from([...Array(125).keys()])]) {
        const got = bounded(new Promise((resolve) => p.a.ws.once('pong', resolve)), 5000, 'no pong');
        p.a.ws.ping(payload);
        const pong = await got.catch((e) => e);
        check(`ping-${payload.length}`, Buffer.isBuffer(pong) && pong.equals(payload),
            `pong ${pong instanceof Error ? pong.message : pong.toString('hex')}`);
    }
    /* an unsolicited pong is ignored: the relay still works after it */
    p.a.ws.pong(Buffer.from('unsolicited'));
    const after = relayMsg(50);
    await sendP(p.a, after.toString(), {});
    await expectRelay(p.b, after, 'unsolicited-pong-ignored');
    await closeBoth(p);
    check('close-1000-echoed', p.a.closed && p.a.closed.code === 1000, JSON.stringify(p.a.closed));

    /* 5. close codes from the client are echoed */
    for (const code of [1000, 1001, 3000, 4000, 4999]) {
        const c = open(`ws://127.0.0.1:${PORT}/`, 'close-' + code);
        await bounded(c.opened, 5000, 'open');
        c.ws.close(code, 'reason \u00e9');
        const cl = await bounded(c.closedP, 5000, 'close ' + code).catch((e) => ({ error: e.message }));
        check(`close-${code}-echoed`, cl.code === code, JSON.stringify(cl));
        errors.push(...c.errors.map((e) => `close-${code}: ${e}`));
    }

    /* 6. the server's own closes, as ws sees them */
    {
        const q = await pair('over-max');
        q.a.ws.send(relayMsg(MAX + 1));
        const cl = await bounded(q.a.closedP, 5000, 'close after over-max').catch((e) => ({ error: e.message }));
        check('over-max-1009', cl.code === 1009, JSON.stringify(cl));
        const left = JSON.parse((await q.b.next()).data.toString());
        check('over-max-not-relayed', left.type === 'peer_left', JSON.stringify(left));
        await closeBoth(q);
        /* a reset while a still sends the refused message is expected;
         * a ws validation error (WS_ERR_*) never is */
        errors.push(...q.a.errors.filter((e) => /WS_ERR/.test(e)).map((e) => 'over-max: ' + e),
            ...q.b.errors.map((e) => 'over-max b: ' + e));
    }
    {
        const c = open(`ws://127.0.0.1:${PORT}/`, 'bad-utf8');
        await bounded(c.opened, 5000, 'open');
        /* ws sends a Buffer as text without checking it */
        c.ws.send(Buffer.from([0x7b, 0xed, 0xa0, 0x80, 0x7d]), { binary: false });
        const cl = await bounded(c.closedP, 5000, 'close after bad UTF-8').catch((e) => ({ error: e.message }));
        check('invalid-utf8-1007', cl.code === 1007, JSON.stringify(cl));
        errors.push(...c.errors.filter((e) => /WS_ERR/.test(e)).map((e) => 'bad-utf8: ' + e));
    }
    errors.push(...p.a.errors.map((e) => 'aa: ' + e), ...p.b.errors.map((e) => 'bb: ' + e));
    return ext;
}

const watchdog = setTimeout(() => {
    process.stdout.write(JSON.stringify({ ok: false, error: `timeout after ${TIMEOUT_MS} ms`, checks }) + '\n');
    process.exit(1);
}, TIMEOUT_MS);

main().then((ext) => {
    /* any 'error' event means ws refused something the server sent */
    check('no-client-errors', errors.length === 0, errors.join('; '));
    const ok = checks.every((c) => c.ok);
    process.stdout.write(JSON.stringify({ ok, extensions: ext === undefined ? null : ext, checks }) + '\n');
    clearTimeout(watchdog);
    process.exit(ok ? 0 : 1);
}, (err) => {
    process.stdout.write(JSON.stringify({ ok: false, error: err.stack || String(err), checks, errors }) + '\n');
    clearTimeout(watchdog);
    process.exit(1);
});
