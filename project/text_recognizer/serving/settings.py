"""The one place for the server's defaults and limits (the command's flags read them from here).

No torch or FastAPI here: ``serve --help`` and a bad flag answer at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from text_recognizer import onnx_runtime, predictors
from text_recognizer.preprocessing import MAX_IMAGE_PIXELS

DEFAULT_HOST = "127.0.0.1"  # loopback: exposing a model to a network is an explicit choice
DEFAULT_PORT = 8000
# What runs the network: the predictors' runtimes (torch, or onnx on an exported model).
RUNTIMES: tuple[str, ...] = predictors.RUNTIMES
DEFAULT_RUNTIME = "torch"
# One intra-op thread per request: requests already run in parallel threads, and on a small
# machine several requests each asking for every core only fight over them.
DEFAULT_THREADS = 1
MAX_THREADS: int = onnx_runtime.MAX_THREADS
# A request body (JSON with base64 data URLs, multipart or raw image bytes): the 16 MiB the
# project allows a Kaggle or IAM image file; base64 takes 4/3 of the image's bytes.
DEFAULT_MAX_BYTES = 16 << 20
MAX_BYTES_CEILING = 1 << 30
# Decoded pixels per image, checked on the image header before decoding. The default, 16.8 M
# (4096 x 4096; an IAM form is 8.8 M), bounds what MAX_READING decodes hold at once (a pixel is
# several bytes while it is converted: 4 such images ~1.5 GB); the project's own bound
# (preprocessing.MAX_IMAGE_PIXELS, 67 M) is the most the flag allows.
DEFAULT_MAX_PIXELS = 1 << 24
MAX_PIXELS_CEILING = MAX_IMAGE_PIXELS
# Model threads reading single-image requests (each takes what is queued as one batch): one per
# usable core by default, with one intra-op thread each (DEFAULT_THREADS).
DEFAULT_WORKERS = 0  # 0: one per usable core
MAX_WORKERS = 64
# Single-image requests read in one forward pass at most (a 64 x 1024 line is 64 kB as uint8).
MAX_SHARED_BATCH = 8
# Images per /v1/predict_batch request.
MAX_BATCH = 64
# Files or fields in one multipart body (Starlette's parser refuses more, 400).
MAX_FORM_PARTS = 256
# Requests decoded and read at once; more wait their turn. The work is CPU-bound, so more would
# not finish sooner, and each may hold a decoded image of up to max_pixels (4 bytes a pixel).
MAX_READING = 4
# A request's head (request line and headers) must arrive within this many seconds, from the
# connection's start or the previous response (slowloris clients hold no descriptor for long).
HEADER_TIMEOUT_S = 10.0
# Connections and requests at once (more are answered 503): with --max-bytes, what bounds the
# memory of bodies in flight (64 x 16 MiB).
MAX_CONNECTIONS = 64
# Seconds a client may take to send its body (a slow sender holds a connection, not a thread).
BODY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Limits:
    """What a request may send (body bytes, pixels per image, images per batch, send time) and
    how many are read at once."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_batch: int = MAX_BATCH
    max_reading: int = MAX_READING
    body_timeout_s: float = BODY_TIMEOUT_S
