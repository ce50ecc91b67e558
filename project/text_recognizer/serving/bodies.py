"""A request body read within its limit, and the image bytes it carries.

The size limit is enforced twice: a ``Content-Length`` over it is refused before a byte is read,
and the bytes are counted while they arrive, since the header can lie or be absent (chunked
uploads). Three body kinds are taken: JSON (FSDL's ``{"image": "data:image/png;base64,..."}``,
or for a batch ``{"images": [...]}`` or a bare list), multipart uploads (fields ``image`` or
``file``; any file fields for a batch) and raw ``image/*`` bytes. Anything else is a 415.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anyio.to_thread
from starlette.exceptions import HTTPException
from starlette.requests import Request

from text_recognizer.errors import one_line
from text_recognizer.serving.images import data_url_bytes
from text_recognizer.serving.settings import MAX_FORM_PARTS, Limits

SINGLE_FIELDS = ("image", "file")
TAKES = "application/json, multipart/form-data or image/*"


async def read_body(request: Request, limits: Limits) -> bytes:
    """The whole body, at most ``limits.max_bytes`` (413 beyond it, 408 if it arrives too slowly)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise HTTPException(400, "Content-Length is not a number")
        if int(declared) > limits.max_bytes:
            raise HTTPException(413, too_large(int(declared), limits))
    try:
        return await asyncio.wait_for(_count(request, limits), limits.body_timeout_s)
    except TimeoutError:
        raise HTTPException(
            408, f"the body took over {limits.body_timeout_s:g} s to arrive"
        ) from None


async def _count(request: Request, limits: Limits) -> bytes:
    from starlette.requests import ClientDisconnect

    chunks, total = [], 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limits.max_bytes:
                raise HTTPException(413, too_large(total, limits, at_least=True))
            chunks.append(chunk)
    except ClientDisconnect:  # the client's doing, not a server error: no traceback logged
        raise HTTPException(400, "the client closed the connection before its body ended") from None
    return b"".join(chunks)


def too_large(size: int, limits: Limits, at_least: bool = False) -> str:
    more = "over " if at_least else ""
    return f"the body is {more}{size:,} bytes; this server takes up to {limits.max_bytes:,}"


def media_type(request: Request) -> str:
    """The Content-Type without its parameters, lower case ('' when absent)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def image_payloads(request: Request, limits: Limits, batch: bool) -> list[bytes]:
    """The image bytes a request carries: exactly one unless ``batch`` (then 1..max_batch)."""
    kind = media_type(request)
    if kind not in ("application/json", "multipart/form-data") and not kind.startswith("image/"):
        shown = kind or "no Content-Type"
        raise HTTPException(415, f"{shown} is not taken; send {TAKES}")
    body = await read_body(request, limits)
    if not body:
        raise HTTPException(400, "empty body: send an image")
    if kind == "application/json":  # parsed off the event loop: 16 MiB of JSON takes a while
        images = await anyio.to_thread.run_sync(_json_images, body, batch, limits.max_batch)
    elif kind == "multipart/form-data":
        images = await _multipart_images(request, body, batch)
    else:
        images = [body]
    if batch and not 1 <= len(images) <= limits.max_batch:
        raise HTTPException(400, f"a batch holds 1 to {limits.max_batch} images, got {len(images)}")
    return images


def _json_images(body: bytes, batch: bool, max_batch: int) -> list[bytes]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise HTTPException(400, f"malformed JSON: {one_line(e, 120)}") from None
    if batch:
        items = data.get("images") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise HTTPException(
                400, 'expected a JSON list of data URLs, or {"images": [data URLs]}'
            )
        if not 1 <= len(items) <= max_batch:  # before decoding any of them
            raise HTTPException(400, f"a batch holds 1 to {max_batch} images, got {len(items)}")
        return [data_url_bytes(item) for item in items]
    if not isinstance(data, dict) or "image" not in data:
        raise HTTPException(400, 'expected a JSON object {"image": "data:image/png;base64,..."}')
    return [data_url_bytes(data["image"])]


async def _multipart_images(request: Request, body: bytes, batch: bool) -> list[bytes]:
    """The uploaded files, parsed from the body already read (and counted)."""
    from starlette.datastructures import UploadFile

    sent = False

    async def replay() -> dict[str, Any]:  # the counted body, handed to Starlette's parser
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form(
        max_files=MAX_FORM_PARTS, max_fields=MAX_FORM_PARTS
    )
    try:
        files = [(k, v) for k, v in form.multi_items() if isinstance(v, UploadFile)]
        if not batch:
            files = [(k, v) for k, v in files if k in SINGLE_FIELDS]
            if len(files) != 1:
                raise HTTPException(
                    400,
                    f"upload one file in the field 'image' or 'file' (got {len(files)}); "
                    "several go to /v1/predict_batch",
                )
        return [await upload.read() for _, upload in files]
    finally:
        await form.close()
