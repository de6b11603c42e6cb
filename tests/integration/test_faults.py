"""Faults under traffic (quality.md "Faults"): Redis killed and restarted,
PostgreSQL killed and restarted, SIGTERM under load, and a raft node of the
game role cut off by nftables drop rules in network namespaces, then
healed.

Each test says in its docstring what a user sees and what is guaranteed;
the assertions check exactly that: nothing the server acknowledged is
lost, every failure is told to the client, and service comes back by
itself within a generous bound. Other scenarios live next to the code they
exercise (test_cluster.py, test_mailbox.py, test_chat_cluster.py,
test_chat_ws.py, test_game_cluster.py, test_lifecycle.py, test_lambda.py);
nothing here repeats them.

Every wait is bounded. The partition test needs root, nft and ip; it is
skipped without them unless PM_REQUIRE_NETNS=1, which makes it fail
instead.
"""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

import helpers
from conftest import RedisServer
from helpers import get_metrics, http_get, metric_value, ws_connect

pytest.register_assert_rewrite("netns")


def run(coro, timeout=90):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def wait_until(pred, what, timeout=15.0, interval=0.05):
    """pred() truthy within timeout (its value), else AssertionError(what)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except (OSError, AssertionError) as e:
            last = e
            last_ok = False
        else:
            last_ok = bool(last)
        if last_ok:
            return last
        time.sleep(interval)
    raise AssertionError("%s (within %.0fs; last %r)" % (what, timeout, last))


def ready_status(port, host="127.0.0.1"):
    r = http_get(port, "/ready", timeout=3, host=host)
    body = {}
    try:
        body = r.json()
    except ValueError:
        pass
    return r.status, body


# ============================================================ Redis


@pytest.fixture
def persistent_redis(tmp_path):
    """A redis-server that loses nothing it acknowledged to a SIGKILL."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (tests/lib/deps.sh test)")
    srv = RedisServer(tmp_path / "predis", durable=True)
    yield srv
    srv.kill()


def sig_cluster_pair(server_factory, redis_url, *flags):
    a = server_factory("--redis.url=" + redis_url, *flags)
    b = server_factory("--redis.url=" + redis_url, *flags)

    def both_see_each_other():
        return all(metric_value(get_metrics(s.port)[1],
                                "p2pmesh_signaling_cluster_instances") == 1
                   for s in (a, b))
    wait_until(both_see_each_other, "the two instances never heard each other")
    return a, b


class Stream:
    """One sender -> one receiver of the p2pmesh dialect: the sender sends
    {"type":"signal","to":R,"n":i} every `interval`; the receiver records
    each n with its arrival time; the sender records every error it gets."""

    def __init__(self, name, sender, s_id, receiver, r_id, interval):
        self.name = name
        self.sender, self.s_id = sender, s_id
        self.receiver, self.r_id = receiver, r_id
        self.interval = interval
        self.sent = []      # (n, monotonic time of the send)
        self.got = []       # (n, monotonic arrival time)
        self.errors = []    # error messages the sender got
        self.stop = False

    async def send_loop(self):
        n = 0
        while not self.stop:
            await self.sender.send(json.dumps({"type": "signal", "to": self.r_id, "n": n}))
            self.sent.append((n, time.monotonic()))
            n += 1
            await asyncio.sleep(self.interval)

    def got_after(self, t):
        return [n for n, at in self.got if at > t]


async def reader(ws, streams_by_receiver, streams_by_sender, other):
    """Sort every message a socket gets into the streams it belongs to."""
    try:
        async for raw in ws:
            m = json.loads(raw)
            t = m.get("type")
            if t == "signal" and ws in streams_by_receiver:
                st = streams_by_receiver[ws][m["from"]]
                st.got.append((m["n"], time.monotonic()))
            elif t == "error" and ws in streams_by_sender:
                streams_by_sender[ws].errors.append(m)
            elif t not in ("peer_joined", "peer_left", "bootstrap_peers"):
                other.append(m)
    except Exception:  # noqa: BLE001 - the socket closing ends the reader
        pass


