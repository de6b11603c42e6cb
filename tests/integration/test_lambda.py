"""`p2pmesh --role=lambda` against the emulator (lambda_emu.py).

The binary runs as a Lambda custom runtime: it pulls API Gateway WebSocket
events from the emulated Runtime API, keeps connections in Redis or in the
emulated DynamoDB table, and talks to peers through the emulated
@connections endpoint, which checks every SigV4 signature with botocore.

Every reply to a peer is a POST to @connections and every such POST
finishes before the invocation's response is posted, so after `invoke`
returns the frames are already recorded: a peer that got nothing got
nothing.  Each scenario runs over both stores where the store matters.
"""

import hashlib
import hmac
import json
import base64
import subprocess
import threading
import time
from pathlib import Path

import pytest

import helpers
from helpers import clean_env, ids_of
from lambda_emu import (Emulator, connect_event, disconnect_event, message_event, new_connection_id,
                        now_ms, plain)

TABLE = "p2pmesh-connections"
JWT_SECRET = "lambda-test-secret"


def err(message):
    return {"type": "error", "message": message}


# ================================================================ runtime


class Runtime(helpers.Process):
    """One `p2pmesh --role=lambda` process bound to an Emulator."""

    def __init__(self, workdir, emu, flags=(), env=None, wait=True, apigw=True, timeout=5.0):
        self.emu = emu
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.flags = list(flags)
        if apigw and not any(f.startswith("--signaling.apigw_endpoint=") for f in self.flags):
            self.flags.append("--signaling.apigw_endpoint=" + emu.apigw_url)
        self.argv = [helpers.BIN, "--role=lambda"] + self.flags
        self.stdout_path = self.workdir / "stdout.log"
        self.stderr_path = self.workdir / "stderr.log"
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        full_env = dict(emu.env())
        full_env.update(env or {})
        self.proc = emu.popen(self.argv, env=clean_env(full_env), stdin=subprocess.DEVNULL,
                              stdout=self._out, stderr=self._err)
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.emu.wait_ready(0.05):
                return
            if self.proc.poll() is not None:
                break
        raise AssertionError("runtime never called /next (exit %r)\ninit error: %r\nstderr: %s\nstdout: %s"
                             % (self.proc.poll(), self.emu.init_error, self.stderr_text()[-2000:],
                                self.stdout_text()[-2000:]))

    def invoke(self, event, timeout=3.0, **kw):
        r = self.emu.invoke(event, timeout=timeout, **kw)
        assert r.kind != "timeout", "no answer within %.1fs (alive=%s)\nstderr: %s\nstdout: %s" % (
            timeout, self.proc.poll() is None, self.stderr_text()[-2000:], self.stdout_text()[-3000:])
        return r


class Conn:
    """One emulated API Gateway WebSocket connection."""

    def __init__(self, rt, cid=None, emu=None):
        self.rt = rt
        self.emu = emu or rt.emu  # where this connection's frames land
        self.cid = cid or new_connection_id()
        self.seen = 0

    def connect(self, query=None, headers=None, status=200):
        r = self.rt.invoke(connect_event(self.cid, query=query, headers=headers))
        assert r.kind == "response", r
        body = r.json()
        if status is not None:
            assert body.get("statusCode") == status, body
        return body

    def send(self, msg, **kw):
        r = self.rt.invoke(message_event(self.cid, msg if isinstance(msg, str) else json.dumps(msg)), **kw)
        assert r.kind == "response", r
        assert r.json().get("statusCode") == 200, r
        return r

    def join(self, peer_id):
        self.send({"type": "join", "peerId": peer_id})
        boot = self.recv()
        assert boot.get("type") == "bootstrap_peers", boot
        return boot

    def disconnect(self, code=1001):
        r = self.rt.invoke(disconnect_event(self.cid, code))
        assert r.kind == "response", r
        return r

    def recv(self, timeout=1.0):
        """The next frame posted to this connection (decoded)."""
        got = self.emu.wait_frames(self.cid, self.seen + 1, timeout)
        self.seen += 1
        return got[-1]

    def recv_raw(self, timeout=1.0):
        self.emu.wait_frames(self.cid, self.seen + 1, timeout)
        self.seen += 1
        return self.emu.frames[self.cid][self.seen - 1]

    def silent(self):
        """Nothing new was posted to this connection."""
        new = self.emu.frames.get(self.cid, [])[self.seen:]
        assert not new, "%s got unexpected frames: %r" % (self.cid, new)


