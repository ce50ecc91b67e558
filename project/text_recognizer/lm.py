"""Character n-gram LMs for CTC beam search: ``build`` one from text, ``tune`` its weights.

    python -m text_recognizer.lm build --iam ../shared/data/iam --order 6 --out LM.arpa
    python -m text_recognizer.lm build --text corpus.txt --text brown.zip --out LM.arpa
    python -m text_recognizer.lm tune RUN --lm LM.arpa [--json best.json]

``build`` estimates an interpolated modified Kneser-Ney model (ngram.py) and writes ARPA. From IAM
``ascii/lines.txt`` it takes each line's transcription exactly as the IAM line dataset labels it
(``parse_lines_txt``: IAM's tokenisation, ``tomorrow .``), leaving out every form of the Aachen test
and validation lists, every form that shares a 7-character stem with the paragraph benchmark
(``iam_lines.PARAGRAPH_BENCHMARK_FORMS`` and the shared crops' file names: ``a01-000u`` and
``a01-000x`` are the same text by two writers), and any line equal to a line of the crops' ground
truth, so neither the test split, nor the validation split that ``tune`` picks the weights on, nor
the paragraph benchmark leaks into the LM (``--keep-validation`` keeps the validation forms, for
an LM that is not tuned on them). ``--as-written``
re-joins IAM's tokens as printed (``ground_truth.detokenize``), for a model that reads text as it
is written (the synthetic Brown lines, the paragraph crops' ground truth).

``tune`` reads a run's VALIDATION split once (the network's outputs), decodes it for every LM
weight and bonus in a grid and prints the CER of each; the lowest wins. The test split is never
read. Exit codes: 0, 2 for bad input (one line).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from text_recognizer.errors import UserError

DEFAULT_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0)
DEFAULT_BONUSES = (-2.0, -1.0, 0.0, 1.0, 2.0, 3.0)
MAX_TEXT_BYTES = 256 << 20


@dataclass
class IamText:
    """The IAM lines an LM may learn from, and what was left out and why."""

    lines: list[str] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)
    excluded_forms: set[str] = field(default_factory=set)

    def skip(self, reason: str) -> None:
        self.excluded[reason] = self.excluded.get(reason, 0) + 1


def paragraph_stems(folder: Path) -> set[str]:
    """The 7-character form stems (``a01-077``) of the paragraph crops' file names."""
    import re

    stems = set()
    for path in folder.iterdir():
        match = re.match(r"([a-z]\d\d-\d{3})", path.name)
        if match and path.suffix.lower() in (".png", ".jpg", ".jpeg"):
            stems.add(match[1])
    return stems


def iam_text(
    lines_txt: Path,
    test_list: Path | None,
    paragraphs: Path | None,
    validation_list: Path | None = None,
) -> IamText:
    """IAM transcriptions (``lines.txt``) minus test and validation forms, the paragraph
    benchmark's forms (PARAGRAPH_BENCHMARK_FORMS and the crops' stems) and the crops' lines."""
    from text_recognizer.datasets.iam_lines import (
        PARAGRAPH_BENCHMARK_FORMS,
        parse_lines_txt,
        read_lines_txt,
    )
    from text_recognizer.errors import DataError
    from text_recognizer.fileio import read_small_text

    def forms(path: Path | None, what: str) -> set[str]:
        if path is None:
            return set()
        return set(read_small_text(path, 16 << 20, what, DataError).split())

    test_forms = forms(test_list, "test list")
    validation_forms = forms(validation_list, "validation list")
    stems: set[str] = set(PARAGRAPH_BENCHMARK_FORMS)
    truth_lines: set[str] = set()
    if paragraphs is not None:
        from text_recognizer.ground_truth import read_ground_truth

        stems |= paragraph_stems(paragraphs)
        truth_file = paragraphs / "data_by_file_id.json"
        if truth_file.is_file():
            for text in read_ground_truth(truth_file).values():
                truth_lines.update(" ".join(t.split()) for t in text.splitlines() if t.strip())
    out = IamText()
    for line in parse_lines_txt(read_lines_txt(lines_txt), str(lines_txt)):
        if line.form_id in test_forms:
            out.skip("aachen_test_form")
        elif line.form_id in validation_forms:
            out.skip("aachen_validation_form")
        elif line.form_id[:7] in stems:
            out.skip("paragraph_crop_form")
        elif _same_text(line.text, truth_lines):
            out.skip("paragraph_crop_line")
        else:
            out.lines.append(line.text)
            continue
        out.excluded_forms.add(line.form_id)
    return out


