"""The experiment config: parse, validate and fill defaults, all before any heavy import.

A config names a ``dataset``, ``model`` and ``network`` with their arguments, plus ``train_args``.
Every default lives here or in the registries beside the class it configures.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from text_recognizer.errors import ConfigError, one_line
from text_recognizer.fileio import read_small_text
from text_recognizer.spec import (
    SEED_MAX,
    Param,
    short_repr,
    unknown_key_error,
    validate_args,
)

TRAIN_ARGS: dict[str, Param] = {
    "batch_size": Param(int, 128, min=1, max=65536),
    "eval_batch_size": Param(
        int, None, min=1, max=262144, nullable=True, help="default: 4x batch_size"
    ),
    "epochs": Param(int, 10, min=1, max=100000),
    "optimizer": Param(str, "adam", choices=("adam", "adamw", "sgd")),
    "learning_rate": Param(float, 1e-3, gt=0.0, max=10.0),
    "momentum": Param(float, 0.9, min=0.0, lt=1.0, help="sgd only"),
    "weight_decay": Param(float, 0.0, min=0.0, max=10.0),
    "lr_schedule": Param(str, "constant", choices=("constant", "cosine")),
    "warmup_epochs": Param(int, 0, min=0, max=100000),
    "grad_clip": Param(float, None, gt=0.0, max=1e6, nullable=True, help="max gradient norm"),
    "early_stopping_patience": Param(
        int,
        None,
        min=1,
        max=100000,
        nullable=True,
        help="epochs without val-loss improvement before stopping",
    ),
    "early_stopping_min_delta": Param(float, 0.0, min=0.0, max=1e6),
    "seed": Param(int, 0, min=0, max=SEED_MAX),
    "num_threads": Param(int, None, min=1, max=1024, nullable=True, help="torch CPU threads"),
    "mixed_precision": Param(str, "auto", choices=("auto", "off", "bf16", "fp16")),
    "max_nonfinite_batches": Param(
        int,
        20,
        min=1,
        max=1_000_000,
        help="batches in a row with a NaN/inf loss or gradient before the run stops",
    ),
    "augment": Param(
        float,
        0.0,
        min=0.0,
        max=3.0,
        help="strength of on-the-fly warps (line models add ink effects); 0 = off",
    ),
    "decode": Param(str, "greedy", choices=("greedy", "beam"), help="CTC decoding (LineModelCtc)"),
    # decoding.MAX_BEAM_WIDTH (not imported here: it would load torch)
    "beam_width": Param(int, 10, min=1, max=100, help="beam search width (decode: beam)"),
    "lm": Param(
        str, None, nullable=True, help="character n-gram LM (ARPA) for beam search (decode: beam)"
    ),
    # decoding.MAX_LM_WEIGHT / MAX_LM_BONUS
    "lm_weight": Param(float, 1.0, min=0.0, max=10.0, help="weight of the LM's log10 scores"),
    "lm_bonus": Param(float, 0.0, min=-50.0, max=50.0, help="score added per decoded character"),
}

TOP_LEVEL: dict[str, Param] = {
    "experiment_group": Param(str, "default"),
    "run_name": Param(str, None, nullable=True),
    "dataset": Param(str),
    "dataset_args": Param(dict, None, nullable=True),
    "model": Param(str),
    "network": Param(str),
    "network_args": Param(dict, None, nullable=True),
    "train_args": Param(dict, None, nullable=True),
    "init_from": Param(
        str,
        None,
        nullable=True,
        help="a run folder or weights.pt whose weights this run starts from",
    ),
}
REQUIRED = ("dataset", "model", "network")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._+=-]{0,99}")  # used with fullmatch


MAX_CONFIG_BYTES = 1 << 20  # a config is a few hundred bytes; a bigger file is not one


def parse_config_text(text: str, source: str = "config") -> dict[str, Any]:
    """Parse JSON text or, when it names an existing .json file, that file's content."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        source = str(Path(stripped).expanduser())
        stripped = read_config_file(stripped)
    return parse_config_json(stripped, source)


def read_config_file(name: str) -> str:
    """The text of a config file; one clear line for a missing, unreadable or non-UTF-8 file."""
    path = Path(name).expanduser()
    hint = " (a JSON object or a path to a .json file)"
    try:
        is_file = path.is_file()
    except (OSError, ValueError):  # a name too long for a path, or with a NUL byte
        is_file = False
    if not is_file:
        if name.endswith(".json"):
            raise ConfigError(f"config file {short_repr(name)} does not exist{hint}")
        raise ConfigError(f"config is neither JSON nor an existing file: {name[:60]!r}{hint}")
    return read_small_text(path, MAX_CONFIG_BYTES, "config file", ConfigError)


