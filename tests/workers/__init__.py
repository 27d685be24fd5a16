"""Worker processes of the tests that need a fresh JAX runtime or a process to kill:
`python -m tests.workers.NAME ...` from the repository root (tests.helpers.runtime.worker)."""
