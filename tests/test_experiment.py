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


# ----- settings on the command line, --print-config, what a finished run keeps --------------------
def test_command_line_settings_train_and_the_run_keeps_weights_not_checkpoints(
    runs_dir, tmp_path, capsys
):
    from PIL import Image

    from text_recognizer.predict import predict_main
    from text_recognizer.run.cli import run_experiment_main

    argv = [json.dumps(TINY), "--train_args.epochs=1", "--dataset_args.num_train=300"]
    assert run_experiment_main([*argv, "--run_name=over ride", "--nowandb"]) == 0, (
        capsys.readouterr().err
    )
    run_dir = runs_dir / "test-group" / "over-ride"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train_args"]["epochs"] == 1 and config["dataset_args"]["num_train"] == 300
    assert config["run_name"] == "over ride"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_run"] == 1
    # Without --save the weights are kept (the predict command reads them); the resume
    # checkpoints of a finished run are not.
    assert (run_dir / "weights.pt").is_file() and summary["weights"] == str(run_dir / "weights.pt")
    assert (
        not (run_dir / "checkpoint.pt").exists() and not (run_dir / "checkpoint.prev.pt").exists()
    )
    assert (summary["save"], summary["keep_checkpoints"]) == (True, False)
    image = tmp_path / "digit.png"
    Image.new("L", (28, 28), 0).save(image)
    capsys.readouterr()
    assert predict_main([str(image), "--model", str(run_dir)]) == 0
    assert capsys.readouterr().out.strip() in list("0123456789")

    assert run_experiment_main([*argv, "--run_name=kept", "--no-save", "--keep-checkpoints"]) == 0
    kept = runs_dir / "test-group" / "kept"
    assert not (kept / "weights.pt").exists()
    assert (kept / "checkpoint.pt").is_file()  # one epoch: no previous checkpoint yet
    assert json.loads((kept / "summary.json").read_text())["keep_checkpoints"] is True


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("--train_args.epochs=0", "train_args.epochs must be an integer >= 1"),
        ("--train_args.epoch=3", "unknown key 'epoch' in train_args (did you mean 'epochs'?)"),
        ("--dataset_args.charset=klingon", "dataset_args.charset must be one of"),
        ("--train_arg.epochs=1", "unknown key 'train_arg' in the config (--train_arg.epochs)"),
        ("--dataset.name=x", "--dataset.name: 'dataset' is a str, not a section with keys"),
        ("--train_args.epochs", "'--train_args.epochs' needs a value: --train_args.epochs=VALUE"),
        ("--network_args.layer_size=big", "network_args.layer_size must be an integer"),
    ],
)
def test_bad_command_line_settings_are_one_line_exit_2(runs_dir, capsys, setting, message):
    from text_recognizer.run.cli import run_experiment_main

    assert run_experiment_main([setting, json.dumps(TINY), "--nowandb"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not runs_dir.exists()


def test_settings_are_refused_with_resume(tmp_path, capsys):
    from text_recognizer.run.cli import run_experiment_main

    assert run_experiment_main(["--resume", str(tmp_path), "--train_args.epochs=3"]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "--train_args.epochs=3 cannot be given with --resume" in line


PRINT_CONFIG = """
import sys
from text_recognizer.run.cli import run_experiment_main
code = run_experiment_main(sys.argv[1:])
print("torch loaded" if "torch" in sys.modules else "torch not loaded", file=sys.stderr)
sys.exit(code)
"""


def test_print_config_shows_the_resolved_config_without_torch(runs_dir, tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    # Flags and settings before or after the file; a bare word that is not JSON is a string.
    argv = [
        "--train_args.optimizer=sgd",
        str(path),
        "--print-config",
        "--network_args.layer_size=8",
    ]
    out = run_script("-c", PRINT_CONFIG, *argv)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "torch not loaded"
    expected = {**TINY, "network_args": {"num_layers": 2, "layer_size": 8}}
    expected["train_args"] = {**TINY["train_args"], "optimizer": "sgd"}
    assert json.loads(out.stdout) == validate_config(expected)
    assert not runs_dir.exists()  # nothing trained, nothing written
