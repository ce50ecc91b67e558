"""The pieces of ``Model.fit``: the training state, the optimisation parts, one epoch and one step.

nanoGPT's shape: ``fit`` (models/base.py) is an epoch loop that reads like a screen of prose;
``train_one_epoch`` cuts the batches and ``train_step`` does one update (backward, clipping, the
non-finite policy, the optimizer or GradScaler step). :class:`TrainingState` is everything a
resumed run needs besides the parts' own states, and ``to_checkpoint`` / ``from_checkpoint`` are
the only places that name a checkpoint's keys.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from text_recognizer import progress
from text_recognizer.config import TrainArgs
from text_recognizer.errors import CheckpointError, DataError, RunFailed
from text_recognizer.models.precision import Precision
from text_recognizer.run import distributed
from text_recognizer.run.checkpoint import restore_rng_state, rng_state

# The keys a checkpoint's training state must have, and their types (checked before a resume).
CHECKPOINT_FIELDS = {
    "epoch": int,
    "done": bool,
    "model": dict,
    "optimizer": dict,
    "rng": dict,
    "history": list,
}


class Trainable(Protocol):
    """What the loop needs of a model (models/base.py's Model)."""

    device: torch.device

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor: ...
    def batch_metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, tuple]: ...
    def augment(self, xb: torch.Tensor, strength: float, g: torch.Generator) -> torch.Tensor: ...
    def batches(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, **kw: Any) -> Iterator: ...


# ----- the parts a step changes --------------------------------------------------------------------
@dataclass
class Optimization:
    """The network being trained and what each step updates besides its weights: optimizer, LR
    schedule, loss scaler, and the generator that shuffles (and, alone, augments) the batches."""

    network: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR | None
    scaler: torch.amp.GradScaler
    generator: torch.Generator
    params: list[nn.Parameter]

    @classmethod
    def build(
        cls, network: nn.Module, args: TrainArgs, steps_per_epoch: int, precision: Precision
    ) -> Optimization:
        optimizer = _optimizer(network, args)
        scheduler = None  # a constant rate needs no per-step scheduler call
        if args.lr_schedule != "constant" or args.warmup_epochs:
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lr_factor(args, steps_per_epoch)
            )
        return cls(
            network,
            optimizer,
            scheduler,
            torch.amp.GradScaler("cuda", enabled=precision.scaled),
            torch.Generator().manual_seed(args.seed),
            [p for p in network.parameters() if p.requires_grad],
        )


def _optimizer(network: nn.Module, args: TrainArgs) -> torch.optim.Optimizer:
    params, lr, wd = network.parameters(), args.learning_rate, args.weight_decay
    if args.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=args.momentum, weight_decay=wd)
    if args.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    return torch.optim.Adam(params, lr=lr, weight_decay=wd)


def lr_factor(args: TrainArgs, steps_per_epoch: int) -> Callable[[int], float]:
    """Linear warmup over ``warmup_epochs``, then constant or a cosine decay to zero."""
    warmup = args.warmup_epochs * steps_per_epoch
    total = max(1, args.epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if args.lr_schedule == "cosine":
            done = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
        return 1.0

    return factor


# ----- the state a checkpoint holds ------------------------------------------------------------------
@dataclass
class TrainingState:
    """Where training stands after ``epoch``: the best weights so far, early stopping's counter,
    the non-finite streak and the history. With the parts' states, a checkpoint."""

    epoch: int = 0
    done: bool = False
    best_loss: float = math.inf
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    in_a_row: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def end_epoch(self, metrics: dict[str, Any], network: nn.Module, args: TrainArgs) -> bool:
        """Record an epoch, keep its weights if it improved by ``early_stopping_min_delta``;
        True when early stopping ends the run here."""
        monitored = metrics.get("val_loss", metrics["train_loss"])
        improved = monitored < self.best_loss - args.early_stopping_min_delta
        if improved:
            self.best_loss, self.bad_epochs = monitored, 0
            self.best_state = copy.deepcopy(network.state_dict())
        else:
            self.bad_epochs += 1
        metrics["best"] = improved
        self.history.append(metrics)
        self.epoch = metrics["epoch"]
        patience = args.early_stopping_patience
        stop = bool(patience and "val_loss" in metrics and self.bad_epochs >= patience)
        self.done = stop or self.epoch == args.epochs
        return stop

    def to_checkpoint(self, parts: Optimization) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "done": self.done,
            "model": {k: v.detach().cpu() for k, v in parts.network.state_dict().items()},
            "optimizer": parts.optimizer.state_dict(),
            "scheduler": parts.scheduler.state_dict() if parts.scheduler is not None else None,
            "scaler": parts.scaler.state_dict() if parts.scaler.is_enabled() else None,
            "rng": rng_state({"shuffle": parts.generator}),
            "best_loss": self.best_loss,
            "best_state": self.best_state,
            "bad_epochs": self.bad_epochs,
            "in_a_row": self.in_a_row,
            "history": self.history,
        }

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any], parts: Optimization) -> TrainingState:
        """Load the parts' states (weights first: DDP broadcasts rank 0's when it wraps them)."""
        parts.network.load_state_dict(checkpoint["model"])
        parts.optimizer.load_state_dict(checkpoint["optimizer"])
        if parts.scheduler is not None and checkpoint.get("scheduler") is not None:
            parts.scheduler.load_state_dict(checkpoint["scheduler"])
        if parts.scaler.is_enabled() and checkpoint.get("scaler"):
            parts.scaler.load_state_dict(checkpoint["scaler"])
        restore_rng_state(checkpoint["rng"], {"shuffle": parts.generator})
        return cls(
            epoch=checkpoint["epoch"],
            done=checkpoint["done"],
            best_loss=checkpoint["best_loss"],
            best_state=checkpoint["best_state"],
            bad_epochs=checkpoint["bad_epochs"],
            in_a_row=checkpoint["in_a_row"],
            history=list(checkpoint["history"]),
        )


