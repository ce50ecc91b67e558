"""Paragraph OCR: split a paragraph image into text lines, read each with a LinePredictor.

Line segmentation uses the horizontal projection profile (ink per row) of the Otsu-binarised page,
smoothed with a window of about a third of a text line, because handwritten lines in IAM are
roughly horizontal and separated by low-ink bands, and it costs one pass with no training. Rows
under a fraction of the typical ink level are gaps; bands thinner than ``min_height`` are merged
into a neighbour (dots, stray strokes); a band far taller than the median (two lines whose
ascenders and descenders touch) is cut at its deepest valley. A learned segmenter (FSDL's
paragraph model) would handle skewed or overlapping lines, at the cost of IAM training data.

    python -m text_recognizer.paragraph_ocr PARAGRAPH.png --model LINE_RUN
    python -m text_recognizer.paragraph_ocr ../shared/data/iam/paragraphs_support/*.*g \
        --model LINE_RUN --ground-truth ../shared/data/iam/paragraphs_support/data_by_file_id.json \
        --ground-truth ../shared/data/iam/ascii/lines.txt      # + CER per paragraph and overall
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from typing import Any

import numpy as np

from text_recognizer.errors import UserError
from text_recognizer.preprocessing import is_dark_on_light, load_image


def ink_image(image: Any) -> np.ndarray:
    """Any image -> uint8 grayscale, white ink on black, without dark scanner edges."""
    gray = np.asarray(load_image(image), dtype=np.uint8)
    ink = 255 - gray if is_dark_on_light(gray) else gray
    return clear_scan_edges(ink)


def clear_scan_edges(
    ink: np.ndarray, core: float = 0.9, tail: float = 0.05, min_side: int = 100
) -> np.ndarray:
    """Blank the dark strips that run along the sides of a scanned page.

    Where the scanner lid or the crop met the paper edge a page often carries a dark strip; left
    in, it joins every text line's crop and reads as a stroke. A strip is a run of columns (rows)
    from the border that are inked over at least ``core`` of their length, widened by the fading
    columns next to it (inked over ``tail`` or more), at most 5 % of the page. Sides shorter than
    ``min_side`` pixels are left alone: there (a line crop) a full-height column is a letter.
    """
    binary = ink > ink_threshold(ink)
    out = ink.copy()
    for axis in (0, 1):  # axis 0: columns (the share of rows inked), 1: rows
        if binary.shape[axis] < min_side:
            continue
        coverage = binary.mean(axis=axis)
        limit = max(1, len(coverage) // 20)
        for side in (coverage, coverage[::-1]):
            width = _run_from_start(side >= core)
            if width == 0 or width > limit:
                continue
            width += _run_from_start(side[width:] >= tail)
            width = min(width, limit)
            if side is coverage:
                span = slice(0, width)
            else:
                span = slice(len(coverage) - width, len(coverage))
            if axis == 0:
                out[:, span] = 0
            else:
                out[span, :] = 0
    return out


def _run_from_start(mask: np.ndarray) -> int:
    """How many leading entries are True."""
    return int(np.argmin(mask)) if not mask.all() else len(mask)


def ink_threshold(ink: np.ndarray) -> int:
    """Grey level above which a pixel is ink: Otsu's, and never 0 (paper that is pure black)."""
    return max(_otsu(ink), 1)


def _otsu(gray: np.ndarray) -> int:
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    total, levels = hist.sum(), np.arange(256)
    w0 = np.cumsum(hist)
    m0 = np.cumsum(hist * levels)
    w1 = total - w0
    between = (m0[-1] * w0 / total - m0) ** 2 / np.maximum(w0 * w1, 1e-9)
    return int(np.argmax(between))


