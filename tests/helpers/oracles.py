"""Helpers for parity tests against the test-only oracles (open_clip, transformers)."""
from __future__ import annotations

import numpy as np
import pytest


def perturb_torch_model(model, seed: int = 0, scale: float = 0.02) -> None:
    """Move every parameter and BN statistic off its initial value.

    Zero-initialised tensors (attention biases, ResNet bn3 gains) would otherwise let a
    wrong mapping of them go unnoticed.
    """
    torch = pytest.importorskip("torch")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if not tensor.is_floating_point() or "attn_mask" in name:
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif name.endswith("logit_scale"):
                tensor.fill_(np.log(50.0))
            else:
                tensor.add_(scale * torch.randn(tensor.shape, generator=generator))


def random_inputs(config, batch: int = 2, seed: int = 0):
    """NHWC images and token ids with EOT at varied positions, id 0 ('!') inside,
    and one row filling all 77 positions."""
    rs = np.random.RandomState(seed)
    size = config.vision.image_size
    images = rs.randn(batch, size, size, 3).astype(np.float32)
    length = config.text.context_length
    tokens = np.zeros((batch, length), np.int32)
    for row in range(batch):
        end = length - 1 if row == 0 else rs.randint(3, length - 1)
        tokens[row, 0] = 49406
        tokens[row, 1:end] = rs.randint(0, 49406, end - 1)
        tokens[row, 2] = 0
        tokens[row, end] = 49407
    return images, tokens


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
