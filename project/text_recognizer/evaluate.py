"""``python -m text_recognizer.evaluate RUN_DIR [--dataset NAME] [--dataset-args JSON] [--split test|validation]``
``[--limit N] [--json OUT] [--beam N] [--lm ARPA [--lm-weight W] [--lm-bonus B]]``.

Runs a saved model over a dataset split once (``Model.read_split``: the loss, the predictions and
the metrics from one pass, with the predictor's decoder) and reports the metrics, the time per
item and the worst examples. ``read_split`` turns outputs into text with the same method the
predict command's ``Model.predict`` uses, so a test can check that images written out and read
back through ``python -m text_recognizer.predict`` get exactly these predictions. ``--beam`` and
``--lm`` choose the decoding as they do for predict (default: the decoding the run was trained
with), so an existing run's test split can be read with a character LM.

``--dataset NAME`` (or ``"dataset"`` in ``--dataset-args``) reads another dataset of the same kind
whose characters the model has (its labels are re-indexed into the model's mapping), e.g. a model
pretrained on synthetic name lines over the real Kaggle names; its arguments start from that
dataset's defaults, with the model's image size and ``max_length`` where the dataset takes them,
and ``--dataset-args`` on top.
Exit codes: 0 success, 2 bad input (one line).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def evaluate_run(
    run: str | Path,
    dataset_args: dict[str, Any] | None = None,
    split: str = "test",
    limit: int | None = None,
    worst: int = 10,
    beam: int | None = None,
    lm: Any = None,
    dataset: str | None = None,
    runtime: str = "torch",
) -> dict[str, Any]:
    """Metrics, timing, worst examples and per-item predictions of a run on a dataset split
    (of its own dataset, or of ``dataset``), read with ``beam`` / ``lm`` (a
    predictors.LmChoice) or the run's own decoding; ``runtime="onnx"``: the network of the
    run's exported model.onnx (or an .onnx given as ``run``) in onnxruntime."""
    from text_recognizer.config import TrainArgs
    from text_recognizer.predictors import LinePredictor, load_predictor

    predictor = load_predictor(run, beam, lm, runtime)
    model = predictor.model
    name, args, x, y = read_split_arrays(predictor, run, dataset_args, split, limit, dataset)
    batch = TrainArgs.from_config(
        {"eval_batch_size": predictor.batch_size(512), "mixed_precision": "off"}
    )
    start = time.perf_counter()
    result = model.read_split(x, y, batch, decoder=predictor.decoder)
    seconds = time.perf_counter() - start
    items = [
        {"index": i, "target": t, "prediction": p, "confidence": round(c, 6)}
        for i, (t, p, c) in enumerate(
            zip(result.targets, result.predictions, result.confidences, strict=True)
        )
    ]
    if isinstance(predictor, LinePredictor):
        from text_recognizer.metrics import cer

        for item in items:
            item["cer"] = round(cer(item["prediction"], item["target"]), 4)
        worst_items = sorted(items, key=lambda r: (-r["cer"], -len(r["target"]), r["index"]))
    else:
        wrong = [r for r in items if r["prediction"] != r["target"]]
        worst_items = sorted(wrong, key=lambda r: (-r["confidence"], r["index"]))
    decoder = predictor.decoder
    return {
        "run": str(run),
        "runtime": runtime,
        "decoder": decoder.describe(),
        "dataset": name,
        "dataset_args": args,
        "split": split,
        "items": len(items),
        "metrics": result.metrics,
        "ms_per_item": 1000 * seconds / len(items),
        "worst": worst_items[:worst],
        "predictions": items,
    }


