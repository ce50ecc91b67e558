#!/usr/bin/env bash
# Run every benchmark; each prints its ratios measured in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
for b in bench/bench_*.py; do
  echo "== $b"
  python "$b" "$@"
done | tee /dev/stderr | grep -E '^ratio ' || true
