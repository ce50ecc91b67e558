"""CPU runs keep freed memory in the heap (run/heap.py), set by the runner before the data loads."""

from __future__ import annotations

import platform

import pytest

from text_recognizer.run import heap


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_takes_on_glibc():
    assert heap.keep_freed_memory() is True
    assert heap.keep_freed_memory() is True  # idempotent: a second run in the process is fine


def test_a_cpu_run_keeps_its_heap(tmp_path, monkeypatch):
    from text_recognizer.config import validate_config
    from text_recognizer.run.runner import run_experiment

    calls = []
    monkeypatch.setattr(heap, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setenv("TEXT_RECOGNIZER_RUNS_DIR", str(tmp_path))
    config = validate_config(
        {
            "dataset": "SyntheticCharactersDataset",
            "dataset_args": {"num_train": 200, "num_test": 50},
            "model": "CharacterModel",
            "network": "mlp",
            "network_args": {"num_layers": 1, "layer_size": 8},
            "train_args": {"epochs": 1, "num_threads": 1},
        }
    )
    code, _ = run_experiment(config, use_wandb=False)
    assert code == 0 and calls == [1]
