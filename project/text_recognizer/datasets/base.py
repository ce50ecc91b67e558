"""The Dataset base class: a data container in the FSDL sense (not a torch Dataset).

A subclass says where its raw files come from (``metadata.toml``) and how to turn them into arrays
(``process``); the base class downloads, caches the arrays in HDF5 under a name made of the arguments
that shaped them, carves a seeded validation split out of train, and subsamples on request. The test
split is kept apart for the final evaluation only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from text_recognizer import paths
from text_recognizer.errors import DataError
from text_recognizer.fileio import atomic_path

log = logging.getLogger(__name__)
CACHE_FORMAT = 2  # 2: synthetic line glyphs never clipped (fonts with overhangs)
SPLIT_KEYS = ("x_trainval", "y_trainval", "x_test", "y_test")


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
        return paths.raw_dir(self.name) / "metadata.toml"

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

    def _read_cache(self, path: Path) -> tuple[dict[str, np.ndarray], list[str]] | None:
        import h5py

        if not path.exists():
            return None
        try:
            with h5py.File(path, "r") as f:
                if f.attrs.get("format") != CACHE_FORMAT:
                    raise ValueError(f"format {f.attrs.get('format')} != {CACHE_FORMAT}")
                arrays = {k: f[k][()] for k in (*SPLIT_KEYS, *self.extra_keys)}
                mapping = json.loads(f.attrs["mapping"])
                self.skipped = json.loads(f.attrs.get("skipped", "{}"))
                self.skipped_examples = json.loads(f.attrs.get("skipped_examples", "{}"))
            for split in ("trainval", "test"):
                if len(arrays[f"x_{split}"]) != len(arrays[f"y_{split}"]):
                    raise ValueError(f"{split} images and labels differ in length")
            return arrays, mapping
        except Exception as e:  # a corrupt or truncated cache is rebuilt, never a crash
            print(
                f"cache {path} is unreadable ({type(e).__name__}: {e}); rebuilding", file=sys.stderr
            )
            path.unlink(missing_ok=True)
            return None

    def _write_cache(self, path: Path, arrays: dict[str, np.ndarray], mapping: list[str]) -> None:
        import h5py

        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
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

    # ----- loading -------------------------------------------------------------------------------
    def load_or_generate_data(self) -> Dataset:
        """Load the splits, processing the raw data into the HDF5 cache the first time."""
        cached = self._read_cache(self.cache_path)
        if cached is None:
            import time

            from text_recognizer import progress

            self.prepare_raw_data()
            start = time.perf_counter()
            progress.line(f"processing {type(self).__name__} into {self.cache_path} ...")
            arrays, mapping = self.process()
            self._write_cache(self.cache_path, arrays, mapping)
            progress.line(f"processed in {time.perf_counter() - start:.1f}s")
        else:
            arrays, mapping = cached
        self.mapping = list(mapping)
        self._split(arrays)
        self.input_shape = tuple(int(d) for d in self.x_train.shape[1:])
        self.output_shape = self.compute_output_shape()
        return self

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


def _subsample(idx: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    keep = max(1, round(len(idx) * fraction)) if len(idx) else 0
    return np.sort(rng.choice(idx, size=keep, replace=False)) if keep < len(idx) else idx


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
