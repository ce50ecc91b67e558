"""Text for synthetic lines: Brown corpus phrases (NLTK's ``brown.zip``) and random digit strings.

The corpus is read from its tagged text members only (``categories.pickle`` is never unpickled);
``/tag`` suffixes are stripped and the text minimally detokenised.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from text_recognizer import paths
from text_recognizer.datasets.files import open_zip
from text_recognizer.errors import DataError

CORPUS_NAME = "brown"  # data/raw/brown/ holds brown.zip and its metadata.toml (shared by datasets)
CORPUS_FILE = "brown.zip"
DIGIT_SPACE_PROB = 0.15  # digit lines: chance that a position (not first/last) is a space


_BROWN_TEXT = re.compile(r"(^|/)c[a-r]\d\d$")


def read_brown_sentences(path: Path) -> list[str]:
    """Detokenised sentences of NLTK's ``brown.zip``, from its tagged text members only.

    Each member holds sentences of ``word/tag`` tokens, one per line. The zip also carries
    ``categories.pickle``; it is never touched (unpickling is code execution).
    """
    zf = open_zip(path, "corpus file")
    sentences: list[str] = []
    with zf:
        members = sorted(n for n in zf.namelist() if _BROWN_TEXT.search(n))
        if not members:
            raise DataError(
                f"corpus file {path} has no Brown text members (brown/ca01 .. brown/cr09); "
                "is it NLTK's brown.zip?"
            )
        for name in members:
            try:
                raw = zf.read(name).decode("utf-8", errors="replace")
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
                raise DataError(f"corpus file {path}: member {name} is damaged ({e})") from None
            for line in raw.splitlines():
                tokens = line.split()
                if tokens:
                    sentences.append(detokenize(t.rsplit("/", 1)[0] for t in tokens))
    return sentences


_NO_SPACE_BEFORE = re.compile(r" ([.,;:!?%)\]}]|''|n't\b)")
_NO_SPACE_AFTER = re.compile(r"(``|[(\[{$]) ")


def detokenize(words: Iterable[str]) -> str:
    """Join tokens the way text is written: no space before ``, . ; : ! ? )``, quotes as ``"``."""
    text = " ".join(words)
    text = _NO_SPACE_AFTER.sub(r"\1", _NO_SPACE_BEFORE.sub(r"\1", text))
    return text.replace("``", '"').replace("''", '"')


def fold_case(text: str, charset: str) -> str:
    """Map characters the set lacks to their other case when the set has that one."""
    table = {}
    for ch in set(text):
        if ch in charset:
            continue
        for alt in (ch.upper(), ch.lower()):
            if len(alt) == 1 and alt in charset:
                table[ord(ch)] = alt
                break
    return text.translate(table) if table else text


class PhraseSampler:
    """Random runs of whole words from a corpus, restricted to a character set (vectorised).

    The sentences become one string of segments separated by newlines: tokens holding characters
    outside ``charset`` (after stripping leading/trailing punctuation the set lacks, and case
    folding) end a segment, and so does a word longer than ``max_length``. A phrase starts at a
    uniformly drawn word and ends at a uniformly drawn later word of the same segment, so that it
    is at most ``max_length`` characters long.
    """

    def __init__(self, sentences: list[str], charset: str, max_length: int) -> None:
        allowed = set(charset) | {" "}
        text = fold_case("\n".join(sentences), charset)
        bad = "".join(sorted({c for c in set(text) if c not in allowed and c != "\n"}))
        if bad:
            cls = "[" + re.escape(bad) + "]"
            text = re.sub(rf"{cls}+(?=[ \n]|$)", "\n", text)  # trailing punctuation
            text = re.sub(rf"(?:(?<=[ \n])|^){cls}+", "\n", text)  # leading punctuation
            text = re.sub(
                rf"(?<![^ \n])[^ \n]*{cls}[^ \n]*", "\n", text
            )  # tokens still holding any
        text = re.sub(r" *\n[ \n]*", "\n", text)
        self.text = re.sub(r" {2,}", " ", text)
        codes = np.frombuffer(self.text.encode("utf-32-le"), dtype=np.uint32)  # index = str index
        sep = (codes == ord(" ")) | (codes == ord("\n"))
        starts = np.flatnonzero(~sep & np.r_[True, sep[:-1]])
        ends = np.flatnonzero(~sep & np.r_[sep[1:], True]) + 1
        if len(starts) == 0:
            raise DataError(f"the corpus has no words made only of {charset!r}")
        breaks = np.flatnonzero(codes == ord("\n"))
        long = (ends - starts) > max_length
        segment = np.searchsorted(breaks, starts) + np.cumsum(long)
        keep = ~long
        self.starts, self.ends, segment = starts[keep], ends[keep], segment[keep]
        self.segment_last = np.searchsorted(segment, segment, side="right") - 1
        self.max_length = max_length

    def sample(self, count: int, rng: np.random.Generator) -> list[str]:
        first = rng.integers(0, len(self.starts), size=count)
        limit = self.starts[first] + self.max_length
        last = np.searchsorted(self.ends, limit, side="right") - 1
        last = np.maximum(np.minimum(last, self.segment_last[first]), first)
        end = first + (rng.random(count) * (last - first + 1)).astype(np.int64)
        a, b = self.starts[first].tolist(), self.ends[end].tolist()
        return [self.text[i:j] for i, j in zip(a, b, strict=True)]


def digit_strings(count: int, max_length: int, rng: np.random.Generator) -> list[str]:
    """Digit groups separated by single spaces, total length uniform in 1..max_length."""
    lengths = rng.integers(1, max_length + 1, size=count)
    chars = rng.integers(0, 10, size=(count, max_length)).astype(np.uint8) + ord("0")
    space = rng.random((count, max_length)) < DIGIT_SPACE_PROB
    space[:, 0] = False
    space[np.arange(count), lengths - 1] = False
    for i in range(1, max_length):  # no two spaces in a row (loop over positions, not lines)
        space[:, i] &= ~space[:, i - 1]
    chars[space] = ord(" ")
    rows = chars.view(f"S{max_length}").reshape(count)
    return [r[:n].decode() for r, n in zip(rows.tolist(), lengths.tolist(), strict=True)]


def corpus_path(corpus_dir: Path | None) -> Path:
    """``brown.zip`` in a user folder, or under data/raw/brown/ (downloaded there on demand)."""
    return (corpus_dir or paths.raw_dir(CORPUS_NAME)) / CORPUS_FILE


def ensure_corpus(corpus_dir: Path | None) -> Path:
    """The corpus path, downloading it (per data/raw/brown/metadata.toml) when no folder is given."""
    path = corpus_path(corpus_dir)
    if path.is_file():
        return path
    if corpus_dir is not None:
        raise DataError(
            f"corpus folder {corpus_dir} has no {CORPUS_FILE}; place NLTK's {CORPUS_FILE} there "
            f"(e.g. from ../shared/data/corpus) or leave corpus_dir unset to download it"
        )
    from text_recognizer.datasets.download import ensure_downloaded

    ensure_downloaded(paths.metadata_path(CORPUS_NAME), paths.raw_dir(CORPUS_NAME))
    if not path.is_file():
        raise DataError(f"after download, {path} is still missing; check its metadata.toml")
    return path
