"""Predictors and the predict command: no train/serve skew, any input format, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from predict_fixtures import KAGGLE_DIR, kaggle_run, mnist_run  # noqa: F401

from text_recognizer.evaluate import evaluate_run
from text_recognizer.predict import predict_main
from text_recognizer.predictors import (
    CharacterPredictor,
    LinePredictor,
    load_predictor,
)
from text_recognizer.preprocessing import preprocess_image


def _predict_json(capsys: pytest.CaptureFixture, files: list[Path], run: Path) -> list[dict]:
    assert predict_main([*map(str, files), "--model", str(run), "--json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def _no_skew(tmp_path: Path, capsys: pytest.CaptureFixture, run: Path, limit: int) -> None:
    """PNG files of the test split, read back by the predict command == evaluate.py's report."""
    from text_recognizer.datasets import DATASETS

    report = evaluate_run(run, split="test", limit=limit)
    model = load_predictor(run).model
    dataset = DATASETS[report["dataset"]].load()(**report["dataset_args"])
    dataset.load_or_generate_data()
    files = []
    for i, image in enumerate(dataset.x_test[:limit]):
        Image.fromarray(image).save(tmp_path / f"{i:03d}.png")
        files.append(tmp_path / f"{i:03d}.png")
    rows = _predict_json(capsys, files, run)
    assert [r["text"] for r in rows] == [p["prediction"] for p in report["predictions"]]
    assert len(rows) == limit and model is not None
    for r, p in zip(rows, report["predictions"], strict=True):
        assert r["confidence"] == pytest.approx(p["confidence"], abs=1e-5)
        assert r["ms"] >= 0


def test_no_skew_mnist_digits(tmp_path: Path, capsys, mnist_run: Path) -> None:  # noqa: F811
    _no_skew(tmp_path, capsys, mnist_run, limit=200)


def test_no_skew_kaggle_names(tmp_path: Path, capsys, kaggle_run: Path) -> None:  # noqa: F811
    _no_skew(tmp_path, capsys, kaggle_run, limit=40)


def test_raw_kaggle_jpeg_is_prepared_like_the_dataset(kaggle_run: Path) -> None:  # noqa: F811
    """A raw dark-on-light Kaggle JPEG: auto polarity + the shared function = dataset arrays."""
    from text_recognizer.datasets.kaggle_names import fit_name

    predictor = LinePredictor.from_run(kaggle_run)
    for path in sorted((KAGGLE_DIR / "test_v2").glob("*.jpg"))[:5]:
        expected = fit_name(Image.open(path), 64, 256, keep_aspect=False)
        assert np.array_equal(predictor.prepare(path), expected)
        assert np.array_equal(predictor.prepare(Image.open(path).convert("RGB")), expected)


def test_input_formats_and_polarity(mnist_run: Path) -> None:  # noqa: F811
    predictor = CharacterPredictor.from_run(mnist_run)
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 12:16] = 255  # a "1", white on black
    base = predictor.prepare(digit)
    dark = 255 - digit
    variants = [
        digit,
        digit.astype(np.float32) / 255,
        Image.fromarray(digit),
        Image.fromarray(dark),  # dark ink on light paper: inverted
        Image.fromarray(np.stack([dark] * 3, -1)),  # RGB
        Image.fromarray(np.stack([dark] * 3 + [np.full_like(dark, 255)], -1)),  # RGBA
        Image.fromarray(dark).convert("P"),
        Image.fromarray(digit.astype(np.int32) * 257, "I"),  # 32-bit PIL mode
        (digit.astype(np.uint16) * 257),  # 16-bit array
    ]
    for v in variants:
        assert np.array_equal(predictor.prepare(v), base), type(v)
    big = np.array(Image.fromarray(dark).resize((140, 140), Image.Resampling.NEAREST))
    prepared = predictor.prepare(big)
    assert prepared.shape == (28, 28) and prepared.dtype == np.uint8 and prepared[14, 14] > 128
    results = predictor.predict_batch([digit, big, Image.fromarray(dark)])
    assert len(results) == 3 and all(0 <= r.confidence <= 1 for r in results)
    assert results[0].text == results[2].text


