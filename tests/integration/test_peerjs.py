"""The PeerJS dialect: HTTP API (banner, /id, /peers, CORS), the WebSocket
handshake (OPEN, ERROR, ID-TAKEN, same-token takeover), the relay with src
forced, the offline queue and EXPIRE, LEAVE, the alive timeout, the
concurrent limit, a custom mount path, and real npm peerjs clients pairing
over WebRTC through one instance and across two instances sharing Redis."""

import json
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from helpers import (
    RawWS,
    get_metrics,
    http_get,
    metric_value,
)

BANNER = {
    "name": "PeerJS Server",
    "description": "A server side element to broker connections between PeerJS clients.",
    "website": "https://peerjs.com/",
}
NO_PARAMS = "No id, token, or key supplied to websocket server"
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
PAIR_JS = Path(__file__).resolve().parent / "clients" / "peerjs_pair.js"
NODE_MODULES = Path(__file__).resolve().parents[1] / "node_modules"


def ws_path(pid, token, key="peerjs", path="/peerjs"):
    return "%s?key=%s&id=%s&token=%s&version=1.5.5" % (path, key, pid, token)


def connect(port, pid, token="tok", key="peerjs", path="/peerjs"):
    """Open a PeerJS socket (no answer read yet)."""
    return RawWS(port, path=ws_path(pid, token, key, path))


def register(port, pid, token="tok", path="/peerjs"):
    """Connect and expect OPEN as the first message."""
    ws = connect(port, pid, token, path=path)
    assert ws.recv_json() == {"type": "OPEN"}
    return ws


def assert_silent(ws, duration=0.4):
    try:
        f = ws.recv_message(timeout=duration)
    except socket.timeout:
        return
    raise AssertionError("unexpected frame: %r" % (f,))


def assert_refused(ws, mtype, msg):
    """One {type, payload:{msg}} message, then a close frame."""
    assert ws.recv_json() == {"type": mtype, "payload": {"msg": msg}}
    assert ws.expect_close() == 1000


def offer(dst, **extra):
    m = {"type": "OFFER", "dst": dst,
         "payload": {"sdp": {"type": "offer", "sdp": "v=0\r\n"}, "type": "data",
                     "connectionId": "dc_1", "label": "dc_1", "reliable": True,
                     "serialization": "binary"}}
    m.update(extra)
    return m


def candidate(dst, n):
    return {"type": "CANDIDATE", "dst": dst,
            "payload": {"candidate": {"candidate": "candidate:%d 1 udp 1 127.0.0.1 %d typ host" % (n, 5000 + n),
                                      "sdpMid": "0", "sdpMLineIndex": 0},
                        "type": "data", "connectionId": "dc_1"}}


def relayed(msg, src):
    """What the target must get for msg sent by src: exactly four fields."""
    return {"type": msg["type"], "src": src, "dst": msg["dst"], "payload": msg["payload"]}


def closed_within(ws, timeout):
    """Seconds until the server closes ws (close frame or EOF)."""
    start = time.monotonic()
    try:
        ws.expect_close(timeout=timeout)
    except AssertionError as e:
        if "TCP closed" not in str(e):
            raise
    return time.monotonic() - start


# ------------------------------------------------------------------- HTTP


def test_banner(server):
    r = http_get(server.port, "/")
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("application/json"), r
    assert r.json() == BANNER


def test_id_is_a_fresh_uuid_as_text_html(server):
    ids = set()
    for _ in range(20):
        r = http_get(server.port, "/peerjs/id?ts=123&version=1.5.5")
        assert r.status == 200, r
        assert r.headers["content-type"].startswith("text/html"), r
        pid = r.body.decode()
        assert UUID4.match(pid), pid
        ids.add(pid)
    assert len(ids) == 20
    # The key segment is not checked over HTTP (as the reference).
    r = http_get(server.port, "/another-key/id")
    assert r.status == 200 and UUID4.match(r.body.decode()), r


def test_id_is_usable_for_the_handshake(server):
    pid = http_get(server.port, "/peerjs/id").body.decode()
    ws = register(server.port, pid)
    ws.close()


def test_peers_needs_discovery(server):
    ws = register(server.port, "alice")
    try:
        r = http_get(server.port, "/peerjs/peers")
        assert r.status == 401, r
    finally:
        ws.close()


