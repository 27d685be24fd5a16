"""clip_jax.models.kernels: the backend-specific kernels against the plain operations,
and the choice of kernels with the platform given explicitly (no accelerator here)."""
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clip_jax.models.kernels import Kernels, cpu_dense_dot_general, select_kernels
from clip_jax.models.layers import MultiHeadAttention

DENSE = (((2,), (0,)), ((), ()))  # a dense layer's dot_general: x's last axis against the kernel's first


def reference_attention(x, params, heads, causal, query_rows=None):
    """Softmax attention written out in NumPy-style jnp, from the packed projection."""
    batch, length, width = x.shape
    qkv = x @ params["in_proj"]["kernel"] + params["in_proj"]["bias"]
    q, k, v = (qkv[..., i * width:(i + 1) * width].reshape(batch, length, heads, -1) for i in range(3))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(width // heads)
    allowed = jnp.ones((batch, length, length), bool)
    if causal:
        allowed = jnp.tril(allowed)
    logits = jnp.where(allowed[:, None], logits, -jnp.inf)
    out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v).reshape(batch, length, width)
    out = out @ params["out_proj"]["kernel"] + params["out_proj"]["bias"]
    if query_rows is not None:
        out = out[jnp.arange(batch), query_rows][:, None]
    return out


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("pooled", [False, True])
@pytest.mark.parametrize("kernels", [Kernels(cpu_weight_gradients=False), Kernels(cpu_weight_gradients=True)])
def test_xla_attention_equals_the_plain_computation(causal, pooled, kernels):
    rs = np.random.RandomState(0)
    x = jnp.asarray(rs.randn(3, 9, 32), jnp.float32)
    rows = jnp.asarray([0, 4, 8]) if pooled else None
    layer = MultiHeadAttention(num_heads=4, causal=causal, kernels=kernels)
    params = layer.init(jax.random.PRNGKey(0), x)["params"]
    params = jax.tree.map(lambda p: p + 0.1 * jnp.asarray(rs.randn(*p.shape), p.dtype), params)
    probe = jnp.asarray(rs.randn(3, 1 if pooled else 9, 32), jnp.float32)

    def ours(p, x):
        return jnp.sum(jnp.tanh(layer.apply({"params": p}, x, rows)) * probe)

    def plain(p, x):
        return jnp.sum(jnp.tanh(reference_attention(x, p, 4, causal, rows)) * probe)

    (value_a, grads_a), (value_b, grads_b) = (jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(params, x)
                                              for f in (ours, plain))
    np.testing.assert_allclose(value_a, value_b, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_auto_picks_cudnn_only_where_it_can_run(caplog):
    caplog.set_level(logging.INFO)
    assert select_kernels("auto", jnp.bfloat16, (64, 64), platform="cuda").attention_impl == "cudnn"
    assert select_kernels("auto", jnp.float16, (128,), platform="cuda").attention_impl == "cudnn"
    for dtype, dims, platform in [(jnp.float32, (64,), "cuda"),  # cuDNN's kernels are half precision
                                  (jnp.bfloat16, (80,), "tpu"), (jnp.bfloat16, (64,), "cpu"),
                                  (jnp.bfloat16, (64,), "rocm"), (jnp.bfloat16, (160,), "cuda"),
                                  (jnp.bfloat16, (36,), "cuda")]:
        assert select_kernels("auto", dtype, dims, platform=platform).attention_impl == "xla", (dtype, dims, platform)
    assert "attention='auto': using xla (the 'tpu' backend is not an NVIDIA GPU)" in caplog.text
    # Logged once per reason, however many models are built.
    select_kernels("auto", jnp.bfloat16, (80,), platform="tpu")
    assert caplog.text.count("the 'tpu' backend is not an NVIDIA GPU") == 1


def test_cudnn_where_it_cannot_run_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot run here: the 'cpu' backend is not an NVIDIA GPU.*'auto', 'xla'"):
        select_kernels("cudnn", jnp.bfloat16, (64,), platform="cpu")
    with pytest.raises(ValueError, match="compute dtype float32 is not bfloat16 or float16"):
        select_kernels("cudnn", jnp.float32, (64,), platform="cuda")
    with pytest.raises(ValueError, match=r"unknown attention implementation 'flash'; valid: auto, xla, cudnn"):
        select_kernels("flash", jnp.bfloat16, (64,), platform="cuda")
    assert select_kernels("cudnn", jnp.bfloat16, (64, 64), platform="cuda").attention_impl == "cudnn"
    assert select_kernels("xla", jnp.bfloat16, (64,), platform="cuda").attention_impl == "xla"


def test_dense_kernel_is_chosen_by_platform():
    assert select_kernels("xla", platform="cpu").cpu_weight_gradients
    assert not select_kernels("xla", platform="cuda").cpu_weight_gradients
    assert not select_kernels("xla", platform="tpu").cpu_weight_gradients


def test_create_model_takes_the_attention_option():
    from clip_jax import create_model

    assert create_model("tiny-vit", attention="xla").kernels.attention_impl == "xla"
    assert create_model("tiny-vit").kernels == select_kernels("auto", jnp.float32, (32, 32))
    with pytest.raises(ValueError, match="attention='cudnn' cannot run here"):
        create_model("tiny-vit", dtype="bfloat16", attention="cudnn")


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
