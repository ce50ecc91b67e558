"""IamLinesDataset on Teklia's Hugging Face parquet copy (Teklia/IAM-line), built here in the same
schema from the shared IAM line images (file name = transcript): reading, splits, the same
preprocessing as the other IAM sources, the paragraph-benchmark lines known by their text, the
download (a fallback from iamdb.zip, or chosen) over a local HTTP server, and bad files.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from http_fixtures import HttpTestServer
from PIL import Image

from text_recognizer.datasets.iam_lines import IamLinesDataset, fit_line
from text_recognizer.datasets.text import decode
from text_recognizer.errors import ConfigError, DataError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

BENCHMARK_LINE = "A MOVE to stop Mr. Gaitskell from"  # a01-000u-00, a paragraph-benchmark form
ARGS = {"image_height": 32, "image_width": 1152, "max_length": 60}  # 952 x 28 -> 1088 x 32


def support_lines(shared: Path) -> dict[str, bytes]:
    """Transcript -> PNG bytes of the shared IAM line images, turned back into dark ink on light
    paper (they are FSDL's white-on-black crops; IAM's and Teklia's lines are dark on light)."""
    pngs = sorted((shared / "iam" / "lines_support").glob("*.png"))
    if len(pngs) < 3:
        pytest.skip(f"fewer than 3 IAM line images under {shared / 'iam' / 'lines_support'}")
    lines = {}
    for path in pngs:
        buf = io.BytesIO()
        Image.fromarray(255 - np.asarray(Image.open(path).convert("L"))).save(buf, format="PNG")
        lines[path.stem] = buf.getvalue()
    return lines


def write_parquet(path: Path, rows: list[tuple[bytes | None, str]], binary: bool = False) -> None:
    """One split file as Hugging Face writes it (image: struct of bytes and path), or with a
    plain binary image column; row groups of 2 rows, so reading crosses row groups."""
    images: list[object]
    if binary:
        images = [data for data, _ in rows]
        image_type = pa.binary()
    else:
        images = [None if data is None else {"bytes": data, "path": None} for data, _ in rows]
        image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "image": pa.array(images, type=image_type),
            "text": pa.array([text for _, text in rows], pa.string()),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=2)


def split_rows(lines: dict[str, bytes]) -> dict[str, list[tuple[bytes | None, str]]]:
    """Two real lines, the benchmark text, an undecodable image in train; one line in
    validation; one line and the benchmark text (kept: test is the benchmark's side) in test."""
    (a, pa_), (b, pb), (c, pc) = list(lines.items())[:3]
    return {
        "train": [
            (pa_, a),
            (pb, BENCHMARK_LINE.replace(" .", ".")),
            (b"not a png", "broken"),
            (None, "no image"),
            (pb, b),
        ],
        "validation": [(pc, c)],
        "test": [(pa_, a), (pb, BENCHMARK_LINE)],
    }


def write_split_files(folder: Path, lines: dict[str, bytes], binary: bool = False) -> None:
    for split, rows in split_rows(lines).items():
        write_parquet(folder / f"{split}.parquet", rows, binary)


def texts(ds: IamLinesDataset, y: np.ndarray) -> list[str]:
    return [decode(row, ds.mapping) for row in y]


