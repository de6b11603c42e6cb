"""Core features around the dialects: trusted proxies and X-Forwarded-For,
the admin port, request bodies, keep-alive idle timeout, a client that stops
reading, and CloudWatch EMF metric lines."""

import asyncio
import json
import socket
import time

import pytest

from helpers import (
    HandshakeRefused,
    RawWS,
    free_port,
    http_get,
    open_conn,
    raw_request,
    wait_eof,
    ws_connect,
)


def test_x_forwarded_for_ignored_from_untrusted_peer(server_factory):
    srv = server_factory("--limits.per_ip_rate=2/60s")
    for i in range(2):
        r = http_get(srv.port, "/nope", headers={"X-Forwarded-For": "192.0.2.%d" % i})
        assert r.status == 404, r
    # the forwarded addresses were not believed: all three share one bucket
    r = http_get(srv.port, "/nope", headers={"X-Forwarded-For": "192.0.2.9"})
    assert r.status == 429, r


def test_x_forwarded_for_believed_from_trusted_proxy(server_factory):
    srv = server_factory("--limits.per_ip_rate=2/60s",
                         "--limits.trusted_proxies=127.0.0.0/8, ::1")
    for client in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        for _ in range(2):
            r = http_get(srv.port, "/nope",
                         headers={"X-Forwarded-For": "198.51.100.7, " + client})
            assert r.status == 404, (client, r)
    # the third request of one client is over its own bucket
    r = http_get(srv.port, "/nope", headers={"X-Forwarded-For": "192.0.2.1"})
    assert r.status == 429, r


def test_per_ip_connection_cap_uses_forwarded_client(server_factory):
    srv = server_factory("--limits.per_ip_connections=1",
                         "--limits.trusted_proxies=127.0.0.1")
    a = RawWS(srv.port, headers={"X-Forwarded-For": "192.0.2.1"})
    b = RawWS(srv.port, headers={"X-Forwarded-For": "192.0.2.2"})
    try:
        with pytest.raises(HandshakeRefused) as e:
            RawWS(srv.port, headers={"X-Forwarded-For": "192.0.2.1"})
        assert e.value.resp.status == 429
    finally:
        a.sock.close()
        b.sock.close()


def test_admin_port_serves_health_only(server_factory):
    admin = free_port()
    srv = server_factory("--admin_port=%d" % admin)
    r = http_get(admin, "/health")
    assert r.status == 200 and json.loads(r.body)["role"] == "signaling", r
    assert http_get(admin, "/ready").status == 200
    assert b"process_open_fds" in http_get(admin, "/metrics").body
    assert http_get(admin, "/anything").status == 404
    with pytest.raises(HandshakeRefused) as e:
        RawWS(admin)
    assert e.value.resp.status == 404
    # the main port still speaks WebSocket
    RawWS(srv.port).sock.close()


def test_admin_port_equal_to_port_is_refused(tmp_path):
    from helpers import run_cli
    r = run_cli("--role=signaling", "--port=9000", "--admin_port=9000",
                "--check-config")
    assert r.returncode == 2, r
    assert "admin_port" in r.stderr


def test_body_over_max_body_is_413(server_factory):
    srv = server_factory("--http.max_body=1k")
    resp, s, _ = raw_request(
        srv.port,
        b"POST /nope HTTP/1.1\r\nHost: t\r\nContent-Length: 2048\r\n\r\n")
    try:
        assert resp.status == 413, resp
        wait_eof(s, 3)
    finally:
        s.close()


