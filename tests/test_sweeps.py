"""Sweeps: run_sweep's argument translation, sweep YAML checks, local sweeps that resume, hyperband.

Real trials train a tiny MLP on 300 synthetic characters for an epoch or two, two at a time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import PROJECT_ROOT, TINY_CHARACTER_CONFIG, run_script, seed_trial
from text_recognizer import errors
from text_recognizer.config import override_value, validate_config
from text_recognizer.orchestration.local_sweep import local_sweep_main
from text_recognizer.orchestration.scheduler import LocalSweep, _Active
from text_recognizer.orchestration.sweep_yaml import (
    check_parameter_space,
    check_sweep,
    grid_size,
    load_sweep,
    parameter_points,
    trial_command,
)
from text_recognizer.orchestration.trial_args import (
    format_arg,
    parse_trial_args,
    run_sweep_main,
    trial_config,
)

TINY_BASE = {"experiment_group": "tiny", **TINY_CHARACTER_CONFIG}


def write_base(tmp_path: Path) -> Path:
    path = tmp_path / "base.json"
    path.write_text(json.dumps(TINY_BASE))
    return path


def write_sweep(tmp_path: Path, base: Path, **overrides) -> Path:
    sweep = {
        "name": "tiny",
        "program": "training/run_sweep.py",
        "command": ["${env}", "${interpreter}", "${program}", "${args}"],
        "method": "grid",
        "metric": {"name": "val_loss", "goal": "minimize"},
        "parameters": {
            "config": {"value": str(base)},
            "network_args.layer_size": {"values": [8, 32]},
            "train_args.epochs": {"values": [1, 2]},
        },
    }
    sweep.update(overrides)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def read_state(state_dir: Path) -> dict:
    return json.loads((state_dir / "state.json").read_text())


# ----- run_sweep: what the agent passes -> the nested config ---------------------------------------


def test_override_value_reads_what_the_agent_writes():
    # wandb agent formats values with str(): True, None and Python lists arrive as Python literals.
    assert override_value("256") == 256 and isinstance(override_value("256"), int)
    assert override_value("0.2") == 0.2 and override_value("1e-3") == 0.001
    assert override_value("True") is True and override_value("true") is True
    assert override_value("None") is None and override_value("null") is None
    assert override_value("[32, 64]") == [32, 64] and override_value("['a', 'b']") == ["a", "b"]
    assert override_value("{'layer_size': 64}") == {"layer_size": 64}
    assert override_value("adam") == "adam" and override_value("../shared/data") == "../shared/data"
    for value in (256, 0.2, True, None, [32, 64], "adam"):
        assert override_value(format_arg("k", value).split("=", 1)[1]) == value


def test_dotted_args_become_the_nested_config_over_the_base(tmp_path):
    base = write_base(tmp_path)
    args = parse_trial_args(
        [
            f"--config={base}",
            "--network_args.layer_size=256",
            "--network_args.dropout_amount=0.4",
            "--train_args.batch_size=64",
            "--train_args.lr_schedule=cosine",
            "--dataset_args.num_train=200",
            "--network=mlp",
            "--network_args={'num_layers': 2}",  # W&B's nested form merges into the section
            "--gpu=-1",
            "--nowandb",
            "--train_args.batch_size=32",  # the last value wins
        ]
    )
    assert (args.gpu, args.nowandb, args.save) == (-1, True, None)
    config = trial_config(args, env={})
    assert config["network_args"] == {"num_layers": 2, "layer_size": 256, "dropout_amount": 0.4}
    assert config["train_args"]["batch_size"] == 32
    assert config["train_args"]["lr_schedule"] == "cosine"
    assert config["dataset_args"] == {"num_train": 200, "num_test": 100, "charset": "digits"}
    assert config["experiment_group"] == "tiny"
    validate_config(config)
    # Under wandb agent the runs of a sweep share a group named after it.
    assert (
        trial_config(args, env={"WANDB_SWEEP_ID": "abc123"})["experiment_group"] == "sweep-abc123"
    )
    assert parse_trial_args(["--gpu=cpu"]).gpu is None and parse_trial_args([]).gpu == -1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--network_args.layer_siz=3"], "unknown key 'layer_siz' in network_args (did you mean"),
        (["--network_args.layer_size=0"], "network_args.layer_size must be an integer >= 1"),
        (["--networks_args.layer_size=3"], "unknown key 'networks_args' in the config"),
        (["--dataset.foo=1"], "'dataset' is a str, not a section"),
        (["--config=nope.json"], "base config 'nope.json' does not exist"),
        (["layer_size=3"], "unexpected argument 'layer_size=3'"),
        (["--gpu=-3"], "--gpu must be -1"),
    ],
)
def test_run_sweep_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, message):
    base = write_base(tmp_path)
    argv = argv if any(a.startswith("--config") for a in argv) else [f"--config={base}", *argv]
    assert run_sweep_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


# ----- sweep YAML checks: one line, exit 2, before any trial ---------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"method": "hyperopt"},
            "unknown method 'hyperopt'; a local sweep runs grid, random, bayes",
        ),
        (
            {"parameters": {"network_args.layer_size": {"valuez": [1, 2]}}},
            "W&B would reject this sweep",
        ),
        ({"parameters": {"network_args.layer_size": {"min": 9, "max": 3}}}, "min 9 is not less"),
        ({"parameters": {"network_args.layer_size": 32}}, "must be a mapping"),
        ({"parameters": {"network_args.layer_siz": {"values": [1]}}}, "unknown key 'layer_siz'"),
        (
            {"parameters": {"network_args.layer_size": {"values": [8, 0]}}},
            "layer_size=0 is invalid",
        ),
        ({"program": "training/run_experiment.py"}, "is not training/run_sweep.py"),
        ({"command": ["${env}", "${interpreter}", "${program}", "${args_json}"]}, "${args_json}"),
        ({"metric": {"name": "val_loss", "goal": "lowest"}}, "'lowest' is not one of"),
        ({"bogus": 1}, "'bogus' was unexpected"),
        ({"method": "random"}, "random search never runs out of trials: give --count N"),
        ({"method": "bayes", "metric": None}, "bayes search needs a `metric`"),
        (
            {"early_terminate": {"type": "hyperband", "min_iter": 2}, "metric": None},
            "early_terminate needs a `metric`",
        ),
    ],
)
def test_bad_sweep_yaml_is_refused_before_any_trial(tmp_path, runs_dir, capsys, overrides, message):
    base = write_base(tmp_path)
    sweep = write_sweep(tmp_path, base)
    data = yaml.safe_load(sweep.read_text())
    for key, value in overrides.items():
        if key == "parameters":
            data["parameters"] = {"config": {"value": str(base)}, **value}
        elif value is None:
            data.pop(key, None)
        else:
            data[key] = value
    sweep.write_text(yaml.safe_dump(data))
    assert local_sweep_main([str(sweep)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert not (runs_dir / "sweeps" / "tiny" / "state.json").exists()


def test_malformed_or_missing_yaml_and_bad_flags(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: grid\nparameters: {a: [1, 2}\n")
    assert local_sweep_main([str(bad)]) == 2
    assert "malformed YAML" in capsys.readouterr().err
    assert local_sweep_main([str(tmp_path / "none.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    sweep = write_sweep(tmp_path, write_base(tmp_path))
    assert local_sweep_main([str(sweep), "--jobs", "0"]) == 2
    assert local_sweep_main([str(sweep), "--state", str(tmp_path / "Not A Slug")]) == 2
    assert "must be a plain name such as 'not-a-slug'" in capsys.readouterr().err


def test_shipped_sweeps_are_valid():
    """Every training/sweep_*.yaml passes W&B's schema and validate_config at every grid point."""
    files = sorted((PROJECT_ROOT / "training").glob("sweep_*.yaml"))
    assert {f.name for f in files} >= {
        "sweep_emnist.yaml",
        "sweep_mnist.yaml",
        "sweep_emnist_lines.yaml",
        "sweep_kaggle_names.yaml",
    }
    for path in files:
        sweep = load_sweep(path)
        check_sweep(sweep, str(path))
        assert check_parameter_space(sweep, str(path)) >= 1, path
        assert sweep["program"] == "training/run_sweep.py"
    emnist = load_sweep(PROJECT_ROOT / "training" / "sweep_emnist.yaml")
    assert emnist["method"] == "grid" and emnist["metric"] == {
        "name": "val_loss",
        "goal": "minimize",
    }
    assert set(emnist["parameters"]) >= {
        "network_args.layer_size",
        "network_args.dropout_amount",
        "network_args.num_layers",
        "train_args.batch_size",
    }
    assert grid_size(emnist) == 16


