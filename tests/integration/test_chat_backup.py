"""The chat role's S3 backup of its SQLite database (chat.s3_sync and the
FaltuBaat S3_* variables; roles/chat/chat_backup.c, docs/chat.md,
spec "Scale and durability", reference section 8), against s3_emu.py:
a path-style S3 stand-in that checks every request's SigV4 signature
with botocore's S3 signer.

- restore at start when the database file is missing (GET before /ready
  turns 200), a missing object means a fresh database, any other failure
  keeps /ready at 503 and is retried (never starting empty);
- every chat.s3_interval and once more after SIGTERM: a consistent
  snapshot (a valid SQLite file holding every acknowledged message),
  uploaded with a signed PUT; failed uploads are logged and not fatal;
- configuration errors are one stderr line and exit code 2.

Every wait is bounded; no assertion bounds elapsed time.
"""

import os
import signal
import sqlite3
import subprocess
import time

import pytest

pytest.register_assert_rewrite("s3_emu")

import helpers  # noqa: E402
from chat_fixtures import PASSWORD, SECRET, Client, api, register, run  # noqa: E402
from helpers import http_get  # noqa: E402
from s3_emu import S3Emulator  # noqa: E402

AKID = "AKIDCHATBACKUPTEST01"
SKEY = "chat/backup+secret=0123456789abcdefghij"
TOKEN = "FwoGZXIvYXdzEJr//////////session+token/with=odd/chars"
REGION = "eu-west-1"
BUCKET = "chat-backups"
KEY = "some/path/chat.db"
OBJ_PATH = "/%s/%s" % (BUCKET, KEY)

# Names that must not leak into the servers from the test runner's own
# environment (they would change what a case configures).
AMBIENT = ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
           "AWS_REGION", "AWS_DEFAULT_REGION", "S3_SYNC_ENABLED", "S3_DB_BUCKET", "S3_DB_KEY",
           "S3_SYNC_INTERVAL", "DB_PATH", "DATABASE_URL", "PORT", "JWT_SECRET", "NODE_ENV",
           "RATE_LIMIT_MAX_REQUESTS", "RATE_LIMIT_WINDOW_MS")


@pytest.fixture(autouse=True)
def _no_ambient_env(monkeypatch):
    for name in AMBIENT:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def s3_factory():
    """make(region=REGION, token=None) -> a new S3Emulator for AKID/SKEY.
    Autouse, so it is set up before server_factory and torn down after it:
    the servers' shutdown uploads still reach their emulator. At teardown
    every request an emulator got must have been correctly signed unless
    the test set emu.expect_bad_signatures."""
    emus = []

    def make(region=REGION, token=None):
        emu = S3Emulator(AKID, SKEY, region, token=token)
        emu.expect_bad_signatures = False
        emus.append(emu)
        return emu

    yield make
    errors = []
    for emu in emus:
        emu.close()
        if emu.violations:
            errors.append("%s: %s" % (emu.url, emu.violations))
        if not emu.expect_bad_signatures:
            errors += ["%r\n%s" % (r, r.reason) for r in emu.requests if not r.verified]
    assert not errors, "S3 emulator: requests that failed verification or violations:\n" + "\n".join(errors)


@pytest.fixture
def s3(s3_factory):
    """The emulator of most tests (region REGION, no session token)."""
    return s3_factory()


# ------------------------------------------------------------- the server


