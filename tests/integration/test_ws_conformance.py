"""RFC 6455 conformance, modelled on the Autobahn|Testsuite case list.

Autobahn cannot run on these machines (tooling.md section 8), so this is
a raw-socket table of its sections: 1 framing, 2 pings and pongs, 3
reserved bits, 4 opcodes, 5 fragmentation, 6 UTF-8, 7 close handshake and
9 limits. Case ids start with the Autobahn number they follow
("1.1.6-text-65535"); cases Autobahn does not have are numbered on after
its own in the same section.

How payload handling is observed, since no role echoes arbitrary data:
- the signaling role relays an addressed message between two joined
  peers byte for byte, only splicing ',"from":"aa"' before the closing
  brace: the case builds a message of an exact length and checks the
  exact bytes the other peer gets;
- a ping's payload comes back in the pong (any bytes, up to 125);
- a message that is not JSON (e.g. an empty one) is answered with the
  exact "Invalid JSON message format." error.

Everything the server sends is read through StrictWS, which fails the case
if a server frame is masked, has an RSV bit, an unknown opcode, a
non-minimal length, a control frame over 125 bytes or fragmented, text
that is not UTF-8, or a close payload with an invalid code or reason.

Documented behaviours (platform.md, pm_ws.h) asserted as they are:
- the close echo carries the peer's code without its reason;
- invalid UTF-8 fails fast per frame: a bad fragment is refused as soon
  as it is complete, before the message ends (Autobahn 6.4.1/6.4.2,
  strict); inside one frame the check runs when the frame is complete
  (Autobahn 6.4.3/6.4.4 "non-strict");
- a message over ws.max_message is refused with 1009 from the header
  that announces it, before its payload arrives;
- close codes 1012-1014 (IANA registered since Autobahn's table was
  written) are accepted and echoed.
"""

import asyncio
import json
import shutil
import struct
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from conftest import Server
from helpers import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RawWS,
    build_frame,
    close_payload,
    raw_handshake,
)

MAX = 256 * 1024  # ws.max_message of the suite's server
FLAGS = (
    "--ws.max_message=256k",
    # hundreds of upgrades and thousands of messages from one client
    "--limits.per_ip_rate=100000/1s",
    "--limits.per_conn_rate=100000/1s",
    "--limits.per_conn_burst=100000",
)

INVALID_JSON = b'{"type":"error","message":"Invalid JSON message format."}'
FROM = b',"from":"aa"}'
HEAD = b'{"type":"signal","to":"bb","d":"'
TAIL = b'"}'
MIN_RELAY = len(HEAD) + len(TAIL)

CONTROL = (OP_CLOSE, OP_PING, OP_PONG)
KNOWN_OPS = (OP_CONT, OP_TEXT, OP_BINARY) + CONTROL


def valid_close_code(code):
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                    1012, 1013, 1014) or 3000 <= code <= 4999


# ------------------------------------------------------------------ client


class StrictWS(RawWS):
    """RawWS whose every received frame is checked against RFC 6455 rules
    for a server's frames."""

    def __init__(self, port, path="/", **kw):
        super().__init__(port, path, **kw)
        self._frag = None  # opcode of a fragmented server message

    def recv_frame(self, timeout=3.0):
        f = super().recv_frame(timeout)
        fin, op, payload, n = f.fin, f.opcode, f.payload, len(f.payload)
        assert f.rsv == 0, "server frame with RSV bits %d: %r" % (f.rsv, f)
        assert not f.masked, "server frame is masked: %r" % f
        assert op in KNOWN_OPS, "server frame with opcode %d" % op
        if f.len_code == 126:
            assert n >= 126, "non-minimal 16-bit length %d" % n
        elif f.len_code == 127:
            assert n >= 65536 and n < 1 << 63, "bad 64-bit length %d" % n
        if op in CONTROL:
            assert fin and n <= 125, "bad server control frame op=%d fin=%s len=%d" % (op, fin, n)
        if op == OP_CLOSE:
            assert n != 1, "server close with a 1-byte payload"
            if n >= 2:
                code = struct.unpack("!H", payload[:2])[0]
                assert valid_close_code(code), "server sent close code %d" % code
                payload[2:].decode("utf-8")  # reason must be UTF-8
        elif op == OP_CONT:
            assert self._frag is not None, "server continuation without start"
            self._frag[1].append(payload)
        elif op in (OP_TEXT, OP_BINARY):
            assert self._frag is None, "server started a message inside another"
            if not fin:
                self._frag = (op, [payload])
            elif op == OP_TEXT:
                payload.decode("utf-8")  # raises on invalid UTF-8
        if op == OP_CONT and fin:
            fop, parts = self._frag
            self._frag = None
            if fop == OP_TEXT:
                b"".join(parts).decode("utf-8")
        return f

    def send_refusable(self, data):
        """Send data the server may refuse (and close on) before it all
        arrives: a reset or broken pipe while sending is no error."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def next_frame(self, timeout=3.0):
        """Next frame that is not a server keepalive ping."""
        deadline = time.monotonic() + timeout
        while True:
            f = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if f.opcode == OP_PING and f.payload == b"":
                self.send_frame(OP_PONG, b"")
                continue
            return f

    def silent(self, duration=0.3):
        """Assert nothing but keepalive pings arrives within duration."""
        try:
            f = self.next_frame(duration)
        except TimeoutError:
            return
        except OSError as e:  # socket.timeout is an OSError before 3.10
            if "timed out" in str(e):
                return
            raise
        raise AssertionError("unexpected frame: %r" % (f,))


def send_paced(ws, data, chunk, pause=0.001):
    """Send data in chunk-sized writes with a short pause between them, so
    the server's parser sees the pieces apart."""
    for i in range(0, len(data), chunk):
        ws.send_raw(data[i:i + chunk])
        if pause:
            time.sleep(pause)


def expect_fail(ws, code, timeout=5.0):
    """The server closes with exactly code (2-byte payload, no reason), sends
    nothing else before it, and then closes the TCP connection."""
    f = ws.next_frame(timeout)
    assert f.opcode == OP_CLOSE, "expected close %d, got %r" % (code, f)
    assert f.payload == struct.pack("!H", code), "expected close %d, got %r" % (code, f)
    try:
        ws.send_frame(OP_CLOSE, f.payload)
    except OSError:
        pass
    ws.wait_eof(3)


