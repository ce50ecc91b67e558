"""FSDL's sliding-window all-convolutional line network, for the fixed-length ``LineModel``.

Two 3x3 convolutions and a 2x2 max-pool (LeNet's start), then a convolution whose kernel covers a
whole window (the full height, ``window_width`` pixels) and strides by ``window_stride``: the same
as running a small CNN on every window, without recomputing the overlaps. A last 1-D convolution
groups ``round(num_windows / max_length)`` neighbouring windows into each of the ``max_length``
output positions (the window row is cropped or zero-padded to fit), so position i reads the i-th
stretch of the whole image: FSDL's simplifying assumption that characters sit at regular places,
which the CTC networks drop. FSDL cropped instead, so with its 28/14 windows the outputs only
looked at the left half of the line.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from text_recognizer.networks.sequence import image_shape_of, output_shape_of, window_count

POOL = 2


class LineCNN(nn.Module):
    def __init__(
        self,
        height: int,
        width: int,
        max_length: int,
        num_classes: int,
        window_width: int,
        window_stride: int,
        conv_channels: Sequence[int],
        window_features: int,
        dropout_amount: float,
    ) -> None:
        super().__init__()
        c1, c2 = conv_channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(POOL),
            nn.Dropout(dropout_amount),
            nn.Conv2d(
                c2,
                window_features,
                (height // POOL, window_width // POOL),
                stride=(1, window_stride // POOL),
            ),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout_amount),
        )
        num_windows = (width // POOL - window_width // POOL) // (window_stride // POOL) + 1
        group = max(1, round(num_windows / max_length))
        self.pad = group * max_length - num_windows  # < 0 crops
        self.classify = nn.Conv1d(window_features, num_classes, group, stride=group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x.unsqueeze(1) if x.dim() == 3 else x)  # (B, F, 1, windows)
        x = F.pad(x.squeeze(2), (0, self.pad))  # (B, F, group * max_length)
        return self.classify(x).transpose(1, 2)  # (B, max_length, C)


def build(
    input_shape: Sequence[int],
    output_shape: Sequence[int],
    window_width: int = 28,
    window_stride: int = 14,
    conv_channels: Sequence[int] = (32, 64),
    window_features: int = 128,
    dropout_amount: float = 0.2,
) -> nn.Module:
    height, width = image_shape_of(input_shape, "line_cnn")
    max_length, num_classes = output_shape_of(output_shape, "line_cnn")
    num_windows = window_count(
        "line_cnn", (height, width), window_width, window_stride, conv_channels, POOL, POOL
    )
    if num_windows < max_length:
        raise ValueError(
            f"line_cnn: {num_windows} windows (width {width}, window_width {window_width}, "
            f"window_stride {window_stride}) cannot cover max_length {max_length} positions; "
            "lower window_stride"
        )
    return LineCNN(
        height,
        width,
        max_length,
        num_classes,
        window_width,
        window_stride,
        conv_channels,
        window_features,
        dropout_amount,
    )
