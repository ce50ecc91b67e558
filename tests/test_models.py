"""The training loop: learning, schedules, clipping, early stopping, seeding, save/load."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from text_recognizer.config import TRAIN_ARGS, TrainArgs
from text_recognizer.errors import DataError
from text_recognizer.models.base import Model
from text_recognizer.models.character_model import CharacterModel
from text_recognizer.models.training import lr_factor

DATA_CONFIG = {
    "dataset": "Toy",
    "kind": "characters",
    "input_shape": [8, 8],
    "output_shape": [2],
    "mapping": ["-", "|"],
}


def toy_dataset(n: int = 256, seed: int = 0) -> SimpleNamespace:
    """Horizontal vs vertical bars: trivially learnable, so a working loop must learn it."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    x = np.zeros((n, 8, 8), dtype=np.uint8)
    pos = rng.integers(1, 7, size=n)
    for i in range(n):
        if y[i] == 0:
            x[i, pos[i], :] = 255
        else:
            x[i, :, pos[i]] = 255
    split = int(n * 0.75)
    return SimpleNamespace(
        x_train=x[:split], y_train=y[:split], x_val=x[split:], y_val=y[split:], x_test=x, y_test=y
    )


def train_args(**overrides) -> TrainArgs:
    args = {k: p.default for k, p in TRAIN_ARGS.items()}
    args.update(batch_size=32, epochs=3, learning_rate=0.01, num_threads=1)
    args.update(overrides)
    return TrainArgs.from_config(args)


def model(network_args=None) -> CharacterModel:
    torch.manual_seed(0)  # initial weights independent of test order
    return CharacterModel(DATA_CONFIG, "mlp", network_args or {"num_layers": 1, "layer_size": 16})


def test_fit_learns_and_reports_every_epoch():
    m, data, seen = model(), toy_dataset(), []
    history = m.fit(data, train_args(epochs=4), on_epoch_end=seen.append)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4] and seen == history
    assert history[-1]["val_accuracy"] > 0.95
    assert m.evaluate(data.x_test, data.y_test)["accuracy"] > 0.95


def test_seed_makes_training_repeatable():
    data = toy_dataset()
    torch.manual_seed(0)
    a = model()
    a.fit(data, train_args(seed=3))
    torch.manual_seed(0)
    b = model()
    b.fit(data, train_args(seed=3))
    for pa, pb in zip(a.network.parameters(), b.network.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)


def test_cosine_schedule_and_warmup():
    factor = lr_factor(train_args(epochs=4, lr_schedule="cosine", warmup_epochs=1), 10)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0)
    assert factor(25) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert factor(40) == pytest.approx(0.0, abs=1e-9)
    constant = lr_factor(train_args(), 10)
    assert {constant(s) for s in range(30)} == {1.0}
    m, data = model(), toy_dataset()
    history = m.fit(data, train_args(lr_schedule="cosine", epochs=3))
    lrs = [h["learning_rate"] for h in history]
    assert lrs[0] > lrs[1] > lrs[2] and lrs[2] < 1e-6


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_optimizers(optimizer):
    m, held_out = model(), toy_dataset(seed=1)
    lr = 0.3 if optimizer == "sgd" else 0.05
    m.fit(
        toy_dataset(),
        train_args(optimizer=optimizer, learning_rate=lr, epochs=6, weight_decay=1e-4),
    )
    assert m.evaluate(held_out.x_test, held_out.y_test)["accuracy"] > 0.9


def test_grad_clip_bounds_the_update(monkeypatch):
    norms = []
    original = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **k):
        params = list(params)
        total = original(params, max_norm, *a, **k)
        norms.append(torch.sqrt(sum(p.grad.pow(2).sum() for p in params)).item())
        return total

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    model().fit(toy_dataset(), train_args(grad_clip=0.01, epochs=1))
    assert norms and max(norms) <= 0.01 + 1e-6


def test_early_stopping_and_best_weights_restored():
    m, data = model(), toy_dataset()
    # A learning rate of ~0 means no epoch beats the first by min_delta: stop after patience.
    history = m.fit(
        data,
        train_args(
            epochs=20, learning_rate=1e-9, early_stopping_patience=2, early_stopping_min_delta=0.5
        ),
    )
    assert len(history) == 3
    best_val = min(h["val_loss"] for h in history)
    assert m.evaluate(data.x_val, data.y_val)["loss"] == pytest.approx(best_val, rel=1e-5)


def test_nonfinite_batches_are_skipped_counted_and_stop_the_run_when_persistent():
    from text_recognizer.errors import RunFailed

    class FlakyLoss(CharacterModel):
        calls = 0

        def loss(self, outputs, targets):
            FlakyLoss.calls += 1
            loss = super().loss(outputs, targets)
            return loss * float("nan") if self.network.training and FlakyLoss.calls <= 2 else loss

    torch.manual_seed(0)
    m, data = FlakyLoss(DATA_CONFIG, "mlp", {"num_layers": 1, "layer_size": 16}), toy_dataset()
    before = [p.detach().clone() for p in m.network.parameters()]
    history = m.fit(data, train_args(epochs=3))
    assert history[0]["nonfinite_batches"] == 2 and "nonfinite_batches" not in history[1]
    assert all(math.isfinite(p.sum().item()) for p in m.network.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, m.network.parameters(), strict=True))
    assert history[-1]["val_accuracy"] > 0.9

    broken = model()
    with torch.no_grad():
        for p in broken.network.parameters():
            p.fill_(float("nan"))
    with pytest.raises(RunFailed, match="3 batches in a row had a non-finite loss or gradient"):
        broken.fit(data, train_args(epochs=1, max_nonfinite_batches=3))


def test_save_and_load_roundtrip(tmp_path):
    m, data = model(), toy_dataset()
    m.fit(data, train_args(epochs=2))
    path = m.save_weights(tmp_path / "w.pt")
    assert not list(tmp_path.glob(".*tmp"))
    loaded = Model.load(path)
    assert isinstance(loaded, CharacterModel) and loaded.mapping == ["-", "|"]
    assert loaded.evaluate(data.x_test, data.y_test) == m.evaluate(data.x_test, data.y_test)
    assert loaded.predict_on_image(data.x_test[0]) == m.predict_on_image(data.x_test[0])
    assert CharacterModel.load(path).mapping == ["-", "|"]


def test_load_refuses_bad_files(tmp_path):
    with pytest.raises(DataError, match="no weights file"):
        Model.load(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(DataError, match="not a readable weights file"):
        Model.load(junk)
    future = tmp_path / "future.pt"
    torch.save({"format_version": 99}, future)
    with pytest.raises(DataError, match="weights format 99"):
        Model.load(future)
    evil = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "obj": SimpleNamespace(a=1)}, evil)
    with pytest.raises(DataError, match="not a readable weights file"):
        Model.load(evil)  # weights_only=True refuses arbitrary objects


def test_nonfinite_gradient_with_finite_loss_is_skipped_when_clipping():
    m, data = model(), toy_dataset()
    calls = {"n": 0}

    def poison(grad):
        calls["n"] += 1
        return grad * float("inf") if calls["n"] <= 2 else grad

    next(m.network.parameters()).register_hook(poison)
    history = m.fit(data, train_args(epochs=2, grad_clip=1.0))
    assert history[0]["nonfinite_batches"] == 2
    assert all(torch.isfinite(p).all() for p in m.network.parameters())
