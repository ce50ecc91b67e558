#!/usr/bin/env bash
# Create a W&B sweep from a YAML and run one `wandb agent` per GPU (each sees only its GPU), or one
# agent on the CPU when there is none. Needs `wandb login` (or WANDB_API_KEY): without one it says
# how to run the same YAML offline and exits 2. Joins an existing sweep when SWEEP_ID
# (ENTITY/PROJECT/ID) is set.
#   bash tasks/sweep_wandb.sh [training/sweep_emnist.yaml] [extra `wandb agent` flags, e.g. --count 4]
# The flags may come before or after the YAML.
set -euo pipefail
cd "$(dirname "$0")/.."
source tasks/lib/args.sh
split_args "--count --project -p --entity -e" "$@"
if ((${#positional[@]} > 1)); then
  echo "error: one sweep YAML, got ${#positional[@]}: ${positional[*]}" >&2
  exit 2
fi
yaml=${positional[0]:-training/sweep_emnist.yaml}
set -- "${flags[@]}"
project=${WANDB_PROJECT:-text-recognizer}

# Why W&B cannot be used here (nothing when it can): W&B turned off, no wandb command, or no API
# key in WANDB_API_KEY, the .netrc entry `wandb login` writes, or wandb's settings file.
wandb_problem() {
  case "${WANDB_MODE:-}" in
    offline | disabled | dryrun) echo "W&B is off here (WANDB_MODE=$WANDB_MODE)"; return ;;
  esac
  command -v wandb >/dev/null 2>&1 || { echo "the wandb command is not installed"; return; }
  [[ -n "${WANDB_API_KEY:-}" ]] && return
  python - <<'PY'
import netrc
import os
from pathlib import Path
from urllib.parse import urlsplit

url = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
try:
    host = urlsplit(url).netloc
except ValueError:
    host = url
paths = [os.environ["NETRC"]] if os.environ.get("NETRC") else ["~/.netrc", "~/_netrc"]
# A file that cannot be found, read or parsed (no home, not UTF-8, malformed, a folder) gives no
# login, never a traceback.
for path in paths:
    try:
        entry = netrc.netrc(Path(path).expanduser()).authenticators(host)
    except Exception:
        continue
    if entry and entry[2]:
        raise SystemExit(0)
try:
    config = Path(os.environ.get("WANDB_CONFIG_DIR") or "~/.config/wandb").expanduser()
    with (config / "settings").open() as settings:
        logged_in = any(line.split("=")[0].strip() == "api_key" for line in settings)
except Exception:
    logged_in = False
if logged_in:
    raise SystemExit(0)
print(f"not logged in to W&B (no WANDB_API_KEY, no {host} entry in {paths[0]})")
PY
}

problem=$(wandb_problem)
if [[ -n "$problem" ]]; then
  echo "error: $problem: run \`wandb login\` (or set WANDB_API_KEY), then run this again" >&2
  echo "or run the sweep offline: bash tasks/sweep_local.sh $yaml --nowandb (or python training/local_sweep.py $yaml)" >&2
  exit 2
fi

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
