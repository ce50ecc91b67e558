"""Every command is a console script (setup.py) whose target exists and answers ``--help``.

kraken's way: commands are entry points, so ``pip install`` puts them on PATH; the
``training/*.py`` wrappers and ``python -m`` keep working for users who know those.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = re.findall(r'"([a-z-]+)=([\w.]+):(\w+)"', (ROOT / "setup.py").read_text())


def test_every_command_has_a_console_script():
    names = {name for name, _, _ in SCRIPTS}
    assert {
        "run-experiment",
        "prepare-experiments",
        "run-sweep",
        "local-sweep",
        "compare-runs",
        "evaluate-run",
        "predict-text",
        "page-ocr",
        "paragraph-ocr",
        "gpu-manager",
    } <= names
    for wrapper in (ROOT / "training").glob("*.py"):  # each wrapper calls a console script's target
        called = re.search(r"^from ([\w.]+) import (\w+)$", wrapper.read_text(), re.M)
        assert called and (called.group(1), called.group(2)) in {(m, f) for _, m, f in SCRIPTS}


@pytest.mark.parametrize("name,module,function", SCRIPTS, ids=[s[0] for s in SCRIPTS])
def test_console_script_answers_help(name, module, function, capsys):
    main = getattr(importlib.import_module(module), function)
    try:
        code = main(["--help"])
    except SystemExit as done:  # argparse exits; run_sweep returns
        code = done.code
    assert code == 0
    assert "usage:" in capsys.readouterr().out
