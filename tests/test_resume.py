"""Resumable runs: per-epoch checkpoints, SIGTERM/SIGINT, --resume, and its bad inputs.

The interrupted runs get a real signal from inside the process at a chosen moment (a wrapper
patches ``Checkpointer.save``), so the tests are deterministic and need no sleeps.
"""

from __future__ import annotations

import json
import shutil
import signal
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import run_script
from text_recognizer.run.cli import first_difference, run_experiment_main
from text_recognizer.run.records import RunRecord

EPOCHS = 4
# Augmentation, dropout and a cosine schedule: RNG and scheduler state both matter on resume.
CONFIG = {
    "experiment_group": "resume",
    "run_name": "run",
    "dataset": "SyntheticCharactersDataset",
    "dataset_args": {"num_train": 600, "num_test": 200, "charset": "digits"},
    "model": "CharacterModel",
    "network": "mlp",
    "network_args": {"num_layers": 2, "layer_size": 32, "dropout_amount": 0.3},
    "train_args": {
        "batch_size": 64,
        "epochs": EPOCHS,
        "num_threads": 1,
        "augment": 1.0,
        "lr_schedule": "cosine",
        "warmup_epochs": 1,
    },
}
TIMING = {"epoch_time", "train_time", "samples_per_second"}

# Run the CLI, sending ourselves `sig` when epoch `after` is checkpointed: `inside` = while the
# checkpoint is being written (the handler must defer it), else right after.
INTERRUPTING = textwrap.dedent(
    """
    import os, sys
    from text_recognizer.run.checkpoint import Checkpointer
    from text_recognizer.run.cli import run_experiment_main
    sig, after, inside = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "inside"
    save = Checkpointer.save
    def interrupting_save(self, state):
        if inside and state["epoch"] == after:
            from text_recognizer.interrupts import signals_deferred
            with signals_deferred():
                os.kill(os.getpid(), sig)
                save(self, state)
            return
        save(self, state)
        if state["epoch"] == after:
            os.kill(os.getpid(), sig)
    Checkpointer.save = interrupting_save
    sys.exit(run_experiment_main(sys.argv[4:]))
    """
)


def run(runs: Path, *args: str):
    return run_script(*args, env={"TEXT_RECOGNIZER_RUNS_DIR": str(runs)})


def interrupted(runs: Path, sig: int, after: int, inside: bool, *flags: str):
    return run(
        runs,
        "-c",
        INTERRUPTING,
        str(int(sig)),
        str(after),
        "inside" if inside else "after",
        json.dumps(CONFIG),
        "--save",
        "--nowandb",
        *flags,
    )


