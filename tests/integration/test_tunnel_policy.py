"""The tunnel server's egress policy and its answers (docs/tunnel.md,
"Egress policy" and "Answers"). Each refusal is paired with the same
request succeeding once the condition is lifted, so that a server that
refused everything (or nothing) would fail."""

import socket

import pytest

from tunnel_fixtures import (
    assert_refused, client_ctx, curl_req, proxy_get, server_connect, tls_connect,
)


@pytest.fixture
def mtls(tunnel_certs):
    return client_ctx(tunnel_certs)


def connect(srv, ctx, target, timeout=20.0):
    resp, s, _ = server_connect(srv.port, ctx, target, timeout=timeout)
    s.close()
    return resp


def absolute(srv, ctx, url, timeout=20.0, headers=None):
    s = tls_connect(srv.port, ctx, timeout=timeout)
    try:
        r, _ = proxy_get(s, url, timeout=timeout, headers=headers)
        return r
    finally:
        s.close()


def bare_server(tunnel_server, tunnel_certs, *flags):
    """A server with no allow_hosts (unless flags set one), CONNECT to any port."""
    return tunnel_server(*tunnel_certs.server_flags(), "--tunnel.connect_ports=*", *flags,
                         defaults=False)


def test_loopback_denied_by_default(tunnel_server, tunnel_certs, mtls, http_origin):
    target = "127.0.0.1:%d" % http_origin.port
    url = "%s/echo/lo" % http_origin.url
    for flags in ((), ("--tunnel.allow_hosts=*",), ("--tunnel.allow_hosts=.example.com",)):
        srv = bare_server(tunnel_server, tunnel_certs, *flags)
        assert_refused(connect(srv, mtls, target), 403, "destination_ip_prohibited")
        assert_refused(absolute(srv, mtls, url), 403, "destination_ip_prohibited")
        # IPv4-mapped IPv6 and other spellings of loopback are loopback too
        assert_refused(connect(srv, mtls, "[::ffff:127.0.0.1]:%d" % http_origin.port), 403,
                       "destination_ip_prohibited")
        assert_refused(connect(srv, mtls, "0x7f000001:%d" % http_origin.port), 403,
                       "destination_ip_prohibited")
        assert_refused(connect(srv, mtls, "[::1]:%d" % http_origin.port), 403,
                       "destination_ip_prohibited")
        srv.stop()
    assert http_origin.paths() == [] and http_origin.connections == 0
    # lifted by an entry naming the address, or a CIDR containing it
    for allow in ("127.0.0.1", "127.0.0.0/8", "*,127.0.0.1"):
        srv = bare_server(tunnel_server, tunnel_certs, "--tunnel.allow_hosts=%s" % allow)
        assert connect(srv, mtls, target).status == 200, allow
        r = absolute(srv, mtls, url)
        assert r.status == 200, (allow, r)
        srv.stop()
    assert http_origin.paths() == ["/echo/lo"] * 3


def test_allow_hosts_limits_destinations(tunnel_server, tunnel_certs, mtls, http_origin):
    srv = bare_server(tunnel_server, tunnel_certs, "--tunnel.allow_hosts=127.0.0.2")
    assert_refused(connect(srv, mtls, "127.0.0.1:%d" % http_origin.port), 403,
                   "destination_ip_prohibited")
    assert http_origin.connections == 0
    srv2 = bare_server(tunnel_server, tunnel_certs, "--tunnel.allow_hosts=127.0.0.2,127.0.0.1")
    assert connect(srv2, mtls, "127.0.0.1:%d" % http_origin.port).status == 200


def test_name_resolving_to_a_denied_address(tunnel_server, tunnel_certs, mtls, http_origin):
    target = "localhost:%d" % http_origin.port
    url = "http://localhost:%d/echo/name" % http_origin.port
    for flags in ((), ("--tunnel.allow_hosts=*",), ("--tunnel.allow_hosts=*.localhost.test",)):
        srv = bare_server(tunnel_server, tunnel_certs, *flags)
        assert_refused(connect(srv, mtls, target), 403, "destination_ip_prohibited")
        assert_refused(absolute(srv, mtls, url), 403, "destination_ip_prohibited")
        srv.stop()
    assert http_origin.connections == 0
    # the exact host name requested lifts the default for it
    srv = bare_server(tunnel_server, tunnel_certs, "--tunnel.allow_hosts=localhost")
    assert connect(srv, mtls, target).status == 200
    r = absolute(srv, mtls, url)
    assert r.status == 200, r
    assert http_origin.paths() == ["/echo/name"]


def test_decimal_spelling_of_the_metadata_address_is_refused(tunnel_server, tunnel_certs, mtls):
    srv = bare_server(tunnel_server, tunnel_certs, "--tunnel.allow_hosts=*",
                      "--tunnel.connect_timeout=2s")
    assert_refused(connect(srv, mtls, "2852039166:80"), 403, "destination_ip_prohibited")
    assert_refused(absolute(srv, mtls, "http://2852039166/latest/meta-data/"), 403,
                   "destination_ip_prohibited")


