"""make install / make uninstall (Makefile.am: install-data-local).

Runs `make -s install DESTDIR=tmp prefix=/usr` in the build directory,
the one holding PM_BIN, and checks what lands where: the binary, the web
clients, the sample configurations and env file, the docs and the
systemd unit with ExecStart pointed at $(bindir). The installed unit is
verified inside DESTDIR with `systemd-analyze verify --root=`. Then
`make -s uninstall` must leave no file behind.

Only the install and uninstall targets run (they rebuild nothing in an
up-to-date build directory), without the MAKEFLAGS of a surrounding make
(`make check`), and one test process at a time per build directory.
"""

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import helpers

BIN = Path(os.environ.get("PM_BIN") or helpers.REPO / "p2pmesh").resolve()
BUILD = BIN.parent

BINDIR = "usr/bin"
UNITDIR = "usr/lib/systemd/system"
DATADIR = "usr/share/p2pmesh"
DOCDIR = "usr/share/doc/p2pmesh"
# installed path (under DESTDIR) -> source path (under the source tree)
WEB = {"%s/web/%s/%s" % (DATADIR, role, f): "roles/%s/web/%s" % (role, f)
       for role in ("chat", "game") for f in ("index.html", "app.js", "app.css")}
EXAMPLES = {"%s/examples/%s" % (DOCDIR, os.path.basename(src)): src
            for src in ("config/signaling.conf.sample", "config/chat.conf.sample",
                        "config/game.conf.sample", "infra/systemd/p2pmesh.env.example")}
DOCS = {"%s/%s" % (DOCDIR, os.path.basename(src)): src
        for src in ("README.md", "docs/deploy.md", "docs/chat.md", "docs/tunnel.md",
                    "docs/game.md", "docs/security.md")}
UNIT = "%s/p2pmesh@.service" % UNITDIR


def srcdir():
    """abs_top_srcdir from the build directory's Makefile."""
    for line in (BUILD / "Makefile").read_text().splitlines():
        if line.startswith("abs_top_srcdir = "):
            return Path(line.split("=", 1)[1].strip())
    raise AssertionError("no abs_top_srcdir in %s/Makefile" % BUILD)


def make(*args, timeout=300):
    """make -s in BUILD, outside any surrounding make's jobserver, under
    a lock shared by every test process using this build directory."""
    if not (BUILD / "Makefile").exists():
        pytest.skip("no Makefile next to %s: not a configured build directory" % BIN)
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "DESTDIR")}
    lock = "/tmp/p2pmesh-install-test-%s.lock" % hashlib.sha256(str(BUILD).encode()).hexdigest()[:12]
    with open(lock, "a") as fd:
        fcntl.flock(fd, fcntl.LOCK_EX)
        r = subprocess.run(["make", "-s", "-C", str(BUILD), *args], capture_output=True,
                           text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, ("make %s" % " ".join(args), r.stdout[-3000:], r.stderr[-3000:])
    return r


def files_under(root):
    root = Path(root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() or p.is_symlink())


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def destdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("destdir")
    before = sha(BIN)
    make("install", "DESTDIR=%s" % d, "prefix=/usr")
    assert sha(BIN) == before, "make install rebuilt p2pmesh: the build directory was out of date"
    return d


def test_install_puts_every_file(destdir):
    src = srcdir()
    got = set(files_under(destdir))
    want = {"%s/p2pmesh" % BINDIR, UNIT} | set(WEB) | set(EXAMPLES) | set(DOCS)
    assert want <= got, sorted(want - got)
    # Nothing strays outside the package's own directories.
    stray = [f for f in got if not f.startswith(("%s/p2pmesh" % BINDIR, UNIT, DATADIR + "/",
                                                 DOCDIR + "/"))]
    assert not stray, stray
    exe = destdir / BINDIR / "p2pmesh"
    assert os.access(exe, os.X_OK) and sha(exe) == sha(BIN)
    for inst, orig in {**WEB, **EXAMPLES, **DOCS}.items():
        assert sha(destdir / inst) == sha(src / orig), inst
        assert (destdir / inst).stat().st_mode & 0o777 == 0o644, inst


def expected_unit(exec_path):
    text = (srcdir() / "infra/systemd/p2pmesh@.service").read_text()
    assert text.count("ExecStart=/usr/local/bin/p2pmesh --role=%i\n") == 1
    return text.replace("ExecStart=/usr/local/bin/p2pmesh --role=%i\n",
                        "ExecStart=%s --role=%%i\n" % exec_path)


def test_installed_unit_runs_bindir_p2pmesh(destdir):
    text = (destdir / UNIT).read_text()
    assert [l for l in text.splitlines() if l.startswith("ExecStart=")] == \
        ["ExecStart=/usr/bin/p2pmesh --role=%i"]
    # Otherwise the unit is the shipped one.
    assert text == expected_unit("/usr/bin/p2pmesh")


def verify_root(destdir, tmp_path):
    """A copy of DESTDIR that systemd-analyze --root= can load: the unit's
    targets and /bin/sh (ExecReload) besides what make installed."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    root = tmp_path / "root"
    shutil.copytree(destdir, root, symlinks=True)
    units = root / UNITDIR
    for name in ("sysinit.target", "basic.target", "shutdown.target",
                 "network-online.target", "multi-user.target"):
        host = Path("/lib/systemd/system") / name
        if host.exists():
            shutil.copy(host, units / name)
        else:
            (units / name).write_text("[Unit]\nDescription=%s\n" % name)
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy("/bin/sh", root / "bin" / "sh")
    return root


def analyze_verify(root):
    r = subprocess.run(["systemd-analyze", "verify", "--root=%s" % root,
                        "p2pmesh@signaling.service"], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    return (r.stdout + r.stderr).strip(), r.returncode


def test_installed_unit_verifies_in_destdir(destdir, tmp_path):
    root = verify_root(destdir, tmp_path)
    out, rc = analyze_verify(root)
    assert (out, rc) == ("", 0), out
    # Control: --root= really resolves ExecStart inside DESTDIR.
    (root / BINDIR / "p2pmesh").unlink()
    out, rc = analyze_verify(root)
    assert "/usr/bin/p2pmesh is not executable" in out and rc != 0, out


def test_install_honours_bindir_and_unitdir(tmp_path):
    d = tmp_path / "custom"
    make("install", "DESTDIR=%s" % d, "prefix=/usr", "bindir=/opt/p2pmesh/bin",
         "systemdsystemunitdir=/etc/systemd/system")
    assert (d / "opt/p2pmesh/bin/p2pmesh").exists()
    assert not (d / BINDIR / "p2pmesh").exists()
    text = (d / "etc/systemd/system/p2pmesh@.service").read_text()
    assert text == expected_unit("/opt/p2pmesh/bin/p2pmesh")
    make("uninstall", "DESTDIR=%s" % d, "prefix=/usr", "bindir=/opt/p2pmesh/bin",
         "systemdsystemunitdir=/etc/systemd/system")
    assert files_under(d) == []


def test_uninstall_leaves_no_files(destdir):
    assert files_under(destdir)
    make("uninstall", "DESTDIR=%s" % destdir, "prefix=/usr")
    assert files_under(destdir) == []
