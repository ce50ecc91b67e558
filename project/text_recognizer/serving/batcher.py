"""Requests read together: single-image requests that arrive while the model is busy share its
next forward pass.

A server reads many one-line requests at once. Run one forward each and every core works on a
batch of one (CPU time per line is higher, and requests wait on each other in the thread pool);
batched, an LSTM line network spends 0.6x the CPU time per line at a batch of 8. So each request
hands its prepared array to `Batcher.submit` and gets a future; ``workers`` model threads each
take whatever is queued when they become free (up to ``max_batch``) and run it as one batch. Nothing
waits for a batch to fill: alone, a request runs at once as a batch of one, so a sequential client
gets exactly what ``python -m text_recognizer.predict`` answers; under load batches form by
themselves. Results in a batch can differ from a batch of one in the last float bits (another
kernel path), never in shape or order.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

RunBatch = Callable[[np.ndarray], Sequence[Any]]


class Batcher:
    """``workers`` threads running ``run(batch)`` on the (H, W) arrays submitted meanwhile."""

    def __init__(self, run: RunBatch, workers: int, max_batch: int) -> None:
        if workers < 1 or max_batch < 1:
            raise ValueError(f"workers and max_batch must be >= 1, got {workers}, {max_batch}")
        self.run, self.max_batch = run, max_batch
        self._queue: queue.SimpleQueue[tuple[np.ndarray, Future] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"model-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, x: np.ndarray) -> Future:
        """The future result of ``run`` for the one array ``x`` (its row of a batch)."""
        future: Future = Future()
        self._queue.put((x, future))
        return future

    def close(self) -> None:
        """Stop the threads once the queued work is done."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=30)

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:  # what is queued now; never wait for more
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:  # close(): finish this batch, then stop
                    self._queue.put(None)
                    break
                batch.append(item)
            live = [(x, f) for x, f in batch if f.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                results = self.run(np.stack([x for x, _ in live]))
            except BaseException as e:  # each request gets the error; the thread goes on
                for _, future in live:
                    future.set_exception(e)
                continue
            for (_, future), result in zip(live, results, strict=True):
                future.set_result(result)
