/*
 * p2pmesh game web client (Snake), served at /app.js by `p2pmesh --role=game`.
 * Plain ES2020, no dependencies, no build step; speaks docs/game.md
 * (POST /api/auth/guest, GET /api/games, WebSocket /ws).
 *
 * The file has two parts: the pure game model (no DOM, no network), which
 * tests/e2e/game_model.mjs loads in Node as globalThis.snakeModel, and the
 * browser UI, which runs only where there is a document.
 *
 * sessionStorage: p2pmesh_game_token, p2pmesh_game_user (guest session,
 * reused across reloads), p2pmesh_game_view (the game played or watched,
 * rejoined after a reload).
 *
 * Hooks for automated tests, on <body>:
 *  data-state    connecting | lobby | queued | waiting | running | ended
 *  data-game-id  the game shown ("" for none)    data-tick  its tick
 *  data-score    your score in it ("" when spectating or no game)
 *  data-resyncs  RequestResync messages sent     data-hash-ok  TickHash matches
 * Ids: #nickname #set-nickname #play-solo #play-duel #play-ffa #leave-queue
 *  #queue-status #custom-width #custom-height #custom-tick #custom-food
 *  #custom-max #create-custom #custom-code #start-custom #join-code
 *  #join-custom #games (li[data-game] > button.spectate) #board #scores
 *  (li[data-snake]) #result #leave-game #me #node #rtt #conn-status
 *  #status (aria-live) #error
 */
'use strict';

