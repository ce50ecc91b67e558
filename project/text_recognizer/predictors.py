"""Predictors: a saved model applied to a user's images, with the training preprocessing.

A predictor is built from a run directory or a weights file alone: the mapping, the input shape
and the ``preprocessing`` dict travel in the weights' ``data_config`` (or, for ``runtime="onnx"``,
in the metadata of a model ``python -m text_recognizer.export`` wrote), and every image goes
through :func:`text_recognizer.preprocessing.preprocess_image`, the function the datasets use,
so what the model sees at serving time is what it saw in training. Inputs may be paths, numpy
arrays or PIL images in any size, colour mode and polarity (dark ink on light paper is detected
from the border and inverted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from text_recognizer.errors import UserError
from text_recognizer.preprocessing import preprocess_image

if TYPE_CHECKING:
    from text_recognizer.decoding import Decoder

WEIGHTS_NAME = "weights.pt"
# What runs the network: torch (weights.pt) or onnxruntime (an exported model.onnx). Everything
# around the network (preprocessing, batching, decoding) is the same code for both.
RUNTIMES = ("torch", "onnx")
# Pixels per batch: 128 EMNIST characters are 0.1 M; wider inputs get smaller batches, so memory
# stays bounded whatever input shape the weights declare.
BATCH_PIXELS = 1 << 22


@dataclass(frozen=True)
class LmChoice:
    """A ``--lm PATH --lm-weight W --lm-bonus B`` choice: beam search with that character LM."""

    path: str
    weight: float = 1.0
    bonus: float = 0.0


@dataclass
class Prediction:
    """The text read from one image and the model's probability for it."""

    text: str
    confidence: float


