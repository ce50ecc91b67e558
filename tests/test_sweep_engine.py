"""The offline sweep engine: W&B's parameter specs, grid/random/bayes proposals, hyperband, schema.

No trial runs here: the engine is asked directly. The expected values are worked out by hand from
W&B's documented semantics (and were checked against W&B's own ``sweeps`` package once).
"""

from __future__ import annotations

import importlib.util
import math
import re
import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT
from text_recognizer.errors import SweepError
from text_recognizer.orchestration import hyperband
from text_recognizer.orchestration.engine import EngineRun, next_params, runs_to_stop
from text_recognizer.orchestration.sweep_schema import schema_violations
from text_recognizer.orchestration.sweep_space import parameter_problems, parse_space
from text_recognizer.orchestration.sweep_yaml import check_sweep, grid_size, parameter_points

# random and bayes draw with optuna (requirements.txt); the rest runs without it
needs_optuna = pytest.mark.skipif(
    importlib.util.find_spec("optuna") is None, reason="optuna is not installed (requirements.txt)"
)


def one(spec: dict):
    (param,) = parse_space({"p": spec})
    return param


# ----- parameter specs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ({"values": [1, 2]}, "categorical"),
        ({"values": [1, 2], "probabilities": [0.3, 0.7]}, "categorical_w_probabilities"),
        ({"value": 3}, "constant"),
        ({"min": 1, "max": 5}, "int_uniform"),  # both ints
        ({"min": 1, "max": 5.0}, "uniform"),  # a float min or max
        ({"min": 1.0, "max": 5}, "uniform"),
        ({"min": 1, "max": 5, "distribution": "uniform"}, "uniform"),
        ({"distribution": "normal"}, "normal"),
        ({"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}, "log_uniform_values"),
        ({"distribution": "q_beta"}, "q_beta"),
    ],
)
def test_a_specs_distribution_is_inferred_from_its_keys_as_wandb_does(spec, kind):
    assert one(spec).kind == kind


def test_defaults_are_wandbs():
    assert one({"distribution": "normal"}).spec["mu"] == 0.0
    assert one({"distribution": "normal"}).spec["sigma"] == 1.0
    assert one({"distribution": "q_uniform", "min": 0, "max": 4}).spec["q"] == 1.0
    assert one({"distribution": "beta"}).spec["a"] == one({"distribution": "beta"}).spec["b"] == 1


