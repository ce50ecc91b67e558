"""The Dataset base class: a data container in the FSDL sense (not a torch Dataset).

A subclass says where its raw files come from (``metadata.toml``) and how to turn them into arrays
(``process``); the base class downloads, caches the arrays in HDF5 under a name made of the arguments
that shaped them, carves a seeded validation split out of train, and subsamples on request. The test
split is kept apart for the final evaluation only.

The cache is trusted only when it proves itself: a crc32 of the whole file (checked before HDF5
parses it), consistent arrays with labels inside the mapping, and a fingerprint of the raw files it
was built from. The arrays' declared shapes and types are checked before any is read (HDF5 serves
chunks never written as zeros, so a small file can declare gigabytes). Anything else is rebuilt
with a one-line warning. Writing it is atomic, and a full disk or read-only folder is one
``StorageError`` line (exit 2), never a half-written file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import math
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import numpy as np

from text_recognizer import paths, progress
from text_recognizer.errors import (
    DataError,
    StorageError,
    command,
    one_line,
    storage_error,
)
from text_recognizer.fileio import (
    atomic_path,
    check_output_file,
    clean_stale_temps,
    walk_files,
)

log = logging.getLogger(__name__)
# 2: synthetic line glyphs never clipped (fonts with overhangs); 3: checksummed file, raw-file
# fingerprint
CACHE_FORMAT = 3
SPLIT_KEYS = ("x_trainval", "y_trainval", "x_test", "y_test")
# The cache file: a 512-byte HDF5 user block (MAGIC, crc32 and length of the rest), then HDF5.
USERBLOCK = 512
MAGIC = b"TRCACHE1"
_HEADER = struct.Struct(">8sIQ")
# The most a filter shrinks data, bounding the bytes a cache of a given size can really hold: LZF
# (what caches are written with) ~88x, at 3 bytes per 264-byte run. Any other counts as 1x.
MAX_SHRINK = {"lzf": 100}


class Dataset:
    """Base class. Subclasses set ``name`` and implement ``process``; they may override the rest."""

    name: ClassVar[str] = ""  # folder under data/raw and data/processed
    kind: ClassVar[str] = "characters"
    # Constructor arguments that change the processed arrays (and so the cache file name).
    shaping_args: ClassVar[tuple[str, ...]] = ()
    # Files (relative to data_dir) that must exist before processing.
    required_files: ClassVar[tuple[str, ...]] = ()
    needs_download: ClassVar[bool] = True
    # Arrays cached beside the splits, e.g. ``trainval_is_validation``: one bool per trainval item
    # marking an official validation split, used instead of the seeded carve when
    # ``official_validation`` is on (IAM's Aachen lists, Kaggle's validation CSV).
    extra_keys: ClassVar[tuple[str, ...]] = ()
    official_validation: bool = False

    def __init__(
        self,
        data_dir: str | Path | None = None,
        subsample_fraction: float | None = None,
        validation_fraction: float = 0.1,
        seed: int = 0,
        **args: Any,
    ) -> None:
        self.user_data_dir = data_dir is not None
        self.data_dir = (
            Path(data_dir).expanduser().resolve() if data_dir else paths.raw_dir(self.name)
        )
        self.subsample_fraction = subsample_fraction
        self.validation_fraction = validation_fraction
        self.seed = seed
        self.args = args
        self.mapping: list[str] = []
        self.input_shape: tuple[int, ...] = ()
        self.output_shape: tuple[int, ...] = ()
        self.x_train = self.y_train = self.x_val = self.y_val = self.x_test = self.y_test = None
        # Items dropped while processing (undecodable images, labels that do not fit), by reason,
        # with a few examples each: cached with the arrays so every summary reports them.
        self.skipped: dict[str, int] = {}
        self.skipped_examples: dict[str, list[str]] = {}

    def note_skip(self, reason: str, example: str = "", count: int = 1) -> None:
        """Count ``count`` items skipped for ``reason``; keep a few examples for the summary."""
        self.skipped[reason] = self.skipped.get(reason, 0) + count
        examples = self.skipped_examples.setdefault(reason, [])
        if len(examples) < 5 and example:
            examples.append(example)

    # ----- to implement -------------------------------------------------------------------------
    def process(self) -> tuple[dict[str, np.ndarray], list[str]]:
        """Turn the raw files into ``x_trainval, y_trainval, x_test, y_test`` arrays and a mapping."""
        raise NotImplementedError

    # ----- raw data -----------------------------------------------------------------------------
    @property
    def metadata_path(self) -> Path:
        return paths.metadata_path(self.name)

    def missing_files(self) -> list[str]:
        return [f for f in self.required_files if not (self.data_dir / f).exists()]

    def prepare_raw_data(self) -> None:
        """Make sure the raw files are present: trust a user's ``data_dir``, else download."""
        if self.user_data_dir:
            missing = self.missing_files()
            if missing:
                raise DataError(
                    f"data_dir {self.data_dir} lacks {', '.join(missing)} "
                    f"(the {type(self).__name__} official layout needs: "
                    f"{', '.join(self.required_files)})"
                )
            return
        if self.needs_download and self.missing_files():
            from text_recognizer.datasets.download import ensure_downloaded

            ensure_downloaded(self.metadata_path, self.data_dir)
            missing = self.missing_files()
            if missing:
                raise DataError(
                    f"after download, {self.data_dir} still lacks {', '.join(missing)}; "
                    f"check {self.metadata_path}"
                )

    # ----- the HDF5 cache ------------------------------------------------------------------------
    def extra_sources(self) -> list[str]:
        """What besides ``data_dir`` shapes the arrays (resolved folders, a digest of font files):
        part of the cache key."""
        return []

    def cache_key(self) -> str:
        parts = [f"{k}={self.args[k]}" for k in self.shaping_args]
        sources = ([str(self.data_dir)] if self.user_data_dir else []) + self.extra_sources()
        readable = "_".join(str(self.args[k]) for k in self.shaping_args) or "default"
        if not sources:
            return readable
        digest = hashlib.sha1("|".join(parts + sources).encode()).hexdigest()[:8]
        return f"{readable}_{digest}"

    @property
    def cache_path(self) -> Path:
        return paths.processed_dir(self.name) / f"{self.name}_{self.cache_key()}.h5"

    def raw_files(self) -> list[Path]:
        """The raw files (or folders of them) the arrays are made from; see `raw_fingerprint`."""
        return [self.data_dir / f for f in self.required_files]

    def image_shape(self) -> tuple[int, ...] | None:
        """The shape every image has when the arguments fix it (``image_height`` and
        ``image_width``, or ``image_size``), or None: a cache of other images is rebuilt."""
        if "image_height" in self.args and "image_width" in self.args:
            return (int(self.args["image_height"]), int(self.args["image_width"]))
        if "image_size" in self.args:
            return (int(self.args["image_size"]),) * 2
        return None

    def raw_fingerprint(self) -> str:
        """A digest of the raw files' names, sizes and modification times, stored in the cache:
        a cache built from other raw files (rewritten, replaced) is rebuilt. '' if none exist."""
        return files_fingerprint(self.raw_files())

    def _read_cache(self, path: Path) -> tuple[dict[str, np.ndarray], list[str]] | None:
        """The cached arrays, or None (with a one-line warning) when the cache must be rebuilt.

        The file's checksum is verified before HDF5 parses a byte of it: HDF5 serves flipped
        bits as wrong pixels, and some damaged metadata makes it hang.
        """
        if path.exists() and not path.is_file():  # a folder, or a FIFO that would block open()
            what = "a folder" if path.is_dir() else "not a regular file"
            raise StorageError(
                f"cache {path} is {what}; move it out of the way (it is left as it is) and run "
                "again"
            )
        try:
            with open(path, "rb") as raw:
                problem = verify_checksum(raw)
                cached = None if problem else self._load_cache_file(raw)
        except FileNotFoundError:
            return None
        except PermissionError as e:
            raise storage_error(e, path, "read") from None
        except _Inconsistent as e:
            problem, cached = str(e), None
        except Exception as e:  # an unreadable cache is rebuilt, never a crash
            problem, cached = f"is unreadable ({type(e).__name__}: {one_line(e)[:200]})", None
        if cached is not None:
            problem = self._cache_problem(*cached)
        if problem or cached is None:
            progress.line(f"warning: cache {path} {problem}; rebuilding")
            return None
        arrays, mapping, attrs = cached
        self.skipped = attrs["skipped"]
        self.skipped_examples = attrs["skipped_examples"]
        return arrays, mapping

    def _load_cache_file(
        self, raw: BinaryIO
    ) -> tuple[dict[str, np.ndarray], list[str], dict[str, Any]]:
        """The arrays, mapping and attributes of a checksummed cache. The arrays' declared shapes
        and types are checked first (raising `_Inconsistent`): a valid file may still declare
        more than it holds, and reading it would allocate all of that."""
        import h5py

        with h5py.File(raw, "r") as f:
            if f.attrs.get("format") != CACHE_FORMAT:
                raise ValueError(f"format {f.attrs.get('format')} != {CACHE_FORMAT}")
            datasets = {k: f[k] for k in (*SPLIT_KEYS, *self.extra_keys)}
            problem = check_declared(datasets, self.extra_keys, self.image_shape()) or (
                check_size(datasets, os.fstat(raw.fileno()).st_size)
            )
            if problem:
                raise _Inconsistent(problem)
            arrays = {k: d[()] for k, d in datasets.items()}
            attrs = {
                "mapping": json.loads(f.attrs["mapping"]),
                "skipped": json.loads(f.attrs.get("skipped", "{}")),
                "skipped_examples": json.loads(f.attrs.get("skipped_examples", "{}")),
                "raw_fingerprint": str(f.attrs.get("raw_fingerprint", "")),
            }
        return arrays, attrs["mapping"], attrs

    def _cache_problem(
        self, arrays: dict[str, np.ndarray], mapping: list[str], attrs: dict[str, Any]
    ) -> str | None:
        """Why cached arrays cannot be served (raw files changed, inconsistent arrays), or None."""
        current = self.raw_fingerprint()
        if current and current != attrs["raw_fingerprint"]:
            return "was built from other raw files (they changed since)"
        if not isinstance(mapping, list) or not mapping:
            return "has no class mapping"
        return check_arrays(arrays, len(mapping), self.extra_keys)

    def _write_cache(
        self, path: Path, arrays: dict[str, np.ndarray], mapping: list[str], fingerprint: str = ""
    ) -> None:
        """Write the cache atomically; a full disk or read-only folder is one StorageError line.

        HDF5 writes through `_LatchedFile`, which never lets it see a failed write (HDF5 then
        crashed while closing), and the file is sealed with a checksum of everything HDF5 wrote.
        """
        import h5py

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            clean_stale_temps(path.parent)  # leftovers of writers killed mid-write
            with atomic_path(path) as tmp, open(tmp, "w+b", buffering=0) as raw:
                sink = _LatchedFile(raw)
                with h5py.File(sink, "w", userblock_size=USERBLOCK) as f:
                    self._fill_cache(f, arrays, mapping, fingerprint)
                if sink.error is not None:
                    raise sink.error
                seal_checksum(raw)
        except OSError as e:
            raise _cache_error(storage_error(e, path)) from None

    def _fill_cache(
        self, f: Any, arrays: dict[str, np.ndarray], mapping: list[str], fingerprint: str
    ) -> None:
        for key in (*SPLIT_KEYS, *self.extra_keys):
            a = np.asarray(arrays[key])
            # Chunks of whole images, so a per-image reader does not decode 4x4 tiles.
            chunks = (max(1, min(64, len(a))), *a.shape[1:]) if a.ndim > 1 and len(a) else None
            f.create_dataset(key, data=a, chunks=chunks, compression="lzf" if chunks else None)
        f.attrs["format"] = CACHE_FORMAT
        f.attrs["mapping"] = json.dumps(mapping)
        f.attrs["args"] = json.dumps({k: self.args.get(k) for k in self.shaping_args})
        f.attrs["skipped"] = json.dumps(self.skipped)
        f.attrs["skipped_examples"] = json.dumps(self.skipped_examples)
        f.attrs["raw_fingerprint"] = fingerprint

    # ----- loading -------------------------------------------------------------------------------
    def load_or_generate_data(self) -> Dataset:
        """Load the splits, processing the raw data into the HDF5 cache the first time."""
        before = _stat(self.cache_path)
        cached = self._read_cache(self.cache_path)
        if cached is None:
            clean_stale_temps(self.cache_path.parent)  # leftovers of killed writers, first
            try:  # refuse a read-only or full processed folder now, not after processing
                check_output_file(self.cache_path, "cache")
            except StorageError as e:
                raise _cache_error(e) from None
            with _build_lock(self.cache_path) as waited:  # runs started together build it once
                # Another process built it while this one waited (read it), or before this one
                # looked for the lock: a cache that appeared or changed since the first look.
                if waited or _stat(self.cache_path) != before:
                    cached = self._read_cache(self.cache_path)
                arrays, mapping = cached if cached is not None else self._build_cache()
        else:
            arrays, mapping = cached
        self.mapping = list(mapping)
        self._split(arrays)
        self.input_shape = tuple(int(d) for d in self.x_train.shape[1:])
        self.output_shape = self.compute_output_shape()
        return self

    def _build_cache(self) -> tuple[dict[str, np.ndarray], list[str]]:
        """Fetch the raw data, process it and write the cache: what the first load does."""
        import time

        self.prepare_raw_data()
        start = time.perf_counter()
        progress.line(f"processing {type(self).__name__} into {self.cache_path} ...")
        fingerprint = self.raw_fingerprint()  # before reading: a later change is seen
        arrays, mapping = self.process()
        self._write_cache(self.cache_path, arrays, mapping, fingerprint)
        progress.line(f"processed in {time.perf_counter() - start:.1f}s")
        return arrays, mapping

    def compute_output_shape(self) -> tuple[int, ...]:
        """(classes,) for characters; text datasets return (max_length, classes)."""
        if self.y_train is not None and self.y_train.ndim == 2:
            return (int(self.y_train.shape[1]), len(self.mapping))
        return (len(self.mapping),)

    def _split(self, arrays: dict[str, np.ndarray]) -> None:
        rng = np.random.default_rng(self.seed)
        x, y = arrays["x_trainval"], arrays["y_trainval"]
        mask = arrays.get("trainval_is_validation")
        if self.official_validation and mask is not None and mask.any():
            val_idx, train_idx = np.flatnonzero(mask), np.flatnonzero(~mask)
        else:
            order = rng.permutation(len(x))
            num_val = round(len(x) * self.validation_fraction)
            if self.validation_fraction > 0 and len(x) > 1:
                num_val = min(max(num_val, 1), len(x) - 1)
            val_idx, train_idx = np.sort(order[:num_val]), np.sort(order[num_val:])
        if self.subsample_fraction is not None:
            train_idx = _subsample(train_idx, self.subsample_fraction, rng)
            val_idx = _subsample(val_idx, self.subsample_fraction, rng)
        self.x_train, self.y_train = x[train_idx], y[train_idx]
        self.x_val, self.y_val = x[val_idx], y[val_idx]
        self.x_test, self.y_test = arrays["x_test"], arrays["y_test"]

    # ----- what a model needs ----------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The small contract between data and model: shapes, mapping and kind.

        Text datasets (kind "lines") add ``max_length``, ``blank_index`` and ``padding_index``
        (see datasets/text.py).
        """
        config = {
            "dataset": type(self).__name__,
            "kind": self.kind,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "mapping": list(self.mapping),
        }
        if self.kind == "lines":
            from text_recognizer.datasets.text import text_config

            config.update(text_config(self.mapping, int(self.output_shape[0])))
        config["preprocessing"] = self.preprocessing()
        return config

    def preprocessing(self) -> dict[str, Any]:
        """How a raw image becomes an input, for the predictors (see preprocessing.py).

        Characters are centred on a square and resized; lines are scaled to the height and
        left-aligned. Datasets that shape raw images differently (Kaggle names) override this.
        """
        height, width = (int(d) for d in self.input_shape[-2:])
        resize = "fit_height" if self.kind == "lines" else "square"
        return {"resize": resize, "height": height, "width": width}

    def summary(self) -> str:
        def shape(a: np.ndarray | None) -> str:
            return "none" if a is None else f"{len(a)} x {tuple(a.shape[1:])} {a.dtype}"

        lines = [
            f"{type(self).__name__} ({self.kind})",
            f"  data_dir:   {self.data_dir}",
            f"  cache:      {self.cache_path}",
            f"  train:      {shape(self.x_train)}",
            f"  validation: {shape(self.x_val)}",
            f"  test:       {shape(self.x_test)}",
            f"  classes:    {len(self.mapping)}: {''.join(self.mapping)[:100]}",
        ]
        if self.y_train is not None and self.y_train.ndim == 1 and len(self.y_train):
            counts = np.bincount(self.y_train, minlength=len(self.mapping))
            lines.append(f"  per class (train): min {counts.min()}, max {counts.max()}")
        if self.skipped:
            lines.append(f"  skipped:    {self.skipped}")
            for reason, examples in self.skipped_examples.items():
                if examples:
                    lines.append(f"    {reason}: e.g. {', '.join(examples)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()


@contextlib.contextmanager
def _build_lock(cache: Path) -> Iterator[bool]:
    """Hold ``<cache>.lock`` while building: a second process waits (saying so), then reads the
    cache the first one wrote. Yields whether it waited for another builder.

    An ``flock``, which the kernel drops however its holder ends. The holder removes the file
    before letting go (nothing is left beside the cache), so a waiter that then gets the lock
    checks it still holds the file at that path, else it opens the new one.
    """
    import fcntl

    lock, waited = cache.with_name(cache.name + ".lock"), False
    while True:
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise _cache_error(storage_error(e, lock)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not waited:
                progress.line(f"waiting: another process is building {cache} ...")
            waited = True
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:  # a filesystem without locks (some NFS, FUSE): build unguarded
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(lock)
            progress.line(
                f"warning: cannot lock {lock} ({e.strerror}); runs started together may each "
                "build this cache"
            )
            yield waited
            return
        try:
            same = os.fstat(fd).st_ino == os.stat(lock, follow_symlinks=False).st_ino
        except OSError:  # removed by the holder that just let go
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield waited
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


def _stat(path: Path) -> tuple[int, int, int] | None:
    """What tells one version of a file from the next (None when there is none)."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


