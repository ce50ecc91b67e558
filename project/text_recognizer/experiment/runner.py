"""Run one experiment from a validated config: data, model, training, test, run record, W&B.

Order matters: the data is loaded and the network built before the run folder exists, so a bad
data_dir or a network that cannot take the data fails with exit 2 and leaves nothing behind.
"""

from __future__ import annotations

import platform
import sys
import time
import traceback
from typing import Any

from text_recognizer.errors import UserError


class Interrupted(BaseException):
    """SIGTERM or SIGINT during a run: recorded as ``interrupted``."""


def run_experiment(
    config: dict[str, Any], gpu: int | None = None, save: bool = False, use_wandb: bool = True
) -> tuple[int, dict[str, Any]]:
    """Train and test one model; return (exit code, summary). UserError propagates (exit 2)."""
    import torch

    from text_recognizer.datasets import DATASETS
    from text_recognizer.experiment.devices import (
        label_leases,
        lease_fields,
        release_leases,
        select_device,
        select_num_threads,
    )
    from text_recognizer.experiment.records import RunRecord
    from text_recognizer.experiment.tracking import Tracker
    from text_recognizer.models import MODELS

    started = time.time()
    label = config.get("run_name") or (
        f"{config.get('experiment_group')}: {config['dataset']} {config['network']}"
    )
    device = select_device(gpu, run_name=label)  # leases a GPU (--gpu=-1) before CUDA is touched
    train_args = config["train_args"]
    threads = select_num_threads(train_args.get("num_threads"), run_name=label)
    if threads:
        torch.set_num_threads(threads)
    dataset = DATASETS[config["dataset"]].load()(**config["dataset_args"]).load_or_generate_data()
    print(dataset.summary(), file=sys.stderr)
    model_cls = MODELS[config["model"]].load()
    torch.manual_seed(train_args["seed"])  # the initial weights depend on the seed alone
    model = model_cls(dataset.config(), config["network"], config["network_args"], device, config)

    record = RunRecord.create(config)
    record.write_config(config)
    record.update_summary(
        status="running",
        run_dir=str(record.dir),
        device=device,
        host=platform.node(),
        torch=torch.__version__,
        num_params=sum(p.numel() for p in model.network.parameters()),
        started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        num_threads=torch.get_num_threads(),
        **lease_fields(),
    )
    print(f"run folder: {record.dir}", file=sys.stderr)
    label_leases(run=f"{record.dir.parent.name}/{record.dir.name}", run_dir=str(record.dir))
    tracker = Tracker(use_wandb, config, record.dir, record.dir.name)

    def on_epoch_end(metrics: dict[str, Any]) -> None:
        record.log_epoch(metrics)
        tracker.log(metrics)

    exit_code = 0
    try:
        history = model.fit(dataset, train_args, on_epoch_end=on_epoch_end)
        test = model.evaluate(dataset.x_test, dataset.y_test, train_args)
        best = min(history, key=lambda m: m.get("val_loss", m["train_loss"]))
        fields: dict[str, Any] = {f"test_{k}": v for k, v in test.items()}
        fields.update({k: v for k, v in best.items() if k.startswith("val_")})
        fields.update(epochs_run=len(history), best_epoch=best["epoch"], **model.notes)
        examples = model.examples(dataset.x_test, dataset.y_test, k=10)  # worst and best
        if examples:
            from text_recognizer.fileio import write_json_atomic

            write_json_atomic(record.dir / "predictions.json", examples)
            print("test predictions, worst and best (predictions.json):", file=sys.stderr)
            for e in examples:
                print("  " + "  ".join(f"{k} {v!r}" for k, v in e.items()), file=sys.stderr)
        if save:
            fields["weights"] = str(model.save_weights(record.weights_path))
        record.update_summary(status="finished", **fields)
        tracker.summary(fields)
        print(
            "test: " + "  ".join(f"{k} {v:.4f}" for k, v in test.items()) + f"  ({record.dir})",
            file=sys.stderr,
        )
    except (KeyboardInterrupt, Interrupted):
        exit_code = 130
        record.update_summary(status="interrupted")
        print(f"interrupted; partial record in {record.dir}", file=sys.stderr)
    except UserError as e:
        record.update_summary(status="failed", error=str(e))
        raise
    except Exception as e:
        exit_code = 1
        (record.dir / "error.log").write_text(traceback.format_exc())
        record.update_summary(status="failed", error=f"{type(e).__name__}: {e}")
        print(
            f"run failed: {type(e).__name__}: {e} (traceback in {record.dir / 'error.log'})",
            file=sys.stderr,
        )
    finally:
        record.update_summary(wall_time=time.time() - started)
        tracker.finish(exit_code)
        release_leases()
    return exit_code, record.summary
