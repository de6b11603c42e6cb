"""The tunnel role through the agent (docs/tunnel.md, "Agent" and "Proxy
requests"): curl, python3-websockets and sockets use the agent as a plain
HTTP proxy on 127.0.0.1; the agent carries every client connection to the
server over mTLS; the server reaches local origins on 127.0.0.1."""

import asyncio
import base64
import hashlib
import json
import os
import socket
import ssl
import time

import pytest

from helpers import http_get
from tunnel_fixtures import (
    agent_connect, assert_refused, curl, curl_req, hdr, proxy_get, run,
    ws_through_connect,
)

HOP_REQUEST_HEADERS = ["x-hop-req", "keep-alive", "te", "trailer", "upgrade",
                       "proxy-connection", "proxy-authorization"]
HOP_RESPONSE_HEADERS = ["x-hop-resp", "keep-alive", "proxy-authenticate", "proxy-connection",
                        "trailer", "upgrade"]


def origin_headers(echo):
    return {k.lower(): v for k, v in echo["headers"]}


def test_absolute_form_get_with_query_reaches_the_origin(pair, http_origin):
    srv, agent = pair
    url = "%s/echo/a/b?x=1&y=two%%20words" % http_origin.url
    r = curl_req("-x", agent.proxy, "-H", "X-E2E: kept", url)
    assert r.rc == 0 and r.code == 200, r
    echo = r.json()
    assert echo["method"] == "GET"
    assert echo["path"] == "/echo/a/b?x=1&y=two%20words"  # origin-form
    h = origin_headers(echo)
    assert h["host"] == "127.0.0.1:%d" % http_origin.port
    assert h["x-e2e"] == "kept"
    assert "1.1 p2pmesh" in h.get("via", ""), h
    # response headers come back, with Via added on the way back too
    assert r.header("X-Origin") == "yes", r
    assert any("1.1 p2pmesh" in v for v in hdr(r.headers, "Via")), r.headers


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_methods_and_content_length_bodies(pair, http_origin, tmp_path, method):
    srv, agent = pair
    body = os.urandom(300_000)
    f = tmp_path / "body.bin"
    f.write_bytes(body)
    r = curl_req("-x", agent.proxy, "-X", method, "--data-binary", "@%s" % f,
                 "-H", "Content-Type: application/octet-stream",
                 "%s/echo/upload" % http_origin.url)
    assert r.rc == 0 and r.code == 200, r
    echo = r.json()
    assert echo["method"] == method
    assert echo["framing"] == "length"
    assert echo["body_len"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert r.header("X-Echo-Method") == method


def test_chunked_upload_streams_to_the_origin(pair, http_origin, tmp_path):
    srv, agent = pair
    body = os.urandom(1_000_003)
    f = tmp_path / "body.bin"
    f.write_bytes(body)
    r = curl_req("-x", agent.proxy, "-H", "Transfer-Encoding: chunked",
                 "--data-binary", "@%s" % f, "%s/echo/chunked-up" % http_origin.url)
    assert r.rc == 0 and r.code == 200, r
    echo = r.json()
    assert echo["method"] == "POST"
    assert echo["framing"] == "chunked", echo["headers"]
    assert echo["body_len"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("how", ["post", "put-upload"])
def test_expect_100_continue(pair, http_origin, tmp_path, how):
    """curl sends Expect: 100-continue for bodies over 1 MB; the origin
    answers 100 Continue, then the final response. A proxy forwards the 1xx
    and then the final response (RFC 9110 section 15.2)."""
    srv, agent = pair
    body = os.urandom(2_000_000)
    f = tmp_path / "body.bin"
    f.write_bytes(body)
    args = ["--data-binary", "@%s" % f] if how == "post" else ["-T", str(f)]
    r = curl_req("-x", agent.proxy, *args, "-H", "Expect: 100-continue",
                 "%s/echo/expect" % http_origin.url, timeout=40)
    assert r.rc == 0 and r.code == 200, r
    echo = r.json()
    assert echo["body_len"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_hop_by_hop_request_headers_are_stripped(pair, http_origin):
    srv, agent = pair
    r = curl_req("-x", agent.proxy,
                 "-H", "Connection: X-Hop-Req",
                 "-H", "X-Hop-Req: must-not-pass",
                 "-H", "Keep-Alive: timeout=300",
                 "-H", "TE: trailers",
                 "-H", "Trailer: X-Trailer",
                 "-H", "Upgrade: foo/1",
                 "-H", "Proxy-Connection: keep-alive",
                 "-H", "Proxy-Authorization: Basic dTpw",
                 "-H", "X-E2E: kept",
                 "%s/echo/hop" % http_origin.url)
    assert r.rc == 0 and r.code == 200, r
    h = origin_headers(r.json())
    for name in HOP_REQUEST_HEADERS:
        assert name not in h, (name, h)
    assert "x-hop-req" not in h.get("connection", "").lower(), h
    assert h["x-e2e"] == "kept"
    assert "1.1 p2pmesh" in h.get("via", "")


def test_hop_by_hop_response_headers_are_stripped(pair, http_origin):
    srv, agent = pair
    r = curl_req("-x", agent.proxy, "%s/hop" % http_origin.url)
    assert r.rc == 0 and r.code == 200, r
    assert r.body == b"hop\n"
    names = {k.lower() for k, _ in r.headers}
    for name in HOP_RESPONSE_HEADERS:
        assert name not in names, (name, r.headers)
    for v in hdr(r.headers, "Connection"):
        assert "x-hop-resp" not in v.lower(), r.headers
    assert r.header("X-End-To-End") == "kept"
    assert any("1.1 p2pmesh" in v for v in hdr(r.headers, "Via")), r.headers


def test_redirects_are_passed_through_not_followed(pair, http_origin):
    srv, agent = pair
    r = curl_req("-x", agent.proxy, "%s/redirect" % http_origin.url)
    assert r.rc == 0 and r.code == 302, r
    assert r.header("Location") == "/redirect-target"
    assert r.body == b"moved\n"
    time.sleep(0.3)  # give a (wrong) follow-up request time to show
    assert http_origin.paths() == ["/redirect"]


def test_error_statuses_pass_through_unchanged(pair, http_origin):
    srv, agent = pair
    for code in (404, 500, 503):
        r = curl_req("-x", agent.proxy, "%s/status?code=%d" % (http_origin.url, code))
        assert r.rc == 0 and r.code == code, r
        assert r.body == b"status %d\n" % code
        # the origin's own answer, not a proxy refusal
        assert r.header("Proxy-Status") is None or "error=" not in r.header("Proxy-Status")


def test_chunked_and_close_delimited_responses(pair, http_origin):
    srv, agent = pair
    r = curl_req("-x", agent.proxy, "%s/chunked?n=50" % http_origin.url)
    assert r.rc == 0 and r.code == 200, r
    assert r.body == b"".join(b"chunk-%d;" % i for i in range(50))
    r = curl_req("-x", agent.proxy, "%s/close" % http_origin.url)
    assert r.rc == 0 and r.code == 200, r
    assert r.body == b"until-close-body"


def test_slow_response_streams_before_it_is_complete(pair, http_origin):
    """The origin sends half a response and waits for the test to see it:
    a proxy that buffered whole responses would never deliver the first
    half (bounded wait), so this proves streaming without a timing bound."""
    srv, agent = pair
    s = socket.create_connection(("127.0.0.1", agent.port), timeout=20)
    try:
        url = "%s/gate?id=stream1" % http_origin.url
        s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n"
                   % (url, http_origin.port)).encode())
        buf = b""
        deadline = time.monotonic() + 20
        while b"first-half|" not in buf:
            assert time.monotonic() < deadline, buf
            chunk = s.recv(65536)
            assert chunk, "closed early: %r" % buf
            buf += chunk
        assert buf.startswith(b"HTTP/1.1 200"), buf
        assert b"second-ha" not in buf
        http_origin.gate("stream1").set()
        while not buf.endswith(b"first-half|second-ha"):
            assert time.monotonic() < deadline, buf
            chunk = s.recv(65536)
            assert chunk, "closed early: %r" % buf
            buf += chunk
    finally:
        s.close()
    r = curl_req("-x", agent.proxy, "%s/slow?n=5&delay=0.1" % http_origin.url)
    assert r.rc == 0 and r.code == 200 and r.body == b"slow0\nslow1\nslow2\nslow3\nslow4\n", r


def test_keep_alive_reuses_the_client_connection(pair, http_origin):
    srv, agent = pair
    p = curl("-v", "-x", agent.proxy, "%s/echo/one" % http_origin.url,
             "%s/echo/two" % http_origin.url)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 0, err
    assert "Re-using existing connection" in err, err
    out = p.stdout.decode()
    assert '"/echo/one"' in out and '"/echo/two"' in out, out
    assert http_origin.paths() == ["/echo/one", "/echo/two"]


def test_keep_alive_by_hand_two_requests_on_one_socket(pair, http_origin):
    srv, agent = pair
    s = socket.create_connection(("127.0.0.1", agent.port), timeout=10)
    try:
        r1, reader = proxy_get(s, "%s/echo/k1" % http_origin.url)
        assert r1.status == 200, r1
        r2, _ = proxy_get(s, "%s/echo/k2" % http_origin.url, method="POST", body=b"abc",
                          reader=reader)
        assert r2.status == 200, r2
        assert json.loads(r2.body)["body"] == "abc"
        assert json.loads(r2.body)["path"] == "/echo/k2"
    finally:
        s.close()


def test_connect_to_the_tls_origin(pair, tls_origin):
    srv, agent = pair
    r = curl_req("-x", agent.proxy, "--cacert", str(tls_origin.cafile),
                 "%s/echo/secure?q=1" % tls_origin.url)
    assert r.rc == 0 and r.code == 200, r
    assert r.connect_code == 200, r
    echo = r.json()
    assert echo["tls"] is True and echo["path"] == "/echo/secure?q=1"
    # end-to-end TLS: the proxy could not add anything
    assert "via" not in origin_headers(echo)


def test_connect_early_data_after_the_connect_head_is_forwarded(pair, tcp_origin):
    """Bytes sent right behind the CONNECT head (before the 200) reach the target."""
    srv, agent = pair
    echo = tcp_origin("echo")
    s = socket.create_connection(("127.0.0.1", agent.port), timeout=10)
    try:
        target = "127.0.0.1:%d" % echo.port
        s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, target)).encode()
                  + b"early-bytes")
        buf = b""
        deadline = time.monotonic() + 10
        while b"early-bytes" not in buf:
            assert time.monotonic() < deadline, buf
            chunk = s.recv(65536)
            assert chunk, buf
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert rest == b"early-bytes"
    finally:
        s.close()


