"""The container image (docker/Dockerfile), built with podman on a Debian
base made by mmdebstrap (tests/lib/base-image.sh) and run as each role:
/health on a published loopback port, the image's own HEALTHCHECK, and
SIGTERM ending in a clean exit well within the grace period, with
WebSocket clients told 1001. The lambda role runs as a Lambda container
image against the Runtime API emulator. Skipped, with the reason, where
podman cannot run containers."""

import json
import os
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

import helpers
from lambda_emu import Emulator, join_two_peers

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "tests" / "lib"
IMAGE = "localhost/p2pmesh:test"
MAX_IMAGE_BYTES = 120 * 1000 * 1000  # the budget, as podman counts MB
GRACE_S = 10  # shutdown.grace given to each container


def podman(*args, timeout=60, check=True):
    r = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {r.stderr.strip()}")
    return r


def why_podman_cannot_run():
    if shutil.which("podman") is None:
        return "podman is not installed (tests/lib/deps.sh test installs it)"
    if shutil.which("mmdebstrap") is None:
        return "mmdebstrap is not installed (tests/lib/deps.sh test installs it)"
    r = subprocess.run(["podman", "info"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        return "podman cannot run here: " + (r.stderr.strip().splitlines() or ["?"])[-1]
    return None


@pytest.fixture(scope="module")
def image():
    os.environ.setdefault("CONTAINERS_CONF", str(LIB / "containers.conf"))
    why = why_podman_cannot_run()
    if why:
        if os.environ.get("PM_REQUIRE_PODMAN") == "1":
            pytest.fail(why + " (PM_REQUIRE_PODMAN=1)")
        pytest.skip(why)
    r = subprocess.run(["sh", str(LIB / "base-image.sh")], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["podman", "build", "--pull=never", "--network", "host",
                        "--format", "docker", "-f", str(ROOT / "docker" / "Dockerfile"),
                        "-t", IMAGE, str(ROOT)], capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return IMAGE


class Container:
    """One detached container of the image; removed on close."""

    def __init__(self, image, role, publish=(), env=None, args=(), network=None):
        argv = ["run", "-d", "-e", f"P2PMESH_ROLE={role}",
                "-e", f"P2PMESH_SHUTDOWN_GRACE={GRACE_S}s"]
        for host_port, port in publish:
            argv += ["-p", f"127.0.0.1:{host_port}:{port}"]
        for k, v in (env or {}).items():
            argv += ["-e", f"{k}={v}"]
        if network:
            argv += ["--network", network]
        self.id = podman(*argv, image, *args).stdout.strip()

    def logs(self):
        r = podman("logs", self.id, check=False)
        return r.stdout + r.stderr

    def wait_health(self, port, timeout=20.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = helpers.http_get(port, "/health", timeout=2.0)
                if last.status == 200:
                    return json.loads(last.body)
            except OSError as e:
                last = e
            time.sleep(0.2)
        raise AssertionError(f"/health on {port}: {last}\n{self.logs()}")

    def terminate(self):
        """SIGTERM; (exit code, seconds until it exited)."""
        t0 = time.monotonic()
        podman("kill", "--signal", "TERM", self.id)
        r = podman("wait", self.id, timeout=GRACE_S + 20)
        return int(r.stdout.strip()), time.monotonic() - t0

    def close(self):
        podman("rm", "-f", "-t", "0", self.id, check=False)


@pytest.fixture
def started():
    boxes = []
    yield boxes
    for c in boxes:
        c.close()


def test_image_contract(image):
    info = json.loads(podman("image", "inspect", image).stdout)[0]
    assert info["Size"] < MAX_IMAGE_BYTES, f"image is {info['Size'] / 1e6:.1f} MB"
    cfg = info["Config"]
    assert cfg["Entrypoint"] == ["p2pmesh"]
    assert cfg["User"] == "10001:10001"
    assert cfg["StopSignal"] in ("SIGTERM", "15")
    assert info["Healthcheck"]["Test"] == ["CMD", "p2pmesh", "--probe"]
    assert not any(e.startswith("P2PMESH_ROLE=") for e in cfg.get("Env") or [])
    assert {"8080/tcp", "3000/tcp", "8443/tcp"} <= set(cfg["ExposedPorts"])


def test_no_role_is_a_clear_error(image):
    r = podman("run", "--rm", "--no-healthcheck", image, check=False)
    assert r.returncode == 2
    assert "no role given" in r.stderr and "P2PMESH_ROLE" in r.stderr


@pytest.mark.parametrize("role,port", [("signaling", 8080), ("chat", 3000), ("game", 8080)])
def test_role_serves_health_and_drains_on_sigterm(image, started, role, port):
    host = helpers.free_port()
    c = Container(image, role, publish=[(host, port)])
    started.append(c)
    health = c.wait_health(host)
    assert health["status"] == "ok" and health["role"] == role
    # the image's HEALTHCHECK command, run as podman would
    assert podman("healthcheck", "run", c.id, check=False).returncode == 0, c.logs()
    ws = helpers.RawWS(host, "/") if role == "signaling" else None
    try:
        code, took = c.terminate()
        if ws is not None:
            assert ws.expect_close(timeout=5.0) == 1001
    finally:
        if ws is not None:
            ws.close()
    assert code == 0, c.logs()
    assert took < GRACE_S, f"{role} took {took:.1f}s to stop"
    logs = c.logs()
    assert '"event":"shutdown_started"' in logs and '"event":"shutdown_complete"' in logs


def test_tunnel_with_pem_secrets_from_the_environment(image, started, tmp_path):
    """The seed's ECS style: the certificates arrive as CERT_PEM, KEY_PEM
    and CA_PEM (Secrets Manager values); /health on the admin port, mTLS
    on 8443."""
    certs = tmp_path / "certs"
    r = helpers.run_cli("--role=tunnel", f"--tunnel.gen_certs={certs}", timeout=60)
    assert r.returncode == 0, r.stderr
    env = {"CERT_PEM": (certs / "server.crt").read_text(),
           "KEY_PEM": (certs / "server.key").read_text(),
           "CA_PEM": (certs / "ca.crt").read_text(),
           "P2PMESH_TUNNEL_ALLOW_HOSTS": "127.0.0.1"}
    admin, main = helpers.free_port(), helpers.free_port()
    c = Container(image, "tunnel", publish=[(admin, 8080), (main, 8443)], env=env)
    started.append(c)
    assert c.wait_health(admin)["role"] == "tunnel"
    assert podman("healthcheck", "run", c.id, check=False).returncode == 0, c.logs()
    # the main port wants a client certificate: curl with the agent's gets
    # the proxy's refusal of a plain GET, curl without one fails the handshake
    with_cert = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert",
         str(certs / "ca.crt"), "--cert", str(certs / "agent.crt"), "--key",
         str(certs / "agent.key"), "--resolve", f"p2pmesh-tunnel:{main}:127.0.0.1",
         f"https://p2pmesh-tunnel:{main}/"], capture_output=True, text=True, timeout=20)
    assert with_cert.stdout.strip().isdigit() and with_cert.stdout.strip() != "000", \
        with_cert.stderr
    without = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "--cacert", str(certs / "ca.crt"), "--resolve",
         f"p2pmesh-tunnel:{main}:127.0.0.1", f"https://p2pmesh-tunnel:{main}/"],
        capture_output=True, text=True, timeout=20)
    assert without.returncode != 0
    code, took = c.terminate()
    assert code == 0 and took < GRACE_S, c.logs()