def read_split_arrays(
    predictor: Any,
    run: str | Path,
    dataset_args: dict[str, Any] | None,
    split: str,
    limit: int | None = None,
    dataset: str | None = None,
) -> tuple[str, dict[str, Any], Any, Any]:
    """(dataset name, dataset_args, x, y) of a run's dataset split, or of another ``dataset``'s,
    checked against the model's kind, input shape and mapping: what evaluation and LM tuning
    (``text_recognizer.lm tune``) both read."""
    from text_recognizer import paths
    from text_recognizer.datasets import DATASET_ALIASES, DATASETS
    from text_recognizer.errors import UserError
    from text_recognizer.registry import canonical_name, lookup
    from text_recognizer.spec import validate_args

    model, config = predictor.model, predictor.config
    own = model.data_config.get("dataset") or config.get("dataset")
    name = canonical_name(DATASETS, dataset, "dataset", DATASET_ALIASES) if dataset else own
    if not name:
        raise UserError(f"{run}: the weights do not name their dataset; give --dataset NAME")
    entry = lookup(DATASETS, name, "dataset")
    kind = model.data_config.get("kind")
    if kind and entry.kind != kind:
        same = ", ".join(n for n, e in sorted(DATASETS.items()) if e.kind == kind)
        raise UserError(f"--dataset {name} holds {entry.kind}, but the model reads {kind} ({same})")
    if name == own:
        args = {**(config.get("dataset_args") or {}), **(dataset_args or {})}
    else:  # another dataset: its own defaults, at the model's sizes, then --dataset-args
        args = {**_model_sizes(model, entry.args), **(dataset_args or {})}
    data_dir = args.get("data_dir")
    if data_dir and not Path(data_dir).expanduser().exists():
        for base in (paths.PROJECT_ROOT,):  # configs written relative to the project root
            if (base / data_dir).exists():
                args["data_dir"] = str(base / data_dir)
    data = entry.load()(**validate_args(args, entry.args, "dataset_args"))
    data.load_or_generate_data()
    unknown = [c for c in data.mapping if c not in model.mapping]
    if unknown:
        raise UserError(
            f"{name} holds characters the model cannot read ({''.join(unknown)[:20]!r}); a model "
            "is evaluated on data whose characters it has"
        )
    x, y = (data.x_test, data.y_test) if split == "test" else (data.x_val, data.y_val)
    if x is None or len(x) == 0:
        raise UserError(f"the {split} split of {name} is empty")
    if limit is not None:
        x, y = x[:limit], y[:limit]
    if list(data.mapping) != list(model.mapping):  # the same characters in another order, or fewer
        import numpy as np

        index = {c: i for i, c in enumerate(model.mapping)}
        y = np.asarray([index[c] for c in data.mapping], dtype=np.int64)[np.asarray(y)]
    if tuple(x.shape[1:]) != tuple(model.input_shape[-2:]):
        raise UserError(
            f"{name} {split} images are {tuple(x.shape[1:])}, the model takes "
            f"{tuple(model.input_shape[-2:])}; pass matching --dataset-args"
        )
    return name, args, x, y


def _model_sizes(model: Any, spec: dict[str, Any]) -> dict[str, int]:
    """The dataset arguments that give the model's own input size and label length, for those
    ``spec`` (another dataset's) takes."""
    height, width = (int(d) for d in model.input_shape[-2:])
    sizes = {"image_height": height, "image_width": width, "image_size": height}
    if model.data_config.get("max_length") is not None:
        sizes["max_length"] = int(model.data_config["max_length"])
    if height != width:
        sizes.pop("image_size")
    return {k: v for k, v in sizes.items() if k in spec}


def format_report(report: dict[str, Any]) -> str:
    decoder = report.get("decoder") or {}
    how = ""
    if decoder.get("method") == "beam":
        how = f", beam {decoder['beam_width']}"
        if decoder.get("lm"):
            how += f" with LM {decoder['lm']} (weight {decoder['lm_weight']:g}, bonus {decoder['lm_bonus']:g})"
    lines = [
        f"{report['dataset']} {report['split']}: {report['items']} items{how}, "
        f"{report['ms_per_item']:.3f} ms per item",
        "  " + "  ".join(f"{k} {v:.4f}" for k, v in report["metrics"].items()),
        "worst examples:",
    ]
    for r in report["worst"]:
        extra = f" cer {r['cer']:.3f}" if "cer" in r else ""
        lines.append(
            f"  #{r['index']}: target {r['target']!r} predicted {r['prediction']!r} "
            f"(confidence {r['confidence']:.3f}{extra})"
        )
    return "\n".join(lines)


