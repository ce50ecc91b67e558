#!/usr/bin/env bash
# Train a LeNet on real MNIST digits from ../shared/data/mnist and keep the weights.
set -euo pipefail
cd "$(dirname "$0")/.."
python training/run_experiment.py training/experiments/mnist_lenet.json --save "$@"
