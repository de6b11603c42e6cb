"""A real PostgreSQL server for the integration tests.

The recipe of docs tooling section 2: initdb into a temp dir owned by the
postgres user (runuser when the tests run as root), trust auth, pg_ctl
start on a free port of 127.0.0.1 with fsync off, CREATE DATABASE p2pmesh.
Start to ready takes 1-3 s, so the fixture is per module.

    pytest_plugins = ["pg"]             # a test module: the pg_server fixture
    from pg import PgServer, pg_bindir  # conftest or other fixtures

PgServer.stop(mode) and start() take the server down and bring it back on
the same port and data ("immediate" is a crash: no shutdown checkpoint);
start_command() and stop_command() are the same as shell lines, for a
child process (a unit-test binary) to run itself.
"""

import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from helpers import free_port


def pg_bindir():
    """The newest /usr/lib/postgresql/<version>/bin that has initdb, or None."""
    base = Path("/usr/lib/postgresql")
    if not base.is_dir():
        return None
    cands = [p for p in base.glob("*/bin") if (p / "initdb").exists()]
    cands.sort(key=lambda p: [int(x) if x.isdigit() else 0
                              for x in p.parent.name.split(".")])
    return cands[-1] if cands else None


def pg_available():
    return pg_bindir() is not None and shutil.which("psql") is not None


class PgServer:
    """One PostgreSQL cluster in a temp dir; close() stops and removes it."""

    def __init__(self, dbname="p2pmesh"):
        self.bindir = pg_bindir()
        if self.bindir is None:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql")
        self.dir = Path(tempfile.mkdtemp(prefix="pm-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.dbname = dbname
        try:
            if os.geteuid() == 0:
                shutil.chown(self.dir, "postgres", "postgres")
            os.chmod(self.dir, 0o700)
            self._run(self._as_pg([str(self.bindir / "initdb"), "-D", str(self.data),
                                   "-U", "postgres", "-A", "trust", "-E", "UTF8",
                                   "--no-locale"]), timeout=120)
            self.start()
            self.psql("CREATE DATABASE %s" % dbname, dbname="postgres")
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _as_pg(argv):
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--"] + argv
        return argv

    @staticmethod
    def _run(argv, timeout=60):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise RuntimeError("%s failed (%d): %s %s"
                               % (shlex.join(argv), r.returncode, r.stdout, r.stderr))
        return r

    def start_argv(self):
        opts = ("-c listen_addresses=127.0.0.1 -c port=%d -c unix_socket_directories=%s "
                "-c fsync=off" % (self.port, self.dir))
        return self._as_pg([str(self.bindir / "pg_ctl"), "-D", str(self.data),
                            "-l", str(self.dir / "pg.log"), "-w", "-t", "60",
                            "start", "-o", opts])

    def stop_argv(self, mode="fast"):
        return self._as_pg([str(self.bindir / "pg_ctl"), "-D", str(self.data),
                            "-m", mode, "-w", "-t", "60", "stop"])

    def start_command(self):
        return shlex.join(self.start_argv()) + " >/dev/null"

    def stop_command(self, mode="immediate"):
        return shlex.join(self.stop_argv(mode)) + " >/dev/null"

    def start(self):
        self._run(self.start_argv(), timeout=90)

    def stop(self, mode="fast"):
        self._run(self.stop_argv(mode), timeout=90)

    def url(self, dbname=None):
        return "postgresql://postgres@127.0.0.1:%d/%s" % (self.port, dbname or self.dbname)

    def psql(self, sql, dbname=None):
        """Run sql; its rows as text (fields separated by |), stripped."""
        r = self._run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                       "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                       "-d", dbname or self.dbname, "-c", sql], timeout=30)
        return r.stdout.strip()

    def log_text(self):
        try:
            return (self.dir / "pg.log").read_text(errors="replace")
        except OSError:
            return ""

    def close(self):
        if (self.data / "postmaster.pid").exists():
            try:
                self.stop("fast")
            except Exception:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_server():
    """A private PostgreSQL for the module (see PgServer); skips without one."""
    if not pg_available():
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    srv = PgServer()
    yield srv
    srv.close()
