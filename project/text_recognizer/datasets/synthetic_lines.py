"""Text lines rendered with Pillow's bundled font (or given fonts), distorted like handwriting.

The quick start's line dataset: it works anywhere, offline, in seconds. How a batch is made:

1. **Text.** ``text_source``: ``words`` draws lines from a built-in vocabulary of common English
   words (with capitals, numbers and, for the ``text`` charset, punctuation); ``brown`` samples
   phrases of the Brown corpus as EmnistLinesDataset does (``corpus_dir``, or downloaded once);
   ``auto`` (default) is ``brown`` when ``corpus_dir`` is given, else ``words``, so a config never
   silently depends on what happens to be on disk. The ``digits`` charset draws digit groups.
   Line lengths are drawn up to ``max_length`` characters.
2. **Glyphs.** Every character is rendered once per font, font size (3 sizes), stroke width (0, 1)
   and baseline offset (-1, 0, +1 pixel at height 28). The font is Pillow's bundled scalable font
   (``ImageFont.load_default(size=...)``, Aileron) unless ``fonts`` lists font files, folders or
   glob patterns (``.ttf``/``.otf``), for example the handwriting fonts Debian packages; a font
   that lacks a character of the charset is left out with a printed note. A line keeps one font,
   size and stroke, as a writer does; each character gets its own baseline jitter and spacing
   jitter, letter spacing and word spacing vary per line.
3. **Layout.** The glyphs are placed by :func:`~text_recognizer.datasets.emnist_lines.compose_lines`
   (vectorised, the composer of EmnistLinesDataset) on a canvas as wide as the longest line.
4. **Warp.** One ``grid_sample`` per batch maps each line onto the ``image_height x image_width``
   output: a random left margin, horizontal scale (a line that would not fit is squeezed to fit,
   never cut), vertical scale, slant (shear), baseline tilt, vertical shift and a smooth elastic
   field; then per-line stroke thickening or thinning (a blend with a 3x3 max or min filter),
   Gaussian blur, ink contrast and noise. ``distortion`` scales all of it (0 = clean text).

White ink on black, uint8, like EMNIST. Generation is seeded with a fixed ``GENERATION_SEED``
(``seed`` only moves the validation carve); train and test come from independent streams.
"""

from __future__ import annotations

import glob
import hashlib
import string
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from text_recognizer import paths, progress
from text_recognizer.datasets import TEXT_SOURCES
from text_recognizer.datasets.base import Dataset, summary_main
from text_recognizer.datasets.files import resolve_dir
from text_recognizer.datasets.line_composer import compose_lines
from text_recognizer.datasets.line_texts import (
    PhraseSampler,
    corpus_path,
    digit_strings,
    ensure_corpus,
    read_brown_sentences,
)
from text_recognizer.datasets.text import encode_many, make_mapping
from text_recognizer.errors import ConfigError

