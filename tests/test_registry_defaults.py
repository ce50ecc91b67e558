"""The registries' defaults and the code's own defaults never drift apart.

Every dataset and network declares its arguments twice, on purpose: as ``Param``s in the light
registries (``datasets/__init__.py``, ``networks/__init__.py``, read by ``config.validate_config``
before torch loads) and as the defaults of the class constructor or network builder (used by
whoever calls the code directly: notebooks, tests, benchmarks, ``Model.load``). Nothing ties the
two together but this file. For every registered name (the way timm's tests run over every model
name) it checks that each registry default equals the signature's default, that each registry
argument exists in the signature, and that each signature parameter a user can set is declared in
the registry. It also checks that ``train_args`` defaults (``config.TRAIN_ARGS``) are not repeated
in code with another value (``args.get("batch_size", 128)``).

What legitimately differs is listed below with the reason, never skipped silently.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest
import torch

import text_recognizer
from text_recognizer import config
from text_recognizer.datasets import DATASETS
from text_recognizer.datasets.base import Dataset
from text_recognizer.models import MODELS
from text_recognizer.networks import NETWORKS
from text_recognizer.spec import Param, validate_args

PACKAGE = Path(text_recognizer.__file__).parent
TRAINING = PACKAGE.parent.parent / "training"

# Builder parameters that are not network_args: ``Model`` passes the dataset's shapes.
NOT_NETWORK_ARGS = {
    "input_shape": "positional: the dataset's input shape, passed by Model",
    "output_shape": "positional: the dataset's output shape, passed by Model",
}
# Dataset constructor parameters that no config sets (none today; name the reason when adding one).
NOT_DATASET_ARGS: dict[str, str] = {}
# Model constructor parameters the runner fills from the dataset and the config, not from args.
MODEL_CONTRACT = {
    "data_config": "the dataset's config() (shapes, mapping, kind)",
    "network": "the config's network name",
    "network_args": "the validated network_args",
    "device": "chosen by the runner (--gpu)",
    "config": "the whole resolved config",
}
# Shapes every network of a kind must build on, large enough for every list length the registry
# accepts (8 poolings by 2 of crnn need 256 rows); built on the meta device, so free.
SHAPES = {"characters": ((28, 28), (10,)), "lines": ((256, 1024), (16, 13))}

# train_args keys that also name other things in the code, with another default on purpose: a
# function parameter of that name is not a copy of the train_args default.
OTHER_MEANINGS = {
    "batch_size": "inference batch sizes of predictors, plots and LineModel.predict",
    "seed": "dataset seeds and plot sampling seeds",
}
# (file under the package, train_args key) -> why its literal fallback differs from TRAIN_ARGS.
KNOWN_DIFFERENT = {
    ("models/base.py", "mixed_precision"): (
        "Model.evaluate() without train_args (training/evaluate.py, predictors) evaluates in full "
        "precision; within a run the resolved train_args always carry mixed_precision"
    ),
}
# Code defaults that mirror a train_args default under another name: (module, attribute, name).
MIRRORS = {
    ("text_recognizer.decoding", "Decoder", "method"): "decode",
}


def _plain(value: Any) -> Any:
    """A comparable form: tuples and lists alike (builders default to tuples, JSON has lists),
    and ``True`` never equal to ``1``."""
    if isinstance(value, (list, tuple)):
        return ("sequence", [_plain(v) for v in value])
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", value)
    return (type(value).__name__, value)


def constructor_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The named parameters a dataset class takes: its own ``__init__``'s, then, while an
    ``__init__`` passes ``**kwargs`` on, those of the class above it, up to ``Dataset`` (the
    common arguments; its own ``**args`` only records what the subclass hands it)."""
    params: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        named = list(inspect.signature(init).parameters.values())[1:]  # without self
        for p in named:
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                params.setdefault(p.name, p)  # the most derived class's default wins
        if klass is Dataset or not any(p.kind is p.VAR_KEYWORD for p in named):
            break
    return params


def builder_parameters(build: Any) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(build).parameters)


def drift(
    registry: dict[str, Param], signature: dict[str, inspect.Parameter], allowed: dict[str, str]
) -> list[str]:
    """Every way the registry and the signature disagree, as readable lines."""
    problems = []
    for key, param in registry.items():
        if key not in signature:
            problems.append(f"registry argument {key!r} is not a parameter of the code")
        elif signature[key].default is inspect.Parameter.empty:
            problems.append(f"{key!r} has a registry default but none in the code")
        elif _plain(signature[key].default) != _plain(param.default):
            problems.append(
                f"{key!r} defaults to {param.default!r} in the registry but to "
                f"{signature[key].default!r} in the code"
            )
    for key in signature:
        if key not in registry and key not in allowed:
            problems.append(f"parameter {key!r} of the code is not declared in the registry")
    return problems


