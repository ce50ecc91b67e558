"""Hyperband early termination, as W&B's sweeps apply it: which running trials to stop now.

W&B's rule (Li et al., "Hyperband"), kept exactly so a local sweep stops the trials a W&B server
would: the YAML's ``early_terminate`` gives bands, the epochs at which trials are compared (with
``min_iter``: min_iter, min_iter*eta, min_iter*eta^2, ...; with ``max_iter`` and ``s``: max_iter/eta,
max_iter/eta^2, ... down to 1, s of them at most; each rounded down; max_iter, when given, wins over
min_iter, and without s it is refused, where W&B's own code fails). At each band the threshold is
the value that the best 1/eta of all trials that reached it beat (sorted values, index
int(n / eta)); a running trial whose metric at the last band it reached (``strict``, the default;
otherwise its best so far) is worse than that band's threshold is stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from text_recognizer.errors import SweepError
from text_recognizer.orchestration.sweep_space import is_number, is_whole, mapping_problems

MIN_ITER_BANDS = 100  # W&B lists this many bands from min_iter
MAX_BAND = 1 << 53  # bands beyond any trial's epochs are left out (an eta of 1e300 overflows)
MAX_BANDS = 1000  # from max_iter and s: more is a mistake (s huge, eta barely above 1)


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


def _kind(test: Callable[[Any], bool], what: str) -> Callable[[Any], str | None]:
    return lambda v: None if test(v) else f"{v!r} is not of type {what!r}"


def _at_least(
    name: str, check: Callable[[Any], str | None], low: float, strict: bool = False
) -> Callable[[Any], str | None]:
    def test(v: Any) -> str | None:
        if problem := check(v):
            return problem
        if v > low if strict else v >= low:
            return None
        return f"{name} {v} is {'not above' if strict else 'less than'} {low:g}"

    return test


_INTEGER = _kind(is_whole, "integer")
# W&B's hyperband_stopping schema: its keys, and what each takes
KEYS: dict[str, Callable[[Any], str | None]] = {
    "type": lambda v: None if v == "hyperband" else f"{v!r} is not one of ['hyperband']",
    "max_iter": _INTEGER,
    "min_iter": _at_least("min_iter", _INTEGER, 1),
    "s": _at_least("s", _INTEGER, 1),
    "eta": _at_least("eta", _kind(is_number, "number"), 1, strict=True),
    "strict": _kind(lambda v: isinstance(v, bool), "boolean"),
}


def problems(early_terminate: Any) -> list[str]:
    """Everything wrong with ``early_terminate`` (empty when hyperband can use it), one line each:
    what W&B's schema rejects, what its hyperband fails on, and a configuration with no band."""
    where = "early_terminate"
    found = mapping_problems(early_terminate, where, KEYS, required=("type",))
    if found:
        return found
    if "max_iter" in early_terminate and "s" not in early_terminate:
        # W&B's hyperband counts down from max_iter whenever it is set, min_iter or not, and
        # fails without s; its schema lets this through, so it is refused here
        return [
            f"{where}: max_iter needs s (W&B's hyperband uses max_iter and s whenever max_iter "
            "is set, and ignores min_iter then): add s, or drop max_iter to count bands up from "
            "min_iter"
        ]
    if "min_iter" not in early_terminate and "max_iter" not in early_terminate:
        return [f"{where} needs min_iter, or max_iter and s"]
    try:
        _bands(early_terminate)
    except SweepError as e:
        return [str(e)]
    return []


def bands(early_terminate: Any) -> list[int]:
    """The epochs at which trials are compared, ascending; a one-line SweepError for any
    ``early_terminate`` that is malformed or gives no band."""
    found = problems(early_terminate)
    if found:
        raise SweepError(found[0])
    return _bands(early_terminate)


def _float(early_terminate: Mapping[str, Any], key: str) -> float:
    """A number of ``early_terminate`` as a float (eta defaults to 3, as in W&B); one line when it
    is an integer too large for one."""
    value = early_terminate.get(key, 3)
    try:
        return float(value)
    except OverflowError:
        raise SweepError(
            f"early_terminate.{key}: a {len(str(value))}-digit integer is too large for hyperband"
        ) from None


def _bands(early_terminate: Mapping[str, Any]) -> list[int]:
    """W&B's bands of a well-formed ``early_terminate``: from max_iter and s when max_iter is set,
    else from min_iter."""
    eta = _float(early_terminate, "eta")
    out: list[int] = []
    if "max_iter" in early_terminate:
        band = _float(early_terminate, "max_iter")
        for _ in range(int(early_terminate["s"])):
            band /= eta
            if band < 1:
                break
            if len(out) == MAX_BANDS:  # an eta barely above 1 would list bands for hours
                raise SweepError(
                    f"early_terminate: max_iter {early_terminate['max_iter']}, s "
                    f"{early_terminate['s']} and eta {early_terminate.get('eta', 3)} give more "
                    f"than {MAX_BANDS} bands; lower s or raise eta"
                )
            out.append(int(band))
        out.sort()
        if not out:
            raise SweepError(
                f"early_terminate: max_iter {early_terminate['max_iter']} / eta "
                f"{early_terminate.get('eta', 3)} is below 1, so hyperband has no band; raise "
                "max_iter or s, or lower eta"
            )
    else:
        band = early_terminate["min_iter"]
        for _ in range(MIN_ITER_BANDS):
            if band > MAX_BAND:
                break
            out.append(int(band))
            band *= eta
    return out


def to_stop(
    early_terminate: Mapping[str, Any], metric: str, maximize: bool, runs: Sequence[HasHistory]
) -> list[Stop]:
    """The running trials hyperband stops now. Every trial's history sets the thresholds."""
    steps = bands(early_terminate)
    r = 1.0 / _float(early_terminate, "eta")
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
