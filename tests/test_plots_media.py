"""Plots in the run folder and W&B media (images, confusion matrix, worst lines, weights artifact)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_script
from text_recognizer.config import validate_config

CHARS = {
    "experiment_group": "plots",
    "dataset": "SyntheticCharactersDataset",
    "dataset_args": {"num_train": 400, "num_test": 120, "charset": "digits"},
    "model": "CharacterModel",
    "network": "mlp",
    "network_args": {"num_layers": 1, "layer_size": 32},
    "train_args": {"batch_size": 64, "epochs": 2},
}
LINES = {
    "experiment_group": "plots",
    "dataset": "SyntheticLinesDataset",
    "dataset_args": {
        "num_train": 120,
        "num_test": 40,
        "max_length": 4,
        "image_width": 96,
        "charset": "digits",
    },
    "model": "LineModelCtc",
    "network": "line_lstm_ctc",
    "train_args": {"batch_size": 32, "epochs": 1},
}
PNG = b"\x89PNG"


def only_run(runs_dir: Path) -> Path:
    (run_dir,) = [p for p in runs_dir.glob("*/*") if p.is_dir()]
    return run_dir


def test_confusion_matrix_counts() -> None:
    from text_recognizer.plots import confusion_matrix

    cm = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]


def test_plot_functions_write_pngs(tmp_path: Path) -> None:
    from text_recognizer.plots import (
        Predictions,
        caption,
        confusion_matrix,
        plot_confusion_matrix,
        plot_montage,
    )

    cm = confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 0]), 4)
    out = plot_confusion_matrix(cm, list("abcd"), tmp_path / "cm.png")
    assert out.read_bytes().startswith(PNG)
    images = np.random.default_rng(0).integers(0, 255, (3, 28, 140), dtype=np.uint8)
    preds = Predictions(images, ["12", "3", "45"], ["12", "8", "45"], [0.9, 0.4, 0.8])
    assert preds.correct == [True, False, True]
    assert plot_montage(preds, tmp_path / "m.png").read_bytes().startswith(PNG)
    assert caption("3", "8", 0.4) == "pred '8' 0.40 (true '3')"
    assert caption("3", "3", 0.91) == "pred '3' 0.91"
    with pytest.raises(ValueError):
        plot_montage(Predictions(images[:0], [], [], []), tmp_path / "none.png")


BACKEND_KEPT = """
import json, sys
import matplotlib
matplotlib.use("svg")  # what a notebook's %matplotlib inline would be: any backend but Agg
import matplotlib.pyplot as plt
import numpy as np
from text_recognizer.orchestration.compare import load_run, plot_curves
from text_recognizer.plots import Predictions, confusion_matrix, plot_confusion_matrix, plot_montage

out = sys.argv[1]
plot_confusion_matrix(confusion_matrix(np.array([0, 1]), np.array([0, 0]), 2), ["a", "b"],
                      out + "/cm.png")
images = np.zeros((2, 28, 28), dtype=np.uint8)
plot_montage(Predictions(images, ["1", "2"], ["1", "3"], [0.9, 0.5]), out + "/m.png")
with open(out + "/run/metrics.jsonl", "w") as f:
    f.write(json.dumps({"epoch": 1, "train_loss": 1.0, "val_loss": 0.9}) + "\\n")
