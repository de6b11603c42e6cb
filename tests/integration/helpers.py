"""Helpers for the p2pmesh integration tests.

Everything here talks to a server on 127.0.0.1 and every wait is bounded.

- run_cli: run the binary once (for --help, --print-config, ...).
- http_get / raw_request / read_http_response: plain HTTP.
- RawWS: a hand-written WebSocket client for protocol violations.
- ws_connect / recv_json / assert_silent / join: python-websockets helpers.
- parse_metrics / metric_value / metric_sum: Prometheus text.
"""

import asyncio
import base64
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import time
from pathlib import Path

import websockets

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("PM_BIN") or str(REPO / "p2pmesh")

# RSS a sanitizer build may add to a process on top of what the code
# itself holds (its quarantine of freed blocks, shadow memory): set by
# conftest.py for an ASan binary, 0 otherwise.
SAN_RSS_SLACK_KB = 0

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA


# ---------------------------------------------------------------- process

LOG_KEYS = ("ts", "level", "role", "event", "msg")


class Process:
    """What every running p2pmesh process under test shares: a subclass
    sets proc, flags, stdout_path/stderr_path and their open files _out and
    _err."""

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        """Signal the process and wait; SIGKILL after timeout. Return code."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for f in (self._out, self._err):
            if not f.closed:
                f.close()
        return self.proc.returncode

    def alive(self):
        return self.proc.poll() is None

    def stdout_text(self):
        return self.stdout_path.read_bytes().decode("utf-8", "replace")

    def stderr_text(self):
        return self.stderr_path.read_bytes().decode("utf-8", "replace")

    def logs(self):
        """Parsed JSON log lines written so far (complete lines only)."""
        out = []
        for line in self.stdout_text().split("\n")[:-1]:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out

    def check_log_format(self):
        """Every stdout line is a JSON object with the LOG_KEYS."""
        if "--log.format=text" in self.flags:
            return  # asked for text lines: test_core checks those
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
            missing = [k for k in LOG_KEYS if k not in obj]
            if missing:
                bad.append((i, line, "missing %s" % missing))
        assert not bad, "malformed stdout log lines: %r" % bad[:5]



def clean_env(extra=None):
    """os.environ without any P2PMESH_* / SIGNALING_* name, plus extra."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("P2PMESH_") and not k.startswith("SIGNALING_")
    }
    if extra:
        env.update(extra)
    return env


