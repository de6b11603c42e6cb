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


def pytest_configure(config):
    """Run a private copy of the binary, so a rebuild during the run
    (ETXTBSY, half-written file) cannot disturb the tests."""
    global _bin_copy_dir
    if os.access(helpers.BIN, os.X_OK) and not os.environ.get("PM_NO_COPY"):
        _bin_copy_dir = tempfile.mkdtemp(prefix="p2pmesh-it-")
        dst = os.path.join(_bin_copy_dir, "p2pmesh")
        shutil.copy2(helpers.BIN, dst)
        helpers.BIN = dst


def pytest_unconfigure(config):
    if _bin_copy_dir:
        shutil.rmtree(_bin_copy_dir, ignore_errors=True)


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
    """A real redis-server on a free loopback port (no persistence).
    kill() stops it hard; start() brings it back on the same port, empty."""

    def __init__(self, workdir):
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
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
             "--logfile", str(self.workdir / "redis.log")],
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
