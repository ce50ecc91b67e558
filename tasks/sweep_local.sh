#!/usr/bin/env bash
# Run a sweep YAML offline (no W&B server), JOBS trials at a time (default 2).
# Run it again to resume an interrupted sweep: finished trials are kept, running ones rerun.
#   bash tasks/sweep_local.sh [training/sweep_mnist.yaml] [--count N] [--state DIR] [--nowandb]
# The flags may come before or after the YAML.
set -euo pipefail
cd "$(dirname "$0")/.."
source tasks/lib/args.sh
split_args "--count --jobs -j --state --gpu" "$@"
((${#positional[@]})) || positional=(training/sweep_mnist.yaml)
exec python training/local_sweep.py "${positional[@]}" --jobs "${JOBS:-2}" "${flags[@]}"
