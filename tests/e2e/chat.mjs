#!/usr/bin/env node
/*
 * chat.mjs: the chat role's web client in headless Chromium, end to end.
 *
 * Starts `p2pmesh --role=chat` on a free loopback port with a fresh SQLite
 * database, opens two pages (two browser contexts, so two localStorages) on
 * the client the server serves at /, and drives them only through the UI:
 * sign up (with the live username check), room "general", messages both ways,
 * who is online, typing, read receipts, history after a reload, a direct
 * message, sign out and sign in again. Prints one line per checked behaviour.
 *
 *   PM_BIN        server binary (default: <repo>/p2pmesh)
 *   E2E_VERBOSE=1 also print the page logs, frames and server output on success
 *
 * Needs only loopback; no root. Exit: 0 pass, 1 fail (with the reason),
 * 77 skip (no /usr/bin/chromium).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import {
    BIN, CHROMIUM, CHROMIUM_ARGS, Fail, bounded, executable, freePort, httpGet, repo, say,
} from './lib.mjs';

const VERBOSE = process.env.E2E_VERBOSE === '1';

const HEALTH_MS = 10000;   /* server answers GET /health 200 */
const LAUNCH_MS = 30000;   /* Chromium starts */
const WAIT_MS = 10000;     /* any one UI expectation */
const CLOSE_MS = 10000;    /* browser.close() */
const EXIT_MS = 10000;     /* server exits after SIGTERM */
const WATCHDOG_MS = 180000;

const ARGS = [...CHROMIUM_ARGS, '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
    '--disable-backgrounding-occluded-windows'];

const started = Date.now();
let server = null;
let browser = null;
let tmpdir = null;
const pages = [];         /* [{ name, page, console: [], frames: [], http: [] }] */
const pageErrors = [];
let checks = 0;
let finished = false;

function elapsed() {
    return ((Date.now() - started) / 1000).toFixed(1) + ' s';
}

function ok(what) {
    checks++;
    say(`ok ${checks} - ${what}`);
}

function sleep(ms) {
    return new Promise((r) => setTimeout(r, ms));
}

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
    tmpdir = fs.mkdtempSync(path.join(os.tmpdir(), 'p2pmesh-chat-e2e-'));
    const args = ['--role=chat', '--addr=127.0.0.1', '--port=' + port,
        '--database.url=sqlite:' + path.join(tmpdir, 'chat.db'),
        '--jwt.secret=' + randomBytes(32).toString('hex')];
    const child = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: tmpdir });
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

/* ---- page helpers ------------------------------------------------------- */

function alive() {
    if (pageErrors.length) throw new Fail('JavaScript error in the client: ' + pageErrors.join('; '));
    if (server && !server.alive) throw new Fail('the server exited during the test');
}

/* Wait until fn(arg) is truthy in the page; fail with why. */
async function waitFor(p, why, fn, arg) {
    alive();
    try {
        await p.page.waitForFunction(fn, arg, { timeout: WAIT_MS, polling: 100 });
    } catch (err) {
        alive();
        const detail = /Timeout/i.test(err.message) ? `within ${WAIT_MS} ms` : err.message.split('\n')[0];
        throw new Fail(`page ${p.name}: ${why} ${detail}`);
    }
}

function waitSel(p, sel, why) {
    return waitFor(p, why, (s) => {
        const e = document.querySelector(s);
        return e && !e.closest('[hidden]');
    }, sel);
}

async function click(p, sel, why) {
    await waitSel(p, sel, why + ': ' + sel + ' not shown');
    try {
        await p.page.click(sel, { timeout: WAIT_MS });
    } catch (err) {
        throw new Fail(`page ${p.name}: ${why}: clicking ${sel} failed: ${err.message.split('\n')[0]}`);
    }
}

async function fill(p, sel, value) {
    try {
        await p.page.fill(sel, value, { timeout: WAIT_MS });
    } catch (err) {
        throw new Fail(`page ${p.name}: cannot fill ${sel}: ${err.message.split('\n')[0]}`);
    }
}

