"""The y-webrtc signaling dialect (npm y-webrtc's bin/server.js protocol):
subscribe / unsubscribe / publish / ping on any WebSocket path the other
dialects do not claim, its caps, its metric, its coexistence with the
p2pmesh dialect on one port, cluster mode through Redis, and two real
y-webrtc clients (yjs + @roamhq/wrtc) syncing a document through p2pmesh.

Ordering between connections: a server handles one connection's frames in
order, so after `subscribe` each client sends `ping` and waits for `pong`
(see `sub`): once the pong is back the subscription exists, and a publish
sent afterwards on any connection must see it.
"""

import asyncio
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from helpers import (
    RawWS,
    assert_silent,
    close_all,
    get_metrics,
    http_get,
    join,
    metric_value,
    recv_json,
    ws_connect,
)

HERE = Path(__file__).resolve().parent
YJS_SYNC = HERE / "clients" / "yjs_sync.js"
NODE_MODULES = HERE.parent / "node_modules"

PONG = {"type": "pong"}
METRIC = "p2pmesh_signaling_relayed_total"


def run(coro, timeout=9):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def topic_name(tag="t"):
    return "%s-%s" % (tag, uuid.uuid4().hex[:12])


async def send(ws, obj):
    await ws.send(json.dumps(obj))


async def barrier(ws):
    """Ping/pong round trip: every earlier frame of ws has been handled."""
    await send(ws, {"type": "ping"})
    msg = await recv_json(ws)
    assert msg == PONG, msg


async def sub(ws, *topics):
    await send(ws, {"type": "subscribe", "topics": list(topics)})
    await barrier(ws)


async def unsub(ws, *topics):
    await send(ws, {"type": "unsubscribe", "topics": list(topics)})
    await barrier(ws)


async def connect(url, n=1):
    out = []
    for _ in range(n):
        out.append(await ws_connect(url))
    return out


def pub_msg(topic, **extra):
    msg = {"type": "publish", "topic": topic,
           "data": {"type": "announce", "from": uuid.uuid4().hex}}
    msg.update(extra)
    return msg


def _no_dup_keys(pairs):
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), "duplicate keys in %r" % (pairs,)
    return dict(pairs)


async def recv_strict(ws, timeout=3.0):
    """Next message: one JSON object in a text frame, no key twice (a
    `clients` added next to the sender's would pass a plain json.loads)."""
    raw = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(raw, str), "server sent a binary frame: %r" % (raw,)
    obj = json.loads(raw, object_pairs_hook=_no_dup_keys)
    assert isinstance(obj, dict), obj
    return obj


async def expect_delivery(wss, msg, clients):
    """Each of wss receives msg plus clients=... (nothing else first)."""
    want = dict(msg, clients=clients)
    for i, ws in enumerate(wss):
        got = await recv_strict(ws)
        assert got == want, (i, got, want)


async def silent_all(wss, duration=0.3):
    await asyncio.gather(*(assert_silent(ws, duration) for ws in wss))


def relayed_yws(port):
    _, samples = get_metrics(port)
    v = metric_value(samples, METRIC, dialect="y-webrtc")
    assert v is not None, "no %s{dialect=\"y-webrtc\"} series" % METRIC
    return v


# ------------------------------------------------------ subscribe/publish


def test_publish_reaches_every_subscriber_with_clients_count(server):
    t = topic_name()
    other = topic_name("other")

    async def go():
        a, b, c, d = await connect(server.ws_url, 4)
        try:
            await sub(a, t)
            await sub(b, t)
            await sub(c, t)
            await sub(d, other)  # a subscriber of another topic
            msg = pub_msg(t, extra={"nested": [1, 2.5, None, True, "h\u00e9llo \u2603"]},
                          token=1716212345678.1234)
            await send(a, msg)  # the sender is a subscriber: it gets its echo
            await expect_delivery([a, b, c], msg, 3)
            await silent_all([a, b, c, d])
            # every subscriber may publish; the count stays the subscriber count
            msg2 = pub_msg(t)
            await send(c, msg2)
            await expect_delivery([a, b, c], msg2, 3)
            await silent_all([a, b, c, d])
        finally:
            await close_all([a, b, c, d])

    run(go())


