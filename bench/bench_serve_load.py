"""Load on the HTTP server: N concurrent clients on 127.0.0.1 for a bounded time, torch and ONNX.

A run folder with a line model (``line_lstm_ctc`` at 28 x 952 by default, untrained weights:
latency depends on the architecture and the image size, not on what the weights learned; or
``--model RUN``) is served by ``python -m text_recognizer.serve`` in a child process, once per
runtime (``--runtime torch``, then ``--runtime onnx`` after ``python -m text_recognizer.export``).
Each of ``--clients`` threads keeps one HTTP/1.1 connection and POSTs FSDL's JSON body
(``{"image": "data:image/png;base64,..."}``, a PNG of a 28 x 952 line of text) to
``/v1/predict`` as fast as answers come back, for ``--seconds`` after a warm-up. Per runtime:
requests/s, p50/p95/max latency as the client sees it, errors (any non-200 answer, a wrong text, or
a failed connection; must be 0) and the server's resident memory (VmRSS) after the warm-up and
after the load, sampled once a second meanwhile: the trend (median of the last quarter of the
samples minus the first quarter's) must stay near 0 (steady: no growth with the requests).

Targets (issue 15): 20 clients for 30 s, 0 errors, p95 under 200 ms on 2 cores.

    python bench/bench_serve_load.py                    # 20 clients x 30 s, torch and onnx
    python bench/bench_serve_load.py --quick            # 4 clients x 5 s
    python bench/bench_serve_load.py --model runs/.../RUN --runtimes torch
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

TARGET_P95_MS = 200.0
SHAPE = (28, 952)
TEXT = "the quick brown fox jumps over it"


def line_png(text: str = TEXT, shape: tuple[int, int] = SHAPE) -> bytes:
    """A black-on-white PNG line of ``text`` at ``shape`` (height, width)."""
    from PIL import Image, ImageDraw

    image = Image.new("L", (shape[1], shape[0]), 255)
    ImageDraw.Draw(image).text((4, shape[0] // 2 - 6), text, fill=0)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def make_run(folder: Path) -> Path:
    """A run folder holding an untrained line_lstm_ctc (default arguments) for 28 x 952 lines."""
    from text_recognizer.models import MODELS
    from text_recognizer.networks import NETWORKS

    data_config = _common.data_config(SHAPE, 79, 34)
    args = {k: p.default for k, p in NETWORKS["line_lstm_ctc"].args.items()}
    model = MODELS["LineModelCtc"].load()(data_config, "line_lstm_ctc", args, "cpu")
    run = folder / "line_lstm_ctc_28x952"
    run.mkdir(parents=True, exist_ok=True)
    model.save_weights(run / "weights.pt", {})
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    """The process's resident memory now (VmRSS), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def sample_rss(pid: int, stop: threading.Event, samples: list[float]) -> None:
    """The process's VmRSS in MB once a second into ``samples`` until ``stop`` is set."""
    while not stop.wait(1.0):
        samples.append(rss_bytes(pid) / 1e6)


