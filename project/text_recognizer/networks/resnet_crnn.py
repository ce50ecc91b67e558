"""CRNN with a ResNet encoder: residual stages instead of the plain CNN, the same BiLSTM head.

Stages of basic residual blocks (networks/resnet.py); the first block of stage i strides by 2 in
height and, for the first two stages only, in width, so a 64x256 image gives 64 columns (T = W/4)
however many stages there are. The remaining height is averaged away; each column is a time step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from text_recognizer.networks.resnet import make_stages, make_stem
from text_recognizer.networks.sequence import (
    RecurrentHead,
    check_time_steps,
    image_shape_of,
    output_shape_of,
)

WIDTH_STRIDES = 2  # stages that also halve the width


class ResNetCRNN(nn.Module):
    def __init__(
        self,
        num_classes: int,
        layers: Sequence[int],
        base_channels: int,
        lstm_hidden: int,
        lstm_layers: int,
        dropout_amount: float,
    ) -> None:
        super().__init__()
        self.stem = make_stem(base_channels)
        self.stages, in_ch = make_stages(
            layers, base_channels, lambda i: (2, 2) if i < WIDTH_STRIDES else (2, 1)
        )
        self.dropout = nn.Dropout(dropout_amount)
        self.head = RecurrentHead(in_ch, lstm_hidden, lstm_layers, num_classes, dropout_amount)
        self.time_steps = 0  # set by build()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x.unsqueeze(1) if x.dim() == 3 else x))  # (B, C, H', T)
        x = self.dropout(x.mean(2).transpose(1, 2))  # (B, T, C)
        return self.head(x)


def build(
    input_shape: Sequence[int],
    output_shape: Sequence[int],
    layers: Sequence[int] = (1, 1, 1, 1),
    base_channels: int = 32,
    lstm_hidden: int = 256,
    lstm_layers: int = 1,
    dropout_amount: float = 0.2,
) -> nn.Module:
    _, width = image_shape_of(input_shape, "resnet_crnn")
    max_length, num_classes = output_shape_of(output_shape, "resnet_crnn")
    time_steps = stage_time_steps("resnet_crnn", width, len(layers), max_length)
    net = ResNetCRNN(num_classes, layers, base_channels, lstm_hidden, lstm_layers, dropout_amount)
    net.time_steps = time_steps
    return net


def stage_time_steps(name: str, width: int, stages: int, max_length: int) -> int:
    """Columns left after the stages that halve the width; refused when fewer than max_length."""
    time_steps = width
    for _ in range(min(stages, WIDTH_STRIDES)):
        time_steps = (time_steps + 1) // 2  # a 3x3 conv, padding 1, stride 2
    check_time_steps(
        name,
        time_steps,
        max_length,
        f"its first {WIDTH_STRIDES} stages halve the width: use images at least "
        f"{max_length << WIDTH_STRIDES} pixels wide (now {width})",
    )
    return time_steps
