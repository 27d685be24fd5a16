"""Helpers the tests share: generated data (data, evaluation, realistic, search), a tiny
training setup (training), parity oracles (oracles), worker-process start-up (runtime)."""
