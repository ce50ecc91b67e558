"""EMNIST handwritten characters from NIST's official MATLAB distribution (``matlab.zip``).

The archive holds ``matlab/emnist-{byclass,bymerge,balanced,letters,digits,mnist}.mat`` (Cohen et
al. 2017, derived from NIST Special Database 19). Each file is a MATLAB v5 struct ``dataset`` with
``train`` and ``test`` (``images`` (N, 784) uint8, ``labels`` (N, 1), ``writers`` (N, 1)) and
``mapping`` (label, ASCII code[, more codes]). Only the one split asked for is ever read, so memory
holds one split's arrays at a time.

Orientation: NIST stores every 28x28 image transposed (column-major from MATLAB), so rows are
reshaped to (N, 28, 28) in C order and the last two axes swapped; the result is upright.

Mapping: class index -> character, from the file's own ``mapping`` field. Labels are renumbered to
0..K-1 in label order, which is the identity for every split except ``letters``: its labels are
1..26 and each merges an upper- and a lower-case letter (official mapping ``1 65 97`` = A/a), so
class ``i`` is named by the first code NIST lists for it, the upper-case letter (``A``..``Z``).
Where several codes share one label (bymerge/balanced merge e.g. C/c), the first listed is used.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import numpy as np

from text_recognizer import paths
from text_recognizer.datasets import EMNIST_SPLITS
from text_recognizer.datasets.base import Dataset, summary_main
from text_recognizer.errors import ConfigError, DataError, storage_error
from text_recognizer.fileio import _host_tag, clean_stale_temps

ARCHIVE = "matlab.zip"
IMAGE_SIZE = 28
# Fixed: `balance` shapes the cached arrays, so it must not move with the run's `seed`.
BALANCE_SEED = 20170301
CHUNK = 65536  # images transposed per step, so the copy stays small next to the loaded arrays


def mat_member(split: str) -> str:
    """Path of a split's .mat inside ``matlab.zip`` (and under an extracted ``data_dir``)."""
    return f"matlab/emnist-{split}.mat"


class EmnistDataset(Dataset):
    """EMNIST characters: 28x28 uint8, white ink on black, upright.

    ``balance``: byclass is very skewed (digits and a few upper-case letters have many times the
    samples of rare lower-case ones), so a classifier learns to favour the frequent classes. With
    ``balance`` every class of the *training* data (train + validation) is capped at the mean class
    count, drawn without replacement with a fixed seed: rare classes keep all their samples, no
    sample is duplicated (FSDL drew with replacement, which repeats rare samples), and the cache
    stays valid across runs. It applies to any split (a no-op on ``balanced``); test is untouched.
    """

    name = "emnist"
    kind = "characters"
    shaping_args: ClassVar[tuple[str, ...]] = ("split", "balance")

    def __init__(self, split: str = "byclass", balance: bool = False, **common: Any) -> None:
        if split not in EMNIST_SPLITS:
            raise ConfigError(
                f"EMNIST split must be one of {', '.join(EMNIST_SPLITS)}; got {split!r}"
            )
        super().__init__(split=split, balance=bool(balance), **common)
        self.split = split
        self.balance = bool(balance)

    # ----- raw data -----------------------------------------------------------------------------
    @property
    def mat_path(self) -> Path:
        return self.data_dir / mat_member(self.split)

    def raw_files(self) -> list[Path]:
        return [self.mat_path if self.mat_path.is_file() else self.data_dir / ARCHIVE]

    def missing_files(self) -> list[str]:
        """Either the archive or the extracted split file will do."""
        if self.mat_path.is_file() or (self.data_dir / ARCHIVE).is_file():
            return []
        return [f"{ARCHIVE} (or its extracted {mat_member(self.split)})"]

    def prepare_raw_data(self) -> None:
        if self.user_data_dir and self.missing_files():
            raise DataError(
                f"data_dir {self.data_dir} has neither {ARCHIVE} nor {mat_member(self.split)}; "
                f"place NIST's EMNIST {ARCHIVE} there, or the {mat_member(self.split)} extracted "
                "from it"
            )
        super().prepare_raw_data()

    # ----- processing ----------------------------------------------------------------------------
    def process(self) -> tuple[dict[str, np.ndarray], list[str]]:
        if self.mat_path.is_file():
            arrays, mapping = read_emnist_mat(self.mat_path, str(self.mat_path))
        else:
            arrays, mapping = self._read_from_archive(self.data_dir / ARCHIVE)
        if self.balance:
            keep = balanced_indices(arrays["y_trainval"], len(mapping), BALANCE_SEED)
            arrays["x_trainval"] = arrays["x_trainval"][keep]
            arrays["y_trainval"] = arrays["y_trainval"][keep]
        return arrays, mapping

    def _read_from_archive(self, archive: Path) -> tuple[dict[str, np.ndarray], list[str]]:
        """Copy only this split's member out of the zip (to a temp file) and read it."""
        member = mat_member(self.split)
        where = f"{archive}!{member}"
        tmp_root = paths.processed_dir(self.name)
        try:
            with zipfile.ZipFile(archive) as zf:
                names = zf.namelist()
                if member not in names:  # tolerate a re-zipped archive with another top folder
                    alike = [n for n in names if n.endswith("/" + Path(member).name)]
                    if not alike:
                        raise DataError(
                            f"{archive} has no {member} (it holds {len(names)} entries, e.g. "
                            f"{', '.join(names[:3]) or 'none'}); is it NIST's EMNIST {ARCHIVE}?"
                        )
                    member, where = alike[0], f"{archive}!{alike[0]}"
                # our own name: no path from the zip
                with zf.open(member) as src, scratch_copy(src, tmp_root, Path(member).name) as tmp:
                    return read_emnist_mat(tmp, where)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError) as e:
            raise DataError(
                f"{archive} is not a readable zip archive ({e}); delete it and retry"
            ) from None
        except OSError as e:
            raise DataError(f"cannot read {where}: {e}") from None


