"""KaggleNamesDataset on the real shared images, on damaged copies, and through a fake Kaggle API."""

from __future__ import annotations

import base64
import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from http_fixtures import HttpTestServer

from text_recognizer import paths
from text_recognizer.datasets import DATASETS, kaggle_names
from text_recognizer.datasets.kaggle_names import ALPHABET, KaggleNamesDataset, clean_label
from text_recognizer.datasets.text import decode
from text_recognizer.errors import ConfigError, DataError

NAMES = paths.SHARED_DATA_DIR / "kaggle_handwriting_names"
needs_names = pytest.mark.skipif(
    not (NAMES / "written_name_validation_v2.csv").is_file(),
    reason=f"Kaggle names sample not found at {NAMES}",
)


def test_label_cleaning() -> None:
    assert clean_label(" jean-michel ") == ("JEAN-MICHEL", None)
    assert clean_label("d'arc  marie") == ("D'ARC MARIE", None)
    assert clean_label("") == ("", "empty_label")
    assert clean_label(None) == ("", "empty_label")
    assert clean_label("nan")[1] == "empty_label"
    assert clean_label("Null")[1] == "null_label"
    assert clean_label("UNREADABLE")[1] == "unreadable_label"
    assert clean_label("EMPTY")[1] == "empty_marker_label"
    assert clean_label("JOSÉ")[1] == clean_label("R2D2")[1] == "outside_alphabet"
    assert ALPHABET == "ABCDEFGHIJKLMNOPQRSTUVWXYZ -'"


@needs_names
def test_real_shared_images_split_from_available(data_dirs, capsys) -> None:
    ds = KaggleNamesDataset(data_dir=str(NAMES), split_from_available=0.2)
    ds.load_or_generate_data()
    # 1,500 validation + 64 test images; 1 UNREADABLE, 3 empty and 6 "EMPTY" labels among them.
    assert ds.skipped["unreadable_label"] == 1 and ds.skipped["empty_label"] == 3
    assert ds.skipped["empty_marker_label"] == 6
    assert ds.skipped["missing_image"] == (41370 - 1500) + (41370 - 64)  # CSV rows, no image
    assert "outside_alphabet" not in ds.skipped
    total = len(ds.x_train) + len(ds.x_val) + len(ds.x_test)
    assert total == 1564 - 10
    assert len(ds.x_test) == round(1554 * 0.2) and len(ds.x_val) == round(1243 * 0.1)
    assert ds.x_train.shape[1:] == (64, 256) and ds.x_train.dtype == np.uint8
    err = capsys.readouterr().err
    assert "81176 row(s) skipped, missing_image" in err
    assert "e.g. validation_v2/VALIDATION_1501.jpg" in err
    # White ink on black: the background is dark, the ink bright.
    assert np.median(ds.x_train) < 20 and ds.x_train.max() == 255
    assert ds.mapping == ["<blank>", "<pad>", *ALPHABET]
    texts = [decode(y, ds.mapping) for y in np.concatenate([ds.y_train, ds.y_val, ds.y_test])]
    assert all(t and set(t) <= set(ALPHABET) for t in texts)
    assert "JEAN-ROCH" in texts and "BILEL" in texts
    summary = ds.summary()
    assert "unreadable_label: e.g. VALIDATION_0006.jpg: 'UNREADABLE'" in summary
    config = ds.config()
    assert config["input_shape"] == [64, 256] and config["output_shape"] == [64, 31]

    # A fixed held-out set, whatever the run's seed; keep_aspect shrinks the wide images whole.
    other = KaggleNamesDataset(data_dir=str(NAMES), split_from_available=0.2, seed=3)
    np.testing.assert_array_equal(other.load_or_generate_data().x_test, ds.x_test)
    whole = KaggleNamesDataset(
        data_dir=str(NAMES), split_from_available=0.2, keep_aspect=True
    ).load_or_generate_data()
    assert whole.cache_path != ds.cache_path
    np.testing.assert_array_equal(whole.y_test, ds.y_test)
    assert not np.array_equal(whole.x_test, ds.x_test)


@needs_names
def test_official_split_needed_without_split_from_available(data_dirs) -> None:
    with pytest.raises(
        DataError, match=r"no written_name_train_v2\.csv.*split_from_available"
    ) as e:
        KaggleNamesDataset(data_dir=str(NAMES)).load_or_generate_data()
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError):
        KaggleNamesDataset(split_from_available=1.0)
    assert DATASETS["KaggleNamesDataset"].args["split_from_available"].default is None


