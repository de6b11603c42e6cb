"""Shared fixtures for the tunnel role's integration tests (test_tunnel_*.py).

Written against docs/tunnel.md, with clients nobody here wrote (curl,
stunnel4, openssl, python3-websockets, Python's ssl/http.server/socket).
conftest.py loads this module as a pytest plugin, so its asserts are
rewritten and its fixtures exist for every test file.

- ``tunnel_certs`` / ``foreign_certs``: two independent sets of files made by
  ``p2pmesh --role=tunnel --tunnel.gen_certs=DIR`` (CA, server, client
  "agent"); the second one is "another CA". ``make_certs(dir, *flags)``
  makes more (e.g. a new CA for a reload).
- ``tunnel_server``: factory of server-mode processes (mTLS proxy on a free
  port, plain-HTTP admin port, loopback allowed with
  ``--tunnel.allow_hosts=127.0.0.1`` and ``--tunnel.connect_ports=*``
  unless the test passes its own value for those keys).
- ``tunnel_agent``: factory of agent-mode processes pointed at a server.
- ``http_origin``: a ThreadingHTTPServer on 127.0.0.1 (echo of method, path,
  headers and body; large download generated on the fly; redirect; chunked
  and slow responses; a gate that holds a response until the test says so;
  hop-by-hop response headers). ``tls_origin``: the same behind ssl with its
  own self-signed certificate (``tls_origin.cafile``).
- ``ws_origin``: python3-websockets echo servers (ws:// and wss://) in an
  asyncio loop in a thread.
- ``tcp_origin``: raw TCP services: ``half`` (reads to EOF, then answers the
  byte count and sha256), ``echo``, ``firehose`` (sends until the peer stops
  reading or goes away).
- ``recorder``: an HTTP server that records every request (wake/kill).
- helpers to talk to the agent (plain HTTP proxy) and to the server (mTLS)
  with sockets, curl and openssl, and to read RSS, /health, /metrics and
  the access log.

Every wait is bounded. All traffic stays on 127.0.0.1.
"""

import asyncio
import hashlib
import json
import os
import shutil
import signal
import socket
import socketserver
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import websockets

import helpers
from helpers import _Reader, clean_env, free_port, http_get, parse_response_head, HTTPResult

SERVER_NAME = "p2pmesh-tunnel"


def run(coro, timeout=60):
    """Run one coroutine with an overall bound."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


# ------------------------------------------------------------ certificates


class Certs:
    """Files written by --tunnel.gen_certs=DIR."""

    def __init__(self, d):
        self.dir = Path(d)
        self.ca = self.dir / "ca.crt"
        self.ca_key = self.dir / "ca.key"
        self.server_crt = self.dir / "server.crt"
        self.server_key = self.dir / "server.key"
        self.agent_crt = self.dir / "agent.crt"
        self.agent_key = self.dir / "agent.key"

    def client(self, name):
        return self.dir / ("%s.crt" % name), self.dir / ("%s.key" % name)

    def server_flags(self):
        return ["--tls.cert=%s" % self.server_crt, "--tls.key=%s" % self.server_key,
                "--tls.client_ca=%s" % self.ca]

    def agent_flags(self):
        return ["--tls.cert=%s" % self.agent_crt, "--tls.key=%s" % self.agent_key,
                "--tls.client_ca=%s" % self.ca]

    def __repr__(self):
        return "Certs(%s)" % self.dir


def make_certs(d, *flags):
    """Run gen_certs into d (created); returns (Certs, CompletedProcess)."""
    d = Path(d)
    d.parent.mkdir(parents=True, exist_ok=True)
    r = helpers.run_cli("--role=tunnel", "--tunnel.gen_certs=%s" % d, *flags, timeout=60)
    assert r.returncode == 0, ("gen_certs failed", r.returncode, r.stdout, r.stderr)
    return Certs(d), r


@pytest.fixture(scope="session")
def tunnel_certs(tmp_path_factory):
    """CA, server and client 'agent' made by the binary itself."""
    c, _ = make_certs(tmp_path_factory.mktemp("tunnel-certs") / "main")
    return c


@pytest.fixture(scope="session")
def foreign_certs(tmp_path_factory):
    """A second, unrelated CA (and its server/agent) made the same way."""
    c, _ = make_certs(tmp_path_factory.mktemp("tunnel-certs-foreign") / "other")
    return c


def self_signed(d, cn="origin.test"):
    """(cert, key) of a self-signed RSA certificate for 127.0.0.1/localhost."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    cert, key = d / "origin.crt", d / "origin.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=%s" % cn,
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture(scope="session")
def origin_cert(tmp_path_factory):
    return self_signed(tmp_path_factory.mktemp("origin-cert"))


