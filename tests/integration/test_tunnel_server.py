"""The tunnel server used directly as an HTTPS proxy with mTLS
(docs/tunnel.md, "Server"): curl --proxy https://..., stunnel4 in client
mode with protocol = connect, openssl s_client and Python's ssl; client
identity checks (no certificate, another CA, allow_cn), SIGHUP reload with
live tunnels, startup errors and the Fluidity seed names."""

import asyncio
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import time

import pytest

from helpers import run_cli
from tunnel_fixtures import (
    assert_refused, client_ctx, curl, curl_req, hdr, https_proxy_args, make_certs,
    proxy_get, run, server_connect, tls_connect, wait_until, ws_through_connect,
)

# curl's exit for a refused client certificate: 35 (handshake failed), 56 (receive
# failure: the TLS 1.3 alert arrives after curl's side of the handshake) or 55 (send
# failure: curl already sent its request and the server's close resets the connection)
TLS_REFUSED = (35, 55, 56)


def test_gen_certs_writes_the_documented_files(tmp_path):
    d = tmp_path / "certs"
    certs, r = make_certs(d)
    for name in ("ca.crt", "ca.key", "server.crt", "server.key", "agent.crt", "agent.key"):
        assert (d / name).exists(), name
        assert name in r.stdout + r.stderr, (name, r.stdout)
    for name in ("ca.key", "server.key", "agent.key"):
        assert (d / name).stat().st_mode & 0o777 == 0o600, name
    text = subprocess.run(["openssl", "x509", "-in", str(certs.server_crt), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert "DNS:p2pmesh-tunnel" in text and "DNS:localhost" in text and \
        "IP Address:127.0.0.1" in text, text
    assert "TLS Web Server Authentication" in text
    text = subprocess.run(["openssl", "x509", "-in", str(certs.agent_crt), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert "CN = agent" in text and "TLS Web Client Authentication" in text, text
    for leaf in (certs.server_crt, certs.agent_crt):
        v = subprocess.run(["openssl", "verify", "-CAfile", str(certs.ca), str(leaf)],
                           capture_output=True, text=True)
        assert v.returncode == 0, v.stdout + v.stderr
    # the CA is reused when present
    ca_before = certs.ca.read_bytes()
    make_certs(d, "--tunnel.cert_clients=agent2")
    assert certs.ca.read_bytes() == ca_before
    v = subprocess.run(["openssl", "verify", "-CAfile", str(certs.ca), str(d / "agent2.crt")],
                       capture_output=True, text=True)
    assert v.returncode == 0, v.stdout + v.stderr


# ------------------------------------------------------------ curl as HTTPS proxy


def test_curl_https_proxy_absolute_form(tunnel_server, tunnel_certs, http_origin):
    srv = tunnel_server()
    r = curl_req(*https_proxy_args(srv, tunnel_certs), "-X", "POST", "--data-binary", "hello",
                 "%s/echo/direct?z=9" % http_origin.url)
    assert r.rc == 0 and r.code == 200, r
    echo = r.json()
    assert echo["method"] == "POST" and echo["path"] == "/echo/direct?z=9"
    assert echo["body"] == "hello"
    h = {k.lower(): v for k, v in echo["headers"]}
    assert "1.1 p2pmesh" in h.get("via", ""), h
    assert h["host"] == "127.0.0.1:%d" % http_origin.port
    assert any("1.1 p2pmesh" in v for v in hdr(r.headers, "Via")), r.headers


def test_curl_https_proxy_connect(tunnel_server, tunnel_certs, tls_origin, http_origin):
    srv = tunnel_server()
    r = curl_req(*https_proxy_args(srv, tunnel_certs), "--cacert", str(tls_origin.cafile),
                 "%s/echo/over-connect" % tls_origin.url)
    assert r.rc == 0 and r.code == 200 and r.connect_code == 200, r
    assert r.json()["path"] == "/echo/over-connect"
    # plain http through a CONNECT tunnel (curl -p): bytes relayed untouched, no Via
    r = curl_req(*https_proxy_args(srv, tunnel_certs), "-p", "%s/echo/p" % http_origin.url)
    assert r.rc == 0 and r.code == 200 and r.connect_code == 200, r
    h = {k.lower(): v for k, v in r.json()["headers"]}
    assert "via" not in h, h


def test_curl_https_proxy_expect_100_continue(tunnel_server, tunnel_certs, http_origin,
                                              tmp_path):
    srv = tunnel_server()
    body = os.urandom(2_000_000)
    f = tmp_path / "body.bin"
    f.write_bytes(body)
    r = curl_req(*https_proxy_args(srv, tunnel_certs), "--data-binary", "@%s" % f,
                 "-H", "Expect: 100-continue", "%s/echo/expect" % http_origin.url, timeout=40)
    assert r.rc == 0 and r.code == 200, r
    assert r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_curl_https_proxy_keep_alive(tunnel_server, tunnel_certs, http_origin):
    srv = tunnel_server()
    p = curl("-v", *https_proxy_args(srv, tunnel_certs), "%s/echo/1" % http_origin.url,
             "%s/echo/2" % http_origin.url)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 0, err
    assert "Re-using existing connection" in err, err
    assert http_origin.paths() == ["/echo/1", "/echo/2"]


def test_origin_form_health_inside_tls_and_other_paths_400(tunnel_server, tunnel_certs):
    srv = tunnel_server()
    ctx = client_ctx(tunnel_certs)
    s = tls_connect(srv.port, ctx)
    try:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: p2pmesh-tunnel\r\nConnection: close\r\n\r\n")
        from tunnel_fixtures import read_response
        from helpers import _Reader
        r = read_response(_Reader(s))
        assert r.status == 200, r
        body = json.loads(r.body)
        assert body.get("mode") == "server", body
    finally:
        s.close()
    s = tls_connect(srv.port, ctx)
    try:
        s.sendall(b"GET /something HTTP/1.1\r\nHost: p2pmesh-tunnel\r\n\r\n")
        from tunnel_fixtures import read_response
        from helpers import _Reader
        r = read_response(_Reader(s))
        assert_refused(r, 400, "http_request_error")
    finally:
        s.close()


def test_https_urls_in_absolute_form_are_refused(tunnel_server, tunnel_certs, tls_origin):
    """Only http:// is forwarded; https:// must go through CONNECT."""
    srv = tunnel_server()
    ctx = client_ctx(tunnel_certs)
    s = tls_connect(srv.port, ctx)
    try:
        r, _ = proxy_get(s, "%s/echo/abs-https" % tls_origin.url)
    finally:
        s.close()
    assert_refused(r, 403, "http_request_denied")
    resp, s, _ = server_connect(srv.port, ctx, "127.0.0.1:%d" % tls_origin.port)
    s.close()
    assert resp.status == 200, resp


# --------------------------------------------------------------- client identity


def test_no_client_certificate_is_refused(tunnel_server, tunnel_certs, http_origin):
    srv = tunnel_server()
    url = "%s/echo/nocert" % http_origin.url
    r = curl_req("--proxy", "https://127.0.0.1:%d" % srv.port, "--proxy-cacert",
                 str(tunnel_certs.ca), url)
    assert r.rc in TLS_REFUSED, r
    assert http_origin.paths() == []
    # Python ssl without a certificate: the handshake or the first read fails
    ctx = client_ctx(cafile=tunnel_certs.ca)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        s = tls_connect(srv.port, ctx)
        try:
            s.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % http_origin.port)
            data = s.recv(100)
            if not data:
                raise ConnectionError("closed")
        finally:
            s.close()
    # the same request with the certificate goes through
    r = curl_req(*https_proxy_args(srv, tunnel_certs), url)
    assert r.rc == 0 and r.code == 200, r
    assert http_origin.paths() == ["/echo/nocert"]


def test_certificate_from_another_ca_is_refused(tunnel_server, tunnel_certs, foreign_certs,
                                                http_origin):
    srv = tunnel_server()
    url = "%s/echo/ca" % http_origin.url
    r = curl_req(*https_proxy_args(srv, tunnel_certs, cert=foreign_certs.agent_crt,
                                   key=foreign_certs.agent_key), url)
    assert r.rc in TLS_REFUSED, r
    assert http_origin.paths() == []
    r = curl_req(*https_proxy_args(srv, tunnel_certs), url)
    assert r.rc == 0 and r.code == 200, r
    text, samples = srv.metrics()
    from tunnel_fixtures import metric
    assert metric(samples, "p2pmesh_tunnel_handshakes_total", result="failed") >= 1, text
    assert metric(samples, "p2pmesh_tunnel_handshakes_total", result="ok") >= 1, text


def test_curl_refuses_a_server_from_another_ca(tunnel_server, tunnel_certs, foreign_certs,
                                               http_origin):
    """The other direction: a client trusting another CA does not talk to us."""
    srv = tunnel_server()
    r = curl_req(*https_proxy_args(srv, tunnel_certs, cacert=foreign_certs.ca),
                 "%s/echo/x" % http_origin.url)
    assert r.rc == 60, r  # SSL certificate problem
    assert http_origin.paths() == []


def test_allow_cn(tunnel_server, tunnel_certs, http_origin):
    url = "%s/echo/cn" % http_origin.url
    refused = tunnel_server("--tunnel.allow_cn=someone-else")
    r = curl_req(*https_proxy_args(refused, tunnel_certs), url)
    assert r.rc in TLS_REFUSED, r
    assert http_origin.paths() == []
    accepted = tunnel_server("--tunnel.allow_cn=someone-else,agent")
    r = curl_req(*https_proxy_args(accepted, tunnel_certs), url)
    assert r.rc == 0 and r.code == 200, r
    assert http_origin.paths() == ["/echo/cn"]


def test_allow_pin(tunnel_server, tunnel_certs, foreign_certs, http_origin):
    """tunnel.allow_pin: the client key must match one of the pins."""
    def pin(crt):
        pub = subprocess.run(["openssl", "x509", "-in", str(crt), "-pubkey", "-noout"],
                             capture_output=True, check=True).stdout
        der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub,
                             capture_output=True, check=True).stdout
        import base64
        return "sha256//" + base64.b64encode(hashlib.sha256(der).digest()).decode()

    url = "%s/echo/pin" % http_origin.url
    refused = tunnel_server("--tunnel.allow_pin=%s" % pin(foreign_certs.agent_crt))
    r = curl_req(*https_proxy_args(refused, tunnel_certs), url)
    assert r.rc in TLS_REFUSED, r
    accepted = tunnel_server("--tunnel.allow_pin=%s,%s" % (pin(foreign_certs.agent_crt),
                                                          pin(tunnel_certs.agent_crt)))
    r = curl_req(*https_proxy_args(accepted, tunnel_certs), url)
    assert r.rc == 0 and r.code == 200, r


def test_revoked_client_certificate_is_refused(tunnel_server, tmp_path, http_origin):
    """tls.crl: a revoked client certificate fails the handshake."""
    certs, _ = make_certs(tmp_path / "crlcerts", "--tunnel.cert_clients=agent,revoked")
    d = tmp_path / "ca-db"
    d.mkdir()
    (d / "index.txt").write_text("")
    (d / "crlnumber").write_text("01\n")
    conf = d / "ca.cnf"
    conf.write_text("\n".join([
        "[ ca ]", "default_ca = CA_default", "[ CA_default ]",
        "database = %s/index.txt" % d, "crlnumber = %s/crlnumber" % d,
        "default_md = sha256", "default_crl_days = 2",
        "certificate = %s" % certs.ca, "private_key = %s" % certs.ca_key, ""]))
    rev_crt, rev_key = certs.client("revoked")
    subprocess.run(["openssl", "ca", "-config", str(conf), "-revoke", str(rev_crt)],
                   check=True, capture_output=True)
    crl = tmp_path / "crl.pem"
    subprocess.run(["openssl", "ca", "-config", str(conf), "-gencrl", "-out", str(crl)],
                   check=True, capture_output=True)
    srv = tunnel_server("--tls.crl=%s" % crl, certs=certs)
    url = "%s/echo/crl" % http_origin.url
    r = curl_req(*https_proxy_args(srv, certs, cert=rev_crt, key=rev_key), url)
    assert r.rc in TLS_REFUSED, r
    r = curl_req(*https_proxy_args(srv, certs), url)
    assert r.rc == 0 and r.code == 200, r


# ---------------------------------------------------------------- other clients


def test_openssl_s_client(tunnel_server, tunnel_certs, http_origin):
    srv = tunnel_server()
    req = ("GET %s/echo/s_client HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n"
           % (http_origin.url, http_origin.port)).encode()
    base = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % srv.port, "-quiet", "-ign_eof",
            "-CAfile", str(tunnel_certs.ca), "-verify_return_error",
            "-servername", "p2pmesh-tunnel", "-verify_hostname", "p2pmesh-tunnel"]
    p = subprocess.run(base + ["-cert", str(tunnel_certs.agent_crt), "-key",
                               str(tunnel_certs.agent_key)],
                       input=req, capture_output=True, timeout=30)
    assert p.stdout.startswith(b"HTTP/1.1 200"), (p.stdout[:500], p.stderr[-1000:])
    assert b'"/echo/s_client"' in p.stdout
    p = subprocess.run(base, input=req, capture_output=True, timeout=30)
    assert b"HTTP/1.1 200" not in p.stdout, p.stdout[:500]
    assert http_origin.paths() == ["/echo/s_client"]


def test_python_ssl_connect_pipe(tunnel_server, tunnel_certs, tcp_origin):
    srv = tunnel_server()
    echo = tcp_origin("echo")
    resp, s, reader = server_connect(srv.port, client_ctx(tunnel_certs),
                                     "127.0.0.1:%d" % echo.port)
    try:
        assert resp.status == 200, resp
        assert "connection established" in resp.reason.lower(), resp
        for size in (1, 1000, 100_000):
            data = os.urandom(size)
            s.sendall(data)
            got = reader.read_exact(size, time.monotonic() + 10)
            assert got == data
    finally:
        s.close()


def test_stunnel_as_the_mtls_client(tunnel_server, tunnel_certs, http_origin, tls_origin,
                                    tcp_origin, stunnel_factory):
    """stunnel wraps plain proxy requests in mTLS: curl -x to stunnel's port
    reaches the origins with absolute-form and CONNECT; a raw CONNECT pipe
    through it echoes."""
    srv = tunnel_server()
    st = stunnel_factory(srv, tunnel_certs)
    r = curl_req("-x", st.proxy, "%s/echo/via-stunnel?a=1" % http_origin.url)
    assert r.rc == 0 and r.code == 200, (r, st.log_text()[-3000:])
    assert r.json()["path"] == "/echo/via-stunnel?a=1"
    r = curl_req("-x", st.proxy, "--cacert", str(tls_origin.cafile), "%s/echo/s" % tls_origin.url)
    assert r.rc == 0 and r.code == 200 and r.connect_code == 200, (r, st.log_text()[-3000:])
    echo = tcp_origin("echo")
    from tunnel_fixtures import agent_connect
    resp, s, reader = agent_connect(st.port, "127.0.0.1:%d" % echo.port)
    try:
        assert resp.status == 200, resp
        data = os.urandom(50_000)
        s.sendall(data)
        assert reader.read_exact(len(data), time.monotonic() + 15) == data
    finally:
        s.close()
    line = srv.wait_event("tunnel_stream", lambda o: o.get("target") == "127.0.0.1:%d" % echo.port)
    assert line["client"] == "agent", line


def test_stunnel_protocol_connect(tunnel_server, tunnel_certs, tls_origin, stunnel_factory):
    """stunnel's own CONNECT client (protocol = connect, protocolHost =
    the TLS origin) through the server; plain curl to stunnel's port."""
    srv = tunnel_server()
    st = stunnel_factory(srv, tunnel_certs, "127.0.0.1:%d" % tls_origin.port,
                         target_ca=tls_origin.cafile)
    r = curl_req("http://127.0.0.1:%d/echo/protocol-connect?x=1" % st.connect_port)
    assert r.rc == 0 and r.code == 200, (r, st.log_text()[-3000:])
    echo = r.json()
    assert echo["tls"] is True and echo["path"] == "/echo/protocol-connect?x=1", echo
    line = srv.wait_event("tunnel_stream",
                          lambda o: o.get("target") == "127.0.0.1:%d" % tls_origin.port)
    assert line["method"] == "CONNECT" and line["client"] == "agent", line


def test_stunnel_with_a_foreign_certificate_or_wrong_name_fails(
        tunnel_server, tunnel_certs, foreign_certs, http_origin, stunnel_factory):
    srv = tunnel_server()
    url = "%s/echo/bad" % http_origin.url
    bad_cert = stunnel_factory(srv, tunnel_certs, cert=foreign_certs.agent_crt,
                               key=foreign_certs.agent_key)
    r = curl_req("-x", bad_cert.proxy, url, timeout=30)
    assert r.rc != 0 or r.code != 200, r
    bad_name = stunnel_factory(srv, tunnel_certs, check_host="someone-else")
    r = curl_req("-x", bad_name.proxy, url, timeout=30)
    assert r.rc != 0 or r.code != 200, r
    assert http_origin.paths() == []
    good = stunnel_factory(srv, tunnel_certs)
    r = curl_req("-x", good.proxy, "%s/echo/good" % http_origin.url, timeout=30)
    assert r.rc == 0 and r.code == 200, (r, good.log_text()[-3000:])
    assert http_origin.paths() == ["/echo/good"]


# ----------------------------------------------------------------------- reload


def test_sighup_reload_keeps_live_tunnels(tunnel_server, tunnel_agent, tunnel_certs, tmp_path,
                                          ws_origin, http_origin):
    live = tmp_path / "live"
    live.mkdir()
    for name in ("ca.crt", "server.crt", "server.key"):
        shutil.copy2(tunnel_certs.dir / name, live / name)
    srv = tunnel_server("--tls.cert=%s" % (live / "server.crt"),
                        "--tls.key=%s" % (live / "server.key"),
                        "--tls.client_ca=%s" % (live / "ca.crt"))
    agent = tunnel_agent(srv)
    new, _ = make_certs(tmp_path / "newca")
    url = "%s/echo/reload" % http_origin.url

    async def go():
        ws = await ws_through_connect(agent.port, "127.0.0.1:%d" % ws_origin.port,
                                      "ws://127.0.0.1:%d/" % ws_origin.port)
        try:
            await ws.send("before")
            assert await asyncio.wait_for(ws.recv(), 10) == "before"
            # a new CA and server certificate in place, then SIGHUP
            for name in ("ca.crt", "server.crt", "server.key"):
                tmp = live / (name + ".new")
                shutil.copy2(new.dir / name, tmp)
                os.replace(tmp, live / name)
            srv.sighup()
            loop = asyncio.get_running_loop()

            def new_ok():
                r = curl_req(*https_proxy_args(srv, new), url, timeout=20)
                return r.rc == 0 and r.code == 200

            await loop.run_in_executor(None, lambda: wait_until(new_ok, 20, 0.2,
                                                                "new CA accepted"))
            # the tunnel opened before the reload still echoes
            await ws.send("after")
            assert await asyncio.wait_for(ws.recv(), 10) == "after"
            await ws.send(b"\x00binary-after")
            assert await asyncio.wait_for(ws.recv(), 10) == b"\x00binary-after"
        finally:
            await ws.close()

    run(go())
    # old client certificate (even trusting the new server cert): refused
    r = curl_req(*https_proxy_args(srv, new, cert=tunnel_certs.agent_crt,
                                   key=tunnel_certs.agent_key), url)
    assert r.rc in TLS_REFUSED, r
    # old trust store: the new server certificate does not verify
    r = curl_req(*https_proxy_args(srv, tunnel_certs), url)
    assert r.rc != 0, r
    # new certificates: accepted, also through a new agent
    r = curl_req(*https_proxy_args(srv, new), url)
    assert r.rc == 0 and r.code == 200, r
    agent2 = tunnel_agent(srv, certs=new)
    r = curl_req("-x", agent2.proxy, url)
    assert r.rc == 0 and r.code == 200, r
    # the old agent cannot open new tunnels any more
    r = curl_req("-x", agent.proxy, url, timeout=40)
    assert r.code == 502, r


def test_sighup_reload_of_allow_cn(tunnel_server, tunnel_certs, tmp_path, http_origin):
    """allow-lists come from the config file and are reloaded on SIGHUP."""
    conf = tmp_path / "tunnel.conf"
    conf.write_text("tunnel.allow_cn = agent\n")
    srv = tunnel_server("--config=%s" % conf)
    url = "%s/echo/acl" % http_origin.url
    r = curl_req(*https_proxy_args(srv, tunnel_certs), url)
    assert r.rc == 0 and r.code == 200, r
    conf.write_text("tunnel.allow_cn = someone-else\n")
    srv.sighup()

    def refused():
        return curl_req(*https_proxy_args(srv, tunnel_certs), url).rc in TLS_REFUSED

    wait_until(refused, 20, 0.2, "agent refused after reload")


# --------------------------------------------------------------- startup errors


def startup_error(*flags, env=None):
    r = run_cli("--role=tunnel", "--addr=127.0.0.1", "--port=0", "--admin_port=0", *flags,
                env=env, timeout=20)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and len(lines) == 1, (r.returncode, r.stderr)
    return lines[0]


def test_server_without_certificate_or_client_ca_exits_2(tunnel_certs, tunnel_server):
    assert "cert" in startup_error("--tls.client_ca=%s" % tunnel_certs.ca).lower()
    startup_error("--tls.cert=%s" % tunnel_certs.server_crt,
                  "--tls.key=%s" % tunnel_certs.server_key)
    startup_error("--tls.cert=%s" % tunnel_certs.server_crt,
                  "--tls.key=%s" % tunnel_certs.server_key,
                  "--tls.client_ca=/nonexistent/ca.crt")
    # with all three it starts
    srv = tunnel_server()
    assert srv.alive()


def test_agent_without_server_ip_exits_2(tunnel_certs, tunnel_server, tunnel_agent):
    line = startup_error("--tunnel.mode=agent", "--tunnel.proxy_addr=127.0.0.1:0",
                         *tunnel_certs.agent_flags())
    assert "server_ip" in line or "server-ip" in line, line
    srv = tunnel_server()
    assert tunnel_agent(srv).alive()


def test_unknown_mode_exits_2(tunnel_certs):
    startup_error("--tunnel.mode=sideways", *tunnel_certs.server_flags())


# ------------------------------------------------------------------- seed names


def test_seed_config_file_names(tunnel_server, tunnel_certs, tmp_path, http_origin):
    from helpers import free_port
    port, admin = free_port(), free_port()
    conf = tmp_path / "fluidity.conf"
    conf.write_text("\n".join([
        "listen_addr = 127.0.0.1",
        "listen_port = %d" % port,
        "cert_file = %s" % tunnel_certs.server_crt,
        "key_file = %s" % tunnel_certs.server_key,
        "ca_cert_file = %s" % tunnel_certs.ca,
        "max_connections = 7",
        "log_level = debug",
        "admin_port = %d" % admin,
        ""]))
    srv = tunnel_server("--config=%s" % conf, "--tunnel.allow_hosts=127.0.0.1",
                        "--tunnel.connect_ports=*", defaults=False, listen=False, port=port,
                        admin_port=admin)
    _, h = srv.health()
    assert h["max_connections"] == 7, h
    r = curl_req(*https_proxy_args(srv, tunnel_certs), "%s/echo/seed" % http_origin.url)
    assert r.rc == 0 and r.code == 200, r


def test_seed_pem_environment(tunnel_server, tunnel_agent, tunnel_certs, http_origin):
    env = {"CERT_PEM": tunnel_certs.server_crt.read_text(),
           "KEY_PEM": tunnel_certs.server_key.read_text(),
           "CA_PEM": tunnel_certs.ca.read_text()}
    srv = tunnel_server("--tunnel.allow_hosts=127.0.0.1", "--tunnel.connect_ports=*",
                        defaults=False, env=env)
    r = curl_req(*https_proxy_args(srv, tunnel_certs), "%s/echo/pem" % http_origin.url)
    assert r.rc == 0 and r.code == 200, r
    # the agent with its PEMs from the environment and the seed flags
    aenv = {"CERT_PEM": tunnel_certs.agent_crt.read_text(),
            "KEY_PEM": tunnel_certs.agent_key.read_text(),
            "CA_PEM": tunnel_certs.ca.read_text()}
    agent = tunnel_agent(None, "--server-ip=127.0.0.1", "--server-port=%d" % srv.port,
                         defaults=False, env=aenv)
    r = curl_req("-x", agent.proxy, "%s/echo/pem-agent" % http_origin.url)
    assert r.rc == 0 and r.code == 200, r


def test_seed_agent_config_file(tunnel_server, tunnel_agent, tunnel_certs, tmp_path,
                                http_origin):
    from helpers import free_port
    srv = tunnel_server()
    q = free_port()
    conf = tmp_path / "agent.conf"
    conf.write_text("\n".join([
        "server_ip = 127.0.0.1",
        "server_port = %d" % srv.port,
        "local_proxy_port = %d" % q,
        "cert_file = %s" % tunnel_certs.agent_crt,
        "key_file = %s" % tunnel_certs.agent_key,
        "ca_cert_file = %s" % tunnel_certs.ca,
        ""]))
    tunnel_agent(None, "--config=%s" % conf, defaults=False, listen=False,
                         proxy_port=q)
    r = curl_req("-x", "http://127.0.0.1:%d" % q, "%s/echo/seed-agent" % http_origin.url)
    assert r.rc == 0 and r.code == 200, r


def print_config(*flags, env=None):
    r = run_cli("--role=tunnel", "--print-config", *flags, env=env)
    assert r.returncode == 0, (r.returncode, r.stderr)
    out = {}
    for line in r.stdout.splitlines():
        key, sep, rest = line.partition(" = ")
        if sep:
            value, _, source = rest.rpartition("  # ")
            out[key.strip()] = (value, source.strip())
    return out


def test_seed_flags_and_environment_in_print_config():
    c = print_config("--listen-port=9443", "--listen-addr=127.0.0.1", "--max-connections=5",
                     "--log-level=debug", "--server-ip=10.1.2.3", "--server-port=9444")
    assert c["port"] == ("9443", "flag"), c.get("port")
    assert c["addr"] == ("127.0.0.1", "flag"), c.get("addr")
    assert c["tunnel.max_connections"] == ("5", "flag")
    assert c["log.level"] == ("debug", "flag")
    assert c["tunnel.server_ip"] == ("10.1.2.3", "flag")
    assert c["tunnel.server_port"] == ("9444", "flag")
    c = print_config(env={"FLUIDITY_LOG_LEVEL": "warn", "METRICS_ENABLED": "false",
                          "METRICS_NAMESPACE": "OtherNs", "ECS_SERVICE_NAME": "svc",
                          "ECS_CLUSTER_NAME": "clu", "AWS_REGION": "eu-west-3"})
    assert c["log.level"] == ("warn", "env")
    assert c["tunnel.emf"] == ("false", "env")
    assert c["tunnel.emf_namespace"] == ("OtherNs", "env")
    assert c["tunnel.service_name"] == ("svc", "env")
    assert c["tunnel.cluster_name"] == ("clu", "env")
    assert c["tunnel.region"] == ("eu-west-3", "env")
    c = print_config(env={"METRICS_EMIT_INTERVAL": "15s"})
    assert c["tunnel.emf_interval"][1] == "env"
