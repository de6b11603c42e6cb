"""The p2pmesh signaling dialect: join/bootstrap, realms, takeover, relays,
the offline mailbox, leave, ping, errors, and the signaling metrics."""

import asyncio
import hashlib
import json
import time

import pytest

from helpers import (
    HandshakeRefused,
    RawWS,
    assert_silent,
    close_all,
    get_metrics,
    http_get,
    ids_of,
    join,
    join_all,
    metric_value,
    recv_json,
    wait_closed,
    ws_connect,
    xor_nearest,
)

RELAY_TYPES = [
    "signal", "batched_signals", "offer", "answer", "candidate", "ack",
    "connection_rejected", "signal_rejected", "kademlia_rpc_request",
    "kademlia_rpc_response",
]


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def err(message):
    return {"type": "error", "message": message}


def not_found(peer, mtype):
    if mtype == "batched_signals":
        return err("Peer %s not found for batched signals." % peer)
    if mtype.startswith("kademlia_"):
        return err("Peer %s not found for %s." % (peer, mtype))
    return err("Peer %s not found." % peer)


def room(server, name):
    return server.ws_url + "?room=" + name


def sha_id(i):
    return hashlib.sha1(b"peer-%d" % i).hexdigest()


# -------------------------------------------------------------- join


def test_first_peer_gets_empty_bootstrap(server):
    async def go():
        ws, boot = await join(server.ws_url, "aa")
        try:
            assert boot["peers"] == [], boot
            await assert_silent(ws, 0.3)
        finally:
            await close_all([ws])

    run(go())


def test_join_announces_to_realm_and_bootstraps(server):
    async def go():
        peers = await join_all(server.ws_url, ["a1", "b2"])  # checks peer_joined
        try:
            ws, boot = await join(server.ws_url, "c3")
            peers["c3"] = ws
            assert sorted(ids_of(boot)) == ["a1", "b2"], boot
            for pid in ("a1", "b2"):
                assert await recv_json(peers[pid]) == {"type": "peer_joined", "peerId": "c3"}
            await assert_silent(ws, 0.3)  # the joiner is not told about itself
        finally:
            await close_all(peers.values())

    run(go())


@pytest.mark.parametrize("ids,target", [
    (["00", "f0", "0f", "81", "3c", "c3", "55", "7e"], "71"),
    # ids are big hex integers: case does not matter, length is not padding
    (["A0", "0b", "1F", "ff0", "3", "c00", "7", "abc"], "0E"),
])
def test_bootstrap_is_nearest_by_xor_nearest_first(server, ids, target):
    async def go():
        peers = await join_all(server.ws_url, ids)
        try:
            ws, boot = await join(server.ws_url, target)
            peers[target] = ws
            assert ids_of(boot) == xor_nearest(target, ids, 5), boot
        finally:
            await close_all(peers.values())

    run(go())


def test_bootstrap_with_160_bit_ids(server):
    # ids wider than 64 bits: the order needs the whole number
    ids = [sha_id(i) for i in range(9)]
    target = sha_id(100)
    # also ids that share the first 64 bits with the target
    ids += [target[:16] + sha_id(200 + i)[16:] for i in range(3)]

    async def go():
        peers = await join_all(server.ws_url, ids)
        try:
            ws, boot = await join(server.ws_url, target)
            peers[target] = ws
            want = xor_nearest(target, ids, 5)
            assert ids_of(boot) == want, (boot, want)
        finally:
            await close_all(peers.values())

    run(go())


def test_bootstrap_count_configurable(server_factory):
    srv = server_factory("--signaling.bootstrap_count=2")
    ids = ["10", "20", "30", "40", "50"]

    async def go():
        peers = await join_all(srv.ws_url, ids)
        try:
            ws, boot = await join(srv.ws_url, "37")
            peers["37"] = ws
            assert ids_of(boot) == xor_nearest("37", ids, 2), boot
        finally:
            await close_all(peers.values())

    run(go())


