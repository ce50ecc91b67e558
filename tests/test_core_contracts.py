"""The core's contracts: one train-args object, one prediction path, one rule for the best epoch.

Each test pins a promise the training loop and the prediction code make to everything built on
them (runner, predictors, plots, evaluate.py), so a later change cannot quietly split them again.
"""

from __future__ import annotations

import ast
import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_models import DATA_CONFIG, toy_dataset

import text_recognizer
from text_recognizer.config import TRAIN_ARGS, TrainArgs
from text_recognizer.decoding import Decoder
from text_recognizer.errors import CheckpointError, ConfigError
from text_recognizer.models.character_model import CharacterModel
from text_recognizer.models.training import check_checkpoint
from text_recognizer.predictors import CharacterPredictor, LinePredictor
from text_recognizer.preprocessing import preprocess_image
from text_recognizer.run.records import best_epoch

MODELS_DIR = Path(text_recognizer.__file__).parent / "models"
bars = toy_dataset  # horizontal (class 0) and vertical (class 1) bars on 8x8: trivially learnable


def char_model() -> CharacterModel:
    torch.manual_seed(0)
    return CharacterModel(DATA_CONFIG, "mlp", {"num_layers": 1, "layer_size": 16})


def args(**overrides) -> TrainArgs:
    base = {"batch_size": 32, "epochs": 3, "learning_rate": 0.01, "num_threads": 1}
    return TrainArgs.from_config({**base, **overrides})


# ----- train args ------------------------------------------------------------------------------------
def test_train_args_object_mirrors_the_validated_spec():
    assert [f.name for f in fields(TrainArgs)] == list(TRAIN_ARGS)
    defaults = TrainArgs.from_config({})
    assert defaults.to_dict() == {k: p.default for k, p in TRAIN_ARGS.items()}
    with pytest.raises(ConfigError, match=r"train_args\.batch_size must be"):
        TrainArgs.from_config({"batch_size": 0})
    with pytest.raises(ConfigError, match="warmup_epochs"):
        TrainArgs.from_config({"epochs": 2, "warmup_epochs": 2})
    with pytest.raises(AttributeError):
        defaults.epochs = 3  # frozen: nothing downstream can change what the run was told


# ----- the shape of the core -------------------------------------------------------------------------
def function_lengths(folder: Path) -> dict[str, int]:
    lengths = {}
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lengths[f"{path.name}:{node.name}"] = node.end_lineno - node.lineno + 1
    return lengths


def test_the_training_loop_stays_short():
    lengths = function_lengths(MODELS_DIR)
    assert lengths["base.py:fit"] <= 60
    assert {name: n for name, n in lengths.items() if n > 80} == {}


def test_checkpoint_keys_are_named_only_by_the_training_state():
    """The keys of the training state appear as string literals in one module only."""
    keys = {"best_state", "bad_epochs", "in_a_row", "best_loss"}
    package = Path(text_recognizer.__file__).parent
    naming = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in keys:
                naming.add(path.relative_to(package).as_posix())
    assert naming == {"models/training.py"}


def test_models_take_no_experiment_config():
    import inspect

    from text_recognizer.models.base import Model

    assert "config" not in inspect.signature(Model.__init__).parameters
    assert not hasattr(char_model(), "config")


# ----- one rule for the best epoch -------------------------------------------------------------------
def test_best_epoch_is_the_one_whose_weights_were_kept_with_min_delta():
    """With min_delta, a small improvement is not 'best': the kept (and tested) weights stay
    those of the last epoch that improved by more, and best_epoch names that epoch, not the
    epoch with the lowest val_loss."""
    m, data = char_model(), bars()
    history = m.fit(data, args(epochs=6, early_stopping_min_delta=0.1))
    kept = best_epoch(history)
    lowest = min(history, key=lambda h: h["val_loss"])
    assert kept["best"] and all(not h["best"] for h in history if h["epoch"] > kept["epoch"])
    assert lowest["epoch"] > kept["epoch"]  # the case the rule exists for
    assert lowest["val_loss"] > kept["val_loss"] - 0.1
    assert m.evaluate(data.x_val, data.y_val, args())["loss"] == pytest.approx(
        kept["val_loss"], rel=1e-5
    )


def test_best_epoch_rule_on_records():
    history = [
        {"epoch": 1, "val_loss": 1.0, "best": True},
        {"epoch": 2, "val_loss": 0.99, "best": False},  # better, but not by min_delta
        {"epoch": 3, "val_loss": 1.2, "best": False},
    ]
    assert best_epoch(history)["epoch"] == 1
    never = [{"epoch": 1, "train_loss": float("nan"), "best": False}]
    assert best_epoch(never)["epoch"] == 1  # nothing kept: the final weights are tested


