#!/usr/bin/env node
/*
 * datachannel.mjs: two headless Chromium pages open an RTCDataChannel to each
 * other with the p2pmesh signaling role as their only signaling path, and
 * pass a message both ways.
 *
 * Run it through run.sh, which puts it in a network namespace that has only
 * loopback (so no ICE candidate on a real interface is ever tried).
 *
 *   PM_BIN   server binary (default: <repo>/p2pmesh)
 *   E2E_VERBOSE=1 print the page logs, the frames and the server output on success too
 *
 * Exit: 0 pass, 1 fail (with the reason), 77 skip (no /usr/bin/chromium).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import {
    BIN, CHROMIUM, CHROMIUM_ARGS, Fail, bounded, executable, freePort, here, httpGet, repo, say,
} from './lib.mjs';

const PAGE = path.join(here, 'peer.html');
const VERBOSE = process.env.E2E_VERBOSE === '1';

const HEALTH_MS = 10000;   /* server answers GET /health 200 */
const LAUNCH_MS = 30000;   /* Chromium starts */
const JOIN_MS = 10000;     /* a page has its WebSocket open and sent join */
const CHANNEL_MS = 20000;  /* both pages got the other's hello */
const BATCH_MS = 3000;     /* after that: each page got a batched_signals and an ack */
const CLOSE_MS = 10000;    /* browser.close() */
const EXIT_MS = 10000;     /* server exits after SIGTERM */
const WATCHDOG_MS = 120000;

const ARGS = [...CHROMIUM_ARGS, '--allow-loopback-in-peer-connection'];

const started = Date.now();
let server = null;        /* { child, out, exited: Promise<{code, signal}> } */
let pageServer = null;
let browser = null;
const pages = [];         /* [{ name, id, page, console: [] }] */
let finished = false;

function elapsed() {
    return ((Date.now() - started) / 1000).toFixed(1) + ' s';
}

function check(cond, why) {
    if (!cond) throw new Fail(why);
}

function sleep(ms) {
    return new Promise((r) => setTimeout(r, ms));
}

/* Settle with p, or reject with why after ms. */
/* Remove Playwright temp dirs that earlier, killed runs left (older than an hour). */
function cleanStaleProfiles() {
    const tmp = os.tmpdir();
    let names = [];
    try {
        names = fs.readdirSync(tmp);
    } catch {
        return;
    }
    for (const n of names) {
        if (!n.startsWith('playwright_') && !n.startsWith('playwright-artifacts-')) continue;
        const p = path.join(tmp, n);
        try {
            if (Date.now() - fs.statSync(p).mtimeMs > 3600e3) fs.rmSync(p, { recursive: true, force: true });
        } catch {
            /* someone else's or already gone */
        }
    }
}

