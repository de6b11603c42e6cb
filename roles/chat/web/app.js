/*
 * p2pmesh chat web client, served at /app.js by `p2pmesh --role=chat`. Plain
 * ES2020, no dependencies, no build step; speaks docs/chat.md (REST + /ws).
 * User text is only ever rendered with textContent.
 *
 * localStorage: p2pmesh_chat_token (JWT), p2pmesh_chat_view (open room,
 * restored on reload), p2pmesh_chat_outbox (unacknowledged messages, resent
 * after a reconnect or reload; the server drops duplicates by client_id).
 *
 * Element ids (each also has data-testid = the id):
 *  #auth (signed-out screen) #tab-login #tab-signup
 *  #login-form #login-username #login-password #login-submit #login-error
 *  #signup-form #signup-firstname #signup-lastname #signup-username
 *  #signup-username-status  data-state: checking|available|taken|invalid|error|""
 *  #signup-password #signup-password2 #signup-gender (male|female|other)
 *  #signup-about #signup-submit #signup-error
 *  #app (signed-in screen)  #welcome (data-user = username)
 *  #conn-status  data-state: offline|connecting|online|reconnecting
 *  #logout-button
 *  #room-list    li[data-testid=room-item][data-room=ID][data-kind=room|dm]
 *                [data-with=USER for a dm], .active when open, .badge unread
 *  #create-room-name #create-room-button #room-error
 *  #online-list  li[data-testid=online-user][data-user=NAME]; click = DM
 *                (not on yourself: class "me")   #online-count
 *  #streams      li[data-testid=stream-item][data-user=NAME] with
 *                a[data-testid=stream-link] (HLS playback URL)
 *  #broadcast-status "N/M"   #go-live-button #stream-key-panel
 *  #stream-rtmp-url #stream-key #stream-playback #stream-copy
 *  #stream-key-hide #stream-error
 *  #room-title   "General" / "@bob"; data-room = ID ("" for a DM not created
 *                yet), data-with = USER for a DM   #room-info (members)
 *  #load-older   shown while older history exists
 *  #message-list data-room = open room, data-loaded = "1" once history came;
 *                li[data-testid=message].message[data-id][data-from]
 *                [data-client-id], data-id "" while pending; classes mine,
 *                pending, failed; .from .time .body .status inside
 *  #seen "Seen by bob, carol" (your newest message)  #typing "bob is typing…"
 *  #message-input #send-button #send-error
 *  #toast        a message in another room (click opens it)
 */
'use strict';

(() => {
const TOKEN_KEY = 'p2pmesh_chat_token';
const VIEW_KEY = 'p2pmesh_chat_view';
const OUTBOX_KEY = 'p2pmesh_chat_outbox';
const USERNAME_RE = /^[a-zA-Z0-9_]{3,20}$/;
const ROOM_RE = /^[a-z0-9][a-z0-9_-]{0,39}$/;
const MAX_MESSAGE = 4000;
const PAGE = 50;
const TYPING_SEND_MS = 2000;   /* send typing at most this often */
const TYPING_SHOW_MS = 3000;   /* show "x is typing" this long after an event */
const PING_MS = 25000;         /* keepalive (ALB idle timeout is 60 s) */
const DEAD_MS = 40000;         /* no frame for this long: reconnect */
const BACKOFF_MIN = 500;
const BACKOFF_MAX = 30000;

const $ = (id) => document.getElementById(id);

/* ---- state */
/* Per-session state; signOutLocal() starts over with a fresh one. */
function fresh() {
  return {
    token: null, user: null, me: '',   /* me: the lowercase username */
    rooms: new Map(),      /* id -> room */
    online: new Set(),
    streams: new Map(),    /* user -> {user, playbackId, playbackUrl, startedAt} */
    unread: new Map(),     /* room id -> count */
    reads: new Map(),      /* room id -> Map(user -> message_id) */
    readSent: new Map(),   /* room id -> newest message_id we sent a read for */
    outbox: new Map(),     /* client_id -> {client_id, room | to, body, created} */
    view: null,            /* {room: id|null, dm: user|null, gen} */
    els: new Map(),        /* message id -> li, for the open view */
    oldest: null, newest: null, more: false, loadingOlder: false,
    typers: new Map(),     /* user -> expiry (ms) */
    typingTimer: 0, typingSent: 0,
    ws: null, welcomed: false, everWelcomed: false, attempt: 0,
    reconnectTimer: 0, pingTimer: 0, lastFrame: 0, retryTimer: 0, toastTimer: 0,
    keyShown: false, maxStreams: 0,
  };
}
/* wsGen and viewGen only grow: stale socket events and fetches check them */
const S = { ...fresh(), wsGen: 0, viewGen: 0 };

/* ---- small helpers */
function el(tag, props, ...children) {
  const e = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null) continue;
      if (k === 'text') e.textContent = v;
      else if (k === 'class') e.className = v;
      else if (k === 'dataset') Object.assign(e.dataset, v);
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
  }
  for (const c of children) if (c) e.append(c);
  return e;
}

function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  /* crypto.randomUUID needs a secure context; plain http on a LAN is not one */
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/* localStorage may be unavailable (private mode, full): carry on without it */
function storeGet(k) {
  try { return localStorage.getItem(k); } catch { return null; }
}
function storeSet(k, v) {
  try { if (v === null) localStorage.removeItem(k); else localStorage.setItem(k, v); } catch { /* see above */ }
}