def test_line_predictor_any_size(kaggle_run: Path) -> None:  # noqa: F811
    predictor = LinePredictor.from_run(kaggle_run)
    for shape in [(30, 500), (200, 100), (64, 256)]:
        x = predictor.prepare(np.full(shape, 240, np.uint8))
        assert x.shape == (64, 256)
    result = predictor.predict(np.full((40, 120), 255, np.uint8))
    assert isinstance(result.text, str) and 0 <= result.confidence <= 1


def test_read_only_arrays_predict_without_a_warning(
    mnist_run: Path,  # noqa: F811
    kaggle_run: Path,  # noqa: F811
) -> None:
    """Arrays numpy will not let anyone write (np.frombuffer, a PIL image's np.asarray) are read
    without torch's "NumPy array is not writable" warning, and give the same answers."""
    import warnings

    for run, shape in ((mnist_run, (28, 28)), (kaggle_run, (64, 256))):
        predictor = load_predictor(run)
        writable = np.random.default_rng(0).integers(0, 256, (3, *shape), dtype=np.uint8)
        read_only = np.frombuffer(writable.tobytes(), np.uint8).reshape(writable.shape)
        assert not read_only.flags.writeable
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = predictor.predict_arrays(read_only)
            one = predictor.predict(np.asarray(Image.fromarray(writable[0])))
        assert got == predictor.predict_arrays(writable) and one.text == got[0].text


def test_same_preprocessing_function_is_deterministic() -> None:
    img = np.random.default_rng(0).integers(0, 255, (50, 70), dtype=np.uint8)
    spec = {"resize": "fit_height", "height": 28, "width": 200}
    assert np.array_equal(preprocess_image(img, spec), preprocess_image(img, spec))


# ----- bad input: one line, exit 2 ------------------------------------------------------------------


def _error(capsys, argv: list[str]) -> str:
    assert predict_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_inputs(tmp_path: Path, capsys, mnist_run: Path, kaggle_run: Path) -> None:  # noqa: F811
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(good)
    assert "not a readable image" in _error(capsys, [str(text), "--model", str(mnist_run)])
    assert "not a readable image" in _error(capsys, [str(empty), "--model", str(mnist_run)])
    assert "no such file" in _error(capsys, [str(tmp_path / "x.png"), "--model", str(mnist_run)])
    assert "has no weights.pt" in _error(capsys, [str(good), "--model", str(tmp_path)])
    newer = tmp_path / "newer.pt"
    payload = torch.load(mnist_run / "weights.pt", weights_only=True)
    torch.save({**payload, "format_version": 99}, newer)
    assert "format 99" in _error(capsys, [str(good), "--model", str(newer)])
    err = _error(capsys, [str(good), "--model", str(kaggle_run), "--kind", "character"])
    assert "needs a character model" in err
    err = _error(capsys, [str(good), "--model", str(mnist_run), "--kind", "line"])
    assert "needs a line model" in err
    assert "--beam" in _error(capsys, [str(good), "--model", str(mnist_run), "--beam", "5"])
    with pytest.raises(Exception, match="empty image"):
        CharacterPredictor.from_run(mnist_run).prepare(np.zeros((0, 5), np.uint8))
    with pytest.raises(Exception, match="needs a line model"):
        LinePredictor.from_run(mnist_run)


def test_plain_output_and_beam(tmp_path: Path, capsys, kaggle_run: Path) -> None:  # noqa: F811
    files = sorted((KAGGLE_DIR / "test_v2").glob("*.jpg"))[:2]
    assert predict_main([*map(str, files), "--model", str(kaggle_run), "--beam", "4"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
