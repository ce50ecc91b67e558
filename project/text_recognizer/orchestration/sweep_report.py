"""What a finished sweep shows: the leaderboard of its trials and their training curves.

Apart from the scheduler because it only formats: it is given the trials as ``compare_runs`` rows
(``LocalSweep.rows``, with the sweep's own status and metric, which state.json holds and a trial's
run record does not), so the table and the plot are the ones ``compare_runs`` makes, ranked by the
sweep's metric.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from text_recognizer.orchestration.compare import (
    RunInfo,
    default_metrics,
    format_table,
    plot_curves,
)
from text_recognizer.orchestration.sweep_state import SweepState
from text_recognizer.orchestration.sweep_yaml import describe_params, sweep_metric, swept_params


def leaderboard(state: SweepState, rows: list[RunInfo]) -> str:
    """The trials sorted by the sweep's metric (best first), with what differs between them, and
    the best and worst trials' parameters."""
    metric, maximize = sweep_metric(state.sweep)
    if not rows:
        return "no trials ran"
    sort = metric or ("val_loss" if any("val_loss" in r.metrics for r in rows) else None)
    metrics = [sort] if sort else []
    metrics += [m for m in default_metrics(rows) if m.startswith("test_") and m != sort]
    table = format_table(rows, metrics, sort, desc=maximize, first_column="trial")
    scored = [r for r in rows if sort and sort in r.metrics]
    if len(scored) < 2:
        return table
    ordered = sorted(scored, key=lambda r: r.metrics[sort], reverse=maximize)
    best, worst = ordered[0], ordered[-1]
    params = {t.id: swept_params(state.sweep, t.params) for t in state.trials}
    return (
        f"{table}\nbest:  {best.name} {sort} {best.metrics[sort]:.4f}  "
        f"({describe_params(params[best.name])})\n"
        f"worst: {worst.name} {sort} {worst.metrics[sort]:.4f}  "
        f"({describe_params(params[worst.name])})"
    )


def save_curves(
    state: SweepState, rows: list[RunInfo], state_dir: Path, say: Callable[[str], Any]
) -> None:
    """curves.png in the state folder; a plot never fails a sweep (``say`` tells why there is none)."""
    try:
        out = plot_curves(rows, state_dir / "curves.png", title=state.name)
    except ImportError:
        say("note: matplotlib is not installed; no curves.png")
        return
    except Exception as e:  # a plot never fails a sweep
        say(f"warning: no curves.png ({type(e).__name__}: {e})")
        return
    if out is not None:
        say(f"curves: {out}")
