"""Ground-truth text for page and paragraph images, read from the files IAM and FSDL publish.

Two formats, picked by the file's content:

- JSON: ``{"a01-077": "text"}`` or FSDL's ``data_by_file_id.json``
  (``{"a01-077": {"ground_truth_text": "text", ...}}``), lines separated by ``\\n``;
- IAM ``ascii/lines.txt``: the lines of each form, in order, joined with ``\\n``. Its words are
  tokens separated by ``|`` (``tomorrow|.|Mr.``), so punctuation and quotes are re-attached as
  printed text has them (``tomorrow. Mr.``, see :func:`detokenize`).

An image matches the entry whose id is its file stem, or the longest id its stem starts with
(``a01-000u-cropped.jpg`` -> form ``a01-000u``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from text_recognizer.errors import UserError

_CLOSING = frozenset(".,;:!?)]")
_OPENING = frozenset("([")
_CLITICS = frozenset(["'s", "'t", "'d", "'ll", "'re", "'ve", "'m", "n't"])


def detokenize(tokens: str) -> str:
    """IAM's space-separated tokens -> the text as written (``Peers . But`` -> ``Peers. But``).

    Punctuation and clitics (``'s``, ``n't``) join the word before; brackets join the word
    inside; a stand-alone ``"`` or ``'`` alternates between opening (joins the next word) and
    closing (joins the previous one). IAM's own spacing inside a token (``M Ps``) is kept, and so is
    its ``#`` for an unreadable word (it is in the image). Newlines separate lines; a quote opened
    on one line may close on a later one.
    """
    out: list[str] = []
    glue_next = False
    open_quote = {'"': False, "'": False}
    for token in tokens.replace("\n", " \n ").split(" "):
        if not token:
            continue
        if token == "\n":
            out.append(token)
            glue_next = True
            continue
        closing = token in _CLOSING or token in _CLITICS
        if token in open_quote:
            closing = open_quote[token]
            open_quote[token] = not closing
            opening = not closing
        else:
            opening = token in _OPENING
        if out and not glue_next and not closing:
            out.append(" ")
        out.append(token)
        glue_next = opening
    return "".join(out)


MAX_TRUTH_BYTES = 256 << 20  # IAM's lines.txt is 1.4 MB


def read_ground_truth(path: str | Path) -> dict[str, str]:
    """Image id -> text (lines joined by newlines) from a JSON or IAM ``lines.txt`` file."""

    path = Path(path)
    if path.is_dir():
        raise UserError(f"--ground-truth {path}: is a folder, not a file")
    if not path.exists():
        raise UserError(f"--ground-truth {path}: no such file")
    from text_recognizer.fileio import read_small_text

    text = read_small_text(path, MAX_TRUTH_BYTES, "--ground-truth", UserError, "utf-8-sig")
    if text.lstrip().startswith("{"):
        return _from_json(text, path)
    return _from_lines_txt(text, path)


def _from_json(text: str, path: Path) -> dict[str, str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise UserError(f"{path}: JSON nested too deeply to be ground truth") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object of id -> text")
    truth = {}
    for key, value in data.items():
        if isinstance(value, dict):
            value = value.get("ground_truth_text")
        if not isinstance(value, str):
            raise UserError(
                f"{path}: entry {key[:60]!r} must be a string or an object with 'ground_truth_text'"
            )
        truth[str(key)] = value
    return truth


def _from_lines_txt(text: str, path: Path) -> dict[str, str]:
    from text_recognizer.datasets.iam_lines import parse_lines_txt

    forms: dict[str, list[str]] = {}
    for line in parse_lines_txt(text, str(path)):
        forms.setdefault(line.form_id, []).append(line.text)
    if not forms:
        raise UserError(f"{path}: no IAM lines found (expected ascii/lines.txt rows)")
    return {form: detokenize("\n".join(lines)) for form, lines in forms.items()}


def merge_ground_truth(files: Iterable[str | Path]) -> dict[str, str]:
    """All files' entries; for an id in several files, the first file's entry wins.

    So put the exact source first (FSDL's JSON, taken from the IAM XML), then the tokenised
    ``lines.txt``.
    """
    truth: dict[str, str] = {}
    for file in files:
        for key, value in read_ground_truth(file).items():
            truth.setdefault(key, value)
    return truth


def truth_for(image: str | Path, truth: dict[str, str]) -> str | None:
    """The entry for an image: its stem, or the longest id the stem starts with followed by
    ``-``, ``_`` or ``.`` (``a01-000u-cropped`` -> ``a01-000u``; ``12`` never matches ``1``)."""
    stem = Path(image).stem
    if stem in truth:
        return truth[stem]
    prefixes = [key for key in truth if stem.startswith(key) and stem[len(key)] in "-_."]
    return truth[max(prefixes, key=len)] if prefixes else None
