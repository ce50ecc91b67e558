"""Real handwriting: a short LeNet run on real MNIST digits must learn them (a regression guard).

The full targets (LeNet >= 98.5 %, MLP >= 96 % test accuracy) are measured with the configs in
training/experiments/mnist_*.json; this shorter run keeps the suite fast while still failing if
training, the data path or the MNIST reader break.
"""

from __future__ import annotations

import json

from conftest import run_script


def test_lenet_learns_real_mnist_digits(shared_data, runs_dir):
    config = {
        "experiment_group": "real digits",
        "dataset": "MnistDataset",
        "dataset_args": {"data_dir": str(shared_data / "mnist"), "test_set_only": True},
        "model": "CharacterModel",
        "network": "lenet",
        "train_args": {"batch_size": 64, "epochs": 2, "num_threads": 2},
    }
    out = run_script("training/run_experiment.py", json.dumps(config), "--nowandb")
    assert out.returncode == 0, out.stderr
    (summary_path,) = runs_dir.glob("*/*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["status"] == "finished"
    assert summary["test_accuracy"] >= 0.96, summary
