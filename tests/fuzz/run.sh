#!/bin/sh
# tests/fuzz/run.sh [SECONDS]: build the libFuzzer targets (make fuzz) and
# run each one, one after the other, for SECONDS (default 60) over a copy
# of its seed corpus. A crash, leak, timeout or out-of-memory input is
# copied to tests/fuzz/regressions/<name>/ (in the source tree) and the
# script exits non-zero naming the target and the input. One summary line
# per target: executions, exec/s, coverage (cov) and features (ft).
# Run from the build directory (or set BUILDDIR); CI-optional.
# Environment: FUZZ_TARGETS (names, default all), FUZZ_JOBS (make -j).
set -u

secs=${1:-60}
here=$(cd "$(dirname "$0")" && pwd)
srcdir=$(cd "$here/../.." && pwd)
builddir=${BUILDDIR:-$(pwd)}
if [ ! -f "$builddir/Makefile" ]; then
    builddir=$srcdir
fi
targets=${FUZZ_TARGETS:-"http ws jwt config redis raft signaling game chat game_msg raft_frame sig_cluster"}

max_len_of() {
    case $1 in
    http | redis) echo 8192 ;;
    ws) echo 16384 ;;
    jwt) echo 2048 ;;
    config) echo 4096 ;;
    *) echo 4096 ;;
    esac
}

make -C "$builddir" -j"${FUZZ_JOBS:-2}" fuzz >/dev/null || {
    echo "run.sh: make fuzz failed" >&2
    exit 2
}

work=$(mktemp -d "${TMPDIR:-/tmp}/pm-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
failed=0
for t in $targets; do
    bin=$builddir/tests/fuzz/fuzz_$t
    corpus=$work/$t
    mkdir -p "$corpus" "$work/art-$t"
    cp "$srcdir/tests/fuzz/corpus/$t/"* "$corpus/" 2>/dev/null
    if [ -d "$srcdir/tests/fuzz/regressions/$t" ]; then
        cp "$srcdir/tests/fuzz/regressions/$t/"* "$corpus/" 2>/dev/null
    fi
    log=$work/$t.log
    "$bin" -max_total_time="$secs" -max_len="$(max_len_of "$t")" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$work/art-$t/" "$corpus" </dev/null >"$log" 2>&1
    rc=$?
    done_line=$(grep -E '^#[0-9]+.*(DONE|cov:)' "$log" | tail -n 1)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    cov=$(echo "$done_line" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
    ft=$(echo "$done_line" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
    printf '%-10s execs=%s exec/s=%s cov=%s ft=%s' "$t" "${execs:-?}" \
        "${rate:-?}" "${cov:-?}" "${ft:-?}"
    found=0
    for a in "$work/art-$t"/*; do
        [ -f "$a" ] || continue
        found=1
        mkdir -p "$srcdir/tests/fuzz/regressions/$t"
        cp "$a" "$srcdir/tests/fuzz/regressions/$t/"
        echo
        echo "run.sh: $t: failing input saved as tests/fuzz/regressions/$t/$(basename "$a")" >&2
    done
    if [ "$rc" -ne 0 ] || [ "$found" -ne 0 ]; then
        failed=1
        echo " FAILED (exit $rc)"
        grep -E 'ERROR|invariant failed|SUMMARY' "$log" | head -n 5 >&2
    else
        echo " ok"
    fi
done
exit "$failed"
