#!/usr/bin/env node
/*
 * game.mjs: the game role's web client (Snake) in headless Chromium, end to end.
 *
 * Starts `p2pmesh --role=game` (one node, no database) on a free loopback port
 * with a fresh data directory, opens the client the server serves at / and
 * drives it only through the UI (the nickname box, the Solo button, arrow
 * keys, a reload), reading the test hooks the client keeps on <body>
 * (data-state, data-game-id, data-tick, data-score, data-resyncs,
 * data-hash-ok) and the pixels of the canvas. The WebSocket frames the page
 * receives are watched only to know where the own snake is (to steer it) and
 * to check what the server did with the keys. docs/game.md is the reference.
 *
 *   game 1: lobby -> Solo -> waiting -> running; the board is drawn and ticks;
 *           steered in squares around the middle for a few seconds the snake
 *           lives, the server applies the turns, every TickHash matches the
 *           client's model and no resync is asked; then steered into a wall:
 *           "ended", the result shown, the game gone from GET /api/games.
 *   game 2: Solo again, reload the page while it runs: the client sends
 *           JoinGame and shows the same game running on (or ended, if the
 *           snake died meanwhile); its model agrees with the server's
 *           (TickHash, no resync), a key after the reload still turns the
 *           snake (the command seq restarts from the time); then into a wall.
 *   Throughout: no JavaScript error, no console error, no CSP violation, no
 *   HTTP error answer; the server exits 0 on SIGTERM.
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

const TICK_MS = 200;       /* --game.tick: 5 cells a second, a TickHash every 5 ticks (1 s) */
const START_DELAY_MS = 300;
const BOARD = 40;          /* game.width = game.height (defaults) */

const HEALTH_MS = 10000;   /* server answers GET /health 200 */
const LAUNCH_MS = 30000;   /* Chromium starts */
const WAIT_MS = 10000;     /* any one UI expectation */
const WALL_MS = 20000;     /* a snake sent to a wall dies (<= 40 cells at 200 ms) */
const STEER_MS = 4800;     /* steering in squares */
const TURN_EVERY_MS = 600; /* ~3 cells between turns */
const CLOSE_MS = 10000;    /* browser.close() */
const EXIT_MS = 10000;     /* server exits after SIGTERM */
const WATCHDOG_MS = 180000;

const ARGS = [...CHROMIUM_ARGS, '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
    '--disable-backgrounding-occluded-windows'];

const DELTA = { Up: [0, -1], Down: [0, 1], Left: [-1, 0], Right: [1, 0] };
const ARROW = { Up: 'ArrowUp', Down: 'ArrowDown', Left: 'ArrowLeft', Right: 'ArrowRight' };
const PERP = { Up: ['Left', 'Right'], Down: ['Left', 'Right'], Left: ['Up', 'Down'], Right: ['Up', 'Down'] };

const started = Date.now();
let server = null;
let browser = null;
let tmpdir = null;
let P = null;              /* the one page: { page, console, frames, http, ws } */
const pageErrors = [];     /* uncaught exceptions, console errors, CSP violations */
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
    tmpdir = fs.mkdtempSync(path.join(os.tmpdir(), 'p2pmesh-game-e2e-'));
    const args = ['--role=game', '--addr=127.0.0.1', '--port=' + port,
        '--game.data_dir=' + path.join(tmpdir, 'data'),
        '--game.start_delay=' + START_DELAY_MS + 'ms', '--game.tick=' + TICK_MS + 'ms',
        '--log.level=info'];
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

/* GET /api/games: the ids (as strings) of the games that are not over. */
async function listedGames(origin) {
    const r = await httpGet(origin + '/api/games', 3000);
    if (r.status !== 200) throw new Fail(`GET /api/games: ${r.status}, want 200`);
    try {
        return JSON.parse(r.body).games;
    } catch {
        throw new Fail('GET /api/games: not JSON: ' + r.body.slice(0, 200));
    }
}

async function waitUnlisted(origin, id) {
    const deadline = Date.now() + WAIT_MS;
    let games;
    while (Date.now() < deadline) {
        alive();
        games = await listedGames(origin);
        if (!games.some((g) => String(g.id) === String(id))) return;
        await sleep(100);
    }
    throw new Fail(`GET /api/games still lists game ${id} ${WAIT_MS} ms after it ended: ${JSON.stringify(games)}`);
}