@pytest.mark.parametrize(
    ("spec", "u", "value"),
    [
        ({"min": 0.0, "max": 10.0}, 0.25, 2.5),
        ({"min": 2, "max": 5}, 0.99, 5),  # int_uniform: 4 equal slots
        ({"min": 2, "max": 5}, 0.30, 3),
        ({"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}, 0.5, 1e-3),
        ({"distribution": "inv_log_uniform_values", "min": 0.01, "max": 1.0}, 0.5, 0.1),
        ({"distribution": "q_uniform", "min": 0, "max": 10, "q": 2}, 0.33, 4),  # round(3.3/2)*2
        ({"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.25}, 0.6, 0.5),
        ({"distribution": "normal", "mu": 1.0, "sigma": 2.0}, 0.5, 1.0),
        ({"distribution": "normal", "mu": 1.0, "sigma": 2.0}, 0.8413447460685429, 3.0),
        ({"distribution": "log_normal", "mu": 0.0, "sigma": 1.0}, 0.5, 1.0),
        ({"distribution": "q_normal", "mu": 10, "sigma": 3, "q": 5}, 0.8413447460685429, 15),
        ({"distribution": "beta", "a": 2, "b": 2}, 0.5, 0.5),  # symmetric
        ({"distribution": "beta", "a": 1, "b": 1}, 0.3, 0.3),  # uniform on [0, 1]
        ({"values": ["a", "b", "c"], "probabilities": [0.2, 0.5, 0.3]}, 0.69, "b"),
        ({"values": ["a", "b", "c"], "probabilities": [0.2, 0.5, 0.3]}, 0.71, "c"),
    ],
)
def test_quantiles_hand_computed(spec, u, value):
    got = one(spec).quantile(u)
    expected = value if isinstance(value, str) else pytest.approx(value, rel=1e-9)
    assert got == expected and type(got) is type(value)


def test_cdf_inverts_the_quantile():
    for spec in (
        {"min": -1.0, "max": 3.0},
        {"distribution": "log_uniform_values", "min": 1e-5, "max": 1.0},
        {"distribution": "normal", "mu": 2, "sigma": 0.5},
        {"distribution": "log_normal", "mu": 0.1, "sigma": 0.4},
        {"distribution": "beta", "a": 2, "b": 5},
    ):
        p = one(spec)
        for u in (0.01, 0.3, 0.77):
            assert p.cdf(p.quantile(u)) == pytest.approx(u, abs=1e-9), spec


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"distribution": "log_uniform", "min": -4, "max": -1},
            "p uses log_uniform, where min/max specify base-e exponents. Use log_uniform_values",
        ),
        ({"distribution": "q_log_uniform", "min": 0, "max": 3}, "Use q_log_uniform_values"),
        ({"distribution": "poisson"}, "unknown distribution 'poisson'; supported: constant, "),
        ({"valuez": [1]}, "is no parameter spec: give values, value, min and max"),
        ({"values": []}, "values must be a non-empty list"),
        ({"min": 5, "max": 1}, "p: min 5 is not less than max 1"),
        ({"distribution": "int_uniform", "min": 1.5, "max": 3}, "min must be an integer"),
        ({"distribution": "normal", "sigma": -1}, "sigma must be at least 0"),
        ({"distribution": "log_uniform_values", "min": 0, "max": 1}, "min must be above 0"),
        ({"distribution": "q_uniform", "min": 0, "max": 1, "q": 0}, "q must be above 0"),
        ({"values": [1, 2], "probabilities": [0.3, 0.6]}, "do not sum to 1"),
        ({"values": [1], "probabilities": [1], "distribution": "categorical"}, "'probabilities'"),
        ({"min": True, "max": 3}, "min must be a number, got True"),
        ({"parameters": {"x": {"values": [1]}}, "extra": 1}, "'extra' was unexpected"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec, message):
    problems = parameter_problems({"p": spec})
    assert problems and message in problems[0], problems
    assert all("\n" not in p for p in problems)


@needs_optuna
def test_every_supported_distribution_samples():
    sweep = {
        "method": "random",
        "parameters": {
            "c": {"values": [1, "x"]},
            "cp": {"values": [1, 2], "probabilities": [0.5, 0.5]},
            "k": {"value": [1, 2]},
            "i": {"min": -3, "max": 3},
            "u": {"min": 0.5, "max": 1.5},
            "qu": {"distribution": "q_uniform", "min": 0, "max": 100, "q": 5},
            "lu": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1},
            "qlu": {"distribution": "q_log_uniform_values", "min": 1, "max": 1000, "q": 1},
            "ilu": {"distribution": "inv_log_uniform_values", "min": 0.1, "max": 10},
            "n": {"distribution": "normal", "mu": 5, "sigma": 2},
            "qn": {"distribution": "q_normal", "q": 1},
            "ln": {"distribution": "log_normal"},
            "qln": {"distribution": "q_log_normal", "q": 0.5},
            "b": {"distribution": "beta", "a": 2, "b": 5},
            "qb": {"distribution": "q_beta", "q": 0.1},
        },
    }
    check_sweep({**sweep, "program": "training/run_sweep.py"})
    for n in range(1, 6):
        p = next_params(sweep, [], f"all/{n}")
        assert p["c"] in (1, "x") and p["cp"] in (1, 2) and p["k"] == [1, 2]
        assert isinstance(p["i"], int) and -3 <= p["i"] <= 3
        assert 0.5 <= p["u"] <= 1.5 and isinstance(p["u"], float)
        assert isinstance(p["qu"], int) and p["qu"] % 5 == 0
        assert 1e-5 <= p["lu"] <= 1e-1 and 0.1 <= p["ilu"] <= 10
        assert isinstance(p["qlu"], int) and 1 <= p["qlu"] <= 1000
        assert p["ln"] > 0 and 0 <= p["b"] <= 1 and (p["qln"] / 0.5).is_integer()
        assert all(math.isfinite(p[k]) for k in ("n", "qn", "ln", "b", "qb"))


def test_a_distribution_that_overflows_is_one_line_naming_the_parameter():
    from text_recognizer.orchestration.sweep_yaml import check_parameter_space

    sweep = {
        "method": "random",
        "parameters": {
            "train_args.learning_rate": {"min": -1e308, "max": 1e308},  # max - min is inf
        },
    }
    with pytest.raises(SweepError, match=r"^s.yaml: parameter 'train_args.learning_rate': its uni"):
        check_parameter_space(sweep, "s.yaml")
    sweep["parameters"]["train_args.learning_rate"] = {"distribution": "log_normal", "mu": 800}
    with pytest.raises(SweepError, match="log_normal distribution reaches inf"):
        check_parameter_space(sweep, "s.yaml")


# ----- grid ------------------------------------------------------------------------------------------


def propose_all(sweep: dict, seed: str = "s") -> list[dict]:
    runs: list[EngineRun] = []
    while (params := next_params(sweep, runs, f"{seed}/{len(runs) + 1}")) is not None:
        runs.append(EngineRun(f"trial-{len(runs) + 1:04d}", "finished", params))
        assert len(runs) < 1000
    return [r.params for r in runs]


def test_grid_proposes_every_point_once_in_wandbs_order_then_runs_out():
    sweep = {
        "method": "grid",
        "parameters": {
            "z": {"values": [1, 2, 1]},  # a repeated value is one point
            "a": {"parameters": {"y": {"min": 1, "max": 2}, "x": {"value": 0}}},
            "q": {"distribution": "q_uniform", "min": 0, "max": 1, "q": 0.5},  # arange: 0, 0.5
        },
    }
    # names sorted (a, q, z; nested a.x, a.y), the first varying slowest
    expected = [
        {"a": {"x": 0, "y": y}, "q": q, "z": z} for y in (1, 2) for q in (0.0, 0.5) for z in (1, 2)
    ]
    assert propose_all(sweep) == expected
    assert grid_size(sweep) == 8 and list(parameter_points(sweep)) == expected


def test_grid_skips_points_trials_already_have_and_compares_3_0_as_3():
    sweep = {"method": "grid", "parameters": {"a": {"values": [1, 2, 3]}}}
    runs = [EngineRun("trial-0001", "failed", {"a": 2.0}), EngineRun("trial-0002", "pending", {})]
    assert next_params(sweep, runs, "s/3") == {"a": 1}
    runs.append(EngineRun("trial-0003", "running", {"a": 1}))
    assert next_params(sweep, runs, "s/4") == {"a": 3}
    runs.append(EngineRun("trial-0004", "finished", {"a": 3}))
    assert next_params(sweep, runs, "s/5") is None


def test_a_grid_of_a_continuous_parameter_is_refused_in_one_line():
    sweep = {
        "method": "grid",
        "program": "training/run_sweep.py",
        "parameters": {"lr": {"min": 0.1, "max": 0.5}},
    }
    with pytest.raises(SweepError, match=r"parameter 'lr' is uniform: a grid takes only constant"):
        check_sweep(sweep)


# ----- random and bayes ------------------------------------------------------------------------------

SPACE = {
    "x": {"min": 0.0, "max": 1.0},
    "c": {"values": ["a", "b", "c"]},
    "k": {"value": 7},
}


@needs_optuna
def test_random_and_bayes_proposals_are_repeatable_per_sweep_and_trial():
    for method in ("random", "bayes"):
        sweep = {"method": method, "metric": {"name": "m"}, "parameters": SPACE}
        first = [next_params(sweep, [], f"name/{i}") for i in range(1, 6)]
        again = [next_params(sweep, [], f"name/{i}") for i in range(1, 6)]
        assert first == again
        assert len({p["x"] for p in first}) == 5 and all(p["k"] == 7 for p in first)
        assert next_params(sweep, [], "other/1") != first[0]


def finished_runs(metric) -> list[EngineRun]:
    """20 finished trials spread over x and c; the metric grows with x, and c 'a' is best."""
    return [
        EngineRun(f"trial-{i:04d}", "finished", {"x": i / 19, "c": "abc"[i % 3], "k": 7}, metric(i))
        for i in range(20)
    ]


@needs_optuna
@pytest.mark.parametrize("goal", ["minimize", "maximize"])
def test_bayes_learns_from_the_finished_trials_metrics(goal):
    sweep = {"method": "bayes", "metric": {"name": "m", "goal": goal}, "parameters": SPACE}
    runs = finished_runs(lambda i: i / 19 + (0.5 if i % 3 else 0.0))
    proposals = [next_params(sweep, runs, f"b/{n}") for n in range(21, 31)]
    xs = [p["x"] for p in proposals]
    cs = [p["c"] for p in proposals]
    if goal == "minimize":  # low x and c == 'a' are best
        assert sum(xs) / len(xs) < 0.3 and cs.count("a") >= 7, proposals
    else:
        assert sum(xs) / len(xs) > 0.7 and cs.count("a") <= 3, proposals
    # random search ignores the metrics: its draws are spread out
    randoms = [next_params({**sweep, "method": "random"}, runs, f"b/{n}") for n in range(21, 31)]
    assert min(p["x"] for p in randoms) < 0.5 < max(p["x"] for p in randoms)


@needs_optuna
def test_bayes_imputes_failed_trials_as_the_worst():
    sweep = {"method": "bayes", "metric": {"name": "m"}, "parameters": {"x": SPACE["x"]}}
    # failed trials (no metric) at low x, finished ones at high x with metric = 1 - x: without
    # imputation, low x would look unexplored; as the worst, bayes stays away from it
    runs = [EngineRun(f"f{i}", "failed", {"x": i / 40}) for i in range(10)]
    runs += [
        EngineRun(f"t{i}", "finished", {"x": 0.5 + i / 20}, 1 - (0.5 + i / 20)) for i in range(10)
    ]
    xs = [next_params(sweep, runs, f"i/{n}")["x"] for n in range(10)]
    assert sum(x > 0.5 for x in xs) >= 8, xs


# ----- hyperband -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "bands"),
    [
        ({"min_iter": 2, "eta": 3}, [2, 6, 18, 54]),
        ({"min_iter": 3}, [3, 9, 27]),  # eta defaults to 3
        ({"max_iter": 27, "s": 3, "eta": 3}, [1, 3, 9]),
        ({"max_iter": 5, "s": 2, "eta": 2}, [1, 2]),  # 2.5 -> 2, 1.25 -> 1
        ({"max_iter": 81, "s": 2}, [9, 27]),
    ],
)
def test_hyperband_bands(config, bands):
    assert hyperband.bands({"type": "hyperband", **config})[: len(bands)] == bands


