"""torchrun on the CPU: two gloo ranks train one experiment and write exactly one run record."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from conftest import run_script
from text_recognizer.run.records import RunRecord

# No dropout and no augmentation: with batch_size per rank, 2 ranks x 32 see exactly the samples
# of one process x 64 each step, so the two runs differ only by float summation order.
CONFIG = {
    "experiment_group": "ddp",
    "dataset": "SyntheticCharactersDataset",
    "dataset_args": {"num_train": 600, "num_test": 200, "charset": "digits"},
    "model": "CharacterModel",
    "network": "mlp",
    "network_args": {"num_layers": 2, "layer_size": 32, "dropout_amount": 0.0},
    "train_args": {"batch_size": 32, "epochs": 3, "num_threads": 1, "lr_schedule": "cosine"},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def records(runs: Path) -> list[dict]:
    return [RunRecord.read(p.parent) for p in runs.glob("*/*/summary.json")]


def test_torchrun_two_ranks_matches_one_process(tmp_path):
    ddp_runs, single_runs = tmp_path / "ddp", tmp_path / "single"
    out = run_script(
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        "training/run_experiment.py",
        json.dumps(CONFIG),
        "--nowandb",
        env={"TEXT_RECOGNIZER_RUNS_DIR": str(ddp_runs), "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("epoch 3/3") == 1  # rank 1 is silent
    single = {**CONFIG, "train_args": {**CONFIG["train_args"], "batch_size": 64}}
    out = run_script(
        "training/run_experiment.py",
        json.dumps(single),
        "--nowandb",
        env={"TEXT_RECOGNIZER_RUNS_DIR": str(single_runs)},
    )
    assert out.returncode == 0, out.stderr

    (ddp,), (one,) = records(ddp_runs), records(single_runs)  # exactly one record each
    assert ddp["summary"]["status"] == "finished" and ddp["summary"]["world_size"] == 2
    assert [m["epoch"] for m in ddp["metrics"]] == [1, 2, 3]
    assert (ddp_runs / "ddp").exists() and len(list((ddp_runs / "ddp").iterdir())) == 1
    for key in ("test_loss", "test_accuracy", "val_loss"):
        assert ddp["summary"][key] == pytest.approx(one["summary"][key], rel=1e-3, abs=1e-3), key
    for a, b in zip(ddp["metrics"], one["metrics"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
        assert a["train_accuracy"] == pytest.approx(b["train_accuracy"], abs=1e-6)
