"""clip_jax.models.layers: the Transformer's pooled last block against the plain one, and
the packed QKV projection's parameters against nn.Dense's."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest


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