/* ---- the game model (pure) */
const snakeModel = (() => {
  const DELTA = { Up: [0, -1], Down: [0, 1], Left: [-1, 0], Right: [1, 0] };
  const FNV_OFFSET = 2166136261;
  const FNV_PRIME = 16777619;

  /* serde's externally tagged form: "Moved" or {"FoodEaten": {...}} -> [tag, data] */
  function untag(v) {
    if (typeof v === 'string') return [v, null];
    if (v && typeof v === 'object') {
      const keys = Object.keys(v);
      if (keys.length === 1) return [keys[0], v[keys[0]]];
    }
    return [null, null];
  }

  /* The client's view of one game: state is null until the first Snapshot. */
  function newModel(gameId) {
    return { gameId, state: null, seq: 0, awaiting: false, result: null, hashOk: 0, hashBad: 0 };
  }

  const cell = (p) => [Number(p[0]), Number(p[1])];

  function normalize(s) {
    return {
      tick: Number(s.tick) || 0,
      status: s.status || 'waiting',
      width: Number(s.width) || 40,
      height: Number(s.height) || 40,
      tick_ms: Number(s.tick_ms) || 100,
      snakes: (s.snakes || []).map((k) => ({
        id: Number(k.id),
        user_id: k.user_id,
        body: (k.body || []).map(cell),
        direction: k.direction,
        alive: k.alive !== false,
        score: Number(k.score) || 0,
        grow: Number(k.grow) || 0,
      })),
      food: (s.food || []).map(cell),
    };
  }

  function applySnapshot(model, state, streamSeq) {
    model.state = normalize(state || {});
    model.seq = Number(streamSeq) || 0;
    model.awaiting = false;
    if (model.state.status !== 'ended') model.result = null;
  }

  /* The next events are useless until a Snapshot (reconnect, resync asked). */
  function expectSnapshot(model) {
    model.awaiting = true;
  }

  const snakeById = (st, id) => st.snakes.find((s) => s.id === Number(id)) || null;
  const samePos = (a, b) => a[0] === Number(b[0]) && a[1] === Number(b[1]);

  function move(s) {
    const d = DELTA[s.direction];
    if (!d || !s.body.length) return;
    s.body.unshift([s.body[0][0] + d[0], s.body[0][1] + d[1]]);
    if (s.grow > 0) s.grow--;
    else s.body.pop();
  }

  /* Apply one event (tag, data) of docs/game.md to model.state; tick labels it. */
  function applyEvent(model, tag, data, tick) {
    const st = model.state;
    let s;
    switch (tag) {
      case 'SnakeTurned':
        if ((s = snakeById(st, data.snake_id))) s.direction = data.direction;
        break;
      case 'Moved':
        for (const k of st.snakes) if (k.alive) move(k);
        st.tick = Number.isFinite(tick) ? tick : st.tick + 1;
        break;
      case 'SnakeDied':
        if ((s = snakeById(st, data.snake_id))) s.alive = false;
        break;
      case 'FoodEaten': {
        const i = st.food.findIndex((f) => samePos(f, data.position));
        if (i >= 0) st.food.splice(i, 1);
        if ((s = snakeById(st, data.snake_id))) {
          s.score++;
          s.grow++;
        }
        break;
      }
      case 'FoodSpawned':
        st.food.push(cell(data.position));
        break;
      case 'StatusUpdated':
        st.status = data.status;
        break;
      case 'GameEnded':
        model.result = { winner: data.winner === undefined ? null : data.winner, scores: data.scores || [] };
        st.status = 'ended';
        break;
      default:
        break; /* TickHash is handled by receive; unknown events are skipped */
    }
  }

  /* FNV-1a over v as 4 little-endian bytes. */
  function fnvU32(h, v) {
    for (let i = 0; i < 4; i++) h = Math.imul(h ^ ((v >>> (8 * i)) & 0xff), FNV_PRIME) >>> 0;
    return h;
  }

  /* The TickHash of a state: 8 lower-case hex digits. */
  function stateHash(st) {
    let h = fnvU32(FNV_OFFSET, st.tick >>> 0);
    const live = st.snakes.filter((s) => s.alive).sort((a, b) => a.id - b.id);
    for (const s of live) {
      h = fnvU32(h, s.id >>> 0);
      h = fnvU32(h, s.body.length);
      for (const [x, y] of s.body) h = fnvU32(fnvU32(h, x >>> 0), y >>> 0);
    }
    h = fnvU32(h, st.food.length);
    for (const [x, y] of st.food) h = fnvU32(fnvU32(h, x >>> 0), y >>> 0);
    return h.toString(16).padStart(8, '0');
  }

  /*
   * Take one GameEvent message ({game_id, tick, stream_seq, event}). Returns
   * null when it was ignored (another game, no state yet, waiting for a
   * Snapshot, a duplicate), else {tag, resync}: resync true means the caller
   * must send RequestResync (a gap in stream_seq or a TickHash mismatch).
   */
  function receive(model, msg) {
    if (!msg || String(msg.game_id) !== String(model.gameId)) return null;
    const [tag, data] = untag(msg.event);
    if (!tag) return null;
    const seq = Number(msg.stream_seq);
    if (tag === 'Snapshot') {
      applySnapshot(model, data && data.state, seq);
      return { tag, resync: false };
    }
    if (!model.state || model.awaiting || seq <= model.seq) return null;
    if (seq !== model.seq + 1) {
      model.awaiting = true;
      return { tag, resync: true };
    }
    model.seq = seq;
    if (tag === 'TickHash') {
      if (String(data && data.hash).toLowerCase() === stateHash(model.state)) {
        model.hashOk++;
        return { tag, resync: false };
      }
      model.hashBad++;
      model.awaiting = true;
      return { tag, resync: true };
    }
    applyEvent(model, tag, data || {}, Number(msg.tick));
    return { tag, resync: false };
  }

  return { untag, newModel, applySnapshot, expectSnapshot, applyEvent, receive, stateHash };
})();

if (typeof window === 'undefined') globalThis.snakeModel = snakeModel;