class Store:
    def __init__(self, kind, flags, redis=None):
        self.kind = kind
        self.flags = list(flags)
        self.redis = redis

    def __repr__(self):
        return self.kind


def ddb_flags(emu, table=TABLE):
    return ["--lambda.dynamodb_table=" + table, "--lambda.dynamodb_endpoint=" + emu.dynamodb_url]


# ================================================================ fixtures


@pytest.fixture
def emu():
    e = Emulator()
    yield e
    e.close()


@pytest.fixture(params=["redis", "dynamodb"])
def store(request, emu):
    if request.param == "redis":
        r = request.getfixturevalue("redis_server")
        return Store("redis", ["--redis.url=" + r.url], r)
    return Store("dynamodb", ddb_flags(emu))


@pytest.fixture
def ddb_store(emu):
    return Store("dynamodb", ddb_flags(emu))


@pytest.fixture
def runtime_factory(tmp_path, emu):
    """start(*flags, env=None, wait=True, emu=None) -> Runtime.

    At teardown every runtime still running must exit 0 on SIGTERM and
    have written well-formed JSON log lines, the default emulator must have
    seen no bad signature, no protocol violation, and no DynamoDB Scan."""
    started = []

    def start(*flags, env=None, wait=True, emu_=None, apigw=True):
        rt = Runtime(tmp_path / ("rt%d" % len(started)), emu_ or emu, flags, env=env, wait=wait, apigw=apigw)
        started.append(rt)
        return rt

    start.checks = {"sig": True}
    yield start
    errors = []
    for rt in started:
        alive = rt.proc.poll() is None
        code = rt.stop()
        if alive and code != 0:
            errors.append("runtime exited %r on SIGTERM; stderr: %s" % (code, rt.stderr_text()[-1000:]))
        try:
            rt.check_log_format()
        except AssertionError as e:
            errors.append(str(e))
    if start.checks["sig"]:
        if emu.sig_failures:
            errors.append("signatures refused: %r" % emu.sig_failures[:3])
    if emu.violations:
        errors.append("protocol violations: %r" % emu.violations[:5])
    if emu.scans:
        errors.append("the runtime scanned the DynamoDB table %d times" % emu.scans)
    assert not errors, "\n".join(errors)


@pytest.fixture
def rt(store, runtime_factory):
    """A signaling runtime over the parametrized store (store first, so the
    runtime is stopped before its Redis goes away)."""
    return runtime_factory(*store.flags)


def joined(rt, *peer_ids, query=None):
    """Connect and join peer_ids in order, draining every announcement."""
    conns = []
    for pid in peer_ids:
        c = Conn(rt)
        c.connect(query=query)
        boot = c.join(pid)
        if len(conns) <= 5:
            assert sorted(ids_of(boot)) == sorted(o.peer_id for o in conns), boot
        for o in conns:
            assert o.recv() == {"type": "peer_joined", "peerId": pid}
        c.peer_id = pid
        conns.append(c)
    return conns


# ================================================================ $connect


def test_connect_accepted(rt):
    c = Conn(rt)
    assert c.connect() == {"statusCode": 200}
    c.silent()  # nothing posted to a connection from its own $connect


def test_origin_allow(runtime_factory, ddb_store):
    rt = runtime_factory(*ddb_store.flags, "--origin.allow=https://good.example")
    assert Conn(rt).connect(headers={"Origin": "https://evil.example"}, status=403)["statusCode"] == 403
    Conn(rt).connect(headers={"Origin": "https://good.example"})
    Conn(rt).connect(headers={"origin": "https://good.example"})  # header names in any case
    Conn(rt).connect()  # no Origin (not a browser): allowed, as in --role=signaling


def test_subprotocol_echoed(runtime_factory, ddb_store):
    rt = runtime_factory(*ddb_store.flags)
    body = Conn(rt).connect(headers={"Sec-WebSocket-Protocol": "p2pmesh.v1, other"})
    assert body["statusCode"] == 200
    assert body.get("headers") == {"Sec-WebSocket-Protocol": "p2pmesh.v1"}, body
    body = Conn(rt).connect()
    assert "Sec-WebSocket-Protocol" not in (body.get("headers") or {}), body


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims, key=JWT_SECRET):
    signing_input = "%s.%s" % (b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()),
                               b64url(json.dumps(claims).encode()))
    mac = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(mac)