/* ---- what the page receives: the own snake's head, turns, deaths --------- */

/*
 * Per WebSocket (a reload opens a new one): the user it authenticated as and,
 * per game, the own snake as the server reports it: Snapshot (head, direction),
 * SnakeTurned, Moved, SnakeDied. Only the head is followed: enough to steer.
 */
function newSocketLog(url) {
    return { url, user: null, sent: [], games: new Map(), opened: Date.now() };
}

function gameLog(ws, id) {
    const k = String(id);
    if (!ws.games.has(k)) ws.games.set(k, { snake: null, head: null, dir: null, alive: true, tick: 0, turned: [], died: null, ended: null, hashes: 0, snapshots: [] });
    return ws.games.get(k);
}

function untag(v) {
    if (typeof v === 'string') return [v, null];
    if (v && typeof v === 'object' && Object.keys(v).length === 1) {
        const k = Object.keys(v)[0];
        return [k, v[k]];
    }
    return [null, null];
}

function onFrame(ws, text) {
    let m;
    try {
        m = JSON.parse(text);
    } catch {
        return;
    }
    const [tag, d] = untag(m);
    if (tag === 'Authenticated') ws.user = d.user_id;
    if (tag !== 'GameEvent') return;
    const g = gameLog(ws, d.game_id);
    const [ev, e] = untag(d.event);
    g.tick = Number(d.tick);
    if (ev === 'Snapshot') {
        const st = e.state;
        const me = (st.snakes || []).find((s) => s.user_id === ws.user);
        g.snapshots.push({ tick: st.tick, status: st.status, stream_seq: d.stream_seq });
        if (me) {
            g.snake = me.id;
            g.head = me.body[0].slice();
            g.dir = me.direction;
            g.alive = me.alive;
        }
    } else if (ev === 'SnakeTurned' && e.snake_id === g.snake) {
        g.dir = e.direction;
        g.turned.push({ tick: g.tick, dir: e.direction });
    } else if (ev === 'Moved' && g.head && g.alive) {
        g.head = [g.head[0] + DELTA[g.dir][0], g.head[1] + DELTA[g.dir][1]];
    } else if (ev === 'SnakeDied' && e.snake_id === g.snake) {
        g.alive = false;
        g.died = e;
    } else if (ev === 'GameEnded') {
        g.ended = e;
    } else if (ev === 'TickHash') {
        g.hashes++;
    }
}

/* The latest socket's view of game id. */
function view(id) {
    const ws = P.ws[P.ws.length - 1];
    return ws ? gameLog(ws, id) : null;
}

/* Cells from the head to the wall it is heading at (0: the next move leaves the board). */
function toWall(head, dir) {
    return { Up: head[1], Down: BOARD - 1 - head[1], Left: head[0], Right: BOARD - 1 - head[0] }[dir];
}

/* ---- page helpers ------------------------------------------------------- */

function alive() {
    if (pageErrors.length) throw new Fail('in the client: ' + pageErrors.join('; '));
    if (P && P.http.length) throw new Fail('HTTP error answers: ' + P.http.join('; '));
    if (server && !server.alive) throw new Fail('the server exited during the test');
}

/* Wait until fn(arg) is truthy in the page; fail with why. */
async function waitFor(why, fn, arg, ms = WAIT_MS) {
    alive();
    try {
        await P.page.waitForFunction(fn, arg, { timeout: ms, polling: 50 });
    } catch (err) {
        alive();
        const detail = /Timeout/i.test(err.message) ? `within ${ms} ms` : err.message.split('\n')[0];
        throw new Fail(`${why} ${detail}`);
    }
}

function hooks() {
    return P.page.evaluate(() => {
        const b = document.body.dataset;
        return { state: b.state, gameId: b.gameId, tick: Number(b.tick), score: b.score, resyncs: Number(b.resyncs), hashOk: Number(b.hashOk) };
    });
}

