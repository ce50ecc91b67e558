"""Weights files: read one without trusting it, and check every declared size before building.

``torch.load(weights_only=True)`` stops code in a file, not resource exhaustion: a weights file
that declares a 100000x100000 input or a network with a million channels would have the loader
allocate whatever it says. So the zip archive's metadata record is bounded before it is read,
tensors are memory-mapped (sized by the file), every field is checked against sane bounds, and the
network is built on the ``meta`` device (no memory), stopped as soon as it outgrows the file,
before any tensor is compared. Any defect is one DataError line naming the file and the field.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from text_recognizer.errors import DataError, one_line
from text_recognizer.networks import build_network

WEIGHTS_FORMAT = 1
MAX_INPUT_SIDE = 8192  # IAM lines are 28-64 x ~1000 (dataset specs allow 8192); EMNIST 28
MAX_INPUT_PIXELS = 1 << 22  # dataset specs allow up to 256 x 8192 (2 M)
MAX_CLASSES = 1 << 16
MAX_OUTPUT_LENGTH = 4096
MAX_PICKLE_BYTES = 64 << 20  # mapping + config; the tensors are separate records, memory-mapped


def read_weights(path: str | Path) -> dict[str, Any]:
    """The checked payload of a weights file; any defect is one DataError line naming it."""
    import pickle

    from text_recognizer.errors import storage_error

    path = Path(path)
    check_archive(path)
    try:  # mmap: tensors stay in the file until copied into the network, sized by the file
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise DataError(f"no weights file at {path}") from None
    except OSError as e:
        raise storage_error(e, path, "read") from None
    except pickle.UnpicklingError as e:
        why = "it holds Python objects, refused by weights_only loading"
        raise _unreadable(path, why if "eights only" in str(e) else _short(e)) from None
    except Exception as e:  # torch raises RuntimeError, EOFError, ValueError, ... on corrupt files
        raise _unreadable(path, f"{type(e).__name__}: {_short(e)}") from None
    return check_weights(payload, path)


def _unreadable(path: Path, why: str, kind: str = "weights") -> DataError:
    return DataError(f"cannot read {kind} {path}: not a readable {kind} file ({why})")


def _short(text: object, limit: int = 100) -> str:
    return one_line(text, limit)


def check_archive(path: Path, kind: str = "weights") -> None:
    """A torch zip archive whose pickle is of a sane size (it is read whole into memory).

    Used for weights files and for checkpoints (``kind`` names which in the message)."""
    import stat
    import zipfile

    from text_recognizer.errors import storage_error

    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a FIFO would block the reader for ever
            raise _unreadable(path, "a folder, device or pipe, not a regular file", kind)
        if info.st_size == 0:
            raise _unreadable(path, "the file is empty", kind)
        with zipfile.ZipFile(path) as archive:
            pickles = [i for i in archive.infolist() if i.filename.endswith("/data.pkl")]
    except FileNotFoundError:
        raise DataError(f"no {kind} file at {path}") from None
    except OSError as e:
        raise storage_error(e, path, "read") from None
    except (zipfile.BadZipFile, ValueError, EOFError):
        raise _unreadable(path, "not a torch zip archive", kind) from None
    if len(pickles) != 1:
        raise _unreadable(path, "a zip archive, but not one torch.save wrote", kind)
    if pickles[0].file_size > MAX_PICKLE_BYTES:
        raise DataError(
            f"cannot read {kind} {path}: its metadata is {pickles[0].file_size:,} bytes "
            f"(at most {MAX_PICKLE_BYTES:,})"
        )


def check_weights(payload: Any, path: str | Path) -> dict[str, Any]:
    """Validate a loaded weights payload in one place: types, names, bounds, tensor shapes.

    Returns the payload with ``network_args`` and ``config`` defaulted to empty dicts. Raises a
    DataError naming ``path`` and what is wrong.
    """
    bad = weights_problem(payload)
    if bad:
        raise DataError(f"cannot read weights {path}: {bad}")
    payload = {**payload}
    payload["network_args"] = dict(payload.get("network_args") or {})
    payload["config"] = dict(payload.get("config") or {})
    try:
        bad = _state_dict_problem(payload)
    except Exception as e:  # a builder's ValueError, a ConfigError from network_args, ...
        bad = f"its network {payload['network']!r} cannot be built from it ({_short(e, 160)})"
    if bad:
        raise DataError(f"cannot read weights {path}: {bad}")
    return payload


def weights_problem(payload: Any) -> str | None:
    """What is wrong with the payload's fields (not its tensors), or None."""
    from text_recognizer.models import MODELS
    from text_recognizer.networks import NETWORKS

    if not isinstance(payload, dict):
        return f"it holds a {type(payload).__name__}, not a dict of weights and metadata"
    version = payload.get("format_version")
    if version != WEIGHTS_FORMAT:
        return f"it has weights format {_short(repr(version), 30)}; this version reads {WEIGHTS_FORMAT}"
    for key in ("model", "network", "data_config", "state_dict"):
        if key not in payload:
            return f"it has no {key!r} entry"
    model, network = payload["model"], payload["network"]
    if not isinstance(model, str) or model not in MODELS:
        return f"model {_short(repr(model), 40)} is not one of {', '.join(sorted(MODELS))}"
    if not isinstance(network, str) or network not in NETWORKS:
        return f"network {_short(repr(network), 40)} is not one of {', '.join(sorted(NETWORKS))}"
    entry = NETWORKS[network]
    if entry.kind != MODELS[model].kind or (entry.models and model not in entry.models):
        return f"network {network!r} does not serve a {model}"
    for key in ("network_args", "config"):
        if payload.get(key) is not None and not isinstance(payload[key], dict):
            return f"{key} must be a dict, got {type(payload[key]).__name__}"
    return _data_config_problem(payload["data_config"], MODELS[model].kind) or _config_problem(
        payload.get("config") or {}
    )


