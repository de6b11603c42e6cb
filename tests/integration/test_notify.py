"""sd_notify without systemd (core/pm_notify.c) and the --probe health
check (core/pm_probe.c).

The service manager's side is played by a Python AF_UNIX datagram socket
named in NOTIFY_SOCKET (a path, or "@name" for the abstract namespace),
so everything here runs without systemd. test_systemd.py runs the unit
under a real systemd.
"""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import helpers
from helpers import RawWS, clean_env, free_port, http_get, run_cli

# Variables of a real service manager that must not leak into the
# servers started here (pytest itself may run under systemd).
MANAGER_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def manager_env(extra=None):
    env = {k: v for k, v in clean_env().items() if k not in MANAGER_VARS}
    env.update(extra or {})
    return env


def fields(msg):
    """'A=1\\nB=x y' -> {'A': '1', 'B': 'x y'} (sd_notify's format)."""
    out = {}
    for line in msg.split("\n"):
        if line:
            key, sep, value = line.partition("=")
            assert sep, "not KEY=VALUE in %r" % msg
            out[key] = value
    return out


class NotifyListener:
    """The service manager's end of NOTIFY_SOCKET."""

    def __init__(self, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.dir = None
        if abstract:
            name = "p2pmesh-test-%d-%s" % (os.getpid(), secrets.token_hex(6))
            self.sock.bind("\0" + name)
            self.env_value = "@" + name
        else:
            # Short, private path (sun_path holds 108 bytes; pytest's
            # tmp_path can be longer).
            self.dir = tempfile.mkdtemp(prefix="pmnotify-")
            path = os.path.join(self.dir, "notify.sock")
            self.sock.bind(path)
            self.env_value = path
        self.seen = []  # (time.monotonic(), text) of every datagram

    def recv(self, timeout):
        """The next datagram as text, or None after timeout seconds."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return None
        text = data.decode("utf-8")
        self.seen.append((time.monotonic(), text))
        return text

    def expect(self, key, timeout=10.0, value="1"):
        """Read until a datagram with key=value; returns (fields, skipped)."""
        deadline = time.monotonic() + timeout
        skipped = []
        while True:
            msg = self.recv(deadline - time.monotonic())
            if msg is None:
                raise AssertionError("no %s=%s within %.1fs; got %r" % (key, value, timeout, skipped))
            f = fields(msg)
            if f.get(key) == value:
                return f, skipped
            skipped.append(msg)

    def collect(self, duration):
        """Every datagram arriving within duration seconds."""
        deadline = time.monotonic() + duration
        out = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            msg = self.recv(left)
            if msg is not None:
                out.append(msg)

    def close(self):
        self.sock.close()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class NotifyServer(helpers.Process):
    """A p2pmesh process started without waiting for it (readiness is
    what the test observes). With own_watchdog_pid, WATCHDOG_PID is set
    to the server's own pid (by a shell that execs the binary)."""

    def __init__(self, workdir, role="signaling", flags=(), env=None, own_watchdog_pid=False):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.role = role
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.flags = list(flags)
        self.stdout_path = self.workdir / "stdout.log"
        self.stderr_path = self.workdir / "stderr.log"
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        argv = [helpers.BIN, "--role=%s" % role, "--addr=127.0.0.1",
                "--port=%d" % self.port] + self.flags
        if own_watchdog_pid:
            argv = ["/bin/sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"', "sh"] + argv
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._err, env=manager_env(env), cwd=str(self.workdir))

    def events(self, name):
        return [o for o in self.logs() if o.get("event") == name]

    def wait_event(self, name, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            hits = self.events(name)
            if hits:
                return hits[0]
            assert self.alive() or time.monotonic() < deadline, self.stderr_text()
            if time.monotonic() > deadline:
                raise AssertionError("no %r event within %.0fs; log tail: %s"
                                     % (name, timeout, self.stdout_text()[-2000:]))
            time.sleep(0.05)

    def wait_exit(self, timeout=10.0):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("p2pmesh still running %.0fs after the signal" % timeout)


@pytest.fixture
def notify_server(tmp_path):
    """start(role='signaling', *flags, env=None, own_watchdog_pid=False)."""
    procs = []

    def start(role="signaling", *flags, env=None, own_watchdog_pid=False):
        p = NotifyServer(tmp_path / ("srv%d" % len(procs)), role, flags, env, own_watchdog_pid)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()
    for p in procs:
        p.check_log_format()


@pytest.fixture
def listener():
    made = []

    def make(abstract=False):
        n = NotifyListener(abstract)
        made.append(n)
        return n

    yield make
    for n in made:
        n.close()


def ready(srv, lst, timeout=10.0):
    """Wait for READY=1 and return its fields; fail early if srv died."""
    deadline = time.monotonic() + timeout
    while True:
        msg = lst.recv(min(0.2, max(deadline - time.monotonic(), 0.001)))
        if msg is not None:
            f = fields(msg)
            assert f.get("READY") == "1", "first datagram is not READY=1: %r" % msg
            return f
        if not srv.alive():
            raise AssertionError("p2pmesh exited %s before READY=1: %s"
                                 % (srv.proc.returncode, srv.stderr_text()))
        if time.monotonic() > deadline:
            raise AssertionError("no READY=1 within %.0fs; stderr: %s" % (timeout, srv.stderr_text()))


# ------------------------------------------------------------ readiness


@pytest.mark.parametrize("role,abstract", [
    ("signaling", False), ("signaling", True), ("chat", False), ("game", False)])
def test_ready_once_listening(notify_server, listener, role, abstract):
    lst = listener(abstract)
    srv = notify_server(role, env={"NOTIFY_SOCKET": lst.env_value})
    f = ready(srv, lst)
    # The port takes connections the moment READY=1 is read: no retry.
    with socket.create_connection(("127.0.0.1", srv.port), timeout=2):
        pass
    assert f == {"READY": "1", "STATUS": "role %s serving on %s" % (role, srv.url)}, f
    r = http_get(srv.port, "/health")
    assert r.status == 200 and r.json()["role"] == role, r
    # One READY=1 only, until asked to reload.
    assert lst.collect(0.3) == []


def test_reload_sends_reloading_then_ready(notify_server, listener):
    lst = listener()
    srv = notify_server(env={"NOTIFY_SOCKET": lst.env_value})
    ready(srv, lst)
    for _ in range(2):
        before = time.clock_gettime(time.CLOCK_MONOTONIC)
        srv.proc.send_signal(signal.SIGHUP)
        f, skipped = lst.expect("RELOADING", timeout=5)
        after = time.clock_gettime(time.CLOCK_MONOTONIC)
        assert skipped == [], skipped
        assert set(f) == {"RELOADING", "MONOTONIC_USEC"}, f
        usec = int(f["MONOTONIC_USEC"])
        # CLOCK_MONOTONIC in microseconds, taken between our kill() and
        # our recv() (1 ms of slack for rounding).
        assert before * 1e6 - 1000 <= usec <= after * 1e6 + 1000, (before, usec, after)
        f, skipped = lst.expect("READY", timeout=5)
        assert skipped == [], skipped
    assert len(srv.events("reloaded")) == 2, srv.stdout_text()[-2000:]
    assert http_get(srv.port, "/health").status == 200


def test_sigterm_sends_stopping_and_exits_0(notify_server, listener):
    lst = listener(abstract=True)
    srv = notify_server(env={"NOTIFY_SOCKET": lst.env_value})
    ready(srv, lst)
    ws = RawWS(srv.port)
    try:
        srv.proc.send_signal(signal.SIGTERM)
        f, skipped = lst.expect("STOPPING", timeout=5)
        assert skipped == [], skipped
        assert f == {"STOPPING": "1", "STATUS": "draining 1 WebSocket clients"}, f
        assert ws.expect_close(timeout=5) == 1001
    finally:
        ws.close()
    assert srv.wait_exit() == 0, srv.stderr_text()
    # Nothing after STOPPING=1: no READY=1 on the way out.
    assert lst.collect(0.2) == []


# -------------------------------------------------------------- watchdog


@pytest.mark.parametrize("own_pid", [False, True], ids=["no-pid", "pid-is-self"])
def test_watchdog_pings(notify_server, listener, own_pid):
    lst = listener()
    srv = notify_server(env={"NOTIFY_SOCKET": lst.env_value, "WATCHDOG_USEC": "200000"},
                        own_watchdog_pid=own_pid)
    ready(srv, lst)
    msgs = lst.collect(1.0)
    assert msgs and set(msgs) == {"WATCHDOG=1"}, msgs
    # Every half interval (100 ms): about 10 in a second.
    assert 5 <= len(msgs) <= 15, msgs
    stamps = [t for t, m in lst.seen if m == "WATCHDOG=1"]
    gaps = sorted(b - a for a, b in zip(stamps, stamps[1:]))
    assert 0.05 <= gaps[len(gaps) // 2] <= 0.2, gaps


@pytest.mark.parametrize("extra", [
    {"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"},
    {"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())},
    {"WATCHDOG_USEC": "0"},
    {"WATCHDOG_USEC": "soon"},
], ids=["pid-1", "pid-of-pytest", "zero", "not-a-number"])
def test_no_watchdog_when_not_meant_for_us(notify_server, listener, extra):
    lst = listener()
    srv = notify_server(env=dict(extra, NOTIFY_SOCKET=lst.env_value))
    ready(srv, lst)
    assert lst.collect(1.0) == []
    assert srv.alive()


# ------------------------------------------------- no or bad NOTIFY_SOCKET


@pytest.mark.parametrize("value", ["run/notify.sock", "notify.sock", "@"])
def test_malformed_notify_socket_is_a_warning(notify_server, value):
    srv = notify_server(env={"NOTIFY_SOCKET": value})
    ev = srv.wait_event("notify_socket_invalid")
    assert ev["level"] == "warn" and value in ev["msg"], ev
    deadline = time.monotonic() + 10
    while True:
        try:
            r = http_get(srv.port, "/health", timeout=2)
            break
        except OSError:
            assert srv.alive() and time.monotonic() < deadline, srv.stderr_text()
            time.sleep(0.05)
    assert r.status == 200, r
    # Relative: nothing was created next to the server either.
    assert not (srv.workdir / value).exists()
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.wait_exit() == 0, srv.stderr_text()


@pytest.mark.parametrize("case", ["unset", "empty", "gone"])
def test_without_a_manager_nothing_breaks(notify_server, tmp_path, case):
    env = {"unset": {}, "empty": {"NOTIFY_SOCKET": ""},
           "gone": {"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock"),
                    "WATCHDOG_USEC": "200000"}}[case]
    srv = notify_server(env=env)
    deadline = time.monotonic() + 10
    while True:
        try:
            if http_get(srv.port, "/health", timeout=2).status == 200:
                break
        except OSError:
            pass
        assert srv.alive() and time.monotonic() < deadline, srv.stderr_text()
        time.sleep(0.05)
    srv.proc.send_signal(signal.SIGHUP)
    srv.wait_event("reloaded")
    time.sleep(0.3)  # a few watchdog periods in the "gone" case
    assert http_get(srv.port, "/health").status == 200
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.wait_exit() == 0, srv.stderr_text()
    assert srv.stderr_text() == ""
    assert not [o for o in srv.logs() if o["level"] in ("warn", "error")], srv.stdout_text()


# ---------------------------------------------------------------- --probe


def probe(*args, env=None):
    return run_cli(*args, env=env, timeout=15)


def test_probe_healthy(server):
    r = probe("--role=signaling", "--addr=127.0.0.1", "--port=%d" % server.port, "--probe")
    assert (r.returncode, r.stderr) == (0, ""), r
    assert r.stdout == "p2pmesh: healthy: 200 from http://127.0.0.1:%d/health\n" % server.port
    # The same settings from the environment (as the unit gives them),
    # and a wildcard address probed on loopback.
    r = probe("--role=signaling", "--probe",
              env={"P2PMESH_PORT": str(server.port), "P2PMESH_ADDR": "0.0.0.0"})
    assert r.returncode == 0, r
    assert r.stdout == "p2pmesh: healthy: 200 from http://127.0.0.1:%d/health\n" % server.port


def test_probe_ready_path(server):
    r = probe("--role=signaling", "--addr=127.0.0.1", "--port=%d" % server.port, "--probe=/ready")
    assert r.returncode == 0, r
    assert r.stdout == "p2pmesh: healthy: 200 from http://127.0.0.1:%d/ready\n" % server.port


def test_probe_ready_fails_while_draining(server_factory):
    srv = server_factory("--shutdown.grace=5s")
    ws = RawWS(srv.port)  # never answers the close frame: keeps the drain going
    try:
        srv.proc.send_signal(signal.SIGTERM)
        srv_deadline = time.monotonic() + 5
        while not [o for o in srv.logs() if o.get("event") == "shutdown_started"]:
            assert time.monotonic() < srv_deadline, srv.stdout_text()
            time.sleep(0.05)
        r = probe("--role=signaling", "--addr=127.0.0.1", "--port=%d" % srv.port, "--probe=/ready")
        assert (r.returncode, r.stdout) == (1, ""), r
        assert r.stderr.startswith("p2pmesh: unhealthy: 503 from http://127.0.0.1:%d/ready: "
                                   % srv.port), r.stderr
        assert "draining" in r.stderr, r.stderr
    finally:
        ws.close()


def test_probe_nothing_listening():
    port = free_port()
    t0 = time.monotonic()
    r = probe("--role=signaling", "--addr=127.0.0.1", "--port=%d" % port, "--probe")
    assert (r.returncode, r.stdout) == (1, ""), r
    assert r.stderr.startswith("p2pmesh: unhealthy: http://127.0.0.1:%d/health: " % port), r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert time.monotonic() - t0 < 10


def test_probe_bad_paths(server):
    r = probe("--role=signaling", "--addr=127.0.0.1", "--port=%d" % server.port, "--probe=/nope")
    assert (r.returncode, r.stdout) == (1, ""), r
    assert r.stderr.startswith("p2pmesh: unhealthy: 404 from http://127.0.0.1:%d/nope" % server.port), r
    r = probe("--role=signaling", "--port=%d" % server.port, "--probe=health")
    assert r.returncode == 1, r
    assert r.stderr == "p2pmesh: unhealthy: --probe=health: the path must start with /\n", r


def test_probe_tls_main_port(server_factory, tls_cert):
    cert, key = tls_cert
    tls = ["--tls.cert=%s" % cert, "--tls.key=%s" % key]
    srv = server_factory(*tls)
    r = probe("--role=signaling", "--addr=127.0.0.1", "--port=%d" % srv.port, "--probe", *tls)
    assert (r.returncode, r.stderr) == (0, ""), r
    assert r.stdout == "p2pmesh: healthy: 200 from https://127.0.0.1:%d/health\n" % srv.port
    # Control: plain HTTP to the TLS port is not healthy.
    r = probe("--role=signaling", "--addr=127.0.0.1", "--port=%d" % srv.port, "--probe")
    assert r.returncode == 1, r
    assert "http://127.0.0.1:%d/health" % srv.port in r.stderr, r


def test_probe_client_ca_needs_admin_port(tls_cert):
    cert, key = tls_cert
    r = probe("--role=signaling", "--addr=127.0.0.1", "--port=%d" % free_port(), "--probe",
              "--tls.cert=%s" % cert, "--tls.key=%s" % key, "--tls.client_ca=%s" % cert)
    assert (r.returncode, r.stdout) == (1, ""), r
    assert r.stderr == ("p2pmesh: unhealthy: the main port requires client certificates "
                        "(tls.client_ca): set admin_port to probe /health\n"), r


def test_probe_tunnel_server_uses_admin_port(tunnel_server, tunnel_certs):
    srv = tunnel_server()
    r = probe("--role=tunnel", "--addr=127.0.0.1", "--port=%d" % srv.port,
              "--admin_port=%d" % srv.admin_port, "--probe", *tunnel_certs.server_flags())
    assert (r.returncode, r.stderr) == (0, ""), r
    assert r.stdout == "p2pmesh: healthy: 200 from http://127.0.0.1:%d/health\n" % srv.admin_port
    # Without --admin_port the tunnel's default admin port 8080 is
    # probed (healthy or not, depending on this machine).
    r = probe("--role=tunnel", "--port=%d" % srv.port, "--probe", *tunnel_certs.server_flags())
    assert "http://127.0.0.1:8080/health" in r.stdout + r.stderr, r


def test_probe_tunnel_agent_uses_proxy_addr(tunnel_certs):
    port = free_port()
    r = probe("--role=tunnel", "--tunnel.mode=agent", "--tunnel.server_ip=127.0.0.1",
              "--tunnel.proxy_addr=127.0.0.1:%d" % port, "--probe", *tunnel_certs.agent_flags())
    assert (r.returncode, r.stdout) == (1, ""), r
    assert r.stderr.startswith("p2pmesh: unhealthy: http://127.0.0.1:%d/health: " % port), r


def test_probe_lambda_has_no_listener():
    r = probe("--role=lambda", "--probe")
    assert (r.returncode, r.stderr) == (0, ""), r
    assert r.stdout == "p2pmesh: role lambda has no listener: nothing to probe\n"