class Server:
    """``python -m text_recognizer.serve`` in a child process, up once ``/healthz`` answers."""

    def __init__(
        self, run: Path, runtime: str, threads: int | None, log: Path, extra: list[str]
    ) -> None:
        self.port = free_port()
        command = [
            sys.executable,
            "-m",
            "text_recognizer.serve",
            "--model",
            str(run),
            "--port",
            str(self.port),
            "--runtime",
            runtime,
        ]
        if threads:
            command += ["--threads", str(threads)]
        command += extra
        self.log = log
        self.process = subprocess.Popen(
            command, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the server ended ({runtime}):\n{log.read_text()[-2000:]}")
            try:
                status, body = request(self.port, "GET", "/healthz")
                if status == 200:
                    self.health = json.loads(body)
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"the server did not answer /healthz in 120 s ({runtime})")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def load(port: int, body: bytes, expected: str, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` threads, each POSTing ``body`` on its own kept-alive connection until
    ``seconds`` have passed; every answer must be 200 with the ``expected`` text."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[list[str]] = [[] for _ in range(clients)]
    start_line = threading.Barrier(clients + 1)
    stop_at: list[float] = [0.0]

    def client(i: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Content-Type": "application/json", "Connection": "keep-alive"}
        start_line.wait()
        while time.perf_counter() < stop_at[0]:
            began = time.perf_counter()
            try:
                connection.request("POST", "/v1/predict", body=body, headers=headers)
                response = connection.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException) as e:
                errors[i].append(f"{type(e).__name__}: {e}")
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            latencies[i].append((time.perf_counter() - began) * 1000)
            if response.status != 200:
                errors[i].append(f"HTTP {response.status}: {answer[:200]!r}")
            elif json.loads(answer).get("pred") != expected:
                errors[i].append(f"wrong text: {answer[:200]!r}")
        connection.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    start_line.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    done = sorted(ms for per in latencies for ms in per)
    failures = [e for per in errors for e in per]

    def pct(q: float) -> float:
        return done[min(len(done) - 1, int(q * len(done)))] if done else float("nan")

    return {
        "requests": len(done),
        "requests_per_s": len(done) / elapsed,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "max_ms": done[-1] if done else float("nan"),
        "errors": len(failures),
        "error_examples": failures[:5],
    }


def export_onnx(run: Path) -> None:
    command = [sys.executable, "-m", "text_recognizer.export", str(run), "--onnx"]
    done = subprocess.run(
        [*command, str(run / "model.onnx")], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"export failed:\n{done.stderr[-2000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load first")
    parser.add_argument("--model", default=None, help="a run folder (default: untrained 28x952)")
    parser.add_argument("--runtimes", default="torch,onnx")
    parser.add_argument("--threads", type=int, default=None, help="the server's --threads")
    parser.add_argument("--workers", type=int, default=None, help="the server's --workers")
    parser.add_argument("--batch", type=int, default=None, help="the server's --batch")
    parser.add_argument("--quick", action="store_true", help="4 clients x 5 s")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.seconds, args.warmup = 4, 5.0, 1.0
    env = _common.environment()
    _common.print_header("HTTP server under load: concurrent clients on 127.0.0.1", env)
    results: dict[str, Any] = {"environment": env, "clients": args.clients, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        run = Path(args.model) if args.model else make_run(Path(tmp))
        image = line_png()
        body = json.dumps(
            {"image": "data:image/png;base64," + base64.b64encode(image).decode()}
        ).encode()
        for runtime in args.runtimes.split(","):
            if runtime == "onnx" and not (run / "model.onnx").is_file():
                export_onnx(run)
            extra = [f"--{k}={v}" for k in ("workers", "batch") if (v := getattr(args, k))]
            server = Server(run, runtime, args.threads, Path(tmp) / f"server_{runtime}.log", extra)
            try:
                status, answer = request(server.port, "POST", "/v1/predict", body)
                if status != 200:
                    raise SystemExit(f"first request ({runtime}): HTTP {status} {answer[:300]!r}")
                expected = json.loads(answer)["pred"]
                load(server.port, body, expected, args.clients, args.warmup)
                rss_before = rss_bytes(server.process.pid)
                samples: list[float] = []
                sampling = threading.Event()
                sampler = threading.Thread(
                    target=sample_rss, args=(server.process.pid, sampling, samples), daemon=True
                )
                sampler.start()
                figures = load(server.port, body, expected, args.clients, args.seconds)
                sampling.set()
                sampler.join()
                figures["rss_before_mb"] = rss_before / 1e6
                figures["rss_after_mb"] = rss_bytes(server.process.pid) / 1e6
                figures["rss_samples_mb"] = samples  # once a second during the load
                # the trend, not the spikes of a batch in flight: the median of the last quarter
                # of the samples against the first quarter's
                quarter = max(1, len(samples) // 4)
                figures["rss_trend_mb"] = (
                    statistics.median(samples[-quarter:]) - statistics.median(samples[:quarter])
                    if samples
                    else 0.0
                )
                figures["health"] = server.health
            finally:
                server.stop()
            results["runs"][runtime] = figures
            print(
                f"{runtime:6s} {args.clients} clients x {args.seconds:.0f} s: "
                f"{figures['requests']} requests, {figures['requests_per_s']:.1f} req/s, "
                f"p50 {figures['p50_ms']:.1f} ms, p95 {figures['p95_ms']:.1f} ms, "
                f"max {figures['max_ms']:.1f} ms, errors {figures['errors']}, server RSS "
                f"{figures['rss_before_mb']:.0f} -> {figures['rss_after_mb']:.0f} MB (trend, last quarter "
                f"vs first: {figures['rss_trend_mb']:+.0f} MB)"
            )
            for example in figures["error_examples"]:
                print(f"  error: {example}")
    print(f"\nresults: {_common.write_results('bench_serve_load', results)}")
    for runtime, figures in results["runs"].items():
        print(
            _common.ratio_line(
                f"serve_load[{runtime}]",
                f"p95 ms, {args.clients} clients, {SHAPE[0]}x{SHAPE[1]} line",
                figures["p95_ms"],
                TARGET_P95_MS,
                "<=",
            )
        )
        print(_common.ratio_line(f"serve_load[{runtime}]", "errors", figures["errors"], 0, "<="))
    load_avg = os.getloadavg()
    print(f"load average at the end: {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
