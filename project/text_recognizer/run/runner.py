"""Run one experiment from a validated config: data, model, training, test, run record, W&B.

Order matters: the data is loaded, the network built and ``train_args.lm`` loaded for the model's
mapping before the run folder exists, so a bad data_dir, a network that cannot take the data or a
corrupt or foreign LM fails with exit 2 and leaves nothing behind.

A finished run keeps its best weights (``weights.pt``, unless ``save`` is off) and drops its
resume checkpoints (unless ``keep_checkpoints``); an interrupted or failed one keeps them for
``--resume``. ``wall_time`` in summary.json is the total over every part of a resumed run.
"""

from __future__ import annotations

import contextlib
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from text_recognizer import progress
from text_recognizer.config import TrainArgs
from text_recognizer.errors import (
    Interrupted,
    StorageError,
    UserError,
    one_line,
    print_error,
    storage_cause,
    storage_error,
)
from text_recognizer.fileio import write_text_atomic
from text_recognizer.run.records import RunRecord


def run_experiment(
    config: dict[str, Any],
    gpu: int | None = None,
    save: bool = True,
    use_wandb: bool = True,
    resume_dir: Path | None = None,
    resume_state: dict[str, Any] | None = None,
    keep_checkpoints: bool = False,
) -> tuple[int, dict[str, Any]]:
    """Train and test one model; return (exit code, summary). UserError propagates (exit 2).

    ``save`` keeps the best weights (weights.pt); ``keep_checkpoints`` keeps checkpoint.pt and
    checkpoint.prev.pt once the run has finished (they are removed then by default).
    ``resume_dir`` continues that run in place from ``resume_state`` (its loaded checkpoint, or
    None to restart it from epoch 1). Under torchrun only rank 0 keeps a record; the other ranks
    train their shard and return (0, {}).
    """
    import torch

    from text_recognizer.datasets import DATASETS
    from text_recognizer.leasing.devices import select_device, select_num_threads
    from text_recognizer.models import MODELS
    from text_recognizer.models.finetune import init_from
    from text_recognizer.models.training import check_fits
    from text_recognizer.run import distributed
    from text_recognizer.run.heap import keep_freed_memory

    started = time.time()
    label = config.get("run_name") or (
        f"{config.get('experiment_group')}: {config['dataset']} {config['network']}"
    )
    dist_info = distributed.from_env()
    if dist_info is not None and dist_info.world_size > 1:
        # torchrun places ranks on GPUs by LOCAL_RANK itself, so no GPUManager lease here.
        device = distributed.setup(dist_info, gpu is not None and torch.cuda.is_available())
    else:
        dist_info = None
        device = select_device(gpu, run_name=label)  # leases a GPU before CUDA is touched
    is_main = dist_info is None or dist_info.is_main
    args = TrainArgs.from_config(config["train_args"])
    threads = select_num_threads(args.num_threads, run_name=label)
    if threads:
        torch.set_num_threads(threads)
    if torch.device(device).type == "cpu":
        keep_freed_memory()  # a CPU step stops faulting its activations in again (run/heap.py)
    if dist_info is not None and not is_main:
        torch.distributed.barrier()  # rank 0 generates and caches the data first
    dataset = DATASETS[config["dataset"]].load()(**config["dataset_args"]).load_or_generate_data()
    if dist_info is not None and is_main:
        torch.distributed.barrier()
    progress.line(dataset.summary())
    model_cls = MODELS[config["model"]].load()
    seed_everything(args.seed)  # the initial weights and all that follows depend on it alone
    model = model_cls(dataset.config(), config["network"], config["network_args"], device)
    if args.lm is not None:  # loaded (checked) now, not at the first validation: exit 2 here
        from text_recognizer.decoding import load_lm

        load_lm(args.lm, model.mapping)
    if config.get("init_from") and resume_state is None:  # a resume restores its own weights
        resized = init_from(model, config["init_from"])
        model.notes.update(init_from=config["init_from"], init_classes=resized.as_dict())
    if resume_state is not None:
        check_fits(resume_state, model.network, resume_dir)  # before the record is touched
    if not is_main:
        return _run_worker(model, dataset, args, resume_state)
    record = _open_record(config, resume_dir, resume_state)
    record.part_started = started  # this part's share of wall_time counts from here
    choices = {"save": save, "keep_checkpoints": keep_checkpoints}
    _mark_running(record, model, device, started, dist_info, resume_dir is None, choices)
    return _run_recorded(model, dataset, config, args, record, choices, use_wandb, resume_state)


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python's RNGs: the one place a run's randomness starts from."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _mark_running(
    record: RunRecord,
    model: Any,
    device: str,
    started: float,
    dist_info: Any,
    created: bool,
    choices: dict[str, bool],
) -> None:
    """summary.json says ``running``, or (disk full, read-only) the run never starts: exit 2.

    A resumed run keeps its first ``started_at`` and says when it was resumed (``resumed_at``)."""
    import torch

    from text_recognizer.leasing.devices import lease_fields
    from text_recognizer.leasing.slurm_job import record_fields

    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started))
    resumed = isinstance(record.summary.get("started_at"), str) and not created
    try:
        record.update_summary(
            status="running",
            run_dir=str(record.dir),
            device=device,
            host=platform.node(),
            torch=torch.__version__,
            num_params=sum(p.numel() for p in model.network.parameters()),
            **({"resumed_at": stamp} if resumed else {"started_at": stamp}),
            **choices,
            num_threads=torch.get_num_threads(),
            world_size=dist_info.world_size if dist_info is not None else 1,
            **{k: v for k, v in model.notes.items() if k.startswith("init_")},
            **lease_fields(),
            **record_fields(),  # the Slurm job, array task, node and GPUs (absent outside Slurm)
        )
    except OSError as e:
        _abandon(record, created)
        raise storage_error(e, record.summary_path) from None