def test_realms_are_isolated(server):
    async def go():
        r1 = await join_all(room(server, "r1"), ["a1"])
        r2 = await join_all(room(server, "r2"), ["b1"])
        glob = await join_all(server.ws_url, ["c1"])
        try:
            ws, boot = await join(room(server, "r1"), "a2")
            r1["a2"] = ws
            assert ids_of(boot) == ["a1"], boot
            assert await recv_json(r1["a1"]) == {"type": "peer_joined", "peerId": "a2"}
            await assert_silent(r2["b1"], 0.3)
            await assert_silent(glob["c1"], 0.1)
        finally:
            await close_all(list(r1.values()) + list(r2.values()) + list(glob.values()))

    run(go())


def test_default_realm_is_shared_across_paths(server):
    async def go():
        a, _ = await join(server.ws_url, "a1")
        b, boot = await join(server.ws_url + "ws", "b1")
        try:
            assert ids_of(boot) == ["a1"], boot
            assert await recv_json(a) == {"type": "peer_joined", "peerId": "b1"}
        finally:
            await close_all([a, b])

    run(go())


def test_join_without_peer_id(server):
    async def go():
        ws = await ws_connect(server.ws_url)
        try:
            await ws.send(json.dumps({"type": "join"}))
            assert await recv_json(ws) == err("peerId is required for join message.")
            await ws.send(json.dumps({"type": "ping", "timestamp": 1}))
            assert await recv_json(ws) == {"type": "pong", "timestamp": 1}
        finally:
            await close_all([ws])

    run(go())


def test_peer_id_length_limit(server):
    async def go():
        watcher, _ = await join(server.ws_url, "ee")
        ws = await ws_connect(server.ws_url)
        try:
            await ws.send(json.dumps({"type": "join", "peerId": "a" * 129}))
            assert await recv_json(ws) == err("peerId must be at most 128 bytes.")
            await assert_silent(watcher, 0.3)
            await ws.send(json.dumps({"type": "join", "peerId": "b" * 128}))
            boot = await recv_json(ws)
            assert boot["type"] == "bootstrap_peers" and ids_of(boot) == ["ee"], boot
            assert await recv_json(watcher) == {"type": "peer_joined", "peerId": "b" * 128}
        finally:
            await close_all([ws, watcher])

    run(go())


# ----------------------------------------------------- takeover, rejoin


def test_takeover_by_second_connection(server):
    async def go():
        peers = await join_all(server.ws_url, ["aa", "cc"])
        old, c = peers["aa"], peers["cc"]
        new = await ws_connect(server.ws_url)
        try:
            await new.send(json.dumps({"type": "join", "peerId": "aa"}))
            boot = await recv_json(new)
            assert boot["type"] == "bootstrap_peers", boot
            assert await recv_json(old) == err("Another client joined with your ID.")
            code, rest = await wait_closed(old, 3)
            assert rest == [], rest
            # no peer_left for the id that lives on (a re-announce is fine)
            seen = []
            try:
                while True:
                    seen.append(await recv_json(c, 0.5))
            except asyncio.TimeoutError:
                pass
            assert all(m == {"type": "peer_joined", "peerId": "aa"} for m in seen), seen
            # relays to the id reach the new connection
            await c.send(json.dumps({"type": "signal", "to": "aa", "data": {"n": 1}}))
            assert await recv_json(new) == {"type": "signal", "to": "aa", "from": "cc", "data": {"n": 1}}
            # and the new connection can relay as aa
            await new.send(json.dumps({"type": "offer", "to": "cc", "sdp": "x"}))
            assert await recv_json(c) == {"type": "offer", "to": "cc", "from": "aa", "sdp": "x"}
        finally:
            await close_all([new, c, old])

    run(go())


