"""Where the platform's training step loses time to a bare loop, and what candidate fixes win.

Runs the real ``CharacterModel.fit`` (as in bench_training.py, each platform epoch paired with a
bare epoch) with candidate changes applied as monkeypatches in this process only; nothing in the
package is modified. Variants are interleaved repetition by repetition; each row reports the
median per-step time and the paired ratio platform/bare. ``--cprofile`` adds a cProfile breakdown
of one unpatched ``fit`` (per-step cost of each callee).

    python bench/profile_training.py --threads 1
    python bench/profile_training.py --threads 1 --cprofile
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import math
import os
import pstats
import sys
from collections.abc import Callable, Iterator
from typing import Any

import _common
from bench_training import CASES, run_pair


def _patched(obj: Any, name: str, value: Any) -> contextlib.AbstractContextManager:
    @contextlib.contextmanager
    def cm() -> Iterator[None]:
        old = getattr(obj, name)
        setattr(obj, name, value)
        try:
            yield
        finally:
            setattr(obj, name, old)

    return cm()


def variants() -> dict[str, Callable[[], contextlib.ExitStack]]:
    import torch

    from text_recognizer.models.base import Model
    from text_recognizer.models.character_model import CharacterModel

    original_clip = torch.nn.utils.clip_grad_norm_

    def norm_only_when_clipping(parameters, max_norm, *args, **kwargs):
        # fit passes max_norm=inf when grad_clip is unset: return a finite dummy (loss check only)
        if math.isinf(max_norm):
            return torch.zeros(())
        return original_clip(parameters, max_norm, *args, **kwargs)

    def norm_without_rescale(parameters, max_norm, *args, **kwargs):
        # when not clipping, only measure the norm (no multiply of every gradient by 1.0)
        if math.isinf(max_norm):
            return torch.nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])
        return original_clip(parameters, max_norm, *args, **kwargs)

    def no_metrics(self, outputs, targets):
        return {}

    def stack(*patches: tuple[Any, str, Any]) -> Callable[[], contextlib.ExitStack]:
        def make() -> contextlib.ExitStack:
            es = contextlib.ExitStack()
            for obj, name, value in patches:
                es.enter_context(_patched(obj, name, value))
            return es

        return make

    gather = (Model, "batches", _common.index_select_batches)
    skip_norm = (torch.nn.utils, "clip_grad_norm_", norm_only_when_clipping)
    bare_norm = (torch.nn.utils, "clip_grad_norm_", norm_without_rescale)
    metrics = (CharacterModel, "batch_metrics", no_metrics)
    return {
        "platform as is": stack(),
        "A gather with index_select": stack(gather),
        "B grad norm only if grad_clip": stack(skip_norm),
        "C get_total_norm, no rescale": stack(bare_norm),
        "D no train accuracy": stack(metrics),
        "A+B": stack(gather, skip_norm),
        "A+C": stack(gather, bare_norm),
    }


def run_cprofile(network: str, n: int, epochs: int, threads: int) -> None:
    x, y = _common.make_images(n)
    bs = CASES[network]["batch_size"]
    run_pair(network, bs, x, y, 2, threads, seed=0)  # warm-up
    profiler = cProfile.Profile()
    profiler.enable()
    run_pair(network, bs, x, y, epochs, threads, seed=0)
    profiler.disable()
    steps = epochs * math.ceil(n / bs)
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, _, func), (*_, callers) in stats.stats.items():  # type: ignore[attr-defined]
        from_fit = [
            v for (f, _, caller), v in callers.items() if caller == "fit" and "base.py" in f
        ]
        if from_fit:
            cum_from_fit = sum(v[3] for v in from_fit)
            calls = sum(v[1] for v in from_fit)
            rows.append((cum_from_fit, calls, f"{os.path.basename(filename)}:{func}"))
    print(f"\ncProfile of {network} fit ({steps} steps, {threads} threads; the bare epochs run in")
    print("on_epoch_end): cumulative time of each call made by fit, per training step")
    print(f"{'us/step':>9} {'calls':>7}  function")
    for cum, calls, name in sorted(rows, reverse=True)[:25]:
        print(f"{cum / steps * 1e6:9.1f} {calls:7d}  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=None, help="default 5, quick 3")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--network", default="mlp", choices=list(CASES))
    parser.add_argument("--samples", type=int, default=None, help="samples per epoch")
    parser.add_argument("--cprofile", action="store_true", help="also print a cProfile breakdown")
    args = parser.parse_args(argv)
    reps = args.reps or (3 if args.quick else 5)
    case = CASES[args.network]
    n = args.samples or case["quick_n"]
    bs = case["batch_size"]
    steps = math.ceil(n / bs)

    _common.setup_threads(args.threads)
    env = _common.environment()
    _common.print_header(f"training step profile: {args.network}, batch {bs}", env)
    x, y = _common.make_images(n)
    table = variants()
    walls: dict[str, list[float]] = {k: [] for k in table}
    bares: dict[str, list[float]] = {k: [] for k in table}
    paired: dict[str, list[float]] = {k: [] for k in table}
    for rep in range(reps):
        names = list(table) if rep % 2 == 0 else list(reversed(table))
        for name in names:
            with table[name]():
                r = run_pair(args.network, bs, x, y, args.epochs, args.threads, seed=rep)
            walls[name] += r["platform_epoch_wall_s"][1:]
            bares[name] += r["bare_epoch_s"][1:]
            paired[name] += [
                b / p
                for p, b in zip(r["platform_epoch_wall_s"][1:], r["bare_epoch_s"][1:], strict=True)
            ]
    print(f"\n{'variant':32} {'ms/step':>8} {'bare ms/step':>12} {'overhead':>9} {'ratio':>6}")
    out = {}
    for name in table:
        step = _common.median(walls[name]) / steps
        bare = _common.median(bares[name]) / steps
        ratio = _common.median(paired[name])
        out[name] = {"ms_per_step": step * 1e3, "bare_ms_per_step": bare * 1e3, "ratio": ratio}
        print(
            f"{name:32} {step * 1e3:8.3f} {bare * 1e3:12.3f} {100 / ratio - 100:8.1f}% {ratio:6.3f}"
        )
    print(
        "\nratio: paired median of platform throughput / bare throughput (target >= 0.95);"
        "\noverhead: extra time per step over the bare loop (1 / ratio - 1). Absolute ms move"
        " with the\nmachine's load; the paired ratio does not."
    )
    env["load_average_at_end"] = _common.load_average()
    _common.write_results(
        f"profile_training_{args.network}_t{args.threads}",
        {"network": args.network, "batch_size": bs, "samples": n, "environment": env, "rows": out},
    )
    if args.cprofile:
        with contextlib.redirect_stdout(io.StringIO()) as buf:
            run_cprofile(args.network, n, args.epochs, args.threads)
        sys.stdout.write(buf.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