def _run_recorded(
    model: Any,
    dataset: Any,
    config: dict[str, Any],
    args: TrainArgs,
    record: RunRecord,
    choices: dict[str, bool],
    use_wandb: bool,
    resume_state: dict[str, Any] | None,
) -> tuple[int, dict[str, Any]]:
    """Train and test inside the record: every way the run ends is written to summary.json."""
    from text_recognizer.leasing.devices import label_leases, release_leases
    from text_recognizer.run import distributed
    from text_recognizer.run.tracking import Tracker

    progress.line(f"run folder: {record.dir}")
    label_leases(run=f"{record.dir.parent.name}/{record.dir.name}", run_dir=str(record.dir))
    tracker = Tracker(use_wandb, config, record.dir, record.dir.name)
    exit_code, finished = 0, False
    try:
        _train_and_test(model, dataset, config, args, record, tracker, choices, resume_state)
        finished = True
    except (KeyboardInterrupt, Interrupted):
        exit_code = 130
        if record.summary.get("status") != "finished":  # a finished record stays finished
            record.try_update_summary(status="interrupted")
        progress.line(
            f"interrupted; partial record in {record.dir}; continue with: "
            f"python training/run_experiment.py --resume {record.dir}",
        )
    except StorageError as e:
        exit_code = _storage_failure(record, e)
    except UserError as e:
        record.try_update_summary(status="failed", error=one_line(e))
        raise
    except Exception as e:
        cause = storage_cause(e)  # a write that met a full disk, however a library wrapped it
        if cause is not None:
            exit_code = _storage_failure(record, storage_error(cause, cause.filename or record.dir))
        else:
            exit_code = _failure(record, e)
    finally:
        record.try_update_summary(wall_time=record.wall_time())
        record.close()
        tracker.finish(exit_code)
        release_leases()
        distributed.teardown(finished)
    return exit_code, record.summary


