"""Weights & Biases, never fatal: online when logged in, offline without an API key, or off.

Every call is guarded: a W&B failure (network, quota, bad key) becomes one warning and the run goes
on with its local record.
"""

from __future__ import annotations

import netrc
import os
import sys
from pathlib import Path
from typing import Any


def has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        rc = netrc.netrc()
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].rstrip("/")
    return rc.authenticators(host) is not None


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
                settings=wandb.Settings(silent=True, console="off"),
            )
            self.mode = mode
            if mode == "offline":
                print(
                    f"W&B: offline (no API key); sync later with: wandb sync {run_dir}/wandb/offline-run-*",
                    file=sys.stderr,
                )
        except Exception as e:
            self._warn(e)

    def _warn(self, e: Exception) -> None:
        print(f"warning: W&B disabled for this run ({type(e).__name__}: {e})", file=sys.stderr)
        self.run = None

    def log(self, metrics: dict[str, Any]) -> None:
        if self.run is None:
            return
        try:
            self.run.log(metrics)
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
