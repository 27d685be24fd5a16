"""Tip-Adapter (Zhang et al. 2022): few-shot classification without training, and its
variant with trained keys (Tip-Adapter-F).

The cache holds the k-shot training images' L2-normalised features (keys) and their one-hot
labels (values).  A test image's logits are the zero-shot logits plus the cache's vote:

    logits = 100 · f Wᵀ + α · exp(-β (1 - f Kᵀ)) V

with f the test features and W the zero-shot class weights (both normalised), K the keys
and V the values.  α weighs the cache against zero-shot, β sharpens the affinities; both
are searched on a validation set over the paper's grid, else take the paper's start
(α = β = 1).  Tip-Adapter-F trains the keys as a linear layer initialised from the cache
(AdamW, cosine schedule, cross-entropy on the k-shot features; the paper also augments the
cache images, which this does not), then searches again.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

ZERO_SHOT_SCALE = 100.0  # CLIP's logit scale, as the paper uses
# The search grid (the paper's ImageNet ranges): β in (0, 7], α in (0, 3].
BETAS = np.linspace(0.1, 7.0, 50)
ALPHAS = np.linspace(0.1, 3.0, 30)


def normalise(x) -> jnp.ndarray:
    x = jnp.asarray(x, jnp.float32)
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def cache_logits(features, keys, values, beta: float) -> jnp.ndarray:
    """exp(-β (1 - f Kᵀ)) V: each test image's affinity-weighted vote of the cache."""
    affinity = features @ keys.T
    return jnp.exp(-beta * (1.0 - affinity)) @ values


def tip_logits(features, weights, keys, values, alpha: float, beta: float) -> jnp.ndarray:
    """Zero-shot logits plus α times the cache's (features, weights [K, E] and keys normalised)."""
    return ZERO_SHOT_SCALE * features @ weights.T + alpha * cache_logits(features, keys, values, beta)


@jax.jit
def _grid_accuracy(features, labels, weights, keys, values, betas, alphas) -> jnp.ndarray:
    """Top-1 accuracy [len(betas), len(alphas)]."""
    zero_shot = ZERO_SHOT_SCALE * features @ weights.T
    affinity = features @ keys.T

    def for_beta(beta):
        votes = jnp.exp(-beta * (1.0 - affinity)) @ values
        logits = zero_shot[None] + alphas[:, None, None] * votes[None]
        return (jnp.argmax(logits, axis=-1) == labels[None]).mean(axis=-1)

    return jax.lax.map(for_beta, betas)


def search(features, labels, weights, keys, values) -> tuple[float, float, float]:
    """(α, β, accuracy) of the best grid point on (features, labels); ties: the first
    (smallest β, then smallest α)."""
    accuracy = np.asarray(_grid_accuracy(features, jnp.asarray(labels), weights, keys, values,
                                         jnp.asarray(BETAS, jnp.float32), jnp.asarray(ALPHAS, jnp.float32)))
    b, a = np.unravel_index(int(np.argmax(accuracy)), accuracy.shape)
    return float(ALPHAS[a]), float(BETAS[b]), float(accuracy[b, a])


def train_keys(keys, values, weights, alpha: float, beta: float, *, epochs: int = 20, learning_rate: float = 1e-3,
               batch_size: int = 256, seed: int = 0) -> jnp.ndarray:
    """Tip-Adapter-F: the keys trained as a linear layer (cross-entropy of the Tip-Adapter
    logits on the cache's own images, AdamW, cosine decay), as the paper's adapter."""
    labels = jnp.argmax(values, axis=-1)
    n = keys.shape[0]
    steps_per_epoch = -(-n // batch_size)
    schedule = optax.cosine_decay_schedule(learning_rate, epochs * steps_per_epoch)
    optimizer = optax.adamw(schedule, eps=1e-4)
    features = keys  # the cache's images are its training set

    def loss(trained, x, y):
        logits = tip_logits(x, weights, trained, values, alpha, beta)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(trained, state, x, y):
        grads = jax.grad(loss)(trained, x, y)
        updates, state = optimizer.update(grads, state, trained)
        return optax.apply_updates(trained, updates), state

    trained, state = keys, optimizer.init(keys)
    rng = np.random.RandomState(seed)
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            batch = order[start:start + batch_size]
            trained, state = step(trained, state, features[batch], labels[batch])
    return trained


def tip_adapter(train_x, train_y, test_x, test_y, weights, num_classes: int, *, val_x=None, val_y=None,
                fine_tune: bool = True, epochs: int = 20, seed: int = 0) -> dict:
    """Top-1 accuracy (%) of zero-shot, Tip-Adapter and (fine_tune) Tip-Adapter-F on test,
    with the α and β each used.  train_x: the k-shot cache's image features; weights:
    the zero-shot class weights [E, K] (clip_jax.evaluation.zeroshot.classifier_weights)."""
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    labelled = [("train", train_y), ("test", test_y)] + ([("val", np.asarray(val_y))] if val_y is not None else [])
    for name, y in labelled:
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"tip_adapter: {name} labels range {y.min()}..{y.max()} does not fit {num_classes} "
                             "classes")
    keys, test = normalise(train_x), normalise(test_x)
    values = jax.nn.one_hot(train_y, num_classes, dtype=jnp.float32)
    weights = normalise(jnp.asarray(weights).T)
    val = (normalise(val_x), np.asarray(val_y)) if val_x is not None else None

    def accuracy(logits):
        return 100.0 * float(np.mean(np.argmax(np.asarray(logits), axis=-1) == test_y))

    def choose(cache_keys):
        return search(val[0], val[1], weights, cache_keys, values)[:2] if val is not None else (1.0, 1.0)

    metrics = {"zeroshot_top1": accuracy(ZERO_SHOT_SCALE * test @ weights.T), "cache_size": int(len(train_y))}
    alpha, beta = choose(keys)
    metrics.update(tip_top1=accuracy(tip_logits(test, weights, keys, values, alpha, beta)), tip_alpha=alpha,
                   tip_beta=beta)
    if fine_tune:
        trained = train_keys(keys, values, weights, alpha, beta, epochs=epochs, seed=seed)
        alpha_f, beta_f = choose(trained)
        metrics.update(tip_f_top1=accuracy(tip_logits(test, weights, trained, values, alpha_f, beta_f)),
                       tip_f_alpha=alpha_f, tip_f_beta=beta_f)
    metrics["searched"] = val is not None
    return metrics
