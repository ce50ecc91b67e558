"""Run records (DESIGN.md §5): runs/<group>/<run_name>/ with config, per-epoch metrics and a summary.

Every file is written atomically, so a crash or kill never leaves half a JSON document behind.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

from text_recognizer import paths
from text_recognizer.fileio import append_jsonl, write_json_atomic


def slug(text: str) -> str:
    """A folder-safe form of a group or run name ("Sample Experiments" -> "sample-experiments")."""
    return re.sub(r"[^a-z0-9._+=-]+", "-", text.lower()).strip("-") or "default"


def config_digest(config: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:6]


class RunRecord:
    """The folder of one run and the files in it."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.config_path = run_dir / "config.json"
        self.metrics_path = run_dir / "metrics.jsonl"
        self.summary_path = run_dir / "summary.json"
        self.weights_path = run_dir / "weights.pt"
        self.summary: dict[str, Any] = {}

    @classmethod
    def create(cls, config: dict[str, Any], root: Path | None = None) -> RunRecord:
        """Make a fresh, uniquely named run folder under runs/<group>/."""
        root = root or paths.runs_dir()
        group_dir = root / slug(config.get("experiment_group") or "default")
        base = config.get("run_name") or (
            f"{time.strftime('%Y%m%d-%H%M%S')}_{slug(config['dataset'])}_{config['network']}_"
            f"{config_digest(config)}"
        )
        base = slug(base) if config.get("run_name") else base
        for i in range(1, 10000):
            run_dir = group_dir / (base if i == 1 else f"{base}-{i}")
            try:
                run_dir.mkdir(parents=True, exist_ok=False)
                return cls(run_dir)
            except FileExistsError:
                continue
        raise RuntimeError(f"could not create a run folder under {group_dir}")

    def write_config(self, config: dict[str, Any]) -> None:
        write_json_atomic(self.config_path, config)

    def log_epoch(self, metrics: dict[str, Any]) -> None:
        append_jsonl(self.metrics_path, metrics)

    def update_summary(self, **fields: Any) -> dict[str, Any]:
        self.summary.update(fields)
        write_json_atomic(self.summary_path, self.summary)
        return self.summary

    @staticmethod
    def read(run_dir: Path) -> dict[str, Any]:
        """A run's config, summary and metrics as one dict (for comparisons and tests)."""
        run_dir = Path(run_dir)
        out: dict[str, Any] = {"dir": str(run_dir)}
        for name in ("config", "summary"):
            p = run_dir / f"{name}.json"
            out[name] = json.loads(p.read_text()) if p.exists() else None
        mp = run_dir / "metrics.jsonl"
        out["metrics"] = (
            [json.loads(x) for x in mp.read_text().splitlines() if x] if mp.exists() else []
        )
        return out