def test_redis_sigkill_under_signaling_traffic(server_factory, redis_server):
    """Two signaling instances share one Redis; peers send a signal every
    40 ms, within instance A, within instance B and across them both ways.
    Redis gets SIGKILL mid-stream and comes back (empty) on the same port.

    What the user sees: peers on the same instance never notice (every
    message arrives, in order, also while Redis is down); /ready answers
    503 naming "redis" on both instances while it is down and 200 again
    after; messages across instances are held while Redis is down and go
    out once it is back, or -- when they cannot be delivered (the
    per-target offline mailbox is bounded, a PUBLISH in flight died with
    Redis) -- the sender gets {"type":"error","message":"Peer <id> not
    found."}. Cross-instance delivery resumes within 15 s of Redis being
    back, nothing crashes.

    Guaranteed (signaling.md "State, scale and the mailbox"): no message is
    silently lost: for every cross-instance stream, the messages that never
    arrived are at most as many as the errors its sender got; none arrives
    twice; what was sent while Redis was known to be down (fewer than
    signaling.mailbox_max messages, well within signaling.mailbox_ttl) was
    held and arrives after Redis is back. Local streams arrive complete
    and in order, with no error. (Order across the outage is not promised: held messages go out
    when the target's instance re-announces it, and new ones may pass
    them.)"""
    a, b = sig_cluster_pair(server_factory, redis_server.url)
    interval = 0.04

    async def go():
        socks = {}
        for srv, pid in ((a, "a1"), (a, "a2"), (a, "a3"), (a, "a4"),
                         (b, "b1"), (b, "b2"), (b, "b3"), (b, "b4")):
            ws = await ws_connect(srv.ws_url)
            await ws.send(json.dumps({"type": "join", "peerId": pid}))
            boot = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert boot["type"] == "bootstrap_peers", boot
            socks[pid] = ws

        def replicas_full():
            for s in (a, b):
                m = get_metrics(s.port)[1]
                if (metric_value(m, "p2pmesh_signaling_peers"),
                        metric_value(m, "p2pmesh_signaling_cluster_remote_peers")) != (4, 4):
                    return False
            return True
        await asyncio.to_thread(wait_until, replicas_full, "replicas never held all 8 peers")

        streams = [
            Stream("local-A", socks["a1"], "a1", socks["a2"], "a2", interval),
            Stream("local-B", socks["b3"], "b3", socks["b4"], "b4", interval),
            Stream("A->B", socks["a3"], "a3", socks["b1"], "b1", interval),
            Stream("B->A", socks["b2"], "b2", socks["a4"], "a4", interval),
        ]
        by_recv, by_send = {}, {}
        for st in streams:
            by_recv.setdefault(st.receiver, {})[st.s_id] = st
            by_send[st.sender] = st
        other = []
        readers = [asyncio.create_task(reader(ws, by_recv, by_send, other))
                   for ws in socks.values()]
        senders = [asyncio.create_task(st.send_loop()) for st in streams]
        try:
            await asyncio.sleep(1.0)
            for st in streams:
                assert st.got, ("no traffic before the fault", st.name)

            redis_server.kill()
            t_kill = time.monotonic()
            for srv in (a, b):
                st_, body = await asyncio.to_thread(
                    wait_until, lambda srv=srv: (lambda r: r if r[0] == 503 else None)(
                        ready_status(srv.port)), "/ready stayed 200 with Redis down")
                assert "redis" in body.get("failing", []), body
                assert http_get(srv.port, "/health").json()["redis"] == "down"
            await asyncio.sleep(1.5)  # traffic goes on with Redis down
            t_restart = time.monotonic()
            redis_server.start()
            for srv in (a, b):
                await asyncio.to_thread(
                    wait_until, lambda srv=srv: ready_status(srv.port)[0] == 200,
                    "/ready not 200 again after Redis came back")
            t_up = time.monotonic()

            # local delivery never stopped: messages sent and received
            # while Redis was down, on both instances
            for st in streams[:2]:
                during = [n for n, at in st.got if t_kill < at < t_restart]
                assert len(during) >= 5, (st.name, "local delivery stalled", during)

            # cross-instance delivery resumes: a message sent after both
            # instances are ready arrives within 15 s
            def resumed():
                return all(any(n >= first for n in st.got_after(t_up))
                           for st, first in fresh)
            fresh = [(st, len(st.sent)) for st in streams[2:]]
            await asyncio.to_thread(wait_until, resumed,
                                    "cross-instance delivery did not resume", 15)
            await asyncio.sleep(0.5)
        finally:
            for st in streams:
                st.stop = True
            await asyncio.gather(*senders, return_exceptions=True)
        # let everything in flight (and held) arrive, and errors come back
        await asyncio.sleep(2.0)
        for ws in socks.values():
            await ws.close()
        await asyncio.gather(*readers, return_exceptions=True)
        for st in streams:
            st.outage = (t_kill, t_restart)
        return streams, other

    streams, other = run(go(), timeout=120)
    assert not other, ("unexpected messages", other[:5])
    for st in streams:
        sent = [n for n, _ in st.sent]
        got = [n for n, _ in st.got]
        assert len(got) == len(set(got)), (st.name, "a message arrived twice")
        assert set(got) <= set(sent), st.name
        lost = sorted(set(sent) - set(got))
        for e in st.errors:
            assert e == {"type": "error", "message": "Peer %s not found." % st.r_id}, (st.name, e)
        if st.name.startswith("local"):
            assert got == sent, (st.name, "local stream lost or reordered messages", lost[:10])
            assert not st.errors, (st.name, st.errors[:3])
        else:
            assert len(lost) <= len(st.errors), (
                st.name, "messages lost without an error to the sender",
                lost[:20], len(lost), len(st.errors))
            # what was sent while Redis was down was held, then delivered
            # (the outage is shorter than the mailbox's TTL and capacity)
            held = [n for n, at in st.sent if st.outage[0] + 0.2 < at < st.outage[1]]
            assert held and set(held) <= set(got), (st.name, "held messages lost",
                                                    sorted(set(held) - set(got))[:10])
    for srv in (a, b):
        assert srv.alive()
        assert metric_value(get_metrics(srv.port)[1], "p2pmesh_signaling_redis_up") == 1
        assert srv.stop() == 0, srv.stderr_text()[-2000:]