def _same_text(text: str, truth_lines: set[str]) -> bool:
    """The line (IAM-tokenised, or as printed) equals a ground-truth line of the crops."""
    from text_recognizer.ground_truth import detokenize

    return " ".join(text.split()) in truth_lines or detokenize(text) in truth_lines


def text_lines(path: Path) -> list[str]:
    """Sentences of a text source: NLTK's brown.zip, or a UTF-8 file with one line each."""
    from text_recognizer.fileio import read_small_text

    if path.suffix == ".zip":
        from text_recognizer.datasets.line_texts import read_brown_sentences

        return read_brown_sentences(path)
    return read_small_text(path, MAX_TEXT_BYTES, "--text", UserError).splitlines()


MAX_NAME_LINES = 10_000_000
NAMES_SEED = 7  # not the synthetic dataset's seed: other lines from the same lists


def name_text(count: int) -> list[str]:
    """Name-like lines in the names charset (upper case, A-Z - '), drawn as the synthetic name
    lines are: an LM for name fields that never reads a dataset's labels."""
    import numpy as np

    from text_recognizer.datasets.line_names import name_lines, name_vocabulary
    from text_recognizer.datasets.line_words import CHARSETS

    vocabulary = name_vocabulary(CHARSETS["names"])
    return name_lines(count, 64, vocabulary, np.random.default_rng(NAMES_SEED))


def build(args: argparse.Namespace) -> int:
    """Estimate the LM from the sources and write it (atomically)."""
    from text_recognizer import ngram, progress
    from text_recognizer.fileio import check_output_file

    if not args.iam and not args.text and args.names is None:
        raise UserError("give --iam FOLDER, --text FILE and/or --names N")
    if args.names is not None and not 1 <= args.names <= MAX_NAME_LINES:
        raise UserError(f"--names must be from 1 to {MAX_NAME_LINES}, got {args.names}")
    if not 2 <= args.order <= ngram.MAX_ORDER:  # KenLM reads bigram models and up
        raise UserError(f"--order must be from 2 to {ngram.MAX_ORDER}, got {args.order}")
    check_output_file(args.out, "--out")
    lines: list[str] = []
    if args.iam:
        iam = Path(args.iam).expanduser()
        lines_txt = iam / "ascii" / "lines.txt"
        if not lines_txt.is_file():
            raise UserError(f"--iam {args.iam}: no ascii/lines.txt in it")
        test_list = iam / "splits_htr_best_practices" / "test.uttlist"
        validation_list = iam / "splits_htr_best_practices" / "validation.uttlist"
        paragraphs = iam / "paragraphs_support"
        needed = [test_list, paragraphs] + ([] if args.keep_validation else [validation_list])
        for path in needed:
            if not path.exists():
                raise UserError(f"--iam {args.iam}: no {path.relative_to(iam)} (needed to exclude)")
        text = iam_text(
            lines_txt, test_list, paragraphs, None if args.keep_validation else validation_list
        )
        excluded = ", ".join(f"{k} {v}" for k, v in sorted(text.excluded.items()))
        progress.line(
            f"IAM lines.txt: {len(text.lines)} lines used; {sum(text.excluded.values())} left "
            f"out ({excluded}) from {len(text.excluded_forms)} forms"
        )
        if args.as_written:  # "tomorrow . Mr." -> "tomorrow. Mr.", as the crops' ground truth
            from text_recognizer.ground_truth import detokenize

            lines += [detokenize(line) for line in text.lines]
        else:
            lines += text.lines
    for source in args.text:
        path = Path(source).expanduser()
        if not path.is_file():
            raise UserError(f"--text {source}: no such file")
        more = text_lines(path)
        progress.line(f"{source}: {len(more)} lines")
        lines += more
    if args.names:
        lines += name_text(args.names)
        progress.line(f"names: {args.names} name lines (Faker's lists, as text_source names)")
    start = time.perf_counter()
    try:
        model = ngram.estimate(lines, args.order)
    except ValueError as e:
        raise UserError(str(e)) from None
    ngram.write_arpa(model, args.out)
    sizes = ", ".join(f"{n}-grams {len(model.prob[n])}" for n in range(1, model.order + 1))
    progress.line(
        f"wrote {args.out}: order {model.order}, {model.sentences} sentences, "
        f"{model.characters} characters ({sizes}) in {time.perf_counter() - start:.1f} s"
    )
    return 0


