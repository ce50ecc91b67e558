"""Line networks: output shapes and time steps, the time-step check, which model each serves,
and the line augmentation they are trained with."""

from __future__ import annotations

import pytest
import torch

from text_recognizer.config import validate_config
from text_recognizer.datasets import COMMON_ARGS, DATASETS
from text_recognizer.errors import ConfigError
from text_recognizer.images.augment import augment_batch
from text_recognizer.networks import NETWORKS, build_network
from text_recognizer.networks.sequence import count_time_steps
from text_recognizer.registry import Entry

LINE_NETWORKS = sorted(n for n, e in NETWORKS.items() if e.kind == "lines")
CASES = {  # network: (input_shape, output_shape, expected time steps or None for fixed length)
    "line_cnn": ((28, 224), (8, 13), None),
    "line_lstm_ctc": ((28, 224), (8, 13), 15),  # (112 - 14) // 7 + 1
    "crnn": ((64, 128), (16, 30), 32),  # W / 4
    "resnet_crnn": ((32, 128), (16, 30), 32),
    "htr_crnn": ((32, 128), (16, 30), 32),  # W / 4
}


def defaults(name: str) -> dict:
    return {k: p.default for k, p in NETWORKS[name].args.items()}


def test_every_line_network_has_a_case():
    assert set(LINE_NETWORKS) == set(CASES)


@pytest.mark.parametrize("name", LINE_NETWORKS)
def test_defaults_build_and_yield_the_declared_time_steps(name):
    input_shape, output_shape, steps = CASES[name]
    net = build_network(name, input_shape, output_shape, **defaults(name))
    out = net.eval()(torch.rand(2, *input_shape))  # htr_crnn adds a shortcut in training
    if steps is None:
        assert out.shape == (2, *output_shape)
    else:
        assert out.shape == (2, steps, output_shape[1])
        assert net.time_steps == steps == count_time_steps(net, input_shape)


def test_crnn_options():
    net = build_network(
        "crnn", (32, 64), (8, 10), conv_channels=[8, 8, 8, 8], activation="mish", lstm_hidden=8
    )
    assert net(torch.rand(1, 32, 64)).shape == (1, 16, 10)  # 2x2, 2x2, then 2x1 poolings
    assert any(isinstance(m, torch.nn.Mish) for m in net.modules())
    with pytest.raises(ValueError, match="cannot take 6 poolings"):
        build_network("crnn", (32, 64), (8, 10), conv_channels=[8] * 6)


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("crnn", {}, "crnn yields 25 time steps but labels can be 32 characters long"),
        ("resnet_crnn", {}, "resnet_crnn yields 25 time steps but labels can be 32"),
        ("htr_crnn", {}, "htr_crnn yields 25 time steps but labels can be 32"),
        ("line_lstm_ctc", {"window_stride": 28}, "line_lstm_ctc yields 3 time steps"),
        ("line_cnn", {"window_stride": 28}, "3 windows .* cannot cover max_length 32"),
    ],
)
def test_too_few_time_steps_is_a_clear_value_error(name, args, message):
    with pytest.raises(ValueError, match=message):
        build_network(name, (28, 100), (32, 30), **{**defaults(name), **args})


@pytest.mark.parametrize("name", LINE_NETWORKS)
def test_line_networks_refuse_character_datasets(name):
    with pytest.raises(ValueError, match="needs a text dataset"):
        build_network(name, (28, 28), (36,), **defaults(name))


@pytest.fixture
def lines_dataset(monkeypatch):
    """A registered lines dataset, so config checks reach the model/network pairing."""
    monkeypatch.setitem(DATASETS, "ToyLines", Entry("x:y", COMMON_ARGS, kind="lines"))
    return "ToyLines"


@pytest.mark.parametrize(
    ("model", "network", "message"),
    [
        ("LineModel", "crnn", "network 'crnn' serves LineModelCtc, not LineModel; "),
        ("LineModelCtc", "line_cnn", "network 'line_cnn' serves LineModel, not LineModelCtc; "),
        ("LineModelCtc", "lenet", "network 'lenet' is for characters"),
    ],
)
def test_config_refuses_a_network_the_model_cannot_use(lines_dataset, model, network, message):
    with pytest.raises(ConfigError, match=message) as info:
        validate_config({"dataset": lines_dataset, "model": model, "network": network})
    assert "\n" not in str(info.value)
    if model == "LineModelCtc" and network == "line_cnn":
        assert str(info.value).endswith("crnn, htr_crnn, line_lstm_ctc, resnet_crnn")


def test_config_accepts_matching_pairs_and_decoding_options(lines_dataset):
    for model, network in [("LineModel", "line_cnn"), ("LineModelCtc", "crnn")]:
        validate_config({"dataset": lines_dataset, "model": model, "network": network})
    config = validate_config(
        {
            "dataset": lines_dataset,
            "model": "LineModelCtc",
            "network": "line_lstm_ctc",
            "train_args": {"decode": "beam", "beam_width": 25},
        }
    )
    assert config["train_args"]["decode"] == "beam"
    with pytest.raises(ConfigError, match=r"train_args\.decode must be one of 'greedy', 'beam'"):
        validate_config(
            {
                "dataset": lines_dataset,
                "model": "LineModelCtc",
                "network": "crnn",
                "train_args": {"decode": "viterbi"},
            }
        )


def test_augmentation_is_seeded_and_keeps_shape_and_range():
    x = torch.rand(4, 28, 112)
    a = augment_batch(x, 1.0, torch.Generator().manual_seed(0), ink=True)
    b = augment_batch(x, 1.0, torch.Generator().manual_seed(0), ink=True)
    plain = augment_batch(x, 1.0, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, plain)  # ink effects (thickness, blur, noise) were applied
    assert torch.equal(augment_batch(x, 0.0, torch.Generator()), x)


def test_augmentation_rotates_wide_lines_instead_of_shearing_them():
    # A vertical stroke in the middle of a 28x448 line: a 10-degree rotation, 8 % shift of the
    # height and elastic warp move it by a few pixels. Rotating the normalised [-1, 1] grid of a
    # wide image instead would smear it sideways by tens of pixels.
    x = torch.zeros(64, 28, 448)
    x[:, 4:24, 222:226] = 1.0
    out = augment_batch(x, 1.0, torch.Generator().manual_seed(1), ink=True)
    paper = out.flatten(1).median(1).values[:, None, None]  # ink effects raise the background
    columns = (out > paper + 0.3).any(1).nonzero()[:, 1]
    assert columns.min() >= 224 - 14 and columns.max() <= 224 + 14
