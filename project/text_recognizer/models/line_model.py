"""LineModel: a fixed-length output per image (FSDL's first line model).

The network emits ``max_length`` class distributions; position i is trained with cross-entropy to
be the i-th character of the label, or the padding class once the text has ended. Decoding takes
the argmax per position and stops at the first padding. This class also holds what both line
models share: text metrics, reading outputs as text, the worst/best examples and the augmentation
they use.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from text_recognizer import decoding, metrics
from text_recognizer.datasets.text import BLANK_INDEX, PADDING_INDEX
from text_recognizer.decoding import GREEDY, Decoder
from text_recognizer.images.augment import augment_batch
from text_recognizer.models.base import Model
from text_recognizer.models.predictions import Predictions
from text_recognizer.models.training import ratios


class LineModel(Model):
    """Per-position cross-entropy (padding included); CER, WER, character and word accuracy."""

    def __init__(
        self,
        data_config: dict[str, Any],
        network: str,
        network_args: dict[str, Any] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(data_config, network, network_args, device)
        self.max_length = int(data_config.get("max_length", self.output_shape[0]))
        self.blank_index = int(data_config.get("blank_index", BLANK_INDEX))
        self.padding_index = int(data_config.get("padding_index", PADDING_INDEX))

    # ----- training --------------------------------------------------------------------------------
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.float().transpose(1, 2), targets)

    def augment(
        self, xb: torch.Tensor, strength: float, generator: torch.Generator
    ) -> torch.Tensor:
        """Geometry plus ink: stroke thickness, blur and noise (see images/augment.py)."""
        return augment_batch(xb, strength, generator, ink=True)

    # ----- decoding and metrics --------------------------------------------------------------------
    def decode_outputs(self, outputs: torch.Tensor, decoder: Decoder = GREEDY) -> list[list[int]]:
        """Network outputs -> class-index sequences (special tokens removed): the argmax per
        position up to the first padding (there is nothing else to choose here)."""
        return decoding.fixed_length_decode(outputs.float(), self.padding_index, self.blank_index)

    def confidences(self, outputs: torch.Tensor, sequences: list[list[int]]) -> torch.Tensor:
        """Probability of the decoded output: the product over positions of the chosen class's."""
        return outputs.float().softmax(-1).amax(-1).prod(-1).cpu()

    def read_outputs(
        self, outputs: torch.Tensor, decoder: Decoder, confidences: bool = True
    ) -> tuple[list[str], list[float], list[int] | None]:
        sequences = self.decode_outputs(outputs, decoder)
        texts = decoding.to_texts(sequences, self.mapping)
        return texts, self.confidences(outputs, sequences).tolist() if confidences else [], None

    def target_texts(self, y: np.ndarray | torch.Tensor) -> list[str]:
        return decoding.label_texts(y.cpu() if isinstance(y, torch.Tensor) else y, self.mapping)

    def text_metrics(self, predictions: list[str], targets: list[str]) -> dict[str, float]:
        """CER, WER, character and word accuracy over the whole split."""
        return ratios(metrics.text_metrics(predictions, targets))

    def examples(self, predictions: Predictions, k: int = 10) -> list[dict[str, Any]]:
        """The ``k`` predictions with the highest CER and the ``k`` with the lowest."""
        texts, targets = predictions.predictions, predictions.targets
        if not texts or k <= 0:
            return []
        confidences = predictions.confidences
        cers = [metrics.cer(p, t) for p, t in zip(texts, targets, strict=True)]
        # worst: highest CER, longer labels first among ties; best: lowest CER, most confident
        worst = sorted(range(len(cers)), key=lambda i: (-cers[i], -len(targets[i]), i))[:k]
        best = sorted(range(len(cers)), key=lambda i: (cers[i], -confidences[i], i))[:k]

        def row(rank: str, i: int) -> dict[str, Any]:
            return {
                "rank": rank,
                "index": i,
                "cer": round(cers[i], 4),
                "confidence": round(confidences[i], 4),
                "target": targets[i],
                "prediction": texts[i],
            }

        return [row("worst", i) for i in worst] + [row("best", i) for i in best]
