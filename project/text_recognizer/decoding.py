"""Turning network outputs into label sequences: greedy, beam and LM CTC decoding, fixed-length.

Greedy CTC decoding (best path: argmax per frame, merge repeats, drop blanks) is vectorised in
torch over the whole batch; only the final split into per-sample lists is Python.

Beam search is flashlight-text's lexicon-free CTC prefix beam search (``LexiconFreeDecoder``),
with or without a character n-gram language model (KenLM, loaded from ARPA; ngram.py estimates
one, lm.py builds and tunes it). It used to be fast-ctc-decode, which has no LM hook and whose
beam search returns other texts than flashlight's on flat outputs (74 % agreement on random
posteriors), so "LM weight 0 equals plain beam search" could only hold if both ran on one
decoder. Trying the likeliest ``TOKEN_BEAM`` (8) classes per frame keeps flashlight as fast as
fast-ctc-decode was. On peaked outputs, like a trained network's, it gives the texts of trying all
classes: each of 300 peaked and 300 random 81-class posteriors in bench_decoding.py, and each of
the 60 peaked and 60 random 12-class outputs of tests/test_lm.py. On flat outputs (no class much
likelier than the others, as from an untrained network) it need not: 34 of that test's 60 flat
outputs decode to the same text. Each new character adds
``lm_weight * log10 P_lm(char | history) + lm_bonus`` to a hypothesis' score; the bonus
(flashlight's lexicon-free decoder has none) goes through a small Python LM wrapper, ~10x slower,
so a zero bonus passes KenLM to the decoder directly. LMs are loaded once per process, mapping and
version of the file. Greedy stays the default: it is much faster, and on
confident outputs beam search rarely changes the labels. The measurements
(``bench/bench_decoding.py``) are in bench/README.md.

Confidence of a decoded sequence is its CTC probability ``P(labels | image)`` (the sum over all
alignments), computed exactly with ``F.ctc_loss``: the same quantity whichever decoder chose the
labels, unlike the best-path probability.

A row of outputs holding NaN (a diverged network, fp16 overflow) is decoded greedily: flashlight
finds no hypothesis in it, and the caller gets a text (perhaps empty), never a crash.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from text_recognizer.datasets.text import BLANK_INDEX, PADDING_INDEX, SPECIAL_TOKENS
from text_recognizer.errors import UserError, one_line

if TYPE_CHECKING:  # torch is imported where a tensor is handled: the argument checks stay light
    import torch

DECODERS = ("greedy", "beam")
# Beam search costs time and memory in proportion to the width (bench/README.md has what very
# wide beams cost); widths past ~25 rarely change the text.
MAX_BEAM_WIDTH = 100
# Classes tried per frame: the likeliest 8 give the texts of all of them on peaked and random
# outputs (bench_decoding.py, tests/test_lm.py), not always on flat ones (34 of 60), at the speed
# fast-ctc-decode had (bench/README.md).
TOKEN_BEAM = 8
BEAM_THRESHOLD = 50.0  # hypotheses this far (natural log) below the best are dropped
DEFAULT_LM_BEAM = 16  # beam width when --lm is given without --beam
MAX_LM_WEIGHT = 10.0  # weights are on log10 LM scores; tuned values are 0.5-2
MAX_LM_BONUS = 50.0
MIN_LM_COVERAGE = 0.5  # an LM that knows fewer of the model's characters is refused


def _split_rows(tokens: torch.Tensor, keep: torch.Tensor) -> list[list[int]]:
    import torch

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
) -> list[list[int]]:
    """CTC prefix beam search (flashlight-text, no LM) over (B, T, C) probabilities."""
    import torch

    p = (
        probs.detach().float().cpu()
        if isinstance(probs, torch.Tensor)
        else torch.from_numpy(np.asarray(probs, dtype=np.float32))
    )
    return lm_ctc_decode(p.clamp_min(1e-30).log(), beam_width, None, 0.0, 0.0, blank, ignore)


def lm_ctc_decode(
    log_probs: torch.Tensor,
    beam_width: int,
    lm: LanguageModel | None,
    weight: float = 1.0,
    bonus: float = 0.0,
    blank: int = BLANK_INDEX,
    ignore: Iterable[int] = (PADDING_INDEX,),
) -> list[list[int]]:
    """CTC prefix beam search over (B, T, C) log-probabilities, each new character scored
    ``log P(c | frames) + weight * log10 P_lm(c | history) + bonus`` (``lm`` None: no LM term)."""
    from flashlight.lib.text.decoder import (
        CriterionType,
        LexiconFreeDecoder,
        LexiconFreeDecoderOptions,
        ZeroLM,
    )

    check_beam_width(beam_width)
    lp = np.ascontiguousarray(log_probs.detach().float().cpu().numpy(), dtype=np.float32)
    steps, classes = lp.shape[1], lp.shape[2]
    scorer, lm_weight = ZeroLM(), 0.0
    if lm is not None and bonus != 0.0:
        scorer, lm_weight = _bonus_lm(lm.kenlm, weight, bonus), 1.0
    elif lm is not None:
        scorer, lm_weight = lm.kenlm, weight
    options = LexiconFreeDecoderOptions(
        beam_size=beam_width,
        beam_size_token=min(classes, TOKEN_BEAM),
        beam_threshold=BEAM_THRESHOLD,
        lm_weight=lm_weight,
        sil_score=0.0,
        log_add=True,
        criterion_type=CriterionType.CTC,
    )
    decoder = LexiconFreeDecoder(options, scorer, blank, blank, [])
    ignore = tuple(ignore)
    skip = {blank, *ignore}
    out = []
    for i, row in enumerate(lp):
        # NaN (or +inf) scores leave flashlight with no hypothesis: such a row reads greedily
        results = [] if np.isnan(row).any() or np.isposinf(row).any() else None
        if results is None:
            results = decoder.decode(row.ctypes.data, steps, classes)
        if not results:
            out += greedy_ctc_decode(log_probs[i : i + 1], blank, ignore)
            continue
        path = list(results[0].tokens)[1:-1]
        merged = [t for j, t in enumerate(path) if j == 0 or t != path[j - 1]]
        out.append([t for t in merged if t >= 0 and t not in skip])
    return out


def check_beam_width(width: object, where: str = "beam width") -> int:
    """The width as an int if 1 <= width <= MAX_BEAM_WIDTH, else a ValueError saying what is valid."""
    if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= MAX_BEAM_WIDTH:
        raise ValueError(f"{where} must be an integer from 1 to {MAX_BEAM_WIDTH}, got {width!r}")
    return width


def check_lm_weights(
    weight: object, bonus: object, names: tuple[str, str] = ("lm_weight", "lm_bonus")
) -> tuple[float, float]:
    """(weight, bonus) as floats within bounds, else a ValueError saying what is valid."""
    for name, value, low, high in (
        (names[0], weight, 0.0, MAX_LM_WEIGHT),
        (names[1], bonus, -MAX_LM_BONUS, MAX_LM_BONUS),
    ):
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or not low <= value <= high:  # type: ignore[arg-type]
            raise ValueError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}")
    return float(weight), float(bonus)  # type: ignore[arg-type]


class LanguageModel:
    """A KenLM character model loaded for one model mapping (class index -> character)."""

    def __init__(self, path: str, mapping: Sequence[str]) -> None:
        from flashlight.lib.text.decoder.kenlm import KenLM
        from flashlight.lib.text.dictionary import Dictionary

        from text_recognizer.ngram import token_name

        self.path = path
        first = len(SPECIAL_TOKENS)  # blank and padding: never LM tokens (they map to <unk>)
        names = [f"<class{i}>" if i < first else token_name(c) for i, c in enumerate(mapping)]
        self.dictionary = Dictionary(names)
        with _quiet():  # KenLM prints a progress bar and hints to stdout/stderr
            self.kenlm = KenLM(path, self.dictionary)


_LOADED: dict[tuple[Any, ...], LanguageModel] = {}


def load_lm(path: str | Path, mapping: Sequence[str]) -> LanguageModel:
    """The LM at ``path`` for ``mapping``, loaded once per process and version of the file (its
    inode, size and modification time: a rewritten ARPA is loaded again). A missing, unreadable
    or corrupt file, or an LM that knows fewer than half of the mapping's characters, is a
    one-line UserError; one that lacks a few of them is a note."""
    resolved = str(Path(path).expanduser().resolve())
    try:
        info = os.stat(resolved)
    except (OSError, ValueError):
        info = None
    if info is None or not Path(resolved).is_file():
        raise UserError(f"language model {path}: no such file")
    key = (resolved, info.st_ino, info.st_size, info.st_mtime_ns, tuple(mapping))
    if key not in _LOADED:
        try:
            lm = LanguageModel(resolved, mapping)
        except Exception as e:  # KenLM raises RuntimeError subclasses with multi-line messages
            reason = kenlm_reason(str(e)) or type(e).__name__
            raise UserError(
                f"language model {path} is not a readable ARPA file: {reason}"
            ) from None
        check_coverage(path, mapping, arpa_unigrams(resolved))
        for old in [k for k in _LOADED if k[0] == resolved]:
            del _LOADED[old]  # an older version of the file
        _LOADED[key] = lm
    return _LOADED[key]


def kenlm_reason(message: str) -> str:
    """What KenLM says is wrong, without its C++ prefix (``... threw FormatLoadException because
    `...'.``), on one line of at most 200 characters."""
    reason = re.sub(r"^.*? threw \w+(?: because `.*?')?\.?\s*", "", message, count=1, flags=re.S)
    return one_line(reason, 200)


def arpa_unigrams(path: str | Path) -> set[str] | None:
    """The tokens of an ARPA file's 1-gram section (read up to its end only), or None when the
    file has none (not ARPA text, so nothing to compare)."""
    tokens: set[str] = set()
    inside = header = False
    with open(path, "rb") as f:
        for raw in f:
            line = raw.decode("utf-8", "replace").strip()
            if not inside:
                header = header or line == "\\data\\"
                if not header and f.tell() > 1 << 20:
                    return None  # no ARPA header in the first MB: a binary KenLM file
                inside = line == "\\1-grams:"
                continue
            if not line or line.startswith("\\"):
                return tokens
            fields = line.split()
            if len(fields) >= 2:
                tokens.add(fields[1])
    return tokens if inside else None


def check_coverage(path: str | Path, mapping: Sequence[str], unigrams: set[str] | None) -> None:
    """Compare the model's characters (blank and padding aside) with the LM's tokens: a note
    naming those the LM lacks, a UserError if it knows fewer than MIN_LM_COVERAGE of them."""
    from text_recognizer import progress
    from text_recognizer.ngram import token_name

    if unigrams is None:
        return
    chars = list(dict.fromkeys(mapping[len(SPECIAL_TOKENS) :]))
    missing = [c for c in chars if token_name(c) not in unigrams]
    if not chars or not missing:
        return
    shown = "".join(sorted(missing))[:80]
    covered = len(chars) - len(missing)
    if covered < MIN_LM_COVERAGE * len(chars):
        raise UserError(
            f"language model {path} knows only {covered} of the model's {len(chars)} characters "
            f"(it lacks {shown!r}): it was built for other text"
        )
    progress.line(
        f"note: language model {path} lacks {len(missing)} of the model's {len(chars)} "
        f"characters ({shown!r}); they get its <unk> score"
    )


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence file descriptors 1 and 2 (C++ output bypasses sys.stdout)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _bonus_lm(kenlm: Any, weight: float, bonus: float) -> Any:
    from flashlight.lib.text.decoder import LM

    class BonusLM(LM):
        """``weight * log10 P + bonus`` per character: flashlight's lexicon-free decoder has no
        insertion bonus of its own. Python per call, so ~10x slower than KenLM alone."""

        def __init__(self) -> None:
            LM.__init__(self)

        def start(self, start_with_nothing: bool) -> Any:
            return kenlm.start(start_with_nothing)

        def score(self, state: Any, token: int) -> tuple[Any, float]:
            next_state, score = kenlm.score(state, token)
            return next_state, weight * score + bonus

        def finish(self, state: Any) -> tuple[Any, float]:
            next_state, score = kenlm.finish(state)
            return next_state, weight * score

    return BonusLM()


@dataclass(frozen=True)
class Decoder:
    """How a CTC model's frames become text: ``greedy`` (best path) or ``beam`` search, the
    latter optionally with a character n-gram LM (``lm`` path, ``lm_weight``, ``lm_bonus``).

    A decoder is passed to ``predict`` / ``evaluate`` explicitly, so a predictor that reads with
    beam search never changes the model another caller shares.
    """

    method: str = "greedy"
    beam_width: int = 10
    lm: str | None = None
    lm_weight: float = 1.0
    lm_bonus: float = 0.0
    # The LM read from ``lm`` once (`loaded`): a predictor, and a server above all, then reads
    # with what it checked at start, whatever later happens to the file.
    lm_model: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.method not in DECODERS:
            raise ValueError(f"decode must be one of {', '.join(DECODERS)}, got {self.method!r}")
        check_beam_width(self.beam_width)
        check_lm_weights(self.lm_weight, self.lm_bonus)
        if self.lm is not None and not isinstance(self.lm, str):
            raise ValueError(f"lm must be the path of an ARPA file, got {self.lm!r:.40}")
        if self.lm is not None and self.method != "beam":
            raise ValueError("a language model needs beam search (decode 'beam')")

    def describe(self) -> dict[str, Any]:
        """What a report or an exported model records of this decoder (JSON-ready)."""
        return {
            "method": self.method,
            "beam_width": self.beam_width if self.method == "beam" else 1,
            "lm": self.lm,
            "lm_weight": self.lm_weight if self.lm else None,
            "lm_bonus": self.lm_bonus if self.lm else None,
        }

    def loaded(self, mapping: Sequence[str]) -> Decoder:
        """This decoder with its LM read now (`load_lm`: a missing or corrupt file fails here)."""
        if self.lm is None:
            return self
        return replace(self, lm_model=load_lm(self.lm, mapping))

    @classmethod
    def with_beam(cls, beam: int | None) -> Decoder:
        """The decoder a ``--beam N`` option asks for: greedy for None or 1, else beam search."""
        return cls() if beam is None or beam == 1 else cls("beam", beam)

    @classmethod
    def with_lm(cls, beam: int | None, lm: str, weight: float, bonus: float) -> Decoder:
        """The decoder ``--lm`` asks for: beam search of width ``beam`` (default DEFAULT_LM_BEAM)."""
        return cls("beam", beam or DEFAULT_LM_BEAM, lm, weight, bonus)

    def decode(
        self, log_probs: torch.Tensor, mapping: Sequence[str], blank: int, ignore: Iterable[int]
    ) -> list[list[int]]:
        """(B, T, C) log-probabilities -> class-index sequences, as this decoder says."""
        if self.method == "greedy":
            return greedy_ctc_decode(log_probs, blank, ignore)
        lm = self.lm_model
        if lm is None and self.lm is not None:
            lm = load_lm(self.lm, mapping)
        return lm_ctc_decode(
            log_probs, self.beam_width, lm, self.lm_weight, self.lm_bonus, blank, ignore
        )


GREEDY = Decoder()


def decoder_from(train_args: Any) -> Decoder:
    """The decoder ``train_args`` (a TrainArgs or a run config's dict) ask for at evaluation."""
    get = train_args.get if isinstance(train_args, dict) else lambda k: getattr(train_args, k)
    if get("decode") != "beam":
        return GREEDY
    weight, bonus = get("lm_weight"), get("lm_bonus")
    return Decoder(
        "beam",
        int(get("beam_width") or 10),
        get("lm"),
        1.0 if weight is None else float(weight),
        0.0 if bonus is None else float(bonus),
    )


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
    import torch
    import torch.nn.functional as F

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
    rows = labels.tolist() if hasattr(labels, "tolist") else np.asarray(labels).tolist()
    return to_texts(rows, mapping)
