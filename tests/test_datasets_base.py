"""The Dataset base class through the synthetic characters dataset: cache, splits, summary."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import run_script
from text_recognizer.datasets.synthetic_characters import SyntheticCharactersDataset

ARGS = {"num_train": 300, "num_test": 100, "charset": "digits", "image_size": 28, "distortion": 1.0}


def test_generation_is_seeded_upright_and_balanced(data_dirs):
    a = SyntheticCharactersDataset(**ARGS).load_or_generate_data()
    assert a.x_train.dtype == np.uint8 and a.x_train.shape[1:] == (28, 28)
    assert len(a.x_train) + len(a.x_val) == 300 and len(a.x_test) == 100
    assert a.mapping == list("0123456789")
    assert set(np.unique(a.y_train)) == set(range(10))
    # White ink on black: the border is dark, the centre holds the ink.
    assert a.x_train[:, :3, :].mean() < 30 and a.x_train[:, 10:18, 10:18].mean() > 40
    a.cache_path.unlink()
    b = SyntheticCharactersDataset(**ARGS).load_or_generate_data()
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)


def test_cache_is_named_by_shaping_args_and_reused(data_dirs, monkeypatch):
    a = SyntheticCharactersDataset(**ARGS)
    b = SyntheticCharactersDataset(**{**ARGS, "num_train": 301})
    assert a.cache_path != b.cache_path
    assert a.cache_path.parent == data_dirs[1] / "synthetic_characters"
    a.load_or_generate_data()
    calls = []
    monkeypatch.setattr(SyntheticCharactersDataset, "process", lambda self: calls.append(1))
    SyntheticCharactersDataset(**ARGS).load_or_generate_data()
    assert calls == []


@pytest.mark.parametrize("damage", ["garbage", "truncate", "empty"])
def test_corrupt_cache_is_rebuilt(data_dirs, damage, capsys):
    good = SyntheticCharactersDataset(**ARGS).load_or_generate_data()
    path = good.cache_path
    blob = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not an hdf5 file" * 100)
    elif damage == "truncate":
        path.write_bytes(blob[: len(blob) // 2])
    else:
        path.write_bytes(b"")
    again = SyntheticCharactersDataset(**ARGS).load_or_generate_data()
    np.testing.assert_array_equal(good.x_train, again.x_train)
    assert "rebuilding" in capsys.readouterr().err
    assert path.stat().st_size == len(blob) or path.stat().st_size > 0


def test_validation_split_is_seeded_disjoint_and_subsampled(data_dirs):
    base = SyntheticCharactersDataset(
        **ARGS, validation_fraction=0.2, seed=1
    ).load_or_generate_data()
    same = SyntheticCharactersDataset(
        **ARGS, validation_fraction=0.2, seed=1
    ).load_or_generate_data()
    other = SyntheticCharactersDataset(
        **ARGS, validation_fraction=0.2, seed=2
    ).load_or_generate_data()
    assert len(base.x_val) == 60 and len(base.x_train) == 240
    np.testing.assert_array_equal(base.x_val, same.x_val)
    assert not np.array_equal(base.x_val, other.x_val)
    train_rows = {r.tobytes() for r in base.x_train}
    assert not any(r.tobytes() in train_rows for r in base.x_val)
    np.testing.assert_array_equal(base.x_test, other.x_test)  # test split never moves
    sub = SyntheticCharactersDataset(**ARGS, validation_fraction=0.2, subsample_fraction=0.25)
    sub.load_or_generate_data()
    assert len(sub.x_train) == 60 and len(sub.x_val) == 15 and len(sub.x_test) == 100


def test_config_is_the_contract_with_the_model(data_dirs):
    ds = SyntheticCharactersDataset(**ARGS).load_or_generate_data()
    expected = {
        "dataset": "SyntheticCharactersDataset",
        "kind": "characters",
        "input_shape": [28, 28],
        "output_shape": [10],
        "mapping": list("0123456789"),
    }
    assert {k: ds.config()[k] for k in expected} == expected


def test_module_prints_summary(tmp_path):
    out = run_script(
        "-m",
        "text_recognizer.datasets.synthetic_characters",
        '{"num_train": 200, "num_test": 50, "charset": "digits"}',
        env={"TEXT_RECOGNIZER_DATA_DIR": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr
    assert "train:      180 x (28, 28) uint8" in out.stdout
    assert "classes:    10: 0123456789" in out.stdout
    bad = run_script("-m", "text_recognizer.datasets.synthetic_characters", '{"num_train": 0}')
    assert bad.returncode == 2 and "num_train must be an integer >= 1" in bad.stderr


def test_two_processes_build_one_cache_once(data_dirs):
    """Two runs started together: one builds the cache, the other waits for it and reads it."""
    import fcntl
    import json
    import os
    import subprocess
    import sys
    import time

    cache = SyntheticCharactersDataset(**ARGS).cache_path
    cache.parent.mkdir(parents=True, exist_ok=True)
    lock = cache.with_name(cache.name + ".lock")
    command = [
        sys.executable,
        "-m",
        "text_recognizer.datasets.synthetic_characters",
        json.dumps(ARGS),
    ]
    env = {**os.environ, "TEXT_RECOGNIZER_DATA_DIR": str(data_dirs[1].parent)}
    with open(lock, "w") as held:  # as if a third process were building: both must wait
        fcntl.flock(held, fcntl.LOCK_EX)
        loaders = [
            subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ]
        time.sleep(3)
        assert all(p.poll() is None for p in loaders)  # waiting, not building
    outputs = [p.communicate(timeout=120) for p in loaders]
    assert [p.returncode for p in loaders] == [0, 0], outputs
    errs = "".join(err for _, err in outputs)
    assert errs.count("waiting: another process is building") == 2
    assert errs.count("processing SyntheticCharactersDataset") == 1, errs
    assert cache.is_file() and not lock.exists()  # nothing left beside the cache


def test_a_filesystem_without_locks_builds_anyway_with_a_warning(data_dirs, monkeypatch, capsys):
    import errno
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    data = SyntheticCharactersDataset(**ARGS).load_or_generate_data()
    assert len(data.x_test) == 100 and data.cache_path.is_file()
    assert "cannot lock" in capsys.readouterr().err
    assert not data.cache_path.with_name(data.cache_path.name + ".lock").exists()