/* A path segment: room ids are [a-z0-9_-] or dm:N:N; ':' is legal in a path. */
function seg(s) {
  return encodeURIComponent(s).replace(/%3A/gi, ':');
}

/* Only relative or http(s) URLs become links. */
function safeUrl(u) {
  if (typeof u !== 'string' || !u) return null;
  if (u.startsWith('/') && !u.startsWith('//')) return u;
  try {
    const p = new URL(u, location.href);
    return p.protocol === 'http:' || p.protocol === 'https:' ? p.href : null;
  } catch { return null; }
}

function fmtTime(ts) {
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return '';
  const today = new Date();
  const t = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return d.toDateString() === today.toDateString() ? t : `${d.toLocaleDateString()} ${t}`;
}

function jwtUser(token) {
  try {
    const p = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const o = JSON.parse(atob(p.padEnd(p.length + ((4 - (p.length % 4)) % 4), '=')));
    return typeof o.username === 'string' ? { username: o.username } : null;
  } catch { return null; }
}

function roomLabel(id) {
  const r = S.rooms.get(id);
  if (r && r.kind === 'dm') return '@' + (r.with || '?');
  if (r && r.title) return r.title;
  return '#' + id;
}

/* ---- REST */
class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body, opts = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const authed = !opts.anonymous && S.token;
  if (authed) headers.Authorization = 'Bearer ' + S.token;
  let res;
  try {
    res = await fetch(path, {
      method, headers, cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, 'Cannot reach the server');
  }
  let data = null;
  try { data = await res.json(); } catch { /* not JSON */ }
  if (!res.ok) {
    const msg = (data && typeof data.error === 'string' && data.error) ||
      (res.status === 429 ? 'Too many requests, try again later' : `Request failed (HTTP ${res.status})`);
    if (res.status === 401 && authed && !opts.keepSession) sessionExpired();
    throw new ApiError(res.status, msg);
  }
  return data || {};
}

/* ---- screens */
function showAuth(message) {
  $('app').hidden = true;
  $('auth').hidden = false;
  $('login-error').textContent = message || '';
  document.title = 'p2pmesh chat';
  showTab('login');
}

function showTab(which) {
  const login = which === 'login';
  $('login-form').hidden = !login;
  $('signup-form').hidden = login;
  $('tab-login').setAttribute('aria-selected', String(login));
  $('tab-signup').setAttribute('aria-selected', String(!login));
  (login ? $('login-username') : $('signup-username')).focus();
}

function enterApp(user, token) {
  S.token = token;
  storeSet(TOKEN_KEY, token);
  S.user = user || jwtUser(token) || { username: '?' };
  S.me = String(S.user.username || '').toLowerCase();
  const full = [S.user.firstName, S.user.lastName].filter(Boolean).join(' ');
  $('welcome').textContent = full ? `Welcome, ${full} (@${S.me})` : `Welcome, @${S.me}`;
  $('welcome').dataset.user = S.me;
  $('auth').hidden = true;
  $('app').hidden = false;
  loadOutbox();
  renderRooms();
  renderOnline();
  renderStreams();
  connect();
  loadRooms().then(restoreView, restoreView);
  loadStreams();
  loadBroadcastStatus();
}

function restoreView() {
  if (S.view) return;
  let v = null;
  try { v = JSON.parse(storeGet(VIEW_KEY) || 'null'); } catch { /* ignore */ }
  if (v && v.room) openRoom(v.room);
  else if (v && v.dm) openDm(v.dm);
  else openRoom('general');
}

/* Forget everything of the session (the server side is done by the caller). */
function signOutLocal(message) {
  for (const k of [TOKEN_KEY, VIEW_KEY, OUTBOX_KEY]) storeSet(k, null);
  disconnect();
  clearTimeout(S.retryTimer);
  clearTimeout(S.typingTimer);
  Object.assign(S, fresh(), { viewGen: S.viewGen + 1 });
  clearMessages();
  $('room-title').textContent = 'Pick a room';
  $('room-info').textContent = '';
  onHideKey();
  $('go-live-button').textContent = 'Go live';
  $('message-input').value = '';
  setComposer(false);
  showAuth(message);
}

function sessionExpired() {
  if (!S.token) return;
  signOutLocal('Your session has ended. Please sign in again.');
}

/* ---- sign in / sign up */
let checkSeq = 0;
let checkTimer = 0;

function setUserStatus(state, text) {
  const s = $('signup-username-status');
  s.dataset.state = state;
  s.textContent = text;
}

function onSignupUsername() {
  const u = $('signup-username').value.trim();
  clearTimeout(checkTimer);
  const seq = ++checkSeq;
  if (!u) return setUserStatus('', '');
  if (!USERNAME_RE.test(u)) return setUserStatus('invalid', '3-20 letters, digits or _');
  setUserStatus('checking', 'Checking…');
  checkTimer = setTimeout(async () => {
    try {
      const r = await api('GET', '/api/check-username/' + seg(u), undefined, { anonymous: true });
      if (seq !== checkSeq) return;
      if (r.error) setUserStatus('invalid', r.error);
      else if (r.available) setUserStatus('available', `✓ ${u.toLowerCase()} is available`);
      else setUserStatus('taken', `${u.toLowerCase()} is taken`);
    } catch (e) {
      if (seq === checkSeq) setUserStatus('error', e.message);
    }
  }, 300);
}

