#!/usr/bin/env node
/*
 * websocket.mjs: Chromium's own WebSocket client against the p2pmesh
 * signaling role. A page opens WebSockets to the server, joins two peers
 * in one realm and sends text and binary messages of boundary and large
 * sizes (125, 126, 65535, 65536, more, up to ws.max_message) through the
 * relay, which delivers them byte for byte with "from" spliced in. Then the
 * close codes the browser sees: 1000, 3000 and 4999 echoed, 1009 after a
 * message over ws.max_message. A server frame Chromium finds
 * non-conformant fails the connection with 1006, which fails the test.
 *
 *   PM_BIN        server binary (default: <repo>/p2pmesh)
 *   E2E_VERBOSE=1 also print the results and server output on success
 *
 * Needs only loopback; run.sh runs it in a network namespace with only lo.
 * Exit: 0 pass, 1 fail (with the reason), 77 skip (no /usr/bin/chromium).
 */
import { spawn } from 'node:child_process';
import http from 'node:http';
import {
    BIN, CHROMIUM, CHROMIUM_ARGS, Fail, bounded, executable, freePort, httpGet, repo, say,
} from './lib.mjs';

const VERBOSE = process.env.E2E_VERBOSE === '1';
const MAX = 256 * 1024; /* the server's ws.max_message below */

const HEALTH_MS = 10000;
const LAUNCH_MS = 30000;
const PAGE_MS = 30000; /* the whole in-page exchange */
const EXIT_MS = 10000;
const WATCHDOG_MS = 120000;

const ARGS = CHROMIUM_ARGS;

const started = Date.now();
let server = null;
let pageServer = null;
let browser = null;

function startServer(port) {
    const args = ['--role=signaling', '--addr=127.0.0.1', '--port=' + port, '--ws.max_message=256k',
        '--limits.per_conn_burst=1000'];
    const child = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const s = { child, out: '', alive: true };
    const keep = (d) => {
        s.out += d.toString();
        if (s.out.length > 65536) s.out = s.out.slice(-65536);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    s.exited = new Promise((resolve) => {
        child.on('error', (err) => {
            s.alive = false;
            resolve({ code: null, signal: null, error: err });
        });
        child.on('exit', (code, signal) => {
            s.alive = false;
            resolve({ code, signal });
        });
    });
    return s;
}

async function waitHealthy(port) {
    const deadline = Date.now() + HEALTH_MS;
    while (Date.now() < deadline) {
        if (!server.alive) throw new Fail('server exited before /health answered');
        if ((await httpGet(`http://127.0.0.1:${port}/health`, 1000)).status === 200) return;
        await new Promise((r) => setTimeout(r, 100));
    }
    throw new Fail(`GET /health did not answer 200 within ${HEALTH_MS} ms`);
}

function startPageServer() {
    const srv = http.createServer((req, res) => {
        if (req.url === '/ws.html') {
            res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
            res.end('<!doctype html><meta charset="utf-8"><title>ws</title>');
        } else {
            res.writeHead(404);
            res.end();
        }
    });
    return new Promise((resolve, reject) => {
        srv.once('error', reject);
        srv.listen(0, '127.0.0.1', () => resolve(srv));
    });
}

/* Runs inside the page: returns a list of {name, ok, detail}. */
async function inPage({ wsBase, max }) {
    const HEAD = '{"type":"signal","to":"bb","d":"';
    const TAIL = '"}';
    const enc = new TextEncoder();
    const results = [];
    const check = (name, ok, detail) => results.push({ name, ok: !!ok, detail: ok ? '' : detail });
    const timeout = (p, ms, why) => Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(why)), ms))]);

    function client(url) {
        const ws = new WebSocket(url);
        ws.binaryType = 'arraybuffer';
        const c = { ws, queue: [], waiters: [] };
        ws.onmessage = (e) => {
            const w = c.waiters.shift();
            if (w) w(e.data);
            else c.queue.push(e.data);
        };
        c.closed = new Promise((resolve) => {
            ws.onclose = (e) => resolve({ code: e.code, reason: e.reason, wasClean: e.wasClean });
        });
        c.opened = new Promise((resolve, reject) => {
            ws.onopen = resolve;
            ws.onerror = () => reject(new Error('websocket error on open'));
        });
        c.next = (ms = 5000) => c.queue.length ? Promise.resolve(c.queue.shift())
            : timeout(new Promise((r) => c.waiters.push(r)), ms, 'no message');
        return c;
    }
    async function joined(url, id) {
        const c = client(url);
        await timeout(c.opened, 5000, id + ' did not open');
        c.ws.send(JSON.stringify({ type: 'join', peerId: id }));
        const boot = JSON.parse(await c.next());
        if (boot.type !== 'bootstrap_peers') throw new Error(id + ' got ' + JSON.stringify(boot));
        return c;
    }
    async function pair(room) {
        const url = wsBase + '?room=' + room;
        const a = await joined(url, 'aa');
        const b = await joined(url, 'bb');
        const pj = JSON.parse(await a.next());
        if (pj.type !== 'peer_joined') throw new Error('aa got ' + JSON.stringify(pj));
        return { a, b };
    }
    /* a message of exactly n UTF-8 bytes: fill repeated, topped up with x */
    function relayMsg(n, fill) {
        const pad = n - (HEAD.length + TAIL.length);
        const fb = enc.encode(fill).length;
        return HEAD + fill.repeat(Math.floor(pad / fb)) + 'x'.repeat(pad % fb) + TAIL;
    }

    const p = await pair('browser-' + Math.random().toString(16).slice(2));
    const sizes = [34, 125, 126, 127, 65535, 65536, 65537, 100000, 200000, max];
    for (const n of sizes) {
        const msg = relayMsg(n, n % 2 ? '\u00e9' : '\u{1f600}');
        const want = msg.slice(0, -1) + ',"from":"aa"}';
        check(`size-${n}`, enc.encode(msg).length === n, 'message builder');
        p.a.ws.send(msg);
        let got = await p.b.next(10000).catch((e) => e);
        check(`text-${n}`, got === want, `got ${typeof got === 'string' ? got.length + ' chars' : got}`);
        p.a.ws.send(enc.encode(msg)); /* Uint8Array: a binary frame */
        got = await p.b.next(10000).catch((e) => e);
        check(`binary-${n}`, got === want, `got ${typeof got === 'string' ? got.length + ' chars' : got}`);
    }
    p.a.ws.close(1000, 'bye');
    const ca = await timeout(p.a.closed, 5000, 'no close').catch((e) => ({ error: e.message }));
    check('close-1000', ca.code === 1000 && ca.wasClean, JSON.stringify(ca));
    const left = JSON.parse(await p.b.next());
    check('peer-left-after-close', left.type === 'peer_left' && left.peerId === 'aa', JSON.stringify(left));
    p.b.ws.close();
    const cb = await timeout(p.b.closed, 5000, 'no close').catch((e) => ({ error: e.message }));
    check('close-no-code', cb.code === 1005 && cb.wasClean, JSON.stringify(cb));

    for (const code of [3000, 4000, 4999]) {
        const c = client(wsBase);
        await timeout(c.opened, 5000, 'open');
        c.ws.close(code, 'r\u00e9ason');
        const cl = await timeout(c.closed, 5000, 'no close').catch((e) => ({ error: e.message }));
        check(`close-${code}`, cl.code === code && cl.wasClean, JSON.stringify(cl));
    }

    const q = await pair('browser-over-' + Math.random().toString(16).slice(2));
    q.a.ws.send(relayMsg(max + 1, 'y'));
    const co = await timeout(q.a.closed, 5000, 'no close').catch((e) => ({ error: e.message }));
    check('over-max-1009', co.code === 1009, JSON.stringify(co));
    /* 1009, not 1006: the server lingers (FIN, then drains the refused
     * message's tail) instead of closing under unread input, which would
     * reset the connection under Chromium still writing. */
    const left2 = JSON.parse(await q.b.next());
    check('over-max-not-relayed', left2.type === 'peer_left', JSON.stringify(left2));
    q.b.ws.close(1000);
    await timeout(q.b.closed, 5000, 'no close').catch(() => {});
    return results;
}

