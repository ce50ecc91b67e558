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
from text_recognizer.datasets.synthetic_lines import (
    CHARSETS,
    SyntheticLinesDataset,
    render_glyphs,
    word_lines,
)
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