async function onSignup(ev) {
  ev.preventDefault();
  const err = $('signup-error');
  err.textContent = '';
  const username = $('signup-username').value.trim();
  const password = $('signup-password').value;
  const gender = $('signup-gender').value;
  if (!USERNAME_RE.test(username)) return void (err.textContent = 'Username: 3-20 letters, digits or _');
  if ($('signup-username-status').dataset.state === 'taken') return void (err.textContent = 'Username already taken');
  if (password.length < 6 || password.length > 100) return void (err.textContent = 'Password must be 6-100 characters');
  if (password !== $('signup-password2').value) return void (err.textContent = 'The passwords do not match');
  if (!gender) return void (err.textContent = 'Choose a gender');
  const body = { username, password, gender };
  const opt = { firstName: 'signup-firstname', lastName: 'signup-lastname', about: 'signup-about' };
  for (const [k, id] of Object.entries(opt)) {
    const v = $(id).value.trim();
    if (v) body[k] = v;
  }
  if (await submitAuth('signup', '/api/register', body)) {
    $('signup-form').reset();
    setUserStatus('', '');
  } else if (err.textContent === 'Username already taken') {
    setUserStatus('taken', `${username.toLowerCase()} is taken`);
  }
}

/* POST the form of kind ('login' | 'signup'); true once signed in. */
async function submitAuth(kind, path, body) {
  const btn = $(kind + '-submit');
  btn.disabled = true;
  try {
    const r = await api('POST', path, body, { anonymous: true });
    if (!r.token) throw new ApiError(0, 'The server sent no token');
    enterApp(r.user || { username: body.username }, r.token);
    return true;
  } catch (e) {
    $(kind + '-error').textContent = e.message;
    return false;
  } finally {
    btn.disabled = false;
  }
}

async function onLogin(ev) {
  ev.preventDefault();
  const err = $('login-error');
  err.textContent = '';
  const username = $('login-username').value.trim();
  const password = $('login-password').value;
  if (!username || !password) return void (err.textContent = 'Username and password are required');
  if (await submitAuth('login', '/api/login', { username, password })) $('login-password').value = '';
}

async function onLogout() {
  const btn = $('logout-button');
  btn.disabled = true;
  disconnect(); /* the server closes it with 4401 anyway: not an expired session */
  try {
    await api('POST', '/api/logout', undefined, { keepSession: true });
  } catch { /* signed out locally either way */ }
  btn.disabled = false;
  signOutLocal('');
}

/* ---- WebSocket */
function setConn(state, text) {
  const c = $('conn-status');
  c.dataset.state = state;
  c.textContent = text || state;
}

function wsReady() {
  return S.ws && S.ws.readyState === WebSocket.OPEN && S.welcomed;
}

function wsSend(obj) {
  if (!S.ws || S.ws.readyState !== WebSocket.OPEN) return false;
  try {
    S.ws.send(JSON.stringify(obj));
    return true;
  } catch { return false; }
}

function connect() {
  if (!S.token) return;
  clearTimeout(S.reconnectTimer);
  const gen = ++S.wsGen;
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const url = `${proto}//${location.host}/ws?token=${encodeURIComponent(S.token)}`;
  let ws;
  try {
    ws = new WebSocket(url);
  } catch {
    scheduleReconnect(true);
    return;
  }
  S.ws = ws;
  S.welcomed = false;
  let opened = false;
  setConn(S.everWelcomed ? 'reconnecting' : 'connecting', 'connecting…');
  ws.onopen = () => {
    if (gen !== S.wsGen) return;
    opened = true;
    S.lastFrame = Date.now();
  };
  ws.onmessage = (e) => {
    if (gen !== S.wsGen) return;
    S.lastFrame = Date.now();
    let m;
    try { m = JSON.parse(e.data); } catch { return; }
    if (m && typeof m.type === 'string') handleFrame(m);
  };
  ws.onclose = (e) => {
    if (gen !== S.wsGen) return;
    S.ws = null;
    S.welcomed = false;
    stopPing();
    if (e.code === 4401) return void sessionExpired();
    scheduleReconnect(!opened);
  };
  ws.onerror = () => { /* onclose follows */ };
}

function disconnect() {
  S.wsGen++;
  clearTimeout(S.reconnectTimer);
  stopPing();
  if (S.ws) {
    try { S.ws.close(1000); } catch { /* already closed */ }
  }
  S.ws = null;
  S.welcomed = false;
  setConn('offline', 'offline');
}

async function scheduleReconnect(neverOpened) {
  if (!S.token) return;
  clearTimeout(S.reconnectTimer);
  /* A bad token is refused with HTTP 401 before the upgrade, which the
   * browser reports only as a failed socket: ask the REST API. */
  if (neverOpened && S.attempt > 0) {
    try {
      await api('GET', '/api/verify-token');
    } catch (e) {
      if (!S.token) return; /* 401: signed out */
      if (e.status === 404) return void signOutLocal('Your account no longer exists.');
    }
    if (!S.token) return;
  }
  const base = Math.min(BACKOFF_MAX, BACKOFF_MIN * 2 ** S.attempt);
  const delay = Math.round(base / 2 + Math.random() * base / 2);
  S.attempt++;
  setConn('reconnecting', `reconnecting in ${Math.ceil(delay / 1000)} s`);
  S.reconnectTimer = setTimeout(connect, delay);
}

function reconnectNow() {
  if (!S.token || wsReady()) return;
  if (S.ws && S.ws.readyState === WebSocket.CONNECTING) return;
  S.attempt = 0;
  connect();
}

