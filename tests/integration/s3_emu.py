#!/usr/bin/python3
"""A small S3-shaped HTTP server for the chat role's backup tests.

    emu = S3Emulator(access_key="AKID", secret_key="...", region="eu-west-1")
    emu.url                      # http://127.0.0.1:PORT  (chat.s3_endpoint)
    emu.put_object("b", "k", data)
    rec = emu.wait_for(lambda r: r.method == "PUT" and r.status == 200, 10)
    emu.close()

Path-style only: ``/{bucket}/{key}``. PUT stores the body, GET returns it
(404 NoSuchKey, S3's XML error, when missing), HEAD and DELETE as S3 does.
Buckets exist on first use (there is no CreateBucket).

Every request's SigV4 signature is checked with botocore's own S3 signer
(S3SigV4Auth, service "s3", the configured region and credentials), the
approach of lambda_emu.SigV4Verifier: the request is rebuilt as a botocore
AWSRequest from the method, the path, the headers the client says it signed
(with their received values) and the body; botocore computes the canonical
request, string to sign and signature at the request's own X-Amz-Date and
they must equal what the client sent. lambda_emu's verifier is not reused
as is because it signs with SigV4Auth, whose canonical URI is the path
encoded twice (right for API Gateway and DynamoDB, wrong for S3). For S3
the canonical URI is the key's path encoded once: like S3, the emulator
decodes the received path and encodes it again with the AWS rule
(everything but A-Z a-z 0-9 - . _ ~ and "/" percent-encoded), so a client
that puts a "+" or "=" on the wire unencoded but signs it as sent fails,
as it would against S3.

Checked besides the signature (403 with S3's XML error, the request is not
carried out): x-amz-content-sha256 present (S3 requires it) and equal to
the SHA-256 of the body (XAmzContentSHA256Mismatch; UNSIGNED-PAYLOAD only
with allow_unsigned_payload), host, x-amz-date, x-amz-content-sha256 and
every other x-amz-* header signed, the access key, the credential scope
(date, region, "s3", aws4_request), X-Amz-Date within 15 minutes, and
X-Amz-Security-Token equal to the configured session token (or absent when
none is configured).

Every request is recorded (``emu.requests``, Record objects: method, path,
bucket, key, headers, body, body_len, verified, reason, status, error
code); tests inspect them. Faults: ``fail_next(n, status=500,
methods=None)`` answers the next n matching requests with an InternalError
(status 500) or SlowDown/ServiceUnavailable (503) without carrying them
out; ``hold(methods=None)`` keeps the answers to matching requests back
until ``release()`` (at most hold_limit seconds); ``delay`` (seconds) slows
every answer down.

Standard library plus Debian's python3-botocore only.
"""

import base64
import datetime
import hashlib
import hmac
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler
from urllib.parse import quote, unquote, urlsplit
from xml.sax.saxutils import escape

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from lambda_emu import EmuServer

DEFAULT_ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
DEFAULT_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
MAX_SKEW = 15 * 60  # S3's RequestTimeTooSkewed limit
SIG_MISMATCH = ("The request signature we calculated does not match the signature you provided. "
                "Check your key and signing method.")


def aws_uri_encode_path(path):
    """The AWS URI encoding of a decoded path, "/" kept."""
    return quote(path, safe="/~")


