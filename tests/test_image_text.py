"""ImageTextDataset on folders built from the real shared images: csv, sidecar and PyLaia layouts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_script
from text_recognizer.datasets.base import summary_main
from text_recognizer.datasets.image_text import ImageTextDataset
from text_recognizer.datasets.kaggle_names import (
    ALPHABET,
    KaggleNamesDataset,
    clean_label,
    read_csv_rows,
)
from text_recognizer.datasets.text import decode
from text_recognizer.errors import ConfigError, DataError
from text_recognizer.preprocessing import preprocess_image


def texts(ds: ImageTextDataset, split: str) -> list[str]:
    return [decode(y, ds.mapping) for y in getattr(ds, f"y_{split}")]


def kaggle_rows(names: Path, split: str) -> list[tuple[str, str]]:
    """(image path under the names folder, label) of the rows KaggleNamesDataset uses."""
    data = (names / f"written_name_{split}_v2.csv").read_bytes()
    rows = []
    for filename, identity in read_csv_rows(data, split):
        label, reason = clean_label(identity)
        if reason is None and filename and (names / f"{split}_v2" / filename).is_file():
            rows.append((f"{split}_v2/{filename}", label))
    return rows


@pytest.fixture
def names(shared_data: Path) -> Path:
    folder = shared_data / "kaggle_handwriting_names"
    if not (folder / "written_name_validation_v2.csv").is_file():
        pytest.skip(f"Kaggle names sample not found at {folder}")
    return folder


@pytest.fixture
def lines(shared_data: Path) -> list[Path]:
    found = sorted((shared_data / "iam" / "lines_support").glob("*.png"))
    if len(found) < 3:
        pytest.skip("IAM support lines not found in the shared data")
    return found


def write_layout(layout: str, folder: Path, names: Path, rows: list[tuple[str, str]]) -> None:
    """The same images and labels in one of the three layouts, items in the same order (the
    images numbered in the CSV's order, so a sorted folder lists them as the CSV does)."""
    folder.mkdir(parents=True)
    if layout == "csv":
        for split in ("validation", "test"):
            shutil.copytree(names / f"{split}_v2", folder / f"{split}_v2")
        lines = ["FILENAME,IDENTITY", *(f"{path},{label}" for path, label in rows)]
        (folder / "labels.csv").write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
        return
    (folder / "images").mkdir()
    gt = []
    for i, (path, label) in enumerate(rows):
        image = folder / "images" / f"{i:05d}.jpg"
        shutil.copy(names / path, image)
        if layout == "sidecar":
            image.with_suffix(".gt.txt").write_text(label + "\n", encoding="utf-8")
        gt.append(f"{image.stem} {label}")
    if layout == "pylaia":
        (folder / "gt.txt").write_text("\n".join(gt) + "\n", encoding="utf-8")


@pytest.mark.parametrize("layout", ["csv", "sidecar", "pylaia"])
def test_every_layout_gives_kaggle_names_arrays(
    tmp_path: Path, names: Path, data_dirs, layout: str
) -> None:
    """The same images, split and preprocessing args in any layout: KaggleNamesDataset's arrays
    exactly (no skew), so both train to the same model."""
    folder = tmp_path / "names"
    rows = kaggle_rows(names, "validation") + kaggle_rows(names, "test")
    write_layout(layout, folder, names, rows)
    shape = {"image_height": 32, "image_width": 256, "keep_aspect": True, "max_length": 64}
    ours = ImageTextDataset(data_dir=str(folder), charset=ALPHABET, test_fraction=0.2, **shape)
    ours.load_or_generate_data()
    theirs = KaggleNamesDataset(data_dir=str(names), split_from_available=0.2, **shape)
    theirs.load_or_generate_data()
    assert ours.mapping == theirs.mapping
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(ours, f"x_{split}"), getattr(theirs, f"x_{split}"))
        np.testing.assert_array_equal(getattr(ours, f"y_{split}"), getattr(theirs, f"y_{split}"))
    assert ours.config()["preprocessing"] == theirs.config()["preprocessing"]
    if layout == "csv":  # the 10 images KaggleNamesDataset drops for their labels: counted
        assert ours.skipped == {"image_without_transcript": 10}
        assert "format:     csv (labels.csv)" in ours.summary()
    else:
        assert not ours.skipped and f"format:     {layout}" in ours.summary()


