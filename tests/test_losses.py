"""The sharded contrastive loss equals the plain single-device N x N loss, in value,
metrics and gradients, on 8 simulated devices."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clip_jax.losses import l2_normalize, softmax_loss_dense, softmax_loss_gathered
from clip_jax.sharding import batch_sharding, make_mesh
from tests.helpers.training import embeddings


def reference_loss(image, text, scale):
    """Straight from the paper's pseudo-code, in float64 NumPy."""
    image = image / np.linalg.norm(image, axis=1, keepdims=True)
    text = text / np.linalg.norm(text, axis=1, keepdims=True)
    logits = scale * image.astype(np.float64) @ text.T.astype(np.float64)
    def ce(rows):
        rows = rows - rows.max(1, keepdims=True)
        return -np.mean(np.diag(rows) - np.log(np.exp(rows).sum(1)))
    return 0.5 * (ce(logits) + ce(logits.T))


def test_dense_loss_matches_the_paper_formula():
    image, text = embeddings()
    loss, metrics = softmax_loss_dense(l2_normalize(image), l2_normalize(text), 14.0)
    assert float(loss) == pytest.approx(reference_loss(image, text, 14.0), rel=1e-5)
    assert 0 < float(metrics["i2t_accuracy"]) < 1


@pytest.mark.parametrize(
    "mesh_axes", [[("data", 8), ("fsdp", 1)], [("data", 2), ("fsdp", 4)], [("data", 1), ("fsdp", 8)]]
)
def test_gathered_equals_dense_in_value_and_gradients(mesh_axes):
    assert jax.device_count() == 8
    mesh = make_mesh(mesh_axes)
    image, text = embeddings()
    scale = jnp.float32(20.0)

    def dense(i, t, s):
        return softmax_loss_dense(l2_normalize(i), l2_normalize(t), s)

    def gathered(i, t, s):
        return softmax_loss_gathered(l2_normalize(i), l2_normalize(t), s, mesh)

    sharding = batch_sharding(mesh)
    image_g, text_g = jax.device_put(image, sharding), jax.device_put(text, sharding)
    (loss_d, met_d), grads_d = jax.jit(jax.value_and_grad(dense, argnums=(0, 1, 2), has_aux=True))(image, text, scale)
    (loss_g, met_g), grads_g = jax.jit(jax.value_and_grad(gathered, argnums=(0, 1, 2), has_aux=True))(
        image_g, text_g, scale
    )
    assert abs(float(loss_d) - float(loss_g)) <= 1e-5
    for key in met_d:
        assert float(met_d[key]) == pytest.approx(float(met_g[key]))
    for a, b in zip(grads_d, grads_g):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    assert grads_g[0].sharding.is_equivalent_to(sharding, 2)