/* A rendered message in #message-list: {from, body, confirmed (has a server id)}. */
function hasMessage(p, why, from, body, confirmed) {
    return waitFor(p, why, ([f, b, c]) => [...document.querySelectorAll('#message-list li[data-testid="message"]')]
        .some((li) => li.dataset.from === f && li.querySelector('.body')?.textContent === b &&
            (!c || /^\d+$/.test(li.dataset.id || ''))), [from, body, confirmed]);
}

/* What a page shows, for a failure report. */
async function snapshot(p) {
    return p.page.evaluate(() => {
        const t = (id) => document.getElementById(id)?.textContent?.trim() || '';
        const shown = (id) => { const e = document.getElementById(id); return !!e && !e.closest('[hidden]'); };
        return {
            url: location.href,
            screen: shown('app') ? 'app' : shown('auth') ? 'auth' : 'none',
            conn: document.getElementById('conn-status')?.dataset.state,
            welcome: t('welcome'),
            errors: ['login-error', 'signup-error', 'room-error', 'send-error', 'stream-error'].map((id) => t(id) && `${id}: ${t(id)}`).filter(Boolean),
            usernameStatus: t('signup-username-status'),
            room: document.getElementById('message-list')?.dataset.room,
            title: t('room-title'),
            rooms: [...document.querySelectorAll('#room-list li')].map((li) => li.dataset.room + (li.dataset.with ? '(' + li.dataset.with + ')' : '')),
            online: [...document.querySelectorAll('#online-list li')].map((li) => li.dataset.user || li.textContent),
            typing: t('typing'),
            seen: t('seen'),
            messages: [...document.querySelectorAll('#message-list li')].slice(-8)
                .map((li) => `[${li.dataset.id || 'pending'}] ${li.dataset.from}: ${li.querySelector('.body')?.textContent} ${li.querySelector('.status')?.textContent || ''}`.trim()),
        };
    });
}

async function dump(always) {
    for (const p of pages) {
        say(`--- page ${p.name}`);
        try {
            const s = await bounded(snapshot(p), 3000, 'snapshot');
            for (const [k, v] of Object.entries(s)) say(`  ${k}: ${Array.isArray(v) ? JSON.stringify(v) : v}`);
        } catch (err) {
            say('  (no snapshot: ' + err.message + ')');
        }
        if (p.http.length) {
            say(`--- page ${p.name} HTTP errors`);
            for (const h of p.http.slice(-20)) say('  ' + h);
        }
        for (const c of p.console.slice(-30)) say('  [console] ' + c);
        say(`--- page ${p.name} last frames`);
        for (const f of p.frames.slice(always ? -60 : -30)) say('  ' + f);
    }
    if (server) {
        say('--- server: ' + server.args.join(' '));
        say(server.out.trimEnd().split('\n').slice(-60).join('\n') || '  (no output)');
    }
}

async function newPage(name, origin) {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    const p = { name, page, ctx, console: [], frames: [], http: [] };
    page.on('console', (m) => p.console.push(m.type() + ': ' + m.text()));
    page.on('pageerror', (e) => pageErrors.push(`page ${name}: ${e.message}`));
    page.on('response', (r) => {
        if (r.status() >= 400) p.http.push(`${r.request().method()} ${new URL(r.url()).pathname}${new URL(r.url()).search} -> ${r.status()}`);
    });
    page.on('websocket', (ws) => {
        const cut = (s) => (typeof s === 'string' ? (s.length > 200 ? s.slice(0, 200) + '...' : s) : '<binary>');
        p.frames.push('open ' + ws.url().replace(/token=[^&]+/, 'token=...'));
        ws.on('framesent', (f) => p.frames.push('-> ' + cut(f.payload)));
        ws.on('framereceived', (f) => p.frames.push('<- ' + cut(f.payload)));
        ws.on('close', () => p.frames.push('closed'));
        ws.on('socketerror', (e) => p.frames.push('socket error ' + e));
        if (p.frames.length > 400) p.frames.splice(0, p.frames.length - 400);
    });
    pages.push(p);
    try {
        await page.goto(origin + '/', { timeout: WAIT_MS });
    } catch (err) {
        throw new Fail(`page ${name}: GET / did not load: ${err.message.split('\n')[0]}`);
    }
    return p;
}