CHARSETS = {
    "digits": string.digits,
    "digits_upper": string.digits + string.ascii_uppercase,
    "alphanumeric": string.digits + string.ascii_uppercase + string.ascii_lowercase,
    "text": string.digits + string.ascii_uppercase + string.ascii_lowercase + ".,;:!?'\"()-&/",
}
GENERATION_SEED = 20240611
FONT_SCALES = (0.58, 0.65, 0.72)  # font size / line height
STROKES = (0, 1)
BASELINE_JITTER = (-1, 0, 1)  # pixels at height 28, scaled with the height
CHUNK = 128  # lines warped per grid_sample: the float tensors stay a few MB
# Common English words (a small, fixed vocabulary so the dataset needs no download).
_VOCABULARY = """
the of and to in is was he for it with as his on be at by had not are but from or have an they
which one you were her all she there would their we him been has when who will more no if out so
said what up its about into than them can only other new some could time these two may then do
first any my now such like our over man me even most made after also did many before must through
back years where much your way well down should because each just those people how too little
state good very make world still own see men work long get here between both life being under
never day same another know while last might us great old year off come since against go came
right used take three himself few house use during without again place around however home small
found thought went say part once general high upon school every don't does got united left number
course war until always away something fact though water less public put think almost hand enough
far took head yet government system better set told nothing night end why called didn't eyes find
going look asked later knew point next city business give group toward young let room president
side social given present several order national possible rather second face per among form often
early white case become large big need four within felt along children saw best church ever least
power development light thing seemed family interest want members others mind country area done
turned although open problem sense certain kind different thus began door help means whole morning
"""
WORDS = tuple(_VOCABULARY.split())


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
            text_source = "brown" if corpus is not None else "words"
        super().__init__(
            num_train=int(num_train),
            num_test=int(num_test),
            max_length=int(max_length),
            charset=charset,
            image_height=int(image_height),
            image_width=int(image_width),
            distortion=float(distortion),
            text_source=text_source,
            **common,
        )
        self.corpus_dir = corpus
        self.font_files = find_fonts(fonts) if fonts else None

    def extra_sources(self) -> list[str]:
        uses_corpus = self.args["text_source"] == "brown" and self.args["charset"] != "digits"
        sources = [f"corpus={self.corpus_dir}"] if uses_corpus and self.corpus_dir else []
        if self.font_files:
            sources.append(f"fonts={fonts_digest(self.font_files)}")
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
        length = self.args["max_length"]
        if self.args["charset"] == "digits":
            return lambda count, rng: digit_strings(count, length, rng)
        if self.args["text_source"] == "brown":
            sampler = PhraseSampler(
                read_brown_sentences(ensure_corpus(self.corpus_dir)), chars, length
            )
            return sampler.sample
        return lambda count, rng: word_lines(count, length, self.args["charset"], rng)

    def render(
        self, texts: list[str], chars: str, font: GlyphFont, rng: np.random.Generator, split: str
    ) -> np.ndarray:
        """Images for ``texts``: layout, composition and one batched warp per chunk."""
        import torch

        h, w, d = self.args["image_height"], self.args["image_width"], self.args["distortion"]
        out = np.empty((len(texts), h, w), dtype=np.uint8)
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        index = {ch: i for i, ch in enumerate(chars)}
        # One intra-op thread: the chunks' tensors are small, and threads cost more than they give
        # (3x slower with 2 threads on a busy 2-core machine). Restored afterwards.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with progress.bar(len(texts), f"rendering {split} lines", unit="line") as bar:
                for start in range(0, len(texts), CHUNK):
                    batch = texts[start : start + CHUNK]
                    ids, x, line_w = font.layout(batch, index, self.args["max_length"], d, rng)
                    canvas = compose_lines(font.glyphs, ids, x, int(line_w.max()) + font.width)
                    out[start : start + len(batch)] = warp_lines(canvas, line_w, w, d, gen)
                    bar.update(len(batch))
        finally:
            torch.set_num_threads(threads)
        return out


# ----- text ----------------------------------------------------------------------------------------


def word_lines(count: int, max_length: int, charset: str, rng: np.random.Generator) -> list[str]:
    """Lines of vocabulary words, numbers and (``text``) punctuation, up to ``max_length`` long."""
    allowed = set(CHARSETS[charset])
    words = [
        w for w in WORDS if len(w) <= max_length and set(w) <= allowed | set(string.ascii_lowercase)
    ]
    if charset != "text":
        words = [w for w in words if "'" not in w]
    targets = rng.integers(1, max_length + 1, size=count)
    picks = rng.integers(0, len(words), size=(count, max_length))
    coins = rng.random((count, max_length, 4))
    lines = []
    for n in range(count):
        target, parts, used = int(targets[n]), [], 0
        for i in range(max_length):
            word = words[picks[n, i]]
            c = coins[n, i]
            if c[0] < 0.1:
                word = str(int(c[1] * 10 ** (2 + int(c[3] * 4))))  # a number, 1-5 digits
            elif charset == "digits_upper" or c[1] < 0.05:
                word = word.upper()
            elif (i == 0 and c[1] < 0.6) or c[1] < 0.15:
                word = word.capitalize()
            if charset == "text" and c[2] < 0.15:
                word += ".,;:!?"[int(c[3] * 6)]
            elif charset == "text" and c[2] < 0.18:
                word = f'"{word}"' if c[3] < 0.5 else f"({word})"
            extra = len(word) + (1 if parts else 0)
            if parts and used + extra > target:
                break
            if not parts and len(word) > max_length:
                word = word[:max_length]
            parts.append(word)
            used += extra
        lines.append(" ".join(parts))
    return lines