def test_redis_sigkill_keeps_every_acknowledged_mailbox_message(server_factory,
                                                                persistent_redis):
    """The mailbox dialect on two instances sharing a Redis that persists
    every write before answering (appendfsync always). Two clients keep
    calling POST /connection/send into one paired mailbox, one through each
    instance, while Redis is SIGKILLed and restarted on the same port.

    What the user sees: a send is answered 202 (stored) or, while Redis is
    down, 503 {"message":"Redis unavailable"} (or 504 if Redis stopped
    answering mid-call) -- never a 202 for something that was not stored,
    never a hang or a connection reset; /ready is 503 while Redis is down;
    after Redis is back sends are answered 202 again within 15 s.

    Guaranteed: every send answered 202 is in the mailbox afterwards
    (POST /connection/recv on either instance), exactly once."""
    import http.client

    a, b = sig_cluster_pair(server_factory, persistent_redis.url,
                            "--signaling.mailbox_list_max=10000")

    def post(port, path, body):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("POST", path, body=json.dumps(body).encode(),
                         headers={"Content-Type": "application/json",
                                  "Connection": "close"})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, (json.loads(data) if data else None)
        finally:
            conn.close()

    st, client = post(a.port, "/register", {"device_label": "faults"})
    assert st == 200, client
    st, init = post(a.port, "/connection/init", {
        "client_id": client["client_id"], "session_token": client["session_token"],
        "rendezvous_id_b64": "fault-rv"})
    assert st == 200, init
    st, joined = post(b.port, "/connection/join", {"token_b64": "fault-rv"})
    assert st == 200, joined
    mb_i, mb_r = init["mailbox_id"], joined["mailbox_id"]

    results = {}  # text -> (status, body)
    stop = threading.Event()
    lock = threading.Lock()

    def sender(srv, tag):
        k = 0
        while not stop.is_set():
            text = "%s-%d" % (tag, k)
            k += 1
            try:
                res = post(srv.port, "/connection/send",
                           {"mailbox_id": mb_r, "ciphertext_b64": text})
            except OSError as e:  # a reset or timeout: a test failure below
                res = ("oserror", repr(e))
            with lock:
                results[text] = res
            time.sleep(0.02)

    threads = [threading.Thread(target=sender, args=(srv, tag), daemon=True)
               for srv, tag in ((a, "A"), (b, "B"))]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        persistent_redis.kill()
        for srv in (a, b):
            wait_until(lambda srv=srv: ready_status(srv.port)[0] == 503,
                       "/ready stayed 200 with Redis down")
        time.sleep(1.0)
        with lock:
            n_down = len(results)
        persistent_redis.start()
        for srv in (a, b):
            wait_until(lambda srv=srv: ready_status(srv.port)[0] == 200,
                       "/ready not 200 after Redis came back")

        def accepted_again():
            with lock:
                later = list(results.items())[n_down:]
            return sum(1 for _, (s, _) in later if s == 202) >= 10
        wait_until(accepted_again, "sends not answered 202 again after Redis came back", 15)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert not any(t.is_alive() for t in threads)

    statuses = {}
    for text, (s, body) in results.items():
        statuses[s] = statuses.get(s, 0) + 1
        if s == 503:
            assert body == {"message": "Redis unavailable"}, body
        else:
            assert s in (202, 504), (text, s, body)
    assert statuses.get(503, 0) + statuses.get(504, 0) >= 1, (
        "no send saw the outage", statuses)
    acked = sorted(t for t, (s, _) in results.items() if s == 202)
    for srv in (a, b):
        st, got = post(srv.port, "/connection/recv",
                       {"mailbox_id": mb_i, "ciphertext_b64": ""})
        assert st == 200, got
        texts = [m["ciphertext_b64"] for m in got["messages"]]
        assert len(texts) == len(set(texts)), "an item stored twice"
        missing = sorted(set(acked) - set(texts))
        assert not missing, ("answered 202 but lost", missing[:10], len(missing), statuses)
    for srv in (a, b):
        assert srv.stop() == 0, srv.stderr_text()[-2000:]



def test_redis_sigkill_under_chat_traffic(server_factory, redis_server, tmp_path):
    """Two chat instances on one database (SQLite, WAL) fan out through one
    Redis. alice (on A) sends a message every 50 ms to room general, where
    carol (also on A) and bob (on B) listen; Redis gets SIGKILL mid-stream
    and comes back empty on the same port.

    What the user sees: alice gets an ack for every message throughout
    (storing needs the database, not Redis); carol, on alice's instance,
    gets every message live; bob, on the other instance, gets live every
    message sent before the kill and, within 15 s of Redis being back,
    the new ones again, but the ones sent while Redis was down only through
    history (chat.md: live fan-out across instances is Redis pub/sub;
    there is no replay), so a client re-syncs with GET
    /api/rooms/:room/messages; /ready is 503 naming "redis" on both
    instances while it is down, 200 after. No crash.

    Guaranteed: every acknowledged message is in the history read through
    either instance, with its acknowledged id, exactly once; nobody gets a
    message twice."""
    from chat_fixtures import Backend, ChatServer, Client, SqliteDB, register

    path = tmp_path / "chat.db"
    backend = Backend("sqlite", "sqlite:%s" % path, SqliteDB(path))
    a = ChatServer(server_factory, backend, ["--redis.url=" + redis_server.url], None)
    b = ChatServer(server_factory, backend, ["--redis.url=" + redis_server.url], None)
    ta, _ = register(a, "alice")
    tb, _ = register(a, "bob")
    tc, _ = register(a, "carol")

    async def go():
        alice = await Client.connect(a, ta, "alice")
        carol = await Client.connect(a, tc, "carol")
        bob = await Client.connect(b, tb, "bob")
        for c in (alice, carol, bob):
            await c.send({"type": "join", "room": "general"})
            await c.expect(type="joined", room="general")
        # bob's instance must know alice's membership before she talks
        await alice.send({"type": "message", "room": "general", "body": "hi",
                          "client_id": "warm"})
        await bob.expect(type="message", client_id="warm", timeout=10)
        await carol.expect(type="message", client_id="warm")
        acked, phase = {}, {}
        k = 0

        async def send_some(seconds, tag):
            nonlocal k
            t_end = time.monotonic() + seconds
            while time.monotonic() < t_end:
                cid = "rc-%d" % k
                k += 1
                await alice.send({"type": "message", "room": "general",
                                  "body": "b " + cid, "client_id": cid})
                ack = await alice.expect(type="ack", client_id=cid, timeout=10)
                acked[cid] = ack["id"]
                phase[cid] = tag
                await asyncio.sleep(0.05)

        await send_some(1.0, "before")
        redis_server.kill()
        for srv in (a, b):
            st, body = await asyncio.to_thread(
                wait_until, lambda srv=srv: (lambda r: r if r[0] == 503 else None)(
                    ready_status(srv.port)), "/ready stayed 200 with Redis down")
            assert "redis" in body["failing"], body
        await send_some(1.5, "down")
        redis_server.start()
        for srv in (a, b):
            await asyncio.to_thread(wait_until, lambda srv=srv: ready_status(srv.port)[0] == 200,
                                    "/ready not 200 after Redis came back")
        # live fan-out to the other instance resumes
        deadline = time.monotonic() + 15
        while True:
            await send_some(0.3, "after")
            last = max(acked, key=lambda c: acked[c])
            try:
                await bob.expect(type="message", client_id=last, timeout=1)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise AssertionError("live delivery to the other instance did not resume")
        await send_some(0.5, "after")
        got_c = [m for m in await carol.collect(2.0) if m.get("type") == "message"]
        got_b = [m for m in await bob.collect(0.5) if m.get("type") == "message"]
        got_b += [m for m in bob.drain() if m.get("type") == "message"]
        for c in (alice, carol, bob):
            await c.close()
        return acked, phase, got_c, got_b

    acked, phase, got_c, got_b = run(go(), timeout=90)
    carol_ids = [m["client_id"] for m in got_c]
    assert len(carol_ids) == len(set(carol_ids)), "carol got a message twice"
    assert {m["client_id"]: m["id"] for m in got_c} == acked, "carol missed live messages"
    bob_ids = [m["client_id"] for m in got_b]
    assert len(bob_ids) == len(set(bob_ids)), "bob got a message twice"
    for m in got_b:
        assert acked[m["client_id"]] == m["id"], m
    before = [c for c in acked if phase[c] == "before"]
    assert all(c in bob_ids or c == "warm" for c in before), "bob missed messages sent before the kill"
    for srv in (a, b):
        hist = full_history(srv, tb, "general")
        ids = [m["client_id"] for m in hist]
        assert len(ids) == len(set(ids)), "a message stored twice"
        stored = {m["client_id"]: m["id"] for m in hist}
        missing = sorted(set(acked) - set(stored))
        assert not missing, ("acknowledged but not in history", missing[:10])
        assert {c: stored[c] for c in acked} == acked
    for srv in (a, b):
        assert srv.srv.alive()
        assert srv.stop() == 0, srv.stderr_text()[-2000:]


