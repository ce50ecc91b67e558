"""The contract for text (line and word) datasets: token mapping, label encoding and decoding.

Every text dataset maps class index -> token with two special tokens first, so one dataset serves
both line models: index 0 is the CTC blank (never a target) and index 1 pads a label to
``max_length`` (the fixed-length ``LineModel`` predicts it after the text ends). Labels are stored
as ``(N, max_length)`` int64 arrays.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

BLANK = "<blank>"
PAD = "<pad>"
BLANK_INDEX = 0
PADDING_INDEX = 1
SPECIAL_TOKENS = (BLANK, PAD)


def make_mapping(characters: Iterable[str]) -> list[str]:
    """[blank, pad, *characters] with duplicates dropped, order kept."""
    seen: dict[str, None] = {}
    for ch in characters:
        if len(ch) != 1:
            raise ValueError(f"mapping characters must be single characters, got {ch!r}")
        seen.setdefault(ch, None)
    return [*SPECIAL_TOKENS, *seen]


def _label_index(mapping: Sequence[str]) -> dict[str, int]:
    return {tok: i for i, tok in enumerate(mapping)}


def _indices(text: str, index: dict[str, int], max_length: int) -> list[int]:
    """The class indices of ``text``; ValueError names what does not fit."""
    unknown = sorted({ch for ch in text if ch not in index or index[ch] < len(SPECIAL_TOKENS)})
    if unknown:
        raise ValueError(f"characters outside the mapping: {''.join(unknown)!r}")
    if len(text) > max_length:
        raise ValueError(f"label of {len(text)} characters is longer than max_length {max_length}")
    return [index[ch] for ch in text]


def encode(text: str, mapping: Sequence[str], max_length: int) -> np.ndarray:
    """One label as a padded index row; ValueError names what does not fit."""
    row = np.full(max_length, PADDING_INDEX, dtype=np.int64)
    row[: len(text)] = _indices(text, _label_index(mapping), max_length)
    return row


def encode_many(texts: Sequence[str], mapping: Sequence[str], max_length: int) -> np.ndarray:
    """Labels for many texts at once, (N, max_length) int64."""
    out = np.empty((len(texts), max_length), dtype=np.int64)
    encode_into(out, texts, mapping)
    return out


def encode_into(out: np.ndarray, texts: Iterable[str], mapping: Sequence[str]) -> None:
    """The labels of ``texts`` (an iterable: a stream will do) written into the rows of ``out``,
    (N, max_length), as `encode_many` makes them: large label arrays are built once, in place."""
    index, max_length = _label_index(mapping), out.shape[1]
    out.fill(PADDING_INDEX)
    count = 0
    for count, text in enumerate(texts, 1):
        if count > len(out):
            raise ValueError(f"more texts than the {len(out)} rows to encode them into")
        out[count - 1, : len(text)] = _indices(text, index, max_length)
    if count != len(out):
        raise ValueError(f"{count} texts for {len(out)} rows")


def decode(indices: Iterable[int], mapping: Sequence[str]) -> str:
    """Index row -> text, dropping blank and padding tokens."""
    return "".join(mapping[i] for i in indices if i >= len(SPECIAL_TOKENS))


def text_config(mapping: Sequence[str], max_length: int) -> dict:
    """The extra fields a text dataset adds to ``Dataset.config()``."""
    return {
        "output_shape": [max_length, len(mapping)],
        "max_length": max_length,
        "blank_index": BLANK_INDEX,
        "padding_index": PADDING_INDEX,
    }
