#!/usr/bin/env bash
# Train the paragraph line model on Brown-corpus lines drawn with handwriting fonts, keep the weights.
# Needs the Debian handwriting fonts (fonts: ["handwriting"]; README, "Handwriting fonts").
set -euo pipefail
cd "$(dirname "$0")/.."
python training/run_experiment.py training/experiments/paragraph_lines_htr.json --save "$@"
