"""MNIST handwritten digits from the four official idx ``.gz`` files (LeCun, Cortes & Burges).

The idx files are parsed with numpy alone: a big-endian header (magic 2051 for images, 2049 for
labels, then one uint32 per dimension) followed by uint8 data. Every file is checked for gzip,
magic, dimensions and length, and images against labels, so a wrong or damaged file is a one-line
``DataError`` naming it instead of garbage arrays. Files a user placed in ``data_dir`` are trusted
(checked for structure, not checksum); downloads are verified against ``metadata.toml``.

``test_set_only`` uses only the two ``t10k`` files (1.6 MB, handy offline or in CI): the 10,000
official test images are split into train and test with ``SPLIT_SEED``, a fixed seed independent
of the run's ``seed``, so every run evaluates on the same images. The split is stratified (each
digit contributes ``test_fraction`` of its images, largest remainders rounded so the total is
exactly ``round(N * test_fraction)``), which keeps the class balance equal on both sides.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from text_recognizer.datasets.base import Dataset, summary_main
from text_recognizer.errors import ConfigError, DataError, storage_error

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049  # 0x0803: uint8 x 3 dims; 0x0801: uint8 x 1 dim
IMAGE_SIZE = 28
NUM_CLASSES = 10
SPLIT_SEED = 1998  # fixed: the test_set_only test images never depend on the run's `seed`
MAX_ITEMS = 1_000_000  # an idx header declaring more is refused (MNIST train has 60,000)
MAX_GZIP_RATIO = 1100  # deflate cannot inflate more than ~1032x: a larger claim is a damaged file


class MnistDataset(Dataset):
    """MNIST digits: 28x28 uint8, white ink on black; mapping ``"0"``..``"9"``."""

    name = "mnist"
    kind = "characters"
    shaping_args: ClassVar[tuple[str, ...]] = ("test_set_only", "test_fraction")
    required_files: ClassVar[tuple[str, ...]] = (
        TRAIN_IMAGES,
        TRAIN_LABELS,
        TEST_IMAGES,
        TEST_LABELS,
    )

    def __init__(
        self, test_set_only: bool = False, test_fraction: float = 0.2, **common: Any
    ) -> None:
        if not 0.0 < float(test_fraction) < 1.0:
            raise ConfigError(f"MNIST test_fraction must be > 0 and < 1; got {test_fraction!r}")
        super().__init__(
            test_set_only=bool(test_set_only), test_fraction=float(test_fraction), **common
        )
        self.test_set_only = bool(test_set_only)
        self.test_fraction = float(test_fraction)

    # ----- raw data -----------------------------------------------------------------------------
    def needed_files(self) -> tuple[str, ...]:
        """The files this configuration reads: all four, or only the t10k pair."""
        return (TEST_IMAGES, TEST_LABELS) if self.test_set_only else self.required_files

    def missing_files(self) -> list[str]:
        return [f for f in self.needed_files() if not (self.data_dir / f).is_file()]

    def raw_files(self) -> list[Path]:
        return [self.data_dir / f for f in self.needed_files()]

    def prepare_raw_data(self) -> None:
        missing = self.missing_files()
        if self.user_data_dir and missing:
            mode = " with test_set_only" if self.test_set_only else ""
            raise DataError(
                f"data_dir {self.data_dir} lacks {', '.join(missing)} (MnistDataset{mode} needs "
                f"the official files {', '.join(self.needed_files())})"
            )
        super().prepare_raw_data()

    # ----- processing ----------------------------------------------------------------------------
    def process(self) -> tuple[dict[str, np.ndarray], list[str]]:
        x_test, y_test = read_pair(self.data_dir / TEST_IMAGES, self.data_dir / TEST_LABELS)
        if self.test_set_only:
            train_idx, test_idx = stratified_split(y_test, self.test_fraction, SPLIT_SEED)
            arrays = {
                "x_trainval": x_test[train_idx],
                "y_trainval": y_test[train_idx],
                "x_test": x_test[test_idx],
                "y_test": y_test[test_idx],
            }
        else:
            x_train, y_train = read_pair(self.data_dir / TRAIN_IMAGES, self.data_dir / TRAIN_LABELS)
            arrays = {
                "x_trainval": x_train,
                "y_trainval": y_train,
                "x_test": x_test,
                "y_test": y_test,
            }
        return arrays, [str(d) for d in range(NUM_CLASSES)]


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one gzip'd idx file, checking gzip, magic number, dimensions and length.

    Reads no more than the header declares (plus one byte to see there is no more), and refuses a
    header that declares more than ``MAX_ITEMS`` or more than the compressed size can hold, so a
    gzip bomb costs neither memory nor time.
    """
    name = path.name
    try:
        with open(path, "rb") as raw:
            if raw.read(2) != b"\x1f\x8b":
                raise DataError(f"{name} ({path}) is not gzip; expected the official .gz idx file")
            raw.seek(0)
            with gzip.GzipFile(fileobj=raw) as f:
                return _read_idx_stream(f, name, magic, os.fstat(raw.fileno()).st_size)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{name} ({path}) is a damaged gzip file ({e})") from None
    except OSError as e:  # not the gzip's fault: unreadable, a folder, an I/O error
        raise storage_error(e, path, "read") from None


