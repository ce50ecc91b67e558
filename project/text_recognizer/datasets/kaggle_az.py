"""Kaggle's "A-Z Handwritten Alphabets" (sachinpatel21/az-handwritten-alphabets-in-csv-format).

One file, ``A_Z Handwritten Data.csv`` (~372,000 rows, ~700 MB, no header): each row is a label
0-25 (A-Z) and 784 pixel values 0-255 of a 28x28 image, row-major, white ink on black like MNIST.
``data_dir`` may hold the CSV or the zip Kaggle serves (read in place, never extracted); without it
the zip goes to ``data/raw/kaggle_az/``, downloaded through Kaggle's API with the user's
credentials exactly as KaggleNamesDataset does (same errors when they are missing).

Reading never holds the CSV (or the arrays) twice: a first streamed pass counts the rows and reads
only their labels, the stratified train/test split is drawn from those labels, and the second pass
parses ``CHUNK_ROWS`` lines at a time (``np.loadtxt``) straight into the preallocated train and
test arrays. Bad input is a one-line ``DataError`` naming the file and line: a label outside 0-25,
a row without 785 values, a pixel outside 0-255 or not an integer, an empty file. Blank lines are
skipped and counted.

Splits: the CSV has none, so ``test_fraction`` of every letter's rows is held out as test with a
fixed seed (``SPLIT_SEED``, independent of the run's ``seed``), stratified like MnistDataset's
``test_set_only`` split. Validation is then the usual seeded carve of the rest.

``with_digits`` adds the 10 MNIST digits as classes 0-9 and shifts the letters to 10-35 (the
36-class set of the seed project 003): MNIST comes from MnistDataset (its own cache), from
``mnist_dir`` (e.g. ``../shared/data/mnist``, which needs ``mnist_test_set_only``), its test split
becoming part of the test split here.
"""

from __future__ import annotations

import io
import string
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np

from text_recognizer import progress
from text_recognizer.datasets.base import Dataset, summary_main
from text_recognizer.datasets.files import open_zip, resolve_dir
from text_recognizer.datasets.mnist import stratified_split
from text_recognizer.errors import ConfigError, DataError, storage_error

CSV_NAME = "A_Z Handwritten Data.csv"
KAGGLE_DATASET = "sachinpatel21/az-handwritten-alphabets-in-csv-format"
KAGGLE_DOWNLOAD_URL = f"https://www.kaggle.com/api/v1/datasets/download/{KAGGLE_DATASET}"
ARCHIVE = "az-handwritten-alphabets-in-csv-format.zip"
IMAGE_SIZE = 28
VALUES_PER_ROW = 1 + IMAGE_SIZE * IMAGE_SIZE
LETTERS = list(string.ascii_uppercase)
DIGITS = list(string.digits)
SPLIT_SEED = 2107  # fixed: the held-out test rows never depend on the run's `seed`
CHUNK_ROWS = 4096  # lines parsed per step: ~13 MB of int32 values, small next to the arrays
MAX_LINE_BYTES = 64 << 10  # a row is at most ~3.2 KB; longer is not this CSV (read in bounds)