@pytest.mark.parametrize("binary", [False, True])
def test_parquet_reads_like_the_other_sources(tmp_path, data_dirs, shared_data, binary) -> None:
    lines = support_lines(shared_data)
    names = list(lines)[:3]
    write_split_files(tmp_path / "hf" / "data", lines, binary)  # the data/ subfolder, as on HF
    ds = IamLinesDataset(data_dir=str(tmp_path / "hf"), **ARGS).load_or_generate_data()
    assert ds.layout() == "parquet"
    assert ds.x_train.shape == (2, 32, 1152) and ds.x_train.dtype == np.uint8
    assert texts(ds, ds.y_train) == [names[0], names[1]]
    assert texts(ds, ds.y_val) == [names[2]]  # Teklia's validation file is the validation
    assert texts(ds, ds.y_test) == [names[0], BENCHMARK_LINE]
    assert ds.skipped["undecodable_image"] == 2  # not a PNG; no image at all
    assert ds.skipped["paragraph_benchmark_text"] == 1  # matched with its spacing ignored
    assert ds.skipped_examples["undecodable_image"][0].startswith("train.parquet:2 ")
    # The same preprocessing as the official layout: fit_line on the decoded PNG.
    expected, _ = fit_line(Image.open(io.BytesIO(lines[names[0]])), 32, 1152)
    assert np.array_equal(ds.x_train[0], expected)
    assert ds.x_train[0].max() > 100 and ds.x_train[0][:, 1090:].max() == 0  # white ink, padded
    assert ds.config()["input_shape"] == [32, 1152] and "kept_but_squeezed" not in ds.skipped
    again = IamLinesDataset(data_dir=str(tmp_path / "hf"), **ARGS).load_or_generate_data()
    assert again.skipped == ds.skipped and np.array_equal(again.x_train, ds.x_train)


def test_layout_precedence_and_an_explicit_source(tmp_path, data_dirs, shared_data) -> None:
    lines = support_lines(shared_data)
    folder = tmp_path / "iam"
    write_split_files(folder, lines)
    (folder / "ascii").mkdir()
    # data_dir's own lines.txt names the benchmark lines (before the shared one)
    row = "a01-000u-00 ok 154 19 408 746 1661 89 " + BENCHMARK_LINE.replace(" ", "|")
    (folder / "ascii" / "lines.txt").write_text(row + "\n")
    (folder / "lines").mkdir()
    auto = IamLinesDataset(data_dir=str(folder), **ARGS)
    assert auto.present_layouts() == ["official", "parquet"] and auto.layout() == "official"
    chosen = IamLinesDataset(data_dir=str(folder), source="parquet", **ARGS)
    assert chosen.layout() == "parquet" and chosen.cache_path != auto.cache_path
    assert len(chosen.load_or_generate_data().x_train) == 2
    with pytest.raises(DataError, match=r"has no fsdl layout \(source='fsdl'\)"):
        IamLinesDataset(data_dir=str(folder), source="fsdl", **ARGS).load_or_generate_data()
    with pytest.raises(ConfigError, match="source 'hf'"):
        IamLinesDataset(source="hf")


def serve_metadata(server: HttpTestServer, raw: Path, files: dict[str, bytes | None]) -> None:
    """raw/iam/metadata.toml listing ``files`` on the server (None: served as a 404)."""
    tables = []
    for name, body in files.items():
        if body is None:
            url = server.add(f"/{name}", b"gone", status=404)
            digest = "0" * 64
        else:
            url, digest = server.add(f"/{name}", body), hashlib.sha256(body).hexdigest()
        tables.append(f'[[files]]\nurl = "{url}"\nfilename = "{name}"\nsha256 = "{digest}"\n')
    (raw / "iam").mkdir(parents=True, exist_ok=True)
    (raw / "iam" / "metadata.toml").write_text("\n".join(tables))


def test_parquet_is_downloaded_when_iamdb_zip_cannot_be(tmp_path, data_dirs, shared_data, capsys):
    raw, _ = data_dirs
    write_split_files(tmp_path / "built", support_lines(shared_data))
    parquet = {
        f"{s}.parquet": (tmp_path / "built" / f"{s}.parquet").read_bytes()
        for s in ("train", "validation", "test")
    }
    with HttpTestServer() as server:
        serve_metadata(server, raw, {"iamdb.zip": None, "train.uttlist": None, **parquet})
        ds = IamLinesDataset(**ARGS).load_or_generate_data()
        asked = {r.path for r in server.requests}
    assert {"/iamdb.zip", "/train.parquet", "/test.parquet", "/validation.parquet"} <= asked
    assert "downloading Teklia's IAM-line parquet copy instead" in capsys.readouterr().err
    assert all((raw / "iam" / name).is_file() for name in parquet)
    assert ds.layout() == "parquet" and len(ds.x_train) == 2 and len(ds.x_test) == 2


