"""bench/bench_peers.py: one clear line and exit 2 without Lightning (a bench-only extra); with it,
a tiny run prints the table and the ratio lines tasks/bench.sh collects."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from conftest import run_script

BENCH = "bench/bench_peers.py"


def test_without_lightning_it_says_how_to_install_and_exits_2(tmp_path: Path) -> None:
    hidden = tmp_path / "hide" / "lightning"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    out = run_script(BENCH, "--quick", env={"PYTHONPATH": str(hidden.parent)}, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: PyTorch Lightning is not installed")
    assert "pip install -c constraints.txt -e '.[bench]'" in lines[0]


@pytest.mark.skipif(
    importlib.util.find_spec("lightning") is None,
    reason="PyTorch Lightning is not installed (bench-only extra: pip install -c constraints.txt "
    "-e '.[bench]')",
)
def test_a_tiny_run_prints_the_table_and_ratio_lines(tmp_path: Path) -> None:
    # The results file goes to tmp_path, not bench/results/ (a real run's figures stay there).
    code = (
        "import pathlib, sys; sys.path.insert(0, 'bench'); import _common; "
        "_common.RESULTS_DIR = pathlib.Path(sys.argv[1]); import bench_peers; "
        "sys.exit(bench_peers.main(sys.argv[2:]))"
    )
    args = ["--quick", "--cases", "mlp", "--epochs", "2", "--reps", "1"]
    out = run_script("-c", code, str(tmp_path), *args, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"^mlp +mlp +\w+Dataset +256 ", out.stdout, re.M), out.stdout
    ratio = re.search(
        r"^ratio peer_throughput\[mlp\] platform/lightning = (\d+\.\d\d) \(target >= 1\)",
        out.stdout,
        re.M,
    )
    assert ratio and float(ratio.group(1)) > 0, out.stdout
    result = json.loads((tmp_path / "bench_peers.json").read_text())["results"]["mlp"]
    (run,) = result["runs"]
    assert len(run["platform_epoch_s"]) == len(run["lightning_epoch_s"]) == 2
    assert result["threads_seen"] == [1]
