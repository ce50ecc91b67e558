"""Paragraph OCR: line segmentation on real IAM crops, ground truth files, the CER report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from predict_fixtures import kaggle_run  # noqa: F401

from text_recognizer.errors import UserError
from text_recognizer.ground_truth import detokenize, merge_ground_truth, truth_for
from text_recognizer.metrics import char_edits
from text_recognizer.paragraph_ocr import (
    clear_scan_edges,
    ink_image,
    paragraph_ocr_main,
    read_paragraph,
    segment_lines,
)


@pytest.fixture
def iam_paragraphs(shared_data: Path) -> Path:
    folder = shared_data / "iam" / "paragraphs_support"
    needed = [folder / "data_by_file_id.json", shared_data / "iam" / "ascii" / "lines.txt"]
    if not all(p.exists() for p in needed):
        pytest.skip(f"no IAM paragraph crops or lines.txt under {shared_data / 'iam'}")
    return folder


def test_iam_line_counts(iam_paragraphs: Path, shared_data: Path) -> None:
    """Every real crop, the scanned form a01-000u with its dark edge and specks included."""
    truth = merge_ground_truth(
        [iam_paragraphs / "data_by_file_id.json", shared_data / "iam" / "ascii" / "lines.txt"]
    )
    images = sorted(iam_paragraphs.glob("*.png")) + sorted(iam_paragraphs.glob("*.jpg"))
    assert len(images) >= 5
    for image in images:
        target = truth_for(image, truth)
        assert target is not None, image
        assert len(segment_lines(ink_image(image))) == len(target.split("\n")), image.name


def test_lines_txt_reads_like_the_printed_text(iam_paragraphs: Path, shared_data: Path) -> None:
    """IAM's tokens re-joined equal FSDL's text taken from the IAM XML, quotes across lines too."""
    tokens = merge_ground_truth([shared_data / "iam" / "ascii" / "lines.txt"])
    exact = merge_ground_truth([iam_paragraphs / "data_by_file_id.json"])
    assert len(exact) == 4
    for form, text in exact.items():
        assert tokens[form] == text, form
    form = truth_for("a01-000u-cropped.jpg", tokens)
    assert form is not None and form.count("\n") == 6
    assert form.split("\n")[3] == "M Ps tomorrow. Mr. Michael Foot has"
    assert form.split("\n")[6] == "Griffiths, M P for Manchester Exchange."
    assert truth_for("z99-999.png", tokens) is None
    assert truth_for("a01-000uX.png", tokens) is None  # an id is matched up to - _ or . only


def test_detokenize_and_json_formats(tmp_path: Path) -> None:
    assert detokenize("Labour 's attack , he said ( not I ) . I 'm") == (
        "Labour's attack, he said (not I). I'm"
    )
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"p1": "one\ntwo"}))
    fsdl = tmp_path / "fsdl.json"
    fsdl.write_text(json.dumps({"p1": {"ground_truth_text": "first wins?"}, "p2": {"x": 1}}))
    assert merge_ground_truth([plain])["p1"] == "one\ntwo"
    with pytest.raises(UserError, match="'p2' must be a string or an object"):
        merge_ground_truth([fsdl])
    fsdl.write_text(json.dumps({"p1": {"ground_truth_text": "later"}}))
    assert merge_ground_truth([plain, fsdl])["p1"] == "one\ntwo"  # the first file wins
    broken = tmp_path / "broken.json"
    broken.write_text("{nope")
    with pytest.raises(UserError, match="not valid JSON"):
        merge_ground_truth([broken])


def test_scan_edges_are_cleared_and_specks_are_not_lines() -> None:
    page = np.full((300, 400), 245, np.uint8)
    page[:, :8] = 20  # a dark scanner edge down the left side, fading out
    page[::2, 8:10] = 20  # (half the rows)
    for top in (40, 120):
        page[top : top + 30, 40:360:9] = 10
    page[230:236, 100:104] = 10  # a speck below the text
    ink = ink_image(page)
    assert (ink[:, :10] > 100).sum() == 0 and clear_scan_edges(ink).shape == ink.shape
    assert len(segment_lines(ink)) == 2


def test_one_short_line_and_letters_at_the_edge_are_kept() -> None:
    word = np.full((150, 200), 255, np.uint8)
    word[60:84, 50:138:4] = 0  # one word: no line pitch to measure
    assert len(segment_lines(ink_image(word))) == 1
    line = np.full((30, 200), 255, np.uint8)
    line[2:28, 0:4] = 0  # an "I" at the very edge of a tight line crop
    line[5:25, 20:180:6] = 0
    assert ink_image(line)[:, :4].max() == 255


def test_cer_report_against_ground_truth(tmp_path: Path, kaggle_run: Path, capsys) -> None:  # noqa: F811
    page = np.full((200, 600), 250, np.uint8)
    for top in (20, 110):
        page[top : top + 40, 20:560:11] = 10
    image = tmp_path / "para-1.png"
    Image.fromarray(page).save(image)
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"para-1": "ABC\nDEF"}))
    args = [str(image), "--model", str(kaggle_run), "--ground-truth", str(truth)]
    assert paragraph_ocr_main([*args, "--json"]) == 0
    row, totals = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert row["lines"] == row["true_lines"] == 2
    assert totals["overall_cer"] == row["cer"] and totals["paragraphs"] == 1
    assert row["cer"] == pytest.approx(char_edits(row["text"], "ABC\nDEF") / 7)
    assert paragraph_ocr_main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"== {image}: CER {row['cer']:.3f}, lines 2/2")
    assert out[-1].startswith(f"overall: CER {row['cer']:.3f} (")
    assert "over 1 paragraphs; lines found 2, true 2" in out[-1]

    other = tmp_path / "other.png"
    Image.fromarray(page).save(other)
    assert paragraph_ocr_main([str(other), *args[1:]]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no ground truth" in err and "\n" not in err
    assert paragraph_ocr_main([str(tmp_path / "missing.png"), *args[1:]]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'missing.png'}: no such file"


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


def test_ground_truth_the_model_cannot_write_is_warned(
    tmp_path: Path,
    kaggle_run: Path,  # noqa: F811
    capsys,
) -> None:
    """Lower case against a model of capitals: the warning names them and the CER floor."""
    page = np.full((100, 600), 250, np.uint8)
    page[30:70, 20:560:11] = 10
    image = tmp_path / "para-2.png"
    Image.fromarray(page).save(image)
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"para-2": "abcd EFGH"}))
    args = [str(image), "--model", str(kaggle_run), "--ground-truth", str(truth)]
    assert paragraph_ocr_main(args) == 0
    err = capsys.readouterr().err
    assert "cannot write 4 of the ground truth's characters" in err
    assert "cannot go below 0.444" in err  # 4 of the 9 characters (the space it can write)
    truth.write_text(json.dumps({"para-2": "ABCD EFGH"}))
    assert paragraph_ocr_main(args) == 0
    assert "cannot write" not in capsys.readouterr().err