def test_kaggle_names_csv_read_as_is(names: Path, data_dirs) -> None:
    """Kaggle's own CSV, named with labels_file: bare file names found in their folder."""
    ds = ImageTextDataset(
        data_dir=str(names), labels_file="written_name_test_v2.csv", image_height=32
    ).load_or_generate_data()
    total = len(ds.x_train) + len(ds.x_val) + len(ds.x_test)
    assert ds.skipped["image_without_transcript"] == 1500  # the validation images
    assert ds.skipped["transcript_without_image"] == 41370 - 64
    assert total + sum(v for k, v in ds.skipped.items() if k.startswith(("empty", "outside"))) == 64
    assert "KEVIN" in texts(ds, "train") + texts(ds, "val") + texts(ds, "test")
    train_chars = set("".join(texts(ds, "train") + texts(ds, "val")))
    assert ds.mapping == ["<blank>", "<pad>", *sorted(train_chars)]


def sidecar_folder(tmp_path: Path, names: Path, lines: list[Path]) -> Path:
    """IAM lines and Kaggle names with x.gt.txt sidecars, in varied modes, plus unusable items."""
    folder = tmp_path / "sidecar"
    (folder / "sub").mkdir(parents=True)
    for path in lines:
        shutil.copy(path, folder / path.name)
        (folder / f"{path.stem}.gt.txt").write_text(path.stem + "\n", encoding="utf-8")
    rows = kaggle_rows(names, "validation")[:24]
    for i, (rel, label) in enumerate(rows):
        image = Image.open(names / rel)
        target = folder / "sub" / f"name{i:02d}.png"
        if i % 3 == 1:
            image = image.convert("RGBA")  # any mode reads the same
        elif i % 3 == 2:
            image = image.resize((image.width * 2, image.height))  # any size
        image.save(target)
        target.with_name(f"name{i:02d}.gt.txt").write_text(label.title(), encoding="utf-8")
    shutil.copy(names / rows[0][0], folder / "no_transcript.jpg")
    (folder / "no_image.gt.txt").write_text("Lost", encoding="utf-8")
    (folder / "blank.png").write_bytes((folder / "sub" / "name00.png").read_bytes())
    (folder / "blank.gt.txt").write_text("  \n", encoding="utf-8")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "broken.gt.txt").write_text("Broken", encoding="utf-8")
    return folder


def test_sidecar_layout_skips_and_split_files(
    tmp_path: Path, names: Path, lines: list[Path], data_dirs, capsys
) -> None:
    folder = sidecar_folder(tmp_path, names, lines)
    stems = [p.stem for p in lines]
    # Lists name items by stem, file name or path; the IAM lines are tested only.
    (folder / "test.txt").write_text("\n".join(stems) + "\nnot_there\n", encoding="utf-8")
    (folder / "val.txt").write_text("sub/name00.png\nname01\n", encoding="utf-8")
    ds = ImageTextDataset(data_dir=str(folder), image_height=40, image_width=800, max_length=36)
    ds.load_or_generate_data()
    assert ds.skipped == {
        "transcript_without_image": 1,
        "image_without_transcript": 1,
        "listed_but_not_found": 1,
        "empty_transcript": 1,
        "longer_than_max_length": 2,  # two 37-character IAM lines
        "unreadable_image": 1,
        "outside_training_charset_test": 1,  # "," of the third line never in training names
    }
    assert ds.skipped_examples["unreadable_image"] == ["broken.png (ImageError)"]
    assert "warning:" in capsys.readouterr().err
    assert len(ds.x_val) == 2 and len(ds.x_train) == 22 and len(ds.x_test) == 0
    train_chars = set("".join(texts(ds, "train") + texts(ds, "val")))
    assert ds.mapping == ["<blank>", "<pad>", *sorted(train_chars)]
    assert ds.x_train.shape[1:] == (40, 800) and ds.x_train.dtype == np.uint8
    # Serving reads a raw file exactly as training did.
    config = ds.config()
    assert config["preprocessing"] == {"resize": "fit_height", "height": 40, "width": 800}
    label = (folder / "sub" / "name00.gt.txt").read_text(encoding="utf-8")
    index = texts(ds, "val").index(label)
    served = preprocess_image(folder / "sub" / "name00.png", config["preprocessing"], "auto")
    np.testing.assert_array_equal(served, ds.x_val[index])
    summary = ds.summary()
    assert "format:     sidecar" in summary and "empty_transcript: e.g. blank.png" in summary

    # An edit to the folder rebuilds the cache; the charset argument skips what it lacks.
    (folder / "sub" / "name03.gt.txt").write_text("Zzyzx", encoding="utf-8")
    again = ImageTextDataset(data_dir=str(folder), image_height=40, image_width=800, max_length=36)
    assert "Zzyzx" in texts(again.load_or_generate_data(), "train")
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    given = ImageTextDataset(
        data_dir=str(folder), image_height=40, image_width=800, max_length=36, charset=letters
    ).load_or_generate_data()
    assert given.mapping == ["<blank>", "<pad>", *letters]
    labels = [p.read_text(encoding="utf-8") for p in (folder / "sub").glob("*.gt.txt")]
    outside = [label for label in labels if set(label) - set(letters)]  # "Jean-Michel"
    assert outside and given.skipped["outside_charset"] == len(outside) + 1  # + the IAM line
    assert "outside_training_charset_test" not in given.skipped


