"""On-the-fly augmentation of whole batches: a few batched tensor ops per batch, seeded.

Each image gets its own random rotation, scale, shear, translation and a smooth elastic field; the
batch is warped in one ``grid_sample`` call, on whatever device the batch is on, so augmentation
costs a small fraction of a training step instead of a Python call per image (on a CPU about 1 %
for the line networks at 64 x 512 and 128 x 1024, about 5 % for 28-pixel lines:
bench/bench_augment.py; on a GPU: bench/device_check.py). ``strength`` scales everything. All
random amounts come from the caller's generator, so the same seed gives bit-identical batches on
the same kind of device.

Geometry at strength 1.0. Characters (``ink=False``): rotation +-10 degrees, scale +-10 %, shear
+-0.15, translation +-8 % of the image height and an elastic field of +-1.5 % of the height. Lines
(``ink=True``), stronger where handwriting varies most (after Retsinas et al. 2022, "Best practices
for a handwritten text recognition system": shear x +-30 degrees, scale 0.6-1.2, elastic/grid
distortion, erosion/dilation, brightness/contrast and gamma): shear +-0.3 (17 degrees), scale
0.75-1.05 (zooming in past 1.05 would cut the ends off a full-width line; zooming out only adds
margin) and an elastic field of +-2.5 % of the height.

Geometry is measured in pixels relative to the height, so a wide text line is rotated, not
sheared, and moved by a fraction of a character, not of the whole line; its tilt is capped so that
its ends move at most 10 % of the height (about 1.4 degrees for a 32x256 name, 0.7 for a 28x448
line). For square images without ink effects this is exactly the original character augmentation
(same random draws, same result).

``ink=True`` (what the line and word models use) adds, per image: stroke thickness changes
(dilation or erosion, blended in partially so thin strokes are thinned, not erased), blur (a 3x3
binomial blended in partially), ink and paper levels (faded ink on grey paper: lower contrast,
raised background, and a gamma curve) and pixel noise. The dilation/erosion square grows with the
image height (3x3 up to 95 pixels, 5x5 at 96-159, ...: side about height / 32, odd), so a 128-pixel
line's strokes change about as much, relative to their width, as a 28-pixel line's. Images are
ink-on-black floats in [0, 1] and stay in [0, 1]. Per-image amounts come from ``generator`` (CPU);
pixel noise on a GPU from a device generator seeded by it. The grids and filters are the shared primitives
of :mod:`text_recognizer.images.warp`.
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

LINE_SHEAR = 0.3  # lines: horizontal shear limit at strength 1 (slant varies a lot by writer)
LINE_SCALE = (0.75, 1.05)  # lines: content scale range at strength 1
LINE_ELASTIC = 0.05  # lines: elastic control-point limit, in half-heights (2.5 % of the height)
LEVELS_LIMIT = 0.3  # paper raised / ink faded by up to this at strength 1 (capped at 0.4)
GAMMA_LIMIT = 1.25  # gamma in [1 / 1.25, 1.25] at strength 1


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
    if ink:  # one draw per image either way, so the random stream stays aligned
        low = max(0.5, 1 - (1 - LINE_SCALE[0]) * strength)
        high = 1 + (LINE_SCALE[1] - 1) * strength
        scale = (low + torch.rand(n, generator=generator) * (high - low)).to(x.device)
        shear = uniform(min(LINE_SHEAR, 0.6 / strength))  # at most 0.6 (31 degrees)
    else:
        scale = 1 + uniform(0.10)
        shear = uniform(0.15)
    linear = rotation_shear(angle, shear) / scale[:, None, None]
    shift = uniform(0.16, 2)  # in half-heights, so 0.16 is 8 % of the height
    grid = affine_grid(linear, shift, h, w)
    columns = max(3, round(3 * aspect))  # control points about a third of the height apart
    coarse = uniform(LINE_ELASTIC if ink else 0.03, 2, 3, columns)
    coarse[:, 0] /= aspect
    out = sample(x, grid + smooth_field(coarse, h, w))
    if ink:
        out = _ink(out, strength, generator)
    return out.squeeze(1) if squeeze else out


def stroke_radius(height: int) -> int:
    """Radius of the dilation/erosion square for images ``height`` pixels high: 1 (3x3) up to 95
    pixels, 2 (5x5) at 96-159, ...; a fixed 3x3 would barely touch a tall line's thick strokes."""
    return max(1, round(height / 64))


def dilate(images: torch.Tensor, radius: int) -> torch.Tensor:
    """Maximum over a (2 radius + 1) square: ``radius`` 3x3 maxima (a square is their composite)."""
    for _ in range(radius):
        images = max_filter3(images)
    return images


def _ink(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Stroke thickness, blur, ink/paper levels and noise, each with a per-image random amount."""
    n = x.shape[0]

    def amount(limit: float) -> torch.Tensor:
        a = torch.rand(n, generator=generator) * min(1.0, limit * strength)
        return a.to(x.device).view(n, 1, 1, 1)

    # dilation is a max over a square; erosion is the same on the negated image: s * max(s * x)
    sign = torch.where(torch.rand(n, generator=generator) < 0.5, 1.0, -1.0)
    sign = sign.to(x.device, x.dtype).view(n, 1, 1, 1)
    morphed = sign * dilate(sign * x, stroke_radius(x.shape[-2]))
    x = x + amount(0.6) * (morphed - x)
    x = x + amount(0.8) * (binomial_blur3(x) - x)
    x = _levels(x, strength, generator)
    noise = _rand_like(x, generator).sub_(0.5).mul_(12**0.5)  # std 1
    return (x + amount(0.05) * noise).clamp_(0.0, 1.0)


def _rand_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Uniform [0, 1) noise shaped like ``x``, made where ``x`` is.

    On a GPU a whole batch of noise drawn on the CPU and copied over would cost more than the
    step it feeds; a device generator seeded by one draw of ``generator`` keeps it seeded.
    """
    if x.device.type == "cpu":
        return torch.rand(x.shape, generator=generator, dtype=x.dtype)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    local = torch.Generator(device=x.device).manual_seed(seed)
    return torch.rand(x.shape, generator=local, device=x.device, dtype=x.dtype)


def _levels(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Faded ink on grey paper: ``paper + (ink - paper) * x ** gamma`` per image.

    Brightness and contrast in one: the background (0) rises to ``paper``, full ink (1) falls to
    ``ink``, and gamma bends the strokes' anti-aliased edges. Stays in [0, 1] with ink - paper >= 0.2.
    """
    n = x.shape[0]
    limit = min(0.4, LEVELS_LIMIT * strength)
    draws = torch.rand(3, n, generator=generator)
    paper = draws[0] * limit
    ink = 1 - draws[1] * limit
    gamma = torch.exp((draws[2] * 2 - 1) * math.log(GAMMA_LIMIT) * min(strength, 2.0))
    paper, ink, gamma = (t.to(x.device, x.dtype).view(n, 1, 1, 1) for t in (paper, ink, gamma))
    return paper + (ink - paper) * x.clamp(0.0, 1.0).pow(gamma)