def test_jwt_on_connect(runtime_factory, ddb_store):
    rt = runtime_factory(*ddb_store.flags, "--signaling.auth=jwt", "--jwt.secret=" + JWT_SECRET)
    good = make_jwt({"sub": "a1a1", "exp": int(time.time()) + 600})
    assert Conn(rt).connect(status=None)["statusCode"] == 401
    assert Conn(rt).connect(query={"token": "x.y.z"}, status=None)["statusCode"] == 401
    forged = make_jwt({"sub": "a1a1", "exp": int(time.time()) + 600}, key="other")
    assert Conn(rt).connect(query={"token": forged}, status=None)["statusCode"] == 401
    expired = make_jwt({"sub": "a1a1", "exp": int(time.time()) - 600})
    assert Conn(rt).connect(query={"token": expired}, status=None)["statusCode"] == 401
    c = Conn(rt)
    c.connect(query={"token": good})
    c.send({"type": "join", "peerId": "b2b2"})
    assert c.recv() == err("peerId does not match your token.")
    boot = c.join("a1a1")
    assert ids_of(boot) == []
    assert good.split(".")[2] not in rt.stdout_text() + rt.stderr_text()


# =================================================================== join


def test_join_bootstrap_and_announce(rt):
    a, b = Conn(rt), Conn(rt)
    a.connect()
    a.send({"type": "join", "peerId": "aa01"})
    assert a.recv() == {"type": "bootstrap_peers", "peers": []}
    b.connect()
    r = b.send({"type": "join", "peerId": "bb02"})
    assert r.json() == {"statusCode": 200}
    boot = b.recv()
    assert boot["type"] == "bootstrap_peers" and ids_of(boot) == ["aa01"], boot
    assert a.recv() == {"type": "peer_joined", "peerId": "bb02"}
    a.silent()
    b.silent()


def test_join_without_peer_id(rt):
    a, w = Conn(rt), joined(rt, "ee05")[0]
    a.connect()
    a.send({"type": "join"})
    assert a.recv() == err("peerId is required for join message.")
    w.silent()


def test_rooms_are_separate(rt):
    a, = joined(rt, "aa01", query={"room": "r1"})
    b, = joined(rt, "bb02", query={"room": "r2"})
    a.silent()
    c = Conn(rt)
    c.connect(query={"room": "r1"})
    assert ids_of(c.join("cc03")) == ["aa01"]
    assert a.recv() == {"type": "peer_joined", "peerId": "cc03"}
    b.silent()
    b.send({"type": "signal", "to": "aa01", "signal": {}})
    assert b.recv() == err("Peer aa01 not found.")
    a.silent()
    # the default room "" is a room of its own
    d, = joined(rt, "dd04")
    a.silent()
    b.silent()


def test_bootstrap_follows_store_pages(runtime_factory, ddb_store, emu):
    """With DynamoDB pages of 2 items the runtime must follow LastEvaluatedKey
    for the bootstrap list and for the peer_joined fan-out."""
    rt = runtime_factory(*ddb_store.flags)
    emu.page_size = 2
    conns = joined(rt, "a1", "a2", "a3", "a4", "a5")
    last = Conn(rt)
    last.connect()
    boot = last.join("a6")
    assert sorted(ids_of(boot)) == ["a1", "a2", "a3", "a4", "a5"], boot
    for c in conns:
        assert c.recv() == {"type": "peer_joined", "peerId": "a6"}
    queries = [b for op, b in emu.ddb_ops if op == "Query"]
    assert any("ExclusiveStartKey" in q for q in queries), queries


# ================================================================= relays


