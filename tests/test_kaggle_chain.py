"""tasks/train_kaggle_names.sh: pretraining on synthetic names, fine-tuning on real ones, end to end.

Tiny configs stand in for the two experiment files (PRETRAIN_CONFIG / FINETUNE_CONFIG), so the chain
runs in about a minute; the real figures come from the full chain (README, "Kaggle names").
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT

NETWORK_ARGS = {"layers": [1, 1, 1], "base_channels": 8, "lstm_hidden": 16, "lstm_layers": 1}


def tiny_configs(tmp_path: Path) -> dict[str, str]:
    """Both experiment files of the chain, shrunk: the same datasets, network and keys."""
    configs = {}
    for stage in ("pretrain", "finetune"):
        config = json.loads(
            (PROJECT_ROOT / "training" / "experiments" / f"kaggle_names_{stage}.json").read_text()
        )
        config["network_args"] = NETWORK_ARGS
        config["train_args"].update(epochs=1, batch_size=16, warmup_epochs=0)
        if stage == "pretrain":
            del config["dataset_args"]["fonts"]  # Pillow's font: no system fonts needed here
            config["dataset_args"].update(num_train=64, num_test=16)
        path = tmp_path / f"{stage}.json"
        path.write_text(json.dumps(config))
        configs[f"{stage.upper()}_CONFIG"] = str(path)
    return configs


def run_chain(
    tmp_path: Path, data_dir: Path, names_lm: str = "none"
) -> tuple[subprocess.CompletedProcess, Path]:
    env = {**os.environ, **tiny_configs(tmp_path), "DATA_DIR": str(data_dir), "NAMES_LM": names_lm}
    result = subprocess.run(
        ["bash", "tasks/train_kaggle_names.sh", "--nowandb"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result, Path(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_chain_pretrains_then_fine_tunes_the_shared_names(
    tmp_path: Path, shared_data: Path
) -> None:
    data_dir = shared_data / "kaggle_handwriting_names"
    names_lm = tmp_path / "lm" / "names6.arpa"  # absent: the chain builds it
    result, final = run_chain(tmp_path, data_dir, str(names_lm))
    config = json.loads((final / "config.json").read_text())
    summary = json.loads((final / "summary.json").read_text())
    assert config["dataset"] == "KaggleNamesDataset" and summary["status"] == "finished"
    assert config["dataset_args"]["split_from_available"] == 0.2
    assert Path(config["dataset_args"]["data_dir"]) == data_dir.resolve()
    pretrained = Path(config["init_from"])  # the pretraining run's best weights
    assert pretrained.name == "weights.pt" and pretrained.is_file()
    pretrained = pretrained.parent
    pretrain_config = json.loads((pretrained / "config.json").read_text())
    assert pretrain_config["dataset"] == "SyntheticLinesDataset"
    assert pretrain_config["dataset_args"]["charset"] == "names"
    assert summary["init_from"] == config["init_from"]
    assert (final / "weights.pt").is_file()  # the final model can be read by predict
    assert "1/3 pretraining" in result.stderr and "2/3 fine-tuning" in result.stderr
    # 3/3: the LM built from Faker's names, tuned on validation, the test split read with it
    assert names_lm.read_text().lstrip().startswith("\\data\\")
    tuned = json.loads((final / "lm_tune.json").read_text())
    assert tuned["split"] == "validation" and Path(tuned["lm"]) == names_lm
    tested = json.loads((final / "test_lm.json").read_text())
    assert tested["split"] == "test" and Path(tested["decoder"]["lm"]) == names_lm
    assert tested["decoder"]["lm_weight"] == tuned["best"]["lm_weight"]
    assert 0 <= tested["metrics"]["cer"] <= 1 and tested["items"] > 0


@pytest.mark.slow
def test_chain_uses_the_official_splits_of_a_kaggle_layout(
    tmp_path: Path, shared_data: Path
) -> None:
    """A folder laid out as Kaggle ships it (train/validation/test CSVs) keeps its splits."""
    shared = shared_data / "kaggle_handwriting_names"
    with (shared / "written_name_validation_v2.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["IDENTITY"] and r["IDENTITY"].isalpha()][:90]
    data_dir = tmp_path / "kaggle"
    for split, part in (("train", rows[:60]), ("validation", rows[60:75]), ("test", rows[75:])):
        folder = data_dir / f"{split}_v2"
        folder.mkdir(parents=True)
        with (data_dir / f"written_name_{split}_v2.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["FILENAME", "IDENTITY"])
            for i, row in enumerate(part):
                name = f"{split.upper()}_{i:04d}.jpg"
                shutil.copy(shared / "validation_v2" / row["FILENAME"], folder / name)
                writer.writerow([name, row["IDENTITY"]])
    _, final = run_chain(tmp_path, data_dir)
    config = json.loads((final / "config.json").read_text())
    summary = json.loads((final / "summary.json").read_text())
    assert "split_from_available" not in config["dataset_args"] or (
        config["dataset_args"]["split_from_available"] is None
    )
    assert summary["status"] == "finished"
    # tested on the official test CSV's 15 names only
    tested = {p["target"] for p in json.loads((final / "predictions.json").read_text())}
    assert tested and tested <= {r["IDENTITY"] for r in rows[75:]}


def test_chain_fails_fast_and_passes_on_the_exit_status(tmp_path: Path) -> None:
    """A missing DATA_DIR, or a pretraining that fails on bad input: exit 2, no fine-tuning."""
    configs = tiny_configs(tmp_path)
    base = {**os.environ, **configs}
    missing = subprocess.run(
        ["bash", str(PROJECT_ROOT / "tasks" / "train_kaggle_names.sh"), "--nowandb"],
        cwd=PROJECT_ROOT,
        env={**base, "DATA_DIR": str(tmp_path / "nowhere")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2 and "is not a folder" in missing.stderr
    assert "1/3 pretraining" not in missing.stderr
    bad = json.loads(Path(configs["PRETRAIN_CONFIG"]).read_text())
    bad["train_args"]["epochs"] = 0  # bad input: run_experiment exits 2 before any run
    Path(configs["PRETRAIN_CONFIG"]).write_text(json.dumps(bad))
    (tmp_path / "data").mkdir()
    failed = subprocess.run(
        ["bash", str(PROJECT_ROOT / "tasks" / "train_kaggle_names.sh"), "--nowandb"],
        cwd=tmp_path,  # DATA_DIR relative to the caller's folder
        env={**base, "DATA_DIR": "data"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert failed.returncode == 2, failed.stderr[-2000:]
    assert "train_args.epochs" in failed.stderr and "2/3 fine-tuning" not in failed.stderr