def expect_echo(ws, payload, timeout=5.0):
    """The server answers our close with exactly payload, then closes TCP."""
    f = ws.next_frame(timeout)
    assert f.opcode == OP_CLOSE and f.payload == payload, "expected close echo %r, got %r" % (payload, f)
    ws.wait_eof(3)


def expect_pong(ws, payload, timeout=5.0):
    f = ws.next_frame(timeout)
    assert f.opcode == OP_PONG and f.payload == payload, "expected pong %r, got %r" % (payload[:40], f)


# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("ws-conformance"), FLAGS)
    yield s
    rc = s.stop()
    err = s.stderr_text()
    s.check_log_format()
    assert "Sanitizer" not in err and "runtime error" not in err, err[-4000:]
    assert rc == 0, "server exited %r: %s" % (rc, err[-2000:])


class Pair:
    """Two peers "aa" and "bb" joined in a fresh realm: a's relayed
    messages reach b byte for byte (plus "from")."""

    def __init__(self, port):
        room = uuid.uuid4().hex
        self.a = StrictWS(port, "/?room=" + room)
        self.a.send_json({"type": "join", "peerId": "aa"})
        assert self.a.recv_json() == {"type": "bootstrap_peers", "peers": []}
        self.b = StrictWS(port, "/?room=" + room)
        self.b.send_json({"type": "join", "peerId": "bb"})
        assert self.b.recv_json() == {"type": "bootstrap_peers", "peers": [{"id": "aa"}]}
        assert self.a.recv_json() == {"type": "peer_joined", "peerId": "bb"}

    def relayed(self, msg, timeout=5.0):
        """b gets msg with "from" spliced in, as a text frame."""
        f = self.b.next_frame(timeout)
        assert f.opcode == OP_TEXT and f.fin, f
        want = msg[:-1] + FROM
        assert f.payload == want, "relayed %d bytes differ: got %r... want %r..." % (
            len(msg), f.payload[:80], want[:80])

    def close(self):
        self.a.close()
        self.b.close()


@pytest.fixture
def pair(srv):
    p = Pair(srv.port)
    yield p
    p.close()


@pytest.fixture
def ws(srv):
    w = StrictWS(srv.port)
    yield w
    w.close()


