"""Shared fixtures and helpers for the chat role tests (test_chat_*.py).

The test modules load this file as a pytest plugin (``pytest_plugins``), so
its fixtures exist once per session:

- ``backend``: parametrised over ``sqlite`` and ``postgres``. SQLite is a
  fresh file under the test's tmp_path; PostgreSQL is a fresh database in
  one real PostgreSQL cluster started for the session in a temp dir (the
  recipe of docs tooling section 2, tests/integration/pg.py).
  ``backend.db`` runs SQL directly against the same database.
- ``chat_factory`` / ``chat``: a p2pmesh --role=chat process on that
  database (conftest's Server: free port on 127.0.0.1, JSON log check at
  teardown), started with a 32+ byte jwt.secret and generous limits, and
  only handed out once ``GET /ready`` answers 200.
- ``api`` / ``register`` / ``login``: REST calls on fresh connections.
- ``Client``: a python-websockets client for the native protocol with an
  inbox (wait for a message matching a predicate, keep the others).

Every wait is bounded.
"""

import asyncio
import base64
import http.client
import itertools
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import websockets

import helpers
import pg
from helpers import http_get

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
NODE_MODULES = TESTS / "node_modules"

SECRET = "chat-test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"  # 56 bytes
PASSWORD = "secret123"

# Flags every chat server of these tests gets (a test can override any of
# them: later flags win). The REST and WebSocket limits are raised so that
# the many requests of one test never meet a limit it does not test.
BASE_FLAGS = (
    "--jwt.secret=" + SECRET,
    "--log.level=debug",
    "--chat.rate_max=100000",
    "--chat.auth_rate_max=100000",
    "--limits.per_ip_rate=100000/1s",
    "--limits.per_conn_rate=100000/1s",
    "--limits.per_conn_burst=100000",
    "--shutdown.grace=5s",
)


def run(coro, timeout=60):
    """Run one test coroutine with an overall bound."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


# ------------------------------------------------------------ PostgreSQL


class PgCluster:
    """pg.PgServer (tests/integration/pg.py: a real PostgreSQL in a temp
    dir, docs tooling section 2) shared by the session, with one fresh
    database per test."""

    def __init__(self):
        self.server = pg.PgServer()
        self.port = self.server.port
        self.bindir = self.server.bindir
        self.counter = itertools.count(1)

    def psql(self, dbname, sql, timeout=30):
        """Rows of sql, fields separated by the unit separator (not |: values may hold it)."""
        r = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", dbname,
             "-v", "ON_ERROR_STOP=1", "-X", "-q", "-A", "-t", "-F", "\x1f", "-c", sql],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
            env=dict(os.environ, PGCONNECT_TIMEOUT="10"))
        if r.returncode != 0:
            raise RuntimeError("psql %r failed: %s" % (sql, r.stderr.strip()))
        return r.stdout

    def create_db(self):
        name = "chat_t%d_%d" % (os.getpid(), next(self.counter))
        self.psql("postgres", "CREATE DATABASE %s" % name)
        return name

    def drop_db(self, name):
        try:
            self.psql("postgres", "DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)
        except Exception:
            pass

    def url(self, name):
        return "postgres://postgres@127.0.0.1:%d/%s" % (self.port, name)

    def stop(self):
        self.server.close()


@pytest.fixture(scope="session")
def pg_cluster():
    if not pg.pg_available():
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    cluster = PgCluster()
    yield cluster
    cluster.stop()


# --------------------------------------------------------- direct SQL


def _sql_literal(v):
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, int):
        return str(v)
    return "'" + str(v).replace("'", "''") + "'"


class SqliteDB:
    kind = "sqlite"

    def __init__(self, path):
        self.path = str(path)

    def query(self, sql, params=()):
        """Rows as tuples (values as SQLite returns them)."""
        con = sqlite3.connect(self.path, timeout=10)
        try:
            con.execute("PRAGMA busy_timeout=10000")
            cur = con.execute(sql, params)
            rows = cur.fetchall()
            con.commit()
            return rows
        finally:
            con.close()

    def execute(self, sql, params=()):
        self.query(sql, params)


class PostgresDB:
    kind = "postgres"

    def __init__(self, cluster, name):
        self.cluster = cluster
        self.name = name

    def query(self, sql, params=()):
        """Rows as tuples of strings (None for NULL is not distinguished
        from an empty string: psql -A prints both empty)."""
        parts = sql.split("?")
        assert len(parts) == len(params) + 1, (sql, params)
        text = parts[0] + "".join(_sql_literal(p) + rest for p, rest in zip(params, parts[1:]))
        out = self.cluster.psql(self.name, text)
        return [tuple(line.split("\x1f")) for line in out.splitlines() if line != ""]

    def execute(self, sql, params=()):
        self.query(sql, params)


class Backend:
    def __init__(self, kind, url, db):
        self.kind, self.url, self.db = kind, url, db

    def __repr__(self):
        return "Backend(%s, %s)" % (self.kind, self.url)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path):
    """A fresh, empty database for one test."""
    if request.param == "sqlite":
        path = tmp_path / "chat.db"
        yield Backend("sqlite", "sqlite:%s" % path, SqliteDB(path))
        return
    cluster = request.getfixturevalue("pg_cluster")
    name = cluster.create_db()
    yield Backend("postgres", cluster.url(name), PostgresDB(cluster, name))
    # the server is stopped by server_factory's teardown, which runs
    # before this one (server_factory was requested after backend)
    cluster.drop_db(name)


# ------------------------------------------------------------ the server


class ChatServer:
    """A chat-role process on a backend; restart() keeps the database."""

    def __init__(self, factory, backend, flags, env):
        self.factory = factory
        self.backend = backend
        self.db = backend.db
        self.flags = list(BASE_FLAGS) + ["--database.url=" + backend.url] + list(flags)
        self.env = env
        self.secret = SECRET
        for f in self.flags:
            if f.startswith("--jwt.secret="):
                self.secret = f.split("=", 1)[1]
        self.srv = None
        self.start()

    def start(self):
        self.srv = self.factory(*self.flags, env=self.env, role="chat")
        wait_ready(self.srv)
        return self

    def stop(self, sig=signal.SIGTERM):
        return self.srv.stop(sig)

    def restart(self, sig=signal.SIGTERM):
        rc = self.stop(sig)
        self.start()
        return rc

    @property
    def port(self):
        return self.srv.port

    @property
    def url(self):
        return self.srv.url

    def ws_url(self, token=None, path="/ws"):
        u = "ws://127.0.0.1:%d%s" % (self.port, path)
        if token is not None:
            u += "?token=" + token
        return u

    def api(self, method, path, body=None, token=None, headers=None, raw=None, timeout=10):
        return api(self.port, method, path, body=body, token=token, headers=headers, raw=raw,
                   timeout=timeout)

    def stderr_text(self):
        return self.srv.stderr_text()


def wait_ready(srv, timeout=20.0):
    """GET /ready must answer 200 (the database is usable)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if srv.proc.poll() is not None:
            raise RuntimeError("p2pmesh --role=chat exited with %s\nstderr: %s\nstdout: %s"
                               % (srv.proc.returncode, srv.stderr_text()[-3000:],
                                  srv.stdout_text()[-3000:]))
        try:
            r = http_get(srv.port, "/ready", timeout=2)
            last = r
            if r.status == 200:
                return
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise RuntimeError("GET /ready not 200 within %.0fs (last: %r)\nstderr: %s"
                       % (timeout, last, srv.stderr_text()[-3000:]))


