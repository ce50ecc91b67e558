"""Pieces the line networks share: the recurrent head and the time-step check.

How many time steps a CTC network needs: a label of L characters with r adjacent repeats ("ll" in
"hello") needs at least L + r frames, because CTC must put a blank between repeated characters.
The worst case is 2L - 1 (every character repeated), which no real text reaches, so networks only
refuse at build time what can never work, T < max_length; ``LineModelCtc`` then checks the actual
training labels (L + r <= T) and reports how many cannot be emitted.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def output_shape_of(output_shape: Sequence[int], name: str) -> tuple[int, int]:
    """(max_length, num_classes), or a ValueError saying the network needs a text dataset."""
    if len(output_shape) != 2:
        raise ValueError(
            f"{name} needs a text dataset with output_shape [max_length, num_classes], "
            f"got {list(output_shape)}"
        )
    return int(output_shape[0]), int(output_shape[1])


def image_shape_of(input_shape: Sequence[int], name: str) -> tuple[int, int]:
    if len(input_shape) != 2:
        raise ValueError(f"{name} needs (height, width) images, got {list(input_shape)}")
    return int(input_shape[0]), int(input_shape[1])


def window_count(
    name: str,
    image: tuple[int, int],
    window_width: int,
    window_stride: int,
    conv_channels: Sequence[int],
    pool: int = 2,
    min_height: int = 2,
) -> int:
    """Sliding windows over a line image (FSDL's line networks), after checking they fit.

    The window CNNs pool by ``pool`` once, so width and stride must be multiples of it; the count
    is the number of positions (line_cnn) or time steps (line_lstm_ctc) the network emits.
    """
    height, width = image
    if len(conv_channels) != 2:
        raise ValueError(f"{name}: conv_channels takes two sizes, got {list(conv_channels)}")
    if height < min_height:
        raise ValueError(f"{name}: images {height} pixels high are too small (min {min_height})")
    if window_width % pool or window_stride % pool:
        raise ValueError(
            f"{name}: window_width ({window_width}) and window_stride ({window_stride}) must be "
            f"multiples of the pooling factor {pool}"
        )
    if not pool <= window_width <= width:
        raise ValueError(
            f"{name}: window_width {window_width} does not fit images {height}x{width}"
        )
    return (width // pool - window_width // pool) // (window_stride // pool) + 1


def check_time_steps(name: str, time_steps: int, max_length: int, hint: str) -> None:
    """Refuse a CTC network that cannot emit the longest label at all."""
    if time_steps < max_length:
        raise ValueError(
            f"{name} yields {time_steps} time steps but labels can be {max_length} characters "
            f"long (CTC needs at least one step per character, more for repeats); {hint}"
        )


@torch.no_grad()
def count_time_steps(net: nn.Module, input_shape: Sequence[int]) -> int:
    """Time steps of a (B, T, C) network for one image of ``input_shape`` (a dry run)."""
    was_training = net.training
    net.eval()
    steps = net(torch.zeros(1, *input_shape)).shape[1]
    net.train(was_training)
    return int(steps)


def activation(name: str) -> nn.Module:
    return {"relu": nn.ReLU, "mish": nn.Mish, "gelu": nn.GELU}[name]()


class RecurrentHead(nn.Module):
    """(B, T, F) features -> bidirectional LSTM -> dropout -> linear -> (B, T, classes) logits."""

    def __init__(
        self, features: int, hidden: int, layers: int, num_classes: int, dropout: float
    ) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            features,
            hidden,
            num_layers=layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.lstm(x)[0]))
