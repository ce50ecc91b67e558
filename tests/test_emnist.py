"""EmnistDataset on tiny archives in NIST's exact matlab.zip layout, served over local HTTP.

The .mat files are written like the official ones: a struct ``dataset`` with ``train``/``test``
(``images`` (N, 784) uint8 stored transposed, ``labels`` (N, 1), ``writers`` (N, 1)) and ``mapping``.
Every image is an "L" (asymmetric, so a transposed load is caught) with its own index written into
two pixels, so splits can be checked for overlap.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import string
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import scipy.io

from text_recognizer import paths
from text_recognizer.datasets import DATASETS
from text_recognizer.datasets.emnist import EmnistDataset, parse_mapping
from text_recognizer.errors import ConfigError, DataError

DIGITS, UPPER, LOWER = string.digits, string.ascii_uppercase, string.ascii_lowercase
# bymerge/balanced merge these lower-case letters into their upper-case class (NIST's 47 classes).
BALANCED_LOWER = "abdefghnqrt"


def official_mapping(split: str) -> np.ndarray:
    """The mapping field as NIST writes it (see the mapping .txt files in shared/data/emnist)."""
    if split == "byclass":
        return np.array([[i, ord(c)] for i, c in enumerate(DIGITS + UPPER + LOWER)])
    if split == "letters":
        return np.array([[i + 1, ord(u), ord(u.lower())] for i, u in enumerate(UPPER)])
    if split in ("balanced", "bymerge"):
        return np.array([[i, ord(c)] for i, c in enumerate(DIGITS + UPPER + BALANCED_LOWER)])
    return np.array([[i, ord(c)] for i, c in enumerate(DIGITS)])  # digits, mnist


def glyph(index: int) -> np.ndarray:
    """An upright 28x28 "L" with ``index`` written into pixels (0, 0) and (0, 1)."""
    img = np.zeros((28, 28), dtype=np.uint8)
    img[4:24, 4] = 255  # vertical bar on the left
    img[23, 4:19] = 255  # horizontal bar along the bottom
    img[0, 0], img[0, 1] = index % 256, index // 256
    return img


def image_index(images: np.ndarray) -> np.ndarray:
    return images[:, 0, 0].astype(np.int64) + 256 * images[:, 0, 1].astype(np.int64)


def make_part(labels: list[int], start: int) -> dict[str, np.ndarray]:
    upright = np.stack([glyph(start + i) for i in range(len(labels))])
    # NIST stores each image transposed: the row is the upright image flattened column by column.
    rows = upright.transpose(0, 2, 1).reshape(len(labels), 784)
    return {
        "images": np.ascontiguousarray(rows),
        "labels": np.array(labels, dtype=np.uint8).reshape(-1, 1),
        "writers": np.arange(len(labels), dtype=np.uint16).reshape(-1, 1) % 7,
    }


def write_mat(path: Path, split: str) -> None:
    mapping = official_mapping(split)
    label_values = sorted(set(mapping[:, 0].tolist()))
    # Skewed class sizes (1..6 per class) so `balance` has something to do.
    train = [v for i, v in enumerate(label_values) for _ in range(i % 6 + 1)]
    test = list(label_values)
    if split == "balanced":  # a second code for a shared label, as in NIST's merged classes
        mapping = np.vstack([mapping, [12, ord("c")]])
    dataset = {"train": make_part(train, 0), "test": make_part(test, 10000), "mapping": mapping}
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"dataset": dataset}, format="5")


def write_archive(
    folder: Path, splits: tuple[str, ...] = ("byclass", "letters", "balanced")
) -> Path:
    mats = folder / "build"
    archive = folder / "matlab.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for split in splits:
            write_mat(mats / f"emnist-{split}.mat", split)
            zf.write(mats / f"emnist-{split}.mat", f"matlab/emnist-{split}.mat")
    return archive


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: object) -> None:
        _QuietHandler.hits.append(self.path)


@pytest.fixture
def served(tmp_path: Path, data_dirs: tuple[Path, Path]) -> Iterator[list[str]]:
    """Serve a tiny matlab.zip on 127.0.0.1 and write raw/emnist/metadata.toml pointing at it."""
    site = tmp_path / "site"
    site.mkdir()
    archive = write_archive(site)
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    meta = data_dirs[0] / "emnist" / "metadata.toml"
    meta.parent.mkdir(parents=True)
    meta.write_text(
        f'url = "http://127.0.0.1:{server.server_address[1]}/matlab.zip"\n'
        f'filename = "matlab.zip"\nsha256 = "{sha}"\nsize = {archive.stat().st_size}\n'
        "extract = true\n"
    )
    _QuietHandler.hits = []
    try:
        yield _QuietHandler.hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def user_zip(tmp_path: Path) -> Path:
    folder = tmp_path / "user_zip"
    folder.mkdir()
    write_archive(folder)
    return folder


def assert_upright_l(images: np.ndarray) -> None:
    assert images.shape[1:] == (28, 28) and images.dtype == np.uint8
    assert (images[:, 4:24, 4] == 255).all(), "left vertical bar missing: image not upright"
    assert (images[:, 23, 4:19] == 255).all(), "bottom bar missing: image not upright"
    assert (images[:, 4, 5:24] == 0).all(), "ink along the top: the image is transposed"


def load(**kwargs: object) -> EmnistDataset:
    return EmnistDataset(**kwargs).load_or_generate_data()


def test_download_verify_extract_process_and_cache(
    served: list[str], data_dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    raw, processed = data_dirs
    ds = load(validation_fraction=0.2)
    assert served, "the archive was not fetched over HTTP"
    assert (raw / "emnist" / "matlab.zip").is_file()
    assert (raw / "emnist" / "matlab" / "emnist-byclass.mat").is_file(), "zip was not extracted"
    assert ds.cache_path.is_file() and ds.cache_path.parent == processed / "emnist"
    assert ds.mapping == list(DIGITS + UPPER + LOWER)
    assert ds.input_shape == (28, 28) and ds.output_shape == (62,)
    for x in (ds.x_train, ds.x_val, ds.x_test):
        assert_upright_l(x)
    assert len(ds.x_train) + len(ds.x_val) == sum(i % 6 + 1 for i in range(62))
    assert sorted(ds.y_test.tolist()) == list(range(62))
    assert ds.y_train.dtype == np.int64

    # Second load: from the HDF5 cache, no processing and no network.
    hits = len(served)
    monkeypatch.setattr(EmnistDataset, "process", lambda self: pytest.fail("process called"))
    again = load(validation_fraction=0.2)
    assert len(served) == hits
    np.testing.assert_array_equal(again.x_train, ds.x_train)
    np.testing.assert_array_equal(again.y_test, ds.y_test)
    assert again.mapping == ds.mapping


@pytest.mark.parametrize(
    ("split", "size", "chars"),
    [("byclass", 62, DIGITS + UPPER + LOWER), ("letters", 26, UPPER), ("balanced", 47, None)],
    ids=["byclass", "letters", "balanced"],
)
def test_splits_and_mappings(served: list[str], split: str, size: int, chars: str | None) -> None:
    ds = load(split=split)
    assert len(ds.mapping) == size and ds.output_shape == (size,)
    if chars is not None:
        assert "".join(ds.mapping) == chars
    if split == "letters":  # labels 1..26 become classes 0..25, named by the upper-case letter
        assert sorted(set(ds.y_test.tolist())) == list(range(26))
    if split == "balanced":  # label 12 is listed as C and c: the first code wins
        assert ds.mapping[12] == "C" and ds.mapping[-1] == "t"
    assert_upright_l(ds.x_test)
    assert ds.y_train.max() < size and ds.y_test.max() < size


def test_user_data_dir_zip_and_extracted_mat(tmp_path: Path, user_zip: Path, data_dirs) -> None:
    from_zip = load(data_dir=str(user_zip), split="letters", seed=3)
    assert not list(data_dirs[1].rglob("*.mat")), "temporary .mat left behind"
    extracted = tmp_path / "user_mat"
    with zipfile.ZipFile(user_zip / "matlab.zip") as zf:
        zf.extract("matlab/emnist-letters.mat", extracted)
    from_mat = load(data_dir=str(extracted), split="letters", seed=3)
    assert from_zip.cache_path != from_mat.cache_path  # the source folder is part of the key
    assert from_mat.mapping == from_zip.mapping == list(UPPER)
    for attr in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(from_mat, attr), getattr(from_zip, attr))
    assert not (data_dirs[0] / "emnist").exists(), "a user data_dir must not trigger a download"


def test_missing_files_say_what_and_where(tmp_path: Path, data_dirs) -> None:
    with pytest.raises(DataError) as err:
        load(data_dir=str(tmp_path), split="letters")
    msg = str(err.value)
    assert "\n" not in msg
    assert "matlab.zip" in msg and "matlab/emnist-letters.mat" in msg and str(tmp_path) in msg


def test_archive_without_the_split_or_broken(tmp_path: Path, data_dirs) -> None:
    only_letters = tmp_path / "letters_only"
    only_letters.mkdir()
    write_archive(only_letters, splits=("letters",))
    with pytest.raises(DataError, match=r"no matlab/emnist-byclass\.mat"):
        load(data_dir=str(only_letters))

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "matlab.zip").write_bytes(b"<html>not a zip</html>")
    with pytest.raises(DataError, match="not a readable zip"):
        load(data_dir=str(broken))

    bad_mat = tmp_path / "bad_mat" / "matlab"
    bad_mat.mkdir(parents=True)
    (bad_mat / "emnist-byclass.mat").write_bytes(b"\x00" * 300)
    with pytest.raises(DataError, match=r"emnist-byclass\.mat"):
        load(data_dir=str(bad_mat.parent))


def test_balance_caps_classes_at_the_mean_without_replacement(user_zip: Path, data_dirs) -> None:
    plain = load(data_dir=str(user_zip), validation_fraction=0.0)
    counts = np.bincount(plain.y_train, minlength=62)
    cap = int(counts.mean())
    balanced = load(data_dir=str(user_zip), validation_fraction=0.0, balance=True, seed=1)
    got = np.bincount(balanced.y_train, minlength=62)
    np.testing.assert_array_equal(got, np.minimum(counts, cap))
    idx = image_index(balanced.x_train)
    assert len(set(idx.tolist())) == len(idx), "a sample was drawn twice"
    assert plain.cache_path != balanced.cache_path
    # The draw is fixed (it shapes the cache), whatever the run's seed.
    balanced.cache_path.unlink()
    again = load(data_dir=str(user_zip), validation_fraction=0.0, balance=True, seed=9)
    np.testing.assert_array_equal(again.x_train, balanced.x_train)
    np.testing.assert_array_equal(again.x_test, plain.x_test)  # test is never balanced


def test_corrupt_cache_is_rebuilt(user_zip: Path, data_dirs, monkeypatch) -> None:
    first = load(data_dir=str(user_zip))
    data = first.cache_path.read_bytes()
    first.cache_path.write_bytes(data[: len(data) // 3])  # truncated
    calls = []
    original = EmnistDataset.process

    def counting(self: EmnistDataset):
        calls.append(1)
        return original(self)

    monkeypatch.setattr(EmnistDataset, "process", counting)
    rebuilt = load(data_dir=str(user_zip))
    assert calls == [1]
    np.testing.assert_array_equal(rebuilt.x_train, first.x_train)
    load(data_dir=str(user_zip))
    assert calls == [1], "the rebuilt cache was not reused"


def test_validation_split_is_seeded_and_disjoint(user_zip: Path, data_dirs) -> None:
    a = load(data_dir=str(user_zip), seed=1, validation_fraction=0.25)
    b = load(data_dir=str(user_zip), seed=1, validation_fraction=0.25)
    c = load(data_dir=str(user_zip), seed=2, validation_fraction=0.25)
    train, val = set(image_index(a.x_train).tolist()), set(image_index(a.x_val).tolist())
    assert not train & val
    assert len(train | val) == len(a.x_train) + len(a.x_val) == sum(i % 6 + 1 for i in range(62))
    assert len(val) == round(0.25 * len(train | val))
    np.testing.assert_array_equal(a.x_val, b.x_val)
    assert set(image_index(c.x_val).tolist()) != val
    np.testing.assert_array_equal(a.x_test, c.x_test)


def test_subsample_fraction(user_zip: Path, data_dirs) -> None:
    full = load(data_dir=str(user_zip), validation_fraction=0.2)
    part = load(data_dir=str(user_zip), validation_fraction=0.2, subsample_fraction=0.25)
    assert len(part.x_train) == round(len(full.x_train) * 0.25)
    assert len(part.x_val) == round(len(full.x_val) * 0.25)
    assert set(image_index(part.x_train).tolist()) <= set(image_index(full.x_train).tolist())
    assert len(part.x_test) == len(full.x_test)


def test_arguments_match_the_registry() -> None:
    spec = DATASETS["EmnistDataset"].args
    ds = EmnistDataset()
    assert ds.split == spec["split"].default == "byclass"
    assert ds.balance is spec["balance"].default is False
    with pytest.raises(ConfigError, match="byclass"):
        EmnistDataset(split="bytes")


def test_builder_mappings_match_the_official_files() -> None:
    folder = paths.SHARED_DATA_DIR / "emnist"
    if not (folder / "emnist-byclass-mapping.txt").is_file():
        pytest.skip(f"official EMNIST mapping files not found under {folder}")
    for split, size in [("byclass", 62), ("letters", 26), ("balanced", 47), ("bymerge", 47)]:
        rows = [
            line.split()
            for line in (folder / f"emnist-{split}-mapping.txt").read_text().split("\n")
        ]
        official = np.array([[int(v) for v in row] for row in rows if row])
        np.testing.assert_array_equal(official, official_mapping(split))
        labels, chars = parse_mapping(official, split)
        assert len(chars) == size and len(labels) == size
    letters = np.loadtxt(folder / "emnist-letters-mapping.txt", dtype=np.int64)
    assert "".join(parse_mapping(letters, "letters")[1]) == UPPER