@contextmanager
def scratch_copy(src: BinaryIO, folder: Path, name: str) -> Iterator[Path]:
    """A temporary copy of ``src`` in ``folder``, removed after use.

    Named like fileio's temp files, so a copy left by a killed process is removed by the next
    ``clean_stale_temps``; a failed write (full disk, read-only folder) is one StorageError line.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(folder)
        prefix = f".{name}.{_host_tag()}-{os.getpid()}."
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
    except OSError as e:
        raise storage_error(e, folder) from None
    path = Path(tmp)
    try:
        with open(fd, "wb", buffering=0) as dst:  # unbuffered: a write error shows at write
            while block := src.read(1 << 20):  # a read error is the archive's: not caught here
                view = memoryview(block)
                try:
                    while view:
                        view = view[dst.write(view) :]
                except OSError as e:
                    raise storage_error(e, f"a temporary copy of {name} in {folder}") from None
        yield path
    finally:
        path.unlink(missing_ok=True)


def read_emnist_mat(path: Path, source: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """Read one official EMNIST .mat into upright (N, 28, 28) uint8 arrays and a mapping."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path, variable_names=["dataset"])
    except NotImplementedError:  # scipy raises this for MATLAB v7.3 (HDF5) files
        raise DataError(f"{source} is a MATLAB v7.3 file; expected NIST's MATLAB v5 .mat") from None
    except Exception as e:  # any failure to parse a raw file is a data error, never a traceback
        raise DataError(
            f"{source} is not a readable MATLAB v5 file ({type(e).__name__}: {e})"
        ) from None
    dataset = mat.pop("dataset", None)
    del mat
    try:
        record = dataset[0, 0]
        train, test = record["train"][0, 0], record["test"][0, 0]
        raw_mapping = np.asarray(record["mapping"])
        parts = {
            "trainval": (train["images"], train["labels"]),
            "test": (test["images"], test["labels"]),
        }
    except (TypeError, ValueError, IndexError, KeyError) as e:
        raise DataError(
            f"{source} lacks the EMNIST struct dataset.train/test.images/labels + mapping ({e})"
        ) from None
    label_values, mapping = parse_mapping(raw_mapping, source)
    arrays: dict[str, np.ndarray] = {}
    for split, (images, labels) in parts.items():
        images, labels = np.asarray(images), np.asarray(labels).reshape(-1)
        if images.ndim != 2 or images.shape[1] != IMAGE_SIZE * IMAGE_SIZE:
            raise DataError(
                f"{source}: {split} images have shape {images.shape}, expected (N, 784)"
            )
        if len(images) != len(labels):
            raise DataError(f"{source}: {len(images)} {split} images but {len(labels)} labels")
        arrays[f"x_{split}"] = upright(images)
        arrays[f"y_{split}"] = label_indices(labels, label_values, source)
        del images, labels
    return arrays, mapping


def parse_mapping(raw: np.ndarray, source: str) -> tuple[np.ndarray, list[str]]:
    """Sorted label values and, per label, the character of the first ASCII code listed for it."""
    raw = np.asarray(raw)
    if raw.ndim != 2 or raw.shape[1] < 2 or len(raw) == 0:
        raise DataError(f"{source}: mapping has shape {raw.shape}, expected (K, 2+)")
    first_code: dict[int, int] = {}
    for row in raw.astype(np.int64):
        first_code.setdefault(int(row[0]), int(row[1]))  # first row, first code wins
    labels = np.array(sorted(first_code), dtype=np.int64)
    return labels, [chr(first_code[int(label)]) for label in labels]


def label_indices(labels: np.ndarray, label_values: np.ndarray, source: str) -> np.ndarray:
    """Official labels -> class indices 0..K-1 (identity unless labels start at 1, as letters)."""
    labels = labels.astype(np.int64)
    idx = np.searchsorted(label_values, labels).clip(0, len(label_values) - 1)
    bad = label_values[idx] != labels
    if bad.any():
        unknown = sorted(set(labels[bad].tolist()))[:5]
        raise DataError(f"{source}: labels {unknown} are not in the file's mapping")
    return idx.astype(np.int64)


def upright(images: np.ndarray) -> np.ndarray:
    """(N, 784) transposed rows -> (N, 28, 28) upright, in chunks to bound the extra memory."""
    from text_recognizer import progress

    out = np.empty((len(images), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    with progress.bar(len(images), "EMNIST upright", unit="img") as bar:
        for start in range(0, len(images), CHUNK):
            block = images[start : start + CHUNK].reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
            out[start : start + CHUNK] = block.swapaxes(1, 2)
            bar.update(len(block))
    return out


def balanced_indices(y: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """Sorted indices keeping at most the mean class count (over present classes) per class."""
    counts = np.bincount(y, minlength=num_classes)
    present = counts[counts > 0]
    if len(present) == 0:
        return np.arange(len(y))
    cap = max(1, int(present.mean()))
    rng = np.random.default_rng(seed)
    keep = []
    for cls in np.flatnonzero(counts):
        idx = np.flatnonzero(y == cls)
        keep.append(idx if len(idx) <= cap else rng.choice(idx, size=cap, replace=False))
    return np.sort(np.concatenate(keep))


if __name__ == "__main__":
    raise SystemExit(summary_main("EmnistDataset"))
