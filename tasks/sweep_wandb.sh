#!/usr/bin/env bash
# Create a W&B sweep from a YAML and run one `wandb agent` per GPU (each sees only its GPU), or one
# agent on the CPU when there is none. Needs `wandb login`. Joins an existing sweep when SWEEP_ID
# (ENTITY/PROJECT/ID) is set.
#   bash tasks/sweep_wandb.sh [training/sweep_emnist.yaml] [extra `wandb agent` flags, e.g. --count 4]
set -euo pipefail
cd "$(dirname "$0")/.."
yaml=${1:-training/sweep_emnist.yaml}
shift || true
project=${WANDB_PROJECT:-text-recognizer}
if [[ -z "${SWEEP_ID:-}" ]]; then
  python training/local_sweep.py --check "$yaml"   # only training/run_sweep.py, the plain command
  created=$(wandb sweep --project "$project" "$yaml" 2>&1 | tee /dev/stderr)
  SWEEP_ID=$(sed 's/\x1b\[[0-9;]*m//g' <<<"$created" | grep -o 'wandb agent [^ ]*' | tail -1 | cut -d' ' -f3)
  [[ -n "$SWEEP_ID" ]] || { echo "error: could not read the sweep id from 'wandb sweep'" >&2; exit 2; }
fi
gpus=$( (nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null || true) | tr -d ' ')
if [[ -z "$gpus" ]]; then
  echo "no GPU: one agent on the CPU for sweep $SWEEP_ID" >&2
  exec wandb agent "$@" "$SWEEP_ID"
fi
for gpu in $gpus; do
  echo "agent on GPU $gpu for sweep $SWEEP_ID" >&2
  CUDA_VISIBLE_DEVICES=$gpu wandb agent "$@" "$SWEEP_ID" &
done
wait