async function signUp(p, username, password, gender) {
    await waitSel(p, '#auth', 'the sign-in screen did not show');
    await click(p, '#tab-signup', 'sign-up tab');
    await fill(p, '#signup-firstname', p.name === 'A' ? 'Ada' : 'Bo');
    await fill(p, '#signup-username', username);
    await waitFor(p, `the live check did not report ${username} available`,
        () => document.getElementById('signup-username-status').dataset.state === 'available');
    await fill(p, '#signup-password', password);
    await fill(p, '#signup-password2', password);
    await p.page.selectOption('#signup-gender', gender, { timeout: WAIT_MS });
    await click(p, '#signup-submit', 'sign up');
    await waitFor(p, `not signed in as ${username.toLowerCase()} after sign-up`,
        (u) => !document.getElementById('app').hidden && document.getElementById('welcome').dataset.user === u,
        username.toLowerCase());
    const token = await p.page.evaluate(() => localStorage.getItem('p2pmesh_chat_token'));
    if (!token || token.split('.').length !== 3) throw new Fail(`page ${p.name}: no JWT in localStorage p2pmesh_chat_token after sign-up (${token})`);
    await waitFor(p, 'the WebSocket did not reach "online" (welcome)',
        () => document.getElementById('conn-status').dataset.state === 'online');
}

async function openRoom(p, room) {
    await click(p, `#room-list li[data-room="${room}"]`, `room ${room} in the room list`);
    await waitFor(p, `room ${room} did not open with its history loaded`,
        (r) => { const l = document.getElementById('message-list'); return l.dataset.room === r && l.dataset.loaded === '1'; }, room);
}

async function send(p, text) {
    await fill(p, '#message-input', text);
    await click(p, '#send-button', 'send');
}

/* ---- the scenario ------------------------------------------------------- */

