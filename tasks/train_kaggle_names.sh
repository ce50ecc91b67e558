#!/usr/bin/env bash
# The Kaggle names chain: pretrain htr_crnn on synthetic name lines in Debian's handwriting fonts,
# then fine-tune it on the real names (init_from), then read its test split with a names 6-gram LM
# (built from Faker's name lists, never the labels; weight and bonus tuned on the validation split),
# and print the final run folder on the last line.
#   DATA_DIR=folder bash tasks/train_kaggle_names.sh [--nowandb]
# DATA_DIR is the Kaggle data folder (default: the shared copy, ../shared/data/kaggle_handwriting_names,
# with 20 % of its labelled images held out as test); a folder in the Kaggle download's own layout
# (written_name_train_v2.csv present) uses the official train/validation/test splits.
# PRETRAIN_CONFIG / FINETUNE_CONFIG replace the two experiment files (the tests use tiny ones);
# NAMES_LM is the LM's ARPA file (default data/processed/lm/names6.arpa, built when absent), or
# "none" to stop after fine-tuning. The LM step writes lm_tune.json and test_lm.json into the final
# run folder. Flags (--nowandb, --gpu N) go to both runs.
# Exit status: that of the first run or step that did not finish.
set -euo pipefail
here="$(pwd)"
cd "$(dirname "$0")/.."
# Paths the caller gives are relative to the caller's folder.
in_caller() { [[ "$1" == /* ]] && echo "$1" || echo "$here/$1"; }
shared="${TEXT_RECOGNIZER_SHARED_DATA:-../shared/data}"
data_dir="$(in_caller "${DATA_DIR:-$(realpath -m "$shared")/kaggle_handwriting_names}")"
pretrain_config="$(in_caller "${PRETRAIN_CONFIG:-$(pwd)/training/experiments/kaggle_names_pretrain.json}")"
finetune_config="$(in_caller "${FINETUNE_CONFIG:-$(pwd)/training/experiments/kaggle_names_finetune.json}")"
for f in "$pretrain_config" "$finetune_config"; do
  [[ -f "$f" ]] || { echo "error: no experiment file $f" >&2; exit 2; }
done
names_lm="${NAMES_LM:-data/processed/lm/names6.arpa}"
[[ "$names_lm" == none ]] || names_lm="$(in_caller "$names_lm")"
[[ -d "$data_dir" ]] || {
  echo "error: DATA_DIR $data_dir is not a folder (the Kaggle names CSVs and image folders)" >&2
  exit 2
}
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT

# run NAME ARGS...: one experiment, its output shown; prints its run folder, and returns the
# experiment's exit status, or 1 when it exited 0 without a finished record.
run() {
  local log="$logs/$1.log" rc folder
  shift
  set +e
  python training/run_experiment.py "$@" 2>&1 | tee "$log" >&2
  rc=${PIPESTATUS[0]}
  set -e
  folder="$(sed -n 's/^run folder: //p' "$log" | tail -n 1)"
  echo "$folder"
  ((rc == 0)) || return "$rc"
  grep -q '"status": "finished"' "$folder/summary.json" 2>/dev/null \
    || { echo "error: the run in '$folder' did not finish" >&2; return 1; }
}

echo "== 1/3 pretraining on synthetic handwritten names" >&2
pretrained="$(run pretrain "$pretrain_config" --save "$@")" || exit $?
[[ -f "$pretrained/weights.pt" ]] || { echo "error: pretraining left no weights in '$pretrained'" >&2; exit 1; }

echo "== 2/3 fine-tuning on the real names in $data_dir" >&2
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
final="$(run finetune "$config" --save "$@")" || exit $?

if [[ "$names_lm" != none ]]; then
  echo "== 3/3 the test split read with the names LM ($names_lm)" >&2
  [[ -f "$names_lm" ]] || python -m text_recognizer.lm build --names 100000 --out "$names_lm" >&2
  python -m text_recognizer.lm tune "$final" --lm "$names_lm" --json "$final/lm_tune.json" >&2
  read -r weight bonus < <(python -c 'import json, sys
best = json.load(open(sys.argv[1]))["best"]
print(best["lm_weight"], best["lm_bonus"])' "$final/lm_tune.json")
  python -m text_recognizer.evaluate "$final" --beam 16 --lm "$names_lm" --lm-weight "$weight" \
    --lm-bonus "$bonus" --json "$final/test_lm.json" >&2
fi
echo "$final"