def steady(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in TIMING} for m in metrics]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "weights.pt", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run: what every resumed run must reproduce bit for bit. Its checkpoints
    are kept (``--keep-checkpoints``; a finished run drops them by default) for the tests to read."""
    runs = tmp_path_factory.mktemp("reference")
    out = run(
        runs, "training/run_experiment.py", json.dumps(CONFIG), "--keep-checkpoints", "--nowandb"
    )
    assert out.returncode == 0, out.stderr
    return runs / "resume" / "run"


def assert_same_run(a: Path, b: Path) -> None:
    ra, rb = RunRecord.read(a), RunRecord.read(b)
    assert [m["epoch"] for m in rb["metrics"]] == list(range(1, EPOCHS + 1))  # no duplicates
    assert steady(ra["metrics"]) == steady(rb["metrics"])
    for key in ("test_loss", "test_accuracy", "val_loss", "best_epoch", "epochs_run"):
        assert ra["summary"][key] == rb["summary"][key], key
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_checkpoint_is_complete_and_loads_weights_only(reference):
    state = torch.load(reference / "checkpoint.pt", weights_only=True)
    prev = torch.load(reference / "checkpoint.prev.pt", weights_only=True)
    assert (state["epoch"], prev["epoch"]) == (EPOCHS, EPOCHS - 1) and state["done"]
    for key in ("model", "optimizer", "scheduler", "rng", "best_state", "bad_epochs", "history"):
        assert key in state, key
    assert set(state["rng"]) >= {"torch", "numpy", "python", "generators"}
    assert len(state["history"]) == EPOCHS


def test_sigterm_while_checkpointing_then_resume_matches_uninterrupted(reference, tmp_path):
    out = interrupted(tmp_path, signal.SIGTERM, after=2, inside=True)
    assert out.returncode == 130, out.stderr
    run_dir = tmp_path / "resume" / "run"
    assert "--resume" in out.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    # The deferred signal struck only once epoch 2's checkpoint was whole.
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] == 2
    # wall_time counts every part: say the first one took 1000 s.
    (run_dir / "summary.json").write_text(json.dumps({**summary, "wall_time": 1000.0}))

    out = run(
        tmp_path, "training/run_experiment.py", "--resume", str(run_dir), "--save", "--nowandb"
    )
    assert out.returncode == 0, out.stderr
    assert "resuming after epoch 2/4" in out.stderr
    resumed = json.loads((run_dir / "summary.json").read_text())
    assert resumed["resumed_from_epoch"] == 2
    assert_same_run(reference, run_dir)
    part = sum(m["epoch_time"] for m in RunRecord.read(run_dir)["metrics"][2:])
    assert 1000.0 + part <= resumed["wall_time"] < 1000.0 + 600
    assert resumed["started_at"] == summary["started_at"] and "resumed_at" in resumed
    # Finished: the resume checkpoints are gone, the weights stay.
    assert (
        not (run_dir / "checkpoint.pt").exists() and not (run_dir / "checkpoint.prev.pt").exists()
    )
    assert (run_dir / "weights.pt").is_file()


def test_sigint_after_epoch_then_resume_with_the_same_config(reference, tmp_path):
    out = interrupted(tmp_path, signal.SIGINT, after=1, inside=False)
    assert out.returncode == 130, out.stderr
    run_dir = tmp_path / "resume" / "run"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    out = run(
        tmp_path,
        "training/run_experiment.py",
        json.dumps(CONFIG),  # the same config may be given again
        "--resume",
        str(run_dir),
        "--save",
        "--nowandb",
    )
    assert out.returncode == 0, out.stderr
    assert_same_run(reference, run_dir)


def test_corrupt_checkpoint_falls_back_to_previous(reference, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    mark_interrupted(run_dir)  # a finished run is not resumed: this one stopped after epoch 4
    latest = run_dir / "checkpoint.pt"
    latest.write_bytes(latest.read_bytes()[:1000])  # truncated
    assert run_experiment_main(["--resume", str(run_dir), "--save", "--nowandb"]) == 0
    err = capsys.readouterr().err
    assert (
        "checkpoint.pt" in err and f"resuming from checkpoint.prev.pt (epoch {EPOCHS - 1})" in err
    )
    assert_same_run(reference, run_dir)


def mark_interrupted(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))


def test_bad_resume_inputs_exit_2_with_one_line(reference, tmp_path, capsys):
    def fails(*argv: str) -> str:
        assert run_experiment_main([*argv, "--nowandb"]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines[-1].startswith("error: ")
        return lines[-1]

    assert "not a run folder" in fails("--resume", str(tmp_path))
    other = {**CONFIG, "train_args": {**CONFIG["train_args"], "learning_rate": 0.01}}
    assert "'train_args.learning_rate'" in fails(json.dumps(other), "--resume", str(reference))

    run_dir = tmp_path / "broken"
    shutil.copytree(reference, run_dir)
    (run_dir / "checkpoint.pt").write_bytes(b"garbage")
    (run_dir / "checkpoint.prev.pt").write_bytes(b"")
    line = fails("--resume", str(run_dir))
    assert "no usable checkpoint" in line and "checkpoint.prev.pt" in line


def test_keep_checkpoints_carries_over_to_the_resume(tmp_path):
    out = interrupted(tmp_path, signal.SIGTERM, 1, False, "--keep-checkpoints")
    assert out.returncode == 130, out.stderr
    run_dir = tmp_path / "resume" / "run"
    out = run(tmp_path, "training/run_experiment.py", "--resume", str(run_dir), "--nowandb")
    assert out.returncode == 0, out.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["keep_checkpoints"] is True
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] == EPOCHS


def snapshot(run_dir: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and modification time (``.lock``, the lock's note, is written and
    emptied again by whoever takes the lock: its bytes only)."""
    return {
        p.name: (p.read_bytes(), 0 if p.name == ".lock" else p.stat().st_mtime_ns)
        for p in sorted(run_dir.iterdir())
    }