def test_second_join_on_same_socket_replaces_id(server):
    async def go():
        peers = await join_all(server.ws_url, ["aa", "cc"])
        a, c = peers["aa"], peers["cc"]
        try:
            await a.send(json.dumps({"type": "join", "peerId": "ab"}))
            got = [await recv_json(c), await recv_json(c)]
            assert sorted(got, key=lambda m: m["type"]) == [
                {"type": "peer_joined", "peerId": "ab"},
                {"type": "peer_left", "peerId": "aa"},
            ], got
            await assert_silent(c, 0.3)
            # drain a's answer to the second join (a bootstrap list)
            m = await recv_json(a)
            assert m["type"] == "bootstrap_peers" and ids_of(m) == ["cc"], m
            await c.send(json.dumps({"type": "signal", "to": "ab", "data": 1}))
            assert await recv_json(a) == {"type": "signal", "to": "ab", "from": "cc", "data": 1}
            await a.send(json.dumps({"type": "signal", "to": "cc", "data": 2}))
            assert await recv_json(c) == {"type": "signal", "to": "cc", "from": "ab", "data": 2}
        finally:
            await close_all([a, c])

    run(go())


# ------------------------------------------------------------ relaying


@pytest.mark.parametrize("mtype", RELAY_TYPES)
def test_relay_types_forwarded_untouched_with_from(server, mtype):
    async def go():
        peers = await join_all(server.ws_url, ["aa", "bb"])
        a, b = peers["aa"], peers["bb"]
        try:
            msg = {
                "type": mtype,
                "to": "bb",
                "from": "spoofed",
                "payload": {"sdp": "v=0\r\n", "list": [1, 2.5, None, True], "s": "\u00e9\u4e2d"},
                "extra": 7,
            }
            await a.send(json.dumps(msg))
            got = await recv_json(b)
            assert got == dict(msg, **{"from": "aa"}), got
            await assert_silent(a, 0.2)
        finally:
            await close_all([a, b])

    run(go())


def test_relay_keeps_the_senders_bytes(server):
    """Everything but "from" arrives byte for byte: spacing, key order and
    number spellings (1.0, 1e3, -0) that a re-serialiser would change."""
    async def go():
        peers = await join_all(server.ws_url, ["aa", "bb"])
        a, b = peers["aa"], peers["bb"]
        try:
            raw = '{ "type" : "signal", "to":"bb", "n": [1.0, 1e3, -0, 0.1],  "from" : "x"  , "z":{"from":"inner"} }'
            await a.send(raw)
            got = await asyncio.wait_for(b.recv(), 5)
            assert got == raw.replace('"from" : "x"', '"from" : "aa"'), got
            raw2 = '{"type":"offer","to":"bb","sdp":"v=0","n":2.50}'
            await a.send(raw2)
            got = await asyncio.wait_for(b.recv(), 5)
            assert got == raw2[:-1] + ',"from":"aa"}', got
        finally:
            await close_all([a, b])

    run(go())


@pytest.mark.parametrize("raw", [
    '{"type":"signal","to":"bb","d":"a\x00b"}',      # NUL inside a string
    '{"type":"signal","to":"bb","d":"tab\tin"}',     # a raw TAB inside a string
    '{"type":"signal",\x01"to":"bb","d":1}',          # a control byte as "whitespace"
], ids=["nul-in-string", "tab-in-string", "control-outside"])
def test_relay_refuses_raw_control_characters(server, raw):
    """cJSON accepts raw control characters that RFC 8259 forbids, but the
    relay passes the sender's text on byte for byte, so a browser's
    JSON.parse would choke on it: such a message is invalid JSON, answered
    as such, and never relayed."""
    async def go():
        peers = await join_all(server.ws_url, ["aa", "bb"])
        a, b = peers["aa"], peers["bb"]
        try:
            await a.send(raw)
            assert await recv_json(a) == err("Invalid JSON message format.")
            await a.send('{"type":"signal","to":"bb","d":"a\\u0000b\\tc"}')  # escaped: fine
            assert json.loads(await asyncio.wait_for(b.recv(), 5))["d"] == "a\x00b\tc"
        finally:
            await close_all([a, b])

    run(go())


