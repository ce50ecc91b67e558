"""Hyperband early termination, as W&B's sweeps apply it: which running trials to stop now.

W&B's rule (Li et al., "Hyperband"), kept exactly so a local sweep stops the trials a W&B server
would: the YAML's ``early_terminate`` gives bands, the epochs at which trials are compared (with
``min_iter``: min_iter, min_iter*eta, min_iter*eta^2, ...; with ``max_iter`` and ``s``: max_iter/eta,
max_iter/eta^2, ... down to 1, s of them at most; each rounded down). At each band the threshold is
the value that the best 1/eta of all trials that reached it beat (sorted values, index
int(n / eta)); a running trial whose metric at the last band it reached (``strict``, the default;
otherwise its best so far) is worse than that band's threshold is stopped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from text_recognizer.errors import SweepError

MIN_ITER_BANDS = 100  # W&B lists this many bands from min_iter
MAX_BAND = 1 << 53  # bands beyond any trial's epochs are left out (an eta of 1e300 overflows)


class HasHistory(Protocol):
    """What hyperband reads of a trial: its name, state and per-epoch metric values."""

    name: str
    state: str
    history: list[float]


@dataclass(frozen=True)
class Stop:
    """A running trial to stop, with the band it lost at (for the progress line)."""

    name: str
    band: int
    value: float
    threshold: float
    metric: str

    @property
    def why(self) -> str:
        return (
            f"(band {self.band}: {self.metric} {self.value:.6g} is behind the threshold "
            f"{self.threshold:.6g})"
        )


def bands(early_terminate: Mapping[str, Any]) -> list[int]:
    """The epochs at which trials are compared, ascending; SweepError when there are none."""
    eta = early_terminate.get("eta", 3)
    out: list[int] = []
    if "max_iter" in early_terminate:
        band = float(early_terminate["max_iter"])
        for _ in range(int(early_terminate["s"])):
            band /= eta
            if band < 1:
                break
            out.append(int(band))
        out.sort()
        if not out:
            raise SweepError(
                f"early_terminate: max_iter {early_terminate['max_iter']} / eta {eta} is below 1, "
                "so hyperband has no band; raise max_iter or s, or lower eta"
            )
    elif "min_iter" in early_terminate:
        band = early_terminate["min_iter"]
        for _ in range(MIN_ITER_BANDS):
            if band > MAX_BAND:
                break
            out.append(int(band))
            band *= eta
    else:
        raise SweepError("early_terminate needs min_iter, or max_iter and s")
    return out


def to_stop(
    early_terminate: Mapping[str, Any], metric: str, maximize: bool, runs: Sequence[HasHistory]
) -> list[Stop]:
    """The running trials hyperband stops now. Every trial's history sets the thresholds."""
    steps = bands(early_terminate)
    r = 1.0 / early_terminate.get("eta", 3)
    sign = -1.0 if maximize else 1.0  # compared as losses: lower is better
    histories = {id(run): [sign * v for v in run.history] for run in runs}
    thresholds = []
    for band in steps:
        values = sorted(h[band - 1] for h in histories.values() if len(h) >= band)
        thresholds.append(values[int(r * len(values))] if values else float("inf"))
    strict = early_terminate.get("strict", True) is True
    stops = []
    for run in runs:
        history = histories[id(run)]
        if run.state != "running":
            continue
        reached = [(b, t) for b, t in zip(steps, thresholds, strict=True) if b <= len(history)]
        if not reached:
            continue
        band, threshold = reached[-1]
        value = history[band - 1] if strict else min(history)
        if value > threshold:
            stops.append(Stop(run.name, band, sign * value, sign * threshold, metric))
    return stops
