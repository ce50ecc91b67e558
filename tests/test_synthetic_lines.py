"""SyntheticLinesDataset: offline by default, seeded, fits every line, Brown text when asked."""

from __future__ import annotations

import hashlib
import io
import string
import zipfile
from pathlib import Path

import numpy as np
import pytest
from http_fixtures import HttpTestServer

from conftest import run_script
from text_recognizer.datasets import DATASETS
from text_recognizer.datasets.base import summary_main
from text_recognizer.datasets.line_fonts import render_glyphs
from text_recognizer.datasets.line_words import CHARSETS, word_lines
from text_recognizer.datasets.synthetic_lines import SyntheticLinesDataset
from text_recognizer.datasets.text import decode
from text_recognizer.errors import ConfigError

SMALL = {"num_train": 48, "num_test": 16, "max_length": 24}


def texts_of(ds: SyntheticLinesDataset, y: np.ndarray) -> list[str]:
    return [decode(row, ds.mapping) for row in y]


def test_default_needs_no_download_and_is_seeded(data_dirs, monkeypatch) -> None:
    import requests

    monkeypatch.setattr(requests, "get", lambda *a, **k: pytest.fail("no download expected"))
    ds = SyntheticLinesDataset(**SMALL).load_or_generate_data()
    assert ds.args["text_source"] == "words"
    assert ds.x_train.shape[1:] == (28, 512) and ds.x_train.dtype == np.uint8
    assert len(ds.x_train) + len(ds.x_val) == 48 and len(ds.x_test) == 16
    assert ds.mapping == ["<blank>", "<pad>", *CHARSETS["alphanumeric"], " "]
    texts = texts_of(ds, ds.y_train)
    assert all(1 <= len(t) <= 24 and t == t.strip() for t in texts)
    assert all(set(t) <= set(CHARSETS["alphanumeric"] + " ") for t in texts)
    # White ink on black; every line has ink, and the ink sits on the left where the text starts.
    assert np.median(ds.x_train) < 25
    assert (ds.x_train.reshape(len(ds.x_train), -1).max(axis=1) > 100).all()
    assert ds.x_train[:, :, :40].mean() > ds.x_train[:, :, -40:].mean()
    config = ds.config()
    assert config["kind"] == "lines" and config["output_shape"] == [24, 65]
    ds.cache_path.unlink()
    again = SyntheticLinesDataset(**SMALL).load_or_generate_data()
    np.testing.assert_array_equal(again.x_train, ds.x_train)
    np.testing.assert_array_equal(again.y_test, ds.y_test)
    more = SyntheticLinesDataset(**{**SMALL, "num_train": 50}).load_or_generate_data()
    np.testing.assert_array_equal(more.x_test, ds.x_test)  # test lines ignore num_train


def test_charsets_squeeze_and_clean_rendering(data_dirs) -> None:
    digits = SyntheticLinesDataset(**SMALL, charset="digits", image_height=32, image_width=96)
    digits.load_or_generate_data()
    assert digits.x_train.shape[1:] == (32, 96)
    assert all(set(t) <= set(string.digits + " ") for t in texts_of(digits, digits.y_train))
    # 24 characters never fit in 96 pixels unsqueezed: the warp fits them, nothing is cut off.
    long = [i for i, t in enumerate(texts_of(digits, digits.y_test)) if len(t) >= 20]
    assert long and (digits.x_test[long][:, :, -2:] < 60).all()
    text = SyntheticLinesDataset(**SMALL, charset="text", distortion=0.0).load_or_generate_data()
    punctuation = set(CHARSETS["text"]) - set(CHARSETS["alphanumeric"])
    assert any(set(t) & punctuation for t in texts_of(text, text.y_train))
    with pytest.raises(ConfigError):
        SyntheticLinesDataset(charset="klingon")
    spec = DATASETS["SyntheticLinesDataset"].args
    assert spec["charset"].choices == tuple(CHARSETS) and spec["charset"].default == "alphanumeric"
    assert set(spec) >= {"charset", "text_source", "corpus_dir", "image_width", "distortion"}


