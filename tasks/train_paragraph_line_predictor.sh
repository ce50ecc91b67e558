#!/usr/bin/env bash
# Train the paragraph line model on Brown-corpus lines drawn with handwriting fonts, keep the weights.
# Needs the Debian handwriting fonts named in training/experiments/paragraph_lines_fonts.json.
set -euo pipefail
cd "$(dirname "$0")/.."
python training/run_experiment.py training/experiments/paragraph_lines_fonts.json --save "$@"
