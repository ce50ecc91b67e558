"""Text for synthetic lines with no download: the charsets and lines of common English words.

A small fixed vocabulary keeps the quick start offline; capitals, numbers and (for the ``text``
charset) punctuation are mixed in so every character of the charset appears.
"""

from __future__ import annotations

import string

import numpy as np

CHARSETS = {
    "digits": string.digits,
    "digits_upper": string.digits + string.ascii_uppercase,
    "alphanumeric": string.digits + string.ascii_uppercase + string.ascii_lowercase,
    "text": string.digits + string.ascii_uppercase + string.ascii_lowercase + ".,;:!?'\"()-&/",
    # handwritten name fields (the Kaggle names' alphabet): capitals, hyphen, apostrophe
    "names": string.ascii_uppercase + "-'",
}
# Common English words (a small, fixed vocabulary so the dataset needs no download).
_VOCABULARY = """
the of and to in is was he for it with as his on be at by had not are but from or have an they
which one you were her all she there would their we him been has when who will more no if out so
said what up its about into than them can only other new some could time these two may then do
first any my now such like our over man me even most made after also did many before must through
back years where much your way well down should because each just those people how too little
state good very make world still own see men work long get here between both life being under
never day same another know while last might us great old year off come since against go came
right used take three himself few house use during without again place around however home small
found thought went say part once general high upon school every don't does got united left number
course war until always away something fact though water less public put think almost hand enough
far took head yet government system better set told nothing night end why called didn't eyes find
going look asked later knew point next city business give group toward young let room president
side social given present several order national possible rather second face per among form often
early white case become large big need four within felt along children saw best church ever least
power development light thing seemed family interest want members others mind country area done
turned although open problem sense certain kind different thus began door help means whole morning
"""
WORDS = tuple(_VOCABULARY.split())


def word_lines(count: int, max_length: int, charset: str, rng: np.random.Generator) -> list[str]:
    """Lines of vocabulary words, numbers and (``text``) punctuation, up to ``max_length`` long."""
    allowed = set(CHARSETS[charset])
    words = [
        w for w in WORDS if len(w) <= max_length and set(w) <= allowed | set(string.ascii_lowercase)
    ]
    if charset != "text":
        words = [w for w in words if "'" not in w]
    upper_only = not any(c.islower() for c in allowed)
    numbers = "0" in allowed
    targets = rng.integers(1, max_length + 1, size=count)
    picks = rng.integers(0, len(words), size=(count, max_length))
    coins = rng.random((count, max_length, 4))
    lines = []
    for n in range(count):
        target, parts, used = int(targets[n]), [], 0
        for i in range(max_length):
            word = words[picks[n, i]]
            c = coins[n, i]
            if c[0] < 0.1 and numbers:
                word = str(int(c[1] * 10 ** (2 + int(c[3] * 4))))  # a number, 1-5 digits
            elif upper_only or c[1] < 0.05:
                word = word.upper()
            elif (i == 0 and c[1] < 0.6) or c[1] < 0.15:
                word = word.capitalize()
            if charset == "text" and c[2] < 0.15:
                word += ".,;:!?"[int(c[3] * 6)]
            elif charset == "text" and c[2] < 0.18:
                word = f'"{word}"' if c[3] < 0.5 else f"({word})"
            extra = len(word) + (1 if parts else 0)
            if parts and used + extra > target:
                break
            if not parts and len(word) > max_length:
                word = word[:max_length]
            parts.append(word)
            used += extra
        lines.append(" ".join(parts))
    return lines