def run_cli(*args, env=None, timeout=10):
    """Run the binary with args (no server expected); returns CompletedProcess."""
    return subprocess.run(
        [BIN, *args],
        env=clean_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------- HTTP


class HTTPResult:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers  # dict, lower-case names
        self.body = body  # bytes

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "HTTPResult(%d %s, %r, %r)" % (
            self.status,
            self.reason,
            self.headers,
            self.body[:200],
        )


def http_get(port, path="/health", method="GET", headers=None, timeout=5.0,
             ssl_context=None, host="127.0.0.1"):
    """One request on a fresh connection (Connection: close). HTTPResult."""
    if ssl_context is not None:
        conn = http.client.HTTPSConnection(host, port, timeout=timeout,
                                           context=ssl_context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        hdrs = {"Connection": "close"}
        if headers:
            hdrs.update(headers)
        conn.request(method, path, headers=hdrs)
        resp = conn.getresponse()
        body = resp.read()
        return HTTPResult(
            resp.status,
            resp.reason,
            {k.lower(): v for k, v in resp.getheaders()},
            body,
        )
    finally:
        conn.close()


class EOFReached(Exception):
    """The peer closed the TCP connection (or reset it)."""


class _Reader:
    """Buffered, deadline-bounded reads from a socket."""

    def __init__(self, sock, buf=b""):
        self.sock = sock
        self.buf = bytearray(buf)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("timed out waiting for data")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError) as e:
            raise EOFReached("connection reset: %r" % e)
        if not chunk:
            raise EOFReached("connection closed by peer")
        self.buf += chunk

    def read_exact(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_until(self, marker, deadline, limit=1 << 20):
        while True:
            i = self.buf.find(marker)
            if i >= 0:
                out = bytes(self.buf[: i + len(marker)])
                del self.buf[: i + len(marker)]
                return out
            if len(self.buf) > limit:
                raise AssertionError("no %r within %d bytes" % (marker, limit))
            self._fill(deadline)


def parse_response_head(head):
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"^HTTP/1\.[01] (\d{3})(?: (.*))?$", lines[0])
    assert m, "bad status line: %r" % lines[0]
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(m.group(1)), m.group(2) or "", headers


def read_http_response(reader, timeout=5.0, head_only=False):
    """Read one response (head, then Content-Length body) from a _Reader."""
    deadline = time.monotonic() + timeout
    head = reader.read_until(b"\r\n\r\n", deadline)
    status, reason, headers = parse_response_head(head)
    body = b""
    if not head_only and "content-length" in headers:
        body = reader.read_exact(int(headers["content-length"]), deadline)
    return HTTPResult(status, reason, headers, body)


def open_conn(port, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def raw_request(port, data, timeout=5.0):
    """Send raw bytes on a new connection; return (HTTPResult, sock, reader).

    The caller closes sock. A send that fails because the server already
    answered and closed is tolerated."""
    s = open_conn(port, timeout)
    try:
        s.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass
    reader = _Reader(s)
    resp = read_http_response(reader, timeout)
    return resp, s, reader


def wait_eof(sock, timeout, reader=None):
    """Seconds until the peer closes sock (TLS too: an abrupt end of a TLS
    stream counts as closed); AssertionError on timeout.

    Any bytes that arrive first are returned too: (elapsed, data)."""
    start = time.monotonic()
    deadline = start + timeout
    data = bytearray(reader.buf if reader else b"")
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(
                "connection still open after %.1fs (got %r)" % (timeout, bytes(data[:200]))
            )
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            return time.monotonic() - start, bytes(data)
        if not chunk:
            return time.monotonic() - start, bytes(data)
        data += chunk


# -------------------------------------------------------------- WebSocket


def ws_accept(key):
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def ws_key():
    return base64.b64encode(os.urandom(16)).decode()


def handshake_request(port, path="/", headers=None, omit=()):
    """Build upgrade request bytes. headers override defaults; omit drops."""
    hdrs = {
        "Host": "127.0.0.1:%d" % port,
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": ws_key(),
        "Sec-WebSocket-Version": "13",
    }
    if headers:
        hdrs.update(headers)
    for name in omit:
        hdrs.pop(name, None)
    lines = ["GET %s HTTP/1.1" % path] + ["%s: %s" % kv for kv in hdrs.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), hdrs


def mask_bytes(payload, key):
    if not payload:
        return b""
    n = len(payload)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def build_frame(opcode, payload=b"", fin=True, rsv=0, mask=True):
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        hdr = bytes([b0, mbit | n])
    elif n < 65536:
        hdr = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    else:
        hdr = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    if mask:
        key = os.urandom(4)
        return hdr + key + mask_bytes(payload, key)
    return hdr + payload


def close_payload(code, reason=b""):
    return struct.pack("!H", code) + reason


class Frame:
    def __init__(self, fin, rsv, opcode, masked, payload, len_code=None):
        self.fin, self.rsv, self.opcode = fin, rsv, opcode
        self.masked, self.payload = masked, payload
        self.len_code = len_code  # the 7-bit length field as sent (126, 127: extended)

    @property
    def close_code(self):
        if self.opcode != OP_CLOSE:
            return None
        if len(self.payload) < 2:
            return 1005
        return struct.unpack("!H", self.payload[:2])[0]

    def json(self):
        assert self.opcode == OP_TEXT, "expected a text frame, got opcode %d" % self.opcode
        return json.loads(self.payload.decode("utf-8"))

    def __repr__(self):
        return "Frame(fin=%s rsv=%d op=%d len=%d %r)" % (
            self.fin, self.rsv, self.opcode, len(self.payload), self.payload[:80])


class HandshakeRefused(AssertionError):
    def __init__(self, resp):
        super().__init__("upgrade refused: %r" % (resp,))
        self.resp = resp


def raw_handshake(port, path="/", headers=None, omit=(), timeout=5.0,
                  ssl_context=None):
    """Do an upgrade by hand. Returns (HTTPResult, sock, reader, key)."""
    data, hdrs = handshake_request(port, path, headers, omit)
    s = open_conn(port, timeout)
    if ssl_context is not None:
        s = ssl_context.wrap_socket(s, server_hostname="localhost")
    s.sendall(data)
    reader = _Reader(s)
    deadline = time.monotonic() + timeout
    head = reader.read_until(b"\r\n\r\n", deadline)
    status, reason, rh = parse_response_head(head)
    body = b""
    if status != 101 and "content-length" in rh:
        try:
            body = reader.read_exact(int(rh["content-length"]), deadline)
        except EOFReached:
            pass
    return HTTPResult(status, reason, rh, body), s, reader, hdrs.get("Sec-WebSocket-Key")


class RawWS:
    """A WebSocket client built by hand, for sending what a library won't."""

    def __init__(self, port, path="/", headers=None, timeout=5.0):
        resp, sock, reader, key = raw_handshake(port, path, headers, timeout=timeout)
        if resp.status != 101:
            sock.close()
            raise HandshakeRefused(resp)
        assert resp.headers.get("sec-websocket-accept") == ws_accept(key), resp
        self.sock = sock
        self.reader = reader
        self.port = port

    # sending
    def send_raw(self, data):
        self.sock.sendall(data)

    def send_frame(self, opcode, payload=b"", fin=True, rsv=0, mask=True):
        self.sock.sendall(build_frame(opcode, payload, fin=fin, rsv=rsv, mask=mask))

    def send_text(self, text):
        self.send_frame(OP_TEXT, text.encode("utf-8") if isinstance(text, str) else text)

    def send_json(self, obj):
        self.send_text(json.dumps(obj))

    def send_close(self, code=1000, reason=b""):
        self.send_frame(OP_CLOSE, close_payload(code, reason))

    # receiving
    def recv_frame(self, timeout=3.0):
        deadline = time.monotonic() + timeout
        h = self.reader.read_exact(2, deadline)
        fin = bool(h[0] & 0x80)
        rsv = (h[0] >> 4) & 7
        op = h[0] & 0xF
        masked = bool(h[1] & 0x80)
        n = h[1] & 0x7F
        if n == 126:
            n = struct.unpack("!H", self.reader.read_exact(2, deadline))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.reader.read_exact(8, deadline))[0]
        key = self.reader.read_exact(4, deadline) if masked else None
        payload = self.reader.read_exact(n, deadline) if n else b""
        if masked:
            payload = mask_bytes(payload, key)
        return Frame(fin, rsv, op, masked, payload, h[1] & 0x7F)

    def recv_message(self, timeout=3.0, answer_pings=True):
        """Next data (text/binary) or close frame; pings are answered."""
        deadline = time.monotonic() + timeout
        while True:
            f = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if f.opcode == OP_PING:
                if answer_pings:
                    self.send_frame(OP_PONG, f.payload)
                continue
            if f.opcode == OP_PONG:
                continue
            return f

    def recv_json(self, timeout=3.0):
        f = self.recv_message(timeout)
        assert f.opcode == OP_TEXT, "expected text frame, got %r" % (f,)
        return json.loads(f.payload.decode("utf-8"))

    def expect_close(self, timeout=3.0, reply=True):
        """Read until a close frame; returns its code. Data frames skipped.

        EOF before a close frame is an AssertionError."""
        deadline = time.monotonic() + timeout
        skipped = []
        while True:
            try:
                f = self.recv_frame(max(0.01, deadline - time.monotonic()))
            except EOFReached:
                raise AssertionError("TCP closed without a close frame; frames: %r" % skipped)
            except socket.timeout:
                raise AssertionError("no close frame within %.1fs; frames: %r" % (timeout, skipped))
            if f.opcode == OP_CLOSE:
                if reply:
                    try:
                        self.send_frame(OP_CLOSE, f.payload[:2])
                    except OSError:
                        pass
                return f.close_code
            skipped.append(f)

    def wait_eof(self, timeout=3.0):
        return wait_eof(self.sock, timeout, self.reader)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -------------------------------------------------------- python-websockets


async def ws_connect(url, **kw):
    kw.setdefault("open_timeout", 5)
    kw.setdefault("close_timeout", 2)
    kw.setdefault("ping_interval", None)
    return await websockets.connect(url, **kw)


async def recv_json(ws, timeout=3.0):
    """Next message as JSON; it must be a text frame holding an object."""
    msg = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(msg, str), "server sent a binary frame: %r" % (msg,)
    obj = json.loads(msg)
    assert isinstance(obj, dict), obj
    return obj


async def assert_silent(ws, duration=0.4):
    """Assert that no message arrives within duration seconds."""
    try:
        msg = await asyncio.wait_for(ws.recv(), duration)
    except asyncio.TimeoutError:
        return
    except websockets.ConnectionClosed:
        return
    raise AssertionError("unexpected message: %r" % (msg,))


async def wait_closed(ws, timeout=3.0):
    """Drain ws until it closes; returns (close_code, messages seen)."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("connection not closed within %.1fs; got %r" % (timeout, seen))
        try:
            msg = await asyncio.wait_for(ws.recv(), remaining)
            seen.append(msg)
        except websockets.ConnectionClosed:
            return ws.close_code, seen
        except asyncio.TimeoutError:
            continue


async def join(url, peer_id):
    """Connect, join as peer_id, return (ws, bootstrap_peers message)."""
    ws = await ws_connect(url)
    await ws.send(json.dumps({"type": "join", "peerId": peer_id}))
    boot = await recv_json(ws)
    assert boot.get("type") == "bootstrap_peers", boot
    return ws, boot


async def join_all(url, ids):
    """Join ids in order; checks every earlier peer gets peer_joined.

    Returns a dict id -> ws with all queues drained."""
    peers = {}
    for pid in ids:
        ws, _ = await join(url, pid)
        for other, ows in peers.items():
            msg = await recv_json(ows)
            assert msg == {"type": "peer_joined", "peerId": pid}, (other, msg)
        peers[pid] = ws
    return peers


async def close_all(wss):
    for ws in wss:
        try:
            await asyncio.wait_for(ws.close(), 3)
        except Exception:
            pass


def ids_of(boot):
    peers = boot["peers"]
    assert isinstance(peers, list), boot
    for p in peers:
        assert isinstance(p, dict) and isinstance(p.get("id"), str), boot
    return [p["id"] for p in peers]


def xor_nearest(target, candidates, k):
    t = int(target, 16)
    return sorted(candidates, key=lambda c: int(c, 16) ^ t)[:k]


# ---------------------------------------------------------------- metrics

_METRIC_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """List of (name, labels dict, float value) for every sample line."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _METRIC_RE.match(line)
        assert m, "bad metrics line: %r" % line
        labels = dict(_LABEL_RE.findall(m.group(3) or ""))
        out.append((m.group(1), labels, float(m.group(4))))
    return out


def metric_value(samples, name, **labels):
    """Value of the one series name{labels...} (subset match), or None."""
    hits = [v for n, l, v in samples if n == name and all(l.get(k) == v2 for k, v2 in labels.items())]
    assert len(hits) <= 1, "several series match %s %r" % (name, labels)
    return hits[0] if hits else None


def metric_sum(samples, name):
    return sum(v for n, _, v in samples if n == name)


def get_metrics(port):
    r = http_get(port, "/metrics")
    assert r.status == 200, r
    return r.body.decode(), parse_metrics(r.body.decode())


# ------------------------------------------------------- config value forms


def duration_ms(text):
    """Parse 250ms / 30s / 5m / 1h / 7d / bare seconds into milliseconds."""
    m = re.fullmatch(r"\s*(\d+)\s*(ms|s|m|h|d)?\s*", text)
    assert m, "not a duration: %r" % text
    n = int(m.group(1))
    return n * {"ms": 1, "s": 1000, "m": 60000, "h": 3600000, "d": 86400000,
                None: 1000}[m.group(2)]


def size_bytes(text):
    """Parse 64k / 1m / 1g / bare bytes into bytes (k = 1024)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG])?[bB]?\s*", text)
    assert m, "not a size: %r" % text
    mult = {None: 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[(m.group(2) or "").lower() or None]
    return int(m.group(1)) * mult


def tls_client_context(cafile):
    ctx = ssl.create_default_context(cafile=str(cafile))
    return ctx
