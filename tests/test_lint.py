"""The pinned ruff passes on the whole tree, so lint and format drift fail CI, not review."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from conftest import PROJECT_ROOT


def pinned_ruff() -> str:
    """The ruff version setup.py's test extra pins: the one whose answer counts."""
    return re.search(r'"ruff==([\d.]+)"', (PROJECT_ROOT / "setup.py").read_text()).group(1)


def test_the_ruff_on_the_path_is_the_pinned_one() -> None:
    """Another ruff may format differently (newer ones format Python blocks in README.md):
    tasks/lint.sh and this test both use the pinned one, so every fresh install agrees."""
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]' installs the pinned one)")
    version = subprocess.run([ruff, "--version"], capture_output=True, text=True).stdout
    assert version.split()[-1] == pinned_ruff(), f"{ruff}: {version.strip()}"


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]])
def test_ruff_is_clean(command: list[str]) -> None:
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]' installs the pinned one)")
    result = subprocess.run(
        [ruff, *command], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_lint_task_refuses_another_ruff(tmp_path) -> None:
    """tasks/lint.sh with a ruff of another version on the PATH: one line naming both, exit 2."""
    fake = tmp_path / "ruff"
    fake.write_text("#!/bin/sh\necho 'ruff 0.0.1'\n")
    fake.chmod(0o755)
    result = subprocess.run(
        ["bash", "tasks/lint.sh"],
        cwd=PROJECT_ROOT,
        env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert f"ruff 0.0.1 is not the pinned {pinned_ruff()}" in result.stderr
