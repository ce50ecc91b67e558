"""The HTTP server: the API reads what the predict command reads, hostile input is a one-line 4xx,
concurrent requests keep their own answers, and the command fails in one line before serving."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from predict_fixtures import (  # noqa: F401
    KAGGLE_DIR,
    MNIST_DIR,
    kaggle_run,
    mnist_run,
    noisy_line_run,
)

from text_recognizer.paths import SHARED_DATA_DIR
from text_recognizer.predict import predict_main
from text_recognizer.serve import serve_main
from text_recognizer.serving.app import create_app
from text_recognizer.serving.reader import Reader, load_reader
from text_recognizer.serving.server import ServerThread, bind_socket
from text_recognizer.serving.settings import Limits

IAM_LINES = SHARED_DATA_DIR / "iam" / "lines_support"
IAM_PARAGRAPHS = SHARED_DATA_DIR / "iam" / "paragraphs_support"
DEMO = SHARED_DATA_DIR / "demo_handwriting"
DIGITS = SHARED_DATA_DIR / "emnist" / "goby56_digit_images"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Any:
    """Two cores are shared: one intra-op thread, as the server's default."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def line_reader(noisy_line_run: Path) -> Reader:  # noqa: F811
    return load_reader(noisy_line_run)


@contextlib.contextmanager
def serving(app: Any) -> Any:
    """A real uvicorn server on a free 127.0.0.1 port (in a thread) and an HTTP client for it."""
    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def line_client(line_reader: Reader) -> httpx.Client:
    with serving(create_app(line_reader)) as client:
        yield client


@pytest.fixture(scope="module")
def char_client(mnist_run: Path) -> httpx.Client:  # noqa: F811
    with serving(create_app(load_reader(mnist_run))) as client:
        yield client


def line_images() -> list[Path]:
    """Every real line image in ../shared/data: Kaggle names, IAM lines, SimpleHTR's line/word."""
    files = [
        *sorted((KAGGLE_DIR / "test_v2").glob("*.jpg")),
        *sorted(IAM_LINES.glob("*.png")),
        *sorted(DEMO.glob("*.png")),
    ]
    if len(files) < 10:
        pytest.skip(f"the shared line images are missing under {SHARED_DATA_DIR}")
    return files


def character_images(tmp_path: Path) -> list[Path]:
    """The first 200 MNIST test digits as PNG files (as the predictor tests write them) and the
    100 real EMNIST digit PNGs."""
    from text_recognizer.datasets.mnist import read_pair

    images, _ = read_pair(
        MNIST_DIR / "t10k-images-idx3-ubyte.gz", MNIST_DIR / "t10k-labels-idx1-ubyte.gz"
    )
    files = []
    for i, image in enumerate(images[:200]):
        files.append(tmp_path / f"mnist_{i:03d}.png")
        Image.fromarray(image).save(files[-1])
    return files + sorted(DIGITS.glob("*.png"))


def data_url(path: Path) -> str:
    kind = "jpeg" if path.suffix == ".jpg" else "png"
    return f"data:image/{kind};base64," + base64.b64encode(path.read_bytes()).decode()


