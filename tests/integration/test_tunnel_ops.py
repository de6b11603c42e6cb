"""Operating the tunnel role (docs/tunnel.md, "Pipes", "Limits and
timeouts", "Observability"): flat memory on a 200 MB transfer, one slow
reader not stalling others, idle timeout, max_connections, /health,
/metrics, the tunnel_stream access log and the CloudWatch EMF line."""

import hashlib
import json
import socket
import subprocess
import threading
import time

import pytest

import helpers
from helpers import http_get
from tunnel_fixtures import (
    RSSSampler, agent_connect, assert_refused, big_sha256, client_ctx, curl_req,
    https_proxy_args, is_emf, metric, proxy_get, server_connect, tls_connect,
    wait_until,
)

MB = 1 << 20


def num(v):
    return float(v)

BIG = 200 * MB
# Streaming 200 MB must not grow a process by more than this. An ASan
# build also keeps freed blocks in its quarantine (conftest caps it at
# 32 MB): helpers.SAN_RSS_SLACK_KB is added there.
RSS_BOUND_KB = 32 * 1024 + helpers.SAN_RSS_SLACK_KB


def stream_curl(args, deadline_s=300):
    """Run curl writing the body to stdout; hash it as it arrives.
    Returns (returncode, byte count, sha256 hex, stderr)."""
    p = subprocess.Popen(["curl", "-sS", "--max-time", str(deadline_s), *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killer = threading.Timer(deadline_s + 10, p.kill)
    killer.start()
    h = hashlib.sha256()
    n = 0
    try:
        while True:
            chunk = p.stdout.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
        err = p.stderr.read().decode("utf-8", "replace")
        p.wait(30)
    finally:
        killer.cancel()
    return p.returncode, n, h.hexdigest(), err


@pytest.mark.parametrize("how", ["absolute-form", "connect-tls"])
def test_200mb_download_with_flat_memory(pair, http_origin, tls_origin, how):
    srv, agent = pair
    if how == "absolute-form":
        origin, extra = http_origin, []
    else:
        origin, extra = tls_origin, ["--cacert", str(tls_origin.cafile)]
    # warm up: contexts, buffers and the first connections exist before the baseline
    rc, n, digest, err = stream_curl(["-x", agent.proxy, *extra,
                                      "%s/big?n=%d" % (origin.url, MB)])
    assert rc == 0 and n == MB and digest == big_sha256(MB), (rc, n, err)
    expected = big_sha256(BIG)
    with RSSSampler([srv.pid, agent.pid]) as rss:
        rc, n, digest, err = stream_curl(["-x", agent.proxy, *extra,
                                          "%s/big?n=%d" % (origin.url, BIG)])
    assert rc == 0, err
    assert n == BIG
    assert digest == expected
    assert rss.samples > 3
    for pid, who in ((srv.pid, "server"), (agent.pid, "agent")):
        growth = rss.growth_kb(pid)
        assert growth < RSS_BOUND_KB, "%s RSS grew by %d kB (base %d kB, peak %d kB)" % (
            who, growth, rss.base[pid], rss.peak[pid])


def test_200mb_chunked_download_direct_https_proxy(tunnel_server, tunnel_certs, http_origin):
    srv = tunnel_server()
    args = https_proxy_args(srv, tunnel_certs)
    rc, n, digest, err = stream_curl([*args, "%s/big?n=%d&chunked=1" % (http_origin.url, MB)])
    assert rc == 0 and n == MB, err
    with RSSSampler([srv.pid]) as rss:
        rc, n, digest, err = stream_curl([*args, "%s/big?n=%d&chunked=1" % (http_origin.url,
                                                                            BIG)])
    assert rc == 0, err
    assert n == BIG and digest == big_sha256(BIG)
    assert rss.growth_kb(srv.pid) < RSS_BOUND_KB, (rss.base, rss.peak)


def test_200mb_upload_with_flat_memory(pair, http_origin, tmp_path):
    srv, agent = pair
    f = tmp_path / "up.bin"
    with open(f, "wb") as out:
        for piece in __import__("tunnel_fixtures").big_chunks(BIG):
            out.write(piece)
    with RSSSampler([srv.pid, agent.pid]) as rss:
        # no Expect: 100-continue here (test_tunnel_agent covers it)
        r = curl_req("-x", agent.proxy, "-T", str(f), "-H", "Expect:",
                     "%s/echo/upload" % http_origin.url, timeout=300)
    assert r.rc == 0 and r.code == 200, r
    echo = r.json()
    assert echo["body_len"] == BIG and echo["body_sha256"] == big_sha256(BIG)
    for pid in (srv.pid, agent.pid):
        assert rss.growth_kb(pid) < RSS_BOUND_KB, (rss.base, rss.peak)


def test_a_slow_reader_does_not_stall_other_streams(pair, http_origin, tcp_origin):
    srv, agent = pair
    fire = tcp_origin("firehose")
    # tunnel 1: a fast source nobody reads from
    resp, slow, slow_reader = agent_connect(agent.port, "127.0.0.1:%d" % fire.port)
    assert resp.status == 200, resp
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        # wait until the source is blocked (every buffer on the way is full)
        last = -1
        deadline = time.monotonic() + 30
        while fire.sent != last or fire.sent == 0:
            assert time.monotonic() < deadline, "the firehose never stopped (%d)" % fire.sent
            last = fire.sent
            time.sleep(0.5)
        stalled_at = fire.sent
        with RSSSampler([srv.pid, agent.pid]) as rss:
            # tunnel 2 on the same agent and server completes a transfer
            n = 20 * MB
            r = stream_curl(["-x", agent.proxy, "%s/big?n=%d" % (http_origin.url, n)],
                            deadline_s=120)
            rc, got, digest, err = r
            assert rc == 0 and got == n and digest == big_sha256(n), (rc, got, err)
            # and a short request too
            r = curl_req("-x", agent.proxy, "%s/echo/while-stalled" % http_origin.url)
            assert r.rc == 0 and r.code == 200, r
        # the stalled source did not get further meanwhile (nothing was buffered for it)
        assert fire.sent - stalled_at <= 4 * 65536, (stalled_at, fire.sent)
        for pid in (srv.pid, agent.pid):
            assert rss.growth_kb(pid) < RSS_BOUND_KB, (rss.base, rss.peak)
        # the slow tunnel is still alive: its data is intact when finally read
        slow.settimeout(10)
        data = bytes(slow_reader.buf)  # what came with the CONNECT answer
        while len(data) < 65536:
            chunk = slow.recv(65536)
            assert chunk, "slow tunnel closed"
            data += chunk
        from tunnel_fixtures import BLOCK
        assert data[:65536] == BLOCK
    finally:
        slow.close()


def test_idle_timeout_closes_an_idle_pipe(tunnel_server, tunnel_certs, tcp_origin):
    srv = tunnel_server("--tunnel.idle_timeout=2s")
    echo = tcp_origin("echo")
    ctx = client_ctx(tunnel_certs)
    # an active pipe outlives the idle timeout
    resp, active, reader = server_connect(srv.port, ctx, "127.0.0.1:%d" % echo.port)
    assert resp.status == 200
    try:
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < 5:
            msg = b"ping%d" % i
            active.sendall(msg)
            assert reader.read_exact(len(msg), time.monotonic() + 10) == msg
            time.sleep(0.2)
            i += 1
    finally:
        active.close()
    # an idle one is closed
    resp, idle, reader = server_connect(srv.port, ctx, "127.0.0.1:%d" % echo.port)
    assert resp.status == 200
    try:
        idle.sendall(b"x")
        assert reader.read_exact(1, time.monotonic() + 10) == b"x"
        deadline = time.monotonic() + 30
        closed = False
        while time.monotonic() < deadline:
            idle.settimeout(1)
            try:
                if not idle.recv(100):
                    closed = True
                    break
            except socket.timeout:
                continue
            except (ConnectionError, OSError):
                closed = True
                break
        assert closed, "idle pipe still open after 30 s with idle_timeout=2s"
    finally:
        idle.close()
    srv.wait_event("tunnel_stream", lambda o: o.get("result") == "idle_timeout")


def test_max_lifetime(tunnel_server, tunnel_certs, tcp_origin):
    srv = tunnel_server("--tunnel.max_lifetime=2s")
    echo = tcp_origin("echo")
    resp, s, reader = server_connect(srv.port, client_ctx(tunnel_certs),
                                     "127.0.0.1:%d" % echo.port)
    assert resp.status == 200
    try:
        deadline = time.monotonic() + 30
        closed = False
        while time.monotonic() < deadline:  # keep it busy: only the lifetime can end it
            try:
                s.sendall(b"y")
                s.settimeout(1)
                if not s.recv(100):
                    closed = True
                    break
            except socket.timeout:
                continue
            except (ConnectionError, OSError):
                closed = True
                break
            time.sleep(0.1)
        assert closed
    finally:
        s.close()
    srv.wait_event("tunnel_stream", lambda o: o.get("result") == "lifetime")


def test_close_timeout_ends_a_half_closed_pipe(tunnel_server, tunnel_agent, tcp_origin):
    """The client half-closes; the target never does: the pipe lives at most
    tunnel.close_timeout more, then the client sees the end."""
    srv = tunnel_server("--tunnel.close_timeout=1s")
    agent = tunnel_agent(srv)
    hold = tcp_origin("hold")
    resp, s, reader = agent_connect(agent.port, "127.0.0.1:%d" % hold.port)
    assert resp.status == 200, resp
    try:
        s.sendall(b"abc")
        assert reader.read_exact(3, time.monotonic() + 10) == b"abc"
        s.shutdown(socket.SHUT_WR)
        wait_until(lambda: hold.half_closed == [-1], 15, 0.05, "the FIN reached the target")
        deadline = time.monotonic() + 30
        closed = False
        while time.monotonic() < deadline:
            s.settimeout(1)
            try:
                if not s.recv(100):
                    closed = True
                    break
            except socket.timeout:
                continue
            except OSError:
                closed = True
                break
        assert closed, "half-closed pipe still open 30 s after close_timeout=1s"
    finally:
        s.close()


def test_max_streams_on_the_server(tunnel_server, tunnel_certs, tcp_origin, http_origin):
    srv = tunnel_server("--tunnel.max_streams=1")
    echo = tcp_origin("echo")
    ctx = client_ctx(tunnel_certs)
    resp, held, _ = server_connect(srv.port, ctx, "127.0.0.1:%d" % echo.port)
    assert resp.status == 200
    try:
        resp2, s2, _ = server_connect(srv.port, ctx, "127.0.0.1:%d" % echo.port)
        s2.close()
        assert_refused(resp2, 503, "connection_limit_reached")
    finally:
        held.close()

    def ok():
        r = curl_req(*https_proxy_args(srv, tunnel_certs), "%s/echo/later" % http_origin.url)
        return r.rc == 0 and r.code == 200

    wait_until(ok, 20, 0.2, "a stream accepted after the first closed")


def test_max_connections(tunnel_server, tunnel_certs, http_origin, tcp_origin):
    srv = tunnel_server("--tunnel.max_connections=1")
    echo = tcp_origin("echo")
    ctx = client_ctx(tunnel_certs)
    resp, held, _ = server_connect(srv.port, ctx, "127.0.0.1:%d" % echo.port)
    assert resp.status == 200
    try:
        _, h = srv.health()
        assert h["active_connections"] == 1 and h["max_connections"] == 1, h
        # the handshake completes and 503 is answered
        resp2, s2, _ = server_connect(srv.port, ctx, "127.0.0.1:%d" % echo.port)
        s2.close()
        assert_refused(resp2, 503, "connection_limit_reached")
        r = curl_req(*https_proxy_args(srv, tunnel_certs), "%s/echo/over" % http_origin.url)
        assert r.code == 503, r
        assert "error=connection_limit_reached" in (r.header("Proxy-Status") or "").replace(
            " ", "")
    finally:
        held.close()
    # once the first one is gone, a new connection gets through
    def ok():
        r = curl_req(*https_proxy_args(srv, tunnel_certs), "%s/echo/later" % http_origin.url)
        return r.rc == 0 and r.code == 200

    wait_until(ok, 20, 0.2, "a connection accepted after the first closed")


def test_max_streams_through_the_agent(tunnel_server, tunnel_agent, tcp_origin, http_origin):
    srv = tunnel_server()
    agent = tunnel_agent(srv, "--tunnel.max_streams=1")
    echo = tcp_origin("echo")
    resp, held, _ = agent_connect(agent.port, "127.0.0.1:%d" % echo.port)
    assert resp.status == 200
    try:
        resp2, s2, _ = agent_connect(agent.port, "127.0.0.1:%d" % echo.port)
        s2.close()
        assert_refused(resp2, 503, "connection_limit_reached")
    finally:
        held.close()

    def ok():
        r = curl_req("-x", agent.proxy, "%s/echo/later" % http_origin.url)
        return r.rc == 0 and r.code == 200

    wait_until(ok, 20, 0.2, "a stream accepted after the first closed")


def test_server_health_fields(tunnel_server, tunnel_certs, tcp_origin):
    srv = tunnel_server("--tunnel.max_connections=42")
    r, h = srv.health()
    assert r.status == 200
    assert h["status"] == "ok" and h["role"] == "tunnel", h
    assert h["mode"] == "server", h
    assert h["active_connections"] == 0 and h["max_connections"] == 42, h
    assert "streams" in h, h
    echo = tcp_origin("echo")
    resp, s, _ = server_connect(srv.port, client_ctx(tunnel_certs), "127.0.0.1:%d" % echo.port)
    try:
        assert resp.status == 200
        _, h = srv.health()
        assert h["active_connections"] == 1, h
        assert h["streams"] == 1, h
    finally:
        s.close()
    wait_until(lambda: srv.health()[1]["active_connections"] == 0, 10, 0.1,
               "active_connections back to 0")
    assert http_get(srv.admin_port, "/ready").status == 200
    assert http_get(srv.admin_port, "/healthz").status == 200


def test_metrics_move(pair, tunnel_certs, http_origin, tcp_origin):
    srv, agent = pair
    _, before = srv.metrics()
    r = curl_req("-x", agent.proxy, "%s/echo/metrics" % http_origin.url)
    assert r.rc == 0 and r.code == 200
    echo = tcp_origin("echo")
    resp, s, reader = agent_connect(agent.port, "127.0.0.1:%d" % echo.port)
    assert resp.status == 200
    s.sendall(b"z" * 1000)
    assert reader.read_exact(1000, time.monotonic() + 10) == b"z" * 1000
    text, during = srv.metrics()
    assert metric(during, "p2pmesh_tunnel_streams_open") >= 1, text
    assert metric(during, "p2pmesh_tunnel_connections_open") >= 1, text
    s.close()
    # a refusal
    resp, s2, _ = agent_connect(agent.port, "169.254.169.254:80")
    s2.close()
    assert resp.status == 403
    text, after = srv.metrics()
    for name, labels in (("p2pmesh_tunnel_streams_total", {"kind": "connect"}),
                         ("p2pmesh_tunnel_streams_total", {"kind": "http"}),
                         ("p2pmesh_tunnel_handshakes_total", {"result": "ok"})):
        assert metric(after, name, **labels) > metric(before, name, **labels), (name, labels,
                                                                                text)
    up_b = metric(before, "p2pmesh_tunnel_bytes_total", direction="up")
    down_b = metric(before, "p2pmesh_tunnel_bytes_total", direction="down")
    assert metric(after, "p2pmesh_tunnel_bytes_total", direction="up") >= up_b + 1000, text
    assert metric(after, "p2pmesh_tunnel_bytes_total", direction="down") >= down_b + 1000, text
    refused = [v for n, l, v in after if n == "p2pmesh_tunnel_refused_total"]
    assert sum(refused) >= 1, text
    assert "p2pmesh_tunnel_handshakes_resumed_total" in text
    assert "p2pmesh_tunnel_last_activity_seconds" in text


def test_agent_sessions_are_resumed(pair, http_origin):
    srv, agent = pair
    for i in range(4):
        r = curl_req("-x", agent.proxy, "%s/echo/r%d" % (http_origin.url, i))
        assert r.rc == 0 and r.code == 200, r
    text, samples = srv.metrics()
    assert metric(samples, "p2pmesh_tunnel_handshakes_resumed_total") >= 1, text


def test_access_log_line(tunnel_server, tunnel_certs, tcp_origin, http_origin):
    srv = tunnel_server()
    echo = tcp_origin("echo")
    ctx = client_ctx(tunnel_certs)
    resp, s, reader = server_connect(srv.port, ctx, "127.0.0.1:%d" % echo.port)
    assert resp.status == 200
    s.sendall(b"a" * 1234)
    assert reader.read_exact(1234, time.monotonic() + 10) == b"a" * 1234
    s.close()
    target = "127.0.0.1:%d" % echo.port
    line = srv.wait_event("tunnel_stream", lambda o: o.get("target") == target)
    assert line["client"] == "agent", line
    assert line["method"] == "CONNECT", line
    assert line["result"] == "ok", line
    # numbers may be written as JSON numbers or numeric strings (the contract
    # does not say which)
    assert num(line["status"]) == 200, line
    assert num(line["bytes_up"]) == 1234 and num(line["bytes_down"]) == 1234, line
    assert line["ip"] == "127.0.0.1", line
    assert num(line["ms"]) >= 0, line
    # an absolute-form request and a refusal
    s = tls_connect(srv.port, ctx)
    r, _ = proxy_get(s, "%s/echo/logged" % http_origin.url, method="POST", body=b"12345")
    s.close()
    assert r.status == 200
    line = srv.wait_event("tunnel_stream", lambda o: o.get("method") == "POST")
    assert num(line["status"]) == 200 and line["result"] == "ok", line
    assert line["client"] == "agent", line
    assert "/echo/logged" in line["target"] or str(http_origin.port) in line["target"], line
    assert num(line["bytes_up"]) >= 5 and num(line["bytes_down"]) > 0, line
    resp, s, _ = server_connect(srv.port, ctx, "169.254.169.254:80")
    s.close()
    line = srv.wait_event("tunnel_stream", lambda o: o.get("target") == "169.254.169.254:80")
    assert num(line["status"]) == 403, line
    assert line["result"] == "destination_ip_prohibited", line


def test_emf_line(tunnel_server, tunnel_certs, tcp_origin):
    srv = tunnel_server("--tunnel.emf_interval=1s",
                        env={"ECS_SERVICE_NAME": "svc-test", "ECS_CLUSTER_NAME": "cluster-test"})
    started = time.time()

    def emf_lines():
        out = []
        for line in srv.stdout_text().split("\n")[:-1]:
            try:
                o = json.loads(line)
            except ValueError:
                continue
            if is_emf(o):
                out.append(o)
        return out

    first = wait_until(emf_lines, 15, 0.1, "an EMF line")[0]
    meta = first["_aws"]
    assert isinstance(meta.get("Timestamp"), int), meta
    cw = meta["CloudWatchMetrics"]
    assert isinstance(cw, list) and cw, meta
    d = cw[0]
    assert d["Namespace"] == "Fluidity", d
    names = {m["Name"] for m in d["Metrics"]}
    assert {"ActiveConnections", "LastActivityEpochSeconds"} <= names, d
    dims = [set(x) for x in d["Dimensions"]]
    assert {"ServiceName", "ClusterName"} in dims, d
    assert first["ServiceName"] == "svc-test" and first["ClusterName"] == "cluster-test", first
    assert first["ActiveConnections"] == 0, first
    # before any traffic: the start time
    assert abs(first["LastActivityEpochSeconds"] - started) < 60, first
    # with an open tunnel moving bytes, a later line counts it
    echo = tcp_origin("echo")
    resp, s, reader = server_connect(srv.port, client_ctx(tunnel_certs),
                                     "127.0.0.1:%d" % echo.port)
    try:
        assert resp.status == 200
        time.sleep(1.1)
        moved = time.time()
        s.sendall(b"ping")
        assert reader.read_exact(4, time.monotonic() + 10) == b"ping"
        later = wait_until(lambda: [o for o in emf_lines()
                                    if o.get("ActiveConnections", 0) >= 1
                                    and o["LastActivityEpochSeconds"] >= int(moved) - 1],
                           20, 0.1, "an EMF line with the open tunnel")[0]
        assert later["ActiveConnections"] == 1, later
    finally:
        s.close()


def test_emf_off_with_metrics_enabled_false(tunnel_server):
    srv = tunnel_server("--tunnel.emf_interval=1s", env={"METRICS_ENABLED": "false"})
    on = tunnel_server("--tunnel.emf_interval=1s")
    wait_until(lambda: any(is_emf(o) for o in on.logs()) or
               any('"_aws"' in l for l in on.stdout_text().splitlines()), 15, 0.1,
               "EMF on the default server")
    assert not any('"_aws"' in l for l in srv.stdout_text().splitlines())


def test_sigterm_drains(pair, tcp_origin, http_origin):
    """SIGTERM: /health turns 503 and new requests get 503
    connection_limit_reached (draining) while open tunnels finish."""
    srv, agent = pair
    echo = tcp_origin("echo")
    resp, s, reader = agent_connect(agent.port, "127.0.0.1:%d" % echo.port)
    assert resp.status == 200
    try:
        import signal
        srv.proc.send_signal(signal.SIGTERM)
        def draining():
            assert srv.alive(), "exited at once with a tunnel open (shutdown.grace is 3 s)"
            try:
                return http_get(srv.admin_port, "/health").status == 503
            except OSError:
                return False

        wait_until(draining, 10, 0.05, "health 503 while draining")
        # new requests are refused while draining: 503 connection_limit_reached if the
        # server still takes the connection, else the agent's 502 (the contract does
        # not say whether the listener stays open)
        r = curl_req("-x", agent.proxy, "%s/echo/draining" % http_origin.url)
        assert r.code in (502, 503), r
        assert http_origin.paths() == []
        time.sleep(0.5)  # the open tunnel is still served within shutdown.grace (3 s)
        assert srv.alive(), "exited with a tunnel open, before shutdown.grace"
        s.sendall(b"still-here")
        assert reader.read_exact(10, time.monotonic() + 10) == b"still-here"
    finally:
        s.close()
    assert srv.proc.wait(20) == 0
