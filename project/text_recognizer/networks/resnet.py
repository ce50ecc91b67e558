"""ResNet of basic residual blocks (He et al. 2016), sized for small character images.

``layers`` counts blocks per stage: ``[2, 2, 2, 2]`` is a ResNet-18, ``[3, 4, 6, 3]`` a ResNet-34.
The stem is a single 3x3 convolution (no 7x7/stride-2 + max-pool), so 28x28 inputs keep detail.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def make_stem(channels: int) -> nn.Sequential:
    """One 3x3 convolution from the grey image: no 7x7/stride-2 + pool, so small images keep detail."""
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
    )


def make_stages(
    layers: Sequence[int], base_channels: int, stride_of: Callable[[int], int | tuple[int, int]]
) -> tuple[nn.Sequential, int]:
    """Residual stages (channels double per stage up to 8x); the first block of stage i strides by
    ``stride_of(i)``. Returns the stages and their output channel count."""
    blocks, in_ch = [], base_channels
    for i, count in enumerate(layers):
        out_ch = base_channels * 2 ** min(i, 3)
        for b in range(count):
            blocks.append(BasicBlock(in_ch, out_ch, stride_of(i) if b == 0 else 1))
            in_ch = out_ch
    return nn.Sequential(*blocks), in_ch


class ResNet(nn.Module):
    def __init__(
        self, num_classes: int, layers: Sequence[int], base_channels: int, dropout_amount: float
    ) -> None:
        super().__init__()
        self.stem = make_stem(base_channels)
        self.stages, in_ch = make_stages(layers, base_channels, lambda i: 2 if i > 0 else 1)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout_amount),
            nn.Linear(in_ch, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        return self.head(self.stages(self.stem(x)))


def build(
    input_shape: Sequence[int],
    output_shape: Sequence[int],
    layers: Sequence[int] = (2, 2, 2, 2),
    base_channels: int = 32,
    dropout_amount: float = 0.0,
) -> nn.Module:
    return ResNet(output_shape[0], list(layers), base_channels, dropout_amount)