def _cache_error(error: StorageError) -> StorageError:
    return StorageError(
        f"{error} (the processed-data cache; TEXT_RECOGNIZER_DATA_DIR moves the data folder)"
    )


def files_fingerprint(files: Iterable[Path]) -> str:
    """sha1 of (path, size, mtime_ns) of the existing files, every file under a folder included;
    '' when none exists (a cache whose raw files were removed is still served). Streamed: a
    folder's file list is never held (`walk_files`)."""
    digest, rows = hashlib.sha1(), 0
    for top in files:
        top = Path(top)
        if top.is_dir():
            found = ((top / rel, entry.stat) for rel, entry in walk_files(top))
        else:
            found = iter([(top, top.stat)])
        for path, stat in found:
            try:
                info = stat()
            except OSError:
                continue
            separator = "\n" if rows else ""  # rows joined by new lines, as they always were
            row = f"{separator}{path}|{info.st_size}|{info.st_mtime_ns}"
            digest.update(row.encode("utf-8", "surrogateescape"))  # a name that is not UTF-8 too
            rows += 1
    return digest.hexdigest() if rows else ""


class _Inconsistent(Exception):
    """A cache whose arrays are declared inconsistently: rebuilt, with the message as its reason."""


def check_arrays(
    arrays: dict[str, np.ndarray], num_classes: int, extra_keys: Iterable[str] = ()
) -> str | None:
    """Why cached split arrays are inconsistent (lengths, shapes, labels out of range), or None."""
    problem = check_declared(arrays, extra_keys)
    if problem:
        return problem
    for split in ("trainval", "test"):
        y = arrays[f"y_{split}"]
        if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            return f"has {split} labels outside 0..{num_classes - 1}"
    return None