function startServer(port) {
    const args = ['--role=signaling', '--addr=127.0.0.1', '--port=' + port];
    const child = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const s = { child, out: '', alive: true, args };
    const keep = (d) => {
        s.out += d.toString();
        if (s.out.length > 65536) s.out = s.out.slice(-65536);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    s.exited = new Promise((resolve) => {
        child.on('error', (err) => {
            s.alive = false;
            s.out += '\n[spawn error: ' + err.message + ']\n';
            resolve({ code: null, signal: null, error: err });
        });
        child.on('exit', (code, signal) => {
            s.alive = false;
            resolve({ code, signal });
        });
    });
    return s;
}

function howExited(ex) {
    return ex.error ? 'could not start it: ' + ex.error.message : `code ${ex.code} signal ${ex.signal}`;
}

async function waitHealthy(port) {
    const deadline = Date.now() + HEALTH_MS;
    while (Date.now() < deadline) {
        if (!server.alive) throw new Fail(`server exited before /health answered (${howExited(await server.exited)})`);
        if ((await httpGet(`http://127.0.0.1:${port}/health`, 1000)).status === 200) return;
        await sleep(100);
    }
    throw new Fail(`GET /health did not answer 200 within ${HEALTH_MS} ms`);
}

function startPageServer() {
    const html = fs.readFileSync(PAGE);
    const srv = http.createServer((req, res) => {
        const u = new URL(req.url, 'http://x');
        if (u.pathname === '/favicon.ico') {
            res.writeHead(204);
            res.end();
        } else if (req.method === 'GET' && u.pathname === '/peer.html') {
            res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
            res.end(html);
        } else {
            res.writeHead(404, { 'content-type': 'text/plain' });
            res.end('not found\n');
        }
    });
    return new Promise((resolve, reject) => {
        srv.once('error', reject);
        srv.listen(0, '127.0.0.1', () => resolve(srv));
    });
}

async function state(p) {
    return p.page.evaluate(() => ({
        joined: window.__joined === true,
        got: (window.__got || []).slice(),
        log: (window.__log || []).slice(),
        wire: (window.__wire || []).slice(),
        errors: (window.__errors || []).slice(),
    }));
}

function dump(states) {
    for (const p of pages) {
        const st = states && states[p.name];
        say(`--- page ${p.name} (${p.id}) log`);
        if (st) for (const l of st.log) say('  ' + l);
        for (const c of p.console) say('  [console] ' + c);
        if (st) {
            say(`--- page ${p.name} frames`);
            for (const w of st.wire) say(`  ${w.dir === 'in' ? '<-' : '->'} ${w.text.length > 300 ? w.text.slice(0, 300) + '...' : w.text}`);
        }
    }
    if (server) {
        say('--- server output');
        say(server.out.trimEnd() || '  (none)');
    }
}

async function collect() {
    const states = {};
    for (const p of pages) {
        try {
            states[p.name] = await bounded(state(p), 3000, 'page state');
        } catch {
            /* page gone */
        }
    }
    return states;
}

/* Close the browser and the page server (the server is stopped by the caller). */
let closing = null;
function closeBrowser() {
    closing ||= (async () => {
        if (browser) {
            try {
                await bounded(browser.close(), CLOSE_MS, 'browser.close()');
            } catch (err) {
                say('warning: ' + err.message);
            }
        }
        if (pageServer) {
            pageServer.closeAllConnections?.();
            pageServer.close();
        }
    })();
    return closing;
}

/* Abnormal exits: everything down at once. */
async function cleanup() {
    if (server && server.alive) server.child.kill('SIGKILL');
    await closeBrowser();
}

function finish(ok, why) {
    if (finished) return;
    finished = true;
    if (!ok) say('FAIL: ' + why);
    say(`datachannel: ${ok ? 'ok' : 'failed'} in ${elapsed()}`);
    say(ok ? '1 passed, 0 failed' : '0 passed, 1 failed');
    process.exitCode = ok ? 0 : 1;
}

/* Kill the server on every way out, even process.exit() from a handler. */
process.on('exit', () => {
    if (server && server.alive) {
        try {
            server.child.kill('SIGKILL');
        } catch {
            /* already gone */
        }
    }
});
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(sig, () => {
        finish(false, 'interrupted by ' + sig);
        cleanup().finally(() => process.exit(1));
        setTimeout(() => process.exit(1), 5000).unref();
    });
}

