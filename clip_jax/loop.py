"""Small pieces of the training loop, one concern each: when to act (`itstime`), the
throughput meter, the cache of compiled train steps (which owns their FLOP counts), and
the preemption notice (SIGTERM on one host, agreed by all).  The trainer composes them;
each is tested on its own.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from typing import Any, Callable, Iterator


def itstime(step: int, every: int, last: bool = False) -> bool:
    """True every `every` steps (never when every <= 0) and at the last step."""
    return last or (every > 0 and step % every == 0)


class Throughput:
    """Examples/s, data wait, compute time and MFU over the steps since the last read.

    A window is restarted by `reset()` (after a compilation, whose time is not training)
    and by every `read()`."""

    def __init__(self, global_batch: int, devices: int, peak_flops_per_device: float | None):
        self.global_batch, self.devices, self.peak = global_batch, devices, peak_flops_per_device
        self.reset()

    def reset(self) -> None:
        self._start, self._steps, self._data_wait, self._flops = time.perf_counter(), 0, 0.0, 0.0

    @contextlib.contextmanager
    def waiting_for_data(self) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self._data_wait += time.perf_counter() - start

    def count(self, flops_per_device: float) -> None:
        """One step done, of `flops_per_device` model FLOPs on each device."""
        self._steps += 1
        self._flops += flops_per_device

    def read(self) -> dict:
        elapsed = time.perf_counter() - self._start
        steps = max(self._steps, 1)
        examples = self._steps * self.global_batch
        metrics = {
            "examples_per_s": examples / elapsed,
            "examples_per_s_per_device": examples / elapsed / self.devices,
            "data_wait_s": self._data_wait / steps,
            "compute_s": (elapsed - self._data_wait) / steps,
            "step_time_s": elapsed / steps,
        }
        if self.peak and self._flops:
            metrics["mfu"] = self._flops / elapsed / self.peak
        self.reset()
        return metrics


class CompiledSteps:
    """The train step compiled once per (model, text length): a model differs between
    FLIP's masked and unmasked phases, and text lengths between trimmed batches.  Each
    entry carries its model FLOPs per device, for MFU."""

    def __init__(self, make_step: Callable[[Any], Any], count_flops: Callable[[Any, int], float]):
        self._make_step, self._count_flops = make_step, count_flops
        self._jitted: dict[Any, Any] = {}
        self._compiled: dict[tuple[Any, int], tuple[Any, float]] = {}

    def get(self, model, state, batch, on_compile: Callable[[], None] = lambda: None) -> tuple[Any, float]:
        """(compiled step, FLOPs per device) for this model and the batch's text length."""
        length = batch["tokens"].shape[1]
        key = (model, length)
        if key not in self._compiled:
            start = time.perf_counter()
            if model not in self._jitted:
                self._jitted[model] = self._make_step(model)
            compiled = self._jitted[model].lower(state, batch).compile()
            self._compiled[key] = (compiled, self._count_flops(model, length))
            logging.info("compiled the train step for %d text positions in %.1fs", length,
                         time.perf_counter() - start)
            on_compile()
        return self._compiled[key]


@contextlib.contextmanager
def sigterm_flag() -> Iterator[threading.Event]:
    """An event set when SIGTERM arrives (preemption), for the loop to save and stop at
    the end of its step; the previous handler comes back on exit.  Signals reach only
    the main thread, so elsewhere the event is never set."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: event.set())
    try:
        yield event
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def preemption_notice() -> Iterator[Callable[[int], bool]]:
    """A function `reached(step)` that every host calls once per step, in step order:
    True when the run must save this step and stop.

    One process: SIGTERM seen (sigterm_flag).  Several: JAX's preemption service, which
    catches SIGTERM in any one process (a preempted VM, a SLURM signal to one task),
    tells the others through the coordination service, and makes every host return True
    at the same step, the one after the newest any host had reached; so all hosts save
    the same step and none waits in a collective the others never enter.  (A Python
    SIGTERM handler would replace the service's, so none is installed there.)"""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        yield multihost_utils.reached_preemption_sync_point
        return
    with sigterm_flag() as event:
        yield lambda step: event.is_set()


__all__ = ["CompiledSteps", "Throughput", "itstime", "preemption_notice", "sigterm_flag"]