def check_declared(
    arrays: dict[str, Any],
    extra_keys: Iterable[str] = (),
    image_shape: tuple[int, ...] | None = None,
) -> str | None:
    """Why split arrays are inconsistent by shapes and types alone (lengths, image sizes, labels
    that are not integers), or None. Takes h5py datasets too, so nothing need be read."""
    x_trainval = arrays["x_trainval"]
    for split in ("trainval", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim < 2 or x.shape[1:] != x_trainval.shape[1:]:
            return f"has {split} images of shape {x.shape}"
        if image_shape is not None and x.shape[1:] != image_shape:
            return f"has {split} images of shape {x.shape[1:]}, not {image_shape}"
        if x.dtype.kind not in "biuf":
            return f"has {split} images of type {x.dtype}"
        if y.ndim not in (1, 2):
            return f"has {split} labels of shape {y.shape}"
        if len(x) != len(y):
            return f"has {len(x)} {split} images but {len(y)} labels"
        if y.dtype.kind not in "iu":
            return f"has {split} labels of type {y.dtype}"
    for key in extra_keys:
        a = arrays[key]
        if a.ndim != 1 or a.dtype.kind not in "biu":
            return f"has {key} of shape {a.shape} and type {a.dtype}"
        if len(a) != len(x_trainval):
            return f"has {len(a)} {key} values for {len(x_trainval)} images"
    return None


def check_size(datasets: dict[str, Any], file_size: int) -> str | None:
    """Why h5py ``datasets`` declare more bytes than a ``file_size``-byte file can hold, or None:
    chunks never written read as zeros, so a small valid file could make the reader allocate
    gigabytes. Each dataset counts at most `MAX_SHRINK` of its filter smaller (1x if none)."""
    declared = least = 0
    for d in datasets.values():
        size = math.prod(d.shape) * d.dtype.itemsize
        declared += size
        least += size // MAX_SHRINK.get(d.compression, 1)
    if least > file_size:
        return f"declares {declared:,} bytes of arrays, more than its {file_size:,} bytes can hold"
    return None


def verify_checksum(raw: BinaryIO) -> str | None:
    """Why the cache file open in ``raw`` fails its checksum, or None; leaves it at offset 0."""
    header = raw.read(USERBLOCK)
    if len(header) < USERBLOCK:
        return "is truncated"
    magic, crc, length = _HEADER.unpack_from(header)
    if magic != MAGIC:
        return "has no checksum (an older cache format, or not a cache)"
    if os.fstat(raw.fileno()).st_size != USERBLOCK + length:
        return "has the wrong length (truncated or appended to)"
    found = 0
    while block := raw.read(1 << 22):
        found = zlib.crc32(block, found)
    raw.seek(0)
    return None if found == crc else "fails its checksum (damaged on disk)"


def seal_checksum(raw: BinaryIO) -> None:
    """Write the user block header (MAGIC, crc32, length) of the cache HDF5 just wrote in ``raw``."""
    raw.flush()
    raw.seek(USERBLOCK)
    crc = length = 0
    while block := raw.read(1 << 22):
        crc, length = zlib.crc32(block, crc), length + len(block)
    raw.seek(0)
    raw.write(_HEADER.pack(MAGIC, crc, length))
    raw.flush()


class _LatchedFile(io.RawIOBase):
    """A file HDF5 writes through: the first failed write is kept in ``error`` and the rest of
    the writes are dropped, so HDF5 closes cleanly and the caller raises the real OSError."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self.raw = raw
        self.error: OSError | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)  # unbuffered: a seek never writes

    def tell(self) -> int:
        return self.raw.tell()

    def readinto(self, buffer: Any) -> int:
        return self.raw.readinto(buffer)  # type: ignore[attr-defined]

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        done = 0
        if self.error is None:
            try:
                while done < len(view):  # an unbuffered write may be short near a full disk
                    written = self.raw.write(view[done:])
                    if not written:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    done += written
            except OSError as e:
                self.error = e
        self.raw.seek(len(view) - done, os.SEEK_CUR)
        return len(view)

    def truncate(self, size: int | None = None) -> int:
        if self.error is None:
            try:
                return self.raw.truncate(size)
            except OSError as e:
                self.error = e
        return self.raw.tell() if size is None else size

    def flush(self) -> None:
        if self.error is None:
            try:
                self.raw.flush()
            except OSError as e:
                self.error = e


def _subsample(idx: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    keep = max(1, round(len(idx) * fraction)) if len(idx) else 0
    return np.sort(rng.choice(idx, size=keep, replace=False)) if keep < len(idx) else idx


@command
def summary_main(dataset_name: str, argv: list[str] | None = None) -> int:
    """``python -m text_recognizer.datasets.<module> ['{json dataset_args}']``: load and summarise."""
    import argparse

    from text_recognizer.datasets import DATASETS
    from text_recognizer.errors import UserError, print_error
    from text_recognizer.spec import validate_args

    parser = argparse.ArgumentParser(description=f"Load {dataset_name} and print a summary.")
    parser.add_argument("dataset_args", nargs="?", default="{}", help="JSON object of dataset_args")
    ns = parser.parse_args(argv)
    entry = DATASETS[dataset_name]
    try:
        try:
            raw = json.loads(ns.dataset_args)
        except json.JSONDecodeError as e:
            raise DataError(f"dataset_args is not valid JSON: {e.msg} at char {e.pos}") from None
        args = validate_args(raw, entry.args, "dataset_args")
        dataset = entry.load()(**args).load_or_generate_data()
    except UserError as e:
        return print_error(e)
    print(dataset.summary())
    return 0
