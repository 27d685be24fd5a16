"""clip_jax.models.vit: the patch embedding as one GEMM against the strided convolution it
replaces."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clip_jax.models.vit import PatchEmbedding


@pytest.mark.parametrize("patch, size", [(8, 32), (14, 28), (16, 48)])
def test_patch_embedding_equals_strided_convolution(patch, size):
    rs = np.random.RandomState(1)
    images = jnp.asarray(rs.randn(2, size, size, 3), jnp.float32)
    embed = PatchEmbedding(patch, 12)
    conv = nn.Conv(12, (patch, patch), strides=(patch, patch), padding="VALID", use_bias=False)
    variables = embed.init(jax.random.PRNGKey(0), images)
    kernel = variables["params"]["kernel"]
    assert kernel.shape == (patch, patch, 3, 12)
    expected = conv.apply({"params": {"kernel": kernel}}, images)
    got = embed.apply(variables, images)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # Gradients with respect to the kernel agree too (the weight-gradient fast path).
    probe = jnp.asarray(rs.randn(*expected.shape), jnp.float32)
    g_fast = jax.grad(lambda k: jnp.sum(embed.apply({"params": {"kernel": k}}, images) * probe))(kernel)
    g_conv = jax.grad(lambda k: jnp.sum(conv.apply({"params": {"kernel": k}}, images) * probe))(kernel)
    np.testing.assert_allclose(g_fast, g_conv, rtol=1e-4, atol=1e-4)


def test_patch_embedding_initialisation_unchanged():
    """Same values as the nn.Conv it replaced (same rng path, shape and initialiser)."""
    from clip_jax.models.layers import torch_default_kernel

    images = jnp.zeros((1, 32, 32, 3))
    embed = PatchEmbedding(8, 12).init(jax.random.PRNGKey(3), images)["params"]["kernel"]
    conv = nn.Conv(12, (8, 8), strides=(8, 8), padding="VALID", use_bias=False,
                   kernel_init=torch_default_kernel).init(jax.random.PRNGKey(3), images)["params"]["kernel"]
    np.testing.assert_array_equal(embed, conv)
