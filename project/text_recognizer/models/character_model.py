"""CharacterModel: one class per image, cross-entropy loss, accuracy."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from text_recognizer.decoding import Decoder
from text_recognizer.models.base import Model


class CharacterModel(Model):
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), targets)

    def batch_metrics(
        self, outputs: torch.Tensor, targets: torch.Tensor
    ) -> dict[str, tuple[torch.Tensor, int]]:
        return {"accuracy": ((outputs.max(1).indices == targets).sum(), len(targets))}

    def read_outputs(
        self, outputs: torch.Tensor, decoder: Decoder, confidences: bool = True
    ) -> tuple[list[str], list[float], list[int] | None]:
        """The most likely class per image and its softmax probability (no decoding to choose)."""
        conf, idx = outputs.float().softmax(-1).max(-1)
        ids = idx.tolist()
        return [self.mapping[i] for i in ids], conf.tolist() if confidences else [], ids

    def target_texts(self, y: np.ndarray | torch.Tensor) -> list[str]:
        labels = y.cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
        return [self.mapping[int(i)] for i in labels.reshape(-1)]

    def text_metrics(self, predictions: list[str], targets: list[str]) -> dict[str, float]:
        right = sum(p == t for p, t in zip(predictions, targets, strict=True))
        return {"accuracy": right / max(1, len(targets))}
