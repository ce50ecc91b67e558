"""Multi-layer perceptron on the flattened image (FSDL's first network)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn


def build(
    input_shape: Sequence[int],
    output_shape: Sequence[int],
    num_layers: int = 3,
    layer_size: int = 128,
    dropout_amount: float = 0.2,
) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for _ in range(num_layers):
        layers += [nn.Linear(width, layer_size), nn.ReLU(inplace=True), nn.Dropout(dropout_amount)]
        width = layer_size
    layers.append(nn.Linear(width, output_shape[0]))
    return nn.Sequential(*layers)
