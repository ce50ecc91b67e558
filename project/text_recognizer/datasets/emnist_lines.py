"""Synthetic handwritten lines: real character images (EMNIST or MNIST) laid out along real text.

FSDL's ``EmnistLinesDataset``, rebuilt to be fast and leak-free:

- **Text.** For letters, phrases of the Brown corpus (NLTK's ``brown.zip``, read from its tagged
  text members; the ``categories.pickle`` member is never unpickled). ``/tag`` suffixes are
  stripped, the text is minimally detokenised, tokens holding characters the character set cannot
  draw are dropped (a phrase never spans such a gap), and the case is folded where the set has only
  one case (EMNIST ``letters``, merged classes of ``bymerge``/``balanced``). A line is a run of
  whole words of at most ``max_length`` characters starting at a random word. For digit-only
  character sets (``MnistDataset``, EMNIST ``digits``/``mnist``) the lines are random digit groups
  separated by single spaces, of random total length 1..``max_length``.
- **Images.** Each character gets its own randomly drawn glyph image (FSDL reused one glyph per
  distinct character of a line). Glyphs are 28x28 and placed every ``28 - int(overlap * 28)``
  pixels, ``overlap`` drawn per line from [``min_overlap``, ``max_overlap``]; a space is an empty
  glyph; overlapping ink takes the maximum (white ink on black, like EMNIST). Lines are
  ``28 x (28 * max_length)`` (896 pixels wide for the default 32; FSDL used 34 -> 952), so the
  longest line fits without overlap, left-aligned.
- **No leak.** Train lines are drawn only from the character dataset's train split (train +
  validation), test lines only from its test split. Lines are generated with a fixed seed
  (``GENERATION_SEED``; the run's ``seed`` only moves the validation carve), train and test from
  independent streams, so changing ``num_train`` never changes the test lines.
- **Fast.** :func:`place_glyphs` places a chunk of lines' glyphs with one numpy fancy assignment
  per phase (no per-character or per-pixel Python loop), into an output allocated by
  :func:`zeroed_pages`; 11-14x FSDL's per-character loop, see ``bench/bench_lines.py``.

Arguments are flat (the config spec has no nested dicts): ``char_source`` picks the character
dataset, ``char_data_dir`` is passed as its ``data_dir``, ``emnist_split`` as EmnistDataset's
``split`` and ``mnist_test_set_only`` as MnistDataset's ``test_set_only`` (needed for the shared
MNIST copy, which only has the 10k test images). ``corpus_dir`` is a folder holding ``brown.zip``
(``data_dir`` means the same here, the corpus being this dataset's only raw file); without either
the corpus is downloaded once to ``data/raw/brown/`` from its metadata.toml.

This module also holds the pieces the other line datasets share: the composer, the Brown reader
and phrase sampler, a file tree over folders or zip archives, and a cache mixin that keeps skip
counts (and extra arrays such as an official validation mask) with the cached splits.
"""

from __future__ import annotations

import hashlib
import io
import json
import mmap
import os
import re
import sys
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from text_recognizer import paths, progress
from text_recognizer.datasets import LINE_CHAR_SOURCES
from text_recognizer.datasets.base import (
    CACHE_FORMAT,
    SPLIT_KEYS,
    Dataset,
    _subsample,
    summary_main,
)
from text_recognizer.datasets.text import PADDING_INDEX, encode_many, make_mapping
from text_recognizer.errors import ConfigError, DataError
from text_recognizer.fileio import atomic_path

GENERATION_SEED = 20190302  # fixed: the lines never depend on the run's `seed`
GLYPH_SIZE = 28
CORPUS_NAME = "brown"  # data/raw/brown/ holds brown.zip and its metadata.toml (shared by datasets)
CORPUS_FILE = "brown.zip"
CHAR_SOURCES = LINE_CHAR_SOURCES
DIGIT_SPACE_PROB = 0.15  # digit lines: chance that a position (not first/last) is a space


# =================================================================================================
# Shared by the line datasets
# =================================================================================================