def parse_config_json(text: str, source: str = "config") -> dict[str, Any]:
    """A JSON object from text, or a one-line ConfigError saying what is wrong and where."""
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"malformed JSON in {source}: {e.msg} at line {e.lineno} column {e.colno} (char {e.pos})"
        ) from None
    except RecursionError:
        raise ConfigError(f"{source} is nested too deeply to be a config") from None
    except ValueError as e:  # an integer of more than 4300 digits
        raise ConfigError(f"malformed JSON in {source}: {one_line(e)[:120]}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{source} must hold a JSON object, got {type(config).__name__}")
    return config


_NOTED: set[str] = set()  # the alias notes this process has printed


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Return the resolved config (defaults filled in) or raise ConfigError with one clear line."""
    from text_recognizer.datasets import DATASETS
    from text_recognizer.models import MODELS
    from text_recognizer.networks import NETWORKS
    from text_recognizer.registry import lookup

    if not isinstance(config, dict):
        raise ConfigError(f"config must be a JSON object, got {type(config).__name__}")
    for key in config:
        if key not in TOP_LEVEL:
            raise unknown_key_error(key, list(TOP_LEVEL), "the config")
    for key in REQUIRED:
        if key not in config:
            raise ConfigError(f"the config is missing {key!r} (required: {', '.join(REQUIRED)})")
    resolved: dict[str, Any] = {}
    for key, param in TOP_LEVEL.items():
        if key in config:
            resolved[key] = param.check(config[key], key)
        elif param.nullable or param.default is not None:
            resolved[key] = param.default
    for key in ("experiment_group", "run_name"):
        value = resolved.get(key)
        if value is not None and not _SAFE_NAME.fullmatch(value):
            raise ConfigError(
                f"{key} {short_repr(value)} must be 1-100 letters, digits, spaces or ._+=- "
                "(it becomes a folder name)"
            )

    _use_own_names(resolved)
    dataset = lookup(DATASETS, resolved["dataset"], "dataset")
    model = lookup(MODELS, resolved["model"], "model")
    network = lookup(NETWORKS, resolved["network"], "network")
    resolved["dataset_args"] = validate_args(
        config.get("dataset_args"), dataset.args, "dataset_args"
    )
    resolved["network_args"] = validate_args(
        config.get("network_args"), network.args, "network_args"
    )
    resolved["train_args"] = validate_args(config.get("train_args"), TRAIN_ARGS, "train_args")

    if dataset.kind != model.kind:
        raise ConfigError(
            f"model {resolved['model']} works on {model.kind} datasets, but "
            f"{resolved['dataset']} holds {dataset.kind}; pick a {model.kind} dataset "
            f"({', '.join(n for n, e in sorted(DATASETS.items()) if e.kind == model.kind)})"
        )
    if network.kind != model.kind:
        raise ConfigError(
            f"network {resolved['network']!r} is for {network.kind}, but model "
            f"{resolved['model']} needs a {model.kind} network "
            f"({', '.join(n for n, e in sorted(NETWORKS.items()) if e.kind == model.kind)})"
        )
    if network.models and resolved["model"] not in network.models:
        valid = [
            n
            for n, e in sorted(NETWORKS.items())
            if e.kind == model.kind and (not e.models or resolved["model"] in e.models)
        ]
        raise ConfigError(
            f"network {resolved['network']!r} serves {', '.join(network.models)}, not "
            f"{resolved['model']}; networks for {resolved['model']}: {', '.join(valid)}"
        )
    TrainArgs(**resolved["train_args"])  # the checks across fields
    _check_lm_settings(resolved, config.get("train_args") or {})
    if resolved.get("init_from") is not None:
        resolved["init_from"] = str(resolve_init_from(resolved["init_from"]))
    if resolved["train_args"].get("lm") is not None:
        resolved["train_args"]["lm"] = str(resolve_lm(resolved["train_args"]["lm"]))
    data_dir = resolved["dataset_args"].get("data_dir")
    if data_dir is not None:
        resolved["dataset_args"]["data_dir"] = str(resolve_data_dir(data_dir))
    return resolved


def _use_own_names(resolved: dict[str, Any]) -> None:
    """FSDL's dataset, model and network names run as ours, and the record holds ours, so runs
    compare under one name; the note that says so comes once per process (sweeps validate many
    configs)."""
    from text_recognizer import progress
    from text_recognizer.datasets import DATASET_ALIASES, DATASETS
    from text_recognizer.models import MODEL_ALIASES, MODELS
    from text_recognizer.networks import NETWORK_ALIASES, NETWORKS
    from text_recognizer.registry import canonical_name

    for key, registry, aliases in (
        ("dataset", DATASETS, DATASET_ALIASES),
        ("model", MODELS, MODEL_ALIASES),
        ("network", NETWORKS, NETWORK_ALIASES),
    ):
        given, resolved[key] = resolved[key], canonical_name(registry, resolved[key], key, aliases)
        note = f"note: {key} {given!r} is {aliases.source}'s name for {resolved[key]!r}"
        if given != resolved[key] and note not in _NOTED:
            _NOTED.add(note)
            progress.line(note)


def _check_lm_settings(resolved: dict[str, Any], given: Mapping[str, Any]) -> None:
    """LM settings that would be silently ignored are errors: an LM for a model that does not
    decode with beam search, a weight or bonus without an LM. (A resolved config repeats the
    defaults, so only a weight or bonus other than its default counts as given.)"""
    train = resolved["train_args"]
    if train.get("lm") is not None and resolved["model"] != "LineModelCtc":
        raise ConfigError(
            f"train_args.lm applies to LineModelCtc (CTC beam search); model "
            f"{resolved['model']} does not decode with a language model"
        )
    if train.get("lm") is None:
        for key in ("lm_weight", "lm_bonus"):
            if key in given and given[key] != TRAIN_ARGS[key].default:
                raise ConfigError(
                    f"train_args.{key} needs train_args.lm (an ARPA file); without one it "
                    "would be ignored"
                )


def resolve_data_dir(data_dir: str) -> Path:
    """A relative data_dir is looked up from the current folder, then from the project root."""
    from text_recognizer.paths import PROJECT_ROOT

    path = Path(data_dir).expanduser()
    for candidate in (path, PROJECT_ROOT / path) if not path.is_absolute() else (path,):
        with suppress(OSError, ValueError):  # a name too long for a path, or with a NUL byte
            if candidate.is_dir():
                return candidate.resolve()
    raise ConfigError(
        f"dataset_args.data_dir {short_repr(data_dir)} is not a folder (relative paths are looked up from "
        f"the current folder, then from {PROJECT_ROOT})"
    )


def resolve_lm(lm: str) -> Path:
    """The LM file ``train_args.lm`` names, looked up like data_dir; checked before torch loads
    (whether KenLM can read it is checked when it is loaded, with one line as well)."""
    from text_recognizer.paths import PROJECT_ROOT

    path = Path(lm).expanduser()
    for candidate in (path, PROJECT_ROOT / path) if not path.is_absolute() else (path,):
        with suppress(OSError, ValueError):
            if candidate.is_file():
                return candidate.resolve()
    raise ConfigError(
        f"train_args.lm {short_repr(lm)} is not a file (build one with python -m "
        f"text_recognizer.lm build; relative paths are looked up from the current folder, then "
        f"from {PROJECT_ROOT})"
    )


def resolve_init_from(init_from: str) -> Path:
    """The weights file ``init_from`` names (a run folder holds it as weights.pt), looked up like
    data_dir: from the current folder, then from the project root. Checked before torch loads."""
    from text_recognizer.paths import PROJECT_ROOT

    path = Path(init_from).expanduser()
    for candidate in (path, PROJECT_ROOT / path) if not path.is_absolute() else (path,):
        with suppress(OSError, ValueError):
            if candidate.is_dir():
                weights = candidate / "weights.pt"
                if not weights.is_file():
                    raise ConfigError(
                        f"init_from {short_repr(init_from)} is a run folder without weights.pt "
                        "(a run keeps them when it finishes, unless trained with --no-save)"
                    )
                return weights.resolve()
            if candidate.is_file():
                return candidate.resolve()
    raise ConfigError(
        f"init_from {short_repr(init_from)} is neither a run folder nor a weights file (relative "
        f"paths are looked up from the current folder, then from {PROJECT_ROOT})"
    )


def load_config(text: str, overrides: list[tuple[str, Any]] | None = None) -> dict[str, Any]:
    """Parse, set the command line's ``--key.sub=value`` overrides, validate: the one call the
    command-line scripts make."""
    return validate_config(apply_overrides(parse_config_text(text), overrides or []))


# ----- --dotted.key=value settings on a command line (run_experiment and run_sweep) --------------
def override_value(text: str) -> Any:
    """A command-line value: JSON, else a Python literal, else the text itself.

    ``"256"`` -> 256, ``"0.2"`` -> 0.2, ``"true"``/``"True"`` -> True, ``"[32, 64]"`` ->
    [32, 64], ``"adam"`` -> ``"adam"``. Python literals because ``wandb agent`` formats sweep
    values with ``str()`` (``True``, ``None``, ``['a', 'b']``).
    """
    import ast

    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    """Set ``config["a"]["b"] = value`` for key ``"a.b"``; a dict value merges into what is there.

    The key's first part must be a config key and only dict keys have parts below them; the
    value itself is checked later, by :func:`validate_config`, exactly as in a config file."""
    from text_recognizer.spec import unknown_key_error

    parts = key.split(".")
    if any(not p for p in parts):
        raise ConfigError(f"malformed setting --{key} (expected a name like train_args.epochs)")
    if parts[0] not in TOP_LEVEL:
        raise unknown_key_error(parts[0], list(TOP_LEVEL), f"the config (--{key})")
    if len(parts) > 1 and TOP_LEVEL[parts[0]].type is not dict:
        raise ConfigError(
            f"--{key}: {parts[0]!r} is a {TOP_LEVEL[parts[0]].type.__name__}, not a section "
            "with keys"
        )
    node = config
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"--{key}: {part!r} is not a section with keys")
        node = child
    last = parts[-1]
    if isinstance(value, dict) and isinstance(node.get(last), dict):
        _merge(node[last], value)
    else:
        node[last] = copy.deepcopy(value)


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = copy.deepcopy(v)


def apply_overrides(config: dict[str, Any], overrides: list[tuple[str, Any]]) -> dict[str, Any]:
    """A copy of an unvalidated ``config`` with every ``(dotted key, value)`` set (the last wins)."""
    config = copy.deepcopy(config)
    for key, value in overrides:
        set_dotted(config, key, value)
    return config


def is_override(arg: str) -> bool:
    """Whether a command-line word sets a config key (``--train_args.epochs=1``, ``--run_name=x``):
    a dotted name, or a top-level config key. Other ``--flags`` are the command's own."""
    if not arg.startswith("--") or arg == "--":
        return False
    name = arg[2:].partition("=")[0]
    return "." in name or name in TOP_LEVEL


