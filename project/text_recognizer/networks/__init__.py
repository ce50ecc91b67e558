"""Networks by name: ``build(input_shape, output_shape, **network_args) -> nn.Module``.

Arguments are declared here so a config is validated before torch is imported.
"""

from __future__ import annotations

from typing import Any

from text_recognizer.registry import Entry, lookup
from text_recognizer.spec import Param

DROPOUT = Param(float, 0.2, min=0.0, lt=1.0)

NETWORKS: dict[str, Entry] = {
    "mlp": Entry(
        "text_recognizer.networks.mlp:build",
        {
            "num_layers": Param(int, 3, min=1, max=64),
            "layer_size": Param(int, 128, min=1, max=65536),
            "dropout_amount": DROPOUT,
        },
        kind="characters",
        help="multi-layer perceptron on the flattened image",
    ),
    "lenet": Entry(
        "text_recognizer.networks.lenet:build",
        {
            "conv_channels": Param(list, [32, 64], item_type=int, min=1, min_items=1),
            "fc_size": Param(int, 128, min=1),
            "dropout_amount": DROPOUT,
        },
        kind="characters",
        help="LeNet-style convolutional network (FSDL's)",
    ),
    "resnet": Entry(
        "text_recognizer.networks.resnet:build",
        {
            "layers": Param(list, [2, 2, 2, 2], item_type=int, min=1, min_items=1),
            "base_channels": Param(int, 32, min=1, max=1024),
            "dropout_amount": Param(float, 0.0, min=0.0, lt=1.0),
        },
        kind="characters",
        help="ResNet of basic residual blocks; layers=[3, 4, 6, 3] is a ResNet-34",
    ),
}


def build_network(name: str, input_shape: tuple[int, ...], output_shape: Any, **network_args: Any):
    """Build a registered network (imports torch)."""
    return lookup(NETWORKS, name, "network").load()(input_shape, output_shape, **network_args)
