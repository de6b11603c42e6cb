"""The Lambda zip (infra/lambda/package.sh): unzipped, its bootstrap runs
the bundled binary through the bundled loader and libraries, with nothing
from the host's library path, and serves signaling against the emulator."""

import os
import subprocess
import zipfile
from pathlib import Path

import pytest

import helpers
from lambda_emu import Emulator, join_two_peers

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "infra" / "lambda" / "package.sh"


@pytest.fixture
def unzipped(tmp_path):
    out = tmp_path / "fn.zip"
    r = subprocess.run(["sh", str(PACKAGE), helpers.BIN, str(out)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    task = tmp_path / "task"
    with zipfile.ZipFile(out) as z:
        names = z.namelist()
        assert "bootstrap" in names and "bin/p2pmesh" in names
        assert any(n.startswith("lib/ld-linux") for n in names), names
        z.extractall(task)
        for info in z.infolist():  # zipfile drops the mode bits: restore them
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(task / info.filename, mode)
    assert os.access(task / "bootstrap", os.X_OK)
    return task


def test_usage_error():
    r = subprocess.run(["sh", str(PACKAGE)], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr


def test_bootstrap_serves_from_the_zip(unzipped, tmp_path):
    emu = Emulator()
    try:
        env = emu.env()
        env.update({"LAMBDA_TASK_ROOT": str(unzipped), "PATH": "/usr/bin:/bin",
                    "P2PMESH_LAMBDA_DYNAMODB_TABLE": "p2pmesh-connections",
                    "P2PMESH_LAMBDA_DYNAMODB_ENDPOINT": emu.dynamodb_url,
                    "P2PMESH_SIGNALING_APIGW_ENDPOINT": emu.apigw_url})
        env.pop("LD_LIBRARY_PATH", None)
        with open(tmp_path / "out.log", "wb") as out:
            proc = emu.popen([str(unzipped / "bootstrap")], env=env, stdout=out,
                             stderr=subprocess.STDOUT, cwd=str(unzipped))
            try:
                assert emu.wait_ready(5.0), (tmp_path / "out.log").read_text()
                join_two_peers(emu)
            finally:
                proc.terminate()
                proc.wait(5)
        # the process ran the bundled loader, not the host's
        maps_hint = (tmp_path / "out.log").read_text()
        assert "error while loading shared libraries" not in maps_hint
    finally:
        emu.close()
