"""compare_runs: the table of runs (differing config keys, metrics, status, time), sorting, plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_script
from text_recognizer.config import validate_config
from text_recognizer.orchestration.compare import (
    collect_runs,
    compare_main,
    differing_keys,
    flatten,
    load_run,
)

PNG = b"\x89PNG\r\n\x1a\n"
BASE = {
    "dataset": "SyntheticCharactersDataset",
    "model": "CharacterModel",
    "network": "mlp",
    "network_args": {"layer_size": 64},
    "train_args": {"epochs": 3},
}


def make_run(
    root: Path,
    name: str,
    layer_size: int,
    losses: list[float],
    status: str = "finished",
    group: str = "grid",
    wall_time: float | None = 12.5,
    test_accuracy: float | None = 0.9,
) -> Path:
    """A run record as run_experiment writes it (config, one metrics line per epoch, summary)."""
    config = validate_config(
        {
            **BASE,
            "experiment_group": group,
            "network_args": {"layer_size": layer_size},
            "run_name": name,
        }
    )
    run = root / group / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config))
    lines = [
        {"epoch": i + 1, "train_loss": v + 0.1, "val_loss": v, "val_accuracy": 1 - v / 3}
        for i, v in enumerate(losses)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    summary: dict = {"status": status, "device": "cpu"}
    if status == "finished":
        best = min(lines, key=lambda m: m["val_loss"])
        summary.update(val_loss=best["val_loss"], val_accuracy=best["val_accuracy"])
        summary.update(test_loss=min(losses) + 0.05, test_accuracy=test_accuracy)
    if wall_time is not None:
        summary["wall_time"] = wall_time
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def table_rows(out: str) -> list[list[str]]:
    lines = out.strip().splitlines()
    assert set(lines[1].replace(" ", "")) == {"-"}
    return [line.split() for line in [lines[0], *lines[2:]]]


@pytest.fixture
def grid(runs_dir: Path) -> Path:
    make_run(runs_dir, "small", 16, [1.2, 0.9, 0.8], wall_time=5.0, test_accuracy=0.7)
    make_run(runs_dir, "large", 256, [1.0, 0.5, 0.4], wall_time=75.0, test_accuracy=0.95)
    make_run(runs_dir, "medium", 64, [1.1, 0.7, 0.6], wall_time=3700.0, test_accuracy=0.85)
    # Killed after two epochs: no best metrics in its summary yet; they come from metrics.jsonl.
    killed = make_run(runs_dir, "killed", 128, [1.05, 0.45], status="interrupted", wall_time=None)
    with open(killed / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "train_lo')  # a torn last line from the kill
    return runs_dir / "grid"


def test_table_shows_what_differs_sorted_by_val_loss(grid, capsys):
    assert compare_main([str(grid), "--no-plot"]) == 0
    rows = table_rows(capsys.readouterr().out)
    header = rows[0]
    assert header == [
        "run",
        "network_args.layer_size",
        "val_loss",
        "val_accuracy",
        "test_loss",
        "test_accuracy",
        "status",
        "time",
    ]
    assert [r[0] for r in rows[1:]] == ["large", "killed", "medium", "small"]
    large, killed, medium, small = rows[1:]
    assert large[1:3] == ["256", "0.4000"] and large[-2:] == ["finished", "1m15s"]
    assert killed[1:3] == ["128", "0.4500"] and killed[-3:] == ["-", "interrupted", "-"]
    assert medium[-1] == "1h01m" and small[-1] == "5.0s"


def test_sort_desc_and_metric_columns(grid, capsys):
    assert compare_main([str(grid), "--sort", "test_accuracy", "--desc", "--no-plot"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert [r[0] for r in rows[1:]] == ["large", "medium", "small", "killed"]  # missing: last
    assert (
        compare_main([str(grid), "--metric", "val_accuracy", "--sort", "wall_time", "--no-plot"])
        == 0
    )
    rows = table_rows(capsys.readouterr().out)
    assert rows[0] == ["run", "network_args.layer_size", "val_accuracy", "status", "time"]
    assert [r[0] for r in rows[1:]] == ["small", "large", "medium", "killed"]


def test_default_is_every_group_under_the_runs_root(grid, runs_dir, capsys):
    make_run(runs_dir, "other", 64, [0.3], group="another-group")
    assert compare_main(["--no-plot"]) == 0
    names = [r[0] for r in table_rows(capsys.readouterr().out)[1:]]
    assert names[0] == "another-group/other" and "grid/large" in names and len(names) == 5
    # experiment_group now differs too.
    runs, _ = collect_runs(None)
    assert differing_keys(runs) == ["experiment_group", "network_args.layer_size"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sort", "val_los"], "unknown sort metric 'val_los'; available: val_loss, val_accuracy"),
        (["--metric", "cer"], "unknown metric 'cer'; available: val_loss"),
    ],
)
def test_unknown_metric_is_one_line_exit_2(grid, capsys, args, message):
    assert compare_main([str(grid), *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: " + message)
    assert captured.err.count("\n") == 1


def test_folder_without_runs_is_one_line_exit_2(tmp_path, runs_dir, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert compare_main([str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err.startswith(f"error: no runs in {tmp_path / 'empty'}")
    assert compare_main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert compare_main([]) == 2  # the runs root does not even exist yet
    assert capsys.readouterr().err.startswith("error: ")


def test_plot_next_to_the_runs_or_where_asked(grid, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert compare_main([str(grid)]) == 0
    assert (grid / "curves.png").read_bytes()[:8] == PNG
    assert f"curves: {grid / 'curves.png'}" in capsys.readouterr().err
    out = run_script("training/compare_runs.py", str(grid), "--plot", str(tmp_path / "c.png"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "c.png").read_bytes()[:8] == PNG
    assert out.stdout.splitlines()[0].startswith("run ")


def test_load_run_and_flatten(grid):
    run = load_run(grid / "killed")
    assert run.status == "interrupted" and len(run.history) == 2
    assert run.metrics["val_loss"] == 0.45 and "test_loss" not in run.metrics
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {
        "a.b": 1,
        "a.c.d": [1, 2],
        "e": {},
    }
    single, plot_dir = collect_runs([grid / "large"])
    assert [r.name for r in single] == ["grid/large"] and plot_dir == grid / "large"
