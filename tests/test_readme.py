"""The README's quick start stays true: two commands, CI runs the second, the config is valid."""

from __future__ import annotations

import re

from conftest import PROJECT_ROOT
from text_recognizer.config import load_config


def quick_start_commands() -> list[str]:
    text = (PROJECT_ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_readme_starts_with_exactly_two_commands_and_ci_runs_the_second():
    commands = quick_start_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands), commands
    main_job, tests = commands
    assert "constraints.txt" in main_job and "constraints.txt" in tests
    ci = (PROJECT_ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci, "the README's test command must appear verbatim in .ci/run"


def test_quick_start_config_is_valid_and_needs_no_download():
    main_job = quick_start_commands()[0]
    path = re.search(r"(training/experiments/\S+\.json)", main_job).group(1)
    config = load_config(str(PROJECT_ROOT / path))
    assert config["dataset"].startswith("Synthetic")