# ======================================================= PostgreSQL


@pytest.fixture
def own_pg():
    """A PostgreSQL of this test alone (pg.PgServer), so killing it does
    not hit the tests sharing the session's server."""
    import pg
    if not pg.pg_available():
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    srv = pg.PgServer()
    yield srv
    srv.close()


def full_history(chat, token, room):
    """Every message of room through the REST API, paging with before=."""
    from chat_fixtures import api
    out, before = [], None
    for _ in range(100):
        q = "?limit=100" + ("&before=%d" % before if before is not None else "")
        r = api(chat.port, "GET", "/api/rooms/%s/messages%s" % (room, q), token=token)
        assert r.status == 200, r
        msgs = r.json["messages"]
        out = msgs + out
        if not r.json["more"] or not msgs:
            return out
        before = min(m["id"] for m in msgs)
    raise AssertionError("history never ended")


def test_postgres_killed_under_chat_traffic(server_factory, own_pg):
    """The chat role on PostgreSQL; alice sends a message every 30 ms
    (each with its own client_id) and bob, in the same room, reads them
    live, while PostgreSQL is stopped in immediate mode (every backend
    killed, no shutdown checkpoint: a crash) and started again.

    What the user sees: each message is answered either with
    {"type":"ack","client_id":..,"id":..} or, while the database is away,
    with {"type":"error","code":"unavailable","client_id":..} -- never with
    silence; /ready is 503 naming "database" while it is down; the server
    reconnects by itself and sends are acknowledged again within 20 s of
    PostgreSQL being back; nothing crashes.

    Guaranteed: every acknowledged message is in the messages table and in
    GET /api/rooms/general/messages afterwards, with the acknowledged id,
    and bob got it live. An "unavailable" message was not acknowledged: the
    client resends it with the same client_id and gets an ack (of the first
    copy if that one did reach the database), so in the end every
    client_id is stored exactly once."""
    from chat_fixtures import BASE_FLAGS, Client, register
    import chat_fixtures

    flags = list(BASE_FLAGS) + ["--database.url=" + own_pg.url()]
    srv = server_factory(*flags, role="chat")
    chat_fixtures.wait_ready(srv)

    class _Chat:  # what chat_fixtures' helpers need of a ChatServer
        port = srv.port

        @staticmethod
        def ws_url(token=None, path="/ws"):
            return "ws://127.0.0.1:%d%s?token=%s" % (srv.port, path, token)

        @staticmethod
        def api(method, path, body=None, token=None, **kw):
            return chat_fixtures.api(srv.port, method, path, body=body, token=token, **kw)

    chat = _Chat()
    ta, _ = register(chat, "alice")
    tb, _ = register(chat, "bob")
    answers = {}  # client_id -> the ack or error

    async def go():
        alice = await Client.connect(chat, ta, "alice")
        bob = await Client.connect(chat, tb, "bob")
        for c in (alice, bob):
            await c.send({"type": "join", "room": "general"})
            await c.expect(type="joined", room="general")
        sent = []
        stop = asyncio.Event()

        async def send_loop():
            k = 0
            while not stop.is_set():
                cid = "pg-%d" % k
                k += 1
                await alice.send({"type": "message", "room": "general",
                                  "body": "body %s" % cid, "client_id": cid})
                sent.append(cid)
                await asyncio.sleep(0.03)

        async def read_loop():
            while True:
                try:
                    await alice._read(1.0)
                except asyncio.TimeoutError:
                    continue
                m = alice.inbox.pop()
                if m.get("type") in ("ack", "error") and "client_id" in m:
                    assert m["client_id"] not in answers, ("answered twice", m)
                    answers[m["client_id"]] = (m, time.monotonic())

        sender = asyncio.create_task(send_loop())
        rd = asyncio.create_task(read_loop())
        try:
            await asyncio.sleep(1.0)
            assert any(m["type"] == "ack" for m, _ in answers.values()), answers
            await asyncio.to_thread(own_pg.stop, "immediate")
            st, body = await asyncio.to_thread(
                wait_until, lambda: (lambda r: r if r[0] == 503 else None)(ready_status(srv.port)),
                "/ready stayed 200 with PostgreSQL down", 15)
            assert "database" in body["failing"], body

            def refused():
                return any(m["type"] == "error" for m, _ in answers.values())
            await asyncio.to_thread(wait_until, refused, "no send refused with PostgreSQL down")
            await asyncio.sleep(1.0)
            await asyncio.to_thread(own_pg.start)
            t_up = time.monotonic()
            await asyncio.to_thread(wait_until, lambda: ready_status(srv.port)[0] == 200,
                                    "/ready not 200 after PostgreSQL came back", 20)

            def acked_again():
                return sum(1 for m, t in answers.values()
                           if t > t_up and m["type"] == "ack") >= 10
            await asyncio.to_thread(wait_until, acked_again,
                                    "sends not acknowledged after PostgreSQL came back", 20)
        finally:
            stop.set()
            await sender
        await asyncio.to_thread(wait_until, lambda: len(answers) == len(sent),
                                "a send was never answered", 15)
        rd.cancel()
        await asyncio.gather(rd, return_exceptions=True)

        errors = {cid: m for cid, (m, _) in answers.items() if m["type"] == "error"}
        for cid, m in errors.items():
            assert m["code"] == "unavailable", m
        acked = {cid: m["id"] for cid, (m, _) in answers.items() if m["type"] == "ack"}
        assert errors and acked, (len(errors), len(acked))
        # bob saw every acknowledged message live, with its id
        live = {}
        deadline = time.monotonic() + 10
        while set(acked) - set(live) and time.monotonic() < deadline:
            try:
                m = await bob.expect(type="message", timeout=max(0.1, deadline - time.monotonic()))
            except AssertionError:
                break
            live[m["client_id"]] = m["id"]
        assert {c: live.get(c) for c in acked} == acked, "bob missed acknowledged messages"
        # resend what was refused, same client_id: acknowledged now
        for cid in sorted(errors):
            await alice.send({"type": "message", "room": "general",
                              "body": "body %s" % cid, "client_id": cid})
            ack = await alice.expect(type="ack", client_id=cid, timeout=10)
            acked[cid] = ack["id"]
        await alice.close()
        await bob.close()
        return sent, acked, errors

    sent, acked, errors = run(go(), timeout=120)
    rows = own_pg.psql("SELECT m.client_id, m.id, m.body FROM messages m "
                       "JOIN users u ON u.id = m.sender_id WHERE u.username = 'alice'")
    stored = {}
    for line in rows.splitlines():
        cid, mid, body = line.split("|", 2)
        assert cid not in stored, ("stored twice", cid)
        stored[cid] = (int(mid), body)
    assert sorted(stored) == sorted(sent), (set(sent) ^ set(stored))
    for cid, mid in acked.items():
        assert stored[cid] == (mid, "body %s" % cid), (cid, stored[cid], mid)
    hist = full_history(chat, tb, "general")
    assert sorted((m["client_id"], m["id"]) for m in hist) == sorted(acked.items())
    assert srv.alive()
    assert srv.stop() == 0, srv.stderr_text()[-2000:]


