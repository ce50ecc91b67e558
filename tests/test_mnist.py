"""MnistDataset on tiny gzip'd idx files served over local HTTP, and on the real shared t10k files."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from conftest import run_script
from text_recognizer import paths
from text_recognizer.datasets import DATASETS
from text_recognizer.datasets.mnist import MnistDataset, read_idx
from text_recognizer.errors import ConfigError, DataError

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
SHARED_MNIST = paths.SHARED_DATA_DIR / "mnist"
needs_shared = pytest.mark.skipif(
    not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"real MNIST sample files not found at {SHARED_MNIST}",
)


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def images_for(labels: np.ndarray, start: int) -> np.ndarray:
    """A digit-sized image per label, with its index in pixels (0, 0) and (0, 1)."""
    x = np.zeros((len(labels), 28, 28), dtype=np.uint8)
    x[:, 4:24, 12] = 200
    idx = np.arange(start, start + len(labels))
    x[:, 0, 0], x[:, 0, 1] = idx % 256, idx // 256
    return x


def image_index(images: np.ndarray) -> np.ndarray:
    return images[:, 0, 0].astype(np.int64) + 256 * images[:, 0, 1].astype(np.int64)


def write_mnist(folder: Path, num_train: int = 60, num_test: int = 50) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    y_train = np.arange(num_train) % 10
    y_test = (np.arange(num_test) * 3) % 10
    arrays = {
        "train_images": images_for(y_train, 0),
        "train_labels": y_train,
        "test_images": images_for(y_test, 1000),
        "test_labels": y_test,
    }
    for key, a in arrays.items():
        magic = 2051 if key.endswith("images") else 2049
        (folder / FILES[key]).write_bytes(gzip.compress(idx_bytes(a, magic), mtime=0))
    return arrays


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: object) -> None:
        _QuietHandler.hits.append(self.path)


@pytest.fixture
def served(tmp_path: Path, data_dirs: tuple[Path, Path]) -> Iterator[dict[str, np.ndarray]]:
    """Serve four tiny idx .gz files on 127.0.0.1; raw/mnist/metadata.toml points at them."""
    site = tmp_path / "site"
    arrays = write_mnist(site)
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    tables = []
    for name in FILES.values():
        data = (site / name).read_bytes()
        tables.append(
            f'[[files]]\nurl = "{base}/{name}"\nfilename = "{name}"\n'
            f'sha256 = "{hashlib.sha256(data).hexdigest()}"\nsize = {len(data)}\nextract = false\n'
        )
    meta = data_dirs[0] / "mnist" / "metadata.toml"
    meta.parent.mkdir(parents=True)
    meta.write_text("\n".join(tables))
    _QuietHandler.hits = []
    try:
        yield arrays
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def load(**kwargs: object) -> MnistDataset:
    return MnistDataset(**kwargs).load_or_generate_data()


def test_download_verify_process_and_cache(
    served: dict[str, np.ndarray], data_dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    raw, processed = data_dirs
    ds = load(validation_fraction=0.1)
    assert sorted(_QuietHandler.hits) == sorted(f"/{n}" for n in FILES.values())
    for name in FILES.values():
        assert (raw / "mnist" / name).is_file()
    assert ds.cache_path.is_file() and ds.cache_path.parent == processed / "mnist"
    assert ds.mapping == list("0123456789") and ds.input_shape == (28, 28)
    assert ds.output_shape == (10,)
    assert len(ds.x_train) == 54 and len(ds.x_val) == 6
    np.testing.assert_array_equal(ds.x_test, served["test_images"])
    np.testing.assert_array_equal(ds.y_test, served["test_labels"])
    assert ds.y_train.dtype == np.int64 and ds.x_train.dtype == np.uint8
    # Labels stay attached to their images through the validation carve.
    merged = np.concatenate([ds.x_train, ds.x_val])
    labels = np.concatenate([ds.y_train, ds.y_val])
    np.testing.assert_array_equal(served["train_labels"][image_index(merged)], labels)

    hits = len(_QuietHandler.hits)
    monkeypatch.setattr(MnistDataset, "process", lambda self: pytest.fail("process called"))
    again = load(validation_fraction=0.1)
    assert len(_QuietHandler.hits) == hits
    np.testing.assert_array_equal(again.x_val, ds.x_val)


def test_test_set_only_split_is_fixed_stratified_and_exact(tmp_path: Path, data_dirs) -> None:
    folder = tmp_path / "t10k"
    arrays = write_mnist(folder, num_test=200)
    for name in (FILES["train_images"], FILES["train_labels"]):
        (folder / name).unlink()
    a = load(data_dir=str(folder), test_set_only=True, test_fraction=0.25, seed=0)
    assert len(a.x_test) == 50 and len(a.x_train) + len(a.x_val) == 150
    np.testing.assert_array_equal(np.bincount(a.y_test, minlength=10), [5] * 10)
    test_ids = set(image_index(a.x_test).tolist())
    rest = set(image_index(np.concatenate([a.x_train, a.x_val])).tolist())
    assert not test_ids & rest and len(test_ids | rest) == 200
    np.testing.assert_array_equal(arrays["test_labels"][image_index(a.x_test) - 1000], a.y_test)
    a.cache_path.unlink()
    b = load(data_dir=str(folder), test_set_only=True, test_fraction=0.25, seed=5)
    np.testing.assert_array_equal(a.x_test, b.x_test)


def test_missing_files_are_named(tmp_path: Path, data_dirs) -> None:
    folder = tmp_path / "only_test"
    write_mnist(folder)
    (folder / FILES["train_images"]).unlink()
    with pytest.raises(DataError, match=r"lacks train-images-idx3-ubyte\.gz") as err:
        load(data_dir=str(folder))
    assert "\n" not in str(err.value) and str(folder) in str(err.value)
    loaded = load(data_dir=str(folder), test_set_only=True)
    assert len(loaded.x_test) == 10
    loaded.cache_path.unlink()  # the cache would otherwise be used without the raw files
    (folder / FILES["test_labels"]).unlink()
    with pytest.raises(DataError, match=r"lacks t10k-labels-idx1-ubyte\.gz"):
        load(data_dir=str(folder), test_set_only=True)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("plain", "t10k-images-idx3-ubyte.gz .* is not gzip"),
        ("magic", "magic number is 2049, expected 2051"),
        ("short", "bytes after gunzip, expected"),
        ("cut_gzip", "damaged gzip"),
        ("size", "images are 28x20, expected 28x28"),
        ("count", "has 49 images but t10k-labels-idx1-ubyte.gz has 50 labels"),
    ],
)
def test_corrupt_idx_files(tmp_path: Path, data_dirs, damage: str, message: str) -> None:
    folder = tmp_path / damage
    arrays = write_mnist(folder)
    target = folder / FILES["test_images"]
    x = arrays["test_images"]
    payload = {
        "plain": None,
        "magic": idx_bytes(x, 2049),
        "short": idx_bytes(x, 2051)[:-5],
        "cut_gzip": None,
        "size": idx_bytes(x[:, :, :20], 2051),
        "count": idx_bytes(x[:49], 2051),
    }[damage]
    if damage == "plain":
        target.write_bytes(idx_bytes(x, 2051))
    elif damage == "cut_gzip":
        target.write_bytes(target.read_bytes()[:200])
    else:
        target.write_bytes(gzip.compress(payload))
    with pytest.raises(DataError, match=message) as err:
        load(data_dir=str(folder), test_set_only=True)
    assert "\n" not in str(err.value)
    assert not list(data_dirs[1].rglob("*.h5")), "a failed process must not leave a cache"


def test_corrupt_cache_is_rebuilt_and_subsample(tmp_path: Path, data_dirs, monkeypatch) -> None:
    folder = tmp_path / "files"
    write_mnist(folder, num_train=200)
    first = load(data_dir=str(folder))
    first.cache_path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    calls = []
    original = MnistDataset.process
    monkeypatch.setattr(MnistDataset, "process", lambda self: (calls.append(1), original(self))[1])
    rebuilt = load(data_dir=str(folder))
    assert calls == [1]
    np.testing.assert_array_equal(rebuilt.x_train, first.x_train)
    part = load(data_dir=str(folder), subsample_fraction=0.5)
    assert calls == [1]
    assert len(part.x_train) == 90 and len(part.x_val) == 10
    assert set(image_index(part.x_train).tolist()) <= set(image_index(first.x_train).tolist())


def test_arguments_match_the_registry() -> None:
    spec = DATASETS["MnistDataset"].args
    ds = MnistDataset()
    assert ds.test_set_only is spec["test_set_only"].default is False
    assert ds.test_fraction == spec["test_fraction"].default == 0.2
    with pytest.raises(ConfigError):
        MnistDataset(test_fraction=1.0)


@needs_shared
def test_real_shared_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    labels = read_idx(SHARED_MNIST / "t10k-labels-idx1-ubyte.gz", 2049)
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]  # the well-known start of the test set
    runs = []
    for seed in (0, 7):  # separate processed folders, so both runs really process
        monkeypatch.setattr(paths, "PROCESSED_DIR", tmp_path / f"processed{seed}")
        ds = load(data_dir=str(SHARED_MNIST), test_set_only=True, seed=seed)
        assert len(ds.x_train) + len(ds.x_val) == 8000 and len(ds.x_test) == 2000
        assert len(ds.x_val) == 800
        assert ds.x_train.shape[1:] == ds.x_test.shape[1:] == (28, 28)
        assert ds.x_test.dtype == np.uint8 and ds.x_test.max() == 255
        for y in (ds.y_train, ds.y_val, ds.y_test):
            assert y.min() == 0 and y.max() == 9
        runs.append(ds)
    np.testing.assert_array_equal(runs[0].x_test, runs[1].x_test)
    np.testing.assert_array_equal(runs[0].y_test, runs[1].y_test)
    assert not np.array_equal(runs[0].y_val, runs[1].y_val), "seed should move validation"
    counts = np.bincount(runs[0].y_test, minlength=10) / 2000
    full = np.bincount(labels, minlength=10) / 10000
    assert np.abs(counts - full).max() < 0.001  # stratified


@needs_shared
def test_real_shared_mnist_needs_train_images(tmp_path: Path, data_dirs) -> None:
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz"):
        load(data_dir=str(SHARED_MNIST))


@needs_shared
def test_module_prints_a_summary(tmp_path: Path) -> None:
    env = {"TEXT_RECOGNIZER_DATA_DIR": str(tmp_path / "data")}
    args = f'{{"data_dir": "{SHARED_MNIST}", "test_set_only": true}}'
    proc = run_script("-m", "text_recognizer.datasets.mnist", args, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "MnistDataset" in proc.stdout and "test:       2000 x (28, 28) uint8" in proc.stdout
    assert "0123456789" in proc.stdout
    assert str(tmp_path / "data" / "processed" / "mnist") in proc.stdout
    bad = run_script(
        "-m", "text_recognizer.datasets.mnist", f'{{"data_dir": "{SHARED_MNIST}"}}', env=env
    )
    assert bad.returncode == 2 and "train-images-idx3-ubyte.gz" in bad.stderr
    assert "Traceback" not in bad.stderr
