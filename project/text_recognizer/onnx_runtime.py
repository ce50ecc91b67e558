"""The onnx runtime of the predictors: an exported model (``python -m text_recognizer.export``)
read back as a `Model` whose network is an onnxruntime session.

The exporter stores in the ``.onnx`` file's metadata what ``weights.pt`` carries besides the
weights (model class, network and arguments, data config with mapping and preprocessing, the run
config); here it is checked as a weights file's fields are (a model from elsewhere is untrusted),
the Model is rebuilt from it, and `OnnxNetwork` takes the torch network's place, so
preprocessing, batching and decoding stay the predictors' one path for both runtimes.

The graph itself is checked against the metadata at load (its input's height, and width where
fixed; its output's rank and class count), and a model whose weights file still sits beside it
(a run folder's model.onnx) must have been exported from that very file (its size and sha256 are
in the metadata): a stale export is refused, not read silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from text_recognizer.errors import DataError, UserError, one_line

ONNX_NAME = "model.onnx"  # a run folder's exported model: python -m text_recognizer.export RUN
ONNX_METADATA_KEY = "text_recognizer"  # the ONNX metadata_props entry holding the JSON below
ONNX_FORMAT = 1
MAX_ONNX_METADATA = 16 << 20  # characters of that JSON (a mapping and a run config: ~10 KB)
MAX_THREADS = 256  # a session's intra-op threads
EXPORTED_WEIGHTS = "weights.pt"  # the weights file name assumed when the metadata names none


def weights_record(path: Path) -> dict[str, Any]:
    """What the metadata records of the weights file a model is exported from: its name (no
    folder: a host path is not the model's business), size and sha256."""
    import hashlib

    hasher = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            hasher.update(chunk)
            size += len(chunk)
    return {"name": path.name, "bytes": size, "sha256": hasher.hexdigest()}


def check_threads(threads: object) -> int:
    """A thread count from 1 to MAX_THREADS, else a one-line UserError."""
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise UserError(
            f"threads must be an integer from 1 to {MAX_THREADS}, got {threads!r}"[:200]
        )
    return threads


def onnx_path(path: str | Path) -> Path:
    """A run directory (its model.onnx) or an .onnx file -> the file; a one-line error if none."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / ONNX_NAME
        if p.is_dir():
            raise UserError(f"{p} is a folder, not an ONNX model")
        if not p.is_file():
            raise UserError(
                f"run directory {p.parent} has no {ONNX_NAME}; export it first: "
                f"python -m text_recognizer.export {p.parent}"
            )
        return p
    if p.exists() and not p.is_file():
        raise UserError(f"{p} is not a regular file (a device or pipe); give an .onnx file")
    if not p.is_file():
        raise UserError(f"no run directory or ONNX model at {p}")
    if p.suffix != ".onnx":
        raise UserError(
            f"{p} is not an .onnx file; the onnx runtime reads what "
            "python -m text_recognizer.export writes (a run folder or its model.onnx)"
        )
    return p


class OnnxNetwork:
    """Stands in for ``Model.network``: the exported network run by an onnxruntime session.

    It takes and returns torch tensors like the module it replaces, so the model's own batching,
    scaling (``Model.preprocess``) and decoding (``read_outputs``) run unchanged around it. It
    holds no mutable state: ``eval``/``train`` only answer what ``Model.forward_batches`` asks,
    and ``InferenceSession.run`` is safe to call from several threads at once.
    """

    training = False  # an exported graph is always in eval mode (dropout off, batch-norm frozen)

    def __init__(self, session: Any, path: Path, output_rank: int, classes: int) -> None:
        self.session = session
        self.path = path
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name
        self.output_rank = output_rank
        self.classes = classes

    def eval(self) -> OnnxNetwork:
        return self

    def train(self, mode: bool = True) -> OnnxNetwork:
        if mode:
            raise RuntimeError("an ONNX-exported network cannot be trained")
        return self

    def __call__(self, x: Any) -> Any:
        """(N, H, W) float images in [0, 1] -> the network's outputs, as a torch tensor."""
        import torch

        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        try:
            (out,) = self.session.run([self.output_name], {self.input_name: array})
        except MemoryError:
            raise
        except Exception as e:  # onnxruntime's InvalidArgument, Fail, RuntimeException, ...
            if "alloc" in str(e).lower():  # its out-of-memory is a RuntimeException
                raise MemoryError(f"ONNX model {self.path}: {one_line(e, 160)}") from None
            raise DataError(
                f"ONNX model {self.path} cannot run on images of shape {list(array.shape)}: "
                f"{one_line(e, 200)}"
            ) from None
        if (
            out.ndim != self.output_rank
            or out.shape[0] != len(array)
            or out.shape[-1] != self.classes
        ):
            raise DataError(
                f"ONNX model {self.path} answered shape {list(out.shape)} for {len(array)} images; "
                f"its metadata declares {self.classes} classes"
            )
        return torch.from_numpy(out)


def load_onnx_model(path: str | Path, threads: int | None = None) -> tuple[Any, dict[str, Any]]:
    """(Model, run config) of an exported ONNX model: the Model built from the metadata the
    exporter stored in the file (the same fields weights.pt carries, checked the same way), its
    network replaced by an :class:`OnnxNetwork` on an onnxruntime session."""
    p = onnx_path(path)
    session = onnx_session(p, threads)
    payload = onnx_metadata(session, p)
    check_exported_weights(payload, p)
    model = _model_from_metadata(payload, p)
    check_graph(session, model, p)
    # (N, classes) for characters, (N, steps, classes) for lines
    model.network = OnnxNetwork(session, p, len(model.output_shape) + 1, len(model.mapping))
    return model, payload["config"]


def check_exported_weights(payload: dict[str, Any], path: Path) -> None:
    """Refuse a model whose weights file sits beside it (a run folder's model.onnx) but is not
    the file it was exported from (retrained, fine-tuned, replaced): reading it would silently
    give the old network's texts. An .onnx with no weights beside it is read as it is."""
    record = payload.get("weights")
    name = record.get("name") if isinstance(record, dict) else None
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        name = EXPORTED_WEIGHTS
    beside = path.parent / name
    if not beside.is_file():
        return
    target = str(path.parent) if name == EXPORTED_WEIGHTS else str(beside)
    if path.name != ONNX_NAME:
        target += f" --onnx {path}"
    again = f"export it again: python -m text_recognizer.export {target}"
    size, sha = (record.get("bytes"), record.get("sha256")) if isinstance(record, dict) else (0, 0)
    if not isinstance(size, int) or not isinstance(sha, str):
        raise UserError(f"{path} does not record which {name} it was exported from; {again}")
    try:
        same = beside.stat().st_size == size and weights_record(beside)["sha256"] == sha
    except OSError as e:
        raise UserError(
            f"cannot read {beside} to check {path} against it: {one_line(e, 120)}"
        ) from None
    if not same:
        raise UserError(f"{path} was exported from another {name}; {again}")


def check_graph(session: Any, model: Any, path: Path) -> None:
    """The graph's declared input and output against the metadata the Model was built from: one
    (N, H, W) input whose H (and W, where fixed) are the preprocessed images' size, one output of
    the model's rank whose class count (where declared) is the mapping's. A mismatch would fail
    on every image inside onnxruntime; here it is one line at load."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    where = f"cannot read ONNX model {path}"
    if len(inputs) != 1 or len(outputs) != 1 or len(inputs[0].shape) != 3:
        raise DataError(
            f"{where}: it takes {len(inputs)} inputs and gives {len(outputs)} outputs; an "
            "exported model takes one (N, H, W) batch of images and gives one output"
        )
    graph_h, graph_w = inputs[0].shape[1:]
    pre = model.preprocessing
    declared = {
        "input_shape": tuple(int(d) for d in model.input_shape[-2:]),
        "preprocessing": (int(pre["height"]), int(pre["width"])),
    }
    for field, (height, width) in declared.items():
        if (isinstance(graph_h, int) and graph_h != height) or (
            isinstance(graph_w, int) and graph_w != width
        ):
            raise DataError(
                f"{where}: its graph takes (N, {graph_h}, {graph_w}) images but its metadata's "
                f"{field} gives {height}x{width}; export it again from its weights"
            )
    shape, rank, classes = outputs[0].shape, len(model.output_shape) + 1, len(model.mapping)
    if len(shape) != rank or (isinstance(shape[-1], int) and shape[-1] != classes):
        raise DataError(
            f"{where}: its graph gives outputs of shape {list(shape)} but its metadata declares "
            f"{rank} axes and {classes} classes (its mapping); export it again from its weights"
        )


def onnx_session(path: Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session on ``path``; ``threads`` sets its intra-op thread pool."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("the onnx runtime needs onnxruntime: pip install onnxruntime") from None
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = check_threads(threads)
    options.inter_op_num_threads = 1  # the graphs are one chain: nothing to run side by side
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: its warnings are not the user's to act on
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's InvalidProtobuf, Fail, InvalidGraph, ...
        raise DataError(
            f"cannot read ONNX model {path}: not a readable ONNX model ({one_line(e, 160)})"
        ) from None


def onnx_metadata(session: Any, path: Path) -> dict[str, Any]:
    """The exporter's JSON metadata of a session's model, checked like a weights file's fields
    (a file from elsewhere is untrusted: its mapping is printed, its shapes allocate)."""
    import json

    text = session.get_modelmeta().custom_metadata_map.get(ONNX_METADATA_KEY)
    where = f"cannot read ONNX model {path}"
    if text is None:
        raise DataError(
            f"{where}: it has no {ONNX_METADATA_KEY!r} metadata (mapping, preprocessing); "
            "export it with python -m text_recognizer.export"
        )
    if len(text) > MAX_ONNX_METADATA:
        raise DataError(f"{where}: its metadata is over {MAX_ONNX_METADATA:,} characters")
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise DataError(f"{where}: its metadata is not valid JSON ({one_line(e, 80)})") from None
    if not isinstance(payload, dict):
        raise DataError(f"{where}: its metadata is a {type(payload).__name__}, not an object")
    if payload.get("format") != ONNX_FORMAT:
        raise DataError(
            f"{where}: its metadata format is {str(payload.get('format'))[:20]!r}; this version "
            f"reads {ONNX_FORMAT} (export it again with this version)"
        )
    # the fields weights.pt holds, checked by the weights file's own checks
    from text_recognizer.models.weights_file import WEIGHTS_FORMAT, weights_problem

    fields = {k: payload.get(k) for k in ("model", "network", "network_args", "data_config")}
    fields.update(format_version=WEIGHTS_FORMAT, state_dict={}, config=payload.get("config"))
    bad = weights_problem(fields)
    if bad:
        raise DataError(f"{where}: {bad}")
    payload = {**payload, "network_args": dict(payload.get("network_args") or {})}
    payload["config"] = dict(payload.get("config") or {})
    return payload


def _model_from_metadata(payload: dict[str, Any], path: Path) -> Any:
    """The Model the metadata describes, built on the CPU once its network is known to be no
    larger than the file (a torch twin is built for its attributes: time steps, mapping)."""
    import torch

    from text_recognizer.models import MODELS
    from text_recognizer.networks import NETWORKS, build_network
    from text_recognizer.preprocessing import preprocessing_for
    from text_recognizer.spec import validate_args

    where = f"cannot read ONNX model {path}"
    network, args, dc = payload["network"], payload["network_args"], dict(payload["data_config"])
    try:
        validate_args(args, NETWORKS[network].args, "network_args")
        shapes = (tuple(dc["input_shape"]), tuple(dc["output_shape"]))
        with torch.device("meta"):
            count = sum(p.numel() for p in build_network(network, *shapes, **args).parameters())
    except Exception as e:  # a ConfigError from network_args, a builder's ValueError, ...
        why = one_line(e, 160)
        raise DataError(f"{where}: its network {network!r} cannot be built ({why})") from None
    if count * 2 > path.stat().st_size + (1 << 20):  # float32 weights: 4 bytes each (fp16: 2)
        raise DataError(
            f"{where}: its metadata declares a network of {count:,} parameters, more than the "
            "file holds"
        )
    dc["preprocessing"] = preprocessing_for(dc, payload["config"])
    return MODELS[payload["model"]].load()(dc, network, args, "cpu")
