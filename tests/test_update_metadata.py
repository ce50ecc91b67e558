"""update_metadata: a placed raw file's size and sha256 written into its metadata.toml, with the
file's comments and layout kept, checked as the datasets read it; bad requests are one line."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT
from text_recognizer.datasets.download import sha256_file
from text_recognizer.datasets.metadata import load_metadata
from text_recognizer.datasets.update_metadata import update_metadata_main

TRACKED = PROJECT_ROOT / "data" / "raw"


def comments(text: str) -> list[str]:
    return [line[line.index("#") :] for line in text.splitlines() if "#" in line]


def copy_metadata(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    return Path(shutil.copy(TRACKED / name / "metadata.toml", folder / "metadata.toml"))


def test_multi_file_metadata_gets_sizes_and_hashes_and_keeps_its_comments(tmp_path, capsys):
    metadata = copy_metadata(tmp_path, "iam")
    before = metadata.read_text()
    placed = {"train.uttlist": b"a01-000u\na01-003u\n", "iamdb.zip": b"PK\x05\x06" + bytes(18)}
    for name, data in placed.items():
        (metadata.parent / name).write_bytes(data)
    assert update_metadata_main([str(metadata)]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "validation.uttlist: not placed" in out and f"updated {metadata}" in out
    assert "iamdb.zip: size (none) -> 22" in out and "max_size dropped" in out
    after = metadata.read_text()
    # Every comment, inline ones too, in order, but max_size's: the key goes (an exact size is
    # the limit now), its inline comment with it, and the warning says so.
    dropped = [c for c in comments(before) if "download stops at 2 GiB" in c]
    assert len(dropped) == 1 and "max_size = 2147483648" not in after  # iamdb.zip's
    assert comments(after) == [c for c in comments(before) if c not in dropped]
    assert f"warning: 1 comment(s) of {metadata} went with their keys" in captured.err
    files = {f.filename: f for f in load_metadata(metadata)}
    for name, data in placed.items():
        assert files[name].size == len(data)
        assert files[name].sha256 == hashlib.sha256(data).hexdigest()
        assert sha256_file(metadata.parent / name) == files[name].sha256  # what a download checks
    original = {f.filename: f for f in load_metadata(TRACKED / "iam" / "metadata.toml")}
    assert files["test.uttlist"] == original["test.uttlist"]  # not placed: as it was
    assert files["iamdb.zip"].url == original["iamdb.zip"].url

    assert update_metadata_main([str(metadata)]) == 0  # a second run changes nothing
    assert "already holds these sizes and hashes" in capsys.readouterr().out
    assert metadata.read_text() == after


def test_single_file_metadata_by_dataset_name_and_dry_run(tmp_path, monkeypatch, capsys):
    from text_recognizer import paths

    raw = tmp_path / "raw"
    raw.mkdir()
    metadata = copy_metadata(raw, "emnist")
    monkeypatch.setattr(paths, "RAW_DIR", raw)  # data/raw/emnist holds its own metadata.toml
    (raw / "emnist" / "matlab.zip").write_bytes(b"not really EMNIST")
    before = metadata.read_text()
    assert update_metadata_main(["emnist", "--dry-run"]) == 0
    assert "matlab.zip: size (none) -> 17" in capsys.readouterr().out
    assert metadata.read_text() == before
    assert update_metadata_main(["emnist", "matlab.zip"]) == 0
    (remote,) = load_metadata(metadata)
    assert remote.size == 17 and remote.sha256 == hashlib.sha256(b"not really EMNIST").hexdigest()
    assert comments(metadata.read_text()) == comments(before)


@pytest.mark.parametrize(
    "args,words",
    [
        (["no-such-set"], "no metadata.toml for 'no-such-set'; datasets with one: brown, emnist"),
        (["{m}", "nothing.zip"], "lists no file 'nothing.zip'; it lists matlab.zip"),
        (["{m}"], "none of matlab.zip is placed in"),
        (["{m}", "--from", "{tmp}/elsewhere"], "none of matlab.zip is placed in"),
    ],
)
def test_bad_requests_are_one_line(tmp_path, capsys, args, words):
    metadata = copy_metadata(tmp_path, "emnist")
    before = metadata.read_text()
    args = [a.format(m=metadata, tmp=tmp_path) for a in args]
    assert update_metadata_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and words in err, err
    assert metadata.read_text() == before


def test_a_broken_metadata_file_is_reported_as_the_datasets_report_it(tmp_path, capsys):
    metadata = copy_metadata(tmp_path, "emnist")
    metadata.write_text(metadata.read_text().replace("sha256 =", "sha265 ="))
    (metadata.parent / "matlab.zip").write_bytes(b"x")
    assert update_metadata_main([str(metadata)]) == 2
    assert "sha265" in capsys.readouterr().err