def test_pylaia_layout_and_summary_command(tmp_path: Path, lines: list[Path], data_dirs) -> None:
    folder = tmp_path / "pylaia"
    (folder / "images").mkdir(parents=True)
    gt = []
    for i, path in enumerate(lines * 4):  # 12 items of 3 real lines
        shutil.copy(path, folder / "images" / f"line{i:02d}.png")
        tokens = " ".join("<space>" if ch == " " else ch for ch in path.stem)
        gt.append(f"line{i:02d} {tokens if i % 2 else path.stem}")
    gt.append("missing99 A line without its image")
    (folder / "gt.txt").write_text("\n".join(gt) + "\n", encoding="utf-8")
    args = {"data_dir": str(folder), "image_height": 32, "test_fraction": 0.25}
    ds = ImageTextDataset(**args).load_or_generate_data()
    assert ds.skipped == {"transcript_without_image": 1}
    assert len(ds.x_test) == 3 and len(ds.x_train) + len(ds.x_val) == 9
    assert set(texts(ds, "train")) <= {p.stem for p in lines}  # <space> tokens decoded
    assert ImageTextDataset(**args, seed=5).load_or_generate_data().x_test.tobytes() == (
        ds.x_test.tobytes()
    )  # the test carve does not move with the run's seed
    result = run_script("-m", "text_recognizer.datasets.image_text", json.dumps(args))
    assert result.returncode == 0, result.stderr
    assert "ImageTextDataset (lines)" in result.stdout and "format:     pylaia (gt.txt)" in (
        result.stdout
    )
    assert "test:       3 x (32, 1024) uint8" in result.stdout


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, r"is empty; expected a CSV/TSV"),
        ({"labels.csv": "a.png,A\nb.png\n"}, r"labels\.csv: line 2: 1 column\(s\) in 'b\.png'"),
        ({"gt.txt": "a A\nb\n"}, r"gt\.txt: line 2: no space between id and transcript"),
        ({"x.png": b"\x89PNG"}, r"no transcripts found in"),
        ({"a.csv": "a,b\n", "b.tsv": "a\tb\n"}, r"has 2 CSV/TSV files \(a\.csv, b\.tsv\)"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, data_dirs, capsys, files, message) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    for name, content in files.items():
        path = folder / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    with pytest.raises(DataError, match=message) as e:
        ImageTextDataset(data_dir=str(folder)).load_or_generate_data()
    assert "\n" not in str(e.value)
    assert summary_main("ImageTextDataset", [json.dumps({"data_dir": str(folder)})]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and len([x for x in err if x.startswith("error")]) == 1


def test_split_list_conflicts_and_required_folder(
    tmp_path: Path, lines: list[Path], data_dirs
) -> None:
    folder = tmp_path / "twice"
    folder.mkdir()
    rows = []
    for path in lines:
        shutil.copy(path, folder / path.name)
        rows.append(f'"{path.name}","{path.stem}"')
    (folder / "lines.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (folder / "train.txt").write_text(f"{lines[0].name}\n{lines[1].name}\n", encoding="utf-8")
    (folder / "test.txt").write_text(f"{lines[2].stem}\n", encoding="utf-8")
    ds = ImageTextDataset(data_dir=str(folder), image_height=32).load_or_generate_data()
    assert len(ds.x_test) + len(ds.x_train) + len(ds.x_val) == 2  # test line: unseen characters
    (folder / "test.txt").write_text(f"{lines[0].stem}\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"test\.txt: line 1: .* is also in the train list"):
        ImageTextDataset(data_dir=str(folder), image_height=32).load_or_generate_data()
    with pytest.raises(ConfigError, match="needs data_dir"):
        ImageTextDataset().load_or_generate_data()


def test_tsv_with_header_keeps_quotes_and_warns(
    tmp_path: Path, lines: list[Path], data_dirs, capsys
) -> None:
    folder = tmp_path / "tsv"
    (folder / "img").mkdir(parents=True)
    rows = ["image\tsomething\ttranscription"]
    for i, path in enumerate(lines * 2):
        shutil.copy(path, folder / "img" / f"{i}.png")
        name = str(folder / "img" / f"{i}.png") if i == 0 else f"img/{i}.png"  # absolute too
        rows.append(f'{name}\t-\t"{path.stem}"')
    rows.append("img/typo.png\t-\tLost")
    (folder / "lines.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    ds = ImageTextDataset(data_dir=str(folder), image_height=32, test_fraction=0.5)
    ds.load_or_generate_data()
    every = texts(ds, "train") + texts(ds, "val") + texts(ds, "test")
    assert len(every) == 6 and all(t.startswith('"') and t.endswith('"') for t in every)
    assert ds.skipped["transcript_without_image"] == 1
    err = capsys.readouterr().err
    assert "1 item(s) skipped, transcript_without_image (e.g. lines.tsv:8: img/typo.png)" in err


def tiny_folder(folder: Path, count: int, seed: int = 0) -> Path:
    """``count`` small grey PNG lines (random sizes, some RGB, a few broken or empty files) and
    a CSV of their transcripts, with a validation list so every split is gathered."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    rows, listed = [], []
    for i in range(count):
        name = f"line_{i:05d}.png"
        if i % 97 == 5:
            (folder / name).write_bytes(b"" if i % 2 else b"\x89PNG\r\n\x1a\nbroken")
        else:
            size = (int(rng.integers(20, 90)), int(rng.integers(6, 20)))
            image = Image.new("L", size, int(rng.integers(180, 256)))
            ImageDraw.Draw(image).text((1, 0), str(i), fill=int(rng.integers(0, 80)))
            image = image.convert("RGB") if i % 5 == 0 else image
            image.save(folder / name)
        rows.append(f"{name},{'ab' if i % 7 == 0 else 'AB'[i % 2]}{i}")
        if i % 11 == 0:
            listed.append(name)
    (folder / "labels.csv").write_text("filename,text\n" + "\n".join(rows) + "\n")
    (folder / "validation.txt").write_text("\n".join(listed) + "\n")
    return folder


def test_parallel_decoding_gives_the_serial_arrays(
    tmp_path: Path, data_dirs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """workers=2 (the pool forced on a small folder, in many small chunks) gives workers=1's
    arrays bit for bit, in the same order, with the same skips; workers is no part of the key."""
    from text_recognizer.datasets import image_text_layouts

    monkeypatch.setattr(image_text_layouts, "POOL_MIN_IMAGES", 10)
    monkeypatch.setattr(image_text_layouts, "CHUNK_ROWS", 23)
    folder = tiny_folder(tmp_path / "tiny", 700)
    args = {
        "data_dir": str(folder),
        "image_height": 16,
        "image_width": 64,
        "charset": "AB0123456789",
    }
    serial = ImageTextDataset(workers=1, **args)
    parallel = ImageTextDataset(workers=2, **args)
    assert serial.cache_key() == parallel.cache_key() == ImageTextDataset(**args).cache_key()
    with pytest.raises(ConfigError, match="workers"):
        ImageTextDataset(workers=-1, **args)
    arrays = {}
    for name, ds in (("serial", serial), ("parallel", parallel)):
        arrays[name] = ds.process()
        assert ds.skipped["unreadable_image"] == 7  # broken and empty PNGs (an 8th: "ab490")
        assert ds.skipped["outside_charset"] == 100  # the lower-case ones
    assert serial.skipped == parallel.skipped
    assert serial.skipped_examples == parallel.skipped_examples
    (ours, ours_mapping), (theirs, theirs_mapping) = arrays["parallel"], arrays["serial"]
    assert ours_mapping == theirs_mapping
    assert ours.keys() == theirs.keys()
    for key in ours:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
    assert ours["trainval_is_validation"].sum() > 0 and len(ours["x_test"]) > 0
    # the first listed validation item (0 is "ab0", outside the charset) is line 11's image
    first = ours["x_trainval"][ours["trainval_is_validation"]][0]
    spec = serial.preprocessing()
    np.testing.assert_array_equal(first, preprocess_image(folder / "line_00011.png", spec, "dark"))


def test_decoding_stopped_leaves_no_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error or Ctrl-C in the parent while the pool decodes terminates its workers."""
    import os
    import time

    from text_recognizer.datasets import image_text_layouts

    folder = tiny_folder(tmp_path / "tiny", 40)
    paths = [str(p) for p in sorted(folder.glob("*.png"))] * 20
    monkeypatch.setattr(image_text_layouts, "POOL_MIN_IMAGES", 10)
    monkeypatch.setattr(image_text_layouts, "CHUNK_ROWS", 4)
    pids: list[int] = []
    stop = image_text_layouts._stop

    def spy(pool, finished: bool) -> None:
        pids.extend(p.pid for p in (pool._processes or {}).values())
        stop(pool, finished)

    monkeypatch.setattr(image_text_layouts, "_stop", spy)

    def interrupt(start: int, statuses: list) -> None:
        raise KeyboardInterrupt

    out = np.zeros((len(paths), 16, 64), dtype=np.uint8)
    spec = {"resize": "fit_height", "height": 16, "width": 64}
    with pytest.raises(KeyboardInterrupt):
        image_text_layouts.decode_images(paths, spec, out, 2, interrupt)
    assert len(pids) == 2
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in pids if _running(pid)]
        time.sleep(0.05)
    assert not alive, f"workers {alive} still running"
    assert os.getpid() not in pids


def _running(pid: int) -> bool:
    """A process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_a_csv_name_two_images_answer_to_is_ambiguous(tmp_path: Path) -> None:
    """A row's name that is one image's path and another's file name (``x.png`` and
    ``sub/x.png``) is counted as ambiguous, never paired with either; a unique file name pairs."""
    from text_recognizer.datasets.image_text_layouts import read_items
    from text_recognizer.datasets.item_store import ItemStore

    for rel in ("x.png", "sub/x.png", "sub/y.png", "z.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "labels.csv").write_text("x.png,one\ny.png,two\nsub/x.png,three\nq.png,four\n")
    skips: list[tuple[str, str]] = []
    with ItemStore(tmp_path / "scratch") as store:
        read_items(
            tmp_path,
            "csv",
            tmp_path / "labels.csv",
            lambda reason, what: skips.append((reason, what)),
            store,
        )
        items = [(rel, text) for _, rel, text, _ in store.items()]
    assert items == [("sub/y.png", "two"), ("sub/x.png", "three")]
    assert not list((tmp_path / "scratch").iterdir())  # the store's file is gone
    assert [r for r, _ in skips] == [
        "ambiguous_image_name",
        "transcript_without_image",
        "image_without_transcript",
        "image_without_transcript",
    ]


def test_transcripts_wait_on_disk_while_images_decode(
    tmp_path: Path, data_dirs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the images are decoded, the folder's names and transcripts are rows of the temporary
    SQLite file (item_store), not Python strings: memory besides the arrays does not grow with
    the number of images. 20,000 items of 120-character transcripts (2.4 MB of text, 5+ MB as
    Python strings) leave Python's heap (tracemalloc: numpy's arrays included) within 1 MB of its
    size before, plus the image array; the arrays are those of the texts."""
    import tracemalloc

    from text_recognizer.datasets import image_text

    count, width = 20_000, 120
    folder = tmp_path / "many"
    (folder / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    rows = []
    for i in range(count):
        (folder / "img" / f"{i:05d}.png").touch()  # never read: decoding is replaced below
        rows.append(f"img/{i:05d}.png,{''.join(rng.choice(letters, width))}")
    (folder / "labels.csv").write_text("filename,text\n" + "\n".join(rows) + "\n")
    traced: list[int] = []

    def decode_images(paths, spec, out, workers, on_chunk, root) -> None:
        traced.append(tracemalloc.get_traced_memory()[0] - out.nbytes)
        out[:] = np.arange(len(paths), dtype=np.int64)[:, None, None] % 251
        for start in range(0, len(paths), 1000):
            on_chunk(start, [None] * len(paths[start : start + 1000]))

    monkeypatch.setattr(image_text, "decode_images", decode_images)
    shape = {"image_height": 4, "image_width": 8, "max_length": width, "workers": 1}
    warm = tmp_path / "warm"  # the first build imports what processing needs: not measured
    warm.mkdir()
    for i in range(3):
        (warm / f"{i}.png").touch()
    (warm / "labels.csv").write_text("0.png,ab\n1.png,ba\n2.png,aa\n")
    ImageTextDataset(data_dir=str(warm), **shape).process()
    traced.clear()
    ds = ImageTextDataset(data_dir=str(folder), **shape)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        arrays, mapping = ds.process()
    finally:
        tracemalloc.stop()
    assert traced and traced[0] - before < 1 << 20, (traced[0] - before) / count
    # every row's text is its label, whichever split it went to
    by_row = {i: rows[i].split(",", 1)[1] for i in range(count)}
    got = [decode(y, mapping) for y in np.concatenate([arrays["y_trainval"], arrays["y_test"]])]
    x = np.concatenate([arrays["x_trainval"], arrays["x_test"]])
    assert len(got) == count
    assert sorted(got) == sorted(by_row.values())
    firsts = {int(x[i, 0, 0]) for i in range(10)}
    assert all(by_row[r] in got for r in firsts)
    assert not [p for p in ds.cache_path.parent.iterdir() if p.suffix == ".tmp"]


def test_a_full_disk_while_listing_is_one_line(tmp_path: Path) -> None:
    """The temporary item list hitting a full disk is a StorageError naming it, not sqlite's."""
    from text_recognizer.datasets.item_store import ItemStore
    from text_recognizer.errors import StorageError

    with ItemStore(tmp_path) as store:
        store.db.execute("PRAGMA max_page_count = 8")  # the file may not grow past 8 pages
        with pytest.raises(StorageError) as err:
            store.add_images(f"img/{i:06d}.png" for i in range(10_000))
    message = str(err.value)
    assert "\n" not in message and "temporary item list" in message
    assert "the disk is full" in message
    assert not list(tmp_path.iterdir())


def test_a_file_name_that_is_not_utf8_is_an_image_like_another(tmp_path: Path, data_dirs) -> None:
    """scandir gives an undecodable name as surrogates; it is paired, listed and decoded as any
    other (stored as its bytes), never a crash of the build."""
    import os

    folder = tmp_path / "odd"
    folder.mkdir()
    for i, text in enumerate(("ab", "ba", "aab", "bba")):
        Image.new("L", (40, 16), 255).save(folder / f"{i}.png")
        (folder / f"{i}.gt.txt").write_text(text)
    raw = os.fsencode(folder)
    Image.new("L", (40, 16), 255).save(os.fsdecode(raw + b"/\xff.png"))
    with open(raw + b"/\xff.gt.txt", "w") as f:
        f.write("abba")
    ds = ImageTextDataset(data_dir=str(folder), image_height=16, image_width=64, max_length=8)
    ds.load_or_generate_data()
    assert sorted(texts(ds, "train") + texts(ds, "val") + texts(ds, "test")) == sorted(
        ["ab", "ba", "aab", "bba", "abba"]
    )
    assert ds.skipped == {}


def test_a_store_that_cannot_start_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    """SQLite failing as the store opens (a full disk) is a one-line StorageError, and the temp
    file it had made is removed."""
    import sqlite3

    from text_recognizer.datasets import item_store
    from text_recognizer.errors import StorageError

    def refuse(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(item_store.sqlite3, "connect", refuse)
    with pytest.raises(StorageError, match=r"temporary item list .*: the disk is full"):
        item_store.ItemStore(tmp_path)
    assert not list(tmp_path.iterdir())
