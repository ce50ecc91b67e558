"""Digits and letters rendered with Pillow's bundled scalable font, then distorted like handwriting.

Needs no download, so it is the embedded default: the quick start trains on it anywhere, offline, in
seconds. Glyphs are rendered once per (character, size, stroke width) and every sample is made by
one batched ``grid_sample`` (seeded random affine + smooth elastic field), a per-sample blur, ink
contrast and noise; white ink on black like EMNIST and MNIST.
"""

from __future__ import annotations

import string
from typing import Any, ClassVar

import numpy as np

from text_recognizer import progress
from text_recognizer.datasets.base import Dataset, summary_main

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


def _distort(glyphs, image_size: int, d: float, gen) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    n = glyphs.shape[0]

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return torch.rand(n, *shape, generator=gen) * (hi - lo) + lo

    angle = uniform(-15, 15).mul(d).deg2rad()
    scale = uniform(
        0.85, 1.1 + 0.1 * d
    )  # >1 zooms out; glyphs fill most of the frame, as in EMNIST
    aspect = uniform(-0.12, 0.12).mul(d).exp()
    shear = uniform(-0.3, 0.3).mul(d)
    shift = uniform(-0.1, 0.1, 2).mul(d)
    cos, sin = angle.cos(), angle.sin()
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = scale * aspect * cos
    theta[:, 0, 1] = scale * (shear * cos - sin)
    theta[:, 1, 0] = scale * aspect * sin
    theta[:, 1, 1] = scale * (shear * sin + cos)
    theta[:, :, 2] = shift
    hi = 2 * image_size  # sample at 2x, then average-pool: cheap anti-aliasing
    grid = F.affine_grid(theta, [n, 1, hi, hi], align_corners=False)
    coarse = torch.randn(n, 2, 4, 4, generator=gen) * (0.035 * d)  # smooth elastic field
    grid = grid + F.interpolate(coarse, size=(hi, hi), mode="bicubic", align_corners=False).permute(
        0, 2, 3, 1
    )
    img = F.avg_pool2d(F.grid_sample(glyphs, grid, align_corners=False), 2)
    sigma = uniform(0.01, 0.4 + 0.5 * d)  # per-sample Gaussian blur by a grouped convolution
    r = torch.arange(-2, 3, dtype=torch.float32)
    k1 = torch.exp(-(r**2) / (2 * sigma[:, None] ** 2))
    k1 = k1 / k1.sum(1, keepdim=True)
    kernels = (k1[:, :, None] * k1[:, None, :]).unsqueeze(1)
    img = F.conv2d(img.view(1, n, image_size, image_size), kernels, padding=2, groups=n).view(
        n, 1, image_size, image_size
    )
    img = img * uniform(0.65, 1.0)[:, None, None, None]
    img = img + torch.randn(img.shape, generator=gen) * uniform(0.0, 0.05 * d)[:, None, None, None]
    return (img.clamp_(0, 1) * 255).round_().to(torch.uint8).squeeze(1).numpy()


if __name__ == "__main__":
    raise SystemExit(summary_main("SyntheticCharactersDataset"))
