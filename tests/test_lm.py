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
# Kaggle names: every letter and "-" (the LM must know at least half of the model's characters)
NAMES = [
    "ANNA",
    "MARIE",
    "PAUL",
    "JEAN-LUC",
    "BOB",
    "CHRIS",
    "DAVID",
    "FELIX",
    "GUY",
    "HUGO",
    "KEVIN",
    "OSCAR",
    "QUENTIN",
    "TOM",
]
NAMES += ["WALTER", "XAVIER", "YVES", "ZOE"]


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


def test_surrounding_whitespace_is_not_a_space() -> None:
    assert ngram.normalize("  a\tb\u00a0c \r\n") == "a b c"
    model = ngram.estimate(["ab ", " ab", "\tab\n"], 2)
    assert " " not in model.prob[1] and model.characters == 6
    assert "<space>" not in ngram.arpa_text(model)


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


@pytest.mark.parametrize("with_lm", [False, True])
def test_nan_outputs_decode_like_greedy(tmp_path: Path, with_lm: bool) -> None:
    mapping = make_mapping("abcdefgh t")
    lm = str(arpa(tmp_path, ["a bad cage", "the fad", "eat beef"] * 3, 4)) if with_lm else None
    lp = outputs("peaked", n=4)
    lp[1, 7] = float("nan")  # one frame
    lp[2] = float("nan")  # every frame
    lp[3, 3, 4] = float("inf")
    decoder = decoding.Decoder("beam", 10, lm, 1.0, 0.5 if with_lm else 0.0)
    rows = decoder.decode(lp, mapping, 0, (1,))
    assert len(rows) == 4
    assert rows[0] == decoder.decode(lp[:1], mapping, 0, (1,))[0]  # the finite row: beam search
    assert rows[1:] == decoding.greedy_ctc_decode(lp[1:], 0, (1,))
    assert rows[2] == []


def test_a_rewritten_lm_is_loaded_again(tmp_path: Path) -> None:
    import os

    mapping = make_mapping("abc")
    path = tmp_path / "lm.arpa"
    ngram.write_arpa(ngram.estimate(["abc", "abc", "ab"], 2), path)
    first = decoding.load_lm(path, mapping)
    assert decoding.load_lm(path, mapping) is first  # unchanged: loaded once

    def p_b_after_a(lm: decoding.LanguageModel) -> float:
        state, _ = lm.kenlm.score(lm.kenlm.start(False), mapping.index("a"))
        return 10 ** lm.kenlm.score(state, mapping.index("b"))[1]

    ngram.write_arpa(ngram.estimate(["ac", "ac", "acb", "cab"], 2), path)  # a new file (rename)
    second = decoding.load_lm(path, mapping)
    assert second is not first and p_b_after_a(second) < p_b_after_a(first)
    body = ngram.arpa_text(ngram.estimate(["abc"] * 5, 2))
    stat = path.stat()
    with open(path, "w") as f:  # rewritten in place: same inode, other size
        f.write(body)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old mtime
    third = decoding.load_lm(path, mapping)
    assert third is not second and p_b_after_a(third) > p_b_after_a(second)


def test_truncated_lm_says_why_without_cpp_noise(tmp_path: Path) -> None:
    mapping = make_mapping(sorted(set("".join(SENTENCES))))
    body = arpa(tmp_path, SENTENCES, 3).read_text()
    cases = {
        "truncated.arpa": (body[: body.index("\\2-grams:") + 40], "End of file in the 2-gram"),
        "noheader.arpa": ("hello\n", 'first non-empty line was "hello"'),
        "badcount.arpa": ("\\data\\\nngram 1=zz\n", "Bad count zz"),
        "unigram.arpa": (body.replace("\tt\t", "\tq\t", 1), "not seen in the unigrams"),
    }
    for name, (text, reason) in cases.items():
        bad = tmp_path / name
        bad.write_text(text)
        with pytest.raises(UserError) as info:
            decoding.load_lm(bad, mapping)
        message = str(info.value)
        assert message.startswith(f"language model {bad} is not a readable ARPA file: "), message
        assert reason in message, message
        for noise in ("threw", "because", ".cc:", ".hh:", "Exception", "\n"):
            assert noise not in message, message


