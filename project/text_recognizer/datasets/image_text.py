"""Bring your own handwriting: line images and their transcripts from a folder (``data_dir``).

Three layouts the field uses, detected (``format: auto``) or named (``csv``, ``sidecar``,
``pylaia``); see `image_text_layouts` for how each is read:

- ``csv``: a ``.csv``/``.tsv`` of ``filename,text`` rows, with a header or not (Kaggle's
  ``written_name_*_v2.csv`` with ``FILENAME,IDENTITY`` is one); a filename is a path under the
  folder or, when unique, a bare file name found anywhere in it;
- ``sidecar`` (kraken, OCR-D): ``x.png`` next to ``x.gt.txt``;
- ``pylaia``: ``gt.txt`` of ``id transcript`` lines (id = image stem), images anywhere in the folder.

Splits: ``train.txt``, ``validation.txt`` (or ``val.txt``) and ``test.txt`` in the folder (or
``train_list``/``validation_list``/``test_list``), one id or file name a line; else ``test_fraction``
of the usable items is held out as test with ``split_seed`` (fixed, so every run seed is tested on
the same items) and validation is the usual ``validation_fraction``/``seed`` carve.

Characters: ``charset`` if given, else those of the training transcripts (saved with the model in
the mapping). Items are skipped, counted and shown in the summary (``note_skip``) when their image
is missing or unreadable, their transcript empty, too long for ``max_length`` or outside the
charset, or an image has no transcript. Images of any size and mode go through
``preprocess_image`` as the other line datasets do (``fit_height``, or ``keep_aspect``), recorded
in ``preprocessing`` so predict and serve read new images the same way.

Images are decoded on ``workers`` processes (0: all cores; 1: in this process), in chunks written
straight into the preallocated array: the same arrays bit for bit whatever ``workers`` is, so it is
no part of the cache key.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from text_recognizer import progress
from text_recognizer.datasets.base import Dataset, summary_main
from text_recognizer.datasets.image_text_layouts import (
    FORMATS,
    decode_images,
    detect_format,
    read_items,
    read_split_list,
)
from text_recognizer.datasets.item_store import ItemStore
from text_recognizer.datasets.text import encode_into, make_mapping
from text_recognizer.errors import ConfigError, DataError

SPLITS = ("train", "validation", "test")
# Split lists looked for in the folder when no *_list argument names one.
SPLIT_FILE_NAMES = {
    "train": ("train.txt",),
    "validation": ("validation.txt", "val.txt"),
    "test": ("test.txt",),
}
WARNED_SKIPS = (
    "unreadable_image",
    "transcript_without_image",
    "image_without_transcript",
    "ambiguous_image_name",
    "listed_but_not_found",
)
SPLIT_SEED = 2020  # as KaggleNamesDataset's: the same items are held out as test by default


class ImageTextDataset(Dataset):
    """Line images of a user's folder as ``(image_height, image_width)`` uint8 and
    ``(N, max_length)`` labels over ``[<blank>, <pad>, *charset]``."""

    name = "image_text"
    kind = "lines"
    shaping_args: ClassVar[tuple[str, ...]] = (
        "image_height",
        "image_width",
        "keep_aspect",
        "max_length",
        "format",
        "test_fraction",
        "split_seed",
    )
    extra_keys: ClassVar[tuple[str, ...]] = ("trainval_is_validation",)
    needs_download = False

    def __init__(
        self,
        data_dir: str | None = None,
        format: str = "auto",
        image_height: int = 64,
        image_width: int = 1024,
        keep_aspect: bool = False,
        max_length: int = 128,
        charset: str | None = None,
        test_fraction: float = 0.1,
        split_seed: int = SPLIT_SEED,
        labels_file: str | None = None,
        train_list: str | None = None,
        validation_list: str | None = None,
        test_list: str | None = None,
        workers: int = 0,
        **common: Any,
    ) -> None:
        if format not in FORMATS:
            raise ConfigError(f"format must be one of {FORMATS}; got {format!r}")
        if not 0.0 < float(test_fraction) < 1.0:
            raise ConfigError(f"test_fraction must be > 0 and < 1; got {test_fraction}")
        if charset is not None and not charset:
            raise ConfigError("charset is empty; leave it out to take the training characters")
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
            raise ConfigError(f"workers must be 0 (all cores) or more; got {workers!r}")
        super().__init__(
            data_dir=data_dir,
            image_height=int(image_height),
            image_width=int(image_width),
            keep_aspect=bool(keep_aspect),
            max_length=int(max_length),
            format=format,
            test_fraction=float(test_fraction),
            split_seed=int(split_seed),
            **common,
        )
        self.charset = charset
        self.workers = int(
            workers
        )  # not in args: it does not change the arrays (nor the cache key)
        self.listed: set[str] = set()  # the splits that have a list, once processed
        self.labels_file = self._resolve(labels_file)
        self.lists = {
            s: self._resolve(v)
            for s, v in zip(SPLITS, (train_list, validation_list, test_list), strict=True)
        }

    def _resolve(self, value: str | None) -> Path | None:
        """A path argument: relative to ``data_dir`` unless absolute."""
        return None if value is None else (self.data_dir / Path(value).expanduser()).resolve()

    # ----- what shapes the cache --------------------------------------------------------------------
    def extra_sources(self) -> list[str]:
        """The arguments that are no part of the readable cache name (free text, paths)."""
        named = {"labels": self.labels_file, **self.lists}
        return [f"charset={self.charset!r}", *(f"{k}={v}" for k, v in named.items())]

    def raw_files(self) -> list[Path]:
        """The whole folder (every image and transcript) and any list or labels file outside it:
        their names, sizes and times are stored with the cache, so an edit rebuilds it."""
        outside = [self.labels_file, *self.lists.values()]
        return [self.data_dir, *(p for p in outside if p is not None)]

    def missing_files(self) -> list[str]:
        return [] if self.data_dir.is_dir() else [str(self.data_dir)]

    def prepare_raw_data(self) -> None:
        """A user's folder, never downloaded: say which one is missing."""
        if not self.data_dir.is_dir():
            raise DataError(f"data_dir {self.data_dir} is not a folder")

    def preprocessing(self) -> dict[str, Any]:
        """How images were shaped (preprocessing.py), so predict and serve do the same."""
        resize = "keep_aspect" if self.args["keep_aspect"] else "fit_height"
        return {
            "resize": resize,
            "height": self.args["image_height"],
            "width": self.args["image_width"],
        }

    def layout(self) -> tuple[str, Path | None]:
        """(format, transcript file or None for sidecars) as read."""
        return detect_format(self.data_dir, self.args["format"], self.labels_file)

    def summary(self) -> str:
        try:
            fmt, where = self.layout()
        except DataError as e:  # the folder changed since the cache was built
            return f"{super().summary()}\n  format:     unknown now ({e})"
        if where is not None and where.is_relative_to(self.data_dir):
            where = where.relative_to(self.data_dir)
        return f"{super().summary()}\n  format:     {fmt}{f' ({where})' if where else ''}"

    # ----- processing ---------------------------------------------------------------------------------
    def process(self) -> tuple[dict[str, np.ndarray], list[str]]:
        """Pair, filter, decode, split and encode. The folder's names and transcripts wait on disk
        (`item_store.ItemStore`, beside the cache) while the images are decoded: what the build
        holds besides the cache's arrays does not grow with the number of images."""
        fmt, where = self.layout()
        with ItemStore(self.cache_path.parent, f"{self.cache_path.name}.items") as store:
            read_items(self.data_dir, fmt, where, self.note_skip, store)
            self._split_lists(store)
            store.keep(self._usable(store))
            images, readable = self._decode(store)
            codes = self._assign(store, readable)
            return self._assemble(store, images, readable, codes)

    def _usable(self, store: ItemStore) -> Iterator[int]:
        """The items that go on to decoding; the rest are counted skips."""
        for seq, rel, text, split in store.items():
            if split is None and "train" in self.listed:  # a train list says what trains
                self.note_skip("not_in_split_lists", rel)
            elif not text:
                self.note_skip("empty_transcript", rel)
            elif len(text) > self.args["max_length"]:
                self.note_skip("longer_than_max_length", f"{rel} ({len(text)})")
            elif self.charset is not None and set(text) - set(self.charset):
                self.note_skip("outside_charset", f"{rel}: {text[:40]!r}")
            else:
                yield seq

    def _split_lists(self, store: ItemStore) -> None:
        """Give the items named in the split lists their split (`listed`: which lists exist)."""
        found: dict[str, Path] = {}
        for split in SPLITS:
            path = self.lists[split]
            if path is None:
                path = next(
                    (
                        self.data_dir / n
                        for n in SPLIT_FILE_NAMES[split]
                        if (self.data_dir / n).is_file()
                    ),
                    None,
                )
            if path is not None:
                found[split] = path
        self.listed = set(found)
        for split, path in found.items():
            for line_no, entry in read_split_list(path):
                seq = store.item_named(entry)
                if seq is None:
                    self.note_skip("listed_but_not_found", f"{path.name}:{line_no}: {entry[:60]}")
                elif (already := store.set_split(seq, split)) != split:
                    raise DataError(
                        f"{path}: line {line_no}: {entry!r} is also in the {already} list; "
                        "an item belongs to one split"
                    )

    def _decode(self, store: ItemStore) -> tuple[np.ndarray, np.ndarray]:
        """Every kept item's image through ``preprocess_image`` on ``workers`` processes: (the
        array of one row per kept item, which rows are readable). An unreadable image is a counted
        skip, noted in the items' order."""
        spec = self.preprocessing()
        paths = store.kept_paths()
        images = np.zeros((len(paths), spec["height"], spec["width"]), dtype=np.uint8)
        readable = np.zeros(len(paths), dtype=bool)
        with progress.bar(len(paths), "image_text", unit="img") as bar:

            def on_chunk(start: int, statuses: list[str | None]) -> None:
                bar.update(len(statuses))
                for i, status in enumerate(statuses, start):
                    if status is None:
                        readable[i] = True
                    else:
                        self.note_skip("unreadable_image", f"{paths[i]} ({status})")

            decode_images(paths, spec, images, self.workers, on_chunk, str(self.data_dir))
        self._warn_skips()
        return images, readable

    def _warn_skips(self) -> None:
        """One warning line per kind of broken pairing (as KaggleNamesDataset's): a typo in a file
        name or a damaged image is seen while processing, not only in the summary."""
        for reason in WARNED_SKIPS:
            count = self.skipped.get(reason, 0)
            if count:
                examples = ", ".join(self.skipped_examples.get(reason, [])[:3])
                progress.line(
                    f"warning: {self.data_dir}: {count} item(s) skipped, {reason} (e.g. {examples})"
                )

    @staticmethod
    def _readable(store: ItemStore, readable: np.ndarray) -> Iterator[tuple[str, str, str | None]]:
        """(image path, text, listed split) of the kept items whose image was read, in order."""
        return (row for row, ok in zip(store.kept(), readable.tolist(), strict=True) if ok)

    def _assign(self, store: ItemStore, readable: np.ndarray) -> np.ndarray:
        """Each readable item's split, as an index into SPLITS: from the lists, the rest by the
        seeded test carve."""
        codes = np.fromiter(
            (SPLITS.index(split or "train") for _, _, split in self._readable(store, readable)),
            dtype=np.int8,
            count=int(readable.sum()),
        )
        if "test" in self.listed:
            return codes
        pool = np.flatnonzero(codes == 0)
        if len(pool) < 2:
            raise DataError(
                f"{self.data_dir} has {len(pool)} usable item(s); need 2+ to hold out a test set"
            )
        order = np.random.default_rng(self.args["split_seed"]).permutation(len(pool))
        num_test = min(max(1, round(len(pool) * self.args["test_fraction"])), len(pool) - 1)
        codes[pool[order[:num_test]]] = 2
        return codes

    def _assemble(
        self, store: ItemStore, images: np.ndarray, readable: np.ndarray, codes: np.ndarray
    ) -> tuple[dict[str, np.ndarray], list[str]]:
        """Mapping from the training transcripts (or ``charset``); others outside it skipped.
        The i-th readable item is row ``flatnonzero(readable)[i]`` of ``images``; images and
        labels are gathered into split order in place (each becomes its ``*_trainval`` array,
        `split_off` moving the test rows out): no second copy of either."""
        if not (codes == 0).any():
            raise DataError(
                f"{self.data_dir} has no usable training item (skipped: {self.skipped})"
            )
        if self.charset is not None:
            chars: str | list[str] = self.charset
        else:
            seen: set[str] = set()
            for (_, text, _), code in zip(
                self._readable(store, readable), codes.tolist(), strict=True
            ):
                if code == 0:
                    seen.update(text)
            chars = sorted(seen)
        mapping = make_mapping(chars)
        known = set(chars)
        encodable = np.ones(len(codes), dtype=bool)
        for i, ((rel, text, _), code) in enumerate(
            zip(self._readable(store, readable), codes.tolist(), strict=True)
        ):
            if set(text) - known:
                encodable[i] = False
                self.note_skip(f"outside_training_charset_{SPLITS[code]}", f"{rel}: {text[:40]!r}")
        picks = [np.flatnonzero((codes == s) & encodable) for s in range(len(SPLITS))]
        order = np.concatenate(picks)  # train, validation, test: readable items' indices
        # Labels in the items' order (one pass), then put in split order as the images are: the
        # same in-place gather and split-off for both arrays.
        labels = np.empty((len(order), self.args["max_length"]), dtype=np.int64)
        rows = zip(self._readable(store, readable), encodable.tolist(), strict=True)
        encode_into(labels, (text for (_, text, _), ok in rows if ok), mapping)
        gather_rows(labels, (np.cumsum(encodable) - 1)[order])
        gather_rows(images, np.flatnonzero(readable)[order])
        num_train, num_val, num_test = (len(p) for p in picks)
        x_test = split_off(images, num_train + num_val, num_test)
        y_test = split_off(labels, num_train + num_val, num_test)
        arrays = {
            "x_trainval": images,
            "y_trainval": labels,
            "trainval_is_validation": np.r_[np.zeros(num_train, bool), np.ones(num_val, bool)],
            "x_test": x_test,
            "y_test": y_test,
        }
        return arrays, mapping

    def load_or_generate_data(self) -> ImageTextDataset:
        """As the base, validating on a listed validation split when the folder has one."""
        if not self.user_data_dir:  # checked here, so the registry can build it without one
            raise ConfigError(
                "ImageTextDataset needs data_dir: the folder of line images and transcripts"
            )
        self.official_validation = True  # used only when the cached mask marks a listed split
        super().load_or_generate_data()
        return self


