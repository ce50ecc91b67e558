"""Handwritten names from Kaggle's "Handwriting Recognition" set (landlord/handwriting-recognition).

The set: ``written_name_{train,validation,test}_v2.csv`` (columns ``FILENAME,IDENTITY``) and the
images, nested as Kaggle ships them (``train_v2/train/TRAIN_00001.jpg``) or flat
(``validation_v2/VALIDATION_0001.jpg``, as in ``../shared/data/kaggle_handwriting_names``); both
are read, from a folder or straight from the zip (never extracted). ``data_dir`` may hold the
files, or the zip; without it they go to ``data/raw/kaggle_names/``, downloaded through Kaggle's
API with the user's credentials (``KAGGLE_USERNAME``/``KAGGLE_KEY``, or ``kaggle.json`` in
``$KAGGLE_CONFIG_DIR`` or ``~/.kaggle/``), streamed to a ``.part`` file and renamed once complete.

Cleaning, as users of this set expect, each reason counted in ``skipped`` with examples:

- labels are upper-cased, stripped and their inner whitespace collapsed;
- dropped: empty or missing labels (pandas reads them as NaN), ``NULL``, ``UNREADABLE`` and
  ``EMPTY`` (a marker, not a name: the shared copy has 6 such rows whose images do hold a name);
- ``ALPHABET`` is A-Z, space, ``-`` and ``'``: every character of the three CSVs once upper-cased
  (checked on the 82,740 rows of the shared validation and test CSVs). Labels with any other
  character are reported and skipped, never silently altered;
- labels longer than ``max_length`` are skipped;
- rows whose image is missing or cannot be decoded are skipped and named in one warning line;
- rows with an empty FILENAME are skipped (``empty_filename``); a row repeated is used once
  (``duplicate_row``); an image given different labels is dropped (``conflicting_labels``), as
  which label is right is unknown and its copies could land in both train and test;
- a damaged CSV (an unterminated quote, on any line, the last included; text after a closing
  quote; a field over 128 KB) is a one-line ``DataError`` naming the line.

All decoding happens while building the cache, so nothing can fail later inside a DataLoader.

Images: grayscale, inverted to white ink on black (like EMNIST and the other line datasets).
By default placed top-left on a black ``image_height x image_width`` (64 x 256) canvas, larger ones
cropped (right and bottom), as the popular Kaggle notebooks do; the names are written at the left
of their box. With ``keep_aspect`` each image is instead scaled to fit the canvas whole, keeping
its aspect ratio.

Splits: official train (+ official validation as validation) and test when the train CSV is there.
A copy without it (the shared one has 1,500 validation + 64 test images) is used with
``split_from_available``: every usable labelled image of every CSV is pooled and that fraction is
held out as test with a fixed seed (``SPLIT_SEED``); validation is then carved from the rest.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from text_recognizer import progress
from text_recognizer.datasets.base import Dataset, summary_main
from text_recognizer.datasets.files import FileTree, read_image_bytes
from text_recognizer.datasets.text import encode_many, make_mapping
from text_recognizer.errors import ConfigError, DataError
from text_recognizer.fileio import read_small_text

SPLITS = ("train", "validation", "test")
CSV_NAME = "written_name_{split}_v2.csv"
CSV_RE = re.compile(r"(^|/)written_name_(train|validation|test)_v2\.csv$")
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ -'"
DROPPED_LABELS = {
    "": "empty_label",
    "NAN": "empty_label",
    "NULL": "null_label",
    "UNREADABLE": "unreadable_label",
    "EMPTY": "empty_marker_label",
}
# Read limits (a zip member can inflate to anything): the official train CSV is 10 MB, images 30 KB.
MAX_CSV_BYTES = 256 << 20
MAX_IMAGE_BYTES = 16 << 20
MAX_KAGGLE_JSON_BYTES = 64 << 10  # ~/.kaggle/kaggle.json: a user name and a key, about 100 bytes
SPLIT_SEED = 2020  # fixed: split_from_available holds out the same images in every run
KAGGLE_DATASET = "landlord/handwriting-recognition"
KAGGLE_DOWNLOAD_URL = f"https://www.kaggle.com/api/v1/datasets/download/{KAGGLE_DATASET}"
ARCHIVE = "handwriting-recognition.zip"


def image_folders(split: str) -> tuple[str, str]:
    """Where a split's images may be: Kaggle's nested layout first, then the flat one."""
    return f"{split}_v2/{split}", f"{split}_v2"


def clean_label(raw: str | None) -> tuple[str, str | None]:
    """(cleaned label, None) or (label, reason it is dropped)."""
    label = " ".join((raw or "").upper().split())
    if label in DROPPED_LABELS:
        return label, DROPPED_LABELS[label]
    if set(label) - set(ALPHABET):
        return label, "outside_alphabet"
    return label, None


def read_csv_rows(data: bytes, where: str) -> list[tuple[str, str]]:
    """(FILENAME, IDENTITY) rows of a Kaggle names CSV (CRLF or LF, optional BOM).

    Rows with an empty FILENAME are kept (as "") for the caller to count. Damaged quoting is a
    DataError naming the line, never a label: a quote left open swallows the rows after it, or,
    on the last line, would quietly end at the end of the file (``strict`` refuses that, and a
    closing quote with more text after it); so is a field over the csv module's limit.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{where} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[str, str]] = []
    line = 0  # the last line of the rows read so far
    try:
        header = next(reader, None)
        if not header or "FILENAME" not in header or "IDENTITY" not in header:
            raise DataError(f"{where} lacks the FILENAME,IDENTITY header (got {header!r:.60})")
        fi, li = header.index("FILENAME"), header.index("IDENTITY")
        line = reader.line_num
        for row in reader:
            if any("\n" in field or "\r" in field for field in row):
                raise damaged_row(where, line + 1, reader.line_num)
            line = reader.line_num
            if row:  # a blank line is no row
                rows.append((row[fi] if fi < len(row) else "", row[li] if li < len(row) else ""))
    except csv.Error as e:
        raise damaged_row(where, line + 1, reader.line_num, e) from None
    return rows


