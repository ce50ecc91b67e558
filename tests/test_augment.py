"""images/augment.py: line augmentation is deterministic under its seed, stays in [0, 1], scales
stroke thickness changes with the image height, and adds ink/paper levels (issue 12 item 2)."""

from __future__ import annotations

import torch

from text_recognizer.images.augment import augment_batch, dilate, stroke_radius


def lines(n: int = 6, height: int = 64, width: int = 512) -> torch.Tensor:
    """Ink-on-black lines: a few bright vertical and horizontal bars."""
    x = torch.zeros(n, height, width)
    for i in range(8):
        left = 20 + i * (width - 40) // 8
        x[:, height // 4 : 3 * height // 4, left : left + max(2, height // 12)] = 1.0
    x[:, height // 2 : height // 2 + max(2, height // 12), 20 : width - 20] = 0.8
    return x


def test_same_seed_is_bit_identical_and_another_seed_differs() -> None:
    x = lines()
    for ink in (False, True):
        a = augment_batch(x, 1.0, torch.Generator().manual_seed(7), ink=ink)
        b = augment_batch(x, 1.0, torch.Generator().manual_seed(7), ink=ink)
        c = augment_batch(x, 1.0, torch.Generator().manual_seed(8), ink=ink)
        assert torch.equal(a, b)
        assert not torch.equal(a, c)
        # every image of the batch gets its own draws
        assert not torch.equal(a[0], a[1])


def test_the_generator_moves_on_so_batches_of_an_epoch_differ() -> None:
    x = lines(n=2)
    g = torch.Generator().manual_seed(0)
    first, second = augment_batch(x, 1.0, g, ink=True), augment_batch(x, 1.0, g, ink=True)
    assert not torch.equal(first, second)


def test_output_stays_in_range_at_any_strength_and_keeps_shape() -> None:
    for shape in ((5, 28, 280), (3, 1, 128, 1024)):
        x = torch.rand(*shape)
        for strength in (0.5, 1.0, 3.0):
            out = augment_batch(x, strength, torch.Generator().manual_seed(0), ink=True)
            assert out.shape == x.shape and out.dtype == x.dtype
            assert torch.isfinite(out).all()
            assert out.min() >= 0 and out.max() <= 1
    x = torch.rand(2, 28, 56)
    assert torch.equal(augment_batch(x, 0.0, torch.Generator(), ink=True), x)


def test_levels_raise_the_paper_and_fade_the_ink() -> None:
    # Blank lines: the background comes out grey for some images (paper level), never above 0.45
    # (the 0.3 level limit plus noise).
    blank = augment_batch(torch.zeros(64, 32, 256), 1.0, torch.Generator().manual_seed(0), True)
    paper = blank.flatten(1).median(1).values
    assert paper.max() > 0.15 and paper.min() < 0.05
    assert paper.max() <= 0.45
    # Solid ink: some images lose contrast (faded ink), none goes below the 0.7 ink floor - noise.
    inked = torch.ones(64, 32, 256)
    solid = augment_batch(inked, 1.0, torch.Generator().manual_seed(0), True)[:, 8:-8, 64:-64]
    ink = solid.flatten(1).median(1).values
    assert ink.min() < 0.85 and ink.max() > 0.95 and ink.min() >= 0.6


def test_stroke_changes_scale_with_the_height() -> None:
    assert [stroke_radius(h) for h in (28, 32, 64, 95, 96, 128, 256)] == [1, 1, 1, 1, 2, 2, 4]
    dot = torch.zeros(1, 1, 128, 256)
    dot[..., 60, 100] = 1.0
    grown = dilate(dot, stroke_radius(128))
    assert grown.sum() == 25 and grown[..., 58:63, 98:103].sum() == 25  # a 5x5 square
    # erosion is the same filter on the negated image: a 4-pixel bar of a 128-pixel line vanishes
    bar = torch.zeros(1, 1, 128, 256)
    bar[..., 40:90, 100:104] = 1.0
    assert -dilate(-bar, stroke_radius(128)).max() == 0
    assert -dilate(-bar, 1).sum() > 0  # a 3x3 would only thin it


def test_line_geometry_is_stronger_than_characters_but_keeps_the_line() -> None:
    # Shear +-0.3 for lines (0.15 for characters): a vertical bar's top and bottom move apart by up
    # to 0.3 x its length; zoom 0.75-1.05 keeps a full-width line's ends inside the image.
    x = torch.zeros(64, 64, 512)
    x[:, 8:56, 254:258] = 1.0
    line = augment_batch(x, 1.0, torch.Generator().manual_seed(2), ink=True)
    char = augment_batch(x, 1.0, torch.Generator().manual_seed(2), ink=False)

    def slant(out: torch.Tensor) -> torch.Tensor:
        paper = out.flatten(1).median(1).values[:, None]
        top = (out[:, 20] > paper + 0.3).float()
        bottom = (out[:, 44] > paper + 0.3).float()
        cols = torch.arange(out.shape[-1]).float()
        centre = lambda row: (row * cols).sum(1) / row.sum(1).clamp(min=1)  # noqa: E731
        return (centre(top) - centre(bottom)).abs()

    assert slant(line).max() > slant(char).max()
    assert slant(line).max() <= 0.3 * 24 + 4  # rows 20 and 44 are 24 apart; rotation + elastic
    # Marks 20 pixels (4 %) from each end survive: zooming in stops at 1.05 (their shift: 12 px).
    ends = torch.zeros(64, 64, 512)
    ends[:, 24:40, 20:24] = ends[:, 24:40, 488:492] = 1.0
    out = augment_batch(ends, 1.0, torch.Generator().manual_seed(3), ink=True)
    paper = out.flatten(1).median(1).values[:, None, None]
    inked = out > paper + 0.3
    assert inked[..., :256].flatten(1).any(1).all() and inked[..., 256:].flatten(1).any(1).all()