def test_hyperband_without_a_band_is_refused():
    problems = schema_violations(
        {
            "method": "grid",
            "parameters": {"a": {"values": [1]}},
            "early_terminate": {"type": "hyperband", "max_iter": 2, "s": 2},
        }
    )
    assert problems == [
        "early_terminate: max_iter 2 / eta 3 is below 1, so hyperband has no band; raise "
        "max_iter or s, or lower eta"
    ]


def hb_runs(spec: dict[str, tuple[str, list[float]]]) -> list[EngineRun]:
    return [EngineRun(name, state, {}, None, history) for name, (state, history) in spec.items()]


def test_hyperband_stops_what_wandb_stops_minimize():
    """W&B's own example: max_iter 5, eta 2, s 2 -> bands 1 and 2, the top half passes.

    Band 1 values 10 10 10 10 10 -> threshold sorted[int(5/2)] = 10; band 2 values 9 10 8 7 6 ->
    sorted 6 7 8 9 10, threshold 8. Running b is at band 2 with 10 > 8: stopped; c has 8 (not
    above 8) and d 7: they go on. Finished a and e only set the thresholds.
    """
    sweep = {
        "metric": {"name": "loss", "goal": "minimize"},
        "early_terminate": {"type": "hyperband", "max_iter": 5, "eta": 2, "s": 2},
    }
    runs = hb_runs(
        {
            "a": ("finished", [10, 9]),
            "b": ("running", [10, 10]),
            "c": ("running", [10, 8, 8]),
            "d": ("running", [10, 7, 7]),
            "e": ("finished", [10, 6, 6]),
        }
    )
    (stop,) = runs_to_stop(sweep, runs)
    assert (stop.name, stop.band, stop.value, stop.threshold) == ("b", 2, 10, 8)
    assert stop.why == "(band 2: loss 10 is behind the threshold 8)"