def command_answers(capsys: pytest.CaptureFixture, files: list[Path], run: Path) -> list[dict]:
    """What ``python -m text_recognizer.predict --json`` prints for ``files``."""
    assert predict_main([*map(str, files), "--model", str(run), "--json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def assert_same(answer: dict, row: dict) -> None:
    assert answer["pred"] == row["text"], row["image"]
    assert answer["conf"] == row["confidence"], row["image"]
    assert answer["ms"] >= 0


# ----- the API answers what the predict command answers -------------------------------------------


def test_lines_equal_the_predict_command(
    line_client: httpx.Client,
    capsys: pytest.CaptureFixture,
    noisy_line_run: Path,  # noqa: F811
) -> None:
    """Every shared line image, as FSDL's JSON data URL and as a multipart upload."""
    files = line_images()
    rows = command_answers(capsys, files, noisy_line_run)
    for path, row in zip(files, rows, strict=True):
        by_json = line_client.post("/v1/predict", json={"image": data_url(path)})
        assert by_json.status_code == 200, by_json.text
        assert_same(by_json.json(), row)
        with path.open("rb") as f:
            upload = line_client.post("/v1/predict", files={"image": (path.name, f)})
        assert_same(upload.json(), row)
    assert len({row["text"] for row in rows}) > len(rows) // 2  # each image its own reading


def test_characters_equal_the_predict_command(
    char_client: httpx.Client,
    capsys: pytest.CaptureFixture,
    tmp_path: Path,
    mnist_run: Path,  # noqa: F811
) -> None:
    files = character_images(tmp_path)
    rows = command_answers(capsys, files, mnist_run)
    for i, (path, row) in enumerate(zip(files, rows, strict=True)):
        if i % 2:
            with path.open("rb") as f:
                reply = char_client.post("/v1/predict", files={"file": (path.name, f)})
        else:
            reply = char_client.post("/v1/predict", json={"image": data_url(path)})
        assert_same(reply.json(), row)
    assert len(rows) == 300 and len({row["confidence"] for row in rows}) > 150


def test_onnx_runtime_equals_the_predict_command(
    capsys: pytest.CaptureFixture,
    tmp_path: Path,
    noisy_line_run: Path,  # noqa: F811
) -> None:
    """``--runtime onnx``: the run exported by ``text_recognizer.export``, served, answers what
    ``predict --runtime onnx`` answers; a per-request beam works there too."""
    export = pytest.importorskip("text_recognizer.export", reason="no ONNX export in this tree")
    model = tmp_path / "model.onnx"
    export.export_onnx(noisy_line_run / "weights.pt", model)
    files = line_images()[:8]
    assert (
        predict_main([*map(str, files), "--model", str(model), "--runtime", "onnx", "--json"]) == 0
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    reader = load_reader(model, runtime="onnx", threads=1)
    with serving(create_app(reader)) as client:
        assert client.get("/healthz").json()["runtime"] == "onnx"
        for path, row in zip(files, rows, strict=True):
            assert_same(client.post("/v1/predict", json={"image": data_url(path)}).json(), row)
        assert (
            client.post("/v1/predict?beam=4", json={"image": data_url(files[0])}).status_code == 200
        )


def test_raw_image_body(line_client: httpx.Client) -> None:
    path = sorted(IAM_LINES.glob("*.png"))[0]
    raw = line_client.post(
        "/v1/predict", content=path.read_bytes(), headers={"content-type": "image/png"}
    )
    by_json = line_client.post("/v1/predict", json={"image": data_url(path)})
    assert raw.status_code == 200 and raw.json()["pred"] == by_json.json()["pred"]


def test_batch_json_and_multipart(line_client: httpx.Client) -> None:
    files = line_images()[:6]
    singles = [line_client.post("/v1/predict", json={"image": data_url(p)}).json() for p in files]
    as_list = line_client.post("/v1/predict_batch", json=[data_url(p) for p in files])
    as_object = line_client.post("/v1/predict_batch", json={"images": [data_url(p) for p in files]})
    uploads = [("images", (p.name, p.read_bytes())) for p in files]
    as_files = line_client.post("/v1/predict_batch", files=uploads)
    for reply in (as_list, as_object, as_files):
        assert reply.status_code == 200, reply.text
        answers = reply.json()
        assert [a["pred"] for a in answers] == [s["pred"] for s in singles]
        for a, s in zip(answers, singles, strict=True):
            assert a["conf"] == pytest.approx(s["conf"], rel=1e-4)


def test_beam_per_request_is_the_commands_beam(
    line_client: httpx.Client,
    capsys: pytest.CaptureFixture,
    noisy_line_run: Path,  # noqa: F811
) -> None:
    files = line_images()[:4]
    argv = [*map(str, files), "--model", str(noisy_line_run), "--json", "--beam", "4"]
    assert predict_main(argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for path, row in zip(files, rows, strict=True):
        assert_same(
            line_client.post("/v1/predict?beam=4", json={"image": data_url(path)}).json(), row
        )


def test_healthz(line_client: httpx.Client, char_client: httpx.Client) -> None:
    from text_recognizer import __version__

    line = line_client.get("/healthz").json()
    assert line["kind"] == "line" and line["modes"] == ["line", "paragraph"]
    assert line["mapping"][:2] == ["<blank>", "<pad>"] and "A" in line["mapping"]
    assert line["decoder"] == "greedy" and line["runtime"] == "torch"
    assert line["version"] == __version__ and line["input_shape"] == [64, 256]
    assert line["limits"]["max_bytes"] == Limits().max_bytes
    char = char_client.get("/healthz").json()
    assert char["kind"] == "character" and char["mapping"] == [str(d) for d in range(10)]
    assert "/v1/predict" in line_client.get("/openapi.json").json()["paths"]


def test_paragraph_route_reads_like_paragraph_ocr(
    line_client: httpx.Client,
    noisy_line_run: Path,  # noqa: F811
) -> None:
    from text_recognizer.paragraph_ocr import read_paragraph
    from text_recognizer.predictors import LinePredictor

    path = IAM_PARAGRAPHS / "a01-107.png"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    text, bands = read_paragraph(path, LinePredictor.from_run(noisy_line_run))
    routed = line_client.post(
        "/v1/predict_paragraph", files={"image": (path.name, path.read_bytes())}
    )
    by_mode = line_client.post("/v1/predict?mode=paragraph", json={"image": data_url(path)})
    for reply in (routed, by_mode):
        assert reply.status_code == 200, reply.text
        answer = reply.json()
        assert answer["pred"] == text and answer["lines"] == [list(b) for b in bands]
        assert answer["conf"] is None and answer["ms"] > 0
    assert len(bands) >= 3


def test_the_page_and_its_files_are_served(line_client: httpx.Client) -> None:
    page = line_client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for element in ('id="file"', 'id="canvas"', 'id="read"', 'id="pred"', 'id="conf"', 'id="ms"'):
        assert element in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # nothing from another site
    script = line_client.get("/static/app.js")
    assert script.status_code == 200 and "/v1/predict" in script.text


# ----- hostile input: a one-line JSON 4xx, and the server keeps serving ----------------------------


def png_claiming(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header claims ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def png_bytes(shape: tuple[int, int] = (40, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full(shape, 255, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def b64(data: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64," + base64.b64encode(data).decode()


HOSTILE = {
    "not an image": (415, dict(content=b"hello", headers={"content-type": "text/plain"})),
    "text uploaded as an image": (422, dict(files={"image": ("a.png", b"not an image at all")})),
    "empty upload": (400, dict(files={"image": ("a.png", b"")})),
    "empty body": (400, dict(content=b"", headers={"content-type": "application/json"})),
    "no content type": (415, dict(content=png_bytes())),
    "truncated png": (422, dict(files={"image": ("a.png", png_bytes()[:60])})),
    "decompression bomb": (413, dict(files={"image": ("bomb.png", png_claiming(60000, 30000))})),
    "bomb as data url": (413, dict(json={"image": b64(png_claiming(20000, 20000))})),
    "side over the bound": (413, dict(files={"image": ("wide.png", png_claiming(40000, 1))})),
    "zero-size image": (422, dict(files={"image": ("z.png", png_claiming(0, 10))})),
    "malformed data url": (400, dict(json={"image": "hello"})),
    "data url without base64": (400, dict(json={"image": "data:image/png,abc"})),
    "bad base64": (400, dict(json={"image": "data:image/png;base64,!!!!"})),
    "data url of text": (415, dict(json={"image": b64(b"hello", "text/plain")})),
    "image not a string": (400, dict(json={"image": 42})),
    "wrong json shape": (400, dict(json=["data:image/png;base64,AAAA"])),
    "wrong json key": (400, dict(json={"img": b64(png_bytes())})),
    "malformed json": (
        400,
        dict(content=b'{"image": ', headers={"content-type": "application/json"}),
    ),
    "json nested too deep": (
        400,
        dict(content=b"[" * 200_000, headers={"content-type": "application/json"}),
    ),
    "two uploads to predict": (
        400,
        dict(files=[("image", ("a.png", png_bytes())), ("file", ("b.png", png_bytes()))]),
    ),
    "upload in another field": (400, dict(files={"picture": ("a.png", png_bytes())})),
}


def assert_one_line_error(reply: httpx.Response, status: int) -> str:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"]
    assert "\n" not in body["error"] and "Traceback" not in body["error"]
    return body["error"]


def assert_still_serving(client: httpx.Client) -> None:
    assert client.get("/healthz").status_code == 200
    good = client.post("/v1/predict", files={"image": ("ok.png", png_bytes())})
    assert good.status_code == 200 and set(good.json()) == {"pred", "conf", "ms"}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_hostile_input_is_a_one_line_4xx(line_client: httpx.Client, case: str) -> None:
    status, request = HOSTILE[case]
    assert_one_line_error(line_client.post("/v1/predict", **request), status)
    assert_still_serving(line_client)


def test_size_limits(line_reader: Reader) -> None:
    """A body over --max-bytes is refused by its Content-Length, and by counting when the header
    is absent (chunked); an image over --max-pixels is refused from its header."""
    limits = Limits(max_bytes=4000, max_pixels=100 * 100, max_batch=3)
    with serving(create_app(line_reader, limits)) as client:
        big = png_bytes((400, 400)) + b"\0" * 5000
        error = assert_one_line_error(
            client.post("/v1/predict", files={"image": ("a.png", big)}), 413
        )
        assert "4,000" in error

        def chunks() -> Any:  # no Content-Length: the server must count
            for _ in range(10):
                yield b"\0" * 1000

        reply = client.post("/v1/predict", content=chunks(), headers={"content-type": "image/png"})
        assert "over" in assert_one_line_error(reply, 413)
        over = png_bytes((101, 100))
        assert "10,000 pixels" in assert_one_line_error(
            client.post("/v1/predict", files={"image": ("a.png", over)}), 413
        )
        pair = [("images", (f"{i}.png", png_bytes((80, 80)))) for i in range(2)]
        error = assert_one_line_error(client.post("/v1/predict_batch", files=pair), 413)
        assert "in all" in error  # each image is under the limit, the two are not
        many = [("images", (f"{i}.png", png_bytes((20, 20)))) for i in range(4)]
        assert "1 to 3" in assert_one_line_error(client.post("/v1/predict_batch", files=many), 400)
        assert_one_line_error(client.post("/v1/predict_batch", json={"images": "x"}), 400)
        assert_one_line_error(client.post("/v1/predict_batch", json=[]), 400)
        assert_still_serving(client)


def test_a_body_that_stops_arriving_is_a_408(line_reader: Reader) -> None:
    """A client that promises 100 bytes and sends 10 holds its connection, not the server."""
    with ServerThread(create_app(line_reader, Limits(body_timeout_s=0.5))) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as raw:
            raw.sendall(
                b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                b"Content-Length: 100\r\n\r\n" + b"\0" * 10
            )
            reply = b""
            while not reply.endswith(b"}") and (chunk := raw.recv(65536)):
                reply += chunk  # headers and body may come in separate segments
            head, _, body = reply.partition(b"\r\n\r\n")
        assert head.split()[1] == b"408" and b"0.5 s" in body
        assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200


def test_bad_parameters_and_routes(line_client: httpx.Client, char_client: httpx.Client) -> None:
    image = {"files": {"image": ("ok.png", png_bytes())}}
    assert "beam" in assert_one_line_error(line_client.post("/v1/predict?beam=0", **image), 422)
    assert_one_line_error(line_client.post("/v1/predict?beam=abc", **image), 422)
    assert_one_line_error(line_client.post("/v1/predict?mode=poem", **image), 422)
    assert "CTC" in assert_one_line_error(char_client.post("/v1/predict?beam=3", **image), 422)
    assert char_client.post("/v1/predict?beam=1", **image).status_code == 200  # as predict --beam 1
    error = assert_one_line_error(line_client.post("/v1/predict?mode=character", **image), 422)
    assert "line model" in error and "line, paragraph" in error
    error = assert_one_line_error(char_client.post("/v1/predict?mode=line", **image), 422)
    assert "character model" in error
    assert char_client.post("/v1/predict?mode=character", **image).status_code == 200
    error = assert_one_line_error(char_client.post("/v1/predict_paragraph", **image), 422)
    assert "line model" in error
    assert_one_line_error(line_client.get("/v1/nothing"), 404)
    assert_one_line_error(line_client.get("/v1/predict"), 405)
    assert_still_serving(line_client)


def test_a_bug_is_a_one_line_500_and_logged(
    line_reader: Reader, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Fault injection: the model raising mid-request gives a 500 line, the traceback in the log."""
    with serving(create_app(line_reader)) as client:
        # in the model step, which a single image reaches through a model thread (Batcher)
        monkeypatch.setattr(line_reader.predictor, "predict_arrays", lambda *a, **k: 1 / 0)
        error = assert_one_line_error(
            client.post("/v1/predict", files={"image": ("a.png", png_bytes())}), 500
        )
        assert "ZeroDivisionError" in error and "Traceback" in caplog.text
        monkeypatch.undo()
        assert_still_serving(client)


# ----- concurrency ---------------------------------------------------------------------------------


def test_concurrent_requests_get_their_own_answers(noisy_line_run: Path) -> None:  # noqa: F811
    """20 clients at once on a real server (two model threads), each a different image, three
    rounds: every answer is the one that image gets alone (the same text; the confidence to float
    precision, as requests read together share a batch, which is checked to happen); no request
    changes the model's mode or the thread count."""
    line_reader = load_reader(noisy_line_run, workers=2)
    batch_sizes: list[int] = []
    run_batch = line_reader.batcher.run

    def counted(x: np.ndarray) -> Any:
        batch_sizes.append(len(x))
        return run_batch(x)

    line_reader.batcher.run = counted
    files = sorted((KAGGLE_DIR / "test_v2").glob("*.jpg"))[:20]
    threads_before = torch.get_num_threads()
    with ServerThread(create_app(line_reader)) as url:
        with httpx.Client(base_url=url, timeout=60) as client:
            alone = [
                client.post("/v1/predict", files={"image": (p.name, p.read_bytes())}) for p in files
            ]
        expected = [(r.json()["pred"], r.json()["conf"]) for r in alone]
        got: dict[int, list[tuple[str, float]]] = {i: [] for i in range(len(files))}
        start = threading.Barrier(len(files))

        def client_thread(i: int) -> None:
            with httpx.Client(base_url=url, timeout=60) as client:
                start.wait()
                for _ in range(3):
                    reply = client.post("/v1/predict", json={"image": data_url(files[i])})
                    got[i].append((reply.json()["pred"], reply.json()["conf"]))

        workers = [threading.Thread(target=client_thread, args=(i,)) for i in range(len(files))]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=120)
    for i, answers in got.items():
        assert len(answers) == 3, files[i]
        for pred, conf in answers:
            assert pred == expected[i][0]
            assert conf == pytest.approx(expected[i][1], rel=1e-5, abs=1e-7)
    assert max(batch_sizes) > 1, batch_sizes  # concurrent requests shared forward passes
    assert sum(batch_sizes) == 20 + 60
    assert not line_reader.predictor.model.network.training
    assert torch.get_num_threads() == threads_before


# ----- the command: one line and exit 2 before serving; a real start ------------------------------


def error_line(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    try:
        code = serve_main(argv)
    except SystemExit as usage:  # argparse's own refusals (a choice, a missing flag)
        code = usage.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_startup_errors(capsys: pytest.CaptureFixture, tmp_path: Path, kaggle_run: Path) -> None:  # noqa: F811
    assert "no run directory" in error_line(
        capsys, ["--model", str(tmp_path / "none"), "--port", "0"]
    )
    assert "has no weights.pt" in error_line(capsys, ["--model", str(tmp_path), "--port", "0"])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "weights.pt").write_bytes(b"not a torch file")
    assert "weights" in error_line(capsys, ["--model", str(bad), "--port", "0"])
    taken = bind_socket("127.0.0.1", 0)
    try:
        port = str(taken.getsockname()[1])
        assert "in use" in error_line(capsys, ["--model", str(kaggle_run), "--port", port])
    finally:
        taken.close()
    for argv, said in [
        (["--port", "70000"], "--port"),
        (["--threads", "0"], "--threads"),
        (["--max-pixels", str(1 << 40)], "--max-pixels"),
        (["--beam", "0"], "--beam"),
        (["--lm", str(tmp_path / "no.arpa")], "no such file"),
        (["--runtime", "tpu"], "--runtime"),
        (["--host", "no.such.host.invalid"], "--host"),
    ]:
        assert said in error_line(capsys, ["--model", str(kaggle_run), *argv])
    assert "--model" in error_line(capsys, [])


def test_the_command_serves_and_prints_its_url(kaggle_run: Path) -> None:  # noqa: F811
    """``python -m text_recognizer.serve --port 0``: the URL line, then answers, then Ctrl-C."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [
        sys.executable,
        "-m",
        "text_recognizer.serve",
        "--model",
        str(kaggle_run),
        "--port",
        "0",
    ]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stderr.readline()
        assert " on http://127.0.0.1:" in line, line
        url = line.split(" on ")[-1].split()[0]
        health = httpx.get(f"{url}/healthz", timeout=30).json()
        assert health["kind"] == "line"
        path = sorted(IAM_LINES.glob("*.png"))[0]
        reply = httpx.post(f"{url}/v1/predict", json={"image": data_url(path)}, timeout=30)
        assert reply.status_code == 200 and isinstance(reply.json()["pred"], str)
        raw = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=30)
        # a Content-Length over the limit: refused on the header, before the body is read
        raw.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 999999999\r\n\r\n" + b"\0" * 100
        )
        assert raw.makefile("rb").readline().split()[1] == b"413"
        raw.close()
    finally:
        proc.send_signal(2)  # Ctrl-C
        _, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, 130), err
    assert "Traceback" not in err


def test_batcher_keeps_each_request_s_row_and_error() -> None:
    """The Batcher hands each submitter its own row of the batch result, in order, whatever
    batches form; a failing batch fails each of its requests and the threads go on."""
    from text_recognizer.serving.batcher import Batcher

    seen: list[int] = []
    gate = threading.Event()

    def run(x: np.ndarray) -> list[int]:
        gate.wait(10)
        seen.append(len(x))
        if (x == 255).any():
            raise ValueError("bad row")
        return [int(row[0, 0]) for row in x]

    batcher = Batcher(run, workers=1, max_batch=8)
    try:
        futures = [batcher.submit(np.full((2, 3), i, np.uint8)) for i in range(12)]
        gate.set()  # the first batch (of one) was taken before the rest were queued, or not
        assert [f.result(10) for f in futures] == list(range(12))
        assert sum(seen) == 12 and max(seen) > 1 and max(seen) <= 8
        bad = batcher.submit(np.full((2, 3), 255, np.uint8))
        with pytest.raises(ValueError, match="bad row"):
            bad.result(10)
        assert batcher.submit(np.full((2, 3), 7, np.uint8)).result(10) == 7
    finally:
        batcher.close()


# ----- resources held by clients -------------------------------------------------------------------


def test_decoded_images_held_at_once_are_bounded_by_max_reading(
    line_reader: Reader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request decodes and prepares its image in one worker thread: with max_reading 2, at most
    2 full-size decoded images exist at once, however many requests arrive (each 12 concurrent
    requests would otherwise hold its decoded image while waiting for the model)."""
    from text_recognizer.serving import app as app_module

    alive, peak, lock = [0], [0], threading.Lock()
    real_open, real_prepare = app_module.open_images, line_reader.prepare

    def counted_open(payloads: list[bytes], max_pixels: int) -> list[Any]:
        images = real_open(payloads, max_pixels)
        with lock:
            alive[0] += 1
            peak[0] = max(peak[0], alive[0])
        return images

    def slow_prepare(image: Any) -> Any:
        threading.Event().wait(0.05)
        try:
            return real_prepare(image)
        finally:
            with lock:
                alive[0] -= 1

    monkeypatch.setattr(app_module, "open_images", counted_open)
    monkeypatch.setattr(line_reader, "prepare", slow_prepare)
    body = png_bytes((64, 400))
    with ServerThread(create_app(line_reader, Limits(max_reading=2))) as url:

        def client() -> None:
            with httpx.Client(base_url=url, timeout=60) as c:
                assert c.post("/v1/predict", files={"image": ("a.png", body)}).status_code == 200

        clients = [threading.Thread(target=client) for _ in range(12)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(timeout=60)
    assert peak[0] == 2 and alive[0] == 0


def test_a_client_that_disconnects_mid_body_is_no_server_error(
    line_reader: Reader, caplog: pytest.LogCaptureFixture
) -> None:
    """A body cut short by the client (Content-Length 1000, 3 bytes sent, socket closed) is the
    client's doing: no traceback in the server's log, and the server goes on."""
    with serving(create_app(line_reader)) as client:
        host, port = client.base_url.host, client.base_url.port
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(
                b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                b"Content-Length: 1000\r\n\r\nabc"
            )
        assert_still_serving(client)
    assert "Traceback" not in caplog.text and "ClientDisconnect" not in caplog.text


def test_a_request_head_that_never_ends_is_cut_off(
    line_reader: Reader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slowloris: a connection that sends half a request head and stops (or nothing at all) is
    closed after the head deadline, so idle clients cannot use up the file descriptors; a client
    that finished its request keeps its connection for the next one."""
    from text_recognizer.serving import server as server_module

    monkeypatch.setattr(server_module, "HEADER_TIMEOUT_S", 0.5)
    with serving(create_app(line_reader)) as client:
        host, port = client.base_url.host, client.base_url.port
        with (
            socket.create_connection((host, port), timeout=5) as half,
            socket.create_connection((host, port), timeout=5) as silent,
        ):
            half.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n")
            assert half.recv(100) == b""  # closed by the server within the 5 s timeout
            assert silent.recv(100) == b""
        assert_still_serving(client)


def test_a_batch_count_is_checked_before_any_image_is_decoded(line_client: httpx.Client) -> None:
    """100 items (over the 64 a batch holds) are refused by their count, not after decoding
    each: the items here are not even valid base64."""
    reply = line_client.post("/v1/predict_batch", json=["data:image/png;base64,!!"] * 100)
    assert "got 100" in assert_one_line_error(reply, 400)


def test_tasks_serve_takes_the_run_as_model_flag(kaggle_run: Path) -> None:  # noqa: F811
    """tasks/serve.sh RUN and tasks/serve.sh --model RUN both start the server (checked with a
    port in use: the one-line error comes after the model is found)."""
    script = Path(__file__).resolve().parents[1] / "tasks" / "serve.sh"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        for argv in (
            [str(kaggle_run), "--port", port],
            ["--port", port, "--model", str(kaggle_run)],
        ):
            done = subprocess.run(
                ["bash", str(script), *argv], capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 2, done.stderr
            assert f"port {port} on 127.0.0.1 is in use" in done.stderr


def test_a_served_language_model_is_read_once(noisy_line_run: Path, tmp_path: Path) -> None:  # noqa: F811
    """With --lm, the server reads with the LM it checked at start: the ARPA file removed or
    rewritten while serving changes no answer (each decode used to read the file again, so a
    rebuilt or moved LM made every request a 422 blamed on the client)."""
    from text_recognizer import ngram
    from text_recognizer.predictors import LmChoice
    from text_recognizer.serving.reader import load_reader

    text = ["KEVIN", "LENA", "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG", "O'BRIEN-SMITH"]
    arpa = tmp_path / "names.arpa"
    ngram.write_arpa(ngram.estimate(text * 3, 3), arpa)
    reader = load_reader(noisy_line_run, beam=4, lm=LmChoice(str(arpa), 1.0, 0.0))
    files = sorted((KAGGLE_DIR / "test_v2").glob("*.jpg"))[:5]
    with serving(create_app(reader)) as client:
        before = [client.post("/v1/predict", json={"image": data_url(p)}).json() for p in files]
        arpa.write_text("not an ARPA file any more\n")
        after = [client.post("/v1/predict", json={"image": data_url(p)}).json() for p in files]
        arpa.unlink()
        gone = [client.post("/v1/predict", json={"image": data_url(p)}).json() for p in files]
    assert "LM" in reader.decoder_name()
    assert [a["pred"] for a in after] == [a["pred"] for a in before] == [a["pred"] for a in gone]


def test_the_head_deadline_spares_a_pipelined_request_being_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two requests pipelined on one connection, each taking longer than the head deadline: both
    are answered (the deadline is for a head that has not arrived, not for a request at work)."""
    import time

    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from text_recognizer.serving import server as server_module

    monkeypatch.setattr(server_module, "HEADER_TIMEOUT_S", 0.5)

    def slow(request: Any) -> PlainTextResponse:
        time.sleep(1.0)
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/slow", slow)])
    with ServerThread(app) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
            received = b""
            while received.count(b"HTTP/1.1 200") < 2:
                chunk = s.recv(4096)
                if not chunk:
                    break
                received += chunk
    assert received.count(b"HTTP/1.1 200") == 2, received