class LinesCacheMixin:
    """Keeps ``skipped`` counts, their examples and ``extra_keys`` arrays in the HDF5 cache.

    Line datasets drop bad items while processing (undecodable images, labels that do not fit);
    the counts must survive a cache hit, or the summary would stop reporting them. An array
    ``trainval_is_validation`` (bool, one per trainval item), when present, is an official
    validation split used instead of the seeded carve (``official_validation``).
    """

    extra_keys: ClassVar[tuple[str, ...]] = ()
    official_validation: bool = False
    skipped_examples: dict[str, list[str]]

    def note_skip(self, reason: str, example: str, count: int = 1) -> None:
        """Count ``count`` items skipped for ``reason``; keep a few examples for the summary."""
        self.skipped[reason] = self.skipped.get(reason, 0) + count  # type: ignore[attr-defined]
        examples = self.__dict__.setdefault("skipped_examples", {}).setdefault(reason, [])
        if len(examples) < 5 and example:
            examples.append(example)

    def extra_sources(self) -> list[str]:
        """Resolved folders besides ``data_dir`` whose content shapes the arrays (cache key)."""
        return []

    def cache_key(self) -> str:
        key = super().cache_key()  # type: ignore[misc]
        sources = self.extra_sources()
        if not sources:
            return key
        return f"{key}_{hashlib.sha1('|'.join(sources).encode()).hexdigest()[:8]}"

    def _write_cache(self, path: Path, arrays: dict[str, np.ndarray], mapping: list[str]) -> None:
        import h5py

        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            for key in (*SPLIT_KEYS, *self.extra_keys):
                a = np.asarray(arrays[key])
                f.create_dataset(key, data=a, compression="lzf" if a.ndim > 1 else None)
            f.attrs["format"] = CACHE_FORMAT
            f.attrs["mapping"] = json.dumps(mapping)
            f.attrs["args"] = json.dumps({k: self.args.get(k) for k in self.shaping_args})  # type: ignore[attr-defined]
            f.attrs["skipped"] = json.dumps(self.skipped)  # type: ignore[attr-defined]
            f.attrs["skipped_examples"] = json.dumps(self.__dict__.get("skipped_examples", {}))

    def _read_cache(self, path: Path) -> tuple[dict[str, np.ndarray], list[str]] | None:
        import h5py

        cached = super()._read_cache(path)  # type: ignore[misc]
        if cached is None:
            return None
        arrays, mapping = cached
        try:
            with h5py.File(path, "r") as f:
                extras = {k: f[k][()] for k in self.extra_keys}
                skipped = json.loads(f.attrs["skipped"])
                examples = json.loads(f.attrs["skipped_examples"])
        except Exception as e:  # an old or foreign cache lacking the extras is rebuilt
            print(f"cache {path} lacks {e}; rebuilding", file=sys.stderr)
            path.unlink(missing_ok=True)
            return None
        arrays.update(extras)
        self.skipped = skipped  # type: ignore[attr-defined]
        self.skipped_examples = examples
        return arrays, mapping

    def _split(self, arrays: dict[str, np.ndarray]) -> None:
        mask = arrays.get("trainval_is_validation")
        if not self.official_validation or mask is None or not mask.any():
            super()._split(arrays)  # type: ignore[misc]
            return
        rng = np.random.default_rng(self.seed)  # type: ignore[attr-defined]
        x, y = arrays["x_trainval"], arrays["y_trainval"]
        val_idx, train_idx = np.flatnonzero(mask), np.flatnonzero(~mask)
        fraction = self.subsample_fraction  # type: ignore[attr-defined]
        if fraction is not None:
            train_idx = _subsample(train_idx, fraction, rng)
            val_idx = _subsample(val_idx, fraction, rng)
        self.x_train, self.y_train = x[train_idx], y[train_idx]
        self.x_val, self.y_val = x[val_idx], y[val_idx]
        self.x_test, self.y_test = arrays["x_test"], arrays["y_test"]

    def summary(self) -> str:
        text = super().summary()  # type: ignore[misc]
        examples = self.__dict__.get("skipped_examples") or {}
        lines = [f"    {reason}: e.g. {', '.join(ex)}" for reason, ex in examples.items() if ex]
        return "\n".join([text, *lines]) if lines else text


def resolve_dir(value: str | Path | None) -> Path | None:
    """An absolute folder path, or None when not given."""
    return Path(value).expanduser().resolve() if value else None