@pytest.mark.parametrize(("strict", "stopped"), [(True, {"B", "D", "F"}), (False, {"B", "D"})])
def test_hyperband_stops_what_wandb_stops_maximize(strict, stopped):
    """min_iter 1, eta 2: bands 1, 2, 4, ...; accuracy maximized (compared negated).

    Band 1 values .5 .4 .6 .3 .2 .9 -> threshold: the 4th best of 6 (index int(6/2) = 3) = .4.
    Band 2 values .6 .5 .65 .9 .55 -> index int(5/2) = 2 of the best-first list = .6.
    Strict (W&B's default) compares the value at the band reached: B .5, D .3 (band 1) and F .55
    are behind; C .65 is not. Not strict compares the best so far: F's .9 saves it.
    """
    sweep = {
        "metric": {"name": "acc", "goal": "maximize"},
        "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2, "strict": strict},
    }
    runs = hb_runs(
        {
            "A": ("finished", [0.5, 0.6, 0.7, 0.8]),
            "B": ("running", [0.4, 0.5]),
            "C": ("running", [0.6, 0.65, 0.66]),
            "D": ("running", [0.3]),
            "E": ("failed", [0.2, 0.9]),
            "F": ("running", [0.9, 0.55]),
            "G": ("pending", []),
        }
    )
    stops = runs_to_stop(sweep, runs)
    assert {s.name for s in stops} == stopped
    by_name = {s.name: s for s in stops}
    assert by_name["B"].threshold == pytest.approx(0.6) and by_name["D"].threshold == 0.4


