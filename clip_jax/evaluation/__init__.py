"""Evaluation of CLIP models: zero-shot classification (more tasks follow)."""
from clip_jax.evaluation.zeroshot import classifier_weights, zero_shot_accuracy

__all__ = ["classifier_weights", "zero_shot_accuracy"]
