"""run_experiment end to end on the embedded synthetic dataset: records, weights, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_script
from text_recognizer.config import validate_config
from text_recognizer.run.records import RunRecord

TINY = {
    "experiment_group": "Test Group",
    "dataset": "SyntheticCharactersDataset",
    "dataset_args": {"num_train": 600, "num_test": 200, "charset": "digits"},
    "model": "CharacterModel",
    "network": "mlp",
    "network_args": {"num_layers": 2, "layer_size": 64},
    "train_args": {"batch_size": 64, "epochs": 2, "num_threads": 1},
}


def only_run(runs_dir):
    runs = [p for p in runs_dir.glob("*/*") if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def test_cli_run_writes_complete_record_and_loadable_weights(runs_dir):
    out = run_script("training/run_experiment.py", json.dumps(TINY), "--save", "--nowandb")
    assert out.returncode == 0, out.stderr
    run_dir = only_run(runs_dir)
    assert run_dir.parent.name == "test-group"
    rec = RunRecord.read(run_dir)
    assert rec["config"] == validate_config(TINY)
    assert [m["epoch"] for m in rec["metrics"]] == [1, 2]
    for key in (
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "learning_rate",
        "epoch_time",
    ):
        assert key in rec["metrics"][0]
    summary = rec["summary"]
    assert summary["status"] == "finished"
    assert summary["device"] == "cpu"
    assert 0.0 <= summary["test_accuracy"] <= 1.0 and summary["test_loss"] > 0
    assert summary["wall_time"] > 0 and summary["epochs_run"] == 2
    # One plain line per epoch when stderr is not a terminal.
    assert out.stderr.count("epoch 1/2") == 1 and out.stderr.count("epoch 2/2") == 1

    from text_recognizer.datasets.synthetic_characters import SyntheticCharactersDataset
    from text_recognizer.models.base import Model
    from text_recognizer.models.character_model import CharacterModel

    model = Model.load(summary["weights"])
    assert isinstance(model, CharacterModel)
    data = SyntheticCharactersDataset(
        **validate_config(TINY)["dataset_args"]
    ).load_or_generate_data()
    again = model.evaluate(data.x_test, data.y_test)
    assert again["accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-6)
    char, conf = model.predict_on_image(data.x_test[0])
    assert char in "0123456789" and 0 < conf <= 1
    # Any size and float images are accepted by predict_on_image.
    big = np.kron(data.x_test[0], np.ones((2, 2), dtype=np.uint8)) / 255.0
    assert model.predict_on_image(big)[0] in "0123456789"


def test_missing_data_dir_files_exit_2_and_leave_nothing(runs_dir, tmp_path):
    config = {
        "dataset": "MnistDataset",
        "dataset_args": {"data_dir": str(tmp_path)},
        "model": "CharacterModel",
        "network": "mlp",
    }
    out = run_script("training/run_experiment.py", json.dumps(config), "--nowandb")
    assert out.returncode == 2
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "t10k-images-idx3-ubyte.gz" in line
    assert "Traceback" not in out.stderr
    assert not runs_dir.exists() or not any(runs_dir.rglob("summary.json"))


def test_failed_run_is_recorded_with_exit_1(runs_dir, monkeypatch):
    from text_recognizer.models.character_model import CharacterModel
    from text_recognizer.run.runner import run_experiment

    def boom(self, *args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(CharacterModel, "fit", boom)
    code, summary = run_experiment(validate_config(TINY), use_wandb=False)
    assert code == 1
    assert summary["status"] == "failed" and "simulated failure" in summary["error"]
    run_dir = only_run(runs_dir)
    assert "RuntimeError" in (run_dir / "error.log").read_text()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"


def test_wandb_offline_is_automatic_and_never_fatal(runs_dir, monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no API key
    out = run_script(
        "training/run_experiment.py", json.dumps({**TINY, "train_args": {"epochs": 1}})
    )
    assert out.returncode == 0, out.stderr
    assert "W&B: offline" in out.stderr and "wandb sync" in out.stderr
    run_dir = only_run(runs_dir)
    assert list((run_dir / "wandb").glob("offline-run-*"))
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"


def test_wandb_failure_is_a_warning(runs_dir, monkeypatch):
    import wandb

    from text_recognizer.run.runner import run_experiment

    def broken_init(*args, **kwargs):
        raise ConnectionError("api.wandb.ai unreachable")

    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setattr(wandb, "init", broken_init)
    code, summary = run_experiment(validate_config({**TINY, "train_args": {"epochs": 1}}))
    assert code == 0 and summary["status"] == "finished"


def test_gpu_flag_without_gpu_falls_back_to_cpu(runs_dir):
    config = {**TINY, "train_args": {"epochs": 1}}
    out = run_script("training/run_experiment.py", json.dumps(config), "--gpu=0", "--nowandb")
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("no GPU available") == 1
