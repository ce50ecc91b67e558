"""Synthetic name lines for pretraining: Faker's names, Debian's handwriting fonts, letter spacing."""

from __future__ import annotations

import json
import string

import numpy as np
import pytest

from conftest import run_script
from text_recognizer.datasets import line_fonts
from text_recognizer.datasets.line_fonts import handwriting_fonts, render_glyphs
from text_recognizer.datasets.line_names import fold_accents, name_lines, name_vocabulary
from text_recognizer.datasets.line_words import CHARSETS, word_lines
from text_recognizer.datasets.synthetic_lines import SyntheticLinesDataset
from text_recognizer.datasets.text import decode
from text_recognizer.errors import ConfigError

NAMES = CHARSETS["names"]


def _installed_handwriting_fonts() -> bool:
    try:
        return bool(handwriting_fonts())
    except ConfigError:
        return False


needs_fonts = pytest.mark.skipif(
    not _installed_handwriting_fonts(),
    reason="Debian's handwriting fonts are not installed (as root: apt-get install "
    + " ".join(line_fonts.HANDWRITING_PACKAGES)
    + ")",
)


def test_names_charset_is_the_kaggle_alphabet() -> None:
    from text_recognizer.datasets.kaggle_names import ALPHABET

    assert set(NAMES) | {" "} == set(ALPHABET)


def test_vocabulary_is_folded_upper_case_names_from_faker() -> None:
    vocabulary = name_vocabulary(NAMES)
    assert len(vocabulary) > 3000 and vocabulary == sorted(set(vocabulary))
    assert all(set(name) <= set(NAMES) | {" "} for name in vocabulary)
    assert {"DUBOIS", "MARTIN", "HELENE"} <= set(vocabulary)  # fr_FR, accents folded
    assert fold_accents("Hélène Nuñez") == "Helene Nunez"
    mixed = name_vocabulary(string.ascii_letters)
    assert "Dubois" in mixed and "DUBOIS" not in mixed


def test_name_lines_are_seeded_and_fit() -> None:
    vocabulary = name_vocabulary(NAMES)
    a = name_lines(400, 12, vocabulary, np.random.default_rng(3))
    assert a == name_lines(400, 12, vocabulary, np.random.default_rng(3))
    assert a != name_lines(400, 12, vocabulary, np.random.default_rng(4))
    assert all(1 <= len(line) <= 12 and line == line.strip() for line in a)
    assert all(set(line) <= set(NAMES) | {" "} for line in a)
    known = set(vocabulary)
    single = sum(line in known for line in a) / len(a)
    assert 0.5 < single < 0.9  # mostly one name, as the labels are; some spliced, new names
    assert any("-" in line for line in a) and any(" " in line for line in a)


def test_word_lines_in_an_upper_case_charset_have_no_lower_case_or_digits() -> None:
    lines = word_lines(200, 20, "names", np.random.default_rng(0))
    assert all(set(line) <= set(NAMES) | {" "} for line in lines)


def test_letter_spacing_widens_lines() -> None:
    font = render_glyphs(NAMES, 32)
    index = {ch: i for i, ch in enumerate(NAMES)}
    texts = ["MARTIN"] * 200
    narrow = font.layout(texts, index, 16, 1.0, np.random.default_rng(0), 0.1)[2]
    wide = font.layout(texts, index, 16, 1.0, np.random.default_rng(0), 0.8)[2]
    assert wide.mean() > 1.25 * narrow.mean()
    # the default is the old layout: the same draws, the same positions
    default = font.layout(texts, index, 16, 1.0, np.random.default_rng(0))
    np.testing.assert_array_equal(default[2], narrow)


@needs_fonts
def test_names_in_handwriting_fonts(data_dirs) -> None:
    args = {
        "charset": "names",
        "fonts": ["handwriting"],
        "image_height": 32,
        "image_width": 256,
        "letter_spacing": 0.8,
        "num_train": 64,
        "num_test": 16,
        "max_length": 24,
    }
    ds = SyntheticLinesDataset(**args).load_or_generate_data()
    assert ds.args["text_source"] == "names"  # auto picks names for the names charset
    assert ds.mapping == ["<blank>", "<pad>", *NAMES, " "]
    assert ds.x_train.shape[1:] == (32, 256)
    texts = [decode(row, ds.mapping) for row in ds.y_test]
    assert all(texts) and all(t == t.upper() for t in texts)
    assert all(image.any() for image in ds.x_test)
    sources = ds.extra_sources()
    assert any(s.startswith("fonts=") for s in sources)  # the font set keys the cache


def test_handwriting_without_the_fonts_is_one_line(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(line_fonts, "HANDWRITING_PACKAGES", {"fonts-none": str(tmp_path / "no")})
    with pytest.raises(ConfigError, match="apt-get install fonts-none"):
        line_fonts.find_fonts(["handwriting"])


def test_bad_letter_spacing_is_a_config_error() -> None:
    config = {
        "dataset": "SyntheticLinesDataset",
        "dataset_args": {"charset": "names", "letter_spacing": -1},
        "model": "LineModelCtc",
        "network": "crnn",
    }
    result = run_script("training/run_experiment.py", json.dumps(config), "--nowandb")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "letter_spacing" in lines[0], result.stderr


def test_ci_installs_every_handwriting_font_package() -> None:
    from conftest import PROJECT_ROOT

    script = (PROJECT_ROOT / ".ci" / "run").read_text()
    listed = script.split("fonts=(", 1)[1].split(")", 1)[0].split()
    assert sorted(listed) == sorted(line_fonts.HANDWRITING_PACKAGES)
