#!/usr/bin/env bash
# Train the CTC line model on lines of real MNIST digits (../shared/data/mnist) and keep the weights.
set -euo pipefail
cd "$(dirname "$0")/.."
python training/run_experiment.py training/experiments/mnist_lines_lstm_ctc.json --save "$@"
