"""Plots of a trained model: confusion matrix, a montage of predictions, training curves (PNG).

They draw a model's ``Predictions`` (models/predictions.py), made once by ``Model.read_split``.

matplotlib is imported lazily so importing the package, and runs that never plot, do not pay for it.
Figures are ``matplotlib.figure.Figure`` objects drawn on their own Agg canvas, never through pyplot:
nothing here selects a backend, so a notebook's inline (or any interactive) backend stays as it was
after a run that wrote plots. Every function takes plain arrays or a model and writes a PNG
atomically; ``run_plots`` writes them all into a run folder at the end of a run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from text_recognizer.figures import new_figure, save_png
from text_recognizer.models.predictions import Predictions

CONFUSION_NAME = "confusion_matrix.png"
MONTAGE_NAME = "predictions.png"
CURVES_NAME = "curves.png"
RIGHT, WRONG = "#1a9850", "#d73027"  # green, red


# ----- samples and captions ----------------------------------------------------------------------
def sample_indices(n: int, k: int, seed: int = 0) -> np.ndarray:
    """A fixed random choice of ``k`` of ``n`` items (sorted), so every epoch shows the same ones."""
    if n <= 0 or k <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=min(k, n), replace=False))


def caption(target: str, prediction: str, confidence: float) -> str:
    """FSDL's caption: what the model read, how sure it was, and the truth when it was wrong."""
    mark = "" if prediction == target else f" (true {target!r})"
    return f"pred {prediction!r} {confidence:.2f}{mark}"


# ----- plots ---------------------------------------------------------------------------------------
def confusion_matrix(targets: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts[i, j]: items of true class i predicted as class j."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(targets, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return cm


def plot_confusion_matrix(
    cm: np.ndarray, labels: list[str], out: Path | str, title: str | None = None
) -> Path:
    """Row-normalised confusion matrix (recall per true class) over the classes that occur."""
    used = np.flatnonzero(cm.sum(0) + cm.sum(1))  # hide classes absent from both axes
    if used.size == 0:
        used = np.arange(len(cm))
    sub = cm[np.ix_(used, used)].astype(float)
    norm = sub / np.maximum(sub.sum(1, keepdims=True), 1)
    names = [labels[i] if i < len(labels) else str(i) for i in used]
    size = min(16.0, max(4.0, 0.28 * len(used) + 2))
    fig = new_figure(figsize=(size + 1, size))
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, fontsize=7 if len(names) > 20 else 9)
    ax.set_yticks(range(len(names)), names, fontsize=7 if len(names) > 20 else 9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(names) <= 20:  # counts are readable only on small matrices
        for i in range(len(names)):
            for j in range(len(names)):
                if sub[i, j]:
                    ax.text(j, i, int(sub[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")  # fmt: skip
    accuracy = np.trace(sub) / max(sub.sum(), 1)
    ax.set_title(title or f"confusion matrix (accuracy {accuracy:.3f})")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return save_png(fig, out)


def plot_montage(preds: Predictions, out: Path | str, cols: int | None = None) -> Path:
    """A grid of images captioned with prediction and confidence: right in green, wrong in red."""
    n = len(preds.images)
    if n == 0:
        raise ValueError("no images to plot")
    h, w = preds.images.shape[-2:]
    wide = w / h > 3  # lines: one per row; characters: a square-ish grid
    cols = cols or (min(2, n) if wide else min(8, n))
    rows = -(-n // cols)
    cell_w, cell_h = (min(6.0, 0.9 * w / h), 1.1) if wide else (1.6, 1.9)
    fig = new_figure(figsize=(cell_w * cols, cell_h * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:n]):
        ok = preds.predictions[i] == preds.targets[i]
        ax.imshow(preds.images[i], cmap="gray", vmin=0, vmax=255 if preds.images.max() > 1 else 1)
        text = caption(preds.targets[i], preds.predictions[i], preds.confidences[i])
        ax.set_title(
            text, fontsize=8, color=RIGHT if ok else WRONG, loc="left" if wide else "center"
        )
    right = sum(preds.correct)
    fig.suptitle(f"{right}/{n} right (green), {n - right} wrong (red)", fontsize=10)
    fig.tight_layout()
    return save_png(fig, out)


def plot_training_curves(run_dir: Path | str, out: Path | str | None = None) -> Path | None:
    """The run's loss and accuracy/CER per epoch (compare.py's plot for one run); None if no epochs."""
    from text_recognizer.orchestration.compare import load_run, plot_curves

    run_dir = Path(run_dir)
    return plot_curves([load_run(run_dir)], out or run_dir / CURVES_NAME, title=run_dir.name)


def montage_sample(preds: Predictions, k: int = 32) -> Predictions:
    """Up to ``k`` items, the wrong ones first (the interesting part), then right ones."""
    wrong = [i for i, ok in enumerate(preds.correct) if not ok]
    right = [i for i, ok in enumerate(preds.correct) if ok]
    half = min(len(wrong), max(k // 2, k - len(right)))
    return preds.subset(sorted(wrong[:half]) + right[: k - half])


def run_plots(
    preds: Predictions, mapping: list[str], run_dir: Path | str, k: int = 32
) -> dict[str, Path]:
    """Write the confusion matrix (characters), prediction montage and curves into ``run_dir``,
    from the predictions the run's end already made (nothing is predicted again here)."""
    run_dir = Path(run_dir)
    written: dict[str, Path] = {}
    if preds.target_ids is not None and preds.predicted_ids is not None and len(preds.images):
        cm = confusion_matrix(preds.target_ids, preds.predicted_ids, len(mapping))
        written["confusion_matrix"] = plot_confusion_matrix(cm, mapping, run_dir / CONFUSION_NAME)
    if len(preds.images):
        k = k // 2 if preds.target_ids is None else k  # lines take more room
        written["predictions"] = plot_montage(montage_sample(preds, k), run_dir / MONTAGE_NAME)
    curves = plot_training_curves(run_dir)
    if curves is not None:
        written["curves"] = curves
    return written