def test_body_is_read_before_the_answer(server_factory):
    srv = server_factory()
    body = b'{"device_label": "split"}'
    s = open_conn(srv.port)
    try:
        s.sendall(b"POST /register HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body[:10])
        s.settimeout(0.5)
        with pytest.raises(socket.timeout):
            s.recv(100)  # nothing until the whole body arrived
        s.sendall(body[10:])
        _, data = wait_eof(s, 3)
        assert data.startswith(b"HTTP/1.1 200 "), data
        assert b'"display_name":"Client 1"' in data, data  # the whole body
    finally:
        s.close()


def test_chunked_body_is_411(server_factory):
    srv = server_factory()
    resp, s, _ = raw_request(
        srv.port,
        b"POST /nope HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    s.close()
    assert resp.status == 411, resp


def test_keepalive_idle_connection_is_closed(server_factory):
    srv = server_factory("--http.keepalive_timeout=1s")
    resp, s, reader = raw_request(srv.port,
                                  b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
    try:
        assert resp.status == 200
        elapsed, _ = wait_eof(s, 5, reader=None)
        assert 0.7 < elapsed < 3, elapsed
    finally:
        s.close()


def test_client_that_stops_reading_is_dropped(server_factory):
    """A peer whose unread output passes ws.send_buffer is dropped, and the
    server keeps serving everyone else."""
    srv = server_factory("--ws.send_buffer=64k", "--limits.per_conn_rate=0/1s")

    async def go():
        slow = RawWS(srv.port)  # never reads
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.send_json({"type": "join", "peerId": "slow"})
        fast = await ws_connect(srv.ws_url)
        await fast.send(json.dumps({"type": "join", "peerId": "fast"}))
        await fast.recv()
        pad = "x" * 8000
        # 9.6 MB toward the slow peer: more than the kernel buffers of both
        # ends can take (tcp_wmem and tcp_rmem autotune up to 4-6 MB)
        for _ in range(1200):
            await fast.send(json.dumps({"type": "signal", "to": "slow", "p": pad}))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = http_get(srv.port, "/metrics").body.decode()
            if 'p2pmesh_ws_closes_total{code="1008"}' in m:
                break
            await asyncio.sleep(0.1)
        assert 'p2pmesh_ws_closes_total{code="1008"}' in m, m
        await fast.send(json.dumps({"type": "ping", "timestamp": 1}))
        got = []
        while True:  # errors for sends after the drop may come first
            msg = json.loads(await asyncio.wait_for(fast.recv(), 5))
            got.append(msg)
            if msg["type"] == "pong":
                break
        await fast.close()
        slow.sock.close()

    asyncio.run(asyncio.wait_for(go(), 30))
    assert srv.alive()


def test_emf_lines(server_factory):
    srv = server_factory("--metrics.emf=true", "--metrics.interval=1s")
    deadline = time.monotonic() + 5
    emf = []
    while time.monotonic() < deadline and not emf:
        emf = [l for l in srv.logs() if "_aws" in l]
        time.sleep(0.2)
    assert emf, srv.stdout_text()
    line = emf[0]
    directive = line["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "p2pmesh"
    assert directive["Dimensions"] == [["role"]]
    names = {m["Name"] for m in directive["Metrics"]}
    assert "p2pmesh_connections_total" in names
    assert "p2pmesh_signaling_joins_total" in names
    for n in names:
        assert isinstance(line[n], (int, float)), n
    assert line["role"] == "signaling" and isinstance(line["_aws"]["Timestamp"], (int, float))


def test_tls_min_version_1_3_refuses_tls_1_2(server_factory, tls_cert):
    import ssl
    cert, key = tls_cert
    srv = server_factory("--tls.cert=%s" % cert, "--tls.key=%s" % key,
                         "--tls.min_version=1.3")
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        http_get(srv.port, "/health", ssl_context=ctx)
    ctx13 = ssl.create_default_context(cafile=str(cert))
    assert http_get(srv.port, "/health", ssl_context=ctx13).status == 200


def test_log_format_text(server_factory):
    srv = server_factory("--log.format=text")
    lines = [l for l in srv.stdout_text().splitlines() if l.strip()]
    assert lines, "no log lines"
    for l in lines:
        assert not l.startswith("{"), l
    # "<ts> <level> <event>: <msg> key=value"
    assert any(" info  listening: serving" in l and "url=http://" in l
               for l in lines), lines


def test_emf_namespace(server_factory):
    srv = server_factory("--metrics.emf=true", "--metrics.interval=1s",
                         "--metrics.namespace=MyApp/Signaling")
    deadline = time.monotonic() + 5
    emf = []
    while time.monotonic() < deadline and not emf:
        emf = [l for l in srv.logs() if "_aws" in l]
        time.sleep(0.2)
    assert emf and emf[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "MyApp/Signaling"