/* ---- the browser UI */
if (typeof document !== 'undefined') (() => {
  const M = snakeModel;
  const TOKEN_KEY = 'p2pmesh_game_token';
  const USER_KEY = 'p2pmesh_game_user';
  const VIEW_KEY = 'p2pmesh_game_view';
  const PROTOCOL = 1;
  const PING_MS = 5000;
  const DEAD_MS = 15000;          /* no frame for this long: reconnect */
  const BACKOFF_BASE = 100;
  const BACKOFF_MAX = 2000;
  const RESEND_MS = 500;          /* resend a command this young after a reconnect */
  const GAMES_MS = 3000;
  const SNAPSHOT_WAIT_MS = 2000;  /* ask again when no Snapshot came by then */
  const BOARD_PX = 600;
  const COLORS = ['#2f9e44', '#1c7ed6', '#e8590c', '#ae3ec9', '#f08c00', '#0c8599', '#e64980', '#5c940d'];
  const KEYS = {
    ArrowUp: 'Up', ArrowDown: 'Down', ArrowLeft: 'Left', ArrowRight: 'Right',
    w: 'Up', s: 'Down', a: 'Left', d: 'Right', W: 'Up', S: 'Down', A: 'Left', D: 'Right',
  };

  const $ = (id) => document.getElementById(id);

  const S = {
    token: null, user: null,        /* user: {id, username} */
    lastUserId: null,               /* the user of the last Authenticated */
    ws: null, wsGen: 0, authed: false, attempt: 0, stopped: false, freshToken: false,
    reconnectTimer: 0, pingTimer: 0, lastFrame: 0,
    pending: [],                    /* messages to send once authenticated */
    queued: null, queueConfirmed: false, /* mode while in a queue */
    game: null,                     /* {id, role: player|spectator, model, owner, code, confirmed} */
    seq: Date.now(),                /* GameCommand seq: never below a previous page's */
    lastCmd: null,                  /* {msg, at} */
    resyncs: 0, snapTimer: 0, drawQueued: false,
  };

  /* ---- small helpers */
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === 'text') e.textContent = v;
      else if (k === 'class') e.className = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c) e.append(c);
    return e;
  }

  function storeGet(k) {
    try { return sessionStorage.getItem(k); } catch { return null; }
  }
  function storeSet(k, v) {
    try { if (v === null) sessionStorage.removeItem(k); else sessionStorage.setItem(k, v); } catch { /* no storage */ }
  }

  function say(text) { $('status').textContent = text; }
  function fail(text) { $('error').textContent = text; }

  const jitter = (ms) => Math.round(ms / 2 + Math.random() * ms / 2);
  const isEnded = (g) => !!(g && g.model.state && g.model.state.status === 'ended');

  /* ---- guest session */
  function loadSession() {
    S.token = storeGet(TOKEN_KEY);
    try { S.user = JSON.parse(storeGet(USER_KEY) || 'null'); } catch { S.user = null; }
    if (!S.token) S.user = null;
  }

  function setSession(token, user) {
    S.token = token;
    S.user = token ? { id: user.id, username: user.username } : null;
    storeSet(TOKEN_KEY, token);
    storeSet(USER_KEY, token ? JSON.stringify(S.user) : null);
  }

  /* POST /api/auth/guest; an empty nickname sends no body (the server picks guest-XXXX). */
  async function fetchToken(nickname) {
    const init = { method: 'POST', headers: { Accept: 'application/json' }, cache: 'no-store' };
    if (nickname) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify({ nickname });
    }
    let res;
    let data = null;
    try {
      res = await fetch('/api/auth/guest', init);
      data = await res.json();
    } catch { /* below */ }
    if (!res) throw new Error('Cannot reach the server');
    if (!res.ok || !data || typeof data.token !== 'string') {
      const e = new Error((data && data.message) || `Guest sign-in failed (HTTP ${res.status})`);
      e.status = res.status;
      throw e;
    }
    setSession(data.token, data.user || {});
    S.freshToken = true;
  }

  /* ---- WebSocket */
  function send(msg) {
    if (!S.ws || S.ws.readyState !== WebSocket.OPEN) return false;
    try { S.ws.send(JSON.stringify(msg)); return true; } catch { return false; }
  }

  /* Send now, or right after the next Authenticated. */
  function act(msg) {
    if (S.authed) send(msg);
    else S.pending.push(msg);
  }

  function setConn(state, text) {
    const c = $('conn-status');
    c.dataset.state = state;
    c.textContent = text;
  }

  async function connect() {
    clearTimeout(S.reconnectTimer);
    const gen = ++S.wsGen;
    S.authed = false;
    setConn('connecting', S.attempt ? 'reconnecting…' : 'connecting…');
    render();
    if (!S.token) { /* first visit, or the token was refused: keep the nickname typed */
      const nick = $('nickname').value.trim();
      try {
        await fetchToken(nick).catch((e) => (nick && e.status === 400 ? fetchToken('') : Promise.reject(e)));
      } catch (e) {
        if (gen !== S.wsGen) return;
        fail(e.message);
        return void scheduleReconnect();
      }
      if (gen !== S.wsGen) return;
    }
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    let ws;
    try {
      ws = new WebSocket(`${proto}://${location.host}/ws`);
    } catch {
      return void scheduleReconnect();
    }
    S.ws = ws;
    ws.onopen = () => {
      if (gen !== S.wsGen) return;
      S.lastFrame = Date.now();
      send({ Authenticate: { token: S.token, protocol_version: PROTOCOL } });
    };
    ws.onmessage = (e) => {
      if (gen !== S.wsGen || typeof e.data !== 'string') return;
      S.lastFrame = Date.now();
      let m;
      try { m = JSON.parse(e.data); } catch { return; }
      handle(m);
    };
    ws.onclose = () => {
      if (gen !== S.wsGen) return;
      dropSocket();
      scheduleReconnect();
    };
    ws.onerror = () => { /* onclose follows */ };
  }

  /* Forget the socket (without waiting for a close that may never come). */
  function dropSocket() {
    const old = S.ws;
    S.wsGen++;
    S.ws = null;
    S.authed = false;
    stopPing();
    if (old) {
      try { old.close(); } catch { /* already closed */ }
    }
    render();
  }

  /* At once after a close, then 100 ms doubling up to 2 s, jittered. */
  function scheduleReconnect() {
    clearTimeout(S.reconnectTimer);
    if (S.stopped) return void setConn('offline', 'offline');
    const n = S.attempt++;
    const delay = n === 0 ? 0 : jitter(Math.min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (n - 1)));
    setConn('reconnecting', 'reconnecting…');
    S.reconnectTimer = setTimeout(connect, delay);
  }

  function startPing() {
    stopPing();
    S.pingTimer = setInterval(() => {
      if (Date.now() - S.lastFrame > DEAD_MS) {
        dropSocket();
        return void scheduleReconnect();
      }
      send({ Ping: { client_time: Date.now() } });
    }, PING_MS);
    send({ Ping: { client_time: Date.now() } });
  }

  function stopPing() {
    clearInterval(S.pingTimer);
    S.pingTimer = 0;
  }

  function handle(m) {
    const [tag, data] = M.untag(m);
    const h = {
      Authenticated: onAuthenticated, AccessDenied: onAccessDenied, Error: onError,
      QueueUpdate: onQueueUpdate, QueueLeft: onQueueLeft, MatchFound: onMatchFound,
      CustomGameCreated: onCustomCreated, CustomGameJoined: onCustomJoined,
      GameEvent: onGameEvent, Pong: onPong, ServerShutdown: onShutdown,
    }[tag];
    if (h) h(data || {});
  }

  function onAuthenticated(d) {
    const prev = S.lastUserId;
    S.lastUserId = d.user_id;
    S.authed = true;
    S.attempt = 0;
    S.freshToken = false;
    setSession(S.token, { id: d.user_id, username: d.username });
    $('me').textContent = d.username || d.user_id || '';
    $('me').dataset.user = d.user_id || '';
    $('node').textContent = d.node_id ? `node ${d.node_id}` : '';
    $('node').dataset.node = d.node_id || '';
    setConn('online', 'online');
    say('');
    fail('');
    startPing();
    if (S.game && S.game.role === 'player' && prev && prev !== d.user_id) forgetGame(); /* a new guest plays nothing */
    rejoin();
    for (const msg of S.pending.splice(0)) send(msg);
    render();
  }

  /* After a (re)connect: back into the queue or the game we were in. */
  function rejoin() {
    if (S.queued) send({ QueueForMatch: { mode: S.queued } });
    const g = S.game;
    if (!g || isEnded(g)) return;
    send(attachMsg(g));
    g.confirmed = false;
    M.expectSnapshot(g.model);
    armSnapshotWait();
    const c = S.lastCmd;
    if (c && Date.now() - c.at <= RESEND_MS && c.msg.GameCommand.command_id.game_id === g.id) send(c.msg);
  }

  function onAccessDenied(d) {
    const reason = d.reason || 'access denied';
    fail(`Access denied: ${reason}`);
    if (S.authed) return;
    /* The token was refused: the close that follows reconnects with a new
     * one, unless a brand-new token was refused too. */
    if (S.freshToken) S.stopped = true;
    setSession(null, null);
  }

  function onError(d) {
    fail(d.reason || 'error');
    const g = S.game;
    if (g && !g.confirmed) forgetGame();      /* attaching to a game that is gone */
    if (S.queued && !S.queueConfirmed) S.queued = null;
    render();
  }

  function onShutdown(d) {
    say('server restarting, reconnecting…');
    setConn('reconnecting', d.grace_period_seconds ? `server restarting (${d.grace_period_seconds} s)` : 'server restarting');
  }

  function onPong(d) {
    const rtt = Date.now() - Number(d.client_time);
    if (Number.isFinite(rtt) && rtt >= 0) $('rtt').textContent = `${rtt} ms`;
  }

  /* ---- lobby */
  function onQueueUpdate(d) {
    S.queueConfirmed = true;
    if (!S.queued) S.queued = '?';
    $('queue-status').textContent = `In the ${S.queued} queue: position ${d.position}`;
    say(`Queued, position ${d.position}`);
    render();
  }

  function onQueueLeft() {
    S.queued = null;
    $('queue-status').textContent = '';
    say('Left the queue');
    render();
  }

  function onMatchFound(d) {
    S.queued = null;
    $('queue-status').textContent = '';
    say(`Match found: game ${d.game_id}`);
    attach(d.game_id, 'player');
  }

  function onCustomCreated(d) {
    attach(d.game_id, 'player', { owner: true, code: d.game_code });
    say(`Custom game created, code ${d.game_code}`);
  }

  function onCustomJoined(d) {
    attach(d.game_id, 'player');
    say(`Joined custom game ${d.game_id}`);
  }

  /* If the nickname box holds a new name, become a new guest of that name. */
  async function applyNickname() {
    const name = $('nickname').value.trim();
    if (!name || (S.user && name === S.user.username)) return true;
    if (S.game && S.game.role === 'player' && !isEnded(S.game)) {
      fail('Finish this game before changing your name');
      return false;
    }
    try {
      await fetchToken(name);
    } catch (e) {
      fail(e.message);
      return false;
    }
    S.stopped = false;
    S.attempt = 0;
    dropSocket();
    connect();
    return true;
  }

  /* Leave the game shown (its snake plays on) before starting another. */
  function leaveGame() {
    if (S.authed && S.game && !isEnded(S.game)) send('LeaveGame');
    forgetGame();
  }

  async function play(msg, queueMode) {
    fail('');
    if (!(await applyNickname())) return;
    if (S.stopped) { /* refused before: try once more on demand */
      S.stopped = false;
      S.attempt = 0;
      connect();
    }
    leaveGame();
    if (queueMode) { /* sent now, or by rejoin() once authenticated */
      S.queued = queueMode;
      S.queueConfirmed = false;
      $('queue-status').textContent = `Joining the ${queueMode} queue…`;
      if (S.authed) send(msg);
    } else {
      act(msg);
    }
    render();
  }

  function leaveQueue() {
    act('LeaveQueue');
    S.queued = null;
    $('queue-status').textContent = '';
    render();
  }

  function numberField(id) {
    const v = $(id).value.trim();
    return v === '' ? undefined : Number(v);
  }

  function createCustom() {
    const opts = {
      width: numberField('custom-width'), height: numberField('custom-height'),
      tick_ms: numberField('custom-tick'), food: numberField('custom-food'),
      max_players: numberField('custom-max'),
    };
    for (const k of Object.keys(opts)) if (opts[k] === undefined || Number.isNaN(opts[k])) delete opts[k];
    play({ CreateCustomGame: opts }, null);
  }

  function joinCustom() {
    const code = $('join-code').value.trim();
    if (!code) return void fail('Enter a game code');
    play({ JoinCustomGame: { code } }, null);
  }

  function spectate(id) {
    fail('');
    leaveGame();
    if (S.authed) send({ SpectateGame: id }); /* else rejoin() sends it */
    attach(id, 'spectator');
    say(`Watching game ${id}`);
  }

  async function loadGames() {
    let list = [];
    try {
      const res = await fetch('/api/games', { headers: { Accept: 'application/json' }, cache: 'no-store' });
      if (!res.ok) return;
      list = (await res.json()).games || [];
    } catch { return; }
    renderGames(list);
  }

  function renderGames(list) {
    const ul = $('games');
    if (!list.length) return void ul.replaceChildren(el('li', { class: 'empty', text: 'No games running' }));
    ul.replaceChildren(...list.map((g) => {
      const n = Array.isArray(g.players) ? g.players.length : 0;
      const li = el('li', { 'data-game': String(g.id) },
        el('span', { class: 'name', text: `#${g.id} ${g.mode} · ${g.status} · ${n} player${n === 1 ? '' : 's'}` }),
        el('button', { type: 'button', class: 'spectate', text: 'Spectate', onclick: () => spectate(g.id) }));
      if (S.game && String(S.game.id) === String(g.id)) li.classList.add('active');
      return li;
    }));
  }

  /* ---- the game shown */
  function attachMsg(g) {
    return g.role === 'player' ? { JoinGame: g.id } : { SpectateGame: g.id };
  }

  function attach(id, role, extra) {
    S.game = { id, role, model: M.newModel(id), owner: false, code: null, confirmed: false, ...extra };
    storeSet(VIEW_KEY, JSON.stringify({ id, role }));
    $('result').textContent = '';
    armSnapshotWait();
    render();
    if (role === 'player') $('board').focus();
  }

  function forgetGame() {
    clearTimeout(S.snapTimer);
    S.game = null;
    storeSet(VIEW_KEY, null);
    $('result').textContent = '';
    render();
  }

  function restoreGame() {
    let v = null;
    try { v = JSON.parse(storeGet(VIEW_KEY) || 'null'); } catch { /* ignore */ }
    if (v && v.id !== undefined && (v.role === 'player' || v.role === 'spectator')) {
      S.game = { id: v.id, role: v.role, model: M.newModel(v.id), owner: false, code: null, confirmed: false };
    }
  }

  function requestResync() {
    if (!S.game) return;
    S.resyncs++;
    send({ RequestResync: { game_id: S.game.id } });
    armSnapshotWait();
  }

  /* No Snapshot in time: attach again (none yet) or ask for a resync. */
  function armSnapshotWait() {
    clearTimeout(S.snapTimer);
    S.snapTimer = setTimeout(() => {
      const g = S.game;
      if (!g || !S.authed) return;
      if (!g.model.state) {
        send(attachMsg(g));
        armSnapshotWait();
      } else if (g.model.awaiting) {
        requestResync();
      }
    }, SNAPSHOT_WAIT_MS);
  }

  function onGameEvent(d) {
    const g = S.game;
    if (!g) return;
    const r = M.receive(g.model, d);
    if (!r) return;
    if (r.resync) requestResync();
    else if (r.tag === 'Snapshot') {
      g.confirmed = true;
      clearTimeout(S.snapTimer);
    }
    if (r.tag === 'GameEnded' || (r.tag === 'Snapshot' && isEnded(g))) {
      storeSet(VIEW_KEY, null);
      showResult();
    }
    render();
  }

  function ownSnake() {
    const g = S.game;
    if (!g || g.role !== 'player' || !g.model.state || !S.user) return null;
    return g.model.state.snakes.find((s) => s.user_id === S.user.id) || null;
  }

  function showResult() {
    const g = S.game;
    const res = g.model.result;
    const st = g.model.state;
    const me = ownSnake();
    let text;
    if (!res) text = 'Game over';
    else if (res.winner === null || res.winner === undefined || res.winner < 0) {
      text = st && st.snakes.length > 1 ? 'Draw' : 'Game over';
    } else if (me && me.id === res.winner) text = 'You won!';
    else {
      const w = st && st.snakes.find((s) => s.id === res.winner);
      text = `${w ? w.user_id : 'snake ' + res.winner} won`;
    }
    if (me) {
      const mine = res && res.scores.find((x) => x.snake_id === me.id);
      text += ` · your score ${mine ? mine.score : me.score}`;
    }
    $('result').textContent = text;
    say(text);
  }

  /* ---- input */
  function onKey(e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.target && /^(INPUT|TEXTAREA|SELECT)$/.test(e.target.tagName)) return;
    const dir = KEYS[e.key];
    const g = S.game;
    const st = g && g.model.state;
    if (!dir || !st || st.status === 'ended') return;
    e.preventDefault(); /* no page scrolling while a game is on */
    if (g.role !== 'player' || st.status !== 'running' || e.repeat) return;
    const me = ownSnake();
    if (!me || !me.alive) return;
    turn(g.id, dir);
  }

  function turn(gameId, direction) {
    const msg = { GameCommand: { command_id: { game_id: gameId, seq: S.seq++ }, command: { Turn: { direction } } } };
    S.lastCmd = { msg, at: Date.now() };
    send(msg);
  }

  /* ---- rendering */
  function pageState() {
    if (!S.authed) return 'connecting';
    const g = S.game;
    if (g) return g.model.state ? g.model.state.status : 'waiting';
    return S.queued ? 'queued' : 'lobby';
  }

  /* Text and test hooks at once; the canvas on the next frame. */
  function render() {
    const b = document.body.dataset;
    const g = S.game;
    const st = g && g.model.state;
    const me = ownSnake();
    b.state = pageState();
    b.gameId = g ? String(g.id) : '';
    b.tick = st ? String(st.tick) : '';
    b.score = me ? String(me.score) : '';
    b.resyncs = String(S.resyncs);
    b.hashOk = String(g ? g.model.hashOk : 0);

    $('leave-queue').disabled = !S.queued;
    $('game-title').textContent = g ? `Game ${g.id}${g.role === 'spectator' ? ' (watching)' : ''}` : 'No game';
    $('game-status').textContent = g ? (st ? st.status : 'loading…') : '';
    $('game-tick').textContent = st ? `tick ${st.tick}` : '';
    $('leave-game').hidden = !g;
    $('custom-info').hidden = !(g && g.code);
    $('custom-code').textContent = g && g.code ? g.code : '';
    $('start-custom').hidden = !(g && g.owner && (!st || st.status === 'waiting'));
    renderScores(st, me);
    if (!S.drawQueued) {
      S.drawQueued = true;
      requestAnimationFrame(draw);
    }
  }

  function renderScores(st, me) {
    const ol = $('scores');
    if (!st) return void ol.replaceChildren();
    ol.replaceChildren(...st.snakes.slice().sort((a, b) => a.id - b.id).map((s) => {
      const sw = el('span', { class: 'swatch' });
      sw.style.background = COLORS[s.id % COLORS.length];
      const li = el('li', { 'data-snake': String(s.id), class: (s === me ? 'me ' : '') + (s.alive ? '' : 'dead') }, sw,
        el('span', { class: 'name', text: `${s === me ? `${S.user.username} (you)` : s.user_id}${s.alive ? '' : ' ✝'}` }),
        el('span', { class: 'score', text: String(s.score) }));
      return li;
    }));
  }

  function draw() {
    S.drawQueued = false;
    const c = $('board');
    const ctx = c.getContext('2d');
    const st = S.game && S.game.model.state;
    const w = st ? st.width : 40;
    const h = st ? st.height : 40;
    const size = Math.max(4, Math.floor(Math.min(BOARD_PX / w, BOARD_PX / h)));
    const dpr = window.devicePixelRatio || 1;
    if (c.width !== Math.round(size * w * dpr) || c.height !== Math.round(size * h * dpr)) {
      c.width = Math.round(size * w * dpr);
      c.height = Math.round(size * h * dpr);
      c.style.width = `${size * w}px`;
      c.style.aspectRatio = `${w} / ${h}`;
    }
    const css = getComputedStyle(document.body);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = css.getPropertyValue('--board').trim() || '#111';
    ctx.fillRect(0, 0, size * w, size * h);
    drawGrid(ctx, w, h, size, css.getPropertyValue('--grid').trim() || '#222');
    if (!st) return;
    ctx.fillStyle = '#e03131';
    for (const [x, y] of st.food) {
      ctx.beginPath();
      ctx.arc((x + 0.5) * size, (y + 0.5) * size, size * 0.35, 0, 2 * Math.PI);
      ctx.fill();
    }
    const me = ownSnake();
    for (const s of st.snakes) if (s.alive) drawSnake(ctx, s, size, s === me, css);
  }

  function drawGrid(ctx, w, h, size, color) {
    ctx.strokeStyle = color;
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (let x = 1; x < w; x++) {
      ctx.moveTo(x * size + 0.5, 0);
      ctx.lineTo(x * size + 0.5, h * size);
    }
    for (let y = 1; y < h; y++) {
      ctx.moveTo(0, y * size + 0.5);
      ctx.lineTo(w * size, y * size + 0.5);
    }
    ctx.stroke();
  }

  function drawSnake(ctx, s, size, mine, css) {
    const color = COLORS[s.id % COLORS.length];
    const pad = size > 8 ? 1 : 0;
    s.body.forEach(([x, y], i) => {
      ctx.fillStyle = color;
      ctx.globalAlpha = i === 0 ? 1 : 0.85;
      ctx.fillRect(x * size + pad, y * size + pad, size - 2 * pad, size - 2 * pad);
    });
    ctx.globalAlpha = 1;
    if (mine) { /* your snake: outlined */
      ctx.strokeStyle = css.getPropertyValue('--mine').trim() || '#fff';
      ctx.lineWidth = 2;
      for (const [x, y] of s.body) ctx.strokeRect(x * size + 1, y * size + 1, size - 2, size - 2);
    }
    const [hx, hy] = s.body[0] || [];
    if (hx === undefined) return;
    ctx.fillStyle = '#fff'; /* the head: a white eye */
    ctx.beginPath();
    ctx.arc((hx + 0.5) * size, (hy + 0.5) * size, Math.max(1, size * 0.18), 0, 2 * Math.PI);
    ctx.fill();
  }

  /* ---- start */
  function bind() {
    $('play-solo').addEventListener('click', () => play({ QueueForMatch: { mode: 'solo' } }, 'solo'));
    $('play-duel').addEventListener('click', () => play({ QueueForMatch: { mode: 'duel' } }, 'duel'));
    $('play-ffa').addEventListener('click', () => play({ QueueForMatch: { mode: 'ffa' } }, 'ffa'));
    $('leave-queue').addEventListener('click', leaveQueue);
    $('create-custom').addEventListener('click', createCustom);
    $('start-custom').addEventListener('click', () => act('StartCustomGame'));
    $('join-custom').addEventListener('click', joinCustom);
    $('join-code').addEventListener('keydown', (e) => { if (e.key === 'Enter') joinCustom(); });
    $('set-nickname').addEventListener('click', () => { fail(''); applyNickname(); });
    $('nickname').addEventListener('keydown', (e) => { if (e.key === 'Enter') { fail(''); applyNickname(); } });
    $('leave-game').addEventListener('click', () => { leaveGame(); say('Left the game'); });
    $('board').addEventListener('click', () => $('board').focus());
    document.addEventListener('keydown', onKey);
    window.addEventListener('online', () => {
      if (!S.ws && !S.stopped) { S.attempt = 0; connect(); }
    });
  }

  function start() {
    bind();
    loadSession();
    S.lastUserId = S.user && S.user.id;
    if (S.user && S.user.username) $('nickname').placeholder = S.user.username;
    restoreGame();
    render();
    connect();
    loadGames();
    setInterval(loadGames, GAMES_MS);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
