"""Networks by name: ``build(input_shape, output_shape, **network_args) -> nn.Module``.

Arguments are declared here so a config is validated before torch is imported.
"""

from __future__ import annotations

from typing import Any

from text_recognizer.registry import Aliases, Entry, lookup
from text_recognizer.spec import Param

DROPOUT = Param(float, 0.2, min=0.0, lt=1.0)
# Upper bounds (spec.Param insists on one): far above any useful size, below an out-of-memory crash.
CHANNELS = {"min": 1, "max": 2048, "max_items": 8}
# The window networks (line_cnn, line_lstm_ctc) have exactly two convolutions: one size each.
WINDOW_CHANNELS = {**CHANNELS, "min_items": 2, "max_items": 2}
BLOCKS = {"min": 1, "max": 64, "min_items": 1, "max_items": 8}
LSTM_MAX = 8192

NETWORKS: dict[str, Entry] = {
    "mlp": Entry(
        "text_recognizer.networks.mlp:build",
        {
            "num_layers": Param(int, 3, min=1, max=64),
            "layer_size": Param(int, 128, min=1, max=16384),
            "dropout_amount": DROPOUT,
        },
        kind="characters",
        help="multi-layer perceptron on the flattened image",
    ),
    "lenet": Entry(
        "text_recognizer.networks.lenet:build",
        {
            "conv_channels": Param(list, [32, 64], item_type=int, **CHANNELS, min_items=1),
            "fc_size": Param(int, 128, min=1, max=16384),
            "dropout_amount": DROPOUT,
        },
        kind="characters",
        help="LeNet-style convolutional network (FSDL's)",
    ),
    "resnet": Entry(
        "text_recognizer.networks.resnet:build",
        {
            "layers": Param(list, [2, 2, 2, 2], item_type=int, **BLOCKS),
            "base_channels": Param(int, 32, min=1, max=1024),
            "dropout_amount": Param(float, 0.0, min=0.0, lt=1.0),
        },
        kind="characters",
        help="ResNet of basic residual blocks; layers=[3, 4, 6, 3] is a ResNet-34",
    ),
    "line_cnn": Entry(
        "text_recognizer.networks.line_cnn:build",
        {
            "window_width": Param(int, 28, min=2, max=1024),
            "window_stride": Param(int, 14, min=2, max=1024),
            "conv_channels": Param(list, [32, 64], item_type=int, **WINDOW_CHANNELS),
            "window_features": Param(int, 128, min=1, max=16384),
            "dropout_amount": DROPOUT,
        },
        kind="lines",
        models=("LineModel",),
        help="FSDL sliding-window all-convolutional net; one output per character position",
    ),
    "line_lstm_ctc": Entry(
        "text_recognizer.networks.line_lstm_ctc:build",
        {
            "window_width": Param(int, 28, min=2, max=1024),
            "window_stride": Param(int, 14, min=2, max=1024),
            "conv_channels": Param(list, [32, 64], item_type=int, **WINDOW_CHANNELS),
            "window_features": Param(int, 128, min=1, max=16384),
            "lstm_hidden": Param(int, 128, min=1, max=LSTM_MAX),
            "lstm_layers": Param(int, 1, min=1, max=8),
            "dropout_amount": DROPOUT,
        },
        kind="lines",
        models=("LineModelCtc",),
        help="windows -> CNN features -> bidirectional LSTM, one CTC step per window",
    ),
    "crnn": Entry(
        "text_recognizer.networks.crnn:build",
        {
            "conv_channels": Param(list, [32, 64, 128], item_type=int, **CHANNELS, min_items=1),
            "activation": Param(str, "relu", choices=("relu", "mish", "gelu")),
            "linear_size": Param(int, 64, min=1, max=16384),
            "lstm_hidden": Param(int, 512, min=1, max=LSTM_MAX),
            "lstm_layers": Param(int, 1, min=1, max=8),
            "dropout_amount": Param(float, 0.3, min=0.0, lt=1.0),
        },
        kind="lines",
        models=("LineModelCtc",),
        help="CNN (32/64/128, batch norm) -> linear 64 -> BiLSTM 512 -> classes; the names seed",
    ),
    "resnet_crnn": Entry(
        "text_recognizer.networks.resnet_crnn:build",
        {
            "layers": Param(list, [1, 1, 1, 1], item_type=int, **BLOCKS),
            "base_channels": Param(int, 32, min=1, max=1024),
            "lstm_hidden": Param(int, 256, min=1, max=LSTM_MAX),
            "lstm_layers": Param(int, 1, min=1, max=8),
            "dropout_amount": DROPOUT,
        },
        kind="lines",
        models=("LineModelCtc",),
        help="CRNN with a ResNet encoder (basic residual blocks) and a BiLSTM head",
    ),
    "htr_crnn": Entry(
        "text_recognizer.networks.htr_crnn:build",
        {
            "layers": Param(list, [1, 2, 2], item_type=int, **BLOCKS),
            "base_channels": Param(int, 32, min=1, max=1024),
            "lstm_hidden": Param(int, 256, min=1, max=LSTM_MAX),
            "lstm_layers": Param(int, 3, min=1, max=8),
            "dropout_amount": DROPOUT,
            "shortcut_weight": Param(
                float, 0.1, min=0.0, max=1.0, help="CTC loss weight of the training-only shortcut"
            ),
        },
        kind="lines",
        models=("LineModelCtc",),
        help="HTR best practices (Retsinas et al. 2022): ResNet, column max-pool, deep BiLSTM, "
        "CTC shortcut in training",
    ),
}

# FSDL's network names (2019-2020 Keras labs: function names; 2021-2022 Lightning labs: class
# names), so that their configs and the seed projects' run here as they are.
NETWORK_ALIASES = Aliases(
    "FSDL",
    same={
        "line_cnn_all_conv": "line_cnn",
        "line_cnn_sliding_window": "line_cnn",
        "LineCNN": "line_cnn",
        "LineCNNSimple": "line_cnn",
        "line_cnn_lstm": "line_lstm_ctc",
        "LineCNNLSTM": "line_lstm_ctc",
        "MLP": "mlp",
        "CNN": "lenet",
        "cnn": "lenet",
    },
    nearest={
        name: ("htr_crnn", "a ResNet + BiLSTM CTC line recogniser; no transformer decoder here")
        for name in ("LineCNNTransformer", "ResnetTransformer", "line_cnn_transformer")
    },
)


def build_network(name: str, input_shape: tuple[int, ...], output_shape: Any, **network_args: Any):
    """Build a registered network (imports torch)."""
    return lookup(NETWORKS, name, "network", NETWORK_ALIASES).load()(
        input_shape, output_shape, **network_args
    )
