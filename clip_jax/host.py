"""Host memory allocator settings for training on CPUs.

XLA's CPU backend allocates the temporaries of every step afresh (about 2 GB for a
ViT-B/32 step at batch 8).  glibc hands allocations that large out as new pages that
the kernel must fault in and zero, and returns them when freed, so each step paid
about 520,000 page faults: 1.2 s of a 6.7 s step on the 2-core VM.  Told to keep
freed memory (one arena, no mmap for big blocks, no trimming) malloc reuses the same
pages and the faults disappear (`bench/RESULTS.md`).

The settings hold for the whole process and must be made before other threads start,
so scripts call `retain_freed_memory()` first thing.  They are meant for CPU-only
runs: with an accelerator the host allocator is not on the step's critical path, and a
single arena would serialise the input pipeline's many threads.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import os

# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm7_plugin", "libtpu")


def cpu_only() -> bool:
    """True when this process will run JAX on CPUs: JAX_PLATFORMS says so, or no
    accelerator plugin is installed.  Decided without starting any backend."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        return platforms == "cpu"
    return not any(importlib.util.find_spec(name) for name in _ACCELERATOR_PLUGINS)


def retain_freed_memory() -> bool:
    """Make glibc malloc keep and reuse freed memory.  Returns False where the C
    library is not glibc (nothing changed)."""
    path = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(path)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # -1 as the trim threshold is SIZE_MAX once glibc widens it: never trim.
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))
    return all(mallopt(param, value) == 1 for param, value in settings)


def configure_allocator(mode: str | None = None) -> bool:
    """'retain': retain_freed_memory(); 'system': leave malloc alone; 'auto': retain on
    CPU-only runs; None: $CLIP_JAX_HOST_ALLOCATOR, else 'auto'.  Returns whether the
    settings were applied."""
    mode = mode or os.environ.get("CLIP_JAX_HOST_ALLOCATOR", "auto")
    if mode not in ("auto", "retain", "system"):
        raise ValueError(f"host allocator mode {mode!r} unknown; valid: 'auto', 'retain', 'system'")
    if mode == "system" or (mode == "auto" and not cpu_only()):
        return False
    return retain_freed_memory()
