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
  longest line fits without overlap, left-aligned. ``image_height`` (16..128) scales the lines,
  aspect ratio kept: 64 makes them ``64 x (64 * max_length)``, as the taller-line networks want.
- **No leak.** Train lines are drawn only from the character dataset's train split (train +
  validation), test lines only from its test split. Lines are generated with a fixed seed
  (``GENERATION_SEED``; the run's ``seed`` only moves the validation carve), train and test from
  independent streams, so changing ``num_train`` never changes the test lines.
- **Fast.** :func:`place_glyphs` places a chunk of lines' glyphs with one numpy fancy assignment
  per phase (no per-character or per-pixel Python loop), into an output allocated by
  :func:`zeroed_pages`; how it compares with FSDL's per-character loop: bench/README.md
  (``bench/bench_lines.py``).

Arguments are flat (the config spec has no nested dicts): ``char_source`` picks the character
dataset, ``char_data_dir`` is passed as its ``data_dir``, ``emnist_split`` as EmnistDataset's
``split`` and ``mnist_test_set_only`` as MnistDataset's ``test_set_only`` (needed for the shared
MNIST copy, which only has the 10k test images). ``corpus_dir`` is a folder holding ``brown.zip``
(``data_dir`` means the same here, the corpus being this dataset's only raw file); without either
the corpus is downloaded once to ``data/raw/brown/`` from its metadata.toml.

The composer lives in line_composer.py, the text sources in line_texts.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from text_recognizer import paths, progress
from text_recognizer.datasets import LINE_CHAR_SOURCES
from text_recognizer.datasets.base import (
    Dataset,
    summary_main,
)
from text_recognizer.datasets.files import resolve_dir
from text_recognizer.datasets.line_composer import (
    GLYPH_SIZE,
    pick_glyphs,
    place_glyphs,
    zeroed_pages,
)
from text_recognizer.datasets.line_texts import (
    CORPUS_NAME,
    PhraseSampler,
    corpus_path,
    digit_strings,
    ensure_corpus,
    read_brown_sentences,
)
from text_recognizer.datasets.text import PADDING_INDEX, encode_many, make_mapping
from text_recognizer.errors import ConfigError, DataError

GENERATION_SEED = 20190302  # fixed: the lines never depend on the run's `seed`
CHAR_SOURCES = LINE_CHAR_SOURCES


# =================================================================================================
# The dataset
# =================================================================================================


class EmnistLinesDataset(Dataset):
    """Lines of real character images along real text; see the module docstring."""

    name = "emnist_lines"
    kind = "lines"
    shaping_args: ClassVar[tuple[str, ...]] = (
        "char_source",
        "emnist_split",
        "mnist_test_set_only",
        "max_length",
        "image_height",
        "min_overlap",
        "max_overlap",
        "num_train",
        "num_test",
    )
    needs_download = False  # the corpus and the characters are fetched in prepare_raw_data

    def __init__(
        self,
        max_length: int = 32,
        image_height: int = GLYPH_SIZE,
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
        if not 16 <= int(image_height) <= 128:
            raise ConfigError(f"image_height must be 16..128; got {image_height}")
        corpus, data = resolve_dir(corpus_dir), resolve_dir(data_dir)
        if corpus and data and corpus != data:
            raise ConfigError(
                f"corpus_dir ({corpus}) and data_dir ({data}) differ; for EmnistLinesDataset "
                "both name the folder holding brown.zip, give one"
            )
        super().__init__(
            data_dir=None,
            max_length=int(max_length),
            image_height=int(image_height),
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
        return paths.metadata_path(CORPUS_NAME)

    def extra_sources(self) -> list[str]:
        given = {"corpus": self.corpus_dir, "chars": self.char_data_dir}
        return [f"{k}={v}" for k, v in given.items() if v is not None]

    def prepare_raw_data(self) -> None:
        """The corpus (unless digit lines) and the character set's raw files (unless its cache is
        there), both tried before any error, so one error names every missing file."""
        from text_recognizer.datasets.download import merge_data_errors

        problems: list[DataError] = []
        chars = self.characters()
        steps = [] if chars.cache_path.is_file() else [chars.prepare_raw_data]
        if not self.digits_only:
            steps.insert(0, lambda: ensure_corpus(self.corpus_dir))
        for step in steps:
            try:
                step()
            except DataError as e:
                problems.append(e)
        failed = merge_data_errors(problems)
        if failed is not None:
            raise failed

    def raw_files(self) -> list[Path]:
        """The character dataset's raw files and the corpus: they key the cache."""
        corpus = [] if self.digits_only else [corpus_path(self.corpus_dir)]
        return [*self.characters().raw_files(), *corpus]

    def characters(self) -> Dataset:
        """The character dataset, not loaded, with all of its train split as train."""
        from text_recognizer.datasets import DATASETS

        source = self.args["char_source"]
        kwargs: dict[str, Any] = {"data_dir": self.char_data_dir, "validation_fraction": 0.0}
        if source == "EmnistDataset":
            kwargs["split"] = self.args["emnist_split"]
        else:
            kwargs["test_set_only"] = self.args["mnist_test_set_only"]
        return DATASETS[source].load()(**kwargs)

    def load_characters(self) -> Dataset:
        """The character dataset, loaded (no validation carve)."""
        return self.characters().load_or_generate_data()

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
            lines = self.draw(y, lut, images, labels, rng, split)
            arrays[f"x_{split}"] = scale_lines(lines, self.args["image_height"], split)
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


def available_memory() -> int | None:
    """Bytes of memory the kernel says are available (Linux), else None (no check)."""
    try:
        with open("/proc/meminfo") as f:
            for row in f:
                if row.startswith("MemAvailable:"):
                    return int(row.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def scale_lines(lines: np.ndarray, height: int, split: str) -> np.ndarray:
    """28-pixel lines scaled to ``height``, aspect ratio kept (the width scales with it).

    Bilinear, as :func:`~text_recognizer.preprocessing.preprocess_image` scales an image read at
    serving time; at the glyphs' own 28 pixels the lines are returned as drawn.
    """
    if height == GLYPH_SIZE:
        return lines
    from PIL import Image

    n, h, w = lines.shape
    width = round(w * height / h)
    need, free = n * height * width, available_memory()
    if free is not None and need > free:
        raise DataError(
            f"{n} {split} lines of {height}x{width} pixels need {need / 2**30:.1f} GiB and "
            f"{free / 2**30:.1f} GiB of memory is available; lower num_train/num_test, "
            "image_height or max_length"
        )
    out = zeroed_pages((n, height, width))
    with progress.bar(n, f"scaling {split} lines to {height} px", unit="line") as bar:
        for i in range(n):
            image = Image.fromarray(lines[i], "L").resize((width, height), Image.BILINEAR)
            out[i] = np.asarray(image, dtype=np.uint8)
            bar.update(1)
    return out


if __name__ == "__main__":
    raise SystemExit(summary_main("EmnistLinesDataset"))
