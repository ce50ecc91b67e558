"""Page OCR on a synthetic page of real MNIST digits in three rows: reading order and accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from predict_fixtures import MNIST_DIR, mnist_run  # noqa: F401

from text_recognizer.page_ocr import page_ocr_main, read_page
from text_recognizer.predictors import CharacterPredictor


def _page(rows: int = 3, per_row: int = 6) -> tuple[np.ndarray, list[str]]:
    from text_recognizer.datasets.mnist import MnistDataset

    data = MnistDataset(data_dir=str(MNIST_DIR), test_set_only=True).load_or_generate_data()
    x, y = data.x_test, data.y_test
    page = np.full((rows * 70 + 30, per_row * 56 + 30), 255, np.uint8)  # dark ink on paper
    truth = []
    for r in range(rows):
        line = ""
        for c in range(per_row):
            i = r * per_row + c
            top, left = 25 + r * 70 + (c % 2) * 6, 20 + c * 56  # a little vertical jitter
            page[top : top + 28, left : left + 28] = 255 - x[i]
            line += str(int(y[i]))
        truth.append(line)
    return page, truth


def test_reads_rows_in_order(tmp_path: Path, mnist_run: Path, capsys) -> None:  # noqa: F811
    page, truth = _page()
    text, _lines = read_page(Image.fromarray(page), CharacterPredictor.from_run(mnist_run))
    rows = text.split("\n")
    assert [len(r) for r in rows] == [len(t) for t in truth]  # every digit found, rows kept
    correct = sum(
        a == b for r, t in zip(rows, truth, strict=True) for a, b in zip(r, t, strict=False)
    )
    # The 1-epoch mlp fixture (~72% on MNIST) reads ~4/18 Otsu crops; a 2-epoch lenet reads 14/18.
    # This guards the pipeline (order, crops reaching the model), not model quality.
    assert correct / sum(map(len, truth)) >= 0.15, (rows, truth)
    path = tmp_path / "page.png"
    Image.fromarray(page).convert("RGB").save(path)
    out = tmp_path / "annotated.png"
    assert page_ocr_main([str(path), "--model", str(mnist_run), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().split("\n") == rows
    assert Image.open(out).size == (page.shape[1], page.shape[0])


def test_bad_page(tmp_path: Path, mnist_run: Path, capsys) -> None:  # noqa: F811
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    assert page_ocr_main([str(bad), "--model", str(mnist_run)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