def test_nested_parameters_form(tmp_path):
    """W&B's nested `parameters:` form: the agent passes a dict, merged into its section."""
    sweep = yaml.safe_load(write_sweep(tmp_path, write_base(tmp_path)).read_text())
    sweep["parameters"] = {
        "config": sweep["parameters"]["config"],
        "network_args": {"parameters": {"layer_size": {"values": [8, 16]}}},
    }
    check_sweep(sweep)
    assert check_parameter_space(sweep) == 2
    points = list(parameter_points(sweep))
    assert points[0]["network_args"] == {"layer_size": 8}
    config = trial_config(parse_trial_args([format_arg(k, v) for k, v in points[1].items()]), {})
    assert config["network_args"] == {"num_layers": 1, "layer_size": 16}
    sweep["parameters"]["network_args"]["parameters"]["layer_size"]["values"] = [8, -1]
    with pytest.raises(errors.SweepError, match=r"network_args=\{'layer_size': -1\} is invalid"):
        check_parameter_space(sweep)


def test_trial_command_is_the_agents(tmp_path):
    sweep = yaml.safe_load(write_sweep(tmp_path, write_base(tmp_path)).read_text())
    command = trial_command(sweep, {"network_args.layer_size": 8}, ["--gpu=-1"])
    assert command[:2] == ["/usr/bin/env", sys.executable]
    assert command[2].endswith("training/run_sweep.py")
    assert command[3:] == ["--network_args.layer_size=8", "--gpu=-1"]


