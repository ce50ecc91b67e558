"""The FastAPI app: the JSON API, the health check and the web page, with one-line JSON errors.

Routes (OpenAPI docs at ``/docs``):

- ``POST /v1/predict`` one image (JSON data URL, multipart ``image``/``file``, or raw ``image/*``)
  -> ``{"pred", "conf", "ms"}``; ``?mode=paragraph`` reads a paragraph (line models);
- ``POST /v1/predict_batch`` several images -> a list of answers, in order;
- ``POST /v1/predict_paragraph`` a paragraph image -> ``{"pred", "conf": null, "ms", "lines"}``;
- ``GET /healthz`` the model's kind, modes, character set, decoder, runtime and version;
- ``GET /`` the page (``static/``), which works offline.

Every route takes ``?beam=N`` (CTC line models on torch). Every failure is ``{"error": "..."}``
on one line: 4xx for what the client sent, 500 (logged here with its traceback) for a bug, 503
when memory runs out. Decoding and reading run in worker threads (``max_reading`` at once), so
the event loop keeps accepting requests while the model works; a single image read with the
server's decoder waits for the model's threads as a future (`Batcher`), holding no thread.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from text_recognizer.errors import UserError, one_line, out_of_memory
from text_recognizer.serving.bodies import TAKES, image_payloads
from text_recognizer.serving.images import open_images
from text_recognizer.serving.reader import Reader, answer
from text_recognizer.serving.settings import Limits

STATIC_DIR = Path(__file__).parent / "static"
ERROR_CHARS = 300  # an error line quotes user input at most this long
log = logging.getLogger("text_recognizer.serving")

_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "properties": {"image": {"type": "string"}}},
                "example": {"image": "data:image/png;base64,iVBORw0KGgo..."},
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"image": {"type": "string", "format": "binary"}},
                }
            },
            "image/png": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "array", "items": {"type": "string"}},
                "example": ["data:image/png;base64,iVBORw0KGgo..."],
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "images": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                }
            },
        },
    }
}
BEAM = Query(None, description="CTC beam width for this request (1 = greedy); line models")


def error(status: int, message: object) -> JSONResponse:
    """The one shape of every failure: ``{"error": "one line"}``."""
    return JSONResponse({"error": one_line(message, ERROR_CHARS)}, status_code=status)


def create_app(reader: Reader, limits: Limits | None = None) -> FastAPI:
    """The app serving ``reader`` within ``limits`` (the defaults of ``settings``)."""
    from text_recognizer import __version__

    limits = limits or Limits()
    app = FastAPI(
        title="text-recognizer",
        version=__version__,
        description=f"Read handwriting with a saved {reader.kind} model. Bodies: {TAKES}.",
    )
    app.state.reader, app.state.limits = reader, limits
    _add_error_handlers(app)
    limiter = anyio.CapacityLimiter(limits.max_reading)

    async def in_thread(work: Callable[..., Any], *args: Any) -> Any:
        """``work`` in a worker thread, at most ``max_reading`` at once: the loop stays free."""
        return await anyio.to_thread.run_sync(functools.partial(work, *args), limiter=limiter)

    def decoded(work: Callable[..., Any]) -> Callable[..., Any]:
        """``work`` on the decoded images of the payloads, both in one worker thread: the
        limiter then bounds the decoded images held at once, and only ``work``'s (small) result
        leaves it."""

        def run(payloads: list[bytes], *args: Any) -> Any:
            return work(open_images(payloads, limits.max_pixels), *args)

        return run

    def prepared(images: list[Any]) -> tuple[Any, float]:
        """The model's input and when its preparing began: ``ms`` counts from there on every
        route (after decoding, as ``Reader.read`` does)."""
        (image,) = images
        start = time.perf_counter()
        return reader.prepare(image), start

    def paragraph(images: list[Any], beam: int | None) -> Any:
        (image,) = images
        return reader.read_paragraph(image, beam)

    @app.post("/v1/predict", openapi_extra=_BODY)
    async def predict(
        request: Request,
        beam: int | None = BEAM,
        mode: str | None = Query(None, pattern="^(line|character|paragraph)$"),
    ) -> Any:
        """Read one image: FSDL's JSON, a multipart upload or raw image bytes; ``mode`` (the
        model's own kind by default) may ask a line model for a paragraph."""
        if mode is not None and mode not in reader.modes():
            raise UserError(
                f"mode={mode}: this server reads with a {reader.kind} model; mode must be one of "
                f"{', '.join(reader.modes())}"
            )
        payloads = await image_payloads(request, limits, batch=False)
        if mode == "paragraph":
            return await in_thread(decoded(paragraph), payloads, beam)
        if beam is not None or not reader.shares_batches:  # read alone
            (result,) = await in_thread(decoded(reader.read), payloads, beam)
            return result
        x, start = await in_thread(decoded(prepared), payloads)
        prediction = await asyncio.wrap_future(reader.submit(x))  # shares a forward pass
        return answer(prediction.text, prediction.confidence, (time.perf_counter() - start) * 1000)

    @app.post("/v1/predict_batch", openapi_extra=_BATCH_BODY)
    async def predict_batch(request: Request, beam: int | None = BEAM) -> Any:
        """Read several images (a JSON list of data URLs, or several uploaded files), in order."""
        payloads = await image_payloads(request, limits, batch=True)
        return await in_thread(decoded(reader.read), payloads, beam)

    @app.post("/v1/predict_paragraph", openapi_extra=_BODY)
    async def predict_paragraph(request: Request, beam: int | None = BEAM) -> Any:
        """Read a paragraph: its lines found by paragraph_ocr, each read by the line model."""
        payloads = await image_payloads(request, limits, batch=False)
        return await in_thread(decoded(paragraph), payloads, beam)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """The model being served and the limits on what a request may send."""
        return {
            **reader.health(),
            "limits": {
                "max_bytes": limits.max_bytes,
                "max_pixels": limits.max_pixels,
                "max_batch": limits.max_batch,
            },
        }

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every failure as one JSON line; the traceback of a bug goes to the server's log only."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        ]
        return error(422, "; ".join(problems) or "invalid request")

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError) -> JSONResponse:
        return error(422, exc)

    @app.middleware("http")
    async def no_tracebacks(request: Request, call_next: Any) -> Any:
        """A bug or exhausted memory in any route: logged here, one line to the client."""
        try:
            return await call_next(request)
        except Exception as exc:
            if out_of_memory(exc):
                log.error("out of memory serving %s %s", request.method, request.url.path)
                return error(503, "out of memory; try a smaller image or later")
            log.exception("error serving %s %s", request.method, request.url.path)
            return error(500, f"internal error ({type(exc).__name__}); it is in the server's log")
