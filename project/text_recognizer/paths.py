"""The one place that knows where data, runs and weights live.

The project root is found by walking up from this file to the folder that holds ``setup.py`` and
``data/`` (an editable install), and can always be overridden with ``TEXT_RECOGNIZER_ROOT``. Nothing
else in the package builds paths from ``__file__``.
"""

from __future__ import annotations

import os
from pathlib import Path


def _find_project_root() -> Path:
    env = os.environ.get("TEXT_RECOGNIZER_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "setup.py").is_file() and (parent / "data").is_dir():
            return parent
    # A non-editable install: keep data and runs under the current working directory.
    return Path.cwd().resolve()


PROJECT_ROOT: Path = _find_project_root()
DATA_DIR: Path = Path(
    os.environ.get("TEXT_RECOGNIZER_DATA_DIR", PROJECT_ROOT / "data")
).expanduser()
RAW_DIR: Path = DATA_DIR / "raw"
# The metadata.toml files are tracked in the checkout: they stay in the project's data/raw/<name>/
# even where TEXT_RECOGNIZER_DATA_DIR moves the data folder (and the downloads with it).
TRACKED_RAW_DIR: Path = PROJECT_ROOT / "data" / "raw"
PROCESSED_DIR: Path = DATA_DIR / "processed"
RUNS_DIR: Path = Path(
    os.environ.get("TEXT_RECOGNIZER_RUNS_DIR", PROJECT_ROOT / "runs")
).expanduser()
# Real sample data that sits beside the checkout (read-only, never copied into the project).
SHARED_DATA_DIR: Path = Path(
    os.environ.get("TEXT_RECOGNIZER_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data")
).expanduser()


def raw_dir(name: str) -> Path:
    """Folder of a dataset's raw files: downloads go here (see `metadata_path` for its metadata)."""
    return RAW_DIR / name


def metadata_path(name: str) -> Path:
    """A dataset's ``metadata.toml``: the project's tracked ``data/raw/<name>/metadata.toml``.

    A moved data folder (``TEXT_RECOGNIZER_DATA_DIR``) needs no copy of it. Where the raw folder
    holds a ``metadata.toml`` of its own (a private mirror's, a test's), that one is read instead;
    anything there, even a broken one, is reported as it is, never skipped.
    """
    local = raw_dir(name) / "metadata.toml"
    if os.path.lexists(local):
        return local
    return TRACKED_RAW_DIR / name / "metadata.toml"


def processed_dir(name: str) -> Path:
    """Folder of a dataset's HDF5 caches."""
    return PROCESSED_DIR / name


def runs_dir() -> Path:
    """Root of run records; read at call time so tests can point it elsewhere."""
    return Path(os.environ.get("TEXT_RECOGNIZER_RUNS_DIR", RUNS_DIR)).expanduser()