# ----- datasets --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_dataset_registry_matches_constructor(name: str) -> None:
    entry = DATASETS[name]
    problems = drift(entry.args, constructor_parameters(entry.load()), NOT_DATASET_ARGS)
    assert not problems, f"{name}: " + "; ".join(problems)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_dataset_registry_defaults_make_the_default_dataset(name: str) -> None:
    """What the runner builds from a config without dataset_args (every registry default passed
    explicitly) is the dataset the constructor builds with no arguments at all."""
    entry = DATASETS[name]
    cls = entry.load()
    resolved = validate_args({}, entry.args, "dataset_args")
    assert vars(cls(**resolved)) == vars(cls())


@pytest.mark.parametrize(
    ("name", "key", "choice"),
    [
        (name, key, choice)
        for name, entry in sorted(DATASETS.items())
        for key, param in entry.args.items()
        for choice in param.choices or ()
    ],
)
def test_dataset_accepts_every_registry_choice(name: str, key: str, choice: Any) -> None:
    DATASETS[name].load()(**{key: choice})


@pytest.mark.parametrize(
    "name",
    sorted(n for n, e in DATASETS.items() if e.args.get("charset") and e.args["charset"].choices),
)
def test_dataset_charset_choices_are_its_charsets(name: str) -> None:
    """The registry's ``charset`` choices are exactly the character sets the module defines
    (a free-text ``charset``, ImageTextDataset's characters, has no choices)."""
    module = importlib.import_module(DATASETS[name].target.partition(":")[0])
    charsets = getattr(module, "CHARSETS", None)
    assert charsets is not None, f"{module.__name__} has no CHARSETS: name its charset table here"
    assert tuple(charsets) == DATASETS[name].args["charset"].choices


# ----- networks --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_network_registry_matches_builder(name: str) -> None:
    entry = NETWORKS[name]
    problems = drift(entry.args, builder_parameters(entry.load()), NOT_NETWORK_ARGS)
    assert not problems, f"{name}: " + "; ".join(problems)


def _build(name: str, **network_args: Any) -> torch.nn.Module:
    entry = NETWORKS[name]
    with torch.device("meta"):  # shapes only: nothing is allocated
        return entry.load()(*SHAPES[entry.kind], **network_args)


def _layout(net: torch.nn.Module) -> tuple[str, list[tuple[str, tuple[int, ...]]]]:
    return repr(net), [(k, tuple(v.shape)) for k, v in net.state_dict().items()]


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_network_registry_defaults_make_the_default_network(name: str) -> None:
    resolved = validate_args({}, NETWORKS[name].args, "network_args")
    assert _layout(_build(name, **resolved)) == _layout(_build(name))


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        (name, key, value)
        for name, entry in sorted(NETWORKS.items())
        for key, param in entry.args.items()
        for value in (
            param.choices
            or (
                [[param.default[0]] * n for n in sorted({param.min_items, param.max_items})]
                if param.type is list
                else ()
            )
        )
    ],
    ids=lambda v: str(len(v)) + "-items" if isinstance(v, list) else str(v),
)
def test_network_builds_with_what_the_registry_accepts(name: str, key: str, value: Any) -> None:
    """Every choice, and the fewest and most items of every list, that validation lets through
    build (on inputs large enough): a builder refusing them whatever the data is a drift (the
    window networks took exactly two conv_channels while their registry allowed up to 8)."""
    _build(name, **{key: value})


# ----- models ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_constructor_parameters_are_declared(name: str) -> None:
    """A model's registry arguments match its constructor; any other constructor parameter is the
    runner's contract or a train_args key (read from the config, default None or the same)."""
    entry = MODELS[name]
    signature = dict(inspect.signature(entry.load()).parameters)
    problems = drift(entry.args, signature, {**MODEL_CONTRACT, **config.TRAIN_ARGS})
    for key, p in signature.items():
        from_train_args = key in config.TRAIN_ARGS and key not in entry.args
        if from_train_args and p.default is not None:
            expected = config.TRAIN_ARGS[key].default
            if _plain(p.default) != _plain(expected):
                problems.append(
                    f"{key!r} defaults to {p.default!r}, train_args.{key} to {expected!r}"
                )
    assert not problems, f"{name}: " + "; ".join(problems)


# ----- every registry default is a value its own Param accepts -------------------------------


REGISTRIES = {
    **{f"dataset_args:{n}": e.args for n, e in DATASETS.items()},
    **{f"network_args:{n}": e.args for n, e in NETWORKS.items()},
    **{f"model:{n}": e.args for n, e in MODELS.items()},
    "train_args": config.TRAIN_ARGS,
}


@pytest.mark.parametrize("where", sorted(REGISTRIES))
def test_registry_defaults_pass_their_own_checks(where: str) -> None:
    for key, param in REGISTRIES[where].items():
        checked = param.check(param.default, f"{where}.{key}")
        assert _plain(checked) == _plain(param.default), key