def test_websocket_through_connect_echoes_text_and_binary(pair, ws_origin):
    srv, agent = pair

    async def go():
        ws = await ws_through_connect(agent.port, "127.0.0.1:%d" % ws_origin.port,
                                      "ws://127.0.0.1:%d/chat" % ws_origin.port)
        try:
            await ws.send("hello through the tunnel")
            assert await asyncio.wait_for(ws.recv(), 10) == "hello through the tunnel"
            blob = os.urandom(1 << 20)
            await ws.send(blob)
            assert await asyncio.wait_for(ws.recv(), 20) == blob
            for i in range(20):
                await ws.send("m%d" % i)
            got = [await asyncio.wait_for(ws.recv(), 10) for _ in range(20)]
            assert got == ["m%d" % i for i in range(20)]
        finally:
            await ws.close()

    run(go())
    assert ws_origin.connections == 1


def test_secure_websocket_through_connect(pair, ws_origin):
    srv, agent = pair
    ctx = ssl.create_default_context(cafile=str(ws_origin.cafile))

    async def go():
        ws = await ws_through_connect(agent.port, "127.0.0.1:%d" % ws_origin.tls_port,
                                      "wss://127.0.0.1:%d/" % ws_origin.tls_port,
                                      ssl_ctx=ctx, server_hostname="localhost")
        try:
            await ws.send(b"\x00\x01binary\xff")
            assert await asyncio.wait_for(ws.recv(), 10) == b"\x00\x01binary\xff"
            await ws.send("text")
            assert await asyncio.wait_for(ws.recv(), 10) == "text"
        finally:
            await ws.close()

    run(go())