@pytest.fixture
def chat_factory(backend, server_factory):
    """start(*flags, env=None) -> ChatServer on this test's database."""
    def start(*flags, env=None):
        return ChatServer(server_factory, backend, flags, env)
    return start


@pytest.fixture
def chat(chat_factory):
    return chat_factory()


# ------------------------------------------------------------------ REST


class ApiResult:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case names
        self.body = body
        try:
            self.json = json.loads(body.decode("utf-8")) if body else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return "ApiResult(%d, %r, %r)" % (self.status, self.headers, self.body[:300])


def api(port, method, path, body=None, token=None, headers=None, raw=None, timeout=10):
    """One request on a fresh connection. body: an object sent as JSON;
    raw: bytes sent as they are (Content-Type application/json)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        hdrs = {"Connection": "close"}
        data = None
        if raw is not None:
            data = raw if isinstance(raw, bytes) else raw.encode("utf-8")
        elif body is not None:
            data = json.dumps(body).encode("utf-8")
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        if token is not None:
            hdrs["Authorization"] = "Bearer " + token
        if headers:
            hdrs.update(headers)
        try:
            conn.request(method, path, body=data, headers=hdrs)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer (413) before reading everything
        resp = conn.getresponse()
        out = resp.read()
        return ApiResult(resp.status, {k.lower(): v for k, v in resp.getheaders()}, out)
    finally:
        conn.close()


def register(chat, username, password=PASSWORD, gender="male", **extra):
    """Register; returns (token, response json). Asserts 201."""
    body = {"username": username, "password": password, "gender": gender}
    body.update(extra)
    r = chat.api("POST", "/api/register", body)
    assert r.status == 201, ("register", body, r)
    return r.json["token"], r.json


def login(chat, username, password=PASSWORD):
    r = chat.api("POST", "/api/login", {"username": username, "password": password})
    assert r.status == 200, ("login", username, r)
    return r.json["token"], r.json


def claims(token):
    """The token's payload, unverified (base64url JSON)."""
    part = token.split(".")[1]
    part += "=" * (-len(part) % 4)
    return json.loads(base64.urlsafe_b64decode(part))