# ---------------------------------------------------------------- processes


def _flag_key(flag):
    return flag.split("=", 1)[0]


def merge_flags(defaults, flags):
    """defaults minus the keys flags sets, then flags (no duplicate keys)."""
    keys = {_flag_key(f) for f in flags}
    return [f for f in defaults if _flag_key(f) not in keys] + list(flags)


def is_emf(obj):
    return isinstance(obj, dict) and "_aws" in obj


class Tunnel(helpers.Process):
    """One p2pmesh --role=tunnel process (server or agent)."""

    def __init__(self, workdir, argv, env=None, health_port=None, name="tunnel",
                 start_timeout=15.0, wait=True):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.argv = [helpers.BIN] + list(argv)
        self.flags = list(argv)
        self.health_port = health_port
        self.name = name
        self.env = env
        self.stdout_path = self.workdir / "stdout.log"
        self.stderr_path = self.workdir / "stderr.log"
        self._out = open(self.stdout_path, "ab")
        self._err = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._err, env=clean_env(env))
        if wait:
            try:
                self.wait_ready(start_timeout)
            except BaseException:
                self.stop()
                raise

    @property
    def pid(self):
        return self.proc.pid

    def wait_ready(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    "p2pmesh exited with %s during startup\nargv: %s\nstderr: %s\nstdout: %s"
                    % (self.proc.returncode, self.argv, self.stderr_text(),
                       self.stdout_text()[-2000:]))
            try:
                r = http_get(self.health_port, "/health", timeout=2)
                last = r
                if r.status == 200:
                    return r
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise RuntimeError("%s not ready within %.0fs (last: %r)\nargv: %s\nstderr: %s"
                           % (self.name, timeout, last, self.argv, self.stderr_text()))

    def health(self, timeout=3.0):
        r = http_get(self.health_port, "/health", timeout=timeout)
        return r, r.json()

    def metrics(self):
        return helpers.get_metrics(self.health_port)

    def rss_kb(self):
        return rss_kb(self.proc.pid)

    def sighup(self):
        self.proc.send_signal(signal.SIGHUP)

    def events(self, name):
        return [o for o in self.logs() if o.get("event") == name]

    def wait_event(self, name, pred=lambda o: True, timeout=10.0):
        """The first log object with event name matching pred (bounded wait)."""
        deadline = time.monotonic() + timeout
        while True:
            for o in self.events(name):
                if pred(o):
                    return o
            if time.monotonic() > deadline:
                raise AssertionError("no %r log line matching within %.0fs; got %r\nstdout tail: %s"
                                     % (name, timeout, self.events(name)[-5:],
                                        self.stdout_text()[-3000:]))
            time.sleep(0.05)

    def check_log_format(self):
        """Every stdout line is a JSON object with ts/level/role/event/msg
        (CloudWatch EMF lines too: README, "Health, readiness, metrics")."""
        bad = []
        for i, line in enumerate(self.stdout_text().splitlines()):
            try:
                obj = json.loads(line)
            except ValueError:
                bad.append((i, line, "not JSON"))
                continue
            if not isinstance(obj, dict):
                bad.append((i, line, "not an object"))
                continue
            missing = [k for k in helpers.LOG_KEYS if k not in obj]
            if missing:
                bad.append((i, line, "missing %s" % missing))
        assert not bad, "%s: malformed stdout log lines: %r" % (self.name, bad[:5])


class TunnelServer(Tunnel):
    def __init__(self, workdir, flags=(), certs=None, env=None, port=None, admin_port=None,
                 defaults=True, wait=True, listen=True):
        self.port = port or free_port()
        self.admin_port = admin_port or free_port()
        self.certs = certs
        base = ["--role=tunnel"]
        if listen:  # else the test's flags/config/env set the listener
            base += ["--addr=127.0.0.1", "--port=%d" % self.port,
                     "--admin_port=%d" % self.admin_port]
        dflt = ["--shutdown.grace=3s"]
        if defaults:
            dflt += ["--tunnel.allow_hosts=127.0.0.1", "--tunnel.connect_ports=*"]
            if certs is not None:
                dflt += certs.server_flags()
        argv = base + merge_flags(dflt, flags)
        super().__init__(workdir, argv, env=env, health_port=self.admin_port,
                         name="tunnel server :%d" % self.port, wait=wait)

    def restart(self, wait=True):
        """Start the same command again (same ports), after stop()."""
        assert not self.alive()
        self._out = open(self.stdout_path, "ab")
        self._err = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._err, env=clean_env(self.env))
        if wait:
            self.wait_ready()


