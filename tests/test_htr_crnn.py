"""htr_crnn: the best-practices line network (ResNet, column max-pool, deep BiLSTM, CTC shortcut)."""

from __future__ import annotations

import pytest
import torch
from test_line_models import DATA_CONFIG, toy_lines

from text_recognizer.config import TrainArgs
from text_recognizer.models.line_model_ctc import LineModelCtc
from text_recognizer.networks import build_network

TINY = {"layers": [1, 1, 1], "base_channels": 8, "lstm_hidden": 16, "lstm_layers": 2}


def test_the_shortcut_head_runs_only_in_training():
    net = build_network("htr_crnn", (32, 128), (16, 12), **TINY)
    x = torch.rand(2, 32, 128)
    net.train()
    main, shortcut = net(x)
    assert main.shape == shortcut.shape == (2, 32, 12) and net.time_steps == 32
    net.eval()
    assert torch.is_tensor(net(x)) and net(x).shape == (2, 32, 12)
    plain = build_network("htr_crnn", (32, 128), (16, 12), **TINY, shortcut_weight=0.0)
    assert plain.shortcut is None and torch.is_tensor(plain.train()(x))


def test_the_shortcut_loss_is_added_with_its_weight():
    torch.manual_seed(0)
    model = LineModelCtc(DATA_CONFIG, "htr_crnn", {**TINY, "shortcut_weight": 0.5})
    data = toy_lines(16)
    x, y = model.preprocess(torch.as_tensor(data.x_train)), torch.as_tensor(data.y_train)
    model.network.train()
    main, shortcut = model.network(x)
    both = model.loss((main, shortcut), y).item()
    assert both == pytest.approx((model.loss(main, y) + 0.5 * model.loss(shortcut, y)).item())


def test_it_learns_the_toy_lines():
    torch.manual_seed(0)
    model = LineModelCtc(DATA_CONFIG, "htr_crnn", TINY)
    args = {"batch_size": 32, "epochs": 10, "learning_rate": 0.01, "num_threads": 1}
    history = model.fit(toy_lines(), TrainArgs.from_config(args))
    assert history[-1]["train_loss"] < history[0]["train_loss"] / 3
    data = toy_lines()
    assert model.evaluate(data.x_test, data.y_test)["cer"] < 0.1


def test_shapes_it_cannot_read_are_refused():
    with pytest.raises(ValueError, match="too small"):
        build_network("htr_crnn", (4, 128), (16, 12), **TINY)
    with pytest.raises(ValueError, match="at least 64 pixels wide"):
        build_network("htr_crnn", (32, 40), (16, 12), **TINY)