def evaluate_main(argv: list[str] | None = None) -> int:
    from text_recognizer.errors import one_line_parser, run_command
    from text_recognizer.predictors import add_lm_arguments

    parser = one_line_parser(description="Evaluate a saved run on a dataset split.")
    parser.add_argument("run", help="run directory or weights.pt")
    parser.add_argument(
        "--dataset",
        default=None,
        help="another dataset to read (same kind and characters as the model; default: the run's)",
    )
    parser.add_argument(
        "--dataset-args",
        default="{}",
        help='JSON overriding the run\'s dataset_args ("dataset": NAME as --dataset)',
    )
    parser.add_argument("--split", choices=("test", "validation"), default="test")
    parser.add_argument("--limit", type=int, default=None, help="first N items only")
    parser.add_argument("--worst", type=int, default=10, help="how many worst examples to show")
    parser.add_argument("--json", dest="json_out", default=None, help="write the full report")
    parser.add_argument(
        "--beam", type=int, default=None, help="CTC beam width (default: the run's decoding)"
    )
    add_lm_arguments(parser)
    parser.add_argument(
        "--runtime",
        choices=("torch", "onnx"),
        default="torch",
        help="run the network in torch (weights.pt) or onnxruntime (an exported model.onnx)",
    )
    args = parser.parse_args(argv)
    return run_command(lambda: _evaluate(args))


def _evaluate(args: argparse.Namespace) -> int:
    """Check the arguments and the --json path before the work; a failed write after it is 1."""
    from text_recognizer import progress
    from text_recognizer.errors import StorageError, UserError, print_error
    from text_recognizer.predictors import check_beam, lm_choice

    try:
        overrides = json.loads(args.dataset_args)
    except (json.JSONDecodeError, RecursionError) as e:
        raise UserError(f"--dataset-args is not valid JSON: {getattr(e, 'msg', e)}") from None
    if not isinstance(overrides, dict):
        raise UserError("--dataset-args must be a JSON object")
    dataset = overrides.pop("dataset", None)
    if dataset is not None and not isinstance(dataset, str):
        raise UserError(f'--dataset-args "dataset" must be a dataset name, got {dataset!r}'[:200])
    if dataset is not None and args.dataset is not None and dataset != args.dataset:
        raise UserError(
            f'--dataset {args.dataset} and --dataset-args "dataset": {dataset!r} differ'
        )
    dataset = args.dataset or dataset
    if dataset is not None:  # an unknown name: one line now, before the model loads
        from text_recognizer.datasets import DATASET_ALIASES, DATASETS
        from text_recognizer.registry import canonical_name

        canonical_name(DATASETS, dataset, "dataset", DATASET_ALIASES)
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be >= 1, got {args.limit}")
    if args.worst < 0:
        raise UserError(f"--worst must be >= 0, got {args.worst}")
    if args.beam is not None:
        check_beam(args.beam)
    lm = lm_choice(args)
    if args.json_out:
        check_report_path(args.json_out, args.run)
    report = evaluate_run(
        args.run,
        overrides,
        args.split,
        args.limit,
        args.worst,
        args.beam,
        lm,
        dataset,
        args.runtime,
    )
    print(format_report(report))
    if args.json_out:
        try:
            write_report(args.json_out, report)
        except StorageError as e:  # the disk filled while evaluating: the run failed
            print_error(e)
            return 1
        progress.line(f"wrote {args.json_out}")
    return 0


def check_report_path(out: str, run: str) -> None:
    """``--json`` must be a writable file, and neither the weights being evaluated nor one of
    the run's own records (config.json, summary.json, checkpoints, ...) or plots."""
    from text_recognizer.errors import UserError
    from text_recognizer.fileio import check_output_file
    from text_recognizer.run.records import RECORD_NAMES

    weights = Path(run) / "weights.pt" if Path(run).is_dir() else Path(run)
    if Path(out).is_file() and weights.is_file() and Path(out).samefile(weights):
        raise UserError(f"--json {out} is the weights file being evaluated; give another name")
    target = Path(out).expanduser().resolve()
    if target.parent == weights.resolve().parent and (
        target.name in RECORD_NAMES or target.suffix == ".png"
    ):
        raise UserError(
            f"--json {out} is one of the run's own records; give another name (e.g. eval.json)"
        )
    check_output_file(out, "--json")


def write_report(out: str, report: dict[str, Any]) -> None:
    from text_recognizer.errors import storage_error
    from text_recognizer.fileio import write_text_atomic

    try:
        write_text_atomic(out, json.dumps(report, indent=1, ensure_ascii=False))
    except OSError as e:
        raise storage_error(e, out) from None


if __name__ == "__main__":
    sys.exit(evaluate_main())
