"""Hostile input to the commands that use trained models (issue 10): images, weights, outputs.

Every case ends in exit 0, or in exit 2 with one ``error: ...`` line that says what was wrong;
never a traceback, a hang or unbounded memory. The models are tiny and built in-process (no
training), the images are crafted in a few bytes, the memory-bound cases run in a subprocess under
RLIMIT_AS.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import PROJECT_ROOT, fill_disk, memory_capped, run_script
from text_recognizer import page_ocr
from text_recognizer.errors import UserError
from text_recognizer.evaluate import evaluate_main
from text_recognizer.page_ocr import page_ocr_main
from text_recognizer.paragraph_ocr import paragraph_ocr_main
from text_recognizer.paths import SHARED_DATA_DIR
from text_recognizer.predict import predict_main
from text_recognizer.predictors import LinePredictor
from text_recognizer.preprocessing import preprocess_image

GiB = 1 << 30


# ----- fixtures: tiny weights and crafted images -----------------------------------------------------


CHAR_CONFIG = {  # the run config saved with the weights
    "dataset": "MnistDataset",
    "dataset_args": {"data_dir": str(SHARED_DATA_DIR / "mnist"), "test_set_only": True},
}


def _char_model() -> Any:
    from text_recognizer.models.character_model import CharacterModel

    torch.manual_seed(0)
    data_config = {
        "dataset": "MnistDataset",
        "kind": "characters",
        "input_shape": [28, 28],
        "output_shape": [10],
        "mapping": list("0123456789"),
        "preprocessing": {"resize": "square", "height": 28, "width": 28},
    }
    args = {"num_layers": 1, "layer_size": 8}
    return CharacterModel(data_config, "mlp", args, "cpu")


def _line_model() -> Any:
    from text_recognizer.datasets.text import text_config
    from text_recognizer.models.line_model_ctc import LineModelCtc

    torch.manual_seed(0)
    mapping = ["<B>", "<P>", *"ABC "]
    data_config = {
        "dataset": "KaggleNamesDataset",
        "kind": "lines",
        "input_shape": [32, 128],
        "mapping": mapping,
        **text_config(mapping, 16),
        "preprocessing": {"resize": "fit_height", "height": 32, "width": 128},
    }
    args = {"conv_channels": [4, 4, 4], "linear_size": 8, "lstm_hidden": 8}
    return LineModelCtc(data_config, "crnn", args, "cpu")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("weights")
    return {
        "char": _char_model().save_weights(folder / "char" / "weights.pt", CHAR_CONFIG),
        "line": _line_model().save_weights(
            folder / "line" / "weights.pt", {"dataset": "KaggleNamesDataset"}
        ),
    }


def _png_header(width: int, height: int, data: bytes = b"") -> bytes:
    """A PNG that claims width x height (8-bit grey) with ``data`` as its only pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    signature = b"\x89PNG\r\n\x1a\n"
    return (
        signature + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b"")
    )


