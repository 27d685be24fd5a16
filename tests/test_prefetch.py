"""clip_jax.prefetch: batches are read ahead and already on the devices, sharded over
the batch axes, when the loop takes them; positions follow consumption; errors surface."""
import threading

import jax
import numpy as np
import pytest

from clip_jax.prefetch import Prefetcher
from clip_jax.sharding import batch_sharding, make_mesh


class Counting:
    """A resumable iterator of uint8 image batches that records how far it was read."""

    def __init__(self, fail_at=None):
        self.position, self.fail_at = 0, fail_at
        self.read = threading.Semaphore(0)

    def __next__(self):
        if self.position == self.fail_at:
            raise OSError("shard unreadable")
        self.position += 1
        self.read.release()
        return {"images": np.full((8, 4, 4, 3), self.position, np.uint8), "tokens": np.ones((8, 5), np.int32)}

    def get_state(self):
        return {"position": self.position}


def test_the_next_batch_is_on_the_devices_before_it_is_asked_for():
    mesh = make_mesh([("data", -1), ("fsdp", 1)])
    source = Counting()
    prefetcher = Prefetcher(source, mesh, depth=2)
    try:
        batch, position = prefetcher.next()
        assert position == {"position": 1}
        assert batch["images"].dtype == np.uint8  # crosses as uint8, a quarter of float32's bytes
        assert batch["images"].sharding == batch_sharding(mesh)
        assert len(batch["images"].addressable_shards) == jax.device_count()
        # While "step 1" runs, batches 2 and 3 are read and placed without being asked for.
        for _ in range(3):
            assert source.read.acquire(timeout=30)
        batch, position = prefetcher.next()
        assert position == {"position": 2} and int(batch["images"][0, 0, 0, 0]) == 2
        assert isinstance(batch["tokens"], jax.Array) and batch["tokens"].sharding == batch_sharding(mesh)
    finally:
        prefetcher.close()


def test_a_reader_error_reaches_the_loop():
    prefetcher = Prefetcher(Counting(fail_at=1), make_mesh([("data", -1), ("fsdp", 1)]))
    try:
        prefetcher.next()
        with pytest.raises(OSError, match="shard unreadable"):
            prefetcher.next()
    finally:
        prefetcher.close()
