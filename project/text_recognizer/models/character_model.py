"""CharacterModel: one class per image, cross-entropy loss, accuracy."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from text_recognizer.models.base import Model


class CharacterModel(Model):
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), targets)

    def batch_metrics(
        self, outputs: torch.Tensor, targets: torch.Tensor
    ) -> dict[str, tuple[torch.Tensor, int]]:
        return {"accuracy": ((outputs.max(1).indices == targets).sum(), len(targets))}

    @torch.no_grad()
    def predict_on_image(self, image: np.ndarray) -> tuple[str, float]:
        """The most likely character and its softmax probability, for one (H, W) image."""
        x = torch.as_tensor(np.asarray(image))
        if x.dtype != torch.uint8:
            x = (
                (x.float().clamp(0, 1) * 255).round().to(torch.uint8)
                if x.max() <= 1
                else x.to(torch.uint8)
            )
        if tuple(x.shape) != self.input_shape:
            from PIL import Image

            h, w = self.input_shape[-2:]
            x = torch.from_numpy(
                np.array(Image.fromarray(x.numpy()).resize((w, h), Image.BILINEAR))
            )
        self.network.eval()
        probs = self.network(self.preprocess(x.unsqueeze(0).to(self.device))).softmax(-1)[0]
        conf, idx = probs.max(0)
        return self.mapping[int(idx)], float(conf)
