"""Line generation: EmnistLinesDataset's vectorised composer versus FSDL's per-character loop.

Two workloads, each with both sides on the same glyphs and the same texts (``max_length`` 32 ->
28 x 896 images, overlap drawn per line in [0, 0.33]):

- digits: real MNIST digits (``../shared/data/mnist`` t10k, else synthetic digits) along
  ``digit_strings`` (random lengths 1..32), the MNIST digit-lines setting;
- text: 62 classes of the platform's rendered characters (no real EMNIST letters are available
  here) along Brown-corpus phrases (``PhraseSampler`` on ``../shared/data/corpus``, else the
  built-in word lines), the EMNIST-lines setting.

The generators:

- fsdl: a faithful port of FSDL 2019's ``create_dataset_of_images`` loop: per line
  ``construct_image_from_string``, i.e. ``select_letter_samples_for_string`` (one
  ``np.random.choice`` per distinct character, from a ``samples_by_char`` dict of lists built once,
  untimed) and a Python loop pasting each 28x28 crop with ``+=`` at ``x += W - int(overlap * W)``
  over the string padded to ``max_length`` with FSDL's ``_``, then ``np.minimum(255, ...)``.
- glyph loop: the same paste without FSDL's sampling: a Python loop per character doing
  ``np.maximum`` of the crop into its columns, on glyph ids drawn beforehand (a lean
  per-character loop; its output is checked identical to the vectorised composer's).
- vectorised: ``EmnistLinesDataset.draw`` on the encoded labels: glyph ids drawn for all
  characters at once (``pick_glyphs``), then ``place_glyphs`` straight into the output, 32 lines
  at a time: the output viewed as one entry per byte offset holding a glyph's 28 rows, so one
  numpy fancy assignment places a chunk's glyphs (a memmove per glyph row). With K = ceil(28 /
  step), slots i, i + K, ... never overlap: slots 0 mod K are copied in, the others read back the
  rows under them, take the maximum and write them back.
  Its output comes from ``zeroed_pages``: huge pages from the kernel for 32 MiB and more (the
  1,500-line rounds), ``np.empty`` + ``fill`` (recycled malloc memory) below (the quick rounds).
- vectorised, np.zeros output (reference, no target): the same, its output allocated with
  ``np.zeros`` as FSDL's loop allocates it, to show what the allocation is worth.

Every generator writes a fresh output array each round. Rounds are interleaved (fsdl, glyph loop,
vectorised, ..., fsdl, ...) so every set ran under the same machine load; the first round is
warm-up. Lines/s are medians of wall-clock and of process CPU time (steadier on a shared machine);
ratios are medians over rounds of per-round time ratios.

    python bench/bench_lines.py            # ~10 seconds on 2 busy cores
    python bench/bench_lines.py --quick    # ~5 seconds
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from typing import Any

import _common
import numpy as np

TARGET = 10.0
MAX_LENGTH = 32
W = 28


def load_digit_glyphs() -> tuple[np.ndarray, np.ndarray, str]:
    """(images, digit labels, where they came from)."""
    from text_recognizer import paths

    folder = paths.SHARED_DATA_DIR / "mnist"
    if (folder / "t10k-images-idx3-ubyte.gz").is_file():
        from text_recognizer.datasets.mnist import read_pair

        x, y = read_pair(folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz")
        return x, y, f"real MNIST t10k digits ({folder})"
    x, y = _common.make_images(10000)
    keep = y < 10
    return x[keep], y[keep], "synthetic digits (shared MNIST not found)"


def load_text_glyphs(per_class: int = 64) -> tuple[np.ndarray, np.ndarray, str]:
    """62 classes (0-9, A-Z, a-z) of the platform's rendered, distorted characters (in memory)."""
    from text_recognizer.datasets.synthetic_characters import CHARSETS, generate, render_templates

    chars = CHARSETS["alphanumeric"]
    templates, template_class = render_templates(chars)
    x, y = generate(
        templates,
        template_class,
        len(chars),
        per_class * len(chars),
        28,
        1.0,
        np.random.default_rng(0),
    )
    return x, y, f"{len(x)} synthetic alphanumeric characters (no real EMNIST letters here)"


def text_source(max_length: int):
    """(sample(count, rng) -> texts, what it is): Brown phrases when the shared corpus is here."""
    from text_recognizer import paths
    from text_recognizer.datasets.line_texts import PhraseSampler, read_brown_sentences
    from text_recognizer.datasets.line_words import CHARSETS, word_lines

    corpus = paths.SHARED_DATA_DIR / "corpus" / "brown.zip"
    if corpus.is_file():
        sampler = PhraseSampler(read_brown_sentences(corpus), CHARSETS["alphanumeric"], max_length)
        return sampler.sample, f"Brown corpus phrases ({corpus})"
    return (lambda n, rng: word_lines(n, max_length, "alphanumeric", rng)), "built-in word lines"