def test_signal_relay_overwrites_from(rt, emu):
    a, b = joined(rt, "aa01", "bb02")
    raw = '{"type":"signal","to":"bb02","from":"spoofed","signal":{"type":"offer","sdp":"x"}}'
    a.send(raw)
    assert b.recv_raw() == raw.replace('"from":"spoofed"', '"from":"aa01"').encode()
    a.silent()
    raw2 = '{"type":"offer","to":"bb02","sdp":"v=0","n":2.50}'
    a.send(raw2)
    got = json.loads(b.recv_raw())
    assert got == {"type": "offer", "to": "bb02", "sdp": "v=0", "n": 2.5, "from": "aa01"}, got
    # the wire path: "@connections" raw, the id percent-encoded ('=' -> %3D)
    paths = [p for m, p, c in emu.api_requests if m == "POST" and c == b.cid]
    assert paths and all(p == "/prod/@connections/" + b.cid.replace("=", "%3D") for p in paths), paths


@pytest.mark.parametrize("msg,reply", [
    ({"type": "signal", "to": "zz99", "signal": {}}, "Peer zz99 not found."),
    ({"type": "batched_signals", "to": "zz99", "signals": []}, "Peer zz99 not found for batched signals."),
    ({"type": "signal", "signal": {}}, "'to' field is required for signal."),
    ("{not json", "Invalid JSON message format."),
    ({"type": "foo"}, "Unknown message type: foo"),
])
def test_error_replies(rt, msg, reply):
    a, b = joined(rt, "aa01", "bb02")
    a.send(msg if isinstance(msg, str) else json.dumps(msg))
    assert a.recv() == err(reply)
    a.silent()
    b.silent()


def test_relay_before_join(rt):
    b, = joined(rt, "bb02")
    x = Conn(rt)
    x.connect()
    x.send({"type": "signal", "to": "bb02", "signal": {}})
    assert x.recv() == err("You must join before sending signal.")
    b.silent()


def test_ping_pong(rt):
    x = Conn(rt)
    x.connect()
    x.send({"type": "ping", "timestamp": 123})  # before joining, too
    assert x.recv() == {"type": "pong", "timestamp": 123}
    x.join("aa01")
    x.send({"type": "ping", "timestamp": 1700000000123})
    assert x.recv() == {"type": "pong", "timestamp": 1700000000123}


# ======================================================== leave, takeover


def test_leave(rt, emu):
    a, b = joined(rt, "aa01", "bb02")
    a.send({"type": "leave", "peerId": "aa01"})
    assert b.recv() == {"type": "peer_left", "peerId": "aa01"}
    assert a.cid in emu.deleted
    b.silent()
    b.send({"type": "signal", "to": "aa01", "signal": {}})
    assert b.recv() == err("Peer aa01 not found.")
    # API Gateway then reports the close; nobody hears of aa01 twice
    a.disconnect(1000)
    b.silent()


def test_takeover(rt, emu):
    a, b = joined(rt, "aa01", "bb02")
    c = Conn(rt)
    c.connect()
    boot = c.join("aa01")
    assert ids_of(boot) == ["bb02"], boot
    assert a.recv() == err("Another client joined with your ID.")
    assert a.cid in emu.deleted
    # the error went out (200) before the connection was deleted
    log = [(m, s, body) for m, cid, s, body in emu.api_log if cid == a.cid]
    i_err = [i for i, (m, s, body) in enumerate(log) if m == "POST" and b"Another client" in body]
    i_del = [i for i, (m, s, body) in enumerate(log) if m == "DELETE"]
    assert i_err and i_del and i_err[0] < i_del[0] and log[i_err[0]][1] == 200, log
    a.silent()
    # b may hear aa01 re-announced, never leave
    for _ in range(len(emu.frames.get(b.cid, [])) - b.seen):
        assert b.recv() == {"type": "peer_joined", "peerId": "aa01"}
    # API Gateway reports the old connection's close: aa01 lives on in c
    a.disconnect(1001)
    b.silent()
    b.send({"type": "signal", "to": "aa01", "signal": {"n": 1}})
    assert c.recv() == {"type": "signal", "to": "aa01", "signal": {"n": 1}, "from": "bb02"}
    c.send({"type": "signal", "to": "bb02", "signal": {"n": 2}})
    assert b.recv() == {"type": "signal", "to": "bb02", "signal": {"n": 2}, "from": "aa01"}


