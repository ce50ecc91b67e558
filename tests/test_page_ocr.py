"""Page OCR on a synthetic page of real MNIST digits in three rows: reading order and accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from predict_fixtures import MNIST_DIR, mnist_lenet_run, mnist_run  # noqa: F401

from text_recognizer.page_ocr import page_ocr_main, read_page
from text_recognizer.predictors import CharacterPredictor


def _page(rows: int = 4, per_row: int = 8) -> tuple[np.ndarray, list[str]]:
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


def test_reads_rows_in_order_and_accurately(
    tmp_path: Path,
    mnist_lenet_run: Path,  # noqa: F811
    capsys,
) -> None:
    page, truth = _page()
    predictor = CharacterPredictor.from_run(mnist_lenet_run)
    text, _lines = read_page(Image.fromarray(page), predictor)
    rows = text.split("\n")
    assert [len(r) for r in rows] == [len(t) for t in truth]  # every digit found, rows kept
    correct = sum(
        a == b for r, t in zip(rows, truth, strict=True) for a, b in zip(r, t, strict=False)
    )
    # The 2-epoch LeNet reads ~96 % of MNIST test digits and 31/32 on this page; crops framed
    # like MNIST's (centre of mass) matter: centring the bounding box read 85 %.
    assert correct / sum(map(len, truth)) >= 0.85, (rows, truth)
    path = tmp_path / "page.png"
    Image.fromarray(page).convert("RGB").save(path)
    out = tmp_path / "annotated.png"
    assert page_ocr_main([str(path), "--model", str(mnist_lenet_run), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().split("\n") == rows
    assert f"wrote {out}" in captured.err  # where the annotated page went
    assert Image.open(out).size == (page.shape[1], page.shape[0])


def test_bad_page(tmp_path: Path, mnist_run: Path, capsys) -> None:  # noqa: F811
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    assert page_ocr_main([str(bad), "--model", str(mnist_run)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
