#!/usr/bin/env bash
# Run a sweep YAML offline with W&B's sweeps engine (no W&B server), JOBS trials at a time (default 2).
# Run it again to resume an interrupted sweep: finished trials are kept, running ones rerun.
#   bash tasks/sweep_local.sh [training/sweep_mnist.yaml] [--count N] [--state DIR] [--nowandb]
set -euo pipefail
cd "$(dirname "$0")/.."
yaml=${1:-training/sweep_mnist.yaml}
shift || true
exec python training/local_sweep.py "$yaml" --jobs "${JOBS:-2}" "$@"