function startPing() {
  stopPing();
  S.pingTimer = setInterval(() => {
    if (Date.now() - S.lastFrame > DEAD_MS) {
      /* the connection is dead without a close: drop it and start over */
      const old = S.ws;
      S.wsGen++;
      S.ws = null;
      S.welcomed = false;
      stopPing();
      try { old && old.close(); } catch { /* ignore */ }
      scheduleReconnect(false);
      return;
    }
    wsSend({ type: 'ping' });
  }, PING_MS);
}

function stopPing() {
  clearInterval(S.pingTimer);
  S.pingTimer = 0;
}

function handleFrame(m) {
  const h = {
    welcome: onWelcome, joined: onJoined, message: onMessage, ack: onAck,
    presence: onPresence, typing: onTyping, read: onRead,
    stream_started: onStreamStarted, stream_stopped: onStreamStopped, error: onError,
  }[m.type];
  if (h) h(m); /* pong and unknown types: nothing to do */
}

function onWelcome(m) {
  S.welcomed = true;
  S.everWelcomed = true;
  S.attempt = 0;
  setConn('online', 'online');
  startPing();
  if (typeof m.user === 'string' && m.user) S.me = m.user.toLowerCase();
  S.online = new Set((Array.isArray(m.online) ? m.online : []).map(String));
  renderOnline();
  if (Array.isArray(m.rooms)) {
    for (const r of m.rooms) if (r && r.id) S.rooms.set(r.id, { ...S.rooms.get(r.id), ...r });
    renderRooms();
  }
  const v = S.view;
  if (v && v.room) {
    const r = S.rooms.get(v.room);
    if (!r || r.kind !== 'dm') wsSend({ type: 'join', room: v.room });
    if (v.loaded) fillGap(v); /* messages sent while we had no socket */
  }
  flushOutbox();
  markRead();
}

function onJoined(m) {
  const r = S.rooms.get(m.room);
  if (r) {
    r.joined = true;
    if (Array.isArray(m.members)) r.members = m.members.length;
    renderRooms();
  }
  if (S.view && S.view.room === m.room) renderRoomInfo();
}

function onPresence(m) {
  if (typeof m.user !== 'string') return;
  if (m.state === 'online') S.online.add(m.user);
  else if (m.state === 'offline') {
    S.online.delete(m.user);
    if (S.typers.delete(m.user)) renderTyping();
  }
  renderOnline();
}

function onError(m) {
  const text = m.message || m.code || 'error';
  if (m.client_id && S.outbox.has(m.client_id)) {
    const li = pendingEl(m.client_id);
    if (m.code === 'unavailable' || m.code === 'rate_limited') {
      /* nothing was stored: try again shortly */
      if (li) setStatus(li, `${text}; retrying…`);
      clearTimeout(S.retryTimer);
      S.retryTimer = setTimeout(flushOutbox, m.code === 'rate_limited' ? 5000 : 3000);
      return;
    }
    const e = S.outbox.get(m.client_id);
    if (m.code === 'not_member' && e.room && !e.rejoined) {
      e.rejoined = true; /* join, then send once more */
      wsSend({ type: 'join', room: e.room });
      return void sendEntry(e, li);
    }
    S.outbox.delete(m.client_id);
    saveOutbox();
    if (li) {
      li.classList.remove('pending');
      li.classList.add('failed');
      setStatus(li, `not sent: ${text}`);
    } else {
      $('send-error').textContent = `A message was not sent: ${text}`;
    }
    return;
  }
  if (m.code === 'not_member' && S.view && S.view.room) wsSend({ type: 'join', room: S.view.room });
  $('send-error').textContent = text;
}

/* ---- rooms */
async function loadRooms() {
  const r = await api('GET', '/api/rooms');
  const next = new Map();
  for (const room of r.rooms || []) if (room && room.id) next.set(room.id, room);
  /* keep a DM we learned of over the socket meanwhile */
  for (const [id, room] of S.rooms) if (!next.has(id) && room.kind === 'dm') next.set(id, room);
  S.rooms = next;
  renderRooms();
  if (S.view) renderRoomHead();
}

function renderRooms() {
  const list = $('room-list');
  const rooms = [...S.rooms.values()].sort((a, b) => {
    if ((a.kind === 'dm') !== (b.kind === 'dm')) return a.kind === 'dm' ? 1 : -1;
    return roomLabel(a.id).localeCompare(roomLabel(b.id));
  });
  list.replaceChildren(...rooms.map((r) => {
    const dm = r.kind === 'dm';
    const n = S.unread.get(r.id) || 0;
    const li = el('li', {
      'data-testid': 'room-item',
      class: S.view && S.view.room === r.id ? 'active' : '',
      title: dm ? `Direct messages with ${r.with}` : `#${r.id}`,
      onclick: () => openRoom(r.id),
    },
    el('span', { class: 'name', text: dm ? '@' + r.with : (r.title || '#' + r.id) }),
    !dm && typeof r.members === 'number' ? el('span', { class: 'count', text: String(r.members) }) : null,
    n ? el('span', { class: 'badge', 'data-testid': 'unread', text: String(n) }) : null);
    li.dataset.room = r.id;
    li.dataset.kind = dm ? 'dm' : 'room';
    if (dm) li.dataset.with = r.with || '';
    return li;
  }));
  const total = [...S.unread.values()].reduce((a, b) => a + b, 0);
  document.title = total ? `(${total}) p2pmesh chat` : 'p2pmesh chat';
}

