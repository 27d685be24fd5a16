"""clip_jax.loop: the training loop's small parts, each on its own."""
import os
import signal
import threading
import time

import pytest

from clip_jax.loop import CompiledSteps, Throughput, itstime, sigterm_flag


def test_itstime():
    assert [s for s in range(1, 11) if itstime(s, 4)] == [4, 8]
    assert [s for s in range(1, 11) if itstime(s, 4, last=s == 10)] == [4, 8, 10]
    assert not any(itstime(s, 0) for s in range(1, 5))  # 0 turns it off
    assert itstime(3, 0, last=True)


def test_throughput_counts_one_window_at_a_time():
    meter = Throughput(global_batch=64, devices=8, peak_flops_per_device=1e12)
    with meter.waiting_for_data():
        time.sleep(0.02)
    meter.count(2e9)
    meter.count(2e9)
    time.sleep(0.02)
    read = meter.read()
    elapsed = 2 * read["step_time_s"]
    assert read["examples_per_s"] == pytest.approx(128 / elapsed)
    assert read["examples_per_s_per_device"] == pytest.approx(read["examples_per_s"] / 8)
    assert 0.01 <= read["data_wait_s"] <= read["step_time_s"]
    assert read["compute_s"] == pytest.approx(read["step_time_s"] - read["data_wait_s"])
    assert read["mfu"] == pytest.approx(4e9 / elapsed / 1e12)
    assert meter.read()["data_wait_s"] == 0.0  # the window restarted
    assert "mfu" not in Throughput(64, 8, None).read()  # no peak known, no MFU


def test_compiled_steps_compile_once_per_model_and_text_length():
    import jax
    import jax.numpy as jnp

    made, compiles = [], []

    def make_step(model):
        made.append(model)
        return jax.jit(lambda state, batch: (state + model * batch["tokens"].sum(), {}))

    steps = CompiledSteps(make_step, lambda model, length: 10.0 * length)
    state = jnp.float32(0)
    short, long = {"tokens": jnp.ones((2, 16))}, {"tokens": jnp.ones((2, 77))}
    for model, batch in [(1, short), (1, short), (1, long), (2, short), (1, long)]:
        step, flops = steps.get(model, state, batch, on_compile=lambda: compiles.append(1))
        assert flops == 10.0 * batch["tokens"].shape[1]
        state, _ = step(state, batch)
    assert made == [1, 2] and len(compiles) == 3
    assert float(state) == 32 + 32 + 154 + 2 * 32 + 154


def test_sigterm_sets_the_flag_and_restores_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    with sigterm_flag() as stop:
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.time() + 5
        while not stop.is_set() and time.time() < deadline:
            time.sleep(0.01)
        assert stop.is_set()
    assert signal.getsignal(signal.SIGTERM) is before

    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("flag", sigterm_flag().__enter__()))
    thread.start()
    thread.join()
    assert not result["flag"].is_set()  # off the main thread: a flag that is never set
