"""The shared warp primitives: identity parameters change nothing, geometry is height-relative,
the filters match their plain torch definitions, and per-image blurs stay per image."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from text_recognizer.images.warp import (
    affine_grid,
    binomial_blur3,
    blur_each,
    gaussian_kernels,
    max_filter3,
    rotation_shear,
    sample,
    smooth_field,
    uniform,
)


def test_identity_warp_returns_the_input() -> None:
    images = torch.rand(3, 2, 12, 40, generator=torch.Generator().manual_seed(0))
    zeros = torch.zeros(3)
    linear = rotation_shear(zeros, zeros)
    assert torch.equal(linear, torch.eye(2).expand(3, 2, 2))
    grid = affine_grid(linear, torch.zeros(3, 2), 12, 40)
    grid = grid + smooth_field(torch.zeros(3, 2, 3, 5), 12, 40)
    torch.testing.assert_close(sample(images, grid), images, atol=1e-5, rtol=0)


def test_shift_and_rotation_are_relative_to_the_height() -> None:
    # A shift of 0.5 half-heights moves a wide image by a quarter of its height along x.
    images = torch.rand(1, 1, 8, 32, generator=torch.Generator().manual_seed(1))
    moved = sample(images, affine_grid(torch.eye(2)[None], torch.tensor([[0.5, 0.0]]), 8, 32))
    torch.testing.assert_close(moved[..., :-2], images[..., 2:], atol=1e-5, rtol=0)
    assert moved[..., -2:].abs().max() == 0  # read from outside: black
    # A quarter turn of a square image is torch.rot90, whatever the aspect conjugation does.
    square = torch.rand(1, 1, 10, 10, generator=torch.Generator().manual_seed(2))
    turn = rotation_shear(torch.tensor([math.pi / 2]), torch.zeros(1))
    turned = sample(square, affine_grid(turn, torch.zeros(1, 2), 10, 10))
    torch.testing.assert_close(turned, torch.rot90(square, 1, (2, 3)), atol=1e-5, rtol=0)


def test_filters_match_their_definitions_with_replicated_edges() -> None:
    x = torch.rand(4, 1, 7, 9, generator=torch.Generator().manual_seed(3))
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    assert torch.equal(max_filter3(x), F.max_pool2d(padded, 3, stride=1))
    assert torch.equal(-max_filter3(-x), -F.max_pool2d(-padded, 3, stride=1))
    k = torch.tensor([1.0, 2.0, 1.0])
    kernel = (k[:, None] * k[None, :] / 16).view(1, 1, 3, 3)
    torch.testing.assert_close(binomial_blur3(x), F.conv2d(padded, kernel))
    flat = torch.full((2, 1, 5, 6), 0.25)
    assert torch.equal(max_filter3(flat), flat) and torch.equal(binomial_blur3(flat), flat)
    one = torch.rand(2, 1, 1, 1)  # a 1x1 image is its own neighbourhood
    assert torch.equal(max_filter3(one), one) and torch.equal(binomial_blur3(one), one)


def test_each_image_gets_its_own_blur() -> None:
    dots = torch.zeros(2, 1, 9, 9)
    dots[:, :, 4, 4] = 1.0
    kernels = gaussian_kernels(torch.tensor([0.01, 1.0]))
    torch.testing.assert_close(kernels.sum((1, 2, 3)), torch.ones(2))
    out = blur_each(dots, kernels)
    assert out.shape == dots.shape
    torch.testing.assert_close(out[0], dots[0])  # a tiny sigma leaves the image as it was
    assert out[1, 0, 4, 4] < 0.5 and math.isclose(float(out[1].sum()), 1.0, rel_tol=1e-5)


def test_uniform_draws_are_seeded_and_in_range() -> None:
    a = uniform(torch.Generator().manual_seed(4), 1000, -0.3, 0.5, 2)
    b = uniform(torch.Generator().manual_seed(4), 1000, -0.3, 0.5, 2)
    assert a.shape == (1000, 2) and torch.equal(a, b)
    assert a.min() >= -0.3 and a.max() < 0.5
