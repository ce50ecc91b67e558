"""ONNX export and the onnx runtime of the predictors: the same texts as torch on every shared test
image, raw outputs within 1e-4 relative to the logits' scale (max |onnx - torch| / max(1, max
|torch|): the export's own check), every registered network exports (dynamic batch, and width where
the network allows it), and every bad input is one line, exit 2, with nothing written."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
import string
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from predict_fixtures import (  # noqa: F401
    KAGGLE_DIR,
    MNIST_DIR,
    kaggle_run,
    mnist_run,
    noisy_line_run,
)

from text_recognizer.datasets.text import make_mapping
from text_recognizer.errors import DataError, UserError
from text_recognizer.export import export_main, export_onnx
from text_recognizer.networks import NETWORKS
from text_recognizer.onnx_runtime import ONNX_METADATA_KEY, OnnxNetwork
from text_recognizer.paths import SHARED_DATA_DIR
from text_recognizer.predict import predict_main
from text_recognizer.predictors import load_predictor

onnx = pytest.importorskip("onnx", reason="exporting needs onnx (pip install onnx)")
ort = pytest.importorskip("onnxruntime", reason="the onnx runtime needs onnxruntime")

# Outputs: max |onnxruntime - torch| / max(1, max |torch|), the export check's measure (float32
# rounding grows with the logits). Confidences are probabilities: absolute.
TOLERANCE = 1e-4
SCALE = 40.0  # the untrained output layers' weights
# timm's way: a network that cannot export is listed here with the reason, and its test skips
# saying so. Empty: every registered network exports.
CANNOT_EXPORT: dict[str, str] = {}
FIXED_WIDTH = {"line_cnn", "mlp", "lenet", "resnet"}
# Small sizes keep the per-network test fast; depth stays (stacked LSTMs, residual stages).
SMALL_ARGS = {
    "resnet": {"base_channels": 8},
    "line_lstm_ctc": {"window_features": 32, "lstm_hidden": 32, "lstm_layers": 2},
    "crnn": {"conv_channels": [8, 16, 16], "linear_size": 16, "lstm_hidden": 32},
    "resnet_crnn": {"base_channels": 8, "lstm_hidden": 32},
    "htr_crnn": {"base_channels": 8, "lstm_hidden": 32, "lstm_layers": 2},
}


def _images(*patterns: str) -> list[Path]:
    return sorted(p for pattern in patterns for p in SHARED_DATA_DIR.glob(pattern))


CHARACTER_IMAGES = _images(
    "emnist/goby56_digit_images/*.png",
    "emnist/goby56_balanced_images/*.png",
    "emnist/support/*.png",
)
LINE_IMAGES = _images(
    "kaggle_handwriting_names/test_v2/*.jpg",
    "iam/lines_support/*.png",
    "emnist_lines/support/*.png",
    "demo_handwriting/*.png",
)


@pytest.fixture(scope="module", autouse=True)
def _shared_images() -> None:
    if not CHARACTER_IMAGES or not LINE_IMAGES:
        pytest.skip("../shared/data (its character and line images) is missing")


def mnist_test_images() -> np.ndarray:
    """The 10,000 MNIST test digits, straight from the idx file (16-byte header)."""
    with gzip.open(MNIST_DIR / "t10k-images-idx3-ubyte.gz") as f:
        return np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28).copy()


def raw_outputs(predictor, x: np.ndarray) -> np.ndarray:
    """The network's outputs for prepared uint8 images, through the model's own scaling."""
    model = predictor.model
    with torch.no_grad():
        return model.network(model.preprocess(torch.as_tensor(x))).numpy()


def relative_diff(got: np.ndarray, expected: np.ndarray) -> float:
    """max |got - expected| / max(1, max |expected|): export.py's check, NaN-proof."""
    assert got.shape == expected.shape
    assert np.isfinite(got).all() and np.isfinite(expected).all()
    return float(np.abs(got - expected).max() / max(1.0, float(np.abs(expected).max())))


