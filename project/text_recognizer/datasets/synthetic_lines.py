"""Text lines rendered with Pillow's bundled font (or given fonts), distorted like handwriting.

The quick start's line dataset: it works anywhere, offline, in seconds. How a batch is made:

1. **Text.** ``text_source``: ``words`` draws lines from a built-in vocabulary of common English
   words (with capitals, numbers and, for the ``text`` charset, punctuation; ``line_words.py``);
   ``brown`` samples phrases of the Brown corpus as EmnistLinesDataset does (``corpus_dir``, or
   downloaded once); ``auto`` (default) is ``brown`` when ``corpus_dir`` is given, else ``words``,
   so a config never silently depends on what happens to be on disk. ``names`` draws name-like
   lines from Faker's name lists (``line_names.py``; the default for the ``names`` charset, which
   is the Kaggle names' alphabet). The ``digits`` charset draws digit groups. Line lengths are drawn up to ``max_length`` characters.
2. **Glyphs** (``line_fonts.py``). Every character is rendered once per font, font size (3
   sizes), stroke width (0, 1) and baseline offset (-1, 0, +1 pixel at height 28). The font is
   Pillow's bundled scalable font (``ImageFont.load_default(size=...)``, Aileron) unless
   ``fonts`` lists font files, folders or glob patterns (``.ttf``/``.otf``), or ``handwriting``
   for the handwriting fonts Debian packages (``line_fonts.HANDWRITING_PACKAGES``); a font that lacks a character of the charset is left out
   with a printed note. A line keeps one font, size and stroke, as a writer does; each character
   gets its own baseline jitter and spacing jitter, letter spacing and word spacing vary per line.
3. **Layout.** The glyphs are placed by
   :func:`~text_recognizer.datasets.line_composer.compose_lines` (vectorised, the composer of
   EmnistLinesDataset) on a canvas as wide as the longest line.
4. **Warp** (``line_warp.py``). One ``grid_sample`` per batch maps each line onto the
   ``image_height x image_width`` output: a random left margin, horizontal scale (a line that
   would not fit is squeezed to fit, never cut), vertical scale, slant (shear), baseline tilt,
   vertical shift and a smooth elastic field; then per-line stroke thickening or thinning (a
   blend with a 3x3 max or min filter), Gaussian blur, ink contrast and noise. ``distortion``
   scales all of it (0 = clean text).

White ink on black, uint8, like EMNIST. Generation is seeded with a fixed ``GENERATION_SEED``
(``seed`` only moves the validation carve); train and test come from independent streams.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from text_recognizer import progress
from text_recognizer.datasets import TEXT_SOURCES
from text_recognizer.datasets.base import Dataset, summary_main
from text_recognizer.datasets.files import resolve_dir
from text_recognizer.datasets.line_composer import compose_lines
from text_recognizer.datasets.line_fonts import GlyphFont, find_fonts, fonts_digest, render_glyphs
from text_recognizer.datasets.line_names import faker_version, name_lines, name_vocabulary
from text_recognizer.datasets.line_texts import (
    PhraseSampler,
    corpus_path,
    digit_strings,
    ensure_corpus,
    read_brown_sentences,
)
from text_recognizer.datasets.line_words import CHARSETS, word_lines
from text_recognizer.datasets.text import encode_many, make_mapping
from text_recognizer.errors import ConfigError

GENERATION_SEED = 20240611
CHUNK = 128  # lines warped per grid_sample: the float tensors stay a few MB


class SyntheticLinesDataset(Dataset):
    """Rendered, distorted text lines: ``(image_height, image_width)`` uint8, ``(N, max_length)``."""

    name = "synthetic_lines"
    kind = "lines"
    shaping_args: ClassVar[tuple[str, ...]] = (
        "charset",
        "text_source",
        "max_length",
        "image_height",
        "image_width",
        "distortion",
        "letter_spacing",
        "num_train",
        "num_test",
    )
    needs_download = False

    def __init__(
        self,
        num_train: int = 10000,
        num_test: int = 2000,
        max_length: int = 32,
        charset: str = "alphanumeric",
        image_height: int = 28,
        image_width: int = 512,
        distortion: float = 1.0,
        letter_spacing: float = 0.1,
        text_source: str = "auto",
        corpus_dir: str | None = None,
        fonts: list[str] | None = None,
        **common: Any,
    ) -> None:
        if charset not in CHARSETS:
            raise ConfigError(f"charset must be one of {', '.join(CHARSETS)}; got {charset!r}")
        if text_source not in TEXT_SOURCES:
            raise ConfigError(f"text_source must be one of {', '.join(TEXT_SOURCES)}")
        corpus = resolve_dir(corpus_dir)
        if text_source == "auto":
            text_source = (
                "names" if charset == "names" else "brown" if corpus is not None else "words"
            )
        super().__init__(
            num_train=int(num_train),
            num_test=int(num_test),
            max_length=int(max_length),
            charset=charset,
            image_height=int(image_height),
            image_width=int(image_width),
            distortion=float(distortion),
            letter_spacing=float(letter_spacing),
            text_source=text_source,
            **common,
        )
        self.corpus_dir = corpus
        self.font_files = find_fonts(fonts) if fonts else None

    def extra_sources(self) -> list[str]:
        """The corpus folder and the font set: what else, besides the args, shapes the data."""
        uses_corpus = self.args["text_source"] == "brown" and self.args["charset"] != "digits"
        sources = [f"corpus={self.corpus_dir}"] if uses_corpus and self.corpus_dir else []
        if self.font_files:
            sources.append(f"fonts={fonts_digest(self.font_files)}")
        if self.args["text_source"] == "names" and self.args["charset"] != "digits":
            sources.append(f"faker={faker_version()}")  # its name lists change between releases
        return sources

    def raw_files(self) -> list[Path]:
        """The corpus (``text_source: brown``) and the font files: they key the cache."""
        uses_corpus = self.args["text_source"] == "brown" and self.args["charset"] != "digits"
        return [*([corpus_path(self.corpus_dir)] if uses_corpus else []), *(self.font_files or [])]

    def prepare_raw_data(self) -> None:
        """Only ``text_source: brown`` reads a file (and downloads it without ``corpus_dir``)."""
        if self.args["text_source"] == "brown" and self.args["charset"] != "digits":
            ensure_corpus(self.corpus_dir)

    def process(self) -> tuple[dict[str, np.ndarray], list[str]]:
        """Texts, labels and images of both splits, each from its own seeded stream."""
        chars = CHARSETS[self.args["charset"]]
        mapping = make_mapping([*chars, " "])
        length = self.args["max_length"]
        font = render_glyphs(chars, self.args["image_height"], self.font_files)
        texts_for = self._text_source(chars)
        arrays: dict[str, np.ndarray] = {}
        for split, seed in zip(
            ("trainval", "test"), np.random.SeedSequence(GENERATION_SEED).spawn(2), strict=True
        ):
            rng = np.random.default_rng(seed)
            count = self.args["num_train" if split == "trainval" else "num_test"]
            texts = texts_for(count, rng)
            arrays[f"y_{split}"] = encode_many(texts, mapping, length)
            arrays[f"x_{split}"] = self.render(texts, chars, font, rng, split)
        return arrays, mapping

    def _text_source(self, chars: str) -> Any:
        """``texts(count, rng)`` for the charset and ``text_source``."""
        length = self.args["max_length"]
        if self.args["charset"] == "digits":
            return lambda count, rng: digit_strings(count, length, rng)
        if self.args["text_source"] == "brown":
            sampler = PhraseSampler(
                read_brown_sentences(ensure_corpus(self.corpus_dir)), chars, length
            )
            return sampler.sample
        if self.args["text_source"] == "names":
            vocabulary = name_vocabulary(chars)
            return lambda count, rng: name_lines(count, length, vocabulary, rng)
        return lambda count, rng: word_lines(count, length, self.args["charset"], rng)

    def render(
        self, texts: list[str], chars: str, font: GlyphFont, rng: np.random.Generator, split: str
    ) -> np.ndarray:
        """Images for ``texts``: layout, composition and one batched warp per chunk."""
        import torch

        from text_recognizer.datasets.line_warp import warp_lines

        h, w, d = self.args["image_height"], self.args["image_width"], self.args["distortion"]
        out = np.empty((len(texts), h, w), dtype=np.uint8)
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        index = {ch: i for i, ch in enumerate(chars)}
        # One intra-op thread: the chunks' tensors are small, and threads cost more than they give
        # (bench/README.md, bench_lines.py section). Restored afterwards.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with progress.bar(len(texts), f"rendering {split} lines", unit="line") as bar:
                for start in range(0, len(texts), CHUNK):
                    batch = texts[start : start + CHUNK]
                    ids, x, line_w = font.layout(
                        batch, index, self.args["max_length"], d, rng, self.args["letter_spacing"]
                    )
                    canvas = compose_lines(font.glyphs, ids, x, int(line_w.max()) + font.width)
                    out[start : start + len(batch)] = warp_lines(canvas, line_w, w, d, gen)
                    bar.update(len(batch))
        finally:
            torch.set_num_threads(threads)
        return out


if __name__ == "__main__":
    raise SystemExit(summary_main("SyntheticLinesDataset"))
