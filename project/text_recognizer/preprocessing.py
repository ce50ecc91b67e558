"""One image -> the model's input: shared by dataset processing and by the predictors.

Training and serving must not skew: the datasets that read raw images (Kaggle names, IAM lines)
build their arrays with :func:`preprocess_image`, and the predictors call the same function with
the ``preprocessing`` dict that travels in the weights' ``data_config``. Weights saved before that
dict existed get one rebuilt from the dataset name and its ``dataset_args``
(:func:`preprocessing_for`).

A ``preprocessing`` dict has ``resize`` and the target ``height`` / ``width``:

- ``square`` (characters): scale the longer side to the target, centre on a black background;
- ``crop`` (Kaggle default): place top-left on the canvas, crop what sticks out right/bottom;
- ``keep_aspect`` (Kaggle option): scale to fit the canvas whole, then place top-left;
- ``fit_height`` (IAM and generated lines): scale to the height keeping aspect, left-align, pad
  (squeeze to the width if wider).

The output is always uint8 (height, width), white ink on black. Input polarity is ``dark`` (dark
ink on light paper, as scanned files are), ``light`` (already white on black) or ``auto``: the
median of the image border decides, as paper is the background.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from text_recognizer.errors import ImageError, one_line, storage_error

RESIZE_MODES = ("square", "crop", "keep_aspect", "fit_height")
POLARITIES = ("auto", "dark", "light")
# Raster formats PIL decodes itself; EPS/PDF and the like would run external programs.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM", "TGA")
# Bounds on what is read: a 600 dpi A4 scan is 4960x7016 (35 M pixels). A PNG of a few hundred
# bytes can claim any size, so these are checked on the header, before decoding.
MAX_IMAGE_SIDE = 32768
MAX_IMAGE_PIXELS = 1 << 26


def load_image(image: Any) -> Any:
    """A path, numpy array or PIL image -> a PIL image in mode ``L`` (8-bit grayscale).

    16-bit and float images are scaled to 0..255 (PIL's own ``convert("L")`` clips them);
    transparency is composited over white, as a page shows it. Images larger than
    :data:`MAX_IMAGE_PIXELS` or :data:`MAX_IMAGE_SIDE` are refused before they are decoded, so a
    few bytes of PNG cannot claim gigabytes.
    """
    from PIL import Image

    if isinstance(image, (str, Path)):
        img = _open_file(Path(image), decode=True)
        try:
            return _to_gray(img)  # always a new image: the file (a GIF's frames) can be closed
        except ImageError as e:
            raise ImageError(f"{image}: {e}") from None
        finally:
            img.close()
    if isinstance(image, np.ndarray):
        return _to_gray(_array_to_pil(image))
    if isinstance(image, Image.Image):
        return _to_gray(image)
    raise ImageError(f"expected a path, numpy array or PIL image, got {type(image).__name__}")


def _to_gray(img: Any) -> Any:
    from PIL import Image

    check_image_size(img.width, img.height)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _array_to_pil(np.asarray(img))
    if img.mode == "LAB":  # PIL converts LAB to nothing but RGBA; its L channel is the lightness
        img = img.getchannel("L")
    if img.mode in ("P", "La", "RGBa"):  # palette and premultiplied alpha: straight alpha first
        img = img.convert("LA" if img.mode == "La" else "RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    try:
        return img.convert("L")
    except (ValueError, OSError) as e:
        raise ImageError(f"cannot convert a {img.mode} image to grayscale ({e})") from None


def check_image_file(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file, from its header only: a cheap check before the work."""
    img = _open_file(Path(path), decode=False)
    try:
        check_image_size(img.width, img.height, path)
        return img.width, img.height
    finally:
        img.close()


def check_image_size(width: int, height: int, where: object = None) -> None:
    """Refuse an empty image, or one too large to read in bounded memory and time."""
    prefix = f"{where}: " if where is not None else ""
    if width <= 0 or height <= 0:
        raise ImageError(f"{prefix}empty image ({width}x{height} pixels)")
    if max(width, height) > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
        raise ImageError(
            f"{prefix}image is {width}x{height} pixels; images up to {MAX_IMAGE_SIDE} pixels a "
            f"side and {MAX_IMAGE_PIXELS:,} pixels in all are read (scale or crop it)"
        )


def _open_file(path: Path, decode: bool) -> Any:
    """Open (and with ``decode``, decode) an image file; every failure is one ImageError line."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image file")
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if not path.is_file():  # a FIFO would block the decoder
        raise ImageError(f"{path}: is a device or pipe, not an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path, formats=IMAGE_FORMATS)
            check_image_size(img.width, img.height, path)
            if decode:
                img.load()
    except Image.DecompressionBombError as e:
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(pixels[1]):,} pixels" if pixels else "too many pixels"
        raise ImageError(
            f"{path}: image has {size}; images up to {MAX_IMAGE_PIXELS:,} pixels are read "
            "(scale or crop it)"
        ) from None
    except PermissionError as e:
        raise storage_error(e, path, "read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # PIL's own texts vary and can be long: say which kind of failure it was
        if _is_empty(path):
            what = "the file is empty"
        elif isinstance(e, UnidentifiedImageError):
            what = "not a known image format"
        else:
            what = f"corrupt or truncated image data: {one_line(e)[:80]}"
        raise ImageError(
            f"{path}: not a readable image ({what}); expected {', '.join(IMAGE_FORMATS)}"
        ) from None
    return img


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


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
    if mode == "square":  # characters: scale the longer side to fit, centre on black
        if img.size == (width, height):
            return np.asarray(img, dtype=np.uint8).copy()
        # Resizing before padding keeps the work at the image's own size: padding first made a
        # 100000x1 image a 100000x100000 canvas (10 GB).
        side = max(img.width, img.height)
        new_w = max(1, min(width, round(img.width * width / side)))
        new_h = max(1, min(height, round(img.height * height / side)))
        small = np.asarray(img.resize((new_w, new_h), bilinear), dtype=np.uint8)
        out = np.zeros((height, width), dtype=np.uint8)
        top, left = (height - new_h) // 2, (width - new_w) // 2
        out[top : top + new_h, left : left + new_w] = small
        return out
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