def damaged_row(where: str, start: int, end: int, error: csv.Error | None = None) -> DataError:
    """The one-line error for a row from line ``start`` to ``end`` that is no FILENAME,IDENTITY
    pair: a row spanning lines, or one ended by the end of the file inside quotes, is an
    unterminated quote (said so, as the csv module's wording does not); anything else is quoted."""
    if end > start or error is None:
        what = f"a quoted field runs over lines {start}-{end} (an unterminated quote?)"
    elif "unexpected end of data" in str(error):
        what = "a quoted field runs to the end of the file (an unterminated quote?)"
    else:
        return DataError(
            f"{where}: line {start}: not a readable CSV row ({error}); each row is "
            "FILENAME,IDENTITY with a short name"
        )
    return DataError(f"{where}: line {start}: {what}; each row is FILENAME,IDENTITY on one line")


def fit_name(image: Any, height: int, width: int, keep_aspect: bool) -> np.ndarray:
    """Dark-on-light PIL image -> ``(height, width)`` uint8 white ink on black, top-left.

    The predictors call the same ``preprocess_image`` with ``config()["preprocessing"]``.
    """
    from text_recognizer.preprocessing import preprocess_image

    resize = "keep_aspect" if keep_aspect else "crop"
    spec = {"resize": resize, "height": height, "width": width}
    return preprocess_image(image, spec, polarity="dark")


# ----- finding and fetching the files --------------------------------------------------------------


def find_source(folder: Path) -> FileTree | None:
    """A tree rooted where the CSVs are: the folder itself, or a zip in it (at any depth inside)."""
    if not folder.is_dir():
        return None
    if any((folder / CSV_NAME.format(split=s)).is_file() for s in SPLITS):
        return FileTree(folder)
    for archive in sorted(folder.glob("*.zip")):
        tree = FileTree(archive)
        csvs = [n for n in tree.all_files() if CSV_RE.search(n)]
        if csvs:
            return tree.sub(csvs[0].rpartition("/")[0])
        tree.close()
    return None