@needs_names
def test_missing_corrupt_and_bad_rows_are_counted_skips(tmp_path: Path, data_dirs, capsys) -> None:
    folder = tmp_path / "names"
    (folder / "validation_v2").mkdir(parents=True)
    rows = ["FILENAME,IDENTITY"]
    for i in range(1, 13):
        name = f"VALIDATION_{i:04d}.jpg"
        shutil.copy(NAMES / "validation_v2" / name, folder / "validation_v2" / name)
        rows.append(f"{name},NAME{chr(64 + i)}")
    good = (NAMES / "validation_v2" / "VALIDATION_0013.jpg").read_bytes()
    (folder / "validation_v2" / "VALIDATION_0013.jpg").write_bytes(good[: len(good) // 3])
    (folder / "validation_v2" / "VALIDATION_0014.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    rows += [
        "VALIDATION_0013.jpg,TRUNCATED",
        "VALIDATION_0014.jpg,GARBAGE",
        "VALIDATION_9999.jpg,NOFILE",
        "VALIDATION_0001.jpg,ÉLODIE",
        "VALIDATION_0002.jpg,ABCDEFGHIJKLMNOPQRSTU",
    ]
    (folder / "written_name_validation_v2.csv").write_text(
        "\r\n".join(rows) + "\r\n", encoding="utf-8"
    )
    ds = KaggleNamesDataset(data_dir=str(folder), split_from_available=0.25, max_length=20)
    ds.load_or_generate_data()
    assert ds.skipped == {
        "undecodable_image": 2,
        "missing_image": 1,
        "outside_alphabet": 1,
        "longer_than_max_length": 1,
    }
    assert len(ds.x_train) + len(ds.x_val) + len(ds.x_test) == 12 and len(ds.x_test) == 3
    err = capsys.readouterr().err.splitlines()
    warnings = [line for line in err if line.startswith("warning: Kaggle names")]
    assert len(warnings) == 2
    assert any("VALIDATION_9999.jpg" in w for w in warnings)
    assert any("VALIDATION_0013.jpg" in w and "VALIDATION_0014.jpg" in w for w in warnings)
    assert ds.skipped_examples["outside_alphabet"] == ["VALIDATION_0001.jpg: 'ÉLODIE'"]
    with pytest.raises(DataError, match=r"holds no written_name_<split>_v2\.csv"):
        KaggleNamesDataset(data_dir=str(tmp_path), split_from_available=0.2).load_or_generate_data()


# ----- the Kaggle API download and the official nested layout ------------------------------------------


def official_zip(source: Path) -> bytes:
    """Kaggle's layout: three CSVs and nested <split>_v2/<split>/ folders (real JPEGs inside)."""
    buf = io.BytesIO()
    jpgs = sorted((source / "validation_v2").glob("*.jpg"))[:18]
    with zipfile.ZipFile(buf, "w") as zf:
        for split, chunk in (
            ("train", jpgs[:10]),
            ("validation", jpgs[10:14]),
            ("test", jpgs[14:]),
        ):
            rows = ["FILENAME,IDENTITY"]
            for i, jpg in enumerate(chunk):
                name = f"{split.upper()}_{i:05d}.jpg"
                zf.writestr(f"{split}_v2/{split}/{name}", jpg.read_bytes())
                rows.append(f"{name},{split.upper()} NAME")
            zf.writestr(f"written_name_{split}_v2.csv", "\r\n".join(rows) + "\r\n")
    return buf.getvalue()


@needs_names
def test_kaggle_api_download_with_credentials(
    data_dirs, no_credentials: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw, _ = data_dirs
    no_credentials.mkdir()
    (no_credentials / "kaggle.json").write_text('{"username": "ada", "key": "s3cret"}')
    with HttpTestServer() as server:
        url = server.add(
            "/api/v1/datasets/download/landlord/handwriting-recognition", official_zip(NAMES)
        )
        monkeypatch.setattr(kaggle_names, "KAGGLE_DOWNLOAD_URL", url)
        ds = KaggleNamesDataset().load_or_generate_data()
        (request,) = server.requests
    expected = "Basic " + base64.b64encode(b"ada:s3cret").decode()
    assert request.headers["Authorization"] == expected
    archive = raw / "kaggle_names" / "handwriting-recognition.zip"
    assert archive.is_file() and not archive.with_name(archive.name + ".part").exists()
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (10, 4, 4)  # official splits
    assert {decode(y, ds.mapping) for y in ds.y_val} == {"VALIDATION NAME"}
    assert {decode(y, ds.mapping) for y in ds.y_test} == {"TEST NAME"}


def test_no_credentials_and_refusals_are_one_line_errors(
    data_dirs, no_credentials: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DataError, match=r"no Kaggle credentials: put kaggle\.json") as err:
        KaggleNamesDataset().load_or_generate_data()
    message = str(err.value)
    assert "\n" not in message and "KAGGLE_USERNAME" in message
    assert str(no_credentials / "kaggle.json") in message and "kaggle_names" in message
    monkeypatch.setenv("KAGGLE_USERNAME", "ada")
    monkeypatch.setenv("KAGGLE_KEY", "wrong")
    with HttpTestServer() as server:
        url = server.add("/download", b"", status=401)
        monkeypatch.setattr(kaggle_names, "KAGGLE_DOWNLOAD_URL", url)
        with pytest.raises(DataError, match=r"Kaggle refused .* \(HTTP 401\)") as err:
            KaggleNamesDataset().load_or_generate_data()
        assert "wrong" not in str(err.value)  # the key is never echoed
        page = server.add("/page", b"<html>sign in</html>", content_type="text/html")
        monkeypatch.setattr(kaggle_names, "KAGGLE_DOWNLOAD_URL", page)
        with pytest.raises(DataError, match="sent a web page"):
            KaggleNamesDataset().load_or_generate_data()
