#!/usr/bin/env bash
# Run every experiment of an experiments file side by side with GNU parallel, one GPU lease each
# (or shared CPU cores without a GPU). Exit status: the number of runs that failed (2 with no run
# started when the file or a flag is bad).
#   bash tasks/run_sample_experiments.sh                                  # the synthetic sample, -j2
#   JOBS=4 bash tasks/run_sample_experiments.sh training/experiments/sample.json --nowandb
#   bash tasks/run_sample_experiments.sh --nowandb --train_args.epochs=1   # flags before or after
# --nowandb, --save and --python PATH go to prepare_experiments.py; every other flag (--no-save,
# --keep-checkpoints, --gpu=N, --train_args.epochs=1, ...) is added to each run's command, and
# checked on every experiment (run_experiment.py --print-config) before any run starts.
# -h/--help prints this usage and prepare_experiments.py's help, and runs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
source tasks/lib/args.sh
split_args "--python --gpu" "$@"
if ((${#positional[@]} > 1)); then
  echo "error: one experiments file, got ${#positional[@]}: ${positional[*]}" >&2
  exit 2
fi
file="${positional[0]:-training/experiments/sample_synthetic.json}"
prepare=()
run=()
help=0
for ((i = 0; i < ${#flags[@]}; i++)); do
  case "${flags[i]}" in
    -h | --help) help=1 ;;
    --save | --nowandb | --python=*) prepare+=("${flags[i]}") ;;
    --python) prepare+=("${flags[@]:i:2}") && i=$((i + 1)) ;;
    --gpu) run+=("${flags[@]:i:2}") && i=$((i + 1)) ;;
    *) run+=("${flags[i]}") ;;
  esac
done
if ((help)); then
  # Not through parallel: prepare_experiments.py's help on stdout would become the command list.
  cat <<'USAGE'
usage: bash tasks/run_sample_experiments.sh [EXPERIMENTS.json] [--nowandb] [--save] [--python PATH]
         [--no-save] [--keep-checkpoints] [--gpu=N] [--KEY.SUB=VALUE ...]

Runs every experiment of the file (default training/experiments/sample_synthetic.json) with GNU
parallel, JOBS at a time (default 2), one GPU lease each (shared CPU cores without a GPU). Exit
status: the number of runs that failed (2 with no run started when the file or a flag is bad).
--nowandb, --save and --python go to prepare_experiments.py (below); every other flag is added to
each run's command and checked on every experiment before any run starts.

USAGE
  python training/prepare_experiments.py --help
  exit 0
fi
command -v parallel >/dev/null || {
  echo "error: GNU parallel is not installed (Debian/Ubuntu: sudo apt-get install parallel)" >&2
  exit 2
}
commands="$(python training/prepare_experiments.py "$file" "${prepare[@]}")"
if ((${#run[@]})); then
  suffix="$(python -c 'import shlex, sys; print(shlex.join(sys.argv[1:]))' "${run[@]}")"
  commands="$(while IFS= read -r line; do printf '%s %s\n' "$line" "$suffix"; done <<<"$commands")"
  while IFS= read -r line; do
    bash -c "$line --print-config" >/dev/null || exit 2
  done <<<"$commands"
fi
printf '%s\n' "$commands" | parallel --will-cite -j"${JOBS:-2}" --line-buffer --tagstring '[run {#}]'