def _int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _data_config_problem(dc: Any, kind: str) -> str | None:
    """Shapes, mapping and preprocessing: present, typed and within bounds."""
    if not isinstance(dc, dict):
        return f"data_config must be a dict, got {type(dc).__name__}"
    mapping, shape, out = dc.get("mapping"), dc.get("input_shape"), dc.get("output_shape")
    if not isinstance(mapping, (list, tuple)) or not 1 <= len(mapping) <= MAX_CLASSES:
        return f"data_config.mapping must be a list of 1 to {MAX_CLASSES} strings"
    if not all(isinstance(c, str) and len(c) <= 64 and _utf8(c) for c in mapping):
        return "data_config.mapping must hold only short text strings"
    if any(ord(ch) < 32 or 127 <= ord(ch) < 160 for c in mapping for ch in c):
        # a mapping entry is printed as the prediction: no escape sequences, no newlines
        return "data_config.mapping must not hold control characters"
    if not isinstance(shape, (list, tuple)) or len(shape) not in (2, 3):
        return f"data_config.input_shape must be [height, width], got {_short(repr(shape), 40)}"
    if not all(_int_in(d, 1, MAX_INPUT_SIDE) for d in shape) or math.prod(shape) > MAX_INPUT_PIXELS:
        return (
            f"data_config.input_shape {_short(repr(shape), 40)} is out of bounds (sides 1 to "
            f"{MAX_INPUT_SIDE}, at most {MAX_INPUT_PIXELS:,} pixels)"
        )
    lines = kind == "lines"
    want = 2 if lines else 1
    if (
        not isinstance(out, (list, tuple))
        or len(out) != want
        or not all(_int_in(d, 1, MAX_OUTPUT_LENGTH) for d in out[:-1])
        or out[-1] != len(mapping)
    ):
        form = "[max_length, classes]" if lines else "[classes]"
        return (
            f"data_config.output_shape must be {form} with classes = len(mapping) = "
            f"{len(mapping)} and max_length <= {MAX_OUTPUT_LENGTH}, got {_short(repr(out), 40)}"
        )
    if dc.get("kind") is not None and dc.get("kind") != kind:
        return f"data_config.kind is {_short(repr(dc.get('kind')), 30)}, the model reads {kind}"
    if dc.get("dataset") is not None and not isinstance(dc.get("dataset"), str):
        return "data_config.dataset must be a dataset name"
    for key, high in (("max_length", MAX_OUTPUT_LENGTH), ("blank_index", len(mapping) - 1)):
        if key in dc and not _int_in(dc[key], 0 if key != "max_length" else 1, high):
            return f"data_config.{key} must be an integer from 0 to {high}"
    if "padding_index" in dc and not _int_in(dc["padding_index"], 0, len(mapping) - 1):
        return f"data_config.padding_index must be an integer from 0 to {len(mapping) - 1}"
    return _preprocessing_problem(dc.get("preprocessing"), tuple(shape[-2:]))


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _preprocessing_problem(spec: Any, size: tuple[int, ...]) -> str | None:
    from text_recognizer.preprocessing import RESIZE_MODES

    if spec is None:
        return None
    if not isinstance(spec, dict) or spec.get("resize", "fit_height") not in RESIZE_MODES:
        return f"data_config.preprocessing must be a dict with resize one of {RESIZE_MODES}"
    if (spec.get("height"), spec.get("width")) != size:
        return (
            f"data_config.preprocessing height/width must equal the input shape {list(size)}, "
            f"got {_short(repr([spec.get('height'), spec.get('width')]), 40)}"
        )
    return None