class S3SigV4Verifier:
    """Checks a received request's SigV4 Authorization header the way S3
    does. verify() -> (ok, error_code, reason, canonical_request)."""

    AUTH_RE = re.compile(
        r"^AWS4-HMAC-SHA256 Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]{64})$")

    def __init__(self, access_key, secret_key, region, token=None, service="s3",
                 max_skew=MAX_SKEW, allow_unsigned_payload=False):
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.token = token
        self.service = service
        self.max_skew = max_skew
        self.allow_unsigned_payload = allow_unsigned_payload

    def verify(self, method, raw_path, headers, body, now=None):
        """headers: an http.client.HTTPMessage (get / get_all / keys)."""
        auth = headers.get("Authorization")
        if not auth:
            return False, "AccessDenied", "missing Authorization header", None
        m = self.AUTH_RE.match(auth.strip())
        if not m:
            return False, "AuthorizationHeaderMalformed", "malformed Authorization header: %r" % auth, None
        credential, signed_given, sig_given = m.groups()
        parts = credential.split("/")
        if len(parts) != 5:
            return False, "AuthorizationHeaderMalformed", "malformed Credential %r" % credential, None
        akid, cdate, cregion, cservice, term = parts
        if akid != self.access_key:
            return False, "InvalidAccessKeyId", "unknown access key %r" % akid, None
        if cregion != self.region:
            return False, "AuthorizationHeaderMalformed", (
                "credential scoped to region %r, expected %r" % (cregion, self.region)), None
        if cservice != self.service or term != "aws4_request":
            return False, "AuthorizationHeaderMalformed", (
                "credential scope %s/%s, expected %s/aws4_request" % (cservice, term, self.service)), None
        amz_date = headers.get("X-Amz-Date")
        if not amz_date or not re.match(r"^\d{8}T\d{6}Z$", amz_date):
            return False, "AccessDenied", "missing or malformed X-Amz-Date %r" % amz_date, None
        if cdate != amz_date[:8]:
            return False, "SignatureDoesNotMatch", (
                "credential date %s does not match X-Amz-Date %s" % (cdate, amz_date)), None
        t = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
        skew = abs((now if now is not None else time.time()) - t.timestamp())
        if skew > self.max_skew:
            return False, "RequestTimeTooSkewed", "X-Amz-Date %s is %.0fs off" % (amz_date, skew), None
        token = headers.get("X-Amz-Security-Token")
        if self.token:
            if token != self.token:
                return False, "InvalidToken", "X-Amz-Security-Token missing or wrong: %r" % token, None
        elif token:
            return False, "InvalidToken", "X-Amz-Security-Token sent but no session token configured", None
        sha = headers.get("X-Amz-Content-SHA256")
        if sha is None:
            return False, "SignatureDoesNotMatch", (
                "Missing required header for this request: x-amz-content-sha256"), None
        if sha == UNSIGNED_PAYLOAD:
            if not self.allow_unsigned_payload:
                return False, "XAmzContentSHA256Mismatch", "UNSIGNED-PAYLOAD not accepted here", None
        elif sha != hashlib.sha256(body).hexdigest():
            return False, "XAmzContentSHA256Mismatch", (
                "x-amz-content-sha256 %s is not the SHA-256 of the %d-byte body (%s)"
                % (sha, len(body), hashlib.sha256(body).hexdigest())), None
        signed = signed_given.split(";")
        if signed != sorted(signed) or any(n != n.lower() for n in signed) or len(set(signed)) != len(signed):
            return False, "SignatureDoesNotMatch", "SignedHeaders not sorted/lower-case/unique: %s" % signed_given, None
        present = set(k.lower() for k in headers.keys())
        for need in ["host", "x-amz-date", "x-amz-content-sha256"] + sorted(
                n for n in present if n.startswith("x-amz-")):
            if need not in signed:
                return False, "AccessDenied", "header %s is not signed" % need, None
        host = headers.get("Host")
        if not host:
            return False, "InvalidRequest", "no Host header", None

        # S3: the key's path encoded once, from the decoded path.
        split = urlsplit(raw_path)
        canon_path = aws_uri_encode_path(unquote(split.path)) or "/"
        url = "http://%s%s" % (host, canon_path)
        if split.query:
            url += "?" + split.query
        req = AWSRequest(method=method, url=url, data=body)
        for name in signed:
            values = headers.get_all(name) or []
            if not values:
                return False, "SignatureDoesNotMatch", "signed header %s not in the request" % name, None
            for v in values:
                req.headers[name] = v  # HTTPHeaders appends: repeats are kept
        req.context["timestamp"] = amz_date
        signer = S3SigV4Auth(Credentials(self.access_key, self.secret_key, self.token or None),
                             self.service, self.region)
        canonical = signer.canonical_request(req)
        string_to_sign = signer.string_to_sign(req, canonical)
        expected = signer.signature(string_to_sign, req)
        expected_signed = signer.signed_headers(signer.headers_to_sign(req))
        if expected_signed != signed_given:
            return False, "SignatureDoesNotMatch", (
                "SignedHeaders %s, botocore signs %s" % (signed_given, expected_signed)), canonical
        if not hmac.compare_digest(expected, sig_given):
            return False, "SignatureDoesNotMatch", (
                "signature mismatch; canonical request should have been\n%s\nstring to sign\n%s"
                % (canonical, string_to_sign)), canonical
        return True, None, "", canonical


