"""training/evaluate.py: metrics, time per item, worst examples; one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from predict_fixtures import mnist_run  # noqa: F401

from text_recognizer.evaluate import evaluate_main


def test_evaluate_report(tmp_path: Path, mnist_run: Path, capsys) -> None:  # noqa: F811
    out = tmp_path / "report.json"
    assert evaluate_main([str(mnist_run), "--limit", "100", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "ms per item" in printed and "accuracy" in printed and "worst examples" in printed
    assert captured.err.strip().splitlines()[-1] == f"wrote {out}"  # where the report went
    report = json.loads(out.read_text())
    assert report["items"] == 100 and len(report["predictions"]) == 100
    assert 0 <= report["metrics"]["accuracy"] <= 1
    assert all(w["prediction"] != w["target"] for w in report["worst"])


def test_evaluate_bad_input(tmp_path: Path, capsys) -> None:
    assert evaluate_main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert evaluate_main([str(tmp_path), "--dataset-args", "{bad"]) == 2


DIGITS = '{"charset": "digits", "num_train": 200, "num_test": 60}'


@pytest.mark.parametrize(
    "how",
    [
        ["--dataset", "SyntheticCharactersDataset", "--dataset-args", DIGITS],
        ["--dataset-args", DIGITS.replace("{", '{"dataset": "SyntheticCharactersDataset", ')],
    ],
)
def test_evaluate_on_another_dataset(
    tmp_path: Path,
    mnist_run: Path,  # noqa: F811
    capsys,
    how: list[str],
) -> None:
    # An MNIST model read over synthetic digits: the same kind and characters, the model's size.
    out = tmp_path / "synthetic.json"
    assert evaluate_main([str(mnist_run), *how, "--json", str(out)]) == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["dataset"] == "SyntheticCharactersDataset" and report["items"] == 60
    assert (
        report["dataset_args"]["image_size"] == 28 and "test_set_only" not in report["dataset_args"]
    )
    assert "SyntheticCharactersDataset test: 60 items" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "SyntheticLinesDataset"], "holds lines, but the model reads characters"),
        (
            [
                "--dataset",
                "SyntheticCharactersDataset",
                "--dataset-args",
                '{"charset": "digits_upper", "num_train": 100, "num_test": 20}',
            ],
            "SyntheticCharactersDataset holds characters the model cannot read ('ABCDEFGHIJKLMNOPQRST')",
        ),
        (["--dataset", "NoSuchDataset"], "unknown dataset 'NoSuchDataset'"),
        (
            ["--dataset", "MnistDataset", "--dataset-args", '{"dataset": "EmnistDataset"}'],
            "--dataset MnistDataset and --dataset-args \"dataset\": 'EmnistDataset' differ",
        ),
    ],
)
def test_evaluate_refuses_a_dataset_the_model_cannot_read(
    mnist_run: Path,  # noqa: F811
    capsys,
    argv: list[str],
    message: str,
) -> None:
    assert evaluate_main([str(mnist_run), *argv]) == 2
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err


def test_labels_of_a_dataset_with_another_order_are_read_in_the_models(
    mnist_run: Path,  # noqa: F811
    monkeypatch,
) -> None:
    # The same digits with the mapping reversed (and the labels with it): the same accuracy.
    from text_recognizer.datasets.mnist import MnistDataset
    from text_recognizer.evaluate import evaluate_run

    plain = evaluate_run(mnist_run, limit=300)["metrics"]["accuracy"]
    load = MnistDataset.load_or_generate_data

    def reversed_mapping(self):
        load(self)
        self.mapping = self.mapping[::-1]
        self.y_test = len(self.mapping) - 1 - self.y_test
        return self

    monkeypatch.setattr(MnistDataset, "load_or_generate_data", reversed_mapping)
    report = evaluate_run(mnist_run, limit=300)
    assert report["metrics"]["accuracy"] == plain
    assert {r["target"] for r in report["predictions"]} <= set("0123456789")
