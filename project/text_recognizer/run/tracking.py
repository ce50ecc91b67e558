"""Weights & Biases, never fatal: online when logged in, offline without an API key, or off.

Every call is guarded: a W&B failure (network, quota, bad key) becomes one warning and the run goes
on with its local record.
"""

from __future__ import annotations

import netrc
import os
import re
from pathlib import Path
from typing import Any

from text_recognizer import progress
from text_recognizer.errors import one_line

MAX_REPLY_CHARS = 300
_HIDDEN_HTML = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(r"<[^>]{0,2000}>")


def brief(text: str, limit: int = MAX_REPLY_CHARS) -> str:
    """A server's reply as it may appear in one message line: an HTML error page (W&B behind a
    proxy sends one) reduced to its text, whitespace folded, at most ``limit`` characters."""
    import html

    if "<" in text and ">" in text:
        text = html.unescape(_HTML_TAG.sub(" ", _HIDDEN_HTML.sub(" ", text)))
    text = one_line(text)
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        rc = netrc.netrc()
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].rstrip("/")
    return rc.authenticators(host) is not None


def _stats_settings() -> dict[str, Any]:
    """W&B's system-metrics sampler competes with training for a small CPU's cores.

    ``TEXT_RECOGNIZER_WANDB_STATS`` = ``off`` turns it off, a number sets its sampling interval in
    seconds. Default: 30 s on the GPU, off on a CPU-only machine (where it takes a large share of
    a small CPU's time from training, see bench/README.md, and its charts say little).
    """
    value = os.environ.get("TEXT_RECOGNIZER_WANDB_STATS", "").strip().lower()
    if value in ("off", "0", "false", "no"):
        return {"x_disable_stats": True}
    if value:
        try:
            return {"x_stats_sampling_interval": float(value)}
        except ValueError:
            return {}
    try:
        import torch

        gpu = torch.cuda.is_available()
    except Exception:
        gpu = False
    return {"x_stats_sampling_interval": 30.0} if gpu else {"x_disable_stats": True}


class Tracker:
    """A thin, failure-proof wrapper over a wandb run (or nothing, when disabled)."""

    def __init__(self, enabled: bool, config: dict[str, Any], run_dir: Path, name: str) -> None:
        self.run = None
        self.mode = "disabled"
        if not enabled or os.environ.get("WANDB_MODE") == "disabled":
            return
        # Under `wandb agent` (WANDB_SWEEP_ID set) the run must join the agent's sweep run online;
        # the agent itself is logged in, whatever our API-key guess says.
        online = has_api_key() or bool(os.environ.get("WANDB_SWEEP_ID"))
        mode = os.environ.get("WANDB_MODE") or ("online" if online else "offline")
        try:
            import wandb

            self.run = wandb.init(
                project=os.environ.get("WANDB_PROJECT", "text-recognizer"),
                group=config.get("experiment_group"),
                name=name,
                config=config,
                dir=str(run_dir),
                mode=mode,
                reinit="finish_previous",
                settings=wandb.Settings(silent=True, console="off", **_stats_settings()),
            )
            self.mode = mode
            if mode == "offline":
                progress.line(
                    f"W&B: offline (no API key); sync later with: wandb sync {run_dir}/wandb/offline-run-*",
                )
        except Exception as e:
            self._warn(e)

    def _warn(self, e: Exception) -> None:
        progress.line(
            f"warning: W&B disabled for this run ({type(e).__name__}: {brief(str(e))})",
        )
        self.run = None

    def log(self, metrics: dict[str, Any]) -> None:
        if self.run is None:
            return
        try:
            self.run.log(metrics)
        except Exception as e:
            self._warn(e)

    @property
    def enabled(self) -> bool:
        """True while a wandb run is live (False when off, or after a W&B failure)."""
        return self.run is not None

    def images(
        self, key: str, images: list[Any], captions: list[str] | None = None
    ) -> dict[str, Any]:
        """``{key: [wandb.Image]}`` to merge into one ``log`` call (same step as the metrics).

        ``images`` are arrays or file paths; {} when off or on failure.
        """
        if self.run is None or not images:
            return {}
        try:
            import wandb

            captions = captions or [None] * len(images)
            return {
                key: [wandb.Image(im, caption=c) for im, c in zip(images, captions, strict=True)]
            }
        except Exception as e:
            self._warn(e)
            return {}

    def log_images(self, key: str, images: list[Any], captions: list[str] | None = None) -> None:
        """Log captioned images now (their own step)."""
        media = self.images(key, images, captions)
        if media:
            self.log(media)

    def confusion_matrix(
        self, key: str, y_true: Any, y_pred: Any, class_names: list[str]
    ) -> dict[str, Any]:
        """``{key: wandb.plot.confusion_matrix}`` (interactive in the W&B UI); {} when off."""
        if self.run is None:
            return {}
        try:
            import wandb

            return {
                key: wandb.plot.confusion_matrix(
                    y_true=[int(v) for v in y_true],
                    preds=[int(v) for v in y_pred],
                    class_names=list(class_names),
                )
            }
        except Exception as e:
            self._warn(e)
            return {}

    def table(
        self,
        key: str,
        columns: list[str],
        rows: list[list[Any]],
        image_columns: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """``{key: wandb.Table}``; values in ``image_columns`` become wandb.Image. {} when off."""
        if self.run is None:
            return {}
        try:
            import wandb

            at = [columns.index(c) for c in image_columns]
            data = [[wandb.Image(v) if i in at else v for i, v in enumerate(r)] for r in rows]
            return {key: wandb.Table(columns=columns, data=data)}
        except Exception as e:
            self._warn(e)
            return {}

    def log_artifact(self, path: str | Path, name: str, kind: str = "model") -> None:
        """Upload a file (the weights) as a W&B artifact; offline, it is synced with the run."""
        if self.run is None:
            return
        try:
            import re

            import wandb

            artifact = wandb.Artifact(re.sub(r"[^A-Za-z0-9._-]+", "-", name), type=kind)
            artifact.add_file(str(path))
            self.run.log_artifact(artifact)
        except Exception as e:
            self._warn(e)

    def summary(self, fields: dict[str, Any]) -> None:
        if self.run is None:
            return
        try:
            self.run.summary.update(fields)
        except Exception as e:
            self._warn(e)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is None:
            return
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as e:
            self._warn(e)
        self.run = None
