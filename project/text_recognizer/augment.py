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
erased), blur (a 3x3 Gaussian blended in partially) and Gaussian pixel noise.
Images are ink-on-black floats in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F


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

    # affine in normalised coordinates ([-1, 1] on both axes): conjugate by the aspect ratio so
    # the rotation and shear are the pixel-space ones
    aspect = w / h
    # a wide line tilted by 10 degrees would lose its ends: cap the tilt so they move <= 10 % of h
    angle = uniform(min(10.0, math.degrees(math.atan(0.2 / aspect)))).deg2rad()
    scale = 1 + uniform(0.10)
    shear = uniform(0.15)
    cos, sin = angle.cos(), angle.sin()
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = cos / scale
    theta[:, 0, 1] = (shear * cos - sin) / scale / aspect
    theta[:, 1, 0] = sin / scale * aspect
    theta[:, 1, 1] = (shear * sin + cos) / scale
    shift = uniform(0.16, 2)  # grid units span 2, so 0.16 is 8 % of the height
    shift[:, 0] /= aspect
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    columns = max(3, round(3 * aspect))  # control points about a third of the height apart
    coarse = uniform(0.03, 2, 3, columns)
    coarse[:, 0] /= aspect
    field = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    grid = grid + field.permute(0, 2, 3, 1)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if ink:
        out = _ink(out, strength, generator)
    return out.squeeze(1) if squeeze else out


def _ink(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Stroke thickness, blur and noise, each with a per-image random amount.

    The 3x3 filters are written as shifted slices (elementwise maxima and sums, separable), which
    on a CPU is several times faster than ``max_pool2d``/``conv2d`` on single-channel images.
    """
    n = x.shape[0]

    def amount(limit: float) -> torch.Tensor:
        a = torch.rand(n, generator=generator) * min(1.0, limit * strength)
        return a.to(x.device).view(n, 1, 1, 1)

    # dilation is a 3x3 max; erosion is the same on the negated image: s * max3x3(s * x), s = +-1
    sign = torch.where(torch.rand(n, generator=generator) < 0.5, 1.0, -1.0)
    sign = sign.to(x.device, x.dtype).view(n, 1, 1, 1)
    morphed = sign * _filter3(sign * x, torch.maximum)
    x = x + amount(0.6) * (morphed - x)
    blurred = _filter3(x, lambda a, b: a + b, center_weight=2.0) / 16
    x = x + amount(0.8) * (blurred - x)
    noise = torch.rand(x.shape, generator=generator).to(x.device).sub_(0.5).mul_(12**0.5)  # std 1
    return (x + amount(0.05) * noise).clamp_(0.0, 1.0)


def _filter3(
    x: torch.Tensor,
    combine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    center_weight: float | None = None,
) -> torch.Tensor:
    """Separable 3x3 filter over (N, C, H, W), edges replicated: combine(left, centre, right)
    along each axis; with ``center_weight`` the centre is scaled (a [1, w, 1] kernel)."""
    for dim in (3, 2):
        p = torch.cat([x.narrow(dim, 0, 1), x, x.narrow(dim, x.shape[dim] - 1, 1)], dim)
        size = x.shape[dim]
        left, mid, right = (p.narrow(dim, i, size) for i in range(3))
        mid = mid * center_weight if center_weight is not None else mid
        x = combine(combine(left, mid), right)
    return x