/* The body's data-state values since the last call (consecutive repeats folded). */
function takeStates() {
    return P.page.evaluate(() => {
        const s = (window.__e2eStates || []).splice(0);
        return s.filter((v, i) => i === 0 || v !== s[i - 1]);
    });
}

function inOrder(seen, want) {
    let i = 0;
    for (const s of seen) if (s === want[i]) i++;
    return i === want.length;
}

async function waitState(state, why, ms = WAIT_MS) {
    await waitFor(why || `data-state did not become "${state}"`, (s) => document.body.dataset.state === s, state, ms);
}

async function click(sel, why) {
    try {
        await P.page.click(sel, { timeout: WAIT_MS });
    } catch (err) {
        throw new Fail(`${why}: clicking ${sel} failed: ${err.message.split('\n')[0]}`);
    }
}

async function press(dir) {
    await P.page.keyboard.press(ARROW[dir]);
}

/* Pixels of #board: how many differ from the board background and the grid, how many are the own snake's colour. */
function canvasPixels() {
    return P.page.evaluate(() => {
        const c = document.getElementById('board');
        const ctx = c.getContext('2d');
        const { data } = ctx.getImageData(0, 0, c.width, c.height);
        const hex = (s) => [1, 3, 5].map((i) => parseInt(s.slice(i, i + 2), 16));
        const css = getComputedStyle(document.body);
        const bg = hex(css.getPropertyValue('--board').trim() || '#111111');
        const grid = hex(css.getPropertyValue('--grid').trim() || '#222222');
        const snake = hex('#2f9e44'); /* COLORS[0]: a solo game's snake is id 0 */
        const food = hex('#e03131');
        const near = (i, rgb, tol) => Math.abs(data[i] - rgb[0]) <= tol && Math.abs(data[i + 1] - rgb[1]) <= tol && Math.abs(data[i + 2] - rgb[2]) <= tol;
        let other = 0;
        let green = 0;
        let red = 0;
        for (let i = 0; i < data.length; i += 4) {
            if (near(i, bg, 2) || near(i, grid, 2)) continue;
            other++;
            if (near(i, snake, 40)) green++;
            if (near(i, food, 40)) red++;
        }
        return { w: c.width, h: c.height, other, green, red, corner: [data[0], data[1], data[2]], bg };
    });
}

async function snapshot() {
    return P.page.evaluate(() => {
        const t = (id) => document.getElementById(id)?.textContent?.trim() || '';
        const b = document.body.dataset;
        return {
            url: location.href,
            hooks: JSON.stringify({ state: b.state, gameId: b.gameId, tick: b.tick, score: b.score, resyncs: b.resyncs, hashOk: b.hashOk }),
            conn: document.getElementById('conn-status')?.dataset.state,
            me: t('me'),
            status: t('status'),
            error: t('error'),
            queue: t('queue-status'),
            title: t('game-title'),
            gameStatus: t('game-status'),
            result: t('result'),
            scores: [...document.querySelectorAll('#scores li')].map((li) => li.textContent),
            games: [...document.querySelectorAll('#games li')].map((li) => li.textContent),
            view: sessionStorage.getItem('p2pmesh_game_view'),
        };
    });
}

async function dump(always) {
    if (P) {
        say('--- page');
        try {
            const s = await bounded(snapshot(), 3000, 'snapshot');
            for (const [k, v] of Object.entries(s)) say(`  ${k}: ${Array.isArray(v) ? JSON.stringify(v) : v}`);
        } catch (err) {
            say('  (no snapshot: ' + err.message + ')');
        }
        for (const h of P.http.slice(-20)) say('  [http] ' + h);
        for (const c of P.console.slice(-30)) say('  [console] ' + c);
        say('--- page last frames');
        for (const f of P.frames.slice(always ? -400 : -40)) say('  ' + f);
    }
    if (server) {
        say('--- server: ' + server.args.join(' '));
        say(server.out.trimEnd().split('\n').slice(-60).join('\n') || '  (no output)');
    }
}

