"""Building blocks shared by the CLIP and SigLIP towers: fp32 LayerNorm, activations,
multi-head attention with a packed QKV projection, and the pre-LN residual block
stacked into a Transformer.  Backend-specific matmul and attention kernels come from
`kernels.py`, chosen once when the model is built.

Parameter names mirror OpenAI's module tree (`attn/in_proj`, `mlp/c_fc`, `ln_1`, ...)
so the converters stay a table of renames.  Initialisers reproduce OpenAI's
`initialize_parameters` where it sets them and PyTorch's defaults elsewhere.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from clip_jax.models.kernels import PLAIN, Kernels

Dtype = Any
Initializer = Callable[..., jax.Array]


def quick_gelu(x: jax.Array) -> jax.Array:
    """OpenAI's sigmoid approximation of GELU, used by every released CLIP."""
    return x * jax.nn.sigmoid(1.702 * x)


def exact_gelu(x: jax.Array) -> jax.Array:
    """torch.nn.GELU (erf form), used by open_clip's LAION models."""
    return jax.nn.gelu(x, approximate=False)


def tanh_gelu(x: jax.Array) -> jax.Array:
    """GELU's tanh approximation (flax's default gelu; transformers' "gelu_pytorch_tanh"),
    used by SigLIP and SigLIP 2."""
    return jax.nn.gelu(x, approximate=True)


ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": exact_gelu, "gelu_tanh": tanh_gelu}


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


class QKVProjection(nn.Module):
    """OpenAI's packed `in_proj`: one [d, 3d] kernel whose columns are q | k | v, with
    nn.Dense's parameter names, initialisation and dtype casting.  Given `query_tokens`,
    queries are projected from those alone (keys and values from every token)."""

    dtype: Dtype = jnp.float32
    kernel_init: Initializer = nn.initializers.xavier_uniform()
    kernels: Kernels = PLAIN

    @nn.compact
    def __call__(self, x: jax.Array, query_tokens: jax.Array | None = None):
        width = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (width, 3 * width), jnp.float32).astype(self.dtype)
        bias = self.param("bias", nn.initializers.zeros, (3 * width,), jnp.float32).astype(self.dtype)
        x = x.astype(self.dtype)
        dense = self.kernels.dense
        if query_tokens is None:
            qkv = dense(x, kernel) + bias
            return qkv[..., :width], qkv[..., width:2 * width], qkv[..., 2 * width:]
        q = dense(query_tokens.astype(self.dtype), kernel[:, :width]) + bias[:width]
        kv = dense(x, kernel[:, width:]) + bias[width:]
        return q, kv[..., :width], kv[..., width:]


class MultiHeadAttention(nn.Module):
    """Self-attention with one packed [d, 3d] QKV projection (q, k, v order).

    With `query_rows` ([batch] positions) only those rows attend (to every key, or under
    the causal mask to the keys up to their position) and the output is [batch, 1, width]:
    the other rows' queries, attention and output projection are skipped."""

    num_heads: int
    causal: bool = False
    dtype: Dtype = jnp.float32
    in_proj_init: Initializer = nn.initializers.xavier_uniform()
    out_proj_init: Initializer = torch_default_kernel
    kernels: Kernels = PLAIN

    @nn.compact
    def __call__(self, x: jax.Array, query_rows: jax.Array | None = None) -> jax.Array:
        batch, length, width = x.shape
        if width % self.num_heads:
            raise ValueError(f"width {width} is not divisible by {self.num_heads} heads")
        head_dim = width // self.num_heads
        project = QKVProjection(self.dtype, self.in_proj_init, self.kernels, name="in_proj")
        if query_rows is None:
            q, k, v = project(x)
            causal, key_lengths = self.causal, None
        else:
            q, k, v = project(x, x[jnp.arange(batch), query_rows][:, None])
            # A lone query row sees the keys up to its own position under the causal mask.
            causal, key_lengths = False, (query_rows + 1 if self.causal else None)
        heads = lambda t: t.reshape(batch, t.shape[1], self.num_heads, head_dim)  # noqa: E731
        out = self.kernels.attention(heads(q), heads(k), heads(v), causal=causal, key_lengths=key_lengths)
        out = out.reshape(batch, q.shape[1], width)
        return nn.Dense(width, dtype=self.dtype, kernel_init=self.out_proj_init, bias_init=nn.initializers.zeros,
                        dot_general=self.kernels.dot_general, name="out_proj")(out)


