"""Compare run records side by side: what differs in their configs, their metrics, status and time.

Reads only the run records (docs/design.md §5), so it works offline, on runs still in progress, and on
the trials of a local sweep (whose leaderboard is this table). A run that has not finished has no
best validation metrics in its summary yet; they are taken from its best epoch in metrics.jsonl.

    python training/compare_runs.py                         # every run under the runs root
    python training/compare_runs.py runs/mnist-real-digits --sort val_accuracy --desc
"""

from __future__ import annotations

import contextlib
import csv
import fnmatch
import io
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
from text_recognizer.errors import (
    UserError,
    command,
    one_line_parser,
    print_error,
    storage_error,
)
from text_recognizer.fileio import check_output_file, write_text_atomic
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


# ----- columns -------------------------------------------------------------------------------------
NAME_COLUMNS = ("name", "run")
BUILTIN_COLUMNS = ("status", "time", "wall_time", "dir")
NUMERIC_KINDS = ("metric", "time", "wall_time")


@dataclass(frozen=True)
class Column:
    """One table column: ``key`` as asked (and shown), ``kind`` says where its value comes from:
    name, status, time (wall time, 1m15s), wall_time (seconds), dir, metric, config or summary."""

    key: str
    kind: str


def _summary_columns(runs: Sequence[RunInfo]) -> list[str]:
    """Summary fields that are text or flags (device, host, init_from): numbers are metrics."""
    keys: list[str] = []
    for run in runs:
        keys.extend(
            k
            for k, v in run.summary.items()
            if isinstance(k, str) and isinstance(v, (str, bool)) and k not in keys
        )
    return keys


def valid_columns(runs: Sequence[RunInfo], first_column: str = "run") -> dict[str, str]:
    """Every column ``--columns`` accepts, name -> kind: the run's name, status, time (wall time,
    also ``wall_time`` in seconds), dir, every metric, every flattened config key, and the summary's
    text fields (device, host, ...)."""
    kinds: dict[str, str] = {name: "name" for name in (*NAME_COLUMNS, first_column)}
    kinds.update({k: k for k in BUILTIN_COLUMNS})
    for metric in available_metrics(runs):
        kinds.setdefault(metric, "metric")
    for run in runs:
        for key in run.flat:
            kinds.setdefault(key, "config")
    for key in _summary_columns(runs):
        kinds.setdefault(key, "summary")
    return kinds


def default_columns(
    runs: Sequence[RunInfo],
    metrics: Sequence[str] | None = None,
    sort: str | None = None,
    first_column: str = "run",
) -> list[Column]:
    """The run, the config keys that differ, the metrics (``sort`` first when not among them),
    status and time."""
    metrics = list(default_metrics(runs) if metrics is None else metrics)
    if sort and sort not in metrics and sort not in EXTRA_SORT_KEYS:
        metrics.insert(0, sort)
    return [
        Column(first_column, "name"),
        *(Column(k, "config") for k in differing_keys(runs)),
        *(Column(m, "metric") for m in metrics),
        Column("status", "status"),
        Column("time", "time"),
    ]


def resolve_columns(
    runs: Sequence[RunInfo], names: Sequence[str], first_column: str = "run"
) -> list[Column]:
    """The columns ``names`` asks for, in that order; a name may be a glob (``train_args.*``).

    An unknown name is a UserError listing the valid ones."""
    valid = valid_columns(runs, first_column)
    if not names:
        raise UserError(f"--columns names no column; valid: {', '.join(valid)}")
    columns: list[Column] = []
    for name in names:
        if any(c in name for c in "*?["):
            matched = [k for k in valid if fnmatch.fnmatchcase(k, name)]
            if not matched:
                raise UserError(
                    f"no column matches {name!r} in --columns; valid: {', '.join(valid)}"
                )
            names_matched = [k for k in matched if valid[k] == "name"][:1]  # one name column
            columns.extend(
                Column(k, valid[k]) for k in matched if valid[k] != "name" or k in names_matched
            )
        elif name in valid:
            columns.append(Column(name, valid[name]))
        else:
            raise UserError(f"unknown column {name!r} in --columns; valid: {', '.join(valid)}")
    unique: list[Column] = []
    for column in columns:
        if column not in unique:
            unique.append(column)
    return unique


