"""CRNN (Shi et al. 2015), in the Kaggle names seed's shape: a small CNN reads columns, a BiLSTM
reads the row of columns, CTC aligns it with the text.

Seed design (every part configurable): 3x3 convolutions with 32/64/128 channels, each with batch
norm and ReLU or Mish; 2x2 max-pooling after the first two and 2x1 (height only) after the rest, so
a 64x256 image becomes 128 x 8 x 64 and each of the 64 columns is a time step; a linear layer to
64 features; a bidirectional LSTM (hidden size 512); a linear layer to the classes. Time steps:
T = W / 4 (see networks/sequence.py for how many a label needs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from text_recognizer.networks.sequence import (
    RecurrentHead,
    activation,
    check_time_steps,
    image_shape_of,
    output_shape_of,
)

WIDTH_POOLS = 2  # the first two poolings are 2x2, the rest 2x1


class CRNN(nn.Module):
    def __init__(
        self,
        height: int,
        num_classes: int,
        conv_channels: Sequence[int],
        activation_name: str,
        linear_size: int,
        lstm_hidden: int,
        lstm_layers: int,
        dropout_amount: float,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 1
        for i, ch in enumerate(conv_channels):
            layers += [
                nn.Conv2d(in_ch, ch, 3, padding=1, bias=False),
                nn.BatchNorm2d(ch),
                activation(activation_name),
                nn.MaxPool2d((2, 2) if i < WIDTH_POOLS else (2, 1)),
            ]
            if i > 0:
                layers.append(nn.Dropout(dropout_amount))
            in_ch = ch
        self.cnn = nn.Sequential(*layers)
        rows = height >> len(conv_channels)
        self.project = nn.Sequential(
            nn.Linear(in_ch * rows, linear_size), activation(activation_name)
        )
        self.head = RecurrentHead(
            linear_size, lstm_hidden, lstm_layers, num_classes, dropout_amount
        )
        self.time_steps = 0  # set by build()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cnn(x.unsqueeze(1) if x.dim() == 3 else x)  # (B, C, H', T)
        x = x.flatten(1, 2).transpose(1, 2)  # (B, T, C * H')
        return self.head(self.project(x))  # (B, T, classes)


def build(
    input_shape: Sequence[int],
    output_shape: Sequence[int],
    conv_channels: Sequence[int] = (32, 64, 128),
    activation: str = "relu",
    linear_size: int = 64,
    lstm_hidden: int = 512,
    lstm_layers: int = 1,
    dropout_amount: float = 0.3,
) -> nn.Module:
    height, width = image_shape_of(input_shape, "crnn")
    max_length, num_classes = output_shape_of(output_shape, "crnn")
    if height >> len(conv_channels) < 1:
        raise ValueError(
            f"crnn: images {height} pixels high cannot take {len(conv_channels)} poolings by 2 "
            f"(one per conv layer); use fewer conv_channels or taller images"
        )
    time_steps = width >> min(len(conv_channels), WIDTH_POOLS)
    check_time_steps(
        "crnn",
        time_steps,
        max_length,
        f"it pools the width by {1 << min(len(conv_channels), WIDTH_POOLS)}: use images at "
        f"least {max_length << WIDTH_POOLS} pixels wide (now {width})",
    )
    net = CRNN(
        height,
        num_classes,
        conv_channels,
        activation,
        linear_size,
        lstm_hidden,
        lstm_layers,
        dropout_amount,
    )
    net.time_steps = time_steps
    return net
