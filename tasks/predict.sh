#!/usr/bin/env bash
# Read images with a saved run: tasks/predict.sh RUN_DIR IMAGE... [--json] [--beam N]
# (the flags may come anywhere; the first word that is not a flag is the run)
set -euo pipefail
source "$(dirname "$0")/lib/args.sh"
split_args "--beam --lm --lm-weight --lm-bonus --kind --model" "$@"
if has_flag --model; then  # the run given as --model RUN: every other word passes on
  exec python -m text_recognizer.predict "${positional[@]}" "${flags[@]}"
fi
model="${positional[0]:?usage: tasks/predict.sh RUN_DIR_OR_WEIGHTS IMAGE... [--json] [--beam N]}"
exec python -m text_recognizer.predict --model "$model" "${positional[@]:1}" "${flags[@]}"