class Chat:
    """A chat process started through conftest's server_factory (log format
    checked and the process stopped at teardown)."""

    def __init__(self, srv, db_path):
        self.srv = srv
        self.db_path = db_path

    @property
    def port(self):
        return self.srv.port

    def ws_url(self, token=None, path="/ws"):
        u = "ws://127.0.0.1:%d%s" % (self.port, path)
        if token is not None:
            u += "?token=" + token
        return u

    def api(self, method, path, body=None, token=None, headers=None, raw=None, timeout=10):
        return api(self.port, method, path, body=body, token=token, headers=headers, raw=raw,
                   timeout=timeout)

    def logs(self, event=None):
        return [l for l in self.srv.logs() if event is None or l.get("event") == event]

    def wait_log(self, event, timeout=10.0, pred=None):
        deadline = time.monotonic() + timeout
        while True:
            hits = [l for l in self.logs(event) if pred is None or pred(l)]
            if hits:
                return hits[0]
            if time.monotonic() >= deadline:
                raise AssertionError("no %r log line within %.0fs; log:\n%s"
                                     % (event, timeout, self.srv.stdout_text()[-4000:]))
            if not self.srv.alive():
                raise AssertionError("p2pmesh exited (%s) waiting for %r; log:\n%s\nstderr: %s"
                                     % (self.srv.proc.returncode, event,
                                        self.srv.stdout_text()[-4000:], self.srv.stderr_text()))
            time.sleep(0.05)

    def ready(self):
        r = http_get(self.port, "/ready", timeout=5)
        try:
            body = r.json()
        except ValueError:
            body = None
        return r.status, body

    def wait_ready(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            assert self.srv.alive(), ("exited", self.srv.proc.returncode, self.srv.stderr_text(),
                                      self.srv.stdout_text()[-3000:])
            last = self.ready()
            if last[0] == 200:
                return
            time.sleep(0.05)
        raise AssertionError("GET /ready not 200 within %.0fs (last %r); log:\n%s"
                             % (timeout, last, self.srv.stdout_text()[-3000:]))

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        return self.srv.stop(sig, timeout=timeout)


def server_env(secret=SKEY, token=None, extra=None):
    env = {"AWS_ACCESS_KEY_ID": AKID, "AWS_SECRET_ACCESS_KEY": secret}
    if token is not None:
        env["AWS_SESSION_TOKEN"] = token
    env.update(extra or {})
    return env


def chat_flags(db_path, s3, interval="2s", key=KEY, bucket=BUCKET, region=REGION):
    flags = [
        "--database.url=sqlite:%s" % db_path,
        "--jwt.secret=" + SECRET,
        "--chat.rate_max=0",
        "--chat.auth_rate_max=0",
        "--log.level=debug",
        "--shutdown.grace=20s",
        "--chat.s3_sync=true",
        "--chat.s3_endpoint=%s" % s3.url,
    ]
    if bucket is not None:
        flags.append("--chat.s3_bucket=%s" % bucket)
    if key is not None:
        flags.append("--chat.s3_key=%s" % key)
    if region is not None:
        flags.append("--chat.region=%s" % region)
    if interval is not None:
        flags.append("--chat.s3_interval=%s" % interval)
    return flags


def start_chat(server_factory, db_path, s3, *extra_flags, interval="2s", env=None, ready=True,
               flags=None):
    if flags is None:
        flags = chat_flags(db_path, s3, interval=interval)
    srv = server_factory(*(list(flags) + list(extra_flags)),
                         env=server_env() if env is None else env, role="chat")
    chat = Chat(srv, db_path)
    if ready:
        chat.wait_ready()
    return chat


# -------------------------------------------------------------- chatting


async def _send_messages(chat, token, bodies, room="general", prefix="c"):
    c = await Client.connect(chat, token, "sender")
    try:
        await c.send({"type": "join", "room": room})
        await c.expect(type="joined", room=room)
        acks = []
        for i, body in enumerate(bodies):
            cid = "%s-%d" % (prefix, i)
            await c.send({"type": "message", "room": room, "body": body, "client_id": cid})
            ack = await c.expect(type="ack", client_id=cid)
            assert isinstance(ack.get("id"), int), ack
            acks.append(ack)
        return acks
    finally:
        await c.close()


def send_messages(chat, token, bodies, prefix="c"):
    """Send bodies to "general" over the WebSocket, waiting for every ack."""
    return run(_send_messages(chat, token, bodies, prefix=prefix), timeout=30)


def login_ok(chat, username, password=PASSWORD):
    r = chat.api("POST", "/api/login", {"username": username, "password": password})
    assert r.status == 200, ("login", username, r)
    return r.json["token"]


# ------------------------------------------------------------- snapshots


def open_snapshot(data, path):
    """Write an uploaded object to path and read it with sqlite3:
    (integrity_check result, usernames, message bodies in id order)."""
    assert data[:16] == b"SQLite format 3\x00", "not an SQLite database: %r" % data[:32]
    path = str(path)
    with open(path, "wb") as f:
        f.write(data)
    con = sqlite3.connect(path, timeout=10)
    try:
        integrity = con.execute("PRAGMA integrity_check").fetchall()
        users = [r[0] for r in con.execute("SELECT username FROM users ORDER BY id")]
        bodies = [r[0] for r in con.execute("SELECT body FROM messages ORDER BY id")]
    finally:
        con.close()
    return integrity, users, bodies


def is_put(r, path=OBJ_PATH):
    return r.method == "PUT" and r.path == path


def is_get(r, path=OBJ_PATH):
    return r.method == "GET" and r.path == path


def wait_put_holding(s3, tmp_path, bodies, username, start, timeout=15.0, path=OBJ_PATH):
    """The first verified 200 PUT (from record index start) whose snapshot
    holds username and every body; every PUT seen on the way must be a
    valid database. Returns (record, bodies in it)."""
    deadline = time.monotonic() + timeout
    idx = start
    seen = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("no uploaded snapshot holding %r and %r within %.0fs; PUTs seen: %r"
                                 % (username, bodies, timeout, seen))
        try:
            rec = s3.wait_for(lambda r: is_put(r, path), remaining, start=idx)
        except AssertionError:
            continue
        idx = s3.requests.index(rec) + 1
        assert rec.verified, (rec, rec.reason)
        if rec.status != 200:
            seen.append((rec, None))
            continue
        integrity, users, got = open_snapshot(rec.body, tmp_path / ("put-%d.db" % idx))
        assert integrity == [("ok",)], integrity
        seen.append((rec, users, got))
        if username in users and all(b in got for b in bodies):
            return rec, got


def make_backup(server_factory, s3, tmp_path, username, bodies):
    """Run a server on a fresh database (the restore GET finds nothing),
    register username, send bodies, stop it with SIGTERM: the object in the
    emulator is then its shutdown snapshot. Returns the snapshot bytes."""
    db = tmp_path / "origin" / "chat.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    chat = start_chat(server_factory, db, s3, interval="1h")
    token, _ = register(chat, username)
    send_messages(chat, token, bodies, prefix="origin")
    start = s3.count()
    assert chat.stop() == 0, chat.srv.stderr_text()
    rec = s3.wait_for(lambda r: is_put(r) and r.status == 200, 5, start=start)
    integrity, users, got = open_snapshot(rec.body, tmp_path / "origin-snapshot.db")
    assert integrity == [("ok",)] and username in users and got == list(bodies), (users, got)
    return rec.body


# ================================================================ tests


def test_periodic_upload_is_a_valid_snapshot_with_acked_messages(server_factory, s3, tmp_path):
    """Case 1: every chat.s3_interval a signed PUT at /BUCKET/KEY carries a
    consistent SQLite snapshot holding the user and the acked messages."""
    db = tmp_path / "chat.db"
    chat = start_chat(server_factory, db, s3, interval="2s")
    token, _ = register(chat, "alice")
    bodies = ["periodic one", "periodic two ✓", "periodic three"]
    acks = send_messages(chat, token, bodies)
    assert len(acks) == 3
    start = s3.count()
    rec, got = wait_put_holding(s3, tmp_path, bodies, "alice", start)
    assert rec.headers.get("content-length") == str(rec.body_len), rec.headers
    assert rec.body_len > 0
    # ... and the uploads go on: another one after that (periodic, not once)
    idx = s3.requests.index(rec) + 1
    s3.wait_for(lambda r: is_put(r) and r.status == 200, 10, start=idx)
    chat.wait_log("s3_backup_uploaded")
    assert chat.srv.alive()


def test_sigterm_uploads_every_acked_message_then_exits_0(server_factory, s3, tmp_path):
    """Case 2: with a long interval only the upload made after SIGTERM can
    hold the messages: exit code 0 and that one PUT holds them all."""
    db = tmp_path / "chat.db"
    chat = start_chat(server_factory, db, s3, interval="1h")
    token, _ = register(chat, "bob")
    first = ["before one", "before two"]
    send_messages(chat, token, first, prefix="a")
    more = ["last words %d" % i for i in range(5)]
    send_messages(chat, token, more, prefix="b")
    puts_before = s3.records(is_put)
    assert puts_before == [], "no upload expected before SIGTERM with a 1h interval: %r" % puts_before
    start = s3.count()
    rc = chat.stop(signal.SIGTERM, timeout=20)
    assert rc == 0, (rc, chat.srv.stderr_text(), chat.srv.stdout_text()[-3000:])
    puts = [r for r in s3.records()[start:] if is_put(r)]
    assert len(puts) == 1, puts
    rec = puts[0]
    assert rec.verified and rec.status == 200, (rec, rec.reason)
    integrity, users, got = open_snapshot(rec.body, tmp_path / "final.db")
    assert integrity == [("ok",)], integrity
    assert "bob" in users, users
    assert got == first + more, got
    assert any("shutdown" in l.get("msg", "") for l in chat.logs("s3_backup_uploaded")), \
        chat.logs("s3_backup_uploaded")


def test_sigterm_during_an_upload_uploads_once_more(server_factory, s3, tmp_path):
    """A periodic upload is in flight (held by the emulator) when more
    messages are acked and SIGTERM arrives: after it, one more upload holds
    everything, then the process exits 0."""
    db = tmp_path / "chat.db"
    chat = start_chat(server_factory, db, s3, interval="1s")
    token, _ = register(chat, "carol")
    early = ["early %d" % i for i in range(3)]
    send_messages(chat, token, early, prefix="e")
    s3.hold(methods=["PUT"])
    start = s3.count()
    held = s3.wait_for(lambda r: is_put(r), 10, answered=False, start=start)
    late = ["late %d" % i for i in range(3)]
    send_messages(chat, token, late, prefix="l")
    chat.srv.proc.send_signal(signal.SIGTERM)
    chat.wait_log("shutdown_started")
    assert held.status is None  # still held while the server shuts down
    s3.release()
    try:
        rc = chat.srv.proc.wait(20)
    except subprocess.TimeoutExpired:
        rc = None
    assert rc == 0, (rc, chat.srv.stdout_text()[-3000:])
    held_idx = s3.requests.index(held)
    puts = [r for r in s3.records()[held_idx:] if is_put(r)]
    assert len(puts) >= 2, ("no upload after the one in flight at SIGTERM", puts)
    assert all(r.verified and r.status == 200 for r in puts), puts
    integrity, users, got = open_snapshot(puts[-1].body, tmp_path / "final.db")
    assert integrity == [("ok",)]
    assert got == early + late, got


def test_restore_at_start_then_local_file_wins(server_factory, s3, tmp_path):
    """Case 3: no database file + an object: the object is fetched before
    /ready turns 200; its user logs in and its history is served. With the
    file present no GET is made."""
    bodies = ["from the backup 1", "from the backup 2", "from the backup 3"]
    data = make_backup(server_factory, s3, tmp_path, "dave", bodies)
    assert s3.object_data(BUCKET, KEY) == data

    db = tmp_path / "restored" / "chat.db"
    db.parent.mkdir()
    assert not db.exists()
    start = s3.count()
    chat = start_chat(server_factory, db, s3, interval="1h")
    gets = [r for r in s3.records()[start:] if is_get(r)]
    assert len(gets) == 1 and gets[0].status == 200 and gets[0].verified, gets
    assert db.exists()
    assert not os.path.exists(str(db) + ".restore")
    chat.wait_log("s3_restored")
    token = login_ok(chat, "dave")
    r = chat.api("GET", "/api/rooms/general/messages", token=token)
    assert r.status == 200, r
    assert [m["body"] for m in r.json["messages"]] == bodies, r.json
    assert all(m["from"] == "dave" for m in r.json["messages"]), r.json
    send_messages(chat, token, ["after restore"], prefix="ar")
    assert chat.stop() == 0

    # the local file is there now: no GET, its own content is served
    s3.put_object(BUCKET, KEY, b"not a database: must never be fetched")
    start = s3.count()
    chat = start_chat(server_factory, db, s3, interval="1h")
    token = login_ok(chat, "dave")
    r = chat.api("GET", "/api/rooms/general/messages", token=token)
    assert r.status == 200, r
    assert [m["body"] for m in r.json["messages"]] == bodies + ["after restore"], r.json
    assert [r for r in s3.records()[start:] if r.method == "GET"] == []
    assert chat.logs("s3_restored") == [] and chat.logs("s3_restore_none") == []
    assert chat.stop() == 0


def test_missing_object_starts_fresh(server_factory, s3, tmp_path):
    """Case 4: no file, no object: a fresh database and s3_restore_none."""
    db = tmp_path / "chat.db"
    chat = start_chat(server_factory, db, s3, interval="1h")
    gets = s3.records(is_get)
    assert len(gets) == 1 and gets[0].status == 404 and gets[0].code == "NoSuchKey", gets
    chat.wait_log("s3_restore_none")
    status, body = chat.ready()
    assert status == 200, body
    token, _ = register(chat, "erin")
    assert login_ok(chat, "erin")
    r = chat.api("GET", "/api/rooms/general/messages", token=token)
    assert r.status == 200 and r.json["messages"] == [], r


def test_s3_errors_at_start_keep_the_server_unready(server_factory, s3, tmp_path):
    """Case 5: while the restore GET fails (500), /ready is 503 with
    "database" failing and the API answers 503; it never starts empty;
    once S3 answers, the backup is restored and /ready turns 200."""
    bodies = ["kept safe 1", "kept safe 2"]
    make_backup(server_factory, s3, tmp_path, "frank", bodies)
    s3.fail_next(2, status=500, methods=["GET"])
    db = tmp_path / "restoring" / "chat.db"
    db.parent.mkdir()
    start = s3.count()
    chat = start_chat(server_factory, db, s3, interval="1h", ready=False)

    first = s3.wait_for(lambda r: is_get(r) and r.status == 500, 10, start=start)
    chat.wait_log("s3_restore_failed")
    status, body = chat.ready()
    assert status == 503 and "database" in (body or {}).get("failing", []), (status, body)
    r = chat.api("POST", "/api/register", {"username": "intruder", "password": PASSWORD,
                                            "gender": "male"})
    assert r.status == 503, r
    r = chat.api("POST", "/api/login", {"username": "frank", "password": PASSWORD})
    assert r.status == 503, r
    assert not db.exists(), "a database file exists while the restore has not succeeded"

    # second failure (a retry), still unready
    s3.wait_for(lambda r: is_get(r) and r.status == 500, 15, start=s3.requests.index(first) + 1)
    status, body = chat.ready()
    assert status == 503 and "database" in (body or {}).get("failing", []), (status, body)
    assert not db.exists()

    # S3 recovers: the next retry restores
    chat.wait_ready(timeout=20)
    gets = [r for r in s3.records()[start:] if is_get(r)]
    assert [g.status for g in gets] == [500, 500, 200], gets
    chat.wait_log("s3_restored")
    token = login_ok(chat, "frank")
    r = chat.api("GET", "/api/rooms/general/messages", token=token)
    assert r.status == 200 and [m["body"] for m in r.json["messages"]] == bodies, r
    r = chat.api("POST", "/api/login", {"username": "intruder", "password": PASSWORD})
    assert r.status == 401, r


def test_upload_failures_are_not_fatal(server_factory, s3, tmp_path):
    """Case 6: PUTs answered 500 are logged (s3_backup_failed), the server
    keeps serving, and a later PUT succeeds."""
    s3.fail_next(2, status=500, methods=["PUT"])
    db = tmp_path / "chat.db"
    chat = start_chat(server_factory, db, s3, interval="1s")
    token, _ = register(chat, "grace")
    send_messages(chat, token, ["while failing"], prefix="f")
    s3.wait_for(lambda r: is_put(r) and r.status == 500, 10)
    line = chat.wait_log("s3_backup_failed")
    assert line.get("level") == "error", line
    assert "500" in line.get("msg", ""), line
    assert chat.srv.alive()
    # still serving
    assert login_ok(chat, "grace")
    register(chat, "heidi")
    status, body = chat.ready()
    assert status == 200, body
    # a later upload succeeds and holds what was written meanwhile
    wait_put_holding(s3, tmp_path, ["while failing"], "heidi", 0, timeout=15)
    failed = [r for r in s3.records(is_put) if r.status == 500]
    assert len(failed) == 2, failed
    assert len(chat.logs("s3_backup_failed")) >= 2, chat.logs("s3_backup_failed")
    # the counters (docs: failures counted): read once the server has
    # logged the successful upload (the emulator's record is set when the
    # answer was sent, possibly before the server read it)
    chat.wait_log("s3_backup_uploaded")
    _, samples = helpers.get_metrics(chat.port)
    assert helpers.metric_sum(samples, "p2pmesh_chat_s3_failures_total") >= 2, samples
    assert helpers.metric_sum(samples, "p2pmesh_chat_s3_uploads_total") >= 1, samples


def test_every_request_is_signed_with_session_token(server_factory, s3_factory, tmp_path):
    """Case 7a: with AWS_SESSION_TOKEN, the restore GET, the periodic and
    the shutdown PUT all carry X-Amz-Security-Token (signed) and a
    signature botocore agrees with, plus the body's SHA-256."""
    emu = s3_factory(token=TOKEN)
    db = tmp_path / "chat.db"
    chat = start_chat(server_factory, db, emu, interval="1s", env=server_env(token=TOKEN))
    token, _ = register(chat, "ivan")
    emu.wait_for(lambda r: is_put(r) and r.status == 200, 10)
    send_messages(chat, token, ["signed"], prefix="s")
    assert chat.stop() == 0
    reqs = emu.records()
    assert [r.method for r in reqs][:1] == ["GET"] and len(reqs) >= 3, reqs
    for r in reqs:
        assert r.verified, (r, r.reason)
        assert r.headers.get("x-amz-security-token") == TOKEN, r.headers
        signed = r.headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
        assert {"host", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token"} <= set(signed), signed
        assert r.status in (200, 404), r
    assert all(r.path == OBJ_PATH for r in reqs), reqs
    assert "/%s/s3/aws4_request" % REGION in reqs[0].headers["authorization"]


def test_wrong_secret_gets_403_logged(server_factory, s3, tmp_path):
    """Case 7b: a server signing with another secret gets 403s: the
    restore GET is retried (not a fresh start) and uploads are logged as
    s3_backup_failed while the server keeps serving."""
    s3.expect_bad_signatures = True
    bad_env = server_env(secret=SKEY + "-wrong")

    # no local file: the GET is refused, the server does not start empty
    db = tmp_path / "a" / "chat.db"
    db.parent.mkdir()
    chat = start_chat(server_factory, db, s3, interval="1s", env=bad_env, ready=False)
    rec = s3.wait_for(is_get, 10)
    assert not rec.verified and rec.status == 403 and rec.code == "SignatureDoesNotMatch", rec
    chat.wait_log("s3_restore_failed")
    status, body = chat.ready()
    assert status == 503 and "database" in (body or {}).get("failing", []), (status, body)
    assert chat.logs("s3_restore_none") == []
    assert chat.stop() == 0

    # a local file: serving, and the uploads fail with 403
    db = tmp_path / "b" / "chat.db"
    db.parent.mkdir()
    sqlite3.connect(str(db)).close()
    open(str(db), "ab").close()
    assert db.exists()
    start = s3.count()
    chat = start_chat(server_factory, db, s3, interval="1s", env=bad_env)
    register(chat, "judy")
    rec = s3.wait_for(is_put, 10, start=start)
    assert not rec.verified and rec.status == 403, rec
    line = chat.wait_log("s3_backup_failed", pred=lambda l: "403" in l.get("msg", ""))
    assert line.get("level") == "error", line
    assert login_ok(chat, "judy")
    assert s3.object_data(BUCKET, KEY) is None
    assert [r for r in s3.records()[start:] if r.method == "GET"] == []


def _filtered_env(extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("P2PMESH_", "SIGNALING_", "AWS_", "S3_"))}
    env.update(extra)
    return env


@pytest.mark.parametrize("case", ["no_bucket", "postgres", "no_credentials", "empty_secret",
                                  "env_enabled_no_bucket"])
def test_config_errors_exit_2_one_line(case, s3, tmp_path):
    """Case 8: startup errors, one stderr line, exit code 2, no S3 request."""
    db = tmp_path / "chat.db"
    flags = [helpers.BIN, "--role=chat", "--addr=127.0.0.1", "--port=%d" % helpers.free_port(),
             "--jwt.secret=" + SECRET, "--chat.s3_endpoint=" + s3.url]
    env = {"AWS_ACCESS_KEY_ID": AKID, "AWS_SECRET_ACCESS_KEY": SKEY}
    if case == "no_bucket":
        flags += ["--database.url=sqlite:%s" % db, "--chat.s3_sync=true"]
        want = "s3_bucket"
    elif case == "postgres":
        flags += ["--database.url=postgres://x@127.0.0.1/db", "--chat.s3_sync=true",
                  "--chat.s3_bucket=" + BUCKET]
        want = "sqlite"
    elif case == "no_credentials":
        flags += ["--database.url=sqlite:%s" % db, "--chat.s3_sync=true",
                  "--chat.s3_bucket=" + BUCKET]
        env = {}
        want = "AWS_ACCESS_KEY_ID"
    elif case == "empty_secret":
        flags += ["--database.url=sqlite:%s" % db, "--chat.s3_sync=true",
                  "--chat.s3_bucket=" + BUCKET]
        env = {"AWS_ACCESS_KEY_ID": AKID, "AWS_SECRET_ACCESS_KEY": ""}
        want = "AWS_SECRET_ACCESS_KEY"
    else:
        flags += ["--database.url=sqlite:%s" % db]
        env["S3_SYNC_ENABLED"] = "true"
        want = "S3_DB_BUCKET"
    r = subprocess.run(flags, env=_filtered_env(env), stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=15)
    assert r.returncode == 2, (case, r.returncode, r.stderr, r.stdout[-2000:])
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, ("expected one stderr line", lines)
    assert want in lines[0], (want, lines[0])
    assert s3.records() == []
    assert not db.exists(), "the database was created before the configuration was refused"


def test_faltubaat_env_names(server_factory, s3_factory, tmp_path):
    """S3_SYNC_ENABLED, S3_DB_BUCKET, S3_DB_KEY, S3_SYNC_INTERVAL (seconds)
    and AWS_REGION configure the backup; only the endpoint is a flag."""
    region, bucket, key = "us-west-2", "faltubaat-env-bucket", "faltubaat/database/faltubaat.db"
    path = "/%s/%s" % (bucket, key)
    emu = s3_factory(region=region)
    db = tmp_path / "chat.db"
    flags = ["--database.url=sqlite:%s" % db, "--jwt.secret=" + SECRET, "--chat.rate_max=0",
             "--chat.auth_rate_max=0", "--chat.s3_endpoint=%s" % emu.url]
    env = server_env(extra={"S3_SYNC_ENABLED": "true", "S3_DB_BUCKET": bucket, "S3_DB_KEY": key,
                            "S3_SYNC_INTERVAL": "2", "AWS_REGION": region})
    chat = start_chat(server_factory, db, emu, flags=flags, env=env)
    gets = emu.records(lambda r: r.method == "GET")
    assert len(gets) == 1 and gets[0].path == path and gets[0].status == 404, gets
    token, _ = register(chat, "kim")
    send_messages(chat, token, ["via env"], prefix="env")
    # periodic, not at shutdown (the server still runs), and well before
    # the default 300s: S3_SYNC_INTERVAL=2 was read as seconds
    rec, _ = wait_put_holding(emu, tmp_path, ["via env"], "kim", 0, path=path)
    assert chat.srv.alive()
    assert "/%s/s3/aws4_request" % region in rec.headers["authorization"], rec.headers
    assert chat.stop() == 0
    assert all(r.verified and r.path == path for r in emu.records()), emu.records()


def test_key_with_reserved_characters(server_factory, s3_factory, tmp_path):
    """A key with characters SigV4 encodes (space, +, =, non-ASCII): the
    wire path is encoded once per segment and the signature uses S3's
    canonical URI (not encoded twice)."""
    key = "backups/chat db+v1=ok/é.sqlite"
    path = "/%s/backups/chat%%20db%%2Bv1%%3Dok/%%C3%%A9.sqlite" % BUCKET
    emu = s3_factory()
    db = tmp_path / "chat.db"
    flags = chat_flags(db, emu, interval="1h", key=key)
    chat = start_chat(server_factory, db, emu, flags=flags)
    token, _ = register(chat, "lena")
    send_messages(chat, token, ["odd key"], prefix="k")
    assert chat.stop() == 0
    reqs = emu.records()
    assert [(r.method, r.status) for r in reqs] == [("GET", 404), ("PUT", 200)], reqs
    for r in reqs:
        assert r.verified, (r, r.reason)
        assert r.path == path, r.path
    assert emu.object_data(BUCKET, key) == reqs[1].body
