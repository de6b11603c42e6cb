"""Process lifecycle: SIGTERM drain, SIGHUP reload, TLS."""

import asyncio
import json
import signal
import subprocess
import time

from helpers import (
    OP_CLOSE,
    RawWS,
    close_all,
    free_port,
    http_get,
    join,
    recv_json,
    run_cli,
    tls_client_context,
    wait_closed,
    ws_connect,
)

# ----------------------------------------------------------------- SIGTERM


def test_sigterm_closes_clients_1001_and_exits_0(server_factory):
    srv = server_factory()

    async def go():
        a, _ = await join(srv.ws_url, "aa")
        b = await ws_connect(srv.ws_url)
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        for ws in (a, b):
            code, _ = await wait_closed(ws, 5)
            assert code == 1001, code
        return t0

    t0 = asyncio.run(go())
    try:
        rc = srv.proc.wait(10)
    except subprocess.TimeoutExpired:
        raise AssertionError("server still running 10 s after SIGTERM")
    assert rc == 0, (rc, srv.stderr_text())
    assert time.monotonic() - t0 < 10


def test_sigterm_deadline_with_clients_leaving_exits_cleanly(server_factory):
    """Clients that ignore our close frame keep the drain waiting until
    shutdown.grace; some of them hang up right around the deadline. The
    process must still exit 0 with nothing reported on stderr (a double
    free here once aborted it)."""
    for _ in range(3):
        srv = server_factory("--shutdown.grace=400ms",
                             "--limits.per_ip_rate=0/1s")
        socks = []
        for i in range(120):
            ws = RawWS(srv.port)
            ws.send_json({"type": "join", "peerId": "%040x" % i})
            socks.append(ws)
        time.sleep(0.3)
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.38)
        for ws in socks[::2]:
            ws.sock.close()
        try:
            rc = srv.proc.wait(10)
        finally:
            for ws in socks[1::2]:
                ws.sock.close()
        assert rc == 0, (rc, srv.stderr_text())
        assert srv.stderr_text().strip() == "", srv.stderr_text()


def test_sigterm_with_no_clients_exits_fast(server_factory):
    srv = server_factory()
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    rc = srv.proc.wait(5)
    assert rc == 0, (rc, srv.stderr_text())
    assert time.monotonic() - t0 < 3


def test_second_sigterm_exits_at_once(server_factory):
    srv = server_factory("--shutdown.grace=20s")
    ws = RawWS(srv.port)  # will not answer the close frame
    try:
        srv.proc.send_signal(signal.SIGTERM)
        f = ws.recv_message(timeout=5, answer_pings=False)
        assert f.opcode == OP_CLOSE and f.close_code == 1001, f
        # the server now lingers for our close reply; a second SIGTERM
        # must cut that short
        t0 = time.monotonic()
        if srv.alive():
            srv.proc.send_signal(signal.SIGTERM)
        try:
            srv.proc.wait(2)
        except subprocess.TimeoutExpired:
            raise AssertionError("second SIGTERM did not stop the server")
        assert time.monotonic() - t0 < 1.0
    finally:
        ws.close()


# ------------------------------------------------------------------ SIGHUP


def _debug_lines(srv):
    return [l for l in srv.logs() if str(l.get("level", "")).lower() == "debug"]


def _activity(srv):
    """Things that a server may log at debug level."""
    async def go():
        ws, _ = await join(srv.ws_url, "d%d" % int(time.monotonic() * 1000 % 100000))
        await ws.send(json.dumps({"type": "ping", "timestamp": 1}))
        await recv_json(ws)
        await ws.send("{bad json")
        await recv_json(ws)
        await close_all([ws])

    asyncio.run(go())
    http_get(srv.port, "/health")
    http_get(srv.port, "/nowhere")


def test_sighup_keeps_connections_and_reloads_log_level(server_factory, tmp_path):
    cfg = tmp_path / "p2pmesh.conf"
    cfg.write_text("# reloadable\nlog.level = info\n")
    srv = server_factory("--config=%s" % cfg)
    _activity(srv)
    time.sleep(0.3)
    assert _debug_lines(srv) == [], "debug lines at log.level=info"

    async def go():
        ws, _ = await join(srv.ws_url, "aa")
        try:
            cfg.write_text("# reloadable\nlog.level = debug\n")
            srv.proc.send_signal(signal.SIGHUP)
            await asyncio.sleep(0.5)
            assert srv.alive(), srv.stderr_text()
            pong = await ws.ping(b"after-hup")
            await asyncio.wait_for(pong, 3)
            await ws.send(json.dumps({"type": "ping", "timestamp": 2}))
            assert await recv_json(ws) == {"type": "pong", "timestamp": 2}
        finally:
            await close_all([ws])

    asyncio.run(go())
    _activity(srv)
    deadline = time.monotonic() + 3
    while not _debug_lines(srv) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not _debug_lines(srv):
        srv.stop()  # in case stdout is block-buffered
    assert _debug_lines(srv), "no debug lines after SIGHUP with log.level = debug"
    assert srv.alive() or srv.proc.returncode == 0