async function main() {
    if (!executable(CHROMIUM)) {
        say(`SKIP: ${CHROMIUM} is missing (apt-get install chromium)`);
        say('0 passed, 0 failed, 1 skipped');
        process.exit(77);
    }
    if (!executable(BIN)) throw new Fail(`server binary ${BIN} not found (build it, or set PM_BIN)`);
    let chromium;
    try {
        ({ chromium } = await import('playwright-core'));
    } catch (err) {
        throw new Fail('cannot load playwright-core (run npm install in tests/): ' + err.message);
    }
    const port = await freePort();
    server = startServer(port);
    await waitHealthy(port);
    pageServer = await startPageServer();
    browser = await bounded(chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS }),
        LAUNCH_MS, 'Chromium did not start');
    const page = await browser.newPage();
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    await bounded(page.goto(`http://127.0.0.1:${pageServer.address().port}/ws.html`), 10000, 'page did not load');
    const results = await bounded(page.evaluate(inPage, { wsBase: `ws://127.0.0.1:${port}/`, max: MAX }),
        PAGE_MS, 'the in-page exchange did not finish');
    for (const r of results) {
        if (VERBOSE || !r.ok) say(`${r.ok ? 'ok' : 'FAIL'} ${r.name}${r.ok ? '' : ': ' + r.detail}`);
    }
    const failed = results.filter((r) => !r.ok).map((r) => r.name);
    if (pageErrors.length) failed.push('page errors: ' + pageErrors.join('; '));
    const want = ['text-65536', 'binary-65537', `text-${MAX}`, `binary-${MAX}`, 'close-1000', 'over-max-1009'];
    for (const w of want) if (!results.some((r) => r.name === w)) failed.push('missing check ' + w);
    say(`websocket: ${results.length - failed.length}/${results.length} checks passed`);
    return failed.length ? { ok: false, why: failed.join(', ') } : { ok: true };
}

const watchdog = setTimeout(() => {
    say('FAIL: watchdog');
    if (server && server.alive) server.child.kill('SIGKILL');
    process.exit(1);
}, WATCHDOG_MS);
watchdog.unref();
process.on('exit', () => {
    if (server && server.alive) server.child.kill('SIGKILL');
});

let result;
try {
    result = await main();
} catch (err) {
    result = { ok: false, why: err instanceof Fail ? err.message : (err && err.stack) || String(err) };
}
if (browser) await bounded(browser.close(), 10000, 'browser.close()').catch(() => {});
if (pageServer) pageServer.close();
if (server && server.alive) {
    server.child.kill('SIGTERM');
    const ex = await bounded(server.exited, EXIT_MS, 'server did not exit after SIGTERM').catch((e) => ({ error: e }));
    if (ex.code !== 0) {
        if (server.alive) server.child.kill('SIGKILL');
        result = { ok: false, why: (result.ok ? '' : result.why + '; ') + `server exit ${JSON.stringify(ex)}` };
    }
}
if (!result.ok || VERBOSE) say('--- server output\n' + (server ? server.out.trimEnd() : ''));
if (!result.ok) say('FAIL: ' + result.why);
say(`websocket: ${result.ok ? 'ok' : 'failed'} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
say(result.ok ? '1 passed, 0 failed' : '0 passed, 1 failed');
clearTimeout(watchdog);
process.exit(result.ok ? 0 : 1);
