#!/usr/bin/env node
/*
 * Two real y-webrtc clients (npm y-webrtc 10.3 + yjs) syncing a Y.Text over
 * a real WebRTC data channel (@roamhq/wrtc), signaled through p2pmesh.
 *
 *   node yjs_sync.js <signaling url for doc A> [<signaling url for doc B>]
 *        [--room=NAME] [--timeout-ms=15000]
 *
 * Doc A's child starts first; once the server echoes A's own `announce`
 * (A is in the topic) doc B's child starts. When both report a WebRTC
 * connection that is connected and synced, A inserts text that B must see,
 * then B inserts text that A must see.
 *
 * Exit 0 with a summary JSON line on stdout when both texts reached the other
 * doc. Exit 1 with a message on stderr otherwise (overall timeout, 15 s by
 * default), including each child's signaling trace (every publish sent and
 * received, with data.type / signal type / from / to / clients, times in ms
 * from the parent's start). YJS_SYNC_TRACE=1 adds the trace to the summary.
 *
 * Why A first: started together, each doc gets the other's announce and both
 * offer; y-webrtc 10.3's glare handling then signals the winning offer into
 * the other side's initiator simple-peer and the pair can hang for good
 * (seen ~1 run in 20, with every signaling message delivered by the server).
 *
 * Why two child processes (one per Y.Doc):
 *  - y-webrtc keeps module-global state: one `rooms` map (a second provider
 *    for the same room in one process throws "A Yjs Doc connected to room
 *    ... already exists!") and one SignalingConn per URL shared by all
 *    providers of the process.
 *  - y-webrtc also syncs docs of the same room over lib0's BroadcastChannel
 *    (Node 20 has a global BroadcastChannel, in-process only). In one
 *    process the two docs would sync through it without any server. Two
 *    processes cannot share a BroadcastChannel; on top of that each child
 *    replaces BroadcastChannel with a no-op before loading lib0 (lib0 picks
 *    the class when it is first imported), so the only path between the
 *    docs is simple-peer/WebRTC, whose offers/answers/candidates travel as
 *    y-webrtc `publish` messages through the signaling server(s). The child
 *    reports its y-webrtc room's bcConns (must stay empty) and only counts
 *    a WebRTC connection that is both `connected` and `synced`.
 *
 * Node shims:
 *  - globalThis.WebSocket = require('ws'): lib0/websocket (y-webrtc's
 *    signaling client) calls `new WebSocket(url)`, Node 20 has none
 *    (yjs/y-webrtc issue #28).
 *  - peerOpts.wrtc = require('@roamhq/wrtc'): simple-peer needs an
 *    RTCPeerConnection implementation outside a browser.
 *  - peerOpts.config.iceServers = []: simple-peer's default would ask
 *    Google's STUN servers; host candidates suffice on one machine and the
 *    test must not reach the internet.
 *  - stdout of the children goes to stderr; keep LOG unset (lib0 logs every
 *    module when LOG is set, even to "").
 */
'use strict'

const path = require('path')
const { fork } = require('child_process')

function parseArgs (argv) {
  const out = { urls: [], room: null, timeoutMs: 15000, child: false }
  for (const a of argv) {
    if (a === '--child') out.child = true
    else if (a.startsWith('--room=')) out.room = a.slice(7)
    else if (a.startsWith('--timeout-ms=')) out.timeoutMs = parseInt(a.slice(13), 10)
    else out.urls.push(a)
  }
  return out
}

/* ------------------------------------------------------------------ child */

let T0 = Date.now()