async function main() {
    if (!executable(CHROMIUM)) {
        say(`SKIP: ${CHROMIUM} is missing (apt-get install chromium, or tests/lib/deps.sh test)`);
        say('0 passed, 0 failed, 1 skipped');
        process.exit(77);
    }
    if (!executable(BIN)) throw new Fail(`server binary ${BIN} not found or not executable (build it, or set PM_BIN)`);
    let chromium;
    try {
        ({ chromium } = await import('playwright-core'));
    } catch (err) {
        throw new Fail('cannot load playwright-core (run npm install in tests/): ' + err.message);
    }
    cleanStaleProfiles();

    const port = await freePort();
    server = startServer(port);
    await waitHealthy(port);
    const origin = `http://127.0.0.1:${port}`;
    for (const [file, type] of [['/', 'text/html'], ['/app.js', 'javascript'], ['/app.css', 'text/css']]) {
        const r = await httpGet(origin + file, 3000);
        if (r.status !== 200 || !r.type.includes(type)) throw new Fail(`GET ${file}: ${r.status} ${r.type}, want 200 ${type}`);
    }
    ok('the server serves /, /app.js and /app.css');

    browser = await bounded(chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS }),
        LAUNCH_MS, 'Chromium did not start');

    const tag = randomBytes(3).toString('hex');
    const a = `Ada_${tag}`;           /* mixed case: the server stores it lowercase */
    const b = `bo_${tag}`;
    const al = a.toLowerCase();
    const pw = { A: 'pw-' + randomBytes(6).toString('hex'), B: 'pw-' + randomBytes(6).toString('hex') };

    const A = await newPage('A', origin);
    await signUp(A, a, pw.A, 'female');
    ok(`A signed up as ${a} through the form (live check said available; shown as ${al}; WebSocket online)`);
    const B = await newPage('B', origin);
    await signUp(B, b, pw.B, 'male');
    ok(`B signed up as ${b} through the form`);

    await openRoom(A, 'general');
    await openRoom(B, 'general');
    ok('both opened room general (history loaded)');

    await waitSel(A, `#online-list li[data-user="${b}"]`, `${b} not in A's online list`);
    await waitSel(B, `#online-list li[data-user="${al}"]`, `${al} not in B's online list`);
    ok('A sees B in the online list (and B sees A)');

    /* typing: A types one key at a time until B shows it */
    await A.page.focus('#message-input');
    {
        const deadline = Date.now() + WAIT_MS;
        let seen = false;
        while (!seen && Date.now() < deadline) {
            alive();
            await A.page.keyboard.type('x');
            seen = await B.page.evaluate((u) => document.getElementById('typing').textContent.includes(`${u} is typing`), al);
            if (!seen) await sleep(250);
        }
        if (!seen) throw new Fail(`page B: "${al} is typing…" not shown within ${WAIT_MS} ms while A typed`);
    }
    ok('B sees "A is typing…" while A types');
    await waitFor(B, 'the typing notice did not go away within 10 s after A stopped',
        () => document.getElementById('typing').textContent === '');
    ok('the typing notice goes away after A stops');

    const m1 = `hello from A ${tag} <b>not bold</b>`;
    await send(A, m1);
    await hasMessage(A, 'A\'s own message was not acknowledged (no server id)', al, m1, true);
    await hasMessage(B, 'A\'s message did not appear for B', al, m1, true);
    const bold = await B.page.evaluate(() => document.querySelectorAll('#message-list b').length);
    if (bold) throw new Fail('page B: message markup was rendered as HTML');
    ok('A sends in general, A gets the ack, B sees the message (as text)');

    const m2 = `reply from B ${tag}`;
    await send(B, m2);
    await hasMessage(B, 'B\'s own message was not acknowledged', b, m2, true);
    await hasMessage(A, 'B\'s message did not appear for A', b, m2, true);
    ok('B replies, A sees it');

    await waitFor(B, `"Seen by ${al}" not shown under B's message`,
        (u) => document.getElementById('seen').textContent.includes(u), al);
    ok('read receipts: B sees "Seen by A"');

    await A.page.reload({ timeout: WAIT_MS });
    await waitFor(A, 'not back in the app after a reload', () => !document.getElementById('app').hidden);
    await waitFor(A, 'room general not restored with its history after a reload',
        () => { const l = document.getElementById('message-list'); return l.dataset.room === 'general' && l.dataset.loaded === '1'; });
    await hasMessage(A, 'A\'s message not in the history after a reload', al, m1, true);
    await hasMessage(A, 'B\'s message not in the history after a reload', b, m2, true);
    await waitFor(A, 'the WebSocket did not come back after a reload',
        () => document.getElementById('conn-status').dataset.state === 'online');
    ok('after a reload A is still signed in and the history (both messages) comes from the server');

    await click(A, `#online-list li[data-user="${b}"]`, `${b} in A's online list`);
    await waitFor(A, 'the DM view did not open', (u) => document.getElementById('room-title').dataset.with === u, b);
    const m3 = `private to B ${tag}`;
    await send(A, m3);
    await hasMessage(A, 'A\'s DM was not acknowledged', al, m3, true);
    await waitSel(B, `#room-list li[data-kind="dm"][data-with="${al}"]`, `no DM with ${al} in B's room list`);
    await click(B, `#room-list li[data-kind="dm"][data-with="${al}"]`, 'the DM in B\'s room list');
    await hasMessage(B, 'A\'s DM did not appear for B', al, m3, true);
    const leak = await B.page.evaluate(() => document.getElementById('message-list').dataset.room);
    if (!/^dm:\d+:\d+$/.test(leak || '')) throw new Fail(`page B: DM room id is ${leak}, want dm:ID:ID`);
    ok(`a DM from A appears for B (room ${leak})`);

    await click(A, '#logout-button', 'sign out');
    await waitSel(A, '#auth', 'the sign-in screen did not come back after sign-out');
    const left = await A.page.evaluate(() => localStorage.getItem('p2pmesh_chat_token'));
    if (left) throw new Fail('page A: the token is still in localStorage after sign-out');
    await waitFor(B, `${al} still in B's online list after A signed out`,
        (u) => !document.querySelector(`#online-list li[data-user="${u}"]`), al);
    ok('A signs out (token gone) and B sees A go offline');

    await fill(A, '#login-username', a);
    await fill(A, '#login-password', pw.A);
    await click(A, '#login-submit', 'sign in');
    await waitFor(A, 'not signed in again', (u) => !document.getElementById('app').hidden &&
        document.getElementById('welcome').dataset.user === u, al);
    await waitFor(A, 'the WebSocket did not reach "online" after signing in',
        () => document.getElementById('conn-status').dataset.state === 'online');
    ok('A signs in again with the password');

    alive();
    return { ok: true };
}

