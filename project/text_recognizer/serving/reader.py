"""The model behind the server: one predictor, read from many request threads at once.

Every answer comes from the project's predictors (``Predictor.prepare`` then
``Predictor.predict_arrays``, what ``python -m text_recognizer.predict`` runs), so the API reads
exactly what the command reads. What is shared between requests is never changed by one:

- the network is put in eval mode once, when the predictor is built; a request runs under
  ``torch.inference_mode`` (a per-thread setting) and never calls ``train()``;
- torch's thread count is set once, by the command, before serving;
- the greedy and beam decoders build their search state per call (flashlight's decoder object is
  made inside ``lm_ctc_decode``), but a KenLM model is one object shared by every call: decoding
  with a language model is serialised by a lock, as nothing documents flashlight's wrapper of it
  as safe across threads;
- a per-request ``beam`` gets its own predictor over the same model (cached per width);
- single images with the server's own decoder go through a `Batcher`: those that arrive while
  the model is busy share its next forward pass (``workers`` model threads);
- on the onnx runtime the model's network is an onnxruntime session, whose ``run`` is safe to
  call from several threads at once.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from text_recognizer.errors import UserError
from text_recognizer.serving.batcher import Batcher
from text_recognizer.serving.settings import DEFAULT_RUNTIME, MAX_SHARED_BATCH, RUNTIMES


def open_predictor(
    path: str | Path,
    beam: int | None = None,
    lm: Any = None,
    runtime: str = DEFAULT_RUNTIME,
    threads: int | None = None,
) -> Any:
    """The one place the server loads a model: ``predictors.load_predictor`` for ``runtime``.

    ``threads`` (onnxruntime's, per session) is passed on for onnx only: torch's threads are
    process-wide, set once by the command.
    """
    from text_recognizer import predictors

    if runtime not in RUNTIMES:
        raise UserError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    threads = threads if runtime == "onnx" else None
    return predictors.load_predictor(path, beam=beam, lm=lm, runtime=runtime, threads=threads)


def load_reader(
    path: str | Path,
    beam: int | None = None,
    lm: Any = None,
    runtime: str = DEFAULT_RUNTIME,
    threads: int | None = None,
    workers: int = 1,
    max_batch: int = MAX_SHARED_BATCH,
) -> Reader:
    """A Reader over the model at ``path`` (a run folder, weights file or, for onnx, a model)."""
    predictor = open_predictor(path, beam, lm, runtime, threads)
    return Reader(predictor, runtime, lm, workers, max_batch)


class Reader:
    """A predictor used by concurrent requests: images in, ``{"pred", "conf", "ms"}`` out."""

    def __init__(
        self,
        predictor: Any,
        runtime: str = DEFAULT_RUNTIME,
        lm: Any = None,
        workers: int = 1,
        max_batch: int = MAX_SHARED_BATCH,
    ) -> None:
        self.predictor = predictor
        self.runtime = runtime
        self.lm = lm
        self._by_beam: dict[int, Any] = {}
        self._by_beam_lock = threading.Lock()
        self._lm_lock = threading.Lock()
        self.batcher = Batcher(self._read_shared, workers, max_batch)

    def _read_shared(self, x: Any) -> list[Any]:
        """One model thread's batch of single-image requests (`Batcher`)."""
        with self._guard(self.predictor):
            return self.predictor.predict_arrays(x)

    def prepare(self, image: Any) -> Any:
        """A decoded image as the model takes it (the predictor's preprocessing)."""
        return self.predictor.prepare(image)

    @property
    def shares_batches(self) -> bool:
        """Whether single images are read together (``max_batch`` > 1; 1 reads each alone)."""
        return self.batcher.max_batch > 1

    def close(self) -> None:
        """Stop the model threads (the command's end; they are daemons otherwise)."""
        self.batcher.close()

    def submit(self, x: Any) -> Future:
        """The future `Prediction` of one prepared image, read with others queued meanwhile."""
        return self.batcher.submit(x)

    @property
    def kind(self) -> str:
        """``character`` or ``line`` (a line model also reads paragraphs)."""
        return str(self.predictor.kind)

    @property
    def mapping(self) -> list[str]:
        """The model's classes: ``[<blank>, <pad>, *characters]`` for line models."""
        mapping = getattr(self.predictor, "mapping", None)
        if mapping is None:
            mapping = self.predictor.model.mapping
        return list(mapping)

    def modes(self) -> list[str]:
        return ["line", "paragraph"] if self.kind == "line" else ["character"]

    def decoder_name(self, predictor: Any = None) -> str:
        """``greedy``, ``beam N`` or ``beam N + LM <file>``: how outputs become text."""
        decoder = getattr(predictor or self.predictor, "decoder", None)
        if decoder is None or decoder.method == "greedy":
            return "greedy"
        name = f"beam {decoder.beam_width}"
        return f"{name} + LM {Path(decoder.lm).name}" if decoder.lm else name

    def health(self) -> dict[str, Any]:
        from text_recognizer import __version__

        return {
            "status": "ok",
            "kind": self.kind,
            "modes": self.modes(),
            "mapping": self.mapping,
            "input_shape": list(self.predictor.input_shape),
            # how images are shaped for it (preprocessing.py): the page sizes its canvas by it
            "resize": str(self.predictor.preprocessing.get("resize", "")),
            "decoder": self.decoder_name(),
            "runtime": self.runtime,
            "version": __version__,
        }

    def predictor_for(self, beam: int | None) -> Any:
        """The predictor for a request's ``beam`` (None: the server's own decoder)."""
        if beam is None:
            return self.predictor
        from text_recognizer.models.line_model_ctc import LineModelCtc
        from text_recognizer.predictors import LinePredictor, check_beam

        beam = check_beam(beam)
        model = getattr(self.predictor, "model", None)
        if not isinstance(model, LineModelCtc):
            if beam == 1:  # greedy: what every other model reads with (predict --beam 1 too)
                return self.predictor
            raise UserError(
                f"beam applies to CTC line models; this server reads a {self.kind} model"
            )
        if beam == 1 and self.lm is not None:
            raise UserError("beam=1 is greedy decoding; this server's --lm needs beam search")
        with self._by_beam_lock:
            if beam not in self._by_beam:
                self._by_beam[beam] = LinePredictor(model, self.predictor.config, beam, self.lm)
            return self._by_beam[beam]

    def _guard(self, predictor: Any) -> Any:
        """Inference mode for this thread, and the LM lock where a KenLM model is shared."""
        import torch

        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if getattr(getattr(predictor, "decoder", None), "lm", None):
            stack.enter_context(self._lm_lock)
        return stack

    def read(self, images: Sequence[Any], beam: int | None = None) -> list[dict[str, Any]]:
        """Decoded PIL images -> one answer each; ``ms`` is the server's time per image."""
        import numpy as np

        predictor = self.predictor_for(beam)
        start = time.perf_counter()
        x = np.stack([predictor.prepare(image) for image in images])
        with self._guard(predictor):
            results = predictor.predict_arrays(x)
        ms = (time.perf_counter() - start) * 1000 / len(images)
        return [answer(r.text, r.confidence, ms) for r in results]

    def read_paragraph(self, image: Any, beam: int | None = None) -> dict[str, Any]:
        """A paragraph image -> its lines' texts, through ``paragraph_ocr.read_paragraph``."""
        from text_recognizer.paragraph_ocr import read_paragraph

        if self.kind != "line":
            raise UserError(f"paragraph reading needs a line model; this is a {self.kind} model")
        predictor = self.predictor_for(beam)
        start = time.perf_counter()
        with self._guard(predictor):
            text, bands = read_paragraph(image, predictor)
        ms = (time.perf_counter() - start) * 1000
        return {**answer(text, None, ms), "lines": [list(band) for band in bands]}


def answer(text: str, confidence: float | None, ms: float) -> dict[str, Any]:
    """One reading as the API shows it (a NaN confidence, from a diverged model, is null)."""
    conf = None if confidence is None or not math.isfinite(confidence) else float(confidence)
    return {"pred": text, "conf": conf, "ms": round(ms, 3)}
