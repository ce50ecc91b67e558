"""On-the-fly augmentation of whole batches: one ``grid_sample`` per batch, seeded.

Each image gets its own random rotation, scale, shear, translation and a smooth elastic field; the
batch is warped in one call, on whatever device the batch is on, so augmentation costs a small
fraction of a training step instead of a Python call per image. ``strength`` scales everything:
1.0 is rotation +-10 degrees, scale +-10 %, shear +-0.15, translation +-8 % and a mild elastic field.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def augment_batch(
    images: torch.Tensor, strength: float, generator: torch.Generator
) -> torch.Tensor:
    """Warp a float batch (N, H, W) or (N, C, H, W) of ink-on-black images; returns the same shape."""
    if strength <= 0:
        return images
    squeeze = images.dim() == 3
    x = images.unsqueeze(1) if squeeze else images
    n, _, h, w = x.shape

    def uniform(limit: float, *shape: int) -> torch.Tensor:
        r = torch.rand(n, *shape, generator=generator) * 2 - 1
        return (r * limit * strength).to(x.device)

    angle = uniform(10.0).deg2rad()
    scale = 1 + uniform(0.10)
    shear = uniform(0.15)
    cos, sin = angle.cos(), angle.sin()
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = cos / scale
    theta[:, 0, 1] = (shear * cos - sin) / scale
    theta[:, 1, 0] = sin / scale
    theta[:, 1, 1] = (shear * sin + cos) / scale
    theta[:, :, 2] = uniform(0.16, 2)  # grid units span 2, so 0.16 is 8 % of the side
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    coarse = uniform(0.03, 2, 3, 3)
    field = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    grid = grid + field.permute(0, 2, 3, 1)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.squeeze(1) if squeeze else out
