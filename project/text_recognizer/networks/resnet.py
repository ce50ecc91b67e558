"""ResNet of basic residual blocks (He et al. 2016), sized for small character images.

``layers`` counts blocks per stage: ``[2, 2, 2, 2]`` is a ResNet-18, ``[3, 4, 6, 3]`` a ResNet-34.
The stem is a single 3x3 convolution (no 7x7/stride-2 + max-pool), so 28x28 inputs keep detail.
"""

from __future__ import annotations

from collections.abc import Sequence

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


class ResNet(nn.Module):
    def __init__(
        self, num_classes: int, layers: Sequence[int], base_channels: int, dropout_amount: float
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, base_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(base_channels),
            nn.ReLU(inplace=True),
        )
        stages, in_ch = [], base_channels
        for i, blocks in enumerate(layers):
            out_ch = base_channels * 2 ** min(i, 3)
            for b in range(blocks):
                stages.append(BasicBlock(in_ch, out_ch, 2 if (b == 0 and i > 0) else 1))
                in_ch = out_ch
        self.stages = nn.Sequential(*stages)
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