def kaggle_credentials() -> tuple[tuple[str, str] | None, str]:
    """((username, key) or None, where they were looked for) — the key is never printed."""
    user, key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    if user and key:
        return (user, key), "KAGGLE_USERNAME/KAGGLE_KEY"
    config = Path(os.environ.get("KAGGLE_CONFIG_DIR") or "~/.kaggle").expanduser() / "kaggle.json"
    if not config.exists():
        return None, str(config)
    # Read bounded and without blocking: a FIFO, folder or device there is a one-line error.
    text = read_small_text(config, MAX_KAGGLE_JSON_BYTES, "Kaggle API token", DataError)
    try:
        data = json.loads(text)
        return (str(data["username"]), str(data["key"])), str(config)
    except (ValueError, KeyError, TypeError, RecursionError):
        raise DataError(
            f"{config} is not a Kaggle API token (expected JSON with username and key); "
            "download a new one from kaggle.com > Settings > API > Create New Token"
        ) from None


def download_from_kaggle(
    dest_dir: Path,
    url: str | None = None,
    dataset: str = KAGGLE_DATASET,
    archive: str = ARCHIVE,
) -> Path:
    """Stream a dataset zip from Kaggle's API into ``dest_dir`` (``.part``, renamed when whole).

    ``dataset`` and ``archive`` name another Kaggle set (KaggleAzDataset shares this code)."""
    import requests

    url = url or KAGGLE_DOWNLOAD_URL
    credentials, where = kaggle_credentials()
    place = f"or download {dataset} yourself and place the zip or its files in {dest_dir} (or pass data_dir)"
    if credentials is None:
        raise DataError(
            f"no Kaggle credentials: put kaggle.json (kaggle.com > Settings > API > Create New "
            f"Token) at {where} or set KAGGLE_USERNAME and KAGGLE_KEY; {place}"
        )
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / archive
    part = target.with_name(target.name + ".part")
    try:
        with requests.get(url, auth=credentials, stream=True, timeout=(10, 60)) as response:
            if response.status_code in (401, 403):
                raise DataError(
                    f"Kaggle refused {url} (HTTP {response.status_code}): check the credentials "
                    f"from {where} and accept the dataset's rules on kaggle.com; {place}"
                )
            if response.status_code != 200:
                raise DataError(f"Kaggle answered HTTP {response.status_code} for {url}; {place}")
            if "text/html" in response.headers.get("Content-Type", ""):
                raise DataError(
                    f"{url} sent a web page instead of the zip (a login page?); {place}"
                )
            total = int(response.headers.get("Content-Length") or 0) or None
            with (
                open(part, "wb") as f,
                progress.bar(total, "Kaggle download", unit="B", unit_scale=True) as bar,
            ):
                for chunk in response.iter_content(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
    except requests.RequestException as e:
        raise DataError(f"cannot download {url} ({type(e).__name__}); {place}") from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise DataError(f"download of {url} stopped at {size} of {total} bytes; run again")
    if not zipfile.is_zipfile(part):
        part.unlink()
        raise DataError(f"{url} did not send a zip archive ({size} bytes); {place}")
    part.replace(target)
    return target


# ----- the dataset ----------------------------------------------------------------------------------


class KaggleNamesDataset(Dataset):
    """Kaggle names as ``(image_height, image_width)`` uint8 and ``(N, max_length)`` labels."""

    name = "kaggle_names"
    kind = "lines"
    shaping_args: ClassVar[tuple[str, ...]] = (
        "image_height",
        "image_width",
        "keep_aspect",
        "max_length",
        "split_from_available",
    )
    extra_keys: ClassVar[tuple[str, ...]] = ("trainval_is_validation",)
    needs_download = False

    def __init__(
        self,
        image_height: int = 64,
        image_width: int = 256,
        keep_aspect: bool = False,
        max_length: int = 64,
        split_from_available: float | None = None,
        **common: Any,
    ) -> None:
        if split_from_available is not None and not 0.0 < float(split_from_available) < 1.0:
            raise ConfigError(
                f"split_from_available must be > 0 and < 1; got {split_from_available}"
            )
        super().__init__(
            image_height=int(image_height),
            image_width=int(image_width),
            keep_aspect=bool(keep_aspect),
            max_length=int(max_length),
            split_from_available=None
            if split_from_available is None
            else float(split_from_available),
            **common,
        )
        self.official_validation = split_from_available is None

    def preprocessing(self) -> dict[str, Any]:
        """How ``fit_name`` shaped the images, for the predictors (see preprocessing.py)."""
        resize = "keep_aspect" if self.args["keep_aspect"] else "crop"
        h, w = self.args["image_height"], self.args["image_width"]
        return {"resize": resize, "height": h, "width": w}

    def missing_files(self) -> list[str]:
        return [] if find_source(self.data_dir) else [CSV_NAME.format(split="<split>")]

    def raw_files(self) -> list[Path]:
        """The CSVs and image folders, or the zip(s) holding them: they key the cache."""
        d = self.data_dir
        if any((d / CSV_NAME.format(split=s)).is_file() for s in SPLITS):
            return [d / CSV_NAME.format(split=s) for s in SPLITS] + [d / f"{s}_v2" for s in SPLITS]
        return sorted(d.glob("*.zip")) if d.is_dir() else []

    def prepare_raw_data(self) -> None:
        """A user's folder must hold the set; the default folder is filled from Kaggle."""
        if find_source(self.data_dir) is not None:
            return
        if self.user_data_dir:
            raise DataError(
                f"data_dir {self.data_dir} holds no written_name_<split>_v2.csv (nor a zip with "
                "them); KaggleNamesDataset needs the CSVs beside <split>_v2/<split>/ or "
                "<split>_v2/ image folders, or Kaggle's handwriting-recognition zip"
            )
        download_from_kaggle(self.data_dir)

    # ----- processing ----------------------------------------------------------------------------
    def process(self) -> tuple[dict[str, np.ndarray], list[str]]:
        tree = find_source(self.data_dir)
        if tree is None:
            raise DataError(f"no Kaggle names CSV in {self.data_dir}")
        try:
            rows = self._unique({s: self._rows(tree, s) for s in SPLITS})
            mapping = make_mapping(ALPHABET)
            decoded = {s: self._decode(tree, s, r) for s, r in rows.items() if r is not None}
        finally:
            tree.close()
        self._warn_skips(tree)
        length = self.args["max_length"]
        parts = {s: (x, encode_many(labels, mapping, length)) for s, (x, labels) in decoded.items()}
        return self._assemble(parts, tree), mapping

    def _rows(self, tree: FileTree, split: str) -> list[tuple[str, str, str]] | None:
        """Usable (folder, file, label) rows of one split's CSV; None if the CSV is absent."""
        name = CSV_NAME.format(split=split)
        if not tree.exists(name):
            return None
        try:
            data = tree.read_bytes(name, MAX_CSV_BYTES)
        except OSError as e:
            raise DataError(f"cannot read {tree.where(name)}: {e}") from None
        folder = next(
            (f for f in image_folders(split) if tree.list_dir(f)), image_folders(split)[1]
        )
        present = tree.list_dir(folder)
        usable = []
        for filename, identity in read_csv_rows(data, tree.where(name)):
            if not filename.strip():
                self.note_skip("empty_filename", f"{name}: {identity[:40]!r}")
                continue
            if filename not in present:
                self.note_skip("missing_image", f"{folder}/{filename}")
                continue
            label, reason = clean_label(identity)
            if reason is None and len(label) > self.args["max_length"]:
                reason = "longer_than_max_length"
            if reason is not None:
                self.note_skip(reason, f"{filename}: {identity!r}")
                continue
            usable.append((folder, filename, label))
        return usable

    def _unique(
        self, rows: dict[str, list[tuple[str, str, str]] | None]
    ) -> dict[str, list[tuple[str, str, str]] | None]:
        """Each image once: a repeated row is dropped; an image given different labels is dropped
        everywhere (which label is right is unknown, and its copies could land in train and test).
        """
        labels: dict[tuple[str, str], set[str]] = {}
        for usable in rows.values():
            for folder, filename, label in usable or []:
                labels.setdefault((folder, filename), set()).add(label)
        seen: set[tuple[str, str]] = set()
        out: dict[str, list[tuple[str, str, str]] | None] = {}
        for split, usable in rows.items():
            if usable is None:
                out[split] = None
                continue
            out[split] = []
            for folder, filename, label in usable:
                key = (folder, filename)
                if len(labels[key]) > 1:
                    self.note_skip("conflicting_labels", f"{filename}: {sorted(labels[key])}")
                elif key in seen:
                    self.note_skip("duplicate_row", filename)
                else:
                    seen.add(key)
                    out[split].append((folder, filename, label))
        return out

    def _decode(
        self, tree: FileTree, split: str, rows: list[tuple[str, str, str]]
    ) -> tuple[np.ndarray, list[str]]:
        h, w, keep = self.args["image_height"], self.args["image_width"], self.args["keep_aspect"]
        images = np.zeros((len(rows), h, w), dtype=np.uint8)
        labels: list[str] = []
        with progress.bar(len(rows), f"Kaggle names {split}", unit="img") as bar:
            for folder, filename, label in rows:
                bar.update(1)
                try:
                    image = read_image_bytes(
                        tree.read_bytes(f"{folder}/{filename}", MAX_IMAGE_BYTES)
                    )
                    images[len(labels)] = fit_name(image, h, w, keep)
                except Exception as e:  # undecodable, truncated or unreadable: a counted skip
                    self.note_skip("undecodable_image", f"{folder}/{filename} ({type(e).__name__})")
                    continue
                labels.append(label)
        return images[: len(labels)], labels

    def _warn_skips(self, tree: FileTree) -> None:
        for reason in (
            "missing_image",
            "undecodable_image",
            "conflicting_labels",
            "empty_filename",
        ):
            count = self.skipped.get(reason, 0)
            if count:
                examples = ", ".join(self.skipped_examples.get(reason, [])[:3])
                progress.line(
                    f"warning: Kaggle names: {count} row(s) skipped, {reason} in {tree.where()} "
                    f"(e.g. {examples})"
                )

    def _assemble(
        self, parts: dict[str, tuple[np.ndarray, np.ndarray]], tree: FileTree
    ) -> dict[str, np.ndarray]:
        h, w, length = self.args["image_height"], self.args["image_width"], self.args["max_length"]
        empty = (np.zeros((0, h, w), np.uint8), np.zeros((0, length), np.int64))
        fraction = self.args["split_from_available"]
        if fraction is not None:
            x = np.concatenate([parts.get(s, empty)[0] for s in SPLITS])
            y = np.concatenate([parts.get(s, empty)[1] for s in SPLITS])
            if len(x) < 2:
                raise DataError(f"{tree.where()} has {len(x)} usable labelled image(s); need 2+")
            order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
            num_test = min(max(1, round(len(x) * fraction)), len(x) - 1)
            test, rest = np.sort(order[:num_test]), np.sort(order[num_test:])
            return {
                "x_trainval": x[rest],
                "y_trainval": y[rest],
                "trainval_is_validation": np.zeros(len(rest), bool),
                "x_test": x[test],
                "y_test": y[test],
            }
        for split in ("train", "test"):
            if split not in parts:
                raise DataError(
                    f"{tree.where()} has no {CSV_NAME.format(split=split)}; to use the images "
                    "that are there, set split_from_available (e.g. 0.2 holds out 20% as test)"
                )
        x_train, y_train = parts["train"]
        x_val, y_val = parts.get("validation", empty)
        return {
            "x_trainval": np.concatenate([x_train, x_val]),
            "y_trainval": np.concatenate([y_train, y_val]),
            "trainval_is_validation": np.r_[
                np.zeros(len(x_train), bool), np.ones(len(x_val), bool)
            ],
            "x_test": parts["test"][0],
            "y_test": parts["test"][1],
        }


if __name__ == "__main__":
    raise SystemExit(summary_main("KaggleNamesDataset"))
