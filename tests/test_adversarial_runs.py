"""Hostile configs, full and read-only disks, concurrent and edited resumes (issue 10).

Each case checks the README's contract: exit 2 with one ``error:`` line before anything is written
for bad input, exit 1 with one ``error:`` line and a ``failed`` record for a disk that fills up
mid-run, no traceback on stderr, no file left outside the run folder. Runs are tiny and mostly
in-process (no torch import per case); the lock test needs a second process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT, fill_disk, memory_capped, run_script
from text_recognizer.config import parse_config_text, validate_config
from text_recognizer.errors import ConfigError
from text_recognizer.run.cli import run_experiment_main
from text_recognizer.run.records import LOCK_NAME, RESERVE_NAME, RunRecord
from text_recognizer.spec import Param

CONFIG = {
    "experiment_group": "adv",
    "run_name": "run",
    "dataset": "SyntheticCharactersDataset",
    "dataset_args": {"num_train": 300, "num_test": 100, "charset": "digits"},
    "model": "CharacterModel",
    "network": "mlp",
    "network_args": {"num_layers": 1, "layer_size": 16},
    "train_args": {"epochs": 2, "num_threads": 1, "batch_size": 64},
}
LINES = {
    "dataset": "SyntheticLinesDataset",
    "model": "LineModelCtc",
    "network": "line_lstm_ctc",
}


def with_(**sections) -> dict:
    config = json.loads(json.dumps(CONFIG))
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    return config


def one_error_line(stderr: str) -> str:
    """The single ``error:`` line of stderr; fails on a traceback or a second error line."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def cli(capsys, *argv: str) -> tuple[int, str]:
    """run_experiment_main in this process (no torch import per run): (exit code, stderr)."""
    code = run_experiment_main([*argv, "--nowandb"])
    return code, capsys.readouterr().err