def cell_value(run: RunInfo, column: Column) -> Any:
    """The value of a cell as data (CSV, JSON): numbers unrounded, time in seconds, None if none."""
    kind, key = column.kind, column.key
    if kind == "name":
        return run.name
    if kind == "status":
        return run.status
    if kind in ("time", "wall_time"):
        return run.wall_time
    if kind == "dir":
        return str(run.dir) if run.dir is not None else None
    if kind == "metric":
        return run.metrics.get(key)
    if kind == "config":
        return run.flat.get(key)
    return run.summary.get(key)


def cell_text(run: RunInfo, column: Column) -> str:
    """The value of a cell as the table shows it (4 decimals, 1m15s, long text cut)."""
    if column.kind == "time":
        return format_duration(run.wall_time)
    value = cell_value(run, column)
    return value if column.kind in ("name", "status", "dir") and value else format_value(value)


# ----- the table -----------------------------------------------------------------------------------
MIN_WIDTH = 20  # narrower terminals get 20-column lines


def terminal_width() -> int:
    """The terminal's width: ``COLUMNS``, else the terminal on stdout, stderr or stdin (so a table
    piped to ``less`` still fits the screen), else 80."""
    with contextlib.suppress(ValueError):
        columns = int(os.environ.get("COLUMNS", ""))
        if columns > 0:
            return columns
    for stream in (sys.__stdout__, sys.__stderr__, sys.__stdin__):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            columns = os.get_terminal_size(stream.fileno()).columns  # type: ignore[union-attr]
            if columns > 0:
                return columns
    return 80


def _cut(text: str, width: int, middle: bool = False) -> str:
    """``text`` in at most ``width`` characters: cut at the end (``abc...``) or, for names whose
    end tells them apart, in the middle (``2026...crnn_e8ec65``)."""
    if len(text) <= width:
        return text
    if width <= 3:
        return text[:width]
    if not middle:
        return text[: width - 3] + "..."
    head = (width - 3) // 2
    return text[:head] + "..." + text[len(text) - (width - 3 - head) :]