class FileTree:
    """Files under a folder or inside a zip archive, by '/'-separated path relative to a root.

    Archives are read in place, never extracted: the Kaggle names zip is 1.3 GB and a copy would
    double the disk used. ``where()`` names a file for error messages (``archive.zip!member``).
    """

    def __init__(self, path: Path, prefix: str = "", zf: zipfile.ZipFile | None = None) -> None:
        self.path = Path(path)
        self.prefix = prefix
        self._zip = zf
        if zf is None and self.path.is_file():
            self._zip = open_zip(self.path, "archive")
        self._dirs: dict[str, set[str]] | None = None

    @property
    def is_zip(self) -> bool:
        return self._zip is not None

    def sub(self, prefix: str) -> FileTree:
        """The same tree rooted at ``prefix`` (a folder inside it)."""
        prefix = prefix.strip("/")
        if not prefix:
            return self
        if self._zip is None:
            return FileTree(self.path / prefix)
        tree = FileTree(self.path, f"{self.prefix}{prefix}/", self._zip)
        tree._dirs = self._dirs
        return tree

    def _index(self) -> dict[str, set[str]]:
        if self._dirs is None:
            dirs: dict[str, set[str]] = {}
            for name in self._zip.namelist():  # type: ignore[union-attr]
                if not name.endswith("/"):
                    folder, _, base = name.rpartition("/")
                    dirs.setdefault(folder, set()).add(base)
            self._dirs = dirs
        return self._dirs

    def all_files(self) -> list[str]:
        """Every file's path relative to the root (zip: from the index; folder: a walk)."""
        if self._zip is None:
            return [
                p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()
            ]
        out = []
        for folder, names in self._index().items():
            full = f"{folder}/" if folder else ""
            if full.startswith(self.prefix):
                out.extend(full[len(self.prefix) :] + n for n in names)
        return out

    def list_dir(self, rel: str) -> set[str]:
        """Names of the files directly in folder ``rel`` (empty if it does not exist)."""
        rel = rel.strip("/")
        if self._zip is None:
            folder = self.path / rel
            if not folder.is_dir():
                return set()
            return {e.name for e in os.scandir(folder) if e.is_file()}
        return set(self._index().get(f"{self.prefix}{rel}".strip("/"), set()))

    def exists(self, rel: str) -> bool:
        if self._zip is None:
            return (self.path / rel).is_file()
        folder, _, base = rel.rpartition("/")
        return base in self.list_dir(folder)

    def read_bytes(self, rel: str) -> bytes:
        if self._zip is None:
            return (self.path / rel).read_bytes()
        try:
            return self._zip.read(self.prefix + rel)
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise OSError(f"damaged archive member ({e})") from None

    def where(self, rel: str = "") -> str:
        if self._zip is None:
            return str(self.path / rel) if rel else str(self.path)
        return f"{self.path}!{self.prefix}{rel}"

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def open_zip(path: Path, what: str) -> zipfile.ZipFile:
    """Open a zip archive or raise a one-line DataError naming the file and what it is instead."""
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        with open(path, "rb") as f:
            head = f.read(64)
        page = ", an HTML page" if head.lstrip()[:1] == b"<" else ""
        raise DataError(
            f"{what} {path} is not a zip archive (it starts with {head[:8]!r}{page}); "
            "delete it and place the original file"
        ) from None
    except OSError as e:
        raise DataError(f"cannot read {what} {path}: {e}") from None


def read_image_bytes(data: bytes) -> Any:
    """A PIL image from bytes, fully decoded now (so a truncated file fails here, not later)."""
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    img.load()
    return img


# ----- the composer ---------------------------------------------------------------------------------

MMAP_BYTES = 32 << 20  # outputs from this size on are mapped from the kernel, in huge pages
CHUNK_LINES = 32  # lines composed together: their rows and glyphs stay in a core's L2 cache


def zeroed_pages(shape: tuple[int, ...]) -> np.ndarray:
    """A zero-filled uint8 array, allocated so that first-touch page faults cost little.

    ``np.zeros`` of a large array gets fresh 4 KB pages from the kernel, each zeroed by a fault
    when first written: 9-12 us per 28 x 896 line on the 2-core benchmark machine, more than
    composing the line. Blocks below glibc's largest mmap threshold (32 MiB) come from ``malloc``,
    which hands back freed memory without faults, so ``np.empty`` + ``fill`` costs a memset
    (numpy advises fresh blocks of 4 MiB or more for huge pages). Larger blocks always come fresh
    from the kernel: private anonymous memory advised for transparent huge pages is zeroed 2 MB
    per fault, about 3x cheaper (shared anonymous memory would not get huge pages).
    """
    size = int(np.prod(shape))
    if size < MMAP_BYTES or not hasattr(mmap, "MADV_HUGEPAGE") or not hasattr(mmap, "MAP_PRIVATE"):
        out = np.empty(shape, dtype=np.uint8)
        out.fill(0)
        return out
    buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    buffer.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(buffer, dtype=np.uint8).reshape(shape)


def column_bank(glyphs: np.ndarray) -> np.ndarray:
    """Glyphs ``(G, H, Wg)`` as column-major ``(G + 1, Wg, H)`` plus an empty last glyph (id -1).

    One glyph column is then H contiguous bytes: the layout :func:`compose_lines` scatters for
    lines with glyphs past the edges (pass it with ``column_major`` to prepare a large glyph set
    once for those; other lines are composed from row-major glyphs).
    """
    glyphs = np.asarray(glyphs, dtype=np.uint8)
    bank = np.zeros((len(glyphs) + 1, glyphs.shape[2], glyphs.shape[1]), dtype=np.uint8)
    bank[:-1] = glyphs.transpose(0, 2, 1)
    return bank


