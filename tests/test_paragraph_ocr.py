"""Paragraph line segmentation on real IAM paragraph crops: lines found == ground-truth lines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from text_recognizer.paragraph_ocr import ink_image, read_paragraph, segment_lines

IAM = Path(__file__).resolve().parents[2] / "shared" / "data" / "iam" / "paragraphs_support"


@pytest.mark.skipif(not (IAM / "data_by_file_id.json").exists(), reason="no IAM paragraphs")
def test_iam_line_counts() -> None:
    truth = json.loads((IAM / "data_by_file_id.json").read_text())
    for file_id, item in truth.items():
        ink = ink_image(IAM / f"{file_id}.png")
        assert len(segment_lines(ink)) == len(item["ground_truth_text"].split("\n")), file_id


def test_synthetic_paragraph_joined_by_newlines() -> None:
    page = np.full((200, 300), 250, np.uint8)
    for top in (20, 80, 140):
        page[top : top + 30, 20:280:7] = 10  # three "lines" of strokes
    bands = segment_lines(ink_image(page))
    assert len(bands) == 3

    class Echo:
        def predict_batch(self, crops: list) -> list:
            from text_recognizer.predictors import Prediction

            return [Prediction(f"line{c.shape[0]}", 1.0) for c in crops]

    text, _ = read_paragraph(page, Echo())
    assert text.count("\n") == 2
