"""The Model base class: a network, the dataset's config, and a plain PyTorch training loop.

The data path keeps each split as one uint8 tensor (on the GPU when training there) and cuts batches
by indexing a shuffled permutation, so feeding a batch costs one gather and one cast instead of a
Python call per sample. Subclasses define the loss, the metrics and how outputs become text.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from text_recognizer import distributed, progress
from text_recognizer.augment import augment_batch
from text_recognizer.checkpoint import Checkpointer, restore_rng_state, rng_state
from text_recognizer.errors import DataError, RunFailed
from text_recognizer.models.weights_file import WEIGHTS_FORMAT
from text_recognizer.networks import build_network

# 1e9 parameters take 16 GB to train with Adam (weights, gradients, two moments): far beyond any
# handwriting model (TrOCR-large has 558 M), and the point past which a config is surely a mistake.
MAX_PARAMETERS = 1_000_000_000
EpochCallback = Callable[[dict[str, Any]], None]


class Model:
    """Owns the network and knows how to train, evaluate, predict, save and load it."""

    def __init__(
        self,
        data_config: dict[str, Any],
        network: str,
        network_args: dict[str, Any] | None = None,
        device: str | torch.device = "cpu",
        config: dict[str, Any] | None = None,
    ) -> None:
        self.data_config = data_config
        self.mapping: list[str] = list(data_config["mapping"])
        self.input_shape = tuple(data_config["input_shape"])
        self.output_shape = tuple(data_config["output_shape"])
        self.network_name = network
        self.network_args = dict(network_args or {})
        self.config = config or {}
        self.device = torch.device(device)
        self.network: nn.Module = self._build(network).to(self.device)
        # Facts about the run worth keeping in summary.json (e.g. labels a network cannot emit).
        self.notes: dict[str, Any] = {}

    def _build(self, network: str) -> nn.Module:
        """The network, once a build on the ``meta`` device (no memory) shows it is of a size
        this platform trains: each argument has its own bound, but together they could still ask
        for tens of GB (64 layers of 16384), which would otherwise end in the OOM killer."""
        shapes, args = (self.input_shape, self.output_shape), self.network_args
        try:
            with torch.device("meta"):
                probe = build_network(network, *shapes, **args)
            count = sum(p.numel() for p in probe.parameters())
            if count > MAX_PARAMETERS:
                raise DataError(
                    f"network {network!r} with these network_args has {count:,} parameters, more "
                    f"than the {MAX_PARAMETERS:,} this platform trains; lower its network_args"
                )
            return build_network(network, *shapes, **args)
        except ValueError as e:
            raise DataError(f"network {network!r} cannot take this data: {e}") from None

    # ----- what subclasses define ----------------------------------------------------------------
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def batch_metrics(
        self, outputs: torch.Tensor, targets: torch.Tensor
    ) -> dict[str, tuple[torch.Tensor | float, torch.Tensor | float]]:
        """Per metric, a (numerator, denominator) pair summed over batches; the metric is their ratio.

        Pairs let accuracy (correct / items) and CER (edits / reference characters) share one
        accumulator; tensors stay on the device, so training does not sync the GPU per step.
        """
        return {}

    def augment(
        self, xb: torch.Tensor, strength: float, generator: torch.Generator
    ) -> torch.Tensor:
        """On-the-fly augmentation of a training batch (``train_args.augment`` > 0)."""
        return augment_batch(xb, strength, generator)

    def examples(
        self, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, k: int = 10
    ) -> list[dict[str, Any]]:
        """The ``k`` worst and ``k`` best predictions on a split, for the run record; none here."""
        return []

    # ----- data path -----------------------------------------------------------------------------
    def to_tensor(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Raw uint8 images stay uint8 until the batch is cut: 4x less memory and copying."""
        t = torch.as_tensor(x)
        return t.to(self.device, non_blocking=True)

    @staticmethod
    def preprocess(xb: torch.Tensor) -> torch.Tensor:
        """uint8 [0, 255] -> float [0, 1]; the same function serves training and prediction."""
        return xb.float().mul_(1.0 / 255) if xb.dtype == torch.uint8 else xb.float()

    def batches(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        shard: tuple[int, int] | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``shard=(rank, world_size)``: every rank draws the same permutation and takes every
        world_size-th index of it, trimmed so that all ranks get the same number of batches."""
        n = len(x)
        if shuffle:
            order = torch.randperm(n, generator=generator)
            if shard is not None:
                rank, world = shard
                order = order[: n // world * world][rank::world]
            order = order.to(x.device)
            n = len(order)
            for i in range(0, n, batch_size):
                idx = order[i : i + batch_size]
                # index_select is ~15x faster than fancy indexing for a uint8 row gather
                yield self.preprocess(x.index_select(0, idx)), y.index_select(0, idx)
        else:
            for i in range(0, n, batch_size):
                yield self.preprocess(x[i : i + batch_size]), y[i : i + batch_size]

    # ----- training --------------------------------------------------------------------------------
    def _autocast(self, mode: str):
        if self.device.type != "cuda" or mode == "off":
            if mode == "bf16":
                return torch.autocast(self.device.type, dtype=torch.bfloat16)
            return nullcontext()
        if mode == "fp16" or (mode == "auto" and not torch.cuda.is_bf16_supported()):
            return torch.autocast("cuda", dtype=torch.float16)
        return torch.autocast("cuda", dtype=torch.bfloat16)

    def _optimizer(self, args: dict[str, Any]) -> torch.optim.Optimizer:
        params = self.network.parameters()
        lr, wd = args["learning_rate"], args["weight_decay"]
        if args["optimizer"] == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=args["momentum"], weight_decay=wd)
        if args["optimizer"] == "adamw":
            return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)

    @staticmethod
    def _schedule(args: dict[str, Any], steps_per_epoch: int) -> Callable[[int], float]:
        warmup = args["warmup_epochs"] * steps_per_epoch
        total = max(1, args["epochs"] * steps_per_epoch)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if args["lr_schedule"] == "cosine":
                progress_ = (step - warmup) / max(1, total - warmup)
                return 0.5 * (1 + math.cos(math.pi * min(1.0, progress_)))
            return 1.0

        return factor

    def fit(
        self,
        dataset: Any,
        train_args: dict[str, Any],
        on_epoch_end: EpochCallback | None = None,
        checkpoint: Checkpointer | None = None,
        resume: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Train on ``dataset.x_train``; validate each epoch; keep (and end with) the best weights.

        ``checkpoint`` saves the whole training state after every epoch and ``resume`` (a loaded
        checkpoint) continues from it, bit-exactly on the CPU. Under torchrun each rank trains on
        its shard through DistributedDataParallel; train metrics are summed over ranks and every
        rank validates on the whole split, so all ranks take the same decisions.
        """
        args = train_args
        torch.manual_seed(args["seed"])
        np.random.seed(args["seed"])
        if args.get("num_threads"):
            torch.set_num_threads(args["num_threads"])
        world = torch.distributed.get_world_size() if distributed.active() else 1
        rank = distributed.rank() if world > 1 else 0
        shard = (rank, world) if world > 1 else None
        # Shuffling must draw the same permutation on every rank, so under torchrun augmentation
        # gets a generator of its own, reseeded per (epoch, rank); alone, one generator serves both.
        generator = torch.Generator().manual_seed(args["seed"])
        aug_generator = generator if world == 1 else torch.Generator()
        x_train, y_train = self.to_tensor(dataset.x_train), self.to_tensor(dataset.y_train)
        has_val = dataset.x_val is not None and len(dataset.x_val) > 0
        if has_val:
            x_val, y_val = self.to_tensor(dataset.x_val), self.to_tensor(dataset.y_val)
        if len(x_train) < world:
            raise DataError("the training split is empty; lower validation_fraction or add data")
        batch_size = args["batch_size"]  # per rank under torchrun
        per_rank = len(x_train) // world
        steps_per_epoch = math.ceil(per_rank / batch_size)
        best_loss, best_state, bad_epochs, history = math.inf, None, 0, []
        in_a_row, start_epoch, done = 0, 1, False
        if resume is not None:  # before DDP wraps the network: it broadcasts rank 0's weights
            self.network.load_state_dict(resume["model"])
        net: nn.Module = self.network
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            net = DistributedDataParallel(self.network, device_ids=ids)
        optimizer = self._optimizer(args)
        scheduler = None  # a constant rate needs no per-step scheduler call
        if args["lr_schedule"] != "constant" or args["warmup_epochs"]:
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, self._schedule(args, steps_per_epoch)
            )
        use_fp16 = self.device.type == "cuda" and (
            args["mixed_precision"] == "fp16"
            or (args["mixed_precision"] == "auto" and not torch.cuda.is_bf16_supported())
        )
        scaler = torch.amp.GradScaler("cuda", enabled=use_fp16)
        if resume is not None:
            optimizer.load_state_dict(resume["optimizer"])
            if scheduler is not None and resume.get("scheduler") is not None:
                scheduler.load_state_dict(resume["scheduler"])
            if scaler.is_enabled() and resume.get("scaler"):
                scaler.load_state_dict(resume["scaler"])
            restore_rng_state(resume["rng"], {"shuffle": generator})
            best_loss, best_state = resume["best_loss"], resume["best_state"]
            bad_epochs, in_a_row = resume["bad_epochs"], resume["in_a_row"]
            history, start_epoch, done = (
                list(resume["history"]),
                resume["epoch"] + 1,
                resume["done"],
            )
            progress.line(f"resuming after epoch {resume['epoch']}/{args['epochs']}")
        params = [p for p in self.network.parameters() if p.requires_grad]

        for epoch in range(start_epoch, 0 if done else args["epochs"] + 1):
            start = time.perf_counter()
            net.train()
            if world > 1:
                aug_generator.manual_seed(args["seed"] * 1_000_003 + epoch * 1009 + rank + 1)
            totals: dict[str, list] = {}
            loss_sum = torch.zeros((), device=self.device)
            seen = skipped = 0
            bar = progress.bar(steps_per_epoch, f"epoch {epoch}/{args['epochs']}", unit="batch")
            for xb, yb in self.batches(
                x_train, y_train, batch_size, shuffle=True, generator=generator, shard=shard
            ):
                if args.get("augment"):
                    xb = self.augment(xb, args["augment"], aug_generator)
                with self._autocast(args["mixed_precision"]):
                    outputs = net(xb)
                    loss = self.loss(outputs, yb)
                optimizer.zero_grad(set_to_none=True)
                if scaler.is_enabled():
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                finite = torch.isfinite(loss)
                if args["grad_clip"]:  # the norm is computed anyway: check the gradient too
                    grad_norm = nn.utils.clip_grad_norm_(params, args["grad_clip"])
                    finite = finite & torch.isfinite(grad_norm)
                if world > 1:  # one rank's NaN skips the step everywhere: ranks never diverge
                    flag = finite.to(torch.float32).reshape(1)
                    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
                    finite = flag[0] > 0
                if not finite:
                    # Skip the step (never train on NaN/inf), count it, stop if it keeps happening.
                    skipped += 1
                    in_a_row += 1
                    if scaler.is_enabled():
                        scaler.update()
                    if in_a_row >= args["max_nonfinite_batches"]:
                        raise RunFailed(
                            f"{in_a_row} batches in a row had a non-finite loss or gradient "
                            f"(last loss {loss.item()}) at epoch {epoch}; lower learning_rate, "
                            "set grad_clip or check the data"
                        )
                    bar.update(1)
                    continue
                in_a_row = 0
                if scaler.is_enabled():  # fp16: the scaler also skips steps with inf gradients
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                with torch.no_grad():
                    loss_sum += loss.detach() * len(yb)
                    seen += len(yb)
                    accumulate(totals, self.batch_metrics(outputs.detach(), yb))
                bar.update(1)
            bar.close()
            if world > 1:
                loss_sum, seen = reduce_totals(loss_sum, seen, totals, self.device)
            train_time = time.perf_counter() - start
            metrics: dict[str, Any] = {
                "epoch": epoch,
                "train_loss": float(loss_sum) / max(1, seen),
                **{f"train_{k}": v for k, v in ratios(totals).items()},
            }
            if skipped:
                metrics["nonfinite_batches"] = skipped
                progress.line(f"warning: skipped {skipped} batches with a non-finite loss/gradient")
            if has_val:  # every rank validates on the whole split: same numbers, no reduction
                metrics.update(
                    {f"val_{k}": v for k, v in self.evaluate(x_val, y_val, args).items()}
                )
            metrics["learning_rate"] = optimizer.param_groups[0]["lr"]
            metrics["epoch_time"] = time.perf_counter() - start
            metrics["train_time"] = train_time
            metrics["samples_per_second"] = per_rank * world / max(train_time, 1e-9)
            history.append(metrics)

            monitored = metrics.get("val_loss", metrics["train_loss"])
            improved = monitored < best_loss - args["early_stopping_min_delta"]
            if improved:
                best_loss, bad_epochs = monitored, 0
                best_state = copy.deepcopy(self.network.state_dict())
            else:
                bad_epochs += 1
            metrics["best"] = improved
            patience = args["early_stopping_patience"]
            stop = bool(patience and has_val and bad_epochs >= patience)
            if checkpoint is not None and checkpoint.write:
                checkpoint.save(
                    {
                        "epoch": epoch,
                        "done": stop or epoch == args["epochs"],
                        "model": {
                            k: v.detach().cpu() for k, v in self.network.state_dict().items()
                        },
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict() if scheduler is not None else None,
                        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                        "rng": rng_state({"shuffle": generator}),
                        "best_loss": best_loss,
                        "best_state": best_state,
                        "bad_epochs": bad_epochs,
                        "in_a_row": in_a_row,
                        "history": history,
                    }
                )
            progress.line(format_epoch(metrics, args["epochs"]))
            if on_epoch_end is not None:
                on_epoch_end(metrics)
            if stop:
                progress.line(f"early stopping: val_loss has not improved for {patience} epochs")
                break
        if best_state is not None:
            self.network.load_state_dict(best_state)
        return history

    # ----- evaluation and prediction -----------------------------------------------------------------
    @torch.no_grad()
    def evaluate(
        self,
        x: np.ndarray | torch.Tensor,
        y: np.ndarray | torch.Tensor,
        train_args: dict[str, Any] | None = None,
    ) -> dict[str, float]:
        """Mean loss and metrics over a split, in eval mode."""
        args = train_args or {}
        batch_size = args.get("eval_batch_size") or 4 * args.get("batch_size", 128)
        x, y = self.to_tensor(x), self.to_tensor(y)
        self.network.eval()
        loss_sum = torch.zeros((), device=self.device)
        totals: dict[str, list] = {}
        for xb, yb in self.batches(x, y, batch_size):
            with self._autocast(args.get("mixed_precision", "off")):
                outputs = self.network(xb)
                loss_sum += self.loss(outputs, yb).float() * len(yb)
            accumulate(totals, self.batch_metrics(outputs.float(), yb))
        return {"loss": loss_sum.item() / max(1, len(x)), **ratios(totals)}

    # ----- save / load -------------------------------------------------------------------------------
    def save_weights(self, path: str | Path) -> Path:
        """Weights plus everything a predictor needs (mapping, shapes, network, config), atomically."""
        from text_recognizer.fileio import atomic_path

        payload = {
            "format_version": WEIGHTS_FORMAT,
            "model": type(self).__name__,
            "network": self.network_name,
            "network_args": self.network_args,
            "data_config": self.data_config,
            "config": self.config,
            "state_dict": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
        }
        path = Path(path)
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Model:
        """Rebuild a saved model with ``torch.load(weights_only=True)``: no code runs from the file.

        ``weights_only`` stops code, not resource exhaustion, so everything the file declares
        (shapes, counts, names, arguments) is checked by :func:`check_weights` before anything
        is built; a file that fails is one DataError line naming the file and the field.
        """
        from text_recognizer.models.weights_file import read_weights

        payload = read_weights(path)
        model_cls = cls
        if cls is Model or payload["model"] != cls.__name__:
            from text_recognizer.models import MODELS

            model_cls = MODELS[payload["model"]].load()
            if cls is not Model and not issubclass(model_cls, cls):
                raise DataError(f"{path} holds a {payload['model']}, not a {cls.__name__}")
        model = model_cls(
            payload["data_config"],
            payload["network"],
            payload["network_args"],
            device,
            payload["config"],
        )
        model.network.load_state_dict(payload["state_dict"])
        model.network.eval()
        return model