def check_checkpoint(payload: dict[str, Any]) -> None:
    """A ValueError naming the first missing or malformed field of a checkpoint's state."""
    for key, kind in CHECKPOINT_FIELDS.items():
        value = payload.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"missing or malformed {key!r}")
    for key in ("best_loss", "bad_epochs", "in_a_row"):
        if key not in payload:
            raise ValueError(f"missing {key!r}")
    if not all(isinstance(m, dict) for m in payload["history"]):
        raise ValueError("malformed 'history'")
    if payload["epoch"] < 1 or len(payload["history"]) != payload["epoch"]:
        raise ValueError(f"epoch {payload['epoch']} does not match its history")


def check_fits(checkpoint: dict[str, Any], network: nn.Module, run_dir: object) -> None:
    """Refuse (exit 2) a checkpoint whose weights are not the network's: names, shapes, dtypes.

    The structure is checked when the file is read; only the built network can tell whether its
    tensors fit, and a mismatch found in the middle of ``fit`` would be a failed run.
    """
    expected = network.state_dict()
    for key in ("model", "best_state"):
        weights = checkpoint.get(key)
        if weights is None and key == "best_state":
            continue
        problem = _weights_mismatch(weights, expected)
        if problem:
            raise CheckpointError(
                f"the checkpoint in {run_dir} does not fit the network of its config.json "
                f"({key}: {problem}); resume with the config it was trained under"
            )


def _weights_mismatch(weights: Any, expected: dict[str, torch.Tensor]) -> str | None:
    if not isinstance(weights, dict) or not all(
        isinstance(v, torch.Tensor) for v in weights.values()
    ):
        return "not a mapping of names to tensors"
    missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or extra:
        return f"{len(missing)} tensors missing, {len(extra)} unexpected"
    for name, want in expected.items():
        got = weights[name]
        if got.shape != want.shape or got.dtype != want.dtype:
            return f"{name} is {list(got.shape)} {got.dtype}, the network has {list(want.shape)} {want.dtype}"
    return None


# ----- one epoch, one step ---------------------------------------------------------------------------
@dataclass
class TrainData:
    """The training split on the device, and how this rank cuts it into batches."""

    x: torch.Tensor
    y: torch.Tensor
    batch_size: int  # per rank under torchrun
    rank: int
    world: int
    aug_generator: torch.Generator | None  # None: augment with the shuffling generator

    @property
    def per_rank(self) -> int:
        return len(self.x) // self.world

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.per_rank / self.batch_size)

    @classmethod
    def of(cls, model: Any, dataset: Any, args: TrainArgs) -> TrainData:
        world = torch.distributed.get_world_size() if distributed.active() else 1
        rank = distributed.rank() if world > 1 else 0
        x, y = model.to_tensor(dataset.x_train), model.to_tensor(dataset.y_train)
        if len(x) < world:
            raise DataError("the training split is empty; lower validation_fraction or add data")
        # Shuffling must draw the same permutation on every rank, so under torchrun augmentation
        # gets a generator of its own, reseeded per (epoch, rank); alone, one generator serves both.
        aug = torch.Generator() if world > 1 else None
        return cls(x, y, args.batch_size, rank, world, aug)


