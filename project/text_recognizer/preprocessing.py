"""One image -> the model's input: shared by dataset processing and by the predictors.

Training and serving must not skew: the datasets that read raw images (Kaggle names, IAM lines)
build their arrays with :func:`preprocess_image`, and the predictors call the same function with
the ``preprocessing`` dict that travels in the weights' ``data_config``. Weights saved before that
dict existed get one rebuilt from the dataset name and its ``dataset_args``
(:func:`preprocessing_for`).

A ``preprocessing`` dict has ``resize`` and the target ``height`` / ``width``:

- ``square`` (characters): pad to a centred square with background, resize to height x width;
- ``crop`` (Kaggle default): place top-left on the canvas, crop what sticks out right/bottom;
- ``keep_aspect`` (Kaggle option): scale to fit the canvas whole, then place top-left;
- ``fit_height`` (IAM and generated lines): scale to the height keeping aspect, left-align, pad
  (squeeze to the width if wider).

The output is always uint8 (height, width), white ink on black. Input polarity is ``dark`` (dark
ink on light paper, as scanned files are), ``light`` (already white on black) or ``auto``: the
median of the image border decides, as paper is the background.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from text_recognizer.errors import UserError

RESIZE_MODES = ("square", "crop", "keep_aspect", "fit_height")
POLARITIES = ("auto", "dark", "light")


class ImageError(UserError):
    """An input that is not a usable image (unreadable, empty, wrong shape)."""


def load_image(image: Any) -> Any:
    """A path, numpy array or PIL image -> a PIL image in mode ``L`` (8-bit grayscale).

    16-bit and float images are scaled to 0..255 (PIL's own ``convert("L")`` clips them);
    transparency is composited over white, as a page shows it.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise ImageError(f"{path}: no such file")
        try:
            img = Image.open(path)
            img.load()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise ImageError(f"{path}: not a readable image ({type(e).__name__})") from None
    elif isinstance(image, np.ndarray):
        img = _array_to_pil(image)
    elif isinstance(image, Image.Image):
        img = image
    else:
        raise ImageError(f"expected a path, numpy array or PIL image, got {type(image).__name__}")
    if img.width == 0 or img.height == 0:
        raise ImageError(f"empty image ({img.width}x{img.height} pixels)")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _array_to_pil(np.asarray(img))
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("L")


def _array_to_pil(array: np.ndarray) -> Any:
    from PIL import Image

    a = np.asarray(array)
    if a.size == 0:
        raise ImageError(f"empty image (array shape {a.shape})")
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (3, 4):
        a = np.moveaxis(a, 0, -1).squeeze(-1) if a.shape[0] == 1 else np.moveaxis(a, 0, -1)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise ImageError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {a.shape}")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        f = a.astype(np.float64)
        if not np.isfinite(f).all():
            raise ImageError("image has NaN or infinite pixel values")
        top = float(f.max()) if f.size else 0.0
        if f.min() >= 0 and top <= 1.0:
            f = f * 255
        elif top > 255:  # 16-bit (or wider) range
            f = f * (255.0 / (65535.0 if top <= 65535 else top))
        a = np.clip(np.rint(f), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        return Image.fromarray(a, "L")
    return Image.fromarray(a, "RGB" if a.shape[-1] == 3 else "RGBA")


def is_dark_on_light(gray: np.ndarray) -> bool:
    """True when the border (the paper) is brighter than mid-grey: ink is dark, so invert."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return float(np.median(border)) > 127


def preprocess_image(
    image: Any, preprocessing: dict[str, Any], polarity: str = "auto"
) -> np.ndarray:
    """Any image -> uint8 (height, width) white ink on black, exactly as the model was trained.

    The order of inversion and resizing follows each dataset's original processing (bilinear
    rounding differs by one grey level otherwise), so cached training arrays stay bit-identical.
    """
    from PIL import Image, ImageOps

    if polarity not in POLARITIES:
        raise ValueError(f"polarity must be one of {POLARITIES}, got {polarity!r}")
    img = load_image(image)
    mode = preprocessing.get("resize", "fit_height")
    height, width = int(preprocessing["height"]), int(preprocessing["width"])
    invert = polarity == "dark" or (
        polarity == "auto" and is_dark_on_light(np.asarray(img, dtype=np.uint8))
    )
    bilinear = Image.Resampling.BILINEAR
    if mode in ("crop", "keep_aspect"):  # Kaggle names: resize, then invert, then place
        if mode == "keep_aspect":
            scale = min(height / img.height, width / img.width)
            size = (
                max(1, min(width, round(img.width * scale))),
                max(1, min(height, round(img.height * scale))),
            )
            img = img.resize(size, bilinear)
        ink = np.asarray(img, dtype=np.uint8)
        ink = 255 - ink if invert else ink
        out = np.zeros((height, width), dtype=np.uint8)
        h, w = min(height, ink.shape[0]), min(width, ink.shape[1])
        out[:h, :w] = ink[:h, :w]
        return out
    if invert:
        img = ImageOps.invert(img)
    if mode == "fit_height":  # IAM lines: invert, scale to height, left-align, pad or squeeze
        new_w = min(width, max(1, round(img.width * height / max(img.height, 1))))
        if img.size != (new_w, height):
            img = img.resize((new_w, height), bilinear)
        out = np.zeros((height, width), dtype=np.uint8)
        out[:, :new_w] = np.asarray(img, dtype=np.uint8)
        return out
    if mode == "square":  # characters: centre on a black square, then resize
        if img.size == (width, height):
            return np.asarray(img, dtype=np.uint8).copy()
        side = max(img.width, img.height)
        canvas = Image.new("L", (side, side), 0)
        canvas.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
        return np.asarray(canvas.resize((width, height), bilinear), dtype=np.uint8)
    raise ValueError(f"unknown resize mode {mode!r}; expected one of {RESIZE_MODES}")


def preprocessing_for(
    data_config: dict[str, Any], config: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The preprocessing a model was trained with: from its data_config, else rebuilt.

    Rebuilding covers weights saved before datasets recorded it: the dataset's name and the run's
    ``dataset_args`` say which mode it used.
    """
    if isinstance(data_config.get("preprocessing"), dict):
        return dict(data_config["preprocessing"])
    height, width = (int(d) for d in data_config["input_shape"][-2:])
    dataset = data_config.get("dataset") or (config or {}).get("dataset")
    args = (config or {}).get("dataset_args") or {}
    if dataset == "KaggleNamesDataset":
        mode = "keep_aspect" if args.get("keep_aspect") else "crop"
    elif data_config.get("kind") == "characters" or len(data_config["output_shape"]) == 1:
        mode = "square"
    else:
        mode = "fit_height"
    return {"resize": mode, "height": height, "width": width}
