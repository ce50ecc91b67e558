"""Downloads, verification and safe extraction, against a misbehaving local HTTP server."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_fixtures import HttpTestServer, bypass_proxies, closed_port_url

from text_recognizer.datasets import download as dl
from text_recognizer.datasets import extract, metadata
from text_recognizer.datasets.download import (
    ChecksumMismatchError,
    DownloadError,
    NoNetworkError,
    RemoteFile,
    UnsafeArchiveError,
    download_file,
    ensure_downloaded,
    extract_archive,
    load_metadata,
    sha256_file,
)
from text_recognizer.errors import DataError

PAYLOAD = bytes(range(256)) * 40  # 10 KiB, not valid UTF-8, no HTML-looking start
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message and message.strip() == message
    return message


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    bypass_proxies(monkeypatch)


@pytest.fixture(autouse=True)
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Backoff sleeps are recorded instead of slept."""
    calls: list[float] = []
    monkeypatch.setattr(dl, "_sleep", calls.append)
    return calls


@pytest.fixture
def server() -> Iterator[HttpTestServer]:
    with HttpTestServer() as srv:
        yield srv


def remote_for(url: str, data: bytes = PAYLOAD, **kw: object) -> RemoteFile:
    return RemoteFile(filename=kw.pop("filename", "data.bin"), url=url, sha256=sha(data), **kw)  # type: ignore[arg-type]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --------------------------------------------------------------------------------------------------
# metadata


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_metadata_single_file_form(tmp_path: Path) -> None:
    meta = write(
        tmp_path / "metadata.toml",
        f"""url = 'https://example.org/matlab.zip'
filename = 'matlab.zip'
sha256 = '{PAYLOAD_SHA.upper()}'
size = 10240
mirrors = ["https://mirror.example.org/matlab.zip"]
extract = true
license = "CC0"
notes = "anything"
test_ids = ["m01-049", "m01-060"]
""",
    )
    assert load_metadata(meta) == [
        RemoteFile(
            filename="matlab.zip",
            url="https://example.org/matlab.zip",
            sha256=PAYLOAD_SHA,  # lower-cased
            size=10240,
            mirrors=("https://mirror.example.org/matlab.zip",),
            extract=True,
        )
    ]


def test_metadata_real_fsdl_file(shared_data: Path) -> None:
    meta = shared_data / "emnist" / "fsdl_metadata" / "metadata.toml"
    if not meta.is_file():
        pytest.skip(f"{meta} not present")
    (remote,) = load_metadata(meta)
    assert remote.filename == "matlab.zip" and remote.sha256 is not None and not remote.extract


