"""Hostile raw files, full and read-only disks and rotting caches, for the datasets (issue 10).

Every case ends in one of three ways: correct arrays, a cache rebuilt with a one-line warning, or
a one-line ``error:`` (exit 2). Never a traceback, a crash, wrong pixels, a stray file or a file
of the user's removed.
"""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import fill_disk, memory_capped, run_script
from text_recognizer import paths
from text_recognizer.datasets.base import seal_checksum
from text_recognizer.datasets.emnist import EmnistDataset
from text_recognizer.datasets.iam_lines import parse_form_xml
from text_recognizer.datasets.kaggle_names import KaggleNamesDataset, read_csv_rows
from text_recognizer.datasets.mnist import MnistDataset, read_idx
from text_recognizer.errors import DataError, StorageError
from text_recognizer.fileio import _host_tag

TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"


def idx_bytes(array: np.ndarray, magic: int, dims: tuple[int, ...] | None = None) -> bytes:
    shape = dims or array.shape
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_t10k(folder: Path, count: int = 200, noise: bool = False, shift: int = 0) -> None:
    """A tiny t10k pair; ``noise`` makes the images incompressible (a cache of ~count * 784 B)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(count)
    y = (np.arange(count) + shift) % 10
    x = rng.integers(0, 256, (count, 28, 28)) if noise else np.zeros((count, 28, 28))
    x[:, 4:24, 12] = 200
    (folder / TEST_IMAGES).write_bytes(gzip.compress(idx_bytes(x, 2051), mtime=0))
    (folder / TEST_LABELS).write_bytes(gzip.compress(idx_bytes(y, 2049), mtime=0))


def load_mnist(folder: Path) -> MnistDataset:
    return MnistDataset(data_dir=str(folder), test_set_only=True).load_or_generate_data()


def one_error_line(stderr: str) -> str:
    """The one ``error:`` line of a refused command, checked to be alone and traceback-free."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def read_only(folder: Path) -> None:
    """Remount the tmpfs at ``folder`` read-only (as root, chmod would not stop writes)."""
    result = subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot remount a tmpfs read-only: {result.stderr.decode().strip()}")


# ----- 7: a full disk while writing the cache -------------------------------------------------------


@pytest.mark.parametrize("leave", [0, 150_000, 600_000])
def test_disk_full_while_writing_cache_is_one_line_and_leaves_nothing(
    tmp_path: Path, small_disk, leave: int
) -> None:
    disk = small_disk("1m")
    raw = tmp_path / "raw"
    write_t10k(raw, count=1500, noise=True)  # a cache of ~1.2 MB: more than the disk holds
    (disk / "processed" / "mnist").mkdir(parents=True)
    fill_disk(disk, leave=leave)
    env = {"TEXT_RECOGNIZER_DATA_DIR": str(disk)}
    args = f'{{"data_dir": "{raw}", "test_set_only": true}}'
    proc = run_script("-m", "text_recognizer.datasets.mnist", args, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr  # was: tracebacks, then a segfault (139)
    line = one_error_line(proc.stderr)
    assert "cannot write" in line and "the disk is full" in line and "mnist_" in line
    assert sorted(p.name for p in (disk / "processed" / "mnist").iterdir()) == []
    (disk / ".filler").unlink()
    write_t10k(raw, count=300, noise=True)  # fits once space is freed
    again = run_script("-m", "text_recognizer.datasets.mnist", args, env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    cached = list((disk / "processed" / "mnist").iterdir())
    assert [p.suffix for p in cached] == [".h5"]


# ----- 8: a gzip bomb as an idx file -----------------------------------------------------------------


def gzip_bomb(header: bytes, gib: float) -> bytes:
    """A gzip file of concatenated members: ``header`` then ``gib`` GiB of zeros, in ~3 MB."""
    zeros = gzip.compress(b"\0" * (16 << 20), compresslevel=9, mtime=0)
    return gzip.compress(header, mtime=0) + zeros * int(gib * 64)


def test_gzip_bomb_idx_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    folder = tmp_path / "bomb"
    write_t10k(folder, count=10000)
    header = idx_bytes(np.zeros(0), 2051, dims=(10000, 28, 28))
    (folder / TEST_IMAGES).write_bytes(gzip_bomb(header, 3))  # 3 MB -> 3 GiB
    env = {"TEXT_RECOGNIZER_DATA_DIR": str(tmp_path / "data")}
    args = f'{{"data_dir": "{folder}", "test_set_only": true}}'
    proc = run_script(
        *memory_capped(1 << 30), "text_recognizer.datasets.mnist", args, env=env, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr)
    assert "more bytes after gunzip, expected 7840016" in line


@pytest.mark.parametrize(
    ("dims", "message"),
    [
        ((4_000_000, 28, 28), r"declares 4,000,000 items; at most 1,000,000"),
        ((900_000, 28, 28), r"more than a \d+-byte gzip file can hold"),
        ((2**32 - 1, 28, 28), r"declares 4,294,967,295 items"),
    ],
)
def test_idx_header_counts_are_bounded(tmp_path: Path, dims, message: str) -> None:
    path = tmp_path / TEST_IMAGES
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(100), 2051, dims=dims), mtime=0))
    with pytest.raises(DataError, match=message):
        read_idx(path, 2051)