def compose_lines(
    glyphs: np.ndarray,
    glyph_ids: np.ndarray,
    x: np.ndarray,
    width: int,
    column_major: bool = False,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Lines ``(N, H, width)`` uint8: glyph ``glyph_ids[n, i]`` with its left edge at ``x[n, i]``.

    ``glyphs`` is ``(G, H, Wg)`` uint8, ink bright on black (or the ``(G + 1, Wg, H)`` of
    :func:`column_bank` with ``column_major``); ``glyph_ids`` ``(N, L)`` with -1 for "nothing
    here" (spaces, padding); ``x`` ``(N, L)`` integer columns, non-decreasing along each row, may
    be negative or run past ``width`` (the glyph is clipped). Overlapping ink takes the maximum.
    ``out``: a zero-filled ``(N, H, width)`` array to fill.

    Lines whose glyphs all lie inside the width go to :func:`place_glyphs` (row-major, in place);
    lines with a glyph past an edge are scattered column by column into a wider column-major
    canvas and cropped. No Python loop runs per character or pixel.
    """
    xs = np.asarray(x, dtype=np.int64)
    ids = np.asarray(glyph_ids, dtype=np.int64)
    if xs.shape != ids.shape or xs.ndim != 2:
        raise ValueError(f"glyph_ids {ids.shape} and x {xs.shape} must be the same (N, L) shape")
    if (np.diff(xs, axis=1) < 0).any():
        raise ValueError("x must be non-decreasing along each line")
    glyphs = np.asarray(glyphs, dtype=np.uint8)
    if column_major:
        _, wg, h = glyphs.shape
    else:
        _, h, wg = glyphs.shape
    if out is None:
        out = zeroed_pages((len(ids), h, width))
    valid = ids >= 0
    if not valid.any():
        return out
    inside = ((xs >= 0) & (xs + wg <= width)) | ~valid
    placed = inside.all(axis=1)
    line, slot = np.nonzero(valid & placed[:, None])
    if len(line):
        gid = ids[line, slot]
        if column_major:  # row-major copies of the glyphs in use only
            used, gid = np.unique(gid, return_inverse=True)
            row_major = np.ascontiguousarray(glyphs[used].transpose(0, 2, 1))
        else:
            row_major = np.ascontiguousarray(glyphs)
        target = out if out.flags.c_contiguous else np.zeros(out.shape, dtype=np.uint8)
        place_glyphs(row_major, line, gid.reshape(-1), xs[line, slot], target)
        if target is not out:
            out[placed] = target[placed]
    rows = np.flatnonzero(~placed)
    if len(rows):
        if column_major:
            bank = glyphs.reshape(len(glyphs), wg * h)
            sub = np.where(valid[rows], ids[rows], len(glyphs) - 1)
        else:  # column-major copies of only the glyphs in use (the source may be all of EMNIST)
            sub_valid = valid[rows]
            used, inverse = np.unique(ids[rows][sub_valid], return_inverse=True)
            bank = column_bank(glyphs[used]).reshape(len(used) + 1, wg * h)
            sub = np.full(sub_valid.shape, len(used), dtype=np.int64)
            sub[sub_valid] = inverse.reshape(-1)
        out[rows] = _compose_scattered(bank, sub, valid[rows], xs[rows], width, wg, h)
    return out


def place_glyphs(
    glyphs: np.ndarray,
    line: np.ndarray,
    gid: np.ndarray,
    x: np.ndarray,
    out: np.ndarray,
    phase: np.ndarray | None = None,
) -> None:
    """Glyph ``gid[j]`` of row-major ``glyphs`` into line ``line[j]`` of ``out`` at column ``x[j]``.

    ``gid`` >= 0, ``line`` non-decreasing (and ``x`` along each line), every glyph inside the width,
    ``out`` C-contiguous and zero-filled. Overlapping ink takes the maximum. ``phase`` (default
    :func:`glyph_phases`): small integers such that glyphs of one phase never overlap within a
    line.

    Why it is fast: ``out`` is viewed as ``spots``, one entry per byte offset holding the ``H``
    rows (``Wg``-byte records, ``width`` apart) of a glyph whose top-left corner is there. One
    numpy fancy assignment ``spots[offsets] = glyphs`` then places a whole chunk's glyphs: one
    index per glyph, a memmove per row, no per-pixel work (bytes moved one by one, or a
    column-major canvas needing a byte transpose per line, cost 3-5x more). Phase 0 is copied
    into place; later phases read back the rows under their glyphs, take the maximum with the
    glyphs and write them back. Lines go in order, ``CHUNK_LINES`` at a time, so a chunk's
    glyphs and output rows stay in cache between its phases.
    """
    n_out, h, width = out.shape
    glyphs = np.ascontiguousarray(glyphs, dtype=np.uint8)
    wg = glyphs.shape[2]
    size = h * wg
    line, gid, x = (np.asarray(v, dtype=np.int64) for v in (line, gid, x))
    m = len(line)
    if m == 0:
        return
    if phase is None:
        phase = glyph_phases(line, x, wg, n_out)
    phases = int(phase.max()) + 1
    record = np.dtype((np.void, wg))  # one glyph row
    bank = glyphs.reshape(len(glyphs), size).view(np.dtype((np.void, size)))[:, 0]
    # ``spots[p]``: the h records of a glyph whose top-left pixel is byte ``p`` of ``out``.
    spots = np.ndarray(
        (out.size - (h - 1) * width - wg + 1, h), dtype=record, buffer=out, strides=(1, width)
    )
    # Glyphs ordered by chunk, then phase: one gather per chunk, one slice per phase.
    chunk = line // CHUNK_LINES
    if phases > 1:
        key = chunk * phases + phase
        small = (int(chunk[-1]) + 1) * phases <= 1 << 16  # radix sort on 16-bit keys
        order = np.argsort(key.astype(np.uint16) if small else key, kind="stable")
        key, gid, at = key[order], gid[order], line[order] * (h * width) + x[order]
        bounds = np.searchsorted(key, np.arange(chunk[-1] * phases + phases + 1)).tolist()
    else:
        at = line * (h * width) + x
        bounds = np.searchsorted(chunk, np.arange(chunk[-1] + 2)).tolist()
    for c in range(int(chunk[-1]) + 1):
        i, j = bounds[c * phases], bounds[(c + 1) * phases]
        if i == j:
            continue
        pixels = bank.take(gid[i:j])
        for k in range(phases):
            a, b = bounds[c * phases + k], bounds[c * phases + k + 1]
            if a == b:
                continue
            glyph = pixels[a - i : b - i]
            if k == 0:  # glyphs j, j + K... never overlap: copied into place
                spots[at[a:b]] = glyph.view(record).reshape(b - a, h)
            else:  # the records under the glyphs, maxed with them, written back
                under = spots[at[a:b]]
                merged = under.view(np.uint8)
                np.maximum(merged, glyph.view(np.uint8).reshape(b - a, size), out=merged)
                spots[at[a:b]] = under


def glyph_phases(line: np.ndarray, x: np.ndarray, wg: int, n_lines: int) -> np.ndarray:
    """Phase ``j mod K`` of the ``j``-th glyph of a line, ``K`` the most glyphs it stacks on a column.

    ``line``/``x`` sorted by line then column. Glyphs ``j`` and ``j + d`` of a line overlap when
    ``x[j + d] < x[j] + wg``; those ``K`` or more apart never do.
    """
    m = len(line)
    depth = np.ones(n_lines, dtype=np.int64)
    for d in range(1, m):
        over = (line[d:] == line[:-d]) & (x[d:] < x[:-d] + wg)
        if not over.any():
            break
        depth[line[d:][over]] = d + 1
    if depth.max() == 1:
        return np.zeros(m, dtype=np.int64)
    counts = np.bincount(line, minlength=n_lines)
    ordinal = np.arange(m) - np.repeat(np.cumsum(counts) - counts, counts)
    return ordinal % depth[line]


def _compose_scattered(
    bank: np.ndarray,
    ids: np.ndarray,
    valid: np.ndarray,
    xs: np.ndarray,
    width: int,
    wg: int,
    h: int,
) -> np.ndarray:
    """Any layout: per phase, one scatter of glyph columns (H-byte records) by index."""
    n = len(ids)
    out = np.zeros((n, h, width), dtype=np.uint8)
    rec = np.dtype((np.void, h))
    records = bank.reshape(-1, wg, h).view(rec).reshape(-1)
    lo = min(int(xs.min()), 0)
    xs = xs - lo  # canvas column of each glyph; the output starts at canvas column -lo
    phases = stacked_glyphs(xs, valid, wg)
    phase = (np.cumsum(valid, axis=1) - 1) % phases  # k-th glyph of a line -> phase k mod K
    canvas_w = max(int(xs.max()) + wg, width - lo)
    chunk = max(8, (1 << 20) // (canvas_w * h))
    cols = np.arange(wg, dtype=np.int64)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        rows = stop - start
        canvas = np.zeros((rows, canvas_w, h), dtype=np.uint8)
        layer = np.zeros_like(canvas) if phases > 1 else canvas
        where = xs[start:stop] + (np.arange(rows, dtype=np.int64) * canvas_w)[:, None]
        for k in range(phases):
            keep = valid[start:stop] & (phase[start:stop] == k)
            dst = where[keep][:, None] + cols
            src = (ids[start:stop][keep] * wg)[:, None] + cols
            if k > 1:
                layer.fill(0)
            (canvas if k == 0 else layer).view(rec).reshape(-1)[dst] = records[src]
            if k > 0:
                np.maximum(canvas, layer, out=canvas)
        out[start:stop] = canvas[:, -lo : -lo + width].transpose(0, 2, 1)
    return out


def stacked_glyphs(xs: np.ndarray, valid: np.ndarray, glyph_width: int) -> int:
    """The most glyphs of width ``glyph_width`` covering one column, counting ``valid`` ones only.

    The valid glyphs of each row are moved left (order kept, so their columns stay sorted); glyph
    ``i`` and ``i + d`` overlap when ``x[i + d] < x[i] + width``.
    """
    order = np.argsort(~valid, axis=1, kind="stable")
    x_valid = np.take_along_axis(xs, order, axis=1)
    v_valid = np.take_along_axis(valid, order, axis=1)
    k = 1
    for d in range(1, xs.shape[1]):
        if ((x_valid[:, d:] < x_valid[:, :-d] + glyph_width) & v_valid[:, d:]).any():
            k = d + 1
        else:
            break
    return k


def sample_glyph_ids(
    char_classes: np.ndarray, glyph_class: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """A random glyph of the right class for every character (-1 stays -1), independently drawn.

    Draws ``rng.random(char_classes.shape)`` (one uniform per position, used or not).
    """
    char_classes = np.asarray(char_classes, dtype=np.int64)
    uniform = rng.random(char_classes.shape)
    valid = char_classes >= 0
    ids = np.full(char_classes.shape, -1, dtype=np.int64)
    ids[valid] = pick_glyphs(char_classes[valid], glyph_class, uniform[valid])
    return ids


def pick_glyphs(classes: np.ndarray, glyph_class: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """Glyph ``j`` of class ``classes[i]`` with ``j = floor(uniform[i] * count)`` in label order."""
    glyph_class = np.asarray(glyph_class)
    keys = glyph_class
    if len(keys) and keys.min() >= 0 and keys.max() < 1 << 16:  # radix sort; same stable order
        keys = keys.astype(np.uint8 if keys.max() < 1 << 8 else np.uint16)
    order = np.argsort(keys, kind="stable")
    counts = np.bincount(glyph_class, minlength=int(classes.max(initial=0)) + 1)
    starts = np.cumsum(counts) - counts
    available = counts[classes]
    if (available == 0).any():
        raise ValueError("a character has no glyph image")
    pick = starts[classes] + (uniform * available).astype(np.int64)
    return order[np.minimum(pick, len(order) - 1)]


# ----- text ----------------------------------------------------------------------------------------

_BROWN_TEXT = re.compile(r"(^|/)c[a-r]\d\d$")


def read_brown_sentences(path: Path) -> list[str]:
    """Detokenised sentences of NLTK's ``brown.zip``, from its tagged text members only.

    Each member holds sentences of ``word/tag`` tokens, one per line. The zip also carries
    ``categories.pickle``; it is never touched (unpickling is code execution).
    """
    zf = open_zip(path, "corpus file")
    sentences: list[str] = []
    with zf:
        members = sorted(n for n in zf.namelist() if _BROWN_TEXT.search(n))
        if not members:
            raise DataError(
                f"corpus file {path} has no Brown text members (brown/ca01 .. brown/cr09); "
                "is it NLTK's brown.zip?"
            )
        for name in members:
            try:
                raw = zf.read(name).decode("utf-8", errors="replace")
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
                raise DataError(f"corpus file {path}: member {name} is damaged ({e})") from None
            for line in raw.splitlines():
                tokens = line.split()
                if tokens:
                    sentences.append(detokenize(t.rsplit("/", 1)[0] for t in tokens))
    return sentences


_NO_SPACE_BEFORE = re.compile(r" ([.,;:!?%)\]}]|''|n't\b)")
_NO_SPACE_AFTER = re.compile(r"(``|[(\[{$]) ")


def detokenize(words: Iterable[str]) -> str:
    """Join tokens the way text is written: no space before ``, . ; : ! ? )``, quotes as ``"``."""
    text = " ".join(words)
    text = _NO_SPACE_AFTER.sub(r"\1", _NO_SPACE_BEFORE.sub(r"\1", text))
    return text.replace("``", '"').replace("''", '"')