def accumulate(totals: dict[str, list], batch: dict[str, tuple]) -> None:
    """Add a batch's (numerator, denominator) pairs into running totals."""
    for key, (num, den) in batch.items():
        if key in totals:
            totals[key][0] += num
            totals[key][1] += den
        else:
            totals[key] = [num, den]


def reduce_totals(
    loss_sum: torch.Tensor, seen: int, totals: dict[str, list], device: torch.device
) -> tuple[torch.Tensor, int]:
    """Sum an epoch's loss, sample count and metric pairs over all ranks (in place for totals)."""
    keys = sorted(totals)
    values = [loss_sum, seen] + [v for k in keys for v in totals[k]]
    packed = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in values])
    torch.distributed.all_reduce(packed)
    for i, k in enumerate(keys):
        totals[k] = [packed[2 + 2 * i].item(), packed[3 + 2 * i].item()]
    return packed[0], int(packed[1].item())


def ratios(totals: dict[str, list]) -> dict[str, float]:
    return {k: float(num) / max(float(den), 1e-12) for k, (num, den) in totals.items()}


def format_epoch(metrics: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {metrics['epoch']}/{epochs}"]
    for key, value in metrics.items():
        if key in (
            "epoch",
            "best",
            "samples_per_second",
            "learning_rate",
            "nonfinite_batches",
            "train_time",
        ):
            continue
        parts.append(f"{key} {value:.4f}" if key != "epoch_time" else f"{value:.1f}s")
    parts.append(f"lr {metrics['learning_rate']:.2e}")
    return "  ".join(parts) + ("  *" if metrics.get("best") else "")