def test_glyphs_and_word_lines() -> None:
    font = render_glyphs(CHARSETS["text"], 28)
    assert font.glyphs.shape[0] == 3 * 2 * len(CHARSETS["text"]) * 3
    assert (
        font.glyphs.shape[1] == 28 and (font.glyphs.reshape(len(font.glyphs), -1).max(1) > 0).all()
    )
    assert (font.advance > 0).all()
    rng = np.random.default_rng(1)
    lines = word_lines(300, 10, "digits_upper", rng)
    assert all(1 <= len(t) <= 10 and set(t) <= set(CHARSETS["digits_upper"] + " ") for t in lines)


def brown_zip() -> bytes:
    """A minimal brown.zip in NLTK's layout (two tagged texts and a pickle that must stay unread)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(
            "brown/ca01",
            "\n\n\tThe/at jury/nn said/vbd it/pps ./.\n\n\tNo/at one/cd came/vbd ./.\n",
        )
        zf.writestr("brown/cb02", "\n\n\tRain/nn fell/vbd on/in Atlanta/np ,/, Georgia/np ./.\n")
        zf.writestr("brown/categories.pickle", b"\x80\x04not loaded")
    return buf.getvalue()


def test_brown_text_is_downloaded_once_from_its_metadata(data_dirs) -> None:
    raw, _ = data_dirs
    body = brown_zip()
    with HttpTestServer() as server:
        url = server.add("/brown.zip", body)
        (raw / "brown").mkdir(parents=True)
        (raw / "brown" / "metadata.toml").write_text(
            f'url = "{url}"\nfilename = "brown.zip"\nsha256 = "{hashlib.sha256(body).hexdigest()}"\n'
        )
        ds = SyntheticLinesDataset(**SMALL, text_source="brown").load_or_generate_data()
        other = SyntheticLinesDataset(**{**SMALL, "num_test": 8}, text_source="brown")
        other.load_or_generate_data()
        assert len(server.requests) == 1
    words = {
        "The",
        "jury",
        "said",
        "it",
        "No",
        "one",
        "came",
        "Rain",
        "fell",
        "on",
        "Atlanta",
        "Georgia",
    }
    for text in texts_of(ds, ds.y_train):
        assert set(text.split(" ")) <= words


def test_corpus_dir_selects_brown_and_module_summary(tmp_path: Path, data_dirs, capsys) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "brown.zip").write_bytes(brown_zip())
    args = f'{{"num_train": 20, "num_test": 5, "corpus_dir": "{corpus}", "image_width": 256}}'
    proc = run_script(
        "-m",
        "text_recognizer.datasets.synthetic_lines",
        args,
        env={"TEXT_RECOGNIZER_DATA_DIR": str(tmp_path / "data")},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "SyntheticLinesDataset (lines)" in proc.stdout
    assert "test:       5 x (28, 256) uint8" in proc.stdout and "_brown_" in proc.stdout
    (corpus / "brown.zip").write_bytes(b"PK\x03\x04 broken")
    code = summary_main("SyntheticLinesDataset", [args.replace('"num_test": 5', '"num_test": 6')])
    err = capsys.readouterr().err
    assert code == 2 and "is not a zip archive" in err and "Traceback" not in err


def _write_bundled_font(path: Path) -> Path:
    """Pillow's bundled font (Aileron) as a .ttf file: a real font file on any machine."""
    from PIL import ImageFont

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(ImageFont.load_default(size=20).path.getvalue())
    return path


