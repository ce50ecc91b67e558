"""Compare run records side by side: what differs in their configs, their metrics, status and time.

Reads only the run records (docs/design.md §5), so it works offline, on runs still in progress, and on
the trials of a local sweep (whose leaderboard is this table). A run that has not finished has no
best validation metrics in its summary yet; they are taken from its best epoch in metrics.jsonl.

    python training/compare_runs.py                         # every run under the runs root
    python training/compare_runs.py runs/mnist-real-digits --sort val_accuracy --desc
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from text_recognizer import progress
from text_recognizer.errors import UserError, print_error
from text_recognizer.run.records import best_epoch, read_history, read_json

# Config keys never shown as "differing": the run column already names the run.
HIDDEN_KEYS = ("run_name",)
EXTRA_SORT_KEYS = ("wall_time",)
PLOT_NAME = "curves.png"
MAX_DEPTH = 16
# Values a plot axis can hold: past about 1e308 matplotlib's autoscaling overflows (ValueError).
PLOT_LIMIT = 1e100


@dataclass
class RunInfo:
    """One run as the table sees it: flattened config, numeric metrics, status, history."""

    name: str
    dir: Path | None = None
    flat: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    status: str = "unknown"
    wall_time: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # record files that could not be read


def flatten(config: dict[str, Any], prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """``{"network_args": {"layer_size": 256}}`` -> ``{"network_args.layer_size": 256}``.

    A config nests a few levels; anything deeper than ``MAX_DEPTH`` (a damaged or foreign file)
    is kept whole as a value rather than walked (and never overflows the stack)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and depth < MAX_DEPTH:
            out.update(flatten(value, name + ".", depth + 1))
        else:
            out[name] = value if depth < MAX_DEPTH else "..."
    return out


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool; an int too large for a float, 1e400 in JSON, is not)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def printable(text: object) -> str:
    """``text`` with control characters and lone surrogates escaped (``\\x00``, ``\\ud800``).

    Record files and folder names are not ours: printed raw, a surrogate stops the print with a
    UnicodeEncodeError and a newline or escape sequence breaks the table.
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def load_run(run_dir: Path, name: str | None = None) -> RunInfo:
    """Read one run folder into a RunInfo (never raises for missing or partial files)."""
    run_dir = Path(run_dir)
    problems: list[str] = []
    config = read_json(run_dir / "config.json", problems)
    summary = read_json(run_dir / "summary.json", problems)
    history = read_history(run_dir / "metrics.jsonl", problems)
    metrics = {k: float(v) for k, v in summary.items() if _is_number(v)}
    best = best_epoch(history) if history else None
    if best is not None:
        for key, value in best.items():
            if key.startswith("val_") and _is_number(value):
                metrics.setdefault(key, float(value))
    wall = summary.get("wall_time")
    status = summary.get("status") or ("running" if config else "unknown")
    if not config and not summary and problems:
        status = "unreadable"
    return RunInfo(
        name=name or run_dir.name,
        dir=run_dir,
        flat={k: v for k, v in flatten(config).items() if k not in HIDDEN_KEYS},
        metrics=metrics,
        status=str(status),
        wall_time=float(wall) if _is_number(wall) else None,
        history=history,
        summary=summary,
        problems=problems,
    )


def is_run_dir(path: Path) -> bool:
    """A run folder holds config.json and summary.json (either is enough while it starts)."""
    return (path / "summary.json").is_file() or (path / "config.json").is_file()


def find_run_dirs(folder: Path) -> list[Path]:
    """``folder`` itself when it is a run, else every run folder below it (not inside wandb/)."""
    if is_run_dir(folder):
        return [folder]
    found: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d != "wandb" and not d.startswith("."))
        if "summary.json" in filenames or "config.json" in filenames:
            found.add(Path(dirpath))
            dirnames[:] = []  # a run folder holds no runs
    return sorted(found)


def collect_runs(folders: Sequence[Path | str] | None = None) -> tuple[list[RunInfo], Path]:
    """The runs in ``folders`` (default: everything under the runs root) and where a plot goes."""
    from text_recognizer import paths

    roots = [Path(f) for f in folders] if folders else [paths.runs_dir()]
    runs: list[RunInfo] = []
    seen: set[Path] = set()
    for root in roots:
        if not root.exists():
            raise UserError(f"{root} does not exist")
        if not root.is_dir():
            raise UserError(f"{root} is not a folder")
        dirs = find_run_dirs(root)
        if not dirs:
            raise UserError(
                f"no runs in {root} (a run folder holds config.json and summary.json; "
                "runs are written under the runs root by run_experiment.py)"
            )
        for d in dirs:
            key = d.resolve()
            if key in seen:
                continue
            seen.add(key)
            if d == root:
                name = f"{root.resolve().parent.name}/{root.resolve().name}"
            else:
                name = str(d.relative_to(root))
                if len(roots) > 1:
                    name = f"{root.name}/{name}"
            runs.append(load_run(d, name))
    if len(roots) == 1:
        plot_dir = roots[0]
    else:
        plot_dir = Path(os.path.commonpath([str(r.resolve()) for r in roots]))
    return runs, plot_dir


def differing_keys(runs: Sequence[RunInfo]) -> list[str]:
    """Flattened config keys whose value is not the same in every run (missing counts)."""
    keys: list[str] = []
    for run in runs:
        keys.extend(k for k in run.flat if k not in keys)
    if len(runs) < 2:
        return []
    missing = object()

    def canon(value: Any) -> str:
        return "<missing>" if value is missing else json.dumps(value, sort_keys=True, default=str)

    return [k for k in keys if len({canon(r.flat.get(k, missing)) for r in runs}) > 1]


def available_metrics(runs: Iterable[RunInfo]) -> list[str]:
    """Every numeric metric any run has, in a stable order (val_, test_, then the rest)."""
    names: set[str] = set()
    for run in runs:
        names.update(run.metrics)

    def order(name: str) -> tuple[int, str]:
        rank = 0 if name == "val_loss" else 1 if name.startswith("val_") else 2
        rank = 3 if name == "test_loss" else 4 if name.startswith("test_") else rank
        return (rank if name.startswith(("val_", "test_")) else 5, name)

    return sorted(names, key=order)


def default_metrics(runs: Sequence[RunInfo]) -> list[str]:
    """val_loss, the other validation metrics (accuracy or cer, ...), and the test metrics."""
    return [m for m in available_metrics(runs) if m.startswith(("val_", "test_"))]


def sort_runs(runs: Sequence[RunInfo], key: str | None, desc: bool = False) -> list[RunInfo]:
    """Sort by a metric (or wall_time); runs without it go last whichever the direction."""
    if key is None:
        return list(runs)

    def value(run: RunInfo) -> float | None:
        return run.wall_time if key == "wall_time" else run.metrics.get(key)

    have = [r for r in runs if value(r) is not None]
    lack = [r for r in runs if value(r) is None]
    return sorted(have, key=lambda r: value(r), reverse=desc) + lack  # type: ignore[arg-type,return-value]


def check_sort_key(runs: Sequence[RunInfo], key: str) -> None:
    """Refuse an unknown sort metric with the available ones listed."""
    valid = available_metrics(runs)
    valid += [k for k in EXTRA_SORT_KEYS if k not in valid]
    if key not in valid:
        raise UserError(f"unknown sort metric {key!r}; available: {', '.join(valid)}")


def format_duration(seconds: float | None) -> str:
    """12.3s, 1m15s, 1h01m: short enough for a table column."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_value(value: Any, width: int = 40) -> str:
    """A table cell: 4 decimals for floats, JSON for lists, long text cut at ``width``."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        text = f"{value:.4f}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:.3g}"
    elif isinstance(value, (list, dict)):
        text = json.dumps(value)
    else:
        text = str(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def format_table(
    runs: Sequence[RunInfo],
    metrics: Sequence[str] | None = None,
    sort: str | None = None,
    desc: bool = False,
    first_column: str = "run",
) -> str:
    """Plain aligned text: run, differing config keys, metrics, status and wall time."""
    metrics = list(default_metrics(runs) if metrics is None else metrics)
    if sort and sort not in metrics and sort not in EXTRA_SORT_KEYS:
        metrics.insert(0, sort)
    keys = differing_keys(runs)
    header = [first_column, *keys, *metrics, "status", "time"]
    rows = [
        [
            run.name,
            *(format_value(run.flat.get(k)) for k in keys),
            *(format_value(run.metrics.get(m)) for m in metrics),
            run.status,
            format_duration(run.wall_time),
        ]
        for run in sort_runs(runs, sort, desc)
    ]
    header = [printable(c) for c in header]
    rows = [[printable(c) for c in row] for row in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    numeric = {i for i, h in enumerate(header) if h in metrics or h == "time"}

    def line(cells: Sequence[str]) -> str:
        out = [
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _plottable(value: Any) -> bool:
    return _is_number(value) and abs(value) <= PLOT_LIMIT


def plot_curves(
    runs: Sequence[RunInfo], out: Path | str, title: str | None = None, warn: IO[str] | None = None
) -> Path | None:
    """Save train/val loss (and val accuracy or CER) per epoch for each run as a PNG.

    Returns None when no run has a per-epoch history yet. Raises ImportError without matplotlib.
    Only values a plot axis can hold are drawn (finite, at most ``PLOT_LIMIT`` in size); when some
    are left out, one warning line on ``warn`` (default stderr) says how many.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from text_recognizer.fileio import atomic_path

    with_history = [r for r in runs if r.history]
    if not with_history:
        return None
    panels = ["train_loss", "val_loss"]
    for extra in ("val_accuracy", "val_cer"):
        if any(extra in h for r in with_history for h in r.history):
            panels.append(extra)
            break
    colors = plt.get_cmap("tab20")
    left_out = 0
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, metric in zip(axes[0], panels, strict=True):
        for i, run in enumerate(with_history):
            points = [
                (h["epoch"] if _is_number(h.get("epoch")) else j + 1, h[metric])
                for j, h in enumerate(run.history)
                if _is_number(h.get(metric))
            ]
            kept = [(x, y) for x, y in points if _plottable(x) and _plottable(y)]
            left_out += len(points) - len(kept)
            points = kept
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(
                    xs,
                    ys,
                    marker="o",
                    markersize=3,
                    label=printable(run.name),
                    color=colors(i % 20),
                    linestyle=("-", "--", ":", "-.")[i // 20 % 4],
                )
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles, labels = max(
        (ax.get_legend_handles_labels() for ax in axes[0]), key=lambda h: len(h[1])
    )
    if left_out:
        print(
            f"warning: {left_out} metric value(s) beyond +-{PLOT_LIMIT:g} (or an epoch that is) "
            "left out of the plot",
            file=warn or sys.stderr,
        )
    if not labels:  # histories without a single plottable number (damaged records)
        plt.close(fig)
        return None
    if len(labels) > 20:
        handles, labels = handles[:20], [*labels[:19], f"... {len(labels) - 19} more"]
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=7)
    if title:
        fig.suptitle(printable(title))
    rows_of_legend = math.ceil(len(labels) / 3)
    fig.tight_layout(rect=(0, min(0.45, 0.04 * rows_of_legend + 0.02), 1, 1))
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return out


