"""The mailbox dialect (the blind-rendezvous REST API of the Rust signaling
server, reference section A): register/heartbeat, init/join/send/recv/close,
the /ws/{mailbox_id} push, TTLs and their seed environment names, list and
push-buffer caps, legacy /signal, and cluster mode over a real Redis
(keys, cross-instance calls and pushes, Redis loss and recovery)."""

import asyncio
import http.client
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import (
    HandshakeRefused,
    HTTPResult,
    RawWS,
    assert_silent,
    close_all,
    get_metrics,
    http_get,
    metric_value,
    recv_json,
    ws_connect,
)

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
MAILBOX_RE = re.compile(r"^[0-9a-f]{32}$")


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def post(port, path, body=None, raw=None, method="POST", timeout=5.0):
    """One request with a JSON body on a fresh connection: HTTPResult."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = raw if raw is not None else (
            None if body is None else json.dumps(body).encode())
        conn.request(method, path, body=data,
                     headers={"Content-Type": "application/json",
                              "Connection": "close"})
        resp = conn.getresponse()
        return HTTPResult(resp.status, resp.reason,
                          {k.lower(): v for k, v in resp.getheaders()},
                          resp.read())
    finally:
        conn.close()


def expect(r, status, message=None):
    assert r.status == status, r
    if message is not None:
        assert r.headers.get("content-type") == "application/json", r
        assert r.json() == {"message": message}, r
    return r


class Api:
    """The mailbox REST calls against one instance."""

    def __init__(self, srv):
        self.port = srv.port
        self.ws = "ws://127.0.0.1:%d/ws/" % srv.port

    def post(self, path, body):
        return post(self.port, path, body)

    def register(self, label="laptop"):
        r = expect(self.post("/register", {"device_label": label}), 200)
        return r.json()

    def heartbeat(self, client):
        return self.post("/heartbeat", {"client_id": client["client_id"],
                                        "session_token": client["session_token"]})

    def init(self, client, rendezvous):
        return self.post("/connection/init", {
            "client_id": client["client_id"],
            "session_token": client["session_token"],
            "rendezvous_id_b64": rendezvous})

    def join(self, token):
        return self.post("/connection/join", {"token_b64": token})

    def send(self, mailbox, text):
        return self.post("/connection/send", {"mailbox_id": mailbox,
                                              "ciphertext_b64": text})

    def recv(self, mailbox):
        return self.post("/connection/recv", {"mailbox_id": mailbox,
                                              "ciphertext_b64": ""})

    def close(self, mailbox):
        return self.post("/connection/close", {"mailbox_id": mailbox})

    def pair(self, rendezvous="rv-token"):
        """Register an initiator, init, join: (initiator mailbox, responder
        mailbox, init answer, join answer)."""
        client = self.register("initiator")
        init = expect(self.init(client, rendezvous), 200).json()
        joined = expect(self.join(rendezvous), 200).json()
        return init["mailbox_id"], joined["mailbox_id"], init, joined


def item_ok(item, sender, text, seq):
    assert set(item) == {"from_mailbox_id", "ciphertext_b64", "sequence",
                         "timestamp_epoch_ms"}, item
    assert item["from_mailbox_id"] == sender, item
    assert item["ciphertext_b64"] == text, item
    assert item["sequence"] == seq, item
    now = time.time() * 1000
    assert now - 10000 < item["timestamp_epoch_ms"] <= now + 1000, item


# ------------------------------------------------------- plain routes


def test_root_and_health(server, server_factory):
    # GET / is the PeerJS banner while PeerJS is mounted at / (default) ...
    r = http_get(server.port, "/")
    assert r.status == 200 and r.json()["name"] == "PeerJS Server", r
    # ... and the mailbox server's answer once PeerJS is mounted elsewhere
    other = server_factory("--signaling.peerjs_path=/pj/")
    r = http_get(other.port, "/")
    assert r.status == 200, r
    assert r.body == b"Server OK!"
    assert r.headers["content-type"].startswith("text/plain"), r
    r = http_get(server.port, "/health")
    assert r.status == 200
    h = r.json()
    assert h["heartbeat_interval_secs"] == 30
    assert h["public_base_url"].startswith("http"), h


def test_register_and_heartbeat(server):
    api = Api(server)
    a = api.register("laptop")
    assert set(a) == {"client_id", "session_token", "heartbeat_interval_secs",
                      "display_name"}, a
    assert UUID_RE.match(a["client_id"]) and UUID_RE.match(a["session_token"]), a
    assert a["heartbeat_interval_secs"] == 30
    assert a["display_name"] == "Client 1"
    b = api.register("phone")
    assert b["display_name"] == "Client 2"
    assert b["client_id"] != a["client_id"]
    assert b["session_token"] != a["session_token"]

    r = expect(api.heartbeat(a), 200)
    assert r.json() == {"next_heartbeat_secs": 30}
    expect(api.heartbeat({"client_id": "00000000-0000-4000-8000-000000000000",
                          "session_token": a["session_token"]}),
           404, "client not found")
    expect(api.heartbeat({"client_id": a["client_id"],
                          "session_token": b["session_token"]}),
           401, "session token rejected")


def test_bad_requests(server):
    p = server.port
    expect(post(p, "/register", raw=b"{not json"), 400)
    expect(post(p, "/register", raw=b""), 400)
    r = expect(post(p, "/register", {"label": "x"}), 422)
    assert "device_label" in r.json()["message"], r
    r = expect(post(p, "/register", {"device_label": 7}), 422)
    assert "device_label" in r.json()["message"], r
    expect(post(p, "/register", [1, 2]), 422)
    r = expect(post(p, "/connection/recv", {"mailbox_id": "ab" * 16}), 422)
    assert "ciphertext_b64" in r.json()["message"], r
    r = expect(post(p, "/signal", {"session_token": "t", "envelope": {
        "from": "a", "to": "b", "payload": "p"}}), 422)
    assert "created_at_epoch_ms" in r.json()["message"], r

    r = post(p, "/register", method="GET")
    assert r.status == 405 and r.headers["allow"] == "POST", r
    r = post(p, "/connection/send", method="PUT", body={})
    assert r.status == 405 and r.headers["allow"] == "POST", r
    r = post(p, "/", method="POST", body={})
    assert r.status == 405 and r.headers["allow"] == "GET, HEAD", r
    r = http_get(p, "/ws/" + "ab" * 16)
    assert r.status == 426, r
    assert http_get(p, "/connection/nope").status == 404
    assert http_get(p, "/registerx", method="POST").status == 404


# ------------------------------------------------------ pairing flow


def test_pairing_flow(server):
    """Reference A.4 end to end: init, subscribe, join (single use), hello,
    offer/answer/ice both ways through send and push, recv, close."""
    api = Api(server)

    async def go():
        initiator = api.register("initiator")
        api.register("responder")
        r = expect(api.init(initiator, "link-secret-id"), 200)
        init = r.json()
        assert set(init) == {"mailbox_id", "expires_at_epoch_ms"}, init
        mb_i = init["mailbox_id"]
        assert MAILBOX_RE.match(mb_i), init
        now = time.time() * 1000
        assert now + 20000 < init["expires_at_epoch_ms"] <= now + 31000, init

        ws_i = await ws_connect(api.ws + mb_i)
        first = expect(api.recv(mb_i), 200).json()
        assert first == {"messages": [], "last_sequence": 0}
        expect(api.send(mb_i, "x"), 409, "No peer connected")

        r = expect(api.join("link-secret-id"), 200)
        joined = r.json()
        assert set(joined) == {"mailbox_id", "expires_at_epoch_ms"}, joined
        mb_r = joined["mailbox_id"]
        assert MAILBOX_RE.match(mb_r) and mb_r != mb_i, joined
        assert joined["expires_at_epoch_ms"] >= init["expires_at_epoch_ms"]
        # The link works once.
        expect(api.join("link-secret-id"), 404, "Invalid or expired token")

        # Join event: empty ciphertext from the responder, sequence 0.
        item_ok(await recv_json(ws_i), mb_r, "", 0)

        ws_r = await ws_connect(api.ws + mb_r)
        r = expect(api.send(mb_r, "connect_request"), 202)
        assert r.body == b"" and "content-type" not in r.headers, r
        item_ok(await recv_json(ws_i), mb_r, "connect_request", 1)

        expect(api.send(mb_i, "offer"), 202)
        item_ok(await recv_json(ws_r), mb_i, "offer", 0)
        expect(api.send(mb_r, "answer"), 202)
        item_ok(await recv_json(ws_i), mb_r, "answer", 2)
        for n in range(3):
            expect(api.send(mb_i, "ice-%d" % n), 202)
            item_ok(await recv_json(ws_r), mb_i, "ice-%d" % n, 1 + n)
        await assert_silent(ws_i, 0.2)

        # recv is not destructive: the whole list, every time.
        got = expect(api.recv(mb_i), 200).json()
        assert [m["sequence"] for m in got["messages"]] == [0, 1, 2]
        assert [m["ciphertext_b64"] for m in got["messages"]] == [
            "", "connect_request", "answer"]
        assert got["last_sequence"] == 2
        assert expect(api.recv(mb_i), 200).json() == got
        got_r = expect(api.recv(mb_r), 200).json()
        assert [m["sequence"] for m in got_r["messages"]] == [0, 1, 2, 3]
        assert got_r["last_sequence"] == 3

        # Both sides close (202 even the second time), then all is gone.
        r = expect(api.close(mb_i), 202)
        assert r.body == b""
        expect(api.close(mb_r), 202)
        expect(api.close("f" * 32), 202)
        expect(api.recv(mb_i), 404, "Mailbox not found")
        expect(api.recv(mb_r), 404, "Mailbox not found")
        expect(api.send(mb_r, "late"), 404, "Mailbox not found")
        await close_all([ws_i, ws_r])

    run(go())
    _, samples = get_metrics(server.port)
    assert metric_value(samples, "p2pmesh_signaling_relayed_total",
                        dialect="mailbox") == 7


def test_call_errors(server):
    api = Api(server)
    client = api.register()
    unknown = {"client_id": "00000000-0000-4000-8000-000000000000",
               "session_token": client["session_token"]}
    expect(api.init(unknown, "t1"), 404, "client not found")
    expect(api.init(dict(client, session_token="nope"), "t1"), 401,
           "session token rejected")
    expect(api.join("never-made"), 404, "Invalid or expired token")
    expect(api.send("0" * 32, "x"), 404, "Mailbox not found")
    expect(api.recv("0" * 32), 404, "Mailbox not found")
    # A refused init stored no link.
    expect(api.join("t1"), 404, "Invalid or expired token")


def test_push_socket_ids(server):
    """Any well-formed mailbox id may subscribe (even before it exists);
    other ids are refused before the upgrade."""
    async def go():
        ws = await ws_connect("ws://127.0.0.1:%d/ws/%s" % (server.port, "0" * 32))
        await ws.send("client frames are ignored")
        await assert_silent(ws, 0.2)
        assert ws.state.name == "OPEN"
        await close_all([ws])

    run(go())
    for bad in ("nothex", "AB" * 16, "ab" * 17, "ab" * 15):
        with pytest.raises(HandshakeRefused) as e:
            RawWS(server.port, path="/ws/" + bad)
        assert e.value.resp.status == 404, (bad, e.value.resp)


def test_two_subscribers_both_get_pushes(server):
    api = Api(server)

    async def go():
        mb_i, mb_r, _, _ = api.pair()
        a = await ws_connect(api.ws + mb_r)
        b = await ws_connect(api.ws + mb_r)
        expect(api.send(mb_i, "hi"), 202)
        item_ok(await recv_json(a), mb_i, "hi", 0)
        item_ok(await recv_json(b), mb_i, "hi", 0)
        await close_all([a])
        expect(api.send(mb_i, "again"), 202)
        item_ok(await recv_json(b), mb_i, "again", 1)
        await close_all([b])

    run(go())


# ------------------------------------------------------------- limits


def test_list_keeps_newest(server_factory):
    srv = server_factory("--signaling.mailbox_list_max=3")
    api = Api(srv)
    mb_i, mb_r, _, _ = api.pair()
    for n in range(5):
        expect(api.send(mb_r, "m%d" % n), 202)
    got = expect(api.recv(mb_i), 200).json()
    # join event 0, sends 1..5: the three newest stay, sequences go on.
    assert [m["sequence"] for m in got["messages"]] == [3, 4, 5]
    assert [m["ciphertext_b64"] for m in got["messages"]] == ["m2", "m3", "m4"]
    assert got["last_sequence"] == 5


def test_lagging_subscriber_is_closed(server_factory):
    """A socket that stops reading is closed 1008 once push_buffer pushes
    wait for it (ws.send_buffer is set high so only push_buffer acts);
    another subscriber of the same mailbox keeps getting everything."""
    srv = server_factory("--signaling.push_buffer=3", "--ws.send_buffer=256m",
                         "--http.max_body=2m")
    api = Api(srv)
    mb_i, mb_r, _, _ = api.pair()
    blob = "A" * (1 << 20)

    async def go():
        reader = await ws_connect(api.ws + mb_r, max_size=None)
        stalled = RawWS(srv.port, path="/ws/" + mb_r)  # never reads
        sent = 0
        try:
            closed = None
            for _ in range(64):  # up to 64 MiB, far above socket buffers
                expect(api.send(mb_i, blob), 202)
                sent += 1
                item = await recv_json(reader, timeout=5)
                assert item["sequence"] == sent - 1
                _, samples = get_metrics(srv.port)
                closed = metric_value(samples, "p2pmesh_ws_closes_total",
                                      code="1008")
                if closed:
                    break
            assert closed == 1, "stalled subscriber never closed"
            # The reader still gets the next ones.
            expect(api.send(mb_i, "after"), 202)
            item = await recv_json(reader)
            assert item["ciphertext_b64"] == "after"
        finally:
            stalled.close()
            await close_all([reader])
        return sent

    sent = run(go(), timeout=60)
    assert sent >= 4
    assert any(l.get("event") == "mailbox_push_lagging" for l in srv.logs())


# --------------------------------------------------------------- TTLs


def test_session_ttl_and_refresh(server_factory):
    srv = server_factory("--signaling.session_ttl=1s")
    api = Api(srv)
    a = api.register()
    b = api.register()
    # a keeps beating, b does not.
    for _ in range(3):
        time.sleep(0.45)
        expect(api.heartbeat(a), 200)
    expect(api.heartbeat(b), 404, "client not found")
    expect(api.init(b, "t"), 404, "client not found")
    # Only a is alive now.
    assert api.register()["display_name"] == "Client 2"


def test_rendezvous_ttl(server_factory):
    srv = server_factory("--signaling.rendezvous_ttl=1s")
    api = Api(srv)
    client = api.register()
    expect(api.init(client, "slow-link"), 200)
    expect(api.init(client, "quick-link"), 200)
    expect(api.join("quick-link"), 200)
    time.sleep(1.2)
    expect(api.join("slow-link"), 404, "Invalid or expired token")


def test_mailbox_deadline_moves_with_activity(server_factory):
    """The deadline is mailbox_ttl after the last activity: a pairing that
    keeps talking outlives the first deadline; an idle one answers 410,
    then (one mailbox_ttl later) 404."""
    srv = server_factory("--signaling.mailbox_ttl=1s")
    api = Api(srv)
    mb_i, mb_r, init, joined = api.pair()
    first_deadline = joined["expires_at_epoch_ms"]
    for n in range(5):  # 1.5 s of traffic, alternating sides
        time.sleep(0.3)
        expect(api.send(mb_i if n % 2 else mb_r, "m%d" % n), 202)
    assert time.time() * 1000 > first_deadline
    # Idle past the deadline.
    time.sleep(1.2)
    expect(api.send(mb_r, "late"), 410, "Session expired")
    expect(api.send(mb_i, "late"), 410, "Session expired")
    got = expect(api.recv(mb_i), 200).json()  # still readable, not renewed
    assert [m["ciphertext_b64"] for m in got["messages"]] == ["", "m0", "m2", "m4"]
    time.sleep(1.1)
    expect(api.send(mb_r, "later"), 404, "Mailbox not found")
    expect(api.recv(mb_i), 404, "Mailbox not found")


@pytest.mark.parametrize("mailbox_var", ["SIGNALING_MAILBOX_TTL_SECS",
                                         "SIGNALING_ROOM_TTL_SECS"])
def test_seed_environment_names(server_factory, mailbox_var):
    srv = server_factory(env={
        "SIGNALING_SESSION_TTL_SECS": "1",
        "SIGNALING_RENDEZVOUS_TTL_SECS": "1",
        mailbox_var: "3",
        "SIGNALING_HEARTBEAT_SECS": "7",
    })
    api = Api(srv)
    a = api.register()
    assert a["heartbeat_interval_secs"] == 7
    assert expect(api.heartbeat(a), 200).json() == {"next_heartbeat_secs": 7}
    before = time.time() * 1000
    init = expect(api.init(a, "env-link"), 200).json()
    assert before + 2500 < init["expires_at_epoch_ms"] < before + 3600, init
    expect(api.init(a, "env-link-2"), 200)
    time.sleep(1.2)
    expect(api.join("env-link-2"), 404, "Invalid or expired token")
    expect(api.heartbeat(a), 404, "client not found")
    # The mailbox outlives the session and the link.
    expect(api.recv(init["mailbox_id"]), 200)


# ------------------------------------------------------ legacy /signal


def test_legacy_signal_queue(server):
    api = Api(server)
    a = api.register()
    b = api.register()
    env = {"from": a["client_id"], "to": b["client_id"], "payload": "sdp",
           "created_at_epoch_ms": 1}
    r = api.post("/signal", {"session_token": a["session_token"], "envelope": env})
    expect(r, 202)
    assert r.body == b""
    expect(api.post("/signal", {"session_token": b["session_token"],
                                "envelope": env}), 401, "session token rejected")
    fetch = {"client_id": b["client_id"], "session_token": b["session_token"]}
    got = expect(api.post("/signal/fetch", fetch), 200).json()
    assert len(got["messages"]) == 1, got
    m = got["messages"][0]
    assert (m["from"], m["to"], m["payload"]) == (a["client_id"], b["client_id"], "sdp")
    assert m["created_at_epoch_ms"] > 1000000000000  # the server's clock
    assert expect(api.post("/signal/fetch", fetch), 200).json() == {"messages": []}
    expect(api.post("/signal/fetch", dict(fetch, session_token="x")), 401,
           "session token rejected")


# ------------------------------------------------------- cluster mode


def wait_ready(srv, want=200, timeout=12.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = http_get(srv.port, "/ready", timeout=2)
        if last.status == want:
            return last
        time.sleep(0.1)
    raise AssertionError("/ready not %d within %.0fs: %r" % (want, timeout, last))


def test_cluster_pairing_across_instances(server_factory, redis_server):
    a = server_factory("--redis.url=" + redis_server.url)
    b = server_factory("--redis.url=" + redis_server.url)
    wait_ready(a)
    wait_ready(b)
    api_a, api_b = Api(a), Api(b)
    cli = redis_server.cli

    async def go():
        client = api_a.register("initiator")
        assert api_b.register("responder")["display_name"] == "Client 2"
        expect(api_b.heartbeat(client), 200)  # the session is shared
        init = expect(api_b.init(client, "cross-link"), 200).json()
        mb_i = init["mailbox_id"]
        assert cli("GET", "sig:rendezvous:cross-link") == mb_i

        ws_i = await ws_connect(api_b.ws + mb_i)  # initiator pushes on B
        await asyncio.sleep(0.2)  # B's SUBSCRIBE reaches Redis
        joined = expect(api_a.join("cross-link"), 200).json()
        mb_r = joined["mailbox_id"]
        expect(api_b.join("cross-link"), 404, "Invalid or expired token")
        assert cli("EXISTS", "sig:rendezvous:cross-link") == "0"
        item_ok(await recv_json(ws_i), mb_r, "", 0)

        ws_r = await ws_connect(api_a.ws + mb_r)  # responder pushes on A
        await asyncio.sleep(0.2)
        expect(api_a.send(mb_r, "hello"), 202)
        item_ok(await recv_json(ws_i), mb_r, "hello", 1)
        expect(api_b.send(mb_i, "offer"), 202)
        item_ok(await recv_json(ws_r), mb_i, "offer", 0)

        # The seed server's keys and values.
        meta_i = json.loads(cli("GET", "sig:mailbox_meta:" + mb_i))
        assert meta_i["mailbox_id"] == mb_i
        assert meta_i["peer_mailbox_id"] == mb_r
        meta_r = json.loads(cli("GET", "sig:mailbox_meta:" + mb_r))
        assert meta_r["peer_mailbox_id"] == mb_i
        assert set(meta_r) == {"mailbox_id", "peer_mailbox_id",
                               "created_at_epoch_ms", "expires_at_epoch_ms"}
        for k in ("sig:mailbox_meta:" + mb_i, "sig:mailbox_msgs:" + mb_i,
                  "sig:mailbox_meta:" + mb_r, "sig:mailbox_msgs:" + mb_r):
            assert 0 < int(cli("PTTL", k)) <= 60000, k
        msgs = cli("LRANGE", "sig:mailbox_msgs:" + mb_i, "0", "-1").splitlines()
        assert [json.loads(m)["ciphertext_b64"] for m in msgs] == ["", "hello"]
        sess = json.loads(cli("GET", "sig:session:" + client["client_id"]))
        assert sess["session_token"] == client["session_token"]
        assert 0 < int(cli("PTTL", "sig:session:" + client["client_id"])) <= 90000

        # recv on either instance sees the same list.
        assert expect(api_a.recv(mb_i), 200).json() == \
            expect(api_b.recv(mb_i), 200).json()

        # A second link to an already paired mailbox: 409.
        cli("SET", "sig:rendezvous:forged", mb_i)
        expect(api_a.join("forged"), 409, "Session already has a peer")

        expect(api_a.close(mb_i), 202)
        assert cli("EXISTS", "sig:mailbox_meta:" + mb_i,
                   "sig:mailbox_meta:" + mb_r, "sig:mailbox_msgs:" + mb_i) == "0"
        expect(api_b.recv(mb_r), 404, "Mailbox not found")
        await close_all([ws_i, ws_r])

    run(go())


def test_cluster_concurrent_sends_get_distinct_sequences(server_factory,
                                                         redis_server):
    """Sends racing on two instances into one mailbox: every item keeps
    its own sequence (the seed's LLEN-then-RPUSH would repeat some)."""
    a = server_factory("--redis.url=" + redis_server.url)
    b = server_factory("--redis.url=" + redis_server.url)
    wait_ready(a)
    wait_ready(b)
    apis = [Api(a), Api(b)]
    mb_i, mb_r, _, _ = apis[0].pair("race")
    n = 40

    def send(k):
        return apis[k % 2].send(mb_r, "m%d" % k).status

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(send, range(n))) == [202] * n
    got = expect(apis[1].recv(mb_i), 200).json()["messages"]
    assert sorted(m["sequence"] for m in got) == list(range(n + 1))
    assert sorted(m["ciphertext_b64"] for m in got[1:]) == sorted(
        "m%d" % k for k in range(n))


