"""RFC 6455 behaviour around the frames: the upgrade, origin checks, the
configured message limit and its metrics, server keepalive.

The frame-level cases (reserved bits, opcodes, control frames,
fragmentation, UTF-8, close codes, lengths) are the Autobahn-style table
in test_ws_conformance.py."""

import asyncio
import json
import socket
import time

import pytest
from helpers import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RawWS,
    EOFReached,
    close_all,
    get_metrics,
    metric_value,
    raw_handshake,
    recv_json,
    ws_accept,
    ws_connect,
)

PING = json.dumps({"type": "ping", "timestamp": 42})


# ---------------------------------------------------------------- upgrade


@pytest.mark.parametrize("path", ["/", "/ws", "/?room=x", "/anything/else?room=y&z=1"])
def test_upgrade_on_any_path(server, path):
    resp, s, reader, key = raw_handshake(server.port, path)
    try:
        assert resp.status == 101, resp
        assert resp.headers["upgrade"].lower() == "websocket"
        assert "upgrade" in resp.headers["connection"].lower()
        assert resp.headers["sec-websocket-accept"] == ws_accept(key)
    finally:
        s.close()


def test_upgrade_with_library_and_ping(server):
    async def run():
        ws = await ws_connect(server.ws_url)
        try:
            await ws.send(PING)
            assert await recv_json(ws) == {"type": "pong", "timestamp": 42}
        finally:
            await close_all([ws])

    asyncio.run(run())


@pytest.mark.parametrize(
    "headers,omit",
    [
        ({}, ("Sec-WebSocket-Key",)),
        ({"Sec-WebSocket-Key": "not-base64!"}, ()),
        ({"Sec-WebSocket-Key": "c2hvcnQ="}, ()),  # base64 of 5 bytes, not 16
    ],
    ids=["missing_key", "garbage_key", "short_key"],
)
def test_bad_upgrade_400(server, headers, omit):
    resp, s, _, _ = raw_handshake(server.port, "/", headers=headers, omit=omit)
    s.close()
    assert resp.status == 400, resp


def test_bad_version_426(server):
    resp, s, _, _ = raw_handshake(server.port, "/", headers={"Sec-WebSocket-Version": "8"})
    s.close()
    assert resp.status == 426, resp
    assert resp.headers.get("sec-websocket-version") == "13", resp.headers


def test_origin_allow(server_factory):
    srv = server_factory("--origin.allow=http://a.example")
    resp, s, _, _ = raw_handshake(srv.port, "/", headers={"Origin": "http://b.example"})
    s.close()
    assert resp.status == 403, resp
    resp, s, _, _ = raw_handshake(srv.port, "/", headers={"Origin": "http://a.example"})
    s.close()
    assert resp.status == 101, resp
    resp, s, _, _ = raw_handshake(srv.port, "/")
    s.close()
    assert resp.status == 101, resp


# ------------------------------------------------------------- violations


def _expect_close_code(ws, code):
    got = ws.expect_close(timeout=3)
    assert got == code, "expected close %d, got %r" % (code, got)
    ws.wait_eof(3)


def test_message_over_default_max_1009(server):
    with RawWS(server.port) as ws:
        ws.send_frame(OP_TEXT, b'"' + b"a" * (70 * 1024) + b'"')
        _expect_close_code(ws, 1009)
    _, samples = get_metrics(server.port)
    assert metric_value(samples, "p2pmesh_ws_closes_total", code="1009") >= 1


def test_message_under_configured_max_ok_over_1009(server_factory):
    srv = server_factory("--ws.max_message=1k")
    with RawWS(srv.port) as ws:
        msg = json.dumps({"type": "ping", "timestamp": 1, "pad": "x" * 900})
        assert len(msg) < 1024
        ws.send_text(msg)
        assert ws.recv_json() == {"type": "pong", "timestamp": 1}
        ws.send_text(json.dumps({"type": "ping", "timestamp": 2, "pad": "x" * 1100}))
        _expect_close_code(ws, 1009)


def test_violation_counts_in_close_metric(server):
    _, s0 = get_metrics(server.port)
    before = metric_value(s0, "p2pmesh_ws_closes_total", code="1002") or 0
    with RawWS(server.port) as ws:
        ws.send_frame(OP_TEXT, PING, mask=False)
        _expect_close_code(ws, 1002)
    deadline = time.monotonic() + 2
    while True:
        _, s1 = get_metrics(server.port)
        after = metric_value(s1, "p2pmesh_ws_closes_total", code="1002") or 0
        if after - before == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert after - before == 1, (before, after)


# ------------------------------------------------------------ server frames


def test_server_frames_are_text(server):
    with RawWS(server.port) as ws:
        ws.send_text(PING)
        f = ws.recv_message()
        assert f.opcode == OP_TEXT and not f.masked and f.rsv == 0
        ws.send_text("{not json")
        f = ws.recv_message()
        assert f.opcode == OP_TEXT


# --------------------------------------------------------------- keepalive


def test_server_pings_every_interval(server_factory):
    srv = server_factory("--ws.ping_interval=1s")
    with RawWS(srv.port) as ws:
        start = time.monotonic()
        pings = []
        deadline = start + 3.6
        while time.monotonic() < deadline:
            try:
                f = ws.recv_frame(timeout=max(0.01, deadline - time.monotonic()))
            except socket.timeout:  # end of the window
                break
            if f.opcode == OP_PING:
                pings.append(time.monotonic() - start)
                ws.send_frame(OP_PONG, f.payload)
        assert 2 <= len(pings) <= 4, pings
        assert pings[0] <= 1.7, pings
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert all(0.5 <= g <= 1.7 for g in gaps), pings


def test_idle_client_closed_responsive_client_kept(server_factory):
    srv = server_factory("--ws.ping_interval=1s", "--ws.idle_timeout=2s")

    def idle_client():
        ws = RawWS(srv.port)
        start = time.monotonic()
        try:
            deadline = start + 6
            while True:
                try:
                    f = ws.recv_frame(timeout=max(0.01, deadline - time.monotonic()))
                except EOFReached:
                    return time.monotonic() - start
                if f.opcode == OP_CLOSE:
                    return time.monotonic() - start
                # pings are deliberately not answered
        finally:
            ws.close()

    async def run():
        good = await ws_connect(srv.ws_url)  # answers pings automatically
        try:
            loop = asyncio.get_running_loop()
            t = await loop.run_in_executor(None, idle_client)
            assert 1.5 <= t <= 3.8, t
            await asyncio.sleep(max(0, 4.2 - t))
            await good.send(PING)
            assert await recv_json(good) == {"type": "pong", "timestamp": 42}
        finally:
            await close_all([good])

    asyncio.run(run())


def test_message_exactly_max_ok_one_more_1009(server_factory):
    srv = server_factory("--ws.max_message=1k")
    base = '{"type":"ping","timestamp":1,"pad":"%s"}'
    exact = base % ("x" * (1024 - len(base % "")))
    assert len(exact) == 1024
    with RawWS(srv.port) as ws:
        ws.send_text(exact)
        assert ws.recv_json() == {"type": "pong", "timestamp": 1}
        ws.send_text(exact[:-2] + 'x"}')  # 1025 bytes
        _expect_close_code(ws, 1009)

