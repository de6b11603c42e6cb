"""HTTP side of the signaling role: /health, /ready, /metrics, HEAD, 404,
keep-alive, the strict request-head parser and the header timeout."""

import asyncio
import json
import socket
import time

import pytest

from helpers import (
    _Reader,
    close_all,
    get_metrics,
    http_get,
    metric_value,
    open_conn,
    raw_request,
    read_http_response,
    run_cli,
    wait_eof,
    ws_connect,
)


def version_string():
    r = run_cli("--version")
    return r.stdout.strip().split(" ", 1)[1]


# ------------------------------------------------------------------ health


def test_health(server):
    r = http_get(server.port, "/health")
    assert r.status == 200, r
    assert r.headers["content-type"].split(";")[0].strip() == "application/json"
    body = r.json()
    assert body["status"] == "ok"
    assert body["role"] == "signaling"
    assert body["version"] == version_string()
    assert isinstance(body["uptime_s"], (int, float)) and 0 <= body["uptime_s"] < 60
    assert isinstance(body["connections"], int) and body["connections"] >= 0
    assert body["public_base_url"] == "http://127.0.0.1:%d" % server.port
    assert body["heartbeat_interval_secs"] == 30


def test_healthz_alias(server):
    r = http_get(server.port, "/healthz")
    assert r.status == 200, r
    body = r.json()
    assert body["status"] == "ok" and body["role"] == "signaling"


def test_health_public_url(server_factory):
    srv = server_factory("--public_url=https://signal.example.com")
    body = http_get(srv.port, "/health").json()
    assert body["public_base_url"] == "https://signal.example.com"


def test_health_heartbeat_from_flag(server_factory):
    srv = server_factory("--signaling.heartbeat_interval=12s")
    assert http_get(srv.port, "/health").json()["heartbeat_interval_secs"] == 12


def test_health_heartbeat_from_seed_alias(server_factory):
    srv = server_factory(env={"SIGNALING_HEARTBEAT_SECS": "7"})
    assert http_get(srv.port, "/health").json()["heartbeat_interval_secs"] == 7


def test_health_counts_connections(server):
    async def run():
        base = http_get(server.port, "/health").json()["connections"]
        wss = [await ws_connect(server.ws_url) for _ in range(3)]
        try:
            with_ws = http_get(server.port, "/health").json()["connections"]
            assert with_ws - base == 3, (base, with_ws)
        finally:
            await close_all(wss)
        deadline = time.monotonic() + 3
        while True:
            now = http_get(server.port, "/health").json()["connections"]
            if now == base or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert now == base, (base, now)

    asyncio.run(run())


@pytest.mark.parametrize("path", ["/ready", "/readyz"])
def test_ready(server, path):
    r = http_get(server.port, path)
    assert r.status == 200, r
    assert r.json()["status"] == "ready"


def test_unknown_path_404(server):
    r = http_get(server.port, "/no/such/path")
    assert r.status == 404, r


# ----------------------------------------------------------------- metrics

METRIC_NAMES = [
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_cpu_seconds_total",
    "p2pmesh_connections_open",
    "p2pmesh_ws_messages_received_total",
    "p2pmesh_signaling_peers",
    "p2pmesh_signaling_joins_total",
    "p2pmesh_signaling_mailbox_queued_total",
    "p2pmesh_signaling_mailbox_expired_total",
    "p2pmesh_signaling_undeliverable_total",
]


def test_metrics_exposition(server):
    text, samples = get_metrics(server.port)
    names = {n for n, _, _ in samples}
    for name in METRIC_NAMES:
        assert name in names, "%s missing from /metrics" % name
    assert "# TYPE p2pmesh_connections_open gauge" in text
    assert "# TYPE p2pmesh_signaling_peers gauge" in text
    assert metric_value(samples, "process_resident_memory_bytes") > 1e5
    assert metric_value(samples, "process_open_fds") >= 3
    assert metric_value(samples, "p2pmesh_signaling_peers") == 0


def test_metrics_content_type(server):
    r = http_get(server.port, "/metrics")
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/plain"), r.headers


def test_metrics_connections_open_gauge(server):
    async def run():
        _, s0 = get_metrics(server.port)
        base = metric_value(s0, "p2pmesh_connections_open")
        wss = [await ws_connect(server.ws_url) for _ in range(2)]
        try:
            _, s1 = get_metrics(server.port)
            assert metric_value(s1, "p2pmesh_connections_open") - base == 2
        finally:
            await close_all(wss)

    asyncio.run(run())


def test_metrics_messages_received(server):
    async def run():
        ws = await ws_connect(server.ws_url)
        try:
            _, s0 = get_metrics(server.port)
            before = metric_value(s0, "p2pmesh_ws_messages_received_total")
            for i in range(7):
                await ws.send(json.dumps({"type": "ping", "timestamp": i}))
                assert json.loads(await asyncio.wait_for(ws.recv(), 3))["type"] == "pong"
            _, s1 = get_metrics(server.port)
            assert metric_value(s1, "p2pmesh_ws_messages_received_total") - before == 7
        finally:
            await close_all([ws])

    asyncio.run(run())