def test_publisher_need_not_be_subscribed(server):
    t = topic_name()

    async def go():
        s1, s2, p = await connect(server.ws_url, 3)
        try:
            await sub(s1, t)
            await sub(s2, t)
            # the publisher's very first message is the publish
            msg = pub_msg(t)
            await send(p, msg)
            await expect_delivery([s1, s2], msg, 2)
            await silent_all([p, s1, s2])  # no echo to a non-subscriber
        finally:
            await close_all([s1, s2, p])

    run(go())


def test_sender_supplied_clients_is_overwritten(server):
    t = topic_name()

    async def go():
        a, b = await connect(server.ws_url, 2)
        try:
            await sub(a, t)
            await sub(b, t)
            msg = pub_msg(t, clients=99)
            await send(b, msg)
            await expect_delivery([a, b], msg, 2)  # dict(msg, clients=2)
        finally:
            await close_all([a, b])

    run(go())


def test_publish_to_topic_without_subscribers_is_dropped(server):
    t = topic_name()

    async def go():
        a, b = await connect(server.ws_url, 2)
        try:
            await sub(b, topic_name("elsewhere"))
            await send(a, pub_msg(t))
            await barrier(a)  # the publish was handled: nothing came before the pong
            await silent_all([a, b])
            # a subscriber of the topic gets later publishes (the drop left no state)
            await sub(b, t)
            msg = pub_msg(t)
            await send(a, msg)
            await expect_delivery([b], msg, 1)
            await silent_all([a, b])
        finally:
            await close_all([a, b])

    run(go())


def test_any_path_carries_the_dialect(server):
    """y-webrtc clients connect to whatever URL they are given."""
    t = topic_name()

    async def go():
        base = server.ws_url.rstrip("/")
        a = await ws_connect(base + "/")
        b = await ws_connect(base + "/ws")
        c = await ws_connect(base + "/some/room/path?x=1")
        try:
            for ws in (a, b, c):
                await sub(ws, t)
            msg = pub_msg(t)
            await send(b, msg)
            await expect_delivery([a, b, c], msg, 3)
        finally:
            await close_all([a, b, c])

    run(go())


# ------------------------------------------------------ unsubscribe/close


def test_unsubscribe_stops_delivery(server):
    t, u = topic_name("t"), topic_name("u")

    async def go():
        a, b = await connect(server.ws_url, 2)
        try:
            await sub(a, t, u)
            await sub(b, t)
            await unsub(a, t)
            msg = pub_msg(t)
            await send(b, msg)
            await expect_delivery([b], msg, 1)
            await silent_all([a, b])
            # a's other subscription is untouched
            msg = pub_msg(u)
            await send(b, msg)
            await expect_delivery([a], msg, 1)
            # unsubscribing what one never subscribed is harmless
            await unsub(b, u, topic_name("never"))
            msg = pub_msg(u)
            await send(a, msg)
            await expect_delivery([a], msg, 1)
            await silent_all([a, b])
            # and one may subscribe again
            await sub(a, t)
            msg = pub_msg(t)
            await send(a, msg)
            await expect_delivery([a, b], msg, 2)
        finally:
            await close_all([a, b])

    run(go())


async def wait_clients(pub, listener, topic, want, tries=30):
    """Publish on topic until listener sees clients == want (bounded)."""
    last = None
    for _ in range(tries):
        msg = pub_msg(topic)
        await send(pub, msg)
        got = await recv_json(listener)
        assert got["data"] == msg["data"], got
        last = got["clients"]
        if last == want:
            return msg
        await asyncio.sleep(0.1)
    raise AssertionError("clients stayed %r, expected %r" % (last, want))


def test_close_removes_socket_from_all_topics(server):
    t, u = topic_name("t"), topic_name("u")

    async def go():
        a, b = await connect(server.ws_url, 2)
        raw = RawWS(server.port, "/")
        try:
            await sub(a, t, u)
            await sub(b, t, u)
            raw.send_json({"type": "subscribe", "topics": [t, u]})
            raw.send_json({"type": "ping"})
            assert raw.recv_json() == PONG
            msg = pub_msg(t)
            await send(a, msg)
            await expect_delivery([a, b], msg, 3)
            assert raw.recv_json() == dict(msg, clients=3)

            # abrupt TCP close, no close frame
            raw.close()
            await wait_clients(a, b, t, 2)
            await wait_clients(a, b, u, 2)
            # wait_clients' publishes also went to a (the sender)
            while True:
                try:
                    await asyncio.wait_for(a.recv(), 0.3)
                except asyncio.TimeoutError:
                    break

            # graceful close
            await asyncio.wait_for(b.close(), 3)
            msg = await wait_clients(a, a, t, 1)
            msg = await wait_clients(a, a, u, 1)
            await assert_silent(a, 0.3)
        finally:
            raw.close()
            await close_all([a, b])

    run(go())