def user_id(token):
    return int(claims(token)["userId"])


def bcryptjs_hash(password, cost=10):
    """A hash made by the real npm bcryptjs package (tests/node_modules)."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    if not (NODE_MODULES / "bcryptjs").is_dir():
        pytest.skip("bcryptjs is not installed (cd tests && npm install)")
    r = subprocess.run(
        ["node", "-e",
         "const b=require('bcryptjs');process.stdout.write(b.hashSync(process.argv[1],+process.argv[2]))",
         password, str(cost)],
        cwd=str(TESTS), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


# ------------------------------------------------------------- WebSocket


class Client:
    """One WebSocket connection of the native protocol.

    Received messages go to an inbox; expect() returns (and removes) the
    first one matching, leaving the others; until() returns everything up
    to and including the first match."""

    def __init__(self, ws, name=""):
        self.ws = ws
        self.name = name
        self.inbox = []
        self.closed = None  # (code, reason) once the server closed

    @classmethod
    async def connect(cls, chat, token, name="", welcome=True):
        ws = await helpers.ws_connect(chat.ws_url(token))
        c = cls(ws, name)
        if welcome:
            c.welcome = await c.expect(type="welcome")
        return c

    async def send(self, obj):
        await self.ws.send(obj if isinstance(obj, str) else json.dumps(obj))

    async def _read(self, timeout):
        try:
            msg = await asyncio.wait_for(self.ws.recv(), timeout)
        except websockets.ConnectionClosed as e:
            self.closed = (self.ws.close_code, self.ws.close_reason)
            raise AssertionError("%s: connection closed (%s %r) while waiting; inbox %r"
                                 % (self.name, self.ws.close_code, self.ws.close_reason,
                                    self.inbox[-10:])) from e
        assert isinstance(msg, str), "%s: binary frame %r" % (self.name, msg)
        obj = json.loads(msg)
        assert isinstance(obj, dict) and isinstance(obj.get("type"), str), obj
        self.inbox.append(obj)

    @staticmethod
    def _match(m, pred, fields):
        if pred is not None and not pred(m):
            return False
        return all(m.get(k) == v for k, v in fields.items())

    async def expect(self, pred=None, timeout=5.0, **fields):
        """The first message (old or new) matching pred and fields."""
        deadline = time.monotonic() + timeout
        i = 0
        while True:
            while i < len(self.inbox):
                if self._match(self.inbox[i], pred, fields):
                    return self.inbox.pop(i)
                i += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("%s: no message matching %r within %.1fs; inbox %r"
                                     % (self.name, fields or pred, timeout, self.inbox[-20:]))
            try:
                await self._read(remaining)
            except asyncio.TimeoutError:
                pass

    async def until(self, pred=None, timeout=5.0, **fields):
        """Every message that arrived up to and including the first match
        (all removed from the inbox, arrival order); the match is last."""
        deadline = time.monotonic() + timeout
        i = 0
        while True:
            while i < len(self.inbox):
                if self._match(self.inbox[i], pred, fields):
                    out, self.inbox = self.inbox[:i + 1], self.inbox[i + 1:]
                    return out
                i += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("%s: no message matching %r within %.1fs; inbox %r"
                                     % (self.name, fields or pred, timeout, self.inbox[-20:]))
            try:
                await self._read(remaining)
            except asyncio.TimeoutError:
                pass

    async def collect(self, duration):
        """Read for duration seconds; returns and clears the inbox."""
        deadline = time.monotonic() + duration
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                await self._read(remaining)
            except asyncio.TimeoutError:
                break
            except AssertionError:
                break
        out, self.inbox = self.inbox, []
        return out

    def drain(self):
        out, self.inbox = self.inbox, []
        return out

    async def wait_closed(self, timeout=5.0):
        """Read until the server closes; returns the close code."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("%s: not closed within %.1fs; inbox %r"
                                     % (self.name, timeout, self.inbox[-10:]))
            try:
                msg = await asyncio.wait_for(self.ws.recv(), remaining)
                try:
                    self.inbox.append(json.loads(msg))
                except (ValueError, TypeError):
                    self.inbox.append(msg)
            except websockets.ConnectionClosed:
                return self.ws.close_code
            except asyncio.TimeoutError:
                continue

    async def close(self):
        try:
            await asyncio.wait_for(self.ws.close(), 5)
        except Exception:
            pass


async def close_all(clients):
    for c in clients:
        if c is not None:
            await c.close()
