"""Backend-specific kernels for the models' two hot operations, chosen once when a model
is built (`select_kernels`) and handed down to every layer.

* `dot_general`, the matmul of every dense layer.  On CPU it is the plain matmul with a
  custom weight gradient (`cpu_dense_dot_general`): XLA's CPU backend folds the transpose
  of `x.T @ grad` into a dot whose operands both contract their outer dimension, which its
  fast (YNNPACK) kernels reject; materialising `x.T` keeps the fast kernel.  Accelerators
  handle transposed operands natively and get `jax.lax.dot_general` itself.
* `attention`, `jax.nn.dot_product_attention` with an explicit implementation: "xla"
  everywhere, or "cudnn" (flash attention) on NVIDIA GPUs for bfloat16/float16 inputs.
  The model option `attention="auto"` picks cuDNN where it can run and XLA elsewhere.

Everything here computes exactly what the plain operations compute; tests compare them.
"""
from __future__ import annotations

import dataclasses
import logging

import jax
import jax.numpy as jnp

ATTENTION_CHOICES = ("auto", "xla", "cudnn")
# cuDNN's fused attention kernels take half-precision inputs and head dimensions that
# are multiples of 8 up to 128 (the shapes every CLIP/SigLIP tower has).
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)
CUDNN_MAX_HEAD_DIM = 128

_logged: set[str] = set()


@jax.custom_vjp
def _matmul_materialised_wgrad(x: jax.Array, w: jax.Array) -> jax.Array:
    return jnp.matmul(x, w)


def _matmul_fwd(x, w):
    return jnp.matmul(x, w), (x, w)


def _matmul_bwd(residuals, grad):
    x, w = residuals
    dx = jnp.matmul(grad, w.T)
    # The weight gradient contracts over the tokens; see the module docstring for why
    # x.T is materialised (the barrier stops XLA from folding the transpose back in).
    x_t = jax.lax.optimization_barrier(x.reshape(-1, x.shape[-1]).T)
    dw = jnp.matmul(x_t, grad.reshape(-1, grad.shape[-1]))
    return dx, dw.astype(w.dtype)


_matmul_materialised_wgrad.defvjp(_matmul_fwd, _matmul_bwd)


def cpu_dense_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """`jax.lax.dot_general` whose dense-layer form (lhs's last axis against a 2-D
    kernel's first) has the CPU-friendly weight gradient; other forms are plain."""
    (lhs_contract, rhs_contract), (lhs_batch, _) = dimension_numbers
    dense_form = (tuple(lhs_contract) == (lhs.ndim - 1,) and tuple(rhs_contract) == (0,)
                  and not lhs_batch and rhs.ndim == 2)
    if dense_form and precision is None and preferred_element_type is None:
        return _matmul_materialised_wgrad(lhs, rhs)
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type)


@dataclasses.dataclass(frozen=True)
class Kernels:
    """The kernels a model runs with.  Frozen and hashable: Flax modules hold it."""

    cpu_weight_gradients: bool = False  # dense layers use `cpu_dense_dot_general`
    attention_impl: str = "xla"  # "xla" or "cudnn"

    def dot_general(self, lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
        fn = cpu_dense_dot_general if self.cpu_weight_gradients else jax.lax.dot_general
        return fn(lhs, rhs, dimension_numbers, precision=precision, preferred_element_type=preferred_element_type)

    def dense(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
        """x @ kernel over x's last axis."""
        return self.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))

    def attention(self, q, k, v, *, causal: bool = False, key_lengths: jax.Array | None = None) -> jax.Array:
        """Softmax attention of [batch, length, heads, head_dim] queries, keys and values.

        causal: each query position sees the keys up to its own; key_lengths ([batch]):
        each row sees only its first key_lengths keys."""
        return jax.nn.dot_product_attention(q, k, v, is_causal=causal, key_value_seq_lengths=key_lengths,
                                            implementation=self.attention_impl)


def _log_once(message: str) -> None:
    if message not in _logged:
        _logged.add(message)
        logging.info(message)


def current_platform() -> str:
    """"cpu", "tpu", "cuda" (NVIDIA), "rocm" (AMD) or another JAX backend name."""
    backend = jax.default_backend()
    if backend != "gpu":
        return backend
    version = str(getattr(jax.devices()[0].client, "platform_version", "")).lower()
    return "rocm" if "rocm" in version else "cuda"


def select_kernels(attention: str = "auto", dtype=jnp.float32, head_dims: tuple[int, ...] = (),
                   platform: str | None = None) -> Kernels:
    """The kernels for a model with compute `dtype` and attention `head_dims` on
    `platform` (default: `current_platform()`).

    attention: "xla" always works; "cudnn" needs an NVIDIA GPU, a bfloat16/float16 compute
    dtype and head dimensions that are multiples of 8 up to 128, else a ValueError says
    which; "auto" takes cuDNN when all of that holds and XLA otherwise (logged once)."""
    if attention not in ATTENTION_CHOICES:
        raise ValueError(f"unknown attention implementation {attention!r}; valid: {', '.join(ATTENTION_CHOICES)}")
    platform = platform or current_platform()
    problem = _cudnn_problem(platform, dtype, head_dims)
    if attention == "cudnn" and problem:
        raise ValueError(f"attention='cudnn' cannot run here: {problem}; valid choices here: 'auto', 'xla'")
    if attention == "auto":
        attention = "xla" if problem else "cudnn"
        _log_once(f"attention='auto': using {attention}" + (f" ({problem})" if problem else ""))
    return Kernels(cpu_weight_gradients=platform == "cpu", attention_impl=attention)


def _cudnn_problem(platform: str, dtype, head_dims) -> str | None:
    """Why cuDNN attention cannot run for this model, or None when it can."""
    if platform != "cuda":
        return f"the {platform!r} backend is not an NVIDIA GPU"
    if jnp.dtype(dtype) not in [jnp.dtype(d) for d in CUDNN_DTYPES]:
        return f"compute dtype {jnp.dtype(dtype).name} is not bfloat16 or float16"
    bad = [d for d in head_dims if d % 8 or d > CUDNN_MAX_HEAD_DIM]
    if bad:
        return f"head dimension(s) {bad} are not multiples of 8 up to {CUDNN_MAX_HEAD_DIM}"
    return None


PLAIN = Kernels()  # the plain operations: what layers use when no model chose for them