def test_metadata_multi_file_form(tmp_path: Path) -> None:
    meta = write(
        tmp_path / "metadata.toml",
        f"""license = "research only"
notes = "two files"

[[files]]
url = "https://example.org/a.tar.gz"
filename = "a.tar.gz"
sha256 = "{PAYLOAD_SHA}"
extract = true

[[files]]
url = "https://example.org/b.txt"
filename = "b.txt"
sha256 = ""
""",
    )
    a, b = load_metadata(meta)
    assert (a.filename, a.extract, a.sha256) == ("a.tar.gz", True, PAYLOAD_SHA)
    assert (b.filename, b.sha256, b.mirrors, b.size) == ("b.txt", None, (), None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("url = 'https://x/a.zip'\nfilename = 'a.zip'\nsha256 = \n", "malformed TOML"),
        ("filename = 'a.zip'\nsha256 = '{sha}'\n", "missing key 'url'"),
        ("url = 'https://x/a.zip'\nsha256 = '{sha}'\n", "missing key 'filename'"),
        ("url = 'https://x/a.zip'\nfilename = 'a.zip'\n", "missing key 'sha256'"),
        ("[[files]]\nurl = 'https://x/a'\nfilename = 'a'\n", "missing key 'sha256' in [[files]]"),
        ("url = 'https://x/a'\nfilename = 'a'\nsha256 = 'abc'\n", "key 'sha256'"),
        ("url = 'ftp://x/a'\nfilename = 'a'\nsha256 = '{sha}'\n", "key 'url'"),
        ("url = 'https://x/a'\nfilename = '../a'\nsha256 = '{sha}'\n", "key 'filename'"),
        ("url = 'https://x/a'\nfilename = 'a'\nsha256 = '{sha}'\nsize = -1\n", "key 'size'"),
        ("url = 'https://x/a'\nfilename = 'a'\nsha256 = '{sha}'\nmirrors = 'x'\n", "'mirrors'"),
        (
            "url = 'https://x/a'\nfilename = 'a.txt'\nsha256 = '{sha}'\nextract = true\n",
            "'extract'",
        ),
        ("url = 'https://x/a'\nfilename = 'a'\nsha265 = '{sha}'\n", "did you mean 'sha256'"),
        ("files = []\n", "'files' must be"),
        (
            "url = 'https://x/a'\n[[files]]\nurl = 'https://x/a'\nfilename = 'a'\nsha256 = '{sha}'\n",
            "cannot be combined",
        ),
        (
            "[[files]]\nurl = 'https://x/a'\nfilename = 'a'\nsha256 = '{sha}'\n"
            "[[files]]\nurl = 'https://y/a'\nfilename = 'a'\nsha256 = '{sha}'\n",
            "listed twice",
        ),
    ],
)
def test_metadata_errors_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    meta = write(tmp_path / "metadata.toml", text.replace("{sha}", PAYLOAD_SHA))
    with pytest.raises(DataError) as exc:
        load_metadata(meta)
    message = one_line(exc)
    assert str(meta) in message and expected in message


def test_metadata_tolerates_unrelated_keys(tmp_path: Path) -> None:
    meta = write(
        tmp_path / "metadata.toml",
        f"url = 'https://x/a'\nfilename = 'a'\nsha256 = '{PAYLOAD_SHA}'\n"
        "md5 = 'abc'\nsha1 = 'def'\ntest_ids = ['m01']\nlicence = 'x'\n",
    )
    assert [r.filename for r in load_metadata(meta)] == ["a"]


def test_remote_file_refuses_path_like_names() -> None:
    with pytest.raises(DataError, match="plain"):
        RemoteFile("../evil", "https://x/a", None)
    assert RemoteFile("a", "https://x/a", PAYLOAD_SHA.upper()).sha256 == PAYLOAD_SHA


def test_metadata_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_metadata(tmp_path / "nope.toml")


# --------------------------------------------------------------------------------------------------
# downloading


def test_download_verifies_and_renames(server: HttpTestServer, tmp_path: Path) -> None:
    url = server.add("/data.bin", PAYLOAD)
    path = download_file(remote_for(url), tmp_path, progress=False)
    assert path == tmp_path / "data.bin" and path.read_bytes() == PAYLOAD
    assert sha256_file(path) == PAYLOAD_SHA
    assert leftovers(tmp_path) == [".data.bin.lock", ".data.bin.verified", "data.bin"]
    assert [r.range for r in server.requests] == [None]
    sidecar = json.loads((tmp_path / ".data.bin.verified").read_text())
    assert sidecar == {
        "size": len(PAYLOAD),
        "mtime_ns": path.stat().st_mtime_ns,
        "sha256": PAYLOAD_SHA,
    }


