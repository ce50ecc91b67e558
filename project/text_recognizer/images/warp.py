"""Warp primitives shared by batch augmentation and the synthetic datasets.

Every image of a batch gets its own random geometry, so each primitive works on a whole batch at
once: per-image amounts are drawn as one tensor, geometry becomes one sampling grid and one
``grid_sample`` call, and per-image filters run as one grouped convolution or a few shifted-slice
operations. Images are ``(N, C, H, W)`` floats with bright ink on black.

Geometry is measured relative to the image height on both axes, so a wide text line is rotated
and sheared like a square character, not stretched along its length.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def uniform(
    generator: torch.Generator, n: int, low: float, high: float, *shape: int
) -> torch.Tensor:
    """``(n, *shape)`` draws from ``[low, high)`` on the CPU: one random amount per image."""
    return torch.rand(n, *shape, generator=generator) * (high - low) + low


def rotation_shear(angle: torch.Tensor, shear: torch.Tensor) -> torch.Tensor:
    """``(N, 2, 2)``: rotation by ``angle`` (radians) after a horizontal ``shear``.

    Callers scale its rows or columns for zoom and aspect, then pass it to :func:`affine_grid`.
    """
    cos, sin = angle.cos(), angle.sin()
    top = torch.stack([cos, shear * cos - sin], dim=-1)
    bottom = torch.stack([sin, shear * sin + cos], dim=-1)
    return torch.stack([top, bottom], dim=-2)


def affine_grid(linear: torch.Tensor, shift: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Sampling grid ``(N, height, width, 2)`` for ``input = linear @ output + shift``.

    Both are in units of half the image height on both axes (``grid_sample`` normalises each axis
    to its own length), so a rotation stays a rotation on a wide image and a shift of 0.1 moves
    any image by 5 % of its height.
    """
    aspect = width / height
    theta = torch.zeros(linear.shape[0], 2, 3, dtype=linear.dtype, device=linear.device)
    theta[:, 0, 0] = linear[:, 0, 0]
    theta[:, 0, 1] = linear[:, 0, 1] / aspect
    theta[:, 1, 0] = linear[:, 1, 0] * aspect
    theta[:, 1, 1] = linear[:, 1, 1]
    theta[:, 0, 2] = shift[:, 0] / aspect
    theta[:, 1, 2] = shift[:, 1]
    return F.affine_grid(theta, [linear.shape[0], 1, height, width], align_corners=False)


def smooth_field(
    coarse: torch.Tensor, height: int, width: int, mode: str = "bilinear"
) -> torch.Tensor:
    """A coarse displacement field ``(N, 2, h, w)`` upsampled to ``(N, height, width, 2)``.

    Added to a grid it bends strokes smoothly (the elastic part of a handwriting-like warp);
    the coarse size sets how far apart the bends are.
    """
    field = F.interpolate(coarse, size=(height, width), mode=mode, align_corners=False)
    return field.permute(0, 2, 3, 1)


def sample(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``images`` read at ``grid`` (bilinear); what falls outside the image is black."""
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def max_filter3(images: torch.Tensor) -> torch.Tensor:
    """3x3 maximum over the last two axes, edges replicated: thickens bright strokes.

    ``-max_filter3(-x)`` is the 3x3 minimum (thinner strokes). Written as shifted-slice maxima
    because ``max_pool2d`` with stride 1 is slow on a CPU for single-channel images.
    """
    return _separable3(images, torch.maximum)


def binomial_blur3(images: torch.Tensor) -> torch.Tensor:
    """The 3x3 ``[1 2 1] x [1 2 1] / 16`` blur over the last two axes, edges replicated."""
    return _separable3(images, torch.add, centre_weight=2.0) / 16


def _separable3(
    x: torch.Tensor,
    combine: Callable[..., torch.Tensor],
    centre_weight: float | None = None,
) -> torch.Tensor:
    """``combine(combine(left, centre), right)`` along the width, then along the height.

    Each pass copies the (optionally weighted) centre once and combines the shifted neighbours
    into it in place; a missing neighbour at an edge is the edge pixel itself.
    """
    for dim in (-1, -2):
        size = x.shape[dim]
        out = x * centre_weight if centre_weight is not None else x.clone()
        for part, neighbour, edge in ((1, 0, 0), (0, 1, size - 1)):
            target = out.narrow(dim, part, size - 1)
            combine(target, x.narrow(dim, neighbour, size - 1), out=target)
            end = out.narrow(dim, edge, 1)
            combine(end, x.narrow(dim, edge, 1), out=end)
        x = out
    return x


def gaussian_kernels(sigma: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """One normalised Gaussian kernel per image, ``(N, 1, 2 radius + 1, 2 radius + 1)``."""
    r = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k1 = torch.exp(-(r**2) / (2 * sigma[:, None] ** 2))
    k1 = k1 / k1.sum(1, keepdim=True)
    return (k1[:, :, None] * k1[:, None, :]).unsqueeze(1)


def blur_each(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Single-channel ``images`` ``(N, 1, H, W)`` each convolved with its own kernel (zero edges).

    One grouped convolution over the batch instead of a convolution per image.
    """
    n, h, w = images.shape[0], images.shape[-2], images.shape[-1]
    pad = kernels.shape[-1] // 2
    out = F.conv2d(images.reshape(1, n, h, w), kernels, padding=pad, groups=n)
    return out.view(images.shape)
