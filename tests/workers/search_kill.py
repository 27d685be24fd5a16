"""Runs `python -m clip_jax.search index ...` and SIGKILLs itself at a chosen moment.

    python -m tests.workers.search_kill after-commit N   ARGS...  # killed right after chunk N's commit
    python -m tests.workers.search_kill before-commit N  ARGS...  # killed after chunk N's file is in place,
                                                                    # before its rows are committed
The kill is exact (no timing races): the process signals itself from inside the store.
"""
import os
import signal
import sys

from clip_jax.search import store
from clip_jax.search.cli import main

moment, count, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
calls = {"n": 0}
write_chunk, add_chunk = store.Store.write_chunk_file, store.Store.add_chunk


def write_chunk_file(self, vectors):
    result = write_chunk(self, vectors)
    calls["n"] += 1
    if moment == "before-commit" and calls["n"] == count:
        os.kill(os.getpid(), signal.SIGKILL)
    return result


def _add_chunk(self, *a, **k):
    add_chunk(self, *a, **k)
    if moment == "after-commit" and calls["n"] == count:
        os.kill(os.getpid(), signal.SIGKILL)


store.Store.write_chunk_file = write_chunk_file
store.Store.add_chunk = _add_chunk
sys.exit(main(args))