class KaggleAzDataset(Dataset):
    """Kaggle's handwritten capitals A-Z (optionally with MNIST digits): 28x28 uint8."""

    name = "kaggle_az"
    kind = "characters"
    shaping_args: ClassVar[tuple[str, ...]] = (
        "with_digits",
        "mnist_test_set_only",
        "test_fraction",
    )
    needs_download = False  # fetched from Kaggle in prepare_raw_data

    def __init__(
        self,
        with_digits: bool = False,
        mnist_dir: str | None = None,
        mnist_test_set_only: bool = False,
        test_fraction: float = 0.2,
        **common: Any,
    ) -> None:
        if not 0.0 < float(test_fraction) < 1.0:
            raise ConfigError(f"test_fraction must be > 0 and < 1; got {test_fraction!r}")
        super().__init__(
            with_digits=bool(with_digits),
            mnist_test_set_only=bool(mnist_test_set_only),
            test_fraction=float(test_fraction),
            **common,
        )
        self.mnist_dir = resolve_dir(mnist_dir)
        self.chunk_rows = CHUNK_ROWS  # tests shrink it to prove chunking changes nothing

    # ----- raw data -----------------------------------------------------------------------------
    def digits(self) -> Dataset:
        """MnistDataset, not loaded, all of its train split as train (no validation carve)."""
        from text_recognizer.datasets.mnist import MnistDataset

        return MnistDataset(
            data_dir=self.mnist_dir,
            test_set_only=self.args["mnist_test_set_only"],
            test_fraction=self.args["test_fraction"],
            validation_fraction=0.0,
        )

    def extra_sources(self) -> list[str]:
        """Another MNIST folder makes other arrays: part of the cache key."""
        if self.args["with_digits"] and self.mnist_dir is not None:
            return [f"mnist={self.mnist_dir}"]
        return []

    def source(self) -> Path | None:
        """The CSV in ``data_dir``, else the first zip there holding it, else None."""
        csv_path = self.data_dir / CSV_NAME
        if csv_path.is_file():
            return csv_path
        if self.data_dir.is_dir():
            for archive in sorted(self.data_dir.glob("*.zip")):
                with open_zip(archive, "archive") as zf:
                    if csv_member(zf) is not None:
                        return archive
        return None

    def missing_files(self) -> list[str]:
        return [] if self.source() is not None else [f"{CSV_NAME} (or Kaggle's zip holding it)"]

    def raw_files(self) -> list[Path]:
        """The CSV or zip, and MNIST's files with digits: they key the cache."""
        found = self.source()
        mnist = self.digits().raw_files() if self.args["with_digits"] else []
        return ([found] if found else []) + mnist

    def prepare_raw_data(self) -> None:
        """A user's folder must hold the CSV or zip; the default folder is filled from Kaggle."""
        if self.args["with_digits"]:
            digits = self.digits()
            if not digits.cache_path.is_file():
                digits.prepare_raw_data()
        if self.source() is not None:
            return
        if self.user_data_dir:
            raise DataError(
                f"data_dir {self.data_dir} holds neither {CSV_NAME!r} nor a zip with it; "
                f"KaggleAzDataset needs Kaggle's {KAGGLE_DATASET} CSV or its zip"
            )
        from text_recognizer.datasets.kaggle_names import download_from_kaggle

        download_from_kaggle(
            self.data_dir, url=KAGGLE_DOWNLOAD_URL, dataset=KAGGLE_DATASET, archive=ARCHIVE
        )

    # ----- processing ----------------------------------------------------------------------------
    def process(self) -> tuple[dict[str, np.ndarray], list[str]]:
        found = self.source()
        if found is None:
            raise DataError(f"no {CSV_NAME!r} in {self.data_dir}")
        where = f"{found}!{CSV_NAME}" if found.suffix == ".zip" else str(found)
        with open_csv(found) as f:
            labels, lines = count_rows(f, where, self)
        if not len(labels):
            raise DataError(f"{where} holds no rows; expected label,784 pixels per line")
        train_idx, test_idx = stratified_split(labels, self.args["test_fraction"], SPLIT_SEED)
        digits = self.digits().load_or_generate_data() if self.args["with_digits"] else None
        offset = len(DIGITS) if digits is not None else 0
        n_dtrain = len(digits.x_train) if digits is not None else 0
        n_dtest = len(digits.x_test) if digits is not None else 0
        shape = (IMAGE_SIZE, IMAGE_SIZE)
        arrays = {
            "x_trainval": np.empty((n_dtrain + len(train_idx), *shape), np.uint8),
            "y_trainval": np.empty(n_dtrain + len(train_idx), np.int64),
            "x_test": np.empty((n_dtest + len(test_idx), *shape), np.uint8),
            "y_test": np.empty(n_dtest + len(test_idx), np.int64),
        }
        if digits is not None:
            arrays["x_trainval"][:n_dtrain], arrays["y_trainval"][:n_dtrain] = (
                digits.x_train,
                digits.y_train,
            )
            arrays["x_test"][:n_dtest], arrays["y_test"][:n_dtest] = digits.x_test, digits.y_test
            del digits
        # Where each CSV row goes: (array, position), decided before any pixel is read.
        in_test = np.zeros(len(labels), bool)
        in_test[test_idx] = True
        slot = np.empty(len(labels), np.int64)
        slot[train_idx] = n_dtrain + np.arange(len(train_idx))
        slot[test_idx] = n_dtest + np.arange(len(test_idx))
        arrays["y_trainval"][n_dtrain:] = labels[train_idx] + offset
        arrays["y_test"][n_dtest:] = labels[test_idx] + offset
        with open_csv(found) as f:
            self._fill(f, where, labels, lines, in_test, slot, arrays)
        return arrays, (DIGITS if offset else []) + LETTERS

    def _fill(
        self,
        f: IO[bytes],
        where: str,
        labels: np.ndarray,
        lines: np.ndarray,
        in_test: np.ndarray,
        slot: np.ndarray,
        arrays: dict[str, np.ndarray],
    ) -> None:
        """Second pass: parse ``chunk_rows`` rows at a time into their train or test slots."""
        row = 0
        with progress.bar(len(labels), "Kaggle A-Z", unit="row") as bar:
            for chunk in read_chunks(f, where, self.chunk_rows):
                n = len(chunk)
                if row + n > len(labels):
                    raise changed(where)
                values = parse_chunk(chunk, where, lines[row : row + n])
                if not np.array_equal(values[:, 0], labels[row : row + n]):
                    raise changed(where)
                images = values[:, 1:].astype(np.uint8).reshape(n, IMAGE_SIZE, IMAGE_SIZE)
                test, pos = in_test[row : row + n], slot[row : row + n]
                arrays["x_test"][pos[test]] = images[test]
                arrays["x_trainval"][pos[~test]] = images[~test]
                row += n
                bar.update(n)
        if row != len(labels):
            raise changed(where)


