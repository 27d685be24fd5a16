"""Evaluation of CLIP models: zero-shot classification, retrieval and linear probes.

    from clip_jax.evaluation import run_evals
    run_evals(model, variables, [{"name": "cifar10", "task": "zeroshot", "data": "tfds:cifar10:test",
                                  "templates": "cifar10"}])

Modules: prompts (shipped class names and templates), features (sharded, cached feature
extraction), scores (similarities in which equal candidates tie exactly), metrics
(classification scores), zeroshot, retrieval (recall@k and the tie rule), linear_probe, suites
(named groups of TFDS evaluations), runner (the interface the trainer and eval.py use).
"""
from clip_jax.evaluation.features import Features, extract
from clip_jax.evaluation.metrics import classification_metrics
from clip_jax.evaluation.retrieval import retrieval_metrics
from clip_jax.evaluation.runner import run_evals
from clip_jax.evaluation.suites import suite_evals
from clip_jax.evaluation.zeroshot import classifier_weights, zero_shot_accuracy, zero_shot_scores

__all__ = ["Features", "classification_metrics", "classifier_weights", "extract",
           "retrieval_metrics", "run_evals", "suite_evals", "zero_shot_accuracy", "zero_shot_scores"]