@pytest.mark.parametrize("raw", [
    # "from" twice: parsers keep the last one, so both must go
    '{"type":"signal","to":"bb","from":"x","from":"evil"}',
    # an escaped key that decodes to "from"
    '{"type":"signal","to":"bb","\\u0066rom":"evil"}',
    '{"type":"signal","to":"bb","from":"x","\\u0066rom":"evil"}',
])
def test_relay_from_cannot_be_smuggled(server, raw):
    async def go():
        peers = await join_all(server.ws_url, ["aa", "bb"])
        a, b = peers["aa"], peers["bb"]
        try:
            await a.send(raw.replace("\\\\", "\\"))
            text = await asyncio.wait_for(b.recv(), 5)
            got = json.loads(text)  # the last duplicate wins here
            assert got["from"] == "aa", text
            assert "evil" not in text, text
        finally:
            await close_all([a, b])

    run(go())


def test_relay_from_with_json_special_characters(server):
    async def go():
        pid = 'q"uo\\te\u00e9'
        peers = await join_all(server.ws_url, [pid, "bb"])
        a, b = peers[pid], peers["bb"]
        try:
            await a.send(json.dumps({"type": "signal", "to": "bb"}))
            got = await recv_json(b)
            assert got == {"type": "signal", "to": "bb", "from": pid}, got
        finally:
            await close_all([a, b])

    run(go())


@pytest.mark.parametrize("mtype", RELAY_TYPES)
def test_relay_requires_to(server, mtype):
    async def go():
        a, _ = await join(server.ws_url, "aa")
        try:
            await a.send(json.dumps({"type": mtype, "data": 1}))
            assert await recv_json(a) == err("'to' field is required for %s." % mtype)
        finally:
            await close_all([a])

    run(go())


@pytest.mark.parametrize("mtype", RELAY_TYPES)
def test_relay_before_join(server, mtype):
    async def go():
        b, _ = await join(server.ws_url, "bb")
        ws = await ws_connect(server.ws_url)
        try:
            await ws.send(json.dumps({"type": mtype, "to": "bb", "data": 1}))
            assert await recv_json(ws) == err("You must join before sending %s." % mtype)
            await assert_silent(b, 0.3)
        finally:
            await close_all([ws, b])

    run(go())


def test_relay_scoped_to_realm(server_factory):
    srv = server_factory("--signaling.mailbox_max=0")

    async def go():
        a, _ = await join(room(srv, "r1"), "aa")
        b, _ = await join(room(srv, "r2"), "bb")
        try:
            await a.send(json.dumps({"type": "signal", "to": "bb", "data": 1}))
            assert await recv_json(a) == err("Peer bb not found.")
            await assert_silent(b, 0.3)
        finally:
            await close_all([a, b])

    run(go())


def test_relay_across_realms_not_delivered_with_mailbox(server):
    async def go():
        a, _ = await join(room(server, "r1"), "aa")
        b, _ = await join(room(server, "r2"), "bb")
        try:
            await a.send(json.dumps({"type": "signal", "to": "bb", "data": 1}))
            await assert_silent(b, 0.5)
        finally:
            await close_all([a, b])

    run(go())


# -------------------------------------------------------------- mailbox


