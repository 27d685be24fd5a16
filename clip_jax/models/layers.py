"""Building blocks shared by the CLIP towers: fp32 LayerNorm, activations,
multi-head attention with a packed QKV projection, and the pre-LN residual block
stacked with `nn.scan` into a Transformer.

Parameter names mirror OpenAI's module tree (`attn/in_proj`, `mlp/c_fc`, `ln_1`, ...)
so the converters stay a table of renames.  Initialisers reproduce OpenAI's
`initialize_parameters` where it sets them and PyTorch's defaults elsewhere.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
Initializer = Callable[..., jax.Array]


def quick_gelu(x: jax.Array) -> jax.Array:
    """OpenAI's sigmoid approximation of GELU, used by every released CLIP."""
    return x * jax.nn.sigmoid(1.702 * x)


def exact_gelu(x: jax.Array) -> jax.Array:
    """torch.nn.GELU (erf form), used by open_clip's LAION models."""
    return jax.nn.gelu(x, approximate=False)


ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": exact_gelu}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; valid: {sorted(ACTIVATIONS)}") from None


# PyTorch's defaults: kaiming_uniform(a=sqrt(5)) is U(+-1/sqrt(fan_in)) for weights,
# and Linear/Conv biases are U(+-1/sqrt(fan_in)) too.
torch_default_kernel = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias(fan_in: int) -> Initializer:
    bound = fan_in**-0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def normal(std: float) -> Initializer:
    return nn.initializers.normal(stddev=std)


class LayerNorm(nn.Module):
    """LayerNorm computed in float32 whatever the input dtype, cast back (eps 1e-5)."""

    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon)
        return (y * scale + bias).astype(x.dtype)


def block_initializers(width: int, layers: int, text_style: bool) -> dict[str, Initializer]:
    """Kernel initialisers of one residual block.

    OpenAI re-initialises only the text tower's blocks (normal with the stds below);
    the ViT's blocks keep PyTorch's defaults (xavier for the packed QKV).
    """
    if text_style:
        attn_std = width**-0.5
        proj_std = width**-0.5 * (2 * layers) ** -0.5
        return {
            "in_proj": normal(attn_std),
            "out_proj": normal(proj_std),
            "c_fc": normal((2 * width) ** -0.5),
            "c_proj": normal(proj_std),
        }
    return {
        "in_proj": nn.initializers.xavier_uniform(),
        "out_proj": torch_default_kernel,
        "c_fc": torch_default_kernel,
        "c_proj": torch_default_kernel,
    }


@jax.custom_vjp
def _matmul_materialised_wgrad(x: jax.Array, w: jax.Array) -> jax.Array:
    return jnp.matmul(x, w)


def _matmul_fwd(x, w):
    return jnp.matmul(x, w), (x, w)


def _matmul_bwd(residuals, grad):
    x, w = residuals
    dx = jnp.matmul(grad, w.T)
    # The weight gradient contracts over the tokens: x.T @ grad.  Left to itself XLA's CPU
    # backend folds the transpose into a dot whose operands both contract their outer
    # dimension, which its fast (YNNPACK) kernels reject, and runs it about 2x slower.
    # Materialising x.T (a copy far cheaper than the matmul) keeps the fast kernel.
    x_t = jax.lax.optimization_barrier(x.reshape(-1, x.shape[-1]).T)
    dw = jnp.matmul(x_t, grad.reshape(-1, grad.shape[-1]))
    return dx, dw.astype(w.dtype)


_matmul_materialised_wgrad.defvjp(_matmul_fwd, _matmul_bwd)


def dense_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """`nn.Dense`'s dot_general (contract lhs's last axis with the kernel's first) with a
    weight gradient laid out for XLA's CPU kernels; the plain dot_general elsewhere,
    where the backends handle the transposed operands natively."""
    (lhs_contract, rhs_contract), (lhs_batch, _) = dimension_numbers
    dense_form = (tuple(lhs_contract) == (lhs.ndim - 1,) and tuple(rhs_contract) == (0,)
                  and not lhs_batch and rhs.ndim == 2)
    if dense_form and jax.default_backend() == "cpu" and precision is None and preferred_element_type is None:
        return _matmul_materialised_wgrad(lhs, rhs)
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type)


class QKVProjection(nn.Module):
    """OpenAI's packed `in_proj`: one [d, 3d] kernel whose columns are q | k | v, with
    nn.Dense's parameter names, initialisation and dtype casting.  Given `query_tokens`,
    queries are projected from those alone (keys and values from every token)."""

    dtype: Dtype = jnp.float32
    kernel_init: Initializer = nn.initializers.xavier_uniform()

    @nn.compact
    def __call__(self, x: jax.Array, query_tokens: jax.Array | None = None):
        width = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (width, 3 * width), jnp.float32).astype(self.dtype)
        bias = self.param("bias", nn.initializers.zeros, (3 * width,), jnp.float32).astype(self.dtype)
        x = x.astype(self.dtype)
        if query_tokens is None:
            qkv = _dense(x, kernel) + bias
            return qkv[..., :width], qkv[..., width:2 * width], qkv[..., 2 * width:]
        q = _dense(query_tokens.astype(self.dtype), kernel[:, :width]) + bias[:width]
        kv = _dense(x, kernel[:, width:]) + bias[width:]
        return q, kv[..., :width], kv[..., width:]


