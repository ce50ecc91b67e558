#!/usr/bin/env bash
# Run every experiment of an experiments file side by side with GNU parallel, one GPU lease each
# (or shared CPU cores without a GPU). Exit status: the number of runs that failed.
#   bash tasks/run_sample_experiments.sh                                  # the synthetic sample, -j2
#   JOBS=4 bash tasks/run_sample_experiments.sh training/experiments/sample.json --save
set -euo pipefail
cd "$(dirname "$0")/.."
file="${1:-training/experiments/sample_synthetic.json}"
shift || true
command -v parallel >/dev/null || {
  echo "error: GNU parallel is not installed (Debian/Ubuntu: sudo apt-get install parallel)" >&2
  exit 2
}
python training/prepare_experiments.py "$file" "$@" | parallel --will-cite -j"${JOBS:-2}" --line-buffer --tagstring '[run {#}]'
