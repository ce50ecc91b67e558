"""LineModel: a fixed-length output per image (FSDL's first line model).

The network emits ``max_length`` class distributions; position i is trained with cross-entropy to
be the i-th character of the label, or the padding class once the text has ended. Decoding takes
the argmax per position and stops at the first padding. This class also holds what both line
models share: text metrics, prediction, the worst/best examples and the augmentation they use.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from text_recognizer import decoding, metrics
from text_recognizer.augment import augment_batch
from text_recognizer.datasets.text import BLANK_INDEX, PADDING_INDEX
from text_recognizer.models.base import Model


class LineModel(Model):
    """Per-position cross-entropy (padding included); CER, WER, character and word accuracy."""

    def __init__(
        self,
        data_config: dict[str, Any],
        network: str,
        network_args: dict[str, Any] | None = None,
        device: str | torch.device = "cpu",
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(data_config, network, network_args, device, config)
        self.max_length = int(data_config.get("max_length", self.output_shape[0]))
        self.blank_index = int(data_config.get("blank_index", BLANK_INDEX))
        self.padding_index = int(data_config.get("padding_index", PADDING_INDEX))

    # ----- training --------------------------------------------------------------------------------
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.float().transpose(1, 2), targets)

    def augment(
        self, xb: torch.Tensor, strength: float, generator: torch.Generator
    ) -> torch.Tensor:
        """Geometry plus ink: stroke thickness, blur and noise (see augment.py)."""
        return augment_batch(xb, strength, generator, ink=True)

    # ----- decoding and metrics --------------------------------------------------------------------
    def decode_outputs(self, outputs: torch.Tensor) -> list[list[int]]:
        """Network outputs -> class-index sequences (special tokens removed)."""
        return decoding.fixed_length_decode(outputs.float(), self.padding_index, self.blank_index)

    def confidences(self, outputs: torch.Tensor, sequences: list[list[int]]) -> torch.Tensor:
        """Probability of the decoded output: the product over positions of the chosen class's."""
        return outputs.float().softmax(-1).amax(-1).prod(-1).cpu()

    def batch_metrics(
        self, outputs: torch.Tensor, targets: torch.Tensor
    ) -> dict[str, tuple[int, int]]:
        """Text metrics at evaluation; none on training batches (decoding would slow training)."""
        if self.network.training:
            return {}
        predictions = decoding.to_texts(self.decode_outputs(outputs.cpu()), self.mapping)
        return metrics.text_metrics(predictions, decoding.label_texts(targets.cpu(), self.mapping))

    # ----- prediction ------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(
        self, x: np.ndarray | torch.Tensor, batch_size: int = 256
    ) -> tuple[list[str], list[float]]:
        """Texts and confidences for a stack of images shaped like the training images."""
        self.network.eval()
        texts: list[str] = []
        confidences: list[float] = []
        x = self.to_tensor(x)
        for i in range(0, len(x), batch_size):
            outputs = self.network(self.preprocess(x[i : i + batch_size])).float()
            sequences = self.decode_outputs(outputs)
            texts += decoding.to_texts(sequences, self.mapping)
            confidences += self.confidences(outputs, sequences).tolist()
        return texts, confidences

    def predict_on_image(self, image: np.ndarray) -> tuple[str, float]:
        """The text in one (H, W) ink-on-black image (uint8, or float in [0, 1]) and its confidence.

        An image of another size is scaled to the model's height, keeping its aspect ratio, then
        padded with background (or squeezed) to the model's width.
        """
        texts, confidences = self.predict(self.prepare_image(image)[None])
        return texts[0], confidences[0]

    def prepare_image(self, image: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(image))
        if x.dim() != 2:
            raise ValueError(f"expected one (height, width) image, got shape {tuple(x.shape)}")
        if x.dtype != torch.uint8:
            x = x.float()
            x = (x.clamp(0, 1) * 255 if x.max() <= 1 else x.clamp(0, 255)).round().to(torch.uint8)
        h, w = self.input_shape[-2:]
        if tuple(x.shape) == (h, w):
            return x
        from PIL import Image

        new_w = min(w, max(1, round(x.shape[1] * h / x.shape[0])))
        resized = np.array(Image.fromarray(x.numpy()).resize((new_w, h), Image.BILINEAR))
        out = torch.zeros(h, w, dtype=torch.uint8)
        out[:, :new_w] = torch.from_numpy(resized)
        return out

    def examples(
        self, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, k: int = 10
    ) -> list[dict[str, Any]]:
        """The ``k`` predictions with the highest CER and the ``k`` with the lowest."""
        if len(x) == 0 or k <= 0:
            return []
        predictions, confidences = self.predict(x)
        targets = decoding.label_texts(y, self.mapping)
        cers = [metrics.cer(p, t) for p, t in zip(predictions, targets, strict=True)]
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
                "prediction": predictions[i],
            }

        return [row("worst", i) for i in worst] + [row("best", i) for i in best]
