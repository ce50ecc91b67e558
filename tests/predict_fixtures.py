"""Session fixtures for the predictor tests: tiny models trained on real shared data, fast.

Trained without the runner (plain ``Model.fit`` + ``save_weights``), so these tests depend only
on the model/dataset contract. The point is equality of predictions, not accuracy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from text_recognizer.paths import SHARED_DATA_DIR

MNIST_DIR = SHARED_DATA_DIR / "mnist"
KAGGLE_DIR = SHARED_DATA_DIR / "kaggle_handwriting_names"


def train_run(tmp: Path, raw: dict[str, Any]) -> Path:
    """Resolve ``raw`` like run_experiment, fit, and save weights.pt into a run folder."""
    import torch

    from text_recognizer.config import TrainArgs, validate_config
    from text_recognizer.datasets import DATASETS
    from text_recognizer.models import MODELS
    from text_recognizer.run.runner import seed_everything

    torch.set_num_threads(2)
    config = validate_config(raw)
    dataset = DATASETS[config["dataset"]].load()(**config["dataset_args"])
    dataset.load_or_generate_data()
    model_cls = MODELS[config["model"]].load()
    seed_everything(config["train_args"]["seed"])
    model = model_cls(dataset.config(), config["network"], config["network_args"], "cpu")
    model.fit(dataset, TrainArgs.from_config(config["train_args"]))
    run_dir = tmp / config["experiment_group"]
    run_dir.mkdir(parents=True, exist_ok=True)
    model.save_weights(run_dir / "weights.pt", config)
    return run_dir


@pytest.fixture(scope="session")
def mnist_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("../shared/data/mnist is missing")
    config = {
        "experiment_group": "mnist-mlp",
        "dataset": "MnistDataset",
        "dataset_args": {
            "data_dir": str(MNIST_DIR),
            "test_set_only": True,
            "subsample_fraction": 0.5,
        },
        "model": "CharacterModel",
        "network": "mlp",
        "train_args": {"batch_size": 128, "epochs": 1, "num_threads": 2},
    }
    return train_run(tmp_path_factory.mktemp("runs"), config)


@pytest.fixture(scope="session")
def mnist_lenet_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LeNet good enough to prove accuracy downstream (page OCR: 96 % on MNIST after 2 epochs)."""
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("../shared/data/mnist is missing")
    config = {
        "experiment_group": "mnist-lenet",
        "dataset": "MnistDataset",
        "dataset_args": {"data_dir": str(MNIST_DIR), "test_set_only": True},
        "model": "CharacterModel",
        "network": "lenet",
        "train_args": {"batch_size": 64, "epochs": 2, "learning_rate": 0.002, "seed": 0},
    }
    return train_run(tmp_path_factory.mktemp("runs"), config)


@pytest.fixture(scope="session")
def kaggle_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (KAGGLE_DIR / "written_name_test_v2.csv").exists():
        pytest.skip("../shared/data/kaggle_handwriting_names is missing")
    config = {
        "experiment_group": "kaggle-crnn",
        "dataset": "KaggleNamesDataset",
        "dataset_args": {
            "data_dir": str(KAGGLE_DIR),
            "split_from_available": 0.2,
            "max_length": 32,
            "subsample_fraction": 0.1,
        },
        "model": "LineModelCtc",
        "network": "crnn",
        "network_args": {
            "conv_channels": [8, 16, 16],
            "linear_size": 32,
            "lstm_hidden": 32,
            "lstm_layers": 1,
        },
        "train_args": {"batch_size": 32, "epochs": 1, "num_threads": 2},
    }
    return train_run(tmp_path_factory.mktemp("runs"), config)


@pytest.fixture(scope="session")
def noisy_line_run(kaggle_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Kaggle CTC model with seeded Gaussian noise (std 0.5) on every weight.

    The 1-epoch model reads every image as the same text at confidence 0.0, so equal answers
    would prove little; with the noise each image reads differently (texts and confidences), so
    two paths (the API and the predict command, onnxruntime and torch) giving the same answers
    shows the same pixels reached the same network.
    """
    import torch

    from text_recognizer.models.base import Model

    model, config = Model.load_with_config(kaggle_run / "weights.pt")
    noise = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in model.network.parameters():
            weight.add_(torch.randn(weight.shape, generator=noise) * 0.5)
    run = tmp_path_factory.mktemp("runs") / "noisy-kaggle-crnn"
    run.mkdir()
    model.save_weights(run / "weights.pt", config)
    return run