def render_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    numeric: set[int] = frozenset(),  # type: ignore[assignment]
    width: int | None = None,
) -> str:
    """Aligned text; with ``width``, no line is wider: long cells are cut and the columns that do
    not fit go to further blocks below, each starting with the first column again."""
    header = [printable(c) for c in header]
    rows = [[printable(c) for c in row] for row in rows]
    widths = [max(len(c) for c in col) for col in zip(header, *rows, strict=True)]
    cells = [list(header), *(list(r) for r in rows)]
    if width is not None and sum(widths) + 2 * (len(widths) - 1) > width:
        width = max(width, MIN_WIDTH)
        first = min(widths[0], max(8, width * 2 // 5)) if len(widths) > 1 else width
        names = [row[0] for row in rows]
        most = min(widths[0], width - 6)  # room for one more column (4 characters) beside it
        while first < most and len({_cut(n, first, True) for n in names}) < len(set(names)):
            first += 1  # cut names must still tell the runs apart
        rest = max(4, width - first - 2)
        widths = [first] + [min(w, rest) for w in widths[1:]]
        cells = [
            [
                _cut(c, w, middle=(i == 0 or r == 0))
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            for r, row in enumerate(cells)
        ]
    blocks: list[list[int]] = [[0]]
    used = widths[0]
    for i in range(1, len(widths)):
        if width is not None and used + 2 + widths[i] > width and len(blocks[-1]) > 1:
            blocks.append([0])
            used = widths[0]
        blocks[-1].append(i)
        used += 2 + widths[i]

    def line(row: Sequence[str], block: list[int]) -> str:
        out = [row[i].rjust(widths[i]) if i in numeric else row[i].ljust(widths[i]) for i in block]
        return "  ".join(out).rstrip()

    texts = []
    for block in blocks:
        dashes = ["-" * w for w in widths]
        texts.append("\n".join(line(r, block) for r in [cells[0], dashes, *cells[1:]]))
    return "\n\n".join(texts)


def format_table(
    runs: Sequence[RunInfo],
    metrics: Sequence[str] | None = None,
    sort: str | None = None,
    desc: bool = False,
    first_column: str = "run",
    columns: Sequence[Column] | None = None,
    width: int | None = None,
) -> str:
    """Plain aligned text: run, differing config keys, metrics, status and wall time (or
    ``columns``); with ``width``, fitted to it (see `render_table`)."""
    columns = list(columns or default_columns(runs, metrics, sort, first_column))
    header = [c.key for c in columns]
    rows = [[cell_text(run, c) for c in columns] for run in sort_runs(runs, sort, desc)]
    numeric = {i for i, c in enumerate(columns) if c.kind in NUMERIC_KINDS}
    return render_table(header, rows, numeric, width)


# ----- CSV and JSON --------------------------------------------------------------------------------
def _data_value(value: Any) -> Any:
    """A value JSON can hold: non-finite floats as null (they are no JSON numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _data_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_data_value(v) for v in value]
    return value


def table_records(runs: Sequence[RunInfo], columns: Sequence[Column]) -> list[dict[str, Any]]:
    """One dict per run, column -> value as data (`cell_value`), in table order."""
    return [{c.key: _data_value(cell_value(run, c)) for c in columns} for run in runs]


def _csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, dict)):
        value = json.dumps(value)
    # Lone surrogates (from a damaged record) cannot be encoded: written escaped, like the table.
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def to_csv(records: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """CSV with a header row (``pandas.read_csv`` reads it): empty cells for missing values,
    lists and dicts as JSON."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([_csv_text(c.key) for c in columns])
    for record in records:
        writer.writerow([_csv_text(record[c.key]) for c in columns])
    return buffer.getvalue()


def to_json(records: Sequence[dict[str, Any]]) -> str:
    """A JSON list of records, one object per run (``pandas.read_json`` / ``DataFrame``)."""
    return json.dumps(list(records), indent=2, default=str) + "\n"


# ----- the curves ----------------------------------------------------------------------------------
PANELS = ("train_loss", "val_loss", "val_accuracy", "val_cer")
# A value more than CLIP_FACTOR times the panel's typical level (the median over runs of each run's
# median) is beyond the y axis: one diverged run cannot squash the others. Never below CLIP_FLOOR,
# so rates (accuracy, CER) are never clipped.
CLIP_FACTOR = 20.0
CLIP_FLOOR = 1.5
# A value more than BLOWUP times the lowest one its run had reached is beyond the axis too (a run
# whose loss climbs back up by orders of magnitude: diverged).
BLOWUP = 4.0
# Short names for config keys in plot labels (``lr=0.001 layers=2``).
LABEL_NAMES = {
    "learning_rate": "lr",
    "num_layers": "layers",
    "layer_size": "size",
    "dropout_amount": "dropout",
    "batch_size": "bs",
    "experiment_group": "group",
    "weight_decay": "wd",
}
LABEL_KEYS = 4  # at most this many config keys in a label
LABEL_WIDTH = 48  # labels longer than this with every differing key use the fewest keys instead
# Settings of the machine, not of the experiment: named in a label only when nothing else differs.
LABEL_NOISE = ("num_threads", "num_workers", "device", "gpu", "data_dir")
LABEL_VALUE = 20  # characters of a value in a label


def _label_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        value = json.dumps(value, separators=(",", ":"))
    text = printable(value)
    if "/" in text.rstrip("/"):  # a path: its end says which (``...e8ec65/weights.pt``)
        text = "/".join(text.rstrip("/").rsplit("/", 2)[-2:])
        return text if len(text) <= LABEL_VALUE else "..." + text[3 - LABEL_VALUE :]
    return _cut(text, LABEL_VALUE)


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
    """``train_args.learning_rate`` -> ``lr``; keys whose short names collide keep their full name."""
    short = {k: LABEL_NAMES.get(k.rsplit(".", 1)[-1], k.rsplit(".", 1)[-1]) for k in keys}
    return {k: v if list(short.values()).count(v) == 1 else k for k, v in short.items()}


def run_labels(runs: Sequence[RunInfo]) -> list[str]:
    """A short label per run from what differs between them: ``lr=0.001 layers=2``.

    Every differing key when there are at most ``LABEL_KEYS`` and the labels stay short (a sweep's
    parameters); otherwise the fewest keys that tell the runs apart, chosen greedily: the key that
    splits them most, keys every run has before keys some lack, settings of the machine
    (``num_threads``) last. Labels still alike, or runs that differ in nothing, are told apart by
    their names."""
    if len(runs) < 2:
        return [printable(r.name) for r in runs]
    missing = object()
    keys = differing_keys(runs)
    values = {  # a key set to null (unset) is left out of a label like a missing one
        k: [missing if r.flat.get(k) is None else _label_value(r.flat[k]) for r in runs]
        for k in keys
    }

    def labels_for(chosen: Sequence[str]) -> list[str]:
        short = _short_keys(chosen)
        return [
            " ".join(f"{short[k]}={values[k][i]}" for k in chosen if values[k][i] is not missing)
            for i in range(len(runs))
        ]

    def score(chosen: list[str], key: str) -> tuple[int, ...]:
        now = len(set(labels_for(chosen)))
        after = len(set(labels_for([*chosen, key])))
        lacking = sum(v is missing for v in values[key])
        noise = key.rsplit(".", 1)[-1] in LABEL_NOISE
        return (after > now, -noise, after - (lacking > 0), -lacking, -keys.index(key))

    chosen = list(keys)
    if len(keys) > LABEL_KEYS or max(len(label) for label in labels_for(keys)) > LABEL_WIDTH:
        chosen = []
        while len(chosen) < LABEL_KEYS and len(set(labels_for(chosen))) < len(runs):
            best = max((k for k in keys if k not in chosen), key=lambda k: score(chosen, k))
            if not score(chosen, best)[0]:
                break  # the runs still alike have the same config
            chosen.append(best)
        chosen.sort(key=keys.index)
    labels = labels_for(chosen)
    return [
        label
        if label and labels.count(label) == 1
        else _join(label, _cut(printable(r.name), 32, True))
        for label, r in zip(labels, runs, strict=True)
    ]


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


@dataclass
class _Series:
    """One run's values of one metric: what a line draws, and what lies beyond the axis."""

    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)
    high: list[float] = field(default_factory=list)  # epochs of values above the axis (+inf, huge)
    low: list[float] = field(default_factory=list)  # ... below it
    nan: list[float] = field(default_factory=list)  # epochs of NaN values
    left_out: int = 0  # finite values beyond PLOT_LIMIT (warned about)


def _series(run: RunInfo, metric: str) -> _Series:
    series = _Series()
    for j, h in enumerate(run.history):
        if metric not in h:
            continue
        y, x = h[metric], h.get("epoch")
        x = x if _is_number(x) else j + 1
        is_float = isinstance(y, float) or (isinstance(y, int) and not isinstance(y, bool))
        if not is_float:
            continue
        if not _plottable(x):
            series.left_out += _is_number(y)
            continue
        if _plottable(y):
            series.xs.append(x)
            series.ys.append(float(y))
        elif isinstance(y, float) and math.isnan(y):
            series.nan.append(x)
        else:
            series.left_out += _is_number(y)
            (series.high if y > 0 else series.low).append(x)
    return series


def _plottable(value: Any) -> bool:
    return _is_number(value) and abs(value) <= PLOT_LIMIT


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def clip_limit(series: Sequence[Sequence[float]]) -> float:
    """How far from zero a panel's y axis reaches: ``CLIP_FACTOR`` times its typical level (the
    median over runs of each run's median size, taken in log space, so with two runs one that
    diverged cannot set it), at least ``CLIP_FLOOR``."""
    levels = [_median([abs(y) for y in ys]) for ys in series if ys]
    levels = [math.log(v) for v in levels if v > 0]
    if not levels:
        return CLIP_FLOOR
    return max(CLIP_FLOOR, CLIP_FACTOR * math.exp(_median(levels)))


def beyond_axis(ys: Sequence[float], limit: float) -> list[bool]:
    """Which of one run's values (in epoch order) lie beyond the y axis: those past the panel's
    `clip_limit`, and those of a run that blew up, more than ``BLOWUP`` times its lowest value so
    far; never one within ``CLIP_FLOOR`` of zero."""
    far, lowest = [], math.inf
    for y in ys:
        blew_up = 0 < lowest < math.inf and y > BLOWUP * lowest
        far.append(abs(y) > CLIP_FLOOR and (abs(y) > limit or blew_up))
        lowest = min(lowest, y)
    return far


def _legend_columns(labels: Sequence[str], fig_width: float, fontsize: float) -> int:
    """As many legend columns as fit across the figure (inches), at most one per label."""
    char = fontsize * 0.52 / 72  # inches per character, about (DejaVu Sans)
    entry = max(len(label) for label in labels) * char + 0.9  # the line sample and padding
    return max(1, min(len(labels), int((fig_width - 0.4) / entry)))


@dataclass
class _Panel:
    """What one panel draws of one run: its line, and where it leaves the axis."""

    series: _Series
    high: list[float]  # epochs of values above the axis (clipped, +inf, beyond PLOT_LIMIT)
    low: list[float]  # ... below it
    kept: list[float]  # the values within the axis


def _panel(series: _Series, limit: float) -> _Panel:
    far = beyond_axis(series.ys, limit)
    points = list(zip(series.xs, series.ys, far, strict=True))
    return _Panel(
        series=series,
        high=series.high + [x for x, y, f in points if f and y > 0],
        low=series.low + [x for x, y, f in points if f and y < 0],
        kept=[y for _, y, f in points if not f],
    )


def curves_figure(
    runs: Sequence[RunInfo], title: str | None = None, warn: IO[str] | None = None
) -> Any:
    """The training curves of ``runs`` as a matplotlib Figure (see `plot_curves`); None when no
    run has a plottable per-epoch value."""
    from matplotlib import colormaps
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    from text_recognizer.figures import new_figure

    with_history = [r for r in runs if r.history]
    data = {m: [_series(r, m) for r in with_history] for m in PANELS}
    left_out = sum(s.left_out for series in data.values() for s in series)
    if left_out:
        print(
            f"warning: {left_out} metric value(s) beyond +-{PLOT_LIMIT:g} (or an epoch that is) "
            "left out of the plot",
            file=warn or sys.stderr,
        )
    metrics = [m for m in PANELS if any(s.ys for s in data[m])]
    if not metrics:  # no history, or not a single plottable number (damaged records)
        return None
    shown = [i for i, r in enumerate(with_history) if any(data[m][i].ys for m in metrics)]
    panels = {}
    for m in metrics:
        limit = clip_limit([data[m][i].ys for i in shown])
        panels[m] = [_panel(data[m][i], limit) for i in shown]
    labels = run_labels([with_history[i] for i in shown])
    clipped = [
        any(panels[m][k].high or panels[m][k].low for m in metrics) for k in range(len(shown))
    ]
    nan = [any(panels[m][k].series.nan for m in metrics) for k in range(len(shown))]
    for k, label in enumerate(labels):
        tags = [t for t, on in (("clipped", clipped[k]), ("nan", nan[k])) if on]
        labels[k] = f"{label} ({', '.join(tags)})" if tags else label
    keys = [("^", "beyond the axis (clipped)", any(clipped)), ("x", "NaN", any(nan))]
    keys = [(marker, text) for marker, text, on in keys if on]

    colors = colormaps["tab10"]
    styles = ("-", "--", ":", "-.")
    markers = ("o", "s", "^", "D", "v", "P", "X", "*")

    def style(k: int) -> dict[str, Any]:
        return {
            "color": colors(k % 10),
            "linestyle": styles[k // 10 % len(styles)],
            "marker": markers[k // 10 % len(markers)] if len(shown) > 10 else "o",
        }

    panel_width, panel_height, fontsize = 5.0, 3.6, 8.0
    fig_width = panel_width * len(metrics)
    if len(labels) > 10:  # a legend of many runs gets columns, not a strip as tall as a page
        fig_width = max(fig_width, 10.0 if len(labels) <= 40 else 15.0)
    ncol = _legend_columns([*labels, *(text for _, text in keys)], fig_width, fontsize)
    legend_rows = math.ceil((len(labels) + len(keys)) / ncol)
    fig = new_figure(
        figsize=(fig_width, panel_height + 0.5 + 0.19 * legend_rows), layout="constrained"
    )
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        kept: list[float] = []
        xs_all: list[float] = []
        for k, panel in enumerate(panels[metric]):
            s, st = panel.series, style(k)
            kept += panel.kept
            xs_all += s.xs + s.high + s.low + s.nan
            if s.xs:
                ax.plot(s.xs, s.ys, markersize=3, markevery=max(1, len(s.xs) // 25),
                        linewidth=1.3, **st)  # fmt: skip
            edge = ax.get_xaxis_transform()  # x in epochs, y in axes fractions (0 bottom, 1 top)
            for xs, y, marker in ((panel.high, 0.985, "^"), (panel.low, 0.015, "v"),
                                  (s.nan, 0.94, "x")):  # fmt: skip
                if xs:
                    ax.plot(xs, [y] * len(xs), transform=edge, linestyle="none", marker=marker,
                            markersize=6, color=st["color"], clip_on=False)  # fmt: skip
        off = sum(bool(p.high or p.low) for p in panels[metric])
        if kept and off:
            lo, hi = min(kept), max(kept)
            pad = 0.06 * (hi - lo or abs(hi) or 1.0)
            ax.set_ylim(lo - pad, hi + pad)
        if xs_all:
            first, last = min(xs_all), max(xs_all)
            ax.set_xlim(first - 0.5, last + 0.5)
            if last - first < 2:  # one or two epochs: the locator would fall back to 0.1 steps
                ax.set_xticks(range(math.ceil(first), math.floor(last) + 1))
        note = f" ({off} run{'s' if off > 1 else ''} clipped)" if off else ""
        ax.set_title(metric + note, fontsize=10)
        ax.set_xlabel("epoch")
        if not xs_all or max(xs_all) - min(xs_all) >= 2:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], markersize=3, **style(k)) for k in range(len(shown))]
    handles += [Line2D([], [], color="0.3", marker=m, linestyle="none") for m, _ in keys]
    if len(labels) > 1 or keys or not title or labels[0] not in title:  # else the title names it
        fig.legend(
            handles,
            [*labels, *(text for _, text in keys)],
            loc="outside lower center",
            ncol=ncol,
            fontsize=fontsize,
        )
    if len(shown) < len(runs):
        unseen = len(runs) - len(shown)
        note = f"{unseen} run{'s' if unseen > 1 else ''} without per-epoch metrics not drawn"
        title = f"{title}; {note}" if title else note
    if title:
        fig.suptitle(printable(title), fontsize=11)
    return fig


def plot_curves(
    runs: Sequence[RunInfo], out: Path | str, title: str | None = None, warn: IO[str] | None = None
) -> Path | None:
    """Save train/val loss, val accuracy and val CER per epoch for each run as a PNG.

    One panel per metric that any run has; each panel draws every run that has the metric. Runs are
    labelled by the config keys that differ between them (`run_labels`) in one legend below the
    panels that names every run. A value beyond a panel's `clip_limit` or `beyond_axis` (a
    diverged run), infinite or beyond ``PLOT_LIMIT`` is drawn as a triangle on the axis edge, a NaN
    as a cross, and the run's label and the panel's title say so. Returns None when no run has a
    plottable per-epoch value. Raises ImportError without matplotlib. Finite values beyond
    ``PLOT_LIMIT`` are counted in one warning line on ``warn`` (default stderr). Drawn without
    pyplot (`figures.new_figure`), so a notebook's backend is left as it was.
    """
    from text_recognizer.figures import save_png

    fig = curves_figure(runs, title, warn)
    return None if fig is None else save_png(fig, out, bbox_inches="tight", pad_inches=0.1)


def _split_metrics(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [m.strip() for v in values for m in v.split(",") if m.strip()]


def _parser() -> Any:
    """compare_runs' options."""
    parser = one_line_parser(
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
        "--columns",
        action="append",
        help="exactly these columns, in this order, comma-separated: name, status, time "
        "(wall_time: seconds), dir, any metric, any config key (train_args.learning_rate), summary "
        "text fields (device); globs too (train_args.*); replaces --metric",
    )
    parser.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="what to print: the table (default), or CSV / JSON records of the same columns for "
        "pandas (numbers unrounded, time in seconds)",
    )
    parser.add_argument("--csv", metavar="FILE", help="also write the columns as CSV to FILE")
    parser.add_argument("--json", metavar="FILE", help="also write them as JSON records to FILE")
    parser.add_argument(
        "--wide",
        action="store_true",
        help="one line per run however long, when the output is not a terminal (a file, a pipe); "
        "otherwise the table fits the terminal width (COLUMNS), wrapping columns into blocks",
    )
    parser.add_argument(
        "--plot", help=f"where to save the curves (default: {PLOT_NAME} beside the runs)"
    )
    parser.add_argument("--no-plot", action="store_true", help="do not save a plot")
    return parser


@command
def compare_main(argv: list[str] | None = None) -> int:
    """Entry point of training/compare_runs.py."""
    args = _parser().parse_args(argv)
    try:
        if args.columns and args.metric:
            raise UserError("give --columns or --metric, not both (--columns lists every column)")
        for path, option in ((args.csv, "--csv"), (args.json, "--json"), (args.plot, "--plot")):
            if path:
                check_output_file(path, option)
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
        if args.columns:
            columns = resolve_columns(runs, _split_metrics(args.columns) or [])
        else:
            columns = default_columns(runs, metrics, sort)
        for run in runs:
            if run.problems:
                progress.line(
                    f"warning: {printable(run.name)}: {'; '.join(run.problems)}; not read",
                )
        ordered = sort_runs(runs, sort, args.desc)
        _print_and_write(args, ordered, columns)
        return 0 if args.no_plot else _save_plot(args, ordered, plot_dir)
    except UserError as e:
        return print_error(e)


def _print_and_write(args: Any, ordered: list[RunInfo], columns: list[str]) -> None:
    """The table (or CSV / JSON) on stdout, and the --csv / --json files."""
    records = table_records(ordered, columns)
    if args.format == "csv":
        sys.stdout.write(to_csv(records, columns))
    elif args.format == "json":
        sys.stdout.write(to_json(records))
    else:
        width = None if args.wide and not sys.stdout.isatty() else terminal_width()
        table = format_table(ordered, columns=columns, width=width)
        print(table)
        blocks = table.count("\n\n") + 1  # cells never hold a newline (printable)
        if blocks > 2:
            progress.line(
                f"note: {len(columns)} columns in {blocks} blocks; pick some with --columns"
            )
    for path, text in ((args.csv, to_csv(records, columns)), (args.json, to_json(records))):
        if path:
            try:
                write_text_atomic(path, text)
            except OSError as e:
                raise storage_error(e, path) from None
            progress.line(f"wrote {path}")


def _save_plot(args: Any, ordered: list[RunInfo], plot_dir: Path) -> int:
    """The curves PNG (--plot, else beside the runs); a missing matplotlib is a warning unless
    --plot asked for it."""
    out = Path(args.plot) if args.plot else plot_dir / PLOT_NAME
    n = len(ordered)
    try:
        saved = plot_curves(
            ordered, out, title=f"{n} run{'s' if n > 1 else ''}, {time.strftime('%Y-%m-%d %H:%M')}"
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
