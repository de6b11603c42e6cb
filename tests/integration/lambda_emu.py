#!/usr/bin/python3
"""A local stand-in for the AWS services `p2pmesh --role=lambda` talks to.

One Emulator runs three HTTP/1.1 keep-alive servers on 127.0.0.1:

* the Lambda Runtime API (`runtime_api`, the AWS_LAMBDA_RUNTIME_API value),
  mounted at /2018-06-01 with the status codes and bodies of the Runtime
  Interface Emulator: `invoke()` queues an event and waits for the answer;
* an API Gateway Management API (`apigw_url`, ".../{stage}") serving
  POST/GET/DELETE @connections/{id}: it records the frames per connection,
  answers 410 for connections marked gone, and checks every request's SigV4
  signature with botocore's own signer (SigV4Verifier);
* a DynamoDB endpoint (`dynamodb_url`) with one table (hash key
  connectionId, GSI "realm-index" on realm + peerId), the JSON protocol of
  DynamoDB_20120810 and the expression subset the server uses, signatures
  checked the same way.

Library use (tests, benchmarks):

    emu = Emulator()
    proc = emu.popen([binary, "--role=lambda"], env=dict(os.environ, **emu.env()))
    emu.wait_ready(5)
    res = emu.invoke(connect_event("AbCdEf0123456g="))
    emu.close()

CLI: `lambda_emu.py serve --print-env` prints the environment a bootstrap
needs as one JSON line and runs until SIGTERM; with `--commands` it reads
JSON commands from stdin (see `main`).

Standard library plus Debian's python3-botocore only.
"""

import argparse
import base64
import collections
import copy
import datetime
import decimal
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

RUNTIME_PREFIX = "/2018-06-01"
MAX_RESPONSE = 6 * 1024 * 1024 + 100  # 6291556, what the RIE accepts
MAX_POST_DATA = 128 * 1024  # PostToConnection Data limit
DEFAULT_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
DEFAULT_TOKEN = "SESSIONTOKENEXAMPLE"
DOMAIN = "abcd1234.execute-api.eu-west-1.amazonaws.com"
API_ID = "abcd1234"
DDB_ERR = "com.amazonaws.dynamodb.v20120810#"
SIG_MISMATCH = "The request signature we calculated does not match the signature you provided."


