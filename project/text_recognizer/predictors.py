"""Predictors: a saved model applied to a user's images, with the training preprocessing.

A predictor is built from a run directory or a weights file alone: the mapping, the input shape
and the ``preprocessing`` dict travel in the weights' ``data_config``, and every image goes
through :func:`text_recognizer.preprocessing.preprocess_image`, the function the datasets use,
so what the model sees at serving time is what it saw in training. Inputs may be paths, numpy
arrays or PIL images in any size, colour mode and polarity (dark ink on light paper is detected
from the border and inverted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from text_recognizer.errors import UserError
from text_recognizer.preprocessing import preprocess_image, preprocessing_for

WEIGHTS_NAME = "weights.pt"


@dataclass
class Prediction:
    """The text read from one image and the model's probability for it."""

    text: str
    confidence: float


def weights_path(path: str | Path) -> Path:
    """A run directory or a weights file -> the weights file; a one-line error if there is none."""
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / WEIGHTS_NAME).is_file():
            raise UserError(
                f"run directory {p} has no {WEIGHTS_NAME} (train with --save to keep weights)"
            )
        return p / WEIGHTS_NAME
    if not p.is_file():
        raise UserError(f"no run directory or weights file at {p}")
    return p


class Predictor:
    """Base: loads the model, preprocesses images like training, predicts in batches."""

    kind: ClassVar[str] = ""
    model_class: ClassVar[str] = ""

    def __init__(self, model: Any) -> None:
        if not isinstance(model, _model_base(self.model_class)):
            raise UserError(
                f"{type(self).__name__} needs a {self.kind} model ({self.model_class}), "
                f"got a {type(model).__name__}"
            )
        self.model = model
        self.model.network.eval()
        self.preprocessing = preprocessing_for(model.data_config, model.config)

    @classmethod
    def from_weights(cls, path: str | Path) -> Predictor:
        """Build from a weights file (``torch.load(weights_only=True)``, CPU)."""
        from text_recognizer.models.base import Model

        return cls(Model.load(weights_path(path)))

    @classmethod
    def from_run(cls, run_dir: str | Path) -> Predictor:
        """Build from a run directory holding ``weights.pt``."""
        return cls.from_weights(run_dir)

    @property
    def input_shape(self) -> tuple[int, int]:
        return (int(self.preprocessing["height"]), int(self.preprocessing["width"]))

    def prepare(self, image: Any) -> np.ndarray:
        """Any image -> the uint8 (H, W) white-on-black array the network takes."""
        return preprocess_image(image, self.preprocessing, polarity="auto")

    def predict(self, image: Any) -> Prediction:
        """Text and confidence for one image."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[Any], batch_size: int = 128) -> list[Prediction]:
        """Texts and confidences for many images, preprocessed one by one, run in batches."""
        if len(images) == 0:
            return []
        x = np.stack([self.prepare(image) for image in images])
        return self.predict_arrays(x, batch_size)

    def predict_arrays(self, x: np.ndarray, batch_size: int = 128) -> list[Prediction]:
        """Predictions for already prepared (N, H, W) uint8 arrays (what evaluate.py runs)."""
        raise NotImplementedError


def _model_base(name: str) -> type:
    from text_recognizer.models.character_model import CharacterModel
    from text_recognizer.models.line_model import LineModel

    return {"CharacterModel": CharacterModel, "LineModel": LineModel}[name]


class CharacterPredictor(Predictor):
    """One character per image: the most likely class and its softmax probability."""

    kind = "character"
    model_class = "CharacterModel"

    @torch.no_grad()
    def predict_arrays(self, x: np.ndarray, batch_size: int = 128) -> list[Prediction]:
        model = self.model
        out: list[Prediction] = []
        for i in range(0, len(x), batch_size):
            xb = model.preprocess(model.to_tensor(np.ascontiguousarray(x[i : i + batch_size])))
            conf, idx = model.network(xb).float().softmax(-1).max(-1)
            out += [
                Prediction(model.mapping[int(j)], float(c))
                for j, c in zip(idx.tolist(), conf.tolist(), strict=True)
            ]
        return out


class LinePredictor(Predictor):
    """A line of text per image (LineModel or LineModelCtc); ``beam`` > 1 uses CTC beam search."""

    kind = "line"
    model_class = "LineModel"

    def __init__(self, model: Any, beam: int | None = None) -> None:
        super().__init__(model)
        if beam is not None and beam > 1:
            self.set_beam(beam)

    def set_beam(self, beam: int) -> None:
        """Decode with CTC beam search of this width (1 = greedy); CTC models only."""
        if not hasattr(self.model, "beam_width"):
            raise UserError(f"--beam needs a CTC line model; this is a {type(self.model).__name__}")
        if beam < 1:
            raise UserError(f"--beam must be >= 1, got {beam}")
        self.model.decode = "beam" if beam > 1 else "greedy"
        self.model.beam_width = beam

    @classmethod
    def from_weights(cls, path: str | Path, beam: int | None = None) -> LinePredictor:
        from text_recognizer.models.base import Model

        return cls(Model.load(weights_path(path)), beam=beam)

    @classmethod
    def from_run(cls, run_dir: str | Path, beam: int | None = None) -> LinePredictor:
        return cls.from_weights(run_dir, beam=beam)

    def predict_arrays(self, x: np.ndarray, batch_size: int = 128) -> list[Prediction]:
        texts, confidences = self.model.predict(np.ascontiguousarray(x), batch_size=batch_size)
        return [Prediction(t, float(c)) for t, c in zip(texts, confidences, strict=True)]


def load_predictor(path: str | Path, beam: int | None = None) -> Predictor:
    """The right predictor for whatever model a run or weights file holds."""
    from text_recognizer.models.base import Model
    from text_recognizer.models.character_model import CharacterModel

    model = Model.load(weights_path(path))
    if isinstance(model, CharacterModel):
        if beam is not None and beam > 1:
            raise UserError("--beam applies to CTC line models; this is a CharacterModel")
        return CharacterPredictor(model)
    return LinePredictor(model, beam=beam)
