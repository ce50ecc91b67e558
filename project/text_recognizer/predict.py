"""``python -m text_recognizer.predict IMAGE... --model RUN [--beam N] [--lm ARPA] [--json]
[--runtime {torch,onnx}]``.

Prints one line of text per image, or with ``--json`` one JSON object per image (text,
confidence, milliseconds). Exit codes: 0 success, 2 bad input (one ``error: ...`` line): an
unreadable, empty or oversized image, a folder given as an image, a run directory without
weights, weights that are corrupt, of a newer format or out of bounds, a model of the wrong kind,
a beam width outside 1..100, a missing or corrupt ``--lm`` file, an ``--lm-weight`` outside 0..10,
an .onnx given without ``--runtime onnx``, an exported model whose graph disagrees with its
metadata or whose run's weights.pt changed since it was exported; 1 out of memory; 130
interrupted. ``--lm`` (with ``--lm-weight``, ``--lm-bonus``) reads with beam search (``--beam``,
default 16) and a character n-gram LM. ``--runtime onnx`` runs the network
of an exported model (``python -m text_recognizer.export``: the run folder's model.onnx, or an
.onnx given as --model) in onnxruntime; preprocessing and decoding are the same code as torch's.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def predict_main(argv: list[str] | None = None) -> int:
    from text_recognizer import predictors
    from text_recognizer.errors import one_line_parser, run_command

    parser = one_line_parser(
        prog="python -m text_recognizer.predict",
        description="Read the text in images with a saved model (characters or lines).",
    )
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    parser.add_argument(
        "--model", required=True, help="run directory, weights.pt, or (--runtime onnx) an .onnx"
    )
    parser.add_argument("--beam", type=int, default=None, help="CTC beam width (line models)")
    predictors.add_lm_arguments(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object per image")
    parser.add_argument(
        "--kind", choices=("character", "line"), default=None, help="require this model kind"
    )
    parser.add_argument(
        "--runtime",
        choices=predictors.RUNTIMES,
        default="torch",
        help="run the network in torch (weights.pt) or onnxruntime (an exported model.onnx)",
    )
    args = parser.parse_args(argv)
    return run_command(lambda: _predict(args), "use smaller images or a machine with more memory")


def _predict(args: Any) -> int:
    from text_recognizer import predictors
    from text_recognizer.errors import UserError
    from text_recognizer.preprocessing import load_image

    if args.beam is not None:
        predictors.check_beam(args.beam)
    lm = predictors.lm_choice(args)
    if args.kind == "character":
        if args.beam is not None and args.beam > 1:
            raise UserError("--beam applies to CTC line models, not to --kind character")
        if lm is not None:
            raise UserError("--lm applies to CTC line models, not to --kind character")
        predictor = predictors.CharacterPredictor.from_weights(args.model, runtime=args.runtime)
    elif args.kind == "line":
        predictor = predictors.LinePredictor.from_weights(
            args.model, beam=args.beam, lm=lm, runtime=args.runtime
        )
    else:
        predictor = predictors.load_predictor(
            args.model, beam=args.beam, lm=lm, runtime=args.runtime
        )
    for path in args.images:  # all checked before any output; read again one at a time below
        load_image(path)
    for path in args.images:
        x = predictor.prepare(path)
        start = time.perf_counter()
        result = predictor.predict_arrays(x[None])[0]
        ms = (time.perf_counter() - start) * 1000
        if args.json:
            row = {"image": path, "text": result.text, "confidence": result.confidence}
            print(json.dumps({**row, "ms": round(ms, 3)}, ensure_ascii=False))
        else:
            print(result.text)
    return 0


if __name__ == "__main__":
    sys.exit(predict_main())