def test_lm_coverage_of_the_model_characters(tmp_path: Path, capsys) -> None:
    path = arpa(tmp_path, ["ab ba", "abc cab"], 2)  # knows a, b, c and the space
    decoding.load_lm(path, make_mapping("abc "))
    assert "lacks" not in capsys.readouterr().err
    decoding.load_lm(path, make_mapping("abc dx"))  # 4 of 6: a note naming d and x
    err = capsys.readouterr().err
    assert "lacks 2 of the model's 6 characters ('dx')" in err and err.count("\n") == 1
    with pytest.raises(UserError, match=r"knows only 3 of the model's 7 characters") as info:
        decoding.load_lm(path, make_mapping("abcdefg"))  # 3 of 7: refused
    assert "'defg'" in str(info.value) and "\n" not in str(info.value)


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
    assert validate_config(config) == config  # a resolved config (resume) validates again


def test_lm_settings_that_would_be_ignored_are_config_errors(tmp_path: Path) -> None:
    path = str(arpa(tmp_path, SENTENCES, 3))
    fixed = {"dataset": "EmnistLinesDataset", "model": "LineModel", "network": "line_cnn"}
    with pytest.raises(
        ConfigError, match=r"train_args\.lm applies to LineModelCtc.*model LineModel "
    ):
        validate_config({**fixed, "train_args": {"decode": "beam", "lm": path}})
    ctc = {"dataset": "EmnistLinesDataset", "model": "LineModelCtc", "network": "line_lstm_ctc"}
    for key, value in (("lm_weight", 0.5), ("lm_bonus", 1.0)):
        for decode in ("greedy", "beam"):
            with pytest.raises(ConfigError, match=rf"train_args\.{key} needs train_args\.lm") as e:
                validate_config({**ctc, "train_args": {"decode": decode, key: value}})
            assert "\n" not in str(e.value)
    plain = validate_config({**ctc, "train_args": {"decode": "beam"}})  # defaults, no LM: fine
    assert validate_config(plain) == plain


def test_train_args_lm_is_used_in_evaluation(tmp_path: Path, kaggle_run: Path) -> None:  # noqa: F811
    from text_recognizer.models.base import Model

    model, _ = Model.load_with_config(kaggle_run / "weights.pt")
    path = arpa(tmp_path, NAMES * 2, 3)
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


def test_bad_lm_settings_in_a_weights_file_are_one_line(
    tmp_path: Path,
    capsys,
    kaggle_run: Path,  # noqa: F811
) -> None:
    from text_recognizer.predictors import LinePredictor

    payload = torch.load(kaggle_run / "weights.pt", map_location="cpu", weights_only=True)
    image = str(sorted((KAGGLE_DIR / "test_v2").glob("*.jpg"))[0])
    cases = {
        "config.train_args.lm must be a file path": {"lm": 123},
        "config.train_args.lm_weight must be a number from 0 to 10, got 'x'": {"lm_weight": "x"},
        "config.train_args.lm_weight must be a number from 0 to 10, got [1]": {"lm_weight": [1]},
        "config.train_args.lm_bonus must be a number from -50 to 50": {"lm_bonus": 1e9},
    }
    for fragment, change in cases.items():
        bad = tmp_path / "weights.pt"
        train = {"decode": "beam", "beam_width": 4, **change}
        torch.save({**payload, "config": {**payload["config"], "train_args": train}}, bad)
        err = _error(capsys, [image, "--model", str(bad)])
        assert f"cannot read weights {bad}" in err and fragment in err, err
    model = LinePredictor.from_weights(kaggle_run).model  # past the weights file's checks
    for train in ({"decode": "beam", "lm_weight": [1]}, {"decode": "beam", "lm": 5}):
        with pytest.raises(UserError, match="the run's train_args"):
            LinePredictor(model, {"train_args": train})