async function onCreateRoom(ev) {
  ev.preventDefault();
  const err = $('room-error');
  err.textContent = '';
  const name = $('create-room-name').value.trim().toLowerCase();
  if (!ROOM_RE.test(name)) return void (err.textContent = 'Room names: a-z, 0-9, _ and - (at most 40)');
  const btn = $('create-room-button');
  btn.disabled = true;
  try {
    const r = await api('POST', '/api/rooms', { name });
    const room = r.room || { id: name, kind: 'room', joined: true };
    S.rooms.set(room.id, room);
    $('create-room-name').value = '';
    renderRooms();
    openRoom(room.id);
  } catch (e) {
    err.textContent = e.message;
  } finally {
    btn.disabled = false;
  }
}

/* ---- views */
function setComposer(on) {
  $('message-input').disabled = !on;
  $('send-button').disabled = !on;
}

function clearMessages() {
  $('message-list').replaceChildren();
  $('message-list').dataset.room = '';
  $('message-list').dataset.loaded = '0';
  S.els.clear();
  S.oldest = S.newest = null;
  S.more = false;
  $('load-older').hidden = true;
  $('seen').textContent = '';
  S.typers.clear();
  renderTyping();
  $('send-error').textContent = '';
}

function renderRoomHead() {
  const v = S.view;
  if (!v) return;
  const t = $('room-title');
  t.textContent = v.dm ? '@' + v.dm : roomLabel(v.room);
  t.dataset.room = v.room || '';
  if (v.dm) t.dataset.with = v.dm;
  else delete t.dataset.with;
  renderRoomInfo();
}

function renderRoomInfo() {
  const v = S.view;
  const r = v && v.room ? S.rooms.get(v.room) : null;
  let info = '';
  if (v && v.dm) info = S.online.has(v.dm) ? 'direct message · online' : 'direct message';
  else if (r && typeof r.members === 'number') info = `${r.members} member${r.members === 1 ? '' : 's'}`;
  $('room-info').textContent = info;
}

function saveView() {
  const v = S.view;
  storeSet(VIEW_KEY, v ? JSON.stringify({ room: v.room, dm: v.dm }) : null);
}

function openRoom(id) {
  const r = S.rooms.get(id);
  const dm = r && r.kind === 'dm' ? r.with || null : (id.startsWith('dm:') ? '?' : null);
  setView({ room: id, dm });
  if (!dm) wsSend({ type: 'join', room: id });
  loadHistory(S.view);
}

function openDm(user) {
  user = String(user).toLowerCase();
  if (user === S.me) return;
  for (const r of S.rooms.values()) {
    if (r.kind === 'dm' && String(r.with).toLowerCase() === user) return openRoom(r.id);
  }
  /* no conversation yet: the first dm creates the room */
  setView({ room: null, dm: user, loaded: true });
  $('message-list').dataset.loaded = '1';
  renderPending();
  $('message-input').focus();
}

function setView(v) {
  S.view = { ...v, gen: ++S.viewGen };
  clearMessages();
  $('message-list').dataset.room = v.room || '';
  if (v.room) S.unread.delete(v.room);
  renderRooms();
  renderRoomHead();
  setComposer(true);
  saveView();
}

/* After a DM room was created by our first message. */
function bindDmRoom(id, user) {
  if (!S.rooms.has(id)) S.rooms.set(id, { id, kind: 'dm', with: user, joined: true });
  const v = S.view;
  if (v && !v.room && v.dm === user) {
    v.room = id;
    $('message-list').dataset.room = id;
    $('room-title').dataset.room = id;
    saveView();
  }
  renderRooms();
}

async function loadHistory(v) {
  try {
    const r = await api('GET', `/api/rooms/${seg(v.room)}/messages?limit=${PAGE}`);
    if (S.view !== v || v.gen !== S.viewGen) return;
    insertMessages(r.messages || []);
    S.more = !!r.more;
    $('load-older').hidden = !S.more;
    $('message-list').dataset.loaded = '1';
    v.loaded = true;
    renderPending();
    scrollToBottom();
    markRead();
  } catch (e) {
    if (S.view !== v) return;
    $('message-list').dataset.loaded = '1';
    $('send-error').textContent = e.status === 404 ? `No room ${v.room}` : e.message;
    if (e.status === 404 || e.status === 403) setComposer(false);
  }
}

async function loadOlder() {
  const v = S.view;
  if (!v || !v.room || S.loadingOlder || S.oldest === null) return;
  S.loadingOlder = true;
  $('load-older').disabled = true;
  try {
    const r = await api('GET', `/api/rooms/${seg(v.room)}/messages?before=${S.oldest}&limit=${PAGE}`);
    if (S.view !== v) return;
    const sc = $('scroller');
    const from = sc.scrollHeight - sc.scrollTop;
    insertMessages(r.messages || []);
    sc.scrollTop = sc.scrollHeight - from;
    S.more = !!r.more;
    $('load-older').hidden = !S.more;
  } catch (e) {
    $('send-error').textContent = e.message;
  } finally {
    S.loadingOlder = false;
    $('load-older').disabled = false;
  }
}

/* After a reconnect: fetch what was missed while the socket was down. */
async function fillGap(v) {
  if (S.newest === null) return void loadHistory(v);
  try {
    const r = await api('GET', `/api/rooms/${seg(v.room)}/messages?after=${S.newest}&limit=200`);
    if (S.view !== v) return;
    if (r.more) return void openRoom(v.room); /* missed too much: start from the newest page */
    const stick = nearBottom();
    insertMessages(r.messages || []);
    if (stick) scrollToBottom();
    markRead();
  } catch { /* the live stream continues; history is there on reload */ }
}

/* ---- messages */
function nearBottom() {
  const sc = $('scroller');
  return sc.scrollHeight - sc.scrollTop - sc.clientHeight < 80;
}

