"""Progress reporting: live bars on a terminal, one plain line per step when logging to a file."""

from __future__ import annotations

import sys
from typing import Any


def interactive() -> bool:
    """True when stderr is a terminal (bars redraw in place); False under parallel, CI or a log."""
    return sys.stderr.isatty()


def bar(total: int | None, desc: str, unit: str = "it", **kwargs: Any):
    """A tqdm bar on a terminal; disabled (silent) otherwise so logs hold one line per step."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=not interactive(),
        leave=False,
        dynamic_ncols=True,
        **kwargs,
    )


def line(message: str) -> None:
    """A plain progress line that appears whether or not a bar is shown."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)