def test_disconnect_announces_and_forgets(rt):
    a, b = joined(rt, "aa01", "bb02")
    b.disconnect(1001)
    assert a.recv() == {"type": "peer_left", "peerId": "bb02"}
    a.send({"type": "signal", "to": "bb02", "signal": {}})
    assert a.recv() == err("Peer bb02 not found.")
    c = Conn(rt)
    c.connect()
    assert ids_of(c.join("cc03")) == ["aa01"]
    assert a.recv() == {"type": "peer_joined", "peerId": "cc03"}
    # a connection that never joined leaves silently
    x = Conn(rt)
    x.connect()
    x.disconnect(1005)
    a.silent()
    c.silent()


def test_gone_connection_is_forgotten(rt, emu):
    a, b = joined(rt, "aa01", "bb02")
    emu.gone.add(b.cid)  # the socket died without a $disconnect
    a.send({"type": "signal", "to": "bb02", "signal": {}})
    assert emu.posts_to(b.cid)[-1][0] == 410
    # the 410 deleted bb02: from now on it is not found, and not posted to
    n_posts = len(emu.posts_to(b.cid))
    for _ in range(2):
        a.send({"type": "signal", "to": "bb02", "signal": {}})
    frames = emu.frames_json(a.cid)[a.seen:]
    assert frames[-1] == err("Peer bb02 not found."), frames
    assert len(emu.posts_to(b.cid)) == n_posts
    c = Conn(rt)
    c.connect()
    assert ids_of(c.join("cc03")) == ["aa01"]


# ============================================================== signatures


def test_wrong_secret_is_refused(store, runtime_factory, emu):
    """The bootstrap signs with another secret than the emulator checks:
    the signatures are refused (so the check can fail) and no peer gets
    anything."""
    runtime_factory.checks["sig"] = False
    rt = runtime_factory(*store.flags, env={"AWS_SECRET_ACCESS_KEY": "not-the-emulators-secret"})
    a = Conn(rt)
    r = rt.invoke(connect_event(a.cid))
    assert r.kind in ("response", "error"), r
    r = rt.invoke(message_event(a.cid, '{"type":"join","peerId":"aa01"}'))
    assert r.kind in ("response", "error"), r
    r = rt.invoke(message_event(a.cid, '{"type":"ping","timestamp":1}'))
    assert emu.sig_failures, "no request was refused"
    services = {p for _, p, _ in emu.sig_failures}
    if store.kind == "redis":
        assert all("/@connections/" in p for p in services), emu.sig_failures
    assert emu.frames == {}
    assert rt.proc.poll() is None  # it keeps serving


def test_no_aws_call_before_first_next(runtime_factory, ddb_store, emu):
    runtime_factory(*ddb_store.flags)
    assert emu.ddb_ops == [] and emu.api_requests == []


def test_keep_alive_connections(rt, emu):
    a, b = joined(rt, "aa01", "bb02")
    for i in range(8):
        a.send({"type": "signal", "to": "bb02", "n": i})
        assert b.recv()["n"] == i
    conns = emu.connections_accepted
    assert conns["runtime"] == 1, conns
    assert conns["apigw"] <= 3, conns  # 12 posts
    if emu.ddb_ops:
        assert conns["dynamodb"] <= 3, conns


def test_reconnects_after_idle_connections_drop(rt, emu):
    """A thawed runtime finds its AWS connections closed by the far end."""
    a, b = joined(rt, "aa01", "bb02")
    emu._api.drop_connections()
    emu._ddb.drop_connections()
    time.sleep(0.05)
    a.send({"type": "signal", "to": "bb02", "n": 1})
    assert b.recv() == {"type": "signal", "to": "bb02", "n": 1, "from": "aa01"}


def test_redis_restart_between_invocations(redis_server, runtime_factory, emu):
    redis = redis_server
    rt = runtime_factory("--redis.url=" + redis.url)
    a, = joined(rt, "aa01")
    redis.kill()
    redis.start()  # same port, empty
    b = Conn(rt)
    b.connect()
    boot = b.join("bb02")
    assert ids_of(boot) == [], boot