def test_idx_trailing_and_missing_data(tmp_path: Path) -> None:
    path = tmp_path / TEST_LABELS
    path.write_bytes(gzip.compress(idx_bytes(np.arange(12) % 10, 2049, dims=(10,)), mtime=0))
    with pytest.raises(DataError, match="more bytes after gunzip"):
        read_idx(path, 2049)
    path.write_bytes(gzip.compress(idx_bytes(np.arange(5) % 10, 2049, dims=(10,)), mtime=0))
    with pytest.raises(DataError, match="13 bytes after gunzip, expected 18"):
        read_idx(path, 2049)
    path.write_bytes(b"")
    with pytest.raises(DataError, match="is not gzip"):
        read_idx(path, 2049)


def test_unreadable_idx_is_a_storage_error(tmp_path: Path, data_dirs) -> None:
    folder = tmp_path / "files"
    write_t10k(folder)
    (folder / TEST_IMAGES).unlink()
    (folder / TEST_IMAGES).mkdir()  # a folder where the file should be
    with pytest.raises(DataError, match="lacks t10k-images"):
        load_mnist(folder)
    with pytest.raises(StorageError, match="it is a folder, not a file"):
        read_idx(folder / TEST_IMAGES, 2051)


# ----- 13: bit rot in the cache ------------------------------------------------------------------------


def test_bit_rot_anywhere_in_the_cache_is_rebuilt_never_served(
    tmp_path: Path, data_dirs, capsys
) -> None:
    folder = tmp_path / "files"
    write_t10k(folder, count=300, noise=True)
    good = load_mnist(folder)
    path, blob = good.cache_path, good.cache_path.read_bytes()
    spots = sorted({*np.linspace(0, len(blob) - 1, 37).astype(int), 8, 12, 600})
    assert len(spots) == 40  # the checksum header, HDF5's superblock, metadata, chunks, the end
    served_wrong, rebuilt = [], 0
    for spot in spots:  # one flipped byte per case, from the header to the last byte
        damaged = bytearray(blob)
        damaged[spot] ^= 0x5A
        path.write_bytes(bytes(damaged))
        capsys.readouterr()
        again = load_mnist(folder)
        err = capsys.readouterr().err
        same = all(
            np.array_equal(getattr(good, k), getattr(again, k))
            for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
        )
        if not same or again.mapping != good.mapping:
            served_wrong.append(spot)
        warnings = [line for line in err.splitlines() if "rebuilding" in line]
        rebuilt += len(warnings) == 1 and warnings[0].startswith("warning: cache ")
        assert path.read_bytes() == blob  # rebuilt in place, identical
    assert served_wrong == []
    assert rebuilt == len(spots)  # every flip is seen: nothing reaches HDF5 unverified


def test_old_or_foreign_cache_is_rebuilt(tmp_path: Path, data_dirs, capsys) -> None:
    import h5py

    folder = tmp_path / "files"
    write_t10k(folder)
    good = load_mnist(folder)
    with h5py.File(good.cache_path, "w") as f:  # a plain HDF5 file (the format before checksums)
        f["x_trainval"] = np.zeros((3, 28, 28), np.uint8)
    again = load_mnist(folder)
    assert "has no checksum" in capsys.readouterr().err
    np.testing.assert_array_equal(again.x_test, good.x_test)


# ----- 19: a read-only processed folder ----------------------------------------------------------------


