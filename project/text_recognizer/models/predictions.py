"""What a model read on a split: the one result that end-of-run metrics, examples and plots share.

A run's test split is read once (``Model.read_split``: beam search, when chosen, runs once), and
the test metrics, the worst/best examples and the plots all come from that one reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Predictions:
    """Images, true texts, predicted texts and confidences; class indices for character models;
    ``metrics``: the split's loss and the model's metrics (empty when read without labels)."""

    images: np.ndarray
    targets: list[str]
    predictions: list[str]
    confidences: list[float]
    target_ids: np.ndarray | None = None
    predicted_ids: np.ndarray | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def correct(self) -> list[bool]:
        return [p == t for p, t in zip(self.predictions, self.targets, strict=True)]

    def subset(self, indices: list[int]) -> Predictions:
        """The chosen items, in that order (metrics, which describe the whole split, stay out)."""

        def pick(ids: np.ndarray | None) -> np.ndarray | None:
            return None if ids is None else ids[indices]

        return Predictions(
            self.images[indices],
            [self.targets[i] for i in indices],
            [self.predictions[i] for i in indices],
            [self.confidences[i] for i in indices],
            pick(self.target_ids),
            pick(self.predicted_ids),
        )
