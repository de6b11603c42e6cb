"""pm_db against a real PostgreSQL: runs the Check binary tests/unit/test_db
with PM_TEST_PG_URL pointing at a server started here, and with shell
commands that stop it (pg_ctl stop -m immediate) and start it again, so
that its PostgreSQL cases run: every case on both backends, up after
connect, and the server killed under load (each unit completes once,
"down", PM_EUNAVAIL at once, back "up" by itself with the data there).
Each PostgreSQL case prints "PM_TEST_PG_CASE <name>" when it ran to its
end; a run that skipped one fails here.

The binary is PM_TEST_DB_BIN, or tests/unit/test_db next to PM_BIN's
directory, or in this repository (built by make check).
"""

import os
import re
import subprocess
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[2]

PG_CASES = {
    "migrations_apply_once",
    "round_trip_with_nulls",
    "placeholders_out_of_order",
    "unique_violation_is_conflict",
    "txn_all_or_nothing",
    "burst_completes_in_order_and_persists",
    "failing_unit_keeps_neighbours",
    "flush_after_everything_before",
    "snapshot",
    "free_keeps_queued_writes",
    "free_inside_callback",
    "pg_state_reports_up",
    "pg_free_inside_state_callback",
    "pg_server_restart",
}

SUMMARY = re.compile(r"^100%: Checks: (\d+), Failures: 0, Errors: 0$", re.M)


def unit_binary():
    if os.environ.get("PM_TEST_DB_BIN"):
        return Path(os.environ["PM_TEST_DB_BIN"])
    if os.environ.get("PM_BIN"):
        return Path(os.environ["PM_BIN"]).resolve().parent / "tests" / "unit" / "test_db"
    return ROOT / "tests" / "unit" / "test_db"


@pytest.fixture(scope="module")
def test_db():
    path = unit_binary()
    if not os.access(path, os.X_OK):
        msg = "%s not built (make check builds it)" % path
        if os.environ.get("PM_REQUIRE_BIN"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def run_unit(path, extra, cwd):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PM_TEST_PG_")}
    env.update(extra)
    return subprocess.run([str(path)], env=env, cwd=str(cwd), capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL)


def test_unit_db_passes_against_postgres(pg_server, test_db, tmp_path):
    r = run_unit(test_db, {
        "PM_TEST_PG_URL": pg_server.url(),
        "PM_TEST_PG_STOP": pg_server.stop_command("immediate"),
        "PM_TEST_PG_START": pg_server.start_command(),
    }, tmp_path)
    out = r.stdout + r.stderr + "\n--- postgresql log ---\n" + pg_server.log_text()[-3000:]
    assert r.returncode == 0, out[-9000:]
    assert SUMMARY.search(r.stdout), out[-9000:]
    ran = set(re.findall(r"^PM_TEST_PG_CASE (\S+)$", r.stdout, re.M))
    assert ran == PG_CASES, "missing %s, unexpected %s" % (PG_CASES - ran, ran - PG_CASES)
    # The restart case left the server running; its schemas are gone.
    assert pg_server.psql("SELECT count(*) FROM pg_namespace "
                          "WHERE nspname LIKE 'pm_test_%'") == "0"


def test_unit_db_without_postgres_skips_its_cases(test_db, tmp_path):
    r = run_unit(test_db, {}, tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    assert SUMMARY.search(r.stdout), out[-6000:]
    assert "PM_TEST_PG_CASE" not in r.stdout
