"""Digits and letters rendered with Pillow's bundled scalable font, then distorted like handwriting.

Needs no download, so it is the embedded default: the quick start trains on it anywhere, offline, in
seconds. Glyphs are rendered once per (character, size, stroke width) and every sample is made by
one batched ``grid_sample`` (seeded random affine + smooth elastic field), a per-sample blur, ink
contrast and noise; white ink on black like EMNIST and MNIST.
"""

from __future__ import annotations

import string
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from text_recognizer import progress
from text_recognizer.datasets.base import Dataset, summary_main

if TYPE_CHECKING:
    import torch

CHARSETS = {
    "digits": string.digits,
    "digits_upper": string.digits + string.ascii_uppercase,
    "alphanumeric": string.digits + string.ascii_uppercase + string.ascii_lowercase,
}
GENERATION_SEED = 1234  # fixed: every run sees the same images; `seed` only moves the val split
TEMPLATE_SIZE = 64
FONT_SIZES = (38, 46)
STROKE_WIDTHS = (0, 1, 2)
CHUNK = 4096


class SyntheticCharactersDataset(Dataset):
    """Rendered, distorted characters ``(image_size, image_size)`` uint8: works offline."""

    name = "synthetic_characters"
    shaping_args: ClassVar[tuple[str, ...]] = (
        "charset",
        "num_train",
        "num_test",
        "image_size",
        "distortion",
    )
    needs_download = False

    def __init__(
        self,
        num_train: int = 20000,
        num_test: int = 4000,
        charset: str = "digits_upper",
        image_size: int = 28,
        distortion: float = 1.0,
        **common: Any,
    ) -> None:
        super().__init__(
            num_train=num_train,
            num_test=num_test,
            charset=charset,
            image_size=image_size,
            distortion=distortion,
            **common,
        )

    def prepare_raw_data(self) -> None:
        """Nothing to fetch: the font ships with Pillow."""

    def process(self) -> tuple[dict[str, np.ndarray], list[str]]:
        """Train then test from one seeded stream: the same images on every machine."""
        chars = CHARSETS[self.args["charset"]]
        templates, template_class = render_templates(chars)
        size, d = self.args["image_size"], self.args["distortion"]
        rng = np.random.default_rng(GENERATION_SEED)
        x_train, y_train = generate(
            templates, template_class, len(chars), self.args["num_train"], size, d, rng
        )
        x_test, y_test = generate(
            templates, template_class, len(chars), self.args["num_test"], size, d, rng
        )
        arrays = {"x_trainval": x_train, "y_trainval": y_train, "x_test": x_test, "y_test": y_test}
        return arrays, list(chars)


def render_templates(chars: str) -> tuple[np.ndarray, np.ndarray]:
    """One 64x64 glyph per (char, font size, stroke width): (T, 64, 64) uint8 and class per glyph."""
    from PIL import Image, ImageDraw, ImageFont

    glyphs, classes = [], []
    for size in FONT_SIZES:
        font = ImageFont.load_default(size=size)
        for stroke in STROKE_WIDTHS:
            for cls, ch in enumerate(chars):
                img = Image.new("L", (TEMPLATE_SIZE, TEMPLATE_SIZE), 0)
                draw = ImageDraw.Draw(img)
                centre = (TEMPLATE_SIZE // 2, TEMPLATE_SIZE // 2)
                draw.text(
                    centre,
                    ch,
                    font=font,
                    fill=255,
                    anchor="mm",
                    stroke_width=stroke,
                    stroke_fill=255,
                )
                glyphs.append(np.asarray(img))
                classes.append(cls)
    return np.stack(glyphs), np.asarray(classes, dtype=np.int64)


def generate(
    templates: np.ndarray,
    template_class: np.ndarray,
    num_classes: int,
    count: int,
    image_size: int,
    distortion: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` distorted samples with balanced random labels, made in batched chunks."""
    import torch

    labels = rng.integers(0, num_classes, size=count).astype(np.int64)
    by_class = [np.flatnonzero(template_class == c) for c in range(num_classes)]
    choice = np.array([by_class[c][rng.integers(len(by_class[c]))] for c in labels], dtype=np.int64)
    source = torch.from_numpy(templates).float().div_(255).unsqueeze(1)
    out = np.empty((count, image_size, image_size), dtype=np.uint8)
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    with progress.bar(count, "rendering characters", unit="img") as bar:
        for start in range(0, count, CHUNK):
            idx = torch.from_numpy(choice[start : start + CHUNK])
            out[start : start + len(idx)] = _distort(source[idx], image_size, distortion, gen)
            bar.update(len(idx))
    return out, labels


def _distort(glyphs: torch.Tensor, image_size: int, d: float, gen: torch.Generator) -> np.ndarray:
    """Each 64x64 template warped, blurred, dimmed and noised into one ``image_size`` sample.

    Sampling at twice the size and average-pooling is cheap anti-aliasing.
    """
    import torch
    import torch.nn.functional as F

    from text_recognizer.images.warp import (
        affine_grid,
        blur_each,
        gaussian_kernels,
        rotation_shear,
        sample,
        smooth_field,
        uniform,
    )

    n = glyphs.shape[0]

    def draw(low: float, high: float, *shape: int) -> torch.Tensor:
        return uniform(gen, n, low, high, *shape)

    angle = draw(-15, 15).mul(d).deg2rad()
    scale = draw(0.85, 1.1 + 0.1 * d)  # >1 zooms out; glyphs fill most of the frame, as in EMNIST
    aspect = draw(-0.12, 0.12).mul(d).exp()
    shear = draw(-0.3, 0.3).mul(d)
    shift = draw(-0.1, 0.1, 2).mul(d)
    linear = rotation_shear(angle, shear)
    linear[:, :, 0] *= (scale * aspect)[:, None]
    linear[:, :, 1] *= scale[:, None]
    hi = 2 * image_size
    coarse = torch.randn(n, 2, 4, 4, generator=gen) * (0.035 * d)  # smooth elastic field
    grid = affine_grid(linear, shift, hi, hi) + smooth_field(coarse, hi, hi, mode="bicubic")
    img = F.avg_pool2d(sample(glyphs, grid), 2)
    img = blur_each(img, gaussian_kernels(draw(0.01, 0.4 + 0.5 * d)))  # per-sample Gaussian blur
    img = img * draw(0.65, 1.0)[:, None, None, None]
    img = img + torch.randn(img.shape, generator=gen) * draw(0.0, 0.05 * d)[:, None, None, None]
    return (img.clamp_(0, 1) * 255).round_().to(torch.uint8).squeeze(1).numpy()


if __name__ == "__main__":
    raise SystemExit(summary_main("SyntheticCharactersDataset"))