async function main() {
    if (!executable(CHROMIUM)) {
        say(`SKIP: ${CHROMIUM} is missing (apt-get install chromium, or tests/lib/deps.sh test)`);
        say('0 passed, 0 failed, 1 skipped');
        process.exit(77);
    }
    check(executable(BIN), `server binary ${BIN} not found or not executable (build it, or set PM_BIN)`);
    let chromium;
    try {
        ({ chromium } = await import('playwright-core'));
    } catch (err) {
        throw new Fail('cannot load playwright-core (run npm install in tests/): ' + err.message);
    }
    cleanStaleProfiles();

    /* 1. the signaling server */
    const port = await freePort();
    server = startServer(port);
    await waitHealthy(port);
    const wsUrl = `ws://127.0.0.1:${port}/`;

    /* 2. the page */
    pageServer = await startPageServer();
    const origin = `http://127.0.0.1:${pageServer.address().port}`;

    /* 3. Chromium, one context per peer (permission + loopback flag: see tooling.md section 4) */
    browser = await bounded(chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS }),
        LAUNCH_MS, 'Chromium did not start');
    if (closing) {
        /* interrupted while Chromium started: close it here, nobody else will */
        await browser.close().catch(() => {});
        throw new Fail('interrupted');
    }
    const ids = { A: randomBytes(20).toString('hex'), B: randomBytes(20).toString('hex') };
    const pageErrors = [];
    for (const name of ['A', 'B']) {
        const ctx = await browser.newContext();
        await ctx.grantPermissions(['microphone', 'camera'], { origin });
        const page = await ctx.newPage();
        const p = { name, id: ids[name], page, console: [] };
        page.on('console', (m) => p.console.push(m.type() + ': ' + m.text()));
        page.on('pageerror', (e) => pageErrors.push(`page ${name}: ${e.message}`));
        pages.push(p);
        const url = `${origin}/peer.html?ws=${encodeURIComponent(wsUrl)}&id=${ids[name]}`;
        await bounded(page.goto(url), 10000, `page ${name} did not load`);
        /* A joins before B opens: A should get peer_joined, B bootstrap_peers. */
        await bounded(page.waitForFunction(() => window.__joined === true || window.__errors.length > 0,
            null, { timeout: JOIN_MS }), JOIN_MS + 1000, `page ${name} did not join`);
        await sleep(name === 'A' ? 200 : 0);
    }
    const [A, B] = pages;
    const low = A.id < B.id ? A : B;
    say(`peers: A=${A.id} B=${B.id}; offerer ${low.name} (lower id), learns of the other by ${low === A ? 'peer_joined' : 'bootstrap_peers'}`);

    /* 4. wait for both hellos; fail at once on a server error or a page error */
    const want = { A: 'hello from ' + B.id.slice(0, 8), B: 'hello from ' + A.id.slice(0, 8) };
    let st;
    const problems = [];
    const deadline = Date.now() + CHANNEL_MS;
    for (;;) {
        st = { A: await bounded(state(A), 3000, 'page A state'), B: await bounded(state(B), 3000, 'page B state') };
        const errs = [...pageErrors, ...st.A.errors.map((e) => 'page A: ' + e), ...st.B.errors.map((e) => 'page B: ' + e)];
        if (errs.length) {
            problems.push(...errs);
            break;
        }
        if (st.A.got.length && st.B.got.length) break;
        if (!server.alive) {
            problems.push(`the server exited during the test (${howExited(await server.exited)})`);
            break;
        }
        if (Date.now() > deadline) {
            problems.push(`no DataChannel message both ways within ${CHANNEL_MS} ms`);
            break;
        }
        await sleep(100);
    }
    const tChannel = elapsed();

    /* Each side batches its candidates and acks the SDP it got, so each
     * should also receive one batch and one ack. */
    const batches = (s) => s.log.filter((l) => l.startsWith('recv batched_signals ')).length;
    const acks = (s) => s.log.filter((l) => l.startsWith('recv ack ')).length;
    const settled = (s) => batches(s) > 0 && acks(s) > 0;
    const batchDeadline = Date.now() + BATCH_MS;
    while (!problems.length && !(settled(st.A) && settled(st.B)) && Date.now() < batchDeadline) {
        await sleep(100);
        st = { A: await bounded(state(A), 3000, 'page A state'), B: await bounded(state(B), 3000, 'page B state') };
    }

    /* 5. assertions (also after a failure above, to say more about it) */
    const expect = (cond, why) => {
        if (!cond) problems.push(why);
    };
    for (const [me, other] of [[A, B], [B, A]]) {
        const s = st[me.name];
        expect(JSON.stringify(s.got) === JSON.stringify([want[me.name]]),
            `page ${me.name} got ${JSON.stringify(s.got)}, want ${JSON.stringify([want[me.name]])}`);
        const relayed = s.log.filter((l) => /^recv (signal|batched_signals|ack) /.test(l));
        expect(relayed.length > 0, `page ${me.name} received no relayed signal`);
        for (const l of relayed) {
            expect(l.includes(` from=${other.id} `), `page ${me.name}: "${l}" does not carry from=${other.id}`);
            expect(l.includes(` to=${me.id} `), `page ${me.name}: "${l}" lost its "to" field`);
        }
        expect(batches(s) > 0, `page ${me.name} received no batched_signals`);
        expect(acks(s) === 1, `page ${me.name} received ${acks(s)} acks, want 1 (sent with "from":"spoofed")`);
        const sdp = me === low ? 'answer' : 'offer';
        expect(s.log.some((l) => l.startsWith(`recv signal from=${other.id} to=${me.id} ${sdp}`)),
            `page ${me.name} received no ${sdp}`);
        /* Every frame relayed to us is one the peer sent to us, untouched but for "from". */
        const unmatched = st[other.name].wire.filter((w) => w.dir === 'out').map((w) => JSON.parse(w.text))
            .filter((m) => m.to === me.id);
        for (const w of s.wire.filter((x) => x.dir === 'in')) {
            const m = JSON.parse(w.text);
            if (!['signal', 'batched_signals', 'ack'].includes(m.type)) continue;
            const i = unmatched.findIndex((sent) => sameBut(sent, m, other.id));
            expect(i >= 0, `page ${me.name} received a frame ${other.name} did not send (or changed beyond "from"): ${w.text.slice(0, 200)}`);
            if (i >= 0) unmatched.splice(i, 1);
        }
    }
    const first = st.A.log.find((l) => l.startsWith('recv peer_joined '));
    expect(first === `recv peer_joined peerId=${B.id}`, `page A (first to join) got ${first || 'no peer_joined'}, want peer_joined for B`);
    const boot = st.B.log.find((l) => l.startsWith('recv bootstrap_peers '));
    expect(boot && boot.split('ids=')[1].split(',').includes(A.id), `page B got ${boot || 'no bootstrap_peers'}, want one listing A`);
    expect(st[low.name].log.some((l) => l.startsWith('send signal to=') && l.endsWith(' offer')), `the lower id (${low.name}) sent no offer`);

    if (problems.length) return { ok: false, why: problems.join('\nFAIL: '), st };
    return { ok: true, st, tChannel };
}

