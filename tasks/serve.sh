#!/usr/bin/env bash
# Serve a saved run over HTTP: tasks/serve.sh RUN_DIR [--port 8000] [--host 127.0.0.1] [--beam N]
# (the flags may come anywhere; the first word that is not a flag is the run). Ctrl-C stops it.
set -euo pipefail
source "$(dirname "$0")/lib/args.sh"
split_args "--host --port --beam --lm --lm-weight --lm-bonus --runtime --max-bytes --max-pixels --threads --workers --batch --model" "$@"
if has_flag --model; then  # the run given as --model RUN: every other word passes on
  exec python -m text_recognizer.serve "${positional[@]}" "${flags[@]}"
fi
model="${positional[0]:?usage: tasks/serve.sh RUN_DIR_OR_WEIGHTS [--port 8000] [--beam N]}"
exec python -m text_recognizer.serve --model "$model" "${positional[@]:1}" "${flags[@]}"
