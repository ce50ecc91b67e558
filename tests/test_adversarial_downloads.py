"""Hostile servers, archives and metadata against downloads and extraction (issue 10).

Every case asserts what the user sees (one line naming the file and what is allowed, the exit code
of the command) and what is left on disk: nothing outside the dataset folder, no user file deleted,
nothing past a declared size, every wait bounded.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_fixtures import HttpTestServer, bypass_proxies

from conftest import fill_disk, run_script
from text_recognizer.datasets import download as dl
from text_recognizer.datasets import extract
from text_recognizer.datasets.download import (
    DownloadError,
    RemoteFile,
    UnsafeArchiveError,
    download_file,
    ensure_downloaded,
    extract_archive,
    load_metadata,
)
from text_recognizer.errors import DataError, StorageError, UserError

PAYLOAD = bytes(range(256)) * 18  # 4.5 KiB


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    assert isinstance(exc.value, UserError), f"not a user error: {exc.value!r}"
    message = str(exc.value)
    assert "\n" not in message and message.strip() == message and message
    return message


def tree(folder: Path) -> dict[str, bytes | str]:
    """Every entry under ``folder`` (links not followed): file bytes, 'dir' or 'link -> x'."""
    out: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_symlink():
            out[rel] = f"link -> {os.readlink(path)}"
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = path.read_bytes()
    return out


@pytest.fixture(autouse=True)
def _no_proxy_no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    bypass_proxies(monkeypatch)
    monkeypatch.setattr(dl, "_sleep", lambda s: None)


@pytest.fixture
def server() -> Iterator[HttpTestServer]:
    with HttpTestServer() as srv:
        yield srv


@pytest.fixture
def box(tmp_path: Path) -> tuple[Path, Path]:
    """(outside, raw): a folder with a sentinel file beside the dataset folder."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_bytes(b"user data")
    raw = tmp_path / "data" / "raw" / "ds"
    raw.mkdir(parents=True)
    return outside, raw


# --------------------------------------------------------------------------------------------------
# archive builders


