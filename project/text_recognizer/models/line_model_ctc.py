"""LineModelCtc: a network emits one class distribution per time step; CTC aligns them with the text.

The loss is ``F.ctc_loss`` in float32 on log-softmax outputs shaped (time, batch, classes), with the
blank index from the dataset's config and ``zero_infinity=True``: a label the network cannot emit
(more characters plus repeats than time steps) adds zero loss instead of inf. NaN is still caught
by the training loop, which skips and counts the batch (models/base.py). Label lengths come from
the padding. Decoding is greedy (best path) or beam search, as the ``Decoder`` passed in says
(decoding.py); the confidence of a text is its CTC probability.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from text_recognizer import decoding, progress
from text_recognizer.config import TrainArgs
from text_recognizer.decoding import GREEDY, Decoder
from text_recognizer.errors import DataError
from text_recognizer.models.base import EpochCallback
from text_recognizer.models.line_model import LineModel
from text_recognizer.networks.sequence import count_time_steps


class LineModelCtc(LineModel):
    """CTC loss with an explicit blank; the same text metrics as LineModel."""

    def __init__(
        self,
        data_config: dict[str, Any],
        network: str,
        network_args: dict[str, Any] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(data_config, network, network_args, device)
        self.time_steps = getattr(self.network, "time_steps", 0) or count_time_steps(
            self.network, self.input_shape
        )

    def loss(
        self, outputs: torch.Tensor | tuple[torch.Tensor, torch.Tensor], targets: torch.Tensor
    ) -> torch.Tensor:
        """CTC loss; a network with a training-only shortcut head (htr_crnn) returns
        ``(main, shortcut)`` in training, and the shortcut's loss is added with its weight."""
        if isinstance(outputs, tuple):
            main, shortcut = outputs
            weight = getattr(self.network, "shortcut_weight", 0.0)
            return self._ctc(main, targets) + weight * self._ctc(shortcut, targets)
        return self._ctc(outputs, targets)

    def _ctc(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_probs = outputs.float().log_softmax(-1).transpose(0, 1)  # (T, B, C)
        steps, batch = log_probs.shape[:2]
        return F.ctc_loss(
            log_probs,
            targets,
            torch.full((batch,), steps, dtype=torch.long),
            (targets != self.padding_index).sum(1),
            blank=self.blank_index,
            reduction="mean",
            zero_infinity=True,
        )

    def decode_outputs(self, outputs: torch.Tensor, decoder: Decoder = GREEDY) -> list[list[int]]:
        log_probs = outputs.float().log_softmax(-1).cpu()
        return decoder.decode(log_probs, self.mapping, self.blank_index, (self.padding_index,))

    def confidences(self, outputs: torch.Tensor, sequences: list[list[int]]) -> torch.Tensor:
        log_probs = outputs.float().log_softmax(-1)
        return decoding.sequence_probability(log_probs, sequences, self.blank_index)

    def check_labels(self, labels: np.ndarray | torch.Tensor, split: str = "train") -> int:
        """Count labels the network cannot emit (characters + adjacent repeats > time steps).

        CTC needs a blank between two equal characters, so "hello" needs 6 steps, not 5. Such
        labels train as zero loss (zero_infinity); the count goes to the run's summary. All of
        them failing is a data/network mismatch, reported as a DataError.
        """
        y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
        if y.numel() == 0:
            return 0
        real = y != self.padding_index
        repeats = (real[:, 1:] & (y[:, 1:] == y[:, :-1])).sum(1)
        needed = real.sum(1) + repeats
        too_long = int((needed > self.time_steps).sum())
        empty = int((~real).all(1).sum())
        if too_long == len(y):
            raise DataError(
                f"none of the {len(y)} {split} labels fits: the network yields {self.time_steps} "
                f"time steps, the shortest label needs {int(needed.min())} (characters + repeats)"
            )
        if too_long:
            self.notes[f"{split}_labels_too_long"] = too_long
            progress.line(
                f"warning: {too_long} of {len(y)} {split} labels need more than the network's "
                f"{self.time_steps} time steps (longest needs {int(needed.max())}); they add no "
                "loss (zero_infinity)"
            )
        if empty:
            self.notes[f"{split}_labels_empty"] = empty
            progress.line(f"warning: {empty} of {len(y)} {split} labels are empty")
        return too_long

    def fit(
        self,
        dataset: Any,
        args: TrainArgs,
        on_epoch_end: EpochCallback | None = None,
        **kwargs: Any,
    ) -> list[dict[str, Any]]:
        """Check that the network can emit the training labels, then train as usual."""
        self.check_labels(dataset.y_train)
        return super().fit(dataset, args, on_epoch_end, **kwargs)
