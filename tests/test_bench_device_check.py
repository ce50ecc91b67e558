"""bench/device_check.py works without a GPU: ``--cpu --quick`` prints the table with the CUDA-only
rows skipped, the decision lines and the JSON; the mixed-precision and compile code paths run on a
CPU when forced (so a GPU session's few minutes are not spent finding a typo)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import run_script

# The results file goes to tmp_path, not bench/results/ (a real run's figures stay there).
CODE = (
    "import pathlib, sys; sys.path.insert(0, 'bench'); import _common; "
    "_common.RESULTS_DIR = pathlib.Path(sys.argv[1]); import device_check; "
    "sys.exit(device_check.main(sys.argv[2:]))"
)


def run(tmp_path: Path, *args: str) -> tuple[str, dict]:
    out = run_script("-c", CODE, str(tmp_path), *args, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout, json.loads((tmp_path / "device_check.json").read_text())


def test_cpu_quick_measures_fp32_and_says_why_cuda_rows_are_skipped(tmp_path: Path) -> None:
    stdout, result = run(tmp_path, "--cpu", "--quick")
    for network in ("htr_crnn", "crnn"):
        for mode in ("train", "infer"):
            row = re.search(rf"^{network} +{mode} fp32 contiguous +(\d+\.\d) ", stdout, re.M)
            assert row and float(row.group(1)) > 0, stdout
        skipped = re.findall(rf"^{network} +train (bf16|fp16) .*skipped: no CUDA", stdout, re.M)
        assert sorted(skipped) == ["bf16", "bf16", "fp16", "fp16"], stdout
        assert re.search(rf"^{network} +train fp32 \w+ compiled .*skipped: no CUDA", stdout, re.M)
        for question in ("precision", "channels_last", "augment", "compile CNN"):
            assert re.search(rf"^decision {network} {question}: ", stdout, re.M), stdout
    assert "auto trains in fp32" in stdout
    assert result["settings"] == {"height": 32, "width": 128, "batch": 4, "warmup": 1, "iters": 2}
    measured = [r for r in result["rows"] if r["samples_per_s"]]
    assert {(r["network"], r["mode"]) for r in measured} == {
        (n, m) for n in ("htr_crnn", "crnn") for m in ("train", "infer")
    } | {("lines", "augment")}
    assert re.search(r"^lines +augment ink, strength 1 +\d+\.\d ", stdout, re.M), stdout
    assert all(r["peak_mib"] is None and r["nonfinite_steps"] == 0 for r in measured)
    assert not any(r["note"].startswith("failed") for r in result["rows"])


def test_forced_mixed_precision_and_compile_rows_run_on_a_cpu(tmp_path: Path) -> None:
    args = ["--cpu", "--quick", "--networks", "crnn", "--height", "16", "--width", "64"]
    args += ["--batch", "2", "--iters", "1", "--amp-on-cpu", "--compile", "on"]
    stdout, result = run(tmp_path, *args, "--compile-backend", "aot_eager")
    rows = {(r["mode"], r["precision"], r["layout"], r["compiled"]): r for r in result["rows"]}
    for precision in ("fp32", "bf16", "fp16"):
        for layout in ("contiguous", "channels_last"):
            assert rows["train", precision, layout, False]["samples_per_s"] > 0, stdout
    assert re.search(r"^decision crnn augment: \d+\.\d% of a ", stdout, re.M), stdout
    compiled = [r for r in result["rows"] if r["compiled"]]
    assert [r["mode"] for r in compiled] == ["train", "infer"], stdout
    assert all(r["samples_per_s"] > 0 and r["compile_s"] >= 0 for r in compiled), stdout
    assert all(r["note"] == "compiled: cnn" for r in compiled)
    assert re.search(r"^decision crnn compile CNN: (pays|does not pay) \(x\d", stdout, re.M)