function scrollToBottom() {
  const sc = $('scroller');
  sc.scrollTop = sc.scrollHeight;
}

function setStatus(li, text) {
  let s = li.querySelector('.status');
  if (!s) {
    s = el('span', { class: 'status' });
    li.querySelector('.head').append(s);
  }
  s.textContent = text;
}

function messageEl(m) {
  const mine = String(m.from).toLowerCase() === S.me;
  const li = el('li', { 'data-testid': 'message', class: 'message' + (mine ? ' mine' : '') },
    el('div', { class: 'head' },
      el('span', { class: 'from', text: String(m.from) }),
      el('time', { class: 'time', text: fmtTime(m.ts), datetime: new Date(m.ts || Date.now()).toISOString() })),
    el('div', { class: 'body', text: String(m.body) }));
  li.dataset.id = m.id === undefined || m.id === null ? '' : String(m.id);
  li.dataset.from = String(m.from);
  if (m.client_id) li.dataset.clientId = m.client_id;
  return li;
}

function pendingEl(clientId) {
  for (const li of $('message-list').querySelectorAll('li.message[data-id=""]')) {
    if (li.dataset.clientId === clientId) return li;
  }
  return null;
}

/* Insert confirmed messages (any order, duplicates ignored) before the pending ones. */
function insertMessages(ms) {
  for (const m of ms) {
    if (!m || typeof m.id !== 'number' || S.els.has(m.id)) continue;
    let li = null;
    if (m.client_id && String(m.from).toLowerCase() === S.me) {
      li = pendingEl(m.client_id);
      if (li) confirmEl(li, m.id, m.ts);
    }
    place(li || messageEl(m), m.id);
    if (S.typers.delete(String(m.from))) renderTyping();
  }
  renderSeen();
}

/* Put a confirmed message right after the newest confirmed one older than it. */
function place(li, id) {
  let c = $('message-list').lastElementChild;
  for (; c; c = c.previousElementSibling) if (c !== li && c.dataset.id !== '' && Number(c.dataset.id) < id) break;
  if (c) c.after(li);
  else $('message-list').prepend(li);
  S.els.set(id, li);
  if (S.oldest === null || id < S.oldest) S.oldest = id;
  if (S.newest === null || id > S.newest) S.newest = id;
}

function confirmEl(li, id, ts) {
  li.dataset.id = String(id);
  li.classList.remove('pending', 'failed');
  const s = li.querySelector('.status');
  if (s) s.remove();
  if (ts) li.querySelector('.time').textContent = fmtTime(ts);
}

function onMessage(m) {
  if (typeof m.room !== 'string' || typeof m.id !== 'number') return;
  const fromMe = String(m.from).toLowerCase() === S.me;
  let entry = null;
  if (fromMe && m.client_id && S.outbox.has(m.client_id)) {
    entry = S.outbox.get(m.client_id);
    S.outbox.delete(m.client_id);
    saveOutbox();
  }
  if (!S.rooms.has(m.room) || (entry && entry.to && S.view && S.view.dm === entry.to && !S.view.room)) {
    if (m.room.startsWith('dm:')) {
      const other = fromMe ? (entry && entry.to) : String(m.from);
      if (other) bindDmRoom(m.room, other);
      else loadRooms().catch(() => {});
    } else {
      loadRooms().catch(() => {});
    }
  }
  const v = S.view;
  if (v && v.room === m.room) {
    const stick = fromMe || nearBottom();
    insertMessages([m]);
    if (stick) scrollToBottom();
    markRead();
  } else if (!fromMe) {
    S.unread.set(m.room, (S.unread.get(m.room) || 0) + 1);
    renderRooms();
    const r = S.rooms.get(m.room);
    toast(`${m.from}${r && r.kind === 'dm' ? '' : ' in ' + roomLabel(m.room)}: ${m.body}`, m.room);
  }
}

function onAck(m) {
  if (!m.client_id) return;
  S.outbox.delete(m.client_id);
  saveOutbox();
  const li = pendingEl(m.client_id);
  if (!li || typeof m.id !== 'number') return;
  if (S.els.has(m.id)) {
    li.remove(); /* the message frame came first */
    return;
  }
  confirmEl(li, m.id, m.ts);
  place(li, m.id);
  renderSeen();
}

function onSend(ev) {
  ev.preventDefault();
  const v = S.view;
  const input = $('message-input');
  const body = input.value;
  $('send-error').textContent = '';
  if (!v || !body.trim()) return;
  if (body.length > MAX_MESSAGE) return void ($('send-error').textContent = `Messages are at most ${MAX_MESSAGE} characters`);
  const entry = { client_id: uuid(), body, created: Date.now() };
  if (v.dm && v.dm !== '?') entry.to = v.dm;
  else entry.room = v.room;
  S.outbox.set(entry.client_id, entry);
  saveOutbox();
  const li = messageEl({ id: null, from: S.me, body, ts: entry.created, client_id: entry.client_id });
  li.classList.add('pending');
  $('message-list').append(li);
  sendEntry(entry, li);
  input.value = '';
  autoGrow();
  scrollToBottom();
  input.focus();
}

function frameOf(e) {
  return e.to
    ? { type: 'dm', to: e.to, body: e.body, client_id: e.client_id }
    : { type: 'message', room: e.room, body: e.body, client_id: e.client_id };
}

function sendEntry(entry, li) {
  const sent = wsReady() && wsSend(frameOf(entry));
  if (li) setStatus(li, sent ? 'sending…' : 'waiting for connection…');
}