def test_lambda_role_as_a_container_image(image, started):
    """The image is also a Lambda container image: with P2PMESH_ROLE=lambda
    it polls the Runtime API and answers API Gateway events."""
    emu = Emulator()
    try:
        env = emu.env()
        env.update({"P2PMESH_LAMBDA_DYNAMODB_TABLE": "p2pmesh-connections",
                    "P2PMESH_LAMBDA_DYNAMODB_ENDPOINT": emu.dynamodb_url,
                    "P2PMESH_SIGNALING_APIGW_ENDPOINT": emu.apigw_url})
        c = Container(image, "lambda", env=env, network="host")
        started.append(c)
        assert emu.wait_ready(20.0), c.logs()
        join_two_peers(emu)
        code, _ = c.terminate()
        assert code == 0, c.logs()
    finally:
        emu.close()


def test_lambda_zip_target(image, tmp_path):
    """`--target lambda --output DIR` leaves the Lambda zip for the build
    platform's architecture (the native arm64 path on an arm64 builder)."""
    out = tmp_path / "dist"
    r = subprocess.run(["podman", "build", "--pull=never", "--network", "host", "--format",
                        "docker", "-f", str(ROOT / "docker" / "Dockerfile"), "--target", "lambda",
                        "--output", f"type=local,dest={out}", str(ROOT)],
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    arch = os.uname().machine
    zips = sorted(p.name for p in out.iterdir())
    assert zips == [f"p2pmesh-lambda-{arch}.zip"], zips
    with zipfile.ZipFile(out / zips[0]) as z:
        names = z.namelist()
        assert "bootstrap" in names and "bin/p2pmesh" in names
        assert any(n.startswith("lib/ld-linux") for n in names), names
        assert b"--role=lambda" in z.read("bootstrap")
