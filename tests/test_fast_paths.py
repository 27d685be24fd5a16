"""Fast paths of the models against the plain computations they replace."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clip_jax.models.layers import dense_dot_general
from clip_jax.models.vit import PatchEmbedding

DENSE = (((2,), (0,)), ((), ()))


@pytest.mark.parametrize("dtype, tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
def test_dense_dot_general_gradients_equal_plain(dtype, tol):
    rs = np.random.RandomState(0)
    x = jnp.asarray(rs.randn(3, 7, 16), dtype)
    w = jnp.asarray(rs.randn(16, 24) * 0.1, dtype)
    probe = jnp.asarray(rs.randn(3, 7, 24), jnp.float32)

    def loss(dot):
        return lambda x, w: jnp.sum(jnp.tanh(dot(x, w, DENSE).astype(jnp.float32)) * probe)

    fast = jax.jit(jax.value_and_grad(loss(dense_dot_general), argnums=(0, 1)))(x, w)
    plain = jax.jit(jax.value_and_grad(loss(jax.lax.dot_general), argnums=(0, 1)))(x, w)
    for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(plain)):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(np.float32(a), np.float32(b), rtol=tol, atol=tol)
    # The CPU path really is the custom one (an optimisation barrier in the backward).
    jaxpr = str(jax.make_jaxpr(jax.grad(loss(dense_dot_general), argnums=1))(x, w))
    assert "optimization_barrier" in jaxpr


def test_dense_dot_general_other_forms_are_plain():
    x, w = jnp.ones((2, 3, 4)), jnp.ones((2, 4, 5))
    batched = (((2,), (1,)), ((0,), (0,)))
    np.testing.assert_array_equal(dense_dot_general(x, w, batched), jax.lax.dot_general(x, w, batched))


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


def test_trimmed_text_gives_the_same_features():
    from clip_jax import create_model, encode_text, tokenize
    from clip_jax.inference import init_variables
    from clip_jax.models.text import trim_after_eot

    model = create_model("tiny-vit")
    variables = init_variables(model, seed=1)
    short = tokenize(["a photo of a dog.", "a cat", "a tiny red square on a blue background"])
    trimmed = trim_after_eot(short)
    assert trimmed.shape == (3, 16)  # longest is 10 tokens with SOT/EOT, rounded up to 16
    full = np.asarray(encode_text(model, variables, short, trim=False))
    np.testing.assert_allclose(np.asarray(encode_text(model, variables, short)), full, rtol=1e-5, atol=1e-6)
    # A row that uses the whole context keeps every column.
    long = tokenize(["word " * 200], truncate=True)
    assert trim_after_eot(np.concatenate([short, long])).shape[1] == 77
    # Id 0 is a real token ("!"), not padding: trimming follows the EOT, not zeros.
    bangs = tokenize(["! " * 20])  # 20 tokens of id 0 between SOT and EOT
    assert trim_after_eot(bangs).shape[1] == 32