function flushOutbox() {
  if (!wsReady()) return;
  for (const e of S.outbox.values()) sendEntry(e, pendingEl(e.client_id));
}

function entryInView(e) {
  const v = S.view;
  if (!v) return false;
  return e.to ? v.dm === e.to : v.room === e.room;
}

/* Show the unacknowledged messages of this view (after a reload or a view switch). */
function renderPending() {
  const list = $('message-list');
  for (const e of S.outbox.values()) {
    if (!entryInView(e) || pendingEl(e.client_id)) continue;
    const li = messageEl({ id: null, from: S.me, body: e.body, ts: e.created, client_id: e.client_id });
    li.classList.add('pending');
    setStatus(li, wsReady() ? 'sending…' : 'waiting for connection…');
    list.append(li);
  }
}

function loadOutbox() {
  S.outbox.clear();
  try {
    const o = JSON.parse(storeGet(OUTBOX_KEY) || 'null');
    if (o && o.user === S.me && Array.isArray(o.items)) {
      for (const e of o.items) if (e && e.client_id && typeof e.body === 'string') S.outbox.set(e.client_id, e);
    }
  } catch { /* ignore a damaged outbox */ }
}

function saveOutbox() {
  storeSet(OUTBOX_KEY, S.outbox.size ? JSON.stringify({ user: S.me, items: [...S.outbox.values()] }) : null);
}

function autoGrow() {
  const t = $('message-input');
  t.style.height = 'auto';
  t.style.height = Math.min(t.scrollHeight + 2, 160) + 'px';
}

/* ---- typing */
function onInputTyping() {
  autoGrow();
  const v = S.view;
  if (!v || !v.room || !$('message-input').value) return;
  const now = Date.now();
  if (now - S.typingSent < TYPING_SEND_MS) return;
  if (wsReady() && wsSend({ type: 'typing', room: v.room })) S.typingSent = now;
}

function onTyping(m) {
  if (!S.view || S.view.room !== m.room || typeof m.user !== 'string') return;
  if (m.user.toLowerCase() === S.me) return;
  S.typers.set(m.user, Date.now() + TYPING_SHOW_MS);
  renderTyping();
}

function renderTyping() {
  clearTimeout(S.typingTimer);
  const now = Date.now();
  let next = Infinity;
  for (const [u, t] of S.typers) {
    if (t <= now) S.typers.delete(u);
    else next = Math.min(next, t);
  }
  const n = [...S.typers.keys()].sort();
  $('typing').textContent = !n.length ? '' : n.length === 1 ? `${n[0]} is typing…`
    : n.length === 2 ? `${n[0]} and ${n[1]} are typing…` : `${n[0]}, ${n[1]} and ${n.length - 2} more are typing…`;
  if (next !== Infinity) S.typingTimer = setTimeout(renderTyping, next - now + 20);
}

/* ---- read receipts */
function markRead() {
  const v = S.view;
  if (!v || !v.room || S.newest === null || document.visibilityState !== 'visible') return;
  if ((S.readSent.get(v.room) || 0) >= S.newest) return;
  if (wsReady() && wsSend({ type: 'read', room: v.room, message_id: S.newest })) S.readSent.set(v.room, S.newest);
}

function onRead(m) {
  if (typeof m.room !== 'string' || typeof m.user !== 'string' || typeof m.message_id !== 'number') return;
  let r = S.reads.get(m.room);
  if (!r) S.reads.set(m.room, (r = new Map()));
  if ((r.get(m.user) || 0) < m.message_id) r.set(m.user, m.message_id);
  if (S.view && S.view.room === m.room) renderSeen();
}

function renderSeen() {
  const v = S.view;
  const seen = $('seen');
  if (!v || !v.room) return void (seen.textContent = '');
  let mine = null;
  for (const [id, li] of S.els) {
    if (li.classList.contains('mine') && (mine === null || id > mine)) mine = id;
  }
  const r = S.reads.get(v.room);
  if (mine === null || !r) return void (seen.textContent = '');
  const who = [...r].filter(([u, id]) => id >= mine && u.toLowerCase() !== S.me).map(([u]) => u).sort();
  seen.textContent = who.length ? `Seen by ${who.join(', ')}` : '';
  seen.dataset.messageId = String(mine);
}

/* ---- presence */
function renderOnline() {
  const names = [...S.online].sort((a, b) => (a === S.me ? -1 : b === S.me ? 1 : a.localeCompare(b)));
  $('online-count').textContent = names.length ? String(names.length) : '';
  const list = $('online-list');
  if (!names.length) {
    list.replaceChildren(el('li', { class: 'empty', text: S.welcomed ? 'Nobody' : '…' }));
    return;
  }
  list.replaceChildren(...names.map((u) => {
    const me = u.toLowerCase() === S.me;
    const li = el('li', {
      'data-testid': 'online-user',
      class: me ? 'me' : '',
      title: me ? 'you' : `Message ${u}`,
      onclick: me ? null : () => openDm(u),
    }, el('span', { class: 'dot' }), el('span', { class: 'name', text: me ? `${u} (you)` : u }));
    li.dataset.user = u;
    return li;
  }));
  if (S.view && S.view.dm) renderRoomInfo();
}

/* ---- live streams */
async function loadStreams() {
  try {
    const r = await api('GET', '/api/streams');
    S.streams.clear();
    for (const s of r.streams || []) if (s && s.user) S.streams.set(s.user, s);
    renderStreams();
  } catch { /* shown as empty */ }
}