@pytest.mark.parametrize("checkpoints", ["kept", "removed"])
def test_resume_of_a_finished_run_says_so_and_changes_nothing(
    reference, tmp_path, capsys, checkpoints
):
    run_dir = Path(shutil.copytree(reference, tmp_path / "run"))
    if checkpoints == "removed":  # as a finished run leaves them by default
        for name in ("checkpoint.pt", "checkpoint.prev.pt"):
            (run_dir / name).unlink()
    before = snapshot(run_dir)
    assert run_experiment_main(["--resume", str(run_dir), "--nowandb"]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"{run_dir} finished already (test_accuracy " in lines[0]
    assert "nothing to resume, nothing changed" in lines[0]
    hint = "raise train_args.epochs" if checkpoints == "kept" else f'"init_from": "{run_dir}"'
    assert hint in lines[0]
    assert snapshot(run_dir) == before  # no test re-run, no new started_at or wall_time

    if checkpoints == "removed":  # more epochs asked for, but nothing left to continue from
        config = json.loads((run_dir / "config.json").read_text())
        config["train_args"]["epochs"] = EPOCHS + 2
        (run_dir / "config.json").write_text(json.dumps(config))
        before = snapshot(run_dir)
        assert run_experiment_main(["--resume", str(run_dir), "--nowandb"]) == 2
        line = capsys.readouterr().err.strip()
        assert line.startswith("error: ") and "\n" not in line
        assert "was edited after the run finished, but its checkpoints were removed" in line
        assert snapshot(run_dir) == before


def test_a_finished_run_with_only_an_older_checkpoint_stays_finished(reference, tmp_path, capsys):
    """Killed between removing its two checkpoints, or its last checkpoint corrupt: the older one
    (an epoch before the end) is no reason to retrain that epoch and overwrite the record."""
    run_dir = Path(shutil.copytree(reference, tmp_path / "run"))
    (run_dir / "checkpoint.pt").write_bytes(b"torn")
    before = snapshot(run_dir)
    assert run_experiment_main(["--resume", str(run_dir), "--nowandb"]) == 0
    assert "finished already" in capsys.readouterr().err.strip().splitlines()[-1]
    assert snapshot(run_dir) == before


def test_a_failure_after_the_run_finished_leaves_it_finished(tmp_path, monkeypatch, capsys):
    """The summary says finished before the tracker and the last lines: a failure there (W&B, a
    closed stderr) does not turn it into failed, and the checkpoints go only after all of it."""
    from text_recognizer.run.tracking import Tracker

    def broken(self, fields):
        raise RuntimeError("tracker down")

    monkeypatch.setattr(Tracker, "summary", broken)
    monkeypatch.setenv("TEXT_RECOGNIZER_RUNS_DIR", str(tmp_path))
    config = {**CONFIG, "train_args": {**CONFIG["train_args"], "epochs": 2}}
    assert run_experiment_main([json.dumps(config), "--nowandb"]) == 1
    run_dir = tmp_path / "resume" / "run"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and "error" not in summary
    assert (run_dir / "checkpoint.pt").is_file()  # removal is the last step: not reached
    assert "tracker down" in capsys.readouterr().err


def test_first_difference_names_the_dotted_key():
    assert first_difference({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}}) == "b.c"
    assert first_difference({"a": 1}, {"a": 1, "z": 0}) == "z"
    assert first_difference(CONFIG, json.loads(json.dumps(CONFIG))) is None