def test_summary_best_epoch_names_the_kept_epoch(tmp_path, monkeypatch):
    """Through the runner: summary.json's best_epoch and val_* are the kept epoch's."""
    from text_recognizer.config import validate_config
    from text_recognizer.run.runner import run_experiment

    monkeypatch.setenv("TEXT_RECOGNIZER_RUNS_DIR", str(tmp_path))
    config = validate_config(
        {
            "experiment_group": "min-delta",
            "dataset": "SyntheticCharactersDataset",
            "dataset_args": {"num_train": 600, "num_test": 100},
            "model": "CharacterModel",
            "network": "mlp",
            "network_args": {"num_layers": 1, "layer_size": 32},
            "train_args": {"epochs": 5, "early_stopping_min_delta": 0.3, "num_threads": 1},
        }
    )
    code, summary = run_experiment(config, use_wandb=False)
    assert code == 0
    history = [
        json.loads(line)
        for line in Path(summary["run_dir"], "metrics.jsonl").read_text().splitlines()
    ]
    kept = best_epoch(history)
    lowest = min(history, key=lambda h: h["val_loss"])
    assert lowest["epoch"] != kept["epoch"]  # the old rule (lowest val_loss) would differ
    assert summary["best_epoch"] == kept["epoch"]
    assert summary["val_loss"] == kept["val_loss"]


# ----- one prediction path ---------------------------------------------------------------------------
def test_a_non_square_character_is_read_the_same_way_everywhere(tmp_path):
    """predict_on_image, the predictor and a file read back all centre a wide image on the
    square (``preprocess_image``), instead of each resizing it their own way."""
    m = char_model()
    m.fit(bars(), args(epochs=2))
    wide = np.zeros((8, 24), dtype=np.uint8)
    wide[2:6, 10:14] = 255  # ink in the middle of a 3:1 image
    expected = preprocess_image(wide, m.preprocessing, polarity="light")
    assert expected.shape == (8, 8)
    squeezed = np.array(Image.fromarray(wide).resize((8, 8), Image.BILINEAR))
    assert not np.array_equal(expected, squeezed)  # the test tells the two readings apart

    texts, confidences = m.predict(expected[None])
    assert m.predict_on_image(wide) == (texts[0], confidences[0])
    path = tmp_path / "wide.png"
    Image.fromarray(255 - wide).save(path)  # dark ink on light paper, as scanned
    predictor = CharacterPredictor(m)
    assert np.array_equal(predictor.prepare(path), expected)
    read = predictor.predict(path)
    assert read.text == texts[0] and read.confidence == pytest.approx(confidences[0])


@pytest.fixture(scope="module")
def ctc():
    from test_line_models import DATA_CONFIG, TINY_LSTM, toy_lines

    from text_recognizer.models.line_model_ctc import LineModelCtc

    torch.manual_seed(0)
    data = toy_lines()
    model = LineModelCtc(DATA_CONFIG, "line_lstm_ctc", TINY_LSTM)
    model.fit(data, TrainArgs.from_config({"batch_size": 32, "epochs": 3, "learning_rate": 0.01}))
    return model, data


def test_read_split_decodes_each_batch_once_and_agrees_with_evaluate(ctc, monkeypatch):
    model, data = ctc
    calls = []
    decode = type(model).decode_outputs

    def counting(self, outputs, decoder):
        calls.append(len(outputs))
        return decode(self, outputs, decoder)

    monkeypatch.setattr(type(model), "decode_outputs", counting)
    beam = Decoder("beam", 5)
    result = model.read_split(data.x_test, data.y_test, decoder=beam)
    assert sum(calls) == len(data.x_test)  # every item decoded exactly once
    assert result.metrics == model.evaluate(data.x_test, data.y_test, decoder=beam)
    texts, confidences = model.predict(data.x_test, decoder=beam)
    assert result.predictions == texts
    assert result.confidences == pytest.approx(confidences)
    assert len(result.targets) == len(texts) and result.images.shape == data.x_test.shape


def test_a_predictor_choosing_beam_search_leaves_the_shared_model_alone(ctc):
    model, data = ctc
    before = model.evaluate(data.x_test, data.y_test)
    beam = LinePredictor(model, beam=5)
    greedy = LinePredictor(model)
    assert beam.decoder == Decoder("beam", 5) and greedy.decoder == Decoder()
    assert model.evaluate(data.x_test, data.y_test) == before
    assert [p.text for p in greedy.predict_arrays(data.x_test[:8])] == model.predict(
        data.x_test[:8]
    )[0]


# ----- checkpoints -----------------------------------------------------------------------------------
def test_a_checkpoint_missing_state_is_refused_in_one_line(tmp_path):
    from text_recognizer.run.checkpoint import Checkpointer

    state = {"epoch": 1, "done": False, "model": {}, "optimizer": {}, "rng": {}, "history": [{}]}
    with pytest.raises(ValueError, match="missing 'best_loss'"):
        check_checkpoint(state)
    Checkpointer(tmp_path, check_checkpoint).save(state)  # as an older, incomplete writer would
    with pytest.raises(CheckpointError, match="missing 'best_loss'") as caught:
        Checkpointer(tmp_path, check_checkpoint).load()
    assert "\n" not in str(caught.value)


def test_read_split_takes_device_tensors_as_fit_passes_them():
    """Validation hands read_split the split already on the device (a tensor): the class
    indices and images come back through ``.cpu()``, never ``np.asarray`` on a device tensor."""
    m, data = char_model(), bars(64)
    from_numpy = m.read_split(data.x_test, data.y_test)
    from_tensor = m.read_split(torch.as_tensor(data.x_test), torch.as_tensor(data.y_test))
    assert from_tensor.metrics == from_numpy.metrics
    assert np.array_equal(from_tensor.target_ids, from_numpy.target_ids)
    assert from_tensor.predictions == from_numpy.predictions
    assert m.evaluate(torch.as_tensor(data.x_test), torch.as_tensor(data.y_test)) == (
        m.evaluate(data.x_test, data.y_test)
    )
