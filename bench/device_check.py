#!/usr/bin/env python
"""Device check: what the line networks train and infer at on this machine's accelerator.

So that GPU claims are measured, not guessed: for ``htr_crnn`` and ``crnn`` (built by
``LineModelCtc`` with the registry's defaults, as training builds them) on lines of 64 x 1024,
batch 32, it measures **training** samples/s with the platform's own ``train_step``
(models/training.py: forward, CTC loss, backward, finite checks, Adam or GradScaler step) in

- fp32, bf16 autocast, and fp16 autocast with a GradScaler (the three ``Precision`` kinds of
  models/precision.py; ``mixed_precision: auto`` picks bf16 where the GPU has it, else fp16);
- the default memory layout and ``channels_last`` (network and input);
- the CNN part (``stem`` + ``stages``, or ``cnn``; not the LSTM) under ``torch.compile`` against
  eager, in the precision ``auto`` picks and the faster layout: compile time is reported
  separately, with the number of steps after which compiling has paid for itself;

and **inference** samples/s (eval mode, no autograd) in fp32 (what ``predict`` uses), in auto's
precision, and compiled; and ``augment_batch(..., ink=True)`` on the device. Every row has its
peak CUDA memory. It prints one table, then one ``decision`` line per question (which precision,
whether channels_last helps, whether compile pays, what share of a step augmentation takes on the
device), and writes everything to ``bench/results/device_check.json``.

On a GPU it should run in about 2-3 minutes (an estimate until its first GPU run): warm-up and
step counts are bounded, and rows that would start after ``--budget-s`` seconds are skipped, the
compiled ones last. Without CUDA the mixed-precision and compiled rows print ``skipped: no
CUDA``; ``--cpu --quick`` (tiny lines, ~15 s) is what the tests run to prove the script works.

    python bench/device_check.py                   # on a GPU machine (or: bash tasks/bench.sh device)
    python bench/device_check.py --cpu --quick     # ~15 s, anywhere: checks the script itself
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import _common
from bench_augment import line_case

NETWORKS = ("htr_crnn", "crnn")
PAYS = 1.05  # a change "helps" when it is at least 5 % faster
COMPILE_PAYS_WITHIN = 2000  # steps: compile time must be won back within about one IAM epoch x 3


@dataclass
class Row:
    """One measured (or skipped) configuration."""

    network: str
    mode: str  # "train", "infer" or "augment" (augment_batch with ink, on the device)
    precision: str  # "fp32", "bf16", "fp16"
    layout: str  # "contiguous" or "channels_last"
    compiled: bool
    samples_per_s: float | None = None
    ms_per_step: float | None = None
    peak_mib: float | None = None
    compile_s: float | None = None  # first call minus a steady one (compiled rows)
    nonfinite_steps: int = 0
    note: str = ""

    def label(self) -> str:
        if self.mode == "augment":
            return "augment ink, strength 1"
        return f"{self.mode} {self.precision} {self.layout}" + (
            " compiled" if self.compiled else ""
        )


class Check:
    """The device, the data and the measuring loops, shared by all rows."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        self.args = args
        self.torch = torch
        self.cuda = torch.cuda.is_available() and not args.cpu
        self.device = torch.device("cuda" if self.cuda else "cpu")
        self.started = time.perf_counter()

    # ----- precision kinds, as models/precision.py builds them ------------------------------------
    def precision(self, name: str) -> Any:
        from text_recognizer.models.precision import Precision

        torch, kind = self.torch, self.device.type
        if name == "fp32":
            return Precision(kind, None, False)
        if name == "bf16":
            return Precision(kind, torch.bfloat16, False)
        return Precision(kind, torch.float16, kind == "cuda")  # GradScaler on CUDA only

    def auto_precision(self) -> str:
        """What ``mixed_precision: auto`` trains in on this device."""
        from text_recognizer.models.precision import Precision

        chosen = Precision.choose("auto", self.device)
        return {None: "fp32", self.torch.bfloat16: "bf16", self.torch.float16: "fp16"}[chosen.dtype]

    def why_skipped(self, precision: str, compiled: bool) -> str:
        """'' when the row runs here; else the reason it is skipped."""
        if time.perf_counter() - self.started > self.args.budget_s:
            return f"skipped: past --budget-s {self.args.budget_s:g}"
        if precision != "fp32" and not self.cuda and not self.args.amp_on_cpu:
            return "skipped: no CUDA (mixed precision is measured on a GPU)"
        if precision == "bf16" and self.cuda and not self.torch.cuda.is_bf16_supported():
            return "skipped: this GPU has no bf16"
        if compiled and self.args.compile == "off":
            return "skipped: --compile off"
        if compiled and not self.cuda and self.args.compile == "auto":
            return "skipped: no CUDA (compile is measured on a GPU; --compile on forces it)"
        return ""

    # ----- one row -------------------------------------------------------------------------------
    def measure(self, row: Row) -> Row:
        row.note = self.why_skipped(row.precision, row.compiled)
        if row.note:
            return row
        torch = self.torch
        try:
            self._free()
            if self.cuda:
                torch.cuda.reset_peak_memory_stats(self.device)
            if row.mode == "train":
                self._train(row)
            elif row.mode == "infer":
                self._infer(row)
            else:
                self._augment(row)
            if self.cuda:
                row.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        except (
            Exception
        ) as e:  # one failing row (OOM, an unsupported kernel) must not end the check
            first = (str(e).strip().splitlines() or [""])[0][:160]
            row.note = f"failed: {type(e).__name__}: {first}"
            if self.args.verbose:
                traceback.print_exc()
        finally:
            self._free()
        return row

    def _build(self, row: Row) -> tuple[Any, Any, Any]:
        """(model, x, y) on the device, same seed for every row; the layout and compile applied."""
        from text_recognizer.models.line_model_ctc import LineModelCtc

        torch, a = self.torch, self.args
        data_config, network, network_args = line_case(row.network, a.height, a.width)
        torch.manual_seed(0)
        model = LineModelCtc(data_config, network, network_args, device=self.device)
        g = torch.Generator().manual_seed(0)
        x = (torch.rand(a.batch, 1, a.height, a.width, generator=g) > 0.9).float()
        max_length, classes = data_config["output_shape"]
        lengths = torch.randint(1, max_length // 2 + 1, (a.batch,), generator=g)
        y = torch.randint(2, classes, (a.batch, max_length), generator=g)
        y[torch.arange(max_length)[None] >= lengths[:, None]] = 1
        x, y = x.to(self.device), y.to(self.device)
        if row.layout == "channels_last":
            model.network.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        if row.compiled:
            parts = compile_cnn(model.network, a.compile_backend)
            row.note = "compiled: " + " + ".join(parts)
        return model, x, y

    def _train(self, row: Row) -> None:
        from text_recognizer.config import TrainArgs
        from text_recognizer.models.training import Optimization, train_step

        model, x, y = self._build(row)
        args = TrainArgs.from_config({"batch_size": self.args.batch, "epochs": 1, "seed": 0})
        precision = self.precision(row.precision)
        parts = Optimization.build(model.network, args, 1, precision)
        model.network.train()
        stepped: list[bool] = []

        def step() -> None:
            stepped.append(train_step(model, model.network, x, y, parts, args, precision)[2])

        self._rate(row, step)
        row.nonfinite_steps = stepped.count(False)

    def _infer(self, row: Row) -> None:
        model, x, _ = self._build(row)
        precision = self.precision(row.precision)
        model.network.eval()

        def step() -> None:
            with self.torch.no_grad(), precision.autocast():
                model.network(x)

        self._rate(row, step)

    def _augment(self, row: Row) -> None:
        from text_recognizer.images.augment import augment_batch

        torch, a = self.torch, self.args
        g = torch.Generator().manual_seed(0)
        x = (torch.rand(a.batch, a.height, a.width, generator=g) > 0.9).float().to(self.device)
        self._rate(row, lambda: augment_batch(x, 1.0, g, ink=True))

    def _rate(self, row: Row, step: Callable[[], None]) -> None:
        """Samples/s over ``--iters`` steps after ``--warmup`` (the first one timed on its own)."""
        first = self._timed(step, 1)
        for _ in range(max(0, self.args.warmup - 1)):
            step()
        seconds = self._timed(step, self.args.iters)
        row.ms_per_step = seconds / self.args.iters * 1e3
        row.samples_per_s = self.args.batch * self.args.iters / seconds
        if row.compiled:
            row.compile_s = max(0.0, first - seconds / self.args.iters)

    def _timed(self, fn: Callable[[], None], times: int) -> float:
        self._sync()
        start = time.perf_counter()
        for _ in range(times):
            fn()
        self._sync()
        return time.perf_counter() - start

    def _sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def _free(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()


def compile_cnn(network: Any, backend: str) -> list[str]:
    """``torch.compile`` the network's CNN modules in place (not the LSTM head); their names."""
    import torch
    from torch import nn

    names = [
        n for n in ("stem", "stages", "cnn") if isinstance(getattr(network, n, None), nn.Module)
    ]
    if not names:
        raise ValueError(f"{type(network).__name__} has no stem/stages/cnn module to compile")
    for name in names:
        setattr(
            network, name, torch.compile(getattr(network, name), backend=backend, dynamic=False)
        )
    return names


# ----- the plan and the verdicts ------------------------------------------------------------------
def run_rows(check: Check, networks: list[str]) -> list[Row]:
    """Every row: the eager ones for all networks first, then the compiled ones (slow starts), so
    that a tight ``--budget-s`` drops compile rows before it drops any eager figure."""
    rows: list[Row] = []

    def add(network: str, *spec: Any) -> None:
        row = check.measure(Row(network, *spec))
        rows.append(row)
        print_row(row)

    auto = check.auto_precision()
    layouts = {}
    for network in networks:
        for precision in ("fp32", "bf16", "fp16"):
            for layout in ("contiguous", "channels_last"):
                add(network, "train", precision, layout, False)
        mine = [r for r in rows if r.network == network]
        layouts[network] = layout = faster_layout(mine, "train", auto)
        add(network, "infer", "fp32", "contiguous", False)
        if auto != "fp32" or layout != "contiguous":
            add(network, "infer", auto, layout, False)
    add("lines", "augment", "fp32", "contiguous", False)
    for mode in ("train", "infer"):
        for network in networks:
            add(network, mode, auto, layouts[network], True)
    return rows


def find(rows: list[Row], mode: str, precision: str, layout: str, compiled: bool) -> Row | None:
    for r in rows:
        key = (r.mode, r.precision, r.layout, r.compiled)
        if key == (mode, precision, layout, compiled) and r.samples_per_s:
            return r
    return None


def faster_layout(rows: list[Row], mode: str, precision: str) -> str:
    """channels_last when it measured at least ``PAYS`` faster, else the default layout."""
    plain = find(rows, mode, precision, "contiguous", False)
    last = find(rows, mode, precision, "channels_last", False)
    if plain and last and round(last.samples_per_s / plain.samples_per_s, 2) >= PAYS:
        return "channels_last"
    return "contiguous"


def decisions(network: str, rows: list[Row], auto: str) -> list[str]:
    """One line per question, from the measured rows; 'not measured' where a row is missing."""
    out = []
    base = find(rows, "train", "fp32", "contiguous", False)
    speeds = {
        p: r.samples_per_s
        for p in ("fp32", "bf16", "fp16")
        if (r := find(rows, "train", p, "contiguous", False))
    }
    if base and speeds:
        best = max(speeds, key=speeds.get)
        vs = ", ".join(f"{p} x{s / base.samples_per_s:.2f}" for p, s in speeds.items())
        out.append(
            f"decision {network} precision: auto trains in {auto}; fastest measured {best} "
            f"(vs fp32: {vs})"
        )
    else:
        out.append(f"decision {network} precision: not measured")
    plain = find(rows, "train", auto, "contiguous", False)
    last = find(rows, "train", auto, "channels_last", False)
    if plain and last:
        gain = round(last.samples_per_s / plain.samples_per_s, 2)  # judged as printed
        verdict = "helps" if gain >= PAYS else "does not help"
        out.append(f"decision {network} channels_last: {verdict} (x{gain:.2f} in {auto} training)")
    else:
        out.append(f"decision {network} channels_last: not measured in {auto}")
    layout = faster_layout(rows, "train", auto)
    eager = find(rows, "train", auto, layout, False)
    augment = find(rows, "augment", "fp32", "contiguous", False)
    if eager and augment:
        out.append(
            f"decision {network} augment: {augment.ms_per_step / eager.ms_per_step:.1%} of a "
            f"{auto} {layout} step ({augment.ms_per_step:.1f} ms of {eager.ms_per_step:.1f} ms)"
        )
    else:
        out.append(f"decision {network} augment: not measured")
    compiled = find(rows, "train", auto, layout, True)
    if eager and compiled and compiled.compile_s is not None:
        gain = round(compiled.samples_per_s / eager.samples_per_s, 2)  # judged as printed
        saved = eager.ms_per_step - compiled.ms_per_step  # ms per step
        steps = compiled.compile_s * 1e3 / saved if saved > 0 else float("inf")
        pays = gain >= PAYS and steps <= COMPILE_PAYS_WITHIN
        after = f"won back after {steps:.0f} steps" if saved > 0 else "never won back"
        out.append(
            f"decision {network} compile CNN: {'pays' if pays else 'does not pay'} (x{gain:.2f} "
            f"per {auto} {layout} step, {compiled.compile_s:.1f} s to compile, {after})"
        )
    else:
        out.append(f"decision {network} compile CNN: not measured")
    return out


HEADER = (
    f"{'network':9} {'row':38} {'samples/s':>10} {'ms/step':>9} {'peak MiB':>9} {'compile s':>9}"
    "  note"
)


def print_row(row: Row) -> None:
    def num(v: float | None, fmt: str) -> str:
        return format(v, fmt) if v is not None else "-"

    note = row.note + (f" ({row.nonfinite_steps} non-finite steps)" if row.nonfinite_steps else "")
    print(
        f"{row.network:9} {row.label():38} {num(row.samples_per_s, '10.1f'):>10} "
        f"{num(row.ms_per_step, '9.1f'):>9} {num(row.peak_mib, '9.0f'):>9} "
        f"{num(row.compile_s, '9.1f'):>9}  {note}",
        flush=True,
    )


def device_facts(check: Check) -> dict[str, Any]:
    torch = check.torch
    facts: dict[str, Any] = {"device": str(check.device), "cuda": check.cuda}
    if check.cuda:
        props = torch.cuda.get_device_properties(check.device)
        facts.update(
            name=props.name,
            capability=f"{props.major}.{props.minor}",
            memory_gib=round(props.total_memory / 2**30, 1),
            cuda_version=torch.version.cuda,
            cudnn_version=torch.backends.cudnn.version(),
            bf16_supported=torch.cuda.is_bf16_supported(),
            tf32_conv=torch.backends.cudnn.allow_tf32,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        )
    return facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu", action="store_true", help="measure on the CPU even with CUDA")
    parser.add_argument("--quick", action="store_true", help="tiny lines and counts (seconds)")
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=NETWORKS)
    parser.add_argument("--height", type=int, default=None, help="line height (64; quick 32)")
    parser.add_argument("--width", type=int, default=None, help="line width (1024; quick 128)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (32; quick 4)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (3; quick 1)")
    parser.add_argument("--iters", type=int, default=None, help="timed steps (10; quick 2)")
    parser.add_argument(
        "--compile",
        choices=("auto", "on", "off"),
        default="auto",
        help="compiled rows: auto = on CUDA only",
    )
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend")
    parser.add_argument(
        "--amp-on-cpu",
        action="store_true",
        help="run the bf16/fp16 rows on a CPU too (checks the code path; figures mean little)",
    )
    parser.add_argument(
        "--budget-s", type=float, default=150.0, help="skip rows that would start after this"
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU torch threads (CPU: 1)")
    parser.add_argument("--verbose", action="store_true", help="tracebacks of failed rows")
    args = parser.parse_args(argv)
    quick = args.quick
    args.height = args.height or (32 if quick else 64)
    args.width = args.width or (128 if quick else 1024)
    args.batch = args.batch or (4 if quick else 32)
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 3)
    args.iters = args.iters or (2 if quick else 10)

    check = Check(args)
    if args.threads or not check.cuda:
        _common.setup_threads(args.threads or 1)
    env = _common.environment()
    env["accelerator"] = device_facts(check)
    _common.print_header("device check: line networks, training and inference samples/s", env)
    facts = env["accelerator"]
    if check.cuda:
        print(
            f"# device {facts['name']} (sm {facts['capability']}, {facts['memory_gib']} GiB)  "
            f"cuda {facts['cuda_version']}  cudnn {facts['cudnn_version']}  "
            f"bf16 {facts['bf16_supported']}  tf32 conv/matmul "
            f"{facts['tf32_conv']}/{facts['tf32_matmul']}"
        )
    else:
        print("# device cpu: no CUDA here; mixed-precision and compiled rows are skipped")
    print(
        f"# lines {args.height}x{args.width}, batch {args.batch}, {args.warmup} warm-up + "
        f"{args.iters} timed steps per row\n"
    )
    print(HEADER)
    rows = run_rows(check, args.networks)
    elapsed = time.perf_counter() - check.started
    print(f"\n{elapsed:.0f} s in all.\n")
    verdicts = []
    for network in args.networks:
        mine = [r for r in rows if r.network in (network, "lines")]
        verdicts += decisions(network, mine, check.auto_precision())
    env["load_average_at_end"] = _common.load_average()
    payload = {
        "benchmark": "device_check",
        "environment": env,
        "settings": {k: getattr(args, k) for k in ("height", "width", "batch", "warmup", "iters")},
        "auto_precision": check.auto_precision(),
        "rows": [asdict(r) for r in rows],
        "decisions": verdicts,
        "elapsed_s": elapsed,
    }
    path = _common.write_results("device_check", payload)
    print(f"results: {path}")
    for line in verdicts:
        print(line)
    failed = [r for r in rows if r.note.startswith("failed")]
    if failed:
        print(f"{len(failed)} rows failed (rerun with --verbose for tracebacks)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