def test_peers_lists_registered_ids_with_discovery(server_factory):
    srv = server_factory("--signaling.peerjs_discovery=true")
    assert http_get(srv.port, "/peerjs/peers").json() == []
    a, b = register(srv.port, "alice"), register(srv.port, "bob")
    try:
        r = http_get(srv.port, "/peerjs/peers")
        assert r.status == 200, r
        assert r.headers["content-type"].startswith("application/json"), r
        assert sorted(r.json()) == ["alice", "bob"]
    finally:
        a.close()
        b.close()
    deadline = time.monotonic() + 3
    while http_get(srv.port, "/peerjs/peers").json() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert http_get(srv.port, "/peerjs/peers").json() == []


@pytest.mark.parametrize("path", ["/", "/peerjs/id", "/peerjs/peers"])
def test_cors_reflects_origin(server, path):
    r = http_get(server.port, path, headers={"Origin": "https://app.example"})
    assert r.headers.get("access-control-allow-origin") == "https://app.example", r
    assert "Origin" in r.headers.get("vary", ""), r
    r = http_get(server.port, path)
    assert "access-control-allow-origin" not in r.headers, r


def test_cors_preflight(server):
    r = http_get(server.port, "/peerjs/id", method="OPTIONS",
                 headers={"Origin": "https://app.example",
                          "Access-Control-Request-Method": "GET",
                          "Access-Control-Request-Headers": "x-custom"})
    assert r.status == 204, r
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert "GET" in r.headers["access-control-allow-methods"]
    assert r.headers["access-control-allow-headers"] == "x-custom"
    assert r.body == b""


@pytest.mark.parametrize("path", ["/peerjs/other", "/peerjs/id/x", "//id", "/peerjs/ids"])
def test_other_paths_are_not_peerjs(server, path):
    assert http_get(server.port, path).status == 404


def test_post_is_not_a_peerjs_route(server):
    assert http_get(server.port, "/peerjs/id", method="POST").status == 404


# -------------------------------------------------------------- handshake


@pytest.mark.parametrize("query", [
    "key=peerjs&id=a",
    "key=peerjs&token=t",
    "id=a&token=t",
    "key=peerjs&id=&token=t",
    "",
])
def test_missing_parameters(server, query):
    ws = RawWS(server.port, path="/peerjs" + ("?" + query if query else ""))
    try:
        assert_refused(ws, "ERROR", NO_PARAMS)
    finally:
        ws.close()


def test_invalid_key(server):
    ws = connect(server.port, "a", key="nope")
    try:
        assert_refused(ws, "ERROR", "Invalid key provided")
    finally:
        ws.close()


def test_configured_key(server_factory):
    srv = server_factory("--signaling.peerjs_key=secret")
    ws = connect(srv.port, "a", key="peerjs")
    assert_refused(ws, "ERROR", "Invalid key provided")
    ws.close()
    register_ws = connect(srv.port, "a", key="secret")
    assert register_ws.recv_json() == {"type": "OPEN"}
    register_ws.close()


def test_id_too_long(server):
    ws = connect(server.port, "x" * 129)
    try:
        assert_refused(ws, "ERROR", "ID is too long (at most 128 bytes)")
    finally:
        ws.close()
    ws = register(server.port, "y" * 128)
    ws.close()


def test_id_taken_by_another_token(server):
    a = register(server.port, "alice", "t1")
    other = connect(server.port, "alice", "t2")
    try:
        assert_refused(other, "ID-TAKEN", "ID is taken")
        # The holder keeps its id and its socket.
        b = register(server.port, "bob")
        b.send_json(offer("alice"))
        assert a.recv_json() == relayed(offer("alice"), "bob")
        b.close()
    finally:
        a.close()
        other.close()


def test_same_token_takes_over_without_open(server):
    old = register(server.port, "alice", "t1")
    watcher = register(server.port, "bob")
    new = connect(server.port, "alice", "t1")
    try:
        # The old socket is closed, without a LEAVE to anyone.
        assert closed_within(old, 3) < 3
        assert_silent(new, 0.3)  # no OPEN
        assert_silent(watcher, 0.1)
        # The id now reaches the new socket.
        watcher.send_json(offer("alice"))
        assert new.recv_json() == relayed(offer("alice"), "bob")
        # The old socket's close did not unregister the new one.
        other = connect(server.port, "alice", "t2")
        assert_refused(other, "ID-TAKEN", "ID is taken")
        other.close()
    finally:
        for ws in (old, watcher, new):
            ws.close()