def _grid(text: str, name: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{name} must be numbers separated by commas, got {text[:60]!r}") from None
    if not values:
        raise UserError(f"{name} is empty")
    return values


def _check_tune_args(args: argparse.Namespace) -> tuple[list[float], list[float]]:
    """Every argument of ``tune`` checked before torch loads: a typo costs no import or model."""
    from text_recognizer.decoding import check_beam_width
    from text_recognizer.fileio import check_output_file
    from text_recognizer.predictors import check_lm, weights_path

    weights, bonuses = _grid(args.weights, "--weights"), _grid(args.bonuses, "--bonuses")
    for w in weights:
        for b in bonuses:
            check_lm(w, b)
    try:
        check_beam_width(args.beam, "--beam")
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be >= 1, got {args.limit}")
    if not Path(args.lm).expanduser().is_file():
        raise UserError(f"--lm {args.lm}: no such file")
    if args.json:
        check_output_file(args.json, "--json")
    weights_path(args.run)
    return weights, bonuses


def _validation_outputs(args: argparse.Namespace) -> tuple[Any, Any, list[str], str]:
    """The CTC model, its log-probabilities over the validation split (one pass), the targets
    and the dataset's name."""
    import torch

    from text_recognizer.decoding import load_lm
    from text_recognizer.evaluate import read_split_arrays
    from text_recognizer.models.line_model_ctc import LineModelCtc
    from text_recognizer.models.precision import Precision
    from text_recognizer.predictors import load_predictor

    predictor = load_predictor(args.run)
    model = predictor.model
    if not isinstance(model, LineModelCtc):
        raise UserError(f"tune needs a CTC line model; {args.run} holds a {type(model).__name__}")
    load_lm(args.lm, model.mapping)
    name, _, x, y = read_split_arrays(predictor, args.run, None, "validation", args.limit)
    log_probs = torch.cat(
        [
            out.float().log_softmax(-1).cpu()
            for _, out in model.forward_batches(
                model.to_tensor(x), predictor.batch_size(256), Precision.choose("off", model.device)
            )
        ]
    )
    return model, log_probs, model.target_texts(y), name


def _print_table(rows: list[dict[str, float]], weights: list[float], bonuses: list[float]) -> None:
    print(f"{'weight':>7} " + " ".join(f"{'bonus ' + format(b, 'g'):>10}" for b in bonuses))
    for w in weights:
        cells = [r["cer"] for r in rows if r["lm_weight"] == w]
        print(f"{w:7g} " + " ".join(f"{c:10.4f}" for c in cells))


def tune(args: argparse.Namespace) -> int:
    """Grid search over (weight, bonus) on the validation split; print the table and the best."""
    weights, bonuses = _check_tune_args(args)

    from text_recognizer import progress
    from text_recognizer.decoding import Decoder, to_texts
    from text_recognizer.fileio import write_json_atomic
    from text_recognizer.metrics import char_edits

    model, log_probs, targets, name = _validation_outputs(args)
    chars = max(1, sum(len(t) for t in targets))
    mapping, blank, ignore = model.mapping, model.blank_index, (model.padding_index,)

    def cer(decoder: Decoder) -> float:
        texts = to_texts(decoder.decode(log_probs, mapping, blank, ignore), mapping)
        return sum(char_edits(p, t) for p, t in zip(texts, targets, strict=True)) / chars

    greedy = cer(Decoder())
    plain = cer(Decoder("beam", args.beam))
    progress.line(
        f"{name} validation: {len(targets)} lines; greedy CER {greedy:.4f}, beam {plain:.4f}"
    )
    rows = []
    for w in weights:
        for b in bonuses:
            start = time.perf_counter()
            value = cer(Decoder("beam", args.beam, str(args.lm), w, b))
            rows.append({"lm_weight": w, "lm_bonus": b, "cer": value})
            progress.line(
                f"  weight {w:g} bonus {b:g}: CER {value:.4f} ({time.perf_counter() - start:.1f} s)"
            )
    best = min(rows, key=lambda r: (r["cer"], r["lm_weight"], abs(r["lm_bonus"])))
    _print_table(rows, weights, bonuses)
    print(
        f"best: lm_weight {best['lm_weight']:g}, lm_bonus {best['lm_bonus']:g}: validation CER "
        f"{best['cer']:.4f} (greedy {greedy:.4f}, beam {args.beam} without LM {plain:.4f})"
    )
    if args.json:
        report = {
            "run": str(args.run),
            "lm": str(args.lm),
            "split": "validation",
            "lines": len(targets),
            "beam_width": args.beam,
            "greedy_cer": greedy,
            "beam_cer": plain,
            "best": best,
            "grid": rows,
        }
        write_json_atomic(args.json, report)
    return 0


def lm_main(argv: list[str] | None = None) -> int:
    from text_recognizer.errors import one_line_parser, run_command

    parser = one_line_parser(
        prog="python -m text_recognizer.lm",
        description="Build a character n-gram LM (ARPA) and tune its decoding weights.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="estimate a Kneser-Ney character LM and write ARPA")
    b.add_argument("--iam", default=None, help="IAM folder (ascii/lines.txt, test list, crops)")
    b.add_argument("--text", action="append", default=[], help="text file or brown.zip")
    b.add_argument(
        "--names",
        type=int,
        default=None,
        help="N name-like lines from Faker's lists (an LM for name fields, e.g. Kaggle names)",
    )
    b.add_argument("--order", type=int, default=6, help="n-gram order (default 6)")
    b.add_argument(
        "--as-written",
        action="store_true",
        help="IAM text re-joined as printed (tomorrow. Mr.), for models trained on such text "
        "(synthetic Brown lines); default: IAM's tokens (tomorrow . Mr.), as IAM lines are labelled",
    )
    b.add_argument(
        "--keep-validation",
        action="store_true",
        help="learn the Aachen validation forms too (left out by default: tune picks the "
        "weights on them)",
    )
    b.add_argument("--out", required=True, help="the ARPA file to write")
    t = sub.add_parser("tune", help="pick lm_weight and lm_bonus on a run's validation split")
    t.add_argument("run", help="run directory or weights.pt of a CTC line model")
    t.add_argument("--lm", required=True, help="the ARPA file")
    t.add_argument("--beam", type=int, default=16, help="beam width (default 16)")
    t.add_argument("--weights", default=",".join(f"{w:g}" for w in DEFAULT_WEIGHTS))
    t.add_argument("--bonuses", default=",".join(f"{b:g}" for b in DEFAULT_BONUSES))
    t.add_argument("--limit", type=int, default=None, help="first N validation lines only")
    t.add_argument("--json", default=None, help="write the grid and the best pair here")
    args = parser.parse_args(argv)
    return run_command(lambda: build(args) if args.command == "build" else tune(args))


if __name__ == "__main__":
    sys.exit(lm_main())