def test_mailbox_delivers_in_order_after_bootstrap(server):
    async def go():
        a, _ = await join(server.ws_url, "aa")
        b = None
        try:
            sent = [
                {"type": "offer", "to": "bb", "sdp": "o", "seq": 1},
                {"type": "candidate", "to": "bb", "from": "xx", "c": "c1", "seq": 2},
                {"type": "batched_signals", "to": "bb", "signals": [{"k": 1}], "seq": 3},
                {"type": "kademlia_rpc_request", "to": "bb", "rpc": "FIND_NODE", "seq": 4},
            ]
            for m in sent:
                await a.send(json.dumps(m))
            await assert_silent(a, 0.3)  # queued, not refused
            b, boot = await join(server.ws_url, "bb")
            assert ids_of(boot) == ["aa"], boot
            for m in sent:
                assert await recv_json(b) == dict(m, **{"from": "aa"})
            await assert_silent(b, 0.3)
            assert await recv_json(a) == {"type": "peer_joined", "peerId": "bb"}
        finally:
            await close_all([a] + ([b] if b else []))
        _, samples = get_metrics(server.port)
        assert metric_value(samples, "p2pmesh_signaling_mailbox_queued_total") == 4

    run(go())


def test_mailbox_is_per_realm(server):
    async def go():
        a, _ = await join(room(server, "r1"), "aa")
        b = None
        try:
            await a.send(json.dumps({"type": "signal", "to": "bb", "data": 1}))
            await asyncio.sleep(0.1)
            b, boot = await join(room(server, "r2"), "bb")
            assert boot["peers"] == [], boot
            await assert_silent(b, 0.4)
        finally:
            await close_all([a] + ([b] if b else []))

    run(go())


@pytest.mark.parametrize("mtype", RELAY_TYPES)
def test_mailbox_off_peer_not_found(server_factory, mtype):
    srv = server_factory("--signaling.mailbox_max=0")

    async def go():
        a, _ = await join(srv.ws_url, "aa")
        try:
            await a.send(json.dumps({"type": mtype, "to": "bb", "data": 1}))
            assert await recv_json(a) == not_found("bb", mtype)
            # nothing is queued: bb joining later gets only its bootstrap
            b, boot = await join(srv.ws_url, "bb")
            assert ids_of(boot) == ["aa"], boot
            await assert_silent(b, 0.3)
            await close_all([b])
        finally:
            await close_all([a])

    run(go())


def test_undeliverable_metric(server_factory):
    srv = server_factory("--signaling.mailbox_max=0")

    async def go():
        a, _ = await join(srv.ws_url, "aa")
        try:
            for i in range(3):
                await a.send(json.dumps({"type": "signal", "to": "b%d" % i}))
                assert await recv_json(a) == err("Peer b%d not found." % i)
        finally:
            await close_all([a])

    run(go())
    _, samples = get_metrics(srv.port)
    assert metric_value(samples, "p2pmesh_signaling_undeliverable_total") == 3


def test_mailbox_full(server_factory):
    srv = server_factory("--signaling.mailbox_max=2")

    async def go():
        a, _ = await join(srv.ws_url, "aa")
        b = None
        try:
            for i in range(2):
                await a.send(json.dumps({"type": "signal", "to": "bb", "n": i}))
            await assert_silent(a, 0.3)
            await a.send(json.dumps({"type": "signal", "to": "bb", "n": 2}))
            assert await recv_json(a) == err("Peer bb not found.")
            await a.send(json.dumps({"type": "batched_signals", "to": "bb", "n": 3}))
            assert await recv_json(a) == err("Peer bb not found for batched signals.")
            b, _ = await join(srv.ws_url, "bb")
            for i in range(2):
                assert await recv_json(b) == {"type": "signal", "to": "bb", "from": "aa", "n": i}
            await assert_silent(b, 0.3)
        finally:
            await close_all([a] + ([b] if b else []))

    run(go())


def test_mailbox_ttl_expiry_tells_sender(server_factory):
    srv = server_factory("--signaling.mailbox_ttl=1s")

    async def go():
        a, _ = await join(srv.ws_url, "aa")
        b = None
        try:
            t0 = time.monotonic()
            await a.send(json.dumps({"type": "offer", "to": "bb", "sdp": "x"}))
            msg = await recv_json(a, 4.0)
            waited = time.monotonic() - t0
            assert msg == err("Peer bb not found."), msg
            assert 0.8 <= waited <= 4.0, waited
            b, _ = await join(srv.ws_url, "bb")
            await assert_silent(b, 0.4)
        finally:
            await close_all([a] + ([b] if b else []))

    run(go())
    _, samples = get_metrics(srv.port)
    assert metric_value(samples, "p2pmesh_signaling_mailbox_expired_total") == 1