def _open_record(
    config: dict[str, Any], resume_dir: Path | None, resume_state: dict[str, Any] | None
) -> RunRecord:
    """Create (or, to resume, reopen) and lock the run folder; write the small records first.

    A full disk or read-only runs folder here is a StorageError (exit 2) and a folder this call
    created is removed again, so a run that never started leaves nothing behind.
    """
    record = None
    try:
        if resume_dir is not None:
            record = RunRecord.reopen(Path(resume_dir))
            record.wall_time_before = _seconds(record.summary.get("wall_time"))
            record.reserve_space()
            history = resume_state["history"] if resume_state else []
            record.rewind_metrics(history)  # epochs after the checkpoint are redone
            record.update_summary(
                resumed_from_epoch=resume_state["epoch"] if resume_state else 0,
                resumes=_count(record.summary.get("resumes")) + 1,
                error=None,
            )
        else:
            record = RunRecord.create(config)
            record.reserve_space()
            record.write_config(config)
    except OSError as e:
        if record is not None:
            _abandon(record, resume_dir is None)
        raise storage_error(e, e.filename or (record.dir if record else "the run folder")) from None
    return record


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _seconds(value: Any) -> float:
    """A recorded wall time, or 0 for anything else (a hand-edited or damaged summary)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if ok and 0 <= value < 1e10 else 0.0


def _abandon(record: RunRecord, created: bool) -> None:
    """A run that could not start: remove the folder it created, or just let go of the old one."""
    if created:
        record.discard()
    else:
        record.close()


def _train_and_test(
    model: Any,
    dataset: Any,
    config: dict[str, Any],
    args: TrainArgs,
    record: RunRecord,
    tracker: Any,
    choices: dict[str, bool],
    resume_state: dict[str, Any] | None,
) -> None:
    """Fit with per-epoch records and checkpoints, read the test split once, write the results;
    then drop the resume checkpoints unless told to keep them."""
    from text_recognizer.fileio import write_json_atomic
    from text_recognizer.models.training import check_checkpoint
    from text_recognizer.run.checkpoint import Checkpointer
    from text_recognizer.run.media import EpochImages, report_run
    from text_recognizer.run.records import best_epoch, config_digest, read_json

    epoch_images = EpochImages(model, dataset, tracker, args)  # W&B only: a fixed sample

    def on_epoch_end(metrics: dict[str, Any]) -> None:
        record.log_epoch(metrics)
        # The total so far: a run killed outright (SIGKILL) still counts its epochs when resumed.
        record.try_update_summary(wall_time=record.wall_time())
        tracker.log({**metrics, **epoch_images.media()})

    checkpoint = Checkpointer(record.dir, check_checkpoint, config=config)
    history = model.fit(dataset, args, on_epoch_end, checkpoint=checkpoint, resume=resume_state)
    # The test split is read once (beam search, if chosen, runs once): the metrics, the
    # worst/best examples and the plots all come from this one reading.
    test = model.read_split(dataset.x_test, dataset.y_test, args)
    best = best_epoch(history)  # the epoch whose weights fit() kept: those were just tested
    fields: dict[str, Any] = {f"test_{k}": v for k, v in test.metrics.items()}
    fields.update({k: v for k, v in best.items() if k.startswith("val_")})
    fields.update(epochs_run=len(history), best_epoch=best["epoch"], **model.notes)
    examples = model.examples(test, k=10)  # worst and best
    if examples:
        write_json_atomic(record.dir / "predictions.json", examples)
        progress.line("test predictions, worst and best (predictions.json):")
        for e in examples:
            progress.line("  " + "  ".join(f"{k} {v!r}" for k, v in e.items()))
    if choices["save"]:
        fields["weights"] = str(model.save_weights(record.weights_path, config))
    # PNG plots in the run folder; W&B media and weights artifact. Never raises.
    plots = report_run(model, test, record.dir, tracker, examples, fields.get("weights"))
    if plots:
        fields["plots"] = plots
    # config.json as trained: a resume tells an edit from it once the checkpoints are gone.
    fields["config_digest"] = config_digest(read_json(record.config_path))
    record.update_summary(status="finished", **fields)
    tracker.summary(fields)
    scores = "  ".join(f"{k} {v:.4f}" for k, v in test.metrics.items())
    progress.line(f"test: {scores}  ({record.dir})")
    if not choices["keep_checkpoints"]:
        record.remove_checkpoints()  # last: a run that did not get this far keeps them to resume


def _storage_failure(record: RunRecord, error: StorageError) -> int:
    """The disk filled up (or went read-only) mid-run: one line, a ``failed`` record, exit 1.

    The space reserve is handed back first, so summary.json and error.log still fit."""
    record.release_space()
    message = f"{one_line(error)} (then continue this run with --resume {record.dir})"
    if record.summary.get("status") != "finished":
        record.try_update_summary(status="failed", error=message)
    with contextlib.suppress(OSError):
        write_text_atomic(record.dir / "error.log", traceback.format_exc())
    print_error(StorageError(message))
    return 1


def _failure(record: RunRecord, e: Exception) -> int:
    """Any other failure while running: traceback in error.log, one line on stderr, exit 1."""
    with contextlib.suppress(OSError):
        write_text_atomic(record.dir / "error.log", traceback.format_exc())
    if record.summary.get("status") != "finished":  # a failure after it finished: still finished
        record.try_update_summary(status="failed", error=one_line(f"{type(e).__name__}: {e}"))
    progress.line(
        f"run failed: {type(e).__name__}: {one_line(e)[:500]} "
        f"(traceback in {record.dir / 'error.log'})",
    )
    return 1


def _run_worker(
    model: Any, dataset: Any, args: TrainArgs, resume_state: dict[str, Any] | None
) -> tuple[int, dict[str, Any]]:
    """A torchrun rank other than 0: train its shard in step with the others, record nothing."""
    from text_recognizer.run import distributed

    code, finished = 0, False
    try:
        model.fit(dataset, args, resume=resume_state)
        finished = True  # then wait for rank 0 to test and write the record before leaving
    except (KeyboardInterrupt, Interrupted):
        code = 130
    except Exception as e:
        code = 1
        print(f"rank {distributed.rank()} failed: {type(e).__name__}: {e}", file=sys.__stderr__)
    finally:
        distributed.teardown(finished)
    return code, {}
