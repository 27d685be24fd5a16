"""CLIP's ModifiedResNet: a three-conv stem with average pooling, bottlenecks whose
strides are done by average pooling ("anti-aliased"), and an attention pool whose
single query is the spatial mean token.

BatchNorm statistics live in the `batch_stats` collection; with `train=False` the
running averages are used, as in OpenAI's eval mode.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from clip_jax.models.kernels import PLAIN, Kernels
from clip_jax.models.layers import normal, torch_default_bias, torch_default_kernel

PAD_1 = ((1, 1), (1, 1))  # explicit, since 'SAME' pads asymmetrically at stride 2


def avg_pool(x: jax.Array, stride: int) -> jax.Array:
    return x if stride == 1 else nn.avg_pool(x, (stride, stride), (stride, stride))


class Bottleneck(nn.Module):
    planes: int
    stride: int = 1
    dtype: Any = jnp.float32

    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = partial(nn.Conv, use_bias=False, dtype=self.dtype, kernel_init=torch_default_kernel)
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                       epsilon=1e-5, dtype=self.dtype)
        out_planes = self.planes * self.expansion
        y = nn.relu(norm(name="bn1")(conv(self.planes, (1, 1), name="conv1")(x)))
        y = nn.relu(norm(name="bn2")(conv(self.planes, (3, 3), padding=PAD_1, name="conv2")(y)))
        y = avg_pool(y, self.stride)
        # Zero-initialised last BN: each residual branch starts as the identity.
        y = norm(scale_init=nn.initializers.zeros, name="bn3")(conv(out_planes, (1, 1), name="conv3")(y))
        shortcut = x
        if self.stride > 1 or x.shape[-1] != out_planes:
            shortcut = conv(out_planes, (1, 1), name="downsample_conv")(avg_pool(x, self.stride))
            shortcut = norm(name="downsample_bn")(shortcut)
        return nn.relu(y + shortcut)


class AttentionPool2d(nn.Module):
    """Multi-head attention of the mean token over [mean; all positions]."""

    num_heads: int
    output_dim: int
    dtype: Any = jnp.float32
    kernels: Kernels = PLAIN

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, height, width, dim = x.shape
        x = x.reshape(batch, height * width, dim)
        x = jnp.concatenate([x.mean(axis=1, keepdims=True), x], axis=1)
        positions = self.param("positional_embedding", normal(dim**-0.5), (height * width + 1, dim))
        x = x + positions.astype(x.dtype)
        dense = partial(nn.Dense, dtype=self.dtype, kernel_init=normal(dim**-0.5),
                        bias_init=torch_default_bias(dim))
        head_dim = dim // self.num_heads
        q = dense(dim, name="q_proj")(x[:, :1]).reshape(batch, 1, self.num_heads, head_dim)
        k = dense(dim, name="k_proj")(x).reshape(batch, -1, self.num_heads, head_dim)
        v = dense(dim, name="v_proj")(x).reshape(batch, -1, self.num_heads, head_dim)
        out = self.kernels.attention(q, k, v).reshape(batch, dim)
        return dense(self.output_dim, name="c_proj")(out)


class ModifiedResNet(nn.Module):
    image_size: int
    layers: Sequence[int]
    width: int
    num_heads: int
    output_dim: int
    remat: bool = False
    dtype: Any = jnp.float32
    kernels: Kernels = PLAIN

    @nn.compact
    def __call__(self, images: jax.Array, project: bool = True, train: bool = False) -> jax.Array:
        """images: [N, H, W, 3] -> [N, output_dim].

        The attention pool's `c_proj` is the projection, so `project=False` changes
        nothing here (the paper does not bypass it for linear probes either).
        """
        del project
        conv = partial(nn.Conv, use_bias=False, dtype=self.dtype, kernel_init=torch_default_kernel,
                       padding=PAD_1)
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                       epsilon=1e-5, dtype=self.dtype)
        x = images.astype(self.dtype)
        half = self.width // 2
        x = nn.relu(norm(name="bn1")(conv(half, (3, 3), strides=(2, 2), name="conv1")(x)))
        x = nn.relu(norm(name="bn2")(conv(half, (3, 3), name="conv2")(x)))
        x = nn.relu(norm(name="bn3")(conv(self.width, (3, 3), name="conv3")(x)))
        x = avg_pool(x, 2)
        block = nn.remat(Bottleneck, static_argnums=(2,)) if self.remat else Bottleneck
        for stage, blocks in enumerate(self.layers):
            planes = self.width * 2**stage
            for index in range(blocks):
                stride = 2 if (stage > 0 and index == 0) else 1
                x = block(planes, stride, self.dtype, name=f"layer{stage + 1}_{index}")(x, train)
        return AttentionPool2d(self.num_heads, self.output_dim, self.dtype, self.kernels, name="attnpool")(x)