def gather_rows(a: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``a[order]`` (``order``: distinct row indices) computed in place, one row at a time: the
    first ``len(order)`` rows of ``a`` (a view); the rest are left as they happen to be."""
    n = len(order)
    read = np.zeros(len(a), dtype=bool)
    read[order] = True
    done = np.zeros(n, dtype=bool)
    # Chains that end at a row no one writes (>= n): from their head, a row no one reads.
    for head in np.flatnonzero(~read[:n]).tolist():
        j = head
        while True:
            k = int(order[j])
            a[j] = a[k]
            done[j] = True
            if k >= n:
                break
            j = k
    # The rest are cycles: one row set aside closes each.
    for start in np.flatnonzero(~done).tolist():
        if done[start]:
            continue
        saved = a[start].copy()
        j = start
        while True:
            k = int(order[j])
            done[j] = True
            if k == start:
                a[j] = saved
                break
            a[j] = a[k]
            j = k
    return a[:n]


def split_off(a: np.ndarray, keep: int, count: int, step_bytes: int = 4 << 20) -> np.ndarray:
    """Rows ``keep:keep + count`` of ``a`` as a new array, ``a`` shrunk in place to its first
    ``keep`` rows (``a`` owns its data and nothing views it): moved a block at a time from the end,
    so memory never holds both copies."""
    shape = a.shape[1:]
    out = np.empty((count, *shape), dtype=a.dtype)
    end = keep + count
    a.resize((end, *shape), refcheck=False)  # the rows after these (unreadable images) go
    step = max(1, step_bytes // max(1, a[0].nbytes if len(a) else 1))
    while end > keep:
        start = max(keep, end - step)
        out[start - keep : end - keep] = a[start:end]
        end = start
        a.resize((end, *shape), refcheck=False)
    return out


if __name__ == "__main__":
    raise SystemExit(summary_main("ImageTextDataset"))