def test_last_subscriber_gone_topic_is_dropped(server):
    t = topic_name()

    async def go():
        a, p = await connect(server.ws_url, 2)
        try:
            await sub(a, t)
            await unsub(a, t)
            await send(p, pub_msg(t))
            await barrier(p)
            await silent_all([a, p])
        finally:
            await close_all([a, p])

    run(go())


# ------------------------------------------------------- malformed input


def test_non_string_topics_are_skipped(server):
    t = topic_name()

    async def go():
        a, p = await connect(server.ws_url, 2)
        try:
            await sub(a, 1, None, True, {"x": t}, [t], 2.5, t)
            msg = pub_msg(t)
            await send(p, msg)
            await expect_delivery([a], msg, 1)
            # the skipped entries did not become topics (e.g. "1", "None")
            for junk in ("1", "None", "null", "True", "true", "2.5"):
                await send(p, pub_msg(junk))
            await barrier(p)
            await silent_all([a, p])
            # a publish with a non-string topic is dropped
            await send(p, {"type": "publish", "topic": [t], "data": {}})
            await send(p, {"type": "publish", "topic": None, "data": {}})
            await send(p, {"type": "publish", "data": {}})
            await barrier(p)
            await silent_all([a, p])
        finally:
            await close_all([a, p])

    run(go())


def test_topics_not_an_array_is_ignored(server):
    t = topic_name()

    async def go():
        a, p = await connect(server.ws_url, 2)
        try:
            await send(a, {"type": "subscribe", "topics": t})
            await send(a, {"type": "subscribe", "topics": {"0": t}})
            await send(a, {"type": "subscribe", "topics": None})
            await send(a, {"type": "subscribe"})
            await barrier(a)
            await send(p, pub_msg(t))
            for ch in sorted(set(t))[:3]:  # not treated as a list of chars
                await send(p, pub_msg(ch))
            await barrier(p)
            await silent_all([a, p])
            # an unsubscribe with a string does not drop the subscription
            await sub(a, t)
            await send(a, {"type": "unsubscribe", "topics": t})
            await barrier(a)
            msg = pub_msg(t)
            await send(p, msg)
            await expect_delivery([a], msg, 1)
        finally:
            await close_all([a, p])

    run(go())


def test_bad_json_ignored_and_socket_stays_open(server):
    t = topic_name()

    async def go():
        a, b = await connect(server.ws_url, 2)
        try:
            await sub(a, t)
            await send(b, pub_msg(topic_name("nobody")))  # b: y-webrtc by a publish
            await barrier(b)
            for ws in (a, b):
                for junk in ("{not json", "", "}", "[1,2", "nul", '{"type":"publish",',
                             "[1,2,3]", '"publish"', "42", "null",
                             '{"type":5}', '{"type":null,"topic":"%s"}' % t,
                             '{"type":"bogus","topic":"%s"}' % t,
                             '{"type":"join","peerId":"aa"}'):
                    await ws.send(junk)
                await ws.send(b"\xff\xfe garbage \x00")  # a binary frame
            # no error frame, no delivery, and the connections are open
            await silent_all([a, b], 0.4)
            await barrier(a)
            await barrier(b)
            msg = pub_msg(t)
            await send(b, msg)
            await expect_delivery([a], msg, 1)
            await silent_all([a, b])
        finally:
            await close_all([a, b])

    run(go())


def test_bad_json_over_raw_socket_keeps_connection(server):
    """Same with a hand-made client: garbage text frames, then a publish."""
    t = topic_name()
    with RawWS(server.port, "/") as raw:
        raw.send_json({"type": "subscribe", "topics": [t]})
        raw.send_text(b'{"type":"publish","topic":')
        raw.send_text(b"\x7b\x22\x74")
        raw.send_json({"type": "ping"})
        f = raw.recv_message()
        assert f.json() == PONG, f
        msg = pub_msg(t)
        raw.send_json(msg)
        assert raw.recv_json() == dict(msg, clients=1)