def assert_same_reading(torch_pred, onnx_pred, images, prepared: bool = False) -> list[str]:
    """Same texts, confidences within 1e-4 and raw outputs within 1e-4 (relative to the
    logits' scale) on ``images`` (files, or with ``prepared`` an (N, H, W) uint8 array the
    network takes as it is). The ONNX side must really run in onnxruntime."""
    assert isinstance(onnx_pred.model.network, OnnxNetwork)
    assert isinstance(torch_pred.model.network, torch.nn.Module)
    if prepared:
        x = np.asarray(images)
    else:
        x = np.stack([torch_pred.prepare(image) for image in images])
        assert np.array_equal(x, np.stack([onnx_pred.prepare(image) for image in images]))
    diff = relative_diff(raw_outputs(onnx_pred, x), raw_outputs(torch_pred, x))
    assert diff <= TOLERANCE, diff
    expected, got = torch_pred.predict_arrays(x), onnx_pred.predict_arrays(x)
    assert [p.text for p in got] == [p.text for p in expected]
    for g, e in zip(got, expected, strict=True):
        assert g.confidence == pytest.approx(e.confidence, abs=TOLERANCE)
    return [p.text for p in expected]


def exit_code(main, argv: list) -> int:
    """A command's exit code, whether it returns it or argparse exits with it."""
    try:
        return main([*map(str, argv)])
    except SystemExit as done:
        return int(done.code)


def export_cli(capsys, *argv: object) -> tuple[int, str]:
    code = exit_code(export_main, list(argv))
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def exported(request: pytest.FixtureRequest) -> dict[str, Path]:
    """The trained fixtures' runs (the line one with noise, see noisy_line_run), each exported
    once to its run folder's model.onnx (the default place, which --runtime onnx reads from a
    run folder)."""
    runs = {}
    for name in ("mnist_run", "noisy_line_run"):
        run = request.getfixturevalue(name)
        assert export_main([str(run)]) == 0
        assert (run / "model.onnx").is_file()
        runs[name] = run
    return runs


# ----- parity on the real shared images ---------------------------------------------------------


def test_characters_same_as_torch_on_every_shared_image(exported) -> None:
    run = exported["mnist_run"]
    torch_pred, onnx_pred = load_predictor(run), load_predictor(run, runtime="onnx")
    assert onnx_pred.kind == torch_pred.kind == "character"
    texts = assert_same_reading(torch_pred, onnx_pred, CHARACTER_IMAGES)
    # the 10,000 MNIST test digits are already what the network takes (28x28, white on black)
    texts += assert_same_reading(torch_pred, onnx_pred, mnist_test_images(), prepared=True)
    assert len(set(texts)) == 10  # a real reading, not one class everywhere


def test_trained_line_model_same_as_torch_on_every_shared_image(exported) -> None:
    run = exported["noisy_line_run"]
    torch_pred, onnx_pred = load_predictor(run), load_predictor(run / "model.onnx", runtime="onnx")
    assert type(onnx_pred) is type(torch_pred)
    assert onnx_pred.decoder == torch_pred.decoder
    assert onnx_pred.model.mapping == torch_pred.model.mapping
    assert onnx_pred.preprocessing == torch_pred.preprocessing
    texts = assert_same_reading(torch_pred, onnx_pred, LINE_IMAGES)
    assert sum(map(bool, texts)) > len(texts) // 2 and len(set(texts)) > 10  # real readings
    # beam search reads the ONNX outputs through the same decoder code
    beam_torch, beam_onnx = load_predictor(run, beam=4), load_predictor(run, 4, runtime="onnx")
    assert any(assert_same_reading(beam_torch, beam_onnx, LINE_IMAGES[:16]))


