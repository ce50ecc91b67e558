"""On-the-fly augmentation of whole batches: a few batched tensor ops per batch, seeded.

Each image gets its own random rotation, scale, shear, translation and a smooth elastic field; the
batch is warped in one ``grid_sample`` call, on whatever device the batch is on, so augmentation
costs a small fraction of a training step instead of a Python call per image. ``strength`` scales
everything: 1.0 is rotation +-10 degrees, scale +-10 %, shear +-0.15, translation +-8 % of the
image height and an elastic field of +-1.5 % of the height.

Geometry is measured in pixels relative to the height, so a wide text line is rotated, not
sheared, and moved by a fraction of a character, not of the whole line; its tilt is capped so that
its ends move at most 10 % of the height (about 1.4 degrees for a 32x256 name, 0.7 for a 28x448
line). For square images this is exactly the original character augmentation (same random
draws, same result).

``ink=True`` (what the line and word models use) adds, per image: stroke thickness changes
(dilation or erosion by a 3x3 max-pool, blended in partially so thin strokes are thinned, not
erased), blur (a 3x3 binomial blended in partially) and pixel noise (uniform, unit variance,
scaled per image). Images are ink-on-black floats in [0, 1]. The grids and filters are the shared
primitives of :mod:`text_recognizer.images.warp`.
"""

from __future__ import annotations

import math

import torch

from text_recognizer.images.warp import (
    affine_grid,
    binomial_blur3,
    max_filter3,
    rotation_shear,
    sample,
    smooth_field,
)


def augment_batch(
    images: torch.Tensor, strength: float, generator: torch.Generator, ink: bool = False
) -> torch.Tensor:
    """Augment a float batch (N, H, W) or (N, C, H, W); returns the same shape."""
    if strength <= 0:
        return images
    squeeze = images.dim() == 3
    x = images.unsqueeze(1) if squeeze else images
    n, _, h, w = x.shape

    def uniform(limit: float, *shape: int) -> torch.Tensor:
        r = torch.rand(n, *shape, generator=generator) * 2 - 1
        return (r * limit * strength).to(x.device)

    aspect = w / h
    # a wide line tilted by 10 degrees would lose its ends: cap the tilt so they move <= 10 % of h
    angle = uniform(min(10.0, math.degrees(math.atan(0.2 / aspect)))).deg2rad()
    scale = 1 + uniform(0.10)
    shear = uniform(0.15)
    linear = rotation_shear(angle, shear) / scale[:, None, None]
    shift = uniform(0.16, 2)  # in half-heights, so 0.16 is 8 % of the height
    grid = affine_grid(linear, shift, h, w)
    columns = max(3, round(3 * aspect))  # control points about a third of the height apart
    coarse = uniform(0.03, 2, 3, columns)
    coarse[:, 0] /= aspect
    out = sample(x, grid + smooth_field(coarse, h, w))
    if ink:
        out = _ink(out, strength, generator)
    return out.squeeze(1) if squeeze else out


def _ink(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Stroke thickness, blur and noise, each with a per-image random amount."""
    n = x.shape[0]

    def amount(limit: float) -> torch.Tensor:
        a = torch.rand(n, generator=generator) * min(1.0, limit * strength)
        return a.to(x.device).view(n, 1, 1, 1)

    # dilation is a 3x3 max; erosion is the same on the negated image: s * max3x3(s * x), s = +-1
    sign = torch.where(torch.rand(n, generator=generator) < 0.5, 1.0, -1.0)
    sign = sign.to(x.device, x.dtype).view(n, 1, 1, 1)
    morphed = sign * max_filter3(sign * x)
    x = x + amount(0.6) * (morphed - x)
    x = x + amount(0.8) * (binomial_blur3(x) - x)
    noise = torch.rand(x.shape, generator=generator).to(x.device).sub_(0.5).mul_(12**0.5)  # std 1
    return (x + amount(0.05) * noise).clamp_(0.0, 1.0)
