"""Name-like text for synthetic lines: first and last names from Faker's per-locale lists.

Pretraining for handwritten name fields (the Kaggle names set: French forms, block capitals) wants
text that looks like its labels without ever reading them: the names come from a maintained
package (Faker's person providers, several European locales, French first), accents are folded to
A-Z, and names are upper-cased when the charset has no lower case. A line is one name (most
labels are), two names, a hyphenated pair (``JEAN-PIERRE``) or, for a share of lines, a new
name spliced from the start of one and the end of another, so the model learns letters rather
than a closed vocabulary.
"""

from __future__ import annotations

import importlib
import unicodedata

import numpy as np

from text_recognizer.errors import DataError

LOCALES = ("fr_FR", "en_US", "en_GB", "de_DE", "es_ES", "it_IT", "pt_PT", "nl_NL")
NAME_LISTS = ("first_names", "first_names_male", "first_names_female", "last_names")
# Shares of line shapes; the rest is one name from the lists.
TWO_NAMES, HYPHENATED, SPLICED = 0.10, 0.07, 0.20


def faker_version() -> str:
    """Faker's version: its lists change between releases, so it keys the cache of name lines."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("faker")
    except PackageNotFoundError:
        return "missing"


def fold_accents(text: str) -> str:
    """``Hélène`` -> ``Helene``: the Kaggle labels are written without accents."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def name_vocabulary(charset: str) -> list[str]:
    """Sorted distinct names of :data:`LOCALES` drawable in ``charset`` (case-folded to fit)."""
    names: set[str] = set()
    upper_only = not any(c.islower() for c in charset)
    allowed = set(charset)
    for locale in LOCALES:
        try:
            provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        except ImportError as e:
            raise DataError(
                f"text_source names needs Faker's {locale} names ({e}); pip install 'faker>=30'"
            ) from None
        for attribute in NAME_LISTS:
            for name in getattr(provider, attribute, ()):  # a tuple, or a dict of weights
                name = fold_accents(str(name)).strip()
                name = name.upper() if upper_only else name
                if name and set(name) <= allowed:
                    names.add(name)
    if not names:
        raise DataError(f"Faker's name lists have no name made only of {charset!r}")
    return sorted(names)


def name_lines(
    count: int, max_length: int, vocabulary: list[str], rng: np.random.Generator
) -> list[str]:
    """``count`` name-like lines of at most ``max_length`` characters."""
    words = np.array(vocabulary, dtype=object)
    picks = rng.integers(0, len(words), size=(count, 2))
    shape = rng.random(count)
    cuts = rng.random((count, 2))
    lines = []
    for n in range(count):
        a, b = words[picks[n, 0]], words[picks[n, 1]]
        s = shape[n]
        if s < TWO_NAMES:
            line = f"{a} {b}"
        elif s < TWO_NAMES + HYPHENATED:
            line = f"{a}-{b}"
        elif s < TWO_NAMES + HYPHENATED + SPLICED:
            # the first 1..len(a) letters of a, then the last 1..len(b) letters of b
            head = a[: 1 + int(cuts[n, 0] * len(a))]
            tail = b[len(b) - 1 - int(cuts[n, 1] * len(b)) :]
            line = head + tail.lower() if head[-1:].islower() else head + tail
        else:
            line = a
        lines.append(line[:max_length].strip() or a[:max_length])
    return lines