class Record:
    """One request the emulator received."""

    def __init__(self, method, path, bucket, key, headers, body):
        self.method = method
        self.path = path  # as on the wire
        self.bucket = bucket
        self.key = key  # decoded
        self.headers = headers  # dict, lower-case names (last value wins)
        self.body = body
        self.body_len = len(body)
        self.verified = False
        self.reason = ""  # why not verified
        self.canonical = None
        self.status = None  # the answer's status, set once it was sent
        self.code = None  # the S3 error code of the answer, if any
        self.injected = False  # answered by fail_next
        self.t = time.monotonic()
        self.answered = threading.Event()

    def __repr__(self):
        return "Record(%s %s, %d bytes, verified=%s%s, status=%s%s)" % (
            self.method, self.path, self.body_len, self.verified,
            "" if self.verified else " (%s)" % self.reason.split("\n")[0],
            self.status, "" if self.code is None else " " + self.code)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "AmazonS3"
    sys_version = ""

    def log_message(self, fmt, *args):
        pass

    @property
    def emu(self):
        return self.server.emu

    def _body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            # S3 wants Content-Length (or aws-chunked); p2pmesh sends it.
            self.emu.violations.append("%s %s: chunked request body" % (self.command, self.path))
            out = bytearray()
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline(3)
        n = self.headers.get("Content-Length")
        if n is None:
            if self.command == "PUT":
                self.emu.violations.append("PUT %s: no Content-Length" % self.path)
            return b""
        n = int(n)
        return self.rfile.read(n) if n > 0 else b""

    def _reply(self, rec, status, body=b"", headers=None, ctype=None, code=None):
        rec.code = code
        self.send_response(status)
        hdrs = {"x-amz-request-id": uuid.uuid4().hex[:16].upper(),
                "x-amz-id-2": base64.b64encode(uuid.uuid4().bytes).decode()}
        hdrs.update(headers or {})
        for k, v in hdrs.items():
            self.send_header(k, v)
        if ctype and (body or self.command == "HEAD"):
            self.send_header("Content-Type", ctype)
        if "Content-Length" not in hdrs:
            self.send_header("Content-Length", str(len(body)))
        if self.command == "HEAD":
            body = b""
        self._headers_buffer.append(b"\r\n" + body)
        try:
            self.flush_headers()
        finally:
            # set once the answer is on the wire (or could not be sent)
            rec.status = status
            rec.answered.set()
            self.emu._changed()

    def _error(self, rec, status, code, message, **extra):
        xml = ['<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code><Message>%s</Message>'
               % (code, escape(message))]
        for k, v in extra.items():
            xml.append("<%s>%s</%s>" % (k, escape(str(v)), k))
        xml.append("<RequestId>%s</RequestId></Error>" % uuid.uuid4().hex[:16].upper())
        self._reply(rec, status, "".join(xml).encode(), ctype="application/xml", code=code)

    def _handle(self):
        emu = self.emu
        body = self._body()
        split = urlsplit(self.path)
        parts = split.path.lstrip("/").split("/", 1)
        bucket = unquote(parts[0]) if parts[0] else None
        key = unquote(parts[1]) if len(parts) > 1 and parts[1] else None
        rec = Record(self.command, self.path, bucket, key,
                     {k.lower(): v for k, v in self.headers.items()}, body)
        ok, code, reason, canonical = emu.verifier.verify(self.command, self.path, self.headers, body)
        rec.verified, rec.reason, rec.canonical = ok, reason, canonical
        inject = emu._take_failure(self.command)
        emu._record(rec)

        gate = emu._gate_for(self.command)
        if gate is not None:
            gate.wait(emu.hold_limit)
        if emu.delay:
            time.sleep(emu.delay)

        if not ok:
            status = 400 if code in ("AuthorizationHeaderMalformed", "InvalidRequest") else 403
            return self._error(rec, status, code, SIG_MISMATCH if code == "SignatureDoesNotMatch" else reason,
                               Detail=reason.split("\n")[0])
        if inject is not None:
            rec.injected = True
            if inject == 503:
                return self._error(rec, 503, "SlowDown", "Please reduce your request rate.")
            return self._error(rec, inject, "InternalError",
                               "We encountered an internal error. Please try again.")
        if bucket is None or (key is None and self.command != "HEAD"):
            return self._error(rec, 400 if bucket else 403, "InvalidRequest" if bucket else "AccessDenied",
                               "path-style /{bucket}/{key} expected")
        md5 = self.headers.get("Content-MD5")
        if md5 is not None and md5 != base64.b64encode(hashlib.md5(body).digest()).decode():
            return self._error(rec, 400, "BadDigest",
                               "The Content-MD5 you specified did not match what we received.")

        if self.command == "PUT":
            emu.put_object(bucket, key, body)
            return self._reply(rec, 200, headers={"ETag": '"%s"' % hashlib.md5(body).hexdigest()})
        if self.command == "DELETE":
            emu.delete_object(bucket, key)
            return self._reply(rec, 204, headers={"Content-Length": "0"})
        obj = emu.get_object(bucket, key) if key is not None else None
        if obj is None:
            if self.command == "HEAD":
                return self._reply(rec, 404, code="NoSuchKey")
            return self._error(rec, 404, "NoSuchKey", "The specified key does not exist.", Key=key)
        data, mtime = obj
        return self._reply(rec, 200, data, ctype="application/octet-stream", headers={
            "ETag": '"%s"' % hashlib.md5(data).hexdigest(),
            "Last-Modified": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(mtime)),
            "Accept-Ranges": "bytes",
            "Content-Length": str(len(data))})

    do_GET = do_PUT = do_HEAD = do_DELETE = _handle

    def _not_allowed(self):
        self._body()
        rec = Record(self.command, self.path, None, None,
                     {k.lower(): v for k, v in self.headers.items()}, b"")
        self.emu._record(rec)
        self._error(rec, 405, "MethodNotAllowed", "The specified method is not allowed against this resource.")

    do_POST = do_PATCH = do_OPTIONS = _not_allowed