def test_a_run_with_a_corrupt_lm_fails_before_epoch_one(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    from text_recognizer.run.cli import run_experiment_main

    monkeypatch.setenv("TEXT_RECOGNIZER_RUNS_DIR", str(tmp_path / "runs"))
    bad = tmp_path / "bad.arpa"
    bad.write_text("\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0\t<s>\n")  # cut short
    config = {
        "experiment_group": "lm-check",
        "dataset": "SyntheticLinesDataset",
        "dataset_args": {"num_train": 40, "num_test": 8, "charset": "digits", "max_length": 8},
        "model": "LineModelCtc",
        "network": "line_lstm_ctc",
        "network_args": {"conv_channels": [4, 4], "window_features": 8, "lstm_hidden": 8},
        "train_args": {"epochs": 1, "num_threads": 1, "decode": "beam", "lm": str(bad)},
    }
    assert run_experiment_main([json.dumps(config), "--nowandb"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert f"language model {bad} is not a readable ARPA file" in errors[0]
    assert "epoch 1" not in err
    assert not list((tmp_path / "runs").rglob("metrics.jsonl"))  # no run folder was created


def test_tune_checks_its_arguments_before_importing_torch(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from text_recognizer.lm import lm_main\n"
        f"bad = [['tune', 'RUN', '--lm', {str(tmp_path / 'none.arpa')!r}],\n"
        "       ['tune', 'RUN', '--lm', 'x', '--weights', '-1'],\n"
        "       ['tune', 'RUN', '--lm', 'x', '--beam', '0']]\n"
        "print([lm_main(argv) for argv in bad], 'torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[2, 2, 2] False", result.stdout + result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("error: ") == 3


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
    path = str(arpa(tmp_path, NAMES * 2, 3))
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
    path = str(arpa(tmp_path, NAMES * 2, 3))
    argv = [str(image), "--model", str(kaggle_run), "--lm", path, "--lm-weight", "0.5"]
    assert paragraph_ocr_main(argv) == 0
    assert paragraph_ocr_main([*argv[:-4], "--lm", str(tmp_path / "none.arpa")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_evaluate_reads_a_run_with_an_lm(tmp_path: Path, capsys, kaggle_run: Path) -> None:  # noqa: F811
    from text_recognizer.evaluate import evaluate_main

    path = str(arpa(tmp_path, NAMES * 2, 3))
    run = [str(kaggle_run), "--limit", "12"]

    def report(*options: str) -> dict:
        out = tmp_path / "eval.json"
        assert evaluate_main([*run, *options, "--json", str(out)]) == 0
        capsys.readouterr()
        return json.loads(out.read_text())

    plain = report("--beam", "8")
    zero = report("--beam", "8", "--lm", path, "--lm-weight", "0")
    assert zero["decoder"] == {
        "method": "beam",
        "beam_width": 8,
        "lm": path,
        "lm_weight": 0.0,
        "lm_bonus": 0.0,
    }
    assert [p["prediction"] for p in zero["predictions"]] == [
        p["prediction"] for p in plain["predictions"]
    ]
    strong = report("--lm", path, "--lm-weight", "5", "--lm-bonus", "3")
    assert strong["decoder"]["beam_width"] == decoding.DEFAULT_LM_BEAM
    assert [p["prediction"] for p in strong["predictions"]] != [
        p["prediction"] for p in plain["predictions"]
    ]
    for options, fragment in (
        (["--lm", str(tmp_path / "none.arpa")], "no such file"),
        (["--lm-weight", "2"], "need --lm"),
        (["--lm", path, "--lm-bonus", "99"], "--lm-bonus"),
        (["--lm", path, "--beam", "1"], "greedy"),
    ):
        assert evaluate_main([*run, *options]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and fragment in err and "\n" not in err, err


def test_tune_reads_the_validation_split(tmp_path: Path, capsys, kaggle_run: Path) -> None:  # noqa: F811
    path = str(arpa(tmp_path, NAMES * 2, 3))
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
        "a02-046a-00 ok 154 19 408 746 1661 89 benchmark|form|without|crop",
        "d01-001-00 ok 154 19 408 746 1661 89 validation|form|words",
        "b01-001-00 ok 154 19 408 746 1661 89 held|out|test|line",
        "c01-001-00 err 154 19 408 746 1661 89 kept|line|.",
        "c01-002-00 ok 154 19 408 746 1661 89 same|as|the|crop",
    ]
    (iam / "ascii/lines.txt").write_text("\n".join(rows) + "\n")
    (iam / "splits_htr_best_practices/test.uttlist").write_text("b01-001\n")
    (iam / "splits_htr_best_practices/validation.uttlist").write_text("d01-001\n")
    Image.new("L", (10, 10)).save(iam / "paragraphs_support/a01-077.png")
    Image.new("L", (10, 10)).save(iam / "paragraphs_support/a01-000u-cropped.jpg")
    truth = {"a01-077": {"ground_truth_text": "crop form text\nsame as the crop"}}
    (iam / "paragraphs_support/data_by_file_id.json").write_text(json.dumps(truth))
    return iam


def test_iam_text_leaves_out_test_and_paragraph_forms(tmp_path: Path, capsys) -> None:
    iam = fake_iam(tmp_path)
    splits = iam / "splits_htr_best_practices"
    text = iam_text(
        iam / "ascii/lines.txt",
        splits / "test.uttlist",
        iam / "paragraphs_support",
        splits / "validation.uttlist",
    )
    assert text.lines == ["kept line ."]
    assert text.excluded == {
        "aachen_test_form": 1,
        "aachen_validation_form": 1,
        "paragraph_crop_form": 4,  # a02-046: a PARAGRAPH_BENCHMARK_FORMS stem without a crop
        "paragraph_crop_line": 1,
    }
    out = tmp_path / "lm" / "iam.arpa"
    assert lm_main(["build", "--iam", str(iam), "--order", "3", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "1 lines used; 7 left out" in err and "aachen_validation_form 1" in err
    body = out.read_text()
    assert "\tk e p" in body and "M O V" not in body and "c r o" not in body
    assert "v a l" not in body and "b e n" not in body
    kept = tmp_path / "lm" / "kept.arpa"
    argv = ["build", "--iam", str(iam), "--order", "3", "--out", str(kept), "--keep-validation"]
    assert lm_main(argv) == 0
    assert "2 lines used; 6 left out" in capsys.readouterr().err
    assert "v a l" in kept.read_text()
    assert "e <space> ." in body  # IAM's tokens, as IAM lines are labelled
    written = tmp_path / "lm" / "written.arpa"
    assert (
        lm_main(["build", "--iam", str(iam), "--order", "3", "--out", str(written), "--as-written"])
        == 0
    )
    body = written.read_text()
    assert "e <space> ." not in body and "n e ." in body  # "kept line." as printed
    assert "t e s" not in body and "<space>" in body
    assert lm_main(["build", "--out", str(out)]) == 2
    assert lm_main(["build", "--iam", str(tmp_path), "--out", str(out)]) == 2
    (iam / "splits_htr_best_practices/validation.uttlist").unlink()
    assert lm_main(["build", "--iam", str(iam), "--out", str(out)]) == 2
    assert "validation.uttlist (needed to exclude)" in capsys.readouterr().err


def test_build_lm_script_takes_options_first(tmp_path: Path) -> None:
    import os
    import subprocess

    from text_recognizer.paths import PROJECT_ROOT

    fake_iam(tmp_path)
    env = {**os.environ, "TEXT_RECOGNIZER_SHARED_DATA": str(tmp_path)}
    script = str(PROJECT_ROOT / "tasks" / "build_lm.sh")
    out = tmp_path / "options.arpa"
    for argv, path in (
        (["--order", "3", "--out", str(out)], out),  # once: out="--order"
        ([str(tmp_path / "first.arpa"), "--order", "3"], tmp_path / "first.arpa"),
    ):
        result = subprocess.run(["bash", script, *argv], env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert "order 3" in result.stderr and "ngram 3=" in path.read_text()
    assert not (PROJECT_ROOT / "--order").exists()


def test_arpa_header_counts_match(tmp_path: Path) -> None:
    body = arpa(tmp_path, SENTENCES, 3).read_text()
    header = dict(line.split("=") for line in body.splitlines() if line.startswith("ngram "))
    for n in (1, 2, 3):
        section = body.split(f"\\{n}-grams:\n")[1].split("\n\n")[0].splitlines()
        assert len(section) == int(header[f"ngram {n}"])
    assert math.isclose(float(body.split("\t<s>")[0].rsplit("\n", 1)[1]), -99.0)


def test_names_lm_is_built_from_fakers_lists(tmp_path: Path, capsys) -> None:
    out = tmp_path / "names.arpa"
    assert lm_main(["build", "--names", "300", "--order", "3", "--out", str(out)]) == 0
    assert "names: 300 name lines" in capsys.readouterr().err
    unigrams = out.read_text().split("\\1-grams:")[1].split("\\2-grams:")[0].split()
    tokens = {t for t in unigrams if not t.lstrip("-").replace(".", "").isdigit()}
    letters = tokens - {"<s>", "</s>", "<unk>", "<space>"}
    assert letters and letters <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ-'")
    assert lm_main(["build", "--names", "0", "--out", str(out)]) == 2
    assert "--names must be from 1" in capsys.readouterr().err
