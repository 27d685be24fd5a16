"""Fast paths of the models against the plain computations they replace."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clip_jax.models.kernels import cpu_dense_dot_general
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

    fast = jax.jit(jax.value_and_grad(loss(cpu_dense_dot_general), argnums=(0, 1)))(x, w)
    plain = jax.jit(jax.value_and_grad(loss(jax.lax.dot_general), argnums=(0, 1)))(x, w)
    for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(plain)):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(np.float32(a), np.float32(b), rtol=tol, atol=tol)
    # The CPU path really is the custom one (an optimisation barrier in the backward).
    jaxpr = str(jax.make_jaxpr(jax.grad(loss(cpu_dense_dot_general), argnums=1))(x, w))
    assert "optimization_barrier" in jaxpr


def test_dense_dot_general_other_forms_are_plain():
    x, w = jnp.ones((2, 3, 4)), jnp.ones((2, 4, 5))
    batched = (((2,), (1,)), ((0,), (0,)))
    np.testing.assert_array_equal(cpu_dense_dot_general(x, w, batched), jax.lax.dot_general(x, w, batched))


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


def _random_batch(model, batch=3, seed=0):
    rs = np.random.RandomState(seed)
    size = model.config.vision.image_size
    images = jnp.asarray(rs.randn(batch, size, size, 3), jnp.float32)
    tokens = rs.randint(1, 49406, (batch, 77))
    for row, eot in enumerate([5, 76, 40, 1, 63][:batch]):  # EOT early, last, middle...
        tokens[row, eot] = 49407
    return images, jnp.asarray(tokens, jnp.int32)


@pytest.mark.parametrize("dtype, remat, tol", [("float32", False, 1e-5), ("float32", True, 1e-5),
                                               ("bfloat16", False, 3e-2)])
def test_pooled_last_block_equals_full_block(dtype, remat, tol):
    """The towers' last blocks computing only the class / EOT token give the same
    features, and the same gradients for every parameter, as computing every token."""
    from clip_jax import create_model

    pooled = create_model("tiny-vit", dtype=dtype, remat=remat)
    full = pooled.clone(full_last_block=True)
    images, tokens = _random_batch(pooled, batch=5)
    variables = pooled.init(jax.random.PRNGKey(0), images, tokens)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), variables,
                                     full.init(jax.random.PRNGKey(0), images, tokens)))
    probe = jnp.asarray(np.random.RandomState(1).randn(2, 5, pooled.config.embed_dim), jnp.float32)

    def loss(model):
        def fn(variables):
            image, text, _ = model.apply(variables, images, tokens)
            return jnp.sum(jnp.tanh(image.astype(jnp.float32)) * probe[0]) + jnp.sum(
                jnp.tanh(text.astype(jnp.float32)) * probe[1])
        return jax.jit(jax.value_and_grad(fn))

    (value_p, grads_p), (value_f, grads_f) = loss(pooled)(variables), loss(full)(variables)
    np.testing.assert_allclose(value_p, value_f, rtol=tol, atol=tol)
    for path, a in jax.tree_util.tree_leaves_with_path(grads_p):
        b = grads_f
        for key in path:
            b = b[key.key]
        scale = float(jnp.abs(b).max()) + 1e-12
        assert float(jnp.abs(a - b).max()) <= tol * scale, jax.tree_util.keystr(path)
    # The pooled form really skips work: fewer matmul FLOPs in the traced program.
    from clip_jax.flops import model_forward_flops
    assert model_forward_flops(pooled, 5) < model_forward_flops(full, 5)


def test_packed_qkv_projection_initialises_as_dense():
    """`attn/in_proj` keeps nn.Dense's parameters: same names, shapes and values."""
    from clip_jax.models.layers import QKVProjection

    x = jnp.ones((2, 4, 8))
    init = nn.initializers.xavier_uniform()
    ours = QKVProjection(kernel_init=init).init(jax.random.PRNGKey(5), x)["params"]
    dense = nn.Dense(24, kernel_init=init).init(jax.random.PRNGKey(5), x)["params"]
    assert jax.tree.structure(ours) == jax.tree.structure(dense)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(dense)):
        np.testing.assert_array_equal(a, b)