class TunnelAgent(Tunnel):
    def __init__(self, workdir, server=None, flags=(), certs=None, env=None, proxy_port=None,
                 defaults=True, wait=True, wait_connected=True, listen=True):
        self.port = proxy_port or free_port()
        self.server = server
        self.certs = certs
        base = ["--role=tunnel", "--tunnel.mode=agent"]
        dflt = ["--shutdown.grace=3s"]
        if listen:  # else the test's flags/config set the proxy address
            dflt.append("--tunnel.proxy_addr=127.0.0.1:%d" % self.port)
        if defaults:
            if server is not None:
                dflt += ["--tunnel.server_ip=127.0.0.1", "--tunnel.server_port=%d" % server.port]
            if certs is not None:
                dflt += certs.agent_flags()
        argv = base + merge_flags(dflt, flags)
        super().__init__(workdir, argv, env=env, health_port=self.port,
                         name="tunnel agent :%d" % self.port, wait=wait)
        if wait and wait_connected:
            self.wait_connected(True)

    @property
    def proxy(self):
        return "http://127.0.0.1:%d" % self.port

    def wait_connected(self, want=True, timeout=20.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                _, h = self.health()
                last = h
                if h.get("connected") is want:
                    return h
            except (OSError, ValueError) as e:
                last = e
            time.sleep(0.1)
        raise AssertionError("agent connected != %r within %.0fs (last /health: %r)\nstdout: %s"
                             % (want, timeout, last, self.stdout_text()[-2000:]))


def _stop_all(procs):
    errors = []
    for p in procs:
        p.stop()
    for p in procs:
        try:
            p.check_log_format()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, "\n".join(errors)


@pytest.fixture
def tunnel_server(tmp_path, tunnel_certs):
    """start(*flags, certs=tunnel_certs, env=None, port=None, admin_port=None,
    defaults=True) -> TunnelServer; stopped and log-checked at teardown."""
    procs = []

    def start(*flags, certs=tunnel_certs, env=None, port=None, admin_port=None,
              defaults=True, wait=True, listen=True):
        p = TunnelServer(tmp_path / ("server%d" % len(procs)), flags, certs=certs, env=env,
                         port=port, admin_port=admin_port, defaults=defaults, wait=wait,
                         listen=listen)
        procs.append(p)
        return p

    start.procs = procs
    yield start
    _stop_all(procs)


@pytest.fixture
def tunnel_agent(tmp_path, tunnel_certs):
    """start(server, *flags, certs=tunnel_certs, env=None, proxy_port=None,
    wait_connected=True) -> TunnelAgent; stopped and log-checked at teardown."""
    procs = []

    def start(server=None, *flags, certs=tunnel_certs, env=None, proxy_port=None,
              defaults=True, wait=True, wait_connected=True, listen=True):
        p = TunnelAgent(tmp_path / ("agent%d" % len(procs)), server, flags, certs=certs,
                        env=env, proxy_port=proxy_port, defaults=defaults, wait=wait,
                        wait_connected=wait_connected, listen=listen)
        procs.append(p)
        return p

    start.procs = procs
    yield start
    _stop_all(procs)


@pytest.fixture
def pair(tunnel_server, tunnel_agent):
    """A default server and an agent connected to it."""
    srv = tunnel_server()
    agent = tunnel_agent(srv)
    return srv, agent


# ------------------------------------------------------------------ origins

BLOCK = hashlib.sha256(b"p2pmesh-tunnel-test").digest() * 2048  # 64 KiB


def big_chunks(n):
    """The body of /big?n=N: 64 KiB pieces, each starting with its index."""
    i = 0
    left = n
    while left > 0:
        piece = i.to_bytes(8, "big") + BLOCK[8:]
        if left < len(piece):
            piece = piece[:left]
        yield piece
        left -= len(piece)
        i += 1


def big_sha256(n):
    h = hashlib.sha256()
    for p in big_chunks(n):
        h.update(p)
    return h.hexdigest()


class OriginHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "origin/1"

    def log_message(self, fmt, *args):
        pass

    # -- request body
    def read_body(self):
        """Stream the request body: (first 4 KiB, length, sha256 hex, framing)."""
        h = hashlib.sha256()
        head = bytearray()
        total = 0

        def take(b):
            nonlocal total
            h.update(b)
            total += len(b)
            if len(head) < 4096:
                head.extend(b[:4096 - len(head)])

        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise ConnectionError("EOF in chunk size")
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers
                        t = self.rfile.readline(8192)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    return bytes(head), total, h.hexdigest(), "chunked"
                while size > 0:
                    b = self.rfile.read(min(size, 1 << 20))
                    if not b:
                        raise ConnectionError("EOF in chunk")
                    take(b)
                    size -= len(b)
                self.rfile.readline(8)
        n = int(self.headers.get("Content-Length") or 0)
        left = n
        while left > 0:
            b = self.rfile.read(min(left, 1 << 20))
            if not b:
                raise ConnectionError("EOF in body")
            take(b)
            left -= len(b)
        return bytes(head), total, h.hexdigest(), ("length" if n else "none")

    def send_body(self, status, body, ctype="application/json", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (ConnectionError, BrokenPipeError, socket.timeout, ssl.SSLError, OSError):
            self.close_connection = True

    def _dispatch(self):
        u = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        body, body_len, body_sha, framing = self.read_body()
        self.server.record(self, body_len)
        route = u.path.rstrip("/") or "/"
        if route.startswith("/echo") or route == "/":
            out = {
                "method": self.command,
                "path": self.path,
                "version": self.request_version,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body_len": body_len,
                "body_sha256": body_sha,
                "body": body.decode("latin-1"),
                "framing": framing,
                "tls": self.server.tls,
                "client_port": self.client_address[1],
            }
            self.send_body(200, json.dumps(out).encode(),
                           extra=[("X-Origin", "yes"), ("X-Echo-Method", self.command)])
        elif route == "/big":
            n = int(q.get("n", "1048576"))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if q.get("chunked"):
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(n))
            self.end_headers()
            for piece in big_chunks(n):
                if q.get("chunked"):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                else:
                    self.wfile.write(piece)
            if q.get("chunked"):
                self.wfile.write(b"0\r\n\r\n")
        elif route == "/redirect":
            self.send_body(302, b"moved\n", "text/plain",
                           extra=[("Location", "/redirect-target")])
        elif route == "/redirect-target":
            self.send_body(200, b"followed\n", "text/plain")
        elif route == "/chunked":
            n = int(q.get("n", "5"))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(n):
                piece = ("chunk-%d;" % i).encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        elif route == "/slow":
            n = int(q.get("n", "4"))
            delay = float(q.get("delay", "0.2"))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(n * 6))
            self.end_headers()
            self.wfile.flush()
            for i in range(n):
                time.sleep(delay)
                self.wfile.write(b"slow%d\n" % (i % 10))
                self.wfile.flush()
        elif route == "/gate":
            # first half now; the rest once the test opens the gate (<= 30 s)
            gid = q.get("id", "g")
            ev = self.server.gate(gid)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "20")
            self.end_headers()
            self.wfile.write(b"first-half|")
            self.wfile.flush()
            ev.wait(30)
            self.wfile.write(b"second-ha" if ev.is_set() else b"timed-out")
            self.wfile.flush()
        elif route == "/hop":
            extra = [("Connection", "X-Hop-Resp"), ("X-Hop-Resp", "secret"),
                     ("Keep-Alive", "timeout=5, max=100"),
                     ("Proxy-Authenticate", 'Basic realm="origin"'),
                     ("Proxy-Connection", "keep-alive"), ("Trailer", "X-Trailer"),
                     ("Upgrade", "h2c"), ("X-End-To-End", "kept")]
            self.send_body(200, b"hop\n", "text/plain", extra=extra)
        elif route == "/close":
            # a response delimited by the end of the connection
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"until-close-body")
            self.close_connection = True
        elif route == "/status":
            code = int(q.get("code", "200"))
            self.send_body(code, b"status %d\n" % code, "text/plain")
        else:
            self.send_body(404, b"no route\n", "text/plain")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch


class OriginServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, ssl_ctx=None):
        self.ssl_ctx = ssl_ctx
        self.tls = ssl_ctx is not None
        self.requests = []
        self.connections = 0
        self._lock = threading.Lock()
        self._gates = {}
        super().__init__(("127.0.0.1", 0), OriginHandler)
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % ("https" if self.tls else "http", self.port)

    def finish_request(self, request, client_address):
        with self._lock:
            self.connections += 1
        request.settimeout(60)
        if self.ssl_ctx is not None:
            try:
                request = self.ssl_ctx.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        try:
            super().finish_request(request, client_address)
        finally:
            try:
                request.close()
            except OSError:
                pass

    def record(self, handler, body_len):
        with self._lock:
            self.requests.append({
                "method": handler.command, "path": handler.path,
                "headers": {k.lower(): v for k, v in handler.headers.items()},
                "body_len": body_len, "client_port": handler.client_address[1]})

    def gate(self, gid):
        with self._lock:
            return self._gates.setdefault(gid, threading.Event())

    def paths(self):
        with self._lock:
            return [r["path"] for r in self.requests]

    def close(self):
        with self._lock:
            for ev in self._gates.values():
                ev.set()
        self.shutdown()
        self.server_close()


@pytest.fixture
def http_origin():
    srv = OriginServer()
    yield srv
    srv.close()


