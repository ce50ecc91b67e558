#!/usr/bin/env bash
# Read images with a saved run: tasks/predict.sh RUN_DIR IMAGE... [--json] [--beam N]
set -euo pipefail
model="${1:?usage: tasks/predict.sh RUN_DIR_OR_WEIGHTS IMAGE... [--json] [--beam N]}"; shift
exec python -m text_recognizer.predict --model "$model" "$@"
