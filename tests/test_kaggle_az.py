"""KaggleAzDataset on a small CSV in Kaggle's format made of real EMNIST capitals (shared data).

The Goby56 PNGs are EMNIST Balanced test images already turned upright by their source project
(SOURCES.md), so their rows are written as they are, like the upright Kaggle images.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from http_fixtures import HttpTestServer

from text_recognizer.datasets import DATASETS, kaggle_az
from text_recognizer.datasets.kaggle_az import CSV_NAME, DIGITS, LETTERS, KaggleAzDataset
from text_recognizer.errors import ConfigError, DataError


def capitals(shared_data: Path) -> list[tuple[int, np.ndarray]]:
    """(0-25, 28x28 uint8) of every shared EMNIST capital (84 images, 25 letters: no M)."""
    from PIL import Image

    out = []
    for path in sorted((shared_data / "emnist" / "goby56_balanced_images").glob("*.png")):
        char = re.fullmatch(r"emnist_(.)\(\d+\)\.png", path.name).group(1)
        if char in LETTERS:
            out.append((LETTERS.index(char), np.asarray(Image.open(path).convert("L"))))
    if not out:
        pytest.skip("no EMNIST capitals in the shared data")
    return out


def csv_text(rows: list[tuple[int, np.ndarray]]) -> str:
    return "".join(f"{label}," + ",".join(map(str, image.ravel())) + "\n" for label, image in rows)


@pytest.fixture
def rows(shared_data: Path) -> list[tuple[int, np.ndarray]]:
    return capitals(shared_data)


@pytest.fixture
def az_dir(tmp_path: Path, rows: list[tuple[int, np.ndarray]]) -> Path:
    folder = tmp_path / "az"
    folder.mkdir()
    (folder / CSV_NAME).write_text(csv_text(rows))
    return folder


def by_image(rows: list[tuple[int, np.ndarray]]) -> dict[bytes, int]:
    return {image.tobytes(): label for label, image in rows}


def test_summary_mapping_shapes_and_stratified_split(
    data_dirs, az_dir: Path, rows: list[tuple[int, np.ndarray]]
) -> None:
    ds = KaggleAzDataset(data_dir=str(az_dir)).load_or_generate_data()
    assert ds.mapping == LETTERS and ds.config()["output_shape"] == [26]
    assert ds.input_shape == (28, 28) and ds.x_train.dtype == np.uint8
    total = len(ds.x_train) + len(ds.x_val) + len(ds.x_test)
    assert total == len(rows) and len(ds.x_test) == round(len(rows) * 0.2)
    known = by_image(rows)  # every image kept its own label, upright as written
    for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)):
        assert [known[image.tobytes()] for image in x] == y.tolist()
    # stratified: each letter gives its share (rounded) to test
    counts = np.bincount([label for label, _ in rows], minlength=26)
    held = np.bincount(ds.y_test, minlength=26)
    assert np.all(np.abs(held - counts * 0.2) < 1)
    summary = ds.summary()
    assert "KaggleAzDataset (characters)" in summary and "classes:    26: ABCDEFGHIJ" in summary
    again = KaggleAzDataset(data_dir=str(az_dir), seed=5).load_or_generate_data()
    assert np.array_equal(again.x_test, ds.x_test)  # the test split does not move with `seed`
    with pytest.raises(ConfigError, match="test_fraction"):
        KaggleAzDataset(test_fraction=1.0)


def test_digits_and_letters_with_the_shared_mnist(
    data_dirs, az_dir: Path, rows: list[tuple[int, np.ndarray]], shared_data: Path
) -> None:
    mnist = shared_data / "mnist"
    if not (mnist / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("shared MNIST images missing")
    ds = KaggleAzDataset(
        data_dir=str(az_dir), with_digits=True, mnist_dir=str(mnist), mnist_test_set_only=True
    ).load_or_generate_data()
    assert ds.mapping == DIGITS + LETTERS and ds.config()["output_shape"] == [36]
    y = np.concatenate([ds.y_train, ds.y_val, ds.y_test])
    assert len(y) == 10_000 + len(rows)
    assert np.bincount(y, minlength=36)[:10].sum() == 10_000  # every MNIST test image
    letters = np.bincount(y, minlength=36)[10:]
    assert letters.tolist() == np.bincount([r[0] for r in rows], minlength=26).tolist()
    known = by_image(rows)
    for x, labels in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        for image, label in zip(x[labels >= 10], labels[labels >= 10], strict=True):
            assert known[image.tobytes()] + 10 == label
    assert len(ds.x_test) == 2000 + round(len(rows) * 0.2)  # MNIST's test split joins ours


def test_chunked_reading_gives_the_same_arrays(az_dir: Path, data_dirs) -> None:
    whole = KaggleAzDataset(data_dir=str(az_dir))
    tiny = KaggleAzDataset(data_dir=str(az_dir))
    tiny.chunk_rows = 3
    (a, mapping_a), (b, mapping_b) = whole.process(), tiny.process()
    assert mapping_a == mapping_b
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def test_blank_lines_and_crlf_are_read(
    tmp_path: Path, data_dirs, rows: list[tuple[int, np.ndarray]]
) -> None:
    folder = tmp_path / "crlf"
    folder.mkdir()
    lines = csv_text(rows[:10]).splitlines()
    (folder / CSV_NAME).write_text("\r\n".join([*lines[:4], "", "", *lines[4:]]) + "\r\n\r\n")
    ds = KaggleAzDataset(data_dir=str(folder), validation_fraction=0.0).load_or_generate_data()
    assert len(ds.x_train) + len(ds.x_test) == 10
    assert ds.skipped == {"blank_line": 2}


def bad_csv(good: str, kind: str) -> tuple[str, str]:
    """(CSV text, what the one-line error must say) for one kind of damage on line 3."""
    lines = good.splitlines()
    row = lines[2].split(",")
    if kind == "label_26":
        row[0], expect = "26", r"line 3: label '26' is not 0-25"
    elif kind == "label_negative":
        row[0], expect = "-1", r"line 3: label '-1' is not 0-25"
    elif kind == "short_row":
        row, expect = row[:-1], r"line 3 has 784 values, expected 785"
    elif kind == "long_row":
        row, expect = [*row, "0"], r"line 3 has 786 values, expected 785"
    elif kind == "pixel_256":
        row[100], expect = "256", r"line 3, value 101: pixel '256' is not an integer 0-255"
    elif kind == "pixel_negative":
        row[5], expect = "-3", r"line 3, value 6: pixel '-3' is not an integer 0-255"
    elif kind == "pixel_float":
        row[7], expect = "1.5", r"line 3, value 8: pixel '1.5' is not an integer 0-255"
    elif kind == "header":
        return "label," + ",".join(f"p{i}" for i in range(784)) + "\n" + good, (
            r"line 1: label 'label' is not 0-25 \(A-Z\) \(a header\? the Kaggle file has none\)"
        )
    elif kind == "empty":
        return "", "holds no rows"
    elif kind == "blank_only":
        return "\n\n  \n", "holds no rows"
    lines[2] = ",".join(row)
    return "\n".join(lines) + "\n", expect


BAD = (
    "label_26",
    "label_negative",
    "short_row",
    "long_row",
    "pixel_256",
    "pixel_negative",
    "pixel_float",
    "header",
    "empty",
    "blank_only",
)


@pytest.mark.parametrize("kind", BAD)
@pytest.mark.parametrize("chunk_rows", [2, 4096])
def test_bad_input_is_one_line_naming_file_and_line(
    tmp_path: Path, data_dirs, rows: list[tuple[int, np.ndarray]], kind: str, chunk_rows: int
) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    text, expect = bad_csv(csv_text(rows[:6]), kind)
    (folder / CSV_NAME).write_text(text)
    ds = KaggleAzDataset(data_dir=str(folder))
    ds.chunk_rows = chunk_rows
    with pytest.raises(DataError, match=expect) as err:
        ds.load_or_generate_data()
    message = str(err.value)
    assert "\n" not in message and str(folder / CSV_NAME) in message


def test_placed_zip_reads_like_the_csv(
    tmp_path: Path, data_dirs, az_dir: Path, rows: list[tuple[int, np.ndarray]]
) -> None:
    folder = tmp_path / "zipped"
    folder.mkdir()
    with zipfile.ZipFile(folder / kaggle_az.ARCHIVE, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"A_Z Handwritten Data/{CSV_NAME}", csv_text(rows))
    a, _ = KaggleAzDataset(data_dir=str(folder)).process()
    b, _ = KaggleAzDataset(data_dir=str(az_dir)).process()
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    lines = csv_text(rows[:3]).splitlines()
    lines[1] = "27" + lines[1][lines[1].index(",") :]
    with zipfile.ZipFile(folder / kaggle_az.ARCHIVE, "w") as zf:  # damaged row inside the zip
        zf.writestr(CSV_NAME, "\n".join(lines))
    with pytest.raises(DataError, match=r"\.zip!A_Z Handwritten Data\.csv: line 2: label '27'"):
        KaggleAzDataset(data_dir=str(folder)).process()


def test_missing_files_and_credentials_are_one_line_errors(
    tmp_path: Path, data_dirs, no_credentials: Path
) -> None:
    with pytest.raises(DataError, match=r"holds neither 'A_Z Handwritten Data\.csv' nor a zip"):
        KaggleAzDataset(data_dir=str(tmp_path)).load_or_generate_data()
    with pytest.raises(DataError, match=r"no Kaggle credentials: put kaggle\.json") as err:
        KaggleAzDataset().load_or_generate_data()
    message = str(err.value)
    assert "\n" not in message and kaggle_az.KAGGLE_DATASET in message
    assert str(no_credentials / "kaggle.json") in message and "kaggle_az" in message


def test_kaggle_api_download(
    data_dirs,
    no_credentials: Path,
    monkeypatch: pytest.MonkeyPatch,
    rows: list[tuple[int, np.ndarray]],
) -> None:
    import io

    raw, _ = data_dirs
    monkeypatch.setenv("KAGGLE_USERNAME", "ada")
    monkeypatch.setenv("KAGGLE_KEY", "s3cret")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(CSV_NAME, csv_text(rows))
    with HttpTestServer() as server:
        url = server.add(f"/api/v1/datasets/download/{kaggle_az.KAGGLE_DATASET}", buf.getvalue())
        monkeypatch.setattr(kaggle_az, "KAGGLE_DOWNLOAD_URL", url)
        ds = KaggleAzDataset().load_or_generate_data()
        assert len(server.requests) == 1
    assert (raw / "kaggle_az" / kaggle_az.ARCHIVE).is_file()
    assert len(ds.x_train) + len(ds.x_val) + len(ds.x_test) == len(rows)


def test_tiny_training_run(tmp_path: Path, data_dirs, az_dir: Path, shared_data: Path) -> None:
    from predict_fixtures import train_run

    mnist = shared_data / "mnist"
    if not (mnist / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("shared MNIST images missing")
    config = {
        "experiment_group": "kaggle-az-tiny",
        "dataset": "KaggleAzDataset",
        "dataset_args": {
            "data_dir": str(az_dir),
            "with_digits": True,
            "mnist_dir": str(mnist),
            "mnist_test_set_only": True,
            "subsample_fraction": 0.05,
        },
        "model": "CharacterModel",
        "network": "resnet",
        "network_args": {"layers": [1, 1], "base_channels": 4},
        "train_args": {"batch_size": 64, "epochs": 1, "num_threads": 2},
    }
    assert DATASETS["KaggleAzDataset"].kind == "characters"
    run_dir = train_run(tmp_path, config)
    assert (run_dir / "weights.pt").is_file()