def relay_msg(n, fill=b"x"):
    """A relayable message of exactly n bytes (n >= MIN_RELAY): fill
    repeated, topped up with "x" so that it stays valid UTF-8."""
    pad = n - MIN_RELAY
    assert pad >= 0
    body = fill * (pad // len(fill)) + b"x" * (pad % len(fill))
    return HEAD + body + TAIL


def frames_of(op, msg, sizes):
    """msg cut into fragments of the given sizes (the last takes the rest)."""
    out, i = [], 0
    cuts = []
    for s in sizes:
        cuts.append(msg[i:i + s])
        i += s
    cuts.append(msg[i:])
    for k, c in enumerate(cuts):
        out.append(build_frame(op if k == 0 else OP_CONT, c, fin=k == len(cuts) - 1))
    return b"".join(out)


def split_even(op, msg, n):
    """msg in n fragments of (nearly) equal size."""
    step = max(1, -(-len(msg) // n))
    return frames_of(op, msg, [step] * (n - 1))


# =========================================================== 1. framing

LENGTHS = [0, 125, 126, 127, 128, 65535, 65536, MAX]
SEND_MODES = ["whole", "bytewise", "chunked"]


def _len_cases():
    out = []
    for sec, op, name in ((1, OP_TEXT, "text"), (2, OP_BINARY, "binary")):
        for k, n in enumerate(LENGTHS, 1):
            for mode in SEND_MODES:
                if mode == "bytewise" and n > 128:
                    continue  # one write per byte: small frames only
                out.append(pytest.param(op, n, mode, id="1.%d.%d-%s-%d-%s" % (sec, k, name, n, mode)))
    return out


@pytest.mark.parametrize("op,n,mode", _len_cases())
def test_1_payload_lengths(pair, op, n, mode):
    msg = relay_msg(n) if n else b""
    frame = build_frame(op, msg)
    if mode == "whole":
        pair.a.send_raw(frame)
    elif mode == "bytewise":
        send_paced(pair.a, frame, 1)
    else:
        send_paced(pair.a, frame, 997)
    if n == 0:
        f = pair.a.next_frame()
        assert f.opcode == OP_TEXT and f.payload == INVALID_JSON, f
        pair.b.silent(0.2)
    else:
        pair.relayed(msg)


# What the server writes: relayed messages whose length on the wire sits
# on each length-encoding boundary (7-bit, 16-bit, 64-bit).
@pytest.mark.parametrize("out_len", [125, 126, 65535, 65536, 65537],
                         ids=lambda n: "1.3.%s-server-length-%d" % ({125: 1, 126: 2, 65535: 3, 65536: 4, 65537: 5}[n], n))
def test_1_server_length_encoding(pair, out_len):
    msg = relay_msg(out_len - (len(FROM) - 1))
    pair.a.send_frame(OP_TEXT, msg)
    raw_len = out_len
    f = pair.b.next_frame()
    assert len(f.payload) == raw_len and f.payload == msg[:-1] + FROM, f


def test_1_4_1_unmasked_client_frame_1002(ws):
    ws.send_frame(OP_TEXT, b'{"type":"ping","timestamp":1}', mask=False)
    expect_fail(ws, 1002)


def test_1_4_2_length_with_high_bit_1002(ws):
    ws.send_raw(bytes([0x81, 0xFF]) + struct.pack("!Q", 1 << 63 | 5) + b"\0\0\0\0" + b"x" * 5)
    expect_fail(ws, 1002)


# ======================================================= 2. pings/pongs

PING_CASES = [
    ("2.1-empty", b"", 0),
    ("2.2-text-payload", b"Hello, world!", 0),
    ("2.3-binary-payload", bytes([0x00, 0xFF, 0xFE, 0xFD, 0xFC, 0xFB, 0x00, 0xFF]), 0),
    ("2.4-binary-125", bytes(range(125)), 0),
    ("2.4.2-bytes-fe-125", b"\xfe" * 125, 0),
    ("2.6-125-bytewise", b"\xfe" * 125, 1),
    ("2.6.2-125-chunks-of-7", bytes(range(125)), 7),
]


@pytest.mark.parametrize("payload,chunk", [pytest.param(p, c, id=i) for i, p, c in PING_CASES])
def test_2_ping_echoed_in_pong(ws, payload, chunk):
    frame = build_frame(OP_PING, payload)
    if chunk:
        send_paced(ws, frame, chunk)
    else:
        ws.send_raw(frame)
    expect_pong(ws, payload)
    ws.silent(0.1)


@pytest.mark.parametrize("n", [126, 127, 1000, 65536], ids=lambda n: "2.5-ping-%d" % n)
def test_2_5_ping_over_125_1002(ws, n):
    ws.send_refusable(build_frame(OP_PING, b"p" * n))
    expect_fail(ws, 1002)


@pytest.mark.parametrize("payload", [b"", b"unsolicited", bytes(range(125))],
                         ids=["2.7-empty", "2.8-payload", "2.8.2-125"])
def test_2_unsolicited_pong_ignored(ws, payload):
    ws.send_raw(build_frame(OP_PONG, payload) + build_frame(OP_PING, b"after"))
    expect_pong(ws, b"after")  # and nothing answered the pong
    ws.silent(0.1)


def test_2_9_pong_then_ping(ws):
    ws.send_raw(build_frame(OP_PONG, b"x" * 125) + build_frame(OP_PING, b"ping payload"))
    expect_pong(ws, b"ping payload")


def test_2_5_2_pong_over_125_1002(ws):
    ws.send_frame(OP_PONG, b"p" * 126)
    expect_fail(ws, 1002)


@pytest.mark.parametrize("paced", [False, True], ids=["2.10-10-pings-at-once", "2.11-10-pings-paced"])
def test_2_ten_pings_in_order(ws, paced):
    payloads = [("payload-%d" % i).encode() for i in range(10)]
    frames = [build_frame(OP_PING, p) for p in payloads]
    if paced:
        for fr in frames:
            ws.send_raw(fr)
            time.sleep(0.01)
    else:
        ws.send_raw(b"".join(frames))
    for p in payloads:
        expect_pong(ws, p)
    ws.silent(0.1)


# ==================================================== 3. reserved bits


def _bad_frame(kind, rsv=0, op=None):
    """Frame bytes (after any valid preamble) for each frame type."""
    if kind == "text":
        return build_frame(OP_TEXT, b'{"type":"ping"}', rsv=rsv)
    if kind == "binary":
        return build_frame(OP_BINARY, b"\x00\xff", rsv=rsv)
    if kind == "cont":
        return build_frame(OP_TEXT, b'{"type":', fin=False) + build_frame(OP_CONT, b'"ping"}', rsv=rsv)
    if kind == "ping":
        return build_frame(OP_PING, b"rsv", rsv=rsv)
    if kind == "pong":
        return build_frame(OP_PONG, b"rsv", rsv=rsv)
    if kind == "close":
        return build_frame(OP_CLOSE, close_payload(1000), rsv=rsv)
    raise ValueError(kind)


RSV_KINDS = ["text", "binary", "cont", "ping", "pong", "close"]


@pytest.mark.parametrize("kind,rsv", [
    pytest.param(k, r, id="3.%d.%d-%s-rsv%d" % (ki, r, k, r))
    for ki, k in enumerate(RSV_KINDS, 1) for r in range(1, 8)
])
def test_3_reserved_bits_1002(ws, kind, rsv):
    """A ping before is answered; the bad frame fails the connection and the
    ping right after it is never answered."""
    ws.send_frame(OP_PING, b"before")
    expect_pong(ws, b"before")
    ws.send_raw(_bad_frame(kind, rsv) + build_frame(OP_PING, b"after"))
    expect_fail(ws, 1002)


# ========================================================== 4. opcodes

BAD_OPS = [3, 4, 5, 6, 7, 11, 12, 13, 14, 15]


@pytest.mark.parametrize("opcode,payload", [
    pytest.param(o, p, id="4.%d.%d-opcode-%d-%s" % (1 if o < 8 else 2, (o - 2 if o < 8 else o - 10) * 2 - (0 if p else 1), o, "payload" if p else "empty"))
    for o in BAD_OPS for p in (b"", b"reserved opcode")
])
def test_4_reserved_opcode_1002(ws, opcode, payload):
    ws.send_frame(OP_PING, b"before")
    expect_pong(ws, b"before")
    ws.send_raw(build_frame(opcode, payload) + build_frame(OP_PING, b"after"))
    expect_fail(ws, 1002)


@pytest.mark.parametrize("opcode", BAD_OPS, ids=lambda o: "4.3-opcode-%d-inside-fragmented" % o)
def test_4_reserved_opcode_inside_fragmented_message_1002(ws, opcode):
    ws.send_raw(build_frame(OP_TEXT, b'{"type":', fin=False) + build_frame(opcode, b"x"))
    expect_fail(ws, 1002)


# ===================================================== 5. fragmentation


@pytest.mark.parametrize("op", [OP_PING, OP_PONG, OP_CLOSE], ids=["5.1-ping", "5.2-pong", "5.2.2-close"])
def test_5_fragmented_control_frame_1002(ws, op):
    first = close_payload(1000) if op == OP_CLOSE else b"frag"
    ws.send_raw(build_frame(op, first, fin=False) + build_frame(OP_CONT, b"ment", fin=True))
    expect_fail(ws, 1002)


FRAG_COUNTS = [2, 3, 4, 10, 100, 1000]


@pytest.mark.parametrize("op,n,paced", [
    pytest.param(op, n, paced, id="5.%d-%s-%d-fragments-%s" % (3 if op == OP_TEXT else 15, "text" if op == OP_TEXT else "binary", n, "paced" if paced else "at-once"))
    for op in (OP_TEXT, OP_BINARY) for n in FRAG_COUNTS for paced in (False, True)
])
def test_5_fragmented_message_reassembled(pair, op, n, paced):
    msg = relay_msg(max(MIN_RELAY + 10, n + 20), fill="\u00e9\u4e2d".encode())  # multi-byte content
    data = split_even(op, msg, n)
    if paced:
        # one write per frame
        for k in range(n):
            step = max(1, -(-len(msg) // n))
            piece = msg[k * step:(k + 1) * step] if k < n - 1 else msg[(n - 1) * step:]
            fr = build_frame(op if k == 0 else OP_CONT, piece, fin=k == n - 1)
            pair.a.send_raw(fr)
            if k % 10 == 0:
                time.sleep(0.001)
    else:
        pair.a.send_raw(data)
    pair.relayed(msg)


def test_5_6_ping_between_fragments(pair):
    msg = relay_msg(80)
    pair.a.send_raw(build_frame(OP_TEXT, msg[:30], fin=False) + build_frame(OP_PING, b"mid")
                    + build_frame(OP_CONT, msg[30:], fin=True))
    expect_pong(pair.a, b"mid")
    pair.relayed(msg)


def test_5_7_ping_between_fragments_paced(pair):
    msg = relay_msg(80)
    pair.a.send_frame(OP_TEXT, msg[:30], fin=False)
    pair.a.send_frame(OP_PING, b"mid")
    expect_pong(pair.a, b"mid")  # answered while the message is open
    pair.b.silent(0.1)
    pair.a.send_frame(OP_CONT, msg[30:], fin=True)
    pair.relayed(msg)


def test_5_8_pong_between_fragments_ignored(pair):
    msg = relay_msg(80)
    pair.a.send_raw(build_frame(OP_TEXT, msg[:30], fin=False) + build_frame(OP_PONG, b"mid")
                    + build_frame(OP_CONT, msg[30:], fin=True))
    pair.relayed(msg)
    pair.a.silent(0.1)


def test_5_19_pings_between_each_of_five_fragments(pair):
    msg = relay_msg(100)
    parts = [msg[i:i + 20] for i in range(0, 100, 20)]
    data = b""
    for k, p in enumerate(parts):
        data += build_frame(OP_TEXT if k == 0 else OP_CONT, p, fin=k == 4)
        if k < 4:
            data += build_frame(OP_PING, b"ping-%d" % k)
    pair.a.send_raw(data)
    for k in range(4):
        expect_pong(pair.a, b"ping-%d" % k)
    pair.relayed(msg)


@pytest.mark.parametrize("fin", [True, False], ids=["5.9-cont-fin-without-start", "5.10-cont-nofin-without-start"])
def test_5_continuation_without_start_1002(ws, fin):
    ws.send_frame(OP_CONT, b'{"type":"ping"}', fin=fin)
    expect_fail(ws, 1002)


def test_5_11_continuation_after_complete_message_1002(pair):
    msg = relay_msg(50)
    pair.a.send_raw(build_frame(OP_TEXT, msg) + build_frame(OP_CONT, b"tail"))
    pair.relayed(msg)
    expect_fail(pair.a, 1002)


@pytest.mark.parametrize("first,second,fin2", [
    (OP_TEXT, OP_TEXT, True), (OP_TEXT, OP_TEXT, False), (OP_TEXT, OP_BINARY, True),
    (OP_BINARY, OP_TEXT, True), (OP_BINARY, OP_BINARY, False),
], ids=["5.12-text-then-text", "5.13-text-then-text-nofin", "5.14-text-then-binary",
        "5.14.2-binary-then-text", "5.14.3-binary-then-binary-nofin"])
def test_5_new_message_inside_fragmented_1002(pair, first, second, fin2):
    pair.a.send_raw(build_frame(first, relay_msg(60)[:20], fin=False)
                    + build_frame(second, relay_msg(60), fin=fin2))
    expect_fail(pair.a, 1002)
    f = pair.b.next_frame()  # peer_left, never the message
    assert f.payload == b'{"type":"peer_left","peerId":"aa"}', f
    pair.b.silent(0.1)


@pytest.mark.parametrize("layout", ["first", "middle", "last", "all-but-one"],
                         ids=lambda s: "5.16-empty-fragments-%s" % s)
def test_5_empty_fragments(pair, layout):
    msg = relay_msg(60)
    pieces = {
        "first": [b"", msg],
        "middle": [msg[:10], b"", b"", msg[10:]],
        "last": [msg, b""],
        "all-but-one": [b"", b"", msg, b"", b""],
    }[layout]
    data = b"".join(build_frame(OP_TEXT if k == 0 else OP_CONT, p, fin=k == len(pieces) - 1)
                    for k, p in enumerate(pieces))
    pair.a.send_raw(data)
    pair.relayed(msg)


def test_5_16_5_all_fragments_empty(pair):
    pair.a.send_raw(build_frame(OP_TEXT, b"", fin=False) + build_frame(OP_CONT, b"", fin=False)
                    + build_frame(OP_CONT, b"", fin=True))
    f = pair.a.next_frame()
    assert f.opcode == OP_TEXT and f.payload == INVALID_JSON, f
    pair.b.silent(0.1)


def test_5_17_close_between_fragments(pair):
    msg = relay_msg(60)
    pair.a.send_raw(build_frame(OP_TEXT, msg[:20], fin=False)
                    + build_frame(OP_CLOSE, close_payload(1000)))
    expect_echo(pair.a, close_payload(1000))
    f = pair.b.next_frame()
    assert f.payload == b'{"type":"peer_left","peerId":"aa"}', f  # not the half message
    pair.b.silent(0.1)


def test_5_18_fragmented_ping_inside_fragmented_text_1002(ws):
    ws.send_raw(build_frame(OP_TEXT, b'{"a":', fin=False) + build_frame(OP_PING, b"p", fin=False))
    expect_fail(ws, 1002)


# ============================================================ 6. UTF-8

VALID_UTF8 = [
    ("hello-mixed", "Hello-\u00b5@\u00df\u00f6\u00e4\u00fc\u00e0\u00e1-UTF-8!!".encode()),
    ("kosme", "\u03ba\u1f79\u03c3\u03bc\u03b5".encode()),
    ("u0080", b"\xc2\x80"),
    ("u07ff", b"\xdf\xbf"),
    ("u0800", b"\xe0\xa0\x80"),
    ("ud7ff", b"\xed\x9f\xbf"),
    ("ue000", b"\xee\x80\x80"),
    ("ufffd", b"\xef\xbf\xbd"),
    ("uffff", b"\xef\xbf\xbf"),
    ("u10000", b"\xf0\x90\x80\x80"),
    ("u10ffff", b"\xf4\x8f\xbf\xbf"),
    ("g-clef-4byte", "\U0001d11e".encode()),
    ("emoji-mix", "a\U0001f600\u00e9\u4e2d\U0010fffd".encode()),
]

# name, bytes, fail-fast possible (the sequence is already invalid before
# the message ends: everything but truncation)
INVALID_UTF8 = [
    ("kosme-surrogate", "\u03ba\u1f79\u03c3\u03bc\u03b5".encode() + b"\xed\xa0\x80" + b"edited", True),
    ("overlong-2-c0-80", b"\xc0\x80", True),
    ("overlong-2-c1-bf", b"\xc1\xbf", True),
    ("overlong-3-e0-80-80", b"\xe0\x80\x80", True),
    ("overlong-3-e0-9f-bf", b"\xe0\x9f\xbf", True),
    ("overlong-4-f0-80-80-80", b"\xf0\x80\x80\x80", True),
    ("overlong-4-f0-8f-bf-bf", b"\xf0\x8f\xbf\xbf", True),
    ("overlong-slash-c0-af", b"\xc0\xaf", True),
    ("surrogate-d800", b"\xed\xa0\x80", True),
    ("surrogate-db7f", b"\xed\xad\xbf", True),
    ("surrogate-dc00", b"\xed\xb0\x80", True),
    ("surrogate-dfff", b"\xed\xbf\xbf", True),
    ("surrogate-pair-d800-dc00", b"\xed\xa0\x80\xed\xb0\x80", True),
    ("over-10ffff-f4-90", b"\xf4\x90\x80\x80", True),
    ("over-10ffff-f5", b"\xf5\x80\x80\x80", True),
    ("over-10ffff-f7", b"\xf7\xbf\xbf\xbf", True),
    ("5-byte-f8", b"\xf8\x88\x80\x80\x80", True),
    ("6-byte-fc", b"\xfc\x84\x80\x80\x80\x80", True),
    ("byte-fe", b"\xfe", True),
    ("byte-ff", b"\xff", True),
    ("lone-continuation-80", b"\x80", True),
    ("lone-continuation-bf", b"\xbf", True),
    ("lead-without-continuation-c2-41", b"\xc2\x41", True),
    ("e1-then-ascii", b"\xe1\x80\x41", True),
    ("truncated-c2", b"\xc2", False),
    ("truncated-e1-80", b"\xe1\x80", False),
    ("truncated-f0-90-80", b"\xf0\x90\x80", False),
    ("truncated-after-text", "\u03ba\u1f79\u03c3\u03bc".encode() + b"\xce", False),
]


def _utf8_msg(payload):
    return HEAD + payload + TAIL


@pytest.mark.parametrize("payload", [pytest.param(p, id="6.1.%d-valid-%s" % (k, n)) for k, (n, p) in enumerate(VALID_UTF8, 1)])
def test_6_1_valid_utf8_relayed(pair, payload):
    msg = _utf8_msg(payload)
    pair.a.send_frame(OP_TEXT, msg)
    pair.relayed(msg)


@pytest.mark.parametrize("payload", [pytest.param(p, id="6.2.%d-split-at-every-byte-%s" % (k, n)) for k, (n, p) in enumerate(VALID_UTF8, 1)])
def test_6_2_valid_utf8_split_at_every_byte(pair, payload):
    """Two fragments cut at every offset (so inside every multi-byte
    character), then one fragment per byte."""
    msg = _utf8_msg(payload)
    for i in range(1, len(msg)):
        pair.a.send_raw(build_frame(OP_TEXT, msg[:i], fin=False) + build_frame(OP_CONT, msg[i:]))
        pair.relayed(msg)
    pair.a.send_raw(split_even(OP_TEXT, msg, len(msg)))
    pair.relayed(msg)


@pytest.mark.parametrize("payload", [pytest.param(p, id="6.3.%d-invalid-%s" % (k, n)) for k, (n, p, _) in enumerate(INVALID_UTF8, 1)])
def test_6_3_invalid_utf8_one_frame_1007(pair, payload):
    pair.a.send_frame(OP_TEXT, _utf8_msg(payload))
    expect_fail(pair.a, 1007)
    f = pair.b.next_frame()
    assert f.payload == b'{"type":"peer_left","peerId":"aa"}', f


@pytest.mark.parametrize("payload", [pytest.param(p, id="6.3.%d.2-invalid-%s-fragmented-every-byte" % (k, n)) for k, (n, p, _) in enumerate(INVALID_UTF8, 1)])
def test_6_3_invalid_utf8_one_byte_fragments_1007(ws, payload):
    msg = _utf8_msg(payload)
    ws.send_raw(split_even(OP_TEXT, msg, len(msg)))
    expect_fail(ws, 1007)


FAILFAST = [(k, n, p) for k, (n, p, ff) in enumerate(INVALID_UTF8, 1) if ff]


@pytest.mark.parametrize("payload", [pytest.param(p, id="6.4.%d-failfast-first-fragment-%s" % (k, n)) for k, n, p in FAILFAST])
def test_6_4_failfast_in_first_fragment(ws, payload):
    """The final fragment is never sent: the 1007 must come from the bad
    fragment alone."""
    ws.send_frame(OP_TEXT, _utf8_msg(payload), fin=False)
    expect_fail(ws, 1007)


@pytest.mark.parametrize("payload", [pytest.param(p, id="6.4.%d.2-failfast-later-fragment-%s" % (k, n)) for k, n, p in FAILFAST])
def test_6_4_failfast_in_later_fragment(ws, payload):
    """Autobahn 6.4.1: valid first fragment, the invalid bytes in the
    second (not final): 1007 before the message ends."""
    ws.send_frame(OP_TEXT, b'{"type":"signal","d":"\xce\xba\xe1\xbd\xb9', fin=False)
    ws.silent(0.1)
    ws.send_frame(OP_CONT, payload + b"more", fin=False)
    expect_fail(ws, 1007)


@pytest.mark.parametrize("head,tail", [
    (b"\xf4", b"\x90\x80\x80"), (b"\xed", b"\xa0\x80"), (b"\xe0", b"\x80\x80"),
    (b"\xf0", b"\x80\x80\x80"), (b"\xed\x9f", b"\xc0"), (b"\xf4\x8f\xbf", b"\x41"),
], ids=["6.4.30-f4|90", "6.4.31-ed|a0", "6.4.32-e0|80", "6.4.33-f0|80", "6.4.34-ed9f|c0", "6.4.35-f48fbf|41"])
def test_6_4_invalid_only_across_the_fragment_boundary(ws, head, tail):
    """Each fragment is a valid prefix on its own; the second byte decides,
    in the second (non-final) fragment."""
    ws.send_frame(OP_TEXT, b'{"d":"' + head, fin=False)
    ws.silent(0.1)
    ws.send_frame(OP_CONT, tail + b"...", fin=False)
    expect_fail(ws, 1007)


@pytest.mark.parametrize("payload", [pytest.param(p, id="6.4.%d.3-truncated-waits-for-end-%s" % (k, n)) for k, (n, p, ff) in enumerate(INVALID_UTF8, 1) if not ff])
def test_6_4_truncated_fails_only_at_message_end(ws, payload):
    """A fragment may end inside a character: no failure until fin."""
    ws.send_frame(OP_TEXT, _utf8_msg(b"")[:-2] + payload, fin=False)
    ws.silent(0.2)
    ws.send_frame(OP_CONT, b"", fin=True)
    expect_fail(ws, 1007)


def test_6_4_40_invalid_inside_one_frame_sent_in_chunks(ws):
    """Autobahn 6.4.3: one frame, invalid bytes in the middle, sent in
    three writes. pm_ws checks a frame once it is complete (documented
    non-strict behaviour): the code is 1007."""
    frame = build_frame(OP_TEXT, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5" + b"\xf4\x90\x80\x80" + b"edited" * 100)
    send_paced(ws, frame, 12, pause=0.05)
    expect_fail(ws, 1007)


def test_6_5_binary_is_not_utf8_checked(ws):
    """Binary messages carry any bytes: invalid UTF-8 is no error (the role
    answers that it is not JSON)."""
    ws.send_frame(OP_BINARY, b"\xff\xfe\xed\xa0\x80\xc0")
    f = ws.next_frame()
    assert f.opcode == OP_TEXT and f.payload == INVALID_JSON, f


def test_6_5_2_binary_json_with_invalid_utf8_not_relayed_as_text(pair):
    """JSON is UTF-8: a binary frame that is not is answered as invalid
    JSON and never relayed (it would go out as a text frame)."""
    pair.a.send_frame(OP_BINARY, b'{"type":"signal","to":"bb","d":"\xff\xfe"}')
    f = pair.a.next_frame()
    assert f.opcode == OP_TEXT and f.payload == INVALID_JSON, f
    try:
        pair.b.silent(0.3)  # StrictWS fails on a text frame with invalid UTF-8
    except UnicodeDecodeError as e:
        raise AssertionError("server sent invalid UTF-8 in a text frame: %s" % e)


# ============================================================ 7. close


def test_7_1_1_message_then_close(pair):
    msg = relay_msg(40)
    pair.a.send_raw(build_frame(OP_TEXT, msg) + build_frame(OP_CLOSE, close_payload(1000)))
    pair.relayed(msg)
    expect_echo(pair.a, close_payload(1000))


def test_7_1_2_close_twice(ws):
    ws.send_raw(build_frame(OP_CLOSE, close_payload(1000)) + build_frame(OP_CLOSE, close_payload(1001)))
    expect_echo(ws, close_payload(1000))


def test_7_1_3_ping_after_close_not_answered(ws):
    ws.send_raw(build_frame(OP_CLOSE, close_payload(1000)) + build_frame(OP_PING, b"after"))
    expect_echo(ws, close_payload(1000))  # and no pong before the EOF


def test_7_1_4_data_after_close_ignored(pair):
    msg = relay_msg(40)
    pair.a.send_raw(build_frame(OP_CLOSE, close_payload(1000)) + build_frame(OP_TEXT, msg))
    expect_echo(pair.a, close_payload(1000))
    f = pair.b.next_frame()
    assert f.payload == b'{"type":"peer_left","peerId":"aa"}', f
    pair.b.silent(0.2)


def test_7_1_4_2_data_after_close_sent_later(pair):
    """Our close, its echo read, then more data on the half-closed socket:
    never delivered."""
    pair.a.send_close(1000)
    f = pair.a.next_frame()
    assert f.opcode == OP_CLOSE and f.payload == close_payload(1000), f
    try:
        pair.a.send_frame(OP_TEXT, relay_msg(40))
    except OSError:
        pass
    pair.a.wait_eof(3)
    f = pair.b.next_frame()
    assert f.payload == b'{"type":"peer_left","peerId":"aa"}', f
    pair.b.silent(0.2)


def test_7_1_5_close_inside_fragmented_message(pair):
    pair.a.send_raw(build_frame(OP_TEXT, relay_msg(60)[:30], fin=False)
                    + build_frame(OP_CLOSE, close_payload(1000)))
    expect_echo(pair.a, close_payload(1000))


def test_7_1_6_large_message_then_close(pair):
    msg = relay_msg(MAX)
    pair.a.send_raw(build_frame(OP_TEXT, msg) + build_frame(OP_CLOSE, close_payload(1000)))
    pair.relayed(msg)
    expect_echo(pair.a, close_payload(1000))


def test_7_3_1_empty_close_answered_empty(ws):
    ws.send_frame(OP_CLOSE, b"")
    expect_echo(ws, b"")


def test_7_3_2_one_byte_close_1002(ws):
    ws.send_frame(OP_CLOSE, b"\x03")
    expect_fail(ws, 1002)


@pytest.mark.parametrize("reason", [b"", b"Hello World!", b"*" * 123, "\u00e9\u4e2d\U0001f600".encode()],
                         ids=["7.3.3-no-reason", "7.3.4-reason", "7.3.5-reason-123", "7.3.5.2-utf8-reason"])
def test_7_3_close_with_reason_echoes_code(ws, reason):
    ws.send_close(1000, reason)
    expect_echo(ws, close_payload(1000))  # documented: code echoed, reason not


def test_7_3_6_close_payload_126_1002(ws):
    ws.send_close(1000, b"*" * 124)
    expect_fail(ws, 1002)


@pytest.mark.parametrize("reason", [
    "\u03ba\u1f79\u03c3\u03bc\u03b5".encode() + b"\xed\xa0\x80edited", b"\xff", b"ok\xc0\xaf", b"\xe2\x82",
], ids=["7.5.1-reason-surrogate", "7.5.2-reason-ff", "7.5.3-reason-overlong", "7.5.4-reason-truncated"])
def test_7_5_close_reason_invalid_utf8_1007(ws, reason):
    ws.send_close(1000, reason)
    expect_fail(ws, 1007)


VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CODES, ids=lambda c: "7.7-close-%d-echoed" % c)
def test_7_7_valid_close_code_echoed(ws, code):
    ws.send_close(code, b"reason")
    expect_echo(ws, close_payload(code))


@pytest.mark.parametrize("code", INVALID_CODES, ids=lambda c: "7.9-close-%d-1002" % c)
def test_7_9_invalid_close_code_1002(ws, code):
    ws.send_close(code)
    expect_fail(ws, 1002)


def test_7_13_1_server_closes_tcp_without_waiting(ws):
    """After echoing our close the server closes the TCP connection itself
    (we never close ours)."""
    ws.send_close(1000)
    f = ws.next_frame()
    assert f.opcode == OP_CLOSE, f
    elapsed, rest = ws.wait_eof(3)
    assert rest == b"", rest


def test_7_13_2_peer_sees_departure_once(pair):
    pair.a.send_close(1001)
    expect_echo(pair.a, close_payload(1001))
    f = pair.b.next_frame()
    assert f.payload == b'{"type":"peer_left","peerId":"aa"}', f
    pair.b.silent(0.2)


# =========================================================== 9. limits


@pytest.mark.parametrize("op,n", [
    pytest.param(op, n, id="9.%d.%d-%s-%d-one-frame" % (1 if op == OP_TEXT else 2, k, "text" if op == OP_TEXT else "binary", n))
    for op in (OP_TEXT, OP_BINARY) for k, n in enumerate([64 * 1024, 128 * 1024, MAX], 1)
])
def test_9_message_one_frame(pair, op, n):
    msg = relay_msg(n, fill=b"\xe4\xb8\xad" if n % 3 == 0 else b"y")
    assert len(msg) == n
    pair.a.send_frame(op, msg)
    pair.relayed(msg)


@pytest.mark.parametrize("op,size", [
    pytest.param(op, s, id="9.%d.%d-%s-max-in-%d-byte-fragments" % (3 if op == OP_TEXT else 4, k, "text" if op == OP_TEXT else "binary", s))
    for op in (OP_TEXT, OP_BINARY) for k, s in enumerate([64, 256, 1024, 4096, 16384, 65536, MAX // 2], 1)
])
def test_9_max_message_in_fragments(pair, op, size):
    msg = relay_msg(MAX)
    pair.a.send_raw(frames_of(op, msg, [size] * (MAX // size - 1)))
    pair.relayed(msg, timeout=10)


@pytest.mark.parametrize("op", [OP_TEXT, OP_BINARY], ids=["9.5.1-text-max-plus-1", "9.5.2-binary-max-plus-1"])
def test_9_5_over_max_one_frame_1009(pair, op):
    pair.a.send_refusable(build_frame(op, relay_msg(MAX + 1)))
    expect_fail(pair.a, 1009)
    f = pair.b.next_frame()
    assert f.payload == b'{"type":"peer_left","peerId":"aa"}', f


@pytest.mark.parametrize("n", [MAX + 1, 1 << 32, (1 << 63) - 1], ids=lambda n: "9.5.3-header-only-%d" % n)
def test_9_5_over_max_refused_from_header(ws, n):
    """Only the header announcing the frame is sent: the 1009 comes before
    any payload."""
    hdr = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", n) + b"\x01\x02\x03\x04"
    ws.send_raw(hdr)
    expect_fail(ws, 1009)


def test_9_5_4_over_max_in_fragments_1009(pair):
    msg = relay_msg(MAX + 1)
    pair.a.send_refusable(frames_of(OP_TEXT, msg, [4096] * (MAX // 4096)))
    expect_fail(pair.a, 1009)


def test_9_5_5_fragment_that_crosses_max_refused_from_header(ws):
    ws.send_frame(OP_TEXT, b"a" * (MAX - 10), fin=False)
    ws.silent(0.1)
    ws.send_raw(bytes([0x00, 0x80 | 11]) + b"\x01\x02\x03\x04")  # header of an 11-byte continuation
    expect_fail(ws, 1009)


@pytest.mark.parametrize("op", [OP_TEXT, OP_BINARY], ids=["9.7-1000-small-text-messages", "9.8-1000-small-binary-messages"])
def test_9_many_small_messages_in_order(pair, op):
    msgs = [relay_msg(60, fill=("%04d-" % i).encode()) for i in range(1000)]
    pair.a.send_raw(b"".join(build_frame(op, m) for m in msgs))
    for m in msgs:
        pair.relayed(m)


def test_9_9_pings_among_many_messages(pair):
    msgs = [relay_msg(50, fill=("%03d-" % i).encode()) for i in range(200)]
    data = b""
    for i, m in enumerate(msgs):
        data += build_frame(OP_TEXT, m)
        if i % 20 == 0:
            data += build_frame(OP_PING, b"%d" % i)
    pair.a.send_raw(data)
    for i in range(0, 200, 20):
        expect_pong(pair.a, b"%d" % i)
    for m in msgs:
        pair.relayed(m)


# ====================================================== extensions offered


def test_1_5_1_permessage_deflate_offer_declined(srv):
    """The server implements no extension: an offer gets a 101 without
    Sec-WebSocket-Extensions, and a compressed (RSV1) frame is then 1002."""
    resp, sock, reader, _ = raw_handshake(srv.port, "/", headers={
        "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits, x-webkit-deflate-frame"})
    try:
        assert resp.status == 101, resp
        assert "sec-websocket-extensions" not in resp.headers, resp.headers
        sock.sendall(build_frame(OP_TEXT, b"\xf2\x48\xcd\xc9\xc9\x07\x00", rsv=4))
        deadline = time.monotonic() + 5
        head = reader.read_exact(4, deadline)
        assert head == b"\x88\x02\x03\xea", head  # close 1002, unmasked, RSV 0
    finally:
        sock.close()


# ================================================================ interop

NODE_MODULES = Path(__file__).resolve().parents[1] / "node_modules"
WS_INTEROP_JS = Path(__file__).resolve().parent / "clients" / "ws_interop.js"

NODE_WS_CHECKS = {
    "upgrade-101-accept", "permessage-deflate-declined",
    "text-65535", "text-65536", "binary-65536", "text-%d" % MAX, "binary-%d" % MAX,
    "fragmented-text-200-in-2", "fragmented-text-%d-in-64" % MAX,
    "ping-0", "ping-125", "unsolicited-pong-ignored",
    "close-1000-echoed", "close-4999-echoed", "over-max-1009", "over-max-not-relayed",
    "invalid-utf8-1007", "no-client-errors",
}


def test_interop_npm_ws(srv):
    """npm ws 8.x: relays of boundary and large sizes, fragmented sends,
    pings, close codes; it fails on any non-conformant server frame."""
    if shutil.which("node") is None or not (NODE_MODULES / "ws").is_dir():
        pytest.skip("node or tests/node_modules/ws missing")
    r = subprocess.run(["node", str(WS_INTEROP_JS), "--port", str(srv.port), "--max", str(MAX),
                        "--timeout-ms", "30000"], capture_output=True, text=True, timeout=45)
    lines = r.stdout.strip().splitlines()
    assert lines, (r.returncode, r.stderr[-2000:])
    out = json.loads(lines[-1])
    failed = [c for c in out.get("checks", []) if not c["ok"]]
    assert not failed, failed
    assert out["ok"] is True and r.returncode == 0, (out, r.stderr[-2000:])
    names = {c["name"] for c in out["checks"]}
    assert NODE_WS_CHECKS <= names, NODE_WS_CHECKS - names
    assert out["extensions"] is None, out


def test_interop_python_websockets(srv):
    """python3-websockets 10.4 (asyncio), a strict client too, with
    permessage-deflate offered (its default)."""
    import websockets

    room = uuid.uuid4().hex
    url = "ws://127.0.0.1:%d/?room=%s" % (srv.port, room)

    async def joined(pid):
        ws = await websockets.connect(url, open_timeout=5, close_timeout=3, ping_interval=None,
                                      max_size=None, compression="deflate")
        await ws.send(json.dumps({"type": "join", "peerId": pid}))
        boot = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert boot["type"] == "bootstrap_peers", boot
        return ws

    async def relayed(b, msg):
        got = await asyncio.wait_for(b.recv(), 10)
        assert isinstance(got, str), "relay came as binary"
        want = msg[:-1] + FROM
        assert got.encode() == want, (len(got.encode()), len(want))

    async def run():
        a = await joined("aa")
        b = await joined("bb")
        try:
            assert json.loads(await asyncio.wait_for(a.recv(), 5)) == {"type": "peer_joined", "peerId": "bb"}
            assert a.extensions == [] and b.extensions == [], a.extensions
            assert "Sec-WebSocket-Extensions" not in a.response_headers, a.response_headers
            for n in (34, 125, 126, 127, 65535, 65536, 100000, MAX):
                msg = relay_msg(n, fill="\u00e9\U0001f600".encode())
                await a.send(msg.decode())
                await relayed(b, msg)
                await a.send(msg)  # bytes: a binary frame
                await relayed(b, msg)
            for n, k in ((200, 2), (MAX, 4), (MAX, 64), (4096, 256)):
                msg = relay_msg(n, fill="\u4e2d".encode())
                step = -(-len(msg) // k)
                # bytes pieces go out as one fragmented binary message;
                # str pieces (cut at characters) as a fragmented text one
                await a.send([msg[i:i + step] for i in range(0, len(msg), step)])
                await relayed(b, msg)
                text = msg.decode()
                await a.send([text[i:i + step // 3 + 1] for i in range(0, len(text), step // 3 + 1)])
                await relayed(b, msg)
            for payload in (b"", b"hello", bytes(range(125))):
                waiter = await a.ping(payload)
                await asyncio.wait_for(waiter, 5)
            await a.pong(b"unsolicited")
            msg = relay_msg(50)
            await a.send(msg.decode())
            await relayed(b, msg)
            # over the limit: the server closes with 1009
            await a.send(relay_msg(MAX + 1).decode())
            try:
                extra = await asyncio.wait_for(a.recv(), 5)
                raise AssertionError("got a message instead of close 1009: %r" % extra[:80])
            except websockets.ConnectionClosed as e:
                assert e.rcvd is not None and e.rcvd.code == 1009, e
            assert json.loads(await asyncio.wait_for(b.recv(), 5)) == {"type": "peer_left", "peerId": "aa"}
        finally:
            await asyncio.wait_for(a.close(), 5)
        for code in (1000, 1001, 3000, 4000, 4999):
            c = await websockets.connect("ws://127.0.0.1:%d/" % srv.port, open_timeout=5, close_timeout=3)
            await asyncio.wait_for(c.close(code, "r\u00e9ason"), 5)
            assert c.close_code == code, (code, c.close_code)
            assert c.close_rcvd is not None and c.close_rcvd.code == code and c.close_rcvd.reason == ""
        await asyncio.wait_for(b.close(), 5)
        assert b.close_code == 1000, b.close_code

    asyncio.run(run())


def test_9_5_6_refused_message_tail_does_not_reset(ws):
    """A client keeps writing the payload of a refused message for 0.3 s
    (less than the server's 2 s linger): the server must not reset it
    (pm_conn's lingering close: FIN, then input drained until EOF)."""
    ws.send_raw(bytes([0x82, 0x80 | 127]) + struct.pack("!Q", MAX + 1) + b"\x01\x02\x03\x04")
    chunk = b"\0" * 4096
    end = time.monotonic() + 0.3
    reset = None
    while time.monotonic() < end and reset is None:
        try:
            ws.sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError) as e:
            reset = e
        time.sleep(0.005)
    assert reset is None, "the server reset the connection: %r" % reset
    expect_fail(ws, 1009)