def _save(folder: Path, name: str, image: Any, **kwargs: Any) -> Path:
    path = folder / name
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(path, **kwargs)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("images")
    digit = np.full((40, 40), 255, np.uint8)
    digit[8:32, 18:23] = 0  # a dark "1" on paper
    out = {
        "good": _save(d, "good.png", digit),
        "wide": _save(d, "wide.png", np.full((1, 100000), 200, np.uint8), optimize=True),
        "tall": _save(d, "tall.png", np.full((100000, 1), 200, np.uint8), optimize=True),
        "wide_ok": _save(d, "wide_ok.png", np.full((1, 32768), 200, np.uint8), optimize=True),
        "gray16": _save(d, "gray16.png", (digit.astype(np.uint16) * 257)),
        "cmyk": _save(d, "cmyk.jpg", Image.fromarray(digit).convert("CMYK")),
        "palette": _save(d, "palette.png", Image.fromarray(digit).convert("P")),
        "bilevel": _save(d, "bilevel.png", Image.fromarray(digit).convert("1")),
        "lab": _save(d, "lab.tif", Image.new("LAB", (40, 40), (200, 128, 128))),
        "rgba": _save(d, "rgba.png", Image.fromarray(np.stack([digit] * 4, -1))),
        "float": _save(d, "float.tif", Image.fromarray(digit.astype(np.float32) / 255, "F")),
        "anim": _save(
            d,
            "anim.gif",
            Image.fromarray(digit),
            save_all=True,
            append_images=[Image.new("L", (40, 40))],
        ),
    }
    bomb = d / "bomb.png"  # 20000 x 20000 claimed in 60 bytes: PIL's DecompressionBombError
    bomb.write_bytes(_png_header(20000, 20000))
    zero = d / "zero.png"
    zero.write_bytes(_png_header(0, 10))
    short = d / "short.png"  # a valid header, then far less data than it claims
    short.write_bytes(_png_header(4000, 4000, b"\0" * 100))
    data = out["good"].read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 2])
    (d / "garbage.png").write_bytes(os.urandom(300))
    (d / "empty.png").write_bytes(b"")
    (d / "eps.eps").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    (d / "folder.png").mkdir()
    nan = np.full((20, 20), np.nan, np.float32)
    _save(d, "nan.tif", Image.fromarray(nan, "F"))
    for name in ("truncated.png", "garbage.png", "empty.png", "eps.eps", "folder.png", "nan.tif"):
        out[name.split(".")[0]] = d / name
    out.update(bomb=bomb, zero=zero, short=short)
    return out


def _one_line_error(capsys: pytest.CaptureFixture, code: int, expected: int = 2) -> str:
    """The error line; stderr holds nothing else but progress lines (evaluate's data loading)."""
    captured = capsys.readouterr()
    assert code == expected, captured.err
    assert "Traceback" not in captured.err and captured.err.endswith("\n"), captured.err
    err = captured.err.strip().splitlines()[-1]
    assert err.startswith("error: ") and captured.err.count("error:") == 1, captured.err
    assert len(err) < 400, err
    return err


def _subprocess_error(result: Any, expected: int = 2) -> str:
    assert result.returncode == expected, result.stderr[-2000:]
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


# ----- defect 2: absurd aspect ratios cost memory by their dimensions, not their square ---------------