def fold_case(text: str, charset: str) -> str:
    """Map characters the set lacks to their other case when the set has that one."""
    table = {}
    for ch in set(text):
        if ch in charset:
            continue
        for alt in (ch.upper(), ch.lower()):
            if len(alt) == 1 and alt in charset:
                table[ord(ch)] = alt
                break
    return text.translate(table) if table else text


class PhraseSampler:
    """Random runs of whole words from a corpus, restricted to a character set (vectorised).

    The sentences become one string of segments separated by newlines: tokens holding characters
    outside ``charset`` (after stripping leading/trailing punctuation the set lacks, and case
    folding) end a segment, and so does a word longer than ``max_length``. A phrase starts at a
    uniformly drawn word and ends at a uniformly drawn later word of the same segment, so that it
    is at most ``max_length`` characters long.
    """

    def __init__(self, sentences: list[str], charset: str, max_length: int) -> None:
        allowed = set(charset) | {" "}
        text = fold_case("\n".join(sentences), charset)
        bad = "".join(sorted({c for c in set(text) if c not in allowed and c != "\n"}))
        if bad:
            cls = "[" + re.escape(bad) + "]"
            text = re.sub(rf"{cls}+(?=[ \n]|$)", "\n", text)  # trailing punctuation
            text = re.sub(rf"(?:(?<=[ \n])|^){cls}+", "\n", text)  # leading punctuation
            text = re.sub(
                rf"(?<![^ \n])[^ \n]*{cls}[^ \n]*", "\n", text
            )  # tokens still holding any
        text = re.sub(r" *\n[ \n]*", "\n", text)
        self.text = re.sub(r" {2,}", " ", text)
        codes = np.frombuffer(self.text.encode("utf-32-le"), dtype=np.uint32)  # index = str index
        sep = (codes == ord(" ")) | (codes == ord("\n"))
        starts = np.flatnonzero(~sep & np.r_[True, sep[:-1]])
        ends = np.flatnonzero(~sep & np.r_[sep[1:], True]) + 1
        if len(starts) == 0:
            raise DataError(f"the corpus has no words made only of {charset!r}")
        breaks = np.flatnonzero(codes == ord("\n"))
        long = (ends - starts) > max_length
        segment = np.searchsorted(breaks, starts) + np.cumsum(long)
        keep = ~long
        self.starts, self.ends, segment = starts[keep], ends[keep], segment[keep]
        self.segment_last = np.searchsorted(segment, segment, side="right") - 1
        self.max_length = max_length

    def sample(self, count: int, rng: np.random.Generator) -> list[str]:
        first = rng.integers(0, len(self.starts), size=count)
        limit = self.starts[first] + self.max_length
        last = np.searchsorted(self.ends, limit, side="right") - 1
        last = np.maximum(np.minimum(last, self.segment_last[first]), first)
        end = first + (rng.random(count) * (last - first + 1)).astype(np.int64)
        a, b = self.starts[first].tolist(), self.ends[end].tolist()
        return [self.text[i:j] for i, j in zip(a, b, strict=True)]