def test_close_frees_the_id(server):
    a = register(server.port, "alice", "t1")
    a.send_close()
    a.expect_close(reply=False)
    a.close()
    deadline = time.monotonic() + 3
    while True:
        ws = connect(server.port, "alice", "t2")
        first = ws.recv_json()
        if first == {"type": "OPEN"} or time.monotonic() > deadline:
            break
        ws.close()
        time.sleep(0.05)
    assert first == {"type": "OPEN"}
    ws.close()


def test_other_ws_paths_are_not_peerjs(server):
    # /peerjs/ is not the PeerJS socket: nothing answers with OPEN there.
    ws = RawWS(server.port, path=ws_path("a", "t", path="/peerjs/"))
    try:
        assert_silent(ws, 0.3)
    finally:
        ws.close()


# ------------------------------------------------------------------ relay


@pytest.mark.parametrize("mtype", ["OFFER", "ANSWER", "CANDIDATE", "LEAVE"])
def test_relay_forces_src_and_drops_extra_fields(server, mtype):
    a, b = register(server.port, "alice"), register(server.port, "bob")
    try:
        msg = {"type": mtype, "src": "mallory", "dst": "bob",
               "payload": {"sdp": "x", "connectionId": "c1", "n": [1, 2.5, None]},
               "extra": "dropped", "connectionId": "c1"}
        a.send_json(msg)
        f = b.recv_message()
        got = json.loads(f.payload)
        assert got == {"type": mtype, "src": "alice", "dst": "bob", "payload": msg["payload"]}
        assert list(got) == ["type", "src", "dst", "payload"]
        assert_silent(a, 0.2)
    finally:
        a.close()
        b.close()


def test_relay_both_ways_and_metrics(server):
    a, b = register(server.port, "alice"), register(server.port, "bob")
    try:
        a.send_json(offer("bob"))
        assert b.recv_json() == relayed(offer("bob"), "alice")
        answer = {"type": "ANSWER", "dst": "alice",
                  "payload": {"sdp": {"type": "answer", "sdp": "v=0\r\n"}, "type": "data",
                              "connectionId": "dc_1"}}
        b.send_json(answer)
        assert a.recv_json() == relayed(answer, "bob")
        _, samples = get_metrics(server.port)
        assert metric_value(samples, "p2pmesh_signaling_relayed_total", dialect="peerjs") == 2
        assert metric_value(samples, "p2pmesh_signaling_joins_total") == 2
        assert metric_value(samples, "p2pmesh_signaling_peers") == 2
    finally:
        a.close()
        b.close()


def test_heartbeat_unknown_types_and_bad_json_are_quiet(server):
    a, b = register(server.port, "alice"), register(server.port, "bob")
    try:
        for text in ['{"type":"HEARTBEAT"}', '{"type":"WHATEVER","dst":"bob"}',
                     "not json", "[1,2]", '{"type":7}', '{"type":"OFFER"}']:
            a.send_text(text)
        assert_silent(a, 0.3)
        assert_silent(b, 0.1)
        a.send_json(offer("bob"))  # the socket is still open and registered
        assert b.recv_json() == relayed(offer("bob"), "alice")
    finally:
        a.close()
        b.close()


def test_offline_queue_replayed_in_order_after_open(server):
    a = register(server.port, "alice")
    try:
        sent = [offer("bob")] + [candidate("bob", i) for i in range(4)]
        for m in sent:
            a.send_json(m)
        time.sleep(0.1)
        b = connect(server.port, "bob")
        assert b.recv_json() == {"type": "OPEN"}
        for m in sent:
            assert b.recv_json() == relayed(m, "alice")
        assert_silent(b, 0.2)
        assert_silent(a, 0.1)  # delivered: no EXPIRE
        b.close()
    finally:
        a.close()


