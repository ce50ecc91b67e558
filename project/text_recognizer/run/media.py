"""What a run shows besides numbers: per-epoch validation images, end-of-run plots, W&B media.

Both hooks are called from runner.py and never raise: a plot or W&B failure is one warning and the
run keeps its result. Per-epoch images are predicted on a fixed sample of a few validation items
(a handful of forward passes, little next to an epoch; bench/README.md) and only when W&B is on.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from text_recognizer import progress
from text_recognizer.run.tracking import Tracker, brief

EPOCH_IMAGES = 8
VAL_KEY = "val_examples"


def _warn(what: str, e: BaseException) -> None:
    progress.line(f"warning: {what} failed ({type(e).__name__}: {brief(str(e))}); the run goes on")


class EpochImages:
    """A fixed validation sample, predicted at each epoch end into captioned W&B images."""

    def __init__(
        self, model: Any, dataset: Any, tracker: Tracker, args: Any, k: int = EPOCH_IMAGES
    ) -> None:
        self.model, self.tracker, self.args = model, tracker, args
        self.x: np.ndarray | None = None
        self.y: np.ndarray | None = None
        self.seconds = 0.0  # time spent here, for the overhead check
        if not tracker.enabled:
            return
        try:
            x = dataset.x_val if getattr(dataset, "x_val", None) is not None else dataset.x_test
            y = dataset.y_val if getattr(dataset, "x_val", None) is not None else dataset.y_test
            if x is None or len(x) == 0:
                x, y = dataset.x_test, dataset.y_test
            from text_recognizer.plots import sample_indices

            idx = sample_indices(len(x), k)
            self.x, self.y = np.asarray(x[idx]), np.asarray(y[idx])
        except Exception as e:
            _warn("choosing validation images for W&B", e)

    def media(self) -> dict[str, Any]:
        """``{"val_examples": [wandb.Image...]}`` for this epoch's log call, or {} when off."""
        if self.x is None or not self.tracker.enabled or len(self.x) == 0:
            return {}
        start = time.perf_counter()
        try:
            from text_recognizer.plots import caption

            p = self.model.read_split(self.x, self.y, self.args)
            captions = [
                caption(t, q, c)
                for t, q, c in zip(p.targets, p.predictions, p.confidences, strict=True)
            ]
            return self.tracker.images(VAL_KEY, list(p.images), captions)
        except Exception as e:
            _warn("predicting validation images for W&B", e)
            self.x = None
            return {}
        finally:
            self.seconds += time.perf_counter() - start


def report_run(
    model: Any,
    preds: Any,
    run_dir: Path,
    tracker: Tracker,
    examples: list[dict[str, Any]] | None = None,
    weights: str | Path | None = None,
) -> dict[str, str]:
    """End of a run: PNG plots in ``run_dir``; to W&B the plots, confusion matrix, worst lines, weights.

    ``preds`` is the run's one reading of the test split (``Model.read_split``). Returns
    {plot name: file name} of what was written (for summary.json); never raises.
    """
    written: dict[str, Path] = {}
    try:
        from text_recognizer.plots import run_plots

        written = run_plots(preds, model.mapping, run_dir)
    except Exception as e:
        _warn("writing plots", e)
    if tracker.enabled:
        media: dict[str, Any] = {}
        for name, path in written.items():
            media.update(tracker.images(f"plots/{name}", [str(path)], [name]))
        if preds.target_ids is not None:
            media.update(
                tracker.confusion_matrix(
                    "confusion_matrix", preds.target_ids, preds.predicted_ids, model.mapping
                )
            )
        worst = [e for e in examples or [] if e.get("rank") == "worst"]
        if worst:
            columns = ["image", "target", "prediction", "cer", "confidence"]
            rows = []
            for e in worst:
                image = preds.images[int(e["index"])]
                rows.append([image, e["target"], e["prediction"], e["cer"], e["confidence"]])
            media.update(tracker.table("worst_lines", columns, rows, image_columns=("image",)))
        if media:
            tracker.log(media)
        if weights:
            tracker.log_artifact(weights, name=f"weights-{run_dir.name}", kind="model")
    return {name: path.name for name, path in written.items()}
