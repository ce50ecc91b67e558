"""Image bytes from a request -> a decoded PIL image, refusing hostile input before decoding.

The checks are the project's (``preprocessing``: the formats PIL decodes itself, the side and pixel
bounds), applied to bytes instead of a file, plus the server's own ``--max-pixels``: the size in
the header is checked before a pixel is decoded, so a PNG of a few hundred bytes that claims
100,000 x 100,000 pixels is refused at once (413), never expanded. Every refusal is an
``HTTPException`` with a one-line message; the app turns it into ``{"error": ...}``.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from typing import Any

from starlette.exceptions import HTTPException

from text_recognizer.errors import one_line
from text_recognizer.preprocessing import IMAGE_FORMATS, MAX_IMAGE_SIDE

# data:[<media type>][;<parameter>...];base64,<payload> (RFC 2397); only base64 payloads.
_DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?:;[\w.+-]+=[\w.+-]+)*;base64,", re.I)


def data_url_bytes(value: object) -> bytes:
    """The bytes of a ``data:image/...;base64,...`` URL (FSDL's JSON API); 4xx if malformed."""
    if not isinstance(value, str):
        raise HTTPException(400, f"an image must be a data URL string, got {type(value).__name__}")
    head = _DATA_URL.match(value[:256])
    if head is None:
        raise HTTPException(
            400, 'malformed data URL: expected "data:image/png;base64,..." (RFC 2397)'
        )
    media = (head["type"] or "").lower()
    if media and not media.startswith("image/") and media != "application/octet-stream":
        raise HTTPException(415, f"the data URL holds {media}, not an image")
    payload = value[head.end() :]
    try:
        return base64.b64decode(payload.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(400, "malformed data URL: its payload is not valid base64") from None


def open_images(payloads: list[bytes], max_pixels: int) -> list[Any]:
    """Decode a request's images; ``max_pixels`` bounds each one and, for a batch, all together
    (64 small PNGs that each claim the limit would otherwise decode to 64 times its memory)."""
    if len(payloads) == 1:
        return [open_image(payloads[0], max_pixels)]
    images, left = [], max_pixels
    for i, data in enumerate(payloads):
        image = open_image(data, max_pixels, f"image {i}", left)
        left -= image.width * image.height
        images.append(image)
    return images


def open_image(
    data: bytes, max_pixels: int, name: str = "image", pixels_left: int | None = None
) -> Any:
    """Decode ``data`` into a PIL image (first frame), after checking its header's size against
    ``max_pixels`` and, in a batch, against the ``pixels_left`` of the batch's budget."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise HTTPException(400, f"{name}: empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            check_pixels(img.width, img.height, max_pixels, name)
            if pixels_left is not None and img.width * img.height > pixels_left:
                raise HTTPException(
                    413, f"the batch's images hold over {max_pixels:,} pixels in all (send fewer)"
                )
            img.load()
    except HTTPException:
        raise
    except Image.DecompressionBombError:  # PIL's own bound, above ours: still refused
        raise HTTPException(413, f"{name}: too many pixels (a decompression bomb?)") from None
    except UnidentifiedImageError:
        raise HTTPException(
            422, f"{name}: not a known image format; expected {', '.join(IMAGE_FORMATS)}"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise HTTPException(
            422, f"{name}: corrupt or truncated image data ({one_line(e, 80)})"
        ) from None
    return img


def check_pixels(width: int, height: int, max_pixels: int, name: str = "image") -> None:
    """Refuse an empty image (422) or one over ``max_pixels`` or the project's side bound (413)."""
    if width <= 0 or height <= 0:
        raise HTTPException(422, f"{name}: empty image ({width}x{height} pixels)")
    if max(width, height) > MAX_IMAGE_SIDE or width * height > max_pixels:
        raise HTTPException(
            413,
            f"{name}: {width}x{height} pixels; this server reads images up to {max_pixels:,} "
            f"pixels and {MAX_IMAGE_SIDE} a side (scale or crop it)",
        )