# ------------------------------------------------------- HEAD, keep-alive


def test_head_has_no_body(server):
    s = open_conn(server.port)
    try:
        reader = _Reader(s)
        s.sendall(b"HEAD /health HTTP/1.1\r\nHost: t\r\n\r\n")
        head = read_http_response(reader, head_only=True)
        assert head.status == 200, head
        assert int(head.headers["content-length"]) > 0
        assert head.headers["content-type"].startswith("application/json")
        # If HEAD had sent a body, it would now sit in front of this response.
        s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        get = read_http_response(reader)
        assert get.status == 200, get
        assert json.loads(get.body)["status"] == "ok"
    finally:
        s.close()


def test_keep_alive_two_requests_one_connection(server):
    s = open_conn(server.port)
    try:
        reader = _Reader(s)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        r1 = read_http_response(reader)
        assert r1.status == 200 and json.loads(r1.body)["status"] == "ok"
        assert r1.headers.get("connection", "keep-alive").lower() != "close"
        s.sendall(b"GET /ready HTTP/1.1\r\nHost: t\r\n\r\n")
        r2 = read_http_response(reader)
        assert r2.status == 200 and json.loads(r2.body)["status"] == "ready"
    finally:
        s.close()


def test_connection_close_is_honoured(server):
    resp, s, reader = raw_request(server.port, b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    try:
        assert resp.status == 200
        wait_eof(s, 3, reader)
    finally:
        s.close()


# ----------------------------------------------------------- strict parser

BAD_REQUESTS = {
    "cl_and_te": (
        b"POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "obs_fold": (b"GET /health HTTP/1.1\r\nHost: t\r\nX-A: one\r\n  two\r\n\r\n", 400),
    "space_before_colon": (b"GET /health HTTP/1.1\r\nHost : t\r\n\r\n", 400),
    "http2_request_line": (b"GET /health HTTP/2.0\r\nHost: t\r\n\r\n", 505),
    "bare_lf": (b"GET /health HTTP/1.1\nHost: t\n\n", 400),
}


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_strict_parser_rejects(server, name):
    data, status = BAD_REQUESTS[name]
    resp, s, reader = raw_request(server.port, data)
    try:
        assert resp.status == status, (name, resp)
        wait_eof(s, 3, reader)  # the connection is closed after an error
    finally:
        s.close()


def test_head_over_default_max_header_431(server):
    data = b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (20 * 1024) + b"\r\n\r\n"
    resp, s, reader = raw_request(server.port, data)
    try:
        assert resp.status == 431, resp
        wait_eof(s, 3, reader)
    finally:
        s.close()


def test_max_header_configurable(server_factory):
    srv = server_factory("--http.max_header=1k")
    ok = b"GET /health HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"a" * 600 + b"\r\nConnection: close\r\n\r\n"
    resp, s, _ = raw_request(srv.port, ok)
    s.close()
    assert resp.status == 200, resp
    big = b"GET /health HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"a" * 1500 + b"\r\n\r\n"
    resp, s, reader = raw_request(srv.port, big)
    try:
        assert resp.status == 431, resp
        wait_eof(s, 3, reader)
    finally:
        s.close()


# ----------------------------------------------------------- header timeout


def _time_until_closed(port, first, trickle=None, timeout=15.0):
    """Send first, optionally trickle bytes; seconds until the server closes."""
    s = open_conn(port)
    try:
        start = time.monotonic()
        s.sendall(first)
        if trickle:
            # one byte every 0.2 s, never finishing the head
            deadline = start + timeout
            while time.monotonic() < deadline:
                try:
                    s.sendall(trickle)
                except (BrokenPipeError, ConnectionResetError):
                    return time.monotonic() - start
                s.settimeout(0.2)
                try:
                    chunk = s.recv(4096)
                    if not chunk:
                        return time.monotonic() - start
                except socket.timeout:
                    pass
                except ConnectionResetError:
                    return time.monotonic() - start
            raise AssertionError("connection still open after %.0fs" % timeout)
        elapsed, _ = wait_eof(s, timeout)
        return time.monotonic() - start
    finally:
        s.close()


@pytest.mark.slow
def test_slowloris_default_header_timeout(server):
    t = _time_until_closed(server.port, b"GET / HTTP/1.1\r\n", timeout=14)
    assert 9.0 <= t <= 12.0, t


def test_slowloris_configured_header_timeout(server_factory):
    srv = server_factory("--http.header_timeout=1s")
    t = _time_until_closed(srv.port, b"GET / HTTP/1.1\r\n", timeout=5)
    assert 0.8 <= t <= 2.5, t
    # the server still serves others
    assert http_get(srv.port, "/health").status == 200


def test_slowloris_trickle_does_not_extend_deadline(server_factory):
    srv = server_factory("--http.header_timeout=1s")
    t = _time_until_closed(srv.port, b"GET / HTTP/1.1\r\nX-A: ", trickle=b"a", timeout=5)
    assert 0.8 <= t <= 2.5, t