# ----- FSDL 2019, ported faithfully (text_recognizer/datasets/emnist_lines_dataset.py) -------------


def fsdl_select_letter_samples_for_string(string: str, samples_by_char: dict) -> list:
    zero_image = np.zeros((28, 28), np.uint8)
    sample_image_by_char: dict[str, Any] = {}
    for char in string:
        if char in sample_image_by_char:
            continue
        samples = samples_by_char[char]
        sample = samples[np.random.choice(len(samples))] if samples else zero_image
        sample_image_by_char[char] = sample.reshape(28, 28)
    return [sample_image_by_char[char] for char in string]


def fsdl_construct_image_from_string(
    string: str, samples_by_char: dict, min_overlap: float, max_overlap: float
) -> np.ndarray:
    overlap = np.random.uniform(min_overlap, max_overlap)
    sampled_images = fsdl_select_letter_samples_for_string(string, samples_by_char)
    n = len(sampled_images)
    h, w = sampled_images[0].shape
    next_overlap_width = w - int(overlap * w)
    concatenated_image = np.zeros((h, w * n), np.uint8)
    x = 0
    for image in sampled_images:
        concatenated_image[:, x : (x + w)] += image
        x += next_overlap_width
    return np.minimum(255, concatenated_image)


def fsdl_create_dataset_of_images(texts: list[str], samples_by_char: dict) -> np.ndarray:
    images = np.zeros((len(texts), 28, W * MAX_LENGTH), np.uint8)
    for n, label in enumerate(texts):
        padded = label + "_" * (MAX_LENGTH - len(label))  # FSDL pads labels with '_'
        images[n] = fsdl_construct_image_from_string(padded, samples_by_char, 0.0, 0.33)
    return images


# ----- the two others ------------------------------------------------------------------------------