def _split_metrics(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [m.strip() for v in values for m in v.split(",") if m.strip()]


def compare_main(argv: list[str] | None = None) -> int:
    """Entry point of training/compare_runs.py."""
    parser = argparse.ArgumentParser(
        description="Compare run records: what differs in their configs, key metrics, status, "
        "time; saves a plot of training curves.",
    )
    parser.add_argument(
        "folders", nargs="*", help="run folders or folders of runs (default: the runs root)"
    )
    parser.add_argument("--sort", help="metric to sort by (default: val_loss when runs have it)")
    parser.add_argument("--desc", action="store_true", help="sort descending (accuracy)")
    parser.add_argument(
        "--metric",
        action="append",
        help="metric column(s) to show, repeatable or comma-separated (default: val_* and test_*)",
    )
    parser.add_argument(
        "--plot", help=f"where to save the curves (default: {PLOT_NAME} beside the runs)"
    )
    parser.add_argument("--no-plot", action="store_true", help="do not save a plot")
    args = parser.parse_args(argv)
    try:
        runs, plot_dir = collect_runs(args.folders)
        available = available_metrics(runs)
        metrics = _split_metrics(args.metric)
        for m in metrics or []:
            if m not in available:
                raise UserError(f"unknown metric {m!r}; available: {', '.join(available)}")
        sort = args.sort
        if sort is not None:
            check_sort_key(runs, sort)
        elif "val_loss" in available:
            sort = "val_loss"
        for run in runs:
            if run.problems:
                progress.line(
                    f"warning: {printable(run.name)}: {'; '.join(run.problems)}; not read",
                )
        print(format_table(runs, metrics, sort, args.desc))
        if args.no_plot:
            return 0
        out = Path(args.plot) if args.plot else plot_dir / PLOT_NAME
        try:
            saved = plot_curves(
                runs, out, title=f"{len(runs)} runs, {time.strftime('%Y-%m-%d %H:%M')}"
            )
        except ImportError:
            message = "matplotlib is not installed (pip install matplotlib); no plot saved"
            if args.plot:
                raise UserError(message) from None
            progress.line(f"warning: {message}")
            return 0
        except OSError as e:
            raise UserError(f"cannot write the plot to {out}: {e.strerror or e}") from None
        if saved is None:
            progress.line("no per-epoch metrics yet; no plot saved")
        else:
            progress.line(f"curves: {saved}")
        return 0
    except UserError as e:
        return print_error(e)