def test_source_parquet_downloads_only_the_parquet(tmp_path, data_dirs, shared_data) -> None:
    raw, _ = data_dirs
    write_split_files(tmp_path / "built", support_lines(shared_data))
    parquet = {
        f"{s}.parquet": (tmp_path / "built" / f"{s}.parquet").read_bytes()
        for s in ("train", "validation", "test")
    }
    with HttpTestServer() as server:
        serve_metadata(server, raw, {"iamdb.zip": None, **parquet})
        ds = IamLinesDataset(source="parquet", **ARGS).load_or_generate_data()
        assert "/iamdb.zip" not in {r.path for r in server.requests}
    assert len(ds.x_val) == 1


def test_a_file_without_the_columns_is_one_line_naming_it(tmp_path, data_dirs, shared_data):
    folder = tmp_path / "hf"
    write_split_files(folder, support_lines(shared_data))
    pq.write_table(pa.table({"img": [b"x"], "label": ["y"]}), folder / "validation.parquet")
    with pytest.raises(DataError) as err:
        IamLinesDataset(data_dir=str(folder), **ARGS).load_or_generate_data()
    message = str(err.value)
    assert "\n" not in message and str(folder / "validation.parquet") in message
    assert "expected columns image" in message and "img" in message


def test_a_corrupt_file_is_one_line_naming_it(tmp_path, data_dirs, shared_data) -> None:
    folder = tmp_path / "hf"
    write_split_files(folder, support_lines(shared_data))
    (folder / "test.parquet").write_bytes(b"PAR1 this is not a parquet file at all")
    with pytest.raises(DataError) as err:
        IamLinesDataset(data_dir=str(folder), **ARGS).load_or_generate_data()
    message = str(err.value)
    assert "\n" not in message and str(folder / "test.parquet") in message
    assert "not a readable parquet file" in message
    # Damaged pages (a valid footer, garbage in the data): still one line naming the file.
    good = (folder / "train.parquet").read_bytes()
    damaged = bytearray(good)
    damaged[8:400] = bytes(392)
    write_split_files(folder, support_lines(shared_data))
    (folder / "train.parquet").write_bytes(bytes(damaged))
    with pytest.raises(DataError) as err:
        IamLinesDataset(data_dir=str(folder), **ARGS).load_or_generate_data()
    assert "\n" not in str(err.value) and str(folder / "train.parquet") in str(err.value)


def test_without_a_lines_txt_the_benchmark_lines_stay_with_a_warning(
    tmp_path, data_dirs, shared_data, monkeypatch, capsys
) -> None:
    from text_recognizer import paths

    write_split_files(tmp_path / "hf", support_lines(shared_data))
    monkeypatch.setattr(paths, "SHARED_DATA_DIR", tmp_path / "no_shared")
    ds = IamLinesDataset(data_dir=str(tmp_path / "hf"), **ARGS).load_or_generate_data()
    assert len(ds.x_train) == 3 and "paragraph_benchmark_text" not in ds.skipped
    assert "cannot be told apart and stay in train" in capsys.readouterr().err


def test_the_shipped_metadata_pins_the_parquet_files() -> None:
    """data/raw/iam/metadata.toml downloads Teklia's files at one commit, each checked against the
    sha256 the Hub shows for it (a changed or truncated download is refused, never read)."""
    import re

    from text_recognizer.datasets.metadata import load_metadata

    root = Path(__file__).resolve().parents[1]
    files = {f.filename: f for f in load_metadata(root / "data" / "raw" / "iam" / "metadata.toml")}
    for split in ("train", "validation", "test"):
        entry = files[f"{split}.parquet"]
        assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256), entry
        assert re.search(r"/Teklia/IAM-line/resolve/[0-9a-f]{40}/data/", entry.url), entry.url
        assert entry.size is not None or entry.max_size is not None
    assert len({files[f"{s}.parquet"].sha256 for s in ("train", "validation", "test")}) == 3