def test_metadata_endpoints_refused_even_with_allow_all(tunnel_server, tunnel_certs, mtls,
                                                        http_origin):
    """169.254.169.254 and friends: 403 even with allow_hosts=*, answered by
    the policy (a dial would end in 200, 502 or a 504 after the 2 s connect
    timeout, never a 403 destination_ip_prohibited)."""
    srv = bare_server(tunnel_server, tunnel_certs, "--tunnel.allow_hosts=*,127.0.0.1",
                      "--tunnel.connect_timeout=2s")
    for target in ("169.254.169.254:80", "169.254.169.254:443", "169.254.170.2:80",
                   "[fd00:ec2::254]:80", "[::ffff:169.254.169.254]:80", "[fe80::1]:80",
                   "0.0.0.0:%d" % http_origin.port, "224.0.0.1:80"):
        assert_refused(connect(srv, mtls, target), 403, "destination_ip_prohibited")
    for url in ("http://169.254.169.254/latest/meta-data/iam/security-credentials/",
                "http://169.254.170.2/v2/credentials/x"):
        assert_refused(absolute(srv, mtls, url), 403, "destination_ip_prohibited")
    refused = [o for o in srv.events("tunnel_stream")
               if o.get("result") == "destination_ip_prohibited"]
    assert refused, srv.stdout_text()[-2000:]
    # the same server, same request shapes, to an allowed destination
    assert connect(srv, mtls, "127.0.0.1:%d" % http_origin.port).status == 200
    assert absolute(srv, mtls, "%s/echo/ok" % http_origin.url).status == 200


def test_link_local_is_not_lifted_by_a_name_or_wildcard(tunnel_server, tunnel_certs, mtls):
    srv = bare_server(tunnel_server, tunnel_certs,
                      "--tunnel.allow_hosts=*,169.254.169.254.nip.invalid,.invalid",
                      "--tunnel.connect_timeout=2s")
    assert_refused(connect(srv, mtls, "169.254.169.254:80"), 403, "destination_ip_prohibited")


def test_deny_hosts(tunnel_server, tunnel_certs, mtls, http_origin):
    port = http_origin.port
    # deny by name: the denied name is refused, the address itself still works
    srv = tunnel_server("--tunnel.allow_hosts=127.0.0.1,localhost",
                        "--tunnel.deny_hosts=localhost")
    assert_refused(connect(srv, mtls, "localhost:%d" % port), 403, "destination_ip_prohibited")
    assert_refused(absolute(srv, mtls, "http://localhost:%d/echo/d" % port), 403,
                   "destination_ip_prohibited")
    assert connect(srv, mtls, "127.0.0.1:%d" % port).status == 200
    srv.stop()
    # a domain pattern covers the domain itself
    srv = tunnel_server("--tunnel.allow_hosts=127.0.0.1,localhost",
                        "--tunnel.deny_hosts=*.localhost")
    assert_refused(connect(srv, mtls, "localhost:%d" % port), 403, "destination_ip_prohibited")
    srv.stop()
    # deny by CIDR: refuses the address and names resolving into it
    srv = tunnel_server("--tunnel.allow_hosts=127.0.0.1,localhost",
                        "--tunnel.deny_hosts=127.0.0.0/8")
    assert_refused(connect(srv, mtls, "127.0.0.1:%d" % port), 403, "destination_ip_prohibited")
    assert_refused(connect(srv, mtls, "localhost:%d" % port), 403, "destination_ip_prohibited")
    assert_refused(absolute(srv, mtls, "%s/echo/d" % http_origin.url), 403,
                   "destination_ip_prohibited")
    srv.stop()
    assert http_origin.paths() == []
    # without deny_hosts the very same requests pass
    srv = tunnel_server("--tunnel.allow_hosts=127.0.0.1,localhost")
    assert connect(srv, mtls, "localhost:%d" % port).status == 200
    assert connect(srv, mtls, "127.0.0.1:%d" % port).status == 200
    assert absolute(srv, mtls, "http://localhost:%d/echo/d" % port).status == 200
    assert absolute(srv, mtls, "%s/echo/d" % http_origin.url).status == 200


def test_deny_hosts_through_the_agent_with_curl(tunnel_server, tunnel_agent, http_origin,
                                                tls_origin):
    srv = tunnel_server("--tunnel.deny_hosts=127.0.0.1")
    agent = tunnel_agent(srv)
    r = curl_req("-x", agent.proxy, "%s/echo/x" % http_origin.url)
    assert r.code == 403, r
    assert "error=destination_ip_prohibited" in (r.header("Proxy-Status") or "").replace(" ", "")
    r = curl_req("-x", agent.proxy, "--cacert", str(tls_origin.cafile), tls_origin.url + "/")
    assert r.rc != 0 and r.connect_code == 403, r
    srv2 = tunnel_server()
    agent2 = tunnel_agent(srv2)
    r = curl_req("-x", agent2.proxy, "%s/echo/x" % http_origin.url)
    assert r.rc == 0 and r.code == 200, r
    r = curl_req("-x", agent2.proxy, "--cacert", str(tls_origin.cafile), tls_origin.url + "/")
    assert r.rc == 0 and r.code == 200, r