# ---------------------------------------------------- leave and departure


def test_leave(server):
    async def go():
        peers = await join_all(server.ws_url, ["aa", "cc"])
        a, c = peers["aa"], peers["cc"]
        try:
            await a.send(json.dumps({"type": "leave", "peerId": "aa"}))
            assert await recv_json(c) == {"type": "peer_left", "peerId": "aa"}
            code, _ = await wait_closed(a, 3)
            assert code == 1000, code
            await assert_silent(c, 0.5)  # exactly one peer_left
        finally:
            await close_all([a, c])

    run(go())


def test_close_without_leave_one_peer_left(server):
    async def go():
        peers = await join_all(server.ws_url, ["aa", "bb", "cc"])
        try:
            await peers["aa"].close()
            for pid in ("bb", "cc"):
                assert await recv_json(peers[pid]) == {"type": "peer_left", "peerId": "aa"}
            for pid in ("bb", "cc"):
                await assert_silent(peers[pid], 0.4)
        finally:
            await close_all(peers.values())

    run(go())


def test_abrupt_tcp_close_one_peer_left(server):
    async def go():
        c, _ = await join(server.ws_url, "cc")
        raw = RawWS(server.port)
        try:
            raw.send_json({"type": "join", "peerId": "aa"})
            assert raw.recv_json()["type"] == "bootstrap_peers"
            assert await recv_json(c) == {"type": "peer_joined", "peerId": "aa"}
            raw.close()  # no close frame
            assert await recv_json(c) == {"type": "peer_left", "peerId": "aa"}
            await assert_silent(c, 0.5)
        finally:
            raw.close()
            await close_all([c])

    run(go())


# ------------------------------------------------------- misc messages


def test_ping_before_and_after_join(server):
    async def go():
        ws = await ws_connect(server.ws_url)
        try:
            await ws.send(json.dumps({"type": "ping", "timestamp": 1700000000123}))
            assert await recv_json(ws) == {"type": "pong", "timestamp": 1700000000123}
            await ws.send(json.dumps({"type": "join", "peerId": "aa"}))
            assert (await recv_json(ws))["type"] == "bootstrap_peers"
            await ws.send(json.dumps({"type": "ping", "timestamp": 5}))
            assert await recv_json(ws) == {"type": "pong", "timestamp": 5}
        finally:
            await close_all([ws])

    run(go())


def test_invalid_json_keeps_connection(server):
    async def go():
        ws = await ws_connect(server.ws_url)
        try:
            for bad in ["{not json", "", '{"type":"ping"', "\u00e9"]:
                await ws.send(bad)
                assert await recv_json(ws) == err("Invalid JSON message format."), bad
            await ws.send(json.dumps({"type": "ping", "timestamp": 9}))
            assert await recv_json(ws) == {"type": "pong", "timestamp": 9}
        finally:
            await close_all([ws])

    run(go())


def test_unknown_type(server):
    async def go():
        ws = await ws_connect(server.ws_url)
        try:
            await ws.send(json.dumps({"type": "foo", "to": "x"}))
            assert await recv_json(ws) == err("Unknown message type: foo")
        finally:
            await close_all([ws])

    run(go())


@pytest.mark.parametrize("payload", ['[1,2]', '"str"', "42", '{"type":5}', '{"x":1}', "null"])
def test_non_object_or_typeless_json_is_unknown(server, payload):
    async def go():
        ws = await ws_connect(server.ws_url)
        try:
            await ws.send(payload)
            msg = await recv_json(ws)
            assert msg["type"] == "error", msg
            assert msg["message"].startswith("Unknown message type"), msg
            await ws.send(json.dumps({"type": "ping", "timestamp": 3}))
            assert await recv_json(ws) == {"type": "pong", "timestamp": 3}
        finally:
            await close_all([ws])

    run(go())