def files_of(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-epoch run (constant schedule) to copy: tests edit or corrupt their copy.
    Its checkpoints are kept (a finished run drops them by default), so it can train on."""
    runs = tmp_path_factory.mktemp("finished")
    old = os.environ["TEXT_RECOGNIZER_RUNS_DIR"]
    os.environ["TEXT_RECOGNIZER_RUNS_DIR"] = str(runs)
    try:
        assert run_experiment_main([json.dumps(CONFIG), "--keep-checkpoints", "--nowandb"]) == 0
    finally:
        os.environ["TEXT_RECOGNIZER_RUNS_DIR"] = old
    return runs / "adv" / "run"


def copy_run(finished: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "adv" / "run"))


# ----- defect 18, 33 and friends: hostile values are refused at validation ---------------------------
BAD_VALUES = [
    (with_(train_args={"learning_rate": float("nan")}), "learning_rate must be a number"),
    (with_(train_args={"weight_decay": float("inf")}), "weight_decay must be a number"),
    (with_(train_args={"seed": 2**32}), "seed must be an integer >= 0 and <= 4294967295"),
    (with_(train_args={"seed": 1e29}), "seed must be an integer"),
    (with_(dataset_args={"seed": 2**64}), "dataset_args.seed must be an integer"),
    (with_(dataset_args={"num_train": 10**12}), "num_train must be an integer >= 1 and <= "),
    (with_(dataset_args={"num_test": 10**9}), "num_test must be an integer >= 1 and <= "),
    (with_(train_args={"batch_size": 100_000}), "batch_size must be an integer >= 1 and <= 65536"),
    (with_(train_args={"learning_rate": 10**400}), "learning_rate must be a number > 0.0"),
    (with_(train_args={"grad_clip": 1e308}), "grad_clip must be a number > 0.0 and <= "),
    (with_(network_args={"layer_size": 20_000}), "layer_size must be an integer >= 1 and <= 16384"),
    (
        {**CONFIG, "network": "lenet", "network_args": {"conv_channels": [8] * 100}},
        "conv_channels must be a list of at least 1 items and at most 8",
    ),
    (
        {**CONFIG, "network": "lenet", "network_args": {"conv_channels": [8, 10**7]}},
        "conv_channels[1] must be an integer >= 1 and <= 2048",
    ),
    (
        {**LINES, "network_args": {"lstm_hidden": 100000}},
        "lstm_hidden must be an integer >= 1 and <= 8192",
    ),
    (
        {**LINES, "dataset_args": {"fonts": ["a.ttf"] * 10000}},
        "fonts must be a list of at least 0 items and at most 256",
    ),
    (with_(run_name="run\n"), "run_name 'run\\n' must be"),
    (with_(experiment_group="grp\n"), "experiment_group 'grp\\n' must be"),
    (with_(run_name="x" * 10**6), "run_name 'xxxx"),
    (with_(train_args={"optimizer": ["adam"] * 10**5}), "optimizer must be one of"),
    (with_(dataset_args={"data_dir": "d" * 5000}), "data_dir 'dddd"),
    (with_(dataset_args={"data_dir": "a\0b"}), "is not a folder"),
    (with_(dataset="D" * 10**6), "unknown dataset 'DDDD"),
    (with_(train_args={"k" * 10**6: 1}), "unknown key 'kkkk"),
    (with_(dataset_args={"charset": {"a": 1}}), "charset must be one of"),
]


@pytest.mark.parametrize("config, fragment", BAD_VALUES)
def test_absurd_and_nonfinite_values_are_refused_in_one_short_line(config, fragment):
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    message = str(err.value)
    assert fragment in message
    assert "\n" not in message and len(message) < 400, message


def test_every_number_and_list_parameter_declares_an_upper_bound():
    with pytest.raises(TypeError, match="needs max"):
        Param(int, 1, min=0)
    with pytest.raises(TypeError, match="needs max"):
        Param(float, 1.0, gt=0.0)
    with pytest.raises(TypeError, match="needs max_items"):
        Param(list, [], item_type=str)


def test_nan_in_json_text_is_refused(tmp_path):
    text = json.dumps(CONFIG).replace('"epochs": 2', '"epochs": 2, "learning_rate": NaN')
    with pytest.raises(ConfigError, match=r"learning_rate must be a number .* got nan"):
        validate_config(parse_config_text(text))


# ----- defects 16, 17: config files and texts that are not configs -----------------------------------
def bad_inputs(tmp_path: Path) -> list[tuple[str, str]]:
    """(config argument, fragment of the one-line error) for hostile config inputs."""
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes(
        json.dumps(with_(run_name="caf\u00e9"), ensure_ascii=False).encode("latin-1")
    )
    deep = tmp_path / "deep.json"
    deep.write_text('{"train_args": ' + "[" * 100000 + "]" * 100000 + "}")
    huge = tmp_path / "huge.json"
    huge.write_text('{"run_name": "' + "x" * (2 << 20) + '"}')
    folder = tmp_path / "folder.json"
    folder.mkdir()
    return [
        (str(latin1), "is not UTF-8 text (byte 0xe9"),
        (str(deep), "nested too deeply"),
        (str(huge), "is over the size limit of 1 MiB"),
        (str(folder), "does not exist"),
        ('{"seed": 1' + "0" * 5000 + "}", "malformed JSON in config"),
        ("x" * 5000, "neither JSON nor an existing file"),
        ('{"a": ' * 50000 + "1" + "}" * 50000, "nested too deeply"),
        (json.dumps(with_(run_name="ok\n")), "run_name 'ok\\n' must be"),
    ]


def test_hostile_config_inputs_exit_2_in_one_line_and_write_nothing(runs_dir, tmp_path, capsys):
    for argument, fragment in bad_inputs(tmp_path):
        code, err = cli(capsys, argument)
        assert code == 2, (argument[:80], err)
        assert fragment in one_error_line(err), (fragment, err)
    assert not runs_dir.exists()


def test_unreadable_config_file_is_one_line(tmp_path, monkeypatch, capsys):
    path = tmp_path / "secret.json"
    path.write_text(json.dumps(CONFIG))
    from text_recognizer import fileio

    real_open = os.open

    def denied(name, *args, **kwargs):
        if str(name) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(fileio.os, "open", denied)
    code, err = cli(capsys, str(path))
    assert code == 2
    assert f"cannot read config file {path}: permission denied" in one_error_line(err)


def test_hostile_torchrun_environment_is_bad_input(runs_dir, monkeypatch, capsys):
    monkeypatch.setenv("RANK", "zero")
    code, err = cli(capsys, json.dumps(CONFIG))
    assert code == 2 and "RANK='zero' must be a small integer" in one_error_line(err)
    assert not runs_dir.exists()


# ----- defect 30: files of a run honour the umask ----------------------------------------------------
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_run_files_honour_the_umask(runs_dir, capsys, umask, mode):
    old = os.umask(umask)
    try:
        code, err = cli(capsys, json.dumps(CONFIG), "--keep-checkpoints")
    finally:
        os.umask(old)
    assert code == 0, err
    modes = files_of(runs_dir / "adv" / "run")
    assert {"config.json", "summary.json", "metrics.jsonl", "checkpoint.pt", LOCK_NAME} <= set(
        modes
    )
    assert {name: mode for name in modes} == modes
    assert RESERVE_NAME not in modes  # handed back when the run ends


# ----- defects 20, 16 (records), 31: resuming corrupt or edited runs --------------------------------
@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("summary.json", b'{"status": "runn', "summary.json is not valid JSON"),
        ("summary.json", b"[1, 2]", "summary.json holds a JSON list, not an object"),
        ("config.json", b"\xff\xfe{}", "config.json is not UTF-8 text"),
        ("config.json", b'{"dataset": 1}', "config.json: the config is missing 'model'"),
    ],
)
def test_resume_of_a_corrupt_record_is_one_line(
    finished, tmp_path, capsys, name, content, fragment
):
    run_dir = copy_run(finished, tmp_path)
    (run_dir / name).write_bytes(content)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    code, err = cli(capsys, "--resume", str(run_dir))
    assert code == 2
    assert fragment in one_error_line(err)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before


def edit_config(run_dir: Path, **train_args) -> None:
    config = json.loads((run_dir / "config.json").read_text())
    config["train_args"].update(train_args)
    (run_dir / "config.json").write_text(json.dumps(config))


def test_resume_continues_to_a_raised_epoch_count(finished, tmp_path, capsys):
    run_dir = copy_run(finished, tmp_path)
    edit_config(run_dir, epochs=3)
    code, err = cli(capsys, "--resume", str(run_dir))
    assert code == 0, err
    assert "train_args.epochs changed from 2 to 3" in err
    record = RunRecord.read(run_dir)
    assert [m["epoch"] for m in record["metrics"]] == [1, 2, 3]
    assert record["summary"]["status"] == "finished" and record["summary"]["epochs_run"] == 3


@pytest.mark.parametrize(
    "edit, fragment",
    [
        ({"learning_rate": 0.5}, "was edited at 'train_args.learning_rate'"),
        ({"epochs": 1}, "sets train_args.epochs to 1, but the run has trained 2 epochs"),
        (
            {"epochs": 4, "lr_schedule": "cosine"},
            "was edited at 'train_args.lr_schedule'",
        ),
    ],
)
def test_resume_refuses_other_edits(finished, tmp_path, capsys, edit, fragment):
    run_dir = copy_run(finished, tmp_path)
    edit_config(run_dir, **edit)
    summary = (run_dir / "summary.json").read_bytes()
    code, err = cli(capsys, "--resume", str(run_dir))
    assert code == 2 and fragment in one_error_line(err)
    assert (run_dir / "summary.json").read_bytes() == summary


@pytest.mark.parametrize(
    "delete, fragment",
    [
        (["epochs", "batch_size"], "was edited at 'train_args.batch_size'"),
        (["epochs"], None),  # the default (10 epochs) is a raised count: training goes on
    ],
)
def test_deleting_a_key_is_an_edit_to_its_default(finished, tmp_path, capsys, delete, fragment):
    # Deleting train_args.epochs skipped the whole edit check: a resume then trained nothing (or
    # trained on at another learning rate than config.json said) and recorded "finished".
    run_dir = copy_run(finished, tmp_path)
    config = json.loads((run_dir / "config.json").read_text())
    for key in delete:
        del config["train_args"][key]
    (run_dir / "config.json").write_text(json.dumps(config))
    if fragment is not None:
        code, err = cli(capsys, "--resume", str(run_dir))
        assert code == 2 and fragment in one_error_line(err)
        return
    code, err = cli(capsys, "--resume", str(run_dir))
    assert code == 0 and "train_args.epochs changed from 2 to 10" in err
    assert [m["epoch"] for m in RunRecord.read(run_dir)["metrics"]] == list(range(1, 11))


def test_resume_refuses_more_epochs_under_a_cosine_schedule(runs_dir, capsys):
    config = with_(train_args={"lr_schedule": "cosine"})
    assert cli(capsys, json.dumps(config), "--keep-checkpoints")[0] == 0
    run_dir = runs_dir / "adv" / "run"
    edit_config(run_dir, epochs=3)
    code, err = cli(capsys, "--resume", str(run_dir))
    assert code == 2
    assert "cosine learning-rate schedule was planned over 2 epochs" in one_error_line(err)


# ----- defects 6, 19: full and read-only disks -------------------------------------------------------
def test_full_disk_mid_run_fails_in_one_line_then_resume_works(small_disk, monkeypatch, capsys):
    runs = small_disk("8m")
    monkeypatch.setenv("TEXT_RECOGNIZER_RUNS_DIR", str(runs))
    # Room for the small records, not for the first checkpoint (about 1.6 MB for this network).
    fill_disk(runs, leave=400 << 10)
    config = with_(network_args={"num_layers": 1, "layer_size": 128})
    code, err = cli(capsys, json.dumps(config))
    assert code == 1, err
    line = one_error_line(err)
    run_dir = runs / "adv" / "run"
    assert f"cannot write {run_dir / 'checkpoint.pt'}: the disk is full" in line
    assert f"--resume {run_dir}" in line
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "the disk is full" in summary["error"]
    assert (run_dir / "error.log").is_file()
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]

    (runs / ".filler").unlink()  # free the space: the same run resumes and finishes
    code, err = cli(capsys, "--resume", str(run_dir))
    assert code == 0, err
    record = RunRecord.read(run_dir)
    assert record["summary"]["status"] == "finished" and record["summary"]["error"] is None
    assert [m["epoch"] for m in record["metrics"]] == [1, 2]


def test_full_disk_before_the_run_starts_is_bad_input_and_leaves_nothing(
    small_disk, monkeypatch, capsys
):
    runs = small_disk("1m")
    monkeypatch.setenv("TEXT_RECOGNIZER_RUNS_DIR", str(runs))
    (runs / "adv").mkdir()
    fill_disk(runs)
    code, err = cli(capsys, json.dumps(CONFIG))
    assert code == 2
    assert "the disk is full; free some space and run again" in one_error_line(err)
    assert sorted(p.name for p in runs.rglob("*")) == [".filler", "adv"]


def test_read_only_runs_folder_is_one_line(small_disk, monkeypatch, capsys):
    runs = small_disk("1m")
    remount = subprocess.run(
        ["mount", "-o", "remount,ro", str(runs)], capture_output=True, text=True
    )
    if remount.returncode != 0:
        pytest.skip(f"cannot remount the tmpfs read-only: {remount.stderr.strip()}")
    monkeypatch.setenv("TEXT_RECOGNIZER_RUNS_DIR", str(runs))
    code, err = cli(capsys, json.dumps(CONFIG))
    assert code == 2
    assert "the filesystem is read-only" in one_error_line(err)


# ----- defects 5, 28: one writer per run; dead writers' temp files are cleared -----------------------
PAUSING = textwrap.dedent(
    """
    import sys
    from text_recognizer.run.checkpoint import Checkpointer
    from text_recognizer.run.cli import run_experiment_main
    save = Checkpointer.save
    def pausing_save(self, state):
        save(self, state)
        if state["epoch"] == 1:
            print("paused", flush=True)
            sys.stdin.readline()
    Checkpointer.save = pausing_save
    sys.exit(run_experiment_main(sys.argv[1:]))
    """
)


def test_resume_of_a_running_run_is_refused_until_its_writer_dies(runs_dir, tmp_path):
    from text_recognizer.fileio import _host_tag

    env = {**os.environ, "TEXT_RECOGNIZER_RUNS_DIR": str(runs_dir)}
    with open(tmp_path / "stderr", "w") as stderr:
        writer = subprocess.Popen(
            [sys.executable, "-c", PAUSING, json.dumps(CONFIG), "--nowandb"],
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    watchdog = threading.Timer(120, writer.kill)  # every wait is bounded
    watchdog.start()
    try:
        assert writer.stdout.readline().strip() == "paused", (tmp_path / "stderr").read_text()
        run_dir = runs_dir / "adv" / "run"
        before = (run_dir / "summary.json").read_bytes()
        out = run_script(
            "training/run_experiment.py", "--resume", str(run_dir), "--nowandb", env=env, timeout=60
        )
        assert out.returncode == 2, out.stderr
        line = one_error_line(out.stderr)
        assert "is in use by a run still running" in line and f"pid {writer.pid}" in line
        assert (run_dir / "summary.json").read_bytes() == before
        (run_dir / LOCK_NAME).unlink()  # the lock is on the folder: removing the note opens nothing
        out = run_script(
            "training/run_experiment.py", "--resume", str(run_dir), "--nowandb", env=env, timeout=60
        )
        assert out.returncode == 2
        assert "is in use by a run still running" in one_error_line(out.stderr)
        assert (run_dir / "summary.json").read_bytes() == before

        writer.send_signal(signal.SIGKILL)  # the kernel drops the lock with the process
        writer.wait(timeout=30)
    finally:
        watchdog.cancel()
        writer.kill()
    stale = run_dir / f".summary.json.{_host_tag()}-{writer.pid}.abc123.tmp"
    stale.write_text("{half a summ")
    out = run_script(
        "training/run_experiment.py", "--resume", str(run_dir), "--nowandb", env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert not stale.exists()
    record = RunRecord.read(run_dir)
    assert [m["epoch"] for m in record["metrics"]] == [1, 2]  # no epoch twice
    assert record["summary"]["status"] == "finished"


# ----- found while testing: planted files, malformed checkpoints, bad flags --------------------------
def test_a_planted_lock_symlink_never_touches_its_target(finished, tmp_path, capsys):
    run_dir = copy_run(finished, tmp_path)
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    (run_dir / LOCK_NAME).unlink()
    (run_dir / LOCK_NAME).symlink_to(victim)
    code, err = cli(capsys, "--resume", str(run_dir))
    assert code == 2 and f"cannot write {run_dir / LOCK_NAME}" in one_error_line(err)
    assert victim.read_text() == "keep me"


def test_a_checkpoint_with_a_malformed_history_is_not_resumed(finished, tmp_path, capsys):
    import torch

    run_dir = copy_run(finished, tmp_path)
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        state = torch.load(run_dir / name, weights_only=True)
        torch.save({**state, "history": [1] * state["epoch"]}, run_dir / name)
    code, err = cli(capsys, "--resume", str(run_dir))
    assert code == 2 and "no usable checkpoint" in one_error_line(err)
    assert "malformed 'history'" in err


@pytest.mark.parametrize("flag", ["--gpu=abc", "--bogus"])
def test_bad_flags_are_one_line(capsys, flag):
    with pytest.raises(SystemExit) as exit_:
        run_experiment_main([json.dumps(CONFIG), flag])
    assert exit_.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert flag.split("=")[0] in line and line.endswith("--help)")


def test_a_checkpoint_that_is_a_fifo_or_oversized_never_hangs_or_loads(
    finished, tmp_path, capsys, monkeypatch
):
    # A FIFO named checkpoint.pt would block torch.load for ever; an archive whose metadata record
    # is huge would be read whole into memory. Both are skipped like a corrupt file.
    from text_recognizer.models import weights_file

    run_dir = copy_run(finished, tmp_path)
    (run_dir / "checkpoint.pt").unlink()
    os.mkfifo(run_dir / "checkpoint.pt")
    monkeypatch.setattr(weights_file, "MAX_PICKLE_BYTES", 100)
    code, err = cli(capsys, "--resume", str(run_dir))
    line = one_error_line(err)
    assert code == 2 and "no usable checkpoint" in line
    assert "not a regular file" in line and "its metadata is" in line


def test_a_checkpoint_whose_tensors_do_not_fit_the_network_is_bad_input(finished, tmp_path, capsys):
    import torch

    run_dir = copy_run(finished, tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())  # a finished run is not resumed
    (run_dir / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        state = torch.load(run_dir / name, weights_only=True)
        model = {k: torch.zeros(3, 3) for k in state["model"]}
        torch.save({**state, "model": model}, run_dir / name)
    summary_before = json.loads((run_dir / "summary.json").read_text())
    code, err = cli(capsys, "--resume", str(run_dir))
    line = one_error_line(err)
    assert code == 2 and "checkpoint" in line and "does not fit" in line
    assert json.loads((run_dir / "summary.json").read_text())["status"] == summary_before["status"]


def test_a_network_too_large_to_train_is_bad_input(runs_dir, capsys):
    # Each argument within its bound, together 17 G parameters: refused from a build on the meta
    # device (no memory), before the data or the run folder, instead of meeting the OOM killer.
    config = with_(network_args={"num_layers": 64, "layer_size": 16384})
    code, err = cli(capsys, json.dumps(config))
    line = one_error_line(err)
    assert code == 2 and "parameters, more than the 1,000,000,000" in line
    assert not (runs_dir / "adv").exists()


def test_running_out_of_memory_before_the_run_is_one_line(tmp_path):
    # 1,000,000 synthetic 128x128 images need 15 GiB; under a 2 GiB cap the allocation fails.
    config = with_(dataset_args={"num_train": 1_000_000, "image_size": 128}, run_name="oom")
    env = {
        "TEXT_RECOGNIZER_RUNS_DIR": str(tmp_path / "runs"),
        "TEXT_RECOGNIZER_DATA_DIR": str(tmp_path / "data"),
    }
    out = run_script(
        *memory_capped(2 << 30), "training/run_experiment.py", json.dumps(config), "--nowandb",
        env=env, timeout=120,
    )  # fmt: skip
    line = one_error_line(out.stderr)
    assert out.returncode == 1 and "out of memory" in line and "lower num_train" in line


def test_torchrun_rank_without_master_addr_is_bad_input(runs_dir, monkeypatch, capsys):
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, err = cli(capsys, json.dumps(CONFIG))
    assert code == 2 and "needs MASTER_ADDR (a host) and MASTER_PORT" in one_error_line(err)
    assert not runs_dir.exists()


def test_sigterm_ends_a_rank_waiting_for_the_others(runs_dir, tmp_path):
    # Rank 0 of 2 blocks in the rendezvous (in C++) until rank 1 comes: SIGTERM and Ctrl-C were
    # ignored there (still alive after 10 minutes). They now end it at once.
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "TEXT_RECOGNIZER_RUNS_DIR": str(runs_dir),
        "RANK": "0",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
    command = [sys.executable, "training/run_experiment.py", json.dumps(CONFIG), "--nowandb"]
    proc = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # rank 0 hosts the store: listening means waiting
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, "rank 0 ended before the rendezvous"
            time.sleep(0.1)
        else:
            pytest.fail("rank 0 never started the rendezvous")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()
