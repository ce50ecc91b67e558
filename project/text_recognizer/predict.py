"""``python -m text_recognizer.predict IMAGE... --model RUN_DIR_OR_WEIGHTS [--beam N] [--json]``.

Prints one line of text per image, or with ``--json`` one JSON object per image (text,
confidence, milliseconds). Exit codes: 0 success, 2 bad input (one ``error: ...`` line): an
unreadable, empty or oversized image, a folder given as an image, a run directory without
weights, weights that are corrupt, of a newer format or out of bounds, a model of the wrong kind,
a beam width outside 1..100; 1 out of memory; 130 interrupted.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def predict_main(argv: list[str] | None = None) -> int:
    from text_recognizer.errors import one_line_parser, run_command

    parser = one_line_parser(
        prog="python -m text_recognizer.predict",
        description="Read the text in images with a saved model (characters or lines).",
    )
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    parser.add_argument("--model", required=True, help="run directory or weights.pt")
    parser.add_argument("--beam", type=int, default=None, help="CTC beam width (line models)")
    parser.add_argument("--json", action="store_true", help="one JSON object per image")
    parser.add_argument(
        "--kind", choices=("character", "line"), default=None, help="require this model kind"
    )
    args = parser.parse_args(argv)
    return run_command(lambda: _predict(args), "use smaller images or a machine with more memory")


def _predict(args: Any) -> int:
    from text_recognizer import predictors
    from text_recognizer.errors import UserError
    from text_recognizer.preprocessing import load_image

    if args.beam is not None:
        predictors.check_beam(args.beam)
    if args.kind == "character":
        if args.beam is not None and args.beam > 1:
            raise UserError("--beam applies to CTC line models, not to --kind character")
        predictor = predictors.CharacterPredictor.from_weights(args.model)
    elif args.kind == "line":
        predictor = predictors.LinePredictor.from_weights(args.model, beam=args.beam)
    else:
        predictor = predictors.load_predictor(args.model, beam=args.beam)
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
