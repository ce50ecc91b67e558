#!/usr/bin/env bash
# The Kaggle names chain: pretrain htr_crnn on synthetic name lines in Debian's handwriting fonts,
# then fine-tune it on the real names (init_from), and print the final run folder on the last line.
#   DATA_DIR=folder bash tasks/train_kaggle_names.sh [--nowandb]
# DATA_DIR is the Kaggle data folder (default: the shared copy, ../shared/data/kaggle_handwriting_names,
# with 20 % of its labelled images held out as test); a folder in the Kaggle download's own layout
# (written_name_train_v2.csv present) uses the official train/validation/test splits.
# PRETRAIN_CONFIG / FINETUNE_CONFIG replace the two experiment files (the tests use tiny ones);
# flags (--nowandb, --gpu N) go to both runs.
set -euo pipefail
cd "$(dirname "$0")/.."
data_dir="$(realpath "${DATA_DIR:-${TEXT_RECOGNIZER_SHARED_DATA:-../shared/data}/kaggle_handwriting_names}")"
pretrain_config="${PRETRAIN_CONFIG:-training/experiments/kaggle_names_pretrain.json}"
finetune_config="${FINETUNE_CONFIG:-training/experiments/kaggle_names_finetune.json}"
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT

# Runs one experiment with the given flags, showing its output; echoes its run folder.
run() {
  local log="$logs/$1.log"
  shift
  python training/run_experiment.py "$@" 2>&1 | tee "$log" >&2
  sed -n 's/^run folder: //p' "$log" | tail -n 1
}

echo "== 1/2 pretraining on synthetic handwritten names" >&2
pretrained="$(run pretrain "$pretrain_config" --save "$@")"
[[ -f "$pretrained/weights.pt" ]] || { echo "pretraining left no weights in '$pretrained'" >&2; exit 1; }

echo "== 2/2 fine-tuning on the real names in $data_dir" >&2
config="$(python - "$finetune_config" "$pretrained" "$data_dir" <<'PY'
import json, sys
from pathlib import Path
config = json.loads(Path(sys.argv[1]).read_text())
pretrained, data_dir = sys.argv[2], Path(sys.argv[3])
config["init_from"] = pretrained
config["dataset_args"]["data_dir"] = str(data_dir)
if (data_dir / "written_name_train_v2.csv").is_file():  # Kaggle's own layout: official splits
    config["dataset_args"].pop("split_from_available", None)
print(json.dumps(config))
PY
)"
final="$(run finetune "$config" --save "$@")"
[[ -f "$final/summary.json" ]] || { echo "fine-tuning left no run record in '$final'" >&2; exit 1; }
echo "$final"
