#!/bin/sh
# Run the pytest integration suite against the built binary (PM_BIN).
# Debian's interpreter is used explicitly: its python3-* packages
# (pytest, websockets) are not visible to other pythons on PATH.
# pytest's exit code 5 (no tests collected) counts as a failure here.
set -u
dir=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3
if ! "$py" -c 'import pytest, websockets' 2>/dev/null; then
    echo "python3-pytest and python3-websockets are missing: run tests/lib/deps.sh test"
    exit 99
fi
cd "$dir" || exit 99
# A missing binary must fail the suite, not skip every test.
PM_REQUIRE_BIN=1
export PM_REQUIRE_BIN
"$py" -m pytest -q -p no:cacheprovider "$dir"
rv=$?
[ "$rv" -eq 5 ] && { echo "pytest collected no tests"; exit 1; }
exit "$rv"