def csv_member(zf: zipfile.ZipFile) -> str | None:
    """The CSV's name inside Kaggle's zip (at any depth), or None."""
    names = [n for n in zf.namelist() if n.rpartition("/")[2] == CSV_NAME]
    return min(names, key=len) if names else None


@contextmanager
def open_csv(path: Path) -> Iterator[IO[bytes]]:
    """The CSV as a binary stream: the file itself, or its member streamed out of the zip."""
    try:
        if path.suffix != ".zip":
            with open(path, "rb") as f:
                yield f
            return
        with open_zip(path, "archive") as zf:
            member = csv_member(zf)
            if member is None:
                raise DataError(f"{path} holds no {CSV_NAME!r}")
            with zf.open(member) as f:
                yield f
    except (zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path} is a damaged zip archive ({e})") from None
    except OSError as e:
        raise storage_error(e, path, "read") from None


def numbered_lines(f: IO[bytes], where: str) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, stripped line) of every non-blank line, each read in bounds."""
    number = 0
    while line := f.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            raise DataError(
                f"{where}: line {number} is over {MAX_LINE_BYTES:,} bytes; expected a label and "
                "784 pixel values (not this CSV?)"
            )
        line = line.strip()
        if line:
            yield number, line


def count_rows(f: IO[bytes], where: str, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """First pass: every row's label (checked 0-25) and line number; blank lines counted."""
    labels, lines, previous = [], [], 0
    for number, line in numbered_lines(f, where):
        if number > previous + 1:
            dataset.note_skip("blank_line", f"line {previous + 1}", number - previous - 1)
        previous = number
        head = line.split(b",", 1)[0].strip()
        if not head.isdigit() or int(head) >= len(LETTERS):
            header = " (a header? the Kaggle file has none)" if number == 1 else ""
            raise DataError(
                f"{where}: line {number}: label {head[:20].decode(errors='replace')!r} is not "
                f"0-25 (A-Z){header}"
            )
        labels.append(int(head))
        lines.append(number)
    return np.array(labels, np.int64), np.array(lines, np.int64)


def read_chunks(f: IO[bytes], where: str, size: int) -> Iterator[list[bytes]]:
    """The non-blank lines, ``size`` at a time."""
    chunk: list[bytes] = []
    for _, line in numbered_lines(f, where):
        chunk.append(line)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def parse_chunk(chunk: list[bytes], where: str, lines: np.ndarray) -> np.ndarray:
    """``(len(chunk), 785)`` int32 values; a bad row is a DataError naming its line."""
    try:
        with warnings.catch_warnings():
            # numpy parses "1.5" as the integer 1 with a DeprecationWarning: refuse it instead
            warnings.simplefilter("error", DeprecationWarning)
            values = np.loadtxt(
                io.StringIO(b"\n".join(chunk).decode("ascii")),
                delimiter=",",
                dtype=np.int32,
                ndmin=2,
            )
    except (ValueError, UnicodeDecodeError, OverflowError, DeprecationWarning):
        for line, number in zip(chunk, lines, strict=True):
            check_row(line, where, int(number))
        raise DataError(f"{where}: lines {lines[0]}-{lines[-1]} are not a numeric CSV") from None
    if values.shape[1] != VALUES_PER_ROW:
        check_row(chunk[0], where, int(lines[0]))
    bad = (values[:, 1:] < 0) | (values[:, 1:] > 255)
    if bad.any():
        first = int(np.flatnonzero(bad.any(axis=1))[0])
        check_row(chunk[first], where, int(lines[first]))
    return values


def check_row(line: bytes, where: str, number: int) -> None:
    """Raise the one-line DataError for a row that is not a label and 784 pixels 0-255."""
    fields = line.split(b",")
    if len(fields) != VALUES_PER_ROW:
        raise DataError(
            f"{where}: line {number} has {len(fields)} values, expected {VALUES_PER_ROW} "
            "(a label and 28x28 = 784 pixels)"
        )
    for column, field in enumerate(fields[1:], start=2):
        text = field.strip()
        if not text.isdigit() or int(text) > 255:
            raise DataError(
                f"{where}: line {number}, value {column}: pixel "
                f"{text[:20].decode(errors='replace')!r} is not an integer 0-255"
            )


def changed(where: str) -> DataError:
    return DataError(f"{where} changed while it was being read; run again")


if __name__ == "__main__":
    raise SystemExit(summary_main("KaggleAzDataset"))