# -------------------------------------------------------------- metrics


def test_signaling_metrics(server):
    async def go():
        peers = await join_all(server.ws_url, ["aa", "bb", "cc"])
        try:
            _, s = get_metrics(server.port)
            assert metric_value(s, "p2pmesh_signaling_peers") == 3
            assert metric_value(s, "p2pmesh_signaling_joins_total") == 3
            relayed0 = metric_value(s, "p2pmesh_signaling_relayed_total", dialect="p2pmesh") or 0
            for i in range(4):
                await peers["aa"].send(json.dumps({"type": "signal", "to": "bb", "i": i}))
                assert (await recv_json(peers["bb"]))["i"] == i
            _, s = get_metrics(server.port)
            assert metric_value(s, "p2pmesh_signaling_relayed_total", dialect="p2pmesh") - relayed0 == 4
            await peers["cc"].close()
            assert (await recv_json(peers["aa"]))["type"] == "peer_left"
            _, s = get_metrics(server.port)
            assert metric_value(s, "p2pmesh_signaling_peers") == 2
        finally:
            await close_all(peers.values())
        deadline = time.monotonic() + 3
        while True:
            _, s = get_metrics(server.port)
            if metric_value(s, "p2pmesh_signaling_peers") == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert metric_value(s, "p2pmesh_signaling_peers") == 0

    run(go())


# ------------------------------------------------------- more id forms


def test_non_hex_ids_still_bootstrap(server):
    async def go():
        peers = await join_all(server.ws_url, ["alice"])
        try:
            ws, boot = await join(server.ws_url, "bob")
            peers["bob"] = ws
            assert ids_of(boot) == ["alice"], boot
            await peers["alice"].send(json.dumps({"type": "signal", "to": "bob", "x": 1}))
            assert await recv_json(ws) == {"type": "signal", "to": "bob", "from": "alice", "x": 1}
        finally:
            await close_all(peers.values())

    run(go())


def test_peer_id_limit_counts_bytes_not_chars(server):
    async def go():
        ws = await ws_connect(server.ws_url)
        try:
            await ws.send(json.dumps({"type": "join", "peerId": "\u00e9" * 65}))  # 130 bytes
            assert await recv_json(ws) == err("peerId must be at most 128 bytes.")
            await ws.send(json.dumps({"type": "join", "peerId": "\u00e9" * 64}))  # 128 bytes
            assert (await recv_json(ws))["type"] == "bootstrap_peers"
        finally:
            await close_all([ws])

    run(go())


def test_takeover_keeps_gauge_and_bootstrap_excludes_self(server):
    async def go():
        peers = await join_all(server.ws_url, ["aa", "cc"])
        new = await ws_connect(server.ws_url)
        try:
            await new.send(json.dumps({"type": "join", "peerId": "aa"}))
            boot = await recv_json(new)
            assert ids_of(boot) == ["cc"], boot
            await wait_closed(peers["aa"], 3)
            await asyncio.sleep(0.2)
            _, s = get_metrics(server.port)
            assert metric_value(s, "p2pmesh_signaling_peers") == 2
        finally:
            await close_all([new] + list(peers.values()))

    run(go())


def test_mailbox_keeps_global_order_across_senders(server):
    async def go():
        peers = await join_all(server.ws_url, ["aa", "cc"])
        b = None
        try:
            order = [("aa", 1), ("cc", 2), ("aa", 3), ("cc", 4)]
            for sender, n in order:
                await peers[sender].send(json.dumps({"type": "signal", "to": "bb", "n": n}))
                await asyncio.sleep(0.02)
            b, boot = await join(server.ws_url, "bb")
            assert sorted(ids_of(boot)) == ["aa", "cc"], boot
            for sender, n in order:
                assert await recv_json(b) == {"type": "signal", "to": "bb", "from": sender, "n": n}
        finally:
            await close_all(list(peers.values()) + ([b] if b else []))

    run(go())