def test_progress_false_is_silent(
    server: HttpTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    download_file(remote_for(server.add("/data.bin", PAYLOAD)), tmp_path, progress=False)
    assert capsys.readouterr().err == ""


def test_progress_on_a_log_file_does_not_spam(
    server: HttpTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    download_file(remote_for(server.add("/data.bin", PAYLOAD)), tmp_path, progress=True)
    assert capsys.readouterr().err.count("\n") <= 2


def test_checksum_mismatch_leaves_nothing(server: HttpTestServer, tmp_path: Path) -> None:
    url = server.add("/data.bin", b"wrong bytes " * 100)
    with pytest.raises(ChecksumMismatchError) as exc:
        download_file(remote_for(url), tmp_path, progress=False)
    message = one_line(exc)
    assert url in message and "data.bin" in message
    assert PAYLOAD_SHA in message and sha(b"wrong bytes " * 100) in message
    assert not (tmp_path / "data.bin").exists() and not (tmp_path / "data.bin.part").exists()
    assert len(server.requests) == 1  # a wrong file is not retried


def test_size_mismatch_is_refused_before_downloading(
    server: HttpTestServer, tmp_path: Path
) -> None:
    url = server.add("/data.bin", PAYLOAD)
    with pytest.raises(DownloadError, match=r"serves 10240 bytes .* size = 99"):
        download_file(remote_for(url, size=99), tmp_path, progress=False)
    assert not (tmp_path / "data.bin").exists()


def test_resume_after_truncation_sends_range(
    server: HttpTestServer, tmp_path: Path, sleeps: list[float]
) -> None:
    url = server.add("/data.bin", PAYLOAD, truncate_first=3000)
    path = download_file(remote_for(url), tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD and sha256_file(path) == PAYLOAD_SHA
    assert [r.range for r in server.requests] == [None, "bytes=3000-"]
    assert sleeps == [1.0]
    assert not (tmp_path / "data.bin.part").exists()


def test_resume_after_connection_reset(server: HttpTestServer, tmp_path: Path) -> None:
    url = server.add("/data.bin", PAYLOAD, truncate_first=5000, reset=True)
    path = download_file(remote_for(url), tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD and sha256_file(path) == PAYLOAD_SHA
    # A TCP reset may discard bytes still in flight, so the resume offset is at most 5000.
    first, second = server.requests
    assert first.range is None
    assert second.range is None or int(second.range[len("bytes=") : -1]) <= 5000


def test_resume_without_content_length_uses_metadata_size(
    server: HttpTestServer, tmp_path: Path
) -> None:
    url = server.add("/data.bin", PAYLOAD, truncate_first=4000, send_length=False)
    path = download_file(remote_for(url, size=len(PAYLOAD)), tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert [r.range for r in server.requests] == [None, "bytes=4000-"]


def test_drop_every_time_keeps_resuming(server: HttpTestServer, tmp_path: Path) -> None:
    url = server.add("/data.bin", PAYLOAD, drop_after=3000)
    path = download_file(remote_for(url), tmp_path, progress=False, retries=1)
    assert path.read_bytes() == PAYLOAD
    assert [r.range for r in server.requests] == [None, "bytes=3000-", "bytes=6000-", "bytes=9000-"]


def test_drop_every_time_without_range_gives_up(
    server: HttpTestServer, tmp_path: Path, sleeps: list[float]
) -> None:
    url = server.add("/data.bin", PAYLOAD, drop_after=3000, honour_range=False)
    with pytest.raises(DownloadError) as exc:
        download_file(remote_for(url), tmp_path, progress=False, retries=3, backoff=0.5)
    message = one_line(exc)
    assert url in message and "gave up after 4 attempts" in message
    assert not isinstance(exc.value, NoNetworkError)
    assert sleeps == [0.5, 1.0, 2.0]
    assert len(server.requests) == 4
    assert not (tmp_path / "data.bin").exists()


def test_leftover_part_is_resumed_and_hashed_once(
    server: HttpTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:2500])
    hashed: list[Path] = []
    real = dl._hash_into
    monkeypatch.setattr(dl, "_hash_into", lambda h, p: (hashed.append(p), real(h, p)))
    url = server.add("/data.bin", PAYLOAD, drop_after=4000)
    path = download_file(remote_for(url), tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert [r.range for r in server.requests] == ["bytes=2500-", "bytes=6500-"]
    assert hashed == [tmp_path / "data.bin.part"]


def test_server_ignoring_range_restarts_from_zero(server: HttpTestServer, tmp_path: Path) -> None:
    (tmp_path / "data.bin.part").write_bytes(b"junk" * 500)
    url = server.add("/data.bin", PAYLOAD, honour_range=False)
    path = download_file(remote_for(url), tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert [r.range for r in server.requests] == ["bytes=2000-"]


def test_stale_leftover_part_is_redone_from_zero(server: HttpTestServer, tmp_path: Path) -> None:
    (tmp_path / "data.bin.part").write_bytes(b"x" * 2000)  # from some older, different file
    url = server.add("/data.bin", PAYLOAD)
    path = download_file(remote_for(url), tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert [r.range for r in server.requests] == ["bytes=2000-", None]


def test_complete_leftover_part_needs_no_body(server: HttpTestServer, tmp_path: Path) -> None:
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)
    url = server.add("/data.bin", PAYLOAD)
    path = download_file(remote_for(url), tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert [r.range for r in server.requests] == [f"bytes={len(PAYLOAD)}-"]  # answered 416


def test_content_encoding_is_not_decoded(server: HttpTestServer, tmp_path: Path) -> None:
    import gzip

    archive = gzip.compress(PAYLOAD)
    url = server.add("/data.gz", archive, headers={"Content-Encoding": "gzip"})
    path = download_file(remote_for(url, archive, filename="data.gz"), tmp_path, progress=False)
    assert path.read_bytes() == archive
    assert server.requests[0].headers.get("Accept-Encoding") == "identity"


def test_retries_with_exponential_backoff_then_success(
    server: HttpTestServer, tmp_path: Path, sleeps: list[float]
) -> None:
    url = server.add("/data.bin", PAYLOAD, fail_first=3, fail_status=503)
    download_file(remote_for(url), tmp_path, progress=False, backoff=2.0)
    assert sleeps == [2.0, 4.0, 8.0]
    assert len(server.requests) == 4


def test_retries_exhausted(server: HttpTestServer, tmp_path: Path, sleeps: list[float]) -> None:
    url = server.add("/data.bin", PAYLOAD, status=500)
    with pytest.raises(DownloadError) as exc:
        download_file(remote_for(url), tmp_path, progress=False, retries=4, backoff=1.0)
    message = one_line(exc)
    assert "HTTP 500" in message and url in message and "gave up after 5 attempts" in message
    assert sleeps == [1.0, 2.0, 4.0, 8.0]
    assert leftovers(tmp_path) == [".data.bin.lock"]


def test_http_404_is_clear_and_not_retried(
    server: HttpTestServer, tmp_path: Path, sleeps: list[float]
) -> None:
    url = server.url("/missing.bin")
    with pytest.raises(DownloadError) as exc:
        download_file(remote_for(url, filename="missing.bin"), tmp_path, progress=False)
    message = one_line(exc)
    assert "HTTP 404" in message and url in message and "missing.bin" in message
    assert str(tmp_path / "missing.bin") in message  # where to put a hand-downloaded copy
    assert not isinstance(exc.value, NoNetworkError)
    assert len(server.requests) == 1 and sleeps == []


def test_mirror_fallback_after_404(server: HttpTestServer, tmp_path: Path) -> None:
    mirror = server.add("/mirror/data.bin", PAYLOAD)
    remote = remote_for(server.url("/gone.bin"), mirrors=(mirror,))
    path = download_file(remote, tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert [r.path for r in server.requests] == ["/gone.bin", "/mirror/data.bin"]


def test_mirror_fallback_after_retries_and_resume_across_mirrors(
    server: HttpTestServer, tmp_path: Path
) -> None:
    primary = server.add("/data.bin", PAYLOAD, drop_after=3000, honour_range=False)
    mirror = server.add("/mirror/data.bin", PAYLOAD)
    path = download_file(
        remote_for(primary, mirrors=(mirror,)), tmp_path, progress=False, retries=2
    )
    assert path.read_bytes() == PAYLOAD
    assert len(server.requests_for("/data.bin")) == 3
    assert [r.range for r in server.requests_for("/mirror/data.bin")] == ["bytes=3000-"]


def test_all_mirrors_wrong_is_a_checksum_error(server: HttpTestServer, tmp_path: Path) -> None:
    a = server.add("/a.bin", b"A" * 1000)
    b = server.add("/b.bin", b"B" * 1000)
    with pytest.raises(ChecksumMismatchError) as exc:
        download_file(remote_for(a, mirrors=(b,)), tmp_path, progress=False)
    message = one_line(exc)
    assert a in message and b in message and sha(b"A" * 1000) in message
    assert sha(b"B" * 1000) in message and PAYLOAD_SHA in message


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<html><body>Please sign in</body></html>", "text/html; charset=utf-8"),
        (b"\n  <!DOCTYPE html>\n<html><head><title>Moved</title>" + b" " * 600, "application/zip"),
        (b"<!doctype html><p>consent</p>", "application/octet-stream"),
    ],
    ids=["content-type", "long body", "short body"],
)
def test_html_page_is_detected(
    server: HttpTestServer, tmp_path: Path, body: bytes, content_type: str
) -> None:
    url = server.add("/matlab.zip", body, content_type=content_type)
    with pytest.raises(DownloadError) as exc:
        download_file(remote_for(url, filename="matlab.zip"), tmp_path, progress=False, retries=2)
    message = one_line(exc)
    assert url in message and "web page" in message and "login" in message
    assert len(server.requests) == 1
    assert leftovers(tmp_path) == [".matlab.zip.lock"]


def test_html_file_is_not_mistaken_for_a_web_page(server: HttpTestServer, tmp_path: Path) -> None:
    body = b"<!DOCTYPE html><html>the real thing</html>"
    url = server.add("/page.html", body, content_type="text/html")
    path = download_file(remote_for(url, body, filename="page.html"), tmp_path, progress=False)
    assert path.read_bytes() == body


def test_stalled_server_times_out(server: HttpTestServer, tmp_path: Path) -> None:
    url = server.add("/data.bin", PAYLOAD, stall=5.0)
    with pytest.raises(DownloadError) as exc:
        download_file(remote_for(url), tmp_path, progress=False, timeout=(1.0, 0.2), retries=1)
    message = one_line(exc)
    assert "timed out" in message and url in message
    assert not isinstance(exc.value, NoNetworkError)


def test_server_stalling_mid_body_times_out(server: HttpTestServer, tmp_path: Path) -> None:
    url = server.add("/data.bin", PAYLOAD, stall_after=1000, stall_body=5.0)
    with pytest.raises(DownloadError, match="timed out reading"):
        download_file(remote_for(url), tmp_path, progress=False, timeout=(1.0, 0.2), retries=0)


def test_no_network_names_file_folder_and_url(tmp_path: Path, sleeps: list[float]) -> None:
    url = closed_port_url("/matlab.zip")
    mirror = closed_port_url("/mirror/matlab.zip")
    remote = RemoteFile("matlab.zip", url, PAYLOAD_SHA, mirrors=(mirror,))
    with pytest.raises(NoNetworkError) as exc:
        download_file(remote, tmp_path / "raw" / "emnist", progress=False, retries=1)
    message = one_line(exc)
    assert "matlab.zip" in message and str(tmp_path / "raw" / "emnist") in message
    assert url in message and mirror in message and "connection refused" in message
    assert sleeps == []  # a refused connection is final: the mirror is tried at once, no retry


def test_dns_failure_is_no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    def no_dns(*args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    remote = RemoteFile("a.zip", "https://files.example.invalid/a.zip", PAYLOAD_SHA)
    with pytest.raises(NoNetworkError) as exc:
        download_file(remote, tmp_path, progress=False, retries=0)
    message = one_line(exc)
    assert "DNS" in message and remote.url in message and str(tmp_path) in message
    assert exc.value.filenames == ["a.zip"] and exc.value.folder == tmp_path


def test_ensure_no_network_lists_every_missing_file(tmp_path: Path) -> None:
    present = tmp_path / "raw" / "b.bin"
    present.parent.mkdir()
    present.write_bytes(PAYLOAD)
    urls = [closed_port_url(f"/{name}") for name in ("a.zip", "b.bin", "c.txt")]
    meta = write(
        tmp_path / "metadata.toml",
        "".join(
            f'[[files]]\nurl = "{url}"\nfilename = "{url.rsplit("/", 1)[1]}"\n'
            f'sha256 = "{sha(b"expected")}"\n'
            for url in urls
        ),
    )
    with pytest.raises(NoNetworkError) as exc:
        ensure_downloaded(meta, tmp_path / "raw", progress=False)
    message = one_line(exc)
    assert str(tmp_path / "raw") in message
    for url in urls:
        assert url in message and f"'{url.rsplit('/', 1)[1]}'" in message
    assert f"has sha256 {PAYLOAD_SHA}" in message  # b.bin is there but corrupt


def test_ensure_downloads_once_then_trusts_the_sidecar(
    server: HttpTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url_a = server.add("/a.bin", PAYLOAD)
    url_b = server.add("/b.txt", b"hello")
    meta = write(
        tmp_path / "metadata.toml",
        f'[[files]]\nurl = "{url_a}"\nfilename = "a.bin"\nsha256 = "{PAYLOAD_SHA}"\n'
        f'[[files]]\nurl = "{url_b}"\nfilename = "b.txt"\nsha256 = "{sha(b"hello")}"\n',
    )
    raw = tmp_path / "raw"
    paths = ensure_downloaded(meta, raw, progress=False)
    assert paths == [raw / "a.bin", raw / "b.txt"] and len(server.requests) == 2

    def no_hashing(path: Path) -> str:
        raise AssertionError(f"re-hashed {path}")

    monkeypatch.setattr(dl, "sha256_file", no_hashing)
    assert ensure_downloaded(meta, raw, progress=False) == paths
    assert len(server.requests) == 2  # nothing fetched again, nothing re-hashed
    monkeypatch.undo()

    (raw / ".a.bin.verified").unlink()  # no sidecar: re-hashed, still not downloaded
    monkeypatch.setattr(dl, "_sleep", lambda s: None)
    assert ensure_downloaded(meta, raw, progress=False) == paths
    assert len(server.requests) == 2 and (raw / ".a.bin.verified").is_file()


def test_ensure_present_verified_file_makes_no_request(
    server: HttpTestServer, tmp_path: Path
) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.bin").write_bytes(PAYLOAD)
    url = server.add("/a.bin", PAYLOAD)
    meta = write(
        tmp_path / "m.toml", f'url = "{url}"\nfilename = "a.bin"\nsha256 = "{PAYLOAD_SHA}"\n'
    )
    assert ensure_downloaded(meta, raw, progress=False) == [raw / "a.bin"]
    assert server.requests == []


def test_ensure_replaces_a_corrupt_file(
    server: HttpTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.bin").write_bytes(b"corrupt")
    url = server.add("/a.bin", PAYLOAD)
    meta = write(
        tmp_path / "m.toml", f'url = "{url}"\nfilename = "a.bin"\nsha256 = "{PAYLOAD_SHA}"\n'
    )
    ensure_downloaded(meta, raw, progress=False)
    assert (raw / "a.bin").read_bytes() == PAYLOAD and len(server.requests) == 1
    assert "downloading it again" in capsys.readouterr().err


def test_unchecked_file_warns_once(server: HttpTestServer, tmp_path: Path) -> None:
    url = server.add("/u.bin", PAYLOAD)
    meta = write(tmp_path / "m.toml", f'url = "{url}"\nfilename = "u.bin"\nsha256 = ""\n')
    with pytest.warns(dl.UncheckedDownloadWarning, match="u.bin") as record:
        ensure_downloaded(meta, tmp_path / "raw", progress=False)
        ensure_downloaded(meta, tmp_path / "raw", progress=False)
    assert len(record) == 1 and len(server.requests) == 1


# --------------------------------------------------------------------------------------------------
# extraction


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def make_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    mode = "w:gz" if path.name.endswith(("gz", ".tgz")) else "w"
    with tarfile.open(path, mode) as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tf.addfile(info, io.BytesIO(member[1]))
    return path


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def test_extract_zip(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "a.zip", {"top/x.txt": b"x", "top/sub/y.txt": b"y", "z": b"z"})
    out = tmp_path / "out"
    paths = extract_archive(archive, out)
    assert paths == [out / "top" / "x.txt", out / "top" / "sub" / "y.txt", out / "z"]
    assert (out / "top" / "sub" / "y.txt").read_bytes() == b"y"
    assert leftovers(out) == ["top", "z"]  # no temp folder left behind


@pytest.mark.parametrize("name", ["a.tar.gz", "a.tgz", "a.tar"])
def test_extract_tar(tmp_path: Path, name: str) -> None:
    archive = make_tar(
        tmp_path / name,
        [
            ("data/x.txt", b"x"),
            link("data/hard", "data/x.txt", tarfile.LNKTYPE),
            ("./y.txt", b"y"),
        ],
    )
    out = tmp_path / "out"
    paths = extract_archive(archive, out)
    assert paths == [out / "data" / "x.txt", out / "data" / "hard", out / "y.txt"]
    assert (out / "data" / "hard").read_bytes() == b"x"


def test_extract_merges_into_existing_folders(tmp_path: Path) -> None:
    out = tmp_path / "out"
    extract_archive(make_zip(tmp_path / "a.zip", {"shared/a.txt": b"a"}), out)
    extract_archive(make_tar(tmp_path / "b.tar", [("shared/b.txt", b"b")]), out)
    assert sorted(p.name for p in (out / "shared").iterdir()) == ["a.txt", "b.txt"]


def unsafe_tar_cases() -> dict[str, list[tarfile.TarInfo | tuple[str, bytes]]]:
    dev = tarfile.TarInfo("dev/null")
    dev.type = tarfile.CHRTYPE
    return {
        "absolute": [("ok.txt", b"ok"), ("/tmp/evil.txt", b"evil")],
        "dotdot": [("ok.txt", b"ok"), ("../evil.txt", b"evil")],
        "nested dotdot": [("ok.txt", b"ok"), ("a/../../evil.txt", b"evil")],
        "symlink to /etc": [("ok.txt", b"ok"), link("etc", "/etc")],
        "relative symlink escape": [("ok.txt", b"ok"), link("sub/up", "../../outside")],
        "symlink chain escape": [link("b", "."), link("a", "b/b/..")],
        "write through symlink": [link("inside", "sub"), ("inside/x.txt", b"x")],
        "hardlink escape": [("ok.txt", b"ok"), link("hl", "../../etc/passwd", tarfile.LNKTYPE)],
        "hardlink absolute": [("ok.txt", b"ok"), link("hl", "/etc/passwd", tarfile.LNKTYPE)],
        "device file": [("ok.txt", b"ok"), dev],
    }


@pytest.mark.parametrize("case", sorted(unsafe_tar_cases()))
def test_unsafe_tar_is_refused_with_nothing_extracted(tmp_path: Path, case: str) -> None:
    archive = make_tar(tmp_path / "evil.tar.gz", unsafe_tar_cases()[case])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UnsafeArchiveError) as exc:
        extract_archive(archive, out)
    assert str(archive) in one_line(exc)
    assert leftovers(out) == []
    assert leftovers(tmp_path) == ["evil.tar.gz", "out"]


def zip_symlink(zf: zipfile.ZipFile, name: str, target: str) -> None:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (0o120777 << 16) & 0xFFFF0000
    zf.writestr(info, target)


@pytest.mark.parametrize("case", ["absolute", "dotdot", "backslash dotdot", "symlink out"])
def test_unsafe_zip_is_refused_with_nothing_extracted(tmp_path: Path, case: str) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", b"ok")
        if case == "absolute":
            zf.writestr(zipfile.ZipInfo("/tmp/evil.txt"), b"evil")
        elif case == "dotdot":
            zf.writestr("../evil.txt", b"evil")
        elif case == "backslash dotdot":
            zf.writestr("sub\\..\\..\\evil.txt", b"evil")
        else:
            zip_symlink(zf, "etc", "/etc")
    out = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError):
        extract_archive(archive, out)
    assert leftovers(out) == []


def test_symlinks_are_refused_even_inside(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data/x.txt", b"x")
        zip_symlink(zf, "data/alias", "x.txt")
    out = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match="'data/alias' is a symbolic link"):
        extract_archive(archive, out)
    assert leftovers(out) == []


def test_corrupt_archive_leaves_nothing(tmp_path: Path) -> None:
    good = make_tar(tmp_path / "good.tar.gz", [(f"f{i}.bin", os.urandom(20000)) for i in range(5)])
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    out = tmp_path / "out"
    with pytest.raises(DataError, match="corrupt"):
        extract_archive(bad, out)
    assert leftovers(out) == []
    zip_bytes = make_zip(tmp_path / "z.zip", {"a.txt": os.urandom(5000)}).read_bytes()
    (tmp_path / "broken.zip").write_bytes(zip_bytes.replace(b"a.txt", b"a.tx\xff", 1))
    with pytest.raises(DataError, match="corrupt"):
        extract_archive(tmp_path / "broken.zip", out)
    assert leftovers(out) == []
    (tmp_path / "junk.zip").write_bytes(b"not an archive")
    with pytest.raises(DataError, match="not a zip or tar"):
        extract_archive(tmp_path / "junk.zip", out)


def test_ensure_extracts_once(
    server: HttpTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zip_bytes = make_zip(tmp_path / "src.zip", {"emnist/x.txt": b"x"}).read_bytes()
    tgz_bytes = make_tar(tmp_path / "src.tgz", [("iam/y.txt", b"y")]).read_bytes()
    url_zip = server.add("/matlab.zip", zip_bytes)
    url_tgz = server.add("/lines.tar.gz", tgz_bytes)
    meta = write(
        tmp_path / "metadata.toml",
        f'[[files]]\nurl = "{url_zip}"\nfilename = "matlab.zip"\nsha256 = "{sha(zip_bytes)}"\n'
        "extract = true\n"
        f'[[files]]\nurl = "{url_tgz}"\nfilename = "lines.tar.gz"\nsha256 = "{sha(tgz_bytes)}"\n'
        "extract = true\n",
    )
    raw = tmp_path / "raw"
    paths = ensure_downloaded(meta, raw, progress=False)
    assert paths == [raw / "matlab.zip", raw / "lines.tar.gz"]
    assert (raw / "emnist" / "x.txt").read_bytes() == b"x"
    assert (raw / "iam" / "y.txt").read_bytes() == b"y"
    assert (raw / ".matlab.zip.extracted").is_file()

    def no_extract(archive: Path, dest: Path) -> list[Path]:
        raise AssertionError(f"extracted {archive} again")

    monkeypatch.setattr(dl, "extract_archive", no_extract)
    ensure_downloaded(meta, raw, progress=False)
    monkeypatch.undo()

    (raw / "iam" / "y.txt").unlink()
    (raw / "iam").rmdir()  # extracted output gone: extracted again
    stale = raw / ".lines.tar.gz.killed.extracting"  # staging left by a killed run
    stale.mkdir()
    ensure_downloaded(meta, raw, progress=False)
    assert (raw / "iam" / "y.txt").read_bytes() == b"y"
    assert not stale.exists()
    assert len(server.requests) == 2


def test_module_never_changes_directory() -> None:
    for module in (dl, extract, metadata):
        assert "chdir" not in Path(module.__file__).read_text(encoding="utf-8")