async function openPage(origin) {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    P = { page, ctx, console: [], frames: [], http: [], ws: [] };
    /* Every value <body data-state> takes, and CSP violations as console errors. */
    await page.addInitScript(() => {
        window.__e2eStates = [];
        new MutationObserver((recs) => {
            for (const r of recs) {
                if (r.target === document.body) window.__e2eStates.push(document.body.dataset.state);
            }
        }).observe(document, { subtree: true, attributes: true, attributeFilter: ['data-state'] });
        document.addEventListener('securitypolicyviolation', (e) => {
            console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || '(inline)'} at ${e.sourceFile}:${e.lineNumber}`);
        });
    });
    page.on('console', (m) => {
        P.console.push(m.type() + ': ' + m.text());
        if (m.type() === 'error') pageErrors.push('console error: ' + m.text());
    });
    page.on('pageerror', (e) => pageErrors.push('JavaScript error: ' + e.message));
    page.on('response', (r) => {
        if (r.status() >= 400) P.http.push(`${r.request().method()} ${new URL(r.url()).pathname} -> ${r.status()}`);
    });
    page.on('websocket', (ws) => {
        const log = newSocketLog(ws.url());
        P.ws.push(log);
        const cut = (s) => (typeof s === 'string' ? (s.length > 200 ? s.slice(0, 200) + '...' : s) : '<binary>');
        const frame = (f) => {
            P.frames.push(f);
            if (P.frames.length > 600) P.frames.splice(0, P.frames.length - 600);
        };
        frame(`open #${P.ws.length} ${ws.url()}`);
        ws.on('framesent', (f) => {
            frame('-> ' + cut(f.payload));
            if (typeof f.payload === 'string') log.sent.push(f.payload);
        });
        ws.on('framereceived', (f) => {
            if (typeof f.payload !== 'string') return void frame('<- <binary>');
            if (!/"(Moved|Pong)"/.test(f.payload)) frame('<- ' + cut(f.payload));
            onFrame(log, f.payload);
        });
        ws.on('close', () => frame(`closed #${P.ws.indexOf(log) + 1}`));
        ws.on('socketerror', (e) => frame('socket error ' + e));
    });
    try {
        await page.goto(origin + '/', { timeout: WAIT_MS });
    } catch (err) {
        throw new Fail(`GET / did not load: ${err.message.split('\n')[0]}`);
    }
}

/* Wait for the own snake's head in game id (the Snapshot came in the frames). */
async function waitHead(id) {
    const deadline = Date.now() + WAIT_MS;
    while (Date.now() < deadline) {
        const g = view(id);
        if (g && g.head) return g;
        await sleep(50);
    }
    throw new Fail(`no Snapshot with the own snake for game ${id} among the frames within ${WAIT_MS} ms`);
}

/*
 * Steer for ms: every TURN_EVERY_MS turn to the side of the board's middle
 * (of the two directions at right angles), so the snake runs in small squares
 * around the centre. Returns how many keys were pressed.
 */
async function steerSquares(id, ms) {
    const end = Date.now() + ms;
    let presses = 0;
    const mid = (BOARD - 1) / 2;
    while (Date.now() < end) {
        alive();
        const g = view(id);
        if (!g.alive) throw new Fail(`the snake died while steered in squares (${JSON.stringify(g.died)}, head ${g.head})`);
        const [a, b] = PERP[g.dir];
        const axis = DELTA[a][0] !== 0 ? 0 : 1;
        /* a is the negative side (Left or Up) */
        const dir = g.head[axis] > mid ? a : b;
        await press(dir);
        presses++;
        await sleep(TURN_EVERY_MS);
    }
    return presses;
}

/* Turn toward the nearest wall the snake can reach without a U-turn; returns that direction. */
async function steerIntoWall(id) {
    const g = view(id);
    const options = [g.dir, ...PERP[g.dir]];
    options.sort((x, y) => toWall(g.head, x) - toWall(g.head, y));
    const dir = options[0];
    if (dir !== g.dir) await press(dir);
    return { dir, cells: toWall(g.head, dir) };
}

async function expectEnded(origin, id, what) {
    await waitState('ended', `${what}: data-state did not become "ended"`, WALL_MS);
    const h = await hooks();
    if (h.gameId !== String(id)) throw new Fail(`${what}: data-game-id is ${h.gameId} after the end, want ${id}`);
    await waitFor(`${what}: no result text in #result after the end`,
        () => /\S/.test(document.getElementById('result').textContent) && !document.getElementById('result').closest('[hidden]'));
    const result = await P.page.evaluate(() => document.getElementById('result').textContent.trim());
    if (!/Game over/.test(result)) throw new Fail(`${what}: #result says "${result}", want "Game over…" for a solo game`);
    if (!/your score \d+/.test(result)) throw new Fail(`${what}: #result says "${result}", want the score ("your score N")`);
    const g = [...P.ws].reverse().map((w) => w.games.get(String(id))).find((x) => x && x.died) || view(id);
    if (!g.died || g.died.cause !== 'OutOfBounds') throw new Fail(`${what}: the snake's SnakeDied is ${JSON.stringify(g.died)}, want cause OutOfBounds`);
    if (!g.ended) throw new Fail(`${what}: no GameEnded among the frames`);
    const score = g.ended.scores.find((s) => s.snake_id === g.snake);
    if (!score || String(score.score) !== h.score) throw new Fail(`${what}: data-score ${h.score} but GameEnded says ${JSON.stringify(g.ended.scores)}`);
    await waitUnlisted(origin, id);
    const view2 = await P.page.evaluate(() => sessionStorage.getItem('p2pmesh_game_view'));
    if (view2) throw new Fail(`${what}: sessionStorage p2pmesh_game_view still holds ${view2} after the end (a reload would rejoin an ended game)`);
    return { result, score: h.score };
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
        if (file === '/' && !r.headers['content-security-policy']) throw new Fail('GET /: no Content-Security-Policy header');
    }
    if ((await listedGames(origin)).length) throw new Fail('GET /api/games lists games on a fresh server');
    ok('the server serves /, /app.js and /app.css (with a CSP), and GET /api/games is empty');

    browser = await bounded(chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS }),
        LAUNCH_MS, 'Chromium did not start');

    await openPage(origin);
    await waitState('lobby', 'data-state did not become "lobby" (guest token, Authenticated)');
    let h = await hooks();
    if (h.gameId !== '' || h.resyncs !== 0) throw new Fail(`in the lobby: data-game-id "${h.gameId}", data-resyncs ${h.resyncs}; want "" and 0`);
    const token = await P.page.evaluate(() => sessionStorage.getItem('p2pmesh_game_token'));
    if (!token || token.split('.').length !== 3) throw new Fail(`no JWT in sessionStorage p2pmesh_game_token in the lobby (${token})`);
    const guest = await P.page.evaluate(() => document.getElementById('me').textContent);
    if (!/^guest-/.test(guest)) throw new Fail(`#me shows "${guest}" before a nickname, want guest-XXXX`);
    ok(`the page loads and reaches the lobby as ${guest} (guest token, Authenticated)`);

    /* ---- game 1 */
    const nick = 'e2e_' + randomBytes(3).toString('hex');
    try {
        await P.page.fill('#nickname', nick, { timeout: WAIT_MS });
    } catch (err) {
        throw new Fail('cannot fill #nickname: ' + err.message.split('\n')[0]);
    }
    await takeStates();
    await click('#play-solo', 'Solo');
    await waitState('running', 'game 1: data-state did not become "running" after Solo');
    const states = await takeStates();
    if (!inOrder(states, ['waiting', 'running'])) throw new Fail(`game 1: data-state went ${states.join(' -> ')}, want waiting then running`);
    h = await hooks();
    const game1 = h.gameId;
    if (!/^\d+$/.test(game1)) throw new Fail(`game 1: data-game-id is "${game1}"`);
    const me = await P.page.evaluate(() => ({ name: document.getElementById('me').textContent, id: document.getElementById('me').dataset.user }));
    if (me.name !== nick) throw new Fail(`#me shows "${me.name}" after playing with nickname ${nick}`);
    ok(`nickname ${nick}, Solo: data-state ${states.join(' -> ')} in game ${game1}`);

    const listed = (await listedGames(origin)).find((g) => String(g.id) === game1);
    if (!listed || listed.mode !== 'solo' || !(listed.players || []).includes(me.id)) {
        throw new Fail(`GET /api/games during game ${game1}: ${JSON.stringify(listed)}, want mode solo with player ${me.id}`);
    }
    ok(`GET /api/games lists game ${game1} (solo, status ${listed.status}, player ${me.id})`);

    const g1 = await waitHead(game1);
    await sleep(100); /* a frame drawn after the Snapshot */
    const px = await canvasPixels();
    if (px.other < 200 || px.green < 50) throw new Fail(`the canvas looks blank while running: ${JSON.stringify(px)}`);
    ok(`the board is drawn: ${px.other} of ${px.w}x${px.h} pixels are not background or grid, ${px.green} in the snake's colour, ${px.red} food-red`);

    const t0 = (await hooks()).tick;
    await sleep(1000);
    const t1 = (await hooks()).tick;
    if (!(t1 - t0 >= 3)) throw new Fail(`data-tick went ${t0} -> ${t1} in 1 s at ${TICK_MS} ms a tick`);
    ok(`data-tick advances: ${t0} -> ${t1} in 1 s`);

    /* steer in squares: the server applies the turns, the model keeps agreeing */
    const before = await hooks();
    const turnedBefore = g1.turned.length;
    const presses = await steerSquares(game1, STEER_MS);
    const after = await hooks();
    const applied = view(game1).turned.length - turnedBefore;
    if (after.state !== 'running') throw new Fail(`data-state is "${after.state}" after steering in squares, want running`);
    if (applied < presses - 2) throw new Fail(`the server applied ${applied} of ${presses} turns (SnakeTurned)`);
    if (after.hashOk - before.hashOk < 3) throw new Fail(`data-hash-ok went ${before.hashOk} -> ${after.hashOk} in ${STEER_MS} ms of steering`);
    if (after.resyncs !== 0) throw new Fail(`data-resyncs is ${after.resyncs} after steering, want 0 (the model disagreed with the server)`);
    ok(`steered ${STEER_MS / 1000} s in squares: alive, ${applied} of ${presses} turns applied, data-hash-ok ${before.hashOk} -> ${after.hashOk}, data-resyncs 0`);

    const wall1 = await steerIntoWall(game1);
    const end1 = await expectEnded(origin, game1, 'game 1');
    h = await hooks();
    if (h.resyncs !== 0) throw new Fail(`data-resyncs is ${h.resyncs} at the end of game 1, want 0`);
    ok(`steered ${wall1.dir} into the wall ${wall1.cells} cells away: "ended", #result "${end1.result}", SnakeDied OutOfBounds, gone from GET /api/games`);

    /* ---- game 2: reload while it runs */
    await takeStates();
    await click('#play-solo', 'Solo (game 2)');
    await waitFor('game 2: no new game running after Solo',
        (old) => document.body.dataset.state === 'running' && document.body.dataset.gameId !== old, game1);
    h = await hooks();
    const game2 = h.gameId;
    const g2 = await waitHead(game2);
    const me2 = await P.page.evaluate(() => document.getElementById('me').dataset.user);
    if (me2 !== me.id) throw new Fail(`game 2 is played as ${me2}, game 1 as ${me.id}: the guest should stay the same`);
    /* far from the wall ahead, so the reload happens in the middle of the game */
    if (toWall(g2.head, g2.dir) < 15) {
        const [a, b] = PERP[g2.dir];
        await press(toWall(g2.head, a) > toWall(g2.head, b) ? a : b);
        await sleep(2 * TICK_MS);
    }
    await sleep(600); /* a few ticks in: the Snapshot after the reload is of a game under way */
    const pre = await hooks();
    if (pre.state !== 'running' || pre.gameId !== game2) throw new Fail(`game 2 before the reload: data-state "${pre.state}", data-game-id "${pre.gameId}"`);
    const sockets = P.ws.length;
    try {
        await P.page.reload({ timeout: WAIT_MS });
    } catch (err) {
        throw new Fail('reload failed: ' + err.message.split('\n')[0]);
    }
    /* running on; or, had the snake died meanwhile, ended (or the lobby with
     * the server's Error: JoinGame of a game that is over is refused) */
    await waitFor(`after the reload: game ${game2} not shown running or ended`,
        (id) => (document.body.dataset.gameId === id && ['running', 'ended'].includes(document.body.dataset.state)) ||
            (document.body.dataset.state === 'lobby' && /\S/.test(document.getElementById('error').textContent)), game2, WALL_MS);
    const ws2 = P.ws[P.ws.length - 1];
    if (P.ws.length <= sockets) throw new Fail('no new WebSocket after the reload');
    const join = ws2.sent.find((s) => { try { return JSON.parse(s).JoinGame !== undefined; } catch { return false; } });
    if (!join || String(JSON.parse(join).JoinGame) !== game2) throw new Fail(`after the reload the client sent no {"JoinGame":${game2}} (sent: ${ws2.sent.slice(0, 6).join(' ')})`);
    const post = await hooks();
    ok(`reloaded at tick ${pre.tick}: the new socket sent ${join}; ` +
        (post.state === 'lobby' ? 'the client is in the lobby' : `game ${game2} shown "${post.state}" at tick ${post.tick}`));

    if (post.state === 'running') {
        if (!(post.tick >= pre.tick)) throw new Fail(`after the reload data-tick is ${post.tick}, before it was ${pre.tick}`);
        const g = await waitHead(game2);
        const snap = g.snapshots[0];
        if (!snap || snap.status !== 'running') throw new Fail(`after the reload the Snapshot is ${JSON.stringify(snap)}, want status running`);
        /* the model built from that Snapshot agrees with the server */
        await waitFor('after the reload: no TickHash matched within 2.5 s', () => Number(document.body.dataset.hashOk) >= 1, undefined, 2500);
        h = await hooks();
        if (h.resyncs !== 0) throw new Fail(`after the reload data-resyncs is ${h.resyncs}, want 0`);
        ok(`after the reload the Snapshot (stream_seq ${snap.stream_seq}) and the events agree with the server: data-hash-ok ${h.hashOk}, data-resyncs 0`);

        /* a key after the reload still turns the snake */
        const [a, b] = PERP[g.dir];
        const dir = toWall(g.head, a) > toWall(g.head, b) ? a : b;
        const n = g.turned.length;
        await press(dir);
        const deadline = Date.now() + 3000;
        while (g.turned.length === n && g.alive && Date.now() < deadline) await sleep(50);
        if (g.turned.length === n || g.turned[n].dir !== dir) {
            throw new Fail(`after the reload ${ARROW[dir]} did not turn the snake (SnakeTurned ${JSON.stringify(g.turned)}; sent ${ws2.sent.filter((s) => s.includes('GameCommand')).join(' ')})`);
        }
        ok(`after the reload ${ARROW[dir]} turns the snake ${dir} (the GameCommand seq is accepted)`);

        const wall2 = await steerIntoWall(game2);
        const end2 = await expectEnded(origin, game2, 'game 2');
        h = await hooks();
        if (h.resyncs !== 0) throw new Fail(`data-resyncs is ${h.resyncs} at the end of game 2, want 0`);
        ok(`game 2: steered ${wall2.dir} into the wall: "ended", #result "${end2.result}", gone from GET /api/games`);
    } else if (post.state === 'ended') {
        const end2 = await expectEnded(origin, game2, 'game 2 (ended during the reload)');
        ok(`game 2 ended during the reload: "ended", #result "${end2.result}", gone from GET /api/games`);
    } else {
        const error = await P.page.evaluate(() => document.getElementById('error').textContent.trim());
        await waitUnlisted(origin, game2);
        if (post.gameId !== '') throw new Fail(`after the reload: lobby but data-game-id "${post.gameId}"`);
        ok(`game 2 ended during the reload: the JoinGame was refused ("${error}"), the client is back in the lobby, the game is gone from GET /api/games`);
    }

    /* a reload after the end: back in the lobby, not in the old game */
    await P.page.reload({ timeout: WAIT_MS }).catch((err) => { throw new Fail('reload failed: ' + err.message.split('\n')[0]); });
    await waitState('lobby', 'after a reload following the end: data-state did not become "lobby"');
    h = await hooks();
    if (h.gameId !== '') throw new Fail(`after a reload following the end data-game-id is "${h.gameId}", want ""`);
    ok('a reload after the end lands in the lobby');

    await sleep(200); /* late console errors */
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
    say(`game: ${good ? 'ok' : 'failed'} (${checks} checks) in ${elapsed()}`);
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