def parse_override(arg: str) -> tuple[str, Any]:
    """``--train_args.epochs=1`` -> ``("train_args.epochs", 1)``; a missing ``=VALUE`` is one line."""
    key, eq, raw = arg[2:].partition("=")
    if not eq:
        raise ConfigError(
            f"{short_repr(arg)} needs a value: --{key}=VALUE (VALUE is JSON, e.g. 1, 0.5, true, "
            '"text", [32, 64]; a bare word is a string)'
        )
    return key, override_value(raw)


def resolved_copy(config: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(config)


@dataclass(frozen=True)
class TrainArgs:
    """The validated ``train_args``, typed and frozen: what ``Model.fit`` and ``Model.evaluate``
    take, so the training loop reads attributes a type checker knows instead of dictionary keys.

    The defaults and bounds live in :data:`TRAIN_ARGS` alone; build one with :meth:`from_config`.
    """

    batch_size: int
    eval_batch_size: int | None
    epochs: int
    optimizer: str
    learning_rate: float
    momentum: float
    weight_decay: float
    lr_schedule: str
    warmup_epochs: int
    grad_clip: float | None
    early_stopping_patience: int | None
    early_stopping_min_delta: float
    seed: int
    num_threads: int | None
    mixed_precision: str
    max_nonfinite_batches: int
    augment: float
    decode: str
    beam_width: int
    lm: str | None
    lm_weight: float
    lm_bonus: float

    def __post_init__(self) -> None:
        if self.lm is not None and self.decode != "beam":
            raise ConfigError('train_args.lm needs train_args.decode "beam"')
        if 0 < self.warmup_epochs >= self.epochs:
            raise ConfigError(
                f"train_args.warmup_epochs ({self.warmup_epochs}) must be less than "
                f"train_args.epochs ({self.epochs})"
            )

    @classmethod
    def from_config(cls, train_args: Mapping[str, Any] | None = None) -> TrainArgs:
        """Validate a ``train_args`` mapping (missing keys take their defaults) into TrainArgs."""
        return cls(**validate_args(dict(train_args or {}), TRAIN_ARGS, "train_args"))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def eval_batch(self) -> int:
        """Evaluation holds no gradients, so it takes 4x the training batch unless told."""
        return self.eval_batch_size or 4 * self.batch_size
