"""The handwriting-like warp of synthetic lines: composed lines onto the output, batched.

One ``grid_sample`` per chunk maps each line onto ``image_height x image_width``: a random left
margin, horizontal scale (a line that would not fit is squeezed to fit, never cut), vertical
scale, slant (shear), baseline tilt, vertical shift and a smooth elastic field; then per-line
stroke thickening or thinning (a blend with a 3x3 max or min filter), Gaussian blur, ink contrast
and noise. ``distortion`` scales all of it (0 = clean text). The sampling, field and filters are
the shared primitives of :mod:`text_recognizer.images.warp`; the grid is built here from terms
that vary along one axis only, since a line is much wider than tall.
"""

from __future__ import annotations

import numpy as np
import torch

from text_recognizer.images.warp import (
    blur_each,
    gaussian_kernels,
    max_filter3,
    sample,
    smooth_field,
    uniform,
)


def warp_lines(
    canvas: np.ndarray, line_w: np.ndarray, width: int, d: float, gen: torch.Generator
) -> np.ndarray:
    """Map each composed line onto ``(H, width)`` with random geometry and ink effects (batched).

    ``canvas`` is ``(N, H, Wc)`` uint8, ``line_w`` each line's ink width on it; returns uint8.
    """
    src = torch.from_numpy(canvas).unsqueeze(1).float()  # 0..255 throughout
    img = sample(src, line_grid(line_w, canvas.shape[2], canvas.shape[1], width, d, gen))
    img = ink_effects(img, d, gen)
    return img.clamp_(0, 255).round_().to(torch.uint8).squeeze(1).numpy()


def line_grid(
    line_w: np.ndarray, canvas_w: int, h: int, width: int, d: float, gen: torch.Generator
) -> torch.Tensor:
    """The sampling grid ``(N, h, width, 2)`` of each line's random geometry on the canvas."""
    n = len(line_w)

    def draw(low: float, high: float, *shape: int) -> torch.Tensor:
        return uniform(gen, n, low, high, *shape)

    lw = torch.from_numpy(line_w).float()[:, None, None]
    shear = draw(-0.35, 0.35).mul(d)
    # Room kept free on both sides for what moves ink sideways (slant, elastic field, blur), so
    # that no line is cut off; a line too long for the rest is squeezed horizontally.
    slack = shear.abs() * h / 2 + 2 + 1.5 * d * h / 28
    margin = draw(0, 4 * h / 28) + slack
    room = (width - margin - slack).clamp(min=1)
    sx = torch.minimum(draw(-0.1, 0.1).mul(d).exp(), room / lw[:, 0, 0])
    sy = draw(-0.08, 0.06).mul(d).exp()
    tilt = draw(-1.5, 1.5).mul(d).deg2rad().tan()
    dy = draw(-1.0, 1.0).mul(d * h / 28)
    # Output pixel (u, v) reads input ((u - margin) / sx + shear (v - cy),
    # cy + (v - cy) / sy + tilt ((u - margin) / sx - lw / 2) - dy), in grid units (-1..1). Terms
    # that vary along one axis only are computed small and broadcast once.
    cy, to_x, to_y = h / 2, 2 / canvas_w, 2 / h
    u = torch.arange(width, dtype=torch.float32)[None, None, :] + 0.5
    v = torch.arange(h, dtype=torch.float32)[None, :, None] + 0.5 - cy
    ut = (u - margin[:, None, None]) / sx[:, None, None]  # (n, 1, W)
    along_x = ut * to_x - 1
    along_y = tilt[:, None, None] * (ut - lw / 2) * to_y
    down_x = shear[:, None, None] * v * to_x  # (n, H, 1)
    down_y = (cy + v / sy[:, None, None] - dy[:, None, None]) * to_y - 1
    coarse = torch.randn(n, 2, 3, max(2, width // 24), generator=gen) * (0.7 * d * h / 28)
    coarse[:, 0] *= to_x
    coarse[:, 1] *= to_y
    field = smooth_field(coarse, h, width)
    grid = torch.empty(n, h, width, 2)
    torch.add(field[..., 0], along_x, out=grid[..., 0]).add_(down_x)
    torch.add(field[..., 1], along_y, out=grid[..., 1]).add_(down_y)
    return grid


def ink_effects(img: torch.Tensor, d: float, gen: torch.Generator) -> torch.Tensor:
    """Per-line stroke width, blur, contrast and noise on warped lines ``(N, 1, H, W)``, 0..255."""
    n = img.shape[0]

    def draw(low: float, high: float) -> torch.Tensor:
        return uniform(gen, n, low, high)

    # Stroke width: blend towards a 3x3 max (thicker) or min (thinner) filter, per line.
    weight = draw(-0.4, 0.4).mul(min(d, 1.5))
    target = img.clone()
    thick, thin = weight > 0, weight < 0
    if thick.any():
        target[thick] = max_filter3(img[thick])
    if thin.any():
        target[thin] = -max_filter3(-img[thin])
    img = torch.lerp(img, target, weight.abs()[:, None, None, None])
    sigma = draw(0.05, 0.3 + 0.4 * d)
    img = blur_each(img, gaussian_kernels(sigma) * draw(0.7, 1.0)[:, None, None, None])
    noise = draw(0, 0.04 * d * 255)[:, None, None, None]
    return img.addcmul_(torch.randn(img.shape, generator=gen), noise)
