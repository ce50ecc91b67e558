"""``python -m text_recognizer.export RUN [--onnx model.onnx] [--opset N]``: a run as ONNX.

**Exporter**: torch's TorchScript-based one (``torch.onnx.export(..., dynamo=False)``). With torch
2.13 it exports every registered network with a dynamic batch and, where the network allows it, a
dynamic width, in under a second each. onnxruntime's outputs are not bit-equal to torch's (other
kernels, other summation orders): on this check, trained htr_crnn runs (kaggle-names, logits up to
10-20) differed by 1.1e-05 to 6.1e-05 (9.6e-07 to 3.1e-06 of the largest |logit|), a trained
lenet by 2.9e-06 (3.0e-07): float32 rounding at the logits' scale. The torch.export-based
exporter (``dynamo=True``, torch's default since 2.9) failed on three of the eight:
``torch.export`` rejects htr_crnn outright, and for crnn and resnet_crnn it fixed the width to the
example's in spite of a dynamic ``Dim`` (onnxruntime then refuses any other width); it also takes
10-20 s a network. The TorchScript exporter is deprecated: should a torch release drop or
break it, ``tests/test_export.py`` (one export per registered network) fails and names the network.

**What travels with the model**: one file. The exporter's JSON (model class and kind, network and
its arguments, ``data_config`` with the mapping and the ``preprocessing`` dict, the run config
whose ``train_args`` give the decoder, the input and output layout) is stored in the ONNX model's
own ``metadata_props`` under ``text_recognizer``, not in a sidecar: one file is written to a temp
name and renamed, so a model can never be separated from, or half-updated against, its mapping;
onnxruntime hands the metadata back (``session.get_modelmeta()``) without the onnx package, and
any ONNX tool (netron, ``onnx.load(path).metadata_props``) shows it.

**Dynamic axes**: the batch always; the width for the line networks that are convolutional over
the width and then recurrent (line_lstm_ctc, crnn, resnet_crnn, htr_crnn: a wider line gives more
CTC steps). line_cnn groups a fixed count of windows into each character position, and the
character networks end in dense layers over a 28x28 image, so their width is fixed.

The metadata also records the weights file it was exported from (its name, size and sha256, not
its host path), so the onnx runtime refuses a model.onnx whose weights.pt was replaced since.

Before the file is written, onnxruntime runs it on a check batch (and at a second width where the
width is dynamic) and its outputs must be finite and within ``TOLERANCE`` of torch's, relative to
the logits' scale (max |onnxruntime - torch| / max(1, max |torch logit|): float32 rounding grows
with the logits, and a trained network's are in the tens), else nothing is written.
Exit codes: 0 written; 2 bad input (one ``error: ...`` line): a missing run or weights, weights that
are corrupt, an output that is a folder, not ``.onnx``, or cannot be written, an opset out of range,
a network that does not export or whose export differs from torch; 1 out of memory; 130 interrupted.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from text_recognizer.errors import command

MIN_OPSET = 13  # the first at which every registered network exports (lenet: aten::unflatten)
MAX_OPSET = 20  # the TorchScript exporter's newest in torch 2.13
DEFAULT_OPSET = 17
TOLERANCE = 1e-4  # max |onnxruntime - torch| / max(1, max |torch|) over a check batch
INPUT_NAME, OUTPUT_NAME = "images", "logits"
FIXED_WIDTH_LINE_NETWORKS = frozenset({"line_cnn"})


@command
def export_main(argv: list[str] | None = None) -> int:
    from text_recognizer.errors import one_line_parser, run_command

    parser = one_line_parser(
        prog="python -m text_recognizer.export",
        description="Export a trained run's network to ONNX, with its mapping, preprocessing and "
        "decoder settings in the file's metadata (read it back with --runtime onnx).",
    )
    parser.add_argument("run", help="run directory or weights.pt")
    parser.add_argument(
        "--onnx",
        default=None,
        metavar="PATH",
        help=f"the .onnx file to write (default: {_default_name()} beside the weights)",
    )
    parser.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET})",
    )
    args = parser.parse_args(argv)
    return run_command(lambda: _export(args), "export a smaller network or use more memory")


def _default_name() -> str:
    from text_recognizer.onnx_runtime import ONNX_NAME

    return ONNX_NAME


def _export(args: Any) -> int:
    from text_recognizer import progress
    from text_recognizer.predictors import weights_path

    check_opset(args.opset)
    weights = weights_path(args.run)
    out = Path(args.onnx).expanduser() if args.onnx else weights.parent / _default_name()
    check_output(out, weights)
    report = export_onnx(weights, out, args.opset)
    progress.line(
        f"wrote {out}: {report['model']} {report['network']}, opset {args.opset}, dynamic "
        f"{' and '.join(report['dynamic'])}; max |onnxruntime - torch| {report['max_diff']:.1e} "
        f"({report['relative_diff']:.1e} of the largest |logit|, {report['scale']:.3g})"
    )
    return 0


def check_opset(opset: object) -> int:
    """An opset the exporter writes and every network needs, else a one-line UserError."""
    from text_recognizer.errors import UserError

    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise UserError(f"--opset must be from {MIN_OPSET} to {MAX_OPSET}, got {opset!r}"[:200])
    return opset


def check_output(out: Path, weights: Path) -> None:
    """Refuse, before any work, an output that is not an .onnx file name, that would replace the
    weights, or that cannot be written (a folder, a read-only place, a full disk)."""
    from text_recognizer.errors import UserError
    from text_recognizer.fileio import check_output_file

    if out.is_dir():
        raise UserError(f"--onnx {out} is a folder; give a file name such as {out / 'model.onnx'}")
    if out.suffix != ".onnx":
        raise UserError(f"--onnx {out} must end in .onnx (the onnx runtime reads only those)")
    if out.exists() and weights.exists() and out.resolve() == weights.resolve():
        raise UserError(f"--onnx {out} is the weights file being exported")
    check_output_file(out, "--onnx")


def export_onnx(weights: str | Path, out: str | Path, opset: int = DEFAULT_OPSET) -> dict[str, Any]:
    """Export the network of ``weights`` (a weights.pt or run folder) to ``out``, atomically,
    with its metadata; checked against torch before it is written. Returns what was written:
    model, network, dynamic axes and the max difference of the check."""
    import torch

    from text_recognizer.errors import ExportError, storage_error
    from text_recognizer.fileio import atomic_path
    from text_recognizer.models.base import Model
    from text_recognizer.predictors import weights_path

    check_opset(opset)
    try:
        import onnx
        import onnxruntime  # noqa: F401  (the check before writing runs the export)
    except ImportError:
        raise ExportError(
            "exporting needs onnx and onnxruntime: pip install onnx onnxruntime"
        ) from None
    from text_recognizer.onnx_runtime import weights_record

    source = weights_path(weights)
    try:
        record = weights_record(source)  # before loading: what is checked is what was exported
        record["run"] = source.resolve().parent.name
    except OSError as e:
        raise storage_error(e, source) from None
    model, config = Model.load_with_config(source)
    model.network.eval()  # traced and checked in eval mode (dropout off)
    height, width = (int(d) for d in model.input_shape[-2:])
    dynamic_width = _dynamic_width(model)
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(2, height, width, generator=generator)
    proto = onnx.load_from_string(_trace(model, example, opset, dynamic_width))
    metadata = onnx_metadata(model, config, record, opset, dynamic_width)
    entry = proto.metadata_props.add()
    entry.key, entry.value = _metadata_key(), metadata
    proto.producer_name = "text_recognizer.export"
    data = proto.SerializeToString()
    wider = [torch.rand(1, height, width + 32, generator=generator)] if dynamic_width else []
    max_diff, scale = _check(model, data, [example, *wider])
    try:
        with atomic_path(out) as tmp:
            tmp.write_bytes(data)
    except OSError as e:
        raise storage_error(e, out) from None
    dynamic = ["batch", "width"] if dynamic_width else ["batch"]
    return {
        "path": str(out),
        "model": type(model).__name__,
        "network": model.network_name,
        "dynamic": dynamic,
        "max_diff": max_diff,
        "scale": scale,
        "relative_diff": max_diff / scale,
    }


def _trace(model: Any, example: Any, opset: int, dynamic_width: bool) -> bytes:
    """The network as ONNX bytes (torch's TorchScript exporter), batch dynamic, and the width
    where the network allows it; a network that cannot be exported is one ExportError line."""
    import io
    import warnings

    import torch

    from text_recognizer.errors import ExportError

    axes_in = {0: "batch", 2: "width"} if dynamic_width else {0: "batch"}
    axes_out = {0: "batch", 1: "steps"} if dynamic_width else {0: "batch"}
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracing notes
            torch.onnx.export(
                model.network,
                (example,),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: axes_in, OUTPUT_NAME: axes_out},
            )
    except Exception as e:  # an operator without an ONNX form, a model over protobuf's 2 GB
        raise ExportError(
            f"network {model.network_name!r} cannot be exported to ONNX opset {opset}: "
            f"{type(e).__name__}: {str(e)[:200]}"
        ) from None
    return buffer.getvalue()


def _check(model: Any, data: bytes, inputs: list[Any]) -> tuple[float, float]:
    """(max difference, logit scale) of onnxruntime on ``data`` against torch on ``inputs``;
    an ExportError (nothing written) when it is not finite or over TOLERANCE of the scale."""
    import math

    from text_recognizer.errors import ExportError

    max_diff, scale = _compare(model.network, data, inputs)
    relative = max_diff / scale
    if math.isnan(relative):
        raise ExportError(
            f"the ONNX export of {model.network_name!r} gives non-finite outputs (NaN or inf) "
            "on the check batch, or torch does; nothing written"
        )
    if not relative <= TOLERANCE:
        raise ExportError(
            f"the ONNX export of {model.network_name!r} differs from torch by {max_diff:.2e} "
            f"({relative:.2e} of the largest |logit|, more than {TOLERANCE:.0e}); nothing written"
        )
    return max_diff, scale


def _metadata_key() -> str:
    from text_recognizer.onnx_runtime import ONNX_METADATA_KEY

    return ONNX_METADATA_KEY


def _dynamic_width(model: Any) -> bool:
    """Lines whose network is convolutional over the width, then recurrent (see the docstring)."""
    from text_recognizer.models.character_model import CharacterModel

    if isinstance(model, CharacterModel):
        return False
    return model.network_name not in FIXED_WIDTH_LINE_NETWORKS


def onnx_metadata(
    model: Any, config: dict[str, Any], weights: dict[str, Any], opset: int, dynamic_width: bool
) -> str:
    """The JSON stored in the model: what ``onnx_runtime.load_onnx_model`` rebuilds the Model and
    its decoder from (the fields weights.pt carries, less the tensors), plus the layout of the
    input and output for readers in other languages. ``weights``: the exported file's
    ``onnx_runtime.weights_record`` (name, size, sha256), which the runtime checks a weights file
    beside the model against; the run folder is stored by name only, never as a host path."""
    import json

    import torch

    from text_recognizer.decoding import decoder_from
    from text_recognizer.models.character_model import CharacterModel
    from text_recognizer.onnx_runtime import ONNX_FORMAT

    data_config = {**model.data_config, "preprocessing": model.preprocessing}
    height, width = (int(d) for d in model.input_shape[-2:])
    character = isinstance(model, CharacterModel)
    decoder = decoder_from((config.get("train_args") or {}) if not character else {})
    out_shape = (
        ["batch", len(model.mapping)] if character else ["batch", "steps", len(model.mapping)]
    )
    payload = {
        "format": ONNX_FORMAT,
        "model": type(model).__name__,
        "kind": "character" if character else "line",
        "network": model.network_name,
        "network_args": model.network_args,
        "data_config": data_config,
        "config": config,
        "decoder": decoder.describe(),
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", height, "width" if dynamic_width else width],
            "dtype": "float32",
            "values": "uint8 pixels / 255, white ink on black, after data_config.preprocessing",
        },
        "output": {
            "name": OUTPUT_NAME,
            "shape": out_shape,
            "values": "logits: softmax over the last axis"
            + ("" if character else "; CTC blank or fixed-length padding per data_config"),
        },
        "exporter": f"torch.onnx TorchScript exporter, torch {torch.__version__}",
        "opset": opset,
        "source": weights.get("run", ""),  # the run folder's name: no host path
        "weights": {k: weights[k] for k in ("name", "bytes", "sha256")},
    }
    return json.dumps(payload, ensure_ascii=False, default=str)


def _compare(network: Any, data: bytes, batches: list[Any]) -> tuple[float, float]:
    """(max |onnxruntime - torch|, max(1, max |torch|)) over ``batches``, the serialized model
    run from memory: the difference and the logits' scale it is judged against. Any non-finite
    output (either side) gives a NaN difference, a shape that differs an infinite one."""
    import numpy as np
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    worst, scale = 0.0, 1.0
    for x in batches:
        with torch.no_grad():
            expected = network(x).numpy()
        (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
        if got.shape != expected.shape:
            return float("inf"), scale
        if not (np.isfinite(got).all() and np.isfinite(expected).all()):
            return float("nan"), scale  # max() would keep a finite worst over a NaN
        worst = max(worst, float(np.abs(got - expected).max()))
        scale = max(scale, float(np.abs(expected).max()))
    return worst, scale


if __name__ == "__main__":
    sys.exit(export_main())
