"""The deployment files hold together: the compose stack's settings are
all keys and values the binary accepts, the Dockerfiles pass
dockerfile-utils, and every shell script passes shellcheck."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import helpers

ROOT = Path(__file__).resolve().parents[2]
NODE_BIN = ROOT / "tests" / "node_modules" / ".bin"
GRACE_S = 25  # shutdown.grace default


def compose():
    yaml = pytest.importorskip("yaml", reason="python3-yaml is missing")
    return yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())


def p2pmesh_services(doc):
    return {name: svc for name, svc in doc["services"].items()
            if svc.get("image", "").startswith("localhost/p2pmesh:")}


def duration_s(text):
    m = re.fullmatch(r"(\d+)(s|m)", text)
    assert m, text
    return int(m.group(1)) * (60 if m.group(2) == "m" else 1)


def test_compose_has_every_server_role():
    doc = compose()
    roles = {svc.get("environment", {}).get("P2PMESH_ROLE")
             for svc in p2pmesh_services(doc).values()}
    assert {"signaling", "chat", "game", "tunnel"} <= roles
    assert {"redis", "postgres", "nginx-rtmp"} <= set(doc["services"])
    for name, svc in p2pmesh_services(doc).items():
        assert svc["build"]["dockerfile"] == "docker/Dockerfile", name
        # longer than the drain, so compose never SIGKILLs a draining node
        assert duration_s(svc["stop_grace_period"]) > GRACE_S, name


def test_compose_settings_are_valid_configurations(tmp_path):
    """Each service's environment, given to the binary, passes
    --check-config (an unknown key, alias or bad value exits 2)."""
    certs = tmp_path / "certs"
    r = helpers.run_cli("--role=tunnel", f"--tunnel.gen_certs={certs}", timeout=60)
    assert r.returncode == 0, r.stderr
    checked = 0
    for name, svc in p2pmesh_services(compose()).items():
        env = {k: str(v).replace("/var/lib/p2pmesh/certs", str(certs))
               for k, v in (svc.get("environment") or {}).items()}
        if "P2PMESH_ROLE" not in env:
            continue
        r = subprocess.run([helpers.BIN, "--check-config"], env=helpers.clean_env(env),
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, f"{name}: {r.stderr}"
        assert f"role {env['P2PMESH_ROLE']} is valid" in r.stdout
        checked += 1
    assert checked >= 6


def test_nginx_rtmp_calls_the_chat_callbacks():
    conf = (ROOT / "docker" / "nginx-rtmp" / "nginx.conf.template").read_text()
    for hook, path in (("on_publish", "start"), ("on_publish_done", "stop"),
                       ("on_update", "update")):
        assert re.search(rf"\b{hook} @CHAT_URL@/stream/{path};", conf), hook
    assert "notify_method post;" in conf


@pytest.mark.parametrize("dockerfile", ["docker/Dockerfile", "docker/nginx-rtmp/Dockerfile"])
def test_dockerfile_lint(dockerfile):
    tool = NODE_BIN / "dockerfile-utils"
    if not tool.exists():
        pytest.skip("dockerfile-utils is missing (tests/lib/deps.sh test)")
    r = subprocess.run([str(tool), "lint", str(ROOT / dockerfile)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "", r.stdout + r.stderr


def shell_scripts():
    found = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if (not path.is_file() or "node_modules" in rel.parts or rel.parts[0] in (
                ".git", "autom4te.cache", "build-aux") or path.name == "configure"
                or rel.parts[0].startswith("p2pmesh-")):
            continue
        if path.suffix == ".sh" or rel.as_posix() in (".ci/run", "autogen.sh"):
            found.append(path)
    return sorted(found)


def test_shellcheck_every_script():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is missing (tests/lib/deps.sh test)")
    scripts = shell_scripts()
    assert len(scripts) >= 8, scripts
    r = subprocess.run(["shellcheck", *map(str, scripts)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-4000:]
