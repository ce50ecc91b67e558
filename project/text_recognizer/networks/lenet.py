"""LeNet-style CNN: 3x3 convolutions, max-pooling, dropout, a dense layer (FSDL's lenet)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def build(
    input_shape: Sequence[int],
    output_shape: Sequence[int],
    conv_channels: Sequence[int] = (32, 64),
    fc_size: int = 128,
    dropout_amount: float = 0.2,
) -> nn.Module:
    height, width = input_shape[-2:]
    layers: list[nn.Module] = [nn.Unflatten(1, (1, height))] if len(input_shape) == 2 else []
    in_ch = 1
    for ch in conv_channels:
        layers += [nn.Conv2d(in_ch, ch, 3), nn.ReLU(inplace=True)]
        in_ch, height, width = ch, height - 2, width - 2
    if height < 2 or width < 2:
        raise ValueError(
            f"lenet: input {tuple(input_shape)} is too small for {len(conv_channels)} convs"
        )
    layers += [nn.MaxPool2d(2), nn.Dropout(dropout_amount), nn.Flatten()]
    flat = in_ch * (height // 2) * (width // 2)
    layers += [
        nn.Linear(flat, fc_size),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout_amount),
        nn.Linear(fc_size, output_shape[0]),
    ]
    return nn.Sequential(*layers)