async function runChild (url, room, name) {
  // Shims first: lib0 reads both globals when it is loaded / connects.
  globalThis.WebSocket = require('ws')
  globalThis.BroadcastChannel = class NoBroadcastChannel {
    constructor (n) { this.name = n; this.onmessage = null }
    postMessage () {}
    close () {}
    addEventListener () {}
    removeEventListener () {}
  }
  const Y = require('yjs')
  const { WebrtcProvider } = require('y-webrtc')
  const wrtc = require('@roamhq/wrtc')

  const send = (m) => { if (process.connected) process.send(Object.assign({ from: name }, m)) }
  const doc = new Y.Doc()
  const text = doc.getText('shared')
  const provider = new WebrtcProvider(room, doc, {
    signaling: [url],
    filterBcConns: true,
    peerOpts: { wrtc, config: { iceServers: [] } }
  })
  text.observe(() => send({ ev: 'text', text: text.toString() }))

  // A trace of the signaling traffic, printed by the parent on failure.
  const t0 = T0 // the parent's start: both children's times share one origin
  const trace = []
  const short = (id) => typeof id === 'string' ? id.slice(0, 4) : id
  const note = (dir, m) => {
    if (trace.length >= 200) return
    const d = (m && typeof m.data === 'object' && m.data) || {}
    const sig = d.signal || {}
    trace.push([Date.now() - t0, dir, m && m.type, d.type, sig.type || (sig.candidate ? 'cand' : undefined),
      short(d.from), short(d.to), m && m.clients].filter(x => x !== undefined).join(' '))
  }
  let subscribed = false // the server echoed our own announce: we are in the topic
  for (const sc of provider.signalingConns) {
    const orig = sc.send.bind(sc)
    sc.send = (m) => { note('>', m); return orig(m) }
    sc.on('message', (m) => {
      note('<', m)
      const r = provider.room
      if (m && m.type === 'publish' && m.data && r && m.data.type === 'announce' && m.data.from === r.peerId) subscribed = true
    })
    sc.on('connect', () => trace.push((Date.now() - t0) + ' ws connected'))
    sc.on('disconnect', () => trace.push((Date.now() - t0) + ' ws disconnected'))
  }

  const state = () => {
    const r = provider.room
    const conns = r ? [...r.webrtcConns.values()] : []
    return {
      webrtcPeers: conns.length,
      webrtcReady: conns.filter(c => c.connected && c.synced).length,
      bcPeers: r ? r.bcConns.size : -1,
      signalingConnected: provider.signalingConns.some(c => c.connected),
      subscribed
    }
  }
  let lastState = ''
  const poll = setInterval(() => {
    const s = JSON.stringify(state())
    if (s !== lastState) {
      lastState = s
      send(Object.assign({ ev: 'state' }, state()))
    }
  }, 50)

  process.on('message', (m) => {
    if (m.cmd === 'dump') {
      const r = provider.room
      send({ ev: 'dump', peerId: r && r.peerId, trace })
    } else if (m.cmd === 'insert') {
      text.insert(text.length, m.text)
    } else if (m.cmd === 'quit') {
      clearInterval(poll)
      try { provider.destroy(); doc.destroy() } catch (e) {}
      setTimeout(() => process.exit(0), 100)
    }
  })
  process.on('disconnect', () => process.exit(0))
  send({ ev: 'started' })
}

/* ----------------------------------------------------------------- parent */