def test_postgres_down_does_not_stop_running_games(server_factory, tmp_path, own_pg):
    """Three game nodes discovering each other through PostgreSQL (the
    servers table, heartbeat every second here) play a duel; PostgreSQL is
    stopped in immediate mode (a crash) for a few seconds, then started.

    What the user sees: nothing. The duel keeps ticking (raft, not the
    database, is the control plane), the leader does not change, /ready
    stays 200 on every node, new players can still get guest tokens and
    queue. Once PostgreSQL is back every node's servers row is refreshed
    within 15 s, and a fourth node started afterwards finds the cluster
    through the table and becomes ready."""
    from game_fixtures import Bot, GameCluster, close_bots, kind, start_duel

    own_pg.psql("SELECT 1")
    cl = GameCluster(server_factory, tmp_path, own_pg, own_pg.dbname)
    try:
        nodes = cl.start(3, "--game.heartbeat=1s")
        leader = cl.wait_leader(voters=3, timeout=15)
        A, B = nodes[0], nodes[1]

        async def go():
            p1 = Bot("pg1", A.guest("pgone")[0])
            p2 = Bot("pg2", B.guest("pgtwo")[0])
            await p1.connect(A.ws_url)
            await p2.connect(B.ws_url)
            try:
                p1.mode = p2.mode = "autopilot"
                gid = await start_duel(A, p1, p2, B)
                await p1.sleep_ticks(5, timeout=10)
                await asyncio.to_thread(own_pg.stop, "immediate")
                t_down = time.monotonic()
                # the game goes on while the database is away
                ticks = 0
                while time.monotonic() - t_down < 3.0:
                    await p1.sleep_ticks(1, timeout=5)
                    await p2.sleep_ticks(1, timeout=5)
                    ticks += 1
                assert ticks >= 5, ticks
                for n in nodes:
                    st = await asyncio.to_thread(n.ready_status)
                    assert st == 200, (n, st)
                assert await asyncio.to_thread(cl.agreed_leader) is leader
                # a newcomer is still served
                t3, _ = await asyncio.to_thread(nodes[2].guest, "pgthree")
                p3 = Bot("pg3", t3)
                await p3.connect(nodes[2].ws_url)
                await p3.queue("solo")
                await p3.next(lambda m: kind(m) in ("MatchFound", "QueueUpdate"), 10)
                await p3.close()
                for p in (p1, p2):
                    assert p.game_id == gid
                    p.model().assert_clean(p.name)
            finally:
                await close_bots([p1, p2])

        run(go(), timeout=90)
        own_pg.start()
        ids = sorted(str(n.node_id) for n in nodes)

        def rows_fresh():
            rows = cl.psql("SELECT id, EXTRACT(EPOCH FROM (now() - last_heartbeat)) FROM servers")
            got = sorted(r[0] for r in rows if float(r[1]) < 3.0)
            return got == ids
        wait_until(rows_fresh, "servers rows not refreshed after PostgreSQL came back", 15)
        d = cl.start_node("--game.heartbeat=1s")
        assert d.ready_status() == 200
        cl.wait_leader(timeout=15)
        st, h = d.health()
        assert str(h["leader"]) == str(leader.node_id), h
        for n in nodes + [d]:
            assert n.alive(), n
    finally:
        cl.stop_all()