def digit_strings(count: int, max_length: int, rng: np.random.Generator) -> list[str]:
    """Digit groups separated by single spaces, total length uniform in 1..max_length."""
    lengths = rng.integers(1, max_length + 1, size=count)
    chars = rng.integers(0, 10, size=(count, max_length)).astype(np.uint8) + ord("0")
    space = rng.random((count, max_length)) < DIGIT_SPACE_PROB
    space[:, 0] = False
    space[np.arange(count), lengths - 1] = False
    for i in range(1, max_length):  # no two spaces in a row (loop over positions, not lines)
        space[:, i] &= ~space[:, i - 1]
    chars[space] = ord(" ")
    rows = chars.view(f"S{max_length}").reshape(count)
    return [r[:n].decode() for r, n in zip(rows.tolist(), lengths.tolist(), strict=True)]


def corpus_path(corpus_dir: Path | None) -> Path:
    """``brown.zip`` in a user folder, or under data/raw/brown/ (downloaded there on demand)."""
    return (corpus_dir or paths.raw_dir(CORPUS_NAME)) / CORPUS_FILE


def ensure_corpus(corpus_dir: Path | None) -> Path:
    """The corpus path, downloading it (per data/raw/brown/metadata.toml) when no folder is given."""
    path = corpus_path(corpus_dir)
    if path.is_file():
        return path
    if corpus_dir is not None:
        raise DataError(
            f"corpus folder {corpus_dir} has no {CORPUS_FILE}; place NLTK's {CORPUS_FILE} there "
            f"(e.g. from ../shared/data/corpus) or leave corpus_dir unset to download it"
        )
    from text_recognizer.datasets.download import ensure_downloaded

    ensure_downloaded(paths.raw_dir(CORPUS_NAME) / "metadata.toml", paths.raw_dir(CORPUS_NAME))
    if not path.is_file():
        raise DataError(f"after download, {path} is still missing; check its metadata.toml")
    return path