def test_defect2_wide_images_are_bounded_in_memory(weights, images) -> None:
    char = str(weights["char"])
    result = run_script(
        *memory_capped(2 * GiB), "text_recognizer.predict", str(images["wide"]), "--model", char
    )
    err = _subprocess_error(result)
    assert "100000x1 pixels" in err and "32768" in err
    # The widest allowed image: padding it to a square first needed a 1 GiB canvas.
    wide = str(images["wide_ok"])
    result = run_script(
        *memory_capped(5 * GiB // 4), "text_recognizer.predict", wide, "--model", char
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() in set("0123456789")


def test_defect2_page_and_paragraph_refuse_absurd_aspects(weights, images, capsys) -> None:
    tall, wide = str(images["tall"]), str(images["wide"])
    err = _one_line_error(capsys, page_ocr_main([tall, "--model", str(weights["char"])]))
    assert "1x100000 pixels" in err
    err = _one_line_error(capsys, paragraph_ocr_main([wide, "--model", str(weights["line"])]))
    assert "100000x1 pixels" in err


def test_defect2_square_resize_happens_before_padding() -> None:
    spec = {"resize": "square", "height": 28, "width": 28}
    start = time.perf_counter()
    out = preprocess_image(np.full((1, 30000), 255, np.uint8), spec, polarity="light")
    assert out.shape == (28, 28) and time.perf_counter() - start < 1.0
    assert out[13].min() == 255 and out[:13].max() == out[14:].max() == 0  # one centred row
    tall = preprocess_image(np.full((100, 50), 255, np.uint8), spec, polarity="light")
    assert tall[:, 7:21].min() == 255 and tall[:, :6].max() == 0  # centred, aspect kept


# ----- defects 3 and 15: weights files are checked before anything is built ---------------------------


def _payload(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=True)


def _mutate(payload: dict[str, Any], change: str) -> Any:
    """A copy of a valid payload with one hostile change."""
    p = {**payload, "data_config": dict(payload["data_config"])}
    p["state_dict"] = dict(payload["state_dict"])
    dc = p["data_config"]
    first = next(iter(p["state_dict"]))
    changes = {
        "huge input shape": lambda: dc.update(
            input_shape=[100000, 100000],
            preprocessing={"resize": "square", "height": 100000, "width": 100000},
        ),
        "zero input shape": lambda: dc.update(input_shape=[0, 28]),
        "empty mapping": lambda: dc.update(mapping=[], output_shape=[0]),
        "mapping of ints": lambda: dc.update(mapping=list(range(10))),
        "unencodable mapping": lambda: dc.update(mapping=["\ud800", *"123456789"]),
        "output shape": lambda: dc.update(output_shape=[11]),
        "preprocessing size": lambda: dc.update(
            preprocessing={"resize": "square", "height": 100000, "width": 100000}
        ),
        "preprocessing mode": lambda: dc.update(
            preprocessing={"resize": "x", "height": 28, "width": 28}
        ),
        "no data_config": lambda: p.pop("data_config"),
        "data_config list": lambda: p.update(data_config=[1]),
        "other network": lambda: p.update(network="lenet", network_args={}),
        "unknown network": lambda: p.update(network="nope"),
        "line network": lambda: p.update(network="crnn"),
        "unknown model": lambda: p.update(model="EvilModel"),
        "unknown network_args": lambda: p.update(network_args={"foo": 1}),
        "huge network_args": lambda: p.update(network_args={"num_layers": 64, "layer_size": 16384}),
        "network_args list": lambda: p.update(network_args=[1]),
        "tensor shape": lambda: p["state_dict"].update({first: torch.zeros(3, 3)}),
        "tensor missing": lambda: p["state_dict"].pop(first),
        "not tensors": lambda: p["state_dict"].update({first: [1.0, 2.0]}),
        "nan tensor": lambda: p["state_dict"].update(
            {first: torch.full_like(p["state_dict"][first], float("nan"))}
        ),
        "state_dict list": lambda: p.update(state_dict=[1]),
        "no version": lambda: p.pop("format_version"),
        "config list": lambda: p.update(config=[1]),
        "not a dict": lambda: p.clear(),
    }
    changes[change]()
    return [1, 2] if change == "not a dict" else p


HOSTILE_WEIGHTS = {
    "huge input shape": "input_shape",
    "zero input shape": "input_shape",
    "empty mapping": "mapping",
    "mapping of ints": "mapping",
    "unencodable mapping": "mapping",
    "output shape": "output_shape",
    "preprocessing size": "preprocessing",
    "preprocessing mode": "preprocessing",
    "no data_config": "no 'data_config'",
    "data_config list": "data_config must be a dict",
    "other network": "do not match network 'lenet'",
    "unknown network": "network 'nope' is not one of",
    "line network": "does not serve a CharacterModel",
    "unknown model": "model 'EvilModel' is not one of",
    "unknown network_args": "unknown key 'foo'",
    "huge network_args": "do not match network 'mlp'",
    "network_args list": "network_args must be a dict",
    "tensor shape": "is [3, 3]; its network needs",
    "tensor missing": "missing",
    "not tensors": "must map parameter names to tensors",
    "nan tensor": "NaN",
    "state_dict list": "must map parameter names to tensors",
    "no version": "weights format None",
    "config list": "config must be a dict",
    "not a dict": "not a dict",
}


@pytest.mark.parametrize("change", sorted(HOSTILE_WEIGHTS))
def test_defect15_hostile_weights_are_one_line(weights, images, tmp_path, capsys, change) -> None:
    bad = tmp_path / "weights.pt"
    torch.save(_mutate(_payload(weights["char"]), change), bad)
    err = _one_line_error(capsys, predict_main([str(images["good"]), "--model", str(bad)]))
    assert f"cannot read weights {bad}" in err and HOSTILE_WEIGHTS[change] in err, err


def test_defect3_huge_declared_shapes_fail_fast_under_a_memory_cap(
    weights, images, tmp_path
) -> None:
    bad = tmp_path / "weights.pt"
    torch.save(_mutate(_payload(weights["char"]), "huge input shape"), bad)
    good = str(images["good"])
    result = run_script(
        *memory_capped(2 * GiB), "text_recognizer.predict", good, "--model", str(bad)
    )
    assert "data_config.input_shape [100000, 100000] is out of bounds" in _subprocess_error(result)


def test_defect3_line_weights_config_and_indices_are_bounded(
    weights, images, tmp_path, capsys
) -> None:
    payload = _payload(weights["line"])
    cases = {
        "config.train_args.beam_width must be an integer from 1 to 100": {
            "config": {"train_args": {"decode": "beam", "beam_width": 10**9}}
        },
        "config.train_args.decode": {"config": {"train_args": {"decode": "bogus"}}},
        "blank_index": {"data_config": {**payload["data_config"], "blank_index": 999}},
        "max_length <= 4096": {
            "data_config": {**payload["data_config"], "output_shape": [10**6, 6]}
        },
    }
    for fragment, change in cases.items():
        bad = tmp_path / "weights.pt"
        torch.save({**payload, **change}, bad)
        err = _one_line_error(capsys, predict_main([str(images["good"]), "--model", str(bad)]))
        assert fragment in err, err


def test_defect15_weights_files_that_are_not_weights(
    weights, images, tmp_path, capsys, monkeypatch
):
    good = str(images["good"])
    legacy = tmp_path / "legacy.pt"
    torch.save(_payload(weights["char"]), legacy, _use_new_zipfile_serialization=False)
    data = weights["char"].read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "garbage.pt").write_bytes(os.urandom(2000))
    import zipfile

    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.txt", "hello")
    (tmp_path / "run" / "weights.pt").mkdir(parents=True)
    cases = {
        legacy: "not a torch zip archive",
        tmp_path / "truncated.pt": "not a readable weights file",
        tmp_path / "empty.pt": "the file is empty",
        tmp_path / "garbage.pt": "not a torch zip archive",
        tmp_path / "other.zip": "not one torch.save wrote",
        tmp_path / "run": "is a folder, not a weights file",
        Path("/dev/zero"): "not a regular file",
    }
    for path, fragment in cases.items():
        err = _one_line_error(capsys, predict_main([good, "--model", str(path)]))
        assert fragment in err, err
    from text_recognizer.models import weights_file

    monkeypatch.setattr(weights_file, "MAX_PICKLE_BYTES", 100)
    err = _one_line_error(capsys, predict_main([good, "--model", str(weights["char"])]))
    assert "its metadata is" in err


# ----- defect 14: decompression bombs ------------------------------------------------------------------


def test_defect14_decompression_bomb_is_one_line(weights, images, capsys) -> None:
    bomb = str(images["bomb"])
    for main, model in (
        (predict_main, "char"),
        (page_ocr_main, "char"),
        (paragraph_ocr_main, "line"),
    ):
        err = _one_line_error(capsys, main([bomb, "--model", str(weights[model])]))
        assert "400,000,000 pixels" in err and "67,108,864" in err, err


# ----- defect 24: output paths are checked before the work ---------------------------------------------


def test_defect24_page_out_checked_before_work(
    weights, images, tmp_path, capsys, monkeypatch
) -> None:
    page = tmp_path / "page.png"
    page.write_bytes(images["good"].read_bytes())
    before = page.read_bytes()

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the page was read before --out was checked")

    monkeypatch.setattr(page_ocr, "read_page", never)
    model = str(weights["char"])
    cases = {
        str(tmp_path / "annotated"): "give an image file name ending in .png",
        str(tmp_path / "annotated.txt"): "give an image file name ending in .png",
        str(tmp_path): "give an image file name",
        str(page): "is the page image itself",
    }
    (tmp_path / "dir.png").mkdir()
    cases[str(tmp_path / "dir.png")] = "it is a folder"
    (tmp_path / "file").write_text("x")
    cases[str(tmp_path / "file" / "out.png")] = "is a file, not a folder"
    for out, fragment in cases.items():
        err = _one_line_error(capsys, page_ocr_main([str(page), "--model", model, "--out", out]))
        assert fragment in err, err
    assert page.read_bytes() == before
    err = _one_line_error(capsys, page_ocr_main([str(page), "--model", model, "--min-size", "0"]))
    assert "--min-size must be from 1" in err


def test_defect24_page_out_on_a_full_or_read_only_disk(weights, images, small_disk, capsys) -> None:
    import subprocess

    model, page = str(weights["char"]), str(images["good"])
    disk = small_disk("1m")
    fill_disk(disk)
    err = _one_line_error(
        capsys, page_ocr_main([page, "--model", model, "--out", str(disk / "a.png")])
    )
    assert "the disk is full" in err
    (disk / ".filler").unlink()
    assert page_ocr_main([page, "--model", model, "--out", str(disk / "a.png")]) == 0
    assert Image.open(disk / "a.png").size == (40, 40)
    capsys.readouterr()
    if subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot remount the small tmpfs read-only")
    err = _one_line_error(
        capsys, page_ocr_main([page, "--model", model, "--out", str(disk / "b.png")])
    )
    assert "read-only" in err


def test_defect24_page_out_disk_fills_while_writing(weights, small_disk, capsys) -> None:
    rng = np.random.default_rng(0)
    noisy = (rng.random((700, 700)) * 255).astype(np.uint8)  # an annotated PNG of ~500 KB
    disk = small_disk("1m")
    _save(disk, "page.png", np.full((700, 700), 255, np.uint8))
    big = disk.parent / "noisy.png"
    Image.fromarray(noisy).save(big)
    fill_disk(disk, leave=64 << 10)
    code = page_ocr_main([str(big), "--model", str(weights["char"]), "--out", str(disk / "a.png")])
    assert "the disk is full" in _one_line_error(capsys, code, expected=1)
    assert sorted(p.name for p in disk.iterdir()) == [".filler", "page.png"]  # no temp file left


@pytest.fixture
def mnist_weights(weights: dict[str, Path], shared_data: Path) -> Path:
    if not (shared_data / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("../shared/data/mnist is missing")
    return weights["char"]


def test_defect24_evaluate_json_checked_before_work(mnist_weights, tmp_path, capsys) -> None:
    run = str(mnist_weights.parent)
    (tmp_path / "report").mkdir()
    cases = {
        str(tmp_path / "report"): "it is a folder",
        str(mnist_weights): "is the weights file being evaluated",
    }
    for out, fragment in cases.items():
        start = time.perf_counter()
        err = _one_line_error(capsys, evaluate_main([run, "--limit", "5", "--json", out]))
        assert fragment in err and time.perf_counter() - start < 1.0, err
    assert "--worst must be >= 0" in _one_line_error(capsys, evaluate_main([run, "--worst", "-1"]))
    deep = "[" * 100000
    assert "not valid JSON" in _one_line_error(capsys, evaluate_main([run, "--dataset-args", deep]))


def test_defect24_evaluate_json_on_a_full_disk(mnist_weights, small_disk, capsys) -> None:
    run = str(mnist_weights.parent)
    disk = small_disk("1m")
    fill_disk(disk)
    err = _one_line_error(capsys, evaluate_main([run, "--json", str(disk / "r.json")]))
    assert "the disk is full" in err
    (disk / ".filler").unlink()
    fill_disk(disk, leave=64 << 10)
    code = evaluate_main([run, "--limit", "2000", "--json", str(disk / "r.json")])
    assert "the disk is full" in _one_line_error(capsys, code, expected=1)
    assert sorted(p.name for p in disk.iterdir()) == [".filler"]


# ----- defects 32 and 33: short messages, bounded beam widths ------------------------------------------


def test_defect32_weights_errors_are_short(weights, images, tmp_path, capsys) -> None:
    from types import SimpleNamespace

    evil = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "obj": SimpleNamespace(a=1)}, evil)
    err = _one_line_error(capsys, predict_main([str(images["good"]), "--model", str(evil)]))
    assert "holds Python objects" in err and "Weights only load failed" not in err
    assert len(err) < 200


