"""``python -m text_recognizer.serve --model RUN [--host 127.0.0.1] [--port 8000] [--beam N]
[--lm ARPA] [--runtime torch|onnx] [--max-bytes B] [--max-pixels P] [--threads N] [--workers N]
[--batch N]``.

Serves a saved model over HTTP (FastAPI on uvicorn): ``POST /v1/predict``,
``/v1/predict_batch``, ``/v1/predict_paragraph``, ``GET /healthz``, the page at ``/`` and the
OpenAPI docs at ``/docs`` (see ``serving/app.py``). Prints the URL it serves on; Ctrl-C stops it.
Exit codes: 2 for a bad flag, a missing run folder, unreadable weights, an LM that cannot be
loaded or a port in use (one ``error: ...`` line); 1 out of memory; 0 when Ctrl-C (or SIGTERM)
stops it.
"""

from __future__ import annotations

import argparse
import sys

from text_recognizer.errors import command


@command
def serve_main(argv: list[str] | None = None) -> int:
    from text_recognizer import predictors
    from text_recognizer.errors import one_line_parser, run_command
    from text_recognizer.serving import settings

    parser = one_line_parser(
        prog="python -m text_recognizer.serve",
        description="Serve a saved model over HTTP: a JSON API and a web page.",
    )
    parser.add_argument("--model", required=True, help="run directory or weights file")
    parser.add_argument(
        "--host", default=settings.DEFAULT_HOST, help=f"address (default {settings.DEFAULT_HOST})"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=settings.DEFAULT_PORT,
        help=f"port, 0 for any free one (default {settings.DEFAULT_PORT})",
    )
    parser.add_argument("--beam", type=int, default=None, help="CTC beam width (line models)")
    predictors.add_lm_arguments(parser)
    parser.add_argument(
        "--runtime",
        choices=settings.RUNTIMES,
        default=settings.DEFAULT_RUNTIME,
        help=f"what runs the network (default {settings.DEFAULT_RUNTIME})",
    )
    parser.add_argument(
        "--max-bytes",
        type=int,
        default=settings.DEFAULT_MAX_BYTES,
        help=f"largest request body in bytes (default {settings.DEFAULT_MAX_BYTES:,})",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=settings.DEFAULT_MAX_PIXELS,
        help=f"largest image in pixels, checked before decoding (default "
        f"{settings.DEFAULT_MAX_PIXELS:,}, at most {settings.MAX_PIXELS_CEILING:,})",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=settings.DEFAULT_THREADS,
        help=f"threads per request, torch's or onnxruntime's (default "
        f"{settings.DEFAULT_THREADS}; requests run in parallel)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=settings.MAX_SHARED_BATCH,
        help=f"single images read together in one forward pass at most (default "
        f"{settings.MAX_SHARED_BATCH}; 1 reads each request alone, so every answer is bit for "
        "bit what predict answers)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=settings.DEFAULT_WORKERS,
        help="model threads: single images that arrive while the model is busy are read together "
        "in one batch by the next free one (default 0: one per usable core)",
    )
    args = parser.parse_args(argv)
    return run_command(lambda: _serve(args), "use a smaller model or a machine with more memory")


def _check(args: argparse.Namespace) -> None:
    """Every flag within bounds, before the port is taken or the model loaded."""
    from text_recognizer.errors import UserError
    from text_recognizer.serving import settings

    bounds = (
        ("--port", args.port, 0, 65535),
        ("--max-bytes", args.max_bytes, 1, settings.MAX_BYTES_CEILING),
        ("--max-pixels", args.max_pixels, 1, settings.MAX_PIXELS_CEILING),
        ("--threads", args.threads, 1, settings.MAX_THREADS),
        ("--workers", args.workers, 0, settings.MAX_WORKERS),
        ("--batch", args.batch, 1, settings.MAX_BATCH),
    )
    for flag, value, low, high in bounds:
        if not low <= value <= high:
            raise UserError(f"{flag} must be from {low:,} to {high:,}, got {value}")


def _serve(args: argparse.Namespace) -> int:
    from text_recognizer import predictors, progress
    from text_recognizer.errors import Interrupted
    from text_recognizer.serving import server, settings

    _check(args)
    if args.beam is not None:
        predictors.check_beam(args.beam)
    lm = predictors.lm_choice(args)
    if args.runtime == "onnx":  # a missing model is one line now, before torch loads
        from text_recognizer.onnx_runtime import onnx_path

        onnx_path(args.model)
    else:
        predictors.weights_path(args.model)
    server.raise_open_files_limit()
    sock = server.bind_socket(args.host, args.port)
    try:
        import torch

        from text_recognizer.leasing.cpu_share import usable_cores
        from text_recognizer.serving.app import create_app
        from text_recognizer.serving.reader import load_reader

        torch.set_num_threads(args.threads)  # once, for the whole process: never per request
        workers = args.workers or usable_cores()
        reader = load_reader(
            args.model, args.beam, lm, args.runtime, args.threads, workers, args.batch
        )
        limits = settings.Limits(max_bytes=args.max_bytes, max_pixels=args.max_pixels)
        app = create_app(reader, limits)
        progress.line(
            f"serving the {reader.kind} model {args.model} ({reader.decoder_name()}, "
            f"{args.runtime}, {workers} model thread(s)) on {server.url_of(sock)} "
            "(docs at /docs; Ctrl-C stops)"
        )
        try:
            server.uvicorn_server(app).run(sockets=[sock])
        except (KeyboardInterrupt, Interrupted):  # Ctrl-C is how a server is stopped: exit 0
            progress.line("stopped")
        finally:
            reader.close()
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(serve_main())