# =================================================================================================
# The dataset
# =================================================================================================


class EmnistLinesDataset(LinesCacheMixin, Dataset):
    """Lines of real character images along real text; see the module docstring."""

    name = "emnist_lines"
    kind = "lines"
    shaping_args: ClassVar[tuple[str, ...]] = (
        "char_source",
        "emnist_split",
        "mnist_test_set_only",
        "max_length",
        "min_overlap",
        "max_overlap",
        "num_train",
        "num_test",
    )
    needs_download = False  # the corpus and the characters are fetched in prepare_raw_data

    def __init__(
        self,
        max_length: int = 32,
        min_overlap: float = 0.0,
        max_overlap: float = 0.33,
        num_train: int = 10000,
        num_test: int = 2000,
        char_source: str = "EmnistDataset",
        char_data_dir: str | None = None,
        emnist_split: str = "byclass",
        mnist_test_set_only: bool = False,
        corpus_dir: str | None = None,
        data_dir: str | None = None,
        **common: Any,
    ) -> None:
        if char_source not in CHAR_SOURCES:
            raise ConfigError(f"char_source must be one of {', '.join(CHAR_SOURCES)}")
        if not 0.0 <= min_overlap <= max_overlap < 1.0:
            raise ConfigError(
                f"need 0 <= min_overlap <= max_overlap < 1; got {min_overlap}, {max_overlap}"
            )
        if int(max_length) < 1 or int(num_train) < 1 or int(num_test) < 1:
            raise ConfigError("max_length, num_train and num_test must be >= 1")
        corpus, data = resolve_dir(corpus_dir), resolve_dir(data_dir)
        if corpus and data and corpus != data:
            raise ConfigError(
                f"corpus_dir ({corpus}) and data_dir ({data}) differ; for EmnistLinesDataset "
                "both name the folder holding brown.zip, give one"
            )
        super().__init__(
            data_dir=None,
            max_length=int(max_length),
            min_overlap=float(min_overlap),
            max_overlap=float(max_overlap),
            num_train=int(num_train),
            num_test=int(num_test),
            char_source=char_source,
            emnist_split=emnist_split,
            mnist_test_set_only=bool(mnist_test_set_only),
            **common,
        )
        self.corpus_dir = corpus or data
        self.char_data_dir = resolve_dir(char_data_dir)
        self.data_dir = self.corpus_dir or paths.raw_dir(CORPUS_NAME)
        self.max_length = int(max_length)

    @property
    def digits_only(self) -> bool:
        """MNIST and the EMNIST digit splits draw digit strings, not text."""
        return self.args["char_source"] == "MnistDataset" or self.args["emnist_split"] in (
            "digits",
            "mnist",
        )

    @property
    def metadata_path(self) -> Path:
        return paths.raw_dir(CORPUS_NAME) / "metadata.toml"

    def extra_sources(self) -> list[str]:
        given = {"corpus": self.corpus_dir, "chars": self.char_data_dir}
        return [f"{k}={v}" for k, v in given.items() if v is not None]

    def prepare_raw_data(self) -> None:
        """The corpus (unless digit lines) now; the characters load in process()."""
        if not self.digits_only:
            ensure_corpus(self.corpus_dir)

    def load_characters(self) -> Dataset:
        """The character dataset, with all of its train split as train (no validation carve)."""
        from text_recognizer.datasets import DATASETS

        source = self.args["char_source"]
        kwargs: dict[str, Any] = {"data_dir": self.char_data_dir, "validation_fraction": 0.0}
        if source == "EmnistDataset":
            kwargs["split"] = self.args["emnist_split"]
        else:
            kwargs["test_set_only"] = self.args["mnist_test_set_only"]
        return DATASETS[source].load()(**kwargs).load_or_generate_data()

    def process(self) -> tuple[dict[str, np.ndarray], list[str]]:
        chars = self.load_characters()
        glyph_sets = {
            "trainval": (chars.x_train, chars.y_train),
            "test": (chars.x_test, chars.y_test),
        }
        present = [
            set(np.unique(y).tolist()) for _, y in glyph_sets.values()
        ]  # classes with a glyph in each split
        charset = "".join(
            ch
            for i, ch in enumerate(chars.mapping)
            if i in present[0] and i in present[1] and ch != " "
        )
        if not charset:
            raise DataError(f"{type(chars).__name__} has no class with images in both splits")
        mapping = make_mapping([*charset, " "])
        lut = np.full(len(mapping), -1, dtype=np.int64)  # line token -> character class
        char_index = {ch: i for i, ch in enumerate(chars.mapping)}
        for token_index, token in enumerate(mapping):
            if token in char_index and token != " ":
                lut[token_index] = char_index[token]
        sampler = None
        if not self.digits_only:
            sampler = PhraseSampler(
                read_brown_sentences(ensure_corpus(self.corpus_dir)), charset, self.max_length
            )
        seeds = np.random.SeedSequence(GENERATION_SEED).spawn(2)
        arrays: dict[str, np.ndarray] = {}
        for (split, (images, labels)), seed in zip(glyph_sets.items(), seeds, strict=True):
            rng = np.random.default_rng(seed)
            count = self.args["num_train" if split == "trainval" else "num_test"]
            if sampler is None:
                texts = digit_strings(count, self.max_length, rng)
            else:
                texts = sampler.sample(count, rng)
            y = encode_many(texts, mapping, self.max_length)
            arrays[f"x_{split}"] = self.draw(y, lut, images, labels, rng, split)
            arrays[f"y_{split}"] = y
        return arrays, mapping

    def draw(
        self,
        y: np.ndarray,
        lut: np.ndarray,
        images: np.ndarray,
        labels: np.ndarray,
        rng: np.random.Generator,
        split: str,
    ) -> np.ndarray:
        """Images for encoded labels ``y``: glyphs of ``images`` at a per-line overlap.

        Glyph ids for every character at once (:func:`sample_glyph_ids`'s draws), then
        :func:`place_glyphs` in blocks straight into the output, from the split's row-major glyphs
        as they are (no copy of them).
        """
        n, length = y.shape
        classes = np.where(y == PADDING_INDEX, -1, lut[y])
        uniform = rng.random(classes.shape)  # as sample_glyph_ids draws them
        valid = classes >= 0
        line, slot = np.nonzero(valid)
        gid = pick_glyphs(classes[valid], np.asarray(labels, dtype=np.int64), uniform[valid])
        lo, hi = self.args["min_overlap"], self.args["max_overlap"]
        overlap = rng.uniform(lo, hi, size=n)
        step = GLYPH_SIZE - (overlap * GLYPH_SIZE).astype(np.int64)
        x = slot * step[line]  # every glyph inside the 28 * length columns
        phase = slot % -(-GLYPH_SIZE // step)[line]  # slots K = ceil(28 / step) apart never overlap
        images = np.ascontiguousarray(images, dtype=np.uint8)
        out = zeroed_pages((n, GLYPH_SIZE, GLYPH_SIZE * length))
        block = 4096
        with progress.bar(n, f"composing {split} lines", unit="line") as bar:
            for s in range(0, n, block):
                e = min(s + block, n)
                i, j = np.searchsorted(line, [s, e])
                place_glyphs(images, line[i:j] - s, gid[i:j], x[i:j], out[s:e], phase[i:j])
                bar.update(e - s)
        return out


if __name__ == "__main__":
    raise SystemExit(summary_main("EmnistLinesDataset"))