def test_garbage_before_first_message_does_not_lock_out_ywebrtc(server):
    """Before its first valid message a socket's dialect is unknown, and the
    p2pmesh dialect's answer to bad JSON (an error frame, connection kept)
    may come; the socket must still become a y-webrtc one afterwards."""
    t = topic_name()
    allowed = {"type": "error", "message": "Invalid JSON message format."}

    async def go():
        a, p = await connect(server.ws_url, 2)
        try:
            await a.send("{not json")
            await send(a, {"type": "ping"})
            while True:  # at most the p2pmesh error, then the pong
                got = await recv_json(a)
                if got == PONG:
                    break
                assert got == allowed, got
            await sub(a, t)
            msg = pub_msg(t)
            await send(p, msg)
            await expect_delivery([a], msg, 1)
            # now a y-webrtc socket: bad JSON gets no answer at all
            await a.send("{not json")
            await assert_silent(a, 0.3)
            await barrier(a)
        finally:
            await close_all([a, p])

    run(go())


def test_ping_gets_exactly_pong(server):
    t = topic_name()

    async def go():
        a = await ws_connect(server.ws_url)
        try:
            # before the dialect is decided
            await send(a, {"type": "ping"})
            got = await asyncio.wait_for(a.recv(), 3)
            assert json.loads(got) == PONG, got
            # still undecided: a subscribe makes it y-webrtc
            await send(a, {"type": "subscribe", "topics": [t]})
            await send(a, {"type": "ping"})
            got = await asyncio.wait_for(a.recv(), 3)
            assert json.loads(got) == PONG, got
            msg = pub_msg(t)
            await send(a, msg)
            assert await recv_json(a) == dict(msg, clients=1)
            # several pings, several pongs, nothing else
            for _ in range(3):
                await send(a, {"type": "ping"})
            for _ in range(3):
                assert await recv_json(a) == PONG
            await assert_silent(a, 0.3)
        finally:
            await close_all([a])

    run(go())


# ------------------------------------------------------------------- caps


def test_max_topics_per_conn(server_factory):
    srv = server_factory("--signaling.max_topics_per_conn=2")
    t1, t2, t3 = topic_name("t1"), topic_name("t2"), topic_name("t3")

    async def go():
        a, p = await connect(srv.ws_url, 2)
        try:
            await sub(a, t1, t1, t2, t3)  # a duplicate does not use a slot
            await sub(a, t3)  # neither does a later try
            for t in (t1, t2):
                msg = pub_msg(t)
                await send(p, msg)
                await expect_delivery([a], msg, 1)
            await send(p, pub_msg(t3))
            await barrier(p)
            await silent_all([a, p])
            # the cap is per connection: another one may subscribe t3
            await sub(p, t3)
            msg = pub_msg(t3)
            await send(a, msg)
            await expect_delivery([p], msg, 1)
            await silent_all([a, p])
            # an unsubscribe frees a slot
            await unsub(a, t1)
            await sub(a, t3)
            msg = pub_msg(t3)
            await send(p, msg)
            await expect_delivery([a, p], msg, 2)
        finally:
            await close_all([a, p])

    run(go())


def test_max_peers_per_topic(server_factory):
    srv = server_factory("--signaling.max_peers_per_realm=2")
    t, u = topic_name("t"), topic_name("u")

    async def go():
        a, b, c = await connect(srv.ws_url, 3)
        try:
            await sub(a, t)
            await sub(b, t)
            await sub(c, t, u)  # t is full; u is not
            msg = pub_msg(t)
            await send(c, msg)  # c may still publish
            await expect_delivery([a, b], msg, 2)
            await silent_all([a, b, c])
            msg = pub_msg(u)
            await send(a, msg)
            await expect_delivery([c], msg, 1)
            # a place freed by a leaving subscriber can be taken
            await asyncio.wait_for(a.close(), 3)
            deadline = time.monotonic() + 3
            while True:
                await sub(c, t)
                msg = pub_msg(t)
                await send(b, msg)
                got = await recv_json(b)
                assert got["data"] == msg["data"], got
                if got["clients"] == 2:
                    assert await recv_json(c) == dict(msg, clients=2)
                    break
                assert time.monotonic() < deadline, "c never got a's place: %r" % got
                await asyncio.sleep(0.1)
        finally:
            await close_all([a, b, c])

    run(go())


# --------------------------------------------------- two dialects, metric


