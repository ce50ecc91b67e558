"""The sweep engine a local sweep asks: the next trial's parameters, and which trials to stop.

Grid search walks the grid (sweep_space.py) in W&B's order, each point once, then runs out.
Random and bayes search draw with optuna's samplers, seeded per trial from the sweep's name and
the trial's number, so the same sweep proposes the same trials every time: random with
``RandomSampler``; bayes with ``TPESampler`` (multivariate, with the constant liar: running trials
count as bad, so parallel trials spread out), given every ended trial's metric (the goal sets the
direction; failed ones are imputed as W&B does, the worst by default). Each parameter is sampled in
optuna as its categorical index, its integer, or its point u in [0, 1] of its distribution (the
quantile maps u to the value), so every W&B distribution works with any optuna sampler.
Early termination is hyperband.py's. optuna, not W&B's ``sweeps`` package: maintained, and no
numpy<2 pin for every install.
"""

from __future__ import annotations

import itertools
import math
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from text_recognizer.errors import SweepError
from text_recognizer.orchestration import hyperband
from text_recognizer.orchestration.sweep_space import (
    MISSING,
    Param,
    canonical,
    grid_columns,
    is_integer,
    lookup,
    nest,
    parse_space,
)
from text_recognizer.orchestration.sweep_state import Trial

# Bayes draws at random until this many trials have a metric, then from TPE's model of them (W&B's
# own bayes fits its model from the first result; TPE needs a few to split good from bad).
BAYES_STARTUP_TRIALS = 3


@dataclass
class EngineRun:
    """A trial as the engine sees it: its state (pending, running, finished, failed), parameters,
    best metric and the metric's finite values per epoch (what hyperband compares)."""

    name: str
    state: str
    params: dict[str, Any]
    metric: float | None = None
    history: list[float] = field(default_factory=list)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def sweep_run(
    trial: Trial, metric: str | None, history: Callable[[Trial], list[dict[str, Any]]]
) -> EngineRun:
    """A trial as the engine sees it. One that hyperband stopped counts as finished: stopped early,
    but its metric is real. The history (a read of the trial's record) is asked for only when the
    trial has started."""
    state = {
        "finished": "finished",
        "stopped": "finished",
        "failed": "failed",
        "running": "running",
    }.get(trial.status, "pending")
    rows = history(trial) if state != "pending" and metric else []
    values = [float(row[metric]) for row in rows if _finite(row.get(metric))]
    return EngineRun(trial.id, state, dict(trial.params), trial.metric, values)


def next_params(
    sweep: dict[str, Any], runs: list[EngineRun], seed_text: str
) -> dict[str, Any] | None:
    """The next trial's parameters, or None when the sweep has run out (a grid fully proposed).

    Random and bayes draws are seeded from ``seed_text`` (the sweep's name and the trial's number),
    so a sweep proposes the same trials every time.
    """
    space = parse_space(sweep["parameters"])
    if sweep["method"] == "grid":
        return _next_grid_point(space, runs)
    seed = zlib.crc32(seed_text.encode())
    return _next_sample(sweep, space, runs, seed)


def runs_to_stop(sweep: dict[str, Any], runs: list[EngineRun]) -> list[hyperband.Stop]:
    """The running trials hyperband (the sweep's ``early_terminate``) stops now."""
    metric = sweep["metric"]
    maximize = metric.get("goal") == "maximize"
    return hyperband.to_stop(sweep["early_terminate"], metric["name"], maximize, runs)


# ---------------------------------------------------------------------------------------------
# Grid


def _next_grid_point(space: list[Param], runs: list[EngineRun]) -> dict[str, Any] | None:
    """The first grid point no trial has, compared as W&B does: by the values of the parameters
    that vary (constants are left out, so a constant changed between sessions makes no point new
    again; a one-value ``values:`` list counts), 3.0 being 3."""
    varied = [i for i, p in enumerate(space) if p.kind != "constant"]
    seen = {tuple(_key(lookup(run.params, space[i].path)) for i in varied) for run in runs}
    for combo in itertools.product(*grid_columns(space)):
        if tuple(combo[i][0] for i in varied) not in seen:
            return nest({p.path: value for p, (_, value) in zip(space, combo, strict=True)})
    return None


def _key(value: Any) -> Any:
    return None if value is MISSING else canonical(value)


# ---------------------------------------------------------------------------------------------
# Random and bayes, with optuna