class S3Emulator:
    """The server (a thread) and its state; see the module docstring."""

    def __init__(self, access_key=DEFAULT_ACCESS_KEY, secret_key=DEFAULT_SECRET,
                 region="us-east-1", token=None, port=0, hold_limit=30.0,
                 allow_unsigned_payload=False):
        self.verifier = S3SigV4Verifier(access_key, secret_key, region, token=token,
                                        allow_unsigned_payload=allow_unsigned_payload)
        self.hold_limit = hold_limit
        self.delay = 0.0
        self.requests = []
        self.violations = []
        self._objects = {}
        self._cv = threading.Condition()
        self._fail = []  # [remaining, status, methods]
        self._holds = []  # [(methods, Event)]
        self._srv = EmuServer(self, _Handler, port)
        self.port = self._srv.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self._thread = threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="s3-emu")
        self._thread.start()

    # ------------------------------------------------------------ objects
    def put_object(self, bucket, key, data):
        with self._cv:
            self._objects[(bucket, key)] = (bytes(data), time.time())

    def get_object(self, bucket, key):
        """(data, mtime) or None."""
        with self._cv:
            return self._objects.get((bucket, key))

    def object_data(self, bucket, key):
        obj = self.get_object(bucket, key)
        return obj[0] if obj is not None else None

    def delete_object(self, bucket, key):
        with self._cv:
            self._objects.pop((bucket, key), None)

    # ------------------------------------------------------------- faults
    def fail_next(self, n, status=500, methods=None):
        """Answer the next n requests (of methods, e.g. ("GET",); None: any)
        with status (500 InternalError, 503 SlowDown), not carrying them out."""
        with self._cv:
            self._fail.append([n, status, None if methods is None else set(methods)])

    def failures_left(self):
        with self._cv:
            return sum(f[0] for f in self._fail)

    def _take_failure(self, method):
        with self._cv:
            for f in self._fail:
                if f[0] > 0 and (f[2] is None or method in f[2]):
                    f[0] -= 1
                    return f[1]
        return None

    def hold(self, methods=None):
        """Keep answers to matching requests back until release()."""
        with self._cv:
            self._holds.append((None if methods is None else set(methods), threading.Event()))

    def release(self):
        with self._cv:
            holds, self._holds = self._holds, []
        for _, ev in holds:
            ev.set()

    def _gate_for(self, method):
        with self._cv:
            for methods, ev in self._holds:
                if methods is None or method in methods:
                    return ev
        return None

    # ------------------------------------------------------------ records
    def _record(self, rec):
        with self._cv:
            self.requests.append(rec)
            self._cv.notify_all()

    def _changed(self):
        with self._cv:
            self._cv.notify_all()

    def records(self, pred=None):
        with self._cv:
            return [r for r in self.requests if pred is None or pred(r)]

    def wait_for(self, pred, timeout, answered=True, start=0):
        """The first record (from index start) matching pred (and, with
        answered, already answered: its status is set once the answer was
        written to the socket; the client may not have read it yet); AssertionError
        listing what arrived when none does within timeout."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for r in self.requests[start:]:
                    if (not answered or r.status is not None) and pred(r):
                        return r
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("S3 emulator: no matching request within %.1fs; got %r"
                                         % (timeout, self.requests[-20:]))
                self._cv.wait(min(remaining, 0.5))

    def count(self):
        with self._cv:
            return len(self.requests)

    # ------------------------------------------------------------- closing
    def close(self):
        self.release()
        self._srv.shutdown()
        self._srv.drop_connections()
        self._srv.server_close()
        self._thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def main(argv=None):
    """Run one emulator until SIGINT/SIGTERM (manual experiments)."""
    import argparse
    import signal

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--access-key", default=DEFAULT_ACCESS_KEY)
    ap.add_argument("--secret-key", default=DEFAULT_SECRET)
    ap.add_argument("--token")
    args = ap.parse_args(argv)
    emu = S3Emulator(args.access_key, args.secret_key, args.region, token=args.token, port=args.port)
    print("S3 emulator at %s (region %s)" % (emu.url, args.region), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    for r in emu.requests:
        print(r)
    emu.close()


if __name__ == "__main__":
    main()
