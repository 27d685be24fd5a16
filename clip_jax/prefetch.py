"""Host batches read ahead on a thread and placed on the device mesh, so that the next
batch is already on the devices (sharded) while the current step runs.

Each item carries the iterator position *after* its batch, so the checkpointed position
is that of the batches actually consumed, not of those read ahead.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable

from clip_jax.sharding import global_batch


class Prefetcher:
    def __init__(self, iterator, mesh, depth: int = 2, transform: Callable[[dict], dict] | None = None):
        self._iterator = iterator
        self._mesh = mesh
        self._transform = transform or (lambda batch: batch)
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            while not self._stop.is_set():
                batch = next(self._iterator)
                position = self._iterator.get_state()
                item = (global_batch(self._transform(batch), self._mesh), position)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            self._queue.put(error)

    def next(self):
        """(global batch, iterator position after it); re-raises the reader's error."""
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self):
        self._stop.set()
        while self._thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=0.1)