def _json_bytes(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def now_ms():
    return int(time.time() * 1000)


def new_connection_id():
    """A connection id shaped like API Gateway's: 15 base64url chars + '='."""
    return base64.urlsafe_b64encode(os.urandom(11)).decode()


# ====================================================================== SigV4


class SigV4Verifier:
    """Checks the SigV4 Authorization header of a received request.

    botocore is the judge: the request is rebuilt as a botocore AWSRequest
    from the method, the path exactly as received, the headers the client
    says it signed (with their received values) and the body; botocore's
    SigV4Auth then computes the canonical request, string to sign and
    signature at the request's own X-Amz-Date, and the client's
    SignedHeaders and Signature must equal botocore's.  botocore derives the
    canonical URI as quote(remove_dot_segments(wire_path), safe='/~'), so a
    wire path /prod/@connections/AbC%3D is signed as
    /prod/%40connections/AbC%253D.
    """

    AUTH_RE = re.compile(
        r"^AWS4-HMAC-SHA256 Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]{64})$")

    def __init__(self, access_key, secret_key, token, region, service, max_skew=300):
        self.access_key = access_key
        self.secret_key = secret_key
        self.token = token
        self.region = region
        self.service = service
        self.max_skew = max_skew
        self.last_canonical = None

    def verify(self, method, raw_path, headers, body, now=None):
        """(ok, reason, canonical_request or None).  headers: an
        http.client.HTTPMessage (or anything with get/get_all/keys)."""
        auth = headers.get("Authorization")
        if not auth:
            return False, "missing Authorization header", None
        m = self.AUTH_RE.match(auth.strip())
        if not m:
            return False, "malformed Authorization header: %r" % auth, None
        credential, signed_given, sig_given = m.groups()
        parts = credential.split("/")
        if len(parts) != 5:
            return False, "malformed Credential %r" % credential, None
        akid, cdate, cregion, cservice, term = parts
        if akid != self.access_key:
            return False, "unknown access key %r" % akid, None
        if cregion != self.region:
            return False, "credential scoped to region %r, expected %r" % (cregion, self.region), None
        if cservice != self.service:
            return False, "credential scoped to service %r, expected %r" % (cservice, self.service), None
        if term != "aws4_request":
            return False, "credential scope must end in aws4_request", None
        amz_date = headers.get("X-Amz-Date")
        if not amz_date or not re.match(r"^\d{8}T\d{6}Z$", amz_date):
            return False, "missing or malformed X-Amz-Date %r" % amz_date, None
        if cdate != amz_date[:8]:
            return False, "credential date %s does not match X-Amz-Date %s" % (cdate, amz_date), None
        t = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
        skew = abs((now if now is not None else time.time()) - t.timestamp())
        if skew > self.max_skew:
            return False, "signature expired or not yet current (X-Amz-Date %s, skew %.0fs)" % (amz_date, skew), None
        token = headers.get("X-Amz-Security-Token")
        if self.token:
            if token != self.token:
                return False, "X-Amz-Security-Token missing or wrong: %r" % token, None
        elif token:
            return False, "X-Amz-Security-Token sent but no session token configured", None
        signed = signed_given.split(";")
        if signed != sorted(signed) or any(n != n.lower() for n in signed) or len(set(signed)) != len(signed):
            return False, "SignedHeaders not sorted/lower-case/unique: %s" % signed_given, None
        present = set(k.lower() for k in headers.keys())
        for need in ["host", "x-amz-date"] + sorted(n for n in present if n.startswith("x-amz-")):
            if need not in signed:
                return False, "header %s is not signed" % need, None
        sha = headers.get("X-Amz-Content-SHA256")
        if sha is not None and sha != hashlib.sha256(body).hexdigest():
            return False, "X-Amz-Content-SHA256 does not match the body", None

        host = headers.get("Host")
        if not host:
            return False, "no Host header", None
        req = AWSRequest(method=method, url="http://%s%s" % (host, raw_path), data=body)
        for name in signed:
            values = headers.get_all(name) or []
            if not values:
                return False, "signed header %s not in the request" % name, None
            for v in values:
                req.headers[name] = v  # HTTPHeaders appends: repeats are kept
        req.context["timestamp"] = amz_date
        signer = SigV4Auth(Credentials(self.access_key, self.secret_key, self.token or None),
                           self.service, self.region)
        canonical = signer.canonical_request(req)
        string_to_sign = signer.string_to_sign(req, canonical)
        expected = signer.signature(string_to_sign, req)
        expected_signed = signer.signed_headers(signer.headers_to_sign(req))
        self.last_canonical = canonical
        if expected_signed != signed_given:
            return False, "SignedHeaders %s, botocore signs %s" % (signed_given, expected_signed), canonical
        if not hmac.compare_digest(expected, sig_given):
            return False, ("signature mismatch; canonical request should have been\n%s\n"
                           "string to sign\n%s" % (canonical, string_to_sign)), canonical
        return True, "", canonical


# ============================================================== HTTP plumbing


class EmuServer(ThreadingHTTPServer):
    """A threaded HTTP server on 127.0.0.1 for an emulator (emu.violations
    collects handler exceptions) that tracks its open connections, so that
    drop_connections() can cut them (also used by s3_emu.py)."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, emu, handler, port=0):
        self.emu = emu
        self.conns = set()
        self.accepted = 0
        self._lock = threading.Lock()
        super().__init__(("127.0.0.1", port), handler)

    @property
    def port(self):
        return self.server_address[1]

    def process_request(self, request, client_address):
        with self._lock:
            self.conns.add(request)
            self.accepted += 1
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._lock:
            self.conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, socket.timeout, OSError)):
            return
        self.emu.violations.append("emulator exception: %r" % (exc,))
        super().handle_error(request, client_address)

    def drop_connections(self):
        with self._lock:
            conns = list(self.conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "lambda-emu"
    sys_version = ""

    def setup(self):
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def log_message(self, fmt, *args):
        pass

    @property
    def emu(self):
        return self.server.emu

    def read_body(self, limit=None):
        """The request body.  Chunked bodies are decoded but recorded as a
        violation (the runtime and AWS clients must send Content-Length)."""
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            self.emu.violations.append("%s %s: chunked request body" % (self.command, self.path))
            out = bytearray()
            for _ in range(1 << 20):
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                out += self.rfile.read(size)
                self.rfile.readline(3)
            return bytes(out)
        n = self.headers.get("Content-Length")
        if n is None:
            if self.command in ("POST", "PUT"):
                self.emu.violations.append("%s %s: no Content-Length" % (self.command, self.path))
            return b""
        return self.rfile.read(int(n)) if int(n) > 0 else b""

    def reply(self, status, body=b"", headers=None, ctype="application/json"):
        if isinstance(body, (dict, list)):
            body = _json_bytes(body)
        self.send_response(status)
        if status == 204:
            body = b""  # RFC 9110: no body and no Content-Length on a 204
        else:
            if body:
                self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        # head and body in one write: no Nagle/delayed-ACK stall between them
        self._headers_buffer.append(b"\r\n" + body)
        self.flush_headers()


# ================================================================ Runtime API


class Result:
    """The outcome of one invoke."""

    def __init__(self, kind, body=b"", error_type=None, request_id=None, elapsed=0.0,
                 deadline_ms=None, answered_ms=None):
        self.kind = kind  # 'response' | 'error' | 'timeout'
        self.body = body
        self.error_type = error_type
        self.request_id = request_id
        self.elapsed = elapsed
        self.deadline_ms = deadline_ms
        self.answered_ms = answered_ms

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "Result(%s, %r, error_type=%r, elapsed=%.3f)" % (
            self.kind, self.body[:300], self.error_type, self.elapsed)


class _Invocation:
    def __init__(self, body, deadline_ms, trace_id, arn):
        self.id = str(uuid.uuid4())
        self.body = body
        self.deadline_ms = deadline_ms
        self.trace_id = trace_id
        self.arn = arn
        self.state = "queued"  # queued -> delivered -> answered
        self.kind = None
        self.answer = None
        self.error_type = None
        self.answered_ms = None
        self.t_queued = time.monotonic()
        self.t_delivered = None
        self.t_answered = None
        self.done = threading.Event()


class _RuntimeHandler(_Handler):
    def do_GET(self):
        emu = self.emu
        emu.runtime_requests.append(("GET", self.path))
        if self.path != RUNTIME_PREFIX + "/runtime/invocation/next":
            return self.reply(404, {"errorMessage": "not found", "errorType": "NotFound"})
        inv = emu._next_invocation()
        if inv is None:  # emulator closing, or after /init/error
            if emu.init_error is not None:
                return self.reply(403, _state_error("InitError", "Ready"))
            return self.reply(500, {"errorMessage": "emulator shutting down", "errorType": "Runtime.Shutdown"})
        headers = {
            "Lambda-Runtime-Aws-Request-Id": inv.id,
            "Lambda-Runtime-Deadline-Ms": str(inv.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": inv.arn,
        }
        if inv.trace_id:
            headers["Lambda-Runtime-Trace-Id"] = inv.trace_id
        self.reply(200, inv.body, headers)

    def do_POST(self):
        emu = self.emu
        emu.runtime_requests.append(("POST", self.path))
        body = self.read_body()
        path = self.path
        etype = self.headers.get("Lambda-Runtime-Function-Error-Type")
        if path == RUNTIME_PREFIX + "/runtime/init/error":
            with emu._cv:
                if emu.first_next_ns is not None or emu.init_error is not None:
                    status = 403
                else:
                    status = 202
                    emu.init_error = _parse_json_or_raw(body)
                    emu.init_error_type = etype
                    emu.init_error_raw = body
                    emu._cv.notify_all()
            if status == 403:
                return self.reply(403, _state_error("Ready" if emu.first_next_ns else "InitError", "InitError"))
            return self.reply(202, {"status": "OK"})
        m = re.match(r"^%s/runtime/invocation/([^/]+)/(response|error)$" % re.escape(RUNTIME_PREFIX), path)
        if not m:
            return self.reply(404, {"errorMessage": "not found", "errorType": "NotFound"})
        rid, what = m.group(1), m.group(2)
        with emu._cv:
            inv = emu._invocations.get(rid)
            if inv is None or inv.state == "queued":
                status = 400
            elif inv.state == "answered":
                status = 403
            elif what == "response" and len(body) > MAX_RESPONSE:
                status = 413
            else:
                status = 202
                inv.state = "answered"
                inv.kind = what
                inv.answer = body
                inv.error_type = etype
                inv.t_answered = time.monotonic()
                inv.answered_ms = now_ms()
                if inv is emu._current:
                    emu._current = None
                inv.done.set()
                emu._cv.notify_all()
        if status == 400:
            return self.reply(400, {"errorMessage": "Invalid request ID", "errorType": "InvalidRequestID"})
        if status == 403:
            return self.reply(403, _state_error("InvocationResponseSent", "InvocationResponse"))
        if status == 413:
            return self.reply(413, {
                "errorMessage": "Exceeded maximum allowed payload size (%d bytes)." % MAX_RESPONSE,
                "errorType": "RequestEntityTooLarge"})
        return self.reply(202, {"status": "OK"})


def _state_error(frm, to):
    return {"errorType": "InvalidStateTransition",
            "errorMessage": "State transition from %s to %s failed for runtime. "
                            "Error: State transition is not allowed" % (frm, to)}


def _parse_json_or_raw(body):
    try:
        obj = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return {"_raw": body.decode("utf-8", "replace")}
    return obj if isinstance(obj, dict) else {"_raw": obj}


# ============================================================ execute-api


class _ApigwHandler(_Handler):
    def _route(self, method):
        emu = self.emu
        raw_path = self.path
        body = self.read_body()
        ok, reason, _ = emu._apigw_verifier.verify(method, raw_path, self.headers, body)
        if not ok:
            emu.sig_failures.append((method, raw_path, reason))
            if reason.startswith("X-Amz-Security-Token") or reason.startswith("unknown access key"):
                msg = "The security token included in the request is invalid."
            elif reason.startswith("missing Authorization"):
                msg = "Missing Authentication Token"
            else:
                msg = SIG_MISMATCH + " " + reason
            return self.reply(403, {"message": msg}, {"x-amzn-ErrorType": "ForbiddenException"})
        prefix = "/%s/" % emu.stage
        rest = raw_path[len(prefix):] if raw_path.startswith(prefix) else None
        m = re.match(r"^(@|%40)connections/([^/?]+)$", rest or "")
        if not m:
            emu.violations.append("%s %s: not an @connections path" % (method, raw_path))
            return self.reply(403, {"message": "Forbidden"}, {"x-amzn-ErrorType": "ForbiddenException"})
        if m.group(1) != "@":
            emu.violations.append("%s %s: '@' percent-encoded on the wire" % (method, raw_path))
        cid = unquote(m.group(2))
        with emu._lock:
            emu.api_requests.append((method, raw_path, cid))
            if method == "POST":
                emu.posts += 1
            delay = emu.delay_for.get(cid)
            status = emu.status_for.get(cid)
            gone = cid in emu.gone
        if delay:
            with emu._lock:
                emu.delayed_now += 1
                emu.delayed_max = max(emu.delayed_max, emu.delayed_now)
            time.sleep(delay)
            with emu._lock:
                emu.delayed_now -= 1
        if status is not None and status != 200:
            self._log(method, cid, status, body)
            names = {410: "GoneException", 413: "PayloadTooLargeException", 429: "LimitExceededException",
                     403: "ForbiddenException"}
            return self.reply(status, {"message": names.get(status, "Internal server error")},
                              {"x-amzn-ErrorType": names.get(status, "InternalServerErrorException")})
        if gone:
            self._log(method, cid, 410, body)
            return self.reply(410, {"message": "Gone"}, {"x-amzn-ErrorType": "GoneException"})
        if method == "POST":
            if len(body) > MAX_POST_DATA:
                self._log(method, cid, 413, body)
                return self.reply(413, {"message": "Request entity too large"},
                                  {"x-amzn-ErrorType": "PayloadTooLargeException"})
            with emu._cv:
                emu.frames.setdefault(cid, []).append(body)
                emu._cv.notify_all()
            self._log(method, cid, 200, body)
            return self.reply(200, b"")
        if method == "DELETE":
            with emu._cv:
                emu.deleted.append(cid)
                emu.gone.add(cid)
                emu._cv.notify_all()
            self._log(method, cid, 204, body)
            return self.reply(204)
        self._log(method, cid, 200, body)
        ts = datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        return self.reply(200, {"connectedAt": ts, "lastActiveAt": ts,
                                "identity": {"sourceIp": "198.51.100.7", "userAgent": "lambda-emu"}})

    def _log(self, method, cid, status, body):
        with self.emu._lock:
            self.emu.api_log.append((method, cid, status, body))

    def do_POST(self):
        self._route("POST")

    def do_DELETE(self):
        self._route("DELETE")

    def do_GET(self):
        self._route("GET")


# =============================================================== DynamoDB

RESERVED = set("""ABORT ACTION ADD ALL AND ATTRIBUTE BETWEEN BY CONDITION CONNECT CONNECTION COUNT
DATA DATE DELETE EXISTS FILTER FROM IN INDEX KEY NAME NOT OR REMOVE SET SIZE STATUS TABLE TIME
TIMESTAMP TTL TYPE USER VALUE VALUES""".split())


class DdbError(Exception):
    def __init__(self, etype, message, status=400, extra=None):
        super().__init__(message)
        self.etype = etype
        self.message = message
        self.status = status
        self.extra = extra or {}

    def body(self):
        out = {"__type": (self.etype if "#" in self.etype else DDB_ERR + self.etype),
               "message": self.message}
        out.update(self.extra)
        return out


def _validation(msg):
    return DdbError("ValidationException", msg)


_TOKEN_RE = re.compile(r"\s*(?:(#[A-Za-z0-9_]+)|(:[A-Za-z0-9_]+)|([A-Za-z_][A-Za-z0-9_]*)|(<>|<=|>=|[=<>(),+\-])|(\S))")


def _tokenize(text, what):
    out = []
    pos = 0
    text = text or ""
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m or m.end() == pos:
            break
        pos = m.end()
        name, val, ident, op, bad = m.groups()
        if bad is not None:
            raise _validation("Invalid %s: Syntax error; token: \"%s\", near: \"%s\"" % (what, bad, text[max(0, pos - 5):pos + 5]))
        if name:
            out.append(("name", name))
        elif val:
            out.append(("value", val))
        elif ident:
            out.append(("ident", ident))
        else:
            out.append(("op", op))
    return out


class _Expr:
    """Parser and evaluator for one request's expressions (names/values
    substituted from ExpressionAttributeNames/Values, usage tracked)."""

    def __init__(self, names, values):
        self.names = names or {}
        self.values = values or {}
        self.used_names = set()
        self.used_values = set()

    # --------------------------------------------------------- tokens
    def _start(self, text, what):
        self.toks = _tokenize(text, what)
        self.i = 0
        self.what = what
        if not self.toks:
            raise _validation("Invalid %s: The expression can not be empty;" % what)

    def _peek(self, k=0):
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else (None, None)

    def _take(self):
        t = self._peek()
        self.i += 1
        return t

    def _kw(self, word):
        kind, v = self._peek()
        return kind == "ident" and v.upper() == word

    def _expect_op(self, op):
        kind, v = self._take()
        if kind != "op" or v != op:
            raise _validation("Invalid %s: Syntax error; expected %r, got %r" % (self.what, op, v))

    def _end(self):
        if self.i != len(self.toks):
            raise _validation("Invalid %s: Syntax error; token: \"%s\"" % (self.what, self._peek()[1]))

    def _path(self):
        kind, v = self._take()
        if kind == "name":
            if v not in self.names:
                raise _validation("Invalid %s: An expression attribute name used in the document path "
                                  "is not defined; attribute name: %s" % (self.what, v))
            self.used_names.add(v)
            return self.names[v]
        if kind == "ident":
            if v.upper() in RESERVED:
                raise _validation("Invalid %s: Attribute name is a reserved keyword; reserved keyword: %s"
                                  % (self.what, v))
            return v
        raise _validation("Invalid %s: Syntax error; expected an attribute path, got %r" % (self.what, v))

    def _value_ref(self):
        kind, v = self._take()
        if v not in self.values:
            raise _validation("Invalid %s: An expression attribute value used in expression is not defined; "
                              "attribute value: %s" % (self.what, v))
        self.used_values.add(v)
        return ("val", self.values[v])

    def _operand(self):
        kind, v = self._peek()
        if kind == "value":
            return self._value_ref()
        if kind in ("name", "ident"):
            return ("path", self._path())
        raise _validation("Invalid %s: Syntax error; token: %r" % (self.what, v))

    # ----------------------------------------------------- conditions
    def condition(self, text, what="ConditionExpression"):
        self._start(text, what)
        node = self._or()
        self._end()
        return node

    def _or(self):
        node = self._and()
        while self._kw("OR"):
            self._take()
            node = ("or", node, self._and())
        return node

    def _and(self):
        node = self._not()
        while self._kw("AND"):
            self._take()
            node = ("and", node, self._not())
        return node

    def _not(self):
        if self._kw("NOT"):
            self._take()
            return ("not", self._not())
        return self._primary()

    def _primary(self):
        kind, v = self._peek()
        if kind == "op" and v == "(":
            self._take()
            node = self._or()
            self._expect_op(")")
            return node
        if kind == "ident" and self._peek(1) == ("op", "("):
            fn = v
            self._take()
            self._take()
            if fn in ("attribute_exists", "attribute_not_exists"):
                p = self._path()
                self._expect_op(")")
                return (fn, p)
            if fn == "begins_with":
                a = self._operand()
                self._expect_op(",")
                b = self._operand()
                self._expect_op(")")
                return ("begins_with", a, b)
            raise _validation("Invalid %s: Invalid function name; function: %s" % (self.what, fn))
        left = self._operand()
        if self._kw("BETWEEN"):
            self._take()
            lo = self._operand()
            if not self._kw("AND"):
                raise _validation("Invalid %s: Syntax error; BETWEEN needs AND" % self.what)
            self._take()
            hi = self._operand()
            return ("between", left, lo, hi)
        kind, op = self._take()
        if kind != "op" or op not in ("=", "<>", "<", "<=", ">", ">="):
            raise _validation("Invalid %s: Syntax error; token: %r" % (self.what, op))
        return ("cmp", op, left, self._operand())

    # --------------------------------------------------------- update
    def update(self, text):
        """[('set', path, valexpr) | ('remove', path)]"""
        self._start(text, "UpdateExpression")
        actions = []
        seen = set()
        while self.i < len(self.toks):
            kind, v = self._take()
            word = v.upper() if kind == "ident" else None
            if word not in ("SET", "REMOVE", "ADD", "DELETE"):
                raise _validation("Invalid UpdateExpression: Syntax error; token: \"%s\"" % v)
            if word in ("ADD", "DELETE"):
                raise _validation("lambda_emu: UpdateExpression %s is not emulated" % word)
            if word in seen:
                raise _validation("Invalid UpdateExpression: The \"%s\" section can only be used once "
                                  "in an update expression;" % word)
            seen.add(word)
            while True:
                p = self._path()
                if word == "SET":
                    self._expect_op("=")
                    actions.append(("set", p, self._setval()))
                else:
                    actions.append(("remove", p))
                if self._peek() == ("op", ","):
                    self._take()
                    continue
                break
        paths = [a[1] for a in actions]
        dup = [p for p in paths if paths.count(p) > 1]
        if dup:
            raise _validation("Invalid UpdateExpression: Two document paths overlap with each other; "
                              "must remove or rewrite one of these paths; path one: [%s], path two: [%s]"
                              % (dup[0], dup[0]))
        return actions

    def _setval(self):
        a = self._setoperand()
        kind, v = self._peek()
        if kind == "op" and v in ("+", "-"):
            self._take()
            return ("arith", v, a, self._setoperand())
        return a

    def _setoperand(self):
        kind, v = self._peek()
        if kind == "ident" and v == "if_not_exists" and self._peek(1) == ("op", "("):
            self._take()
            self._take()
            p = self._path()
            self._expect_op(",")
            dflt = self._setval()
            self._expect_op(")")
            return ("if_not_exists", p, dflt)
        return self._operand()

    # ----------------------------------------------------- projection
    def projection(self, text):
        self._start(text, "ProjectionExpression")
        out = [self._path()]
        while self._peek() == ("op", ","):
            self._take()
            out.append(self._path())
        self._end()
        return out

    def check_all_used(self):
        unused_v = sorted(set(self.values) - self.used_values)
        if unused_v:
            raise _validation("Value provided in ExpressionAttributeValues unused in expressions: keys: {%s}"
                              % ", ".join(unused_v))
        unused_n = sorted(set(self.names) - self.used_names)
        if unused_n:
            raise _validation("Value provided in ExpressionAttributeNames unused in expressions: keys: {%s}"
                              % ", ".join(unused_n))


def _scalar(av):
    """(type, comparable) of a typed value."""
    if not isinstance(av, dict) or len(av) != 1:
        raise _validation("Supplied AttributeValue has more than one datatypes set, must contain exactly "
                          "one of the supported datatypes")
    (t, v), = av.items()
    if t == "N":
        try:
            return "N", decimal.Decimal(v)
        except (decimal.InvalidOperation, TypeError):
            raise _validation("The parameter cannot be converted to a numeric value: %s" % v)
    if t == "S":
        if not isinstance(v, str):
            raise _validation("Invalid S value")
        return "S", v
    if t == "B":
        return "B", base64.b64decode(v)
    return t, json.dumps(v, sort_keys=True)


def _validate_value(av, where):
    if not isinstance(av, dict) or len(av) != 1:
        raise _validation("Supplied AttributeValue is empty, must contain exactly one of the supported "
                          "datatypes (%s)" % where)
    (t, v), = av.items()
    if t not in ("S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS"):
        raise _validation("Supplied AttributeValue has an unknown datatype %s (%s)" % (t, where))
    if t == "N":
        _scalar(av)
    elif t == "BOOL" and not isinstance(v, bool):
        raise _validation("BOOL must be true or false (%s)" % where)
    elif t == "NULL" and v is not True:
        raise _validation("One or more parameter values were invalid: Null attribute value types must "
                          "have the value of true (%s)" % where)
    elif t in ("SS", "NS", "BS") and not v:
        raise _validation("One or more parameter values were invalid: An number set  may not be empty")
    elif t == "M":
        for k, sub in v.items():
            _validate_value(sub, where + "." + k)
    elif t == "L":
        for sub in v:
            _validate_value(sub, where)


def _fmt_num(d):
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


class DynamoTable:
    """One table with hash key `key` (S) and one GSI (hash, range: S)."""

    def __init__(self, name, key="connectionId", index="realm-index", index_hash="realm",
                 index_range="peerId"):
        self.name = name
        self.key = key
        self.index = index
        self.index_hash = index_hash
        self.index_range = index_range
        self.items = {}

    def in_index(self, item):
        h, r = item.get(self.index_hash), item.get(self.index_range)
        return h is not None and r is not None and "S" in h and "S" in r


class DynamoDB:
    """The operations and expression subset (see the module docstring)."""

    def __init__(self, table="p2pmesh-connections", page_size=1000):
        self.table = DynamoTable(table)
        self.page_size = page_size
        self.lock = threading.RLock()

    # ------------------------------------------------------- helpers
    def _table(self, body):
        if body.get("TableName") != self.table.name:
            raise DdbError("ResourceNotFoundException", "Requested resource not found")
        return self.table

    def _key(self, t, body):
        key = body.get("Key")
        if not isinstance(key, dict) or set(key) != {t.key}:
            raise _validation("The provided key element does not match the schema")
        av = key[t.key]
        if set(av) != {"S"}:
            raise _validation("The provided key element does not match the schema")
        if av["S"] == "":
            raise _validation("One or more parameter values are not valid. The AttributeValue for a key "
                              "attribute cannot contain an empty string value. Key: %s" % t.key)
        return av["S"]

    def _check_item(self, t, item):
        if not isinstance(item, dict):
            raise _validation("Item must be a map")
        for k, v in item.items():
            _validate_value(v, k)
        kv = item.get(t.key)
        if kv is None or set(kv) != {"S"}:
            raise _validation("One or more parameter values were invalid: Missing the key %s in the item"
                              % t.key if kv is None else
                              "One or more parameter values were invalid: Type mismatch for key %s "
                              "expected: S actual: %s" % (t.key, next(iter(kv))))
        if kv["S"] == "":
            raise _validation("One or more parameter values are not valid. The AttributeValue for a key "
                              "attribute cannot contain an empty string value. Key: %s" % t.key)
        for attr in (t.index_hash, t.index_range):
            v = item.get(attr)
            if v is None:
                continue
            if set(v) != {"S"}:
                raise _validation("One or more parameter values were invalid: Type mismatch for Index Key "
                                  "%s Expected: S Actual: %s IndexName: %s" % (attr, next(iter(v)), t.index))
            if v["S"] == "":
                raise _validation("One or more parameter values are not valid. A value specified for a "
                                  "secondary index key is not supported. The AttributeValue for a key "
                                  "attribute cannot contain an empty string value. IndexName: %s, "
                                  "IndexKey: %s" % (t.index, attr))

    def _eval(self, node, item):
        op = node[0]
        if op == "and":
            return self._eval(node[1], item) and self._eval(node[2], item)
        if op == "or":
            return self._eval(node[1], item) or self._eval(node[2], item)
        if op == "not":
            return not self._eval(node[1], item)
        if op == "attribute_exists":
            return item is not None and node[1] in item
        if op == "attribute_not_exists":
            return item is None or node[1] not in item
        if op == "begins_with":
            a, b = self._operand(node[1], item), self._operand(node[2], item)
            if a is None or b is None:
                return False
            (ta, va), (tb, vb) = _scalar(a), _scalar(b)
            return ta == tb and ta in ("S", "B") and va.startswith(vb)
        if op == "between":
            return (self._compare(">=", node[1], node[2], item) and
                    self._compare("<=", node[1], node[3], item))
        if op == "cmp":
            return self._compare(node[1], node[2], node[3], item)
        raise _validation("bad expression node %r" % (op,))

    def _operand(self, node, item):
        if node[0] == "val":
            return node[1]
        if item is None:
            return None
        return item.get(node[1])

    def _compare(self, op, left, right, item):
        a, b = self._operand(left, item), self._operand(right, item)
        if a is None or b is None:
            return op == "<>" and not (a is None and b is None)
        (ta, va), (tb, vb) = _scalar(a), _scalar(b)
        if ta != tb:
            return op == "<>"
        if op == "=":
            return va == vb
        if op == "<>":
            return va != vb
        if ta not in ("S", "N", "B"):
            raise _validation("Invalid ConditionExpression: Incorrect operand type for operator or "
                              "function; operator or function: %s, operand type: %s" % (op, ta))
        return {"<": va < vb, "<=": va <= vb, ">": va > vb, ">=": va >= vb}[op]

    def _condition(self, body, ex, item):
        text = body.get("ConditionExpression")
        if text is None:
            return None
        return ex.condition(text)

    def _check_condition(self, body, node, item):
        if node is not None and not self._eval(node, item):
            extra = {}
            if body.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and item is not None:
                extra = {"Item": copy.deepcopy(item)}
            raise DdbError("ConditionalCheckFailedException", "The conditional request failed", extra=extra)

    @staticmethod
    def _project(item, attrs):
        if attrs is None:
            return copy.deepcopy(item)
        return {a: copy.deepcopy(item[a]) for a in attrs if a in item}

    # ---------------------------------------------------- operations
    def handle(self, op, body):
        fn = getattr(self, "op_" + op, None)
        if fn is None:
            raise DdbError("com.amazon.coral.service#UnknownOperationException", "Unknown operation %s" % op)
        if not isinstance(body, dict):
            raise DdbError("com.amazon.coral.service#SerializationException", "body is not a JSON object")
        with self.lock:
            return fn(body)

    def op_PutItem(self, body):
        t = self._table(body)
        item = body.get("Item")
        self._check_item(t, item)
        ex = _Expr(body.get("ExpressionAttributeNames"), body.get("ExpressionAttributeValues"))
        node = self._condition(body, ex, None)
        ex.check_all_used()
        rv = body.get("ReturnValues", "NONE")
        if rv not in ("NONE", "ALL_OLD"):
            raise _validation("ReturnValues can only be ALL_OLD or NONE")
        cid = item[t.key]["S"]
        old = t.items.get(cid)
        self._check_condition(body, node, old)
        t.items[cid] = copy.deepcopy(item)
        return {"Attributes": copy.deepcopy(old)} if rv == "ALL_OLD" and old else {}

    def op_GetItem(self, body):
        t = self._table(body)
        cid = self._key(t, body)
        attrs = None
        ex = _Expr(body.get("ExpressionAttributeNames"), None)
        if body.get("ProjectionExpression"):
            attrs = ex.projection(body["ProjectionExpression"])
        ex.check_all_used()
        item = t.items.get(cid)
        return {"Item": self._project(item, attrs)} if item is not None else {}

    def op_DeleteItem(self, body):
        t = self._table(body)
        cid = self._key(t, body)
        ex = _Expr(body.get("ExpressionAttributeNames"), body.get("ExpressionAttributeValues"))
        node = self._condition(body, ex, None)
        ex.check_all_used()
        rv = body.get("ReturnValues", "NONE")
        if rv not in ("NONE", "ALL_OLD"):
            raise _validation("ReturnValues can only be ALL_OLD or NONE")
        old = t.items.get(cid)
        self._check_condition(body, node, old)
        t.items.pop(cid, None)
        return {"Attributes": copy.deepcopy(old)} if rv == "ALL_OLD" and old else {}

    def op_UpdateItem(self, body):
        t = self._table(body)
        cid = self._key(t, body)
        if "UpdateExpression" not in body:
            raise _validation("lambda_emu: UpdateItem without UpdateExpression (AttributeUpdates) is not emulated")
        ex = _Expr(body.get("ExpressionAttributeNames"), body.get("ExpressionAttributeValues"))
        actions = ex.update(body["UpdateExpression"])
        node = self._condition(body, ex, None)
        ex.check_all_used()
        for v in (body.get("ExpressionAttributeValues") or {}).values():
            _validate_value(v, "ExpressionAttributeValues")
        rv = body.get("ReturnValues", "NONE")
        if rv not in ("NONE", "ALL_OLD", "ALL_NEW", "UPDATED_OLD", "UPDATED_NEW"):
            raise _validation("Invalid ReturnValues %r" % rv)
        old = t.items.get(cid)
        self._check_condition(body, node, old)
        new = copy.deepcopy(old) if old is not None else {t.key: {"S": cid}}
        touched = []
        for a in actions:
            if a[1] == t.key:
                raise _validation("One or more parameter values were invalid: Cannot update attribute %s. "
                                  "This attribute is part of the key" % t.key)
            touched.append(a[1])
            if a[0] == "remove":
                new.pop(a[1], None)
            else:
                new[a[1]] = self._setvalue(a[2], old)
        self._check_item(t, new)
        t.items[cid] = new
        if rv == "ALL_OLD":
            return {"Attributes": copy.deepcopy(old)} if old else {}
        if rv == "ALL_NEW":
            return {"Attributes": copy.deepcopy(new)}
        if rv == "UPDATED_OLD":
            got = {k: copy.deepcopy(old[k]) for k in touched if old and k in old}
            return {"Attributes": got} if got else {}
        if rv == "UPDATED_NEW":
            got = {k: copy.deepcopy(new[k]) for k in touched if k in new}
            return {"Attributes": got} if got else {}
        return {}

    def _setvalue(self, node, old):
        kind = node[0]
        if kind == "val":
            return copy.deepcopy(node[1])
        if kind == "path":
            v = old.get(node[1]) if old else None
            if v is None:
                raise _validation("The provided expression refers to an attribute that does not exist in "
                                  "the item")
            return copy.deepcopy(v)
        if kind == "if_not_exists":
            if old is not None and node[1] in old:
                return copy.deepcopy(old[node[1]])
            return self._setvalue(node[2], old)
        if kind == "arith":
            a, b = self._setvalue(node[2], old), self._setvalue(node[3], old)
            if "N" not in a or "N" not in b:
                raise _validation("An operand in the update expression has an incorrect data type")
            da, db = decimal.Decimal(a["N"]), decimal.Decimal(b["N"])
            return {"N": _fmt_num(da + db if node[1] == "+" else da - db)}
        raise _validation("bad update operand")

    def _page(self, body, candidates, order_key, key_attrs):
        """Sort, resume after ExclusiveStartKey, cut at Limit/page_size."""
        candidates.sort(key=order_key, reverse=body.get("ScanIndexForward", True) is False)
        esk = body.get("ExclusiveStartKey")
        if esk is not None:
            if not isinstance(esk, dict) or set(esk) != set(key_attrs):
                raise _validation("The provided starting key is invalid: The provided key element does not "
                                  "match the schema")
            start = order_key(esk)
            rev = body.get("ScanIndexForward", True) is False
            candidates = [c for c in candidates if (order_key(c) < start if rev else order_key(c) > start)]
        limit = body.get("Limit")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise _validation("1 validation error detected: Value '%s' at 'limit' failed to satisfy "
                              "constraint: Member must have value greater than or equal to 1" % limit)
        n = min(limit or self.page_size, self.page_size)
        page = candidates[:n]
        more = len(candidates) > n or (limit is not None and len(page) == limit)
        lek = None
        if more and page:
            lek = {a: copy.deepcopy(page[-1][a]) for a in key_attrs}
        return page, lek

    def _finish(self, body, ex, page, lek, filt, attrs):
        out_items = [it for it in page if filt is None or self._eval(filt, it)]
        resp = {"Count": len(out_items), "ScannedCount": len(page)}
        if body.get("Select") != "COUNT":
            resp["Items"] = [self._project(it, attrs) for it in out_items]
        if lek is not None:
            resp["LastEvaluatedKey"] = lek
        return resp

    def op_Query(self, body):
        t = self._table(body)
        index = body.get("IndexName")
        if index is not None and index != t.index:
            raise _validation("The table does not have the specified index: %s" % index)
        if index is not None and body.get("ConsistentRead"):
            raise _validation("Consistent reads are not supported on global secondary indexes")
        if "KeyConditionExpression" not in body:
            raise _validation("Either the KeyConditions or KeyConditionExpression parameter must be specified "
                              "in the request.")
        hash_attr, range_attr = (t.index_hash, t.index_range) if index else (t.key, None)
        ex = _Expr(body.get("ExpressionAttributeNames"), body.get("ExpressionAttributeValues"))
        kc = ex.condition(body["KeyConditionExpression"], "KeyConditionExpression")
        conds = []

        def flatten(n):
            if n[0] == "and":
                flatten(n[1])
                flatten(n[2])
            else:
                conds.append(n)
        flatten(kc)
        hash_cond, range_cond = None, None
        for c in conds:
            path = c[2][1] if c[0] == "cmp" and c[2][0] == "path" else (
                c[1][1] if c[0] in ("between", "begins_with") and c[1][0] == "path" else None)
            if path == hash_attr and c[0] == "cmp" and c[1] == "=" and c[3][0] == "val" and hash_cond is None:
                hash_cond = c
            elif range_attr and path == range_attr and range_cond is None:
                range_cond = c
            else:
                raise _validation("Query key condition not supported")
        if hash_cond is None:
            raise _validation("Query condition missed key schema element: %s" % hash_attr)
        hv = hash_cond[3][1]
        if set(hv) != {"S"}:
            raise _validation("One or more parameter values were invalid: Condition parameter type does not "
                              "match schema type")
        if hv["S"] == "":
            raise _validation("One or more parameter values are not valid. The AttributeValue for a key "
                              "attribute cannot contain an empty string value. IndexName: %s, IndexKey: %s"
                              % (index, hash_attr) if index else
                              "One or more parameter values are not valid. The AttributeValue for a key "
                              "attribute cannot contain an empty string value. Key: %s" % hash_attr)
        filt = None
        if body.get("FilterExpression"):
            filt = ex.condition(body["FilterExpression"], "FilterExpression")
            keys = {hash_attr, range_attr}
            for p in _paths(filt):
                if p in keys:
                    raise _validation("Filter Expression can only contain non-primary key attributes: "
                                      "Primary key attribute: %s" % p)
        attrs = ex.projection(body["ProjectionExpression"]) if body.get("ProjectionExpression") else None
        ex.check_all_used()
        for v in (body.get("ExpressionAttributeValues") or {}).values():
            _validate_value(v, "ExpressionAttributeValues")
        if index:
            pool = [it for it in t.items.values() if t.in_index(it)]
            key_attrs = (t.key, t.index_hash, t.index_range)

            def order_key(it):
                return (it[t.index_range]["S"], it[t.key]["S"])
        else:
            pool = list(t.items.values())
            key_attrs = (t.key,)

            def order_key(it):
                return (it[t.key]["S"],)
        cands = [it for it in pool if self._eval(hash_cond, it) and (range_cond is None or self._eval(range_cond, it))]
        page, lek = self._page(body, cands, order_key, key_attrs)
        return self._finish(body, ex, page, lek, filt, attrs)

    def op_Scan(self, body):
        t = self._table(body)
        index = body.get("IndexName")
        if index is not None and index != t.index:
            raise _validation("The table does not have the specified index: %s" % index)
        ex = _Expr(body.get("ExpressionAttributeNames"), body.get("ExpressionAttributeValues"))
        filt = ex.condition(body["FilterExpression"], "FilterExpression") if body.get("FilterExpression") else None
        attrs = ex.projection(body["ProjectionExpression"]) if body.get("ProjectionExpression") else None
        ex.check_all_used()
        if index:
            pool = [it for it in t.items.values() if t.in_index(it)]
            key_attrs = (t.key, t.index_hash, t.index_range)
        else:
            pool = list(t.items.values())
            key_attrs = (t.key,)

        def order_key(it):
            return (it[t.key]["S"],)
        page, lek = self._page(dict(body, ScanIndexForward=True), pool, order_key, key_attrs)
        return self._finish(body, ex, page, lek, filt, attrs)

    def op_DescribeTable(self, body):
        t = self._table(body)
        return {"Table": {
            "TableName": t.name, "TableStatus": "ACTIVE", "ItemCount": len(t.items),
            "KeySchema": [{"AttributeName": t.key, "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"}
                                     for a in (t.key, t.index_hash, t.index_range)],
            "GlobalSecondaryIndexes": [{
                "IndexName": t.index, "IndexStatus": "ACTIVE",
                "KeySchema": [{"AttributeName": t.index_hash, "KeyType": "HASH"},
                              {"AttributeName": t.index_range, "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "ALL"}}]}}


def _paths(node):
    out = []
    if isinstance(node, tuple):
        if len(node) == 2 and node[0] == "path":
            return [node[1]]
        if node[0] in ("attribute_exists", "attribute_not_exists"):
            return [node[1]]
        for sub in node[1:]:
            out += _paths(sub)
    return out


class _DynamoHandler(_Handler):
    def do_POST(self):
        emu = self.emu
        body = self.read_body()
        rid = "".join("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[b % 36] for b in os.urandom(52))
        ok, reason, _ = emu._ddb_verifier.verify("POST", self.path, self.headers, body)
        if not ok:
            emu.sig_failures.append(("POST", self.path, reason))
            if reason.startswith("X-Amz-Security-Token") or reason.startswith("unknown access key"):
                err = DdbError("com.amazon.coral.service#UnrecognizedClientException",
                               "The security token included in the request is invalid.")
            elif reason.startswith("missing Authorization"):
                err = DdbError("com.amazon.coral.service#MissingAuthenticationTokenException",
                               "Request is missing Authentication Token")
            else:
                err = DdbError("com.amazon.coral.service#InvalidSignatureException",
                               SIG_MISMATCH + " " + reason)
            return self._answer(err.status, err.body(), rid)
        ctype = self.headers.get("Content-Type", "")
        target = self.headers.get("X-Amz-Target", "")
        if self.path != "/":
            emu.violations.append("DynamoDB request to path %r" % self.path)
        if ctype.split(";")[0].strip() != "application/x-amz-json-1.0":
            emu.violations.append("DynamoDB request with Content-Type %r" % ctype)
            err = DdbError("com.amazon.coral.service#SerializationException",
                           "Content-Type must be application/x-amz-json-1.0, got %r" % ctype)
            return self._answer(400, err.body(), rid)
        if not target.startswith("DynamoDB_20120810."):
            emu.violations.append("DynamoDB request with X-Amz-Target %r" % target)
            err = DdbError("com.amazon.coral.service#UnknownOperationException", "")
            return self._answer(400, err.body(), rid)
        op = target.split(".", 1)[1]
        try:
            parsed = json.loads(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            err = DdbError("com.amazon.coral.service#SerializationException", "Start of structure or map found where not expected.")
            return self._answer(400, err.body(), rid)
        with emu._lock:
            emu.ddb_ops.append((op, parsed))
            if op == "Scan":
                emu.scans += 1
            inject = None
            for i, f in enumerate(emu.ddb_faults):
                if f["op"] in (op, "*"):
                    inject = f
                    f["count"] -= 1
                    if f["count"] <= 0:
                        del emu.ddb_faults[i]
                    break
        if inject is not None:
            if inject.get("delay"):
                time.sleep(inject["delay"])
            if inject.get("status"):
                err = DdbError(inject["type"], inject.get("message", inject["type"]), inject["status"])
                return self._answer(err.status, err.body(), rid)
        try:
            resp = emu.dynamodb.handle(op, parsed)
            status = 200
        except DdbError as e:
            resp, status = e.body(), e.status
            with emu._lock:
                emu.ddb_errors.append((op, resp.get("__type", "").split("#")[-1], resp.get("message")))
        self._answer(status, resp, rid)

    def _answer(self, status, obj, rid):
        body = _json_bytes(obj)
        self.reply(status, body, {"x-amzn-RequestId": rid, "x-amz-crc32": str(zlib.crc32(body) & 0xFFFFFFFF)},
                   ctype="application/x-amz-json-1.0")


# =================================================================== events


def _clf_time(ms):
    return datetime.datetime.utcfromtimestamp(ms / 1000).strftime("%d/%b/%Y:%H:%M:%S +0000")


def _request_context(cid, route, event_type, source_ip="198.51.100.7", stage="prod",
                     domain=DOMAIN, api_id=API_ID, connected_at=None):
    t = now_ms()
    rid = base64.urlsafe_b64encode(os.urandom(11)).decode()
    return {
        "routeKey": route,
        "eventType": event_type,
        "extendedRequestId": rid,
        "requestTime": _clf_time(t),
        "messageDirection": "IN",
        "stage": stage,
        "connectedAt": connected_at or t,
        "requestTimeEpoch": t,
        "identity": {"sourceIp": source_ip, "userAgent": "Mozilla/5.0 (lambda-emu)"},
        "requestId": rid,
        "domainName": domain,
        "connectionId": cid,
        "apiId": api_id,
    }


def connect_event(cid, query=None, headers=None, source_ip="198.51.100.7", stage="prod"):
    """A $connect proxy event; query: dict of query parameters; headers:
    extra/overriding request headers (e.g. Origin, Sec-WebSocket-Protocol)."""
    hdrs = {
        "Host": DOMAIN,
        "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
        "X-Amzn-Trace-Id": "Root=1-%08x-%s" % (int(time.time()), os.urandom(12).hex()),
        "X-Forwarded-For": source_ip,
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
    }
    hdrs.update(headers or {})
    ev = {
        "headers": hdrs,
        "multiValueHeaders": {k: [v] for k, v in hdrs.items()},
        "requestContext": _request_context(cid, "$connect", "CONNECT", source_ip, stage),
        "isBase64Encoded": False,
    }
    if query:
        ev["queryStringParameters"] = dict(query)
        ev["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()}
    return ev


def message_event(cid, body, route="$default", stage="prod"):
    """A MESSAGE event; body: str (the text frame) or a dict (json-encoded)."""
    if not isinstance(body, str):
        body = json.dumps(body)
    ctx = _request_context(cid, route, "MESSAGE", stage=stage)
    ctx["messageId"] = base64.urlsafe_b64encode(os.urandom(11)).decode()
    return {"requestContext": ctx, "body": body, "isBase64Encoded": False}


def disconnect_event(cid, code=1001, reason="", stage="prod"):
    hdrs = {"Host": DOMAIN, "x-api-key": "", "X-Forwarded-For": "", "x-restapi": ""}
    ctx = _request_context(cid, "$disconnect", "DISCONNECT", stage=stage)
    ctx["disconnectStatusCode"] = code
    ctx["disconnectReason"] = reason
    return {"headers": hdrs, "multiValueHeaders": {k: [v] for k, v in hdrs.items()},
            "requestContext": ctx, "isBase64Encoded": False}


# ================================================================= Emulator


class Emulator:
    """Runtime API + execute-api + DynamoDB on 127.0.0.1 (see module doc).

    Recorded state (all plain attributes, safe to read from tests):
      runtime: first_next_ns, init_error / init_error_type, runtime_requests,
               results (list of Result in answer order)
      apigw:   frames {cid: [bytes]}, deleted [cid], gone {cid},
               api_log [(method, cid, status, body)], api_requests
               [(method, raw_path, cid)], posts (count), delayed_max (the
               most delay_for requests held at once)
      ddb:     ddb_ops [(op, body)], ddb_errors [(op, type, message)], scans
      all:     sig_failures [(method, path, reason)], violations [str]
    Knobs: gone, status_for {cid: status}, delay_for {cid: seconds},
           dynamodb.page_size, ddb_fault(...).
    """

    def __init__(self, access_key="AKIDEXAMPLE", secret_key=DEFAULT_SECRET, token=DEFAULT_TOKEN,
                 region="eu-west-1", stage="prod", table="p2pmesh-connections", page_size=1000,
                 function_name="p2pmesh-signaling", track_connections=True):
        self.access_key = access_key
        self.secret_key = secret_key
        self.token = token
        self.region = region
        self.stage = stage
        self.function_name = function_name
        self.track_connections = track_connections
        self._lock = threading.RLock()
        self._cv = threading.Condition(self._lock)
        self._closing = False
        # runtime
        self._queue = collections.deque()
        self._invocations = {}
        self._current = None
        self.first_next_ns = None
        self.next_calls = 0
        self.spawned_ns = None
        self.init_error = None
        self.init_error_type = None
        self.init_error_raw = None
        self.runtime_requests = []
        self.results = []
        # apigw
        self.frames = {}
        self.deleted = []
        self.gone = set()
        self.status_for = {}
        self.delay_for = {}
        self.delayed_now = self.delayed_max = 0
        self.api_log = []
        self.api_requests = []
        self.posts = 0
        # ddb
        self.dynamodb = DynamoDB(table, page_size)
        self.ddb_ops = []
        self.ddb_errors = []
        self.ddb_faults = []
        self.scans = 0
        # all
        self.sig_failures = []
        self.violations = []
        self._apigw_verifier = SigV4Verifier(access_key, secret_key, token, region, "execute-api")
        self._ddb_verifier = SigV4Verifier(access_key, secret_key, token, region, "dynamodb")
        self._servers = []
        self._threads = []
        self._rt = self._serve(_RuntimeHandler)
        self._api = self._serve(_ApigwHandler)
        self._ddb = self._serve(_DynamoHandler)
        self.runtime_api = "127.0.0.1:%d" % self._rt.port
        self.apigw_url = "http://127.0.0.1:%d/%s" % (self._api.port, stage)
        self.dynamodb_url = "http://127.0.0.1:%d" % self._ddb.port

    def _serve(self, handler):
        srv = EmuServer(self, handler)
        th = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        th.start()
        self._servers.append(srv)
        self._threads.append(th)
        return srv

    # ------------------------------------------------------- lifecycle
    def close(self):
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        for srv in self._servers:
            srv.shutdown()
            srv.drop_connections()
            srv.server_close()
        for th in self._threads:
            th.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def page_size(self):
        return self.dynamodb.page_size

    @page_size.setter
    def page_size(self, n):
        self.dynamodb.page_size = n

    @property
    def connections_accepted(self):
        """TCP connections accepted so far: {'runtime', 'apigw', 'dynamodb'}."""
        return {"runtime": self._rt.accepted, "apigw": self._api.accepted, "dynamodb": self._ddb.accepted}

    def env(self, **extra):
        """Environment variables a bootstrap sees in Lambda (strings)."""
        env = {
            "AWS_LAMBDA_RUNTIME_API": self.runtime_api,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_SESSION_TOKEN": self.token or "",
            "AWS_LAMBDA_FUNCTION_NAME": self.function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/" + self.function_name,
            "AWS_LAMBDA_LOG_STREAM_NAME": "2024/01/01/[$LATEST]" + uuid.uuid4().hex,
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "LAMBDA_TASK_ROOT": "/var/task",
            "LAMBDA_RUNTIME_DIR": "/var/runtime",
            "TZ": ":UTC",
        }
        if not self.token:
            del env["AWS_SESSION_TOKEN"]
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def popen(self, argv, env=None, **kw):
        """subprocess.Popen(argv, env=env, **kw), recording spawned_ns just
        before, so first_next_ns - spawned_ns is the init time."""
        self.spawned_ns = time.monotonic_ns()
        return subprocess.Popen(argv, env=env, **kw)

    # --------------------------------------------------------- runtime
    def _next_invocation(self):
        with self._cv:
            if self.init_error is not None:
                return None
            self.next_calls += 1
            if self.first_next_ns is None:
                self.first_next_ns = time.monotonic_ns()
                self._cv.notify_all()
            if self._current is not None and self._current.state == "delivered":
                self.violations.append("/next called again before answering %s" % self._current.id)
                return self._current  # what the RIE does
            while not self._queue and not self._closing:
                self._cv.wait(0.5)
            if self._closing:
                return None
            inv = self._queue.popleft()
            inv.state = "delivered"
            inv.t_delivered = time.monotonic()
            self._current = inv
            return inv

    def wait_ready(self, timeout=5.0):
        """True once the runtime made its first /next request."""
        with self._cv:
            return self._cv.wait_for(lambda: self.first_next_ns is not None, timeout)

    def wait_init_error(self, timeout=5.0):
        """The /init/error body (dict) once posted, else None."""
        with self._cv:
            self._cv.wait_for(lambda: self.init_error is not None, timeout)
            return self.init_error

    @property
    def init_ns(self):
        if self.first_next_ns is None or self.spawned_ns is None:
            return None
        return self.first_next_ns - self.spawned_ns

    def invoke(self, event, timeout=5.0, deadline_ms=None, trace_id=None):
        """Queue one event (dict or bytes) and wait for the runtime's answer.
        Returns a Result; kind 'timeout' if no answer within timeout."""
        body = event if isinstance(event, (bytes, bytearray)) else _json_bytes(event)
        ctx = event.get("requestContext") if isinstance(event, dict) else None
        route = ctx.get("routeKey") if isinstance(ctx, dict) else None
        cid = ctx.get("connectionId") if isinstance(ctx, dict) else None
        if deadline_ms is None:
            deadline_ms = now_ms() + 3000
        arn = "arn:aws:lambda:%s:012345678912:function:%s" % (self.region, self.function_name)
        inv = _Invocation(bytes(body), int(deadline_ms), trace_id, arn)
        t0 = time.monotonic()
        with self._cv:
            if self.track_connections and cid and route in ("$connect", "$disconnect"):
                # posting to a connection from its own $connect, or after
                # the socket closed, is a 410 in API Gateway
                self.gone.add(cid)
            self._invocations[inv.id] = inv
            self._queue.append(inv)
            self._cv.notify_all()
        answered = inv.done.wait(timeout)
        elapsed = time.monotonic() - t0
        if not answered:
            with self._cv:
                if inv.state == "queued":
                    try:
                        self._queue.remove(inv)
                    except ValueError:
                        pass
            res = Result("timeout", b"", None, inv.id, elapsed, deadline_ms)
        else:
            res = Result(inv.kind, inv.answer, inv.error_type, inv.id, elapsed, deadline_ms, inv.answered_ms)
            if self.track_connections and cid and route == "$connect" and inv.kind == "response":
                try:
                    status = json.loads(inv.answer.decode()).get("statusCode")
                except (ValueError, AttributeError, UnicodeDecodeError):
                    status = None
                if isinstance(status, int) and 200 <= status < 300:
                    with self._cv:
                        self.gone.discard(cid)
        with self._cv:
            self.results.append(res)
        return res

    # ----------------------------------------------------------- apigw
    def frames_json(self, cid):
        """Frames posted to cid so far, decoded as JSON."""
        with self._lock:
            raw = list(self.frames.get(cid, []))
        return [json.loads(b.decode("utf-8")) for b in raw]

    def wait_frames(self, cid, n, timeout=2.0):
        """The first n frames posted to cid (decoded JSON), waiting up to
        timeout; AssertionError listing what arrived otherwise."""
        with self._cv:
            ok = self._cv.wait_for(lambda: len(self.frames.get(cid, [])) >= n, timeout)
            got = list(self.frames.get(cid, []))
        if not ok:
            raise AssertionError("expected %d frames for %s within %.1fs, got %d: %r"
                                 % (n, cid, timeout, len(got), got))
        return [json.loads(b.decode("utf-8")) for b in got[:n]]

    def wait_deleted(self, cid, timeout=2.0):
        with self._cv:
            return self._cv.wait_for(lambda: cid in self.deleted, timeout)

    def posts_to(self, cid):
        """(status, body) of every POST to cid, accepted or not."""
        with self._lock:
            return [(s, b) for m, c, s, b in self.api_log if m == "POST" and c == cid]

    # ------------------------------------------------------------- ddb
    def ddb_fault(self, op, status=500, error_type="com.amazonaws.dynamodb.v20120810#InternalServerError",
                  message="Internal server error", count=1, delay=0.0):
        """Make the next `count` calls of op ('*' = any) fail with status
        (0: do not fail, just delay)."""
        with self._lock:
            self.ddb_faults.append({"op": op, "status": status, "type": error_type, "message": message,
                                    "count": count, "delay": delay})

    def item(self, cid):
        """The stored item (typed) of a connection id, or None."""
        with self.dynamodb.lock:
            it = self.dynamodb.table.items.get(cid)
            return copy.deepcopy(it)

    def items(self):
        with self.dynamodb.lock:
            return copy.deepcopy(list(self.dynamodb.table.items.values()))

    def expire_ttl(self, now=None, attr="ttl"):
        """Delete items whose ttl (epoch s) is before now, as DynamoDB TTL does."""
        now = time.time() if now is None else now
        with self.dynamodb.lock:
            items = self.dynamodb.table.items
            dead = [k for k, v in items.items() if "N" in v.get(attr, {}) and float(v[attr]["N"]) < now]
            for k in dead:
                del items[k]
            return dead


def plain(item):
    """A typed DynamoDB item as plain Python values (N -> int/float)."""
    def conv(av):
        (t, v), = av.items()
        if t == "N":
            d = decimal.Decimal(v)
            return int(d) if d == d.to_integral_value() else float(d)
        if t == "M":
            return {k: conv(x) for k, x in v.items()}
        if t == "L":
            return [conv(x) for x in v]
        if t == "NULL":
            return None
        return v
    return None if item is None else {k: conv(v) for k, v in item.items()}


# ====================================================================== CLI


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="lambda_emu.py",
        description="Local Lambda Runtime API + API Gateway @connections + DynamoDB emulator.")
    sub = ap.add_subparsers(dest="cmd")
    sp = sub.add_parser("serve", help="run the three endpoints until SIGTERM/SIGINT")
    sp.add_argument("--print-env", action="store_true",
                    help="print the bootstrap environment as one JSON line on stdout")
    sp.add_argument("--commands", action="store_true",
                    help="read JSON commands from stdin, one per line, answer one JSON line each: "
                         '{"invoke": EVENT, "timeout": 5} -> {"kind","body","error_type","elapsed"}; '
                         '{"frames": CID}; {"stats": true}; EOF ends')
    sp.add_argument("--region", default="eu-west-1")
    sp.add_argument("--stage", default="prod")
    sp.add_argument("--access-key", default="AKIDEXAMPLE")
    sp.add_argument("--secret-key", default=DEFAULT_SECRET)
    sp.add_argument("--token", default=DEFAULT_TOKEN)
    sp.add_argument("--table", default="p2pmesh-connections")
    args = ap.parse_args(argv)
    if args.cmd != "serve":
        ap.print_help()
        return 2
    emu = Emulator(access_key=args.access_key, secret_key=args.secret_key, token=args.token,
                   region=args.region, stage=args.stage, table=args.table)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    if args.print_env:
        env = emu.env()
        env["P2PMESH_SIGNALING_APIGW_ENDPOINT"] = emu.apigw_url
        env["P2PMESH_LAMBDA_DYNAMODB_ENDPOINT"] = emu.dynamodb_url
        env["P2PMESH_LAMBDA_DYNAMODB_TABLE"] = args.table
        print(json.dumps(env), flush=True)
    try:
        if args.commands:
            for line in sys.stdin:
                if stop.is_set():
                    break
                line = line.strip()
                if not line:
                    continue
                cmd = json.loads(line)
                if "invoke" in cmd:
                    r = emu.invoke(cmd["invoke"], timeout=cmd.get("timeout", 5.0))
                    out = {"kind": r.kind, "body": r.body.decode("utf-8", "replace"),
                           "error_type": r.error_type, "elapsed": r.elapsed}
                elif "frames" in cmd:
                    out = {"frames": [b.decode("utf-8", "replace") for b in emu.frames.get(cmd["frames"], [])]}
                else:
                    out = {"first_next_ns": emu.first_next_ns, "posts": emu.posts, "scans": emu.scans,
                           "sig_failures": len(emu.sig_failures), "connections": emu.connections_accepted}
                print(json.dumps(out), flush=True)
        else:
            while not stop.wait(0.5):
                pass
    finally:
        emu.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())


def join_two_peers(emu):
    """The smoke round trip of a runtime on emu: two connections open, join
    one realm, and the first is told of the second, with every AWS call
    correctly signed."""
    a, b = new_connection_id(), new_connection_id()
    for cid in (a, b):
        r = emu.invoke(connect_event(cid), timeout=5.0)
        assert r.kind == "response" and json.loads(r.body) == {"statusCode": 200}
    emu.invoke(message_event(a, json.dumps({"type": "join", "peerId": "aa01"})))
    emu.invoke(message_event(b, json.dumps({"type": "join", "peerId": "bb02"})))
    assert emu.wait_frames(a, 2, 5.0)[-1] == {"type": "peer_joined", "peerId": "bb02"}
    assert emu.sig_failures == []