def test_fonts_from_files_folders_and_globs(data_dirs, tmp_path, capsys) -> None:
    from text_recognizer.datasets.line_fonts import find_fonts, missing_glyphs

    folder = tmp_path / "fonts"
    first = _write_bundled_font(folder / "a.ttf")
    second = _write_bundled_font(folder / "nested" / "b.otf")
    (folder / "notes.txt").write_text("not a font")
    assert find_fonts([str(folder)]) == [first.resolve(), second.resolve()]
    assert find_fonts([str(folder / "*.ttf"), str(first)]) == [first.resolve()]
    with pytest.raises(ConfigError, match=r"dataset_args.fonts: no .ttf or .otf font found"):
        find_fonts([str(tmp_path / "nowhere")])

    # Each font file adds its own glyph variants: a line draws one (font, size) at a time.
    one = render_glyphs(CHARSETS["alphanumeric"], 28)
    two = render_glyphs(CHARSETS["alphanumeric"], 28, [first, second])
    assert two.advance.shape[0] == 2 * one.advance.shape[0]
    assert len(two.glyphs) == 2 * len(one.glyphs)

    from PIL import ImageFont

    assert missing_glyphs(ImageFont.truetype(str(first), 20), "ab\u00e9\u20ac") == ["é", "€"]
    bad = tmp_path / "broken.ttf"
    bad.write_bytes(b"not a font at all")
    two_plus_bad = render_glyphs("abc", 28, [bad, first])
    assert two_plus_bad.advance.shape[0] == one.advance.shape[0]
    assert "note: font " in capsys.readouterr().err  # the broken file is named as left out
    with pytest.raises(ConfigError, match="none of the 1 fonts"):
        render_glyphs("abc", 28, [bad])

    # The dataset renders with them, and its cache is keyed by the font set.
    plain = SyntheticLinesDataset(**SMALL)
    fonted = SyntheticLinesDataset(**SMALL, fonts=[str(folder)])
    assert plain.cache_path != fonted.cache_path
    ds = fonted.load_or_generate_data()
    assert ds.x_train.shape[1:] == (28, 512)
    assert (ds.x_train.reshape(len(ds.x_train), -1).max(axis=1) > 100).all()


def test_fonts_config_errors_are_one_line(tmp_path) -> None:
    import json

    config = {
        "dataset": "SyntheticLinesDataset",
        "dataset_args": {"fonts": [str(tmp_path / "missing-fonts")]},
        "model": "LineModelCtc",
        "network": "line_lstm_ctc",
    }
    result = run_script("training/run_experiment.py", json.dumps(config), "--nowandb")
    assert result.returncode == 2, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1 and "dataset_args.fonts" in error_lines[0], result.stderr
    assert "Traceback" not in result.stderr


def _system_script_font() -> list[Path]:
    """A Debian script font with wide left and right overhangs, when installed."""
    path = Path("/usr/share/fonts/opentype/kaushanscript/KaushanScript-Regular.otf")
    return [path] if path.is_file() else []


@pytest.mark.parametrize("height", [28, 32])
def test_no_glyph_is_clipped_at_line_start_end_or_edges(height: int) -> None:
    """Every glyph lands whole on the canvas, inside the line's width and its top and bottom rows.

    The bundled font reaches 2 pixels left of its pen ('j'); Kaushan Script (checked when
    installed) 6 pixels left and several right of its advance.
    """
    from text_recognizer.datasets.line_composer import compose_lines

    chars = CHARSETS["text"]
    index = {ch: i for i, ch in enumerate(chars)}
    for files in [[], _system_script_font()] if _system_script_font() else [[]]:
        font = render_glyphs(chars, height, files or None)
        assert font.glyphs[:, 0].max() == 0 and font.glyphs[:, -1].max() == 0  # rows kept clear
        rng = np.random.default_rng(0)
        texts = [ch for ch in chars for _ in range(4)]
        ids, x, line_w = font.layout(texts, index, 1, 0.0, rng)  # no spacing jitter
        canvas = compose_lines(font.glyphs, ids, x, int(line_w.max()) + font.width)
        glyph_ink = font.glyphs[ids[:, 0]].reshape(len(texts), -1).astype(np.int64).sum(1)
        np.testing.assert_array_equal(
            canvas.reshape(len(texts), -1).astype(np.int64).sum(1), glyph_ink
        )
        last_inked = np.array([np.flatnonzero(c.max(0))[-1] for c in canvas])
        assert (last_inked <= line_w).all()  # the width the warp makes room for (rounded)


def test_tall_fonts_shrink_to_fit_the_line() -> None:
    from PIL import ImageFont

    from text_recognizer.datasets.line_fonts import _fit_face, _ink_rows

    chars = CHARSETS["text"]
    font, baseline = _fit_face(lambda z: ImageFont.load_default(size=z), 20, 16, chars)
    top, bottom = _ink_rows(font, chars)
    assert font.size < 20
    assert baseline + top >= 2 and baseline + bottom <= 14  # 1 pixel of jitter room each side