def test_p2pmesh_and_ywebrtc_on_one_port(server):
    t = topic_name()

    async def go():
        y1, y2 = await connect(server.ws_url, 2)
        m1 = m2 = None
        try:
            await sub(y1, t, "aa", "bb")  # topics named like mesh ids
            await sub(y2, t)
            m1, boot = await join(server.ws_url, "aa")
            assert boot == {"type": "bootstrap_peers", "peers": []}, boot
            # y-webrtc traffic reaches neither mesh peer
            msg = pub_msg(t)
            await send(y2, msg)
            await expect_delivery([y1, y2], msg, 2)
            await send(y2, pub_msg("aa"))
            assert (await recv_json(y1))["topic"] == "aa"
            # a join on a y-webrtc socket is not a mesh join
            await send(y2, {"type": "join", "peerId": "cc"})
            await barrier(y2)
            # the y-webrtc sockets are not mesh peers
            m2, boot = await join(server.ws_url, "bb")
            assert boot == {"type": "bootstrap_peers", "peers": [{"id": "aa"}]}, boot
            assert await recv_json(m1) == {"type": "peer_joined", "peerId": "bb"}
            # mesh relay works and reaches no y-webrtc socket
            await send(m1, {"type": "signal", "to": "bb", "signal": {"sdp": "x"}})
            assert await recv_json(m2) == {"type": "signal", "to": "bb", "from": "aa",
                                           "signal": {"sdp": "x"}}
            # publish on a mesh socket is the mesh dialect's unknown type
            await send(m2, pub_msg(t))
            assert await recv_json(m2) == {"type": "error",
                                           "message": "Unknown message type: publish"}
            # mesh ping keeps its timestamp
            await send(m1, {"type": "ping", "timestamp": 12345})
            assert await recv_json(m1) == {"type": "pong", "timestamp": 12345}
            await silent_all([y1, y2, m1, m2])
            # y-webrtc still works after all that
            msg = pub_msg(t)
            await send(y1, msg)
            await expect_delivery([y1, y2], msg, 2)
            # a mesh peer leaving is not seen by y-webrtc sockets
            await asyncio.wait_for(m2.close(), 3)
            assert await recv_json(m1) == {"type": "peer_left", "peerId": "bb"}
            await silent_all([y1, y2])
        finally:
            await close_all([x for x in (y1, y2, m1, m2) if x is not None])

    run(go())
    _, samples = get_metrics(server.port)
    assert metric_value(samples, METRIC, dialect="p2pmesh") == 1
    assert metric_value(samples, METRIC, dialect="y-webrtc") == 2 + 1 + 2


def test_relayed_metric_counts_deliveries(server):
    t = topic_name()

    async def go():
        a, b, c, p = await connect(server.ws_url, 4)
        try:
            assert relayed_yws(server.port) == 0
            for ws in (a, b, c):
                await sub(ws, t)
            assert relayed_yws(server.port) == 0  # subscribe and pong are not relays
            await send(p, pub_msg(t))
            await send(p, pub_msg(t))
            for ws in (a, b, c):
                await recv_json(ws)
                await recv_json(ws)
            assert relayed_yws(server.port) == 6
            await send(a, pub_msg(t))  # the echo to the sender counts too
            for ws in (a, b, c):
                await recv_json(ws)
            assert relayed_yws(server.port) == 9
            await send(p, pub_msg(topic_name("nobody")))  # dropped: not counted
            await barrier(p)
            assert relayed_yws(server.port) == 9
            _, samples = get_metrics(server.port)
            assert metric_value(samples, METRIC, dialect="p2pmesh") == 0
        finally:
            await close_all([a, b, c, p])

    run(go())


# ---------------------------------------------------------------- cluster


