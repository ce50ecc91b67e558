"""Figures drawn without pyplot: one Figure on its own Agg canvas, written as a PNG atomically.

Apart from plots.py (a model's plots) and orchestration/compare.py (many runs' curves), which both
draw with these and one of which calls the other: a module of its own keeps them out of a cycle.
Nothing here selects a backend, so a notebook's inline (or any interactive) backend stays as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def new_figure(**kwargs: Any) -> Any:
    """A matplotlib Figure on its own Agg canvas: drawn and saved without pyplot, so the process's
    backend (a notebook's inline one) is neither used nor switched, and no figure is left open."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Any, out: Path | str, dpi: int = 100, **kwargs: Any) -> Path:
    """Write ``fig`` to ``out`` as a PNG atomically (its folder made if missing)."""
    from text_recognizer.fileio import atomic_path

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, **kwargs)
    return out
