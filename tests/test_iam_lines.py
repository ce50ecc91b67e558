"""IamLinesDataset: the parser on the real lines.txt, a fake official layout, a fake iamdb.zip.

The official layout is a handful of line PNGs in ``lines/<a01>/<a01-000u>/`` with a matching
``ascii/lines.txt``; FSDL's archive is a tiny ``iamdb.zip`` (a half-size form JPEG plus its XML at
full-resolution coordinates) served over a local HTTP server with the split lists, so the
download, the checksum and the crop path all run for real.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from http_fixtures import HttpTestServer
from PIL import Image

from text_recognizer import paths
from text_recognizer.datasets import DATASETS
from text_recognizer.datasets.iam_lines import (
    IAM_CHARACTERS,
    IamLinesDataset,
    parse_form_xml,
    parse_lines_txt,
    read_split_lists,
)
from text_recognizer.datasets.text import decode
from text_recognizer.errors import DataError

IAM = paths.SHARED_DATA_DIR / "iam"
needs_iam = pytest.mark.skipif(
    not (IAM / "ascii" / "lines.txt").is_file(), reason=f"IAM lines.txt not found under {IAM}"
)


@needs_iam
def test_parser_on_the_real_lines_txt() -> None:
    lines = parse_lines_txt((IAM / "ascii" / "lines.txt").read_text(encoding="utf-8"))
    assert len(lines) == 13353
    assert sum(line.ok for line in lines) == 11344 and sum(not line.ok for line in lines) == 2009
    assert len({line.form_id for line in lines}) == 1539
    assert not any("|" in line.text for line in lines)
    assert set("".join(line.text for line in lines)) == set(IAM_CHARACTERS)
    assert max(len(line.text) for line in lines) == 93
    form = [line for line in lines if line.form_id == "a01-000u"]
    assert [line.text for line in form] == [
        "A MOVE to stop Mr. Gaitskell from",
        "nominating any more Labour life Peers",
        "is to be made at a meeting of Labour",
        "M Ps tomorrow . Mr. Michael Foot has",  # the word "M Ps" holds a space
        "put down a resolution on the subject",
        "and he is to be backed by Mr. Will",
        "Griffiths , M P for Manchester Exchange .",
    ]
    assert [line.ok for line in form] == [True, True, True, False, True, False, True]
    first = form[0]
    assert first.id == "a01-000u-00" and first.box == (408, 746, 1661, 89)
    assert first.graylevel == 154 and first.components == 19
    assert first.image_path == "lines/a01/a01-000u/a01-000u-00.png"
    split_of = read_split_lists(IAM / "splits_htr_best_practices")
    counts = {s: sum(v == s for v in split_of.values()) for s in ("train", "validation", "test")}
    assert counts == {"train": 747, "validation": 116, "test": 336}
    per_split = {s: sum(split_of.get(line.form_id) == s for line in lines) for s in counts}
    assert per_split == {"train": 6482, "validation": 976, "test": 2915}
    with pytest.raises(DataError, match=r"lines.txt:2: expected"):
        parse_lines_txt("# comment\na01-000u-00 maybe 1 2 3 4 5 6 text")


@needs_iam
def test_shared_folder_without_line_images_is_a_clear_error(data_dirs) -> None:
    with pytest.raises(DataError, match=r"has ascii/lines.txt but no lines/ folder") as err:
        IamLinesDataset(data_dir=str(IAM)).load_or_generate_data()
    assert "\n" not in str(err.value)


# ----- a fake official layout ------------------------------------------------------------------------


def line_png(width: int, height: int, ink: int = 20) -> bytes:
    """Dark strokes on a light page, like IAM's line images."""
    page = np.full((height, width), 245, dtype=np.uint8)
    for x in range(5, width - 8, 9):  # 3-pixel strokes
        page[height // 3 : 2 * height // 3, x : x + 3] = ink
    buf = io.BytesIO()
    Image.fromarray(page).save(buf, format="PNG")
    return buf.getvalue()


OFFICIAL_LINES = [
    # id, status, text (| separates words), size (w, h)
    ("a01-003u-00", "ok", "A|MOVE|to|stop", (600, 60)),
    ("a01-003u-01", "err", "M Ps|tomorrow|.", (400, 50)),
    ("a01-003u-02", "ok", "x" * 40, (300, 50)),  # longer than max_length 30
    ("a01-003u-03", "ok", "missing|image", (300, 50)),  # no PNG written
    ("a01-003u-04", "ok", "broken|image", (300, 50)),  # not a PNG
    ("a01-003u-05", "ok", "very|wide|line", (4000, 40)),  # squeezed to fit
    ("a01-077u-00", "ok", "benchmark|text", (300, 50)),  # a paragraph crop's form: left out
    ("c04-156-00", "ok", "validation|words", (500, 60)),
    ("m01-049-00", "ok", "He|rose|from", (500, 60)),
    ("z99-999-00", "ok", "not|in|a|list", (300, 50)),
]


def write_official(folder: Path) -> Path:
    rows = ["#--- lines.txt ---", "#"]
    for line_id, status, text, (w, h) in OFFICIAL_LINES:
        rows.append(f"{line_id} {status} 180 5 100 200 {w} {h} {text}")
        form = line_id.rsplit("-", 1)[0]
        target = folder / "lines" / line_id.split("-")[0] / form / f"{line_id}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        if "missing" in text:
            continue
        target.write_bytes(b"not a png" if "broken" in text else line_png(w, h))
    (folder / "ascii").mkdir(parents=True)
    (folder / "ascii" / "lines.txt").write_text("\n".join(rows) + "\n")
    (folder / "train.uttlist").write_text("a01-003u\na01-077u\n")
    (folder / "validation.uttlist").write_text("c04-156\n")
    (folder / "test.uttlist").write_text("m01-049\n")
    return folder


def test_official_layout_end_to_end(tmp_path: Path, data_dirs, capsys) -> None:
    folder = write_official(tmp_path / "iam")
    ds = IamLinesDataset(data_dir=str(folder), image_height=32, image_width=640, max_length=30)
    ds.load_or_generate_data()
    assert "skipped, missing_image" in capsys.readouterr().err
    assert ds.x_train.shape == (3, 32, 640) and ds.x_train.dtype == np.uint8
    texts = sorted(decode(y, ds.mapping) for y in ds.y_train)
    assert texts == ["A MOVE to stop", "M Ps tomorrow .", "very wide line"]
    assert [decode(y, ds.mapping) for y in ds.y_val] == ["validation words"]  # official list
    assert [decode(y, ds.mapping) for y in ds.y_test] == ["He rose from"]
    assert ds.skipped == {
        "longer_than_max_length": 1,
        "missing_image": 1,
        "undecodable_image": 1,
        "form_not_in_split_lists": 1,
        "kept_but_squeezed": 1,
        "paragraph_benchmark_form": 1,
    }
    assert ds.skipped_examples["missing_image"] == ["lines/a01/a01-003u/a01-003u-03.png"]
    summary = ds.summary()
    assert "undecodable_image: e.g. lines/a01/a01-003u/a01-003u-04.png" in summary
    # White ink on black, aspect kept: a 600x60 line is 320 wide at height 32, then black padding.
    first = ds.x_train[[decode(y, ds.mapping) for y in ds.y_train].index("A MOVE to stop")]
    assert first[:, 330:].max() == 0 and first[:, :320].max() > 150
    assert first[:, :320].mean() < 80
    config = ds.config()
    assert config["input_shape"] == [32, 640] and config["output_shape"] == [30, 81]
    assert config["mapping"][:3] == ["<blank>", "<pad>", " "]

    # Cached with its skip counts; skip_err drops the err line; the carve replaces the list.
    again = IamLinesDataset(data_dir=str(folder), image_height=32, image_width=640, max_length=30)
    again.load_or_generate_data()
    assert again.skipped == ds.skipped and again.skipped_examples == ds.skipped_examples
    no_err = IamLinesDataset(
        data_dir=str(folder), image_height=32, image_width=640, max_length=30, skip_err=True
    ).load_or_generate_data()
    assert len(no_err.x_train) == 2 and no_err.skipped["err_segmentation"] == 1
    carved = IamLinesDataset(
        data_dir=str(folder),
        image_height=32,
        image_width=640,
        max_length=30,
        official_validation=False,
        validation_fraction=0.25,
    ).load_or_generate_data()
    assert len(carved.x_train) == 3 and len(carved.x_val) == 1
    assert set(DATASETS["IamLinesDataset"].args) >= {"skip_err", "image_height", "image_width"}


# ----- a fake iamdb.zip over HTTP ----------------------------------------------------------------------

FORM_XML = """<?xml version="1.0" encoding="ISO-8859-1"?>
<form id="{form}" writer-id="000">
  <machine-printed-part><machine-print-line text="ignored"/></machine-printed-part>
  <handwritten-part>
    <line id="{form}-00" text="first line" segmentation="ok" threshold="180">
      <word id="{form}-00-00" text="Hello"><cmp x="200" y="400" width="300" height="100"/></word>
      <word id="{form}-00-01" text="&amp;quot;there&amp;quot;"><cmp x="600" y="420" width="400" height="80"/>
        <cmp x="1000" y="410" width="200" height="90"/></word>
    </line>
    <line id="{form}-01" text="second" segmentation="err" threshold="180">
      <word id="{form}-01-00" text="again"><cmp x="200" y="800" width="800" height="120"/></word>
    </line>
  </handwritten-part>
</form>
"""


def form_jpeg() -> bytes:
    """A half-size form (1240 x 1760 stands for 2480 x 3520) with the two lines' ink."""
    page = np.full((1760, 1240), 250, dtype=np.uint8)
    page[200:250, 100:600] = 0  # line 00: full-res x 200..1200, y 400..500
    page[400:460, 100:500] = 120  # line 01: full-res x 200..1000, y 800..920 (paler ink)
    buf = io.BytesIO()
    Image.fromarray(page).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def iamdb_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for form in ("a01-003u", "c04-156", "m01-049"):
            zf.writestr(f"iamdb/forms/{form}.jpg", form_jpeg())
            zf.writestr(f"iamdb/xml/{form}.xml", FORM_XML.format(form=form))
        zf.writestr("iamdb/task/testset.txt", "m01-049-00\n")
    return buf.getvalue()


def test_fsdl_zip_is_downloaded_verified_and_cropped(tmp_path: Path, data_dirs) -> None:
    raw, _ = data_dirs
    files = {
        "iamdb.zip": iamdb_zip(),
        "train.uttlist": b"a01-003u\n",
        "validation.uttlist": b"c04-156\n",
        "test.uttlist": b"m01-049\n",
    }
    with HttpTestServer() as server:
        tables = []
        for name, body in files.items():
            url = server.add(f"/{name}", body)
            digest = hashlib.sha256(body).hexdigest()
            tables.append(f'[[files]]\nurl = "{url}"\nfilename = "{name}"\nsha256 = "{digest}"\n')
        (raw / "iam").mkdir(parents=True)
        (raw / "iam" / "metadata.toml").write_text("\n".join(tables))
        ds = IamLinesDataset(image_height=28, image_width=400, max_length=40)
        ds.load_or_generate_data()
        assert {r.path for r in server.requests} == {f"/{n}" for n in files}
    assert (raw / "iam" / "iamdb.zip").is_file() and not (raw / "iam" / "iamdb").exists()
    texts = [decode(y, ds.mapping) for y in ds.y_train]
    assert texts == ['Hello "there"', "again"]  # word texts joined, as in lines.txt
    assert len(ds.x_val) == 2 and len(ds.x_test) == 2
    # The crops follow the XML boxes scaled to the half-size form: black ink -> ~255, pale -> ~130.
    first, second = ds.x_train
    assert first.max() > 230 and 100 < second.max() < 160
    # Crop = ink box + 16 full-res pixels each side: 1032 x 132 full res -> 219 x 28 here.
    assert first[:, 225:].max() == 0 and first[:, :215].mean() > 120
    err = IamLinesDataset(image_height=28, image_width=400, max_length=40, skip_err=True)
    assert len(err.load_or_generate_data().x_train) == 1


def test_form_xml_parser_scales_nothing_and_reports_bad_xml() -> None:
    width, lines = parse_form_xml(FORM_XML.format(form="a01-000u").encode(), "x.xml")
    assert width is None
    assert [line.box for line in lines] == [(200, 400, 1000, 100), (200, 800, 800, 120)]
    assert [line.ok for line in lines] == [True, False]
    with pytest.raises(DataError, match=r"x\.xml is not well-formed XML"):
        parse_form_xml(b"<form><handwritten-part>", "x.xml")