# ============================================================ SIGTERM


def test_sigterm_under_signaling_load(server_factory):
    """200 clients of the p2pmesh dialect in 100 sender/receiver pairs, each
    sender sending a numbered signal every 100 ms, when the process gets
    SIGTERM (shutdown.grace 5 s).

    What the user sees: every one of the 200 connections gets a close
    frame with code 1001 (going away) and the process exits with status 0
    within the grace period.

    Guaranteed: nothing is lost or reordered between two peers before the
    close: what each receiver got is exactly messages 0..k-1 of its sender,
    in order, without gaps or repeats (the server relays every message it
    read before it began closing, then stops reading that connection)."""
    srv = server_factory("--shutdown.grace=5s", "--limits.per_ip_connections=1000",
                         "--limits.per_ip_rate=100000/1s",
                         "--limits.per_conn_rate=100000/1s",
                         "--limits.per_conn_burst=100000")
    pairs = 100

    async def go():
        import websockets
        socks = []
        for i in range(2 * pairs):
            ws = await ws_connect(srv.ws_url, open_timeout=10)
            await ws.send(json.dumps({"type": "join", "peerId": "p%03d" % i,
                                      }))
            socks.append(ws)
        for ws in socks:  # bootstrap_peers first, then announcements
            m = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert m["type"] == "bootstrap_peers", m
        got = [[] for _ in range(pairs)]
        sent = [0] * pairs
        codes = [None] * (2 * pairs)
        errors = []

        async def recv_loop(i):
            ws = socks[i]
            try:
                async for raw in ws:
                    m = json.loads(raw)
                    if m["type"] == "signal":
                        assert i % 2 == 1 and m["from"] == "p%03d" % (i - 1), (i, m)
                        got[i // 2].append(m["n"])
                    elif m["type"] == "error":
                        errors.append((i, m))
            except websockets.ConnectionClosed:
                pass
            codes[i] = ws.close_code

        async def send_loop(k):
            ws = socks[2 * k]
            n = 0
            try:
                while True:
                    await ws.send(json.dumps({"type": "signal", "to": "p%03d" % (2 * k + 1),
                                              "n": n}))
                    n += 1
                    sent[k] = n
                    await asyncio.sleep(0.1)
            except websockets.ConnectionClosed:
                pass

        readers = [asyncio.create_task(recv_loop(i)) for i in range(2 * pairs)]
        senders = [asyncio.create_task(send_loop(k)) for k in range(pairs)]
        await asyncio.sleep(1.5)
        assert all(got), "some pair had no traffic before SIGTERM"
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        rc = await asyncio.to_thread(srv.proc.wait, 15)
        took = time.monotonic() - t0
        await asyncio.wait_for(asyncio.gather(*readers), 10)
        await asyncio.wait_for(asyncio.gather(*senders), 10)
        return rc, took, got, sent, codes, errors

    rc, took, got, sent, codes, errors = run(go(), timeout=120)
    assert rc == 0, srv.stderr_text()[-2000:]
    assert took < 5.0 + 2.0, took
    assert codes == [1001] * (2 * pairs), sorted(set(codes))
    for k in range(pairs):
        assert got[k] == list(range(len(got[k]))), (k, "lost or reordered", got[k][:50])
        assert len(got[k]) <= sent[k]
    # a receiver closed first makes later messages of its sender "not found"
    for i, m in errors:
        assert i % 2 == 0 and m["type"] == "error", (i, m)


def test_sigterm_mid_burst_keeps_every_acknowledged_chat_message(server_factory, own_pg):
    """Four chat users on PostgreSQL send messages as fast as acks come
    back (several in flight each) when the process gets SIGTERM in the
    middle of the burst; then it is started again on the same database.
    (test_chat_ws covers SIGTERM after the last ack and SIGKILL; this is
    SIGTERM with sends still in flight.)

    What the user sees: every connection is closed with 1001, the process
    exits 0; each message got an ack, an error, or nothing (it was in
    flight at the close); after the restart the same client_id resent is
    acknowledged with the same id.

    Guaranteed: every message acknowledged before the close is in the
    history after the restart, with its id, exactly once."""
    from chat_fixtures import BASE_FLAGS, Client, register
    import chat_fixtures

    flags = list(BASE_FLAGS) + ["--database.url=" + own_pg.url()]

    class _Chat:
        def __init__(self):
            self.start()

        def start(self):
            self.srv = server_factory(*flags, role="chat")
            chat_fixtures.wait_ready(self.srv)
            self.port = self.srv.port

        def ws_url(self, token=None, path="/ws"):
            return "ws://127.0.0.1:%d%s?token=%s" % (self.port, path, token)

        def api(self, method, path, body=None, token=None, **kw):
            return chat_fixtures.api(self.port, method, path, body=body, token=token, **kw)

    chat = _Chat()
    names = ["ann", "ben", "cat", "dan"]
    tokens = {n: register(chat, n)[0] for n in names}

    async def go():
        import websockets
        clients = {}
        for n in names:
            c = await Client.connect(chat, tokens[n], n)
            await c.send({"type": "join", "room": "general"})
            await c.expect(type="joined", room="general")
            clients[n] = c
        acked = {}

        async def user(n):
            c = clients[n]
            k = 0
            inflight = 0
            try:
                while True:
                    while inflight < 4:
                        cid = "%s-%d" % (n, k)
                        k += 1
                        await c.send({"type": "message", "room": "general",
                                      "body": "b " + cid, "client_id": cid})
                        inflight += 1
                    raw = await asyncio.wait_for(c.ws.recv(), 10)
                    m = json.loads(raw)
                    if m.get("type") == "ack":
                        acked[m["client_id"]] = m["id"]
                        inflight -= 1
                    elif m.get("type") == "error" and "client_id" in m:
                        inflight -= 1
            except websockets.ConnectionClosed:
                return c.ws.close_code

        tasks = [asyncio.create_task(user(n)) for n in names]
        await asyncio.sleep(1.5)
        assert len(acked) >= 20, len(acked)
        chat.srv.proc.send_signal(signal.SIGTERM)
        rc = await asyncio.to_thread(chat.srv.proc.wait, 15)
        codes = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        return rc, codes, acked

    rc, codes, acked = run(go(), timeout=90)
    assert rc == 0, chat.srv.stderr_text()[-2000:]
    assert codes == [1001] * len(names), codes
    chat.start()
    hist = full_history(chat, tokens["ann"], "general")
    stored = {}
    for m in hist:
        assert m["client_id"] not in stored, ("stored twice", m)
        stored[m["client_id"]] = m["id"]
    missing = sorted(set(acked) - set(stored))
    assert not missing, ("acknowledged but lost", missing[:10], len(missing))
    assert {c: stored[c] for c in acked} == acked

    async def again():
        c = await Client.connect(chat, tokens["ann"], "ann")
        cid = next(x for x in sorted(acked) if x.startswith("ann-"))
        await c.send({"type": "message", "room": "general", "body": "b " + cid,
                      "client_id": cid})
        ack = await c.expect(type="ack", client_id=cid)
        await c.close()
        return ack

    assert run(again())["id"] == acked[sorted(x for x in acked if x.startswith("ann-"))[0]]


# ====================================================== raft partition


class NsNode(helpers.Process):
    """A game node run inside a network namespace of a netns.NetLab, at
    the lab's address (HTTP 8080, peer link 50051, raft 50052)."""

    HTTP, PEER, RAFT = 8080, 50051, 50052

    def __init__(self, lab, i, workdir, peers):
        from game_fixtures import CLUSTER_FLAGS
        self.name = "n%d" % i
        self.host = lab.addr(i)
        self.workdir = Path(workdir)
        data = self.workdir / "data"
        data.mkdir(parents=True)
        self.flags = [f for f in CLUSTER_FLAGS if not f.startswith("--game.cluster")] + [
            "--game.peers=" + peers,
            "--game.advertise_addr=" + self.host,
            "--game.peer_port=%d" % self.PEER,
            "--game.raft_port=%d" % self.RAFT,
            "--game.data_dir=%s" % data,
        ]
        self.stdout_path = self.workdir / "stdout.log"
        self.stderr_path = self.workdir / "stderr.log"
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.argv = lab.exec_argv(i, [helpers.BIN, "--role=game", "--addr=" + self.host,
                                      "--port=%d" % self.HTTP] + self.flags)
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._err, env=helpers.clean_env())
        self.node_id = None

    @property
    def ws_url(self):
        return "ws://%s:%d/ws" % (self.host, self.HTTP)

    def health(self):
        r = http_get(self.HTTP, "/health", timeout=2, host=self.host)
        assert r.status == 200, r
        return r.json()

    def ready(self):
        return ready_status(self.HTTP, host=self.host)

    def guest(self, nick):
        import http.client
        conn = http.client.HTTPConnection(self.host, self.HTTP, timeout=5)
        try:
            conn.request("POST", "/api/auth/guest", body=json.dumps({"nickname": nick}),
                         headers={"Content-Type": "application/json", "Connection": "close"})
            resp = conn.getresponse()
            body = json.loads(resp.read())
            assert resp.status == 200, body
            return body["token"]
        finally:
            conn.close()

    def games(self):
        r = http_get(self.HTTP, "/api/games", timeout=3, host=self.host)
        assert r.status == 200, r
        return r.json()["games"]