def make_zip(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (0o120777 << 16) & 0xFFFF0000
            zf.writestr(info, target)
    return path


def entry(name: str, data: bytes | None = None, kind: bytes = tarfile.REGTYPE, target: str = ""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    if data is not None:
        info.size = len(data)
    return info, (io.BytesIO(data) if data is not None else None)


def make_tar(path: Path, members: list) -> Path:
    mode = "w:gz" if path.name.endswith(("gz", ".tgz")) else "w"
    with tarfile.open(path, mode, format=tarfile.GNU_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, data)
    return path


def metadata_for(folder: Path, entries: list[tuple[str, bytes, str]], extra: str = "") -> Path:
    text = "".join(
        f'[[files]]\nurl = "{url}"\nfilename = "{name}"\nsha256 = "{sha(data)}"\nextract = true\n'
        + extra
        for name, data, url in entries
    )
    path = folder / "metadata.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------
# defect 1: two checksum-valid archives, each harmless alone, must not write anywhere together


def escape_archives(tmp_path: Path, raw: Path, outside: Path) -> tuple[bytes, bytes]:
    depth = len(raw.resolve().parts)  # enough '..' to reach '/' from the dataset folder
    dots = "/".join([".."] * (5 + depth))
    a = make_tar(
        tmp_path / "a.tar",
        [
            entry("d/d/d/d/d/", kind=tarfile.DIRTYPE),
            entry("root", kind=tarfile.SYMTYPE, target=f"d/d/d/d/d/{dots}"),
        ],
    )
    escape = "/".join(outside.resolve().parts[1:]) + "/ESCAPE.txt"
    b = make_tar(
        tmp_path / "b.tar",
        [entry("d", kind=tarfile.SYMTYPE, target="."), entry(f"root/{escape}", b"escaped")],
    )
    return a.read_bytes(), b.read_bytes()


def test_two_archives_cannot_write_outside(
    server: HttpTestServer, tmp_path: Path, box: tuple[Path, Path]
) -> None:
    outside, raw = box
    a, b = escape_archives(tmp_path, raw, outside)
    meta = metadata_for(
        raw, [("a.tar", a, server.add("/a.tar", a)), ("b.tar", b, server.add("/b.tar", b))]
    )
    with pytest.raises(UnsafeArchiveError) as exc:
        ensure_downloaded(meta, raw, progress=False)
    message = one_line(exc)
    assert "a.tar" in message and "'root' is a symbolic link" in message
    assert "only plain files and folders" in message
    assert tree(outside) == {"keep.txt": b"user data"}
    assert not any(p.is_symlink() for p in raw.rglob("*"))
    assert sorted(p.name for p in raw.iterdir() if not p.name.startswith(".")) == [
        "a.tar",
        "b.tar",
        "metadata.toml",
    ]


def test_two_archive_escape_through_the_command_exits_2(
    server: HttpTestServer, tmp_path: Path, box: tuple[Path, Path]
) -> None:
    outside, _ = box
    data = tmp_path / "cli-data"
    raw = data / "raw" / "emnist"
    raw.mkdir(parents=True)
    a, b = escape_archives(tmp_path, raw, outside)
    metadata_for(
        raw, [("a.tar", a, server.add("/a.tar", a)), ("b.tar", b, server.add("/b.tar", b))]
    )
    result = run_script(
        "-m",
        "text_recognizer.datasets.emnist",
        env={"TEXT_RECOGNIZER_DATA_DIR": str(data)},
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
    assert len(lines) == 1 and "symbolic link" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert tree(outside) == {"keep.txt": b"user data"}


def test_existing_link_in_the_folder_is_never_followed(
    tmp_path: Path, box: tuple[Path, Path]
) -> None:
    outside, raw = box
    (raw / "root").symlink_to(outside)  # a live link left by an older version (or a user)
    (raw / "sub").mkdir()
    (raw / "sub" / "deep").symlink_to(outside)
    for name in ("root/ESCAPE.txt", "sub/deep/ESCAPE.txt", "root"):
        archive = make_zip(tmp_path / "b.zip", {name: b"escaped"})
        with pytest.raises(UnsafeArchiveError) as exc:
            extract_archive(archive, raw)
        assert "symbolic link there" in one_line(exc) and "b.zip" in one_line(exc)
        assert tree(outside) == {"keep.txt": b"user data"}
    assert os.readlink(raw / "root") == str(outside)  # the user's link is not deleted either
    assert not list(raw.glob(".*extracting"))


# --------------------------------------------------------------------------------------------------
# defect 4: never delete user data while extracting


def user_folder(raw: Path) -> dict[str, bytes | str]:
    (raw / "matlab").mkdir()
    for i in range(3):
        (raw / "matlab" / f"mine{i}.txt").write_bytes(b"user %d" % i)
    (raw / "notes").write_bytes(b"my notes")
    return tree(raw)


@pytest.mark.parametrize(
    "files",
    [{"matlab": b"a file named like the folder"}, {"notes/x.txt": b"a folder over a file"}],
    ids=["file over folder", "folder over file"],
)
@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_member_never_replaces_a_user_folder_or_file(
    tmp_path: Path, box: tuple[Path, Path], files: dict[str, bytes], kind: str
) -> None:
    _, raw = box
    before = user_folder(raw)
    if kind == "zip":
        archive = make_zip(tmp_path / "m.zip", {"ok.txt": b"ok", **files})
    else:
        archive = make_tar(
            tmp_path / "m.tar.gz",
            [entry("ok.txt", b"ok"), *(entry(n, d) for n, d in files.items())],
        )
    with pytest.raises(UnsafeArchiveError) as exc:
        extract_archive(archive, raw)
    message = one_line(exc)
    assert archive.name in message and "nothing of yours is deleted" in message
    assert tree(raw) == before  # nothing deleted, nothing half-merged


def test_files_still_merge_and_replace_files(box: tuple[Path, Path]) -> None:
    _, raw = box
    before = user_folder(raw)
    extract_archive(make_zip(raw / "a.zip", {"matlab/new.txt": b"n", "notes2": b"x"}), raw)
    extract_archive(make_zip(raw / "b.zip", {"notes2": b"y"}), raw)  # a.zip's file: replaced
    after = tree(raw)
    assert {k: v for k, v in after.items() if k in before} == before
    assert after["matlab/new.txt"] == b"n" and after["notes2"] == b"y"


@pytest.mark.parametrize("name", ["README.txt", "matlab/mine0.txt"])
@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_member_never_replaces_a_user_file_of_the_same_name(
    box: tuple[Path, Path], name: str, kind: str
) -> None:
    _, raw = box
    user_folder(raw)
    (raw / "README.txt").write_bytes(b"my own notes")
    files = {"ok.txt": b"ok", name: b"from the archive"}
    if kind == "zip":
        archive = make_zip(raw / "m.zip", files)
    else:
        archive = make_tar(raw / "m.tar.gz", [entry(n, d) for n, d in files.items()])
    before = tree(raw)
    with pytest.raises(UnsafeArchiveError) as exc:
        extract_archive(archive, raw)
    message = one_line(exc)
    assert str(raw / name) in message and "nothing of yours was changed" in message
    assert "move it away" in message
    assert tree(raw) == before  # not even ok.txt or a marker: refused before anything is written


def test_files_unpacked_before_are_replaced_on_re_extraction(box: tuple[Path, Path]) -> None:
    _, raw = box
    extract_archive(make_zip(raw / "a.zip", {"README.txt": b"v1", "d/x.txt": b"v1"}), raw)
    make_zip(raw / "a.zip", {"README.txt": b"v2", "d/x.txt": b"v2"})  # the archive changed
    extract_archive(raw / "a.zip", raw)
    extract_archive(make_zip(raw / "b.zip", {"README.txt": b"b", "d/y.txt": b"b"}), raw)
    assert (raw / "README.txt").read_bytes() == b"b" and (raw / "d" / "x.txt").read_bytes() == b"v2"
    assert not list(raw.glob(".*extracting"))


def test_member_cannot_pose_as_an_extraction_marker(box: tuple[Path, Path]) -> None:
    _, raw = box
    (raw / "notes").write_bytes(b"my notes")
    marker = b'{"top_level": ["notes"]}'
    archive = make_zip(raw / "m.zip", {".other.zip.extracted": marker, "ok.txt": b"ok"})
    with pytest.raises(UnsafeArchiveError) as exc:
        extract_archive(archive, raw)
    assert "'.other.zip.extracted'" in one_line(exc)
    extract_archive(make_zip(raw / "n.zip", {"ok.txt": b"ok"}), raw)
    with pytest.raises(UnsafeArchiveError):
        extract_archive(make_zip(raw / "o.zip", {"notes": b"replaced"}), raw)
    assert (raw / "notes").read_bytes() == b"my notes"


def test_user_file_refused_through_ensure_downloaded(
    server: HttpTestServer, box: tuple[Path, Path]
) -> None:
    _, raw = box
    data = make_zip(raw.parent / "src.zip", {"README.txt": b"archive", "x.txt": b"x"}).read_bytes()
    meta = metadata_for(raw, [("a.zip", data, server.add("/a.zip", data))])
    (raw / "README.txt").write_bytes(b"my own notes")
    with pytest.raises(UnsafeArchiveError) as exc:
        ensure_downloaded(meta, raw, progress=False)
    assert "README.txt" in one_line(exc) and "nothing of yours was changed" in one_line(exc)
    assert (raw / "README.txt").read_bytes() == b"my own notes" and not (raw / "x.txt").exists()
    (raw / "README.txt").rename(raw.parent / "README.mine")  # moved away: extraction proceeds
    ensure_downloaded(meta, raw, progress=False)
    ensure_downloaded(meta, raw, progress=False)
    (raw / "a.zip").touch()  # marker stale: extracted again over its own files
    ensure_downloaded(meta, raw, progress=False)
    assert (raw / "README.txt").read_bytes() == b"archive"


@pytest.fixture
def few_descriptors() -> Iterator[int]:
    """Lower the open-file limit to what is open now plus a margin, as a small `ulimit -n` does."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    margin = len(os.listdir("/proc/self/fd")) + 64 if os.path.isdir("/proc/self/fd") else 256
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, margin), hard))
    try:
        yield min(soft, margin)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_deep_tree_re_extracts_with_few_descriptors(
    box: tuple[Path, Path], few_descriptors: int, kind: str
) -> None:
    _, raw = box
    name = "/".join(["d"] * 510) + "/f"  # 1,021 bytes: about the deepest name allowed
    # branches off the chain, visited after its deeper part: handles reopened from the root
    branches = ["d/" * k + "e/g" for k in (1, 15, 16, 17, 40, 300)]
    files: dict[str, bytes] = {}

    def build(version: bytes) -> Path:
        files.update(dict.fromkeys([name, *branches], version))
        if kind == "zip":
            return make_zip(raw / "deep.zip", files)
        return make_tar(raw / "deep.tar", [entry(n, d) for n, d in files.items()])

    extract_archive(build(b"v1"), raw)
    extract_archive(build(b"v2"), raw)  # a merge into the existing 510-level tree
    for member in (name, *branches):
        assert raw.joinpath(*member.split("/")).read_bytes() == b"v2", member
    assert not list(raw.glob(".*extracting"))


# --------------------------------------------------------------------------------------------------
# defect 9: size and count limits


def test_zip_bomb_is_refused_before_writing(tmp_path: Path, box: tuple[Path, Path]) -> None:
    _, raw = box
    archive = make_zip(tmp_path / "bomb.zip", {"big.bin": bytes(40 << 20)})
    assert archive.stat().st_size < 100_000
    with pytest.raises(UnsafeArchiveError) as exc:
        extract_archive(archive, raw)
    message = one_line(exc)
    assert "bomb.zip" in message and "unpacks to more than 16.0 MiB" in message
    assert "max_extracted_size" in message
    assert tree(raw) == {}


def test_tar_gz_bomb_is_refused_before_unpacking(tmp_path: Path, box: tuple[Path, Path]) -> None:
    _, raw = box
    members = [entry(f"f{i}.bin", bytes(6 << 20)) for i in range(4)]
    archive = make_tar(tmp_path / "bomb.tar.gz", members)
    with pytest.raises(UnsafeArchiveError, match=r"reached at member 'f2.bin'") as exc:
        extract_archive(archive, raw)
    assert "bomb.tar.gz" in one_line(exc)
    assert tree(raw) == {}


def test_lying_sizes_are_caught_while_writing(
    tmp_path: Path, box: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Headers that declare less than they hold: the bytes actually written are counted."""
    _, raw = box
    archive = make_zip(tmp_path / "liar.zip", {"a.bin": bytes(3000), "b.bin": bytes(3000)})
    real = extract._zip_members

    def lying(archive: Path, zf: zipfile.ZipFile) -> list:
        return [(extract._Member(m.name, m.parts, m.kind, 1), i) for m, i in real(archive, zf)]

    monkeypatch.setattr(extract, "_zip_members", lying)
    with pytest.raises(UnsafeArchiveError, match=r"reached at member 'b.bin'"):
        extract_archive(archive, raw, max_bytes=4000)
    assert tree(raw) == {}


def test_metadata_limits_apply_and_are_named(
    server: HttpTestServer, tmp_path: Path, box: tuple[Path, Path]
) -> None:
    _, raw = box
    data = make_zip(
        tmp_path / "src.zip", {f"x/{i}.txt": b"x" * 1000 for i in range(8)}
    ).read_bytes()
    url = server.add("/x.zip", data)
    meta = metadata_for(raw, [("x.zip", data, url)], "max_extracted_size = 4000\n")
    with pytest.raises(UnsafeArchiveError) as exc:
        ensure_downloaded(meta, raw, progress=False)
    assert "x.zip" in one_line(exc) and "more than 4,000 bytes" in one_line(exc)
    assert "max_extracted_size" in one_line(exc)
    metadata_for(raw, [("x.zip", data, url)], "max_extracted_files = 5\n")
    with pytest.raises(UnsafeArchiveError, match="more than the 5 allowed") as exc:
        ensure_downloaded(meta, raw, progress=False)
    assert "max_extracted_files" in one_line(exc)
    metadata_for(raw, [("x.zip", data, url)], "max_extracted_size = 8000\n")
    ensure_downloaded(meta, raw, progress=False)
    assert (raw / "x" / "7.txt").read_bytes() == b"x" * 1000


def test_tar_member_count_is_bounded_while_reading(tmp_path: Path, box: tuple[Path, Path]) -> None:
    _, raw = box
    archive = make_tar(tmp_path / "many.tar.gz", [entry(f"{i}", b"") for i in range(200)])
    with pytest.raises(UnsafeArchiveError, match="more than 50 members") as exc:
        extract_archive(archive, raw, max_files=50)
    assert "max_extracted_files" in one_line(exc)
    assert tree(raw) == {}


def huge_pax_header(path: Path, declared: int) -> Path:
    """A tar whose first (pax) header claims ``declared`` bytes that tarfile would read whole."""
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = declared
    block = info.tobuf(tarfile.USTAR_FORMAT)
    path.write_bytes(block + b"30 comment=" + b"x" * 19 + b"\n" + bytes(1024))
    return path


def test_huge_tar_header_is_refused_unread(tmp_path: Path, box: tuple[Path, Path]) -> None:
    _, raw = box
    archive = huge_pax_header(tmp_path / "header.tar", 4 << 30)  # 4 GiB, would be read at once
    with pytest.raises(UnsafeArchiveError) as exc:
        extract_archive(archive, raw)
    assert "header.tar" in one_line(exc) and "extended tar header" in one_line(exc)
    assert tree(raw) == {}


def test_endless_chain_of_tar_headers_is_one_line(tmp_path: Path, box: tuple[Path, Path]) -> None:
    _, raw = box
    record = b"21 comment=xxxxxxxxx\n"
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = len(record)
    block = info.tobuf(tarfile.USTAR_FORMAT) + record.ljust(512, b"\0")
    archive = tmp_path / "chain.tar"
    archive.write_bytes(block * 5000 + bytes(1024))
    with pytest.raises(DataError) as exc:
        extract_archive(archive, raw)
    assert "chain.tar" in one_line(exc)
    assert tree(raw) == {}


# --------------------------------------------------------------------------------------------------
# members that are never allowed


def tar_cases() -> dict[str, list]:
    return {
        "symlink inside": [entry("a.txt", b"a"), entry("b", kind=tarfile.SYMTYPE, target="a.txt")],
        "symlink to /": [entry("root", kind=tarfile.SYMTYPE, target="/")],
        "hardlink to a later member": [
            entry("h", kind=tarfile.LNKTYPE, target="a.txt"),
            entry("a.txt", b"a"),
        ],
        "hardlink outside": [entry("h", kind=tarfile.LNKTYPE, target="../../etc/passwd")],
        "hardlink absolute": [entry("h", kind=tarfile.LNKTYPE, target="/etc/passwd")],
        "character device": [entry("null", kind=tarfile.CHRTYPE)],
        "block device": [entry("sda", kind=tarfile.BLKTYPE)],
        "fifo": [entry("pipe", kind=tarfile.FIFOTYPE)],
        "absolute": [entry("/tmp/evil.txt", b"x")],
        "dotdot": [entry("a/../../evil.txt", b"x")],
        "newline in name": [entry("a\nb.txt", b"x")],
        "long name": [entry("x" * 300, b"x")],
        "deep name": [entry("/".join(["d"] * 600) + "/f", b"x")],
        "file and folder": [entry("a", b"x"), entry("a/b", b"y")],
        "metadata.toml": [entry("metadata.toml", b"url = 'x'")],
        "the archive itself": [entry("evil.tar.gz", b"x")],
        "another download": [entry("other.zip", b"x")],
        "a partial download": [entry("other.zip.part", b"x")],
        "a sidecar": [entry(".other.zip.verified", b"{}")],
    }


@pytest.mark.parametrize("case", sorted(tar_cases()))
def test_forbidden_tar_members(tmp_path: Path, box: tuple[Path, Path], case: str) -> None:
    outside, raw = box
    (raw / "other.zip").write_bytes(b"downloaded")
    archive = make_tar(tmp_path / "evil.tar.gz", [entry("ok.txt", b"ok"), *tar_cases()[case]])
    with pytest.raises(UnsafeArchiveError) as exc:
        extract_archive(archive, raw, protected=["other.zip"])
    assert "evil.tar.gz" in one_line(exc) and "refused" in one_line(exc)
    assert tree(raw) == {"other.zip": b"downloaded"}
    assert tree(outside) == {"keep.txt": b"user data"}


@pytest.mark.parametrize(
    "case", ["symlink", "symlink to /", "absolute", "drive", "backslash dotdot", "fifo", "control"]
)
def test_forbidden_zip_members(tmp_path: Path, box: tuple[Path, Path], case: str) -> None:
    _, raw = box
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", b"ok")
        if case.startswith("symlink"):
            info = zipfile.ZipInfo("link")
            info.create_system = 3
            info.external_attr = (0o120777 << 16) & 0xFFFF0000
            zf.writestr(info, "/" if case.endswith("/") else "ok.txt")
        elif case == "fifo":
            info = zipfile.ZipInfo("pipe")
            info.create_system = 3
            info.external_attr = (0o010644 << 16) & 0xFFFF0000
            zf.writestr(info, b"")
        else:
            name = {
                "absolute": "/tmp/evil.txt",
                "drive": "C:/evil.txt",
                "backslash dotdot": "a\\..\\..\\evil.txt",
                "control": "bell\x07.txt",
            }[case]
            zf.writestr(name, b"evil")
    with pytest.raises(UnsafeArchiveError) as exc:
        extract_archive(archive, raw)
    assert "evil.zip" in one_line(exc) and "refused" in one_line(exc)
    assert tree(raw) == {}


def test_zip_with_too_many_entries_is_refused_before_parsing(
    tmp_path: Path, box: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, raw = box
    archive = make_zip(tmp_path / "many.zip", {f"{i}": b"" for i in range(100)})

    def no_parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the central directory was parsed")

    monkeypatch.setattr(zipfile.ZipFile, "_RealGetContents", no_parse)
    with pytest.raises(UnsafeArchiveError, match="holds 100 members, more than the 10 allowed"):
        extract_archive(archive, raw, max_files=10)


def test_full_disk_while_extracting_is_one_line(
    tmp_path: Path, small_disk, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = small_disk("1m")
    archive = make_zip(tmp_path / "big.zip", {"a.bin": os.urandom(300_000)})
    fill_disk(disk, leave=100_000)
    with pytest.raises(StorageError, match=r"only [\d,]+ bytes is free") as exc:
        extract_archive(archive, disk)
    assert "big.zip" in one_line(exc)
    monkeypatch.setattr(extract, "_check_free_space", lambda *a: None)  # a disk filled meanwhile
    with pytest.raises(StorageError, match="the disk is full") as exc:
        extract_archive(archive, disk)
    assert sorted(p.name for p in disk.iterdir()) == [".filler"]  # staging removed


# --------------------------------------------------------------------------------------------------
# defect 10: never more than the declared size, and full disks


def test_endless_body_stops_at_the_declared_size(server: HttpTestServer, tmp_path: Path) -> None:
    url = server.add("/f.bin", PAYLOAD, endless=True)
    remote = RemoteFile("f.bin", url, sha(PAYLOAD), size=len(PAYLOAD))
    written: list[int] = []
    real_write = dl._Part.write

    def spy(self: dl._Part, f: object, chunk: bytes) -> None:
        real_write(self, f, chunk)
        written.append(self.nbytes)

    dl._Part.write = spy  # type: ignore[method-assign]
    try:
        with pytest.raises(DownloadError) as exc:
            download_file(remote, tmp_path / "raw", progress=False, retries=1)
    finally:
        dl._Part.write = real_write  # type: ignore[method-assign]
    message = one_line(exc)
    assert "sent more than the 4,608 bytes declared for 'f.bin'" in message
    assert max(written, default=0) <= len(PAYLOAD)
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == [".f.bin.lock"]


def test_endless_body_on_a_small_disk(server: HttpTestServer, small_disk) -> None:
    disk = small_disk("1m")
    url = server.add("/f.bin", PAYLOAD, endless=True)
    with pytest.raises(DownloadError, match="sent more than"):
        download_file(RemoteFile("f.bin", url, sha(PAYLOAD), size=len(PAYLOAD)), disk, retries=0)
    assert sum(p.stat().st_size for p in disk.iterdir()) == 0


def test_full_disk_while_downloading_is_one_line(server: HttpTestServer, small_disk) -> None:
    disk = small_disk("1m")
    body = os.urandom(3 << 20)
    url = server.add("/big.bin", body, send_length=False)
    with pytest.raises(StorageError) as exc:  # the size is declared: refused before a request
        download_file(RemoteFile("big.bin", url, sha(body), size=len(body)), disk, retries=0)
    assert "only" in one_line(exc) and "bytes are free" in one_line(exc)
    assert server.requests_for("/big.bin") == []
    with pytest.raises(StorageError) as exc:  # no size: the disk fills, the prefix is kept
        download_file(RemoteFile("big.bin", url, sha(body)), disk, retries=0, progress=False)
    message = one_line(exc)
    assert "big.bin.part: the disk is full" in message and "kept there to resume" in message
    part = disk / "big.bin.part"
    assert body.startswith(part.read_bytes())


def test_part_or_lock_that_is_a_link_is_not_written_through(
    server: HttpTestServer, box: tuple[Path, Path]
) -> None:
    outside, raw = box
    url = server.add("/f.bin", PAYLOAD)
    (raw / "f.bin.part").symlink_to(outside / "keep.txt")
    (raw / ".f.bin.lock").symlink_to(outside / "created.txt")
    with pytest.raises(StorageError) as exc:
        download_file(RemoteFile("f.bin", url, sha(PAYLOAD)), raw, progress=False)
    assert "f.bin.part is not a regular file" in one_line(exc)
    assert tree(outside) == {"keep.txt": b"user data"}


def test_final_name_taken_by_a_folder_is_one_line(server: HttpTestServer, tmp_path: Path) -> None:
    url = server.add("/f.bin", PAYLOAD)
    (tmp_path / "f.bin").mkdir()
    (tmp_path / "f.bin" / "mine.txt").write_bytes(b"mine")
    with pytest.raises(StorageError, match="it is a folder, not a file") as exc:
        download_file(RemoteFile("f.bin", url, sha(PAYLOAD)), tmp_path, progress=False)
    assert "f.bin" in one_line(exc)
    assert (tmp_path / "f.bin" / "mine.txt").read_bytes() == b"mine"


# --------------------------------------------------------------------------------------------------
# defect 11: every wait is bounded


def test_dripping_body_hits_the_deadline(server: HttpTestServer, tmp_path: Path) -> None:
    url = server.add("/f.bin", PAYLOAD, drip=0.05, send_length=False)
    start = time.monotonic()
    with pytest.raises(DownloadError) as exc:
        download_file(RemoteFile("f.bin", url, sha(PAYLOAD)), tmp_path, progress=False, deadline=1)
    assert time.monotonic() - start < 5
    message = one_line(exc)
    assert "after 1 s, the deadline for 'f.bin'" in message
    assert "TEXT_RECOGNIZER_DOWNLOAD_DEADLINE" in message


def test_dripping_headers_hit_the_deadline(server: HttpTestServer, tmp_path: Path) -> None:
    url = server.add("/f.bin", PAYLOAD, drip_headers=0.05)
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"the deadline for 'f\.bin'") as exc:
        download_file(
            RemoteFile("f.bin", url, sha(PAYLOAD)), tmp_path, progress=False, deadline=1.0
        )
    assert time.monotonic() - start < 5
    one_line(exc)


def test_slow_body_is_below_the_minimum_rate(
    server: HttpTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEXT_RECOGNIZER_DOWNLOAD_RATE_WINDOW", "0.3")
    monkeypatch.setenv("TEXT_RECOGNIZER_DOWNLOAD_MIN_RATE", "200")
    url = server.add("/f.bin", PAYLOAD, drip=0.02)
    start = time.monotonic()
    with pytest.raises(DownloadError) as exc:
        download_file(RemoteFile("f.bin", url, sha(PAYLOAD)), tmp_path, progress=False, retries=1)
    assert time.monotonic() - start < 5
    message = one_line(exc)
    assert "slower than the minimum of 200 bytes/s" in message and "gave up after 2" in message


def test_deadline_through_the_command_exits_2(server: HttpTestServer, tmp_path: Path) -> None:
    data = tmp_path / "cli-data"
    raw = data / "raw" / "emnist"
    raw.mkdir(parents=True)
    url = server.add("/matlab.zip", PAYLOAD, drip=0.05, send_length=False)
    (raw / "metadata.toml").write_text(
        f'url = "{url}"\nfilename = "matlab.zip"\nsha256 = "{sha(PAYLOAD)}"\nextract = true\n'
    )
    env = {"TEXT_RECOGNIZER_DATA_DIR": str(data), "TEXT_RECOGNIZER_DOWNLOAD_DEADLINE": "1"}
    start = time.monotonic()
    result = run_script("-m", "text_recognizer.datasets.emnist", env=env, timeout=120)
    assert time.monotonic() - start < 60
    assert result.returncode == 2, result.stderr
    lines = [x for x in result.stderr.strip().splitlines() if x.startswith("error: ")]
    assert len(lines) == 1 and "deadline for 'matlab.zip'" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ["abc", "-1", "0", "nan", "inf"])
def test_bad_deadline_variable_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("TEXT_RECOGNIZER_DOWNLOAD_DEADLINE", value)
    with pytest.raises(
        UserError, match="TEXT_RECOGNIZER_DOWNLOAD_DEADLINE must be a positive"
    ) as e:
        download_file(RemoteFile("f.bin", "http://127.0.0.1:9/f.bin", None), tmp_path)
    one_line(e)


# --------------------------------------------------------------------------------------------------
# hostile metadata.toml


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"url = '\xff\xfe'\n", "is not UTF-8 text (byte 0xff at offset 7); save it as UTF-8"),
        (b"a = " + b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b"x = {" * 3000, "nested too deeply"),
        (b"# " + b"x" * (2 << 20), "over the size limit of 1 MiB"),
        (b"url = 'https://x/a'\nfilename = 'a\\nb'\nsha256 = ''\n", "no control characters"),
        (b"url = 'https://x/a'\nfilename = '" + b"a" * 300 + b"'\nsha256 = ''\n", "<= 200 bytes"),
        (
            b"url = 'https://x/a.zip'\nfilename = 'a.zip'\nsha256 = ''\nmax_extracted_size = -5\n",
            "'max_extracted_size' in the top level must be a positive integer (bytes)",
        ),
        (
            b"url = 'https://x/a.zip'\nfilename = 'a.zip'\nsha256 = ''\nmax_extracted_files = 9\n",
            "it only applies with extract = true",
        ),
        (
            b"url = 'https://x/a'\nfilename = 'a.zip'\nsha256 = ''\nmax_extracted_sise = 9\n",
            "did you mean 'max_extracted_size'",
        ),
    ],
    ids=[
        "not utf-8",
        "nested arrays",
        "nested tables",
        "huge",
        "newline name",
        "long name",
        "negative limit",
        "limit without extract",
        "limit typo",
    ],
)
def test_hostile_metadata_is_one_line(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "metadata.toml"
    path.write_bytes(content)
    with pytest.raises(DataError) as exc:
        load_metadata(path)
    message = one_line(exc)
    assert expected in message and str(path) in message


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_metadata_that_is_not_a_file_does_not_hang(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "metadata.toml"
    if kind == "fifo":
        os.mkfifo(path)  # reading it would block forever
    else:
        path.mkdir()
    start = time.monotonic()
    with pytest.raises(DataError) as exc:
        load_metadata(path)
    assert time.monotonic() - start < 2
    assert str(path) in one_line(exc)


def test_metadata_limits_are_read(tmp_path: Path) -> None:
    path = tmp_path / "metadata.toml"
    path.write_text(
        "url = 'https://x/a.zip'\nfilename = 'a.zip'\nsha256 = ''\nextract = true\n"
        "max_extracted_size = 5000000000\nmax_extracted_files = 300000\n"
    )
    (remote,) = load_metadata(path)
    assert (remote.max_extracted_size, remote.max_extracted_files) == (5_000_000_000, 300_000)


def test_real_metadata_files_still_load() -> None:
    for path in sorted(Path(__file__).resolve().parent.parent.glob("data/raw/*/metadata.toml")):
        assert load_metadata(path), path


def test_waiting_for_a_stuck_lock_holder_is_bounded(tmp_path: Path, monkeypatch) -> None:
    # A process stopped (SIGSTOP) while holding a file's lock must not make every other process
    # wait forever: the wait ends with a one-line error naming the file.
    import fcntl

    from text_recognizer.datasets import download

    monkeypatch.setattr(download, "LOCK_EXTRACT_ALLOWANCE_S", 0.3)
    monkeypatch.setattr(download, "LOCK_POLL_S", 0.05)
    monkeypatch.setenv("TEXT_RECOGNIZER_DOWNLOAD_DEADLINE", "0.2")
    remote = download.RemoteFile(url="http://127.0.0.1:9/x.zip", filename="x.zip", sha256="0" * 64)
    with open(tmp_path / ".x.zip.lock", "a") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        stuck = pytest.raises(download.DataError, match=r"another process .*x\.zip.* stuck")
        with stuck, download._file_lock(tmp_path, "x.zip", download._lock_wait_s(remote)):
            pass


def test_staging_left_by_a_killed_extraction_is_removed_next_time(
    server: HttpTestServer, box: tuple[Path, Path]
) -> None:
    # kill -9 during extraction leaves .a.zip.<rand>.extracting/ (45 MB in the review); the next
    # ensure_downloaded removes it even when the archive itself is already extracted.
    _, raw = box
    data = make_zip(raw.parent / "src.zip", {"x.txt": b"x"}).read_bytes()
    meta = metadata_for(raw, [("a.zip", data, server.add("/a.zip", data))])
    ensure_downloaded(meta, raw, progress=False)
    staging = raw / ".a.zip.k1ll3d.extracting"
    (staging / "deep").mkdir(parents=True)
    (staging / "deep" / "half.bin").write_bytes(b"\0" * 1024)
    ensure_downloaded(meta, raw, progress=False)
    assert not staging.exists() and (raw / "x.txt").read_bytes() == b"x"


@pytest.mark.parametrize("max_size", [1000, None])
def test_endless_body_of_an_unsized_file_stops_at_its_max_size(
    server: HttpTestServer, tmp_path: Path, monkeypatch, max_size
) -> None:
    # The shipped EMNIST, IAM and Brown entries declare no size: an endless body filled the disk.
    # They stop at max_size, and a file with neither at DEFAULT_MAX_UNSIZED.
    from text_recognizer.datasets import metadata

    monkeypatch.setattr(metadata, "DEFAULT_MAX_UNSIZED", 2000)
    url = server.add("/f.bin", PAYLOAD, endless=True)
    remote = RemoteFile("f.bin", url, sha(PAYLOAD), max_size=max_size)
    with pytest.raises(DownloadError) as exc:
        download_file(remote, tmp_path / "raw", progress=False, retries=1)
    limit = f"{max_size or 2000:,}"
    assert f"sent more than the {limit} bytes declared for 'f.bin'" in one_line(exc)
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == [".f.bin.lock"]


def test_shipped_metadata_bound_every_download(tmp_path: Path) -> None:
    from conftest import PROJECT_ROOT
    from text_recognizer.datasets.metadata import load_metadata
    from text_recognizer.errors import MetadataError

    shipped = sorted((PROJECT_ROOT / "data" / "raw").glob("*/metadata.toml"))
    assert len(shipped) >= 4
    for path in shipped:
        for remote in load_metadata(path):
            assert remote.size is not None or remote.max_size is not None, (path, remote.filename)
    bad = tmp_path / "metadata.toml"
    bad.write_text('url = "http://x/f"\nfilename = "f"\nsha256 = ""\nsize = 5\nmax_size = 9\n')
    with pytest.raises(MetadataError, match=r"max_size' .* must be left out when size is given"):
        load_metadata(bad)