@pytest.mark.parametrize("beam", ["0", "-3", "101", str(10**9)])
def test_defect33_beam_width_is_bounded(weights, images, capsys, beam) -> None:
    good, line = str(images["good"]), str(weights["line"])
    err = _one_line_error(capsys, predict_main([good, "--model", line, "--beam", beam]))
    assert "--beam must be an integer from 1 to 100" in err
    err = _one_line_error(capsys, paragraph_ocr_main([good, "--model", line, "--beam", beam]))
    assert "--beam must be an integer from 1 to 100" in err


def test_defect33_beam_in_the_api_and_for_characters(weights, images, capsys) -> None:
    from text_recognizer import decoding

    with pytest.raises(UserError, match="from 1 to 100"):
        LinePredictor.from_weights(weights["line"], beam=0)
    with pytest.raises(ValueError, match="from 1 to 100"):
        decoding.beam_ctc_decode(torch.full((1, 4, 3), 1 / 3), beam_width=10**6)
    argv = [str(images["good"]), "--model", str(weights["char"]), "--kind", "character"]
    assert "--beam applies to CTC" in _one_line_error(capsys, predict_main([*argv, "--beam", "5"]))
    assert (
        predict_main([str(images["good"]), "--model", str(weights["line"]), "--beam", "100"]) == 0
    )