/* got is sent with "from" set to want (key order aside). */
function sameBut(sent, got, want) {
    const norm = (v) => {
        if (Array.isArray(v)) return v.map(norm);
        if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, norm(v[k])]));
        return v;
    };
    return JSON.stringify(norm({ ...sent, from: want })) === JSON.stringify(norm(got));
}

const watchdog = setTimeout(() => {
    finish(false, `watchdog: the test took more than ${WATCHDOG_MS} ms`);
    cleanup().finally(() => process.exit(1));
    setTimeout(() => process.exit(1), 5000).unref();
}, WATCHDOG_MS);
watchdog.unref();

let result;
try {
    result = await main();
} catch (err) {
    result = { ok: false, why: err instanceof Fail ? err.message : (err && err.stack) || String(err) };
}
if (!result.st && pages.length) result.st = await collect();

/* 6. close the browser, then SIGTERM the server: it must exit 0, on time */
const alsoFail = (why) => {
    result = result.ok ? { ...result, ok: false, why } : { ...result, why: result.why + '\nFAIL: ' + why };
};
await closeBrowser().catch(() => {});
if (server && server.alive) {
    server.child.kill('SIGTERM');
    const t = Date.now();
    let ex;
    try {
        ex = await bounded(server.exited, EXIT_MS, 'server did not exit after SIGTERM');
    } catch (err) {
        server.child.kill('SIGKILL');
        alsoFail(err.message);
    }
    if (ex) {
        if (VERBOSE || ex.code !== 0) say(`server exited (${howExited(ex)}) ${Date.now() - t} ms after SIGTERM`);
        if (ex.code !== 0) alsoFail(`server exited with ${howExited(ex)} after SIGTERM, want code 0`);
    }
} else if (server && !/server exited/.test(result.why || '')) {
    alsoFail(`server exited before SIGTERM (${howExited(await server.exited)})`);
}

if (!result.ok || VERBOSE) dump(result.st);
if (result.ok) say(`DataChannel open both ways after ${result.tChannel}`);
finish(result.ok, result.why);
clearTimeout(watchdog);
process.exit(process.exitCode);