def test_two_instances_share_the_store(store, runtime_factory, emu):
    """Lambda runs several instances: one event may land on any of them."""
    emu2 = Emulator()
    rt2 = None
    try:
        rt1 = runtime_factory(*store.flags)
        # instance 2 has its own Runtime API but the same AWS endpoints
        rt2 = runtime_factory(*store.flags, "--signaling.apigw_endpoint=" + emu.apigw_url, emu_=emu2)
        a = Conn(rt1)
        a.connect()
        a.join("aa01")
        b = Conn(rt2, emu=emu)
        b.connect()
        assert ids_of(b.join("bb02")) == ["aa01"]
        assert a.recv() == {"type": "peer_joined", "peerId": "bb02"}
        a.send({"type": "signal", "to": "bb02", "n": 1})
        assert b.recv() == {"type": "signal", "to": "bb02", "n": 1, "from": "aa01"}
        b.disconnect()
        assert a.recv() == {"type": "peer_left", "peerId": "bb02"}
        assert emu2.sig_failures == [] and emu2.violations == []
        assert rt2.stop() == 0
    finally:
        if rt2 is not None:
            rt2.stop()
        emu2.close()


# ============================================================ DynamoDB item


def test_dynamodb_item_and_ttl_refresh(runtime_factory, ddb_store, emu):
    rt = runtime_factory(*ddb_store.flags, "--lambda.connection_ttl=60s")
    a, = joined(rt, "aa01", query={"room": "r1"})
    item = plain(emu.item(a.cid))
    assert item is not None, emu.items()
    assert item["connectionId"] == a.cid and item["peerId"] == "aa01"
    assert "realm" in item
    now = time.time()
    assert now + 50 <= item["ttl"] <= now + 70, item
    # pretend the entry is about to expire: any message pushes ttl out again
    with emu.dynamodb.lock:
        emu.dynamodb.table.items[a.cid]["ttl"] = {"N": str(int(now) + 5)}
    a.send({"type": "ping", "timestamp": 1})
    assert a.recv()["type"] == "pong"
    assert plain(emu.item(a.cid))["ttl"] >= int(now) + 50
    with emu.dynamodb.lock:
        emu.dynamodb.table.items[a.cid]["ttl"] = {"N": str(int(now) + 5)}
    a.send({"type": "signal", "to": "nobody", "signal": {}})
    assert a.recv() == err("Peer nobody not found.")
    assert plain(emu.item(a.cid))["ttl"] >= int(now) + 50
    ttl_writes = [b for op, b in emu.ddb_ops if op in ("UpdateItem", "PutItem") and "ttl" in json.dumps(b)]
    assert len(ttl_writes) >= 3, emu.ddb_ops


def test_dynamodb_expired_entries_are_ignored(runtime_factory, ddb_store, emu):
    """DynamoDB deletes expired items only eventually: reads must filter them."""
    rt = runtime_factory(*ddb_store.flags)
    a, b = joined(rt, "aa01", "bb02")
    with emu.dynamodb.lock:
        emu.dynamodb.table.items[b.cid]["ttl"] = {"N": str(int(time.time()) - 10)}
    c = Conn(rt)
    c.connect()
    assert ids_of(c.join("cc03")) == ["aa01"]
    assert a.recv() == {"type": "peer_joined", "peerId": "cc03"}
    b.silent()


def test_dynamodb_throttle_is_retried(runtime_factory, ddb_store, emu):
    rt = runtime_factory(*ddb_store.flags)
    a, b = joined(rt, "aa01", "bb02")
    emu.ddb_fault("*", status=400,
                  error_type="com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException")
    a.send({"type": "signal", "to": "bb02", "n": 1})
    assert b.recv() == {"type": "signal", "to": "bb02", "n": 1, "from": "aa01"}


# ====================================================== concurrency, deadline


def test_sends_finish_before_the_response(rt, emu):
    a, b = joined(rt, "aa01", "bb02")
    emu.delay_for[b.cid] = 0.3
    r = a.send({"type": "signal", "to": "bb02", "n": 1})
    assert len(emu.frames.get(b.cid, [])) == b.seen + 1  # recorded before the answer
    assert r.elapsed >= 0.3


def test_fanout_is_concurrent(rt, emu):
    peers = joined(rt, "a1", "a2", "a3")
    for p in peers:
        emu.delay_for[p.cid] = 0.5
    d = Conn(rt)
    d.connect()
    d.join("a4")
    for p in peers:
        assert p.recv() == {"type": "peer_joined", "peerId": "a4"}
    # the three announcements were held by the emulator at the same time
    assert emu.delayed_max == 3, emu.delayed_max