def test_half_close_passes_the_fin_and_the_answer_still_comes(pair, tcp_origin):
    srv, agent = pair
    half = tcp_origin("half")
    resp, s, reader = agent_connect(agent.port, "127.0.0.1:%d" % half.port)
    try:
        assert resp.status == 200, resp
        payload = os.urandom(200_000)
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + 20
        buf = bytearray(reader.buf)
        while True:
            assert time.monotonic() < deadline, "no EOF; got %r" % bytes(buf)
            s.settimeout(max(0.1, deadline - time.monotonic()))
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        assert bytes(buf) == b"got %d %s\n" % (len(payload),
                                               hashlib.sha256(payload).hexdigest().encode())
    finally:
        s.close()
    assert half.half_closed == [200_000]


def test_proxy_auth_required_and_accepted(tunnel_server, tunnel_agent, http_origin, tls_origin):
    srv = tunnel_server()
    agent = tunnel_agent(srv, "--tunnel.proxy_auth=u:p")
    url = "%s/echo/auth" % http_origin.url
    r = curl_req("-x", agent.proxy, url)
    assert r.code == 407, r
    assert r.header("Proxy-Authenticate") == 'Basic realm="p2pmesh"', r.headers
    r = curl_req("-x", agent.proxy, "--proxy-user", "u:wrong", url)
    assert r.code == 407, r
    assert http_origin.paths() == []
    r = curl_req("-x", agent.proxy, "--proxy-user", "u:p", url)
    assert r.rc == 0 and r.code == 200, r
    h = origin_headers(r.json())
    assert "proxy-authorization" not in h, h
    # CONNECT too: refused without credentials, accepted with them
    r = curl_req("-x", agent.proxy, "--cacert", str(tls_origin.cafile), tls_origin.url + "/echo")
    assert r.rc != 0 and r.connect_code == 407, r
    r = curl_req("-x", agent.proxy, "--proxy-user", "u:p", "--cacert", str(tls_origin.cafile),
                 tls_origin.url + "/echo")
    assert r.rc == 0 and r.code == 200, r


