"""clip_jax's test suite: one module per library module where practical (test_<module>.py),
shared helpers in tests.helpers, worker processes in tests.workers (run with python -m)."""
