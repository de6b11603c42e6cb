#!/usr/bin/env node
/*
 * Two real PeerJS clients (npm "peerjs") pair through p2pmesh and talk
 * over a WebRTC DataConnection (RTCPeerConnection from @roamhq/wrtc, ICE
 * on loopback only: no STUN/TURN servers).
 *
 *   node peerjs_pair.js --port1 P [--port2 P2] [--path /] [--key peerjs]
 *                       [--timeout-ms 8000]
 *
 * Peer A uses the server on port1, peer B the one on port2 (default:
 * port1). A gets its id from GET {path}{key}/id, B asks for a fixed id;
 * A connects to B, each sends one message and waits for the other's.
 * Exit 0 when both arrived, 1 on any error or at the timeout. One line
 * of JSON on stdout tells what happened.
 */
"use strict";

const wrtc = require("@roamhq/wrtc");
const WebSocket = require("ws");

/*
 * Shims, set before peerjs is loaded (it probes WebRTC support while
 * loading). Node 20 has fetch but neither a global WebSocket nor the
 * WebRTC classes; peerjs uses these as browser globals:
 * - WebSocket: the signaling socket (Socket.start);
 * - RTCPeerConnection, RTCSessionDescription, RTCIceCandidate: the
 *   negotiator (the support probe needs RTCPeerConnection, and answers
 *   and candidates are built with the other two).
 * No window/navigator/location shim is needed: peerjs reads
 * navigator only behind a typeof check, location only when "secure" is
 * not given (we pass secure: false), window only when host is "/".
 */
globalThis.WebSocket = WebSocket;
globalThis.RTCPeerConnection = wrtc.RTCPeerConnection;
globalThis.RTCSessionDescription = wrtc.RTCSessionDescription;
globalThis.RTCIceCandidate = wrtc.RTCIceCandidate;

const { Peer } = require("peerjs");

function arg(name, dflt) {
    const i = process.argv.indexOf("--" + name);
    return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

const port1 = Number(arg("port1"));
const port2 = Number(arg("port2", String(port1)));
const path = arg("path", "/");
const key = arg("key", "peerjs");
const timeoutMs = Number(arg("timeout-ms", "8000"));
const bId = "pair-b-" + Math.random().toString(36).slice(2, 10);

const peers = [];
let finished = false;

function finish(code, what) {
    if (finished) return;
    finished = true;
    process.stdout.write(JSON.stringify(Object.assign({ ok: code === 0 }, what)) + "\n");
    for (const p of peers) {
        try {
            p.destroy();
        } catch (e) {
            /* already gone */
        }
    }
    /* wrtc keeps native threads alive: leave explicitly. */
    setTimeout(() => process.exit(code), 100);
}

function makePeer(id, port) {
    const opts = {
        host: "127.0.0.1",
        port: port,
        path: path,
        key: key,
        secure: false,
        debug: 0,
        config: { iceServers: [] },
    };
    const p = id ? new Peer(id, opts) : new Peer(opts);
    p.on("error", (err) => finish(1, { error: "peer error: " + err.type + ": " + err.message }));
    peers.push(p);
    return p;
}

setTimeout(() => finish(1, { error: "timeout after " + timeoutMs + " ms", got }), timeoutMs);

const got = {};
function received(who, data) {
    got[who] = data;
    if (got.a === "hello from b" && got.b === "hello from a") finish(0, { got });
}

/* B first, so A's offer finds it registered. */
const b = makePeer(bId, port2);
b.on("connection", (conn) => {
    conn.on("data", (d) => received("b", d));
    conn.on("open", () => conn.send("hello from b"));
});
b.on("open", (id) => {
    if (id !== bId) finish(1, { error: "B opened as " + id });
    const a = makePeer(null, port1);
    a.on("open", (aId) => {
        got.aId = aId;
        const conn = a.connect(bId, { reliable: true });
        conn.on("open", () => conn.send("hello from a"));
        conn.on("data", (d) => received("a", d));
        conn.on("error", (e) => finish(1, { error: "A connection: " + e }));
    });
});
