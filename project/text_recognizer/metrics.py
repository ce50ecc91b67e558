"""Text metrics as (numerator, denominator) pairs, so batches and splits add up exactly.

- CER: character edit distance (Levenshtein, from rapidfuzz) / reference characters.
- WER: word edit distance (words split on whitespace) / reference words.
- character accuracy (the Kaggle names seed's definition): the prediction and the label are
  compared position by position over the label's characters (its non-padding positions), so a
  missing or extra character early on shifts everything after it; / reference characters.
- word accuracy: a label counts as correct only if all its characters are, i.e. the prediction
  equals it exactly; / labels. For a line that is line accuracy; for a name, name accuracy.

A ratio over a split is ``sum(numerators) / sum(denominators)``, never a mean of per-batch ratios.
"""

from __future__ import annotations

from collections.abc import Sequence

from rapidfuzz.distance import Levenshtein

METRICS = ("cer", "wer", "char_accuracy", "word_accuracy")


def char_edits(prediction: str, target: str) -> int:
    """Insertions + deletions + substitutions turning ``prediction`` into ``target``."""
    return Levenshtein.distance(prediction, target)


def word_edits(prediction: str, target: str) -> int:
    """Edit distance over whitespace-separated words (rapidfuzz compares lists of strings)."""
    return Levenshtein.distance(prediction.split(), target.split())


def char_matches(prediction: str, target: str) -> int:
    """Positions of ``target`` where ``prediction`` has the same character."""
    return sum(p == t for p, t in zip(prediction, target, strict=False))


def cer(prediction: str, target: str) -> float:
    """One pair's CER; an empty target gives 0 for an empty prediction, else 1 per extra char."""
    return char_edits(prediction, target) / max(len(target), 1)


def text_metrics(predictions: Sequence[str], targets: Sequence[str]) -> dict[str, tuple[int, int]]:
    """All four metrics for a batch as (numerator, denominator) pairs."""
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    chars = sum(len(t) for t in targets)
    words = sum(len(t.split()) for t in targets)
    return {
        "cer": (sum(char_edits(p, t) for p, t in zip(predictions, targets, strict=True)), chars),
        "wer": (sum(word_edits(p, t) for p, t in zip(predictions, targets, strict=True)), words),
        "char_accuracy": (
            sum(char_matches(p, t) for p, t in zip(predictions, targets, strict=True)),
            chars,
        ),
        "word_accuracy": (
            sum(p == t for p, t in zip(predictions, targets, strict=True)),
            len(targets),
        ),
    }