def weights_path(path: str | Path) -> Path:
    """A run directory or a weights file -> the weights file; a one-line error if there is none."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / WEIGHTS_NAME
        if p.is_dir():
            raise UserError(f"{p} is a folder, not a weights file")
        if not p.is_file():
            raise UserError(
                f"run directory {p.parent} has no {WEIGHTS_NAME} (a run writes it when it "
                "finishes, unless trained with --no-save)"
            )
        return p
    if p.exists() and not p.is_file():
        raise UserError(f"{p} is not a regular file (a device or pipe); give a weights.pt file")
    if not p.is_file():
        raise UserError(f"no run directory or weights file at {p}")
    return p


class Predictor:
    """A saved model, its decoder and the training preprocessing, applied to images in batches.

    Reading goes through ``Model.predict`` (the model kind's one prediction path) with this
    predictor's own :class:`Decoder`: choosing beam search here never changes a shared model.
    """

    kind: ClassVar[str] = ""
    model_class: ClassVar[str] = ""

    def __init__(
        self,
        model: Any,
        config: dict[str, Any] | None = None,
        beam: int | None = None,
        lm: LmChoice | None = None,
    ) -> None:
        if not isinstance(model, _model_base(self.model_class)):
            raise UserError(
                f"{type(self).__name__} needs a {self.kind} model ({self.model_class}), "
                f"got a {type(model).__name__}"
            )
        self.model = model
        self.model.network.eval()
        self.config = config or {}  # the run's config, saved with the weights: provenance only
        self.preprocessing = model.preprocessing
        self.decoder = self._decoder(config or {}, beam, lm)

    def _decoder(self, config: dict[str, Any], beam: int | None, lm: LmChoice | None) -> Decoder:
        """``beam`` (a --beam option) if given, else the decoding the run was trained with."""
        from text_recognizer.decoding import GREEDY

        if lm is not None:
            raise UserError(f"--lm needs a CTC line model; this is a {type(self.model).__name__}")
        if beam is not None:
            beam = check_beam(beam)
            if beam > 1:
                raise UserError(
                    f"--beam needs a CTC line model; this is a {type(self.model).__name__}"
                )
        return GREEDY

    @classmethod
    def from_weights(
        cls,
        path: str | Path,
        beam: int | None = None,
        lm: LmChoice | None = None,
        runtime: str = "torch",
        threads: int | None = None,
    ) -> Predictor:
        """Build from a weights file (``torch.load(weights_only=True)``, CPU), or with
        ``runtime="onnx"`` from an exported ``.onnx`` (see :func:`load_model`)."""
        model, config = load_model(path, runtime, threads)
        return cls(model, config, beam, lm)

    @classmethod
    def from_run(
        cls, run_dir: str | Path, beam: int | None = None, lm: LmChoice | None = None
    ) -> Predictor:
        """Build from a run directory holding ``weights.pt``."""
        return cls.from_weights(run_dir, beam, lm)

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
        """Texts and confidences for many images, preprocessed a batch at a time (bounded memory)."""
        size = self.batch_size(batch_size)
        out: list[Prediction] = []
        for i in range(0, len(images), size):
            x = np.stack([self.prepare(image) for image in images[i : i + size]])
            out += self.predict_arrays(x, size)
        return out

    def batch_size(self, requested: int) -> int:
        """``requested``, lowered so that a batch holds at most BATCH_PIXELS input pixels."""
        height, width = self.input_shape
        return max(1, min(int(requested), BATCH_PIXELS // max(1, height * width)))

    def predict_arrays(self, x: np.ndarray, batch_size: int = 128) -> list[Prediction]:
        """Predictions for already prepared (N, H, W) uint8 arrays (what evaluate.py runs)."""
        x, size = np.ascontiguousarray(x), self.batch_size(batch_size)
        texts, confidences = self.model.predict(x, batch_size=size, decoder=self.decoder)
        return [Prediction(t, float(c)) for t, c in zip(texts, confidences, strict=True)]


def _model_base(name: str) -> type:
    from text_recognizer.models.character_model import CharacterModel
    from text_recognizer.models.line_model import LineModel

    return {"CharacterModel": CharacterModel, "LineModel": LineModel}[name]


class CharacterPredictor(Predictor):
    """One character per image: the most likely class and its softmax probability."""

    kind = "character"
    model_class = "CharacterModel"


class LinePredictor(Predictor):
    """A line of text per image (LineModel or LineModelCtc); ``beam`` > 1 uses CTC beam search,
    ``beam`` None the decoding the run was trained with."""

    kind = "line"
    model_class = "LineModel"

    def _decoder(self, config: dict[str, Any], beam: int | None, lm: LmChoice | None) -> Decoder:
        from text_recognizer.decoding import Decoder, decoder_from
        from text_recognizer.models.line_model_ctc import LineModelCtc

        if not isinstance(self.model, LineModelCtc):
            return super()._decoder(config, beam, lm)  # a fixed-length LineModel: nothing to choose
        if lm is not None:
            if beam == 1:
                raise UserError("--lm needs beam search; --beam 1 is greedy decoding")
            decoder = Decoder.with_lm(beam, lm.path, *check_lm(lm.weight, lm.bonus))
        elif beam is not None:
            decoder = Decoder.with_beam(check_beam(beam))
        else:
            try:
                decoder = decoder_from(config.get("train_args") or {})
            except (ValueError, TypeError) as e:  # a saved config's lm_weight out of bounds
                raise UserError(f"the run's train_args: {e}") from None
        return decoder.loaded(self.model.mapping)  # a missing or corrupt LM fails here, once


def load_predictor(
    path: str | Path,
    beam: int | None = None,
    lm: LmChoice | None = None,
    runtime: str = "torch",
    threads: int | None = None,
) -> Predictor:
    """The right predictor for whatever model a run, weights file or exported ONNX model holds
    (``runtime``: "torch" reads weights.pt, "onnx" an exported .onnx; ``threads``: see
    :func:`load_model`)."""
    from text_recognizer.models.character_model import CharacterModel

    if beam is not None:
        check_beam(beam)
    model, config = load_model(path, runtime, threads)
    if isinstance(model, CharacterModel):
        if beam is not None and beam > 1:
            raise UserError("--beam applies to CTC line models; this is a CharacterModel")
        if lm is not None:
            raise UserError("--lm applies to CTC line models; this is a CharacterModel")
        return CharacterPredictor(model, config)
    return LinePredictor(model, config, beam, lm)


def load_model(
    path: str | Path, runtime: str = "torch", threads: int | None = None
) -> tuple[Any, dict[str, Any]]:
    """(Model, run config) for ``runtime``: "torch" reads a run folder's weights.pt (or a weights
    file); "onnx" reads an exported model (a run folder's model.onnx, or an .onnx file) and puts
    an `onnx_runtime.OnnxNetwork` where the torch network would be, so ``Model.predict`` (batching,
    scaling, decoding) stays the one prediction path for both runtimes.

    ``threads``: onnxruntime's intra-op threads for this model's session (None: onnxruntime's
    default). Torch's threads are process-wide (``torch.set_num_threads``), not a model's, so
    asking for them here with ``runtime="torch"`` is refused rather than silently ignored.
    """
    if runtime not in RUNTIMES:
        raise UserError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}"[:200])
    from text_recognizer.onnx_runtime import check_threads, load_onnx_model

    if threads is not None:
        check_threads(threads)
    if runtime == "onnx":
        return load_onnx_model(path, threads)
    if threads is not None:
        raise UserError(
            "threads applies to the onnx runtime; torch's are process-wide (torch.set_num_threads)"
        )
    from text_recognizer.models.base import Model

    p = Path(path).expanduser()
    if p.suffix == ".onnx" and not p.is_dir():
        raise UserError(
            f"{p} is an exported ONNX model, not a weights file; read it with --runtime onnx "
            '(runtime="onnx")'
        )
    return Model.load_with_config(weights_path(p))


def check_beam(beam: object) -> int:
    """A beam width from the command line or a caller: 1 (greedy) to MAX_BEAM_WIDTH, else a
    one-line UserError saying what is valid."""
    from text_recognizer.decoding import check_beam_width

    try:
        return check_beam_width(beam, "--beam")
    except ValueError as e:
        raise UserError(f"{e} (1 = greedy decoding)") from None


def check_lm(weight: object, bonus: object) -> tuple[float, float]:
    """--lm-weight and --lm-bonus as floats, else a one-line UserError saying what is valid."""
    from text_recognizer.decoding import check_lm_weights

    try:
        return check_lm_weights(weight, bonus, ("--lm-weight", "--lm-bonus"))
    except ValueError as e:
        raise UserError(str(e)) from None


def add_lm_arguments(parser: Any) -> None:
    """--lm, --lm-weight, --lm-bonus: the same options on every reading command."""
    parser.add_argument(
        "--lm", default=None, metavar="ARPA", help="character n-gram LM: beam search with it"
    )
    parser.add_argument("--lm-weight", type=float, default=1.0, help="LM weight (default 1)")
    parser.add_argument("--lm-bonus", type=float, default=0.0, help="score per character")


def lm_choice(args: Any) -> LmChoice | None:
    """The LmChoice of parsed --lm options (checked: one line for a missing file or a bad
    weight), or None without --lm."""
    if args.lm is None:
        if args.lm_weight != 1.0 or args.lm_bonus != 0.0:
            raise UserError("--lm-weight and --lm-bonus need --lm")
        return None
    weight, bonus = check_lm(args.lm_weight, args.lm_bonus)
    path = Path(args.lm).expanduser()
    if not path.is_file():
        raise UserError(
            f"--lm {args.lm}: no such file (build one: python -m text_recognizer.lm build)"
        )
    if args.beam is not None and check_beam(args.beam) == 1:
        raise UserError("--lm needs beam search; --beam 1 is greedy decoding")
    return LmChoice(str(path), weight, bonus)
