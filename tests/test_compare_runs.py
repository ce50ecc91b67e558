"""compare_runs: the table of runs (differing config keys, metrics, status, time), sorting, plots,
chosen columns, CSV/JSON, fitting the terminal, and curves that stay readable (diverged runs, many
runs, mixed metrics, labels by what differs)."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path

import pytest

from conftest import run_script
from text_recognizer.config import validate_config
from text_recognizer.orchestration.compare import (
    RunInfo,
    collect_runs,
    compare_main,
    curves_figure,
    differing_keys,
    flatten,
    load_run,
    run_labels,
)

PNG = b"\x89PNG\r\n\x1a\n"
BASE = {
    "dataset": "SyntheticCharactersDataset",
    "model": "CharacterModel",
    "network": "mlp",
    "network_args": {"layer_size": 64},
    "train_args": {"epochs": 3},
}


# The default table of the grid fixture: what differs, the metrics, status and time.
GRID_COLUMNS = [
    "run",
    "network_args.layer_size",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
    "status",
    "time",
]


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


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables fit the terminal (80 columns when there is none): these tests read one-line rows."""
    monkeypatch.setenv("COLUMNS", "250")


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
    assert header == GRID_COLUMNS
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


# ----- chosen columns, CSV and JSON ----------------------------------------------------------------
def test_columns_choose_what_is_shown_in_that_order(grid, capsys):
    args = [str(grid), "--no-plot", "--sort", "test_accuracy", "--desc"]
    columns = "name,test_accuracy,time,train_args.epoch*,network_args.layer_size,wall_time,status"
    assert compare_main([*args, "--columns", columns]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert rows[0] == [
        "name",
        "test_accuracy",
        "time",
        "train_args.epochs",
        "network_args.layer_size",
        "wall_time",
        "status",
    ]
    assert rows[1] == ["large", "0.9500", "1m15s", "3", "256", "75.0000", "finished"]
    assert rows[-1][:3] == ["killed", "-", "-"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--columns", "name,val_cer"],
            "unknown column 'val_cer' in --columns; valid: name, run, ",
        ),
        (["--columns", "lr*"], "no column matches 'lr*' in --columns; valid: name, run, status"),
        (["--columns", "name", "--metric", "val_loss"], "give --columns or --metric, not both"),
        (["--columns", " , "], "--columns names no column; valid: name, run, status"),
    ],
)
def test_bad_columns_are_one_line_exit_2(grid, capsys, args, message):
    assert compare_main([str(grid), "--no-plot", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: " + message)
    assert captured.err.count("\n") == 1
    if "valid:" in message:  # every kind of column is listed
        valid = captured.err.split("valid: ")[1].strip().split(", ")
        for name in ("time", "wall_time", "dir", "val_loss", "test_accuracy", "train_args.epochs"):
            assert name in valid


def test_an_unknown_format_is_one_line_exit_2(grid, capsys):
    with pytest.raises(SystemExit) as exited:
        compare_main([str(grid), "--format", "xml"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: argument --format: invalid choice: 'xml'") and err.count("\n") == 1
    )


def test_csv_and_json_files_hold_unrounded_values(grid, tmp_path, capsys):
    out_csv, out_json = tmp_path / "out" / "runs.csv", tmp_path / "runs.json"
    columns = "name,val_loss,test_accuracy,time,network_args.layer_size,status"
    args = [str(grid), "--no-plot", "--columns", columns, "--csv", str(out_csv)]
    assert compare_main([*args, "--json", str(out_json)]) == 0
    captured = capsys.readouterr()
    assert table_rows(captured.out)[0][0] == "name"  # the table is still printed
    assert f"wrote {out_csv}" in captured.err and f"wrote {out_json}" in captured.err
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert list(rows[0]) == columns.split(",")
    large = next(r for r in rows if r["name"] == "large")
    assert large == {
        "name": "large",
        "val_loss": "0.4",
        "test_accuracy": "0.95",
        "time": "75.0",  # seconds, a number
        "network_args.layer_size": "256",
        "status": "finished",
    }
    killed = next(r for r in rows if r["name"] == "killed")
    assert killed["test_accuracy"] == "" and killed["time"] == ""
    records = json.loads(out_json.read_text())
    assert [r["name"] for r in records] == [r["name"] for r in rows]  # sorted like the table
    assert records[0] == {
        "name": "large",
        "val_loss": 0.4,
        "test_accuracy": 0.95,
        "time": 75.0,
        "network_args.layer_size": 256,
        "status": "finished",
    }
    assert next(r for r in records if r["name"] == "killed")["test_accuracy"] is None
    assert not [p for p in tmp_path.rglob(".*.tmp")]  # written atomically, nothing left behind


def test_format_csv_and_json_to_stdout(grid, capsys):
    assert compare_main([str(grid), "--no-plot", "--format", "csv"]) == 0
    out = capsys.readouterr().out
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == GRID_COLUMNS
    assert [r[0] for r in rows[1:]] == ["large", "killed", "medium", "small"]
    assert compare_main([str(grid), "--no-plot", "--format", "json", "--columns", "run,dir"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert records[0] == {"run": "large", "dir": str(grid / "large")}


def test_every_column_for_pandas(grid, capsys):
    assert compare_main([str(grid), "--no-plot", "--format", "csv", "--columns", "*"]) == 0
    header = next(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert header[:5] == ["name", "status", "time", "wall_time", "dir"]  # one name column
    assert {"val_loss", "test_accuracy", "network_args.layer_size", "device"} <= set(header)
    assert "train_args.epochs" in header  # config keys that do not differ too


def test_an_unwritable_csv_is_one_line_before_any_work(grid, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    assert compare_main([str(grid), "--csv", str(tmp_path / "taken")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: cannot write --csv ")


# ----- fitting the terminal ------------------------------------------------------------------------
def long_names(runs_dir: Path) -> Path:
    """Runs whose folder names differ only in the middle, with many differing keys."""
    for i, size in enumerate((16, 64, 256)):
        run = make_run(runs_dir, f"20261206-14{i}000_syntheticlinesdataset_htr_crnn_abcdef", size,
                       [1.0 - i / 10, 0.5], group="long")  # fmt: skip
        config = json.loads((run / "config.json").read_text())
        config["train_args"].update(learning_rate=0.001 * (i + 1), batch_size=16 * (i + 1))
        (run / "config.json").write_text(json.dumps(config))
    return runs_dir / "long"


@pytest.mark.parametrize("width", [40, 60, 100])
def test_the_table_fits_the_terminal_in_blocks(runs_dir, capsys, monkeypatch, width):
    folder = long_names(runs_dir)
    monkeypatch.setenv("COLUMNS", str(width))
    assert compare_main([str(folder), "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= width
    blocks = [b.splitlines() for b in out.split("\n\n")]
    assert len(blocks) > 1
    headers = [h for b in blocks for h in b[0].split()[1:]]
    expected = [
        "network_args.layer_size",
        "train_args.batch_size",
        "train_args.learning_rate",
        "val_loss",
        "val_accuracy",
        "test_loss",
        "test_accuracy",
        "status",
        "time",
    ]
    assert len(headers) == len(expected)  # every column, each once
    for header, key in zip(headers, expected, strict=True):  # cut in the middle when too long
        head, _, tail = header.partition("...")
        assert header == key or (key.startswith(head) and key.endswith(tail)), (header, key)
    for block in blocks:  # every block starts with the runs' names, still told apart
        names = [line.split()[0] for line in block[2:]]
        assert len(set(names)) == 3 and all("14" in n for n in names)


def test_wide_keeps_one_line_per_run_only_off_a_terminal(runs_dir, capsys, monkeypatch):
    folder = long_names(runs_dir)
    monkeypatch.setenv("COLUMNS", "60")
    assert compare_main([str(folder), "--no-plot", "--wide"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and max(len(line) for line in lines) > 60
    assert "20261206-141000_syntheticlinesdataset_htr_crnn_abcdef" in lines[3]
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert compare_main([str(folder), "--no-plot", "--wide"]) == 0
    assert max(len(line) for line in capsys.readouterr().out.splitlines()) <= 60


# ----- the curves ----------------------------------------------------------------------------------
def fake_run(name: str, config: dict, history: list[dict]) -> RunInfo:
    return RunInfo(name=name, flat=flatten(config), history=history, status="finished")


def losses(values: list[float], metric: str = "val_loss", **extra: list[float]) -> list[dict]:
    lines = [{"epoch": i + 1, "train_loss": v, metric: v} for i, v in enumerate(values)]
    for key, column in extra.items():
        for line, v in zip(lines, column, strict=True):
            line[key] = v
    return lines


def panel(fig, metric: str):
    (ax,) = [ax for ax in fig.axes if ax.get_title().split(" (")[0] == metric]
    return ax


def legend_texts(fig) -> list[str]:
    return [t.get_text() for t in fig.legends[0].get_texts()]


def drawn_lines(ax) -> int:
    """Lines with data in a panel (edge markers are drawn with no line)."""
    return sum(1 for line in ax.get_lines() if line.get_linestyle() != "None")


def test_a_diverged_run_does_not_squash_the_others(tmp_path):
    pytest.importorskip("matplotlib")
    good = [2.0, 1.2, 0.8, 0.6, 0.5]
    runs = [
        fake_run("a", {"train_args": {"learning_rate": 0.001}}, losses(good)),
        fake_run("b", {"train_args": {"learning_rate": 0.003}}, losses([v * 1.1 for v in good])),
        fake_run("c", {"train_args": {"learning_rate": 0.1}}, losses([2.0, 1.5, 1e6, 3e6, 1e6])),
        fake_run(
            "d", {"train_args": {"learning_rate": 0.3}}, losses([2.0, math.nan, math.inf, 50, 60])
        ),
    ]
    fig = curves_figure(runs)
    for metric in ("train_loss", "val_loss"):
        ax = panel(fig, metric)
        low, high = ax.get_ylim()
        assert high < 3 and low > 0, (metric, ax.get_ylim())  # the good runs fill the panel
        assert ax.get_title() == f"{metric} (2 runs clipped)"
    assert legend_texts(fig) == [
        "lr=0.001",
        "lr=0.003",
        "lr=0.1 (clipped)",
        "lr=0.3 (clipped, nan)",
        "beyond the axis (clipped)",
        "NaN",
    ]
    # Two runs, one diverged: the other still fills the panel.
    fig = curves_figure(runs[1:3])
    assert panel(fig, "val_loss").get_ylim()[1] < 3


def test_a_loss_that_climbs_away_is_clipped_but_another_scale_is_not():
    pytest.importorskip("matplotlib")
    ramp = [2.0, 1.6, 1.4, 1.5, 4.5, 13.5, 40.5, 121.5]
    runs = [
        fake_run("a", {"lr": 0.001}, losses([2.0, 1.6, 1.3, 1.1, 1.0, 0.9, 0.8, 0.7])),
        fake_run("b", {"lr": 0.5}, losses(ramp)),
    ]
    assert panel(curves_figure(runs), "val_loss").get_ylim()[1] < 5
    # A run on another scale (losses of 3 next to losses of 0.05) is not clipped.
    runs = [
        fake_run("a", {"lr": 0.001}, losses([2.4, 0.2, 0.08, 0.05, 0.04])),
        fake_run("b", {"lr": 0.002}, losses([11.7, 3.5, 3.3, 4.07, 3.0, 2.5])),
    ]
    fig = curves_figure(runs)
    assert panel(fig, "train_loss").get_ylim()[1] > 4.07  # at most the first epoch goes off
    assert panel(fig, "val_loss").get_ylim()[1] > 4.07


def test_every_run_is_drawn_and_named_however_many(tmp_path):
    pytest.importorskip("matplotlib")
    runs = [
        fake_run(
            f"trial-{i:04d}",
            {"network_args": {"num_layers": 1 + i % 3, "layer_size": 2 ** (4 + i // 3)}},
            losses([2.0 - i / 100, 1.0, 0.5 + i / 100]),
        )
        for i in range(30)
    ]
    fig = curves_figure(runs)
    texts = legend_texts(fig)
    assert len(texts) == 30 and not any("more" in t for t in texts)
    assert texts[:2] == ["layers=1 size=16", "layers=2 size=16"]
    assert all(drawn_lines(ax) == 30 for ax in fig.axes)
    styles = {
        (str(line.get_color()), line.get_linestyle(), line.get_marker())
        for line in fig.legends[0].get_lines()
    }
    assert len(styles) == 30  # no two runs look alike


def test_each_panel_shows_every_run_that_has_its_metric():
    pytest.importorskip("matplotlib")
    runs = [
        fake_run("lines", {"network": "crnn"}, losses([1.0, 0.5], val_cer=[0.5, 0.2])),
        fake_run("chars", {"network": "lenet"}, losses([1.0, 0.4], val_accuracy=[0.5, 0.9])),
        fake_run("lines2", {"network": "lstm"}, losses([0.9, 0.6], val_cer=[0.6, 0.3])),
        fake_run("loss-only", {"network": "mlp"}, [{"epoch": 1, "val_loss": 0.7}]),
    ]
    fig = curves_figure(runs)
    assert [ax.get_title() for ax in fig.axes] == [
        "train_loss",
        "val_loss",
        "val_accuracy",
        "val_cer",
    ]
    assert [drawn_lines(ax) for ax in fig.axes] == [3, 4, 1, 2]
    assert legend_texts(fig) == ["network=crnn", "network=lenet", "network=lstm", "network=mlp"]


def test_labels_name_what_differs_briefly():
    def run(name: str, **config) -> RunInfo:
        return fake_run(name, config, [])

    runs = [
        run("20261206-134926_x_e8ec65", experiment_group="names", dataset="Synthetic", train_args={"num_threads": None, "epochs": 3}),
        run("20261206-140300_x_591da8", experiment_group="names", dataset="Kaggle", train_args={"num_threads": 1, "epochs": 100}, init_from="/runs/names/20261206-134926_x_e8ec65/weights.pt"),
        run("scratch", experiment_group="names", dataset="Kaggle", train_args={"num_threads": 2, "epochs": 100}),
        run("mnist", experiment_group="mnist", dataset="Emnist", train_args={"num_threads": 1, "epochs": 8}, network_args={"a": 1, "b": 2}),
    ]  # fmt: skip
    labels = run_labels(runs)
    assert labels == [
        "dataset=Synthetic",
        "dataset=Kaggle init_from=...e8ec65/weights.pt",
        "dataset=Kaggle",
        "dataset=Emnist",
    ], labels
    # Identical configs are told apart by name.
    labels = run_labels([run("r1", lr=0.1), run("r2", lr=0.1), run("r3", lr=0.2)])
    assert labels == ["lr=0.1 r1", "lr=0.1 r2", "lr=0.2"]