def agreed(nodes, voters=None):
    """The node all of nodes name as leader (and that says it leads), or None."""
    try:
        hs = [n.health() for n in nodes]
    except (OSError, AssertionError):
        return None
    leaders = {str(h["leader"]) for h in hs}
    leading = [n for n, h in zip(nodes, hs) if h["raft_state"] == "leader"]
    if len(leaders) != 1 or len(leading) != 1 or str(leading[0].node_id) not in leaders:
        return None
    if voters is not None and any(voter_n(h["voters"]) != voters for h in hs):
        return None
    return leading[0]


def voter_n(v):
    return len(v) if isinstance(v, list) else v


@pytest.fixture
def net_lab(request):
    import netns
    why = netns.netns_missing()
    if why is not None:
        if os.environ.get("PM_REQUIRE_NETNS") == "1":
            pytest.fail("PM_REQUIRE_NETNS=1 but partition tests cannot run: " + why)
        pytest.skip(why)
    lab = netns.NetLab(3, "g")
    request.addfinalizer(lab.close)
    return lab


def test_partitioned_raft_leader_is_replaced_and_rejoins(net_lab, tmp_path):
    """Three game nodes, each in its own network namespace, form a raft
    cluster through static peers. Two players on a follower play a duel.
    Then nftables rules in the leader's namespace drop every packet
    between it and the other two nodes (not the clients), and after a
    while the rules go again.

    What the user sees: on the majority side the duel keeps ticking and a
    new duel can be matched and started (so the new leader commits);
    a new leader is elected among the two connected nodes within 15 s.
    The cut-off node stops calling itself leader, knows no leader, and its
    /ready answers 503 naming "raft" (game.md: 503 until the node is in a
    cluster with a leader), so a load balancer stops sending players to
    it. After healing, within 20 s the old leader is a follower of the new
    leader, /ready is 200 again, all three agree on leader and voters, and
    it lists the same games (ids, owners, status) as the others.
    Nothing crashes; every node exits 0 on SIGTERM."""
    from game_fixtures import Bot, close_bots, start_duel

    lab = net_lab
    peers = ",".join("%s:%d" % (lab.addr(i), NsNode.PEER) for i in range(3))
    nodes = []
    try:
        for i in range(3):
            nodes.append(NsNode(lab, i, tmp_path / ("ns%d" % i), peers))
        for n in nodes:
            wait_until(lambda n=n: n.ready()[0] == 200, "%s not ready" % n.name, 30)
            n.node_id = n.health()["node_id"]
        leader = wait_until(lambda: agreed(nodes, voters=3), "no agreed leader of 3 voters", 20)
        L = nodes.index(leader)
        rest = [n for n in nodes if n is not leader]
        F = rest[0]

        async def play():
            p1 = Bot("np1", F.guest("nsone"))
            p2 = Bot("np2", F.guest("nstwo"))
            await p1.connect(F.ws_url)
            await p2.connect(F.ws_url)
            p1.mode = p2.mode = "autopilot"
            gid = await start_duel(F, p1, p2)
            await p1.sleep_ticks(3, timeout=10)
            return p1, p2, gid

        async def go():
            p1, p2, gid = await play()
            bots = [p1, p2]
            try:
                lab.partition(L)
                assert "pmtest" in lab.rules(L)
                t_cut = time.monotonic()
                new = await asyncio.to_thread(
                    wait_until, lambda: agreed(rest), "no new leader on the majority side", 15)
                assert new is not leader
                # the running duel never stopped
                await p1.sleep_ticks(5, timeout=10)
                p1.model().assert_clean("p1 during the partition")
                # a new game starts on the majority side (raft commits)
                other = rest[1]
                p3 = Bot("np3", other.guest("nsthree"))
                p4 = Bot("np4", other.guest("nsfour"))
                bots += [p3, p4]
                await p3.connect(other.ws_url)
                await p4.connect(other.ws_url)
                p3.mode = p4.mode = "autopilot"
                gid2 = await start_duel(other, p3, p4, timeout=10)
                assert gid2 != gid
                await p3.sleep_ticks(3, timeout=10)

                # the cut-off node: not leader, no leader, /ready 503
                def minority_knows():
                    h = leader.health()
                    st, body = leader.ready()
                    if h["raft_state"] != "leader" and st == 503:
                        return h, body
                    return None
                h, body = await asyncio.to_thread(
                    wait_until, minority_knows, "the cut-off node still acts as leader or ready", 15)
                assert str(h["leader"]) in ("0", "None"), h
                assert "raft" in body.get("failing", []), body
                assert time.monotonic() - t_cut < 30

                lab.heal(L)

                def rejoined():
                    ld = agreed(nodes, voters=3)
                    return ld if ld is not None and leader.ready()[0] == 200 else None
                ld = await asyncio.to_thread(wait_until, rejoined,
                                             "the old leader did not rejoin", 20)
                assert ld is not leader and leader.health()["raft_state"] == "follower"

                def same_games():
                    lists = [sorted((g["id"], str(g["owner"]), g.get("status"))
                                    for g in n.games()) for n in nodes]
                    return lists if all(x == lists[0] for x in lists) else None
                lists = await asyncio.to_thread(wait_until, same_games,
                                                "nodes list different games", 10)
                assert {g[0] for g in lists[0]} >= {gid, gid2}, lists[0]
                for p in (p1, p3):
                    await p.sleep_ticks(2, timeout=10)
            finally:
                await close_bots(bots)

        run(go(), timeout=150)
        for n in nodes:
            assert n.alive(), (n.name, n.stderr_text()[-2000:])
    finally:
        rcs = {}
        for n in nodes:
            if n.alive():
                n.proc.send_signal(signal.SIGTERM)
        for n in nodes:  # one SIGTERM each: a second one exits at once
            try:
                n.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
            rcs[n.name] = n.stop(signal.SIGKILL)
        for n in nodes:
            n.check_log_format()
    assert rcs == {n.name: 0 for n in nodes}, (rcs, [n.stderr_text()[-1500:] for n in nodes])
