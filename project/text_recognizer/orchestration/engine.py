"""W&B's open-source ``sweeps`` engine, behind the few calls a local sweep makes.

Kept apart because the engine is a foreign API with habits of its own: it warns on import and on
every proposal (pydantic, scipy), hands back numpy values, draws from the global random generators,
and wants trials as ``sweeps.SweepRun``. Everything here turns that into plain, quiet, repeatable
calls; the YAML checks and the scheduler use only these.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Callable
from typing import Any

from text_recognizer.orchestration.sweep_state import Trial


def import_sweeps() -> Any:
    """W&B's sweeps engine, imported quietly (it warns about pydantic v2 config names)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import sweeps
        import sweeps.params
    return sweeps


def plain(value: Any) -> Any:
    """numpy scalars and arrays from the engine -> plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def run_params(run: Any) -> dict[str, Any]:
    """A proposed run's parameters as plain values (what the trial is given)."""
    return {k: plain(v["value"]) for k, v in run.config.items()}


def sweep_run(
    trial: Trial, metric: str | None, history: Callable[[Trial], list[dict[str, Any]]]
) -> Any:
    """A trial as the engine sees it: its state, parameters, per-epoch history and best metric.

    A trial hyperband stopped counts as finished: stopped early, but its metric is real. The
    history (a read of the trial's record) is asked for only when the trial has started.
    """
    sweeps = import_sweeps()
    state = {
        "finished": "finished",
        "stopped": "finished",
        "failed": "failed",
        "running": "running",
    }.get(trial.status, "pending")
    summary = {metric: trial.metric} if metric and trial.metric is not None else {}
    return sweeps.SweepRun(
        name=trial.id,
        state=state,
        config={k: {"value": v} for k, v in trial.params.items()},
        history=history(trial) if state != "pending" else [],
        summary_metrics=summary,
    )


def next_params(sweep: dict[str, Any], runs: list[Any], seed_text: str) -> dict[str, Any] | None:
    """The engine's next proposal, or None when it has run out (a grid fully proposed).

    Random and bayes draw from the global generators: they are seeded from ``seed_text`` (the
    sweep's name and the trial's number) so a sweep proposes the same trials every time.
    """
    import random

    import numpy as np

    sweeps = import_sweeps()
    seed = zlib.crc32(seed_text.encode())
    random.seed(seed)
    np.random.seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = sweeps.next_run(sweep, runs)
    return None if run is None else run_params(run)


def runs_to_stop(sweep: dict[str, Any], runs: list[Any]) -> list[Any]:
    """The runs early termination (hyperband) would stop now, asked quietly."""
    sweeps = import_sweeps()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(sweeps.stop_runs(sweep, runs))
