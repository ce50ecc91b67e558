"""training/evaluate.py: metrics, time per item, worst examples; one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

from predict_fixtures import mnist_run  # noqa: F401

from text_recognizer.evaluate import evaluate_main


def test_evaluate_report(tmp_path: Path, mnist_run: Path, capsys) -> None:  # noqa: F811
    out = tmp_path / "report.json"
    assert evaluate_main([str(mnist_run), "--limit", "100", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ms per item" in printed and "accuracy" in printed and "worst examples" in printed
    report = json.loads(out.read_text())
    assert report["items"] == 100 and len(report["predictions"]) == 100
    assert 0 <= report["metrics"]["accuracy"] <= 1
    assert all(w["prediction"] != w["target"] for w in report["worst"])


def test_evaluate_bad_input(tmp_path: Path, capsys) -> None:
    assert evaluate_main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert evaluate_main([str(tmp_path), "--dataset-args", "{bad"]) == 2
