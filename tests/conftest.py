"""Test isolation: data, runs and W&B go to a temporary folder, never the project's own."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import pytest

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="text-recognizer-tests-"))
# Set before text_recognizer is imported anywhere, so paths.py and subprocesses both see them.
os.environ["TEXT_RECOGNIZER_DATA_DIR"] = str(_SESSION_DIR / "data")
os.environ["TEXT_RECOGNIZER_RUNS_DIR"] = str(_SESSION_DIR / "runs")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ["WANDB_SILENT"] = "true"
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TEXT_RECOGNIZER_GPU_LEASES", str(_SESSION_DIR / "leases"))

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The smallest experiment worth running (a 1-epoch MLP on 300 synthetic digits, one thread): the
# base config of the sweep and orchestration tests.
TINY_CHARACTER_CONFIG = {
    "dataset": "SyntheticCharactersDataset",
    "dataset_args": {"num_train": 300, "num_test": 100, "charset": "digits"},
    "model": "CharacterModel",
    "network": "mlp",
    "network_args": {"num_layers": 1, "layer_size": 16},
    "train_args": {"batch_size": 64, "epochs": 1, "num_threads": 1},
}


LAYER_SIZES = {"network_args.layer_size": {"values": [8, 16, 32, 64]}}  # a 4-trial grid


def tiny_sweep(tmp_path: Path, name: str, parameters: dict, **extra: object) -> dict:
    """A grid sweep (W&B's YAML, as a dict) of the tiny character config, written beside it as
    base.json: ``parameters`` besides ``config``, ``extra`` top-level keys (early_terminate)."""
    import json

    base = tmp_path / "base.json"
    base.write_text(json.dumps({"experiment_group": "tiny", **TINY_CHARACTER_CONFIG}))
    return {
        "name": name,
        "program": "training/run_sweep.py",
        "method": "grid",
        "metric": {"name": "val_loss", "goal": "minimize"},
        **extra,
        "parameters": {"config": {"value": str(base)}, **parameters},
    }


def write_tiny_sweep(tmp_path: Path, name: str = "tiny") -> Path:
    """`tiny_sweep` over LAYER_SIZES as tmp_path/sweep.yaml."""
    import yaml

    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(tiny_sweep(tmp_path, name, LAYER_SIZES), sort_keys=False))
    return path


@pytest.fixture
def runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh runs folder for one test."""
    path = tmp_path / "runs"
    monkeypatch.setenv("TEXT_RECOGNIZER_RUNS_DIR", str(path))
    return path


@pytest.fixture
def data_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Point the project's data/raw and data/processed folders at tmp_path (raw, processed)."""
    from text_recognizer import paths

    raw, processed = tmp_path / "data" / "raw", tmp_path / "data" / "processed"
    monkeypatch.setattr(paths, "RAW_DIR", raw)
    monkeypatch.setattr(paths, "PROCESSED_DIR", processed)
    return raw, processed


@pytest.fixture
def shared_data() -> Path:
    """The real sample data beside the checkout; tests that need it skip with a reason if absent."""
    from text_recognizer.paths import SHARED_DATA_DIR

    if not SHARED_DATA_DIR.is_dir():
        pytest.skip(
            f"real sample data not found at {SHARED_DATA_DIR} (set TEXT_RECOGNIZER_SHARED_DATA)"
        )
    return SHARED_DATA_DIR


def run_script(*args: str, env: dict[str, str] | None = None, timeout: float = 600):
    """Run a project script with the test environment; returns CompletedProcess (text)."""
    import subprocess

    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, *args],
        cwd=PROJECT_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def small_disk(tmp_path: Path):
    """A folder on its own 1 MiB tmpfs, to fill up: ``small_disk(size="1m") -> Path``.

    Needs root (mount); skips with the reason where a tmpfs cannot be mounted.
    """
    import subprocess

    mounted: list[Path] = []

    def make(size: str = "1m") -> Path:
        point = tmp_path / f"small-disk-{len(mounted)}"
        point.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(point)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {result.stderr.strip()}")
        mounted.append(point)
        return point

    yield make
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def fill_disk(folder: Path, leave: int = 0) -> None:
    """Fill the filesystem holding ``folder`` until at most ``leave`` bytes are free."""
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize - leave
    if free <= 0:
        return
    chunk = b"\0" * min(free, 1 << 20)
    with open(folder / ".filler", "wb") as f, contextlib.suppress(OSError):
        while free > 0:
            free -= f.write(chunk[:free])


def memory_capped(limit_bytes: int) -> list[str]:
    """Arguments for run_script that cap the address space (RLIMIT_AS) of the script they run.

    ``run_script(*memory_capped(2 << 30), "training/evaluate.py", ...)`` runs a script file;
    ``run_script(*memory_capped(2 << 30), "text_recognizer.predict", ...)`` runs a module.
    """
    code = (
        "import resource, runpy, sys; "
        f"resource.setrlimit(resource.RLIMIT_AS, ({limit_bytes}, {limit_bytes})); "
        "sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__') if sys.argv[0].endswith('.py') "
        "else runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)"
    )
    return ["-c", code]


@pytest.fixture
def no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No Kaggle credentials anywhere (the user's real ones are never read by the tests)."""
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(var, raising=False)
    config = tmp_path / "kaggle-config"
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config))
    return config


def seed_trial(
    runner, state_dir: Path, trial_id: str, history: list[float], epochs: int, status: str
):
    """A trial with a made-up val_loss history in ``runner``'s state and folder (the hyperband
    tests): its Trial, which the caller makes active with a process when it is running."""
    import json

    from text_recognizer.orchestration.sweep_state import Trial

    trial = Trial(id=trial_id, params={"train_args.seed": int(trial_id[-1])}, status=status)
    runner.state.trials.append(trial)
    (state_dir / trial_id).mkdir(parents=True)
    (state_dir / trial_id / "config.json").write_text(
        json.dumps({"train_args": {"epochs": epochs}})
    )
    (state_dir / trial_id / "metrics.jsonl").write_text(
        "".join(json.dumps({"epoch": e + 1, "val_loss": v}) + "\n" for e, v in enumerate(history))
    )
    return trial
