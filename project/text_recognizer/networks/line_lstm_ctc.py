"""FSDL's line_lstm_ctc: windows -> CNN features -> bidirectional LSTM -> per-window classes, for CTC.

Two 3x3 convolutions with batch norm (2x2 max-pooling after the first, 2x1 after the second) make
a feature map; the windows are then a strided convolution over it (kernel = its full height by
``window_width`` pixels, stride ``window_stride``), which equals a CNN run on every window without
recomputing their overlap. Each window is one CTC time step: T = (W - window_width) / stride + 1,
so ``window_stride`` sets how many characters a line can hold (see networks/sequence.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from text_recognizer.networks.sequence import (
    RecurrentHead,
    check_time_steps,
    image_shape_of,
    output_shape_of,
    window_count,
)

POOL = 2


class LineLstmCtc(nn.Module):
    def __init__(
        self,
        height: int,
        num_classes: int,
        window_width: int,
        window_stride: int,
        conv_channels: Sequence[int],
        window_features: int,
        lstm_hidden: int,
        lstm_layers: int,
        dropout_amount: float,
    ) -> None:
        super().__init__()
        c1, c2 = conv_channels
        self.cnn = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(POOL),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False),
            nn.BatchNorm2d(c2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d((2, 1)),  # height only: the windows keep their horizontal resolution
            nn.Conv2d(
                c2,
                window_features,
                (height // POOL // 2, window_width // POOL),
                stride=(1, window_stride // POOL),
                bias=False,
            ),
            nn.BatchNorm2d(window_features),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout_amount),
        )
        self.head = RecurrentHead(
            window_features, lstm_hidden, lstm_layers, num_classes, dropout_amount
        )
        self.time_steps = 0  # set by build()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cnn(x.unsqueeze(1) if x.dim() == 3 else x)  # (B, F, 1, T)
        return self.head(x.squeeze(2).transpose(1, 2))  # (B, T, C)


def build(
    input_shape: Sequence[int],
    output_shape: Sequence[int],
    window_width: int = 28,
    window_stride: int = 14,
    conv_channels: Sequence[int] = (32, 64),
    window_features: int = 128,
    lstm_hidden: int = 128,
    lstm_layers: int = 1,
    dropout_amount: float = 0.2,
) -> nn.Module:
    height, width = image_shape_of(input_shape, "line_lstm_ctc")
    max_length, num_classes = output_shape_of(output_shape, "line_lstm_ctc")
    time_steps = window_count(
        "line_lstm_ctc", (height, width), window_width, window_stride, conv_channels, POOL, 2 * POOL
    )
    check_time_steps(
        "line_lstm_ctc",
        time_steps,
        max_length,
        f"lower window_stride (now {window_stride}) or use wider images (now {width})",
    )
    net = LineLstmCtc(
        height,
        num_classes,
        window_width,
        window_stride,
        conv_channels,
        window_features,
        lstm_hidden,
        lstm_layers,
        dropout_amount,
    )
    net.time_steps = time_steps
    return net