def test_sighup_keeps_server_serving(server_factory):
    srv = server_factory()
    srv.proc.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    assert srv.alive()
    assert http_get(srv.port, "/health").status == 200


# --------------------------------------------------------------------- TLS


def test_tls_health_and_wss(server_factory, tls_cert):
    cert, key = tls_cert
    srv = server_factory("--tls.cert=%s" % cert, "--tls.key=%s" % key)
    ctx = tls_client_context(cert)
    r = http_get(srv.port, "/health", ssl_context=ctx)
    assert r.status == 200, r
    body = r.json()
    assert body["status"] == "ok"

    async def go():
        ws = await ws_connect("wss://127.0.0.1:%d/" % srv.port, ssl=ctx)
        try:
            await ws.send(json.dumps({"type": "ping", "timestamp": 11}))
            assert await recv_json(ws) == {"type": "pong", "timestamp": 11}
            await ws.send(json.dumps({"type": "join", "peerId": "aa"}))
            assert (await recv_json(ws))["type"] == "bootstrap_peers"
        finally:
            await close_all([ws])

    asyncio.run(go())


def test_tls_missing_cert_exit_2(tmp_path, tls_cert):
    _, key = tls_cert
    missing = tmp_path / "missing-cert.pem"
    r = run_cli("--role=signaling", "--addr=127.0.0.1", "--port=%d" % free_port(),
                "--tls.cert=%s" % missing, "--tls.key=%s" % key, timeout=10)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    assert "missing-cert.pem" in lines[0] or "tls.cert" in lines[0], lines


def test_tls_missing_key_exit_2(tmp_path, tls_cert):
    cert, _ = tls_cert
    missing = tmp_path / "missing-key.pem"
    r = run_cli("--role=signaling", "--addr=127.0.0.1", "--port=%d" % free_port(),
                "--tls.cert=%s" % cert, "--tls.key=%s" % missing, timeout=10)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr


def test_tls_plaintext_client_does_not_hurt(server_factory, tls_cert):
    cert, key = tls_cert
    srv = server_factory("--tls.cert=%s" % cert, "--tls.key=%s" % key)
    import socket
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=3)
    try:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        try:
            data = s.recv(4096)
        except (ConnectionResetError, socket.timeout):
            data = b""
        assert b'"status":"ok"' not in data
    finally:
        s.close()
    r = http_get(srv.port, "/health", ssl_context=tls_client_context(cert))
    assert r.status == 200


def _self_signed(d, cn):
    cert, key = d / ("%s.pem" % cn), d / ("%s.key" % cn)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out",
         str(cert), "-days", "2", "-subj", "/CN=%s" % cn, "-addext",
         "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60)
    return cert, key


def _peer_cn(port):
    import ssl
    import socket as s
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with s.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout",
                          "-subject"], input=der, capture_output=True,
                         timeout=10)
    return out.stdout.decode()


def test_sighup_reloads_the_tls_certificate(server_factory, tmp_path):
    """SIGHUP swaps in the certificate now in the files; a connection made
    before keeps working; a broken file keeps the old certificate."""
    a_cert, a_key = _self_signed(tmp_path, "first")
    b_cert, b_key = _self_signed(tmp_path, "second")
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    cert.write_bytes(a_cert.read_bytes())
    key.write_bytes(a_key.read_bytes())
    srv = server_factory("--tls.cert=%s" % cert, "--tls.key=%s" % key)
    assert "CN = first" in _peer_cn(srv.port)

    async def go():
        ws = await ws_connect("wss://127.0.0.1:%d/" % srv.port,
                              ssl=tls_client_context(a_cert))
        try:
            cert.write_bytes(b_cert.read_bytes())
            key.write_bytes(b_key.read_bytes())
            srv.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 5
            while "CN = second" not in _peer_cn(srv.port):
                assert time.monotonic() < deadline, "certificate not reloaded"
                await asyncio.sleep(0.1)
            await ws.send(json.dumps({"type": "ping", "timestamp": 3}))
            assert await recv_json(ws) == {"type": "pong", "timestamp": 3}
        finally:
            await close_all([ws])

    asyncio.run(go())
    # a half-written pair (key does not match) is refused; the old stays
    cert.write_bytes(a_cert.read_bytes())
    srv.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert "CN = second" in _peer_cn(srv.port)
    assert any(l["event"] == "tls_reload_failed" for l in srv.logs())