function runParent (opts) {
  if (opts.urls.length < 1 || opts.urls.length > 2) {
    process.stderr.write('usage: yjs_sync.js <ws url A> [<ws url B>] [--room=NAME] [--timeout-ms=N]\n')
    process.exit(2)
  }
  const urlA = opts.urls[0]
  const urlB = opts.urls[1] || urlA
  const room = opts.room || 'p2pmesh-yjs-' + process.pid + '-' + Date.now()
  const self = path.resolve(__filename)
  const kids = {}
  const st = { A: { text: '', state: {} }, B: { text: '', state: {} } }
  let stage = 'waiting for A to be subscribed'
  let done = false
  let startB = null

  const finish = (code, msg) => {
    if (done) return
    done = true
    clearTimeout(timer)
    if (code === 0) process.stdout.write(msg + '\n')
    else process.stderr.write('yjs_sync: ' + msg + '\n')
    for (const k of Object.values(kids)) {
      try { k.send({ cmd: 'quit' }) } catch (e) {}
    }
    setTimeout(() => {
      for (const k of Object.values(kids)) { try { k.kill('SIGKILL') } catch (e) {} }
      process.exit(code)
    }, 400)
  }

  const dumps = {}
  const timer = setTimeout(() => {
    // ask both children for their signaling trace, then fail with it
    for (const k of Object.values(kids)) { try { k.send({ cmd: 'dump' }) } catch (e) {} }
    setTimeout(() => finish(1,
      'timeout after ' + opts.timeoutMs + ' ms ' + stage + '; A=' + JSON.stringify(st.A) +
      ' B=' + JSON.stringify(st.B) + '\nsignaling trace (ms dir type data.type signal from to clients):\n' +
      Object.entries(dumps).map(([n, d]) => n + ' (peerId ' + d.peerId + '):\n  ' + d.trace.join('\n  ')).join('\n')),
    300)
  }, opts.timeoutMs)

  const TA = 'hello from A;'
  const TB = 'hello from B;'
  const ready = (s) => s.webrtcReady >= 1 && s.bcPeers === 0

  const step = () => {
    if (done) return
    // B starts once A's subscription is in place (A got its own announce
    // back). Started together, each would get the other's announce and
    // both would make an offer; y-webrtc 10.3's glare handling then feeds
    // the winning offer into the losing side's initiator simple-peer and
    // the pair can hang forever (observed ~1 run in 20, every signaling
    // message delivered). Sequential start: only A offers.
    if (stage === 'waiting for A to be subscribed' && st.A.state.subscribed) {
      stage = 'waiting for both docs to connect over WebRTC'
      startB()
    }
    if (stage.startsWith('waiting for both') && ready(st.A.state) && ready(st.B.state)) {
      stage = 'waiting for A\'s insert to reach B'
      kids.A.send({ cmd: 'insert', text: TA })
    }
    if (stage.startsWith('waiting for A') && st.B.text.includes(TA)) {
      stage = 'waiting for B\'s insert to reach A'
      kids.B.send({ cmd: 'insert', text: TB })
    }
    if (stage.startsWith('waiting for B') && st.A.text.includes(TB)) {
      if (st.A.text !== st.B.text) return // B's own view settles with its observe
      if (st.A.state.bcPeers !== 0 || st.B.state.bcPeers !== 0) {
        return finish(1, 'BroadcastChannel peers seen: ' + JSON.stringify(st))
      }
      if (process.env.YJS_SYNC_TRACE) {
        for (const k of Object.values(kids)) { try { k.send({ cmd: 'dump' }) } catch (e) {} }
        stage = 'dumping'
        return setTimeout(() => finish(0, JSON.stringify({ ok: true, room, A: st.A, B: st.B, trace: dumps })), 300)
      }
      finish(0, JSON.stringify({ ok: true, room, A: st.A, B: st.B }))
    }
  }

  const startChild = (name, url) => {
    const k = fork(self, ['--child', url, '--room=' + room, '--name=' + name, '--t0=' + T0], {
      // children write only diagnostics: to stderr, stdout is the summary
      stdio: ['ignore', 2, 2, 'ipc']
    })
    kids[name] = k
    k.on('message', (m) => {
      if (m.ev === 'dump') { dumps[name] = m; return }
      if (m.ev === 'text') st[name].text = m.text
      else if (m.ev === 'state') {
        st[name].state = { webrtcPeers: m.webrtcPeers, webrtcReady: m.webrtcReady, bcPeers: m.bcPeers, signalingConnected: m.signalingConnected, subscribed: m.subscribed }
      }
      step()
    })
    k.on('exit', (code, sig) => {
      if (!done) finish(1, 'child ' + name + ' exited early (' + (sig || code) + ') ' + stage)
    })
  }
  startChild('A', urlA)
  startB = () => startChild('B', urlB)
}

/* ------------------------------------------------------------------- main */

const args = process.argv.slice(2)
if (args[0] === '--child') {
  const name = (args.find(a => a.startsWith('--name=')) || '--name=?').slice(7)
  const t0arg = args.find(a => a.startsWith('--t0='))
  if (t0arg) T0 = parseInt(t0arg.slice(5), 10)
  const o = parseArgs(args.filter(a => !a.startsWith('--name=') && !a.startsWith('--t0=')))
  runChild(o.urls[0], o.room, name).catch((e) => {
    process.stderr.write('child ' + name + ': ' + (e && e.stack || e) + '\n')
    process.exit(1)
  })
} else {
  runParent(parseArgs(args))
}