# ----- glyphs and layout ----------------------------------------------------------------------------


class GlyphFont:
    """Rendered glyph variants and their advances; lays out lines as glyph ids and positions.

    "Faces" are (font file, size) pairs: a line draws one face and one stroke width.
    """

    def __init__(
        self,
        glyphs: np.ndarray,
        advance: np.ndarray,
        space: np.ndarray,
        pad: int,
        jitter: int,
        overhang: np.ndarray | None = None,
    ) -> None:
        self.glyphs = glyphs  # (faces * strokes * chars * offsets, H, width)
        self.advance = advance  # (faces, strokes, chars) float pixels
        self.space = space  # (faces,) float pixels
        self.pad = pad  # columns left of the pen position in each glyph image
        self.offsets = jitter
        self.width = glyphs.shape[2]
        # Ink beyond the advance on the right (script fonts' swashes), and the most any glyph
        # reaches left of its pen: a line starts that far in so its first glyph is whole.
        self.overhang = np.zeros_like(advance) if overhang is None else overhang
        self.lead = max(0, pad - _first_ink_column(glyphs))

    def layout(
        self,
        texts: list[str],
        index: dict[str, int],
        max_length: int,
        distortion: float,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Glyph ids ``(N, L)``, left columns ``(N, L)`` and each line's ink width ``(N,)``."""
        n = len(texts)
        sizes, strokes, num_chars = self.advance.shape
        cls = np.full((n, max_length), -1, dtype=np.int64)  # -1: space or padding
        for row, text in enumerate(texts):
            cls[row, : len(text)] = [index.get(ch, -1) for ch in text]
        is_char = cls >= 0
        size = rng.integers(0, sizes, size=n)[:, None]
        stroke = rng.integers(0, strokes, size=n)[:, None]
        offset = rng.integers(0, self.offsets, size=(n, max_length))
        c = np.maximum(cls, 0)
        ids = (((size * strokes + stroke) * num_chars + c) * self.offsets) + offset
        ids = np.where(is_char, ids, -1)
        d = distortion
        tracking = 1.0 + rng.uniform(-0.06, 0.1, size=(n, 1)) * d
        word_gap = 1.0 + rng.uniform(-0.1, 0.6, size=(n, 1)) * d
        jitter = rng.uniform(-0.6, 0.6, size=(n, max_length)) * d
        lengths = np.array([len(t) for t in texts])
        in_text = np.arange(max_length)[None, :] < lengths[:, None]
        adv = np.where(
            is_char, self.advance[size, stroke, c] * tracking + jitter, self.space[size] * word_gap
        )
        adv = np.where(in_text, np.maximum(adv, 1.0), 0.0)
        pen = np.concatenate([np.zeros((n, 1)), np.cumsum(adv, axis=1)[:, :-1]], axis=1)
        x = np.round(pen).astype(np.int64) + self.lead - self.pad
        last = np.maximum(lengths - 1, 0)
        last_c = c[np.arange(n), last]
        tail = np.where(
            is_char[np.arange(n), last], self.overhang[size[:, 0], stroke[:, 0], last_c], 0
        )
        line_w = np.maximum(np.round(adv.sum(axis=1) + self.lead + tail).astype(np.int64), 1)
        return ids, x, line_w


FONT_SUFFIXES = (".ttf", ".otf")


def find_fonts(entries: list[str]) -> list[Path]:
    """Font files named by paths, folders (searched recursively) or glob patterns, sorted.

    Relative entries are tried against the working directory, then the project root.
    """
    found: set[Path] = set()
    for entry in entries:
        if not entry.strip():
            raise ConfigError(
                "dataset_args.fonts: an empty entry; give a font file, folder or glob"
            )
        matches: list[Path] = []
        for base in (Path.cwd(), paths.PROJECT_ROOT):
            pattern = str(base / Path(entry).expanduser())
            matches = [Path(m) for m in glob.glob(pattern, recursive=True)]
            if matches:
                break
        files = [
            f
            for m in matches
            for f in ([m] if m.is_file() else sorted(m.rglob("*")))
            if f.is_file() and f.suffix.lower() in FONT_SUFFIXES
        ]
        if not files:
            raise ConfigError(
                f"dataset_args.fonts: no .ttf or .otf font found for {entry!r} (a file, folder or "
                "glob pattern; Debian handwriting fonts: apt-get install fonts-breip fonts-bwht ...)"
            )
        found.update(f.resolve() for f in files)
    return sorted(found)


def fonts_digest(files: list[Path]) -> str:
    """Names and sizes of the font files: the cache changes when the set of fonts does."""
    text = "|".join(f"{f.name}:{f.stat().st_size}" for f in files)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _first_ink_column(glyphs: np.ndarray) -> int:
    cols = np.flatnonzero(glyphs.max(axis=(0, 1)))
    return int(cols[0]) if len(cols) else 0


MIN_FIT_SCALE = 0.6  # a font whose ink fits the line only below this share of its size is left out


def _load_fonts(height: int, font_files: list[Path] | None, chars: str) -> list[tuple[Any, float]]:
    """One (FreeType font, baseline row) per font file and size; files lacking a character of
    the charset, or too tall for the line, are left out with a note."""
    from PIL import ImageFont

    sizes = [max(6, round(height * s)) for s in FONT_SCALES]
    if not font_files:
        return [
            _fit_face(lambda z: ImageFont.load_default(size=z), s, height, chars) for s in sizes
        ]
    faces = []
    for path in font_files:
        try:
            probe = ImageFont.truetype(str(path), size=sizes[-1])
        except OSError as e:
            progress.line(f"note: font {path} left out: {e}")
            continue
        missing = missing_glyphs(probe, chars)
        if missing:
            progress.line(f"note: font {path} left out: it lacks {''.join(missing)!r}")
            continue
        fitted = [
            _fit_face(lambda z, p=path: ImageFont.truetype(str(p), size=z), s, height, chars)
            for s in sizes
        ]
        if any(
            font.size < MIN_FIT_SCALE * size for (font, _), size in zip(fitted, sizes, strict=True)
        ):
            progress.line(
                f"note: font {path} left out: its tallest and deepest glyphs span more than the "
                f"line, so they fit only below {MIN_FIT_SCALE:.0%} of the size"
            )
            continue
        faces += fitted
    if not faces:
        raise ConfigError(
            f"dataset_args.fonts: none of the {len(font_files)} fonts can draw the charset "
            f"{chars!r} on {height}-pixel lines (see the notes above)"
        )
    return faces


def _fit_face(load: Any, size: int, height: int, chars: str) -> tuple[Any, float]:
    """The font at ``size`` (smaller if its ink is taller than the line) and a baseline that
    keeps every glyph's ink inside the line, baseline jitter included.

    The baseline is centred on the font's metrics, as a writer centres on the ruled line; only a
    font whose glyphs would reach past the top or bottom (tall script capitals, long descenders)
    is shifted or shrunk, so no glyph is clipped.
    """
    jitter = max(abs(round(j * height / 28)) for j in BASELINE_JITTER)
    room = height - 2 * jitter - 2
    font = load(size)
    top, bottom = _ink_rows(font, chars)
    while bottom - top > room and font.size > 4:
        font = load(max(4, min(font.size - 1, int(font.size * room / (bottom - top)))))
        top, bottom = _ink_rows(font, chars)
    ascent, descent = font.getmetrics()
    baseline = (height - (ascent + descent)) / 2 + ascent
    lowest, highest = jitter + 1 - top, height - jitter - 1 - bottom  # allowed baseline rows
    return font, float(min(max(baseline, lowest), highest))


def _ink_rows(font: Any, chars: str) -> tuple[int, int]:
    """Highest and lowest inked rows of the charset relative to the baseline (thick stroke)."""
    boxes = [font.getbbox(ch, anchor="ls", stroke_width=max(STROKES)) for ch in chars]
    return min(b[1] for b in boxes), max(b[3] for b in boxes)


def missing_glyphs(font: Any, chars: str) -> list[str]:
    """Characters the font draws as its fallback glyph (a box or nothing)."""
    fallback = _glyph_pixels(font, "\U0010fffd")
    return [ch for ch in chars if not ch.isspace() and _glyph_pixels(font, ch) == fallback]


def _glyph_pixels(font: Any, ch: str) -> bytes:
    mask = font.getmask(ch)
    return repr(mask.size).encode() + bytes(mask)


def render_glyphs(chars: str, height: int, font_files: list[Path] | None = None) -> GlyphFont:
    """Every character per face (font and size) x 2 stroke widths x 3 baseline offsets."""
    from PIL import Image, ImageDraw

    unit = height / 28
    faces = _load_fonts(height, font_files, chars)
    jitters = [round(j * unit) for j in BASELINE_JITTER]
    # Ink boxes relative to the pen on the baseline: (faces, strokes, chars, [left top right bottom])
    boxes = np.array(
        [
            [[font.getbbox(ch, anchor="ls", stroke_width=s) for ch in chars] for s in STROKES]
            for font, _ in faces
        ]
    )
    pad = max(2, round(2 * unit), int(1 - boxes[..., 0].min()))  # ink left of the pen
    width = int(boxes[..., 2].max()) + 2 * pad
    advance = np.array(
        [[[font.getlength(ch) + s for ch in chars] for s in STROKES] for font, _ in faces]
    )
    overhang = np.maximum(boxes[..., 2] - advance, 0.0)
    space = np.array([font.getlength(" ") for font, _ in faces])
    glyphs = []
    for font, baseline in faces:
        for stroke in STROKES:
            for ch in chars:
                for jitter in jitters:
                    img = Image.new("L", (width, height), 0)
                    ImageDraw.Draw(img).text(
                        (pad, baseline + jitter),
                        ch,
                        font=font,
                        fill=255,
                        anchor="ls",
                        stroke_width=stroke,
                        stroke_fill=255,
                    )
                    glyphs.append(np.asarray(img))
    return GlyphFont(np.stack(glyphs), advance, space, pad, len(jitters), overhang)


# ----- the warp ------------------------------------------------------------------------------------


def warp_lines(
    canvas: np.ndarray, line_w: np.ndarray, width: int, d: float, gen: Any
) -> np.ndarray:
    """Map each composed line onto ``(H, width)`` with random geometry and ink effects (batched)."""
    import torch
    import torch.nn.functional as F

    n, h, wc = canvas.shape

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return torch.rand(n, *shape, generator=gen) * (hi - lo) + lo

    src = torch.from_numpy(canvas).unsqueeze(1).float()  # 0..255 throughout
    lw = torch.from_numpy(line_w).float()[:, None, None]
    shear = uniform(-0.35, 0.35).mul(d)
    # Room kept free on both sides for what moves ink sideways (slant, elastic field, blur), so
    # that no line is cut off; a line too long for the rest is squeezed horizontally.
    slack = shear.abs() * h / 2 + 2 + 1.5 * d * h / 28
    margin = uniform(0, 4 * h / 28) + slack
    room = (width - margin - slack).clamp(min=1)
    sx = torch.minimum(uniform(-0.1, 0.1).mul(d).exp(), room / lw[:, 0, 0])
    sy = uniform(-0.08, 0.06).mul(d).exp()
    tilt = uniform(-1.5, 1.5).mul(d).deg2rad().tan()
    dy = uniform(-1.0, 1.0).mul(d * h / 28)
    # Output pixel (u, v) reads input ((u - margin) / sx + shear (v - cy),
    # cy + (v - cy) / sy + tilt ((u - margin) / sx - lw / 2) - dy), in grid units (-1..1). Terms
    # that vary along one axis only are computed small and broadcast once.
    cy, to_x, to_y = h / 2, 2 / wc, 2 / h
    u = torch.arange(width, dtype=torch.float32)[None, None, :] + 0.5
    v = torch.arange(h, dtype=torch.float32)[None, :, None] + 0.5 - cy
    ut = (u - margin[:, None, None]) / sx[:, None, None]  # (n, 1, W)
    along_x = ut * to_x - 1
    along_y = tilt[:, None, None] * (ut - lw / 2) * to_y
    down_x = shear[:, None, None] * v * to_x  # (n, H, 1)
    down_y = (cy + v / sy[:, None, None] - dy[:, None, None]) * to_y - 1
    coarse = torch.randn(n, 2, 3, max(2, width // 24), generator=gen) * (0.7 * d * h / 28)
    coarse[:, 0] *= to_x
    coarse[:, 1] *= to_y
    field = F.interpolate(coarse, size=(h, width), mode="bilinear", align_corners=False)
    grid = torch.empty(n, h, width, 2)
    torch.add(field[:, 0], along_x, out=grid[..., 0]).add_(down_x)
    torch.add(field[:, 1], along_y, out=grid[..., 1]).add_(down_y)
    img = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # Stroke width: blend towards a 3x3 max (thicker) or min (thinner) filter, per line.
    weight = uniform(-0.4, 0.4).mul(min(d, 1.5))
    target = img.clone()
    thick, thin = weight > 0, weight < 0
    if thick.any():
        target[thick] = neighbourhood_max(img[thick])
    if thin.any():
        target[thin] = -neighbourhood_max(-img[thin])
    img = torch.lerp(img, target, weight.abs()[:, None, None, None])
    sigma = uniform(0.05, 0.3 + 0.4 * d)
    r = torch.arange(-2, 3, dtype=torch.float32)
    k1 = torch.exp(-(r**2) / (2 * sigma[:, None] ** 2))
    k1 = k1 / k1.sum(1, keepdim=True)
    kernels = (k1[:, :, None] * k1[:, None, :]).unsqueeze(1) * uniform(0.7, 1.0)[
        :, None, None, None
    ]
    img = F.conv2d(img.view(1, n, h, width), kernels, padding=2, groups=n).view(n, h, width)
    noise = uniform(0, 0.04 * d * 255)[:, None, None]
    img.addcmul_(torch.randn(img.shape, generator=gen), noise)
    return img.clamp_(0, 255).round_().to(torch.uint8).numpy()


def neighbourhood_max(img: Any) -> Any:
    """3x3 maximum filter as two separable passes of shifted maxima (max_pool2d with stride 1 is
    several times slower on CPU)."""
    import torch

    rows = img.clone()
    torch.maximum(rows[..., 1:], img[..., :-1], out=rows[..., 1:])
    torch.maximum(rows[..., :-1], img[..., 1:], out=rows[..., :-1])
    out = rows.clone()
    torch.maximum(out[..., 1:, :], rows[..., :-1, :], out=out[..., 1:, :])
    torch.maximum(out[..., :-1, :], rows[..., 1:, :], out=out[..., :-1, :])
    return out


if __name__ == "__main__":
    raise SystemExit(summary_main("SyntheticLinesDataset"))
