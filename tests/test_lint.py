"""The pinned ruff passes on the whole tree, so lint and format drift fail CI, not review."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import PROJECT_ROOT


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]])
def test_ruff_is_clean(command: list[str]) -> None:
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]' installs the pinned one)")
    result = subprocess.run(
        [ruff, *command], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