def test_expire_once_per_sender_and_target(server_factory):
    srv = server_factory("--signaling.peerjs_expire=300ms")
    a, c = register(srv.port, "alice"), register(srv.port, "carol")
    try:
        # A real client sends an offer then candidates over some time.
        for i, m in enumerate([offer("bob")] + [candidate("bob", i) for i in range(3)]):
            a.send_json(m)
            c.send_json(candidate("bob", i))
            time.sleep(0.05)
        assert a.recv_json(timeout=2) == {"type": "EXPIRE", "src": "bob", "dst": "alice"}
        assert c.recv_json(timeout=2) == {"type": "EXPIRE", "src": "bob", "dst": "carol"}
        assert_silent(a, 0.6)
        assert_silent(c, 0.1)
        # Nothing is left for bob.
        b = register(srv.port, "bob")
        assert_silent(b, 0.3)
        b.close()
    finally:
        a.close()
        c.close()


def test_leave_is_never_queued(server_factory):
    srv = server_factory("--signaling.peerjs_expire=300ms")
    a = register(srv.port, "alice")
    try:
        a.send_json({"type": "LEAVE", "dst": "bob"})
        time.sleep(0.1)
        b = register(srv.port, "bob")
        assert_silent(b, 0.3)
        b.close()
        assert_silent(a, 0.5)  # and no EXPIRE for it
    finally:
        a.close()


def test_leave_without_dst_unregisters_the_sender(server):
    a, b = register(server.port, "alice", "t1"), register(server.port, "bob")
    try:
        a.send_json({"type": "LEAVE"})
        time.sleep(0.1)
        # alice is free: another token may take it; bob's messages go there.
        a2 = register(server.port, "alice", "t2")
        b.send_json(offer("alice"))
        assert a2.recv_json() == relayed(offer("alice"), "bob")
        assert_silent(a, 0.2)
        a2.close()
    finally:
        a.close()
        b.close()


# --------------------------------------------------------- liveness, caps


def test_alive_timeout_drops_silent_clients(server_factory):
    srv = server_factory("--signaling.peerjs_alive_timeout=1s")
    beating, silent = register(srv.port, "beating"), register(srv.port, "silent")
    try:
        start = time.monotonic()
        while time.monotonic() - start < 1.6:
            beating.send_json({"type": "HEARTBEAT"})
            time.sleep(0.25)
        # silent was dropped after ~1 s; beating is still registered.
        waited = closed_within(silent, 1.5)
        assert time.monotonic() - start - waited >= 0.9
        b2 = connect(srv.port, "beating", "other")
        assert_refused(b2, "ID-TAKEN", "ID is taken")
        b2.close()
        # Once beating stops, it goes too, and its id is free again.
        assert closed_within(beating, 2.5) < 2.5
        s2 = register(srv.port, "silent", "new")
        s2.close()
    finally:
        beating.close()
        silent.close()


def test_concurrent_limit(server_factory):
    srv = server_factory("--signaling.peerjs_concurrent_limit=2")
    a, b = register(srv.port, "a", "ta"), register(srv.port, "b")
    c = connect(srv.port, "c")
    try:
        assert_refused(c, "ERROR", "Server has reached its concurrent user limit")
        # A takeover is not a new client: allowed at the limit.
        a2 = connect(srv.port, "a", "ta")
        assert closed_within(a, 3) < 3
        assert_silent(a2, 0.2)
        b.send_close()
        b.expect_close(reply=False)
        deadline = time.monotonic() + 3
        while True:
            c2 = connect(srv.port, "c")
            if c2.recv_json() == {"type": "OPEN"}:
                break
            c2.close()
            assert time.monotonic() < deadline, "c never accepted"
            time.sleep(0.05)
        c2.close()
        a2.close()
    finally:
        for ws in (a, b, c):
            ws.close()


# ------------------------------------------------------------- mount path


