"""Fixtures that run the real p2pmesh binary for the integration tests.

    /usr/bin/python3 -m pytest tests/integration -q

The binary is PM_BIN, or p2pmesh at the top of the repository.
Each test that asks for `server` or `server_factory` gets its own process
on a free port of 127.0.0.1, with stdout (JSON log lines) and stderr in
files under the test's tmp_path. At teardown the process gets SIGTERM
(SIGKILL after 5 s) and every stdout line must be a JSON object carrying
ts, level, role, event and msg.
"""

import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import helpers  # noqa: E402
from helpers import clean_env, free_port, http_get  # noqa: E402

# Fixture modules shared by several test files (loaded here, first, so
# that pytest rewrites their asserts): the chat role's servers and
# clients, the tunnel's and the game's, and the real PostgreSQL they use.
pytest_plugins = ["pg", "chat_fixtures", "tunnel_fixtures", "game_fixtures"]

_bin_copy_dir = None
_san_dir = None         # where sanitizer or valgrind reports land
_san_seen = set()       # report files already charged to a test

# PM_VALGRIND=1: every p2pmesh the tests start runs under memcheck (a
# plain build: tests/integration/valgrind.sh picks the tests). Leaks that
# count: definitely and indirectly lost.
VALGRIND = ("valgrind", "--leak-check=full", "--show-leak-kinds=definite,indirect",
            "--errors-for-leak-kinds=definite,indirect", "--num-callers=40",
            "--trace-children=no")


def _links_asan(path):
    r = subprocess.run(["ldd", path], capture_output=True, text=True)
    return "libasan" in r.stdout


def _setup_sanitizers():
    """With an ASan+UBSan binary (./configure --enable-asan) every report
    of every p2pmesh process the tests start, however started, goes to a
    file in one directory: a test that leaves one there fails."""
    global _san_dir
    if not os.access(helpers.BIN, os.X_OK) or not _links_asan(helpers.BIN):
        return
    _san_dir = tempfile.mkdtemp(prefix="p2pmesh-san-")
    log = os.path.join(_san_dir, "report")
    helpers.SAN_RSS_SLACK_KB = 48 * 1024
    for var, opts in (("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:quarantine_size_mb=32"),
                      ("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")):
        old = os.environ.get(var)
        os.environ[var] = ":".join(filter(None, (old, opts, "log_path=" + log)))


def _setup_valgrind():
    """helpers.BIN becomes a script that execs valgrind on the binary, so
    every fixture runs it; one log per process in _san_dir."""
    global _san_dir
    if _links_asan(helpers.BIN):
        raise pytest.UsageError("PM_VALGRIND=1 needs a build without --enable-asan")
    if shutil.which("valgrind") is None:
        raise pytest.UsageError("PM_VALGRIND=1 but valgrind is not installed")
    _san_dir = tempfile.mkdtemp(prefix="p2pmesh-vg-")
    wrapper = os.path.join(_bin_copy_dir or _san_dir, "p2pmesh-vg")
    with open(wrapper, "w") as f:
        f.write('#!/bin/sh\nexec %s --log-file=%s/vg.%%p %s "$@"\n'
                % (" ".join(VALGRIND), _san_dir, helpers.BIN))
    os.chmod(wrapper, 0o755)
    helpers.BIN = wrapper


def _report_of(path):
    """The text of a sanitizer report, or of a finished valgrind log with
    errors; None for a clean (or unfinished) valgrind log."""
    with open(path, errors="replace") as f:
        text = f.read()
    if os.path.basename(path).startswith("vg."):
        m = re.search(r"ERROR SUMMARY: (\d+) errors", text)
        if m is None or m.group(1) == "0":
            return None
    return text[-8000:]


def _new_san_reports():
    if _san_dir is None:
        return []
    out = []
    for name in sorted(set(os.listdir(_san_dir)) - _san_seen):
        path = os.path.join(_san_dir, name)
        if name.startswith("vg.") and "ERROR SUMMARY" not in open(path, errors="replace").read():
            continue  # still running: looked at again later
        _san_seen.add(name)
        text = _report_of(path)
        if text is not None:
            out.append("%s:\n%s" % (name, text))
    return out


@pytest.fixture(autouse=True)
def sanitizer_reports():
    """Fails the test during whose run a p2pmesh process wrote an
    AddressSanitizer, LeakSanitizer, UBSan or valgrind error report (set
    up before, so torn down after, the test's servers)."""
    _new_san_reports()
    yield
    reports = _new_san_reports()
    if reports:
        pytest.fail("sanitizer report(s):\n" + "\n".join(reports), pytrace=False)


def pytest_sessionfinish(session, exitstatus):
    """Reports written after the last test (module or session fixtures)."""
    reports = _new_san_reports()
    if reports:
        sys.stderr.write("sanitizer report(s) after the tests:\n%s\n" % "\n".join(reports))
        session.exitstatus = 1