# ----- the schema ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"bogus": 1}, "Additional properties are not allowed ('bogus' was unexpected)"),
        ({"metric": {"name": "x", "goal": "lowest"}}, "'lowest' is not one of"),
        ({"metric": {"goal": "minimize"}}, "metric: 'name' is a required property"),
        ({"run_cap": 0}, "run_cap 0 is not above 0"),
        ({"name": 3}, "name: 3 is not of type 'string'"),
        ({"early_terminate": {"type": "hyperband"}}, "needs min_iter, or max_iter and s"),
        ({"early_terminate": {"type": "hyperband", "min_iter": 2, "eta": 1}}, "eta 1 is not above"),
        ({"metrics": [{"name": "a"}, {"name": "b"}]}, "`metrics` requires `method: custom`"),
        ({"scheduler": {"engine": "optuna"}}, "does not support `method: grid`"),
    ],
)
def test_what_wandbs_schema_rejects(extra, message):
    sweep = {"method": "grid", "parameters": {"a": {"values": [1]}}, **extra}
    problems = schema_violations(sweep)
    assert any(message in p for p in problems), problems


def test_what_wandbs_schema_accepts():
    sweep = {
        "method": "bayes",
        "name": "n",
        "description": "d",
        "project": "p",
        "entity": "e",
        "program": "training/run_sweep.py",
        "command": ["${env}", "${interpreter}", "${program}", "${args}"],
        "run_cap": 3,
        "metric": {"name": "x", "goal": "maximize", "impute": "best", "target": 0.9},
        "early_terminate": {"type": "hyperband", "max_iter": 27, "s": 2, "strict": False},
        "parameters": {"a": {"parameters": {"b": {"values": [1]}}}},
    }
    assert schema_violations(sweep) == []