def glyph_loop(glyphs: np.ndarray, ids: np.ndarray, x: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros((len(ids), 28, width), np.uint8)
    for b in range(len(ids)):
        line = out[b]
        for g, x0 in zip(ids[b].tolist(), x[b].tolist(), strict=True):
            if g >= 0:
                np.maximum(line[:, x0 : x0 + W], glyphs[g], out=line[:, x0 : x0 + W])
    return out


def draw_with_np_zeros(ds: Any, y: np.ndarray, lut: np.ndarray, glyphs, labels, rng) -> np.ndarray:
    """``ds.draw`` with its output allocated by ``np.zeros`` (4 KB pages, as FSDL's loop gets)."""
    from text_recognizer.datasets import emnist_lines

    saved = emnist_lines.zeroed_pages
    emnist_lines.zeroed_pages = lambda shape: np.zeros(shape, dtype=np.uint8)
    try:
        return ds.draw(y, lut, glyphs, labels, rng, "bench")
    finally:
        emnist_lines.zeroed_pages = saved


def run_workload(
    name: str,
    glyphs: np.ndarray,
    labels: np.ndarray,
    chars: str,
    texts_for: Any,
    n: int,
    rounds: int,
) -> dict[str, Any]:
    """Interleaved rounds of the three generators on the same texts and glyphs."""
    from text_recognizer.datasets.emnist_lines import EmnistLinesDataset
    from text_recognizer.datasets.line_composer import compose_lines, sample_glyph_ids
    from text_recognizer.datasets.text import PADDING_INDEX, encode_many, make_mapping

    samples_by_char: dict[str, list] = defaultdict(list)  # FSDL builds this once per split
    for image, label in zip(glyphs, labels, strict=True):
        samples_by_char[chars[label]].append(image)
    mapping = make_mapping([*chars, " "])
    lut = np.array([-1, -1, *range(len(chars)), -1])
    ds = EmnistLinesDataset(char_source="MnistDataset", max_length=MAX_LENGTH)
    wall: dict[str, list[float]] = {
        k: [] for k in ("fsdl", "glyph_loop", "vectorised", "vec_np_zeros")
    }
    cpu: dict[str, list[float]] = {k: [] for k in wall}
    identical = True
    for r in range(rounds + 1):
        rng = np.random.default_rng(r)
        texts = texts_for(n, rng)
        y = encode_many(texts, mapping, MAX_LENGTH)
        ids = sample_glyph_ids(np.where(y == PADDING_INDEX, -1, lut[y]), labels, rng)
        step = W - (rng.uniform(0, 0.33, size=n) * W).astype(np.int64)
        x = np.arange(MAX_LENGTH)[None, :] * step[:, None]
        np.random.seed(r)
        jobs = {
            "fsdl": lambda t=texts: fsdl_create_dataset_of_images(t, samples_by_char),
            "glyph_loop": lambda i=ids, p=x: glyph_loop(glyphs, i, p, W * MAX_LENGTH),
            "vectorised": lambda y=y, r=r: ds.draw(
                y, lut, glyphs, labels, np.random.default_rng(r), "bench"
            ),
            "vec_np_zeros": lambda y=y, r=r: draw_with_np_zeros(
                ds, y, lut, glyphs, labels, np.random.default_rng(r)
            ),
        }
        for key, job in jobs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            result = job()
            if r:  # round 0 is warm-up
                wall[key].append(time.perf_counter() - start)
                cpu[key].append(time.process_time() - start_cpu)
            if key == "glyph_loop":
                composed = compose_lines(glyphs, ids, x, W * MAX_LENGTH)
                identical &= bool(np.array_equal(composed, result))
    rates = {k: n / _common.median(v) for k, v in wall.items()}
    cpu_rates = {k: n / _common.median(v) for k, v in cpu.items()}

    def paired(times: dict[str, list[float]], other: str) -> float:
        pairs = zip(times[other], times["vectorised"], strict=True)
        return _common.median([a / b for a, b in pairs])

    ratios = {
        "wall_vs_fsdl": paired(wall, "fsdl"),
        "cpu_vs_fsdl": paired(cpu, "fsdl"),
        "wall_vs_glyph_loop": paired(wall, "glyph_loop"),
        "cpu_vs_glyph_loop": paired(cpu, "glyph_loop"),
        "np_zeros_cpu_vs_fsdl": _common.median(
            [a / b for a, b in zip(cpu["fsdl"], cpu["vec_np_zeros"], strict=True)]
        ),
    }
    print(f"## {name}: {n} lines per round, {rounds} rounds")
    for key in wall:
        print(
            f"{name:<7} {key:<12} {rates[key]:>9.0f} lines/s wall {cpu_rates[key]:>9.0f} lines/s cpu"
        )
    print(f"# {name}: vectorised output identical to the glyph loop's: {identical}")
    for clock in ("wall", "cpu"):
        what = f"{name} vectorised/fsdl_loop throughput ({clock})"
        print(_common.ratio_line("lines", what, ratios[f"{clock}_vs_fsdl"], TARGET))
    print(
        f"ratio lines {name} vectorised/glyph_loop throughput (cpu) = "
        f"{ratios['cpu_vs_glyph_loop']:.2f} (reference: a lean per-glyph loop, no target)"
    )
    print(
        f"ratio lines {name} vectorised_np_zeros/fsdl_loop throughput (cpu) = "
        f"{ratios['np_zeros_cpu_vs_fsdl']:.2f} (reference: output from np.zeros, no target)"
    )
    return {
        "lines_per_round": n,
        "rounds": rounds,
        "lines_per_second_wall": rates,
        "lines_per_second_cpu": cpu_rates,
        "seconds_wall": wall,
        "seconds_cpu": cpu,
        "ratios": ratios,
        "identical_to_glyph_loop": identical,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer lines and rounds (~5 s)")
    parser.add_argument("--lines", type=int, default=None, help="lines per round (default 1500)")
    parser.add_argument("--rounds", type=int, default=None, help="default 5, quick 2")
    args = parser.parse_args(argv)
    n = args.lines or (500 if args.quick else 1500)
    rounds = args.rounds or (2 if args.quick else 5)
    _common.setup_threads(1)
    from text_recognizer.datasets.line_texts import digit_strings

    env = _common.environment()
    _common.print_header("line generation: vectorised composer vs FSDL per-character loop", env)
    digits, digit_labels, digit_source = load_digit_glyphs()
    letters, letter_labels, letter_source = load_text_glyphs()
    sample_text, text_kind = text_source(MAX_LENGTH)
    print(f"# digits: {digit_source}; digit strings of up to {MAX_LENGTH} characters")
    print(f"# text:   {letter_source}; {text_kind}")
    results = {
        "digits": run_workload(
            "digits",
            digits,
            digit_labels,
            "0123456789",
            lambda count, rng: digit_strings(count, MAX_LENGTH, rng),
            n,
            rounds,
        ),
        "text": run_workload(
            "text",
            letters,
            letter_labels,
            "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            sample_text,
            n,
            rounds,
        ),
    }
    path = _common.write_results(
        "bench_lines",
        {
            "environment": env,
            "max_length": MAX_LENGTH,
            "glyphs": {"digits": digit_source, "text": letter_source},
            "texts": {"digits": "digit_strings", "text": text_kind},
            "target": TARGET,
            **results,
        },
    )
    print(f"# results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
