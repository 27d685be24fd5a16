"""Helpers for parity tests against the test-only oracles (open_clip, transformers,
CLIP_benchmark)."""
from __future__ import annotations

import numpy as np
import pytest

# open_clip's model config of clip_jax's "tiny-vit", registered under a name with
# `register_open_clip_tiny_vit(name)`.
TINY_VIT_OPEN_CLIP = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def register_open_clip_tiny_vit(name: str) -> str:
    """Make `open_clip.create_model(name)` build clip_jax's tiny-vit; returns `name`."""
    from open_clip import factory

    factory._MODEL_CONFIGS[name] = TINY_VIT_OPEN_CLIP
    return name


def clip_benchmark_accuracy(output, target, topk=(1,)):
    """CLIP_benchmark 1.6.2's `accuracy` with its last line made NumPy-2 safe (it calls
    float() on a 1-element array, an error in NumPy >= 2.4); the same definition otherwise.
    Tests monkeypatch it over the modules' own."""
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum().item() / len(target) for k in topk]


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