# ----- local sweeps, for real -----------------------------------------------------------------------


def test_grid_sweep_interrupted_and_resumed_without_rerunning_finished_trials(
    tmp_path, runs_dir, capsys
):
    base = write_base(tmp_path)
    # Two quick trials (1 and 2 epochs) and a slow one (80): when two have finished, one still runs.
    sweep = write_sweep(
        tmp_path,
        base,
        parameters={
            "config": {"value": str(base)},
            "network_args.layer_size": {"value": 8},
            "train_args.epochs": {"values": [1, 2, 80]},
        },
    )
    state_dir = runs_dir / "sweeps" / "tiny"
    cmd = [sys.executable, "training/local_sweep.py", str(sweep), "--jobs", "2", "--nowandb"]
    proc = subprocess.Popen(
        cmd, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 120
    try:
        while True:
            assert time.monotonic() < deadline, "two trials never finished"
            assert proc.poll() is None, proc.communicate()[0]
            try:
                trials = read_state(state_dir)["trials"]
            except (FileNotFoundError, json.JSONDecodeError):
                trials = []
            statuses = [t["status"] for t in trials]
            if statuses.count("finished") >= 2 and "running" in statuses:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)  # as `kill` would; the sweep stops its trials in order
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "resume with: python training/local_sweep.py" in out
    first = {t["id"]: t for t in read_state(state_dir)["trials"]}
    finished = {i for i, t in first.items() if t["status"] == "finished"}
    interrupted = {i for i, t in first.items() if t["status"] == "interrupted"}
    assert len(finished) == 2 and len(interrupted) == 1, first
    stamps = {i: (state_dir / i / "summary.json").stat().st_mtime_ns for i in finished}

    again = run_script(*cmd[1:], timeout=180)
    assert again.returncode == 0, again.stdout + again.stderr
    final = {t["id"]: t for t in read_state(state_dir)["trials"]}
    assert len(final) == 3 and all(t["status"] == "finished" for t in final.values())
    for i in finished:  # never rerun: same attempt, same files
        assert final[i]["attempts"] == 1
        assert (state_dir / i / "summary.json").stat().st_mtime_ns == stamps[i]
    for i in interrupted:  # rerun from the start
        assert final[i]["attempts"] == 2
        assert (state_dir / "logs" / f"{i}.log").read_text().count("=== attempt") == 2
        assert json.loads((state_dir / i / "summary.json").read_text())["status"] == "finished"
    assert sorted(t["params"]["train_args.epochs"] for t in final.values()) == [1, 2, 80]

    # The leaderboard: every trial, best first by the sweep's metric, what differs, best/worst.
    out = again.stdout
    assert "resuming tiny: 2/3 trials done" in out
    table = out[out.index("trial  ") :].splitlines()
    assert table[0].split()[:3] == ["trial", "train_args.epochs", "val_loss"]
    rows = [line.split() for line in table[2:5]]
    losses = [float(r[2]) for r in rows]
    assert losses == sorted(losses) and {r[0] for r in rows} == set(final)
    assert sorted(t["metric"] for t in final.values()) == pytest.approx(losses, abs=1e-4)
    assert "best:  " + rows[0][0] in out and "worst: " + rows[-1][0] in out
    assert (state_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A finished sweep resumed again runs nothing and prints the leaderboard.
    capsys.readouterr()
    assert local_sweep_main(cmd[2:]) == 0
    assert "start trial" not in capsys.readouterr().out
    assert all(t["attempts"] == final[t["id"]]["attempts"] for t in read_state(state_dir)["trials"])


def test_random_sweep_with_count_and_state_folder(tmp_path, runs_dir):
    base = write_base(tmp_path)
    sweep = write_sweep(
        tmp_path,
        base,
        method="random",
        parameters={
            "config": {"value": str(base)},
            "network_args.layer_size": {"min": 4, "max": 64},
            "network_args.dropout_amount": {"min": 0.0, "max": 0.5},
            "train_args.optimizer": {"values": ["adam", "sgd"]},
        },
    )
    state = tmp_path / "my-sweep"
    out = run_script(
        "training/local_sweep.py", str(sweep), "--count", "2", "--jobs", "2", "--state", str(state)
    )
    assert out.returncode == 0, out.stdout + out.stderr
    trials = read_state(state)["trials"]
    assert len(trials) == 2 and all(t["status"] == "finished" for t in trials)
    for t in trials:
        assert 4 <= t["params"]["network_args.layer_size"] <= 64
        assert isinstance(t["params"]["network_args.layer_size"], int)
        assert 0.0 <= t["params"]["network_args.dropout_amount"] <= 0.5
        config = json.loads((state / t["id"] / "config.json").read_text())
        assert config["network_args"]["layer_size"] == t["params"]["network_args.layer_size"]
        assert config["experiment_group"] == "my-sweep" and config["run_name"] == t["id"]
    assert len({t["params"]["network_args.dropout_amount"] for t in trials}) == 2
    # The same state folder holds another sweep's state: refused.
    other = write_sweep(tmp_path, base)
    clash = run_script("training/local_sweep.py", str(other), "--state", str(state))
    assert clash.returncode == 2 and "holds a different sweep" in clash.stderr


def test_hyperband_stops_the_laggards(tmp_path, runs_dir):
    """Synthetic per-epoch metrics: with eta 3 only the top third passes band 2."""
    base = write_base(tmp_path)
    sweep = yaml.safe_load(
        write_sweep(
            tmp_path,
            base,
            early_terminate={"type": "hyperband", "min_iter": 2, "eta": 3},
            parameters={
                "config": {"value": str(base)},
                "train_args.seed": {"values": [1, 2, 3, 4, 5]},
            },
        ).read_text()
    )
    state_dir = tmp_path / "hb"
    runner = LocalSweep(sweep, "sweep.yaml", state_dir, jobs=4, out=open(os.devnull, "w"))  # noqa: SIM115
    histories = {
        "trial-0001": ([1.0, 0.5], 10, "running"),  # the best running one at epoch 2: goes on
        "trial-0002": ([1.0, 0.7], 10, "running"),  # behind: stopped
        "trial-0003": ([1.0, 0.9, 0.8], 10, "running"),  # behind: stopped
        "trial-0004": ([1.0], 10, "running"),  # no band reached yet: goes on
        "trial-0005": ([1.0, 0.95], 2, "running"),  # behind, but its last epoch is done: goes on
        "trial-0006": ([1.0, 0.4, 0.3], 3, "finished"),  # done; sets the bar with the others
    }
    # band 2 values 0.4 0.5 0.7 0.9 0.95: the top third (index int(5/3) = 1) passes, threshold 0.5
    procs = {}
    try:
        for i, (history, epochs, status) in histories.items():
            trial = seed_trial(runner, state_dir, i, history, epochs, status)
            if status != "running":
                continue
            procs[i] = subprocess.Popen(["sleep", "60"])
            runner.active[i] = _Active(trial, procs[i], open(os.devnull, "w"), time.monotonic())  # noqa: SIM115
        runner._early_terminate()
        stopped = {i for i, t in runner.active.items() if t.trial.stop_requested}
        assert stopped == {"trial-0002", "trial-0003"}
        for i in stopped:
            assert procs[i].wait(timeout=10) == -signal.SIGTERM
        runner._reap()
        by_id = {t.id: t for t in runner.state.trials}
        assert by_id["trial-0002"].status == "stopped" and by_id["trial-0002"].metric == 0.7
        assert by_id["trial-0003"].metric == 0.8
        assert set(runner.active) == {"trial-0001", "trial-0004", "trial-0005"}
        # A stop decision survives a crash of the sweep: on resume the trial counts as stopped.
        runner.active["trial-0004"].trial.stop_requested = True
        runner.save()
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
    resumed = LocalSweep(sweep, "sweep.yaml", state_dir, out=open(os.devnull, "w"))  # noqa: SIM115
    resumed._recover()
    by_id = {t.id: t for t in resumed.state.trials}
    assert by_id["trial-0004"].status == "stopped" and by_id["trial-0004"].metric == 1.0
    assert by_id["trial-0001"].status == "pending" and by_id["trial-0002"].status == "stopped"


def test_run_sweep_joins_the_agents_wandb_run(tmp_path, runs_dir):
    """As under `wandb agent`: WANDB_SWEEP_ID/RUN_ID and the sweep's parameter file are picked up."""
    pytest.importorskip("wandb")
    base = write_base(tmp_path)
    params = tmp_path / "wandb" / "sweep-abc123" / "config-run42xyz.yaml"
    params.parent.mkdir(parents=True)
    params.write_text(
        yaml.safe_dump(
            {
                "wandb_version": 1,
                "config": {"value": str(base)},
                "network_args.layer_size": {"value": 24},
            }
        )
    )
    env = {
        "WANDB_MODE": "offline",
        "WANDB_SWEEP_ID": "abc123",
        "WANDB_RUN_ID": "run42xyz",
        "WANDB_SWEEP_PARAM_PATH": str(params),
        "WANDB_DIR": str(tmp_path),
    }
    out = run_script(
        "training/run_sweep.py", f"--config={base}", "--network_args.layer_size=24", env=env
    )
    assert out.returncode == 0, out.stderr
    (run_dir,) = (runs_dir / "sweep-abc123").iterdir()
    assert json.loads((run_dir / "config.json").read_text())["network_args"]["layer_size"] == 24
    assert list((run_dir / "wandb").glob("offline-run-*-run42xyz/run-run42xyz.wandb"))