# ----- train_args defaults repeated in code --------------------------------------------------


def _literal(node: ast.AST) -> tuple[bool, Any]:
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


def _get_key(node: ast.AST) -> str | None:
    """``"k"`` for ``X.get("k", ...)`` / ``X.get("k")``, else None."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return node.args[0].value
    return None


def literal_train_arg_defaults(tree: ast.AST) -> list[tuple[int, str, Any]]:
    """(line, key, literal) for each place the code gives a train_args key a literal default:
    ``X.get("key", LIT)``, ``X.get("key") or LIT``, and a function parameter or dataclass field
    named after the key with a literal default."""
    found = []
    keys = config.TRAIN_ARGS
    for node in ast.walk(tree):
        key = _get_key(node)
        if key in keys and len(node.args) > 1:  # type: ignore[attr-defined]
            ok, value = _literal(node.args[1])  # type: ignore[attr-defined]
            if ok:
                found.append((node.lineno, key, value))
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
            for i, operand in enumerate(node.values[:-1]):
                key = _get_key(operand)
                if key in keys and len(operand.args) == 1:  # type: ignore[attr-defined]
                    ok, value = _literal(node.values[i + 1])
                    if ok:
                        found.append((node.lineno, key, value))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            positional = a.posonlyargs + a.args
            pairs = list(
                zip(positional[len(positional) - len(a.defaults) :], a.defaults, strict=True)
            )
            pairs += [
                (arg, d)
                for arg, d in zip(a.kwonlyargs, a.kw_defaults, strict=True)
                if d is not None
            ]
            for arg, default in pairs:
                if arg.arg in keys and arg.arg not in OTHER_MEANINGS:
                    ok, value = _literal(default)
                    if ok and value is not None:  # None: "take it from train_args"
                        found.append((default.lineno, arg.arg, value))
        if isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if (
                    isinstance(stmt, ast.AnnAssign)
                    and isinstance(stmt.target, ast.Name)
                    and stmt.target.id in keys
                    and stmt.target.id not in OTHER_MEANINGS
                    and stmt.value is not None
                ):
                    ok, value = _literal(stmt.value)
                    if ok and value is not None:
                        found.append((stmt.lineno, stmt.target.id, value))
    return found


def _sources() -> list[tuple[str, Path]]:
    files = [(p.relative_to(PACKAGE).as_posix(), p) for p in sorted(PACKAGE.rglob("*.py"))]
    files += [(f"training/{p.name}", p) for p in sorted(TRAINING.glob("*.py"))]
    return files


def test_train_args_defaults_are_not_repeated_with_other_values() -> None:
    problems = []
    for rel, path in _sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, key, value in literal_train_arg_defaults(tree):
            expected = config.TRAIN_ARGS[key].default
            if _plain(value) != _plain(expected) and (rel, key) not in KNOWN_DIFFERENT:
                problems.append(f"{rel}:{line}: {key} falls back to {value!r}, not {expected!r}")
    assert not problems, "train_args defaults repeated with other values:\n" + "\n".join(problems)


def test_the_scan_finds_what_it_looks_for() -> None:
    """The scanner itself: each form it must catch is caught (a silent scanner passes anything)."""
    source = (
        "a = args.get('batch_size', 64)\n"
        "b = args.get('decode') or 'beam'\n"
        "def f(x, beam_width=3, *, grad_clip=None): ...\n"
        "class C:\n    optimizer: str = 'sgd'\n"
    )
    found = {(key, value) for _, key, value in literal_train_arg_defaults(ast.parse(source))}
    assert found == {
        ("batch_size", 64),
        ("decode", "beam"),
        ("beam_width", 3),
        ("optimizer", "sgd"),
    }


@pytest.mark.parametrize(
    ("where", "train_arg"), sorted(MIRRORS.items()), ids=[".".join(w) for w in sorted(MIRRORS)]
)
def test_mirrored_train_arg_defaults(where: tuple[str, str, str], train_arg: str) -> None:
    module_name, attribute, name = where
    owner = getattr(importlib.import_module(module_name), attribute, None)
    if owner is None:
        pytest.skip(f"{module_name}.{attribute} is gone: drop it from MIRRORS")
    default = inspect.signature(owner).parameters[name].default
    assert _plain(default) == _plain(config.TRAIN_ARGS[train_arg].default)


def test_train_args_class_matches_the_spec() -> None:
    """A typed ``config.TrainArgs``, where there is one, has exactly TRAIN_ARGS's fields, and
    any field default it declares is TRAIN_ARGS's."""
    cls = getattr(config, "TrainArgs", None)
    if cls is None or not dataclasses.is_dataclass(cls):
        pytest.skip("config has no TrainArgs dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert set(fields) == set(config.TRAIN_ARGS)
    for key, field in fields.items():
        if field.default is not dataclasses.MISSING:
            assert _plain(field.default) == _plain(config.TRAIN_ARGS[key].default), key
