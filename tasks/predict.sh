#!/usr/bin/env bash
# Read images with a saved run: tasks/predict.sh RUN_DIR IMAGE... [--json] [--beam N]
set -euo pipefail
model="$1"; shift
exec python -m text_recognizer.predict --model "$model" "$@"