def test_predict_command_onnx_same_as_torch(exported, capsys) -> None:
    for run, images in (
        (exported["noisy_line_run"], LINE_IMAGES),
        (exported["mnist_run"], CHARACTER_IMAGES),
    ):
        rows = {}
        for runtime in ("torch", "onnx"):
            argv = [*map(str, images), "--model", str(run), "--json", "--runtime", runtime]
            assert predict_main(argv) == 0
            rows[runtime] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert len(rows["onnx"]) == len(images)
        assert [r["text"] for r in rows["onnx"]] == [r["text"] for r in rows["torch"]]
        assert len({r["text"] for r in rows["onnx"]}) > 5 and all(
            r["text"] for r in rows["onnx"][:5]
        )
        for o, t in zip(rows["onnx"], rows["torch"], strict=True):
            assert o["confidence"] == pytest.approx(t["confidence"], abs=TOLERANCE)


def test_predict_command_onnx_with_kind(exported, capsys) -> None:
    run = exported["noisy_line_run"]
    image = str(LINE_IMAGES[0])
    assert predict_main([image, "--model", str(run), "--kind", "line", "--runtime", "onnx"]) == 0
    assert capsys.readouterr().out.strip() == load_predictor(run).predict(image).text
    argv = [image, "--model", str(run), "--kind", "character", "--runtime", "onnx"]
    assert predict_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "needs a character model" in err and len(err.splitlines()) == 1


def test_evaluate_onnx_same_as_torch(exported) -> None:
    from text_recognizer.evaluate import evaluate_run

    run = exported["noisy_line_run"]
    on_torch = evaluate_run(run, split="test", limit=40)
    on_onnx = evaluate_run(run, split="test", limit=40, runtime="onnx")
    assert on_onnx["runtime"] == "onnx" and on_torch["runtime"] == "torch"
    texts = [p["prediction"] for p in on_onnx["predictions"]]
    assert texts == [p["prediction"] for p in on_torch["predictions"]]
    assert len(texts) == 40 and len(set(texts)) > 5  # the noisy model's texts vary