def pytest_configure(config):
    """Run a private copy of the binary, so a rebuild during the run
    (ETXTBSY, half-written file) cannot disturb the tests."""
    global _bin_copy_dir
    if os.access(helpers.BIN, os.X_OK) and not os.environ.get("PM_NO_COPY"):
        _bin_copy_dir = tempfile.mkdtemp(prefix="p2pmesh-it-")
        dst = os.path.join(_bin_copy_dir, "p2pmesh")
        shutil.copy2(helpers.BIN, dst)
        helpers.BIN = dst
    if os.environ.get("PM_VALGRIND") == "1" and os.access(helpers.BIN, os.X_OK):
        _setup_valgrind()
    else:
        _setup_sanitizers()


def pytest_unconfigure(config):
    if _bin_copy_dir:
        shutil.rmtree(_bin_copy_dir, ignore_errors=True)
    if _san_dir:
        shutil.rmtree(_san_dir, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    if not os.access(helpers.BIN, os.X_OK):
        mark = pytest.mark.skip(reason="p2pmesh binary not found at %s (set PM_BIN or build it)" % helpers.BIN)
        if os.environ.get("PM_REQUIRE_BIN"):
            return  # let the tests fail loudly instead
        for item in items:
            # the emulator's own tests do not run the binary
            if item.fspath.basename != "test_lambda_emu.py":
                item.add_marker(mark)


class Server(helpers.Process):
    """One running p2pmesh process."""

    def __init__(self, workdir, flags=(), env=None, role="signaling",
                 probe="http", start_timeout=10.0):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.flags = list(flags)
        self.tls = any(f.startswith("--tls.cert") for f in self.flags)
        scheme = "https" if self.tls else "http"
        wscheme = "wss" if self.tls else "ws"
        self.url = "%s://127.0.0.1:%d" % (scheme, self.port)
        self.ws_url = "%s://127.0.0.1:%d/" % (wscheme, self.port)
        self.stdout_path = self.workdir / ("stdout-%d.log" % self.port)
        self.stderr_path = self.workdir / ("stderr-%d.log" % self.port)
        self.argv = [helpers.BIN, "--role=%s" % role, "--addr=127.0.0.1",
                     "--port=%d" % self.port] + self.flags
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
            env=clean_env(env),
        )
        self.ready_requests = 0  # HTTP responses the readiness probe got
        try:
            self._wait_ready(probe, start_timeout)
        except BaseException:
            self.stop()
            raise

    # ---------------------------------------------------------- lifecycle
    def _ssl_probe_ctx(self):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _wait_ready(self, probe, timeout):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    "p2pmesh exited with %s during startup\nargv: %s\nstderr: %s\nstdout: %s"
                    % (self.proc.returncode, self.argv, self.stderr_text(), self.stdout_text()[-2000:])
                )
            try:
                if probe == "tcp":
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        return
                r = http_get(self.port, "/health", timeout=2,
                             ssl_context=self._ssl_probe_ctx() if self.tls else None)
                self.ready_requests += 1
                last = r
                if r.status == 200:
                    return
            except (OSError, ssl.SSLError) as e:
                last = e
            time.sleep(0.05)
        raise RuntimeError("p2pmesh not ready within %.0fs (last: %r)\nstderr: %s"
                           % (timeout, last, self.stderr_text()))


@pytest.fixture
def server_factory(tmp_path):
    """start(*flags, env=None, probe='http') -> Server; all stopped at teardown."""
    servers = []

    def start(*flags, env=None, probe="http", role="signaling"):
        srv = Server(tmp_path / ("srv%d" % len(servers)), flags, env=env,
                     probe=probe, role=role)
        servers.append(srv)
        return srv

    yield start
    errors = []
    for srv in servers:
        srv.stop()
    for srv in servers:
        try:
            srv.check_log_format()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, "\n".join(errors)


@pytest.fixture
def server(server_factory):
    """A signaling server with default settings."""
    return server_factory()


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory):
    """(cert, key) of a self-signed certificate for localhost/127.0.0.1."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


class RedisServer:
    """A real redis-server on a free loopback port. kill() stops it hard;
    start() brings it back on the same port: empty, or, when durable,
    with everything it acknowledged (every command is in its append-only
    file before it answers: appendfsync always)."""

    def __init__(self, workdir, durable=False):
        self.durable = durable
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = "redis://127.0.0.1:%d" % self.port
        self.proc = None
        self.start()

    def start(self):
        assert self.proc is None
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--dir", str(self.workdir)]
            + (["--appendonly", "yes", "--appendfsync", "always"] if self.durable
               else ["--appendonly", "no"])
            + ["--logfile", str(self.workdir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.cli("PING") == "PONG":
                return
            time.sleep(0.05)
        raise AssertionError("redis-server did not start on %d" % self.port)

    def cli(self, *args):
        """Run one command with redis-cli; its stdout (stripped) or None."""
        r = subprocess.run(["redis-cli", "-p", str(self.port)] + list(args),
                           capture_output=True, text=True, timeout=10)
        return r.stdout.strip() if r.returncode == 0 else None

    def kill(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self):
        self.kill()


@pytest.fixture
def redis_server(tmp_path):
    """A private redis-server for one test (see RedisServer)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (tests/lib/deps.sh test)")
    srv = RedisServer(tmp_path / "redis")
    yield srv
    srv.stop()