def test_deadline_is_respected(rt, emu):
    a, b = joined(rt, "aa01", "bb02")
    emu.delay_for[b.cid] = 5
    deadline = now_ms() + 800
    r = rt.invoke(message_event(a.cid, '{"type":"signal","to":"bb02","signal":{}}'),
                  deadline_ms=deadline, timeout=3)
    assert r.kind in ("response", "error"), r
    assert r.answered_ms <= deadline + 50, (r.answered_ms, deadline)
    del emu.delay_for[b.cid]
    # and it keeps serving
    a.send({"type": "ping", "timestamp": 2})
    frames = emu.frames_json(a.cid)
    assert {"type": "pong", "timestamp": 2} in frames


def test_sigterm_mid_invocation_exits_cleanly(rt, emu):
    """SIGTERM while posts are in flight: the calls are abandoned, the
    process exits 0 (under ASan: without leaks or use after free)."""
    a, b = joined(rt, "aa01", "bb02")
    emu.delay_for[b.cid] = 2
    t = threading.Thread(target=emu.invoke, args=(
        message_event(a.cid, '{"type":"signal","to":"bb02","signal":{}}'),), kwargs={"timeout": 3})
    t.start()
    time.sleep(0.4)  # the post to bb02 is waiting on the emulator
    assert rt.stop() == 0, rt.stderr_text()[-2000:]
    t.join(5)
    del emu.delay_for[b.cid]


# ======================================================== errors and init


def test_handler_error_reported_then_serving(rt):
    r = rt.invoke(b"not json")
    assert r.kind == "error", r
    assert r.error_type and r.error_type.split(".")[0] in ("Function", "Runtime"), r
    body = r.json()
    assert isinstance(body.get("errorMessage"), str) and isinstance(body.get("errorType"), str), body
    c = Conn(rt)
    c.connect()
    c.join("aa01")


def _init_failure(runtime_factory, emu, *flags, env=None):
    rt = runtime_factory(*flags, env=env, wait=False)
    body = emu.wait_init_error(5)
    assert body is not None, "no /init/error; stderr: %s\nstdout: %s" % (rt.stderr_text(), rt.stdout_text())
    try:
        code = rt.proc.wait(5)
    except subprocess.TimeoutExpired:
        raise AssertionError("runtime still running after /init/error")
    assert code != 0
    assert emu.first_next_ns is None
    return body


def test_init_error_unknown_handler(runtime_factory, emu, ddb_store):
    body = _init_failure(runtime_factory, emu, *ddb_store.flags, "--lambda.handler=nope")
    assert body["errorType"] == "Runtime.NoSuchHandler", body
    assert emu.init_error_type == "Runtime.NoSuchHandler"
    assert "nope" in body["errorMessage"] and "signaling" in body["errorMessage"], body


def test_init_error_unknown_handler_from_env(runtime_factory, emu, ddb_store):
    body = _init_failure(runtime_factory, emu, *ddb_store.flags, env={"_HANDLER": "nope"})
    assert body["errorType"] == "Runtime.NoSuchHandler", body


def test_handler_key_wins_over_env(runtime_factory, ddb_store):
    rt = runtime_factory(*ddb_store.flags, "--lambda.handler=signaling", env={"_HANDLER": "nope"})
    Conn(rt).connect()


def test_init_error_without_store(runtime_factory, emu):
    body = _init_failure(runtime_factory, emu)
    msg = body["errorMessage"]
    assert "redis.url" in msg and "lambda.dynamodb_table" in msg, body
    assert body["errorType"].startswith("Runtime."), body


def test_trace_id_logged(runtime_factory, ddb_store):
    rt = runtime_factory(*ddb_store.flags, "--log.level=debug")
    tid = "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1"
    r = rt.invoke(connect_event(new_connection_id()), trace_id=tid)
    assert r.kind == "response"
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        if any(l.get("trace_id") == tid for l in rt.logs()):
            return
        time.sleep(0.05)
    raise AssertionError("no log line with trace_id %s: %s" % (tid, rt.stdout_text()[-2000:]))


@pytest.mark.parametrize("after_invoke", [False, True])
def test_sigterm_between_invocations_exits_0(runtime_factory, ddb_store, after_invoke):
    rt = runtime_factory(*ddb_store.flags)
    if after_invoke:
        Conn(rt).connect()
    assert rt.stop(timeout=3) == 0, rt.stderr_text()  # 0: not the SIGKILL
