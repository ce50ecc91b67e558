"""LineModel and LineModelCtc on a tiny, trivially learnable text task: they must learn it.

Each character is an 8x8 glyph (a vertical bar, a horizontal bar or a box) in its own cell of an
8x32 line, left-aligned, so a working loss, decoder and metric path reaches a low CER in seconds.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from text_recognizer.config import TRAIN_ARGS, TrainArgs
from text_recognizer.datasets.text import PADDING_INDEX, encode_many, make_mapping
from text_recognizer.decoding import Decoder
from text_recognizer.errors import DataError
from text_recognizer.models.base import Model
from text_recognizer.models.line_model import LineModel
from text_recognizer.models.line_model_ctc import LineModelCtc

MAPPING = make_mapping("abc")
MAX_LENGTH, CELL = 4, 8
GLYPHS = np.zeros((3, CELL, CELL), dtype=np.uint8)
GLYPHS[0, 1:7, 3:5] = 255  # a: vertical bar
GLYPHS[1, 3:5, 1:7] = 255  # b: horizontal bar
GLYPHS[2, 2:6, 2:6] = 255  # c: box
DATA_CONFIG = {
    "dataset": "Toy",
    "kind": "lines",
    "input_shape": [CELL, CELL * MAX_LENGTH],
    "output_shape": [MAX_LENGTH, len(MAPPING)],
    "mapping": MAPPING,
    "max_length": MAX_LENGTH,
    "blank_index": 0,
    "padding_index": PADDING_INDEX,
}
TINY_LSTM = {
    "window_width": 8,
    "window_stride": 4,
    "conv_channels": [8, 16],
    "window_features": 32,
    "lstm_hidden": 32,
    "dropout_amount": 0.0,
}
TINY_CNN = {
    "window_width": 8,
    "window_stride": 8,
    "conv_channels": [8, 16],
    "window_features": 32,
    "dropout_amount": 0.0,
}


def toy_lines(n: int = 384, seed: int = 0) -> SimpleNamespace:
    """A SimpleNamespace shaped like a loaded text dataset (uint8 images, padded int64 labels)."""
    rng = np.random.default_rng(seed)
    texts = ["".join(rng.choice(list("abc"), rng.integers(1, MAX_LENGTH + 1))) for _ in range(n)]
    x = np.zeros((n, CELL, CELL * MAX_LENGTH), dtype=np.uint8)
    for i, text in enumerate(texts):
        for j, ch in enumerate(text):
            x[i, :, j * CELL : (j + 1) * CELL] = GLYPHS["abc".index(ch)]
    y = encode_many(texts, MAPPING, MAX_LENGTH)
    split = int(n * 0.75)
    return SimpleNamespace(
        x_train=x[:split], y_train=y[:split], x_val=x[split:], y_val=y[split:], x_test=x, y_test=y
    )


class ToyLinesDataset:
    """The toy task behind the Dataset interface the runner uses (registered by a test)."""

    def __init__(self, **args) -> None:
        self.__dict__.update(vars(toy_lines()))

    def load_or_generate_data(self) -> ToyLinesDataset:
        return self

    def config(self) -> dict:
        return DATA_CONFIG

    def summary(self) -> str:
        return "toy lines"


def train_args(**overrides) -> TrainArgs:
    args = {k: p.default for k, p in TRAIN_ARGS.items()}
    args.update(batch_size=32, epochs=6, learning_rate=0.01, num_threads=1)
    args.update(overrides)
    return TrainArgs.from_config(args)


@pytest.fixture(scope="module")
def data() -> SimpleNamespace:
    return toy_lines()


@pytest.fixture(scope="module")
def ctc_model(data) -> LineModelCtc:
    torch.manual_seed(0)
    model = LineModelCtc(DATA_CONFIG, "line_lstm_ctc", TINY_LSTM)
    model.history = model.fit(data, train_args())
    return model


def test_ctc_model_learns_and_reports_text_metrics(ctc_model, data):
    history = ctc_model.history
    assert history[-1]["train_loss"] < history[0]["train_loss"] / 3
    assert "train_cer" not in history[0]  # no decoding on training batches
    assert {"val_cer", "val_wer", "val_char_accuracy", "val_word_accuracy"} <= set(history[-1])
    test = ctc_model.evaluate(data.x_test, data.y_test)
    assert test["cer"] < 0.05 and test["char_accuracy"] > 0.95 and test["word_accuracy"] > 0.9
    assert test["wer"] == pytest.approx(1 - test["word_accuracy"])  # one word per label here


def test_ctc_predict_on_image_and_beam_decoding(ctc_model, data):
    text, confidence = ctc_model.predict_on_image(data.x_test[0])
    truth = "".join(MAPPING[i] for i in data.y_test[0] if i > PADDING_INDEX)
    assert text == truth and 0.5 < confidence <= 1.0
    # float input in [0, 1] and a differently sized image (scaled to the height, padded) work too
    assert ctc_model.predict_on_image(data.x_test[0] / 255.0)[0] == truth
    assert isinstance(ctc_model.predict_on_image(np.zeros((16, 40), np.uint8))[0], str)
    greedy = ctc_model.evaluate(data.x_test, data.y_test)
    beam = ctc_model.evaluate(data.x_test, data.y_test, decoder=Decoder("beam", 10))
    assert beam["cer"] <= greedy["cer"] + 0.01
    # the decoder is an argument: asking for beam search left the model as it was
    assert ctc_model.evaluate(data.x_test, data.y_test) == greedy


def test_examples_are_worst_and_best_by_cer(ctc_model, data):
    rows = ctc_model.examples(ctc_model.read_split(data.x_test, data.y_test), k=3)
    assert [r["rank"] for r in rows] == ["worst"] * 3 + ["best"] * 3
    worst, best = rows[:3], rows[3:]
    assert all(r["cer"] == 0 for r in best)
    assert worst[0]["cer"] >= worst[-1]["cer"] >= best[0]["cer"]
    assert set(rows[0]) == {"rank", "index", "cer", "confidence", "target", "prediction"}
    json.dumps(rows)  # the runner stores them as predictions.json
    none = Model.examples(ctc_model, ctc_model.read_split(data.x_test, data.y_test))
    assert none == []  # the base class has none


def test_save_load_roundtrip_keeps_predictions(ctc_model, data, tmp_path):
    path = ctc_model.save_weights(tmp_path / "w.pt")
    loaded = Model.load(path)
    assert isinstance(loaded, LineModelCtc) and loaded.mapping == MAPPING
    assert loaded.time_steps == ctc_model.time_steps == 7
    assert loaded.evaluate(data.x_test, data.y_test) == ctc_model.evaluate(data.x_test, data.y_test)
    assert loaded.predict_on_image(data.x_test[5]) == ctc_model.predict_on_image(data.x_test[5])
    assert isinstance(LineModel.load(path), LineModelCtc)  # a LineModelCtc is a LineModel


def test_line_model_learns_per_position(data):
    torch.manual_seed(0)
    model = LineModel(DATA_CONFIG, "line_cnn", TINY_CNN)
    history = model.fit(data, train_args(epochs=4))
    assert history[-1]["train_loss"] < history[0]["train_loss"] / 2
    test = model.evaluate(data.x_test, data.y_test)
    assert test["cer"] < 0.05 and test["word_accuracy"] > 0.9
    text, confidence = model.predict_on_image(data.x_test[1])
    assert text == "".join(MAPPING[i] for i in data.y_test[1] if i > PADDING_INDEX)
    assert 0 < confidence <= 1


def test_ctc_loss_is_finite_for_unemittable_labels_and_nan_batches_are_skipped(data):
    torch.manual_seed(0)
    model = LineModelCtc(DATA_CONFIG, "line_lstm_ctc", TINY_LSTM)
    outputs = torch.randn(2, model.time_steps, len(MAPPING))
    fits = torch.tensor([[2, 3, 1, 1], [4, 4, 4, 1]])
    # "aaaa" needs 7 steps (4 characters + 3 blanks between repeats): fits exactly; 8 would not
    assert math.isfinite(model.loss(outputs, fits).item())
    short = outputs[:1, :3]  # 3 steps cannot emit 4 characters: zero_infinity turns inf into 0
    assert model.loss(short, torch.tensor([[2, 3, 4, 2]])).item() == 0.0

    class Flaky(LineModelCtc):
        calls = 0

        def loss(self, outputs, targets):
            Flaky.calls += 1
            loss = super().loss(outputs, targets)
            return loss * float("nan") if self.network.training and Flaky.calls <= 2 else loss

    torch.manual_seed(0)
    flaky = Flaky(DATA_CONFIG, "line_lstm_ctc", TINY_LSTM)
    history = flaky.fit(data, train_args(epochs=1))
    assert history[0]["nonfinite_batches"] == 2
    assert all(math.isfinite(p.sum().item()) for p in flaky.network.parameters())


def test_labels_the_network_cannot_emit_are_counted_or_refused():
    model = LineModelCtc(DATA_CONFIG, "line_lstm_ctc", TINY_LSTM)  # 7 time steps
    labels = np.full((3, MAX_LENGTH), PADDING_INDEX)
    labels[0, :4] = [2, 2, 2, 2]  # needs 7: fits
    labels[1, :2] = [3, 4]
    assert model.check_labels(labels) == 0 and model.notes == {"train_labels_empty": 1}
    narrow = dict(DATA_CONFIG, input_shape=[CELL, 16], output_shape=[3, len(MAPPING)])
    model = LineModelCtc(narrow, "line_lstm_ctc", TINY_LSTM)  # 3 time steps
    labels = np.array([[2, 2, 2], [2, 3, 4]])  # "aaa" needs 5 steps, "abc" 3
    assert model.check_labels(labels) == 1 and model.notes["train_labels_too_long"] == 1
    with pytest.raises(DataError, match="none of the 1 train labels fits"):
        model.check_labels(labels[:1])


def test_network_too_short_for_the_labels_is_a_data_error():
    config = dict(DATA_CONFIG, output_shape=[20, len(MAPPING)], max_length=20)
    with pytest.raises(DataError, match="yields 7 time steps but labels can be 20 characters"):
        LineModelCtc(config, "line_lstm_ctc", TINY_LSTM)
    with pytest.raises(DataError, match="cannot cover max_length 20"):
        LineModel(config, "line_cnn", TINY_CNN)


def test_run_records_the_worst_and_best_test_predictions(runs_dir, monkeypatch):
    from text_recognizer.config import validate_config
    from text_recognizer.datasets import DATASETS
    from text_recognizer.registry import Entry
    from text_recognizer.run.runner import run_experiment

    monkeypatch.setitem(
        DATASETS, "ToyLines", Entry("test_line_models:ToyLinesDataset", kind="lines")
    )
    config = validate_config(
        {
            "dataset": "ToyLines",
            "model": "LineModelCtc",
            "network": "line_lstm_ctc",
            "network_args": TINY_LSTM,
            "train_args": {"epochs": 1, "batch_size": 64, "num_threads": 1},
        }
    )
    code, summary = run_experiment(config, use_wandb=False)
    assert code == 0 and summary["status"] == "finished"
    assert {"test_cer", "test_wer", "test_char_accuracy", "test_word_accuracy"} <= set(summary)
    run_dir = next(runs_dir.glob("*/*"))
    rows = json.loads((run_dir / "predictions.json").read_text())
    assert [r["rank"] for r in rows] == ["worst"] * 10 + ["best"] * 10