def foreign_agent(tunnel_agent, srv, tunnel_certs, foreign_certs):
    """An agent whose client certificate comes from another CA (it trusts our CA)."""
    return tunnel_agent(srv, "--tls.cert=%s" % foreign_certs.agent_crt,
                        "--tls.key=%s" % foreign_certs.agent_key,
                        "--tunnel.server_ca=%s" % tunnel_certs.ca,
                        "--tunnel.retry_initial=100ms", "--tunnel.retry_max=200ms",
                        wait_connected=False)


def test_agent_refused_by_the_server_answers_502(tunnel_server, tunnel_agent, http_origin,
                                                 tunnel_certs, foreign_certs):
    """The server refuses the agent's certificate: the agent answers 502
    destination_unavailable; the same request through an agent with the
    right certificate gets through."""
    srv = tunnel_server()
    bad = foreign_agent(tunnel_agent, srv, tunnel_certs, foreign_certs)
    s = socket.create_connection(("127.0.0.1", bad.port), timeout=20)
    try:
        r, _ = proxy_get(s, "%s/echo/x" % http_origin.url, timeout=20)
    finally:
        s.close()
    assert_refused(r, 502, "destination_unavailable")
    good = tunnel_agent(srv)
    r = curl_req("-x", good.proxy, "%s/echo/x" % http_origin.url)
    assert r.rc == 0 and r.code == 200, r
    assert http_origin.paths() == ["/echo/x"]


def test_agent_refused_by_the_server_is_not_connected(tunnel_server, tunnel_agent, tunnel_certs,
                                                      foreign_certs):
    """Its probes (mTLS handshake and GET /health) fail, however often they retry."""
    srv = tunnel_server()
    bad = foreign_agent(tunnel_agent, srv, tunnel_certs, foreign_certs)
    time.sleep(2)  # several probes with retry_max=200ms
    for _ in range(5):
        _, h = bad.health()
        assert h["connected"] is False, (h, bad.stdout_text()[-2000:])
        assert http_get(bad.port, "/ready").status == 503
        time.sleep(0.2)


def test_agent_rejects_a_server_with_the_wrong_name(tunnel_server, tunnel_agent, http_origin):
    """The agent checks tunnel.server_name, not the IP it dials."""
    srv = tunnel_server()
    bad = tunnel_agent(srv, "--tunnel.server_name=not-the-server", wait_connected=False)
    s = socket.create_connection(("127.0.0.1", bad.port), timeout=20)
    try:
        r, _ = proxy_get(s, "%s/echo/x" % http_origin.url, timeout=20)
    finally:
        s.close()
    assert_refused(r, 502, "destination_unavailable")
    good = tunnel_agent(srv, "--tunnel.server_name=localhost")  # also in the cert
    r = curl_req("-x", good.proxy, "%s/echo/x" % http_origin.url)
    assert r.rc == 0 and r.code == 200, r


def spki_pin(crt):
    import subprocess
    pub = subprocess.run(["openssl", "x509", "-in", str(crt), "-pubkey", "-noout"],
                         capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub,
                         capture_output=True, check=True).stdout
    return "sha256//" + base64.b64encode(hashlib.sha256(der).digest()).decode()


