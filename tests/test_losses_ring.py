"""Ring losses equal their plain N x N references in value, metrics and gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clip_jax.losses import (
    l2_normalize,
    sigmoid_loss_dense,
    sigmoid_loss_ring,
    softmax_loss_dense,
    softmax_loss_ring,
)
from clip_jax.sharding import batch_sharding, make_mesh
from tests.helpers.training import embeddings


def reference_sigmoid(image, text, scale, bias):
    image = image / np.linalg.norm(image, axis=1, keepdims=True)
    text = text / np.linalg.norm(text, axis=1, keepdims=True)
    logits = scale * image.astype(np.float64) @ text.T.astype(np.float64) + bias
    signs = 2 * np.eye(len(image)) - 1
    return np.sum(np.log1p(np.exp(-signs * logits))) / len(image)


def test_sigmoid_dense_matches_the_siglip_formula():
    image, text = embeddings()
    loss, _ = sigmoid_loss_dense(l2_normalize(image), l2_normalize(text), 10.0, bias=-10.0)
    assert float(loss) == pytest.approx(reference_sigmoid(image, text, 10.0, -10.0), rel=1e-5)


@pytest.mark.parametrize("mesh_axes", [[("data", 8), ("fsdp", 1)], [("data", 2), ("fsdp", 4)]])
@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_ring_equals_dense(kind, mesh_axes):
    mesh = make_mesh(mesh_axes)
    image, text = embeddings(n=64, e=16, seed=1)
    scale, bias = jnp.float32(12.0), jnp.float32(-3.0)
    dense_fn = {"softmax": lambda i, t, s, b: softmax_loss_dense(i, t, s),
                "sigmoid": lambda i, t, s, b: sigmoid_loss_dense(i, t, s, bias=b)}[kind]
    ring_fn = {"softmax": lambda i, t, s, m, b: softmax_loss_ring(i, t, s, m),
               "sigmoid": lambda i, t, s, m, b: sigmoid_loss_ring(i, t, s, m, bias=b)}[kind]

    def dense(i, t, s, b):
        return dense_fn(l2_normalize(i), l2_normalize(t), s, b)

    def ring(i, t, s, b):
        return ring_fn(l2_normalize(i), l2_normalize(t), s, mesh, b)

    sharding = batch_sharding(mesh)
    args = (image, text, scale, bias)
    (loss_d, met_d), grads_d = jax.jit(jax.value_and_grad(dense, argnums=(0, 1, 2, 3), has_aux=True))(*args)
    sharded = (jax.device_put(image, sharding), jax.device_put(text, sharding), scale, bias)
    (loss_r, met_r), grads_r = jax.jit(jax.value_and_grad(ring, argnums=(0, 1, 2, 3), has_aux=True))(*sharded)
    assert abs(float(loss_d) - float(loss_r)) <= 1e-5 * max(1.0, abs(float(loss_d)))
    for key in met_d:
        assert float(met_d[key]) == pytest.approx(float(met_r[key])), key
    for a, b in zip(grads_d, grads_r):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)


def test_ring_loss_memory_is_local_squared():
    """The compiled ring loss+gradient holds blocks of local x local logits: its
    temporaries stay far below one local x global logits matrix."""
    mesh = make_mesh([("data", 8), ("fsdp", 1)])
    n, e = 8 * 512, 64
    spec = jax.ShapeDtypeStruct((n, e), jnp.float32, sharding=batch_sharding(mesh))

    def grads(loss_fn):
        return jax.jit(jax.grad(lambda i, t: loss_fn(i, t, jnp.float32(10.0), mesh)[0], argnums=(0, 1)))

    from clip_jax.losses import softmax_loss_gathered

    ring = grads(softmax_loss_ring).lower(spec, spec).compile().memory_analysis().temp_size_in_bytes
    gathered = grads(softmax_loss_gathered).lower(spec, spec).compile().memory_analysis().temp_size_in_bytes
    local_by_global = 512 * n * 4
    assert ring < local_by_global < gathered