def _read_idx_stream(f: gzip.GzipFile, name: str, magic: int, gz_size: int) -> np.ndarray:
    head = f.read(4)
    if len(head) < 4:
        raise DataError(f"{name}: {len(head)} bytes is too short for an idx header")
    found = int.from_bytes(head, "big")
    if found != magic:
        raise DataError(f"{name}: idx magic number is {found}, expected {magic}")
    ndim = magic & 0xFF
    raw_dims = f.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataError(f"{name}: truncated idx header ({4 + len(raw_dims)} bytes)")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    if ndim == 3 and dims[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"{name}: images are {dims[1]}x{dims[2]}, expected 28x28")
    if dims[0] > MAX_ITEMS:
        raise DataError(
            f"{name}: the header declares {dims[0]:,} items; at most {MAX_ITEMS:,} are read "
            "(the official MNIST files hold 60,000 and 10,000)"
        )
    size = int(np.prod(dims, dtype=np.int64))
    if size > gz_size * MAX_GZIP_RATIO:
        raise DataError(
            f"{name}: the header declares {size:,} bytes of data, more than a {gz_size:,}-byte "
            "gzip file can hold; the file is damaged"
        )
    out = np.empty(dims, dtype=np.uint8)
    view, got = memoryview(out).cast("B"), 0
    while got < size and (n := f.readinto(view[got:])):
        got += n
    header = 4 + 4 * ndim
    if got < size or f.read(1):
        what = f"{header + got} bytes" if got < size else "more bytes"
        raise DataError(f"{name}: {what} after gunzip, expected {header + size} for dims {dims}")
    return out


def read_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64, checked against each other."""
    x = read_idx(images_path, IMAGES_MAGIC)
    y = read_idx(labels_path, LABELS_MAGIC).astype(np.int64)
    if len(x) != len(y):
        raise DataError(
            f"{images_path.name} has {len(x)} images but {labels_path.name} has {len(y)} labels"
        )
    if len(y) and y.max() >= NUM_CLASSES:
        raise DataError(f"{labels_path.name}: label {int(y.max())} is not a digit 0-9")
    return x, y


def stratified_split(
    y: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) indices; each class gives ~test_fraction, the total is exact."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    total = round(len(y) * test_fraction)
    ideal = counts * test_fraction
    quota = np.floor(ideal).astype(np.int64)
    # Largest remainders (ties by class order) get the leftover images so the total is exact.
    order = np.argsort(-(ideal - quota), kind="stable")
    quota[order[: total - int(quota.sum())]] += 1
    test = []
    for cls, n in zip(classes, quota, strict=True):
        test.append(rng.permutation(np.flatnonzero(y == cls))[:n])
    test_idx = np.sort(np.concatenate(test)) if test else np.array([], dtype=np.int64)
    train_mask = np.ones(len(y), dtype=bool)
    train_mask[test_idx] = False
    return np.flatnonzero(train_mask), test_idx


if __name__ == "__main__":
    raise SystemExit(summary_main("MnistDataset"))
