"""Config validation: every kind of bad config fails with one clear line, before heavy imports."""

from __future__ import annotations

import json
import time

import pytest

from conftest import run_script
from text_recognizer.config import TRAIN_ARGS, load_config, parse_config_text, validate_config
from text_recognizer.errors import ConfigError

GOOD = {
    "dataset": "SyntheticCharactersDataset",
    "model": "CharacterModel",
    "network": "mlp",
}


def with_(**overrides):
    return {**GOOD, **overrides}


def test_defaults_are_filled_in():
    cfg = validate_config(dict(GOOD))
    assert cfg["train_args"] == {k: p.default for k, p in TRAIN_ARGS.items()}
    assert cfg["network_args"] == {"num_layers": 3, "layer_size": 128, "dropout_amount": 0.2}
    assert cfg["dataset_args"]["validation_fraction"] == 0.1
    assert cfg["experiment_group"] == "default"


def test_int_widens_to_float():
    cfg = validate_config(with_(train_args={"learning_rate": 1}))
    assert cfg["train_args"]["learning_rate"] == 1.0


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        (with_(dataset="Nope"), "unknown dataset 'Nope'; valid datasets: EmnistDataset"),
        (with_(model="Nope"), "unknown model 'Nope'; valid models: CharacterModel"),
        (
            with_(network="Nope"),
            "valid networks: crnn, htr_crnn, lenet, line_cnn, line_lstm_ctc, mlp",
        ),
        (with_(colour="red"), "unknown key 'colour' in the config"),
        (with_(network_args={"layer_siz": 3}), "did you mean 'layer_size'?"),
        (with_(dataset_args={"foo": 1}), "unknown key 'foo' in dataset_args"),
        (with_(train_args={"epoch": 1}), "did you mean 'epochs'?"),
        (with_(train_args={"batch_size": 0}), "train_args.batch_size must be an integer >= 1"),
        (with_(train_args={"batch_size": -5}), "got -5"),
        (with_(train_args={"batch_size": 1.5}), "must be an integer"),
        (with_(train_args={"epochs": True}), "must be an integer"),
        (with_(train_args={"learning_rate": 0}), "learning_rate must be a number > 0.0"),
        (with_(train_args={"learning_rate": "fast"}), "must be a number"),
        (with_(train_args={"optimizer": "lbfgs"}), "one of 'adam', 'adamw', 'sgd'"),
        (with_(network_args={"layer_size": 0}), "layer_size must be an integer >= 1"),
        (
            with_(network_args={"dropout_amount": 1.0}),
            "dropout_amount must be a number >= 0.0 and < 1.0",
        ),
        (with_(network="resnet", network_args={"layers": []}), "at least 1 items"),
        (
            with_(network="resnet", network_args={"layers": [2, 0]}),
            "layers[1] must be an integer >= 1",
        ),
        (
            with_(dataset_args={"subsample_fraction": 0}),
            "subsample_fraction must be a number > 0.0",
        ),
        (with_(dataset_args={"data_dir": "/no/such/folder"}), "is not a folder"),
        (with_(train_args={"epochs": 2, "warmup_epochs": 2}), "warmup_epochs (2) must be less"),
        (with_(experiment_group="../escape"), "experiment_group '../escape' must be"),
        ({"model": "CharacterModel", "network": "mlp"}, "missing 'dataset'"),
        (with_(train_args=[1]), "train_args must be a JSON object"),
    ],
)
def test_bad_configs(config, fragment):
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    message = str(err.value)
    assert fragment in message
    assert "\n" not in message


def test_malformed_json_reports_position():
    with pytest.raises(ConfigError, match=r"malformed JSON in config: .* line 1 column 13"):
        parse_config_text('{"dataset": }')


def test_config_from_file(tmp_path):
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(GOOD))
    assert load_config(str(path))["network"] == "mlp"
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.json"))


def test_cli_help_and_config_errors_are_instant_and_one_line():
    start = time.perf_counter()
    out = run_script("training/run_experiment.py", "--help")
    help_time = time.perf_counter() - start
    assert out.returncode == 0 and "--nowandb" in out.stdout
    start = time.perf_counter()
    bad = run_script("training/run_experiment.py", json.dumps(with_(network="nope")))
    error_time = time.perf_counter() - start
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0, bad.stderr
    assert bad.stderr.startswith("error: unknown network 'nope'")
    assert "Traceback" not in bad.stderr
    # Generous bounds for a loaded CI box; the real figures are ~0.1 s (see bench/README.md).
    assert help_time < 3 and error_time < 3


def test_cli_never_imports_torch_for_config_errors():
    code = (
        "import sys; from text_recognizer.run.cli import run_experiment_main as m;"
        "rc = m(['{\"dataset\": 1}']); print('torch' in sys.modules, rc)"
    )
    out = run_script("-c", code)
    assert out.stdout.split() == ["False", "2"], out.stdout + out.stderr
