"""Helpers the tests share: generated data (data, evaluation, realistic, search), text
(varied strings) and SentencePiece models (siglip), a tiny training setup (training),
parity oracles (oracles), worker-process start-up (runtime)."""