@needs_optuna
def test_the_engine_never_imports_wandbs_sweeps_package():
    code = (
        "import sys\n"
        "from text_recognizer.orchestration.sweep_yaml import load_sweep, check_sweep, "
        "check_parameter_space\n"
        "from text_recognizer.orchestration.engine import next_params, runs_to_stop, EngineRun\n"
        "for name in ('mnist', 'kaggle_names'):\n"
        "    s = load_sweep(f'training/sweep_{name}.yaml')\n"
        "    check_sweep(s)\n"
        "    check_parameter_space(s)\n"
        "    for method in ('grid', 'random', 'bayes'):\n"
        "        if method == 'grid' and name == 'kaggle_names':\n"
        "            continue\n"
        "        run = EngineRun('t1', 'finished', next_params({**s, 'method': method}, [], 'x/1'),"
        " 0.5, [0.9, 0.5])\n"
        "        next_params({**s, 'method': method}, [run], 'x/2')\n"
        "    runs_to_stop(s, [run])\n"
        "assert 'sweeps' not in sys.modules, 'W&B sweeps was imported'\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    assert out.stderr == "", out.stderr  # no optuna log lines or warnings either


@needs_optuna
def test_the_scheduler_gives_bayes_its_ended_trials(tmp_path):
    """Through LocalSweep: finished and hyperband-stopped trials' metrics reach bayes."""
    import io

    from text_recognizer.orchestration.scheduler import LocalSweep
    from text_recognizer.orchestration.sweep_state import Trial

    sweep = {
        "name": "bayes",
        "program": "training/run_sweep.py",
        "method": "bayes",
        "metric": {"name": "val_loss", "goal": "minimize"},
        "parameters": {"x": SPACE["x"]},
    }
    runner = LocalSweep(sweep, "sweep.yaml", tmp_path / "bayes", count=40, out=io.StringIO())
    for i in range(20):
        status = "stopped" if i % 4 == 0 else "finished"
        runner.state.trials.append(
            Trial(id=f"trial-{i + 1:04d}", params={"x": i / 19}, status=status, metric=i / 19)
        )
    proposed = [runner._propose() for _ in range(5)]
    assert [t.id for t in proposed] == [f"trial-{n:04d}" for n in range(21, 26)]
    xs = [t.params["x"] for t in proposed]
    assert sum(xs) / len(xs) < 0.3, xs


def test_without_optuna_random_search_is_one_line_saying_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if not installed
    sweep = {"method": "random", "parameters": {"x": SPACE["x"]}}
    with pytest.raises(SweepError, match=r"draw with optuna, which is not installed: pip install"):
        next_params(sweep, [], "s/1")
    assert next_params({**sweep, "method": "grid", "parameters": {"a": {"values": [1]}}}, [], "")


# ----- review fixes: malformed early_terminate, grid identity, run_cap and metric.target -------------


@pytest.mark.parametrize(
    ("early_terminate", "message"),
    [
        # W&B's hyperband takes the max_iter branch whenever max_iter is set: without s it fails
        ({"type": "hyperband", "max_iter": 27, "min_iter": 3}, "early_terminate: max_iter needs s"),
        ({"type": "hyperband", "max_iter": 27}, "early_terminate: max_iter needs s"),
        ({"type": "hyperband", "min_iter": 3, "eta": "3"}, "early_terminate.eta: '3' is not of"),
        ({"type": "hyperband", "min_iter": 3, "eta": math.nan}, "eta nan is not above 1"),
        ({"type": "hyperband", "min_iter": True}, "early_terminate.min_iter: True is not of"),
        (
            {"type": "hyperband", "max_iter": 10**400, "s": 2},
            "max_iter: a 401-digit integer is too large",
        ),
        ({"type": "hyperband", "max_iter": 27, "s": 10**9, "eta": 1 + 1e-12}, "more than 1000"),
        ({"type": "hyperband", "min_iter": 1, "eta": 10**400}, "eta: a 401-digit integer is too"),
        ({"type": "grid", "min_iter": 3}, "early_terminate.type: 'grid' is not one of"),
        ({"min_iter": 3}, "early_terminate: 'type' is a required property"),
        ("hyperband", "early_terminate: 'hyperband' is not of type 'object'"),
        (None, "early_terminate: None is not of type 'object'"),
    ],
)
def test_a_malformed_early_terminate_is_one_line_never_a_traceback(early_terminate, message):
    sweep = {
        "method": "grid",
        "metric": {"name": "loss"},
        "parameters": {"a": {"values": [1]}},
        "early_terminate": early_terminate,
    }
    problems = schema_violations(sweep)
    assert any(message in p for p in problems), problems
    assert all("\n" not in p for p in problems)
    # the same refusal where a sweep asks hyperband, never a KeyError or a TypeError
    with pytest.raises(SweepError, match=re.escape(message)):
        hyperband.bands(early_terminate)
    with pytest.raises(SweepError, match=re.escape(message)):
        runs_to_stop(sweep, hb_runs({"a": ("running", [1.0, 2.0, 3.0])}))


def test_local_sweep_check_refuses_max_iter_without_s_in_one_line(tmp_path, capsys):
    from text_recognizer.orchestration.local_sweep import local_sweep_main

    path = tmp_path / "sweep.yaml"
    path.write_text(
        "program: training/run_sweep.py\nmethod: grid\nmetric: {name: val_loss}\n"
        "parameters: {train_args.epochs: {values: [1]}}\n"
        "early_terminate: {type: hyperband, max_iter: 27, min_iter: 3}\n"
    )
    assert local_sweep_main([str(path), "--check"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "early_terminate: max_iter needs s" in err, err


def test_a_grid_point_is_told_apart_by_its_varied_parameters_only():
    """W&B's grid leaves constants out of a point's identity: a constant changed since (here k, 7
    then 8) does not make the points that ran new again."""
    sweep = {
        "method": "grid",
        "parameters": {"a": {"values": [1, 2]}, "k": {"value": 8}, "n": {"values": [5]}},
    }
    runs = [EngineRun("trial-0001", "finished", {"a": 1, "k": 7, "n": 5})]
    assert next_params(sweep, runs, "s/2") == {"a": 2, "k": 8, "n": 5}
    runs.append(EngineRun("trial-0002", "finished", {"a": 2, "n": 5}))  # no k at all
    assert next_params(sweep, runs, "s/3") is None
    # a one-value categorical is still part of it, as in W&B
    assert next_params(sweep, [EngineRun("t", "finished", {"a": 1, "k": 8, "n": 6})], "s/2") == {
        "a": 1,
        "k": 8,
        "n": 5,
    }


def sweep_runner(tmp_path, sweep: dict, count: int | None = None):
    import io

    from text_recognizer.orchestration.scheduler import LocalSweep

    base = {"name": "s", "program": "training/run_sweep.py", **sweep}
    return LocalSweep(base, "sweep.yaml", tmp_path / "s", count=count, out=io.StringIO())


def start_trials(runner, n: int) -> list:
    """The next n trials the sweep would start, each marked started (a pending one is offered
    again until it starts)."""
    trials = []
    for _ in range(n):
        trial = runner._next_trial()
        assert trial is not None
        trial.status, trial.attempts = "running", 1
        trials.append(trial)
    return trials


@pytest.mark.parametrize(("count", "run_cap", "total"), [(None, 2, 2), (3, 2, 2), (1, 2, 1)])
def test_run_cap_limits_the_trials_like_count_the_smaller_wins(tmp_path, count, run_cap, total):
    sweep = {"method": "grid", "run_cap": run_cap, "parameters": {"a": {"values": [1, 2, 3, 4]}}}
    runner = sweep_runner(tmp_path, sweep, count)
    assert runner.total == total
    proposed = start_trials(runner, total)
    assert [t.params["a"] for t in proposed] == [1, 2, 3, 4][:total]
    assert runner._next_trial() is None


@needs_optuna
def test_run_cap_stands_for_count_in_random_search(tmp_path):
    sweep = {"method": "random", "run_cap": 2, "parameters": {"x": SPACE["x"]}}
    runner = sweep_runner(tmp_path, sweep)  # no --count: run_cap is the sweep's length
    assert runner.total == 2
    start_trials(runner, 2)
    assert runner._next_trial() is None


@pytest.mark.parametrize(
    ("goal", "target", "metrics", "stops"),
    [
        ("minimize", 0.2, [0.5, 0.2], True),  # reached: at or below it
        ("minimize", 0.2, [0.5, 0.3], False),
        ("maximize", 0.9, [0.5, 0.95], True),  # reached: at or above it
        ("maximize", 0.9, [0.5, 0.85], False),
        ("maximize", 0.9, [None, 0.5], False),
    ],
)
def test_a_sweep_starts_no_trial_once_an_ended_one_reached_the_metric_target(
    tmp_path, goal, target, metrics, stops
):
    from text_recognizer.orchestration.sweep_state import Trial

    sweep = {
        "method": "grid",
        "metric": {"name": "m", "goal": goal, "target": target},
        "parameters": {"a": {"values": [1, 2, 3, 4]}},
    }
    runner = sweep_runner(tmp_path, sweep)
    for i, metric in enumerate(metrics):
        runner.state.trials.append(
            Trial(id=f"trial-{i + 1:04d}", params={"a": i + 1}, status="finished", metric=metric)
        )
    runner.state.trials.append(Trial(id="trial-0003", params={"a": 3}))  # pending from a resume
    trial = runner._next_trial()
    if stops:
        assert trial is None and runner._next_trial() is None
        said = runner.out.getvalue()
        assert said.count("reached the target") == 1 and "trial-0002" in said, said
    else:
        assert trial is not None and trial.id == "trial-0003"


def test_a_stopped_trial_drops_its_checkpoints_and_keeps_its_weights(tmp_path):
    """Hyperband's SIGTERM leaves the run `interrupted`, with its resume checkpoints; the sweep
    never reruns a stopped trial, so they go, whether it is stopped now or found so on resume."""
    import signal
    import time

    from text_recognizer.orchestration.scheduler import _Active

    sweep = {"method": "grid", "metric": {"name": "m"}, "parameters": {"a": {"values": [1, 2, 3]}}}
    runner = sweep_runner(tmp_path, sweep)
    runner.state_dir.mkdir()
    files = ("checkpoint.pt", "checkpoint.prev.pt", "weights.pt", "summary.json")
    trials = start_trials(runner, 3)
    for trial in trials:
        (runner.state_dir / trial.id).mkdir()
        for name in files:
            (runner.state_dir / trial.id / name).write_text("{}")
    # trial 1: hyperband stops it in this session
    trials[0].stop_requested = True
    log = (tmp_path / "log.txt").open("w")
    active = _Active(trials[0], proc=None, log=log, started=time.monotonic())
    runner.active[trials[0].id] = active
    runner._finish(active, -signal.SIGTERM)
    # trial 2: a session ended while hyperband stopped it; trial 3: interrupted, rerun later
    trials[1].stop_requested = True
    runner._recover()
    assert [t.status for t in trials] == ["stopped", "stopped", "pending"]
    left = {t.id: sorted(p.name for p in (runner.state_dir / t.id).iterdir()) for t in trials}
    assert left == {
        "trial-0001": ["summary.json", "weights.pt"],
        "trial-0002": ["summary.json", "weights.pt"],
        "trial-0003": sorted(files),
    }
