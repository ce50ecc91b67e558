#!/usr/bin/env bash
# Run every benchmark (each measures its ratios in one run), then print ONE table of all ratios.
#   bash tasks/bench.sh [args passed to every bench/bench_*.py]
# Exit status: the number of benchmarks that failed (a MISSED target is reported, not an error).
#   bash tasks/bench.sh device [args]   the GPU readiness check instead (bench/device_check.py:
#                                       precision, channels_last, compile; ~3 min on a GPU)
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == device ]]; then
  shift
  exec python bench/device_check.py "$@"
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
failed=0
for b in bench/bench_*.py; do
  echo "== $b" | tee -a "$log"
  python "$b" "$@" 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  if [[ $rc -ne 0 ]]; then
    echo "!! $b exited $rc" | tee -a "$log"
    failed=$((failed + 1))
  fi
done
echo
echo "== ratios (all benchmarks)"
awk '
  /^== bench\// { bench = $2; sub(/^bench\/bench_/, "", bench); sub(/\.py$/, "", bench); next }
  /^ratio / {
    line = $0; sub(/^ratio /, "", line)
    verdict = (line ~ /MISSED/) ? "MISSED" : "ok"; sub(/  MISSED$/, "", line)
    n++; b[n] = bench; r[n] = line; v[n] = verdict
    if (length(bench) > wb) wb = length(bench); if (length(line) > wr) wr = length(line)
  }
  END {
    if (!n) { print "(no ratio lines)"; exit }
    printf "%-" wb "s  %-" wr "s  %s\n", "bench", "ratio", "verdict"
    for (i = 1; i <= n; i++) printf "%-" wb "s  %-" wr "s  %s\n", b[i], r[i], v[i]
  }' "$log"
exit "$failed"