def _dense(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return dense_dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


class MultiHeadAttention(nn.Module):
    """Self-attention with one packed [d, 3d] QKV projection (q, k, v order).

    With `query_rows` ([batch] positions), only those rows attend (to every key, or
    under the causal mask to the keys up to their position): the output is [batch, 1,
    width], the other rows' queries, attention and output projection are skipped."""

    num_heads: int
    causal: bool = False
    dtype: Dtype = jnp.float32
    in_proj_init: Initializer = nn.initializers.xavier_uniform()
    out_proj_init: Initializer = torch_default_kernel

    @nn.compact
    def __call__(self, x: jax.Array, query_rows: jax.Array | None = None) -> jax.Array:
        batch, length, width = x.shape
        if width % self.num_heads:
            raise ValueError(f"width {width} is not divisible by {self.num_heads} heads")
        head_dim = width // self.num_heads
        project = QKVProjection(self.dtype, self.in_proj_init, name="in_proj")
        if query_rows is None:
            q, k, v = project(x)
            mask, causal = None, self.causal
        else:
            q, k, v = project(x, x[jnp.arange(batch), query_rows][:, None])
            mask, causal = None, False
            if self.causal:  # each query row sees the keys up to its own position
                mask = (jnp.arange(length)[None, :] <= query_rows[:, None])[:, None, None, :]
        heads = lambda t: t.reshape(batch, t.shape[1], self.num_heads, head_dim)  # noqa: E731
        out = jax.nn.dot_product_attention(heads(q), heads(k), heads(v), mask=mask, is_causal=causal)
        out = out.reshape(batch, q.shape[1], width)
        return nn.Dense(
            width,
            dtype=self.dtype,
            kernel_init=self.out_proj_init,
            bias_init=nn.initializers.zeros,
            name="out_proj", dot_general=dense_dot_general,
        )(out)


class MLP(nn.Module):
    hidden: int
    act: str = "quick_gelu"
    dtype: Dtype = jnp.float32
    fc_init: Initializer = torch_default_kernel
    proj_init: Initializer = torch_default_kernel

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = x.shape[-1]
        x = nn.Dense(self.hidden, dtype=self.dtype, kernel_init=self.fc_init,
                     bias_init=torch_default_bias(width), name="c_fc", dot_general=dense_dot_general)(x)
        x = activation(self.act)(x)
        return nn.Dense(width, dtype=self.dtype, kernel_init=self.proj_init,
                        bias_init=torch_default_bias(self.hidden), name="c_proj", dot_general=dense_dot_general)(x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).

    Called as a scan body: takes and returns `(carry, None)`.  With `pool_rows`
    ([batch] positions) it returns only those rows' outputs, [batch, width]: the other
    tokens still serve as keys and values, but their queries and MLP are skipped.
    """

    num_heads: int
    mlp_dim: int
    act: str
    causal: bool
    layers: int
    text_style_init: bool
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, _=None, pool_rows: jax.Array | None = None):
        inits = block_initializers(x.shape[-1], self.layers, self.text_style_init)
        attended = MultiHeadAttention(
            self.num_heads, self.causal, self.dtype,
            in_proj_init=inits["in_proj"], out_proj_init=inits["out_proj"], name="attn",
        )(LayerNorm(name="ln_1")(x), pool_rows)
        if pool_rows is not None:
            x = x[jnp.arange(x.shape[0]), pool_rows][:, None]
        x = x + attended
        x = x + MLP(
            self.mlp_dim, self.act, self.dtype,
            fc_init=inits["c_fc"], proj_init=inits["c_proj"], name="mlp",
        )(LayerNorm(name="ln_2")(x))
        if pool_rows is not None:
            return x[:, 0]
        return x, None


class Transformer(nn.Module):
    """`layers` residual blocks under `nn.scan`: parameters carry a leading layer axis.

    Scanning compiles one block instead of `layers` copies; `remat` recomputes each
    block's activations in the backward pass instead of storing them.

    Called with `pool_rows` ([batch] positions), it returns only those tokens' outputs,
    [batch, width], and the last block computes just them (CLIP pools one token per
    sequence, and in the last block no other token's output reaches it).  That skips
    about 5/6 of the last block: ~7% of a 12-layer tower's matmuls, exactly.
    """

    layers: int
    num_heads: int
    mlp_dim: int
    act: str = "quick_gelu"
    causal: bool = False
    text_style_init: bool = False
    remat: bool = False
    dtype: Dtype = jnp.float32
    full_last_block: bool = False  # True: every token through the last block, then pool

    @nn.compact
    def __call__(self, x: jax.Array, pool_rows: jax.Array | None = None) -> jax.Array:
        fields = (self.num_heads, self.mlp_dim, self.act, self.causal, self.layers,
                  self.text_style_init, self.dtype)
        block = ResidualAttentionBlock
        if self.remat:
            block = nn.remat(block, prevent_cse=False)
        stack = nn.scan(
            block,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            length=self.layers,
        )(*fields, name="blocks")
        if pool_rows is None or self.full_last_block or self.is_initializing():
            # Initialisation always creates all `layers` blocks through nn.scan.
            x, _ = stack(x, None)
            return x if pool_rows is None else x[jnp.arange(x.shape[0]), pool_rows]
        # The same stacked parameters, applied functionally: the first layers - 1
        # blocks under lax.scan, then the last block on the pooled rows only.
        params = self.variables["params"]["blocks"]
        one_block = ResidualAttentionBlock(*fields, parent=None)

        def body(carry, block_params):
            return one_block.apply({"params": block_params}, carry)

        if self.remat:
            body = jax.checkpoint(body, prevent_cse=False)
        head = jax.tree_util.tree_map(lambda p: p[:-1], params)
        last = jax.tree_util.tree_map(lambda p: p[-1], params)
        x, _ = jax.lax.scan(body, x, head)
        return one_block.apply({"params": last}, x, None, pool_rows)