def segment_lines(
    ink: np.ndarray, min_gap: int = 2, min_height: int | None = None, gap_level: float = 0.2
) -> list[tuple[int, int]]:
    """Row ranges (top, bottom) of the text lines in a white-on-black paragraph image."""
    binary = ink > ink_threshold(ink)
    profile = binary.sum(1).astype(np.float64)
    if profile.max() == 0:
        return []
    inked = profile[profile > 0]
    typical = float(np.median(inked))
    pitch = line_pitch(profile)
    window = max(1, pitch // 3)
    smooth = np.convolve(profile, np.ones(window) / window, mode="same")
    bands = _bands(smooth > gap_level * typical, min_gap)
    min_height = min_height if min_height is not None else max(3, int(0.4 * pitch))
    bands = _merge_thin(bands, min_height)
    out: list[tuple[int, int]] = []
    for top, bottom in bands:
        out += _split_tall(smooth, top, bottom, pitch)
    return [band for band in out if _is_text(binary[band[0] : band[1]], pitch)]


def _is_text(band: np.ndarray, pitch: int) -> bool:
    """A band holds text unless its ink is narrower than half a line height (a speck or a dot);
    the shorter of the line pitch and the band stands for the height, since a page with one line
    has no pitch to measure."""
    cols = np.flatnonzero(band.any(0))
    return len(cols) > 0 and cols[-1] - cols[0] + 1 >= min(pitch, len(band)) / 2


def line_pitch(profile: np.ndarray, min_pitch: int = 12) -> int:
    """Distance between text lines: the first autocorrelation peak of the ink profile.

    More robust than the median band height, which fails when most lines touch.
    """
    centred = profile - profile.mean()
    ac = np.correlate(centred, centred, mode="full")[len(profile) - 1 :]
    for lag in range(min_pitch, len(ac) - 1):
        if ac[lag] > 0 and ac[lag] >= ac[lag - 1] and ac[lag] >= ac[lag + 1]:
            return lag
    return max(min_pitch, len(profile))


def _bands(mask: np.ndarray, min_gap: int) -> list[tuple[int, int]]:
    """Runs of True rows; gaps shorter than ``min_gap`` rows are bridged."""
    bands: list[tuple[int, int]] = []
    start = None
    for i, on in enumerate(np.r_[mask, False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            if bands and start - bands[-1][1] < min_gap:
                bands[-1] = (bands[-1][0], i)
            else:
                bands.append((start, i))
            start = None
    return bands


def _merge_thin(bands: list[tuple[int, int]], min_height: int) -> list[tuple[int, int]]:
    """Bands thinner than ``min_height`` join the nearer neighbour (i-dots, stray strokes)."""
    bands = list(bands)
    i = 0
    while i < len(bands) and len(bands) > 1:
        top, bottom = bands[i]
        if bottom - top >= min_height:
            i += 1
            continue
        up = top - bands[i - 1][1] if i > 0 else None
        down = bands[i + 1][0] - bottom if i + 1 < len(bands) else None
        j = i - 1 if down is None or (up is not None and up <= down) else i + 1
        lo, hi = min(i, j), max(i, j)
        bands[lo : hi + 1] = [(bands[lo][0], bands[hi][1])]
        i = lo
    return bands


def _split_tall(
    smooth: np.ndarray, top: int, bottom: int, median_h: float
) -> list[tuple[int, int]]:
    """Cut a band about k line-heights tall into k lines at its deepest valleys."""
    parts = round((bottom - top) / max(median_h, 1))
    if parts < 2 or (bottom - top) < 1.5 * median_h:
        return [(top, bottom)]
    cuts = [top]
    step = (bottom - top) / parts
    for k in range(1, parts):
        centre = top + k * step
        lo, hi = int(centre - step / 3), int(centre + step / 3)
        cuts.append(lo + int(np.argmin(smooth[lo:hi])))
    cuts.append(bottom)
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]


def crop_line(
    ink: np.ndarray,
    top: int,
    bottom: int,
    pad: int = 2,
    margin: float = 0.12,
    threshold: int | None = None,
) -> np.ndarray:
    """The band's rows, trimmed left and right to the ink, framed with empty space.

    ``margin`` (a fraction of the band's height, above and below) is black, never the neighbour
    lines' rows: a band holds its line from ascenders to descenders, while line images (IAM's and
    the synthetic ones) leave room around the text; with 0.12 the ink fills ~73 % of the height,
    as in ``SyntheticLinesDataset`` lines (median 72 %). ``threshold``: the page's
    :func:`ink_threshold`, passed in when cropping many lines of one page.
    """
    rows = ink[top:bottom]
    threshold = ink_threshold(ink) if threshold is None else threshold
    cols = np.flatnonzero(rows.max(0) > threshold)
    if len(cols):
        rows = rows[:, max(0, cols[0] - pad) : cols[-1] + 1 + pad]
    vertical = max(pad, round(margin * (bottom - top)))
    return np.pad(rows, ((vertical, vertical), (0, 0)))


def read_paragraph(image: Any, predictor: Any) -> tuple[str, list[tuple[int, int]]]:
    """The paragraph's text, one predicted line per segmented line, and the line row ranges."""
    ink = ink_image(image)
    bands = segment_lines(ink)
    if not bands:
        return "", []
    threshold = ink_threshold(ink)
    crops = [crop_line(ink, t, b, threshold=threshold) for t, b in bands]
    predictions = predictor.predict_batch(crops)
    return "\n".join(p.text for p in predictions), bands


def paragraph_ocr_main(argv: list[str] | None = None) -> int:
    from text_recognizer.errors import one_line_parser, run_command
    from text_recognizer.predictors import add_lm_arguments

    parser = one_line_parser(
        prog="python -m text_recognizer.paragraph_ocr",
        description="Read handwritten paragraphs: split into lines, read each with a line model.",
    )
    parser.add_argument("images", nargs="+", help="paragraph images")
    parser.add_argument("--model", required=True, help="line model run directory or weights")
    parser.add_argument("--beam", type=int, default=None, help="CTC beam width")
    add_lm_arguments(parser)
    parser.add_argument(
        "--ground-truth",
        action="append",
        default=[],
        metavar="FILE",
        help="JSON (id -> text, or FSDL's data_by_file_id.json) or IAM lines.txt: report CER",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per image")
    args = parser.parse_args(argv)
    return run_command(lambda: _paragraph_ocr(args))


def _targets(args: argparse.Namespace) -> tuple[dict[str, str] | None, dict[str, str]]:
    """The merged ground truth (None without --ground-truth) and each image's text in it."""
    from text_recognizer.ground_truth import merge_ground_truth, truth_for

    if not args.ground_truth:
        return None, {}
    truth = merge_ground_truth(args.ground_truth)
    targets = {}
    for path in args.images:
        target = truth_for(path, truth)
        if target is None:
            raise UserError(
                f"{path}: no ground truth for it in {', '.join(args.ground_truth)} "
                "(ids are file stems, e.g. a01-077)"
            )
        targets[path] = target
    return truth, targets


def _paragraph_ocr(args: argparse.Namespace) -> int:
    """Check the images (headers), beam and ground truth before loading the model and reading."""
    from text_recognizer.predictors import LinePredictor, check_beam, lm_choice
    from text_recognizer.preprocessing import check_image_file

    if args.beam is not None:
        check_beam(args.beam)
    lm = lm_choice(args)
    for path in args.images:
        check_image_file(path)
    truth, targets = _targets(args)
    predictor = LinePredictor.from_weights(args.model, beam=args.beam, lm=lm)
    if targets:
        warn_unwritable(targets.values(), predictor.model.mapping)
    report = ParagraphReport()
    for path in args.images:
        start = time.perf_counter()
        text, bands = read_paragraph(path, predictor)
        seconds = time.perf_counter() - start
        row = report.add(path, text, len(bands), targets.get(path), seconds)
        if args.json:
            print(json.dumps(row, ensure_ascii=False))
        elif truth is None:
            print(text)
        else:
            print(
                f"== {path}: CER {row['cer']:.3f}, lines {row['lines']}/"
                f"{row['true_lines']}, {seconds:.2f} s"
            )
            print(text)
    if truth is not None:
        print(json.dumps(report.totals()) if args.json else report.summary())
    return 0


def warn_unwritable(targets: Any, mapping: list[str]) -> float:
    """Warn when the ground truth holds characters the model cannot write: each one is an edit
    whatever the model reads, so the CER cannot go below their share. Returns that share."""
    from collections import Counter

    from text_recognizer import progress

    counts = Counter(c for text in targets for c in text if c != "\n")
    missing = {c: n for c, n in counts.items() if c not in set(mapping)}
    total = sum(counts.values())
    if not missing or not total:
        return 0.0
    floor = sum(missing.values()) / total
    shown = "".join(sorted(missing, key=lambda c: -missing[c])[:20])
    progress.line(
        f"warning: the model cannot write {len(missing)} of the ground truth's characters "
        f"({shown!r}, {sum(missing.values())} of {total}): the CER cannot go below "
        f"{floor:.3f} (train with a charset that has them)"
    )
    return floor


class ParagraphReport:
    """CER over paragraphs as total edits / total reference characters (newlines included)."""

    def __init__(self) -> None:
        self.edits = self.chars = self.lines = self.true_lines = self.count = 0

    def add(
        self, path: str, text: str, lines: int, target: str | None, seconds: float
    ) -> dict[str, Any]:
        row: dict[str, Any] = {"image": path, "text": text, "lines": lines, "s": round(seconds, 3)}
        if target is None:
            return row
        from text_recognizer.metrics import char_edits

        edits, true_lines = char_edits(text, target), target.count("\n") + 1
        self.edits += edits
        self.chars += len(target)
        self.lines += lines
        self.true_lines += true_lines
        self.count += 1
        return {**row, "cer": edits / max(len(target), 1), "true_lines": true_lines}

    def totals(self) -> dict[str, Any]:
        """The overall figures, as the last JSON line of ``--json`` output."""
        return {
            "overall_cer": self.edits / max(self.chars, 1),
            "edits": self.edits,
            "characters": self.chars,
            "paragraphs": self.count,
            "lines": self.lines,
            "true_lines": self.true_lines,
        }

    def summary(self) -> str:
        cer = self.totals()["overall_cer"]
        return (
            f"overall: CER {cer:.3f} ({self.edits} edits / {self.chars} characters) over "
            f"{self.count} paragraphs; lines found {self.lines}, true {self.true_lines}"
        )


if __name__ == "__main__":
    sys.exit(paragraph_ocr_main())