def import_optuna() -> Any:
    """optuna, with its per-study INFO lines off (a sweep makes a throwaway study per proposal)."""
    try:
        import optuna
    except ModuleNotFoundError:
        raise SweepError(
            "random and bayes search draw with optuna, which is not installed: "
            "pip install -c constraints.txt 'optuna>=4.0,<6'"
        ) from None

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _distribution(p: Param) -> Any:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if p.kind == "categorical":
        return CategoricalDistribution(list(range(len(p.spec["values"]))))
    if p.kind == "int_uniform":
        return IntDistribution(p.spec["min"], p.spec["max"])
    return FloatDistribution(0.0, 1.0)


def _to_value(p: Param, x: Any) -> Any:
    """optuna's draw -> the parameter's value."""
    if p.kind == "categorical":
        return p.spec["values"][x]
    if p.kind == "int_uniform":
        return int(x)
    return p.quantile(x)


def _to_draw(p: Param, value: Any) -> Any:
    """A past trial's value -> what optuna would have drawn for it (None: not in the space)."""
    if value is MISSING:
        return None
    if p.kind == "categorical":
        keys = [canonical(v) for v in p.spec["values"]]
        return keys.index(canonical(value)) if canonical(value) in keys else None
    if p.kind == "int_uniform":
        ok = is_integer(value) and p.spec["min"] <= value <= p.spec["max"]
        return value if ok else None
    if p.kind == "categorical_w_probabilities":
        keys = [canonical(v) for v in p.spec["values"]]
        if canonical(value) not in keys:
            return None
        i = keys.index(canonical(value))
        probs = p.spec["probabilities"]
        return min(1.0, sum(probs[:i]) + probs[i] / 2)  # the middle of its slot
    if not _finite(value):
        return None
    return p.cdf(value)


def _imputed(sweep: dict[str, Any], run: EngineRun, worst: float | None) -> float | None:
    """The value bayes learns from an ended trial: its metric, or for a failed trial (or one
    without the metric) W&B's ``metric.impute``: worst (default) of all trials, its best, or its
    latest value."""
    impute = (sweep.get("metric") or {}).get("impute", "worst")
    if run.state == "finished" and run.metric is not None:
        return run.metric
    if impute == "best" and run.metric is not None:
        return run.metric
    if impute == "latest" and run.history:
        return run.history[-1]
    return worst


def _next_sample(
    sweep: dict[str, Any], space: list[Param], runs: list[EngineRun], seed: int
) -> dict[str, Any]:
    optuna = import_optuna()
    from optuna.trial import TrialState, create_trial

    searched = [p for p in space if p.kind != "constant"]
    distributions = {"/".join(p.path): _distribution(p) for p in searched}
    maximize = (sweep.get("metric") or {}).get("goal") == "maximize"
    with warnings.catch_warnings():  # experimental-feature and deprecation notes
        warnings.simplefilter("ignore")
        if sweep["method"] == "bayes":
            sampler = optuna.samplers.TPESampler(
                seed=seed,
                n_startup_trials=BAYES_STARTUP_TRIALS,
                multivariate=True,
                constant_liar=True,
            )
        else:
            sampler = optuna.samplers.RandomSampler(seed=seed)
        study = optuna.create_study(
            direction="maximize" if maximize else "minimize", sampler=sampler
        )
        if sweep["method"] == "bayes":
            metrics = [r.metric for r in runs if r.metric is not None and _finite(r.metric)]
            worst = (min(metrics) if maximize else max(metrics)) if metrics else None
            for run in runs:
                draws = {
                    "/".join(p.path): _to_draw(p, lookup(run.params, p.path)) for p in searched
                }
                if any(d is None for d in draws.values()):
                    continue  # not a point of this space
                if run.state in ("running", "pending"):
                    state, value = TrialState.RUNNING, None
                else:
                    state, value = TrialState.COMPLETE, _imputed(sweep, run, worst)
                    if value is None or not _finite(value):
                        continue
                study.add_trial(
                    create_trial(
                        state=state, value=value, params=draws, distributions=distributions
                    )
                )
        trial = study.ask(distributions)
    values = {p.path: p.spec["value"] for p in space if p.kind == "constant"}
    for p in searched:
        values[p.path] = _to_value(p, trial.params["/".join(p.path)])
    return nest({p.path: values[p.path] for p in space})