def test_concurrent_readers_share_one_session(exported) -> None:
    """What the server does: many threads on one ONNX predictor, each gets its own answer."""
    predictor = load_predictor(exported["noisy_line_run"], runtime="onnx", threads=1)
    assert isinstance(predictor.model.network, OnnxNetwork)
    x = np.stack([predictor.prepare(image) for image in LINE_IMAGES[:24]])
    expected = [p.text for p in predictor.predict_arrays(x)]
    assert len(set(expected)) > 5  # each thread's answer is told apart from another's
    results: dict[int, list[str]] = {}

    def read(i: int) -> None:
        rows = x[i % 3 :: 3]
        results[i] = [p.text for p in predictor.predict_arrays(rows, batch_size=2)]

    threads = [threading.Thread(target=read, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, texts in results.items():
        assert texts == expected[i % 3 :: 3]


# ----- every registered network -----------------------------------------------------------------


def untrained_run(tmp: Path, network: str) -> Path:
    """weights.pt of an untrained ``network`` (seeded) at a small shape of its kind."""
    from text_recognizer.models import MODELS

    entry = NETWORKS[network]
    if entry.kind == "characters":
        mapping = list(string.digits)
        data_config = {"mapping": mapping, "input_shape": [28, 28], "output_shape": [10]}
        data_config["kind"] = "characters"
        model_name = "CharacterModel"
    else:
        mapping = make_mapping(string.ascii_letters + string.digits + " .,'-")
        data_config = {
            "mapping": mapping,
            "input_shape": [32, 256],
            "output_shape": [16, len(mapping)],
            "kind": "lines",
            "max_length": 16,
            "blank_index": 0,
            "padding_index": 1,
            "preprocessing": {"resize": "fit_height", "height": 32, "width": 256},
        }
        model_name = (entry.models or ("LineModelCtc",))[0]
    torch.manual_seed(0)
    args = SMALL_ARGS.get(network, {})
    model = MODELS[model_name].load()(data_config, network, args, "cpu")
    weighted = [m.weight for m in model.network.modules() if getattr(m, "weight", None) is not None]
    with torch.no_grad():  # untrained logits are near ties: spread them, so texts vary
        weighted[0].mul_(4.0)  # the first layer: inputs differ more
        for weight in weighted:
            if weight.shape[0] == len(mapping):  # the output layers
                weight.mul_(SCALE)
    config = {"network": network, "network_args": args, "model": model_name, "train_args": {}}
    return model.save_weights(tmp / "weights.pt", config).parent


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_every_registered_network_exports(tmp_path: Path, network: str) -> None:
    if network in CANNOT_EXPORT:
        pytest.skip(f"{network} cannot be exported to ONNX: {CANNOT_EXPORT[network]}")
    run = untrained_run(tmp_path, network)
    report = export_onnx(run, run / "model.onnx")
    assert report["relative_diff"] <= TOLERANCE
    assert report["relative_diff"] == report["max_diff"] / report["scale"]
    dynamic_width = network not in FIXED_WIDTH
    assert report["dynamic"] == (["batch", "width"] if dynamic_width else ["batch"])
    torch_pred, onnx_pred = load_predictor(run), load_predictor(run, runtime="onnx")
    lines = NETWORKS[network].kind == "lines"
    texts = assert_same_reading(torch_pred, onnx_pred, LINE_IMAGES if lines else CHARACTER_IMAGES)
    assert len(set(texts)) > 1  # the seeded, spread weights read the images differently

    # dynamic batch: 1 and 5 images; dynamic width where the network allows it
    session = onnx_pred.model.network.session
    height, width = onnx_pred.input_shape
    generator = torch.Generator().manual_seed(1)
    shapes = [(1, height, width), (5, height, width)]
    if dynamic_width:
        shapes += [(2, height, width + 40), (1, height, width * 2)]
    for shape in shapes:
        x = torch.rand(shape, generator=generator)
        with torch.no_grad():
            expected = torch_pred.model.network(x).numpy()
        (got,) = session.run(None, {"images": x.numpy()})
        assert got.shape == expected.shape
        assert relative_diff(got, expected) <= TOLERANCE
    if not dynamic_width:  # a fixed width is declared in the graph: another one is refused
        with pytest.raises(Exception, match=r"(?i)invalid dimensions"):
            session.run(None, {"images": np.zeros((1, height, width + 8), np.float32)})
    meta = json.loads(onnx.load(run / "model.onnx").metadata_props[0].value)
    assert meta["network"] == network and meta["input"]["shape"][1] == height
    assert meta["kind"] == ("line" if lines else "character")


# ----- errors: one line, exit 2, nothing written ------------------------------------------------


def test_export_command_errors(tmp_path: Path, capsys, mnist_run: Path) -> None:  # noqa: F811
    folder = tmp_path / "folder.onnx"
    folder.mkdir()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "weights.pt").write_bytes(b"not a torch zip archive")
    cases = [
        ([tmp_path / "no-such-run"], "no run directory or weights file"),
        ([tmp_path], "has no weights.pt"),
        ([corrupt], "not a torch zip archive"),
        ([mnist_run, "--onnx", folder], "is a folder"),
        ([mnist_run, "--onnx", tmp_path / "model.txt"], "must end in .onnx"),
        ([mnist_run, "--onnx", a_file / "model.onnx"], "is a file, not a folder"),
        ([mnist_run, "--opset", "9"], "--opset must be from"),
        ([mnist_run, "--opset", "x"], "invalid int value"),
        ([], "the following arguments are required"),
    ]
    for argv, fragment in cases:
        code, err = export_cli(capsys, *argv)
        assert code == 2, (argv, err)
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        assert fragment in err, (argv, err)
    assert not list(tmp_path.rglob("*.onnx*"))[1:]  # only the folder named folder.onnx


def test_unwritable_output(tmp_path: Path, capsys, mnist_run: Path) -> None:  # noqa: F811
    import os

    if os.geteuid() == 0:
        target = Path("/proc/model.onnx")  # not writable even by root
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "model.onnx"
    code, err = export_cli(capsys, mnist_run, "--onnx", target)
    assert code == 2 and err.startswith("error: cannot write --onnx"), err
    assert len(err.strip().splitlines()) == 1


def test_export_that_differs_from_torch_writes_nothing(
    tmp_path: Path,
    capsys,
    monkeypatch: pytest.MonkeyPatch,
    mnist_run: Path,  # noqa: F811
) -> None:
    from text_recognizer import export

    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # no export can pass: the refusal path
    out = tmp_path / "m.onnx"
    code, err = export_cli(capsys, mnist_run, "--onnx", out)
    assert code == 2 and "differs from torch" in err and "nothing written" in err
    assert not list(tmp_path.iterdir())  # neither the model nor a temp file


def _with_metadata(src: Path, dst: Path, change) -> Path:
    proto = onnx.load(src)
    (entry,) = [p for p in proto.metadata_props if p.key == ONNX_METADATA_KEY]
    value = change(json.loads(entry.value))
    if value is None:
        proto.metadata_props.remove(entry)
    else:
        entry.value = value if isinstance(value, str) else json.dumps(value)
    onnx.save(proto, dst)
    return dst


def test_onnx_runtime_errors(tmp_path: Path, exported) -> None:
    run = exported["noisy_line_run"]
    model = run / "model.onnx"
    not_onnx = tmp_path / "garbage.onnx"
    not_onnx.write_bytes(b"\x00garbage" * 10)
    empty_run = tmp_path / "empty-run"
    empty_run.mkdir()

    def mapping_with_escape(meta):
        meta["data_config"]["mapping"][5] = "\x1b[2J"
        return meta

    def huge_network(meta):
        meta["network_args"]["lstm_hidden"] = 8192
        meta["network_args"]["lstm_layers"] = 8
        return meta

    cases = [
        (tmp_path / "nothing-here", "no run directory or ONNX model"),
        (empty_run, "has no model.onnx; export it first"),
        (run / "weights.pt", "is not an .onnx file"),
        (not_onnx, "not a readable ONNX model"),
        (_with_metadata(model, tmp_path / "bare.onnx", lambda m: None), "has no 'text_recognizer'"),
        (_with_metadata(model, tmp_path / "j.onnx", lambda m: "{not json"), "not valid JSON"),
        (_with_metadata(model, tmp_path / "f.onnx", lambda m: {**m, "format": 99}), "format"),
        (_with_metadata(model, tmp_path / "e.onnx", mapping_with_escape), "control characters"),
        (_with_metadata(model, tmp_path / "h.onnx", huge_network), "more than the file holds"),
    ]
    for path, fragment in cases:
        with pytest.raises(UserError, match=fragment) as caught:
            load_predictor(path, runtime="onnx")
        assert "\n" not in str(caught.value)
    with pytest.raises(DataError):
        load_predictor(tmp_path / "bare.onnx", runtime="onnx")
    for bad in (0, -1, 10_000, True, "2"):
        with pytest.raises(UserError, match="threads must be an integer"):
            load_predictor(run, runtime="onnx", threads=bad)
    with pytest.raises(UserError, match="threads applies to the onnx runtime"):
        load_predictor(run, threads=2)
    with pytest.raises(UserError, match="runtime must be one of"):
        load_predictor(run, runtime="tensorrt")


def test_predict_command_onnx_errors(tmp_path: Path, capsys, exported) -> None:
    image = str(LINE_IMAGES[0])
    cases = [
        (["--model", str(tmp_path), "--runtime", "onnx"], "has no model.onnx"),
        (["--model", str(exported["noisy_line_run"]), "--runtime", "tflite"], "invalid choice"),
    ]
    for argv, fragment in cases:
        assert exit_code(predict_main, [image, *argv]) == 2
        err = capsys.readouterr().err
        assert fragment in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("opset", [13, 20])
def test_lowest_and_highest_opsets(tmp_path: Path, opset: int) -> None:
    """The --opset bounds both export, for a line network (LSTM) and a character one."""
    from text_recognizer.export import MAX_OPSET, MIN_OPSET

    assert (MIN_OPSET, MAX_OPSET) == (13, 20)
    for network in ("line_lstm_ctc", "lenet"):
        run = untrained_run(tmp_path / network, network)
        export_onnx(run, run / "model.onnx", opset)
        meta = json.loads(onnx.load(run / "model.onnx").metadata_props[0].value)
        assert meta["opset"] == opset
        images = LINE_IMAGES[:8] if network == "line_lstm_ctc" else CHARACTER_IMAGES[:20]
        assert_same_reading(load_predictor(run), load_predictor(run, runtime="onnx"), images)


# ----- the reviewer's findings: graph against metadata, NaN, stale exports, scale, hints --------


def test_graph_that_disagrees_with_its_metadata(tmp_path: Path, capsys) -> None:
    """A graph taking 28x28 images whose metadata says 32x32 (or 11 classes where the graph has
    10): one line at load, not an onnxruntime traceback on every image."""
    run = untrained_run(tmp_path / "lenet", "lenet")
    model = export_onnx(run, run / "model.onnx")["path"]

    def at_32(meta):
        dc = meta["data_config"]
        dc["input_shape"] = [32, 32]
        dc["preprocessing"] = {**dc["preprocessing"], "height": 32, "width": 32}
        return meta

    def eleven_classes(meta):
        dc = meta["data_config"]
        dc["mapping"] = [*dc["mapping"], "x"]
        dc["output_shape"] = [11]
        return meta

    cases = [
        (_with_metadata(model, tmp_path / "at32.onnx", at_32), "its graph takes (N, 28, 28)"),
        (_with_metadata(model, tmp_path / "c11.onnx", eleven_classes), "its graph gives outputs"),
    ]
    image = str(CHARACTER_IMAGES[0])
    for path, fragment in cases:
        with pytest.raises(DataError, match=re.escape(fragment)) as caught:
            load_predictor(path, runtime="onnx")
        assert str(path) in str(caught.value) and "\n" not in str(caught.value)
        assert exit_code(predict_main, [image, "--model", path, "--runtime", "onnx"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and fragment in err and len(err.splitlines()) == 1, err

    # what onnxruntime refuses at run time is one DataError naming the file, not its traceback
    network = load_predictor(model, runtime="onnx").model.network
    assert isinstance(network, OnnxNetwork)
    with pytest.raises(DataError, match=r"cannot run on images of shape \[1, 28, 36\]") as caught:
        network(torch.zeros(1, 28, 36))
    assert str(model) in str(caught.value) and "\n" not in str(caught.value)


def test_nan_outputs_fail_the_export_check(
    tmp_path: Path,
    capsys,
    monkeypatch: pytest.MonkeyPatch,
    mnist_run: Path,  # noqa: F811
) -> None:
    """onnxruntime answering NaN (a broken kernel, an overflow) must not pass as "no difference"
    (``max(0.0, nan)`` is 0.0): the check fails and nothing is written."""
    run = ort.InferenceSession.run

    def nan_run(self, *args, **kwargs):
        return [np.full_like(out, np.nan) for out in run(self, *args, **kwargs)]

    monkeypatch.setattr(ort.InferenceSession, "run", nan_run)
    out = tmp_path / "m.onnx"
    code, err = export_cli(capsys, mnist_run, "--onnx", out)
    assert code == 2 and "non-finite outputs" in err and "nothing written" in err, err
    assert len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_tolerance_is_relative_to_the_logits_scale(tmp_path: Path) -> None:
    """Logits in the 1e5 range differ from torch by float32 rounding (~1e-2 absolute): that is
    not a broken export, so the check (and the parity tests) judge the difference relative to
    max(1, max |logit|)."""
    from text_recognizer.models.base import Model

    run = untrained_run(tmp_path, "lenet")
    model, config = Model.load_with_config(run / "weights.pt")
    weighted = [m for m in model.network.modules() if getattr(m, "weight", None) is not None]
    with torch.no_grad():
        weighted[-1].weight.mul_(1e4)
        weighted[-1].bias.mul_(1e4)
    model.save_weights(run / "weights.pt", config)
    report = export_onnx(run, run / "model.onnx")
    assert report["scale"] > 1e4 and report["max_diff"] > TOLERANCE  # fails an absolute check
    assert report["relative_diff"] <= TOLERANCE
    torch_pred, onnx_pred = load_predictor(run), load_predictor(run, runtime="onnx")
    assert_same_reading(torch_pred, onnx_pred, CHARACTER_IMAGES[:40])


def test_stale_export_is_refused(tmp_path: Path, capsys, mnist_run: Path) -> None:  # noqa: F811
    """A run's model.onnx records the weights.pt it came from (size, sha256; the run by name,
    not as a host path): once weights.pt changes, --runtime onnx refuses the old export."""
    from text_recognizer.models.base import Model

    run = tmp_path / "digits-run"
    shutil.copytree(mnist_run, run)
    (run / "model.onnx").unlink(missing_ok=True)
    model = run / "model.onnx"
    assert export_main([str(run)]) == 0
    capsys.readouterr()
    meta = json.loads(onnx.load(model).metadata_props[0].value)
    data = (run / "weights.pt").read_bytes()
    assert meta["weights"] == {
        "name": "weights.pt",
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    assert meta["source"] == "digits-run"  # the run folder's name only
    assert str(tmp_path) not in json.dumps(meta)
    assert isinstance(load_predictor(run, runtime="onnx").model.network, OnnxNetwork)

    trained, config = Model.load_with_config(run / "weights.pt")  # "trained again"
    with torch.no_grad():
        next(trained.network.parameters()).add_(0.01)
    trained.save_weights(run / "weights.pt", config)
    stale = (
        f"{model} was exported from another weights.pt; export it again: "
        f"python -m text_recognizer.export {run}"
    )
    for path in (run, model):
        with pytest.raises(UserError) as caught:
            load_predictor(path, runtime="onnx")
        assert str(caught.value) == stale
    image = str(CHARACTER_IMAGES[0])
    assert exit_code(predict_main, [image, "--model", run, "--runtime", "onnx"]) == 2
    assert capsys.readouterr().err == f"error: {stale}\n"

    # same size, one byte changed: the sha256 tells them apart
    changed = bytearray(data)
    changed[len(changed) // 2] ^= 0xFF
    (run / "weights.pt").write_bytes(bytes(changed))
    with pytest.raises(UserError, match=r"was exported from another weights\.pt"):
        load_predictor(model, runtime="onnx")
    (run / "weights.pt").write_bytes(data)  # the exported file back: read again
    assert load_predictor(run, runtime="onnx").predict(image).text
    # an export that records no weights (an older exporter) cannot be vouched for beside them
    unrecorded = _with_metadata(model, run / "old.onnx", lambda m: {**m, "weights": None})
    with pytest.raises(UserError, match=r"does not record which weights\.pt .* --onnx "):
        load_predictor(unrecorded, runtime="onnx")

    # an .onnx given alone (no weights beside it) is read as it is
    alone = tmp_path / "shipped" / "digits.onnx"
    alone.parent.mkdir()
    shutil.copy(model, alone)
    assert load_predictor(alone, runtime="onnx").predict(image).text
    # another name beside other weights: the command names both
    (alone.parent / "weights.pt").write_bytes(b"other weights")
    with pytest.raises(UserError) as caught:
        load_predictor(alone, runtime="onnx")
    assert str(caught.value).endswith(
        f"export it again: python -m text_recognizer.export {alone.parent} --onnx {alone}"
    )


def test_onnx_model_without_runtime_onnx_gets_a_hint(capsys, exported) -> None:
    model = exported["mnist_run"] / "model.onnx"
    image = str(CHARACTER_IMAGES[0])
    assert exit_code(predict_main, [image, "--model", model]) == 2
    err = capsys.readouterr().err
    assert "read it with --runtime onnx" in err and len(err.splitlines()) == 1, err
    with pytest.raises(UserError, match="--runtime onnx"):
        load_predictor(model)