def test_connect_ports(tunnel_server, mtls, http_origin, tls_origin):
    target = "127.0.0.1:%d" % http_origin.port
    other = http_origin.port + 1 if http_origin.port < 65535 else http_origin.port - 1
    for ports in ("443", "%d" % other, "1-2,%d-%d" % (other, other)):
        srv = tunnel_server("--tunnel.connect_ports=%s" % ports)
        assert_refused(connect(srv, mtls, target), 403, "http_request_denied")
        srv.stop()
    assert http_origin.connections == 0
    for ports in ("%d" % http_origin.port, "443,%d" % http_origin.port,
                  "%d-%d" % (http_origin.port - 1, http_origin.port + 1), "*"):
        srv = tunnel_server("--tunnel.connect_ports=%s" % ports)
        assert connect(srv, mtls, target).status == 200, ports
        srv.stop()


def test_connect_ports_default_is_443(tunnel_server, tunnel_certs, mtls, http_origin):
    srv = tunnel_server(*tunnel_certs.server_flags(), "--tunnel.allow_hosts=127.0.0.1",
                        defaults=False)
    assert_refused(connect(srv, mtls, "127.0.0.1:%d" % http_origin.port), 403,
                   "http_request_denied")
    # absolute-form uses http_ports (default 80,443,1025-65535): allowed
    assert absolute(srv, mtls, "%s/echo/p" % http_origin.url).status == 200


def test_http_ports(tunnel_server, mtls, http_origin):
    url = "%s/echo/hp" % http_origin.url
    srv = tunnel_server("--tunnel.http_ports=80,443")
    assert_refused(absolute(srv, mtls, url), 403, "http_request_denied")
    srv.stop()
    assert http_origin.paths() == []
    srv = tunnel_server("--tunnel.http_ports=80,443,%d" % http_origin.port)
    assert absolute(srv, mtls, url).status == 200
    assert http_origin.paths() == ["/echo/hp"]


def test_dns_error(tunnel_server, tunnel_certs, mtls, http_origin):
    srv = bare_server(tunnel_server, tunnel_certs, "--tunnel.allow_hosts=*,127.0.0.1")
    assert_refused(connect(srv, mtls, "no-such-host.invalid:443"), 502, "dns_error")
    assert_refused(absolute(srv, mtls, "http://no-such-host.invalid/x"), 502, "dns_error")
    assert connect(srv, mtls, "127.0.0.1:%d" % http_origin.port).status == 200


def test_connection_refused(tunnel_server, mtls, http_origin):
    srv = tunnel_server()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed = s.getsockname()[1]
    s.close()  # nothing listens there now
    assert_refused(connect(srv, mtls, "127.0.0.1:%d" % closed), 502, "connection_refused")
    assert_refused(absolute(srv, mtls, "http://127.0.0.1:%d/x" % closed), 502,
                   "connection_refused")
    assert connect(srv, mtls, "127.0.0.1:%d" % http_origin.port).status == 200


def test_connection_timeout(tunnel_server, mtls, http_origin):
    """A listener whose backlog is full drops SYNs: the dial times out (504)."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    port = lst.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
            fillers.append(c)
        probe = socket.socket()
        probe.settimeout(1.5)
        try:
            probe.connect(("127.0.0.1", port))
            pytest.skip("this kernel completes connects to a full backlog: no way to make a "
                        "dial hang on 127.0.0.1")
        except socket.timeout:
            pass
        finally:
            probe.close()
        srv = tunnel_server("--tunnel.connect_timeout=1s")
        assert_refused(connect(srv, mtls, "127.0.0.1:%d" % port), 504, "connection_timeout")
        assert connect(srv, mtls, "127.0.0.1:%d" % http_origin.port).status == 200
    finally:
        for c in fillers:
            c.close()
        lst.close()


def test_bad_connect_targets_are_400(tunnel_server, mtls, http_origin):
    srv = tunnel_server()
    for target in ("nonsense", "127.0.0.1:", "127.0.0.1:99999", ":443", "127.0.0.1:http"):
        assert_refused(connect(srv, mtls, target), 400, "http_request_error")
    assert connect(srv, mtls, "127.0.0.1:%d" % http_origin.port).status == 200


def test_malformed_response_head_is_502(tunnel_server, mtls, tcp_origin, http_origin):
    bad = tcp_origin("badhead")
    srv = tunnel_server()
    assert_refused(absolute(srv, mtls, "http://127.0.0.1:%d/x" % bad.port), 502,
                   "http_response_incomplete")
    assert absolute(srv, mtls, "%s/echo/good" % http_origin.url).status == 200


def test_oversized_request_head(tunnel_server, mtls, http_origin):
    srv = tunnel_server()
    url = "%s/echo/big-head" % http_origin.url
    r = absolute(srv, mtls, url, headers={"X-Big": "a" * 20000})
    assert r.status == 431, r
    r = absolute(srv, mtls, url, headers={"X-Big": "a" * 8000})
    assert r.status == 200, r
    assert http_origin.paths() == ["/echo/big-head"]