def test_custom_path(server_factory):
    srv = server_factory("--signaling.peerjs_path=/myapp")
    for p in ("/myapp", "/myapp/"):
        r = http_get(srv.port, p)
        assert r.status == 200 and r.json() == BANNER, (p, r)
    r = http_get(srv.port, "/myapp/peerjs/id")
    assert r.status == 200 and UUID4.match(r.body.decode()), r
    assert http_get(srv.port, "/myapp/peerjs/peers").status == 401
    # / is no longer PeerJS's: the mailbox dialect's plain answer
    assert http_get(srv.port, "/").body == b"Server OK!"
    assert http_get(srv.port, "/peerjs/id").status == 404
    # WebSocket at {path}peerjs and at /peerjs (proxies mount either).
    a = register(srv.port, "alice", path="/myapp/peerjs")
    b = register(srv.port, "bob", path="/peerjs")
    try:
        a.send_json(offer("bob"))
        assert b.recv_json() == relayed(offer("bob"), "alice")
    finally:
        a.close()
        b.close()


# ------------------------------------------------------ real peerjs client


def run_pair(port1, port2=None, timeout=15):
    if shutil.which("node") is None or not (NODE_MODULES / "peerjs").is_dir():
        pytest.skip("node or tests/node_modules (peerjs, @roamhq/wrtc, ws) missing")
    argv = ["node", str(PAIR_JS), "--port1", str(port1), "--timeout-ms", "8000"]
    if port2 is not None:
        argv += ["--port2", str(port2)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    return r


def test_real_peerjs_clients_pair(server):
    r = run_pair(server.port)
    assert r.returncode == 0, (r.stdout, r.stderr[-2000:])
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["got"]["a"] == "hello from b" and out["got"]["b"] == "hello from a", out
    _, samples = get_metrics(server.port)
    assert metric_value(samples, "p2pmesh_signaling_relayed_total", dialect="peerjs") >= 2


def wait_cluster_ready(*servers, timeout=10):
    deadline = time.monotonic() + timeout
    for srv in servers:
        while http_get(srv.port, "/ready").status != 200:
            assert time.monotonic() < deadline, "instance not ready: %s" % srv.stdout_text()[-2000:]
            time.sleep(0.05)


def test_cluster_relay_and_id_taken_across_instances(server_factory, redis_server):
    s1 = server_factory("--redis.url=" + redis_server.url, "--signaling.peerjs_discovery=true")
    s2 = server_factory("--redis.url=" + redis_server.url)
    wait_cluster_ready(s1, s2)
    a = register(s1.port, "alice", "ta")
    b = register(s2.port, "bob", "tb")
    try:
        deadline = time.monotonic() + 5
        while "bob" not in http_get(s1.port, "/peerjs/peers").json():
            assert time.monotonic() < deadline, "s1 never heard of bob"
            time.sleep(0.05)
        a.send_json(offer("bob"))
        assert b.recv_json() == relayed(offer("bob"), "alice")
        b.send_json(candidate("alice", 1))
        assert a.recv_json() == relayed(candidate("alice", 1), "bob")
        taken = connect(s1.port, "bob", "other")
        assert_refused(taken, "ID-TAKEN", "ID is taken")
        taken.close()
    finally:
        a.close()
        b.close()


def test_cluster_same_token_takeover_across_instances(server_factory, redis_server):
    s1 = server_factory("--redis.url=" + redis_server.url)
    s2 = server_factory("--redis.url=" + redis_server.url, "--signaling.peerjs_discovery=true")
    wait_cluster_ready(s1, s2)
    old = register(s1.port, "alice", "ta")
    try:
        deadline = time.monotonic() + 5
        while "alice" not in http_get(s2.port, "/peerjs/peers").json():
            assert time.monotonic() < deadline, "s2 never heard of alice"
            time.sleep(0.05)
        new = connect(s2.port, "alice", "ta")
        assert_silent(new, 0.3)  # taken over: no OPEN
        assert closed_within(old, 3) < 3  # the holder on s1 is closed
        bob = register(s1.port, "bob")
        bob.send_json(offer("alice"))
        assert new.recv_json(timeout=3) == relayed(offer("alice"), "bob")
        bob.close()
        new.close()
    finally:
        old.close()


def test_real_peerjs_clients_pair_across_instances(server_factory, redis_server):
    s1 = server_factory("--redis.url=" + redis_server.url)
    s2 = server_factory("--redis.url=" + redis_server.url)
    wait_cluster_ready(s1, s2)
    r = run_pair(s1.port, s2.port)
    assert r.returncode == 0, (r.stdout, r.stderr[-2000:], s1.stdout_text()[-3000:],
                               s2.stdout_text()[-3000:])