def _config_problem(config: dict[str, Any]) -> str | None:
    """The parts of the run config that prediction reads: dataset_args and decoding."""
    from text_recognizer.decoding import DECODERS, check_beam_width, check_lm_weights

    for key in ("dataset_args", "train_args"):
        if config.get(key) is not None and not isinstance(config[key], dict):
            return f"config.{key} must be a dict"
    train = config.get("train_args") or {}
    if train.get("decode") not in (None, *DECODERS):
        return f"config.train_args.decode must be one of {DECODERS}"
    if train.get("beam_width") is not None:
        try:
            check_beam_width(train["beam_width"], "config.train_args.beam_width")
        except ValueError as e:
            return str(e)
    lm = train.get("lm")
    if lm is not None and (not isinstance(lm, str) or not 0 < len(lm) <= 4096 or "\0" in lm):
        return f"config.train_args.lm must be a file path or null, got {_short(repr(lm), 40)}"
    weight, bonus = train.get("lm_weight"), train.get("lm_bonus")
    try:  # None: the default (decoding.decoder_from)
        check_lm_weights(
            1.0 if weight is None else weight,
            0.0 if bonus is None else bonus,
            ("config.train_args.lm_weight", "config.train_args.lm_bonus"),
        )
    except ValueError as e:
        return _short(e, 160)
    return None


def _state_dict_problem(payload: dict[str, Any]) -> str | None:
    """Tensors that differ from those of the network the payload describes, or None.

    The network is built on the ``meta`` device (no memory), and its build is stopped as soon
    as it declares more tensors or elements than the file holds, so that huge network_args
    cannot exhaust memory or time even there.
    """
    from text_recognizer.networks import NETWORKS
    from text_recognizer.spec import validate_args

    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        return "state_dict must map parameter names to tensors"
    fake = _not_backed_by_the_file(state)
    if fake:
        return (
            f"tensor {fake!r} is a view (expanded, strided or sharing storage with another), not "
            "the plain tensor torch.save writes: its size would not be bounded by the file's"
        )
    args = payload["network_args"]
    validate_args(args, NETWORKS[payload["network"]].args, "network_args")
    expected = _meta_state(payload, len(state), sum(v.numel() for v in state.values()))
    if expected is None:
        return (
            f"its tensors do not match network {payload['network']!r} with its network_args "
            "(the network needs more or larger tensors than the file holds)"
        )
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        return (
            f"its tensors do not match network {payload['network']!r} with its network_args "
            f"(missing {_short(missing, 60)}, unexpected {_short(extra, 60)})"
        )
    for key, (shape, dtype) in expected.items():
        tensor = state[key]
        if tuple(tensor.shape) != shape:
            return f"tensor {key!r} is {list(tensor.shape)}; its network needs {list(shape)}"
        if tensor.dtype != dtype and not (tensor.is_floating_point() and dtype.is_floating_point):
            return f"tensor {key!r} is {tensor.dtype}; its network needs {dtype}"
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return f"tensor {key!r} holds NaN or infinite values"
    return None


def _not_backed_by_the_file(state: dict[str, torch.Tensor]) -> str | None:
    """The first tensor whose elements are not each stored in the file, or None.

    The meta-device build below is bounded by the elements the file holds; an expanded tensor
    (stride 0) or many views of one storage claim far more elements than the file stores, and
    loading them into a network would allocate that much.
    """
    storages: set[int] = set()
    for name, tensor in state.items():
        if tensor.numel() == 0:
            continue
        storage = tensor.untyped_storage()
        if (
            not tensor.is_contiguous()
            or tensor.storage_offset() != 0
            or storage.nbytes() != tensor.numel() * tensor.element_size()
            or storage.data_ptr() in storages
        ):
            return name
        storages.add(storage.data_ptr())
    return None


class _TooBig(Exception):
    pass


def _meta_state(
    payload: dict[str, Any], max_tensors: int, max_numel: int
) -> dict[str, tuple[tuple[int, ...], torch.dtype]] | None:
    """{name: (shape, dtype)} of the described network built on ``meta``; None if it outgrows
    the file (non-persistent buffers are allowed some room)."""
    from torch.nn.modules import module as module_hooks

    dc = payload["data_config"]
    seen = [0, 0]

    def count(_module: nn.Module, _name: str, value: Any) -> None:
        if value is not None:
            seen[0], seen[1] = seen[0] + 1, seen[1] + value.numel()
            if seen[0] > 2 * max_tensors + 16 or seen[1] > 2 * max_numel + (1 << 16):
                raise _TooBig

    hooks = [
        module_hooks.register_module_parameter_registration_hook(count),
        module_hooks.register_module_buffer_registration_hook(count),
    ]
    try:
        with torch.device("meta"):
            net = build_network(
                payload["network"],
                tuple(dc["input_shape"]),
                tuple(dc["output_shape"]),
                **payload["network_args"],
            )
    except _TooBig:
        return None
    finally:
        for hook in hooks:
            hook.remove()
    return {k: (tuple(v.shape), v.dtype) for k, v in net.state_dict().items()}
