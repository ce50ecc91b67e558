"""FSDL's dataset, model and network names: accepted where they mean one of ours, answered with
the closest entry where they do not, and an unknown name answered with a suggestion."""

from __future__ import annotations

import pytest

from text_recognizer.config import validate_config
from text_recognizer.datasets import DATASET_ALIASES, DATASETS
from text_recognizer.errors import ConfigError
from text_recognizer.models import MODEL_ALIASES, MODELS
from text_recognizer.networks import NETWORK_ALIASES, NETWORKS

REGISTRIES = [
    (DATASETS, DATASET_ALIASES),
    (MODELS, MODEL_ALIASES),
    (NETWORKS, NETWORK_ALIASES),
]


@pytest.mark.parametrize("registry,aliases", REGISTRIES)
def test_every_alias_names_a_registered_entry(registry, aliases) -> None:
    for alias, ours in aliases.same.items():
        assert ours in registry and alias not in registry, alias
    for alias, (ours, why) in aliases.nearest.items():
        assert ours in registry and alias not in registry and why, alias


def fsdl_2019_line_config(network: str) -> dict:
    """FSDL 2019's lab config for the all-convolutional line model, as written there."""
    return {
        "dataset": "EmnistLinesDataset",
        "model": "LineModel",
        "network": network,
        "network_args": {"window_width": 14, "window_stride": 7},
        "train_args": {"batch_size": 256, "epochs": 8},
    }


def test_fsdl_network_name_runs_as_ours_and_is_recorded_as_ours(capsys) -> None:
    resolved = validate_config(fsdl_2019_line_config("line_cnn_all_conv"))
    assert resolved["network"] == "line_cnn"
    assert resolved["network_args"]["window_width"] == 14
    assert "FSDL's name for 'line_cnn'" in capsys.readouterr().err
    ctc = validate_config(
        {"dataset": "EMNISTLines", "model": "CTCLitModel", "network": "LineCNNLSTM"}
    )
    assert (ctc["dataset"], ctc["model"], ctc["network"]) == (
        "EmnistLinesDataset",
        "LineModelCtc",
        "line_lstm_ctc",
    )


def test_fsdl_name_without_an_equivalent_names_the_closest() -> None:
    with pytest.raises(
        ConfigError, match=r"'ResnetTransformer' is FSDL's .* closest is 'htr_crnn'"
    ):
        validate_config(fsdl_2019_line_config("ResnetTransformer"))


@pytest.mark.parametrize(
    "network,suggestion",
    [("line_lstm", "line_lstm_ctc"), ("HTR_CRNN", "htr_crnn"), ("lenett", "lenet")],
)
def test_unknown_name_suggests_the_closest(network: str, suggestion: str) -> None:
    with pytest.raises(ConfigError) as error:
        validate_config(fsdl_2019_line_config(network))
    message = str(error.value)
    assert f"did you mean {suggestion!r}?" in message and "valid networks:" in message
    assert "\n" not in message


def test_nonsense_gets_no_suggestion() -> None:
    with pytest.raises(ConfigError) as error:
        validate_config(fsdl_2019_line_config("qqqqqqqq"))
    assert "did you mean" not in str(error.value)


def test_each_alias_note_is_printed_once_per_process(capsys) -> None:
    """A sweep validates thousands of trial configs: the note comes once, not once a config."""
    for _ in range(3):
        validate_config(fsdl_2019_line_config("line_cnn_sliding_window"))
    assert capsys.readouterr().err.count("'line_cnn_sliding_window' is FSDL's name") <= 1


def test_evaluate_takes_fsdl_dataset_names(tmp_path, capsys) -> None:
    """evaluate --dataset reads the same names a config does (checked before the model loads)."""
    from text_recognizer.evaluate import evaluate_main

    assert evaluate_main([str(tmp_path), "--dataset", "EmnistDatset"]) == 2
    assert "did you mean 'EmnistDataset'" in capsys.readouterr().err
    assert evaluate_main([str(tmp_path), "--dataset", "EMNISTLines"]) == 2  # no weights there
    err = capsys.readouterr().err
    assert "unknown dataset" not in err and str(tmp_path) in err
