"""Character n-gram LM decoding: the Kneser-Ney estimator, KenLM through flashlight-text, the
LM-weight-0 identity, and the commands (build, tune, predict --lm, paragraph OCR --lm)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from predict_fixtures import KAGGLE_DIR, kaggle_run  # noqa: F401

from text_recognizer import decoding, ngram
from text_recognizer.config import TrainArgs, validate_config
from text_recognizer.datasets.text import make_mapping
from text_recognizer.errors import ConfigError, UserError
from text_recognizer.lm import iam_text, lm_main
from text_recognizer.predict import predict_main

SENTENCES = ["the cat sat on the mat", "the hat", "a cat ate the hat", "that is the cat"] * 5


def arpa(tmp_path: Path, lines: list[str], order: int = 4, **kwargs) -> Path:
    path = tmp_path / f"lm{order}.arpa"
    ngram.write_arpa(ngram.estimate(lines, order, **kwargs), path)
    return path


def kenlm_distribution(lm: decoding.LanguageModel, mapping: list[str], history: str) -> float:
    state = lm.kenlm.start(False)
    for ch in history:
        state, _ = lm.kenlm.score(state, mapping.index(ch))
    total = sum(10 ** lm.kenlm.score(state, i)[1] for i in range(2, len(mapping)))
    unknown = 10 ** lm.kenlm.score(state, 0)[1]  # class 0 (blank) is <unk> to the LM
    return total + unknown + 10 ** lm.kenlm.finish(state)[1]


# ----- the estimator ---------------------------------------------------------------------------------
def test_hand_computed_bigram() -> None:
    """'ab', 'a' with D = (0.5, 1, 1.5): P(b | a) = 1/4 + 1/2 * P_kn(b) = 1/4 + 1/2 * 1/4."""
    model = ngram.estimate(["ab", "a"], 2, discounts=[(0.5, 1.0, 1.5)] * 2)
    assert model.probability("a", "b") == pytest.approx(0.375)
    assert model.probability("", "b") == pytest.approx(0.25)
    unigram = ngram.estimate(["ab", "a"], 1, discounts=[(0.5, 1.0, 1.5)])
    assert unigram.probability("", "a") == pytest.approx(0.325)


def test_hand_computed_bigram_through_kenlm(tmp_path: Path) -> None:
    path = arpa(tmp_path, ["ab", "a"], 2, discounts=[(0.5, 1.0, 1.5)] * 2)
    lm = decoding.load_lm(path, make_mapping("ab"))
    state, _ = lm.kenlm.score(lm.kenlm.start(False), 2)  # "a" after <s>
    assert 10 ** lm.kenlm.score(state, 3)[1] == pytest.approx(0.375, rel=1e-4)


@pytest.mark.parametrize("order", [2, 3, 6])
def test_probabilities_sum_to_one_in_kenlm(tmp_path: Path, order: int) -> None:
    mapping = make_mapping(sorted(set("".join(SENTENCES))))
    lm = decoding.load_lm(arpa(tmp_path, SENTENCES, order), mapping)
    for history in ("", "t", "the c", "ht", "a cat ate the ha"):
        assert kenlm_distribution(lm, mapping, history) == pytest.approx(1.0, abs=1e-4)


def test_iam_lm_sums_to_one(tmp_path: Path, shared_data: Path) -> None:
    lines = iam_text(shared_data / "iam/ascii/lines.txt", None, None).lines[:3000]
    mapping = make_mapping(sorted(set("".join(lines))))  # each LM token once, <unk> apart
    lm = decoding.load_lm(arpa(tmp_path, lines, 6), mapping)
    for history in ("", "The ", "tomorrow . M", "qx#"):
        assert kenlm_distribution(lm, mapping, history) == pytest.approx(1.0, abs=1e-3)


# ----- decoding -------------------------------------------------------------------------------------
def outputs(kind: str, n: int = 60, steps: int = 40, classes: int = 12) -> torch.Tensor:
    rng = np.random.default_rng({"random": 0, "peaked": 1, "flat": 2}[kind])
    scale = {"random": 2.0, "peaked": 8.0, "flat": 0.5}[kind]
    return torch.from_numpy(rng.normal(size=(n, steps, classes)) * scale).float().log_softmax(-1)


@pytest.mark.parametrize("kind", ["random", "peaked", "flat"])
def test_lm_weight_zero_is_plain_beam_search(tmp_path: Path, kind: str) -> None:
    mapping = make_mapping("abcdefgh t")
    path = arpa(tmp_path, ["a bad cage", "the fad", "eat beef"] * 3, 4)
    lp = outputs(kind)
    plain = decoding.Decoder("beam", 10).decode(lp, mapping, 0, (1,))
    assert plain == decoding.beam_ctc_decode(lp.exp(), 10)
    with_lm = decoding.Decoder("beam", 10, str(path), 0.0, 0.0).decode(lp, mapping, 0, (1,))
    assert with_lm == plain
    weighted = decoding.Decoder("beam", 10, str(path), 2.0, 0.0).decode(lp, mapping, 0, (1,))
    assert weighted != plain  # the LM is really consulted


def ambiguous(mapping: list[str], text: str, unsure: dict[int, str]) -> torch.Tensor:
    """Two frames per character (the character, then blank); at ``unsure`` positions the other
    character is slightly likelier."""
    frames = []
    for i, ch in enumerate(text):
        p = np.full(len(mapping), 1e-4)
        if i in unsure:
            p[mapping.index(ch)], p[mapping.index(unsure[i])] = 0.45, 0.55
        else:
            p[mapping.index(ch)] = 1.0
        frames.append(p / p.sum())
        blank = np.full(len(mapping), 1e-4)
        blank[0] = 1.0
        frames.append(blank / blank.sum())
    return torch.from_numpy(np.log(np.stack(frames)))[None].float()


def test_lm_moves_an_ambiguous_line_toward_its_text(tmp_path: Path) -> None:
    mapping = make_mapping(sorted(set("".join(SENTENCES)) | {"o"}))
    lp = ambiguous(mapping, "the cat", {2: "o"})
    plain = decoding.to_texts(decoding.Decoder("beam", 10).decode(lp, mapping, 0, (1,)), mapping)
    assert plain == ["tho cat"]
    path = str(arpa(tmp_path, SENTENCES, 4))
    decoder = decoding.Decoder("beam", 10, path, 1.0, 0.0)
    assert decoding.to_texts(decoder.decode(lp, mapping, 0, (1,)), mapping) == ["the cat"]
    bonus = decoding.Decoder("beam", 10, path, 1.0, 0.5)
    assert decoding.to_texts(bonus.decode(lp, mapping, 0, (1,)), mapping) == ["the cat"]


def test_bonus_favours_insertions(tmp_path: Path) -> None:
    mapping = make_mapping(sorted(set("".join(SENTENCES))))
    lp = outputs("flat", n=10, classes=len(mapping))
    path = str(arpa(tmp_path, SENTENCES, 3))
    short = decoding.Decoder("beam", 8, path, 1.0, -5.0).decode(lp, mapping, 0, (1,))
    long = decoding.Decoder("beam", 8, path, 1.0, 5.0).decode(lp, mapping, 0, (1,))
    assert sum(map(len, long)) > sum(map(len, short))


def test_missing_and_corrupt_lm_are_one_line(tmp_path: Path) -> None:
    mapping = make_mapping("ab")
    with pytest.raises(UserError, match="no such file"):
        decoding.load_lm(tmp_path / "none.arpa", mapping)
    bad = tmp_path / "bad.arpa"
    bad.write_text("\\data\\\nngram 1=zz\n")
    with pytest.raises(UserError, match="not a readable ARPA file") as info:
        decoding.load_lm(bad, mapping)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="lm_weight"):
        decoding.Decoder("beam", 10, str(bad), -1.0)
    with pytest.raises(ValueError, match="needs beam search"):
        decoding.Decoder("greedy", 10, str(bad))


# ----- train_args --------------------------------------------------------------------------------------
def test_train_args_lm_is_checked_at_config_time(tmp_path: Path) -> None:
    base = {"dataset": "EmnistLinesDataset", "model": "LineModelCtc", "network": "line_lstm_ctc"}
    missing = {**base, "train_args": {"decode": "beam", "lm": str(tmp_path / "none.arpa")}}
    with pytest.raises(ConfigError, match=r"train_args\.lm"):
        validate_config(missing)
    path = arpa(tmp_path, SENTENCES, 3)
    with pytest.raises(ConfigError, match=r'needs train_args\.decode "beam"'):
        validate_config({**base, "train_args": {"lm": str(path)}})
    with pytest.raises(ConfigError, match="lm_weight"):
        validate_config(
            {**base, "train_args": {"decode": "beam", "lm": str(path), "lm_weight": -1}}
        )
    config = validate_config(
        {**base, "train_args": {"decode": "beam", "lm": str(path), "lm_weight": 0.7}}
    )
    decoder = decoding.decoder_from(TrainArgs.from_config(config["train_args"]))
    assert (decoder.method, decoder.lm, decoder.lm_weight, decoder.lm_bonus) == (
        "beam",
        str(path),
        0.7,
        0.0,
    )


def test_train_args_lm_is_used_in_evaluation(tmp_path: Path, kaggle_run: Path) -> None:  # noqa: F811
    from text_recognizer.models.base import Model

    model, _ = Model.load_with_config(kaggle_run / "weights.pt")
    path = arpa(tmp_path, ["ANNA", "MARIE", "PAUL", "JEAN"] * 5, 3)
    x = np.random.default_rng(0).integers(0, 255, (6, *model.input_shape[-2:]), dtype=np.uint8)
    y = np.full((6, 32), 1, dtype=np.int64)
    y[:, :3] = [model.mapping.index(c) for c in "ANN"]
    base = {"batch_size": 4, "decode": "beam", "beam_width": 5}
    plain = model.read_split(x, y, TrainArgs.from_config(base)).predictions
    zero = model.read_split(
        x, y, TrainArgs.from_config({**base, "lm": str(path), "lm_weight": 0.0})
    )
    assert zero.predictions == plain
    strong = {**base, "lm": str(path), "lm_weight": 5.0, "lm_bonus": 3.0}
    predictions = model.read_split(x, y, TrainArgs.from_config(strong)).predictions
    assert predictions != plain


# ----- commands ---------------------------------------------------------------------------------------
def _error(capsys, argv: list[str]) -> str:
    assert predict_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_predict_lm_options(tmp_path: Path, capsys, kaggle_run: Path) -> None:  # noqa: F811
    image = str(sorted((KAGGLE_DIR / "test_v2").glob("*.jpg"))[0])
    model = ["--model", str(kaggle_run)]
    assert "no such file" in _error(capsys, [image, *model, "--lm", str(tmp_path / "x.arpa")])
    bad = tmp_path / "bad.arpa"
    bad.write_bytes(b"\x00\x01 not an arpa file")
    assert "not a readable ARPA file" in _error(capsys, [image, *model, "--lm", str(bad)])
    path = str(arpa(tmp_path, ["ANNA", "MARIE", "PAUL"] * 4, 3))
    assert "--lm-weight" in _error(capsys, [image, *model, "--lm", path, "--lm-weight", "-1"])
    assert "--lm-weight" in _error(capsys, [image, *model, "--lm", path, "--lm-weight", "nan"])
    assert "--lm-bonus" in _error(capsys, [image, *model, "--lm", path, "--lm-bonus", "1e9"])
    assert "need --lm" in _error(capsys, [image, *model, "--lm-weight", "2"])
    assert "greedy" in _error(capsys, [image, *model, "--lm", path, "--beam", "1"])
    assert predict_main([image, *model, "--lm", path, "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert 0 <= row["confidence"] <= 1
    assert predict_main([image, *model, "--lm", path, "--lm-weight", "0", "--beam", "16"]) == 0
    with_zero = capsys.readouterr().out
    assert predict_main([image, *model, "--beam", "16"]) == 0
    assert capsys.readouterr().out == with_zero


def test_paragraph_ocr_accepts_lm(tmp_path: Path, capsys, kaggle_run: Path) -> None:  # noqa: F811
    from text_recognizer.paragraph_ocr import paragraph_ocr_main

    page = np.full((120, 300), 255, np.uint8)
    page[20:40, 20:200] = 0
    page[70:90, 30:260] = 0
    image = tmp_path / "para.png"
    Image.fromarray(page).save(image)
    path = str(arpa(tmp_path, ["ANNA", "MARIE", "PAUL"] * 4, 3))
    argv = [str(image), "--model", str(kaggle_run), "--lm", path, "--lm-weight", "0.5"]
    assert paragraph_ocr_main(argv) == 0
    assert paragraph_ocr_main([*argv[:-4], "--lm", str(tmp_path / "none.arpa")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_tune_reads_the_validation_split(tmp_path: Path, capsys, kaggle_run: Path) -> None:  # noqa: F811
    path = str(arpa(tmp_path, ["ANNA", "MARIE", "PAUL"] * 4, 3))
    out = tmp_path / "best.json"
    argv = ["tune", str(kaggle_run), "--lm", path, "--limit", "12", "--beam", "4"]
    argv += ["--weights", "0,1", "--bonuses", "0,1", "--json", str(out)]
    assert lm_main(argv) == 0
    assert "best: lm_weight" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["split"] == "validation" and len(report["grid"]) == 4
    assert report["grid"][0]["cer"] == pytest.approx(report["beam_cer"])  # weight 0, bonus 0
    assert lm_main(["tune", str(kaggle_run), "--lm", path, "--weights", "-1"]) == 2


# ----- building from IAM ---------------------------------------------------------------------------
def fake_iam(root: Path) -> Path:
    iam = root / "iam"
    (iam / "ascii").mkdir(parents=True)
    (iam / "splits_htr_best_practices").mkdir()
    (iam / "paragraphs_support").mkdir()
    rows = [
        "# comment",
        "a01-000u-00 ok 154 19 408 746 1661 89 A|MOVE|to|stop",
        "a01-000x-00 ok 154 19 408 746 1661 89 A|MOVE|again",
        "a01-077u-00 ok 154 19 408 746 1661 89 crop|form|text",
        "b01-001-00 ok 154 19 408 746 1661 89 held|out|test|line",
        "c01-001-00 err 154 19 408 746 1661 89 kept|line|.",
        "c01-002-00 ok 154 19 408 746 1661 89 same|as|the|crop",
    ]
    (iam / "ascii/lines.txt").write_text("\n".join(rows) + "\n")
    (iam / "splits_htr_best_practices/test.uttlist").write_text("b01-001\n")
    Image.new("L", (10, 10)).save(iam / "paragraphs_support/a01-077.png")
    Image.new("L", (10, 10)).save(iam / "paragraphs_support/a01-000u-cropped.jpg")
    truth = {"a01-077": {"ground_truth_text": "crop form text\nsame as the crop"}}
    (iam / "paragraphs_support/data_by_file_id.json").write_text(json.dumps(truth))
    return iam


def test_iam_text_leaves_out_test_and_paragraph_forms(tmp_path: Path, capsys) -> None:
    iam = fake_iam(tmp_path)
    text = iam_text(
        iam / "ascii/lines.txt",
        iam / "splits_htr_best_practices/test.uttlist",
        iam / "paragraphs_support",
    )
    assert text.lines == ["kept line ."]
    assert text.excluded == {
        "aachen_test_form": 1,
        "paragraph_crop_form": 3,
        "paragraph_crop_line": 1,
    }
    out = tmp_path / "lm" / "iam.arpa"
    assert lm_main(["build", "--iam", str(iam), "--order", "3", "--out", str(out)]) == 0
    assert "1 lines used; 5 left out" in capsys.readouterr().err
    body = out.read_text()
    assert "\tk e p" in body and "M O V" not in body and "c r o" not in body
    assert "t e s" not in body and "<space>" in body
    assert lm_main(["build", "--out", str(out)]) == 2
    assert lm_main(["build", "--iam", str(tmp_path), "--out", str(out)]) == 2


def test_arpa_header_counts_match(tmp_path: Path) -> None:
    body = arpa(tmp_path, SENTENCES, 3).read_text()
    header = dict(line.split("=") for line in body.splitlines() if line.startswith("ngram "))
    for n in (1, 2, 3):
        section = body.split(f"\\{n}-grams:\n")[1].split("\n\n")[0].splitlines()
        assert len(section) == int(header[f"ngram {n}"])
    assert math.isclose(float(body.split("\t<s>")[0].rsplit("\n", 1)[1]), -99.0)