class TLSOrigin(OriginServer):
    def __init__(self, cert, key):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.cafile = cert
        super().__init__(ctx)


@pytest.fixture
def tls_origin(origin_cert):
    srv = TLSOrigin(*origin_cert)
    yield srv
    srv.close()


class WSOrigin:
    """Echo servers: ws://127.0.0.1:port and wss://127.0.0.1:tls_port."""

    def __init__(self, cert, key):
        self.cafile = cert
        self.loop = asyncio.new_event_loop()
        self.connections = 0
        self._ready = threading.Event()
        self._servers = []
        self._stop = None
        self._cert, self._key = cert, key
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self._ready.wait(10), "WebSocket origin did not start"

    async def _echo(self, ws, *args):
        self.connections += 1
        try:
            async for msg in ws:
                await ws.send(msg)
        except websockets.ConnectionClosed:
            pass

    async def _main(self):
        self._stop = asyncio.Event()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self._cert), str(self._key))
        s1 = await websockets.serve(self._echo, "127.0.0.1", 0, max_size=None)
        s2 = await websockets.serve(self._echo, "127.0.0.1", 0, ssl=ctx, max_size=None)
        self._servers = [s1, s2]
        self.port = s1.sockets[0].getsockname()[1]
        self.tls_port = s2.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        for s in self._servers:
            s.close()
            await s.wait_closed()

    def _run(self):
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        finally:
            self.loop.close()

    def close(self):
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)


@pytest.fixture
def ws_origin(origin_cert):
    srv = WSOrigin(*origin_cert)
    yield srv
    srv.close()


class _TCPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        s.settimeout(60)
        kind = self.server.kind
        self.server.count += 1
        try:
            if kind == "half":
                h = hashlib.sha256()
                n = 0
                while True:
                    b = s.recv(65536)
                    if not b:
                        break
                    h.update(b)
                    n += len(b)
                self.server.half_closed.append(n)
                s.sendall(b"got %d %s\n" % (n, h.hexdigest().encode()))
                s.shutdown(socket.SHUT_WR)
                # linger until the peer closes, so the test sees data then EOF
                while s.recv(65536):
                    pass
            elif kind == "echo":
                while True:
                    b = s.recv(65536)
                    if not b:
                        break
                    s.sendall(b)
            elif kind == "hold":
                # echo until EOF, then keep the connection open (<= 60 s)
                while True:
                    b = s.recv(65536)
                    if not b:
                        break
                    s.sendall(b)
                self.server.half_closed.append(-1)
                s.settimeout(60)
                try:
                    s.recv(1)
                except OSError:
                    pass
            elif kind == "badhead":
                # read a request head, answer a truncated response head, close
                buf = b""
                while b"\r\n\r\n" not in buf:
                    b = s.recv(65536)
                    if not b:
                        return
                    buf += b
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Len")
            elif kind == "firehose":
                while True:
                    s.sendall(BLOCK)
                    self.server.sent += len(BLOCK)
        except OSError:
            pass


class TCPOrigin(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, kind):
        self.kind = kind
        self.count = 0
        self.sent = 0
        self.half_closed = []
        super().__init__(("127.0.0.1", 0), _TCPHandler)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True).start()

    def close(self):
        self.shutdown()
        self.server_close()


@pytest.fixture
def tcp_origin():
    """make(kind) -> TCPOrigin with kind in half, echo, hold, badhead, firehose."""
    made = []

    def make(kind):
        o = TCPOrigin(kind)
        made.append(o)
        return o

    yield make
    for o in made:
        o.close()


class RecorderHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def _any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        self.server.add({"method": self.command, "path": self.path,
                         "headers": {k.lower(): v for k, v in self.headers.items()},
                         "body": body.decode("utf-8", "replace"), "t": time.time()})
        out = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = _any


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        self.seen = []
        self._lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), RecorderHandler)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True).start()

    def add(self, r):
        with self._lock:
            self.seen.append(r)

    def requests(self):
        with self._lock:
            return list(self.seen)

    def wait_for(self, pred, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in self.requests():
                if pred(r):
                    return r
            time.sleep(0.05)
        raise AssertionError("no matching request within %.0fs; seen %r"
                             % (timeout, self.requests()))

    def close(self):
        self.shutdown()
        self.server_close()


@pytest.fixture
def recorder():
    r = Recorder()
    yield r
    r.close()


# ------------------------------------------------------------------- talking


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


class RSSSampler:
    """Samples VmRSS of some pids every interval in a thread; .peak[pid] in kB."""

    def __init__(self, pids, interval=0.05):
        self.pids = list(pids)
        self.base = {p: rss_kb(p) for p in self.pids}
        self.peak = dict(self.base)
        self.samples = 0
        self._stop = threading.Event()
        self._interval = interval
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for p in self.pids:
                try:
                    v = rss_kb(p)
                except (OSError, AssertionError):
                    continue
                if v > self.peak[p]:
                    self.peak[p] = v
            self.samples += 1
            self._stop.wait(self._interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(5)

    def growth_kb(self, pid):
        return self.peak[pid] - self.base[pid]


def client_ctx(certs=None, cert=None, key=None, cafile=None, server_name_check=True):
    """An SSL client context for the tunnel server: verifies it against the
    CA (name p2pmesh-tunnel) and presents cert/key (default: certs' agent)."""
    ctx = ssl.create_default_context(cafile=str(cafile or certs.ca))
    ctx.check_hostname = server_name_check
    if cert is None and certs is not None:
        cert, key = certs.agent_crt, certs.agent_key
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def tls_connect(port, ctx, server_hostname=SERVER_NAME, timeout=10.0):
    """A TLS connection to the tunnel server (handshake done)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        s = ctx.wrap_socket(raw, server_hostname=server_hostname)
    except BaseException:
        raw.close()
        raise
    s.settimeout(timeout)
    return s


def read_response(reader, timeout=10.0, method="GET"):
    """One HTTP/1.1 response from a _Reader: Content-Length, chunked, or (with
    neither) no body for CONNECT/1xx/204/304 and HEAD, else until close."""
    deadline = time.monotonic() + timeout
    head = reader.read_until(b"\r\n\r\n", deadline)
    status, reason, headers = parse_response_head(head)
    body = b""
    if method in ("CONNECT", "HEAD") and (method == "HEAD" or status // 100 == 2) \
            or status // 100 == 1 or status in (204, 304):
        return HTTPResult(status, reason, headers, body)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        out = bytearray()
        while True:
            line = reader.read_until(b"\r\n", deadline)
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                reader.read_until(b"\r\n", deadline)
                break
            out += reader.read_exact(size, deadline)
            reader.read_exact(2, deadline)
        body = bytes(out)
    elif "content-length" in headers:
        body = reader.read_exact(int(headers["content-length"]), deadline)
    else:
        out = bytearray(reader.buf)
        reader.buf.clear()
        while True:
            try:
                reader._fill(deadline)
            except helpers.EOFReached:
                break
            except ssl.SSLError:
                break
            out += reader.buf
            reader.buf.clear()
        body = bytes(out)
    return HTTPResult(status, reason, headers, body)


def raw_headers(head_bytes):
    """All header lines (name, value) of a response head, in order."""
    out = []
    for line in head_bytes.decode("latin-1").split("\r\n")[1:]:
        if line:
            k, _, v = line.partition(":")
            out.append((k.strip(), v.strip()))
    return out


def connect_via(sock, target, headers=None, timeout=10.0):
    """Send CONNECT target on sock; returns (HTTPResult, reader). On 200 the
    reader's buffer holds whatever the target already sent."""
    lines = ["CONNECT %s HTTP/1.1" % target, "Host: %s" % target]
    for k, v in (headers or {}).items():
        lines.append("%s: %s" % (k, v))
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    reader = _Reader(sock)
    resp = read_response(reader, timeout, method="CONNECT")
    return resp, reader


def agent_connect(agent_port, target, headers=None, timeout=10.0):
    """A CONNECT tunnel through the agent: (HTTPResult, sock, reader)."""
    s = socket.create_connection(("127.0.0.1", agent_port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    resp, reader = connect_via(s, target, headers, timeout)
    return resp, s, reader


def server_connect(server_port, ctx, target, headers=None, timeout=10.0):
    """A CONNECT tunnel straight through the server (mTLS): (HTTPResult, sock, reader)."""
    s = tls_connect(server_port, ctx, timeout=timeout)
    resp, reader = connect_via(s, target, headers, timeout)
    return resp, s, reader


def proxy_get(sock, url, method="GET", headers=None, body=None, timeout=10.0, reader=None):
    """An absolute-form request on sock; returns (HTTPResult, reader)."""
    u = urlsplit(url)
    lines = ["%s %s HTTP/1.1" % (method, url), "Host: %s" % u.netloc]
    hdrs = dict(headers or {})
    if body is not None:
        hdrs.setdefault("Content-Length", str(len(body)))
    for k, v in hdrs.items():
        lines.append("%s: %s" % (k, v))
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
    reader = reader or _Reader(sock)
    return read_response(reader, timeout, method=method), reader


def assert_refused(resp, status, error):
    """A refusal per docs/tunnel.md: status, Proxy-Status with error=token."""
    assert resp.status == status, resp
    ps = resp.headers.get("proxy-status", "")
    assert "error=%s" % error in ps.replace(" ", ""), ("Proxy-Status", ps, resp)
    assert ps.strip().lower().startswith("p2pmesh"), ("Proxy-Status names the proxy", ps)


def curl(*args, timeout=60, input=None):
    """Run curl (-sS); returns CompletedProcess (text)."""
    return subprocess.run(["curl", "-sS", "--max-time", str(int(timeout) - 5), *args],
                          capture_output=True, timeout=timeout, input=input)


def curl_headers(stdout_bytes):
    """Split curl -i output: (status, [(name, value)], body), after any 1xx / CONNECT 200."""
    data = stdout_bytes
    while True:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, "no header block in %r" % data[:200]
        status = int(head.split(b" ", 2)[1])
        if status // 100 == 1 or (status == 200 and b"connection established" in
                                  head.split(b"\r\n", 1)[0].lower()):
            data = rest
            continue
        return status, raw_headers(head), rest


def hdr(headers, name):
    """All values of header name in a [(name, value)] list."""
    return [v for k, v in headers if k.lower() == name.lower()]


def https_proxy_args(server, certs, cert=None, key=None, cacert=None):
    """curl arguments that use the server directly as an HTTPS proxy."""
    return ["--proxy", "https://127.0.0.1:%d" % server.port,
            "--proxy-cacert", str(cacert or certs.ca),
            "--proxy-cert", str(cert or certs.agent_crt),
            "--proxy-key", str(key or certs.agent_key)]


def metric(samples, name, **labels):
    v = helpers.metric_value(samples, name, **labels)
    return 0.0 if v is None else v


def wait_until(pred, timeout=15.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("%s not reached within %.0fs (last %r)" % (what, timeout, last))


async def ws_through_connect(agent_port, target, url, ssl_ctx=None, server_hostname=None):
    """python3-websockets over a CONNECT tunnel opened by hand (websockets 10
    has no proxy support): the tunnel's socket is handed over as sock=."""
    resp, s, reader = await asyncio.get_running_loop().run_in_executor(
        None, agent_connect, agent_port, target)
    assert resp.status == 200, resp
    assert not reader.buf, "bytes after the CONNECT answer: %r" % bytes(reader.buf)
    s.settimeout(None)
    s.setblocking(False)
    kw = dict(sock=s, open_timeout=10, close_timeout=3, ping_interval=None, max_size=None)
    if ssl_ctx is not None:
        kw["ssl"] = ssl_ctx
        kw["server_hostname"] = server_hostname or "localhost"
    return await websockets.connect(url, **kw)


class Stunnel:
    """stunnel4 (client mode) as an independent mTLS client of the server.

    stunnel's `protocol = connect` sends its CONNECT in plain text to the
    `connect` address and then starts TLS with the *target*, so it cannot
    speak to an HTTPS proxy by itself. Two services make the real setup:

    - [mtls] (always): accept on `port`, TLS with client certificate to the
      server, verifyChain, checkHost (default p2pmesh-tunnel). A client
      that speaks plain HTTP proxy to `port` (curl -x) goes through it.
    - [connect] (with connect_target): accept on `connect_port`,
      `protocol = connect` + `protocolHost = connect_target` through the
      [mtls] service, then TLS with the target itself (verified against
      target_ca, name target_name). Plain clients of `connect_port` reach
      the TLS target.
    """

    def __init__(self, workdir, server, certs, connect_target=None, target_ca=None,
                 target_name="localhost", check_host=SERVER_NAME, cert=None, key=None,
                 cafile=None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.connect_port = free_port() if connect_target else None
        self.conf = self.workdir / "stunnel.conf"
        self.log = self.workdir / "stunnel.log"
        if self.log.exists():
            self.log.unlink()
        lines = [
            "foreground = yes",
            "pid =",
            "debug = 6",
            "output = %s" % self.log,
            "[mtls]",
            "client = yes",
            "accept = 127.0.0.1:%d" % self.port,
            "connect = 127.0.0.1:%d" % server.port,
            "cert = %s" % (cert or certs.agent_crt),
            "key = %s" % (key or certs.agent_key),
            "CAfile = %s" % (cafile or certs.ca),
            "verifyChain = yes",
            "checkHost = %s" % check_host,
        ]
        if connect_target:
            lines += [
                "[connect]",
                "client = yes",
                "accept = 127.0.0.1:%d" % self.connect_port,
                "connect = 127.0.0.1:%d" % self.port,
                "protocol = connect",
                "protocolHost = %s" % connect_target,
                "CAfile = %s" % target_ca,
                "verifyChain = yes",
                "checkHost = %s" % target_name,
            ]
        self.conf.write_text("\n".join(lines) + "\n")
        exe = shutil.which("stunnel4") or shutil.which("stunnel")
        assert exe, "stunnel4 is not installed"
        self.proc = subprocess.Popen([exe, str(self.conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # ready once its log says so (a probe connection would reach the server)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "stunnel exited: %s" % self.log_text()
            if "Accepting new connections" in self.log_text():
                return
            time.sleep(0.05)
        raise AssertionError("stunnel not listening: %s" % self.log_text())

    @property
    def proxy(self):
        return "http://127.0.0.1:%d" % self.port

    def log_text(self):
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def stunnel_factory(tmp_path):
    """start(server, certs, connect_target=None, **kw) -> Stunnel; stopped at teardown."""
    made = []

    def start(server, certs, connect_target=None, **kw):
        s = Stunnel(tmp_path / ("stunnel%d" % len(made)), server, certs, connect_target, **kw)
        made.append(s)
        return s

    yield start
    for s in made:
        s.stop()


class CurlResult:
    def __init__(self, rc, info, blocks, body, stderr):
        self.rc = rc
        self.info = info  # curl -w '%{json}'
        self.blocks = blocks  # [(status, [(name, value)])] of every header block
        self.body = body
        self.stderr = stderr

    @property
    def code(self):
        return int(self.info.get("http_code") or 0)

    @property
    def connect_code(self):
        return int(self.info.get("http_connect") or 0)

    @property
    def headers(self):
        """Headers of the final response (after CONNECT and 1xx blocks)."""
        return self.blocks[-1][1] if self.blocks else []

    def header(self, name):
        vals = hdr(self.headers, name)
        return vals[-1] if vals else None

    def json(self):
        return json.loads(self.body.decode())

    def __repr__(self):
        return "CurlResult(rc=%d code=%d connect=%d headers=%r body=%r stderr=%r)" % (
            self.rc, self.code, self.connect_code, self.headers, self.body[:300],
            self.stderr[-600:])


_curl_seq = [0]


def curl_req(*args, timeout=60, input=None):
    """curl -sS with the headers (-D), body (-o) and -w '%{json}' kept apart."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix="curl-") as d:
        hfile, bfile = os.path.join(d, "h"), os.path.join(d, "b")
        p = subprocess.run(["curl", "-sS", "--max-time", str(int(timeout) - 5), "-D", hfile,
                            "-o", bfile, "-w", "%{json}", *args],
                           capture_output=True, timeout=timeout, input=input)
        try:
            info = json.loads(p.stdout.decode() or "{}")
        except ValueError:
            info = {"raw": p.stdout.decode("replace")}
        blocks = []
        if os.path.exists(hfile):
            for block in open(hfile, "rb").read().split(b"\r\n\r\n"):
                if not block.strip():
                    continue
                first = block.split(b"\r\n", 1)[0].decode("latin-1")
                try:
                    status = int(first.split(" ", 2)[1])
                except (IndexError, ValueError):
                    continue
                blocks.append((status, raw_headers(block)))
        body = open(bfile, "rb").read() if os.path.exists(bfile) else b""
    return CurlResult(p.returncode, info, blocks, body, p.stderr.decode("utf-8", "replace"))