def test_read_only_processed_folder(tmp_path: Path, small_disk, monkeypatch) -> None:
    disk = small_disk("4m")
    monkeypatch.setattr(paths, "PROCESSED_DIR", disk / "processed")
    folder = tmp_path / "files"
    write_t10k(folder)
    built = load_mnist(folder)  # a cache made while writable
    read_only(disk)
    served = load_mnist(folder)  # is still served from the read-only folder
    np.testing.assert_array_equal(served.x_test, built.x_test)
    with pytest.raises(StorageError) as err:  # a new one cannot be written: refused before work
        MnistDataset(
            data_dir=str(folder), test_set_only=True, test_fraction=0.3
        ).load_or_generate_data()
    message = str(err.value)
    assert "\n" not in message and "read-only" in message and "TEXT_RECOGNIZER_DATA_DIR" in message


def test_read_only_processed_folder_exits_2(tmp_path: Path, small_disk) -> None:
    disk = small_disk("1m")
    (disk / "processed").mkdir()
    read_only(disk)
    folder = tmp_path / "files"
    write_t10k(folder)
    env = {"TEXT_RECOGNIZER_DATA_DIR": str(disk)}
    args = f'{{"data_dir": "{folder}", "test_set_only": true}}'
    proc = run_script("-m", "text_recognizer.datasets.mnist", args, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "the filesystem is read-only" in one_error_line(proc.stderr)


# ----- 21: a folder at the cache path, out-of-range labels ------------------------------------------


def test_cache_path_that_is_a_folder_is_refused_and_kept(tmp_path: Path, data_dirs) -> None:
    folder = tmp_path / "files"
    write_t10k(folder)
    ds = MnistDataset(data_dir=str(folder), test_set_only=True)
    ds.cache_path.mkdir(parents=True)
    (ds.cache_path / "notes.txt").write_text("mine")
    with pytest.raises(StorageError, match="is a folder; move it out of the way") as err:
        ds.load_or_generate_data()
    assert "\n" not in str(err.value)
    assert (ds.cache_path / "notes.txt").read_text() == "mine"


def test_cache_path_that_is_a_fifo_or_under_a_file_never_hangs(tmp_path: Path, data_dirs) -> None:
    folder = tmp_path / "files"
    write_t10k(folder)
    ds = MnistDataset(data_dir=str(folder), test_set_only=True)
    ds.cache_path.parent.mkdir(parents=True)
    os.mkfifo(ds.cache_path)  # open() would wait for a writer forever
    with pytest.raises(StorageError, match="is not a regular file"):
        ds.load_or_generate_data()
    ds.cache_path.unlink()
    ds.cache_path.parent.rmdir()
    ds.cache_path.parent.write_text("a file where the folder goes")
    with pytest.raises(StorageError, match=r"mnist is a file, not a folder"):
        ds.load_or_generate_data()


@pytest.mark.parametrize(
    ("key", "damage", "problem"),
    [
        ("y_test", lambda a: a + 10, "labels outside 0..9"),
        ("y_trainval", lambda a: a - 11, "labels outside 0..9"),
        ("y_test", lambda a: a[:-1], "images but"),
        ("x_test", lambda a: a[:, :20], "images of shape"),
        ("y_test", lambda a: a.astype(np.float32), "labels of type float32"),
    ],
)
def test_checksummed_cache_with_inconsistent_arrays_is_rebuilt(
    tmp_path: Path, data_dirs, capsys, key: str, damage, problem: str
) -> None:
    folder = tmp_path / "files"
    write_t10k(folder)
    good = load_mnist(folder)
    arrays, mapping = good.process()
    arrays[key] = damage(arrays[key])
    good._write_cache(good.cache_path, arrays, mapping, good.raw_fingerprint())
    again = load_mnist(folder)
    assert problem in capsys.readouterr().err
    np.testing.assert_array_equal(again.y_test, good.y_test)
    assert again.y_train.max() <= 9 and again.y_train.min() >= 0


def declare_in_cache(path: Path, declared: dict[str, tuple[tuple[int, ...], str]]) -> None:
    """Replace cached arrays by datasets that only declare a shape (chunks never written read as
    zeros: the file stays small), then re-seal the checksum, so only a shape check can see them."""
    import h5py

    with h5py.File(path, "r+") as f:
        for key, (shape, dtype) in declared.items():
            del f[key]
            chunks = (min(64, shape[0]), *shape[1:])
            f.create_dataset(key, shape=shape, dtype=dtype, chunks=chunks, compression="lzf")
    with open(path, "r+b") as raw:
        seal_checksum(raw)


@pytest.mark.parametrize(
    ("declared", "problem"),
    [
        ({"x_test": ((4_000_000, 28, 28), "u1")}, r"has 4000000 test images but \d+ labels"),
        (
            {"x_test": ((4_000_000, 28, 28), "u1"), "y_test": ((4_000_000,), "i8")},
            r"declares 3,1\d\d,\d{3},\d{3} bytes of arrays, more than its [\d,]+ bytes can hold",
        ),
        ({"x_test": ((50, 28, 4_000_000), "u1")}, r"has test images of shape \(50, 28, 4000000\)"),
    ],
)
def test_cache_declaring_huge_arrays_is_rebuilt_before_reading_them(
    tmp_path: Path, data_dirs, declared, problem: str
) -> None:
    folder = tmp_path / "files"
    write_t10k(folder)
    path = load_mnist(folder).cache_path
    declare_in_cache(path, declared)  # a valid checksum, ~30 KB, declaring 3.1 GB
    assert path.stat().st_size < 200_000
    env = {"TEXT_RECOGNIZER_DATA_DIR": str(tmp_path / "data")}
    args = f'{{"data_dir": "{folder}", "test_set_only": true}}'
    proc = run_script(
        *memory_capped(1 << 30), "text_recognizer.datasets.mnist", args, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: cache")]
    assert len(warnings) == 1, proc.stderr  # was: "is unreadable (MemoryError ...)", or 3.5 GB
    assert re.search(problem + "; rebuilding$", warnings[0]), warnings[0]


def test_cache_of_other_image_sizes_than_the_arguments_is_rebuilt(
    tmp_path: Path, data_dirs, capsys
) -> None:
    folder = kaggle_folder(tmp_path, [f"VALIDATION_{i:04d}.png,NAME" for i in range(1, 9)])
    good = load_names(folder)
    arrays, mapping = good.process()
    for key in ("x_trainval", "x_test"):  # consistent with each other, not with 64 x 256
        arrays[key] = arrays[key][:, :32, :128]
    good._write_cache(good.cache_path, arrays, mapping, good.raw_fingerprint())
    again = load_names(folder)
    assert "has trainval images of shape (32, 128), not (64, 256); rebuilding" in (
        capsys.readouterr().err
    )
    assert again.input_shape == (64, 256)  # was: served at 32 x 128
    arrays["x_trainval"], arrays["x_test"] = good.process()[0]["x_trainval"], good.x_test
    arrays["trainval_is_validation"] = np.zeros((len(arrays["x_trainval"]), 2), bool)
    good._write_cache(good.cache_path, arrays, mapping, good.raw_fingerprint())
    load_names(folder)
    assert "has trainval_is_validation of shape (6, 2) and type bool" in capsys.readouterr().err


# ----- 28: temp files of writers killed mid-write ----------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temp_files_are_removed_before_writing(tmp_path: Path, data_dirs) -> None:
    folder = tmp_path / "files"
    write_t10k(folder)
    ds = MnistDataset(data_dir=str(folder), test_set_only=True)
    processed = ds.cache_path.parent
    processed.mkdir(parents=True)
    dead = processed / f".{ds.cache_path.name}.{_host_tag()}-{dead_pid()}.k1ll3d.tmp"
    live = processed / f".{ds.cache_path.name}.{_host_tag()}-{os.getpid()}.wr1t1n.tmp"
    mine = processed / "notes.tmp"
    for path in (dead, live, mine):
        path.write_bytes(b"half a cache")
    ds.load_or_generate_data()
    assert not dead.exists()
    assert live.exists() and mine.exists()  # a live writer's and a user's file stay
    assert ds.cache_path.is_file()


# ----- 29: raw files changed after the cache was built --------------------------------------------


def test_cache_follows_changes_to_the_raw_files(tmp_path: Path, data_dirs, capsys) -> None:
    folder = tmp_path / "files"
    write_t10k(folder, count=200)
    first = load_mnist(folder)
    write_t10k(folder, count=200, shift=3)  # every label rewritten, same sizes
    os.utime(folder / TEST_LABELS, ns=(1, 1))
    second = load_mnist(folder)
    assert "other raw files" in capsys.readouterr().err
    fresh, _ = MnistDataset(data_dir=str(folder), test_set_only=True).process()
    np.testing.assert_array_equal(second.y_test, fresh["y_test"])
    assert not np.array_equal(second.y_test, first.y_test)
    for name in (TEST_IMAGES, TEST_LABELS):  # raw files gone: the cache is all there is
        (folder / name).unlink()
    ds = MnistDataset(data_dir=str(folder), test_set_only=True)
    ds.prepare_raw_data = lambda: pytest.fail("the cache should be served")  # type: ignore[method-assign]
    np.testing.assert_array_equal(ds.load_or_generate_data().y_test, second.y_test)


# ----- 22, 23: hostile Kaggle CSVs --------------------------------------------------------------------


def kaggle_folder(tmp_path: Path, rows: list[str], count: int = 8) -> Path:
    """validation_v2/ with ``count`` small name images and a CSV of ``rows`` after the header."""
    from PIL import Image

    folder = tmp_path / "names"
    images = folder / "validation_v2"
    images.mkdir(parents=True)
    for i in range(1, count + 1):
        image = Image.new("L", (120, 30), 255)
        image.paste(0, (5 + i, 8, 40 + 3 * i, 20))
        image.save(images / f"VALIDATION_{i:04d}.png")
    csv = "\r\n".join(["FILENAME,IDENTITY", *rows]) + "\r\n"
    (folder / "written_name_validation_v2.csv").write_text(csv, encoding="utf-8")
    return folder


def load_names(folder: Path) -> KaggleNamesDataset:
    ds = KaggleNamesDataset(data_dir=str(folder), split_from_available=0.25, max_length=20)
    return ds.load_or_generate_data()


def test_kaggle_huge_field_is_one_line(tmp_path: Path, data_dirs) -> None:
    rows = [f"VALIDATION_{i:04d}.png,NAME" for i in range(1, 5)]
    rows.insert(2, "VALIDATION_0005.png," + "A" * 200_000)
    with pytest.raises(DataError, match=r"csv: line 4: not a readable CSV row") as err:
        load_names(kaggle_folder(tmp_path, rows))
    assert "\n" not in str(err.value) and "field larger than field limit" in str(err.value)


def test_kaggle_unterminated_quote_is_refused(tmp_path: Path, data_dirs) -> None:
    rows = [f"VALIDATION_{i:04d}.png,NAME" for i in range(1, 7)]
    rows[2] = 'VALIDATION_0003.png,"JOHN'
    with pytest.raises(DataError, match=r"line 4: a quoted field runs over lines 4-7") as err:
        load_names(kaggle_folder(tmp_path, rows))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("end", ["", "\r\n", "\n"])
def test_kaggle_unterminated_quote_on_the_last_line_is_refused(end: str) -> None:
    data = f'FILENAME,IDENTITY\nA.jpg,JOHN\nB.jpg,"MARY{end}'.encode()
    with pytest.raises(DataError) as err:  # was: [..., ('B.jpg', 'MARY')] without a newline
        read_csv_rows(data, "x.csv")
    assert str(err.value) == (
        "x.csv: line 3: a quoted field runs to the end of the file (an unterminated quote?); "
        "each row is FILENAME,IDENTITY on one line"
    )
    with pytest.raises(DataError, match=r"^x\.csv: line 3: not a readable CSV row \(',' exp"):
        read_csv_rows(b'FILENAME,IDENTITY\nA.jpg,JOHN\nB.jpg,"MA"RY\n', "x.csv")  # was: MARY


def test_kaggle_unterminated_quote_at_the_end_of_a_csv_refuses_it(
    tmp_path: Path, data_dirs
) -> None:
    rows = [f"VALIDATION_{i:04d}.png,NAME" for i in range(1, 8)] + ['VALIDATION_0008.png,"NAME']
    folder = kaggle_folder(tmp_path, rows)
    csv = folder / "written_name_validation_v2.csv"
    csv.write_bytes(csv.read_bytes().removesuffix(b"\r\n"))  # no newline after the last row
    with pytest.raises(DataError, match=r"csv: line 9: a quoted field runs to the end of the file"):
        load_names(folder)  # was: 8 images, the last labelled NAME


def test_kaggle_duplicates_conflicts_and_empty_filenames_are_counted(
    tmp_path: Path, data_dirs, capsys
) -> None:
    rows = [f"VALIDATION_{i:04d}.png,NAME {chr(64 + i)}" for i in range(1, 9)]
    rows += [
        "VALIDATION_0001.png,NAME A",  # the same row twice: kept once
        "VALIDATION_0002.png,OTHER",  # another label for an image: neither is trusted
        ",ORPHAN",
        "  ,SPACES",
        "",  # a blank line is no row
    ]
    ds = load_names(kaggle_folder(tmp_path, rows))
    assert ds.skipped == {"duplicate_row": 1, "conflicting_labels": 2, "empty_filename": 2}
    assert len(ds.x_train) + len(ds.x_val) + len(ds.x_test) == 7
    texts = [bytes(r).hex() for r in np.concatenate([ds.x_train, ds.x_val, ds.x_test])]
    assert len(set(texts)) == 7  # no image twice, so none in both train and test
    err = capsys.readouterr().err
    assert "conflicting_labels" in err and "empty_filename" in err


def test_kaggle_decompression_bomb_image_is_skipped_undecoded(
    tmp_path: Path, data_dirs, monkeypatch
) -> None:
    import struct
    import zlib

    from PIL import ImageFile

    rows = [f"VALIDATION_{i:04d}.png,NAME" for i in range(1, 6)]
    folder = kaggle_folder(tmp_path, rows, count=5)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    # A 90 KB PNG of 10000 x 9000 pixels: under PIL's own refusal, 90 MB once decoded.
    header = struct.pack(">IIBBBBB", 10000, 9000, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\0" * (10001 * 9000), 9)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels)
    (folder / "validation_v2" / "VALIDATION_0003.png").write_bytes(png + chunk(b"IEND", b""))
    decoded: list[tuple[int, int]] = []
    original = ImageFile.ImageFile.load

    def load(self: ImageFile.ImageFile) -> object:
        decoded.append(self.size)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    ds = load_names(folder)
    assert ds.skipped == {"undecodable_image": 1}
    assert "VALIDATION_0003.png (ImageError)" in ds.skipped_examples["undecodable_image"][0]
    assert (10000, 9000) not in decoded  # refused on its header, never decoded


def test_kaggle_zip_bomb_member_is_refused(tmp_path: Path, data_dirs) -> None:
    folder = tmp_path / "zipped"
    folder.mkdir()
    with zipfile.ZipFile(folder / "names.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("written_name_validation_v2.csv", b"FILENAME,IDENTITY\r\n" + b" " * (300 << 20))
    with pytest.raises(DataError, match=r"is 314,572,\d+ bytes, over 268,435,456"):
        load_names(folder)


# ----- other hostile raw files ---------------------------------------------------------------------


def test_iam_xml_with_garbage_coordinates_is_one_line() -> None:
    xml = (
        b'<form width="2479"><handwritten-part><line id="a01-000u-00" threshold="x1">'
        b'<word text="A"><cmp x="1" y="2" width="3" height="4"/></word></line>'
        b"</handwritten-part></form>"
    )
    with pytest.raises(DataError, match=r"a01-000u\.xml: a line has a non-integer"):
        parse_form_xml(xml, "a01-000u.xml")
    bad = xml.replace(b'threshold="x1"', b"").replace(b'x="1"', b'x="' + b"9" * 5000 + b'"')
    with pytest.raises(DataError, match="non-integer"):
        parse_form_xml(bad, "a01-000u.xml")
    width, lines = parse_form_xml(xml.replace(b"x1", b"7").replace(b"2479", b"\xc2\xb2"), "f")
    assert width is None and lines[0].box == (1, 2, 3, 4)  # a superscript width is no width


def test_emnist_archive_copy_is_cleaned_and_disk_full_is_one_line(
    tmp_path: Path, small_disk, monkeypatch
) -> None:
    from test_emnist import write_archive

    (tmp_path / "emnist").mkdir()
    archive = write_archive(tmp_path / "emnist", splits=("byclass",))
    disk = small_disk("1m")
    monkeypatch.setattr(paths, "PROCESSED_DIR", disk / "processed")
    processed = disk / "processed" / "emnist"
    processed.mkdir(parents=True)
    stale = processed / f".emnist-byclass.mat.{_host_tag()}-{dead_pid()}.x.tmp"
    stale.write_bytes(b"\0" * 20_000)  # a copy left by a killed process
    fill_disk(disk, leave=1000)
    with pytest.raises(
        StorageError, match=r"a temporary copy of emnist-byclass\.mat.*disk is full"
    ) as err:
        EmnistDataset(data_dir=str(archive.parent)).load_or_generate_data()
    assert "\n" not in str(err.value)
    assert not stale.exists() and not [p for p in processed.iterdir()]
    (disk / ".filler").unlink()
    ds = EmnistDataset(data_dir=str(archive.parent)).load_or_generate_data()
    assert [p.name for p in processed.iterdir()] == [ds.cache_path.name]


def test_mnist_module_never_tracebacks_on_a_damaged_idx(tmp_path: Path) -> None:
    folder = tmp_path / "files"
    write_t10k(folder)
    data = (folder / TEST_LABELS).read_bytes()
    (folder / TEST_LABELS).write_bytes(data[:-6] + bytes([data[-6] ^ 1]) + data[-5:])  # CRC
    env = {"TEXT_RECOGNIZER_DATA_DIR": str(tmp_path / "data")}
    args = f'{{"data_dir": "{folder}", "test_set_only": true}}'
    proc = run_script("-m", "text_recognizer.datasets.mnist", args, env=env, timeout=60)
    assert proc.returncode == 2
    assert "damaged gzip file" in one_error_line(proc.stderr)


# ----- a moved data folder: metadata.toml is read from the checkout, downloads go to the folder ----


class _Fetch(Exception):
    """Raised instead of downloading: which file, from where, into which folder."""


def _no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    from text_recognizer.datasets import download

    def fetch(remote, dest_dir, **_: object) -> Path:
        raise _Fetch(remote.filename, remote.url, Path(dest_dir))

    monkeypatch.setattr(download, "_download_unlocked", fetch)


def _emnist_lines():
    from text_recognizer.datasets.emnist_lines import EmnistLinesDataset

    return EmnistLinesDataset()


def _synthetic_brown():
    from text_recognizer.datasets.synthetic_lines import SyntheticLinesDataset

    return SyntheticLinesDataset(text_source="brown")


def _iam_lines():
    from text_recognizer.datasets.iam_lines import IamLinesDataset

    return IamLinesDataset()


@pytest.mark.parametrize(
    ("make", "raw_name", "first_file"),
    [
        (_emnist_lines, "brown", "brown.zip"),
        (_synthetic_brown, "brown", "brown.zip"),
        (_iam_lines, "iam", "iamdb.zip"),
        (EmnistDataset, "emnist", "matlab.zip"),
        (MnistDataset, "mnist", None),
    ],
)
def test_moved_data_folder_reads_the_tracked_metadata_and_downloads_into_it(
    data_dirs, monkeypatch, make, raw_name: str, first_file: str | None
) -> None:
    """TEXT_RECOGNIZER_DATA_DIR elsewhere (its raw/ empty): every download said 'metadata file not
    found: $DATA_DIR/raw/<name>/metadata.toml', though the tracked one is intact in data/raw/."""
    from conftest import PROJECT_ROOT

    raw, _ = data_dirs
    _no_download(monkeypatch)
    with pytest.raises(_Fetch) as fetched:
        make().prepare_raw_data()
    filename, url, dest = fetched.value.args
    assert dest == raw / raw_name  # the download still goes to the moved raw folder
    assert url.startswith("https://") and (first_file is None or filename == first_file)
    assert not (raw / raw_name / "metadata.toml").exists()
    tracked = PROJECT_ROOT / "data" / "raw" / raw_name / "metadata.toml"
    assert tracked.is_file() and paths.metadata_path(raw_name) == tracked


def test_a_metadata_toml_in_the_raw_folder_is_read_instead(data_dirs) -> None:
    raw, _ = data_dirs
    (raw / "brown").mkdir(parents=True)
    (raw / "brown" / "metadata.toml").mkdir()  # anything there is reported, never skipped
    assert paths.metadata_path("brown") == raw / "brown" / "metadata.toml"
    with pytest.raises(DataError, match=r"brown/metadata.toml is not a regular file"):
        _emnist_lines().prepare_raw_data()


# ----- IAM's lines.txt and split lists: bounded, FIFO-safe ---------------------------------------------


def iam_official(folder: Path) -> Path:
    """An official layout: ascii/lines.txt with one line, lines/, and the three split lists."""
    (folder / "ascii").mkdir(parents=True)
    (folder / "lines" / "a01" / "a01-000u").mkdir(parents=True)
    (folder / "ascii" / "lines.txt").write_text("a01-000u-00 ok 154 19 408 746 1661 89 A|MOVE\n")
    for name, form in (("train", "a01-000u"), ("validation", "c04-156"), ("test", "m01-049")):
        (folder / f"{name}.uttlist").write_text(form + "\n")
    return folder


@pytest.mark.parametrize("huge", ["ascii/lines.txt", "train.uttlist"])
def test_iam_huge_lines_txt_or_split_list_is_one_line_in_bounded_memory(
    tmp_path: Path, huge: str
) -> None:
    folder = iam_official(tmp_path / "iam")
    os.truncate(folder / huge, 3 << 30)  # sparse: costs no disk (was: MemoryError traceback)
    env = {"TEXT_RECOGNIZER_DATA_DIR": str(tmp_path / "data")}
    args = f'{{"data_dir": "{folder}"}}'
    proc = run_script(
        *memory_capped(1 << 30), "text_recognizer.datasets.iam_lines", args, env=env, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr)
    assert str(folder / huge) in line and "over the size limit" in line


@pytest.mark.timeout(30)
def test_iam_lines_txt_and_split_list_fifos_never_hang(tmp_path: Path) -> None:
    from text_recognizer.datasets import iam_lines

    folder = iam_official(tmp_path / "iam")
    for name in ("ascii/lines.txt", "validation.uttlist"):
        (folder / name).unlink()
        os.mkfifo(folder / name)  # open() would wait for a writer forever
    with pytest.raises(DataError, match=r"lines.txt is not a regular file"):
        iam_lines.read_lines_txt(folder / "ascii" / "lines.txt")
    with pytest.raises(DataError, match=r"validation.uttlist is not a regular file"):
        iam_lines.read_split_lists(folder)


def test_iam_lines_txt_keeps_reading_stray_bytes_as_replacement_characters(tmp_path: Path) -> None:
    from text_recognizer.datasets import iam_lines

    path = tmp_path / "lines.txt"
    path.write_bytes(b"a01-000u-00 ok 154 19 408 746 1661 89 A|MOV\xe9\n")
    assert iam_lines.read_lines_txt(path).endswith("A|MOV\ufffd\n")


# ----- ~/.kaggle/kaggle.json and the .extracted / .verified markers ----------------------------------


def _kaggle_json(folder: Path, kind: str) -> Path:
    path = folder / "kaggle.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "huge":
        path.write_text('{"username": "ada", "key": "s3cret"}')
        os.truncate(path, 100 << 20)  # sparse
    elif kind == "nested":
        path.write_text("[" * 20_000)  # json.loads: RecursionError, not ValueError
    else:
        path.write_bytes(b'{"username": "ad\xe9", "key": "x"}')
    return path


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("fifo", "is not a regular file"),
        ("folder", "is not a regular file"),
        ("huge", "is over the size limit"),
        ("nested", "is not a Kaggle API token"),
        ("latin1", "is not UTF-8 text"),
    ],
)
def test_bad_kaggle_json_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, problem: str
) -> None:
    from text_recognizer.datasets.kaggle_names import kaggle_credentials

    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    path = _kaggle_json(tmp_path, kind)
    with pytest.raises(DataError) as err:
        kaggle_credentials()
    message = str(err.value)
    assert str(path) in message and problem in message and "\n" not in message
    assert "s3cret" not in message


def _bad_marker(path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "nested":
        path.write_text("[" * 20_000)
    else:
        path.write_text('{"top_level": []}')
        os.truncate(path, 100 << 20)  # sparse, over the 64 MiB marker limit


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["fifo", "nested", "huge"])
@pytest.mark.parametrize("sidecar", ["extracted", "verified"])
def test_bad_extracted_or_verified_marker_counts_as_absent(
    tmp_path: Path, kind: str, sidecar: str
) -> None:
    import hashlib

    from text_recognizer.datasets.download import ensure_downloaded

    dest = tmp_path / "raw"
    dest.mkdir()
    archive = dest / "files.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("files/a.txt", "hello")
    meta = tmp_path / "metadata.toml"
    meta.write_text(
        'url = "http://127.0.0.1:9/files.zip"\nfilename = "files.zip"\n'
        f'sha256 = "{hashlib.sha256(archive.read_bytes()).hexdigest()}"\nextract = true\n'
    )
    _bad_marker(dest / f".files.zip.{sidecar}", kind)
    assert ensure_downloaded(meta, dest, progress=False) == [archive]  # never fetched: verified
    assert (dest / "files" / "a.txt").read_text() == "hello"
    assert (dest / ".files.zip.extracted").is_file()
