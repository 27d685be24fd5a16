"""The host allocator setting (clip_jax/host.py) really stops the per-step page faults."""
import subprocess
import sys

import pytest

from clip_jax.host import configure_allocator

CHILD = """
import resource, sys
from clip_jax.host import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else False
import numpy as np
np._core.multiarray._set_madvise_hugepage(False)  # 4 KiB pages, as XLA's buffers get
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, freed at the next iteration
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del block
print(applied, sum(faults[1:]))
"""


def faults_after_first(mode):
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


def test_retained_memory_is_reused_without_page_faults():
    applied, retained = faults_after_first("retain")
    if not applied:
        pytest.skip("not glibc")
    _, system = faults_after_first("system")
    # 64 MiB is 16,384 pages: the system allocator faults them in on every pass.
    assert system > 3 * 16_000
    assert retained < 1_000


def test_bad_mode_names_the_choices():
    with pytest.raises(ValueError, match="'auto', 'retain', 'system'"):
        configure_allocator("jemalloc")