def wait_ready(srv, timeout=5.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = http_get(srv.port, "/ready")
        if last.status == 200:
            return
        time.sleep(0.05)
    raise AssertionError("instance on %d not ready: %r" % (srv.port, last))


def cluster(server_factory, redis_server, n=2):
    srvs = [server_factory("--redis.url=" + redis_server.url) for _ in range(n)]
    for s in srvs:
        wait_ready(s)
    return srvs


def wait_numsub(redis_server, topic, want, timeout=3.0):
    """Wait until `want` instances listen on the topic's Redis channel."""
    ch = "sig:topic:" + topic
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        out = redis_server.cli("PUBSUB", "NUMSUB", ch)
        lines = (out or "").split("\n")
        if len(lines) == 2 and lines[0] == ch:
            got = int(lines[1])
            if got == want:
                return
        time.sleep(0.03)
    raise AssertionError("PUBSUB NUMSUB %s = %r, expected %d" % (ch, got, want))


def test_cluster_publish_crosses_instances(server_factory, redis_server):
    s1, s2 = cluster(server_factory, redis_server)
    t = topic_name()

    async def go():
        a1, b1 = await connect(s1.ws_url, 2)
        p2, c2 = await connect(s2.ws_url, 2)
        try:
            await sub(a1, t)
            await sub(b1, t)
            await asyncio.get_running_loop().run_in_executor(
                None, wait_numsub, redis_server, t, 1)

            # subscribers on instance 1, publisher (not subscribed) on 2
            msg = pub_msg(t, token=1716212345678.1234)
            await send(p2, msg)
            await expect_delivery([a1, b1], msg, 2)  # instance 1's count
            await silent_all([a1, b1, p2, c2])

            # a subscriber on instance 2 too: each instance counts its own
            await sub(c2, t)
            await asyncio.get_running_loop().run_in_executor(
                None, wait_numsub, redis_server, t, 2)
            msg = pub_msg(t)
            await send(p2, msg)
            await expect_delivery([c2], msg, 1)
            await expect_delivery([a1, b1], msg, 2)
            # and the other way round, the sender's echo only once
            msg = pub_msg(t)
            await send(a1, msg)
            await expect_delivery([a1, b1], msg, 2)
            await expect_delivery([c2], msg, 1)
            await silent_all([a1, b1, p2, c2])
            assert relayed_yws(s1.port) == 6
            assert relayed_yws(s2.port) == 2

            # instance 1's subscribers leave: nothing more reaches them
            await unsub(a1, t)
            await asyncio.wait_for(b1.close(), 3)
            await asyncio.get_running_loop().run_in_executor(
                None, wait_numsub, redis_server, t, 1)
            msg = pub_msg(t)
            await send(p2, msg)
            await expect_delivery([c2], msg, 1)
            await silent_all([a1, p2, c2])
            assert relayed_yws(s1.port) == 6

            # the last subscriber leaves: the topic is dropped everywhere
            await unsub(c2, t)
            await asyncio.get_running_loop().run_in_executor(
                None, wait_numsub, redis_server, t, 0)
            await send(p2, pub_msg(t))
            await barrier(p2)
            await silent_all([a1, p2, c2])
            assert relayed_yws(s1.port) == 6
            assert relayed_yws(s2.port) == 3
        finally:
            await close_all([a1, b1, p2, c2])

    run(go())


# ------------------------------------------------------------ real client


def run_yjs_sync(*urls, timeout_ms=15000):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not installed")
    for mod in ("y-webrtc", "yjs", "ws", "@roamhq/wrtc"):
        if not (NODE_MODULES / mod).is_dir():
            pytest.skip("tests/node_modules/%s missing (npm ci in tests/)" % mod)
    t0 = time.monotonic()
    r = subprocess.run(
        [node, str(YJS_SYNC), *urls, "--timeout-ms=%d" % timeout_ms],
        cwd=str(HERE), capture_output=True, text=True,
        timeout=timeout_ms / 1000 + 10,
        # lib0 logs every module when LOG is set (even empty): keep it unset
        env={k: v for k, v in os.environ.items() if k not in ("LOG", "DEBUG")},
    )
    assert r.returncode == 0, ("yjs_sync.js exit %d after %.1fs\nstdout: %s\nstderr: %s"
                               % (r.returncode, time.monotonic() - t0, r.stdout, r.stderr[-3000:]))
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True, summary
    for side in ("A", "B"):
        assert summary[side]["text"] == "hello from A;hello from B;", summary
        assert summary[side]["state"]["webrtcReady"] >= 1, summary
        assert summary[side]["state"]["bcPeers"] == 0, summary
    return summary


def test_real_yjs_docs_sync_through_p2pmesh(server):
    before = relayed_yws(server.port)
    assert before == 0
    run_yjs_sync(server.ws_url)
    # the offers/answers/candidates went through this server
    assert relayed_yws(server.port) > 0


def test_real_yjs_docs_sync_across_two_instances(server_factory, redis_server):
    s1, s2 = cluster(server_factory, redis_server)
    run_yjs_sync(s1.ws_url, s2.ws_url)
    # each doc had only its own instance: both instances delivered signals
    n1, n2 = relayed_yws(s1.port), relayed_yws(s2.port)
    assert n1 > 0 and n2 > 0, (n1, n2)
