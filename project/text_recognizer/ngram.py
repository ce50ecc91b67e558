"""Character n-gram language models: interpolated modified Kneser-Ney, written as ARPA text.

KenLM's estimator (``lmplz``) is not pip-installable and no Debian package here ships it, so the
estimate is made here, in pure Python, the way ``lmplz`` makes it (Chen & Goodman 1998; Heafield
et al. 2013): adjusted counts (raw counts for the highest order and for n-grams that start with
``<s>``, else the number of distinct left contexts), three discounts per order from the counts of
counts, interpolation down to a uniform distribution over the vocabulary. The ARPA file (log10
probabilities and backoff weights) loads in KenLM, which the decoder queries.

Tokens are characters. ARPA separates tokens by whitespace, so the space character is written as
:data:`SPACE_TOKEN`; every other whitespace character in the text is read as a space. Each text
line is one sentence between ``<s>`` and ``</s>``. The IAM text (a 6-gram over ~10 k lines) is
estimated in a few seconds.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SPACE_TOKEN = "<space>"
BOS, EOS, UNK = "<s>", "</s>", "<unk>"
# Inside the estimator a sentence is a str: <s> and </s> are private-use characters, so an n-gram
# is a plain substring (fast to count and slice).
_BOS, _EOS, _UNK = "\U000f0001", "\U000f0002", "\U000f0003"
# Discounts when the counts of counts give none valid (tiny texts), as lmplz --discount_fallback.
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)
MAX_ORDER = 10
LOG10_ZERO = -99.0  # ARPA's "never": <s> is never predicted


def token_name(char: str) -> str:
    """The ARPA token of one character of text (of the model's mapping)."""
    if char == _BOS:
        return BOS
    if char == _EOS:
        return EOS
    if char == _UNK:
        return UNK
    return SPACE_TOKEN if char.isspace() else char


def normalize(text: str) -> str:
    """A line as the LM sees it: surrounding whitespace dropped (a model never reads a line's
    margins as spaces), other whitespace inside (tabs, no-break spaces) a plain space."""
    return "".join(" " if c.isspace() else c for c in text.strip())


@dataclass
class NgramModel:
    """Interpolated probabilities and backoff weights (natural numbers, not logs) per order."""

    order: int
    prob: list[dict[str, float]] = field(default_factory=list)  # prob[n][ngram], n = 1..order
    backoff: list[dict[str, float]] = field(default_factory=list)  # backoff[n][context]
    discounts: list[tuple[float, float, float]] = field(default_factory=list)
    sentences: int = 0
    characters: int = 0

    def probability(self, context: str, char: str) -> float:
        """P(char | context) the way an ARPA reader computes it (backing off): for tests."""
        context = context[-(self.order - 1) :] if self.order > 1 else ""
        weight = 1.0
        for start in range(len(context)):
            ngram = context[start:] + char
            p = self.prob[len(ngram)].get(ngram)
            if p is not None:
                return weight * p
            weight *= self.backoff[len(ngram) - 1].get(context[start:], 1.0)
        return weight * self.prob[1].get(char, self.prob[1][_UNK])


def _discounts(adjusted: Counter[str]) -> tuple[float, float, float]:
    """D1, D2, D3+ from the counts of (adjusted) counts; the fallback where they are undefined."""
    t = Counter(c for c in adjusted.values() if c <= 4)
    t1, t2, t3, t4 = (t.get(k, 0) for k in (1, 2, 3, 4))
    if not (t1 and t2 and t3 and t4):
        return FALLBACK_DISCOUNTS
    y = t1 / (t1 + 2 * t2)
    d = (1 - 2 * y * t2 / t1, 2 - 3 * y * t3 / t2, 3 - 4 * y * t4 / t3)
    if not all(0 < dk <= k + 1 for k, dk in enumerate(d)):
        return FALLBACK_DISCOUNTS
    return d


def estimate(
    lines: Iterable[str],
    order: int = 6,
    discounts: Sequence[tuple[float, float, float]] | None = None,
) -> NgramModel:
    """Interpolated modified Kneser-Ney over the characters of ``lines`` (one sentence each).

    ``discounts``: fixed (D1, D2, D3+) per order 1..order instead of the estimated ones (tests).
    """
    if not 1 <= order <= MAX_ORDER:
        raise ValueError(f"order must be from 1 to {MAX_ORDER}, got {order}")
    counts: list[Counter[str]] = [Counter() for _ in range(order + 1)]
    model = NgramModel(order)
    for line in lines:
        text = normalize(line)
        if not text.strip():
            continue
        padded = _BOS + text + _EOS
        model.sentences += 1
        model.characters += len(text)
        for n in range(1, order + 1):  # every n-gram that predicts a token (never <s> itself)
            start = 1 if n == 1 else 0
            counts[n].update(padded[j : j + n] for j in range(start, len(padded) - n + 1))
    if not model.sentences:
        raise ValueError("no text to estimate a language model from")
    adjusted = _adjusted_counts(counts, order)
    vocabulary = [g for g in adjusted[1] if g != _BOS] + [_UNK]
    model.prob = [{} for _ in range(order + 1)]
    model.backoff = [{} for _ in range(order + 1)]
    model.discounts = [(0.0, 0.0, 0.0)] + [
        tuple(discounts[n - 1]) if discounts else _discounts(adjusted[n])  # type: ignore[misc]
        for n in range(1, order + 1)
    ]
    for n in range(1, order + 1):
        _interpolate(model, adjusted[n], n, len(vocabulary))
    model.prob[1][_UNK] = model.backoff[0][""] / len(vocabulary)
    model.prob[1][_BOS] = 0.0
    return model


def _adjusted_counts(counts: list[Counter[str]], order: int) -> list[Counter[str]]:
    """Raw counts at the highest order and for n-grams that start with <s>; below, the number of
    distinct tokens seen before the n-gram (Kneser-Ney's continuation counts)."""
    adjusted: list[Counter[str]] = [Counter() for _ in range(order + 1)]
    adjusted[order] = counts[order]
    for n in range(order - 1, 0, -1):
        continuation: Counter[str] = Counter(g[1:] for g in counts[n + 1])
        adjusted[n] = Counter(
            {g: c if g[0] == _BOS else continuation[g] for g, c in counts[n].items()}
        )
    adjusted[1][_BOS] = 0  # <s> is a context only; kept so that it gets a backoff weight
    return adjusted


def _interpolate(model: NgramModel, adjusted: Counter[str], n: int, vocabulary: int) -> None:
    """prob[n] = discounted estimate + backoff(context) * prob[n - 1] of the shorter n-gram."""
    d = model.discounts[n]
    totals: Counter[str] = Counter()
    mass: Counter[str] = Counter()
    for g, c in adjusted.items():
        if c:
            totals[g[:-1]] += c
            mass[g[:-1]] += d[min(c, 3) - 1]
    gamma = {h: mass[h] / totals[h] for h in totals}
    model.backoff[n - 1] = gamma
    lower = model.prob[n - 1] if n > 1 else None
    prob = model.prob[n]
    for g, c in adjusted.items():
        if not c:
            continue
        h = g[:-1]
        shorter = lower[g[1:]] if lower is not None else 1.0 / vocabulary
        prob[g] = (c - d[min(c, 3) - 1]) / totals[h] + gamma[h] * shorter


def arpa_text(model: NgramModel) -> str:
    """The model as ARPA text: log10 probabilities, log10 backoff weights where not 0."""

    def tokens(g: str) -> str:
        return " ".join(token_name(c) for c in g)

    def log10(p: float) -> float:
        return math.log10(p) if p > 0 else LOG10_ZERO

    sections = ["", "\\data\\"]
    sections += [f"ngram {n}={len(model.prob[n])}" for n in range(1, model.order + 1)]
    for n in range(1, model.order + 1):
        sections += ["", f"\\{n}-grams:"]
        backoff = model.backoff[n] if n < model.order else {}
        for g in sorted(model.prob[n]):
            row = f"{log10(model.prob[n][g]):.6f}\t{tokens(g)}"
            if backoff.get(g, 0) > 0:
                row += f"\t{math.log10(backoff[g]):.6f}"
            sections.append(row)
    sections += ["", "\\end\\", ""]
    return "\n".join(sections)


def write_arpa(model: NgramModel, path: str | Path) -> None:
    """Write the ARPA file atomically (a killed build never leaves half a model)."""
    from text_recognizer.fileio import write_text_atomic

    write_text_atomic(path, arpa_text(model))
