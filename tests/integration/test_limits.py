"""Connection and rate limits: per-IP request rate, per-IP connections,
global max connections, per-connection message rate."""

import asyncio
import json
import socket
import time

from helpers import (
    OP_CLOSE,
    OP_TEXT,
    EOFReached,
    RawWS,
    build_frame,
    close_all,
    get_metrics,
    http_get,
    metric_sum,
    raw_handshake,
    ws_connect,
)


def _upgrade_status(port, path="/"):
    resp, s, _, _ = raw_handshake(port, path)
    s.close()
    return resp


def _settle():
    # let the server notice the readiness probe's connection has closed
    time.sleep(0.2)


def test_per_ip_rate_http(server_factory):
    # TCP probe: the readiness check must not spend any of the 5 tokens.
    srv = server_factory("--limits.per_ip_rate=5/10s", probe="tcp")
    statuses = [http_get(srv.port, "/not-here").status for _ in range(6)]
    assert statuses == [404] * 5 + [429], statuses
    # an upgrade from the same IP is refused too while the bucket is empty
    assert _upgrade_status(srv.port).status == 429


def test_per_ip_rate_upgrades(server_factory):
    srv = server_factory("--limits.per_ip_rate=5/10s", probe="tcp")
    statuses = [_upgrade_status(srv.port).status for _ in range(6)]
    assert statuses == [101] * 5 + [429], statuses


def test_per_ip_connections(server_factory):
    srv = server_factory("--limits.per_ip_connections=2")
    _settle()

    async def run():
        a = await ws_connect(srv.ws_url)
        b = await ws_connect(srv.ws_url)
        try:
            resp = _upgrade_status(srv.port)
            assert resp.status == 429, resp
        finally:
            await close_all([b])
        # a slot is free again once b is gone
        deadline = time.monotonic() + 3
        while True:
            resp = _upgrade_status(srv.port)
            if resp.status == 101 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert resp.status == 101, resp
        await close_all([a])

    asyncio.run(run())
    time.sleep(0.2)
    _, samples = get_metrics(srv.port)
    assert metric_sum(samples, "p2pmesh_rejected_total") >= 1
    limits = {l.get("limit") for n, l, v in samples if n == "p2pmesh_rejected_total" and v >= 1}
    assert limits and None not in limits, samples


def test_max_connections(server_factory):
    srv = server_factory("--limits.max_connections=2")
    _settle()

    async def run():
        a = await ws_connect(srv.ws_url)
        b = await ws_connect(srv.ws_url)
        try:
            # health still answers while the server is full
            r = http_get(srv.port, "/health")
            assert r.status == 200, r
            assert r.json()["status"] == "ok"
            resp = _upgrade_status(srv.port)
            assert resp.status == 503, resp
        finally:
            await close_all([a, b])

    asyncio.run(run())


def test_per_conn_rate_and_close_1008(server_factory):
    srv = server_factory("--limits.per_conn_rate=5/1s", "--limits.per_conn_burst=5")
    ws = RawWS(srv.port)
    try:
        frames = b"".join(
            build_frame(OP_TEXT, json.dumps({"type": "ping", "timestamp": i}))
            for i in range(200)
        )
        ws.send_raw(frames)
        pongs, errors, close_code = [], 0, None
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            try:
                f = ws.recv_message(timeout=max(0.01, deadline - time.monotonic()))
            except (EOFReached, socket.timeout) as e:
                raise AssertionError("no close frame: %r (pongs=%r errors=%d)" % (e, pongs, errors))
            if f.opcode == OP_CLOSE:
                close_code = f.close_code
                break
            msg = f.json()
            if msg.get("type") == "pong":
                assert errors == 0, "a pong after refusals: %r" % msg
                pongs.append(msg["timestamp"])
            else:
                assert msg == {"type": "error", "message": "Rate limit exceeded."}, msg
                errors += 1
        assert close_code == 1008, (close_code, pongs, errors)
        assert 5 <= len(pongs) <= 6, pongs
        assert pongs == list(range(len(pongs))), pongs
        assert 60 <= errors <= 64, errors
    finally:
        ws.close()


def test_per_conn_rate_allows_paced_messages(server_factory):
    srv = server_factory("--limits.per_conn_rate=20/1s", "--limits.per_conn_burst=2")

    async def run():
        ws = await ws_connect(srv.ws_url)
        try:
            for i in range(8):
                await ws.send(json.dumps({"type": "ping", "timestamp": i}))
                msg = json.loads(await asyncio.wait_for(ws.recv(), 3))
                assert msg == {"type": "pong", "timestamp": i}, msg
                await asyncio.sleep(0.1)
        finally:
            await close_all([ws])

    asyncio.run(run())