async function loadBroadcastStatus() {
  try {
    const r = await api('GET', '/api/broadcast-status', undefined, { anonymous: true });
    if (typeof r.maxStreams === 'number') S.maxStreams = r.maxStreams;
    renderStreams();
  } catch { /* optional */ }
}

function onStreamStarted(m) {
  if (typeof m.user !== 'string') return;
  S.streams.set(m.user, { user: m.user, playbackId: m.playback_id, playbackUrl: m.playback_url, startedAt: Date.now() });
  renderStreams();
  if (m.user.toLowerCase() !== S.me) toast(`${m.user} is live now`, null);
}

function onStreamStopped(m) {
  if (typeof m.user !== 'string') return;
  const s = S.streams.get(m.user);
  if (s && (!m.playback_id || !s.playbackId || s.playbackId === m.playback_id)) S.streams.delete(m.user);
  renderStreams();
}

function renderStreams() {
  const list = $('streams');
  $('broadcast-status').textContent = S.maxStreams ? `${S.streams.size}/${S.maxStreams}` : '';
  if (!S.streams.size) {
    list.replaceChildren(el('li', { class: 'empty', text: 'Nobody is live' }));
    return;
  }
  list.replaceChildren(...[...S.streams.values()].sort((a, b) => a.user.localeCompare(b.user)).map((s) => {
    const href = safeUrl(s.playbackUrl);
    const li = el('li', { 'data-testid': 'stream-item' },
      el('span', { class: 'live', text: 'LIVE' }),
      el('span', { class: 'name', text: s.user }),
      href ? el('a', { href, target: '_blank', rel: 'noopener noreferrer', 'data-testid': 'stream-link', text: 'Watch (HLS)' }) : null);
    li.dataset.user = s.user;
    if (s.startedAt) li.title = `live since ${fmtTime(s.startedAt)}`;
    return li;
  }));
}

async function onGoLive() {
  const err = $('stream-error');
  err.textContent = '';
  if (S.keyShown && !window.confirm('A new key revokes the one you have. Continue?')) return;
  const btn = $('go-live-button');
  btn.disabled = true;
  try {
    const r = await api('POST', '/api/get-stream-key', {});
    $('stream-rtmp-url').textContent = r.rtmpUrl || '';
    $('stream-key').textContent = r.streamKey || '';
    $('stream-playback').textContent = r.playbackId || '';
    $('stream-playback').parentElement.hidden = !r.playbackId;
    $('stream-key-panel').hidden = false;
    S.keyShown = true;
    btn.textContent = 'New stream key';
  } catch (e) {
    err.textContent = e.message;
  } finally {
    btn.disabled = false;
  }
}

async function onCopyKey() {
  const key = $('stream-key').textContent;
  if (!key) return;
  try {
    await navigator.clipboard.writeText(key);
    $('stream-copy').textContent = 'Copied';
  } catch {
    window.getSelection().selectAllChildren($('stream-key')); /* no clipboard API on plain http */
    $('stream-copy').textContent = 'Selected';
  }
  setTimeout(() => { $('stream-copy').textContent = 'Copy key'; }, 2000);
}

function onHideKey() {
  $('stream-key-panel').hidden = true;
  $('stream-rtmp-url').textContent = '';
  $('stream-key').textContent = '';
  $('stream-playback').textContent = '';
}

/* ---- toast */
function toast(text, room) {
  const t = $('toast');
  t.textContent = text.length > 140 ? text.slice(0, 139) + '…' : text;
  t.dataset.room = room || '';
  t.hidden = false;
  clearTimeout(S.toastTimer);
  S.toastTimer = setTimeout(() => { t.hidden = true; }, 5000);
}

/* ---- start */
function bind() {
  $('tab-login').addEventListener('click', () => showTab('login'));
  $('tab-signup').addEventListener('click', () => showTab('signup'));
  $('login-form').addEventListener('submit', onLogin);
  $('signup-form').addEventListener('submit', onSignup);
  $('signup-username').addEventListener('input', onSignupUsername);
  $('logout-button').addEventListener('click', onLogout);
  $('create-room-form').addEventListener('submit', onCreateRoom);
  $('send-form').addEventListener('submit', onSend);
  $('message-input').addEventListener('input', onInputTyping);
  $('message-input').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $('send-form').requestSubmit();
    }
  });
  $('load-older').addEventListener('click', loadOlder);
  $('scroller').addEventListener('scroll', () => {
    if ($('scroller').scrollTop < 30 && S.more && !$('load-older').hidden) loadOlder();
  });
  $('go-live-button').addEventListener('click', onGoLive);
  $('stream-copy').addEventListener('click', onCopyKey);
  $('stream-key-hide').addEventListener('click', onHideKey);
  $('toast').addEventListener('click', () => {
    const room = $('toast').dataset.room;
    $('toast').hidden = true;
    if (room) openRoom(room);
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') { markRead(); reconnectNow(); }
  });
  window.addEventListener('online', reconnectNow);
}

async function start() {
  bind();
  const token = storeGet(TOKEN_KEY);
  if (!token) return showAuth('');
  S.token = token;
  try {
    const r = await api('GET', '/api/verify-token');
    enterApp(r.user || jwtUser(token), token);
  } catch (e) {
    if (!S.token) return; /* 401: already back at sign-in */
    if (e.status === 404) return void signOutLocal('Your account no longer exists.');
    /* server unreachable or busy: go on with the token, the socket retries */
    enterApp(jwtUser(token), token);
  }
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
else start();
})();
