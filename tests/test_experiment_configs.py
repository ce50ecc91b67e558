"""Every shipped experiment file is a valid config, and its network fits its line images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT
from text_recognizer.config import validate_config

FILES = sorted((PROJECT_ROOT / "training" / "experiments").glob("*.json"))


def experiments(path: Path) -> list[dict]:
    data = json.loads(path.read_text())
    if "experiments" in data:  # prepare_experiments' format: a group and a list
        return [{"experiment_group": data["experiment_group"], **e} for e in data["experiments"]]
    return [data]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_experiment_file_is_valid(path: Path, shared_data: Path) -> None:
    from text_recognizer.datasets import DATASETS
    from text_recognizer.networks import build_network

    for config in experiments(path):
        resolved = validate_config(config)
        args = resolved["dataset_args"]
        if DATASETS[resolved["dataset"]].kind == "lines" and "image_width" in args:
            # the network accepts the dataset's line shape (time steps >= what labels need)
            shape = (args["image_height"], args["image_width"])
            build_network(
                resolved["network"], shape, (args["max_length"], 80), **resolved["network_args"]
            )
