"""``python -m text_recognizer.predict IMAGE... --model RUN_DIR_OR_WEIGHTS [--beam N] [--json]``.

Prints one line of text per image, or with ``--json`` one JSON object per image (text,
confidence, milliseconds). Exit codes: 0 success, 2 bad input (one ``error: ...`` line): an
unreadable or empty image, a run directory without weights, weights of a newer format, a model
of the wrong kind.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def predict_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
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

    from text_recognizer.errors import UserError, print_error

    try:
        from text_recognizer import predictors

        if args.kind == "character":
            predictor = predictors.CharacterPredictor.from_weights(args.model)
        elif args.kind == "line":
            predictor = predictors.LinePredictor.from_weights(args.model, beam=args.beam)
        else:
            predictor = predictors.load_predictor(args.model, beam=args.beam)
        prepared = [predictor.prepare(path) for path in args.images]  # all checked before output
        for path, x in zip(args.images, prepared, strict=True):
            start = time.perf_counter()
            result = predictor.predict_arrays(x[None])[0]
            ms = (time.perf_counter() - start) * 1000
            if args.json:
                row = {"image": path, "text": result.text, "confidence": result.confidence}
                print(json.dumps({**row, "ms": round(ms, 3)}, ensure_ascii=False))
            else:
                print(result.text)
    except UserError as e:
        return print_error(e)
    return 0


if __name__ == "__main__":
    sys.exit(predict_main())
