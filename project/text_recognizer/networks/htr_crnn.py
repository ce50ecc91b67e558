"""A line recogniser after "Best practices for a handwritten text recognition system" (Retsinas et
al., 2022): residual CNN, column-wise max-pool over the height, deep BiLSTM, and a CTC shortcut.

- Encoder: residual stages (networks/resnet.py); the first block of each stage halves the height,
  the first two also the width, so a line W pixels wide gives W/4 columns (time steps).
- Column-wise **max**-pool over what is left of the height: a stroke anywhere in a column counts,
  where averaging would dilute it.
- Head: a BiLSTM (3 layers by default) and a linear layer per column.
- **CTC shortcut**: a 1-D convolution straight from the pooled CNN features to the classes. In
  training the network returns ``(main, shortcut)`` and ``LineModelCtc`` adds the shortcut's CTC
  loss times ``shortcut_weight`` (0.1 in the paper): the CNN gets a direct, well-conditioned
  gradient while the LSTM is still untrained. In evaluation (and prediction) only the main head
  runs, so the shortcut costs nothing outside training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from text_recognizer.networks.resnet_crnn import ResNetCRNN, stage_time_steps
from text_recognizer.networks.sequence import image_shape_of, output_shape_of


class HtrCRNN(ResNetCRNN):
    """resnet_crnn's encoder and head, with a column max-pool and the training-only shortcut."""

    def __init__(
        self,
        num_classes: int,
        layers: Sequence[int],
        base_channels: int,
        lstm_hidden: int,
        lstm_layers: int,
        dropout_amount: float,
        shortcut_weight: float,
    ) -> None:
        super().__init__(
            num_classes, layers, base_channels, lstm_hidden, lstm_layers, dropout_amount
        )
        channels = self.head.lstm.input_size
        self.shortcut_weight = shortcut_weight
        self.shortcut = nn.Conv1d(channels, num_classes, 3, padding=1) if shortcut_weight else None

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = self.stages(self.stem(x.unsqueeze(1) if x.dim() == 3 else x))  # (B, C, H', T)
        columns = x.amax(2)  # (B, C, T): column-wise max over the height
        main = self.head(self.dropout(columns.transpose(1, 2)))  # (B, T, classes)
        if self.training and self.shortcut is not None:
            return main, self.shortcut(columns).transpose(1, 2)
        return main


def build(
    input_shape: Sequence[int],
    output_shape: Sequence[int],
    layers: Sequence[int] = (1, 2, 2),
    base_channels: int = 32,
    lstm_hidden: int = 256,
    lstm_layers: int = 3,
    dropout_amount: float = 0.2,
    shortcut_weight: float = 0.1,
) -> nn.Module:
    height, width = image_shape_of(input_shape, "htr_crnn")
    max_length, num_classes = output_shape_of(output_shape, "htr_crnn")
    if height < 2 ** len(layers):
        raise ValueError(
            f"htr_crnn: {len(layers)} stages halve the height {len(layers)} times; images "
            f"{height} pixels high are too small (use fewer layers or taller lines)"
        )
    time_steps = stage_time_steps("htr_crnn", width, len(layers), max_length)
    net = HtrCRNN(
        num_classes,
        layers,
        base_channels,
        lstm_hidden,
        lstm_layers,
        dropout_amount,
        shortcut_weight,
    )
    net.time_steps = time_steps
    return net
