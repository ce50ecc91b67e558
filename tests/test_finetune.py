"""Fine-tuning from a run (``init_from``): trained rows follow the characters, mismatches are one line.

kraken's ``--resize``: a character both sets hold keeps its trained output row, a new character
starts fresh, a character the new set lacks is dropped; everything else must fit exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from test_line_models import DATA_CONFIG, TINY_LSTM, toy_lines

from conftest import PROJECT_ROOT
from text_recognizer.config import TrainArgs, validate_config
from text_recognizer.datasets.text import make_mapping
from text_recognizer.errors import ConfigError, DataError
from text_recognizer.models.character_model import CharacterModel
from text_recognizer.models.finetune import init_from, output_keys
from text_recognizer.models.line_model_ctc import LineModelCtc


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple:
    """A CTC line model trained briefly on the characters a, b, c, saved as a run's weights."""
    torch.manual_seed(0)
    model = LineModelCtc(DATA_CONFIG, "line_lstm_ctc", TINY_LSTM)
    model.fit(toy_lines(), TrainArgs.from_config({"batch_size": 32, "epochs": 2}))
    run = tmp_path_factory.mktemp("source")
    model.save_weights(run / "weights.pt", {"dataset": "Toy"})
    return model, run


def line_model(chars: str) -> LineModelCtc:
    mapping = make_mapping(chars)
    config = {**DATA_CONFIG, "mapping": mapping, "output_shape": [4, len(mapping)]}
    torch.manual_seed(1)
    return LineModelCtc(config, "line_lstm_ctc", TINY_LSTM)


def test_same_characters_copy_every_tensor(source):
    trained, run = source
    model = line_model("abc")
    assert init_from(model, run / "weights.pt").as_dict() == {"kept": 5, "new": 0, "dropped": 0}
    for name, tensor in trained.network.state_dict().items():
        assert torch.equal(model.network.state_dict()[name], tensor), name


def test_other_characters_keep_the_shared_rows_and_start_new_ones_fresh(source):
    trained, run = source
    model = line_model("cadx")  # c and a shared (moved), d and x new, b dropped
    fresh = {k: v.clone() for k, v in model.network.state_dict().items()}
    resized = init_from(model, run / "weights.pt")
    assert resized.as_dict() == {"kept": 4, "new": 2, "dropped": 1}  # blank, padding, c, a
    old, new = trained.mapping, model.mapping
    keys = output_keys(model.network, len(new))
    assert keys and all(k.startswith("head.") for k in keys)
    after, before = model.network.state_dict(), trained.network.state_dict()
    for key in keys:
        for i, ch in enumerate(new):
            want = before[key][old.index(ch)] if ch in old else fresh[key][i]
            assert torch.equal(after[key][i], want), (key, ch)
    for name in set(after) - set(keys):  # every other layer is the trained one
        assert torch.equal(after[name], before[name]), name


def test_what_does_not_fit_is_one_line(source, tmp_path):
    _, run = source
    other = {**TINY_LSTM, "lstm_hidden": 16}
    model = LineModelCtc(DATA_CONFIG, "line_lstm_ctc", other)
    with pytest.raises(DataError, match="use the network_args it was trained with") as e:
        init_from(model, run / "weights.pt")
    assert "\n" not in str(e.value)
    chars = {
        "dataset": "Toy",
        "kind": "characters",
        "input_shape": [8, 32],
        "output_shape": [5],
        "mapping": list("abcde"),
    }
    with pytest.raises(DataError, match=r"holds a LineModelCtc \(lines\); this run trains a Char"):
        init_from(CharacterModel(chars, "mlp", {}), run / "weights.pt")


def test_init_from_is_resolved_and_checked_before_torch(source, tmp_path):
    _, run = source
    base = {"dataset": "EmnistLinesDataset", "model": "LineModelCtc", "network": "line_lstm_ctc"}
    resolved = validate_config({**base, "init_from": str(run)})
    assert resolved["init_from"] == str((run / "weights.pt").resolve())
    with pytest.raises(ConfigError, match="neither a run folder nor a weights file"):
        validate_config({**base, "init_from": str(tmp_path / "nothing")})
    with pytest.raises(ConfigError, match=r"a run folder without weights\.pt"):
        validate_config({**base, "init_from": str(tmp_path)})


def test_a_run_records_its_source_and_a_bad_source_exits_2(tmp_path):
    """Through the command: a run started from another's weights says so in config.json and
    summary.json; a run folder without weights, or weights of another network: one line, exit 2,
    no run folder."""
    env = {
        **os.environ,
        "TEXT_RECOGNIZER_RUNS_DIR": str(tmp_path / "runs"),
        "WANDB_MODE": "disabled",
    }

    def run(config: dict, *flags: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "training/run_experiment.py", json.dumps(config), "--nowandb"]
        return subprocess.run(
            [*command, *flags], cwd=PROJECT_ROOT, capture_output=True, text=True, env=env
        )

    def folder(group: str):
        return next((tmp_path / "runs" / group).iterdir())

    base = {
        "dataset": "SyntheticCharactersDataset",
        "dataset_args": {"num_train": 300, "num_test": 60},
        "model": "CharacterModel",
        "network": "mlp",
        "network_args": {"num_layers": 1, "layer_size": 16},
        "train_args": {"epochs": 1, "num_threads": 1},
    }
    unsaved = run({**base, "experiment_group": "unsaved"}, "--no-save")
    assert unsaved.returncode == 0, unsaved.stderr
    refused = run({**base, "experiment_group": "refused", "init_from": str(folder("unsaved"))})
    assert refused.returncode == 2 and "without weights.pt" in refused.stderr
    saved = run({**base, "experiment_group": "saved"}, "--save")
    assert saved.returncode == 0, saved.stderr
    weights = folder("saved") / "weights.pt"
    tuned = run({**base, "experiment_group": "tuned", "init_from": str(weights.parent)})
    assert tuned.returncode == 0, tuned.stderr
    assert json.loads((folder("tuned") / "config.json").read_text())["init_from"] == str(weights)
    summary = json.loads((folder("tuned") / "summary.json").read_text())
    assert summary["init_from"] == str(weights)
    assert summary["init_classes"] == {
        "kept": len(weights_mapping(weights)),
        "new": 0,
        "dropped": 0,
    }
    other = {**base, "experiment_group": "wrong", "network": "lenet", "network_args": {}}
    wrong = run({**other, "init_from": str(weights)})
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines()[-1].startswith("error: init_from ")
    assert not (tmp_path / "runs" / "wrong").exists()  # refused before the run folder
    assert not (tmp_path / "runs" / "refused").exists()


def weights_mapping(path) -> list:
    from text_recognizer.models.weights_file import read_weights

    return read_weights(path)["data_config"]["mapping"]