def test_cluster_redis_loss_and_recovery(server_factory, redis_server):
    srv = server_factory("--redis.url=" + redis_server.url)
    wait_ready(srv)
    api = Api(srv)
    client = api.register()
    mb_i, _, _, _ = api.pair("before-loss")

    redis_server.kill()
    for call in (lambda: api.post("/register", {"device_label": "x"}),
                 lambda: api.heartbeat(client),
                 lambda: api.recv(mb_i),
                 lambda: api.join("whatever")):
        t0 = time.monotonic()
        expect(call(), 503, "Redis unavailable")
        assert time.monotonic() - t0 < 1.0
    r = wait_ready(srv, want=503)
    assert "redis" in r.json()["failing"], r
    assert http_get(srv.port, "/").status == 200
    assert srv.alive()

    redis_server.start()
    wait_ready(srv, want=200, timeout=15)
    again = api.register()  # Redis came back empty
    assert again["display_name"] == "Client 1"
    expect(api.heartbeat(again), 200)
    assert srv.alive()


def test_unanswered_store_gives_504_and_the_connection_lives_on(
        server_factory, redis_server):
    """Redis alive but frozen (SIGSTOP): a call waiting on it is answered
    504 after http.header_timeout, never left hanging; once Redis thaws
    the same server answers again, and a shutdown with a call still
    waiting exits cleanly."""
    import os
    import signal as sig

    srv = server_factory("--redis.url=" + redis_server.url,
                         "--http.header_timeout=1s")
    wait_ready(srv)
    os.kill(redis_server.proc.pid, sig.SIGSTOP)
    try:
        t0 = time.monotonic()
        r = post(srv.port, "/register", {"device_label": "x"})
        took = time.monotonic() - t0
        assert r.status == 504, r
        assert 0.8 < took < 4.0, took
    finally:
        os.kill(redis_server.proc.pid, sig.SIGCONT)
    wait_ready(srv)
    expect(post(srv.port, "/register", {"device_label": "y"}), 200)

    # a call still waiting when the server stops: clean exit (status 0)
    os.kill(redis_server.proc.pid, sig.SIGSTOP)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        conn.request("POST", "/register", body=b'{"device_label":"z"}',
                     headers={"Content-Type": "application/json"})
        time.sleep(0.3)
        srv.proc.send_signal(sig.SIGTERM)
        assert srv.proc.wait(timeout=10) == 0
        conn.close()
    finally:
        os.kill(redis_server.proc.pid, sig.SIGCONT)