def test_agent_server_pin(tunnel_server, tunnel_agent, tunnel_certs, foreign_certs,
                          http_origin):
    srv = tunnel_server()
    bad = tunnel_agent(srv, "--tunnel.server_pin=%s" % spki_pin(foreign_certs.server_crt),
                       wait_connected=False)
    s = socket.create_connection(("127.0.0.1", bad.port), timeout=20)
    try:
        r, _ = proxy_get(s, "%s/echo/pin" % http_origin.url, timeout=20)
    finally:
        s.close()
    assert_refused(r, 502, "destination_unavailable")
    assert http_origin.paths() == []
    good = tunnel_agent(srv, "--tunnel.server_pin=%s,%s" % (
        spki_pin(foreign_certs.server_crt), spki_pin(tunnel_certs.server_crt)))
    r = curl_req("-x", good.proxy, "%s/echo/pin" % http_origin.url)
    assert r.rc == 0 and r.code == 200, r


def test_agent_proxy_allow(tunnel_server, tunnel_agent, http_origin):
    """Clients outside tunnel.proxy_allow are closed at accept."""
    srv = tunnel_server()
    shut = tunnel_agent(srv, "--tunnel.proxy_allow=10.0.0.0/8", wait=False)
    deadline = time.monotonic() + 15
    while True:  # wait until it listens
        assert shut.alive(), shut.stderr_text()
        try:
            s = socket.create_connection(("127.0.0.1", shut.port), timeout=5)
            break
        except OSError:
            assert time.monotonic() < deadline, "agent never listened"
            time.sleep(0.05)
    try:
        try:
            s.sendall(("GET %s/echo/no HTTP/1.1\r\nHost: x\r\n\r\n"
                       % http_origin.url).encode())
        except OSError:
            pass
        s.settimeout(10)
        try:
            data = s.recv(100)
        except ConnectionResetError:
            data = b""
        assert data == b"", data
    finally:
        s.close()
    assert http_origin.paths() == []
    ok = tunnel_agent(srv, "--tunnel.proxy_allow=10.0.0.0/8,127.0.0.1")
    r = curl_req("-x", ok.proxy, "%s/echo/yes" % http_origin.url)
    assert r.rc == 0 and r.code == 200, r


def test_agent_health_follows_the_server(tunnel_server, tunnel_agent, http_origin):
    srv = tunnel_server()
    agent = tunnel_agent(srv, "--tunnel.probe_interval=1s", "--tunnel.retry_initial=200ms",
                         "--tunnel.retry_max=1s")
    r, h = agent.health()
    assert r.status == 200 and h["connected"] is True and h["mode"] == "agent", h
    assert str(srv.port) in str(h["server_addr"]), h
    assert h["server_name"] == "p2pmesh-tunnel", h
    assert http_get(agent.port, "/ready").status == 200
    srv.stop()
    h = agent.wait_connected(False, timeout=30)
    ready = http_get(agent.port, "/ready")
    assert ready.status == 503, ready
    assert "server" in ready.json().get("failing", []), ready
    # while down: a request gets 502 destination_unavailable
    s = socket.create_connection(("127.0.0.1", agent.port), timeout=20)
    try:
        r, _ = proxy_get(s, "%s/echo/down" % http_origin.url, timeout=20)
    finally:
        s.close()
    assert_refused(r, 502, "destination_unavailable")
    srv.restart()
    agent.wait_connected(True, timeout=30)
    assert http_get(agent.port, "/ready").status == 200
    r = curl_req("-x", agent.proxy, "%s/echo/up" % http_origin.url)
    assert r.rc == 0 and r.code == 200, r


def test_agent_wake_and_kill_endpoints(tunnel_server, tunnel_agent, recorder):
    srv = tunnel_server()
    base = "http://127.0.0.1:%d" % recorder.port
    agent = tunnel_agent(srv, "--tunnel.wake_endpoint=%s/wake" % base,
                         "--tunnel.kill_endpoint=%s/kill" % base, "--tunnel.api_key=k")
    wake = recorder.wait_for(lambda r: r["path"] == "/wake")
    assert wake["method"] == "POST", wake
    assert wake["headers"].get("x-api-key") == "k", wake
    assert not any(r["path"] == "/kill" for r in recorder.requests())
    agent.stop()
    kill = recorder.wait_for(lambda r: r["path"] == "/kill")
    assert kill["method"] == "POST", kill
    assert kill["headers"].get("x-api-key") == "k", kill
    assert agent.proc.returncode == 0, (agent.proc.returncode, agent.stderr_text())


def test_agent_metrics_on_the_proxy_port(pair, http_origin):
    srv, agent = pair
    r = curl_req("-x", agent.proxy, "%s/echo/m" % http_origin.url)
    assert r.rc == 0 and r.code == 200, r
    text, samples = agent.metrics()
    assert "p2pmesh_tunnel_" in text, text[:2000]
