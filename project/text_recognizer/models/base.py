"""The Model base class: a network, the dataset's config, training, evaluation and prediction.

The data path keeps each split as one uint8 tensor (on the GPU when training there) and cuts batches
by indexing a shuffled permutation, so feeding a batch costs one gather and one cast instead of a
Python call per sample. Subclasses define the loss, the metrics and how outputs become text
(``read_outputs``); every prediction (``predict``, ``predict_on_image``, ``read_split``, the
predictors, plots and evaluate.py) goes through that one method and, for images from outside,
through ``preprocessing.preprocess_image``. The loop's pieces live in models/training.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from text_recognizer import progress
from text_recognizer.config import TrainArgs
from text_recognizer.decoding import GREEDY, Decoder, decoder_from
from text_recognizer.errors import DataError
from text_recognizer.images.augment import augment_batch
from text_recognizer.models.precision import Precision
from text_recognizer.models.predictions import Predictions
from text_recognizer.models.training import (
    Optimization,
    TrainData,
    TrainingState,
    format_epoch,
    train_one_epoch,
    wrap_distributed,
)
from text_recognizer.models.weights_file import WEIGHTS_FORMAT
from text_recognizer.networks import build_network
from text_recognizer.preprocessing import preprocess_image, preprocessing_for
from text_recognizer.run.checkpoint import Checkpointer

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
    ) -> None:
        self.data_config = data_config
        self.mapping: list[str] = list(data_config["mapping"])
        self.input_shape = tuple(data_config["input_shape"])
        self.output_shape = tuple(data_config["output_shape"])
        self.network_name = network
        self.network_args = dict(network_args or {})
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
        """Training-batch metrics: per metric, a (numerator, denominator) pair summed over the
        epoch; the metric is their ratio. Tensors stay on the device, so training does not sync
        the GPU per step. (Evaluation reads whole splits through ``read_split`` instead.)"""
        return {}

    def augment(
        self, xb: torch.Tensor, strength: float, generator: torch.Generator
    ) -> torch.Tensor:
        """On-the-fly augmentation of a training batch (``train_args.augment`` > 0)."""
        return augment_batch(xb, strength, generator)

    # ----- data path -----------------------------------------------------------------------------
    def to_tensor(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Raw uint8 images stay uint8 until the batch is cut: 4x less memory and copying.

        A read-only array (``np.frombuffer``, ``np.asarray`` of a PIL image, a memory map) is
        copied: torch shares the memory of what it converts and warns that it cannot protect it.
        """
        if isinstance(x, np.ndarray) and not x.flags.writeable:
            x = x.copy()
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
                # index_select gathers uint8 rows far faster than fancy indexing
                yield self.preprocess(x.index_select(0, idx)), y.index_select(0, idx)
        else:
            for i in range(0, n, batch_size):
                yield self.preprocess(x[i : i + batch_size]), y[i : i + batch_size]

    # ----- training ----------------------------------------------------------------------------------
    def fit(
        self,
        dataset: Any,
        args: TrainArgs,
        on_epoch_end: EpochCallback | None = None,
        checkpoint: Checkpointer | None = None,
        resume: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Train on ``dataset.x_train``; validate each epoch; keep (and end with) the best weights.

        ``checkpoint`` saves the whole training state after every epoch and ``resume`` (a loaded
        checkpoint) continues from it, bit-exactly on the CPU. Under torchrun each rank trains on
        its shard through DistributedDataParallel; train metrics are summed over ranks and every
        rank validates on the whole split, so all ranks take the same decisions. The global RNGs
        and the thread count are set once, by the caller (the runner's ``seed_everything`` and
        ``select_num_threads``), before the network is built; ``args.seed`` seeds the shuffling.
        """
        data = TrainData.of(self, dataset, args)
        precision = Precision.choose(args.mixed_precision, self.device)
        parts = Optimization.build(self.network, args, data.steps_per_epoch, precision)
        state = TrainingState()
        if resume is not None:
            state = TrainingState.from_checkpoint(resume, parts)
            progress.line(f"resuming after epoch {state.epoch}/{args.epochs}")
        net = wrap_distributed(self.network, self.device) if data.world > 1 else self.network
        has_val = dataset.x_val is not None and len(dataset.x_val) > 0
        if has_val:
            x_val, y_val = self.to_tensor(dataset.x_val), self.to_tensor(dataset.y_val)
        for epoch in range(state.epoch + 1, 0 if state.done else args.epochs + 1):
            start = time.perf_counter()
            metrics = train_one_epoch(self, net, data, parts, state, epoch, args, precision)
            if has_val:  # every rank validates on the whole split: same numbers, no reduction
                metrics.update(
                    {f"val_{k}": v for k, v in self.evaluate(x_val, y_val, args).items()}
                )
            metrics["learning_rate"] = parts.optimizer.param_groups[0]["lr"]
            metrics["epoch_time"] = time.perf_counter() - start
            metrics["train_time"] = train_time = metrics.pop("train_time")  # the record's order
            metrics["samples_per_second"] = data.per_rank * data.world / max(train_time, 1e-9)
            stop = state.end_epoch(metrics, self.network, args)
            if checkpoint is not None:
                checkpoint.save(state.to_checkpoint(parts))
            progress.line(format_epoch(metrics, args.epochs))
            if on_epoch_end is not None:
                on_epoch_end(metrics)
            if stop:
                progress.line(
                    f"early stopping: val_loss has not improved for {args.early_stopping_patience}"
                    " epochs"
                )
                break
        if state.best_state is not None:
            self.network.load_state_dict(state.best_state)
        return state.history

    # ----- evaluation and prediction -------------------------------------------------------------------
    def read_outputs(
        self, outputs: torch.Tensor, decoder: Decoder, confidences: bool = True
    ) -> tuple[list[str], list[float], list[int] | None]:
        """A batch of network outputs -> texts, their confidences (empty unless asked) and, for
        character models, the class indices. The one place outputs become text."""
        raise NotImplementedError

    def target_texts(self, y: np.ndarray | torch.Tensor) -> list[str]:
        """Labels -> the texts they stand for."""
        raise NotImplementedError

    def text_metrics(self, predictions: list[str], targets: list[str]) -> dict[str, float]:
        """The model's metrics over a split's predictions (accuracy; CER, WER ...)."""
        raise NotImplementedError

    def forward_batches(
        self, x: torch.Tensor, batch_size: int, precision: Precision
    ) -> Iterator[tuple[slice, torch.Tensor]]:
        """(slice, outputs) per batch of uint8 images, in eval mode without autograd; the
        network's train/eval mode is restored afterwards."""
        was_training = self.network.training
        self.network.eval()
        try:
            with torch.no_grad():
                for i in range(0, len(x), batch_size):
                    with precision.autocast():
                        outputs = self.network(self.preprocess(x[i : i + batch_size]))
                    yield slice(i, i + batch_size), outputs
        finally:
            self.network.train(was_training)

    def predict(
        self, x: np.ndarray | torch.Tensor, batch_size: int = 256, decoder: Decoder = GREEDY
    ) -> tuple[list[str], list[float]]:
        """Texts and confidences for a stack of uint8 images shaped like the training images."""
        texts: list[str] = []
        confidences: list[float] = []
        precision = Precision.choose("off", self.device)
        for _, outputs in self.forward_batches(self.to_tensor(x), batch_size, precision):
            t, c, _ = self.read_outputs(outputs, decoder)
            texts += t
            confidences += c
        return texts, confidences

    def read_split(
        self,
        x: np.ndarray | torch.Tensor,
        y: np.ndarray | torch.Tensor,
        args: TrainArgs | None = None,
        decoder: Decoder | None = None,
    ) -> Predictions:
        """Read a labelled split once: the loss, the texts and confidences and the metrics all
        come from the same forward pass and the same decoding. ``args`` None: full precision,
        the default evaluation batch and greedy decoding."""
        metrics, texts, confidences, ids = self._read(x, y, args, decoder, confidences=True)
        images = x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        result = Predictions(images, self.target_texts(y), texts, confidences, metrics=metrics)
        if ids:
            labels = y.cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
            result.target_ids = labels.astype(np.int64).reshape(-1)
            result.predicted_ids = np.asarray(ids, dtype=np.int64)
        return result

    def evaluate(
        self,
        x: np.ndarray | torch.Tensor,
        y: np.ndarray | torch.Tensor,
        args: TrainArgs | None = None,
        decoder: Decoder | None = None,
    ) -> dict[str, float]:
        """Mean loss and metrics over a split, in eval mode: ``read_split`` without keeping the
        images or computing confidences (what validation runs every epoch)."""
        return self._read(x, y, args, decoder, confidences=False)[0]

    def _read(
        self,
        x: np.ndarray | torch.Tensor,
        y: np.ndarray | torch.Tensor,
        args: TrainArgs | None,
        decoder: Decoder | None,
        confidences: bool,
    ) -> tuple[dict[str, float], list[str], list[float], list[int]]:
        """One pass over a labelled split: (metrics, texts, confidences, class indices)."""
        precision = Precision.choose(args.mixed_precision if args else "off", self.device)
        batch_size = args.eval_batch if args else TrainArgs.from_config({}).eval_batch
        if decoder is None:
            decoder = decoder_from(args) if args else GREEDY
        xt, yt = self.to_tensor(x), self.to_tensor(y)
        loss_sum = torch.zeros((), device=self.device)
        texts: list[str] = []
        confs: list[float] = []
        ids: list[int] = []
        for rows, outputs in self.forward_batches(xt, batch_size, precision):
            with precision.autocast():
                loss_sum += self.loss(outputs, yt[rows]).float() * len(outputs)
            t, c, i = self.read_outputs(outputs, decoder, confidences)
            texts.extend(t)
            confs.extend(c)
            ids.extend(i or [])
        metrics = {"loss": loss_sum.item() / max(1, len(xt))}
        metrics.update(self.text_metrics(texts, self.target_texts(y)))
        return metrics, texts, confs, ids

    @property
    def preprocessing(self) -> dict[str, Any]:
        """How an image of any size becomes this model's input (see preprocessing.py)."""
        return preprocessing_for(self.data_config)

    def predict_on_image(
        self, image: Any, polarity: str = "light", decoder: Decoder = GREEDY
    ) -> tuple[str, float]:
        """The text in one image (a path, PIL image or array: uint8, or float in [0, 1]) and its
        confidence, through the same preprocessing as the predictors and the datasets: a
        non-square character is centred, a line scaled to the height and padded.
        ``polarity="light"``: white ink on black, like the datasets' arrays; ``"auto"`` detects."""
        x = preprocess_image(image, self.preprocessing, polarity)
        texts, confidences = self.predict(x[None], decoder=decoder)
        return texts[0], confidences[0]

    def examples(self, predictions: Predictions, k: int = 10) -> list[dict[str, Any]]:
        """The ``k`` worst and ``k`` best predictions of a split, for the run record; none here."""
        return []

    # ----- save / load -------------------------------------------------------------------------------
    def save_weights(self, path: str | Path, config: dict[str, Any] | None = None) -> Path:
        """Weights plus everything a predictor needs (mapping, shapes, network), atomically;
        ``config``, the run's resolved config, is kept for the record (and evaluate.py)."""
        from text_recognizer.fileio import atomic_path

        payload = {
            "format_version": WEIGHTS_FORMAT,
            "model": type(self).__name__,
            "network": self.network_name,
            "network_args": self.network_args,
            "data_config": self.data_config,
            "config": config or {},
            "state_dict": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
        }
        path = Path(path)
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Model:
        """Rebuild a saved model (see :meth:`load_with_config`)."""
        return cls.load_with_config(path, device)[0]

    @classmethod
    def load_with_config(
        cls, path: str | Path, device: str | torch.device = "cpu"
    ) -> tuple[Model, dict[str, Any]]:
        """A saved model and the run config saved with it, read with
        ``torch.load(weights_only=True)``: no code runs from the file.

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
        data_config, config = dict(payload["data_config"]), payload["config"]
        # weights saved before datasets recorded their preprocessing: rebuilt from the config
        data_config["preprocessing"] = preprocessing_for(data_config, config)
        model = model_cls(data_config, payload["network"], payload["network_args"], device)
        model.network.load_state_dict(payload["state_dict"])
        model.network.eval()
        return model, config
