"""Offline failures are quick and complete; every command survives a closed output pipe.

Offline: a name that does not resolve or a refused connection is final (no retries, the next
mirror at once, the whole failure in a few seconds), while a 503 is still retried; a dataset
that needs several files names them all in one error. Pipes: each entry point piped into a reader
that has gone (``| head``) ends quietly, without a BrokenPipe traceback or Python's "Exception
ignored" at exit.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from http_fixtures import HttpTestServer, bypass_proxies, closed_port_url

from conftest import PROJECT_ROOT
from text_recognizer.datasets import download as dl
from text_recognizer.datasets.download import (
    RemoteFile,
    download_file,
    ensure_downloaded,
    merge_data_errors,
)
from text_recognizer.errors import DataError, NoNetworkError

PAYLOAD = bytes(range(256)) * 8
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
UNRESOLVABLE = "http://nonexistent.invalid/matlab.zip"  # .invalid never resolves (RFC 6761)
QUICK_S = 5.0  # "a few seconds": the whole offline failure, DNS lookups included


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    bypass_proxies(monkeypatch)


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every request the downloader makes, by URL (retries included); sleeps are real."""
    calls: list[str] = []
    real = dl._attempt

    def counted(session, url, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(url)
        return real(session, url, *args, **kwargs)

    monkeypatch.setattr(dl, "_attempt", counted)
    return calls


@pytest.fixture
def server() -> Iterator[HttpTestServer]:
    with HttpTestServer() as srv:
        yield srv


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# ----- offline downloads: final at once, mirrors tried, no retries ---------------------------------


def test_refused_port_fails_at_once_then_tries_the_mirror(
    tmp_path: Path, attempts: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    url, mirror = closed_port_url("/matlab.zip"), closed_port_url("/mirror/matlab.zip")
    remote = RemoteFile("matlab.zip", url, PAYLOAD_SHA, mirrors=(mirror,))
    start = time.monotonic()
    with pytest.raises(NoNetworkError) as exc:
        download_file(remote, tmp_path, progress=False)  # default retries=4, real backoff
    assert time.monotonic() - start < QUICK_S
    assert attempts == [url, mirror]  # one attempt per URL: a refusal is not retried
    message = one_line(exc)
    assert "connection refused" in message and url in message and mirror in message
    assert str(tmp_path) in message and "'matlab.zip'" in message
    said = capsys.readouterr().err.splitlines()
    assert said == [f"cannot connect to {url}: connection refused; trying the next URL"]


def test_unresolvable_host_fails_at_once(tmp_path: Path, attempts: list[str]) -> None:
    mirror = closed_port_url("/matlab.zip")
    remote = RemoteFile("matlab.zip", UNRESOLVABLE, PAYLOAD_SHA, mirrors=(mirror,))
    start = time.monotonic()
    with pytest.raises(NoNetworkError) as exc:
        download_file(remote, tmp_path, progress=False)
    assert time.monotonic() - start < QUICK_S
    assert attempts == [UNRESOLVABLE, mirror]
    message = one_line(exc)
    assert "cannot resolve the host name (DNS lookup failed)" in message
    assert "connection refused" in message  # both reasons, once each
    assert exc.value.filenames == ["matlab.zip"] and exc.value.folder == tmp_path


def test_503_is_still_retried_with_backoff(
    server: HttpTestServer, tmp_path: Path, attempts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(dl, "_sleep", sleeps.append)
    refused = closed_port_url("/a.bin")
    mirror = server.add("/a.bin", PAYLOAD, fail_first=2, fail_status=503)
    remote = RemoteFile("a.bin", refused, PAYLOAD_SHA, mirrors=(mirror,))
    assert download_file(remote, tmp_path, progress=False).read_bytes() == PAYLOAD
    assert attempts == [refused, mirror, mirror, mirror]  # refused once; 503 twice, retried
    assert sleeps == [1.0, 2.0]


@pytest.mark.parametrize(
    ("code", "transient"),
    [(errno.ECONNREFUSED, False), (errno.ENETUNREACH, False), (errno.EHOSTUNREACH, False)],
)
def test_no_route_is_final(code: int, transient: bool) -> None:
    exc = requests.exceptions.ConnectionError(OSError(code, "no"))
    failure = dl._request_failure(exc, "http://example.org/a", (10.0, 60.0))
    assert failure.kind == "unreachable" and failure.retry is transient


def test_a_dead_host_is_not_tried_again_for_the_next_files(
    tmp_path: Path, attempts: list[str]
) -> None:
    url = closed_port_url("/a.zip")
    base = url.rsplit("/", 1)[0]
    meta = tmp_path / "metadata.toml"
    meta.write_text(
        "".join(
            f'[[files]]\nurl = "{base}/{name}"\nfilename = "{name}"\nsha256 = "{PAYLOAD_SHA}"\n'
            for name in ("a.zip", "b.bin", "c.txt")
        )
    )
    with pytest.raises(NoNetworkError) as exc:
        ensure_downloaded(meta, tmp_path / "raw", progress=False)
    assert attempts == [url]  # one connection attempt in all: the host refused it
    message = one_line(exc)
    assert message.startswith("no network (connection refused): cannot download 3 file(s)")
    for name in ("a.zip", "b.bin", "c.txt"):
        assert f"'{name}' from {base}/{name}" in message


def test_merge_data_errors_names_every_file_and_folder(tmp_path: Path) -> None:
    one = dl._no_network_error(
        [dl._place(RemoteFile("brown.zip", "http://a/brown.zip", None), tmp_path / "brown")],
        ["connection refused"],
    )
    two = dl._no_network_error(
        [dl._place(RemoteFile("matlab.zip", "http://b/matlab.zip", None), tmp_path / "emnist")],
        ["cannot resolve the host name (DNS lookup failed)"],
    )
    merged = merge_data_errors([one, two])
    assert isinstance(merged, NoNetworkError) and merged.filenames == ["brown.zip", "matlab.zip"]
    text = str(merged)
    assert "cannot download 2 file(s)" in text and "README.md, Datasets" in text
    assert f"in {tmp_path / 'brown'}/: 'brown.zip' from http://a/brown.zip" in text
    assert f"in {tmp_path / 'emnist'}/: 'matlab.zip' from http://b/matlab.zip" in text
    mixed = merge_data_errors([DataError("data_dir /x lacks a.txt"), one])
    assert isinstance(mixed, DataError) and "\n" not in str(mixed)
    assert str(mixed).startswith("2 problems with the raw data: (1) no network")
    assert "(2) data_dir /x lacks a.txt" in str(mixed)
    assert merge_data_errors([]) is None and merge_data_errors([one]) is one


# ----- datasets: one error names every missing file ------------------------------------------------


def offline_metadata(raw: Path, dataset: str, names: list[str]) -> None:
    """raw/<dataset>/metadata.toml whose files all live on a refused port."""
    folder = raw / dataset
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.toml").write_text(
        "".join(
            f'[[files]]\nurl = "{closed_port_url("/" + name)}"\nfilename = "{name}"\n'
            f'sha256 = "{PAYLOAD_SHA}"\n'
            for name in names
        )
    )


def test_iam_lines_offline_names_the_archive_and_every_split_list(data_dirs) -> None:
    from text_recognizer.datasets.iam_lines import IamLinesDataset

    raw, _ = data_dirs
    names = ["iamdb.zip", "train.uttlist", "validation.uttlist", "test.uttlist"]
    offline_metadata(raw, "iam", names)
    start = time.monotonic()
    with pytest.raises(NoNetworkError) as exc:
        IamLinesDataset().load_or_generate_data()
    assert time.monotonic() - start < QUICK_S
    assert exc.value.filenames == names
    assert f"in {raw / 'iam'}/: 'iamdb.zip'" in one_line(exc)


def test_iam_user_folder_and_offline_split_lists_in_one_error(data_dirs, tmp_path: Path) -> None:
    from text_recognizer.datasets.iam_lines import IamLinesDataset

    raw, _ = data_dirs
    offline_metadata(
        raw, "iam", ["iamdb.zip", "train.uttlist", "validation.uttlist", "test.uttlist"]
    )
    with pytest.raises(DataError) as exc:
        IamLinesDataset(data_dir=str(tmp_path)).load_or_generate_data()
    message = one_line(exc)
    assert message.startswith("2 problems with the raw data:") and "has neither" in message
    assert "'train.uttlist'" in message and "'test.uttlist'" in message
    assert "'iamdb.zip' from" not in message  # the user's folder is used, not downloaded into


@pytest.mark.parametrize(
    ("char_args", "char_files"),
    [
        ({}, {"emnist": ["matlab.zip"]}),
        (
            {"char_source": "MnistDataset"},
            {
                "mnist": [
                    "train-images-idx3-ubyte.gz",
                    "train-labels-idx1-ubyte.gz",
                    "t10k-images-idx3-ubyte.gz",
                    "t10k-labels-idx1-ubyte.gz",
                ]
            },
        ),
    ],
)
def test_emnist_lines_offline_names_the_corpus_and_the_characters(
    data_dirs, char_args: dict[str, str], char_files: dict[str, list[str]]
) -> None:
    from text_recognizer.datasets.emnist_lines import EmnistLinesDataset

    raw, _ = data_dirs
    offline_metadata(raw, "brown", ["brown.zip"])
    for dataset, names in char_files.items():
        offline_metadata(raw, dataset, names)
    start = time.monotonic()
    with pytest.raises(NoNetworkError) as exc:
        EmnistLinesDataset(max_length=8, **char_args).load_or_generate_data()
    assert time.monotonic() - start < QUICK_S
    corpus = [] if char_args else ["brown.zip"]  # MNIST digit lines need no corpus
    expected = [*corpus, *(n for names in char_files.values() for n in names)]
    assert exc.value.filenames == expected
    message = one_line(exc)
    for dataset in ("brown", *char_files):
        assert (f"in {raw / dataset}/:" in message) is (dataset != "brown" or bool(corpus))


# ----- the real commands, offline ----------------------------------------------------------------


def test_offline_emnist_command_fails_in_seconds(tmp_path: Path) -> None:
    """The shipped metadata's real URLs; with no network (or a sandbox without DNS) the command
    must say so at once. Where the network is up the download would start: skipped then."""
    import socket

    try:
        socket.getaddrinfo("s3-us-west-2.amazonaws.com", 443)
    except OSError:
        pass
    else:
        pytest.skip("this machine resolves the download hosts: the offline path is not reached")
    env = {**os.environ, "TEXT_RECOGNIZER_DATA_DIR": str(tmp_path / "data")}
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "text_recognizer.datasets.emnist"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - start
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no network (") and "'matlab.zip'" in last
    assert took < 20, f"the offline failure took {took:.1f} s"  # python + numpy start included


# ----- every entry point survives a closed output pipe ---------------------------------------------

PY = f'"{sys.executable}"'
SCRIPTS = re.findall(r'"([a-z-]+)=([\w.]+):(\w+)"', (PROJECT_ROOT / "setup.py").read_text())


def piped(command: str, tmp_path: Path) -> tuple[int, str]:
    """``command | head -n 0`` in a real shell: the reader is gone before the first write, so
    every write to stdout fails (EPIPE). Returns the command's exit status and its stderr."""
    env = {
        **os.environ,
        "TEXT_RECOGNIZER_DATA_DIR": str(tmp_path / "data"),
        "TEXT_RECOGNIZER_RUNS_DIR": str(tmp_path / "runs"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    done = subprocess.run(
        f"{command} | head -n 0; exit ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stderr


def quiet(rc: int, stderr: str) -> None:
    for word in ("Traceback", "BrokenPipe", "Exception ignored"):
        assert word not in stderr, stderr
    assert rc in (0, 141), (rc, stderr)  # 141: 128 + SIGPIPE, as a shell reports a closed pipe


def run_record(runs: Path) -> Path:
    from text_recognizer.config import validate_config

    run = runs / "grid" / "a"
    run.mkdir(parents=True)
    config = validate_config(
        {
            "experiment_group": "grid",
            "run_name": "a",
            "dataset": "SyntheticCharactersDataset",
            "model": "CharacterModel",
            "network": "mlp",
        }
    )
    (run / "config.json").write_text(json.dumps(config))
    (run / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 1.0, "val_loss": 0.9}\n')
    (run / "summary.json").write_text('{"status": "finished", "val_loss": 0.9, "wall_time": 1}\n')
    return runs / "grid"


@pytest.mark.parametrize(
    "command",
    [
        f"{PY} training/run_sweep.py --help",
        "bash tasks/gpu_status.sh --json",
        "bash tasks/gpu_status.sh",
        f"{PY} -m text_recognizer.leasing.gpu_manager status",
        f"{PY} training/prepare_experiments.py training/experiments/sample.json",
        f"{PY} training/local_sweep.py --check training/sweep_mnist.yaml",
        f"{PY} training/run_experiment.py --print-config "
        """'{"dataset": "SyntheticCharactersDataset", "model": "CharacterModel", "network": "mlp"}'""",
        f"""{PY} -m text_recognizer.datasets.synthetic_characters '{{"num_train": 20, "num_test": 10}}'""",
    ],
)
def test_command_piped_into_a_closed_reader_ends_quietly(command: str, tmp_path: Path) -> None:
    quiet(*piped(command, tmp_path))


def test_compare_runs_piped_into_a_closed_reader_ends_quietly(tmp_path: Path) -> None:
    group = run_record(tmp_path / "runs")
    quiet(*piped(f"{PY} training/compare_runs.py {group} --no-plot", tmp_path))


@pytest.mark.parametrize("name,module,function", SCRIPTS, ids=[s[0] for s in SCRIPTS])
def test_console_script_help_piped_ends_quietly(
    name: str, module: str, function: str, tmp_path: Path
) -> None:
    call = f"import sys; from {module} import {function} as main; sys.exit(main(['--help']))"
    quiet(*piped(f'{PY} -c "{call}"', tmp_path))


def test_every_command_goes_through_the_pipe_safe_wrapper() -> None:
    """Each console script's target is wrapped by errors.command or hands its work to
    errors.run_command (which flushes stdout inside, where a closed pipe can be caught)."""
    import importlib
    import inspect

    for _, module, function in SCRIPTS:
        main = getattr(importlib.import_module(module), function)
        wrapped = getattr(main, "__wrapped__", None) is not None
        assert wrapped or "run_command(" in inspect.getsource(main), f"{module}:{function}"
