"""Glyphs for synthetic lines: font files found, faces fitted to the line, characters rendered.

Every character is rendered once per face (font file and size), stroke width and baseline
offset; :class:`GlyphFont` then lays lines out as glyph ids and positions for
:func:`~text_recognizer.datasets.line_composer.compose_lines`. A font that lacks a character of
the charset, or whose glyphs cannot fit the line at a reasonable size, is left out with a note.
"""

from __future__ import annotations

import glob
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from text_recognizer import paths, progress
from text_recognizer.errors import ConfigError

FONT_SCALES = (0.58, 0.65, 0.72)  # font size / line height
STROKES = (0, 1)
BASELINE_JITTER = (-1, 0, 1)  # pixels at height 28, scaled with the height


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
        letter_spacing: float = 0.1,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Glyph ids ``(N, L)``, left columns ``(N, L)`` and each line's ink width ``(N,)``.

        ``letter_spacing`` is the most a line's advances grow (0.1: 10 %); forms with letter
        boxes, such as the Kaggle names, space capitals far more.
        """
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
        tracking = 1.0 + rng.uniform(-0.06, letter_spacing, size=(n, 1)) * d
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
# ``fonts: ["handwriting"]`` names the handwriting fonts Debian packages (free licences, no
# download at run time): the folders they install into. .ci/run and the README install them.
HANDWRITING = "handwriting"
HANDWRITING_PACKAGES = {
    "fonts-breip": "/usr/share/fonts/truetype/breip",
    "fonts-bwht": "/usr/share/fonts/opentype/bwht",
    "fonts-comic-neue": "/usr/share/fonts/opentype/comic-neue",
    "fonts-dancingscript": "/usr/share/fonts/opentype/dancingscript",
    "fonts-dkg-handwriting": "/usr/share/fonts/truetype/fifthhorseman",
    "fonts-ecolier-court": "/usr/share/fonts/truetype/ecolier-court",
    "fonts-femkeklaver": "/usr/share/fonts/truetype/femkeklaver",
    "fonts-humor-sans": "/usr/share/fonts/truetype/humor-sans",
    "fonts-kaushanscript": "/usr/share/fonts/opentype/kaushanscript",
    "fonts-klee": "/usr/share/fonts/truetype/klee",
    "fonts-kristi": "/usr/share/fonts/truetype/kristi",
    "fonts-rufscript": "/usr/share/fonts/truetype/rufscript",
    "fonts-sjfonts": "/usr/share/fonts/truetype/sjfonts",
}


def find_fonts(entries: list[str]) -> list[Path]:
    """Font files named by paths, folders (searched recursively) or glob patterns, sorted.

    Relative entries are tried against the working directory, then the project root.
    ``handwriting`` stands for the installed Debian handwriting fonts (:data:`HANDWRITING_PACKAGES`).
    """
    found: set[Path] = set()
    for entry in entries:
        if entry == HANDWRITING:
            found.update(handwriting_fonts())
            continue
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


def handwriting_fonts() -> list[Path]:
    """The font files of the Debian handwriting packages that are installed; none is an error."""
    files = sorted(
        f.resolve()
        for folder in HANDWRITING_PACKAGES.values()
        if Path(folder).is_dir()
        for f in Path(folder).rglob("*")
        if f.is_file() and f.suffix.lower() in FONT_SUFFIXES
    )
    if not files:
        raise ConfigError(
            "dataset_args.fonts: 'handwriting' needs Debian's handwriting fonts, none is installed; "
            f"as root: apt-get install {' '.join(HANDWRITING_PACKAGES)}"
        )
    return files


def fonts_digest(files: list[Path]) -> str:
    """Names and sizes of the font files: the cache changes when the set of fonts does."""
    text = "|".join(f"{f.name}:{f.stat().st_size}" for f in files)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _first_ink_column(glyphs: np.ndarray) -> int:
    """The leftmost column any glyph inks: how far left of its pen a glyph can reach."""
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
    """The glyph's mask size and pixels: equal bytes mean the same drawing."""
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