plot_curves([load_run(out + "/run")], out + "/c.png")
print(matplotlib.get_backend(), len(plt.get_fignums()))
"""


def test_plots_leave_the_backend_as_it_was(tmp_path: Path) -> None:
    """A notebook's inline backend survives a run that writes plots (nothing calls
    matplotlib.use, no pyplot figure is left open), so later cells still show figures."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text("{}")
    out = run_script("-c", BACKEND_KEPT, str(tmp_path), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["svg", "0"]
    for name in ("cm.png", "m.png", "c.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG)
    package = Path(__file__).resolve().parent.parent / "project" / "text_recognizer"
    for path in package.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "matplotlib.use(" not in text and "import matplotlib.pyplot" not in text, path


def test_run_writes_plots_without_wandb(runs_dir: Path) -> None:
    from text_recognizer.run.runner import run_experiment

    code, summary = run_experiment(validate_config(CHARS), use_wandb=False)
    assert code == 0 and summary["status"] == "finished"
    run_dir = only_run(runs_dir)
    assert summary["plots"] == {
        "confusion_matrix": "confusion_matrix.png",
        "predictions": "predictions.png",
        "curves": "curves.png",
    }
    for name in summary["plots"].values():
        assert (run_dir / name).read_bytes().startswith(PNG)


def test_plot_failure_is_a_warning(runs_dir: Path, monkeypatch, capsys) -> None:
    from text_recognizer import plots
    from text_recognizer.run.runner import run_experiment

    def broken(*args, **kwargs):
        raise RuntimeError("no backend")

    monkeypatch.setattr(plots, "run_plots", broken)
    code, summary = run_experiment(validate_config(CHARS), use_wandb=False)
    assert code == 0 and summary["status"] == "finished" and "plots" not in summary
    assert "warning: writing plots failed (RuntimeError: no backend)" in capsys.readouterr().err


def _offline_run(config: dict, runs_dir: Path, home: Path, monkeypatch) -> Path:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(home))  # no ~/.netrc: no API key
    out = run_script("training/run_experiment.py", json.dumps(config), "--save")
    assert out.returncode == 0, out.stderr
    assert "warning" not in out.stderr.lower(), out.stderr
    (offline,) = (only_run(runs_dir) / "wandb").glob("offline-run-*")
    return offline


def test_wandb_offline_logs_media_table_and_artifact(runs_dir, tmp_path, monkeypatch) -> None:
    offline = _offline_run(CHARS, runs_dir, tmp_path / "home", monkeypatch)
    media = offline / "files" / "media"
    val = list((media / "images").glob("val_examples_*.png"))
    assert len(val) >= 2 * 8  # 8 captioned validation images per epoch, 2 epochs
    plotted = [p.name for p in (media / "images" / "plots").glob("*.png")]
    for name in ("confusion_matrix_", "predictions_", "curves_"):
        assert any(p.startswith(name) for p in plotted), plotted
    assert list((media / "table").glob("confusion_matrix_table_*.table.json"))
    (log,) = offline.glob("run-*.wandb")
    raw = log.read_bytes()
    assert b"weights-" in raw and b"val_examples" in raw  # artifact record and captions
    assert b"pred '" in raw


def test_wandb_offline_worst_lines_table(runs_dir, tmp_path, monkeypatch) -> None:
    offline = _offline_run(LINES, runs_dir, tmp_path / "home", monkeypatch)
    tables = list((offline / "files" / "media" / "table").glob("worst_lines_*.table.json"))
    assert tables
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["image", "target", "prediction", "cer", "confidence"]
    assert len(table["data"]) == 10


class _RaisingRun:
    """A wandb run whose every call fails, like one losing its network mid-run."""

    def __getattr__(self, name: str):
        def fail(*args, **kwargs):
            raise ConnectionError(f"{name}: api.wandb.ai unreachable")

        return fail


def test_tracker_media_calls_only_warn(tmp_path: Path, capsys) -> None:
    from text_recognizer.run.tracking import Tracker

    tracker = Tracker(False, {}, tmp_path, "t")
    assert tracker.images("k", [np.zeros((4, 4))]) == {} and not tracker.enabled
    tracker.run = _RaisingRun()
    tracker.log_images("k", [np.zeros((4, 4), dtype=np.uint8)], ["c"])
    assert "warning: W&B disabled" in capsys.readouterr().err and tracker.run is None
    tracker.run = _RaisingRun()
    tracker.log_artifact(tmp_path / "missing.pt", "weights-x")
    assert "warning: W&B disabled" in capsys.readouterr().err and tracker.run is None


def test_raising_wandb_run_only_warns(runs_dir, monkeypatch, capsys) -> None:
    import wandb

    from text_recognizer.run.runner import run_experiment

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(wandb, "init", lambda *a, **k: _RaisingRun())
    code, summary = run_experiment(validate_config(CHARS), save=True)
    assert code == 0 and summary["status"] == "finished"
    assert "warning: W&B disabled for this run (ConnectionError" in capsys.readouterr().err
    assert (only_run(runs_dir) / "confusion_matrix.png").exists()