class MLP(nn.Module):
    hidden: int
    act: str = "quick_gelu"
    dtype: Dtype = jnp.float32
    fc_init: Initializer = torch_default_kernel
    proj_init: Initializer = torch_default_kernel
    kernels: Kernels = PLAIN

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = x.shape[-1]
        x = nn.Dense(self.hidden, dtype=self.dtype, kernel_init=self.fc_init, bias_init=torch_default_bias(width),
                     dot_general=self.kernels.dot_general, name="c_fc")(x)
        x = activation(self.act)(x)
        return nn.Dense(width, dtype=self.dtype, kernel_init=self.proj_init, bias_init=torch_default_bias(self.hidden),
                        dot_general=self.kernels.dot_general, name="c_proj")(x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).

    With `query_rows` ([batch] positions) only those rows come out, [batch, 1, width]:
    the other tokens still serve as keys and values, but their queries and MLP are skipped.
    """

    num_heads: int
    mlp_dim: int
    act: str
    causal: bool
    layers: int
    text_style_init: bool
    dtype: Dtype = jnp.float32
    kernels: Kernels = PLAIN
    layer_norm_eps: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, query_rows: jax.Array | None = None) -> jax.Array:
        inits = block_initializers(x.shape[-1], self.layers, self.text_style_init)
        attended = MultiHeadAttention(
            self.num_heads, self.causal, self.dtype, in_proj_init=inits["in_proj"], out_proj_init=inits["out_proj"],
            kernels=self.kernels, name="attn",
        )(LayerNorm(self.layer_norm_eps, name="ln_1")(x), query_rows)
        if query_rows is not None:
            x = x[jnp.arange(x.shape[0]), query_rows][:, None]
        x = x + attended
        return x + MLP(self.mlp_dim, self.act, self.dtype, fc_init=inits["c_fc"], proj_init=inits["c_proj"],
                       kernels=self.kernels, name="mlp")(LayerNorm(self.layer_norm_eps, name="ln_2")(x))


class Transformer(nn.Module):
    """`layers` residual blocks whose parameters are stacked along a leading layer axis
    (`blocks/...`), run as one `lax.scan` over the first `layers - 1` and then the last.

    Scanning compiles one block instead of `layers` copies; `remat` recomputes each
    scanned block's activations in the backward pass instead of storing them.

    Called with `pool_rows` ([batch] positions) it returns only those tokens' outputs,
    [batch, width], and the last block computes just them: CLIP pools one token per
    sequence, and in the last block no other token's output reaches it, so its other
    queries and MLP rows are skipped exactly.  `full_last_block=True` runs the last block
    on every token and pools afterwards (the same outputs; the plain form for tests and
    for counting open_clip's FLOPs).  Without `pool_rows` every token comes out.
    """

    layers: int
    num_heads: int
    mlp_dim: int
    act: str = "quick_gelu"
    causal: bool = False
    text_style_init: bool = False
    remat: bool = False
    dtype: Dtype = jnp.float32
    full_last_block: bool = False
    kernels: Kernels = PLAIN
    layer_norm_eps: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, pool_rows: jax.Array | None = None) -> jax.Array:
        block = ResidualAttentionBlock(self.num_heads, self.mlp_dim, self.act, self.causal, self.layers,
                                       self.text_style_init, self.dtype, self.kernels,
                                       layer_norm_eps=self.layer_norm_eps, parent=None)

        def init_stacked(rng):
            keys = jax.random.split(rng, self.layers)
            return jax.vmap(lambda key: block.init(key, x[:1])["params"])(keys)

        stacked = self.param("blocks", init_stacked)

        def scanned(carry, params):
            return block.apply({"params": params}, carry), None

        if self.remat:
            scanned = jax.checkpoint(scanned, prevent_cse=False)
        x, _ = jax.lax.scan(scanned, x, jax.tree.map(lambda p: p[:-1], stacked))
        last_rows = None if self.full_last_block else pool_rows
        x = block.apply({"params": jax.tree.map(lambda p: p[-1], stacked)}, x, last_rows)
        if pool_rows is None:
            return x
        return x[:, 0] if last_rows is not None else x[jnp.arange(x.shape[0]), pool_rows]
