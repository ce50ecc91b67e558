"""Turning network outputs into label sequences: greedy and beam CTC decoding, fixed-length decoding.

Greedy CTC decoding (best path: argmax per frame, merge repeats, drop blanks) is vectorised in
torch over the whole batch; only the final split into per-sample lists is Python.

Beam search uses ``fast-ctc-decode`` (nanoporetech, Rust, on PyPI, last release 2025): of the
maintained CPU decoders that install here it is the fastest at the same width (flashlight-text's
lexicon-free decoder is the other; ``pyctcdecode`` is pure Python and far slower; ``ctcdecode``
does not build), takes a numpy array per sample, needs no language-model plumbing, and has wheels
for Linux, macOS and Windows. We have no lexicon or n-gram LM for handwriting; if one is added,
flashlight-text (lexicon + KenLM) is the one to switch to. Greedy stays the default: it is much
faster, and on confident outputs beam search rarely changes the labels. The measurements behind
these choices (``bench/bench_decoding.py``) are in bench/README.md.

Confidence of a decoded sequence is its CTC probability ``P(labels | image)`` (the sum over all
alignments), computed exactly with ``F.ctc_loss``: the same quantity whichever decoder chose the
labels, unlike the best-path probability.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from text_recognizer.datasets.text import BLANK_INDEX, PADDING_INDEX, SPECIAL_TOKENS

DECODERS = ("greedy", "beam")
# Beam search costs time and memory in proportion to the width (bench/README.md has what very
# wide beams cost); widths past ~25 rarely change the text.
MAX_BEAM_WIDTH = 100
# fast-ctc-decode returns a string of its alphabet's labels; one private-use code point per class
# (Unicode plane 15) maps it back to class indices whatever characters the mapping holds.
_CODE_BASE = 0xF0000


def _split_rows(tokens: torch.Tensor, keep: torch.Tensor) -> list[list[int]]:
    counts = keep.sum(1).tolist()
    return [row.tolist() for row in torch.split(tokens[keep], counts)]


def greedy_ctc_decode(
    log_probs: torch.Tensor, blank: int = BLANK_INDEX, ignore: Iterable[int] = (PADDING_INDEX,)
) -> list[list[int]]:
    """Best path per sample of (B, T, C) scores: argmax, merge repeats, drop blank and ``ignore``."""
    best = log_probs.argmax(-1)
    keep = best != blank
    keep[:, 1:] &= best[:, 1:] != best[:, :-1]
    for index in ignore:
        keep &= best != index
    return _split_rows(best.cpu(), keep.cpu())


def beam_ctc_decode(
    probs: torch.Tensor | np.ndarray,
    beam_width: int = 10,
    blank: int = BLANK_INDEX,
    ignore: Iterable[int] = (PADDING_INDEX,),
    beam_cut_threshold: float | None = None,
) -> list[list[int]]:
    """CTC prefix beam search (fast-ctc-decode) over (B, T, C) probabilities, not log-probabilities."""
    from fast_ctc_decode import beam_search

    check_beam_width(beam_width)
    p = probs.detach().float().cpu().numpy() if isinstance(probs, torch.Tensor) else probs
    p = np.asarray(p, dtype=np.float32)
    num_classes = p.shape[-1]
    order = np.arange(num_classes)
    if blank != 0:  # fast-ctc-decode wants the blank first
        order = np.r_[blank, np.delete(order, blank)]
        p = p[..., order]
    alphabet = [chr(_CODE_BASE + int(i)) for i in order]
    # frames below the threshold are pruned; the library needs it < 1 / classes
    threshold = min(1e-3, 0.5 / num_classes) if beam_cut_threshold is None else beam_cut_threshold
    skip = {blank, *ignore}
    out = []
    for sample in p:
        labels, _ = beam_search(np.ascontiguousarray(sample), alphabet, beam_width, threshold)
        indices = (ord(c) - _CODE_BASE for c in labels)
        out.append([i for i in indices if i not in skip])
    return out


def check_beam_width(width: object, where: str = "beam width") -> int:
    """The width as an int if 1 <= width <= MAX_BEAM_WIDTH, else a ValueError saying what is valid."""
    if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= MAX_BEAM_WIDTH:
        raise ValueError(f"{where} must be an integer from 1 to {MAX_BEAM_WIDTH}, got {width!r}")
    return width


@dataclass(frozen=True)
class Decoder:
    """How a CTC model's frames become text: ``greedy`` (best path) or ``beam`` search.

    A decoder is passed to ``predict`` / ``evaluate`` explicitly, so a predictor that reads with
    beam search never changes the model another caller shares.
    """

    method: str = "greedy"
    beam_width: int = 10

    def __post_init__(self) -> None:
        if self.method not in DECODERS:
            raise ValueError(f"decode must be one of {', '.join(DECODERS)}, got {self.method!r}")
        check_beam_width(self.beam_width)

    @classmethod
    def with_beam(cls, beam: int | None) -> Decoder:
        """The decoder a ``--beam N`` option asks for: greedy for None or 1, else beam search."""
        return cls() if beam is None or beam == 1 else cls("beam", beam)


GREEDY = Decoder()


def fixed_length_decode(
    logits: torch.Tensor, padding: int = PADDING_INDEX, blank: int = BLANK_INDEX
) -> list[list[int]]:
    """LineModel outputs (B, L, C): argmax per position; the text ends at the first padding."""
    best = logits.argmax(-1)
    ended = (best == padding).cumsum(1) > 0
    keep = ~ended & (best != blank)
    return _split_rows(best.cpu(), keep.cpu())


def sequence_probability(
    log_probs: torch.Tensor, sequences: Sequence[Sequence[int]], blank: int = BLANK_INDEX
) -> torch.Tensor:
    """P(sequence | frames) per sample, summed over all CTC alignments; (B, T, C) log-probs in."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    targets = torch.tensor([i for s in sequences for i in s], dtype=torch.long)
    frames = torch.full((len(sequences),), log_probs.shape[1], dtype=torch.long)
    nll = F.ctc_loss(
        log_probs.float().cpu().transpose(0, 1),
        targets,
        frames,
        lengths,
        blank=blank,
        reduction="none",
        zero_infinity=False,
    )
    return torch.exp(-nll)


def to_texts(sequences: Iterable[Iterable[int]], mapping: Sequence[str]) -> list[str]:
    """Class-index sequences -> strings; special tokens (blank, padding) are dropped."""
    first = len(SPECIAL_TOKENS)
    return ["".join(mapping[i] for i in seq if i >= first) for seq in sequences]


def label_texts(labels: torch.Tensor | np.ndarray, mapping: Sequence[str]) -> list[str]:
    """Padded (N, max_length) label rows -> strings."""
    rows = labels.tolist() if isinstance(labels, torch.Tensor) else np.asarray(labels).tolist()
    return to_texts(rows, mapping)