# ----- other hostile images: every file is read or refused in one line ---------------------------------

READABLE = ["good", "gray16", "cmyk", "palette", "bilevel", "lab", "rgba", "float", "anim"]
REFUSED = {
    "truncated": "corrupt or truncated",
    "short": "corrupt or truncated",
    "garbage": "not a known image format",
    "eps": "not a known image format",
    "empty": "the file is empty",
    "zero": "not a readable image",
    "folder": "is a folder, not an image file",
    "nan": "NaN or infinite",
}


def test_image_kinds_read_or_refused(weights, images, capsys) -> None:
    model = str(weights["char"])
    assert predict_main([*(str(images[k]) for k in READABLE), "--model", model]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(READABLE)
    for kind, fragment in REFUSED.items():
        # a bad image anywhere in the list: one line, and nothing printed for the good ones
        code = predict_main([str(images["good"]), str(images[kind]), "--model", model])
        captured = capsys.readouterr()
        assert code == 2 and captured.out == "", (kind, captured)
        assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
        assert str(images[kind]) in captured.err and fragment in captured.err, captured.err
    for kind in ("truncated", "folder", "bomb"):
        err = _one_line_error(capsys, page_ocr_main([str(images[kind]), "--model", model]))
        assert str(images[kind]) in err
        line = str(weights["line"])
        err = _one_line_error(capsys, paragraph_ocr_main([str(images[kind]), "--model", line]))
        assert str(images[kind]) in err


def test_noisy_page_is_quick_or_refused(weights, monkeypatch, tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    blocks = (rng.random((200, 200)) > 0.7).astype(np.uint8) * 255
    page = 255 - np.kron(blocks, np.ones((10, 10), np.uint8))  # ~4000 candidate boxes
    start = time.perf_counter()
    boxes = page_ocr.find_boxes(page)
    assert len(boxes) > 3000 and time.perf_counter() - start < 5  # was 18 s: quadratic filter
    path = _save(tmp_path, "noise.png", page)
    monkeypatch.setattr(page_ocr, "MAX_BOXES", 1000)
    err = _one_line_error(capsys, page_ocr_main([str(path), "--model", str(weights["char"])]))
    assert "not a page of separated characters" in err


def test_interrupt_is_exit_130(weights, images, monkeypatch, capsys) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(page_ocr, "read_page", interrupted)
    code = page_ocr_main([str(images["good"]), "--model", str(weights["char"])])
    assert code == 130 and capsys.readouterr().err.strip() == "error: interrupted"


def test_batches_are_bounded_by_pixels(weights) -> None:
    predictor = LinePredictor.from_weights(weights["line"])
    assert predictor.batch_size(128) == 128
    predictor.preprocessing = {**predictor.preprocessing, "height": 1024, "width": 1024}
    assert predictor.batch_size(128) == 4


# ----- ground truth for paragraph OCR --------------------------------------------------------------


def test_hostile_ground_truth(weights, images, tmp_path, capsys) -> None:
    image = tmp_path / "a01-000.png"
    image.write_bytes(images["good"].read_bytes())
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes('{"a01-000": "caf\xe9"}'.encode("latin-1"))
    deep = tmp_path / "deep.json"
    deep.write_text('{"a01-000": ' + "[" * 100000)
    nested = tmp_path / "nested.json"
    nested.write_text(json.dumps({"a01-000": {"text": "no ground_truth_text"}}))
    rows = tmp_path / "lines.txt"
    rows.write_text("a01-000-00 ok 154 19 408 746 1661 89 A|MOVE\n garbage row\n")
    (tmp_path / "truth").mkdir()
    cases = {
        latin1: "not UTF-8 text (byte 0xe9 at offset 16)",
        deep: "JSON nested too deeply",
        nested: "must be a string or an object with 'ground_truth_text'",
        rows: "expected 'id ok|err gray n x y w h words'",
        tmp_path / "truth": "is a folder, not a file",
        tmp_path / "missing.json": "no such file",
    }
    line = str(weights["line"])
    for path, fragment in cases.items():
        code = paragraph_ocr_main([str(image), "--model", line, "--ground-truth", str(path)])
        err = _one_line_error(capsys, code)
        assert fragment in err, err
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps({"a01-000": "AB"}).encode())
    assert paragraph_ocr_main([str(image), "--model", line, "--ground-truth", str(bom)]) == 0
    assert "overall: CER" in capsys.readouterr().out


def _views_payload(payload: dict[str, Any], how: str) -> dict[str, Any]:
    """An mlp whose tensors are views: more elements than the file really holds."""
    from text_recognizer.networks import build_network

    if how == "expanded":  # a huge first layer, within every bound
        side, args = 2048, {"num_layers": 1, "layer_size": 128}
    else:  # many tensors, each a view of the largest
        side, args = 28, {"num_layers": 4, "layer_size": 512}
    p = {**payload, "network_args": args}
    p["data_config"] = {
        **payload["data_config"],
        "input_shape": [side, side],
        "preprocessing": {"resize": "square", "height": side, "width": side},
    }
    with torch.device("meta"):
        net = build_network("mlp", (side, side), (10,), **args)
    shapes = {k: v.shape for k, v in net.state_dict().items()}
    if how == "expanded":  # stride 0: one float claims 2048*2048*128 of them
        p["state_dict"] = {k: torch.zeros(1).expand(s) for k, s in shapes.items()}
    else:  # every tensor a view into one shared storage
        shared = torch.zeros(max(math.prod(s) for s in shapes.values()))
        p["state_dict"] = {k: shared[: math.prod(s)].view(s) for k, s in shapes.items()}
    return p


@pytest.mark.parametrize("how", ["expanded", "shared"])
def test_defect3_views_cannot_claim_more_than_the_file_holds(weights, images, tmp_path, how):
    # A 4 KB file of expanded (stride-0) tensors passed the element-count bound and then made the
    # network build allocate 2 GB; with layer_size 16384, 275 GB.
    bad = tmp_path / "weights.pt"
    torch.save(_views_payload(_payload(weights["char"]), how), bad)
    if how == "expanded":
        assert bad.stat().st_size < 64 << 10
    good = str(images["good"])
    result = run_script(
        *memory_capped(2 * GiB), "text_recognizer.predict", good, "--model", str(bad)
    )
    assert "is a view (expanded, strided or sharing storage" in _subprocess_error(result)


def test_mapping_with_control_characters_is_refused(weights, images, tmp_path, capsys):
    # A mapping entry is printed as the prediction: escape sequences would reach the terminal and a
    # newline would break the one-line-per-image output.
    payload = _payload(weights["char"])
    for entry in ("\x1b]0;owned\x07\x1b[2J2", "\n"):
        mapping = [entry, *payload["data_config"]["mapping"][1:]]
        bad = tmp_path / "weights.pt"
        torch.save({**payload, "data_config": {**payload["data_config"], "mapping": mapping}}, bad)
        err = _one_line_error(capsys, predict_main([str(images["good"]), "--model", str(bad)]))
        assert "control characters" in err


def _special_files(folder: Path, suffix: str) -> list[Path]:
    """A FIFO and (as root) a character device like /dev/null, each named ``*suffix``."""
    fifo = folder / f"fifo{suffix}"
    os.mkfifo(fifo)
    made = [fifo]
    if os.geteuid() == 0:
        device = folder / f"null{suffix}"
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        made.append(device)
    return made


def test_outputs_never_replace_devices_pipes_or_the_runs_own_records(
    mnist_weights, weights, images, tmp_path, capsys
) -> None:
    # The atomic rename would replace the special file itself: as root, --json /dev/null made
    # /dev/null a regular file. A run's own record given as --json was overwritten.
    run = mnist_weights.parent
    specials = _special_files(tmp_path, ".json")
    record = run / "config.json"
    record.write_text('{"kept": true}')
    for out in [*specials, record, run / "summary.json", run / "confusion_matrix.png"]:
        err = _one_line_error(capsys, evaluate_main([str(run), "--limit", "5", "--json", str(out)]))
        assert "device, pipe or socket" in err or "the run's own records" in err, err
    assert record.read_text() == '{"kept": true}'
    pngs = _special_files(tmp_path, ".png")
    for out in pngs:
        page = [str(images["good"]), "--model", str(weights["char"]), "--out", str(out)]
        assert "device, pipe or socket" in _one_line_error(capsys, page_ocr_main(page))
    for path in [*specials, *pngs]:
        assert not path.is_file() and (stat.S_ISFIFO(path.stat().st_mode) or path.is_char_device())


def test_a_closed_output_pipe_is_quiet(weights, images) -> None:
    # `predict many.png ... | head -1`: the reader goes away; exit 141 like other Unix tools, and
    # no BrokenPipeError traceback.
    import subprocess

    many = [str(images["good"])] * 400
    cmd = [sys.executable, "-m", "text_recognizer.predict", *many, "--model", str(weights["char"])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=PROJECT_ROOT)
    proc.stdout.readline()
    proc.stdout.close()
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 141, stderr
    assert b"Traceback" not in stderr and b"BrokenPipe" not in stderr


def test_a_fifo_is_named_as_such_not_as_missing(weights, images, tmp_path, capsys) -> None:
    fifo = tmp_path / "image.png"
    os.mkfifo(fifo)
    err = _one_line_error(capsys, predict_main([str(fifo), "--model", str(weights["char"])]))
    assert "is a device or pipe, not an image file" in err
    from text_recognizer.errors import UserError
    from text_recognizer.ground_truth import read_ground_truth

    with pytest.raises(UserError, match="is not a regular file"):
        read_ground_truth(fifo)