def test_mailbox_limit_is_per_target(server_factory):
    srv = server_factory("--signaling.mailbox_max=2")

    async def go():
        a, _ = await join(srv.ws_url, "aa")
        try:
            for to in ("b1", "b1", "b2", "b2"):
                await a.send(json.dumps({"type": "signal", "to": to}))
            await assert_silent(a, 0.3)
            await a.send(json.dumps({"type": "signal", "to": "b2"}))
            assert await recv_json(a) == err("Peer b2 not found.")
        finally:
            await close_all([a])

    run(go())


def test_mailbox_expiry_after_sender_left(server_factory):
    srv = server_factory("--signaling.mailbox_ttl=1s")

    async def go():
        a, _ = await join(srv.ws_url, "aa")
        await a.send(json.dumps({"type": "signal", "to": "bb"}))
        await asyncio.sleep(0.1)
        await close_all([a])
        await asyncio.sleep(2.0)  # expires with nobody to tell
        c, _ = await join(srv.ws_url, "cc")
        await c.send(json.dumps({"type": "ping", "timestamp": 1}))
        assert await recv_json(c) == {"type": "pong", "timestamp": 1}
        await close_all([c])

    run(go())
    assert http_get(srv.port, "/health").status == 200
    _, samples = get_metrics(srv.port)
    assert metric_value(samples, "p2pmesh_signaling_mailbox_expired_total") == 1


# ------------------------------------------------------------- caps


def test_realm_is_full(server_factory):
    srv = server_factory("--signaling.max_peers_per_realm=2")

    async def go():
        peers = await join_all(srv.ws_url, ["aa", "bb"])
        ws = await ws_connect(srv.ws_url)
        other = await ws_connect(srv.ws_url + "?room=elsewhere")
        try:
            await ws.send(json.dumps({"type": "join", "peerId": "cc"}))
            assert await recv_json(ws) == err("Realm is full.")
            # another realm has its own count; a takeover is not a new peer
            await other.send(json.dumps({"type": "join", "peerId": "cc"}))
            assert (await recv_json(other))["type"] == "bootstrap_peers"
            await ws.send(json.dumps({"type": "join", "peerId": "aa"}))
            assert (await recv_json(ws))["type"] == "bootstrap_peers"
        finally:
            await close_all(list(peers.values()) + [ws, other])

    run(go())


def test_announcements_go_to_the_nearest_only(server_factory):
    srv = server_factory("--signaling.announce_max=2")
    ids = ["01", "02", "04", "08", "10"]

    async def go():
        peers = {}
        for pid in ids:  # join one by one, reading only what is announced
            ws, _ = await join(srv.ws_url, pid)
            peers[pid] = ws
        for ws in peers.values():  # drop what earlier joins announced
            while True:
                try:
                    await asyncio.wait_for(ws.recv(), 0.3)
                except asyncio.TimeoutError:
                    break
        try:
            ws, _ = await join(srv.ws_url, "00")
            peers["00"] = ws
            told = []
            for pid in ids:
                try:
                    msg = json.loads(await asyncio.wait_for(peers[pid].recv(), 0.5))
                    assert msg == {"type": "peer_joined", "peerId": "00"}, msg
                    told.append(pid)
                except asyncio.TimeoutError:
                    pass
            assert told == xor_nearest("00", ids, 2) == ["01", "02"], told
        finally:
            await close_all(peers.values())

    run(go())


def test_realm_name_over_128_bytes_is_400(server):
    with pytest.raises(HandshakeRefused) as e:
        RawWS(server.port, path="/?room=" + "r" * 129)
    assert e.value.resp.status == 400
    RawWS(server.port, path="/?room=" + "r" * 128).sock.close()