def train_one_epoch(
    model: Trainable,
    net: nn.Module,
    data: TrainData,
    parts: Optimization,
    state: TrainingState,
    epoch: int,
    args: TrainArgs,
    precision: Precision,
) -> dict[str, Any]:
    """Train on every batch of this rank's shard once; the epoch's train metrics (summed over
    ranks under torchrun). A batch with a non-finite loss or gradient is skipped and counted."""
    start = time.perf_counter()
    net.train()
    aug = parts.generator
    if data.aug_generator is not None:
        aug = data.aug_generator.manual_seed(args.seed * 1_000_003 + epoch * 1009 + data.rank + 1)
    totals: dict[str, list] = {}
    loss_sum = torch.zeros((), device=model.device)
    seen = skipped = 0
    shard = (data.rank, data.world) if data.world > 1 else None
    batches = model.batches(
        data.x, data.y, data.batch_size, shuffle=True, generator=parts.generator, shard=shard
    )
    bar = progress.bar(data.steps_per_epoch, f"epoch {epoch}/{args.epochs}", unit="batch")
    for xb, yb in batches:
        if args.augment:
            xb = model.augment(xb, args.augment, aug)
        loss, outputs, stepped = train_step(model, net, xb, yb, parts, args, precision, data.world)
        bar.update(1)
        if not stepped:
            skipped += 1
            state.in_a_row += 1
            if state.in_a_row >= args.max_nonfinite_batches:
                raise RunFailed(
                    f"{state.in_a_row} batches in a row had a non-finite loss or gradient "
                    f"(last loss {loss.item()}) at epoch {epoch}; lower learning_rate, "
                    "set grad_clip or check the data"
                )
            continue
        state.in_a_row = 0
        with torch.no_grad():
            loss_sum += loss.detach() * len(yb)
            seen += len(yb)
            accumulate(totals, model.batch_metrics(outputs.detach(), yb))
    bar.close()
    if data.world > 1:
        loss_sum, seen = reduce_totals(loss_sum, seen, totals, model.device)
    metrics: dict[str, Any] = {
        "epoch": epoch,
        "train_loss": float(loss_sum) / max(1, seen),
        **{f"train_{k}": v for k, v in ratios(totals).items()},
    }
    if skipped:
        metrics["nonfinite_batches"] = skipped
        progress.line(f"warning: skipped {skipped} batches with a non-finite loss/gradient")
    metrics["train_time"] = time.perf_counter() - start
    return metrics


def train_step(
    model: Trainable,
    net: nn.Module,
    xb: torch.Tensor,
    yb: torch.Tensor,
    parts: Optimization,
    args: TrainArgs,
    precision: Precision,
    world: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """One update: (loss, outputs, stepped). Never steps on a NaN/inf loss or gradient; under
    torchrun one rank's NaN skips the step on every rank, so the ranks never diverge."""
    with precision.autocast():
        outputs = net(xb)
        loss = model.loss(outputs, yb)
    if isinstance(outputs, tuple):  # a training-only auxiliary head: metrics read the main one
        outputs = outputs[0]
    parts.optimizer.zero_grad(set_to_none=True)
    if parts.scaler.is_enabled():
        parts.scaler.scale(loss).backward()
        parts.scaler.unscale_(parts.optimizer)
    else:
        loss.backward()
    finite = torch.isfinite(loss)
    if args.grad_clip:  # the norm is computed anyway: check the gradient too
        grad_norm = nn.utils.clip_grad_norm_(parts.params, args.grad_clip)
        finite = finite & torch.isfinite(grad_norm)
    if world > 1:
        flag = finite.to(torch.float32).reshape(1)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        finite = flag[0] > 0
    if not finite:
        if parts.scaler.is_enabled():
            parts.scaler.update()
        return loss, outputs, False
    if parts.scaler.is_enabled():  # fp16: the scaler also skips steps with inf gradients
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
    else:
        parts.optimizer.step()
    if parts.scheduler is not None:
        parts.scheduler.step()
    return loss, outputs, True


def wrap_distributed(network: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel over the network (its construction broadcasts rank 0's weights)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(network, device_ids=ids)


# ----- metric totals ---------------------------------------------------------------------------------
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
    """The one line an epoch prints: losses and metrics, its time, the rate, ``*`` if kept."""
    hidden = ("epoch", "best", "samples_per_second", "learning_rate", "nonfinite_batches")
    parts = [f"epoch {metrics['epoch']}/{epochs}"]
    for key, value in metrics.items():
        if key not in hidden and key != "train_time":
            parts.append(f"{key} {value:.4f}" if key != "epoch_time" else f"{value:.1f}s")
    parts.append(f"lr {metrics['learning_rate']:.2e}")
    return "  ".join(parts) + ("  *" if metrics.get("best") else "")