const watchdog = setTimeout(() => {
    finish(false, `watchdog: the test took more than ${WATCHDOG_MS} ms`);
    shutdown().finally(() => process.exit(1));
    setTimeout(() => process.exit(1), 5000).unref();
}, WATCHDOG_MS);
watchdog.unref();

function finish(good, why) {
    if (finished) return;
    finished = true;
    if (!good) say('FAIL: ' + why);
    say(`chat: ${good ? 'ok' : 'failed'} (${checks} checks) in ${elapsed()}`);
    say(good ? '1 passed, 0 failed' : '0 passed, 1 failed');
    process.exitCode = good ? 0 : 1;
}

let shutting = null;
function shutdown() {
    shutting ||= (async () => {
        if (browser) {
            try {
                await bounded(browser.close(), CLOSE_MS, 'browser.close()');
            } catch (err) {
                say('warning: ' + err.message);
            }
        }
        if (server && server.alive) server.child.kill('SIGKILL');
    })();
    return shutting;
}

process.on('exit', () => {
    if (server && server.alive) {
        try {
            server.child.kill('SIGKILL');
        } catch {
            /* already gone */
        }
    }
    if (tmpdir) fs.rmSync(tmpdir, { recursive: true, force: true });
});
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(sig, () => {
        finish(false, 'interrupted by ' + sig);
        shutdown().finally(() => process.exit(1));
        setTimeout(() => process.exit(1), 5000).unref();
    });
}

let result;
try {
    result = await main();
} catch (err) {
    result = { ok: false, why: err instanceof Fail ? err.message : (err && err.stack) || String(err) };
}
if (!result.ok || VERBOSE) await dump(VERBOSE);

/* close the browser, then SIGTERM the server: it must exit 0, on time */
if (browser) {
    try {
        await bounded(browser.close(), CLOSE_MS, 'browser.close()');
    } catch (err) {
        say('warning: ' + err.message);
    }
}
if (server && server.alive) {
    server.child.kill('SIGTERM');
    try {
        const ex = await bounded(server.exited, EXIT_MS, 'server did not exit after SIGTERM');
        if (ex.code !== 0 && result.ok) result = { ok: false, why: `server exited with ${howExited(ex)} after SIGTERM, want code 0` };
        else if (result.ok) ok('the server exits 0 on SIGTERM');
    } catch (err) {
        server.child.kill('SIGKILL');
        if (result.ok) result = { ok: false, why: err.message };
    }
    if (!result.ok && !VERBOSE && result.why.includes('SIGTERM')) say(server.out.trimEnd().split('\n').slice(-30).join('\n'));
} else if (server && result.ok) {
    result = { ok: false, why: `server exited before SIGTERM (${howExited(await server.exited)})` };
}
finish(result.ok, result.why);
clearTimeout(watchdog);
process.exit(process.exitCode);
